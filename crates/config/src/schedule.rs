//! Job schedules: cron with seconds (`sec min hour day month weekday`) in a
//! named time zone, and the pure rules around it (jitter, retry backoff,
//! missed runs).
//!
//! Cron fields are wall-clock times. The expression is evaluated on the
//! local calendar and each local time is then placed on the real time line:
//! a local time that a spring-forward skips runs at the instant of the
//! change, and one that a fall-back repeats runs at its first occurrence
//! only. So a daily job runs exactly once on every local day, whatever the
//! daylight-saving changes.

use std::str::FromStr;

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// A cron schedule in a time zone.
#[derive(Debug, Clone)]
pub struct Cron {
    expr: String,
    schedule: cron::Schedule,
    tz: Tz,
}

impl PartialEq for Cron {
    fn eq(&self, o: &Cron) -> bool {
        self.expr == o.expr && self.tz == o.tz
    }
}

impl Cron {
    /// Parse a six- or seven-field cron expression (seconds first).
    pub fn parse(expr: &str, tz: Tz) -> Result<Cron, String> {
        let fields = expr.split_whitespace().count();
        if !(6..=7).contains(&fields) {
            return Err(format!(
                "schedule {expr:?} has {fields} fields: expected six, seconds first (\"sec min hour day month weekday\", e.g. \"0 30 1 * * *\" for 01:30:00 daily)"
            ));
        }
        let schedule = cron::Schedule::from_str(expr)
            .map_err(|e| format!("schedule {expr:?} is not a cron expression: {e}"))?;
        let c = Cron {
            expr: expr.to_string(),
            schedule,
            tz,
        };
        let probe = Utc.with_ymd_and_hms(2001, 1, 1, 0, 0, 0).single();
        if probe.and_then(|p| c.next_after(p)).is_none() {
            return Err(format!("schedule {expr:?} never fires"));
        }
        Ok(c)
    }

    pub fn expr(&self) -> &str {
        &self.expr
    }

    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The first run strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Local wall-clock times are walked as if they were UTC (a
        // calendar without gaps); an hour before `t`'s local time covers a
        // fall-back's repeated hour, whose candidates may lie after `t`.
        let local = t.with_timezone(&self.tz).naive_local();
        let start = Utc.from_utc_datetime(&(local - Duration::hours(3)));
        for wall in self.schedule.after(&start).take(100_000) {
            let at = self.place(wall.naive_utc())?;
            if at > t {
                return Some(at);
            }
            // Past a year of candidates none can come later.
            if wall.naive_utc() > local + Duration::days(3660) {
                return None;
            }
        }
        None
    }

    /// The runs in `(from, to]`, at most `limit` of them.
    pub fn runs_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut t = from;
        while out.len() < limit {
            match self.next_after(t) {
                Some(n) if n <= to => {
                    out.push(n);
                    t = n;
                }
                _ => break,
            }
        }
        out
    }

    /// A local wall-clock time on the real time line (see the module doc).
    fn place(&self, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
        match self.tz.from_local_datetime(&wall) {
            LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
            LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
            LocalResult::None => {
                // In a gap: find the change, the first instant whose local
                // time is past `wall`. Gaps are shorter than a day.
                let mut lo = Utc.from_utc_datetime(&(wall - Duration::days(1)));
                let mut hi = Utc.from_utc_datetime(&(wall + Duration::days(1)));
                while hi - lo > Duration::seconds(1) {
                    let mid = lo + (hi - lo) / 2;
                    if mid.with_timezone(&self.tz).naive_local() > wall {
                        hi = mid;
                    } else {
                        lo = mid;
                    }
                }
                Some(hi)
            }
        }
    }
}

/// A fixed offset in `[0, jitter)` for one job on one host: stable across
/// restarts (so a job keeps its slot) and different between hosts sharing
/// a repository (`seed` names both), so a fleet does not start at once.
pub fn jitter_offset(seed: &str, jitter: std::time::Duration) -> std::time::Duration {
    let secs = jitter.as_secs();
    if secs == 0 {
        return std::time::Duration::ZERO;
    }
    // FNV-1a: tiny, stable across builds and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    std::time::Duration::from_secs(h % secs)
}

