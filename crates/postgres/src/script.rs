//! A logical restore run through this process, so that a table's rows can
//! be sent somewhere else before they reach their table.
//!
//! `pg_restore -f -` turns the archive into its SQL script; this module
//! runs that script on one connection, in one transaction, entry by entry
//! (pg_restore heads every archive entry with a `-- Name: …; Type: …`
//! comment, which is where statements are flushed), and streams each
//! table's `COPY … FROM stdin` rows itself. A [`DataHook`] may divert the
//! rows of a table into another relation (and blank some of their fields
//! on the way); it is told when they are all there, and it runs before
//! the post-data section builds indexes, constraints and triggers.
//!
//! The masked restore (holdfast-ops) is the user: it stages each masked
//! table's rows in a temporary table and writes only masked rows into the
//! real one, so unmasked rows are never written to a table that outlives
//! the transaction, and no table is rewritten after the fact.
//!
//! Safety rules the runner enforces, because a diverted table must never
//! receive its rows another way:
//! - a table's data entry must be one COPY (dumps made with `--inserts`
//!   are refused);
//! - large-object data is refused;
//! - pg_restore must exit 0 before the transaction commits (a dump cut
//!   short ends the script early, which would otherwise look complete).

use std::io::{BufRead, BufReader};
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_sink::Sink;
use holdfast_repo::reader::ContentReader;
use holdfast_repo::Repository;
use tokio::runtime::Handle;
use tokio_postgres::{Client, CopyInSink};

use crate::conn::Dsn;
use crate::error::{PgError, Result};
use crate::logical::LogicalRestoreOptions;
use crate::tool;

/// The table a data entry copies into, as its COPY statement names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyTarget {
    pub schema: String,
    pub table: String,
    /// Column names in the order of the rows' fields.
    pub columns: Vec<String>,
}

/// Where a table's rows go instead, and which of their fields are sent
/// as NULL (their values are never needed: the hook writes a constant).
#[derive(Debug, Clone)]
pub struct Divert {
    /// A relation name as SQL (already quoted) with the same columns.
    pub into: String,
    /// Indexes into [`CopyTarget::columns`].
    pub null_fields: Vec<usize>,
}

/// Hooks of a scripted restore; an error stops the restore and rolls it
/// back.
pub trait DataHook {
    /// Before the first data entry: every table of the dump exists.
    fn before_data(&mut self, rt: &Handle, c: &Client) -> Result<()>;
    /// A table's rows are about to come: copy them somewhere else?
    fn divert(&mut self, rt: &Handle, c: &Client, t: &CopyTarget) -> Result<Option<Divert>>;
    /// All of `t`'s rows are in `d.into`: `rows` of them; `nulled[i]`
    /// counts the non-NULL values blanked in field `d.null_fields[i]`.
    fn diverted(
        &mut self,
        rt: &Handle,
        c: &Client,
        t: &CopyTarget,
        d: &Divert,
        rows: u64,
        nulled: &[u64],
    ) -> Result<()>;
    /// The whole script ran; the transaction is still open.
    fn finish(&mut self, rt: &Handle, c: &Client) -> Result<()>;
}

