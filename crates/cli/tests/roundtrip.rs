//! End-to-end: init, backup, list, restore, incremental, diff, stats, keys,
//! all through the real binary on real files.

mod common;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;

fn set_mtime(p: &Path, sec: i64) {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let ts = [
        libc_timespec {
            tv_sec: sec,
            tv_nsec: 0,
        },
        libc_timespec {
            tv_sec: sec,
            tv_nsec: 0,
        },
    ];
    // SAFETY: valid path and timespec array.
    let rc = unsafe { utimensat(-100, c.as_ptr(), ts.as_ptr(), 0x100) };
    assert_eq!(rc, 0);
}

#[repr(C)]
struct libc_timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

extern "C" {
    fn utimensat(
        dirfd: i32,
        path: *const std::ffi::c_char,
        times: *const libc_timespec,
        flags: i32,
    ) -> i32;
    fn chown(path: *const std::ffi::c_char, uid: u32, gid: u32) -> i32;
}

/// A tree with every kind of entry the issue names.
fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("docs/scans")).unwrap();
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::write(root.join("docs/scans/scan1.pdf"), noise(3_500_000, 1)).unwrap();
    fs::write(root.join("docs/notes.txt"), text(2_000_000, 2)).unwrap();
    fs::write(
        root.join("docs/small.json"),
        b"{\"resourceType\":\"Patient\"}",
    )
    .unwrap();
    fs::write(root.join("empty-file"), b"").unwrap();
    std::os::unix::fs::symlink("docs/notes.txt", root.join("link-to-notes")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling")).unwrap();
    fs::hard_link(root.join("docs/notes.txt"), root.join("hard-notes.txt")).unwrap();
    let weird = std::ffi::OsStr::from_bytes(b"caf\xe9-latin1.txt");
    fs::write(root.join(weird), b"not utf-8 name").unwrap();
    fs::write(root.join("script.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(root.join("script.sh"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::set_permissions(
        root.join("docs/small.json"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    if is_root() {
        let c =
            std::ffi::CString::new(root.join("docs/small.json").as_os_str().as_bytes()).unwrap();
        // SAFETY: valid path.
        assert_eq!(unsafe { chown(c.as_ptr(), 1234, 4321) }, 0);
    }
    set_mtime(&root.join("docs/notes.txt"), 1_600_000_000);
    set_mtime(&root.join("docs/scans"), 1_500_000_000);
    set_mtime(&root.join("empty-dir"), 1_400_000_000);
}

#[test]
fn backup_restore_round_trip_keeps_content_and_metadata() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    make_tree(&src);
    let out = env.json([
        "backup".as_ref(),
        src.as_os_str(),
        "--tag".as_ref(),
        "daily".as_ref(),
    ]);
    assert_eq!(out["summary"]["files_new"], 7, "{out}");
    assert_eq!(out["warnings"].as_array().unwrap().len(), 0);
    let snaps = env.json(["snapshots"]);
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    assert_eq!(snaps[0]["tags"][0], "daily");

    let target = env.path("restored");
    let r = env.json([
        "restore".as_ref(),
        "latest".as_ref(),
        "--target".as_ref(),
        target.as_os_str(),
    ]);
    assert_eq!(r["restored"]["failed"].as_array().unwrap().len(), 0, "{r}");
    let restored_src = target.join(src.strip_prefix("/").unwrap());
    assert_same_tree(&src, &restored_src);
    // Hard links come back as hard links.
    let a = fs::metadata(restored_src.join("docs/notes.txt")).unwrap();
    let b = fs::metadata(restored_src.join("hard-notes.txt")).unwrap();
    assert_eq!(a.ino(), b.ino(), "hard link restored as a link");
    if is_root() {
        let m = fs::metadata(restored_src.join("docs/small.json")).unwrap();
        assert_eq!((m.uid(), m.gid()), (1234, 4321), "ownership restored");
    }

    // Refuses to overwrite a file that differs, unless told to (identical
    // files are kept: see fidelity.rs).
    fs::write(restored_src.join("docs/notes.txt"), b"changed since").unwrap();
    let again = env.run([
        "restore".as_ref(),
        "latest".as_ref(),
        "--target".as_ref(),
        target.as_os_str(),
    ]);
    assert_ne!(again.status.code(), Some(0));
    assert!(
        stderr(&again).contains("refusing to overwrite"),
        "{}",
        stderr(&again)
    );
    env.ok([
        "restore".as_ref(),
        "latest".as_ref(),
        "--target".as_ref(),
        target.as_os_str(),
        "--overwrite".as_ref(),
    ]);
    assert_same_tree(&src, &restored_src);
}

#[test]
fn include_restores_only_that_path_and_ls_lists() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    make_tree(&src);
    env.ok(["backup".as_ref(), src.as_os_str()]);
    let inc = format!("{}/docs/scans", src.display());
    let target = env.path("part");
    env.ok([
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--include",
        &inc,
    ]);
    let base = target.join(src.strip_prefix("/").unwrap());
    assert!(base.join("docs/scans/scan1.pdf").exists());
    assert!(!base.join("docs/notes.txt").exists(), "outside the include");
    assert_eq!(
        fs::read(base.join("docs/scans/scan1.pdf")).unwrap(),
        noise(3_500_000, 1)
    );

    let listing = stdout(&env.ok(["ls", "latest"]));
    assert!(listing.contains("/docs/scans/scan1.pdf"), "{listing}");
    let j = env.json(["ls", "latest", &format!("{}/docs", src.display())]);
    assert!(j
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["path"].as_str().unwrap().ends_with("notes.txt")));
    let missing = env.run([
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--include",
        "/no/such/path",
    ]);
    assert_ne!(missing.status.code(), Some(0));
    assert!(
        stderr(&missing).contains("not in the snapshot"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn incremental_backup_does_not_reread_unchanged_files() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    make_tree(&src);
    let first = env.json(["backup".as_ref(), src.as_os_str()]);
    let second = env.json(["backup".as_ref(), src.as_os_str()]);
    assert_eq!(second["summary"]["files_unchanged"], 7, "{second}");
    assert_eq!(second["summary"]["bytes_read"], 0, "nothing re-read");
    // Only trees of ancestors (e.g. /tmp, whose mtime other tests change) may be new.
    assert!(
        second["summary"]["blobs_added"].as_u64().unwrap() <= 2,
        "{second}"
    );
    assert!(
        second["summary"]["data_added"].as_u64().unwrap() < 4096,
        "{second}"
    );
    // Change one file (same size, new mtime): only it is read.
    fs::write(
        src.join("docs/small.json"),
        b"{\"resourceType\":\"Patiens\"}",
    )
    .unwrap();
    let third = env.json(["backup".as_ref(), src.as_os_str()]);
    assert_eq!(third["summary"]["files_changed"], 1, "{third}");
    assert_eq!(third["summary"]["bytes_read"], 26);
    // A different source name has no parent: full read.
    let other = env.json([
        "backup".as_ref(),
        src.as_os_str(),
        "--source".as_ref(),
        "other".as_ref(),
    ]);
    assert_eq!(other["summary"]["files_new"], 7);
    // ...but dedups everything.
    assert!(
        other["summary"]["data_added"].as_u64().unwrap() < 4096,
        "only trees may differ: {other}"
    );

    let d = env.json([
        "diff",
        first["snapshot"].as_str().unwrap(),
        third["snapshot"].as_str().unwrap(),
    ]);
    let changes: Vec<_> = d
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["change"].as_str().unwrap().to_string(),
                e["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        changes
            .iter()
            .any(|(c, p)| c == "modified" && p.ends_with("small.json")),
        "{changes:?}"
    );

    let s = env.json(["stats"]);
    assert!(
        s["dedup_ratio"].as_f64().unwrap() > 3.0,
        "four snapshots of one tree: {s}"
    );
    assert!(
        s["compression_ratio"].as_f64().unwrap() > 1.2,
        "text compresses: {s}"
    );
    // Snapshot selection by source and tag.
    let by_source = env.json(["snapshots", "--source", "other"]);
    assert_eq!(by_source.as_array().unwrap().len(), 1);
    let prefix = &third["snapshot"].as_str().unwrap()[..10];
    env.ok(["ls", prefix]);
    let ambiguous = env.run(["ls", ""]);
    assert_ne!(ambiguous.status.code(), Some(0));
}

#[test]
fn check_read_data_passes_on_a_healthy_repository() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    make_tree(&src);
    env.ok(["backup".as_ref(), src.as_os_str()]);
    let c = env.json(["check", "--read-data"]);
    assert_eq!(c["ok"], true, "{c}");
    assert!(c["report"]["blobs_read"].as_u64().unwrap() >= 5);
    let c = env.json(["check", "--read-data-subset", "50"]);
    assert_eq!(c["ok"], true);
    let bad = env.run(["check", "--read-data-subset", "0"]);
    assert_ne!(bad.status.code(), Some(0));
}

#[test]
fn key_add_list_remove_and_passwd() {
    let env = Env::new();
    env.init();
    let pwfile = env.path("newpw");
    fs::write(&pwfile, "second password\n").unwrap();
    env.ok([
        "key",
        "add",
        "--new-password-file",
        pwfile.to_str().unwrap(),
        "--kdf-memory-mib",
        "8",
        "--kdf-iterations",
        "1",
        "--label",
        "ops",
    ]);
    let keys = env.json(["key", "list"]);
    assert_eq!(keys.as_array().unwrap().len(), 2);
    // The new password opens the repository.
    let out = env
        .cmd()
        .env("HOLDFAST_PASSWORD", "second password")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Cannot remove the key in use.
    let current = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = env.run(["key", "remove", &current]);
    assert_ne!(r.status.code(), Some(0));
    // Change the password: the old one stops working, the new one works.
    let pw3 = env.path("pw3");
    fs::write(&pw3, "third").unwrap();
    env.ok([
        "key",
        "passwd",
        "--new-password-file",
        pw3.to_str().unwrap(),
        "--kdf-memory-mib",
        "8",
        "--kdf-iterations",
        "1",
    ]);
    let old = env.run(["snapshots"]);
    assert_eq!(
        old.status.code(),
        Some(12),
        "old password rejected: {}",
        stderr(&old)
    );
    let new = env
        .cmd()
        .env("HOLDFAST_PASSWORD", "third")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_eq!(new.status.code(), Some(0));
    // Remove the second slot using the third password.
    let keys = env
        .cmd()
        .env("HOLDFAST_PASSWORD", "third")
        .args(["key", "list", "--json"])
        .output()
        .unwrap();
    let keys: serde_json::Value = serde_json::from_slice(&keys.stdout).unwrap();
    let other = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == false)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let rm = env
        .cmd()
        .env("HOLDFAST_PASSWORD", "third")
        .args(["key", "remove", &other])
        .output()
        .unwrap();
    assert_eq!(rm.status.code(), Some(0), "{}", stderr(&rm));
    let gone = env
        .cmd()
        .env("HOLDFAST_PASSWORD", "second password")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_eq!(gone.status.code(), Some(12));
}

#[test]
fn password_from_file_and_init_twice() {
    let env = Env::new();
    let pw = env.path("pw");
    fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let out = env
        .cmd()
        .env_remove("HOLDFAST_PASSWORD")
        .env("HOLDFAST_PASSWORD_FILE", &pw)
        .args(["init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    env.ok(["snapshots"]); // HOLDFAST_PASSWORD, same password without the newline
    let again = env.run(["init"]);
    assert_ne!(again.status.code(), Some(0));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    let none = env
        .cmd()
        .env_remove("HOLDFAST_PASSWORD")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_ne!(none.status.code(), Some(0));
    assert!(stderr(&none).contains("no password"), "{}", stderr(&none));
}
