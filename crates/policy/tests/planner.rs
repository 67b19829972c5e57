//! The planner against an independent reference implementation of the
//! keep rules (written here, differently: distinct buckets first, then the
//! newest snapshot of each), over random histories in several time zones
//! (DST changes, a 30-minute DST, leap days, year ends), and the floor,
//! maximum-age, last-verified and hold invariants as properties.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use chrono_tz::Tz;
use holdfast_policy::{
    parse_str, plan, Action, HoldCheck, Keep, NoHolds, PlanInput, Policy, SnapshotInfo, Span,
};
use proptest::prelude::*;

const ZONES: [Tz; 5] = [
    chrono_tz::UTC,
    chrono_tz::Europe::Berlin,
    chrono_tz::America::New_York,
    chrono_tz::Australia::Lord_Howe,
    chrono_tz::Asia::Kolkata,
];

fn policy(text: &str) -> Policy {
    parse_str(Path::new("t.toml"), text)
        .expect("valid")
        .remove(0)
}

fn snap(id: usize, time: DateTime<Utc>) -> SnapshotInfo {
    SnapshotInfo {
        id: format!("{id:04}"),
        time,
        source: "docs".into(),
        kind: "files".into(),
        tags: Vec::new(),
        archived: false,
    }
}

fn run(
    p: &Policy,
    snaps: &[SnapshotInfo],
    now: DateTime<Utc>,
) -> BTreeMap<String, (Action, String)> {
    run_with(p, snaps, now, &BTreeSet::new(), &NoHolds)
}

fn run_with(
    p: &Policy,
    snaps: &[SnapshotInfo],
    now: DateTime<Utc>,
    verified: &BTreeSet<String>,
    holds: &dyn HoldCheck,
) -> BTreeMap<String, (Action, String)> {
    let policies = [p.clone()];
    plan(&PlanInput {
        snapshots: snaps,
        policies: &policies,
        now,
        verified,
        holds,
    })
    .expect("plan")
    .into_iter()
    .map(|d| (d.snapshot, (d.action, d.rule)))
    .collect()
}

/// The reference: for each bucket rule, the distinct buckets in order of
/// their newest snapshot, the first n of them, and the newest snapshot of
/// each; `last` the n newest; `within` by the newest snapshot's time.
fn reference_kept(keep: &Keep, snaps: &[SnapshotInfo], tz: Tz) -> BTreeSet<String> {
    let mut sorted: Vec<&SnapshotInfo> = snaps.iter().collect();
    sorted.sort_by(|a, b| (b.time, &b.id).cmp(&(a.time, &a.id)));
    let mut kept = BTreeSet::new();
    if let Some(n) = keep.last {
        kept.extend(sorted.iter().take(n as usize).map(|s| s.id.clone()));
    }
    type KeyFn = fn(&DateTime<Tz>) -> String;
    let keys: [(Option<u32>, Option<Span>, KeyFn); 5] = [
        (keep.hourly, keep.within_hourly, |t| {
            format!("{}", t.format("%Y-%m-%d %H"))
        }),
        (keep.daily, keep.within_daily, |t| {
            t.format("%Y-%m-%d").to_string()
        }),
        (keep.weekly, keep.within_weekly, |t| {
            let w = t.iso_week();
            format!("{}-W{}", w.year(), w.week())
        }),
        (keep.monthly, keep.within_monthly, |t| {
            t.format("%Y-%m").to_string()
        }),
        (keep.yearly, keep.within_yearly, |t| t.year().to_string()),
    ];
    let newest = sorted.first().map(|s| s.time.with_timezone(&tz));
    for (n, within, key) in keys {
        // Newest snapshot of each bucket, buckets ordered newest first.
        let mut first_of: Vec<(String, &SnapshotInfo)> = Vec::new();
        for s in &sorted {
            let k = key(&s.time.with_timezone(&tz));
            if !first_of.iter().any(|(kk, _)| *kk == k) {
                first_of.push((k, s));
            }
        }
        if let Some(n) = n {
            kept.extend(first_of.iter().take(n as usize).map(|(_, s)| s.id.clone()));
        }
        if let (Some(w), Some(newest)) = (within, newest) {
            let since = w.before(&newest);
            kept.extend(
                first_of
                    .iter()
                    .filter(|(_, s)| s.time.with_timezone(&tz) >= since)
                    .map(|(_, s)| s.id.clone()),
            );
        }
    }
    if let (Some(w), Some(newest)) = (keep.within, newest) {
        let since = w.before(&newest);
        kept.extend(
            sorted
                .iter()
                .filter(|s| s.time.with_timezone(&tz) >= since)
                .map(|s| s.id.clone()),
        );
    }
    kept
}

