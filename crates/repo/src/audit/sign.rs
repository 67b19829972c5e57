//! Electronic signatures on audit entries (21 CFR 11.50, 11.70, 11.200):
//! ed25519 keys, their files, and the signature line of a signed entry.
//!
//! A signed entry carries the signer's manifestation in its body
//! ([`super::SignedBy`]: registered name, printed name, meaning, key
//! fingerprint; the time is the entry's) and, as the plaintext's second
//! line, an ed25519 signature over
//! `"holdfast audit signature v1\n" || body`, the exact bytes of the
//! entry's first line. The body also holds the entry's number and the
//! previous entry's hash, so a signature cannot be moved to another entry
//! or another place in the chain, and an edit of anything it covers fails
//! verification (11.70: the signature is linked to its record).
//!
//! Key files (documented in the README):
//! - private key: PEM `PRIVATE KEY` (PKCS#8, unencrypted), as written by
//!   `holdfast signer keygen` or `openssl genpkey -algorithm ed25519`;
//! - public key: PEM `PUBLIC KEY` (SubjectPublicKeyInfo), as written by
//!   `openssl pkey -pubout` and `holdfast signer keygen`, or an OpenSSH
//!   `ssh-ed25519 AAAA... comment` line.
//!
//! Signing uses `ring`'s ed25519 (already the repository's AES-GCM), so no
//! second cryptography library is built.

use base64::Engine;
use chrono::{DateTime, Utc};
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};

use super::SignedBy;
use crate::error::{RepoError, Result};

/// What every signature covers before the entry's bytes (domain
/// separation: a signature made here means nothing elsewhere).
pub const SIGNATURE_CONTEXT: &[u8] = b"holdfast audit signature v1\n";
/// The only algorithm.
pub const ALGORITHM: &str = "ed25519";
/// SubjectPublicKeyInfo of an ed25519 key, before its 32 bytes.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// Longest key file read: key files are a few hundred bytes.
const MAX_KEY_FILE: usize = 16 * 1024;

/// The second line of a signed entry's plaintext.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureLine {
    pub algorithm: String,
    /// 64 bytes, hex.
    pub signature: String,
}

/// A registered signer (`signers/<name>`): a write-once record tying a
/// name and a printed name to one ed25519 public key (11.100, 11.300: a
/// signature is unique to one individual; a new key is a new signer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signer {
    pub version: u32,
    /// The registered name, e.g. `jdoe`.
    pub name: String,
    /// The signer's full name as printed on signed entries.
    pub printed_name: String,
    /// The public key, 32 bytes, hex.
    pub public_key: String,
    pub added: DateTime<Utc>,
    /// Who registered the signer.
    pub added_by: String,
}

impl Signer {
    /// The raw public key.
    pub fn key_bytes(&self) -> Result<[u8; 32]> {
        let v = hex::decode(&self.public_key)
            .ok()
            .and_then(|v| <[u8; 32]>::try_from(v).ok());
        v.ok_or_else(|| {
            RepoError::corrupt(
                format!("signers/{}", self.name),
                "public key is not 32 bytes of hex",
            )
        })
    }

    /// BLAKE3 of the public key, hex: what a signed entry names.
    pub fn fingerprint(&self) -> Result<String> {
        Ok(fingerprint(&self.key_bytes()?))
    }
}

/// BLAKE3 of a public key, hex.
pub fn fingerprint(public_key: &[u8; 32]) -> String {
    blake3::hash(public_key).to_hex().to_string()
}

/// A private signing key, read from a key file.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public_key", &hex::encode(self.public_key()))
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new random key and its PKCS#8 PEM (for `signer keygen`).
    pub fn generate() -> Result<(SigningKey, String)> {
        let rng = ring::rand::SystemRandom::new();
        let der = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| RepoError::Invalid("cannot generate an ed25519 key".into()))?;
        let pem = pem_encode("PRIVATE KEY", der.as_ref());
        let key = SigningKey::from_pem(pem.as_bytes(), "the new key")?;
        Ok((key, pem))
    }

    /// A key from a PEM `PRIVATE KEY` (PKCS#8) file's bytes; `what` names
    /// the file in errors.
    pub fn from_pem(bytes: &[u8], what: &str) -> Result<SigningKey> {
        let der = pem_decode(bytes, "PRIVATE KEY", what)?;
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|e| {
            RepoError::Invalid(format!(
                "{what} is not an ed25519 private key ({e}); make one with `holdfast signer keygen` or `openssl genpkey -algorithm ed25519`"
            ))
        })?;
        Ok(SigningKey { pair })
    }

    pub fn public_key(&self) -> [u8; 32] {
        let mut k = [0u8; 32];
        k.copy_from_slice(self.pair.public_key().as_ref());
        k
    }

    /// The public key as a PEM `PUBLIC KEY` file.
    pub fn public_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.public_key());
        pem_encode("PUBLIC KEY", &der)
    }

    /// The signature line over an entry's body.
    pub fn sign_entry(&self, body: &[u8]) -> SignatureLine {
        let mut msg = SIGNATURE_CONTEXT.to_vec();
        msg.extend_from_slice(body);
        SignatureLine {
            algorithm: ALGORITHM.into(),
            signature: hex::encode(self.pair.sign(&msg).as_ref()),
        }
    }
}

