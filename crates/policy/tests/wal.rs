//! WAL retention as properties over random physical backup histories:
//! random base backups (some kept, some purged) on one or two timelines,
//! an archive of segments, partial and backup-history files and timeline
//! history files; every file a kept base backup needs for recovery to any
//! later point is kept, the purged files are exactly a prefix of the
//! archive, the floor keeps recent WAL, and a cluster no policy governs
//! keeps everything.

use std::path::Path;

use chrono::{DateTime, Duration, TimeZone, Utc};
use holdfast_policy::{parse_str, plan_wal, Action, BaseBackup, Decision, Policy, WalFile};
use proptest::prelude::*;

fn policy(floor: Option<&str>) -> Policy {
    let floor = floor
        .map(|f| format!("floor = \"{f}\"\n"))
        .unwrap_or_default();
    parse_str(
        Path::new("t.toml"),
        &format!(
            "[[policy]]\nname = \"pitr\"\nsource = \"ehr-cluster\"\nkind = \"postgres-physical\"\ntimezone = \"UTC\"\nkeep = {{ last = 1 }}\n{floor}"
        ),
    )
    .expect("valid")
    .remove(0)
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("time")
}

fn seg(tl: u32, pos: u32) -> String {
    format!("{tl:08X}{:08X}{:08X}", pos / 256, pos % 256)
}

/// A history: `n` segments (one per hour), a timeline switch at `switch`
/// (None: one timeline), base backups at the given segment positions,
/// each kept or purged.
#[derive(Debug, Clone)]
struct History {
    n: u32,
    switch: Option<u32>,
    backups: Vec<(u32, bool)>,
}

fn timeline_at(h: &History, pos: u32) -> u32 {
    match h.switch {
        Some(s) if pos >= s => 2,
        _ => 1,
    }
}

fn build(h: &History) -> (Vec<Decision>, Vec<BaseBackup>, Vec<WalFile>) {
    let at = |pos: u32| t0() + Duration::hours(i64::from(pos));
    let mut wal = Vec::new();
    for pos in 0..h.n {
        wal.push(WalFile {
            cluster: "7".into(),
            name: seg(timeline_at(h, pos), pos),
            archived_at: at(pos),
        });
        // The old timeline's copy of the switch segment, as PostgreSQL
        // archives it (.partial) after promotion.
        if h.switch == Some(pos) {
            wal.push(WalFile {
                cluster: "7".into(),
                name: format!("{}.partial", seg(1, pos)),
                archived_at: at(pos),
            });
            wal.push(WalFile {
                cluster: "7".into(),
                name: "00000002.history".into(),
                archived_at: at(pos),
            });
        }
    }
    let mut decisions = Vec::new();
    let mut backups = Vec::new();
    for (i, (pos, kept)) in h.backups.iter().enumerate() {
        let id = format!("{i:064}");
        let start = seg(timeline_at(h, *pos), *pos);
        wal.push(WalFile {
            cluster: "7".into(),
            name: format!("{start}.00000028.backup"),
            archived_at: at(*pos),
        });
        backups.push(BaseBackup {
            snapshot: id.clone(),
            time: at(*pos),
            cluster: "7".into(),
            start_wal: Some(start),
        });
        decisions.push(Decision {
            snapshot: id,
            time: at(*pos),
            source: "ehr-cluster".into(),
            kind: "postgres-physical".into(),
            action: if *kept { Action::Keep } else { Action::Purge },
            rule: "test".into(),
            policy: Some("pitr".into()),
            erasures: Vec::new(),
        });
    }
    (decisions, backups, wal)
}

fn position(name: &str) -> Option<u32> {
    if name.ends_with(".history") {
        return None;
    }
    let log = u32::from_str_radix(name.get(8..16)?, 16).ok()?;
    let s = u32::from_str_radix(name.get(16..24)?, 16).ok()?;
    Some(log * 256 + s)
}