fn history() -> impl Strategy<Value = (Vec<i64>, usize)> {
    // Up to 60 snapshots over about three years, some clustered within
    // hours (several a day), around a leap day and year ends.
    (
        prop::collection::vec(
            prop_oneof![
                0i64..(3 * 366 * 24 * 3600),
                // Clustered near 2028-02-29 and 2027-12-31.
                (0i64..(3 * 24 * 3600)).prop_map(|s| s + 3600 * 24 * 789),
                (0i64..(2 * 24 * 3600)).prop_map(|s| s + 3600 * 24 * 729),
            ],
            0..60,
        ),
        0usize..ZONES.len(),
    )
}

fn keep_rules() -> impl Strategy<Value = String> {
    (
        prop::option::of(0u32..5),
        prop::option::of(0u32..6),
        prop::option::of(0u32..10),
        prop::option::of(0u32..6),
        prop::option::of(0u32..14),
        prop::option::of(0u32..3),
        prop::option::of(1u32..40),
        prop::option::of(1u32..20),
    )
        .prop_map(
            |(last, hourly, daily, weekly, monthly, yearly, within, within_daily)| {
                let mut parts = Vec::new();
                let mut add = |k: &str, v: Option<String>| {
                    if let Some(v) = v {
                        parts.push(format!("{k} = {v}"));
                    }
                };
                add("last", last.map(|v| v.to_string()));
                add("hourly", hourly.map(|v| v.to_string()));
                add("daily", daily.map(|v| v.to_string()));
                add("weekly", weekly.map(|v| v.to_string()));
                add("monthly", monthly.map(|v| v.to_string()));
                add("yearly", yearly.map(|v| v.to_string()));
                add("within", within.map(|v| format!("\"{v}d\"")));
                add("within_daily", within_daily.map(|v| format!("\"{v}d\"")));
                if parts.is_empty() {
                    parts.push("last = 1".into());
                }
                format!("{{ {} }}", parts.join(", "))
            },
        )
}

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn keep_rules_match_the_reference((offsets, zone) in history(), keep in keep_rules()) {
        let tz = ZONES[zone];
        let p = policy(&format!(
            "[[policy]]\nname = \"p\"\nsource = \"*\"\ntimezone = \"{}\"\nkeep = {keep}\n",
            tz.name()
        ));
        let snaps: Vec<SnapshotInfo> = offsets.iter().enumerate()
            .map(|(i, o)| snap(i, start() + Duration::seconds(*o)))
            .collect();
        let now = start() + Duration::days(4 * 366);
        let got = run(&p, &snaps, now);
        let expected = reference_kept(&p.keep, &snaps, tz);
        for s in &snaps {
            let (action, rule) = &got[&s.id];
            prop_assert_eq!(
                *action == Action::Keep,
                expected.contains(&s.id),
                "snapshot {} at {} ({}): {:?} by {:?}", s.id, s.time.with_timezone(&tz), tz.name(), action, rule
            );
        }
    }

    #[test]
    fn floor_max_age_verified_and_holds_are_never_overridden(
        (offsets, zone) in history(),
        keep in keep_rules(),
        floor_days in 1u32..400,
        extra_days in 1u32..400,
        verified_pick in prop::collection::vec(any::<bool>(), 60),
        held_pick in prop::collection::vec(any::<bool>(), 60),
        now_days in 300i64..1600,
    ) {
        let tz = ZONES[zone];
        let max_days = floor_days + extra_days;
        let p = policy(&format!(
            "[[policy]]\nname = \"p\"\nsource = \"*\"\ntimezone = \"{}\"\nkeep = {keep}\nfloor = \"{floor_days}d\"\nmax_age = \"{max_days}d\"\n",
            tz.name()
        ));
        let snaps: Vec<SnapshotInfo> = offsets.iter().enumerate()
            .map(|(i, o)| snap(i, start() + Duration::seconds(*o)))
            .collect();
        let now = start() + Duration::days(now_days);
        let verified: BTreeSet<String> = snaps.iter().enumerate()
            .filter(|(i, _)| verified_pick[*i]).map(|(_, s)| s.id.clone()).collect();
        struct Held(BTreeSet<String>);
        impl HoldCheck for Held {
            fn holds(&self, s: &SnapshotInfo) -> Vec<String> {
                if self.0.contains(&s.id) { vec!["CASE-1".into()] } else { Vec::new() }
            }
        }
        let held = Held(snaps.iter().enumerate()
            .filter(|(i, _)| held_pick[*i]).map(|(_, s)| s.id.clone()).collect());
        let got = run_with(&p, &snaps, now, &verified, &held);
        let newest_verified = snaps.iter()
            .filter(|s| verified.contains(&s.id))
            .max_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)))
            .map(|s| s.id.clone());
        for s in &snaps {
            let (action, rule) = &got[&s.id];
            let age = now - s.time;
            if held.0.contains(&s.id) {
                prop_assert!(*action != Action::Purge && rule.contains("CASE-1"), "held {}: {:?} {}", s.id, action, rule);
            }
            if s.time > now - Duration::days(floor_days as i64) {
                prop_assert!(*action != Action::Purge, "{} under the floor purged: {}", s.id, rule);
            }
            if newest_verified.as_deref() == Some(s.id.as_str()) {
                prop_assert!(*action != Action::Purge, "last verified {} purged: {}", s.id, rule);
            }
            let protected = held.0.contains(&s.id) || newest_verified.as_deref() == Some(s.id.as_str());
            if age > Duration::days(max_days as i64) && !protected {
                prop_assert_eq!(*action, Action::Purge, "{} past max age kept: {}", s.id, rule);
            }
        }
    }
}

