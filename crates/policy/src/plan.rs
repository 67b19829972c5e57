//! The retention planner: policies and snapshots in, one decision per
//! snapshot out, with the rule that made it. Deterministic: the same input
//! (including `now`) gives the same plan.
//!
//! Order of precedence, strongest first:
//! 1. a legal hold keeps the snapshot ("held by CASE-123");
//! 2. the compliance floor keeps it from being purged ("floor until …");
//! 3. the last snapshot of a source that passed verification is never
//!    purged ("last verified good of source …");
//! 4. the maximum age purges it ("past max_age 6y"), over keep rules;
//! 5. keep rules keep it ("daily #3 of 7"), else it is purged.
//!
//! A kept snapshot older than `archive_after` that is not archived yet is
//! to be archived. A snapshot no policy selects is kept.
//!
//! Keep rules follow restic's `forget`: snapshots are grouped by source and
//! taken newest first; `last` keeps the newest n; `hourly`/`daily`/`weekly`
//! /`monthly`/`yearly` keep the newest snapshot of each of the last n
//! hours/days/ISO weeks/months/years that have one, counted in the
//! policy's time zone; `within` keeps everything within the duration of the
//! group's newest snapshot, and `within_daily` (etc.) the newest snapshot
//! of each day within it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::file::{Keep, Policy};

/// A snapshot as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub id: String,
    pub time: DateTime<Utc>,
    pub source: String,
    pub kind: String,
    pub tags: Vec<String>,
    /// Already on the cold tier.
    pub archived: bool,
}

/// What protects snapshots from deletion by legal hold
/// (`holdfast_ops::holds` implements it over the repository's hold
/// records). A held snapshot is kept and never archived.
pub trait HoldCheck {
    /// The case references of the holds on `snapshot` (empty: none).
    fn holds(&self, snapshot: &SnapshotInfo) -> Vec<String>;
}

/// No holds at all.
pub struct NoHolds;

impl HoldCheck for NoHolds {
    fn holds(&self, _: &SnapshotInfo) -> Vec<String> {
        Vec::new()
    }
}

/// Everything the planner reads.
pub struct PlanInput<'a> {
    pub snapshots: &'a [SnapshotInfo],
    pub policies: &'a [Policy],
    pub now: DateTime<Utc>,
    /// Ids of snapshots that passed verification (`check --read-data` of
    /// the snapshot, a drill).
    pub verified: &'a BTreeSet<String>,
    pub holds: &'a dyn HoldCheck,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Keep,
    Archive,
    Purge,
}

/// The decision for one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub snapshot: String,
    pub time: DateTime<Utc>,
    pub source: String,
    pub kind: String,
    pub action: Action,
    /// A readable reason: "daily #3 of 7", "floor until 2031-03-01".
    pub rule: String,
    /// The policy that decided it (none for unselected snapshots).
    pub policy: Option<String>,
    /// GDPR erasures recorded after the snapshot whose subjects it may
    /// still hold (ids in the repository's erasure register); filled in by
    /// the caller, which reads the register. Such a snapshot, once past
    /// the maximum age, is purged before the others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub erasures: Vec<String>,
}

/// Decide every snapshot. A snapshot selected by several policies is
/// decided by each; if they disagree, the plan is refused (an error naming
/// both), since validation could not see it.
pub fn plan(input: &PlanInput<'_>) -> Result<Vec<Decision>, String> {
    let mut decided: BTreeMap<String, Decision> = BTreeMap::new();
    for policy in input.policies {
        let selected: Vec<&SnapshotInfo> = input
            .snapshots
            .iter()
            .filter(|s| policy.selector.selects(&s.source, &s.kind, &s.tags))
            .collect();
        for d in plan_policy(policy, &selected, input) {
            match decided.get(&d.snapshot) {
                Some(prev) if prev.action != d.action => {
                    return Err(format!(
                        "snapshot {} is selected by policy {:?} ({}) and policy {:?} ({}), which decide it differently; narrow their selections",
                        d.snapshot,
                        prev.policy.as_deref().unwrap_or("?"),
                        prev.rule,
                        d.policy.as_deref().unwrap_or("?"),
                        d.rule
                    ))
                }
                Some(_) => {}
                None => {
                    decided.insert(d.snapshot.clone(), d);
                }
            }
        }
    }
    let mut out: Vec<Decision> = input
        .snapshots
        .iter()
        .map(|s| {
            decided.remove(&s.id).unwrap_or_else(|| {
                let held = input.holds.holds(s);
                Decision {
                    snapshot: s.id.clone(),
                    time: s.time,
                    source: s.source.clone(),
                    kind: s.kind.clone(),
                    action: Action::Keep,
                    rule: if held.is_empty() {
                        "no policy selects it".into()
                    } else {
                        format!("held by {}", held.join(", "))
                    },
                    policy: None,
                    erasures: Vec::new(),
                }
            })
        })
        .collect();
    out.sort_by(|a, b| (a.time, &a.snapshot).cmp(&(b.time, &b.snapshot)));
    Ok(out)
}

