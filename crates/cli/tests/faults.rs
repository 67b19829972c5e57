//! Bad input and faults: each must give a clear error that names what is
//! wrong, a meaningful exit code, and lose nothing.

mod common;

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// Ten files of one blob each, so damage to one blob hits exactly one file.
fn ten_files(root: &Path) {
    fs::create_dir_all(root).unwrap();
    for i in 0..10 {
        fs::write(root.join(format!("file{i}.bin")), noise(100_000, i + 10)).unwrap();
    }
}

fn restore_into(env: &Env, target: &Path) -> std::process::Output {
    env.run([
        "restore".as_ref(),
        "latest".as_ref(),
        "--target".as_ref(),
        target.as_os_str(),
    ])
}

#[test]
fn wrong_password_is_exit_12_and_says_so() {
    let env = Env::new();
    env.init();
    let out = env
        .cmd()
        .env("HOLDFAST_PASSWORD", "nope")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12));
    assert!(stderr(&out).contains("wrong password"), "{}", stderr(&out));
}

#[test]
fn not_a_repository_is_exit_10() {
    let env = Env::new();
    fs::create_dir_all(&env.repo).unwrap();
    let out = env.run(["snapshots"]);
    assert_eq!(out.status.code(), Some(10));
    assert!(
        stderr(&out).contains("is not a Holdfast repository"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("holdfast init"), "says what to do");
    let none = env
        .cmd()
        .env_remove("HOLDFAST_REPOSITORY")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert!(
        stderr(&none).contains("no repository given"),
        "{}",
        stderr(&none)
    );
}

#[test]
fn newer_format_version_is_refused_before_the_password() {
    let env = Env::new();
    env.init();
    let cfg = env.repo.join("config");
    let mut bytes = fs::read(&cfg).unwrap();
    bytes[8..12].copy_from_slice(&99u32.to_le_bytes());
    fs::write(&cfg, bytes).unwrap();
    let out = env
        .cmd()
        .env("HOLDFAST_PASSWORD", "irrelevant")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(13));
    let e = stderr(&out);
    assert!(
        e.contains("format version 99") && e.contains("upgrade holdfast"),
        "{e}"
    );
}

#[test]
fn flipped_byte_in_a_pack_is_found_and_fails_only_its_file() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    ten_files(&src);
    env.ok(["backup".as_ref(), src.as_os_str()]);
    let pack = packs(&env.repo).remove(0);
    let pack_name = pack.file_name().unwrap().to_string_lossy().into_owned();
    {
        let mut f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&pack)
            .unwrap();
        f.seek(SeekFrom::Start(37 + 50)).unwrap();
        let mut b = [0u8; 1];
        std::io::Read::read_exact(&mut f, &mut b).unwrap();
        f.seek(SeekFrom::Start(37 + 50)).unwrap();
        f.write_all(&[b[0] ^ 0x01]).unwrap();
    }
    let structure = env.run(["check"]);
    assert_eq!(
        structure.status.code(),
        Some(0),
        "structure is intact: {}",
        stderr(&structure)
    );
    let c = env.run(["check", "--read-data"]);
    assert_eq!(c.status.code(), Some(4), "{}", stderr(&c));
    assert!(
        stderr(&c).contains(&pack_name),
        "check names the pack: {}",
        stderr(&c)
    );

    let target = env.path("out");
    let r = restore_into(&env, &target);
    assert_eq!(r.status.code(), Some(4), "{}", stderr(&r));
    let err = stderr(&r);
    let failed: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("not restored:"))
        .collect();
    assert_eq!(
        failed.len(),
        1,
        "exactly the file with the damaged blob fails: {err}"
    );
    assert!(
        failed[0].contains("file") && failed[0].contains("authentication failed"),
        "{err}"
    );
    let base = target.join(src.strip_prefix("/").unwrap());
    let mut good = 0;
    for i in 0..10 {
        let p = base.join(format!("file{i}.bin"));
        if failed[0].contains(&format!("file{i}.bin")) {
            assert!(
                !p.exists(),
                "a damaged file is not left behind with wrong content"
            );
        } else {
            assert_eq!(fs::read(&p).unwrap(), noise(100_000, i + 10));
            good += 1;
        }
    }
    assert_eq!(good, 9);
}

