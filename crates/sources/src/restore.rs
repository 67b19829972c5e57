//! Restoring a snapshot (or paths inside it) into a directory.
//!
//! 1. Plan: walk the selected part of the tree, keeping of each node only
//!    what the restore needs (a compact [`Item`], not the tree node).
//! 2. Existing entries: files that already hold exactly the snapshot's
//!    content (same size, every blob hashing to its id) are kept and not
//!    written again. Anything else in the way is refused, before writing
//!    anything, unless `overwrite` is set or the target carries the marker
//!    of an unfinished restore of the same snapshot and paths (a resume).
//! 3. Lay out directories, symlinks and special files. Empty files are
//!    created here; files with content by the workers.
//! 4. Content: group every needed blob by pack, coalesce nearby blobs into
//!    ranged reads, and let a pool of threads fetch, decrypt, verify (each blob
//!    must hash to its id) and write each blob to every file offset that needs
//!    it. A pack is read once however many files share its blobs. Files that
//!    are written sparse skip their all-zero blocks, which stay holes.
//! 5. Hard links, then metadata (files, then directories deepest first, since
//!    creating entries changes a directory's mtime), extended attributes
//!    included; a target that refuses an attribute costs a warning.
//!
//! A damaged or missing blob fails only the files that use it: they are
//! removed (never left with silently wrong content) and reported by name;
//! every other file is restored. A full disk stops the restore with a clear
//! error: there is no point writing further.
//!
//! The marker file [`MARKER`] in the target records the snapshot and paths
//! of a restore in progress; it is removed when every entry was restored.
//! After a crash or `kill -9`, running the same restore again finishes it:
//! files already complete are verified and kept, partial ones rewritten.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use holdfast_repo::index::{BlobLocation, Index};
use holdfast_repo::snapshot::{NodeCounts, SnapshotEntry};
use holdfast_repo::tree::{Node, NodeKind};
use holdfast_repo::{Id, Repository};
use holdfast_storage::StorageError;

use crate::error::{SourceError, SourceResult};
use crate::meta::{self, Meta};
use crate::walk;
use crate::Progress;
use rayon::prelude::*;

/// Blobs closer than this in one pack are fetched with one ranged read
/// from a local disk, where a gap read costs its bytes and a seek costs
/// nearly nothing.
const COALESCE_GAP_LOCAL: u64 = 512 * 1024;
/// ...and from remote storage, where every read waits a round trip: a
/// gap shorter than what a stream receives in one (25 ms at 100 MB/s is
/// 2.5 MB) costs less time read than skipped. A whole pack left out of
/// the read is still never fetched.
const COALESCE_GAP_REMOTE: u64 = 2 * 1024 * 1024;
/// ...up to this many bytes per read on a local disk, which bounds each
/// thread's buffer; remote stores (which charge per request and answer
/// with latency) get whole packs in one read.
const MAX_READ_LOCAL: u64 = 8 * 1024 * 1024;
const MAX_READ_REMOTE: u64 = 32 * 1024 * 1024;
/// Zero runs are looked for (and left as holes) in blocks of this size,
/// aligned on file offsets: the block size of common file systems.
const SPARSE_BLOCK: usize = 4096;

/// Name of the marker of an unfinished restore, at the root of the target.
pub const MARKER: &str = ".holdfast-restore-in-progress";

/// When to write zero runs as holes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SparseMode {
    /// Files that had holes at backup (recorded in their node) only.
    #[default]
    Auto,
    /// Every file (`--sparse`).
    Always,
    /// No file (`--no-sparse`): every byte allocated.
    Never,
}

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Snapshot paths to restore (`/srv/docs/x`); empty means everything.
    pub includes: Vec<Vec<u8>>,
    /// Replace entries that already exist at the target and differ.
    pub overwrite: bool,
    /// Fetch/decrypt/write threads; 0 picks from cores and backend.
    pub threads: usize,
    /// How long to wait for packs in archival storage to be retrieved
    /// (default 48 hours, the slowest Deep Archive tier).
    pub max_retrieval_wait: Option<std::time::Duration>,
    /// Do not restore extended attributes (nor so ACLs and capabilities).
    pub no_xattrs: bool,
    /// Holes for zero runs.
    pub sparse: SparseMode,
}

/// What a restore wrote. Counts follow [`NodeCounts`]: `files` and `links`
/// together are the regular-file entries restored; directories that only
/// lead to the backed-up paths are not counted.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RestoreOutcome {
    /// Regular files written (the first path of each hard-linked inode).
    pub files: u64,
    pub dirs: u64,
    /// Further paths of hard-linked files.
    pub links: u64,
    pub symlinks: u64,
    /// FIFOs, sockets and device nodes.
    pub other: u64,
    pub bytes: u64,
    /// Files that already held the snapshot's content and were kept as they
    /// were (counted in `files` too).
    pub files_skipped: u64,
    /// The target held the marker of an unfinished restore of the same
    /// snapshot, and this restore finished it.
    pub resumed: bool,
    /// Seconds spent waiting for packs to come back from archival storage.
    pub retrieval_seconds: f64,
    /// Wall seconds of the phases: planning (trees read, layout), content
    /// (packs fetched, opened, written; the retrieval wait included) and
    /// finishing (links, metadata).
    pub plan_seconds: f64,
    pub content_seconds: f64,
    pub finish_seconds: f64,
    /// Thread-seconds the content workers spent fetching pack ranges,
    /// decrypting and decompressing them, and writing files (summed over
    /// the workers: they overlap, so they exceed the wall time). A drill
    /// apportions the content phase's wall time by them.
    pub download_busy_seconds: f64,
    pub decode_busy_seconds: f64,
    pub write_busy_seconds: f64,
    /// Files that could not be restored, with the reason.
    pub failed: Vec<String>,
    /// Metadata the target refused (extended attributes); the entries
    /// themselves were restored.
    pub warnings: Vec<String>,
}