/// The manifestation of `signer` signing with `key` for `meaning`;
/// refused when the key is not the signer's or the meaning is empty.
pub fn manifestation(key: &SigningKey, signer: &Signer, meaning: &str) -> Result<SignedBy> {
    if meaning.trim().is_empty() {
        return Err(RepoError::Invalid(
            "a signature needs a meaning (what the signer attests)".into(),
        ));
    }
    if key.public_key() != signer.key_bytes()? {
        return Err(RepoError::Invalid(format!(
            "the signing key is not the key registered for signer {:?} (its fingerprint {}, the key's {})",
            signer.name,
            short(&signer.fingerprint()?),
            short(&fingerprint(&key.public_key()))
        )));
    }
    Ok(SignedBy {
        signer: signer.name.clone(),
        printed_name: signer.printed_name.clone(),
        meaning: meaning.to_string(),
        key: signer.fingerprint()?,
    })
}

fn short(h: &str) -> &str {
    h.get(..16).unwrap_or(h)
}

/// Check `line` as `signer`'s signature of `body`; the error says why not.
pub fn check(
    signer: &Signer,
    mark: &SignedBy,
    body: &[u8],
    line: &SignatureLine,
) -> std::result::Result<(), String> {
    let key = signer.key_bytes().map_err(|e| e.to_string())?;
    if fingerprint(&key) != mark.key {
        return Err(format!(
            "the entry names key {} but signer {:?} has key {}",
            short(&mark.key),
            signer.name,
            short(&fingerprint(&key))
        ));
    }
    if mark.printed_name != signer.printed_name {
        return Err(format!(
            "the entry shows the printed name {:?} but signer {:?} is registered as {:?}",
            mark.printed_name, signer.name, signer.printed_name
        ));
    }
    if line.algorithm != ALGORITHM {
        return Err(format!("unknown signature algorithm {:?}", line.algorithm));
    }
    let sig = hex::decode(&line.signature).map_err(|_| "the signature is not hex".to_string())?;
    let mut msg = SIGNATURE_CONTEXT.to_vec();
    msg.extend_from_slice(body);
    UnparsedPublicKey::new(&ED25519, key)
        .verify(&msg, &sig)
        .map_err(|_| {
            format!(
                "the signature does not verify with signer {:?}'s key",
                signer.name
            )
        })
}

/// The 32 bytes of an ed25519 public key file: PEM `PUBLIC KEY` or an
/// OpenSSH `ssh-ed25519` line.
pub fn parse_public_key(bytes: &[u8], what: &str) -> Result<[u8; 32]> {
    if bytes.len() > MAX_KEY_FILE {
        return Err(RepoError::Invalid(format!(
            "{what} is too large for a key file"
        )));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| RepoError::Invalid(format!("{what} is not a text key file")))?
        .trim();
    let bad = |why: &str| {
        RepoError::Invalid(format!(
            "{what} is not an ed25519 public key ({why}); expected a PEM PUBLIC KEY (`openssl pkey -in KEY -pubout`, `holdfast signer keygen`) or an `ssh-ed25519 AAAA...` line"
        ))
    };
    if let Some(rest) = text.strip_prefix("ssh-ed25519 ") {
        let b64 = rest.split_whitespace().next().unwrap_or("");
        let blob = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| bad("bad base64"))?;
        // string "ssh-ed25519" || string key(32)
        let mut r = blob.as_slice();
        let name = ssh_string(&mut r).ok_or_else(|| bad("truncated"))?;
        if name != b"ssh-ed25519" {
            return Err(bad("not an ssh-ed25519 key"));
        }
        let key = ssh_string(&mut r).ok_or_else(|| bad("truncated"))?;
        if !r.is_empty() {
            return Err(bad("trailing bytes"));
        }
        return <[u8; 32]>::try_from(key).map_err(|_| bad("key is not 32 bytes"));
    }
    if text.contains("PRIVATE KEY-----") {
        return Err(bad(
            "it is a private key: give the public key file (.pub), keep the private key to its owner",
        ));
    }
    if text.starts_with("-----BEGIN") {
        let der = pem_decode(text.as_bytes(), "PUBLIC KEY", what)
            .map_err(|_| bad("no PEM PUBLIC KEY block"))?;
        return match der.strip_prefix(SPKI_PREFIX.as_slice()) {
            Some(k) => <[u8; 32]>::try_from(k).map_err(|_| bad("key is not 32 bytes")),
            None => Err(bad("not an ed25519 SubjectPublicKeyInfo")),
        };
    }
    Err(bad("unknown format"))
}

