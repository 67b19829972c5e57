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
pub mod diff;
mod error;
pub mod meta;
pub mod restore;
pub mod walk;

use std::sync::atomic::{AtomicU64, Ordering};

pub use error::{SourceError, SourceResult};

/// Counters a long operation updates and a UI may poll from another thread.
#[derive(Debug, Default)]
pub struct Progress {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
    /// Total bytes expected, when known (restore), else 0.
    pub total_bytes: AtomicU64,
    pub errors: AtomicU64,
}

impl Progress {
    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_file(&self) {
        self.files.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> (u64, u64, u64) {
        (
            self.files.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
            self.total_bytes.load(Ordering::Relaxed),
        )
    }
}
