//! Garbage collection beside running backups (`docs/format.md`, "Garbage
//! collection", has the protocol and why it is safe).
//!
//! 1. **Mark** (no lease; as long as it takes): read every snapshot and WAL
//!    manifest (the roots), walk the trees, read every index object and list
//!    the packs. A pack none of whose blobs is reachable is *doomed*; a
//!    partly used one may be repacked.
//! 2. **Repack** (a shared lease, like any writer): copy live regions of
//!    mostly-unused packs into new packs and index them. The old packs join
//!    the doomed ones.
//! 3. **Sweep** (the exclusive lease, for seconds): walk the roots written
//!    since the mark (only their new trees) and read the index objects
//!    written since; a doomed pack that holds the only copy of a blob they
//!    reach is kept. Then rewrite the index objects naming doomed packs
//!    (merging small ones), delete the replaced index objects, delete the
//!    doomed packs.
//!
//! Writers never wait for the mark or the repack; they wait for the sweep
//! only while it holds the exclusive lease, and the sweep gives way to
//! writers when it acquires it (see `crate::lease`). Nothing here deletes
//! an object that Object Lock protects: such objects are reported and
//! tried again by a later run.

mod mark;
mod plan;
mod repack;
mod sweep;

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use holdfast_storage::ObjectKind;
use serde::Serialize;

use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::pack::PackInfo;
use crate::repository::Repository;

pub use mark::Marker;
pub use sweep::LockedObject;

/// Packs per index object written by GC (merged objects, repacked packs).
pub(crate) const INDEX_PACKS_PER_OBJECT: usize = 4096;
/// Index objects with fewer entries than this are merged when there are
/// two or more (each backup and `wal-push` writes small ones).
const SMALL_INDEX_ENTRIES: usize = 20_000;

/// How a GC run behaves.
#[derive(Debug, Clone, Copy)]
pub struct GcOptions {
    /// Plan only: read everything, write and delete nothing, take no lease.
    pub dry_run: bool,
    /// At most this percentage of the stored bytes is rewritten by
    /// repacking in one run (100: no limit; 0: never repack).
    pub max_repack_percent: f64,
    /// Repack until at most this percentage of what remains is
    /// unreachable (restic's `--max-unused`, whose default is 5%).
    pub max_unused_percent: f64,
    /// Never delete or repack a pack younger than this by the store's
    /// clock. Zero by default: the lease protocol, not time, protects the
    /// packs of running writers (see `docs/format.md`); a positive age adds
    /// kopia-style slack for writers that take no lease.
    pub min_age: chrono::Duration,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            dry_run: false,
            max_repack_percent: 100.0,
            // Tighter than restic's 5%: repacking is cheap here and does
            // not block backups, storage is what users pay for.
            max_unused_percent: 2.0,
            min_age: chrono::Duration::zero(),
        }
    }
}

/// What a GC run found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub snapshots: usize,
    pub wal_manifests: usize,
    /// Trees loaded while marking.
    pub trees: u64,
    /// Packs and bytes in storage before the run.
    pub packs_before: usize,
    pub bytes_before: u64,
    /// Packs and bytes in storage after the run (as planned, on a dry run).
    pub packs_after: usize,
    pub bytes_after: u64,
    /// Packs deleted: those with nothing reachable in them (including
    /// packs no index names, left by interrupted writers) and the
    /// repacked ones.
    pub packs_deleted: usize,
    pub bytes_deleted: u64,
    /// Of those, packs no index object named.
    pub unindexed_deleted: usize,
    /// Partly used packs rewritten, and the bytes read and written for it.
    pub packs_repacked: usize,
    pub repack_bytes_read: u64,
    pub repack_bytes_written: u64,
    pub packs_written: usize,
    /// Unreachable bytes left in partly used packs (not worth repacking,
    /// or over the budget).
    pub unused_bytes_kept: u64,
    /// Unreachable packs kept because they are younger than `min_age`.
    pub packs_kept_young: usize,
    /// Objects Object Lock kept (reported, retried by a later run).
    pub kept_locked: Vec<LockedObject>,
    pub packs_kept_locked: usize,
    pub bytes_kept_locked: u64,
    /// Packs not repacked, and why (e.g. in an archival storage class).
    pub not_repacked: Vec<String>,
    /// Packs an index names that are not in storage (`check` reports
    /// them; GC only drops the entries of those with nothing reachable).
    pub missing_packs: Vec<String>,
    pub index_objects_before: usize,
    pub index_objects_after: usize,
    /// Roots (snapshots, WAL manifests) committed between the mark and the
    /// sweep, walked under the exclusive lease.
    pub new_roots: usize,
    /// Doomed packs kept because a root committed meanwhile reaches them.
    pub packs_rescued: usize,
    /// How long the exclusive lease was held (what a writer may wait).
    pub exclusive_seconds: f64,
    pub seconds: f64,
    /// Anything the operator should know that is not an error.
    pub warnings: Vec<String>,
}

