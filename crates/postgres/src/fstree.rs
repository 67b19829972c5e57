//! Trees in and out: building snapshot trees from files we produce or walk,
//! and laying a tree back out on disk.
//!
//! Restores are parallel across files (a pool of threads, each streaming one
//! file through a [`ContentReader`] that itself prefetches blobs), because a
//! data directory is thousands of small files plus a few huge ones, and
//! either shape alone leaves cores idle with a sequential copy.

use std::collections::VecDeque;
use std::fs;
use std::io::{BufWriter, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use holdfast_repo::pack::BlobType;
use holdfast_repo::reader::ContentReader;
use holdfast_repo::tree::{Node, NodeKind, NodeName, Timestamp, Tree};
use holdfast_repo::writer::BlobWriter;
use holdfast_repo::{Id, Repository};

use crate::error::{PgError, Result};

/// A node for a file we generated (a dump), owned by nobody in particular.
pub(crate) fn generated_file(name: &str, size: u64, content: Vec<Id>) -> Node {
    let now = chrono::Utc::now();
    let ts = Timestamp {
        sec: now.timestamp(),
        nsec: now.timestamp_subsec_nanos(),
    };
    Node {
        name: NodeName(name.as_bytes().to_vec()),
        kind: NodeKind::File,
        mode: 0o600,
        uid: 0,
        gid: 0,
        user: None,
        group: None,
        size,
        mtime: ts,
        ctime: ts,
        inode: 0,
        dev: 0,
        nlink: 1,
        rdev: None,
        content,
        subtree: None,
        target: None,
    }
}

/// A node describing a walked filesystem entry (content/subtree filled in later).
pub(crate) fn node_from_meta(name: &[u8], kind: NodeKind, md: &fs::Metadata) -> Node {
    Node {
        name: NodeName(name.to_vec()),
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        user: None,
        group: None,
        size: if kind == NodeKind::File { md.size() } else { 0 },
        mtime: Timestamp {
            sec: md.mtime(),
            nsec: md.mtime_nsec() as u32,
        },
        ctime: Timestamp {
            sec: md.ctime(),
            nsec: md.ctime_nsec() as u32,
        },
        inode: md.ino(),
        dev: md.dev(),
        nlink: md.nlink(),
        rdev: None,
        content: Vec::new(),
        subtree: None,
        target: None,
    }
}

/// Sort and store a tree; returns its blob id.
pub(crate) fn save_tree(writer: &BlobWriter, mut tree: Tree) -> Result<Id> {
    tree.sort();
    let json = serde_json::to_vec(&tree)
        .map_err(|e| PgError::Invalid(format!("cannot serialise a tree: {e}")))?;
    Ok(writer.save(BlobType::Tree, &json)?)
}

/// Options for laying a tree out on disk.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayOut {
    /// Restore numeric ownership (only possible, and only done, as root).
    pub chown: bool,
    pub threads: usize,
    /// Blobs each file reader prefetches.
    pub ahead: usize,
}

/// What a restore wrote.
#[derive(Debug, Clone, Copy, Default)]
pub struct LayOutStats {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
}

struct FileJob {
    path: PathBuf,
    node: Node,
}

