//! Trees: one directory listing per blob.
//!
//! A tree is JSON (compressed and encrypted like any blob) listing the
//! directory's entries sorted by name bytes. Directories point at their
//! subtree blob, files at the ordered list of their data blobs. Names are
//! stored as strings when they are UTF-8 and as hex bytes (`name_hex`)
//! otherwise, so names that are not UTF-8 survive a round trip exactly.
//!
//! Tree version 2 (see `docs/format.md`) added extended attributes (which
//! carry POSIX ACLs and file capabilities) and the `sparse` flag of files.
//! Both fields are optional, so version-1 trees (no `version` field) read
//! unchanged; a tree from a newer format is refused rather than read with
//! fields silently dropped.

use serde::{Deserialize, Serialize};

use crate::id::Id;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Chardev,
    Blockdev,
    Socket,
}

/// Seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Timestamp {
    pub sec: i64,
    pub nsec: u32,
}

/// One extended attribute: its full name (`user.x`, `security.capability`,
/// `system.posix_acl_access`, ...) and its raw value, stored as hex because
/// values are arbitrary bytes (binary ACLs, capability sets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    #[serde(flatten)]
    pub name: NodeName,
    #[serde(with = "hex_bytes")]
    pub value: Vec<u8>,
}

/// Serde helper: bytes as a lowercase hex string.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let h = String::deserialize(d)?;
        hex::decode(h).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    #[serde(flatten)]
    pub name: NodeName,
    pub kind: NodeKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default)]
    pub size: u64,
    pub mtime: Timestamp,
    #[serde(default)]
    pub ctime: Timestamp,
    #[serde(default)]
    pub inode: u64,
    #[serde(default)]
    pub dev: u64,
    #[serde(default)]
    pub nlink: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<u64>,
    /// Data blobs of a file, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<Id>,
    /// Tree blob of a directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<Id>,
    /// Target of a symlink (bytes; hex when not UTF-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<NodeName>,
    /// Extended attributes (tree version 2), sorted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<Xattr>,
    /// The file had fewer blocks allocated than its size at backup (it had
    /// holes), so a restore writes its zero runs as holes (tree version 2).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sparse: bool,
}

/// A file name as raw bytes, serialised readably when possible.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeName(pub Vec<u8>);

#[derive(Serialize, Deserialize)]
struct NameRepr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name_hex: Option<String>,
}

impl Serialize for NodeName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let repr = match std::str::from_utf8(&self.0) {
            Ok(v) => NameRepr {
                name: Some(v.to_string()),
                name_hex: None,
            },
            Err(_) => NameRepr {
                name: None,
                name_hex: Some(hex::encode(&self.0)),
            },
        };
        repr.serialize(s)
    }
}

impl<'de> Deserialize<'de> for NodeName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = NameRepr::deserialize(d)?;
        match (r.name, r.name_hex) {
            (Some(n), _) => Ok(NodeName(n.into_bytes())),
            (None, Some(h)) => hex::decode(h)
                .map(NodeName)
                .map_err(serde::de::Error::custom),
            (None, None) => Err(serde::de::Error::custom("node without a name")),
        }
    }
}

impl NodeName {
    pub fn display(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

/// The tree format this code writes, and the newest it reads.
pub const TREE_VERSION: u32 = 2;

fn tree_version_1() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// Absent in version-1 trees.
    #[serde(default = "tree_version_1")]
    pub version: u32,
    pub nodes: Vec<Node>,
}

impl Default for Tree {
    fn default() -> Tree {
        Tree::new(Vec::new())
    }
}

impl Tree {
    /// A tree of the current version.
    pub fn new(nodes: Vec<Node>) -> Tree {
        Tree {
            version: TREE_VERSION,
            nodes,
        }
    }

    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.0.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }

    pub fn sort(&mut self) {
        self.nodes.sort_by(|a, b| a.name.0.cmp(&b.name.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_utf8_names_round_trip() {
        let node = Node {
            name: NodeName(vec![0x66, 0xff, 0x6f]),
            kind: NodeKind::File,
            mode: 0o644,
            uid: 1,
            gid: 2,
            user: None,
            group: None,
            size: 3,
            mtime: Timestamp { sec: 5, nsec: 6 },
            ctime: Timestamp::default(),
            inode: 7,
            dev: 8,
            nlink: 1,
            rdev: None,
            content: vec![Id([1; 32])],
            subtree: None,
            target: None,
            xattrs: vec![Xattr {
                name: NodeName(b"user.\xffbin".to_vec()),
                value: vec![0, 1, 2, 0xff],
            }],
            sparse: true,
        };
        let mut t = Tree::new(vec![node]);
        t.sort();
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.contains("name_hex"));
        let back: Tree = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
        assert!(back.find(&[0x66, 0xff, 0x6f]).is_some());
    }

    #[test]
    fn version_1_trees_read_without_the_new_fields() {
        let v1 = r#"{"nodes":[{"name":"a","kind":"file","mode":420,"uid":0,"gid":0,
            "size":0,"mtime":{"sec":1,"nsec":0}}]}"#;
        let t: Tree = serde_json::from_str(v1).unwrap();
        assert_eq!(t.version, 1);
        assert!(t.nodes[0].xattrs.is_empty());
        assert!(!t.nodes[0].sparse);
        let v2 = serde_json::to_string(&Tree::default()).unwrap();
        assert!(v2.contains("\"version\":2"), "{v2}");
    }
}