/// Progress: `(phase, done, total)`.
pub type Progress<'a> = &'a (dyn Fn(&str, u64, u64) + Sync);

/// Run garbage collection.
pub fn gc(repo: &Repository, opts: &GcOptions, progress: Progress<'_>) -> Result<GcReport> {
    let started = Instant::now();
    if repo.format_version() < 3 {
        return Err(RepoError::Invalid(format!(
            "garbage collection needs repository format 3 (this one is format {}); run `holdfast migrate` first",
            repo.format_version()
        )));
    }
    let mut r = GcReport {
        dry_run: opts.dry_run,
        ..GcReport::default()
    };
    let par = repo.capabilities().parallelism.max(2);

    // ---- mark ---------------------------------------------------------
    let roots = Roots::read(repo)?;
    mark::check_holds(repo, roots.snapshots.iter().map(|(n, _)| n.as_str()))?;
    let index_names = list_names(repo, ObjectKind::Index)?;
    let mut objects = read_objects(repo, &index_names)?;
    repo.load_index()?;
    let mut marker = Marker::new();
    let total_roots = (roots.snapshots.len() + roots.wal.len()) as u64;
    for (i, (name, tree)) in roots.snapshots.iter().enumerate() {
        progress("mark", i as u64, total_roots);
        marker.mark_tree(repo, name, *tree, &mut |_| {})?;
    }
    for (_, m) in &roots.wal {
        marker.mark_wal(m, &mut |_| {});
    }
    progress("mark", total_roots, total_roots);
    // The tree packs the walk kept in memory are not needed again (the
    // sweep reads only new trees): free them before the repack.
    repo.release_tree_cache();
    r.snapshots = roots.snapshots.len();
    r.wal_manifests = roots.wal.len();
    r.trees = marker.trees_loaded;
    let stored = repo.block_on(repo.backend().list(ObjectKind::Pack))?;
    let mut table = plan::PackTable::new(objects.iter().flat_map(|(_, p)| p.iter()), &stored);
    r.packs_before = stored.len();
    r.bytes_before = stored.iter().map(|m| m.size).sum();
    r.index_objects_before = index_names.len();
    if table.foreign > 0 {
        r.warnings.push(format!(
            "{} object(s) under data/ are not named like packs; left alone",
            table.foreign
        ));
    }

    // ---- plan ---------------------------------------------------------
    let limits = plan::RepackLimits {
        min_unused_share: 0.1,
        max_unused_share: opts.max_unused_percent.clamp(0.0, 100.0) / 100.0,
        max_repack_share: opts.max_repack_percent.clamp(0.0, 100.0) / 100.0,
    };
    let mut d = plan::decide(&table, marker.live(), repo.now(), opts.min_age, limits);
    r.packs_kept_young = d.young;
    for (id, live) in &d.missing {
        if *live {
            r.missing_packs.push(id.to_hex());
        }
    }
    if !r.missing_packs.is_empty() {
        r.warnings.push(format!(
            "{} pack(s) the index names are missing from storage and hold reachable data (e.g. {}); run `holdfast check`",
            r.missing_packs.len(),
            r.missing_packs[0]
        ));
    }
    // Packs in an archival class would need a retrieval to be read: they
    // are not repacked (one listing says which; deleting them needs none).
    if repo.capabilities().storage_classes && !d.repack.is_empty() {
        let classes = repo.pack_classes()?;
        d.repack.retain(|id| {
            let cold = classes
                .get(id)
                .and_then(|c| c.class.as_deref())
                .is_some_and(|c| matches!(c, "GLACIER" | "DEEP_ARCHIVE"));
            if cold {
                r.not_repacked
                    .push(format!("{id}: in an archival storage class"));
            }
            !cold
        });
    }
    // Object Lock (retention or a legal hold): what storage will refuse
    // to delete is neither deleted nor repacked (a repack's copy would
    // only add to what is kept).
    let candidates: Vec<String> = d
        .delete
        .iter()
        .chain(d.repack.iter())
        .map(Id::to_hex)
        .collect();
    let locked = sweep::retained(repo, ObjectKind::Pack, &candidates, par)?;
    if !locked.is_empty() {
        let is_locked = |id: &Id| locked.contains_key(&id.to_hex());
        d.delete.retain(|id| !is_locked(id));
        d.repack.retain(|id| !is_locked(id));
        for (name, until) in &locked {
            note_locked(&mut r, &table, ObjectKind::Pack, name, *until);
        }
    }

    if opts.dry_run {
        let repack_live: u64 = d
            .repack
            .iter()
            .filter_map(|id| table.packs.get(id))
            .map(|p| p.live_bytes(marker.live()))
            .sum();
        let pack_size = u64::from(repo.config().pack_size).max(1);
        let new_packs = repack_live.div_ceil(pack_size) as usize;
        r.packs_deleted = d.delete.len() + d.repack.len();
        r.bytes_deleted = sum_stored(&table, d.delete.iter().chain(d.repack.iter()));
        r.unindexed_deleted = count_unindexed(&table, d.delete.iter());
        r.packs_repacked = d.repack.len();
        r.repack_bytes_read = sum_stored(&table, d.repack.iter());
        r.repack_bytes_written = repack_live;
        r.packs_written = new_packs;
        r.unused_bytes_kept = d.unused_kept;
        r.packs_after = (r.packs_before + new_packs).saturating_sub(r.packs_deleted);
        r.bytes_after = (r.bytes_before + repack_live).saturating_sub(r.bytes_deleted);
        r.index_objects_after = r.index_objects_before;
        r.seconds = started.elapsed().as_secs_f64();
        return Ok(r);
    }

    // ---- repack ---------------------------------------------------------
    // Missing packs with nothing reachable lose their index entries too.
    let mut doomed: HashSet<Id> = d.delete.clone();
    let mut written: Vec<PackInfo> = Vec::new();
    let gone: HashSet<Id> = d
        .missing
        .iter()
        .filter(|(_, live)| !live)
        .map(|(id, _)| *id)
        .collect();
    doomed.extend(gone.iter().copied());
    if !d.repack.is_empty() {
        let lease = repo.writer_lease("gc-repack")?;
        let recs: Vec<&plan::PackRecord> = d
            .repack
            .iter()
            .filter_map(|id| table.packs.get(id))
            .collect();
        let done = repack::repack(repo, &recs, marker.live(), &|a, b| progress("repack", a, b))?;
        // The new packs are indexed: they count for the rescue below.
        for p in &done.written {
            table.add_indexed(p);
        }
        r.packs_repacked = done.done.len();
        r.repack_bytes_read = done.bytes_read;
        r.repack_bytes_written = done.bytes_written;
        r.packs_written = done.written.len();
        for (id, why) in &done.skipped {
            r.not_repacked.push(format!("{id}: {why}"));
        }
        doomed.extend(done.done.iter().copied());
        written = done.written;
        lease.release()?;
    }
    r.unused_bytes_kept = d.unused_kept;

    // ---- sweep ----------------------------------------------------------
    let swept = sweep_phase(
        repo,
        &roots,
        &index_names,
        &mut objects,
        &mut table,
        &mut marker,
        &mut doomed,
        &written,
        par,
        progress,
        &mut r,
    )?;
    let unindexed: HashSet<Id> = swept
        .iter()
        .filter(|id| table.packs.get(id).is_some_and(|p| !p.indexed))
        .copied()
        .collect();
    r.packs_deleted = swept.iter().filter(|id| !gone.contains(id)).count();
    r.bytes_deleted = sum_stored(&table, swept.iter());
    r.unindexed_deleted = unindexed.len();
    r.packs_after =
        r.packs_before + r.packs_written - r.packs_deleted.min(r.packs_before + r.packs_written);
    r.bytes_after = (r.bytes_before + r.repack_bytes_written).saturating_sub(r.bytes_deleted);
    // Small index objects (one per backup and per `wal-push`) merged.
    merge_small(repo, &objects, par, progress)?;
    r.index_objects_after = list_names(repo, ObjectKind::Index)?.len();
    // Our own index, for whatever the caller does next.
    repo.load_index()?;
    r.seconds = started.elapsed().as_secs_f64();
    Ok(r)
}

