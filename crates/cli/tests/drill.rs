//! `holdfast drill validate|run|history` with directory targets: a passing
//! drill leaves its record, a verification record and no scratch
//! directory; a failed check, a missed RTO, a corrupted pack, a missing
//! snapshot, the timeout and SIGINT each end with their own exit code and
//! a report that says what happened; the shipped playbooks are valid.

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

/// Run headless Chromium with `args` and a profile of its own.
fn chromium(profile: &Path, args: &[&str]) -> Output {
    let out = std::process::Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("chromium is needed for the report test: apt-get install chromium (scripts/test.sh does)");
    assert!(out.status.success(), "chromium failed: {}", stderr(&out));
    out
}

/// The width in a PNG's header.
fn png_width(png: &[u8]) -> u32 {
    assert_eq!(png.get(..8), Some(&b"\x89PNG\r\n\x1a\n"[..]), "not a PNG");
    let w = png.get(16..20).expect("IHDR");
    u32::from_be_bytes([w[0], w[1], w[2], w[3]])
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
    // Nothing overflows sideways at phone or desktop width.
    for width in [390, 1280] {
        let wrap = d.env.path(&format!("wrap{width}.html"));
        fs::write(
            &wrap,
            format!(
                "<html><body><iframe id=\"f\" src=\"{url}\" style=\"width:{width}px;height:900px;border:0\"></iframe>\
                 <script>document.getElementById('f').onload=function(){{var e=this.contentDocument.documentElement;\
                 document.body.setAttribute('data-overflow',e.scrollWidth-e.clientWidth);}};</script></body></html>"
            ),
        )
        .unwrap();
        let dom = stdout(&chromium(
            &profile,
            &[
                "--allow-file-access-from-files",
                "--virtual-time-budget=5000",
                "--dump-dom",
                &format!("file://{}", wrap.display()),
            ],
        ));
        assert!(
            dom.contains("data-overflow=\"0\""),
            "the report is wider than {width}px: {}",
            dom.lines()
                .find(|l| l.contains("data-overflow"))
                .unwrap_or("(not measured)")
        );
    }
    // Screenshots at both widths are pictures of something, not blank.
    let blank = d.env.path("blank.html");
    fs::write(&blank, "<html><body></body></html>").unwrap();
    for width in [390u32, 1280] {
        let shot = |page: &Path, name: &str| -> Vec<u8> {
            let png = d.env.path(name);
            chromium(
                &profile,
                &[
                    &format!("--window-size={width},1800"),
                    &format!("--screenshot={}", png.display()),
                    &format!("file://{}", page.display()),
                ],
            );
            fs::read(&png).unwrap()
        };
        let report = shot(&html, &format!("report{width}.png"));
        let empty = shot(&blank, &format!("blank{width}.png"));
        assert_eq!(png_width(&report), width);
        assert!(
            report.len() > 4 * empty.len(),
            "the {width}px screenshot looks blank ({} bytes; a blank page is {})",
            report.len(),
            empty.len()
        );
    }
}
