//! `holdfast config validate FILE`: the daemon's configuration. Parsing
//! and validation are `holdfast-config`'s; this module prints.

use std::path::Path;

use anyhow::Result;
use holdfast_config::{load_file, Config};
use serde_json::json;

use crate::args::{ConfigCommand, Global};
use crate::exit;
use crate::ui;

pub fn run(g: &Global, c: ConfigCommand) -> Result<i32> {
    match c {
        ConfigCommand::Validate { file } => validate(g, &file),
    }
}

fn validate(g: &Global, file: &Path) -> Result<i32> {
    let config = match load_file(file) {
        Ok(c) => c,
        Err(errors) => return ui::invalid_files(g, &errors),
    };
    if g.json {
        ui::print_json(&summary(&config))?;
    } else if !g.quiet {
        outln!(
            "{}: valid: {} repositor{}, {} source(s), {} job(s), {} alert target(s)",
            file.display(),
            config.repositories.len(),
            if config.repositories.len() == 1 {
                "y"
            } else {
                "ies"
            },
            config.sources.len(),
            config.jobs.len(),
            config.alerts.len()
        );
        let now = chrono::Utc::now();
        for j in &config.jobs {
            let next = j
                .schedule
                .next_after(now)
                .map(|t| t.with_timezone(&j.schedule.timezone()).to_rfc3339())
                .unwrap_or_else(|| "never".into());
            outln!("  job {} ({}): next run {next}", j.name, j.kind.name());
        }
    }
    Ok(exit::OK)
}

fn summary(c: &Config) -> serde_json::Value {
    let now = chrono::Utc::now();
    let jobs: Vec<_> = c
        .jobs
        .iter()
        .map(|j| {
            json!({
                "name": j.name,
                "kind": j.kind.name(),
                "repository": j.repository,
                "schedule": j.schedule.expr(),
                "timezone": j.schedule.timezone().name(),
                "next_run": j.schedule.next_after(now).map(|t| t.to_rfc3339()),
            })
        })
        .collect();
    json!({
        "valid": true,
        "repositories": c.repositories.keys().collect::<Vec<_>>(),
        "sources": c.sources.keys().collect::<Vec<_>>(),
        "jobs": jobs,
        "listen": c.listen.as_ref().map(|l| l.address.to_string()),
    })
}
