//! `holdfast erasure add|list|apply`: the GDPR erasure register, and what
//! every restore prints about the erasures it applied. The records, their
//! checks and the re-application are `holdfast-ops`'s (`erasure`); this
//! module calls them with the session's actor and prints.

use anyhow::{bail, Result};
use holdfast_ops::erasure::{self as ops_erasure, AddConfig, AddTarget, ErasureReport, Erasures};
use tokio::runtime::Runtime;

use crate::args::{ErasureAddArgs, ErasureApplyArgs, ErasureCommand, Global, RestoreArgs};
use crate::exit;
use crate::open;
use crate::ui;

pub fn run(g: &Global, rt: &Runtime, c: ErasureCommand) -> Result<i32> {
    match c {
        ErasureCommand::Add(a) => add(g, rt, a),
        ErasureCommand::List => list(g, rt),
        ErasureCommand::Apply(a) => apply(g, rt, a),
    }
}

/// What a restore does about the register: `--skip-erasures --reason`.
pub fn mode(a: &RestoreArgs) -> Result<Erasures> {
    match (a.skip_erasures, &a.reason) {
        (true, Some(r)) => Ok(Erasures::Skip { reason: r.clone() }),
        (true, None) => bail!("--skip-erasures needs --reason TEXT (it is audited)"),
        (false, _) => Ok(Erasures::Apply),
    }
}

/// The lines a restore's summary adds about erasures (to stdout), and a
/// warning (to stderr) when the register was skipped.
pub fn print_report(g: &Global, r: &ErasureReport) {
    if let Some(reason) = &r.skipped {
        errln!(
            "holdfast: warning: the GDPR erasure register was NOT applied ({} erasure(s) due: {}); reason given: {}",
            r.not_applied.len(),
            if r.not_applied.is_empty() {
                "none".to_string()
            } else {
                r.not_applied.join(", ")
            },
            ui::escape(reason.as_bytes())
        );
    }
    if g.quiet || g.json {
        return;
    }
    for a in &r.applied {
        outln!(
            "erasure {} ({}) re-applied: {} ({} {})",
            a.id,
            ui::escape(a.reference.as_bytes()),
            ui::escape(a.target.describe().as_bytes()),
            a.count,
            match a.target {
                holdfast_repo::erasure::ErasureTarget::Sql { .. } => "row(s)",
                holdfast_repo::erasure::ErasureTarget::Path { .. } => "restored entr(ies) removed",
            }
        );
    }
    if let Some(f) = &r.pending_file {
        outln!(
            "{} erasure(s) pending in {} ({}): after starting the server, run `holdfast erasure apply --datadir {} --postgres DSN` before anyone uses the data",
            r.pending.len(),
            f.display(),
            r.pending
                .iter()
                .map(|p| p.id.clone())
                .collect::<Vec<_>>()
                .join(", "),
            f.parent().map(|p| p.display().to_string()).unwrap_or_default()
        );
    }
    if r.skipped.is_none() && r.applied.is_empty() && r.pending.is_empty() {
        outln!("no erasure recorded after this snapshot applies to it");
    }
}

fn add(g: &Global, rt: &Runtime, a: ErasureAddArgs) -> Result<i32> {
    let target = match (a.sql, a.path) {
        (Some(sql), None) => {
            let (Some(database), Some(dsn)) = (a.database, a.postgres) else {
                bail!(
                    "--sql needs --database DB and --postgres DSN (the statement is checked there)"
                );
            };
            AddTarget::Sql {
                sql,
                database,
                dsn: Box::new(crate::postgres::dsn_from(&dsn)?),
            }
        }
        (None, Some(pattern)) => AddTarget::Path { pattern },
        _ => bail!("give --sql STMT --database DB --postgres DSN, or --path PATTERN"),
    };
    let repo = open::open(g, rt)?;
    let added = ops_erasure::add(
        &repo,
        rt.handle(),
        &AddConfig {
            reference: a.reference,
            target,
            reason: a.reason,
            actor: repo.audit_actor(),
        },
    )?;
    if g.json {
        ui::print_json(&added)?;
    } else if !g.quiet {
        let e = &added.erasure;
        outln!(
            "recorded erasure {} ({}): {}{}",
            e.id,
            ui::escape(e.reference.as_bytes()),
            ui::escape(e.target.describe().as_bytes()),
            added
                .dry_run_rows
                .map(|n| format!(
                    "; the statement ran in a rolled-back transaction and would change {n} row(s) now"
                ))
                .unwrap_or_default()
        );
        outln!("every restore of a snapshot taken before now applies it again");
    }
    Ok(exit::OK)
}

fn list(g: &Global, rt: &Runtime) -> Result<i32> {
    let repo = open::open(g, rt)?;
    let listed = ops_erasure::list(&repo)?;
    for w in &listed.warnings {
        errln!("warning: {w}");
    }
    if g.json {
        ui::print_json(&listed.erasures)?;
        return Ok(exit::OK);
    }
    outln!(
        "{:<25} {:<16} {:<20} {:<20}  erases",
        "erasure",
        "reference",
        "recorded",
        "by"
    );
    for e in &listed.erasures {
        if ui::stdout_closed() {
            break;
        }
        outln!(
            "{:<25} {:<16} {:<20} {:<20}  {}",
            e.id,
            ui::escape(e.reference.as_bytes()),
            e.recorded_at.format("%Y-%m-%d %H:%M:%S"),
            ui::escape(e.recorded_by.as_bytes()),
            ui::escape(e.target.describe().as_bytes())
        );
    }
    if !g.quiet {
        outln!("{} erasure(s)", listed.erasures.len());
    }
    Ok(exit::OK)
}

fn apply(g: &Global, rt: &Runtime, a: ErasureApplyArgs) -> Result<i32> {
    let dsn = crate::postgres::dsn_from(&a.postgres)?;
    let repo = open::open(g, rt)?;
    let done = ops_erasure::apply_pending(&repo, rt.handle(), &a.datadir, &dsn)?;
    if g.json {
        ui::print_json(&done)?;
    } else if !g.quiet {
        for r in &done.applied {
            outln!(
                "erasure {} ({}) applied: {} ({} row(s))",
                r.id,
                ui::escape(r.reference.as_bytes()),
                ui::escape(r.target.describe().as_bytes()),
                r.count
            );
        }
        outln!(
            "{} erasure(s) applied; the record is kept as {}",
            done.applied.len(),
            done.evidence.display()
        );
    }
    Ok(exit::OK)
}
