//! Garbage collection: reclaim the space of purged snapshots, deleted WAL
//! manifests and interrupted writers, beside running backups (the protocol
//! is `holdfast_repo::gc`'s; this layer turns an operator's settings into
//! its options).

use holdfast_repo::gc::{self, GcOptions, GcReport};
use holdfast_repo::Repository;

use holdfast_repo::audit::{Draft, Outcome};

use crate::audit;
use crate::error::{OpsError, Result};

/// An operator's GC settings.
#[derive(Debug, Clone, Default)]
pub struct GcConfig {
    /// Report what would be deleted and repacked; change nothing.
    pub dry_run: bool,
    /// `--max-repack PERCENT`: share of the stored bytes one run may rewrite.
    pub max_repack_percent: Option<f64>,
    /// `--max-unused PERCENT`: repack until at most this share is unused.
    pub max_unused_percent: Option<f64>,
    /// `--min-age`: leave packs younger than this.
    pub min_age: Option<std::time::Duration>,
}

/// Run GC with `cfg`; `progress(phase, done, total)`. A run that may
/// delete (not a dry run) is audited as `gc`, with what it deleted.
pub fn gc(
    repo: &Repository,
    cfg: &GcConfig,
    progress: &(dyn Fn(&str, u64, u64) + Sync),
) -> Result<GcReport> {
    if cfg.dry_run {
        return run(repo, cfg, progress);
    }
    let mut draft = Draft::new("gc", Outcome::Success);
    if let Some(p) = cfg.max_repack_percent {
        draft = draft.arg("max_repack_percent", p);
    }
    if let Some(p) = cfg.max_unused_percent {
        draft = draft.arg("max_unused_percent", p);
    }
    if let Some(a) = cfg.min_age {
        draft = draft.arg("min_age_seconds", a.as_secs());
    }
    audit::audited(
        repo,
        draft,
        || run(repo, cfg, progress),
        |r, d| {
            d.arg("packs_deleted", r.packs_deleted)
                .arg("bytes_deleted", r.bytes_deleted)
                .arg("packs_repacked", r.packs_repacked)
                .arg("packs_kept_locked", r.packs_kept_locked)
        },
    )
}

fn run(
    repo: &Repository,
    cfg: &GcConfig,
    progress: &(dyn Fn(&str, u64, u64) + Sync),
) -> Result<GcReport> {
    let mut opts = GcOptions {
        dry_run: cfg.dry_run,
        ..GcOptions::default()
    };
    if let Some(p) = cfg.max_repack_percent {
        opts.max_repack_percent = percent("--max-repack", p)?;
    }
    if let Some(p) = cfg.max_unused_percent {
        opts.max_unused_percent = percent("--max-unused", p)?;
    }
    if let Some(a) = cfg.min_age {
        opts.min_age = chrono::Duration::from_std(a)
            .map_err(|_| OpsError::invalid(format!("--min-age {a:?} is too long")))?;
    }
    Ok(gc::gc(repo, &opts, progress)?)
}

fn percent(flag: &str, p: f64) -> Result<f64> {
    if p.is_finite() && (0.0..=100.0).contains(&p) {
        Ok(p)
    } else {
        Err(OpsError::invalid(format!(
            "{flag} {p}: expected a percentage from 0 to 100"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_are_checked() {
        assert!(percent("--max-repack", 101.0).is_err());
        assert!(percent("--max-repack", f64::NAN).is_err());
        assert_eq!(percent("--max-repack", 0.0).ok(), Some(0.0));
    }
}
