//! Repository statistics: logical size, stored size, dedup and compression.
//!
//! Logical bytes count every file of every selected snapshot (what a naive
//! copy would store). Unique bytes count each referenced data blob once
//! (after dedup, before compression). Stored bytes are the encrypted,
//! compressed blob lengths of those blobs. Trees are walked once per id.

use std::collections::HashSet;

use serde::Serialize;

use crate::error::Result;
use crate::id::Id;
use crate::repository::Repository;
use crate::snapshot::SnapshotEntry;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub snapshots: usize,
    pub files: u64,
    pub logical_bytes: u64,
    pub unique_blobs: u64,
    pub unique_bytes: u64,
    pub stored_bytes: u64,
    /// logical / unique (how much deduplication saved).
    pub dedup_ratio: f64,
    /// unique / stored (how much compression saved).
    pub compression_ratio: f64,
    /// logical / stored.
    pub total_ratio: f64,
    /// Size of all packs in the repository (including unreferenced data).
    pub repository_pack_bytes: u64,
    pub packs: u64,
}

pub fn stats(repo: &Repository, snapshots: &[SnapshotEntry]) -> Result<Stats> {
    let index = repo.index();
    let mut s = Stats {
        snapshots: snapshots.len(),
        ..Stats::default()
    };
    let mut blobs: HashSet<Id> = HashSet::new();
    for snap in snapshots {
        // Logical size is per snapshot: a file in two snapshots counts twice.
        let mut stack = vec![snap.snapshot.tree];
        let mut seen_here: HashSet<Id> = HashSet::new();
        while let Some(t) = stack.pop() {
            if !seen_here.insert(t) {
                continue;
            }
            blobs.insert(t);
            let tree = repo.load_tree(&t)?;
            for n in &tree.nodes {
                if let Some(sub) = n.subtree {
                    stack.push(sub);
                }
                if !n.content.is_empty() || n.kind == crate::tree::NodeKind::File {
                    s.files += 1;
                    s.logical_bytes += n.size;
                    blobs.extend(n.content.iter().copied());
                }
            }
        }
    }
    // A frame's stored bytes count once, however many of its blobs the
    // snapshots use (frames are shared by blobs of one backup).
    let mut regions: HashSet<(Id, u32)> = HashSet::new();
    for b in &blobs {
        if let Some(loc) = index.get(b) {
            if loc.blob_type == crate::pack::BlobType::Data {
                s.unique_blobs += 1;
                s.unique_bytes += u64::from(loc.raw_len);
            }
            if regions.insert((loc.pack, loc.offset)) {
                s.stored_bytes += u64::from(loc.length);
            }
        }
    }
    let packs = repo.block_on(repo.backend().list(holdfast_storage::ObjectKind::Pack))?;
    s.packs = packs.len() as u64;
    s.repository_pack_bytes = packs.iter().map(|m| m.size).sum();
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    s.dedup_ratio = ratio(s.logical_bytes, s.unique_bytes);
    s.compression_ratio = ratio(s.unique_bytes, s.stored_bytes);
    s.total_ratio = ratio(s.logical_bytes, s.stored_bytes);
    Ok(s)
}
