//! Verification records: writing one when a snapshot was read in full and
//! found good (`check --read-data`, restore drills), and reading them all
//! for retention ("the last verified good snapshot of a source is never
//! purged").

use std::collections::BTreeSet;

use holdfast_repo::verification::VerificationRecord;
use holdfast_repo::{Id, Repository};

use crate::error::{OpsError, Result};

/// The method `check --read-data` records.
pub const METHOD_CHECK: &str = "check --read-data";
/// The method restore drills record.
pub const METHOD_DRILL: &str = "drill";

/// Record that `snapshots` were verified by `method` now; returns the
/// record's object name (`verified/<name>`). Call it only for snapshots
/// whose every blob was read and found good.
pub fn record(repo: &Repository, snapshots: &[Id], method: &str) -> Result<String> {
    if snapshots.is_empty() {
        return Err(OpsError::invalid(
            "no snapshot to record as verified".to_string(),
        ));
    }
    let r = VerificationRecord::new(snapshots.to_vec(), method, repo.now());
    Ok(repo.put_verification(&r)?)
}

/// Every snapshot id named by a readable verification record, and the
/// records that cannot be read (name, why): those vouch for nothing.
pub struct Verified {
    pub snapshots: BTreeSet<String>,
    pub unreadable: Vec<(String, String)>,
}

/// Read every verification record.
pub fn verified(repo: &Repository) -> Result<Verified> {
    let (records, unreadable) = repo.verifications()?;
    let snapshots = records
        .iter()
        .flat_map(|(_, r)| r.snapshots.iter().map(Id::to_hex))
        .collect();
    Ok(Verified {
        snapshots,
        unreadable,
    })
}
