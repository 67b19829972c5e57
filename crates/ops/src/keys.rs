//! Key slots: adding a password or a key file, removing a slot, and the
//! crash-ordered password change.

use std::io::Write;
use std::path::{Path, PathBuf};

use holdfast_repo::keys::{encode_key_file, generate_key_file_key, KdfParams, KEY_FILE_LEN};
use holdfast_repo::Repository;

use holdfast_repo::audit::{Draft, Outcome};

use crate::audit;
use crate::error::{OpsError, Result};
use crate::secrets;

/// The secret a new key slot opens with.
pub enum NewSecret {
    /// A password, hashed with `kdf`.
    Password { password: Vec<u8>, kdf: KdfParams },
    /// The key file at `path`: read if it exists, else created (mode 0600,
    /// never over an existing file) with a new random key.
    KeyFile { path: PathBuf },
}

/// One new slot.
pub struct NewSlot {
    pub secret: NewSecret,
    /// Free text shown by `key list`; empty for a key file means "key file PATH".
    pub label: String,
}

/// What adding a slot did.
#[derive(Debug, Clone)]
pub struct AddedSlot {
    pub id: String,
    /// For a key file: its path and whether it was created now.
    pub key_file: Option<(PathBuf, bool)>,
}

/// Add a key slot. A key file this call created is removed again if the
/// slot cannot be written, so no key file exists that opens nothing.
/// Audited as `key add` (the kind of secret and the label; never the
/// secret).
pub fn add(repo: &Repository, slot: NewSlot) -> Result<AddedSlot> {
    let draft = describe(Draft::new("key add", Outcome::Success), &slot);
    audit::audited(
        repo,
        draft,
        || add_slot(repo, slot),
        |a, d| d.touch("key", a.id.clone()),
    )
}

/// The audit arguments of a new slot: its kind and label, no secret.
fn describe(d: Draft, slot: &NewSlot) -> Draft {
    let d = d.arg("label", slot.label.clone());
    match &slot.secret {
        NewSecret::Password { .. } => d.arg("secret", "password"),
        NewSecret::KeyFile { path } => d
            .arg("secret", "key file")
            .arg("key_file", path.display().to_string()),
    }
}

fn add_slot(repo: &Repository, slot: NewSlot) -> Result<AddedSlot> {
    match slot.secret {
        NewSecret::Password { password, kdf } => {
            if password.is_empty() {
                return Err(OpsError::invalid("refusing an empty password"));
            }
            let id = repo.add_key(&password, kdf, &slot.label)?;
            Ok(AddedSlot { id, key_file: None })
        }
        NewSecret::KeyFile { path } => {
            let (key, created) = key_file_key(&path)?;
            let label = if slot.label.is_empty() {
                format!("key file {}", path.display())
            } else {
                slot.label
            };
            match repo.add_key_file(&key, &label) {
                Ok(id) => Ok(AddedSlot {
                    id,
                    key_file: Some((path, created)),
                }),
                Err(e) => {
                    if created {
                        let _ = std::fs::remove_file(&path);
                    }
                    Err(e.into())
                }
            }
        }
    }
}

/// Replace the slot that opened `repo` with a new one. The new slot is
/// durable before the old one is removed: a crash in between leaves both
/// secrets working, never neither. Returns the new slot and the removed id.
/// Audited as `key change` (a password change), naming both slots.
pub fn change(repo: &Repository, slot: NewSlot) -> Result<(AddedSlot, String)> {
    let old = repo.current_key().to_string();
    let draft =
        describe(Draft::new("key change", Outcome::Success), &slot).touch("key", old.clone());
    audit::audited(
        repo,
        draft,
        || {
            let added = add_slot(repo, slot)?;
            repo.remove_key(&old, true)?;
            Ok((added, old.clone()))
        },
        |(a, _), d| d.touch("key", a.id.clone()),
    )
}

/// Remove the slot `spec` (an id or unique prefix); never the one in use.
/// Audited as `key remove`.
pub fn remove(repo: &Repository, spec: &str) -> Result<String> {
    let draft = Draft::new("key remove", Outcome::Success).arg("spec", spec);
    audit::audited(
        repo,
        draft,
        || Ok(repo.remove_key(spec, false)?),
        |id, d| d.touch("key", id.clone()),
    )
}

/// The key of the key file at `path`: read if it exists, else a new random
/// key written there. Returns the key and whether the file was created.
fn key_file_key(path: &Path) -> Result<([u8; KEY_FILE_LEN], bool)> {
    use std::os::unix::fs::OpenOptionsExt;
    if path.exists() {
        return Ok((secrets::read_key_file(path)?.value, false));
    }
    let key = generate_key_file_key();
    let io = |cause| OpsError::Io {
        context: format!("creating key file {}", path.display()),
        cause,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    if let Err(cause) = f
        .write_all(encode_key_file(&key).as_bytes())
        .and_then(|()| f.sync_all())
    {
        let _ = std::fs::remove_file(path);
        return Err(OpsError::Io {
            context: format!("writing key file {}", path.display()),
            cause,
        });
    }
    Ok((key, true))
}
