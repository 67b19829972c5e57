//! Archival to a cold tier through the application layer, on a real S3
//! server (moto) with a real DEEP_ARCHIVE class: only the data packs no
//! hot snapshot needs move, trees stay hot (`ls` needs no retrieval), a
//! second run moves nothing, an interrupted run is finished by the next,
//! and a restore of the archived snapshot waits for its retrievals and
//! returns every byte; WAL manifests keep their packs hot; on an Object
//! Lock bucket the retention is carried and locked hot copies are
//! reported. On a local directory archival is reported as not
//! possible, not as an error.

#[path = "../../s3/tests/harness/mod.rs"]
mod harness;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use harness::Moto;
use holdfast_ops::archive::{archive, ArchiveConfig, ArchiveReport};
use holdfast_ops::backup::{backup_files, FileBackupConfig};
use holdfast_ops::init::{init, InitConfig};
use holdfast_ops::open::{open, Credential};
use holdfast_ops::restore::{restore_files, FileRestore, FileRestoreConfig, SnapshotSpec};
use holdfast_repo::config::LockConfig;
use holdfast_repo::keys::KdfParams;
use holdfast_repo::snapshot::SnapshotEntry;
use holdfast_repo::{Id, Repository};
use holdfast_s3::S3Backend;
use holdfast_sources::restore::RestoreOptions;
use holdfast_sources::Progress;
use holdfast_storage::fault::{Action, FaultPlan, FaultyBackend, Op, Rule};
use holdfast_storage::local::LocalBackend;
use holdfast_storage::{Backend, ObjectKind};
use tokio::runtime::Runtime;

const PASSWORD: &[u8] = b"archive test password";
const BUCKET: &str = "cold";
const PREFIX: &str = "repo";
const MIB: usize = 1 << 20;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn noise(len: usize, seed: u64) -> Vec<u8> {
    harness::pattern(len, seed).to_vec()
}

