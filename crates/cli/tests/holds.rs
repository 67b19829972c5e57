//! `holdfast hold place|release|list|show` on real repositories: the
//! records and their JSON, the actor identity, every error path (unknown
//! and malformed ids, a missing snapshot, a double release, malformed
//! times and flag combinations), and what holds do to `policy apply` and
//! `gc`: a held snapshot is kept ("held by CASE"), its data survives gc
//! and restores byte for byte, and after the release both reclaim it. gc
//! refuses (exit 4, nothing deleted) while a held snapshot's manifest is
//! missing or a hold record cannot be read.

mod common;

use std::fs;
use std::path::Path;

use common::*;

/// A repository with `n` daily snapshots of source "docs" (2026-03-01..),
/// each with different content; returns their ids, oldest first.
fn history(env: &Env, n: u32) -> Vec<String> {
    env.init();
    let src = env.path("docs");
    fs::create_dir_all(&src).unwrap();
    let mut ids = Vec::new();
    for day in 1..=n {
        fs::write(src.join("note.bin"), noise(200_000, u64::from(day))).unwrap();
        let v = env.json([
            "backup",
            "--source",
            "docs",
            "--time",
            &format!("2026-03-{day:02}T10:00:00Z"),
            src.to_str().unwrap(),
        ]);
        ids.push(v["snapshot"].as_str().expect("snapshot id").to_string());
    }
    ids
}

fn place(env: &Env, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["hold", "place"];
    a.extend_from_slice(args);
    env.json(a)
}

fn fails(env: &Env, args: &[&str], code: i32, needle: &str) {
    let out = env.run(args);
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {e}");
    assert!(e.contains(needle), "{args:?}: expected {needle:?} in: {e}");
}

