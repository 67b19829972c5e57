//! The local-directory backend: the embedded default.
//!
//! Crash safety: an object is first written to a uniquely named temporary
//! file in its final directory, fsynced, then published with `link(2)`, which
//! fails if the final name exists (that is how write-once is enforced
//! atomically, without a check-then-act race), and the directory is fsynced.
//! A crash leaves at most a `.tmp-*` file behind, which `list` ignores and
//! which nothing ever reads. On filesystems without hard links we fall back to
//! `rename` after an existence check (documented weaker guarantee).
//!
//! Permissions: objects are written 0600 and directories 0700 whatever the
//! umask: a repository holds health records, encrypted or not, and key slots.
//! Group bits are kept only when the repository directory itself has them
//! (as restic does), which is how an administrator shares a repository with
//! a group: `chmod 750` (readers) or `chmod 2770` (writers) on the
//! repository directory. Files then get group read, directories the
//! repository directory's group bits. Others never get anything.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::{
    Backend, Capabilities, ObjectKind, ObjectMeta, PutOptions, StorageError, StorageResult, Upload,
};

/// A repository in a directory of the local filesystem.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    root: PathBuf,
    label: String,
}

impl LocalBackend {
    /// A backend rooted at `root`. The directory need not exist yet; `put`
    /// creates what it needs.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let label = root.display().to_string();
        LocalBackend { root, label }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, kind: ObjectKind, name: &str) -> PathBuf {
        self.root.join(kind.key(name))
    }

    fn err(&self, key: &str, e: std::io::Error) -> StorageError {
        StorageError::from_io(&self.label, key, e)
    }

    /// Modes for new (files, directories): see the module docs.
    fn modes(&self) -> Modes {
        let root = fs::metadata(&self.root)
            .map(|m| m.permissions().mode())
            .unwrap_or(0);
        let group = root & 0o070;
        // setgid keeps new directories in the repository's group.
        let setgid = root & 0o2000;
        Modes {
            file: 0o600 | (group & 0o040),
            dir: 0o700 | group | setgid,
        }
    }

    /// Create `dir` and any missing parents (the root included) with the
    /// repository's directory mode, set explicitly so the umask cannot widen
    /// or narrow it.
    fn create_dirs(&self, dir: &Path, modes: Modes) -> std::io::Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        if let Some(parent) = dir.parent() {
            if !parent.as_os_str().is_empty() && dir != self.root {
                self.create_dirs(parent, modes)?;
            }
        }
        let is_root = dir == self.root;
        // The root is made private; its own bits then decide the rest.
        let mode = if is_root { 0o700 } else { modes.dir };
        match fs::DirBuilder::new().mode(mode).create(dir) {
            Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(mode)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) if is_root && e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(dir)?;
                fs::set_permissions(dir, fs::Permissions::from_mode(mode))
            }
            Err(e) => Err(e),
        }
    }

    fn put_blocking(&self, kind: ObjectKind, name: &str, data: &[u8]) -> StorageResult<()> {
        let key = kind.key(name);
        let path = self.path(kind, name);
        if path.exists() {
            return Err(StorageError::AlreadyExists {
                backend: self.label.clone(),
                key,
            });
        }
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        let (mut f, tmp) = self.new_temporary(&dir, name, &key)?;
        let mut write = || -> std::io::Result<()> {
            // In pieces: one 16 MiB write(2) costs the kernel several times
            // more (page-cache allocation under one call) than 1 MiB ones.
            for piece in data.chunks(1024 * 1024) {
                f.write_all(piece)?;
            }
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(self.err(&key, e));
        }
        self.publish(&tmp, kind, name)
    }

    /// A new temporary file in `dir` (created, with the repository's
    /// modes), named with a leading dot so listings skip it.
    fn new_temporary(&self, dir: &Path, name: &str, key: &str) -> StorageResult<(File, PathBuf)> {
        if !self.root.is_dir() {
            self.create_dirs(&self.root, self.modes())
                .map_err(|e| self.err(key, e))?;
        }
        let modes = self.modes();
        self.create_dirs(dir, modes).map_err(|e| self.err(key, e))?;
        let tmp = dir.join(format!(".tmp-{}-{:016x}", name, rand::random::<u64>()));
        let open = || -> std::io::Result<File> {
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(modes.file)
                .open(&tmp)?;
            // Explicitly: the umask may have removed bits we want (group read).
            if modes.file & 0o070 != 0 {
                f.set_permissions(fs::Permissions::from_mode(modes.file))?;
            }
            Ok(f)
        };
        match open() {
            Ok(f) => Ok((f, tmp)),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(self.err(key, e))
            }
        }
    }

    /// Give the durable temporary file `tmp` its object name, never
    /// replacing an existing object; `tmp` is gone afterwards either way.
    fn publish(&self, tmp: &Path, kind: ObjectKind, name: &str) -> StorageResult<()> {
        let key = kind.key(name);
        let path = self.path(kind, name);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        if let Err(e) = self.create_dirs(&dir, self.modes()) {
            let _ = fs::remove_file(tmp);
            return Err(self.err(&key, e));
        }
        let published = match fs::hard_link(tmp, &path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(StorageError::AlreadyExists {
                    backend: self.label.clone(),
                    key: key.clone(),
                })
            }
            // EPERM/ENOTSUP: no hard links here (e.g. some FUSE or FAT mounts).
            Err(e)
                if e.raw_os_error() == Some(libc::EPERM)
                    || e.raw_os_error() == Some(libc::EOPNOTSUPP) =>
            {
                fs::rename(tmp, &path).map_err(|e| self.err(&key, e))
            }
            Err(e) => Err(self.err(&key, e)),
        };
        let _ = fs::remove_file(tmp);
        published?;
        // Make the new directory entry durable before reporting success.
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    fn get_blocking(
        &self,
        kind: ObjectKind,
        name: &str,
        range: Option<Range<u64>>,
    ) -> StorageResult<Bytes> {
        let key = kind.key(name);
        let mut f = File::open(self.path(kind, name)).map_err(|e| self.err(&key, e))?;
        match range {
            None => {
                let mut buf = Vec::new();
                f.read_to_end(&mut buf).map_err(|e| self.err(&key, e))?;
                Ok(Bytes::from(buf))
            }
            Some(r) => {
                let size = f.metadata().map_err(|e| self.err(&key, e))?.len();
                if r.start > r.end || r.end > size {
                    return Err(StorageError::InvalidRange {
                        key,
                        start: r.start,
                        end: r.end,
                        size,
                    });
                }
                let mut buf = vec![0u8; (r.end - r.start) as usize];
                f.seek(SeekFrom::Start(r.start))
                    .map_err(|e| self.err(&key, e))?;
                f.read_exact(&mut buf).map_err(|e| self.err(&key, e))?;
                Ok(Bytes::from(buf))
            }
        }
    }

    fn list_blocking(&self, kind: ObjectKind) -> StorageResult<Vec<ObjectMeta>> {
        let mut out = Vec::new();
        if kind == ObjectKind::Config {
            if let Ok(m) = fs::metadata(self.root.join("config")) {
                out.push(ObjectMeta {
                    kind,
                    name: "config".into(),
                    size: m.len(),
                    modified: mtime(&m),
                });
            }
            return Ok(out);
        }
        let dir = self.root.join(kind.dir());
        let mut dirs = vec![dir.clone()];
        if kind == ObjectKind::Pack {
            dirs.clear();
            match fs::read_dir(&dir) {
                Ok(rd) => {
                    for e in rd {
                        let e = e.map_err(|e| self.err(kind.dir(), e))?;
                        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                            dirs.push(e.path());
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
                Err(e) => return Err(self.err(kind.dir(), e)),
            }
        }
        for d in dirs {
            let rd = match fs::read_dir(&d) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.err(kind.dir(), e)),
            };
            for e in rd {
                let e = e.map_err(|e| self.err(kind.dir(), e))?;
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue; // temporaries of interrupted writes
                }
                let meta = e.metadata().map_err(|e| self.err(kind.dir(), e))?;
                if !meta.is_file() {
                    continue;
                }
                out.push(ObjectMeta {
                    kind,
                    name,
                    size: meta.len(),
                    modified: mtime(&meta),
                });
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.label.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // A local disk gains nothing from more writers in flight, and
            // each in-flight pack is 16 MiB of memory.
            parallelism: 2,
            ..Capabilities::default()
        }
    }

    async fn put(
        &self,
        kind: ObjectKind,
        name: &str,
        data: Bytes,
        opts: &PutOptions,
    ) -> StorageResult<()> {
        if opts.retention.is_some() || opts.legal_hold {
            return Err(StorageError::Unsupported {
                operation: "object lock on write",
                backend: self.label.clone(),
                key: kind.key(name),
            });
        }
        let this = self.clone();
        let name = name.to_string();
        blocking(move || this.put_blocking(kind, &name, &data)).await
    }

    /// Pieces go straight to a temporary file beside the objects of
    /// `kind`, so an object of any size costs no memory.
    fn upload<'a>(
        &'a self,
        kind: ObjectKind,
        opts: &PutOptions,
    ) -> StorageResult<Box<dyn Upload + 'a>> {
        if opts.retention.is_some() || opts.legal_hold {
            return Err(StorageError::Unsupported {
                operation: "object lock on write",
                backend: self.label.clone(),
                key: kind.dir().to_string(),
            });
        }
        let dir = if kind == ObjectKind::Config {
            self.root.clone()
        } else {
            self.root.join(kind.dir())
        };
        let (file, tmp) = self.new_temporary(&dir, "upload", kind.dir())?;
        Ok(Box::new(LocalUpload {
            backend: self.clone(),
            kind,
            file,
            tmp: Some(tmp),
        }))
    }

    async fn get(
        &self,
        kind: ObjectKind,
        name: &str,
        range: Option<Range<u64>>,
    ) -> StorageResult<Bytes> {
        let this = self.clone();
        let name = name.to_string();
        blocking(move || this.get_blocking(kind, &name, range)).await
    }

    async fn head(&self, kind: ObjectKind, name: &str) -> StorageResult<ObjectMeta> {
        let key = kind.key(name);
        let m = fs::metadata(self.path(kind, name)).map_err(|e| self.err(&key, e))?;
        Ok(ObjectMeta {
            kind,
            name: name.to_string(),
            size: m.len(),
            modified: mtime(&m),
        })
    }

    async fn list(&self, kind: ObjectKind) -> StorageResult<Vec<ObjectMeta>> {
        let this = self.clone();
        blocking(move || this.list_blocking(kind)).await
    }

    async fn delete(&self, kind: ObjectKind, name: &str) -> StorageResult<()> {
        let key = kind.key(name);
        fs::remove_file(self.path(kind, name)).map_err(|e| self.err(&key, e))
    }
}

