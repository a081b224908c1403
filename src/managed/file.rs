//! The `file` kind: read-only handles on files under one configured root. Ids are paths
//! relative to the root; absolute paths, `..` and symlinks that lead out of the root
//! are refused before anything is opened.

use std::{
    io,
    os::unix::fs::FileExt,
    path::{Component, Path, PathBuf},
    sync::{Arc, Mutex},
};

use async_trait::async_trait;

use super::{Factory, Handle, HandleError};

/// The kind's name.
pub const KIND: &str = "file";

/// Opens files under `root`.
pub struct FileFactory {
    root: PathBuf,
}

impl FileFactory {
    /// A factory for files under `root`, which must exist.
    ///
    /// # Errors
    /// When `root` cannot be resolved or is not a directory.
    pub fn new(root: &Path) -> io::Result<Self> {
        let root = std::fs::canonicalize(root)?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(Self { root })
    }

    /// The resolved root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn invalid(reason: impl Into<String>) -> HandleError {
        HandleError::InvalidId {
            kind: KIND,
            reason: reason.into(),
        }
    }

    /// `id` resolved under the root, or why it is refused.
    async fn resolve(&self, id: &str) -> Result<PathBuf, HandleError> {
        if id.is_empty() || id.contains('\0') {
            return Err(Self::invalid("a path relative to the root is required"));
        }
        for component in Path::new(id).components() {
            match component {
                Component::Normal(_) | Component::CurDir => {}
                Component::ParentDir => return Err(Self::invalid("`..` is not allowed")),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(Self::invalid(
                        "absolute paths are not allowed: give a path relative to the root",
                    ));
                }
            }
        }
        let not_found = |e: io::Error| HandleError::Init {
            kind: KIND,
            id: id.to_owned(),
            reason: match e.kind() {
                io::ErrorKind::NotFound => "no such file".to_owned(),
                io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
                _ => e.to_string(),
            },
        };
        let path = tokio::fs::canonicalize(self.root.join(id))
            .await
            .map_err(not_found)?;
        if !path.starts_with(&self.root) {
            return Err(Self::invalid("the path leads outside the root"));
        }
        Ok(path)
    }
}

#[async_trait]
impl Factory for FileFactory {
    type Output = FileHandle;

    fn kind(&self) -> &'static str {
        KIND
    }

    async fn create(&self, id: &str) -> Result<FileHandle, HandleError> {
        let path = self.resolve(id).await?;
        let failed = |reason: String| HandleError::Init {
            kind: KIND,
            id: id.to_owned(),
            reason,
        };
        let file = tokio::task::spawn_blocking(move || -> io::Result<(std::fs::File, u64)> {
            let file = std::fs::File::open(&path)?;
            let meta = file.metadata()?;
            if !meta.is_file() {
                return Err(io::Error::other("not a regular file"));
            }
            Ok((file, meta.len()))
        })
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(|e| failed(e.to_string()))?;
        Ok(FileHandle {
            file: Mutex::new(Some(Arc::new(file.0))),
            len: file.1,
        })
    }
}

/// An open, read-only file.
pub struct FileHandle {
    file: Mutex<Option<Arc<std::fs::File>>>,
    len: u64,
}

impl FileHandle {
    /// The file's length when it was opened.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file was empty when it was opened.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Up to `len` bytes from `offset` (fewer at the end of the file).
    ///
    /// # Errors
    /// When the handle was cleaned up or the read fails.
    pub async fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let file = self
            .file
            .lock()
            .expect("file handle")
            .clone()
            .ok_or_else(|| io::Error::other("the file was closed"))?;
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0; len];
            let mut filled = 0;
            while filled < len {
                match file.read_at(&mut buf[filled..], offset + filled as u64) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            buf.truncate(filled);
            Ok(buf)
        })
        .await
        .map_err(io::Error::other)?
    }
}

#[async_trait]
impl Handle for FileHandle {
    async fn cleanup(&self) {
        // Closes the descriptor once the reads in flight are done with it.
        self.file.lock().expect("file handle").take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::managed::HandleManager;

    fn tree() -> (PathBuf, PathBuf) {
        let base = std::env::temp_dir().join(format!("managed-file-{}", crate::ids::mint()));
        let root = base.join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.txt"), b"hello, world").unwrap();
        std::fs::write(base.join("secret.txt"), b"outside").unwrap();
        std::os::unix::fs::symlink(base.join("secret.txt"), root.join("escape")).unwrap();
        std::os::unix::fs::symlink(root.join("sub/a.txt"), root.join("inside")).unwrap();
        (base, root)
    }

    #[tokio::test]
    async fn files_under_the_root_are_read_and_escapes_refused() {
        let (base, root) = tree();
        let manager = HandleManager::builder(std::time::Duration::from_secs(60), 16)
            .register(FileFactory::new(&root).unwrap())
            .build();
        let file = manager.get::<FileHandle>(KIND, "sub/a.txt").await.unwrap();
        assert_eq!(file.len(), 12);
        assert_eq!(file.read(7, 100).await.unwrap(), b"world");
        assert_eq!(file.read(100, 4).await.unwrap(), b"");
        let linked = manager.get::<FileHandle>(KIND, "inside").await.unwrap();
        assert_eq!(linked.read(0, 5).await.unwrap(), b"hello");

        for (id, says) in [
            ("../secret.txt", "`..` is not allowed"),
            ("sub/../../secret.txt", "`..` is not allowed"),
            ("/etc/passwd", "absolute paths are not allowed"),
            ("escape", "outside the root"),
            ("missing.txt", "no such file"),
            ("sub", "not a regular file"),
            ("", "relative to the root"),
        ] {
            let err = manager.get::<FileHandle>(KIND, id).await.err().unwrap();
            assert!(err.to_string().contains(says), "{id}: {err}");
        }
        assert_eq!(manager.shutdown().await, 2);
        assert!(file.read(0, 1).await.is_err(), "closed at shutdown");
        std::fs::remove_dir_all(base).unwrap();
    }
}
