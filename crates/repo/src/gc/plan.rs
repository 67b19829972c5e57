//! The pack table: what each pack holds, how much of it is still reachable,
//! and what garbage collection does with it (keep, delete, repack).
//!
//! Accounting is by *region*: a sealed stretch of a pack (one blob, or one
//! frame of several blobs). A region is live if any blob in it is reachable;
//! a repack copies live regions whole, so a frame is never split.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use holdfast_storage::ObjectMeta;

use crate::id::Id;
use crate::pack::{PackEntry, PackInfo};

/// One pack, as the index objects and the storage listing describe it.
#[derive(Debug, Clone)]
pub(crate) struct PackRecord {
    pub id: Id,
    /// The pack key's salt, as the index records it (zero until an index
    /// object names the pack).
    pub salt: [u8; crate::crypto::SALT_LEN],
    /// Entries of every index object naming the pack, once each.
    pub entries: Vec<PackEntry>,
    /// Size in storage, if listed.
    pub stored: Option<u64>,
    pub modified: Option<DateTime<Utc>>,
    /// Named by at least one readable index object.
    pub indexed: bool,
}

impl PackRecord {
    /// Regions (by offset) with their entries, in pack order.
    pub fn regions(&self) -> BTreeMap<u32, Vec<PackEntry>> {
        let mut out: BTreeMap<u32, Vec<PackEntry>> = BTreeMap::new();
        for e in &self.entries {
            out.entry(e.offset).or_default().push(*e);
        }
        for v in out.values_mut() {
            v.sort_by_key(|e| e.inner);
        }
        out
    }

    /// Bytes of regions holding at least one live blob.
    pub fn live_bytes(&self, live: &HashSet<Id>) -> u64 {
        self.regions()
            .values()
            .filter(|r| r.iter().any(|e| live.contains(&e.id)))
            .map(|r| u64::from(r[0].length))
            .sum()
    }

    pub fn has_live(&self, live: &HashSet<Id>) -> bool {
        self.entries.iter().any(|e| live.contains(&e.id))
    }
}

/// Every pack, by id: indexed ones and stored ones no index names.
#[derive(Debug, Default)]
pub(crate) struct PackTable {
    pub packs: HashMap<Id, PackRecord>,
    /// Stored objects under `data/` whose names are not pack ids (foreign
    /// files): never touched, only counted.
    pub foreign: usize,
}

impl PackTable {
    /// Build from the index objects' packs and the storage listing.
    pub fn new<'a>(
        indexed: impl IntoIterator<Item = &'a PackInfo>,
        stored: &[ObjectMeta],
    ) -> PackTable {
        let mut t = PackTable::default();
        for p in indexed {
            t.add_indexed(p);
        }
        for m in stored {
            let Ok(id) = m.name.parse::<Id>() else {
                t.foreign += 1;
                continue;
            };
            let rec = t.packs.entry(id).or_insert_with(|| PackRecord {
                id,
                salt: [0; crate::crypto::SALT_LEN],
                entries: Vec::new(),
                stored: None,
                modified: None,
                indexed: false,
            });
            rec.stored = Some(m.size);
            rec.modified = m.modified;
        }
        t
    }

    /// Add a pack an index object names (again: entries are merged).
    pub fn add_indexed(&mut self, p: &PackInfo) {
        let rec = self.packs.entry(p.id).or_insert_with(|| PackRecord {
            id: p.id,
            salt: p.salt,
            entries: Vec::new(),
            stored: None,
            modified: None,
            indexed: true,
        });
        rec.indexed = true;
        rec.salt = p.salt;
        if rec.entries.is_empty() {
            rec.entries.extend_from_slice(&p.entries);
            return;
        }
        // Named by a second index object (a merge or a duplicate write).
        let known: HashSet<(Id, u32)> = rec.entries.iter().map(|x| (x.id, x.offset)).collect();
        rec.entries.extend(
            p.entries
                .iter()
                .filter(|e| !known.contains(&(e.id, e.offset))),
        );
    }

    /// Stored bytes of every stored pack.
    pub fn stored_bytes(&self) -> u64 {
        self.packs.values().filter_map(|p| p.stored).sum()
    }
}

