//! `holdfast hold place|release|list|show`: legal holds. The records and
//! their checks are `holdfast-ops`'s; this module calls them with the
//! session's actor (`HOLDFAST_ACTOR`, else `user@host`) and prints.

use anyhow::Result;
use holdfast_ops::holds::{
    self as ops_holds, HoldView, LegalHolds, PlaceConfig, ReleaseConfig, Target,
};
use tokio::runtime::Runtime;

use crate::args::{Global, HoldCommand, HoldPlaceArgs, HoldReleaseArgs};
use crate::exit;
use crate::open;
use crate::ui;

pub fn run(g: &Global, rt: &Runtime, c: HoldCommand) -> Result<i32> {
    match c {
        HoldCommand::Place(a) => place(g, rt, a),
        HoldCommand::Release(a) => release(g, rt, a),
        HoldCommand::List { all } => list(g, rt, all),
        HoldCommand::Show { id } => show(g, rt, &id),
        HoldCommand::Sync => sync(g, rt),
    }
}

/// The legal-hold part of a summary line.
fn legal(l: &LegalHolds, verb: &str, n: usize) -> String {
    if l.supported {
        format!("; Object Lock legal hold {verb} on {n} object(s)")
    } else {
        "; this storage has no legal holds: holdfast honours the hold, the files themselves are not locked".into()
    }
}

fn sync(g: &Global, rt: &Runtime) -> Result<i32> {
    let repo = open::open(g, rt)?;
    let done = ops_holds::sync(&repo)?;
    if g.json {
        ui::print_json(&done)?;
    } else if !g.quiet {
        if done.supported {
            outln!(
                "legal holds in storage: set on {} object(s) active holds need, removed from {} object(s) only released holds needed",
                done.placed,
                done.removed
            );
        } else {
            outln!("this storage has no legal holds; nothing to do");
        }
    }
    Ok(exit::OK)
}

fn place(g: &Global, rt: &Runtime, a: HoldPlaceArgs) -> Result<i32> {
    let target = match a.source {
        Some(source) => Target::Source {
            source,
            from: a.from,
            to: a.to,
        },
        None => Target::Snapshots(a.snapshots),
    };
    let repo = open::open(g, rt)?;
    let placed = ops_holds::place(
        &repo,
        &PlaceConfig {
            target,
            case: a.case,
            reason: a.reason,
            actor: repo.audit_actor(),
        },
    )?;
    for w in &placed.warnings {
        errln!("warning: {w}");
    }
    if g.json {
        ui::print_json(&placed)?;
    } else if !g.quiet {
        let v = &placed.view;
        outln!(
            "placed hold {} (case {}) on {}: {} snapshot(s) held now{}",
            v.hold.id,
            ui::escape(v.hold.case.as_bytes()),
            ui::escape(v.hold.selector.describe().as_bytes()),
            v.snapshots.len(),
            legal(&placed.legal_holds, "set", placed.legal_holds.placed)
        );
    }
    Ok(exit::OK)
}

fn release(g: &Global, rt: &Runtime, a: HoldReleaseArgs) -> Result<i32> {
    let require = match holdfast_policy::load_settings(&a.policies) {
        Ok(s) => s.require_signed_release,
        Err(errors) => {
            for e in &errors {
                errln!("holdfast: error: {e}");
            }
            return Ok(2);
        }
    };
    // The key is read (and its permissions checked) before anything.
    let key = a
        .sign_key
        .as_deref()
        .map(holdfast_ops::signers::read_signing_key)
        .transpose()?;
    let repo = open::open(g, rt)?;
    let signing = key
        .map(|k| holdfast_ops::signers::signing(&repo, k))
        .transpose()?;
    let released = ops_holds::release_signed(
        &repo,
        &ReleaseConfig {
            hold: a.id,
            reason: a.reason,
            actor: repo.audit_actor(),
        },
        signing.as_ref(),
        require,
    )?;
    if g.json {
        ui::print_json(&released)?;
    } else if !g.quiet {
        outln!(
            "released hold {} (case {}); its snapshots are subject to retention again unless another hold covers them{}",
            released.release.hold,
            ui::escape(released.release.case.as_bytes()),
            legal(&released.legal_holds, "removed", released.legal_holds.removed)
        );
    }
    Ok(exit::OK)
}

fn list(g: &Global, rt: &Runtime, all: bool) -> Result<i32> {
    let repo = open::open(g, rt)?;
    let listed = ops_holds::list(&repo, all)?;
    for w in &listed.warnings {
        errln!("warning: {w}");
    }
    if g.json {
        ui::print_json(&listed.holds)?;
        return Ok(exit::OK);
    }
    outln!(
        "{:<9} {:<8} {:<16} {:<20} {:<20} {:>9}  covers",
        "hold",
        "state",
        "case",
        "placed",
        "by",
        "snapshots"
    );
    for v in &listed.holds {
        if ui::stdout_closed() {
            break;
        }
        outln!(
            "{:<9} {:<8} {:<16} {:<20} {:<20} {:>9}  {}",
            v.hold.id,
            if v.active { "active" } else { "released" },
            ui::escape(v.hold.case.as_bytes()),
            v.hold.placed_at.format("%Y-%m-%d %H:%M:%S"),
            ui::escape(v.hold.placed_by.as_bytes()),
            v.snapshots.len(),
            ui::escape(v.hold.selector.describe().as_bytes())
        );
    }
    if !g.quiet {
        outln!("{} hold(s)", listed.holds.len());
    }
    Ok(exit::OK)
}

fn show(g: &Global, rt: &Runtime, id: &str) -> Result<i32> {
    let repo = open::open(g, rt)?;
    let v = ops_holds::show(&repo, id)?;
    if g.json {
        ui::print_json(&v)?;
        return Ok(exit::OK);
    }
    print_view(&v);
    Ok(exit::OK)
}

fn print_view(v: &HoldView) {
    let h = &v.hold;
    let e = |s: &str| ui::escape(s.as_bytes());
    outln!("hold:      {}", h.id);
    outln!(
        "state:     {}",
        if v.active { "active" } else { "released" }
    );
    outln!("case:      {}", e(&h.case));
    outln!("reason:    {}", e(&h.reason));
    outln!(
        "placed:    {} by {} on {}",
        h.placed_at.to_rfc3339(),
        e(&h.placed_by),
        e(&h.host)
    );
    outln!("covers:    {}", e(&h.selector.describe()));
    if let Some(r) = &v.release {
        outln!(
            "released:  {} by {} on {}: {}",
            r.released_at.to_rfc3339(),
            e(&r.released_by),
            e(&r.host),
            e(&r.reason)
        );
    }
    outln!("snapshots: {}", v.snapshots.len());
    for s in &v.snapshots {
        outln!(
            "  {}  {}  {:<18} {}",
            s.id.get(..8).unwrap_or(&s.id),
            s.time.format("%Y-%m-%d %H:%M:%S"),
            s.kind,
            e(&s.source)
        );
    }
}
