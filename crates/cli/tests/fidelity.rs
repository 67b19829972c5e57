//! File fidelity through the real binary: extended attributes, POSIX ACLs
//! and file capabilities; sparse files; existing files and resuming a
//! restore killed with SIGKILL.

mod common;

use std::ffi::CString;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn sh(cmd: &str, args: &[&std::ffi::OsStr]) {
    let st = Command::new(cmd)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("running {cmd} (apt-get install -y attr acl libcap2-bin): {e}"));
    assert!(st.success(), "{cmd} {args:?} failed");
}

fn tool_output(cmd: &str, args: &[&std::ffi::OsStr]) -> String {
    let o = Command::new(cmd).args(args).output().expect(cmd);
    assert!(o.status.success(), "{cmd} {args:?}: {}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Every extended attribute of `p` (not following symlinks), sorted.
fn xattrs(p: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 65536];
    // SAFETY: valid path and buffer.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        assert_eq!(
            e.raw_os_error(),
            Some(libc::ENOTSUP),
            "{}: {e}",
            p.display()
        );
        return Vec::new();
    }
    names.truncate(n as usize);
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cn = CString::new(name).unwrap();
        let mut v = vec![0u8; 65536];
        // SAFETY: valid strings and buffer.
        let len =
            unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        assert!(
            len >= 0,
            "{}: {}",
            p.display(),
            std::io::Error::last_os_error()
        );
        v.truncate(len as usize);
        out.push((name.to_vec(), v));
    }
    out.sort();
    out
}

fn os(s: &str) -> &std::ffi::OsStr {
    s.as_ref()
}

/// A tree whose entries carry attributes of every kind: user, trusted and
/// security namespaces, access and default ACLs, a capability, on files,
/// directories and a symlink. Returns the paths that carry some.
fn tree_with_xattrs(src: &Path) -> Vec<PathBuf> {
    fs::create_dir_all(src.join("ward/charts")).unwrap();
    let note = src.join("ward/charts/note.txt");
    fs::write(&note, text(50_000, 3)).unwrap();
    let tool = src.join("ward/ping-tool");
    fs::write(&tool, b"#!/bin/sh\n").unwrap();
    let link = src.join("ward/latest");
    std::os::unix::fs::symlink("charts/note.txt", &link).unwrap();
    let dir = src.join("ward/charts");
    sh(
        "setfattr",
        &[
            os("-n"),
            os("user.origin"),
            os("-v"),
            os("scanner-7"),
            note.as_os_str(),
        ],
    );
    // A binary value with NULs and high bytes.
    sh(
        "setfattr",
        &[
            os("-n"),
            os("user.blob"),
            os("-v"),
            os("0x00ff10fe"),
            note.as_os_str(),
        ],
    );
    sh(
        "setfattr",
        &[
            os("-n"),
            os("trusted.audit"),
            os("-v"),
            os("t1"),
            note.as_os_str(),
        ],
    );
    sh(
        "setfattr",
        &[
            os("-n"),
            os("security.holdfast"),
            os("-v"),
            os("s1"),
            note.as_os_str(),
        ],
    );
    sh(
        "setfacl",
        &[os("-m"), os("u:nobody:rw,g:nogroup:r"), note.as_os_str()],
    );
    sh("setfacl", &[os("-m"), os("u:nobody:rx"), dir.as_os_str()]);
    sh(
        "setfacl",
        &[os("-d"), os("-m"), os("u:nobody:rwx,o::-"), dir.as_os_str()],
    );
    sh(
        "setfattr",
        &[
            os("-n"),
            os("user.ward"),
            os("-v"),
            os("7"),
            dir.as_os_str(),
        ],
    );
    sh(
        "setcap",
        &[os("cap_net_bind_service,cap_net_raw+ep"), tool.as_os_str()],
    );
    // user.* is not allowed on symlinks; trusted.* is.
    sh(
        "setfattr",
        &[
            os("-h"),
            os("-n"),
            os("trusted.pin"),
            os("-v"),
            os("l1"),
            link.as_os_str(),
        ],
    );
    vec![note, tool, link, dir]
}

fn restore_json(env: &Env, target: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        os("restore"),
        os("latest"),
        os("--target"),
        target.as_os_str(),
    ];
    args.extend(extra.iter().map(|s| os(s)));
    env.json(args)
}

fn inside(target: &Path, src_path: &Path) -> PathBuf {
    target.join(src_path.strip_prefix("/").unwrap())
}

