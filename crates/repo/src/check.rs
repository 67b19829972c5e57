//! Integrity checking.
//!
//! Structure (always): every index object opens; every pack the index names
//! exists with a plausible size; every snapshot opens; every tree reachable
//! from a snapshot opens and every blob it references is indexed; every
//! predecessor a snapshot names still exists; every WAL manifest opens and
//! every blob it names is indexed. Every object is opened with its name
//! binding checked (see `object`), so a renamed, swapped or moved object is
//! an error naming it.
//!
//! Data (`read_data`, or a random subset of packs): every pack is downloaded
//! whole, its trailer must match the index, and every blob must decrypt
//! (AES-GCM authenticates it) and hash to its id. That covers the blobs of
//! WAL manifests too: they are in the indexed packs.
//!
//! Problems are collected, never fixed here: `check` is read-only. A full
//! data read also says which snapshots had every blob read and found good
//! ([`CheckReport::verified`]); the application layer records that.
//!
//! Snapshots deleted on purpose (retention) have a sealed deletion record
//! (`forget`): a missing predecessor with a valid record is not reported,
//! a record that does not open is, and a record beside a snapshot that
//! still exists is an interrupted purge (a warning).
//!
//! A check may run while backups and `wal-push` write. Writers store packs,
//! then the index objects naming them, then (backups) the snapshot, so the
//! check reads in the opposite order: snapshots first, then the index, then
//! the pack listing. Every snapshot it walks then had its index objects
//! written before the check loaded the index, and every indexed pack was
//! stored before the listing; a pack that is stored but in no index is
//! reported as what it may be, a write in progress, never as damage. A blob
//! still missing is looked up again in a freshly loaded index before it is
//! reported (stores that list late).

use std::collections::{BTreeMap, HashMap, HashSet};

use holdfast_storage::ObjectKind;
use serde::Serialize;

use crate::error::Result;
use crate::id::Id;
use crate::index::BlobLocation;
use crate::pack::{self, BlobType, PackInfo};
use crate::repository::Repository;

#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    pub read_data: bool,
    /// A share of the packs to read; implies data reading.
    pub read_data_subset: Option<DataSubset>,
}

/// Which packs `check` reads, as restic's `--read-data-subset` takes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DataSubset {
    /// A random share of the packs, in percent (0 < p <= 100): `10%` or `10`.
    Percent(f64),
    /// Part `n` of `m` (1 <= n <= m): `2/7`. A pack's part follows from its
    /// id alone, so the parts are disjoint, cover every pack, and a pack
    /// stays in its part as the repository grows: checking 1/7 to 7/7 on
    /// seven days reads everything once.
    Part { n: u64, m: u64 },
}

impl DataSubset {
    /// Is `pack` in part `n` of `m`? By the first 8 bytes of its id, which
    /// is a hash of its content and so spreads evenly.
    fn part_holds(n: u64, m: u64, pack: &Id) -> bool {
        let mut head = [0u8; 8];
        head.copy_from_slice(&pack.0[..8]);
        // Only `from_str` validates; a hand-built 0/0 selects nothing
        // rather than dividing by zero.
        m != 0 && n >= 1 && u64::from_be_bytes(head) % m == n - 1
    }
}

