//! WAL retention for physical PostgreSQL backups: which archived WAL files
//! (and timeline history files) to keep and which to purge, given the
//! decisions about the base backups.
//!
//! The WAL of a cluster is governed by the policy that decides its base
//! backups (physical snapshots carry the cluster's system identifier). To
//! recover a kept base backup to any point up to the next kept one (and the
//! newest to the end of the archive), PostgreSQL needs every WAL file from
//! that backup's start onwards. So the kept WAL is everything from the
//! start of the kept base backup that starts first, and nothing older:
//!
//! - a segment (or a `.partial` / `.backup` file named after one) is kept
//!   if its position (log and segment number, on whatever timeline) is at
//!   or after that start, else purged. Positions are compared across
//!   timelines: a kept backup on timeline t needs, from its start, the
//!   segments of t and of the timelines that branch from it later, which
//!   are all at later positions; it never needs an earlier position.
//! - a timeline history file `N.history` is kept if N is at least the
//!   lowest timeline of the kept base backups (recovery reads the history
//!   of its own timeline and of later ones, never of earlier ones).
//! - anything archived within a governing policy's floor is kept.
//! - a cluster none of whose base backups is kept keeps the WAL from the
//!   start of its newest base backup on (a base backup being taken now
//!   needs it), and a file whose name this module cannot order is kept.
//!
//! Purging therefore only ever removes a prefix of the archive: no gap is
//! opened in what a kept backup replays.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::file::Policy;
use crate::plan::{Action, Decision};

/// A physical base backup as WAL retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseBackup {
    /// Snapshot id.
    pub snapshot: String,
    pub time: DateTime<Utc>,
    /// System identifier of the cluster, in decimal.
    pub cluster: String,
    /// The WAL file its backup label starts in (`start_wal` in the
    /// snapshot's metadata), if it records one.
    pub start_wal: Option<String>,
}

/// One archived WAL file (a WAL manifest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalFile {
    pub cluster: String,
    /// The WAL file name (`000000010000000000000003`, `00000002.history`).
    pub name: String,
    pub archived_at: DateTime<Utc>,
}

/// The decision for one WAL file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalDecision {
    pub cluster: String,
    pub name: String,
    /// `keep` or `purge` (WAL is never archived on its own).
    pub action: Action,
    pub rule: String,
    /// The policy that governs the cluster's WAL, if any.
    pub policy: Option<String>,
}

/// What a WAL file name says about its place in the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum WalName {
    /// A segment, or a `.partial` or `.backup` file named after one:
    /// timeline and position (log, segment).
    Segment { timeline: u32, position: (u32, u32) },
    /// `N.history`.
    History { timeline: u32 },
}

fn hex_u32(s: &str) -> Option<u32> {
    (s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u32::from_str_radix(s, 16).ok())
        .flatten()
}

fn parse_name(name: &str) -> Option<WalName> {
    if let Some(tl) = name.strip_suffix(".history") {
        return hex_u32(tl).map(|timeline| WalName::History { timeline });
    }
    let seg = name.get(..24)?;
    let rest = name.get(24..)?;
    if !(rest.is_empty() || rest == ".partial" || rest.ends_with(".backup")) {
        return None;
    }
    Some(WalName::Segment {
        timeline: hex_u32(seg.get(..8)?)?,
        position: (hex_u32(seg.get(8..16)?)?, hex_u32(seg.get(16..24)?)?),
    })
}

