//! Repairs that rebuild metadata from data, and put misplaced objects back.
//!
//! `repair_index` reads every pack's own trailer and writes a new index
//! object for every pack that no readable index covers. Packs are the source
//! of truth; nothing in them is changed.
//!
//! Unreadable objects under `index/` (and, with `repair_snapshots`, under
//! `snapshots/`) are identified before anything happens to them:
//!
//! - a pack, index object or snapshot of this repository (it opens under the
//!   repository key) is *placed*: copied, write-once, to where it belongs,
//!   and only then removed from where it was;
//! - an index object is deleted only when it is proved damaged: it has the
//!   envelope of a sealed object, its authenticated decryption fails under
//!   this repository's key, and its bytes no longer hash to its name (every
//!   index object is named by the hash of its bytes, so it was modified or
//!   truncated after it was written); what it described is reindexed from
//!   the packs;
//! - anything else (another repository's object, a stray file, a damaged
//!   snapshot) is *moved aside* to `lost+found/<kind>-<name>`, never deleted.

use std::collections::HashSet;

use bytes::Bytes;
use holdfast_storage::{ObjectKind, PutOptions, StorageError};
use serde::Serialize;

use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::pack::{self, PackInfo};
use crate::repository::Repository;
use crate::snapshot::Snapshot;
use crate::{index, object};

#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairReport {
    pub packs_scanned: usize,
    pub packs_reindexed: usize,
    pub unreadable_packs: Vec<String>,
    /// Index objects proved damaged and deleted.
    pub removed_index_objects: Vec<String>,
    /// Objects put back where they belong: "from -> to" keys.
    pub placed: Vec<String>,
    /// Objects moved to `lost+found/`: "from -> to (why)".
    pub moved_aside: Vec<String>,
}

/// What an object found in the wrong place turned out to be.
enum Identity {
    Pack(PackInfo),
    Index,
    Snapshot,
    /// A sealed object whose authentication fails and whose bytes do not
    /// hash to its name: modified after it was written.
    Damaged(String),
    /// Cannot be placed; the reason.
    Unknown(String),
}

fn identify(repo: &Repository, name: &str, bytes: &[u8]) -> Identity {
    let key = repo.key();
    if bytes.starts_with(pack::PACK_MAGIC) {
        return match pack::read_info(key, bytes, &format!("object {name}")) {
            Ok(info) if info.id == Id::of_stored(bytes) => Identity::Pack(info),
            Ok(_) => Identity::Unknown("a pack whose bytes do not hash to its name".into()),
            Err(e) => Identity::Unknown(format!("looks like a pack but is unreadable: {e}")),
        };
    }
    if !bytes.starts_with(object::OBJECT_MAGIC) {
        return Identity::Unknown("not a Holdfast object".into());
    }
    let intact = name.parse::<Id>().ok() == Some(Id::of_stored(bytes));
    let (kind, payload) = match object::open_any(key, bytes, &format!("object {name}")) {
        Ok(x) => x,
        Err(e) if !intact => return Identity::Damaged(e.to_string()),
        Err(_) => return Identity::Unknown(
            "intact, but does not open under this repository's key (another repository's object?)"
                .into(),
        ),
    };
    // A name-bound envelope says what it is; an older one is told by
    // what its payload parses as.
    let as_index = || index::decode(&payload, "object").is_ok();
    let as_snapshot = || serde_json::from_slice::<Snapshot>(&payload).is_ok();
    match kind {
        Some(ObjectKind::Index) if as_index() => return Identity::Index,
        Some(ObjectKind::Snapshot) if as_snapshot() => return Identity::Snapshot,
        Some(other) => {
            return Identity::Unknown(format!(
                "a {other} object of this repository, which repair does not place"
            ))
        }
        None if as_index() => return Identity::Index,
        None if as_snapshot() => return Identity::Snapshot,
        None => {}
    }
    Identity::Unknown("an object of this repository that is neither an index nor a snapshot".into())
}

