//! The race GC must win, made deterministic: a backup commits a snapshot
//! that reuses data GC has already found unreferenced, between GC's mark
//! and its sweep. A backend decorator runs that backup at the exact moment
//! GC asks for its exclusive lease (its first lock write), so the sweep
//! must find the new snapshot, keep the pack, and leave a repository that
//! checks clean and restores byte for byte. Without the backup, the same
//! pack is deleted (the control).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use holdfast_ops::backup::{backup_files, FileBackupConfig};
use holdfast_ops::init::{init, InitConfig};
use holdfast_ops::open::{open, Credential};
use holdfast_repo::gc::{gc, GcOptions};
use holdfast_repo::keys::KdfParams;
use holdfast_repo::Repository;
use holdfast_sources::Progress;
use holdfast_storage::local::LocalBackend;
use holdfast_storage::{Backend, Capabilities, ObjectKind, ObjectMeta, PutOptions, StorageResult};

mod common;
use common::{check_clean, noise};

const PASSWORD: &[u8] = b"gc race password";

type Hook = Box<dyn FnOnce() + Send>;

/// Forwards everything; runs `hook` (once, on its own thread, to its end)
/// before the first lock object is written. With `hold`, it also holds a
/// writer's sweep check (its first listing of `index/` after a lock
/// object was written) until a pack has been stored, or 30 s have passed:
/// whatever the walk stores between its lease and that check is then
/// stored for certain, not by luck of timing.
#[derive(Clone)]
struct BeforeFirstLock {
    inner: Arc<dyn Backend>,
    hook: Arc<Mutex<Option<Hook>>>,
    hold: Option<Arc<CheckHold>>,
}

/// What [`BeforeFirstLock`] saw while holding the sweep check.
#[derive(Debug, Default)]
struct CheckHold {
    lock_written: AtomicBool,
    packs_stored: AtomicUsize,
    /// Packs stored when the held listing was let go (`None`: not yet).
    packs_before_check: Mutex<Option<usize>>,
}

impl CheckHold {
    fn stored(&self, kind: ObjectKind) {
        match kind {
            ObjectKind::Lock => self.lock_written.store(true, Ordering::SeqCst),
            ObjectKind::Pack => {
                self.packs_stored.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        }
    }

    /// Before a listing of `kind`: wait if it is the sweep check.
    async fn before_list(&self, kind: ObjectKind) {
        if kind != ObjectKind::Index
            || !self.lock_written.load(Ordering::SeqCst)
            || self.packs_before_check.lock().unwrap().is_some()
        {
            return;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.packs_stored.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        *self.packs_before_check.lock().unwrap() = Some(self.packs_stored.load(Ordering::SeqCst));
    }
}

impl std::fmt::Debug for BeforeFirstLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BeforeFirstLock")
    }
}

#[async_trait]
impl Backend for BeforeFirstLock {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn put(
        &self,
        kind: ObjectKind,
        name: &str,
        data: Bytes,
        opts: &PutOptions,
    ) -> StorageResult<()> {
        if kind == ObjectKind::Lock {
            let hook = self.hook.lock().unwrap().take();
            if let Some(h) = hook {
                // A blocking wait inside the runtime is fine for a test
                // whose runtime has spare workers; the hook uses its own.
                std::thread::spawn(h).join().unwrap();
            }
        }
        let r = self.inner.put(kind, name, data, opts).await;
        if let (Some(hold), true) = (&self.hold, r.is_ok()) {
            hold.stored(kind);
        }
        r
    }
    async fn get(
        &self,
        kind: ObjectKind,
        name: &str,
        range: Option<Range<u64>>,
    ) -> StorageResult<Bytes> {
        self.inner.get(kind, name, range).await
    }
    async fn head(&self, kind: ObjectKind, name: &str) -> StorageResult<ObjectMeta> {
        self.inner.head(kind, name).await
    }
    async fn list(&self, kind: ObjectKind) -> StorageResult<Vec<ObjectMeta>> {
        if let Some(hold) = &self.hold {
            hold.before_list(kind).await;
        }
        self.inner.list(kind).await
    }
    async fn delete(&self, kind: ObjectKind, name: &str) -> StorageResult<()> {
        self.inner.delete(kind, name).await
    }
}

