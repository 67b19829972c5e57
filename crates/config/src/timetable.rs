//! One job's timetable in the daemon: when it is next due, with its
//! jitter, the missed-run policy at start, and no overlap with itself (a
//! run still going when the next time comes makes that time skipped and
//! counted, never queued: a slow backup must not pile up behind itself).
//! Pure: the caller passes "now" and says when runs start and finish.

use chrono::{DateTime, Duration, Utc};

use crate::file::Missed;
use crate::schedule::{missed, Cron};

#[derive(Debug, Clone)]
pub struct Timetable {
    cron: Cron,
    /// This host's fixed jitter for the job (`schedule::jitter_offset`).
    offset: Duration,
    /// The cron time of the next run (without jitter).
    slot: Option<DateTime<Utc>>,
    /// Set when the next run is a missed one, run at start.
    catch_up: Option<DateTime<Utc>>,
    running: bool,
    skipped: u64,
}

impl Timetable {
    /// The timetable at daemon start. `last_run` is the last scheduled
    /// time the daemon recorded for the job (its state file), if any.
    pub fn start(
        cron: Cron,
        offset: std::time::Duration,
        last_run: Option<DateTime<Utc>>,
        policy: Missed,
        now: DateTime<Utc>,
    ) -> Timetable {
        let offset = Duration::from_std(offset).unwrap_or_else(|_| Duration::zero());
        let catch_up = (policy == Missed::RunOnce && missed(&cron, last_run, now)).then_some(now);
        let slot = cron.next_after(now - offset);
        Timetable {
            cron,
            offset,
            slot,
            catch_up,
            running: false,
            skipped: 0,
        }
    }

    /// When the job is next due (`None`: never again).
    pub fn next(&self) -> Option<DateTime<Utc>> {
        self.catch_up.or(self.slot.map(|s| s + self.offset))
    }

    /// Whether a run should start now: due and not already running.
    pub fn due(&self, now: DateTime<Utc>) -> bool {
        !self.running && self.next().is_some_and(|n| n <= now)
    }

    pub fn running(&self) -> bool {
        self.running
    }

    /// Scheduled times that passed while the job was still running.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// A run starts now; returns the scheduled time it stands for (to be
    /// recorded as the last run).
    pub fn started(&mut self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.running = true;
        if let Some(c) = self.catch_up.take() {
            return c;
        }
        let slot = self.slot.unwrap_or(now);
        // Times that went by unseen (a suspended machine) collapse into
        // this one run.
        self.slot = self.cron.next_after(slot.max(now - self.offset));
        slot
    }

    /// The run ended (success or failure alike). Times that came while it
    /// ran are skipped, not made up for.
    pub fn finished(&mut self, now: DateTime<Utc>) {
        self.running = false;
        while let Some(s) = self.slot {
            if s + self.offset > now {
                break;
            }
            self.skipped += 1;
            self.slot = self.cron.next_after(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::time::Duration as StdDuration;

    fn at(s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).single().unwrap() + Duration::seconds(s.into())
    }

    fn every(secs: u32) -> Cron {
        Cron::parse(&format!("*/{secs} * * * * *"), chrono_tz::UTC).unwrap()
    }

    #[test]
    fn runs_on_time_and_never_overlaps_itself() {
        let mut t = Timetable::start(every(10), StdDuration::ZERO, None, Missed::Skip, at(1));
        assert_eq!(t.next(), Some(at(10)));
        assert!(!t.due(at(9)));
        assert!(t.due(at(10)));
        assert_eq!(t.started(at(10)), at(10));
        // Still running at 20 and 30: not due, whatever the clock says.
        assert!(!t.due(at(20)));
        assert!(!t.due(at(31)));
        t.finished(at(35));
        assert_eq!(t.skipped(), 2);
        assert_eq!(t.next(), Some(at(40)));
        assert!(t.due(at(40)));
        assert_eq!(t.started(at(40)), at(40));
        t.finished(at(41));
        assert_eq!((t.skipped(), t.next()), (2, Some(at(50))));
    }

    #[test]
    fn jitter_shifts_every_run_by_the_same_offset() {
        let mut t = Timetable::start(
            every(10),
            StdDuration::from_secs(3),
            None,
            Missed::Skip,
            at(5),
        );
        assert_eq!(t.next(), Some(at(13)));
        assert!(!t.due(at(12)));
        assert_eq!(t.started(at(13)), at(10));
        t.finished(at(14));
        assert_eq!(t.next(), Some(at(23)));
        // Starting between a slot and its jittered time keeps that slot.
        let t = Timetable::start(
            every(10),
            StdDuration::from_secs(3),
            None,
            Missed::Skip,
            at(11),
        );
        assert_eq!(t.next(), Some(at(13)));
        let t = Timetable::start(
            every(10),
            StdDuration::from_secs(3),
            None,
            Missed::Skip,
            at(1),
        );
        assert_eq!(t.next(), Some(at(3)), "12:00:00 + 3 s is still ahead");
    }

    #[test]
    fn a_missed_run_is_made_up_once_or_skipped_by_policy() {
        // Last ran at 10; the daemon was down through 20, 30 and 40.
        let mut t = Timetable::start(
            every(10),
            StdDuration::ZERO,
            Some(at(10)),
            Missed::RunOnce,
            at(45),
        );
        assert!(t.due(at(45)));
        assert_eq!(t.started(at(45)), at(45));
        t.finished(at(46));
        assert_eq!(t.next(), Some(at(50)), "made up once, not three times");
        let t = Timetable::start(
            every(10),
            StdDuration::ZERO,
            Some(at(10)),
            Missed::Skip,
            at(45),
        );
        assert!(!t.due(at(45)));
        assert_eq!(t.next(), Some(at(50)));
        // Nothing missed: no run at start whatever the policy.
        let t = Timetable::start(
            every(10),
            StdDuration::ZERO,
            Some(at(40)),
            Missed::RunOnce,
            at(45),
        );
        assert!(!t.due(at(45)));
    }

    #[test]
    fn a_late_wakeup_runs_once_for_the_times_it_slept_through() {
        let mut t = Timetable::start(every(10), StdDuration::ZERO, None, Missed::Skip, at(1));
        // The process was stopped (SIGSTOP, a suspended VM) until 57.
        assert!(t.due(at(57)));
        assert_eq!(t.started(at(57)), at(10));
        assert_eq!(t.next(), Some(at(60)));
        t.finished(at(58));
        assert_eq!(t.next(), Some(at(60)));
    }
}
