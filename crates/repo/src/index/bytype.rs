//! Which packs hold blobs of a type, from every record of the index (not
//! only the one location per blob that lookups return): archival must
//! never move a pack holding a tree, even a tree no snapshot names yet
//! (a backup in progress writes its trees before its snapshot).

use std::collections::HashSet;

use super::Index;
use crate::id::Id;
use crate::pack::BlobType;

impl Index {
    /// Every indexed pack that holds at least one blob of `blob_type`.
    /// Scans every record of the runs once (sequential reads of mapped
    /// files); keeps only the pack ids found.
    pub fn packs_holding(&self, blob_type: BlobType) -> HashSet<Id> {
        let mut out = HashSet::new();
        for r in &self.runs {
            for k in 0..r.len() {
                if let Some((_, l)) = r.location(k) {
                    if l.blob_type == blob_type {
                        out.insert(l.pack);
                    }
                }
            }
        }
        let f = self.fresh();
        for l in f.blobs.values() {
            if l.blob_type == blob_type {
                if let Some((pack, _)) = f.packs.get(l.pack as usize) {
                    out.insert(*pack);
                }
            }
        }
        out
    }
}