impl std::str::FromStr for DataSubset {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        if let Some((n, m)) = s.split_once('/') {
            let (n, m) = match (n.trim().parse::<u64>(), m.trim().parse::<u64>()) {
                (Ok(n), Ok(m)) => (n, m),
                _ => {
                    return Err(format!(
                        "{s:?} is not n/m with whole numbers n and m (e.g. 2/7)"
                    ))
                }
            };
            if !(1..=m).contains(&n) {
                return Err(format!("{s:?}: in n/m, n must be from 1 to m"));
            }
            return Ok(DataSubset::Part { n, m });
        }
        let number = s.strip_suffix('%').unwrap_or(s).trim();
        match number.parse::<f64>() {
            Ok(p) if p > 0.0 && p <= 100.0 => Ok(DataSubset::Percent(p)),
            Ok(_) => Err(format!(
                "{s:?}: the percentage must be above 0 and at most 100"
            )),
            Err(_) => Err(format!(
                "{s:?} is neither a percentage (10% or 10) nor a part n/m (2/7)"
            )),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    pub snapshots: usize,
    pub trees: usize,
    /// WAL manifests read.
    pub wal_manifests: usize,
    pub packs: usize,
    pub packs_read: usize,
    pub blobs_read: usize,
    /// Deletion records read.
    pub tombstones: usize,
    /// With a full data read: the snapshots (ids) whose every tree and
    /// data blob was read and found good. Empty otherwise.
    pub verified: Vec<String>,
    /// The verification record written for `verified`, if any (set by the
    /// application layer, which writes it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification_record: Option<String>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Run a check; `progress` is told (done, total) while reading packs.
pub fn check(
    repo: &Repository,
    opts: &CheckOptions,
    progress: &dyn Fn(u64, u64),
) -> Result<CheckReport> {
    let mut r = CheckReport::default();
    // What is in storage, not the local cache's copies.
    let _storage_only = repo.suspend_cache();
    // Snapshots before the index: see the module docs.
    let (snaps, bad) = repo.snapshots_with_errors()?;
    // Deletion records after the snapshots: a purge writes its record
    // before it deletes, so any snapshot missing from the listing above
    // that was purged has its record in this one.
    let (tombs, bad_tombs) = repo.tombstones()?;
    // WAL manifests are written after the index objects naming their
    // blobs, like snapshots: read before the index too.
    let (wals, bad_wals) = repo.wal_manifests()?;
    let index_packs = repo.load_index_packs()?;
    for (name, e) in repo.index_problems().corrupt {
        r.errors.push(format!(
            "index object {name} is unreadable: {e} (run `holdfast repair index`)"
        ));
    }
    let mut index = repo.index();

    // Packs: described by index objects vs present in storage. Built from
    // the index objects themselves, not the one-location-per-blob map, so a
    // pack whose blobs are all stored elsewhere too is still checked.
    let stored: HashMap<String, u64> = repo
        .block_on(repo.backend().list(ObjectKind::Pack))?
        .into_iter()
        .map(|m| (m.name, m.size))
        .collect();
    let by_pack = blobs_by_pack(&index_packs);
    let mut pack_end: HashMap<Id, u64> = HashMap::new();
    for (pack, blobs) in &by_pack {
        let end = blobs
            .iter()
            .map(|(_, l)| u64::from(l.offset) + u64::from(l.length))
            .max()
            .unwrap_or(0);
        pack_end.insert(*pack, end);
    }
    r.packs = by_pack.len();
    for (pack, end) in &pack_end {
        match stored.get(&pack.to_hex()) {
            None => r.errors.push(format!(
                "pack {pack} is missing from storage (the index lists {} blob(s) in it)",
                by_pack.get(pack).map_or(0, Vec::len)
            )),
            Some(size) if size < end => r.errors.push(format!(
                "pack {pack} is truncated: {size} bytes stored, index needs at least {end}"
            )),
            _ => {}
        }
    }
    let unindexed = stored
        .keys()
        .filter(|n| {
            n.parse::<Id>()
                .map_or(true, |id| !pack_end.contains_key(&id))
        })
        .count();
    if unindexed > 0 {
        r.warnings.push(format!(
            "{unindexed} pack(s) are not in any index: written by a backup or wal-push that \
             is still running, or left by one that was interrupted or failed (harmless; \
             garbage collection reclaims them, `holdfast repair index` indexes them)"
        ));
    }

    // Snapshots and trees.
    let tombstoned: HashSet<&str> = tombs.iter().map(|(n, _)| n.as_str()).collect();
    for (name, e) in &bad {
        if tombstoned.contains(name.as_str()) && !still_stored(repo, name)? {
            // Purged (record first, then delete) while this check ran.
            continue;
        }
        r.errors.push(format!(
            "snapshot {name} is unreadable: {e} (if it is not a snapshot of this repository, \
             e.g. a stray or misplaced file, `holdfast repair snapshots` moves it aside)"
        ));
    }
    let mut reloaded = false;
    r.snapshots = snaps.len();
    let mut seen: HashSet<Id> = HashSet::new();
    for s in &snaps {
        let mut stack = vec![(s.snapshot.tree, String::from("/"))];
        while let Some((tree_id, path)) = stack.pop() {
            if !seen.insert(tree_id) {
                continue;
            }
            r.trees += 1;
            if !index.contains(&tree_id) && !reloaded {
                index = reload(repo, &mut reloaded)?;
            }
            let tree = match repo.load_tree(&tree_id) {
                Ok(t) => t,
                Err(e) => {
                    r.errors.push(format!(
                        "snapshot {}: tree of {path} ({}) cannot be read: {e}",
                        s.id.short(),
                        tree_id.short()
                    ));
                    continue;
                }
            };
            for n in &tree.nodes {
                let child = format!("{}{}", path, n.name.display());
                if let Some(sub) = n.subtree {
                    stack.push((sub, format!("{child}/")));
                }
                for b in &n.content {
                    if !index.contains(b) && !reloaded {
                        index = reload(repo, &mut reloaded)?;
                    }
                    match index.get(b) {
                        Some(l) if l.blob_type == BlobType::Data => {}
                        Some(_) => r.errors.push(format!(
                            "snapshot {}: {child} references blob {} which is not a data blob",
                            s.id.short(),
                            b.short()
                        )),
                        None => r.errors.push(format!(
                            "snapshot {}: {child} references blob {} which is in no index",
                            s.id.short(),
                            b.short()
                        )),
                    }
                }
            }
        }
    }

    check_tombstones(&snaps, &tombs, &bad_tombs, &mut r);
    check_predecessors(&snaps, &bad, &tombs, &mut r);

    // WAL manifests: roots like snapshots; every blob they name is indexed.
    for (name, e) in bad_wals {
        r.errors
            .push(format!("WAL manifest wal/{name} is unreadable: {e}"));
    }
    r.wal_manifests = wals.len();
    for (name, m) in &wals {
        let mut missing = 0usize;
        let mut first = None;
        for b in &m.blobs {
            if !index.contains(b) && !reloaded {
                index = reload(repo, &mut reloaded)?;
            }
            if !index.contains(b) {
                missing += 1;
                first.get_or_insert(*b);
            }
        }
        if let Some(b) = first {
            r.errors.push(format!(
                "WAL manifest wal/{name} names {missing} blob(s) that are in no index (e.g. {})",
                b.short()
            ));
        }
    }

    // Data.
    let subset = match (opts.read_data, opts.read_data_subset) {
        (_, Some(sub)) => Some(sub),
        (true, None) => Some(DataSubset::Percent(100.0)),
        (false, None) => None,
    };
    if let Some(subset) = subset {
        let mut packs: Vec<_> = by_pack.keys().copied().collect();
        match subset {
            DataSubset::Percent(pct) if pct < 100.0 => {
                use rand::seq::SliceRandom;
                packs.shuffle(&mut rand::thread_rng());
                let n = ((packs.len() as f64 * pct / 100.0).ceil() as usize).max(1);
                packs.truncate(n.min(packs.len()));
            }
            DataSubset::Percent(_) => {}
            DataSubset::Part { n, m } => packs.retain(|p| DataSubset::part_holds(n, m, p)),
        }
        let full = packs.len() == by_pack.len();
        let total = packs.len() as u64;
        let mut faults = DataFaults::default();
        for (i, pack_id) in packs.iter().enumerate() {
            progress(i as u64, total);
            if !stored.contains_key(&pack_id.to_hex()) {
                continue; // already reported missing
            }
            r.packs_read += 1;
            faults.read.insert(*pack_id);
            let expected = by_pack.get(pack_id).cloned().unwrap_or_default();
            check_pack(repo, *pack_id, &expected, &mut r, &mut faults);
        }
        progress(total, total);
        if full {
            r.verified = verified_snapshots(repo, &snaps, &r, reloaded, &faults);
        }
    }
    Ok(r)
}

/// What the data read found wrong, by pack and by blob.
#[derive(Default)]
struct DataFaults {
    /// Packs read (present in storage).
    read: HashSet<Id>,
    /// Packs that could not be read, do not hash to their names or whose
    /// trailer is unreadable: none of their blobs counts as verified.
    packs: HashSet<Id>,
    /// Blobs that failed to decrypt, decompress or hash to their ids, or
    /// that the pack's trailer does not list.
    blobs: HashSet<Id>,
}

/// The snapshots whose every tree and data blob was read and found good.
/// With no error at all and no index reload (every referenced blob was in
/// an indexed pack that was read), that is every snapshot; otherwise each
/// snapshot's trees are walked again, memoised, to find which ones a fault
/// touches.
fn verified_snapshots(
    repo: &Repository,
    snaps: &[crate::snapshot::SnapshotEntry],
    r: &CheckReport,
    reloaded: bool,
    faults: &DataFaults,
) -> Vec<String> {
    if r.errors.is_empty() && !reloaded {
        return snaps.iter().map(|s| s.id.to_hex()).collect();
    }
    let index = repo.index();
    let blob_good = |b: &Id| {
        !faults.blobs.contains(b)
            && index
                .get(b)
                .is_some_and(|l| faults.read.contains(&l.pack) && !faults.packs.contains(&l.pack))
    };
    let mut memo: HashMap<Id, bool> = HashMap::new();
    snaps
        .iter()
        .filter(|s| tree_good(repo, s.snapshot.tree, &blob_good, &mut memo))
        .map(|s| s.id.to_hex())
        .collect()
}

/// A tree is good if its own blob, every data blob it names and every
/// subtree are.
fn tree_good(
    repo: &Repository,
    id: Id,
    blob_good: &dyn Fn(&Id) -> bool,
    memo: &mut HashMap<Id, bool>,
) -> bool {
    if let Some(v) = memo.get(&id) {
        return *v;
    }
    // Provisionally bad while walked: a tree cannot contain itself (ids are
    // hashes), so this only guards against a damaged repository looping.
    memo.insert(id, false);
    let good = blob_good(&id)
        && match repo.load_tree(&id) {
            Ok(tree) => tree.nodes.iter().all(|n| {
                n.content.iter().all(blob_good)
                    && n.subtree
                        .is_none_or(|sub| tree_good(repo, sub, blob_good, memo))
            }),
            Err(_) => false,
        };
    memo.insert(id, good);
    good
}

/// Whether snapshot manifest `name` is in storage now.
fn still_stored(repo: &Repository, name: &str) -> Result<bool> {
    match repo.block_on(repo.backend().head(ObjectKind::Snapshot, name)) {
        Ok(_) => Ok(true),
        Err(holdfast_storage::StorageError::NotFound { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Deletion records: one that does not open is an error (forged, damaged
/// or moved: it cannot vouch for a deletion); one beside a snapshot that
/// still exists is a purge that stopped half-way (or that Object Lock
/// refused after the record was written).
fn check_tombstones(
    snaps: &[crate::snapshot::SnapshotEntry],
    tombs: &[(String, crate::forget::Tombstone)],
    bad: &[crate::repository::Unreadable],
    r: &mut CheckReport,
) {
    r.tombstones = tombs.len();
    for (name, e) in bad {
        r.errors.push(format!(
            "deletion record {} cannot be read: {e} (it does not excuse a missing snapshot; \
             a record not written by holdfast with this repository's key is forged or damaged)",
            ObjectKind::Tombstone.key(name)
        ));
    }
    let present: HashSet<String> = snaps.iter().map(|s| s.id.to_hex()).collect();
    for (name, t) in tombs {
        if present.contains(name) {
            r.warnings.push(format!(
                "snapshot {name} of source {:?} has a deletion record ({}, {}) but still exists: \
                 a purge was interrupted or the store refused the delete (Object Lock); \
                 `holdfast policy apply --yes` finishes it",
                t.source,
                t.by,
                t.forgotten_at.to_rfc3339()
            ));
        }
    }
}

/// A predecessor a snapshot names that no longer exists means a newer
/// snapshot of its source was deleted or rolled back (see docs/format.md),
/// unless a valid deletion record says it was purged on purpose. Deletion
/// records carry the purged snapshot's predecessors, which are followed
/// the same way. Unreadable snapshots are still there, so they count as
/// present.
fn check_predecessors(
    snaps: &[crate::snapshot::SnapshotEntry],
    bad: &[crate::repository::Unreadable],
    tombs: &[(String, crate::forget::Tombstone)],
    r: &mut CheckReport,
) {
    let accounted: HashSet<String> = snaps
        .iter()
        .map(|s| s.id.to_hex())
        .chain(bad.iter().map(|(n, _)| n.clone()))
        .chain(tombs.iter().map(|(n, _)| n.clone()))
        .collect();
    let named = snaps
        .iter()
        .map(|s| {
            (
                "snapshot",
                &s.id,
                &s.snapshot.predecessors,
                &s.snapshot.source,
            )
        })
        .chain(
            tombs
                .iter()
                .map(|(_, t)| ("purged snapshot", &t.snapshot, &t.predecessors, &t.source)),
        );
    for (what, id, preds, source) in named {
        for p in preds {
            if !accounted.contains(&p.to_hex()) {
                r.errors.push(format!(
                    "{what} {id} names predecessor {p} of source {source:?}, which is missing: deleted or rolled back"
                ));
            }
        }
    }
}

/// Every pack the index objects describe, with its blobs (once each).
fn blobs_by_pack(packs: &[PackInfo]) -> BTreeMap<Id, Vec<(Id, BlobLocation)>> {
    let mut out: BTreeMap<Id, Vec<(Id, BlobLocation)>> = BTreeMap::new();
    for p in packs {
        if out.contains_key(&p.id) {
            // The same pack in two index objects (a repaired index): a
            // pack's name is the hash of its bytes, trailer included, so
            // the entries are the same.
            continue;
        }
        let blobs = out.entry(p.id).or_default();
        for e in &p.entries {
            blobs.push((
                e.id,
                BlobLocation {
                    pack: p.id,
                    salt: p.salt,
                    blob_type: e.blob_type,
                    offset: e.offset,
                    length: e.length,
                    raw_len: e.raw_len,
                    inner: e.inner,
                },
            ));
        }
    }
    out
}

/// Load the index again (once per check) before calling a blob missing:
/// it may have been written since (see the module docs).
fn reload(repo: &Repository, reloaded: &mut bool) -> Result<std::sync::Arc<crate::index::Index>> {
    *reloaded = true;
    repo.load_index()?;
    Ok(repo.index())
}

fn check_pack(
    repo: &Repository,
    pack_id: Id,
    expected: &[(Id, BlobLocation)],
    r: &mut CheckReport,
    faults: &mut DataFaults,
) {
    let what = format!("pack {pack_id}");
    let bytes = match repo.block_on(
        repo.backend()
            .get(ObjectKind::Pack, &pack_id.to_hex(), None),
    ) {
        Ok(b) => b,
        Err(e) => {
            r.errors.push(format!("{what} cannot be read: {e}"));
            faults.packs.insert(pack_id);
            return;
        }
    };
    if Id::of_stored(&bytes) != pack_id {
        r.errors.push(format!(
            "{what} is damaged: its content does not hash to its name"
        ));
        faults.packs.insert(pack_id);
    }
    match pack::read_info(repo.key(), &bytes, &what) {
        Ok(info) => {
            let in_trailer: HashSet<Id> = info.entries.iter().map(|e| e.id).collect();
            for (id, _) in expected {
                if !in_trailer.contains(id) {
                    faults.blobs.insert(*id);
                    r.errors.push(format!(
                        "{what}: trailer does not list blob {} that the index places there",
                        id.short()
                    ));
                }
            }
        }
        Err(e) => {
            r.errors.push(format!("{what}: trailer unreadable: {e}"));
            faults.packs.insert(pack_id);
        }
    }
    // Blobs of one frame share a sealed region, decoded once for all.
    let mut sorted: Vec<(Id, BlobLocation)> = expected.to_vec();
    sorted.sort_by_key(|(_, l)| l.offset);
    let mut buf = Vec::new();
    let mut dec = crate::compress::Decoder::new();
    for group in sorted.chunk_by(|a, b| a.1.offset == b.1.offset) {
        let loc = &group[0].1;
        let s = loc.offset as usize;
        let e = s + loc.length as usize;
        if e > bytes.len() {
            for (id, _) in group {
                faults.blobs.insert(*id);
                r.errors
                    .push(format!("{what}: blob {} lies past the end", id.short()));
            }
            continue;
        }
        buf.clear();
        buf.extend_from_slice(&bytes[s..e]);
        repo.visit_region(&mut buf, group, &mut dec, &mut |id, res| {
            r.blobs_read += 1;
            if let Err(err) = res {
                faults.blobs.insert(*id);
                r.errors
                    .push(format!("{what}: blob {} is damaged: {err}", id.short()));
            }
        });
    }
}

#[cfg(test)]
mod subset_tests {
    use super::DataSubset;
    use crate::id::Id;

    #[test]
    fn parses_percentages_parts_and_bare_numbers() {
        assert_eq!("10%".parse(), Ok(DataSubset::Percent(10.0)));
        assert_eq!("2.5 %".parse(), Ok(DataSubset::Percent(2.5)));
        assert_eq!("10".parse(), Ok(DataSubset::Percent(10.0)));
        assert_eq!("100%".parse(), Ok(DataSubset::Percent(100.0)));
        assert_eq!("2/7".parse(), Ok(DataSubset::Part { n: 2, m: 7 }));
        assert_eq!("1/1".parse(), Ok(DataSubset::Part { n: 1, m: 1 }));
        for bad in [
            "0", "0%", "101%", "-5", "abc", "", "%", "0/3", "4/3", "1/0", "a/b", "1/2/3",
        ] {
            let e = bad.parse::<DataSubset>().expect_err(bad);
            assert!(e.contains(bad.trim()), "{bad}: {e}");
        }
    }

    #[test]
    fn parts_are_disjoint_and_cover_every_pack() {
        let packs: Vec<Id> = (0..500u32)
            .map(|i| Id::of_stored(&i.to_le_bytes()))
            .collect();
        for m in [1u64, 2, 3, 7, 10] {
            let mut seen = vec![0u32; packs.len()];
            for n in 1..=m {
                for (i, p) in packs.iter().enumerate() {
                    if DataSubset::part_holds(n, m, p) {
                        seen[i] += 1;
                    }
                }
            }
            assert!(
                seen.iter().all(|c| *c == 1),
                "m={m}: every pack in exactly one part"
            );
        }
        assert!(!DataSubset::part_holds(0, 0, &packs[0]));
    }
}
