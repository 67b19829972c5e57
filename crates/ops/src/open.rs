//! From a repository location and a secret to an open repository.
//!
//! The caller builds a [`Location`] (the binary from `--repo` and the S3
//! variables, the daemon from its configuration file) and a
//! [`Credential`]; nothing here reads the environment.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use holdfast_repo::keys::{Prederived, Secret, KEY_FILE_LEN};
pub use holdfast_repo::prefetch::Prefetch;
use holdfast_repo::prefetch::{first_reads_with_slot, FirstReads};
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

impl Location {
    /// How the backend for this location names itself
    /// (`Backend::location`), known before connecting: what the KDF hint
    /// is kept under (see [`KdfAhead`]).
    pub fn label(&self) -> String {
        match self {
            Location::S3(cfg) => cfg.location(),
            Location::Local(path) => LocalBackend::new(path).location(),
        }
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

/// A backend connected, with the first reads of opening made (see
/// [`connect_reading`]).
pub struct Connected {
    pub backend: Arc<dyn Backend>,
    first: FirstReads,
}

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connected")
            .field("location", &self.backend.location())
            .finish_non_exhaustive()
    }
}

impl Connected {
    /// [`probe`] without a request: the config was read at connect.
    pub fn probe(&self) -> Result<u32> {
        Ok(Repository::probe_reads(
            &self.first,
            &self.backend.location(),
        )?)
    }
}

/// Connect to `location` and, at the same time, read what opening needs
/// (the config, the key listing) and the listings `want` names (see
/// `holdfast_repo::prefetch`): on S3 this is one round trip with the
/// bucket checks, where connecting, probing, opening and the first
/// listings used to wait on one another.
///
/// With `kdf` (a password's KDF run ahead), the key slot it runs for is
/// read with them too: the one that opened the repository last time, so
/// that a password open needs no second round trip for it.
pub fn connect_reading(
    location: &Location,
    rt: &Handle,
    want: Prefetch,
    kdf: Option<&KdfAhead>,
) -> Result<Connected> {
    let slot = kdf.map(|k| k.slot.clone());
    match location {
        Location::S3(cfg) => {
            let cfg = (**cfg).clone();
            let (b, first) = rt.block_on(S3Backend::connect_with(cfg, |b| {
                first_reads_with_slot(Arc::new(b) as Arc<dyn Backend>, want, slot)
            }))?;
            Ok(Connected {
                backend: Arc::new(b),
                first,
            })
        }
        Location::Local(_) => Ok(read_first(connect(location, rt, false)?, rt, want, kdf)),
    }
}

/// [`connect_reading`] for a backend already connected (a local one, or
/// one wrapped in a decorator): the first reads, all at once.
pub fn read_first(
    backend: Arc<dyn Backend>,
    rt: &Handle,
    want: Prefetch,
    kdf: Option<&KdfAhead>,
) -> Connected {
    let slot = kdf.map(|k| k.slot.clone());
    let first = rt.block_on(first_reads_with_slot(backend.clone(), want, slot));
    Connected { backend, first }
}

/// A password's KDF run ahead, in a thread of its own, for the slot that
/// opened the repository last time (see `holdfast_repo::keys::KdfHint`):
/// it runs while the key slots are listed and read, so a password open
/// costs max(argon2, two round trips) instead of their sum.
pub struct KdfAhead {
    thread: std::thread::JoinHandle<Option<Prederived>>,
    /// The slot the hint is for: read with the first reads (see
    /// [`connect_reading`]).
    slot: String,
}

impl KdfAhead {
    /// Start deriving `credential` with the hint kept under `cache_dir`
    /// for `location`. `None` when there is nothing to derive (a key file,
    /// no cache, no hint yet, a hint out of bounds is refused when the
    /// thread runs).
    pub fn start(
        cache_dir: Option<&Path>,
        location: &str,
        credential: &Credential,
    ) -> Option<KdfAhead> {
        let Credential::Password(pw) = credential else {
            return None;
        };
        let hint = holdfast_repo::cache::read_kdf_hint(cache_dir?, location)?;
        let slot = hint.slot.clone();
        let pw = pw.clone();
        let thread = std::thread::Builder::new()
            .name("holdfast-kdf".into())
            .spawn(move || holdfast_repo::keys::prederive(&pw, &hint).ok())
            .ok()?;
        Some(KdfAhead { thread, slot })
    }

    fn finish(self) -> Option<Prederived> {
        self.thread.join().ok().flatten()
    }
}

/// [`open_session`] of a [`Connected`] backend, from its first reads, with
/// `kdf` (a KDF run ahead, if any). After a password open the hint for
/// the next one is kept in the cache.
pub fn open_connected(
    connected: Connected,
    rt: &Handle,
    credential: &Credential,
    opts: &SessionOptions,
    kdf: Option<KdfAhead>,
) -> Result<Session> {
    let Connected { backend, first } = connected;
    let location = backend.location();
    let repo = Repository::open_from(backend, rt.clone(), &credential.secret(), first, || {
        kdf.and_then(KdfAhead::finish)
    })?;
    if let (Some(root), Some(hint)) = (&opts.cache_dir, repo.kdf_hint()) {
        holdfast_repo::cache::write_kdf_hint(root, &location, hint);
    }
    session(Arc::new(repo), opts)
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
    /// Who this session's audit entries are by (the CLI: `HOLDFAST_ACTOR`;
    /// the daemon: its configuration); `None`: `user@host`.
    pub actor: Option<String>,
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
    session(open(backend, rt, credential)?, opts)
}

/// Set up an open repository as `opts` says (cache, lease, audit actor
/// and witness).
pub fn session(repo: Arc<Repository>, opts: &SessionOptions) -> Result<Session> {
    let mut warnings = repo.open_warnings().to_vec();
    repo.set_audit_actor(opts.actor.clone());
    // The witness of the audit trail's head lives beside the cache (see
    // `holdfast_repo::audit::witness`).
    repo.set_audit_witness(opts.cache_dir.clone());
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
