//! The envelope of every non-pack object (index, snapshot, config body, audit).
//!
//! ```text
//! "HFOB" | version u8 | salt [32] | AES-256-GCM(object key, nonce = NONCE_OBJECT, aad = header)
//!                                    of zstd(payload)
//! ```
//!
//! Each object has its own salt and so its own derived key; the fixed nonce is
//! therefore used exactly once per key.

use crate::crypto::{new_salt, MasterKey, NONCE_OBJECT, SALT_LEN};
use crate::error::{RepoError, Result};

pub const OBJECT_MAGIC: &[u8; 4] = b"HFOB";
pub const OBJECT_VERSION: u8 = 1;
const HEADER_LEN: usize = 4 + 1 + SALT_LEN;
/// Upper bound for a decompressed object; larger claims are corruption.
const MAX_OBJECT: usize = 1 << 31;

pub fn seal(key: &MasterKey, payload: &[u8]) -> Vec<u8> {
    let salt = new_salt();
    let mut out = Vec::with_capacity(payload.len() / 2 + 128);
    out.extend_from_slice(OBJECT_MAGIC);
    out.push(OBJECT_VERSION);
    out.extend_from_slice(&salt);
    let compressed = zstd::bulk::compress(payload, 3).unwrap_or_else(|_| payload.to_vec());
    let sealed = key.cipher_for(&salt).seal(NONCE_OBJECT, &out, &compressed);
    out.extend_from_slice(&sealed);
    out
}

pub fn open(key: &MasterKey, bytes: &[u8], what: &str) -> Result<Vec<u8>> {
    if bytes.len() < HEADER_LEN + 16 {
        return Err(RepoError::corrupt(
            what,
            format!("truncated ({} bytes)", bytes.len()),
        ));
    }
    if &bytes[..4] != OBJECT_MAGIC {
        return Err(RepoError::corrupt(what, "bad magic"));
    }
    if bytes[4] != OBJECT_VERSION {
        return Err(RepoError::corrupt(
            what,
            format!("unknown object version {}", bytes[4]),
        ));
    }
    let mut salt = [0u8; SALT_LEN];
    salt.copy_from_slice(&bytes[5..HEADER_LEN]);
    let compressed = key.cipher_for(&salt).open(
        NONCE_OBJECT,
        &bytes[..HEADER_LEN],
        &bytes[HEADER_LEN..],
        what,
    )?;
    let mut out = Vec::new();
    zstd::stream::copy_decode(&compressed[..], &mut out)
        .map_err(|e| RepoError::corrupt(what, format!("zstd: {e}")))?;
    if out.len() > MAX_OBJECT {
        return Err(RepoError::corrupt(what, "implausibly large"));
    }
    Ok(out)
}

/// Seal a serde value as JSON.
pub fn seal_json<T: serde::Serialize>(key: &MasterKey, value: &T) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(value)
        .map_err(|e| RepoError::Invalid(format!("cannot serialise: {e}")))?;
    Ok(seal(key, &json))
}

/// Open a JSON object sealed with [`seal_json`].
pub fn open_json<T: serde::de::DeserializeOwned>(
    key: &MasterKey,
    bytes: &[u8],
    what: &str,
) -> Result<T> {
    let plain = open(key, bytes, what)?;
    serde_json::from_slice(&plain).map_err(|e| RepoError::corrupt(what, format!("bad JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let k = MasterKey::generate();
        let s = seal(&k, b"payload payload payload");
        assert_eq!(open(&k, &s, "o").unwrap(), b"payload payload payload");
        let err = open(&k, &s[..s.len() - 5], "index abc").unwrap_err();
        assert!(err.to_string().contains("index abc"), "{err}");
        assert!(open(&k, &s[..10], "o").is_err());
    }
}
