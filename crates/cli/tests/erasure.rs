//! The GDPR erasure register through the `holdfast` binary, with real
//! repositories and real PostgreSQL 15 clusters: erasures recorded after a
//! snapshot are applied again by file, logical and physical restores, and
//! the older ones (which the snapshot already lacks) are not; bad
//! statements and patterns are refused at `erasure add`; skipping the
//! register is audited with its reason.

#[path = "../../postgres/tests/common/mod.rs"]
mod common;
mod pgcli;

use std::path::Path;

use common::Cluster;
use pgcli::*;
use serde_json::Value;

impl Cli {
    /// `erasure add`; returns the new erasure's id.
    fn erase(&self, args: &[&str]) -> String {
        let mut all = vec!["erasure", "add"];
        all.extend_from_slice(args);
        let v = self.json(&all, "erasure add");
        v["id"].as_str().expect("id").to_string()
    }

    fn audit(&self) -> Vec<Value> {
        let v = self.json(&["audit", "log"], "audit log");
        v.as_array().expect("entries").clone()
    }
}

/// The ids of `report["erasures"]["applied"]`.
fn applied(report: &Value) -> Vec<String> {
    report["erasures"]["applied"]
        .as_array()
        .expect("applied")
        .iter()
        .map(|a| a["id"].as_str().expect("id").to_string())
        .collect()
}

fn write(p: &Path, text: &str) {
    std::fs::create_dir_all(p.parent().expect("parent")).unwrap();
    std::fs::write(p, text).unwrap();
}

fn pause() {
    // Snapshot and erasure times come from the clock: keep them apart.
    std::thread::sleep(std::time::Duration::from_millis(30));
}

