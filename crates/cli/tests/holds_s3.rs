//! Legal holds on S3 with Object Lock, through the real binary against a
//! real S3 server (moto): placing a hold puts an Object Lock legal hold on
//! every object the held snapshot needs (manifest, packs, index objects),
//! so that a direct, version-specific DeleteObject with the bucket owner's
//! credentials fails; releasing the last hold that needs an object lifts
//! it (the delete then succeeds), and a pack two holds share keeps its
//! legal hold until both are released. A backup covered by a source hold
//! is legal-held when it commits, and `gc` leaves legal-held packs alone.

mod common;
mod s3cli;

use std::fs;
use std::process::Command;

use common::*;
use s3cli::{hf_uncached, runtime, Moto};

const BUCKET: &str = "holds-worm";

fn hf(moto: &Moto, url: &str) -> Command {
    let mut c = hf_uncached(moto, url);
    c.env("HOLDFAST_ACTOR", "legal@clinic");
    c
}

fn json(moto: &Moto, url: &str, args: &[&str]) -> serde_json::Value {
    let out = hf(moto, url).arg("--json").args(args).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "holdfast {args:?}: {}",
        stderr(&out)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: bad JSON ({e}): {}", stdout(&out)))
}

/// Keys (relative to the repository prefix) under `dir/`, with sizes.
fn keys(rt: &tokio::runtime::Runtime, moto: &Moto, dir: &str) -> Vec<(String, i64)> {
    let admin = moto.admin();
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = rt
            .block_on(
                admin
                    .list_objects_v2()
                    .bucket(BUCKET)
                    .prefix(format!("r/{dir}/"))
                    .set_continuation_token(token.clone())
                    .send(),
            )
            .unwrap();
        for o in page.contents() {
            out.push((o.key().unwrap().to_string(), o.size().unwrap_or(0)));
        }
        token = page.next_continuation_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    out
}

fn legal_hold(rt: &tokio::runtime::Runtime, moto: &Moto, key: &str) -> bool {
    let got = rt
        .block_on(
            moto.admin()
                .get_object_legal_hold()
                .bucket(BUCKET)
                .key(key)
                .send(),
        )
        .ok();
    got.and_then(|g| g.legal_hold().and_then(|h| h.status().cloned()))
        .is_some_and(|s| s.as_str() == "ON")
}

/// A version-specific delete with the bucket owner's credentials: the
/// only delete that destroys data in a versioned bucket. Ok(()) if it
/// went through.
fn destroy(rt: &tokio::runtime::Runtime, moto: &Moto, key: &str) -> Result<(), String> {
    let admin = moto.admin();
    let head = rt
        .block_on(admin.head_object().bucket(BUCKET).key(key).send())
        .map_err(|e| format!("head {key}: {e:?}"))?;
    let version = head.version_id().expect("versioned bucket").to_string();
    rt.block_on(
        admin
            .delete_object()
            .bucket(BUCKET)
            .key(key)
            .version_id(version)
            .send(),
    )
    .map(|_| ())
    .map_err(|e| format!("{e:?}"))
}