impl RestoreOutcome {
    /// The entries restored, by kind (the same definitions as a backup's).
    pub fn counts(&self) -> NodeCounts {
        NodeCounts {
            files: self.files + self.links,
            dirs: self.dirs,
            symlinks: self.symlinks,
            other: self.other,
        }
    }
}

/// Target paths of the directories above the snapshot's backed-up paths
/// (`/srv` for `/srv/docs`): created by a restore, but not counted.
fn leading_dirs(snap: &SnapshotEntry, target: &Path) -> HashSet<PathBuf> {
    let mut out = HashSet::new();
    for p in &snap.snapshot.paths {
        let mut dir = Path::new(p.trim_start_matches('/'));
        while let Some(up) = dir.parent() {
            if up.as_os_str().is_empty() {
                break;
            }
            out.insert(target.join(up));
            dir = up;
        }
    }
    out
}

/// What the restore keeps of one tree node.
pub(crate) struct Item {
    pub(crate) path: PathBuf,
    pub(crate) meta: Meta,
    pub(crate) size: u64,
    pub(crate) sparse: bool,
    pub(crate) content: Vec<Id>,
    /// `(dev, inode)` of a file with other hard links in the snapshot.
    pub(crate) link_key: Option<(u64, u64)>,
    /// Symlink target.
    pub(crate) target: Vec<u8>,
}

impl Item {
    fn from_node(path: PathBuf, node: &Node) -> Item {
        Item {
            path,
            meta: Meta::of(node),
            size: node.size,
            sparse: node.sparse,
            content: node.content.clone(),
            link_key: (node.kind == NodeKind::File && node.nlink > 1)
                .then_some((node.dev, node.inode)),
            target: node
                .target
                .as_ref()
                .map(|t| t.0.clone())
                .unwrap_or_default(),
        }
    }
}

/// Whether a failed pack read ends the whole restore (storage unavailable
/// or refusing access: nothing else would read either) rather than failing
/// the files that need the pack (a missing or damaged pack).
fn stops_restore(e: &StorageError) -> bool {
    use holdfast_storage::ErrorClass;
    matches!(
        e.class(),
        ErrorClass::Transient | ErrorClass::PermissionDenied | ErrorClass::NoSpace
    )
}

/// A file being written by the workers.
struct FileState {
    path: PathBuf,
    meta: Meta,
    size: u64,
    /// Skip all-zero blocks (they stay holes).
    sparse: bool,
    /// Already complete in the target: nothing to write.
    kept: bool,
    remaining: AtomicU64,
    failed: Mutex<Option<String>>,
}

impl FileState {
    fn fail(&self, why: String) {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(why);
    }

    fn has_failed(&self) -> bool {
        self.failed.lock().map(|g| g.is_some()).unwrap_or(true)
    }
}

/// One blob to fetch and where it goes. The first target is inline since
/// most blobs have exactly one (this is per blob of the restore).
struct BlobUse {
    id: Id,
    offset: u32,
    length: u32,
    first: (u32, u64),
    more: Vec<(u32, u64)>,
}

impl BlobUse {
    fn targets(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        std::iter::once(self.first)
            .chain(self.more.iter().copied())
            .map(|(f, o)| (f as usize, o))
    }
}

/// What the marker of a restore in progress records.
#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
struct Marker {
    snapshot: String,
    includes: Vec<String>,
}

