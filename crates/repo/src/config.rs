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
/// index payloads); format 3 seals every object in a name-bound envelope
/// (see `object`) and records snapshot predecessors (docs/format.md).
/// Format-1 and -2 repositories are still read and written, with objects of
/// their format only, so older holdfast builds keep reading them, until
/// `holdfast migrate` upgrades them.
pub const FORMAT_VERSION: u32 = 3;
/// The name a migration stages the new config under before it replaces
/// `config` (see `migrate`): write-once storage has no atomic replace.
pub const STAGED_CONFIG: &str = "config.next";

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

/// zstd level of new repositories. Level 1 compresses the clinical text
/// of the standard corpus 0.9% larger than level 3 at three quarters of
/// the CPU, and compression is most of a backup's CPU on new documents
/// (the incremental backup: 47% of its samples at level 3). With small
/// files gathered into frames (format 2 and later) a level-1 repository
/// is still 0.75% smaller than a level-3 one without them, which is where
/// restic's size is. `init --compression` sets another level per
/// repository (docs/benchmarks.md, "Gathered small files, zstd level 1").
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 1;

impl RepoConfig {
    pub fn new() -> RepoConfig {
        RepoConfig {
            id: Id::random(),
            created: Utc::now(),
            chunker: ChunkerParams::DOCUMENTS,
            pack_size: 16 * 1024 * 1024,
            compression_level: DEFAULT_COMPRESSION_LEVEL,
            lock: None,
        }
    }
}

impl Default for RepoConfig {
    fn default() -> Self {
        RepoConfig::new()
    }
}

/// The binding of the config body's envelope (format 3 and later).
fn binding() -> object::Binding<'static> {
    object::Binding::new(holdfast_storage::ObjectKind::Config, "config")
}

/// The config object of a repository of `format`.
pub fn encode(key: &MasterKey, cfg: &RepoConfig, format: u32) -> Result<Vec<u8>> {
    let mut out = CONFIG_MAGIC.to_vec();
    out.extend_from_slice(&format.to_le_bytes());
    let json = serde_json::to_vec(cfg)
        .map_err(|e| RepoError::Invalid(format!("cannot serialise: {e}")))?;
    out.extend_from_slice(&object::seal_for(key, format, binding(), &json)?);
    Ok(out)
}

/// Check the clear header; returns the format version.
pub fn read_version(bytes: &[u8], location: &str) -> Result<u32> {
    let bad = || {
        RepoError::corrupt(
            format!("config of {location}"),
            "not a Holdfast config object",
        )
    };
    if bytes.get(..8) != Some(CONFIG_MAGIC.as_slice()) {
        return Err(bad());
    }
    let v: [u8; 4] = bytes
        .get(8..12)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(bad)?;
    let version = u32::from_le_bytes(v);
    if version > FORMAT_VERSION {
        return Err(RepoError::UnsupportedVersion {
            location: location.to_string(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    if version == 0 {
        return Err(bad());
    }
    Ok(version)
}

/// Decode a config object. The clear format version must agree with the
/// envelope: a format-3 config is bound to its name, and a name-bound body
/// under a header claiming an older format means the header was edited (to
/// make readers accept unbound objects: a downgrade), which is refused.
pub fn decode(key: &MasterKey, bytes: &[u8], location: &str) -> Result<RepoConfig> {
    let format = read_version(bytes, location)?;
    let body = bytes.get(12..).unwrap_or_default();
    let what = format!("config of {location}");
    let bound = object::envelope_version(body) == Some(object::ENVELOPE_V2);
    if bound != object::writes_bound(format) {
        let plain = object::open_any(key, body, &what);
        return Err(RepoError::corrupt(
            what,
            match plain {
                Ok(_) => format!(
                    "its header says format {format} but its body is sealed as format {}: the header was edited",
                    if bound { "3 or later" } else { "1 or 2" }
                ),
                Err(e) => e.to_string(),
            },
        ));
    }
    let plain = object::open_bound(key, format, binding(), body)
        .map_err(|e| RepoError::corrupt(what.clone(), e.to_string()))?;
    serde_json::from_slice(&plain).map_err(|e| RepoError::corrupt(what, format!("bad JSON: {e}")))
}
