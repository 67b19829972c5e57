//! From a repository location and a secret to an open repository.
//!
//! The caller builds a [`Location`] (the binary from `--repo` and the S3
//! variables, the daemon from its configuration file) and a
//! [`Credential`]; nothing here reads the environment.

use std::path::PathBuf;
use std::sync::Arc;

use holdfast_repo::keys::{Secret, KEY_FILE_LEN};
use holdfast_repo::Repository;
use holdfast_s3::{S3Backend, S3Config};
use holdfast_storage::local::LocalBackend;
use holdfast_storage::Backend;
use tokio::runtime::Handle;

use crate::error::{OpsError, Result};

/// Where a repository lives.
#[derive(Debug, Clone)]
pub enum Location {
    /// A local directory (or a mounted file system).
    Local(PathBuf),
    /// An S3 bucket and prefix, with every setting already resolved.
    S3(Box<S3Config>),
}

impl Location {
    /// A location from a repository URL: `s3://bucket/prefix` (its settings
    /// from `s3` and then `get`, a lookup the caller provides: the binary
    /// passes the environment), `file:///path` or a plain path.
    pub fn from_url(
        url: &str,
        get: impl Fn(&str) -> Option<String>,
        s3: &S3Overrides,
    ) -> Result<Location> {
        if url.is_empty() {
            return Err(OpsError::invalid(
                "no repository given: pass --repo PATH or set HOLDFAST_REPOSITORY",
            ));
        }
        if url.starts_with("s3://") {
            let mut cfg = S3Config::from_url(url, get)?;
            s3.apply(&mut cfg);
            return Ok(Location::S3(Box::new(cfg)));
        }
        let path = url.strip_prefix("file://").unwrap_or(url);
        Ok(Location::Local(PathBuf::from(path)))
    }
}

/// S3 settings given explicitly (command-line flags), which win over the
/// ones read from the environment or a configuration file.
#[derive(Debug, Clone, Default)]
pub struct S3Overrides {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: bool,
    pub allow_http: bool,
}

impl S3Overrides {
    fn apply(&self, cfg: &mut S3Config) {
        if let Some(e) = &self.endpoint {
            cfg.endpoint = Some(e.clone());
        }
        if let Some(r) = &self.region {
            cfg.region = r.clone();
        }
        cfg.path_style |= self.path_style;
        cfg.allow_http |= self.allow_http;
    }
}

/// Connect to the backend at `location`. `object_lock` insists on a bucket
/// with Object Lock (for `init` with a lock mode); a local directory cannot
/// give it and is refused.
pub fn connect(location: &Location, rt: &Handle, object_lock: bool) -> Result<Arc<dyn Backend>> {
    match location {
        Location::S3(cfg) => {
            let mut cfg = (**cfg).clone();
            cfg.require_object_lock |= object_lock;
            let b = rt.block_on(S3Backend::connect(cfg))?;
            if object_lock {
                rt.block_on(b.check_lock_ready())?;
            }
            Ok(Arc::new(b))
        }
        Location::Local(path) => {
            if object_lock {
                return Err(OpsError::invalid(format!(
                    "{}: Object Lock needs an object store that supports it (an s3:// repository)",
                    path.display()
                )));
            }
            Ok(Arc::new(LocalBackend::new(path)))
        }
    }
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

/// Check that `backend` holds a repository of a version this build reads;
/// cheap (no key), so callers do it before asking for a password.
pub fn probe(backend: &dyn Backend, rt: &Handle) -> Result<u32> {
    Ok(Repository::probe(backend, rt)?)
}

/// How a session uses the repository beyond the secret that opens it.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// The local cache's root (`None`: no cache). The caller resolves it
    /// (the CLI from `--cache-dir` and XDG, the daemon from its config).
    pub cache_dir: Option<PathBuf>,
    /// Validity of this process's writer lease (default: the repository
    /// crate's).
    pub lease_duration: Option<std::time::Duration>,
}

/// An open repository and what opening it found worth telling the
/// operator (skipped key slots, an unfinished migration, a cache that
/// cannot be used).
pub struct Session {
    pub repo: Arc<Repository>,
    pub warnings: Vec<String>,
}

/// Open the repository in `backend` with `credential` and set it up as
/// `opts` says. A cache that cannot be used costs requests, not the
/// operation: it becomes a warning.
pub fn open_session(
    backend: Arc<dyn Backend>,
    rt: &Handle,
    credential: &Credential,
    opts: &SessionOptions,
) -> Result<Session> {
    let repo = open(backend, rt, credential)?;
    let mut warnings = repo.open_warnings().to_vec();
    if let Some(root) = &opts.cache_dir {
        if let Err(e) = repo.use_cache(Some(root)) {
            warnings.push(format!("not using the local cache: {e}"));
        }
    }
    if let Some(d) = opts.lease_duration {
        let base = holdfast_repo::lease::LeaseOptions::default();
        repo.set_lease_options(holdfast_repo::lease::LeaseOptions {
            shared_duration: d,
            exclusive_duration: d.min(base.exclusive_duration),
            ..base
        });
    }
    Ok(Session { repo, warnings })
}

/// Open the repository in `backend` with `credential`. Callers that ask
/// for a password [`probe`] first, so that a wrong path is reported before
/// the prompt; this does not probe again (a round trip on S3).
pub fn open(
    backend: Arc<dyn Backend>,
    rt: &Handle,
    credential: &Credential,
) -> Result<Arc<Repository>> {
    let repo = Repository::open_with(backend, rt.clone(), &credential.secret())?;
    Ok(Arc::new(repo))
}