#[test]
fn missing_pack_is_reported_by_check_and_restore() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    ten_files(&src);
    env.ok(["backup".as_ref(), src.as_os_str()]);
    let pack = packs(&env.repo).remove(0);
    let name = pack.file_name().unwrap().to_string_lossy().into_owned();
    fs::remove_file(&pack).unwrap();
    let c = env.run(["check"]);
    assert_eq!(c.status.code(), Some(4));
    assert!(
        stderr(&c).contains(&format!("pack {name} is missing")),
        "{}",
        stderr(&c)
    );
    let target = env.path("out");
    let r = restore_into(&env, &target);
    assert_eq!(r.status.code(), Some(4));
    assert!(stderr(&r).contains("not restored:"), "{}", stderr(&r));
    assert!(stderr(&r).contains(&name), "names the pack: {}", stderr(&r));
}

#[test]
fn truncated_index_is_reported_and_repairable() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    ten_files(&src);
    env.ok(["backup".as_ref(), src.as_os_str()]);
    let idx = fs::read_dir(env.repo.join("index"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let len = fs::metadata(&idx).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&idx)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let name = idx.file_name().unwrap().to_string_lossy().into_owned();

    let c = env.run(["check"]);
    assert_eq!(c.status.code(), Some(4));
    let e = stderr(&c);
    assert!(
        e.contains(&format!("index object {name} is unreadable")) && e.contains("repair index"),
        "{e}"
    );

    let r = env.json(["repair", "index"]);
    assert!(r["packs_reindexed"].as_u64().unwrap() >= 1, "{r}");
    env.ok(["check", "--read-data"]);
    let target = env.path("out");
    let out = restore_into(&env, &target);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_same_tree(&src, &target.join(src.strip_prefix("/").unwrap()));
}

