//! `holdfast gc` through the real binary on local repositories: space comes
//! back, nothing reachable is lost, and backups running beside it (or
//! killed, or GC killed) never leave a snapshot that does not restore.
//! The Object Lock case runs on the S3 server in `s3.rs`.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use common::*;

/// Deterministic pseudo-random numbers (no test dependency for this).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const FILES: usize = 12;

fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("docs")).unwrap();
    for i in 0..FILES {
        fs::write(
            root.join(format!("docs/f{i:02}.bin")),
            noise(400_000, i as u64),
        )
        .unwrap();
    }
    fs::write(root.join("notes.txt"), text(100_000, 7)).unwrap();
}

/// Rewrite `n` files of the tree with new content.
fn mutate(root: &Path, rng: &mut Rng, n: usize) {
    for _ in 0..n {
        let i = rng.below(FILES as u64);
        // From a small pool: content that a dropped snapshot held comes
        // back, so backups reuse blobs GC has marked as garbage.
        let seed = 100 + rng.below(24);
        fs::write(root.join(format!("docs/f{i:02}.bin")), noise(400_000, seed)).unwrap();
    }
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            fs::copy(e.path(), &dest).unwrap();
        }
    }
}

fn data_bytes(repo: &Path) -> u64 {
    packs(repo)
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum()
}

/// Every file under `repo`, with its size: what a dry run must not change.
fn listing(dir: &Path) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if !d.ends_with("locks") && !d.ends_with("audit") {
                // Leases come and go; the audit trail records every run
                // (a refused one too: checked where it matters).
                out.insert(e.path(), e.metadata().unwrap().len());
            }
        }
    }
    out
}

/// Snapshots by tag: the tag each backup of these tests carries.
fn snapshots_by_tag(env: &Env) -> BTreeMap<String, String> {
    let v = env.json(["snapshots"]);
    v.as_array()
        .unwrap()
        .iter()
        .filter_map(|s| {
            let tag = s["tags"].as_array()?.first()?.as_str()?.to_string();
            Some((tag, s["id"].as_str()?.to_string()))
        })
        .collect()
}

/// Remove the newest snapshot's manifest, as a purge does (the newest, so
/// no later snapshot names it as predecessor).
fn drop_newest(env: &Env) -> String {
    let v = env.json(["snapshots"]);
    let newest = v
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|s| s["time"].as_str().unwrap().to_string())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    fs::remove_file(env.repo.join("snapshots").join(&newest)).unwrap();
    newest
}

/// Same files with the same bytes (the reference copies do not keep
/// times, so metadata is not compared here; other tests cover it).
fn same_content(expected: &Path, got: &Path) {
    let mut names: Vec<_> = fs::read_dir(expected)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut got_names: Vec<_> = fs::read_dir(got)
        .unwrap_or_else(|e| panic!("{}: {e}", got.display()))
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    got_names.sort();
    assert_eq!(names, got_names, "in {}", got.display());
    for n in names {
        let (a, b) = (expected.join(&n), got.join(&n));
        if a.is_dir() {
            same_content(&a, &b);
        } else {
            assert!(
                fs::read(&a).unwrap() == fs::read(&b).unwrap(),
                "{} differs",
                b.display()
            );
        }
    }
}

fn restores_exactly(env: &Env, id: &str, src: &Path, expected: &Path) {
    let target = env.path(&format!("restore-{}", &id[..12]));
    let _ = fs::remove_dir_all(&target);
    env.ok([
        "restore".as_ref(),
        id.as_ref(),
        "--target".as_ref(),
        target.as_os_str(),
    ]);
    same_content(expected, &target.join(src.strip_prefix("/").unwrap()));
}

