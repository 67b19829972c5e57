//! The command line's rough edges, each tested as a class: output into a
//! pipe the reader closes early, error messages that repeat themselves and
//! the exit code of a `--repo` that is not a repository, relative paths in
//! `restore --include` and `ls`, `check --read-data-subset` forms, `-q`, and
//! how `ls`, `key list` and `snapshots` show names, links and owners.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

/// A repository with two snapshots of a tree big enough that every listing
/// overflows a pipe buffer (64 KiB), plus a source dir for more backups.
struct Fixture {
    env: Env,
    src: PathBuf,
}

fn fixture() -> Fixture {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    for d in 0..8 {
        let dir = src.join(format!("directory-with-a-long-name-{d:02}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..200 {
            fs::write(
                dir.join(format!("file-with-a-rather-long-name-{f:04}.txt")),
                text(200, d * 1000 + f),
            )
            .unwrap();
        }
    }
    env.ok(["backup".as_ref(), src.as_os_str()]);
    for d in 0..8 {
        let dir = src.join(format!("directory-with-a-long-name-{d:02}"));
        for f in 0..200 {
            fs::write(
                dir.join(format!("file-with-a-rather-long-name-{f:04}.txt")),
                text(201, d * 1000 + f),
            )
            .unwrap();
        }
    }
    env.ok(["backup".as_ref(), src.as_os_str()]);
    Fixture { env, src }
}

fn snapshot_ids(env: &Env) -> Vec<String> {
    let v = env.json(["snapshots"]);
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// stderr must show no sign of a failed write to stdout.
fn assert_quiet_stderr(what: &str, out: &Output) {
    let e = stderr(out);
    for bad in ["panicked", "Broken pipe", "os error 32", "error"] {
        assert!(!e.contains(bad), "{what}: stderr mentions {bad:?}: {e}");
    }
}

/// Every command whose stdout is closed before it writes: it must finish
/// with its own exit code and say nothing about the pipe.
#[test]
fn every_command_exits_quietly_on_a_closed_stdout() {
    let fx = fixture();
    let env = &fx.env;
    let ids = snapshot_ids(env);
    let restore_to = env.path("restored");
    let new_pw = env.path("new-password");
    fs::write(&new_pw, "another password\n").unwrap();
    let other_repo = env.path("other-repo");
    let src = fx.src.to_str().unwrap();
    let target = restore_to.to_str().unwrap();
    let cases: Vec<(Vec<&str>, i32)> = vec![
        (vec!["--help"], 0),
        (vec!["--version"], 0),
        (vec!["snapshots"], 0),
        (vec!["snapshots", "--json"], 0),
        (vec!["ls", "latest"], 0),
        (vec!["ls", "-l", "latest"], 0),
        (vec!["ls", "latest", "--json"], 0),
        (vec!["diff", &ids[0], &ids[1]], 0),
        (vec!["diff", &ids[0], &ids[1], "--json"], 0),
        (vec!["stats"], 0),
        (vec!["stats", "--json"], 0),
        (vec!["check"], 0),
        (vec!["check", "--read-data", "--json"], 0),
        (vec!["key", "list"], 0),
        (vec!["key", "list", "--json"], 0),
        (vec!["backup", src], 0),
        (vec!["backup", src, "--json"], 0),
        (vec!["restore", "latest", "--target", target], 0),
        (
            vec![
                "restore",
                "latest",
                "--target",
                target,
                "--overwrite",
                "--json",
            ],
            0,
        ),
        (vec!["repair", "index"], 0),
        (vec!["repair", "index", "--json"], 0),
    ];
    for (args, code) in cases {
        let mut child = env
            .cmd()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader is gone before any output
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
        assert_quiet_stderr(&format!("{args:?}"), &out);
    }
    // Commands that make things, with --json so they print on stdout.
    for args in [
        vec![
            "--repo",
            other_repo.to_str().unwrap(),
            "init",
            "--kdf-memory-mib",
            "8",
            "--kdf-iterations",
            "1",
            "--json",
        ],
        vec![
            "key",
            "add",
            "--new-password-file",
            new_pw.to_str().unwrap(),
            "--kdf-memory-mib",
            "8",
            "--kdf-iterations",
            "1",
            "--json",
        ],
    ] {
        let mut child = env
            .cmd()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert_quiet_stderr(&format!("{args:?}"), &out);
    }
}

/// Large listings into `head -c 1`: the reader takes one byte and leaves
/// while holdfast is blocked on a full pipe, so its next write fails.
#[test]
fn large_listings_into_head_stop_quietly() {
    let fx = fixture();
    let env = &fx.env;
    let ids = snapshot_ids(env);
    let cases: Vec<Vec<&str>> = vec![
        vec!["ls", "latest"],
        vec!["ls", "-l", "latest"],
        vec!["ls", "latest", "--json"],
        vec!["diff", &ids[0], &ids[1]],
        vec!["diff", &ids[0], &ids[1], "--json"],
    ];
    for args in cases {
        // Without the reader the output is over a pipe buffer long.
        let full = env.ok(&args);
        assert!(
            full.stdout.len() > 100_000,
            "{args:?}: {} bytes",
            full.stdout.len()
        );
        let mut holdfast = env
            .cmd()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pipe = holdfast.stdout.take().unwrap();
        let mut head = Command::new("head")
            .args(["-c", "1"])
            .stdin(Stdio::from(pipe))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = Vec::new();
        head.stdout.take().unwrap().read_to_end(&mut first).unwrap();
        assert_eq!(head.wait().unwrap().code(), Some(0));
        assert_eq!(first.len(), 1);
        let out = holdfast.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).is_empty(), "{args:?}: {}", stderr(&out));
    }
}

