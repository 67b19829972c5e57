//! The audit trail in the application layer: every operation that changes
//! the repository or reveals its data records an entry here (see
//! `holdfast_repo::audit` for the entries and the chain), and the reading
//! side: the log, verification, and the export for a SIEM.
//!
//! **Failure policy.** An operation whose entry cannot be written fails:
//! an operation that changed the repository reports that it did (the
//! error says what was done) and that its entry is missing, so an
//! operator or the daemon retries or investigates; it is never reported
//! as a success without its record. A data-revealing operation (restore)
//! writes a `started` entry *before* any data is read and does not start
//! if it cannot; its outcome follows in a second entry. An operation that
//! fails records a failure entry when the repository is reachable; if that
//! entry cannot be written either, the operation's own error is returned
//! with the audit error in front of it. Operations that cannot open the
//! repository (wrong password, no storage) leave no entry: nothing can be
//! sealed without the key.
//!
//! The actor is the session's (set by the caller through
//! [`crate::open::SessionOptions::actor`], else `user@host`). Entries hold
//! no secrets: no passwords, no key material, no connection passwords
//! (PostgreSQL targets are recorded as `user@host:port/database`).

use std::collections::BTreeMap;
use std::io::Write;

use chrono::{DateTime, Utc};
use holdfast_repo::audit::verify::Report;
use holdfast_repo::audit::{Draft, Outcome, Stored};
use holdfast_repo::Repository;
use serde_json::Value;

use crate::error::{OpsError, Result};

pub use holdfast_repo::audit::{Entry, Head, Touched};

/// Record `draft` at the end of the trail.
pub fn record(repo: &Repository, draft: &Draft) -> Result<Stored> {
    repo.audit_append(draft, None).map_err(|e| {
        OpsError::from(e).context(format!("writing the audit entry of {}", draft.operation))
    })
}

/// Run `op` and record its outcome: `done` adds what it produced to the
/// success entry. See the module docs for what happens when the entry
/// cannot be written.
pub(crate) fn audited<T>(
    repo: &Repository,
    draft: Draft,
    op: impl FnOnce() -> Result<T>,
    done: impl FnOnce(&T, Draft) -> Draft,
) -> Result<T> {
    match op() {
        Ok(v) => {
            let mut d = done(&v, draft);
            d.outcome = Outcome::Success;
            match record(repo, &d) {
                Ok(_) => Ok(v),
                Err(e) => Err(e.context(format!(
                    "the {} was carried out but is not on the audit trail",
                    d.operation
                ))),
            }
        }
        Err(err) => Err(record_failure(repo, draft, err)),
    }
}

/// Record `err` as the outcome of `draft`; returns the error to report.
pub(crate) fn record_failure(repo: &Repository, mut draft: Draft, err: OpsError) -> OpsError {
    draft.outcome = Outcome::Failure;
    draft.error = Some(err.to_string());
    match record(repo, &draft) {
        Ok(_) => err,
        Err(audit) => err.context(format!(
            "(and its failure is not on the audit trail: {audit})"
        )),
    }
}

/// Record that a data-revealing operation starts; it must not start if
/// this fails.
pub(crate) fn started(repo: &Repository, draft: &Draft) -> Result<()> {
    let mut d = draft.clone();
    d.outcome = Outcome::Started;
    record(repo, &d).map(|_| ())
}

/// Settle the trail's head that a snapshot written next records: the
/// head this machine knows (its witness: no request), else the one found
/// by probing the storage. A head a little behind (another host appended
/// since) is still a genuine entry the trail must reach.
pub(crate) fn observe(repo: &Repository) -> Result<()> {
    if let Some(h) = repo.audit_known_head() {
        repo.audit_saw(&h);
        return Ok(());
    }
    repo.audit_head()
        .map(|_| ())
        .map_err(|e| OpsError::from(e).context("reading the audit trail's head"))
}

/// Which entries `audit log` shows.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// Only entries at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only this operation (`backup`, `restore`, `key add`, ...; a prefix
    /// ending in a space is not needed: `key` matches every key operation).
    pub operation: Option<String>,
}

impl LogFilter {
    pub fn matches(&self, e: &Entry) -> bool {
        self.since.is_none_or(|t| e.time >= t)
            && self.operation.as_deref().is_none_or(|op| {
                e.operation == op
                    || e.operation
                        .strip_prefix(op)
                        .is_some_and(|rest| rest.starts_with(' '))
            })
    }
}

/// Entries, and the objects under `audit/` that could not be read
/// (storage key, why).
pub type Log = (Vec<Stored>, Vec<(String, String)>);

/// The trail's entries that `filter` admits, in order, and the objects
/// under `audit/` that could not be read (storage key, why): the log
/// shows what it can; `audit verify` judges.
pub fn log(repo: &Repository, filter: &LogFilter) -> Result<Log> {
    let chain = repo.audit_entries()?;
    let entries = chain
        .entries
        .into_iter()
        .filter(|s| filter.matches(&s.entry))
        .collect();
    Ok((entries, chain.unreadable))
}

/// Verify the trail (see `holdfast_repo::audit::verify`).
/// Signed entries are checked against the registered signers; a signer
/// record that does not open is a problem of its own.
pub fn verify(repo: &Repository) -> Result<Report> {
    let chain = repo.audit_entries()?;
    let snapshots = repo.snapshots()?;
    verify_read(repo, &chain, &snapshots)
}

