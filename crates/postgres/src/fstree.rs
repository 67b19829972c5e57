//! Trees in and out: building snapshot trees from files we produce or walk,
//! and laying a tree back out on disk.
//!
//! Restores create every file at its final size, then read the blobs pack
//! by pack (nearby blobs coalesced into one ranged read) on a pool of
//! threads that write each blob where it belongs, as the document restore
//! does: a data directory is thousands of small files plus a few huge ones
//! cut into 64 KiB blocks, and a request per block costs more than its bytes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use holdfast_repo::index::BlobLocation;
use holdfast_repo::pack::BlobType;
use holdfast_repo::tree::{Node, NodeKind, NodeName, Timestamp, Tree};
use holdfast_repo::writer::BlobWriter;
use holdfast_repo::{Id, Repository};
use holdfast_storage::ObjectKind;

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

/// Blobs closer than this in one pack are fetched with one ranged read.
const COALESCE_GAP: u64 = 512 * 1024;
/// Longest single ranged read (bounds memory: threads × this).
const MAX_READ: u64 = 16 * 1024 * 1024;

/// Options for laying a tree out on disk.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayOut {
    /// Restore numeric ownership (only possible, and only done, as root).
    pub chown: bool,
    pub threads: usize,
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
    stats.files = files.len() as u64;
    stats.bytes = files.iter().map(|f| f.node.size).sum();
    write_contents(repo, &files, opts)?;
    for f in &files {
        set_attrs(&f.path, &f.node, opts)?;
    }
    // Directory modes last: a read-only directory would refuse its files.
    for (path, node) in dirs.iter().rev() {
        set_attrs(path, node, opts)?;
    }
    Ok(stats)
}

/// One blob and where it goes: (file index, offset in the file).
struct BlobUse {
    id: Id,
    loc: BlobLocation,
    targets: Vec<(usize, u64)>,
}