/// Write the tree `root` under `dest` (which must exist).
pub(crate) fn lay_out(
    repo: &Arc<Repository>,
    root: &Id,
    dest: &Path,
    opts: LayOut,
) -> Result<LayOutStats> {
    let mut stats = LayOutStats::default();
    let mut files = Vec::new();
    let mut dirs: Vec<(PathBuf, Node)> = Vec::new();
    let mut stack = vec![(root.to_owned(), dest.to_path_buf())];
    while let Some((tree_id, dir)) = stack.pop() {
        let tree = repo.load_tree(&tree_id)?;
        for node in tree.nodes {
            let name = std::ffi::OsStr::from_bytes_compat(&node.name.0);
            if name.is_empty() || node.name.0.contains(&b'/') || node.name.0 == b".." {
                return Err(PgError::Invalid(format!(
                    "refusing unsafe name {:?} in the snapshot tree",
                    node.name.display()
                )));
            }
            let path = dir.join(name);
            match node.kind {
                NodeKind::Dir => {
                    fs::create_dir_all(&path)
                        .map_err(|e| PgError::io(format!("creating {}", path.display()), e))?;
                    stats.dirs += 1;
                    if let Some(sub) = node.subtree {
                        stack.push((sub, path.clone()));
                    }
                    dirs.push((path, node));
                }
                NodeKind::File => files.push(FileJob { path, node }),
                NodeKind::Symlink => {
                    let target = node
                        .target
                        .as_ref()
                        .map(|t| std::ffi::OsStr::from_bytes_compat(&t.0).to_owned())
                        .ok_or_else(|| {
                            PgError::Invalid(format!("symlink {} has no target", path.display()))
                        })?;
                    std::os::unix::fs::symlink(&target, &path).map_err(|e| {
                        PgError::io(format!("creating symlink {}", path.display()), e)
                    })?;
                    if opts.chown {
                        let _ = std::os::unix::fs::lchown(&path, Some(node.uid), Some(node.gid));
                    }
                }
                // Sockets, fifos and devices have no place in what we back up.
                _ => {}
            }
        }
    }
    // Biggest first, so one huge relation segment does not start last.
    files.sort_by_key(|f| std::cmp::Reverse(f.node.size));
    stats.files = files.len() as u64;
    stats.bytes = files.iter().map(|f| f.node.size).sum();
    let queue = Arc::new(Mutex::new(VecDeque::from(files)));
    let first_error: Arc<Mutex<Option<PgError>>> = Arc::new(Mutex::new(None));
    let handles: Vec<_> = (0..opts.threads.max(1))
        .map(|_| {
            let queue = queue.clone();
            let repo = repo.clone();
            let first_error = first_error.clone();
            std::thread::spawn(move || loop {
                if first_error.lock().map(|e| e.is_some()).unwrap_or(true) {
                    return;
                }
                let job = match queue.lock() {
                    Ok(mut q) => q.pop_front(),
                    Err(_) => return,
                };
                let Some(job) = job else { return };
                if let Err(e) = write_file(&repo, &job, opts) {
                    if let Ok(mut slot) = first_error.lock() {
                        slot.get_or_insert(e);
                    }
                    return;
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    if let Some(e) = first_error.lock().ok().and_then(|mut e| e.take()) {
        return Err(e);
    }
    // Directory modes last: a read-only directory would refuse its files.
    for (path, node) in dirs.iter().rev() {
        set_attrs(path, node, opts)?;
    }
    Ok(stats)
}

fn write_file(repo: &Arc<Repository>, job: &FileJob, opts: LayOut) -> Result<()> {
    let ctx = |what: &str| format!("{what} {}", job.path.display());
    let f = fs::File::create(&job.path).map_err(|e| PgError::io(ctx("creating"), e))?;
    let mut out = BufWriter::with_capacity(1 << 20, f);
    let mut reader = ContentReader::new(repo.clone(), job.node.content.clone(), opts.ahead);
    let n = std::io::copy(&mut reader, &mut out).map_err(|e| PgError::io(ctx("restoring"), e))?;
    if n != job.node.size {
        return Err(PgError::Invalid(format!(
            "{}: restored {n} bytes but the snapshot says {}",
            job.path.display(),
            job.node.size
        )));
    }
    let mut f = out
        .into_inner()
        .map_err(|e| PgError::io(ctx("writing"), e.into_error()))?;
    f.flush().map_err(|e| PgError::io(ctx("writing"), e))?;
    drop(f);
    set_attrs(&job.path, &job.node, opts)
}

fn set_attrs(path: &Path, node: &Node, opts: LayOut) -> Result<()> {
    if opts.chown {
        std::os::unix::fs::chown(path, Some(node.uid), Some(node.gid))
            .map_err(|e| PgError::io(format!("chown {}", path.display()), e))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(node.mode & 0o7777))
        .map_err(|e| PgError::io(format!("chmod {}", path.display()), e))
}

/// `OsStr` from raw bytes (Unix file names are bytes).
trait FromBytesCompat {
    fn from_bytes_compat(b: &[u8]) -> &std::ffi::OsStr;
}

impl FromBytesCompat for std::ffi::OsStr {
    fn from_bytes_compat(b: &[u8]) -> &std::ffi::OsStr {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::OsStr::from_bytes(b)
    }
}

pub(crate) fn effective_uid_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
