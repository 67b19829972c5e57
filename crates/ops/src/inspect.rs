//! Read-only operations: listing snapshots (with each cluster's
//! recoverable point), statistics, differences between snapshots.

use holdfast_postgres as pg;
use holdfast_repo::snapshot::{SnapshotEntry, SnapshotFilter};
use holdfast_repo::stats::Stats;
use holdfast_repo::Repository;
use holdfast_sources::diff::{self, DiffEntry};

use crate::error::Result;
use crate::restore::SnapshotSpec;

/// The snapshots a listing shows.
pub struct SnapshotList {
    /// Readable snapshots the filter admits, oldest first.
    pub snapshots: Vec<SnapshotEntry>,
    /// Snapshot objects that cannot be read: (name, why).
    pub unreadable: Vec<(String, String)>,
    /// The latest recoverable point of every PostgreSQL cluster listed.
    pub recovery_points: Vec<pg::ClusterRecoveryPoint>,
}

/// The snapshots of `repo` that `filter` admits.
pub fn snapshots(repo: &Repository, filter: &SnapshotFilter) -> Result<SnapshotList> {
    let (list, bad) = repo.snapshots_with_errors()?;
    let snapshots: Vec<SnapshotEntry> = list
        .into_iter()
        .filter(|s| filter.matches(&s.snapshot))
        .collect();
    let recovery_points = pg::recovery_points(repo, &snapshots)?;
    Ok(SnapshotList {
        snapshots,
        unreadable: bad
            .into_iter()
            .map(|(name, e)| (name, e.to_string()))
            .collect(),
        recovery_points,
    })
}

/// Statistics of one snapshot (`Some`) or of every snapshot the filter admits.
pub fn stats(
    repo: &Repository,
    one: Option<&SnapshotSpec>,
    filter: &SnapshotFilter,
) -> Result<Stats> {
    repo.load_index()?;
    let snaps = match one {
        Some(spec) => vec![spec.find(repo)?],
        None => repo
            .snapshots()?
            .into_iter()
            .filter(|s| filter.matches(&s.snapshot))
            .collect(),
    };
    Ok(holdfast_repo::stats::stats(repo, &snaps)?)
}

/// What changed from snapshot `a` to snapshot `b`.
pub fn diff(repo: &Repository, a: &SnapshotSpec, b: &SnapshotSpec) -> Result<Vec<DiffEntry>> {
    repo.load_index()?;
    let sa = a.find(repo)?;
    let sb = b.find(repo)?;
    Ok(diff::diff(repo, sa.snapshot.tree, sb.snapshot.tree)?)
}
