//! `holdfast drill validate|run|history` with directory targets: a passing
//! drill leaves its record, a verification record and no scratch
//! directory; a failed check, a missed RTO, a corrupted pack, a missing
//! snapshot, the timeout and SIGINT each end with their own exit code and
//! a report that says what happened; the shipped playbooks are valid;
//! `drill approve` signs a review on the audit trail (once per signer)
//! and refuses unknown drills and unregistered keys; the full-site RTO
//! verdict of real drills, missed and met.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::*;

/// A repository with one backup of source `docs`, and a scratch parent
/// (TMPDIR of every drill) to look for leftovers in.
struct Drill {
    env: Env,
    scratch: PathBuf,
}

impl Drill {
    fn new() -> Drill {
        let env = Env::new();
        env.init();
        let src = env.path("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        for i in 0..40u64 {
            fs::write(
                src.join(format!("f{i}")),
                noise(20_000 + i as usize * 3_000, i),
            )
            .unwrap();
        }
        fs::write(src.join("sub/notes.txt"), text(50_000, 7)).unwrap();
        std::os::unix::fs::symlink("f1", src.join("link")).unwrap();
        env.ok([
            "backup".as_ref(),
            "--source".as_ref(),
            "docs".as_ref(),
            src.as_os_str(),
        ]);
        let scratch = env.path("scratch");
        fs::create_dir_all(&scratch).unwrap();
        Drill { env, scratch }
    }

    fn playbook(&self, name: &str, body: &str) -> PathBuf {
        let p = self.env.path(name);
        fs::write(&p, body).unwrap();
        p
    }

    fn run(&self, args: &[&std::ffi::OsStr]) -> Output {
        self.env
            .cmd()
            .env("TMPDIR", &self.scratch)
            .args(args)
            .output()
            .unwrap()
    }

    fn drill(&self, playbook: &Path, report: &Path) -> (Output, serde_json::Value) {
        let out = self.run(&[
            "drill".as_ref(),
            "run".as_ref(),
            playbook.as_os_str(),
            "--report-json".as_ref(),
            report.as_os_str(),
        ]);
        let json = fs::read(report)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null);
        (out, json)
    }

    fn assert_no_scratch_left(&self) {
        let left: Vec<_> = fs::read_dir(&self.scratch)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(left.is_empty(), "scratch left behind: {left:?}");
    }
}

fn playbook(checks: &str, rto: &str) -> String {
    format!(
        r#"name = "nightly-documents"
[snapshot]
source = "docs"
pick = "latest"
[target]
kind = "directory"
{checks}
[objectives]
rto = "{rto}"
rpo = "26h"
"#
    )
}

const FILES: &str = "[[check]]\nkind = \"files\"\n";

fn code(o: &Output) -> Option<i32> {
    o.status.code()
}

