//! Archival to a cold tier: the data packs that only archived snapshots
//! need move into an archival storage class (S3 `GLACIER`,
//! `DEEP_ARCHIVE`, ...), where they cost a fraction and need a retrieval
//! before they are read.
//!
//! Which packs: every snapshot not being archived, and every WAL manifest,
//! is a hot root; the archived snapshots are cold roots. A data pack moves
//! when a cold root needs it and no hot root does (a pack shared with a hot
//! snapshot stays hot, whole: packs are the unit of storage). Packs
//! holding any tree never move: metadata stays hot, so listing, planning, `ls` and
//! `diff` of an archived snapshot need no retrieval. Snapshots, index
//! objects and WAL manifests are never touched.
//!
//! Safety: a move keeps the pack's name and bytes (see
//! `holdfast_storage::Backend::set_storage_class`), so nothing in the
//! repository changes meaning and no lock is needed; a backup running
//! meanwhile that deduplicates against a pack being moved still restores
//! (its restore waits for a retrieval). Roots are listed before the index
//! is loaded, as `check` does, so every blob of a listed root is indexed;
//! an unreadable snapshot or manifest stops the run (what it needs cannot
//! be known, and guessing could send a hot snapshot's data cold).
//!
//! Idempotent and resumable: packs already in the class (as the pack
//! listing reports, no request per pack) are skipped, so a run that was
//! interrupted is finished by running it again.

use std::collections::{BTreeSet, HashSet};
use std::time::Instant;

use holdfast_repo::pack::BlobType;
use holdfast_repo::tier::PackMove;
use holdfast_repo::{Id, Repository};
use holdfast_storage::ClassChange;
use serde::Serialize;

use crate::error::{OpsError, Result};

/// What to archive.
#[derive(Debug, Clone)]
pub struct ArchiveConfig {
    /// The snapshots that are to be cold: every snapshot the policy
    /// archives, including those archived by earlier runs (a snapshot left
    /// out counts as hot, and keeps the packs it shares hot).
    pub snapshots: BTreeSet<Id>,
    /// Snapshots about to be purged: neither hot nor cold (a dry run of
    /// `policy apply` previews the state after its purges). Empty when
    /// the purges are done (their snapshots are no longer listed).
    pub leaving: BTreeSet<Id>,
    /// The storage class to move into, as the store names it.
    pub class: String,
    /// Say what would move, move nothing.
    pub dry_run: bool,
}

/// What an archival run did (or, dry, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ArchiveReport {
    pub class: String,
    pub dry_run: bool,
    /// False when the repository's storage has no storage classes (a local
    /// directory): nothing moved, the snapshots stay where they are.
    pub supported: bool,
    /// Snapshots archived (cold roots).
    pub snapshots: usize,
    /// Snapshots staying hot.
    pub hot_snapshots: usize,
    /// WAL manifests (hot roots).
    pub wal_manifests: usize,
    /// Data packs moved into the class (dry run: that would move).
    pub packs_moved: u64,
    pub bytes_moved: u64,
    /// Data packs already in the class: skipped.
    pub packs_already: u64,
    pub bytes_already: u64,
    /// Data packs archived snapshots need that stay hot, because a hot
    /// snapshot or WAL manifest needs them too.
    pub packs_shared_hot: u64,
    pub bytes_shared_hot: u64,
    /// Data packs left in another archival class (the policy's class
    /// changed): the store moves them only after a retrieval.
    pub packs_other_cold_class: u64,
    pub bytes_other_cold_class: u64,
    /// Packs of trees (and packs holding a tree besides data) the archived
    /// snapshots need: metadata, always hot.
    pub metadata_packs: u64,
    /// Moved packs whose previous copy in the old class is still stored
    /// (an Object Lock retention keeps it until it ends).
    pub previous_copies_kept: u64,
    pub seconds: f64,
    pub warnings: Vec<String>,
}

