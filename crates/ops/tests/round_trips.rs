//! The requests of opening, backing up and restoring, and which of them
//! wait on one another: on a WAN link the chain of round trips an
//! operation waits on one after another (its critical path) is its wall
//! time, not the number of requests. Each request is counted by the fault
//! decorator with an added latency, which also gives its *round* (see
//! `holdfast_storage::fault`); these tests pin both, so that a request
//! added to the path, or two independent ones made to wait on each other,
//! shows as a failure. `docs/benchmarks.md` ("S3 at 25 ms per request")
//! has the same figures measured on S3.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use holdfast_ops::backup::{prepare, FileBackupConfig};
use holdfast_ops::init::{init, InitConfig};
use holdfast_ops::open::{
    open_connected, read_first, Credential, KdfAhead, Prefetch, SessionOptions,
};
use holdfast_ops::restore::{restore_files, FileRestoreConfig, SnapshotSpec};
use holdfast_ops::OpsError;
use holdfast_repo::keys::KdfParams;
use holdfast_repo::{RepoError, Repository};
use holdfast_sources::restore::RestoreOptions;
use holdfast_sources::Progress;
use holdfast_storage::fault::{FaultPlan, FaultyBackend, Seen};
use holdfast_storage::local::LocalBackend;
use holdfast_storage::Backend;
use tokio::runtime::Runtime;

const PASSWORD: &[u8] = b"round trip password";
/// Long enough that requests issued together are all under way before
/// the first returns, on a loaded machine too.
const LATENCY: Duration = Duration::from_millis(40);

struct Fixture {
    _dir: tempfile::TempDir,
    repo_dir: PathBuf,
    src: PathBuf,
    cache: PathBuf,
    work: PathBuf,
    rt: Runtime,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = Fixture {
            repo_dir: dir.path().join("repo"),
            src: dir.path().join("src"),
            cache: dir.path().join("cache"),
            work: dir.path().join("work"),
            _dir: dir,
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime"),
        };
        std::fs::create_dir_all(f.src.join("notes")).expect("mkdir");
        std::fs::create_dir_all(&f.work).expect("mkdir");
        for i in 0..20 {
            std::fs::write(
                f.src.join(format!("notes/n{i}.txt")),
                format!("clinical note {i}\n").repeat(200 + i),
            )
            .expect("write");
        }
        init(
            f.plain(),
            f.rt.handle(),
            InitConfig {
                password: PASSWORD.to_vec(),
                kdf: KdfParams {
                    m_cost: 256,
                    t_cost: 1,
                    p_cost: 1,
                },
                compression_level: 3,
                lock: None,
            },
        )
        .expect("init");
        f
    }

    fn plain(&self) -> Arc<dyn Backend> {
        Arc::new(LocalBackend::new(&self.repo_dir))
    }

    fn counted(&self) -> Arc<FaultyBackend> {
        Arc::new(FaultyBackend::new(self.plain(), FaultPlan::default()).with_latency(LATENCY))
    }

    /// Open as the CLI does: the first reads at once, the probe, the KDF
    /// started from the cache's hint, the open.
    fn open(
        &self,
        backend: Arc<dyn Backend>,
        want: Prefetch,
        password: &[u8],
    ) -> Result<Arc<Repository>, OpsError> {
        let cred = Credential::Password(password.to_vec());
        let kdf = KdfAhead::start(Some(&self.cache), &backend.location(), &cred);
        let connected = read_first(backend.clone(), self.rt.handle(), want, kdf.as_ref());
        connected.probe()?;
        let opts = SessionOptions {
            cache_dir: Some(self.cache.clone()),
            lease_duration: None,
            actor: None,
        };
        Ok(open_connected(connected, self.rt.handle(), &cred, &opts, kdf)?.repo)
    }

    fn backup(&self, repo: &Repository) {
        let mut cfg = FileBackupConfig::new(vec![self.src.clone()]);
        cfg.source = Some("notes".into());
        prepare(repo, &cfg)
            .expect("prepare")
            .run(repo, &Progress::default())
            .expect("backup");
    }

    fn restore(&self, repo: &Arc<Repository>, target: &Path) {
        let cfg = FileRestoreConfig {
            snapshot: SnapshotSpec::latest(),
            target: target.to_path_buf(),
            includes: Vec::new(),
            cwd: self.work.clone(),
            options: RestoreOptions::default(),
        };
        restore_files(repo, &cfg, &Progress::default()).expect("restore");
    }
}

/// Change the password to "new password": a new slot (cheap KDF), the
/// old slot `old` removed.
fn change_password(repo: &Repository, old: &str) {
    let kdf = KdfParams {
        m_cost: 512,
        t_cost: 1,
        p_cost: 1,
    };
    repo.add_key(b"new password", kdf, "new").expect("add");
    repo.remove_key(old, true).expect("remove");
}

