//! Synthetic index objects, for benchmarks and tests of index scale
//! (`benches/index_scale.py` drives it through the hidden CLI command
//! `holdfast bench-synth-index`).
//!
//! Writes real, sealed index objects describing `entries` random blob ids
//! in made-up packs, as a repository of that many blobs would hold: 16 KiB
//! blocks in 16 MiB packs. The packs do not exist, so such a repository is
//! only good for opening, deduplicating against and backing up into; a
//! `check` reports the packs missing, as it should.

use rand::{Rng, SeedableRng};

use crate::error::Result;
use crate::id::Id;
use crate::pack::{BlobType, PackEntry, PackInfo};
use crate::repository::Repository;

/// Blobs per made-up pack (16 MiB of 16 KiB blocks).
const BLOBS_PER_PACK: u64 = 1024;

/// Write index objects for `entries` random blobs, `per_object` blobs per
/// object, on `threads` threads; `seed` makes the ids reproducible. Returns
/// the number of index objects written.
pub fn write_synthetic(
    repo: &Repository,
    entries: u64,
    per_object: u64,
    threads: usize,
    seed: u64,
) -> Result<u64> {
    let per_object = per_object.max(1);
    let objects = entries.div_ceil(per_object);
    let threads = threads.max(1) as u64;
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || -> Result<()> {
                    let mut o = t;
                    while o < objects {
                        let first = o * per_object;
                        let n = per_object.min(entries - first);
                        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (o << 20));
                        repo.write_index(&synthetic_packs(&mut rng, n))?;
                        o += threads;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| crate::RepoError::Invalid("a synthesis thread panicked".into()))??;
        }
        Ok(objects)
    })
}

fn synthetic_packs(rng: &mut impl Rng, n: u64) -> Vec<PackInfo> {
    let mut packs = Vec::new();
    let mut left = n;
    while left > 0 {
        let k = left.min(BLOBS_PER_PACK);
        let entries = (0..k)
            .map(|i| PackEntry {
                blob_type: BlobType::Data,
                id: Id(rng.gen()),
                offset: 37 + i as u32 * 6000,
                length: 6000,
                raw_len: 16384,
                inner: 0,
            })
            .collect();
        packs.push(PackInfo {
            id: Id(rng.gen()),
            salt: rng.gen(),
            entries,
        });
        left -= k;
    }
    packs
}
