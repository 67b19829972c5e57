//! Electronic signatures through the real binary: key pairs from
//! `signer keygen`, OpenSSL and OpenSSH; registering signers (write-once,
//! one key one signer); signed hold releases that `audit verify` checks,
//! and the refusals: a key nobody registered, a key others can read, an
//! unsigned release where the policy requires a signature.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use serde_json::Value;

struct Repo {
    env: Env,
}

impl Repo {
    fn new() -> Repo {
        let r = Repo { env: Env::new() };
        r.cmd_ok(&["init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"]);
        r
    }

    fn cmd(&self) -> Command {
        let mut c = self.env.cmd();
        c.env("HOLDFAST_CACHE_DIR", self.env.path("cache"))
            .env_remove("HOLDFAST_ACTOR");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    fn cmd_ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "holdfast {args:?}\nstdout: {}\nstderr: {}",
            stdout(&out),
            stderr(&out)
        );
        out
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_slice(&self.cmd_ok(&a).stdout).unwrap()
    }

    fn keygen(&self, name: &str) -> (PathBuf, PathBuf) {
        let private = self.env.path(name);
        self.cmd_ok(&["signer", "keygen", "--out", private.to_str().unwrap()]);
        let public = self.env.path(&format!("{name}.pub"));
        (private, public)
    }

    fn add(&self, name: &str, public: &Path, printed: &str) -> Output {
        self.run(&[
            "signer",
            "add",
            name,
            "--public-key",
            public.to_str().unwrap(),
            "--printed-name",
            printed,
        ])
    }
}

fn tool(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| {
        panic!("{cmd} is needed by this test (scripts/test.sh installs it): {e}")
    });
    assert!(out.status.success(), "{cmd} {args:?}: {}", stderr(&out));
}

#[test]
fn signers_are_registered_once_with_one_key_each() {
    let r = Repo::new();
    let (private, public) = r.keygen("jroe.key");
    let mode = fs::metadata(&private).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(fs::read_to_string(&private)
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(fs::read_to_string(&public)
        .unwrap()
        .starts_with("-----BEGIN PUBLIC KEY-----"));
    // Never over an existing file.
    let again = r.run(&["signer", "keygen", "--out", private.to_str().unwrap()]);
    assert_ne!(again.status.code(), Some(0));

    assert_eq!(
        r.add("jroe", &public, "Dr. Jane Roe").status.code(),
        Some(0)
    );
    let list = r.json(&["signer", "list"]);
    assert_eq!(list[0]["name"], "jroe");
    assert_eq!(list[0]["printed_name"], "Dr. Jane Roe");
    assert_eq!(list[0]["fingerprint"].as_str().unwrap().len(), 64);

    // The same name again, or the same key under another name: refused.
    let (_, other_public) = r.keygen("other.key");
    let dup_name = r.add("jroe", &other_public, "Someone Else");
    assert_ne!(dup_name.status.code(), Some(0));
    assert!(
        stderr(&dup_name).contains("already registered"),
        "{}",
        stderr(&dup_name)
    );
    let dup_key = r.add("jane", &public, "Dr. Jane Roe");
    assert_ne!(dup_key.status.code(), Some(0));
    assert!(
        stderr(&dup_key).contains("\"jroe\""),
        "{}",
        stderr(&dup_key)
    );
    // Bad names and bad key files name what is wrong.
    let bad_name = r.add("Jane Roe", &other_public, "x");
    assert!(
        stderr(&bad_name).contains("signer name"),
        "{}",
        stderr(&bad_name)
    );
    let bad_key = r.add("mallory", &private, "Mallory");
    assert!(
        stderr(&bad_key).contains(private.to_str().unwrap())
            && stderr(&bad_key).contains("public key"),
        "{}",
        stderr(&bad_key)
    );
    assert_eq!(r.json(&["signer", "list"]).as_array().unwrap().len(), 1);

    // The registration is on the audit trail; the refusals as failures.
    let log = r.json(&["audit", "log", "--operation", "signer"]);
    let outcomes: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes[0], "success");
    assert_eq!(log[0]["objects"][0]["id"], "jroe");
    assert!(
        outcomes[1..].iter().all(|o| *o == "failure"),
        "{outcomes:?}"
    );
    let verified = stdout(&r.cmd_ok(&["audit", "verify"]));
    assert!(verified.contains("intact"), "{verified}");
}

#[test]
fn openssl_and_openssh_public_keys_register() {
    let r = Repo::new();
    let pem = r.env.path("openssl.pem");
    let pub_pem = r.env.path("openssl.pub");
    tool(
        "openssl",
        &[
            "genpkey",
            "-algorithm",
            "ed25519",
            "-out",
            pem.to_str().unwrap(),
        ],
    );
    tool(
        "openssl",
        &[
            "pkey",
            "-in",
            pem.to_str().unwrap(),
            "-pubout",
            "-out",
            pub_pem.to_str().unwrap(),
        ],
    );
    assert_eq!(r.add("ossl", &pub_pem, "Open SSL").status.code(), Some(0));
    let ssh = r.env.path("id_ed25519");
    tool(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "jroe@clinic",
            "-f",
            ssh.to_str().unwrap(),
        ],
    );
    let ssh_pub = r.env.path("id_ed25519.pub");
    assert_eq!(r.add("ssh", &ssh_pub, "Open SSH").status.code(), Some(0));
    // An RSA key is not an ed25519 key.
    let rsa = r.env.path("id_rsa");
    tool(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "rsa",
            "-b",
            "2048",
            "-N",
            "",
            "-f",
            rsa.to_str().unwrap(),
        ],
    );
    let refused = r.add("rsa", &r.env.path("id_rsa.pub"), "RSA");
    assert_ne!(refused.status.code(), Some(0));
    assert!(stderr(&refused).contains("ed25519"), "{}", stderr(&refused));
    assert_eq!(r.json(&["signer", "list"]).as_array().unwrap().len(), 2);
}

