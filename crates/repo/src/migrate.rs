//! `holdfast migrate`: upgrade a format-1 or format-2 repository in place to
//! format 3 (name-bound envelopes, snapshot predecessors).
//!
//! Every sealed object is re-sealed in a version-2 envelope; packs, key
//! slots and blobs are untouched (packs and blobs are verified by their
//! hashes, slots by their names). The steps are ordered so that a crash at
//! any point leaves a repository that opens and reads, and a re-run
//! finishes the job (docs/format.md, "Crash safety", has the table):
//!
//! 1. The new config is staged as `config.next` (the old `config` stays,
//!    so the repository is still the old format and reads as before).
//! 2. Index objects: the re-sealed copy is written (a new name: the hash of
//!    its bytes), then the old one deleted. A crash between leaves two
//!    index objects listing the same packs, which is harmless.
//! 3. Snapshots, oldest first: the re-sealed copy records the old id in
//!    `migrated_from` (so a re-run finds it and only deletes the original),
//!    its `parent` and `predecessors` are mapped to the new ids, and a
//!    snapshot without predecessors gets the previous one of its source and
//!    host. Then the old one is deleted. Snapshot ids change.
//! 4. WAL manifests keep their names, and storage is write-once: the
//!    re-sealed copy is staged as `wal/<name>.migrating`, the original
//!    deleted, the copy put under the name, the staged copy deleted. A
//!    reader that misses the manifest in between reads the staged copy.
//! 5. The config: `config` deleted, the staged bytes put as `config`,
//!    `config.next` deleted. Between the first two, opening reads the
//!    staged config (see `Repository::open_with`).
//!
//! Other writers must not run meanwhile: a backup that opened the
//! repository before step 5 still writes version-1 envelopes, which the
//! migrated repository refuses (and `check` reports). Repositories with
//! Object Lock are refused: their objects cannot be deleted.

use bytes::Bytes;
use holdfast_storage::{ObjectKind, StorageError};
use serde::Serialize;

use crate::config::{self, FORMAT_VERSION, STAGED_CONFIG};
use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::object::{self, Binding, ENVELOPE_V1, ENVELOPE_V2};
use crate::repository::Repository;
use crate::snapshot::{Snapshot, SnapshotEntry};
use crate::walmanifest::{self, STAGED_SUFFIX};

/// What a migration did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MigrateReport {
    /// The format found (the staged one if a migration was interrupted
    /// after replacing the config).
    pub from: u32,
    pub to: u32,
    /// Nothing was left to do.
    pub already_current: bool,
    pub index_objects: usize,
    /// Old id -> new id of every snapshot re-sealed by this run.
    pub snapshots: Vec<(Id, Id)>,
    pub wal_manifests: usize,
}

/// Upgrade `repo` to the newest format (see the module docs). `progress`
/// is told what each step does.
pub fn migrate(repo: &Repository, progress: &dyn Fn(&str)) -> Result<MigrateReport> {
    let mut report = MigrateReport {
        from: repo.format_version(),
        to: FORMAT_VERSION,
        ..MigrateReport::default()
    };
    if repo.config().lock.is_some() {
        return Err(RepoError::Invalid(format!(
            "{} uses Object Lock: its objects cannot be deleted, so they cannot be re-sealed in place; copy it into a new repository instead",
            repo.location()
        )));
    }
    let has_config = exists(repo, ObjectKind::Config, "config")?;
    let has_staged = exists(repo, ObjectKind::Config, STAGED_CONFIG)?;
    if object::writes_bound(repo.format_version()) && has_config && !has_staged {
        let staged_wal = repo
            .block_on(repo.backend().list(ObjectKind::Wal))?
            .iter()
            .any(|m| m.name.ends_with(STAGED_SUFFIX));
        if !staged_wal {
            report.already_current = true;
            return Ok(report);
        }
    }

    // 1. Stage the new config (or check the one a crashed run staged).
    if has_staged {
        let bytes = repo.block_on(repo.backend().get(ObjectKind::Config, STAGED_CONFIG, None))?;
        let staged = config::decode(repo.key(), &bytes, &repo.location())?;
        if config::read_version(&bytes, &repo.location())? != FORMAT_VERSION
            || staged.id != repo.config().id
        {
            return Err(RepoError::corrupt(
                STAGED_CONFIG,
                "not the staged config of this repository's migration; remove it and run migrate again",
            ));
        }
    } else {
        progress("staging the new config");
        let bytes = config::encode(repo.key(), repo.config(), FORMAT_VERSION)?;
        repo.block_on(repo.backend().put(
            ObjectKind::Config,
            STAGED_CONFIG,
            Bytes::from(bytes),
            &repo.put_options(),
        ))?;
    }

    // 2. Index objects.
    progress("re-sealing index objects");
    for m in repo.block_on(repo.backend().list(ObjectKind::Index))? {
        let bytes = repo.block_on(repo.backend().get(ObjectKind::Index, &m.name, None))?;
        let b = Binding::new(ObjectKind::Index, &m.name);
        let payload = open_old(repo, b, &bytes)?;
        if object::envelope_version(&bytes) == Some(ENVELOPE_V2) {
            continue;
        }
        put_bound(repo, Binding::new(ObjectKind::Index, ""), &payload)?;
        repo.block_on(repo.backend().delete(ObjectKind::Index, &m.name))?;
        report.index_objects += 1;
    }

    // 3. Snapshots, oldest first.
    progress("re-sealing snapshots");
    migrate_snapshots(repo, &mut report)?;

    // 4. WAL manifests.
    progress("re-sealing WAL manifests");
    migrate_wal(repo, &mut report)?;

    // 5. The config, last.
    progress("replacing the config");
    let staged = repo.block_on(repo.backend().get(ObjectKind::Config, STAGED_CONFIG, None))?;
    match repo.block_on(repo.backend().get(ObjectKind::Config, "config", None)) {
        Ok(current) if current == staged => {}
        Ok(current) => {
            // Delete, then put: write-once storage has no replace. Until
            // the put lands, opening reads `config.next`.
            if config::read_version(&current, &repo.location())? < FORMAT_VERSION {
                repo.block_on(repo.backend().delete(ObjectKind::Config, "config"))?;
                put_config(repo, &staged)?;
            }
        }
        Err(StorageError::NotFound { .. }) => put_config(repo, &staged)?,
        Err(e) => return Err(e.into()),
    }
    repo.block_on(repo.backend().delete(ObjectKind::Config, STAGED_CONFIG))?;
    Ok(report)
}

