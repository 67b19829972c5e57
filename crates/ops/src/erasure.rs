//! The GDPR erasure register (Art. 17): recording erasures, listing them,
//! and applying them again after a restore. The records are the
//! repository's (`holdfast_repo::erasure`); this module checks what an
//! operator records (a path pattern must compile, an SQL statement must
//! run in its database inside a transaction that is rolled back) and
//! re-applies, after every restore, each erasure recorded after the
//! restored snapshot was taken — the snapshot may still hold what it
//! erased; one recorded before it does not.
//!
//! What applies where: path erasures to restores of files (the restored
//! entries whose source path matches are removed); SQL erasures of a
//! database to a logical restore of that database (all of them in one
//! transaction in the restored database); every SQL erasure to a physical
//! restore, whose server holdfast does not start: they are written to
//! [`PENDING_FILE`] in the data directory and applied by
//! [`apply_pending`] (`holdfast erasure apply`) once the server runs.
//!
//! A restore fails while an erasure record cannot be read (what it would
//! have erased is unknown), and when an erasure fails; `Erasures::Skip`
//! (a legal hold needs the data as it was) is on the audit trail with its
//! reason.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use holdfast_postgres::Dsn;
use holdfast_repo::audit::{Draft, Outcome as AuditOutcome};
use holdfast_repo::erasure::{Erasure, ErasureRecords, ErasureTarget, NewErasure};
use holdfast_repo::snapshot::SnapshotEntry;
use holdfast_repo::Repository;
use holdfast_sources::exclude::PathGlob;
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;

use crate::audit;
use crate::error::{OpsError, Result};

/// The file a physical restore leaves in the data directory: the SQL
/// erasures still to run once the server is up.
pub const PENDING_FILE: &str = "holdfast-erasures.json";
/// What [`apply_pending`] renames the pending file to once every erasure
/// in it ran: the evidence stays beside the data.
pub const APPLIED_FILE: &str = "holdfast-erasures.applied.json";

/// What a restore does about the erasure register.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Erasures {
    /// Re-apply every erasure recorded after the snapshot (the default).
    #[default]
    Apply,
    /// Leave the restored data as the snapshot has it: only for a legal
    /// hold that needs the erased data; the reason is audited.
    Skip { reason: String },
}

/// What to erase, as the operator gives it.
#[derive(Debug, Clone)]
pub enum AddTarget {
    /// An SQL statement for `database`, checked on the server at `dsn`
    /// (whose own database name is replaced by `database`).
    Sql {
        sql: String,
        database: String,
        dsn: Box<Dsn>,
    },
    /// A path pattern of backed-up files.
    Path { pattern: String },
}

/// `erasure add`.
#[derive(Debug, Clone)]
pub struct AddConfig {
    /// The request's reference (`DSAR-2026-041`).
    pub reference: String,
    pub target: AddTarget,
    pub reason: String,
    /// Who records it (the session's actor).
    pub actor: String,
}

/// What `erasure add` did.
#[derive(Debug, Clone, Serialize)]
pub struct Added {
    #[serde(flatten)]
    pub erasure: Erasure,
    /// Rows the statement changed in the dry run (rolled back), for SQL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run_rows: Option<u64>,
}

/// An erasure re-applied by a restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reapplied {
    pub id: String,
    pub reference: String,
    pub target: ErasureTarget,
    /// Restored entries removed (paths) or rows changed (SQL).
    pub count: u64,
}

/// What a restore did about erasures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ErasureReport {
    /// Erasures re-applied, in recorded order.
    pub applied: Vec<Reapplied>,
    /// Set when the restore skipped the register: the reason given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// With `skipped`: the erasures that were due and not applied.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_applied: Vec<String>,
    /// Physical restores: erasures written to the data directory's
    /// pending file, to apply once the server runs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<Reapplied>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_file: Option<PathBuf>,
}