/// Repacking limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RepackLimits {
    /// A partly used pack is repacked only if at least this share of its
    /// stored bytes is unreachable.
    pub min_unused_share: f64,
    /// Stop once what stays unreachable is at most this share of the
    /// stored bytes (restic's `--max-unused`, 5% by default).
    pub max_unused_share: f64,
    /// At most this share of the stored bytes is rewritten per run.
    pub max_repack_share: f64,
}

/// What the plan does with each pack.
#[derive(Debug, Default)]
pub(crate) struct Decisions {
    /// Stored packs with no reachable blob, old enough: deleted.
    pub delete: HashSet<Id>,
    /// Partly used packs whose live regions are copied, then deleted.
    pub repack: Vec<Id>,
    /// Unreachable packs kept because they are younger than the minimum age.
    pub young: usize,
    /// Packs an index names that storage does not have.
    pub missing: Vec<(Id, bool)>,
    /// Unreachable bytes that stay after this run (partly used packs not
    /// repacked).
    pub unused_kept: u64,
}

/// Decide, for every pack, what this run does with it.
pub(crate) fn decide(
    table: &PackTable,
    live: &HashSet<Id>,
    now: DateTime<Utc>,
    min_age: chrono::Duration,
    limits: RepackLimits,
) -> Decisions {
    let mut d = Decisions::default();
    let old_enough = |p: &PackRecord| match p.modified {
        Some(m) => now - m >= min_age,
        // A store without modification times: only the lease protocol
        // protects in-flight packs, which is what a zero minimum age means.
        None => min_age <= chrono::Duration::zero(),
    };
    let total = table.stored_bytes();
    let mut partly: Vec<(f64, u64, Id)> = Vec::new();
    let mut unused_total = 0u64;
    let mut live_total = 0u64;
    for p in table.packs.values() {
        let Some(size) = p.stored else {
            d.missing.push((p.id, p.has_live(live)));
            continue;
        };
        let live_bytes = p.live_bytes(live);
        if live_bytes == 0 {
            if old_enough(p) {
                d.delete.insert(p.id);
            } else {
                d.young += 1;
            }
            continue;
        }
        let unused = size.saturating_sub(live_bytes);
        unused_total += unused;
        live_total += live_bytes;
        if size > 0 && old_enough(p) {
            partly.push((unused as f64 / size as f64, unused, p.id));
        }
    }
    // Most wasteful first, until what stays unused is within the target or
    // the rewrite budget is spent.
    partly.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.2.cmp(&b.2)));
    // As restic counts it: unused at most this share of what remains
    // (live + unused), i.e. unused <= share / (1 - share) * live.
    let share = limits.max_unused_share.min(0.99);
    let target = (live_total as f64 * share / (1.0 - share)) as u64;
    let budget = (total as f64 * limits.max_repack_share) as u64;
    let mut rewritten = 0u64;
    let mut remaining = unused_total;
    for (share, unused, id) in partly {
        if remaining <= target || share < limits.min_unused_share {
            break;
        }
        let size = table.packs.get(&id).and_then(|p| p.stored).unwrap_or(0);
        let copy = size.saturating_sub(unused);
        if rewritten + copy > budget {
            continue;
        }
        rewritten += copy;
        remaining -= unused;
        d.repack.push(id);
    }
    d.unused_kept = remaining;
    d.missing.sort();
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::BlobType;

    fn entry(id: u8, offset: u32, length: u32, inner: u32) -> PackEntry {
        PackEntry {
            blob_type: BlobType::Data,
            id: Id([id; 32]),
            offset,
            length,
            raw_len: 10,
            inner,
        }
    }

    fn info(pack: u8, entries: Vec<PackEntry>) -> PackInfo {
        PackInfo {
            id: Id([pack; 32]),
            salt: [0; 32],
            entries,
        }
    }

    fn meta(pack: u8, size: u64, age_h: i64, now: DateTime<Utc>) -> ObjectMeta {
        ObjectMeta {
            kind: holdfast_storage::ObjectKind::Pack,
            name: Id([pack; 32]).to_hex(),
            size,
            modified: Some(now - chrono::Duration::hours(age_h)),
        }
    }

    const LIMITS: RepackLimits = RepackLimits {
        min_unused_share: 0.2,
        max_unused_share: 0.0,
        max_repack_share: 1.0,
    };

    #[test]
    fn unreachable_packs_are_deleted_partly_used_repacked_frames_counted_whole() {
        let now = Utc::now();
        // Pack 1: blob 1 only (dead). Pack 2: blobs 2 (live) and 3 (dead),
        // half each. Pack 3: a frame of blobs 4 (live) and 5 (dead): live
        // as a whole. Pack 4: dead but young. Pack 5: indexed, not stored.
        let infos = vec![
            info(1, vec![entry(1, 37, 100, 0)]),
            info(2, vec![entry(2, 37, 100, 0), entry(3, 137, 100, 0)]),
            info(3, vec![entry(4, 37, 200, 0), entry(5, 37, 200, 10)]),
            info(4, vec![entry(6, 37, 100, 0)]),
            info(5, vec![entry(7, 37, 100, 0)]),
        ];
        let stored = vec![
            meta(1, 200, 48, now),
            meta(2, 237, 48, now),
            meta(3, 237, 48, now),
            meta(4, 137, 0, now),
            meta(9, 50, 48, now), // unindexed orphan
        ];
        let table = PackTable::new(&infos, &stored);
        let live: HashSet<Id> = [2u8, 4, 7].iter().map(|b| Id([*b; 32])).collect();
        let d = decide(&table, &live, now, chrono::Duration::hours(1), LIMITS);
        let ids = |v: &[u8]| -> HashSet<Id> { v.iter().map(|b| Id([*b; 32])).collect() };
        assert_eq!(d.delete, ids(&[1, 9]));
        assert_eq!(d.repack, vec![Id([2; 32])]);
        assert_eq!(d.young, 1);
        assert_eq!(d.missing, vec![(Id([5; 32]), true)]);
        assert_eq!(table.packs[&Id([3; 32])].live_bytes(&live), 200);
    }

    #[test]
    fn the_repack_budget_and_the_unused_target_bound_the_rewrite() {
        let now = Utc::now();
        let infos: Vec<PackInfo> = (1..=4u8)
            .map(|p| {
                info(
                    p,
                    vec![entry(p * 10, 37, 100, 0), entry(p * 10 + 1, 137, 100, 0)],
                )
            })
            .collect();
        let stored: Vec<ObjectMeta> = (1..=4u8).map(|p| meta(p, 237, 48, now)).collect();
        let table = PackTable::new(&infos, &stored);
        let live: HashSet<Id> = (1..=4u8).map(|p| Id([p * 10; 32])).collect();
        // Each pack: 237 stored, 100 live, 137 unused. Budget 30% of 948 =
        // 284 bytes of live data: two packs.
        let limits = RepackLimits {
            max_repack_share: 0.3,
            ..LIMITS
        };
        let d = decide(&table, &live, now, chrono::Duration::zero(), limits);
        assert_eq!(d.repack.len(), 2);
        assert_eq!(d.unused_kept, 2 * 137);
        // Unused target 40% of what remains: live is 400, so at most
        // 400 * 0.4 / 0.6 = 266 unused may stay: two repacks leave 274,
        // three leave 137.
        let limits = RepackLimits {
            max_unused_share: 0.4,
            ..LIMITS
        };
        let d = decide(&table, &live, now, chrono::Duration::zero(), limits);
        assert_eq!(d.repack.len(), 3);
        assert_eq!(d.unused_kept, 137);
    }
}
