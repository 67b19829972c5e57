//! The Holdfast repository format.
//!
//! Everything about how backups are laid out and protected lives here:
//! content-defined chunking ([`chunker`]), keyed blob ids and authenticated
//! encryption ([`crypto`]), per-blob compression ([`compress`]), packs
//! ([`pack`]), the index ([`index`]), trees ([`tree`]), snapshots
//! ([`snapshot`]), key slots ([`keys`]), the config header ([`config`]), the
//! concurrent blob writer ([`writer`]) and integrity checking ([`check`]).
//! `docs/format.md` at the repository root specifies every object.
//!
//! Architecture invariant: this crate knows nothing of S3, PostgreSQL, cron,
//! clap or terminals. It talks to storage only through
//! `holdfast_storage::Backend` and never prints.

pub mod check;
pub mod chunker;
pub mod compress;
pub mod config;
pub mod crypto;
mod error;
pub mod id;
pub mod index;
pub mod keys;
pub mod object;
pub mod pack;
pub mod reader;
pub mod repair;
pub mod repository;
pub mod snapshot;
pub mod stats;
pub mod tree;
pub mod writer;

pub use error::{RepoError, Result};
pub use id::Id;
pub use repository::Repository;

/// This machine's host name, for snapshots and key slots.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// The current user's name, for snapshots, key slots and audit entries.
pub fn username() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| {
            // SAFETY: getuid has no preconditions.
            format!("uid {}", unsafe { libc_getuid() })
        })
}

extern "C" {
    #[link_name = "getuid"]
    fn libc_getuid() -> u32;
}
