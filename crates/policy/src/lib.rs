//! Retention policy files and the retention planner: pure logic, no I/O
//! beyond reading the files it is given, no repository, no clock (the
//! caller passes "now").
//!
//! A policy file (`policies/*.toml`) holds `[[policy]]` tables; each
//! selects snapshots (source name or glob, kinds, tags) and says what to
//! keep (restic's keep rules), what must never be purged (a compliance
//! floor), what must be purged (a maximum age), and when to archive. The
//! planner turns policies and a list of snapshots into one decision per
//! snapshot (keep, archive or purge) with the rule that made it, and
//! ([`wal`]) the archived PostgreSQL WAL that the kept base backups need.
//!
//! Masking files ([`masking`], `policies/masking/*.toml`) say what a
//! masked restore for staging does to each table, column and file.
//!
//! **Architecture invariant:** knows nothing of repositories, storage,
//! S3 or the CLI; it decides, the application layer acts.

pub mod duration;
mod file;
mod glob;
pub mod masking;
pub mod plan;
pub mod wal;

pub use duration::Span;
pub use file::{
    load_files, load_settings, parse_settings, parse_str, Keep, Policy, PolicyError, Selector,
    Settings,
};
pub use plan::{plan, Action, Decision, HoldCheck, NoHolds, PlanInput, SnapshotInfo};
pub use wal::{plan_wal, BaseBackup, WalDecision, WalFile};
