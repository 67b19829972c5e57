//! Someone with write access to the storage but not the key: swapped,
//! renamed, moved and replaced objects of every kind, and hostile key
//! slots. Each must be refused with an error naming the object and a
//! non-zero exit, and nothing may ever restore wrong data; hostile slots
//! must not lock out a good password.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use holdfast_repo::Id;

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn swap(a: &Path, b: &Path) {
    let tmp = a.with_extension("swap");
    fs::rename(a, &tmp).unwrap();
    fs::rename(b, a).unwrap();
    fs::rename(&tmp, b).unwrap();
}

/// A repository with two snapshots of different sources: (id, content) each.
fn two_sources(env: &Env) -> Vec<(String, PathBuf)> {
    env.init();
    let mut out = Vec::new();
    for (i, src) in ["alpha", "beta"].iter().enumerate() {
        let dir = env.path(src);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("data.bin"), noise(5000 + i, i as u64)).unwrap();
        let v = env.json(["backup", "--source", src, dir.to_str().unwrap()]);
        out.push((v["snapshot"].as_str().unwrap().to_string(), dir));
    }
    out
}

/// Run, require a failure (exit code other than 0), return stderr. Without
/// the local cache: it holds genuine copies of what this machine wrote
/// (verified by hash), so with it a restore here gets the right data from
/// it; what is tested is a reader that has only the tampered storage.
fn fails(env: &Env, args: &[&str]) -> String {
    let mut args = args.to_vec();
    args.push("--no-cache");
    let out = env.run(&args);
    assert_ne!(
        out.status.code(),
        Some(0),
        "{args:?} succeeded: {}",
        stdout(&out)
    );
    assert!(out.status.code().is_some(), "{args:?} crashed");
    stderr(&out)
}

fn restore_fails(env: &Env, spec: &str) -> String {
    let target = env.path(&format!("restore-{}", spec.len()));
    let e = fails(
        env,
        &["restore", spec, "--target", target.to_str().unwrap()],
    );
    // Nothing restored, least of all the other snapshot's data (the marker
    // of an unfinished restore, which a rerun resumes from, may stay).
    let restored: Vec<_> = walk(&target)
        .into_iter()
        .filter(|p| name(p) != ".holdfast-restore-in-progress")
        .collect();
    assert!(restored.is_empty(), "restored {restored:?}");
    e
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in files_in(dir) {
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn swapped_snapshots_are_refused_by_name() {
    let env = Env::new();
    let snaps = two_sources(&env);
    let (a, b) = (&snaps[0].0, &snaps[1].0);
    let dir = env.repo.join("snapshots");
    swap(&dir.join(a), &dir.join(b));
    let e = restore_fails(&env, a);
    assert!(
        e.contains(&format!(
            "snapshots/{a} holds the object named snapshots/{b}"
        )),
        "{e}"
    );
    let e = restore_fails(&env, "latest");
    assert!(
        e.contains("cannot tell which snapshot is the latest"),
        "{e}"
    );
    let e = fails(&env, &["check", "--read-data"]);
    assert!(
        e.contains(&format!(
            "snapshots/{a} holds the object named snapshots/{b}"
        )) && e.contains(&format!(
            "snapshots/{b} holds the object named snapshots/{a}"
        )),
        "{e}"
    );
}

#[test]
fn renamed_and_replaced_snapshots_are_refused() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let mut ids = Vec::new();
    for round in 0..3u64 {
        fs::write(src.join("record.txt"), text(3000, round)).unwrap();
        let v = env.json(["backup", "--source", "records", src.to_str().unwrap()]);
        ids.push(v["snapshot"].as_str().unwrap().to_string());
    }
    let dir = env.repo.join("snapshots");
    // An old snapshot copied over the newest name.
    fs::remove_file(dir.join(&ids[2])).unwrap();
    fs::copy(dir.join(&ids[0]), dir.join(&ids[2])).unwrap();
    let e = restore_fails(&env, &ids[2]);
    assert!(
        e.contains(&format!(
            "snapshots/{} holds the object named snapshots/{}",
            ids[2], ids[0]
        )),
        "{e}"
    );
    restore_fails(&env, "latest");
    fails(&env, &["check"]);
    // Renamed to a fresh name.
    let fresh = Id::of_stored(b"a name no object has").to_hex();
    fs::rename(dir.join(&ids[2]), dir.join(&fresh)).unwrap();
    let e = restore_fails(&env, &fresh);
    assert!(
        e.contains(&format!(
            "snapshots/{fresh} holds the object named snapshots/{}",
            ids[0]
        )),
        "{e}"
    );
    fs::remove_file(dir.join(&fresh)).unwrap();
    // Now the newest is simply gone: undetectable by design (docs/format.md).
    env.ok(["check"]);
}

#[test]
fn a_deleted_snapshot_is_reported_by_its_successor() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let mut ids = Vec::new();
    for round in 0..3u64 {
        fs::write(src.join("record.txt"), text(3000, round)).unwrap();
        let v = env.json(["backup", "--source", "records", src.to_str().unwrap()]);
        ids.push(v["snapshot"].as_str().unwrap().to_string());
    }
    env.ok(["check"]);
    fs::remove_file(env.repo.join("snapshots").join(&ids[1])).unwrap();
    let e = fails(&env, &["check"]);
    assert!(
        e.contains(&format!(
            "snapshot {} names predecessor {} of source \"records\", which is missing: deleted or rolled back",
            ids[2], ids[1]
        )),
        "{e}"
    );
}