#[test]
fn held_objects_cannot_be_deleted_on_s3_until_the_last_hold_is_released() {
    let moto = Moto::start();
    let rt = runtime();
    rt.block_on(moto.create_lock_bucket(BUCKET));
    let url = &format!("s3://{BUCKET}/r");
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    // Larger than a pack: data packs of its own.
    fs::write(src.join("scan.pdf"), noise(20_000_000, 1)).unwrap();
    assert_eq!(
        hf(&moto, url)
            .args(["init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"])
            .status()
            .unwrap()
            .code(),
        Some(0)
    );
    let first = json(
        &moto,
        url,
        &["backup", "--source", "ehr", src.to_str().unwrap()],
    );
    let s1 = first["snapshot"].as_str().unwrap().to_string();
    let packs1 = keys(&rt, &moto, "data");
    // The largest pack of the first backup holds scan.pdf's data, which
    // the second backup shares.
    let shared = packs1
        .iter()
        .max_by_key(|(_, size)| *size)
        .unwrap()
        .0
        .clone();
    fs::write(src.join("note.txt"), text(50_000, 2)).unwrap();
    let second = json(
        &moto,
        url,
        &["backup", "--source", "ehr", src.to_str().unwrap()],
    );
    let s2 = second["snapshot"].as_str().unwrap().to_string();
    let m1 = format!("r/snapshots/{s1}");
    let m2 = format!("r/snapshots/{s2}");

    let h1 = json(
        &moto,
        url,
        &[
            "hold",
            "place",
            "--snapshot",
            &s1,
            "--case",
            "CASE-1",
            "--reason",
            "subpoena",
        ],
    );
    assert_eq!(h1["legal_holds"]["supported"], true);
    assert!(h1["legal_holds"]["placed"].as_u64().unwrap() >= 3, "{h1}");
    let h2 = json(
        &moto,
        url,
        &[
            "hold",
            "place",
            "--snapshot",
            &s2,
            "--case",
            "CASE-2",
            "--reason",
            "audit",
        ],
    );
    // Everything the first snapshot needs is legal-held: its manifest,
    // every pack of its backup and the index objects naming them.
    assert!(legal_hold(&rt, &moto, &m1));
    for (k, _) in &packs1 {
        assert!(legal_hold(&rt, &moto, k), "pack {k} is not legal-held");
    }
    let index = keys(&rt, &moto, "index");
    assert!(!index.is_empty());
    for (k, _) in &index {
        assert!(
            legal_hold(&rt, &moto, k),
            "index object {k} is not legal-held"
        );
    }
    // Hold records are not themselves locked (they are write-once).
    // A direct delete by the bucket owner fails, manifest and pack alike.
    for key in [&m1, &m2, &shared] {
        let e = destroy(&rt, &moto, key).expect_err("a held object was deleted");
        assert!(
            e.contains("AccessDenied") || e.contains("Object Lock") || e.contains("locked"),
            "{key}: {e}"
        );
    }

    // Release the first hold: its manifest is free, the shared pack is
    // still needed by the second hold and stays legal-held.
    let r1 = json(
        &moto,
        url,
        &[
            "hold",
            "release",
            h1["id"].as_str().unwrap(),
            "--reason",
            "settled",
        ],
    );
    assert!(r1["legal_holds"]["removed"].as_u64().unwrap() >= 1, "{r1}");
    assert!(!legal_hold(&rt, &moto, &m1));
    assert!(legal_hold(&rt, &moto, &shared));
    assert!(legal_hold(&rt, &moto, &m2));
    destroy(&rt, &moto, &shared).expect_err("a pack the second hold needs was deleted");
    destroy(&rt, &moto, &m2).expect_err("the second held manifest was deleted");

    // Release the second: nothing is legal-held any more; the owner's
    // delete now goes through.
    json(
        &moto,
        url,
        &[
            "hold",
            "release",
            h2["id"].as_str().unwrap(),
            "--reason",
            "closed",
        ],
    );
    for (k, _) in keys(&rt, &moto, "data")
        .iter()
        .chain(keys(&rt, &moto, "index").iter())
        .chain(keys(&rt, &moto, "snapshots").iter())
    {
        assert!(!legal_hold(&rt, &moto, k), "{k} is still legal-held");
    }
    destroy(&rt, &moto, &shared).expect("after the last release the pack can be deleted");
    destroy(&rt, &moto, &m1).expect("after release the manifest can be deleted");
}

