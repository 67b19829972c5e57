//! Choosing the snapshot (and, for PITR, the point in time) a drill
//! restores. Random picks use a seeded generator of our own (SplitMix64),
//! so a recorded seed picks the same snapshot in every version.

use chrono::{DateTime, Duration, Utc};

use crate::playbook::Pick;

/// SplitMix64: small, fast, and fixed forever (a library's generator may
/// change between versions and so change what a recorded seed means).
pub struct SeededRng(u64);

impl SeededRng {
    pub fn new(seed: u64) -> SeededRng {
        SeededRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0); the bias is below 2^-32 for any `n`
    /// a drill meets.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Which of `times` (the candidate snapshots' times, any order) `pick`
/// chooses at `now`, with the seed a random pick used; an error says why
/// none qualifies.
pub fn choose(
    times: &[DateTime<Utc>],
    pick: &Pick,
    now: DateTime<Utc>,
    drawn_seed: u64,
) -> Result<(usize, Option<u64>), String> {
    let newest = || {
        times
            .iter()
            .enumerate()
            .max_by_key(|(_, t)| **t)
            .map(|(i, _)| i)
    };
    let within = |secs: u64| {
        let from = now - Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 1000));
        let mut v: Vec<usize> = (0..times.len()).filter(|&i| times[i] >= from).collect();
        v.sort_by_key(|&i| times[i]);
        v
    };
    match pick {
        Pick::Latest => newest()
            .map(|i| (i, None))
            .ok_or_else(|| "there is no snapshot of this source".to_string()),
        Pick::LatestWithin(secs) => within(*secs)
            .last()
            .map(|&i| (i, None))
            .ok_or_else(|| no_snapshot_within(times, *secs, now)),
        Pick::RandomWithin { within: secs, seed } => {
            let candidates = within(*secs);
            if candidates.is_empty() {
                return Err(no_snapshot_within(times, *secs, now));
            }
            let seed = seed.unwrap_or(drawn_seed);
            let k = SeededRng::new(seed).below(candidates.len() as u64) as usize;
            Ok((candidates[k.min(candidates.len() - 1)], Some(seed)))
        }
    }
}

fn no_snapshot_within(times: &[DateTime<Utc>], secs: u64, now: DateTime<Utc>) -> String {
    let w = crate::duration::Human(secs);
    match times.iter().max() {
        None => "there is no snapshot of this source".to_string(),
        Some(t) => format!(
            "no snapshot within {w}: the newest is {} old ({})",
            crate::duration::measured((now - *t).num_milliseconds() as f64 / 1000.0),
            t.format("%Y-%m-%d %H:%M:%S UTC")
        ),
    }
}

/// A random instant in `from..=to`, from `seed`.
pub fn random_point(from: DateTime<Utc>, to: DateTime<Utc>, seed: u64) -> DateTime<Utc> {
    let span = (to - from).num_milliseconds().max(0) as u64;
    let off = SeededRng::new(seed).below(span + 1);
    from + Duration::milliseconds(off as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn day(d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, d, 2, 0, 0)
            .single()
            .unwrap_or_default()
    }

    #[test]
    fn latest_and_within() {
        let times = [day(3), day(20), day(10)];
        let now = day(21);
        assert_eq!(choose(&times, &Pick::Latest, now, 0), Ok((1, None)));
        assert_eq!(
            choose(&times, &Pick::LatestWithin(2 * 86_400), now, 0),
            Ok((1, None))
        );
        let err = choose(&times, &Pick::LatestWithin(3600), now, 0).unwrap_err();
        assert!(err.contains("no snapshot within 1h"), "{err}");
        assert!(choose(&[], &Pick::Latest, now, 0).is_err());
    }

    #[test]
    fn random_within_is_seeded_and_stays_in_the_window() {
        let times: Vec<_> = (1..=20).map(day).collect();
        let now = day(21);
        let pick = Pick::RandomWithin {
            within: 10 * 86_400,
            seed: None,
        };
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let (i, s) = choose(&times, &pick, now, seed).unwrap_or((usize::MAX, None));
            assert_eq!(s, Some(seed));
            assert!(times[i] >= day(11), "seed {seed} picked {}", times[i]);
            assert_eq!(choose(&times, &pick, now, seed).map(|r| r.0), Ok(i));
            seen.insert(i);
        }
        assert_eq!(seen.len(), 10, "every snapshot of the window is drawn");
        let fixed = Pick::RandomWithin {
            within: 10 * 86_400,
            seed: Some(7),
        };
        assert_eq!(
            choose(&times, &fixed, now, 99),
            choose(&times, &fixed, now, 5)
        );
    }

    #[test]
    fn random_point_in_range() {
        for seed in 0..100 {
            let p = random_point(day(1), day(2), seed);
            assert!(p >= day(1) && p <= day(2));
        }
    }
}