impl ErasureReport {
    /// The audit entry's part: which erasures were applied, pending or
    /// skipped, and why.
    pub fn annotate(&self, mut d: Draft) -> Draft {
        d = d.arg(
            "erasures_applied",
            self.applied
                .iter()
                .map(|a| a.id.clone())
                .collect::<Vec<_>>(),
        );
        if !self.pending.is_empty() {
            d = d.arg(
                "erasures_pending",
                self.pending
                    .iter()
                    .map(|a| a.id.clone())
                    .collect::<Vec<_>>(),
            );
        }
        if let Some(r) = &self.skipped {
            d = d
                .arg("erasures_skipped_reason", r.clone())
                .arg("erasures_not_applied", self.not_applied.clone());
        }
        d
    }
}

fn required(what: &str, v: &str) -> Result<String> {
    let t = v.trim();
    if t.is_empty() {
        return Err(OpsError::invalid(format!("{what} must not be empty")));
    }
    if t.chars().any(char::is_control) {
        return Err(OpsError::invalid(format!(
            "{what} {t:?} contains control characters"
        )));
    }
    Ok(t.to_string())
}

/// Check a path pattern: absolute (patterns name source paths as backups
/// record them) and a glob the exclude rules accept.
pub fn check_pattern(pattern: &str) -> Result<PathGlob> {
    let p = pattern.trim();
    if !p.starts_with('/') {
        return Err(OpsError::invalid(format!(
            "path pattern {pattern:?} is not absolute: erasure patterns name backed-up source paths from the root (e.g. /srv/documents/patients/123/**)"
        )));
    }
    PathGlob::parse(p).map_err(|why| {
        OpsError::invalid(format!(
            "path pattern {pattern:?} is not a valid glob: {why}"
        ))
    })
}

/// Record an erasure. A path pattern must be valid; an SQL statement must
/// run in its database inside a transaction that is then rolled back (a
/// statement the server refuses is refused with the server's error, and
/// nothing is recorded). Audited as `erasure add`.
pub fn add(repo: &Repository, rt: &Handle, cfg: &AddConfig) -> Result<Added> {
    let mut draft = Draft::new("erasure add", AuditOutcome::Success)
        .arg("reference", cfg.reference.clone())
        .arg("reason", cfg.reason.clone());
    draft = match &cfg.target {
        AddTarget::Sql { sql, database, .. } => draft
            .arg("database", database.clone())
            .arg("sql", sql.clone()),
        AddTarget::Path { pattern } => draft.arg("pattern", pattern.clone()),
    };
    audit::audited(
        repo,
        draft,
        || add_unaudited(repo, rt, cfg),
        |a, d| d.touch("erasure", a.erasure.id.clone()),
    )
}

fn add_unaudited(repo: &Repository, rt: &Handle, cfg: &AddConfig) -> Result<Added> {
    let reference = required("the reference", &cfg.reference)?;
    let reason = required("the reason", &cfg.reason)?;
    let actor = required("the actor", &cfg.actor)?;
    let (target, dry_run_rows) = match &cfg.target {
        AddTarget::Path { pattern } => {
            check_pattern(pattern)?;
            (
                ErasureTarget::Path {
                    pattern: pattern.trim().to_string(),
                },
                None,
            )
        }
        AddTarget::Sql { sql, database, dsn } => {
            let database = required("the database", database)?;
            let sql = sql.trim().trim_end_matches(';').trim().to_string();
            if sql.is_empty() {
                return Err(OpsError::invalid("the SQL statement must not be empty"));
            }
            let rows = dry_run(rt, &dsn.with_dbname(&database), &sql).map_err(|e| {
                e.context(format!(
                    "erasure not recorded: the statement was refused in database {database}"
                ))
            })?;
            (ErasureTarget::Sql { database, sql }, Some(rows))
        }
    };
    let erasure = repo.put_erasure(&NewErasure {
        reference,
        target,
        reason,
        recorded_by: actor,
        recorded_at: repo.now(),
    })?;
    Ok(Added {
        erasure,
        dry_run_rows,
    })
}

