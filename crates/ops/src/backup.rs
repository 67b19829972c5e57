//! Backups of file trees: naming the source, choosing the parent snapshot,
//! settling the exclude rules, then the backup itself. (PostgreSQL backups
//! are in [`crate::postgres`].)

use std::path::PathBuf;

use holdfast_repo::snapshot::SnapshotEntry;
use holdfast_repo::{Id, Repository};
use holdfast_sources::backup::{self, BackupOptions, BackupOutcome, Parallelism};
use holdfast_sources::exclude::ExcludeRules;
use holdfast_sources::Progress;

use holdfast_repo::audit::{Draft, Outcome};

use crate::audit;
use crate::error::{OpsError, Result};

/// Everything a backup of files needs.
#[derive(Debug, Clone)]
pub struct FileBackupConfig {
    pub paths: Vec<PathBuf>,
    /// The source name; `None` names it `host:path,path` (paths absolute, sorted).
    pub source: Option<String>,
    pub tags: Vec<String>,
    /// Exclude rules given for this run; `None` keeps the previous ones
    /// (with `inherit_excludes`) or none.
    pub excludes: Option<ExcludeRules>,
    pub inherit_excludes: bool,
    /// Read every file again instead of trusting the parent snapshot's
    /// metadata.
    pub full: bool,
    /// Count files and bytes ahead for a progress display.
    pub scan: bool,
    pub no_xattrs: bool,
    pub parallelism: Parallelism,
    /// The snapshot's time instead of now (importing history, testing
    /// retention).
    pub time: Option<chrono::DateTime<chrono::Utc>>,
}

impl FileBackupConfig {
    /// A backup of `paths` with every other setting at its default.
    pub fn new(paths: Vec<PathBuf>) -> FileBackupConfig {
        FileBackupConfig {
            paths,
            source: None,
            tags: Vec::new(),
            excludes: None,
            inherit_excludes: true,
            full: false,
            scan: false,
            no_xattrs: false,
            parallelism: Parallelism::default(),
            time: None,
        }
    }
}

/// What a backup of files did, for the caller to report.
#[derive(Debug)]
pub struct FileBackup {
    pub outcome: BackupOutcome,
    /// On a store with legal holds: the cases of the holds that cover the
    /// new snapshot (what it needs was legal-held when it committed).
    pub held_by: Vec<String>,
    /// The snapshot compared against, if any.
    pub parent: Option<Id>,
    /// Set when the exclude rules were taken over from this snapshot.
    pub inherited_from: Option<Id>,
    /// The rules applied (recorded in the snapshot).
    pub excludes: ExcludeRules,
}

/// Check a backup request before the repository is opened (and a password
/// asked for): paths exist, exclude rules parse.
pub fn validate(cfg: &FileBackupConfig) -> Result<()> {
    if cfg.paths.is_empty() {
        return Err(OpsError::invalid(
            "nothing to back up: give at least one path",
        ));
    }
    for p in &cfg.paths {
        if std::fs::symlink_metadata(p).is_err() {
            return Err(OpsError::invalid(format!(
                "source path {} does not exist",
                p.display()
            )));
        }
    }
    if let Some(rules) = &cfg.excludes {
        holdfast_sources::exclude::Excluder::new(rules)?;
    }
    Ok(())
}

/// The default source name of a backup of `paths`: `host:` and the
/// absolute paths, sorted, comma-separated.
pub fn default_source(paths: &[PathBuf]) -> Result<String> {
    let mut abs: Vec<String> = paths
        .iter()
        .map(|p| backup::normalize(p).map(|p| p.display().to_string()))
        .collect::<Result<_, _>>()?;
    abs.sort();
    Ok(format!("{}:{}", holdfast_repo::hostname(), abs.join(",")))
}

/// The source name `cfg` backs up under.
pub fn source_name(cfg: &FileBackupConfig) -> Result<String> {
    match &cfg.source {
        Some(s) => Ok(s.clone()),
        None => default_source(&cfg.paths),
    }
}

/// A backup of files with its parent and rules settled, not yet run: the
/// caller can say what it is about to do before it starts.
#[derive(Debug)]
pub struct PreparedBackup {
    paths: Vec<PathBuf>,
    opts: BackupOptions,
    /// Set when the exclude rules were taken over from this snapshot.
    pub inherited_from: Option<Id>,
}

impl PreparedBackup {
    /// The snapshot this backup compares against, if any.
    pub fn parent(&self) -> Option<Id> {
        self.opts.parent.as_ref().map(|p| p.id)
    }

    /// The exclude rules it applies (recorded in the snapshot).
    pub fn excludes(&self) -> &ExcludeRules {
        &self.opts.excludes
    }

    /// The source name it backs up under.
    pub fn source(&self) -> &str {
        &self.opts.source
    }

    /// Run it. An interrupted backup returns `SourceError::Interrupted`.
    /// Its audit entry names the source, the paths and the snapshot.
    pub fn run(self, repo: &Repository, progress: &Progress) -> Result<FileBackup> {
        let mut draft = Draft::new("backup", Outcome::Success)
            .arg("kind", "files")
            .arg("source", self.opts.source.clone());
        if !self.opts.tags.is_empty() {
            draft = draft.arg("tags", self.opts.tags.clone());
        }
        for p in &self.paths {
            draft = draft.touch("path", p.display().to_string());
        }
        let mut done = audit::audited(
            repo,
            draft,
            || {
                audit::observe(repo)?;
                let outcome = backup::backup(repo, &self.paths, &self.opts, progress)?;
                Ok(FileBackup {
                    held_by: Vec::new(),
                    outcome,
                    parent: self.opts.parent.map(|p| p.id),
                    inherited_from: self.inherited_from,
                    excludes: self.opts.excludes,
                })
            },
            |b, d| {
                d.arg("files_failed", b.outcome.warnings.len())
                    .touch("snapshot", b.outcome.id.to_hex())
            },
        )?;
        // After the backup's own entry: a committed backup stays a
        // success in the trail even if its legal holds need a `hold sync`.
        done.held_by = crate::holds::after_backup(
            repo,
            &SnapshotEntry {
                id: done.outcome.id,
                snapshot: done.outcome.snapshot.clone(),
            },
        )?;
        Ok(done)
    }
}

/// Settle a backup of `cfg.paths` into `repo`: the index is loaded, the
/// parent is the latest snapshot of the same source (unless `full`), and
/// its exclude rules carry over unless new ones are given.
pub fn prepare(repo: &Repository, cfg: &FileBackupConfig) -> Result<PreparedBackup> {
    validate(cfg)?;
    repo.load_index()?;
    let source = source_name(cfg)?;
    let lineage = backup::lineage(repo, &source, cfg.excludes.clone(), cfg.inherit_excludes)?;
    let parent: Option<SnapshotEntry> = if cfg.full { None } else { lineage.latest };
    Ok(PreparedBackup {
        paths: cfg.paths.clone(),
        opts: BackupOptions {
            source,
            tags: cfg.tags.clone(),
            parent,
            excludes: lineage.excludes,
            scan: cfg.scan,
            no_xattrs: cfg.no_xattrs,
            parallelism: cfg.parallelism,
            time: cfg.time,
            predecessors: Some(lineage.predecessors),
        },
        inherited_from: lineage.inherited_from,
    })
}

/// Back up `cfg.paths` into `repo` ([`prepare`], then run).
pub fn backup_files(
    repo: &Repository,
    cfg: &FileBackupConfig,
    progress: &Progress,
) -> Result<FileBackup> {
    prepare(repo, cfg)?.run(repo, progress)
}
