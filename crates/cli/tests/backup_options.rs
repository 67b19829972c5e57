//! File backups beyond the round trip: excludes, files that change while
//! they are read, interruption by SIGINT/SIGTERM, counts that agree across
//! commands, and progress output. All with the real binary on real files.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// Paths in the latest snapshot below `root` (relative to it), from `ls --json`.
fn snapshot_paths(env: &Env, root: &Path) -> BTreeSet<String> {
    let v = env.json(["ls".as_ref(), "latest".as_ref(), root.as_os_str()]);
    let prefix = format!("{}/", root.display());
    v.as_array()
        .expect("ls --json is an array")
        .iter()
        .filter_map(|e| e["path"].as_str())
        .filter_map(|p| p.strip_prefix(&prefix).map(str::to_string))
        .collect()
}

fn backup_json(env: &Env, args: &[&str], src: &Path) -> Value {
    let mut a: Vec<std::ffi::OsString> = vec!["backup".into()];
    a.extend(args.iter().map(|s| s.into()));
    a.push(src.as_os_str().to_os_string());
    env.json(a)
}

fn write(p: &Path, data: &[u8]) {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(p, data).unwrap();
}

/// A tree with something for every exclude rule to catch, and near misses
/// that must stay.
fn exclude_tree(src: &Path) {
    write(&src.join("keep.txt"), b"keep");
    write(&src.join("a.tmp"), b"tmp");
    write(&src.join("sub/b.tmp"), b"tmp");
    write(&src.join("sub/b.tmpx"), b"near miss");
    write(&src.join("node_modules/x.js"), b"x");
    write(&src.join("deep/er/node_modules/y.js"), b"y");
    write(&src.join("docs/tmp/z"), b"relative pattern with a slash");
    write(&src.join("docs/other/tmp/z"), b"not docs/tmp");
    write(&src.join("anch/x"), b"anchored");
    write(&src.join("sub/anch/x"), b"not at the anchored place");
    write(&src.join("logs/a/b/c.log"), b"log");
    write(&src.join("logs/c.log"), b"log, zero dirs for **");
    write(&src.join("logs/c.txt"), b"not a log");
    write(&src.join("big.bin"), &noise(2 << 20, 1));
    write(&src.join("edge.bin"), &noise(1 << 20, 2)); // exactly the limit: kept
    write(&src.join("private/.nobackup"), b"");
    write(&src.join("private/secret"), b"s");
    write(
        &src.join("cache/CACHEDIR.TAG"),
        b"Signature: 8a477f597d28d172789f06886806bc55\n# a cache\n",
    );
    write(&src.join("cache/blob"), b"cached");
    write(&src.join("fakecache/CACHEDIR.TAG"), b"Signature: wrong\n");
    write(&src.join("fakecache/blob"), b"kept: the tag is not valid");
}

#[test]
fn excludes_follow_restic_rules_and_are_reused_by_the_next_backup() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    exclude_tree(&src);
    let list = env.path("excludes.txt");
    let anchored = format!("{}/anch", src.display());
    fs::write(
        &list,
        format!("# comment\n\n   logs/**/*.log  \n{anchored}\n  # indented comment\n"),
    )
    .unwrap();
    let all_flags = [
        "--exclude",
        "*.tmp",
        "--exclude",
        "node_modules",
        "--exclude",
        "docs/tmp",
        "--exclude-file",
        list.to_str().unwrap(),
        "--exclude-if-present",
        ".nobackup",
        "--exclude-caches",
        "--exclude-larger-than",
        "1M",
    ];
    let first = backup_json(&env, &all_flags, &src);
    let kept: BTreeSet<String> = [
        "keep.txt",
        "sub",
        "sub/b.tmpx",
        "sub/anch",
        "sub/anch/x",
        "deep",
        "deep/er",
        "docs",
        "docs/other",
        "docs/other/tmp",
        "docs/other/tmp/z",
        "logs",
        "logs/a",
        "logs/a/b",
        "logs/c.txt",
        "edge.bin",
        "fakecache",
        "fakecache/CACHEDIR.TAG",
        "fakecache/blob",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(snapshot_paths(&env, &src), kept, "{first}");
    // a.tmp, sub/b.tmp, node_modules, deep/er/node_modules, docs/tmp, anch,
    // logs/a/b/c.log, logs/c.log, big.bin, private, cache
    assert_eq!(first["summary"]["excluded"], 11, "{first}");
    assert_eq!(first["excludes"]["caches"], true);
    assert_eq!(first["excludes"]["larger_than"], 1 << 20);

    // The next backup of the source reuses the rules, and says so.
    write(&src.join("new.tmp"), b"new and excluded");
    write(&src.join("new.txt"), b"new and kept");
    let out = env.ok(["backup".as_ref(), src.as_os_str()]);
    assert!(
        stderr(&out).contains("using the exclude rules of snapshot"),
        "{}",
        stderr(&out)
    );
    let mut kept2 = kept.clone();
    kept2.insert("new.txt".into());
    assert_eq!(snapshot_paths(&env, &src), kept2);

    // Explicit options replace them.
    backup_json(&env, &["--exclude", "*.bin"], &src);
    let third = snapshot_paths(&env, &src);
    assert!(third.contains("a.tmp") && third.contains("cache/blob"));
    assert!(third.contains("private/secret") && third.contains("node_modules/x.js"));
    assert!(!third.contains("big.bin") && !third.contains("edge.bin"));
    // ...and --no-inherit-excludes drops them.
    backup_json(&env, &["--no-inherit-excludes"], &src);
    let fourth = snapshot_paths(&env, &src);
    assert!(fourth.contains("big.bin") && fourth.contains("a.tmp"));
}

