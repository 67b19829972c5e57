//! The golden repositories: a format-1 and a format-3 repository committed
//! to the tree (`tests/fixtures/golden-v1`, `tests/fixtures/golden-v3`).
//! Every holdfast must still open, check and restore them byte for byte:
//! the format is a promise to our users' archives. `migrate` must turn a
//! copy of the format-1 one into a format-3 one that does the same, and
//! tampered copies of the format-3 one must be refused.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/golden-v1")
}

fn fixture_v3() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/golden-v3")
}

/// A copy of a fixture's repository (nothing may touch the committed one).
fn copy_repo(env: &Env, fixture: &Path, name: &str) -> PathBuf {
    let repo = env.path(name);
    let st = Command::new("cp")
        .arg("-a")
        .arg(fixture.join("repo"))
        .arg(&repo)
        .status()
        .unwrap();
    assert!(st.success());
    repo
}

fn run(repo: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .env("HOLDFAST_REPOSITORY", repo)
        .env("HOLDFAST_PASSWORD_FILE", fixture().join("password"))
        // Copies share the repository id, so each gets its own local
        // cache: one copy's cached objects must not stand in for another's.
        .env("HOLDFAST_CACHE_DIR", repo.with_extension("cache"))
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

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// List, check (data included) and restore `repo` (holding the golden
/// source under `--tag golden`); returns the snapshot listing.
fn lists_checks_restores(env: &Env, repo: &Path, source: &Path, what: &str) -> serde_json::Value {
    let out = run(repo, &["snapshots", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{what}: {}", stderr(&out));
    let snaps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let last = snaps.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["source"], "golden");
    let recorded = last["paths"][0].as_str().unwrap().to_string();
    let check = run(repo, &["check", "--read-data"]);
    assert_eq!(check.status.code(), Some(0), "{what}: {}", stderr(&check));
    let target = env.path(&format!("restored-{what}"));
    let r = run(
        repo,
        &[
            "restore",
            "latest",
            "--tag",
            "golden",
            "--target",
            target.to_str().unwrap(),
        ],
    );
    assert_eq!(r.status.code(), Some(0), "{what}: {}", stderr(&r));
    same_content(source, &target.join(recorded.trim_start_matches('/')));
    snaps
}

#[test]
fn golden_v1_repository_migrates_to_format_3() {
    let env = Env::new();
    let repo = copy_repo(&env, &fixture(), "migrated");
    let old_id = lists_checks_restores(&env, &repo, &fixture().join("source"), "v1")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let m = run(&repo, &["migrate"]);
    assert_eq!(m.status.code(), Some(0), "{}", stderr(&m));
    assert_eq!(
        &fs::read(repo.join("config")).unwrap()[8..12],
        &3u32.to_le_bytes()
    );
    assert!(!repo.join("config.next").exists());
    for f in files_in(&repo.join("index"))
        .iter()
        .chain(&files_in(&repo.join("snapshots")))
    {
        assert_eq!(
            fs::read(f).unwrap()[4],
            2,
            "{} is not a version-2 envelope",
            f.display()
        );
    }
    let snaps = lists_checks_restores(&env, &repo, &fixture().join("source"), "migrated");
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    assert_ne!(snaps[0]["id"].as_str().unwrap(), old_id);
    assert!(
        stdout(&m).contains(&format!("snapshot {old_id} is now")),
        "{}",
        stdout(&m)
    );
    let again = run(&repo, &["migrate"]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert!(
        stdout(&again).contains("nothing to do"),
        "{}",
        stdout(&again)
    );

    // A crash after every object was re-sealed but before any original was
    // deleted or the config replaced: put the format-1 objects back beside
    // the re-sealed ones. A rerun finishes without duplicating anything.
    let v1 = fixture().join("repo");
    fs::remove_file(repo.join("config")).unwrap();
    fs::copy(v1.join("config"), repo.join("config")).unwrap();
    for dir in ["index", "snapshots"] {
        for f in files_in(&v1.join(dir)) {
            fs::copy(&f, repo.join(dir).join(f.file_name().unwrap())).unwrap();
        }
    }
    let rerun = run(&repo, &["migrate"]);
    assert_eq!(rerun.status.code(), Some(0), "{}", stderr(&rerun));
    let snaps = lists_checks_restores(&env, &repo, &fixture().join("source"), "rerun");
    assert_eq!(snaps.as_array().unwrap().len(), 1, "{snaps}");

    // A crash between deleting `config` and putting the new one: only the
    // staged config is left. The repository opens from it (with a warning)
    // and a rerun puts it back.
    fs::rename(repo.join("config"), repo.join("config.next")).unwrap();
    let out = run(&repo, &["snapshots"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("run `holdfast migrate` again"),
        "{}",
        stderr(&out)
    );
    let rerun = run(&repo, &["migrate"]);
    assert_eq!(rerun.status.code(), Some(0), "{}", stderr(&rerun));
    assert!(repo.join("config").exists() && !repo.join("config.next").exists());
    lists_checks_restores(&env, &repo, &fixture().join("source"), "config-crash");
}

fn run3(repo: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .env("HOLDFAST_REPOSITORY", repo)
        .env("HOLDFAST_PASSWORD_FILE", fixture_v3().join("password"))
        // Copies share the repository id, so each gets its own local
        // cache: one copy's cached objects must not stand in for another's.
        .env("HOLDFAST_CACHE_DIR", repo.with_extension("cache"))
        .env_remove("HOLDFAST_PASSWORD")
        .args(args)
        .output()
        .unwrap()
}

const GOLDEN_WAL: &str = "000000010000000000000001";

#[test]
fn golden_v3_repository_reads_checks_restores_and_refuses_tampering() {
    let env = Env::new();
    let repo = copy_repo(&env, &fixture_v3(), "golden3");
    assert_eq!(
        &fs::read(repo.join("config")).unwrap()[8..12],
        &3u32.to_le_bytes()
    );
    let out = run3(&repo, &["snapshots", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let snaps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let snaps = snaps.as_array().unwrap().clone();
    assert_eq!(snaps.len(), 2);
    let recorded = snaps[1]["paths"][0].as_str().unwrap().to_string();
    let check = run3(&repo, &["check", "--read-data"]);
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));
    assert!(
        stdout(&check).contains("1 WAL manifest(s)"),
        "{}",
        stdout(&check)
    );
    for (i, s) in snaps.iter().enumerate() {
        let target = env.path(&format!("restored-{i}"));
        let id = s["id"].as_str().unwrap();
        let r = run3(
            &repo,
            &["restore", id, "--target", target.to_str().unwrap()],
        );
        assert_eq!(r.status.code(), Some(0), "{}", stderr(&r));
        same_content(
            &fixture_v3().join("source"),
            &target.join(recorded.trim_start_matches('/')),
        );
    }
    let fetched = env.path("fetched");
    let f = run3(
        &repo,
        &[
            "wal-fetch",
            GOLDEN_WAL,
            fetched.to_str().unwrap(),
            "--cluster",
            "7",
        ],
    );
    assert_eq!(f.status.code(), Some(0), "{}", stderr(&f));
    assert!(
        fs::read(&fetched).unwrap() == fs::read(fixture_v3().join("wal").join(GOLDEN_WAL)).unwrap()
    );

    // Tampered copies, each refused with an error naming the object.
    let ids: Vec<String> = snaps
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    let refused = |repo: &Path, args: &[&str], needle: &str| {
        let out = run3(repo, args);
        assert_ne!(out.status.code(), Some(0), "{args:?}: {}", stdout(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    };
    // The newer snapshot replaced by the older.
    let t = copy_repo(&env, &fixture_v3(), "replaced");
    fs::remove_file(t.join("snapshots").join(&ids[1])).unwrap();
    fs::copy(
        t.join("snapshots").join(&ids[0]),
        t.join("snapshots").join(&ids[1]),
    )
    .unwrap();
    let needle = format!(
        "snapshots/{} holds the object named snapshots/{}",
        ids[1], ids[0]
    );
    refused(&t, &["check"], &needle);
    let target = env.path("nothing");
    refused(
        &t,
        &["restore", &ids[1], "--target", target.to_str().unwrap()],
        &needle,
    );
    assert!(!target.join(recorded.trim_start_matches('/')).exists());
    // The older one deleted: the newer names it as its predecessor.
    let t = copy_repo(&env, &fixture_v3(), "rolled-back");
    fs::remove_file(t.join("snapshots").join(&ids[0])).unwrap();
    refused(&t, &["check"], &format!("names predecessor {}", ids[0]));
    // A version-1 object (the golden v1 index) put into a format-3 repository.
    let t = copy_repo(&env, &fixture_v3(), "downgraded");
    let v1_index = files_in(&fixture().join("repo").join("index")).remove(0);
    fs::copy(
        &v1_index,
        t.join("index").join(v1_index.file_name().unwrap()),
    )
    .unwrap();
    refused(&t, &["check"], "version-1 envelope");
    // The config header edited to claim format 2.
    let t = copy_repo(&env, &fixture_v3(), "header");
    let mut cfg = fs::read(t.join("config")).unwrap();
    cfg[8..12].copy_from_slice(&2u32.to_le_bytes());
    fs::write(t.join("config"), cfg).unwrap();
    refused(&t, &["snapshots"], "the header was edited");
    // A flipped byte in the WAL manifest.
    let t = copy_repo(&env, &fixture_v3(), "wal");
    let m = t.join("wal").join(format!("7-{GOLDEN_WAL}"));
    let mut b = fs::read(&m).unwrap();
    let last = b.len() - 1;
    b[last] ^= 1;
    fs::write(&m, b).unwrap();
    let dest = env.path("wal-dest");
    refused(
        &t,
        &[
            "wal-fetch",
            GOLDEN_WAL,
            dest.to_str().unwrap(),
            "--cluster",
            "7",
        ],
        &format!("wal/7-{GOLDEN_WAL}"),
    );
    assert!(!dest.exists());
    refused(&t, &["check"], &format!("wal/7-{GOLDEN_WAL}"));
}
