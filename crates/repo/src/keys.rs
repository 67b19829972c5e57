//! Key slots: the master key wrapped by a passphrase or by a key file.
//!
//! A slot is a small JSON object under `keys/`. It holds the master key
//! encrypted with AES-256-GCM under a key-encryption key (KEK) and what is
//! needed to derive that KEK again:
//!
//! - `argon2id` slots: argon2id parameters and salt; the KEK is argon2id of a
//!   passphrase. Deliberately slow (a quarter second), because passphrases
//!   are guessable.
//! - `blake3-keyfile` slots: a salt; the KEK is BLAKE3 (key-derivation mode)
//!   of a random 256-bit key kept in a key file (or an environment secret
//!   holding the same key). Nothing to guess, so nothing to stretch: opening
//!   costs microseconds, which is what `archive_command` and
//!   `restore_command` need when they run once per WAL segment.
//!
//! Several slots can open one repository; adding or removing one writes or
//! deletes a slot and never touches data. Slots are the only objects stored
//! without the repository encryption (they cannot be: they are how you get
//! the key), and they reveal nothing but who created them and when. A slot's
//! name is the BLAKE3 hash of its bytes, which is how a damaged slot is told
//! from a wrong password.
//!
//! Key-file slots carry no `params` field on purpose: holdfast builds that
//! predate them fail to parse such a slot and skip it (as they skip any
//! damaged slot) instead of refusing to open the repository.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use argon2::{Algorithm, Argon2, Params, Version};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::crypto::MasterKey;
use crate::error::{RepoError, Result};

const AAD: &[u8] = b"holdfast key slot v1";
/// `kdf` of a passphrase slot.
pub const KDF_ARGON2ID: &str = "argon2id";
/// `kdf` of a key-file slot.
pub const KDF_KEYFILE: &str = "blake3-keyfile";
const KEYFILE_CONTEXT: &str = "holdfast v1 2026-11 key-file slot";
/// Length of a key-file key in bytes (256 bits).
pub const KEY_FILE_LEN: usize = 32;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

/// Lanes of the passphrase slots `init` and `key add` write: RFC 9106's
/// second recommended setting (64 MiB, 3 passes, 4 lanes). Lanes are
/// hashed in parallel, so on several cores the wait at every open is
/// shorter than one lane's, while a guess costs an attacker the same
/// memory and passes. Slots written with 1 lane (before 2026-12) keep it.
pub const DEFAULT_LANES: u32 = 4;

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 4 lanes: about a fifth of a second on two 2020s
    /// cores, and far beyond what a GPU farm can try quickly.
    fn default() -> Self {
        KdfParams {
            m_cost: 64 * 1024,
            t_cost: 3,
            p_cost: DEFAULT_LANES,
        }
    }
}

/// Bounds on argon2id parameters. A slot outside them is refused before
/// any hashing (never attempted): a hostile slot could otherwise hang an
/// open (`t_cost = 2^32-1`), allocate terabytes (`m_cost = 2^32-1`) or,
/// below argon2's own minimum, fail in a way that used to lock out every
/// password. The maxima are far above anything `key add` writes (64 MiB,
/// 3 passes, 4 lanes by default).
pub const KDF_MIN_MEMORY_KIB: u32 = 64;
/// 4 GiB.
pub const KDF_MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;
pub const KDF_MAX_TIME: u32 = 64;
pub const KDF_MAX_LANES: u32 = 64;
/// Largest stored slot read at all (slots are a few hundred bytes).
pub const MAX_SLOT_BYTES: u64 = 64 * 1024;
/// Length of a wrapped master key: 32 bytes and the 16-byte tag.
const WRAPPED_LEN: usize = 32 + 16;