/// Move to `cfg.class` the data packs that only the snapshots in
/// `cfg.snapshots` need (see the module docs). `progress` is told (done,
/// total) as packs move.
pub fn archive(
    repo: &Repository,
    cfg: &ArchiveConfig,
    progress: &dyn Fn(u64, u64),
) -> Result<ArchiveReport> {
    let started = Instant::now();
    let mut r = ArchiveReport {
        class: cfg.class.clone(),
        dry_run: cfg.dry_run,
        supported: repo.capabilities().storage_classes,
        snapshots: cfg.snapshots.len(),
        ..ArchiveReport::default()
    };
    if cfg.class.trim().is_empty() {
        return Err(OpsError::invalid(
            "no storage class to archive into (e.g. DEEP_ARCHIVE)",
        ));
    }
    if !r.supported {
        r.warnings.push(format!(
            "{} has no storage classes, so snapshots cannot be archived to {} there; \
             they stay where they are (use an s3:// repository for a cold tier)",
            repo.location(),
            cfg.class
        ));
        r.seconds = started.elapsed().as_secs_f64();
        return Ok(r);
    }
    if cfg.snapshots.is_empty() {
        r.seconds = started.elapsed().as_secs_f64();
        return Ok(r);
    }

    // Roots first, then the index (see the module docs).
    let (snaps, bad) = repo.snapshots_with_errors()?;
    if let Some((name, e)) = bad.first() {
        return Err(OpsError::invalid(format!(
            "snapshot {name} is unreadable ({e}): archival must know what every snapshot \
             needs; run `holdfast check` (and `holdfast repair snapshots` for a stray file)"
        )));
    }
    let (wals, bad_wals) = repo.wal_manifests()?;
    if let Some((name, e)) = bad_wals.first() {
        return Err(OpsError::invalid(format!(
            "WAL manifest wal/{name} is unreadable ({e}): archival must know what every WAL \
             file needs; run `holdfast check`"
        )));
    }
    let known: BTreeSet<Id> = snaps.iter().map(|s| s.id).collect();
    let unknown: Vec<String> = cfg
        .snapshots
        .iter()
        .filter(|id| !known.contains(id))
        .map(|id| id.short())
        .collect();
    if !unknown.is_empty() {
        return Err(OpsError::invalid(format!(
            "cannot archive snapshot(s) {}: not in the repository",
            unknown.join(", ")
        )));
    }
    repo.load_index()?;

    let (cold, hot): (Vec<_>, Vec<_>) = snaps
        .iter()
        .filter(|s| !cfg.leaving.contains(&s.id) || cfg.snapshots.contains(&s.id))
        .partition(|s| cfg.snapshots.contains(&s.id));
    r.hot_snapshots = hot.len();
    r.wal_manifests = wals.len();
    let hot_reach = holdfast_repo::reach::reachable(repo, hot, &wals)?;
    let cold_reach = holdfast_repo::reach::reachable(repo, cold, [])?;
    // Packs holding any tree (by every index record, not only the trees
    // walked: a backup in progress writes trees before its snapshot, and a
    // base backup's label is a data blob stored with its trees) are
    // metadata and stay hot.
    let holds_trees = repo.index().packs_holding(BlobType::Tree);
    let mut metadata: HashSet<Id> = cold_reach.tree_packs.clone();

    let stored = repo.pack_classes()?;
    let mut to_move: Vec<Id> = Vec::new();
    let mut sizes = std::collections::HashMap::new();
    let mut missing = 0u64;
    for pack in &cold_reach.data_packs {
        let Some(pc) = stored.get(pack) else {
            missing += 1;
            continue;
        };
        sizes.insert(*pack, pc.size);
        if holds_trees.contains(pack) || hot_reach.tree_packs.contains(pack) {
            metadata.insert(*pack);
        } else if hot_reach.data_packs.contains(pack) {
            r.packs_shared_hot += 1;
            r.bytes_shared_hot += pc.size;
        } else if pc.class.as_deref() == Some(cfg.class.as_str()) {
            r.packs_already += 1;
            r.bytes_already += pc.size;
        } else {
            to_move.push(*pack);
        }
    }
    r.metadata_packs = metadata.len() as u64;
    if missing > 0 {
        r.warnings.push(format!(
            "{missing} pack(s) the archived snapshots need are missing from storage: left \
             alone; run `holdfast check`"
        ));
    }
    // Deterministic order: reports and crash points repeat run to run.
    to_move.sort();

    if cfg.dry_run {
        r.packs_moved = to_move.len() as u64;
        r.bytes_moved = to_move.iter().filter_map(|p| sizes.get(p)).sum();
        r.seconds = started.elapsed().as_secs_f64();
        return Ok(r);
    }
    let moved = repo
        .move_packs(&to_move, &cfg.class, progress)
        .map_err(|e| {
            OpsError::from(e).context(format!(
                "archiving packs to {} (packs already moved stay moved; run again to finish)",
                cfg.class
            ))
        })?;
    let mut gone = 0u64;
    for (pack, change) in moved {
        let size = sizes.get(&pack).copied().unwrap_or(0);
        let change = match change {
            PackMove::Changed(c) => c,
            PackMove::Gone => {
                gone += 1;
                continue;
            }
            PackMove::StillArchived => {
                r.packs_other_cold_class += 1;
                r.bytes_other_cold_class += size;
                continue;
            }
        };
        match change {
            ClassChange::Unchanged => {
                r.packs_already += 1;
                r.bytes_already += size;
            }
            ClassChange::Moved | ClassChange::MovedPreviousKept => {
                r.packs_moved += 1;
                r.bytes_moved += size;
                if change == ClassChange::MovedPreviousKept {
                    r.previous_copies_kept += 1;
                }
            }
        }
    }
    if r.packs_other_cold_class > 0 {
        r.warnings.push(format!(
            "{} pack(s) are in another archival class and stay there (moving them to {} \
             needs a retrieval first; they are cold already)",
            r.packs_other_cold_class, cfg.class
        ));
    }
    if gone > 0 {
        r.warnings.push(format!(
            "{gone} pack(s) disappeared while archiving (a garbage collection repacked them \
             meanwhile); their data is in new packs, which the next run archives"
        ));
    }
    if r.previous_copies_kept > 0 {
        r.warnings.push(format!(
            "{} moved pack(s) keep their previous copy in the old class until its Object Lock \
             retention ends (still billed at that class; a lifecycle rule expiring noncurrent \
             versions removes them then)",
            r.previous_copies_kept
        ));
    }
    r.seconds = started.elapsed().as_secs_f64();
    Ok(r)
}