#[test]
fn bad_exclude_rules_are_refused_with_what_is_wrong() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("f"), b"f");
    let out = env.run([
        "backup".as_ref(),
        "--exclude".as_ref(),
        "[abc".as_ref(),
        src.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("[abc"), "{}", stderr(&out));
    assert!(stderr(&out).contains("never closed"), "{}", stderr(&out));

    let list = env.path("list");
    fs::write(&list, "ok\n# fine\nbad\\\n").unwrap();
    let out = env.run([
        "backup".as_ref(),
        "--exclude-file".as_ref(),
        list.as_os_str(),
        src.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("{} line 3", list.display())),
        "{}",
        stderr(&out)
    );

    let out = env.run([
        "backup".as_ref(),
        "--exclude-larger-than".as_ref(),
        "12Q".as_ref(),
        src.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown unit"), "{}", stderr(&out));
    let missing = env.run([
        "backup".as_ref(),
        "--exclude-file".as_ref(),
        env.path("nope").as_os_str(),
        src.as_os_str(),
    ]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("nope"), "{}", stderr(&missing));
    assert_eq!(env.json(["snapshots"]).as_array().unwrap().len(), 0);
}

/// A tmpfs mounted under the tree, unmounted when dropped.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn one_file_system_keeps_mount_points_as_empty_dirs() {
    assert!(is_root(), "this test mounts a tmpfs and must run as root");
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("here"), b"same file system");
    let mnt = src.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs");
    let _guard = Mount(mnt.clone());
    write(&mnt.join("elsewhere"), b"another file system");
    assert_ne!(
        fs::metadata(&mnt).unwrap().dev(),
        fs::metadata(&src).unwrap().dev()
    );

    backup_json(&env, &["--one-file-system"], &src);
    let paths = snapshot_paths(&env, &src);
    assert_eq!(
        paths,
        ["here", "mnt"].iter().map(|s| s.to_string()).collect(),
        "the mount point stays, empty"
    );
    // Naming the mount point itself backs it up: its file system is allowed.
    let direct = backup_json(&env, &["-x"], &mnt);
    assert_eq!(direct["counts"]["files"], 1, "{direct}");
    // Without the option the other file system is crossed.
    backup_json(&env, &["--no-inherit-excludes"], &src);
    assert!(snapshot_paths(&env, &src).contains("mnt/elsewhere"));
}

/// Count a tree on disk the way holdfast defines it: every path once.
fn disk_counts(root: &Path) -> (u64, u64, u64, u64, u64) {
    let (mut files, mut dirs, mut links, mut other, mut bytes) = (0, 1, 0, 0, 0);
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            if ft.is_dir() {
                dirs += 1;
                stack.push(p);
            } else if ft.is_file() {
                files += 1;
                bytes += m.len();
            } else if ft.is_symlink() {
                links += 1;
            } else {
                other += 1;
            }
        }
    }
    (files, dirs, links, other, bytes)
}

