//! Deleting a snapshot on purpose: the deletion record ("tombstone",
//! `forgotten/<snapshot id>`) and the crash-ordered purge.
//!
//! Every snapshot names its predecessor, and `check` reports one that has
//! gone missing as deleted or rolled back (see `docs/format.md`). A
//! retention policy deletes snapshots on purpose; so that such a deletion
//! is not reported, the purge first writes a sealed deletion record bound
//! to the snapshot's id, and only then deletes the snapshot manifest.
//! Someone without the repository key cannot write one (it is sealed) nor
//! reuse one for another snapshot (it is bound to its name), so a deletion
//! without a record is still reported. The record carries the deleted
//! snapshot's own predecessors, so the chain `check` follows runs through
//! purged snapshots. A record whose snapshot still
//! exists is a purge that stopped between the two steps: running the purge
//! again finishes it.

use chrono::{DateTime, Utc};
use holdfast_storage::{ErrorClass, ObjectKind, StorageError};
use serde::{Deserialize, Serialize};

use crate::cache::CacheKind;
use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::records::{self, Records};
use crate::repository::Repository;
use crate::snapshot::SnapshotEntry;

/// Version of the tombstone record.
pub const TOMBSTONE_VERSION: u32 = 1;

/// The deletion record of one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    pub version: u32,
    /// The snapshot deleted (also the record's object name).
    pub snapshot: Id,
    pub source: String,
    pub host: String,
    /// The snapshot's kind (`files`, `postgres-physical`, ...).
    pub kind: String,
    /// The snapshot's own time.
    pub snapshot_time: DateTime<Utc>,
    /// When the record was written.
    pub forgotten_at: DateTime<Utc>,
    /// What deleted it (`policy apply`).
    pub by: String,
    /// The policy that decided it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The rule that decided it ("past max_age 6y").
    pub rule: String,
    /// The predecessors the deleted snapshot named: `check` follows them
    /// through the record as through the snapshot, so that deleting a
    /// snapshot whose successor was purged is still detected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub predecessors: Vec<Id>,
}

impl Tombstone {
    /// The record for deleting `entry` now.
    pub fn new(
        entry: &SnapshotEntry,
        by: &str,
        policy: Option<&str>,
        rule: &str,
        now: DateTime<Utc>,
    ) -> Tombstone {
        Tombstone {
            version: TOMBSTONE_VERSION,
            snapshot: entry.id,
            source: entry.snapshot.source.clone(),
            host: entry.snapshot.hostname.clone(),
            kind: entry.snapshot.kind.clone(),
            snapshot_time: entry.snapshot.time,
            forgotten_at: now,
            by: by.to_string(),
            policy: policy.map(str::to_string),
            rule: rule.to_string(),
            predecessors: entry.snapshot.predecessors.clone(),
        }
    }
}

/// What [`Repository::forget_snapshot`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forgotten {
    /// The record is stored and the snapshot manifest deleted.
    Deleted,
    /// The snapshot was already gone (a concurrent or earlier purge that
    /// wrote its record).
    AlreadyGone,
    /// Object Lock (retention or a legal hold on the manifest) refuses the
    /// deletion; the snapshot stays. `recorded`: a deletion record is left
    /// beside it (written before the store refused, and retained by the
    /// store too); a later run finishes the purge once the lock lapses.
    Locked { detail: String, recorded: bool },
}

/// Decode a stored record, checking that it names the snapshot it is
/// stored under (the envelope binds the name too; this also catches a
/// record written wrongly).
fn checked(name: &str, t: Tombstone) -> std::result::Result<Tombstone, String> {
    if t.snapshot.to_hex() != name {
        return Err(format!(
            "it records the deletion of snapshot {}, not {name}",
            t.snapshot
        ));
    }
    if t.version > TOMBSTONE_VERSION {
        return Err(format!(
            "record version {} is newer than this holdfast supports ({TOMBSTONE_VERSION})",
            t.version
        ));
    }
    Ok(t)
}

impl Repository {
    /// Every deletion record, and those that cannot be read or do not
    /// open (forged, damaged, misplaced), with why.
    pub fn tombstones(&self) -> Result<Records<Tombstone>> {
        let (good, mut bad) = records::read_all::<Tombstone>(self, ObjectKind::Tombstone)?;
        let mut out = Vec::new();
        for (name, t) in good {
            match checked(&name, t) {
                Ok(t) => out.push((name, t)),
                Err(e) => bad.push((name, e)),
            }
        }
        Ok((out, bad))
    }

    /// The deletion record of snapshot `id`, if there is one.
    pub fn tombstone(&self, id: &Id) -> Result<Option<Tombstone>> {
        let name = id.to_hex();
        match records::get::<Tombstone>(self, ObjectKind::Tombstone, &name)? {
            None => Ok(None),
            Some(t) => checked(&name, t)
                .map(Some)
                .map_err(|detail| RepoError::corrupt(ObjectKind::Tombstone.key(&name), detail)),
        }
    }

