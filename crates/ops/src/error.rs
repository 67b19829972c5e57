//! The error of every operation: the library error that caused it, whole,
//! so that its class (no space, transient, locked, integrity) decides the
//! exit code and retries, or an invalid request.

use holdfast_postgres::PgError;
use holdfast_repo::{Class, RepoError};
use holdfast_sources::SourceError;
use holdfast_storage::StorageError;
use thiserror::Error;

pub type Result<T, E = OpsError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum OpsError {
    #[error(transparent)]
    Repo(#[from] RepoError),

    #[error(transparent)]
    Source(#[from] SourceError),

    #[error(transparent)]
    Postgres(#[from] PgError),

    #[error(transparent)]
    Storage(#[from] StorageError),

    /// The request cannot be carried out as given (names what to change).
    #[error("{0}")]
    Invalid(String),

    /// An error with what was being done (`restoring snapshot ab12cd34 to
    /// /srv/restore`); its class is the inner error's.
    #[error("{context}: {inner}")]
    Context {
        context: String,
        inner: Box<OpsError>,
    },

    /// A local file the operation needs (a password or key file).
    #[error("{context}: {cause}")]
    Io {
        context: String,
        cause: std::io::Error,
    },
}

impl OpsError {
    pub(crate) fn invalid(msg: impl Into<String>) -> OpsError {
        OpsError::Invalid(msg.into())
    }

    /// This error with `context` in front; the class stays.
    pub fn context(self, context: impl Into<String>) -> OpsError {
        OpsError::Context {
            context: context.into(),
            inner: Box::new(self),
        }
    }

    /// The repository error at the root of this one, if any.
    pub fn repo_error(&self) -> Option<&RepoError> {
        match self {
            OpsError::Context { inner, .. } => inner.repo_error(),
            OpsError::Repo(r) | OpsError::Source(SourceError::Repo(r)) => Some(r),
            OpsError::Postgres(PgError::Repo(r)) => Some(r),
            _ => None,
        }
    }

    /// The class of this error (see [`holdfast_repo::Class`]).
    pub fn class(&self) -> Class {
        match self {
            OpsError::Context { inner, .. } => inner.class(),
            OpsError::Storage(s) => RepoError::Storage(s.clone()).class(),
            OpsError::Source(SourceError::NoSpace { .. }) => {
                Class::Storage(holdfast_storage::ErrorClass::NoSpace)
            }
            other => other.repo_error().map_or(Class::Other, RepoError::class),
        }
    }
}
