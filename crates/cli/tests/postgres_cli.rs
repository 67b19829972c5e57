//! The `holdfast` binary against a real PostgreSQL 15 cluster: a logical
//! round trip and the WAL archive commands.

#[path = "../../postgres/tests/common/mod.rs"]
mod common;
mod pgcli;

use std::path::Path;

use common::{Cluster, PASSWORD};
use pgcli::*;

#[test]
fn logical_backup_and_restore_round_trip() {
    let pg = Cluster::new("");
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.psql(
        "shop",
        "CREATE TABLE item (id serial PRIMARY KEY, name text, doc jsonb, pic bytea); \
         INSERT INTO item(name, doc, pic) SELECT 'item ' || g, jsonb_build_object('g', g), decode(md5(g::text), 'hex') \
         FROM generate_series(1, 5000) g; CREATE VIEW cheap AS SELECT * FROM item WHERE id < 10;",
    );
    let before = pg.plain_dump("shop");
    let cli = Cli::new();
    let dsn = format!(
        "postgresql://postgres:{PASSWORD}@127.0.0.1:{}/postgres",
        pg.port
    );
    let out = cli.run(&["--json", "backup", "--postgres", &dsn, "--database", "shop"]);
    let v: serde_json::Value = serde_json::from_str(&ok(&out, "backup")).unwrap();
    assert_eq!(v["kind"], "postgres-logical");
    assert_eq!(
        v["meta"]["databases"]["shop"]["row_counts"]["public.item"],
        5000
    );

    let out = cli.run(&["--json", "snapshots"]);
    let list: serde_json::Value = serde_json::from_str(&ok(&out, "snapshots")).unwrap();
    assert_eq!(list[0]["kind"], "postgres-logical");

    let out = cli.run(&[
        "restore",
        "latest",
        "--to-postgres",
        &dsn,
        "--database",
        "shop2",
        "--jobs",
        "2",
    ]);
    ok(&out, "restore");
    assert_eq!(pg.plain_dump("shop2"), before);

    // Existing non-empty database: refused, with the way out named.
    let out = cli.run(&[
        "restore",
        "latest",
        "--to-postgres",
        &dsn,
        "--database",
        "shop2",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--clean"),
        "{out:?}"
    );
    let out = cli.run(&[
        "restore",
        "latest",
        "--to-postgres",
        &dsn,
        "--database",
        "shop2",
        "--clean",
    ]);
    ok(&out, "restore --clean");
    assert_eq!(pg.plain_dump("shop2"), before);

    // Wrong password for the server: clear error, non-zero exit, no snapshot.
    let bad = format!("postgresql://postgres:nope@127.0.0.1:{}/shop", pg.port);
    let out = cli.run(&["backup", "--postgres", &bad]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(!err.contains(":nope@"), "password leaked: {err}");
}

#[test]
fn wal_push_and_fetch_commands() {
    let cli = Cli::new();
    let dir = common::shared_tempdir();
    let seg = dir.path().join("0000000100000000000000A1");
    let content: Vec<u8> = (0..1_500_000u32).map(|i| (i % 241) as u8).collect();
    std::fs::write(&seg, &content).unwrap();
    let seg_s = seg.display().to_string();
    ok(&cli.run(&["wal-push", "--cluster", "99", &seg_s]), "push");
    ok(
        &cli.run(&["wal-push", "--cluster", "99", &seg_s]),
        "push again (same content)",
    );
    std::fs::write(&seg, b"different").unwrap();
    let out = cli.run(&["wal-push", "--cluster", "99", &seg_s]);
    assert!(!out.status.success(), "conflicting push must fail");
    assert!(String::from_utf8_lossy(&out.stderr).contains("different content"));

    let dest = dir.path().join("RECOVERYXLOG");
    let dest_s = dest.display().to_string();
    ok(
        &cli.run(&[
            "wal-fetch",
            "--cluster",
            "99",
            "0000000100000000000000A1",
            &dest_s,
        ]),
        "fetch",
    );
    assert_eq!(std::fs::read(&dest).unwrap(), content);
    let out = cli.run(&[
        "wal-fetch",
        "--cluster",
        "99",
        "0000000100000000000000A2",
        &dest_s,
    ]);
    assert_eq!(out.status.code(), Some(9), "{out:?}");
    assert!(Path::new(&dest).exists());
}

fn snapshot_id(out: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(out).expect("backup --json output");
    v["snapshot"].as_str().expect("snapshot id").to_string()
}

/// `restore latest --until` picks the base backup that can reach the
/// target (the context of a later refusal names it), a named snapshot that
/// ended after the target and a target before every backup are refused, and
/// `--tablespace-map` puts a tablespace where asked.
#[test]
fn physical_restore_picks_the_base_backup_and_maps_tablespaces() {
    let mut pg = Cluster::new("");
    let ts = pg.root.path().join("ts");
    std::fs::create_dir(&ts).unwrap();
    common::chown_postgres(&ts);
    pg.psql(
        "postgres",
        &format!("CREATE TABLESPACE space LOCATION '{}'", ts.display()),
    );
    pg.psql(
        "postgres",
        "CREATE TABLE t TABLESPACE space AS SELECT g FROM generate_series(1, 1000) g",
    );
    let cli = Cli::new();
    let dsn = format!(
        "postgresql://postgres:{PASSWORD}@127.0.0.1:{}/postgres",
        pg.port
    );
    let pgdata = pg.datadir.display().to_string();
    let backup = || {
        snapshot_id(&ok(
            &cli.run(&[
                "--json",
                "backup",
                "--postgres-physical",
                &dsn,
                "--pgdata",
                &pgdata,
            ]),
            "physical backup",
        ))
    };
    let t0 = chrono::Utc::now().to_rfc3339();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let first = backup();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let between = chrono::Utc::now().to_rfc3339();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = backup();
    let dir = common::shared_tempdir();
    let target = dir.path().join("restored");
    let target_s = target.display().to_string();

    let out = cli.run(&[
        "restore",
        "latest",
        "--to-datadir",
        &target_s,
        "--until",
        &t0,
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("earliest reachable point") && err.contains(&first[..8]),
        "{err}"
    );
    let out = cli.run(&[
        "restore",
        &second[..12],
        "--to-datadir",
        &target_s,
        "--until",
        &between,
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the recovery target"), "{err}");
    // `latest` chooses the first backup; nothing is archived, so the
    // archive check then refuses, naming the snapshot it chose.
    let out = cli.run(&[
        "restore",
        "latest",
        "--to-datadir",
        &target_s,
        "--until",
        &between,
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("restoring snapshot {}", &first[..8])),
        "{err}"
    );
    assert!(
        err.contains("latest recoverable point") && !err.contains("gap"),
        "{err}"
    );
    assert!(!target.exists(), "a refused restore wrote {target_s}");

    let out = cli.run(&[
        "restore",
        "latest",
        "--to-datadir",
        &target_s,
        "--tablespace-map",
        "space",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("OID_OR_NAME=DIR"));
    let moved = dir.path().join("space-moved");
    let map = format!("space={}", moved.display());
    ok(
        &cli.run(&[
            "restore",
            "latest",
            "--to-datadir",
            &target_s,
            "--tablespace-map",
            &map,
        ]),
        "restore with a tablespace map",
    );
    pg.stop();
    let mut restored = Cluster::on_datadir(dir, target);
    restored.start();
    assert_eq!(restored.psql("postgres", "SELECT count(*) FROM t"), "1000");
    assert_eq!(
        restored.psql(
            "postgres",
            "SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'space'"
        ),
        moved.display().to_string()
    );
}

/// Point-in-time recovery through the `restore_command` the CLI writes,
/// which prefetches (HOLDFAST_WAL_PREFETCH=8): PostgreSQL replays a run of
/// archived segments, most of them renamed out of the spool, asks for a
/// history file and a segment that are not archived, and ends on the data
/// of the original.
#[test]
fn recovery_replays_archived_wal_through_the_prefetch_spool() {
    let cli = Cli::new();
    let exe = env!("CARGO_BIN_EXE_holdfast");
    let conf = format!(
        "archive_mode = on\narchive_command = 'HOLDFAST_REPOSITORY={} HOLDFAST_PASSWORD_FILE={} {exe} -q wal-push %p'\n",
        cli.dir.path().join("repo").display(),
        cli.dir.path().join("pw").display(),
    );
    let mut pg = Cluster::new(&conf);
    let dsn = format!(
        "postgresql://postgres:{PASSWORD}@127.0.0.1:{}/postgres",
        pg.port
    );
    let pgdata = pg.datadir.display().to_string();
    pg.psql("postgres", "CREATE TABLE w (g int, pad text)");
    ok(
        &cli.run(&["backup", "--postgres-physical", &dsn, "--pgdata", &pgdata]),
        "physical backup",
    );
    for i in 0..12 {
        pg.psql(
            "postgres",
            &format!(
                "INSERT INTO w SELECT g, repeat(md5(g::text), 6) FROM generate_series({}, {}) g",
                i * 40_000 + 1,
                (i + 1) * 40_000
            ),
        );
    }
    let seg = pg.psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let last = pg.psql(
            "postgres",
            "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
        );
        if !last.is_empty() && last.as_str() >= seg.as_str() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{seg} not archived");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let expected = pg.psql("postgres", "SELECT count(*), sum(length(pad)) FROM w");
    pg.stop();

    let dir = common::shared_tempdir();
    let target = dir.path().join("restored");
    ok(
        &cli.run(&[
            "restore",
            "latest",
            "--to-datadir",
            &target.display().to_string(),
            "--until-latest",
        ]),
        "restore --until-latest",
    );
    let auto = std::fs::read_to_string(target.join("postgresql.auto.conf")).unwrap();
    assert!(auto.contains("HOLDFAST_WAL_PREFETCH"), "{auto}");
    let spool = target.join("pg_wal").join("holdfast-prefetch");
    let mut restored = Cluster::on_datadir(dir, target);
    restored.start();
    restored.wait_promoted(std::time::Duration::from_secs(180));
    assert!(spool.is_dir(), "the spool was used");
    let log = restored.log();
    let replayed = log.matches("restored log file \"0000000").count();
    assert!(
        replayed >= 5,
        "{replayed} segments from the archive:\n{log}"
    );
    assert_eq!(
        restored.psql("postgres", "SELECT count(*), sum(length(pad)) FROM w"),
        expected
    );
}
