//! The envelope of every non-pack object (index, snapshot, WAL manifest,
//! config body).
//!
//! ```text
//! version 1 (formats 1 and 2):
//! "HFOB" | 1 | salt [32] | AES-256-GCM(object key, nonce = NONCE_OBJECT, aad = header) of zstd(payload)
//!
//! version 2 (format 3 and later): bound to the object's kind and name
//! "HFOB" | 2 | kind u8 | name length u8 | name | salt [32]
//!        | AES-256-GCM(object key, nonce = NONCE_OBJECT, aad = header) of zstd(payload)
//! ```
//!
//! Each object has its own salt and so its own derived key; the fixed nonce is
//! therefore used exactly once per key.
//!
//! Why a binding: someone with write access to the storage cannot forge an
//! object, but can rename, swap, move or copy genuine ones (restore the
//! wrong snapshot, or an old one under a newer name). A version-2 envelope
//! carries the kind and name it was written as, authenticated, and
//! [`open_bound`] refuses one found anywhere else. Objects named by the hash
//! of their bytes (index objects, snapshots) carry an empty name: their
//! name is checked against the hash instead, which also works for
//! version-1 envelopes. Format-3 repositories hold only version-2 envelopes;
//! a version-1 envelope in one is refused (an old object copied in: a
//! downgrade of the binding).

use std::io::Read;

use holdfast_storage::ObjectKind;

use crate::crypto::{new_salt, MasterKey, NONCE_OBJECT, SALT_LEN};
use crate::error::{RepoError, Result};
use crate::id::Id;

pub const OBJECT_MAGIC: &[u8; 4] = b"HFOB";
/// The unbound envelope of formats 1 and 2.
pub const ENVELOPE_V1: u8 = 1;
/// The name-bound envelope of format 3 and later.
pub const ENVELOPE_V2: u8 = 2;
/// Kept for callers that name the first envelope version.
pub const OBJECT_VERSION: u8 = ENVELOPE_V1;
const V1_HEADER_LEN: usize = 4 + 1 + SALT_LEN;
const TAG_LEN: usize = 16;
/// Upper bound for a decompressed object; larger claims are corruption.
const MAX_OBJECT: u64 = 1 << 31;
/// The first repository format whose objects are sealed in version-2
/// envelopes (see `config::FORMAT_VERSION`).
pub const FIRST_BOUND_FORMAT: u32 = 3;

/// What an object is: its kind and its name within the kind, which a
/// version-2 envelope binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding<'a> {
    pub kind: ObjectKind,
    pub name: &'a str,
}

