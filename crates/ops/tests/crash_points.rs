//! Every crash point of the crash-safety table in docs/format.md, made
//! deterministic with the fault-injecting backend decorator: a run dies at
//! a chosen storage operation, and what it left must be a valid repository
//! whose earlier snapshots restore exactly and whose next run succeeds.
//! Also: storage error classes reach the caller whole (no space,
//! transient, locked), on the write and the read side.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use holdfast_ops::backup::{backup_files, FileBackupConfig};
use holdfast_ops::init::{init, InitConfig};
use holdfast_ops::open::{open, Credential};
use holdfast_ops::restore::{restore_files, FileRestoreConfig, SnapshotSpec};
use holdfast_ops::OpsError;
use holdfast_repo::keys::KdfParams;
use holdfast_repo::{Class, Repository};
use holdfast_sources::restore::RestoreOptions;
use holdfast_sources::Progress;
use holdfast_storage::fault::{Action, FaultPlan, FaultyBackend, Op, Rule};
use holdfast_storage::local::LocalBackend;
use holdfast_storage::{Backend, ErrorClass, ObjectKind};
use tokio::runtime::Runtime;

mod common;
use common::check_clean;

const PASSWORD: &[u8] = b"crash test password";

fn cheap_kdf() -> KdfParams {
    KdfParams {
        m_cost: 64,
        t_cost: 1,
        p_cost: 1,
    }
}

/// A tree big enough to need several packs (packs are 16 MiB; the
/// writer starts one per worker): incompressible files plus small ones.
fn make_tree(root: &Path, seed: u64, big_files: usize) {
    std::fs::create_dir_all(root.join("docs/sub")).expect("mkdir");
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    for i in 0..big_files {
        let data: Vec<u8> = (0..6 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(root.join(format!("docs/big{i}.bin")), data).expect("write");
    }
    for i in 0..50 {
        std::fs::write(
            root.join(format!("docs/sub/note{i}.txt")),
            format!("note {i} of seed {seed}\n").repeat(i + 1),
        )
        .expect("write");
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    repo_dir: PathBuf,
    src: PathBuf,
    work: PathBuf,
    rt: Runtime,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = Fixture {
            repo_dir: dir.path().join("repo"),
            src: dir.path().join("src"),
            work: dir.path().join("work"),
            _dir: dir,
            rt: common::runtime(2),
        };
        std::fs::create_dir_all(&f.work).expect("mkdir");
        f
    }

    fn plain(&self) -> Arc<dyn Backend> {
        Arc::new(LocalBackend::new(&self.repo_dir))
    }

    fn init(&self) {
        init(
            self.plain(),
            self.rt.handle(),
            InitConfig {
                password: PASSWORD.to_vec(),
                kdf: cheap_kdf(),
                compression_level: 3,
                lock: None,
            },
        )
        .expect("init");
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
        self.open_with(self.plain())
    }

    fn faulty(&self, plan: FaultPlan) -> Arc<FaultyBackend> {
        Arc::new(FaultyBackend::new(self.plain(), plan))
    }

    fn backup(&self, repo: &Repository) -> Result<holdfast_ops::backup::FileBackup, OpsError> {
        let mut cfg = FileBackupConfig::new(vec![self.src.clone()]);
        cfg.source = Some("docs".into());
        backup_files(repo, &cfg, &Progress::default())
    }

    /// Restore `spec` (a backup of `self.src`) into a fresh directory and
    /// compare it with `expected`.
    fn restores_exactly(&self, repo: &Arc<Repository>, spec: &str, expected: &Path) {
        let target = tempfile::tempdir_in(&self.work).expect("tempdir");
        let cfg = FileRestoreConfig {
            snapshot: SnapshotSpec {
                spec: spec.to_string(),
                filter: Default::default(),
            },
            target: target.path().to_path_buf(),
            includes: Vec::new(),
            cwd: self.work.clone(),
            options: RestoreOptions::default(),
        };
        let done = restore_files(repo, &cfg, &Progress::default()).expect("restore");
        assert!(done.outcome.failed.is_empty(), "{:?}", done.outcome.failed);
        let restored = target
            .path()
            .join(self.src.strip_prefix("/").expect("absolute"));
        assert_same_tree(expected, &restored);
    }
}

fn assert_same_tree(a: &Path, b: &Path) {
    let mut entries: Vec<_> = std::fs::read_dir(a)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    entries.sort();
    let mut other: Vec<_> = std::fs::read_dir(b)
        .unwrap_or_else(|e| panic!("{}: {e}", b.display()))
        .map(|e| e.expect("entry").file_name())
        .collect();
    other.sort();
    assert_eq!(entries, other, "entries of {}", b.display());
    for name in entries {
        let (pa, pb) = (a.join(&name), b.join(&name));
        if pa.is_dir() {
            assert_same_tree(&pa, &pb);
        } else {
            assert!(
                std::fs::read(&pa).expect("read") == std::fs::read(&pb).expect("read"),
                "content of {} differs",
                pb.display()
            );
        }
    }
}

/// A first backup, then a second one of a changed tree that dies at
/// `rule`; afterwards the first snapshot restores, `check --read-data` is
/// clean, and a third backup succeeds and restores the changed tree.
fn crash_during_second_backup(rule: Rule) -> (Fixture, Arc<FaultyBackend>) {
    let f = Fixture::new();
    f.init();
    make_tree(&f.src, 1, 1);
    let first_copy = f.work.join("first");
    copy_tree(&f.src, &first_copy);
    let repo = f.open();
    let first = f.backup(&repo).expect("first backup");
    drop(repo);

    make_tree(&f.src, 2, 4);
    let faulty = f.faulty(FaultPlan::default().rule(rule));
    let repo = f.open_with(faulty.clone());
    let r = f.backup(&repo);
    assert!(r.is_err(), "the backup went on past a crash at {rule:?}");
    assert!(faulty.crashed(), "the crash rule {rule:?} never fired");
    drop(repo);

    // The process is gone; a new one opens what is left.
    let repo = f.open();
    assert_eq!(repo.snapshots().expect("snapshots").len(), 1);
    check_clean(&repo);
    f.restores_exactly(&repo, &first.outcome.id.to_hex(), &first_copy);
    let third = f.backup(&repo).expect("backup after the crash");
    f.restores_exactly(&repo, &third.outcome.id.to_hex(), &f.src);
    check_clean(&repo);
    (f, faulty)
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let p = e.path();
        if p.is_dir() {
            copy_tree(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).expect("copy");
        }
    }
}

