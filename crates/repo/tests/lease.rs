//! The lease life cycle on a real local repository: acquire, refresh (a new
//! object with a later expiry, the old one gone), release, expiry and
//! staleness, `unlock` with and without force, and the acquisition rules
//! between shared and exclusive leases of different processes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use holdfast_repo::config::RepoConfig;
use holdfast_repo::keys::KdfParams;
use holdfast_repo::lease::{self, LeaseMode, LeaseOptions, LeaseRequest};
use holdfast_repo::{RepoError, Repository};
use holdfast_storage::local::LocalBackend;
use holdfast_storage::{Backend, ObjectKind};

const FAST_KDF: KdfParams = KdfParams {
    m_cost: 64,
    t_cost: 1,
    p_cost: 1,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    backend: Arc<dyn Backend>,
    rt: tokio::runtime::Runtime,
    repo: Repository,
}

fn fixture(opts: LeaseOptions) -> Fixture {
    fixture_with(opts, |local| local)
}

/// [`fixture`] on the local backend as `wrap` decorates it.
fn fixture_with(
    opts: LeaseOptions,
    wrap: impl FnOnce(Arc<dyn Backend>) -> Arc<dyn Backend>,
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let backend = wrap(Arc::new(LocalBackend::new(dir.path().join("repo"))));
    let rt = runtime();
    let repo = Repository::init(
        backend.clone(),
        rt.handle().clone(),
        b"pw",
        FAST_KDF,
        RepoConfig::default(),
    )
    .unwrap();
    repo.set_lease_options(opts);
    Fixture {
        _dir: dir,
        backend,
        rt,
        repo,
    }
}

fn short() -> LeaseOptions {
    LeaseOptions {
        shared_duration: Duration::from_millis(1500),
        exclusive_duration: Duration::from_millis(1500),
        exclusive_wait: Duration::from_millis(300),
    }
}

/// A lease held by "another process": a different pid and host in the
/// record, taken through the same protocol.
fn foreign(
    f: &Fixture,
    op: &str,
    mode: LeaseMode,
    opts: &LeaseOptions,
) -> holdfast_repo::Result<lease::Lease> {
    lease::acquire(
        f.backend.clone(),
        f.rt.handle().clone(),
        f.repo.key().clone(),
        f.repo.format_version(),
        &LeaseRequest {
            operation: op.into(),
            mode,
            host: "other-host".into(),
            user: "someone".into(),
            pid: 4_000_000,
        },
        opts,
    )
}

/// What a crashed holder leaves: a lease object nobody refreshes or deletes.
fn plant(f: &Fixture, op: &str, mode: LeaseMode, valid: Duration) -> String {
    let now = Utc::now();
    let record = lease::LeaseRecord {
        version: lease::LEASE_VERSION,
        lease: format!("{:032x}", rand_id()),
        host: "other-host".into(),
        pid: 4_000_001,
        user: "someone".into(),
        operation: op.into(),
        mode,
        start: now,
        refreshed: now,
        expires: now + chrono::Duration::from_std(valid).unwrap(),
    };
    let name = format!("{:032x}", rand_id());
    let bytes = holdfast_repo::object::seal_json_for(
        f.repo.key(),
        f.repo.format_version(),
        holdfast_repo::object::Binding::new(ObjectKind::Lock, &name),
        &record,
    )
    .unwrap();
    f.rt.block_on(f.backend.put(
        ObjectKind::Lock,
        &name,
        bytes::Bytes::from(bytes),
        &Default::default(),
    ))
    .unwrap();
    name
}

fn rand_id() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    (u128::from(h.finish()) << 64) | u128::from(std::process::id())
}

fn lock_names(f: &Fixture) -> Vec<String> {
    let mut v: Vec<String> =
        f.rt.block_on(f.backend.list(ObjectKind::Lock))
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
    v.sort();
    v
}

