//! The scheduler: each job's timetable, starting due runs, retries,
//! timeouts, the per-repository maintenance slot, reloads and the
//! graceful shutdown; and the [`StatusView`] built from all of it.
//!
//! Runs happen on blocking threads ([`crate::runner`]); everything here
//! is bookkeeping under one mutex that is never held across an await or
//! a job. A job never overlaps itself (its timetable is not due while it
//! runs; times that pass meanwhile are counted as skipped). Retention
//! and check jobs of one repository take turns (one maintenance slot per
//! repository); backups never wait for that slot: the repository's own
//! leases keep them apart from GC's critical phases.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use holdfast_config::schedule::{backoff, jitter_offset};
use holdfast_config::{Job, JobKind, Missed, SourceKind, Timetable};
use holdfast_repo::snapshot::SnapshotFilter;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch, Notify};

use crate::error::Result;
use crate::runner::{self, Attempt, Done, Stop};
use crate::setup::Setup;
use crate::state::{self, State};
use crate::view::*;

/// The longest retry wait, whatever the backoff doubles to.
const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);
/// The scheduler re-reads the clock at least this often (a wall-clock
/// jump, a suspended machine).
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// How often the alert conditions are evaluated.
const ALERT_EVERY: Duration = Duration::from_secs(2);
/// After the grace period and the stop request, how long jobs get to
/// store what they hold before the daemon exits without them.
const STOP_WAIT: Duration = Duration::from_secs(60);

/// What the binary tells a running daemon.
pub enum Control {
    /// A new configuration (SIGHUP), or why the new file was refused.
    Reload(Box<std::result::Result<Setup, String>>),
    /// Take no new jobs, let running ones finish within the grace period,
    /// then stop them (SIGTERM, SIGINT).
    Shutdown,
}

struct Slot {
    job: Job,
    timetable: Timetable,
    view: JobView,
    /// How to stop the running attempt.
    stop: Option<Stop>,
    /// A reload changed the job while it ran: its new definition, taken
    /// when the run ends.
    pending: Option<Job>,
    /// A reload removed the job while it ran.
    removed: bool,
}

#[derive(Default, Clone)]
struct Fresh {
    at: Option<DateTime<Utc>>,
    snapshot: Option<String>,
    /// The mass-change finding of the source's last backup by this daemon.
    anomaly: Option<crate::view::AnomalyView>,
}

struct Inner {
    setup: Arc<Setup>,
    /// Job names in configuration order.
    order: Vec<String>,
    slots: BTreeMap<String, Slot>,
    fresh: BTreeMap<String, Fresh>,
    drills: BTreeMap<String, DrillView>,
    repositories: BTreeMap<String, RepositoryView>,
    info: DaemonInfo,
    state: State,
    running: usize,
}

struct Shared {
    inner: Mutex<Inner>,
    /// Wakes the scheduler loop (a run ended).
    wake: Notify,
    /// Wakes the shutdown (the last run ended).
    idle: Notify,
    stopping: watch::Sender<bool>,
    state_dir: PathBuf,
    rt: Handle,
    /// One maintenance slot per repository (retention, check).
    maintenance: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A daemon: cheap to clone, shared by the scheduler, the runs and the
/// listener.
#[derive(Clone)]
pub struct Daemon {
    shared: Arc<Shared>,
}

fn timetable(
    setup: &Setup,
    job: &Job,
    last_run: Option<DateTime<Utc>>,
    missed: Missed,
    now: DateTime<Utc>,
) -> Timetable {
    let offset = jitter_offset(
        &format!("{}/{}", setup.host, job.name),
        job.jitter.duration(),
    );
    Timetable::start(job.schedule.clone(), offset, last_run, missed, now)
}

fn job_view(job: &Job) -> JobView {
    let (source, playbook) = match &job.kind {
        JobKind::Backup { source } => (Some(source.clone()), None),
        JobKind::Drill { playbook } => (None, Some(playbook.display().to_string())),
        _ => (None, None),
    };
    JobView {
        name: job.name.clone(),
        kind: job.kind.name().to_string(),
        repository: job.repository.clone(),
        source,
        playbook,
        schedule: job.schedule.expr().to_string(),
        timezone: job.schedule.timezone().name().to_string(),
        alert: job.alert.clone(),
        ..JobView::default()
    }
}

fn source_kind(k: &SourceKind) -> &'static str {
    match k {
        SourceKind::Paths { .. } => "paths",
        SourceKind::Postgres {
            mode: holdfast_config::PgMode::Logical,
            ..
        } => "postgres-logical",
        SourceKind::Postgres { .. } => "postgres-physical",
    }
}