#[test]
fn passing_drill_records_evidence_and_leaves_nothing() {
    let d = Drill::new();
    let pb = d.playbook("pb.toml", &playbook(FILES, "15m"));
    let report = d.env.path("report.json");
    let (out, r) = d.drill(&pb, &report);
    assert_eq!(code(&out), Some(0), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("PASSED") && text.contains("RTO:"), "{text}");
    assert_eq!(r["outcome"], "passed");
    assert_eq!(r["rto_met"], true);
    assert_eq!(r["rpo_met"], true);
    let restore = &r["restores"][0];
    let checks = restore["checks"].as_array().unwrap();
    assert!(checks.iter().all(|c| c["passed"] == true), "{checks:?}");
    let files = checks.iter().find(|c| c["kind"] == "files").unwrap();
    assert!(
        files["detail"].as_str().unwrap().contains("42 of 42"),
        "{files}"
    );
    let phases: Vec<&str> = restore["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for p in [
        "open",
        "plan",
        "download",
        "decrypt+decompress",
        "write",
        "checks",
        "teardown",
    ] {
        assert!(phases.contains(&p), "phase {p} missing: {phases:?}");
    }
    // The drill record and a verification record of its snapshot.
    let id = r["id"].as_str().unwrap();
    assert!(d.env.repo.join("drills").join(id).is_file());
    let verified = r["verification_record"].as_str().unwrap();
    assert!(d.env.repo.join("verified").join(verified).is_file());
    d.assert_no_scratch_left();
    // History lists it, with the forecast.
    let h = d.env.json(["drill", "history"]);
    assert_eq!(h["drills"][0]["id"], id);
    assert_eq!(h["drills"][0]["outcome"], "passed");
    assert!(
        h["forecast"]["sources"][0]["seconds"].as_f64().is_some(),
        "{h}"
    );
    let plain = stdout(&d.env.ok(["drill", "history"]));
    assert!(plain.contains(id) && plain.contains("passed"), "{plain}");
    // On the audit trail: started before any data was read, then the outcome.
    let log = stdout(&d.env.ok(["audit", "log", "--operation", "drill"]));
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("drill")).collect();
    assert!(lines.iter().any(|l| l.contains("started")), "{log}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("success") && l.contains(id)),
        "{log}"
    );
    let audit = d.env.run(["audit", "verify"]);
    assert_eq!(code(&audit), Some(0), "{}", stdout(&audit));
}

#[test]
fn sampled_files_check_is_seeded() {
    let d = Drill::new();
    let checks = "[[check]]\nkind = \"files\"\nsample = 5\nseed = 11\n";
    let pb = d.playbook("pb.toml", &playbook(checks, "15m"));
    let (out, r) = d.drill(&pb, &d.env.path("r.json"));
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let files = &r["restores"][0]["checks"][1];
    assert!(
        files["detail"].as_str().unwrap().starts_with("5 of 42"),
        "{files}"
    );
    assert!(
        files["name"].as_str().unwrap().contains("seed 11"),
        "{files}"
    );
}

#[test]
fn failing_check_exits_20() {
    let d = Drill::new();
    let checks = format!("{FILES}[[check]]\nkind = \"command\"\nname = \"invoice count\"\nrun = [\"sh\", \"-c\", \"test -d \\\"$HOLDFAST_DRILL_DIR\\\" && echo 3 invoices; exit 3\"]\n");
    let pb = d.playbook("pb.toml", &playbook(&checks, "15m"));
    let (out, r) = d.drill(&pb, &d.env.path("r.json"));
    assert_eq!(code(&out), Some(20), "{}", stdout(&out));
    assert_eq!(r["outcome"], "check-failed");
    let c = &r["restores"][0]["checks"][2];
    assert_eq!(c["passed"], false);
    assert!(c["detail"].as_str().unwrap().contains("3 invoices"), "{c}");
    // No verification record for a failed drill; the drill record exists.
    assert!(r["verification_record"].is_null());
    assert!(
        !d.env.repo.join("verified").exists()
            || fs::read_dir(d.env.repo.join("verified"))
                .unwrap()
                .next()
                .is_none()
    );
    assert!(d
        .env
        .repo
        .join("drills")
        .join(r["id"].as_str().unwrap())
        .is_file());
    d.assert_no_scratch_left();
}

#[test]
fn rto_too_small_exits_21_and_says_by_how_much() {
    let d = Drill::new();
    let checks = format!("{FILES}[[check]]\nkind = \"command\"\nrun = \"sleep 1.5\"\n");
    let pb = d.playbook("pb.toml", &playbook(&checks, "1s"));
    let (out, r) = d.drill(&pb, &d.env.path("r.json"));
    assert_eq!(code(&out), Some(21), "{}", stdout(&out));
    assert_eq!(r["outcome"], "target-missed");
    assert_eq!(r["rto_met"], false);
    let text = stdout(&out);
    assert!(text.contains("RTO missed by "), "{text}");
    let rto = r["rto_seconds"].as_f64().unwrap();
    assert!(rto > 1.5, "{rto}");
    d.assert_no_scratch_left();
}