fn open_repo(backend: Arc<dyn Backend>, rt: &tokio::runtime::Runtime) -> Arc<Repository> {
    open(
        backend,
        rt.handle(),
        &Credential::Password(PASSWORD.to_vec()),
    )
    .unwrap()
}

fn try_backup(
    repo: &Repository,
    src: &Path,
    source: &str,
) -> Result<holdfast_ops::backup::FileBackup, holdfast_ops::OpsError> {
    let mut cfg = FileBackupConfig::new(vec![src.to_path_buf()]);
    cfg.source = Some(source.into());
    backup_files(repo, &cfg, &Progress::default())
}

fn backup(repo: &Repository, src: &Path, source: &str) -> String {
    try_backup(repo, src, source).unwrap().outcome.id.to_hex()
}

fn packs(repo: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for fan in std::fs::read_dir(repo.join("data")).unwrap() {
        for p in std::fs::read_dir(fan.unwrap().path()).unwrap() {
            out.push(p.unwrap().path());
        }
    }
    out.sort();
    out
}

/// A pack of file data rather than trees (the test's files are 3 MiB).
fn is_data(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.len() > 1 << 20)
}

struct Setup {
    dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    /// The snapshot whose manifest was removed: its data is garbage.
    dropped_src: PathBuf,
    /// Packs that only the dropped snapshot used.
    doomed: Vec<PathBuf>,
    /// Of those, the ones holding file data.
    doomed_data: Vec<PathBuf>,
}

impl Setup {
    /// The plain backend of the repository, and a new source `again`
    /// holding the dropped snapshot's file (its data is in doomed packs).
    fn again_with_dropped_data(&self) -> (Arc<dyn Backend>, PathBuf) {
        let plain: Arc<dyn Backend> = Arc::new(LocalBackend::new(self.dir.path().join("repo")));
        let again = self.dir.path().join("again");
        std::fs::create_dir_all(&again).unwrap();
        std::fs::copy(self.dropped_src.join("d.bin"), again.join("d.bin")).unwrap();
        (plain, again)
    }
}

/// Two sources; the first one's snapshot removed, so its packs are garbage.
fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let rt = common::runtime(3);
    let repo_dir = dir.path().join("repo");
    let plain: Arc<dyn Backend> = Arc::new(LocalBackend::new(&repo_dir));
    init(
        plain.clone(),
        rt.handle(),
        InitConfig {
            password: PASSWORD.to_vec(),
            kdf: KdfParams {
                m_cost: 64,
                t_cost: 1,
                p_cost: 1,
            },
            compression_level: 3,
            lock: None,
        },
    )
    .unwrap();
    let repo = open_repo(plain.clone(), &rt);
    let kept = dir.path().join("kept");
    std::fs::create_dir_all(&kept).unwrap();
    std::fs::write(kept.join("k.bin"), noise(3 << 20, 1)).unwrap();
    backup(&repo, &kept, "kept");
    let before = packs(&repo_dir);
    let dropped_src = dir.path().join("dropped");
    std::fs::create_dir_all(&dropped_src).unwrap();
    std::fs::write(dropped_src.join("d.bin"), noise(3 << 20, 2)).unwrap();
    let dropped = backup(&repo, &dropped_src, "dropped");
    let doomed: Vec<PathBuf> = packs(&repo_dir)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    let doomed_data: Vec<PathBuf> = doomed.iter().filter(|p| is_data(p)).cloned().collect();
    assert!(!doomed_data.is_empty());
    rt.block_on(plain.delete(ObjectKind::Snapshot, &dropped))
        .unwrap();
    Setup {
        dir,
        rt,
        dropped_src,
        doomed,
        doomed_data,
    }
}

