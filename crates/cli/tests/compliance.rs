//! `holdfast compliance report`: each control in its pass and its fail
//! (or attention) state, each from a real repository built for it —
//! backups within and past their RPO, drills passed, failed, missing and
//! overdue, strong, weak and old key slots, an intact and a tampered
//! audit trail, retention with nothing past due, pending purges and
//! snapshots past their max_age, holds open, released and missing their
//! snapshot, erasures re-applied, skipped and unreadable — the exit code,
//! and the HTML page checked in headless Chromium at desktop and phone
//! widths.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use chrono::{Duration, SecondsFormat, Utc};
use common::*;
use serde_json::Value;

/// A repository and a source directory.
struct Site {
    env: Env,
    scratch: PathBuf,
}

impl Site {
    /// With the tests' cheap key derivation (below the report's minimum).
    fn new() -> Site {
        let env = Env::new();
        env.init();
        Site::with(env)
    }

    /// With holdfast's default key derivation (64 MiB, 3 passes).
    fn strong() -> Site {
        let env = Env::new();
        env.ok(["init"]);
        Site::with(env)
    }

    fn with(env: Env) -> Site {
        let scratch = env.path("scratch");
        fs::create_dir_all(&scratch).unwrap();
        Site { env, scratch }
    }

    /// A directory of a few files for `source`.
    fn tree(&self, source: &str) -> PathBuf {
        let src = self.env.path(&format!("src-{source}"));
        fs::create_dir_all(src.join("patients/123")).unwrap();
        fs::create_dir_all(src.join("patients/456")).unwrap();
        fs::write(src.join("patients/123/scan.pdf"), noise(30_000, 1)).unwrap();
        fs::write(src.join("patients/456/scan.pdf"), noise(40_000, 2)).unwrap();
        fs::write(src.join("notes.txt"), text(20_000, 3)).unwrap();
        src
    }

    /// A backup of `source`, at `time` when given; returns the snapshot id.
    fn backup(&self, source: &str, time: Option<&str>) -> String {
        let src = self.tree(source);
        let mut args: Vec<String> = vec!["backup".into(), "--source".into(), source.into()];
        if let Some(t) = time {
            args.push("--time".into());
            args.push(t.into());
        }
        args.push(src.display().to_string());
        let v = self.env.json(&args);
        v["snapshot"].as_str().expect("snapshot id").to_string()
    }

    fn file(&self, name: &str, body: &str) -> PathBuf {
        let p = self.env.path(name);
        fs::write(&p, body).unwrap();
        p
    }

    fn run(&self, args: &[&str]) -> Output {
        self.env
            .cmd()
            .env("TMPDIR", &self.scratch)
            .args(args)
            .output()
            .unwrap()
    }

    /// `compliance report` with `args`; the exit code and the JSON report.
    fn report(&self, args: &[&str]) -> (Option<i32>, Value) {
        let json = self.env.path("report.json");
        let _ = fs::remove_file(&json);
        let mut all = vec![
            "compliance",
            "report",
            "--report-json",
            json.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        let out = self.run(&all);
        let v: Value = match fs::read(&json) {
            Ok(b) => serde_json::from_slice(&b).expect("JSON report"),
            Err(_) => panic!(
                "no report (exit {:?}): {}{}",
                out.status.code(),
                stdout(&out),
                stderr(&out)
            ),
        };
        assert_eq!(v["version"], 1, "schema version");
        (out.status.code(), v)
    }

    /// A drill of `playbook`; returns its exit code.
    fn drill(&self, playbook: &Path) -> Option<i32> {
        self.run(&["drill", "run", playbook.to_str().unwrap()])
            .status
            .code()
    }
}

fn control<'a>(v: &'a Value, id: &str) -> &'a Value {
    v["controls"]
        .as_array()
        .expect("controls")
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no control {id} in {v}"))
}

fn status(v: &Value, id: &str) -> String {
    control(v, id)["status"].as_str().unwrap().to_string()
}

fn finding(v: &Value, id: &str) -> String {
    control(v, id)["finding"].as_str().unwrap().to_string()
}

