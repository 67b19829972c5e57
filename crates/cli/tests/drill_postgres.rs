//! `holdfast drill run` with PostgreSQL targets, against real clusters: a
//! logical drill into a scratch cluster (SQL checks with values and
//! bounds, row counts recorded at backup, amcheck, a command with the
//! connection in its environment), a failing SQL check, a drill into an
//! existing server that creates and drops its own database, and teardown
//! that leaves no process, port or directory after SIGINT mid-restore and
//! after a timeout; logical and point-in-time drills re-apply the SQL
//! erasures recorded after their snapshot, after their checks.

#[path = "../../postgres/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Cluster, PASSWORD};

struct Site {
    dir: tempfile::TempDir,
    pg: Cluster,
}

impl Site {
    /// A cluster with database `ehr` (`rows` patients) backed up
    /// logically as source `ehr`.
    fn new(rows: u64) -> Site {
        let pg = Cluster::new("");
        pg.psql("postgres", "CREATE DATABASE ehr");
        pg.psql(
            "ehr",
            &format!(
                "CREATE TABLE patients (id serial PRIMARY KEY, name text NOT NULL, notes text); \
                 CREATE INDEX ON patients (name); \
                 INSERT INTO patients (name, notes) SELECT 'patient ' || g, repeat(md5(g::text), 4) \
                 FROM generate_series(1, {rows}) g; \
                 CREATE TABLE visits (id serial PRIMARY KEY, patient int REFERENCES patients); \
                 INSERT INTO visits (patient) SELECT 1 + g % 10 FROM generate_series(1, 77) g;"
            ),
        );
        let dir = common::shared_tempdir();
        std::fs::write(dir.path().join("pw"), "drill repo password").unwrap();
        common::shared_repo_dir(&dir.path().join("repo"));
        std::fs::create_dir(dir.path().join("scratch")).unwrap();
        std::fs::set_permissions(
            dir.path().join("scratch"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let s = Site { dir, pg };
        ok(
            &s.run(&["init", "--kdf-memory-mib", "1", "--kdf-iterations", "1"]),
            "init",
        );
        let dsn = s.pg_dsn();
        ok(
            &s.run(&[
                "backup",
                "--source",
                "ehr",
                "--postgres",
                &dsn,
                "--database",
                "ehr",
            ]),
            "backup",
        );
        s
    }

    fn pg_dsn(&self) -> String {
        format!(
            "postgresql://postgres:{PASSWORD}@127.0.0.1:{}/postgres",
            self.pg.port
        )
    }

    fn scratch(&self) -> PathBuf {
        self.dir.path().join("scratch")
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_holdfast"));
        c.env("HOLDFAST_REPOSITORY", self.dir.path().join("repo"))
            .env("HOLDFAST_PASSWORD_FILE", self.dir.path().join("pw"))
            .env("HOLDFAST_PG_BINDIR", common::BIN)
            .env("TMPDIR", self.scratch())
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run holdfast")
    }

    fn playbook(&self, body: &str) -> PathBuf {
        let p = self.dir.path().join("pb.toml");
        std::fs::write(&p, body).unwrap();
        p
    }

    fn drill(&self, pb: &Path) -> (Output, serde_json::Value) {
        let report = self.dir.path().join("report.json");
        let _ = std::fs::remove_file(&report);
        let out = self
            .cmd()
            .args(["drill".as_ref(), "run".as_ref(), pb.as_os_str()])
            .arg("--report-json")
            .arg(&report)
            .output()
            .unwrap();
        let v = std::fs::read(&report)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null);
        (out, v)
    }

    /// Nothing of a scratch cluster is left: no directory, no process
    /// running from one, and the port it used is free.
    fn assert_torn_down(&self, port: Option<u16>) {
        let left: Vec<_> = std::fs::read_dir(self.scratch())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(left.is_empty(), "scratch left behind: {left:?}");
        let ps = Command::new("pgrep")
            .args(["-f", &self.scratch().display().to_string()])
            .output()
            .unwrap();
        assert!(
            ps.stdout.is_empty(),
            "processes left: {}",
            String::from_utf8_lossy(&ps.stdout)
        );
        if let Some(port) = port {
            assert!(
                std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
                "port {port} still accepts connections"
            );
        }
    }
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn port_of(report: &serde_json::Value) -> Option<u16> {
    let loc = report["restores"][0]["location"].as_str()?;
    loc.strip_prefix("127.0.0.1:")?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

fn scratch_playbook(checks: &str, objectives: &str) -> String {
    format!(
        r#"name = "weekly-ehr"
[snapshot]
source = "ehr"
pick = "latest"
[target]
kind = "postgres-scratch"
{checks}
[objectives]
{objectives}
"#
    )
}

const CHECKS: &str = r#"
[[check]]
kind = "sql"
name = "patients present"
query = "SELECT count(*) FROM patients"
min = 100
[[check]]
kind = "sql"
query = "SELECT count(*) FROM visits"
expect = 77
[[check]]
kind = "row-counts"
[[check]]
kind = "amcheck"
[[check]]
kind = "command"
run = ["sh", "-c", "psql -X -A -t -c 'SELECT count(*) FROM visits' && test \"$PGDATABASE\" = ehr && test -n \"$HOLDFAST_DRILL_DSN\""]
"#;

#[test]
fn logical_drill_into_a_scratch_cluster() {
    let s = Site::new(2000);
    let pb = s.playbook(&scratch_playbook(CHECKS, "rto = \"15m\"\nrpo = \"1d\""));
    let (out, r) = s.drill(&pb);
    let text = ok(&out, "drill");
    assert_eq!(r["outcome"], "passed", "{text}");
    let checks = r["restores"][0]["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 5, "{checks:?}");
    assert!(checks.iter().all(|c| c["passed"] == true), "{checks:#?}");
    let rc = checks.iter().find(|c| c["kind"] == "row-counts").unwrap();
    assert!(
        rc["detail"].as_str().unwrap().starts_with("2 table(s)"),
        "{rc}"
    );
    let am = checks.iter().find(|c| c["kind"] == "amcheck").unwrap();
    assert!(am["detail"].as_str().unwrap().contains("index"), "{am}");
    let cmd = checks.iter().find(|c| c["kind"] == "command").unwrap();
    assert!(cmd["detail"].as_str().unwrap().contains("77"), "{cmd}");
    let phases: Vec<&str> = r["restores"][0]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for p in ["open", "server start", "restore", "checks", "teardown"] {
        assert!(phases.contains(&p), "{p} missing from {phases:?}");
    }
    assert!(r["verification_record"].is_string());
    s.assert_torn_down(port_of(&r));
}

#[test]
fn failing_sql_check_exits_20_and_tears_down() {
    let s = Site::new(300);
    let checks = "[[check]]\nkind = \"sql\"\nquery = \"SELECT count(*) FROM patients\"\nmax = 10\n";
    let pb = s.playbook(&scratch_playbook(checks, "rto = \"15m\"\nrpo = \"1d\""));
    let (out, r) = s.drill(&pb);
    assert_eq!(
        out.status.code(),
        Some(20),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let c = &r["restores"][0]["checks"][0];
    assert_eq!(c["passed"], false);
    assert_eq!(c["detail"], "returned 300, expected at most 10");
    s.assert_torn_down(port_of(&r));
    // A query error is a failed check too, with PostgreSQL's message.
    let checks =
        "[[check]]\nkind = \"sql\"\nquery = \"SELECT count(*) FROM no_such_table\"\nexpect = 0\n";
    let pb = s.playbook(&scratch_playbook(checks, "rto = \"15m\"\nrpo = \"1d\""));
    let (out, r) = s.drill(&pb);
    assert_eq!(out.status.code(), Some(20));
    let d = r["restores"][0]["checks"][0]["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(d.contains("no_such_table"), "{d}");
    s.assert_torn_down(port_of(&r));
}

#[test]
fn drill_into_an_existing_server_drops_its_database() {
    let s = Site::new(500);
    let body = format!(
        r#"name = "ehr-on-staging"
[snapshot]
source = "ehr"
[target]
kind = "postgres-server"
dsn = "{}"
[[check]]
kind = "row-counts"
[[check]]
kind = "sql"
query = "SELECT count(*) FROM patients"
expect = 500
[objectives]
rto = "15m"
rpo = "1d"
"#,
        s.pg_dsn()
    );
    let pb = s.playbook(&body);
    let (out, r) = s.drill(&pb);
    ok(&out, "drill");
    assert_eq!(r["outcome"], "passed");
    let dbs = s.pg.psql(
        "postgres",
        "SELECT string_agg(datname, ',') FROM pg_database",
    );
    assert!(
        !dbs.contains("holdfast_drill"),
        "the drill's database was left: {dbs}"
    );
    assert!(dbs.contains("ehr"));
}

/// `erasure add` of an SQL statement for `db`, checked on the site's
/// server; returns the erasure's id.
fn erase(s: &Site, reference: &str, db: &str, sql: &str) -> String {
    erase_on(s, &s.pg_dsn(), reference, db, sql)
}

/// [`erase`], checked on the server at `dsn`.
fn erase_on(s: &Site, dsn: &str, reference: &str, db: &str, sql: &str) -> String {
    let out = ok(
        &s.run(&[
            "--json",
            "erasure",
            "add",
            "--ref",
            reference,
            "--sql",
            sql,
            "--database",
            db,
            "--postgres",
            dsn,
            "--reason",
            "Art. 17",
        ]),
        "erasure add",
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    v["id"].as_str().expect("id").to_string()
}

/// The `erasures` check row of the first restore.
fn erasure_row(r: &serde_json::Value) -> serde_json::Value {
    r["restores"][0]["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["kind"] == "erasures")
        .cloned()
        .unwrap_or_else(|| panic!("no erasures row: {r}"))
}

#[test]
fn logical_drills_reapply_later_sql_erasures_after_their_checks() {
    let s = Site::new(100);
    // Recorded before the snapshot: the snapshot lacks it, so no drill
    // applies it.
    let older_snapshot = || {
        ok(
            &s.run(&[
                "backup",
                "--source",
                "ehr",
                "--postgres",
                &s.pg_dsn(),
                "--database",
                "ehr",
            ]),
            "backup",
        )
    };
    let e0 = erase(&s, "DSAR-0", "ehr", "DELETE FROM patients WHERE id = 99");
    s.pg.psql("ehr", "DELETE FROM patients WHERE id = 99");
    std::thread::sleep(Duration::from_millis(30));
    older_snapshot();
    std::thread::sleep(Duration::from_millis(30));
    let e1 = erase(&s, "DSAR-1", "ehr", "DELETE FROM patients WHERE id > 90");
    s.pg.psql("postgres", "CREATE DATABASE lab");
    s.pg.psql("lab", "CREATE TABLE result (patient int)");
    let lab = erase(&s, "DSAR-2", "lab", "DELETE FROM result WHERE patient = 2");

    // Scratch cluster: the row counts (taken as backed up) pass, then the
    // erasure runs in the restored ehr: 9 rows (91..100 less 99).
    let checks = "[[check]]\nkind = \"row-counts\"\n[[check]]\nkind = \"sql\"\nquery = \"SELECT count(*) FROM patients\"\nexpect = 99\n";
    let pb = s.playbook(&scratch_playbook(checks, "rto = \"15m\"\nrpo = \"1d\""));
    let (out, r) = s.drill(&pb);
    ok(&out, "scratch drill");
    assert_eq!(r["outcome"], "passed", "{r}");
    let row = erasure_row(&r);
    assert_eq!(row["passed"], true, "{row}");
    let detail = row["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("{e1} (DSAR-1, 9 row(s))")),
        "{detail}"
    );
    assert!(
        detail.contains(&lab) && detail.contains("does not hold"),
        "{detail}"
    );
    assert!(!detail.contains(&e0), "{detail}");
    assert_eq!(
        r["restores"][0]["erasures_applied"],
        serde_json::json!([e1])
    );
    s.assert_torn_down(port_of(&r));
    let audit: serde_json::Value =
        serde_json::from_str(&ok(&s.run(&["--json", "audit", "log"]), "audit log")).unwrap();
    let entry = audit
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|e| e["operation"] == "drill")
        .expect("drill entry");
    assert_eq!(entry["args"]["erasures_applied"], serde_json::json!([e1]));

    // An existing server: the drill's own database gets the erasure.
    let body = format!(
        "name = \"ehr-on-staging\"\n[snapshot]\nsource = \"ehr\"\n[target]\nkind = \"postgres-server\"\ndsn = \"{}\"\n[[check]]\nkind = \"row-counts\"\n[objectives]\nrto = \"15m\"\nrpo = \"1d\"\n",
        s.pg_dsn()
    );
    let pb = s.playbook(&body);
    let (out, r) = s.drill(&pb);
    ok(&out, "server drill");
    let row = erasure_row(&r);
    assert_eq!(row["passed"], true, "{row}");
    assert!(
        row["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("{e1} (DSAR-1, 9 row(s))")),
        "{row}"
    );

    // An erasure that cannot run on the restored data (its table came
    // later) fails the drill, as it would fail a real restore, naming it;
    // the scratch cluster is still torn down.
    s.pg.psql("ehr", "CREATE TABLE note (patient int)");
    let e3 = erase(&s, "DSAR-3", "ehr", "DELETE FROM note WHERE patient = 4");
    let pb = s.playbook(&scratch_playbook(checks, "rto = \"15m\"\nrpo = \"1d\""));
    let (out, r) = s.drill(&pb);
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(r["outcome"], "check-failed", "{r}");
    let row = erasure_row(&r);
    assert_eq!(row["passed"], false, "{row}");
    let detail = row["detail"].as_str().unwrap();
    assert!(detail.contains(&e3) && detail.contains("note"), "{detail}");
    s.assert_torn_down(port_of(&r));
}

/// Start a drill, wait until its scratch server runs, give the restore a
/// moment, and send `sig`.
fn interrupt_mid_restore(s: &Site, pb: &Path, sig: i32) -> Output {
    let child = s
        .cmd()
        .args(["drill".as_ref(), "run".as_ref(), pb.as_os_str()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let running = std::fs::read_dir(s.scratch())
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| e.path().join("data/postmaster.pid").exists());
        if running {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the scratch server never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(700));
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
    child.wait_with_output().unwrap()
}

#[test]
fn sigint_mid_restore_leaves_nothing() {
    let s = Site::new(300_000);
    let pb = s.playbook(&scratch_playbook(CHECKS, "rto = \"15m\"\nrpo = \"1d\""));
    let out = interrupt_mid_restore(&s, &pb, libc::SIGINT);
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("interrupted"), "{text}");
    s.assert_torn_down(None);
    let out = interrupt_mid_restore(&s, &pb, libc::SIGTERM);
    assert_eq!(out.status.code(), Some(143));
    s.assert_torn_down(None);
}

/// The playbook's timeout stops the drill wherever it is and tears it
/// down. It strikes mid-restore on most machines; a last check that
/// sleeps makes sure it strikes at the latest there, however fast the
/// restore (a drill that finished within the timeout made this test
/// depend on the machine's speed).
#[test]
fn timeout_mid_restore_leaves_nothing() {
    let s = Site::new(300_000);
    let checks = format!(
        "{CHECKS}[[check]]\nkind = \"command\"\nname = \"outlasts the timeout\"\nrun = [\"sleep\", \"50\"]\n"
    );
    let pb = s.playbook(&scratch_playbook(
        &checks,
        "rto = \"1s\"\nrpo = \"1d\"\ntimeout = \"2s\"",
    ));
    let started = Instant::now();
    let (out, r) = s.drill(&pb);
    // Stopped by the timeout, not by the sleeping check's end.
    assert!(started.elapsed() < Duration::from_secs(40));
    assert_eq!(
        out.status.code(),
        Some(22),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(r["error"].as_str().unwrap().contains("timed out"), "{r}");
    s.assert_torn_down(port_of(&r));
}

/// A cluster archiving its WAL into a repository with a physical base
/// backup of source `ehr-cluster`, then three batches of rows committed a
/// second apart, all archived. Returns the site and the instants between
/// the batches (after the first, after the second).
fn pitr_site() -> (Site, Cluster, String, String) {
    let s = Site::new(10);
    let exe = env!("CARGO_BIN_EXE_holdfast");
    let conf = format!(
        "archive_mode = on\narchive_command = 'HOLDFAST_REPOSITORY={} HOLDFAST_PASSWORD_FILE={} {exe} -q wal-push %p'\n",
        s.dir.path().join("repo").display(),
        s.dir.path().join("pw").display(),
    );
    let pg = Cluster::new(&conf);
    let dsn = format!(
        "postgresql://postgres:{PASSWORD}@127.0.0.1:{}/postgres",
        pg.port
    );
    pg.psql("postgres", "CREATE TABLE w (batch int, g int)");
    ok(
        &s.run(&[
            "backup",
            "--source",
            "ehr-cluster",
            "--postgres-physical",
            &dsn,
            "--pgdata",
            &pg.datadir.display().to_string(),
        ]),
        "physical backup",
    );
    let mut between = Vec::new();
    for batch in 1..=3 {
        std::thread::sleep(Duration::from_millis(1200));
        pg.psql(
            "postgres",
            &format!("INSERT INTO w SELECT {batch}, g FROM generate_series(1, 100) g"),
        );
        std::thread::sleep(Duration::from_millis(600));
        between.push(pg.psql(
            "postgres",
            "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
        ));
    }
    let seg = pg.psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let last = pg.psql(
            "postgres",
            "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
        );
        if !last.is_empty() && last.as_str() >= seg.as_str() {
            break;
        }
        assert!(Instant::now() < deadline, "{seg} not archived");
        std::thread::sleep(Duration::from_millis(100));
    }
    (s, pg, between[0].clone(), between[1].clone())
}

fn pitr_playbook(point: &str, expect_rows: Option<u64>, rpo: &str) -> String {
    let rows = expect_rows
        .map(|n| {
            format!("[[check]]\nkind = \"sql\"\nquery = \"SELECT count(*) FROM w\"\nexpect = {n}\n")
        })
        .unwrap_or_default();
    format!(
        r#"name = "weekly-ehr-pitr"
[snapshot]
source = "ehr-cluster"
point_in_time = "{point}"
[target]
kind = "postgres-scratch"
[[check]]
kind = "pitr"
{rows}[[check]]
kind = "amcheck"
[objectives]
rto = "15m"
rpo = "{rpo}"
"#
    )
}

#[test]
fn pitr_drill_lands_on_the_requested_time() {
    let (s, pitr_pg, after_first, after_second) = pitr_site();
    // A fixed point between the first and second batch: exactly the first.
    let pb = s.playbook(&pitr_playbook(&after_first, Some(100), "5s"));
    let (out, r) = s.drill(&pb);
    let text = ok(&out, "fixed-point drill");
    let rs = &r["restores"][0];
    assert_eq!(r["outcome"], "passed", "{text}");
    let requested = rs["requested_point"].as_str().unwrap();
    let restored = rs["restored_point"].as_str().unwrap();
    let req = chrono::DateTime::parse_from_rfc3339(requested).unwrap();
    let got = chrono::DateTime::parse_from_rfc3339(restored).unwrap();
    assert!(got <= req, "replayed past the target: {got} > {req}");
    assert!(
        (req - got).num_milliseconds() < 1500,
        "{got} is far from {req}"
    );
    let phases: Vec<&str> = rs["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for p in [
        "restore",
        "server start",
        "wal replay",
        "checks",
        "teardown",
    ] {
        assert!(phases.contains(&p), "{p} missing from {phases:?}");
    }
    s.assert_torn_down(port_of(&r));
    // Between the second and third: two batches.
    let pb = s.playbook(&pitr_playbook(&after_second, Some(200), "5s"));
    let (out, r) = s.drill(&pb);
    ok(&out, "second fixed-point drill");
    assert_eq!(r["outcome"], "passed");
    // Latest: everything. An erasure recorded after the base backup runs
    // in the recovered cluster after the checks (which see the 300 rows
    // as backed up), like `erasure apply` after a real physical restore.
    let pg_dsn = format!(
        "postgresql://postgres:{PASSWORD}@127.0.0.1:{}/postgres",
        pitr_pg.port
    );
    let erased = erase_on(
        &s,
        &pg_dsn,
        "DSAR-9",
        "postgres",
        "DELETE FROM w WHERE batch = 3",
    );
    let pb = s.playbook(&pitr_playbook("latest", Some(300), "1h"));
    let (out, r) = s.drill(&pb);
    ok(&out, "latest drill");
    assert_eq!(r["outcome"], "passed");
    let row = erasure_row(&r);
    assert_eq!(row["passed"], true, "{row}");
    assert!(
        row["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("{erased} (DSAR-9, 100 row(s))")),
        "{row}"
    );
    assert_eq!(
        r["restores"][0]["erasures_applied"],
        serde_json::json!([erased])
    );
    // Random within the recoverable range, seeded: recorded, and in range.
    let pb = s.playbook(&pitr_playbook("random", None, "1h").replace(
        "point_in_time = \"random\"",
        "point_in_time = \"random\"\npoint_seed = 5",
    ));
    let (out, r) = s.drill(&pb);
    ok(&out, "random-point drill");
    let rs = &r["restores"][0];
    assert!(rs["pick"].as_str().unwrap().contains("seed 5"), "{rs}");
    let req =
        chrono::DateTime::parse_from_rfc3339(rs["requested_point"].as_str().unwrap()).unwrap();
    let snap = chrono::DateTime::parse_from_rfc3339(rs["snapshot_time"].as_str().unwrap()).unwrap();
    assert!(
        req >= snap,
        "a random point before the backup: {req} < {snap}"
    );
    s.assert_torn_down(port_of(&r));
}
