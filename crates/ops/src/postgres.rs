//! PostgreSQL operations: logical and physical backups, restores into a
//! server or a data directory, the WAL archive commands and the
//! recoverable points of each cluster. The behaviour of each lives in
//! `holdfast-postgres`; what is decided here is what a front end would
//! otherwise have to repeat: loading the index, which snapshot a restore
//! uses (the newest base backup that can reach the recovery target), and
//! the `restore_command` the restored server runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use holdfast_postgres::{
    self as pg, BackupOutcome, Dsn, LogicalBackupOptions, LogicalRestoreOptions,
    PhysicalBackupOptions, PhysicalRestoreOptions, RecoveryTarget,
};
use holdfast_repo::snapshot::SnapshotEntry;
use holdfast_repo::Repository;
use tokio::runtime::Handle;

use holdfast_repo::audit::{Draft, Outcome};

use crate::audit;
use crate::error::{OpsError, Result};
use crate::restore::SnapshotSpec;

/// A logical backup (`pg_dump` of each database, plus globals). `rt`
/// runs the PostgreSQL client connections.
pub fn backup_logical(
    repo: &Repository,
    rt: &Handle,
    dsn: &Dsn,
    opts: &LogicalBackupOptions,
) -> Result<BackupOutcome> {
    let mut draft = backup_draft(pg::KIND_LOGICAL, dsn, opts.source.as_deref(), &opts.tags);
    for db in &opts.databases {
        draft = draft.touch("database", db.clone());
    }
    let out = audit::audited(
        repo,
        draft,
        || {
            repo.load_index()?;
            audit::observe(repo)?;
            Ok(pg::backup_logical(repo, rt, dsn, opts)?)
        },
        |o, d| d.touch("snapshot", o.id.to_hex()),
    )?;
    hold_new(repo, &out)?;
    Ok(out)
}

/// Legal-hold a new snapshot that an active hold covers (on a store with
/// legal holds; see [`crate::holds::after_backup`]), after the backup's
/// own audit entry.
fn hold_new(repo: &Repository, out: &BackupOutcome) -> Result<()> {
    crate::holds::after_backup(
        repo,
        &SnapshotEntry {
            id: out.id,
            snapshot: out.snapshot.clone(),
        },
    )?;
    Ok(())
}

/// The audit entry of a PostgreSQL backup: the server as
/// `user@host:port/database` (never a password).
fn backup_draft(kind: &str, dsn: &Dsn, source: Option<&str>, tags: &[String]) -> Draft {
    let mut d = Draft::new("backup", Outcome::Success)
        .arg("kind", kind)
        .touch("server", dsn.display());
    if let Some(s) = source {
        d = d.arg("source", s);
    }
    if !tags.is_empty() {
        d = d.arg("tags", tags.to_vec());
    }
    d
}

/// A physical base backup of the whole cluster.
pub fn backup_physical(
    repo: &Repository,
    rt: &Handle,
    dsn: &Dsn,
    opts: &PhysicalBackupOptions,
) -> Result<BackupOutcome> {
    let mut draft = backup_draft(pg::KIND_PHYSICAL, dsn, opts.source.as_deref(), &opts.tags);
    if let Some(d) = &opts.pgdata {
        draft = draft.touch("path", d.display().to_string());
    }
    let out = audit::audited(
        repo,
        draft,
        || {
            repo.load_index()?;
            audit::observe(repo)?;
            Ok(pg::backup_physical(repo, rt, dsn, opts)?)
        },
        |o, d| d.touch("snapshot", o.id.to_hex()),
    )?;
    hold_new(repo, &out)?;
    Ok(out)
}

/// What a logical restore did.
pub struct LogicalRestore {
    pub snapshot: SnapshotEntry,
    pub report: pg::LogicalRestoreReport,
}