impl<'a> Binding<'a> {
    pub fn new(kind: ObjectKind, name: &'a str) -> Binding<'a> {
        Binding { kind, name }
    }

    /// Named by the BLAKE3 of their stored bytes: the envelope cannot hold
    /// its own name, so the name is checked against the hash.
    pub fn content_addressed(&self) -> bool {
        matches!(self.kind, ObjectKind::Index | ObjectKind::Snapshot)
    }

    /// The storage key, as error messages name the object.
    pub fn key(&self) -> String {
        self.kind.key(self.name)
    }
}

/// The stable one-byte code of a kind inside a version-2 envelope (never the
/// enum's discriminant, which may change).
fn kind_code(kind: ObjectKind) -> u8 {
    match kind {
        ObjectKind::Config => 1,
        ObjectKind::Key => 2,
        ObjectKind::Pack => 3,
        ObjectKind::Index => 4,
        ObjectKind::Snapshot => 5,
        ObjectKind::Lock => 6,
        ObjectKind::Audit => 7,
        ObjectKind::Wal => 8,
        ObjectKind::LostFound => 9,
        ObjectKind::Tombstone => 10,
        ObjectKind::Verification => 11,
        ObjectKind::Hold => 12,
        ObjectKind::Drill => 13,
        ObjectKind::Signer => 14,
        ObjectKind::Erasure => 15,
    }
}

fn kind_of_code(code: u8) -> Option<ObjectKind> {
    ObjectKind::ALL.into_iter().find(|k| kind_code(*k) == code)
}

/// Whether a repository of `format` writes version-2 envelopes.
pub fn writes_bound(format: u32) -> bool {
    format >= FIRST_BOUND_FORMAT
}

fn compress(payload: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(payload, 3).unwrap_or_else(|_| payload.to_vec())
}

/// Seal `payload` in a version-1 envelope (formats 1 and 2).
pub fn seal(key: &MasterKey, payload: &[u8]) -> Vec<u8> {
    let salt = new_salt();
    let mut out = Vec::with_capacity(payload.len() / 2 + 128);
    out.extend_from_slice(OBJECT_MAGIC);
    out.push(ENVELOPE_V1);
    out.extend_from_slice(&salt);
    let sealed = key
        .cipher_for(&salt)
        .seal(NONCE_OBJECT, &out, &compress(payload));
    out.extend_from_slice(&sealed);
    out
}

/// Seal `payload` in a version-2 envelope bound to `b` (the name is left
/// out for content-addressed kinds, see [`Binding::content_addressed`]).
pub fn seal_bound(key: &MasterKey, b: Binding<'_>, payload: &[u8]) -> Result<Vec<u8>> {
    let name = if b.content_addressed() { "" } else { b.name };
    let name_len = u8::try_from(name.len()).map_err(|_| {
        RepoError::Invalid(format!(
            "object name {:?} is longer than 255 bytes",
            b.key()
        ))
    })?;
    let salt = new_salt();
    let mut out = Vec::with_capacity(payload.len() / 2 + 128 + name.len());
    out.extend_from_slice(OBJECT_MAGIC);
    out.push(ENVELOPE_V2);
    out.push(kind_code(b.kind));
    out.push(name_len);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&salt);
    let sealed = key
        .cipher_for(&salt)
        .seal(NONCE_OBJECT, &out, &compress(payload));
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Seal `payload` as object `b` of a repository of `format`: version 1 in
/// formats 1 and 2 (which older builds read), version 2 from format 3.
pub fn seal_for(key: &MasterKey, format: u32, b: Binding<'_>, payload: &[u8]) -> Result<Vec<u8>> {
    if writes_bound(format) {
        seal_bound(key, b, payload)
    } else {
        Ok(seal(key, payload))
    }
}

/// The parsed clear header of an envelope.
struct Header<'a> {
    version: u8,
    /// Version 2: the kind and name it was written as.
    kind: Option<ObjectKind>,
    name: &'a str,
    salt: [u8; SALT_LEN],
    /// Header length: the AAD, and where the ciphertext starts.
    len: usize,
}

fn parse_header<'a>(bytes: &'a [u8], what: &str) -> Result<Header<'a>> {
    let truncated = || RepoError::corrupt(what, format!("truncated ({} bytes)", bytes.len()));
    if bytes.len() < 5 {
        return Err(truncated());
    }
    if bytes.get(..4) != Some(OBJECT_MAGIC.as_slice()) {
        return Err(RepoError::corrupt(what, "bad magic"));
    }
    let version = bytes[4];
    let (kind, name, salt_at) = match version {
        ENVELOPE_V1 => (None, "", 5),
        ENVELOPE_V2 => {
            let (code, name_len) = match bytes.get(5..7) {
                Some(&[c, n]) => (c, usize::from(n)),
                _ => return Err(truncated()),
            };
            let kind = kind_of_code(code).ok_or_else(|| {
                RepoError::corrupt(what, format!("unknown object kind code {code}"))
            })?;
            let raw = bytes.get(7..7 + name_len).ok_or_else(truncated)?;
            let name = std::str::from_utf8(raw)
                .map_err(|_| RepoError::corrupt(what, "object name is not UTF-8"))?;
            (Some(kind), name, 7 + name_len)
        }
        v => {
            return Err(RepoError::corrupt(
                what,
                format!("unknown object envelope version {v}"),
            ))
        }
    };
    let len = salt_at + SALT_LEN;
    let salt_bytes = bytes.get(salt_at..len).ok_or_else(truncated)?;
    if bytes.len() < len + TAG_LEN {
        return Err(truncated());
    }
    let mut salt = [0u8; SALT_LEN];
    salt.copy_from_slice(salt_bytes);
    Ok(Header {
        version,
        kind,
        name,
        salt,
        len,
    })
}

/// Authenticate and decompress; the header is the AAD.
fn open_body(key: &MasterKey, bytes: &[u8], h: &Header<'_>, what: &str) -> Result<Vec<u8>> {
    let (head, body) = bytes.split_at(h.len);
    let compressed = key
        .cipher_for(&h.salt)
        .open(NONCE_OBJECT, head, body, what)?;
    let decoder = zstd::stream::read::Decoder::new(&compressed[..])
        .map_err(|e| RepoError::corrupt(what, format!("zstd: {e}")))?;
    // Bounded: a hostile or damaged frame header cannot make us allocate
    // more than the largest plausible object.
    let mut out = Vec::new();
    decoder
        .take(MAX_OBJECT + 1)
        .read_to_end(&mut out)
        .map_err(|e| RepoError::corrupt(what, format!("zstd: {e}")))?;
    if out.len() as u64 > MAX_OBJECT {
        return Err(RepoError::corrupt(what, "implausibly large"));
    }
    Ok(out)
}

