//! `holdfast compliance report` on S3 (a real moto server): a repository
//! initialised with Object Lock retention on an Object Lock bucket passes
//! the `object-lock` control; one without retention needs attention.

mod common;
mod s3cli;

use common::*;
use s3cli::{hf_uncached as hf, runtime, Moto};

fn object_lock(moto: &Moto, url: &str) -> serde_json::Value {
    let out = hf(moto, url)
        .args(["--json", "compliance", "report"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}{}", stdout(&out), stderr(&out)));
    v["controls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "object-lock")
        .expect("object-lock control")
        .clone()
}

#[test]
fn object_lock_retention_on_s3_passes_and_its_absence_needs_attention() {
    let moto = Moto::start();
    let rt = runtime();
    rt.block_on(moto.create_lock_bucket("worm"));
    rt.block_on(moto.create_bucket("plain"));
    let locked = "s3://worm/r";
    let status = hf(&moto, locked)
        .args([
            "init",
            "--kdf-memory-mib",
            "8",
            "--kdf-iterations",
            "1",
            "--lock-mode",
            "governance",
            "--lock-days",
            "1",
        ])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let c = object_lock(&moto, locked);
    assert_eq!(c["status"], "pass", "{c}");
    assert!(
        c["finding"]
            .as_str()
            .unwrap()
            .contains("governance mode, 1 days"),
        "{c}"
    );
    assert!(c["facts"].to_string().contains("\"S3\""), "{c}");

    let plain = "s3://plain/r";
    let status = hf(&moto, plain)
        .args(["init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let c = object_lock(&moto, plain);
    assert_eq!(c["status"], "attention", "{c}");
}
