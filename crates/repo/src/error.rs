//! The repository error type.
//!
//! Each variant names what is wrong and, where it helps, what to do. The CLI
//! maps variants to exit codes (see README), so variants are split by what an
//! operator does next rather than by where they arise.

use holdfast_storage::StorageError;
use thiserror::Error;

pub type Result<T, E = RepoError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum RepoError {
    #[error("{location} is not a Holdfast repository ({reason}); check the repository path, or run `holdfast init` to create one")]
    NotARepository { location: String, reason: String },

    #[error("a repository already exists at {location}")]
    AlreadyInitialized { location: String },

    #[error("repository {location} uses format version {found}, newer than this holdfast supports (up to {supported}); upgrade holdfast")]
    UnsupportedVersion {
        location: String,
        found: u32,
        supported: u32,
    },

    #[error("wrong {secret}: none of the {slots} key slot(s) of {location} opens with it")]
    WrongPassword {
        location: String,
        slots: usize,
        /// "password" or "key file".
        secret: &'static str,
    },

    #[error("key slot {slot} of {location} is damaged ({detail}) and none of the other {others} slot(s) opens with this {secret}; if the damaged slot was the one for it, restore that file from a copy of the repository, or open with another password or key file and remove it with `holdfast key remove`")]
    DamagedKeySlot {
        location: String,
        /// The slot's key, e.g. `keys/ab12...`.
        slot: String,
        detail: String,
        others: usize,
        secret: &'static str,
    },

    #[error("corrupt {object}: {detail}")]
    Corrupt { object: String, detail: String },

    #[error("blob {blob} is not in the index (referenced by {referenced_by})")]
    MissingBlob { blob: String, referenced_by: String },

    #[error("no snapshot matches {0:?}")]
    SnapshotNotFound(String),

    #[error("snapshot prefix {prefix:?} is ambiguous: it matches {count} snapshots")]
    AmbiguousSnapshot { prefix: String, count: usize },

    #[error("key slot {0} not found")]
    KeyNotFound(String),

    #[error("{0}")]
    Invalid(String),

    #[error(transparent)]
    Storage(#[from] StorageError),

    #[error("{context}: {cause}")]
    Io {
        context: String,
        /// In the message, not `source()`: a chain printer would repeat it.
        cause: std::io::Error,
    },
}

impl RepoError {
    pub fn corrupt(object: impl Into<String>, detail: impl Into<String>) -> RepoError {
        RepoError::Corrupt {
            object: object.into(),
            detail: detail.into(),
        }
    }

    pub fn io(context: impl Into<String>, cause: std::io::Error) -> RepoError {
        RepoError::Io {
            context: context.into(),
            cause,
        }
    }
}