fn every_kind_tree(src: &Path) {
    write(&src.join("a/one.txt"), &text(300_000, 1));
    write(&src.join("a/b/two.bin"), &noise(3_000_000, 2));
    write(&src.join("empty"), b"");
    fs::create_dir_all(src.join("emptydir/inner")).unwrap();
    fs::hard_link(src.join("a/one.txt"), src.join("hardlink.txt")).unwrap();
    std::os::unix::fs::symlink("a/one.txt", src.join("sym")).unwrap();
    std::os::unix::fs::symlink("/nowhere", src.join("a/dangling")).unwrap();
    let fifo = std::ffi::CString::new(src.join("fifo").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let _sock = std::os::unix::net::UnixListener::bind(src.join("a/sock")).unwrap();
    if is_root() {
        let dev = std::ffi::CString::new(src.join("null").to_str().unwrap()).unwrap();
        // SAFETY: a valid path; makedev(1, 3) is /dev/null.
        let rc = unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
        assert_eq!(rc, 0, "mknod as root");
    }
}

#[test]
fn counts_agree_across_backup_restore_refusal_and_ls() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    every_kind_tree(&src);
    let (files, dirs, symlinks, other, bytes) = disk_counts(&src);

    let b = backup_json(&env, &[], &src);
    let c = &b["counts"];
    assert_eq!(
        (
            c["files"].as_u64(),
            c["dirs"].as_u64(),
            c["symlinks"].as_u64(),
            c["other"].as_u64()
        ),
        (Some(files), Some(dirs), Some(symlinks), Some(other)),
        "backup counts vs the tree: {b}"
    );
    let s = &b["summary"];
    assert_eq!(s["total_bytes"], bytes);
    assert_eq!(s["bytes_read"], bytes);
    // Data and metadata are reported apart: new data never exceeds what was read.
    assert!(
        s["data_added"].as_u64().unwrap() <= s["bytes_read"].as_u64().unwrap(),
        "{s}"
    );
    assert!(s["meta_added"].as_u64().unwrap() > 0, "{s}");

    // The human summary prints the same counts.
    write(&src.join("later.txt"), b"x");
    let text_out = env.ok(["backup".as_ref(), src.as_os_str()]);
    let line = format!(
        "{} files, {dirs} dirs, {symlinks} symlinks, {other} other",
        files + 1
    );
    assert!(stdout(&text_out).contains(&line), "{}", stdout(&text_out));
    assert!(
        stdout(&text_out).contains("metadata: added"),
        "{}",
        stdout(&text_out)
    );
    fs::remove_file(src.join("later.txt")).unwrap();
    backup_json(&env, &[], &src);

    // ls lists the same entries.
    let listing = env.json(["ls".as_ref(), "latest".as_ref(), src.as_os_str()]);
    let count = |t: &str| {
        listing
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == t)
            .count() as u64
    };
    let ls_other = count("fifo") + count("socket") + count("chardev") + count("blockdev");
    assert_eq!(
        (count("file"), count("dir"), count("symlink"), ls_other),
        (files, dirs, symlinks, other)
    );

    // A restore of the whole snapshot counts the same (not the directories
    // that only lead to the backed-up path).
    let target = env.path("out");
    let r = env.json([
        "restore".as_ref(),
        "latest".as_ref(),
        "--target".as_ref(),
        target.as_os_str(),
    ]);
    let rc = &r["counts"];
    assert_eq!(
        (
            rc["files"].as_u64(),
            rc["dirs"].as_u64(),
            rc["symlinks"].as_u64(),
            rc["other"].as_u64()
        ),
        (Some(files), Some(dirs), Some(symlinks), Some(other)),
        "restore counts: {r}"
    );
    let restored = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(
        disk_counts(&restored),
        (files, dirs, symlinks, other, bytes)
    );

    // The overwrite refusal counts the same entries (directories merge)
    // when every one of them differs from the snapshot (entries that
    // already hold the snapshot's content are kept, not refused).
    replace_every_entry(&restored);
    let again = env.run([
        "restore".as_ref(),
        "latest".as_ref(),
        "--target".as_ref(),
        target.as_os_str(),
    ]);
    assert_ne!(again.status.code(), Some(0));
    let want = format!("({files} files, {symlinks} symlinks, {other} other)");
    assert!(
        stderr(&again).contains(&want),
        "want {want}: {}",
        stderr(&again)
    );
}

/// Replace every non-directory entry under `root` by a small regular file
/// with other content.
fn replace_every_entry(root: &Path) {
    for e in fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        let m = fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            replace_every_entry(&p);
        } else {
            fs::remove_file(&p).unwrap();
            fs::write(&p, b"replaced").unwrap();
        }
    }
}

/// The process's open descriptor on `file`, and how far it has read.
fn read_position(pid: u32, file: &Path) -> Option<u64> {
    for fd in fs::read_dir(format!("/proc/{pid}/fd")).ok()? {
        let fd = fd.ok()?;
        if fs::read_link(fd.path()).ok().as_deref() == Some(file) {
            let info = fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .ok()?;
            return info
                .lines()
                .find_map(|l| l.strip_prefix("pos:"))
                .and_then(|v| v.trim().parse().ok());
        }
    }
    None
}

