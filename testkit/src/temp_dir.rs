//! Directories for a child's data, configuration and logs, removed with their contents.

use std::path::{Path, PathBuf};

/// A directory under the system's temporary directory, removed with everything in it
/// when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `<tmp>/smcp-<kind>-<pid>-<name>` (the pid keeps concurrent runs apart).
    ///
    /// # Panics
    /// When the directory cannot be created.
    pub fn new(kind: &str, name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("smcp-{kind}-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Self(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