/// A backup and a hold on it, for case 123; returns the hold's id.
fn held(r: &Repo) -> String {
    let src = r.env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("chart.txt"), text(10_000, 1)).unwrap();
    let snap = r.json(&["backup", src.to_str().unwrap()])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let placed = r.json(&[
        "hold",
        "place",
        "--snapshot",
        &snap,
        "--case",
        "123",
        "--reason",
        "litigation",
    ]);
    placed["id"].as_str().unwrap().to_string()
}

fn active(r: &Repo, id: &str) -> bool {
    r.json(&["hold", "list"])
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["id"] == id && h["active"] == true)
}

#[test]
fn a_signed_hold_release_shows_who_when_and_what_and_verifies() {
    let r = Repo::new();
    let (key, public) = r.keygen("jroe.key");
    assert_eq!(
        r.add("jroe", &public, "Dr. Jane Roe").status.code(),
        Some(0)
    );
    let id = held(&r);
    r.cmd_ok(&[
        "hold",
        "release",
        &id,
        "--reason",
        "case settled",
        "--sign-key",
        key.to_str().unwrap(),
    ]);
    assert!(!active(&r, &id));
    let log = r.json(&["audit", "log", "--operation", "hold"]);
    let ops: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["operation"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["hold place", "hold release"]);
    let e = &log[1];
    let meaning = format!("release of hold {id} for case 123");
    assert_eq!(e["signed"]["printed_name"], "Dr. Jane Roe");
    assert_eq!(e["signed"]["signer"], "jroe");
    assert_eq!(e["signed"]["meaning"], meaning.as_str());
    assert_eq!(e["signature"].as_str().unwrap().len(), 128);
    let text_log = stdout(&r.cmd_ok(&["audit", "log", "--operation", "hold release"]));
    // The signing time to the second (the text and JSON forms write the
    // offset differently).
    let when = &e["time"].as_str().unwrap()[..19];
    assert!(
        text_log.contains(&format!("signed by Dr. Jane Roe (jroe) at {when}"))
            && text_log.contains(&meaning),
        "{text_log}"
    );
    // The release record names the signer too.
    let shown = r.json(&["hold", "show", &id]);
    assert_eq!(shown["release"]["signature"]["signer"], "jroe", "{shown}");
    let verified = stdout(&r.cmd_ok(&["audit", "verify"]));
    assert!(verified.contains("1 signature(s) verified"), "{verified}");
    // The signed entry edited: named, exit 4.
    let seq = e["seq"].as_u64().unwrap();
    let p = r.env.repo.join("audit").join(format!("{seq:020}"));
    let mut b = fs::read(&p).unwrap();
    let n = b.len();
    b[n - 3] ^= 1;
    fs::write(&p, &b).unwrap();
    let broken = r.run(&["audit", "verify"]);
    assert_eq!(broken.status.code(), Some(4));
    assert!(
        stdout(&broken).contains(&format!("audit/{seq:020}")),
        "{}",
        stdout(&broken)
    );
}

#[test]
fn releases_without_a_valid_signature_are_refused_and_release_nothing() {
    let r = Repo::new();
    let (key, public) = r.keygen("jroe.key");
    assert_eq!(
        r.add("jroe", &public, "Dr. Jane Roe").status.code(),
        Some(0)
    );
    let id = held(&r);
    // A key nobody registered.
    let (stranger, _) = r.keygen("stranger.key");
    let out = r.run(&[
        "hold",
        "release",
        &id,
        "--reason",
        "x",
        "--sign-key",
        stranger.to_str().unwrap(),
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("not a registered signer"),
        "{}",
        stderr(&out)
    );
    assert!(active(&r, &id));
    // The right key, but others can read it.
    fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).unwrap();
    let out = r.run(&[
        "hold",
        "release",
        &id,
        "--reason",
        "x",
        "--sign-key",
        key.to_str().unwrap(),
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("readable by its group"),
        "{}",
        stderr(&out)
    );
    assert!(active(&r, &id));
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    // A policy that requires a signature: unsigned is refused, on the trail.
    let policy = r.env.path("holds.toml");
    fs::write(&policy, "[holds]\nrequire_signed_release = true\n").unwrap();
    let out = r.run(&[
        "hold",
        "release",
        &id,
        "--reason",
        "x",
        "--policy",
        policy.to_str().unwrap(),
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("requires a signed release"),
        "{}",
        stderr(&out)
    );
    assert!(active(&r, &id));
    let log = r.json(&["audit", "log", "--operation", "hold release"]);
    assert_eq!(
        log.as_array().unwrap().last().unwrap()["outcome"],
        "failure"
    );
    // Signed, it goes through.
    r.cmd_ok(&[
        "hold",
        "release",
        &id,
        "--reason",
        "settled",
        "--policy",
        policy.to_str().unwrap(),
        "--sign-key",
        key.to_str().unwrap(),
    ]);
    assert!(!active(&r, &id));
    assert!(stdout(&r.cmd_ok(&["audit", "verify"])).contains("1 signature(s) verified"));
}
