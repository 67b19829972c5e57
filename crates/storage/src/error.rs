//! The one error type every backend reports.
//!
//! Variants are chosen by what a caller does next: `NotFound` and
//! `AlreadyExists` are answers, `Transient` may be retried, `NoSpace` and
//! `PermissionDenied` need the operator, `Unsupported` means a capability is
//! missing. Every variant names the object key (or the backend) it concerns.

use thiserror::Error;

pub type StorageResult<T> = Result<T, StorageError>;

#[derive(Debug, Error)]
pub enum StorageError {
    #[error("object {key} not found in {backend}")]
    NotFound { backend: String, key: String },

    #[error("object {key} already exists in {backend} (objects are write-once)")]
    AlreadyExists { backend: String, key: String },

    #[error("range {start}..{end} is outside object {key} of {size} bytes")]
    InvalidRange {
        key: String,
        start: u64,
        end: u64,
        size: u64,
    },

    #[error("object {key} is locked (Object Lock retention or legal hold) and cannot be deleted")]
    Locked { key: String },

    #[error("object {key} is in an archival storage class; restore it first")]
    Archived { key: String },

    #[error("{operation} is not supported by {backend} (object {key})")]
    Unsupported {
        operation: &'static str,
        backend: String,
        key: String,
    },

    #[error("no space left on device while writing {key} to {backend}")]
    NoSpace { backend: String, key: String },

    #[error("permission denied for {key} in {backend}: {detail}")]
    PermissionDenied {
        backend: String,
        key: String,
        detail: String,
    },

    #[error("temporary failure on {key} in {backend}: {detail}")]
    Transient {
        backend: String,
        key: String,
        detail: String,
    },

    #[error("I/O error on {key} in {backend}: {cause}")]
    Io {
        backend: String,
        key: String,
        /// In the message, not `source()`: a chain printer would repeat it.
        cause: std::io::Error,
    },

    #[error("{backend}: {detail}")]
    Config { backend: String, detail: String },

    #[error("{backend}: {detail}")]
    Other { backend: String, detail: String },
}

impl StorageError {
    /// Classify a `std::io::Error` on `key`.
    pub fn from_io(backend: &str, key: &str, err: std::io::Error) -> Self {
        use std::io::ErrorKind;
        match err.kind() {
            ErrorKind::NotFound => StorageError::NotFound {
                backend: backend.to_string(),
                key: key.to_string(),
            },
            ErrorKind::AlreadyExists => StorageError::AlreadyExists {
                backend: backend.to_string(),
                key: key.to_string(),
            },
            ErrorKind::PermissionDenied => StorageError::PermissionDenied {
                backend: backend.to_string(),
                key: key.to_string(),
                detail: err.to_string(),
            },
            _ if err.raw_os_error() == Some(libc::ENOSPC)
                || err.raw_os_error() == Some(libc::EDQUOT) =>
            {
                StorageError::NoSpace {
                    backend: backend.to_string(),
                    key: key.to_string(),
                }
            }
            _ => StorageError::Io {
                backend: backend.to_string(),
                key: key.to_string(),
                cause: err,
            },
        }
    }

    /// True for errors worth retrying with backoff.
    pub fn is_transient(&self) -> bool {
        matches!(self, StorageError::Transient { .. })
    }

    /// True when the object simply is not there.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound { .. })
    }
}
