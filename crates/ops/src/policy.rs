//! Retention: loading policy files, planning what to keep, archive and
//! purge for the snapshots of a repository, and applying the plan. The
//! decisions are the policy crate's; this module feeds it the repository's
//! snapshots, verification records and holds, and carries out the purges.
//!
//! Physical PostgreSQL backups bring their WAL archive along: the WAL
//! manifests of a cluster whose base backups a policy decides are kept
//! from the start of the kept base backup that starts first, and the older
//! ones purged (`holdfast_policy::wal`).
//!
//! Applying is a dry run unless asked to delete. Snapshots the plan says
//! `archive` go to their policy's `archive_class` after the purges
//! ([`crate::archive`]; a dry run says what would move). A purge writes the
//! snapshot's sealed deletion record, then deletes its manifest
//! (`Repository::forget_snapshot`); the data it alone referenced becomes
//! garbage that `holdfast gc` reclaims. Before anything is deleted every
//! purge is checked again against the floor, the last verified snapshot
//! of its source and the holds, so a planner bug cannot delete what those
//! protect: the apply stops with an error instead.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use holdfast_policy::{
    Action, BaseBackup, Decision, HoldCheck, NoHolds, PlanInput, Policy, PolicyError, SnapshotInfo,
    WalDecision, WalFile,
};
use holdfast_repo::forget::{Forgotten, Tombstone};
use holdfast_repo::snapshot::SnapshotEntry;
use holdfast_repo::{Id, Repository};
use serde::Serialize;

use crate::archive::{self, ArchiveConfig, ArchiveReport};
use crate::error::{OpsError, Result};
use crate::holds::LiveHolds;
use crate::verification;

/// What a purge's deletion record says deleted the snapshot.
pub const PURGED_BY: &str = "policy apply";
/// The lease operation name of `policy apply --yes`.
pub const LEASE_OPERATION: &str = "policy-apply";

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

/// A plan: one decision per snapshot, oldest first.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub at: DateTime<Utc>,
    pub snapshots: Vec<Decision>,
    /// One decision per archived WAL file (WAL manifest), by cluster and
    /// name.
    pub wal: Vec<WalDecision>,
    /// What the plan could not take into account (unreadable verification
    /// records), for the caller to show.
    pub warnings: Vec<String>,
}

/// The plan for every snapshot of `repo`, with the repository's legal
/// holds (an unreadable hold record holds everything, with a warning).
pub fn plan(repo: &Repository, cfg: &PlanConfig) -> Result<Plan> {
    let holds = LiveHolds::new(repo);
    let mut plan = plan_with(repo, cfg, &holds)?;
    plan.warnings.extend(holds.warnings());
    Ok(plan)
}

/// [`plan`] without holds (what the plan would be if none were placed).
pub fn plan_unheld(repo: &Repository, cfg: &PlanConfig) -> Result<Plan> {
    plan_with(repo, cfg, &NoHolds)
}

/// [`plan`] with the holds that protect snapshots (the holds issue passes
/// the repository's; tests pass stand-ins).
pub fn plan_with(repo: &Repository, cfg: &PlanConfig, holds: &dyn HoldCheck) -> Result<Plan> {
    let entries = repo.snapshots()?;
    plan_entries(repo, cfg, holds, &entries).map(|(p, _)| p)
}

/// The plan for `entries`, and the verified set it was made with.
pub(crate) fn plan_entries(
    repo: &Repository,
    cfg: &PlanConfig,
    holds: &dyn HoldCheck,
    entries: &[SnapshotEntry],
) -> Result<(Plan, BTreeSet<String>)> {
    let snaps: Vec<SnapshotInfo> = entries.iter().map(snapshot_info).collect();
    let v = verification::verified(repo)?;
    let warnings = v
        .unreadable
        .iter()
        .map(|(name, why)| {
            format!(
                "verification record verified/{name} cannot be read and vouches for nothing: {why}"
            )
        })
        .collect();
    let mut warnings: Vec<String> = warnings;
    let decisions = holdfast_policy::plan(&PlanInput {
        snapshots: &snaps,
        policies: &cfg.policies,
        now: cfg.at,
        verified: &v.snapshots,
        holds,
    })
    .map_err(OpsError::Invalid)?;
    let mut decisions = decisions;
    note_erasures(repo, entries, &mut decisions, &mut warnings)?;
    let wal = plan_wal(repo, cfg, entries, &decisions, &mut warnings)?;
    Ok((
        Plan {
            at: cfg.at,
            snapshots: decisions,
            wal,
            warnings,
        },
        v.snapshots,
    ))
}