#[test]
fn crash_before_a_pack_is_written() {
    crash_during_second_backup(Rule::new(Op::Put, Some(ObjectKind::Pack), 2, Action::Crash));
}

#[test]
fn crash_after_a_pack_before_its_index() {
    let (f, faulty) = crash_during_second_backup(Rule::new(
        Op::Put,
        Some(ObjectKind::Pack),
        1,
        Action::CrashAfter,
    ));
    assert_eq!(faulty.count(Op::Put, ObjectKind::Index), 0);
    drop(f);
}

#[test]
fn crash_at_the_index_after_its_packs() {
    crash_during_second_backup(Rule::new(
        Op::Put,
        Some(ObjectKind::Index),
        1,
        Action::Crash,
    ));
}

#[test]
fn crash_after_the_index_before_the_snapshot_and_the_next_backup_dedups() {
    let f = Fixture::new();
    f.init();
    make_tree(&f.src, 3, 3);
    let faulty = f.faulty(FaultPlan::default().rule(Rule::new(
        Op::Put,
        Some(ObjectKind::Snapshot),
        1,
        Action::Crash,
    )));
    let repo = f.open_with(faulty.clone());
    assert!(f.backup(&repo).is_err());
    assert!(faulty.count(Op::Put, ObjectKind::Index) >= 1);
    drop(repo);
    let repo = f.open();
    assert!(repo.snapshots().expect("snapshots").is_empty());
    check_clean(&repo);
    let next = f.backup(&repo).expect("backup after the crash");
    let s = &next.outcome.snapshot.summary;
    assert!(
        s.data_added < (1 << 20),
        "the data stored before the crash was uploaded again: {} bytes",
        s.data_added
    );
    f.restores_exactly(&repo, "latest", &f.src);
}

#[test]
fn crash_while_writing_the_snapshot_after_it_is_durable() {
    // The snapshot is stored but the process dies before it hears so:
    // the next run sees a complete snapshot.
    let f = Fixture::new();
    f.init();
    make_tree(&f.src, 4, 1);
    let faulty = f.faulty(FaultPlan::default().rule(Rule::new(
        Op::Put,
        Some(ObjectKind::Snapshot),
        1,
        Action::CrashAfter,
    )));
    let repo = f.open_with(faulty);
    assert!(f.backup(&repo).is_err());
    drop(repo);
    let repo = f.open();
    assert_eq!(repo.snapshots().expect("snapshots").len(), 1);
    check_clean(&repo);
    f.restores_exactly(&repo, "latest", &f.src);
}

#[test]
fn crash_between_adding_and_removing_a_key_leaves_both_passwords() {
    let f = Fixture::new();
    f.init();
    let faulty = f.faulty(FaultPlan::default().rule(Rule::new(
        Op::Delete,
        Some(ObjectKind::Key),
        1,
        Action::Crash,
    )));
    let repo = f.open_with(faulty);
    let slot = holdfast_ops::keys::NewSlot {
        secret: holdfast_ops::keys::NewSecret::Password {
            password: b"the new one".to_vec(),
            kdf: cheap_kdf(),
        },
        label: String::new(),
    };
    assert!(holdfast_ops::keys::change(&repo, slot).is_err());
    drop(repo);
    for pw in [PASSWORD, b"the new one".as_slice()] {
        open(f.plain(), f.rt.handle(), &Credential::Password(pw.to_vec()))
            .unwrap_or_else(|e| panic!("{:?} no longer opens: {e}", String::from_utf8_lossy(pw)));
    }
}

