//! The blob index: where each blob lives.
//!
//! On storage: immutable index objects (`payload` has their encoding), each
//! written after the packs it describes are durable, and never modified.
//!
//! In memory, bounded whatever the repository's size: the entries of the
//! loaded index objects are kept in sorted, immutable runs (`run`) with
//! fixed-width 56-byte records, looked up by a fan-out table and binary
//! search. With a local cache (`crate::cache`) the runs are files mapped
//! into memory, so only the pages a workload touches are resident, and the
//! kernel may drop them at will; `build` makes them in bounded memory by an
//! external merge sort. Blobs added by this process (the packs a backup
//! writes) go to a small hash table beside the runs, so finishing a backup
//! never copies the index. `load` keeps the runs in step with the index
//! objects in storage.

pub(crate) mod build;
mod bytype;
pub mod load;
mod mmap;
mod payload;
pub(crate) mod run;
pub mod synth;

use std::collections::HashMap;
use std::sync::RwLock;

use crate::crypto::SALT_LEN;
use crate::id::Id;
use crate::pack::{BlobType, PackInfo};

pub use payload::{decode, encode};
use run::Run;

/// Where a blob is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: Id,
    pub salt: [u8; SALT_LEN],
    pub blob_type: BlobType,
    pub offset: u32,
    pub length: u32,
    pub raw_len: u32,
    /// Where the blob's data starts in its decoded frame (0 if unframed).
    pub inner: u32,
}

impl BlobLocation {
    /// Where this blob's bytes are inside the decoded frame (or blob).
    pub fn span(&self) -> std::ops::Range<usize> {
        self.inner as usize..self.inner as usize + self.raw_len as usize
    }

    /// Decoded bytes a reader needs to reach the end of this blob.
    pub fn needed(&self) -> usize {
        self.inner as usize + self.raw_len as usize
    }
}

#[derive(Debug, Clone, Copy)]
struct Loc {
    pack: u32,
    blob_type: BlobType,
    offset: u32,
    length: u32,
    raw_len: u32,
    inner: u32,
}

/// Blobs learnt since the runs were built: the packs this process wrote,
/// and locations from WAL manifests. Small: one backup's new blobs.
#[derive(Debug, Default)]
struct Fresh {
    packs: Vec<(Id, [u8; SALT_LEN])>,
    pack_pos: HashMap<Id, u32>,
    blobs: HashMap<Id, Loc>,
}

impl Fresh {
    fn location(&self, l: &Loc) -> Option<BlobLocation> {
        let (pack, salt) = *self.packs.get(l.pack as usize)?;
        Some(BlobLocation {
            pack,
            salt,
            blob_type: l.blob_type,
            offset: l.offset,
            length: l.length,
            raw_len: l.raw_len,
            inner: l.inner,
        })
    }
}

/// Where every blob of the loaded index objects is: sorted, immutable runs
/// (memory-mapped from the local cache, or in memory without one) plus a
/// small table of blobs added since. Shared behind an `Arc`: adding packs
/// takes a short write lock on the small table and never copies the runs.
#[derive(Debug, Default)]
pub struct Index {
    runs: Vec<Run>,
    fresh: RwLock<Fresh>,
}

/// What an index holds in memory, for tests and `--json` diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexFootprint {
    /// Sorted runs.
    pub runs: usize,
    /// Entries in the runs (an id in two runs counts twice).
    pub run_entries: u64,
    /// Bytes of the runs that are memory-mapped files (evictable page cache).
    pub mapped_bytes: u64,
    /// Heap bytes of the runs (in-memory runs, verification bitmaps).
    pub run_heap_bytes: u64,
    /// Blobs in the table of blobs added since the runs were built.
    pub fresh_entries: usize,
    /// Approximate heap bytes of that table.
    pub fresh_heap_bytes: u64,
}

impl Index {
    pub fn new() -> Index {
        Index::default()
    }

    /// An index of these runs (newest last) and nothing else.
    pub(crate) fn from_runs(runs: Vec<Run>) -> Index {
        Index {
            runs,
            fresh: RwLock::default(),
        }
    }

