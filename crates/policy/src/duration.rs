//! Durations in policy files: `3d`, `36h`, `2w`, `18mo`, `6y`, and sums of
//! them (`1y6mo`). Years and months are calendar units, counted in the
//! policy's time zone: "6y" before 2031-03-01 is 2025-03-01, whatever the
//! leap days between. `m` alone is refused (minutes or months?).

use std::fmt;

use chrono::{DateTime, Duration, Months, TimeZone};

/// A calendar-aware length of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub months: u32,
    /// Weeks, days and hours, as hours.
    pub hours: u64,
}

/// Why a duration does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanError(pub String);

impl fmt::Display for SpanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Span {
    /// Parse `3d`, `1y6mo`, `36h`, `2w`.
    pub fn parse(s: &str) -> Result<Span, SpanError> {
        let t = s.trim();
        if t.is_empty() {
            return Err(SpanError(
                "an empty duration; expected e.g. \"3d\", \"6y\", \"36h\", \"2w\", \"18mo\"".into(),
            ));
        }
        let mut span = Span::default();
        let mut rest = t;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(SpanError(format!(
                    "{s:?}: expected a number before {rest:?} (e.g. \"3d\", \"1y6mo\")"
                )));
            }
            let (num, tail) = rest.split_at(digits);
            let n: u64 = num
                .parse()
                .map_err(|_| SpanError(format!("{s:?}: {num} is too large")))?;
            let unit_len = tail.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
            let (unit, tail) = tail.split_at(unit_len);
            let too_large = || SpanError(format!("{s:?} is too long a duration"));
            let add_hours = |span: &mut Span, per: u64| -> Result<(), SpanError> {
                span.hours = n
                    .checked_mul(per)
                    .and_then(|h| span.hours.checked_add(h))
                    .filter(|h| *h <= 24 * 366 * 1000)
                    .ok_or_else(too_large)?;
                Ok(())
            };
            match unit {
                "h" => add_hours(&mut span, 1)?,
                "d" => add_hours(&mut span, 24)?,
                "w" => add_hours(&mut span, 24 * 7)?,
                "mo" => {
                    span.months = u32::try_from(n)
                        .ok()
                        .and_then(|m| span.months.checked_add(m))
                        .filter(|m| *m <= 12 * 1000)
                        .ok_or_else(too_large)?
                }
                "y" => {
                    span.months = u32::try_from(n)
                        .ok()
                        .and_then(|y| y.checked_mul(12))
                        .and_then(|m| span.months.checked_add(m))
                        .filter(|m| *m <= 12 * 1000)
                        .ok_or_else(too_large)?
                }
                "m" => {
                    return Err(SpanError(format!(
                        "{s:?}: \"m\" is ambiguous; write \"mo\" for months"
                    )))
                }
                "" => {
                    return Err(SpanError(format!(
                        "{s:?}: {n} has no unit; use h, d, w, mo or y (e.g. \"{n}d\")"
                    )))
                }
                other => {
                    return Err(SpanError(format!(
                        "{s:?}: unknown unit {other:?}; use h, d, w, mo or y"
                    )))
                }
            }
            rest = tail;
        }
        Ok(span)
    }

    /// `t` minus this span, months counted on `t`'s calendar (the 31st
    /// minus a month is the last day of the shorter month).
    pub fn before<Tz: TimeZone>(&self, t: &DateTime<Tz>) -> DateTime<Tz> {
        let stepped = t
            .clone()
            .checked_sub_months(Months::new(self.months))
            .unwrap_or_else(|| t.clone());
        stepped - Duration::hours(self.hours.min(i64::MAX as u64) as i64)
    }

    /// `t` plus this span.
    pub fn after<Tz: TimeZone>(&self, t: &DateTime<Tz>) -> DateTime<Tz> {
        let stepped = t
            .clone()
            .checked_add_months(Months::new(self.months))
            .unwrap_or_else(|| t.clone());
        stepped + Duration::hours(self.hours.min(i64::MAX as u64) as i64)
    }

    /// Whether this span is longer than `other` when both are measured
    /// back from the same instant.
    pub fn longer_than<Tz: TimeZone>(&self, other: &Span, at: &DateTime<Tz>) -> bool {
        self.before(at) < other.before(at)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, mo) = (self.months / 12, self.months % 12);
        let (d, h) = (self.hours / 24, self.hours % 24);
        let mut out = String::new();
        if y > 0 {
            out.push_str(&format!("{y}y"));
        }
        if mo > 0 {
            out.push_str(&format!("{mo}mo"));
        }
        if d > 0 {
            out.push_str(&format!("{d}d"));
        }
        if h > 0 || out.is_empty() {
            out.push_str(&format!("{h}h"));
        }
        f.write_str(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    #[test]
    fn parses_units_and_sums() {
        assert_eq!(
            Span::parse("3d").unwrap(),
            Span {
                months: 0,
                hours: 72
            }
        );
        assert_eq!(
            Span::parse("1y6mo").unwrap(),
            Span {
                months: 18,
                hours: 0
            }
        );
        assert_eq!(Span::parse("2w1d12h").unwrap().hours, 14 * 24 + 24 + 12);
        for bad in [
            "",
            "d",
            "3",
            "3m",
            "3x",
            "-3d",
            "3.5d",
            "99999999999999999999y",
        ] {
            assert!(Span::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn calendar_units_follow_the_calendar() {
        let t = Utc.with_ymd_and_hms(2028, 3, 1, 12, 0, 0).unwrap();
        // 2028 is a leap year: one year before 2028-03-01 is 2027-03-01.
        assert_eq!(
            Span::parse("1y").unwrap().before(&t),
            Utc.with_ymd_and_hms(2027, 3, 1, 12, 0, 0).unwrap()
        );
        let end = Utc.with_ymd_and_hms(2027, 3, 31, 0, 0, 0).unwrap();
        assert_eq!(
            Span::parse("1mo").unwrap().before(&end),
            Utc.with_ymd_and_hms(2027, 2, 28, 0, 0, 0).unwrap()
        );
        let a = Span::parse("6y").unwrap();
        let b = Span::parse("35d").unwrap();
        assert!(a.longer_than(&b, &t) && !b.longer_than(&a, &t));
        assert_eq!(a.to_string(), "6y");
        assert_eq!(Span::parse("36h").unwrap().to_string(), "1d12h");
    }
}
