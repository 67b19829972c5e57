//! Walking a snapshot's tree: listings and path lookups.
//!
//! Paths inside a snapshot are absolute-style byte strings (`/srv/docs/a.pdf`);
//! they are bytes because names need not be UTF-8. A path without a leading
//! slash is taken from the snapshot root; [`resolve`] also tries a relative
//! path against the current directory, as `backup` does.

use holdfast_repo::tree::{Node, NodeKind};
use holdfast_repo::{Id, Repository};
use rayon::prelude::*;

use crate::error::{SourceError, SourceResult};

/// Visit every node under `root` (depth-first, in name order) whose path is
/// inside `prefix` (`b"/"` for everything). The visitor gets the node's path.
pub fn walk(
    repo: &Repository,
    root: Id,
    prefix: &[u8],
    visit: &mut dyn FnMut(&[u8], &Node) -> SourceResult<()>,
) -> SourceResult<()> {
    let prefix = normalize(prefix);
    walk_tree(repo, root, b"", trim_slash(&prefix), visit)
}

/// Like [`walk`], but maps every visited node to a `T` on the current rayon
/// pool: subtrees are loaded (fetched, decrypted, parsed) and mapped in
/// parallel, and the results come back in `walk`'s order (depth-first, in
/// name order), so a caller sees exactly the nodes `walk` would visit. A
/// restore's plan uses it, so that loading a million files' trees is not
/// one thread's work.
pub fn walk_map<T, F>(repo: &Repository, root: Id, prefix: &[u8], map: &F) -> SourceResult<Vec<T>>
where
    T: Send,
    F: Fn(&[u8], &Node) -> SourceResult<T> + Sync,
{
    let prefix = normalize(prefix);
    let mut out = Vec::new();
    map_tree(repo, root, b"", trim_slash(&prefix), map, &mut out)?;
    Ok(out)
}

fn map_tree<T, F>(
    repo: &Repository,
    tree: Id,
    base: &[u8],
    prefix: &[u8],
    map: &F,
    out: &mut Vec<T>,
) -> SourceResult<()>
where
    T: Send,
    F: Fn(&[u8], &Node) -> SourceResult<T> + Sync,
{
    let t = repo.load_tree(&tree)?;
    let parts: Vec<Vec<T>> = t
        .nodes
        .par_iter()
        .map(|n| {
            let mut v = Vec::new();
            let mut path = base.to_vec();
            path.push(b'/');
            path.extend_from_slice(&n.name.0);
            let (inside, ancestor) = relation(&path, prefix);
            if inside {
                v.push(map(&path, n)?);
            }
            if (inside || ancestor) && n.kind == NodeKind::Dir {
                if let Some(sub) = n.subtree {
                    map_tree(repo, sub, &path, prefix, map, &mut v)?;
                }
            }
            Ok(v)
        })
        .collect::<SourceResult<_>>()?;
    for p in parts {
        out.extend(p);
    }
    Ok(())
}

/// `path` as an absolute snapshot path: a leading `/` added if missing,
/// empty and `.` components dropped, `..` resolved lexically (never above
/// the root), no trailing slash (the root is `/`).
pub fn normalize(path: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in path.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return b"/".to_vec();
    }
    let mut out = Vec::with_capacity(path.len() + 1);
    for p in parts {
        out.push(b'/');
        out.extend_from_slice(p);
    }
    out
}

/// Resolve a path given by the user to the absolute path of a node in the
/// snapshot. An absolute path is used as is. A relative one is tried first
/// against `cwd` (backup stores `docs` given in `/srv` as `/srv/docs`), then
/// from the snapshot root (`srv/docs`); when both name different nodes the
/// path is ambiguous and refused rather than guessed.
pub fn resolve(repo: &Repository, root: Id, path: &[u8], cwd: &[u8]) -> SourceResult<Vec<u8>> {
    let from_root = normalize(path);
    if path.starts_with(b"/") {
        if !exists(repo, root, &from_root)? {
            return Err(SourceError::NotInSnapshot(
                String::from_utf8_lossy(&from_root).into_owned(),
            ));
        }
        return Ok(from_root);
    }
    let mut joined = cwd.to_vec();
    joined.push(b'/');
    joined.extend_from_slice(path);
    let from_cwd = normalize(&joined);
    let in_cwd = exists(repo, root, &from_cwd)?;
    let in_root = from_root != from_cwd && exists(repo, root, &from_root)?;
    let lossy = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
    match (in_cwd, in_root) {
        (true, false) => Ok(from_cwd),
        (false, true) => Ok(from_root),
        (true, true) => Err(SourceError::AmbiguousPath {
            given: lossy(path),
            from_cwd: lossy(&from_cwd),
            from_root: lossy(&from_root),
        }),
        (false, false) => Err(SourceError::NotInSnapshot(if from_root == from_cwd {
            lossy(&from_root)
        } else {
            format!(
                "{} (neither {} nor {})",
                lossy(path),
                lossy(&from_cwd),
                lossy(&from_root)
            )
        })),
    }
}

/// Does `path` name a node? Only "not in the snapshot" means no; a
/// repository error is an error.
fn exists(repo: &Repository, root: Id, path: &[u8]) -> SourceResult<bool> {
    if path == b"/" {
        return Ok(true);
    }
    match lookup(repo, root, path) {
        Ok(_) => Ok(true),
        Err(SourceError::NotInSnapshot(_)) => Ok(false),
        Err(e) => Err(e),
    }
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
    let path = &normalize(path);
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

    #[test]
    fn normalize_makes_absolute_snapshot_paths() {
        for (given, want) in [
            (&b"docs/a"[..], &b"/docs/a"[..]),
            (b"/srv//docs/./a/", b"/srv/docs/a"),
            (b"srv/x/../docs", b"/srv/docs"),
            (b"../../etc", b"/etc"),
            (b"", b"/"),
            (b".", b"/"),
            (b"/", b"/"),
            (b"a\n\xff", b"/a\n\xff"),
        ] {
            assert_eq!(
                normalize(given),
                want,
                "{:?}",
                String::from_utf8_lossy(given)
            );
        }
    }
}