impl KdfParams {
    /// Refuse parameters outside the bounds above, naming the one that is.
    pub fn check(&self) -> std::result::Result<(), String> {
        let min_memory = KDF_MIN_MEMORY_KIB.max(self.p_cost.saturating_mul(8));
        if !(1..=KDF_MAX_LANES).contains(&self.p_cost) {
            return Err(format!(
                "argon2 lanes p_cost={} outside 1..={KDF_MAX_LANES}",
                self.p_cost
            ));
        }
        if !(min_memory..=KDF_MAX_MEMORY_KIB).contains(&self.m_cost) {
            return Err(format!(
                "argon2 memory m_cost={} KiB outside {min_memory}..={KDF_MAX_MEMORY_KIB} KiB",
                self.m_cost
            ));
        }
        if !(1..=KDF_MAX_TIME).contains(&self.t_cost) {
            return Err(format!(
                "argon2 passes t_cost={} outside 1..={KDF_MAX_TIME}",
                self.t_cost
            ));
        }
        Ok(())
    }
}

/// What became of one slot when a secret was tried against it.
#[derive(Debug)]
pub enum SlotOutcome {
    Opened(MasterKey),
    /// Of the secret's kind, authenticated nothing: not this secret's slot.
    Wrong,
    /// Of the other kind (a key-file slot for a password); not tried.
    OtherKind,
    /// Unusable as stored: why.
    Damaged(String),
    /// Deliberately not tried (unknown KDF, parameters out of bounds): why.
    Skipped(String),
}

/// What the caller offers to open the repository with.
#[derive(Clone, Copy)]
pub enum Secret<'a> {
    /// A passphrase (argon2id slots).
    Password(&'a [u8]),
    /// The 256-bit key of a key file or environment secret (key-file slots).
    KeyFile(&'a [u8; KEY_FILE_LEN]),
}

impl Secret<'_> {
    /// How error messages name this kind of secret.
    pub fn describe(&self) -> &'static str {
        match self {
            Secret::Password(_) => "password",
            Secret::KeyFile(_) => "key file",
        }
    }
}

impl std::fmt::Debug for Secret<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret::{}(..)", self.describe())
    }
}

/// A stored key slot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeySlot {
    pub version: u32,
    pub kdf: String,
    /// Argon2id parameters; absent in key-file slots (see the module docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<KdfParams>,
    #[serde(with = "hex_bytes")]
    pub salt: Vec<u8>,
    #[serde(with = "hex_bytes")]
    pub nonce: Vec<u8>,
    #[serde(with = "hex_bytes")]
    pub wrapped: Vec<u8>,
    pub created: DateTime<Utc>,
    pub hostname: String,
    pub username: String,
    #[serde(default)]
    pub label: String,
}

fn argon2_kek(password: &[u8], salt: &[u8], p: KdfParams) -> Result<[u8; 32]> {
    let params = Params::new(p.m_cost, p.t_cost, p.p_cost, Some(32))
        .map_err(|e| RepoError::Invalid(format!("argon2 parameters: {e}")))?;
    let mut out = [0u8; 32];
    let blocks = params.block_count();
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    // Fresh mapped memory, faulted in by the lanes as they run (see
    // `kdfmem`); argon2's own allocation if the kernel refuses a mapping.
    match crate::kdfmem::KdfMemory::new(blocks) {
        Some(mut mem) => {
            let done = argon.hash_password_into_with_memory(password, salt, &mut out, &mut mem);
            mem.release_in_background();
            done
        }
        None => argon.hash_password_into(password, salt, &mut out),
    }
    .map_err(|e| RepoError::Invalid(format!("argon2: {e}")))?;
    Ok(out)
}

fn keyfile_kek(key: &[u8; KEY_FILE_LEN], salt: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(KEYFILE_CONTEXT);
    h.update(key);
    h.update(salt);
    *h.finalize().as_bytes()
}

fn wrap(kek: &[u8; 32], nonce: &[u8; 12], master: &MasterKey) -> Result<Vec<u8>> {
    let aead = Aes256Gcm::new_from_slice(kek)
        .map_err(|e| RepoError::Invalid(format!("key-encryption key: {e}")))?;
    aead.encrypt(
        Nonce::from_slice(nonce),
        Payload {
            msg: master.as_bytes(),
            aad: AAD,
        },
    )
    .map_err(|e| RepoError::Invalid(format!("wrapping the master key: {e}")))
}

/// A fresh random 256-bit key for a key file.
pub fn generate_key_file_key() -> [u8; KEY_FILE_LEN] {
    rand::random()
}

