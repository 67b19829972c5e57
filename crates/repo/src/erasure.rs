//! GDPR erasure records (`erasures/`): the erasure register. Backups cannot
//! be edited, so when a person asks to be forgotten (GDPR Art. 17) the
//! erasure is recorded here, and every restore of a snapshot taken before
//! it applies it again before reporting success (see
//! `holdfast_ops::erasure`). A record names what to erase: an SQL
//! statement for one database, or a path pattern of backed-up files.
//!
//! Records are sealed, bound to their names and written once with the
//! store's conditional put: an erasure is never edited or deleted (it must
//! outlive every snapshot that still holds the subject). Names start with
//! the record's time, so a listing is in time order:
//! `E-20261202T010203Z-7f3a2c`.
//!
//! Readers fail closed: a record that cannot be read or does not open is
//! reported, and a restore refuses to report success while one exists
//! (what it would have erased is unknown).

use chrono::{DateTime, Utc};
use holdfast_storage::ObjectKind;
use serde::{Deserialize, Serialize};

use crate::error::{RepoError, Result};
use crate::records;
use crate::repository::{Repository, Unreadable};

/// Version of the erasure record.
pub const ERASURE_VERSION: u32 = 1;

/// What an erasure erases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ErasureTarget {
    /// Run `sql` in database `database` (the database's name in the
    /// backed-up cluster).
    Sql { database: String, sql: String },
    /// Remove backed-up files whose source path matches `pattern` (an
    /// absolute glob: `*`, `?`, `[a-z]`, `**` for any number of
    /// directories).
    Path { pattern: String },
}

impl ErasureTarget {
    /// Readable form: `SQL in ehr: DELETE …` or `path /srv/…/**`.
    pub fn describe(&self) -> String {
        match self {
            ErasureTarget::Sql { database, sql } => format!("SQL in {database}: {sql}"),
            ErasureTarget::Path { pattern } => format!("path {pattern}"),
        }
    }
}

/// One erasure as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Erasure {
    pub version: u32,
    /// `E-<time>-<6 hex>`; also the record's object name.
    pub id: String,
    /// The request's reference (`DSAR-2026-041`).
    pub reference: String,
    pub target: ErasureTarget,
    pub reason: String,
    /// Who recorded it (the audit trail's actor).
    pub recorded_by: String,
    pub recorded_at: DateTime<Utc>,
    /// The host it was recorded from.
    pub host: String,
}

/// What the caller decides; the id and host are filled in by
/// [`Repository::put_erasure`].
#[derive(Debug, Clone)]
pub struct NewErasure {
    pub reference: String,
    pub target: ErasureTarget,
    pub reason: String,
    pub recorded_by: String,
    pub recorded_at: DateTime<Utc>,
}

/// Every erasure record of a repository.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ErasureRecords {
    /// In the order they were recorded.
    pub erasures: Vec<Erasure>,
    /// Records that cannot be read, do not open or are misnamed, with why.
    pub unreadable: Vec<Unreadable>,
}

impl ErasureRecords {
    /// The erasures recorded strictly after `time` (a snapshot taken at
    /// `time` may still hold what they erase), in recorded order.
    pub fn after(&self, time: DateTime<Utc>) -> Vec<&Erasure> {
        self.erasures
            .iter()
            .filter(|e| e.recorded_at > time)
            .collect()
    }
}

/// Whether `name` has the form of an erasure record's name
/// (`E-20261202T010203Z-7f3a2c`).
pub fn is_erasure_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 25
        && b.starts_with(b"E-")
        && b[2..10].iter().all(u8::is_ascii_digit)
        && b[10] == b'T'
        && b[11..17].iter().all(u8::is_ascii_digit)
        && b[17] == b'Z'
        && b[18] == b'-'
        && b[19..]
            .iter()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

fn check_version(v: u32) -> std::result::Result<(), String> {
    if v > ERASURE_VERSION {
        return Err(format!(
            "record version {v} is newer than this holdfast supports ({ERASURE_VERSION})"
        ));
    }
    Ok(())
}

