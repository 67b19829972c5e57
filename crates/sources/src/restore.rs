//! Restoring a snapshot (or paths inside it) into a directory.
//!
//! 1. Plan: walk the selected part of the tree; refuse, before writing
//!    anything, if files already exist at the target (unless overwriting).
//! 2. Lay out directories, symlinks and special files; create every regular
//!    file at its final size.
//! 3. Content: group every needed blob by pack, coalesce nearby blobs into
//!    ranged reads, and let a pool of threads fetch, decrypt, verify (each blob
//!    must hash to its id) and write each blob to every file offset that needs
//!    it. A pack is read once however many files share its blobs.
//! 4. Hard links, then metadata (files, then directories deepest first, since
//!    creating entries changes a directory's mtime).
//!
//! A damaged or missing blob fails only the files that use it: they are
//! removed (never left with silently wrong content) and reported by name;
//! every other file is restored. A full disk stops the restore with a clear
//! error: there is no point writing further.

use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use holdfast_repo::index::BlobLocation;
use holdfast_repo::snapshot::{NodeCounts, SnapshotEntry};
use holdfast_repo::tree::{Node, NodeKind};
use holdfast_repo::{Id, Repository};
use holdfast_storage::StorageError;

use crate::error::{SourceError, SourceResult};
use crate::meta;
use crate::walk;
use crate::Progress;

/// Blobs closer than this in one pack are fetched with one ranged read.
const COALESCE_GAP: u64 = 512 * 1024;
/// ...up to this many bytes per read on a local disk, which bounds each
/// thread's buffer; remote stores (which charge per request and answer
/// with latency) get whole packs in one read.
const MAX_READ_LOCAL: u64 = 8 * 1024 * 1024;
const MAX_READ_REMOTE: u64 = 32 * 1024 * 1024;

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Snapshot paths to restore (`/srv/docs/x`); empty means everything.
    pub includes: Vec<Vec<u8>>,
    /// Replace files that already exist at the target.
    pub overwrite: bool,
    /// Fetch/decrypt/write threads; 0 picks from cores and backend.
    pub threads: usize,
    /// How long to wait for packs in archival storage to be retrieved
    /// (default 48 hours, the slowest Deep Archive tier).
    pub max_retrieval_wait: Option<std::time::Duration>,
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
    /// Seconds spent waiting for packs to come back from archival storage.
    pub retrieval_seconds: f64,
    /// Files that could not be restored, with the reason.
    pub failed: Vec<String>,
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

struct FileState {
    path: PathBuf,
    node: Node,
    remaining: AtomicU64,
    failed: Mutex<Option<String>>,
}

struct BlobUse {
    id: Id,
    loc: BlobLocation,
    /// (file index, offset in file)
    targets: Vec<(usize, u64)>,
}

