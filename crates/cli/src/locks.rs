//! `holdfast locks` and `holdfast unlock`: show and clear repository
//! leases (see `holdfast_repo::lease`). Printing only; the rules of
//! liveness live in the library.

use anyhow::Result;
use chrono::Utc;
use holdfast_repo::lease::LeaseEntry;
use serde_json::json;

use crate::args::{Global, UnlockArgs};
use crate::open;
use crate::ui::print_json;

/// One lease as JSON (`locks --json`, `unlock --json`).
fn entry_json(e: &LeaseEntry, now: chrono::DateTime<Utc>) -> serde_json::Value {
    let state = if e.is_live(now) { "live" } else { "stale" };
    match &e.record {
        Ok(r) => json!({
            "object": e.name,
            "host": r.host,
            "pid": r.pid,
            "user": r.user,
            "operation": r.operation,
            "mode": r.mode.to_string(),
            "start": r.start,
            "expires": e.deadline(),
            "stored": e.modified,
            "state": state,
        }),
        Err(problem) => json!({
            "object": e.name,
            "stored": e.modified,
            "expires": e.deadline(),
            "state": state,
            "problem": problem,
        }),
    }
}

/// One lease as a line: state, mode, operation, who, since, until.
fn entry_line(e: &LeaseEntry, now: chrono::DateTime<Utc>) -> String {
    let state = if e.is_live(now) { "live " } else { "stale" };
    let until = e
        .deadline()
        .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into());
    match &e.record {
        Ok(r) => format!(
            "{state}  {:<9}  {:<24}  pid {:<7} {}@{}  since {}  until {}  ({})",
            r.mode.to_string(),
            r.operation,
            r.pid,
            r.user,
            r.host,
            r.start.format("%Y-%m-%d %H:%M:%S"),
            until,
            e.name.get(..12).unwrap_or(&e.name),
        ),
        Err(problem) => format!(
            "{state}  unreadable lock object locks/{}: {problem}",
            e.name
        ),
    }
}

pub fn locks(g: &Global, rt: &tokio::runtime::Runtime) -> Result<i32> {
    let repo = open::open(g, rt)?;
    let entries = repo.leases()?;
    let now = Utc::now();
    if g.json {
        let v: Vec<_> = entries.iter().map(|e| entry_json(e, now)).collect();
        print_json(&v)?;
        return Ok(crate::exit::OK);
    }
    if entries.is_empty() {
        outln!("no locks");
    }
    for e in &entries {
        outln!("{}", entry_line(e, now));
    }
    Ok(crate::exit::OK)
}

pub fn unlock(g: &Global, rt: &tokio::runtime::Runtime, a: UnlockArgs) -> Result<i32> {
    let repo = open::open(g, rt)?;
    let done = repo.unlock(a.force)?;
    let now = Utc::now();
    if g.json {
        print_json(&json!({
            "removed": done.removed.iter().map(|e| entry_json(e, now)).collect::<Vec<_>>(),
            "kept": done.kept.iter().map(|e| entry_json(e, now)).collect::<Vec<_>>(),
        }))?;
        return Ok(crate::exit::OK);
    }
    for e in &done.removed {
        outln!("removed {}", entry_line(e, now));
    }
    for e in &done.kept {
        outln!("kept    {}", entry_line(e, now));
    }
    if done.removed.is_empty() {
        outln!("no stale locks to remove");
    }
    if !done.kept.is_empty() {
        errln!(
            "holdfast: {} live lock(s) kept: their processes may be running; `unlock --force` removes them too (a running holder then fails before it commits)",
            done.kept.len()
        );
    }
    Ok(crate::exit::OK)
}