/// The rows of a control's table `title`, as (status, cells).
fn rows(v: &Value, id: &str, title: &str) -> Vec<(String, Vec<String>)> {
    let t = control(v, id)["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["title"] == title)
        .unwrap_or_else(|| panic!("no table {title} in {id}: {}", control(v, id)));
    t["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["status"].as_str().unwrap_or("").to_string(),
                r["cells"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

fn row_status(v: &Value, id: &str, title: &str, first_cell: &str) -> String {
    rows(v, id, title)
        .into_iter()
        .find(|(_, c)| c[0].starts_with(first_cell))
        .unwrap_or_else(|| panic!("no row {first_cell} in {id}/{title}"))
        .0
}

fn rfc(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn config(site: &Site, sources: &[(&str, Option<&str>)]) -> PathBuf {
    let mut s = format!(
        "[repository.main]\nurl = \"{}\"\npassword_env = \"HOLDFAST_PASSWORD\"\n",
        site.env.repo.display()
    );
    for (name, rpo) in sources {
        s.push_str(&format!(
            "\n[source.{name}]\npaths = [\"{}\"]\n",
            site.env.path(&format!("src-{name}")).display()
        ));
        if let Some(r) = rpo {
            s.push_str(&format!("rpo = \"{r}\"\n"));
        }
        s.push_str(&format!(
            "\n[[job]]\nname = \"{name}-backup\"\nkind = \"backup\"\nsource = \"{name}\"\nrepository = \"main\"\nschedule = \"0 0 1 * * *\"\n"
        ));
    }
    site.file("holdfast.toml", &s)
}

#[test]
fn backup_plan_within_and_past_rpo() {
    let site = Site::new();
    let three_days_ago = rfc(Utc::now() - Duration::days(3));
    site.backup("fresh", None);
    site.backup("stale", Some(&three_days_ago));
    // Without a configuration: no RPO to judge against.
    let (code, v) = site.report(&[]);
    assert_eq!(
        status(&v, "backup-plan"),
        "attention",
        "{}",
        finding(&v, "backup-plan")
    );
    assert!(finding(&v, "backup-plan").contains("no configuration"));
    // Attention never fails the report (it fails here for the tests'
    // weak key derivation and the missing drills).
    assert_eq!(status(&v, "encryption"), "fail");
    assert_eq!(code, Some(23));

    // A stale source and one never backed up fail; the fresh one passes.
    let cfg = config(
        &site,
        &[
            ("fresh", Some("26h")),
            ("stale", Some("26h")),
            ("never", Some("1d")),
        ],
    );
    let (code, v) = site.report(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(code, Some(23));
    assert_eq!(status(&v, "backup-plan"), "fail");
    assert_eq!(row_status(&v, "backup-plan", "Sources", "fresh"), "pass");
    assert_eq!(row_status(&v, "backup-plan", "Sources", "stale"), "fail");
    assert_eq!(row_status(&v, "backup-plan", "Sources", "never"), "fail");
    let f = finding(&v, "backup-plan");
    assert!(
        f.contains("stale: last backup 3d") && f.contains("never: no backup"),
        "{f}"
    );
    // The chart has a lane per source, with the backups in view.
    let chart = &control(&v, "backup-plan")["charts"][0];
    assert_eq!(chart["type"], "backups");
    let lanes = chart["sources"].as_array().unwrap();
    assert_eq!(lanes.len(), 3);
    assert_eq!(lanes[0]["source"], "fresh");
    assert_eq!(lanes[0]["backups"].as_array().unwrap().len(), 1);

    // Only fresh in the configuration: pass; stale is listed aside.
    let cfg = config(&site, &[("fresh", Some("26h"))]);
    let (_, v) = site.report(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(
        status(&v, "backup-plan"),
        "pass",
        "{}",
        finding(&v, "backup-plan")
    );
    let others = rows(
        &v,
        "backup-plan",
        "Other sources in the repository (not in the configuration)",
    );
    assert_eq!(others.len(), 1);
    assert_eq!(others[0].1[0], "stale");

    // As of four days ago, before either backup existed: fail.
    let (_, v) = site.report(&[
        "--config",
        cfg.to_str().unwrap(),
        "--at",
        &rfc(Utc::now() - Duration::days(4)),
    ]);
    assert_eq!(status(&v, "backup-plan"), "fail");
    assert!(finding(&v, "backup-plan").contains("fresh: no backup"));

    // A source without rpo: attention.
    let cfg = config(&site, &[("fresh", None)]);
    let (_, v) = site.report(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(status(&v, "backup-plan"), "attention");

    // An invalid configuration is refused before anything is judged.
    let bad = site.file("bad.toml", "[source.x]\nrpo = \"soon\"\n");
    let out = site.run(&["compliance", "report", "--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("bad.toml:"), "{}", stderr(&out));
}

fn playbook(site: &Site, name: &str, check: &str, every: &str) -> PathBuf {
    site.file(
        &format!("{name}.toml"),
        &format!(
            "name = \"{name}\"\n[snapshot]\nsource = \"docs\"\npick = \"latest\"\n[target]\nkind = \"directory\"\n{check}\n[objectives]\nrto = \"15m\"\nrpo = \"26h\"\nevery = \"{every}\"\n"
        ),
    )
}

#[test]
fn drills_passed_failed_missing_and_overdue() {
    let site = Site::new();
    site.backup("docs", None);
    // No drill at all: the plan was never tested.
    let (_, v) = site.report(&[]);
    assert_eq!(status(&v, "disaster-recovery"), "fail");
    assert!(finding(&v, "disaster-recovery").contains("never been tested"));

    let good = playbook(&site, "nightly", "[[check]]\nkind = \"files\"\n", "1d");
    let bad = playbook(
        &site,
        "broken",
        "[[check]]\nkind = \"command\"\nname = \"app starts\"\nrun = \"false\"\n",
        "7d",
    );
    let never = playbook(&site, "quarterly", "[[check]]\nkind = \"files\"\n", "92d");
    assert_eq!(site.drill(&good), Some(0));
    assert_eq!(site.drill(&bad), Some(20));

    let (code, v) = site.report(&["--playbooks", good.to_str().unwrap()]);
    assert_eq!(
        status(&v, "disaster-recovery"),
        "pass",
        "{}",
        finding(&v, "disaster-recovery")
    );
    assert_ne!(code, None);
    let r = rows(&v, "disaster-recovery", "Drills per playbook");
    assert_eq!(r[0].1[0], "nightly");
    assert_eq!(r[0].1[4], "passed");
    assert!(
        r[0].1[5].ends_with("/ 15m"),
        "RTO against the target: {:?}",
        r[0].1
    );
    // The forecast is there, from the drill and the source's size.
    let facts = control(&v, "disaster-recovery")["facts"].to_string();
    assert!(facts.contains("Full-site restore forecast"), "{facts}");
    let chart = &control(&v, "disaster-recovery")["charts"][0];
    assert_eq!(chart["type"], "drills");
    assert_eq!(chart["playbooks"][0]["drills"].as_array().unwrap().len(), 1);

    // The failed drill, the playbook never drilled: fail, each named.
    let dir = site.env.path("playbooks");
    fs::create_dir_all(&dir).unwrap();
    for p in [&good, &bad, &never] {
        fs::copy(p, dir.join(p.file_name().unwrap())).unwrap();
    }
    let (code, v) = site.report(&["--playbooks", dir.to_str().unwrap()]);
    assert_eq!(code, Some(23));
    assert_eq!(status(&v, "disaster-recovery"), "fail");
    assert_eq!(
        row_status(&v, "disaster-recovery", "Drills per playbook", "nightly"),
        "pass"
    );
    assert_eq!(
        row_status(&v, "disaster-recovery", "Drills per playbook", "broken"),
        "fail"
    );
    assert_eq!(
        row_status(&v, "disaster-recovery", "Drills per playbook", "quarterly"),
        "fail"
    );
    let f = finding(&v, "disaster-recovery");
    assert!(
        f.contains("broken: a check failed") && f.contains("quarterly: never drilled"),
        "{f}"
    );

    // Without playbooks: those of the history (nightly and broken).
    let (_, v) = site.report(&[]);
    assert_eq!(
        rows(&v, "disaster-recovery", "Drills per playbook").len(),
        2
    );
    assert_eq!(status(&v, "disaster-recovery"), "fail");

    // Two days on, the nightly drill (every 1d) is overdue.
    let (_, v) = site.report(&[
        "--playbooks",
        good.to_str().unwrap(),
        "--at",
        &rfc(Utc::now() + Duration::days(2)),
    ]);
    assert_eq!(status(&v, "disaster-recovery"), "fail");
    assert!(finding(&v, "disaster-recovery").contains("it must run every 24h"));

    // An invalid playbook is refused with its line and column.
    let broken = site.file(
        "typo.toml",
        "name = \"x\"\n[objectives]\nrto = \"15m\"\nrpo = \"1h\"\nevery = \"often\"\n",
    );
    let out = site.run(&[
        "compliance",
        "report",
        "--playbooks",
        broken.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("typo.toml:"), "{}", stderr(&out));
}

#[test]
fn encryption_strong_weak_and_old_key_slots() {
    // The tests' cheap key derivation (8 MiB, 1 pass) is below the minimum.
    let weak = Site::new();
    let (code, v) = weak.report(&[]);
    assert_eq!(status(&v, "encryption"), "fail");
    assert_eq!(code, Some(23));
    assert!(finding(&v, "encryption").contains("below the minimum"));
    // The default (64 MiB, 3 passes) passes; a year and more on, the
    // slot is due for rotation.
    let strong = Site::strong();
    let (_, v) = strong.report(&[]);
    assert_eq!(
        status(&v, "encryption"),
        "pass",
        "{}",
        finding(&v, "encryption")
    );
    let slots = rows(&v, "encryption", "Key slots");
    assert_eq!(slots.len(), 1);
    assert!(
        slots[0].1[2].contains("argon2id (64 MiB, 3 pass(es))"),
        "{:?}",
        slots[0]
    );
    assert!(control(&v, "encryption")["facts"]
        .to_string()
        .contains("AES-256-GCM"));
    let (_, v) = strong.report(&["--at", &rfc(Utc::now() + Duration::days(400))]);
    assert_eq!(status(&v, "encryption"), "attention");
    assert!(finding(&v, "encryption").contains("rotate it"));
}

#[test]
fn audit_trail_intact_and_tampered() {
    let site = Site::new();
    site.backup("docs", None);
    site.backup("docs", None);
    let entries = site.env.json(["audit", "log"]).as_array().unwrap().len();
    let (_, v) = site.report(&[]);
    assert_eq!(
        status(&v, "audit-controls"),
        "pass",
        "{}",
        finding(&v, "audit-controls")
    );
    let facts = control(&v, "audit-controls")["facts"].to_string();
    assert!(
        facts.contains(&format!("\"value\":\"{entries}\"")),
        "{facts}"
    );
    // An entry deleted from the middle: broken.
    fs::remove_file(site.env.repo.join("audit/00000000000000000002")).unwrap();
    let (code, v) = site.report(&[]);
    assert_eq!(code, Some(23));
    assert_eq!(status(&v, "audit-controls"), "fail");
    assert!(finding(&v, "audit-controls").contains("BROKEN"));
    let problems = rows(&v, "audit-controls", "Problems");
    assert!(
        problems
            .iter()
            .any(|(_, c)| c[0].contains("audit/00000000000000000002")),
        "{problems:?}"
    );
}

#[test]
fn retention_in_force_pending_and_past_max_age() {
    let site = Site::new();
    let old = site.backup("docs", Some(&rfc(Utc::now() - Duration::days(10))));
    site.backup("docs", None);
    let (_, v) = site.report(&[]);
    assert_eq!(status(&v, "retention"), "attention");
    assert!(finding(&v, "retention").contains("no policy file given"));

    let six = site.file(
        "six.toml",
        "[[policy]]\ntimezone = \"UTC\"\nname = \"evidence\"\nsource = \"docs\"\nkeep = { within = \"6y\" }\nfloor = \"6y\"\nmax_age = \"7y\"\n",
    );
    let (_, v) = site.report(&["--policy", six.to_str().unwrap()]);
    assert_eq!(
        status(&v, "retention"),
        "pass",
        "{}",
        finding(&v, "retention")
    );
    let policies = rows(&v, "retention", "Policies in force");
    assert_eq!(policies[0].1[0], "evidence");
    assert_eq!(policies[0].1[4], "6y");

    // Keep rules leave the old one to purge: pending, attention.
    let thin = site.file(
        "thin.toml",
        "[[policy]]\ntimezone = \"UTC\"\nname = \"thin\"\nsource = \"docs\"\nkeep = { last = 1 }\n",
    );
    let (_, v) = site.report(&["--policy", thin.to_str().unwrap()]);
    assert_eq!(status(&v, "retention"), "attention");
    assert!(finding(&v, "retention").contains("due for purging"));

    // Past its max_age: storage limitation fails.
    let short = site.file(
        "short.toml",
        "[[policy]]\ntimezone = \"UTC\"\nname = \"short\"\nsource = \"docs\"\nkeep = { last = 5 }\nmax_age = \"5d\"\n",
    );
    let (code, v) = site.report(&["--policy", short.to_str().unwrap()]);
    assert_eq!(code, Some(23));
    assert_eq!(status(&v, "retention"), "fail");
    let due = rows(&v, "retention", "Past due");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].0, "fail");
    assert_eq!(due[0].1[0], old[..8]);
    assert!(due[0].1[4].starts_with("past max_age 5d"));

    // A legal hold keeps it lawfully: no longer past due.
    site.env.ok([
        "hold",
        "place",
        "--snapshot",
        old.as_str(),
        "--case",
        "CASE-1",
        "--reason",
        "litigation",
    ]);
    let (_, v) = site.report(&["--policy", short.to_str().unwrap()]);
    assert_ne!(
        status(&v, "retention"),
        "fail",
        "{}",
        finding(&v, "retention")
    );
    assert!(rows(&v, "retention", "Past due").is_empty());
}

#[test]
fn legal_holds_open_released_and_missing_snapshot() {
    let site = Site::new();
    let a = site.backup("docs", None);
    let b = site.backup("mail", None);
    let (_, v) = site.report(&[]);
    assert_eq!(status(&v, "legal-holds"), "pass");
    assert!(finding(&v, "legal-holds").contains("0 hold(s) open, 0 released"));
    let held = site.env.json([
        "hold",
        "place",
        "--snapshot",
        a.as_str(),
        "--case",
        "CASE-<7>",
        "--reason",
        "subpoena",
    ]);
    let id_a = held["id"].as_str().unwrap().to_string();
    let other = site.env.json([
        "hold",
        "place",
        "--snapshot",
        b.as_str(),
        "--case",
        "CASE-8",
        "--reason",
        "audit",
    ]);
    let id_b = other["id"].as_str().unwrap().to_string();
    site.env
        .ok(["hold", "release", id_b.as_str(), "--reason", "case closed"]);
    let (_, v) = site.report(&[]);
    assert_eq!(
        status(&v, "legal-holds"),
        "pass",
        "{}",
        finding(&v, "legal-holds")
    );
    assert!(finding(&v, "legal-holds").contains("1 hold(s) open, 1 released"));
    let holds = rows(&v, "legal-holds", "Holds");
    assert!(
        holds.iter().any(|(_, c)| c[0] == id_a && c[5] == "open"),
        "{holds:?}"
    );
    assert!(
        holds
            .iter()
            .any(|(_, c)| c[0] == id_b && c[5].starts_with("released")),
        "{holds:?}"
    );
    // Local storage has no Object Lock.
    assert_eq!(status(&v, "object-lock"), "attention");
    assert!(finding(&v, "object-lock").contains("no Object Lock"));

    // The held snapshot's manifest deleted behind holdfast's back: fail.
    fs::remove_file(site.env.repo.join("snapshots").join(&a)).unwrap();
    let (code, v) = site.report(&[]);
    assert_eq!(code, Some(23));
    assert_eq!(status(&v, "legal-holds"), "fail");
    assert!(finding(&v, "legal-holds").contains("no longer stored"));
}

#[test]
fn erasures_reapplied_skipped_and_unreadable() {
    let site = Site::new();
    let snap = site.backup("docs", None);
    let src = site.env.path("src-docs");
    let (_, v) = site.report(&[]);
    assert_eq!(status(&v, "erasure"), "pass");
    assert_eq!(finding(&v, "erasure"), "no erasure registered");
    let e = site.env.json([
        "erasure",
        "add",
        "--ref",
        "DSAR-1",
        "--path",
        format!("{}/patients/123/**", src.display()).as_str(),
        "--reason",
        "Art. 17 request",
    ]);
    let eid = e["id"].as_str().unwrap().to_string();
    let t1 = site.env.path("t1");
    site.env
        .ok(["restore", snap.as_str(), "--target", t1.to_str().unwrap()]);
    let (_, v) = site.report(&[]);
    assert_eq!(status(&v, "erasure"), "pass", "{}", finding(&v, "erasure"));
    let restores = rows(&v, "erasure", "Last restores");
    assert_eq!(restores.len(), 1);
    assert!(
        restores[0].1[6].contains(&format!("applied {eid}")),
        "{restores:?}"
    );
    assert_eq!(rows(&v, "erasure", "Erasure register")[0].1[0], eid);

    // A restore that skipped the register (for a legal hold): attention.
    let t2 = site.env.path("t2");
    site.env.ok([
        "restore",
        snap.as_str(),
        "--target",
        t2.to_str().unwrap(),
        "--skip-erasures",
        "--reason",
        "legal hold CASE-9",
    ]);
    let (_, v) = site.report(&[]);
    assert_eq!(status(&v, "erasure"), "attention");
    let restores = rows(&v, "erasure", "Last restores");
    assert_eq!(restores[1].0, "attention");
    assert!(
        restores[1].1[6].contains("legal hold CASE-9"),
        "{restores:?}"
    );

    // An erasure record that cannot be read: fail.
    let rec = site.env.repo.join("erasures").join(&eid);
    let mut bytes = fs::read(&rec).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0xff;
    fs::write(&rec, bytes).unwrap();
    let (code, v) = site.report(&[]);
    assert_eq!(code, Some(23));
    assert_eq!(status(&v, "erasure"), "fail");
    assert!(finding(&v, "erasure").contains("cannot be read"));
}

const IDS: [&str; 8] = [
    "backup-plan",
    "disaster-recovery",
    "encryption",
    "audit-controls",
    "retention",
    "legal-holds",
    "object-lock",
    "erasure",
];

#[test]
fn all_in_order_exits_zero_and_a_failure_exits_23() {
    let site = Site::strong();
    site.backup("docs", None);
    let cfg = config(&site, &[("docs", Some("26h"))]);
    let pb = playbook(&site, "nightly", "[[check]]\nkind = \"files\"\n", "1d");
    assert_eq!(site.drill(&pb), Some(0));
    let six = site.file(
        "six.toml",
        "[[policy]]\ntimezone = \"UTC\"\nname = \"evidence\"\nsource = \"docs\"\nkeep = { within = \"6y\" }\nfloor = \"6y\"\nmax_age = \"7y\"\n",
    );
    let args = [
        "--config",
        cfg.to_str().unwrap(),
        "--policy",
        six.to_str().unwrap(),
        "--playbooks",
        pb.to_str().unwrap(),
    ];
    let (code, v) = site.report(&args);
    for id in IDS {
        let want = if id == "object-lock" {
            "attention"
        } else {
            "pass"
        };
        assert_eq!(status(&v, id), want, "{id}: {}", finding(&v, id));
    }
    assert_eq!(v["status"], "attention");
    assert_eq!(v["summary"]["pass"], 7);
    assert_eq!(code, Some(0), "attention alone exits 0");
    // The text summary names every control; --json prints the report.
    let out = site.run(&[&["compliance", "report"][..], &args[..]].concat());
    assert_eq!(out.status.code(), Some(0));
    for id in IDS {
        assert!(stdout(&out).contains(id), "{}", stdout(&out));
    }
    assert!(
        stderr(&out).contains("need(s) attention"),
        "{}",
        stderr(&out)
    );
    let out = site.run(&[&["--json", "compliance", "report"][..], &args[..]].concat());
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["controls"].as_array().unwrap().len(), 8);
    // A day and a half later the backup is past its RPO and the drill
    // overdue: exit 23.
    let later = rfc(Utc::now() + Duration::hours(36));
    let (code, v) = site.report(&[&args[..], &["--at", &later]].concat());
    assert_eq!(code, Some(23));
    assert_eq!(status(&v, "backup-plan"), "fail");
    assert_eq!(status(&v, "disaster-recovery"), "fail");
    assert_eq!(v["summary"]["fail"], 2);
}

#[test]
fn html_report_renders_in_chromium() {
    let site = Site::new();
    site.backup("documents", Some(&rfc(Utc::now() - Duration::days(9))));
    site.backup("documents", Some(&rfc(Utc::now() - Duration::days(5))));
    site.backup("documents", Some(&rfc(Utc::now() - Duration::days(4))));
    let ehr = site.backup("ehr", Some(&rfc(Utc::now() - Duration::hours(20))));
    site.backup("docs", None);
    let cfg = config(
        &site,
        &[
            ("documents", Some("26h")),
            ("ehr", Some("1d")),
            ("docs", Some("26h")),
        ],
    );
    let pb = playbook(&site, "nightly", "[[check]]\nkind = \"files\"\n", "1d");
    assert_eq!(site.drill(&pb), Some(0));
    assert_eq!(site.drill(&pb), Some(0));
    site.env.ok([
        "hold",
        "place",
        "--snapshot",
        ehr.as_str(),
        "--case",
        "<script>alert(1)</script>",
        "--reason",
        "r",
    ]);
    let html = site.env.path("report.html");
    let out = site.run(&[
        "compliance",
        "report",
        "--config",
        cfg.to_str().unwrap(),
        "--playbooks",
        pb.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
        // The issue's form: `--json F` after the subcommand is the file.
        "--json",
        site.env.path("r.json").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(23), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&fs::read(site.env.path("r.json")).unwrap()).unwrap();
    let page = fs::read_to_string(&html).unwrap();
    if let Some(dir) = std::env::var_os("HOLDFAST_SCREENSHOTS") {
        fs::copy(&html, Path::new(&dir).join("compliance.html")).unwrap();
    }
    // Self-contained: nothing is fetched from anywhere.
    for bad in ["<script", "<link", " src=", "url(", "@import"] {
        assert!(!page.contains(bad), "the report contains {bad:?}");
    }
    let profile = site.env.path("chromium-profile");
    let url = format!("file://{}", html.display());
    let dom = stdout(&chromium(&profile, &["--dump-dom", &url]));
    assert!(dom.contains("id=\"overall\" data-status=\"fail\""), "{dom}");
    // Every control, with its status as the JSON has it.
    for id in IDS {
        let want = format!("data-control=\"{id}\" data-status=\"{}\"", status(&v, id));
        assert!(dom.contains(&want), "{want} not in the page");
        assert!(dom.contains(&format!("data-summary=\"{id}\"")));
    }
    assert_eq!(dom.matches("data-control=").count(), 8);
    // The charts: a lane per source, a tick per backup, the stale source's
    // gap; a bar per drill.
    assert!(dom.contains("id=\"backup-chart\""));
    assert_eq!(dom.matches("class=\"backup-lane\"").count(), 3);
    assert_eq!(dom.matches("class=\"backup-tick\"").count(), 5);
    assert!(dom.contains("class=\"rpo-gap\""));
    assert_eq!(dom.matches("class=\"rto-bar\"").count(), 2);
    assert!(
        dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "text is escaped"
    );
    // Nothing overflows sideways at phone or desktop width; screenshots at
    // both widths are pictures of something, not blank; kept in
    // HOLDFAST_SCREENSHOTS when set, to look at.
    assert_fits_widths(site.env.dir.path(), &profile, &url, &[390, 1280]);
    for (width, png) in
        screenshots_not_blank(site.env.dir.path(), &profile, &html, &[390, 1280], 2400)
    {
        if let Some(dir) = std::env::var_os("HOLDFAST_SCREENSHOTS") {
            fs::write(Path::new(&dir).join(format!("compliance{width}.png")), &png).unwrap();
        }
    }
}