/// Hand memory freed by a finished run (its index, its buffers) back to
/// the system: a daemon spends most of its life idle, and glibc keeps
/// freed arenas otherwise.
fn release_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A source's freshness at `now` against its RPO (no backup at all
/// breaches it too).
fn source_view(
    setup: &Setup,
    s: &holdfast_config::Source,
    fresh: Option<&Fresh>,
    now: DateTime<Utc>,
) -> SourceView {
    let f = fresh.cloned().unwrap_or_default();
    let age = f.at.map(|t| (now - t).num_milliseconds() as f64 / 1000.0);
    let rpo = s.rpo.map(|r| r.0 as f64);
    SourceView {
        name: s.name.clone(),
        kind: source_kind(&s.kind).to_string(),
        repository: setup.source_repository(&s.name),
        rpo_seconds: rpo,
        last_backup_at: f.at,
        last_snapshot: f.snapshot,
        rpo_age_seconds: age,
        rpo_breached: match (rpo, age) {
            (Some(r), Some(a)) => a > r,
            (Some(_), None) => true,
            (None, _) => false,
        },
        // Set by the last backup this daemon ran (cleared by an ordinary one).
        anomaly: f.anomaly,
    }
}

/// Whether a job takes its repository's maintenance slot.
fn is_maintenance(job: &Job) -> bool {
    matches!(job.kind, JobKind::Retention { .. } | JobKind::Check { .. })
}