fn pg_error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{}: {}", db.severity(), db.message());
            if let Some(p) = db.position() {
                s.push_str(&format!(" ({p:?})"));
            }
            s
        }
        None => e.to_string(),
    }
}

/// Run `stmts` in one transaction on `client`: with `commit` false it is
/// rolled back (the dry run). Each statement goes through the extended
/// protocol, which takes exactly one statement (so `…; COMMIT; …` cannot
/// smuggle a second one in), and a savepoint after each proves it did
/// not end the transaction. Returns the rows each statement changed; an
/// error names the statement's index in `stmts`.
fn run_in_transaction(
    rt: &Handle,
    client: &tokio_postgres::Client,
    stmts: &[&str],
    commit: bool,
) -> std::result::Result<Vec<u64>, (usize, String)> {
    rt.block_on(async {
        client
            .batch_execute("BEGIN")
            .await
            .map_err(|e| (usize::MAX, pg_error_text(&e)))?;
        let mut rows = Vec::new();
        for (i, s) in stmts.iter().enumerate() {
            let n = match client.execute(*s, &[]).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = client.batch_execute("ROLLBACK").await;
                    return Err((i, pg_error_text(&e)));
                }
            };
            if let Err(e) = client.batch_execute("SAVEPOINT holdfast_erasure").await {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err((
                    i,
                    format!(
                        "the statement ended the transaction (transaction control is not allowed in an erasure): {}",
                        pg_error_text(&e)
                    ),
                ));
            }
            rows.push(n);
        }
        let end = if commit { "COMMIT" } else { "ROLLBACK" };
        client
            .batch_execute(end)
            .await
            .map_err(|e| (usize::MAX, pg_error_text(&e)))?;
        Ok(rows)
    })
}

fn dry_run(rt: &Handle, dsn: &Dsn, sql: &str) -> Result<u64> {
    let client = dsn.connect(rt)?;
    match run_in_transaction(rt, &client, &[sql], false) {
        Ok(rows) => Ok(rows.first().copied().unwrap_or(0)),
        Err((_, why)) => Err(OpsError::invalid(why)),
    }
}

/// `erasure list`: every erasure, and what could not be read.
#[derive(Debug, Clone, Serialize)]
pub struct ErasureList {
    pub erasures: Vec<Erasure>,
    pub warnings: Vec<String>,
}

pub fn list(repo: &Repository) -> Result<ErasureList> {
    let r = repo.erasures()?;
    Ok(ErasureList {
        erasures: r.erasures.clone(),
        warnings: unreadable_warnings(&r),
    })
}

pub(crate) fn unreadable_warnings(r: &ErasureRecords) -> Vec<String> {
    r.unreadable
        .iter()
        .map(|(n, why)| {
            format!(
                "erasure record {} cannot be read: {why}",
                holdfast_storage::ObjectKind::Erasure.key(n)
            )
        })
        .collect()
}

/// The erasures whose subjects the snapshot `entry` may still hold:
/// recorded after it was taken, and of what it holds — an SQL erasure of
/// one of its databases (a logical snapshot; a physical one holds its
/// whole cluster, so every database), a path erasure whose pattern can
/// match under its backed-up paths (a file snapshot). Read from the
/// listing and the patterns only, never the snapshot's data: it may say
/// "may hold" of a snapshot that lacks the subject, never the reverse.
pub fn held_by<'a>(erasures: &'a [Erasure], entry: &SnapshotEntry) -> Vec<&'a Erasure> {
    let snap = &entry.snapshot;
    // None: every database (a cluster, or a listing that cannot be read).
    let databases = (snap.kind == holdfast_postgres::KIND_LOGICAL)
        .then(|| holdfast_postgres::logical::snapshot_databases(snap).ok())
        .flatten();
    erasures
        .iter()
        .filter(|e| e.recorded_at > snap.time)
        .filter(|e| match &e.target {
            ErasureTarget::Sql { database, .. } => {
                (snap.kind == holdfast_postgres::KIND_LOGICAL
                    || snap.kind == holdfast_postgres::KIND_PHYSICAL)
                    && databases.as_ref().is_none_or(|d| d.contains_key(database))
            }
            ErasureTarget::Path { pattern } => {
                snap.kind == "files" && paths_overlap(&snap.paths, pattern)
            }
        })
        .collect()
}

