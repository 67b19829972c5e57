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
