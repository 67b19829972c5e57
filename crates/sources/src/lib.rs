//! Backup sources and restore targets for filesystem trees.
//!
//! [`backup`] walks paths into a snapshot (incremental against a parent),
//! [`restore`] writes a snapshot (or part of it) back to a directory in
//! parallel, [`walk`] lists a snapshot's tree, [`diff`] compares two.
//! [`meta`] turns `lstat` results into tree nodes and back.
//!
//! Architecture invariant: this crate knows the repository only through
//! `holdfast_repo`'s public API, and knows nothing of S3, terminals or clap.
//! It never prints; it reports progress through [`Progress`] counters that
//! the CLI polls.

pub mod backup;
pub mod cputime;
pub mod diff;
mod error;
pub mod exclude;
mod gather;
pub mod meta;
pub mod restore;
mod split;
pub mod verify;
pub mod walk;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub use error::{SourceError, SourceResult};

/// Counters a long operation updates and a UI may poll from another thread,
/// and the one flag the caller sets: [`Progress::stop`].
#[derive(Debug, Default)]
pub struct Progress {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
    /// Total bytes expected: known up front for a restore; for a backup,
    /// counted by a scanner running ahead of the backup (see `scan_done`).
    pub total_bytes: AtomicU64,
    /// Total files expected (as `total_bytes`).
    pub total_files: AtomicU64,
    /// True once `total_bytes` and `total_files` are final.
    pub scan_done: AtomicBool,
    pub errors: AtomicU64,
    /// Set by the caller (on SIGINT or SIGTERM) to make a backup stop reading,
    /// index what it has stored and return [`SourceError::Interrupted`].
    pub stop: AtomicBool,
}

impl Progress {
    /// Ask the operation to stop as soon as it can.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
    /// (files, total files, scan finished)
    pub fn file_totals(&self) -> (u64, u64, bool) {
        (
            self.files.load(Ordering::Relaxed),
            self.total_files.load(Ordering::Relaxed),
            self.scan_done.load(Ordering::Relaxed),
        )
    }
    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_file(&self) {
        self.files.fetch_add(1, Ordering::Relaxed);
    }
    /// The operation starts over (a backup whose walk ran before its
    /// lease and has to run again): counts and totals go back to zero.
    pub fn restart(&self) {
        for n in [
            &self.files,
            &self.bytes,
            &self.total_bytes,
            &self.total_files,
            &self.errors,
        ] {
            n.store(0, Ordering::Relaxed);
        }
        self.scan_done.store(false, Ordering::Relaxed);
    }
    pub fn get(&self) -> (u64, u64, u64) {
        (
            self.files.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
            self.total_bytes.load(Ordering::Relaxed),
        )
    }
}
