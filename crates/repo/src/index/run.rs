//! A sorted run: an immutable table of index entries sorted by blob id,
//! with fixed-width records, looked up by a fan-out table and a binary
//! search. Kept in the local cache (memory-mapped) or in memory.
//!
//! This is a local file, not a repository object: it is derived from index
//! objects and can be rebuilt from them at any time. Layout (little-endian):
//!
//! ```text
//! records  n × (blob id [32] | pack u32 | offset u32 | length u32 | raw_len u32 | inner u32 | type u8 | 0 [3])
//! fanout   2^bits × u32        records whose id's first `bits` bits are ≤ k (cumulative)
//! packs    p × (pack id [32] | salt [32])        `pack` above is an ordinal into this
//! names    m × [32]            the index objects this run holds, all of their entries
//! macs     ceil(n / 1024) × [32]   keyed BLAKE3 of each block of 1024 records
//! footer   "HFIR" | version u32 | n u64 | p u64 | m u64 | bits u32 | block u32 | 0 [56] | mac [32]
//! ```
//!
//! The footer's `mac` (keyed BLAKE3 under a key derived from the master key)
//! covers the footer's first 96 bytes and everything between the records and
//! the footer; it is checked when the run is opened (a few MB at 50 million
//! entries). Each block of records is checked against its own MAC the first
//! time a lookup touches it, so opening stays fast and a lookup never
//! trusts a byte that was not verified. A run that fails a check is marked
//! damaged and its file removed: a lookup then misses (a backup stores the
//! blob again, which is harmless) and the next load rebuilds the run.
//!
//! Duplicated blob ids inside one run are removed when it is built (either
//! location is valid, see `docs/format.md`); two runs may hold the same id.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::crypto::SALT_LEN;
use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::pack::BlobType;

use super::mmap::Region;
use super::BlobLocation;

/// Bytes of one record.
pub(crate) const REC: usize = 56;
/// Records per verified block.
pub(crate) const BLOCK: usize = 1024;
/// Bytes of the footer.
pub(crate) const FOOTER: usize = 128;
/// Bytes of the footer covered by its MAC (the rest is the MAC).
const FOOTER_SIGNED: usize = 96;
const MAGIC: &[u8; 4] = b"HFIR";
const VERSION: u32 = 1;
/// Fan-out bits never exceed this (a 256 KiB table).
const MAX_BITS: u32 = 16;

/// One record, as stored.
pub(crate) type Record = [u8; REC];

/// The key that authenticates runs of one repository (derived from its
/// master key, so a run of another repository never verifies).
pub(crate) fn mac_key(master: &[u8; 32]) -> [u8; 32] {
    blake3::derive_key("holdfast local cache v1 index run mac", master)
}

/// Fan-out bits for `n` records: about 64 records per bucket.
pub(crate) fn fanout_bits(n: u64) -> u32 {
    let mut bits = 0;
    while bits < MAX_BITS && (n >> (bits + 6)) > 0 {
        bits += 1;
    }
    bits
}

/// The fan-out bucket of an id.
pub(crate) fn bucket(id: &[u8], bits: u32) -> usize {
    if bits == 0 {
        return 0;
    }
    let mut w = [0u8; 4];
    w.copy_from_slice(&id[..4]);
    (u32::from_be_bytes(w) >> (32 - bits)) as usize
}

/// A record for a blob at pack ordinal `pack`.
pub(crate) fn record(id: &Id, pack: u32, loc: &BlobLocation) -> Record {
    let mut r = [0u8; REC];
    r[..32].copy_from_slice(&id.0);
    r[32..36].copy_from_slice(&pack.to_le_bytes());
    r[36..40].copy_from_slice(&loc.offset.to_le_bytes());
    r[40..44].copy_from_slice(&loc.length.to_le_bytes());
    r[44..48].copy_from_slice(&loc.raw_len.to_le_bytes());
    r[48..52].copy_from_slice(&loc.inner.to_le_bytes());
    r[52] = loc.blob_type as u8;
    r
}

pub(crate) fn rec_pack(r: &[u8]) -> u32 {
    le32(r, 32)
}

