//! Index tests: payload round trips, and runs (in memory, spilled to
//! files, merged) answering exactly as a plain map of the same entries.

use super::*;
use crate::pack::PackEntry;

#[test]
fn encode_decode_and_lookup() {
    let e = |i: u8| PackEntry {
        blob_type: BlobType::Data,
        id: Id([i; 32]),
        offset: u32::from(i) * 10,
        length: 10,
        raw_len: 9,
        inner: 0,
    };
    let p = |id: u8, entries| PackInfo {
        id: Id([id; 32]),
        salt: [id; 32],
        entries,
    };
    let packs = vec![p(100, vec![e(1), e(2)]), p(101, vec![e(3)])];
    let bytes = encode(&packs);
    let back = decode(&bytes, "i").unwrap();
    assert_eq!(back, packs);
    assert!(decode(&bytes[..bytes.len() - 1], "i").is_err());
    let idx = Index::new();
    for p in &back {
        idx.add_pack(p);
    }
    assert_eq!(idx.len(), 3);
    assert_eq!(idx.get(&Id([3; 32])).unwrap().pack, Id([101; 32]));
    assert!(idx.get(&Id([9; 32])).is_none());
    assert!(
        !bytes.starts_with(payload::V2_MAGIC),
        "no frames: version 1"
    );
}

/// Entries inside frames make a version-2 payload that keeps `inner`.
#[test]
fn framed_entries_round_trip_as_version_2() {
    let e = |i: u8, inner: u32| PackEntry {
        blob_type: BlobType::Data,
        id: Id([i; 32]),
        offset: 37,
        length: 100,
        raw_len: 16384,
        inner,
    };
    let packs = vec![PackInfo {
        id: Id([7; 32]),
        salt: [7; 32],
        entries: vec![e(1, 0), e(2, 16384), e(3, 32768)],
    }];
    let bytes = encode(&packs);
    assert!(bytes.starts_with(payload::V2_MAGIC));
    assert_eq!(decode(&bytes, "i").unwrap(), packs);
    for cut in [3, 8, bytes.len() - 2] {
        assert!(decode(&bytes[..cut], "i").is_err(), "cut at {cut}");
    }
    let idx = Index::new();
    idx.add_pack(&packs[0]);
    let loc = idx.get(&Id([3; 32])).unwrap();
    assert_eq!((loc.span(), loc.needed()), (32768..49152, 49152));
}

use std::collections::HashMap;

use rand::{Rng, SeedableRng};

use super::build::{self, RunBuilder};

/// Random index objects: packs of random blobs, some in frames (shared
/// offset and length, distinct `inner`), some blob ids repeated across
/// packs and objects (as concurrent backups write them).
fn random_objects(
    seed: u64,
    objects: usize,
    packs_per: usize,
    blobs_per: usize,
) -> Vec<(Id, Vec<PackInfo>)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut seen: Vec<Id> = Vec::new();
    let mut out = Vec::new();
    for _ in 0..objects {
        let mut packs = Vec::new();
        for _ in 0..rng.gen_range(1..=packs_per) {
            let mut entries = Vec::new();
            let mut offset = 37u32;
            let n = rng.gen_range(0..=blobs_per);
            let mut i = 0;
            while i < n {
                let blob_type = if rng.gen_bool(0.1) {
                    BlobType::Tree
                } else {
                    BlobType::Data
                };
                let frame = if rng.gen_bool(0.3) {
                    rng.gen_range(2..6)
                } else {
                    1
                };
                let length = rng.gen_range(17..100_000);
                let mut inner = 0u32;
                for _ in 0..frame {
                    let id = if !seen.is_empty() && rng.gen_bool(0.05) {
                        seen[rng.gen_range(0..seen.len())]
                    } else {
                        Id(rng.gen())
                    };
                    seen.push(id);
                    let raw_len = rng.gen_range(1..20_000);
                    entries.push(PackEntry {
                        blob_type,
                        id,
                        offset,
                        length,
                        raw_len,
                        inner: if frame > 1 { inner } else { 0 },
                    });
                    inner += raw_len;
                    i += 1;
                }
                offset += length;
            }
            packs.push(PackInfo {
                id: Id(rng.gen()),
                salt: rng.gen(),
                entries,
            });
        }
        out.push((Id(rng.gen()), packs));
    }
    out
}

