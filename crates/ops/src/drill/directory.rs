//! Drills into a scratch directory: restore a file snapshot there with
//! the ordinary restore engine, time its phases, verify the restored
//! files against the snapshot, run the playbook's commands, and remove the
//! directory afterwards.

use std::path::{Path, PathBuf};
use std::time::Instant;

use holdfast_drill::pick::SeededRng;
use holdfast_drill::{Check, CheckResult, Phase, Restore, RestoreReport};
use holdfast_repo::snapshot::SnapshotEntry;
use holdfast_sources::restore::{self, RestoreOptions, RestoreOutcome};
use holdfast_sources::verify;
use holdfast_sources::SourceError;

use super::{command, Ctx, Teardown};

/// The scratch directory: removed at teardown (or when dropped) unless
/// the playbook keeps it. A directory given in the playbook that existed
/// (empty) before is emptied, not removed.
struct Scratch {
    path: PathBuf,
    created: bool,
    keep: bool,
    done: bool,
}

impl Scratch {
    fn remove(&mut self) -> std::result::Result<(), String> {
        if self.done || self.keep {
            self.done = true;
            return Ok(());
        }
        self.done = true;
        let res = if self.created {
            std::fs::remove_dir_all(&self.path)
        } else {
            empty_dir(&self.path)
        };
        res.map_err(|e| format!("removing {}: {e}", self.path.display()))
    }
}

fn empty_dir(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        if std::fs::symlink_metadata(&p)?.is_dir() {
            std::fs::remove_dir_all(&p)?;
        } else {
            std::fs::remove_file(&p)?;
        }
    }
    Ok(())
}

impl Teardown for Scratch {
    fn teardown(mut self: Box<Self>) -> std::result::Result<(), String> {
        self.remove()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}

/// The scratch directory for this restore: `path` (absent, or an empty
/// directory) or a new one under `parent`.
fn make_scratch(
    ctx: &Ctx<'_>,
    label: &str,
    path: Option<PathBuf>,
    parent: Option<PathBuf>,
    keep: bool,
) -> Result<Scratch, String> {
    if let Some(p) = path {
        return match std::fs::read_dir(&p) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    Err(format!(
                        "the scratch directory {} is not empty; a drill restores into an empty or absent directory",
                        p.display()
                    ))
                } else {
                    Ok(Scratch {
                        path: p,
                        created: false,
                        keep,
                        done: false,
                    })
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&p)
                    .map_err(|e| format!("creating the scratch directory {}: {e}", p.display()))?;
                Ok(Scratch {
                    path: p,
                    created: true,
                    keep,
                    done: false,
                })
            }
            Err(e) => Err(format!("the scratch directory {}: {e}", p.display())),
        };
    }
    let parent = parent.unwrap_or_else(|| ctx.scratch_parent.clone());
    let path = super::scratch_dir(&parent, label, ctx.seed).map_err(|e| e.to_string())?;
    Ok(Scratch {
        path,
        created: true,
        keep,
        done: false,
    })
}

/// Restore `snap` into a scratch directory and check it.
pub(crate) fn run(
    ctx: &Ctx<'_>,
    r: &Restore,
    snap: &SnapshotEntry,
    path: Option<PathBuf>,
    parent: Option<PathBuf>,
    keep: bool,
    rep: &mut RestoreReport,
) -> Option<Box<dyn Teardown>> {
    let scratch = match make_scratch(ctx, &r.label, path, parent, keep) {
        Ok(s) => s,
        Err(e) => {
            rep.error = Some(e);
            return None;
        }
    };
    let dir = scratch.path.clone();
    rep.location = dir.display().to_string();
    let opts = RestoreOptions::default();
    let restored = ctx
        .repo
        .ensure_index()
        .map_err(SourceError::from)
        .and_then(|()| restore::restore(ctx.repo, snap, &dir, &opts, &ctx.progress));
    let out = match restored {
        Ok(out) => out,
        Err(e) => {
            rep.error = Some(match e {
                SourceError::RestoreInterrupted(_) => "the restore was stopped".to_string(),
                e => format!("restoring snapshot {}: {e}", snap.id.short()),
            });
            return Some(Box::new(scratch));
        }
    };
    rep.bytes = out.bytes;
    rep.files = out.files + out.links;
    rep.phases.extend(restore_phases(&out));
    let checks_started = Instant::now();
    rep.checks.push(restore_result(&out));
    for check in &r.checks {
        if ctx.stopped() {
            break;
        }
        let res = match check {
            Check::Files { sample, seed } => {
                files_check(ctx, snap, &dir, &opts, *sample, seed.unwrap_or(ctx.seed))
            }
            Check::Command { name, run, timeout } => command::run(
                ctx,
                name,
                run,
                *timeout,
                &[("HOLDFAST_DRILL_DIR", dir.as_os_str())],
            ),
            other => CheckResult {
                kind: other.kind().into(),
                name: other.kind().into(),
                passed: false,
                detail: "this check does not apply to a directory target".into(),
                seconds: 0.0,
            },
        };
        rep.checks.push(res);
    }
    // The erasure register applies to a drill's copy like to any restore;
    // after the checks, which compare with the snapshot as it was taken.
    let erased = crate::erasure::drill_files_check(ctx.repo, snap, &dir);
    rep.checks.extend(erased.check);
    rep.erasures_applied = erased.applied;
    rep.phases
        .push(Phase::new("checks", checks_started.elapsed().as_secs_f64()));
    Some(Box::new(scratch))
}

