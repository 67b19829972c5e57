//! `check` and `repair` against repositories being written to, holding
//! duplicate packs, and holding objects in the wrong place.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;

/// Every regular file under `dir` (recursively).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn checks_during_backups_report_no_damage() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    for i in 0..20 {
        std::fs::write(src.join(format!("f{i}")), noise(200_000, i)).unwrap();
    }
    env.ok(["backup", src.to_str().unwrap()]);
    let stop = Arc::new(AtomicBool::new(false));
    let backups = {
        let stop = stop.clone();
        let repo = env.repo.clone();
        let src = src.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // New content each time: packs, index objects and a snapshot.
                std::fs::write(src.join(format!("new{n}")), noise(300_000, 1000 + n)).unwrap();
                let o = std::process::Command::new(BIN)
                    .env("HOLDFAST_REPOSITORY", &repo)
                    .env("HOLDFAST_PASSWORD", PASSWORD)
                    .args(["backup", "-q", src.to_str().unwrap()])
                    .output()
                    .unwrap();
                assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
                n += 1;
            }
            n
        })
    };
    let mut failures = Vec::new();
    for _ in 0..30 {
        let o = env.run(["check"]);
        if o.status.code() != Some(0) {
            failures.push(stderr(&o));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let n = backups.join().unwrap();
    assert!(n >= 3, "backups ran alongside the checks ({n})");
    assert!(
        failures.is_empty(),
        "{} false alarm(s): {:?}",
        failures.len(),
        failures
    );
    env.ok(["check", "--read-data"]);
}

#[test]
fn duplicate_packs_of_concurrent_backups_are_verified() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    for i in 0..6 {
        std::fs::write(src.join(format!("f{i}")), noise(3_000_000, i)).unwrap();
    }
    // Two backups of the same data at once: neither sees the other's blobs,
    // so both store them, in different packs.
    let packs = loop {
        let spawn = || {
            env.cmd()
                .args(["backup", "-q", src.to_str().unwrap()])
                .spawn()
                .unwrap()
        };
        let (mut a, mut b) = (spawn(), spawn());
        assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
        let packs = files(&env.repo.join("data"));
        let snaps = files(&env.repo.join("snapshots")).len();
        // 18 MB of incompressible data: one backup alone makes two packs
        // (one for data, one for trees); both wrote everything if >= 4.
        if packs.len() >= 4 && snaps >= 2 {
            break packs;
        }
        // The second started late and deduplicated; try again on a fresh repo.
        std::fs::remove_dir_all(&env.repo).unwrap();
        env.init();
    };
    let report = env.json(["check", "--read-data"]);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(
        report["report"]["packs_read"].as_u64().unwrap() as usize,
        packs.len(),
        "every stored pack is read: {report}"
    );
    assert!(
        report["report"]["warnings"].as_array().unwrap().is_empty(),
        "no pack is 'in no index': {report}"
    );
    // Damage every pack: every one must be reported.
    for p in &packs {
        let mut b = std::fs::read(p).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0x40;
        std::fs::write(p, b).unwrap();
    }
    let o = env.run(["check", "--read-data"]);
    assert_eq!(o.status.code(), Some(4));
    for p in &packs {
        assert!(
            stderr(&o).contains(&name(p)),
            "pack {} not reported: {}",
            name(p),
            stderr(&o)
        );
    }
}

