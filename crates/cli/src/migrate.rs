//! `holdfast migrate`: parse, call `holdfast_repo::migrate`, print.

use anyhow::Result;
use holdfast_ops::migrate::migrate;
use serde_json::json;

use crate::args::Global;
use crate::{open, ui};

pub fn run(g: &Global, rt: &tokio::runtime::Runtime) -> Result<i32> {
    let repo = open::open(g, rt)?;
    let quiet = g.quiet || g.json;
    let report = migrate(&repo, &|step| {
        if !quiet {
            errln!("migrate: {step}");
        }
    })?;
    if g.json {
        ui::print_json(&json!(report))?;
    } else if report.already_current {
        outln!(
            "{} is already format {}: nothing to do",
            repo.location(),
            report.to
        );
    } else {
        for (old, new) in &report.snapshots {
            outln!("snapshot {old} is now {new}");
        }
        outln!(
            "migrated {} from format {} to {}: {} index object(s), {} snapshot(s), {} WAL manifest(s) re-sealed",
            repo.location(),
            report.from,
            report.to,
            report.index_objects,
            report.snapshots.len(),
            report.wal_manifests
        );
    }
    Ok(crate::exit::OK)
}
