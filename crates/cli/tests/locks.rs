//! Repository locks through the binary: a backup's lease is visible in
//! `holdfast locks` while it runs; a writer killed with SIGKILL leaves a
//! lease that turns stale after its expiry and that `unlock` then removes
//! (and only then); `unlock --force` removes a live one and its holder
//! refuses to commit; two backups of different trees run at the same time
//! beside each other's shared lease, and both snapshots restore and check.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A tree large enough that a debug-build backup of it takes seconds.
fn big_tree(root: &Path, mib: usize, seed: u64) {
    fs::create_dir_all(root).unwrap();
    for i in 0..(mib / 16) as u64 {
        fs::write(root.join(format!("f{i}.bin")), noise(16 << 20, seed + i)).unwrap();
    }
}

fn small_tree(root: &Path, seed: u64) {
    fs::create_dir_all(root.join("d")).unwrap();
    for i in 0..20u64 {
        fs::write(
            root.join(format!("d/t{i}.txt")),
            text(3000 + i as usize, seed + i),
        )
        .unwrap();
    }
}

fn lock_objects(env: &Env) -> usize {
    fs::read_dir(env.repo.join("locks"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .unwrap_or(0)
}

/// Start a backup in the background; wait until its lease is stored.
fn start_backup(env: &Env, src: &Path, lease: &str) -> Child {
    let before = lock_objects(env);
    let child = env
        .cmd()
        .args([
            "backup",
            src.to_str().unwrap(),
            "--json",
            "--lease-duration",
            lease,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn backup");
    let t = Instant::now();
    while lock_objects(env) <= before {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the backup never took a lease"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

fn leases(env: &Env) -> Vec<serde_json::Value> {
    env.json(["locks"]).as_array().cloned().unwrap_or_default()
}

#[test]
fn a_killed_writers_lease_turns_stale_and_unlock_removes_only_then() {
    let env = Env::new();
    env.init();
    let src = env.path("big");
    big_tree(&src, 256, 1);
    let no_locks = env.ok(["locks"]);
    assert!(
        stdout(&no_locks).contains("no locks"),
        "{}",
        stdout(&no_locks)
    );

    let mut child = start_backup(&env, &src, "3s");
    let pid = child.id();
    // SIGKILL: no chance to release anything.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let status = child.wait().unwrap();
    assert!(!status.success());

    let l = leases(&env);
    assert_eq!(l.len(), 1, "{l:?}");
    assert_eq!(l[0]["pid"], pid);
    assert_eq!(l[0]["operation"], "backup");
    assert_eq!(l[0]["mode"], "shared");
    assert_eq!(l[0]["host"].as_str().unwrap(), holdfast_host());
    assert_eq!(l[0]["state"], "live", "{l:?}");
    let human = stdout(&env.ok(["locks"]));
    assert!(
        human.contains("live") && human.contains(&format!("pid {pid}")),
        "{human}"
    );

    // Still live: unlock keeps it.
    let out = env.ok(["unlock"]);
    assert!(stdout(&out).contains("no stale locks"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("1 live lock(s) kept"),
        "{}",
        stderr(&out)
    );
    assert_eq!(lock_objects(&env), 1);

    // After its expiry it is stale, listed so, and unlock removes it.
    std::thread::sleep(Duration::from_millis(3200));
    let l = leases(&env);
    assert_eq!(l[0]["state"], "stale", "{l:?}");
    assert!(stdout(&env.ok(["locks"])).contains("stale"));
    let out = env.ok(["unlock"]);
    let text = stdout(&out);
    assert!(
        text.contains("removed") && text.contains(&format!("pid {pid}")),
        "{text}"
    );
    assert_eq!(lock_objects(&env), 0);
    assert!(leases(&env).is_empty());

    // The repository is fine: a backup after the crash succeeds and checks.
    let small = env.path("small");
    small_tree(&small, 7);
    env.ok(["backup", small.to_str().unwrap()]);
    env.ok(["check", "--read-data"]);
}

fn holdfast_host() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn unlock_force_removes_a_live_lease_and_its_holder_does_not_commit() {
    let env = Env::new();
    env.init();
    let src = env.path("big");
    big_tree(&src, 256, 2);
    let child = start_backup(&env, &src, "1500ms");
    let out = env.ok(["unlock", "--force", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let removed = v["removed"].as_array().unwrap();
    assert_eq!(removed.len(), 1, "{v}");
    assert_eq!(removed[0]["pid"], child.id());
    assert_eq!(removed[0]["state"], "live");
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "a backup whose lease was removed fails with exit 7 (locked): {}",
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(err.contains("lease") && err.contains("removed"), "{err}");
    assert!(
        env.json(["snapshots"]).as_array().unwrap().is_empty(),
        "nothing was committed"
    );
    assert_eq!(lock_objects(&env), 0, "and it left no lease behind");
}

#[test]
fn two_backups_at_once_beside_each_others_lease_both_restore_and_check() {
    let env = Env::new();
    env.init();
    let a = env.path("a");
    let b = env.path("b");
    big_tree(&a, 128, 3);
    small_tree(&a.join("small"), 30);
    big_tree(&b, 64, 4);
    small_tree(&b, 40);
    // Some data shared by both, so they also race to store the same blobs.
    fs::write(a.join("shared.bin"), noise(8 << 20, 99)).unwrap();
    fs::write(b.join("shared.bin"), noise(8 << 20, 99)).unwrap();

    let first = start_backup(&env, &a, "2s");
    // The second starts while the first holds its shared lease, and does
    // not wait for it.
    let l = leases(&env);
    assert_eq!(l.len(), 1);
    assert_eq!(l[0]["pid"], first.id());
    assert_eq!(l[0]["state"], "live");
    let second = env
        .cmd()
        .args([
            "backup",
            b.to_str().unwrap(),
            "--json",
            "--lease-duration",
            "2s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (o2, o1) = (
        second.wait_with_output().unwrap(),
        first.wait_with_output().unwrap(),
    );
    for o in [&o1, &o2] {
        assert!(o.status.success(), "backup failed: {}", stderr(o));
    }
    let s1: serde_json::Value = serde_json::from_slice(&o1.stdout).unwrap();
    let s2: serde_json::Value = serde_json::from_slice(&o2.stdout).unwrap();
    assert_eq!(lock_objects(&env), 0, "both released their leases");
    env.ok(["check", "--read-data"]);
    for (snap, src, to) in [(&s1, &a, "ra"), (&s2, &b, "rb")] {
        let dest = env.path(to);
        env.ok([
            "restore",
            snap["snapshot"].as_str().unwrap(),
            "--target",
            dest.to_str().unwrap(),
        ]);
        assert_same_tree(src, &dest.join(src.strip_prefix("/").unwrap()));
    }
}
