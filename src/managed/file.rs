//! The `file` kind: read-only handles on regular files under one configured root. Ids
//! are paths relative to the root; absolute paths and `..` are refused, and every
//! spelling of one path (`sub/a.txt`, `./sub/a.txt`, `sub//./a.txt`) is one key, so one
//! file is one resource however a client writes it.
//!
//! A file is opened beneath the root's directory descriptor without following any
//! symlink (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` where the kernel has
//! it, else one `openat` per component with `O_NOFOLLOW`), with `O_NONBLOCK`, and its
//! kind is checked on the opened descriptor: a symlink, FIFO or device swapped in after
//! any earlier look is refused, and opening a FIFO never blocks. With no symlink
//! followed, a key names exactly one file.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::{ffi::OsStrExt, fs::FileExt},
    },
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
    /// The root's directory, which every open starts from.
    root_dir: Arc<OwnedFd>,
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
        let path = CString::new(root.as_os_str().as_bytes())?;
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
        // SAFETY: `path` is a NUL-terminated string that outlives the call.
        let fd = cvt(unsafe { libc::open(path.as_ptr(), flags) })?;
        Ok(Self {
            root,
            root_dir: Arc::new(fd),
        })
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
}

#[async_trait]
impl Factory for FileFactory {
    type Output = FileHandle;

    fn kind(&self) -> &'static str {
        KIND
    }

    /// The path's normal components joined by `/`: `.` and empty components dropped,
    /// `..` and absolute paths refused.
    fn key(&self, id: &str) -> Result<String, HandleError> {
        if id.contains('\0') {
            return Err(Self::invalid("a path relative to the root is required"));
        }
        let mut parts = Vec::new();
        for component in Path::new(id).components() {
            match component {
                Component::Normal(part) => parts.push(part.to_string_lossy()),
                Component::CurDir => {}
                Component::ParentDir => return Err(Self::invalid("`..` is not allowed")),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(Self::invalid(
                        "absolute paths are not allowed: give a path relative to the root",
                    ));
                }
            }
        }
        if parts.is_empty() {
            return Err(Self::invalid("a path relative to the root is required"));
        }
        Ok(parts.join("/"))
    }

    async fn create(&self, key: &str) -> Result<FileHandle, HandleError> {
        let failed = |reason: String| HandleError::Init {
            kind: KIND,
            id: key.to_owned(),
            reason,
        };
        let root = self.root_dir.clone();
        let path = CString::new(key).map_err(|e| failed(e.to_string()))?;
        let opened = tokio::task::spawn_blocking(move || -> io::Result<(std::fs::File, u64)> {
            let file = std::fs::File::from(open_beneath(root.as_raw_fd(), &path)?);
            let meta = file.metadata()?;
            if !meta.is_file() {
                return Err(io::Error::other("not a regular file"));
            }
            Ok((file, meta.len()))
        })
        .await
        .map_err(|e| failed(e.to_string()))?;
        let (file, len) = opened.map_err(|e| match e.raw_os_error() {
            Some(libc::EXDEV) => Self::invalid("the path leads outside the root"),
            Some(libc::ELOOP) => failed("symlinks are not followed".to_owned()),
            Some(libc::ENOENT | libc::ENOTDIR) => failed("no such file".to_owned()),
            Some(libc::EACCES | libc::EPERM) => failed("permission denied".to_owned()),
            _ => failed(e.to_string()),
        })?;
        Ok(FileHandle {
            file: Mutex::new(Some(Arc::new(file))),
            len,
        })
    }
}

/// A file descriptor from a libc call's result.
fn cvt(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a non-negative result of `open`/`openat`/`openat2` is a new descriptor
    // that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Flags of the file itself: read-only, never blocking (a FIFO), never a controlling
/// terminal, never a final symlink.
const FILE_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;

/// Opens `path` (normal components only, `/`-separated) beneath the directory `root`,
/// following no symlink.
fn open_beneath(root: RawFd, path: &CString) -> io::Result<OwnedFd> {
    match openat2_beneath(root, path) {
        // No openat2 (Linux before 5.6, or a seccomp filter that refuses it).
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
            open_by_components(root, path)
        }
        other => other,
    }
}

#[cfg(target_os = "linux")]
fn openat2_beneath(root: RawFd, path: &CString) -> io::Result<OwnedFd> {
    // SAFETY: `open_how` is plain data; zero is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = FILE_FLAGS as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: the arguments are a directory descriptor, a NUL-terminated path and an
    // `open_how` of the size passed, all alive for the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root,
            path.as_ptr(),
            &raw const how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    cvt(RawFd::try_from(fd).unwrap_or(-1))
}

