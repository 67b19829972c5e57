//! The repository error type.
//!
//! Each variant names what is wrong and, where it helps, what to do. The CLI
//! maps variants to exit codes (see README), so variants are split by what an
//! operator does next rather than by where they arise.

use holdfast_storage::{clone_io, ErrorClass, StorageError};
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

    #[error(
        "wrong {secret}: none of the {slots} key slot(s) of {location} opens with it ({counts})"
    )]
    WrongPassword {
        location: String,
        slots: usize,
        /// "password" or "key file".
        secret: &'static str,
        /// Why each slot did not open.
        counts: SlotCounts,
    },

    #[error("key slot {slot} of {location} is damaged ({detail}) and none of the other {others} slot(s) opens with this {secret} ({counts}); if the damaged slot was the one for it, restore that file from a copy of the repository, or open with another password or key file and remove it with `holdfast key remove`")]
    DamagedKeySlot {
        location: String,
        /// The slot's key, e.g. `keys/ab12...`.
        slot: String,
        detail: String,
        others: usize,
        secret: &'static str,
        counts: SlotCounts,
    },

    /// A genuine object found under a name (or kind) it was not written
    /// as: renamed, swapped, moved, or an old copy put back.
    #[error("{object} holds {holds}: {how}")]
    Misplaced {
        /// The storage key it was read from, e.g. `snapshots/ab12...`.
        object: String,
        /// What it really is, e.g. `the object named snapshots/cd34...`.
        holds: String,
        how: String,
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

    #[error("repository {location} is locked: {detail}")]
    RepositoryLocked { location: String, detail: String },

    #[error("the repository lease of this {operation} was lost ({detail}); nothing was committed, since a garbage collection may have run meanwhile: run the {operation} again")]
    LeaseLost { operation: String, detail: String },

    #[error(transparent)]
    Storage(#[from] StorageError),

    #[error("{context}: {cause}")]
    Io {
        context: String,
        /// In the message, not `source()`: a chain printer would repeat it.
        cause: std::io::Error,
    },

    /// An error with what was being done when it happened; the class is the
    /// inner error's (`uploading pack ab12…: no space left on device`).
    #[error("{context}: {inner}")]
    Context {
        context: String,
        inner: Box<RepoError>,
    },
}

/// What an operator (or the daemon's retry logic) does next about an
/// error: the storage class where storage failed, else a repository class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// A failure of the storage backend, with its class.
    Storage(ErrorClass),
    /// Damage: a corrupt or missing object, a damaged key slot.
    Integrity,
    /// Not a repository, or one of a newer format.
    Repository,
    /// Wrong password or key file.
    Credentials,
    /// A local file operation failed (the class of the I/O error).
    Local(std::io::ErrorKind),
    /// Anything else: bad arguments, missing snapshots, invalid input.
    Other,
}

/// Why the key slots did not open, for the refusal when none does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotCounts {
    /// Slots of the secret's kind that authenticated nothing.
    pub wrong: u32,
    /// Slots that are damaged: unparseable, truncated, a bad nonce, or
    /// content that no longer hashes to the slot's name.
    pub damaged: u32,
    /// Slots never tried: an unknown KDF, or KDF parameters outside the
    /// bounds (see `keys::KdfParams::check`).
    pub skipped: u32,
}