#[test]
fn rpo_missed_exits_21() {
    let d = Drill::new();
    std::thread::sleep(Duration::from_millis(1100));
    let pb = d.playbook(
        "pb.toml",
        &playbook(FILES, "15m").replace("rpo = \"26h\"", "rpo = \"1s\""),
    );
    let (out, r) = d.drill(&pb, &d.env.path("r.json"));
    assert_eq!(code(&out), Some(21), "{}", stdout(&out));
    assert_eq!(r["rpo_met"], false);
    assert!(stdout(&out).contains("RPO missed by "), "{}", stdout(&out));
}

#[test]
fn corrupted_pack_fails_and_names_it() {
    let d = Drill::new();
    let pack = packs(&d.env.repo).into_iter().next().unwrap();
    let name = pack.file_name().unwrap().to_string_lossy().into_owned();
    let mut bytes = fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(&pack, &bytes).unwrap();
    let pb = d.playbook("pb.toml", &playbook(FILES, "15m"));
    let (out, r) = d.drill(&pb, &d.env.path("r.json"));
    assert_eq!(code(&out), Some(20), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(r["outcome"], "check-failed");
    let text = stdout(&out);
    assert!(
        text.contains(&name),
        "the damaged pack {name} is not named: {text}"
    );
    assert!(r["verification_record"].is_null());
    d.assert_no_scratch_left();
}

#[test]
fn no_snapshot_exits_22_before_any_check() {
    let d = Drill::new();
    let pb = d.playbook(
        "pb.toml",
        &playbook(FILES, "15m").replace("\"docs\"", "\"mail\""),
    );
    let (out, r) = d.drill(&pb, &d.env.path("r.json"));
    assert_eq!(code(&out), Some(22), "{}", stdout(&out));
    assert_eq!(r["outcome"], "error");
    assert!(stdout(&out).contains("no snapshot"), "{}", stdout(&out));
    // The attempt is recorded too.
    assert!(d
        .env
        .repo
        .join("drills")
        .join(r["id"].as_str().unwrap())
        .is_file());
    // A repository that cannot be opened is the same class of failure.
    let out = d
        .env
        .cmd()
        .env("HOLDFAST_REPOSITORY", d.env.path("nowhere"))
        .args(["drill".as_ref(), "run".as_ref(), pb.as_os_str()])
        .output()
        .unwrap();
    assert_eq!(code(&out), Some(22), "{}", stderr(&out));
}

#[test]
fn timeout_stops_tears_down_and_exits_22() {
    let d = Drill::new();
    let marker = d.env.path("still-running");
    let checks = format!(
        "{FILES}[[check]]\nkind = \"command\"\nrun = \"sleep 30; touch {}\"\n",
        marker.display()
    );
    let pb = d.playbook(
        "pb.toml",
        &playbook(&checks, "1s").replace("rpo = \"26h\"", "rpo = \"26h\"\ntimeout = \"2s\""),
    );
    let started = Instant::now();
    let (out, r) = d.drill(&pb, &d.env.path("r.json"));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the timeout did not stop the drill"
    );
    assert_eq!(code(&out), Some(22), "{}", stdout(&out));
    assert!(r["error"].as_str().unwrap().contains("timed out"), "{r}");
    d.assert_no_scratch_left();
    // The command's process group was killed with it.
    std::thread::sleep(Duration::from_millis(500));
    let ps = std::process::Command::new("pgrep")
        .args(["-f", "sleep 30; touch"])
        .output()
        .unwrap();
    assert!(
        ps.stdout.is_empty(),
        "command left running: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
    assert!(!marker.exists());
}

#[test]
fn sigint_mid_drill_tears_down_and_exits_130() {
    let d = Drill::new();
    let checks = format!("{FILES}[[check]]\nkind = \"command\"\nrun = \"sleep 20\"\n");
    let pb = d.playbook("pb.toml", &playbook(&checks, "15m"));
    let child = d
        .env
        .cmd()
        .env("TMPDIR", &d.scratch)
        .args(["drill".as_ref(), "run".as_ref(), pb.as_os_str()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the scratch directory exists (the restore has begun).
    let deadline = Instant::now() + Duration::from_secs(20);
    while fs::read_dir(&d.scratch).unwrap().next().is_none() {
        assert!(Instant::now() < deadline, "no scratch directory appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), Some(130), "{}{}", stdout(&out), stderr(&out));
    d.assert_no_scratch_left();
}

#[test]
fn playbook_names_the_repository() {
    let d = Drill::new();
    let body = format!(
        "repository = \"{}\"\n{}",
        d.env.repo.display(),
        playbook(FILES, "15m")
    );
    let pb = d.playbook("pb.toml", &body);
    let out = d
        .env
        .cmd()
        .env_remove("HOLDFAST_REPOSITORY")
        .env("TMPDIR", &d.scratch)
        .args(["drill".as_ref(), "run".as_ref(), pb.as_os_str()])
        .output()
        .unwrap();
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
}

#[test]
fn invalid_playbooks_exit_2_naming_file_line_and_column() {
    let d = Drill::new();
    let pb = d.playbook("bad.toml", &playbook(FILES, "15 minutes"));
    let out = d.run(&["drill".as_ref(), "validate".as_ref(), pb.as_os_str()]);
    assert_eq!(code(&out), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{}:11:7: rto: bad duration", pb.display())),
        "{err}"
    );
    // run refuses it the same way, before touching the repository.
    let (out, _) = d.drill(&pb, &d.env.path("r.json"));
    assert_eq!(code(&out), Some(2));
    assert!(!d.env.repo.join("drills").exists());
}

#[test]
fn shipped_playbooks_are_valid() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../playbooks");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    for name in [
        "nightly-documents.toml",
        "weekly-ehr-pitr.toml",
        "quarterly-full-dr.toml",
    ] {
        assert!(
            files.iter().any(|f| f.ends_with(name)),
            "playbooks/{name} is missing"
        );
    }
    let env = Env::new();
    let mut args: Vec<std::ffi::OsString> = vec!["drill".into(), "validate".into()];
    args.extend(files.iter().map(|f| f.clone().into_os_string()));
    let out = env.run(&args);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
}

#[test]
fn html_report_renders_in_chromium() {
    let d = Drill::new();
    let checks = format!("{FILES}[[check]]\nkind = \"command\"\nname = \"<script>alert(1)</script>\"\nrun = \"true\"\n");
    let pb = d.playbook("pb.toml", &playbook(&checks, "15m"));
    // A drill before, for the chart.
    let (out, _) = d.drill(&pb, &d.env.path("first.json"));
    assert_eq!(code(&out), Some(0));
    let html = d.env.path("report.html");
    let out = d.run(&[
        "drill".as_ref(),
        "run".as_ref(),
        pb.as_os_str(),
        "--report-html".as_ref(),
        html.as_os_str(),
    ]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let page = fs::read_to_string(&html).unwrap();
    // Self-contained: nothing is fetched from anywhere.
    for bad in ["<script", "<link", " src=", "url(", "@import"] {
        assert!(!page.contains(bad), "the report contains {bad:?}");
    }
    let profile = d.env.path("chromium-profile");
    let url = format!("file://{}", html.display());
    // The DOM as the browser built it.
    let dom = stdout(&chromium(&profile, &["--dump-dom", &url]));
    assert!(dom.contains("data-outcome=\"passed\""), "{dom}");
    assert_eq!(
        dom.matches("class=\"check\"").count(),
        3,
        "one row per check"
    );
    assert_eq!(dom.matches("data-passed=\"true\"").count(), 3);
    assert_eq!(
        dom.matches("class=\"rto-bar\"").count(),
        2,
        "one bar per drill"
    );
    assert!(
        dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "names are escaped"
    );
    assert!(dom.contains("id=\"forecast\""));
    // Nothing overflows sideways at phone or desktop width, and the
    // screenshots at both widths are pictures of something, not blank.
    assert_fits_widths(d.env.dir.path(), &profile, &url, &[390, 1280]);
    screenshots_not_blank(d.env.dir.path(), &profile, &html, &[390, 1280], 1800);
}

// ---- drill approve: signed reviews of drill reports ----

impl Drill {
    /// A new key pair `name` (`signer keygen`); registered as signer
    /// `signer` with `printed` as the printed name when `signer` is given.
    fn signer(&self, name: &str, signer: Option<(&str, &str)>) -> PathBuf {
        let key = self.env.path(name);
        self.env
            .ok(["signer", "keygen", "--out", key.to_str().unwrap()]);
        if let Some((who, printed)) = signer {
            let public = self.env.path(&format!("{name}.pub"));
            self.env.ok([
                "signer",
                "add",
                who,
                "--public-key",
                public.to_str().unwrap(),
                "--printed-name",
                printed,
            ]);
        }
        key
    }

    fn approve(&self, id: &str, key: &Path, extra: &[&str]) -> Output {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "drill".as_ref(),
            "approve".as_ref(),
            id.as_ref(),
            "--sign-key".as_ref(),
            key.as_os_str(),
        ];
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        self.run(&args)
    }

    /// The `drill approve` entries on the audit trail.
    fn approvals_on_trail(&self) -> Vec<serde_json::Value> {
        self.env
            .json(["audit", "log", "--operation", "drill approve"])
            .as_array()
            .unwrap()
            .clone()
    }

    fn passing_drill(&self) -> String {
        let pb = self.playbook("pb.toml", &playbook(FILES, "15m"));
        let (out, r) = self.drill(&pb, &self.env.path("r.json"));
        assert_eq!(code(&out), Some(0), "{}", stderr(&out));
        r["id"].as_str().unwrap().to_string()
    }
}

#[test]
fn approving_a_passing_drill_signs_it_on_the_audit_trail_and_history_shows_it() {
    let d = Drill::new();
    let id = d.passing_drill();
    let key = d.signer("jroe.key", Some(("jroe", "Dr. Jane Roe")));
    let out = d.approve(&id, &key, &["--json"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["drill"], id.as_str());
    assert_eq!(done["outcome"], "passed");
    assert_eq!(done["signer"], "jroe");
    let digest = done["report_blake3"].as_str().unwrap().to_string();
    assert_eq!(digest.len(), 64, "{done}");
    assert!(digest.bytes().all(|b| b.is_ascii_hexdigit()));
    let meaning =
        format!("approval of drill report {id} (playbook nightly-documents, outcome passed)");
    assert_eq!(done["meaning"], meaning.as_str());

    // One signed entry naming the drill and the report's digest.
    let trail = d.approvals_on_trail();
    assert_eq!(trail.len(), 1, "{trail:?}");
    let e = &trail[0];
    assert_eq!(e["outcome"], "success");
    assert_eq!(e["signed"]["signer"], "jroe");
    assert_eq!(e["signed"]["printed_name"], "Dr. Jane Roe");
    assert_eq!(e["signed"]["meaning"], meaning.as_str());
    assert_eq!(e["signature"].as_str().unwrap().len(), 128);
    assert_eq!(e["args"]["report_blake3"], digest.as_str());
    assert!(
        e["objects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["kind"] == "drill" && o["id"] == id.as_str()),
        "{e}"
    );
    assert_eq!(e["seq"], done["audit_seq"]);
    // `audit verify` checks the signature.
    let verify = d.env.run(["audit", "verify"]);
    assert_eq!(code(&verify), Some(0), "{}", stdout(&verify));
    assert!(
        stdout(&verify).contains("1 signature(s) verified"),
        "{}",
        stdout(&verify)
    );

    // History says who approved and when, in both forms.
    let h = d.env.json(["drill", "history"]);
    let ap = &h["drills"][0]["approvals"];
    assert_eq!(ap.as_array().unwrap().len(), 1, "{h}");
    assert_eq!(ap[0]["signer"], "jroe");
    assert_eq!(ap[0]["printed_name"], "Dr. Jane Roe");
    assert_eq!(ap[0]["verified"], true, "{ap}");
    assert_eq!(ap[0]["report_blake3"], digest.as_str());
    assert_eq!(ap[0]["time"], e["time"]);
    let when = &e["time"].as_str().unwrap()[..19].replace('T', " ");
    let plain = stdout(&d.env.ok(["drill", "history"]));
    assert!(
        plain.contains(&format!("approved by Dr. Jane Roe (jroe) at {when} UTC")),
        "{plain}"
    );

    // The same signer again: refused, nothing more on the trail.
    let again = d.approve(&id, &key, &[]);
    assert_ne!(code(&again), Some(0));
    assert!(
        stderr(&again).contains("already") && stderr(&again).contains("Dr. Jane Roe"),
        "{}",
        stderr(&again)
    );
    assert_eq!(d.approvals_on_trail().len(), 1);

    // A second reviewer may add theirs, with their own meaning.
    let key2 = d.signer("rsmith.key", Some(("rsmith", "Rob Smith, CISO")));
    let out = d.approve(
        &id,
        &key2,
        &["--meaning", "reviewed for the Q4 HIPAA contingency test"],
    );
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("approved by Rob Smith, CISO (rsmith)"),
        "{}",
        stdout(&out)
    );
    let trail = d.approvals_on_trail();
    assert_eq!(trail.len(), 2);
    assert_eq!(
        trail[1]["signed"]["meaning"],
        "reviewed for the Q4 HIPAA contingency test"
    );
    let h = d.env.json(["drill", "history"]);
    let signers: Vec<&str> = h["drills"][0]["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["signer"].as_str().unwrap())
        .collect();
    assert_eq!(signers, ["jroe", "rsmith"]);
    let verify = d.env.run(["audit", "verify"]);
    assert!(
        stdout(&verify).contains("2 signature(s) verified"),
        "{}",
        stdout(&verify)
    );
}

#[test]
fn approving_an_unknown_drill_or_with_a_wrong_key_is_refused_and_records_nothing() {
    let d = Drill::new();
    let id = d.passing_drill();
    let key = d.signer("jroe.key", Some(("jroe", "Dr. Jane Roe")));
    // Well formed but not in this repository.
    let out = d.approve("20200101T000000Z-0badc0de", &key, &[]);
    assert_ne!(code(&out), Some(0));
    assert!(
        stderr(&out).contains("no drill 20200101T000000Z-0badc0de"),
        "{}",
        stderr(&out)
    );
    // Not a drill id at all.
    let out = d.approve("D-3", &key, &[]);
    assert_ne!(code(&out), Some(0));
    assert!(stderr(&out).contains("not a drill id"), "{}", stderr(&out));
    // A key nobody registered.
    let stranger = d.signer("stranger.key", None);
    let out = d.approve(&id, &stranger, &[]);
    assert_ne!(code(&out), Some(0));
    assert!(
        stderr(&out).contains("not a registered signer"),
        "{}",
        stderr(&out)
    );
    // The registered key, but readable by others.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let out = d.approve(&id, &key, &[]);
    assert_ne!(code(&out), Some(0));
    assert!(
        stderr(&out).contains("refusing to sign"),
        "{}",
        stderr(&out)
    );
    // An empty meaning.
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let out = d.approve(&id, &key, &["--meaning", "  "]);
    assert_ne!(code(&out), Some(0));
    assert!(stderr(&out).contains("--meaning"), "{}", stderr(&out));
    // None of these left an approval anywhere.
    assert!(d.approvals_on_trail().is_empty());
    let h = d.env.json(["drill", "history"]);
    assert!(h["drills"][0]["approvals"].is_null(), "{h}");
    let verify = d.env.run(["audit", "verify"]);
    assert_eq!(code(&verify), Some(0), "{}", stdout(&verify));
}

// ---- the full-site RTO verdict, from real drills ----

#[test]
fn site_rto_verdict_from_real_drills_missed_then_met() {
    let d = Drill::new();
    // A second, larger source nobody drills, and a tiny one that is
    // drilled: the tiny restore's throughput is all fixed cost, so the
    // forecast for the whole site (every source's newest snapshot at that
    // throughput) is far beyond one second.
    let bulk = d.env.path("bulk");
    fs::create_dir_all(&bulk).unwrap();
    fs::write(bulk.join("ledger.txt"), text(8_000_000, 5)).unwrap();
    d.env.ok([
        "backup".as_ref(),
        "--source".as_ref(),
        "bulk".as_ref(),
        bulk.as_os_str(),
    ]);
    let tiny = d.env.path("tiny");
    fs::create_dir_all(&tiny).unwrap();
    fs::write(tiny.join("one.txt"), b"sixteen bytes!!\n").unwrap();
    d.env.ok([
        "backup".as_ref(),
        "--source".as_ref(),
        "tiny".as_ref(),
        tiny.as_os_str(),
    ]);
    let site = |site_rto: &str| {
        format!(
            r#"name = "site-check"
[snapshot]
source = "tiny"
pick = "latest"
[target]
kind = "directory"
[[check]]
kind = "files"
[objectives]
rto = "15m"
rpo = "26h"
site_rto = "{site_rto}"
"#
        )
    };
    let pb = d.playbook("site-miss.toml", &site("1s"));
    let (out, r) = d.drill(&pb, &d.env.path("miss.json"));
    // The site forecast does not decide the drill's exit code: the drill
    // itself passed; the verdict is in the report and the history.
    assert_eq!(code(&out), Some(0), "{}{}", stdout(&out), stderr(&out));
    let f = &r["forecast"];
    assert_eq!(f["site_rto_seconds"], 1, "{f}");
    assert_eq!(f["complete"], true, "{f}");
    assert_eq!(f["meets_site_rto"], false, "{f}");
    let total = f["total_seconds"].as_f64().unwrap();
    assert!(total > 1.0, "{f}");
    let sources: Vec<&str> = f["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["bulk", "docs", "tiny"], "{f}");
    // The per-source figures add up to the total.
    let sum: f64 = f["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["seconds"].as_f64().unwrap())
        .sum();
    assert!((sum - total).abs() < 1e-6 * total.max(1.0), "{f}");
    assert!(
        stdout(&out).contains("target 1s (NOT MET)"),
        "{}",
        stdout(&out)
    );
    let h = d.env.json(["drill", "history"]);
    assert_eq!(h["forecast"]["meets_site_rto"], false, "{h}");
    assert_eq!(h["forecast"]["site_rto_seconds"], 1);
    assert_eq!(h["drills"][0]["forecast"]["meets_site_rto"], false);
    let plain = stdout(&d.env.ok(["drill", "history"]));
    assert!(plain.contains("(NOT MET)"), "{plain}");

    // The same site with a generous target: met, and history follows the
    // newest drill's target.
    let pb = d.playbook("site-met.toml", &site("30d"));
    let (out, r) = d.drill(&pb, &d.env.path("met.json"));
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(r["forecast"]["meets_site_rto"], true, "{}", r["forecast"]);
    assert!(
        stdout(&out).contains("target 30d (met)"),
        "{}",
        stdout(&out)
    );
    let h = d.env.json(["drill", "history"]);
    assert_eq!(h["forecast"]["meets_site_rto"], true, "{h}");
    assert_eq!(h["forecast"]["site_rto_seconds"], 30 * 86_400);
    // The first drill's record keeps its own verdict.
    assert_eq!(h["drills"][0]["forecast"]["meets_site_rto"], false);
    assert_eq!(h["drills"][1]["forecast"]["meets_site_rto"], true);
    let plain = stdout(&d.env.ok(["drill", "history"]));
    assert!(plain.contains("target 30d (met)"), "{plain}");
}