/// Each decision's `erasures`: those of the register whose subjects its
/// snapshot may still hold (GDPR Art. 17). Unreadable erasure records are
/// warned about: what they erase is unknown.
fn note_erasures(
    repo: &Repository,
    entries: &[SnapshotEntry],
    decisions: &mut [Decision],
    warnings: &mut Vec<String>,
) -> Result<()> {
    let register = repo.erasures()?;
    warnings.extend(crate::erasure::unreadable_warnings(&register));
    if register.erasures.is_empty() {
        return Ok(());
    }
    let by_id: BTreeMap<String, &SnapshotEntry> =
        entries.iter().map(|e| (e.id.to_hex(), e)).collect();
    for d in decisions {
        if let Some(e) = by_id.get(&d.snapshot) {
            d.erasures = crate::erasure::held_by(&register.erasures, e)
                .into_iter()
                .map(|x| x.id.clone())
                .collect();
        }
    }
    Ok(())
}

/// The order purges are carried out in: snapshots that still hold erased
/// subjects first (GDPR Art. 17: what must be put beyond use goes before
/// what merely aged out), then oldest first as planned. Stable.
fn purge_order(decisions: &mut [Decision]) {
    // `false` sorts first: purges that hold erasures.
    decisions.sort_by_key(|d| d.action != Action::Purge || d.erasures.is_empty());
}

/// The physical base backups among `entries`, as WAL retention sees them.
fn base_backups(entries: &[SnapshotEntry]) -> Vec<BaseBackup> {
    entries
        .iter()
        .filter(|e| e.snapshot.kind == holdfast_postgres::KIND_PHYSICAL)
        .filter_map(|e| {
            let meta = &e.snapshot.meta;
            // Written as a string; a number is accepted too.
            let cluster = match meta.get("system_identifier")? {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                _ => return None,
            };
            Some(BaseBackup {
                snapshot: e.id.to_hex(),
                time: e.snapshot.time,
                cluster,
                start_wal: meta
                    .get("start_wal")
                    .and_then(|v| v.as_str())
                    .map(str::to_string),
            })
        })
        .collect()
}

/// The decisions for the WAL archive, given those for the snapshots. The
/// manifests are read only when a policy decides some base backup (their
/// archive times count against floors); one that cannot be read is left
/// out, so never purged, and named in a warning.
fn plan_wal(
    repo: &Repository,
    cfg: &PlanConfig,
    entries: &[SnapshotEntry],
    decisions: &[Decision],
    warnings: &mut Vec<String>,
) -> Result<Vec<WalDecision>> {
    let backups = base_backups(entries);
    let governed = backups.iter().any(|b| {
        decisions
            .iter()
            .any(|d| d.snapshot == b.snapshot && d.policy.is_some())
    });
    if !governed {
        return Ok(Vec::new());
    }
    let (manifests, unreadable) = repo.wal_manifests()?;
    for (name, why) in unreadable {
        warnings.push(format!(
            "WAL manifest wal/{name} cannot be read; it is kept: {why}"
        ));
    }
    let files: Vec<WalFile> = manifests
        .into_iter()
        .map(|(_, m)| WalFile {
            cluster: m.cluster,
            name: m.name,
            archived_at: m.archived_at,
        })
        .collect();
    Ok(holdfast_policy::plan_wal(
        &cfg.policies,
        decisions,
        &backups,
        &files,
        cfg.at,
    ))
}