#[test]
fn acquire_refresh_release() {
    let f = fixture(LeaseOptions {
        shared_duration: Duration::from_secs(60),
        ..short()
    });
    let l = f.repo.writer_lease("backup").unwrap();
    let first = l.record();
    assert_eq!(first.mode, LeaseMode::Shared);
    assert_eq!(first.operation, "backup");
    assert_eq!(first.pid, std::process::id());
    assert_eq!(first.host, holdfast_repo::hostname());
    assert!(first.expires > Utc::now() + chrono::Duration::seconds(50));
    let name1 = l.object_name();
    assert_eq!(lock_names(&f), vec![name1.clone()]);
    let listed = f.repo.leases().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].is_live(Utc::now()));
    assert_eq!(listed[0].record.as_ref().unwrap(), &first);
    assert!(listed[0].modified.is_some(), "the store's time is read");

    // A second writer of this process shares the lease.
    let again = f.repo.writer_lease("backup").unwrap();
    assert_eq!(again.object_name(), name1);

    std::thread::sleep(Duration::from_millis(20));
    l.refresh_now().unwrap();
    let second = l.record();
    let name2 = l.object_name();
    assert_ne!(name1, name2, "a refresh writes a new object");
    assert!(second.expires > first.expires, "with a later expiry");
    assert_eq!(second.lease, first.lease, "of the same lease");
    assert_eq!(second.start, first.start);
    assert_eq!(
        lock_names(&f),
        vec![name2.clone()],
        "and deletes the old one"
    );

    drop(again);
    assert_eq!(lock_names(&f), vec![name2], "held while one clone lives");
    l.check().unwrap();
    drop(l);
    // The delete is left to the lease's thread, so that a writer's next
    // request need not wait for it; the repository settles it.
    f.repo.settle_releases();
    assert!(
        lock_names(&f).is_empty(),
        "release deletes the lease object"
    );
}

#[test]
fn background_refresh_keeps_a_lease_live() {
    let f = fixture(LeaseOptions {
        shared_duration: Duration::from_millis(900),
        ..short()
    });
    let l = f.repo.writer_lease("backup").unwrap();
    let name1 = l.object_name();
    let first = l.record();
    // Three lease durations: without refreshes it would be stale.
    std::thread::sleep(Duration::from_millis(2700));
    l.check().unwrap();
    assert_ne!(
        l.object_name(),
        name1,
        "the refresh thread wrote new objects"
    );
    assert!(l.record().expires > first.expires + chrono::Duration::seconds(1));
    let listed = f.repo.leases().unwrap();
    assert_eq!(listed.len(), 1, "old objects are deleted: {listed:?}");
    assert!(listed[0].is_live(Utc::now()));
    l.release().unwrap();
    assert!(lock_names(&f).is_empty());
}

#[test]
fn expiry_makes_a_lease_stale_and_unlock_removes_only_stale_ones() {
    let f = fixture(short());
    // A crashed holder: its lease object stays and is never refreshed.
    let crashed_name = plant(&f, "backup", LeaseMode::Shared, Duration::from_millis(1500));
    let live = foreign(
        &f,
        "wal-push",
        LeaseMode::Shared,
        &LeaseOptions {
            shared_duration: Duration::from_secs(120),
            ..short()
        },
    )
    .unwrap();
    let now = Utc::now();
    assert!(f.repo.leases().unwrap().iter().all(|e| e.is_live(now)));
    // Nothing is stale yet: unlock removes nothing.
    let u = f.repo.unlock(false).unwrap();
    assert!(u.removed.is_empty());
    assert_eq!(u.kept.len(), 2);

    std::thread::sleep(Duration::from_millis(1700));
    let now = Utc::now();
    let entries = f.repo.leases().unwrap();
    let stale: Vec<_> = entries.iter().filter(|e| !e.is_live(now)).collect();
    assert_eq!(stale.len(), 1, "{entries:?}");
    assert_eq!(stale[0].name, crashed_name);

    let u = f.repo.unlock(false).unwrap();
    assert_eq!(u.removed.len(), 1);
    assert_eq!(u.removed[0].name, crashed_name);
    assert_eq!(u.kept.len(), 1);
    assert_eq!(lock_names(&f), vec![live.object_name()]);

    // Force removes live ones too; the holder finds out at its next check.
    let u = f.repo.unlock(true).unwrap();
    assert_eq!(u.removed.len(), 1);
    assert!(lock_names(&f).is_empty());
    drop(live);
}

