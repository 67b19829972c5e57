//! Durations in the configuration: `30s`, `5m`, `2h`, `1d`, `1w` and sums
//! of them (`1h30m`). Unlike retention spans these are fixed lengths (a
//! timeout or an RPO is measured in elapsed time, not calendar days).

use std::fmt;
use std::time::Duration;

/// A whole number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Seconds(pub u64);

impl Seconds {
    /// Parse `30s`, `5m`, `1h30m`, `26h`, `7d`, `2w`.
    pub fn parse(s: &str) -> Result<Seconds, String> {
        let t = s.trim();
        if t.is_empty() {
            return Err("an empty duration; expected e.g. \"30s\", \"5m\", \"26h\", \"7d\"".into());
        }
        let mut total: u64 = 0;
        let mut rest = t;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(format!(
                    "{s:?}: expected a number before {rest:?} (e.g. \"30s\", \"1h30m\")"
                ));
            }
            let (num, tail) = rest.split_at(digits);
            let n: u64 = num
                .parse()
                .map_err(|_| format!("{s:?}: {num} is too large"))?;
            let unit_len = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
            let (unit, tail) = tail.split_at(unit_len);
            let per = match unit {
                "s" => 1,
                "m" => 60,
                "h" => 3600,
                "d" => 86_400,
                "w" => 7 * 86_400,
                "" => {
                    return Err(format!(
                        "{s:?}: {num} has no unit; expected s, m, h, d or w (e.g. \"{num}s\")"
                    ))
                }
                u => {
                    return Err(format!(
                        "{s:?}: unknown unit {u:?}; expected s, m, h, d or w"
                    ))
                }
            };
            total = n
                .checked_mul(per)
                .and_then(|v| total.checked_add(v))
                .filter(|v| *v <= 100 * 366 * 86_400)
                .ok_or_else(|| format!("{s:?} is too long a duration"))?;
            rest = tail;
        }
        Ok(Seconds(total))
    }

    pub fn duration(self) -> Duration {
        Duration::from_secs(self.0)
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if s == 0 {
            return f.write_str("0s");
        }
        for (unit, per) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
            if s.is_multiple_of(per) {
                return write!(f, "{}{unit}", s / per);
            }
        }
        write!(f, "{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sums() {
        assert_eq!(Seconds::parse("30s"), Ok(Seconds(30)));
        assert_eq!(Seconds::parse("1h30m"), Ok(Seconds(5400)));
        assert_eq!(Seconds::parse("26h"), Ok(Seconds(26 * 3600)));
        assert_eq!(Seconds::parse("2w"), Ok(Seconds(14 * 86_400)));
        for bad in [
            "",
            "h",
            "5",
            "5x",
            "1h 30m",
            "99999999999999999999s",
            "9999999w",
        ] {
            assert!(Seconds::parse(bad).is_err(), "{bad}");
        }
    }
}