/// [`verify`] of a trail and snapshots already read (the compliance
/// report reads them for more than this).
pub fn verify_read(
    repo: &Repository,
    chain: &holdfast_repo::audit::verify::Chain,
    snapshots: &[holdfast_repo::snapshot::SnapshotEntry],
) -> Result<Report> {
    let (signers, unreadable) = repo.signers()?;
    let signers: BTreeMap<_, _> = signers.into_iter().collect();
    let mut report = holdfast_repo::audit::verify::verify_read(repo, chain, snapshots, &signers);
    for (name, why) in unreadable {
        report.problems.push(holdfast_repo::audit::verify::Problem {
            seq: None,
            object: format!("signers/{name}"),
            detail: format!("signer record cannot be opened: {why}"),
        });
    }
    Ok(report)
}

/// An export format for a SIEM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON object per line: the entry with `hash` and, when signed,
    /// `signature`.
    Jsonl,
    /// RFC 4180 CSV with a header line (see [`CSV_COLUMNS`]).
    Csv,
}

impl std::str::FromStr for ExportFormat {
    type Err = OpsError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "jsonl" => Ok(ExportFormat::Jsonl),
            "csv" => Ok(ExportFormat::Csv),
            other => Err(OpsError::invalid(format!(
                "unknown export format {other:?}: use jsonl or csv"
            ))),
        }
    }
}

/// The columns of the CSV export.
pub const CSV_COLUMNS: [&str; 15] = [
    "seq",
    "time",
    "actor",
    "host",
    "operation",
    "outcome",
    "error",
    "args",
    "objects",
    "signer",
    "printed_name",
    "meaning",
    "signature",
    "prev",
    "hash",
];

/// An entry as one JSON value: the entry's fields, `hash`, and the
/// signature line's `signature` when signed.
pub fn entry_json(s: &Stored) -> Value {
    let mut v = serde_json::to_value(&s.entry).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("hash".into(), Value::String(s.hash.clone()));
        if let Some(sig) = &s.signature {
            m.insert("signature".into(), Value::String(sig.signature.clone()));
        }
    }
    v
}

/// One CSV record (no line end) of an entry.
pub fn csv_record(s: &Stored) -> String {
    let e = &s.entry;
    let objects: Vec<String> = e
        .objects
        .iter()
        .map(|t| format!("{}:{}", t.kind, t.id))
        .collect();
    let args = if e.args.is_empty() {
        String::new()
    } else {
        serde_json::to_string(&e.args).unwrap_or_default()
    };
    let signed = e.signed.as_ref();
    let fields = [
        e.seq.to_string(),
        e.time.to_rfc3339(),
        e.actor.clone(),
        e.host.clone(),
        e.operation.clone(),
        e.outcome.as_str().to_string(),
        e.error.clone().unwrap_or_default(),
        args,
        objects.join(";"),
        signed.map(|m| m.signer.clone()).unwrap_or_default(),
        signed.map(|m| m.printed_name.clone()).unwrap_or_default(),
        signed.map(|m| m.meaning.clone()).unwrap_or_default(),
        s.signature
            .as_ref()
            .map(|l| l.signature.clone())
            .unwrap_or_default(),
        e.prev.clone(),
        s.hash.clone(),
    ];
    fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",")
}

/// A CSV field, quoted when it holds a comma, a quote, a line break or
/// leading/trailing space (RFC 4180: quotes doubled inside).
pub fn csv_field(f: &str) -> String {
    let needs = f.contains([',', '"', '\n', '\r'])
        || f.starts_with(char::is_whitespace)
        || f.ends_with(char::is_whitespace);
    if needs {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f.to_string()
    }
}

/// Write every readable entry that `filter` admits to `out` in `format`;
/// returns how many, and the objects that could not be read.
pub fn export(
    repo: &Repository,
    filter: &LogFilter,
    format: ExportFormat,
    out: &mut dyn Write,
) -> Result<(usize, Vec<(String, String)>)> {
    let (entries, unreadable) = log(repo, filter)?;
    let io = |cause| OpsError::Io {
        context: "writing the export".into(),
        cause,
    };
    if format == ExportFormat::Csv {
        writeln!(out, "{}", CSV_COLUMNS.join(",")).map_err(io)?;
    }
    for s in &entries {
        let line = match format {
            ExportFormat::Jsonl => entry_json(s).to_string(),
            ExportFormat::Csv => csv_record(s),
        };
        // CSV records end in CRLF (RFC 4180); JSON lines in LF.
        let end = if format == ExportFormat::Csv {
            "\r\n"
        } else {
            "\n"
        };
        write!(out, "{line}{end}").map_err(io)?;
    }
    out.flush().map_err(io)?;
    Ok((entries.len(), unreadable))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quoting() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_field(" padded"), "\" padded\"");
        assert_eq!(csv_field(""), "");
    }

    #[test]
    fn operation_filter_matches_words() {
        let f = |op: &str| LogFilter {
            since: None,
            operation: Some(op.into()),
        };
        let mut e: Entry = serde_json::from_value(serde_json::json!({
            "version": 1, "seq": 1, "time": "2026-12-01T00:00:00Z", "actor": "a",
            "host": "h", "operation": "key add", "outcome": "success",
            "prev": holdfast_repo::audit::GENESIS,
        }))
        .unwrap();
        assert!(f("key").matches(&e));
        assert!(f("key add").matches(&e));
        assert!(!f("ke").matches(&e));
        e.operation = "keyring".into();
        assert!(!f("key").matches(&e));
    }
}