#[test]
fn crash_during_init_between_key_and_config_is_not_a_repository_and_init_reruns() {
    let f = Fixture::new();
    let faulty = f.faulty(FaultPlan::default().rule(Rule::new(
        Op::Put,
        Some(ObjectKind::Config),
        1,
        Action::Crash,
    )));
    let r = init(
        faulty,
        f.rt.handle(),
        InitConfig {
            password: PASSWORD.to_vec(),
            kdf: cheap_kdf(),
            compression_level: 3,
            lock: None,
        },
    );
    assert!(r.is_err());
    let probe = holdfast_ops::open::probe(f.plain().as_ref(), f.rt.handle());
    assert!(
        matches!(
            probe.as_ref().map_err(OpsError::class),
            Err(Class::Repository)
        ),
        "{probe:?}"
    );
    f.init();
    let repo = f.open();
    make_tree(&f.src, 5, 0);
    f.backup(&repo).expect("backup");
    f.restores_exactly(&repo, "latest", &f.src);
}

/// A write that fails with `class` surfaces as that class, and the
/// repository stays valid with nothing lost.
fn write_failure_keeps_its_class(kind: ObjectKind, class: ErrorClass) {
    let f = Fixture::new();
    f.init();
    make_tree(&f.src, 6, 2);
    let faulty =
        f.faulty(FaultPlan::default().rule(Rule::new(Op::Put, Some(kind), 1, Action::Fail(class))));
    let repo = f.open_with(faulty);
    let err = f
        .backup(&repo)
        .expect_err("the backup ignored a failed write");
    assert_eq!(
        err.class(),
        Class::Storage(class),
        "{kind:?} put failing with {class:?} became: {err}"
    );
    drop(repo);
    let repo = f.open();
    check_clean(&repo);
    f.backup(&repo).expect("backup after the failure");
    f.restores_exactly(&repo, "latest", &f.src);
}

#[test]
fn no_space_while_uploading_a_pack_is_reported_as_no_space() {
    write_failure_keeps_its_class(ObjectKind::Pack, ErrorClass::NoSpace);
}

#[test]
fn transient_failure_of_an_index_write_is_reported_as_transient() {
    write_failure_keeps_its_class(ObjectKind::Index, ErrorClass::Transient);
}

#[test]
fn locked_snapshot_write_is_reported_as_locked() {
    write_failure_keeps_its_class(ObjectKind::Snapshot, ErrorClass::Locked);
}

#[test]
fn a_failed_pack_read_fails_the_restore_with_its_class() {
    let f = Fixture::new();
    f.init();
    make_tree(&f.src, 7, 1);
    let repo = f.open();
    f.backup(&repo).expect("backup");
    drop(repo);
    // The first pack reads load trees, the later ones file content: fail
    // each in turn (every pack is read once).
    let packs =
        f.rt.block_on(f.plain().list(ObjectKind::Pack))
            .expect("list packs")
            .len();
    assert!(packs >= 2, "a tree pack and a data pack, found {packs}");
    for nth in 1..=packs as u64 {
        for class in [ErrorClass::Transient, ErrorClass::NotFound] {
            let faulty = f.faulty(FaultPlan::default().rule(Rule::new(
                Op::Get,
                Some(ObjectKind::Pack),
                nth,
                Action::Fail(class),
            )));
            let repo = f.open_with(faulty);
            let target = tempfile::tempdir_in(&f.work).expect("tempdir");
            let cfg = FileRestoreConfig {
                snapshot: SnapshotSpec::latest(),
                target: target.path().to_path_buf(),
                includes: Vec::new(),
                cwd: f.work.clone(),
                options: RestoreOptions::default(),
            };
            let r = restore_files(&repo, &cfg, &Progress::default());
            match (class, r) {
                // A missing pack is damage: the restore fails as such, or the
                // files that need it fail, by name.
                (ErrorClass::NotFound, Ok(done)) => assert!(
                    !done.outcome.failed.is_empty(),
                    "read {nth} of a pack failed and everything was restored"
                ),
                (ErrorClass::NotFound, Err(e)) => assert_eq!(e.class(), Class::Integrity, "{e}"),
                // Storage that is down stops the restore with its class.
                (c, r) => {
                    let e = r.expect_err("a transient read failure restored with success");
                    assert_eq!(e.class(), Class::Storage(c), "read {nth}: {e}");
                }
            }
        }
    }
}
