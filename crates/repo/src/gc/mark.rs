//! Marking: every blob reachable from the roots (snapshots, by walking
//! their trees, and WAL manifests, by their blob lists), and the check
//! that every snapshot a legal hold names is among them.
//!
//! Trees are content-addressed, so a tree met twice has the same subtree:
//! each is loaded once, whatever the number of snapshots sharing it. The
//! marker keeps the trees it has walked, so the sweep can walk the roots
//! written since the mark and load only their new trees.

use std::collections::HashSet;

use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::repository::Repository;
use crate::walmanifest::WalManifest;

/// Blobs reachable from the roots walked so far.
#[derive(Debug, Default)]
pub struct Marker {
    /// Every reachable blob: data blobs, and the tree blobs themselves.
    live: HashSet<Id>,
    /// Trees already walked (a subset of `live`).
    walked: HashSet<Id>,
    /// Trees loaded from storage (a measure of the walk's cost).
    pub trees_loaded: u64,
}

impl Marker {
    pub fn new() -> Marker {
        Marker::default()
    }

    /// Is this blob reachable from a root walked so far?
    pub fn is_live(&self, id: &Id) -> bool {
        self.live.contains(id)
    }

    /// Reachable blobs.
    pub fn live(&self) -> &HashSet<Id> {
        &self.live
    }

    /// Mark everything under the tree `root` of snapshot `snapshot`; calls
    /// `marked` with each blob that was not live before. A tree that cannot
    /// be read stops the mark: what it references is unknown, so nothing
    /// may be deleted on its account.
    pub fn mark_tree(
        &mut self,
        repo: &Repository,
        snapshot: &str,
        root: Id,
        marked: &mut dyn FnMut(&Id),
    ) -> Result<()> {
        let mut stack = vec![root];
        while let Some(tree_id) = stack.pop() {
            if !self.walked.insert(tree_id) {
                continue;
            }
            if self.live.insert(tree_id) {
                marked(&tree_id);
            }
            let tree = repo.load_tree(&tree_id).map_err(|e| {
                RepoError::Invalid(format!(
                    "snapshot {snapshot}: tree {} cannot be read ({e}); garbage collection \
                     will not delete anything while a snapshot's contents are unknown \
                     (run `holdfast check`)",
                    tree_id.short()
                ))
            })?;
            self.trees_loaded += 1;
            for node in &tree.nodes {
                if let Some(sub) = node.subtree {
                    stack.push(sub);
                }
                for b in &node.content {
                    if self.live.insert(*b) {
                        marked(b);
                    }
                }
            }
        }
        Ok(())
    }

    /// Mark the blobs of a WAL manifest.
    pub fn mark_wal(&mut self, m: &WalManifest, marked: &mut dyn FnMut(&Id)) {
        for b in &m.blobs {
            if self.live.insert(*b) {
                marked(b);
            }
        }
    }
}

/// Legal holds are roots too. A held snapshot is normally still stored (a
/// policy never purges it) and is walked like any other; this refuses the
/// run, before anything is deleted, when a hold names a snapshot whose
/// manifest is gone (its data would otherwise be swept as garbage) or a
/// hold record cannot be read (what it holds is unknown).
pub(crate) fn check_holds<'a>(
    repo: &Repository,
    snapshots: impl Iterator<Item = &'a str>,
) -> Result<()> {
    let records = repo.holds()?;
    if let Some(name) = records.unknown_holds.first() {
        let why = records
            .unreadable
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, w)| w.as_str())
            .unwrap_or("unreadable");
        return Err(RepoError::corrupt(
            holdfast_storage::ObjectKind::Hold.key(name),
            format!("cannot be read ({why}); garbage collection deletes nothing while what a hold protects is unknown"),
        ));
    }
    let present: HashSet<&str> = snapshots.collect();
    for hold in records.active() {
        if let crate::hold::HoldSelector::Snapshots { snapshots } = &hold.selector {
            if let Some(gone) = snapshots
                .iter()
                .find(|s| !present.contains(s.to_hex().as_str()))
            {
                return Err(RepoError::corrupt(
                    format!("snapshots/{}", gone.to_hex()),
                    format!(
                        "is held by {} ({}) but its manifest is missing; garbage collection deletes nothing while a held snapshot's data cannot be told apart from garbage (see `holdfast check`)",
                        hold.id, hold.case
                    ),
                ));
            }
        }
    }
    Ok(())
}
