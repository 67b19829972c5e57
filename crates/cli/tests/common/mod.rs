//! Shared helpers for tests that run the real `holdfast` binary against real
//! repositories in temporary directories.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_holdfast");
pub const PASSWORD: &str = "correct horse battery staple";

/// A temporary directory with a repository path inside it.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub repo: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().join("repo");
        Env { dir, repo }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env("HOLDFAST_REPOSITORY", &self.repo)
            .env("HOLDFAST_PASSWORD", PASSWORD)
            .env_remove("HOLDFAST_PASSWORD_FILE")
            .stdin(std::process::Stdio::null());
        c
    }

    /// Run holdfast with `args`; returns the output (any exit code).
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd().args(args).output().expect("running holdfast")
    }

    /// Run and require exit code 0.
    pub fn ok<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "holdfast failed\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `holdfast init` with cheap key derivation (tests open repos often).
    pub fn init(&self) {
        self.ok(["init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"]);
    }

    pub fn json<I, S>(&self, args: I) -> serde_json::Value
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut a: Vec<std::ffi::OsString> = args
            .into_iter()
            .map(|s| s.as_ref().to_os_string())
            .collect();
        a.push("--json".into());
        let out = self.ok(a);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Deterministic pseudo-random bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Compressible text.
pub fn text(len: usize, seed: u64) -> Vec<u8> {
    let words = [
        "patient",
        "encounter",
        "observation",
        "glucose",
        "fasting",
        "normal",
        "discharge",
    ];
    let n = noise(len / 4 + 8, seed);
    let mut out = Vec::with_capacity(len + 16);
    let mut i = 0;
    while out.len() < len {
        out.extend_from_slice(words[n[i % n.len()] as usize % words.len()].as_bytes());
        out.push(b' ');
        i += 1;
    }
    out.truncate(len);
    out
}

/// Compare two trees: names, kinds, content, symlink targets, modes and
/// mtimes of files (directory mtimes too unless `skip_dir_times`).
pub fn assert_same_tree(a: &Path, b: &Path) {
    let mut la = listing(a);
    let mut lb = listing(b);
    la.sort();
    lb.sort();
    let names_a: Vec<_> = la.iter().map(|e| e.0.clone()).collect();
    let names_b: Vec<_> = lb.iter().map(|e| e.0.clone()).collect();
    assert_eq!(names_a, names_b, "same entries");
    for (ea, eb) in la.iter().zip(&lb) {
        assert_eq!(ea, eb, "entry {:?} differs", ea.0);
    }
}

type Entry = (PathBuf, String, u32, i64, Vec<u8>, u32, u32);

fn listing(root: &Path) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read_dir") {
            let e = e.expect("entry");
            let p = e.path();
            let m = fs::symlink_metadata(&p).expect("lstat");
            let rel = p.strip_prefix(root).expect("prefix").to_path_buf();
            let (kind, content) = if m.is_dir() {
                stack.push(p.clone());
                ("dir", Vec::new())
            } else if m.file_type().is_symlink() {
                (
                    "symlink",
                    fs::read_link(&p)
                        .expect("readlink")
                        .into_os_string()
                        .into_encoded_bytes(),
                )
            } else {
                ("file", fs::read(&p).expect("read"))
            };
            let mtime = if kind == "symlink" { 0 } else { m.mtime() };
            out.push((
                rel,
                kind.to_string(),
                if kind == "symlink" {
                    0
                } else {
                    m.mode() & 0o7777
                },
                mtime,
                content,
                m.uid(),
                m.gid(),
            ));
        }
    }
    out
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// The one pack file in `repo/data/xx/`, largest first.
pub fn packs(repo: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for fan in fs::read_dir(repo.join("data")).expect("data dir") {
        let fan = fan.expect("entry").path();
        for p in fs::read_dir(&fan).expect("fan dir") {
            let p = p.expect("entry").path();
            if !p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .starts_with('.')
            {
                out.push(p);
            }
        }
    }
    out.sort_by_key(|p| std::cmp::Reverse(fs::metadata(p).map(|m| m.len()).unwrap_or(0)));
    out
}
