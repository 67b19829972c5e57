//! Restore drills: run a playbook (`holdfast-drill` parsed it) against an
//! open repository — choose the snapshot, restore it into a scratch
//! target, check it, time every phase, tear the target down whatever
//! happened, decide the outcome, mark a passing drill's snapshots
//! verified, and store the drill record; signed approvals of stored
//! reports (`approve`).
//!
//! Stopping: the caller's `stop` flag (SIGINT/SIGTERM in the CLI) and the
//! playbook's timeout both make the running restore or check stop at its
//! next step; teardown then runs as on any other end.

mod approve;
mod command;
mod directory;
mod history;
mod postgres;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use holdfast_drill::forecast::{self, SourceSize};
use holdfast_drill::report::ObjectivesReport;
use holdfast_drill::{pick, DrillReport, Outcome, Playbook, Restore, RestoreReport, Target};
use holdfast_repo::audit::{Draft, Outcome as AuditOutcome};
use holdfast_repo::drill::{DrillRecord, DRILL_VERSION};
use holdfast_repo::snapshot::SnapshotEntry;
use holdfast_repo::{Id, Repository};
use holdfast_sources::Progress;

use crate::audit;
use crate::error::{OpsError, Result};
use crate::verification;

pub use approve::{approvals, approve, default_meaning, report_digest, Approved};
pub use history::{drill, history, History};

/// Everything a drill needs besides the repository.
pub struct DrillConfig {
    pub playbook: Playbook,
    /// When the drill started (the RTO is measured from here; the caller
    /// starts the clock before opening the repository) and that instant
    /// on the wall clock (the RPO is measured back from it).
    pub started: Instant,
    pub started_at: DateTime<Utc>,
    /// Seconds the caller spent opening the repository and loading its
    /// index (the first phase of every restore).
    pub open_seconds: f64,
    /// Set by the caller to stop the drill (a signal); teardown still runs.
    pub stop: Arc<AtomicBool>,
    /// The seed random picks use when the playbook gives none (the caller
    /// draws it; it is recorded in the report).
    pub seed: u64,
    /// Store the drill record and the verification record (false only
    /// for tests of a drill's logic).
    pub record: bool,
    /// The host name recorded.
    pub host: String,
    /// Where scratch directories go when the playbook names none (the
    /// caller's temporary directory).
    pub scratch_parent: PathBuf,
    /// The runtime PostgreSQL connections run on (the repository's).
    pub rt: tokio::runtime::Handle,
    /// The `restore_command` a physical drill's server fetches WAL with
    /// (`None`: physical drills can recover only to the backup's end).
    pub restore_command: Option<crate::postgres::RestoreCommand>,
    /// PostgreSQL: the client tools (`pg_restore`) for server targets, and
    /// the directory of the server binaries for scratch clusters when the
    /// playbook names none (default: the newest under /usr/lib/postgresql).
    pub pg_tools: holdfast_postgres::PgTools,
    pub pg_bindir: Option<PathBuf>,
}

/// A drill's report and what could not be recorded.
pub struct DrillRun {
    pub report: DrillReport,
    /// Recording problems (the drill's result stands; its evidence may be
    /// incomplete): the drill or verification record could not be stored.
    pub warnings: Vec<String>,
    /// The drill was stopped by the caller's flag (the CLI exits 128 +
    /// the signal).
    pub interrupted: bool,
    /// The drill's outcome could not be written to the audit trail (its
    /// `started` entry was): the drill happened but is not fully on record.
    pub audit_error: Option<String>,
}

/// Why the watchdog stopped the drill.
const RUNNING: u8 = 0;
const TIMED_OUT: u8 = 1;
const INTERRUPTED: u8 = 2;

/// Stops a drill on its timeout or the caller's flag by setting the
/// restore's stop flag; ends when dropped.
struct Watchdog {
    done: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    why: Arc<AtomicU8>,
}