#[test]
fn repair_index_puts_back_and_sets_aside_instead_of_deleting() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a"), text(2_000_000, 1)).unwrap();
    env.ok(["backup", src.to_str().unwrap()]);
    std::fs::write(src.join("b"), text(1_000_000, 2)).unwrap();
    env.ok(["backup", src.to_str().unwrap()]);
    let index = env.repo.join("index");

    // A snapshot and a pack moved into index/, a stray file, another
    // repository's (intact) index object, and a truncated index object.
    let snap = files(&env.repo.join("snapshots"))[0].clone();
    std::fs::rename(&snap, index.join(name(&snap))).unwrap();
    let pack = files(&env.repo.join("data"))[0].clone();
    std::fs::rename(&pack, index.join(name(&pack))).unwrap();
    std::fs::write(index.join("notes.txt"), "operator notes").unwrap();
    let other = Env::new();
    other.init();
    other.ok(["backup", src.to_str().unwrap()]);
    let foreign = files(&other.repo.join("index"))[0].clone();
    std::fs::copy(&foreign, index.join(name(&foreign))).unwrap();
    let victim = files(&index)
        .into_iter()
        .find(|p| {
            let n = name(p);
            n != name(&snap) && n != name(&pack) && n != name(&foreign) && n != "notes.txt"
        })
        .unwrap();
    let b = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &b[..b.len() - 7]).unwrap();

    assert_eq!(env.run(["check"]).status.code(), Some(4));
    let r = env.json(["repair", "index"]);
    let placed = r["placed"].to_string();
    assert!(
        placed.contains(&format!("snapshots/{}", name(&snap))),
        "{r}"
    );
    assert!(placed.contains(&name(&pack)), "{r}");
    let aside = r["moved_aside"].to_string();
    assert!(aside.contains("lost+found/index-notes.txt"), "{r}");
    assert!(
        aside.contains(&format!("lost+found/index-{}", name(&foreign))),
        "{r}"
    );
    let removed = r["removed_index_objects"].to_string();
    assert!(removed.contains(&name(&victim)), "{r}");
    assert!(
        !removed.contains(&name(&snap)) && !removed.contains("notes"),
        "{r}"
    );

    assert!(snap.exists(), "snapshot back in snapshots/");
    assert!(pack.exists(), "pack back in data/");
    let lf = env.repo.join("lost+found");
    assert_eq!(
        std::fs::read(lf.join("index-notes.txt")).unwrap(),
        b"operator notes"
    );
    env.ok(["check", "--read-data"]);
    let out = env.path("out");
    for s in env.json(["snapshots"]).as_array().unwrap() {
        let _ = std::fs::remove_dir_all(&out);
        env.ok([
            "restore",
            s["id"].as_str().unwrap(),
            "--target",
            out.to_str().unwrap(),
        ]);
    }
    assert_same_tree(&src, &out.join(src.strip_prefix("/").unwrap()));
}

#[test]
fn stray_snapshot_objects_are_reported_and_can_be_moved_aside() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a"), text(100_000, 1)).unwrap();
    env.ok(["backup", src.to_str().unwrap()]);
    let snaps = env.repo.join("snapshots");
    std::fs::write(snaps.join("README"), "not a snapshot").unwrap();
    // An index object copied into snapshots/ belongs in index/ (already there).
    let idx = files(&env.repo.join("index"))[0].clone();
    std::fs::copy(&idx, snaps.join(name(&idx))).unwrap();

    let o = env.run(["check"]);
    assert_eq!(o.status.code(), Some(4));
    assert!(
        stderr(&o).contains("README") && stderr(&o).contains("repair snapshots"),
        "{}",
        stderr(&o)
    );
    let r = env.json(["repair", "snapshots"]);
    assert!(
        r["moved_aside"]
            .to_string()
            .contains("lost+found/snapshots-README"),
        "{r}"
    );
    assert!(r["placed"].to_string().contains(&name(&idx)), "{r}");
    assert!(!snaps.join("README").exists() && !snaps.join(name(&idx)).exists());
    assert!(env.repo.join("lost+found/snapshots-README").exists());
    assert!(idx.exists());
    env.ok(["check"]);
    assert_eq!(env.json(["snapshots"]).as_array().unwrap().len(), 1);
}

#[test]
fn unindexed_packs_are_described_neutrally() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a"), noise(100_000, 1)).unwrap();
    env.ok(["backup", src.to_str().unwrap()]);
    // What a wal-push or backup that died before its index leaves: packs in
    // no index. Made here by setting the index aside.
    for p in files(&env.repo.join("index")) {
        std::fs::remove_file(p).unwrap();
    }
    let o = env.run(["check"]);
    let e = stderr(&o);
    assert!(e.contains("not in any index"), "{e}");
    assert!(e.contains("wal-push") && e.contains("backup"), "{e}");
    assert!(!e.contains("left by an interrupted backup;"), "{e}");
    // And they are indexed again by repair.
    env.ok(["repair", "index"]);
    env.ok(["check", "--read-data"]);
}