/// The `holdfast: error: ...` line must not say the same thing twice.
fn assert_no_repetition(what: &str, msg: &str) {
    let line = msg
        .lines()
        .find_map(|l| l.strip_prefix("holdfast: error: "))
        .unwrap_or_else(|| panic!("{what}: no error line in {msg:?}"));
    let parts: Vec<&str> = line.split(": ").map(str::trim).collect();
    for p in parts.iter().filter(|p| p.len() >= 6) {
        assert_eq!(
            line.matches(p).count(),
            1,
            "{what}: {p:?} repeats in {line:?}"
        );
    }
    assert!(line.matches("(os error").count() <= 1, "{what}: {line}");
}

#[test]
fn a_repo_that_is_not_a_repository_exits_10_with_a_plain_message() {
    let env = Env::new();
    let file = env.path("a-file");
    fs::write(&file, "not a repository").unwrap();
    let empty = env.path("empty");
    fs::create_dir(&empty).unwrap();
    let other = env.path("other-program");
    fs::create_dir(&other).unwrap();
    // restic keeps a `config` at the top of its repositories, too.
    fs::write(other.join("config"), noise(155, 1)).unwrap();
    fs::create_dir(other.join("data")).unwrap();
    let config_dir = env.path("config-is-a-dir");
    fs::create_dir_all(config_dir.join("config")).unwrap();
    let words = env.path("text");
    fs::create_dir(&words).unwrap();
    fs::write(words.join("config"), "[core]\nbare = false\n").unwrap();
    let cases = [
        ("a file", file.clone()),
        ("inside a file", file.join("sub")),
        ("a missing directory", env.path("missing/deeper")),
        ("an empty directory", empty),
        ("another program's repository", other),
        ("a config that is a directory", config_dir),
        ("a text config", words),
    ];
    for (what, repo) in &cases {
        for args in [
            &["snapshots"][..],
            &["ls", "latest"],
            &["check"],
            &["key", "list"],
        ] {
            let out = env
                .cmd()
                .env("HOLDFAST_REPOSITORY", repo)
                .args(args)
                .output()
                .unwrap();
            let e = stderr(&out);
            assert_eq!(out.status.code(), Some(10), "{what} {args:?}: {e}");
            assert!(
                e.contains(&repo.display().to_string())
                    && e.contains("is not a Holdfast repository"),
                "{what}: {e}"
            );
            assert_no_repetition(what, &e);
        }
    }
}

/// What is wrong, the arguments, and an environment variable to set.
type ErrorCase<'a> = (&'a str, Vec<&'a OsStr>, Option<(&'a str, &'a Path)>);

