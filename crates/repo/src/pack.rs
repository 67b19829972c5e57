//! Packs: many encrypted blobs in one write-once object.
//!
//! Layout (all integers little-endian; see docs/format.md):
//!
//! ```text
//! header   "HFPK" | version u8 | salt [32]                       37 bytes, clear
//! blob*    AES-256-GCM(pack key, nonce = offset, aad = type)     encoded blob + 16-byte tag
//! trailer  AES-256-GCM(pack key, nonce = NONCE_TRAILER, aad = header)
//!          of: count u32, then per blob: type u8 | id [32] | offset u32 | length u32 | raw_len u32
//!              (version 2 adds: | inner u32)
//! footer   trailer length u32
//! ```
//!
//! The nonce of a blob is its byte offset inside the pack, unique by
//! construction. The trailer lets `repair index` rebuild the index from packs
//! alone. The pack's name is the plain BLAKE3 of its bytes.
//!
//! Version 2 packs (repository format 2) may hold **frames**: one sealed,
//! encoded region holding several blobs' data back to back (see
//! `compress`). Every blob of a frame has an entry with the frame's
//! `offset` and `length`, its own `raw_len`, and `inner`, where its data
//! starts in the decoded frame. An unframed blob has `inner` 0. All blobs
//! of a frame have one type (the type is the frame's AAD).

use crate::crypto::{new_salt, MasterKey, ObjectCipher, NONCE_TRAILER, SALT_LEN};
use crate::error::{RepoError, Result};
use crate::id::Id;

pub const PACK_MAGIC: &[u8; 4] = b"HFPK";
/// The pack version written into format-2 repositories.
pub const PACK_VERSION: u8 = 2;
/// Packs of format-1 repositories (no frames, no `inner` field).
pub const PACK_VERSION_1: u8 = 1;
pub const HEADER_LEN: usize = 4 + 1 + SALT_LEN;
const ENTRY_LEN_V1: usize = 1 + 32 + 4 + 4 + 4;
const ENTRY_LEN_V2: usize = ENTRY_LEN_V1 + 4;

/// Length of a trailer entry in a pack of `version`.
fn entry_len(version: u8) -> usize {
    if version >= 2 {
        ENTRY_LEN_V2
    } else {
        ENTRY_LEN_V1
    }
}

/// What a blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum BlobType {
    Data = 0,
    Tree = 1,
}

impl BlobType {
    fn from_u8(v: u8) -> Option<BlobType> {
        match v {
            0 => Some(BlobType::Data),
            1 => Some(BlobType::Tree),
            _ => None,
        }
    }
}

/// One blob's place in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    pub blob_type: BlobType,
    pub id: Id,
    pub offset: u32,
    /// Stored length including the GCM tag.
    pub length: u32,
    /// Length of the plaintext data.
    pub raw_len: u32,
    /// Where the data starts inside its decoded frame (0 when unframed).
    pub inner: u32,
}

/// A pack's name, salt and blobs: what an index records about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackInfo {
    pub id: Id,
    pub salt: [u8; SALT_LEN],
    pub entries: Vec<PackEntry>,
}

/// Builds one pack in memory.
pub struct PackWriter {
    cipher: ObjectCipher,
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
    version: u8,
}

impl PackWriter {
    /// A version-2 pack (format 2 repositories).
    pub fn new(key: &MasterKey, capacity: usize) -> PackWriter {
        PackWriter::with_buffer(key, capacity, Vec::new(), PACK_VERSION)
    }

    /// Like [`PackWriter::new`], reusing `buf` (cleared) for the pack bytes:
    /// a buffer whose pages are already mapped costs no page faults.
    /// `version` is [`PACK_VERSION`], or [`PACK_VERSION_1`] for a format-1
    /// repository (which then must not be given frames).
    pub fn with_buffer(
        key: &MasterKey,
        capacity: usize,
        mut buf: Vec<u8>,
        version: u8,
    ) -> PackWriter {
        let salt = new_salt();
        buf.clear();
        // Room for one more maximal chunk past the target size, so closing a
        // pack never reallocates (and copies) the whole buffer.
        buf.reserve(capacity + 9 * 1024 * 1024);
        buf.extend_from_slice(&header(version, &salt));
        PackWriter {
            cipher: key.cipher_for(&salt),
            buf,
            entries: Vec::new(),
            version,
        }
    }

