//! Differences between two snapshots.
//!
//! Subtrees with the same id are identical and skipped without loading, so a
//! diff of two snapshots of a large, mostly unchanged tree is cheap.

use holdfast_repo::tree::{Node, NodeKind, Tree};
use holdfast_repo::{Id, Repository};
use serde::Serialize;

use crate::error::SourceResult;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Added,
    Removed,
    /// Content changed.
    Modified,
    /// Only metadata (mode, owner, times) changed.
    Metadata,
    /// Kind changed (a file became a directory, ...).
    TypeChanged,
}

impl Change {
    pub fn symbol(&self) -> char {
        match self {
            Change::Added => '+',
            Change::Removed => '-',
            Change::Modified => 'M',
            Change::Metadata => 'U',
            Change::TypeChanged => 'T',
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DiffEntry {
    pub change: Change,
    pub path: String,
}

pub fn diff(repo: &Repository, a: Id, b: Id) -> SourceResult<Vec<DiffEntry>> {
    let mut out = Vec::new();
    diff_trees(repo, Some(a), Some(b), "", &mut out)?;
    Ok(out)
}

fn load(repo: &Repository, id: Option<Id>) -> SourceResult<Tree> {
    Ok(match id {
        Some(id) => repo.load_tree(&id)?,
        None => Tree::default(),
    })
}

fn diff_trees(
    repo: &Repository,
    a: Option<Id>,
    b: Option<Id>,
    base: &str,
    out: &mut Vec<DiffEntry>,
) -> SourceResult<()> {
    if a == b {
        return Ok(());
    }
    let (ta, tb) = (load(repo, a)?, load(repo, b)?);
    let (mut i, mut j) = (0, 0);
    while i < ta.nodes.len() || j < tb.nodes.len() {
        let na = ta.nodes.get(i);
        let nb = tb.nodes.get(j);
        let ord = match (na, nb) {
            (Some(x), Some(y)) => x.name.0.cmp(&y.name.0),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match ord {
            std::cmp::Ordering::Less => {
                if let Some(x) = na {
                    removed_or_added(repo, x, base, Change::Removed, out)?;
                }
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                if let Some(y) = nb {
                    removed_or_added(repo, y, base, Change::Added, out)?;
                }
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                if let (Some(x), Some(y)) = (na, nb) {
                    let path = format!("{base}/{}", x.name.display());
                    if x.kind != y.kind {
                        out.push(DiffEntry {
                            change: Change::TypeChanged,
                            path: path.clone(),
                        });
                    } else if x.kind == NodeKind::Dir {
                        if meta_changed(x, y) {
                            out.push(DiffEntry {
                                change: Change::Metadata,
                                path: path.clone(),
                            });
                        }
                        diff_trees(repo, x.subtree, y.subtree, &path, out)?;
                    } else if x.content != y.content || x.target != y.target {
                        out.push(DiffEntry {
                            change: Change::Modified,
                            path,
                        });
                    } else if meta_changed(x, y) {
                        out.push(DiffEntry {
                            change: Change::Metadata,
                            path,
                        });
                    }
                }
                i += 1;
                j += 1;
            }
        }
    }
    Ok(())
}

fn meta_changed(x: &Node, y: &Node) -> bool {
    x.mode != y.mode || x.uid != y.uid || x.gid != y.gid || x.mtime != y.mtime
}

fn removed_or_added(
    repo: &Repository,
    n: &Node,
    base: &str,
    change: Change,
    out: &mut Vec<DiffEntry>,
) -> SourceResult<()> {
    let path = format!("{base}/{}", n.name.display());
    out.push(DiffEntry {
        change,
        path: path.clone(),
    });
    if let Some(sub) = n.subtree {
        let t = repo.load_tree(&sub)?;
        for c in &t.nodes {
            removed_or_added(repo, c, &path, change, out)?;
        }
    }
    Ok(())
}