    fn fresh(&self) -> std::sync::RwLockReadGuard<'_, Fresh> {
        self.fresh.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Record where the blobs of a pack are (packs written by this process,
    /// or named by a WAL manifest). Takes `&self`: readers holding the index
    /// see the new blobs too, and nothing is copied.
    pub fn add_pack(&self, info: &PackInfo) {
        let mut f = self.fresh.write().unwrap_or_else(|e| e.into_inner());
        let f = &mut *f;
        let next = f.packs.len() as u32;
        let pos = *f.pack_pos.entry(info.id).or_insert(next);
        if pos == next {
            f.packs.push((info.id, info.salt));
        }
        for e in &info.entries {
            f.blobs.entry(e.id).or_insert(Loc {
                pack: pos,
                blob_type: e.blob_type,
                offset: e.offset,
                length: e.length,
                raw_len: e.raw_len,
                inner: e.inner,
            });
        }
    }

    /// Add the blobs another index learnt since its runs were built (a
    /// writer's, when the repository reloaded its index meanwhile).
    pub(crate) fn absorb_fresh(&self, other: &Index) {
        if std::ptr::eq(self, other) {
            return;
        }
        let theirs: Vec<(Id, BlobLocation)> = {
            let f = other.fresh();
            f.blobs
                .iter()
                .filter_map(|(id, l)| Some((*id, f.location(l)?)))
                .collect()
        };
        let mut f = self.fresh.write().unwrap_or_else(|e| e.into_inner());
        let f = &mut *f;
        for (id, l) in theirs {
            let next = f.packs.len() as u32;
            let pos = *f.pack_pos.entry(l.pack).or_insert(next);
            if pos == next {
                f.packs.push((l.pack, l.salt));
            }
            f.blobs.entry(id).or_insert(Loc {
                pack: pos,
                blob_type: l.blob_type,
                offset: l.offset,
                length: l.length,
                raw_len: l.raw_len,
                inner: l.inner,
            });
        }
    }

    pub fn get(&self, id: &Id) -> Option<BlobLocation> {
        if let Some(l) = {
            let f = self.fresh();
            f.blobs.get(id).and_then(|l| f.location(l))
        } {
            return Some(l);
        }
        self.runs.iter().rev().find_map(|r| r.get(id))
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.fresh().blobs.contains_key(id) || self.runs.iter().any(|r| r.find(id).is_some())
    }

    /// True if a run failed a check since it was opened (its file is gone;
    /// the next [`crate::Repository::load_index`] rebuilds it).
    pub fn damaged(&self) -> bool {
        self.runs.iter().any(Run::is_damaged)
    }

    /// Distinct blobs. Walks every run: for tests and reports, not hot paths.
    pub fn len(&self) -> usize {
        let fresh = self.fresh();
        let mut n = fresh
            .blobs
            .keys()
            .filter(|id| !self.runs.iter().any(|r| r.find(id).is_some()))
            .count();
        for (i, r) in self.runs.iter().enumerate() {
            let older = &self.runs[..i];
            n += (0..r.len())
                .filter_map(|k| r.location(k))
                .filter(|(id, _)| !older.iter().any(|o| o.find(id).is_some()))
                .count();
        }
        n
    }

    pub fn is_empty(&self) -> bool {
        self.runs.iter().all(|r| r.len() == 0) && self.fresh().blobs.is_empty()
    }

    /// Ids of every indexed pack, each once.
    pub fn packs(&self) -> impl Iterator<Item = Id> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for r in &self.runs {
            out.extend(
                (0..r.pack_count())
                    .filter_map(|i| r.pack(i))
                    .map(|(id, _)| id),
            );
        }
        out.extend(self.fresh().packs.iter().map(|(id, _)| *id));
        out.retain(|id| seen.insert(*id));
        out.into_iter()
    }

    pub fn pack_count(&self) -> usize {
        self.packs().count()
    }

    /// What this index holds in memory.
    pub fn footprint(&self) -> IndexFootprint {
        let f = self.fresh();
        let entry = std::mem::size_of::<(Id, Loc)>() as u64 + 8;
        IndexFootprint {
            runs: self.runs.len(),
            run_entries: self.runs.iter().map(|r| r.len() as u64).sum(),
            mapped_bytes: self
                .runs
                .iter()
                .filter(|r| r.path().is_some())
                .map(|r| r.size() as u64)
                .sum(),
            run_heap_bytes: self.runs.iter().map(|r| r.heap_bytes() as u64).sum(),
            fresh_entries: f.blobs.len(),
            fresh_heap_bytes: f.blobs.capacity() as u64 * entry
                + f.packs.capacity() as u64 * 64
                + f.pack_pos.capacity() as u64 * 40,
        }
    }
}

#[cfg(test)]
mod tests;