fn plan_policy(
    policy: &Policy,
    selected: &[&SnapshotInfo],
    input: &PlanInput<'_>,
) -> Vec<Decision> {
    let tz = policy.timezone;
    let now = input.now.with_timezone(&tz);
    let mut by_source: BTreeMap<&str, Vec<&SnapshotInfo>> = BTreeMap::new();
    for s in selected {
        by_source.entry(&s.source).or_default().push(s);
    }
    let mut out = Vec::new();
    for (source, mut group) in by_source {
        // Newest first; ties broken by id so the plan is deterministic.
        group.sort_by(|a, b| (b.time, &b.id).cmp(&(a.time, &a.id)));
        let kept = keep_reasons(&policy.keep, &group, tz);
        let last_verified = group
            .iter()
            .find(|s| input.verified.contains(&s.id))
            .map(|s| s.id.clone());
        for (i, s) in group.iter().enumerate() {
            let t = s.time.with_timezone(&tz);
            let held = input.holds.holds(s);
            let under_floor = policy
                .floor
                .map(|f| (f.after(&t), f))
                .filter(|(until, _)| *until > now);
            let past_max = policy.max_age.filter(|m| t < m.before(&now));
            let (mut action, rule) = if !held.is_empty() {
                (Action::Keep, format!("held by {}", held.join(", ")))
            } else if let Some((until, f)) = under_floor {
                (
                    Action::Keep,
                    format!("floor {f} until {}", until.format("%Y-%m-%d %H:%M %Z")),
                )
            } else if last_verified.as_deref() == Some(s.id.as_str()) {
                (
                    Action::Keep,
                    format!("last verified good of source {source}"),
                )
            } else if let Some(m) = past_max {
                (Action::Purge, format!("past max_age {m}"))
            } else if let Some(reason) = &kept[i] {
                (Action::Keep, reason.clone())
            } else {
                (Action::Purge, "no keep rule keeps it".into())
            };
            // A held snapshot is frozen where it is: not even moved to
            // the archive class.
            if action == Action::Keep && !s.archived && held.is_empty() {
                if let Some(a) = policy.archive_after.filter(|a| t < a.before(&now)) {
                    action = Action::Archive;
                    out.push(decision(
                        s,
                        action,
                        format!(
                            "{rule}; older than archive_after {a}, to {}",
                            policy.archive_class
                        ),
                        policy,
                    ));
                    continue;
                }
            }
            out.push(decision(s, action, rule, policy));
        }
    }
    out
}

fn decision(s: &SnapshotInfo, action: Action, rule: String, policy: &Policy) -> Decision {
    Decision {
        snapshot: s.id.clone(),
        time: s.time,
        source: s.source.clone(),
        kind: s.kind.clone(),
        action,
        rule,
        policy: Some(policy.name.clone()),
        erasures: Vec::new(),
    }
}

/// The calendar buckets keep rules count in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bucket {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Bucket {
    fn name(self) -> &'static str {
        match self {
            Bucket::Hour => "hourly",
            Bucket::Day => "daily",
            Bucket::Week => "weekly",
            Bucket::Month => "monthly",
            Bucket::Year => "yearly",
        }
    }

    fn key(self, t: &DateTime<Tz>) -> (i32, u32, u32, u32) {
        match self {
            Bucket::Hour => (t.year(), t.ordinal(), t.hour(), 0),
            Bucket::Day => (t.year(), t.ordinal(), 0, 0),
            Bucket::Week => {
                let w = t.iso_week();
                (w.year(), w.week(), 0, 0)
            }
            Bucket::Month => (t.year(), t.month(), 0, 0),
            Bucket::Year => (t.year(), 0, 0, 0),
        }
    }
}

/// For each snapshot (newest first), the first keep rule that keeps it.
fn keep_reasons(keep: &Keep, group: &[&SnapshotInfo], tz: Tz) -> Vec<Option<String>> {
    let mut reasons: Vec<Option<String>> = vec![None; group.len()];
    let mut mark = |i: usize, why: String| {
        if reasons[i].is_none() {
            reasons[i] = Some(why);
        }
    };
    let count = |n: u32| {
        if n == u32::MAX {
            "unlimited".to_string()
        } else {
            n.to_string()
        }
    };
    if let Some(n) = keep.last {
        for i in 0..group.len().min(n as usize) {
            mark(i, format!("last #{} of {}", i + 1, count(n)));
        }
    }
    let times: Vec<DateTime<Tz>> = group.iter().map(|s| s.time.with_timezone(&tz)).collect();
    let counted = [
        (keep.hourly, Bucket::Hour),
        (keep.daily, Bucket::Day),
        (keep.weekly, Bucket::Week),
        (keep.monthly, Bucket::Month),
        (keep.yearly, Bucket::Year),
    ];
    for (n, bucket) in counted {
        let Some(n) = n else { continue };
        let mut last = None;
        let mut used = 0u32;
        for (i, t) in times.iter().enumerate() {
            if used >= n {
                break;
            }
            let k = bucket.key(t);
            if last != Some(k) {
                used += 1;
                last = Some(k);
                mark(i, format!("{} #{} of {}", bucket.name(), used, count(n)));
            }
        }
    }
    let Some(newest) = times.first() else {
        return reasons;
    };
    if let Some(w) = keep.within {
        let since = w.before(newest);
        for (i, t) in times.iter().enumerate() {
            if *t >= since {
                mark(i, format!("within {w} of the newest"));
            }
        }
    }
    let windows = [
        (keep.within_hourly, Bucket::Hour),
        (keep.within_daily, Bucket::Day),
        (keep.within_weekly, Bucket::Week),
        (keep.within_monthly, Bucket::Month),
        (keep.within_yearly, Bucket::Year),
    ];
    for (w, bucket) in windows {
        let Some(w) = w else { continue };
        let since = w.before(newest);
        let mut last = None;
        for (i, t) in times.iter().enumerate() {
            if *t < since {
                break;
            }
            let k = bucket.key(t);
            if last != Some(k) {
                last = Some(k);
                mark(i, format!("within_{} {w}", bucket.name()));
            }
        }
    }
    reasons
}
