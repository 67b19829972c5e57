//! Durations in playbooks: `90s`, `15m`, `26h`, `7d`, `2w` and sums of them
//! (`1h30m`). Unlike retention spans these are exact lengths of time (an
//! RTO is measured with a stopwatch), so `m` means minutes and there are no
//! months or years.

use std::fmt;

/// Longest accepted duration: ten years, far beyond any RTO or RPO.
const MAX_SECONDS: u64 = 10 * 366 * 24 * 3600;

/// Parse `15m`, `1h30m`, `26h`, `90s`, `7d`, `2w` into seconds.
pub fn parse(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("an empty duration; expected e.g. \"15m\", \"26h\", \"1h30m\", \"7d\"".into());
    }
    let mut total: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "{s:?}: expected a number before {rest:?} (e.g. \"15m\", \"1h30m\")"
            ));
        }
        let (num, tail) = rest.split_at(digits);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?}: {num} is too large"))?;
        let unit_len = tail.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let (unit, tail) = tail.split_at(unit_len);
        let per = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            "" => {
                return Err(format!(
                    "{s:?}: {num} has no unit; add s, m, h, d or w (e.g. \"{num}m\")"
                ))
            }
            other => {
                return Err(format!(
                    "{s:?}: unknown unit {other:?}; expected s, m (minutes), h, d or w"
                ))
            }
        };
        total = n
            .checked_mul(per)
            .and_then(|v| total.checked_add(v))
            .filter(|v| *v <= MAX_SECONDS)
            .ok_or_else(|| format!("{s:?} is too long a duration (at most ten years)"))?;
        rest = tail;
    }
    if total == 0 {
        return Err(format!("{s:?} is zero; a target must be longer than that"));
    }
    Ok(total)
}

/// Seconds as the shortest exact playbook form: `1h30m`, `26h`, `45s`.
pub struct Human(pub u64);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.0;
        if s == 0 {
            return f.write_str("0s");
        }
        // "26h" reads better than "1d2h": days only from two days on.
        let days_from = if s >= 2 * 86_400 { 86_400 } else { u64::MAX };
        for (unit, per) in [("d", days_from), ("h", 3600), ("m", 60), ("s", 1)] {
            if s >= per {
                write!(f, "{}{unit}", s / per)?;
                s %= per;
            }
        }
        Ok(())
    }
}

/// Seconds with a fraction, for measured values: `0.84s`, `12.3s`,
/// `4m05s`, `2h10m`.
pub fn measured(seconds: f64) -> String {
    // -0.0 (a sum of nothing) prints as 0.
    let seconds = seconds + 0.0;
    if !seconds.is_finite() || seconds < 0.0 {
        return "-".into();
    }
    if seconds < 10.0 {
        format!("{seconds:.2}s")
    } else if seconds < 60.0 {
        format!("{seconds:.1}s")
    } else if seconds < 3600.0 {
        let s = seconds.round() as u64;
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        let m = (seconds / 60.0).round() as u64;
        format!("{}h{:02}m", m / 60, m % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sums() {
        assert_eq!(parse("15m"), Ok(900));
        assert_eq!(parse("26h"), Ok(26 * 3600));
        assert_eq!(parse("1h30m"), Ok(5400));
        assert_eq!(parse("90s"), Ok(90));
        assert_eq!(parse("2w1d"), Ok(15 * 86_400));
        assert_eq!(parse(" 7d "), Ok(7 * 86_400));
    }

    #[test]
    fn refuses_bad_forms() {
        for bad in [
            "",
            "15",
            "m",
            "15x",
            "1mo",
            "0s",
            "-5m",
            "1.5h",
            "99999999999w",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn human_round_trips() {
        assert_eq!(Human(26 * 3600).to_string(), "26h");
        assert_eq!(Human(7 * 86_400).to_string(), "7d");
        assert_eq!(Human(5400).to_string(), "1h30m");
        for s in [1, 59, 60, 61, 900, 5400, 93_600, 86_400 * 9 + 7] {
            assert_eq!(parse(&Human(s).to_string()), Ok(s));
        }
    }
}