/// What applying did (or, in a dry run, would do) with one snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Kept, as planned.
    Kept,
    /// Dry run: would be purged.
    WouldPurge,
    /// Deletion record written and manifest deleted.
    Purged,
    /// Already gone (an earlier run, or one running beside this one).
    AlreadyGone,
    /// To be purged, but Object Lock (retention or a legal hold on the
    /// manifest) refuses: kept, and retried by a later run.
    KeptLocked,
    /// Dry run: would be archived (its data packs that no hot snapshot
    /// needs would move to its policy's `archive_class`).
    WouldArchive,
    /// Archived: every data pack that only archived snapshots need is in
    /// its policy's `archive_class` (moved now, or by an earlier run).
    Archived,
    /// To be archived, but the repository's storage has no storage
    /// classes (a local directory): kept where it is, with a warning.
    ArchiveNotPossible,
}

/// One snapshot's decision and what was done.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    #[serde(flatten)]
    pub decision: Decision,
    pub outcome: Outcome,
    /// Why a purge was refused (the lock), when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// One WAL file's decision and what was done.
#[derive(Debug, Clone, Serialize)]
pub struct AppliedWal {
    #[serde(flatten)]
    pub decision: WalDecision,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What `policy apply` did.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    pub at: DateTime<Utc>,
    /// False for a dry run (nothing was changed).
    pub deleted: bool,
    pub snapshots: Vec<Applied>,
    /// The archival runs, one per archive class in use (see
    /// [`crate::archive`]).
    pub archival: Vec<ArchiveReport>,
    /// The WAL archive: decided after the snapshots were purged, with a
    /// base backup whose purge Object Lock refused counted as kept.
    pub wal: Vec<AppliedWal>,
    pub warnings: Vec<String>,
}

impl ApplyReport {
    /// How many snapshots ended with `o`.
    pub fn count(&self, o: Outcome) -> usize {
        self.snapshots.iter().filter(|a| a.outcome == o).count()
    }

    /// How many WAL files ended with `o`.
    pub fn count_wal(&self, o: Outcome) -> usize {
        self.wal.iter().filter(|a| a.outcome == o).count()
    }
}

/// How to apply.
pub struct ApplyConfig {
    pub plan: PlanConfig,
    /// Delete (`--yes`); otherwise a dry run.
    pub delete: bool,
}

/// Apply the policies, with the repository's legal holds, read after
/// the lease is taken and the snapshots listed (an unreadable hold record
/// holds everything, with a warning).
pub fn apply(repo: &Repository, cfg: &ApplyConfig) -> Result<ApplyReport> {
    let holds = LiveHolds::new(repo);
    let mut report = apply_with(repo, cfg, &holds)?;
    report.warnings.extend(holds.warnings());
    Ok(report)
}

/// Plan, then (with `cfg.delete`) purge every snapshot the plan says
/// `purge`, under a shared lease. Never one under its policy's floor,
/// the newest verified snapshot of its source, or one `holds` protects:
/// these are checked again before anything is deleted.
///
/// A run that deletes (`cfg.delete`) is audited as `policy apply`: the
/// policies, and every snapshot purged or archived and WAL file purged.
pub fn apply_with(
    repo: &Repository,
    cfg: &ApplyConfig,
    holds: &dyn HoldCheck,
) -> Result<ApplyReport> {
    if !cfg.delete {
        return apply_unaudited(repo, cfg, holds);
    }
    let mut draft =
        holdfast_repo::audit::Draft::new("policy apply", holdfast_repo::audit::Outcome::Success)
            .arg("at", cfg.plan.at.to_rfc3339());
    let names: Vec<String> = cfg.plan.policies.iter().map(|p| p.name.clone()).collect();
    draft = draft.arg("policies", names);
    crate::audit::audited(
        repo,
        draft,
        || apply_unaudited(repo, cfg, holds),
        |r, mut d| {
            for a in &r.snapshots {
                let what = match a.outcome {
                    Outcome::Purged => "purged",
                    Outcome::Archived => "archived",
                    _ => continue,
                };
                d = d.touch("snapshot", format!("{} ({what})", a.decision.snapshot));
            }
            for w in r.wal.iter().filter(|w| w.outcome == Outcome::Purged) {
                d = d.touch(
                    "wal",
                    format!("{}-{} (purged)", w.decision.cluster, w.decision.name),
                );
            }
            d
        },
    )
}

