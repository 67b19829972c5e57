//! Ransomware and mass-change detection.
//!
//! An encrypting attack rewrites most files of a tree with data that does
//! not compress. A backup of such a tree looks unlike that source's usual
//! backups in two ways the snapshot summary already records:
//!
//! - **changed share**: files new or changed over files in the snapshot;
//! - **incompressible share**: bytes written to storage over the plaintext
//!   bytes of new blobs (`stored_added / (data_added + meta_added)`,
//!   clamped to 0..1): text compresses to a third, encrypted data not at all.
//!
//! [`detect`] compares the newest backup with the source's recent ones
//! with robust statistics (median and MAD, so one odd day in the history
//! does not move the baseline) and absolute floors, so an ordinary day
//! never fires:
//!
//! - at least [`Settings::min_history`] comparable backups (ones with a
//!   parent: a first backup is all new by definition);
//! - the changed share must exceed `median + k·max(1.4826·MAD, min_spread)`
//!   *and* [`Settings::min_changed_share`], *and* at least
//!   [`Settings::min_changed_files`] files changed, *and* the new content
//!   must be at least [`Settings::min_new_content_share`] of the snapshot's
//!   bytes (a `touch` or rename of every file changes metadata, not
//!   content: deduplication makes its `data_added` near zero);
//! - the incompressible share is only judged on backups that added at
//!   least [`Settings::min_new_bytes`] (the ratio of a few kilobytes is
//!   noise: pack headers and encryption overhead), against at least
//!   `min_history` such backups, above [`Settings::min_incompressible_share`].
//!
//! When it fires and the source's `anomaly_hold` is on, [`hold_before`]
//! places a legal hold on the last snapshot before the jump, so retention
//! cannot age out the last good copy while people look.

use chrono::{DateTime, Utc};
use holdfast_ops::holds::{self, PlaceConfig, Placed, Target};
use holdfast_repo::snapshot::{SnapshotEntry, Summary};
use holdfast_repo::Repository;

use crate::view::AnomalyView;

/// Thresholds; the defaults are what the daemon uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Comparable backups needed before anything can fire.
    pub min_history: usize,
    /// Newest backups of the history considered.
    pub window: usize,
    /// How many robust standard deviations above the median is "far".
    pub k: f64,
    /// The smallest spread assumed (a history of identical days has MAD 0).
    pub min_spread: f64,
    pub min_changed_share: f64,
    pub min_changed_files: u64,
    pub min_new_content_share: f64,
    pub min_new_bytes: u64,
    pub min_incompressible_share: f64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            min_history: 3,
            window: 30,
            k: 6.0,
            min_spread: 0.05,
            min_changed_share: 0.3,
            min_changed_files: 10,
            min_new_content_share: 0.1,
            min_new_bytes: 1 << 20,
            min_incompressible_share: 0.85,
        }
    }
}

/// One backup of the source: what [`detect`] looks at.
#[derive(Debug, Clone, PartialEq)]
pub struct Backup {
    pub snapshot: String,
    pub time: DateTime<Utc>,
    /// A first backup (no parent) is all new: not comparable.
    pub has_parent: bool,
    pub summary: Summary,
}

impl Backup {
    pub fn of(e: &SnapshotEntry) -> Backup {
        Backup {
            snapshot: e.id.to_hex(),
            time: e.snapshot.time,
            has_parent: e.snapshot.parent.is_some(),
            summary: e.snapshot.summary.clone(),
        }
    }

    /// Files new or changed over files in the snapshot.
    pub fn changed_share(&self) -> f64 {
        let s = &self.summary;
        let files = s.files();
        if files == 0 {
            return 0.0;
        }
        (s.files_new + s.files_changed) as f64 / files as f64
    }

    /// Stored over plaintext bytes of what this backup added (0..1), when
    /// it added at least `min_bytes`.
    pub fn incompressible_share(&self, min_bytes: u64) -> Option<f64> {
        let s = &self.summary;
        let plain = s.data_added + s.meta_added;
        if s.data_added < min_bytes || plain == 0 {
            return None;
        }
        Some((s.stored_added as f64 / plain as f64).clamp(0.0, 1.0))
    }

