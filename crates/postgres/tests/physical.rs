//! Physical base backups, WAL archiving and point-in-time recovery against
//! real PostgreSQL 15 clusters.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Cluster, TestRepo};
use holdfast_postgres::{
    backup_physical, choose_base_backup, recovery_points, restore_physical, snapshot_tablespaces,
    wal, wal_fetch, wal_push, PgError, PhysicalBackupOptions, PhysicalRestoreOptions, PushOutcome,
    RecoveryTarget,
};

/// Wait until every segment up to the current one has been archived.
fn switch_and_wait_archived(pg: &Cluster) {
    let seg = pg.psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = pg.psql(
            "postgres",
            "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
        );
        if !last.is_empty() && last.as_str() >= seg.as_str() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "segment {seg} not archived (last {last}); log:\n{}",
            pg.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn restored_cluster(tr: &TestRepo, snap_id: holdfast_repo::Id, target: RecoveryTarget) -> Cluster {
    let repo = tr.reopen();
    let snaps = repo.snapshots().unwrap();
    let snap = snaps.iter().find(|s| s.id == snap_id).unwrap();
    let root = common::shared_tempdir();
    let datadir = root.path().join("restored");
    let mut o = PhysicalRestoreOptions::new(target);
    o.restore_command = Some(tr.restore_command());
    restore_physical(&repo, snap, &datadir, &o).expect("restore");
    let mut c = Cluster::on_datadir(root, datadir);
    c.start();
    c.wait_promoted(Duration::from_secs(120));
    c
}

#[test]
fn pitr_to_a_time_between_two_commits_and_to_latest() {
    let tr = TestRepo::new();
    let pg = Cluster::new(&tr.archive_conf());
    pg.psql("postgres", "CREATE DATABASE app");
    pg.psql(
        "app",
        "CREATE TABLE marker (tag text, at timestamptz DEFAULT clock_timestamp()); \
         CREATE TABLE filler AS SELECT g, md5(g::text) AS h FROM generate_series(1, 200000) g;",
    );
    tr.repo.load_index().unwrap();
    let dsn = pg.dsn_parsed("postgres");
    let opts = PhysicalBackupOptions {
        pgdata: Some(pg.datadir.clone()),
        ..PhysicalBackupOptions::default()
    };
    let base = backup_physical(&tr.repo, tr.rt.handle(), &dsn, &opts).expect("base backup");
    assert_eq!(base.snapshot.kind, "postgres-physical");
    assert!(base.snapshot.meta["backup_label"]
        .as_str()
        .unwrap()
        .contains("START WAL LOCATION"));

    // A second base backup with nothing changed costs (almost) nothing.
    let again = backup_physical(&tr.repo, tr.rt.handle(), &dsn, &opts).expect("second base backup");
    let first_stored = base.snapshot.summary.stored_added;
    let second_stored = again.snapshot.summary.stored_added;
    assert!(
        second_stored * 10 < first_stored,
        "unchanged cluster: second backup stored {second_stored} of {first_stored}"
    );

    pg.psql("app", "INSERT INTO marker(tag) VALUES ('t1')");
    switch_and_wait_archived(&pg);
    std::thread::sleep(Duration::from_millis(1500));
    let target = chrono::Utc::now();
    std::thread::sleep(Duration::from_millis(1500));
    pg.psql("app", "INSERT INTO marker(tag) VALUES ('t2')");
    switch_and_wait_archived(&pg);
    pg.psql("app", "INSERT INTO marker(tag) VALUES ('t3')");
    switch_and_wait_archived(&pg);

    // Recovery points: the archive reaches past the target.
    let repo = tr.reopen();
    let points = recovery_points(&repo, &repo.snapshots().unwrap()).unwrap();
    assert_eq!(points.len(), 1, "{points:?}");
    let p = &points[0];
    assert!(p.latest_recoverable_time.unwrap() > target, "{p:?}");
    assert!(p.wal_gap_at.is_none());
    assert_eq!(p.newest_backup.as_deref(), Some(again.id.to_hex().as_str()));

    {
        let at = restored_cluster(&tr, again.id, RecoveryTarget::Time(target));
        assert_eq!(
            at.psql(
                "app",
                "SELECT string_agg(tag, ',' ORDER BY tag) FROM marker"
            ),
            "t1"
        );
        assert_eq!(at.psql("app", "SELECT count(*) FROM filler"), "200000");
    }
    {
        let latest = restored_cluster(&tr, base.id, RecoveryTarget::Latest);
        assert_eq!(
            latest.psql(
                "app",
                "SELECT string_agg(tag, ',' ORDER BY tag) FROM marker"
            ),
            "t1,t2,t3"
        );
    }
    {
        let imm = restored_cluster(&tr, base.id, RecoveryTarget::Immediate);
        assert_eq!(imm.psql("app", "SELECT count(*) FROM marker"), "0");
    }

    // A missing segment in the middle: restore refuses, naming it.
    let segs = wal::archived_clusters(&repo).unwrap();
    let cluster = *segs.iter().next().unwrap();
    let mut names: Vec<String> = repo
        .list_wal_manifests()
        .unwrap()
        .into_iter()
        .filter(|n| n.len() > 24 && wal::is_segment_name(&n[n.len() - 24..]))
        .collect();
    names.sort();
    let stop = again.snapshot.meta["stop_wal"]
        .as_str()
        .unwrap()
        .to_string();
    let victim = names
        .iter()
        .find(|n| n.ends_with(&stop))
        .and_then(|_| {
            // the segment right after the backup's stop segment
            let num = wal::segment_number(&stop, wal::DEFAULT_SEGMENT_SIZE).unwrap() + 1;
            let name = wal::segment_name(1, num, wal::DEFAULT_SEGMENT_SIZE);
            names.iter().find(|n| n.ends_with(&name)).cloned()
        })
        .expect("a segment after the backup");
    let victim_file = tr.path.join("wal").join(&victim);
    std::fs::remove_file(&victim_file).expect("remove a segment manifest");
    let victim_name = &victim[victim.len() - 24..];
    let snaps = repo.snapshots().unwrap();
    let snap = snaps.iter().find(|s| s.id == again.id).unwrap();
    let dir = common::shared_tempdir();
    let mut o = PhysicalRestoreOptions::new(RecoveryTarget::Latest);
    o.restore_command = Some(tr.restore_command());
    let err = restore_physical(&repo, snap, &dir.path().join("x"), &o).unwrap_err();
    assert!(matches!(err, PgError::WalGap { .. }), "{err}");
    assert!(err.to_string().contains(victim_name), "{err}");
    let mut o = PhysicalRestoreOptions::new(RecoveryTarget::Time(target));
    o.restore_command = Some(tr.restore_command());
    let err = restore_physical(&repo, snap, &dir.path().join("y"), &o).unwrap_err();
    assert!(err.to_string().contains(victim_name), "{err}");
    let points = recovery_points(&repo, &repo.snapshots().unwrap()).unwrap();
    assert_eq!(
        points[0].wal_gap_at.as_deref(),
        Some(victim_name),
        "{points:?}"
    );
    assert_eq!(points[0].cluster, cluster.to_string());
}

#[test]
fn base_backup_under_write_load_restores_and_starts() {
    let tr = TestRepo::new();
    let pg = Cluster::new(&tr.archive_conf());
    pg.psql("postgres", "CREATE DATABASE load");
    pg.psql(
        "load",
        "CREATE TABLE ev (id bigserial PRIMARY KEY, payload text); \
         INSERT INTO ev(payload) SELECT repeat(md5(g::text), 4) FROM generate_series(1, 100000) g;",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let sock = pg.sockdir.clone();
        let port = pg.port;
        std::thread::spawn(move || {
            let mut batches = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let ok = Command::new(common::PSQL)
                    .args(["-X", "-q", "-U", "postgres", "-d", "load"])
                    .arg("-h")
                    .arg(&sock)
                    .arg("-p")
                    .arg(port.to_string())
                    .args([
                        "-c",
                        "INSERT INTO ev(payload) SELECT repeat(md5(random()::text), 4) FROM generate_series(1, 2000); \
                         UPDATE ev SET payload = 'u' WHERE id % 97 = (random() * 96)::int;",
                    ])
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                assert!(ok, "load query failed");
                batches += 1;
            }
            batches
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    tr.repo.load_index().unwrap();
    let opts = PhysicalBackupOptions {
        pgdata: Some(pg.datadir.clone()),
        ..PhysicalBackupOptions::default()
    };
    let base = backup_physical(&tr.repo, tr.rt.handle(), &pg.dsn_parsed("postgres"), &opts)
        .expect("backup");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let batches = writer.join().expect("load thread");
    assert!(batches > 0);

    let restored = restored_cluster(&tr, base.id, RecoveryTarget::Immediate);
    let n: u64 = restored
        .psql("load", "SELECT count(*) FROM ev")
        .parse()
        .unwrap();
    assert!(n >= 100000, "restored {n} rows");
    // The restored cluster is consistent: amcheck-free sanity via an index scan.
    restored.psql(
        "load",
        "SET enable_seqscan = off; SELECT count(*) FROM ev WHERE id > 0",
    );
}

#[test]
fn wal_push_is_idempotent_conflicts_loudly_and_fetch_of_missing_fails() {
    let tr = TestRepo::new();
    let dir = common::shared_tempdir();
    let seg = dir.path().join("000000010000000000000007");
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&seg, &content).unwrap();
    let cluster = Some(42);
    assert_eq!(
        wal_push(&tr.repo, &seg, cluster).unwrap(),
        PushOutcome::Stored
    );
    // Same content again: success, nothing new.
    let again = tr.reopen();
    assert_eq!(
        wal_push(&again, &seg, cluster).unwrap(),
        PushOutcome::AlreadyArchived
    );
    // Different content under the same name: loud failure.
    let mut other = content.clone();
    other[100] ^= 1;
    std::fs::write(&seg, &other).unwrap();
    let err = wal_push(&again, &seg, cluster).unwrap_err();
    assert!(matches!(err, PgError::WalConflict { .. }), "{err}");
    assert!(err.to_string().contains("000000010000000000000007"));

    // Fetch gives back the original bytes.
    let out = dir.path().join("fetched");
    let n = wal_fetch(&tr.reopen(), "000000010000000000000007", &out, cluster).unwrap();
    assert_eq!(n, content.len() as u64);
    assert_eq!(std::fs::read(&out).unwrap(), content);
    // Another cluster's namespace does not see it.
    let err = wal_fetch(&tr.reopen(), "000000010000000000000007", &out, Some(43)).unwrap_err();
    assert!(matches!(err, PgError::WalNotFound { .. }), "{err}");

    // Missing segment: distinct error, and the tool exits non-zero.
    let err = wal_fetch(&tr.reopen(), "000000010000000000000008", &out, cluster).unwrap_err();
    assert!(matches!(err, PgError::WalNotFound { .. }), "{err}");
    let st = Command::new(tr.wal_tool())
        .envs(tr.env())
        .args(["wal-fetch", "--cluster", "42", "000000010000000000000008"])
        .arg(dir.path().join("nope"))
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(1), "{st:?}");
    assert!(String::from_utf8_lossy(&st.stderr).contains("000000010000000000000008"));
    assert!(!dir.path().join("nope").exists());
    // The tool pushes idempotently too.
    std::fs::write(&seg, &content).unwrap();
    let st = Command::new(tr.wal_tool())
        .envs(tr.env())
        .args(["wal-push", "--cluster", "42"])
        .arg(&seg)
        .status()
        .unwrap();
    assert!(st.success());
    // Bad names are refused before anything is read.
    let err = wal_fetch(&tr.reopen(), "../../etc/passwd", &out, cluster).unwrap_err();
    assert!(matches!(err, PgError::Invalid(_)), "{err}");
}

/// Restore `snap_id` into a new data directory with these tablespace
/// directories; the caller starts it.
fn restore_with_map(
    tr: &TestRepo,
    snap_id: holdfast_repo::Id,
    target: RecoveryTarget,
    map: Vec<(String, std::path::PathBuf)>,
) -> Result<(tempfile::TempDir, std::path::PathBuf), PgError> {
    let repo = tr.reopen();
    let snaps = repo.snapshots().unwrap();
    let snap = snaps.iter().find(|s| s.id == snap_id).unwrap();
    let root = common::shared_tempdir();
    let datadir = root.path().join("restored");
    let mut o = PhysicalRestoreOptions::new(target);
    o.restore_command = Some(tr.restore_command());
    o.tablespace_map = map;
    restore_physical(&repo, snap, &datadir, &o)?;
    Ok((root, datadir))
}

fn started(root: tempfile::TempDir, datadir: std::path::PathBuf) -> Cluster {
    let mut c = Cluster::on_datadir(root, datadir);
    c.start();
    c.wait_promoted(Duration::from_secs(120));
    c
}

fn tick() {
    std::thread::sleep(Duration::from_millis(1100));
}

/// One source cluster with a tablespace outside its data directory and two
/// base backups: tablespaces restore as links to their directories (mapped,
/// refused when not empty, default location), and recovery targets pick the
/// base backup that can reach them, or are refused with the reachable range.
#[test]
fn tablespaces_and_recovery_targets_across_two_base_backups() {
    let tr = TestRepo::new();
    let pg = Cluster::new(&tr.archive_conf());
    let ts_dir = pg.root.path().join("ts-original");
    std::fs::create_dir(&ts_dir).unwrap();
    common::chown_postgres(&ts_dir);
    pg.psql(
        "postgres",
        &format!("CREATE TABLESPACE ts1 LOCATION '{}'", ts_dir.display()),
    );
    pg.psql("postgres", "CREATE DATABASE app");
    pg.psql(
        "app",
        "CREATE TABLE marker (tag text) TABLESPACE ts1; \
         CREATE TABLE big TABLESPACE ts1 AS SELECT g FROM generate_series(1, 50000) g; \
         CREATE INDEX big_g ON big(g) TABLESPACE ts1;",
    );
    let ts_oid = pg.psql(
        "postgres",
        "SELECT oid FROM pg_tablespace WHERE spcname = 'ts1'",
    );
    tr.repo.load_index().unwrap();
    let opts = PhysicalBackupOptions {
        pgdata: Some(pg.datadir.clone()),
        ..PhysicalBackupOptions::default()
    };
    let dsn = pg.dsn_parsed("postgres");
    let before_first = chrono::Utc::now();
    tick();
    let b1 = backup_physical(&tr.repo, tr.rt.handle(), &dsn, &opts).expect("first base backup");
    tick();
    pg.psql("app", "INSERT INTO marker VALUES ('a')");
    switch_and_wait_archived(&pg);
    tick();
    let between = chrono::Utc::now();
    tick();
    let b2 = backup_physical(&tr.repo, tr.rt.handle(), &dsn, &opts).expect("second base backup");
    tick();
    pg.psql("app", "INSERT INTO marker VALUES ('b')");
    switch_and_wait_archived(&pg);
    tick();
    let after = chrono::Utc::now();
    tick();
    pg.psql("app", "INSERT INTO marker VALUES ('c')");
    switch_and_wait_archived(&pg);

    let repo = tr.reopen();
    let snaps = repo.snapshots().unwrap();
    let tablespaces = snapshot_tablespaces(&snaps.last().unwrap().snapshot);
    assert_eq!(tablespaces.len(), 1, "{tablespaces:?}");
    assert_eq!(tablespaces[0].oid, ts_oid);
    assert_eq!(tablespaces[0].name.as_deref(), Some("ts1"));

    // A target before every backup's end: refused, naming the earliest point.
    let err = choose_base_backup(&snaps, RecoveryTarget::Time(before_first)).unwrap_err();
    assert!(
        matches!(err, PgError::TargetBeforeEveryBackup { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&b1.id.short()), "{err}");
    assert!(
        err.to_string().contains("earliest reachable point"),
        "{err}"
    );
    // Latest / end of backup: the newest.
    assert_eq!(
        choose_base_backup(&snaps, RecoveryTarget::Latest)
            .unwrap()
            .id,
        b2.id
    );
    // Between the backups: the first; after the second: the second.
    let chosen = choose_base_backup(&snaps, RecoveryTarget::Time(between)).unwrap();
    assert_eq!(chosen.id, b1.id);
    assert_eq!(
        choose_base_backup(&snaps, RecoveryTarget::Time(after))
            .unwrap()
            .id,
        b2.id
    );
    // An explicit snapshot that ended after the target: refused, nothing written.
    let err = restore_with_map(&tr, b2.id, RecoveryTarget::Time(between), Vec::new()).unwrap_err();
    assert!(matches!(err, PgError::TargetBeforeBackup { .. }), "{err}");
    assert!(err.to_string().contains(&b2.id.short()), "{err}");
    // Past the end of the archive: it ends, which is not a gap.
    let far = after + chrono::Duration::hours(1);
    let err = restore_with_map(&tr, b2.id, RecoveryTarget::Time(far), Vec::new()).unwrap_err();
    assert!(matches!(err, PgError::TargetAfterArchive { .. }), "{err}");
    assert!(
        err.to_string().contains("latest recoverable point"),
        "{err}"
    );
    assert!(!err.to_string().contains("gap"), "{err}");

    // The original tablespace directory is in use: refused before anything
    // is written, naming the tablespace and the way out.
    let err = restore_with_map(&tr, b2.id, RecoveryTarget::Immediate, Vec::new()).unwrap_err();
    assert!(
        matches!(err, PgError::TablespaceTargetNotEmpty { .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("ts1") && msg.contains(&ts_dir.display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("--tablespace-map"), "{msg}");
    // A map entry that names no tablespace.
    let nowhere = common::shared_tempdir();
    let err = restore_with_map(
        &tr,
        b2.id,
        RecoveryTarget::Immediate,
        vec![("nosuch".into(), nowhere.path().join("x"))],
    )
    .unwrap_err();
    assert!(matches!(err, PgError::UnknownTablespace { .. }), "{err}");
    assert!(
        err.to_string().contains("nosuch") && err.to_string().contains("ts1"),
        "{err}"
    );
    // A non-empty mapped directory is refused too.
    let busy = common::shared_tempdir();
    std::fs::write(busy.path().join("file"), b"x").unwrap();
    let err = restore_with_map(
        &tr,
        b2.id,
        RecoveryTarget::Immediate,
        vec![("ts1".into(), busy.path().to_path_buf())],
    )
    .unwrap_err();
    assert!(
        matches!(err, PgError::TablespaceTargetNotEmpty { .. }),
        "{err}"
    );

    // Between the backups, mapped by name: the first backup, data as of the target.
    let mapped = common::shared_tempdir();
    let ts_new = mapped.path().join("ts-by-name");
    let (root, datadir) = restore_with_map(
        &tr,
        chosen.id,
        RecoveryTarget::Time(between),
        vec![("ts1".into(), ts_new.clone())],
    )
    .expect("restore between the backups");
    let link = datadir.join("pg_tblspc").join(&ts_oid);
    assert_eq!(std::fs::read_link(&link).unwrap(), ts_new);
    assert!(!datadir.join("tablespace_map").exists());
    {
        let c = started(root, datadir);
        assert_eq!(
            c.psql(
                "app",
                "SELECT string_agg(tag, ',' ORDER BY tag) FROM marker"
            ),
            "a"
        );
        assert_eq!(c.psql("app", "SELECT count(*) FROM big"), "50000");
        assert_eq!(
            c.psql(
                "app",
                "SET enable_seqscan = off; SELECT count(*) FROM big WHERE g > 49990"
            ),
            "10"
        );
        assert_eq!(
            c.psql(
                "postgres",
                "SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'ts1'"
            ),
            ts_new.display().to_string()
        );
    }

    // After the second backup, mapped by OID.
    let ts_oid_dir = mapped.path().join("ts-by-oid");
    let (root, datadir) = restore_with_map(
        &tr,
        b2.id,
        RecoveryTarget::Time(after),
        vec![(ts_oid.clone(), ts_oid_dir.clone())],
    )
    .expect("restore after the second backup");
    {
        let c = started(root, datadir);
        assert_eq!(
            c.psql(
                "app",
                "SELECT string_agg(tag, ',' ORDER BY tag) FROM marker"
            ),
            "a,b"
        );
        assert_eq!(c.psql("app", "SELECT count(*) FROM big"), "50000");
    }

    // Default location, once it is free: the original directory again.
    let mut pg = pg;
    pg.stop();
    std::fs::rename(&ts_dir, pg.root.path().join("ts-moved-away")).unwrap();
    let (root, datadir) = restore_with_map(&tr, b2.id, RecoveryTarget::Immediate, Vec::new())
        .expect("default location");
    assert_eq!(
        std::fs::read_link(datadir.join("pg_tblspc").join(&ts_oid)).unwrap(),
        ts_dir
    );
    let c = started(root, datadir);
    assert_eq!(
        c.psql(
            "app",
            "SELECT string_agg(tag, ',' ORDER BY tag) FROM marker"
        ),
        "a"
    );
    assert_eq!(c.psql("app", "SELECT count(*) FROM big"), "50000");
}