pub fn restore(
    repo: &Arc<Repository>,
    snap: &SnapshotEntry,
    target: &Path,
    opts: &RestoreOptions,
    progress: &Progress,
) -> SourceResult<RestoreOutcome> {
    // 1. Plan.
    let mut entries: Vec<(PathBuf, Node)> = Vec::new();
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
        walk::walk(repo, snap.snapshot.tree, prefix, &mut |path, node| {
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
            entries.push((target.join(rel), node.clone()));
            Ok(())
        })?;
    }
    let existing: Vec<&(PathBuf, Node)> = entries
        .iter()
        .filter(|(p, n)| n.kind != NodeKind::Dir && fs::symlink_metadata(p).is_ok())
        .collect();
    if !existing.is_empty() && !opts.overwrite {
        let mut counts = NodeCounts::default();
        for (_, n) in &existing {
            counts.add(n.kind);
        }
        return Err(SourceError::WouldOverwrite {
            counts,
            first: existing[0].0.clone(),
        });
    }
    let leading = leading_dirs(snap, target);

    // 2. Layout.
    fs::create_dir_all(target).map_err(|e| SourceError::write(target, e))?;
    let mut out = RestoreOutcome::default();
    let mut files: Vec<FileState> = Vec::new();
    let mut links: Vec<(PathBuf, usize)> = Vec::new();
    let mut primaries: HashMap<(u64, u64), usize> = HashMap::new();
    let mut others: Vec<(PathBuf, Node)> = Vec::new();
    let mut dirs: Vec<(PathBuf, Node)> = Vec::new();
    for (path, node) in entries {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| SourceError::write(parent, e))?;
        }
        if node.kind != NodeKind::Dir && opts.overwrite {
            if let Ok(m) = fs::symlink_metadata(&path) {
                let r = if m.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                r.map_err(|e| SourceError::write(&path, e))?;
            }
        }
        match node.kind {
            NodeKind::Dir => {
                match fs::create_dir(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => {}
                    Err(e) => return Err(SourceError::write(&path, e)),
                }
                if !leading.contains(&path) {
                    out.dirs += 1;
                }
                dirs.push((path, node));
            }
            NodeKind::File => {
                if node.nlink > 1 {
                    if let Some(&first) = primaries.get(&(node.dev, node.inode)) {
                        links.push((path, first));
                        continue;
                    }
                    primaries.insert((node.dev, node.inode), files.len());
                }
                // Files with content are created by the worker that writes
                // their first blob, so file creation (costly on ext4 for
                // thousands of files) runs in parallel with the data.
                if node.content.is_empty() {
                    let f = OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .open(&path)
                        .map_err(|e| SourceError::write(&path, e))?;
                    f.set_len(node.size)
                        .map_err(|e| SourceError::write(&path, e))?;
                }
                progress.total_bytes.fetch_add(node.size, Ordering::Relaxed);
                files.push(FileState {
                    path,
                    remaining: AtomicU64::new(node.size),
                    node,
                    failed: Mutex::new(None),
                });
            }
            NodeKind::Symlink => {
                let t = node
                    .target
                    .as_ref()
                    .map(|t| t.0.clone())
                    .unwrap_or_default();
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&t), &path)
                    .map_err(|e| SourceError::write(&path, e))?;
                out.symlinks += 1;
                others.push((path, node));
            }
            _ => {
                match meta::mknod(&path, &node) {
                    Ok(()) => {
                        out.other += 1;
                        others.push((path, node));
                    }
                    // Device nodes need root; report instead of failing the rest.
                    Err(e) => out.failed.push(format!("{}: {e}", path.display())),
                }
            }
        }
    }

    // 3. Content.
    let index = repo.index();
    let mut uses: Vec<BlobUse> = Vec::new();
    let mut by_blob: HashMap<Id, usize> = HashMap::new();
    for (fi, f) in files.iter().enumerate() {
        let mut offset = 0u64;
        for b in &f.node.content {
            let Some(loc) = index.get(b) else {
                *f.failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!(
                    "blob {} is not in the index (run `holdfast check`)",
                    b.short()
                ));
                break;
            };
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
    }
    // Group by pack and coalesce into ranged reads.
    let mut by_pack: HashMap<Id, Vec<usize>> = HashMap::new();
    for (i, u) in uses.iter().enumerate() {
        by_pack.entry(u.loc.pack).or_default().push(i);
    }
    let max_read = if repo.backend().capabilities().parallelism > 2 {
        MAX_READ_REMOTE
    } else {
        MAX_READ_LOCAL
    };
    let mut work: Vec<(Id, Vec<usize>)> = Vec::new();
    for (pack, mut list) in by_pack {
        list.sort_by_key(|&i| uses[i].loc.offset);
        let mut run: Vec<usize> = Vec::new();
        let mut end = 0u64;
        for i in list {
            let off = u64::from(uses[i].loc.offset);
            let run_start = run.first().map_or(off, |&f| u64::from(uses[f].loc.offset));
            let run_end = off + u64::from(uses[i].loc.length);
            if !run.is_empty() && (off > end + COALESCE_GAP || run_end - run_start > max_read) {
                work.push((pack, std::mem::take(&mut run)));
            }
            end = off + u64::from(uses[i].loc.length);
            run.push(i);
        }
        if !run.is_empty() {
            work.push((pack, run));
        }
    }
    let threads = if opts.threads > 0 {
        opts.threads
    } else {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        cores.max(repo.backend().capabilities().parallelism).min(16)
    };
    let fatal: Mutex<Option<SourceError>> = Mutex::new(None);
    let stop = AtomicBool::new(false);
    let pool = Pool {
        repo,
        uses: &uses,
        files: &files,
        fatal: &fatal,
        stop: &stop,
        progress,
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
                for &(fi, _) in &uses[i].targets {
                    let mut g = files[fi].failed.lock().unwrap_or_else(|e| e.into_inner());
                    g.get_or_insert(format!("pack {pack} is still archived after its retrieval"));
                }
            }
        }
    }
    if let Some(e) = fatal.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }

    // 4. Links and metadata.
    let mut ok = vec![true; files.len()];
    for (i, f) in files.iter().enumerate() {
        let failed = f.failed.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let failed = failed.or_else(|| {
            (f.remaining.load(Ordering::Relaxed) != 0).then(|| "content incomplete".to_string())
        });
        if let Some(why) = failed {
            ok[i] = false;
            let _ = fs::remove_file(&f.path);
            out.failed.push(format!("{}: {why}", f.path.display()));
            continue;
        }
        out.files += 1;
        out.bytes += f.node.size;
        progress.add_file();
        if let Err(e) = meta::apply(&f.path, &f.node) {
            out.failed
                .push(format!("{}: restoring metadata: {e}", f.path.display()));
        }
    }
    for (path, first) in links {
        if !ok[first] {
            out.failed.push(format!(
                "{}: hard link to {} which failed",
                path.display(),
                files[first].path.display()
            ));
            continue;
        }
        fs::hard_link(&files[first].path, &path).map_err(|e| SourceError::write(&path, e))?;
        out.links += 1;
    }
    for (path, node) in &others {
        if let Err(e) = meta::apply(path, node) {
            out.failed
                .push(format!("{}: restoring metadata: {e}", path.display()));
        }
    }
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (path, node) in &dirs {
        if let Err(e) = meta::apply(path, node) {
            out.failed
                .push(format!("{}: restoring metadata: {e}", path.display()));
        }
    }
    Ok(out)
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
                        if self.stop.load(Ordering::Relaxed) {
                            break;
                        }
                        match self.fetch(pack, &list) {
                            Ok(()) => {}
                            Err(StorageError::Archived { .. }) => archived
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push((pack, list)),
                            Err(e) => {
                                let msg = format!("pack {pack} cannot be read: {e}");
                                for &i in &list {
                                    for &(fi, _) in &self.uses[i].targets {
                                        let mut g = self.files[fi]
                                            .failed
                                            .lock()
                                            .unwrap_or_else(|e| e.into_inner());
                                        g.get_or_insert(msg.clone());
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
        let (uses, files, stop) = (self.uses, self.files, self.stop);
        let wanted: Vec<(Id, BlobLocation)> =
            list.iter().map(|&i| (uses[i].id, uses[i].loc)).collect();
        let mut next = list.iter();
        self.repo.visit_pack_blobs(pack, &wanted, &mut |_, res| {
            let Some(&ui) = next.next() else { return };
            let u = &uses[ui];
            match res {
                Ok(data) => {
                    for &(fi, off) in &u.targets {
                        let f = &files[fi];
                        if stop.load(Ordering::Relaxed)
                            || f.failed.lock().map(|g| g.is_some()).unwrap_or(true)
                        {
                            continue;
                        }
                        if let Err(e) = write_at(&f.path, data, off) {
                            let err = SourceError::write(&f.path, e);
                            if matches!(err, SourceError::NoSpace { .. }) {
                                stop.store(true, Ordering::Relaxed);
                                let mut g = self.fatal.lock().unwrap_or_else(|e| e.into_inner());
                                g.get_or_insert(err);
                                return;
                            }
                            *f.failed.lock().unwrap_or_else(|e| e.into_inner()) =
                                Some(err.to_string());
                            continue;
                        }
                        f.remaining.fetch_sub(data.len() as u64, Ordering::Relaxed);
                        self.progress.add_bytes(data.len() as u64);
                    }
                }
                Err(e) => {
                    for &(fi, _) in &u.targets {
                        let mut g = files[fi].failed.lock().unwrap_or_else(|e| e.into_inner());
                        g.get_or_insert(e.to_string());
                    }
                }
            }
        })
    }
}

fn write_at(path: &Path, data: &[u8], offset: u64) -> std::io::Result<()> {
    // Opening per blob keeps the number of open files bounded whatever the
    // restore's size; the cost is negligible next to 1 MiB of content. The
    // target was checked to be absent (or removed) when planning, so the
    // first blob creates the file and later ones extend it.
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    f.write_all_at(data, offset)
}