/// A base backup's start: timeline and position.
fn start_of(b: &BaseBackup) -> Option<(u32, (u32, u32))> {
    match parse_name(b.start_wal.as_deref()?)? {
        WalName::Segment { timeline, position } => Some((timeline, position)),
        WalName::History { .. } => None,
    }
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// What one cluster's WAL is measured against.
enum Anchor<'a> {
    /// Kept base backups with their starts, earliest start first.
    Kept(Vec<(&'a BaseBackup, u32, (u32, u32))>),
    /// No base backup is kept: the newest one (kept WAL from its start on).
    Newest(&'a BaseBackup, u32, (u32, u32)),
    /// A kept backup (or, with none kept, the newest) whose start is
    /// unknown: every file of the cluster is kept.
    Unknown(&'a BaseBackup),
}

/// Decide every WAL file in `wal`. `decisions` are the plan's decisions
/// for the snapshots, `backups` every physical snapshot; `now` is the
/// plan's instant (for floors).
pub fn plan_wal(
    policies: &[Policy],
    decisions: &[Decision],
    backups: &[BaseBackup],
    wal: &[WalFile],
    now: DateTime<Utc>,
) -> Vec<WalDecision> {
    let by_id: BTreeMap<&str, &Decision> =
        decisions.iter().map(|d| (d.snapshot.as_str(), d)).collect();
    // Per cluster: the governing policies and its base backups with their
    // decisions.
    let mut governing: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut cluster_backups: BTreeMap<&str, Vec<(&BaseBackup, Action)>> = BTreeMap::new();
    for b in backups {
        let Some(d) = by_id.get(b.snapshot.as_str()) else {
            continue;
        };
        if let Some(p) = &d.policy {
            governing.entry(&b.cluster).or_default().insert(p);
        }
        cluster_backups
            .entry(&b.cluster)
            .or_default()
            .push((b, d.action));
    }
    let anchors: BTreeMap<&str, Anchor> = cluster_backups
        .iter()
        .map(|(c, list)| (*c, anchor(list)))
        .collect();
    let mut out: Vec<WalDecision> = wal
        .iter()
        .map(|w| {
            let names = governing.get(w.cluster.as_str());
            let governors: Vec<&Policy> = names
                .map(|n| {
                    policies
                        .iter()
                        .filter(|p| n.contains(p.name.as_str()))
                        .collect()
                })
                .unwrap_or_default();
            let policy = names.map(|n| n.iter().copied().collect::<Vec<_>>().join(", "));
            let (action, rule) = decide(w, &governors, anchors.get(w.cluster.as_str()), now);
            WalDecision {
                cluster: w.cluster.clone(),
                name: w.name.clone(),
                action,
                rule,
                policy,
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.cluster, &a.name).cmp(&(&b.cluster, &b.name)));
    out
}

fn anchor<'a>(list: &[(&'a BaseBackup, Action)]) -> Anchor<'a> {
    let kept: Vec<&BaseBackup> = list
        .iter()
        .filter(|(_, a)| *a != Action::Purge)
        .map(|(b, _)| *b)
        .collect();
    if kept.is_empty() {
        let newest = list
            .iter()
            .map(|(b, _)| *b)
            .max_by(|a, b| (a.time, &a.snapshot).cmp(&(b.time, &b.snapshot)));
        return match newest {
            Some(b) => match start_of(b) {
                Some((tl, pos)) => Anchor::Newest(b, tl, pos),
                None => Anchor::Unknown(b),
            },
            None => Anchor::Kept(Vec::new()),
        };
    }
    let mut starts = Vec::new();
    for b in kept {
        match start_of(b) {
            Some((tl, pos)) => starts.push((b, tl, pos)),
            None => return Anchor::Unknown(b),
        }
    }
    starts.sort_by(|a, b| (a.2, a.1, &a.0.snapshot).cmp(&(b.2, b.1, &b.0.snapshot)));
    Anchor::Kept(starts)
}

fn decide(
    w: &WalFile,
    governors: &[&Policy],
    anchor: Option<&Anchor>,
    now: DateTime<Utc>,
) -> (Action, String) {
    let (Some(anchor), false) = (anchor, governors.is_empty()) else {
        return (
            Action::Keep,
            format!("no policy decides a base backup of cluster {}", w.cluster),
        );
    };
    let Some(name) = parse_name(&w.name) else {
        return (
            Action::Keep,
            "not a WAL file name retention can place".into(),
        );
    };
    for p in governors {
        if let Some(f) = p.floor {
            let until = f.after(&w.archived_at.with_timezone(&p.timezone));
            if until > now {
                return (
                    Action::Keep,
                    format!("floor {f} until {}", until.format("%Y-%m-%d %H:%M %Z")),
                );
            }
        }
    }
    match (anchor, name) {
        (Anchor::Unknown(b), _) => (
            Action::Keep,
            format!(
                "base backup {} records no WAL start: the cluster's WAL is kept",
                short(&b.snapshot)
            ),
        ),
        (Anchor::Kept(starts), _) if starts.is_empty() => {
            (Action::Keep, "no base backup of the cluster".into())
        }
        (Anchor::Kept(starts), WalName::Segment { position, .. }) => {
            // The kept backup whose recovery uses this file: the latest
            // start at or before it.
            match starts.iter().rev().find(|(_, _, p)| *p <= position) {
                Some((b, _, _)) => (
                    Action::Keep,
                    format!(
                        "needed to recover kept base backup {} (from {})",
                        short(&b.snapshot),
                        b.start_wal.as_deref().unwrap_or("?")
                    ),
                ),
                None => {
                    let (b, _, _) = &starts[0];
                    (
                        Action::Purge,
                        format!(
                            "older than the start of the oldest kept base backup {} ({})",
                            short(&b.snapshot),
                            b.start_wal.as_deref().unwrap_or("?")
                        ),
                    )
                }
            }
        }
        (Anchor::Kept(starts), WalName::History { timeline }) => {
            let lowest = starts.iter().map(|(_, tl, _)| *tl).min().unwrap_or(1);
            if timeline >= lowest {
                (
                    Action::Keep,
                    format!("history of timeline {timeline}, needed by kept base backups on timeline {lowest} or later"),
                )
            } else {
                (
                    Action::Purge,
                    format!("history of timeline {timeline}, older than every kept base backup's timeline ({lowest})"),
                )
            }
        }
        (Anchor::Newest(b, tl, start), name) => {
            let keep = match name {
                WalName::Segment { position, .. } => position >= *start,
                WalName::History { timeline } => timeline >= *tl,
            };
            if keep {
                (
                    Action::Keep,
                    format!(
                        "no base backup is kept; from the start of the newest, {} ({}), WAL is kept for the next",
                        short(&b.snapshot),
                        b.start_wal.as_deref().unwrap_or("?")
                    ),
                )
            } else {
                (
                    Action::Purge,
                    format!(
                        "no base backup is kept, and older than the start of the newest, {}",
                        short(&b.snapshot)
                    ),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_order() {
        assert_eq!(
            parse_name("000000020000000100000003"),
            Some(WalName::Segment {
                timeline: 2,
                position: (1, 3)
            })
        );
        assert_eq!(
            parse_name("0000000100000000000000A1.00000028.backup"),
            Some(WalName::Segment {
                timeline: 1,
                position: (0, 0xA1)
            })
        );
        assert_eq!(
            parse_name("000000010000000000000002.partial"),
            Some(WalName::Segment {
                timeline: 1,
                position: (0, 2)
            })
        );
        assert_eq!(
            parse_name("0000000A.history"),
            Some(WalName::History { timeline: 10 })
        );
        for bad in [
            "",
            "00000001",
            "0000000100000000000000",
            "00000001000000000000000G",
            "000000010000000000000002.tmp",
            "zz.history",
            "0000000100000000000000ÿÿ",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }
}
