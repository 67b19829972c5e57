//! Restores of file trees, and the snapshot selection every restore and
//! listing shares. (PostgreSQL restores are in [`crate::postgres`].)

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use holdfast_repo::snapshot::{SnapshotEntry, SnapshotFilter};
use holdfast_repo::Repository;
use holdfast_sources::restore::{self, RestoreOptions, RestoreOutcome};
use holdfast_sources::{walk, Progress};

use holdfast_repo::audit::{Draft, Outcome};

use crate::audit;
use crate::error::{OpsError, Result};

/// Which snapshot: an id, an id prefix or `latest`, among those the filter
/// admits.
#[derive(Debug, Clone)]
pub struct SnapshotSpec {
    pub spec: String,
    pub filter: SnapshotFilter,
}

impl SnapshotSpec {
    pub fn latest() -> SnapshotSpec {
        SnapshotSpec {
            spec: "latest".into(),
            filter: SnapshotFilter::default(),
        }
    }

    /// The snapshot this names in `repo`.
    pub fn find(&self, repo: &Repository) -> Result<SnapshotEntry> {
        Ok(repo.find_snapshot(&self.spec, &self.filter)?)
    }
}

/// Everything a restore of files needs.
#[derive(Debug, Clone)]
pub struct FileRestoreConfig {
    pub snapshot: SnapshotSpec,
    pub target: PathBuf,
    /// Paths to restore as the user gave them (absolute, relative to
    /// `cwd`, or relative to the snapshot root); empty means everything.
    pub includes: Vec<OsString>,
    /// The directory relative `includes` are read against.
    pub cwd: PathBuf,
    /// Overwrite, threads, sparse files, extended attributes.
    pub options: RestoreOptions,
}

/// What a restore of files did.
#[derive(Debug)]
pub struct FileRestore {
    pub snapshot: SnapshotEntry,
    pub outcome: RestoreOutcome,
    pub seconds: f64,
}

/// A path from the user as an absolute path in the snapshot, resolved as
/// `backup` resolves its paths (see `walk::resolve`).
pub fn snapshot_path(
    repo: &Repository,
    snap: &SnapshotEntry,
    given: &std::ffi::OsStr,
    cwd: &Path,
) -> Result<Vec<u8>> {
    Ok(walk::resolve(
        repo,
        snap.snapshot.tree,
        given.as_encoded_bytes(),
        cwd.as_os_str().as_encoded_bytes(),
    )?)
}

/// Restore the snapshot `cfg` names into `cfg.target`. Files that could not
/// be restored are listed in `outcome.failed` (the caller reports them as
/// an integrity failure); errors that stop the restore are errors.
///
/// PHI access tracking: a `restore` entry naming the snapshot, the paths
/// and the target is on the audit trail before any data is read (the
/// restore does not start without it), and a second entry records the
/// outcome.
pub fn restore_files(
    repo: &Arc<Repository>,
    cfg: &FileRestoreConfig,
    progress: &Progress,
) -> Result<FileRestore> {
    let mut draft = Draft::new("restore", Outcome::Started)
        .arg("kind", "files")
        .arg("snapshot_spec", cfg.snapshot.spec.clone());
    let chosen = repo.ensure_index().map_err(OpsError::from).and_then(|()| {
        let snap = cfg.snapshot.find(repo)?;
        let includes = cfg
            .includes
            .iter()
            .map(|p| snapshot_path(repo, &snap, p, &cfg.cwd))
            .collect::<Result<Vec<_>>>()?;
        Ok((snap, includes))
    });
    let (snap, includes) = match chosen {
        Ok(c) => c,
        Err(e) => return Err(audit::record_failure(repo, draft, e)),
    };
    draft = draft.touch("snapshot", snap.id.to_hex());
    if includes.is_empty() {
        draft = draft.touch("path", "/");
    }
    for p in &includes {
        draft = draft.touch("path", String::from_utf8_lossy(p).into_owned());
    }
    draft = draft.touch("target", cfg.target.display().to_string());
    audit::started(repo, &draft)?;
    audit::audited(
        repo,
        draft,
        || restore_chosen(repo, cfg, snap, includes, progress),
        |r, d| {
            d.arg("files", r.outcome.files)
                .arg("bytes", r.outcome.bytes)
                .arg("files_failed", r.outcome.failed.len())
        },
    )
}

fn restore_chosen(
    repo: &Arc<Repository>,
    cfg: &FileRestoreConfig,
    snap: SnapshotEntry,
    includes: Vec<Vec<u8>>,
    progress: &Progress,
) -> Result<FileRestore> {
    let opts = RestoreOptions {
        includes,
        ..cfg.options.clone()
    };
    let started = Instant::now();
    let outcome = restore::restore(repo, &snap, &cfg.target, &opts, progress).map_err(|e| {
        OpsError::from(e).context(format!(
            "restoring snapshot {} to {}",
            snap.id.short(),
            cfg.target.display()
        ))
    })?;
    Ok(FileRestore {
        snapshot: snap,
        outcome,
        seconds: started.elapsed().as_secs_f64(),
    })
}
