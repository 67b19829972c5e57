//! Building sorted runs (see `run`) in bounded memory.
//!
//! Entries arrive in whatever order index objects list them. The builder
//! keeps at most `chunk` records in memory; a full chunk is sorted and
//! spilled to a temporary file in the cache directory, and the spills are
//! merged into one run at the end (an external merge sort), so building the
//! index of 50 million blobs costs a bounded amount of memory, not 50
//! million records. Merging runs uses the same streaming merge, so the
//! memory of a merge is one record per input plus the pack tables.
//!
//! Without a directory (no cache) the builder sorts in memory and the run
//! stays in memory: 56 bytes per blob, against about 89 for the hash map
//! this replaced.

use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::pack::PackInfo;

use super::mmap::{Mmap, Region};
use super::run::{self, Record, Run, BLOCK, REC};
use super::BlobLocation;

/// Records sorted in memory before a spill: 2^20 × 56 bytes = 56 MiB.
pub(crate) const DEFAULT_CHUNK: usize = 1 << 20;

/// Accumulates index entries into one run.
pub(crate) struct RunBuilder {
    packs: Vec<(Id, [u8; 32])>,
    pack_pos: HashMap<Id, u32>,
    names: Vec<Id>,
    chunk: Vec<Record>,
    chunk_limit: usize,
    dir: Option<PathBuf>,
    spills: Vec<Spill>,
}

/// A sorted temporary file of records, removed when dropped.
struct Spill {
    path: PathBuf,
    records: u64,
}

impl Drop for Spill {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn io(what: &str, path: &Path, e: std::io::Error) -> RepoError {
    RepoError::io(format!("{what} {}", path.display()), e)
}

/// A new private file (0600: the cache holds a repository's metadata).
fn create(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io("creating", path, e))
}

/// A fresh temporary name in `dir` (removed by its owner, or by the cache's
/// sweep of `tmp-*` leftovers).
pub(crate) fn temp_path(dir: &Path, what: &str) -> PathBuf {
    dir.join(format!(
        "tmp-{what}-{}",
        hex::encode(rand::random::<[u8; 8]>())
    ))
}

impl RunBuilder {
    /// A builder spilling to `dir` (None: everything in memory).
    pub(crate) fn new(dir: Option<&Path>, chunk_limit: usize) -> RunBuilder {
        RunBuilder {
            packs: Vec::new(),
            pack_pos: HashMap::new(),
            names: Vec::new(),
            chunk: Vec::new(),
            chunk_limit: chunk_limit.max(BLOCK),
            dir: dir.map(Path::to_path_buf),
            spills: Vec::new(),
        }
    }

    /// Records added so far (duplicates included).
    pub(crate) fn records(&self) -> u64 {
        self.spills.iter().map(|s| s.records).sum::<u64>() + self.chunk.len() as u64
    }

    /// Add the packs of the index object `name` (None: an object whose name
    /// is not an id, held but not recorded as covered).
    pub(crate) fn add_object(&mut self, name: Option<Id>, packs: &[PackInfo]) -> Result<()> {
        if let Some(n) = name {
            self.names.push(n);
        }
        for p in packs {
            self.add_pack(p)?;
        }
        Ok(())
    }

    pub(crate) fn add_pack(&mut self, p: &PackInfo) -> Result<()> {
        let next = self.packs.len() as u32;
        let ord = *self.pack_pos.entry(p.id).or_insert(next);
        if ord == next {
            self.packs.push((p.id, p.salt));
        }
        for e in &p.entries {
            let loc = BlobLocation {
                pack: p.id,
                salt: p.salt,
                blob_type: e.blob_type,
                offset: e.offset,
                length: e.length,
                raw_len: e.raw_len,
                inner: e.inner,
            };
            self.chunk.push(run::record(&e.id, ord, &loc));
            if self.dir.is_some() && self.chunk.len() >= self.chunk_limit {
                self.spill()?;
            }
        }
        Ok(())
    }