fn histories() -> impl Strategy<Value = History> {
    (20u32..600, proptest::option::of(1u32..600), 1usize..6).prop_flat_map(|(n, switch, k)| {
        let switch = switch.filter(|s| *s < n);
        proptest::collection::vec((0..n, any::<bool>()), k).prop_map(move |mut backups| {
            backups.sort();
            backups.dedup_by_key(|b| b.0);
            History { n, switch, backups }
        })
    })
}

proptest! {
    #[test]
    fn kept_backups_keep_everything_from_their_start_and_purges_are_a_prefix(h in histories()) {
        let (decisions, backups, wal) = build(&h);
        let now = t0() + Duration::days(400);
        let out = plan_wal(&[policy(None)], &decisions, &backups, &wal, now);
        prop_assert_eq!(out.len(), wal.len());
        let kept: Vec<u32> = h.backups.iter().filter(|b| b.1).map(|b| b.0).collect();
        // With none kept, the newest base backup anchors.
        let anchor = kept.iter().min().copied().or_else(|| h.backups.iter().map(|b| b.0).max());
        for d in &out {
            prop_assert!(!d.rule.is_empty());
            match position(&d.name) {
                Some(p) => {
                    let want = if anchor.is_some_and(|a| p >= a) { Action::Keep } else { Action::Purge };
                    prop_assert_eq!(d.action, want, "{} ({})", d.name, d.rule);
                }
                None => {
                    // 00000002.history: kept while the lowest timeline of
                    // the kept (or anchoring) backups is at most 2, which
                    // with two timelines is always (the purge side is
                    // `older_timeline_histories_are_purged`).
                    let lowest = match kept.iter().map(|p| timeline_at(&h, *p)).min() {
                        Some(tl) => tl,
                        None => anchor.map_or(1, |a| timeline_at(&h, a)),
                    };
                    let want = if 2 >= lowest { Action::Keep } else { Action::Purge };
                    prop_assert_eq!(d.action, want, "{} ({})", d.name, d.rule);
                }
            }
        }
        // A prefix: no kept segment position precedes a purged one.
        let max_purged = out.iter().filter(|d| d.action == Action::Purge).filter_map(|d| position(&d.name)).max();
        let min_kept = out.iter().filter(|d| d.action == Action::Keep).filter_map(|d| position(&d.name)).min();
        if let (Some(a), Some(b)) = (max_purged, min_kept) {
            prop_assert!(a < b);
        }
    }

    #[test]
    fn the_floor_keeps_recent_wal(h in histories(), days in 1u32..30) {
        let (decisions, backups, wal) = build(&h);
        let now = t0() + Duration::hours(i64::from(h.n));
        let floor = format!("{days}d");
        let out = plan_wal(&[policy(Some(&floor))], &decisions, &backups, &wal, now);
        for (d, w) in out.iter().zip({
            let mut w = wal.clone();
            w.sort_by(|a, b| a.name.cmp(&b.name));
            w
        }) {
            prop_assert_eq!(&d.name, &w.name);
            if w.archived_at + Duration::days(i64::from(days)) > now {
                prop_assert_eq!(d.action, Action::Keep, "{} ({})", d.name, d.rule);
            }
        }
    }
}