pub fn restore(
    repo: &Arc<Repository>,
    snap: &SnapshotEntry,
    target: &Path,
    opts: &RestoreOptions,
    progress: &Progress,
) -> SourceResult<RestoreOutcome> {
    // One pool for the CPU-bound stages around the content phase (the
    // plan's tree loading, metadata), as wide as the content phase.
    let threads = if opts.threads > 0 {
        opts.threads
    } else {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        cores.max(repo.capabilities().parallelism).min(16)
    };
    let cpu_pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("holdfast-plan-{i}"))
        .stack_size(16 << 20)
        .build()
        .map_err(|e| holdfast_repo::RepoError::Invalid(format!("starting restore threads: {e}")))?;

    // 1. Plan.
    let started = std::time::Instant::now();
    let items = cpu_pool.install(|| plan(repo, snap, target, opts))?;
    // The walk cached tree packs; the content phase no longer needs them.
    repo.release_tree_cache();

    // 2. Existing entries.
    let marker_path = target.join(MARKER);
    let marker = Marker {
        snapshot: snap.id.to_hex(),
        includes: opts
            .includes
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect(),
    };
    let resumed = match read_marker(&marker_path)? {
        Some(m) if m == marker => true,
        Some(m) if !opts.overwrite => {
            return Err(SourceError::OtherRestoreInProgress {
                marker: marker_path,
                snapshot: m.snapshot,
            })
        }
        _ => false,
    };
    let mut out = RestoreOutcome {
        resumed,
        ..RestoreOutcome::default()
    };
    let index = repo.index();
    let existing = existing_entries(repo, &index, &items, opts.threads)?;
    if existing.differing.files + existing.differing.symlinks + existing.differing.other > 0
        && !opts.overwrite
        && !out.resumed
    {
        return Err(SourceError::WouldOverwrite {
            counts: existing.differing,
            first: existing.first_differing.unwrap_or_default(),
        });
    }
    // The snapshot itself may hold an entry named like the marker: then no
    // marker (a resume needs --overwrite for anything not yet complete).
    let use_marker = !items.iter().any(|i| i.path == marker_path);
    fs::create_dir_all(target).map_err(|e| SourceError::write(target, e))?;
    if use_marker && !out.resumed {
        write_marker(&marker_path, &marker)?;
    }

    // 3. Layout.
    let leading = leading_dirs(snap, target);
    let layout =
        cpu_pool.install(|| lay_out(items, &existing.kept, &leading, &mut out, progress))?;
    let Layout {
        files,
        contents,
        links,
        others,
        mut dirs,
    } = layout;

    // 4. Content.
    out.plan_seconds = started.elapsed().as_secs_f64();
    let content_started = std::time::Instant::now();
    let uses = blob_uses(&index, &files, contents);
    let (max_read, gap) = if repo.capabilities().parallelism > 2 {
        (MAX_READ_REMOTE, COALESCE_GAP_REMOTE)
    } else {
        (MAX_READ_LOCAL, COALESCE_GAP_LOCAL)
    };
    let work = coalesce(&index, &uses, max_read, gap);
    drop(index);
    let fatal: Mutex<Option<SourceError>> = Mutex::new(None);
    let stop = AtomicBool::new(false);
    let busy = Busy::default();
    let pool = Pool {
        repo,
        uses: &uses,
        files: &files,
        fatal: &fatal,
        stop: &stop,
        progress,
        busy: &busy,
    };
    // Packs in an archival storage class answer "archived": only those are
    // retrieved (RestoreObject, poll until readable; the wait is reported)
    // and read again. A restore from hot storage costs no extra request.
    let archived = pool.run(work, threads);
    if !archived.is_empty() {
        let mut packs: Vec<Id> = archived.iter().map(|(p, _)| *p).collect();
        packs.sort();
        packs.dedup();
        let max_wait = opts
            .max_retrieval_wait
            .unwrap_or(std::time::Duration::from_secs(48 * 3600));
        out.retrieval_seconds = repo.ensure_readable(&packs, 7, max_wait)?.as_secs_f64();
        let still = pool.run(archived, threads);
        for (pack, list) in still {
            for i in list {
                for (fi, _) in uses[i].targets() {
                    files[fi].fail(format!("pack {pack} is still archived after its retrieval"));
                }
            }
        }
    }
    if let Some(e) = fatal.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    if progress.stop_requested() {
        return Err(SourceError::RestoreInterrupted(target.to_path_buf()));
    }
    drop(uses);
    out.content_seconds = content_started.elapsed().as_secs_f64();
    let secs = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64 / 1e9;
    out.download_busy_seconds = secs(&busy.download_ns);
    out.decode_busy_seconds = secs(&busy.decode_ns);
    out.write_busy_seconds = secs(&busy.write_ns);
    let finish_started = std::time::Instant::now();

    // 5. Links and metadata, on a pool as wide as the content phase's.
    let xattrs = !opts.no_xattrs;
    let meta_pool = &cpu_pool;
    let ok = meta_pool.install(|| finish_files(&files, xattrs, &mut out, progress));
    for (path, first) in links {
        if !ok[first] {
            out.failed.push(format!(
                "{}: hard link to {} which failed",
                path.display(),
                files[first].path.display()
            ));
            continue;
        }
        remove_existing(&path)?;
        fs::hard_link(&files[first].path, &path).map_err(|e| SourceError::write(&path, e))?;
        out.links += 1;
    }
    meta_pool.install(|| apply_meta_all(&others, xattrs, &mut out));
    // Deepest first: setting a directory's metadata must follow every
    // change inside it. Directories of one depth are independent.
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    let mut rest: &[(PathBuf, Meta)] = &dirs;
    while let Some((first, _)) = rest.first() {
        let depth = first.components().count();
        let n = rest
            .iter()
            .take_while(|(p, _)| p.components().count() == depth)
            .count();
        let (level, tail) = rest.split_at(n);
        meta_pool.install(|| apply_meta_all(level, xattrs, &mut out));
        rest = tail;
    }
    if use_marker && out.failed.is_empty() {
        // Everything is in place: this target no longer needs a resume.
        fs::remove_file(&marker_path).map_err(|e| SourceError::write(&marker_path, e))?;
    }
    out.finish_seconds = finish_started.elapsed().as_secs_f64();
    Ok(out)
}

