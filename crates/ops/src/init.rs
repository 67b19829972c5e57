//! Creating a repository.

use std::sync::Arc;

use holdfast_repo::config::{LockConfig, RepoConfig};
use holdfast_repo::keys::KdfParams;
use holdfast_repo::Repository;
use holdfast_storage::Backend;
use tokio::runtime::Handle;

use crate::error::{OpsError, Result};

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
        p_cost: 1,
    })
}

/// Create a repository in `backend`.
pub fn init(backend: Arc<dyn Backend>, rt: &Handle, cfg: InitConfig) -> Result<Repository> {
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