#[test]
fn gc_returns_the_space_of_dropped_snapshots_and_keeps_the_rest_whole() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    make_tree(&src);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut refs = BTreeMap::new();
    for round in 0..4 {
        if round > 0 {
            mutate(&src, &mut rng, 4);
        }
        let tag = format!("r{round}");
        env.ok([
            "backup".as_ref(),
            "--tag".as_ref(),
            tag.as_ref(),
            src.as_os_str(),
        ]);
        let copy = env.path(&format!("ref-{tag}"));
        copy_tree(&src, &copy);
        refs.insert(tag, copy);
    }
    // The newest goes: what only it holds is garbage.
    let dropped = drop_newest(&env);
    let before_files = listing(&env.repo);
    let before = data_bytes(&env.repo);

    // A dry run reports and changes nothing.
    let plan = env.json(["gc", "--dry-run"]);
    assert_eq!(plan["dry_run"], true);
    assert!(plan["packs_deleted"].as_u64().unwrap() + plan["packs_repacked"].as_u64().unwrap() > 0);
    assert_eq!(
        listing(&env.repo),
        before_files,
        "a dry run changed the repository"
    );

    let report = env.json(["gc"]);
    // The dry run said exactly what the run did.
    for k in [
        "packs_deleted",
        "bytes_deleted",
        "packs_repacked",
        "repack_bytes_read",
    ] {
        assert_eq!(plan[k], report[k], "{k}: {plan} vs {report}");
    }
    let after = data_bytes(&env.repo);
    assert!(after < before, "gc freed nothing: {before} -> {after}");
    assert_eq!(report["bytes_after"].as_u64().unwrap(), after, "{report}");
    assert_eq!(report["snapshots"], 3);
    // About one round's new data was only in the dropped snapshot.
    assert!(
        before - after >= 4 * 400_000 / 2,
        "only {} bytes freed",
        before - after
    );
    env.ok(["check", "--read-data"]);
    let snaps = snapshots_by_tag(&env);
    assert_eq!(snaps.len(), 3);
    assert!(!snaps.values().any(|id| *id == dropped));
    for (tag, id) in &snaps {
        restores_exactly(&env, id, &src, &refs[tag]);
    }
    // A second run finds nothing more to do, and merged the index.
    let again = env.json(["gc"]);
    assert_eq!(again["packs_deleted"], 0, "{again}");
    assert_eq!(again["packs_repacked"], 0, "{again}");
    assert!(
        again["index_objects_after"].as_u64().unwrap() <= 2,
        "{again}"
    );
    // The next backup after GC is still incremental and correct.
    mutate(&src, &mut rng, 2);
    env.ok([
        "backup".as_ref(),
        "--tag".as_ref(),
        "after".as_ref(),
        src.as_os_str(),
    ]);
    env.ok(["check", "--read-data"]);
    let snaps = snapshots_by_tag(&env);
    restores_exactly(&env, &snaps["after"], &src, &src);
}

#[test]
fn gc_deletes_what_interrupted_writers_left_unless_younger_than_min_age() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    make_tree(&src);
    env.ok([
        "backup".as_ref(),
        "--tag".as_ref(),
        "base".as_ref(),
        src.as_os_str(),
    ]);
    // Packs no index names and no snapshot uses: what a writer killed
    // before its index leaves. Fake one by copying a real pack under a new
    // name (its content is a valid pack, unknown to the index).
    let real = packs(&env.repo)[0].clone();
    let bytes = fs::read(&real).unwrap();
    let mut orphan_bytes = bytes.clone();
    orphan_bytes.extend_from_slice(b"junk");
    let name = holdfast_repo::Id::of_stored(&orphan_bytes).to_hex();
    let dir = env.repo.join("data").join(&name[..2]);
    fs::create_dir_all(&dir).unwrap();
    let orphan = dir.join(&name);
    fs::write(&orphan, &orphan_bytes).unwrap();

    let young = env.json(["gc", "--min-age", "1h"]);
    assert_eq!(young["packs_kept_young"], 1, "{young}");
    assert!(orphan.exists());
    let r = env.json(["gc"]);
    assert_eq!(r["unindexed_deleted"], 1, "{r}");
    assert!(!orphan.exists());
    env.ok(["check", "--read-data"]);
    let snaps = snapshots_by_tag(&env);
    restores_exactly(&env, &snaps["base"], &src, &src);
}

