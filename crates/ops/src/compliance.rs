//! The compliance evidence report: reads the evidence every control
//! needs from the repository (snapshots, drill records, key slots, the
//! audit trail and its verification, signers, holds, the erasure
//! register, the restores on the trail, the Object Lock settings), plans
//! retention with the given policies, and hands it all to
//! `holdfast-compliance`, which judges and renders.
//!
//! `at` limits every record to those made at or before it (snapshots,
//! drills, key slots, entries, holds and releases, erasures). What cannot
//! be rewound is said so in the report: the audit trail is verified as
//! stored now, hold coverage and the forecast's source sizes are today's.
//!
//! Reading only: nothing is written to the repository (the report is no
//! operation on the data; it leaves no audit entry).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use holdfast_compliance::evidence::{self as ev, Evidence};
use holdfast_compliance::{Head, Report};
use holdfast_policy::{Policy, Span};
use holdfast_repo::hold::HoldSelector;
use holdfast_repo::snapshot::SnapshotEntry;
use holdfast_repo::Repository;

use crate::error::{OpsError, Result};
use crate::holds::LiveHolds;
use crate::policy::{self as ops_policy, PlanConfig};

/// Restores on the audit trail the erasure control examines.
pub const RESTORES_EXAMINED: usize = 20;

/// What the report is made from, besides the repository.
#[derive(Debug, Clone)]
pub struct ComplianceConfig {
    /// The instant evaluated.
    pub at: DateTime<Utc>,
    /// When the report is made.
    pub now: DateTime<Utc>,
    /// The repository as the caller named it (`/srv/repo`, `s3://…`).
    pub repository: String,
    pub host: String,
    /// `holdfast.toml`: the sources and their RPO.
    pub config: Option<holdfast_config::Config>,
    /// Policy files and what they hold (validated by the caller).
    pub policy_files: Vec<PathBuf>,
    pub policies: Vec<Policy>,
    /// Playbooks the drills are judged against; empty: those of the
    /// drill history.
    pub playbooks: Vec<holdfast_drill::Playbook>,
}

/// Gather the evidence and judge every control.
pub fn report(repo: &Repository, cfg: &ComplianceConfig) -> Result<Report> {
    let (evidence, warnings) = gather(repo, cfg)?;
    let controls = holdfast_compliance::controls::evaluate(&evidence);
    Ok(Report::new(
        Head {
            generated_at: cfg.now,
            at: cfg.at,
            repository: cfg.repository.clone(),
            repository_id: repo.config().id.to_hex(),
            host: cfg.host.clone(),
        },
        controls,
        warnings,
    ))
}

/// The evidence, and warnings about what could not be read.
pub fn gather(repo: &Repository, cfg: &ComplianceConfig) -> Result<(Evidence, Vec<String>)> {
    let at = cfg.at;
    let mut warnings = Vec::new();
    let (all_snapshots, unreadable) = repo.snapshots_with_errors()?;
    for (name, why) in &unreadable {
        warnings.push(format!("snapshot {name} cannot be read: {why}"));
    }
    let snapshots: Vec<SnapshotEntry> = all_snapshots
        .iter()
        .filter(|s| s.snapshot.time <= at)
        .cloned()
        .collect();
    let backups = backups(cfg, &snapshots, &mut warnings);
    let drills = drills(repo, cfg, &snapshots)?;
    let encryption = encryption(repo, at)?;
    // Read once: the audit control and the restores both need it.
    let chain = repo.audit_entries()?;
    let audit = audit(repo, at, &chain, &all_snapshots)?;
    let retention = retention(repo, cfg, &snapshots)?;
    let holds = holds(repo, at, &all_snapshots)?;
    let caps = repo.capabilities();
    let object_lock = ev::ObjectLock {
        storage: if cfg.repository.starts_with("s3://") {
            "S3".into()
        } else {
            "local directory".into()
        },
        retention: caps.retention,
        legal_hold: caps.legal_hold,
        configured: repo
            .config()
            .lock
            .as_ref()
            .map(|l| (l.mode.clone(), l.days)),
    };
    let erasures = erasures(repo, at, &all_snapshots, &chain)?;
    Ok((
        Evidence {
            at,
            backups,
            drills,
            encryption,
            audit,
            retention,
            holds,
            object_lock,
            erasures,
        },
        warnings,
    ))
}