fn put_config(repo: &Repository, bytes: &Bytes) -> Result<()> {
    repo.block_on(repo.backend().put(
        ObjectKind::Config,
        "config",
        bytes.clone(),
        &repo.put_options(),
    ))?;
    Ok(())
}

fn exists(repo: &Repository, kind: ObjectKind, name: &str) -> Result<bool> {
    match repo.block_on(repo.backend().head(kind, name)) {
        Ok(_) => Ok(true),
        Err(StorageError::NotFound { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Open an object of the repository being migrated: a version-1 envelope
/// as in its old format (content-addressed names still checked), or a
/// version-2 one a previous run wrote.
fn open_old(repo: &Repository, b: Binding<'_>, bytes: &[u8]) -> Result<Vec<u8>> {
    let format = match object::envelope_version(bytes) {
        Some(ENVELOPE_V1) => 2,
        _ => FORMAT_VERSION,
    };
    object::open_bound(repo.key(), format, b, bytes).map_err(|e| {
        RepoError::Invalid(format!(
            "cannot migrate: {e}; run `holdfast check` and repair the repository first"
        ))
    })
}

/// Seal `payload` as a format-3 object and store it; returns its name.
fn put_bound(repo: &Repository, b: Binding<'_>, payload: &[u8]) -> Result<String> {
    let bytes = object::seal_bound(repo.key(), b, payload)?;
    let name = if b.content_addressed() {
        Id::of_stored(&bytes).to_hex()
    } else {
        b.name.to_string()
    };
    put_once(repo, b.kind, &name, Bytes::from(bytes))?;
    Ok(name)
}

fn put_once(repo: &Repository, kind: ObjectKind, name: &str, bytes: Bytes) -> Result<()> {
    match repo.block_on(repo.backend().put(kind, name, bytes, &repo.put_options())) {
        Ok(()) | Err(StorageError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn migrate_snapshots(repo: &Repository, report: &mut MigrateReport) -> Result<()> {
    // (snapshot, old id, already version 2)
    let mut all: Vec<(Snapshot, Id, bool)> = Vec::new();
    for m in repo.block_on(repo.backend().list(ObjectKind::Snapshot))? {
        let bytes = repo.block_on(repo.backend().get(ObjectKind::Snapshot, &m.name, None))?;
        let b = Binding::new(ObjectKind::Snapshot, &m.name);
        let plain = open_old(repo, b, &bytes)?;
        let snap: Snapshot = serde_json::from_slice(&plain)
            .map_err(|e| RepoError::corrupt(b.key(), format!("bad JSON: {e}")))?;
        let id: Id = m
            .name
            .parse()
            .map_err(|e| RepoError::corrupt(b.key(), format!("{e}")))?;
        let done = object::envelope_version(&bytes) == Some(ENVELOPE_V2);
        all.push((snap, id, done));
    }
    // Oldest first; a copy a crashed run made sorts before its original.
    all.sort_by(|a, b| {
        a.0.time
            .cmp(&b.0.time)
            .then(b.2.cmp(&a.2))
            .then(a.1.cmp(&b.1))
    });
    let mut map: std::collections::HashMap<Id, Id> = all
        .iter()
        .filter(|(s, _, done)| *done && s.migrated_from.is_some())
        .filter_map(|(s, id, _)| s.migrated_from.map(|old| (old, *id)))
        .collect();
    let mut sealed: Vec<SnapshotEntry> = Vec::new();
    for (snap, id, done) in all {
        if done {
            sealed.push(SnapshotEntry { id, snapshot: snap });
            continue;
        }
        if !map.contains_key(&id) {
            let mut new = snap.clone();
            new.migrated_from = Some(id);
            new.parent = snap.parent.map(|p| map.get(&p).copied().unwrap_or(p));
            new.predecessors = if snap.predecessors.is_empty() {
                crate::snapshot::latest_of_same_source(&sealed, &snap)
            } else {
                snap.predecessors
                    .iter()
                    .map(|p| map.get(p).copied().unwrap_or(*p))
                    .collect()
            };
            let json = serde_json::to_vec(&new)
                .map_err(|e| RepoError::Invalid(format!("cannot serialise: {e}")))?;
            let name = put_bound(repo, Binding::new(ObjectKind::Snapshot, ""), &json)?;
            let new_id: Id = name
                .parse()
                .map_err(|e| RepoError::Invalid(format!("{e}")))?;
            map.insert(id, new_id);
            sealed.push(SnapshotEntry {
                id: new_id,
                snapshot: new,
            });
            report.snapshots.push((id, new_id));
        }
        repo.block_on(repo.backend().delete(ObjectKind::Snapshot, &id.to_hex()))?;
    }
    Ok(())
}

fn migrate_wal(repo: &Repository, report: &mut MigrateReport) -> Result<()> {
    let names: Vec<String> = repo
        .block_on(repo.backend().list(ObjectKind::Wal))?
        .into_iter()
        .map(|m| m.name)
        .collect();
    // Finish what a crashed run staged first.
    for staged in names.iter().filter(|n| n.ends_with(STAGED_SUFFIX)) {
        let name = staged.trim_end_matches(STAGED_SUFFIX);
        let bytes = repo.block_on(repo.backend().get(ObjectKind::Wal, staged, None))?;
        // The staged copy is bound to the final name: check it before use.
        object::open_bound(
            repo.key(),
            FORMAT_VERSION,
            Binding::new(ObjectKind::Wal, name),
            &bytes,
        )?;
        replace_wal(repo, name, staged, bytes)?;
        report.wal_manifests += 1;
    }
    for name in names.iter().filter(|n| !n.ends_with(STAGED_SUFFIX)) {
        if names.contains(&format!("{name}{STAGED_SUFFIX}")) {
            continue; // done above
        }
        let bytes = repo.block_on(repo.backend().get(ObjectKind::Wal, name, None))?;
        if object::envelope_version(&bytes) == Some(ENVELOPE_V2) {
            continue;
        }
        let b = Binding::new(ObjectKind::Wal, name);
        let plain = open_old(repo, b, &bytes)?;
        let m: walmanifest::WalManifest = serde_json::from_slice(&plain)
            .map_err(|e| RepoError::corrupt(b.key(), format!("bad JSON: {e}")))?;
        if m.object_name() != *name {
            return Err(RepoError::Misplaced {
                object: b.key(),
                holds: format!("the manifest of {}", ObjectKind::Wal.key(&m.object_name())),
                how: "renamed or swapped; cannot migrate it".into(),
            });
        }
        let sealed = Bytes::from(object::seal_bound(repo.key(), b, &plain)?);
        let staged = format!("{name}{STAGED_SUFFIX}");
        put_once(repo, ObjectKind::Wal, &staged, sealed.clone())?;
        replace_wal(repo, name, &staged, sealed)?;
        report.wal_manifests += 1;
    }
    Ok(())
}

/// Put the staged re-sealed `bytes` in place of manifest `name`, then drop
/// the staged copy (see step 4 of the module docs).
fn replace_wal(repo: &Repository, name: &str, staged: &str, bytes: Bytes) -> Result<()> {
    match repo.block_on(repo.backend().get(ObjectKind::Wal, name, None)) {
        Ok(current) if object::envelope_version(&current) == Some(ENVELOPE_V2) => {}
        Ok(_) => {
            repo.block_on(repo.backend().delete(ObjectKind::Wal, name))?;
            put_once(repo, ObjectKind::Wal, name, bytes)?;
        }
        Err(StorageError::NotFound { .. }) => put_once(repo, ObjectKind::Wal, name, bytes)?,
        Err(e) => return Err(e.into()),
    }
    repo.block_on(repo.backend().delete(ObjectKind::Wal, staged))?;
    Ok(())
}