/// Walk the selected paths into compact items.
pub(crate) fn plan(
    repo: &Repository,
    snap: &SnapshotEntry,
    target: &Path,
    opts: &RestoreOptions,
) -> SourceResult<Vec<Item>> {
    let mut items: Vec<Item> = Vec::new();
    let prefixes: Vec<Vec<u8>> = if opts.includes.is_empty() {
        vec![b"/".to_vec()]
    } else {
        opts.includes.clone()
    };
    for prefix in &prefixes {
        if prefix.as_slice() != b"/" {
            // Fail clearly on an include that names nothing.
            walk::lookup(repo, snap.snapshot.tree, prefix)?;
        }
        let found = walk::walk_map(repo, snap.snapshot.tree, prefix, &|path, node| {
            // Names come from authenticated trees, but a tree written by a
            // buggy or hostile key holder must still not escape the target.
            let n = node.name.0.as_slice();
            if n.is_empty() || n == b"." || n == b".." || n.contains(&b'/') {
                return Err(SourceError::UnsafeName(
                    String::from_utf8_lossy(path).into_owned(),
                ));
            }
            let rel = Path::new(std::ffi::OsStr::from_bytes(
                path.strip_prefix(b"/").unwrap_or(path),
            ));
            let mut item = Item::from_node(target.join(rel), node);
            item.sparse = match opts.sparse {
                SparseMode::Auto => item.sparse,
                SparseMode::Always => true,
                SparseMode::Never => false,
            };
            Ok(item)
        })?;
        items.extend(found);
    }
    items.shrink_to_fit();
    Ok(items)
}

fn read_marker(path: &Path) -> SourceResult<Option<Marker>> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| SourceError::BadMarker {
                marker: path.to_path_buf(),
                detail: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SourceError::Read {
            path: path.to_path_buf(),
            cause: e,
        }),
    }
}

/// Write the marker durably before any entry is created, so a crash at
/// any later point leaves it behind.
fn write_marker(path: &Path, m: &Marker) -> SourceResult<()> {
    let json = serde_json::to_vec(m).map_err(|e| SourceError::write(path, e.into()))?;
    let mut f = File::create(path).map_err(|e| SourceError::write(path, e))?;
    f.write_all(&json)
        .and_then(|()| f.sync_all())
        .map_err(|e| SourceError::write(path, e))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| SourceError::write(dir, e))?;
    }
    Ok(())
}

/// What is already at the target.
#[derive(Default)]
struct Existing {
    /// Per item: a file that already holds its content, to keep.
    kept: Vec<bool>,
    /// Entries in the way that differ from the snapshot, by kind.
    differing: NodeCounts,
    first_differing: Option<PathBuf>,
}

/// Compare what exists at the target with the plan. Regular files of the
/// right size are read and every blob's hash compared with its id, in
/// parallel; anything else that exists in place of a file, symlink or
/// special file counts as differing (directories are merged into).
fn existing_entries(
    repo: &Repository,
    index: &Index,
    items: &[Item],
    threads: usize,
) -> SourceResult<Existing> {
    let mut ex = Existing {
        kept: vec![false; items.len()],
        ..Existing::default()
    };
    let mut candidates: Vec<usize> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if item.meta.kind == NodeKind::Dir {
            continue;
        }
        let Ok(m) = fs::symlink_metadata(&item.path) else {
            continue;
        };
        let same_kind = match item.meta.kind {
            NodeKind::File => m.is_file() && m.len() == item.size,
            NodeKind::Symlink => {
                m.file_type().is_symlink()
                    && fs::read_link(&item.path)
                        .map(|t| t.as_os_str().as_bytes() == item.target.as_slice())
                        .unwrap_or(false)
            }
            NodeKind::Fifo => m.file_type().is_fifo(),
            NodeKind::Socket => m.file_type().is_socket(),
            NodeKind::Chardev => m.file_type().is_char_device() && Some(m.rdev()) == item.meta.rdev,
            NodeKind::Blockdev => {
                m.file_type().is_block_device() && Some(m.rdev()) == item.meta.rdev
            }
            NodeKind::Dir => true,
        };
        if item.meta.kind == NodeKind::File && same_kind {
            candidates.push(i);
        } else if !same_kind {
            ex.differing.add(item.meta.kind);
            ex.first_differing.get_or_insert_with(|| item.path.clone());
        }
    }
    let matching = verify_in_parallel(repo, index, items, &candidates, threads);
    for (k, &i) in candidates.iter().enumerate() {
        if matching[k] {
            ex.kept[i] = true;
        } else {
            ex.differing.add(NodeKind::File);
            ex.first_differing
                .get_or_insert_with(|| items[i].path.clone());
        }
    }
    Ok(ex)
}

