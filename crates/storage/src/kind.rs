//! Object kinds and the key layout they map to.
//!
//! One layout serves every backend, so a local repository copied into a
//! bucket (or the reverse) is still a repository. Packs are fanned out over
//! 256 directories by the first two hex digits of their name, which keeps
//! directory sizes sane on local filesystems and spreads S3 prefixes.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// The repository header and configuration (exactly one, named `config`).
    Config,
    /// Key slots wrapping the master key.
    Key,
    /// Packs of encrypted blobs.
    Pack,
    /// Immutable index objects mapping blob ids to pack locations.
    Index,
    /// Snapshot manifests (the commit points).
    Snapshot,
    /// Lock objects of running writers.
    Lock,
    /// Append-only audit trail entries.
    Audit,
    /// Manifests of archived PostgreSQL WAL files, named by WAL file name.
    Wal,
    /// Objects `repair` found where they do not belong and could not place,
    /// kept (never deleted) for an operator to inspect.
    LostFound,
    /// Deletion records ("tombstones") of snapshots purged on purpose by a
    /// retention policy, named by the snapshot's id.
    Tombstone,
    /// Verification records: which snapshots a full read of their data (or
    /// a restore drill) found good.
    Verification,
    /// Restore drill records: what a drill restored, measured and found,
    /// write-once (`drills/<time>-<random>`).
    Drill,
    /// Registered signers of electronic signatures (`signers/<name>`):
    /// a name, a printed name and an ed25519 public key, write-once.
    Signer,
    /// Legal hold records: placements (`holds/<hold id>`) and releases
    /// (`holds/<hold id>.release`), write-once, never edited or deleted.
    Hold,
    /// GDPR erasure records (`erasures/E-<time>-<random>`): what a restore
    /// must erase again, write-once, never edited or deleted.
    Erasure,
}

impl ObjectKind {
    pub const ALL: [ObjectKind; 15] = [
        ObjectKind::Config,
        ObjectKind::Key,
        ObjectKind::Pack,
        ObjectKind::Index,
        ObjectKind::Snapshot,
        ObjectKind::Lock,
        ObjectKind::Audit,
        ObjectKind::Wal,
        ObjectKind::LostFound,
        ObjectKind::Tombstone,
        ObjectKind::Verification,
        ObjectKind::Drill,
        ObjectKind::Signer,
        ObjectKind::Hold,
        ObjectKind::Erasure,
    ];

    /// Directory (key prefix) holding objects of this kind.
    pub fn dir(&self) -> &'static str {
        match self {
            ObjectKind::Config => "",
            ObjectKind::Key => "keys",
            ObjectKind::Pack => "data",
            ObjectKind::Index => "index",
            ObjectKind::Snapshot => "snapshots",
            ObjectKind::Lock => "locks",
            ObjectKind::Audit => "audit",
            ObjectKind::Wal => "wal",
            ObjectKind::LostFound => "lost+found",
            ObjectKind::Tombstone => "forgotten",
            ObjectKind::Verification => "verified",
            ObjectKind::Drill => "drills",
            ObjectKind::Signer => "signers",
            ObjectKind::Hold => "holds",
            ObjectKind::Erasure => "erasures",
        }
    }

    /// The relative key of object `name` of this kind.
    pub fn key(&self, name: &str) -> String {
        match self {
            ObjectKind::Config => name.to_string(),
            ObjectKind::Pack => {
                let fan = name.get(..2).unwrap_or("00");
                format!("data/{fan}/{name}")
            }
            other => format!("{}/{name}", other.dir()),
        }
    }

    /// Inverse of [`ObjectKind::key`]: recover kind and name from a key.
    pub fn parse_key(key: &str) -> Option<(ObjectKind, String)> {
        if key == "config" {
            return Some((ObjectKind::Config, key.to_string()));
        }
        let (dir, rest) = key.split_once('/')?;
        let kind = match dir {
            "keys" => ObjectKind::Key,
            "data" => ObjectKind::Pack,
            "index" => ObjectKind::Index,
            "snapshots" => ObjectKind::Snapshot,
            "locks" => ObjectKind::Lock,
            "audit" => ObjectKind::Audit,
            "wal" => ObjectKind::Wal,
            "lost+found" => ObjectKind::LostFound,
            "forgotten" => ObjectKind::Tombstone,
            "verified" => ObjectKind::Verification,
            "drills" => ObjectKind::Drill,
            "signers" => ObjectKind::Signer,
            "holds" => ObjectKind::Hold,
            "erasures" => ObjectKind::Erasure,
            _ => return None,
        };
        let name = if kind == ObjectKind::Pack {
            rest.split_once('/')?.1
        } else {
            rest
        };
        if name.is_empty() || name.contains('/') {
            return None;
        }
        Some((kind, name.to_string()))
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ObjectKind::Config => "config",
            ObjectKind::Key => "key",
            ObjectKind::Pack => "pack",
            ObjectKind::Index => "index",
            ObjectKind::Snapshot => "snapshot",
            ObjectKind::Lock => "lock",
            ObjectKind::Audit => "audit",
            ObjectKind::Wal => "wal",
            ObjectKind::LostFound => "lost+found",
            ObjectKind::Tombstone => "tombstone",
            ObjectKind::Verification => "verification",
            ObjectKind::Drill => "drill",
            ObjectKind::Signer => "signer",
            ObjectKind::Hold => "hold",
            ObjectKind::Erasure => "erasure",
        };
        f.write_str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        for kind in ObjectKind::ALL {
            let name = if kind == ObjectKind::Config {
                "config"
            } else {
                "ab12cd"
            };
            let key = kind.key(name);
            assert_eq!(ObjectKind::parse_key(&key), Some((kind, name.to_string())));
        }
        assert_eq!(ObjectKind::Pack.key("ab12"), "data/ab/ab12");
        assert_eq!(ObjectKind::parse_key("data/ab"), None);
        assert_eq!(ObjectKind::parse_key("junk/x"), None);
    }
}
