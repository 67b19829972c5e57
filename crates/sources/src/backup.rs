//! Backing up filesystem trees.
//!
//! Two thread pools, and no serial stage between the disk and them:
//!
//! * the **reader pool** ([`Parallelism::readers`] threads, rayon) walks:
//!   the entries of each directory are looked at in parallel (lstat,
//!   excludes, the parent snapshot's node, extended attributes), and so
//!   are whole subtrees; files are read and chunked by whichever thread
//!   reaches them, several at once, and a file of at least
//!   [`Parallelism::split_min`] bytes is itself split into segments chunked
//!   on several threads with the same chunks as a serial pass
//!   ([`crate::split`]);
//! * the repository's [`BlobWriter`] workers hash, deduplicate, compress,
//!   encrypt and pack the chunks; packs upload in the background.
//!
//! Results are gathered in name order, so the trees (and snapshot) are the
//! same bytes whatever the thread count. The calling thread only sets up,
//! waits, and finishes (index, snapshot): [`BackupOutcome::cpu`] reports
//! the CPU time of each part, so the serial share can be measured.
//!
//! The snapshot mirrors absolute paths (`/srv/docs` is stored under
//! `srv/docs`), like restic, so backups of several paths never collide.
//!
//! Incremental: for each directory we load the parent snapshot's tree for
//! the same path; a file whose size, mtime, ctime and inode are unchanged,
//! and whose blobs are all still indexed, keeps its blob list without being
//! opened. Unreadable files are reported as warnings, left out of the
//! snapshot, and the backup goes on (the CLI exits 3).
//!
//! Excludes ([`crate::exclude`]) apply to everything found below the given
//! paths, and are recorded in the snapshot's `meta`.
//!
//! A file is read between two `fstat`s of its descriptor; if its size,
//! mtime or ctime moved (or the bytes read differ from the size), it changed
//! while it was read and its content may mix old and new data, so it is read
//! once more; if it changes again it is stored as read and reported in
//! [`BackupOutcome::changing`].
//!
//! When the caller sets [`Progress::stop`] (SIGINT, SIGTERM), the walk stops
//! at the next file or chunk, the blob writer stores and indexes what it
//! holds, and [`SourceError::Interrupted`] is returned without a snapshot:
//! the next backup finds that data in the index and does not upload it again.
//!
//! With [`BackupOptions::scan`], a scanner thread walks the same paths with
//! the same excludes ahead of the backup, counting files and bytes into
//! [`Progress::total_files`] and [`Progress::total_bytes`], so that a
//! progress display has a real total and an ETA.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use holdfast_repo::chunker::{ChunkerParams, Cutter, Gear, StreamChunker};
use holdfast_repo::index::Index;
use holdfast_repo::pack::BlobType;
use holdfast_repo::repository::Commit;
use holdfast_repo::snapshot::{Snapshot, SnapshotEntry, SnapshotFilter, Summary};
use holdfast_repo::tree::{Node, NodeKind, NodeName, Tree};
use holdfast_repo::writer::{BlobWriter, UploadGate, WriterOptions};
use holdfast_repo::{Id, RepoError, Repository};

use crate::error::{SourceError, SourceResult};
use crate::exclude::{ExcludeRules, Excluder, Verdict};
use crate::gather::{Gatherer, PendingContent, GATHERED_FILE_MAX};
use crate::meta::{self, NameCache};
use crate::split::{self, SegmentPool, SplitFail};
use crate::{cputime, Progress};
use rayon::prelude::*;

/// What to back up and how to label it.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub source: String,
    pub tags: Vec<String>,
    /// The snapshot to compare against (latest of the same source, usually).
    pub parent: Option<SnapshotEntry>,
    /// What to leave out (recorded in the snapshot).
    pub excludes: ExcludeRules,
    /// Count files and bytes ahead of the backup for a progress display.
    pub scan: bool,
    /// Leave extended attributes (and so ACLs and capabilities) out.
    pub no_xattrs: bool,
    /// Threads and memory.
    pub parallelism: Parallelism,
    /// The snapshot's time; `None` is now (a given time imports history
    /// and tests retention, as restic's `--time`).
    pub time: Option<chrono::DateTime<Utc>>,
    /// The snapshot's predecessors when the caller knows them (see
    /// [`Lineage::predecessors`]); `None`: found at commit, by listing.
    pub predecessors: Option<Vec<Id>>,
}

/// How many threads a backup uses and how much memory it may hold.
///
/// Memory bound (besides the tree of the directory being walked and its
/// ancestors, as before): the readers hold at most
/// `readers × 2 × max chunk size` of stream-chunker buffers plus
/// `split_budget` bytes of segment buffers for split files (a file that
/// cannot get two segments from the budget is read as a stream instead, so
/// the budget is never exceeded), plus the chunk being submitted by each
/// reader; the blob writer holds its bounded job queue (`2 × writers`
/// chunks), an encoded chunk per worker, the pack being filled and one
/// per upload in flight (see
/// `holdfast_repo::writer`). None of it grows with file sizes or counts of
/// cores beyond these configured numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parallelism {
    /// Threads that walk, read and chunk; 0 means one per core.
    pub readers: usize,
    /// Blob writer workers (hash, compress, encrypt, pack); 0 means one
    /// per core.
    pub writers: usize,
    /// Files at least this large are split across threads.
    pub split_min: u64,
    /// Bytes per segment of a split file (at least 2 × max chunk size).
    pub segment: u64,
    /// Bytes of segment buffers (each `segment + max chunk size`) all split
    /// reads of the backup may hold at once.
    pub split_budget: u64,
}

