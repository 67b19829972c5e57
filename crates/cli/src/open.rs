//! Turning global options into an open repository: backend from the
//! repository URL, key file or password from file, environment or prompt.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use holdfast_ops::open::{Credential, KdfAhead, Location, Prefetch, S3Overrides};
use holdfast_repo::keys::{decode_key_file, KEY_FILE_LEN};
use holdfast_repo::Repository;
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

/// The repository location from `--repo`/HOLDFAST_REPOSITORY, with S3
/// settings from the flags and then the environment.
pub fn location(g: &Global) -> Result<Location> {
    let url = g.repo.as_deref().unwrap_or("");
    let overrides = S3Overrides {
        endpoint: g.s3_endpoint.clone(),
        region: g.s3_region.clone(),
        path_style: g.s3_path_style,
        allow_http: g.s3_allow_http,
    };
    Ok(Location::from_url(
        url,
        |n| std::env::var(n).ok(),
        &overrides,
    )?)
}

/// The backend for the repository URL; `object_lock` asks an S3 backend to
/// insist on a bucket with Object Lock (for `init --lock-mode`).
pub fn backend_with(g: &Global, rt: &Runtime, object_lock: bool) -> Result<Arc<dyn Backend>> {
    Ok(holdfast_ops::open::connect(
        &location(g)?,
        rt.handle(),
        object_lock,
    )?)
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

/// Whether [`credential`] would prompt on the terminal (no secret given
/// by flag, file or environment).
fn needs_prompt(g: &Global) -> bool {
    g.key_file.is_none()
        && env_nonempty(KEY_ENV).is_none()
        && g.password_file.is_none()
        && env_nonempty("HOLDFAST_PASSWORD").is_none()
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
    let s = holdfast_ops::secrets::read_password_file(f)?;
    warn(s.warning);
    Ok(s.value)
}

/// The key of a key file.
pub fn read_key_file(f: &Path) -> Result<[u8; KEY_FILE_LEN]> {
    let s = holdfast_ops::secrets::read_key_file(f)?;
    warn(s.warning);
    Ok(s.value)
}

fn warn(w: Option<String>) {
    if let Some(w) = w {
        errln!("holdfast: warning: {w}");
    }
}

/// Open the repository named by the global options.
pub fn open(g: &Global, rt: &Runtime) -> Result<Arc<Repository>> {
    open_for(g, rt, Prefetch::default())
}

/// Open the repository named by the global options, reading the listings
/// `want` names while opening (see `holdfast_repo::prefetch`).
pub fn open_for(g: &Global, rt: &Runtime, want: Prefetch) -> Result<Arc<Repository>> {
    let loc = location(g)?;
    let opts = session_options(g);
    // A secret that needs no prompt is read first, so that a password's
    // KDF can run while the repository is read; its errors still come
    // after the probe's, as when it is read after.
    let early = (!needs_prompt(g)).then(|| credential(g, ""));
    let kdf = match &early {
        Some(Ok(c)) => KdfAhead::start(opts.cache_dir.as_deref(), &loc.label(), c),
        _ => None,
    };
    let connected = holdfast_ops::open::connect_reading(&loc, rt.handle(), want, kdf.as_ref())?;
    // Check it is a repository of a readable version before asking for a password.
    connected.probe()?;
    let cred = match early {
        Some(c) => c?,
        None => credential(g, "repository password: ")?,
    };
    let session = holdfast_ops::open::open_connected(connected, rt.handle(), &cred, &opts, kdf)?;
    for w in &session.warnings {
        errln!("holdfast: warning: {w}");
    }
    Ok(session.repo)
}

/// How a session is set up: the cache, the lease, the audit actor.
pub fn session_options(g: &Global) -> holdfast_ops::open::SessionOptions {
    holdfast_ops::open::SessionOptions {
        cache_dir: cache_root(g),
        lease_duration: g.lease_duration,
        actor: crate::identity::actor(),
    }
}

/// Where the local cache lives: --cache-dir / HOLDFAST_CACHE_DIR, else
/// $XDG_CACHE_HOME/holdfast (if absolute, as the XDG spec requires), else
/// ~/.cache/holdfast; none with --no-cache or without a home.
pub fn cache_root(g: &Global) -> Option<std::path::PathBuf> {
    if g.no_cache {
        return None;
    }
    if let Some(d) = &g.cache_dir {
        return Some(d.clone());
    }
    if let Some(x) = env_nonempty("XDG_CACHE_HOME").filter(|x| Path::new(x).is_absolute()) {
        return Some(Path::new(&x).join("holdfast"));
    }
    env_nonempty("HOME").map(|h| Path::new(&h).join(".cache").join("holdfast"))
}