impl Watchdog {
    fn start(progress: Arc<Progress>, stop: Arc<AtomicBool>, deadline: Instant) -> Watchdog {
        let (done, rx) = mpsc::channel::<()>();
        let why = Arc::new(AtomicU8::new(RUNNING));
        let w = why.clone();
        let thread = std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) =
                rx.recv_timeout(Duration::from_millis(50))
            {
                let reason = if stop.load(Ordering::Relaxed) {
                    INTERRUPTED
                } else if Instant::now() >= deadline {
                    TIMED_OUT
                } else {
                    continue;
                };
                w.store(reason, Ordering::SeqCst);
                progress.request_stop();
                return;
            }
        });
        Watchdog {
            done: Some(done),
            thread: Some(thread),
            why,
        }
    }

    fn reason(&self) -> u8 {
        self.why.load(Ordering::SeqCst)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What every target's run shares: the stop flag and the clock.
pub(crate) struct Ctx<'a> {
    pub repo: &'a Arc<Repository>,
    pub progress: Arc<Progress>,
    pub seed: u64,
    pub started_at: DateTime<Utc>,
    pub scratch_parent: PathBuf,
    pub rt: tokio::runtime::Handle,
    pub pg_tools: holdfast_postgres::PgTools,
    pub pg_bindir: Option<PathBuf>,
    pub restore_command: Option<crate::postgres::RestoreCommand>,
    /// The playbook's RPO, in seconds (the pitr check compares with it).
    pub rpo: u64,
}

impl Ctx<'_> {
    pub fn stopped(&self) -> bool {
        self.progress.stop_requested()
    }
}

/// Run the drill `cfg` describes.
pub fn run(repo: &Arc<Repository>, cfg: &DrillConfig) -> Result<DrillRun> {
    let pb = &cfg.playbook;
    let progress = Arc::new(Progress::default());
    let deadline = cfg.started + Duration::from_secs(pb.objectives.timeout);
    let dog = Watchdog::start(progress.clone(), cfg.stop.clone(), deadline);
    let ctx = Ctx {
        repo,
        progress,
        seed: cfg.seed,
        started_at: cfg.started_at,
        scratch_parent: cfg.scratch_parent.clone(),
        rt: cfg.rt.clone(),
        pg_tools: cfg.pg_tools.clone(),
        pg_bindir: cfg.pg_bindir.clone(),
        restore_command: cfg.restore_command.clone(),
        rpo: pb.objectives.rpo,
    };
    // A drill reads patients' data into a scratch target: like a restore,
    // it is on the audit trail before any data is read, or it does not run.
    let draft = Draft::new("drill", AuditOutcome::Started)
        .arg("playbook", pb.name.clone())
        .arg("playbook_file", pb.file.display().to_string());
    audit::started(repo, &draft)?;
    let mut restores = Vec::new();
    let mut snapshots: Vec<Id> = Vec::new();
    // Every scratch target stays up until every restore is checked: the
    // RTO is the time until the whole set is usable, as after a site loss.
    let mut scratch: Vec<(usize, Box<dyn Teardown>)> = Vec::new();
    for (n, r) in pb.restores.iter().enumerate() {
        let mut rep = RestoreReport {
            label: r.label.clone(),
            source: r.snapshot.source.clone(),
            kind: r.snapshot.kind.clone(),
            target: r.target.kind().to_string(),
            pick: describe_pick(r),
            ..RestoreReport::default()
        };
        if n == 0 {
            // Opening the repository is part of the first restore's time.
            rep.phases
                .push(holdfast_drill::Phase::new("open", cfg.open_seconds));
        }
        if ctx.stopped() {
            rep.error = Some("not started: the drill was stopped".into());
        } else {
            match choose(&ctx, r, &mut rep) {
                Ok(snap) => {
                    snapshots.push(snap.id);
                    if let Some(t) = run_restore(&ctx, r, &snap, &mut rep) {
                        scratch.push((n, t));
                    }
                }
                Err(e) => rep.error = Some(e.to_string()),
            }
        }
        restores.push(rep);
    }
    let rto_seconds = cfg.started.elapsed().as_secs_f64();
    for (n, t) in scratch {
        let began = Instant::now();
        let res = t.teardown();
        let mut phase = holdfast_drill::Phase::new("teardown", began.elapsed().as_secs_f64());
        if let Err(e) = res {
            phase.note = Some(format!("teardown failed: {e}"));
        }
        if let Some(rep) = restores.get_mut(n) {
            rep.phases.push(phase);
        }
    }
    let reason = dog.reason();
    drop(dog);
    let error = match reason {
        TIMED_OUT => Some(format!(
            "timed out after {} (the playbook's timeout); the restore was stopped and torn down",
            holdfast_drill::duration::Human(pb.objectives.timeout)
        )),
        INTERRUPTED => {
            Some("interrupted by a signal; the restore was stopped and torn down".into())
        }
        _ => None,
    };
    let finished = Utc::now().max(cfg.started_at);
    let mut report = DrillReport {
        version: holdfast_drill::report::REPORT_VERSION,
        id: String::new(),
        playbook: pb.name.clone(),
        playbook_file: pb.file.display().to_string(),
        host: cfg.host.clone(),
        started: cfg.started_at,
        finished,
        outcome: Outcome::Error,
        objectives: ObjectivesReport {
            rto_seconds: pb.objectives.rto,
            rpo_seconds: pb.objectives.rpo,
            timeout_seconds: pb.objectives.timeout,
            site_rto_seconds: pb.objectives.site_rto,
        },
        rto_seconds,
        rto_met: false,
        rpo_seconds: None,
        rpo_met: false,
        restores,
        error,
        verification_record: None,
        forecast: None,
        approvals: Vec::new(),
    };
    report.decide();
    let mut warnings = Vec::new();
    // The forecast uses this drill too (it is the most recent measure).
    match site_forecast(repo, &report) {
        Ok(f) => report.forecast = Some(f),
        Err(e) => warnings.push(format!("the site RTO forecast could not be made: {e}")),
    }
    if cfg.record {
        if report.outcome == Outcome::Passed && !snapshots.is_empty() {
            match verification::record(repo, &snapshots, verification::METHOD_DRILL) {
                Ok(name) => report.verification_record = Some(name),
                Err(e) => warnings.push(format!(
                    "the drill passed but its snapshots could not be recorded as verified: {e}"
                )),
            }
        }
        match store(repo, &report, &snapshots) {
            Ok(id) => report.id = id,
            Err(e) => warnings.push(format!(
                "the drill record could not be stored in the repository: {e}"
            )),
        }
    }
    let mut d = draft
        .arg("outcome", report.outcome.as_str())
        .arg("rto_seconds", report.rto_seconds)
        .arg("rto_met", report.rto_met)
        .arg("rpo_met", report.rpo_met);
    if let Some(r) = report.rpo_seconds {
        d = d.arg("rpo_seconds", r);
    }
    let erased: Vec<String> = report
        .restores
        .iter()
        .flat_map(|r| r.erasures_applied.iter().cloned())
        .collect();
    if !erased.is_empty() {
        d = d.arg("erasures_applied", erased);
    }
    for id in &snapshots {
        d = d.touch("snapshot", id.to_hex());
    }
    for r in &report.restores {
        if !r.location.is_empty() {
            d = d.touch("target", r.location.clone());
        }
    }
    if !report.id.is_empty() {
        d = d.touch("drill", report.id.clone());
    }
    d.outcome = if report.outcome == Outcome::Passed {
        AuditOutcome::Success
    } else {
        d.error = Some(
            report
                .error
                .clone()
                .unwrap_or_else(|| report.outcome.as_str().to_string()),
        );
        AuditOutcome::Failure
    };
    let audit_error = audit::record(repo, &d).err().map(|e| e.to_string());
    Ok(DrillRun {
        report,
        warnings,
        interrupted: reason == INTERRUPTED,
        audit_error,
    })
}