/// For each candidate, whether the file holds exactly its content.
fn verify_in_parallel(
    repo: &Repository,
    index: &Index,
    items: &[Item],
    candidates: &[usize],
    threads: usize,
) -> Vec<bool> {
    let results: Vec<AtomicBool> = candidates.iter().map(|_| AtomicBool::new(false)).collect();
    let next = AtomicUsize::new(0);
    let threads = if threads > 0 {
        threads
    } else {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    }
    .min(candidates.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut buf = Vec::new();
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&i) = candidates.get(k) else { break };
                    let same = holds_content(repo, index, &items[i], &mut buf);
                    results[k].store(same, Ordering::Relaxed);
                }
            });
        }
    });
    results.into_iter().map(AtomicBool::into_inner).collect()
}

/// True when the file at `item.path` is exactly the item's content (see
/// [`crate::verify`]); any doubt is "no".
fn holds_content(repo: &Repository, index: &Index, item: &Item, buf: &mut Vec<u8>) -> bool {
    crate::verify::content_mismatch(repo, index, item, buf).is_none()
}

/// Entries laid out, waiting for content and metadata.
struct Layout {
    files: Vec<FileState>,
    /// Content lists of `files`, in the same order: consumed by the blob
    /// plan, so they are not kept through the restore as `files` are.
    contents: Vec<Vec<Id>>,
    /// Hard links: (path, index of the file they link to).
    links: Vec<(PathBuf, usize)>,
    others: Vec<(PathBuf, Meta)>,
    dirs: Vec<(PathBuf, Meta)>,
}

fn remove_existing(path: &Path) -> SourceResult<()> {
    if let Ok(m) = fs::symlink_metadata(path) {
        let r = if m.is_dir() {
            fs::remove_dir_all(path)
        } else {
            fs::remove_file(path)
        };
        r.map_err(|e| SourceError::write(path, e))?;
    }
    Ok(())
}

/// Create directories, symlinks and special files; remove entries in the
/// way (the caller decided that is allowed); register files.
///
/// The syscalls run on the current rayon pool: directories one depth at a
/// time (a parent before its children), then every other entry at once.
/// Results are merged in the plan's order, so counts and messages do not
/// depend on the thread count; on an error, the first in that order is
/// returned.
fn lay_out(
    items: Vec<Item>,
    kept: &[bool],
    leading: &HashSet<PathBuf>,
    out: &mut RestoreOutcome,
    progress: &Progress,
) -> SourceResult<Layout> {
    // Which files are further names of an inode seen before (hard links,
    // made after the content): a serial pass, no syscalls.
    let mut primaries: HashMap<(u64, u64), usize> = HashMap::new();
    let mut is_link = vec![false; items.len()];
    let mut nfiles = 0usize;
    for (k, item) in items.iter().enumerate() {
        if item.meta.kind != NodeKind::File {
            continue;
        }
        if let Some(key) = item.link_key {
            if primaries.contains_key(&key) {
                is_link[k] = true;
                continue;
            }
            primaries.insert(key, nfiles);
        }
        nfiles += 1;
    }

    let mut dir_idx: Vec<usize> = (0..items.len())
        .filter(|&k| items[k].meta.kind == NodeKind::Dir)
        .collect();
    let depth = |k: usize| items[k].path.components().count();
    dir_idx.sort_by_key(|&k| depth(k));
    let mut rest: &[usize] = &dir_idx;
    while let Some(&first) = rest.first() {
        let d = depth(first);
        let n = rest.iter().take_while(|&&k| depth(k) == d).count();
        let (level, tail) = rest.split_at(n);
        let made: Vec<SourceResult<()>> = level
            .par_iter()
            .map(|&k| make_dir(&items[k].path))
            .collect();
        made.into_iter().collect::<SourceResult<()>>()?;
        rest = tail;
    }

    let made: Vec<SourceResult<Option<String>>> = items
        .par_iter()
        .zip(kept.par_iter())
        .zip(is_link.par_iter())
        .map(|((item, &keep), &link)| make_entry(item, keep, link))
        .collect();
    let made = made.into_iter().collect::<SourceResult<Vec<_>>>()?;

    let mut l = Layout {
        files: Vec::new(),
        contents: Vec::new(),
        links: Vec::new(),
        others: Vec::new(),
        dirs: Vec::new(),
    };
    for (k, ((item, &keep), failed)) in items.into_iter().zip(kept).zip(made).enumerate() {
        let path = item.path;
        match item.meta.kind {
            NodeKind::Dir => {
                if !leading.contains(&path) {
                    out.dirs += 1;
                }
                l.dirs.push((path, item.meta));
            }
            NodeKind::File => {
                if is_link[k] {
                    let first = item.link_key.and_then(|key| primaries.get(&key).copied());
                    if let Some(first) = first {
                        l.links.push((path, first));
                    }
                    continue;
                }
                progress.total_bytes.fetch_add(item.size, Ordering::Relaxed);
                if keep {
                    progress.add_bytes(item.size);
                }
                l.files.push(FileState {
                    path,
                    meta: item.meta,
                    size: item.size,
                    sparse: item.sparse,
                    kept: keep,
                    remaining: AtomicU64::new(if keep { 0 } else { item.size }),
                    failed: Mutex::new(None),
                });
                l.contents
                    .push(if keep { Vec::new() } else { item.content });
            }
            NodeKind::Symlink => {
                out.symlinks += 1;
                l.others.push((path, item.meta));
            }
            _ => match failed {
                None => {
                    out.other += 1;
                    l.others.push((path, item.meta));
                }
                // Device nodes need root; reported instead of failing the rest.
                Some(why) => out.failed.push(why),
            },
        }
    }
    Ok(l)
}

