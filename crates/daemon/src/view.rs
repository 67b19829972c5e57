//! The daemon's state as the outside sees it: one serialisable value that
//! `/status` returns, `holdfast status` prints, and from which the
//! Prometheus metrics, the status page and the alert conditions are
//! derived. Keeping one value means the four can never disagree.
//!
//! Times are UTC; durations are seconds (`f64`); sizes are bytes.
//! Nothing here holds a secret: URLs of repositories are shown without
//! credentials, webhook URLs are never shown.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Version of the `/status` JSON; bumped on an incompatible change.
pub const STATUS_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    pub version: u32,
    pub generated_at: Option<DateTime<Utc>>,
    pub daemon: DaemonInfo,
    pub sources: Vec<SourceView>,
    pub jobs: Vec<JobView>,
    pub drills: Vec<DrillView>,
    pub repositories: Vec<RepositoryView>,
    /// Conditions firing now (resolved ones are gone from this list).
    pub alerts: Vec<AlertView>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub program_version: String,
    pub host: String,
    pub pid: u32,
    pub started_at: Option<DateTime<Utc>>,
    pub config_file: String,
    pub config_loaded_at: Option<DateTime<Utc>>,
    /// The last reload that failed, and why (the old config stays in force).
    pub config_error: Option<String>,
    /// SIGTERM received: no new jobs start.
    pub stopping: bool,
}

/// One configured source and how fresh its last good backup is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceView {
    pub name: String,
    /// "paths", "postgres-logical" or "postgres-physical".
    pub kind: String,
    pub repository: Option<String>,
    pub rpo_seconds: Option<f64>,
    /// Time of the newest successful backup (snapshot time), from the
    /// repository at start and from the daemon's own runs after.
    pub last_backup_at: Option<DateTime<Utc>>,
    pub last_snapshot: Option<String>,
    /// Age of the newest successful backup at `generated_at`.
    pub rpo_age_seconds: Option<f64>,
    /// No backup younger than the RPO (also when there is no backup).
    pub rpo_breached: bool,
    /// The last backup looked like a mass change (see `anomaly`); cleared
    /// by the next ordinary backup.
    #[serde(default)]
    pub anomaly: Option<AnomalyView>,
}

/// A backup whose share of changed files or of incompressible new data
/// jumped far above its source's history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnomalyView {
    /// The backup that jumped.
    pub snapshot: String,
    pub at: Option<DateTime<Utc>>,
    /// Why, in words ("93% of files changed, usually 2%").
    pub reason: String,
    /// Share (0..1) of files changed or new, and the history's median.
    pub changed_share: f64,
    pub changed_baseline: f64,
    /// Share (0..1) of the new data that did not compress, and the median.
    pub incompressible_share: f64,
    pub incompressible_baseline: f64,
    /// The last snapshot before the jump, and the hold placed on it.
    pub held_snapshot: Option<String>,
    pub hold: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunOutcome {
    Success,
    Failed,
    TimedOut,
    /// Stopped by the daemon's shutdown.
    Interrupted,
    /// Not started: the previous run of the same job was still running.
    Skipped,
}

/// One finished run of a job (after its retries).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_seconds: f64,
    pub outcome: RunOutcome,
    /// Attempts made (1 + retries used).
    pub attempts: u32,
    pub error: Option<String>,
    /// Backups: bytes read from the source and added (stored) to the
    /// repository. Zero for other kinds.
    pub bytes_read: u64,
    pub bytes_added: u64,
    /// The snapshot a backup made, the drill id a drill made.
    pub snapshot: Option<String>,
    pub drill: Option<String>,
    /// A short human summary ("412 files, 3 new", "check: 2 errors").
    pub summary: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunningView {
    pub started_at: Option<DateTime<Utc>>,
    pub attempt: u32,
    /// What the job is doing ("backup", "gc", "retry wait").
    pub phase: String,
    pub bytes_done: u64,
    /// Zero when not known.
    pub bytes_total: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub name: String,
    /// backup | retention | drill | check
    pub kind: String,
    pub repository: String,
    pub source: Option<String>,
    pub playbook: Option<String>,
    pub schedule: String,
    pub timezone: String,
    pub next_run: Option<DateTime<Utc>>,
    pub running: Option<RunningView>,
    pub last: Option<RunResult>,
    pub last_success_at: Option<DateTime<Utc>>,
    /// Counters since the daemon started (Prometheus `_total`).
    pub runs_total: u64,
    pub failures_total: u64,
    pub retries_total: u64,
    /// Scheduled times that passed while the previous run was still
    /// going (never queued, only counted).
    #[serde(default)]
    pub skipped_total: u64,
    pub bytes_read_total: u64,
    pub bytes_added_total: u64,
    /// The alert targets the job's alerts go to (`alert = [...]`); empty:
    /// every target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alert: Vec<String>,
}

/// The last drill of one playbook.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DrillView {
    pub playbook: String,
    pub drill_id: Option<String>,
    pub at: Option<DateTime<Utc>>,
    pub passed: bool,
    /// "passed", "check-failed", "target-missed", "error".
    pub outcome: String,
    pub rto_seconds: Option<f64>,
    pub rto_target_seconds: Option<f64>,
    pub rpo_seconds: Option<f64>,
    pub rpo_target_seconds: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RepositoryView {
    pub name: String,
    /// Without credentials.
    pub url: String,
    /// Bytes the repository holds in packs, and the bytes of the files
    /// and dumps its snapshots describe; `logical / stored` is the
    /// deduplication (and compression) ratio.
    pub stored_bytes: Option<u64>,
    pub logical_bytes: Option<u64>,
    pub snapshots: Option<u64>,
    pub stats_at: Option<DateTime<Utc>>,
}

impl RepositoryView {
    /// Logical over stored bytes, when both are known and stored is not 0.
    pub fn dedup_ratio(&self) -> Option<f64> {
        match (self.logical_bytes, self.stored_bytes) {
            (Some(l), Some(s)) if s > 0 => Some(l as f64 / s as f64),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertKind {
    JobFailed,
    RpoBreach,
    DrillFailed,
    CheckFailed,
    Anomaly,
}

/// A firing condition. `key` identifies it across evaluations (kind and
/// subject), so the alerter can send a resolved notice when it clears.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertView {
    pub key: String,
    pub kind: AlertKind,
    /// The job, source or playbook it is about.
    pub subject: String,
    pub since: DateTime<Utc>,
    pub message: String,
    /// The alert targets it goes to, by name; empty: every target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
}