fn same_repository(url: &str, named: &str) -> bool {
    if url == named {
        return true;
    }
    if url.starts_with("s3://") || named.starts_with("s3://") {
        return url.trim_end_matches('/') == named.trim_end_matches('/');
    }
    match (
        Path::new(url).canonicalize(),
        Path::new(named).canonicalize(),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The sources expected in this repository: with a configuration, each
/// source unless every backup job of it writes to another of the
/// configuration's repositories (when none of them is this repository,
/// all sources, with a warning); without one, every source stored.
fn backups(
    cfg: &ComplianceConfig,
    snapshots: &[SnapshotEntry],
    warnings: &mut Vec<String>,
) -> ev::Backups {
    let mut stored: BTreeMap<&str, Vec<ev::Snap>> = BTreeMap::new();
    for s in snapshots {
        stored
            .entry(s.snapshot.source.as_str())
            .or_default()
            .push(ev::Snap {
                id: s.id.to_hex(),
                time: s.snapshot.time,
                kind: s.snapshot.kind.clone(),
            });
    }
    for v in stored.values_mut() {
        v.sort_by_key(|s| s.time);
    }
    let mut sources = Vec::new();
    let config_file = cfg.config.as_ref().map(|c| c.file.display().to_string());
    if let Some(c) = &cfg.config {
        let here: BTreeSet<&str> = c
            .repositories
            .values()
            .filter(|r| same_repository(&r.url, &cfg.repository))
            .map(|r| r.name.as_str())
            .collect();
        if here.is_empty() && !c.repositories.is_empty() {
            warnings.push(format!(
                "no repository of {} is {}: every source of the configuration is expected in it",
                c.file.display(),
                cfg.repository
            ));
        }
        for (name, src) in &c.sources {
            let jobs: Vec<&str> = c
                .jobs
                .iter()
                .filter(|j| matches!(&j.kind, holdfast_config::JobKind::Backup { source } if source == name))
                .map(|j| j.repository.as_str())
                .collect();
            let elsewhere =
                !here.is_empty() && !jobs.is_empty() && jobs.iter().all(|r| !here.contains(r));
            if elsewhere {
                continue;
            }
            sources.push(ev::Source {
                name: name.clone(),
                rpo_seconds: src.rpo.map(|r| r.0),
                configured: true,
                snapshots: stored.get(name.as_str()).cloned().unwrap_or_default(),
            });
        }
    }
    let named: BTreeSet<String> = sources.iter().map(|s| s.name.clone()).collect();
    for (name, snaps) in stored {
        if !named.contains(name) {
            sources.push(ev::Source {
                name: name.to_string(),
                rpo_seconds: None,
                configured: false,
                snapshots: snaps,
            });
        }
    }
    ev::Backups {
        config_file,
        sources,
    }
}

fn drills(
    repo: &Repository,
    cfg: &ComplianceConfig,
    snapshots: &[SnapshotEntry],
) -> Result<ev::Drills> {
    let h = crate::drill::history(repo)?;
    let history: Vec<holdfast_drill::DrillReport> = h
        .drills
        .into_iter()
        .filter(|d| d.started <= cfg.at)
        .collect();
    let site_rto = cfg
        .playbooks
        .iter()
        .filter_map(|p| p.objectives.site_rto)
        .max()
        .or_else(|| {
            history
                .iter()
                .rev()
                .find_map(|d| d.objectives.site_rto_seconds)
        });
    // Sizes of the newest snapshot of each source at the instant.
    let mut newest: BTreeMap<(String, String), &SnapshotEntry> = BTreeMap::new();
    for e in snapshots {
        let slot = newest
            .entry((e.snapshot.source.clone(), e.snapshot.kind.clone()))
            .or_insert(e);
        if e.snapshot.time > slot.snapshot.time {
            *slot = e;
        }
    }
    let sizes: Vec<holdfast_drill::forecast::SourceSize> = newest
        .into_iter()
        .map(|((source, kind), e)| holdfast_drill::forecast::SourceSize {
            source,
            kind,
            bytes: e.snapshot.summary.total_bytes,
        })
        .collect();
    let forecast = if history.is_empty() && sizes.is_empty() {
        None
    } else {
        Some(holdfast_drill::forecast::forecast(
            &history, &sizes, site_rto,
        ))
    };
    Ok(ev::Drills {
        playbooks: cfg
            .playbooks
            .iter()
            .map(|p| ev::Playbook {
                name: p.name.clone(),
                file: p.file.display().to_string(),
                rto_seconds: p.objectives.rto,
                every_seconds: p.objectives.every,
            })
            .collect(),
        history,
        forecast,
        unreadable: h
            .unreadable
            .into_iter()
            .map(|(n, w)| format!("drills/{n}: {w}"))
            .collect(),
    })
}

/// How objects are encrypted (see `holdfast_repo::crypto`).
pub const CIPHER: &str =
    "AES-256-GCM, a key per object derived from the 256-bit master key (BLAKE3)";

fn encryption(repo: &Repository, at: DateTime<Utc>) -> Result<ev::Encryption> {
    let slots = repo.key_slots()?;
    Ok(ev::Encryption {
        format_version: repo.format_version(),
        newest_format: holdfast_repo::config::FORMAT_VERSION,
        cipher: CIPHER.into(),
        slots: slots
            .readable
            .iter()
            .filter(|(_, s)| s.created <= at)
            .map(|(id, s)| ev::Slot {
                id: id.clone(),
                kdf: s.kdf.clone(),
                memory_kib: s.params.map(|p| p.m_cost),
                iterations: s.params.map(|p| p.t_cost),
                created: s.created,
                label: s.label.clone(),
                current: id == repo.current_key(),
            })
            .collect(),
        damaged: slots.damaged,
    })
}

fn audit(
    repo: &Repository,
    at: DateTime<Utc>,
    chain: &holdfast_repo::audit::verify::Chain,
    snapshots: &[SnapshotEntry],
) -> Result<ev::Audit> {
    let report = crate::audit::verify_read(repo, chain, snapshots)?;
    let upto: Vec<&holdfast_repo::audit::Stored> = chain
        .entries
        .iter()
        .filter(|s| s.entry.time <= at)
        .collect();
    let (signers, _) = repo.signers()?;
    Ok(ev::Audit {
        intact: report.intact(),
        entries: report.entries,
        entries_at: upto.len(),
        first: upto.first().map(|s| s.entry.time),
        head: report.head.as_ref().map(|h| (h.seq, h.hash.clone())),
        signatures: report.signatures,
        snapshot_heads: report.snapshot_heads,
        witness: report.witness.as_ref().map(|h| h.seq),
        problems: report
            .problems
            .iter()
            .map(|p| (p.object.clone(), p.detail.clone()))
            .collect(),
        signers: signers
            .into_iter()
            .filter(|(_, s)| s.added <= at)
            .map(|(name, s)| ev::Signer {
                fingerprint: s
                    .fingerprint()
                    .unwrap_or_else(|e| format!("unreadable key: {e}")),
                name,
                printed_name: s.printed_name,
                added: s.added,
            })
            .collect(),
        signed: upto
            .iter()
            .filter_map(|s| {
                s.entry.signed.as_ref().map(|m| ev::Signed {
                    seq: s.entry.seq,
                    time: s.entry.time,
                    signer: format!("{} ({})", m.printed_name, m.signer),
                    operation: s.entry.operation.clone(),
                    meaning: m.meaning.clone(),
                })
            })
            .collect(),
    })
}

fn keep_text(k: &holdfast_policy::Keep) -> String {
    let n = |v: u32| {
        if v == u32::MAX {
            "unlimited".to_string()
        } else {
            v.to_string()
        }
    };
    let mut parts = Vec::new();
    for (name, v) in [
        ("last", k.last),
        ("hourly", k.hourly),
        ("daily", k.daily),
        ("weekly", k.weekly),
        ("monthly", k.monthly),
        ("yearly", k.yearly),
    ] {
        if let Some(v) = v {
            parts.push(format!("{name} {}", n(v)));
        }
    }
    for (name, v) in [
        ("within", k.within),
        ("within_hourly", k.within_hourly),
        ("within_daily", k.within_daily),
        ("within_weekly", k.within_weekly),
        ("within_monthly", k.within_monthly),
        ("within_yearly", k.within_yearly),
    ] {
        if let Some(v) = v {
            parts.push(format!("{name} {v}"));
        }
    }
    if parts.is_empty() {
        "nothing (only floor and holds)".into()
    } else {
        parts.join(", ")
    }
}

fn retention(
    repo: &Repository,
    cfg: &ComplianceConfig,
    snapshots: &[SnapshotEntry],
) -> Result<ev::Retention> {
    let six = Span::parse("6y").map_err(|e| OpsError::invalid(e.to_string()))?;
    let policies = cfg
        .policies
        .iter()
        .map(|p| {
            let mut selection = format!("source {}", p.selector.source);
            if !p.selector.kinds.is_empty() {
                selection.push_str(&format!(", kind {}", p.selector.kinds.join("|")));
            }
            if !p.selector.tags.is_empty() {
                selection.push_str(&format!(", tags {}", p.selector.tags.join("+")));
            }
            ev::Policy {
                name: p.name.clone(),
                file: p.file.display().to_string(),
                selection,
                keep: keep_text(&p.keep),
                floor: p.floor.map(|f| f.to_string()),
                floor_six_years: p.floor.is_some_and(|f| !six.longer_than(&f, &cfg.at)),
                max_age: p.max_age.map(|m| m.to_string()),
                archive_after: p.archive_after.map(|a| a.to_string()),
            }
        })
        .collect();
    let mut out = ev::Retention {
        files: cfg
            .policy_files
            .iter()
            .map(|f| f.display().to_string())
            .collect(),
        policies,
        decisions: Vec::new(),
        plan_error: None,
        warnings: Vec::new(),
    };
    if cfg.policies.is_empty() {
        return Ok(out);
    }
    let holds = LiveHolds::new(repo);
    let plan_cfg = PlanConfig {
        policies: cfg.policies.clone(),
        at: cfg.at,
    };
    match ops_policy::plan_entries(repo, &plan_cfg, &holds, snapshots) {
        Ok((plan, _)) => {
            out.decisions = plan
                .snapshots
                .into_iter()
                .map(|d| ev::Decision {
                    snapshot: d.snapshot,
                    time: d.time,
                    source: d.source,
                    action: match d.action {
                        holdfast_policy::Action::Keep => "keep",
                        holdfast_policy::Action::Archive => "archive",
                        holdfast_policy::Action::Purge => "purge",
                    }
                    .into(),
                    rule: d.rule,
                    policy: d.policy,
                })
                .collect();
            out.warnings = plan.warnings;
        }
        Err(OpsError::Invalid(why)) => out.plan_error = Some(why),
        Err(e) => return Err(e),
    }
    out.warnings.extend(holds.warnings());
    Ok(out)
}

fn holds(repo: &Repository, at: DateTime<Utc>, stored: &[SnapshotEntry]) -> Result<ev::Holds> {
    let records = repo.holds()?;
    let ids: BTreeSet<holdfast_repo::Id> = stored.iter().map(|s| s.id).collect();
    let holds = records
        .holds
        .iter()
        .filter(|h| h.hold.placed_at <= at)
        .map(|h| {
            let released = h
                .release
                .as_ref()
                .filter(|r| r.released_at <= at)
                .map(|r| (r.released_at, r.released_by.clone(), r.signature.is_some()));
            // Only a hold in force must still find its snapshots: after a
            // release, retention may purge them.
            let missing = match (&h.hold.selector, &released) {
                (HoldSelector::Snapshots { snapshots }, None) => snapshots
                    .iter()
                    .filter(|id| !ids.contains(id))
                    .map(|id| id.to_hex())
                    .collect(),
                _ => Vec::new(),
            };
            ev::Hold {
                id: h.hold.id.clone(),
                case: h.hold.case.clone(),
                reason: h.hold.reason.clone(),
                placed_by: h.hold.placed_by.clone(),
                placed_at: h.hold.placed_at,
                selector: h.hold.selector.describe(),
                released,
                covered: stored
                    .iter()
                    .filter(|s| {
                        h.hold
                            .selector
                            .covers(&s.id, &s.snapshot.source, s.snapshot.time)
                    })
                    .count(),
                missing,
            }
        })
        .collect();
    Ok(ev::Holds {
        holds,
        unreadable: crate::holds::warnings(&records),
    })
}

fn strings(v: Option<&serde_json::Value>) -> Vec<String> {
    v.and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn erasures(
    repo: &Repository,
    at: DateTime<Utc>,
    stored: &[SnapshotEntry],
    chain: &holdfast_repo::audit::verify::Chain,
) -> Result<ev::Erasures> {
    let r = repo.erasures()?;
    let erasures = r
        .erasures
        .iter()
        .filter(|e| e.recorded_at <= at)
        .map(|e| {
            let (kind, database) = match &e.target {
                holdfast_repo::erasure::ErasureTarget::Sql { database, .. } => {
                    ("sql", Some(database.clone()))
                }
                holdfast_repo::erasure::ErasureTarget::Path { .. } => ("path", None),
            };
            ev::Erasure {
                id: e.id.clone(),
                reference: e.reference.clone(),
                kind: kind.into(),
                database,
                target: e.target.describe(),
                recorded_by: e.recorded_by.clone(),
                recorded_at: e.recorded_at,
            }
        })
        .collect();
    let times: BTreeMap<String, DateTime<Utc>> = stored
        .iter()
        .map(|s| (s.id.to_hex(), s.snapshot.time))
        .collect();
    let mut restores: Vec<ev::Restore> = chain
        .entries
        .iter()
        .map(|s| &s.entry)
        .filter(|e| {
            e.operation == "restore"
                && e.outcome == holdfast_repo::audit::Outcome::Success
                && e.time <= at
        })
        .map(|e| {
            let snapshot = e
                .objects
                .iter()
                .find(|t| t.kind == "snapshot")
                .map(|t| t.id.clone());
            ev::Restore {
                seq: e.seq,
                time: e.time,
                actor: e.actor.clone(),
                kind: e
                    .args
                    .get("kind")
                    .and_then(|v| v.as_str())
                    .unwrap_or("files")
                    .to_string(),
                snapshot_time: snapshot.as_ref().and_then(|id| times.get(id).copied()),
                snapshot,
                applied: strings(e.args.get("erasures_applied")),
                pending: strings(e.args.get("erasures_pending")),
                skipped_reason: e
                    .args
                    .get("erasures_skipped_reason")
                    .and_then(|v| v.as_str())
                    .map(str::to_string),
                not_applied: strings(e.args.get("erasures_not_applied")),
            }
        })
        .collect();
    let skip = restores.len().saturating_sub(RESTORES_EXAMINED);
    restores.drain(..skip);
    Ok(ev::Erasures {
        erasures,
        unreadable: r
            .unreadable
            .iter()
            .map(|(n, w)| format!("erasures/{n}: {w}"))
            .collect(),
        restores,
    })
}
