//! Turning global options into an open repository: backend from the
//! repository URL, key file or password from file, environment or prompt.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use holdfast_repo::keys::{decode_key_file, strip_line_end, Secret, KEY_FILE_LEN};
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
        let mut cfg = S3Config::from_url(url, |n| std::env::var(n).ok())?;
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

/// What opens the repository: a password, or the key of a key file.
pub enum Credential {
    Password(Vec<u8>),
    Key([u8; KEY_FILE_LEN]),
}

impl Credential {
    pub fn secret(&self) -> Secret<'_> {
        match self {
            Credential::Password(p) => Secret::Password(p),
            Credential::Key(k) => Secret::KeyFile(k),
        }
    }
}

/// The environment secret: the content of a key file (64 hex digits).
const KEY_ENV: &str = "HOLDFAST_KEY";

/// What opens the repository, in this order: --key-file / HOLDFAST_KEY_FILE,
/// HOLDFAST_KEY, --password-file / HOLDFAST_PASSWORD_FILE, HOLDFAST_PASSWORD,
/// a prompt if stdin is a terminal. Key files come first: they cost no
/// password hashing.
pub fn credential(g: &Global, prompt: &str) -> Result<Credential> {
    if let Some(f) = &g.key_file {
        return Ok(Credential::Key(read_key_file(f)?));
    }
    if let Some(v) = env_nonempty(KEY_ENV) {
        let key = decode_key_file(v.as_bytes(), KEY_ENV).map_err(anyhow::Error::from)?;
        return Ok(Credential::Key(key));
    }
    Ok(Credential::Password(password(g, prompt)?))
}

/// An environment variable, with an empty value read as unset.
pub fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The password: --password-file / HOLDFAST_PASSWORD_FILE, then
/// HOLDFAST_PASSWORD, then a prompt if stdin is a terminal.
pub fn password(g: &Global, prompt: &str) -> Result<Vec<u8>> {
    if let Some(f) = &g.password_file {
        return read_password_file(f);
    }
    if let Some(p) = env_nonempty("HOLDFAST_PASSWORD") {
        return Ok(p.into_bytes());
    }
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        let p = rpassword::prompt_password(prompt).context("reading the password")?;
        return Ok(p.into_bytes());
    }
    bail!("no password: set HOLDFAST_PASSWORD or HOLDFAST_PASSWORD_FILE, pass --key-file, or run on a terminal to be prompted")
}

/// A password file's content without one trailing LF or CRLF.
pub fn read_password_file(f: &Path) -> Result<Vec<u8>> {
    let s = std::fs::read(f).with_context(|| format!("reading password file {}", f.display()))?;
    warn_if_exposed(f, "password file");
    Ok(strip_line_end(&s).to_vec())
}

/// The key of a key file.
pub fn read_key_file(f: &Path) -> Result<[u8; KEY_FILE_LEN]> {
    let s = std::fs::read(f).with_context(|| format!("reading key file {}", f.display()))?;
    warn_if_exposed(f, "key file");
    Ok(decode_key_file(&s, &format!("key file {}", f.display()))?)
}

/// Warn (not fail: it may be deliberate, e.g. a group of operators) when a
/// secret's file can be read by its group or by others.
fn warn_if_exposed(f: &Path, what: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(f) {
        let mode = m.permissions().mode();
        if mode & 0o044 != 0 {
            errln!(
                "holdfast: warning: {what} {} is readable by {} (mode {:04o}); run `chmod 600 {}`",
                f.display(),
                match (mode & 0o040 != 0, mode & 0o004 != 0) {
                    (true, true) => "its group and by others",
                    (true, false) => "its group",
                    _ => "others",
                },
                mode & 0o7777,
                f.display()
            );
        }
    }
}

/// Open the repository named by the global options.
pub fn open(g: &Global, rt: &Runtime) -> Result<Arc<Repository>> {
    let b = backend(g, rt)?;
    // Check it is a repository of a readable version before asking for a password.
    Repository::probe(b.as_ref(), rt.handle())?;
    let cred = credential(g, "repository password: ")?;
    let repo = Repository::open_with(b, rt.handle().clone(), &cred.secret())?;
    Ok(Arc::new(repo))
}