fn spawn_backup(env: &Env, args: &[&str], src: &Path) -> Child {
    env.cmd()
        .arg("backup")
        .args(args)
        .arg(src)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_file_rewritten_during_its_read_is_read_again_and_stored_whole() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let size: usize = 64 << 20;
    // The chunker reads up to 16 MiB at a time: rewrite only while at
    // least 24 MiB remain, so the change lands inside the first read.
    let latest_pos = (size - (24 << 20)) as u64;
    write(&src.join("live.db"), &noise(size, 7));
    let live = src.join("live.db");
    let child = spawn_backup(&env, &["--json"], &src);
    // Wait until the backup has read part of the file, then rewrite its
    // beginning in place: the first read now holds old bytes where the file
    // has new ones.
    let new_head = noise(1 << 20, 99);
    let mut rewritten = false;
    while !rewritten {
        match read_position(child.id(), &live) {
            Some(pos) if pos > 0 && pos <= latest_pos => {
                let f = fs::OpenOptions::new().write(true).open(&live).unwrap();
                f.write_all_at(&new_head, 0).unwrap();
                rewritten = true;
            }
            Some(pos) if pos > latest_pos => panic!("the read went too fast to interfere with"),
            _ => std::thread::sleep(Duration::from_micros(200)),
        }
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["summary"]["files_reread"], 1, "{v}");
    assert_eq!(v["summary"]["files_changing"], 0, "{v}");
    assert!(!stderr(&out).contains("changed while"), "{}", stderr(&out));
    let target = env.path("out");
    env.ok([
        "restore".as_ref(),
        "latest".as_ref(),
        "--target".as_ref(),
        target.as_os_str(),
    ]);
    let restored = fs::read(target.join(live.strip_prefix("/").unwrap())).unwrap();
    assert!(
        restored == fs::read(&live).unwrap(),
        "restored content is the file as it is now, not a mix"
    );
}

#[test]
fn a_file_that_keeps_changing_is_reported_and_counted() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("steady"), b"steady");
    let log = src.join("app.log");
    write(&log, &noise(24 << 20, 3));
    let child = spawn_backup(&env, &["--json"], &src);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, log) = (stop.clone(), log.clone());
        std::thread::spawn(move || {
            let mut f = fs::OpenOptions::new().append(true).open(&log).unwrap();
            while !stop.load(Ordering::Relaxed) {
                f.write_all(&[b'x'; 512]).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let out = child.wait_with_output().unwrap();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    // Changing files are stored with a warning, not a failure.
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["summary"]["files_reread"], 1, "{v}");
    assert_eq!(v["summary"]["files_changing"], 1, "{v}");
    assert_eq!(v["changing"].as_array().unwrap().len(), 1, "{v}");
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{}: changed while it was read", log.display())),
        "{err}"
    );
    // The next backup does not trust what it stored: it reads the file again.
    let next = backup_json(&env, &[], &src);
    assert_eq!(next["summary"]["files_changed"], 1, "{next}");
    assert_eq!(next["summary"]["files_unchanged"], 1, "{next}");
}

fn pack_bytes(repo: &Path) -> (usize, u64) {
    let p = packs(repo);
    let total = p.iter().map(|p| fs::metadata(p).unwrap().len()).sum();
    (p.len(), total)
}