/// Put `bytes` at `kind`/`name` (write-once; already there is fine).
fn put_once(repo: &Repository, kind: ObjectKind, name: &str, bytes: &[u8]) -> Result<()> {
    let opts = if kind == ObjectKind::LostFound {
        PutOptions::default()
    } else {
        repo.put_options()
    };
    match repo.block_on(
        repo.backend()
            .put(kind, name, Bytes::copy_from_slice(bytes), &opts),
    ) {
        Ok(()) | Err(StorageError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Copy to `to`, then remove from `from`: a move that never loses the object.
fn relocate(
    repo: &Repository,
    (from, name): (ObjectKind, &str),
    (to, to_name): (ObjectKind, &str),
    bytes: &[u8],
) -> Result<String> {
    put_once(repo, to, to_name, bytes)?;
    repo.block_on(repo.backend().delete(from, name))?;
    Ok(format!("{} -> {}", from.key(name), to.key(to_name)))
}

fn move_aside(
    repo: &Repository,
    from: ObjectKind,
    name: &str,
    bytes: &[u8],
    why: &str,
    report: &mut RepairReport,
) -> Result<()> {
    let aside = format!("{}-{}", from.dir(), name);
    let moved = relocate(repo, (from, name), (ObjectKind::LostFound, &aside), bytes)?;
    report.moved_aside.push(format!("{moved} ({why})"));
    Ok(())
}

/// Deal with one unreadable object of kind `from` (index or snapshot):
/// place it, delete it (proved-damaged index objects only) or move it aside.
/// A pack placed in `data/` is returned for reindexing.
fn sort_out(
    repo: &Repository,
    from: ObjectKind,
    name: &str,
    report: &mut RepairReport,
) -> Result<Option<PackInfo>> {
    let bytes = match repo.block_on(repo.backend().get(from, name, None)) {
        Ok(b) => b,
        Err(StorageError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let stored_name = Id::of_stored(&bytes).to_hex();
    let target = match identify(repo, name, &bytes) {
        Identity::Pack(info) => {
            let moved = relocate(repo, (from, name), (ObjectKind::Pack, &stored_name), &bytes)?;
            report.placed.push(moved);
            return Ok(Some(info));
        }
        Identity::Index => ObjectKind::Index,
        Identity::Snapshot => ObjectKind::Snapshot,
        Identity::Damaged(e) if from == ObjectKind::Index => {
            repo.block_on(repo.backend().delete(from, name))?;
            report
                .removed_index_objects
                .push(format!("{name} (damaged: {e})"));
            return Ok(None);
        }
        Identity::Damaged(e) => {
            move_aside(repo, from, name, &bytes, &format!("damaged: {e}"), report)?;
            return Ok(None);
        }
        Identity::Unknown(why) => {
            move_aside(repo, from, name, &bytes, &why, report)?;
            return Ok(None);
        }
    };
    if target == from {
        // Readable after all (e.g. a transient read error): leave it.
        return Ok(None);
    }
    let moved = relocate(repo, (from, name), (target, &stored_name), &bytes)?;
    report.placed.push(moved);
    Ok(None)
}

pub fn repair_index(repo: &Repository) -> Result<RepairReport> {
    // Repair what is in storage, not the local cache's copies.
    let _storage_only = repo.suspend_cache();
    repo.load_index()?;
    let mut report = RepairReport::default();
    for (name, _) in repo.index_problems().corrupt {
        sort_out(repo, ObjectKind::Index, &name, &mut report)?;
    }
    repo.load_index()?;
    let index = repo.index();
    let indexed: HashSet<Id> = index.packs().collect();
    let stored = repo.block_on(repo.backend().list(ObjectKind::Pack))?;
    let mut found: Vec<PackInfo> = Vec::new();
    for m in stored {
        let Ok(id) = m.name.parse::<Id>() else {
            continue;
        };
        if indexed.contains(&id) {
            continue;
        }
        report.packs_scanned += 1;
        let what = format!("pack {}", m.name);
        let info = repo
            .block_on(repo.backend().get(ObjectKind::Pack, &m.name, None))
            .map_err(RepoError::from)
            .and_then(|b| pack::read_info(repo.key(), &b, &what));
        match info {
            Ok(i) => found.push(i),
            Err(e) => report.unreadable_packs.push(format!("{what}: {e}")),
        }
    }
    report.packs_reindexed = found.len();
    for batch in found.chunks(256) {
        repo.write_index(batch)?;
    }
    repo.load_index()?;
    Ok(report)
}

/// Sort out every unreadable object under `snapshots/`: put back what
/// belongs elsewhere, move the rest to `lost+found/`. Never deletes.
pub fn repair_snapshots(repo: &Repository) -> Result<RepairReport> {
    let _storage_only = repo.suspend_cache();
    let mut report = RepairReport::default();
    let (_, bad) = repo.snapshots_with_errors()?;
    let mut placed_packs = Vec::new();
    for (name, _) in bad {
        if let Some(info) = sort_out(repo, ObjectKind::Snapshot, &name, &mut report)? {
            placed_packs.push(info);
        }
    }
    if !placed_packs.is_empty() {
        repo.load_index()?;
        let index = repo.index();
        let new: Vec<PackInfo> = placed_packs
            .into_iter()
            .filter(|p| !index.packs().any(|q| q == p.id))
            .collect();
        report.packs_reindexed = new.len();
        if !new.is_empty() {
            repo.write_index(&new)?;
        }
    }
    Ok(report)
}