#[cfg(not(target_os = "linux"))]
fn openat2_beneath(_root: RawFd, _path: &CString) -> io::Result<OwnedFd> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

/// The fallback: one `openat` per component, each refusing a symlink, so the walk
/// never leaves the root (ids hold no `..` and no absolute path).
fn open_by_components(root: RawFd, path: &CString) -> io::Result<OwnedFd> {
    let bytes = path.as_bytes();
    let mut parts = bytes
        .split(|&b| b == b'/')
        .filter(|p| !p.is_empty())
        .peekable();
    let mut dir: Option<OwnedFd> = None;
    while let Some(part) = parts.next() {
        let name = CString::new(part)?;
        let at = dir.as_ref().map_or(root, AsRawFd::as_raw_fd);
        // Directories too are opened with the file's flags: with `O_DIRECTORY` a
        // symlink would read as "not a directory"; anything else than a directory fails
        // the next step with `ENOTDIR`.
        // SAFETY: `at` is an open directory descriptor and `name` a NUL-terminated
        // string, both alive for the call.
        let fd = cvt(unsafe { libc::openat(at, name.as_ptr(), FILE_FLAGS) })?;
        if parts.peek().is_none() {
            return Ok(fd);
        }
        dir = Some(fd);
    }
    Err(io::Error::from_raw_os_error(libc::ENOENT))
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
        std::os::unix::fs::symlink(root.join("sub"), root.join("linked-dir")).unwrap();
        let fifo = CString::new(root.join("fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path, alive for the call.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        (base, root)
    }

    fn manager(root: &Path) -> HandleManager {
        HandleManager::builder(std::time::Duration::from_secs(60), 16)
            .register(FileFactory::new(root).unwrap())
            .build()
    }

    #[tokio::test]
    async fn files_under_the_root_are_read_and_escapes_refused() {
        let (base, root) = tree();
        let manager = manager(&root);
        let file = manager.get::<FileHandle>(KIND, "sub/a.txt").await.unwrap();
        assert_eq!(file.len(), 12);
        assert_eq!(file.read(7, 100).await.unwrap(), b"world");
        assert_eq!(file.read(100, 4).await.unwrap(), b"");

        for (id, says) in [
            ("../secret.txt", "`..` is not allowed"),
            ("sub/../../secret.txt", "`..` is not allowed"),
            ("/etc/passwd", "absolute paths are not allowed"),
            ("escape", "symlinks are not followed"),
            ("inside", "symlinks are not followed"),
            ("linked-dir/a.txt", "symlinks are not followed"),
            ("missing.txt", "no such file"),
            ("sub", "not a regular file"),
            ("", "relative to the root"),
            ("./.", "relative to the root"),
        ] {
            let err = manager.get::<FileHandle>(KIND, id).await.err().unwrap();
            assert!(err.to_string().contains(says), "{id}: {err}");
        }
        assert_eq!(manager.shutdown().await, 1);
        assert!(file.read(0, 1).await.is_err(), "closed at shutdown");
        std::fs::remove_dir_all(base).unwrap();
    }

    #[tokio::test]
    async fn a_fifo_is_refused_without_blocking() {
        let (base, root) = tree();
        let manager = manager(&root);
        // No writer ever opens it: a blocking open would never return.
        let opened = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            manager.get::<FileHandle>(KIND, "fifo"),
        )
        .await
        .expect("opening a FIFO does not block");
        let err = opened.err().unwrap();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        std::fs::remove_dir_all(base).unwrap();
    }

    #[tokio::test]
    async fn every_spelling_of_a_path_is_one_resource() {
        let (base, root) = tree();
        let manager = manager(&root);
        let mut leases = Vec::new();
        for id in [
            "sub/a.txt",
            "./sub/a.txt",
            "sub//a.txt",
            "././sub/./a.txt",
            "sub/a.txt/",
        ] {
            leases.push(manager.get::<FileHandle>(KIND, id).await.unwrap());
        }
        let stats = &manager.stats()[KIND];
        assert_eq!((stats.active, stats.references), (1, 5));
        std::fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn the_fallback_walk_refuses_symlinks_at_every_step() {
        let (base, root) = tree();
        let factory = FileFactory::new(&root).unwrap();
        let dir = factory.root_dir.as_raw_fd();
        let open = |path: &str| open_by_components(dir, &CString::new(path).unwrap());
        assert!(open("sub/a.txt").is_ok());
        for path in ["inside", "escape", "linked-dir/a.txt"] {
            assert_eq!(
                open(path).err().and_then(|e| e.raw_os_error()),
                Some(libc::ELOOP),
                "{path}"
            );
        }
        std::fs::remove_dir_all(base).unwrap();
    }
}
