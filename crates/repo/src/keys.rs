//! Key slots: the master key wrapped by a passphrase.
//!
//! A slot is a small JSON object under `keys/`. It holds argon2id parameters
//! and salt, and the master key encrypted with AES-256-GCM under the key
//! argon2id derives from the passphrase. Several slots can open one
//! repository; adding, removing or changing a passphrase writes or deletes a
//! slot and never touches data. Slots are the only objects stored without the
//! repository encryption (they cannot be: they are how you get the key), and
//! they reveal nothing but who created them and when.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use argon2::{Algorithm, Argon2, Params, Version};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::crypto::MasterKey;
use crate::error::{RepoError, Result};

const AAD: &[u8] = b"holdfast key slot v1";

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane: about a quarter second on a 2020s core, and
    /// far beyond what a GPU farm can try quickly.
    fn default() -> Self {
        KdfParams {
            m_cost: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
        }
    }
}

/// A stored key slot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeySlot {
    pub version: u32,
    pub kdf: String,
    pub params: KdfParams,
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

fn kek(password: &[u8], salt: &[u8], p: KdfParams) -> Result<[u8; 32]> {
    let params = Params::new(p.m_cost, p.t_cost, p.p_cost, Some(32))
        .map_err(|e| RepoError::Invalid(format!("argon2 parameters: {e}")))?;
    let mut out = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(password, salt, &mut out)
        .map_err(|e| RepoError::Invalid(format!("argon2: {e}")))?;
    Ok(out)
}

impl KeySlot {
    /// Wrap `master` under `password`.
    pub fn create(
        master: &MasterKey,
        password: &[u8],
        params: KdfParams,
        label: &str,
    ) -> Result<KeySlot> {
        let salt: [u8; 16] = rand::random();
        let nonce: [u8; 12] = rand::random();
        let k = kek(password, &salt, params)?;
        let aead = Aes256Gcm::new_from_slice(&k).expect("32-byte key");
        let wrapped = aead
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: master.as_bytes(),
                    aad: AAD,
                },
            )
            .expect("in-memory encryption");
        Ok(KeySlot {
            version: 1,
            kdf: "argon2id".into(),
            params,
            salt: salt.to_vec(),
            nonce: nonce.to_vec(),
            wrapped,
            created: Utc::now(),
            hostname: crate::hostname(),
            username: crate::username(),
            label: label.to_string(),
        })
    }

    /// Unwrap the master key; `None` if the password does not fit.
    pub fn open(&self, password: &[u8]) -> Result<Option<MasterKey>> {
        if self.kdf != "argon2id" || self.nonce.len() != 12 {
            return Err(RepoError::Invalid(format!(
                "key slot uses unsupported kdf {:?}",
                self.kdf
            )));
        }
        let k = kek(password, &self.salt, self.params)?;
        let aead = Aes256Gcm::new_from_slice(&k).expect("32-byte key");
        match aead.decrypt(
            Nonce::from_slice(&self.nonce),
            Payload {
                msg: &self.wrapped,
                aad: AAD,
            },
        ) {
            Ok(raw) if raw.len() == 32 => {
                let mut m = [0u8; 32];
                m.copy_from_slice(&raw);
                Ok(Some(MasterKey::from_bytes(m)))
            }
            _ => Ok(None),
        }
    }
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
}