/// Errors that wrap an OS error, from several layers: none repeats it.
#[test]
fn wrapped_os_errors_are_said_once() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a"), "a").unwrap();
    env.ok(["backup".as_ref(), src.as_os_str()]);
    let file = env.path("plain-file");
    fs::write(&file, "x").unwrap();
    let pw_dir = env.path("pw-dir");
    fs::create_dir(&pw_dir).unwrap();
    let restore_target = file.join("t");
    let init_repo = file.join("repo");
    let cases: Vec<ErrorCase> = vec![
        (
            "restore under a file",
            vec![
                "restore".as_ref(),
                "latest".as_ref(),
                "--target".as_ref(),
                restore_target.as_os_str(),
            ],
            None,
        ),
        (
            "password file is a directory",
            vec!["snapshots".as_ref()],
            Some(("HOLDFAST_PASSWORD_FILE", pw_dir.as_path())),
        ),
        (
            "password file is missing",
            vec!["snapshots".as_ref()],
            Some(("HOLDFAST_PASSWORD_FILE", Path::new("/nonexistent/pw"))),
        ),
        (
            "init inside a file",
            vec!["init".as_ref()],
            Some(("HOLDFAST_REPOSITORY", init_repo.as_path())),
        ),
    ];
    for (what, args, var) in cases {
        let mut c = env.cmd();
        if let Some((k, v)) = var {
            c.env(k, v);
        }
        let out = c.args(&args).output().unwrap();
        assert_ne!(out.status.code(), Some(0), "{what}");
        let e = stderr(&out);
        assert!(e.contains("holdfast: error: "), "{what}: {e}");
        assert_no_repetition(what, &e);
    }
}