/// Restore one database of a logical snapshot into the server at `dsn`.
///
/// PHI access tracking: a `restore` entry naming the snapshot, the
/// database and the target server is written before any data is read.
pub fn restore_logical(
    repo: &Arc<Repository>,
    rt: &Handle,
    snapshot: &SnapshotSpec,
    dsn: &Dsn,
    opts: &LogicalRestoreOptions,
) -> Result<LogicalRestore> {
    let mut draft = Draft::new("restore", Outcome::Started)
        .arg("kind", pg::KIND_LOGICAL)
        .arg("snapshot_spec", snapshot.spec.clone())
        .arg("clean", opts.clean)
        .arg("with_globals", opts.with_globals);
    let mut spec = snapshot.clone();
    spec.filter.kind = Some(pg::KIND_LOGICAL.into());
    let snap = match repo
        .load_index()
        .map_err(OpsError::from)
        .and_then(|()| spec.find(repo))
    {
        Ok(s) => s,
        Err(e) => return Err(audit::record_failure(repo, draft, e)),
    };
    draft = draft
        .touch("snapshot", snap.id.to_hex())
        .touch(
            "database",
            opts.source_database
                .clone()
                .unwrap_or_else(|| opts.database.clone()),
        )
        .touch(
            "target",
            format!("{} database {}", dsn.display(), opts.database),
        );
    audit::started(repo, &draft)?;
    audit::audited(
        repo,
        draft,
        || restore_logical_chosen(repo, rt, snap, dsn, opts),
        |_, d| d,
    )
}

fn restore_logical_chosen(
    repo: &Arc<Repository>,
    rt: &Handle,
    snap: SnapshotEntry,
    dsn: &Dsn,
    opts: &LogicalRestoreOptions,
) -> Result<LogicalRestore> {
    let report = pg::restore_logical(repo, rt, &snap, dsn, opts).map_err(|e| {
        OpsError::from(e).context(format!("restoring snapshot {}", snap.id.short()))
    })?;
    Ok(LogicalRestore {
        snapshot: snap,
        report,
    })
}

/// The command the restored server runs to fetch WAL: `program wal-fetch`
/// with `env` in front (the repository and the secret that opens it).
#[derive(Debug, Clone)]
pub struct RestoreCommand {
    pub program: PathBuf,
    pub env: Vec<(String, String)>,
}

/// Everything a physical restore needs.
pub struct PhysicalRestoreConfig {
    /// `latest` means the newest base backup that can reach `target`.
    pub snapshot: SnapshotSpec,
    pub datadir: PathBuf,
    pub target: RecoveryTarget,
    /// Required for targets past the end of the backup.
    pub restore_command: Option<RestoreCommand>,
    pub keep_archiving: bool,
    /// (OID or name, absolute directory) for tablespaces that go elsewhere.
    pub tablespace_map: Vec<(String, PathBuf)>,
}

/// What a physical restore did.
pub struct PhysicalRestore {
    pub snapshot: SnapshotEntry,
    pub report: pg::PhysicalRestoreReport,
}

/// The physical snapshot `spec` names for `target`: with `latest`, the
/// newest base backup whose end is at or before the target (pgBackRest's
/// rule); with an explicit id, that one (refused later if it cannot reach
/// the target).
pub fn choose_snapshot(
    repo: &Repository,
    spec: &SnapshotSpec,
    target: RecoveryTarget,
) -> Result<SnapshotEntry> {
    let mut spec = spec.clone();
    spec.filter.kind = Some(pg::KIND_PHYSICAL.into());
    if spec.spec != "latest" {
        return spec.find(repo);
    }
    let candidates: Vec<SnapshotEntry> = repo
        .snapshots()?
        .into_iter()
        .filter(|s| spec.filter.matches(&s.snapshot))
        .collect();
    if candidates.is_empty() {
        return spec.find(repo);
    }
    Ok(pg::choose_base_backup(&candidates, target)?)
}

