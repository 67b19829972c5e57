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

use holdfast_postgres::quote_ident;

use crate::audit;
use crate::erasure::{self, ErasureReport, Erasures};
use crate::error::{OpsError, Result};
use crate::masking::{self, MaskReport, Masking};
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
    /// The erasures re-applied in the restored database (or why not).
    pub erasures: ErasureReport,
    /// What a masked restore (`mask`) did, verified.
    pub masking: Option<MaskReport>,
}

/// Restore one database of a logical snapshot into the server at `dsn`.
///
/// PHI access tracking: a `restore` entry naming the snapshot, the
/// database and the target server is written before any data is read.
///
/// GDPR erasure: every SQL erasure of the restored database recorded
/// after the snapshot was taken runs in the restored database, in one
/// transaction, before the restore succeeds (unless `erasures` skips
/// them, audited with its reason).
///
/// Masked restore (`mask`, see [`crate::masking`]): the snapshot goes into
/// a database under a temporary name, the erasures run there, then the
/// masking file's rules, checked for coverage and verified; only then is
/// the database renamed to `opts.database` (an existing one is replaced
/// only with `opts.clean`, and only at that point). Any failure drops the
/// temporary database, so unmasked data is never left under the name
/// asked for.
pub fn restore_logical(
    repo: &Arc<Repository>,
    rt: &Handle,
    snapshot: &SnapshotSpec,
    dsn: &Dsn,
    opts: &LogicalRestoreOptions,
    erasures: &Erasures,
    mask: Option<&Masking>,
) -> Result<LogicalRestore> {
    let mut draft = Draft::new("restore", Outcome::Started)
        .arg("kind", pg::KIND_LOGICAL)
        .arg("snapshot_spec", snapshot.spec.clone())
        .arg("clean", opts.clean)
        .arg("with_globals", opts.with_globals);
    if let Some(m) = mask {
        draft = draft.arg("masking_file", m.file.path.display().to_string());
    }
    if let Erasures::Skip { reason } = erasures {
        draft = draft.arg("skip_erasures", reason.clone());
    }
    let mut spec = snapshot.clone();
    spec.filter.kind = Some(pg::KIND_LOGICAL.into());
    let chosen = repo
        .load_index()
        .map_err(OpsError::from)
        .and_then(|()| spec.find(repo))
        .and_then(|s| Ok((erasure::plan(repo, &s, erasures)?, s)));
    let (plan, snap) = match chosen {
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
        || {
            if let Some(m) = mask {
                return restore_masked(repo, rt, snap, dsn, opts, &plan, m);
            }
            let mut r = restore_logical_chosen(repo, rt, snap, dsn, opts)?;
            let target = dsn.with_dbname(&r.report.database);
            r.erasures = plan
                .apply_sql(rt, &target, &r.report.source_database)
                .map_err(|e| {
                    e.context(format!(
                        "snapshot {} was restored into database {} but the erasure register was not applied: do not use it (drop it, or fix the erasure and restore again)",
                        r.snapshot.id.short(),
                        r.report.database
                    ))
                })?;
            Ok(r)
        },
        |r, d| {
            let d = r.erasures.annotate(d);
            match &r.masking {
                Some(m) => m.annotate(d),
                None => d,
            }
        },
    )
}

fn database_exists(rt: &Handle, admin: &tokio_postgres::Client, name: &str) -> Result<bool> {
    Ok(rt
        .block_on(admin.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name]))
        .map_err(|e| OpsError::invalid(format!("looking up database {name}: {e}")))?
        .is_some())
}

