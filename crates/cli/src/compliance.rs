//! `holdfast compliance report`: reads the configuration, policy and
//! playbook files, opens the repository, calls `ops::compliance` and
//! writes the report (text, JSON, HTML). The controls and their
//! thresholds are `holdfast-compliance`'s.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use holdfast_compliance::{Report, Status};
use holdfast_ops::compliance::{self as ops_compliance, ComplianceConfig};
use tokio::runtime::Runtime;

use crate::args::{ComplianceCommand, ComplianceReportArgs, Global};
use crate::exit;
use crate::open;
use crate::ui;

pub fn run(g: &Global, rt: &Runtime, c: ComplianceCommand) -> Result<i32> {
    match c {
        ComplianceCommand::Report(a) => report(g, rt, a),
    }
}

/// The playbook files named: files as given, directories' `*.toml`.
fn playbook_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading the playbook directory {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "toml") && f.is_file())
                .collect();
            found.sort();
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn report(g: &Global, rt: &Runtime, a: ComplianceReportArgs) -> Result<i32> {
    let now = chrono::Utc::now();
    let at = match &a.at {
        Some(t) => holdfast_ops::time::parse_time_or_date_end(t)?,
        None => now,
    };
    // Every input file is read and validated before the repository is
    // opened: a typo is an error, not a control that silently passes.
    let config = match &a.config {
        None => None,
        Some(f) => match holdfast_config::load_file(f) {
            Ok(c) => Some(c),
            Err(errors) => return ui::invalid_files(g, &errors),
        },
    };
    let policies = if a.policies.is_empty() {
        Vec::new()
    } else {
        match holdfast_ops::policy::load(&a.policies) {
            Ok(p) => p,
            Err(errors) => return ui::invalid_files(g, &errors),
        }
    };
    let mut playbooks = Vec::new();
    let mut errors = Vec::new();
    let files = playbook_files(&a.playbooks)?;
    if !a.playbooks.is_empty() && files.is_empty() {
        anyhow::bail!(
            "no playbook (*.toml) in {}",
            a.playbooks
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for f in &files {
        match holdfast_drill::load_file(f) {
            Ok(p) => playbooks.push(p),
            Err(e) => errors.extend(e),
        }
    }
    if !errors.is_empty() {
        return ui::invalid_files(g, &errors);
    }
    let repo = open::open(g, rt)?;
    let cfg = ComplianceConfig {
        at,
        now,
        repository: g.repo.clone().unwrap_or_default(),
        host: holdfast_repo::hostname(),
        config,
        policy_files: a.policies.clone(),
        policies,
        playbooks,
    };
    let r = ops_compliance::report(&repo, &cfg)?;
    if let Some(f) = &a.report_json {
        write_file(f, serde_json::to_string_pretty(&r)?.as_bytes())?;
    }
    if let Some(f) = &a.report_html {
        write_file(f, holdfast_compliance::html::render(&r).as_bytes())?;
    }
    for w in &r.warnings {
        errln!("holdfast: warning: {w}");
    }
    if g.json {
        ui::print_json(&r)?;
    } else if !g.quiet {
        print_summary(&r);
    }
    Ok(match r.status {
        Status::Fail => exit::COMPLIANCE_FAIL,
        Status::Attention => {
            if !g.quiet {
                errln!(
                    "holdfast: note: no control fails; {} need(s) attention",
                    r.summary.attention
                );
            }
            exit::OK
        }
        Status::Pass => exit::OK,
    })
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing the report {}", path.display()))
}

fn print_summary(r: &Report) {
    outln!(
        "compliance report of {} at {}: {} ({} pass, {} attention, {} fail)",
        ui::escape(r.repository.as_bytes()),
        r.at.format("%Y-%m-%d %H:%M:%S UTC"),
        r.status.as_str().to_uppercase(),
        r.summary.pass,
        r.summary.attention,
        r.summary.fail
    );
    for c in &r.controls {
        outln!(
            "  [{:<9}] {:<18} {}: {}",
            c.status.as_str(),
            c.id,
            c.title,
            ui::escape(c.finding.as_bytes())
        );
    }
}