/// Create every file at its final size, then fetch the blobs grouped by
/// pack and coalesced into ranged reads, on a pool of threads that decrypt,
/// verify and `pwrite` each blob to every offset that needs it. A data
/// directory is thousands of files cut into 64 KiB blocks: one ranged read
/// per run of a pack instead of one request (and thread) per block.
fn write_contents(repo: &Arc<Repository>, files: &[FileJob], opts: LayOut) -> Result<()> {
    let index = repo.index();
    let mut uses: Vec<BlobUse> = Vec::new();
    let mut by_blob: HashMap<Id, usize> = HashMap::new();
    let mut remaining: Vec<AtomicU64> = Vec::with_capacity(files.len());
    for (fi, f) in files.iter().enumerate() {
        let file = fs::File::create(&f.path)
            .map_err(|e| PgError::io(format!("creating {}", f.path.display()), e))?;
        if f.node.size > 0 {
            file.set_len(f.node.size)
                .map_err(|e| PgError::io(format!("sizing {}", f.path.display()), e))?;
        }
        let mut offset = 0u64;
        for b in &f.node.content {
            let loc = index.get(b).ok_or_else(|| {
                PgError::Invalid(format!(
                    "{}: blob {} is not in the index (run `holdfast check`)",
                    f.path.display(),
                    b.short()
                ))
            })?;
            let ui = *by_blob.entry(*b).or_insert_with(|| {
                uses.push(BlobUse {
                    id: *b,
                    loc,
                    targets: Vec::new(),
                });
                uses.len() - 1
            });
            uses[ui].targets.push((fi, offset));
            offset += u64::from(loc.raw_len);
        }
        if offset != f.node.size {
            return Err(PgError::Invalid(format!(
                "{}: its blocks hold {offset} bytes but the snapshot says {}",
                f.path.display(),
                f.node.size
            )));
        }
        remaining.push(AtomicU64::new(offset));
    }
    // Group by pack, in pack order, coalescing nearby blobs into one read.
    let mut by_pack: BTreeMap<Id, Vec<usize>> = BTreeMap::new();
    for (i, u) in uses.iter().enumerate() {
        by_pack.entry(u.loc.pack).or_default().push(i);
    }
    let mut work: VecDeque<(Id, Vec<usize>)> = VecDeque::new();
    for (pack, mut list) in by_pack {
        list.sort_by_key(|&i| uses[i].loc.offset);
        let mut run: Vec<usize> = Vec::new();
        let (mut start, mut end) = (0u64, 0u64);
        for i in list {
            let off = u64::from(uses[i].loc.offset);
            let len = u64::from(uses[i].loc.length);
            if !run.is_empty() && (off > end + COALESCE_GAP || off + len - start > MAX_READ) {
                work.push_back((pack, std::mem::take(&mut run)));
            }
            if run.is_empty() {
                start = off;
            }
            end = off + len;
            run.push(i);
        }
        if !run.is_empty() {
            work.push_back((pack, run));
        }
    }
    let queue = Mutex::new(work);
    let first_error: Mutex<Option<PgError>> = Mutex::new(None);
    let failed = || first_error.lock().map(|e| e.is_some()).unwrap_or(true);
    std::thread::scope(|s| {
        for _ in 0..opts.threads.max(1) {
            let (queue, first_error, uses, remaining) = (&queue, &first_error, &uses, &remaining);
            s.spawn(move || {
                // The file the last blob went to: a pack holds runs of one file.
                let mut open: Option<(usize, fs::File)> = None;
                loop {
                    if failed() {
                        return;
                    }
                    let job = match queue.lock() {
                        Ok(mut q) => q.pop_front(),
                        Err(_) => return,
                    };
                    let Some((pack, list)) = job else { return };
                    let wanted: Vec<(Id, BlobLocation)> =
                        list.iter().map(|&i| (uses[i].id, uses[i].loc)).collect();
                    let results = fetch_run(repo, pack, &wanted);
                    for (&ui, res) in list.iter().zip(results) {
                        let u = &uses[ui];
                        let r = res
                            .map_err(|e| {
                                let (fi, _) = u.targets[0];
                                PgError::Invalid(format!(
                                    "restoring {}: {e}",
                                    files[fi].path.display()
                                ))
                            })
                            .and_then(|data| {
                                for &(fi, off) in &u.targets {
                                    write_at(&mut open, files, fi, &data, off)?;
                                    remaining[fi].fetch_sub(data.len() as u64, Ordering::Relaxed);
                                }
                                Ok(())
                            });
                        if let Err(e) = r {
                            if let Ok(mut slot) = first_error.lock() {
                                slot.get_or_insert(e);
                            }
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.lock().ok().and_then(|mut e| e.take()) {
        return Err(e);
    }
    for (f, left) in files.iter().zip(&remaining) {
        if left.load(Ordering::Relaxed) != 0 {
            return Err(PgError::Invalid(format!(
                "{}: content incomplete",
                f.path.display()
            )));
        }
    }
    Ok(())
}

/// One ranged read covering `blobs` (all in `pack`), each blob decrypted,
/// decoded and verified against its id on its own.
fn fetch_run(
    repo: &Repository,
    pack: Id,
    blobs: &[(Id, BlobLocation)],
) -> Vec<holdfast_repo::Result<Vec<u8>>> {
    let start = blobs
        .iter()
        .map(|(_, l)| u64::from(l.offset))
        .min()
        .unwrap_or(0);
    let end = blobs
        .iter()
        .map(|(_, l)| u64::from(l.offset) + u64::from(l.length))
        .max()
        .unwrap_or(start);
    let got = repo.block_on(
        repo.backend()
            .get(ObjectKind::Pack, &pack.to_hex(), Some(start..end)),
    );
    match got {
        Ok(bytes) => blobs
            .iter()
            .map(|(id, loc)| {
                let s = (u64::from(loc.offset) - start) as usize;
                match bytes.get(s..s + loc.length as usize) {
                    Some(sealed) => repo.decode_blob(id, loc, sealed),
                    None => Err(holdfast_repo::RepoError::corrupt(
                        format!("pack {pack}"),
                        "shorter than the index says",
                    )),
                }
            })
            .collect(),
        Err(e) => {
            let msg = e.to_string();
            blobs
                .iter()
                .map(|_| {
                    Err(holdfast_repo::RepoError::corrupt(
                        format!("pack {pack}"),
                        format!("cannot read: {msg}"),
                    ))
                })
                .collect()
        }
    }
}

fn write_at(
    open: &mut Option<(usize, fs::File)>,
    files: &[FileJob],
    fi: usize,
    data: &[u8],
    off: u64,
) -> Result<()> {
    let path = &files[fi].path;
    if open.as_ref().map(|(i, _)| *i) != Some(fi) {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| PgError::io(format!("opening {}", path.display()), e))?;
        *open = Some((fi, f));
    }
    let Some((_, f)) = open.as_ref() else {
        return Err(PgError::Invalid("no open file".into()));
    };
    f.write_all_at(data, off)
        .map_err(|e| PgError::io(format!("writing {}", path.display()), e))
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
