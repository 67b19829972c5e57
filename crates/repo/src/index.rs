//! The blob index: where each blob lives.
//!
//! On storage: immutable index objects, each written after the packs it
//! describes are durable, and never modified (GC writes merged ones and then
//! deletes the old). Payload (inside the object envelope):
//!
//! ```text
//! packs u32, then per pack: pack id [32] | salt [32] | count u32 | count × (type u8 | blob id [32] | offset u32 | length u32 | raw_len u32)
//! ```
//!
//! The pack's salt is in the index so a restore can derive the pack key
//! without first fetching the pack header (one request less per pack).
//!
//! Version 2 (repository format 2, written only when some entry lies inside
//! a frame, see `pack`): the magic `"HFX2"`, then the same layout with
//! `| inner u32` after each entry's `raw_len`. Read as a version-1 pack
//! count, the magic would claim 844 million packs, which no payload of its
//! length can hold, so the two never mix up.
//!
//! ```text
//! "HFX2" | packs u32 | per pack: pack id | salt | count u32 | count × (type | id | offset | length | raw_len | inner u32)
//! ```
//!
//! In memory: a hash map from blob id to a 17-byte location whose pack is an
//! index into a shared table of pack ids, so a blob costs about 60 bytes
//! (with hash-map overhead): 1 TB of 1 MiB chunks is about 60 MB.

use std::collections::HashMap;

use crate::crypto::SALT_LEN;
use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::pack::{BlobType, PackEntry, PackInfo};

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

/// Magic that starts a version-2 index payload.
const V2_MAGIC: &[u8; 4] = b"HFX2";

/// The in-memory index of every blob in the loaded index objects.
#[derive(Debug, Default, Clone)]
pub struct Index {
    packs: Vec<(Id, [u8; SALT_LEN])>,
    pack_pos: HashMap<Id, u32>,
    blobs: HashMap<Id, Loc>,
}

impl Index {
    pub fn new() -> Index {
        Index::default()
    }

    pub fn add_pack(&mut self, info: &PackInfo) {
        let (pack, entries) = (info.id, &info.entries);
        let pos = *self.pack_pos.entry(pack).or_insert_with(|| {
            self.packs.push((pack, info.salt));
            (self.packs.len() - 1) as u32
        });
        for e in entries {
            self.blobs.entry(e.id).or_insert(Loc {
                pack: pos,
                blob_type: e.blob_type,
                offset: e.offset,
                length: e.length,
                raw_len: e.raw_len,
                inner: e.inner,
            });
        }
    }

    pub fn get(&self, id: &Id) -> Option<BlobLocation> {
        self.blobs.get(id).map(|l| self.location(l))
    }

    fn location(&self, l: &Loc) -> BlobLocation {
        let (pack, salt) = self.packs[l.pack as usize];
        BlobLocation {
            pack,
            salt,
            blob_type: l.blob_type,
            offset: l.offset,
            length: l.length,
            raw_len: l.raw_len,
            inner: l.inner,
        }
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.blobs.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Ids of every indexed pack.
    pub fn packs(&self) -> impl Iterator<Item = Id> + '_ {
        self.packs.iter().map(|(id, _)| *id)
    }

    pub fn pack_count(&self) -> usize {
        self.packs.len()
    }

    /// Every (blob id, location).
    pub fn iter(&self) -> impl Iterator<Item = (Id, BlobLocation)> + '_ {
        self.blobs.iter().map(|(id, l)| (*id, self.location(l)))
    }
}

/// Serialise index entries of several packs into an index payload:
/// version 2 if any entry lies inside a frame, else version 1 (which every
/// holdfast reads).
pub fn encode(packs: &[PackInfo]) -> Vec<u8> {
    let n: usize = packs.iter().map(|p| p.entries.len()).sum();
    let v2 = packs.iter().flat_map(|p| &p.entries).any(|e| e.inner != 0);
    let mut out = Vec::with_capacity(8 + packs.len() * 68 + n * 49);
    if v2 {
        out.extend_from_slice(V2_MAGIC);
    }
    out.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for p in packs {
        out.extend_from_slice(&p.id.0);
        out.extend_from_slice(&p.salt);
        out.extend_from_slice(&(p.entries.len() as u32).to_le_bytes());
        for e in &p.entries {
            out.push(e.blob_type as u8);
            out.extend_from_slice(&e.id.0);
            out.extend_from_slice(&e.offset.to_le_bytes());
            out.extend_from_slice(&e.length.to_le_bytes());
            out.extend_from_slice(&e.raw_len.to_le_bytes());
            if v2 {
                out.extend_from_slice(&e.inner.to_le_bytes());
            }
        }
    }
    out
}

/// Parse an index payload; `what` names the object in errors.
pub fn decode(payload: &[u8], what: &str) -> Result<Vec<PackInfo>> {
    let mut r = Reader {
        b: payload,
        at: 0,
        what,
    };
    let v2 = payload.starts_with(V2_MAGIC);
    if v2 {
        r.take(4)?;
    }
    let packs = r.u32()? as usize;
    let mut out = Vec::with_capacity(packs.min(1 << 20));
    for _ in 0..packs {
        let pack = Id(r.id()?);
        let salt = r.id()?;
        let n = r.u32()? as usize;
        let mut entries = Vec::with_capacity(n.min(1 << 20));
        for _ in 0..n {
            let t = r.u8()?;
            let blob_type = match t {
                0 => BlobType::Data,
                1 => BlobType::Tree,
                _ => return Err(RepoError::corrupt(what, format!("unknown blob type {t}"))),
            };
            entries.push(PackEntry {
                blob_type,
                id: Id(r.id()?),
                offset: r.u32()?,
                length: r.u32()?,
                raw_len: r.u32()?,
                inner: if v2 { r.u32()? } else { 0 },
            });
        }
        out.push(PackInfo {
            id: pack,
            salt,
            entries,
        });
    }
    if r.at != payload.len() {
        return Err(RepoError::corrupt(what, "trailing bytes"));
    }
    Ok(out)
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
    what: &'a str,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.at + n > self.b.len() {
            return Err(RepoError::corrupt(self.what, "truncated index payload"));
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        let mut w = [0u8; 4];
        w.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(w))
    }
    fn id(&mut self) -> Result<[u8; 32]> {
        let mut w = [0u8; 32];
        w.copy_from_slice(self.take(32)?);
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut idx = Index::new();
        for p in &back {
            idx.add_pack(p);
        }
        assert_eq!(idx.len(), 3);
        assert_eq!(idx.get(&Id([3; 32])).unwrap().pack, Id([101; 32]));
        assert!(idx.get(&Id([9; 32])).is_none());
        assert!(!bytes.starts_with(V2_MAGIC), "no frames: version 1");
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
        assert!(bytes.starts_with(V2_MAGIC));
        assert_eq!(decode(&bytes, "i").unwrap(), packs);
        for cut in [3, 8, bytes.len() - 2] {
            assert!(decode(&bytes[..cut], "i").is_err(), "cut at {cut}");
        }
        let mut idx = Index::new();
        idx.add_pack(&packs[0]);
        let loc = idx.get(&Id([3; 32])).unwrap();
        assert_eq!((loc.span(), loc.needed()), (32768..49152, 49152));
    }
}
