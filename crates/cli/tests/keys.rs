//! Key files, environment secrets, password input, damaged key slots and the
//! permissions of what a repository holds, through the real binary.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use common::*;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn chmod(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

/// Run with no password in the environment, only `extra` variables.
fn run_without_password(env: &Env, extra: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = env.cmd();
    c.env_remove("HOLDFAST_PASSWORD");
    for (k, v) in extra {
        c.env(k, v);
    }
    c.args(args).output().unwrap()
}

fn code(o: &Output) -> Option<i32> {
    o.status.code()
}

#[test]
fn key_files_and_environment_secrets_open_without_a_password() {
    let env = Env::new();
    env.init();
    let kf = env.path("wal.key");
    let out = env.ok(["key", "add", "--new-key-file", kf.to_str().unwrap()]);
    assert!(
        stderr(&out).contains("created key file"),
        "{}",
        stderr(&out)
    );
    assert_eq!(mode(&kf), 0o600, "a new key file is private");
    let text = std::fs::read_to_string(&kf).unwrap();
    assert_eq!(text.len(), 65, "64 hex digits and a newline: {text:?}");
    assert!(text[..64].bytes().all(|b| b.is_ascii_hexdigit()));

    // The flag, the environment variable and the environment secret.
    let k = kf.to_str().unwrap();
    for (extra, args) in [
        (vec![], vec!["--key-file", k, "snapshots"]),
        (vec![("HOLDFAST_KEY_FILE", k)], vec!["snapshots"]),
        (vec![("HOLDFAST_KEY", text.trim_end())], vec!["snapshots"]),
    ] {
        let o = run_without_password(&env, &extra, &args);
        assert_eq!(code(&o), Some(0), "{extra:?} {args:?}: {}", stderr(&o));
    }

    // A key file with CRLF (copied through a Windows editor) still opens.
    let crlf = env.path("crlf.key");
    std::fs::write(&crlf, text.replace('\n', "\r\n")).unwrap();
    chmod(&crlf, 0o600);
    let o = run_without_password(
        &env,
        &[],
        &["--key-file", crlf.to_str().unwrap(), "snapshots"],
    );
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));

    // Shorthand from the issue: `key add --key-file FILE` with a new FILE
    // creates it (opening with the password).
    let kf2 = env.path("second.key");
    env.ok(["key", "add", "--key-file", kf2.to_str().unwrap()]);
    assert_eq!(mode(&kf2), 0o600);
    let o = run_without_password(
        &env,
        &[],
        &["--key-file", kf2.to_str().unwrap(), "snapshots"],
    );
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));

    // An existing key file registered in a second repository opens both.
    let other = Env::new();
    other.init();
    other.ok(["key", "add", "--new-key-file", k]);
    assert_eq!(
        std::fs::read_to_string(&kf).unwrap(),
        text,
        "existing key kept"
    );
    let o = run_without_password(&other, &[], &["--key-file", k, "snapshots"]);
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));

    let keys = env.json(["key", "list"]);
    let kinds: Vec<&str> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kdf"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "blake3-keyfile").count(),
        2,
        "{keys}"
    );

    // A key of another repository is a wrong key (exit 12), named as such.
    let o = run_without_password(
        &other,
        &[],
        &["--key-file", kf2.to_str().unwrap(), "snapshots"],
    );
    assert_eq!(code(&o), Some(12), "{}", stderr(&o));
    assert!(stderr(&o).contains("wrong key file"), "{}", stderr(&o));

    // Not a key at all: the error names the file.
    let junk = env.path("junk.key");
    std::fs::write(&junk, "hunter2\n").unwrap();
    chmod(&junk, 0o600);
    let o = run_without_password(
        &env,
        &[],
        &["--key-file", junk.to_str().unwrap(), "snapshots"],
    );
    assert_eq!(code(&o), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(junk.to_str().unwrap()),
        "{}",
        stderr(&o)
    );
    let o = run_without_password(&env, &[("HOLDFAST_KEY", "abc")], &["snapshots"]);
    assert!(stderr(&o).contains("HOLDFAST_KEY"), "{}", stderr(&o));
}