#[test]
fn missing_source_path_is_a_clear_error() {
    let env = Env::new();
    env.init();
    let out = env.run(["backup", "/definitely/not/here"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("source path /definitely/not/here does not exist"),
        "{}",
        stderr(&out)
    );
    assert!(
        fs::read_dir(env.repo.join("snapshots"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0
    );
}

#[test]
fn unreadable_file_warns_goes_on_and_exits_3() {
    let env = Env::new();
    let src = env.path("src");
    ten_files(&src);
    let secret = src.join("secret.txt");
    fs::write(&secret, b"no access").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o000)).unwrap();
    // Root reads anything, so as root run the backup as an unprivileged user.
    let run_as_nobody = is_root();
    if run_as_nobody {
        let st = Command::new("chown")
            .args(["-R", "nobody"])
            .arg(env.dir.path())
            .status()
            .unwrap();
        assert!(st.success());
        fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    }
    let run = |args: &[&str]| {
        let mut c = if run_as_nobody {
            let mut c = Command::new("runuser");
            c.args(["-u", "nobody", "--", BIN]);
            c
        } else {
            Command::new(BIN)
        };
        c.args(args)
            .env("HOLDFAST_REPOSITORY", &env.repo)
            .env("HOLDFAST_PASSWORD", PASSWORD)
            .output()
            .unwrap()
    };
    let init = run(&["init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"]);
    assert_eq!(init.status.code(), Some(0), "{}", stderr(&init));
    let out = run(&["backup", src.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(
        e.contains("secret.txt") && e.contains("Permission denied"),
        "{e}"
    );
    let ls = run(&["ls", "latest"]);
    let listing = stdout(&ls);
    assert!(
        listing.contains("file9.bin"),
        "the rest is in the snapshot: {listing}"
    );
    assert!(!listing.contains("secret.txt"));
}

#[test]
fn full_disk_during_restore_is_a_clear_error() {
    assert!(
        is_root(),
        "this test mounts a small tmpfs and must run as root (as CI does)"
    );
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big.bin"), noise(4_000_000, 7)).unwrap();
    env.ok(["backup".as_ref(), src.as_os_str()]);
    let mnt = env.path("small");
    let _fs = SmallFs::mount(&mnt, "1m");
    let out = restore_into(&env, &mnt);
    assert_eq!(out.status.code(), Some(5), "a full disk is exit 5");
    let e = stderr(&out);
    assert!(
        e.contains("no space left on device") && e.contains("big.bin"),
        "{e}"
    );
    // The repository is untouched and still restores elsewhere.
    env.ok(["check", "--read-data"]);
    let target = env.path("roomy");
    assert_eq!(restore_into(&env, &target).status.code(), Some(0));
}

/// A tmpfs of `size` at `dir`, unmounted when dropped.
struct SmallFs(std::path::PathBuf);

impl SmallFs {
    fn mount(dir: &Path, size: &str) -> SmallFs {
        fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs");
        SmallFs(dir.to_path_buf())
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_repository_disk_during_backup_is_exit_5_and_loses_nothing() {
    assert!(
        is_root(),
        "this test mounts a small tmpfs and must run as root (as CI does)"
    );
    let env = Env::new();
    let _fs = SmallFs::mount(&env.repo, "6m");
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("small.bin"), noise(1_000_000, 3)).unwrap();
    env.ok(["backup".as_ref(), src.as_os_str()]);
    fs::write(src.join("big.bin"), noise(12_000_000, 4)).unwrap();
    let out = env.run(["backup".as_ref(), src.as_os_str()]);
    let e = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(5),
        "a full repository disk is exit 5: {e}"
    );
    assert!(e.contains("no space left"), "{e}");
    // The first snapshot is intact, and only it.
    let snaps = env.json(["snapshots"]);
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    env.ok(["check", "--read-data"]);
    fs::remove_file(src.join("big.bin")).unwrap();
    let target = env.path("out");
    let r = restore_into(&env, &target);
    assert_eq!(r.status.code(), Some(0), "{}", stderr(&r));
    assert_same_tree(&src, &target.join(src.strip_prefix("/").unwrap()));
}

#[test]
fn unreachable_s3_endpoint_is_exit_6() {
    // Nothing listens on this port: connection refused, retried, then
    // reported as storage unavailable (retry later), not as damage.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let env = Env::new();
    let out = env
        .cmd()
        .env("HOLDFAST_REPOSITORY", "s3://nobucket/prefix")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("HOLDFAST_S3_MAX_ATTEMPTS", "2")
        .args(["--s3-endpoint", &format!("http://127.0.0.1:{port}")])
        .args([
            "--s3-region",
            "us-east-1",
            "--s3-path-style",
            "--s3-allow-http",
        ])
        .arg("snapshots")
        .output()
        .unwrap();
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(6), "{e}");
    assert!(
        e.contains("127.0.0.1"),
        "the message names the endpoint: {e}"
    );
}

#[test]
fn kill_9_at_any_point_of_a_backup_leaves_a_good_repository() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..24 {
        let data = if i % 3 == 0 {
            text(1_500_000, i)
        } else {
            noise(2_000_000, i)
        };
        fs::write(src.join(format!("f{i:02}")), data).unwrap();
    }
    for (round, delay_ms) in [5u64, 30, 80, 150, 300].into_iter().enumerate() {
        // Change a little each round so backups have new work to do.
        fs::write(
            src.join(format!("round{round}")),
            noise(3_000_000, 100 + round as u64),
        )
        .unwrap();
        let mut child = env
            .cmd()
            .args(["backup", "--quiet", "--force"])
            .arg(&src)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let c = env.run(["check"]);
        assert_eq!(
            c.status.code(),
            Some(0),
            "after kill at {delay_ms} ms: {}",
            stderr(&c)
        );
    }
    let snaps = env.json(["snapshots"]);
    assert!(
        snaps.as_array().unwrap().len() < 5,
        "at least one kill must land before the commit point for this test to mean anything"
    );
    // The next backup succeeds, and everything verifies and restores.
    env.ok(["backup".as_ref(), src.as_os_str()]);
    env.ok(["check", "--read-data"]);
    let target = env.path("out");
    let r = restore_into(&env, &target);
    assert_eq!(r.status.code(), Some(0), "{}", stderr(&r));
    assert_same_tree(&src, &target.join(src.strip_prefix("/").unwrap()));
}