/// Whether `pattern` can match a path under one of `paths` (the backed-up
/// roots; none means anything): its literal directory prefix (up to the
/// first wildcard or escape) and a root lie one inside the other.
fn paths_overlap(paths: &[String], pattern: &str) -> bool {
    let literal = pattern
        .find(['*', '?', '[', '\\'])
        .map_or(pattern, |i| &pattern[..i]);
    let dir = match literal.rfind('/') {
        // A literal pattern names its own path; a wildcard cuts the last
        // component.
        _ if literal.len() == pattern.len() => literal,
        Some(i) => &literal[..=i],
        None => "/",
    };
    let inside = |outer: &str, inner: &str| {
        let outer = outer.trim_end_matches('/');
        inner == outer || inner.starts_with(&format!("{outer}/")) || outer.is_empty()
    };
    paths.is_empty()
        || paths
            .iter()
            .any(|root| inside(root, dir) || inside(dir, root))
}

/// The erasures due for a restore of a snapshot taken at `time`: those
/// recorded after it. An unreadable record fails (its target is unknown).
pub fn due(repo: &Repository, time: DateTime<Utc>) -> Result<Vec<Erasure>> {
    let r = repo.erasures()?;
    if let Some(w) = unreadable_warnings(&r).into_iter().next() {
        return Err(OpsError::invalid(format!(
            "{w}; a restore cannot tell what it must erase again (--skip-erasures only for a legal hold)"
        )));
    }
    Ok(r.after(time).into_iter().cloned().collect())
}

/// The report of a skipped register: the reason (required) and what was
/// due.
fn skipped(reason: &str, due: &[Erasure]) -> Result<ErasureReport> {
    let reason = required("the reason for --skip-erasures", reason)?;
    Ok(ErasureReport {
        skipped: Some(reason),
        not_applied: due.iter().map(|e| e.id.clone()).collect(),
        ..ErasureReport::default()
    })
}

fn reapplied(e: &Erasure, count: u64) -> Reapplied {
    Reapplied {
        id: e.id.clone(),
        reference: e.reference.clone(),
        target: e.target.clone(),
        count,
    }
}

fn failed(e: &Erasure, why: impl std::fmt::Display) -> OpsError {
    OpsError::invalid(format!(
        "erasure {} ({}, {}) could not be applied again: {why}",
        e.id,
        e.reference,
        e.target.describe()
    ))
}

/// Which erasures the restore must check before it reads data (the
/// register is read once, up front); applied by the `apply_*` functions.
pub fn plan(repo: &Repository, snap: &SnapshotEntry, mode: &Erasures) -> Result<Plan> {
    // A skip needs a reason before anything is read.
    if let Erasures::Skip { reason } = mode {
        required("the reason for --skip-erasures", reason)?;
    }
    Ok(Plan {
        due: due(repo, snap.snapshot.time)?,
        mode: mode.clone(),
    })
}

/// The erasures due for one restore, and whether to apply them.
#[derive(Debug, Clone)]
pub struct Plan {
    pub due: Vec<Erasure>,
    pub mode: Erasures,
}

impl Plan {
    /// Ids of the due erasures that `keep` selects.
    fn select(&self, keep: impl Fn(&ErasureTarget) -> bool) -> Vec<&Erasure> {
        self.due.iter().filter(|e| keep(&e.target)).collect()
    }