/// The text of a key file: the key in hex and a newline.
pub fn encode_key_file(key: &[u8; KEY_FILE_LEN]) -> String {
    format!("{}\n", hex::encode(key))
}

/// Parse a key file's content (or an environment secret): 64 hex digits,
/// optionally followed by one LF or CRLF. `what` names the source in errors.
pub fn decode_key_file(text: &[u8], what: &str) -> Result<[u8; KEY_FILE_LEN]> {
    let body = strip_line_end(text);
    let bad = || {
        RepoError::Invalid(format!(
            "{what} is not a holdfast key: expected 64 hex digits (as written by `holdfast key add --new-key-file`), found {} byte(s)",
            body.len()
        ))
    };
    if body.len() != 2 * KEY_FILE_LEN {
        return Err(bad());
    }
    let raw = hex::decode(body).map_err(|_| bad())?;
    let mut key = [0u8; KEY_FILE_LEN];
    key.copy_from_slice(&raw);
    Ok(key)
}

/// `text` without one trailing LF or CRLF (editors and `echo` add one; a
/// Windows editor adds CRLF). Only one: anything else is part of the secret.
pub fn strip_line_end(text: &[u8]) -> &[u8] {
    text.strip_suffix(b"\r\n")
        .or_else(|| text.strip_suffix(b"\n"))
        .unwrap_or(text)
}

impl KeySlot {
    fn new(kdf: &str, params: Option<KdfParams>, salt: Vec<u8>, label: &str) -> KeySlot {
        KeySlot {
            version: 1,
            kdf: kdf.into(),
            params,
            salt,
            nonce: Vec::new(),
            wrapped: Vec::new(),
            created: Utc::now(),
            hostname: crate::hostname(),
            username: crate::username(),
            label: label.to_string(),
        }
    }

    /// Wrap `master` under `password` (argon2id).
    pub fn create(
        master: &MasterKey,
        password: &[u8],
        params: KdfParams,
        label: &str,
    ) -> Result<KeySlot> {
        params
            .check()
            .map_err(|why| RepoError::Invalid(format!("key derivation parameters: {why}")))?;
        let salt: [u8; 16] = rand::random();
        let nonce: [u8; 12] = rand::random();
        let kek = argon2_kek(password, &salt, params)?;
        let mut slot = KeySlot::new(KDF_ARGON2ID, Some(params), salt.to_vec(), label);
        slot.wrapped = wrap(&kek, &nonce, master)?;
        slot.nonce = nonce.to_vec();
        Ok(slot)
    }

    /// Wrap `master` under the key of a key file (no key stretching).
    pub fn create_for_key_file(
        master: &MasterKey,
        key: &[u8; KEY_FILE_LEN],
        label: &str,
    ) -> Result<KeySlot> {
        let salt: [u8; 16] = rand::random();
        let nonce: [u8; 12] = rand::random();
        let kek = keyfile_kek(key, &salt);
        let mut slot = KeySlot::new(KDF_KEYFILE, None, salt.to_vec(), label);
        slot.wrapped = wrap(&kek, &nonce, master)?;
        slot.nonce = nonce.to_vec();
        Ok(slot)
    }

    /// Whether this slot is of the kind `secret` can open (a password is
    /// never tried against a key-file slot, nor the reverse).
    pub fn accepts(&self, secret: &Secret<'_>) -> bool {
        match secret {
            Secret::Password(_) => self.kdf == KDF_ARGON2ID,
            Secret::KeyFile(_) => self.kdf == KDF_KEYFILE,
        }
    }

    /// What is wrong with this slot's shape or parameters, found without
    /// running any KDF: damage (`Damaged`) or a refusal (`Skipped`).
    pub fn inspect(&self) -> Option<SlotOutcome> {
        let secret = match self.kdf.as_str() {
            KDF_ARGON2ID => Secret::Password(b""),
            KDF_KEYFILE => Secret::KeyFile(&[0; KEY_FILE_LEN]),
            other => {
                return Some(SlotOutcome::Skipped(format!(
                    "unknown kdf {other:?} (written by a newer holdfast?)"
                )))
            }
        };
        self.shape_problem(&secret)
    }

