//! Signer records (`signers/<name>`): who may sign audit entries, each a
//! write-once record of a registered name, a printed name and one ed25519
//! public key, sealed and bound to its name. A signer is never edited or
//! removed by holdfast: a new key is a new signer (21 CFR 11.100(a): a
//! signature belongs to one individual and is never reassigned).

use holdfast_storage::ObjectKind;

use super::sign::Signer;
use crate::error::{RepoError, Result};
use crate::records::{self, Records};
use crate::repository::Repository;

/// Version of the signer record.
pub const SIGNER_VERSION: u32 = 1;

/// Refuse a signer name that is not 1 to 64 of `a-z A-Z 0-9 . _ -`,
/// starting with a letter or digit (it is an object name).
pub fn check_name(name: &str) -> Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(RepoError::Invalid(format!(
            "signer name {name:?}: use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit (e.g. jroe); the full name goes in --printed-name"
        )))
    }
}

impl Repository {
    /// Register `signer` (write-once). Refused if the name is taken or the
    /// key is already another signer's.
    pub fn put_signer(&self, signer: &Signer) -> Result<()> {
        check_name(&signer.name)?;
        let key = signer.key_bytes()?;
        let (existing, _) = self.signers()?;
        if let Some((name, _)) = existing
            .iter()
            .find(|(_, s)| s.key_bytes().ok() == Some(key))
        {
            return Err(RepoError::Invalid(format!(
                "this public key is already registered as signer {name:?}: one key belongs to one signer"
            )));
        }
        if !records::put(self, ObjectKind::Signer, &signer.name, signer)? {
            return Err(RepoError::Invalid(format!(
                "a signer named {:?} is already registered (signers are never replaced: register the new key under another name)",
                signer.name
            )));
        }
        Ok(())
    }

    /// Every registered signer, and the records that do not open (with why).
    pub fn signers(&self) -> Result<Records<Signer>> {
        records::read_all(self, ObjectKind::Signer)
    }

    /// The registered signer whose key is `public_key`.
    pub fn signer_with_key(&self, public_key: &[u8; 32]) -> Result<Option<Signer>> {
        let (all, _) = self.signers()?;
        Ok(all
            .into_iter()
            .map(|(_, s)| s)
            .find(|s| s.key_bytes().ok().as_ref() == Some(public_key)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["jroe", "j.roe-2", "A_1"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".x", "-x", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