#[test]
fn a_snapshot_committed_between_mark_and_sweep_keeps_the_data_it_reuses() {
    let s = setup();
    // The same content as the dropped snapshot, under a new source: the
    // backup deduplicates against the doomed packs.
    let (plain, again) = s.again_with_dropped_data();
    let repo_dir = s.dir.path().join("repo");
    let committed = Arc::new(Mutex::new(None::<String>));
    let hook: Hook = {
        let (plain, again, committed) = (plain.clone(), again.clone(), committed.clone());
        let repo_dir = repo_dir.clone();
        Box::new(move || {
            let rt = common::runtime(3);
            let repo = open_repo(plain, &rt);
            let before = packs(&repo_dir);
            let id = backup(&repo, &again, "again");
            // Its file data was all deduplicated (only its tree is new).
            let new: Vec<PathBuf> = packs(&repo_dir)
                .into_iter()
                .filter(|p| !before.contains(p))
                .collect();
            let new_bytes: u64 = new
                .iter()
                .map(|p| std::fs::metadata(p).unwrap().len())
                .sum();
            assert!(
                new_bytes < 100_000,
                "the backup stored {new_bytes} bytes again"
            );
            *committed.lock().unwrap() = Some(id);
        })
    };
    let hooked: Arc<dyn Backend> = Arc::new(BeforeFirstLock {
        inner: plain.clone(),
        hook: Arc::new(Mutex::new(Some(hook))),
        hold: None,
    });
    let gc_repo = open_repo(hooked, &s.rt);
    let report = gc(&gc_repo, &GcOptions::default(), &|_, _, _| {}).unwrap();
    let id = committed.lock().unwrap().clone().expect("the backup ran");
    assert_eq!(report.new_roots, 1, "{report:?}");
    assert!(report.packs_rescued >= 1, "{report:?}");
    // The data packs stay (the dropped snapshot's tree pack may go: the
    // new snapshot has its own tree).
    for p in &s.doomed_data {
        assert!(
            p.exists(),
            "{} was deleted under a new snapshot",
            p.display()
        );
    }
    assert_restores(plain, &s, &id, &again, "d.bin", &noise(3 << 20, 2));
}

#[test]
fn without_a_new_snapshot_the_same_packs_are_deleted() {
    let s = setup();
    let repo_dir = s.dir.path().join("repo");
    let plain: Arc<dyn Backend> = Arc::new(LocalBackend::new(&repo_dir));
    let repo = open_repo(plain, &s.rt);
    let report = gc(&repo, &GcOptions::default(), &|_, _, _| {}).unwrap();
    assert_eq!(report.new_roots, 0);
    assert_eq!(report.packs_rescued, 0);
    for p in &s.doomed {
        assert!(!p.exists(), "{} survived", p.display());
    }
    check_clean(&repo);
}

/// A hooked repository whose first lease write first runs a whole GC
/// (mark and sweep) on the plain backend, after `before` (on it too).
fn gc_at_first_lease(
    plain: &Arc<dyn Backend>,
    before: impl FnOnce(&Arc<dyn Backend>) + Send + 'static,
) -> Arc<dyn Backend> {
    gc_at_first_lease_holding(plain, before, None)
}

/// [`gc_at_first_lease`], holding the sweep check as `hold` says (see
/// [`BeforeFirstLock`]).
fn gc_at_first_lease_holding(
    plain: &Arc<dyn Backend>,
    before: impl FnOnce(&Arc<dyn Backend>) + Send + 'static,
    hold: Option<Arc<CheckHold>>,
) -> Arc<dyn Backend> {
    let hook: Hook = {
        let plain = plain.clone();
        Box::new(move || {
            before(&plain);
            let rt = common::runtime(3);
            let repo = open_repo(plain, &rt);
            gc(&repo, &GcOptions::default(), &|_, _, _| {}).unwrap();
        })
    };
    Arc::new(BeforeFirstLock {
        inner: plain.clone(),
        hook: Arc::new(Mutex::new(Some(hook))),
        hold,
    })
}

