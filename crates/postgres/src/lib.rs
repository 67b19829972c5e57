//! PostgreSQL backup sources and restore targets for Holdfast.
//!
//! * [`logical`]: `pg_dump -Fc -Z0` streamed into the repository (one file
//!   per database plus `globals.sql`), restored with `pg_restore`.
//! * [`physical`]: base backups through the non-exclusive backup API with
//!   page-aligned block dedup across backups, and restores that configure
//!   point-in-time recovery.
//! * [`wal`]: the WAL archive (`wal-push`/`wal-fetch`) and its recoverable range.
//!
//! The API is synchronous, like the repository's: it blocks on the tokio
//! runtime the [`holdfast_repo::Repository`] was opened with (which must be
//! multi-threaded), so call it from plain threads, never from async tasks.
//! The caller loads the repository index before a backup so that data
//! already stored deduplicates.
//!
//! Architecture invariant: this crate knows PostgreSQL and the repository
//! API; it knows nothing of clap, terminals, S3 or schedules, and never
//! prints.

pub mod conn;
mod dbprops;
mod dumpscan;
mod error;
mod fstree;
mod globals;
pub mod logical;
pub mod physical;
pub mod scratch;
pub mod script;
mod sqltext;
mod tool;
pub mod wal;

pub use conn::{Dsn, PgTools};
pub use error::{PgError, Result};
pub use fstree::LayOutStats;
pub use logical::{
    backup_logical, prepare_dump, restore_logical, restore_logical_through, table_row_counts,
    BackupOutcome, DatabaseInfo, LogicalBackupOptions, LogicalRestoreOptions, LogicalRestoreReport,
    PreparedDump, KIND_LOGICAL,
};
pub use physical::{
    backup_end, backup_physical, choose_base_backup, recovery_points, restore_command,
    restore_physical, snapshot_tablespaces, ClusterRecoveryPoint, PhysicalBackupOptions,
    PhysicalRestoreOptions, PhysicalRestoreReport, RecoveryTarget, TablespaceInfo, KIND_PHYSICAL,
};
pub use sqltext::quote_ident;
pub use wal::{
    default_spool, note_position, prefetch as wal_prefetch, repository_fingerprint,
    take_from_spool, tidy_spool, SpoolLock,
};
pub use wal::{wal_fetch, wal_push, PushOutcome, WalManifest};