/// Open an envelope of either version without checking what it is bound
/// to; returns the kind a version-2 envelope names. Only for `repair`,
/// which identifies stray objects; every other reader uses [`open_bound`].
pub fn open_any(
    key: &MasterKey,
    bytes: &[u8],
    what: &str,
) -> Result<(Option<ObjectKind>, Vec<u8>)> {
    let h = parse_header(bytes, what)?;
    let plain = open_body(key, bytes, &h, what)?;
    Ok((h.kind, plain))
}

/// Open a version-1 envelope (formats 1 and 2) without any binding check.
pub fn open(key: &MasterKey, bytes: &[u8], what: &str) -> Result<Vec<u8>> {
    let h = parse_header(bytes, what)?;
    if h.version != ENVELOPE_V1 {
        return Err(RepoError::corrupt(
            what,
            format!("unknown object version {}", h.version),
        ));
    }
    debug_assert_eq!(h.len, V1_HEADER_LEN);
    open_body(key, bytes, &h, what)
}

/// Open object `b` of a repository of `format`, refusing it unless it is
/// what its name says: the kind and name a version-2 envelope carries must
/// be `b`'s, a content-addressed object's bytes must hash to its name, and
/// a format-3 repository accepts no version-1 envelope. Errors name the
/// object by its storage key.
pub fn open_bound(key: &MasterKey, format: u32, b: Binding<'_>, bytes: &[u8]) -> Result<Vec<u8>> {
    let what = b.key();
    let h = parse_header(bytes, &what)?;
    let hash_ok = || Id::of_stored(bytes).to_hex() == b.name;
    if h.version == ENVELOPE_V1 && writes_bound(format) {
        return Err(RepoError::Misplaced {
            object: what,
            holds: "a version-1 envelope".into(),
            how: format!(
                "a format-{format} repository holds only name-bound (version-2) envelopes: \
                 an object from before `holdfast migrate` or from an older copy was put there \
                 (a downgrade); remove it"
            ),
        });
    }
    let plain = match open_body(key, bytes, &h, &what) {
        Ok(p) => p,
        Err(e) if b.content_addressed() && !hash_ok() => {
            return Err(RepoError::corrupt(
                what,
                format!("its content does not hash to its name and does not authenticate ({e})"),
            ))
        }
        Err(e) => return Err(e),
    };
    if let Some(kind) = h.kind {
        if kind != b.kind {
            let holds = if h.name.is_empty() {
                format!("a {kind} object")
            } else {
                format!("the object named {}", kind.key(h.name))
            };
            return Err(RepoError::Misplaced {
                object: what,
                holds,
                how: "moved from another kind of object".into(),
            });
        }
    }
    if b.content_addressed() {
        if !hash_ok() {
            return Err(RepoError::Misplaced {
                object: what,
                holds: format!(
                    "the object named {}",
                    b.kind.key(&Id::of_stored(bytes).to_hex())
                ),
                how: "renamed, swapped or copied over another".into(),
            });
        }
    } else if h.version == ENVELOPE_V2 && h.name != b.name {
        return Err(RepoError::Misplaced {
            object: what,
            holds: format!("the object named {}", b.kind.key(h.name)),
            how: "renamed, swapped or copied over another".into(),
        });
    }
    Ok(plain)
}

/// Seal a serde value as JSON in a version-1 envelope.
pub fn seal_json<T: serde::Serialize>(key: &MasterKey, value: &T) -> Result<Vec<u8>> {
    Ok(seal(key, &to_json(value)?))
}

/// Seal a serde value as JSON, as object `b` of a repository of `format`.
pub fn seal_json_for<T: serde::Serialize>(
    key: &MasterKey,
    format: u32,
    b: Binding<'_>,
    value: &T,
) -> Result<Vec<u8>> {
    seal_for(key, format, b, &to_json(value)?)
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| RepoError::Invalid(format!("cannot serialise: {e}")))
}

/// Open a JSON object sealed with [`seal_json`] (version 1, unbound).
pub fn open_json<T: serde::de::DeserializeOwned>(
    key: &MasterKey,
    bytes: &[u8],
    what: &str,
) -> Result<T> {
    let plain = open(key, bytes, what)?;
    serde_json::from_slice(&plain).map_err(|e| RepoError::corrupt(what, format!("bad JSON: {e}")))
}