#[test]
fn moved_and_swapped_index_objects_are_refused() {
    let env = Env::new();
    let snaps = two_sources(&env);
    let index = files_in(&env.repo.join("index"));
    assert_eq!(index.len(), 2);
    swap(&index[0], &index[1]);
    let e = fails(&env, &["check"]);
    assert!(
        e.contains(&format!(
            "index/{} holds the object named index/{}",
            name(&index[0]),
            name(&index[1])
        )),
        "{e}"
    );
    restore_fails(&env, &snaps[0].0);
    swap(&index[0], &index[1]);
    env.ok(["check"]);
    // An index object copied into snapshots/ (under its own hash name) and
    // a snapshot copied into index/.
    let snap = env.repo.join("snapshots").join(&snaps[0].0);
    fs::copy(&index[0], env.repo.join("snapshots").join(name(&index[0]))).unwrap();
    fs::copy(&snap, env.repo.join("index").join(&snaps[0].0)).unwrap();
    let e = fails(&env, &["check"]);
    assert!(
        e.contains(&format!(
            "snapshots/{} holds a index object",
            name(&index[0])
        )) && e.contains(&format!("index/{} holds a snapshot object", snaps[0].0)),
        "{e}"
    );
    let e = restore_fails(&env, &name(&index[0]));
    assert!(e.contains("holds a index object"), "{e}");
}

#[test]
fn swapped_and_moved_packs_never_restore_wrong_data() {
    let env = Env::new();
    let snaps = two_sources(&env);
    let data: Vec<PathBuf> = packs(&env.repo)
        .into_iter()
        .filter(|p| fs::metadata(p).unwrap().len() > 4000)
        .collect();
    assert!(data.len() >= 2, "{data:?}");
    swap(&data[0], &data[1]);
    for (id, _) in &snaps {
        restore_fails(&env, id);
    }
    let e = fails(&env, &["check", "--read-data"]);
    assert!(
        e.contains(&format!("pack {}", name(&data[0]))) && e.contains("does not hash to its name"),
        "{e}"
    );
    swap(&data[0], &data[1]);
    // A pack copied into index/ and snapshots/.
    fs::copy(&data[0], env.repo.join("index").join(name(&data[0]))).unwrap();
    fs::copy(&data[0], env.repo.join("snapshots").join(name(&data[0]))).unwrap();
    let e = fails(&env, &["check"]);
    assert!(
        e.contains(&format!("index/{}", name(&data[0])))
            && e.contains(&format!("snapshots/{}", name(&data[0]))),
        "{e}"
    );
}