    /// After a restore of files into `target` (the snapshot restored, the
    /// snapshot paths selected, empty meaning all): remove every restored
    /// entry whose source path matches a due path erasure (a directory
    /// with everything in it).
    pub fn apply_files(
        &self,
        repo: &Repository,
        snap: &SnapshotEntry,
        includes: &[Vec<u8>],
        target: &Path,
    ) -> Result<ErasureReport> {
        let due = self.select(|t| matches!(t, ErasureTarget::Path { .. }));
        if let Erasures::Skip { reason } = &self.mode {
            return skipped(reason, &due.into_iter().cloned().collect::<Vec<_>>());
        }
        let mut globs = Vec::new();
        for e in &due {
            if let ErasureTarget::Path { pattern } = &e.target {
                globs.push((*e, check_pattern(pattern).map_err(|err| failed(e, err))?));
            }
        }
        let mut counts = vec![0u64; globs.len()];
        if !globs.is_empty() {
            let hits = matching_entries(repo, snap, includes, |path| {
                globs.iter().position(|(_, g)| g.matches(path))
            })?;
            let mut removed: Vec<Vec<u8>> = Vec::new();
            for (i, path) in hits {
                let under_removed = removed
                    .iter()
                    .any(|r| path.starts_with(r) && path.get(r.len()) == Some(&b'/'));
                if under_removed {
                    counts[i] += 1;
                    continue;
                }
                let full = restored_path(target, &path);
                remove(&full).map_err(|why| failed(globs[i].0, why))?;
                counts[i] += 1;
                removed.push(path);
            }
        }
        Ok(ErasureReport {
            applied: globs
                .iter()
                .zip(counts)
                .map(|((e, _), n)| reapplied(e, n))
                .collect(),
            ..ErasureReport::default()
        })
    }

    /// Whether [`Plan::apply_sql`] would run any statement for
    /// `source_database`.
    pub fn runs_sql(&self, source_database: &str) -> bool {
        !matches!(self.mode, Erasures::Skip { .. })
            && !self
                .select(|t| matches!(t, ErasureTarget::Sql { database, .. } if database == source_database))
                .is_empty()
    }

    /// After a logical restore of `source_database` into the database
    /// `dsn` names: every due SQL erasure of that database, in one
    /// transaction. A failure rolls all of them back and names the one
    /// that failed.
    pub fn apply_sql(
        &self,
        rt: &Handle,
        dsn: &Dsn,
        source_database: &str,
    ) -> Result<ErasureReport> {
        let due = self.select(
            |t| matches!(t, ErasureTarget::Sql { database, .. } if database == source_database),
        );
        if let Erasures::Skip { reason } = &self.mode {
            return skipped(reason, &due.into_iter().cloned().collect::<Vec<_>>());
        }
        Ok(ErasureReport {
            applied: run_erasures(rt, dsn, &due)?,
            ..ErasureReport::default()
        })
    }

    /// After a physical restore into `datadir`, whose server holdfast does
    /// not start: write every due SQL erasure to [`PENDING_FILE`] there,
    /// for [`apply_pending`] once the server runs.
    pub fn write_pending(&self, snap: &SnapshotEntry, datadir: &Path) -> Result<ErasureReport> {
        let due = self.select(|t| matches!(t, ErasureTarget::Sql { .. }));
        if let Erasures::Skip { reason } = &self.mode {
            return skipped(reason, &due.into_iter().cloned().collect::<Vec<_>>());
        }
        if due.is_empty() {
            return Ok(ErasureReport::default());
        }
        let pending = Pending {
            version: 1,
            snapshot: snap.id.to_hex(),
            snapshot_time: snap.snapshot.time,
            erasures: due.iter().map(|e| (*e).clone()).collect(),
        };
        let path = datadir.join(PENDING_FILE);
        write_private(&path, &pending)?;
        Ok(ErasureReport {
            pending: due.iter().map(|e| reapplied(e, 0)).collect(),
            pending_file: Some(path),
            ..ErasureReport::default()
        })
    }
}