fn restored_files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// `restore --include` and `ls PATH` take paths as `backup` does: absolute,
/// relative to the current directory, or relative to the snapshot root.
#[test]
fn relative_paths_resolve_as_backup_resolves_them() {
    let env = Env::new();
    env.init();
    let base = env.dir.path().to_path_buf();
    let src = base.join("src");
    fs::create_dir_all(src.join("docs/inner")).unwrap();
    fs::create_dir_all(src.join("other")).unwrap();
    fs::write(src.join("docs/a.txt"), "a").unwrap();
    fs::write(src.join("docs/inner/b.txt"), "b").unwrap();
    fs::write(src.join("other/c.txt"), "c").unwrap();
    // Backed up by a relative path, from the temp dir.
    let out = env
        .cmd()
        .current_dir(&base)
        .args(["backup", "src"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let abs_docs = src.join("docs");
    let abs = abs_docs.to_str().unwrap();
    let from_root = abs.trim_start_matches('/').to_string();
    let elsewhere = base.join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let want: Vec<String> = ["a.txt", "inner/b.txt"]
        .iter()
        .map(|f| format!("{}/{f}", abs.trim_start_matches('/')))
        .collect();
    let cases: Vec<(&str, &Path, String)> = vec![
        ("absolute", &elsewhere, abs.to_string()),
        ("relative to the cwd", &base, "src/docs".into()),
        ("relative, inside the source", &src, "docs".into()),
        ("with . and ..", &base, "./src/other/../docs/".into()),
        (
            "relative to the snapshot root",
            &elsewhere,
            from_root.clone(),
        ),
        ("from the root directory", Path::new("/"), from_root.clone()),
    ];
    for (i, (what, cwd, path)) in cases.iter().enumerate() {
        let target = base.join(format!("restore-{i}"));
        let out = env
            .cmd()
            .current_dir(cwd)
            .args(["restore", "latest", "--target"])
            .arg(&target)
            .args(["--include", path])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{what}: {}", stderr(&out));
        assert_eq!(restored_files(&target), want, "{what}");
        let out = env
            .cmd()
            .current_dir(cwd)
            .args(["ls", "latest", path])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{what}: {}", stderr(&out));
        let listed: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
        let expected = [
            abs.to_string(),
            format!("{abs}/a.txt"),
            format!("{abs}/inner"),
            format!("{abs}/inner/b.txt"),
        ];
        assert_eq!(listed, expected, "{what}");
    }
    // A relative path that names nothing says where it looked, and restores nothing.
    let target = base.join("restore-none");
    let out = env
        .cmd()
        .current_dir(&elsewhere)
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .args(["--include", "docs"])
        .output()
        .unwrap();
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(
        e.contains(&format!("{}/docs", elsewhere.display())) && e.contains("/docs)"),
        "{e}"
    );
    assert!(!target.exists());
}

/// When the path from the current directory and the path from the root
/// name different things, holdfast asks instead of guessing.
#[test]
fn an_ambiguous_relative_path_is_refused() {
    let env = Env::new();
    env.init();
    let base = env.dir.path().to_path_buf();
    let rel = base.to_str().unwrap().trim_start_matches('/').to_string();
    // Both /BASE/x and /BASE/BASE/x are in the snapshot.
    fs::create_dir_all(base.join("tree/x")).unwrap();
    fs::create_dir_all(base.join(&rel).join("tree/x")).unwrap();
    fs::write(base.join("tree/x/f"), "1").unwrap();
    fs::write(base.join(&rel).join("tree/x/f"), "2").unwrap();
    let out = env
        .cmd()
        .current_dir(&base)
        .args(["backup", "tree", &rel])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let given = format!("{rel}/tree/x");
    for args in [
        vec!["ls", "latest", &given],
        vec!["restore", "latest", "--target", "t", "--include", &given],
    ] {
        let out = env.cmd().current_dir(&base).args(&args).output().unwrap();
        let e = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {e}");
        assert!(
            e.contains("ambiguous") && e.contains("absolute path"),
            "{e}"
        );
    }
}

#[test]
fn check_read_data_subset_takes_percentages_and_parts() {
    let env = Env::new();
    env.init();
    // Several backups of fresh data: several packs.
    for i in 0..6 {
        let d = env.path(&format!("src{i}"));
        fs::create_dir(&d).unwrap();
        fs::write(d.join("f"), noise(300_000, i)).unwrap();
        env.ok(["backup".as_ref(), d.as_os_str()]);
    }
    let all = env.json(["check", "--read-data"]);
    let packs = all["report"]["packs"].as_u64().unwrap();
    assert!(packs >= 6, "{all}");
    assert_eq!(all["report"]["packs_read"].as_u64(), Some(packs));
    for spec in ["100%", "100", "50%", "10", "0.5%", "33.3 %"] {
        let v = env.json(["check", "--read-data-subset", spec]);
        assert_eq!(v["ok"], true, "{spec}: {v}");
        assert!(
            v["report"]["packs_read"].as_u64().unwrap() >= 1,
            "{spec}: {v}"
        );
    }
    for m in [1u64, 2, 3, 5] {
        let mut sum = 0;
        for n in 1..=m {
            let spec = format!("{n}/{m}");
            let a = env.json(["check", "--read-data-subset", &spec]);
            let b = env.json(["check", "--read-data-subset", &spec]);
            assert_eq!(a["ok"], true, "{spec}: {a}");
            // Deterministic: the same part reads the same packs.
            assert_eq!(
                a["report"]["packs_read"], b["report"]["packs_read"],
                "{spec}"
            );
            sum += a["report"]["packs_read"].as_u64().unwrap();
        }
        assert_eq!(sum, packs, "the parts of {m} cover every pack once");
    }
    for bad in ["0", "0%", "101%", "abc", "0/3", "4/3", "1/0", "x/2"] {
        let out = env.run(["check", "--read-data-subset", bad]);
        let e = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{bad}: {e}");
        assert!(
            e.contains("--read-data-subset") && e.contains(bad),
            "{bad}: {e}"
        );
    }
}

/// `-q` leaves nothing informational on any command: commands that make or
/// change things print nothing, listings print only their entries.
#[test]
fn quiet_silences_everything_informational() {
    let env = Env::new();
    let quiet_ok = |args: &[&OsStr]| {
        let mut a: Vec<&OsStr> = vec!["-q".as_ref()];
        a.extend_from_slice(args);
        env.ok(a)
    };
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a"), "a").unwrap();
    let pw = env.path("pw2");
    fs::write(&pw, "second password").unwrap();
    // A readable password file earns a warning, which -q keeps.
    fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let target = env.path("t");
    let silent: Vec<Vec<&OsStr>> = vec![
        vec![
            "init".as_ref(),
            "--kdf-memory-mib".as_ref(),
            "8".as_ref(),
            "--kdf-iterations".as_ref(),
            "1".as_ref(),
        ],
        vec!["backup".as_ref(), src.as_os_str()],
        vec!["backup".as_ref(), src.as_os_str()],
        vec![
            "restore".as_ref(),
            "latest".as_ref(),
            "--target".as_ref(),
            target.as_os_str(),
        ],
        vec!["check".as_ref(), "--read-data".as_ref()],
        vec!["repair".as_ref(), "index".as_ref()],
        vec![
            "key".as_ref(),
            "add".as_ref(),
            "--new-password-file".as_ref(),
            pw.as_os_str(),
            "--kdf-memory-mib".as_ref(),
            "8".as_ref(),
            "--kdf-iterations".as_ref(),
            "1".as_ref(),
        ],
    ];
    for args in &silent {
        let out = quiet_ok(args);
        assert!(
            out.stdout.is_empty() && out.stderr.is_empty(),
            "-q {args:?} printed:\n{}{}",
            stdout(&out),
            stderr(&out)
        );
    }
    // Listings: only entries.
    let snaps = quiet_ok(&["snapshots".as_ref()]);
    let s = stdout(&snaps);
    assert!(!s.contains("snapshot(s)"), "{s}");
    assert_eq!(s.lines().count(), 3, "header and two snapshots: {s}");
    assert!(snaps.stderr.is_empty(), "{}", stderr(&snaps));
    let ids = snapshot_ids(&env);
    let d = quiet_ok(&["diff".as_ref(), ids[0].as_ref(), ids[1].as_ref()]);
    // Only change lines (the parents of src, in /tmp, may change): no summary.
    let ds = stdout(&d);
    assert!(!ds.contains(" added, "), "{ds}");
    assert!(
        ds.lines().all(|l| l.starts_with(['+', '-', 'M', 'U', 'T'])),
        "{ds}"
    );
    assert!(d.stderr.is_empty(), "{}", stderr(&d));
    let ls = quiet_ok(&["ls".as_ref(), "latest".as_ref()]);
    assert!(
        stdout(&ls).lines().all(|l| l.starts_with('/')),
        "{}",
        stdout(&ls)
    );
}

/// Names as a person reads them: one line per entry, control characters
/// escaped, symlink targets shown; JSON keeps the exact bytes.
#[test]
fn ls_shows_link_targets_and_escapes_names() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    let names: [&[u8]; 7] = [
        b"plain.txt",
        b"new\nline",
        b"tab\there",
        b"esc\x1b[31mred",
        b"back\\slash",
        b"not-utf8-\xff",
        "bidi-\u{202e}txt.exe".as_bytes(),
    ];
    for n in &names {
        fs::write(src.join(OsStr::from_bytes(n)), "x").unwrap();
    }
    std::os::unix::fs::symlink("plain.txt", src.join("link")).unwrap();
    std::os::unix::fs::symlink(OsStr::from_bytes(b"new\nline"), src.join("link2")).unwrap();
    env.ok(["backup".as_ref(), src.as_os_str()]);
    let base = src.display().to_string();
    for long in [false, true] {
        let mut args = vec!["ls", "latest"];
        if long {
            args.push("-l");
        }
        let out = stdout(&env.ok(&args));
        // The parents of src and src itself (`depth`), its entries and two
        // links: one line each.
        let depth = src.components().count() - 1;
        assert_eq!(out.lines().count(), depth + names.len() + 2, "{out}");
        for expected in [
            format!("{base}/new\\nline"),
            format!("{base}/tab\\there"),
            format!("{base}/esc\\x1b[31mred"),
            format!("{base}/back\\\\slash"),
            format!("{base}/not-utf8-\\xff"),
            format!("{base}/bidi-\\u{{202e}}txt.exe"),
            format!("{base}/link -> plain.txt"),
            format!("{base}/link2 -> new\\nline"),
        ] {
            assert!(
                out.lines().any(|l| l.ends_with(&expected)),
                "{expected:?} in\n{out}"
            );
        }
        assert!(!out.contains('\x1b') && !out.contains('\t') && !out.contains('\u{202e}'));
    }
    let v = env.json(["ls", "latest"]);
    let entries = v.as_array().unwrap();
    let find = |key: &str, want: &str| {
        entries
            .iter()
            .find(|e| e[key].as_str() == Some(want))
            .unwrap_or_else(|| panic!("{key}={want:?} in {v}"))
            .clone()
    };
    find("path", &format!("{base}/new\nline"));
    find("path", &format!("{base}/esc\x1b[31mred"));
    let link = find("path", &format!("{base}/link2"));
    assert_eq!(link["target"], "new\nline");
    assert_eq!(link["type"], "symlink");
    let mut hex_path = base.clone().into_bytes();
    hex_path.extend_from_slice(b"/not-utf8-\xff");
    let hex: String = hex_path.iter().map(|b| format!("{b:02x}")).collect();
    let bad = find("path_hex", &hex);
    assert!(bad.get("path").is_none(), "{bad}");
}

/// Owners by name: recorded at backup, else this host's passwd/group, else
/// the number; key slots recorded as `uid N` show the name as well.
#[test]
fn owners_are_shown_by_name() {
    if !is_root() {
        eprintln!("skipped: needs root to chown");
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    for (name, uid, gid) in [
        ("daemon-file", 1u32, 1u32),
        ("bin-file", 2, 2),
        ("nobody-knows", 54321, 54321),
    ] {
        let p = src.join(name);
        fs::write(&p, "x").unwrap();
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
    }
    env.ok(["backup".as_ref(), src.as_os_str()]);
    let out = stdout(&env.ok(["ls", "-l", "latest", src.to_str().unwrap()]));
    let line = |n: &str| {
        out.lines()
            .find(|l| l.ends_with(n))
            .unwrap_or_else(|| panic!("{n} in {out}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(line("daemon-file")[1..3], ["daemon", "daemon"]);
    assert_eq!(line("bin-file")[1..3], ["bin", "bin"]);
    assert_eq!(line("nobody-knows")[1..3], ["54321", "54321"]);
    assert_eq!(line("/src")[1..3], ["root", "root"]);

    // A key slot written without $USER (cron, runuser) records the name.
    let pw = env.path("pw2");
    fs::write(&pw, "second password").unwrap();
    let added = env
        .cmd()
        .env_remove("USER")
        .env_remove("LOGNAME")
        .args(["key", "add", "--new-password-file"])
        .arg(&pw)
        .args(["--kdf-memory-mib", "8", "--kdf-iterations", "1"])
        .output()
        .unwrap();
    assert_eq!(added.status.code(), Some(0), "{}", stderr(&added));
    // An old slot that recorded `uid 0` shows the name too.
    let keys = env.repo.join("keys");
    let slot = fs::read_dir(&keys).unwrap().next().unwrap().unwrap().path();
    let text = fs::read_to_string(&slot).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["username"] = "uid 0".into();
    // Named by the hash of its bytes, as its writer would have named it (a
    // slot edited in place no longer matches its name and is refused).
    let bytes = serde_json::to_vec_pretty(&v).unwrap();
    fs::remove_file(&slot).unwrap();
    fs::write(
        keys.join(holdfast_repo::Id::of_stored(&bytes).to_hex()),
        bytes,
    )
    .unwrap();
    let list = stdout(&env.ok(["key", "list"]));
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(list.lines().all(|l| l.contains(" root@")), "{list}");
    assert!(!list.contains("uid "), "{list}");
    let json = env.json(["key", "list"]);
    assert!(
        json.as_array()
            .unwrap()
            .iter()
            .all(|k| k["username"] == "root"),
        "{json}"
    );
    let snaps = env.json(["snapshots"]);
    assert!(
        snaps
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["username"] == "root"),
        "{snaps}"
    );
}

/// The exit codes `holdfast --help` lists are the ones the binary uses.
#[test]
fn help_lists_the_exit_codes() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = stdout(&out);
    for code in [
        "0 ok",
        "1 error",
        "2 usage",
        "3 backup",
        "4 integrity",
        "9 wal-fetch",
        "10 not a repository",
        "12 wrong password",
        "13 repository format newer",
        "130, 143 backup interrupted",
    ] {
        assert!(help.contains(code), "{code:?} in {help}");
    }
}