/// The roots as read by the mark.
struct Roots {
    /// (snapshot object name, root tree).
    snapshots: Vec<(String, Id)>,
    wal: Vec<(String, crate::walmanifest::WalManifest)>,
}

impl Roots {
    /// Every root. An unreadable snapshot or WAL manifest stops the run:
    /// what it references is unknown.
    fn read(repo: &Repository) -> Result<Roots> {
        let (snaps, bad) = repo.snapshots_with_errors()?;
        // Purged between the listing and the read: not a root any more.
        let bad = still_there(repo, ObjectKind::Snapshot, bad)?;
        if let Some((name, why)) = bad.first() {
            return Err(RepoError::corrupt(
                format!("snapshots/{name}"),
                format!("cannot be read ({why}); garbage collection deletes nothing while a root is unreadable (see `holdfast check`, `holdfast repair snapshots`)"),
            ));
        }
        let (wal, bad) = repo.wal_manifests()?;
        let bad = still_there(repo, ObjectKind::Wal, bad)?;
        if let Some((name, why)) = bad.first() {
            return Err(RepoError::corrupt(
                format!("wal/{name}"),
                format!("cannot be read ({why}); garbage collection deletes nothing while a root is unreadable (see `holdfast check`)"),
            ));
        }
        Ok(Roots {
            snapshots: snaps
                .into_iter()
                .map(|s| (s.id.to_hex(), s.snapshot.tree))
                .collect(),
            wal,
        })
    }
}

