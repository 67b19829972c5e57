//! The drill report: what was restored from which snapshot, how long each
//! phase took, every check's result, the objectives against what was
//! measured, and the outcome. It is the evidence: stored (sealed) in the
//! repository as the drill record, written as JSON and HTML, and read back
//! by `drill history`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::duration::{measured, Human};

/// Version of the report's JSON form.
pub const REPORT_VERSION: u32 = 1;

/// How a drill ended, most severe last. The exit codes of `drill run`
/// follow it (see the README, "DR drills").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Every check passed and every objective was met.
    Passed,
    /// Every check passed, but the RTO or the RPO was missed.
    TargetMissed,
    /// A check failed (or data could not be restored): the backup did not
    /// prove itself.
    CheckFailed,
    /// The drill stopped before every check could run: an error, the
    /// timeout, or a signal.
    Error,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::TargetMissed => "target missed",
            Outcome::CheckFailed => "check failed",
            Outcome::Error => "error",
        }
    }
}

/// One timed phase of a restore.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    /// `retrieval`, `plan`, `download`, `decrypt+decompress`, `write`,
    /// `server start`, `restore`, `wal replay`, `checks`, `teardown`.
    pub name: String,
    pub seconds: f64,
    /// Bytes the phase moved, where that is meaningful (throughput for the
    /// forecast).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// How the figure was obtained, when it is not a plain stopwatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Phase {
    pub fn new(name: &str, seconds: f64) -> Phase {
        Phase {
            name: name.to_string(),
            seconds,
            bytes: None,
            note: None,
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub kind: String,
    pub name: String,
    pub passed: bool,
    /// What was found: counts, the value seen, the first differences.
    pub detail: String,
    pub seconds: f64,
}

/// One restore of a drill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RestoreReport {
    pub label: String,
    pub source: String,
    /// Snapshot kind.
    pub kind: String,
    /// Target kind, and where it was (a directory, `host:port/db`).
    pub target: String,
    pub location: String,
    /// How the snapshot was chosen (`latest`, `random-within 30d`), and the
    /// seed a random choice used.
    pub pick: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_time: Option<DateTime<Utc>>,
    /// The point in time asked for (PITR).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_point: Option<DateTime<Utc>>,
    /// The point the restored data reflects: the snapshot's time, or the
    /// last replayed transaction of a PITR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_point: Option<DateTime<Utc>>,
    /// Age of the restored point at the drill's start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_seconds: Option<f64>,
    pub bytes: u64,
    pub files: u64,
    pub phases: Vec<Phase>,
    pub checks: Vec<CheckResult>,
    /// The GDPR erasures re-applied to the restored data (ids of the
    /// repository's erasure register), after the checks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub erasures_applied: Vec<String>,
    /// What stopped this restore, if something did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Targets, in seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ObjectivesReport {
    pub rto_seconds: u64,
    pub rpo_seconds: u64,
    pub timeout_seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_rto_seconds: Option<u64>,
}

/// The whole drill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillReport {
    pub version: u32,
    /// The drill record's name in the repository (`drills/<id>`).
    pub id: String,
    pub playbook: String,
    pub playbook_file: String,
    pub host: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub outcome: Outcome,
    pub objectives: ObjectivesReport,
    /// Measured RTO: from the start to the last restore usable and checked.
    pub rto_seconds: f64,
    pub rto_met: bool,
    /// The largest RPO among the restores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_seconds: Option<f64>,
    pub rpo_met: bool,
    pub restores: Vec<RestoreReport>,
    /// Why the drill stopped early (error, timeout, signal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The verification record a passing drill wrote (`verified/<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_record: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<crate::forecast::Forecast>,
    /// Signed reviews of this report (`drill approve`), oldest first. Not
    /// part of the stored report: read back from the audit trail, where
    /// each is a signed entry, when the drill is shown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<Approval>,
}

/// One signed review of a drill report, as its audit entry records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    /// The registered signer and the full name shown with the signature.
    pub signer: String,
    pub printed_name: String,
    /// When it was signed (the audit entry's time).
    pub time: DateTime<Utc>,
    /// What the signature means, as signed.
    pub meaning: String,
    /// The audit entry holding the signature (`audit/<seq>`).
    pub audit_seq: u64,
    /// BLAKE3 of the report as approved (hex), when the entry names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_blake3: Option<String>,
    /// Whether the signature verifies with the registered signer's key
    /// and the digest signed is the stored report's now.
    pub verified: bool,
    /// Why not, when it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl DrillReport {
    /// Settle `outcome`, `rto_met`, `rpo_met` and `rpo_seconds` from the
    /// restores, the measured RTO and the error.
    pub fn decide(&mut self) {
        self.rpo_seconds = self
            .restores
            .iter()
            .filter_map(|r| r.rpo_seconds)
            .reduce(f64::max);
        self.rto_met = self.rto_seconds <= self.objectives.rto_seconds as f64;
        self.rpo_met = self
            .rpo_seconds
            .is_some_and(|r| r <= self.objectives.rpo_seconds as f64)
            && self.restores.iter().all(|r| r.rpo_seconds.is_some());
        let checks: Vec<&CheckResult> = self.restores.iter().flat_map(|r| &r.checks).collect();
        let any_checked = !checks.is_empty();
        let restore_failed = self.restores.iter().any(|r| r.error.is_some());
        // A drill stopped (timeout, signal) ends as an error whatever its
        // checks said: the checks it stopped did not fail, they were cut.
        self.outcome = if self.error.is_some() {
            Outcome::Error
        } else if checks.iter().any(|c| !c.passed) {
            Outcome::CheckFailed
        } else if restore_failed || !any_checked {
            Outcome::Error
        } else if !self.rto_met || !self.rpo_met {
            Outcome::TargetMissed
        } else {
            Outcome::Passed
        };
    }

    /// Lines saying which objectives were missed and by how much.
    pub fn misses(&self) -> Vec<String> {
        let mut out = Vec::new();
        let rto = self.objectives.rto_seconds as f64;
        if !self.rto_met {
            out.push(format!(
                "RTO missed by {}: the restore took {}, the target is {}",
                measured(self.rto_seconds - rto),
                measured(self.rto_seconds),
                Human(self.objectives.rto_seconds)
            ));
        }
        if !self.rpo_met {
            let target = Human(self.objectives.rpo_seconds);
            match self.rpo_seconds {
                Some(r) => out.push(format!(
                    "RPO missed by {}: the restored point was {} old at the drill's start, the target is {target}",
                    measured(r - self.objectives.rpo_seconds as f64),
                    measured(r)
                )),
                None => out.push(format!(
                    "RPO not shown: no restored point could be established (target {target})"
                )),
            }
        }
        out
    }

    /// Every check of every restore.
    pub fn checks(&self) -> impl Iterator<Item = (&RestoreReport, &CheckResult)> {
        self.restores
            .iter()
            .flat_map(|r| r.checks.iter().map(move |c| (r, c)))
    }
}
