//! Object Lock retention: computed for each write, and extended on packs a
//! new snapshot reuses.
//!
//! A repository initialised with `--lock-mode M --lock-days D` gives every
//! object it writes a retain-until of *the time of that write* plus D days,
//! by the repository's [`Clock`] (so a daemon that stays open for weeks
//! never writes an object whose retention is already shorter than
//! configured). A backup that deduplicates against an existing pack makes
//! its new snapshot depend on that pack; the pack's retention is extended
//! once per backup to cover the new snapshot (S3 never shortens one), with
//! a margin so that the next backups need not extend it again for a while.

use std::fmt::Debug;

use chrono::{DateTime, Utc};
use holdfast_storage::{LockMode, PutOptions, Retention};

use crate::config::RepoConfig;

/// Where "now" comes from; injectable so tests can move time without
/// sleeping.
pub trait Clock: Send + Sync + Debug {
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Object Lock settings of a repository, as a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub mode: LockMode,
    pub days: u32,
}

impl RetentionPolicy {
    /// The policy of a repository config, if it has Object Lock.
    pub fn of(cfg: &RepoConfig) -> Option<RetentionPolicy> {
        cfg.lock.as_ref().map(|l| RetentionPolicy {
            mode: if l.mode.eq_ignore_ascii_case("compliance") {
                LockMode::Compliance
            } else {
                LockMode::Governance
            },
            days: l.days,
        })
    }

    /// Retention of an object written at `now`.
    pub fn at(&self, now: DateTime<Utc>) -> Retention {
        Retention {
            mode: self.mode,
            until: now + chrono::Duration::days(i64::from(self.days)),
        }
    }

    /// How far past the configured period a reused pack's retention is
    /// extended: a tenth of the period, at least a day, so that daily
    /// backups reusing the same packs extend each one about every
    /// `days / 10` days instead of every day.
    pub fn margin(&self) -> chrono::Duration {
        chrono::Duration::days(i64::from((self.days / 10).max(1)))
    }

    /// Whether a pack retained until `known` must be extended for a
    /// snapshot written at `now`, and to what.
    pub fn extension(&self, known: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<Retention> {
        let needed = self.at(now);
        // An hour of slack: the snapshot is written moments after `now`.
        let enough = needed.until + chrono::Duration::hours(1);
        match known {
            Some(k) if k >= enough => None,
            _ => Some(Retention {
                mode: self.mode,
                until: needed.until + self.margin(),
            }),
        }
    }
}

/// Options for an object written at `now` under `policy`.
pub fn put_options(policy: Option<&RetentionPolicy>, now: DateTime<Utc>) -> PutOptions {
    PutOptions {
        retention: policy.map(|p| p.at(now)),
        ..PutOptions::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_moves_with_the_clock_and_extensions_are_batched() {
        let p = RetentionPolicy {
            mode: LockMode::Compliance,
            days: 30,
        };
        let t0 = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let day = chrono::Duration::days(1);
        assert_eq!(p.at(t0).until, t0 + day * 30);
        assert_eq!(p.at(t0 + day * 7).until, t0 + day * 37);
        // Unknown retention: extend, past the period by the margin.
        let e = p.extension(None, t0).map(|r| r.until);
        assert_eq!(e, Some(t0 + day * 33));
        // Extended today: tomorrow's backup needs nothing...
        assert_eq!(p.extension(e, t0 + day), None);
        // ... until the margin is used up.
        assert!(p.extension(e, t0 + day * 3).is_some());
        // A pack written a day ago falls a day short of a snapshot
        // written now: extended.
        assert!(p.extension(Some(p.at(t0 - day).until), t0).is_some());
    }
}