impl Repository {
    /// Store a new erasure under a fresh name made of its time and a
    /// random suffix. The write is conditional: a name taken by a
    /// concurrent writer is never overwritten, another is drawn.
    pub fn put_erasure(&self, new: &NewErasure) -> Result<Erasure> {
        if new.reference.trim().is_empty() {
            return Err(RepoError::Invalid(
                "an erasure must name its reference".into(),
            ));
        }
        for _ in 0..64 {
            let id = format!(
                "E-{}-{}",
                new.recorded_at.format("%Y%m%dT%H%M%SZ"),
                hex::encode(rand::random::<[u8; 3]>())
            );
            let e = Erasure {
                version: ERASURE_VERSION,
                id,
                reference: new.reference.clone(),
                target: new.target.clone(),
                reason: new.reason.clone(),
                recorded_by: new.recorded_by.clone(),
                recorded_at: new.recorded_at,
                host: crate::hostname(),
            };
            if records::put(self, ObjectKind::Erasure, &e.id, &e)? {
                return Ok(e);
            }
        }
        Err(RepoError::Invalid(
            "could not find a free erasure id in 64 attempts".into(),
        ))
    }

    /// Every erasure record, checked: a record must be stored under the
    /// name its content says, and be of a version this reader knows.
    pub fn erasures(&self) -> Result<ErasureRecords> {
        let (good, mut bad) = records::read_all::<serde_json::Value>(self, ObjectKind::Erasure)?;
        let mut out = ErasureRecords::default();
        for (name, v) in good {
            match decode(&name, v) {
                Ok(e) => out.erasures.push(e),
                Err(why) => bad.push((name, why)),
            }
        }
        out.erasures
            .sort_by(|a, b| (a.recorded_at, &a.id).cmp(&(b.recorded_at, &b.id)));
        bad.sort();
        out.unreadable = bad;
        Ok(out)
    }
}

fn decode(name: &str, v: serde_json::Value) -> std::result::Result<Erasure, String> {
    if !is_erasure_name(name) {
        return Err("not named like an erasure record (E-YYYYMMDDTHHMMSSZ-xxxxxx)".into());
    }
    let e: Erasure =
        serde_json::from_value(v).map_err(|e| format!("not an erasure record: {e}"))?;
    check_version(e.version)?;
    if e.id != name {
        return Err(format!("it records erasure {}, not {name}", e.id));
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    fn sample(id: &str, at: &str) -> Erasure {
        Erasure {
            version: 1,
            id: id.into(),
            reference: "DSAR-1".into(),
            target: ErasureTarget::Path {
                pattern: "/srv/p/1/**".into(),
            },
            reason: "Art. 17 request".into(),
            recorded_by: "a@b".into(),
            recorded_at: t(at),
            host: "h".into(),
        }
    }

    #[test]
    fn names() {
        assert!(is_erasure_name("E-20261202T010203Z-7f3a2c"));
        for bad in [
            "",
            "E-20261202T010203Z-7f3a2",
            "E-20261202T010203Z-7F3A2C",
            "X-20261202T010203Z-7f3a2c",
            "E-2026120xT010203Z-7f3a2c",
            "E-20261202T010203Z-../../x",
        ] {
            assert!(!is_erasure_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn records_must_sit_under_their_own_names_and_known_versions() {
        let e = sample("E-20261202T010203Z-000001", "2026-12-02T01:02:03Z");
        let v = serde_json::to_value(&e).expect("json");
        assert_eq!(decode("E-20261202T010203Z-000001", v.clone()), Ok(e));
        assert!(decode("E-20261202T010203Z-000002", v.clone()).is_err());
        assert!(decode("junk", v.clone()).is_err());
        let mut newer = v;
        newer["version"] = 99.into();
        assert!(decode("E-20261202T010203Z-000001", newer).is_err());
    }

    #[test]
    fn after_is_strict() {
        let recs = ErasureRecords {
            erasures: vec![
                sample("E-20260101T000000Z-000001", "2026-01-01T00:00:00Z"),
                sample("E-20260201T000000Z-000002", "2026-02-01T00:00:00Z"),
            ],
            unreadable: Vec::new(),
        };
        let ids = |at: &str| {
            recs.after(t(at))
                .iter()
                .map(|e| e.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids("2025-12-31T00:00:00Z").len(), 2);
        assert_eq!(ids("2026-01-01T00:00:00Z"), ["E-20260201T000000Z-000002"]);
        assert!(ids("2026-02-01T00:00:00Z").is_empty());
    }
}
