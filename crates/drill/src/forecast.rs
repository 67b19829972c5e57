//! The full-site RTO forecast: how long restoring everything in the
//! repository would take now, from the throughput each phase achieved in
//! recent drills and the current size of every source.
//!
//! For each snapshot kind, every phase that moved bytes in recent drills
//! gives a throughput (the median over drills, so one slow run does not
//! decide it); a phase that moved none (server start, teardown) counts
//! with its median duration. A source's forecast is the sum over its
//! kind's phases of `size / throughput` plus the fixed phases; the site's
//! is the sum over sources (restored one after another, as a site loss
//! with one operator would be). A kind no drill has measured yet is named
//! and left out of the total, which is then a lower bound.

use serde::{Deserialize, Serialize};

use crate::report::DrillReport;

/// At most this many recent drills are used per kind.
pub const RECENT: usize = 10;

/// The current size of one source: its newest snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSize {
    pub source: String,
    pub kind: String,
    pub bytes: u64,
}

/// The forecast of one source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceForecast {
    pub source: String,
    pub kind: String,
    pub bytes: u64,
    /// `None` when no drill has measured this kind yet.
    pub seconds: Option<f64>,
    /// How many drills the figures come from.
    pub drills: usize,
}

/// The forecast of the whole repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    pub sources: Vec<SourceForecast>,
    /// Sum over the sources that could be forecast.
    pub total_seconds: f64,
    /// False when some source's kind was never drilled (the total is then
    /// a lower bound).
    pub complete: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_rto_seconds: Option<u64>,
    /// Whether the total meets the site RTO (`None` without one; a lower
    /// bound that already misses it is a miss).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meets_site_rto: Option<bool>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Phases that do not scale with the data: a retrieval wait depends on the
/// archive tier, not the size, and checks are the drill's own cost.
fn excluded(phase: &str) -> bool {
    matches!(phase, "retrieval" | "checks" | "teardown")
}

/// Seconds to restore `bytes` of `kind`, from the drills in `history`
/// (newest last); `None` if none measured the kind. Also the number of
/// drills used.
pub fn estimate(history: &[DrillReport], kind: &str, bytes: u64) -> (Option<f64>, usize) {
    let restores: Vec<_> = history
        .iter()
        .rev()
        .flat_map(|d| d.restores.iter())
        .filter(|r| r.kind == kind && r.error.is_none() && r.bytes > 0)
        .take(RECENT)
        .collect();
    if restores.is_empty() {
        return (None, 0);
    }
    let mut names: Vec<&str> = restores
        .iter()
        .flat_map(|r| r.phases.iter().map(|p| p.name.as_str()))
        .filter(|n| !excluded(n))
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut total = 0.0;
    for name in names {
        let phases: Vec<_> = restores
            .iter()
            .filter_map(|r| r.phases.iter().find(|p| p.name == name))
            .collect();
        let scaled: Vec<f64> = phases
            .iter()
            .filter_map(|p| match p.bytes {
                Some(b) if b > 0 && p.seconds > 0.0 => Some(b as f64 / p.seconds),
                _ => None,
            })
            .collect();
        if let Some(rate) = median(scaled) {
            total += bytes as f64 / rate;
        } else if let Some(fixed) = median(phases.iter().map(|p| p.seconds).collect()) {
            total += fixed;
        }
    }
    (Some(total), restores.len())
}

/// The forecast for `sizes` from `history` (oldest first), compared with
/// `site_rto` seconds.
pub fn forecast(history: &[DrillReport], sizes: &[SourceSize], site_rto: Option<u64>) -> Forecast {
    let sources: Vec<SourceForecast> = sizes
        .iter()
        .map(|s| {
            let (seconds, drills) = estimate(history, &s.kind, s.bytes);
            SourceForecast {
                source: s.source.clone(),
                kind: s.kind.clone(),
                bytes: s.bytes,
                seconds,
                drills,
            }
        })
        .collect();
    let total_seconds = sources.iter().filter_map(|s| s.seconds).sum();
    let complete = sources.iter().all(|s| s.seconds.is_some());
    let meets_site_rto = site_rto.map(|t| {
        let within = total_seconds <= t as f64;
        // An incomplete total is a lower bound: it can prove a miss only.
        within && complete
    });
    Forecast {
        sources,
        total_seconds,
        complete,
        site_rto_seconds: site_rto,
        meets_site_rto,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{DrillReport, ObjectivesReport, Outcome, Phase, RestoreReport};

    fn drill(kind: &str, bytes: u64, phases: &[(&str, f64, bool)]) -> DrillReport {
        let t = chrono::DateTime::<chrono::Utc>::default();
        DrillReport {
            version: 1,
            id: String::new(),
            playbook: "p".into(),
            playbook_file: "p.toml".into(),
            host: "h".into(),
            started: t,
            finished: t,
            outcome: Outcome::Passed,
            objectives: ObjectivesReport::default(),
            rto_seconds: 0.0,
            rto_met: true,
            rpo_seconds: None,
            rpo_met: true,
            restores: vec![RestoreReport {
                kind: kind.into(),
                bytes,
                phases: phases
                    .iter()
                    .map(|(n, s, scales)| Phase {
                        bytes: scales.then_some(bytes),
                        ..Phase::new(n, *s)
                    })
                    .collect(),
                ..RestoreReport::default()
            }],
            error: None,
            verification_record: None,
            forecast: None,
            approvals: Vec::new(),
        }
    }

    #[test]
    fn scales_data_phases_and_adds_fixed_ones() {
        // 1 GiB restored at 100 MiB/s download + 200 MiB/s write, 3 s server
        // start; checks and retrieval do not count.
        let gib = 1u64 << 30;
        let h = vec![drill(
            "postgres-logical",
            gib,
            &[
                ("download", 10.24, true),
                ("write", 5.12, true),
                ("server start", 3.0, false),
                ("checks", 100.0, false),
                ("retrieval", 3600.0, true),
            ],
        )];
        let sizes = [
            SourceSize {
                source: "ehr".into(),
                kind: "postgres-logical".into(),
                bytes: 4 * gib,
            },
            SourceSize {
                source: "mail".into(),
                kind: "files".into(),
                bytes: gib,
            },
        ];
        let f = forecast(&h, &sizes, Some(3600));
        let ehr = f.sources[0].seconds.unwrap_or(0.0);
        assert!((ehr - (40.96 + 20.48 + 3.0)).abs() < 0.01, "{ehr}");
        assert_eq!(f.sources[1].seconds, None, "files were never drilled");
        assert!(!f.complete);
        assert_eq!(
            f.meets_site_rto,
            Some(false),
            "a lower bound proves no success"
        );
        let only_ehr = forecast(&h, &sizes[..1], Some(3600));
        assert_eq!(only_ehr.meets_site_rto, Some(true));
        assert_eq!(
            forecast(&h, &sizes[..1], Some(60)).meets_site_rto,
            Some(false)
        );
    }

    #[test]
    fn one_slow_drill_does_not_decide() {
        let gib = 1u64 << 30;
        let mut h: Vec<_> = (0..4)
            .map(|_| drill("files", gib, &[("download", 10.0, true)]))
            .collect();
        h.push(drill("files", gib, &[("download", 1000.0, true)]));
        let (s, n) = estimate(&h, "files", gib);
        assert_eq!(n, 5);
        assert!((s.unwrap_or(0.0) - 10.0).abs() < 0.01, "{s:?}");
    }
}
