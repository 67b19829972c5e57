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
    archive_seeded(count, 0)
}

/// Like [`archive`]; `seed` changes the content (same names).
fn archive_seeded(count: u64, seed: u64) -> (Env, String, Vec<Vec<u8>>) {
    let env = Env::new();
    env.init();
    let kf = env.path("wal.key");
    env.ok(["key", "add", "--new-key-file", kf.to_str().unwrap()]);
    let pg_wal = env.path("src_wal");
    std::fs::create_dir(&pg_wal).unwrap();
    let mut segs = Vec::new();
    for n in 1..=count {
        let mut data = text(SEG / 2, n + 1000 * seed);
        data.extend(noise(SEG / 4, n + 1000 * seed));
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

/// Wait until no prefetcher for `spool` is running (and at least `min`
/// stamped segments are there), so a test sees a settled spool.
///
/// This looks at processes, never at the spool's lock: taking the lock to
/// test it, even for a moment, makes a prefetcher that starts in that
/// moment step aside (it thinks another one is filling the spool), and a
/// process already spawned but not yet holding the lock would look settled.
fn settle(spool: &Path, min: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            Instant::now() < deadline,
            "spool {} did not settle (stamped: {:?}, prefetchers: {})",
            spool.display(),
            stamped(spool),
            prefetchers(spool)
        );
        if prefetchers(spool) == 0 && stamped(spool).len() >= min {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many `holdfast wal-prefetch` processes are filling `spool`.
fn prefetchers(spool: &Path) -> usize {
    let want = spool.to_string_lossy().into_owned();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return 0;
    };
    rd.flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| {
            let args: Vec<String> = c
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            args.iter().any(|a| a == "wal-prefetch") && args.contains(&want)
        })
        .count()
}

/// Segment names under their final name in the spool.
fn stamped(spool: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(spool)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.len() == 24)
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn ino(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(p).unwrap().ino()
}

/// A pg_wal directory with the spool of a `--prefetch 3` fetch of segment
/// 1 filled (segments 2..=4).
fn primed(env: &Env, kf: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let pg_wal = env.path("pg_wal");
    std::fs::create_dir_all(&pg_wal).unwrap();
    let dest = pg_wal.join("RECOVERYXLOG");
    let spool = pg_wal.join("holdfast-prefetch");
    let o = fetch(env, kf, 1, &dest, &["--prefetch", "3"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    settle(&spool, 3);
    assert_eq!(
        stamped(&spool),
        (2..=4).map(seg_name).collect::<Vec<_>>(),
        "no more than asked"
    );
    (dest, spool)
}

#[test]
fn a_spool_hit_is_a_rename_of_the_verified_file_and_needs_no_key() {
    let (env, kf, segs) = archive(6);
    let (dest, spool) = primed(&env, &kf);
    let no_key = env.path("no-such-key-file");
    let no_key = no_key.to_str().unwrap();

    // The hit renames the spooled file (same inode) and never opens the
    // repository: a key file that does not exist does not matter.
    let spooled = ino(&spool.join(seg_name(2)));
    let o = fetch(&env, no_key, 2, &dest, &["--prefetch", "3"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(std::fs::read(&dest).unwrap() == segs[1]);
    assert_eq!(ino(&dest), spooled, "served by a rename");
    assert!(!spool.join(seg_name(2)).exists());
    assert!(!spool.join(format!("{}.stamp", seg_name(2))).exists());

    // Every segment in order, then the end of the archive: exit 9.
    for n in 3..=6 {
        let o = fetch(&env, &kf, n, &dest, &["--prefetch", "3"]);
        assert_eq!(o.status.code(), Some(0), "{n}: {}", stderr(&o));
        assert!(std::fs::read(&dest).unwrap() == segs[n as usize - 1], "{n}");
    }
    settle(&spool, 0);
    let o = fetch(&env, &kf, 7, &dest, &["--prefetch", "3"]);
    assert_eq!(o.status.code(), Some(9), "{}", stderr(&o));
    settle(&spool, 0);
    // Replayed segments do not stay in the spool.
    assert!(stamped(&spool)
        .iter()
        .all(|n| n.as_str() > seg_name(6).as_str()));
}

#[test]
fn a_changed_or_foreign_spool_file_is_never_served() {
    let (env, kf, segs) = archive(5);
    let (dest, spool) = primed(&env, &kf);
    let rd = |n: u64| std::fs::read(spool.join(seg_name(n))).unwrap();

    // Same size, one byte changed (a later write, whatever its timing).
    let mut b = rd(2);
    b[SEG / 2] ^= 0xff;
    std::fs::write(spool.join(seg_name(2)), b).unwrap();
    // Truncated.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(spool.join(seg_name(3)))
        .unwrap();
    f.set_len((SEG / 2) as u64).unwrap();
    drop(f);
    // Replaced by a symlink to the right bytes elsewhere.
    let elsewhere = env.path("seg4");
    std::fs::write(&elsewhere, rd(4)).unwrap();
    std::fs::remove_file(spool.join(seg_name(4))).unwrap();
    std::os::unix::fs::symlink(&elsewhere, spool.join(seg_name(4))).unwrap();

    for n in 2..=4 {
        let o = fetch(&env, &kf, n, &dest, &["--prefetch", "3"]);
        assert_eq!(o.status.code(), Some(0), "{n}: {}", stderr(&o));
        assert!(
            std::fs::read(&dest).unwrap() == segs[n as usize - 1],
            "{n}: fetched from the repository, correct"
        );
        // (The right bytes alone prove it for 2 and 3; the symlink of 4
        // pointed at right bytes, and must not be what landed.)
        assert!(std::fs::symlink_metadata(&dest).unwrap().is_file(), "{n}");
        settle(&spool, 0);
    }

    // A spool stamped for another repository (same cluster, same names,
    // other content) is not served: a leftover from another restore.
    settle(&spool, 1);
    let f5 = seg_name(5);
    assert!(spool.join(&f5).exists(), "{:?}", stamped(&spool));
    let (other, okf, osegs) = archive_seeded(5, 1);
    let opg_wal = other.path("pg_wal");
    let ospool = opg_wal.join("holdfast-prefetch");
    std::fs::create_dir_all(&ospool).unwrap();
    for f in [f5.clone(), format!("{f5}.stamp")] {
        std::fs::rename(spool.join(&f), ospool.join(&f)).unwrap();
    }
    let odest = opg_wal.join("RECOVERYXLOG");
    let o = fetch(&other, &okf, 5, &odest, &["--prefetch", "3"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(std::fs::read(&odest).unwrap() == osegs[4], "its own bytes");
    assert!(osegs[4] != segs[4]);
    assert!(!ospool.join(&f5).exists(), "the foreign file is removed");
    settle(&ospool, 0);
    settle(&spool, 0);
}

#[test]
fn a_missing_segment_or_history_file_is_not_found_whatever_the_spool_holds() {
    let (env, kf, _segs) = archive(4);
    let (dest, spool) = primed(&env, &kf);
    // A file under the name of a segment that is not archived, with a
    // stamp copied from a real one: not served, exit 9.
    let missing = seg_name(9);
    std::fs::copy(spool.join(seg_name(2)), spool.join(&missing)).unwrap();
    std::fs::copy(
        spool.join(format!("{}.stamp", seg_name(2))),
        spool.join(format!("{missing}.stamp")),
    )
    .unwrap();
    let o = fetch(&env, &kf, 9, &dest, &["--prefetch", "3"]);
    assert_eq!(o.status.code(), Some(9), "{}", stderr(&o));
    // The same segment number on another timeline is another file.
    let tl2 = format!("00000002{}", &seg_name(3)[8..]);
    let o = env
        .cmd()
        .env_remove("HOLDFAST_PASSWORD")
        .args(["wal-fetch", "--key-file", &kf, "--cluster", "42"])
        .args(["--prefetch", "3", &tl2])
        .arg(&dest)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(9), "{}", stderr(&o));
    // History files are never taken from the spool.
    std::fs::write(spool.join("00000002.history"), b"1\t0/3000000\tbogus\n").unwrap();
    let o = env
        .cmd()
        .env_remove("HOLDFAST_PASSWORD")
        .args(["wal-fetch", "--key-file", &kf, "--cluster", "42"])
        .args(["--prefetch", "3", "00000002.history"])
        .arg(&dest)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(9), "{}", stderr(&o));
    settle(&spool, 0);
}

#[test]
fn racing_fetches_and_killed_prefetchers_never_give_partial_or_wrong_wal() {
    let (env, kf, segs) = archive(6);
    let pg_wal = env.path("pg_wal");
    std::fs::create_dir(&pg_wal).unwrap();
    let spool = pg_wal.join("holdfast-prefetch");

    // A prefetcher killed at various points: whatever is under a final
    // name is complete and verified; the rest are temporaries.
    for delay_ms in [30u64, 150, 400, 900] {
        let mut child = env
            .cmd()
            .env_remove("HOLDFAST_PASSWORD")
            .args(["wal-prefetch", "--key-file", &kf, "--cluster", "42"])
            .args(["--count", "5", "--spool"])
            .arg(&spool)
            .arg(seg_name(1))
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        for f in std::fs::read_dir(&spool).unwrap().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.len() == 24 {
                let n = u64::from_str_radix(&name[16..], 16).unwrap();
                assert!(
                    std::fs::read(f.path()).unwrap() == segs[n as usize - 1],
                    "{name} after a kill at {delay_ms} ms"
                );
            } else {
                assert!(name.starts_with('.') || name.ends_with(".stamp"), "{name}");
            }
        }
    }

    // Two fetches of each segment racing, to one destination and to two:
    // both succeed with the right bytes, from the spool or the repository.
    let dest = pg_wal.join("RECOVERYXLOG");
    let other = pg_wal.join("OTHERXLOG");
    for n in 1..=6u64 {
        let spawn = |d: &Path| {
            env.cmd()
                .env_remove("HOLDFAST_PASSWORD")
                .args(["wal-fetch", "--key-file", &kf, "--cluster", "42"])
                .args(["--prefetch", "3"])
                .arg(seg_name(n))
                .arg(d)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let a = spawn(&dest);
        let b = spawn(if n % 2 == 0 { &dest } else { &other });
        for (c, d) in [(a, &dest), (b, if n % 2 == 0 { &dest } else { &other })] {
            let o = c.wait_with_output().unwrap();
            assert_eq!(o.status.code(), Some(0), "{n}: {}", stderr(&o));
            assert!(std::fs::read(d).unwrap() == segs[n as usize - 1], "{n}");
        }
        if n == 2 {
            settle(&spool, 0);
        }
    }
    settle(&spool, 0);
}

#[test]
fn a_spool_on_another_file_system_is_copied_with_its_hash_checked() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("no /dev/shm: skipped");
        return;
    }
    let (env, kf, segs) = archive(3);
    let spool_dir = tempfile::tempdir_in(shm).unwrap();
    let spool = spool_dir.path().join("spool");
    let spool_s = spool.to_str().unwrap();
    let pg_wal = env.path("pg_wal");
    std::fs::create_dir(&pg_wal).unwrap();
    let dest = pg_wal.join("RECOVERYXLOG");
    let o = fetch(
        &env,
        &kf,
        1,
        &dest,
        &["--prefetch", "2", "--spool", spool_s],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    settle(&spool, 2);
    // Damage that keeps size and time (bit rot, or a deliberate reset of
    // the time): a rename would hand it over; the copy checks the hash.
    let p3 = spool.join(seg_name(3));
    let mtime = std::fs::metadata(&p3).unwrap().modified().unwrap();
    let mut b = std::fs::read(&p3).unwrap();
    b[7] ^= 1;
    let f = std::fs::OpenOptions::new().write(true).open(&p3).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &b[..8], 0).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    for n in 2..=3 {
        let o = fetch(
            &env,
            &kf,
            n,
            &dest,
            &["--prefetch", "2", "--spool", spool_s],
        );
        assert_eq!(o.status.code(), Some(0), "{n}: {}", stderr(&o));
        assert!(std::fs::read(&dest).unwrap() == segs[n as usize - 1], "{n}");
        assert!(!spool.join(seg_name(n)).exists(), "{n}");
    }
    settle(&spool, 0);
}
