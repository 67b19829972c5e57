//! Garbage collection: reclaim the space of purged snapshots, deleted WAL
//! manifests and interrupted writers, beside running backups (the protocol
//! is `holdfast_repo::gc`'s; this layer turns an operator's settings into
//! its options).

use holdfast_repo::gc::{self, GcOptions, GcReport};
use holdfast_repo::Repository;

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
    /// `--min-age`: leave packs younger than this (e.g. `24h`, `2d`).
    pub min_age: Option<String>,
}

/// Run GC with `cfg`; `progress(phase, done, total)`.
pub fn gc(
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
    if let Some(a) = &cfg.min_age {
        opts.min_age = parse_age(a)?;
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

/// A minimum age: a whole number with `s`, `min`, `h` or `d` (`0` alone
/// is accepted too).
pub fn parse_age(s: &str) -> Result<chrono::Duration> {
    let t = s.trim();
    if t == "0" {
        return Ok(chrono::Duration::zero());
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: i64 = num.parse().map_err(|_| bad_age(s))?;
    let secs = match unit.trim() {
        "s" => 1,
        "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad_age(s)),
    };
    n.checked_mul(secs)
        .and_then(chrono::Duration::try_seconds)
        .ok_or_else(|| bad_age(s))
}

fn bad_age(s: &str) -> OpsError {
    OpsError::invalid(format!(
        "cannot read minimum age {s:?}: expected a whole number with s, min, h or d (e.g. 24h, 2d)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_percentages_are_checked() {
        assert_eq!(parse_age("24h").ok(), chrono::Duration::try_hours(24));
        assert_eq!(parse_age("90min").ok(), chrono::Duration::try_minutes(90));
        assert_eq!(parse_age("0").ok(), Some(chrono::Duration::zero()));
        for bad in ["", "h", "5m", "1.5h", "-1d", "3 weeks"] {
            assert!(parse_age(bad).is_err(), "{bad:?} accepted");
        }
        assert!(percent("--max-repack", 101.0).is_err());
        assert!(percent("--max-repack", f64::NAN).is_err());
        assert_eq!(percent("--max-repack", 0.0).ok(), Some(0.0));
    }
}