/// A scratch target to remove after the drill (a directory, a cluster,
/// a database). Implementations also tear down when dropped, so that a
/// panic or an early return leaves nothing behind.
pub(crate) trait Teardown {
    fn teardown(self: Box<Self>) -> std::result::Result<(), String>;
}

fn store(repo: &Repository, report: &DrillReport, snapshots: &[Id]) -> Result<String> {
    let json = serde_json::to_value(report)
        .map_err(|e| OpsError::invalid(format!("cannot serialise the drill report: {e}")))?;
    let rec = DrillRecord {
        version: DRILL_VERSION,
        playbook: report.playbook.clone(),
        started: report.started,
        host: report.host.clone(),
        outcome: serde_json::to_value(report.outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        snapshots: snapshots.to_vec(),
        report: json,
    };
    Ok(repo.put_drill(&rec)?)
}

fn describe_pick(r: &Restore) -> String {
    use holdfast_drill::duration::Human;
    match &r.snapshot.pick {
        holdfast_drill::Pick::Latest => "latest".into(),
        holdfast_drill::Pick::LatestWithin(s) => format!("latest within {}", Human(*s)),
        holdfast_drill::Pick::RandomWithin { within, .. } => {
            format!("random within {}", Human(*within))
        }
    }
}

/// The snapshot the restore's pick chooses; fills in the report's
/// snapshot fields.
fn choose(ctx: &Ctx<'_>, r: &Restore, rep: &mut RestoreReport) -> Result<SnapshotEntry> {
    let all = ctx.repo.snapshots()?;
    let s = &r.snapshot;
    let candidates: Vec<SnapshotEntry> = all
        .into_iter()
        .filter(|e| {
            e.snapshot.source == s.source
                && e.snapshot.kind == s.kind
                && s.tags.iter().all(|t| e.snapshot.tags.contains(t))
        })
        .collect();
    if let Some(holdfast_drill::PointInTime::At(t)) = &s.point_in_time {
        // The newest base backup that ended before the point (pgBackRest's
        // rule): the pick does not apply, the point decides.
        let snap = holdfast_postgres::choose_base_backup(
            &candidates,
            holdfast_postgres::physical::RecoveryTarget::Time(*t),
        )
        .map_err(|e| {
            OpsError::from(e).context(format!("no base backup of {:?} reaches {t}", s.source))
        })?;
        rep.snapshot = Some(snap.id.to_hex());
        rep.snapshot_time = Some(snap.snapshot.time);
        return Ok(snap);
    }
    let times: Vec<DateTime<Utc>> = candidates.iter().map(|e| e.snapshot.time).collect();
    let (i, seed) = pick::choose(&times, &s.pick, ctx.started_at, ctx.seed).map_err(|why| {
        OpsError::invalid(format!(
            "no snapshot to restore for source {:?} (kind {}): {why}",
            s.source, s.kind
        ))
    })?;
    let snap = candidates
        .into_iter()
        .nth(i)
        .ok_or_else(|| OpsError::invalid("the chosen snapshot vanished".to_string()))?;
    rep.seed = seed;
    rep.snapshot = Some(snap.id.to_hex());
    rep.snapshot_time = Some(snap.snapshot.time);
    rep.restored_point = Some(snap.snapshot.time);
    rep.rpo_seconds = Some(age(ctx.started_at, snap.snapshot.time));
    Ok(snap)
}

/// Seconds from `point` to `at` (0 if `point` is later).
pub(crate) fn age(at: DateTime<Utc>, point: DateTime<Utc>) -> f64 {
    ((at - point).num_milliseconds() as f64 / 1000.0).max(0.0)
}

/// Restore and check; returns the scratch target to tear down.
fn run_restore(
    ctx: &Ctx<'_>,
    r: &Restore,
    snap: &SnapshotEntry,
    rep: &mut RestoreReport,
) -> Option<Box<dyn Teardown>> {
    match &r.target {
        Target::Directory { path, parent, keep } => {
            directory::run(ctx, r, snap, path.clone(), parent.clone(), *keep, rep)
        }
        Target::PostgresScratch {
            bin_dir,
            parent,
            database,
        } => {
            let t = postgres::ScratchTarget {
                bin_dir: bin_dir.clone(),
                parent: parent.clone(),
                database: database.clone(),
            };
            if r.snapshot.kind == "postgres-physical" {
                postgres::physical(ctx, r, snap, &t, rep)
            } else {
                postgres::scratch(ctx, r, snap, &t, rep)
            }
        }
        Target::PostgresServer { dsn } => postgres::server(ctx, r, snap, dsn, rep),
    }
}

/// The forecast for every source in the repository now, from the drills
/// stored so far and `current`.
fn site_forecast(repo: &Repository, current: &DrillReport) -> Result<forecast::Forecast> {
    let mut past = history(repo)?.drills;
    past.push(current.clone());
    Ok(forecast::forecast(
        &past,
        &source_sizes(repo)?,
        current.objectives.site_rto_seconds,
    ))
}

/// The size of every source now: its newest snapshot's bytes, by source
/// and kind.
pub fn source_sizes(repo: &Repository) -> Result<Vec<SourceSize>> {
    let mut newest: std::collections::BTreeMap<(String, String), &SnapshotEntry> =
        std::collections::BTreeMap::new();
    let all = repo.snapshots()?;
    for e in &all {
        let key = (e.snapshot.source.clone(), e.snapshot.kind.clone());
        let slot = newest.entry(key).or_insert(e);
        if e.snapshot.time > slot.snapshot.time {
            *slot = e;
        }
    }
    Ok(newest
        .into_iter()
        .map(|((source, kind), e)| SourceSize {
            source,
            kind,
            bytes: e.snapshot.summary.total_bytes,
        })
        .collect())
}

/// A fresh scratch directory `holdfast-drill-<what>-<n>` under `parent`.
pub(crate) fn scratch_dir(parent: &std::path::Path, what: &str, seed: u64) -> Result<PathBuf> {
    let safe: String = what
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    let mut rng = pick::SeededRng::new(seed ^ u64::from(std::process::id()));
    for _ in 0..100 {
        let p = parent.join(format!(
            "holdfast-drill-{safe}-{:08x}",
            rng.next_u64() as u32
        ));
        match std::fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(OpsError::Io {
                    context: format!("creating a scratch directory in {}", parent.display()),
                    cause: e,
                })
            }
        }
    }
    Err(OpsError::invalid(format!(
        "no free scratch directory name in {}",
        parent.display()
    )))
}