    fn shape_problem(&self, secret: &Secret<'_>) -> Option<SlotOutcome> {
        if self.nonce.len() != 12 {
            return Some(SlotOutcome::Damaged(format!(
                "a {}-byte nonce (12 expected)",
                self.nonce.len()
            )));
        }
        if self.wrapped.len() != WRAPPED_LEN {
            return Some(SlotOutcome::Damaged(format!(
                "a {}-byte wrapped key ({WRAPPED_LEN} expected): truncated or extended",
                self.wrapped.len()
            )));
        }
        if !(8..=64).contains(&self.salt.len()) {
            return Some(SlotOutcome::Damaged(format!(
                "a {}-byte salt (8 to 64 expected)",
                self.salt.len()
            )));
        }
        if let Secret::Password(_) = secret {
            let Some(params) = self.params else {
                return Some(SlotOutcome::Damaged(
                    "an argon2id slot without parameters".into(),
                ));
            };
            if let Err(why) = params.check() {
                return Some(SlotOutcome::Skipped(format!(
                    "refused, never attempted: {why}"
                )));
            }
        }
        None
    }

    /// Try `secret` on this slot. Nothing in a slot can make this hang or
    /// allocate beyond the KDF bounds: the shape is checked first (a short
    /// nonce or truncated ciphertext is damage, not a wrong password), then
    /// the parameters, and only then is the KDF run.
    pub fn try_open(&self, secret: &Secret<'_>) -> SlotOutcome {
        self.try_open_prederived(secret, None)
    }

    /// [`KeySlot::try_open`], using `pre`'s key-encryption key instead of
    /// running argon2 when `pre` was derived from this slot's salt and
    /// parameters (see [`KdfHint`]). Everything else is checked as usual,
    /// and the unwrap authenticates, so a `pre` of another slot or
    /// another password can only fail to open, never open wrongly.
    pub fn try_open_prederived(
        &self,
        secret: &Secret<'_>,
        pre: Option<&Prederived>,
    ) -> SlotOutcome {
        if self.kdf != KDF_ARGON2ID && self.kdf != KDF_KEYFILE {
            return SlotOutcome::Skipped(format!(
                "unknown kdf {:?} (written by a newer holdfast?)",
                self.kdf
            ));
        }
        if !self.accepts(secret) {
            return SlotOutcome::OtherKind;
        }
        if let Some(problem) = self.shape_problem(secret) {
            return problem;
        }
        let kek = match secret {
            Secret::Password(p) => {
                // Checked by shape_problem above.
                let Some(params) = self.params else {
                    return SlotOutcome::Damaged("an argon2id slot without parameters".into());
                };
                match pre.filter(|d| d.hint.salt == self.salt && d.hint.params == params) {
                    Some(d) => d.kek,
                    None => match argon2_kek(p, &self.salt, params) {
                        Ok(k) => k,
                        Err(e) => return SlotOutcome::Damaged(e.to_string()),
                    },
                }
            }
            Secret::KeyFile(k) => keyfile_kek(k, &self.salt),
        };
        let Ok(aead) = Aes256Gcm::new_from_slice(&kek) else {
            return SlotOutcome::Damaged("key-encryption key of the wrong length".into());
        };
        match aead.decrypt(
            Nonce::from_slice(&self.nonce),
            Payload {
                msg: &self.wrapped,
                aad: AAD,
            },
        ) {
            Ok(raw) => match <[u8; 32]>::try_from(raw.as_slice()) {
                Ok(m) => SlotOutcome::Opened(MasterKey::from_bytes(m)),
                Err(_) => SlotOutcome::Damaged("the wrapped key is not 32 bytes".into()),
            },
            Err(_) => SlotOutcome::Wrong,
        }
    }

    /// Unwrap the master key; `None` if the secret does not fit (or is of
    /// the other kind). An error means the slot itself is unusable.
    pub fn open_with(&self, secret: &Secret<'_>) -> Result<Option<MasterKey>> {
        match self.try_open(secret) {
            SlotOutcome::Opened(k) => Ok(Some(k)),
            SlotOutcome::Wrong | SlotOutcome::OtherKind => Ok(None),
            SlotOutcome::Damaged(why) | SlotOutcome::Skipped(why) => {
                Err(RepoError::Invalid(format!("key slot: {why}")))
            }
        }
    }