    /// True if this pack can hold frames (version 2).
    pub fn takes_frames(&self) -> bool {
        self.version >= 2
    }

    /// Append one encoded blob (flag + body, see `compress`).
    pub fn add(&mut self, blob_type: BlobType, id: Id, encoded: &[u8], raw_len: usize) {
        self.add_with(blob_type, id, raw_len, |buf| buf.extend_from_slice(encoded));
    }

    /// Append one blob whose encoding `write` appends to the pack buffer;
    /// it is then encrypted in place (no intermediate copies).
    pub fn add_with(
        &mut self,
        blob_type: BlobType,
        id: Id,
        raw_len: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) {
        let offset = self.buf.len();
        write(&mut self.buf);
        self.cipher
            .seal_in_place(offset as u64, &[blob_type as u8], &mut self.buf, offset);
        self.entries.push(PackEntry {
            blob_type,
            id,
            offset: offset as u32,
            length: (self.buf.len() - offset) as u32,
            raw_len: raw_len as u32,
            inner: 0,
        });
    }

    /// Append one frame: `blobs` (id, data length) in the order their data
    /// is concatenated; `write` appends the frame's encoding, which is then
    /// encrypted in place. Only version-2 packs take frames.
    pub fn add_frame(
        &mut self,
        blob_type: BlobType,
        blobs: &[(Id, usize)],
        write: impl FnOnce(&mut Vec<u8>),
    ) {
        debug_assert!(self.takes_frames(), "a version-1 pack cannot hold frames");
        let offset = self.buf.len();
        write(&mut self.buf);
        self.cipher
            .seal_in_place(offset as u64, &[blob_type as u8], &mut self.buf, offset);
        let length = (self.buf.len() - offset) as u32;
        let mut inner = 0u32;
        for (id, len) in blobs {
            self.entries.push(PackEntry {
                blob_type,
                id: *id,
                offset: offset as u32,
                length,
                raw_len: *len as u32,
                inner,
            });
            inner += *len as u32;
        }
    }

