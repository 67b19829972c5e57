//! The Holdfast repository format.
//!
//! Everything about how backups are laid out and protected lives here:
//! content-defined chunking ([`chunker`]), keyed blob ids and authenticated
//! encryption ([`crypto`]), per-blob compression ([`compress`]), packs
//! ([`pack`]), the index ([`index`]), trees ([`tree`]), snapshots
//! ([`snapshot`]), key slots ([`keys`]), the config header ([`config`]), the
//! object envelope and its name binding ([`object`]), WAL manifests
//! ([`walmanifest`]), deletion records and purges ([`forget`]), verification
//! records ([`verification`]), the hash-chained audit trail and its
//! electronic signatures ([`audit`]), the GDPR erasure register ([`erasure`]), the concurrent blob writer ([`writer`]),
//! integrity checking ([`check`]), reachability from snapshots and WAL
//! manifests ([`reach`]), storage tiers of packs ([`tier`]) and format
//! upgrades ([`migrate`]).
//! `docs/format.md` at the repository root specifies every object.
//!
//! Architecture invariant: this crate knows nothing of S3, PostgreSQL, cron,
//! clap or terminals. It talks to storage only through
//! `holdfast_storage::Backend` and never prints.

pub mod audit;
pub mod cache;
pub mod check;
pub mod chunker;
pub mod compress;
pub mod config;
pub mod crypto;
pub mod drill;
pub mod erasure;
mod error;
pub mod forget;
pub mod gc;
pub mod hold;
pub mod id;
pub mod index;
mod kdfmem;
pub mod keys;
pub mod lease;
pub mod legalhold;
pub mod migrate;
pub mod object;
pub mod pack;
mod pack_stream;
pub mod prefetch;
pub mod reach;
pub mod reader;
pub mod records;
pub mod repair;
pub mod repository;
pub mod retention;
pub mod snapshot;
pub mod stats;
pub mod tier;
pub mod tree;
pub mod verification;
pub mod walmanifest;
pub mod writer;

pub use error::{Class, RepoError, Result, SlotCounts};
pub use id::Id;
pub use repository::Repository;

/// This machine's host name, for snapshots and key slots: the kernel's,
/// never `$HOSTNAME` (a shell variable the caller may set to anything, and
/// libraries read no environment).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(gethostname)
        .unwrap_or_else(|| "unknown".into())
}

fn gethostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at
    // most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
    (!name.is_empty()).then_some(name)
}

/// The current user's name, for snapshots, key slots and audit entries:
/// the passwd name of the real uid (not `$USER`, which the caller's
/// environment may set to anything, and which is unset under cron or
/// `runuser`), or `uid N` when the uid has no name.
pub fn username() -> String {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    passwd_name(uid).unwrap_or_else(|| format!("uid {uid}"))
}

/// The passwd entry's name for `uid`, if there is one.
fn passwd_name(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: a zeroed passwd is a valid out-parameter; buf outlives the call.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and buf.len() is its size.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: on success pw_name points at a NUL-terminated string in buf.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}
