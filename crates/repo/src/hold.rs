//! Legal hold records (`holds/`): a placement names the snapshots it
//! freezes (explicit ids, or a source and an optional time range, which
//! also covers that source's later snapshots inside the range); a release
//! is a second record referring to the hold. Both are sealed, bound to
//! their names and written once: a hold is never edited or deleted, so the
//! history of who froze and who released what stays in the repository.
//!
//! Names: a hold is `holds/H-xxxxxx` (six random hex digits, short enough
//! to read out on the phone), its release `holds/H-xxxxxx.release`. Both
//! are written with the store's conditional put, so two operators placing
//! holds at once can never end up with the same id, and a hold can be
//! released only once (the second release finds the name taken).
//!
//! Readers fail closed: a hold record that cannot be read or does not open
//! is reported, and holds everything (see [`HoldRecords::cases`]), since
//! what it names is unknown. A release that cannot be read releases
//! nothing.

use chrono::{DateTime, Utc};
use holdfast_storage::ObjectKind;
use serde::{Deserialize, Serialize};

use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::records;
use crate::repository::{Repository, Unreadable};

/// Version of the hold and release records.
pub const HOLD_VERSION: u32 = 1;

/// Suffix of a release record's name.
pub const RELEASE_SUFFIX: &str = ".release";

/// What a hold freezes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum HoldSelector {
    /// These snapshots.
    Snapshots { snapshots: Vec<Id> },
    /// Every snapshot of `source` taken at or after `from` and at or
    /// before `to` (either bound may be open), including snapshots taken
    /// after the hold was placed.
    Source {
        source: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<DateTime<Utc>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<DateTime<Utc>>,
    },
}

impl HoldSelector {
    /// Does this selector cover the snapshot `id` of `source` taken at
    /// `time`?
    pub fn covers(&self, id: &Id, source: &str, time: DateTime<Utc>) -> bool {
        match self {
            HoldSelector::Snapshots { snapshots } => snapshots.contains(id),
            HoldSelector::Source {
                source: s,
                from,
                to,
            } => s == source && from.is_none_or(|f| time >= f) && to.is_none_or(|t| time <= t),
        }
    }

    /// Readable form: `snapshots ab12cd34, ef56…` or `source docs from … to …`.
    pub fn describe(&self) -> String {
        match self {
            HoldSelector::Snapshots { snapshots } => format!(
                "snapshot{} {}",
                if snapshots.len() == 1 { "" } else { "s" },
                snapshots
                    .iter()
                    .map(|s| s.short())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            HoldSelector::Source { source, from, to } => {
                let mut s = format!("source {source:?}");
                if let Some(f) = from {
                    s.push_str(&format!(" from {}", f.to_rfc3339()));
                }
                if let Some(t) = to {
                    s.push_str(&format!(" to {}", t.to_rfc3339()));
                }
                s
            }
        }
    }
}

/// A legal hold as placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub version: u32,
    /// `H-` and six hex digits; also the record's object name.
    pub id: String,
    /// The case or matter reference (`CASE-123`).
    pub case: String,
    pub reason: String,
    /// Who placed it (the actor identity the caller resolved).
    pub placed_by: String,
    pub placed_at: DateTime<Utc>,
    /// The host it was placed from.
    pub host: String,
    pub selector: HoldSelector,
}

/// The release of a hold: a record of its own, never an edit of the hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldRelease {
    pub version: u32,
    /// The hold released.
    pub hold: String,
    /// Its case reference (copied, so the release reads on its own).
    pub case: String,
    pub released_by: String,
    pub released_at: DateTime<Utc>,
    pub host: String,
    pub reason: String,
    /// An electronic signature over the release (21 CFR 11.50/11.70),
    /// added by the signing layer; its shape is that layer's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<serde_json::Value>,
}

/// A hold and its release, if released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HoldState {
    pub hold: Hold,
    pub release: Option<HoldRelease>,
}

impl HoldState {
    pub fn active(&self) -> bool {
        self.release.is_none()
    }
}

/// Every hold record of a repository.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HoldRecords {
    /// Holds by id, with their releases.
    pub holds: Vec<HoldState>,
    /// Records that cannot be read, do not open or are misnamed, with
    /// why. An unreadable hold (not known to be released) holds every
    /// snapshot; an unreadable release releases nothing.
    pub unreadable: Vec<Unreadable>,
    /// The hold records among `unreadable` that are not known to be
    /// released: they fail closed.
    pub unknown_holds: Vec<String>,
}

impl HoldRecords {
    /// The active holds.
    pub fn active(&self) -> impl Iterator<Item = &Hold> {
        self.holds.iter().filter(|h| h.active()).map(|h| &h.hold)
    }

    /// A hold by id (case-insensitive), released or not.
    pub fn get(&self, id: &str) -> Option<&HoldState> {
        let id = normalize_id(id)?;
        self.holds.iter().find(|h| h.hold.id == id)
    }