    /// New content over the snapshot's content bytes.
    pub fn new_content_share(&self) -> f64 {
        let s = &self.summary;
        if s.total_bytes == 0 {
            return 0.0;
        }
        (s.data_added as f64 / s.total_bytes as f64).min(1.0)
    }
}

/// The backups of one source in a repository, oldest first (the input
/// [`detect`] wants).
pub fn backups_of(entries: &[SnapshotEntry], source: &str) -> Vec<Backup> {
    let mut v: Vec<Backup> = entries
        .iter()
        .filter(|e| e.snapshot.source == source)
        .map(Backup::of)
        .collect();
    v.sort_by(|a, b| {
        a.time
            .cmp(&b.time)
            .then_with(|| a.snapshot.cmp(&b.snapshot))
    });
    v
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Median and the threshold `median + k·max(1.4826·MAD, min_spread)`.
fn baseline(mut xs: Vec<f64>, s: &Settings) -> (f64, f64) {
    let m = median(&mut xs);
    let mut dev: Vec<f64> = xs.iter().map(|x| (x - m).abs()).collect();
    let mad = median(&mut dev);
    (m, m + s.k * (1.4826 * mad).max(s.min_spread))
}

fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

/// Whether the newest of `backups` (oldest first) is a mass change
/// against the ones before it. `None`: nothing unusual, or too little
/// history to say.
pub fn detect(backups: &[Backup], s: &Settings) -> Option<AnomalyView> {
    let (latest, before) = backups.split_last()?;
    if !latest.has_parent {
        return None;
    }
    let history: Vec<&Backup> = before
        .iter()
        .filter(|b| b.has_parent)
        .rev()
        .take(s.window)
        .collect();
    if history.len() < s.min_history {
        return None;
    }
    let changed = latest.changed_share();
    let (changed_median, changed_limit) =
        baseline(history.iter().map(|b| b.changed_share()).collect(), s);
    let changed_files = latest.summary.files_new + latest.summary.files_changed;
    let mut reasons = Vec::new();
    if changed > changed_limit
        && changed >= s.min_changed_share
        && changed_files >= s.min_changed_files
        && latest.new_content_share() >= s.min_new_content_share
    {
        reasons.push(format!(
            "{} of files changed ({changed_files} of {}), usually {}",
            pct(changed),
            latest.summary.files(),
            pct(changed_median)
        ));
    }
    let incompressible = latest.incompressible_share(s.min_new_bytes);
    let measured: Vec<f64> = history
        .iter()
        .filter_map(|b| b.incompressible_share(s.min_new_bytes))
        .collect();
    let mut incompressible_median = 0.0;
    if measured.len() >= s.min_history {
        let (m, limit) = baseline(measured, s);
        incompressible_median = m;
        if let Some(x) = incompressible {
            if x > limit && x >= s.min_incompressible_share {
                reasons.push(format!(
                    "{} of the new data does not compress, usually {}",
                    pct(x),
                    pct(m)
                ));
            }
        }
    }
    if reasons.is_empty() {
        return None;
    }
    // The last snapshot before the jump: the newest one older than the
    // latest (comparable or not: a first backup is a good copy too).
    let held = before.last().map(|b| b.snapshot.clone());
    Some(AnomalyView {
        snapshot: latest.snapshot.clone(),
        at: Some(latest.time),
        reason: reasons.join("; "),
        changed_share: changed,
        changed_baseline: changed_median,
        incompressible_share: incompressible.unwrap_or(0.0),
        incompressible_baseline: incompressible_median,
        held_snapshot: held,
        hold: None,
    })
}

/// Read the source's backups from the repository and [`detect`].
pub fn detect_in(
    repo: &Repository,
    source: &str,
    s: &Settings,
) -> Result<Option<AnomalyView>, holdfast_repo::RepoError> {
    let entries = repo.snapshots()?;
    Ok(detect(&backups_of(&entries, source), s))
}

/// Place a legal hold on the snapshot before the jump (the runner calls
/// this when the source's `anomaly_hold` is on). Records the hold's id in
/// the finding. A finding without a snapshot before the jump places
/// nothing and returns `None`.
pub fn hold_before(
    repo: &Repository,
    source: &str,
    finding: &mut AnomalyView,
    actor: &str,
) -> Result<Option<Placed>, holdfast_ops::OpsError> {
    let Some(snap) = finding.held_snapshot.clone() else {
        return Ok(None);
    };
    let short: String = finding.snapshot.chars().take(8).collect();
    let placed = holds::place(
        repo,
        &PlaceConfig {
            target: Target::Snapshots(vec![snap]),
            case: format!("anomaly-{source}-{short}"),
            reason: format!(
                "automatic: backup {short} of source {source} looked like a mass change ({}); the last snapshot before it is held",
                finding.reason
            ),
            actor: actor.to_string(),
        },
    )?;
    finding.hold = Some(placed.view.hold.id.clone());
    Ok(Some(placed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn day(i: i64, new: u64, changed: u64, unchanged: u64, added: u64, stored: u64) -> Backup {
        Backup {
            snapshot: format!("{i:08x}"),
            time: Utc
                .timestamp_opt(1_780_000_000 + i * 86400, 0)
                .single()
                .unwrap(),
            has_parent: i > 0,
            summary: Summary {
                files_new: new,
                files_changed: changed,
                files_unchanged: unchanged,
                total_bytes: 100 << 20,
                data_added: added,
                stored_added: stored,
                ..Default::default()
            },
        }
    }

    fn ordinary() -> Vec<Backup> {
        let mut v = vec![day(0, 1000, 0, 0, 100 << 20, 35 << 20)];
        for i in 1..8 {
            v.push(day(i, 5, 20 + i as u64, 975, 2 << 20, 700 << 10));
        }
        v
    }

    #[test]
    fn ordinary_days_do_not_fire() {
        let v = ordinary();
        for n in 2..=v.len() {
            assert_eq!(detect(&v[..n], &Settings::default()), None, "day {n}");
        }
        // A busier day: 15% changed, still text.
        let mut v = ordinary();
        v.push(day(8, 30, 120, 850, 10 << 20, 3 << 20));
        assert_eq!(detect(&v, &Settings::default()), None);
    }

    #[test]
    fn touching_every_file_does_not_fire() {
        let mut v = ordinary();
        // Every file's metadata changed, content deduplicated away.
        v.push(day(8, 0, 1000, 0, 4 << 10, 2 << 10));
        assert_eq!(detect(&v, &Settings::default()), None);
    }

    #[test]
    fn mass_encryption_fires_and_names_the_snapshot_before() {
        let mut v = ordinary();
        v.push(day(8, 0, 950, 50, 95 << 20, 96 << 20));
        let f = detect(&v, &Settings::default()).expect("fires");
        assert_eq!(f.snapshot, format!("{:08x}", 8));
        assert_eq!(f.held_snapshot.as_deref(), Some("00000007"));
        assert!(f.reason.contains("95% of files changed"), "{}", f.reason);
        assert!(f.reason.contains("does not compress"), "{}", f.reason);
    }

    #[test]
    fn too_little_history_says_nothing() {
        let mut v = ordinary();
        v.truncate(3);
        v.push(day(3, 0, 950, 50, 95 << 20, 96 << 20));
        assert_eq!(detect(&v, &Settings::default()), None);
    }

    #[test]
    fn incompressible_jump_alone_fires() {
        let mut v = ordinary();
        // Few files, but big and random: e.g. a database file encrypted.
        v.push(day(8, 0, 12, 988, 80 << 20, 81 << 20));
        let f = detect(&v, &Settings::default()).expect("fires");
        assert!(!f.reason.contains("files changed"), "{}", f.reason);
        assert!(f.reason.contains("does not compress"));
    }
}
