//! The `holdfast` binary against a real S3 server (moto on 127.0.0.1), for
//! the S3 tests of the CLI: the server harness of `crates/s3/tests`, a
//! runtime for its own calls, and the command with the environment that
//! points holdfast at the server. A test file declares `mod common;` and
//! `mod s3cli;`.

#![allow(dead_code)]

#[path = "../../../s3/tests/harness/mod.rs"]
pub mod harness;

use std::process::{Command, Output};

use crate::common::{stderr, BIN, PASSWORD};
pub use harness::Moto;

/// A runtime for the harness's own S3 calls (bucket setup, direct reads).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `holdfast` with the repository at `url` on `moto`.
pub fn hf(moto: &Moto, url: &str) -> Command {
    let mut c = Command::new(BIN);
    c.env("HOLDFAST_REPOSITORY", url)
        .env("HOLDFAST_PASSWORD", PASSWORD)
        .env("HOLDFAST_S3_ENDPOINT", moto.endpoint())
        .env("HOLDFAST_S3_PATH_STYLE", "true")
        .env("HOLDFAST_S3_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env_remove("HOLDFAST_PASSWORD_FILE")
        .stdin(std::process::Stdio::null());
    c
}

/// [`hf`] without the local cache, so every read goes to the server.
pub fn hf_uncached(moto: &Moto, url: &str) -> Command {
    let mut c = hf(moto, url);
    c.env_remove("HOLDFAST_CACHE_DIR").arg("--no-cache");
    c
}

/// Run `c` with `args`; it must exit 0.
pub fn ok(mut c: Command, args: &[&str]) -> Output {
    let out = c.args(args).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "holdfast {args:?}: {}",
        stderr(&out)
    );
    out
}
