//! The compliance evidence report, the pure part: the evidence gathered
//! from a repository ([`evidence`]), the controls judged from it with
//! their thresholds ([`controls`]), the report itself (this module: one
//! JSON document with a schema version) and its self-contained HTML page
//! ([`html`]).
//!
//! A control maps regulation clauses (HIPAA Security Rule, 21 CFR Part
//! 11, GDPR) to facts read from the repository: a status (pass,
//! attention, fail), a one-line finding, facts, tables of evidence rows
//! and, for some, a chart.
//!
//! **Architecture invariant:** no repository, storage, clock or
//! environment (like `holdfast-drill`): `holdfast-ops`
//! (`ops::compliance`) reads the repository and hands this crate plain
//! values; "now" is an input, so a report is reproducible and `--at`
//! evaluates a past (or future) instant.

pub mod controls;
pub mod evidence;
pub mod html;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Version of the JSON report. Raised when a field changes meaning or
/// disappears; new fields may appear without a change.
pub const REPORT_VERSION: u32 = 1;

/// The verdict of a control (and of one evidence row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The evidence shows the control in force.
    Pass,
    /// In force, but something needs a look (a pending purge, an old key
    /// slot, no configuration to judge against): not a failure.
    Attention,
    /// The evidence shows the control not met.
    Fail,
}

impl Status {
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Attention => "attention",
            Status::Fail => "fail",
        }
    }

    /// The worse of two.
    pub fn worst(self, other: Status) -> Status {
        self.max(other)
    }
}

/// A named fact: "Entries" = "42".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fact {
    pub label: String,
    pub value: String,
}

/// One row of an evidence table; `status` when the row is judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub cells: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

/// A table of evidence rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Row>,
    /// Shown when there is no row.
    pub empty: String,
}

/// Data for a chart of the HTML page (also in the JSON, for other
/// renderers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Chart {
    /// Backups of each source over a window, against its RPO: a lane per
    /// source, a tick per backup, gaps longer than the RPO marked.
    Backups {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        sources: Vec<BackupLane>,
    },
    /// Drill RTO against the target, per playbook.
    Drills { playbooks: Vec<DrillSeries> },
}

/// One source's lane in the backup chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupLane {
    pub source: String,
    pub rpo_seconds: Option<u64>,
    /// Snapshot times inside the window, oldest first.
    pub backups: Vec<DateTime<Utc>>,
    pub status: Status,
}

/// One playbook's drills in the drill chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillSeries {
    pub playbook: String,
    pub rto_target_seconds: u64,
    pub drills: Vec<DrillPoint>,
}

/// One drill in the drill chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillPoint {
    pub id: String,
    pub started: DateTime<Utc>,
    pub rto_seconds: f64,
    /// The drill's outcome (`passed`, `target-missed`, ...).
    pub outcome: String,
}

/// One control and its evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Control {
    /// Stable identifier (`backup-plan`, `audit-controls`, ...).
    pub id: String,
    pub title: String,
    /// The clauses it gives evidence for.
    pub refs: Vec<String>,
    pub status: Status,
    /// One line: why this status.
    pub finding: String,
    pub facts: Vec<Fact>,
    pub tables: Vec<Table>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub charts: Vec<Chart>,
    /// What the thresholds are (so a reader can judge the judgement).
    pub criteria: String,
}

/// How many controls are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub pass: usize,
    pub attention: usize,
    pub fail: usize,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub version: u32,
    /// When it was made.
    pub generated_at: DateTime<Utc>,
    /// The instant it evaluates (records after it are ignored).
    pub at: DateTime<Utc>,
    /// The repository as named by the caller, and its id.
    pub repository: String,
    pub repository_id: String,
    pub host: String,
    /// The worst status of any control.
    pub status: Status,
    pub summary: Summary,
    pub controls: Vec<Control>,
    /// What could not be read or taken into account.
    pub warnings: Vec<String>,
}

impl Report {
    /// The report of `controls`, with the overall status and counts.
    pub fn new(head: Head, controls: Vec<Control>, warnings: Vec<String>) -> Report {
        let mut summary = Summary::default();
        let mut status = Status::Pass;
        for c in &controls {
            match c.status {
                Status::Pass => summary.pass += 1,
                Status::Attention => summary.attention += 1,
                Status::Fail => summary.fail += 1,
            }
            status = status.worst(c.status);
        }
        Report {
            version: REPORT_VERSION,
            generated_at: head.generated_at,
            at: head.at,
            repository: head.repository,
            repository_id: head.repository_id,
            host: head.host,
            status,
            summary,
            controls,
            warnings,
        }
    }

    pub fn control(&self, id: &str) -> Option<&Control> {
        self.controls.iter().find(|c| c.id == id)
    }
}

/// What a report says about where and when it was made.
#[derive(Debug, Clone)]
pub struct Head {
    pub generated_at: DateTime<Utc>,
    pub at: DateTime<Utc>,
    pub repository: String,
    pub repository_id: String,
    pub host: String,
}

pub(crate) fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

pub(crate) fn fact(label: &str, value: impl Into<String>) -> Fact {
    Fact {
        label: label.to_string(),
        value: value.into(),
    }
}

pub(crate) fn row(cells: Vec<String>, status: Option<Status>) -> Row {
    Row { cells, status }
}
