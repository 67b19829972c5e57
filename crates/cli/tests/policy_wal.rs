//! WAL retention on a real physical backup history: a PostgreSQL 15
//! cluster archiving into the repository with `wal-push`, base backups
//! between bursts of WAL, a point-in-time recovery that switches to
//! timeline 2 and keeps archiving into the same repository. `policy plan`
//! lists the WAL decisions, `policy apply --yes` purges exactly the WAL
//! older than the oldest kept base backup's start, and recovery from every
//! kept base backup through the kept WAL still reaches the end.

#[path = "../../postgres/tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Cluster, PASSWORD};

struct Cli {
    dir: tempfile::TempDir,
}

impl Cli {
    fn new() -> Cli {
        let dir = common::shared_tempdir();
        std::fs::write(dir.path().join("pw"), "cli repo password").unwrap();
        common::shared_repo_dir(&dir.path().join("repo"));
        let c = Cli { dir };
        ok(
            &c.run(&["init", "--kdf-memory-mib", "1", "--kdf-iterations", "1"]),
            "init",
        );
        c
    }

    fn repo(&self) -> std::path::PathBuf {
        self.dir.path().join("repo")
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_holdfast"))
            .env("HOLDFAST_REPOSITORY", self.repo())
            .env("HOLDFAST_PASSWORD_FILE", self.dir.path().join("pw"))
            .env("HOLDFAST_PG_BINDIR", common::BIN)
            .args(args)
            .output()
            .expect("run holdfast")
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = ok(&self.run(&a), &a.join(" "));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// The WAL file names archived (manifests in `wal/`), by cluster.
    fn archived(&self) -> BTreeSet<String> {
        std::fs::read_dir(self.repo().join("wal"))
            .unwrap()
            .map(|e| {
                let n = e.unwrap().file_name().to_string_lossy().into_owned();
                n.split_once('-').unwrap().1.to_string()
            })
            .collect()
    }
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Base {
    id: String,
    source: String,
    start_wal: String,
}

fn base_backup(cli: &Cli, pg: &Cluster) -> Base {
    let dsn = format!(
        "postgresql://postgres:{PASSWORD}@127.0.0.1:{}/postgres",
        pg.port
    );
    let v = cli.json(&[
        "backup",
        "--postgres-physical",
        &dsn,
        "--pgdata",
        &pg.datadir.display().to_string(),
    ]);
    Base {
        id: v["snapshot"].as_str().unwrap().to_string(),
        source: v["source"].as_str().unwrap().to_string(),
        start_wal: v["meta"]["start_wal"].as_str().unwrap().to_string(),
    }
}

/// Some rows and a WAL switch, so that each burst fills its own segment.
fn burst(pg: &Cluster, i: u32) {
    pg.psql(
        "postgres",
        &format!(
            "INSERT INTO w SELECT g, md5(g::text) FROM generate_series({}, {}) g",
            i * 1000 + 1,
            (i + 1) * 1000
        ),
    );
    pg.psql("postgres", "SELECT pg_switch_wal()");
}

/// Switch WAL and wait until the archiver has pushed it.
fn archive_all(pg: &Cluster) {
    let seg = pg.psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let last = pg.psql(
            "postgres",
            "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
        );
        if !last.is_empty() && last.as_str() >= seg.as_str() {
            return;
        }
        assert!(Instant::now() < deadline, "{seg} not archived");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Log and segment of a WAL file name (its first 24 characters), the
/// position retention compares across timelines.
fn position(name: &str) -> Option<(u32, u32)> {
    if name.ends_with(".history") {
        return None;
    }
    Some((
        u32::from_str_radix(&name[8..16], 16).unwrap(),
        u32::from_str_radix(&name[16..24], 16).unwrap(),
    ))
}

fn policy_file(cli: &Cli, source: &str, last: u32) -> std::path::PathBuf {
    let p = cli.dir.path().join(format!("pitr-{last}.toml"));
    std::fs::write(
        &p,
        format!(
            "[[policy]]\nname = \"pitr\"\nsource = \"{source}\"\nkind = \"postgres-physical\"\ntimezone = \"UTC\"\nkeep = {{ last = {last} }}\n"
        ),
    )
    .unwrap();
    p
}

fn names_where(v: &serde_json::Value, list: &str, key: &str, value: &str) -> BTreeSet<String> {
    v[list]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d[key] == value)
        .map(|d| {
            d.get("name")
                .or_else(|| d.get("snapshot"))
                .and_then(|n| n.as_str())
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Plan, then apply; returns the WAL names purged. Asserts that apply
/// purged exactly what the plan said, for snapshots and WAL.
fn plan_and_apply(cli: &Cli, policy: &Path) -> (serde_json::Value, BTreeSet<String>) {
    let policy = policy.display().to_string();
    let plan = serde_json::json!({
        "snapshots": cli.json(&["policy", "plan", "--policy", &policy]),
        "wal": cli.json(&["policy", "plan", "--policy", &policy, "--wal"]),
    });
    let wal_purge = names_where(&plan, "wal", "action", "purge");
    let snap_purge = names_where(&plan, "snapshots", "action", "purge");
    let before = cli.archived();
    assert_eq!(
        plan["wal"].as_array().unwrap().len(),
        before.len(),
        "every archived file is decided: {plan}"
    );
    let text = ok(
        &cli.run(&["policy", "plan", "--policy", &policy]),
        "policy plan",
    );
    assert!(
        text.contains("WAL of cluster") && text.contains(": purge "),
        "{text}"
    );
    let dry = cli.json(&["policy", "apply", "--policy", &policy]);
    assert_eq!(
        names_where(&dry, "wal", "outcome", "would-purge"),
        wal_purge
    );
    assert_eq!(cli.archived(), before, "the dry run deleted WAL");
    let done = cli.json(&["policy", "apply", "--policy", &policy, "--yes"]);
    assert_eq!(names_where(&done, "wal", "outcome", "purged"), wal_purge);
    assert_eq!(
        names_where(&done, "snapshots", "outcome", "purged"),
        snap_purge
    );
    let after = cli.archived();
    assert_eq!(
        after,
        before
            .difference(&wal_purge)
            .cloned()
            .collect::<BTreeSet<_>>()
    );
    ok(&cli.run(&["check"]), "check after apply");
    (plan, wal_purge)
}

/// Restore `snapshot` and recover to the end of the archive; returns the
/// running server.
fn recover(cli: &Cli, snapshot: &str) -> Cluster {
    let dir = common::shared_tempdir();
    let target = dir.path().join("restored");
    ok(
        &cli.run(&[
            "restore",
            snapshot,
            "--to-datadir",
            &target.display().to_string(),
            "--until-latest",
            // The recovered server goes on archiving into this repository
            // (on a new timeline), as after a real PITR of the primary.
            "--keep-archiving",
        ]),
        "restore --until-latest",
    );
    let mut restored = Cluster::on_datadir(dir, target);
    restored.start();
    restored.wait_promoted(Duration::from_secs(180));
    restored
}

#[test]
fn wal_retention_keeps_what_kept_base_backups_need_across_timelines() {
    let cli = Cli::new();
    let exe = env!("CARGO_BIN_EXE_holdfast");
    let conf = format!(
        "archive_mode = on\narchive_command = 'HOLDFAST_REPOSITORY={} HOLDFAST_PASSWORD_FILE={} {exe} -q wal-push %p'\n",
        cli.repo().display(),
        cli.dir.path().join("pw").display(),
    );
    let mut pg = Cluster::new(&conf);
    pg.psql("postgres", "CREATE TABLE w (g int, pad text)");
    let b1 = base_backup(&cli, &pg);
    burst(&pg, 1);
    burst(&pg, 2);
    let b2 = base_backup(&cli, &pg);
    burst(&pg, 3);
    burst(&pg, 4);
    let b3 = base_backup(&cli, &pg);
    burst(&pg, 5);
    archive_all(&pg);
    let expected = pg.psql("postgres", "SELECT count(*), sum(g) FROM w");
    pg.stop();

    // Keep the last two base backups: the first goes, and with it the WAL
    // before the second's start (the first's own label file included).
    let policy = policy_file(&cli, &b1.source, 2);
    let (plan, purged) = plan_and_apply(&cli, &policy);
    assert_eq!(
        names_where(&plan, "snapshots", "action", "purge"),
        BTreeSet::from([b1.id.clone()])
    );
    let cut = position(&b2.start_wal).unwrap();
    assert!(!purged.is_empty(), "{plan}");
    for name in &purged {
        assert!(position(name).is_some_and(|p| p < cut), "{name} purged");
    }
    for name in cli.archived() {
        assert!(
            position(&name).is_none_or(|p| p >= cut),
            "{name} kept, older than {}",
            b2.start_wal
        );
    }
    assert!(
        purged.iter().any(|n| n.starts_with(&b1.start_wal)),
        "{purged:?}"
    );

    // The oldest kept base backup recovers through all the kept WAL to the
    // end; the recovered server is on timeline 2 and archives into the
    // same repository.
    let restored = recover(&cli, &b2.id[..12]);
    assert_eq!(
        restored.psql("postgres", "SELECT count(*), sum(g) FROM w"),
        expected
    );
    assert_eq!(
        restored.psql(
            "postgres",
            "SELECT timeline_id FROM pg_control_checkpoint()"
        ),
        "2"
    );
    burst(&restored, 6);
    let b4 = base_backup(&cli, &restored);
    assert!(b4.start_wal.starts_with("00000002"), "{}", b4.start_wal);
    burst(&restored, 7);
    archive_all(&restored);
    let expected = restored.psql("postgres", "SELECT count(*), sum(g) FROM w");
    drop(restored);
    assert!(cli.archived().contains("00000002.history"));

    // Keep only the newest (on timeline 2): timeline 1's WAL before its
    // start goes, timeline 2's history stays, and it recovers to the end.
    let policy = policy_file(&cli, &b1.source, 1);
    let (plan, purged) = plan_and_apply(&cli, &policy);
    assert_eq!(
        names_where(&plan, "snapshots", "action", "purge"),
        BTreeSet::from([b2.id.clone(), b3.id.clone()])
    );
    let cut = position(&b4.start_wal).unwrap();
    assert!(!purged.is_empty());
    for name in &purged {
        assert!(position(name).is_some_and(|p| p < cut), "{name} purged");
    }
    let kept = cli.archived();
    assert!(kept.contains("00000002.history"), "{kept:?}");
    assert!(
        kept.iter().all(|n| position(n).is_none_or(|p| p >= cut)),
        "{kept:?}"
    );
    let again = recover(&cli, &b4.id[..12]);
    assert_eq!(
        again.psql("postgres", "SELECT count(*), sum(g) FROM w"),
        expected
    );
}