#[test]
fn a_backup_inside_a_source_hold_is_legal_held_and_gc_leaves_held_packs_alone() {
    let moto = Moto::start();
    let rt = runtime();
    rt.block_on(moto.create_lock_bucket(BUCKET));
    let url = &format!("s3://{BUCKET}/r");
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.bin"), noise(3_000_000, 7)).unwrap();
    assert_eq!(
        hf(&moto, url)
            .args(["init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"])
            .status()
            .unwrap()
            .code(),
        Some(0)
    );
    let h = json(
        &moto,
        url,
        &[
            "hold",
            "place",
            "--source",
            "ehr",
            "--from",
            "2026-03-01T00:00:00Z",
            "--to",
            "2026-03-31T23:59:59Z",
            "--case",
            "CASE-5",
            "--reason",
            "investigation",
        ],
    );
    assert_eq!(h["legal_holds"]["placed"], 0);
    // Inside the range: legal-held when it commits. Outside: not.
    let inside = json(
        &moto,
        url,
        &[
            "backup",
            "--source",
            "ehr",
            "--time",
            "2026-03-10T10:00:00Z",
            src.to_str().unwrap(),
        ],
    );
    let inside = inside["snapshot"].as_str().unwrap().to_string();
    let held_packs = keys(&rt, &moto, "data");
    fs::write(src.join("a.bin"), noise(3_000_000, 8)).unwrap();
    let outside = json(
        &moto,
        url,
        &[
            "backup",
            "--source",
            "ehr",
            "--time",
            "2026-04-10T10:00:00Z",
            src.to_str().unwrap(),
        ],
    );
    let outside = outside["snapshot"].as_str().unwrap().to_string();
    assert!(legal_hold(&rt, &moto, &format!("r/snapshots/{inside}")));
    assert!(!legal_hold(&rt, &moto, &format!("r/snapshots/{outside}")));
    for (k, _) in &held_packs {
        assert!(legal_hold(&rt, &moto, k), "{k}");
    }
    // A policy keeping only the newest: the held one is kept, and gc
    // (which finds nothing to delete) runs cleanly beside legal holds.
    let policy = env.path("p.toml");
    fs::write(
        &policy,
        "[[policy]]\nname = \"ehr\"\nsource = \"ehr\"\ntimezone = \"UTC\"\nkeep = { last = 1 }\n",
    )
    .unwrap();
    let applied = json(
        &moto,
        url,
        &[
            "policy",
            "apply",
            "--policy",
            policy.to_str().unwrap(),
            "--yes",
        ],
    );
    let rules: Vec<(String, String)> = applied["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["snapshot"].as_str().unwrap().to_string(),
                s["rule"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        rules.contains(&(inside.clone(), "held by CASE-5".into())),
        "{rules:?}"
    );
    // Released, then purged: its packs are garbage, but the hold's legal
    // holds were lifted by the release, so gc may delete them.
    json(
        &moto,
        url,
        &[
            "hold",
            "release",
            h["id"].as_str().unwrap(),
            "--reason",
            "closed",
        ],
    );
    let applied = json(
        &moto,
        url,
        &[
            "policy",
            "apply",
            "--policy",
            policy.to_str().unwrap(),
            "--yes",
        ],
    );
    assert!(applied.to_string().contains("purged"), "{applied}");
    // Re-hold a pack by hand, as a second tool or an operator might: gc
    // must neither delete nor repack it, and says so.
    let (pinned, _) = held_packs[0].clone();
    rt.block_on(
        moto.admin()
            .put_object_legal_hold()
            .bucket(BUCKET)
            .key(&pinned)
            .legal_hold(
                aws_sdk_s3::types::ObjectLockLegalHold::builder()
                    .status(aws_sdk_s3::types::ObjectLockLegalHoldStatus::On)
                    .build(),
            )
            .send(),
    )
    .unwrap();
    let report = json(&moto, url, &["gc"]);
    let name = pinned.rsplit('/').next().unwrap();
    assert!(
        report["kept_locked"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["name"] == name),
        "{report}"
    );
    assert!(keys(&rt, &moto, "data").iter().any(|(k, _)| *k == pinned));
    assert!(
        report["packs_deleted"].as_u64().unwrap() >= 1,
        "the rest of the released data is reclaimed: {report}"
    );
    let target = env.path("out");
    let out = hf(&moto, url)
        .args(["restore", &outside, "--target", target.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}