    fn spill(&mut self) -> Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        sort_dedup(&mut self.chunk);
        let path = temp_path(dir, "spill");
        let spill = Spill {
            path: path.clone(),
            records: self.chunk.len() as u64,
        };
        let f = create(&path)?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        for r in &self.chunk {
            w.write_all(r).map_err(|e| io("writing", &path, e))?;
        }
        w.flush().map_err(|e| io("writing", &path, e))?;
        self.spills.push(spill);
        self.chunk.clear();
        Ok(())
    }

    /// Build the run in memory (no cache directory).
    pub(crate) fn finish_in_memory(mut self, key: [u8; 32]) -> Result<Run> {
        let mut recs = std::mem::take(&mut self.chunk);
        sort_dedup(&mut recs);
        let n = recs.len() as u64;
        let bits = run::fanout_bits(n);
        // Room for the tail and footer after the records, so that they are
        // appended without copying the records.
        let tail_len = (4usize << bits)
            + 64 * self.packs.len()
            + 32 * self.names.len()
            + 32 * recs.len().div_ceil(BLOCK)
            + run::FOOTER;
        recs.reserve_exact(tail_len.div_ceil(REC));
        let mut w = RunWriter::new(key, n);
        for r in &recs {
            w.count(r);
        }
        let mut bytes: Vec<u8> = recs.into_flattened();
        w.macs_of(&bytes);
        let (tail, footer) = w.tail(&self.packs, &self.names);
        bytes.extend_from_slice(&tail);
        bytes.extend_from_slice(&footer);
        Run::open(Region::Owned(bytes), key, None, true)
    }

    /// Build the run as a file in the builder's directory; returns its path
    /// (named by its MAC, so equal runs get equal names).
    pub(crate) fn finish_to_file(mut self, key: [u8; 32]) -> Result<PathBuf> {
        let Some(dir) = self.dir.clone() else {
            return Err(RepoError::Invalid(
                "no cache directory to build the index in".into(),
            ));
        };
        sort_dedup(&mut self.chunk);
        let upper = self.records();
        let mut sources: Vec<Source<'_>> = self
            .spills
            .iter()
            .map(|s| {
                let f = File::open(&s.path).map_err(|e| io("opening", &s.path, e))?;
                Ok(Source::Spill {
                    r: BufReader::with_capacity(1 << 18, f),
                    left: s.records,
                })
            })
            .collect::<Result<_>>()?;
        sources.push(Source::Mem {
            recs: &self.chunk,
            pos: 0,
        });
        write_merged(&dir, key, upper, sources, &self.packs, &self.names)
    }
}

/// Sort by blob id and drop repeated ids (either location is valid).
fn sort_dedup(recs: &mut Vec<Record>) {
    recs.sort_unstable_by(|a, b| a[..32].cmp(&b[..32]));
    recs.dedup_by(|a, b| a[..32] == b[..32]);
}

/// Merge several runs into one file in `dir`, their pack tables into one.
pub(crate) fn merge_runs(dir: &Path, key: [u8; 32], runs: &[&Run]) -> Result<PathBuf> {
    let mut packs: Vec<(Id, [u8; 32])> = Vec::new();
    let mut pos: HashMap<Id, u32> = HashMap::new();
    let mut names: Vec<Id> = Vec::new();
    let mut seen: HashSet<Id> = HashSet::new();
    let mut sources = Vec::new();
    for r in runs {
        let mut remap = Vec::with_capacity(r.pack_count());
        for i in 0..r.pack_count() {
            let Some((id, salt)) = r.pack(i) else {
                return Err(RepoError::corrupt(
                    "index cache run",
                    "pack table out of range",
                ));
            };
            let next = packs.len() as u32;
            let ord = *pos.entry(id).or_insert(next);
            if ord == next {
                packs.push((id, salt));
            }
            remap.push(ord);
        }
        names.extend(r.names().filter(|n| seen.insert(*n)));
        sources.push(Source::Run {
            run: r,
            pos: 0,
            remap,
        });
    }
    let upper = runs.iter().map(|r| r.len() as u64).sum();
    write_merged(dir, key, upper, sources, &packs, &names)
}