/// The entries of `snap` under the snapshot paths `includes` (empty: all)
/// that `rule` picks a rule for, with that rule's index, in walk
/// (pre-)order: a directory comes before its contents, so a caller that
/// removes it can skip them. Shared by the erasure register's and the
/// masking file's path rules.
pub(crate) fn matching_entries(
    repo: &Repository,
    snap: &SnapshotEntry,
    includes: &[Vec<u8>],
    rule: impl Fn(&[u8]) -> Option<usize>,
) -> Result<Vec<(usize, Vec<u8>)>> {
    let prefixes: Vec<Vec<u8>> = if includes.is_empty() {
        vec![b"/".to_vec()]
    } else {
        includes.to_vec()
    };
    let mut hits = Vec::new();
    for prefix in &prefixes {
        holdfast_sources::walk::walk(repo, snap.snapshot.tree, prefix, &mut |path, _| {
            if let Some(i) = rule(path) {
                hits.push((i, path.to_vec()));
            }
            Ok(())
        })?;
    }
    Ok(hits)
}

/// Where a restore into `target` put the snapshot path `path`.
pub(crate) fn restored_path(target: &Path, path: &[u8]) -> PathBuf {
    let rel = path.strip_prefix(b"/").unwrap_or(path);
    target.join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(rel))
}

/// Remove `p` (a directory with its contents); one that is not there
/// (the restore did not write it) is fine.
fn remove(p: &Path) -> std::result::Result<(), String> {
    let r = match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
    };
    r.map_err(|e| format!("removing {}: {e}", p.display()))
}

/// Run SQL erasures, grouped by nothing: all of `due` in one transaction
/// in the database `dsn` names.
fn run_erasures(rt: &Handle, dsn: &Dsn, due: &[&Erasure]) -> Result<Vec<Reapplied>> {
    let stmts: Vec<&str> = due
        .iter()
        .filter_map(|e| match &e.target {
            ErasureTarget::Sql { sql, .. } => Some(sql.as_str()),
            ErasureTarget::Path { .. } => None,
        })
        .collect();
    if stmts.is_empty() {
        return Ok(Vec::new());
    }
    let client = dsn.connect(rt).map_err(|e| {
        OpsError::from(e).context(format!(
            "connecting to re-apply erasure {} and {} other(s)",
            due[0].id,
            due.len() - 1
        ))
    })?;
    match run_in_transaction(rt, &client, &stmts, true) {
        Ok(rows) => Ok(due.iter().zip(rows).map(|(e, n)| reapplied(e, n)).collect()),
        Err((i, why)) => Err(match due.get(i) {
            Some(e) => failed(
                e,
                format!(
                    "{why} (no erasure of this restore was applied: they run in one transaction)"
                ),
            ),
            None => OpsError::invalid(format!(
                "the erasures' transaction failed in database {}: {why}",
                dsn.dbname().unwrap_or("?")
            )),
        }),
    }
}

/// The pending file of a physical restore.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    pub version: u32,
    pub snapshot: String,
    pub snapshot_time: DateTime<Utc>,
    pub erasures: Vec<Erasure>,
}

fn write_private(path: &Path, value: &impl Serialize) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e: std::io::Error| OpsError::Io {
        context: format!("writing {}", path.display()),
        cause: e,
    };
    let json = serde_json::to_vec_pretty(value)
        .map_err(|e| OpsError::invalid(format!("cannot serialise the pending erasures: {e}")))?;
    // Statements name the subjects; the file is as private as the data.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(&json).map_err(io)?;
    f.sync_all().map_err(io)
}

/// What [`apply_pending`] did.
#[derive(Debug, Clone, Serialize)]
pub struct PendingApplied {
    pub snapshot: String,
    pub applied: Vec<Reapplied>,
    /// Where the file went (renamed to [`APPLIED_FILE`]).
    pub evidence: PathBuf,
}

