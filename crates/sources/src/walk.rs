//! Walking a snapshot's tree: listings and path lookups.
//!
//! Paths inside a snapshot are absolute-style byte strings (`/srv/docs/a.pdf`);
//! they are bytes because names need not be UTF-8.

use holdfast_repo::tree::{Node, NodeKind};
use holdfast_repo::{Id, Repository};

use crate::error::{SourceError, SourceResult};

/// Visit every node under `root` (depth-first, in name order) whose path is
/// inside `prefix` (`b"/"` for everything). The visitor gets the node's path.
pub fn walk(
    repo: &Repository,
    root: Id,
    prefix: &[u8],
    visit: &mut dyn FnMut(&[u8], &Node) -> SourceResult<()>,
) -> SourceResult<()> {
    let prefix = trim_slash(prefix);
    walk_tree(repo, root, b"", prefix, visit)
}

fn trim_slash(p: &[u8]) -> &[u8] {
    let mut p = p;
    while p.len() > 1 && p.ends_with(b"/") {
        p = &p[..p.len() - 1];
    }
    if p == b"/" {
        b""
    } else {
        p
    }
}

/// Is `path` inside `prefix`, or an ancestor of it (so the walk must descend)?
fn relation(path: &[u8], prefix: &[u8]) -> (bool, bool) {
    let inside = prefix.is_empty()
        || path == prefix
        || (path.starts_with(prefix) && path.get(prefix.len()) == Some(&b'/'));
    let ancestor = prefix.starts_with(path) && prefix.get(path.len()) == Some(&b'/');
    (inside, ancestor)
}

fn walk_tree(
    repo: &Repository,
    tree: Id,
    base: &[u8],
    prefix: &[u8],
    visit: &mut dyn FnMut(&[u8], &Node) -> SourceResult<()>,
) -> SourceResult<()> {
    let t = repo.load_tree(&tree)?;
    for n in &t.nodes {
        let mut path = base.to_vec();
        path.push(b'/');
        path.extend_from_slice(&n.name.0);
        let (inside, ancestor) = relation(&path, prefix);
        if inside {
            visit(&path, n)?;
        }
        if (inside || ancestor) && n.kind == NodeKind::Dir {
            if let Some(sub) = n.subtree {
                walk_tree(repo, sub, &path, prefix, visit)?;
            }
        }
    }
    Ok(())
}

/// Find the node at `path` in a snapshot tree.
pub fn lookup(repo: &Repository, root: Id, path: &[u8]) -> SourceResult<Node> {
    let path = trim_slash(path);
    let mut tree = repo.load_tree(&root)?;
    let parts: Vec<&[u8]> = path
        .split(|b| *b == b'/')
        .filter(|p| !p.is_empty())
        .collect();
    for (i, part) in parts.iter().enumerate() {
        let node = tree.find(part).cloned().ok_or_else(|| {
            SourceError::NotInSnapshot(String::from_utf8_lossy(path).into_owned())
        })?;
        if i + 1 == parts.len() {
            return Ok(node);
        }
        match node.subtree {
            Some(sub) => tree = repo.load_tree(&sub)?,
            None => {
                return Err(SourceError::NotInSnapshot(
                    String::from_utf8_lossy(path).into_owned(),
                ))
            }
        }
    }
    Err(SourceError::NotInSnapshot(
        String::from_utf8_lossy(path).into_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_relation() {
        assert_eq!(relation(b"/a", b""), (true, false));
        assert_eq!(relation(b"/a", b"/a/b"), (false, true));
        assert_eq!(relation(b"/a/b/c", b"/a/b"), (true, false));
        assert_eq!(relation(b"/a/bc", b"/a/b"), (false, false));
        assert_eq!(trim_slash(b"/a/"), b"/a");
        assert_eq!(trim_slash(b"/"), b"");
    }
}
