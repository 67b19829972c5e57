//! Hidden commands for the benchmarks in `benches/` (not for operators):
//! `bench-synth-index` writes synthetic index objects into a repository,
//! `bench-open` opens it and loads its index, printing what that took and
//! what the index holds in memory. See `benches/index_scale.py`.

use std::time::Instant;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::args::Global;
use crate::{exit, open, ui};

#[derive(Debug, Args)]
pub struct SynthIndexArgs {
    /// Blobs to describe.
    #[arg(long)]
    pub entries: u64,
    /// Blobs per index object.
    #[arg(long, default_value_t = 65536)]
    pub per_object: u64,
    /// Threads sealing and writing objects.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Seed of the random blob ids.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

pub fn synth_index(g: &Global, rt: &tokio::runtime::Runtime, a: SynthIndexArgs) -> Result<i32> {
    let repo = open::open(g, rt)?;
    let started = Instant::now();
    let objects = holdfast_repo::index::synth::write_synthetic(
        &repo,
        a.entries,
        a.per_object,
        a.threads,
        a.seed,
    )?;
    ui::print_json(&json!({
        "entries": a.entries,
        "objects": objects,
        "secs": started.elapsed().as_secs_f64(),
    }))?;
    Ok(exit::OK)
}

pub fn open_index(g: &Global, rt: &tokio::runtime::Runtime) -> Result<i32> {
    let started = Instant::now();
    let repo = open::open(g, rt)?;
    let opened = started.elapsed().as_secs_f64();
    repo.load_index()?;
    let total = started.elapsed().as_secs_f64();
    let f = repo.index().footprint();
    ui::print_json(&json!({
        "open_s": opened,
        "load_index_s": total - opened,
        "total_s": total,
        "cache": repo.cache().map(|c| c.dir().display().to_string()),
        "runs": f.runs,
        "run_entries": f.run_entries,
        "mapped_bytes": f.mapped_bytes,
        "run_heap_bytes": f.run_heap_bytes,
        "fresh_entries": f.fresh_entries,
    }))?;
    Ok(exit::OK)
}