fn apply_unaudited(
    repo: &Repository,
    cfg: &ApplyConfig,
    holds: &dyn HoldCheck,
) -> Result<ApplyReport> {
    if cfg.delete && cfg.plan.at > repo.now() + chrono::Duration::minutes(5) {
        return Err(OpsError::invalid(format!(
            "--at {} is in the future: a plan for a later date may purge snapshots that the floor protects today; preview it with `policy plan --at`, apply it when the date comes",
            cfg.plan.at.to_rfc3339()
        )));
    }
    // The lease before the listing: what is deleted was listed under it.
    let lease = if cfg.delete {
        Some(repo.writer_lease(LEASE_OPERATION)?)
    } else {
        None
    };
    let entries = repo.snapshots()?;
    let (plan, verified) = plan_entries(repo, &cfg.plan, holds, &entries)?;
    let by_id: BTreeMap<String, &SnapshotEntry> =
        entries.iter().map(|e| (e.id.to_hex(), e)).collect();
    if cfg.delete {
        guard(&plan, &cfg.plan.policies, &entries, &verified, holds)?;
    }
    let mut report = ApplyReport {
        at: plan.at,
        deleted: cfg.delete,
        snapshots: Vec::with_capacity(plan.snapshots.len()),
        archival: Vec::new(),
        wal: Vec::new(),
        warnings: plan.warnings,
    };
    let planned_wal = plan.wal;
    let mut decisions = plan.snapshots;
    purge_order(&mut decisions);
    for d in decisions {
        let (outcome, detail) = match d.action {
            Action::Keep => (Outcome::Kept, None),
            // Settled below, once the purges are done, by archive class.
            Action::Archive => (Outcome::WouldArchive, None),
            Action::Purge if !cfg.delete => (Outcome::WouldPurge, None),
            Action::Purge => {
                if let Some(l) = &lease {
                    l.check()?;
                }
                let entry = by_id.get(&d.snapshot).ok_or_else(|| {
                    OpsError::invalid(format!("snapshot {} is not in the listing", d.snapshot))
                })?;
                let t = Tombstone::new(entry, PURGED_BY, d.policy.as_deref(), &d.rule, repo.now());
                match repo.forget_snapshot(&t).map_err(|e| {
                    OpsError::from(e).context(format!("purging snapshot {}", d.snapshot))
                })? {
                    Forgotten::Deleted => (Outcome::Purged, None),
                    Forgotten::AlreadyGone => (Outcome::AlreadyGone, None),
                    Forgotten::Locked { detail, .. } => (Outcome::KeptLocked, Some(detail)),
                }
            }
        };
        report.snapshots.push(Applied {
            decision: d,
            outcome,
            detail,
        });
    }
    // The WAL: as planned, unless a base backup's purge was refused, in
    // which case it stays and its WAL with it.
    let wal = if report.count(Outcome::KeptLocked) == 0 {
        planned_wal
    } else {
        let decisions: Vec<Decision> = report
            .snapshots
            .iter()
            .map(|a| {
                let mut d = a.decision.clone();
                if a.outcome == Outcome::KeptLocked {
                    d.action = Action::Keep;
                }
                d
            })
            .collect();
        plan_wal(repo, &cfg.plan, &entries, &decisions, &mut report.warnings)?
    };
    if cfg.delete {
        guard_wal(&wal, &report.snapshots, &entries)?;
    }
    for d in wal {
        let (outcome, detail) = match d.action {
            Action::Keep | Action::Archive => (Outcome::Kept, None),
            Action::Purge if !cfg.delete => (Outcome::WouldPurge, None),
            Action::Purge => {
                if let Some(l) = &lease {
                    l.check()?;
                }
                let name = format!("{}-{}", d.cluster, d.name);
                match repo.forget_wal_manifest(&name).map_err(|e| {
                    OpsError::from(e).context(format!("purging WAL manifest wal/{name}"))
                })? {
                    Forgotten::Deleted => (Outcome::Purged, None),
                    Forgotten::AlreadyGone => (Outcome::AlreadyGone, None),
                    Forgotten::Locked { detail, .. } => (Outcome::KeptLocked, Some(detail)),
                }
            }
        };
        report.wal.push(AppliedWal {
            decision: d,
            outcome,
            detail,
        });
    }
    if let Some(l) = lease {
        l.release()?;
    }
    archive_decided(repo, cfg, &mut report)?;
    Ok(report)
}