/// Opened afresh on the plain backend: the repository checks clean and
/// snapshot `id` restores `src/file` as `want`.
fn assert_restores(
    plain: Arc<dyn Backend>,
    s: &Setup,
    id: &str,
    src: &Path,
    file: &str,
    want: &[u8],
) {
    let repo = open_repo(plain, &s.rt);
    check_clean(&repo);
    let work = s.dir.path();
    let target = work.join(format!("out-{id}"));
    holdfast_ops::restore::restore_files(
        &repo,
        &holdfast_ops::restore::FileRestoreConfig {
            snapshot: holdfast_ops::restore::SnapshotSpec {
                spec: id.to_string(),
                filter: Default::default(),
            },
            target: target.clone(),
            includes: Vec::new(),
            cwd: work.to_path_buf(),
            options: Default::default(),
        },
        &Progress::default(),
    )
    .unwrap();
    let got = std::fs::read(target.join(src.strip_prefix("/").unwrap()).join(file)).unwrap();
    assert!(got == want, "{file} restored wrong");
}

/// A backup walks while its lease is being taken, deduplicating against
/// the index it loaded; a GC sweeps the packs it deduplicated against
/// before the lease is written. The backup must notice (an index object
/// it loaded is gone), throw its walk away and store the data again:
/// otherwise its snapshot would name deleted packs.
#[test]
fn a_sweep_before_the_lease_makes_the_walk_run_again() {
    let s = setup();
    let (plain, again) = s.again_with_dropped_data();
    let repo = open_repo(gc_at_first_lease(&plain, |_| {}), &s.rt);
    let done = try_backup(&repo, &again, "again").unwrap();
    // The sweep ran: the dropped snapshot's data packs are gone...
    for p in &s.doomed_data {
        assert!(!p.exists(), "{} survived the sweep", p.display());
    }
    // ...so the backup stored its 3 MiB again instead of reusing them.
    let stored = done.outcome.snapshot.summary.stored_added;
    assert!(stored >= 3 << 20, "stored only {stored} bytes");
    let id = done.outcome.id.to_hex();
    assert_restores(plain, &s, &id, &again, "d.bin", &noise(3 << 20, 2));
}

/// A writer's uploads may go once its lease is held, before the check
/// that says whether its walk's decisions stand (no sweep can run while
/// the lease is held, so what it stores stays). When the check then
/// fails, the packs stored meanwhile are what a killed writer leaves:
/// never indexed, removed by the next GC. The walk that runs again stores
/// what it needs anew and commits a snapshot that checks clean and
/// restores.
#[test]
fn packs_stored_before_a_failed_check_are_never_indexed() {
    let s = setup();
    let (plain, again) = s.again_with_dropped_data();
    // More than a pack (16 MiB) of new data: the walk seals one while its
    // lease is being taken.
    std::fs::write(again.join("new.bin"), noise(20 << 20, 11)).unwrap();
    let hold = Arc::new(CheckHold::default());
    let hooked = gc_at_first_lease_holding(&plain, |_| {}, Some(hold.clone()));
    let repo = open_repo(hooked, &s.rt);
    let done = try_backup(&repo, &again, "again").unwrap();
    let early = hold.packs_before_check.lock().unwrap().unwrap_or(0);
    assert!(
        early >= 1,
        "no pack was stored between the lease and its check"
    );
    // The walk ran again: everything stored anew, the swept data too.
    let stored = done.outcome.snapshot.summary.stored_added;
    assert!(stored >= 23 << 20, "stored only {stored} bytes");
    let id = done.outcome.id.to_hex();
    drop(repo);
    let repo = open_repo(plain.clone(), &s.rt);
    check_clean(&repo);
    let report = gc(&repo, &GcOptions::default(), &|_, _, _| {}).unwrap();
    assert!(
        report.unindexed_deleted >= early,
        "the {early} pack(s) stored before the failed check were indexed ({} unindexed deleted)",
        report.unindexed_deleted
    );
    drop(repo);
    assert_restores(plain, &s, &id, &again, "new.bin", &noise(20 << 20, 11));
    let out = s.dir.path().join(format!("out-{id}"));
    let d = std::fs::read(out.join(again.strip_prefix("/").unwrap()).join("d.bin")).unwrap();
    assert!(d == noise(3 << 20, 2), "d.bin restored wrong");
}