#[test]
fn gc_refuses_to_delete_anything_while_a_root_or_the_index_is_unreadable() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    make_tree(&src);
    env.ok(["backup".as_ref(), src.as_os_str()]);
    let mut rng = Rng(5);
    mutate(&src, &mut rng, 3);
    env.ok(["backup".as_ref(), src.as_os_str()]);
    drop_newest(&env);
    // A damaged snapshot: its references are unknown.
    let snap = fs::read_dir(env.repo.join("snapshots"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let good = fs::read(&snap).unwrap();
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 5] ^= 0xff;
    fs::write(&snap, &bad).unwrap();
    let before = listing(&env.repo);
    // Without the local cache, whose verified copy would stand in for it.
    let out = env.run(["--no-cache", "gc"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("cannot be read") && err.contains("deletes nothing"),
        "{err}"
    );
    assert_eq!(listing(&env.repo), before);
    // The refused run is on the audit trail, with why.
    let log = env.json(["audit", "log"]);
    let last = log.as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["operation"].as_str(), last["outcome"].as_str()),
        (Some("gc"), Some("failure"))
    );
    assert!(
        last["error"].as_str().unwrap().contains("cannot be read"),
        "{last}"
    );
    fs::write(&snap, &good).unwrap();

    // A damaged index object: the packs it names would look unindexed.
    let idx = fs::read_dir(env.repo.join("index"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let good = fs::read(&idx).unwrap();
    let mut bad = good.clone();
    bad[40] ^= 0xff;
    fs::write(&idx, &bad).unwrap();
    let out = env.run(["--no-cache", "gc"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("index object") && err.contains("repair index"),
        "{err}"
    );
    assert_eq!(listing(&env.repo), before);
    fs::write(&idx, &good).unwrap();
    env.ok(["gc"]);
    env.ok(["check", "--read-data"]);
}

fn spawn(env: &Env, args: &[&std::ffi::OsStr]) -> Child {
    env.cmd()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Wait for a child; `None` if it was killed, else its exit code and stderr.
fn wait(child: Child) -> Option<(i32, String)> {
    let out = child.wait_with_output().unwrap();
    out.status.code().map(|c| (c, stderr(&out)))
}

fn kill9(child: &Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGKILL);
    }
}

#[test]
fn backups_and_gc_in_parallel_with_kill_9_lose_nothing() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    make_tree(&src);
    let mut rng = Rng(0xdead_beef_1234_5678);
    let mut refs: BTreeMap<String, PathBuf> = BTreeMap::new();
    // Short leases, so that a killed process's lease goes stale quickly
    // and the next GC need not wait ten minutes for it.
    let lease: &std::ffi::OsStr = "--lease-duration=4s".as_ref();
    let rounds = 16;
    let mut kills = (0, 0);
    // (GC runs that deleted, roots committed during a GC, packs rescued)
    let mut sweeps = (0u64, 0u64, 0u64);
    let mut segments: Vec<PathBuf> = Vec::new();
    let policy = env.path("keep.toml");
    fs::write(
        &policy,
        "[[policy]]\nname = \"rounds\"\nsource = \"*\"\ntimezone = \"UTC\"\nkeep = { last = 4 }\n",
    )
    .unwrap();
    for round in 0..rounds {
        mutate(&src, &mut rng, 3);
        let tag = format!("r{round:02}");
        let copy = env.path(&format!("ref-{tag}"));
        copy_tree(&src, &copy);
        refs.insert(tag.clone(), copy);
        // Either may start first: a GC whose mark runs before the backup
        // commits walks the new snapshot under its exclusive lease.
        let backup_args = [
            lease,
            "backup".as_ref(),
            "--tag".as_ref(),
            tag.as_ref(),
            src.as_os_str(),
        ];
        let gc_args = [lease, "--json".as_ref(), "gc".as_ref()];
        // Every third round a purge runs at the same time (keep the last
        // four), making garbage for the GCs that follow.
        let apply = (round % 3 == 2).then(|| {
            spawn(
                &env,
                &[
                    lease,
                    "policy".as_ref(),
                    "apply".as_ref(),
                    "--policy".as_ref(),
                    policy.as_os_str(),
                    "--yes".as_ref(),
                ],
            )
        });
        let (backup, gc) = if round % 2 == 0 {
            let b = spawn(&env, &backup_args);
            std::thread::sleep(Duration::from_millis(rng.below(150)));
            (b, spawn(&env, &gc_args))
        } else {
            let g = spawn(&env, &gc_args);
            std::thread::sleep(Duration::from_millis(rng.below(150)));
            (spawn(&env, &backup_args), g)
        };
        std::thread::sleep(Duration::from_millis(rng.below(600)));
        match rng.below(3) {
            0 => {
                kill9(&backup);
                kills.0 += 1;
            }
            1 => {
                kill9(&gc);
                kills.1 += 1;
            }
            _ => {}
        }
        if let Some((code, err)) = wait(backup) {
            assert_eq!(code, 0, "round {round}: backup failed: {err}");
        }
        // A WAL segment archived at the same time: WAL manifests are roots.
        let seg = env.path(&format!("{:024X}", 0x1_0000_0000_0000_u64 + round as u64));
        fs::write(&seg, noise(300_000, 5000 + round as u64)).unwrap();
        let push = spawn(
            &env,
            &[
                lease,
                "wal-push".as_ref(),
                "--cluster".as_ref(),
                "42".as_ref(),
                seg.as_os_str(),
            ],
        );
        if let Some((code, err)) = wait(push) {
            assert_eq!(code, 0, "round {round}: wal-push failed: {err}");
        }
        segments.push(seg);
        let out = gc.wait_with_output().unwrap();
        if let Some(code) = out.status.code() {
            // GC may give up on the exclusive lease while a killed
            // writer's lease is still live (exit 7): nothing deleted then.
            assert!(
                code == 0 || code == 7,
                "round {round}: gc exit {code}: {}",
                stderr(&out)
            );
            if code == 0 {
                let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                sweeps.0 += u64::from(r["packs_deleted"].as_u64().unwrap() > 0);
                sweeps.1 += r["new_roots"].as_u64().unwrap();
                sweeps.2 += r["packs_rescued"].as_u64().unwrap();
            }
        }
        if let Some(apply) = apply {
            let out = apply.wait_with_output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "round {round}: policy apply: {}",
                stderr(&out)
            );
        }
    }
    assert!(
        kills.0 > 0 && kills.1 > 0,
        "the seed killed too little: {kills:?}"
    );
    eprintln!("kills (backup, gc) {kills:?}; gc runs that deleted, roots committed meanwhile, packs rescued: {sweeps:?}");
    assert!(sweeps.0 > 0, "no GC run deleted anything: {sweeps:?}");
    // Let the killed processes' leases go stale, then a last GC alone.
    std::thread::sleep(Duration::from_secs(5));
    env.ok(["unlock"]);
    env.ok(["gc"]);
    env.ok(["check", "--read-data"]);
    let snaps = snapshots_by_tag(&env);
    assert!((4..=7).contains(&snaps.len()), "{snaps:?}");
    for (tag, id) in &snaps {
        restores_exactly(&env, id, &src, &refs[tag]);
    }
    for seg in &segments {
        let name = seg.file_name().unwrap();
        let dest = env.path("fetched");
        env.ok([
            "wal-fetch".as_ref(),
            "--cluster".as_ref(),
            "42".as_ref(),
            name,
            dest.as_os_str(),
        ]);
        assert!(
            fs::read(&dest).unwrap() == fs::read(seg).unwrap(),
            "{name:?} differs"
        );
        fs::remove_file(&dest).unwrap();
    }
}