/// Create the directory `path` (and any missing parent); one that exists
/// already is fine.
fn make_dir(path: &Path) -> SourceResult<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| SourceError::write(parent, e))?;
    }
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(SourceError::write(path, e)),
    }
}

/// Lay out one entry other than a directory (those are made before):
/// remove what is in its way unless it is kept, then create a symlink, a
/// special file or an empty file. Returns why a special file could not be
/// made (device nodes need root), which is reported, not fatal.
fn make_entry(item: &Item, keep: bool, link: bool) -> SourceResult<Option<String>> {
    let kind = item.meta.kind;
    if kind == NodeKind::Dir {
        return Ok(None);
    }
    let path = &item.path;
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| SourceError::write(parent, e))?;
    }
    if !keep {
        remove_existing(path)?;
    }
    match kind {
        NodeKind::File => {
            // Files with content are created by the worker that writes
            // their first blob, so file creation (costly on ext4 for
            // thousands of files) runs in parallel with the data; hard
            // links are made after the content.
            if !link && item.content.is_empty() && !keep {
                let f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(path)
                    .map_err(|e| SourceError::write(path, e))?;
                f.set_len(item.size)
                    .map_err(|e| SourceError::write(path, e))?;
            }
            Ok(None)
        }
        NodeKind::Symlink => {
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&item.target), path)
                .map_err(|e| SourceError::write(path, e))?;
            Ok(None)
        }
        _ => Ok(meta::mknod(path, &item.meta)
            .err()
            .map(|e| format!("{}: {e}", path.display()))),
    }
}

/// Every needed blob once, with every (file, offset) it goes to. Files
/// whose content cannot be located fail here.
fn blob_uses(index: &Index, files: &[FileState], contents: Vec<Vec<Id>>) -> Vec<BlobUse> {
    let mut uses: Vec<BlobUse> = Vec::new();
    let mut by_blob: HashMap<Id, u32> = HashMap::new();
    for (fi, content) in contents.into_iter().enumerate() {
        let f = &files[fi];
        let mut offset = 0u64;
        for b in &content {
            let Some(loc) = index.get(b) else {
                f.fail(format!(
                    "blob {} is not in the index (run `holdfast check`)",
                    b.short()
                ));
                break;
            };
            let target = (fi as u32, offset);
            match by_blob.get(b) {
                Some(&ui) => uses[ui as usize].more.push(target),
                None => {
                    by_blob.insert(*b, uses.len() as u32);
                    uses.push(BlobUse {
                        id: *b,
                        offset: loc.offset,
                        length: loc.length,
                        first: target,
                        more: Vec::new(),
                    });
                }
            }
            offset += u64::from(loc.raw_len);
        }
    }
    uses.shrink_to_fit();
    uses
}

/// Group blob uses by pack and coalesce them into ranged reads.
fn coalesce(index: &Index, uses: &[BlobUse], max_read: u64, gap: u64) -> Vec<(Id, Vec<usize>)> {
    let mut by_pack: HashMap<Id, Vec<usize>> = HashMap::new();
    for (i, u) in uses.iter().enumerate() {
        if let Some(loc) = index.get(&u.id) {
            by_pack.entry(loc.pack).or_default().push(i);
        }
    }
    let mut work: Vec<(Id, Vec<usize>)> = Vec::new();
    for (pack, mut list) in by_pack {
        list.sort_by_key(|&i| uses[i].offset);
        let mut run: Vec<usize> = Vec::new();
        let mut end = 0u64;
        for i in list {
            let off = u64::from(uses[i].offset);
            let run_start = run.first().map_or(off, |&f| u64::from(uses[f].offset));
            let run_end = off + u64::from(uses[i].length);
            if !run.is_empty() && (off > end + gap || run_end - run_start > max_read) {
                work.push((pack, std::mem::take(&mut run)));
            }
            end = run_end;
            run.push(i);
        }
        if !run.is_empty() {
            work.push((pack, run));
        }
    }
    work
}