    /// Append one sealed region copied from another pack (garbage
    /// collection's repack): `encoded` is the region's decrypted encoding,
    /// re-encrypted here under this pack's key; `blobs` are its entries
    /// (id, raw length, inner offset) exactly as the old pack described
    /// them, so a frame keeps every blob where it was.
    pub fn add_region(&mut self, blob_type: BlobType, blobs: &[(Id, u32, u32)], encoded: &[u8]) {
        let offset = self.buf.len();
        self.buf.extend_from_slice(encoded);
        self.cipher
            .seal_in_place(offset as u64, &[blob_type as u8], &mut self.buf, offset);
        let length = (self.buf.len() - offset) as u32;
        for (id, raw_len, inner) in blobs {
            self.entries.push(PackEntry {
                blob_type,
                id: *id,
                offset: offset as u32,
                length,
                raw_len: *raw_len,
                inner: *inner,
            });
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Seal the trailer; returns the pack's id, bytes and description.
    pub fn finish(mut self) -> (Vec<u8>, PackInfo) {
        let header = self.buf[..HEADER_LEN].to_vec();
        let closing = closing(&self.cipher, &header, &self.entries, self.version);
        self.buf.extend_from_slice(&closing);
        let id = Id::of_stored(&self.buf);
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&self.buf[5..HEADER_LEN]);
        let info = PackInfo {
            id,
            salt,
            entries: self.entries,
        };
        (self.buf, info)
    }
}

/// A pack's first bytes: magic, version, salt.
pub(crate) fn header(version: u8, salt: &[u8; SALT_LEN]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(PACK_MAGIC);
    h[4] = version;
    h[5..].copy_from_slice(salt);
    h
}

/// What closes a pack: the sealed trailer listing `entries`, then the
/// trailer's length.
pub(crate) fn closing(
    cipher: &ObjectCipher,
    header: &[u8],
    entries: &[PackEntry],
    version: u8,
) -> Vec<u8> {
    let mut t = Vec::with_capacity(4 + entries.len() * entry_len(version));
    t.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        t.push(e.blob_type as u8);
        t.extend_from_slice(&e.id.0);
        t.extend_from_slice(&e.offset.to_le_bytes());
        t.extend_from_slice(&e.length.to_le_bytes());
        t.extend_from_slice(&e.raw_len.to_le_bytes());
        if version >= 2 {
            t.extend_from_slice(&e.inner.to_le_bytes());
        }
    }
    let mut out = cipher.seal(NONCE_TRAILER, header, &t);
    let len = out.len() as u32;
    out.extend_from_slice(&len.to_le_bytes());
    out
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

/// Parse a pack header; returns the pack's cipher.
pub fn header_cipher(key: &MasterKey, header: &[u8], what: &str) -> Result<ObjectCipher> {
    if header.len() < HEADER_LEN || &header[..4] != PACK_MAGIC {
        return Err(RepoError::corrupt(what, "not a pack (bad magic)"));
    }
    if header[4] != PACK_VERSION && header[4] != PACK_VERSION_1 {
        return Err(RepoError::corrupt(
            what,
            format!("unknown pack version {}", header[4]),
        ));
    }
    let mut salt = [0u8; SALT_LEN];
    salt.copy_from_slice(&header[5..HEADER_LEN]);
    Ok(key.cipher_for(&salt))
}

/// Decrypt one blob read from `pack` at `offset`.
pub fn open_blob(
    cipher: &ObjectCipher,
    blob_type: BlobType,
    offset: u32,
    sealed: &[u8],
    what: &str,
) -> Result<Vec<u8>> {
    cipher.open(u64::from(offset), &[blob_type as u8], sealed, what)
}

/// Read the trailer of a complete pack.
pub fn read_trailer(key: &MasterKey, pack: &[u8], what: &str) -> Result<Vec<PackEntry>> {
    read_info(key, pack, what).map(|i| i.entries)
}

/// Read a complete pack's salt and trailer.
pub fn read_info(key: &MasterKey, pack: &[u8], what: &str) -> Result<PackInfo> {
    if pack.len() < HEADER_LEN + 4 {
        return Err(RepoError::corrupt(what, "truncated pack"));
    }
    let cipher = header_cipher(key, &pack[..HEADER_LEN], what)?;
    let tlen = read_u32(pack, pack.len() - 4) as usize;
    if tlen + 4 + HEADER_LEN > pack.len() {
        return Err(RepoError::corrupt(what, "truncated pack (trailer length)"));
    }
    let tstart = pack.len() - 4 - tlen;
    let t = cipher.open(
        NONCE_TRAILER,
        &pack[..HEADER_LEN],
        &pack[tstart..pack.len() - 4],
        &format!("{what} trailer"),
    )?;
    if t.len() < 4 {
        return Err(RepoError::corrupt(what, "empty trailer"));
    }
    let n = read_u32(&t, 0) as usize;
    let elen = entry_len(pack[4]);
    if Some(t.len()) != n.checked_mul(elen).and_then(|b| b.checked_add(4)) {
        return Err(RepoError::corrupt(what, "trailer length mismatch"));
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let b = &t[4 + i * elen..4 + (i + 1) * elen];
        let blob_type = BlobType::from_u8(b[0])
            .ok_or_else(|| RepoError::corrupt(what, format!("unknown blob type {}", b[0])))?;
        let mut id = [0u8; 32];
        id.copy_from_slice(&b[1..33]);
        let e = PackEntry {
            blob_type,
            id: Id(id),
            offset: read_u32(b, 33),
            length: read_u32(b, 37),
            raw_len: read_u32(b, 41),
            inner: if elen == ENTRY_LEN_V2 {
                read_u32(b, 45)
            } else {
                0
            },
        };
        if e.offset as usize + e.length as usize > tstart {
            return Err(RepoError::corrupt(
                what,
                "trailer entry points past the blobs",
            ));
        }
        out.push(e);
    }
    let mut salt = [0u8; SALT_LEN];
    salt.copy_from_slice(&pack[5..HEADER_LEN]);
    Ok(PackInfo {
        id: Id::of_stored(pack),
        salt,
        entries: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trip_and_corruption() {
        let key = MasterKey::generate();
        let mut w = PackWriter::new(&key, 1024);
        let blobs: Vec<Vec<u8>> = vec![b"\x00hello".to_vec(), b"\x00world!".to_vec()];
        for (i, b) in blobs.iter().enumerate() {
            w.add(BlobType::Data, Id([i as u8; 32]), b, b.len() - 1);
        }
        let (bytes, info) = w.finish();
        let entries = info.entries.clone();
        assert_eq!(info.id, Id::of_stored(&bytes));
        assert_eq!(read_info(&key, &bytes, "p").unwrap(), info);
        let parsed = read_trailer(&key, &bytes, "p").unwrap();
        assert_eq!(parsed, entries);
        let c = header_cipher(&key, &bytes[..HEADER_LEN], "p").unwrap();
        for (e, b) in entries.iter().zip(&blobs) {
            let s = &bytes[e.offset as usize..(e.offset + e.length) as usize];
            assert_eq!(&open_blob(&c, e.blob_type, e.offset, s, "b").unwrap(), b);
        }
        let mut bad = bytes.clone();
        bad[HEADER_LEN + 2] ^= 0x40;
        let e = entries[0];
        let s = &bad[e.offset as usize..(e.offset + e.length) as usize];
        assert!(open_blob(&c, e.blob_type, e.offset, s, "b").is_err());
        assert!(read_trailer(&key, &bytes[..bytes.len() - 3], "p").is_err());
        assert!(read_trailer(&MasterKey::generate(), &bytes, "p").is_err());
    }

    /// A frame's entries share its sealed region; each has its own `inner`
    /// and length; version-1 packs (no `inner` field) still parse.
    #[test]
    fn frames_and_version_1_trailers() {
        let key = MasterKey::generate();
        let mut w = PackWriter::new(&key, 1024);
        let frame = b"\x00aaaabbbbbbcc".to_vec();
        let blobs = [(Id([1; 32]), 4), (Id([2; 32]), 6), (Id([3; 32]), 2)];
        w.add_frame(BlobType::Data, &blobs, |buf| buf.extend_from_slice(&frame));
        w.add(BlobType::Data, Id([4; 32]), b"\x00single", 6);
        let (bytes, info) = w.finish();
        let e = read_trailer(&key, &bytes, "p").unwrap();
        assert_eq!(e, info.entries);
        assert_eq!(e.iter().map(|e| e.inner).collect::<Vec<_>>(), [0, 4, 10, 0]);
        assert!(e[..3]
            .iter()
            .all(|x| x.offset == e[0].offset && x.length == e[0].length));
        assert_eq!(
            e.iter().map(|e| e.raw_len).collect::<Vec<_>>(),
            [4, 6, 2, 6]
        );
        let c = header_cipher(&key, &bytes[..HEADER_LEN], "p").unwrap();
        let s = &bytes[e[1].offset as usize..(e[1].offset + e[1].length) as usize];
        assert_eq!(
            open_blob(&c, BlobType::Data, e[1].offset, s, "f").unwrap(),
            frame
        );

        let mut w1 = PackWriter::with_buffer(&key, 1024, Vec::new(), PACK_VERSION_1);
        w1.add(BlobType::Tree, Id([5; 32]), b"\x00tree", 4);
        let (bytes1, info1) = w1.finish();
        assert_eq!(bytes1[4], PACK_VERSION_1);
        assert_eq!(read_info(&key, &bytes1, "p1").unwrap(), info1);
        let mut v9 = bytes1.clone();
        v9[4] = 9;
        assert!(read_info(&key, &v9, "p9").is_err());
    }
}
