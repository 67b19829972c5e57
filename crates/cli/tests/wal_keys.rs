//! `wal-push` / `wal-fetch` with a key file: fetching from the manifest's
//! own blob locations, and prefetching into a spool directory.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

const SEG: usize = 16 * 1024 * 1024;

fn seg_name(n: u64) -> String {
    format!("00000001{:08X}{:08X}", n / 256, n % 256)
}

/// A repository with a key file and `count` archived segments; returns
/// (env, key file, segment contents).
fn archive(count: u64) -> (Env, String, Vec<Vec<u8>>) {
    let env = Env::new();
    env.init();
    let kf = env.path("wal.key");
    env.ok(["key", "add", "--new-key-file", kf.to_str().unwrap()]);
    let pg_wal = env.path("src_wal");
    std::fs::create_dir(&pg_wal).unwrap();
    let mut segs = Vec::new();
    for n in 1..=count {
        let mut data = text(SEG / 2, n);
        data.extend(noise(SEG / 4, n));
        data.resize(SEG, 0); // a switched segment's zero tail
        let p = pg_wal.join(seg_name(n));
        std::fs::write(&p, &data).unwrap();
        let o = env
            .cmd()
            .env_remove("HOLDFAST_PASSWORD")
            .args([
                "wal-push",
                "--key-file",
                kf.to_str().unwrap(),
                "--cluster",
                "42",
            ])
            .arg(&p)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        segs.push(data);
    }
    (env, kf.display().to_string(), segs)
}

fn fetch(env: &Env, kf: &str, n: u64, dest: &Path, extra: &[&str]) -> std::process::Output {
    env.cmd()
        .env_remove("HOLDFAST_PASSWORD")
        .args(["wal-fetch", "--key-file", kf, "--cluster", "42"])
        .args(extra)
        .arg(seg_name(n))
        .arg(dest)
        .output()
        .unwrap()
}

#[test]
fn fetch_needs_no_index_and_verifies_what_it_reads() {
    let (env, kf, segs) = archive(2);
    let dest = env.path("RECOVERYXLOG");
    // The manifests say where their blobs are: the index is not needed.
    let index = env.repo.join("index");
    let aside = env.path("index-aside");
    std::fs::rename(&index, &aside).unwrap();
    let o = fetch(&env, &kf, 1, &dest, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(std::fs::read(&dest).unwrap() == segs[0]);
    std::fs::rename(&aside, &index).unwrap();

    // Damage in a pack is caught, whichever way the blob is found.
    for p in std::fs::read_dir(env.repo.join("data")).unwrap() {
        for f in std::fs::read_dir(p.unwrap().path()).unwrap() {
            let f = f.unwrap().path();
            let mut b = std::fs::read(&f).unwrap();
            b[100] ^= 1;
            std::fs::write(&f, b).unwrap();
        }
    }
    let dest2 = env.path("other");
    let o = fetch(&env, &kf, 2, &dest2, &[]);
    assert_ne!(o.status.code(), Some(0));
    assert!(!dest2.exists(), "nothing written from damaged data");
}

#[test]
fn prefetched_segments_are_served_from_the_spool_after_verification() {
    let (env, kf, segs) = archive(5);
    let pg_wal = env.path("pg_wal");
    std::fs::create_dir(&pg_wal).unwrap();
    let dest = pg_wal.join("RECOVERYXLOG");
    let spool = pg_wal.join("holdfast-prefetch");

    let o = fetch(&env, &kf, 1, &dest, &["--prefetch", "3"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(std::fs::read(&dest).unwrap() == segs[0]);
    // The background prefetcher fills the spool with segments 2..=4.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(2..=4).all(|n| spool.join(seg_name(n)).exists()) {
        assert!(
            Instant::now() < deadline,
            "prefetch did not fill {}",
            spool.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!spool.join(seg_name(5)).exists(), "no more than asked");

    // Served from the spool: the spooled file is consumed.
    let o = fetch(&env, &kf, 2, &dest, &["--prefetch", "3"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(std::fs::read(&dest).unwrap() == segs[1]);
    assert!(!spool.join(seg_name(2)).exists());

    // A spooled file that does not match its manifest is not served.
    let p3 = spool.join(seg_name(3));
    let mut b = std::fs::read(&p3).unwrap();
    b[5] ^= 0xff;
    std::fs::write(&p3, b).unwrap();
    let o = fetch(&env, &kf, 3, &dest, &["--prefetch", "3"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        std::fs::read(&dest).unwrap() == segs[2],
        "fetched again, correct"
    );

    for n in 4..=5 {
        let o = fetch(&env, &kf, n, &dest, &["--prefetch", "3"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(std::fs::read(&dest).unwrap() == segs[n as usize - 1]);
    }
    // End of the archive: exit 9, as without prefetch.
    let o = fetch(&env, &kf, 6, &dest, &["--prefetch", "3"]);
    assert_eq!(o.status.code(), Some(9), "{}", stderr(&o));
    // Let a prefetcher still running finish before the directory goes.
    let lock = spool.join(".lock");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let f = std::fs::File::open(&lock).unwrap();
        use std::os::unix::io::AsRawFd;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