#[test]
fn place_list_show_and_release_record_who_what_and_when() {
    let env = Env::new();
    let ids = history(&env, 3);
    let out = env
        .cmd()
        .env("HOLDFAST_ACTOR", "dr.jones@clinic")
        .args([
            "--json",
            "hold",
            "place",
            "--snapshot",
            &ids[0][..8],
            "--snapshot",
            &ids[1],
            "--case",
            "CASE-123",
            "--reason",
            "subpoena 2026/17",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    assert!(
        id.len() == 8 && id.starts_with("H-"),
        "a short, typeable id: {id}"
    );
    assert_eq!(v["case"], "CASE-123");
    assert_eq!(v["reason"], "subpoena 2026/17");
    assert_eq!(v["placed_by"], "dr.jones@clinic");
    assert_eq!(v["active"], true);
    assert_eq!(v["selector"]["type"], "snapshots");
    let held: Vec<&str> = v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(held, vec![ids[0].as_str(), ids[1].as_str()]);
    // The record is an object of its own in holds/.
    assert!(env.repo.join("holds").join(&id).is_file());

    // Without HOLDFAST_ACTOR: user@host.
    let src = place(
        &env,
        &[
            "--source",
            "docs",
            "--from",
            "2026-03-02T00:00:00Z",
            "--case",
            "CASE-9",
            "--reason",
            "audit",
        ],
    );
    let by = src["placed_by"].as_str().unwrap();
    assert!(by.contains('@') && !by.starts_with('@'), "{by}");
    assert_eq!(src["snapshots"].as_array().unwrap().len(), 2);
    let src_id = src["id"].as_str().unwrap().to_string();
    assert_ne!(src_id, id);

    let list = env.json(["hold", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 2);
    let text = stdout(&env.ok(["hold", "list"]));
    assert!(
        text.contains(&id) && text.contains("CASE-123") && text.contains("2 hold(s)"),
        "{text}"
    );

    // Release (any case of the id), then it is listed only with --all.
    let out = env
        .cmd()
        .env("HOLDFAST_ACTOR", "counsel@clinic")
        .args([
            "--json",
            "hold",
            "release",
            &id.to_lowercase(),
            "--reason",
            "case settled",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["hold"], id.as_str());
    assert_eq!(r["released_by"], "counsel@clinic");
    assert_eq!(r["case"], "CASE-123");
    // The hold record stays; the release is a second record.
    assert!(env.repo.join("holds").join(&id).is_file());
    assert!(env
        .repo
        .join("holds")
        .join(format!("{id}.release"))
        .is_file());
    let list = env.json(["hold", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], src_id.as_str());
    let all = env.json(["hold", "list", "--all"]);
    assert_eq!(all.as_array().unwrap().len(), 2);
    let shown = env.json(["hold", "show", &id]);
    assert_eq!(shown["active"], false);
    assert_eq!(shown["release"]["reason"], "case settled");
    let text = stdout(&env.ok(["hold", "show", &id]));
    assert!(
        text.contains("released") && text.contains("counsel@clinic") && text.contains("CASE-123"),
        "{text}"
    );

    // Dates alone: --from is the day's first instant, --to all of its day,
    // so a one-day range holds exactly that day's snapshot (10:00).
    let day = place(
        &env,
        &[
            "--source",
            "docs",
            "--from",
            "2026-03-02",
            "--to",
            "2026-03-02",
            "--case",
            "CASE-D",
            "--reason",
            "one day",
        ],
    );
    let held: Vec<&str> = day["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(held, vec![ids[1].as_str()], "{day}");
}

#[test]
fn mistakes_are_refused_with_what_is_wrong() {
    let env = Env::new();
    let ids = history(&env, 1);
    let h = place(
        &env,
        &["--snapshot", &ids[0], "--case", "C-1", "--reason", "r"],
    );
    let id = h["id"].as_str().unwrap().to_string();

    // A snapshot that does not exist is named.
    fails(
        &env,
        &[
            "hold",
            "place",
            "--snapshot",
            "deadbeef",
            "--case",
            "C",
            "--reason",
            "r",
        ],
        1,
        "deadbeef",
    );
    // Unknown and malformed ids.
    fails(
        &env,
        &["hold", "release", "H-000000", "--reason", "r"],
        1,
        "no hold H-000000",
    );
    fails(&env, &["hold", "show", "H-000000"], 1, "no hold H-000000");
    fails(&env, &["hold", "show", "CASE-1"], 1, "not a hold id");
    fails(&env, &["hold", "show", "../../config"], 1, "not a hold id");
    // Double release names who released it.
    env.ok(["hold", "release", &id, "--reason", "done"]);
    fails(
        &env,
        &["hold", "release", &id, "--reason", "again"],
        1,
        "already released",
    );
    // Malformed times and flag combinations are usage errors (exit 2).
    for bad in [
        "yesterday",
        "2026-13-01T00:00:00Z",
        "2026-03-01 25:00:00",
        "",
    ] {
        fails(
            &env,
            &[
                "hold", "place", "--source", "docs", "--from", bad, "--case", "C", "--reason", "r",
            ],
            2,
            "--from",
        );
    }
    fails(
        &env,
        &[
            "hold", "place", "--source", "docs", "--to", "nope", "--case", "C", "--reason", "r",
        ],
        2,
        "cannot read time",
    );
    fails(
        &env,
        &[
            "hold",
            "place",
            "--source",
            "docs",
            "--from",
            "2026-03-05T00:00:00Z",
            "--to",
            "2026-03-01T00:00:00Z",
            "--case",
            "C",
            "--reason",
            "r",
        ],
        1,
        "is after --to",
    );
    fails(
        &env,
        &["hold", "place", "--case", "C", "--reason", "r"],
        2,
        "--snapshot",
    );
    fails(
        &env,
        &[
            "hold",
            "place",
            "--snapshot",
            &ids[0],
            "--from",
            "2026-03-01T00:00:00Z",
            "--case",
            "C",
            "--reason",
            "r",
        ],
        2,
        "--from",
    );
    fails(
        &env,
        &[
            "hold",
            "place",
            "--snapshot",
            &ids[0],
            "--source",
            "docs",
            "--case",
            "C",
            "--reason",
            "r",
        ],
        2,
        "cannot be used with",
    );
    fails(
        &env,
        &["hold", "place", "--snapshot", &ids[0], "--reason", "r"],
        2,
        "--case",
    );
    fails(
        &env,
        &[
            "hold",
            "place",
            "--snapshot",
            &ids[0],
            "--case",
            " ",
            "--reason",
            "r",
        ],
        1,
        "case reference must not be empty",
    );
    // Nothing of the refused placements was stored.
    let names: Vec<_> = fs::read_dir(env.repo.join("holds")).unwrap().collect();
    assert_eq!(names.len(), 2, "the one hold and its release");
}

fn policy_file(env: &Env) -> std::path::PathBuf {
    let p = env.path("p.toml");
    fs::write(
        &p,
        "[[policy]]\nname = \"docs\"\nsource = \"docs\"\ntimezone = \"UTC\"\nkeep = { last = 1 }\n",
    )
    .unwrap();
    p
}

fn apply(env: &Env, policy: &Path) -> serde_json::Value {
    env.json([
        "policy".as_ref(),
        "apply".as_ref(),
        "--policy".as_ref(),
        policy.as_os_str(),
        "--yes".as_ref(),
        "--at".as_ref(),
        "2026-04-01T00:00:00Z".as_ref(),
    ])
}

fn rule_of(report: &serde_json::Value, id: &str) -> (String, String) {
    let s = report["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["snapshot"] == id)
        .unwrap_or_else(|| panic!("{id} not in {report}"));
    (
        s["outcome"].as_str().unwrap().to_string(),
        s["rule"].as_str().unwrap().to_string(),
    )
}

fn restore_same(env: &Env, id: &str, day: u32) {
    let to = env.path(&format!("restore-{id}-{}", rand_suffix()));
    env.ok(["restore", id, "--target", to.to_str().unwrap()]);
    let got = fs::read(find(&to, "note.bin").expect("note.bin restored")).unwrap();
    assert!(
        got == noise(200_000, u64::from(day)),
        "snapshot {id} restored wrong data"
    );
}

/// The file named `name` somewhere under `dir` (a restore recreates the
/// backed-up path below its target).
fn find(dir: &Path, name: &str) -> Option<std::path::PathBuf> {
    for e in fs::read_dir(dir).ok()? {
        let p = e.ok()?.path();
        if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
        if p.is_dir() {
            if let Some(f) = find(&p, name) {
                return Some(f);
            }
        }
    }
    None
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn pack_bytes(env: &Env) -> u64 {
    packs(&env.repo)
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum()
}

#[test]
fn held_snapshots_survive_apply_and_gc_and_are_reclaimed_after_release() {
    let env = Env::new();
    let ids = history(&env, 4);
    let policy = policy_file(&env);
    let a = place(
        &env,
        &["--snapshot", &ids[0], "--case", "CASE-1", "--reason", "r"],
    );
    let b = place(
        &env,
        &["--snapshot", &ids[0], "--case", "CASE-2", "--reason", "r"],
    );
    // A source hold over days 2..2 also covers snapshot 1 (index 1).
    let c = place(
        &env,
        &[
            "--source",
            "docs",
            "--from",
            "2026-03-02T00:00:00Z",
            "--to",
            "2026-03-02T23:59:59Z",
            "--case",
            "CASE-3",
            "--reason",
            "r",
        ],
    );
    let plan = stdout(&env.ok([
        "policy".as_ref(),
        "plan".as_ref(),
        "--policy".as_ref(),
        policy.as_os_str(),
        "--at".as_ref(),
        "2026-04-01T00:00:00Z".as_ref(),
    ]));
    assert!(plan.contains("held by CASE-1, CASE-2"), "{plan}");
    assert!(plan.contains("held by CASE-3"), "{plan}");
    let done = apply(&env, &policy);
    assert_eq!(
        rule_of(&done, &ids[0]),
        ("kept".into(), "held by CASE-1, CASE-2".into())
    );
    assert_eq!(
        rule_of(&done, &ids[1]),
        ("kept".into(), "held by CASE-3".into())
    );
    assert_eq!(rule_of(&done, &ids[2]).0, "purged");
    env.ok(["gc"]);
    restore_same(&env, &ids[0], 1);
    restore_same(&env, &ids[1], 2);
    restore_same(&env, &ids[3], 4);
    let before = pack_bytes(&env);

    // Releasing one of two holds on a snapshot keeps it held.
    env.ok([
        "hold",
        "release",
        a["id"].as_str().unwrap(),
        "--reason",
        "x",
    ]);
    let done = apply(&env, &policy);
    assert_eq!(
        rule_of(&done, &ids[0]),
        ("kept".into(), "held by CASE-2".into())
    );
    // Releasing the last: purged by the next apply, reclaimed by gc.
    env.ok([
        "hold",
        "release",
        b["id"].as_str().unwrap(),
        "--reason",
        "x",
    ]);
    env.ok([
        "hold",
        "release",
        c["id"].as_str().unwrap(),
        "--reason",
        "x",
    ]);
    let done = apply(&env, &policy);
    assert_eq!(rule_of(&done, &ids[0]).0, "purged");
    assert_eq!(rule_of(&done, &ids[1]).0, "purged");
    env.ok(["gc"]);
    let after = pack_bytes(&env);
    assert!(
        after * 2 < before,
        "released data is reclaimed: {before} -> {after} bytes"
    );
    restore_same(&env, &ids[3], 4);
}

#[test]
fn a_source_hold_covers_snapshots_taken_later_inside_its_range() {
    let env = Env::new();
    let ids = history(&env, 2);
    let h = place(
        &env,
        &[
            "--source",
            "docs",
            "--from",
            "2026-03-05T00:00:00Z",
            "--to",
            "2026-03-06T23:59:59Z",
            "--case",
            "CASE-7",
            "--reason",
            "r",
        ],
    );
    assert!(h["snapshots"].as_array().unwrap().is_empty());
    let src = env.path("docs");
    let mut later = Vec::new();
    for day in [5u32, 9] {
        fs::write(src.join("note.bin"), noise(200_000, u64::from(day))).unwrap();
        let v = env.json([
            "backup",
            "--source",
            "docs",
            "--time",
            &format!("2026-03-{day:02}T10:00:00Z"),
            src.to_str().unwrap(),
        ]);
        later.push(v["snapshot"].as_str().unwrap().to_string());
    }
    let shown = env.json(["hold", "show", h["id"].as_str().unwrap()]);
    let covered: Vec<&str> = shown["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(covered, vec![later[0].as_str()]);
    let policy = policy_file(&env);
    let done = apply(&env, &policy);
    assert_eq!(rule_of(&done, &later[0]).1, "held by CASE-7");
    assert_eq!(rule_of(&done, &ids[0]).0, "purged");
    env.ok(["gc"]);
    restore_same(&env, &later[0], 5);
}

#[test]
fn gc_refuses_while_a_held_snapshot_is_missing_or_a_hold_record_is_unreadable() {
    let env = Env::new();
    let ids = history(&env, 2);
    let policy = policy_file(&env);
    let h = place(
        &env,
        &["--snapshot", &ids[0], "--case", "CASE-1", "--reason", "r"],
    );
    // Someone deletes the held snapshot's manifest behind holdfast's back.
    let manifest = env.repo.join("snapshots").join(&ids[0]);
    let saved = fs::read(&manifest).unwrap();
    fs::remove_file(&manifest).unwrap();
    let before = packs(&env.repo);
    let out = env.run(["gc"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&ids[0]) && stderr(&out).contains("CASE-1"),
        "{}",
        stderr(&out)
    );
    assert_eq!(packs(&env.repo), before, "nothing deleted");
    fs::write(&manifest, saved).unwrap();
    env.ok(["gc"]);
    restore_same(&env, &ids[0], 1);

    // A forged (unreadable) hold record: everything counts as held, gc
    // deletes nothing.
    env.ok([
        "hold",
        "release",
        h["id"].as_str().unwrap(),
        "--reason",
        "x",
    ]);
    fs::write(env.repo.join("holds").join("H-abcdef"), b"forged").unwrap();
    let out = env.run([
        "--json".as_ref(),
        "policy".as_ref(),
        "apply".as_ref(),
        "--policy".as_ref(),
        policy.as_os_str(),
        "--yes".as_ref(),
        "--at".as_ref(),
        "2026-04-01T00:00:00Z".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("holds/H-abcdef"), "{}", stderr(&out));
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (outcome, rule) = rule_of(&done, &ids[0]);
    assert_eq!(outcome, "kept");
    assert!(
        rule.contains("unreadable hold record holds/H-abcdef"),
        "{rule}"
    );
    let out = env.run(["gc"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("holds/H-abcdef"), "{}", stderr(&out));
    let list = env.run(["hold", "list", "--all"]);
    assert_eq!(list.status.code(), Some(0));
    assert!(
        stderr(&list).contains("holds/H-abcdef"),
        "{}",
        stderr(&list)
    );
}