#[test]
fn a_lease_that_could_not_be_refreshed_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(&root));
    let rt = runtime();
    let repo = Repository::init(
        backend,
        rt.handle().clone(),
        b"pw",
        FAST_KDF,
        RepoConfig::default(),
    )
    .unwrap();
    repo.set_lease_options(LeaseOptions {
        shared_duration: Duration::from_millis(600),
        ..short()
    });
    let l = repo.writer_lease("backup").unwrap();
    l.check().unwrap();
    // Storage stops taking lease objects (here: `locks` is no longer a
    // directory), so every refresh fails until the lease expires.
    std::fs::remove_dir_all(root.join("locks")).unwrap();
    std::fs::write(root.join("locks"), b"in the way").unwrap();
    std::thread::sleep(Duration::from_millis(900));
    let err = l.check().unwrap_err();
    assert!(matches!(err, RepoError::LeaseLost { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("backup") && msg.contains("run the backup again"),
        "{msg}"
    );
    // A refresh after the expiry does not revive it (a GC may have run).
    std::fs::remove_file(root.join("locks")).unwrap();
    assert!(l.refresh_now().is_err());
}

#[test]
fn exclusive_is_refused_while_another_process_holds_a_shared_lease() {
    let f = fixture(short());
    let shared = foreign(
        &f,
        "backup",
        LeaseMode::Shared,
        &LeaseOptions {
            shared_duration: Duration::from_secs(60),
            ..short()
        },
    )
    .unwrap();
    let started = Instant::now();
    let err = f.repo.acquire_exclusive("gc").unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "bounded wait");
    let msg = err.to_string();
    assert!(matches!(err, RepoError::RepositoryLocked { .. }), "{msg}");
    assert!(
        msg.contains("backup") && msg.contains("other-host") && msg.contains("4000000"),
        "{msg}"
    );
    assert_eq!(
        lock_names(&f),
        vec![shared.object_name()],
        "the refused acquirer removed its own lease"
    );
    // Once the shared lease is released, exclusive succeeds.
    shared.release().unwrap();
    let ex = f.repo.acquire_exclusive("gc").unwrap();
    assert_eq!(ex.record().mode, LeaseMode::Exclusive);
    // And a second exclusive is refused while it is held.
    let err = foreign(&f, "gc", LeaseMode::Exclusive, &short()).unwrap_err();
    assert!(err.to_string().contains("gc (exclusive)"), "{err}");
}

#[test]
fn exclusive_ignores_stale_leases() {
    let f = fixture(short());
    plant(&f, "backup", LeaseMode::Shared, Duration::from_millis(1500));
    std::thread::sleep(Duration::from_millis(1700));
    let ex = f.repo.acquire_exclusive("gc").unwrap();
    ex.release().unwrap();
}

#[test]
fn shared_proceeds_beside_another_shared() {
    let f = fixture(short());
    let other = foreign(
        &f,
        "backup-postgres",
        LeaseMode::Shared,
        &LeaseOptions {
            shared_duration: Duration::from_secs(60),
            ..short()
        },
    )
    .unwrap();
    let started = Instant::now();
    let mine = f.repo.writer_lease("backup").unwrap();
    assert!(started.elapsed() < Duration::from_secs(1), "no waiting");
    assert_eq!(f.repo.leases().unwrap().len(), 2);
    drop(mine);
    drop(other);
}

#[test]
fn shared_waits_for_a_short_exclusive_phase_then_proceeds() {
    let f = fixture(short());
    let ex = foreign(&f, "gc", LeaseMode::Exclusive, &short()).unwrap();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        ex.release().unwrap();
    });
    let started = Instant::now();
    let mine = f.repo.writer_lease("backup").unwrap();
    let waited = started.elapsed();
    releaser.join().unwrap();
    assert!(
        waited >= Duration::from_millis(400),
        "waited for the exclusive phase: {waited:?}"
    );
    assert!(waited < Duration::from_secs(3), "not longer: {waited:?}");
    mine.check().unwrap();
}

#[test]
fn shared_waits_at_most_the_remaining_time_of_an_exclusive_lease() {
    let f = fixture(short());
    // An exclusive holder that crashed: never refreshed, never released.
    plant(&f, "gc", LeaseMode::Exclusive, Duration::from_millis(1500));
    let started = Instant::now();
    let mine = f.repo.writer_lease("backup").unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1000), "{waited:?}");
    assert!(waited < Duration::from_secs(4), "{waited:?}");
    mine.check().unwrap();

    // A stuck exclusive holder that keeps refreshing: the shared acquirer
    // gives up after the first lease's expiry, with a clear error.
    let g = fixture(short());
    let stuck = foreign(&g, "gc", LeaseMode::Exclusive, &short()).unwrap();
    let started = Instant::now();
    let err = g.repo.writer_lease("backup").unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(4));
    let msg = err.to_string();
    assert!(msg.contains("exclusive") && msg.contains("gc"), "{msg}");
    drop(stuck);
}

#[test]
fn unreadable_lock_objects_are_reported_not_fatal() {
    let f = fixture(short());
    f.rt.block_on(f.backend.put(
        ObjectKind::Lock,
        "0123abcd",
        bytes::Bytes::from_static(b"not a lease"),
        &Default::default(),
    ))
    .unwrap();
    let entries = f.repo.leases().unwrap();
    assert_eq!(entries.len(), 1);
    assert!(entries[0].record.is_err());
    assert!(entries[0].describe().contains("locks/0123abcd"));
    // Young: it counts as live (it may be a newer holdfast's lease), so
    // unlock keeps it and only --force removes it.
    assert!(entries[0].is_live(Utc::now()));
    assert!(f.repo.unlock(false).unwrap().removed.is_empty());
    let shared = f.repo.writer_lease("backup").unwrap();
    drop(shared);
    assert_eq!(f.repo.unlock(true).unwrap().removed.len(), 1);
}

