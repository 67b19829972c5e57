//! The repository config object: format header plus encrypted settings.
//!
//! ```text
//! "HOLDFAST" | format version u32 LE | object envelope (see `object`) of JSON RepoConfig
//! ```
//!
//! The version is readable without any key so that an old holdfast can refuse
//! a newer repository with a clear message before asking for a password.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;
use crate::crypto::MasterKey;
use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::object;

pub const CONFIG_MAGIC: &[u8; 8] = b"HOLDFAST";
/// The newest repository format this build reads and writes; `init`
/// creates repositories of this version. Format 2 adds frames (several
/// small blobs compressed together, LZMA2 encoding, version-2 packs and
/// index payloads; docs/format.md). Format-1 repositories are still read
/// and written, with format-1 objects only, so older holdfast builds keep
/// reading them.
pub const FORMAT_VERSION: u32 = 2;

/// Object Lock settings chosen at init (used by S3 repositories).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockConfig {
    /// `governance` or `compliance`.
    pub mode: String,
    pub days: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoConfig {
    pub id: Id,
    pub created: DateTime<Utc>,
    /// Chunking of documents; sources may pick others (see `ChunkerParams`).
    pub chunker: ChunkerParams,
    pub pack_size: u32,
    pub compression_level: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<LockConfig>,
}

impl RepoConfig {
    pub fn new() -> RepoConfig {
        RepoConfig {
            id: Id::random(),
            created: Utc::now(),
            chunker: ChunkerParams::DOCUMENTS,
            pack_size: 16 * 1024 * 1024,
            compression_level: 3,
            lock: None,
        }
    }
}

impl Default for RepoConfig {
    fn default() -> Self {
        RepoConfig::new()
    }
}

pub fn encode(key: &MasterKey, cfg: &RepoConfig) -> Result<Vec<u8>> {
    let mut out = CONFIG_MAGIC.to_vec();
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&object::seal_json(key, cfg)?);
    Ok(out)
}

/// Check the clear header; returns the format version.
pub fn read_version(bytes: &[u8], location: &str) -> Result<u32> {
    if bytes.len() < 12 || &bytes[..8] != CONFIG_MAGIC {
        return Err(RepoError::corrupt(
            format!("config of {location}"),
            "not a Holdfast config object",
        ));
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(&bytes[8..12]);
    let version = u32::from_le_bytes(v);
    if version > FORMAT_VERSION {
        return Err(RepoError::UnsupportedVersion {
            location: location.to_string(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    Ok(version)
}

pub fn decode(key: &MasterKey, bytes: &[u8], location: &str) -> Result<RepoConfig> {
    read_version(bytes, location)?;
    object::open_json(key, &bytes[12..], &format!("config of {location}"))
}