/// Restore the dump `node` into `opts.database` (which exists and is
/// empty) through `hook`. Parallel jobs do not apply: one connection runs
/// the script.
pub(crate) fn restore_through(
    repo: &Arc<Repository>,
    rt: &Handle,
    node: &holdfast_repo::tree::Node,
    dsn: &Dsn,
    opts: &LogicalRestoreOptions,
    hook: &mut dyn DataHook,
) -> Result<()> {
    let mut env = dsn.tool_env();
    env.retain(|(k, _)| k != "PGDATABASE");
    let mut args = vec!["--file=-".to_string()];
    if opts.no_owner {
        args.push("--no-owner".into());
    }
    if opts.no_acl {
        args.push("--no-acl".into());
    }
    let client = dsn.with_dbname(&opts.database).connect(rt)?;
    let mut running = tool::spawn(&opts.tools.pg_restore, &args, &env, true, true)?;
    let stdout = running
        .child
        .stdout
        .take()
        .ok_or_else(|| PgError::Invalid("pg_restore has no stdout pipe".into()))?;
    tool::widen_pipe(&stdout);
    let feeder = tool::feed(
        &mut running,
        ContentReader::new(repo.clone(), node.content.clone(), 8),
    )?;
    let ran = rt
        .block_on(client.batch_execute("BEGIN"))
        .map_err(|e| PgError::query("starting the restore transaction", e))
        .and_then(|()| {
            let mut runner = Runner {
                rt,
                client: &client,
                hook: &mut *hook,
                text: String::new(),
                entry: String::new(),
                data_started: false,
            };
            runner.run(BufReader::with_capacity(1 << 20, stdout))
        });
    let ran = match ran {
        Ok(()) => Ok(()),
        Err(e) => {
            // Our side failed: stop pg_restore; its stderr explains a
            // failure of its own better than a broken pipe does.
            let stderr = running.abort();
            let _ = feeder.join();
            let _ = rt.block_on(client.batch_execute("ROLLBACK"));
            return Err(if stderr.trim().is_empty() {
                e
            } else {
                PgError::Invalid(format!("{e} (pg_restore said: {})", stderr.trim()))
            });
        }
    };
    // pg_restore must have read and written everything before the
    // transaction commits: a dump cut short ends the script early.
    let finished = running.finish();
    let fed = feeder
        .join()
        .map_err(|_| PgError::Invalid("the restore feeder thread panicked".into()))?;
    let ok = ran
        .and(finished.map(|_| ()))
        .and_then(|()| {
            fed.map(|_| ())
                .map_err(|e| PgError::io_or_repo("streaming the dump into pg_restore", e))
        })
        .and_then(|()| hook.finish(rt, &client));
    match ok {
        Ok(()) => rt
            .block_on(client.batch_execute("COMMIT"))
            .map_err(|e| PgError::query("committing the restore", e)),
        Err(e) => {
            let _ = rt.block_on(client.batch_execute("ROLLBACK"));
            Err(e)
        }
    }
}

/// The script runner's state.
struct Runner<'a> {
    rt: &'a Handle,
    client: &'a Client,
    hook: &'a mut dyn DataHook,
    /// Statements of the current entry, not yet sent.
    text: String,
    /// The current entry's header (`Name: …; Type: …`), for errors.
    entry: String,
    data_started: bool,
}