#[test]
fn xattrs_acls_and_capabilities_round_trip_and_can_be_skipped() {
    if !is_root() {
        eprintln!("skipped: trusted.* and capabilities need root");
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let carriers = tree_with_xattrs(&src);
    let b = env.json([os("backup"), src.as_os_str()]);
    assert_eq!(b["warnings"].as_array().unwrap().len(), 0, "{b}");

    let target = env.path("restored");
    let r = restore_json(&env, &target, &[]);
    assert_eq!(
        r["restored"]["warnings"].as_array().unwrap().len(),
        0,
        "{r}"
    );
    for p in &carriers {
        let want = xattrs(p);
        assert!(!want.is_empty(), "{} carries attributes", p.display());
        assert_eq!(
            xattrs(&inside(&target, p)),
            want,
            "attributes of {}",
            p.display()
        );
    }
    // ... and they mean the same to the tools that read them.
    let restored_src = inside(&target, &src);
    let acl = tool_output(
        "getfacl",
        &[os("-cp"), restored_src.join("ward/charts").as_os_str()],
    );
    assert!(acl.contains("user:nobody:r-x"), "{acl}");
    assert!(acl.contains("default:user:nobody:rwx"), "{acl}");
    let cap = tool_output("getcap", &[restored_src.join("ward/ping-tool").as_os_str()]);
    assert!(cap.contains("cap_net_bind_service,cap_net_raw=ep"), "{cap}");
    assert_same_tree(&src, &restored_src);

    // restore --no-xattrs applies none of them (the ACLs' group bits are
    // in the mode, which is still restored).
    let bare = env.path("bare");
    restore_json(&env, &bare, &["--no-xattrs"]);
    for p in &carriers {
        assert_eq!(
            xattrs(&inside(&bare, p)),
            vec![],
            "{} without attributes",
            p.display()
        );
    }

    // backup --no-xattrs records none.
    env.ok([os("backup"), src.as_os_str(), os("--no-xattrs")]);
    let none = env.path("none");
    restore_json(&env, &none, &[]);
    for p in &carriers {
        assert_eq!(
            xattrs(&inside(&none, p)),
            vec![],
            "{} backed up without",
            p.display()
        );
    }
}

/// Unmounts on drop, so a failing test leaves no mount behind.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_target_that_refuses_xattrs_gets_warnings_and_all_the_data() {
    if !is_root() {
        eprintln!("skipped: mounting the refusing file system needs root");
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let carriers = tree_with_xattrs(&src);
    let expected: usize = carriers.iter().map(|p| xattrs(p).len()).sum();
    env.ok([os("backup"), src.as_os_str()]);

    // ramfs has no extended attributes at all: every one is refused.
    let mnt = env.path("ramfs");
    fs::create_dir_all(&mnt).unwrap();
    let st = Command::new("mount")
        .args([os("-t"), os("ramfs"), os("none"), mnt.as_os_str()])
        .status()
        .unwrap();
    if !st.success() {
        eprintln!("skipped: cannot mount ramfs here");
        return;
    }
    let _guard = Mount(mnt.clone());
    let out = env.run([os("restore"), os("latest"), os("--target"), mnt.as_os_str()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("extended attribute user.origin not restored"),
        "{err}"
    );
    assert!(
        err.contains("extended attribute system.posix_acl_default not restored"),
        "{err}"
    );
    assert!(
        err.contains("extended attribute security.capability not restored"),
        "{err}"
    );
    assert!(
        stdout(&out).contains(&format!("{expected} warning(s)")),
        "{}",
        stdout(&out)
    );
    let restored_src = inside(&mnt, &src);
    assert_same_tree(&src, &restored_src);

    // The same in --json: the count is the number of refused attributes.
    fs::remove_dir_all(mnt.join(src.strip_prefix("/").unwrap().iter().next().unwrap())).unwrap();
    let r = restore_json(&env, &mnt, &[]);
    assert_eq!(
        r["restored"]["warnings"].as_array().unwrap().len(),
        expected,
        "{r}"
    );
}

fn allocated(p: &Path) -> u64 {
    fs::metadata(p).unwrap().blocks() * 512
}

fn same_content(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (fs::File::open(a).unwrap(), fs::File::open(b).unwrap());
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = fa.read(&mut ba).unwrap();
        let mut nb = 0;
        while nb < na {
            let k = fb.read(&mut bb[nb..na]).unwrap();
            if k == 0 {
                return false;
            }
            nb += k;
        }
        if ba[..na] != bb[..na] {
            return false;
        }
        if na == 0 {
            return fb.read(&mut bb).unwrap() == 0;
        }
    }
}

#[test]
fn sparse_files_come_back_sparse_and_dense_files_dense() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    // 1 GiB with three islands of data, the last one unaligned at the end.
    let big = src.join("disk.img");
    {
        let mut f = fs::File::create(&big).unwrap();
        f.set_len(1 << 30).unwrap();
        for (at, seed) in [(0u64, 1u64), (512 << 20, 2), ((1 << 30) - 5000, 3)] {
            f.seek(SeekFrom::Start(at)).unwrap();
            f.write_all(&noise(if at == 0 { 100_000 } else { 5000 }, seed))
                .unwrap();
        }
    }
    assert!(allocated(&big) < 4 << 20, "source is sparse");
    // A file with holes only at its end (a trailing hole is never written).
    let tail = src.join("tail-hole");
    fs::write(&tail, noise(10_000, 4)).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&tail)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    // Dense files with long zero runs written out: they must stay dense.
    let dense = src.join("dense-zeros");
    let mut d = noise(1 << 20, 5);
    d.extend(vec![0u8; 6 << 20]);
    d.extend(noise(1 << 20, 6));
    fs::write(&dense, &d).unwrap();
    let all_zero = src.join("all-zero-dense");
    fs::write(&all_zero, vec![0u8; 3 << 20]).unwrap();
    assert!(allocated(&dense) >= 8 << 20 && allocated(&all_zero) >= 3 << 20);
    env.ok([os("backup"), src.as_os_str()]);

    let target = env.path("restored");
    restore_json(&env, &target, &[]);
    let r = |p: &Path| inside(&target, p);
    for p in [&big, &tail, &dense, &all_zero] {
        assert_eq!(
            fs::metadata(r(p)).unwrap().len(),
            fs::metadata(p).unwrap().len()
        );
        assert!(same_content(p, &r(p)), "{} identical", p.display());
    }
    assert!(
        allocated(&r(&big)) < 4 << 20,
        "1 GiB sparse file: {} bytes allocated",
        allocated(&r(&big))
    );
    assert!(
        allocated(&r(&tail)) < 1 << 20,
        "tail hole: {}",
        allocated(&r(&tail))
    );
    assert!(
        allocated(&r(&dense)) >= 8 << 20,
        "dense stays dense: {}",
        allocated(&r(&dense))
    );
    assert!(
        allocated(&r(&all_zero)) >= 3 << 20,
        "all-zero dense stays dense"
    );

    // --sparse makes holes of every zero run; --no-sparse allocates everything.
    let forced = env.path("forced");
    restore_json(
        &env,
        &forced,
        &[
            "--sparse",
            "--include",
            src.join("dense-zeros").to_str().unwrap(),
        ],
    );
    let f = inside(&forced, &dense);
    assert!(same_content(&dense, &f));
    assert!(
        allocated(&f) < 3 << 20,
        "--sparse: {} allocated",
        allocated(&f)
    );
    let full = env.path("full");
    restore_json(
        &env,
        &full,
        &[
            "--no-sparse",
            "--include",
            src.join("tail-hole").to_str().unwrap(),
        ],
    );
    let f = inside(&full, &tail);
    assert!(same_content(&tail, &f));
    assert!(
        allocated(&f) >= 64 << 20,
        "--no-sparse: {} allocated",
        allocated(&f)
    );
}

