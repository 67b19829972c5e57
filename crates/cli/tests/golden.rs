//! The golden repository: a format-1 repository committed to the tree
//! (`tests/fixtures/golden-v1`). Every holdfast must still open, check and
//! restore it byte for byte: the format is a promise to our users' archives.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/golden-v1")
}

fn run(repo: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .env("HOLDFAST_REPOSITORY", repo)
        .env("HOLDFAST_PASSWORD_FILE", fixture().join("password"))
        .env_remove("HOLDFAST_PASSWORD")
        .args(args)
        .output()
        .unwrap()
}

/// Compare kinds, content and symlink targets (a git checkout does not keep
/// times or most modes, so those are compared in the other tests).
fn same_content(a: &Path, b: &Path) {
    let mut names_a: Vec<_> = fs::read_dir(a)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut names_b: Vec<_> = fs::read_dir(b)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names_a.sort();
    names_b.sort();
    assert_eq!(names_a, names_b, "entries of {}", a.display());
    for n in names_a {
        let (pa, pb) = (a.join(&n), b.join(&n));
        let (ma, mb) = (
            fs::symlink_metadata(&pa).unwrap(),
            fs::symlink_metadata(&pb).unwrap(),
        );
        assert_eq!(ma.file_type().is_dir(), mb.file_type().is_dir());
        if ma.file_type().is_symlink() {
            assert_eq!(fs::read_link(&pa).unwrap(), fs::read_link(&pb).unwrap());
        } else if ma.is_dir() {
            same_content(&pa, &pb);
        } else {
            assert!(
                fs::read(&pa).unwrap() == fs::read(&pb).unwrap(),
                "{} differs",
                pa.display()
            );
        }
    }
}

#[test]
fn golden_v1_repository_still_reads_checks_and_restores() {
    let env = Env::new();
    // Work on a copy: nothing may touch the committed fixture.
    let repo = env.path("golden");
    let st = Command::new("cp")
        .arg("-a")
        .arg(fixture().join("repo"))
        .arg(&repo)
        .status()
        .unwrap();
    assert!(st.success());

    let out = run(&repo, &["snapshots", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let snaps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    assert_eq!(snaps[0]["source"], "golden");
    assert_eq!(snaps[0]["tags"][0], "golden");
    let recorded = snaps[0]["paths"][0].as_str().unwrap().to_string();

    let check = run(&repo, &["check", "--read-data"]);
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));

    let target = env.path("restored");
    let r = run(
        &repo,
        &[
            "restore",
            "latest",
            "--tag",
            "golden",
            "--target",
            target.to_str().unwrap(),
        ],
    );
    assert_eq!(r.status.code(), Some(0), "{}", stderr(&r));
    same_content(
        &fixture().join("source"),
        &target.join(recorded.trim_start_matches('/')),
    );

    // A backup into it writes format-1 objects only (version-1 packs, the
    // config untouched), so older holdfast builds keep reading it.
    let packs_in = |repo: &Path| -> Vec<PathBuf> {
        let mut v = Vec::new();
        for d in fs::read_dir(repo.join("data")).unwrap() {
            for f in fs::read_dir(d.unwrap().path()).unwrap() {
                v.push(f.unwrap().path());
            }
        }
        v
    };
    let before = packs_in(&repo);
    let more = env.path("more");
    fs::create_dir_all(&more).unwrap();
    fs::write(more.join("notes.txt"), "observation ".repeat(50_000)).unwrap();
    let b = run(&repo, &["backup", more.to_str().unwrap()]);
    assert_eq!(b.status.code(), Some(0), "{}", stderr(&b));
    let new: Vec<PathBuf> = packs_in(&repo)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert!(!new.is_empty());
    for p in &new {
        assert_eq!(
            fs::read(p).unwrap()[4],
            1,
            "{} is not a version-1 pack",
            p.display()
        );
    }
    assert_eq!(
        &fs::read(repo.join("config")).unwrap()[8..12],
        &1u32.to_le_bytes()
    );
    let check = run(&repo, &["check", "--read-data"]);
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));

    let wrong = Command::new(BIN)
        .env("HOLDFAST_REPOSITORY", &repo)
        .env("HOLDFAST_PASSWORD", "not the golden password")
        .env_remove("HOLDFAST_PASSWORD_FILE")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(12));
}