#[test]
fn exposed_secret_files_are_warned_about() {
    let env = Env::new();
    env.init();
    let pw = env.path("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let kf = env.path("k");
    env.ok(["key", "add", "--new-key-file", kf.to_str().unwrap()]);
    for (file, flag) in [(&pw, "--password-file"), (&kf, "--key-file")] {
        for (m, warned) in [
            (0o600, false),
            (0o400, false),
            (0o640, true),
            (0o604, true),
            (0o644, true),
        ] {
            chmod(file, m);
            let o = run_without_password(&env, &[], &[flag, file.to_str().unwrap(), "snapshots"]);
            assert_eq!(code(&o), Some(0), "{}", stderr(&o));
            let said = stderr(&o).contains("is readable by");
            assert_eq!(said, warned, "{flag} mode {m:o}: {}", stderr(&o));
            if warned {
                assert!(
                    stderr(&o).contains(file.to_str().unwrap()),
                    "{}",
                    stderr(&o)
                );
            }
        }
    }
}

#[test]
fn password_files_lose_exactly_one_line_end() {
    let env = Env::new();
    env.init();
    let pw = env.path("pw");
    for (content, opens) in [
        (PASSWORD.to_string(), true),
        (format!("{PASSWORD}\n"), true),
        (format!("{PASSWORD}\r\n"), true),
        (format!("{PASSWORD}\n\n"), false),
        (format!("{PASSWORD} \n"), false),
    ] {
        std::fs::write(&pw, &content).unwrap();
        chmod(&pw, 0o600);
        let o = run_without_password(
            &env,
            &[],
            &["--password-file", pw.to_str().unwrap(), "snapshots"],
        );
        let want = if opens { Some(0) } else { Some(12) };
        assert_eq!(code(&o), want, "{content:?}: {}", stderr(&o));
    }
}

#[test]
fn empty_environment_variables_are_unset() {
    let env = Env::new();
    env.init();
    // Every option backed by the environment, set to an empty string, must
    // behave as if unset (here: the password comes from HOLDFAST_PASSWORD).
    for var in [
        "HOLDFAST_PASSWORD_FILE",
        "HOLDFAST_KEY_FILE",
        "HOLDFAST_KEY",
        "HOLDFAST_S3_ENDPOINT",
        "HOLDFAST_NEW_PASSWORD_FILE",
        "HOLDFAST_WAL_PREFETCH",
    ] {
        let o = env.cmd().env(var, "").arg("snapshots").output().unwrap();
        assert_eq!(code(&o), Some(0), "{var}=: {}", stderr(&o));
        assert!(!stderr(&o).contains("value is required"), "{}", stderr(&o));
    }
    // An empty repository variable is "no repository", said plainly.
    let o = env
        .cmd()
        .env("HOLDFAST_REPOSITORY", "")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(code(&o), Some(1));
    assert!(stderr(&o).contains("no repository given"), "{}", stderr(&o));
    // Usage lines do not present options set in the environment as required
    // (clap lists the options it was given in the usage of its errors).
    for args in [
        vec!["restore"],
        vec!["snapshots", "--no-such-flag"],
        vec!["wal-fetch", "only-one-arg"],
        vec!["key", "add", "--no-such-flag"],
    ] {
        let o = env
            .cmd()
            .env("HOLDFAST_PASSWORD_FILE", env.path("pw"))
            .env("HOLDFAST_KEY_FILE", env.path("k"))
            .env("HOLDFAST_NEW_PASSWORD_FILE", env.path("npw"))
            .env("HOLDFAST_WAL_PREFETCH", "4")
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(code(&o), Some(2), "{args:?}");
        let usage = stderr(&o);
        let line = usage.lines().find(|l| l.starts_with("Usage:")).unwrap();
        for opt in [
            "--password-file",
            "--key-file",
            "--repo",
            "--new-password-file",
            "--prefetch",
        ] {
            assert!(!line.contains(opt), "{args:?}: {usage}");
        }
    }
    // Help still says which variables back which options.
    let o = env.cmd().args(["wal-fetch", "--help"]).output().unwrap();
    assert!(
        stdout(&o).contains("HOLDFAST_WAL_PREFETCH"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn damaged_key_slots_are_named_not_called_a_wrong_password() {
    let env = Env::new();
    env.init();
    let kf = env.path("k");
    env.ok(["key", "add", "--new-key-file", kf.to_str().unwrap()]);
    let keys = env.json(["key", "list"]);
    let slot_of = |kdf: &str| {
        keys.as_array()
            .unwrap()
            .iter()
            .find(|k| k["kdf"] == kdf)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (pw_slot, kf_slot) = (slot_of("argon2id"), slot_of("blake3-keyfile"));

    // Truncate the key-file slot: the password still opens; the key file
    // gets a message naming the damaged slot, exit 4 (integrity).
    let kpath = env.repo.join("keys").join(&kf_slot);
    let bytes = std::fs::read(&kpath).unwrap();
    std::fs::write(&kpath, &bytes[..bytes.len() / 2]).unwrap();
    env.ok(["snapshots"]);
    let o = run_without_password(
        &env,
        &[],
        &["--key-file", kf.to_str().unwrap(), "snapshots"],
    );
    assert_eq!(code(&o), Some(4), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("keys/{kf_slot}")) && e.contains("damaged"),
        "{e}"
    );
    assert!(!e.contains("wrong"), "{e}");

    // A flipped byte inside the wrapped key (still valid JSON) too.
    let mut flipped = bytes.clone();
    let pos = String::from_utf8_lossy(&bytes)
        .find("\"wrapped\": \"")
        .unwrap()
        + 12;
    flipped[pos] = if flipped[pos] == b'0' { b'1' } else { b'0' };
    std::fs::write(&kpath, &flipped).unwrap();
    let o = run_without_password(
        &env,
        &[],
        &["--key-file", kf.to_str().unwrap(), "snapshots"],
    );
    assert_eq!(code(&o), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains(&kf_slot), "{}", stderr(&o));

    // `key list` still lists the others and names the damaged one.
    std::fs::write(&kpath, &bytes[..bytes.len() / 2]).unwrap();
    let listed = env.ok(["key", "list"]);
    assert!(
        stdout(&listed).contains(&pw_slot[..8]),
        "{}",
        stdout(&listed)
    );
    assert!(
        stderr(&listed).contains(&kf_slot) && stderr(&listed).contains("damaged"),
        "{}",
        stderr(&listed)
    );
    let json = env.json(["key", "list"]);
    assert_eq!(json.as_array().unwrap().len(), 1, "{json}");

    // The damaged slot can be removed with the password.
    env.ok(["key", "remove", &kf_slot[..12]]);

    // The only password slot truncated: damaged, not "wrong password".
    let ppath = env.repo.join("keys").join(&pw_slot);
    let bytes = std::fs::read(&ppath).unwrap();
    std::fs::write(&ppath, &bytes[..100]).unwrap();
    let o = env.run(["snapshots"]);
    assert_eq!(code(&o), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("keys/{pw_slot}")),
        "{}",
        stderr(&o)
    );

    // Intact slots and a wrong password: exit 12, as before.
    std::fs::write(&ppath, &bytes).unwrap();
    let o = env
        .cmd()
        .env("HOLDFAST_PASSWORD", "nope")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(code(&o), Some(12), "{}", stderr(&o));
    assert!(stderr(&o).contains("wrong password"), "{}", stderr(&o));
}

#[test]
fn repository_files_are_private() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a"), text(100_000, 1)).unwrap();
    env.ok(["backup", src.to_str().unwrap()]);
    env.ok([
        "key",
        "add",
        "--new-key-file",
        env.path("k").to_str().unwrap(),
    ]);
    let mut seen = 0;
    let mut stack = vec![env.repo.clone()];
    assert_eq!(mode(&env.repo), 0o700, "repository directory");
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let want = if p.is_dir() {
                stack.push(p.clone());
                0o700
            } else {
                0o600
            };
            assert_eq!(mode(&p), want, "{}", p.display());
            seen += 1;
        }
    }
    assert!(seen > 10, "keys, config, index, snapshot, packs: {seen}");
}