/// A corpus big enough that a restore can be killed midway: many small
/// files and a few that span several blobs.
fn corpus(src: &Path) {
    for d in 0..8 {
        let dir = src.join(format!("d{d}"));
        fs::create_dir_all(&dir).unwrap();
        for i in 0..40 {
            fs::write(
                dir.join(format!("f{i}")),
                noise(200_000 + i * 1000, (d * 100 + i) as u64),
            )
            .unwrap();
        }
    }
    for i in 0..4 {
        fs::write(src.join(format!("big{i}")), noise(24 << 20, 1000 + i)).unwrap();
    }
}

/// Regular files under `root` whose content equals the same path under `src_root`, by inode.
fn complete_files(root: &Path, src_root: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file() {
                let rel = p.strip_prefix(root).unwrap();
                let s = src_root.join(rel);
                if s.exists() && same_content(&s, &p) {
                    out.push((rel.to_path_buf(), m.ino()));
                }
            }
        }
    }
    out
}

#[test]
fn a_restore_killed_midway_resumes_without_overwrite() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    corpus(&src);
    env.ok([os("backup"), src.as_os_str()]);
    let target = env.path("restored");
    let restored_src = inside(&target, &src);

    let mut child = env
        .cmd()
        .args([
            os("restore"),
            os("latest"),
            os("--target"),
            target.as_os_str(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once some files are complete, long before it is done.
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("restore finished ({st}) before it could be killed: make the corpus larger");
        }
        let n = fs::read_dir(restored_src.join("d0"))
            .map(|rd| rd.count())
            .unwrap_or(0);
        if n >= 10 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    let st = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&st),
        Some(9),
        "killed, not finished"
    );
    assert!(
        target.join(".holdfast-restore-in-progress").exists(),
        "marker left behind"
    );
    let complete = complete_files(&restored_src, &src);
    assert!(!complete.is_empty(), "some files were complete when killed");

    // The same restore again, without --overwrite, finishes the job.
    let r = restore_json(&env, &target, &[]);
    assert_eq!(r["restored"]["resumed"], true, "{r}");
    assert_eq!(r["restored"]["failed"].as_array().unwrap().len(), 0, "{r}");
    assert_eq!(
        r["restored"]["files_skipped"].as_u64().unwrap(),
        complete.len() as u64,
        "exactly the complete files were kept: {r}"
    );
    assert_same_tree(&src, &restored_src);
    for (rel, ino) in &complete {
        assert_eq!(
            fs::metadata(restored_src.join(rel)).unwrap().ino(),
            *ino,
            "{} kept",
            rel.display()
        );
    }
    assert!(
        !target.join(".holdfast-restore-in-progress").exists(),
        "marker removed"
    );
}