#[test]
fn days_are_counted_in_the_policy_time_zone_across_dst() {
    // 2026-03-29: Europe/Berlin springs forward at 02:00 local. Snapshots
    // at 22:30 UTC on the 28th (23:30 CET, the 28th) and 22:30 UTC on the
    // 29th (00:30 CEST, the 30th) and 21:30 UTC on the 29th (23:30 CEST, the 29th).
    let snaps = vec![
        snap(1, Utc.with_ymd_and_hms(2026, 3, 28, 22, 30, 0).unwrap()),
        snap(2, Utc.with_ymd_and_hms(2026, 3, 29, 21, 30, 0).unwrap()),
        snap(3, Utc.with_ymd_and_hms(2026, 3, 29, 22, 30, 0).unwrap()),
    ];
    let now = Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap();
    let berlin = policy("[[policy]]\nname = \"p\"\nsource = \"*\"\ntimezone = \"Europe/Berlin\"\nkeep = { daily = 3 }\n");
    let got = run(&berlin, &snaps, now);
    // Three different Berlin days: all kept.
    assert!(got.values().all(|(a, _)| *a == Action::Keep), "{got:?}");
    assert_eq!(got["0003"].1, "daily #1 of 3");
    let utc = policy(
        "[[policy]]\nname = \"p\"\nsource = \"*\"\ntimezone = \"UTC\"\nkeep = { daily = 3 }\n",
    );
    let got = run(&utc, &snaps, now);
    // In UTC, 2 and 3 share the 29th: only the newest of them is kept.
    assert_eq!(got["0002"].0, Action::Purge, "{got:?}");
    assert_eq!(got["0003"].0, Action::Keep);
}