/// Every valid location of every id (an id listed twice has two).
fn reference(objects: &[(Id, Vec<PackInfo>)]) -> HashMap<Id, Vec<BlobLocation>> {
    let mut m: HashMap<Id, Vec<BlobLocation>> = HashMap::new();
    for (_, packs) in objects {
        for p in packs {
            for e in &p.entries {
                m.entry(e.id).or_default().push(BlobLocation {
                    pack: p.id,
                    salt: p.salt,
                    blob_type: e.blob_type,
                    offset: e.offset,
                    length: e.length,
                    raw_len: e.raw_len,
                    inner: e.inner,
                });
            }
        }
    }
    m
}

fn assert_same(idx: &Index, want: &HashMap<Id, Vec<BlobLocation>>, seed: u64) {
    for (id, locs) in want {
        let got = idx
            .get(id)
            .unwrap_or_else(|| panic!("seed {seed}: {id:?} missing"));
        assert!(
            locs.contains(&got),
            "seed {seed}: {id:?} at {got:?}, not one of {locs:?}"
        );
        assert!(idx.contains(id));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xdead);
    for _ in 0..2000 {
        let id = Id(rng.gen());
        assert!(
            idx.get(&id).is_none() && !idx.contains(&id),
            "seed {seed}: phantom {id:?}"
        );
    }
    assert_eq!(idx.len(), want.len(), "seed {seed}");
    let packs: std::collections::HashSet<Id> = want.values().flatten().map(|l| l.pack).collect();
    let got: std::collections::HashSet<Id> = idx.packs().collect();
    assert!(packs.is_subset(&got), "seed {seed}: packs missing");
}

const KEY: [u8; 32] = [7; 32];

/// Runs built in memory, and as files with many spills, answer exactly as
/// the map of the same entries, for random data of several shapes.
#[test]
fn runs_answer_like_a_map() {
    let dir = tempfile::tempdir().unwrap();
    for seed in 0..12u64 {
        let objects = random_objects(seed, 1 + seed as usize % 7, 4, 300 * (seed as usize % 4));
        let want = reference(&objects);
        let mut mem = RunBuilder::new(None, 0);
        let mut file = RunBuilder::new(Some(dir.path()), 64 + seed as usize * 7);
        for (name, packs) in &objects {
            mem.add_object(Some(*name), packs).unwrap();
            file.add_object(Some(*name), packs).unwrap();
        }
        let mem = Index::from_runs(vec![mem.finish_in_memory(KEY).unwrap()]);
        assert_same(&mem, &want, seed);
        let path = file.finish_to_file(KEY).unwrap();
        let run = build::open_file(&path, KEY).unwrap();
        let names: Vec<Id> = run.names().collect();
        assert_eq!(names, objects.iter().map(|o| o.0).collect::<Vec<_>>());
        assert_same(&Index::from_runs(vec![run]), &want, seed);
        // No spill files are left behind.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("tmp-"))
            .collect();
        assert!(left.is_empty(), "seed {seed}: {left:?}");
    }
}

/// Index objects spread over several runs, merged or not, and blobs added
/// since: every lookup equals the map's.
#[test]
fn many_runs_merged_and_fresh_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let objects = random_objects(99, 40, 3, 200);
    let want = reference(&objects);
    let mut runs = Vec::new();
    for chunk in objects[..30].chunks(3) {
        let mut b = RunBuilder::new(Some(dir.path()), 100);
        for (name, packs) in chunk {
            b.add_object(Some(*name), packs).unwrap();
        }
        runs.push(build::open_file(&b.finish_to_file(KEY).unwrap(), KEY).unwrap());
    }
    let refs: Vec<&run::Run> = runs.iter().collect();
    let merged =
        build::open_file(&build::merge_runs(dir.path(), KEY, &refs).unwrap(), KEY).unwrap();
    assert_eq!(merged.names().count(), 30);
    let split = Index::from_runs(runs);
    let one = Index::from_runs(vec![merged]);
    for idx in [&split, &one] {
        for (_, packs) in &objects[30..] {
            for p in packs {
                idx.add_pack(p);
            }
        }
        assert_same(idx, &want, 99);
    }
}

