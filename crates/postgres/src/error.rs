//! The error type of the PostgreSQL sources and restore targets.
//!
//! Variants are split by what the operator does next: fix the connection,
//! fix the server configuration, pick another target, or look at a tool's
//! own message (which we always carry along, since pg_dump and pg_restore
//! say precisely what went wrong).

use thiserror::Error;

pub type Result<T, E = PgError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum PgError {
    #[error("invalid connection string: {0}")]
    Dsn(String),

    #[error("cannot connect to PostgreSQL at {target}: {detail}")]
    Connect { target: String, detail: String },

    #[error("PostgreSQL query failed ({what}): {detail}")]
    Query { what: String, detail: String },

    #[error("cannot run {tool} ({path}): {cause}; set HOLDFAST_PG_BINDIR to the directory holding the PostgreSQL client tools")]
    ToolMissing {
        tool: String,
        path: String,
        /// In the message, not `source()`: a chain printer would repeat it.
        cause: std::io::Error,
    },

    #[error("{tool} failed ({status}); nothing was committed. Its output:\n{stderr}")]
    ToolFailed {
        tool: String,
        status: String,
        stderr: String,
    },

    #[error("database {database:?} already exists and is not empty; pass --clean to drop and recreate it")]
    TargetNotEmpty { database: String },

    #[error("database {0:?} does not exist on the server")]
    NoSuchDatabase(String),

    #[error("snapshot {snapshot} is a {found} snapshot, not {expected}")]
    WrongKind {
        snapshot: String,
        found: String,
        expected: String,
    },

    #[error("{0}")]
    Invalid(String),

    #[error("WAL file {name} is not in the archive{cluster}")]
    WalNotFound { name: String, cluster: String },

    #[error("WAL file {name} was already archived with different content (archived size {existing_size}, new size {new_size}); refusing to overwrite. Two clusters may be archiving into one repository under the same system identifier, or the archive belongs to another timeline history")]
    WalConflict {
        name: String,
        existing_size: u64,
        new_size: u64,
    },

    #[error("the WAL archive has a gap: segment {missing} is missing, so recovery cannot go past {last_present}. {hint}")]
    WalGap {
        missing: String,
        last_present: String,
        hint: String,
    },

    #[error("restore target {path} is not empty; choose an empty or new directory")]
    DatadirNotEmpty { path: String },

    #[error("tablespace {tablespace} would be restored to {path}, which is not empty; give --tablespace-map {key}=EMPTY_DIR to put it elsewhere, or empty that directory")]
    TablespaceTargetNotEmpty {
        tablespace: String,
        key: String,
        path: String,
    },

    #[error("--tablespace-map names {given:?}, but the snapshot has no such tablespace (it has: {known})")]
    UnknownTablespace { given: String, known: String },

    #[error("snapshot {snapshot} cannot reach the recovery target {target}: the backup ended at {backup_end}, after the target, and recovery can only go forward from a backup's end. {hint}")]
    TargetBeforeBackup {
        snapshot: String,
        target: String,
        backup_end: String,
        hint: String,
    },

    #[error("no base backup can reach the recovery target {target}: the earliest reachable point is {earliest} (the end of snapshot {snapshot}); choose a target at or after it")]
    TargetBeforeEveryBackup {
        target: String,
        earliest: String,
        snapshot: String,
    },

    #[error("the recovery target {target} is after the end of the WAL archive: the latest recoverable point is {latest} (WAL through {last_segment}); choose a target at or before it, or recover to the latest point")]
    TargetAfterArchive {
        target: String,
        latest: String,
        last_segment: String,
    },

    #[error("role {role:?} does not exist on the target server (restoring database {database:?}); nothing was restored and no database was left behind. Pass --with-globals to create the snapshot's roles first, or create the role, or pass --no-owner --no-acl to restore without ownership and grants")]
    MissingRole { role: String, database: String },

    #[error("{context}: {cause}")]
    Io {
        context: String,
        /// In the message, not `source()`: a chain printer would repeat it.
        cause: std::io::Error,
    },

    #[error(transparent)]
    Repo(#[from] holdfast_repo::RepoError),

    #[error(transparent)]
    Restore(#[from] holdfast_sources::SourceError),
}

impl PgError {
    pub fn io(context: impl Into<String>, cause: std::io::Error) -> PgError {
        PgError::Io {
            context: context.into(),
            cause,
        }
    }

    /// An I/O error of a stream that reads from the repository: when the
    /// repository failed (a `ContentReader` carries its error inside the
    /// `io::Error`), that error with its class, else a plain I/O error.
    pub fn io_or_repo(context: impl Into<String>, cause: std::io::Error) -> PgError {
        match cause.downcast::<holdfast_repo::RepoError>() {
            Ok(r) => PgError::Repo(r.context(context)),
            Err(cause) => PgError::io(context, cause),
        }
    }

    pub(crate) fn query(what: impl Into<String>, e: tokio_postgres::Error) -> PgError {
        PgError::Query {
            what: what.into(),
            detail: describe_pg_error(&e),
        }
    }
}

/// tokio-postgres' Display of a server error is just "db error"; the useful
/// part (message, detail, hint) lives in the `DbError` source.
pub(crate) fn describe_pg_error(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{}: {}", db.severity(), db.message());
        if let Some(d) = db.detail() {
            s.push_str(&format!(" ({d})"));
        }
        if let Some(h) = db.hint() {
            s.push_str(&format!("; hint: {h}"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(&format!(": {inner}"));
        src = inner.source();
    }
    s
}