impl Default for Parallelism {
    fn default() -> Parallelism {
        Parallelism {
            readers: 0,
            writers: 0,
            // Below this, files already keep the readers busy side by side;
            // at 128 MiB a split read has at least four 32 MiB segments.
            split_min: 128 << 20,
            segment: 32 << 20,
            split_budget: 320 << 20,
        }
    }
}

/// Where a backup spent CPU time, in seconds; the serial share
/// (`(main + seams) / total`) bounds its speed-up on more cores.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct CpuStats {
    /// The calling thread: set-up, waiting, index and snapshot at the end.
    pub main: f64,
    /// The reader pool: walking, reading, chunking, trees.
    pub readers: f64,
    /// Of `readers`, the serial seam reconciliation of split files.
    pub seams: f64,
    /// The progress scanner (a side thread at low priority).
    pub scanner: f64,
    /// Every thread of the process during the backup (writers, uploads).
    pub total: f64,
    /// Threads of each pool.
    pub reader_threads: usize,
    pub writer_threads: usize,
    /// Files read by split reads, and the bytes chunked serially at their
    /// seams.
    pub split_files: u64,
    pub seam_bytes: u64,
}

/// What a new backup of a source builds on: the latest file snapshot of
/// the same source (the parent for incremental reads) and the exclude
/// rules to use. Every caller (CLI, daemon) must choose them the same way,
/// or a scheduled backup would silently back up what an operator excluded.
#[derive(Debug, Clone)]
pub struct Lineage {
    pub latest: Option<SnapshotEntry>,
    pub excludes: ExcludeRules,
    /// Set when `excludes` were taken over from `latest`.
    pub inherited_from: Option<Id>,
    /// The predecessors a snapshot of this source from this host records
    /// (see [`holdfast_repo::snapshot::latest_of_same_source`]), from the
    /// same listing: the commit need not list the snapshots again.
    pub predecessors: Vec<Id>,
}

/// Find the latest snapshot of `source` and settle the exclude rules:
/// `explicit` rules win; else, with `inherit`, the latest snapshot's
/// recorded rules; else none.
pub fn lineage(
    repo: &Repository,
    source: &str,
    explicit: Option<ExcludeRules>,
    inherit: bool,
) -> SourceResult<Lineage> {
    let f = SnapshotFilter {
        source: Some(source.to_string()),
        tags: Vec::new(),
        kind: Some("files".into()),
    };
    let all = repo.snapshots()?;
    let predecessors =
        holdfast_repo::snapshot::predecessors_of(&all, source, &holdfast_repo::hostname());
    let latest = all.into_iter().rev().find(|s| f.matches(&s.snapshot));
    let (excludes, inherited_from) = match (explicit, &latest) {
        (Some(rules), _) => (rules, None),
        (None, Some(prev)) if inherit => {
            let rules = ExcludeRules::from_meta(&prev.snapshot.meta).unwrap_or_default();
            let from = (!rules.is_empty()).then_some(prev.id);
            (rules, from)
        }
        _ => (ExcludeRules::default(), None),
    };
    Ok(Lineage {
        latest,
        excludes,
        inherited_from,
        predecessors,
    })
}

/// A finished backup.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    pub id: Id,
    pub snapshot: Snapshot,
    /// Files or directories that could not be read (left out).
    pub warnings: Vec<String>,
    /// Files that kept changing while they were read (stored as read).
    pub changing: Vec<String>,
    /// CPU time by stage.
    pub cpu: CpuStats,
}

/// Make `p` absolute and lexically normal (no `.` or `..`), without
/// resolving symlinks: the user's path is what gets recorded.
pub fn normalize(p: &Path) -> SourceResult<PathBuf> {
    let abs = std::path::absolute(p).map_err(|e| SourceError::Read {
        path: p.to_path_buf(),
        cause: e,
    })?;
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    Ok(out)
}

#[derive(Default)]
struct Trie {
    target: bool,
    children: BTreeMap<Vec<u8>, Trie>,
}

/// Back up `paths` into a new snapshot.
///
/// The walk starts while the writer's lease is being taken, on a thread of
/// its own (three round trips on remote storage: the walk would otherwise
/// wait for them). Nothing is uploaded until the lease is held and the
/// walk's decisions are known to stand: no index object the index was
/// loaded from is gone (no GC sweep ran since) and the parent whose data
/// it reused still exists. Otherwise the walk's work is thrown away, unsent,
/// and the backup runs again under the lease it now holds, which reloads
/// the index and drops a purged parent (see `docs/format.md`, "Garbage
/// collection").
pub fn backup(
    repo: &Repository,
    paths: &[PathBuf],
    opts: &BackupOptions,
    progress: &Progress,
) -> SourceResult<BackupOutcome> {
    match backup_once(repo, paths, opts, progress, Order::WalkWhileLeasing)? {
        Attempt::Done(outcome) => Ok(*outcome),
        Attempt::Again(_held) => {
            progress.restart();
            match backup_once(repo, paths, opts, progress, Order::LeaseFirst)? {
                Attempt::Done(outcome) => Ok(*outcome),
                Attempt::Again(_) => Err(RepoError::Invalid(
                    "a backup under its lease was asked to run again (a bug)".into(),
                )
                .into()),
            }
        }
    }
}