/// Start a backup, wait until at least `packs` packs are on disk, signal it.
fn interrupt_after(env: &Env, src: &Path, packs: usize, signal: i32) -> std::process::Output {
    let child = spawn_backup(env, &[], src);
    loop {
        if env.repo.join("data").exists() && pack_bytes(&env.repo).0 >= packs {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    child.wait_with_output().unwrap()
}

#[test]
fn sigint_and_sigterm_keep_the_uploaded_data_for_the_next_backup() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    // Two workers fill their packs side by side, so a pack appears on disk
    // when about 32 MiB have been read. 320 MiB leaves much to read when
    // each signal lands, also on a fast idle machine (with 192 MiB the
    // second run sometimes finished reading before its signal, exit 0).
    let total: u64 = 80 * (4 << 20);
    for i in 0..80 {
        write(&src.join(format!("f{i:02}")), &noise(4 << 20, 200 + i));
    }
    let out = interrupt_after(&env, &src, 2, libc::SIGINT);
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("interrupted by SIGINT"),
        "{}",
        stderr(&out)
    );
    assert!(env.json(["snapshots"]).as_array().unwrap().is_empty());
    env.ok(["check"]);
    let (_, after_int) = pack_bytes(&env.repo);

    let out = interrupt_after(&env, &src, pack_bytes(&env.repo).0 + 1, libc::SIGTERM);
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
    assert!(stderr(&out).contains("SIGTERM"), "{}", stderr(&out));
    env.ok(["check"]);
    let (_, before) = pack_bytes(&env.repo);
    assert!(before > after_int, "the second run stored more");

    let done = backup_json(&env, &[], &src);
    let stored = done["summary"]["stored_added"].as_u64().unwrap();
    // Everything stored by the interrupted runs is reused: the last backup
    // adds only the rest, so the repository holds the data about once.
    assert!(before >= 64 << 20, "interrupted runs kept {before} bytes");
    assert!(
        stored + before < total + total / 20,
        "stored {stored} after {before} already kept, for {total} of data"
    );
    env.ok(["check"]);
    let target = env.path("out");
    env.ok([
        "restore".as_ref(),
        "latest".as_ref(),
        "--target".as_ref(),
        target.as_os_str(),
    ]);
    assert_same_tree(&src, &target.join(src.strip_prefix("/").unwrap()));
}

fn progress_source(env: &Env) -> (PathBuf, u64) {
    let src = env.path("src");
    for i in 0..16 {
        write(
            &src.join(format!("d{}/f{i}", i % 4)),
            &noise(4 << 20, 300 + i),
        );
    }
    (src, 16 * (4 << 20))
}

#[test]
fn status_lines_without_a_terminal_only_when_asked() {
    let env = Env::new();
    env.init();
    let (src, total) = progress_source(&env);
    // Not a terminal, no interval: no progress at all.
    let quiet = env.ok(["backup".as_ref(), src.as_os_str()]);
    assert!(!stderr(&quiet).contains("backup ["), "{}", stderr(&quiet));

    let out = env.ok([
        "--progress-interval".as_ref(),
        "200ms".as_ref(),
        "backup".as_ref(),
        "--force".as_ref(),
        src.as_os_str(),
    ]);
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("backup [")).collect();
    let last = lines
        .last()
        .unwrap_or_else(|| panic!("no status line: {err}"));
    assert!(
        last.contains("64.00 MiB of 64.00 MiB (100.0%), 16 of 16 files"),
        "{last}"
    );
    let _ = total;

    // --json: JSON lines on stderr, stdout stays one JSON document.
    let out = env.ok([
        "--progress-interval".as_ref(),
        "200ms".as_ref(),
        "--json".as_ref(),
        "backup".as_ref(),
        "--force".as_ref(),
        src.as_os_str(),
    ]);
    let result: Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    assert_eq!(result["counts"]["files"], 16);
    let statuses: Vec<Value> = stderr(&out)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("each status line is JSON"))
        .collect();
    let last = statuses.last().expect("at least the final status line");
    assert_eq!(last["message_type"], "status");
    assert_eq!(last["operation"], "backup");
    assert_eq!(last["finished"], true);
    assert_eq!(last["totals_final"], true);
    assert_eq!(last["total_bytes"], total);
    assert_eq!(last["bytes_done"], total);
    assert_eq!(last["total_files"], 16);
    assert_eq!(last["files_done"], 16);
    assert_eq!(last["percent_done"], 100.0);
}

#[test]
fn the_terminal_bar_has_the_real_total_before_the_end() {
    let env = Env::new();
    env.init();
    let (src, _) = progress_source(&env);
    // script(1) gives holdfast a terminal and copies what it draws.
    let cmd = format!("{} backup {}", BIN, src.display());
    let out = Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .env("HOLDFAST_REPOSITORY", &env.repo)
        .env("HOLDFAST_PASSWORD", PASSWORD)
        .env_remove("HOLDFAST_PASSWORD_FILE")
        .env("TERM", "xterm")
        .env("COLUMNS", "200")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let screen = stdout(&out);
    // Frames are "<done>/<total>"; at least one must show the real total
    // while the work is not done (a total that grows with the work never does).
    let partial = screen
        .split(['\r', '\n', '\u{1b}'])
        .filter_map(|frame| {
            let i = frame.find("/64.00 MiB")?;
            let done = frame[..i].rsplit(' ').nth(1)?;
            Some(done.to_string())
        })
        .filter(|done| !done.starts_with("64.00"))
        .count();
    assert!(
        partial > 0,
        "no frame with the real total before the end:\n{screen:?}"
    );
    assert!(screen.contains("/16 files, ETA"), "{screen:?}");
}
