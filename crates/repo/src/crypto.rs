//! Keys, key derivation and authenticated encryption.
//!
//! One random 256-bit master key per repository. Every other key is derived
//! from it with BLAKE3's key-derivation mode and a context string, so the
//! purposes can never collide:
//!
//! - the *id key* makes blob ids (keyed BLAKE3 of the plaintext), so ids of
//!   equal content differ between repositories;
//! - the *chunker key* makes the gear table of the content-defined chunker,
//!   so chunk boundaries do not fingerprint content;
//! - the *encryption key* is never used directly: each pack and each object
//!   gets a fresh random 32-byte salt and its own AES-256-GCM key derived from
//!   (encryption key, salt). Nonces then only have to be unique inside one
//!   object, which a counter (the blob's offset) guarantees; the number of
//!   messages under one key stays small.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

use crate::error::{RepoError, Result};
use crate::id::Id;

pub const SALT_LEN: usize = 32;
pub const TAG_LEN: usize = 16;

/// The repository's master key material.
#[derive(Clone)]
pub struct MasterKey {
    raw: [u8; 32],
    id_key: [u8; 32],
    chunker_key: [u8; 32],
    enc_key: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    pub fn generate() -> MasterKey {
        MasterKey::from_bytes(rand::random())
    }

    pub fn from_bytes(raw: [u8; 32]) -> MasterKey {
        MasterKey {
            raw,
            id_key: blake3::derive_key("holdfast v1 2026-11 blob id", &raw),
            chunker_key: blake3::derive_key("holdfast v1 2026-11 chunker gear", &raw),
            enc_key: blake3::derive_key("holdfast v1 2026-11 encryption", &raw),
        }
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.raw
    }

    /// The keyed id of a blob's plaintext.
    pub fn blob_id(&self, plaintext: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.id_key, plaintext).as_bytes())
    }

    pub fn chunker_key(&self) -> &[u8; 32] {
        &self.chunker_key
    }

    /// The cipher for one pack or object, from its salt.
    pub fn cipher_for(&self, salt: &[u8; SALT_LEN]) -> ObjectCipher {
        let mut h = blake3::Hasher::new_derive_key("holdfast v1 2026-11 object key");
        h.update(&self.enc_key);
        h.update(salt);
        let key = h.finalize();
        ObjectCipher {
            aead: LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, key.as_bytes()).expect("a 32-byte AES-256 key"),
            ),
        }
    }
}

/// AES-256-GCM (ring) under one object's derived key. Nonces are 96-bit counters
/// supplied by the caller (blob offsets inside a pack; reserved values for
/// trailers and whole objects), unique per key by construction.
pub struct ObjectCipher {
    aead: LessSafeKey,
}

/// Nonce counter reserved for the encrypted body of a whole (non-pack) object.
pub const NONCE_OBJECT: u64 = u64::MAX;
/// Nonce counter reserved for a pack's trailer.
pub const NONCE_TRAILER: u64 = u64::MAX - 1;

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    // Unique per key by construction: see the module docs.
    Nonce::assume_unique_for_key(n)
}

fn auth_failed(what: &str) -> RepoError {
    RepoError::Corrupt {
        object: what.to_string(),
        detail: "authentication failed (the data was modified, truncated or is not from this repository)"
            .into(),
    }
}

impl ObjectCipher {
    pub fn seal(&self, counter: u64, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut buf = Vec::with_capacity(plaintext.len() + TAG_LEN);
        buf.extend_from_slice(plaintext);
        self.seal_in_place(counter, aad, &mut buf, 0);
        buf
    }

    /// Encrypt `buf[start..]` in place and append the tag.
    pub fn seal_in_place(&self, counter: u64, aad: &[u8], buf: &mut Vec<u8>, start: usize) {
        let tag = self
            .aead
            .seal_in_place_separate_tag(nonce(counter), Aad::from(aad), &mut buf[start..])
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        buf.extend_from_slice(tag.as_ref());
    }

    /// Encrypt `buf[..len - TAG_LEN]` in place and write the tag into the
    /// last `TAG_LEN` bytes (which the caller leaves free): sealing where
    /// the data lies, with no copy. `buf` must be at least `TAG_LEN` long.
    pub fn seal_in_slice(&self, counter: u64, aad: &[u8], buf: &mut [u8]) {
        let (data, tag_room) = buf.split_at_mut(buf.len().saturating_sub(TAG_LEN));
        let tag = self
            .aead
            .seal_in_place_separate_tag(nonce(counter), Aad::from(aad), data)
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        tag_room.copy_from_slice(tag.as_ref());
    }

    /// Decrypt and authenticate `buf` (ciphertext || 16-byte tag) where it
    /// lies; returns the plaintext part of `buf`.
    pub fn open_in_slice<'a>(
        &self,
        counter: u64,
        aad: &[u8],
        buf: &'a mut [u8],
        what: &str,
    ) -> Result<&'a mut [u8]> {
        self.aead
            .open_in_place(nonce(counter), Aad::from(aad), buf)
            .map_err(|_| auth_failed(what))
    }

    /// Decrypt and authenticate `buf` (ciphertext || tag) in place; on
    /// success `buf` holds the plaintext.
    pub fn open_in_place(
        &self,
        counter: u64,
        aad: &[u8],
        buf: &mut Vec<u8>,
        what: &str,
    ) -> Result<()> {
        let n = self.open_in_slice(counter, aad, buf, what)?.len();
        buf.truncate(n);
        Ok(())
    }

    /// Decrypt and authenticate; `what` names the object for the error.
    pub fn open(&self, counter: u64, aad: &[u8], ciphertext: &[u8], what: &str) -> Result<Vec<u8>> {
        let mut buf = ciphertext.to_vec();
        self.open_in_place(counter, aad, &mut buf, what)?;
        Ok(buf)
    }
}

/// A fresh random salt.
pub fn new_salt() -> [u8; SALT_LEN] {
    rand::random()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_tamper() {
        let mk = MasterKey::generate();
        let salt = new_salt();
        let c = mk.cipher_for(&salt);
        let ct = c.seal(7, b"aad", b"secret");
        assert_eq!(c.open(7, b"aad", &ct, "x").unwrap(), b"secret");
        assert!(c.open(8, b"aad", &ct, "x").is_err(), "wrong nonce");
        let mut bad = ct.clone();
        bad[0] ^= 1;
        assert!(c.open(7, b"aad", &bad, "x").is_err(), "flipped bit");
        let other = mk.cipher_for(&new_salt());
        assert!(other.open(7, b"aad", &ct, "x").is_err(), "other salt");
    }

    #[test]
    fn ids_are_keyed() {
        let a = MasterKey::generate();
        let b = MasterKey::generate();
        assert_ne!(a.blob_id(b"same"), b.blob_id(b"same"));
        assert_eq!(a.blob_id(b"same"), a.blob_id(b"same"));
    }
}
