//! `holdfast policy validate|plan|apply`: retention policy files. The
//! planning and purging are `holdfast-ops`'s and `holdfast-policy`'s; this
//! module prints.

use anyhow::Result;
use holdfast_ops::archive::ArchiveReport;
use holdfast_ops::policy::{self as ops_policy, ApplyConfig, Outcome, PlanConfig};
use holdfast_policy::{Action, Decision, Policy, PolicyError, WalDecision};
use serde_json::json;
use tokio::runtime::Runtime;

use crate::args::{Global, PolicyApplyArgs, PolicyCommand, PolicyPlanArgs, PolicyPlanCmd};
use crate::exit;
use crate::open;
use crate::ui;

pub fn run(g: &Global, rt: &Runtime, c: PolicyCommand) -> Result<i32> {
    match c {
        PolicyCommand::Validate { files } => validate(g, &files),
        PolicyCommand::Plan(a) => plan(g, rt, a),
        PolicyCommand::Apply(a) => apply(g, rt, a),
    }
}

fn report(g: &Global, errors: &[PolicyError]) -> Result<i32> {
    ui::invalid_files(g, errors)
}

fn load(g: &Global, files: &[std::path::PathBuf]) -> Result<std::result::Result<Vec<Policy>, i32>> {
    match ops_policy::load(files) {
        Ok(p) => Ok(Ok(p)),
        Err(errors) => Ok(Err(report(g, &errors)?)),
    }
}

fn validate(g: &Global, files: &[std::path::PathBuf]) -> Result<i32> {
    let policies = match load(g, files)? {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    if g.json {
        let names: Vec<_> = policies.iter().map(|p| &p.name).collect();
        ui::print_json(&json!({"valid": true, "policies": names}))?;
    } else if !g.quiet {
        outln!(
            "{} polic{} in {} file(s): valid",
            policies.len(),
            if policies.len() == 1 { "y" } else { "ies" },
            files.len()
        );
    }
    Ok(exit::OK)
}

/// The policies and the instant of `a`, or the exit code of invalid files.
fn plan_config(g: &Global, a: &PolicyPlanArgs) -> Result<std::result::Result<PlanConfig, i32>> {
    let policies = match load(g, &a.policies)? {
        Ok(p) => p,
        Err(code) => return Ok(Err(code)),
    };
    let at = match &a.at {
        Some(t) => holdfast_ops::time::parse_time(t)?,
        None => chrono::Utc::now(),
    };
    Ok(Ok(PlanConfig { policies, at }))
}

fn action_name(a: Action) -> &'static str {
    match a {
        Action::Keep => "keep",
        Action::Archive => "archive",
        Action::Purge => "purge",
    }
}

/// One row of the plan table; `outcome` is apply's column.
fn row(d: &Decision, outcome: Option<&str>) {
    let outcome = outcome.map(|o| format!("{o:<16} ")).unwrap_or_default();
    outln!(
        "{:<8} {outcome}{:<10} {:<20} {:<18} {}",
        action_name(d.action),
        d.snapshot.get(..8).unwrap_or(&d.snapshot),
        d.time.format("%Y-%m-%d %H:%M:%S"),
        ui::escape(d.source.as_bytes()),
        d.rule
    );
    if !d.erasures.is_empty() {
        // GDPR Art. 17: which erasures this snapshot may still hold.
        outln!("         still holds erasure(s) {}", d.erasures.join(", "));
    }
}

/// The WAL archive, one line per cluster and action (the files are in
/// `--json`): how many, the first and last name, and one rule.
fn wal_summary<'a>(rows: impl Iterator<Item = (&'a WalDecision, &'a str)>) {
    let mut groups: std::collections::BTreeMap<(&str, &str), Vec<&WalDecision>> =
        std::collections::BTreeMap::new();
    for (d, what) in rows {
        groups
            .entry((d.cluster.as_str(), what))
            .or_default()
            .push(d);
    }
    for ((cluster, what), files) in groups {
        let (Some(first), Some(last)) = (files.first(), files.last()) else {
            continue;
        };
        outln!(
            "WAL of cluster {cluster}: {what} {} file(s), {} .. {} ({})",
            files.len(),
            ui::escape(first.name.as_bytes()),
            ui::escape(last.name.as_bytes()),
            first.rule
        );
    }
}