/// Where sorted records come from in a merge.
enum Source<'a> {
    Mem {
        recs: &'a [Record],
        pos: usize,
    },
    Spill {
        r: BufReader<File>,
        left: u64,
    },
    Run {
        run: &'a Run,
        pos: usize,
        remap: Vec<u32>,
    },
}

impl Source<'_> {
    fn next(&mut self) -> Result<Option<Record>> {
        match self {
            Source::Mem { recs, pos } => {
                let r = recs.get(*pos).copied();
                *pos += 1;
                Ok(r)
            }
            Source::Spill { r, left } => {
                if *left == 0 {
                    return Ok(None);
                }
                let mut rec = [0u8; REC];
                r.read_exact(&mut rec)
                    .map_err(|e| RepoError::io("reading an index spill file", e))?;
                *left -= 1;
                Ok(Some(rec))
            }
            Source::Run { run, pos, remap } => {
                if *pos >= run.len() {
                    return Ok(None);
                }
                let Some(src) = run.rec(*pos) else {
                    return Err(RepoError::corrupt(
                        "index cache run",
                        "a block of records failed its check while merging",
                    ));
                };
                let mut rec = [0u8; REC];
                rec.copy_from_slice(src);
                let Some(&ord) = remap.get(run::rec_pack(&rec) as usize) else {
                    return Err(RepoError::corrupt(
                        "index cache run",
                        "pack ordinal out of range",
                    ));
                };
                run::set_rec_pack(&mut rec, ord);
                *pos += 1;
                Ok(Some(rec))
            }
        }
    }
}

/// Stream the k-way merge of `sources` (each sorted) into a new run file.
fn write_merged(
    dir: &Path,
    key: [u8; 32],
    upper: u64,
    mut sources: Vec<Source<'_>>,
    packs: &[(Id, [u8; 32])],
    names: &[Id],
) -> Result<PathBuf> {
    let tmp = temp_path(dir, "run");
    let guard = TempFile(Some(tmp.clone()));
    let f = create(&tmp)?;
    let mut out = BufWriter::with_capacity(1 << 20, f);
    let mut w = RunWriter::new(key, upper);
    let mut heads: Vec<Option<Record>> = Vec::with_capacity(sources.len());
    let mut heap = BinaryHeap::new();
    for (i, s) in sources.iter_mut().enumerate() {
        let h = s.next()?;
        if let Some(r) = &h {
            heap.push(std::cmp::Reverse((key_of(r), i)));
        }
        heads.push(h);
    }
    let mut last: Option<[u8; 32]> = None;
    while let Some(std::cmp::Reverse((k, i))) = heap.pop() {
        let Some(rec) = heads.get_mut(i).and_then(Option::take) else {
            continue;
        };
        if last != Some(k) {
            w.push(&rec);
            out.write_all(&rec).map_err(|e| io("writing", &tmp, e))?;
            last = Some(k);
        }
        if let Some(s) = sources.get_mut(i) {
            let next = s.next()?;
            if let Some(r) = &next {
                heap.push(std::cmp::Reverse((key_of(r), i)));
            }
            heads[i] = next;
        }
    }
    w.end_block();
    let (tail, footer) = w.tail(packs, names);
    out.write_all(&tail).map_err(|e| io("writing", &tmp, e))?;
    out.write_all(&footer).map_err(|e| io("writing", &tmp, e))?;
    let f = out
        .into_inner()
        .map_err(|e| io("writing", &tmp, e.into_error()))?;
    // Not synced: a run torn by a crash fails its MAC and is rebuilt.
    drop(f);
    let mac = footer.get(footer.len() - 32..).unwrap_or(&[]);
    let path = dir.join(format!("{}.run", hex::encode(mac.get(..16).unwrap_or(mac))));
    std::fs::rename(&tmp, &path).map_err(|e| io("renaming", &tmp, e))?;
    drop(guard.keep());
    Ok(path)
}