/// The wait before retry `attempt` (1 for the first retry): `base`
/// doubled each time, never more than `max`.
pub fn backoff(
    base: std::time::Duration,
    attempt: u32,
    max: std::time::Duration,
) -> std::time::Duration {
    let factor = 1u32
        .checked_shl(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(max).min(max)
}

/// Whether a run was due while the daemon was down: some scheduled time
/// lies after the last run the daemon recorded and not after `now`.
pub fn missed(cron: &Cron, last_run: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    match last_run {
        Some(last) => cron.next_after(last).is_some_and(|n| n <= now),
        // Never ran: nothing was missed that the daemon knew of.
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, NaiveDate, Timelike};
    use std::collections::BTreeMap;
    use std::time::Duration as StdDuration;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).single().unwrap()
    }

    /// Every daily schedule, at every wall-clock time around the changes,
    /// in both zones, runs exactly once on each local day of a whole year.
    #[test]
    fn a_daily_job_runs_once_every_local_day_through_dst_changes() {
        for tz in [chrono_tz::Europe::Berlin, chrono_tz::America::New_York] {
            for (h, m) in [
                (0, 0),
                (1, 0),
                (1, 30),
                (2, 0),
                (2, 30),
                (2, 59),
                (3, 0),
                (3, 30),
                (23, 59),
            ] {
                let c = Cron::parse(&format!("0 {m} {h} * * *"), tz).unwrap();
                let runs = c.runs_between(utc(2025, 12, 31, 12, 0), utc(2027, 1, 1, 12, 0), 1000);
                let mut per_day: BTreeMap<NaiveDate, u32> = BTreeMap::new();
                for r in &runs {
                    let d = r.with_timezone(&tz).date_naive();
                    if d.year() == 2026 {
                        *per_day.entry(d).or_default() += 1;
                    }
                }
                assert_eq!(per_day.len(), 365, "{tz} {h}:{m:02}: a day was skipped");
                assert!(
                    per_day.values().all(|n| *n == 1),
                    "{tz} {h}:{m:02}: a day ran twice: {:?}",
                    per_day.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
                );
            }
        }
    }

    #[test]
    fn skipped_local_times_run_at_the_change_and_repeated_ones_once() {
        let berlin = chrono_tz::Europe::Berlin;
        let c = Cron::parse("0 30 2 * * *", berlin).unwrap();
        // 2026-03-29 02:00 CET -> 03:00 CEST (01:00 UTC): 02:30 does not exist.
        let spring = c.next_after(utc(2026, 3, 28, 12, 0)).unwrap();
        assert_eq!(spring, utc(2026, 3, 29, 1, 0));
        // The next day it is 02:30 CEST again.
        assert_eq!(c.next_after(spring).unwrap(), utc(2026, 3, 30, 0, 30));
        // 2026-10-25 03:00 CEST -> 02:00 CET: 02:30 happens twice; the first.
        let fall = c.next_after(utc(2026, 10, 24, 12, 0)).unwrap();
        assert_eq!(fall, utc(2026, 10, 25, 0, 30));
        assert_eq!(c.next_after(fall).unwrap(), utc(2026, 10, 26, 1, 30));
        // New York: 2026-11-01 02:00 EDT -> 01:00 EST; 01:30 runs once.
        let ny = Cron::parse("0 30 1 * * *", chrono_tz::America::New_York).unwrap();
        let first = ny.next_after(utc(2026, 10, 31, 12, 0)).unwrap();
        assert_eq!(first, utc(2026, 11, 1, 5, 30));
        assert_eq!(ny.next_after(first).unwrap(), utc(2026, 11, 2, 6, 30));
        // 2026-03-08 02:00 EST -> 03:00 EDT (07:00 UTC): 02:30 at the change.
        let ny2 = Cron::parse("0 30 2 * * *", chrono_tz::America::New_York).unwrap();
        assert_eq!(
            ny2.next_after(utc(2026, 3, 7, 12, 0)).unwrap(),
            utc(2026, 3, 8, 7, 0)
        );
    }

    #[test]
    fn an_hourly_job_keeps_real_hours_across_changes() {
        // Hourly runs are wall-clock hours: the repeated hour runs once
        // (its first occurrence), the skipped one not at all.
        let c = Cron::parse("0 0 * * * *", chrono_tz::Europe::Berlin).unwrap();
        let runs = c.runs_between(utc(2026, 10, 24, 22, 0), utc(2026, 10, 25, 4, 0), 100);
        let mut prev: Option<DateTime<Utc>> = None;
        for r in &runs {
            if let Some(p) = prev {
                assert!(*r > p);
            }
            prev = Some(*r);
        }
        let locals: Vec<u32> = runs
            .iter()
            .map(|r| r.with_timezone(&chrono_tz::Europe::Berlin).hour())
            .collect();
        assert_eq!(locals, vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn seconds_granularity_and_bad_expressions() {
        let c = Cron::parse("*/2 * * * * *", chrono_tz::UTC).unwrap();
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 1).single().unwrap();
        assert_eq!(c.next_after(t).unwrap(), t + Duration::seconds(1));
        for bad in [
            "0 30 1 * *",
            "* * * * * * * *",
            "61 * * * * *",
            "0 0 0 30 2 *",
            "banana",
        ] {
            assert!(Cron::parse(bad, chrono_tz::UTC).is_err(), "{bad}");
        }
    }

    #[test]
    fn jitter_backoff_and_missed_runs() {
        let j = StdDuration::from_secs(600);
        assert_eq!(
            jitter_offset("host-a/docs", j),
            jitter_offset("host-a/docs", j)
        );
        assert!(jitter_offset("host-a/docs", j) < j);
        let offsets: std::collections::BTreeSet<_> = (0..20)
            .map(|i| jitter_offset(&format!("host-{i}/docs"), j))
            .collect();
        assert!(offsets.len() > 10, "jitter does not spread hosts");
        assert_eq!(jitter_offset("x", StdDuration::ZERO), StdDuration::ZERO);
        let s = StdDuration::from_secs;
        assert_eq!(backoff(s(10), 1, s(300)), s(10));
        assert_eq!(backoff(s(10), 2, s(300)), s(20));
        assert_eq!(backoff(s(10), 3, s(300)), s(40));
        assert_eq!(backoff(s(10), 40, s(300)), s(300));
        let c = Cron::parse("0 30 1 * * *", chrono_tz::Europe::Berlin).unwrap();
        let last = utc(2026, 5, 1, 23, 30); // 01:30 CEST on 2 May
        assert!(!missed(&c, Some(last), utc(2026, 5, 2, 23, 0)));
        assert!(missed(&c, Some(last), utc(2026, 5, 2, 23, 31)));
        assert!(!missed(&c, None, utc(2026, 5, 2, 23, 31)));
    }
}
