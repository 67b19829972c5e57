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
///
/// The counts are defined once and every command uses the same definitions
/// (see [`NodeCounts`]): `files` are regular-file entries of the tree (each
/// hard link is one), `dirs`, `symlinks` and `other` (FIFOs, sockets,
/// devices) likewise, all counted under the backed-up paths (the directories
/// leading to them are not). Bytes are split into file content (`bytes_read`,
/// `data_added`) and metadata (`meta_added`, the tree objects).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unchanged: u64,
    pub dirs: u64,
    #[serde(default)]
    pub symlinks: u64,
    /// FIFOs, sockets and device nodes.
    #[serde(default)]
    pub other: u64,
    pub files_failed: u64,
    /// Entries left out by exclude rules (the content of an excluded
    /// directory is not looked at, so it is not counted).
    #[serde(default)]
    pub excluded: u64,
    /// Files that changed while they were read and were read again.
    #[serde(default)]
    pub files_reread: u64,
    /// Files that were still changing on the second read: stored as read,
    /// with a warning (their content may mix old and new data).
    #[serde(default)]
    pub files_changing: u64,
    /// Bytes of file content in the snapshot.
    pub total_bytes: u64,
    /// Bytes of file content that were read and chunked this run.
    pub bytes_read: u64,
    /// New blobs (data and metadata).
    pub blobs_added: u64,
    /// Plaintext bytes of new file-content blobs (never more than `bytes_read`).
    pub data_added: u64,
    /// Plaintext bytes of new metadata blobs (trees).
    #[serde(default)]
    pub meta_added: u64,
    /// Bytes written to storage (packs, after compression and encryption).
    pub stored_added: u64,
    pub duration_secs: f64,
}

impl Summary {
    /// Regular files in the snapshot (new, changed and unchanged).
    pub fn files(&self) -> u64 {
        self.files_new + self.files_changed + self.files_unchanged
    }

    /// The entry counts, as every command reports them.
    pub fn counts(&self) -> NodeCounts {
        NodeCounts {
            files: self.files(),
            dirs: self.dirs,
            symlinks: self.symlinks,
            other: self.other,
        }
    }
}

/// Entries of a tree by kind: the one definition that backup, restore, the
/// overwrite refusal and listings share.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCounts {
    /// Regular files; each hard link is one.
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// FIFOs, sockets and device nodes.
    pub other: u64,
}

impl NodeCounts {
    pub fn add(&mut self, kind: crate::tree::NodeKind) {
        use crate::tree::NodeKind;
        match kind {
            NodeKind::File => self.files += 1,
            NodeKind::Dir => self.dirs += 1,
            NodeKind::Symlink => self.symlinks += 1,
            NodeKind::Fifo | NodeKind::Socket | NodeKind::Chardev | NodeKind::Blockdev => {
                self.other += 1
            }
        }
    }

    pub fn total(&self) -> u64 {
        self.files + self.dirs + self.symlinks + self.other
    }
}

impl std::fmt::Display for NodeCounts {
    /// "5569 files, 312 dirs, 4 symlinks, 1 other"
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} files, {} dirs, {} symlinks, {} other",
            self.files, self.dirs, self.symlinks, self.other
        )
    }
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
    /// The newest snapshot(s) of the same source and host that the writer
    /// saw when it wrote this one. `check` reports a predecessor that is
    /// missing: the newer snapshots of a source cannot be deleted or rolled
    /// back silently while a later one remains (see docs/format.md for
    /// what stays undetectable).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub predecessors: Vec<Id>,
    /// The id this snapshot had before `holdfast migrate` re-sealed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrated_from: Option<Id>,
    /// The audit trail's head when this snapshot was written, as far as
    /// its writer knew it (see `audit`): `audit verify` checks that the
    /// trail still reaches it, so a truncated tail shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_head: Option<crate::audit::Head>,
}

/// The predecessors a new snapshot `snap` records, given every snapshot
/// now in the repository (oldest first): the newest one of the same source
/// and host, if any.
pub fn latest_of_same_source(all: &[SnapshotEntry], snap: &Snapshot) -> Vec<Id> {
    predecessors_of(all, &snap.source, &snap.hostname)
}

/// [`latest_of_same_source`] for a snapshot of `source` from `hostname`
/// not yet made (a backup knows both when it starts).
pub fn predecessors_of(all: &[SnapshotEntry], source: &str, hostname: &str) -> Vec<Id> {
    all.iter()
        .rev()
        .find(|e| e.snapshot.source == source && e.snapshot.hostname == hostname)
        .map(|e| vec![e.id])
        .unwrap_or_default()
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