const SEG1: &str = "000000010000000000000001";
const SEG2: &str = "000000010000000000000002";

fn wal_archive(env: &Env) -> PathBuf {
    env.init();
    let wal = env.path("pg_wal");
    fs::create_dir_all(&wal).unwrap();
    for (i, seg) in [SEG1, SEG2].iter().enumerate() {
        fs::write(wal.join(seg), noise(100_000 + i, 40 + i as u64)).unwrap();
        env.ok([
            "wal-push",
            wal.join(seg).to_str().unwrap(),
            "--cluster",
            "7",
        ]);
    }
    wal
}

fn fetch_fails(env: &Env, seg: &str) -> String {
    let dest = env.path(&format!("fetched-{seg}"));
    let e = fails(
        env,
        &["wal-fetch", seg, dest.to_str().unwrap(), "--cluster", "7"],
    );
    assert!(!dest.exists(), "{seg} was written");
    e
}

#[test]
fn swapped_renamed_and_moved_wal_manifests_are_refused() {
    let env = Env::new();
    let wal = wal_archive(&env);
    let dir = env.repo.join("wal");
    let (m1, m2) = (dir.join(format!("7-{SEG1}")), dir.join(format!("7-{SEG2}")));
    swap(&m1, &m2);
    let e = fetch_fails(&env, SEG1);
    assert!(
        e.contains(&format!("wal/7-{SEG1} holds the object named wal/7-{SEG2}")),
        "{e}"
    );
    let e = fails(&env, &["check"]);
    assert!(
        e.contains(&format!("wal/7-{SEG2} holds the object named wal/7-{SEG1}")),
        "{e}"
    );
    swap(&m1, &m2);
    env.ok(["check", "--read-data"]);
    let ok = env.path("ok");
    env.ok(["wal-fetch", SEG1, ok.to_str().unwrap(), "--cluster", "7"]);
    assert_eq!(fs::read(&ok).unwrap(), fs::read(wal.join(SEG1)).unwrap());

    // Renamed: a manifest under the name of a segment never archived.
    let seg3 = "000000010000000000000003";
    fs::copy(&m1, dir.join(format!("7-{seg3}"))).unwrap();
    let e = fetch_fails(&env, seg3);
    assert!(
        e.contains(&format!("wal/7-{seg3} holds the object named wal/7-{SEG1}")),
        "{e}"
    );
    fs::remove_file(dir.join(format!("7-{seg3}"))).unwrap();

    // Moved: a snapshot or an index object put where a manifest belongs.
    let index = files_in(&env.repo.join("index")).remove(0);
    fs::copy(&index, dir.join(format!("7-{seg3}"))).unwrap();
    let e = fetch_fails(&env, seg3);
    assert!(
        e.contains(&format!("wal/7-{seg3} holds a index object")),
        "{e}"
    );
    let e = fails(&env, &["check"]);
    assert!(e.contains(&format!("wal/7-{seg3}")), "{e}");
    fs::remove_file(dir.join(format!("7-{seg3}"))).unwrap();

    // A manifest whose blobs are gone from the index is reported by check.
    for f in files_in(&env.repo.join("index")) {
        fs::remove_file(f).unwrap();
    }
    let e = fails(&env, &["check"]);
    assert!(
        e.contains(&format!("WAL manifest wal/7-{SEG1} names")),
        "{e}"
    );
}