    /// Purge a snapshot: store its deletion record `t`, then delete its
    /// manifest. Never the other way round: a crash in between leaves a
    /// record beside a snapshot that still exists (`check` warns; calling
    /// this again finishes), never a deletion without a record. A manifest
    /// that Object Lock retains is left alone before any record is written
    /// when the store can say so; a store that refuses the delete anyway
    /// (a legal hold) is reported as [`Forgotten::Locked`], not an error.
    pub fn forget_snapshot(&self, t: &Tombstone) -> Result<Forgotten> {
        let name = t.snapshot.to_hex();
        // Still there? A record must never be written for a snapshot that
        // something else deleted: it would make that deletion look
        // intended.
        match self.block_on(self.backend().head(ObjectKind::Snapshot, &name)) {
            Ok(_) => {}
            Err(StorageError::NotFound { .. }) => return self.gone(&name),
            Err(e) => return Err(e.into()),
        }
        if let Some(detail) = self.retained(ObjectKind::Snapshot, &name)? {
            return Ok(Forgotten::Locked {
                detail,
                recorded: false,
            });
        }
        if !records::put(self, ObjectKind::Tombstone, &name, t)? {
            // Written by an earlier, interrupted run (or a concurrent
            // one): it must be a genuine record of this snapshot.
            if self.tombstone(&t.snapshot)?.is_none() {
                return Err(RepoError::Invalid(format!(
                    "{} exists but cannot be read back",
                    ObjectKind::Tombstone.key(&name)
                )));
            }
        }
        if let Some(c) = self.cache() {
            c.remove(CacheKind::Snapshot, &name);
        }
        match self.block_on(self.backend().delete(ObjectKind::Snapshot, &name)) {
            Ok(()) => Ok(Forgotten::Deleted),
            Err(StorageError::NotFound { .. }) => Ok(Forgotten::AlreadyGone),
            Err(e) if e.class() == ErrorClass::Locked => {
                // The snapshot stays, so its record must not vouch for a
                // later deletion: take it back where the store allows (an
                // Object Lock store retains the record too; `check` then
                // warns about a record beside a live snapshot).
                let recorded = !matches!(
                    self.block_on(self.backend().delete(ObjectKind::Tombstone, &name)),
                    Ok(()) | Err(StorageError::NotFound { .. })
                );
                Ok(Forgotten::Locked {
                    detail: e.to_string(),
                    recorded,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Purge WAL manifest `name` (`<cluster>-<file name>`) that retention
    /// decided no kept base backup needs; its blobs become garbage for GC.
    /// No deletion record: nothing chains WAL manifests, and retention
    /// only ever removes the oldest ones (a prefix of the archive). Object
    /// Lock is handled as for snapshots.
    pub fn forget_wal_manifest(&self, name: &str) -> Result<Forgotten> {
        if let Some(detail) = self.retained(ObjectKind::Wal, name)? {
            return Ok(Forgotten::Locked {
                detail,
                recorded: false,
            });
        }
        match self.block_on(self.backend().delete(ObjectKind::Wal, name)) {
            Ok(()) => Ok(Forgotten::Deleted),
            Err(StorageError::NotFound { .. }) => Ok(Forgotten::AlreadyGone),
            Err(e) if e.class() == ErrorClass::Locked => Ok(Forgotten::Locked {
                detail: e.to_string(),
                recorded: false,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// The Object Lock retention still running on object `kind/name`, as a
    /// description, or `None` (none, expired, or the store has no Object
    /// Lock; a missing object is for the delete to report).
    fn retained(&self, kind: ObjectKind, name: &str) -> Result<Option<String>> {
        if !self.capabilities().retention {
            return Ok(None);
        }
        match self.block_on(self.backend().retention(kind, name)) {
            Ok(Some(r)) if r.until > self.now() => Ok(Some(format!(
                "Object Lock {} retention until {}",
                r.mode.as_str(),
                r.until.to_rfc3339()
            ))),
            Ok(_) | Err(StorageError::Unsupported { .. }) | Err(StorageError::NotFound { .. }) => {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The manifest is already gone: fine if a record says it was purged,
    /// else an error (something else deleted it, and no record may make
    /// that look intended).
    fn gone(&self, name: &str) -> Result<Forgotten> {
        let id: Id = name
            .parse()
            .map_err(|e| RepoError::Invalid(format!("snapshot name {name}: {e}")))?;
        match self.tombstone(&id)? {
            Some(_) => Ok(Forgotten::AlreadyGone),
            None => Err(RepoError::Invalid(format!(
                "snapshot {name} disappeared without a deletion record; run `holdfast check`"
            ))),
        }
    }
}
