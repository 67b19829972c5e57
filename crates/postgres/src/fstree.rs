//! Snapshot trees of files we produce (dumps, backup labels, WAL) or walk
//! (data directories). Restores lay trees out through
//! `holdfast_sources::restore`, the same engine as document restores.

use std::fs;

use holdfast_repo::pack::BlobType;
use holdfast_repo::tree::{Node, NodeKind, NodeName, Timestamp, Tree};
use holdfast_repo::writer::BlobWriter;
use holdfast_repo::Id;
use holdfast_sources::meta::{self, NameCache};

use crate::error::{PgError, Result};

/// A node for a file we generated (a dump), owned by nobody in particular.
pub(crate) fn generated_file(name: &str, size: u64, content: Vec<Id>) -> Node {
    let now = chrono::Utc::now();
    let ts = Timestamp {
        sec: now.timestamp(),
        nsec: now.timestamp_subsec_nanos(),
    };
    Node {
        name: NodeName(name.as_bytes().to_vec()),
        kind: NodeKind::File,
        mode: 0o600,
        uid: 0,
        gid: 0,
        user: None,
        group: None,
        size,
        mtime: ts,
        ctime: ts,
        inode: 0,
        dev: 0,
        nlink: 1,
        rdev: None,
        content,
        subtree: None,
        target: None,
        xattrs: Vec::new(),
        sparse: false,
    }
}

/// A node describing a walked filesystem entry (content/subtree filled in
/// later), built by the filesystem source's own `lstat` → node mapping. The
/// walk follows tablespace and `pg_wal` links, so `md` may describe a link's
/// target: the caller says what the entry is.
pub(crate) fn node_from_meta(name: &[u8], kind: NodeKind, md: &fs::Metadata) -> Node {
    static NAMES: std::sync::OnceLock<NameCache> = std::sync::OnceLock::new();
    let mut node = meta::node_from_metadata(name, md, NAMES.get_or_init(NameCache::default));
    node.kind = kind;
    if kind != NodeKind::File {
        node.size = 0;
    }
    node
}

/// Sort and store a tree; returns its blob id.
pub(crate) fn save_tree(writer: &BlobWriter, mut tree: Tree) -> Result<Id> {
    tree.sort();
    let json = serde_json::to_vec(&tree)
        .map_err(|e| PgError::Invalid(format!("cannot serialise a tree: {e}")))?;
    Ok(writer.save(BlobType::Tree, &json)?)
}

/// What a restore wrote.
#[derive(Debug, Clone, Copy, Default)]
pub struct LayOutStats {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
}

pub(crate) fn effective_uid_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