impl std::fmt::Display for SlotCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only what happened: "1 wrong, 2 damaged", never "0 wrong".
        let parts: Vec<String> = [
            (self.wrong, "wrong"),
            (self.damaged, "damaged"),
            (self.skipped, "skipped"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        if parts.is_empty() {
            f.write_str("none of its kind")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
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

    /// This error with `context` in front of its message; its class stays.
    pub fn context(self, context: impl Into<String>) -> RepoError {
        RepoError::Context {
            context: context.into(),
            inner: Box::new(self),
        }
    }

    /// The error under any context.
    pub fn root(&self) -> &RepoError {
        match self {
            RepoError::Context { inner, .. } => inner.root(),
            other => other,
        }
    }

    /// The class of this error (through any context).
    pub fn class(&self) -> Class {
        match self {
            RepoError::Context { inner, .. } => inner.class(),
            RepoError::Storage(e) => match e.class() {
                // A repository object that should be there and is not is
                // damage, not an answer.
                ErrorClass::NotFound => Class::Integrity,
                c => Class::Storage(c),
            },
            RepoError::Corrupt { .. }
            | RepoError::MissingBlob { .. }
            | RepoError::DamagedKeySlot { .. }
            | RepoError::Misplaced { .. } => Class::Integrity,
            RepoError::NotARepository { .. } | RepoError::UnsupportedVersion { .. } => {
                Class::Repository
            }
            RepoError::WrongPassword { .. } => Class::Credentials,
            // Another operation holds the repository (an exclusive phase),
            // or took this one's lease away: exit 7, retry later.
            RepoError::RepositoryLocked { .. } | RepoError::LeaseLost { .. } => {
                Class::Storage(ErrorClass::Locked)
            }
            RepoError::Io { cause, .. } => match cause.raw_os_error() {
                Some(code) if is_no_space(code) => Class::Storage(ErrorClass::NoSpace),
                _ => Class::Local(cause.kind()),
            },
            _ => Class::Other,
        }
    }

    /// The storage class, if storage (or a full local disk) failed.
    pub fn storage_class(&self) -> Option<ErrorClass> {
        match self.class() {
            Class::Storage(c) => Some(c),
            _ => None,
        }
    }
}

/// ENOSPC or EDQUOT: a full disk or quota, wherever it happens.
fn is_no_space(code: i32) -> bool {
    // Linux values; the codes are the same on every Unix Holdfast builds for.
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    code == ENOSPC || code == EDQUOT
}

/// A copy with the same variant, class and message (I/O causes rebuilt
/// from their kind and text): the blob writer hands its first failure to
/// every thread that submits after it.
impl Clone for RepoError {
    fn clone(&self) -> Self {
        use RepoError::*;
        match self {
            NotARepository { location, reason } => NotARepository {
                location: location.clone(),
                reason: reason.clone(),
            },
            AlreadyInitialized { location } => AlreadyInitialized {
                location: location.clone(),
            },
            UnsupportedVersion {
                location,
                found,
                supported,
            } => UnsupportedVersion {
                location: location.clone(),
                found: *found,
                supported: *supported,
            },
            WrongPassword {
                location,
                slots,
                secret,
                counts,
            } => WrongPassword {
                location: location.clone(),
                slots: *slots,
                secret,
                counts: *counts,
            },
            DamagedKeySlot {
                location,
                slot,
                detail,
                others,
                secret,
                counts,
            } => DamagedKeySlot {
                location: location.clone(),
                slot: slot.clone(),
                detail: detail.clone(),
                others: *others,
                secret,
                counts: *counts,
            },
            Misplaced { object, holds, how } => Misplaced {
                object: object.clone(),
                holds: holds.clone(),
                how: how.clone(),
            },
            Corrupt { object, detail } => Corrupt {
                object: object.clone(),
                detail: detail.clone(),
            },
            MissingBlob {
                blob,
                referenced_by,
            } => MissingBlob {
                blob: blob.clone(),
                referenced_by: referenced_by.clone(),
            },
            SnapshotNotFound(s) => SnapshotNotFound(s.clone()),
            AmbiguousSnapshot { prefix, count } => AmbiguousSnapshot {
                prefix: prefix.clone(),
                count: *count,
            },
            KeyNotFound(s) => KeyNotFound(s.clone()),
            Invalid(s) => Invalid(s.clone()),
            RepositoryLocked { location, detail } => RepositoryLocked {
                location: location.clone(),
                detail: detail.clone(),
            },
            LeaseLost { operation, detail } => LeaseLost {
                operation: operation.clone(),
                detail: detail.clone(),
            },
            Storage(e) => Storage(e.clone()),
            Io { context, cause } => Io {
                context: context.clone(),
                cause: clone_io(cause),
            },
            Context { context, inner } => Context {
                context: context.clone(),
                inner: inner.clone(),
            },
        }
    }
}

/// An `io::Error` that carries a repository error, so a `Read` adapter
/// (a restore stream piped into `pg_restore`) loses nothing of it;
/// [`RepoError::from_io_carrier`] gets it back.
impl From<RepoError> for std::io::Error {
    fn from(e: RepoError) -> Self {
        std::io::Error::other(e)
    }
}

impl RepoError {
    /// The repository error inside an `io::Error` made by `From<RepoError>`,
    /// else the I/O error with `context`.
    pub fn from_io_carrier(e: std::io::Error, context: &str) -> RepoError {
        match e.downcast::<RepoError>() {
            Ok(r) => r,
            Err(e) => RepoError::io(context, e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repository_error_survives_an_io_error_with_its_class() {
        let e = RepoError::Storage(StorageError::Transient {
            backend: "b".into(),
            key: "data/ab".into(),
            detail: "503".into(),
        });
        let carried: std::io::Error = e.into();
        let back = RepoError::from_io_carrier(carried, "reading");
        assert_eq!(
            back.class(),
            Class::Storage(ErrorClass::Transient),
            "{back}"
        );
        let plain = RepoError::from_io_carrier(std::io::Error::other("disk"), "reading x");
        assert!(matches!(plain, RepoError::Io { .. }), "{plain}");
        assert!(plain.to_string().starts_with("reading x: "), "{plain}");
    }
}