/// Restore a physical snapshot into `cfg.datadir`, set up to recover to
/// `cfg.target`.
///
/// PHI access tracking: a `restore` entry naming the snapshot, the data
/// directory and the recovery target is written before any data is read.
/// The WAL the restored server fetches through `restore_command` is part
/// of this restore and has no entries of its own.
pub fn restore_physical(
    repo: &Arc<Repository>,
    cfg: &PhysicalRestoreConfig,
) -> Result<PhysicalRestore> {
    let mut draft = Draft::new("restore", Outcome::Started)
        .arg("kind", pg::KIND_PHYSICAL)
        .arg("snapshot_spec", cfg.snapshot.spec.clone())
        .arg("recovery_target", format!("{:?}", cfg.target));
    let snap = match repo
        .load_index()
        .map_err(OpsError::from)
        .and_then(|()| choose_snapshot(repo, &cfg.snapshot, cfg.target))
    {
        Ok(s) => s,
        Err(e) => return Err(audit::record_failure(repo, draft, e)),
    };
    draft = draft
        .touch("snapshot", snap.id.to_hex())
        .touch("target", cfg.datadir.display().to_string());
    audit::started(repo, &draft)?;
    audit::audited(
        repo,
        draft,
        || restore_physical_chosen(repo, cfg, snap),
        |_, d| d,
    )
}

fn restore_physical_chosen(
    repo: &Arc<Repository>,
    cfg: &PhysicalRestoreConfig,
    snap: SnapshotEntry,
) -> Result<PhysicalRestore> {
    let mut o = PhysicalRestoreOptions::new(cfg.target);
    o.keep_archiving = cfg.keep_archiving;
    o.tablespace_map = cfg.tablespace_map.clone();
    o.restore_command = cfg.restore_command.as_ref().map(|rc| {
        let env: Vec<(&str, &str)> = rc
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        pg::restore_command(
            &rc.program,
            &env,
            pg::physical::snapshot_cluster(&snap.snapshot),
        )
    });
    let report = pg::restore_physical(repo, &snap, &cfg.datadir, &o).map_err(|e| {
        OpsError::from(e).context(format!(
            "restoring snapshot {} to {}",
            snap.id.short(),
            cfg.datadir.display()
        ))
    })?;
    Ok(PhysicalRestore {
        snapshot: snap,
        report,
    })
}

/// Parse `OID_OR_NAME=DIR` (`--tablespace-map`); `DIR` is made absolute
/// against `cwd`.
pub fn parse_tablespace_map(s: &str, cwd: &Path) -> Result<(String, PathBuf)> {
    let Some((key, dir)) = s
        .split_once('=')
        .filter(|(k, d)| !k.is_empty() && !d.is_empty())
    else {
        return Err(OpsError::invalid(format!(
            "--tablespace-map {s:?}: expected OID_OR_NAME=DIR, e.g. 16390=/srv/pg/ts1"
        )));
    };
    Ok((key.to_string(), cwd.join(dir)))
}

/// Archive one WAL file (PostgreSQL's `archive_command`).
pub fn wal_push(repo: &Repository, path: &Path, cluster: Option<u64>) -> Result<pg::PushOutcome> {
    // No index load: wal-push runs once per segment and dedups against the
    // packs its manifests name (see holdfast_postgres::wal).
    Ok(pg::wal_push(repo, path, cluster)?)
}

/// Fetch one WAL file into `dest` (PostgreSQL's `restore_command`).
/// `PgError::WalNotFound` is the routine end of the archive.
pub fn wal_fetch(
    repo: &Arc<Repository>,
    name: &str,
    dest: &Path,
    cluster: Option<u64>,
) -> Result<u64> {
    Ok(pg::wal_fetch(repo, name, dest, cluster)?)
}

/// Fill the spool with up to `count` segments after `after`.
pub fn wal_prefetch(
    repo: &Arc<Repository>,
    cluster: u64,
    after: &str,
    count: usize,
    spool: &Path,
) -> Result<usize> {
    Ok(pg::wal_prefetch(repo, cluster, after, count, spool)?)
}

/// The latest recoverable point of every cluster with snapshots or WAL.
pub fn recovery_points(
    repo: &Repository,
    snapshots: &[SnapshotEntry],
) -> Result<Vec<pg::ClusterRecoveryPoint>> {
    Ok(pg::recovery_points(repo, snapshots)?)
}