/// An object being written to a temporary file (see [`Backend::upload`]).
struct LocalUpload {
    backend: LocalBackend,
    kind: ObjectKind,
    file: File,
    /// The temporary file, until it is published (or removed on drop).
    tmp: Option<PathBuf>,
}

#[async_trait]
impl Upload for LocalUpload {
    async fn write(&mut self, data: &[u8]) -> StorageResult<()> {
        let kind = self.kind;
        self.file
            .write_all(data)
            .map_err(|e| self.backend.err(kind.dir(), e))
    }

    async fn finish(mut self: Box<Self>, name: &str) -> StorageResult<()> {
        let key = self.kind.key(name);
        self.file
            .sync_all()
            .map_err(|e| self.backend.err(&key, e))?;
        let Some(tmp) = self.tmp.take() else {
            return Err(self
                .backend
                .err(&key, std::io::Error::other("upload already finished")));
        };
        self.backend.publish(&tmp, self.kind, name)
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// A file's modification time: the object's creation time, since objects
/// are never modified after they are published.
fn mtime(m: &fs::Metadata) -> Option<DateTime<Utc>> {
    m.modified().ok().map(DateTime::<Utc>::from)
}

/// Permission bits for new objects and directories.
#[derive(Debug, Clone, Copy)]
struct Modes {
    file: u32,
    dir: u32,
}

/// Run blocking filesystem work off the async executor when there is one.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> StorageResult<T> + Send + 'static,
) -> StorageResult<T> {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::spawn_blocking(f)
                .await
                .map_err(|e| StorageError::Other {
                    backend: "local".into(),
                    detail: format!("worker thread failed: {e}"),
                })?
        }
        _ => f(),
    }
}