/// When a backup takes its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// Beside the walk, uploads held back until it is held (see [`backup`]).
    WalkWhileLeasing,
    /// Before the walk, which then decides under it.
    LeaseFirst,
}

enum Attempt {
    Done(Box<BackupOutcome>),
    /// The walk's decisions did not stand; the lease, held, is kept for
    /// the next attempt.
    Again(#[allow(dead_code)] holdfast_repo::lease::Lease),
}

fn backup_once(
    repo: &Repository,
    paths: &[PathBuf],
    opts: &BackupOptions,
    progress: &Progress,
    order: Order,
) -> SourceResult<Attempt> {
    let started = Instant::now();
    if paths.is_empty() {
        return Err(RepoError::Invalid("nothing to back up: give at least one path".into()).into());
    }
    let mut trie = Trie::default();
    let mut recorded = Vec::new();
    for p in paths {
        if fs::symlink_metadata(p).is_err() {
            return Err(SourceError::MissingSource { path: p.clone() });
        }
        let abs = normalize(p)?;
        recorded.push(abs.to_string_lossy().into_owned());
        let mut t = &mut trie;
        for c in abs.components() {
            if let Component::Normal(n) = c {
                t = t.children.entry(n.as_bytes().to_vec()).or_default();
            }
        }
        t.target = true;
    }
    if trie.target {
        // Backing up "/" itself.
        trie.children.clear();
    }

    let mut excluder = Excluder::new(&opts.excludes)?;
    for p in paths {
        if let Ok(m) = fs::symlink_metadata(p) {
            excluder.allow_device(m.dev());
        }
    }
    // The lease is held until the snapshot is written: a GC sweep cannot
    // run meanwhile (see `holdfast_repo::lease`), and save_snapshot refuses
    // if it lapsed. Nothing the walk took from the parent or the index is
    // stored before it is held and they are known to be still there: a
    // parent purged (and its packs swept) between choosing it and this
    // moment is not reused, since nothing protects data a writer took from
    // a snapshot that is gone. (The parent's existence is asked with the
    // lease's index listing: one round trip.)
    let parent_id = opts.parent.as_ref().map(|p| p.id);
    // Walking first trusts the parent's trees before the lease: if they
    // cannot even be read (a purge and a sweep got there), take the lease
    // first instead, which asks whether the parent still exists.
    let early = match (order, &opts.parent) {
        (Order::LeaseFirst, _) => None,
        (Order::WalkWhileLeasing, None) => Some(None),
        (Order::WalkWhileLeasing, Some(p)) => repo.load_tree(&p.snapshot.tree).ok().map(Some),
    };
    let (mut lease, parent_root) = match early {
        Some(root) => (None, root),
        None => {
            let (lease, parent_exists) =
                repo.writer_lease_checking("backup", parent_id.as_ref())?;
            let root = match (&opts.parent, parent_exists) {
                (Some(p), Some(true)) => Some(repo.load_tree(&p.snapshot.tree)?),
                _ => None,
            };
            (Some(lease), root)
        }
    };
    let walk_first = lease.is_none();
    let parent_used = parent_root.is_some();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let par = opts.parallelism;
    let readers = if par.readers == 0 { cores } else { par.readers };
    let writers = if par.writers == 0 { cores } else { par.writers };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(readers)
        .thread_name(|i| format!("holdfast-read-{i}"))
        // The walk recurses once per directory level, and a thread waiting
        // for its subtasks runs others on the same stack: room for deep
        // trees, as the main thread had (only touched pages cost memory).
        .stack_size(16 << 20)
        .build()
        .map_err(|e| RepoError::Invalid(format!("starting the reader threads: {e}")))?;
    let cpu_start = (cputime::process(), cputime::thread());
    let gate = UploadGate::new();
    let writer_opts = WriterOptions {
        threads: Some(writers),
        ..WriterOptions::default()
    };
    let mut writer = match walk_first {
        true => BlobWriter::gated(repo, writer_opts, gate.clone()),
        false => BlobWriter::with_options(repo, writer_opts),
    };
    let segments = SegmentPool::new(par.split_budget);
    let walked = AtomicBool::new(false);
    let mut scanner_cpu = Duration::ZERO;
    let (root_tree, tally, taken) = std::thread::scope(|scope| {
        let taking = walk_first.then(|| {
            let (gate, walked) = (&gate, &walked);
            let spawned = std::thread::Builder::new()
                .name("holdfast-lease".into())
                .spawn_scoped(scope, move || {
                    // Opens the gate as soon as the lease is held.
                    let taken =
                        repo.writer_lease_validating("backup", parent_id.as_ref(), gate, walked);
                    match &taken {
                        Ok(v) if v.check.holds(parent_used) => {}
                        Ok(_) => gate.refuse(RepoError::Invalid(
                            "the walk runs again under the lease (a GC sweep ran, or the parent \
                             snapshot is gone)"
                                .into(),
                        )),
                        Err(e) => gate.refuse(e.clone()),
                    }
                    taken
                });
            // Uploads would otherwise wait for a gate nobody opens.
            if let Err(e) = &spawned {
                gate.refuse(RepoError::Invalid(format!(
                    "starting the lease thread: {e}"
                )));
            }
            spawned
        });
        let scanner = if opts.scan {
            let (excluder, walked) = (&excluder, &walked);
            std::thread::Builder::new()
                .name("holdfast-scan".into())
                .spawn_scoped(scope, move || {
                    scan(paths, excluder, progress, walked);
                    cputime::thread()
                })
                .ok()
        } else {
            None
        };
        let a = Archiver {
            repo,
            writer: &writer,
            index: repo.index(),
            names: NameCache::default(),
            params: repo.config().chunker,
            cutter: Cutter::new(repo.gear(), repo.config().chunker),
            gear: repo.gear(),
            progress,
            excluder: &excluder,
            xattrs: !opts.no_xattrs,
            segments: &segments,
            split_min: par.split_min.max(1),
            segment: par.segment,
            gather: repo.takes_frames().then(|| Gatherer::new(&writer)),
        };
        let mut tally = Tally::default();
        let root = pool.install(|| a.root(&trie, parent_root, &mut tally));
        drop(a);
        walked.store(true, Ordering::Release);
        // The last packs go now, beside the lease's check if it is still
        // under way, not after it (see `writer_lease_validating`). A walk
        // that failed sends nothing more.
        if root.is_ok() {
            writer.seal();
        }
        if let Some(h) = scanner {
            scanner_cpu = h.join().unwrap_or_default();
        }
        let taken = taking.map(|spawned| match spawned {
            Ok(h) => h
                .join()
                .unwrap_or_else(|_| Err(RepoError::Invalid("the lease thread panicked".into()))),
            Err(e) => Err(RepoError::Invalid(format!(
                "starting the lease thread: {e}"
            ))),
        });
        (root, tally, taken)
    });
    // A walk that ran before its lease counts only if its decisions stand;
    // a failure to take the lease is the cause of anything the walk then
    // reports (its uploads were refused).
    let early_confirmation = match taken {
        None => None,
        Some(Ok(v)) if v.check.holds(parent_used) => {
            lease = Some(v.lease);
            v.confirmation
        }
        Some(Ok(v)) => {
            drop(writer);
            return Ok(Attempt::Again(v.lease));
        }
        Some(Err(e)) => {
            drop(writer);
            return Err(e.into());
        }
    };
    let _lease = lease;
    // Every reader thread's CPU time so far (they live as long as `pool`).
    let readers_cpu: Duration = pool.broadcast(|_| cputime::thread()).into_iter().sum();
    drop(pool);
    // The walk itself is the exact count: make the totals final (the
    // scanner may have been overtaken, or not run).
    let (files, bytes, _) = progress.get();
    progress.total_files.store(files, Ordering::Relaxed);
    progress.total_bytes.store(bytes, Ordering::Relaxed);
    progress.scan_done.store(true, Ordering::Relaxed);
    let Tally {
        warnings,
        changing,
        mut summary,
        seam_cpu,
        seam_bytes,
        split_files,
    } = tally;
    let root_tree = match root_tree {
        Ok(id) => id,
        Err(SourceError::Interrupted { .. }) => {
            // Store and index what is already on its way, so that the next
            // backup finds it; no snapshot refers to it yet.
            let stats = writer.finish(repo)?;
            return Err(SourceError::Interrupted {
                packs: stats.packs_added,
                stored: stats.stored_added,
            });
        }
        Err(e) => return Err(e),
    };
    // The lease's `head` rides along with the last uploads (or went out
    // with the lease's own check, when the walk was over by then).
    let confirmation = early_confirmation.or_else(|| repo.start_writer_confirm());
    let stats = writer.finish(repo)?;
    summary.blobs_added = stats.blobs_added;
    summary.data_added = stats.data_added;
    summary.meta_added = stats.meta_added;
    summary.stored_added = stats.stored_added;
    summary.duration_secs = started.elapsed().as_secs_f64();
    let mut meta = BTreeMap::new();
    if !opts.excludes.is_empty() {
        let rules = serde_json::to_value(&opts.excludes)
            .map_err(|e| RepoError::Invalid(format!("recording the exclude rules: {e}")))?;
        meta.insert(ExcludeRules::META_KEY.to_string(), rules);
    }
    let snapshot = Snapshot {
        time: opts.time.unwrap_or_else(Utc::now),
        hostname: holdfast_repo::hostname(),
        username: holdfast_repo::username(),
        source: opts.source.clone(),
        kind: "files".into(),
        tags: opts.tags.clone(),
        paths: recorded,
        tree: root_tree,
        parent: opts.parent.as_ref().filter(|_| parent_used).map(|p| p.id),
        summary,
        program_version: env!("CARGO_PKG_VERSION").into(),
        meta,
        predecessors: Vec::new(),
        migrated_from: None,
        audit_head: None,
    };
    let id = repo.save_snapshot_with(
        &snapshot,
        Commit {
            predecessors: opts.predecessors.clone(),
            confirmation,
        },
    )?;
    let cpu = CpuStats {
        main: cputime::thread().saturating_sub(cpu_start.1).as_secs_f64(),
        readers: readers_cpu.as_secs_f64(),
        seams: seam_cpu.as_secs_f64(),
        scanner: scanner_cpu.as_secs_f64(),
        total: cputime::process().saturating_sub(cpu_start.0).as_secs_f64(),
        reader_threads: readers,
        writer_threads: writers,
        split_files,
        seam_bytes,
    };
    Ok(Attempt::Done(Box::new(BackupOutcome {
        id,
        snapshot,
        warnings,
        changing,
        cpu,
    })))
}

/// Count the files and bytes a backup of `paths` will visit (same excludes),
/// for the progress total. Runs beside the backup; it gives up when the
/// backup has finished walking or was asked to stop, and never fails (an
/// unreadable directory only makes the total smaller).
fn scan(paths: &[PathBuf], excluder: &Excluder, progress: &Progress, walked: &AtomicBool) {
    lower_priority();
    let mut stack: Vec<PathBuf> = Vec::new();
    for p in paths {
        if let Ok(m) = fs::symlink_metadata(p) {
            count_scanned(&m, progress);
            if m.is_dir() {
                stack.push(normalize(p).unwrap_or_else(|_| p.clone()));
            }
        }
    }
    while let Some(dir) = stack.pop() {
        if walked.load(Ordering::Relaxed) || progress.stop_requested() {
            return;
        }
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            // fstatat on the open directory: no path lookup per entry.
            let Ok(m) = e.metadata() else {
                continue;
            };
            let child = e.path();
            if excluder.check(&child, &m) == Verdict::Keep {
                count_scanned(&m, progress);
                if m.is_dir() {
                    stack.push(child);
                }
            }
        }
    }
    progress.scan_done.store(true, Ordering::Relaxed);
}

