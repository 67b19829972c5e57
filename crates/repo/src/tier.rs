//! Storage tiers of packs: which storage class each pack is in, and moving
//! packs into another class (archival to a cold tier).
//!
//! A move changes where the store keeps a pack's bytes and nothing else:
//! the name, the bytes and every index entry stay valid (see
//! [`holdfast_storage::Backend::set_storage_class`]), so no repository
//! object is written and a crash between two moves leaves a repository
//! that a second run finishes. Only data packs are ever moved; packs of
//! trees stay in the metadata class so that listing, planning and `ls`
//! never need a retrieval (the caller chooses the packs: see
//! `holdfast_ops::archive`).

use std::collections::HashMap;

use holdfast_storage::{ClassChange, ObjectKind, StorageError};
use tokio::task::JoinSet;

use crate::error::Result;
use crate::id::Id;
use crate::repository::Repository;

/// What happened to one pack of [`Repository::move_packs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackMove {
    /// What the store did (moved, or already in the class).
    Changed(ClassChange),
    /// The pack was no longer stored: a garbage collection running beside
    /// repacked it (its blobs are in a new pack, which a later run moves).
    Gone,
    /// The pack is in another archival class and the store moves it only
    /// once retrieved: left where it is (cold already).
    StillArchived,
}

/// A stored pack's size and storage class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackClass {
    pub size: u64,
    /// As the store names it; `None` when it does not say.
    pub class: Option<String>,
}

impl Repository {
    /// Every stored pack with its size and storage class, from one listing
    /// (no request per pack). Objects under `data/` whose names are not
    /// pack ids are left out.
    pub fn pack_classes(&self) -> Result<HashMap<Id, PackClass>> {
        let listed = self.block_on(self.backend().list_classes(ObjectKind::Pack))?;
        Ok(listed
            .into_iter()
            .filter_map(|o| {
                let id = o.meta.name.parse::<Id>().ok()?;
                Some((
                    id,
                    PackClass {
                        size: o.meta.size,
                        class: o.storage_class,
                    },
                ))
            })
            .collect())
    }

    /// Move `packs` into the storage class `class`, as many at once as the
    /// backend serves well. `progress` is told (done, total) as moves
    /// finish. Returns what each move did, in the order they finished; a
    /// pack no longer stored ([`PackMove::Gone`]) or that must be retrieved
    /// before it can move ([`PackMove::StillArchived`]) is not a failure. The
    /// first failure stops the run once the moves in flight are done and
    /// is returned; moves that finished stay done (a later run skips them).
    pub fn move_packs(
        &self,
        packs: &[Id],
        class: &str,
        progress: &dyn Fn(u64, u64),
    ) -> Result<Vec<(Id, PackMove)>> {
        let total = packs.len() as u64;
        let par = self.capabilities().parallelism.max(1);
        let backend = self.backend().clone();
        let location = self.location();
        let run = async {
            let mut out = Vec::with_capacity(packs.len());
            let mut failed: Option<StorageError> = None;
            let mut queue = packs.iter().copied();
            let mut tasks = JoinSet::new();
            loop {
                while failed.is_none() && tasks.len() < par {
                    let Some(id) = queue.next() else { break };
                    let b = backend.clone();
                    let class = class.to_string();
                    tasks.spawn(async move {
                        let r = b
                            .set_storage_class(ObjectKind::Pack, &id.to_hex(), &class)
                            .await;
                        (id, r)
                    });
                }
                let Some(joined) = tasks.join_next().await else {
                    break;
                };
                match joined {
                    Ok((id, Ok(change))) => {
                        out.push((id, PackMove::Changed(change)));
                        progress(out.len() as u64, total);
                    }
                    Ok((id, Err(StorageError::NotFound { .. }))) => {
                        out.push((id, PackMove::Gone));
                        progress(out.len() as u64, total);
                    }
                    Ok((id, Err(StorageError::Archived { .. }))) => {
                        out.push((id, PackMove::StillArchived));
                        progress(out.len() as u64, total);
                    }
                    Ok((_, Err(e))) => {
                        failed.get_or_insert(e);
                    }
                    Err(e) => {
                        failed.get_or_insert(StorageError::Other {
                            backend: location.clone(),
                            detail: format!("a storage class change task failed: {e}"),
                        });
                    }
                }
            }
            match failed {
                Some(e) => Err(e),
                None => Ok(out),
            }
        };
        Ok(self.block_on(run)?)
    }
}