/// The restore's phases. Fetching, opening and writing overlap on the
/// worker threads; the content phase's wall time (less the retrieval
/// wait) is shared among them by the time the workers spent in each.
fn restore_phases(out: &RestoreOutcome) -> Vec<Phase> {
    let bytes = Some(out.bytes);
    let mut phases = Vec::new();
    let mut with = |name: &str, seconds: f64, note: Option<&str>| {
        let mut p = Phase::new(name, seconds.max(0.0));
        p.bytes = bytes;
        p.note = note.map(str::to_string);
        phases.push(p);
    };
    if out.retrieval_seconds > 0.0 {
        with(
            "retrieval",
            out.retrieval_seconds,
            Some("waiting for packs to come back from the archive tier"),
        );
    }
    with(
        "plan",
        out.plan_seconds,
        Some("snapshot trees read, directories laid out"),
    );
    let content = (out.content_seconds - out.retrieval_seconds).max(0.0);
    let busy = out.download_busy_seconds + out.decode_busy_seconds + out.write_busy_seconds;
    let share = |b: f64| if busy > 0.0 { content * b / busy } else { 0.0 };
    const NOTE: &str = "share of the content phase's wall time, by the workers' time in each stage";
    with("download", share(out.download_busy_seconds), Some(NOTE));
    with(
        "decrypt+decompress",
        share(out.decode_busy_seconds),
        Some(NOTE),
    );
    with("write", share(out.write_busy_seconds), Some(NOTE));
    with(
        "finish",
        out.finish_seconds,
        Some("hard links and metadata"),
    );
    phases
}

/// Whether every entry of the snapshot was restored (an unreadable or
/// damaged pack leaves files out; their reasons name the pack).
fn restore_result(out: &RestoreOutcome) -> CheckResult {
    let total = out.files + out.links + out.dirs + out.symlinks + out.other;
    let (passed, detail) = if out.failed.is_empty() {
        (
            true,
            format!("{total} entries restored, {} bytes", out.bytes),
        )
    } else {
        let mut shown: Vec<&str> = out.failed.iter().take(10).map(String::as_str).collect();
        if out.failed.len() > shown.len() {
            shown.push("...");
        }
        (
            false,
            format!(
                "{} entr{} could not be restored: {}",
                out.failed.len(),
                if out.failed.len() == 1 { "y" } else { "ies" },
                shown.join("; ")
            ),
        )
    };
    CheckResult {
        kind: "restore".into(),
        name: "every entry restored".into(),
        passed,
        detail,
        seconds: 0.0,
    }
}

/// `k` distinct indexes out of `0..n`, drawn with `seed`.
pub(crate) fn sample(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut all: Vec<usize> = (0..n).collect();
    let k = k.min(n);
    let mut rng = SeededRng::new(seed);
    for i in 0..k {
        let j = i + rng.below((n - i) as u64) as usize;
        all.swap(i, j.min(n - 1));
    }
    all.truncate(k);
    all
}

fn files_check(
    ctx: &Ctx<'_>,
    snap: &SnapshotEntry,
    dir: &Path,
    opts: &RestoreOptions,
    sample_size: Option<u64>,
    seed: u64,
) -> CheckResult {
    let started = Instant::now();
    let choose = |n: usize| match sample_size {
        None => (0..n).collect(),
        Some(k) => sample(n, usize::try_from(k).unwrap_or(usize::MAX), seed),
    };
    let name = match sample_size {
        None => "every restored file matches the snapshot".to_string(),
        Some(k) => format!("{k} restored files (drawn with seed {seed}) match the snapshot"),
    };
    let res = verify::verify(ctx.repo, snap, dir, opts, &choose, 0, &ctx.progress.stop);
    let (passed, detail) = match res {
        Err(e) => (false, format!("verification failed: {e}")),
        Ok(v) if v.checked < v.chosen => (
            false,
            format!("stopped after {} of {} entries", v.checked, v.chosen),
        ),
        Ok(v) if v.mismatched > 0 => (
            false,
            format!(
                "{} of {} entries differ from the snapshot: {}",
                v.mismatched,
                v.checked,
                v.mismatches
                    .iter()
                    .take(10)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        ),
        Ok(v) => (
            true,
            format!(
                "{} of {} files and symlinks checked ({} bytes read back and hashed): all match",
                v.checked, v.entries, v.bytes
            ),
        ),
    };
    CheckResult {
        kind: "files".into(),
        name,
        passed,
        detail,
        seconds: started.elapsed().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::sample;

    #[test]
    fn samples_are_distinct_seeded_and_in_range() {
        for n in [0, 1, 5, 100] {
            for k in [0, 1, 3, 100, 1000] {
                let s = sample(n, k, 42);
                assert_eq!(s.len(), k.min(n));
                let mut d = s.clone();
                d.sort_unstable();
                d.dedup();
                assert_eq!(d.len(), s.len());
                assert!(s.iter().all(|&i| i < n));
                assert_eq!(s, sample(n, k, 42));
            }
        }
        assert_ne!(sample(1000, 10, 1), sample(1000, 10, 2));
    }
}