    /// Active holds covering the snapshot `id` of `source` taken at `time`.
    pub fn covering(&self, id: &Id, source: &str, time: DateTime<Utc>) -> Vec<&Hold> {
        self.active()
            .filter(|h| h.selector.covers(id, source, time))
            .collect()
    }

    /// Why the snapshot is held: the case references of the active holds
    /// covering it, sorted and without repeats, and every unreadable hold
    /// record (what it covers is unknown, so it is taken to cover
    /// everything). Empty: not held.
    pub fn cases(&self, id: &Id, source: &str, time: DateTime<Utc>) -> Vec<String> {
        let mut out: Vec<String> = self
            .covering(id, source, time)
            .into_iter()
            .map(|h| h.case.clone())
            .collect();
        out.sort();
        out.dedup();
        out.extend(
            self.unknown_holds
                .iter()
                .map(|n| format!("unreadable hold record {}", ObjectKind::Hold.key(n))),
        );
        out
    }
}

/// A hold id as typed (`h-7F3A2C`) in its stored form (`H-7f3a2c`), or
/// `None` if it is not one.
pub fn normalize_id(s: &str) -> Option<String> {
    let rest = s.strip_prefix("H-").or_else(|| s.strip_prefix("h-"))?;
    (rest.len() == 6 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("H-{}", rest.to_ascii_lowercase()))
}

fn new_id() -> String {
    let b: [u8; 3] = rand::random();
    format!("H-{}", hex::encode(b))
}

fn check_version(v: u32) -> std::result::Result<(), String> {
    if v > HOLD_VERSION {
        return Err(format!(
            "record version {v} is newer than this holdfast supports ({HOLD_VERSION})"
        ));
    }
    Ok(())
}

/// What the caller decides about a new hold; the id, time and host are
/// filled in by [`Repository::put_hold`].
#[derive(Debug, Clone)]
pub struct NewHold {
    pub case: String,
    pub reason: String,
    pub placed_by: String,
    pub placed_at: DateTime<Utc>,
    pub selector: HoldSelector,
}

impl Repository {
    /// Store a new hold under a fresh id. The write is conditional: an id
    /// another placer took first is never overwritten, a new one is drawn.
    pub fn put_hold(&self, new: &NewHold) -> Result<Hold> {
        if let HoldSelector::Snapshots { snapshots } = &new.selector {
            if snapshots.is_empty() {
                return Err(RepoError::Invalid(
                    "a hold must name at least one snapshot".into(),
                ));
            }
        }
        for _ in 0..64 {
            let hold = Hold {
                version: HOLD_VERSION,
                id: new_id(),
                case: new.case.clone(),
                reason: new.reason.clone(),
                placed_by: new.placed_by.clone(),
                placed_at: new.placed_at,
                host: crate::hostname(),
                selector: new.selector.clone(),
            };
            if records::put(self, ObjectKind::Hold, &hold.id, &hold)? {
                return Ok(hold);
            }
        }
        Err(RepoError::Invalid(
            "could not find a free hold id in 64 attempts".into(),
        ))
    }

    /// Store the release of a hold. Returns false, storing nothing, if the
    /// hold was released already (by this or a concurrent release).
    pub fn put_hold_release(&self, r: &HoldRelease) -> Result<bool> {
        let id = normalize_id(&r.hold)
            .filter(|id| *id == r.hold)
            .ok_or_else(|| RepoError::Invalid(format!("{:?} is not a hold id", r.hold)))?;
        records::put(self, ObjectKind::Hold, &format!("{id}{RELEASE_SUFFIX}"), r)
    }

    /// Every hold and release record, checked: a record must be stored
    /// under the name its content says.
    pub fn holds(&self) -> Result<HoldRecords> {
        let (good, mut bad) = records::read_all::<serde_json::Value>(self, ObjectKind::Hold)?;
        let mut holds: Vec<Hold> = Vec::new();
        let mut releases: Vec<HoldRelease> = Vec::new();
        for (name, v) in good {
            match decode(&name, v) {
                Ok(Record::Hold(h)) => holds.push(*h),
                Ok(Record::Release(r)) => releases.push(*r),
                Err(why) => bad.push((name, why)),
            }
        }
        let released = |id: &str| releases.iter().any(|r| r.hold == id);
        let mut out = HoldRecords::default();
        for (name, _) in &bad {
            let is_release = name.ends_with(RELEASE_SUFFIX);
            if !is_release && !released(name) {
                out.unknown_holds.push(name.clone());
            }
        }
        for h in holds {
            let release = releases.iter().find(|r| r.hold == h.id).cloned();
            out.holds.push(HoldState { hold: h, release });
        }
        out.holds
            .sort_by(|a, b| (a.hold.placed_at, &a.hold.id).cmp(&(b.hold.placed_at, &b.hold.id)));
        bad.sort();
        out.unreadable = bad;
        Ok(out)
    }
}