#[test]
fn a_lease_removed_by_force_is_lost_to_its_holder() {
    let f = fixture(LeaseOptions {
        shared_duration: Duration::from_secs(60),
        ..short()
    });
    let l = f.repo.writer_lease("backup").unwrap();
    let u = f.repo.unlock(true).unwrap();
    assert_eq!(u.removed.len(), 1);
    // The next refresh notices and does not quietly re-create the lease.
    let err = l.refresh_now().unwrap_err();
    assert!(err.to_string().contains("removed"), "{err}");
    assert!(lock_names(&f).is_empty(), "no lease was re-created");
    // A later writer of this process takes a new lease.
    drop(l);
    let again = f.repo.writer_lease("backup").unwrap();
    again.check().unwrap();
    assert_eq!(lock_names(&f).len(), 1);
}

#[test]
fn confirm_sees_a_removal_before_any_refresh() {
    let f = fixture(LeaseOptions {
        shared_duration: Duration::from_secs(60),
        ..short()
    });
    let l = f.repo.writer_lease("backup").unwrap();
    l.confirm().unwrap();
    f.repo.unlock(true).unwrap();
    l.check().unwrap(); // no refresh yet: the record alone cannot tell
    let err = l.confirm().unwrap_err();
    assert!(matches!(err, RepoError::LeaseLost { .. }), "{err}");
    l.check().unwrap_err();
}

/// Writers of one process share one lease, also when they start at the
/// same moment (a daemon's jobs; a backup's lease thread beside another
/// writer): one lock object, not one each.
#[test]
fn writers_starting_together_share_one_lease() {
    for _ in 0..5 {
        let f = fixture(short());
        let repo = &f.repo;
        let leases: Vec<lease::Lease> = std::thread::scope(|s| {
            let taking: Vec<_> = (0..4)
                .map(|_| s.spawn(|| repo.writer_lease("backup").unwrap()))
                .collect();
            taking.into_iter().map(|t| t.join().unwrap()).collect()
        });
        assert_eq!(lock_names(&f).len(), 1, "{:?}", lock_names(&f));
        drop(leases);
    }
}

/// A writer that had decided everything (its walk was over) by the time
/// its lease is held gets the lease's confirmation started beside the
/// sweep check, and that confirmation judges the lease as `confirm` does:
/// a lease object gone when it was asked about is a lost lease, which the
/// writer must not commit under. A writer still deciding gets none (it
/// confirms once it is done).
#[test]
fn a_writer_done_deciding_gets_its_lease_confirmed_beside_the_check() {
    use holdfast_repo::writer::UploadGate;
    use holdfast_storage::fault::{Action, FaultPlan, FaultyBackend, Op, Rule};
    use holdfast_storage::ErrorClass;
    use std::sync::atomic::AtomicBool;

    // The second `head` of a lock object answers "not there", as after an
    // `unlock --force` that came before it.
    let plan = FaultPlan::default().rule(Rule::new(
        Op::Head,
        Some(ObjectKind::Lock),
        2,
        Action::Fail(ErrorClass::NotFound),
    ));
    let mut faulty = None;
    let opts = LeaseOptions {
        shared_duration: Duration::from_secs(60),
        ..short()
    };
    let f = fixture_with(opts, |local| {
        let b = Arc::new(FaultyBackend::new(local, plan));
        faulty = Some(b.clone());
        b
    });
    let (faulty, repo) = (faulty.expect("wrapped"), &f.repo);

    let gate = UploadGate::new();
    let still_walking = repo
        .writer_lease_validating("backup", None, &gate, &AtomicBool::new(false))
        .unwrap();
    assert!(still_walking.check.holds(false));
    assert!(
        still_walking.confirmation.is_none(),
        "no head before the walk is over"
    );
    assert_eq!(faulty.count(Op::Head, ObjectKind::Lock), 0);
    drop(still_walking);

    let done = repo
        .writer_lease_validating("backup", None, &gate, &AtomicBool::new(true))
        .unwrap();
    let confirmation = done.confirmation.expect("started with the check");
    confirmation.finish().unwrap();
    assert_eq!(faulty.count(Op::Head, ObjectKind::Lock), 1);

    // The same lease (writers of one process share it), confirmed again
    // by a writer done deciding: this time its object is "gone".
    let again = repo
        .writer_lease_validating("backup", None, &gate, &AtomicBool::new(true))
        .unwrap();
    let err = again
        .confirmation
        .expect("started with the check")
        .finish()
        .unwrap_err();
    assert!(matches!(err, RepoError::LeaseLost { .. }), "{err}");
    assert!(again.lease.check().is_err(), "the lease now counts as lost");
}