impl Roots {
    /// The roots written since `known` was read: a listing of each kind,
    /// and a read of only the new names (the sweep holds the exclusive
    /// lease; re-reading thousands of WAL manifests would hold it long).
    fn read_new(repo: &Repository, known: &Roots) -> Result<Roots> {
        let seen: HashSet<&str> = known.snapshots.iter().map(|(n, _)| n.as_str()).collect();
        let mut snapshots = Vec::new();
        for name in list_names(repo, ObjectKind::Snapshot)? {
            if seen.contains(name.as_str()) {
                continue;
            }
            let snap = match repo.load_snapshot(&name) {
                Ok(s) => s,
                // Purged since the listing.
                Err(e) if e.storage_class() == Some(holdfast_storage::ErrorClass::NotFound) => {
                    continue
                }
                Err(e) => {
                    return Err(e.context(format!(
                        "garbage collection deletes nothing while a root is unreadable: snapshot {name} written during the run"
                    )))
                }
            };
            snapshots.push((name, snap.tree));
        }
        let seen: HashSet<&str> = known.wal.iter().map(|(n, _)| n.as_str()).collect();
        let mut wal = Vec::new();
        for name in repo.list_wal_manifests()? {
            if seen.contains(name.as_str()) {
                continue;
            }
            // Gone since the listing: nothing to keep for it.
            if let Some(m) = repo.wal_manifest(&name).map_err(|e| {
                e.context(format!(
                    "garbage collection deletes nothing while a root is unreadable: WAL manifest {name} written during the run"
                ))
            })? {
                wal.push((name, m));
            }
        }
        Ok(Roots { snapshots, wal })
    }
}