/// Open a JSON object with [`open_bound`].
pub fn open_json_bound<T: serde::de::DeserializeOwned>(
    key: &MasterKey,
    format: u32,
    b: Binding<'_>,
    bytes: &[u8],
) -> Result<T> {
    let plain = open_bound(key, format, b, bytes)?;
    serde_json::from_slice(&plain)
        .map_err(|e| RepoError::corrupt(b.key(), format!("bad JSON: {e}")))
}

/// The envelope version of stored bytes, if they look like an envelope.
pub fn envelope_version(bytes: &[u8]) -> Option<u8> {
    match bytes.get(..5) {
        Some([m0, m1, m2, m3, v]) if [*m0, *m1, *m2, *m3] == *OBJECT_MAGIC => Some(*v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two kinds sharing a code would let an object of one open as the
    /// other (kinds are added by separate changes; this catches a clash).
    #[test]
    fn kind_codes_are_distinct_and_round_trip() {
        let mut seen = std::collections::BTreeMap::new();
        for kind in ObjectKind::ALL {
            let code = kind_code(kind);
            if let Some(other) = seen.insert(code, kind) {
                panic!("{kind} and {other} share envelope kind code {code}");
            }
            assert_eq!(kind_of_code(code), Some(kind));
        }
    }

    #[test]
    fn round_trip_and_truncation() {
        let k = MasterKey::generate();
        let s = seal(&k, b"payload payload payload");
        assert_eq!(open(&k, &s, "o").unwrap(), b"payload payload payload");
        let err = open(&k, &s[..s.len() - 5], "index abc").unwrap_err();
        assert!(err.to_string().contains("index abc"), "{err}");
        assert!(open(&k, &s[..10], "o").is_err());
    }

    #[test]
    fn bound_envelopes_refuse_another_name_or_kind() {
        let k = MasterKey::generate();
        let b = Binding::new(ObjectKind::Wal, "7-000000010000000000000001");
        let s = seal_bound(&k, b, b"manifest").unwrap();
        assert_eq!(open_bound(&k, 3, b, &s).unwrap(), b"manifest");
        let other = Binding::new(ObjectKind::Wal, "7-000000010000000000000002");
        let e = open_bound(&k, 3, other, &s).unwrap_err().to_string();
        assert!(
            e.contains("wal/7-000000010000000000000002 holds the object named wal/7-000000010000000000000001"),
            "{e}"
        );
        let moved = Binding::new(ObjectKind::Lock, "7-000000010000000000000001");
        let e = open_bound(&k, 3, moved, &s).unwrap_err().to_string();
        assert!(e.contains("locks/") && e.contains("moved"), "{e}");
        // Editing the clear name breaks authentication.
        let mut forged = s.clone();
        let last = 7 + b.name.len() - 1;
        forged[last] = b'2';
        assert!(open_bound(&k, 3, other, &forged).is_err());
    }

    #[test]
    fn content_addressed_names_are_the_hash_in_every_format() {
        let k = MasterKey::generate();
        for format in [1, 2, 3] {
            let a = seal_for(&k, format, Binding::new(ObjectKind::Snapshot, ""), b"a").unwrap();
            let name_a = Id::of_stored(&a).to_hex();
            let good = Binding::new(ObjectKind::Snapshot, &name_a);
            assert_eq!(open_bound(&k, format, good, &a).unwrap(), b"a");
            let wrong_name = Id::of_stored(b"other").to_hex();
            let e = open_bound(
                &k,
                format,
                Binding::new(ObjectKind::Snapshot, &wrong_name),
                &a,
            )
            .unwrap_err()
            .to_string();
            assert!(
                e.contains(&format!(
                    "snapshots/{wrong_name} holds the object named snapshots/{name_a}"
                )),
                "{e}"
            );
        }
        // A version-1 envelope in a format-3 repository is a downgrade.
        let v1 = seal(&k, b"x");
        let n = Id::of_stored(&v1).to_hex();
        let e = open_bound(&k, 3, Binding::new(ObjectKind::Index, &n), &v1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("version-1 envelope"), "{e}");
        // A version-2 snapshot copied into index/ is refused as moved.
        let s = seal_bound(&k, Binding::new(ObjectKind::Snapshot, ""), b"s").unwrap();
        let n = Id::of_stored(&s).to_hex();
        let e = open_bound(&k, 3, Binding::new(ObjectKind::Index, &n), &s)
            .unwrap_err()
            .to_string();
        assert!(e.contains("holds a snapshot object"), "{e}");
    }
}