/// A repository on moto with three snapshots of one source:
/// 1. `shared.bin`;
/// 2. `shared.bin` and `old/o*.bin` (30 MiB: several packs);
/// 3. `shared.bin` again (`old/` deleted): the hot one.
struct Fixture {
    moto: Moto,
    rt: Runtime,
    dir: tempfile::TempDir,
    src: PathBuf,
    snaps: Vec<SnapshotEntry>,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with_lock(None)
    }

    /// On an Object Lock bucket, every object retained as `lock` says.
    fn with_lock(lock: Option<LockConfig>) -> Fixture {
        let moto = Moto::start();
        let rt = runtime();
        if lock.is_some() {
            rt.block_on(moto.create_lock_bucket(BUCKET));
        } else {
            rt.block_on(moto.create_bucket(BUCKET));
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("old")).expect("mkdir");
        let mut f = Fixture {
            moto,
            rt,
            src,
            dir,
            snaps: Vec::new(),
        };
        init(
            f.backend(),
            f.rt.handle(),
            InitConfig {
                password: PASSWORD.to_vec(),
                kdf: KdfParams {
                    m_cost: 64,
                    t_cost: 1,
                    p_cost: 1,
                },
                compression_level: 3,
                lock,
            },
        )
        .expect("init");
        let repo = f.open();
        std::fs::write(f.src.join("shared.bin"), noise(6 * MIB, 1)).expect("write");
        f.backup(&repo);
        for i in 0..5 {
            std::fs::write(f.src.join(format!("old/o{i}.bin")), noise(6 * MIB, 10 + i))
                .expect("write");
        }
        f.backup(&repo);
        std::fs::remove_dir_all(f.src.join("old")).expect("rm");
        f.backup(&repo);
        f.snaps = repo.snapshots().expect("snapshots");
        assert_eq!(f.snaps.len(), 3);
        f
    }

    fn backend(&self) -> Arc<dyn Backend> {
        let cfg = self.moto.config(BUCKET, PREFIX);
        Arc::new(
            self.rt
                .block_on(S3Backend::connect(cfg))
                .expect("connect to moto"),
        )
    }

    fn open_with(&self, backend: Arc<dyn Backend>) -> Arc<Repository> {
        open(
            backend,
            self.rt.handle(),
            &Credential::Password(PASSWORD.to_vec()),
        )
        .expect("open")
    }

    fn open(&self) -> Arc<Repository> {
        self.open_with(self.backend())
    }

    fn backup(&self, repo: &Repository) {
        let mut cfg = FileBackupConfig::new(vec![self.src.clone()]);
        cfg.source = Some("docs".into());
        backup_files(repo, &cfg, &Progress::default()).expect("backup");
    }

    /// Snapshots 1 and 2 go cold; 3 stays hot.
    fn config(&self, dry_run: bool) -> ArchiveConfig {
        ArchiveConfig {
            snapshots: self.snaps[..2].iter().map(|s| s.id).collect(),
            leaving: BTreeSet::new(),
            class: "DEEP_ARCHIVE".into(),
            dry_run,
        }
    }

    fn archive_with(&self, repo: &Repository, dry_run: bool) -> ArchiveReport {
        repo.load_index().expect("index");
        archive(repo, &self.config(dry_run), &|_, _| {}).expect("archive")
    }

    /// The storage class of every pack, as the server reports it to a
    /// HeadObject (not through the backend under test).
    fn classes(&self) -> HashMap<Id, String> {
        let admin = self.moto.admin();
        self.rt.block_on(async {
            let listed = admin
                .list_objects_v2()
                .bucket(BUCKET)
                .prefix(format!("{PREFIX}/data/"))
                .send()
                .await
                .expect("list");
            let mut out = HashMap::new();
            for o in listed.contents() {
                let key = o.key().expect("key");
                let h = admin
                    .head_object()
                    .bucket(BUCKET)
                    .key(key)
                    .send()
                    .await
                    .expect("head");
                let name = key.rsplit('/').next().expect("name");
                out.insert(
                    name.parse::<Id>().expect("pack id"),
                    h.storage_class()
                        .map_or("STANDARD", |c| c.as_str())
                        .to_string(),
                );
            }
            out
        })
    }

    fn restore(&self, repo: &Arc<Repository>, snap: &SnapshotEntry) -> (FileRestore, PathBuf) {
        let target = self.dir.path().join(format!("restore-{}", snap.id.short()));
        let cfg = FileRestoreConfig {
            snapshot: SnapshotSpec {
                spec: snap.id.to_hex(),
                filter: Default::default(),
            },
            target: target.clone(),
            includes: Vec::new(),
            cwd: self.dir.path().to_path_buf(),
            options: RestoreOptions::default(),
        };
        let done = restore_files(repo, &cfg, &Progress::default()).expect("restore");
        assert!(done.outcome.failed.is_empty(), "{:?}", done.outcome.failed);
        let root = target.join(self.src.strip_prefix("/").expect("absolute"));
        (done, root)
    }
}

/// Packs holding the content of files named `name` in `snap`, and packs
/// holding its trees: found by walking the trees here, independently of
/// the code under test.
fn packs_of(repo: &Repository, snap: &SnapshotEntry, name: &str) -> (HashSet<Id>, HashSet<Id>) {
    let index = repo.index();
    let mut data = HashSet::new();
    let mut trees = HashSet::new();
    let mut stack = vec![snap.snapshot.tree];
    while let Some(t) = stack.pop() {
        trees.insert(index.get(&t).expect("tree indexed").pack);
        for n in repo.load_tree(&t).expect("tree").nodes {
            stack.extend(n.subtree);
            if n.name.0.starts_with(name.as_bytes()) {
                for b in &n.content {
                    data.insert(index.get(b).expect("blob indexed").pack);
                }
            }
        }
    }
    (data, trees)
}

fn same_file(a: &Path, b: &Path) {
    assert!(
        std::fs::read(a).expect("read") == std::fs::read(b).expect("read"),
        "{} differs from {}",
        b.display(),
        a.display()
    );
}

