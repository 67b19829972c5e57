//! The core flow (backup, incremental, restore, check) on S3, through the
//! real binary against a real S3 server (moto) on 127.0.0.1; plus Object
//! Lock repositories and restores from an archival storage class.

mod common;
mod s3cli;

use std::fs;
use std::process::Command;

use common::*;
use s3cli::{hf, ok, runtime, Moto};

fn tree(root: &std::path::Path) {
    fs::create_dir_all(root.join("scans")).unwrap();
    // Larger than the pack size, so packs are multipart uploads.
    fs::write(root.join("scans/big.pdf"), noise(20_000_000, 3)).unwrap();
    fs::write(root.join("notes.txt"), text(3_000_000, 4)).unwrap();
    for i in 0..20 {
        fs::write(
            root.join(format!("scans/page{i}.tif")),
            noise(50_000, 100 + i),
        )
        .unwrap();
    }
}

#[test]
fn backup_restore_check_on_s3() {
    let moto = Moto::start();
    runtime().block_on(moto.create_bucket("holdfast-e2e"));
    let env = Env::new();
    let src = env.path("src");
    tree(&src);
    let url = "s3://holdfast-e2e/clinic/docs";
    ok(
        hf(&moto, url),
        &["init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"],
    );
    let first = ok(hf(&moto, url), &["backup", src.to_str().unwrap(), "--json"]);
    let first: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(first["summary"]["files_new"], 22);
    fs::write(src.join("notes.txt"), text(3_100_000, 5)).unwrap();
    let second = ok(hf(&moto, url), &["backup", src.to_str().unwrap(), "--json"]);
    let second: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(second["summary"]["files_unchanged"], 21, "{second}");
    let target = env.path("restored");
    ok(
        hf(&moto, url),
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    assert_same_tree(&src, &target.join(src.strip_prefix("/").unwrap()));
    let check = ok(hf(&moto, url), &["check", "--read-data", "--json"]);
    let check: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(check["ok"], true, "{check}");
    let snaps = ok(hf(&moto, url), &["snapshots", "--json"]);
    let snaps: serde_json::Value = serde_json::from_slice(&snaps.stdout).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 2);
    // Wrong password and a missing bucket fail clearly here too.
    let wrong = hf(&moto, url)
        .env("HOLDFAST_PASSWORD", "nope")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(12));
    let missing = hf(&moto, "s3://no-such-bucket/x")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_ne!(missing.status.code(), Some(0));
    assert!(
        stderr(&missing).contains("no-such-bucket does not exist"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn object_lock_repository() {
    let moto = Moto::start();
    let rt = runtime();
    rt.block_on(moto.create_bucket("plain-bucket"));
    rt.block_on(moto.create_lock_bucket("worm-bucket"));
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("record.json"), text(100_000, 9)).unwrap();

    let refused = hf(&moto, "s3://plain-bucket/r")
        .args(["init", "--lock-mode", "governance", "--lock-days", "30"])
        .output()
        .unwrap();
    assert_ne!(refused.status.code(), Some(0));
    assert!(
        stderr(&refused).contains("not versioned"),
        "{}",
        stderr(&refused)
    );

    let url = "s3://worm-bucket/r";
    ok(
        hf(&moto, url),
        &[
            "init",
            "--lock-mode",
            "compliance",
            "--lock-days",
            "30",
            "--kdf-memory-mib",
            "8",
            "--kdf-iterations",
            "1",
        ],
    );
    ok(hf(&moto, url), &["backup", src.to_str().unwrap()]);
    // Every object written carries a retain-until date.
    let admin = moto.admin();
    let listed = rt
        .block_on(
            admin
                .list_objects_v2()
                .bucket("worm-bucket")
                .prefix("r/snapshots/")
                .send(),
        )
        .unwrap();
    let key = listed.contents()[0].key().unwrap().to_string();
    let head = rt
        .block_on(admin.head_object().bucket("worm-bucket").key(&key).send())
        .unwrap();
    assert!(
        head.object_lock_retain_until_date().is_some(),
        "snapshot is locked"
    );
    assert_eq!(
        head.object_lock_mode().map(|m| m.as_str()),
        Some("COMPLIANCE")
    );
    let target = env.path("out");
    ok(
        hf(&moto, url),
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    ok(hf(&moto, url), &["check", "--read-data"]);
    let local_lock = Env::new();
    let e = local_lock.run(["init", "--lock-mode", "governance", "--lock-days", "1"]);
    assert!(
        stderr(&e).contains("Object Lock needs an object store"),
        "{}",
        stderr(&e)
    );
}

#[test]
fn restore_from_deep_archive_retrieves_and_reports_the_wait() {
    let moto = Moto::start();
    runtime().block_on(moto.create_bucket("cold-bucket"));
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("old-scan.pdf"), noise(2_000_000, 11)).unwrap();
    let url = "s3://cold-bucket/archive";
    let cold = |c: &mut Command| {
        c.env("HOLDFAST_S3_STORAGE_CLASS_DATA", "DEEP_ARCHIVE");
    };
    let mut c = hf(&moto, url);
    cold(&mut c);
    ok(
        c,
        &["init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"],
    );
    let mut c = hf(&moto, url);
    cold(&mut c);
    ok(c, &["backup", src.to_str().unwrap()]);
    // Data packs are in DEEP_ARCHIVE and unreadable; tree packs stay hot.
    let rt = runtime();
    let admin = moto.admin();
    let objects = rt
        .block_on(
            admin
                .list_objects_v2()
                .bucket("cold-bucket")
                .prefix("archive/data/")
                .send(),
        )
        .unwrap();
    let mut archived = 0;
    for o in objects.contents() {
        let key = o.key().unwrap();
        let head = rt
            .block_on(admin.head_object().bucket("cold-bucket").key(key).send())
            .unwrap();
        if head.storage_class().map(|c| c.as_str()) == Some("DEEP_ARCHIVE") {
            archived += 1;
            let get = rt.block_on(admin.get_object().bucket("cold-bucket").key(key).send());
            assert!(
                get.is_err(),
                "an archived pack cannot be read before a restore"
            );
        }
    }
    assert!(archived >= 1, "data packs are archived");
    assert!(
        objects.contents().len() > archived,
        "the tree pack stays hot"
    );
    // Metadata stays hot: listing and planning need no retrieval.
    ok(hf(&moto, url), &["snapshots"]);
    ok(hf(&moto, url), &["ls", "latest"]);
    let target = env.path("out");
    let out = ok(
        hf(&moto, url),
        &[
            "restore",
            "latest",
            "--target",
            target.to_str().unwrap(),
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["restored"]["retrieval_seconds"].as_f64().unwrap() > 0.0,
        "the wait is reported: {v}"
    );
    assert_eq!(
        fs::read(
            target
                .join(src.strip_prefix("/").unwrap())
                .join("old-scan.pdf")
        )
        .unwrap(),
        noise(2_000_000, 11)
    );
}

/// A 64 MiB backup through a proxy that fails 20% of requests (500s, 503
/// SlowDown, resets, stalls past the timeout, truncated bodies) succeeds
/// and verifies; at 100% the backup fails cleanly within bounded time and
/// the repository still passes `check`.
#[test]
fn backup_through_faults_succeeds_or_fails_cleanly() {
    let moto = Moto::start();
    let rt = runtime();
    rt.block_on(moto.create_bucket("faulty"));
    let proxy = rt.block_on(s3cli::harness::FaultProxy::start(
        moto.port,
        std::time::Duration::from_secs(4),
        7,
    ));
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..16 {
        let data = if i % 4 == 0 {
            text(4_000_000, i)
        } else {
            noise(4_000_000, i)
        };
        fs::write(src.join(format!("doc{i:02}")), data).unwrap();
    }
    let url = "s3://faulty/r";
    let through_proxy = |args: &[&str], attempts: &str| {
        hf(&moto, url)
            .env("HOLDFAST_S3_ENDPOINT", proxy.endpoint())
            .env("HOLDFAST_S3_REQUEST_TIMEOUT", "2")
            .env("HOLDFAST_S3_MAX_ATTEMPTS", attempts)
            .args(args)
            .output()
            .unwrap()
    };
    ok(
        hf(&moto, url),
        &["init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"],
    );

    proxy.set_fault_share(0.2);
    let b = through_proxy(&["backup", src.to_str().unwrap()], "10");
    assert_eq!(
        b.status.code(),
        Some(0),
        "backup through 20% faults: {}",
        stderr(&b)
    );
    let c = through_proxy(&["check", "--read-data"], "10");
    assert_eq!(
        c.status.code(),
        Some(0),
        "check through 20% faults: {}",
        stderr(&c)
    );
    assert!(
        proxy.faults() > 5,
        "faults were injected: {}",
        proxy.faults()
    );

    proxy.set_fault_share(1.0);
    fs::write(src.join("new-today"), noise(5_000_000, 99)).unwrap();
    let started = std::time::Instant::now();
    let failed = through_proxy(&["backup", src.to_str().unwrap()], "3");
    assert_ne!(
        failed.status.code(),
        Some(0),
        "a backup cannot succeed with every request failing"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(240),
        "fails in bounded time"
    );
    assert!(!stderr(&failed).is_empty());

    proxy.set_fault_share(0.0);
    let c = ok(hf(&moto, url), &["check", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&c.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    let snaps = ok(hf(&moto, url), &["snapshots", "--json"]);
    let snaps: serde_json::Value = serde_json::from_slice(&snaps.stdout).unwrap();
    assert_eq!(
        snaps.as_array().unwrap().len(),
        1,
        "the failed backup committed nothing"
    );
    let target = env.path("out");
    ok(
        hf(&moto, url),
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
}

/// A clock the test moves.
#[derive(Debug)]
struct TestClock(std::sync::Mutex<chrono::DateTime<chrono::Utc>>);

impl holdfast_repo::retention::Clock for TestClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        *self.0.lock().unwrap()
    }
}

#[test]
fn object_lock_retention_is_computed_per_write_and_reused_packs_are_extended() {
    use holdfast_ops::backup::{backup_files, FileBackupConfig};
    use holdfast_storage::{Backend, ObjectKind};
    use std::sync::Arc;

    let moto = Moto::start();
    let rt = runtime();
    rt.block_on(moto.create_lock_bucket("worm-clock"));
    let mut cfg = moto.config("worm-clock", "r");
    cfg.require_object_lock = true;
    let backend: Arc<dyn Backend> =
        Arc::new(rt.block_on(holdfast_s3::S3Backend::connect(cfg)).unwrap());
    let repo = Arc::new(
        holdfast_ops::init::init(
            backend.clone(),
            rt.handle(),
            holdfast_ops::init::InitConfig {
                password: PASSWORD.as_bytes().to_vec(),
                kdf: holdfast_ops::init::kdf(8, 1).unwrap(),
                compression_level: 3,
                lock: Some(holdfast_repo::config::LockConfig {
                    mode: "governance".into(),
                    days: 30,
                }),
            },
        )
        .unwrap(),
    );
    let t0 = chrono::Utc::now();
    let clock = Arc::new(TestClock(std::sync::Mutex::new(t0)));
    repo.set_clock(clock.clone());
    let env = Env::new();
    let src = env.path("src");
    // An unchanged subdirectory: the next backups reuse its file content
    // (without reading it) and its tree.
    fs::create_dir_all(src.join("keep")).unwrap();
    fs::write(src.join("keep/old.bin"), noise(3_000_000, 1)).unwrap();
    let packs = || -> std::collections::BTreeSet<String> {
        rt.block_on(backend.list(ObjectKind::Pack))
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect()
    };
    let until = |name: &str| {
        rt.block_on(backend.retention(ObjectKind::Pack, name))
            .unwrap()
            .expect("retained")
            .until
    };
    let mut cfg = FileBackupConfig::new(vec![src.clone()]);
    cfg.source = Some("docs".into());
    backup_files(&repo, &cfg, &Default::default()).unwrap();
    let first = packs();
    assert!(!first.is_empty());
    let day = chrono::Duration::days(1);
    for p in &first {
        let u = until(p);
        assert!((u - (t0 + day * 30)).num_seconds().abs() < 120, "{p}: {u}");
    }
    // Ten days later, the same open repository writes a new pack and
    // reuses the old ones.
    *clock.0.lock().unwrap() = t0 + day * 10;
    fs::write(src.join("new.bin"), noise(3_000_000, 2)).unwrap();
    backup_files(&repo, &cfg, &Default::default()).unwrap();
    let second: Vec<String> = packs().difference(&first).cloned().collect();
    assert!(!second.is_empty());
    for p in &second {
        let u = until(p);
        assert!(
            (u - (t0 + day * 40)).num_seconds().abs() < 120,
            "a new pack's retention is from its own write, not from the open: {p}: {u}"
        );
    }
    for p in &first {
        let u = until(p);
        assert!(
            u >= t0 + day * 40,
            "reused pack {p} keeps {u}, shorter than the new snapshot needs"
        );
    }
    // The next day needs no extension (the margin covers it): retention
    // stays where it is.
    let before: Vec<_> = first.iter().map(|p| until(p)).collect();
    *clock.0.lock().unwrap() = t0 + day * 11;
    backup_files(&repo, &cfg, &Default::default()).unwrap();
    let after: Vec<_> = first.iter().map(|p| until(p)).collect();
    assert_eq!(before, after);
}

/// Every object under `prefix` of `bucket`, with its size.
fn s3_objects(
    rt: &tokio::runtime::Runtime,
    admin: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> std::collections::BTreeMap<String, i64> {
    let out = rt
        .block_on(admin.list_objects_v2().bucket(bucket).prefix(prefix).send())
        .unwrap();
    out.contents()
        .iter()
        .map(|o| (o.key().unwrap().to_string(), o.size().unwrap_or(0)))
        .collect()
}

#[test]
fn gc_on_s3_returns_space_and_leaves_object_locked_packs_reported() {
    let moto = Moto::start();
    let rt = runtime();
    rt.block_on(moto.create_bucket("gc-plain"));
    rt.block_on(moto.create_lock_bucket("gc-worm"));
    let admin = moto.admin();
    let env = Env::new();
    let src = env.path("src");
    tree(&src);
    let json = |url: &str, args: &[&str]| -> serde_json::Value {
        let out = ok(hf(&moto, url), args);
        serde_json::from_slice(&out.stdout).unwrap()
    };

    // Plain bucket: the newest snapshot's own data comes back.
    let url = "s3://gc-plain/r";
    ok(
        hf(&moto, url),
        &["init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"],
    );
    ok(hf(&moto, url), &["backup", src.to_str().unwrap()]);
    let kept = src.with_extension("kept");
    fs::create_dir_all(&kept).unwrap();
    fs::rename(src.join("scans/big.pdf"), kept.join("big.pdf")).unwrap();
    fs::write(src.join("scans/big.pdf"), noise(20_000_000, 77)).unwrap();
    ok(hf(&moto, url), &["backup", src.to_str().unwrap()]);
    let snaps = s3_objects(&rt, &admin, "gc-plain", "r/snapshots/");
    let newest = json(url, &["snapshots", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|s| s["time"].as_str().unwrap().to_string())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(snaps.len(), 2);
    rt.block_on(
        admin
            .delete_object()
            .bucket("gc-plain")
            .key(format!("r/snapshots/{newest}"))
            .send(),
    )
    .unwrap();
    let before: i64 = s3_objects(&rt, &admin, "gc-plain", "r/data/")
        .values()
        .sum();
    let r = json(url, &["gc", "--json"]);
    let after: i64 = s3_objects(&rt, &admin, "gc-plain", "r/data/")
        .values()
        .sum();
    assert!(before - after >= 19_000_000, "{before} -> {after}: {r}");
    assert_eq!(r["bytes_after"].as_i64().unwrap(), after, "{r}");
    ok(hf(&moto, url), &["check", "--read-data"]);
    fs::rename(kept.join("big.pdf"), src.join("scans/big.pdf")).unwrap();
    let target = env.path("plain-out");
    ok(
        hf(&moto, url),
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    let restored = target.join(src.strip_prefix("/").unwrap());
    for f in ["scans/big.pdf", "scans/page7.tif", "notes.txt"] {
        assert!(
            fs::read(restored.join(f)).unwrap() == fs::read(src.join(f)).unwrap(),
            "{f} differs"
        );
    }

    // Object Lock: a pack nobody needs (what a killed backup leaves) whose
    // retention has not ended is kept and reported, and GC succeeds.
    let url = "s3://gc-worm/r";
    ok(
        hf(&moto, url),
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
    ok(hf(&moto, url), &["backup", src.to_str().unwrap()]);
    let data = s3_objects(&rt, &admin, "gc-worm", "r/data/");
    let real = data.keys().next().unwrap().clone();
    let obj = rt
        .block_on(admin.get_object().bucket("gc-worm").key(&real).send())
        .unwrap();
    let mut body = rt
        .block_on(obj.body.collect())
        .unwrap()
        .into_bytes()
        .to_vec();
    body.extend_from_slice(b"left by a killed backup");
    let name = holdfast_repo::Id::of_stored(&body).to_hex();
    let key = format!("r/data/{}/{name}", &name[..2]);
    let until =
        aws_sdk_s3::primitives::DateTime::from_secs(chrono::Utc::now().timestamp() + 86_400);
    rt.block_on(
        admin
            .put_object()
            .bucket("gc-worm")
            .key(&key)
            .body(aws_sdk_s3::primitives::ByteStream::from(body))
            .object_lock_mode(aws_sdk_s3::types::ObjectLockMode::Governance)
            .object_lock_retain_until_date(until)
            .send(),
    )
    .unwrap();
    let r = json(url, &["gc", "--json"]);
    assert_eq!(r["packs_kept_locked"], 1, "{r}");
    assert_eq!(r["packs_deleted"], 0, "{r}");
    assert_eq!(r["kept_locked"][0]["name"], name.as_str(), "{r}");
    assert!(r["kept_locked"][0]["until"].is_string(), "{r}");
    assert!(s3_objects(&rt, &admin, "gc-worm", "r/data/").contains_key(&key));
    // The text summary says so too, and a later run tries again.
    let out = ok(hf(&moto, url), &["gc"]);
    assert!(
        stdout(&out).contains("kept because locked"),
        "{}",
        stdout(&out)
    );
    ok(hf(&moto, url), &["check", "--read-data"]);
    let target = env.path("worm-out");
    ok(
        hf(&moto, url),
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    assert_same_tree(&src, &target.join(src.strip_prefix("/").unwrap()));
}

/// Archival end to end through `policy apply`: three snapshots of one
/// source, the two old ones past `archive_after`. A dry run says what
/// would move and moves nothing; `--yes` moves the packs only the old
/// snapshots need into DEEP_ARCHIVE (moto refuses to read them until
/// retrieved); `snapshots`, `ls` and `policy plan` of the archived
/// snapshot still work (metadata stays hot); the hot snapshot restores
/// with no retrieval (so every pack it needs stayed hot, the shared one
/// included); the archived one waits for its retrievals, reports the
/// wait and comes back byte for byte; a second apply moves nothing.
#[test]
fn policy_apply_archives_cold_and_restore_waits_for_retrieval() {
    let moto = Moto::start();
    let rt = runtime();
    rt.block_on(moto.create_bucket("tiers"));
    let env = Env::new();
    let url = "s3://tiers/repo";
    ok(
        hf(&moto, url),
        &["init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"],
    );
    let src = env.path("scans");
    fs::create_dir_all(src.join("old")).unwrap();
    fs::write(src.join("shared.pdf"), noise(3_000_000, 21)).unwrap();
    let backup = |time: Option<&str>| {
        let mut args = vec!["backup", "--source", "scans"];
        if let Some(t) = time {
            args.extend(["--time", t]);
        }
        args.push(src.to_str().unwrap());
        ok(hf(&moto, url), &args);
    };
    backup(Some("2026-06-01T10:00:00Z"));
    fs::write(src.join("old/a.tif"), noise(3_000_000, 22)).unwrap();
    fs::write(src.join("old/b.tif"), noise(3_000_000, 23)).unwrap();
    backup(Some("2026-07-01T10:00:00Z"));
    fs::remove_dir_all(src.join("old")).unwrap();
    backup(None);
    let snaps: Vec<String> = serde_json::from_slice::<serde_json::Value>(
        &ok(hf(&moto, url), &["snapshots", "--json"]).stdout,
    )
    .unwrap()
    .as_array()
    .unwrap()
    .iter()
    .map(|s| s["id"].as_str().unwrap().to_string())
    .collect();
    assert_eq!(snaps.len(), 3);

    let policy = env.path("scans.toml");
    fs::write(
        &policy,
        "[[policy]]\nname = \"scans\"\nsource = \"scans\"\ntimezone = \"UTC\"\n\
         keep = { last = 10 }\narchive_after = \"30d\"\narchive_class = \"DEEP_ARCHIVE\"\n",
    )
    .unwrap();
    let policy = policy.to_str().unwrap();
    let apply = |yes: bool| {
        let mut args = vec!["--json", "policy", "apply", "--policy", policy];
        if yes {
            args.push("--yes");
        }
        serde_json::from_slice::<serde_json::Value>(&ok(hf(&moto, url), &args).stdout).unwrap()
    };
    let outcome = |v: &serde_json::Value, id: &str| {
        v["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["snapshot"] == id)
            .map(|s| s["outcome"].as_str().unwrap().to_string())
            .unwrap()
    };
    let cold_packs = || {
        let listed = rt
            .block_on(
                moto.admin()
                    .list_objects_v2()
                    .bucket("tiers")
                    .prefix("repo/data/")
                    .send(),
            )
            .unwrap();
        listed
            .contents()
            .iter()
            .filter(|o| {
                let h = rt
                    .block_on(
                        moto.admin()
                            .head_object()
                            .bucket("tiers")
                            .key(o.key().unwrap())
                            .send(),
                    )
                    .unwrap();
                h.storage_class().map(|c| c.as_str()) == Some("DEEP_ARCHIVE")
            })
            .count()
    };

    let dry = apply(false);
    assert_eq!(outcome(&dry, &snaps[0]), "would-archive", "{dry}");
    assert_eq!(outcome(&dry, &snaps[1]), "would-archive");
    assert_eq!(outcome(&dry, &snaps[2]), "kept");
    let would = dry["archival"][0]["packs_moved"].as_u64().unwrap();
    assert!(would >= 1, "{dry}");
    assert_eq!(cold_packs(), 0, "a dry run moves nothing");

    let done = apply(true);
    assert_eq!(outcome(&done, &snaps[0]), "archived", "{done}");
    assert_eq!(outcome(&done, &snaps[1]), "archived");
    assert_eq!(outcome(&done, &snaps[2]), "kept");
    let archival = &done["archival"][0];
    assert_eq!(archival["class"], "DEEP_ARCHIVE");
    assert_eq!(archival["packs_moved"].as_u64(), Some(would));
    assert!(
        archival["packs_shared_hot"].as_u64().unwrap() >= 1,
        "{done}"
    );
    assert_eq!(cold_packs() as u64, would);
    let again = apply(true);
    assert_eq!(again["archival"][0]["packs_moved"].as_u64(), Some(0));
    assert_eq!(again["archival"][0]["packs_already"].as_u64(), Some(would));

    // Metadata stays hot: none of these needs a retrieval.
    ok(hf(&moto, url), &["snapshots"]);
    let ls = ok(hf(&moto, url), &["ls", &snaps[1]]);
    assert!(String::from_utf8_lossy(&ls.stdout).contains("old/b.tif"));
    ok(hf(&moto, url), &["policy", "plan", "--policy", policy]);
    ok(hf(&moto, url), &["check"]);

    let restore = |id: &str, to: &str| {
        let target = env.path(to);
        let out = ok(
            hf(&moto, url),
            &[
                "restore",
                id,
                "--target",
                target.to_str().unwrap(),
                "--json",
            ],
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (v, target.join(src.strip_prefix("/").unwrap()))
    };
    let (hot, root) = restore(&snaps[2], "hot");
    assert_eq!(
        hot["restored"]["retrieval_seconds"].as_f64(),
        Some(0.0),
        "the hot snapshot needs no retrieval: {hot}"
    );
    assert_eq!(
        fs::read(root.join("shared.pdf")).unwrap(),
        noise(3_000_000, 21)
    );
    let (cold, root) = restore(&snaps[1], "cold");
    assert!(
        cold["restored"]["retrieval_seconds"].as_f64().unwrap() > 0.0,
        "the wait is reported: {cold}"
    );
    assert_eq!(
        fs::read(root.join("old/a.tif")).unwrap(),
        noise(3_000_000, 22)
    );
    assert_eq!(
        fs::read(root.join("old/b.tif")).unwrap(),
        noise(3_000_000, 23)
    );
    assert_eq!(
        fs::read(root.join("shared.pdf")).unwrap(),
        noise(3_000_000, 21)
    );
}
