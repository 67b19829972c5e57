//! Creating a repository.

use std::sync::Arc;

use holdfast_repo::config::{LockConfig, RepoConfig};
use holdfast_repo::keys::KdfParams;
use holdfast_repo::Repository;
use holdfast_storage::Backend;
use tokio::runtime::Handle;

use holdfast_repo::audit::{Draft, Outcome};

use crate::audit;
use crate::error::{OpsError, Result};
use crate::open::{session, Session, SessionOptions};

/// Everything `init` needs.
pub struct InitConfig {
    /// The first password (not empty).
    pub password: Vec<u8>,
    /// Password hashing cost of its key slot.
    pub kdf: KdfParams,
    /// zstd level for new data.
    pub compression_level: i32,
    /// Object Lock retention for every object written (S3 only).
    pub lock: Option<LockConfig>,
}

/// Password hashing parameters from the operator's units (MiB, passes),
/// refusing zero.
pub fn kdf(memory_mib: u32, iterations: u32) -> Result<KdfParams> {
    if memory_mib < 1 || iterations < 1 {
        return Err(OpsError::invalid(
            "--kdf-memory-mib and --kdf-iterations must be at least 1",
        ));
    }
    Ok(KdfParams {
        m_cost: memory_mib.saturating_mul(1024),
        t_cost: iterations,
        p_cost: holdfast_repo::keys::DEFAULT_LANES,
    })
}

/// Create a repository in `backend`; its audit trail starts with the
/// `init` entry, by `user@host` (see [`init_session`] for a session's
/// actor and witness).
pub fn init(backend: Arc<dyn Backend>, rt: &Handle, cfg: InitConfig) -> Result<Repository> {
    let repo = create(backend, rt, cfg)?;
    record_init(&repo)?;
    Ok(repo)
}

/// [`init`], with the new repository set up as `opts` says (the audit
/// actor and witness, the cache): what the CLI and the daemon call.
pub fn init_session(
    backend: Arc<dyn Backend>,
    rt: &Handle,
    cfg: InitConfig,
    opts: &SessionOptions,
) -> Result<Session> {
    let repo = create(backend, rt, cfg)?;
    let s = session(Arc::new(repo), opts)?;
    record_init(&s.repo)?;
    Ok(s)
}

fn record_init(repo: &Repository) -> Result<()> {
    let c = repo.config();
    let mut d = Draft::new("init", Outcome::Success)
        .arg("compression_level", c.compression_level)
        .touch("repository", c.id.to_hex());
    if let Some(lock) = &c.lock {
        d = d
            .arg("lock_mode", lock.mode.clone())
            .arg("lock_days", lock.days);
    }
    audit::record(repo, &d)
        .map(|_| ())
        .map_err(|e| e.context("the repository was created but is not on the audit trail"))
}

fn create(backend: Arc<dyn Backend>, rt: &Handle, cfg: InitConfig) -> Result<Repository> {
    if cfg.password.is_empty() {
        return Err(OpsError::invalid("refusing an empty password"));
    }
    let mut config = RepoConfig::new();
    config.compression_level = cfg.compression_level;
    config.lock = cfg.lock;
    Ok(Repository::init(
        backend,
        rt.clone(),
        &cfg.password,
        cfg.kdf,
        config,
    )?)
}