/// Settle every file: remove those that failed, give sparse files their
/// full length (a trailing hole is never written), apply metadata. Returns
/// which files are in place.
fn finish_files(
    files: &[FileState],
    xattrs: bool,
    out: &mut RestoreOutcome,
    progress: &Progress,
) -> Vec<bool> {
    // Checking, `chmod`/`chown`/`utimes` and attributes of every file run
    // on the thread pool (a million files are a million syscall rounds);
    // the results are merged in file order, so the report is the same.
    let done: Vec<(bool, Vec<String>, Vec<String>)> = files
        .par_iter()
        .map(|f| {
            let failed = f.failed.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let failed = failed
                .or_else(|| {
                    (f.remaining.load(Ordering::Relaxed) != 0)
                        .then(|| "content incomplete".to_string())
                })
                .or_else(|| {
                    (f.sparse && !f.kept)
                        .then(|| full_length(&f.path, f.size).err())
                        .flatten()
                        .map(|e| format!("setting its length: {e}"))
                });
            if let Some(why) = failed {
                let _ = fs::remove_file(&f.path);
                return (
                    false,
                    vec![format!("{}: {why}", f.path.display())],
                    Vec::new(),
                );
            }
            progress.add_file();
            let (failed, warnings) = meta_result(&f.path, &f.meta, xattrs);
            (true, failed, warnings)
        })
        .collect();
    let mut ok = Vec::with_capacity(files.len());
    for (f, (good, failed, warnings)) in files.iter().zip(done) {
        ok.push(good);
        out.failed.extend(failed);
        out.warnings.extend(warnings);
        if !good {
            continue;
        }
        out.files += 1;
        out.bytes += f.size;
        if f.kept {
            out.files_skipped += 1;
        }
    }
    ok
}

/// Metadata of many entries on the thread pool, reported in their order.
fn apply_meta_all(entries: &[(PathBuf, Meta)], xattrs: bool, out: &mut RestoreOutcome) {
    let done: Vec<(Vec<String>, Vec<String>)> = entries
        .par_iter()
        .map(|(path, m)| meta_result(path, m, xattrs))
        .collect();
    for (failed, warnings) in done {
        out.failed.extend(failed);
        out.warnings.extend(warnings);
    }
}

/// Extend a sparse file to its length: its tail may be a hole, or all of
/// it (then no worker created it).
fn full_length(path: &Path, size: u64) -> std::io::Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    if f.metadata()?.len() != size {
        f.set_len(size)?;
    }
    Ok(())
}

/// (failures, warnings) of restoring one entry's metadata.
fn meta_result(path: &Path, m: &Meta, xattrs: bool) -> (Vec<String>, Vec<String>) {
    match meta::apply(path, m, xattrs) {
        Ok(refused) => (Vec::new(), refused),
        Err(e) => (
            vec![format!("{}: restoring metadata: {e}", path.display())],
            Vec::new(),
        ),
    }
}

/// The content phase: a pool of threads fetching runs of blobs and writing
/// them to every file offset that needs them.
struct Pool<'a> {
    repo: &'a Arc<Repository>,
    uses: &'a [BlobUse],
    files: &'a [FileState],
    fatal: &'a Mutex<Option<SourceError>>,
    stop: &'a AtomicBool,
    progress: &'a Progress,
    busy: &'a Busy,
}

/// Nanoseconds the content workers spent per stage, summed over workers.
/// A pack range is fetched whole before its first region is opened, so
/// the time to the first visit is the download (plus one region's
/// opening, which is small beside a ranged read of up to 8 MiB).
#[derive(Default)]
struct Busy {
    download_ns: AtomicU64,
    decode_ns: AtomicU64,
    write_ns: AtomicU64,
}

fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Pool<'_> {
    /// Process `work`; returns the runs whose pack is in an archival class.
    fn run(&self, work: Vec<(Id, Vec<usize>)>, threads: usize) -> Vec<(Id, Vec<usize>)> {
        let (tx, rx) = crossbeam_channel::unbounded::<(Id, Vec<usize>)>();
        for w in work {
            let _ = tx.send(w);
        }
        drop(tx);
        let archived = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..threads {
                let rx = rx.clone();
                let archived = &archived;
                s.spawn(move || {
                    for (pack, list) in rx {
                        if self.stop.load(Ordering::Relaxed) || self.progress.stop_requested() {
                            break;
                        }
                        match self.fetch(pack, &list) {
                            Ok(()) => {}
                            Err(StorageError::Archived { .. }) => archived
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push((pack, list)),
                            // Storage that is down or refuses us is not damage:
                            // stop with the error's class (the daemon retries
                            // a transient one; rerunning resumes the restore).
                            Err(e) if stops_restore(&e) => {
                                self.stop.store(true, Ordering::Relaxed);
                                let mut g = self.fatal.lock().unwrap_or_else(|e| e.into_inner());
                                g.get_or_insert(SourceError::Repo(
                                    holdfast_repo::RepoError::Storage(e)
                                        .context(format!("reading pack {pack}")),
                                ));
                            }
                            Err(e) => {
                                let msg = format!("pack {pack} cannot be read: {e}");
                                for &i in &list {
                                    for (fi, _) in self.uses[i].targets() {
                                        self.files[fi].fail(msg.clone());
                                    }
                                }
                            }
                        }
                    }
                });
            }
        });
        archived.into_inner().unwrap_or_else(|e| e.into_inner())
    }

    fn fetch(&self, pack: Id, list: &[usize]) -> Result<(), StorageError> {
        let (uses, files) = (self.uses, self.files);
        let index = self.repo.index();
        let mut wanted: Vec<(Id, BlobLocation)> = Vec::with_capacity(list.len());
        let mut located: Vec<usize> = Vec::with_capacity(list.len());
        for &i in list {
            match index.get(&uses[i].id) {
                Some(loc) => {
                    wanted.push((uses[i].id, loc));
                    located.push(i);
                }
                None => {
                    for (fi, _) in uses[i].targets() {
                        files[fi].fail(format!("blob {} left the index", uses[i].id.short()));
                    }
                }
            }
        }
        drop(index);
        let mut next = located.iter();
        let started = std::time::Instant::now();
        let mut first_visit: Option<std::time::Duration> = None;
        let mut writing = std::time::Duration::ZERO;
        let res = self.repo.visit_pack_blobs(pack, &wanted, &mut |_, res| {
            let Some(&ui) = next.next() else { return };
            let u = &uses[ui];
            first_visit.get_or_insert_with(|| started.elapsed());
            let write_started = std::time::Instant::now();
            self.write_blob(u, res);
            writing += write_started.elapsed();
        });
        let total = started.elapsed();
        let download = first_visit.unwrap_or(total);
        self.busy
            .download_ns
            .fetch_add(nanos(download), Ordering::Relaxed);
        self.busy.decode_ns.fetch_add(
            nanos(total.saturating_sub(download).saturating_sub(writing)),
            Ordering::Relaxed,
        );
        self.busy
            .write_ns
            .fetch_add(nanos(writing), Ordering::Relaxed);
        res
    }

    /// Write one visited blob to every file offset that needs it.
    fn write_blob(&self, u: &BlobUse, res: holdfast_repo::Result<&[u8]>) {
        let (files, stop) = (self.files, self.stop);
        match res {
            Ok(data) => {
                for (fi, off) in u.targets() {
                    let f = &files[fi];
                    if stop.load(Ordering::Relaxed) || f.has_failed() {
                        continue;
                    }
                    if let Err(e) = write_at(&f.path, data, off, f.sparse) {
                        let err = SourceError::write(&f.path, e);
                        if matches!(err, SourceError::NoSpace { .. }) {
                            stop.store(true, Ordering::Relaxed);
                            let mut g = self.fatal.lock().unwrap_or_else(|e| e.into_inner());
                            g.get_or_insert(err);
                            return;
                        }
                        f.fail(err.to_string());
                        continue;
                    }
                    f.remaining.fetch_sub(data.len() as u64, Ordering::Relaxed);
                    self.progress.add_bytes(data.len() as u64);
                }
            }
            Err(e) => {
                for (fi, _) in u.targets() {
                    files[fi].fail(e.to_string());
                }
            }
        }
    }
}

fn write_at(path: &Path, data: &[u8], offset: u64, sparse: bool) -> std::io::Result<()> {
    // Opening per blob keeps the number of open files bounded whatever the
    // restore's size; the cost is negligible next to 1 MiB of content. The
    // target was checked to be absent (or removed) when planning, so the
    // first blob creates the file and later ones extend it.
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    if !sparse {
        return f.write_all_at(data, offset);
    }
    for (start, end) in nonzero_runs(data, offset) {
        f.write_all_at(&data[start..end], offset + start as u64)?;
    }
    Ok(())
}

/// The byte ranges of `data` (which starts at file offset `offset`) to
/// write when zero blocks are left as holes: runs of blocks, aligned on
/// file offsets, that hold at least one non-zero byte.
fn nonzero_runs(data: &[u8], offset: u64) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    // The first block ends at the next aligned offset.
    let mut start = 0usize;
    let misalign = (offset % SPARSE_BLOCK as u64) as usize;
    let mut end = (SPARSE_BLOCK - misalign).min(data.len());
    while start < data.len() {
        if data[start..end].iter().any(|&b| b != 0) {
            match runs.last_mut() {
                Some(last) if last.1 == start => last.1 = end,
                _ => runs.push((start, end)),
            }
        }
        start = end;
        end = (end + SPARSE_BLOCK).min(data.len());
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonzero_runs_cover_every_nonzero_byte_and_skip_zero_blocks() {
        let mut data = vec![0u8; 5 * SPARSE_BLOCK + 100];
        data[10] = 1; // block 0 (with an unaligned start: see below)
        data[3 * SPARSE_BLOCK + 7] = 2;
        data[5 * SPARSE_BLOCK + 99] = 3; // the short last block
        for offset in [0u64, 1000, SPARSE_BLOCK as u64] {
            let runs = nonzero_runs(&data, offset);
            let mut rebuilt = vec![0u8; data.len()];
            for &(s, e) in &runs {
                rebuilt[s..e].copy_from_slice(&data[s..e]);
                // Every run ends on an aligned file offset or at the end.
                assert!((offset + e as u64).is_multiple_of(SPARSE_BLOCK as u64) || e == data.len());
            }
            assert_eq!(rebuilt, data, "offset {offset}");
            let written: usize = runs.iter().map(|(s, e)| e - s).sum();
            assert!(written <= 4 * SPARSE_BLOCK, "{written} bytes written");
        }
        assert!(nonzero_runs(&vec![0u8; 3 * SPARSE_BLOCK], 0).is_empty());
    }
}