/// The requests of each round, as "OP kind" strings, sorted.
fn by_round(seen: &[Seen]) -> BTreeMap<u64, Vec<String>> {
    let mut out: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for s in seen {
        out.entry(s.round)
            .or_default()
            .push(format!("{:?} {:?}", s.op, s.kind));
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

fn round(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// The one round of every open with a warm cache: config, key listing,
/// the key slot that opened last time (named by the cache's KDF hint) and
/// the listings asked for, all at once.
fn expect_open(rounds: &BTreeMap<u64, Vec<String>>, listings: &[&str]) {
    let mut first = vec!["Get Config", "List Key", "Get Key"];
    first.extend_from_slice(listings);
    assert_eq!(rounds.get(&1), Some(&round(&first)), "{rounds:#?}");
}

/// An unchanged backup with a warm cache: six rounds (seven when a tree
/// changed, as an ancestor directory's time does), and no metadata read.
/// The lease is written, then `locks/` is listed, then `index/` (the
/// protocol needs that order) with the parent's `head`, the lease's `head`
/// (the walk is over by then) and the tree pack, if any (uploads go once
/// the lease is held); then the pack's index object and the snapshot, one
/// after the other; last the lease's release and the audit entry, which
/// names the snapshot (one put: the local witness knows the head),
/// together.
#[test]
fn an_unchanged_backup_waits_on_six_round_trips() {
    backup_rounds(|_| {}, None);
}

/// The same with one new directory and no new data: its tree pack goes
/// beside the lease's check, so only its index object adds a round.
#[test]
fn a_backup_of_one_new_tree_waits_on_seven_round_trips() {
    backup_rounds(
        |f| std::fs::create_dir(f.src.join("notes/new")).expect("mkdir"),
        Some(true),
    );
}

/// A backup after a first one (which warms the cache), with `between`
/// done to the source in between, checked round by round; `tree` says
/// whether it must store a tree pack (`None`: whichever it did, as an
/// ancestor directory of the temporary source may have changed).
fn backup_rounds(between: impl FnOnce(&Fixture), tree: Option<bool>) {
    let f = Fixture::new();
    let warm = f
        .open(f.plain(), Prefetch::backup(), PASSWORD)
        .expect("open");
    f.backup(&warm);
    drop(warm);
    between(&f);

    let counted = f.counted();
    let repo = f
        .open(counted.clone(), Prefetch::backup(), PASSWORD)
        .expect("open");
    f.backup(&repo);
    let seen = counted.take_seen();
    let rounds = by_round(&seen);
    expect_open(&rounds, &["List Index", "List Snapshot", "List Lock"]);
    assert_eq!(rounds.get(&2), Some(&round(&["Put Lock"])), "{rounds:#?}");
    assert_eq!(rounds.get(&3), Some(&round(&["List Lock"])), "{rounds:#?}");
    // The sweep check, whether the parent still exists, the lease's
    // confirmation and the tree pack: together.
    let wrote_tree = seen.iter().any(|s| format!("{:?}", s.kind) == "Pack");
    if let Some(want) = tree {
        assert_eq!(wrote_tree, want, "{rounds:#?}");
    }
    let fourth: &[&str] = if wrote_tree {
        &["List Index", "Head Snapshot", "Head Lock", "Put Pack"]
    } else {
        &["List Index", "Head Snapshot", "Head Lock"]
    };
    assert_eq!(rounds.get(&4), Some(&round(fourth)), "{rounds:#?}");
    let rest: Vec<Vec<String>> = if wrote_tree {
        vec![
            round(&["Put Index"]),
            round(&["Put Snapshot"]),
            round(&["Delete Lock", "Put Audit"]),
        ]
    } else {
        vec![
            round(&["Put Snapshot"]),
            round(&["Delete Lock", "Put Audit"]),
        ]
    };
    let got: Vec<Vec<String>> = rounds.range(5..).map(|(_, v)| v.clone()).collect();
    assert_eq!(got, rest, "{rounds:#?}");
    assert_eq!(counted.rounds(), 4 + rest.len() as u64);
    // The lease is gone once the repository is.
    drop(repo);
    let left =
        f.rt.block_on(f.plain().list(holdfast_storage::ObjectKind::Lock));
    assert_eq!(left.expect("list").len(), 0, "a lease was left behind");
}

/// A restore with a warm cache: the open's round (with the erasure
/// register's listing), the audit entry that records the access before
/// any data is read, then the data, all of it at once (a small tree:
/// fewer reads than restore threads), then the entry of its outcome.
#[test]
fn a_restore_waits_on_four_round_trips() {
    let f = Fixture::new();
    let warm = f
        .open(f.plain(), Prefetch::backup(), PASSWORD)
        .expect("open");
    f.backup(&warm);
    drop(warm);

    let counted = f.counted();
    let repo = f
        .open(counted.clone(), Prefetch::restore(), PASSWORD)
        .expect("open");
    let target = f.work.join("restored");
    f.restore(&repo, &target);
    let rounds = by_round(&counted.take_seen());
    // The erasure register (GDPR): which erasures the restore must apply
    // again, listed with the index and the snapshots.
    expect_open(&rounds, &["List Index", "List Snapshot", "List Erasure"]);
    assert_eq!(rounds.get(&2), Some(&round(&["Put Audit"])), "{rounds:#?}");
    let data = rounds.get(&3).cloned().unwrap_or_default();
    assert!(
        !data.is_empty() && data.iter().all(|r| r == "Get Pack"),
        "{rounds:#?}"
    );
    assert_eq!(rounds.get(&4), Some(&round(&["Put Audit"])), "{rounds:#?}");
    assert_eq!(counted.rounds(), 4, "{rounds:#?}");
    for i in [0, 7, 19] {
        let name = format!("notes/n{i}.txt");
        let restored = target
            .join(f.src.strip_prefix("/").expect("absolute"))
            .join(&name);
        assert_eq!(
            std::fs::read(restored).expect("restored"),
            std::fs::read(f.src.join(&name)).expect("source")
        );
    }
}

/// The KDF hint in the cache changes how soon the KDF runs, never what
/// opens: a wrong password is still wrong, a hint left by a replaced slot
/// or a damaged hint file still opens with the right password, and the
/// hint follows the slot that opened.
#[test]
fn a_kdf_hint_never_changes_what_opens() {
    let f = Fixture::new();
    let repo = f
        .open(f.plain(), Prefetch::default(), PASSWORD)
        .expect("open");
    let hints = f.cache.join("kdf-hints");
    let files = || -> Vec<PathBuf> {
        std::fs::read_dir(&hints)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    assert_eq!(files().len(), 1, "the open kept a hint");
    let first_slot = repo.current_key().to_string();
    let hint = std::fs::read_to_string(&files()[0]).expect("hint");
    assert!(
        hint.contains(&first_slot) && !hint.contains("wrapped"),
        "{hint}"
    );

    // A wrong password, with the hint's KDF run ahead: wrong.
    match f.open(f.plain(), Prefetch::default(), b"not the password") {
        Err(OpsError::Repo(RepoError::WrongPassword { .. })) => {}
        other => panic!("expected a wrong password, got {other:?}"),
    }

    // The password changed: the hint names a slot that is gone.
    change_password(&repo, &first_slot);
    drop(repo);
    let repo = f
        .open(f.plain(), Prefetch::default(), b"new password")
        .expect("opens with a stale hint");
    let hint = std::fs::read_to_string(&files()[0]).expect("hint");
    assert!(
        hint.contains(repo.current_key()),
        "the hint follows: {hint}"
    );
    drop(repo);

    // A damaged hint, and one with hostile parameters: ignored.
    for junk in [
        "{not json".to_string(),
        hint.replace("\"m_cost\":512", "\"m_cost\":4294967295"),
    ] {
        std::fs::write(&files()[0], junk).expect("write");
        f.open(f.plain(), Prefetch::default(), b"new password")
            .expect("opens with a damaged hint");
    }
}

/// The key slot read ahead (named by the KDF hint) spares the open its
/// second round trip, and only the listing decides which slots exist: a
/// slot removed from the repository (a password changed) is read ahead as
/// missing and the open goes on with the slots listed; a hint naming a
/// slot that is not listed opens nothing by itself.
#[test]
fn the_slot_read_ahead_follows_the_listing() {
    let f = Fixture::new();
    let repo = f
        .open(f.plain(), Prefetch::default(), PASSWORD)
        .expect("open");
    let old_slot = repo.current_key().to_string();
    drop(repo);

    // Warm: one round trip, the slot read in it.
    let counted = f.counted();
    f.open(counted.clone(), Prefetch::default(), PASSWORD)
        .expect("open");
    let rounds = by_round(&counted.take_seen());
    expect_open(&rounds, &[]);
    assert_eq!(counted.rounds(), 1, "{rounds:#?}");

    // The password changed: the hint still names the old slot.
    let repo = f
        .open(f.plain(), Prefetch::default(), PASSWORD)
        .expect("open");
    change_password(&repo, &old_slot);
    drop(repo);
    match f.open(f.plain(), Prefetch::default(), PASSWORD) {
        Err(OpsError::Repo(RepoError::WrongPassword { .. })) => {}
        other => panic!("the removed slot opened: {other:?}"),
    }
    // The new password opens: its slot is read in a second round, after
    // the listing named it.
    let counted = f.counted();
    f.open(counted.clone(), Prefetch::default(), b"new password")
        .expect("the new password opens");
    let rounds = by_round(&counted.take_seen());
    assert_eq!(rounds.get(&2), Some(&round(&["Get Key"])), "{rounds:#?}");
    // And the hint follows: next time one round again.
    let counted = f.counted();
    f.open(counted.clone(), Prefetch::default(), b"new password")
        .expect("open");
    assert_eq!(counted.rounds(), 1, "{:#?}", by_round(&counted.take_seen()));
}
