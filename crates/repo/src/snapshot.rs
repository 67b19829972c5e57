//! Snapshot manifests: the commit point of a backup.
//!
//! A snapshot is written last, after every pack and index object it needs is
//! durable. A crash before it leaves unreferenced packs (collected by GC) and
//! never a snapshot pointing at missing data.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::id::Id;

/// What a backup did, recorded in its snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unchanged: u64,
    pub dirs: u64,
    pub files_failed: u64,
    /// Bytes of file content in the snapshot.
    pub total_bytes: u64,
    /// Bytes that were read and chunked this run.
    pub bytes_read: u64,
    /// New blobs and their plaintext bytes.
    pub blobs_added: u64,
    pub data_added: u64,
    /// Bytes written to storage (packs, after compression and encryption).
    pub stored_added: u64,
    pub duration_secs: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub time: DateTime<Utc>,
    pub hostname: String,
    pub username: String,
    /// Logical source name; incremental backups use the latest snapshot of the same source.
    pub source: String,
    /// `files`, `postgres-logical`, `postgres-physical`, ...
    pub kind: String,
    #[serde(default)]
    pub tags: Vec<String>,
    pub paths: Vec<String>,
    pub tree: Id,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Id>,
    #[serde(default)]
    pub summary: Summary,
    pub program_version: String,
    /// Source-specific metadata (database versions, row counts, WAL positions...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, serde_json::Value>,
}

/// A snapshot and its id (the name of its object).
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotEntry {
    pub id: Id,
    pub snapshot: Snapshot,
}

/// Which snapshot a command means.
#[derive(Debug, Clone, Default)]
pub struct SnapshotFilter {
    pub source: Option<String>,
    pub tags: Vec<String>,
    pub kind: Option<String>,
}

impl SnapshotFilter {
    pub fn matches(&self, s: &Snapshot) -> bool {
        self.source.as_ref().is_none_or(|src| &s.source == src)
            && self.kind.as_ref().is_none_or(|k| &s.kind == k)
            && self.tags.iter().all(|t| s.tags.contains(t))
    }
}