/// A path in the restored tree and how to make it differ from the snapshot.
type Damage<'a> = (&'a str, &'a dyn Fn(&Path));

#[test]
fn existing_files_are_kept_when_identical_and_refused_when_they_differ() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("a")).unwrap();
    fs::write(src.join("a/one"), noise(700_000, 1)).unwrap();
    fs::write(src.join("a/two"), text(3_000_000, 2)).unwrap();
    fs::write(src.join("a/empty"), b"").unwrap();
    std::os::unix::fs::symlink("one", src.join("a/link")).unwrap();
    env.ok([os("backup"), src.as_os_str()]);
    let target = env.path("restored");
    let restored = inside(&target, &src);
    restore_json(&env, &target, &[]);
    let ino = |p: &str| fs::metadata(restored.join(p)).unwrap().ino();
    let before = (ino("a/one"), ino("a/two"));

    // Identical files: kept, no --overwrite needed.
    let r = restore_json(&env, &target, &[]);
    assert_eq!(r["restored"]["files_skipped"], 3, "{r}");
    assert_eq!(r["restored"]["resumed"], false, "{r}");
    assert_eq!((ino("a/one"), ino("a/two")), before);

    // Same size, one byte changed; a shorter file; a symlink elsewhere: each
    // is refused, and nothing is touched.
    let cases: [Damage; 3] = [
        ("a/two", &|p| {
            let mut b = fs::read(p).unwrap();
            b[1_234_567] ^= 1;
            fs::write(p, b).unwrap();
        }),
        ("a/one", &|p| {
            fs::OpenOptions::new()
                .write(true)
                .open(p)
                .unwrap()
                .set_len(699_999)
                .unwrap()
        }),
        ("a/link", &|p| {
            fs::remove_file(p).unwrap();
            std::os::unix::fs::symlink("two", p).unwrap();
        }),
    ];
    for (rel, damage) in cases {
        let p = restored.join(rel);
        damage(&p);
        let damaged = fs::symlink_metadata(&p).unwrap();
        let out = env.run([
            os("restore"),
            os("latest"),
            os("--target"),
            target.as_os_str(),
        ]);
        assert_eq!(out.status.code(), Some(1), "{rel}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("refusing to overwrite entries in the target that differ"),
            "{}",
            stderr(&out)
        );
        assert!(stderr(&out).contains(rel), "names {rel}: {}", stderr(&out));
        let now = fs::symlink_metadata(&p).unwrap();
        assert_eq!(
            (now.ino(), now.len(), now.mtime()),
            (damaged.ino(), damaged.len(), damaged.mtime())
        );
        let r = restore_json(&env, &target, &["--overwrite"]);
        assert_eq!(
            r["restored"]["files_skipped"].as_u64().unwrap() as usize,
            if rel == "a/link" { 3 } else { 2 },
            "{r}"
        );
        assert_same_tree(&src, &restored);
    }

    // A marker of a restore of another snapshot: refused.
    fs::write(src.join("a/three"), b"3").unwrap();
    env.ok([os("backup"), src.as_os_str()]);
    let marker = target.join(".holdfast-restore-in-progress");
    fs::write(&marker, br#"{"snapshot":"00ff","includes":[]}"#).unwrap();
    let out = env.run([
        os("restore"),
        os("latest"),
        os("--target"),
        target.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unfinished restore of snapshot 00ff"),
        "{}",
        stderr(&out)
    );
    assert!(!restored.join("a/three").exists());
}