/// A masked restore: into a temporary database, erasures, masking and its
/// verification there, then the rename; see [`restore_logical`].
fn restore_masked(
    repo: &Arc<Repository>,
    rt: &Handle,
    snap: SnapshotEntry,
    dsn: &Dsn,
    opts: &LogicalRestoreOptions,
    plan: &erasure::Plan,
    mask: &Masking,
) -> Result<LogicalRestore> {
    let target = opts.database.clone();
    let maint = match dsn.dbname() {
        Some(d) if d != target => d.to_string(),
        _ => "postgres".to_string(),
    };
    let admin = dsn.with_dbname(&maint).connect(rt)?;
    let exists = database_exists(rt, &admin, &target)?;
    if exists && !opts.clean {
        return Err(OpsError::invalid(format!(
            "database {target} exists: a masked restore creates it; drop it first, or give --clean to replace it once the masked copy is verified"
        )));
    }
    // A masked restore that died (killed, server restart) leaves its
    // temporary database, unmasked: drop those of this target first.
    for stale in masking::stale_staging(rt, &admin, &target)? {
        rt.block_on(admin.batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(&stale)
        )))
        .map_err(|e| {
            OpsError::invalid(format!(
                "database {stale} is the unmasked leftover of an earlier masked restore of {target} and could not be dropped: {e}"
            ))
        })?;
    }
    let tmp = masking::staging_name(&target);
    let mut o = opts.clone();
    o.database = tmp.clone();
    o.clean = false;
    let tdsn = dsn.with_dbname(&tmp);
    // Rows are masked as they are restored ([`masking::Staged`]) unless
    // erasures must run first: they need the unmasked rows and every
    // constraint (a cascade), so that restore completes, the erasures
    // run, and the masking rewrites it ([`masking::apply`]).
    let (staged, source) = staged_masking_possible(&snap, opts, plan);
    let mut r;
    let masked = if staged {
        let mut hook = masking::Staged::new(mask);
        let got = pg::restore_logical_through(repo, rt, &snap, dsn, &o, Some(&mut hook));
        let got = match (got, hook.error.take()) {
            (Ok(rep), _) => rep,
            (Err(e), None) => {
                let fk = e.to_string().contains("Type: FK CONSTRAINT");
                let mut e = OpsError::from(e);
                if fk {
                    e = e.context(
                        "a foreign key no longer holds after masking (give the referencing and the referenced columns the same rule, e.g. hash on both, and the same type)",
                    );
                }
                return Err(e.context(format!(
                    "masked restore of snapshot {} refused; the unmasked restore (database {tmp}) was never committed and was dropped, nothing was left behind",
                    snap.id.short()
                )));
            }
            // The hook's own error says what the masking refused.
            (Err(_), Some(e)) => {
                return Err(e.context(format!(
                    "masked restore of snapshot {} refused; the unmasked restore (database {tmp}) was never committed and was dropped, nothing was left behind",
                    snap.id.short()
                )))
            }
        };
        r = LogicalRestore {
            snapshot: snap,
            report: got,
            erasures: ErasureReport::default(),
            masking: None,
        };
        plan.apply_sql(rt, &tdsn, &source)
            .map(|er| (er, hook.report()))
    } else {
        // The restore drops the database itself if it fails.
        r = restore_logical_chosen(repo, rt, snap, dsn, &o)?;
        plan.apply_sql(rt, &tdsn, &r.report.source_database)
            .and_then(|er| Ok((er, masking::apply(rt, &tdsn, mask)?)))
    };
    let (er, mr) = match masked {
        Ok(v) => v,
        Err(e) => {
            let dropped = rt.block_on(admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(&tmp)
            )));
            return Err(match dropped {
                Ok(()) => e.context(format!(
                    "masked restore of snapshot {} refused; the unmasked restore (database {tmp}) was dropped, nothing was left behind{}",
                    r.snapshot.id.short(),
                    if exists { format!(" and database {target} was not touched") } else { String::new() }
                )),
                Err(d) => e.context(format!(
                    "masked restore of snapshot {} FAILED AND DATABASE {tmp} STILL HOLDS UNMASKED DATA (dropping it failed: {d}): drop it now (DROP DATABASE \"{tmp}\")",
                    r.snapshot.id.short()
                )),
            });
        }
    };
    if exists {
        rt.block_on(admin.batch_execute(&format!(
            "DROP DATABASE {} WITH (FORCE)",
            quote_ident(&target)
        )))
        .map_err(|e| {
            OpsError::invalid(format!(
                "the masked copy is verified in database {tmp}, but dropping database {target} to replace it failed: {e}"
            ))
        })?;
    }
    // Our own sessions on the new database close asynchronously: retry
    // the rename for a few seconds while the server still counts them.
    let rename = format!(
        "ALTER DATABASE {} RENAME TO {}",
        quote_ident(&tmp),
        quote_ident(&target)
    );
    let mut tries = 0;
    loop {
        match rt.block_on(admin.batch_execute(&rename)) {
            Ok(()) => break,
            Err(e) if tries < 50 => {
                let _ = e;
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => {
                return Err(OpsError::invalid(format!(
                    "the masked copy is verified in database {tmp}, but renaming it to {target} failed: {e}"
                )))
            }
        }
    }
    r.report.database = target;
    r.erasures = er;
    r.masking = Some(mr);
    Ok(r)
}

