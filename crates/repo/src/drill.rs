//! Drill records (`drills/<time>-<random>`): the evidence a restore drill
//! leaves in the repository it tested — which playbook, when, on which
//! host, which snapshots, the outcome and the whole report.
//!
//! Sealed and bound to their names like the verification records, so that
//! nobody without the key can forge or alter one (deleting one is possible
//! for anyone who can delete objects; the audit trail records each drill
//! too). Names start with the drill's start time, so a listing is in
//! time order. The report itself is the drill crate's; it is kept here as
//! JSON, so this crate knows nothing of playbooks.

use chrono::{DateTime, Utc};
use holdfast_storage::ObjectKind;
use serde::{Deserialize, Serialize};

use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::records::{self, Records};
use crate::repository::Repository;

/// Version of the drill record.
pub const DRILL_VERSION: u32 = 1;

/// One drill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillRecord {
    pub version: u32,
    /// The playbook's name.
    pub playbook: String,
    pub started: DateTime<Utc>,
    pub host: String,
    /// `passed`, `target-missed`, `check-failed`, `error`.
    pub outcome: String,
    /// The snapshots restored.
    pub snapshots: Vec<Id>,
    /// The full report, as the drill wrote it.
    pub report: serde_json::Value,
}

/// Whether `name` has the form of a drill record's name: 16 characters of
/// time, a dash and 8 hex digits (what `put_drill` makes). Names come from
/// users (`drill approve ID`) and listings.
pub fn is_drill_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 25
        && b[15] == b'Z'
        && b[16] == b'-'
        && b[8] == b'T'
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[17..]
            .iter()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

impl Repository {
    /// Store a drill record under a new name made of its start time and a
    /// random suffix; returns the name (the drill's id).
    pub fn put_drill(&self, r: &DrillRecord) -> Result<String> {
        if r.playbook.is_empty() {
            return Err(RepoError::Invalid(
                "a drill record must name its playbook".into(),
            ));
        }
        loop {
            let name = format!(
                "{}-{}",
                r.started.format("%Y%m%dT%H%M%SZ"),
                hex::encode(rand::random::<[u8; 4]>())
            );
            if records::put(self, ObjectKind::Drill, &name, r)? {
                return Ok(name);
            }
        }
    }

    /// Every drill record in time order, and those that cannot be read or
    /// do not open, with why.
    pub fn drills(&self) -> Result<Records<DrillRecord>> {
        records::read_all(self, ObjectKind::Drill)
    }

    /// The drill record `name`, `None` if there is none.
    pub fn drill(&self, name: &str) -> Result<Option<DrillRecord>> {
        if !is_drill_name(name) {
            return Err(RepoError::Invalid(format!(
                "{name:?} is not a drill id (drill ids look like 20261201T063000Z-ab12cd34; see `holdfast drill history`)"
            )));
        }
        records::get(self, ObjectKind::Drill, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drill_names() {
        assert!(is_drill_name("20261201T063000Z-ab12cd34"));
        for bad in [
            "",
            "20261201T063000Z-ab12cd3",
            "20261201T063000Z-AB12CD34",
            "20261201X063000Z-ab12cd34",
            "../../config/xxxxxxxxxxxxx",
            "20261201T063000Z-ab12cd3g",
        ] {
            assert!(!is_drill_name(bad), "{bad:?}");
        }
    }
}
