//! WAL manifests: the repository object kind `wal/<cluster>-<file name>`.
//!
//! Each archived PostgreSQL WAL file (written by `wal-push`) is data blobs
//! plus one manifest naming them, its size, the BLAKE3 of its content and
//! where its blobs were stored. Manifests are not named by content (a
//! restore asks for a WAL file by name), so the name is bound twice: the
//! envelope (format 3) carries it, authenticated, and the manifest's own
//! `cluster` and `name` fields must spell it (which also binds manifests
//! of formats 1 and 2). A manifest found under another name is refused.
//!
//! Manifests are write-once: the same WAL file archived again is judged by
//! content by the caller, never overwritten. They are roots for garbage
//! collection: every blob a manifest names is live.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use holdfast_storage::{ObjectKind, StorageError};
use serde::{Deserialize, Serialize};

use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::object::Binding;
use crate::repository::{Repository, Unreadable};

/// Suffix of a manifest staged by `migrate` (re-sealed, waiting to replace
/// the original). Never listed as a manifest.
pub const STAGED_SUFFIX: &str = ".migrating";

/// A manifest and its object name.
pub type NamedManifest = (String, WalManifest);

/// The manifest of one archived WAL file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WalManifest {
    pub version: u32,
    /// System identifier of the cluster, in decimal.
    pub cluster: String,
    pub name: String,
    pub size: u64,
    /// BLAKE3 of the content, hex.
    pub blake3: String,
    pub blobs: Vec<Id>,
    pub archived_at: DateTime<Utc>,
    /// Where each blob was stored when it was archived, so `wal-fetch` reads
    /// it without loading the repository index. Absent in manifests written
    /// before this field existed; may be stale after a repack. Either way
    /// `wal-fetch` falls back to the index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stored_at: Vec<StoredAt>,
}

/// Where one blob of a WAL file was stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAt {
    pub pack: Id,
    /// The pack's salt, hex.
    pub salt: String,
    pub offset: u32,
    pub length: u32,
    pub raw_len: u32,
    /// Where the blob starts in its decoded frame (format 2); absent and 0
    /// for WAL, which is never framed, kept so a location is complete.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub inner: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl WalManifest {
    /// The object name this manifest must be stored under.
    pub fn object_name(&self) -> String {
        format!("{}-{}", self.cluster, self.name)
    }
}

/// Decode the stored bytes of manifest `name` and check that it is the
/// manifest of that name.
pub(crate) fn decode(repo: &Repository, name: &str, bytes: &[u8]) -> Result<WalManifest> {
    let b = Binding::new(ObjectKind::Wal, name);
    let m: WalManifest = repo.open_json_object(b, bytes)?;
    let own = m.object_name();
    if own != name {
        return Err(RepoError::Misplaced {
            object: b.key(),
            holds: format!("the manifest of {}", ObjectKind::Wal.key(&own)),
            how: "renamed, swapped or copied over another".into(),
        });
    }
    Ok(m)
}

impl Repository {
    /// Store manifest `m` under its name (`wal/<cluster>-<file name>`).
    /// Write-once: returns false, storing nothing, if a manifest of that
    /// name already exists (the caller judges it by content).
    pub fn put_wal_manifest(&self, m: &WalManifest) -> Result<bool> {
        let name = m.object_name();
        let json = serde_json::to_vec(m)
            .map_err(|e| RepoError::Invalid(format!("cannot serialise: {e}")))?;
        let sealed = self.seal_object(Binding::new(ObjectKind::Wal, &name), &json)?;
        match self.block_on(self.backend().put(
            ObjectKind::Wal,
            &name,
            Bytes::from(sealed),
            &self.put_options(),
        )) {
            Ok(()) => Ok(true),
            Err(StorageError::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Manifest `name` (`<cluster>-<file name>`), `None` if there is none.
    pub fn wal_manifest(&self, name: &str) -> Result<Option<WalManifest>> {
        match self.block_on(self.backend().get(ObjectKind::Wal, name, None)) {
            Ok(bytes) => decode(self, name, &bytes).map(Some),
            // A migration of this (format 1 or 2) repository may have
            // stopped between removing a manifest and putting its
            // re-sealed copy back: the copy is staged beside it.
            Err(StorageError::NotFound { .. })
                if !crate::object::writes_bound(self.format_version()) =>
            {
                let staged = format!("{name}{STAGED_SUFFIX}");
                match self.block_on(self.backend().get(ObjectKind::Wal, &staged, None)) {
                    Ok(bytes) => {
                        let m: WalManifest = crate::object::open_json_bound(
                            self.key(),
                            crate::object::FIRST_BOUND_FORMAT,
                            Binding::new(ObjectKind::Wal, name),
                            &bytes,
                        )?;
                        if m.object_name() != name {
                            return Err(RepoError::Misplaced {
                                object: ObjectKind::Wal.key(&staged),
                                holds: format!("the manifest of {}", m.object_name()),
                                how: "renamed or swapped".into(),
                            });
                        }
                        Ok(Some(m))
                    }
                    Err(StorageError::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e.into()),
                }
            }
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Names of every WAL manifest (`<cluster>-<file name>`), sorted.
    pub fn list_wal_manifests(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .block_on(self.backend().list(ObjectKind::Wal))?
            .into_iter()
            .map(|m| m.name)
            .filter(|n| !n.ends_with(STAGED_SUFFIX))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Every WAL manifest, read concurrently, and those that cannot be read
    /// (with why): what `check` verifies.
    pub fn wal_manifests(&self) -> Result<(Vec<NamedManifest>, Vec<Unreadable>)> {
        let names = self.list_wal_manifests()?;
        let fetched = self.fetch_all(ObjectKind::Wal, names);
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for (name, r) in fetched {
            match r
                .map_err(RepoError::from)
                .and_then(|b| decode(self, &name, &b))
            {
                Ok(m) => good.push((name, m)),
                Err(e) => bad.push((name, e.to_string())),
            }
        }
        Ok((good, bad))
    }
}