/// `erasure apply --datadir DIR --postgres DSN`: run the erasures a
/// physical restore left in `datadir`'s [`PENDING_FILE`] on the server
/// now running on it, one transaction per database; on success the file
/// becomes [`APPLIED_FILE`]. Audited as `erasure apply`.
pub fn apply_pending(
    repo: &Repository,
    rt: &Handle,
    datadir: &Path,
    dsn: &Dsn,
) -> Result<PendingApplied> {
    let path = datadir.join(PENDING_FILE);
    let draft = Draft::new("erasure apply", AuditOutcome::Success).touch(
        "target",
        format!("{} ({})", dsn.display(), datadir.display()),
    );
    audit::audited(
        repo,
        draft,
        || {
            let bytes = std::fs::read(&path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    OpsError::invalid(format!(
                        "{} has no {PENDING_FILE}: no erasures are pending there",
                        datadir.display()
                    ))
                } else {
                    OpsError::Io {
                        context: format!("reading {}", path.display()),
                        cause: e,
                    }
                }
            })?;
            let p: Pending = serde_json::from_slice(&bytes).map_err(|e| {
                OpsError::invalid(format!(
                    "{} is not a pending erasure file: {e}",
                    path.display()
                ))
            })?;
            let mut by_db: BTreeMap<&str, Vec<&Erasure>> = BTreeMap::new();
            for e in &p.erasures {
                if let ErasureTarget::Sql { database, .. } = &e.target {
                    by_db.entry(database.as_str()).or_default().push(e);
                }
            }
            let mut applied = Vec::new();
            for (db, due) in by_db {
                applied.extend(run_erasures(rt, &dsn.with_dbname(db), &due).map_err(|e| {
                    if applied.is_empty() {
                        e
                    } else {
                        e.context(format!(
                            "erasures of other databases were applied ({}); {PENDING_FILE} is kept, and running it again re-applies them",
                            applied.iter().map(|a: &Reapplied| a.id.clone()).collect::<Vec<_>>().join(", ")
                        ))
                    }
                })?);
            }
            let evidence = datadir.join(APPLIED_FILE);
            std::fs::rename(&path, &evidence).map_err(|e| OpsError::Io {
                context: format!("renaming {} to {}", path.display(), evidence.display()),
                cause: e,
            })?;
            Ok(PendingApplied {
                snapshot: p.snapshot,
                applied,
                evidence,
            })
        },
        |r, d| {
            d.touch("snapshot", r.snapshot.clone()).arg(
                "erasures_applied",
                r.applied.iter().map(|a| a.id.clone()).collect::<Vec<_>>(),
            )
        },
    )
}

/// What a drill's erasure step did: its check row (none when no erasure
/// applies, so the report shows no row) and the ids of the erasures it
/// re-applied, for the report and the drill's audit entry.
#[derive(Debug, Clone, Default)]
pub struct DrillErasures {
    pub check: Option<holdfast_drill::CheckResult>,
    pub applied: Vec<String>,
}

/// Where a PostgreSQL drill restored a snapshot's databases.
#[derive(Debug, Clone)]
pub enum DrillDatabases {
    /// A logical drill: each database by its name in the snapshot, and
    /// the database it was restored into.
    Restored(Vec<(String, Dsn)>),
    /// A physical drill: the whole restored cluster behind this DSN;
    /// every database it holds is the one of that name at backup.
    Cluster(Box<Dsn>),
}