impl Daemon {
    /// A daemon for `setup`, its state in `state_dir` (read now: a run
    /// missed while it was down is made up or skipped by each job's
    /// policy). `rt` runs the storage I/O of the jobs.
    pub fn new(
        setup: Setup,
        state_dir: PathBuf,
        rt: Handle,
        config_file: String,
    ) -> Result<Daemon> {
        let now = Utc::now();
        let state = state::load(&state_dir)?;
        let info = DaemonInfo {
            program_version: setup.program_version.clone(),
            host: setup.host.clone(),
            pid: std::process::id(),
            started_at: Some(now),
            config_file,
            config_loaded_at: Some(now),
            config_error: None,
            stopping: false,
        };
        let mut inner = Inner {
            setup: Arc::new(setup),
            order: Vec::new(),
            slots: BTreeMap::new(),
            fresh: BTreeMap::new(),
            drills: BTreeMap::new(),
            repositories: BTreeMap::new(),
            info,
            state,
            running: 0,
        };
        inner.install_jobs(now, true);
        let (stopping, _) = watch::channel(false);
        Ok(Daemon {
            shared: Arc::new(Shared {
                inner: Mutex::new(inner),
                wake: Notify::new(),
                idle: Notify::new(),
                stopping,
                state_dir,
                rt,
                maintenance: Mutex::new(BTreeMap::new()),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic under the lock leaves bookkeeping, not data: go on.
        self.shared
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Run until shut down: start due jobs, apply reloads, and at
    /// [`Control::Shutdown`] (or when `control` closes) wait for running
    /// jobs as the configuration's grace period says.
    pub async fn run(&self, mut control: mpsc::Receiver<Control>) {
        self.refresh_freshness();
        let alerting = tokio::spawn(self.clone().alert_loop());
        loop {
            let wait = self.tick(Utc::now());
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.shared.wake.notified() => {}
                msg = control.recv() => match msg {
                    Some(Control::Reload(new)) => self.reload(*new),
                    Some(Control::Shutdown) | None => break,
                },
            }
        }
        self.shutdown().await;
        // A last evaluation, so that a condition cleared by the final runs
        // is resolved; then the loop ends.
        self.shared.wake.notify_one();
        alerting.abort();
    }

    /// The webhook targets of the current setup.
    fn targets(&self) -> Vec<crate::alerts::Target> {
        let setup = self.lock().setup.clone();
        setup
            .config
            .alerts
            .values()
            .filter_map(|a| {
                let url = setup.webhooks.get(&a.name)?.clone();
                Some(crate::alerts::Target::from_config(a, url))
            })
            .collect()
    }

    /// Evaluate the alert conditions on the view every [`ALERT_EVERY`]
    /// and send firing and resolved notices for what changed (the
    /// notifier retries each delivery itself).
    async fn alert_loop(self) {
        let (host, version) = {
            let inner = self.lock();
            (inner.info.host.clone(), inner.info.program_version.clone())
        };
        let mut notifier = crate::alerts::Notifier::new(self.targets(), &host, &version);
        loop {
            tokio::time::sleep(ALERT_EVERY).await;
            notifier.set_targets(self.targets());
            let now = Utc::now();
            let view = self.view(now);
            for d in notifier.update(&view.alerts, now).await {
                match &d.error {
                    None => {
                        tracing::info!(target_name = %d.target, key = %d.key, event = ?d.event, attempts = d.attempts, "alert notice sent")
                    }
                    Some(e) => {
                        tracing::error!(target_name = %d.target, key = %d.key, event = ?d.event, attempts = d.attempts, error = %e, "alert notice not delivered")
                    }
                }
            }
        }
    }

    /// Start every due job; returns how long to sleep until the next one.
    fn tick(&self, now: DateTime<Utc>) -> Duration {
        let mut due = Vec::new();
        let next = {
            let mut guard = self.lock();
            let inner = &mut *guard;
            let names = inner.order.clone();
            for name in &names {
                let Some(slot) = inner.slots.get_mut(name) else {
                    continue;
                };
                if slot.timetable.due(now) {
                    let scheduled = slot.timetable.started(now);
                    let stop = Stop::default();
                    slot.stop = Some(stop.clone());
                    slot.view.running = Some(RunningView {
                        started_at: Some(now),
                        attempt: 1,
                        phase: "starting".into(),
                        bytes_done: 0,
                        bytes_total: 0,
                    });
                    due.push((slot.job.clone(), stop));
                    inner.running += 1;
                    inner.state.jobs.entry(name.clone()).or_default().last_run = Some(scheduled);
                    tracing::info!(job = %name, scheduled = %scheduled.to_rfc3339(), "job started");
                }
            }
            if !due.is_empty() {
                self.save_state(inner);
            }
            inner
                .slots
                .values()
                .filter(|s| !s.timetable.running())
                .filter_map(|s| s.timetable.next())
                .min()
        };
        for (job, stop) in due {
            let d = self.clone();
            tokio::spawn(async move { d.run_job(job, stop, now).await });
        }
        match next {
            Some(t) => (t - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(MAX_SLEEP),
            None => MAX_SLEEP,
        }
    }

    fn save_state(&self, inner: &Inner) {
        if let Err(e) = state::save(&self.shared.state_dir, &inner.state) {
            tracing::error!("{e}");
        }
    }

    fn set_phase(&self, name: &str, attempt: u32, phase: &str) {
        let mut inner = self.lock();
        if let Some(r) = inner
            .slots
            .get_mut(name)
            .and_then(|s| s.view.running.as_mut())
        {
            r.attempt = attempt;
            r.phase = phase.to_string();
        }
    }

    fn stopping(&self) -> bool {
        *self.shared.stopping.borrow()
    }

    /// One run of a job: its attempts with retries and backoff, each
    /// under the job's timeout; then the bookkeeping.
    async fn run_job(&self, job: Job, stop: Stop, started_at: DateTime<Utc>) {
        let setup = self.lock().setup.clone();
        // Held for the whole run (retries included).
        let maintenance = if is_maintenance(&job) {
            let m = {
                let mut map = self
                    .shared
                    .maintenance
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                map.entry(job.repository.clone()).or_default().clone()
            };
            self.set_phase(
                &job.name,
                1,
                "waiting for the repository's maintenance slot",
            );
            let mut stopping = self.shared.stopping.subscribe();
            let got = tokio::select! {
                g = m.lock_owned() => Some(g),
                _ = stopping.wait_for(|s| *s) => None,
            };
            if got.is_none() {
                self.finish(
                    &job,
                    started_at,
                    RunOutcome::Interrupted,
                    Some(
                        "the daemon shut down before the repository's maintenance slot was free"
                            .into(),
                    ),
                    Done::default(),
                    0,
                    0,
                );
                return;
            }
            got
        } else {
            None
        };
        let mut attempts = 0u32;
        let mut retries_used = 0u64;
        let (outcome, error, done) = loop {
            attempts += 1;
            self.set_phase(&job.name, attempts, job.kind.name());
            let (outcome, error, done) = self.attempt(&setup, &job, &stop).await;
            let retry =
                outcome == RunOutcome::Failed && attempts <= job.retries && !self.stopping();
            if !retry {
                break (outcome, error, done);
            }
            let wait = backoff(job.retry_backoff.duration(), attempts, MAX_BACKOFF);
            tracing::warn!(job = %job.name, attempt = attempts, error = error.as_deref().unwrap_or(""), retry_in_seconds = wait.as_secs_f64(), "attempt failed; retrying");
            retries_used += 1;
            self.set_phase(&job.name, attempts, "retry wait");
            let mut stopping = self.shared.stopping.subscribe();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stopping.wait_for(|s| *s) => {}
            }
        };
        drop(maintenance);
        self.finish(
            &job,
            started_at,
            outcome,
            error,
            done,
            attempts,
            retries_used,
        );
    }

    /// One attempt on a blocking thread, under the job's timeout.
    async fn attempt(
        &self,
        setup: &Arc<Setup>,
        job: &Job,
        stop: &Stop,
    ) -> (RunOutcome, Option<String>, Done) {
        let (s, j, st, rt) = (
            setup.clone(),
            job.clone(),
            stop.clone(),
            self.shared.rt.clone(),
        );
        let mut handle = tokio::task::spawn_blocking(move || runner::run(&s, &j, &st, &rt));
        let mut timed_out = false;
        let joined = match job.timeout {
            Some(t) => {
                tokio::select! {
                    r = &mut handle => r,
                    _ = tokio::time::sleep(t.duration()) => {
                        tracing::warn!(job = %job.name, timeout_seconds = t.0, "timeout: stopping the job");
                        timed_out = true;
                        stop.request();
                        handle.await
                    }
                }
            }
            None => handle.await,
        };
        match joined {
            Err(e) => (
                RunOutcome::Failed,
                Some(format!("the job's thread failed: {e}")),
                Done::default(),
            ),
            Ok(Attempt::Success(done)) => (RunOutcome::Success, None, done),
            Ok(Attempt::Failed { error, done }) if timed_out => (
                RunOutcome::TimedOut,
                Some(format!(
                    "timed out after {}; {error}",
                    job.timeout.map(|t| t.to_string()).unwrap_or_default()
                )),
                done,
            ),
            Ok(Attempt::Failed { error, done }) => (RunOutcome::Failed, Some(error), done),
            Ok(Attempt::Interrupted(msg)) if timed_out => (
                RunOutcome::TimedOut,
                Some(format!(
                    "timed out after {}: {msg}",
                    job.timeout.map(|t| t.to_string()).unwrap_or_default()
                )),
                Done::default(),
            ),
            Ok(Attempt::Interrupted(msg)) => (RunOutcome::Interrupted, Some(msg), Done::default()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        job: &Job,
        started_at: DateTime<Utc>,
        outcome: RunOutcome,
        error: Option<String>,
        done: Done,
        attempts: u32,
        retries_used: u64,
    ) {
        let now = Utc::now();
        let result = RunResult {
            started_at,
            finished_at: now,
            duration_seconds: (now - started_at).num_milliseconds() as f64 / 1000.0,
            outcome,
            attempts,
            error: error.clone(),
            bytes_read: done.bytes_read,
            bytes_added: done.bytes_added,
            snapshot: done.snapshot.clone(),
            drill: done.drill.as_ref().and_then(|d| d.drill_id.clone()),
            summary: (!done.summary.is_empty()).then(|| done.summary.clone()),
        };
        match outcome {
            RunOutcome::Success => {
                tracing::info!(job = %job.name, attempts, seconds = result.duration_seconds, summary = %done.summary, "job succeeded")
            }
            RunOutcome::Interrupted => {
                tracing::warn!(job = %job.name, error = error.as_deref().unwrap_or(""), "job interrupted")
            }
            _ => {
                tracing::error!(job = %job.name, attempts, outcome = ?outcome, error = error.as_deref().unwrap_or(""), "job failed")
            }
        }
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.running = inner.running.saturating_sub(1);
        let setup = inner.setup.clone();
        let mut remove = false;
        if let Some(slot) = inner.slots.get_mut(&job.name) {
            let before = slot.timetable.skipped();
            slot.timetable.finished(now);
            let skipped = slot.timetable.skipped() - before;
            if skipped > 0 {
                tracing::warn!(job = %job.name, skipped, "scheduled time(s) passed while the job was still running: skipped");
            }
            let v = &mut slot.view;
            v.skipped_total += skipped;
            v.running = None;
            v.runs_total += 1;
            v.retries_total += retries_used;
            if matches!(outcome, RunOutcome::Failed | RunOutcome::TimedOut) {
                v.failures_total += 1;
            }
            v.bytes_read_total += done.bytes_read;
            v.bytes_added_total += done.bytes_added;
            if outcome == RunOutcome::Success {
                v.last_success_at = Some(now);
            }
            v.last = Some(result.clone());
            slot.stop = None;
            if let Some(new) = slot.pending.take() {
                slot.timetable = timetable(&setup, &new, None, Missed::Skip, now);
                slot.view = merge_counters(job_view(&new), &slot.view);
                slot.job = new;
            }
            remove = slot.removed;
        }
        if remove {
            inner.slots.remove(&job.name);
        }
        let st = inner.state.jobs.entry(job.name.clone()).or_default();
        st.last = Some(result);
        if outcome == RunOutcome::Success {
            st.last_success_at = Some(now);
        }
        if let (JobKind::Backup { source }, Some(t)) = (&job.kind, done.snapshot_time) {
            let f = inner.fresh.entry(source.clone()).or_default();
            if f.at.is_none_or(|a| a <= t) {
                f.at = Some(t);
                f.snapshot = done.snapshot.clone();
                f.anomaly = done.anomaly.clone();
            }
        }
        if let Some(d) = done.drill {
            inner.drills.insert(d.playbook.clone(), d);
        }
        if let Some(b) = done.stored_bytes {
            let url = setup.public_url(&job.repository);
            let r = inner
                .repositories
                .entry(job.repository.clone())
                .or_insert_with(|| RepositoryView {
                    name: job.repository.clone(),
                    url,
                    ..RepositoryView::default()
                });
            r.stored_bytes = Some(b);
            r.stats_at = Some(now);
        }
        self.save_state(inner);
        let idle = inner.running == 0;
        drop(guard);
        release_memory();
        self.shared.wake.notify_one();
        if idle {
            self.shared.idle.notify_waiters();
        }
    }

    /// Apply a reload: a valid setup replaces the old one (jobs keep
    /// their counters and results; a changed schedule applies from now,
    /// or from the end of a run in progress); an invalid one is logged
    /// and shown in the view, and the old one stays.
    fn reload(&self, new: std::result::Result<Setup, String>) {
        let now = Utc::now();
        let mut inner = self.lock();
        match new {
            Err(why) => {
                tracing::error!(error = %why, "configuration not reloaded; the old one stays in force");
                inner.info.config_error = Some(why);
            }
            Ok(setup) => {
                inner.setup = Arc::new(setup);
                inner.install_jobs(now, false);
                inner.info.config_error = None;
                inner.info.config_loaded_at = Some(now);
                tracing::info!(jobs = inner.order.len(), "configuration reloaded");
                drop(inner);
                self.refresh_freshness();
                self.shared.wake.notify_one();
            }
        }
    }

    /// Read each source's newest snapshot from its repository, on a
    /// blocking thread (the scheduler does not wait for it).
    fn refresh_freshness(&self) {
        let d = self.clone();
        let setup = self.lock().setup.clone();
        self.shared.rt.spawn_blocking(move || {
            let mut repos: Vec<String> = setup
                .config
                .sources
                .keys()
                .filter_map(|s| setup.source_repository(s))
                .collect();
            repos.sort();
            repos.dedup();
            for name in repos {
                match newest_snapshots(&setup, &name, &d.shared.rt) {
                    Ok((fresh, view)) => {
                        let mut inner = d.lock();
                        for (source, f) in fresh {
                            let e = inner.fresh.entry(source).or_default();
                            if e.at < f.at {
                                *e = f;
                            }
                        }
                        let r = inner.repositories.entry(name.clone()).or_default();
                        let stored = r.stored_bytes;
                        *r = RepositoryView {
                            stored_bytes: stored,
                            ..view
                        };
                    }
                    Err(e) => {
                        tracing::warn!(repository = %name, error = %e, "cannot read the repository's snapshots (source freshness unknown)")
                    }
                }
            }
            release_memory();
        });
    }

    /// SIGTERM: no new jobs; running ones get the grace period, then are
    /// asked to stop (a backup stores and indexes what it read, writes no
    /// snapshot: the repository stays valid) and get [`STOP_WAIT`].
    async fn shutdown(&self) {
        let grace = {
            let mut inner = self.lock();
            inner.info.stopping = true;
            inner.setup.config.daemon.grace.duration()
        };
        self.shared.stopping.send_replace(true);
        let running = self.lock().running;
        tracing::info!(
            running,
            grace_seconds = grace.as_secs(),
            "shutting down: no new jobs"
        );
        if !self.wait_idle(grace).await {
            let stops: Vec<Stop> = self
                .lock()
                .slots
                .values()
                .filter_map(|s| s.stop.clone())
                .collect();
            tracing::warn!(
                jobs = stops.len(),
                "grace period over: stopping running jobs"
            );
            for s in stops {
                s.request();
            }
            if !self.wait_idle(STOP_WAIT).await {
                tracing::error!("jobs still running after the stop request; exiting without them");
            }
        }
        tracing::info!("daemon stopped");
    }

    /// Wait until no job runs, at most `limit`; whether none runs.
    async fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let idle = self.shared.idle.notified();
            if self.lock().running == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.lock().running == 0;
            }
        }
    }

    /// The daemon as the outside sees it, at `now`.
    pub fn view(&self, now: DateTime<Utc>) -> StatusView {
        let inner = self.lock();
        let setup = &inner.setup;
        let jobs = inner
            .order
            .iter()
            .filter_map(|n| inner.slots.get(n))
            .map(|s| {
                let mut v = s.view.clone();
                if !s.timetable.running() {
                    v.next_run = s.timetable.next();
                }
                if let (Some(r), Some(stop)) = (v.running.as_mut(), &s.stop) {
                    use std::sync::atomic::Ordering::Relaxed;
                    r.bytes_done = stop.progress.bytes.load(Relaxed);
                    r.bytes_total = stop.progress.total_bytes.load(Relaxed);
                }
                v
            })
            .collect();
        let sources = setup
            .config
            .sources
            .values()
            .map(|s| source_view(setup, s, inner.fresh.get(&s.name), now))
            .collect();
        let repositories = setup
            .config
            .repositories
            .keys()
            .map(|n| {
                inner
                    .repositories
                    .get(n)
                    .cloned()
                    .unwrap_or_else(|| RepositoryView {
                        name: n.clone(),
                        url: setup.public_url(n),
                        ..RepositoryView::default()
                    })
            })
            .collect();
        let mut view = StatusView {
            version: STATUS_VERSION,
            generated_at: Some(now),
            daemon: inner.info.clone(),
            sources,
            jobs,
            drills: inner.drills.values().cloned().collect(),
            repositories,
            alerts: Vec::new(),
        };
        view.alerts = crate::alerts::evaluate(&view, now);
        view
    }
}

/// A new job view for a changed job, with the old one's history.
fn merge_counters(new: JobView, old: &JobView) -> JobView {
    JobView {
        last: old.last.clone(),
        last_success_at: old.last_success_at,
        runs_total: old.runs_total,
        failures_total: old.failures_total,
        retries_total: old.retries_total,
        skipped_total: old.skipped_total,
        bytes_read_total: old.bytes_read_total,
        bytes_added_total: old.bytes_added_total,
        running: old.running.clone(),
        ..new
    }
}

impl Inner {
    /// Build (first start) or update (reload) the job slots from the setup.
    fn install_jobs(&mut self, now: DateTime<Utc>, first: bool) {
        let setup = self.setup.clone();
        let mut order = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for job in &setup.config.jobs {
            order.push(job.name.clone());
            seen.insert(job.name.clone());
            let st = self.state.jobs.get(&job.name).cloned().unwrap_or_default();
            match self.slots.get_mut(&job.name) {
                Some(slot) => {
                    slot.removed = false;
                    let same_times =
                        slot.job.schedule == job.schedule && slot.job.jitter == job.jitter;
                    if slot.timetable.running() {
                        slot.pending = Some(job.clone());
                    } else {
                        if !same_times {
                            slot.timetable = timetable(&setup, job, None, Missed::Skip, now);
                        }
                        slot.view = merge_counters(job_view(job), &slot.view);
                        slot.job = job.clone();
                    }
                }
                None => {
                    // At start the missed-run policy applies; a job added by
                    // a reload starts from now.
                    let (last_run, missed) = if first {
                        (st.last_run, job.missed)
                    } else {
                        (None, Missed::Skip)
                    };
                    let mut view = job_view(job);
                    view.last = st.last.clone();
                    view.last_success_at = st.last_success_at;
                    self.slots.insert(
                        job.name.clone(),
                        Slot {
                            job: job.clone(),
                            timetable: timetable(&setup, job, last_run, missed, now),
                            view,
                            stop: None,
                            pending: None,
                            removed: false,
                        },
                    );
                }
            }
        }
        self.slots.retain(|name, slot| {
            if seen.contains(name) {
                return true;
            }
            // A running job finishes its run; it is dropped after.
            slot.removed = true;
            slot.timetable.running()
        });
        self.order = order;
    }
}

/// The newest snapshot of each source in one repository, and the
/// repository's view (snapshot count, the bytes its snapshots describe).
fn newest_snapshots(
    setup: &Setup,
    repo: &str,
    rt: &Handle,
) -> std::result::Result<(BTreeMap<String, Fresh>, RepositoryView), String> {
    let r = runner::open(setup, repo, rt, holdfast_ops::open::Prefetch::default())?;
    let listed = holdfast_ops::inspect::snapshots(&r, &SnapshotFilter::default())
        .map_err(|e| e.to_string())?;
    let mut fresh: BTreeMap<String, Fresh> = BTreeMap::new();
    let mut logical = 0u64;
    for s in &listed.snapshots {
        logical += s.snapshot.summary.total_bytes;
        if !setup.config.sources.contains_key(&s.snapshot.source) {
            continue;
        }
        let f = fresh.entry(s.snapshot.source.clone()).or_default();
        if f.at.is_none_or(|a| a < s.snapshot.time) {
            f.at = Some(s.snapshot.time);
            f.snapshot = Some(s.id.to_hex());
        }
    }
    let view = RepositoryView {
        name: repo.to_string(),
        url: setup.public_url(repo),
        stored_bytes: None,
        logical_bytes: Some(logical),
        snapshots: Some(listed.snapshots.len() as u64),
        stats_at: Some(Utc::now()),
    };
    Ok((fresh, view))
}

/// The status from the repositories alone (`holdfast status` when no
/// daemon answers): each source's newest snapshot and its RPO age.
pub fn from_repositories(setup: &Setup, rt: &Handle, now: DateTime<Utc>) -> StatusView {
    let mut fresh = BTreeMap::new();
    let mut repositories = Vec::new();
    for name in setup.config.repositories.keys() {
        match newest_snapshots(setup, name, rt) {
            Ok((f, v)) => {
                fresh.extend(f);
                repositories.push(v);
            }
            Err(e) => {
                tracing::warn!(repository = %name, error = %e, "cannot read the repository's snapshots");
                repositories.push(RepositoryView {
                    name: name.clone(),
                    url: setup.public_url(name),
                    ..RepositoryView::default()
                });
            }
        }
    }
    let sources = setup
        .config
        .sources
        .values()
        .map(|s| source_view(setup, s, fresh.get(&s.name), now))
        .collect();
    StatusView {
        version: STATUS_VERSION,
        generated_at: Some(now),
        daemon: DaemonInfo {
            program_version: setup.program_version.clone(),
            host: setup.host.clone(),
            config_file: setup.config.file.display().to_string(),
            ..DaemonInfo::default()
        },
        sources,
        jobs: setup
            .config
            .jobs
            .iter()
            .map(|j| JobView {
                next_run: j.schedule.next_after(now),
                ..job_view(j)
            })
            .collect(),
        drills: Vec::new(),
        repositories,
        alerts: Vec::new(),
    }
}