/// A damaged byte in a block of records is caught before the block is
/// used: the lookup misses, the run is marked damaged and its file removed.
/// A damaged byte after the records fails the open.
#[test]
fn damaged_runs_are_never_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let objects = random_objects(5, 3, 3, 2000);
    let mut b = RunBuilder::new(Some(dir.path()), 1 << 20);
    for (name, packs) in &objects {
        b.add_object(Some(*name), packs).unwrap();
    }
    let path = b.finish_to_file(KEY).unwrap();
    let good = std::fs::read(&path).unwrap();
    let want = reference(&objects);
    let n = build::open_file(&path, KEY).unwrap().len();
    // Flip one bit of the blob id of record 1500 (and its neighbours' block).
    let mut bad = good.clone();
    bad[1500 * run::REC + 3] ^= 0x10;
    std::fs::write(&path, &bad).unwrap();
    let idx = Index::from_runs(vec![build::open_file(&path, KEY).unwrap()]);
    let in_block: Vec<Id> = {
        let clean = Index::from_runs(vec![build::open_file(
            &{
                let p = dir.path().join("clean.run");
                std::fs::write(&p, &good).unwrap();
                p
            },
            KEY,
        )
        .unwrap()]);
        let r = &clean.runs[0];
        (run::BLOCK..n.min(2 * run::BLOCK))
            .filter_map(|i| r.location(i).map(|(id, _)| id))
            .collect()
    };
    assert!(!in_block.is_empty());
    for id in &in_block {
        assert!(
            idx.get(id).is_none(),
            "a blob of the damaged block was served"
        );
    }
    assert!(idx.damaged());
    assert!(!path.exists(), "the damaged run file must be removed");
    // Every other lookup misses too (the run is no longer trusted), never
    // returns a wrong location.
    for (id, locs) in &want {
        if let Some(l) = idx.get(id) {
            assert!(locs.contains(&l));
        }
    }
    // Damage after the records (pack table, names, MACs, footer): refused at open.
    for at in [
        n * run::REC + 5,
        good.len() - 40,
        good.len() - 1,
        good.len() - 100,
    ] {
        let mut bad = good.clone();
        bad[at] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        assert!(
            build::open_file(&path, KEY).is_err(),
            "damage at {at} accepted"
        );
    }
    // Truncated, or of another key: refused.
    std::fs::write(&path, &good[..good.len() - 1]).unwrap();
    assert!(build::open_file(&path, KEY).is_err());
    std::fs::write(&path, &good).unwrap();
    assert!(build::open_file(&path, [8; 32]).is_err());
    assert!(build::open_file(&path, KEY).is_ok());
}

/// The memory an index holds does not grow with its entries when its runs
/// are mapped files: 200,000 entries cost a few KB of heap.
#[test]
fn mapped_index_memory_is_independent_of_entries() {
    let dir = tempfile::tempdir().unwrap();
    let mut sizes = Vec::new();
    for blobs in [2_000usize, 200_000] {
        let mut b = RunBuilder::new(Some(dir.path()), 50_000);
        let mut rng = rand::rngs::StdRng::seed_from_u64(blobs as u64);
        let pack = PackInfo {
            id: Id(rng.gen()),
            salt: rng.gen(),
            entries: (0..blobs)
                .map(|i| PackEntry {
                    blob_type: BlobType::Data,
                    id: Id(rng.gen()),
                    offset: i as u32 * 100,
                    length: 100,
                    raw_len: 90,
                    inner: 0,
                })
                .collect(),
        };
        b.add_object(Some(Id(rng.gen())), &[pack]).unwrap();
        let run = build::open_file(&b.finish_to_file(KEY).unwrap(), KEY).unwrap();
        let idx = Index::from_runs(vec![run]);
        let f = idx.footprint();
        assert_eq!(f.run_entries, blobs as u64);
        assert!(f.mapped_bytes >= blobs as u64 * run::REC as u64);
        sizes.push(f.run_heap_bytes + f.fresh_heap_bytes);
    }
    // One bit per 1024 records is all that grows: 200,000 entries, 25 bytes.
    assert!(
        sizes[1] < 1024,
        "heap of a 200k-entry mapped index: {sizes:?}"
    );
    assert!(sizes[1] - sizes[0] < 64, "{sizes:?}");
}
