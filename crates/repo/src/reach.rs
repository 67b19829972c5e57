//! Reachability: which blobs and packs a set of roots (snapshots, WAL
//! manifests) needs.
//!
//! A [`Walker`] follows snapshots to their trees and trees to their data
//! blobs, and maps every blob to the pack the index places it in. Each tree
//! is loaded once per walker however many snapshots share it (unchanged
//! directories are shared by every snapshot of a source), so walking a
//! whole history costs about one walk of its distinct trees. Memory is the
//! set of tree ids seen (32 bytes each, plus the set's overhead) and what
//! the caller keeps from the visits: [`Walker::reach`] keeps only pack ids,
//! not the (far more numerous) data blob ids. Callers that need blobs (a
//! repack deciding which blobs of a pack are live) pass their own visitor.
//!
//! The index must be loaded after the roots were listed, as `check` does:
//! writers store packs, then index objects, then the snapshot or manifest,
//! so every blob a listed root names is then indexed. A blob that is not
//! is damage, and the walk stops with [`RepoError::MissingBlob`] naming it
//! and its root: a caller deciding what may go cold (or be deleted) must
//! not guess.

use std::collections::HashSet;
use std::sync::Arc;

use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::index::{BlobLocation, Index};
use crate::pack::BlobType;
use crate::repository::Repository;
use crate::snapshot::SnapshotEntry;
use crate::walmanifest::NamedManifest;

/// The packs a set of roots needs, by what they hold.
#[derive(Debug, Clone, Default)]
pub struct Reach {
    /// Packs holding at least one reachable data blob.
    pub data_packs: HashSet<Id>,
    /// Packs holding at least one reachable tree.
    pub tree_packs: HashSet<Id>,
    /// Distinct trees walked.
    pub trees: u64,
    /// Data blob references followed (a blob shared by many files or
    /// snapshots counts each time).
    pub data_refs: u64,
}

/// Walks roots, each tree once (see the module docs).
pub struct Walker<'r> {
    repo: &'r Repository,
    index: Arc<Index>,
    seen: HashSet<Id>,
}

impl<'r> Walker<'r> {
    /// A walker over the index `repo` has loaded now.
    pub fn new(repo: &'r Repository) -> Walker<'r> {
        Walker {
            repo,
            index: repo.index(),
            seen: HashSet::new(),
        }
    }

    /// Distinct trees walked so far.
    pub fn trees_seen(&self) -> u64 {
        self.seen.len() as u64
    }

    fn locate(&self, blob: &Id, root: &str) -> Result<BlobLocation> {
        self.index.get(blob).ok_or_else(|| RepoError::MissingBlob {
            blob: blob.to_hex(),
            referenced_by: root.to_string(),
        })
    }

    /// Walk the tree `root` and every tree under it not walked before by
    /// this walker. `visit` sees every tree blob once and every data blob
    /// reference of the trees walked, with its location. `what` names the
    /// root in errors (e.g. `snapshot 1a2b3c4d`).
    pub fn walk_tree(
        &mut self,
        root: Id,
        what: &str,
        visit: &mut dyn FnMut(&Id, &BlobLocation),
    ) -> Result<()> {
        let mut stack = vec![root];
        while let Some(tree_id) = stack.pop() {
            if !self.seen.insert(tree_id) {
                continue;
            }
            let loc = self.locate(&tree_id, what)?;
            visit(&tree_id, &loc);
            let tree = self.repo.load_tree(&tree_id)?;
            for node in &tree.nodes {
                if let Some(sub) = node.subtree {
                    if !self.seen.contains(&sub) {
                        stack.push(sub);
                    }
                }
                for b in &node.content {
                    let loc = self.locate(b, what)?;
                    visit(b, &loc);
                }
            }
        }
        Ok(())
    }

    /// Visit blobs named directly by a root (a WAL manifest's).
    pub fn visit_blobs(
        &mut self,
        blobs: &[Id],
        what: &str,
        visit: &mut dyn FnMut(&Id, &BlobLocation),
    ) -> Result<()> {
        for b in blobs {
            let loc = self.locate(b, what)?;
            visit(b, &loc);
        }
        Ok(())
    }

    /// The packs `snapshots` and `manifests` need (see [`Reach`]).
    pub fn reach<'a>(
        &mut self,
        snapshots: impl IntoIterator<Item = &'a SnapshotEntry>,
        manifests: impl IntoIterator<Item = &'a NamedManifest>,
    ) -> Result<Reach> {
        let mut reach = Reach::default();
        let trees_before = self.trees_seen();
        let mut record = |_: &Id, loc: &BlobLocation| match loc.blob_type {
            BlobType::Tree => {
                reach.tree_packs.insert(loc.pack);
            }
            BlobType::Data => {
                reach.data_refs += 1;
                reach.data_packs.insert(loc.pack);
            }
        };
        for s in snapshots {
            let what = format!("snapshot {}", s.id.short());
            self.walk_tree(s.snapshot.tree, &what, &mut record)?;
        }
        for (name, m) in manifests {
            let what = format!("WAL manifest wal/{name}");
            self.visit_blobs(&m.blobs, &what, &mut record)?;
        }
        reach.trees = self.trees_seen() - trees_before;
        Ok(reach)
    }
}

/// The packs `snapshots` and `manifests` need, walking each tree once.
pub fn reachable<'a>(
    repo: &Repository,
    snapshots: impl IntoIterator<Item = &'a SnapshotEntry>,
    manifests: impl IntoIterator<Item = &'a NamedManifest>,
) -> Result<Reach> {
    Walker::new(repo).reach(snapshots, manifests)
}