#[test]
fn archival_moves_only_what_no_hot_snapshot_needs_and_restores_after_retrieval() {
    let f = Fixture::new();
    let repo = f.open();
    repo.load_index().expect("index");
    let (old, _) = packs_of(&repo, &f.snaps[1], "o");
    let (shared, _) = packs_of(&repo, &f.snaps[2], "shared.bin");
    let mut tree_packs = HashSet::new();
    for s in &f.snaps {
        tree_packs.extend(packs_of(&repo, s, "").1);
    }
    assert!(old.len() >= 2, "the old files fill several packs: {old:?}");
    assert!(old.is_disjoint(&shared), "the fixture keeps them apart");

    // A dry run says what would move and moves nothing.
    let dry = f.archive_with(&repo, true);
    assert!(dry.supported && dry.dry_run);
    assert_eq!(dry.packs_moved, old.len() as u64, "{dry:?}");
    assert!(dry.bytes_moved >= 30 * MIB as u64, "{dry:?}");
    assert!(f.classes().values().all(|c| c == "STANDARD"));

    let done = f.archive_with(&repo, false);
    println!("{done:?}");
    assert_eq!(done.packs_moved, old.len() as u64);
    assert_eq!(done.bytes_moved, dry.bytes_moved);
    assert_eq!(done.packs_already, 0);
    assert_eq!(done.packs_shared_hot, shared.len() as u64);
    assert_eq!((done.snapshots, done.hot_snapshots), (2, 1));
    assert!(done.metadata_packs >= 1);
    let classes = f.classes();
    for p in &old {
        assert_eq!(classes[p], "DEEP_ARCHIVE", "old pack {p} is cold");
    }
    for p in &shared {
        assert_eq!(classes[p], "STANDARD", "{p}: the hot snapshot needs it");
    }
    for p in &tree_packs {
        assert_eq!(classes[p], "STANDARD", "tree pack {p}: metadata stays hot");
    }
    assert_eq!(
        classes.values().filter(|c| *c == "DEEP_ARCHIVE").count(),
        old.len(),
        "nothing else moved"
    );

    // Again: nothing to do.
    let again = f.archive_with(&repo, false);
    assert_eq!(again.packs_moved, 0);
    assert_eq!(again.packs_already, old.len() as u64);
    assert_eq!(again.bytes_already, done.bytes_moved);

    // The policy's class changed: packs already in another archival class
    // stay there (a move out of one needs a retrieval), with a warning.
    let mut glacier = f.config(false);
    glacier.class = "GLACIER".into();
    let other = archive(&repo, &glacier, &|_, _| {}).expect("archive to GLACIER");
    assert_eq!(other.packs_moved, 0, "{other:?}");
    assert_eq!(other.packs_other_cold_class, old.len() as u64);
    assert!(other
        .warnings
        .iter()
        .any(|w| w.contains("another archival class")));

    // Listing the archived snapshot reads only hot objects: a fresh
    // session (no cache) walks every tree, and moto refuses any GET of a
    // DEEP_ARCHIVE object that was not retrieved.
    let fresh = f.open();
    fresh.load_index().expect("index");
    let mut names = Vec::new();
    holdfast_sources::walk::walk(&fresh, f.snaps[1].snapshot.tree, b"/", &mut |p, _| {
        names.push(String::from_utf8_lossy(p).to_string());
        Ok(())
    })
    .expect("ls of an archived snapshot needs no retrieval");
    assert!(names.iter().any(|n| n.ends_with("old/o4.bin")), "{names:?}");
    assert_eq!(
        classes.len(),
        f.classes().len(),
        "listing retrieved nothing"
    );
    assert!(
        f.classes()
            .values()
            .filter(|c| *c == "DEEP_ARCHIVE")
            .count()
            == old.len()
    );

    // The hot snapshot restores at once; the archived one waits for its
    // retrievals, reports the wait, and comes back byte for byte.
    let (hot, root) = f.restore(&fresh, &f.snaps[2]);
    assert_eq!(hot.outcome.retrieval_seconds, 0.0);
    same_file(&f.src.join("shared.bin"), &root.join("shared.bin"));
    let (cold, root) = f.restore(&fresh, &f.snaps[1]);
    assert!(
        cold.outcome.retrieval_seconds > 0.0,
        "the wait is reported: {:?}",
        cold.outcome
    );
    assert!(
        cold.seconds >= cold.outcome.retrieval_seconds,
        "and counted in the restore time"
    );
    for i in 0..5 {
        let got = std::fs::read(root.join(format!("old/o{i}.bin"))).expect("restored");
        assert!(got == noise(6 * MIB, 10 + i), "old/o{i}.bin differs");
    }
    same_file(&f.src.join("shared.bin"), &root.join("shared.bin"));
}

