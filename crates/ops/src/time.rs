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