/// Carry out (or, dry, preview) the `archive` decisions of `report`, one
/// archival run per archive class, after the purges: a purged snapshot
/// is then neither hot nor cold, and in a dry run the snapshots it would
/// purge are left out the same way. Packs shared by snapshots archived
/// to different classes stay hot (each run counts the other's snapshots
/// as hot).
fn archive_decided(repo: &Repository, cfg: &ApplyConfig, report: &mut ApplyReport) -> Result<()> {
    let mut by_class: BTreeMap<String, BTreeSet<Id>> = BTreeMap::new();
    let mut leaving = BTreeSet::new();
    for a in &report.snapshots {
        let id = a.decision.snapshot.parse::<Id>().map_err(|e| {
            OpsError::invalid(format!("snapshot id {:?}: {e}", a.decision.snapshot))
        })?;
        match a.decision.action {
            Action::Archive => {
                let policy = cfg
                    .plan
                    .policies
                    .iter()
                    .find(|p| Some(&p.name) == a.decision.policy.as_ref())
                    .ok_or_else(|| {
                        OpsError::invalid(format!(
                            "snapshot {} is to be archived by policy {:?}, which is not loaded",
                            a.decision.snapshot, a.decision.policy
                        ))
                    })?;
                by_class
                    .entry(policy.archive_class.clone())
                    .or_default()
                    .insert(id);
            }
            Action::Purge if a.outcome == Outcome::WouldPurge => {
                leaving.insert(id);
            }
            _ => {}
        }
    }
    for (class, snapshots) in by_class {
        let done = archive::archive(
            repo,
            &ArchiveConfig {
                snapshots: snapshots.clone(),
                leaving: leaving.clone(),
                class: class.clone(),
                dry_run: !cfg.delete,
            },
            &|_, _| {},
        )
        .map_err(|e| {
            e.context(format!(
                "archiving {} snapshot(s) to {class}",
                snapshots.len()
            ))
        })?;
        let outcome = match (done.supported, done.dry_run) {
            (false, _) => Outcome::ArchiveNotPossible,
            (true, true) => Outcome::WouldArchive,
            (true, false) => Outcome::Archived,
        };
        for a in report.snapshots.iter_mut() {
            if a.decision.action == Action::Archive
                && a.decision
                    .snapshot
                    .parse::<Id>()
                    .is_ok_and(|id| snapshots.contains(&id))
            {
                a.outcome = outcome;
            }
        }
        report.warnings.extend(done.warnings.iter().cloned());
        report.archival.push(done);
    }
    Ok(())
}

