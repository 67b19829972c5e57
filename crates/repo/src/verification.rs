//! Verification records (`verified/<random id>`): which snapshots a full
//! read of their data found good, how, and when.
//!
//! Written by `check --read-data` for every snapshot whose blobs it read
//! without an error, and by restore drills. Retention policies never purge
//! the newest still-existing snapshot of a source named by any record
//! ("last verified good"), so that at least one copy proved restorable
//! survives thinning. Records are sealed and bound to their names, so
//! someone without the key can delete them (which only makes retention
//! keep less by that rule, and `plan` shows it) but not forge one.

use chrono::{DateTime, Utc};
use holdfast_storage::ObjectKind;
use serde::{Deserialize, Serialize};

use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::records::{self, Records};
use crate::repository::Repository;

/// Version of the verification record.
pub const VERIFICATION_VERSION: u32 = 1;

/// One verification: these snapshots were read in full and found good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationRecord {
    pub version: u32,
    pub snapshots: Vec<Id>,
    /// How: `check --read-data`, `drill`.
    pub method: String,
    pub time: DateTime<Utc>,
    pub host: String,
}

impl VerificationRecord {
    /// A record of `snapshots` verified by `method` at `time` on this host.
    pub fn new(snapshots: Vec<Id>, method: &str, time: DateTime<Utc>) -> VerificationRecord {
        VerificationRecord {
            version: VERIFICATION_VERSION,
            snapshots,
            method: method.to_string(),
            time,
            host: crate::hostname(),
        }
    }
}

impl Repository {
    /// Store a verification record under a new random name; returns the
    /// name.
    pub fn put_verification(&self, r: &VerificationRecord) -> Result<String> {
        if r.snapshots.is_empty() {
            return Err(RepoError::Invalid(
                "a verification record must name at least one snapshot".into(),
            ));
        }
        loop {
            let name = hex::encode(rand::random::<[u8; 16]>());
            if records::put(self, ObjectKind::Verification, &name, r)? {
                return Ok(name);
            }
        }
    }

    /// Every verification record, and those that cannot be read or do not
    /// open, with why.
    pub fn verifications(&self) -> Result<Records<VerificationRecord>> {
        records::read_all(self, ObjectKind::Verification)
    }
}
