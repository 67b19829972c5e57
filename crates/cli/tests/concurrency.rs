//! Several writers and readers at once on one repository, as real
//! processes: two backups of different trees (sharing some content, so
//! both store the same blobs at the same moment), a backup while
//! `check --read-data` runs, and a backup while `repair index` runs.
//! Afterwards every snapshot restores byte for byte and
//! `check --read-data` is clean.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;

use common::*;

/// A tree of a few MB of incompressible files, `shared` of them the same
/// in every tree made with any `seed`.
fn make_tree(root: &Path, seed: u64, files: usize, shared: usize) {
    fs::create_dir_all(root.join("sub")).unwrap();
    for i in 0..files {
        let data = if i < shared {
            noise(3_000_000, 1000 + i as u64)
        } else {
            noise(3_000_000, seed * 100 + i as u64)
        };
        fs::write(root.join(format!("sub/f{i:02}.bin")), data).unwrap();
    }
    fs::write(root.join("notes.txt"), text(200_000, seed)).unwrap();
}

fn spawn(env: &Env, args: &[&std::ffi::OsStr]) -> Child {
    env.cmd()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: Child, what: &str) {
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what} failed: {}",
        stderr(&out)
    );
}

/// Every snapshot of `trees` (source path → tree) restores exactly, and
/// `check --read-data` is clean.
fn all_restore(env: &Env, trees: &[&PathBuf]) {
    env.ok(["check", "--read-data"]);
    let snaps = env.json(["snapshots"]);
    let snaps = snaps.as_array().unwrap();
    for t in trees {
        let t_str = t.display().to_string();
        let latest = snaps
            .iter()
            .filter(|s| {
                s["paths"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|p| p.as_str() == Some(t_str.as_str())))
            })
            .max_by_key(|s| s["time"].as_str().unwrap_or("").to_string())
            .unwrap_or_else(|| panic!("no snapshot of {t_str}"));
        let id = latest["id"].as_str().unwrap();
        let target = env.path(&format!("restore-{}", &id[..8]));
        env.ok([
            "restore".as_ref(),
            id.as_ref(),
            "--target".as_ref(),
            target.as_os_str(),
        ]);
        assert_same_tree(t, &target.join(t.strip_prefix("/").unwrap()));
    }
}

#[test]
fn two_backups_of_different_trees_at_the_same_time() {
    let env = Env::new();
    env.init();
    let (a, b) = (env.path("a"), env.path("b"));
    make_tree(&a, 1, 8, 3);
    make_tree(&b, 2, 8, 3);
    let first = spawn(&env, &["backup".as_ref(), a.as_os_str()]);
    let second = spawn(&env, &["backup".as_ref(), b.as_os_str()]);
    finish(first, "backup of a");
    finish(second, "backup of b");
    assert_eq!(env.json(["snapshots"]).as_array().unwrap().len(), 2);
    all_restore(&env, &[&a, &b]);
}

#[test]
fn a_backup_while_check_reads_all_data() {
    let env = Env::new();
    env.init();
    let (a, b) = (env.path("a"), env.path("b"));
    make_tree(&a, 3, 10, 0);
    env.ok(["backup".as_ref(), a.as_os_str()]);
    make_tree(&b, 4, 10, 2);
    let check = spawn(&env, &["check".as_ref(), "--read-data".as_ref()]);
    let backup = spawn(&env, &["backup".as_ref(), b.as_os_str()]);
    finish(backup, "backup during check");
    // The check must not mistake the running backup's packs for damage.
    finish(check, "check during a backup");
    all_restore(&env, &[&a, &b]);
}

#[test]
fn a_backup_while_repair_index_runs() {
    let env = Env::new();
    env.init();
    let (a, b) = (env.path("a"), env.path("b"));
    make_tree(&a, 5, 6, 0);
    env.ok(["backup".as_ref(), a.as_os_str()]);
    make_tree(&b, 6, 10, 2);
    let backup = spawn(&env, &["backup".as_ref(), b.as_os_str()]);
    // Repair several times while the backup runs: each may find packs the
    // backup has uploaded and not indexed yet.
    for _ in 0..3 {
        env.ok(["repair", "index"]);
    }
    finish(backup, "backup during repair index");
    env.ok(["repair", "index"]);
    all_restore(&env, &[&a, &b]);
}
