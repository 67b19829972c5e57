//! `holdfast drill validate|run|history|approve`: restore drills. Playbooks are
//! `holdfast-drill`'s, running them is `holdfast-ops`'s (`ops::drill`);
//! this module opens the repository, passes signals on, prints and picks
//! the exit code.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use holdfast_drill::duration::{measured, Human};
use holdfast_drill::forecast::Forecast;
use holdfast_drill::{DrillReport, Outcome, Playbook, PlaybookError};
use holdfast_ops::drill::{self as ops_drill, DrillConfig};
use holdfast_repo::prefetch::Prefetch;
use serde_json::json;
use tokio::runtime::Runtime;

use crate::args::{DrillApproveArgs, DrillCommand, DrillHistoryArgs, DrillRunArgs, Global};
use crate::exit;
use crate::interrupt;
use crate::open;
use crate::ui;

pub fn run(g: &Global, rt: &Runtime, c: DrillCommand) -> Result<i32> {
    match c {
        DrillCommand::Validate { files } => validate(g, &files),
        DrillCommand::Run(a) => run_drill(g, rt, a),
        DrillCommand::History(a) => history(g, rt, a),
        DrillCommand::Approve(a) => approve(g, rt, a),
    }
}

fn report_errors(g: &Global, errors: &[PlaybookError]) -> Result<i32> {
    ui::invalid_files(g, errors)
}