/// Of objects that could not be read, those that are still stored (the
/// others were deleted between the listing and the read: a purge).
fn still_there(
    repo: &Repository,
    kind: ObjectKind,
    bad: Vec<crate::repository::Unreadable>,
) -> Result<Vec<crate::repository::Unreadable>> {
    let mut out = Vec::new();
    for (name, why) in bad {
        if repo.block_on(holdfast_storage::exists(
            repo.backend().as_ref(),
            kind,
            &name,
        ))? {
            out.push((name, why));
        }
    }
    Ok(out)
}

fn list_names(repo: &Repository, kind: ObjectKind) -> Result<Vec<String>> {
    let mut names: Vec<String> = repo
        .block_on(repo.backend().list(kind))?
        .into_iter()
        .map(|m| m.name)
        .collect();
    names.sort();
    Ok(names)
}

/// Every named index object, decoded; an unreadable one stops the run
/// (the packs it describes would look unindexed, i.e. deletable).
fn read_objects(repo: &Repository, names: &[String]) -> Result<Vec<(String, Vec<PackInfo>)>> {
    let mut out = Vec::with_capacity(names.len());
    for (name, got) in repo.read_index_objects(names)? {
        match got {
            Ok(packs) => out.push((name, packs)),
            Err(e) => {
                return Err(e.context(format!(
                    "garbage collection deletes nothing while the index is damaged (run `holdfast repair index`); index object {name}"
                )))
            }
        }
    }
    Ok(out)
}

fn sum_stored<'a>(table: &plan::PackTable, ids: impl Iterator<Item = &'a Id>) -> u64 {
    ids.filter_map(|id| table.packs.get(id).and_then(|p| p.stored))
        .sum()
}

fn count_unindexed<'a>(table: &plan::PackTable, ids: impl Iterator<Item = &'a Id>) -> usize {
    ids.filter(|id| table.packs.get(id).is_some_and(|p| !p.indexed))
        .count()
}

fn note_locked(
    r: &mut GcReport,
    table: &plan::PackTable,
    kind: ObjectKind,
    name: &str,
    until: Option<chrono::DateTime<chrono::Utc>>,
) {
    if kind == ObjectKind::Pack {
        r.packs_kept_locked += 1;
        r.bytes_kept_locked += name
            .parse::<Id>()
            .ok()
            .and_then(|id| table.packs.get(&id))
            .and_then(|p| p.stored)
            .unwrap_or(0);
    }
    r.kept_locked.push(LockedObject {
        kind: kind.dir().to_string(),
        name: name.to_string(),
        until,
    });
}