/// Give the calling thread a lower CPU priority (nice 10): the scanner only
/// feeds a progress display, and on a busy machine the CPU it takes comes
/// out of the backup's own share. Best effort: a failure changes nothing.
fn lower_priority() {
    // SAFETY: gettid has no preconditions; setpriority on our own thread id
    // only changes this thread's nice value (Linux applies it per thread).
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}

fn count_scanned(m: &fs::Metadata, progress: &Progress) {
    if m.is_file() {
        progress.total_files.fetch_add(1, Ordering::Relaxed);
        progress.total_bytes.fetch_add(m.len(), Ordering::Relaxed);
    }
}

/// What a file looked like at one instant: if any of it moves while the file
/// is read, what was read may mix old and new content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Stamp {
        Stamp {
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// A node whose file content ids are still being computed.
struct PendingNode {
    node: Node,
    blobs: Vec<PendingContent>,
}

/// What one part of the walk found besides nodes: counts and messages.
/// Each task fills its own and the parent merges them in name order, so the
/// summary and the order of warnings do not depend on the thread count.
#[derive(Default)]
struct Tally {
    summary: Summary,
    warnings: Vec<String>,
    changing: Vec<String>,
    /// Bytes chunked serially at segment seams of split reads.
    seam_bytes: u64,
    /// Thread CPU time of that serial reconciliation.
    seam_cpu: Duration,
    /// Files read by split reads.
    split_files: u64,
}

impl Tally {
    fn merge(&mut self, o: Tally) {
        let (a, b) = (&mut self.summary, o.summary);
        a.files_new += b.files_new;
        a.files_changed += b.files_changed;
        a.files_unchanged += b.files_unchanged;
        a.dirs += b.dirs;
        a.symlinks += b.symlinks;
        a.other += b.other;
        a.files_failed += b.files_failed;
        a.excluded += b.excluded;
        a.files_reread += b.files_reread;
        a.files_changing += b.files_changing;
        a.total_bytes += b.total_bytes;
        a.bytes_read += b.bytes_read;
        self.warnings.extend(o.warnings);
        self.changing.extend(o.changing);
        self.seam_bytes += o.seam_bytes;
        self.seam_cpu += o.seam_cpu;
        self.split_files += o.split_files;
    }

    fn warn(&mut self, progress: &Progress, path: &Path, e: &std::io::Error) {
        self.summary.files_failed += 1;
        progress.errors.fetch_add(1, Ordering::Relaxed);
        self.warnings.push(format!(
            "{}: {e} (left out of the snapshot)",
            path.display()
        ));
    }
}

thread_local! {
    /// Each reader thread's stream-chunker buffer (2 × max chunk size),
    /// reused across files: a backup of many small files must not allocate
    /// and zero one per file.
    static STREAM_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The shared, read-only state of a walk; every method takes `&self` and
/// runs on any thread of the backup's reader pool.
struct Archiver<'a> {
    repo: &'a Repository,
    writer: &'a BlobWriter,
    index: Arc<Index>,
    names: NameCache,
    params: ChunkerParams,
    cutter: Cutter,
    gear: Gear,
    progress: &'a Progress,
    excluder: &'a Excluder,
    /// Record extended attributes.
    xattrs: bool,
    segments: &'a SegmentPool,
    split_min: u64,
    segment: u64,
    /// Small files on their way into shared frames; `None` in a format-1
    /// repository, which has no frames.
    gather: Option<Gatherer<'a>>,
}

impl Archiver<'_> {
    /// The snapshot's root tree.
    fn root(&self, trie: &Trie, parent_root: Option<Tree>, t: &mut Tally) -> SourceResult<Id> {
        if !trie.target {
            return self.virtual_dir(Path::new("/"), trie, parent_root.as_ref(), t);
        }
        // Backing up "/" itself.
        let m = fs::symlink_metadata("/").map_err(|e| SourceError::Read {
            path: "/".into(),
            cause: e,
        })?;
        let root = self.node(Path::new("/"), b"", &m, t);
        let node = self.dir(Path::new("/"), root, parent_root, t)?;
        match node.subtree {
            Some(id) => Ok(id),
            None => self.save_tree(Tree::default()),
        }
    }

    /// Fails with `Interrupted` once the caller asked the backup to stop.
    fn check_stop(&self) -> SourceResult<()> {
        if self.progress.stop_requested() {
            return Err(SourceError::Interrupted {
                packs: 0,
                stored: 0,
            });
        }
        Ok(())
    }

    fn save_tree(&self, mut tree: Tree) -> SourceResult<Id> {
        tree.sort();
        let json = serde_json::to_vec(&tree)
            .map_err(|e| RepoError::Invalid(format!("serialising a tree: {e}")))?;
        Ok(self.writer.save(BlobType::Tree, &json)?)
    }

    fn parent_subtree(&self, node: Option<&Node>) -> Option<Tree> {
        let id = node?.subtree?;
        // A damaged parent tree only costs re-reading; it must not fail the backup.
        self.repo.load_tree(&id).ok()
    }

    /// An ancestor directory of the backed-up paths: only the children on
    /// the way to targets are included.
    fn virtual_dir(
        &self,
        path: &Path,
        trie: &Trie,
        parent: Option<&Tree>,
        t: &mut Tally,
    ) -> SourceResult<Id> {
        let mut nodes = Vec::new();
        for (name, child) in &trie.children {
            let p = path.join(OsString::from_vec(name.clone()));
            let m = match fs::symlink_metadata(&p) {
                Ok(m) => m,
                Err(e) => return Err(SourceError::Read { path: p, cause: e }),
            };
            let pnode = parent.and_then(|t| t.find(name));
            if child.target {
                if let Some(pn) = self.entry(&p, name, &m, pnode, t)? {
                    nodes.push(self.resolve(pn)?);
                }
            } else {
                let ptree = self.parent_subtree(pnode);
                let sub = self.virtual_dir(&p, child, ptree.as_ref(), t)?;
                let mut node = self.node(&p, name, &m, t);
                node.subtree = Some(sub);
                nodes.push(node);
            }
        }
        self.save_tree(Tree::new(nodes))
    }

    fn entry(
        &self,
        path: &Path,
        name: &[u8],
        m: &fs::Metadata,
        parent: Option<&Node>,
        t: &mut Tally,
    ) -> SourceResult<Option<PendingNode>> {
        self.check_stop()?;
        let node = self.node(path, name, m, t);
        match node.kind {
            NodeKind::Dir => Ok(Some(PendingNode {
                node: {
                    let ptree = self.parent_subtree(parent);
                    self.dir(path, node, ptree, t)?
                },
                blobs: Vec::new(),
            })),
            NodeKind::File => self.file(path, node, parent, t),
            NodeKind::Symlink => match fs::read_link(path) {
                Ok(target) => {
                    t.summary.symlinks += 1;
                    let mut node = node;
                    node.target = Some(NodeName(target.into_os_string().into_vec()));
                    Ok(Some(PendingNode {
                        node,
                        blobs: Vec::new(),
                    }))
                }
                Err(e) => {
                    t.warn(self.progress, path, &e);
                    Ok(None)
                }
            },
            _ => {
                t.summary.other += 1;
                Ok(Some(PendingNode {
                    node,
                    blobs: Vec::new(),
                }))
            }
        }
    }

    /// The node for `path` from its `lstat` metadata and, unless turned
    /// off, its extended attributes. Attributes that cannot be read cost a
    /// warning, not the entry.
    fn node(&self, path: &Path, name: &[u8], m: &fs::Metadata, t: &mut Tally) -> Node {
        let mut node = meta::node_from_metadata(name, m, &self.names);
        if self.xattrs {
            match meta::read_xattrs(path) {
                Ok(x) => node.xattrs = x,
                Err(e) => t.warnings.push(format!(
                    "{}: cannot read extended attributes: {e} (stored without them)",
                    path.display()
                )),
            }
        }
        node
    }

    /// Fill the directory `node` (already built from its `lstat` and
    /// attributes by the caller) with its subtree. The entries are listed
    /// here, then looked at (lstat, excludes, parent lookup, reads) in
    /// parallel on the reader pool; results are collected in name order,
    /// so the tree is the same whatever the number of threads.
    fn dir(
        &self,
        path: &Path,
        mut node: Node,
        ptree: Option<Tree>,
        t: &mut Tally,
    ) -> SourceResult<Node> {
        t.summary.dirs += 1;
        let mut names: Vec<OsString> = Vec::new();
        match fs::read_dir(path) {
            Ok(rd) => {
                for e in rd {
                    match e {
                        Ok(e) => names.push(e.file_name()),
                        Err(e) => {
                            t.warn(self.progress, path, &e);
                            break;
                        }
                    }
                }
            }
            Err(e) => t.warn(self.progress, path, &e),
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let ptree = ptree.as_ref();
        let children: Vec<(Option<PendingNode>, Tally)> = names
            .into_par_iter()
            .map(|n| {
                let mut ct = Tally::default();
                let p = self.child(path, &n, ptree, &mut ct)?;
                Ok((p, ct))
            })
            .collect::<SourceResult<_>>()?;
        let mut nodes = Vec::with_capacity(children.len());
        for (p, ct) in children {
            t.merge(ct);
            if let Some(p) = p {
                nodes.push(self.resolve(p)?);
            }
        }
        node.subtree = Some(self.save_tree(Tree::new(nodes))?);
        Ok(node)
    }

    /// One entry of a directory listing.
    fn child(
        &self,
        dir: &Path,
        n: &OsString,
        ptree: Option<&Tree>,
        t: &mut Tally,
    ) -> SourceResult<Option<PendingNode>> {
        let child = dir.join(n);
        let m = match fs::symlink_metadata(&child) {
            Ok(m) => m,
            Err(e) => {
                t.warn(self.progress, &child, &e);
                return Ok(None);
            }
        };
        match self.excluder.check(&child, &m) {
            Verdict::Keep => {}
            Verdict::Exclude => {
                t.summary.excluded += 1;
                return Ok(None);
            }
            Verdict::MountPoint => return self.mount_point(n.as_bytes(), &m, t).map(Some),
        }
        let pnode = ptree.and_then(|pt| pt.find(n.as_bytes()));
        self.entry(&child, n.as_bytes(), &m, pnode, t)
    }

    /// A mount point of another file system under `--one-file-system`: an
    /// empty directory, so that a restore recreates the place to mount on.
    fn mount_point(
        &self,
        name: &[u8],
        m: &fs::Metadata,
        t: &mut Tally,
    ) -> SourceResult<PendingNode> {
        t.summary.dirs += 1;
        let mut node = meta::node_from_metadata(name, m, &self.names);
        node.subtree = Some(self.save_tree(Tree::default())?);
        Ok(PendingNode {
            node,
            blobs: Vec::new(),
        })
    }

    fn file(
        &self,
        path: &Path,
        mut node: Node,
        parent: Option<&Node>,
        t: &mut Tally,
    ) -> SourceResult<Option<PendingNode>> {
        if let Some(old) = parent {
            if meta::unchanged(old, &node) && old.content.iter().all(|b| self.index.contains(b)) {
                self.writer.note_reused(&old.content);
                node.content = old.content.clone();
                t.summary.total_bytes += node.size;
                t.summary.files_unchanged += 1;
                self.progress.add_file();
                self.progress.add_bytes(node.size);
                return Ok(Some(PendingNode {
                    node,
                    blobs: Vec::new(),
                }));
            }
        }
        let (blobs, read, start) = match self.read_stable(path, t)? {
            Some(r) => r,
            None => return Ok(None),
        };
        // Record the file as it was when the kept read began: if it kept
        // changing, its mtime or ctime will differ next time, so the next
        // backup reads it again instead of trusting this content.
        node.size = read;
        node.mtime.sec = start.mtime.0;
        node.mtime.nsec = start.mtime.1 as u32;
        node.ctime.sec = start.ctime.0;
        node.ctime.nsec = start.ctime.1 as u32;
        t.summary.total_bytes += read;
        if parent.is_some() {
            t.summary.files_changed += 1;
        } else {
            t.summary.files_new += 1;
        }
        self.progress.add_file();
        Ok(Some(PendingNode { node, blobs }))
    }

    /// Read a file, and once more if it changed while it was read. `None`
    /// when it cannot be read (a warning is recorded). Returns the blobs,
    /// the bytes read and the file's state when the kept read began.
    fn read_stable(
        &self,
        path: &Path,
        t: &mut Tally,
    ) -> SourceResult<Option<(Vec<PendingContent>, u64, Stamp)>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (blobs, read, before, after) = match self.read_once(path, t) {
                Ok(r) => r,
                Err(ReadFail::Io(e)) => {
                    t.warn(self.progress, path, &e);
                    return Ok(None);
                }
                Err(ReadFail::Repo(e)) => return Err(e.into()),
                Err(ReadFail::Stopped) => {
                    return Err(SourceError::Interrupted {
                        packs: 0,
                        stored: 0,
                    })
                }
            };
            t.summary.bytes_read += read;
            let stable = before == after && read == before.size;
            if stable {
                return Ok(Some((blobs, read, before)));
            }
            if attempt == 1 {
                // The blobs of the mixed read are simply not referenced.
                t.summary.files_reread += 1;
                continue;
            }
            t.summary.files_changing += 1;
            t.changing.push(format!(
                "{}: changed while it was read, twice; stored as read, so its content may mix old and new data",
                path.display()
            ));
            return Ok(Some((blobs, read, before)));
        }
    }

    /// One read of a file between two `fstat`s of its descriptor.
    fn read_once(
        &self,
        path: &Path,
        t: &mut Tally,
    ) -> Result<(Vec<PendingContent>, u64, Stamp, Stamp), ReadFail> {
        let f = File::open(path).map_err(ReadFail::Io)?;
        let before = Stamp::of(&f.metadata().map_err(ReadFail::Io)?);
        let (blobs, read) = self.read_file(&f, before.size, t)?;
        let after = Stamp::of(&f.metadata().map_err(ReadFail::Io)?);
        Ok((blobs, read, before, after))
    }

    fn read_file(
        &self,
        mut f: &File,
        size: u64,
        t: &mut Tally,
    ) -> Result<(Vec<PendingContent>, u64), ReadFail> {
        if size <= u64::from(self.params.min) {
            // Small file: one chunk, no chunker buffer.
            let mut data = Vec::with_capacity(size as usize + 1);
            f.read_to_end(&mut data).map_err(ReadFail::Io)?;
            if data.len() as u64 <= u64::from(self.params.min) {
                let n = data.len() as u64;
                self.progress.add_bytes(n);
                if n == 0 {
                    return Ok((Vec::new(), 0));
                }
                let p = self.store_small(data).map_err(ReadFail::Repo)?;
                return Ok((vec![p], n));
            }
            // It grew past the chunking threshold while we looked: chunk it.
            return self.chunk(std::io::Cursor::new(data).chain(f));
        }
        if size >= self.split_min {
            match self.read_split(f, size, t) {
                Ok(r) => return Ok(r),
                // Shrank while read, or no room for segments: a stream read
                // from the start decides.
                Err(SplitFail::Short) | Err(SplitFail::NoBudget) => {
                    use std::io::Seek;
                    f.seek(std::io::SeekFrom::Start(0)).map_err(ReadFail::Io)?;
                }
                Err(SplitFail::Io(e)) => return Err(ReadFail::Io(e)),
                Err(SplitFail::Emit(e)) => return Err(ReadFail::Repo(e)),
                Err(SplitFail::Stopped) => return Err(ReadFail::Stopped),
            }
        }
        self.chunk(f)
    }

    /// A large file, chunked on several threads (see [`crate::split`]).
    fn read_split(
        &self,
        f: &File,
        size: u64,
        t: &mut Tally,
    ) -> Result<(Vec<PendingContent>, u64), SplitFail<RepoError>> {
        let cpu0 = cputime::thread();
        let r = split::chunk_split(
            f,
            size,
            &self.cutter,
            self.segment,
            self.segments,
            || self.progress.stop_requested(),
            |chunk| {
                self.progress.add_bytes(chunk.len() as u64);
                self.writer
                    .submit(BlobType::Data, chunk.to_vec())
                    .map(PendingContent::Alone)
            },
        );
        // Only the seam work is serial; its share of this thread's time is
        // estimated from its share of the bytes (measuring it exactly would
        // need a clock read per seam step, on a hot path).
        let spent = cputime::thread().saturating_sub(cpu0);
        let r = r?;
        t.seam_bytes += r.seam_bytes;
        t.split_files += 1;
        if r.bytes > 0 {
            t.seam_cpu += spent.mul_f64(r.seam_bytes as f64 / r.bytes as f64);
        }
        Ok((r.items, r.bytes))
    }

    /// Wait for a node's content ids.
    fn resolve(&self, p: PendingNode) -> SourceResult<Node> {
        let PendingNode { mut node, blobs } = p;
        if !blobs.is_empty() {
            node.content = blobs
                .into_iter()
                .map(|b| b.wait(self.writer))
                .collect::<Result<Vec<_>, _>>()?;
        }
        Ok(node)
    }

    /// Store one whole small file's content: gathered with others into a
    /// frame when it is small enough (see [`crate::gather`]), else alone.
    fn store_small(&self, data: Vec<u8>) -> Result<PendingContent, RepoError> {
        match &self.gather {
            Some(g) if data.len() <= GATHERED_FILE_MAX => Ok(g.add(data)),
            _ => Ok(PendingContent::Alone(
                self.writer.submit(BlobType::Data, data)?,
            )),
        }
    }

    fn chunk<R: Read>(&self, r: R) -> Result<(Vec<PendingContent>, u64), ReadFail> {
        let buf = STREAM_BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
        let mut c = StreamChunker::with_buffer(r, self.gear.clone(), self.params, buf);
        let mut blobs = Vec::new();
        let mut total = 0u64;
        let res = loop {
            if self.progress.stop_requested() {
                break Err(ReadFail::Stopped);
            }
            match c.next_chunk() {
                Ok(Some(chunk)) => {
                    total += chunk.len() as u64;
                    self.progress.add_bytes(chunk.len() as u64);
                    match self.writer.submit(BlobType::Data, chunk) {
                        Ok(p) => blobs.push(PendingContent::Alone(p)),
                        Err(e) => break Err(ReadFail::Repo(e)),
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(ReadFail::Io(e)),
            }
        };
        let buf = c.into_parts().1;
        STREAM_BUF.with(|b| *b.borrow_mut() = buf);
        res.map(|()| (blobs, total))
    }
}

enum ReadFail {
    Io(std::io::Error),
    Repo(RepoError),
    Stopped,
}
