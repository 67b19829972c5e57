//! One attempt of one job, run to its end on a blocking thread: open the
//! repository, call `holdfast-ops` exactly as the CLI's commands do, and
//! say what happened. Scheduling, retries, timeouts and the view are the
//! scheduler's; this module only runs.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use holdfast_config::{Job, JobKind, PgMode, SourceKind};
use holdfast_ops::backup::{self as ops_backup, FileBackupConfig};
use holdfast_ops::open::Prefetch;
use holdfast_repo::check::{CheckOptions, DataSubset};
use holdfast_repo::snapshot::Summary;
use holdfast_repo::Repository;
use holdfast_sources::exclude::ExcludeRules;
use holdfast_sources::{Progress, SourceError};
use tokio::runtime::Handle;

use crate::setup::Setup;
use crate::view::DrillView;

/// How the scheduler stops a running attempt (shutdown, timeout): a
/// backup of files watches `progress.stop`, a drill `flag`.
#[derive(Clone, Default)]
pub struct Stop {
    pub progress: Arc<Progress>,
    pub flag: Arc<AtomicBool>,
}

impl Stop {
    pub fn request(&self) {
        self.progress.request_stop();
        self.flag.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What a finished attempt did.
#[derive(Debug, Clone, Default)]
pub struct Done {
    pub bytes_read: u64,
    pub bytes_added: u64,
    pub snapshot: Option<String>,
    /// A backup's snapshot time (the source's freshness).
    pub snapshot_time: Option<DateTime<Utc>>,
    /// A backup's summary (the mass-change detector reads it).
    pub backup_summary: Option<Summary>,
    /// What the mass-change detector concluded after a backup of a source
    /// with `anomaly = true` (`None`: nothing unusual, or not watched).
    pub anomaly: Option<crate::view::AnomalyView>,
    pub drill: Option<DrillView>,
    /// The repository's stored bytes, when the job learnt them (GC).
    pub stored_bytes: Option<u64>,
    pub summary: String,
}

#[derive(Debug, Clone)]
pub enum Attempt {
    Success(Done),
    /// The job ran and failed (`done` holds what it did learn, e.g. a
    /// drill's report).
    Failed {
        error: String,
        done: Done,
    },
    /// Stopped by the stop flag before it finished.
    Interrupted(String),
}

fn failed(error: impl ToString) -> Attempt {
    Attempt::Failed {
        error: error.to_string(),
        done: Done::default(),
    }
}

/// Open a repository of the setup as the CLI's `open::open_for` does.
pub fn open(
    setup: &Setup,
    name: &str,
    rt: &Handle,
    want: Prefetch,
) -> Result<Arc<Repository>, String> {
    let access = setup
        .repositories
        .get(name)
        .ok_or_else(|| format!("no repository {name:?} in the configuration"))?;
    // The password's KDF runs while the repository is read, and the slot
    // it is for is read with the first listings (see `open::KdfAhead`).
    let kdf = holdfast_ops::open::KdfAhead::start(
        access.session.cache_dir.as_deref(),
        &access.location.label(),
        &access.credential,
    );
    let connected = holdfast_ops::open::connect_reading(&access.location, rt, want, kdf.as_ref())
        .map_err(|e| e.to_string())?;
    connected.probe().map_err(|e| e.to_string())?;
    let session =
        holdfast_ops::open::open_connected(connected, rt, &access.credential, &access.session, kdf)
            .map_err(|e| e.to_string())?;
    for w in &session.warnings {
        tracing::warn!(repository = name, "{w}");
    }
    Ok(session.repo)
}

/// After a backup of a watched source (`anomaly = true`): compare it with
/// the source's history and, when it looks like a mass change (an
/// encrypting attack) and `anomaly_hold` is on, hold the last snapshot
/// before it. A failure to read the history or place the hold is logged;
/// the backup itself succeeded.
fn watch_mass_change(
    setup: &Setup,
    job: &Job,
    repo: &Repository,
    source: &str,
    src: &holdfast_config::Source,
) -> Option<crate::view::AnomalyView> {
    if !src.anomaly {
        return None;
    }
    let mut finding =
        match crate::anomaly::detect_in(repo, source, &crate::anomaly::Settings::default()) {
            Ok(f) => f?,
            Err(e) => {
                tracing::warn!(job = %job.name, source, "mass-change check: {e}");
                return None;
            }
        };
    tracing::error!(job = %job.name, source, reason = %finding.reason, "mass change detected");
    if src.anomaly_hold {
        let actor = format!("holdfast-daemon@{}", setup.host);
        match crate::anomaly::hold_before(repo, source, &mut finding, &actor) {
            Ok(Some(p)) => {
                tracing::warn!(job = %job.name, source, hold = %p.view.hold.id, "last snapshot before the mass change held")
            }
            Ok(None) => {}
            Err(e) => tracing::error!(job = %job.name, source, "placing the anomaly hold: {e}"),
        }
    }
    Some(finding)
}

/// Run one attempt of `job`.
pub fn run(setup: &Setup, job: &Job, stop: &Stop, rt: &Handle) -> Attempt {
    match &job.kind {
        JobKind::Backup { source } => backup(setup, job, source, stop, rt),
        JobKind::Retention { policies, gc } => retention(setup, job, policies, *gc, rt),
        JobKind::Check { read_data_percent } => check(setup, job, *read_data_percent, rt),
        JobKind::Drill { playbook } => drill(setup, job, playbook, stop, rt),
        JobKind::StagingRefresh {
            source,
            target,
            database,
            mask,
        } => staging_refresh(setup, job, source, target, database, mask, rt),
    }
}

fn backup(setup: &Setup, job: &Job, source: &str, stop: &Stop, rt: &Handle) -> Attempt {
    let Some(src) = setup.config.sources.get(source) else {
        return failed(format!("no source {source:?} in the configuration"));
    };
    match &src.kind {
        SourceKind::Paths { paths, exclude } => {
            let mut cfg = FileBackupConfig::new(paths.clone());
            cfg.source = Some(source.to_string());
            cfg.scan = false;
            if !exclude.is_empty() {
                cfg.excludes = Some(ExcludeRules {
                    patterns: exclude.clone(),
                    ..ExcludeRules::default()
                });
            }
            if let Err(e) = ops_backup::validate(&cfg) {
                return failed(e);
            }
            let repo = match open(setup, &job.repository, rt, Prefetch::backup()) {
                Ok(r) => r,
                Err(e) => return failed(e),
            };
            let prepared = match ops_backup::prepare(&repo, &cfg) {
                Ok(p) => p,
                Err(e) => return failed(e),
            };
            match prepared.run(&repo, &stop.progress) {
                Ok(done) => {
                    let out = done.outcome;
                    for w in &out.warnings {
                        tracing::warn!(job = %job.name, "{w}");
                    }
                    let s = &out.snapshot.summary;
                    let mut summary = format!(
                        "{} files ({} new, {} changed), {} bytes read, {} added",
                        s.files_new + s.files_changed + s.files_unchanged,
                        s.files_new,
                        s.files_changed,
                        s.bytes_read,
                        s.stored_added
                    );
                    if !out.warnings.is_empty() {
                        summary.push_str(&format!(
                            "; {} file(s) could not be read and are not in the snapshot",
                            out.warnings.len()
                        ));
                    }
                    let anomaly = watch_mass_change(setup, job, &repo, source, src);
                    if let Some(a) = &anomaly {
                        summary.push_str(&format!("; mass change: {}", a.reason));
                    }
                    Attempt::Success(Done {
                        bytes_read: s.bytes_read,
                        bytes_added: s.stored_added,
                        snapshot: Some(out.id.to_hex()),
                        snapshot_time: Some(out.snapshot.time),
                        backup_summary: Some(s.clone()),
                        anomaly,
                        summary,
                        ..Done::default()
                    })
                }
                Err(holdfast_ops::OpsError::Source(SourceError::Interrupted { packs, stored })) => {
                    Attempt::Interrupted(format!(
                        "stopped: {packs} pack(s) ({stored} bytes) stored and indexed, no snapshot written"
                    ))
                }
                Err(e) => failed(e),
            }
        }
        SourceKind::Postgres { mode, .. } => {
            let Some(dsn) = setup.postgres.get(source) else {
                return failed(format!("no connection for PostgreSQL source {source:?}"));
            };
            let repo = match open(setup, &job.repository, rt, Prefetch::default()) {
                Ok(r) => r,
                Err(e) => return failed(e),
            };
            let out = match mode {
                PgMode::Logical => {
                    let opts = holdfast_postgres::LogicalBackupOptions {
                        source: Some(source.to_string()),
                        tools: setup.pg_tools.clone(),
                        ..holdfast_postgres::LogicalBackupOptions::default()
                    };
                    holdfast_ops::postgres::backup_logical(&repo, rt, dsn, &opts)
                }
                PgMode::Physical => {
                    let opts = holdfast_postgres::PhysicalBackupOptions {
                        source: Some(source.to_string()),
                        incremental: true,
                        lzma_frames: true,
                        ..holdfast_postgres::PhysicalBackupOptions::default()
                    };
                    holdfast_ops::postgres::backup_physical(&repo, rt, dsn, &opts)
                }
            };
            match out {
                Ok(out) => {
                    let s = &out.snapshot.summary;
                    Attempt::Success(Done {
                        bytes_read: s.bytes_read,
                        bytes_added: s.stored_added,
                        snapshot: Some(out.id.to_hex()),
                        snapshot_time: Some(out.snapshot.time),
                        backup_summary: Some(s.clone()),
                        summary: format!(
                            "{} ({}): {} bytes read, {} added",
                            out.snapshot.kind, source, s.bytes_read, s.stored_added
                        ),
                        ..Done::default()
                    })
                }
                Err(e) => failed(e),
            }
        }
    }
}

/// A staging refresh: the latest logical snapshot of `source`, restored
/// into `database` on the server of the source `target`, masked and
/// verified before it replaces the database there (see
/// `holdfast_ops::postgres::restore_logical`); the erasure register is
/// applied first, as for every restore.
fn staging_refresh(
    setup: &Setup,
    job: &Job,
    source: &str,
    target: &str,
    database: &str,
    mask: &std::path::Path,
    rt: &Handle,
) -> Attempt {
    let masking = match holdfast_ops::masking::Masking::load(mask) {
        Ok(m) => m,
        Err(e) => return failed(e),
    };
    let Some(dsn) = setup.postgres.get(target) else {
        return failed(format!("no connection for PostgreSQL source {target:?}"));
    };
    let repo = match open(setup, &job.repository, rt, Prefetch::restore()) {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let spec = holdfast_ops::restore::SnapshotSpec {
        spec: "latest".into(),
        filter: holdfast_repo::snapshot::SnapshotFilter {
            source: Some(source.to_string()),
            tags: Vec::new(),
            kind: None,
        },
    };
    let mut opts = holdfast_postgres::LogicalRestoreOptions::new(database);
    opts.clean = true;
    opts.tools = setup.pg_tools.clone();
    // The database the source's connection names, when it names one.
    opts.source_database = setup
        .postgres
        .get(source)
        .and_then(|d| d.dbname().map(str::to_string))
        .filter(|d| d != "postgres");
    match holdfast_ops::postgres::restore_logical(
        &repo,
        rt,
        &spec,
        dsn,
        &opts,
        &holdfast_ops::erasure::Erasures::Apply,
        Some(&masking),
    ) {
        Ok(r) => {
            let (columns, verified) = r
                .masking
                .as_ref()
                .map(|m| (m.columns.len(), m.verified))
                .unwrap_or((0, false));
            Attempt::Success(Done {
                snapshot: Some(r.snapshot.id.to_hex()),
                summary: format!(
                    "snapshot {} of {source} restored into {database} on {} ({}), {columns} column(s) masked{}, {} erasure(s) re-applied",
                    r.snapshot.id.short(),
                    dsn.display(),
                    target,
                    if verified { " and verified" } else { "" },
                    r.erasures.applied.len()
                ),
                ..Done::default()
            })
        }
        Err(e) => failed(e),
    }
}

fn retention(
    setup: &Setup,
    job: &Job,
    policies: &[std::path::PathBuf],
    gc: bool,
    rt: &Handle,
) -> Attempt {
    use holdfast_ops::policy::{self as ops_policy, ApplyConfig, Outcome, PlanConfig};
    let policies = match ops_policy::load(policies) {
        Ok(p) => p,
        Err(errors) => {
            let msgs: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            return failed(format!("invalid policy files: {}", msgs.join("; ")));
        }
    };
    let repo = match open(setup, &job.repository, rt, Prefetch::default()) {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let report = match ops_policy::apply(
        &repo,
        &ApplyConfig {
            plan: PlanConfig {
                policies,
                at: Utc::now(),
            },
            delete: true,
        },
    ) {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    for w in &report.warnings {
        tracing::warn!(job = %job.name, "{w}");
    }
    let purged = report.count(Outcome::Purged) + report.count(Outcome::AlreadyGone);
    let mut summary = format!(
        "purged {purged}, kept {} snapshot(s)",
        report.count(Outcome::Kept) + report.count(Outcome::KeptLocked)
    );
    let mut stored_bytes = None;
    if gc {
        let cfg = holdfast_ops::gc::GcConfig {
            dry_run: false,
            max_repack_percent: None,
            max_unused_percent: None,
            min_age: None,
        };
        match holdfast_ops::gc::gc(&repo, &cfg, &|_, _, _| {}) {
            Ok(r) => {
                for w in &r.warnings {
                    tracing::warn!(job = %job.name, "{w}");
                }
                summary.push_str(&format!(
                    "; gc deleted {} pack(s), {} bytes",
                    r.packs_deleted, r.bytes_deleted
                ));
                stored_bytes = Some(r.bytes_after);
            }
            Err(e) => return failed(format!("{summary}; gc: {e}")),
        }
    }
    Attempt::Success(Done {
        stored_bytes,
        summary,
        ..Done::default()
    })
}

fn check(setup: &Setup, job: &Job, percent: u8, rt: &Handle) -> Attempt {
    let repo = match open(setup, &job.repository, rt, Prefetch::default()) {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let opts = CheckOptions {
        read_data: percent == 100,
        read_data_subset: (percent > 0 && percent < 100)
            .then_some(DataSubset::Percent(f64::from(percent))),
    };
    let report = match holdfast_ops::check::check(&repo, &opts, &|_, _| {}) {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    for w in &report.warnings {
        tracing::warn!(job = %job.name, "{w}");
    }
    let summary = format!(
        "checked {} snapshot(s), {} pack(s), read {} pack(s): {} error(s)",
        report.snapshots,
        report.packs,
        report.packs_read,
        report.errors.len()
    );
    if report.ok() {
        Attempt::Success(Done {
            summary,
            ..Done::default()
        })
    } else {
        let first: Vec<&str> = report.errors.iter().take(3).map(String::as_str).collect();
        Attempt::Failed {
            error: format!(
                "check: {} error(s): {}",
                report.errors.len(),
                first.join("; ")
            ),
            done: Done {
                summary,
                ..Done::default()
            },
        }
    }
}

fn drill(
    setup: &Setup,
    job: &Job,
    playbook: &std::path::Path,
    stop: &Stop,
    rt: &Handle,
) -> Attempt {
    use holdfast_drill::Outcome;
    let started = Instant::now();
    let started_at = Utc::now();
    let playbook = match holdfast_drill::load_file(playbook) {
        Ok(p) => p,
        Err(errors) => {
            let msgs: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            return failed(format!("invalid playbook: {}", msgs.join("; ")));
        }
    };
    let repo = match open(setup, &job.repository, rt, Prefetch::restore()) {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    if let Err(e) = repo.load_index() {
        return failed(e);
    }
    let seed =
        started_at.timestamp_nanos_opt().unwrap_or_default() as u64 ^ u64::from(std::process::id());
    let cfg = holdfast_ops::drill::DrillConfig {
        playbook,
        started,
        started_at,
        open_seconds: started.elapsed().as_secs_f64(),
        stop: stop.flag.clone(),
        seed,
        record: true,
        host: setup.host.clone(),
        scratch_parent: setup.scratch_dir.clone(),
        rt: rt.clone(),
        restore_command: None,
        pg_tools: setup.pg_tools.clone(),
        pg_bindir: setup.pg_bindir.clone(),
    };
    let run = match holdfast_ops::drill::run(&repo, &cfg) {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    for w in &run.warnings {
        tracing::warn!(job = %job.name, "{w}");
    }
    let r = &run.report;
    let view = DrillView {
        playbook: r.playbook.clone(),
        drill_id: (!r.id.is_empty()).then(|| r.id.clone()),
        at: Some(r.finished),
        passed: r.outcome == Outcome::Passed,
        outcome: match r.outcome {
            Outcome::Passed => "passed",
            Outcome::CheckFailed => "check-failed",
            Outcome::TargetMissed => "target-missed",
            Outcome::Error => "error",
        }
        .to_string(),
        rto_seconds: Some(r.rto_seconds),
        rto_target_seconds: Some(r.objectives.rto_seconds as f64),
        rpo_seconds: r.rpo_seconds,
        rpo_target_seconds: Some(r.objectives.rpo_seconds as f64),
    };
    let done = Done {
        drill: Some(view),
        summary: format!(
            "drill {}: {} (RTO {:.0}s of {}s)",
            r.playbook,
            r.outcome.as_str(),
            r.rto_seconds,
            r.objectives.rto_seconds
        ),
        ..Done::default()
    };
    if run.interrupted {
        return Attempt::Interrupted(done.summary);
    }
    match (r.outcome, &run.audit_error) {
        (Outcome::Passed, None) => Attempt::Success(done),
        (Outcome::Passed, Some(e)) => Attempt::Failed {
            error: format!("the drill's outcome is not on the audit trail: {e}"),
            done,
        },
        (o, _) => Attempt::Failed {
            error: r
                .error
                .clone()
                .unwrap_or_else(|| format!("drill {}: {}", r.playbook, o.as_str())),
            done,
        },
    }
}
