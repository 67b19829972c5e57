//! `holdfast gc`: garbage collection. The work is `holdfast-ops`'s and
//! `holdfast-repo`'s; this module shows progress and prints the summary.

use std::io::IsTerminal;

use anyhow::Result;
use holdfast_ops::gc::{self as ops_gc, GcConfig};
use holdfast_repo::gc::GcReport;
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use tokio::runtime::Runtime;

use crate::args::{GcArgs, Global};
use crate::exit;
use crate::open;
use crate::ui;

pub fn run(g: &Global, rt: &Runtime, a: GcArgs) -> Result<i32> {
    // GC streams: what it reads is written out and freed at once.
    crate::memory::return_large_buffers();
    let repo = open::open(g, rt)?;
    let cfg = GcConfig {
        dry_run: a.dry_run,
        max_repack_percent: a.max_repack,
        max_unused_percent: a.max_unused,
        min_age: a.min_age,
    };
    // A bar with the phase, a count and an ETA on a terminal; nothing
    // otherwise (scripts read the summary or --json).
    let bar = (!g.quiet && !g.json && std::io::stderr().is_terminal()).then(|| {
        let pb = ProgressBar::new(0);
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} gc {prefix:14} [{elapsed_precise}] {bar:30} {pos}/{len} eta {eta}",
        ) {
            pb.set_style(style);
        }
        pb
    });
    let report = ops_gc::gc(&repo, &cfg, &|phase, done, total| {
        if let Some(pb) = &bar {
            pb.set_prefix(phase.to_string());
            pb.set_length(total);
            pb.set_position(done);
        }
    });
    if let Some(pb) = &bar {
        pb.finish_and_clear();
    }
    let report = report?;
    if g.json {
        ui::print_json(&report)?;
    } else {
        for w in &report.warnings {
            errln!("warning: {w}");
        }
        if !g.quiet {
            print_summary(&report);
        }
    }
    Ok(exit::OK)
}

fn print_summary(r: &GcReport) {
    let verb = if r.dry_run { "would delete" } else { "deleted" };
    outln!(
        "marked {} snapshot(s), {} WAL manifest(s), {} tree(s)",
        r.snapshots,
        r.wal_manifests,
        r.trees
    );
    outln!(
        "{verb} {} pack(s), {} (of which {} repacked, {} not in any index)",
        r.packs_deleted,
        HumanBytes(r.bytes_deleted),
        r.packs_repacked,
        r.unindexed_deleted
    );
    if r.dry_run {
        outln!(
            "would repack {} pack(s): read {}, write about {}",
            r.packs_repacked,
            HumanBytes(r.repack_bytes_read),
            HumanBytes(r.repack_bytes_written)
        );
    } else {
        outln!(
            "repacked {} pack(s): read {}, wrote {} in {} new pack(s)",
            r.packs_repacked,
            HumanBytes(r.repack_bytes_read),
            HumanBytes(r.repack_bytes_written),
            r.packs_written
        );
    }
    if r.packs_kept_locked > 0 || !r.kept_locked.is_empty() {
        outln!(
            "kept because locked (Object Lock; retried by a later run): {} pack(s), {}; {} object(s) in all",
            r.packs_kept_locked,
            HumanBytes(r.bytes_kept_locked),
            r.kept_locked.len()
        );
    }
    if r.packs_kept_young > 0 {
        outln!(
            "kept because younger than --min-age: {} pack(s)",
            r.packs_kept_young
        );
    }
    for n in &r.not_repacked {
        outln!("not repacked: {n}");
    }
    outln!(
        "index objects: {} -> {}; unused bytes left in partly used packs: {}",
        r.index_objects_before,
        r.index_objects_after,
        HumanBytes(r.unused_bytes_kept)
    );
    outln!(
        "repository: {} in {} pack(s) -> {} in {} pack(s){}",
        HumanBytes(r.bytes_before),
        r.packs_before,
        HumanBytes(r.bytes_after),
        r.packs_after,
        if r.dry_run {
            " (planned)".to_string()
        } else {
            format!(
                "; exclusive lease held {:.2}s ({} root(s) committed meanwhile, {} pack(s) kept for them)",
                r.exclusive_seconds, r.new_roots, r.packs_rescued
            )
        }
    );
}
