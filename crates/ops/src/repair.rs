//! Repairs: rebuilding index entries for packs no index lists, and putting
//! misplaced snapshot objects back. Neither deletes anything that is not
//! proved to be a damaged index object (see `holdfast_repo::repair`).

use holdfast_repo::repair::{self, RepairReport};
use holdfast_repo::Repository;

use holdfast_repo::audit::{Draft, Outcome};

use crate::audit;
use crate::error::Result;

/// Index every pack no index object lists; remove index objects that are
/// proved damaged; put misplaced objects back.
pub fn index(repo: &Repository) -> Result<RepairReport> {
    audited(repo, "repair index", || Ok(repair::repair_index(repo)?))
}

/// Put misplaced snapshot objects back; move what cannot be placed to
/// `lost+found/`.
pub fn snapshots(repo: &Repository) -> Result<RepairReport> {
    audited(repo, "repair snapshots", || {
        Ok(repair::repair_snapshots(repo)?)
    })
}

/// A repair with its audit entry: what it reindexed, removed and moved.
fn audited(
    repo: &Repository,
    operation: &str,
    op: impl FnOnce() -> Result<RepairReport>,
) -> Result<RepairReport> {
    let draft = Draft::new(operation, Outcome::Success);
    audit::audited(repo, draft, op, |r, d| {
        let mut d = d.arg("packs_reindexed", r.packs_reindexed);
        for o in &r.removed_index_objects {
            d = d.touch("removed", o.clone());
        }
        for o in r.placed.iter().chain(&r.moved_aside) {
            d = d.touch("moved", o.clone());
        }
        d
    })
}
