//! The daemon's typed errors.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("state file {path}: {message}")]
    State { path: PathBuf, message: String },
    #[error("listener on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error("no daemon answers on {address}: {message}")]
    NoDaemon { address: String, message: String },
    #[error("{0}")]
    Ops(#[from] holdfast_ops::OpsError),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, DaemonError>;
