//! `holdfast audit log|verify|export`: parse, call `holdfast_ops::audit`,
//! print. The rules (what is checked, the export formats) live there.

use anyhow::{Context, Result};
use holdfast_ops::audit::{self as ops_audit, ExportFormat, LogFilter};
use holdfast_repo::audit::Stored;
use serde_json::json;

use crate::args::{AuditCommand, AuditExportArgs, AuditLogArgs, Global};
use crate::{exit, open, ui};

pub fn run(g: &Global, rt: &tokio::runtime::Runtime, c: AuditCommand) -> Result<i32> {
    match c {
        AuditCommand::Log(a) => log(g, rt, a),
        AuditCommand::Verify => verify(g, rt),
        AuditCommand::Export(a) => export(g, rt, a),
    }
}

fn filter(since: Option<&str>, operation: Option<String>) -> Result<LogFilter> {
    Ok(LogFilter {
        since: since
            .map(holdfast_ops::time::parse_time_or_date)
            .transpose()?,
        operation,
    })
}

fn warn_unreadable(unreadable: &[(String, String)]) {
    for (key, why) in unreadable {
        errln!("holdfast: warning: {key}: {why}");
    }
    if !unreadable.is_empty() {
        errln!("holdfast: warning: the trail has unreadable objects: run `holdfast audit verify`");
    }
}

fn log(g: &Global, rt: &tokio::runtime::Runtime, a: AuditLogArgs) -> Result<i32> {
    let f = filter(a.since.as_deref(), a.operation)?;
    let repo = open::open(g, rt)?;
    let (entries, unreadable) = ops_audit::log(&repo, &f)?;
    warn_unreadable(&unreadable);
    if g.json {
        let list: Vec<_> = entries.iter().map(ops_audit::entry_json).collect();
        ui::print_json(&list)?;
        return Ok(exit::OK);
    }
    for s in &entries {
        outln!("{}", line(s));
    }
    Ok(exit::OK)
}

/// One entry as a line: number, time, actor, operation, outcome, what it
/// touched, its arguments, and the signature's manifestation if signed.
fn line(s: &Stored) -> String {
    let e = &s.entry;
    let mut out = format!(
        "{:>6}  {}  {}  {}  {}",
        e.seq,
        e.time.format("%Y-%m-%d %H:%M:%S"),
        clean(&e.actor),
        clean(&e.operation),
        e.outcome.as_str()
    );
    for t in &e.objects {
        out.push_str(&format!("  {}:{}", clean(&t.kind), clean(&t.id)));
    }
    if !e.args.is_empty() {
        out.push_str(&format!(
            "  {}",
            clean(&serde_json::to_string(&e.args).unwrap_or_default())
        ));
    }
    if let Some(err) = &e.error {
        out.push_str(&format!("  error: {}", clean(err)));
    }
    if let Some(m) = &e.signed {
        out.push_str(&format!(
            "\n        signed by {} ({}) at {}: {}",
            clean(&m.printed_name),
            clean(&m.signer),
            e.time.to_rfc3339(),
            clean(&m.meaning)
        ));
    }
    out
}

/// Text from an entry, with control characters escaped (an actor or a
/// path could hold a terminal escape).
fn clean(s: &str) -> String {
    ui::escape(s.as_bytes())
}

fn verify(g: &Global, rt: &tokio::runtime::Runtime) -> Result<i32> {
    let repo = open::open(g, rt)?;
    let report = ops_audit::verify(&repo)?;
    if g.json {
        ui::print_json(&json!({
            "intact": report.intact(),
            "entries": report.entries,
            "head": report.head,
            "signatures": report.signatures,
            "snapshot_heads": report.snapshot_heads,
            "witness": report.witness,
            "problems": report.problems,
        }))?;
    } else {
        for p in &report.problems {
            outln!("{}: {}", p.object, clean(&p.detail));
        }
        let head = report
            .head
            .as_ref()
            .map_or("empty".to_string(), |h| format!("head entry {}", h.seq));
        let witness = match &report.witness {
            Some(w) => format!("this machine's witness (entry {})", w.seq),
            None => "no witness on this machine".to_string(),
        };
        if report.intact() {
            outln!(
                "audit trail intact: {} entries ({head}), {} signature(s) verified, checked against {} snapshot head(s) and {witness}",
                report.entries,
                report.signatures,
                report.snapshot_heads
            );
        } else {
            outln!(
                "audit trail BROKEN: {} problem(s) in {} readable entries ({head})",
                report.problems.len(),
                report.entries
            );
        }
    }
    Ok(if report.intact() {
        exit::OK
    } else {
        exit::INTEGRITY
    })
}

fn export(g: &Global, rt: &tokio::runtime::Runtime, a: AuditExportArgs) -> Result<i32> {
    let format: ExportFormat = a.format.parse()?;
    let f = filter(a.since.as_deref(), a.operation)?;
    let repo = open::open(g, rt)?;
    let (n, unreadable) = match &a.output {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .with_context(|| format!("creating {}", path.display()))?;
            let mut w = std::io::BufWriter::new(file);
            let r = ops_audit::export(&repo, &f, format, &mut w)?;
            w.into_inner()
                .map_err(|e| e.into_error())
                .and_then(|f| f.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            r
        }
        None => {
            let mut buf = Vec::new();
            let r = ops_audit::export(&repo, &f, format, &mut buf)?;
            ui::write_stdout(format_args!("{}", String::from_utf8_lossy(&buf)));
            r
        }
    };
    warn_unreadable(&unreadable);
    if !g.quiet {
        if let Some(p) = &a.output {
            errln!("exported {n} audit entries to {}", p.display());
        }
    }
    Ok(exit::OK)
}