#[test]
fn an_interrupted_archival_is_finished_by_the_next_run() {
    let f = Fixture::new();
    let repo = f.open();
    repo.load_index().expect("index");
    let (old, _) = packs_of(&repo, &f.snaps[1], "o");
    assert!(old.len() >= 2, "{old:?}");
    // The process dies at the second move.
    let faulty = Arc::new(FaultyBackend::new(
        f.backend(),
        FaultPlan::default().rule(Rule::new(
            Op::SetClass,
            Some(ObjectKind::Pack),
            2,
            Action::Crash,
        )),
    ));
    let dying = f.open_with(faulty.clone());
    dying.load_index().expect("index");
    let e = archive(&dying, &f.config(false), &|_, _| {}).expect_err("it crashed");
    assert!(faulty.crashed(), "the crash point was reached: {e}");
    assert!(e.to_string().contains("run again"), "{e}");
    let cold_now = f
        .classes()
        .values()
        .filter(|c| *c == "DEEP_ARCHIVE")
        .count();
    assert!(cold_now < old.len(), "the crash left work to do");

    let done = f.archive_with(&f.open(), false);
    assert_eq!(done.packs_already as usize, cold_now);
    assert_eq!(done.packs_moved as usize, old.len() - cold_now);
    let classes = f.classes();
    assert!(old.iter().all(|p| classes[p] == "DEEP_ARCHIVE"));
    let check =
        holdfast_ops::check::check(&f.open(), &Default::default(), &|_, _| {}).expect("check");
    assert!(check.ok(), "{:?}", check.errors);
}

/// A pack that disappears between the listing and its move (a garbage
/// collection repacked it meanwhile) is a warning, not a failure: the
/// other packs move, and the next run has nothing left to do.
#[test]
fn a_pack_gone_meanwhile_is_a_warning() {
    use holdfast_storage::ErrorClass;
    let f = Fixture::new();
    let repo = f.open();
    repo.load_index().expect("index");
    let (old, _) = packs_of(&repo, &f.snaps[1], "o");
    let faulty = Arc::new(FaultyBackend::new(
        f.backend(),
        FaultPlan::default().rule(Rule::new(
            Op::SetClass,
            Some(ObjectKind::Pack),
            1,
            Action::Fail(ErrorClass::NotFound),
        )),
    ));
    let repo = f.open_with(faulty);
    repo.load_index().expect("index");
    let r = archive(&repo, &f.config(false), &|_, _| {}).expect("not an error");
    assert_eq!(r.packs_moved as usize, old.len() - 1, "{r:?}");
    assert!(
        r.warnings.iter().any(|w| w.contains("disappeared")),
        "{:?}",
        r.warnings
    );
}

/// WAL manifests are hot roots: packs holding blobs a manifest names stay
/// hot even when only archived snapshots need them otherwise.
#[test]
fn packs_a_wal_manifest_needs_stay_hot() {
    let f = Fixture::new();
    let repo = f.open();
    repo.load_index().expect("index");
    let (old, _) = packs_of(&repo, &f.snaps[1], "o");
    let (o0, _) = packs_of(&repo, &f.snaps[1], "o0.bin");
    // A manifest naming o0.bin's blobs (as if that content were a WAL file).
    let mut blobs = Vec::new();
    let mut stack = vec![f.snaps[1].snapshot.tree];
    while let Some(t) = stack.pop() {
        for n in repo.load_tree(&t).expect("tree").nodes {
            stack.extend(n.subtree);
            if n.name.0 == b"o0.bin" {
                blobs.extend(n.content);
            }
        }
    }
    assert!(!blobs.is_empty());
    let manifest = holdfast_repo::walmanifest::WalManifest {
        version: 1,
        cluster: "7001".into(),
        name: "000000010000000000000001".into(),
        size: 6 * MIB as u64,
        blake3: String::new(),
        blobs,
        archived_at: chrono::Utc::now(),
        stored_at: Vec::new(),
    };
    assert!(repo.put_wal_manifest(&manifest).expect("put manifest"));

    let done = f.archive_with(&repo, false);
    assert_eq!(done.wal_manifests, 1);
    let classes = f.classes();
    for p in &o0 {
        assert_eq!(classes[p], "STANDARD", "{p}: a WAL manifest needs it");
    }
    for p in old.difference(&o0) {
        assert_eq!(
            classes[p], "DEEP_ARCHIVE",
            "{p}: only archived snapshots need it"
        );
    }
    assert_eq!(done.packs_moved as usize, old.difference(&o0).count());
}