/// A drill's erasure step as a check: passed when every due erasure was
/// applied; a failing check (and so a failing drill) when the register
/// cannot be read or an erasure cannot be applied — a real restore of
/// this snapshot would fail the same way.
fn drill_check(
    started: std::time::Instant,
    res: Result<(Vec<Reapplied>, Vec<String>)>,
    unit: &str,
) -> DrillErasures {
    let (passed, detail, applied) = match res {
        Ok((r, notes)) if r.is_empty() && notes.is_empty() => return DrillErasures::default(),
        Ok((r, notes)) => {
            let mut parts: Vec<String> = Vec::new();
            if !r.is_empty() {
                parts.push(format!(
                    "re-applied {}",
                    r.iter()
                        .map(|a| format!("{} ({}, {} {unit})", a.id, a.reference, a.count))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            parts.extend(notes);
            (
                true,
                parts.join("; "),
                r.into_iter().map(|a| a.id).collect(),
            )
        }
        Err(e) => (false, e.to_string(), Vec::new()),
    };
    DrillErasures {
        check: Some(holdfast_drill::CheckResult {
            kind: "erasures".into(),
            name: "GDPR erasure register".into(),
            passed,
            detail,
            seconds: started.elapsed().as_secs_f64(),
        }),
        applied,
    }
}

/// A directory drill's erasure step: every path erasure recorded after
/// `snap` applied to the scratch copy in `dir`.
pub fn drill_files_check(repo: &Repository, snap: &SnapshotEntry, dir: &Path) -> DrillErasures {
    let started = std::time::Instant::now();
    let res = plan(repo, snap, &Erasures::Apply)
        .and_then(|p| p.apply_files(repo, snap, &[], dir))
        .map(|r| (r.applied, Vec::new()));
    drill_check(started, res, "entr(ies) removed")
}

/// A PostgreSQL drill's erasure step: every SQL erasure recorded after
/// `snap` (for a point-in-time drill, after its base backup, like a real
/// restore) run in the restored database it names, one transaction per
/// database. An erasure of a database the restore does not hold (the
/// register is the repository's, shared by its sources) is named in the
/// detail, not run.
pub fn drill_sql_check(
    repo: &Repository,
    rt: &Handle,
    snap: &SnapshotEntry,
    dbs: &DrillDatabases,
) -> DrillErasures {
    let started = std::time::Instant::now();
    let res = plan(repo, snap, &Erasures::Apply).and_then(|plan| {
        let due_sql = plan.select(|t| matches!(t, ErasureTarget::Sql { .. }));
        if due_sql.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let targets = match dbs {
            DrillDatabases::Restored(v) => v.clone(),
            DrillDatabases::Cluster(admin) => cluster_databases(rt, admin)?
                .into_iter()
                .map(|db| {
                    let dsn = admin.with_dbname(&db);
                    (db, dsn)
                })
                .collect(),
        };
        let mut applied = Vec::new();
        for (source, dsn) in &targets {
            applied.extend(plan.apply_sql(rt, dsn, source)?.applied);
        }
        let notes = due_sql
            .iter()
            .filter_map(|e| match &e.target {
                ErasureTarget::Sql { database, .. }
                    if !targets.iter().any(|(s, _)| s == database) =>
                {
                    Some(format!(
                        "{} ({}) names database {database}, which this restore does not hold",
                        e.id, e.reference
                    ))
                }
                _ => None,
            })
            .collect();
        Ok((applied, notes))
    });
    drill_check(started, res, "row(s)")
}

/// The databases of a running cluster that accept connections.
fn cluster_databases(rt: &Handle, admin: &Dsn) -> Result<Vec<String>> {
    let client = admin.connect(rt).map_err(|e| {
        OpsError::from(e).context("connecting to list the restored cluster's databases")
    })?;
    let rows = rt
        .block_on(client.query(
            "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1",
            &[],
        ))
        .map_err(|e| OpsError::invalid(format!("listing the restored cluster's databases: {e}")))?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_must_be_absolute_valid_globs() {
        assert!(check_pattern("/srv/documents/patients/123/**").is_ok());
        let e = check_pattern("patients/123").unwrap_err().to_string();
        assert!(e.contains("not absolute"), "{e}");
        let e = check_pattern("/srv/[abc").unwrap_err().to_string();
        assert!(
            e.contains("not a valid glob") && e.contains("never closed"),
            "{e}"
        );
    }

    #[test]
    fn a_pattern_overlaps_the_roots_it_can_match_under() {
        let roots = vec!["/srv/documents".to_string()];
        for (pattern, overlaps) in [
            ("/srv/documents/patients/123/**", true),
            ("/srv/documents", true),
            ("/srv/**/123.pdf", true),
            ("/**/123.pdf", true),
            ("/srv/doc*/x", true),
            ("/srv/documents2/x", false),
            ("/home/alice/**", false),
            ("/srv/other/*.pdf", false),
        ] {
            assert_eq!(paths_overlap(&roots, pattern), overlaps, "{pattern}");
        }
        assert!(paths_overlap(&[], "/anything"));
        assert!(paths_overlap(&["/".to_string()], "/srv/x"));
    }
}