/// Check every WAL purge again, independently of the WAL planner, before
/// any WAL is deleted: a segment must lie before the start of every base
/// backup of its cluster that stays (kept, archived, or refused as
/// locked), a timeline history below all of their timelines; with none
/// staying, before the newest one's start. Anything else is a planner bug:
/// no WAL is deleted.
fn guard_wal(wal: &[WalDecision], applied: &[Applied], entries: &[SnapshotEntry]) -> Result<()> {
    let staying: BTreeSet<&str> = applied
        .iter()
        .filter(|a| {
            !matches!(
                a.outcome,
                Outcome::Purged | Outcome::AlreadyGone | Outcome::WouldPurge
            )
        })
        .map(|a| a.decision.snapshot.as_str())
        .collect();
    // Per cluster: the starts (timeline, position) that bound purges.
    let mut bounds: BTreeMap<String, Vec<WalStart>> = BTreeMap::new();
    let mut newest: BTreeMap<String, (DateTime<Utc>, String, Option<WalStart>)> = BTreeMap::new();
    for b in base_backups(entries) {
        let start = b.start_wal.as_deref().and_then(segment_of);
        if staying.contains(b.snapshot.as_str()) {
            match start {
                Some(s) => bounds.entry(b.cluster.clone()).or_default().push(s),
                // Unknown start: nothing of the cluster may go.
                None => bounds
                    .entry(b.cluster.clone())
                    .or_default()
                    .push((0, (0, 0))),
            }
        }
        // The planner's "newest": latest time, ties by id.
        let n = newest
            .entry(b.cluster.clone())
            .or_insert((b.time, b.snapshot.clone(), start));
        if (b.time, &b.snapshot) >= (n.0, &n.1) {
            *n = (b.time, b.snapshot.clone(), start);
        }
    }
    for d in wal.iter().filter(|d| d.action == Action::Purge) {
        let refuse = |why: &str| {
            Err(OpsError::invalid(format!(
                "refusing to purge WAL file {} of cluster {} ({}): {why}; no WAL was deleted",
                d.name, d.cluster, d.rule
            )))
        };
        let limits: Vec<WalStart> = match bounds.get(&d.cluster) {
            Some(b) if !b.is_empty() => b.clone(),
            _ => match newest.get(&d.cluster) {
                Some((_, _, Some(s))) => vec![*s],
                _ => return refuse("its cluster has no base backup with a known start"),
            },
        };
        if let Some(tl) = d.name.strip_suffix(".history") {
            let Ok(tl) = u32::from_str_radix(tl, 16) else {
                return refuse("not a timeline history name");
            };
            if limits.iter().any(|(ktl, _)| tl >= *ktl) {
                return refuse("a base backup that stays is on that timeline or an earlier one");
            }
        } else {
            let Some((_, pos)) = segment_of(&d.name) else {
                return refuse("not a WAL file name");
            };
            if limits.iter().any(|(_, start)| pos >= *start) {
                return refuse("a base backup that stays starts at or before it");
            }
        }
    }
    Ok(())
}

/// Timeline and position (log, segment) of a WAL segment.
type WalStart = (u32, (u32, u32));

/// Timeline and position of a name that starts with a WAL segment name.
fn segment_of(name: &str) -> Option<WalStart> {
    let hex = |r: std::ops::Range<usize>| {
        name.get(r)
            .filter(|s| s.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|s| u32::from_str_radix(s, 16).ok())
    };
    Some((hex(0..8)?, (hex(8..16)?, hex(16..24)?)))
}

