//! Repairs: rebuilding index entries for packs no index lists, and putting
//! misplaced snapshot objects back. Neither deletes anything that is not
//! proved to be a damaged index object (see `holdfast_repo::repair`).

use holdfast_repo::repair::{self, RepairReport};
use holdfast_repo::Repository;

use crate::error::Result;

/// Index every pack no index object lists; remove index objects that are
/// proved damaged; put misplaced objects back.
pub fn index(repo: &Repository) -> Result<RepairReport> {
    Ok(repair::repair_index(repo)?)
}

/// Put misplaced snapshot objects back; move what cannot be placed to
/// `lost+found/`.
pub fn snapshots(repo: &Repository) -> Result<RepairReport> {
    Ok(repair::repair_snapshots(repo)?)
}
