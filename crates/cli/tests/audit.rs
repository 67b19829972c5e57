//! The audit trail through the real binary: what operations record (PHI
//! access by restores included), `audit log` filters, the exports, and
//! `audit verify` against every kind of tampering with the stored objects
//! (an edited, deleted, reordered, inserted or truncated entry), each
//! named, exit 4. Concurrent writers in separate processes, and S3.

mod common;
#[path = "../../s3/tests/harness/mod.rs"]
mod harness;

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

use common::*;
use serde_json::Value;

/// A repository with its own cache (and so its own witness) directory.
struct Trail {
    env: Env,
    cache: PathBuf,
    src: PathBuf,
}

impl Trail {
    fn new() -> Trail {
        let env = Env::new();
        let cache = env.path("cache");
        let src = env.path("src");
        fs::create_dir_all(src.join("patients")).unwrap();
        fs::write(src.join("patients/smith.txt"), text(20_000, 1)).unwrap();
        fs::write(src.join("index.html"), text(5_000, 2)).unwrap();
        Trail { env, cache, src }
    }

    fn cmd(&self) -> Command {
        let mut c = self.env.cmd();
        c.env("HOLDFAST_CACHE_DIR", &self.cache)
            .env_remove("HOLDFAST_ACTOR");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "holdfast {args:?}\nstdout: {}\nstderr: {}",
            stdout(&out),
            stderr(&out)
        );
        out
    }

    fn entry(&self, seq: u64) -> PathBuf {
        self.env.repo.join("audit").join(format!("{seq:020}"))
    }

    fn log(&self, extra: &[&str]) -> Vec<Value> {
        let mut args = vec!["audit", "log", "--json"];
        args.extend_from_slice(extra);
        let out = self.ok(&args);
        serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
    }

    /// `audit verify`: exit code and stdout.
    fn verify(&self) -> (Option<i32>, String) {
        let out = self.run(&["audit", "verify"]);
        (out.status.code(), stdout(&out))
    }

    fn assert_intact(&self) {
        let (code, out) = self.verify();
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains("audit trail intact"), "{out}");
    }

    /// Verify must fail (exit 4) and name every entry in `names` with
    /// `what` on its line.
    fn assert_broken(&self, named: &[u64], what: &str) {
        let (code, out) = self.verify();
        assert_eq!(code, Some(4), "{out}");
        assert!(out.contains("audit trail BROKEN"), "{out}");
        for seq in named {
            let key = format!("audit/{seq:020}");
            assert!(
                out.lines().any(|l| l.contains(&key) && l.contains(what)),
                "entry {seq} not named with {what:?}:\n{out}"
            );
        }
    }

    /// init, backup, backup, restore (started, success), backup: six
    /// entries; the last snapshot recorded the head at entry 5.
    fn history(&self) {
        self.env.init();
        let src = self.src.to_str().unwrap();
        self.ok(&["backup", src]);
        fs::write(self.src.join("index.html"), text(5_000, 3)).unwrap();
        self.ok(&["backup", src]);
        let out = self.env.path("out");
        self.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
        fs::write(self.src.join("index.html"), text(5_000, 4)).unwrap();
        self.ok(&["backup", src]);
        assert_eq!(self.log(&[]).len(), 6);
    }

    /// A copy of everything under `audit/`, to put back between tampers.
    fn save(&self) -> Vec<(PathBuf, Vec<u8>)> {
        fs::read_dir(self.env.repo.join("audit"))
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let b = fs::read(&p).unwrap();
                (p, b)
            })
            .collect()
    }

    fn restore(&self, saved: &[(PathBuf, Vec<u8>)]) {
        let dir = self.env.repo.join("audit");
        fs::remove_dir_all(&dir).unwrap();
        fs::create_dir_all(&dir).unwrap();
        for (p, b) in saved {
            fs::write(p, b).unwrap();
        }
        self.assert_intact();
    }
}