#[test]
fn rules_read_as_reasons_and_unselected_snapshots_are_kept() {
    let p = policy(
        "[[policy]]\nname = \"docs\"\nsource = \"docs\"\ntimezone = \"UTC\"\nkeep = { last = 1, daily = 2 }\nfloor = \"1d\"\nmax_age = \"30d\"\narchive_after = \"3d\"\n",
    );
    let now = Utc.with_ymd_and_hms(2026, 6, 10, 12, 0, 0).unwrap();
    let mut snaps = vec![
        snap(1, now - Duration::hours(2)),  // floor, last #1
        snap(2, now - Duration::hours(30)), // daily #2
        snap(3, now - Duration::hours(31)), // same day as 2: purged
        snap(4, now - Duration::days(5)),   // purged (no rule)
        snap(5, now - Duration::days(40)),  // past max age
    ];
    let mut other = snap(6, now - Duration::days(400));
    other.source = "ehr".into();
    snaps.push(other);
    let got = run(&p, &snaps, now);
    assert_eq!(got["0001"].0, Action::Keep);
    assert!(
        got["0001"].1.starts_with("floor 1d until 2026-06-11"),
        "{}",
        got["0001"].1
    );
    assert_eq!(got["0002"], (Action::Keep, "daily #2 of 2".into()));
    assert_eq!(got["0003"], (Action::Purge, "no keep rule keeps it".into()));
    assert_eq!(got["0005"], (Action::Purge, "past max_age 30d".into()));
    assert_eq!(got["0006"], (Action::Keep, "no policy selects it".into()));
    // Later, snapshot 2 is older than archive_after and still kept: archive.
    let later = now + Duration::days(2);
    let got = run(&p, &snaps[..2], later);
    assert_eq!(got["0002"].0, Action::Archive, "{:?}", got["0002"]);
    assert!(
        got["0002"].1.contains("archive_after 3d"),
        "{}",
        got["0002"].1
    );
}

#[test]
fn plan_is_deterministic_and_at_moves_it() {
    let p = policy("[[policy]]\nname = \"p\"\nsource = \"*\"\ntimezone = \"UTC\"\nkeep = { within = \"10d\" }\nmax_age = \"20d\"\n");
    let base = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
    let snaps: Vec<_> = (0..30)
        .map(|i| snap(i, base + Duration::days(i as i64)))
        .collect();
    let now = base + Duration::days(30);
    assert_eq!(run(&p, &snaps, now), run(&p, &snaps, now));
    let purged = |m: &BTreeMap<String, (Action, String)>| {
        m.values().filter(|(a, _)| *a == Action::Purge).count()
    };
    let later = run(&p, &snaps, now + Duration::days(365));
    // A year on everything is past max_age.
    assert_eq!(purged(&later), 30);
}

#[test]
fn a_held_snapshot_is_neither_purged_nor_archived_and_names_every_case() {
    let p = policy(
        "[[policy]]\nname = \"docs\"\nsource = \"docs\"\ntimezone = \"UTC\"\nkeep = { last = 1 }\nmax_age = \"30d\"\narchive_after = \"3d\"\n",
    );
    let now = Utc.with_ymd_and_hms(2026, 6, 10, 12, 0, 0).unwrap();
    // 0: past max_age, 1: to be archived, 2: newest (kept by last = 1).
    let snaps = vec![
        snap(0, now - Duration::days(60)),
        snap(1, now - Duration::days(10)),
        snap(2, now - Duration::days(1)),
    ];
    let plain = run(&p, &snaps, now);
    assert_eq!(plain["0000"].0, Action::Purge);
    assert_eq!(plain["0001"].0, Action::Purge);
    struct Both;
    impl HoldCheck for Both {
        fn holds(&self, s: &SnapshotInfo) -> Vec<String> {
            if s.id == "0002" {
                Vec::new()
            } else {
                vec!["CASE-1".into(), "CASE-2".into()]
            }
        }
    }
    let held = run_with(&p, &snaps, now, &BTreeSet::new(), &Both);
    for id in ["0000", "0001"] {
        assert_eq!(held[id].0, Action::Keep, "{id}: {:?}", held[id]);
        assert_eq!(held[id].1, "held by CASE-1, CASE-2");
    }
    // Kept past archive_after without a hold: archived.
    let keep_all = policy(
        "[[policy]]\nname = \"docs\"\nsource = \"docs\"\ntimezone = \"UTC\"\nkeep = { last = 3 }\narchive_after = \"3d\"\n",
    );
    assert_eq!(run(&keep_all, &snaps, now)["0001"].0, Action::Archive);
    let held = run_with(&keep_all, &snaps, now, &BTreeSet::new(), &Both);
    assert_eq!(held["0001"].0, Action::Keep, "{:?}", held["0001"]);
}
