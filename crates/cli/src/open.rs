//! Turning global options into an open repository: backend from the
//! repository URL, password from file, environment or prompt.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use holdfast_repo::Repository;
use holdfast_s3::{S3Backend, S3Config};
use holdfast_storage::local::LocalBackend;
use holdfast_storage::Backend;
use tokio::runtime::Runtime;

use crate::args::Global;

/// The process-wide runtime for storage I/O. Two workers: the heavy lifting
/// happens on the repository's own threads; the runtime mostly waits on I/O.
pub fn runtime() -> Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("holdfast-io")
        .build()
        .context("starting the I/O runtime")
}

pub fn backend(g: &Global, rt: &Runtime) -> Result<Arc<dyn Backend>> {
    backend_with(g, rt, false)
}

/// The backend for the repository URL; `object_lock` asks an S3 backend to
/// insist on a bucket with Object Lock (for `init --lock-mode`).
pub fn backend_with(g: &Global, rt: &Runtime, object_lock: bool) -> Result<Arc<dyn Backend>> {
    let Some(url) = g.repo.as_deref() else {
        bail!("no repository given: pass --repo PATH or set HOLDFAST_REPOSITORY");
    };
    if url.starts_with("s3://") {
        let mut cfg = S3Config::from_url(url)?;
        if let Some(e) = &g.s3_endpoint {
            cfg.endpoint = Some(e.clone());
        }
        if let Some(r) = &g.s3_region {
            cfg.region = r.clone();
        }
        cfg.path_style |= g.s3_path_style;
        cfg.allow_http |= g.s3_allow_http;
        cfg.require_object_lock |= object_lock;
        let b = rt.block_on(S3Backend::connect(cfg))?;
        if object_lock {
            rt.block_on(b.check_lock_ready())?;
        }
        return Ok(Arc::new(b));
    }
    if object_lock {
        bail!("{url}: Object Lock needs an object store that supports it (an s3:// repository)");
    }
    let path = url.strip_prefix("file://").unwrap_or(url);
    Ok(Arc::new(LocalBackend::new(Path::new(path))))
}

/// The password: --password-file / HOLDFAST_PASSWORD_FILE, then
/// HOLDFAST_PASSWORD, then a prompt if stdin is a terminal.
pub fn password(g: &Global, prompt: &str) -> Result<Vec<u8>> {
    if let Some(f) = &g.password_file {
        let s =
            std::fs::read(f).with_context(|| format!("reading password file {}", f.display()))?;
        return Ok(trim_newline(s));
    }
    if let Ok(p) = std::env::var("HOLDFAST_PASSWORD") {
        return Ok(p.into_bytes());
    }
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        let p = rpassword::prompt_password(prompt).context("reading the password")?;
        return Ok(p.into_bytes());
    }
    bail!("no password: set HOLDFAST_PASSWORD or HOLDFAST_PASSWORD_FILE, or run on a terminal to be prompted")
}

pub fn read_password_file(f: &Path) -> Result<Vec<u8>> {
    let s = std::fs::read(f).with_context(|| format!("reading password file {}", f.display()))?;
    Ok(trim_newline(s))
}

fn trim_newline(mut s: Vec<u8>) -> Vec<u8> {
    while s.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
        s.pop();
    }
    s
}

/// Open the repository named by the global options.
pub fn open(g: &Global, rt: &Runtime) -> Result<Arc<Repository>> {
    let b = backend(g, rt)?;
    // Check it is a repository of a readable version before asking for a password.
    Repository::probe(b.as_ref(), rt.handle())?;
    let pw = password(g, "repository password: ")?;
    let repo = Repository::open(b, rt.handle().clone(), &pw)?;
    Ok(Arc::new(repo))
}