fn key_of(r: &Record) -> [u8; 32] {
    let mut k = [0u8; 32];
    k.copy_from_slice(&r[..32]);
    k
}

/// Removes a temporary file unless kept.
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn keep(mut self) -> Option<PathBuf> {
        self.0.take()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Map a run file and verify it.
pub(crate) fn open_file(path: &Path, key: [u8; 32]) -> Result<Run> {
    let f = File::open(path).map_err(|e| io("opening", path, e))?;
    let map = Mmap::map(&f).map_err(|e| io("mapping", path, e))?;
    Run::open(Region::Map(map), key, Some(path.to_path_buf()), false)
}

/// Fan-out counts and block MACs of records as they stream past.
struct RunWriter {
    key: [u8; 32],
    bits: u32,
    counts: Vec<u32>,
    n: u64,
    block: blake3::Hasher,
    in_block: usize,
    blocks: u64,
    macs: Vec<u8>,
}

impl RunWriter {
    /// `upper`: at most this many records will be pushed (sizes the fan-out).
    fn new(key: [u8; 32], upper: u64) -> RunWriter {
        let bits = run::fanout_bits(upper);
        RunWriter {
            key,
            bits,
            counts: vec![0; 1 << bits],
            n: 0,
            block: Self::block_hasher(&key, 0),
            in_block: 0,
            blocks: 0,
            macs: Vec::new(),
        }
    }

    fn block_hasher(key: &[u8; 32], i: u64) -> blake3::Hasher {
        let mut h = blake3::Hasher::new_keyed(key);
        h.update(&i.to_le_bytes());
        h
    }

    /// Count a record for the fan-out only (its MAC comes from `macs_of`).
    fn count(&mut self, r: &Record) {
        let k = run::bucket(&r[..], self.bits);
        if let Some(c) = self.counts.get_mut(k) {
            *c += 1;
        }
        self.n += 1;
    }

    /// Count a record and add it to the current block's MAC.
    fn push(&mut self, r: &Record) {
        self.count(r);
        self.block.update(r);
        self.in_block += 1;
        if self.in_block == BLOCK {
            self.end_block();
        }
    }

    fn end_block(&mut self) {
        if self.in_block == 0 {
            return;
        }
        self.blocks += 1;
        let h = std::mem::replace(&mut self.block, Self::block_hasher(&self.key, self.blocks));
        self.macs.extend_from_slice(h.finalize().as_bytes());
        self.in_block = 0;
    }

    /// The block MACs of all records at once (in-memory builds).
    fn macs_of(&mut self, records: &[u8]) {
        for (i, block) in records.chunks(BLOCK * REC).enumerate() {
            self.macs
                .extend_from_slice(&run::block_mac(&self.key, i as u64, block));
        }
    }

    /// The bytes after the records, and the footer.
    fn tail(&self, packs: &[(Id, [u8; 32])], names: &[Id]) -> (Vec<u8>, Vec<u8>) {
        let mut t = Vec::with_capacity(4 * self.counts.len() + 64 * packs.len() + 32 * names.len());
        let mut sum = 0u32;
        for c in &self.counts {
            sum += c;
            t.extend_from_slice(&sum.to_le_bytes());
        }
        for (id, salt) in packs {
            t.extend_from_slice(&id.0);
            t.extend_from_slice(salt);
        }
        for n in names {
            t.extend_from_slice(&n.0);
        }
        t.extend_from_slice(&self.macs);
        let footer = run::footer(
            &self.key,
            self.n,
            packs.len() as u64,
            names.len() as u64,
            self.bits,
            &t,
        );
        (t, footer)
    }
}
