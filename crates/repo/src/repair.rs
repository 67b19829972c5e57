//! Repairs that rebuild metadata from data.
//!
//! `repair_index` reads every pack's own trailer and writes a new index
//! object for every pack that no readable index covers, then removes index
//! objects that cannot be read (their content is now covered). Packs are the
//! source of truth; nothing in them is changed.

use std::collections::HashSet;

use holdfast_storage::ObjectKind;
use serde::Serialize;

use crate::error::Result;
use crate::id::Id;
use crate::pack::{self, PackInfo};
use crate::repository::Repository;

#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairReport {
    pub packs_scanned: usize,
    pub packs_reindexed: usize,
    pub unreadable_packs: Vec<String>,
    pub removed_index_objects: Vec<String>,
}

pub fn repair_index(repo: &Repository) -> Result<RepairReport> {
    repo.load_index()?;
    let index = repo.index();
    let indexed: HashSet<Id> = index.packs().collect();
    let mut report = RepairReport::default();
    let stored = repo.block_on(repo.backend().list(ObjectKind::Pack))?;
    let mut found: Vec<PackInfo> = Vec::new();
    for m in stored {
        let Ok(id) = m.name.parse::<Id>() else {
            continue;
        };
        if indexed.contains(&id) {
            continue;
        }
        report.packs_scanned += 1;
        let what = format!("pack {}", m.name);
        let info = repo
            .block_on(repo.backend().get(ObjectKind::Pack, &m.name, None))
            .map_err(crate::RepoError::from)
            .and_then(|b| pack::read_info(repo.key(), &b, &what));
        match info {
            Ok(i) => found.push(i),
            Err(e) => report.unreadable_packs.push(format!("{what}: {e}")),
        }
    }
    report.packs_reindexed = found.len();
    for batch in found.chunks(256) {
        repo.write_index(batch)?;
    }
    for (name, _) in repo.index_problems().corrupt {
        repo.block_on(repo.backend().delete(ObjectKind::Index, &name))?;
        report.removed_index_objects.push(name);
    }
    repo.load_index()?;
    Ok(report)
}