/// Whether a masked restore can mask the rows as they are restored: the
/// database is UTF8 (the script passes through this process as text)
/// and no erasure of it is due. Also the source database's name.
fn staged_masking_possible(
    snap: &SnapshotEntry,
    opts: &LogicalRestoreOptions,
    plan: &erasure::Plan,
) -> (bool, String) {
    let Ok((source, info)) = pg::logical::source_database(snap, opts.source_database.as_deref())
    else {
        return (false, String::new());
    };
    let utf8 = info.encoding.eq_ignore_ascii_case("UTF8");
    (utf8 && !plan.runs_sql(&source), source)
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
        erasures: ErasureReport::default(),
        masking: None,
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
    /// Apply the erasure register (the default) or skip it with a reason.
    pub erasures: Erasures,
}

/// What a physical restore did.
pub struct PhysicalRestore {
    pub snapshot: SnapshotEntry,
    pub report: pg::PhysicalRestoreReport,
    /// The SQL erasures due, written to the data directory's pending file
    /// (see [`crate::erasure::apply_pending`]), or why not.
    pub erasures: ErasureReport,
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
///
/// GDPR erasure: holdfast does not start the restored server, so it
/// cannot run SQL in it. Every SQL erasure recorded after the base
/// backup was taken (whatever the recovery target: replaying WAL past an
/// erasure that was run on the original makes re-running it a no-op) is
/// written to [`erasure::PENDING_FILE`] in the data directory; the report
/// lists them and `holdfast erasure apply` runs them once the server is
/// up.
pub fn restore_physical(
    repo: &Arc<Repository>,
    cfg: &PhysicalRestoreConfig,
) -> Result<PhysicalRestore> {
    let mut draft = Draft::new("restore", Outcome::Started)
        .arg("kind", pg::KIND_PHYSICAL)
        .arg("snapshot_spec", cfg.snapshot.spec.clone())
        .arg("recovery_target", format!("{:?}", cfg.target));
    if let Erasures::Skip { reason } = &cfg.erasures {
        draft = draft.arg("skip_erasures", reason.clone());
    }
    let chosen = repo
        .load_index()
        .map_err(OpsError::from)
        .and_then(|()| choose_snapshot(repo, &cfg.snapshot, cfg.target))
        .and_then(|s| Ok((erasure::plan(repo, &s, &cfg.erasures)?, s)));
    let (plan, snap) = match chosen {
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
        || {
            let mut r = restore_physical_chosen(repo, cfg, snap)?;
            r.erasures = plan
                .write_pending(&r.snapshot, &cfg.datadir)
                .map_err(|e| {
                    e.context(format!(
                        "snapshot {} was restored to {} but its pending erasures could not be written: do not start the server",
                        r.snapshot.id.short(),
                        cfg.datadir.display()
                    ))
                })?;
            Ok(r)
        },
        |r, d| r.erasures.annotate(d),
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
        erasures: ErasureReport::default(),
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
