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

// ---- headless Chromium, for the HTML reports ----

/// Run headless Chromium with `args` and a profile of its own.
pub fn chromium(profile: &Path, args: &[&str]) -> Output {
    let out = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("chromium is needed for the report tests: apt-get install chromium (scripts/test.sh does)");
    assert!(out.status.success(), "chromium failed: {}", stderr(&out));
    out
}

/// The width in a PNG's header.
pub fn png_width(png: &[u8]) -> u32 {
    assert_eq!(png.get(..8), Some(&b"\x89PNG\r\n\x1a\n"[..]), "not a PNG");
    let w = png.get(16..20).expect("IHDR");
    u32::from_be_bytes([w[0], w[1], w[2], w[3]])
}

/// The page at `url` does not overflow sideways at any of `widths` (it is
/// loaded in an iframe of that width, in a wrapper page written to `dir`).
pub fn assert_fits_widths(dir: &Path, profile: &Path, url: &str, widths: &[u32]) {
    for width in widths {
        let wrap = dir.join(format!("wrap{width}.html"));
        fs::write(
            &wrap,
            format!(
                "<html><body><iframe id=\"f\" src=\"{url}\" style=\"width:{width}px;height:900px;border:0\"></iframe>\
                 <script>document.getElementById('f').onload=function(){{var e=this.contentDocument.documentElement;\
                 document.body.setAttribute('data-overflow',e.scrollWidth-e.clientWidth);}};</script></body></html>"
            ),
        )
        .unwrap();
        let dom = stdout(&chromium(
            profile,
            &[
                "--allow-file-access-from-files",
                "--virtual-time-budget=5000",
                "--dump-dom",
                &format!("file://{}", wrap.display()),
            ],
        ));
        assert!(
            dom.contains("data-overflow=\"0\""),
            "the report is wider than {width}px: {}",
            dom.lines()
                .find(|l| l.contains("data-overflow"))
                .unwrap_or("(not measured)")
        );
    }
}

/// Screenshots of `page` at each of `widths` (and `height`), each checked
/// to be a picture of something: the right width, and more than four
/// times the size of a blank page's. Returns them by width.
pub fn screenshots_not_blank(
    dir: &Path,
    profile: &Path,
    page: &Path,
    widths: &[u32],
    height: u32,
) -> Vec<(u32, Vec<u8>)> {
    let blank = dir.join("blank.html");
    fs::write(&blank, "<html><body></body></html>").unwrap();
    let mut out = Vec::new();
    for &width in widths {
        let shot = |page: &Path, name: &str| -> Vec<u8> {
            let png = dir.join(name);
            chromium(
                profile,
                &[
                    &format!("--window-size={width},{height}"),
                    &format!("--screenshot={}", png.display()),
                    &format!("file://{}", page.display()),
                ],
            );
            fs::read(&png).unwrap()
        };
        let report = shot(page, &format!("report{width}.png"));
        let empty = shot(&blank, &format!("blank{width}.png"));
        assert_eq!(png_width(&report), width);
        assert!(
            report.len() > 4 * empty.len(),
            "the {width}px screenshot looks blank ({} bytes; a blank page is {})",
            report.len(),
            empty.len()
        );
        out.push((width, report));
    }
    out
}
