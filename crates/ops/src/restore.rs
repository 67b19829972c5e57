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
use crate::erasure::{self, ErasureReport, Erasures};
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
    /// The erasures re-applied to the restored files (or why not).
    pub erasures: ErasureReport,
    /// With a masking file: the restored files its `[[files]]` rules
    /// dropped or replaced.
    pub masking: Option<Vec<crate::masking::FileMasked>>,
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
///
/// GDPR erasure: every path erasure recorded after the snapshot was taken
/// is applied again to the restored files before the restore succeeds
/// (see [`crate::erasure`]); [`restore_files_with`] can skip that, with a
/// reason, for a legal hold.
pub fn restore_files(
    repo: &Arc<Repository>,
    cfg: &FileRestoreConfig,
    progress: &Progress,
) -> Result<FileRestore> {
    restore_files_with(repo, cfg, &Erasures::Apply, progress)
}

/// [`restore_files`], saying what to do about the erasure register.
pub fn restore_files_with(
    repo: &Arc<Repository>,
    cfg: &FileRestoreConfig,
    erasures: &Erasures,
    progress: &Progress,
) -> Result<FileRestore> {
    restore_files_masked(repo, cfg, erasures, progress, None)
}

/// [`restore_files_with`], then (with `mask`) the masking file's
/// `[[files]]` rules on the restored entries, after the erasures; listed
/// in the report and the audit entry.
pub fn restore_files_masked(
    repo: &Arc<Repository>,
    cfg: &FileRestoreConfig,
    erasures: &Erasures,
    progress: &Progress,
    mask: Option<&crate::masking::Masking>,
) -> Result<FileRestore> {
    if let Some(m) = mask {
        if m.file_globs.is_empty() {
            return Err(OpsError::invalid(format!(
                "{} has no [[files]] rules: a directory restore with --mask needs them (its table rules are for --to-postgres)",
                m.file.path.display()
            )));
        }
    }
    let mut draft = Draft::new("restore", Outcome::Started)
        .arg("kind", "files")
        .arg("snapshot_spec", cfg.snapshot.spec.clone());
    if let Erasures::Skip { reason } = erasures {
        draft = draft.arg("skip_erasures", reason.clone());
    }
    let chosen = repo.ensure_index().map_err(OpsError::from).and_then(|()| {
        let snap = cfg.snapshot.find(repo)?;
        let includes = cfg
            .includes
            .iter()
            .map(|p| snapshot_path(repo, &snap, p, &cfg.cwd))
            .collect::<Result<Vec<_>>>()?;
        let plan = erasure::plan(repo, &snap, erasures)?;
        Ok((snap, includes, plan))
    });
    let (snap, includes, plan) = match chosen {
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
        || {
            let mut r = restore_chosen(repo, cfg, snap, includes.clone(), progress)?;
            r.erasures = plan
                .apply_files(repo, &r.snapshot, &includes, &cfg.target)
                .map_err(|e| {
                    e.context(format!(
                        "snapshot {} was restored to {} but the erasure register was not fully applied: do not use the restored files",
                        r.snapshot.id.short(),
                        cfg.target.display()
                    ))
                })?;
            if let Some(m) = mask {
                let files = crate::masking::apply_files(repo, &r.snapshot, &includes, &cfg.target, m)
                    .map_err(|e| {
                        e.context(format!(
                            "snapshot {} was restored to {} but its masking was not fully applied: the target holds UNMASKED files, do not use it",
                            r.snapshot.id.short(),
                            cfg.target.display()
                        ))
                    })?;
                r.masking = Some(files);
            }
            Ok(r)
        },
        |r, d| {
            let mut d = r.erasures.annotate(
                d.arg("files", r.outcome.files)
                    .arg("bytes", r.outcome.bytes)
                    .arg("files_failed", r.outcome.failed.len()),
            );
            if let (Some(files), Some(m)) = (&r.masking, mask) {
                d = d
                    .arg("masking_file", m.file.path.display().to_string())
                    .arg(
                        "masked_files",
                        files
                            .iter()
                            .map(|f| format!("{} {}", f.action, f.path))
                            .collect::<Vec<_>>(),
                    );
            }
            d
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
        erasures: ErasureReport::default(),
        masking: None,
    })
}
