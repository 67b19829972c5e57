//! Object Lock legal holds on what held snapshots need, for stores that
//! have them (S3 with Object Lock). A legal hold has no end date: the
//! store refuses to delete the object version, whoever asks, until the
//! hold is removed.
//!
//! What a snapshot needs: its manifest, every pack holding one of its
//! trees or data blobs, every index object naming one of those packs
//! (without them the packs cannot be found), and for a physical
//! PostgreSQL base backup the WAL manifests of its cluster from its start
//! to its stop segment (and the timeline histories up to its timeline),
//! with their packs and index objects too. Key slots and the config are
//! not held: removing a password must stay possible, and the config is
//! never deleted.
//!
//! The store keeps no count of who needs an object, so callers compute
//! sets: what the remaining holds need stays held, and only the rest of
//! what a released hold needed loses its legal hold (`holdfast_ops::holds`).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use holdfast_storage::{Backend, ErrorClass, ObjectKind, StorageError};
use serde::Serialize;

use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::reach::Walker;
use crate::repository::Repository;
use crate::snapshot::SnapshotEntry;
use crate::walmanifest::NamedManifest;

/// A stored object: kind and name.
pub type ObjectRef = (ObjectKind, String);

/// What setting or clearing legal holds did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LegalHoldChange {
    /// Objects whose legal hold was set (or cleared).
    pub changed: usize,
    /// Objects no longer stored (nothing to do for them).
    pub gone: usize,
}

/// Timeline and position (log, segment) of a WAL file name that starts
/// with a segment name.
fn segment(name: &str) -> Option<(u32, (u32, u32))> {
    let hex = |r: std::ops::Range<usize>| {
        name.get(r)
            .filter(|s| s.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|s| u32::from_str_radix(s, 16).ok())
    };
    Some((hex(0..8)?, (hex(8..16)?, hex(16..24)?)))
}

/// The WAL a base backup needs: cluster, timeline, first and last
/// segment position.
type WalRange = (String, u32, (u32, u32), (u32, u32));

/// The WAL range of a base backup, from its snapshot's `meta`.
fn wal_range(e: &SnapshotEntry) -> Option<WalRange> {
    let meta = &e.snapshot.meta;
    let text = |k: &str| meta.get(k).and_then(|v| v.as_str());
    let cluster = text("system_identifier")?.to_string();
    let (tl, start) = segment(text("start_wal")?)?;
    let (_, stop) = segment(text("stop_wal")?)?;
    Some((cluster, tl, start, stop))
}

/// Does the base backup range need this WAL file?
fn needs_wal(range: &WalRange, cluster: &str, name: &str) -> bool {
    let (c, tl, start, stop) = range;
    if c != cluster {
        return false;
    }
    if let Some(h) = name.strip_suffix(".history") {
        return u32::from_str_radix(h, 16).is_ok_and(|t| t <= *tl);
    }
    segment(name).is_some_and(|(t, pos)| t == *tl && pos >= *start && pos <= *stop)
}

impl Repository {
    /// Every stored object the snapshots `held` need (see the module
    /// docs). Loads the index: call it after listing the snapshots. An
    /// index object that cannot be read is included (what it names is
    /// unknown, and holding too much is the safe side).
    pub fn objects_needed(&self, held: &[SnapshotEntry]) -> Result<BTreeSet<ObjectRef>> {
        let mut out: BTreeSet<ObjectRef> = BTreeSet::new();
        if held.is_empty() {
            return Ok(out);
        }
        for e in held {
            out.insert((ObjectKind::Snapshot, e.id.to_hex()));
        }
        let ranges: Vec<_> = held.iter().filter_map(wal_range).collect();
        let wal: Vec<NamedManifest> = if ranges.is_empty() {
            Vec::new()
        } else {
            // Unreadable manifests cannot serve a restore; nothing to hold.
            self.wal_manifests()?
                .0
                .into_iter()
                .filter(|(_, m)| ranges.iter().any(|r| needs_wal(r, &m.cluster, &m.name)))
                .collect()
        };
        for (name, _) in &wal {
            out.insert((ObjectKind::Wal, name.clone()));
        }
        self.load_index()?;
        let reach = Walker::new(self).reach(held, &wal)?;
        let packs: HashSet<Id> = reach
            .data_packs
            .iter()
            .chain(reach.tree_packs.iter())
            .copied()
            .collect();
        for p in &packs {
            out.insert((ObjectKind::Pack, p.to_hex()));
        }
        let names: Vec<String> = self
            .block_on(self.backend().list(ObjectKind::Index))?
            .into_iter()
            .map(|m| m.name)
            .collect();
        for (name, got) in self.read_index_objects(&names)? {
            let needed = match got {
                Ok(infos) => infos.iter().any(|p| packs.contains(&p.id)),
                Err(_) => true,
            };
            if needed {
                out.insert((ObjectKind::Index, name));
            }
        }
        Ok(out)
    }

    /// Set (`on`) or clear the legal hold of every object in `objects`,
    /// `parallelism` requests at a time. An object no longer stored is
    /// counted, not an error; any other failure stops with an error
    /// naming the object.
    pub fn set_legal_holds(
        &self,
        objects: &BTreeSet<ObjectRef>,
        on: bool,
    ) -> Result<LegalHoldChange> {
        if objects.is_empty() {
            return Ok(LegalHoldChange::default());
        }
        let backend: Arc<dyn Backend> = Arc::clone(self.backend());
        let par = self.capabilities().parallelism.max(1);
        let objects: Vec<ObjectRef> = objects.iter().cloned().collect();
        self.block_on(async move {
            let sem = Arc::new(tokio::sync::Semaphore::new(par));
            let mut tasks = tokio::task::JoinSet::new();
            for (kind, name) in objects {
                let (b, sem) = (backend.clone(), sem.clone());
                tasks.spawn(async move {
                    let _p = sem.acquire_owned().await;
                    let r = b.set_legal_hold(kind, &name, on).await;
                    (kind, name, r)
                });
            }
            let mut done = LegalHoldChange::default();
            while let Some(joined) = tasks.join_next().await {
                let (kind, name, r) = joined
                    .map_err(|e| RepoError::Invalid(format!("a legal hold request failed: {e}")))?;
                match r {
                    Ok(()) => done.changed += 1,
                    Err(StorageError::NotFound { .. }) => done.gone += 1,
                    Err(e) => {
                        let what = if on { "placing" } else { "removing" };
                        return Err(RepoError::from(e)
                            .context(format!("{what} the legal hold of {}", kind.key(&name))));
                    }
                }
            }
            Ok(done)
        })
    }

    /// Whether the store says `kind/name` carries a legal hold (`None`: it
    /// has no legal holds).
    pub fn has_legal_hold(&self, kind: ObjectKind, name: &str) -> Result<Option<bool>> {
        match self.block_on(self.backend().legal_hold(kind, name)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.class() == ErrorClass::Unsupported => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_backup_needs_its_segments_and_earlier_histories_only() {
        let r = ("7".to_string(), 2, (0, 4), (0, 6));
        for yes in [
            "000000020000000000000004",
            "000000020000000000000006",
            "000000020000000000000004.00000028.backup",
            "000000020000000000000005.partial",
            "00000002.history",
            "00000001.history",
        ] {
            assert!(needs_wal(&r, "7", yes), "{yes}");
        }
        for no in [
            "000000020000000000000003",
            "000000020000000000000007",
            "000000010000000000000005",
            "00000003.history",
            "junk",
        ] {
            assert!(!needs_wal(&r, "7", no), "{no}");
        }
        assert!(!needs_wal(&r, "8", "000000020000000000000005"));
    }
}
