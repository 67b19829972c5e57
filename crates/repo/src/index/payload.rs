//! The payload of an index object (inside the object envelope): how the
//! packs a backup wrote, and where each blob lies in them, are serialised.
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

use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::pack::{BlobType, PackEntry, PackInfo};

/// Magic that starts a version-2 index payload.
pub(crate) const V2_MAGIC: &[u8; 4] = b"HFX2";

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