fn ssh_string<'a>(r: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_be_bytes(r.get(..4)?.try_into().ok()?) as usize;
    let s = r.get(4..4 + len)?;
    *r = r.get(4 + len..)?;
    Some(s)
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The DER inside the one PEM block labelled `label`.
fn pem_decode(bytes: &[u8], label: &str, what: &str) -> Result<Vec<u8>> {
    if bytes.len() > MAX_KEY_FILE {
        return Err(RepoError::Invalid(format!(
            "{what} is too large for a key file"
        )));
    }
    let bad = |why: String| RepoError::Invalid(format!("{what}: {why}"));
    let text = std::str::from_utf8(bytes).map_err(|_| bad("not a text (PEM) file".into()))?;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin).ok_or_else(|| {
        bad(format!(
            "no {begin} line (an encrypted or other kind of key?)"
        ))
    })?;
    let body = &text[start + begin.len()..];
    let stop = body
        .find(&end)
        .ok_or_else(|| bad(format!("no {end} line")))?;
    let b64: String = body[..stop].split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| bad("bad base64 in the PEM block".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer_of(key: &SigningKey, name: &str) -> Signer {
        Signer {
            version: 1,
            name: name.into(),
            printed_name: "Jane Doe".into(),
            public_key: hex::encode(key.public_key()),
            added: Utc::now(),
            added_by: "t".into(),
        }
    }

    #[test]
    fn sign_and_check() {
        let (key, pem) = SigningKey::generate().unwrap();
        let again = SigningKey::from_pem(pem.as_bytes(), "k").unwrap();
        assert_eq!(again.public_key(), key.public_key());
        let signer = signer_of(&key, "jdoe");
        let mark = manifestation(&key, &signer, "release of hold H-1").unwrap();
        let body = b"{\"seq\":3}";
        let line = key.sign_entry(body);
        check(&signer, &mark, body, &line).unwrap();
        // Another body, another key, another printed name: refused.
        assert!(check(&signer, &mark, b"{\"seq\":4}", &line).is_err());
        let (other, _) = SigningKey::generate().unwrap();
        assert!(check(&signer, &mark, body, &other.sign_entry(body)).is_err());
        assert!(manifestation(&other, &signer, "x").is_err());
        assert!(manifestation(&key, &signer, " ").is_err());
        let mut renamed = mark.clone();
        renamed.printed_name = "Mallory".into();
        assert!(check(&signer, &renamed, body, &line).is_err());
    }

    #[test]
    fn public_key_files() {
        let (key, _) = SigningKey::generate().unwrap();
        let pem = key.public_pem();
        assert_eq!(
            parse_public_key(pem.as_bytes(), "p").unwrap(),
            key.public_key()
        );
        // The OpenSSH form of the same key.
        let mut blob = Vec::new();
        for part in [b"ssh-ed25519".as_slice(), key.public_key().as_slice()] {
            blob.extend_from_slice(&(part.len() as u32).to_be_bytes());
            blob.extend_from_slice(part);
        }
        let line = format!(
            "ssh-ed25519 {} jane@host\n",
            base64::engine::general_purpose::STANDARD.encode(&blob)
        );
        assert_eq!(
            parse_public_key(line.as_bytes(), "p").unwrap(),
            key.public_key()
        );
        for bad in [
            b"".as_slice(),
            b"ssh-rsa AAAA".as_slice(),
            b"ssh-ed25519 !!!".as_slice(),
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".as_slice(),
            b"\xff\xfe".as_slice(),
        ] {
            assert!(parse_public_key(bad, "p").is_err());
        }
        // A private key is not a public key, and the reverse.
        let (_, private) = SigningKey::generate().unwrap();
        assert!(parse_public_key(private.as_bytes(), "p").is_err());
        assert!(SigningKey::from_pem(pem.as_bytes(), "k").is_err());
    }

    #[test]
    fn openssl_pkcs8_v1_key_reads() {
        // `openssl genpkey -algorithm ed25519` writes this 48-byte form
        // (RFC 8410's example key).
        let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";
        let key = SigningKey::from_pem(pem.as_bytes(), "k").unwrap();
        let public = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
        assert_eq!(
            parse_public_key(public.as_bytes(), "p").unwrap(),
            key.public_key()
        );
    }
}