    /// Unwrap the master key with a password; `None` if it does not fit.
    pub fn open(&self, password: &[u8]) -> Result<Option<MasterKey>> {
        self.open_with(&Secret::Password(password))
    }
}

/// What argon2 needs from a password slot to derive its key-encryption
/// key: the slot's name, salt and parameters, and nothing that could test
/// a guess (no wrapped key, no nonce). Kept in the local cache after a
/// password opened the repository, so that the next open can start the
/// KDF at once, while the slot is still being listed and read: on a WAN
/// link that hides the round trips under the quarter second argon2 takes.
/// Offline, the hint is as useless to a password guesser as the salt
/// alone; a hint that does not fit the slot read (replaced, damaged,
/// edited) only costs running the KDF again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfHint {
    pub slot: String,
    #[serde(with = "hex_bytes")]
    pub salt: Vec<u8>,
    pub params: KdfParams,
}

impl KdfHint {
    /// The hint for a password slot (`None` for a key-file slot or one
    /// without parameters).
    pub fn of(name: &str, slot: &KeySlot) -> Option<KdfHint> {
        if slot.kdf != KDF_ARGON2ID {
            return None;
        }
        Some(KdfHint {
            slot: name.to_string(),
            salt: slot.salt.clone(),
            params: slot.params?,
        })
    }
}

/// A password's key-encryption key derived ahead from a [`KdfHint`].
pub struct Prederived {
    hint: KdfHint,
    kek: [u8; 32],
}

impl std::fmt::Debug for Prederived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prederived")
            .field("slot", &self.hint.slot)
            .finish_non_exhaustive()
    }
}

impl Prederived {
    /// The slot this was derived for.
    pub fn slot(&self) -> &str {
        &self.hint.slot
    }
}

/// Run argon2 for `password` with `hint`'s salt and parameters. The
/// parameters are held to the same bounds as a stored slot's (a hint is
/// read from a local file, which is no more trusted than storage), and
/// the salt to the same lengths.
pub fn prederive(password: &[u8], hint: &KdfHint) -> Result<Prederived> {
    hint.params.check().map_err(RepoError::Invalid)?;
    if !(8..=64).contains(&hint.salt.len()) {
        return Err(RepoError::Invalid(format!(
            "a KDF hint with a {}-byte salt (8 to 64 expected)",
            hint.salt.len()
        )));
    }
    Ok(Prederived {
        kek: argon2_kek(password, &hint.salt, hint.params)?,
        hint: hint.clone(),
    })
}

