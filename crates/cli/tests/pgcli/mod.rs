//! The `holdfast` binary with a repository of its own, for the CLI tests
//! that run against real PostgreSQL clusters (the cluster helpers are
//! `crates/postgres/tests/common`). A test file declares
//! `#[path = "../../postgres/tests/common/mod.rs"] mod common;` and
//! `mod pgcli;`.

#![allow(dead_code)]

use std::process::{Command, Output};

use serde_json::Value;

use crate::common::{self, Cluster, PASSWORD};

/// A repository (cheap KDF) in a shared temporary directory, and the
/// binary pointed at it.
pub struct Cli {
    pub dir: tempfile::TempDir,
    actor: Option<&'static str>,
}

impl Cli {
    pub fn new() -> Cli {
        Cli::acting_as(None)
    }

    /// With `HOLDFAST_ACTOR` set, as the audit trail names the operator.
    pub fn acting_as(actor: Option<&'static str>) -> Cli {
        let dir = common::shared_tempdir();
        std::fs::write(dir.path().join("pw"), "cli repo password").unwrap();
        common::shared_repo_dir(&dir.path().join("repo"));
        let c = Cli { dir, actor };
        let out = c.run(&["init", "--kdf-memory-mib", "1", "--kdf-iterations", "1"]);
        assert!(out.status.success(), "init: {out:?}");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_holdfast"));
        c.env("HOLDFAST_REPOSITORY", self.dir.path().join("repo"))
            .env("HOLDFAST_PASSWORD_FILE", self.dir.path().join("pw"))
            .env("HOLDFAST_PG_BINDIR", common::BIN);
        if let Some(a) = self.actor {
            c.env("HOLDFAST_ACTOR", a);
        }
        c.args(args).output().expect("run holdfast")
    }

    /// `--json` output of a command that must succeed.
    pub fn json(&self, args: &[&str], what: &str) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&ok(&self.run(&all), what)).expect("json output")
    }
}

/// stdout of a command that must have succeeded (`what` names it).
pub fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn err(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A TCP connection string for database `db` of `pg`.
pub fn dsn(pg: &Cluster, db: &str) -> String {
    format!(
        "postgresql://postgres:{PASSWORD}@127.0.0.1:{}/{db}",
        pg.port
    )
}
