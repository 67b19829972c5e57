//! Times given on the command line or in configuration.

use crate::error::{OpsError, Result};

/// Parse a time given by an operator (a recovery target, a snapshot
/// time, a plan date): RFC 3339, or `YYYY-MM-DD HH:MM:SS[.f][zone]`
/// (no zone means UTC).
pub fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%#z"] {
        if let Ok(t) = chrono::DateTime::parse_from_str(s, fmt) {
            return Ok(t.with_timezone(&chrono::Utc));
        }
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f") {
        return Ok(t.and_utc());
    }
    Err(OpsError::invalid(format!(
        "cannot read time {s:?}: use RFC 3339, e.g. 2025-01-31T13:45:00Z (times without zone are UTC)"
    )))
}

/// [`parse_time`], or a date alone (`2026-12-01`: its start, UTC), for
/// filters such as `audit log --since`.
pub fn parse_time_or_date(s: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    parse_time(s)
}

/// [`parse_time`], or a date alone meaning the last instant of that day
/// (UTC), for inclusive upper bounds such as `hold place --to 2026-01-31`:
/// an operator who names a day means all of it.
pub fn parse_time_or_date_end(s: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let end = chrono::NaiveTime::from_hms_nano_opt(23, 59, 59, 999_999_999)
            .unwrap_or(chrono::NaiveTime::MIN);
        return Ok(d.and_time(end).and_utc());
    }
    parse_time(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_date_alone_is_the_whole_day_for_ranges() {
        let from = parse_time_or_date("2026-01-31").unwrap();
        let to = parse_time_or_date_end("2026-01-31").unwrap();
        assert_eq!(from.to_rfc3339(), "2026-01-31T00:00:00+00:00");
        assert!(to > parse_time("2026-01-31T23:59:59Z").unwrap());
        assert!(to < parse_time("2026-02-01T00:00:00Z").unwrap());
        assert_eq!(
            parse_time_or_date_end("2026-01-31T10:00:00+01:00").unwrap(),
            parse_time("2026-01-31T09:00:00Z").unwrap()
        );
        assert!(parse_time_or_date_end("2026-02-30").is_err());
        assert!(parse_time_or_date("yesterday").is_err());
    }
}