impl Runner<'_> {
    fn run(&mut self, mut r: impl BufRead) -> Result<()> {
        let mut line = Vec::with_capacity(4096);
        while next_line(&mut r, &mut line)? {
            let s = std::str::from_utf8(&line).map_err(|_| {
                PgError::Invalid(format!(
                    "pg_restore's script is not UTF-8 (in {}): a masked restore needs a UTF8 database",
                    self.entry_name()
                ))
            })?;
            if let Some(h) = s
                .strip_prefix("-- Name: ")
                .or_else(|| s.strip_prefix("-- Data for Name: "))
            {
                self.flush()?;
                self.entry = h.trim_end().to_string();
                // `BLOB` entries (pre-data) create large objects; `BLOBS`
                // holds their data.
                let data = matches!(self.entry_type(), "TABLE DATA" | "BLOBS");
                if data && !self.data_started {
                    self.data_started = true;
                    self.hook.before_data(self.rt, self.client)?;
                }
                if self.entry_type() == "BLOBS" {
                    return Err(PgError::Invalid(format!(
                        "the dump holds large objects ({}), whose data this restore cannot pass through its hook",
                        self.entry_name()
                    )));
                }
                continue;
            }
            // psql's meta-commands that pg_restore writes around a script.
            if s.starts_with("\\restrict ") || s.starts_with("\\unrestrict ") {
                continue;
            }
            if self.entry_type() == "TABLE DATA"
                && s.starts_with("COPY ")
                && only_comments(&self.text)
            {
                self.copy(s, &mut r)?;
                continue;
            }
            if self.entry_type() == "TABLE DATA" && !s.starts_with("--") && !s.trim().is_empty() {
                return Err(PgError::Invalid(format!(
                    "the data of {} is not a COPY (a dump made with --inserts?): this restore refuses it",
                    self.entry_name()
                )));
            }
            self.text.push_str(s);
        }
        self.flush()
    }

    /// `Name: x; Type: T; Schema: s; Owner: o` → `T`.
    fn entry_type(&self) -> &str {
        self.entry
            .split("; ")
            .find_map(|p| p.strip_prefix("Type: "))
            .unwrap_or("")
    }

    fn entry_name(&self) -> String {
        if self.entry.is_empty() {
            "the script's preamble".to_string()
        } else {
            format!("entry {:?}", self.entry)
        }
    }

    fn flush(&mut self) -> Result<()> {
        if only_comments(&self.text) {
            self.text.clear();
            return Ok(());
        }
        let sql = std::mem::take(&mut self.text);
        self.rt
            .block_on(self.client.batch_execute(&sql))
            .map_err(|e| PgError::query(format!("restoring {}", self.entry_name()), e))
    }

    /// One COPY: its header line is `s`; rows follow up to `\.`.
    fn copy(&mut self, s: &str, r: &mut impl BufRead) -> Result<()> {
        let target = parse_copy(s).ok_or_else(|| {
            PgError::Invalid(format!(
                "cannot read the COPY statement of {}: {}",
                self.entry_name(),
                s.trim_end()
            ))
        })?;
        let divert = self.hook.divert(self.rt, self.client, &target)?;
        let stmt = match &divert {
            None => s.trim_end().trim_end_matches(';').to_string(),
            Some(d) => format!(
                "COPY {} ({}) FROM stdin",
                d.into,
                target
                    .columns
                    .iter()
                    .map(|c| crate::quote_ident(c))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let what = self.entry_name();
        let mut sink: Pin<Box<CopyInSink<Bytes>>> = Box::pin(
            self.rt
                .block_on(self.client.copy_in::<_, Bytes>(&stmt))
                .map_err(|e| PgError::query(format!("starting the COPY of {what}"), e))?,
        );
        let nulls: &[usize] = divert.as_ref().map_or(&[], |d| &d.null_fields);
        let mut nulled = vec![0u64; nulls.len()];
        let mut buf = BytesMut::with_capacity(1 << 20);
        let mut line = Vec::with_capacity(4096);
        let mut ended = false;
        while next_line(r, &mut line)? {
            if line == b"\\.\n" {
                ended = true;
                break;
            }
            if nulls.is_empty() {
                buf.extend_from_slice(&line);
            } else {
                blank_fields(&line, nulls, &mut nulled, &mut buf);
            }
            if buf.len() >= 1 << 20 {
                self.send(&mut sink, buf.split().freeze(), &what)?;
            }
        }
        if !ended {
            return Err(PgError::Invalid(format!(
                "the rows of {what} end before their \\. terminator: the dump is cut short"
            )));
        }
        if !buf.is_empty() {
            self.send(&mut sink, buf.split().freeze(), &what)?;
        }
        let rows = self
            .rt
            .block_on(sink.as_mut().finish())
            .map_err(|e| PgError::query(format!("copying the rows of {what}"), e))?;
        if let Some(d) = &divert {
            self.hook
                .diverted(self.rt, self.client, &target, d, rows, &nulled)?;
        }
        Ok(())
    }

    fn send(&self, sink: &mut Pin<Box<CopyInSink<Bytes>>>, b: Bytes, what: &str) -> Result<()> {
        let s = sink.as_mut();
        self.rt
            .block_on(async move {
                let mut s = s;
                std::future::poll_fn(|cx| s.as_mut().poll_ready(cx)).await?;
                s.as_mut().start_send(b)?;
                std::future::poll_fn(|cx| s.as_mut().poll_flush(cx)).await
            })
            .map_err(|e| PgError::query(format!("copying the rows of {what}"), e))
    }
}

/// The script's next line into `line` (with its `\n`); false at the end.
fn next_line(r: &mut impl BufRead, line: &mut Vec<u8>) -> Result<bool> {
    line.clear();
    let n = r
        .read_until(b'\n', line)
        .map_err(|e| PgError::io("reading pg_restore's script", e))?;
    Ok(n > 0)
}

/// Whether `text` holds no statement: blank and `--` comment lines only.
fn only_comments(text: &str) -> bool {
    text.lines()
        .all(|l| l.trim().is_empty() || l.starts_with("--"))
}

/// Copy `line` (one row in COPY text format, ending in `\n`) into `out`
/// with the fields at `nulls` replaced by `\N`, counting those that were
/// not NULL. Fields are separated by raw tabs: a tab inside a value is
/// escaped as `\t`.
fn blank_fields(line: &[u8], nulls: &[usize], nulled: &mut [u64], out: &mut BytesMut) {
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    for (i, f) in body.split(|b| *b == b'\t').enumerate() {
        if i > 0 {
            out.extend_from_slice(b"\t");
        }
        match nulls.iter().position(|n| *n == i) {
            Some(k) => {
                if f != b"\\N" {
                    nulled[k] += 1;
                }
                out.extend_from_slice(b"\\N");
            }
            None => out.extend_from_slice(f),
        }
    }
    out.extend_from_slice(b"\n");
}

/// `COPY schema.table (a, "b c") FROM stdin;` as pg_dump writes it.
pub fn parse_copy(s: &str) -> Option<CopyTarget> {
    let rest = s.strip_prefix("COPY ")?;
    let (schema, rest) = ident(rest)?;
    let rest = rest.strip_prefix('.')?;
    let (table, rest) = ident(rest)?;
    let mut rest = rest.strip_prefix(" (")?;
    let mut columns = Vec::new();
    loop {
        let (c, r) = ident(rest)?;
        columns.push(c);
        if let Some(r) = r.strip_prefix(", ") {
            rest = r;
        } else {
            rest = r.strip_prefix(')')?;
            break;
        }
    }
    (rest.trim_end() == " FROM stdin;").then_some(CopyTarget {
        schema,
        table,
        columns,
    })
}

/// One identifier at the start of `s`: plain (as pg_dump leaves it
/// unquoted: lower case, digits, `_`, `$`) or double-quoted with `""`.
fn ident(s: &str) -> Option<(String, &str)> {
    if let Some(q) = s.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = q.char_indices();
        while let Some((i, ch)) = chars.next() {
            if ch == '"' {
                if q[i + 1..].starts_with('"') {
                    out.push('"');
                    chars.next();
                } else {
                    return Some((out, &q[i + 1..]));
                }
            } else {
                out.push(ch);
            }
        }
        None
    } else {
        let end = s
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
            .unwrap_or(s.len());
        (end > 0).then(|| (s[..end].to_string(), &s[end..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_statements_are_read_with_quoted_names() {
        let t = parse_copy("COPY public.patient (id, mrn, given) FROM stdin;\n").unwrap();
        assert_eq!(t.schema, "public");
        assert_eq!(t.table, "patient");
        assert_eq!(t.columns, vec!["id", "mrn", "given"]);
        let t = parse_copy("COPY \"We\"\"ird\".\"Tab, le\" (\"a b\", \"c)\", d) FROM stdin;\n")
            .unwrap();
        assert_eq!(t.schema, "We\"ird");
        assert_eq!(t.table, "Tab, le");
        assert_eq!(t.columns, vec!["a b", "c)", "d"]);
        assert!(parse_copy("COPY public.t (a) FROM '/etc/passwd';\n").is_none());
        assert!(parse_copy("COPY public.t (a FROM stdin;\n").is_none());
    }

    #[test]
    fn blanked_fields_become_null_and_are_counted() {
        let mut out = BytesMut::new();
        let mut n = vec![0, 0];
        blank_fields(b"1\tsecret\\tx\t\\N\tkeep\n", &[1, 2], &mut n, &mut out);
        assert_eq!(&out[..], b"1\t\\N\t\\N\tkeep\n");
        assert_eq!(n, vec![1, 0]);
    }
}