/// Check every purge of `plan` again, independently of the planner, before
/// anything is deleted: not under its policy's floor, not the newest
/// verified snapshot of its source, not held. A purge that fails one is a
/// planner bug: nothing is deleted.
fn guard(
    plan: &Plan,
    policies: &[Policy],
    entries: &[SnapshotEntry],
    verified: &BTreeSet<String>,
    holds: &dyn HoldCheck,
) -> Result<()> {
    let mut newest_verified: BTreeMap<&str, &SnapshotEntry> = BTreeMap::new();
    for e in entries.iter().filter(|e| verified.contains(&e.id.to_hex())) {
        let slot = newest_verified
            .entry(e.snapshot.source.as_str())
            .or_insert(e);
        if (e.snapshot.time, e.id) > (slot.snapshot.time, slot.id) {
            *slot = e;
        }
    }
    let by_id: BTreeMap<String, &SnapshotEntry> =
        entries.iter().map(|e| (e.id.to_hex(), e)).collect();
    for d in plan.snapshots.iter().filter(|d| d.action == Action::Purge) {
        let refuse = |why: String| {
            Err(OpsError::invalid(format!(
                "refusing to apply: the plan purges snapshot {} ({}), but {why}; nothing was deleted",
                d.snapshot, d.rule
            )))
        };
        let Some(entry) = by_id.get(&d.snapshot) else {
            return refuse("it is not in the listing".into());
        };
        let held = holds.holds(&snapshot_info(entry));
        if !held.is_empty() {
            return refuse(format!("it is held by {}", held.join(", ")));
        }
        if newest_verified
            .get(entry.snapshot.source.as_str())
            .is_some_and(|v| v.id == entry.id)
        {
            return refuse(format!(
                "it is the last verified good snapshot of source {:?}",
                entry.snapshot.source
            ));
        }
        let policy = policies.iter().find(|p| Some(&p.name) == d.policy.as_ref());
        let Some(policy) = policy else {
            return refuse("no policy of that name selects it".into());
        };
        if let Some(f) = policy.floor {
            let until = f.after(&entry.snapshot.time.with_timezone(&policy.timezone));
            if until > plan.at {
                return refuse(format!("its floor {f} lasts until {}", until.to_rfc3339()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn physical(id: char, day: u32, start: &str) -> SnapshotEntry {
        let snapshot = serde_json::from_value(serde_json::json!({
            "time": format!("2026-03-{day:02}T00:00:00Z"),
            "hostname": "db1", "username": "postgres", "source": "ehr-cluster",
            "kind": "postgres-physical", "paths": [], "tree": "0".repeat(64),
            "program_version": "test",
            "meta": { "system_identifier": "7", "start_wal": start }
        }))
        .expect("snapshot");
        SnapshotEntry {
            id: id.to_string().repeat(64).parse().expect("id"),
            snapshot,
        }
    }

    fn applied(e: &SnapshotEntry, outcome: Outcome) -> Applied {
        Applied {
            decision: Decision {
                snapshot: e.id.to_hex(),
                time: e.snapshot.time,
                source: e.snapshot.source.clone(),
                kind: e.snapshot.kind.clone(),
                action: if outcome == Outcome::Purged {
                    Action::Purge
                } else {
                    Action::Keep
                },
                rule: "test".into(),
                policy: Some("pitr".into()),
                erasures: Vec::new(),
            },
            outcome,
            detail: None,
        }
    }

    fn purge(name: &str) -> WalDecision {
        WalDecision {
            cluster: "7".into(),
            name: name.into(),
            action: Action::Purge,
            rule: "test".into(),
            policy: Some("pitr".into()),
        }
    }

    /// The WAL guard refuses any purge the planner should not have made:
    /// at or after the start of a base backup that stays (kept or refused
    /// as locked), a history of a timeline a staying backup is on, a name
    /// it cannot place, a cluster without known starts.
    #[test]
    fn the_wal_guard_refuses_what_a_staying_base_backup_needs() {
        let old = physical('a', 1, "000000010000000000000002");
        let kept = physical('b', 5, "000000020000000000000008");
        let entries = [old.clone(), kept.clone()];
        let outcomes = [
            applied(&old, Outcome::Purged),
            applied(&kept, Outcome::Kept),
        ];
        for fine in [
            "000000010000000000000003",
            "000000010000000000000002.00000028.backup",
            "000000020000000000000007",
            "00000001.history",
        ] {
            guard_wal(&[purge(fine)], &outcomes, &entries).expect(fine);
        }
        for bad in [
            "000000020000000000000008",
            "000000010000000000000009",
            "00000002.history",
            "00000003.history",
            "something-else",
        ] {
            let e = guard_wal(&[purge(bad)], &outcomes, &entries).expect_err(bad);
            assert!(e.to_string().contains("no WAL was deleted"), "{e}");
        }
        // The older backup refused as locked stays: its WAL stays too.
        let locked = [
            applied(&old, Outcome::KeptLocked),
            applied(&kept, Outcome::Kept),
        ];
        guard_wal(&[purge("000000010000000000000003")], &locked, &entries).expect_err("locked");
        // Another cluster, of which there is no base backup: refused.
        let mut other = purge("000000010000000000000001");
        other.cluster = "8".into();
        guard_wal(&[other], &outcomes, &entries).expect_err("no backup");
    }
}