pub(crate) fn set_rec_pack(r: &mut Record, pack: u32) {
    r[32..36].copy_from_slice(&pack.to_le_bytes());
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// The MAC of block `i` of records.
pub(crate) fn block_mac(key: &[u8; 32], i: u64, block: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(&i.to_le_bytes());
    h.update(block);
    *h.finalize().as_bytes()
}

/// The footer for a run, MAC included, given the bytes between records and footer.
pub(crate) fn footer(key: &[u8; 32], n: u64, p: u64, m: u64, bits: u32, tail: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(FOOTER);
    f.extend_from_slice(MAGIC);
    f.extend_from_slice(&VERSION.to_le_bytes());
    f.extend_from_slice(&n.to_le_bytes());
    f.extend_from_slice(&p.to_le_bytes());
    f.extend_from_slice(&m.to_le_bytes());
    f.extend_from_slice(&bits.to_le_bytes());
    f.extend_from_slice(&(BLOCK as u32).to_le_bytes());
    f.resize(FOOTER_SIGNED, 0);
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(&f);
    h.update(tail);
    f.extend_from_slice(h.finalize().as_bytes());
    f
}

/// Where the parts of a run lie in its bytes.
#[derive(Debug, Clone, Copy)]
struct Layout {
    n: usize,
    packs: usize,
    names: usize,
    bits: u32,
    fanout_at: usize,
    packs_at: usize,
    names_at: usize,
    macs_at: usize,
}

impl Layout {
    fn blocks(&self) -> usize {
        self.n.div_ceil(BLOCK)
    }
}

/// An open, verified run.
pub(crate) struct Run {
    region: Region,
    layout: Layout,
    key: [u8; 32],
    /// One bit per block of records: verified against its MAC.
    verified: Vec<AtomicU64>,
    /// A check failed: every lookup misses from now on.
    damaged: AtomicBool,
    /// The file, removed when the run is found damaged (None: in memory).
    path: Option<PathBuf>,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("records", &self.layout.n)
            .field("path", &self.path)
            .finish()
    }
}

impl Run {
    /// Open a run's bytes: the footer and everything it signs are checked
    /// now, blocks of records on first use. `trusted` (a run built in this
    /// process and never written out) skips the block checks.
    pub(crate) fn open(
        region: Region,
        key: [u8; 32],
        path: Option<PathBuf>,
        trusted: bool,
    ) -> Result<Run> {
        let name = match &path {
            Some(p) => format!("index cache file {}", p.display()),
            None => "in-memory index run".to_string(),
        };
        let what = || name.clone();
        let b = region.bytes();
        let total = b.len();
        if total < FOOTER {
            return Err(RepoError::corrupt(what(), "shorter than its footer"));
        }
        let f = &b[total - FOOTER..];
        if &f[..4] != MAGIC || le32(f, 4) != VERSION {
            return Err(RepoError::corrupt(
                what(),
                "not an index run of this version",
            ));
        }
        let (n, p, m, bits) = (le64(f, 8), le64(f, 16), le64(f, 24), le32(f, 32));
        if bits > MAX_BITS || le32(f, 36) as usize != BLOCK {
            return Err(RepoError::corrupt(what(), "bad fan-out or block size"));
        }
        // Sizes from the footer, checked against the file before any use.
        let size = |count: u64, width: u64| count.checked_mul(width);
        let parts = [
            size(n, REC as u64),
            size(1u64 << bits, 4),
            size(p, 64),
            size(m, 32),
            size(n.div_ceil(BLOCK as u64), 32),
        ];
        let mut at = 0u64;
        let mut offs = [0usize; 5];
        for (i, part) in parts.iter().enumerate() {
            offs[i] = usize::try_from(at).map_err(|_| RepoError::corrupt(what(), "too large"))?;
            at = part
                .and_then(|s| at.checked_add(s))
                .ok_or_else(|| RepoError::corrupt(what(), "sizes overflow"))?;
        }
        if at + FOOTER as u64 != total as u64 {
            return Err(RepoError::corrupt(
                what(),
                format!("{total} bytes, its footer describes {}", at + FOOTER as u64),
            ));
        }
        let tail = &b[offs[1]..total - FOOTER];
        let mut h = blake3::Hasher::new_keyed(&key);
        h.update(&f[..FOOTER_SIGNED]);
        h.update(tail);
        if h.finalize().as_bytes() != &f[FOOTER_SIGNED..] {
            return Err(RepoError::corrupt(
                what(),
                "its MAC does not match (damaged, or of another repository)",
            ));
        }
        let layout = Layout {
            n: n as usize,
            packs: p as usize,
            names: m as usize,
            bits,
            fanout_at: offs[1],
            packs_at: offs[2],
            names_at: offs[3],
            macs_at: offs[4],
        };
        let fill = if trusted { u64::MAX } else { 0 };
        let verified = (0..layout.blocks().div_ceil(64))
            .map(|_| AtomicU64::new(fill))
            .collect();
        let run = Run {
            region,
            layout,
            key,
            verified,
            damaged: AtomicBool::new(false),
            path,
        };
        // The fan-out must be a cumulative count ending at n: anything else
        // would send a binary search out of range.
        let mut prev = 0u32;
        for k in 0..(1usize << bits) {
            let v = run.fanout(k);
            if v < prev || v as usize > layout.n {
                return Err(RepoError::corrupt(what(), "fan-out table out of order"));
            }
            prev = v;
        }
        if prev as usize != layout.n {
            return Err(RepoError::corrupt(
                what(),
                "fan-out table does not cover every record",
            ));
        }
        Ok(run)
    }

    pub(crate) fn len(&self) -> usize {
        self.layout.n
    }