/// A key slot file named by the hash of its bytes, so only its content
/// is hostile; the label is varied until the name sorts first.
fn plant_slot(repo: &Path, mut slot: serde_json::Value) -> String {
    for i in 0.. {
        slot["label"] = format!("hostile {i}").into();
        let bytes = serde_json::to_vec_pretty(&slot).unwrap();
        let n = Id::of_stored(&bytes).to_hex();
        if n.starts_with('0') {
            fs::write(repo.join("keys").join(&n), bytes).unwrap();
            return n;
        }
    }
    unreachable!()
}

/// A change that makes a good slot hostile.
type Edit = Box<dyn Fn(&mut serde_json::Value)>;

fn good_slot(repo: &Path) -> serde_json::Value {
    let f = files_in(&repo.join("keys")).remove(0);
    serde_json::from_slice(&fs::read(f).unwrap()).unwrap()
}

#[test]
fn hostile_key_slots_never_lock_out_the_good_password() {
    let env = Env::new();
    env.init();
    let good = good_slot(&env.repo);
    let mut planted = Vec::new();
    let variants: Vec<(&str, Edit)> = vec![
        ("m_cost=1", Box::new(|s| s["params"]["m_cost"] = 1.into())),
        (
            "m_cost=2^32-1",
            Box::new(|s| s["params"]["m_cost"] = u32::MAX.into()),
        ),
        (
            "t_cost=2^32-1",
            Box::new(|s| s["params"]["t_cost"] = u32::MAX.into()),
        ),
        (
            "p_cost=2^24",
            Box::new(|s| s["params"]["p_cost"] = (1u32 << 24).into()),
        ),
        ("unknown kdf", Box::new(|s| s["kdf"] = "scrypt".into())),
        ("short nonce", Box::new(|s| s["nonce"] = "00ff".into())),
        (
            "truncated wrapped key",
            Box::new(|s| {
                let w = s["wrapped"].as_str().unwrap().to_string();
                s["wrapped"] = w[..40].to_string().into();
            }),
        ),
        (
            "no params",
            Box::new(|s| s["params"] = serde_json::Value::Null),
        ),
        ("bad salt", Box::new(|s| s["salt"] = "zz".into())),
    ];
    for (what, change) in &variants {
        let mut s = good.clone();
        change(&mut s);
        planted.push((*what, plant_slot(&env.repo, s)));
    }
    // Damaged files: truncated JSON, and a slot renamed.
    let truncated = "0".repeat(64);
    let bytes = serde_json::to_vec_pretty(&good).unwrap();
    fs::write(
        env.repo.join("keys").join(&truncated),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    let renamed = format!("00{}", "1".repeat(62));
    fs::write(env.repo.join("keys").join(&renamed), &bytes).unwrap();

    let started = std::time::Instant::now();
    let out = env.ok(["snapshots"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    let e = stderr(&out);
    for (what, n) in &planted {
        assert!(e.contains(&format!("keys/{n}")), "{what} not reported: {e}");
    }
    assert!(e.contains("refused, never attempted"), "{e}");
    assert!(e.contains("unknown kdf \"scrypt\""), "{e}");
    assert!(e.contains(&format!("keys/{truncated}")), "{e}");
    assert!(
        e.contains(&format!("keys/{renamed} holds the slot named keys/")),
        "{e}"
    );

    // A wrong password: the refusal counts why each slot did not open.
    let out = env
        .cmd()
        .env("HOLDFAST_PASSWORD", "not it")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let e = stderr(&out);
    assert!(e.contains("1 wrong, 6 damaged, 5 skipped"), "{e}");
}

#[test]
fn a_swapped_key_slot_is_reported_not_called_a_wrong_password() {
    let env = Env::new();
    env.init();
    let slot = files_in(&env.repo.join("keys")).remove(0);
    let other = env
        .repo
        .join("keys")
        .join(Id::of_stored(b"elsewhere").to_hex());
    fs::rename(&slot, &other).unwrap();
    let out = env.run(["snapshots"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(
        e.contains(&format!(
            "keys/{} holds the slot named keys/{}",
            name(&other),
            name(&slot)
        )),
        "{e}"
    );
}
