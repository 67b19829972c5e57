//! S3 storage backend for Holdfast repositories, over the official
//! aws-sdk-s3.
//!
//! Entry points: [`S3Config::from_url`] (`s3://bucket/prefix` plus the
//! environment overrides listed in [`config`]) and [`S3Backend::connect`],
//! which checks that the bucket is there and reachable and returns a
//! [`holdfast_storage::Backend`].
//!
//! What it adds over the plain trait:
//! - write-once puts with `If-None-Match: *`, CRC32C checksums, multipart
//!   upload for large objects ([`multipart`]);
//! - storage class per object kind (packs vs metadata), overridable per put,
//!   and moves between classes by a server-side copy onto the same key
//!   that carries the Object Lock retention (module `class`);
//! - Object Lock: retention (GOVERNANCE/COMPLIANCE, extended but never
//!   shortened) and legal holds; deletes on versioned buckets remove object
//!   versions, so a lock really protects and an unlocked delete really frees
//!   space ([`backend`] explains);
//! - archival tiers: [`holdfast_storage::Backend::archive_state`],
//!   `restore_archived`, and [`S3Backend::restore_and_wait`];
//! - retries with exponential backoff and full jitter, attempt timeouts
//!   that catch stalled connections, and a bound on requests in flight
//!   ([`retry`]).

pub mod backend;
mod class;
mod client;
pub mod config;
mod failure;
mod keylock;
pub mod multipart;
pub mod retry;

pub use backend::S3Backend;
pub use config::{S3Config, S3Credentials};