/// On an Object Lock bucket the moved packs keep their retention, the
/// locked copies in the old class are kept and reported (not an error),
/// and the archived snapshot still restores byte for byte.
#[test]
fn archival_on_an_object_lock_bucket_keeps_retention() {
    let f = Fixture::with_lock(Some(LockConfig {
        mode: "governance".into(),
        days: 1,
    }));
    let repo = f.open();
    repo.load_index().expect("index");
    let (old, _) = packs_of(&repo, &f.snaps[1], "o");
    let admin = f.moto.admin();
    let key = |p: &Id| {
        let hex = p.to_hex();
        format!("{PREFIX}/data/{}/{hex}", &hex[..2])
    };
    let until_before: HashMap<Id, i64> = old
        .iter()
        .map(|p| {
            let h =
                f.rt.block_on(admin.head_object().bucket(BUCKET).key(key(p)).send())
                    .expect("head");
            (
                *p,
                h.object_lock_retain_until_date().expect("retained").secs(),
            )
        })
        .collect();

    let done = f.archive_with(&repo, false);
    assert_eq!(done.packs_moved, old.len() as u64);
    assert_eq!(
        done.previous_copies_kept, done.packs_moved,
        "the locked hot copies stay: {done:?}"
    );
    assert!(
        done.warnings.iter().any(|w| w.contains("retention")),
        "{:?}",
        done.warnings
    );
    for p in &old {
        let h =
            f.rt.block_on(admin.head_object().bucket(BUCKET).key(key(p)).send())
                .expect("head");
        assert_eq!(h.storage_class().map(|c| c.as_str()), Some("DEEP_ARCHIVE"));
        assert_eq!(h.object_lock_mode().map(|m| m.as_str()), Some("GOVERNANCE"));
        assert!(
            h.object_lock_retain_until_date().expect("retained").secs() >= until_before[p],
            "{p}: the retention is carried, never shortened"
        );
    }
    let (cold, root) = f.restore(&f.open(), &f.snaps[1]);
    assert!(cold.outcome.retrieval_seconds > 0.0);
    for i in 0..5 {
        let got = std::fs::read(root.join(format!("old/o{i}.bin"))).expect("restored");
        assert!(got == noise(6 * MIB, 10 + i), "old/o{i}.bin differs");
    }
}

#[test]
fn archival_on_a_local_directory_is_reported_as_not_possible() {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path().join("repo")));
    init(
        backend.clone(),
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
    .expect("init");
    let repo = open(
        backend,
        rt.handle(),
        &Credential::Password(PASSWORD.to_vec()),
    )
    .expect("open");
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("a.txt"), b"some text").expect("write");
    backup_files(
        &repo,
        &FileBackupConfig::new(vec![src]),
        &Progress::default(),
    )
    .expect("backup");
    let snaps: BTreeSet<Id> = repo
        .snapshots()
        .expect("snapshots")
        .iter()
        .map(|s| s.id)
        .collect();
    let r = archive(
        &repo,
        &ArchiveConfig {
            snapshots: snaps,
            leaving: BTreeSet::new(),
            class: "DEEP_ARCHIVE".into(),
            dry_run: false,
        },
        &|_, _| {},
    )
    .expect("not an error");
    assert!(!r.supported);
    assert_eq!(r.packs_moved, 0);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("no storage classes") && w.contains("stay")),
        "{:?}",
        r.warnings
    );
}