/// Parse a stored slot named `name` (`keys/<name>`): its bytes must be a
/// slot and hash to its name (a slot is named by the BLAKE3 of its bytes,
/// so a renamed, swapped or edited slot is told from a wrong password).
/// The error says why it is damaged.
pub fn parse_slot(name: &str, bytes: &[u8]) -> std::result::Result<KeySlot, String> {
    let actual = crate::id::Id::of_stored(bytes).to_hex();
    let slot = serde_json::from_slice::<KeySlot>(bytes).map_err(|e| {
        if actual != name {
            format!(
                "{} byte(s), content does not hash to its name, not a readable slot: {e}",
                bytes.len()
            )
        } else {
            format!("not a readable key slot: {e}")
        }
    })?;
    if actual != name {
        return Err(format!(
            "keys/{name} holds the slot named keys/{actual}: renamed, swapped or edited"
        ));
    }
    Ok(slot)
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap() {
        let m = MasterKey::generate();
        let p = KdfParams {
            m_cost: 1024,
            t_cost: 1,
            p_cost: 1,
        };
        let slot = KeySlot::create(&m, b"pw", p, "test").unwrap();
        let json = serde_json::to_string(&slot).unwrap();
        let slot: KeySlot = serde_json::from_str(&json).unwrap();
        assert_eq!(slot.open(b"pw").unwrap().unwrap().as_bytes(), m.as_bytes());
        assert!(slot.open(b"wrong").unwrap().is_none());
    }

    #[test]
    fn key_file_slots_open_only_with_their_key() {
        let m = MasterKey::generate();
        let key = generate_key_file_key();
        let slot = KeySlot::create_for_key_file(&m, &key, "wal").unwrap();
        let json = serde_json::to_string(&slot).unwrap();
        assert!(!json.contains("params"), "{json}");
        let slot: KeySlot = serde_json::from_str(&json).unwrap();
        let got = slot.open_with(&Secret::KeyFile(&key)).unwrap().unwrap();
        assert_eq!(got.as_bytes(), m.as_bytes());
        let other = generate_key_file_key();
        assert!(slot.open_with(&Secret::KeyFile(&other)).unwrap().is_none());
        // The hex of the key as a password does not open it either.
        let text = encode_key_file(&key);
        assert!(slot.open(text.as_bytes()).unwrap().is_none());
    }

    #[test]
    fn key_file_text_round_trips_with_any_line_end() {
        let key = generate_key_file_key();
        let text = encode_key_file(&key);
        assert_eq!(decode_key_file(text.as_bytes(), "f").unwrap(), key);
        let crlf = text.replace('\n', "\r\n");
        assert_eq!(decode_key_file(crlf.as_bytes(), "f").unwrap(), key);
        let bare = text.trim_end();
        assert_eq!(decode_key_file(bare.as_bytes(), "f").unwrap(), key);
        let err = decode_key_file(&text.as_bytes()[..40], "key file /x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("key file /x"), "{err}");
        assert!(decode_key_file(b"zz", "f").is_err());
    }

    #[test]
    fn a_prederived_key_opens_only_what_the_kdf_would() {
        let m = MasterKey::generate();
        let p = KdfParams {
            m_cost: 1024,
            t_cost: 1,
            p_cost: 1,
        };
        let slot = KeySlot::create(&m, b"pw", p, "test").unwrap();
        let hint = KdfHint::of("name", &slot).unwrap();
        assert!(!serde_json::to_string(&hint).unwrap().contains("wrapped"));
        let opened = |pre: &Prederived, pw: &[u8]| match slot
            .try_open_prederived(&Secret::Password(pw), Some(pre))
        {
            SlotOutcome::Opened(k) => Some(k.as_bytes().to_vec()),
            SlotOutcome::Wrong => None,
            other => panic!("{other:?}"),
        };
        // The right password, derived ahead: opens without the KDF.
        let pre = prederive(b"pw", &hint).unwrap();
        assert_eq!(opened(&pre, b"pw"), Some(m.as_bytes().to_vec()));
        // Derived from a wrong password: wrong, whatever is offered now.
        let bad = prederive(b"nope", &hint).unwrap();
        assert_eq!(opened(&bad, b"pw"), None);
        // Derived for another salt or other parameters: not used, so the
        // slot opens (or not) exactly as without it.
        for other in [
            KdfHint {
                salt: vec![7; 16],
                ..hint.clone()
            },
            KdfHint {
                params: KdfParams { t_cost: 2, ..p },
                ..hint.clone()
            },
        ] {
            let wrong_pw = prederive(b"nope", &other).unwrap();
            assert_eq!(opened(&wrong_pw, b"pw"), Some(m.as_bytes().to_vec()));
        }
        // A hint is held to the bounds of a stored slot: never run outside.
        let hostile = KdfHint {
            params: KdfParams {
                m_cost: u32::MAX,
                ..p
            },
            ..hint.clone()
        };
        assert!(prederive(b"pw", &hostile).is_err());
        let short = KdfHint {
            salt: vec![1; 4],
            ..hint
        };
        assert!(prederive(b"pw", &short).is_err());
        // Key-file slots have no hint.
        let kf = KeySlot::create_for_key_file(&m, &generate_key_file_key(), "k").unwrap();
        assert!(KdfHint::of("n", &kf).is_none());
    }

    #[test]
    fn one_line_end_is_stripped() {
        assert_eq!(strip_line_end(b"pw\r\n"), b"pw");
        assert_eq!(strip_line_end(b"pw\n"), b"pw");
        assert_eq!(strip_line_end(b"pw\n\n"), b"pw\n");
        assert_eq!(strip_line_end(b"pw "), b"pw ");
    }
}