    pub(crate) fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Bytes of the run (mapped or owned).
    pub(crate) fn size(&self) -> usize {
        self.region.bytes().len()
    }

    /// Heap bytes this run holds besides its (mapped) bytes.
    pub(crate) fn heap_bytes(&self) -> usize {
        let owned = match &self.region {
            Region::Owned(v) => v.capacity(),
            Region::Map(_) => 0,
        };
        owned + self.verified.len() * 8 + std::mem::size_of::<Run>()
    }

    pub(crate) fn is_damaged(&self) -> bool {
        self.damaged.load(Ordering::Relaxed)
    }

    fn fanout(&self, k: usize) -> u32 {
        le32(self.region.bytes(), self.layout.fanout_at + 4 * k)
    }

    /// Pack id and salt of ordinal `i`.
    pub(crate) fn pack(&self, i: usize) -> Option<(Id, [u8; SALT_LEN])> {
        if i >= self.layout.packs {
            return None;
        }
        let at = self.layout.packs_at + 64 * i;
        let b = self.region.bytes().get(at..at + 64)?;
        let mut id = [0u8; 32];
        let mut salt = [0u8; SALT_LEN];
        id.copy_from_slice(&b[..32]);
        salt.copy_from_slice(&b[32..]);
        Some((Id(id), salt))
    }

    pub(crate) fn pack_count(&self) -> usize {
        self.layout.packs
    }

    /// Names of the index objects this run holds.
    pub(crate) fn names(&self) -> impl Iterator<Item = Id> + '_ {
        let b = self.region.bytes();
        let at = self.layout.names_at;
        (0..self.layout.names).filter_map(move |i| {
            let s = b.get(at + 32 * i..at + 32 * i + 32)?;
            let mut id = [0u8; 32];
            id.copy_from_slice(s);
            Some(Id(id))
        })
    }

    /// Record `i`, its block verified (None: out of range or damaged).
    pub(crate) fn rec(&self, i: usize) -> Option<&[u8]> {
        if i >= self.layout.n || self.is_damaged() {
            return None;
        }
        let block = i / BLOCK;
        if !self.block_ok(block) {
            return None;
        }
        self.region.bytes().get(i * REC..(i + 1) * REC)
    }

    /// Verify a block once; false (and the run marked damaged) if it fails.
    fn block_ok(&self, block: usize) -> bool {
        let (w, bit) = (block / 64, 1u64 << (block % 64));
        let Some(word) = self.verified.get(w) else {
            return false;
        };
        if word.load(Ordering::Acquire) & bit != 0 {
            return true;
        }
        let b = self.region.bytes();
        let start = block * BLOCK * REC;
        let end = ((block + 1) * BLOCK).min(self.layout.n) * REC;
        let mac_at = self.layout.macs_at + 32 * block;
        let ok = match (b.get(start..end), b.get(mac_at..mac_at + 32)) {
            (Some(data), Some(mac)) => block_mac(&self.key, block as u64, data) == mac,
            _ => false,
        };
        if ok {
            word.fetch_or(bit, Ordering::AcqRel);
        } else {
            self.mark_damaged();
        }
        ok
    }

    /// Stop trusting this run and remove its file so the next load rebuilds
    /// it (removing a mapped file leaves the mapping valid).
    pub(crate) fn mark_damaged(&self) {
        if !self.damaged.swap(true, Ordering::AcqRel) {
            if let Some(p) = &self.path {
                let _ = std::fs::remove_file(p);
            }
        }
    }

    /// The position of `id`, if present.
    pub(crate) fn find(&self, id: &Id) -> Option<usize> {
        if self.layout.n == 0 || self.is_damaged() {
            return None;
        }
        let k = bucket(&id.0, self.layout.bits);
        let mut lo = if k == 0 {
            0
        } else {
            self.fanout(k - 1) as usize
        };
        let mut hi = self.fanout(k) as usize;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let r = self.rec(mid)?;
            match r[..32].cmp(&id.0[..]) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// The location of record `i`.
    pub(crate) fn location(&self, i: usize) -> Option<(Id, BlobLocation)> {
        let r = self.rec(i)?;
        let blob_type = match r[52] {
            0 => BlobType::Data,
            1 => BlobType::Tree,
            _ => {
                self.mark_damaged();
                return None;
            }
        };
        let Some((pack, salt)) = self.pack(rec_pack(r) as usize) else {
            self.mark_damaged();
            return None;
        };
        let mut id = [0u8; 32];
        id.copy_from_slice(&r[..32]);
        Some((
            Id(id),
            BlobLocation {
                pack,
                salt,
                blob_type,
                offset: le32(r, 36),
                length: le32(r, 40),
                raw_len: le32(r, 44),
                inner: le32(r, 48),
            },
        ))
    }

    pub(crate) fn get(&self, id: &Id) -> Option<BlobLocation> {
        self.find(id).and_then(|i| self.location(i)).map(|(_, l)| l)
    }
}
