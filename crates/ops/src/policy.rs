//! Retention: loading policy files and planning what to keep, archive and
//! purge for the snapshots of a repository. The decisions are the policy
//! crate's; this module feeds it the repository's snapshots.

use std::collections::BTreeSet;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use holdfast_policy::{Decision, HoldCheck, NoHolds, PlanInput, Policy, PolicyError, SnapshotInfo};
use holdfast_repo::snapshot::SnapshotEntry;
use holdfast_repo::Repository;

use crate::error::{OpsError, Result};

/// Read and validate policy files; every error, each at file:line:column.
pub fn load(paths: &[PathBuf]) -> std::result::Result<Vec<Policy>, Vec<PolicyError>> {
    holdfast_policy::load_files(paths)
}

/// The planner's view of a snapshot.
pub fn snapshot_info(s: &SnapshotEntry) -> SnapshotInfo {
    SnapshotInfo {
        id: s.id.to_hex(),
        time: s.snapshot.time,
        source: s.snapshot.source.clone(),
        kind: s.snapshot.kind.clone(),
        tags: s.snapshot.tags.clone(),
        archived: false,
    }
}

/// What to plan for.
pub struct PlanConfig {
    pub policies: Vec<Policy>,
    /// The instant the plan is for (now, or a future date to preview).
    pub at: DateTime<Utc>,
}

/// The decision for every snapshot of `repo`, oldest first.
pub fn plan(repo: &Repository, cfg: &PlanConfig) -> Result<Vec<Decision>> {
    plan_with(repo, cfg, &NoHolds)
}

/// [`plan`] with the holds that protect snapshots (the holds issue passes
/// the repository's; tests pass stand-ins).
pub fn plan_with(
    repo: &Repository,
    cfg: &PlanConfig,
    holds: &dyn HoldCheck,
) -> Result<Vec<Decision>> {
    let snaps: Vec<SnapshotInfo> = repo.snapshots()?.iter().map(snapshot_info).collect();
    // Verification records come with drills and audited checks; until a
    // snapshot is recorded as verified, none is.
    let verified = BTreeSet::new();
    holdfast_policy::plan(&PlanInput {
        snapshots: &snaps,
        policies: &cfg.policies,
        now: cfg.at,
        verified: &verified,
        holds,
    })
    .map_err(OpsError::Invalid)
}
