//! The evidence a report is judged from: plain values that
//! `ops::compliance` reads from the repository, its configuration,
//! policies and playbooks, already limited to records at or before the
//! report's instant.

use chrono::{DateTime, Utc};
use holdfast_drill::forecast::Forecast;
use holdfast_drill::DrillReport;

/// Everything the report reads.
#[derive(Debug, Clone)]
pub struct Evidence {
    /// The instant evaluated.
    pub at: DateTime<Utc>,
    pub backups: Backups,
    pub drills: Drills,
    pub encryption: Encryption,
    pub audit: Audit,
    pub retention: Retention,
    pub holds: Holds,
    pub object_lock: ObjectLock,
    pub erasures: Erasures,
}

/// A snapshot as the report needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snap {
    pub id: String,
    pub time: DateTime<Utc>,
    pub kind: String,
}

/// A source the report expects backups of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub name: String,
    /// From the configuration's `rpo`; `None`: none configured.
    pub rpo_seconds: Option<u64>,
    /// Named by the configuration (else only seen in the repository).
    pub configured: bool,
    /// Its snapshots at or before the instant, oldest first.
    pub snapshots: Vec<Snap>,
}

#[derive(Debug, Clone)]
pub struct Backups {
    /// The configuration file read, if any.
    pub config_file: Option<String>,
    pub sources: Vec<Source>,
}

/// A playbook the drills are judged against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Playbook {
    pub name: String,
    pub file: String,
    pub rto_seconds: u64,
    /// How often it must pass (`[objectives] every`); `None`: the
    /// default of [`crate::controls::DEFAULT_DRILL_EVERY`].
    pub every_seconds: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Drills {
    /// Playbooks given by the caller; empty: every playbook found in
    /// the drill history.
    pub playbooks: Vec<Playbook>,
    /// Every stored drill at or before the instant, oldest first.
    pub history: Vec<DrillReport>,
    /// The full-site forecast from that history and the current sizes.
    pub forecast: Option<Forecast>,
    /// Drill records that cannot be read.
    pub unreadable: Vec<String>,
}

/// A key slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub id: String,
    /// `argon2id` or `blake3-keyfile`.
    pub kdf: String,
    pub memory_kib: Option<u32>,
    pub iterations: Option<u32>,
    pub created: DateTime<Utc>,
    pub label: String,
    /// The slot that opened the repository for this report.
    pub current: bool,
}

#[derive(Debug, Clone)]
pub struct Encryption {
    pub format_version: u32,
    pub newest_format: u32,
    /// Readable description of the ciphers.
    pub cipher: String,
    pub slots: Vec<Slot>,
    /// Slots that cannot be read (id, why).
    pub damaged: Vec<(String, String)>,
}

/// A registered signer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    pub name: String,
    pub printed_name: String,
    pub fingerprint: String,
    pub added: DateTime<Utc>,
}

/// A signed entry on the trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub seq: u64,
    pub time: DateTime<Utc>,
    pub signer: String,
    pub operation: String,
    pub meaning: String,
}

#[derive(Debug, Clone)]
pub struct Audit {
    /// The verification of the whole trail as stored now.
    pub intact: bool,
    /// Readable entries of the whole trail.
    pub entries: usize,
    /// Entries at or before the instant.
    pub entries_at: usize,
    pub first: Option<DateTime<Utc>>,
    /// The head: sequence number and hash.
    pub head: Option<(u64, String)>,
    pub signatures: usize,
    pub snapshot_heads: usize,
    /// This machine's witness (sequence number).
    pub witness: Option<u64>,
    /// (object, detail).
    pub problems: Vec<(String, String)>,
    pub signers: Vec<Signer>,
    /// Signed entries at or before the instant.
    pub signed: Vec<Signed>,
}

/// A retention policy in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    pub file: String,
    pub selection: String,
    pub keep: String,
    pub floor: Option<String>,
    /// Whether the floor is at least six years.
    pub floor_six_years: bool,
    pub max_age: Option<String>,
    pub archive_after: Option<String>,
}

/// The plan's decision for one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub snapshot: String,
    pub time: DateTime<Utc>,
    pub source: String,
    /// `keep`, `archive` or `purge`.
    pub action: String,
    pub rule: String,
    pub policy: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Retention {
    /// Policy files given; empty: retention was not evaluated.
    pub files: Vec<String>,
    pub policies: Vec<Policy>,
    /// The plan at the instant, for the snapshots stored then.
    pub decisions: Vec<Decision>,
    /// Why the plan could not be made, when it could not.
    pub plan_error: Option<String>,
    pub warnings: Vec<String>,
}

/// A legal hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub id: String,
    pub case: String,
    pub reason: String,
    pub placed_by: String,
    pub placed_at: DateTime<Utc>,
    pub selector: String,
    /// Released at or before the instant: when, by whom, and whether
    /// the release was signed.
    pub released: Option<(DateTime<Utc>, String, bool)>,
    /// Stored snapshots it covers.
    pub covered: usize,
    /// Snapshots it names that are no longer stored (ids).
    pub missing: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Holds {
    /// Placed at or before the instant.
    pub holds: Vec<Hold>,
    /// Hold records that cannot be read (with why).
    pub unreadable: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ObjectLock {
    /// "local directory", "S3", ...
    pub storage: String,
    /// The store sets retention (Object Lock).
    pub retention: bool,
    /// The store sets legal holds.
    pub legal_hold: bool,
    /// The repository's Object Lock settings from `init`: mode, days.
    pub configured: Option<(String, u32)>,
}

/// An erasure in the register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erasure {
    pub id: String,
    pub reference: String,
    /// `path` or `sql`.
    pub kind: String,
    /// For SQL: the database.
    pub database: Option<String>,
    pub target: String,
    pub recorded_by: String,
    pub recorded_at: DateTime<Utc>,
}

/// A restore on the audit trail and what it did about the register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restore {
    pub seq: u64,
    pub time: DateTime<Utc>,
    pub actor: String,
    /// `files`, `postgres-logical`, `postgres-physical`.
    pub kind: String,
    pub snapshot: Option<String>,
    /// The restored snapshot's time, when it is still stored.
    pub snapshot_time: Option<DateTime<Utc>>,
    pub applied: Vec<String>,
    pub pending: Vec<String>,
    pub skipped_reason: Option<String>,
    pub not_applied: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Erasures {
    /// Recorded at or before the instant.
    pub erasures: Vec<Erasure>,
    pub unreadable: Vec<String>,
    /// The most recent successful restores at or before the instant,
    /// oldest first.
    pub restores: Vec<Restore>,
}