#[test]
fn file_restores_reapply_later_path_erasures_only_and_skipping_is_audited() {
    let cli = Cli::acting_as(Some("dpo@clinic.example"));
    let work = common::shared_tempdir();
    let src = work.path().join("docs");
    let s = src.display().to_string();
    write(&src.join("patients/123/scan.pdf"), "subject 123");
    write(&src.join("patients/123/notes/a.txt"), "subject 123 notes");
    write(&src.join("patients/456/scan.pdf"), "subject 456");
    write(&src.join("patients/789/scan.pdf"), "subject 789");
    write(&src.join("index.txt"), "not personal");

    let first = cli.json(&["backup", &s], "backup 1")["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    pause();
    let e1 = cli.erase(&[
        "--ref",
        "DSAR-2026-041",
        "--path",
        &format!("{s}/patients/123/**"),
        "--reason",
        "Art. 17 request of subject 123",
    ]);
    // The operator erases the live copy too; the next backup lacks it.
    std::fs::remove_dir_all(src.join("patients/123")).unwrap();
    pause();
    let second = cli.json(&["backup", &s], "backup 2")["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    pause();
    let e2 = cli.erase(&[
        "--ref",
        "DSAR-2026-057",
        "--path",
        &format!("{s}/patients/456/*.pdf"),
        "--reason",
        "Art. 17 request of subject 456",
    ]);

    // Bad patterns are refused, and nothing is recorded.
    let out = cli.run(&[
        "erasure",
        "add",
        "--ref",
        "X",
        "--path",
        "patients/1",
        "--reason",
        "r",
    ]);
    assert!(!out.status.success());
    assert!(err(&out).contains("not absolute"), "{}", err(&out));
    let out = cli.run(&[
        "erasure",
        "add",
        "--ref",
        "X",
        "--path",
        &format!("{s}/patients/[12"),
        "--reason",
        "r",
    ]);
    assert!(!out.status.success());
    assert!(
        err(&out).contains("not a valid glob") && err(&out).contains("never closed"),
        "{}",
        err(&out)
    );
    let listed = cli.json(&["erasure", "list"], "erasure list");
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [e1.as_str(), e2.as_str()]);
    assert_eq!(listed[0]["recorded_by"], "dpo@clinic.example");
    assert_eq!(listed[0]["reference"], "DSAR-2026-041");

    // The first snapshot predates both erasures: both are applied.
    let t1 = work.path().join("t1");
    let r = cli.json(
        &["restore", &first, "--target", &t1.display().to_string()],
        "restore 1",
    );
    assert_eq!(applied(&r), [e1.clone(), e2.clone()]);
    let under = |t: &Path, p: &str| t.join(src.strip_prefix("/").unwrap()).join(p);
    assert!(!under(&t1, "patients/123").exists());
    assert!(!under(&t1, "patients/456/scan.pdf").exists());
    assert!(under(&t1, "patients/456").is_dir(), "only *.pdf was erased");
    assert!(under(&t1, "patients/789/scan.pdf").exists());
    assert!(under(&t1, "index.txt").exists());
    // 123 itself, its scan, notes/ and notes/a.txt; 456's scan.
    assert_eq!(r["erasures"]["applied"][0]["count"], 4);
    assert_eq!(r["erasures"]["applied"][1]["count"], 1);

    // The second snapshot was taken after the first erasure: only the
    // second applies.
    let t2 = work.path().join("t2");
    let r = cli.json(
        &["restore", &second, "--target", &t2.display().to_string()],
        "restore 2",
    );
    assert_eq!(applied(&r), [e2.as_str()]);
    assert!(!under(&t2, "patients/456/scan.pdf").exists());
    assert!(under(&t2, "patients/789/scan.pdf").exists());

    // The summary names what was applied; the audit entry lists it.
    let t3 = work.path().join("t3");
    let out = ok(
        &cli.run(&["restore", &first, "--target", &t3.display().to_string()]),
        "restore 3",
    );
    assert!(
        out.contains(&format!("erasure {e1} (DSAR-2026-041) re-applied")),
        "{out}"
    );
    let audit = cli.audit();
    let adds: Vec<&Value> = audit
        .iter()
        .filter(|e| e["operation"] == "erasure add")
        .collect();
    assert_eq!(adds.len(), 4, "two recorded, two refused");
    assert_eq!(adds.iter().filter(|e| e["outcome"] == "success").count(), 2);
    let last_restore = audit
        .iter()
        .rev()
        .find(|e| e["operation"] == "restore" && e["outcome"] == "success")
        .expect("restore entry");
    assert_eq!(
        last_restore["args"]["erasures_applied"],
        serde_json::json!([e1.clone(), e2.clone()])
    );

    // Skipping needs a reason, and is audited with it.
    let t4 = work.path().join("t4");
    let t4s = t4.display().to_string();
    let out = cli.run(&["restore", &first, "--target", &t4s, "--skip-erasures"]);
    assert!(!out.status.success());
    let out = cli.run(&[
        "restore",
        &first,
        "--target",
        &t4s,
        "--skip-erasures",
        "--reason",
        "legal hold CASE-9 needs the record as it was",
    ]);
    ok(&out, "restore --skip-erasures");
    assert!(err(&out).contains("NOT applied"), "{}", err(&out));
    assert!(under(&t4, "patients/123/scan.pdf").exists());
    let audit = cli.audit();
    let skipped = audit
        .iter()
        .rev()
        .find(|e| e["operation"] == "restore" && e["outcome"] == "success")
        .expect("restore entry");
    assert_eq!(
        skipped["args"]["erasures_skipped_reason"],
        "legal hold CASE-9 needs the record as it was"
    );
    assert_eq!(
        skipped["args"]["erasures_not_applied"],
        serde_json::json!([e1, e2])
    );
}

#[test]
fn logical_restores_reapply_later_sql_erasures_and_bad_statements_are_refused() {
    let pg = Cluster::new("");
    pg.psql("postgres", "CREATE DATABASE ehr");
    pg.psql("postgres", "CREATE DATABASE lab");
    pg.psql(
        "ehr",
        "CREATE TABLE patient (id int PRIMARY KEY, name text); \
         INSERT INTO patient SELECT g, 'patient ' || g FROM generate_series(1, 5) g",
    );
    pg.psql(
        "lab",
        "CREATE TABLE result (patient int, value text); INSERT INTO result VALUES (1, 'x'), (2, 'y')",
    );
    let cli = Cli::acting_as(Some("dpo@clinic.example"));
    let server = dsn(&pg, "postgres");
    let backup = |db: &str| {
        cli.json(
            &["backup", "--postgres", &server, "--database", db],
            "backup",
        )["snapshot"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let first = backup("ehr");
    pause();
    let e1 = cli.erase(&[
        "--ref",
        "DSAR-1",
        "--sql",
        "DELETE FROM patient WHERE id = 1",
        "--database",
        "ehr",
        "--postgres",
        &server,
        "--reason",
        "Art. 17",
    ]);
    // The dry run was rolled back: the live row is still there until the
    // operator erases it.
    assert_eq!(pg.psql("ehr", "SELECT count(*) FROM patient"), "5");
    pg.psql("ehr", "DELETE FROM patient WHERE id = 1");
    pause();
    let second = backup("ehr");
    pause();
    let e2 = cli.erase(&[
        "--ref",
        "DSAR-2",
        "--sql",
        "DELETE FROM patient WHERE id = 2;",
        "--database",
        "ehr",
        "--postgres",
        &server,
        "--reason",
        "Art. 17",
    ]);
    // Another database's erasure never runs in ehr.
    let e3 = cli.erase(&[
        "--ref",
        "DSAR-2",
        "--sql",
        "DELETE FROM result WHERE patient = 2",
        "--database",
        "lab",
        "--postgres",
        &server,
        "--reason",
        "Art. 17",
    ]);

    // Statements the server refuses are refused with its error.
    let refused = |sql: &str, db: &str, expect: &str| {
        let out = cli.run(&[
            "erasure",
            "add",
            "--ref",
            "BAD",
            "--sql",
            sql,
            "--database",
            db,
            "--postgres",
            &server,
            "--reason",
            "r",
        ]);
        assert!(!out.status.success(), "{sql} was accepted");
        assert!(err(&out).contains(expect), "{sql}: {}", err(&out));
        assert!(err(&out).contains("erasure not recorded"), "{}", err(&out));
    };
    refused(
        "DELETE FROM patinet WHERE id = 3",
        "ehr",
        "relation \"patinet\" does not exist",
    );
    refused("DELET FROM patient", "ehr", "syntax error");
    refused(
        "DELETE FROM patient WHERE id = 3; COMMIT",
        "ehr",
        "cannot insert multiple commands",
    );
    refused("COMMIT", "ehr", "ended the transaction");
    refused("DELETE FROM patient", "nosuchdb", "nosuchdb");
    assert_eq!(pg.psql("ehr", "SELECT count(*) FROM patient"), "4");
    let listed = cli.json(&["erasure", "list"], "list");
    assert_eq!(listed.as_array().unwrap().len(), 3);
    assert_eq!(
        listed[1]["target"]["sql"],
        "DELETE FROM patient WHERE id = 2"
    );

    let restore = |snap: &str, into: &str| {
        cli.json(
            &[
                "restore",
                snap,
                "--to-postgres",
                &server,
                "--database",
                into,
                "--from-database",
                "ehr",
            ],
            "restore",
        )
    };
    let r = restore(&first, "ehr_one");
    assert_eq!(applied(&r), [e1.clone(), e2.clone()]);
    assert_eq!(r["erasures"]["applied"][0]["count"], 1);
    assert_eq!(
        pg.psql(
            "ehr_one",
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM patient"
        ),
        "3,4,5"
    );
    let r = restore(&second, "ehr_two");
    assert_eq!(
        applied(&r),
        [e2.as_str()],
        "the older erasure is in the snapshot already"
    );
    assert_eq!(
        pg.psql(
            "ehr_two",
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM patient"
        ),
        "3,4,5"
    );

    // The lab database's erasure is not among them.
    let audit = cli.audit();
    let entry = audit
        .iter()
        .rev()
        .find(|e| e["operation"] == "restore" && e["outcome"] == "success")
        .expect("restore entry");
    assert_eq!(entry["args"]["erasures_applied"], serde_json::json!([e2]));
    assert!(!entry.to_string().contains(&e3));

    // An erasure that fails on the restored data fails the restore,
    // naming it: here a table created after the snapshot.
    pg.psql("ehr", "CREATE TABLE note (patient int, body text)");
    pause();
    let e4 = cli.erase(&[
        "--ref",
        "DSAR-3",
        "--sql",
        "DELETE FROM note WHERE patient = 4",
        "--database",
        "ehr",
        "--postgres",
        &server,
        "--reason",
        "Art. 17",
    ]);
    let out = cli.run(&[
        "restore",
        &second,
        "--to-postgres",
        &server,
        "--database",
        "ehr_three",
        "--from-database",
        "ehr",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let e = err(&out);
    assert!(
        e.contains(&e4) && e.contains("DSAR-3") && e.contains("note"),
        "{e}"
    );
    assert!(e.contains("do not use it"), "{e}");
    // One transaction: the earlier erasure of this restore was rolled back too.
    assert_eq!(
        pg.psql("ehr_three", "SELECT count(*) FROM patient WHERE id = 2"),
        "1"
    );
    let audit = cli.audit();
    let failed = audit.last().expect("entry");
    assert_eq!(failed["operation"], "restore");
    assert_eq!(failed["outcome"], "failure");
}

#[test]
fn physical_restores_leave_the_erasures_pending_and_apply_runs_them() {
    let mut pg = Cluster::new("");
    pg.psql(
        "postgres",
        "CREATE TABLE patient (id int PRIMARY KEY); INSERT INTO patient SELECT generate_series(1, 5)",
    );
    let cli = Cli::acting_as(Some("dpo@clinic.example"));
    let server = dsn(&pg, "postgres");
    let pgdata = pg.datadir.display().to_string();
    let e0 = cli.erase(&[
        "--ref",
        "DSAR-0",
        "--sql",
        "DELETE FROM patient WHERE id = 5",
        "--database",
        "postgres",
        "--postgres",
        &server,
        "--reason",
        "before the backup",
    ]);
    pg.psql("postgres", "DELETE FROM patient WHERE id = 5");
    pause();
    ok(
        &cli.run(&[
            "backup",
            "--postgres-physical",
            &server,
            "--pgdata",
            &pgdata,
        ]),
        "physical backup",
    );
    pause();
    let e1 = cli.erase(&[
        "--ref",
        "DSAR-1",
        "--sql",
        "DELETE FROM patient WHERE id = 1",
        "--database",
        "postgres",
        "--postgres",
        &server,
        "--reason",
        "Art. 17",
    ]);
    let dir = common::shared_tempdir();
    let target = dir.path().join("restored");
    let r = cli.json(
        &[
            "restore",
            "latest",
            "--to-datadir",
            &target.display().to_string(),
        ],
        "physical restore",
    );
    let pending: Vec<&str> = r["erasures"]["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(pending, [e1.as_str()], "{e0} predates the backup");
    let file = target.join("holdfast-erasures.json");
    assert!(file.exists());
    let audit = cli.audit();
    let entry = audit
        .iter()
        .rev()
        .find(|e| e["operation"] == "restore" && e["outcome"] == "success")
        .expect("restore entry");
    assert_eq!(
        entry["args"]["erasures_pending"],
        serde_json::json!([e1.clone()])
    );

    pg.stop();
    let mut restored = Cluster::on_datadir(dir, target.clone());
    restored.start();
    assert_eq!(
        restored.psql("postgres", "SELECT count(*) FROM patient"),
        "4"
    );
    let rdsn = dsn(&restored, "postgres");
    let out = cli.json(
        &[
            "erasure",
            "apply",
            "--datadir",
            &target.display().to_string(),
            "--postgres",
            &rdsn,
        ],
        "erasure apply",
    );
    assert_eq!(out["applied"][0]["id"], e1.as_str());
    assert_eq!(out["applied"][0]["count"], 1);
    assert_eq!(
        restored.psql(
            "postgres",
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM patient"
        ),
        "2,3,4"
    );
    assert!(!file.exists());
    assert!(target.join("holdfast-erasures.applied.json").exists());
    // Nothing is pending any more: a second run says so.
    let again = cli.run(&[
        "erasure",
        "apply",
        "--datadir",
        &target.display().to_string(),
        "--postgres",
        &rdsn,
    ]);
    assert!(!again.status.success());
    assert!(
        err(&again).contains("no erasures are pending"),
        "{}",
        err(&again)
    );
    let audit = cli.audit();
    assert!(audit
        .iter()
        .any(|e| e["operation"] == "erasure apply" && e["outcome"] == "success"));
}

#[test]
fn directory_drills_reapply_later_path_erasures() {
    let cli = Cli::acting_as(Some("dpo@clinic.example"));
    let work = common::shared_tempdir();
    let src = work.path().join("docs");
    let s = src.display().to_string();
    write(&src.join("patients/123/scan.pdf"), "subject 123");
    write(&src.join("patients/789/scan.pdf"), "subject 789");
    ok(&cli.run(&["backup", "--source", "docs", &s]), "backup");
    pause();
    let e1 = cli.erase(&[
        "--ref",
        "DSAR-7",
        "--path",
        &format!("{s}/patients/123/**"),
        "--reason",
        "Art. 17",
    ]);
    let kept = work.path().join("drill");
    let pb = work.path().join("pb.toml");
    std::fs::write(
        &pb,
        format!(
            "name = \"erasure-drill\"\n[snapshot]\nsource = \"docs\"\npick = \"latest\"\n\
             [target]\nkind = \"directory\"\npath = \"{}\"\nkeep = true\n\
             [[check]]\nkind = \"files\"\n[objectives]\nrto = \"15m\"\nrpo = \"26h\"\n",
            kept.display()
        ),
    )
    .unwrap();
    let report = work.path().join("report.json");
    ok(
        &cli.run(&[
            "drill",
            "run",
            &pb.display().to_string(),
            "--report-json",
            &report.display().to_string(),
        ]),
        "drill run",
    );
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let checks = r["restores"][0]["checks"].as_array().unwrap();
    let files = checks.iter().find(|c| c["kind"] == "files").unwrap();
    assert_eq!(files["passed"], true, "{files}");
    let erasures = checks.iter().find(|c| c["kind"] == "erasures").unwrap();
    assert_eq!(erasures["passed"], true, "{erasures}");
    assert!(
        erasures["detail"].as_str().unwrap().contains(&e1),
        "{erasures}"
    );
    let under = |p: &str| kept.join(src.strip_prefix("/").unwrap()).join(p);
    assert!(!under("patients/123").exists());
    assert!(under("patients/789/scan.pdf").exists());
}

#[test]
fn policy_plan_lists_held_erasures_and_apply_purges_those_snapshots_first() {
    let cli = Cli::acting_as(Some("dpo@clinic.example"));
    let work = common::shared_tempdir();
    let docs = work.path().join("docs");
    let scans = work.path().join("scans");
    let d = docs.display().to_string();
    write(&docs.join("patients/123/scan.pdf"), "subject 123");
    write(&docs.join("patients/456/scan.pdf"), "subject 456");
    write(&scans.join("x.tif"), "not a subject's");
    let backup = |source: &str, path: &Path, time: Option<&str>| {
        let p = path.display().to_string();
        let mut args = vec!["backup", "--source", source];
        if let Some(t) = time {
            args.extend(["--time", t]);
        }
        args.push(&p);
        cli.json(&args, "backup")["snapshot"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // Oldest first in time: a purge of "scans" would come first if purges
    // went by age alone.
    let other = backup("scans", &scans, Some("2025-01-01T10:00:00Z"));
    let old = backup("docs", &docs, Some("2025-06-01T10:00:00Z"));
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339();
    let recent = backup("docs", &docs, Some(&yesterday));
    pause();
    let e1 = cli.erase(&[
        "--ref",
        "DSAR-11",
        "--path",
        &format!("{d}/patients/123/**"),
        "--reason",
        "Art. 17",
    ]);
    pause();
    let after = backup("docs", &docs, None);
    let policy = work.path().join("all.toml");
    std::fs::write(
        &policy,
        "[[policy]]\nname = \"all\"\nsource = \"*\"\ntimezone = \"UTC\"\nkeep = { last = 2 }\nmax_age = \"300d\"\n",
    )
    .unwrap();
    let pf = policy.display().to_string();

    let plan = cli.json(&["policy", "plan", "--policy", &pf], "plan");
    let of = |id: &str| {
        plan.as_array()
            .unwrap()
            .iter()
            .find(|x| x["snapshot"] == id)
            .unwrap_or_else(|| panic!("{id} not in {plan}"))
            .clone()
    };
    assert_eq!(of(&old)["action"], "purge");
    assert_eq!(of(&old)["erasures"], serde_json::json!([e1]));
    assert_eq!(of(&recent)["action"], "keep");
    assert_eq!(of(&recent)["erasures"], serde_json::json!([e1]));
    // Taken after the erasure, or of paths the pattern cannot match: none.
    assert!(of(&after).get("erasures").is_none(), "{}", of(&after));
    assert_eq!(of(&other)["action"], "purge");
    assert!(of(&other).get("erasures").is_none(), "{}", of(&other));
    let text = ok(&cli.run(&["policy", "plan", "--policy", &pf]), "plan");
    assert_eq!(
        text.matches(&format!("still holds erasure(s) {e1}"))
            .count(),
        2,
        "{text}"
    );

    let report = cli.json(&["policy", "apply", "--policy", &pf, "--yes"], "apply");
    let purged: Vec<&str> = report["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["outcome"] == "purged")
        .map(|x| x["snapshot"].as_str().unwrap())
        .collect();
    assert_eq!(purged, [old.as_str(), other.as_str()], "{report}");
    let left = cli.json(&["snapshots"], "snapshots");
    let ids: Vec<&str> = left
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert!(!ids.contains(&old.as_str()) && !ids.contains(&other.as_str()));
    assert!(ids.contains(&recent.as_str()) && ids.contains(&after.as_str()));
}
