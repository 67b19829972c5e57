//! A drill of an archived snapshot on S3 (a real moto server on
//! 127.0.0.1): `policy apply` moved its packs to `DEEP_ARCHIVE`, so the
//! drill's restore must request their retrieval and wait for it; the wait
//! is a phase of its own ("retrieval") and part of the measured RTO.

mod common;
mod s3cli;

use std::fs;
use std::process::Command;

use common::*;
use s3cli::{hf, ok, Moto};

/// `days` days before now, as RFC 3339 (GNU date: the tests run on Linux).
fn days_ago(days: u32) -> String {
    let out = Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("{days} days ago"),
            "+%Y-%m-%dT%H:%M:%SZ",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn drill_of_an_archived_snapshot_counts_the_retrieval_wait_in_its_rto() {
    let moto = Moto::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(moto.create_bucket("tiers"));
    let env = Env::new();
    let url = "s3://tiers/repo";
    ok(
        hf(&moto, url),
        &["init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"],
    );
    // The quarter-end snapshot (60 days old, tagged) holds files that are
    // gone now, in packs of their own (an earlier backup wrote the file
    // still there), so only it needs them: archival moves them cold.
    let src = env.path("scans");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("shared.pdf"), noise(2_000_000, 31)).unwrap();
    ok(
        hf(&moto, url),
        &[
            "backup",
            "--source",
            "scans",
            "--time",
            &days_ago(70),
            src.to_str().unwrap(),
        ],
    );
    fs::create_dir_all(src.join("old")).unwrap();
    fs::write(src.join("old/a.tif"), noise(3_000_000, 32)).unwrap();
    fs::write(src.join("old/b.tif"), noise(3_000_000, 33)).unwrap();
    let old = days_ago(60);
    ok(
        hf(&moto, url),
        &[
            "backup",
            "--source",
            "scans",
            "--tag",
            "quarter-end",
            "--time",
            &old,
            src.to_str().unwrap(),
        ],
    );
    fs::remove_dir_all(src.join("old")).unwrap();
    ok(
        hf(&moto, url),
        &["backup", "--source", "scans", src.to_str().unwrap()],
    );
    let policy = env.path("scans.toml");
    fs::write(
        &policy,
        "[[policy]]\nname = \"scans\"\nsource = \"scans\"\ntimezone = \"UTC\"\n\
         keep = { last = 10 }\narchive_after = \"30d\"\narchive_class = \"DEEP_ARCHIVE\"\n",
    )
    .unwrap();
    let applied: serde_json::Value = serde_json::from_slice(
        &ok(
            hf(&moto, url),
            &[
                "--json",
                "policy",
                "apply",
                "--policy",
                policy.to_str().unwrap(),
                "--yes",
            ],
        )
        .stdout,
    )
    .unwrap();
    let moved = applied["archival"][0]["packs_moved"].as_u64().unwrap();
    assert!(moved >= 1, "the old snapshot's packs went cold: {applied}");

    // The drill picks the archived snapshot by its tag.
    let scratch = env.path("scratch");
    fs::create_dir_all(&scratch).unwrap();
    let pb = env.path("quarter-end.toml");
    fs::write(
        &pb,
        r#"name = "quarter-end-scans"
[snapshot]
source = "scans"
pick = "latest"
tags = ["quarter-end"]
[target]
kind = "directory"
[[check]]
kind = "files"
[objectives]
rto = "15m"
rpo = "90d"
"#,
    )
    .unwrap();
    let report = env.path("report.json");
    let out = hf(&moto, url)
        .env("TMPDIR", &scratch)
        .args([
            "drill",
            "run",
            pb.to_str().unwrap(),
            "--report-json",
            report.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let r: serde_json::Value = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["outcome"], "passed", "{r}");
    let restore = &r["restores"][0];
    // Every file of the archived snapshot came back and verified.
    let files = restore["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "files")
        .unwrap();
    assert_eq!(files["passed"], true, "{files}");
    assert!(
        files["detail"].as_str().unwrap().starts_with("3 of 3"),
        "{files}"
    );
    let phases = restore["phases"].as_array().unwrap();
    let retrieval = phases
        .iter()
        .find(|p| p["name"] == "retrieval")
        .unwrap_or_else(|| panic!("no retrieval phase: {phases:?}"));
    let wait = retrieval["seconds"].as_f64().unwrap();
    assert!(wait > 0.0, "{retrieval}");
    // The RTO is measured from the drill's start to the checked restore:
    // it holds the retrieval wait and every other phase before teardown.
    let rto = r["rto_seconds"].as_f64().unwrap();
    let before_teardown: f64 = phases
        .iter()
        .filter(|p| p["name"] != "teardown")
        .map(|p| p["seconds"].as_f64().unwrap())
        .sum();
    assert!(rto >= wait, "RTO {rto} < retrieval {wait}");
    assert!(
        rto + 1e-3 >= before_teardown,
        "RTO {rto} < sum of phases {before_teardown}: {phases:?}"
    );
    let text = stdout(&out);
    assert!(text.contains("retrieval "), "{text}");
    // Nothing left in the scratch parent.
    assert_eq!(fs::read_dir(&scratch).unwrap().count(), 0);
}