#[test]
fn a_cluster_no_policy_governs_keeps_everything_and_unknown_names_are_kept() {
    let h = History {
        n: 40,
        switch: Some(20),
        backups: vec![(10, false), (30, true)],
    };
    let (mut decisions, backups, mut wal) = build(&h);
    wal.push(WalFile {
        cluster: "7".into(),
        name: "not-a-wal-file".into(),
        archived_at: t0(),
    });
    let out = plan_wal(
        &[policy(None)],
        &decisions,
        &backups,
        &wal,
        t0() + Duration::days(90),
    );
    let odd = out
        .iter()
        .find(|d| d.name == "not-a-wal-file")
        .expect("decided");
    assert_eq!(odd.action, Action::Keep);
    assert!(out.iter().any(|d| d.action == Action::Purge));
    // The same backups decided by no policy: nothing of the WAL is purged.
    for d in &mut decisions {
        d.policy = None;
        d.action = Action::Keep;
    }
    let out = plan_wal(
        &[policy(None)],
        &decisions,
        &backups,
        &wal,
        t0() + Duration::days(90),
    );
    assert!(out.iter().all(|d| d.action == Action::Keep), "{out:#?}");
    // Another cluster's WAL is not touched by this cluster's backups.
    let other: Vec<WalFile> = wal
        .iter()
        .map(|w| WalFile {
            cluster: "8".into(),
            ..w.clone()
        })
        .collect();
    let (decisions, _, _) = build(&h);
    let out = plan_wal(
        &[policy(None)],
        &decisions,
        &backups,
        &other,
        t0() + Duration::days(90),
    );
    assert!(out.iter().all(|d| d.action == Action::Keep));
}

#[test]
fn a_kept_backup_without_a_recorded_start_keeps_the_whole_cluster() {
    let h = History {
        n: 30,
        switch: None,
        backups: vec![(5, false), (20, true)],
    };
    let (decisions, mut backups, wal) = build(&h);
    backups[1].start_wal = None;
    let out = plan_wal(
        &[policy(None)],
        &decisions,
        &backups,
        &wal,
        t0() + Duration::days(90),
    );
    assert!(out.iter().all(|d| d.action == Action::Keep));
    assert!(
        out[0].rule.contains("records no WAL start"),
        "{}",
        out[0].rule
    );
}

#[test]
fn older_timeline_histories_are_purged_later_ones_kept() {
    let at = |h: i64| t0() + Duration::hours(h);
    let wal: Vec<WalFile> = [
        (seg(1, 1), 1),
        (seg(1, 2), 2),
        ("00000002.history".to_string(), 3),
        (seg(2, 3), 3),
        (seg(2, 4), 4),
        ("00000003.history".to_string(), 5),
        (seg(3, 5), 5),
        (seg(3, 6), 6),
        ("00000004.history".to_string(), 7),
    ]
    .into_iter()
    .map(|(name, h)| WalFile {
        cluster: "7".into(),
        name,
        archived_at: at(h),
    })
    .collect();
    let backup = |i: usize, start: String, h: i64| BaseBackup {
        snapshot: format!("{i:064}"),
        time: at(h),
        cluster: "7".into(),
        start_wal: Some(start),
    };
    let decide = |i: usize, h: i64, action: Action| Decision {
        snapshot: format!("{i:064}"),
        time: at(h),
        source: "ehr-cluster".into(),
        kind: "postgres-physical".into(),
        action,
        rule: "test".into(),
        policy: Some("pitr".into()),
        erasures: Vec::new(),
    };
    let backups = [backup(0, seg(1, 1), 1), backup(1, seg(3, 5), 5)];
    let decisions = [decide(0, 1, Action::Purge), decide(1, 5, Action::Keep)];
    let out = plan_wal(&[policy(None)], &decisions, &backups, &wal, at(1000));
    let action = |n: &str| out.iter().find(|d| d.name == n).expect(n).action;
    assert_eq!(action("00000002.history"), Action::Purge);
    assert_eq!(action("00000003.history"), Action::Keep);
    // A later timeline (a recovery from the kept backup) is kept.
    assert_eq!(action("00000004.history"), Action::Keep);
    assert_eq!(action(&seg(2, 4)), Action::Purge);
    assert_eq!(action(&seg(3, 5)), Action::Keep);
    assert_eq!(action(&seg(3, 6)), Action::Keep);
    let rule = &out
        .iter()
        .find(|d| d.name == "00000002.history")
        .expect("h")
        .rule;
    assert!(
        rule.contains("timeline 2") && rule.contains("(3)"),
        "{rule}"
    );
}