/// The same with the parent: a backup reuses its parent's data for
/// unchanged files while its lease is being taken; the parent is purged
/// and its packs swept before the lease is written. The backup must read
/// its files again, not name the swept data.
#[test]
fn a_parent_purged_before_the_lease_is_not_reused() {
    let s = setup();
    let repo_dir = s.dir.path().join("repo");
    let plain: Arc<dyn Backend> = Arc::new(LocalBackend::new(&repo_dir));
    let src = s.dir.path().join("p");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("p.bin"), noise(3 << 20, 3)).unwrap();
    let parent = {
        let repo = open_repo(plain.clone(), &s.rt);
        backup(&repo, &src, "p")
    };
    let purge = parent.clone();
    // Purged as `policy apply` does: a deletion record, then the delete.
    let hooked = gc_at_first_lease(&plain, move |plain| {
        let rt = common::runtime(3);
        let repo = open_repo(plain.clone(), &rt);
        let entry = repo
            .snapshots()
            .unwrap()
            .into_iter()
            .find(|e| e.id.to_hex() == purge)
            .unwrap();
        let tomb = holdfast_repo::forget::Tombstone::new(
            &entry,
            "policy apply",
            None,
            "test",
            chrono::Utc::now(),
        );
        repo.forget_snapshot(&tomb).unwrap();
    });
    let repo = open_repo(hooked, &s.rt);
    let done = try_backup(&repo, &src, "p").unwrap();
    assert_eq!(done.parent.map(|p| p.to_hex()), Some(parent.clone()));
    let summary = &done.outcome.snapshot.summary;
    assert_eq!(summary.files_unchanged, 0, "{summary:?}");
    assert!(summary.stored_added >= 3 << 20, "{summary:?}");
    assert_eq!(done.outcome.snapshot.parent, None);
    let id = done.outcome.id.to_hex();
    assert_restores(plain, &s, &id, &src, "p.bin", &noise(3 << 20, 3));
}

/// The walk runs before the lease is held, but nothing it produces may be
/// stored without the lease: with a stuck GC holding the exclusive lease
/// (refreshing it, never done), the backup fails naming it, and stores no
/// pack and no index object although its walk filled a whole pack (24 MiB
/// of new data; packs are 16 MiB) long before the lease gave up.
#[test]
fn without_its_lease_a_backup_stores_nothing() {
    use holdfast_repo::lease::{self, LeaseMode, LeaseOptions, LeaseRequest};
    let s = setup();
    let repo_dir = s.dir.path().join("repo");
    let plain: Arc<dyn Backend> = Arc::new(LocalBackend::new(&repo_dir));
    let short = LeaseOptions {
        shared_duration: std::time::Duration::from_millis(1500),
        exclusive_duration: std::time::Duration::from_millis(1500),
        exclusive_wait: std::time::Duration::from_millis(300),
    };
    let repo = open_repo(plain.clone(), &s.rt);
    repo.set_lease_options(short);
    let stuck = lease::acquire(
        plain.clone(),
        s.rt.handle().clone(),
        repo.key().clone(),
        repo.format_version(),
        &LeaseRequest {
            operation: "gc".into(),
            mode: LeaseMode::Exclusive,
            host: "other-host".into(),
            user: "someone".into(),
            pid: 4_000_000,
        },
        &short,
    )
    .unwrap();
    let before = packs(&repo_dir);
    let index_before = s.rt.block_on(plain.list(ObjectKind::Index)).unwrap().len();
    let fresh = s.dir.path().join("fresh");
    std::fs::create_dir_all(&fresh).unwrap();
    std::fs::write(fresh.join("f.bin"), noise(24 << 20, 9)).unwrap();
    let err = try_backup(&repo, &fresh, "fresh").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("exclusive") && msg.contains("gc"), "{msg}");
    assert_eq!(
        packs(&repo_dir),
        before,
        "a pack was stored without a lease"
    );
    let index_after = s.rt.block_on(plain.list(ObjectKind::Index)).unwrap().len();
    assert_eq!(index_after, index_before);
    drop(stuck);
}