/// The exclusive phase. Returns the packs deleted.
#[allow(clippy::too_many_arguments)]
fn sweep_phase(
    repo: &Repository,
    roots: &Roots,
    index_names: &[String],
    objects: &mut Vec<(String, Vec<PackInfo>)>,
    table: &mut plan::PackTable,
    marker: &mut Marker,
    doomed: &mut HashSet<Id>,
    repacked: &[PackInfo],
    par: usize,
    progress: Progress<'_>,
    r: &mut GcReport,
) -> Result<Vec<Id>> {
    if doomed.is_empty() {
        return Ok(Vec::new());
    }
    let lease = repo.acquire_exclusive("gc").map_err(|e| {
        e.context(
            "garbage collection could not take the exclusive lease for its sweep; nothing was deleted (repacked data, if any, is stored and indexed); run it again when the writers named are done",
        )
    })?;
    let t0 = Instant::now();

    // Index objects written since the mark: their packs are in use by
    // someone (a writer that finished, our repack) and never doomed.
    let now_names = list_names(repo, ObjectKind::Index)?;
    let known: HashSet<&String> = index_names.iter().collect();
    let listed: HashSet<&String> = now_names.iter().collect();
    if let Some(gone) = index_names.iter().find(|n| !listed.contains(n)) {
        return Err(RepoError::Invalid(format!(
            "index object {gone} was deleted since this run began (another garbage collection?); nothing was deleted, run it again"
        )));
    }
    let new_names: Vec<String> = now_names
        .iter()
        .filter(|n| !known.contains(n))
        .cloned()
        .collect();
    for (name, packs) in read_objects(repo, &new_names)? {
        for p in &packs {
            table.add_indexed(p);
            doomed.remove(&p.id);
        }
        objects.push((name, packs));
    }

    // Roots committed since the mark: walk their new trees. A doomed pack
    // holding the only copies of a blob they reach is kept.
    let now_roots = Roots::read_new(repo, roots)?;
    let walked: HashSet<&String> = roots.snapshots.iter().map(|(n, _)| n).collect();
    let walked_wal: HashSet<&String> = roots.wal.iter().map(|(n, _)| n).collect();
    let mut newly: Vec<Id> = Vec::new();
    let mut new_roots = 0usize;
    let any_new = now_roots.snapshots.iter().any(|(n, _)| !walked.contains(n))
        || now_roots.wal.iter().any(|(n, _)| !walked_wal.contains(n));
    if any_new {
        // Trees of the new snapshots, and where their blobs are now.
        repo.load_index()?;
        if !repacked.is_empty() {
            repo.extend_index(repacked);
        }
    }
    for (name, tree) in &now_roots.snapshots {
        if !walked.contains(name) {
            new_roots += 1;
            marker.mark_tree(repo, name, *tree, &mut |b| newly.push(*b))?;
        }
    }
    for (name, m) in &now_roots.wal {
        if !walked_wal.contains(name) {
            new_roots += 1;
            marker.mark_wal(m, &mut |b| newly.push(*b));
        }
    }
    r.new_roots = new_roots;
    if !newly.is_empty() {
        // Which doomed packs hold each blob (doomed packs only: few).
        let mut holders: HashMap<Id, Vec<Id>> = HashMap::new();
        for id in doomed.iter() {
            if let Some(p) = table.packs.get(id) {
                for e in &p.entries {
                    holders.entry(e.id).or_default().push(*id);
                }
            }
        }
        let index = repo.index();
        for b in &newly {
            let Some(packs) = holders.get(b) else {
                continue;
            };
            // A copy outside the doomed packs (a repacked one, or a second
            // write) keeps the blob; when the index cannot show one, keep
            // every doomed pack holding it (at worst, space for a later run).
            let safe = index.get(b).is_some_and(|l| !doomed.contains(&l.pack));
            if !safe {
                for p in packs {
                    if doomed.remove(p) {
                        r.packs_rescued += 1;
                    }
                }
            }
        }
    }

    // Rewrite the index: objects naming doomed packs lose those entries.
    // An object storage will not delete keeps every pack it names.
    let mut rewrite = sweep::plan_rewrite(objects, doomed, 0);
    let retained = sweep::retained(repo, ObjectKind::Index, &rewrite.replace, par)?;
    if !retained.is_empty() {
        for (name, until) in &retained {
            // A retained object only kept for merging is simply not merged;
            // one naming doomed packs keeps them (its entries stay).
            let Some((_, packs)) = objects.iter().find(|(n, _)| n == name) else {
                continue;
            };
            if packs.iter().any(|p| doomed.contains(&p.id)) {
                for p in packs {
                    doomed.remove(&p.id);
                }
                note_locked(r, table, ObjectKind::Index, name, *until);
            }
        }
        let free: Vec<(String, Vec<PackInfo>)> = objects
            .iter()
            .filter(|(n, _)| !retained.contains_key(n))
            .cloned()
            .collect();
        rewrite = sweep::plan_rewrite(&free, doomed, 0);
    }
    lease.confirm()?;
    let mut written = Vec::new();
    for batch in rewrite.keep.chunks(INDEX_PACKS_PER_OBJECT) {
        written.push((repo.write_index(batch)?.to_hex(), batch.to_vec()));
    }
    let replace = rewrite.replace.clone();
    let refused = sweep::delete_all(repo, ObjectKind::Index, rewrite.replace, par, &|a, b| {
        progress("delete index", a, b)
    })?;
    for lo in &refused {
        if let Some((_, packs)) = objects.iter().find(|(n, _)| *n == lo.name) {
            for p in packs {
                doomed.remove(&p.id);
            }
        }
        r.kept_locked.push(lo.clone());
    }
    // What the index is now, for the merge that follows the sweep.
    let refused_names: HashSet<&String> = refused.iter().map(|l| &l.name).collect();
    let gone: HashSet<&String> = replace
        .iter()
        .filter(|n| !refused_names.contains(n))
        .collect();
    objects.retain(|(n, _)| !gone.contains(n));
    objects.extend(written);

    // Delete the doomed packs.
    lease.confirm()?;
    let names: Vec<String> = doomed.iter().map(Id::to_hex).collect();
    let refused = sweep::delete_all(repo, ObjectKind::Pack, names, par, &|a, b| {
        progress("delete packs", a, b)
    })?;
    let refused_ids: HashSet<String> = refused.iter().map(|l| l.name.clone()).collect();
    for lo in refused {
        note_locked(r, table, ObjectKind::Pack, &lo.name, lo.until);
    }
    let deleted: Vec<Id> = doomed
        .iter()
        .filter(|id| !refused_ids.contains(&id.to_hex()))
        .copied()
        .collect();
    r.exclusive_seconds = t0.elapsed().as_secs_f64();
    lease.release()?;
    Ok(deleted)
}