fn ops(entries: &[Value]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|e| {
            (
                e["operation"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn touched(e: &Value, kind: &str) -> Vec<String> {
    e["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["kind"] == kind)
        .map(|o| o["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn operations_are_recorded_with_actor_and_restores_name_what_and_where() {
    let t = Trail::new();
    t.env.init();
    let src = t.src.to_str().unwrap();
    let backup = t.ok(&["backup", src, "--json"]);
    let snap = serde_json::from_slice::<Value>(&backup.stdout).unwrap()["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let key = t.env.path("second.key");
    t.ok(&["key", "add", "--new-key-file", key.to_str().unwrap()]);
    let out = t.env.path("restored");
    let include = t.src.join("patients");
    let restored = t
        .cmd()
        .env("HOLDFAST_ACTOR", "dr.jones@clinic.example")
        .args([
            "restore",
            &snap[..12],
            "--target",
            out.to_str().unwrap(),
            "--include",
            include.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(restored.status.code(), Some(0), "{}", stderr(&restored));
    // A restore that fails is on the trail too.
    let bad = t.run(&["restore", "feedbeef", "--target", out.to_str().unwrap()]);
    assert_ne!(bad.status.code(), Some(0));

    let log = t.log(&[]);
    assert_eq!(
        ops(&log),
        [
            ("init", "success"),
            ("backup", "success"),
            ("key add", "success"),
            ("restore", "started"),
            ("restore", "success"),
            ("restore", "failure"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    for (i, e) in log.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1);
        assert_eq!(e["hash"].as_str().unwrap().len(), 64);
    }
    // The actor: HOLDFAST_ACTOR, else user@host.
    assert!(log[0]["actor"].as_str().unwrap().contains('@'));
    assert_eq!(log[3]["actor"], "dr.jones@clinic.example");
    assert_eq!(log[4]["actor"], "dr.jones@clinic.example");
    // The backup names its paths and snapshot.
    assert_eq!(touched(&log[1], "snapshot"), std::slice::from_ref(&snap));
    assert_eq!(touched(&log[1], "path"), [src.to_string()]);
    // PHI access: before the data, which snapshot, which paths, to where.
    for e in &log[3..5] {
        assert_eq!(touched(e, "snapshot"), std::slice::from_ref(&snap));
        assert_eq!(touched(e, "path"), [include.to_str().unwrap().to_string()]);
        assert_eq!(touched(e, "target"), [out.to_str().unwrap().to_string()]);
    }
    assert_eq!(log[4]["args"]["files"], 1);
    assert!(log[5]["error"].as_str().unwrap().contains("feedbeef"));
    // No secret anywhere: neither the password nor the key file's key.
    let all = serde_json::to_string(&log).unwrap();
    assert!(!all.contains(PASSWORD));
    let key_hex = fs::read_to_string(&key).unwrap();
    assert!(!all.contains(key_hex.trim()));

    // Filters.
    assert_eq!(ops(&t.log(&["--operation", "restore"])).len(), 3);
    assert_eq!(ops(&t.log(&["--operation", "key"])).len(), 1);
    assert_eq!(ops(&t.log(&["--operation", "ke"])).len(), 0);
    assert_eq!(t.log(&["--since", "2999-01-01"]).len(), 0);
    assert_eq!(t.log(&["--since", "2000-01-01T00:00:00Z"]).len(), 6);
    let bad_since = t.run(&["audit", "log", "--since", "yesterday"]);
    assert_ne!(bad_since.status.code(), Some(0));
    assert!(
        stderr(&bad_since).contains("yesterday"),
        "{}",
        stderr(&bad_since)
    );

    // Text log: one line per entry, control characters escaped.
    let text_log = stdout(&t.ok(&["audit", "log"]));
    assert_eq!(text_log.lines().count(), 6, "{text_log}");
    t.assert_intact();
}

/// A minimal RFC 4180 reader: fields, quotes doubled inside quotes.
fn parse_csv(s: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    rows
}

#[test]
fn export_jsonl_and_csv_round_trip_awkward_values() {
    let t = Trail::new();
    t.env.init();
    // A source name with a comma, quotes and a line break.
    let awkward = "ward 3, \"east\"\nwing";
    t.ok(&["backup", t.src.to_str().unwrap(), "--source", awkward]);
    let log = t.log(&[]);

    let jsonl = stdout(&t.ok(&["audit", "export", "--format", "jsonl"]));
    let lines: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, log);

    let file = t.env.path("trail.csv");
    t.ok(&[
        "audit",
        "export",
        "--format",
        "csv",
        "--output",
        file.to_str().unwrap(),
    ]);
    let rows = parse_csv(&fs::read_to_string(&file).unwrap());
    assert_eq!(rows.len(), 3, "{rows:?}");
    let header = &rows[0];
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert_eq!(rows[2][col("operation")], "backup");
    assert_eq!(rows[2][col("seq")], "2");
    assert_eq!(rows[2][col("hash")], log[1]["hash"].as_str().unwrap());
    assert_eq!(rows[2][col("prev")], log[0]["hash"].as_str().unwrap());
    let args: Value = serde_json::from_str(&rows[2][col("args")]).unwrap();
    assert_eq!(args["source"], awkward);
    // Never over an existing file.
    let again = t.run(&[
        "audit",
        "export",
        "--format",
        "csv",
        "--output",
        file.to_str().unwrap(),
    ]);
    assert_ne!(again.status.code(), Some(0));
    let bad = t.run(&["audit", "export", "--format", "xml"]);
    assert!(stderr(&bad).contains("xml"), "{}", stderr(&bad));
}

#[test]
fn an_edited_entry_is_named_wherever_it_is() {
    let t = Trail::new();
    t.history();
    let saved = t.save();
    for seq in 1..=6 {
        let p = t.entry(seq);
        let orig = fs::read(&p).unwrap();
        // A byte of the sealed header (the bound name), of the
        // ciphertext and of the tag.
        for at in [10, orig.len() / 2, orig.len() - 1] {
            let mut b = orig.clone();
            b[at] ^= 0x20;
            fs::write(&p, &b).unwrap();
            t.assert_broken(&[seq], "cannot be opened");
        }
        t.restore(&saved);
    }
}

#[test]
fn a_deleted_entry_is_named() {
    let t = Trail::new();
    t.history();
    let saved = t.save();
    for seq in 1..=5 {
        fs::remove_file(t.entry(seq)).unwrap();
        t.assert_broken(&[seq], "missing");
        t.restore(&saved);
    }
    // Two in a row: named as a range.
    fs::remove_file(t.entry(2)).unwrap();
    fs::remove_file(t.entry(3)).unwrap();
    let (code, out) = t.verify();
    assert_eq!(code, Some(4));
    assert!(out.contains("2 entries before entry 4 deleted"), "{out}");
}

#[test]
fn reordered_entries_are_both_named() {
    let t = Trail::new();
    t.history();
    let saved = t.save();
    for seq in 1..=5 {
        let (a, b) = (t.entry(seq), t.entry(seq + 1));
        let (ba, bb) = (fs::read(&a).unwrap(), fs::read(&b).unwrap());
        fs::write(&a, &bb).unwrap();
        fs::write(&b, &ba).unwrap();
        t.assert_broken(&[seq, seq + 1], "renamed, swapped or copied");
        t.restore(&saved);
    }
}

#[test]
fn inserted_entries_are_named() {
    let t = Trail::new();
    t.history();
    let saved = t.save();
    // A forged object at the next number (no key: random bytes in the
    // envelope's shape).
    let mut forged = fs::read(t.entry(6)).unwrap();
    for b in forged.iter_mut().skip(60) {
        *b = b.wrapping_mul(31).wrapping_add(7);
    }
    fs::write(t.entry(7), &forged).unwrap();
    t.assert_broken(&[7], "cannot be opened");
    t.restore(&saved);
    // A genuine entry copied to a new number.
    fs::copy(t.entry(3), t.entry(7)).unwrap();
    t.assert_broken(&[7], "renamed, swapped or copied");
    t.restore(&saved);
    // A genuine entry copied over another (a replacement).
    fs::copy(t.entry(3), t.entry(5)).unwrap();
    t.assert_broken(&[5], "renamed, swapped or copied");
    t.restore(&saved);
    // Something that is not an entry's name at all.
    fs::copy(t.entry(3), t.env.repo.join("audit/extra")).unwrap();
    let (code, out) = t.verify();
    assert_eq!(code, Some(4), "{out}");
    assert!(out.contains("audit/extra"), "{out}");
}

#[test]
fn a_truncated_tail_is_named_by_the_witness_and_by_snapshots() {
    let t = Trail::new();
    t.history();
    let saved = t.save();
    // The last entry: no snapshot recorded it; this machine's witness did.
    fs::remove_file(t.entry(6)).unwrap();
    t.assert_broken(&[6], "witness recorded the trail up to entry 6");
    t.restore(&saved);
    // Without the witness (another machine, or a deleted cache), the
    // last snapshot's recorded head still shows a deeper truncation.
    fs::remove_file(t.entry(6)).unwrap();
    fs::remove_file(t.entry(5)).unwrap();
    let elsewhere = Trail {
        env: Env {
            dir: tempfile::tempdir().unwrap(),
            repo: t.env.repo.clone(),
        },
        cache: t.env.path("other-cache"),
        src: t.src.clone(),
    };
    let (code, out) = elsewhere.verify();
    assert_eq!(code, Some(4), "{out}");
    assert!(
        out.contains("audit/00000000000000000005")
            && out.contains("recorded the trail up to entry 5")
            && out.contains("snapshot "),
        "{out}"
    );
    // And the witness keeps naming it on this machine.
    t.assert_broken(&[6], "witness");
}

#[test]
fn concurrent_writers_in_two_processes_keep_one_linear_chain() {
    let t = Trail::new();
    t.env.init();
    let n = 8;
    // Separate caches: each process's witness lags behind the other's
    // appends, so they race for the same numbers.
    let spawn = |tag: &str| {
        let mut c = Command::new("/bin/sh");
        let script = format!(
            "for i in $(seq 1 {n}); do mkdir -p {dir}/$i && echo {tag}$i > {dir}/$i/f && {bin} backup -q {dir}/$i || exit 1; done",
            dir = t.env.path(tag).display(),
            bin = BIN,
        );
        c.env("HOLDFAST_REPOSITORY", &t.env.repo)
            .env("HOLDFAST_PASSWORD", PASSWORD)
            .env("HOLDFAST_CACHE_DIR", t.env.path(&format!("cache-{tag}")))
            .args(["-c", &script]);
        c.spawn().unwrap()
    };
    let mut a = spawn("a");
    let mut b = spawn("b");
    assert!(a.wait().unwrap().success());
    assert!(b.wait().unwrap().success());
    let log = t.log(&[]);
    assert_eq!(
        log.len(),
        1 + 2 * n,
        "{}",
        serde_json::to_string(&log).unwrap()
    );
    for (i, e) in log.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1, "no gap, no duplicate");
        if i > 0 {
            assert_eq!(e["prev"], log[i - 1]["hash"], "linear chain at {}", i + 1);
        }
    }
    assert_eq!(
        log.iter().filter(|e| e["operation"] == "backup").count(),
        2 * n
    );
    t.assert_intact();
}

#[test]
fn audit_trail_on_s3_appends_and_verifies() {
    use harness::Moto;
    let moto = Moto::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(moto.create_lock_bucket("audit-bucket"));
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("chart.txt"), text(10_000, 5)).unwrap();
    let url = "s3://audit-bucket/clinic";
    let hf = |cache: &str| {
        let mut c = Command::new(BIN);
        c.env("HOLDFAST_REPOSITORY", url)
            .env("HOLDFAST_PASSWORD", PASSWORD)
            .env("HOLDFAST_CACHE_DIR", env.path(cache))
            .env("HOLDFAST_S3_ENDPOINT", moto.endpoint())
            .env("HOLDFAST_S3_PATH_STYLE", "true")
            .env("HOLDFAST_S3_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env_remove("HOLDFAST_PASSWORD_FILE")
            .stdin(std::process::Stdio::null());
        c
    };
    let ok = |cache: &str, args: &[&str]| {
        let out = hf(cache).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        out
    };
    ok(
        "c1",
        &[
            "init",
            "--lock-mode",
            "governance",
            "--lock-days",
            "1",
            "--kdf-memory-mib",
            "8",
            "--kdf-iterations",
            "1",
        ],
    );
    ok("c1", &["backup", src.to_str().unwrap()]);
    // A second machine (no witness) appends after probing for the head.
    ok("c2", &["backup", src.to_str().unwrap()]);
    let out = env.path("out");
    ok(
        "c1",
        &["restore", "latest", "--target", out.to_str().unwrap()],
    );
    let log: Vec<Value> =
        serde_json::from_slice(&ok("c2", &["audit", "log", "--json"]).stdout).unwrap();
    assert_eq!(
        ops(&log),
        [
            ("init", "success"),
            ("backup", "success"),
            ("backup", "success"),
            ("restore", "started"),
            ("restore", "success"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let verified = stdout(&ok("c1", &["audit", "verify"]));
    assert!(verified.contains("intact: 5 entries"), "{verified}");
    // Audit objects are WORM like every other object.
    let admin = moto.admin();
    let key = "clinic/audit/00000000000000000002";
    let head = rt
        .block_on(admin.head_object().bucket("audit-bucket").key(key).send())
        .unwrap();
    assert!(head.object_lock_retain_until_date().is_some());
    assert_eq!(
        head.object_lock_mode().map(|m| m.as_str()),
        Some("GOVERNANCE")
    );
    let version = head.version_id().unwrap().to_string();
    let deleted = rt.block_on(
        admin
            .delete_object()
            .bucket("audit-bucket")
            .key(key)
            .version_id(version)
            .send(),
    );
    assert!(deleted.is_err(), "a retained audit entry was deleted");
}
