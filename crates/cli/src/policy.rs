//! `holdfast policy validate|plan`: retention policy files. The planning
//! is `holdfast-ops`'s and `holdfast-policy`'s; this module prints.

use anyhow::Result;
use holdfast_ops::policy::{self as ops_policy, PlanConfig};
use holdfast_policy::{Action, Policy, PolicyError};
use serde_json::json;
use tokio::runtime::Runtime;

use crate::args::{Global, PolicyCommand, PolicyPlanArgs};
use crate::exit;
use crate::open;
use crate::ui;

/// Exit status for invalid policy files (as for any invalid input given on
/// the command line).
const INVALID: i32 = 2;

pub fn run(g: &Global, rt: &Runtime, c: PolicyCommand) -> Result<i32> {
    match c {
        PolicyCommand::Validate { files } => validate(g, &files),
        PolicyCommand::Plan(a) => plan(g, rt, a),
    }
}

fn report(g: &Global, errors: &[PolicyError]) -> Result<i32> {
    if g.json {
        let v: Vec<_> = errors
            .iter()
            .map(|e| json!({"file": e.file, "line": e.line, "column": e.column, "message": e.message}))
            .collect();
        ui::print_json(&json!({"valid": false, "errors": v}))?;
    }
    for e in errors {
        errln!("holdfast: error: {e}");
    }
    Ok(INVALID)
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

fn plan(g: &Global, rt: &Runtime, a: PolicyPlanArgs) -> Result<i32> {
    let policies = match load(g, &a.policies)? {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let at = match &a.at {
        Some(t) => holdfast_ops::time::parse_time(t)?,
        None => chrono::Utc::now(),
    };
    let repo = open::open(g, rt)?;
    let decisions = ops_policy::plan(&repo, &PlanConfig { policies, at })?;
    if g.json {
        ui::print_json(&decisions)?;
        return Ok(exit::OK);
    }
    outln!(
        "{:<8} {:<10} {:<20} {:<18} rule",
        "action",
        "snapshot",
        "time",
        "source"
    );
    for d in &decisions {
        if ui::stdout_closed() {
            break;
        }
        outln!(
            "{:<8} {:<10} {:<20} {:<18} {}",
            match d.action {
                Action::Keep => "keep",
                Action::Archive => "archive",
                Action::Purge => "purge",
            },
            d.snapshot.get(..8).unwrap_or(&d.snapshot),
            d.time.format("%Y-%m-%d %H:%M:%S"),
            ui::escape(d.source.as_bytes()),
            d.rule
        );
    }
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