fn plan(g: &Global, rt: &Runtime, cmd: PolicyPlanCmd) -> Result<i32> {
    let cfg = match plan_config(g, &cmd.plan)? {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let at = cfg.at;
    let repo = open::open(g, rt)?;
    let plan = ops_policy::plan(&repo, &cfg)?;
    for w in &plan.warnings {
        errln!("warning: {w}");
    }
    if g.json {
        // A list of decisions, one per snapshot (`snapshot`, `action`,
        // `rule`, ...): the form scripts read. `--wal` lists the WAL files'.
        if cmd.wal {
            ui::print_json(&plan.wal)?;
        } else {
            ui::print_json(&plan.snapshots)?;
        }
        return Ok(exit::OK);
    }
    let decisions = &plan.snapshots;
    outln!(
        "{:<8} {:<10} {:<20} {:<18} rule",
        "action",
        "snapshot",
        "time",
        "source"
    );
    for d in decisions {
        if ui::stdout_closed() {
            break;
        }
        row(d, None);
    }
    wal_summary(plan.wal.iter().map(|d| (d, action_name(d.action))));
    if !g.quiet {
        let n = |a: Action| decisions.iter().filter(|d| d.action == a).count();
        outln!(
            "as of {}: keep {}, archive {}, purge {}",
            at.to_rfc3339(),
            n(Action::Keep),
            n(Action::Archive),
            n(Action::Purge)
        );
    }
    Ok(exit::OK)
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Kept => "kept",
        Outcome::WouldPurge => "would purge",
        Outcome::Purged => "purged",
        Outcome::AlreadyGone => "already gone",
        Outcome::KeptLocked => "kept: locked",
        Outcome::WouldArchive => "would archive",
        Outcome::Archived => "archived",
        Outcome::ArchiveNotPossible => "kept: no classes",
    }
}

fn apply(g: &Global, rt: &Runtime, a: PolicyApplyArgs) -> Result<i32> {
    let plan = match plan_config(g, &a.plan)? {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let repo = open::open(g, rt)?;
    let report = ops_policy::apply(
        &repo,
        &ApplyConfig {
            plan,
            delete: a.yes,
        },
    )?;
    for w in &report.warnings {
        errln!("warning: {w}");
    }
    if g.json {
        ui::print_json(&report)?;
        return Ok(exit::OK);
    }
    outln!(
        "{:<8} {:<16} {:<10} {:<20} {:<18} rule",
        "action",
        "outcome",
        "snapshot",
        "time",
        "source"
    );
    for s in &report.snapshots {
        if ui::stdout_closed() {
            break;
        }
        row(&s.decision, Some(outcome_name(s.outcome)));
        if let Some(detail) = &s.detail {
            outln!("         ({detail})");
        }
    }
    wal_summary(
        report
            .wal
            .iter()
            .map(|w| (&w.decision, outcome_name(w.outcome))),
    );
    if !g.quiet {
        let n = |o: Outcome| report.count(o);
        for r in &report.archival {
            archival_line(r);
        }
        if report.deleted {
            outln!(
                "as of {}: purged {}, kept {}, kept because locked {}, archived {}, not archivable here {}; WAL files purged {}, kept {}; run `holdfast gc` to reclaim the space",
                report.at.to_rfc3339(),
                n(Outcome::Purged) + n(Outcome::AlreadyGone),
                n(Outcome::Kept),
                n(Outcome::KeptLocked),
                n(Outcome::Archived),
                n(Outcome::ArchiveNotPossible),
                report.count_wal(Outcome::Purged) + report.count_wal(Outcome::AlreadyGone),
                report.count_wal(Outcome::Kept) + report.count_wal(Outcome::KeptLocked)
            );
        } else {
            outln!(
                "dry run as of {}: would purge {}, keep {}, archive {}; WAL files would purge {}, keep {}; nothing was changed (add --yes to purge and archive)",
                report.at.to_rfc3339(),
                n(Outcome::WouldPurge),
                n(Outcome::Kept),
                n(Outcome::WouldArchive),
                report.count_wal(Outcome::WouldPurge),
                report.count_wal(Outcome::Kept)
            );
        }
    }
    Ok(exit::OK)
}

/// One archival run in a line: packs and bytes moved (or that would
/// move), already there, kept hot because a hot snapshot needs them.
fn archival_line(r: &ArchiveReport) {
    if !r.supported {
        return; // its warning says it
    }
    outln!(
        "archival to {}: {} {} pack(s) ({}), {} already there ({}), {} shared with hot snapshots stay hot ({}), {} pack(s) of trees stay hot{}",
        r.class,
        if r.dry_run { "would move" } else { "moved" },
        r.packs_moved,
        ui::bytes(r.bytes_moved),
        r.packs_already,
        ui::bytes(r.bytes_already),
        r.packs_shared_hot,
        ui::bytes(r.bytes_shared_hot),
        r.metadata_packs,
        if r.dry_run {
            String::new()
        } else {
            format!(" in {:.1}s", r.seconds)
        }
    );
}