enum Record {
    Hold(Box<Hold>),
    Release(Box<HoldRelease>),
}

/// Decode a record by its name: `H-xxxxxx` is a hold whose id is that
/// name, `H-xxxxxx.release` the release of that hold.
fn decode(name: &str, v: serde_json::Value) -> std::result::Result<Record, String> {
    if let Some(id) = name.strip_suffix(RELEASE_SUFFIX) {
        if normalize_id(id).as_deref() != Some(id) {
            return Err("not named like a release record (H-xxxxxx.release)".into());
        }
        let r: HoldRelease =
            serde_json::from_value(v).map_err(|e| format!("not a release record: {e}"))?;
        check_version(r.version)?;
        if r.hold != id {
            return Err(format!("it records the release of {}, not {id}", r.hold));
        }
        return Ok(Record::Release(Box::new(r)));
    }
    if normalize_id(name).as_deref() != Some(name) {
        return Err("not named like a hold record (H-xxxxxx)".into());
    }
    let h: Hold = serde_json::from_value(v).map_err(|e| format!("not a hold record: {e}"))?;
    check_version(h.version)?;
    if h.id != name {
        return Err(format!("it records hold {}, not {name}", h.id));
    }
    Ok(Record::Hold(Box::new(h)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    #[test]
    fn ids_are_normalized_and_anything_else_is_refused() {
        assert_eq!(normalize_id("h-7F3A2C").as_deref(), Some("H-7f3a2c"));
        assert_eq!(normalize_id("H-7f3a2c").as_deref(), Some("H-7f3a2c"));
        for bad in [
            "H-7f3a2",
            "H-7f3a2c0",
            "X-7f3a2c",
            "H-7g3a2c",
            "",
            "H-/a/b/c",
            "7f3a2c",
        ] {
            assert_eq!(normalize_id(bad), None, "{bad}");
        }
        for _ in 0..100 {
            let id = new_id();
            assert_eq!(normalize_id(&id).as_deref(), Some(id.as_str()));
        }
    }

    #[test]
    fn source_ranges_cover_inclusive_bounds_and_only_their_source() {
        let id = Id([1; 32]);
        let sel = HoldSelector::Source {
            source: "docs".into(),
            from: Some(t("2026-01-01T00:00:00Z")),
            to: Some(t("2026-02-01T00:00:00Z")),
        };
        assert!(sel.covers(&id, "docs", t("2026-01-01T00:00:00Z")));
        assert!(sel.covers(&id, "docs", t("2026-02-01T00:00:00Z")));
        assert!(!sel.covers(&id, "docs", t("2025-12-31T23:59:59Z")));
        assert!(!sel.covers(&id, "docs", t("2026-02-01T00:00:01Z")));
        assert!(!sel.covers(&id, "mail", t("2026-01-15T00:00:00Z")));
        let open = HoldSelector::Source {
            source: "docs".into(),
            from: None,
            to: None,
        };
        assert!(open.covers(&id, "docs", t("1990-01-01T00:00:00Z")));
        let ids = HoldSelector::Snapshots {
            snapshots: vec![id],
        };
        assert!(ids.covers(&id, "anything", t("2026-01-01T00:00:00Z")));
        assert!(!ids.covers(&Id([2; 32]), "anything", t("2026-01-01T00:00:00Z")));
    }

    #[test]
    fn records_must_sit_under_their_own_names() {
        let hold = Hold {
            version: 1,
            id: "H-000001".into(),
            case: "C".into(),
            reason: "r".into(),
            placed_by: "a@b".into(),
            placed_at: t("2026-01-01T00:00:00Z"),
            host: "h".into(),
            selector: HoldSelector::Snapshots {
                snapshots: vec![Id([1; 32])],
            },
        };
        let v = serde_json::to_value(&hold).expect("json");
        assert!(matches!(decode("H-000001", v.clone()), Ok(Record::Hold(_))));
        assert!(decode("H-000002", v.clone()).is_err());
        assert!(decode("H-000001.release", v.clone()).is_err());
        assert!(decode("junk", v).is_err());
        let rel = HoldRelease {
            version: 1,
            hold: "H-000001".into(),
            case: "C".into(),
            released_by: "a@b".into(),
            released_at: t("2026-01-02T00:00:00Z"),
            host: "h".into(),
            reason: "settled".into(),
            signature: None,
        };
        let v = serde_json::to_value(&rel).expect("json");
        assert!(matches!(
            decode("H-000001.release", v.clone()),
            Ok(Record::Release(_))
        ));
        assert!(decode("H-000002.release", v.clone()).is_err());
        let mut newer = serde_json::to_value(&hold).expect("json");
        newer["version"] = 99.into();
        assert!(decode("H-000001", newer).is_err());
    }
}
