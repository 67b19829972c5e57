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

    /// What a caller does next about this error (see [`ErrorClass`]).
    pub fn class(&self) -> ErrorClass {
        match self {
            StorageError::NotFound { .. } => ErrorClass::NotFound,
            StorageError::AlreadyExists { .. } => ErrorClass::AlreadyExists,
            StorageError::InvalidRange { .. } => ErrorClass::Other,
            StorageError::Locked { .. } => ErrorClass::Locked,
            StorageError::Archived { .. } => ErrorClass::Archived,
            StorageError::Unsupported { .. } => ErrorClass::Unsupported,
            StorageError::NoSpace { .. } => ErrorClass::NoSpace,
            StorageError::PermissionDenied { .. } => ErrorClass::PermissionDenied,
            StorageError::Transient { .. } => ErrorClass::Transient,
            StorageError::Io { .. } | StorageError::Config { .. } | StorageError::Other { .. } => {
                ErrorClass::Other
            }
        }
    }
}

/// The class of a storage error, kept end to end (through the blob writer,
/// the readers and the application layer) so that exit codes and retry
/// decisions are taken on the class, never on a message's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The object is not there.
    NotFound,
    /// A write-once object of that name exists.
    AlreadyExists,
    /// The device or quota is full: the operator must make room.
    NoSpace,
    /// A temporary failure (network, throttling, 5xx): retry with backoff.
    Transient,
    /// Object Lock retention or a legal hold forbids the change.
    Locked,
    /// In an archival tier: restore it first.
    Archived,
    /// Credentials or permissions do not allow the operation.
    PermissionDenied,
    /// The backend lacks the capability.
    Unsupported,
    /// Anything else (I/O errors of other kinds, configuration).
    Other,
}

/// A copy of an error with the same class and message. `std::io::Error`
/// is not `Clone`, so an I/O cause is rebuilt from its kind and text; the
/// blob writer needs this to hand its first failure to every caller.
impl Clone for StorageError {
    fn clone(&self) -> Self {
        use StorageError::*;
        match self {
            NotFound { backend, key } => NotFound {
                backend: backend.clone(),
                key: key.clone(),
            },
            AlreadyExists { backend, key } => AlreadyExists {
                backend: backend.clone(),
                key: key.clone(),
            },
            InvalidRange {
                key,
                start,
                end,
                size,
            } => InvalidRange {
                key: key.clone(),
                start: *start,
                end: *end,
                size: *size,
            },
            Locked { key } => Locked { key: key.clone() },
            Archived { key } => Archived { key: key.clone() },
            Unsupported {
                operation,
                backend,
                key,
            } => Unsupported {
                operation,
                backend: backend.clone(),
                key: key.clone(),
            },
            NoSpace { backend, key } => NoSpace {
                backend: backend.clone(),
                key: key.clone(),
            },
            PermissionDenied {
                backend,
                key,
                detail,
            } => PermissionDenied {
                backend: backend.clone(),
                key: key.clone(),
                detail: detail.clone(),
            },
            Transient {
                backend,
                key,
                detail,
            } => Transient {
                backend: backend.clone(),
                key: key.clone(),
                detail: detail.clone(),
            },
            Io {
                backend,
                key,
                cause,
            } => Io {
                backend: backend.clone(),
                key: key.clone(),
                cause: clone_io(cause),
            },
            Config { backend, detail } => Config {
                backend: backend.clone(),
                detail: detail.clone(),
            },
            Other { backend, detail } => Other {
                backend: backend.clone(),
                detail: detail.clone(),
            },
        }
    }
}

/// An `io::Error` with the same kind, OS code and text.
pub fn clone_io(e: &std::io::Error) -> std::io::Error {
    match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => std::io::Error::new(e.kind(), e.to_string()),
    }
}
