//! Errors of backup and restore operations.

use std::path::PathBuf;

use holdfast_repo::RepoError;
use thiserror::Error;

pub type SourceResult<T> = Result<T, SourceError>;

#[derive(Debug, Error)]
pub enum SourceError {
    #[error("source path {path} does not exist")]
    MissingSource { path: PathBuf },

    #[error("cannot read {path}: {cause}")]
    Read {
        path: PathBuf,
        /// In the message, not `source()`: a chain printer would repeat it.
        cause: std::io::Error,
    },

    #[error("cannot write {path}: {cause}")]
    Write {
        path: PathBuf,
        /// In the message, not `source()`: a chain printer would repeat it.
        cause: std::io::Error,
    },

    #[error("no space left on device while writing {path}; free space on the target (nothing in the repository was changed)")]
    NoSpace { path: PathBuf },

    #[error("refusing to overwrite entries in the target that differ from the snapshot ({} files, {} symlinks, {} other), e.g. {first}; pass --overwrite to replace them (files that already hold the snapshot's content are kept either way)", counts.files, counts.symlinks, counts.other)]
    WouldOverwrite {
        counts: holdfast_repo::snapshot::NodeCounts,
        first: PathBuf,
    },

    #[error("{marker} marks an unfinished restore of snapshot {snapshot} (or of other paths) into this target; rerun that restore to finish it, or pass --overwrite to replace it")]
    OtherRestoreInProgress { marker: PathBuf, snapshot: String },

    #[error("{marker} is not a Holdfast restore marker ({detail}); remove it if nothing is restoring into this target")]
    BadMarker { marker: PathBuf, detail: String },

    #[error("refusing to restore {0}: its name would escape the target directory")]
    UnsafeName(String),

    #[error("bad exclude rule, {what}: {reason}")]
    BadExclude { what: String, reason: String },

    /// The caller asked the operation to stop (SIGINT, SIGTERM). Data
    /// already uploaded is indexed, so the next backup reuses it.
    #[error("backup interrupted: {packs} pack(s) of data already stored were indexed and will be reused by the next backup; no snapshot was written")]
    Interrupted { packs: u64, stored: u64 },

    /// A restore stopped on request (a drill's timeout or a signal); the
    /// target holds part of the snapshot.
    #[error("restore into {0} interrupted: the target holds part of the snapshot")]
    RestoreInterrupted(PathBuf),

    #[error("path {0} is not in the snapshot")]
    NotInSnapshot(String),

    #[error("path {given} is ambiguous: both {from_cwd} (from the current directory) and {from_root} (from the snapshot root) are in the snapshot; give the absolute path")]
    AmbiguousPath {
        given: String,
        from_cwd: String,
        from_root: String,
    },

    #[error(transparent)]
    Repo(#[from] RepoError),
}

impl SourceError {
    pub fn write(path: impl Into<PathBuf>, e: std::io::Error) -> SourceError {
        let path = path.into();
        if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) {
            SourceError::NoSpace { path }
        } else {
            SourceError::Write { path, cause: e }
        }
    }
}