fn validate(g: &Global, files: &[std::path::PathBuf]) -> Result<i32> {
    let mut errors = Vec::new();
    let mut names = Vec::new();
    for f in files {
        match holdfast_drill::load_file(f) {
            Ok(p) => names.push(p.name),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if !errors.is_empty() {
        return report_errors(g, &errors);
    }
    if g.json {
        ui::print_json(&json!({"valid": true, "playbooks": names}))?;
    } else if !g.quiet {
        outln!("{} playbook(s): valid", names.len());
    }
    Ok(exit::OK)
}

/// A seed for random picks: not secret, only different from run to run.
fn drawn_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// A thread that sets `stop` when SIGINT or SIGTERM arrives; ends when
/// `done` is set.
fn signal_watch(stop: Arc<AtomicBool>, done: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !done.load(Ordering::Relaxed) {
            if interrupt::received().is_some() {
                stop.store(true, Ordering::Relaxed);
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    })
}

fn run_drill(g: &Global, rt: &Runtime, a: DrillRunArgs) -> Result<i32> {
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    let playbook = match holdfast_drill::load_file(&a.playbook) {
        Ok(p) => p,
        Err(e) => return report_errors(g, &e),
    };
    // The first signal stops the drill, which then tears its targets down;
    // a second one ends the process at once (see `interrupt`).
    interrupt::install().context("installing signal handlers")?;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = signal_watch(stop.clone(), done.clone());
    let result = drill_in_repo(g, rt, &a, playbook, started, started_at, stop);
    done.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    let run = match result {
        Ok(r) => r,
        Err(e) => {
            errln!("holdfast: error: {}", crate::error_chain(&e));
            errln!("holdfast: the drill could not start; nothing was checked");
            return Ok(exit::DRILL_ERROR);
        }
    };
    for w in &run.warnings {
        errln!("holdfast: warning: {w}");
    }
    let r = &run.report;
    if let Some(f) = &a.report_json {
        let text = serde_json::to_string_pretty(r)?;
        write_file(f, text.as_bytes())?;
    }
    if let Some(f) = &a.report_html {
        let past = match open_repo(g, rt, None) {
            Ok(repo) => ops_drill::history(&repo)
                .map(|h| h.drills)
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let html = holdfast_drill::html::render(r, &past);
        write_file(f, html.as_bytes())?;
    }
    if g.json {
        ui::print_json(&serde_json::to_value(r)?)?;
    } else if !g.quiet {
        print_summary(r);
    }
    if let Some(e) = &run.audit_error {
        // Never a success without its record on the trail.
        errln!("holdfast: error: the drill's outcome is not on the audit trail: {e}");
        if r.outcome == Outcome::Passed {
            return Ok(exit::ERROR);
        }
    }
    if run.interrupted {
        if let Some(sig) = interrupt::received() {
            return Ok(128 + sig);
        }
    }
    Ok(match r.outcome {
        Outcome::Passed => exit::OK,
        Outcome::CheckFailed => exit::DRILL_CHECK_FAILED,
        Outcome::TargetMissed => exit::DRILL_TARGET_MISSED,
        Outcome::Error => exit::DRILL_ERROR,
    })
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing the report {}", path.display()))
}

/// The global options, with the playbook's repository when none was given.
fn effective(g: &Global, playbook: Option<&Playbook>) -> Global {
    let mut g = g.clone();
    if g.repo.is_none() {
        g.repo = playbook.and_then(|p| p.repository.clone());
    }
    g
}

fn open_repo(
    g: &Global,
    rt: &Runtime,
    playbook: Option<&Playbook>,
) -> Result<Arc<holdfast_repo::Repository>> {
    open::open_for(&effective(g, playbook), rt, Prefetch::restore())
}

fn drill_in_repo(
    g: &Global,
    rt: &Runtime,
    a: &DrillRunArgs,
    playbook: Playbook,
    started: Instant,
    started_at: chrono::DateTime<chrono::Utc>,
    stop: Arc<AtomicBool>,
) -> Result<ops_drill::DrillRun> {
    let repo = open_repo(g, rt, Some(&playbook))?;
    repo.load_index()?;
    let open_seconds = started.elapsed().as_secs_f64();
    // Only point-in-time drills need it; they say so when it is missing.
    let restore_command = crate::postgres::restore_command(&effective(g, Some(&playbook))).ok();
    let cfg = DrillConfig {
        playbook,
        started,
        started_at,
        open_seconds,
        stop,
        seed: a.seed.unwrap_or_else(drawn_seed),
        record: true,
        host: holdfast_repo::hostname(),
        scratch_parent: std::env::temp_dir(),
        rt: rt.handle().clone(),
        pg_tools: holdfast_postgres::PgTools::discover_in(
            std::env::var_os("HOLDFAST_PG_BINDIR").map(Into::into),
            std::env::var_os("HOLDFAST_PG_DUMP").map(Into::into),
        ),
        pg_bindir: std::env::var_os("HOLDFAST_PG_BINDIR").map(Into::into),
        restore_command,
    };
    Ok(ops_drill::run(&repo, &cfg)?)
}

fn mark(passed: bool) -> &'static str {
    if passed {
        "pass"
    } else {
        "FAIL"
    }
}

fn print_summary(r: &DrillReport) {
    let id = if r.id.is_empty() {
        "not recorded".to_string()
    } else {
        r.id.clone()
    };
    outln!(
        "drill {} ({id}): {}",
        r.playbook,
        r.outcome.as_str().to_uppercase()
    );
    if let Some(e) = &r.error {
        outln!("stopped: {e}");
    }
    for rs in &r.restores {
        let snap = match (&rs.snapshot, rs.snapshot_time) {
            (Some(id), Some(t)) => format!(
                "snapshot {} of {}",
                id.get(..8).unwrap_or(id),
                t.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            _ => "no snapshot".to_string(),
        };
        let seed = rs.seed.map(|s| format!(", seed {s}")).unwrap_or_default();
        outln!(
            "restore {}: {snap} ({}{seed}) into {} {}",
            rs.label,
            rs.pick,
            rs.target,
            rs.location
        );
        if !rs.phases.is_empty() {
            let phases: Vec<String> = rs
                .phases
                .iter()
                .map(|p| format!("{} {}", p.name, measured(p.seconds)))
                .collect();
            outln!("  phases: {}", phases.join(", "));
        }
        for c in &rs.checks {
            outln!(
                "  [{}] {}: {} — {}",
                mark(c.passed),
                c.kind,
                c.name,
                c.detail
            );
        }
        if let Some(e) = &rs.error {
            outln!("  error: {e}");
        }
    }
    outln!(
        "RTO: {} measured, target {} ({})",
        measured(r.rto_seconds),
        Human(r.objectives.rto_seconds),
        if r.rto_met { "met" } else { "MISSED" }
    );
    outln!(
        "RPO: {} measured, target {} ({})",
        r.rpo_seconds.map_or("-".to_string(), measured),
        Human(r.objectives.rpo_seconds),
        if r.rpo_met { "met" } else { "MISSED" }
    );
    for m in r.misses() {
        outln!("{m}");
    }
    if let Some(v) = &r.verification_record {
        outln!("snapshot(s) recorded as verified: verified/{v}");
    }
    if let Some(f) = &r.forecast {
        print_forecast(f);
    }
}

fn print_forecast(f: &Forecast) {
    outln!(
        "site RTO forecast: {}{}{}",
        measured(f.total_seconds),
        if f.complete { "" } else { " at least" },
        match (f.site_rto_seconds, f.meets_site_rto) {
            (Some(t), Some(true)) => format!(", target {} (met)", Human(t)),
            (Some(t), _) => format!(", target {} (NOT MET)", Human(t)),
            _ => String::new(),
        }
    );
    for s in &f.sources {
        outln!(
            "  {} ({}, {}): {}",
            s.source,
            s.kind,
            ui::bytes(s.bytes),
            match s.seconds {
                Some(t) => format!("{} (from {} drill(s))", measured(t), s.drills),
                None => "no drill of this kind yet".to_string(),
            }
        );
    }
}

fn approve(g: &Global, rt: &Runtime, a: DrillApproveArgs) -> Result<i32> {
    // The key is read (and its permissions checked) before anything.
    let key = holdfast_ops::signers::read_signing_key(&a.sign_key)?;
    let repo = open_repo(g, rt, None)?;
    let signing = holdfast_ops::signers::signing(&repo, key)?;
    let done = ops_drill::approve(&repo, &a.id, a.meaning.as_deref(), &signing)?;
    if g.json {
        ui::print_json(&done)?;
    } else if !g.quiet {
        outln!(
            "drill {} ({}, {}) approved by {} ({}) at {}: \"{}\"; report BLAKE3 {}; audit entry {}",
            done.drill,
            ui::escape(done.playbook.as_bytes()),
            done.outcome,
            ui::escape(done.printed_name.as_bytes()),
            done.signer,
            done.time.format("%Y-%m-%d %H:%M:%S UTC"),
            ui::escape(done.meaning.as_bytes()),
            done.report_blake3,
            done.audit_seq
        );
    }
    Ok(exit::OK)
}

fn print_approvals(d: &DrillReport) {
    for ap in &d.approvals {
        outln!(
            "  approved by {} ({}) at {}{}",
            ui::escape(ap.printed_name.as_bytes()),
            ap.signer,
            ap.time.format("%Y-%m-%d %H:%M:%S UTC"),
            match (&ap.problem, ap.verified) {
                (_, true) => String::new(),
                (Some(p), false) => format!(" — NOT VERIFIED: {p}"),
                (None, false) => " — NOT VERIFIED".to_string(),
            }
        );
    }
}

fn history(g: &Global, rt: &Runtime, a: DrillHistoryArgs) -> Result<i32> {
    let repo = open_repo(g, rt, None)?;
    let h = ops_drill::history(&repo)?;
    for (name, why) in &h.unreadable {
        errln!("holdfast: warning: drill record drills/{name} cannot be read: {why}");
    }
    if let Some(e) = &h.approvals_error {
        errln!("holdfast: warning: approvals cannot be read from the audit trail; drills are shown without them: {e}");
    }
    let all = h.drills.clone();
    let mut drills = h.drills;
    if let Some(n) = a.last {
        let skip = drills.len().saturating_sub(n);
        drills.drain(..skip);
    }
    let site_rto = drills
        .iter()
        .rev()
        .find_map(|d| d.objectives.site_rto_seconds);
    let forecast =
        holdfast_drill::forecast::forecast(&all, &ops_drill::source_sizes(&repo)?, site_rto);
    if g.json {
        ui::print_json(&json!({"drills": drills, "forecast": forecast}))?;
        return Ok(exit::OK);
    }
    if drills.is_empty() {
        outln!("no drills recorded");
    } else {
        outln!(
            "{:<26} {:<24} {:<14} {:>9} {:>9} {:>9} {:>9}",
            "ID",
            "PLAYBOOK",
            "OUTCOME",
            "RTO",
            "TARGET",
            "RPO",
            "TARGET"
        );
    }
    for d in &drills {
        outln!(
            "{:<26} {:<24} {:<14} {:>9} {:>9} {:>9} {:>9}",
            d.id,
            ui::escape(d.playbook.as_bytes()),
            d.outcome.as_str(),
            measured(d.rto_seconds),
            Human(d.objectives.rto_seconds).to_string(),
            d.rpo_seconds.map_or("-".to_string(), measured),
            Human(d.objectives.rpo_seconds).to_string()
        );
        print_approvals(d);
    }
    print_forecast(&forecast);
    Ok(exit::OK)
}