/// Merge small index objects into few, under a shared lease (so that no
/// other GC sweeps meanwhile: a merge must not bring back entries of packs
/// a sweep deletes), after our own sweep: `objects` is the index as the
/// sweep left it. Writers are not disturbed: every entry stays indexed
/// throughout (the merged objects are stored before the small ones go),
/// and a reader that listed a removed one lists again.
fn merge_small(
    repo: &Repository,
    objects: &[(String, Vec<PackInfo>)],
    par: usize,
    progress: Progress<'_>,
) -> Result<()> {
    let plan = sweep::plan_rewrite(objects, &HashSet::new(), SMALL_INDEX_ENTRIES);
    if plan.replace.is_empty() {
        return Ok(());
    }
    let lease = repo.writer_lease("gc-merge")?;
    // Anything we would merge that is gone (another GC swept before our
    // lease) may have named deleted packs: merge nothing this time.
    let listed: HashSet<String> = list_names(repo, ObjectKind::Index)?.into_iter().collect();
    if plan.replace.iter().any(|n| !listed.contains(n)) {
        lease.release()?;
        return Ok(());
    }
    // Retained objects (Object Lock) cannot go: leave them out.
    let retained = sweep::retained(repo, ObjectKind::Index, &plan.replace, par)?;
    let plan = if retained.is_empty() {
        plan
    } else {
        let free: Vec<(String, Vec<PackInfo>)> = objects
            .iter()
            .filter(|(n, _)| !retained.contains_key(n))
            .cloned()
            .collect();
        sweep::plan_rewrite(&free, &HashSet::new(), SMALL_INDEX_ENTRIES)
    };
    if plan.replace.is_empty() {
        lease.release()?;
        return Ok(());
    }
    for batch in plan.keep.chunks(INDEX_PACKS_PER_OBJECT) {
        repo.write_index(batch)?;
    }
    // A small object storage refuses to delete (a legal hold) only stays
    // as a duplicate: nothing to report.
    sweep::delete_all(repo, ObjectKind::Index, plan.replace, par, &|a, b| {
        progress("merge index", a, b)
    })?;
    lease.release()
}
