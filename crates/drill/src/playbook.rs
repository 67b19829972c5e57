//! Playbook files (`playbooks/*.toml`): parsing, and validation whose every
//! error names the file, line and column and says what was expected.
//!
//! ```toml
//! name = "nightly-documents"
//! [snapshot]
//! source = "docs"
//! pick = "latest"                 # latest | latest-within | random-within
//! [target]
//! kind = "directory"              # directory | postgres-scratch | postgres-server
//! [[check]]
//! kind = "files"                  # verify every restored file against the snapshot
//! [objectives]
//! rto = "15m"
//! rpo = "26h"
//! ```
//!
//! One restore is written with top-level `[snapshot]`, `[target]` and
//! `[[check]]`; several (a site-loss drill restores the database and the
//! document store together) as `[[restore]]` tables holding the same
//! three. The objectives are the drill's: the RTO covers every restore.

use std::ops::Range;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use toml::Spanned;

use crate::duration;
use crate::PlaybookError;

/// How a snapshot is chosen among those of the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    /// The newest.
    Latest,
    /// The newest, which must be younger than this many seconds.
    LatestWithin(u64),
    /// A random one younger than `within` seconds; the seed is recorded in
    /// the report (given here or drawn at run time).
    RandomWithin { within: u64, seed: Option<u64> },
}

/// Which point in time a physical PostgreSQL drill recovers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PointInTime {
    /// As far as the archived WAL reaches.
    Latest,
    /// A fixed instant.
    At(DateTime<Utc>),
    /// A random instant within the recoverable range (seeded).
    Random { seed: Option<u64> },
}

/// Which snapshot a restore uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotPick {
    pub source: String,
    /// `files`, `postgres-logical` or `postgres-physical`: given, or
    /// implied by the target.
    pub kind: String,
    /// Tags the snapshot must all carry.
    pub tags: Vec<String>,
    pub pick: Pick,
    /// Physical snapshots only.
    pub point_in_time: Option<PointInTime>,
}

/// Where a restore goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A scratch directory: `path` (which must not exist or be empty), or
    /// a new temporary directory under `parent` (default: the system's).
    /// Removed after the drill unless `keep`.
    Directory {
        path: Option<PathBuf>,
        parent: Option<PathBuf>,
        keep: bool,
    },
    /// A cluster the drill creates with `initdb` on a free port and always
    /// tears down.
    PostgresScratch {
        /// Directory of `initdb`, `pg_ctl`, `postgres` (default: found as
        /// for every PostgreSQL command).
        bin_dir: Option<PathBuf>,
        /// Where its temporary directory goes (default: the system's).
        parent: Option<PathBuf>,
        /// The database checks run in (default: a logical snapshot's first
        /// database; `postgres` for a physical one).
        database: Option<String>,
    },
    /// An existing server: the drill creates its own database there and
    /// drops it afterwards.
    PostgresServer {
        /// Connection string of the server (a maintenance database).
        dsn: String,
    },
}

impl Target {
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Directory { .. } => "directory",
            Target::PostgresScratch { .. } => "postgres-scratch",
            Target::PostgresServer { .. } => "postgres-server",
        }
    }
}

/// What a SQL check expects of the single value its query returns.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// Equal to this text (numbers and booleans are compared in
    /// PostgreSQL's text form: `42`, `t`).
    Equals(String),
    /// A number within bounds (inclusive).
    Between { min: Option<f64>, max: Option<f64> },
}

/// One check run on the restored data.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// Restored file content against the snapshot: every file, or `sample`
    /// files picked at random (seeded).
    Files {
        sample: Option<u64>,
        seed: Option<u64>,
    },
    /// A query returning one value, compared with `expect`.
    Sql {
        name: String,
        query: String,
        expect: Expect,
    },
    /// Row counts of tables compared with those recorded at backup time
    /// (every recorded table, or the listed ones).
    RowCounts { tables: Vec<String> },
    /// `bt_index_check` on every B-tree index, where `amcheck` exists.
    Amcheck,
    /// A command run with the scratch location in its environment
    /// (`HOLDFAST_DRILL_DIR`, or `HOLDFAST_DRILL_DSN` and `PG*`).
    Command {
        name: String,
        run: Vec<String>,
        timeout: Option<u64>,
    },
    /// PITR: the last replayed transaction is within the RPO of the
    /// requested point.
    Pitr,
}

impl Check {
    pub fn kind(&self) -> &'static str {
        match self {
            Check::Files { .. } => "files",
            Check::Sql { .. } => "sql",
            Check::RowCounts { .. } => "row-counts",
            Check::Amcheck => "amcheck",
            Check::Command { .. } => "command",
            Check::Pitr => "pitr",
        }
    }
}

/// One restore of a drill.
#[derive(Debug, Clone, PartialEq)]
pub struct Restore {
    /// Its name in reports: the `[[restore]]` table's `name`, or the
    /// source.
    pub label: String,
    pub snapshot: SnapshotPick,
    pub target: Target,
    pub checks: Vec<Check>,
}

/// Targets of the drill, in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Objectives {
    /// Wall time from the drill's start to usable, checked restores.
    pub rto: u64,
    /// Largest age of a restored point relative to the drill's start.
    pub rpo: u64,
    /// The drill is stopped (and torn down) after this long: given, or
    /// four times the RTO and at least ten minutes.
    pub timeout: u64,
    /// Site-level RTO: what restoring everything in the repository may
    /// take; the forecast is compared with it.
    pub site_rto: Option<u64>,
    /// How often the drill must pass (`every = "1d"`): the compliance
    /// report fails a playbook whose last drill is older. Not used by
    /// the drill itself.
    pub every: Option<u64>,
}

/// A validated playbook.
#[derive(Debug, Clone, PartialEq)]
pub struct Playbook {
    pub name: String,
    pub file: PathBuf,
    pub description: Option<String>,
    /// Repository URL, used when neither `--repo` nor the environment
    /// names one.
    pub repository: Option<String>,
    pub restores: Vec<Restore>,
    pub objectives: Objectives,
}

/// The snapshot kinds a playbook can name.
pub const SNAPSHOT_KINDS: [&str; 3] = ["files", "postgres-logical", "postgres-physical"];
const PICKS: &str = "latest, latest-within or random-within";
const TARGETS: &str = "directory, postgres-scratch or postgres-server";
const CHECKS: &str = "files, sql, row-counts, amcheck, command or pitr";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    name: Option<Spanned<String>>,
    description: Option<String>,
    repository: Option<Spanned<String>>,
    snapshot: Option<Spanned<RawSnapshot>>,
    target: Option<Spanned<RawTarget>>,
    #[serde(default)]
    check: Vec<Spanned<RawCheck>>,
    #[serde(default)]
    restore: Vec<Spanned<RawRestore>>,
    objectives: Option<Spanned<RawObjectives>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRestore {
    name: Option<Spanned<String>>,
    snapshot: Option<Spanned<RawSnapshot>>,
    target: Option<Spanned<RawTarget>>,
    #[serde(default)]
    check: Vec<Spanned<RawCheck>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSnapshot {
    source: Option<Spanned<String>>,
    kind: Option<Spanned<String>>,
    #[serde(default)]
    tags: Vec<String>,
    pick: Option<Spanned<String>>,
    within: Option<Spanned<String>>,
    seed: Option<Spanned<i64>>,
    point_in_time: Option<Spanned<String>>,
    point_seed: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    kind: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    parent: Option<Spanned<String>>,
    keep: Option<Spanned<bool>>,
    bin_dir: Option<Spanned<String>>,
    dsn: Option<Spanned<String>>,
    database: Option<Spanned<String>>,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum RawValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawRun {
    Shell(String),
    Argv(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    kind: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    sample: Option<Spanned<i64>>,
    seed: Option<Spanned<i64>>,
    query: Option<Spanned<String>>,
    expect: Option<Spanned<RawValue>>,
    min: Option<Spanned<f64>>,
    max: Option<Spanned<f64>>,
    tables: Option<Spanned<Vec<String>>>,
    run: Option<Spanned<RawRun>>,
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawObjectives {
    rto: Option<Spanned<String>>,
    rpo: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    site_rto: Option<Spanned<String>>,
    every: Option<Spanned<String>>,
}

/// Maps byte offsets of one file to lines and columns, and collects errors.
struct Src<'a> {
    file: &'a Path,
    text: &'a str,
    errors: Vec<PlaybookError>,
}

impl Src<'_> {
    fn error_at(&self, span: Range<usize>, message: impl Into<String>) -> PlaybookError {
        let start = span.start.min(self.text.len());
        let before = self.text.get(..start).unwrap_or(self.text);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        PlaybookError {
            file: self.file.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }

    fn err(&mut self, span: Range<usize>, message: impl Into<String>) {
        let e = self.error_at(span, message);
        self.errors.push(e);
    }

    fn duration(&mut self, v: &Spanned<String>, what: &str) -> Option<u64> {
        match duration::parse(v.get_ref()) {
            Ok(s) => Some(s),
            Err(e) => {
                self.err(v.span(), format!("{what}: bad duration: {e}"));
                None
            }
        }
    }

    fn seed(&mut self, v: &Option<Spanned<i64>>, what: &str) -> Option<u64> {
        let v = v.as_ref()?;
        match u64::try_from(*v.get_ref()) {
            Ok(s) => Some(s),
            Err(_) => {
                self.err(v.span(), format!("{what} must be a whole number from 0"));
                None
            }
        }
    }

    /// An error for each key given that `kind` does not use.
    fn unused(&mut self, keys: &[(&str, Option<Range<usize>>)], owner: &str, kind: &str) {
        for (key, span) in keys {
            if let Some(span) = span {
                self.err(
                    span.clone(),
                    format!("{key} is not used by {owner} of kind {kind:?}; remove it"),
                );
            }
        }
    }
}

fn span_of<T>(v: &Option<Spanned<T>>) -> Option<Range<usize>> {
    v.as_ref().map(Spanned::span)
}

/// Parse and validate one playbook's text (`file` names it in errors).
/// Returns every error found, not only the first.
pub fn parse_str(file: &Path, text: &str) -> Result<Playbook, Vec<PlaybookError>> {
    let mut src = Src {
        file,
        text,
        errors: Vec::new(),
    };
    let raw: RawFile = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let msg = e.message().trim_end().to_string();
            let span = e.span().unwrap_or(0..0);
            return Err(vec![src.error_at(span, msg)]);
        }
    };
    let whole = 0..0;
    let name = match &raw.name {
        None => {
            src.err(whole.clone(), "no name: add name = \"...\" at the top (it names the drill in reports and history)");
            String::new()
        }
        Some(n) if n.get_ref().trim().is_empty() => {
            src.err(n.span(), "name is empty: give the drill a name");
            String::new()
        }
        Some(n) => n.get_ref().clone(),
    };
    if let Some(r) = &raw.repository {
        if r.get_ref().trim().is_empty() {
            src.err(
                r.span(),
                "repository is empty: give a repository URL or path, or leave it out to use --repo",
            );
        }
    }
    let mut restores = Vec::new();
    let single = raw.snapshot.is_some() || raw.target.is_some() || !raw.check.is_empty();
    if !raw.restore.is_empty() {
        if single {
            let span = span_of(&raw.snapshot)
                .or(span_of(&raw.target))
                .or(raw.check.first().map(Spanned::span))
                .unwrap_or(whole.clone());
            src.err(span, "top-level [snapshot], [target] and [[check]] cannot be combined with [[restore]] tables; put them inside a [[restore]]");
        }
        for r in raw.restore {
            let span = r.span();
            let r = r.into_inner();
            let label = r.name.as_ref().map(|n| n.get_ref().clone());
            if let Some(n) = &r.name {
                if n.get_ref().trim().is_empty() {
                    src.err(n.span(), "restore name is empty");
                }
            }
            if let Some(restore) = restore(&mut src, span, label, r.snapshot, r.target, r.check) {
                restores.push(restore);
            }
        }
    } else if let Some(r) = restore(
        &mut src,
        whole.clone(),
        None,
        raw.snapshot,
        raw.target,
        raw.check,
    ) {
        restores.push(r);
    }
    let mut seen: Vec<&str> = Vec::new();
    for r in &restores {
        if seen.contains(&r.label.as_str()) {
            src.err(
                whole.clone(),
                format!(
                    "two restores are named {:?}: give each [[restore]] its own name",
                    r.label
                ),
            );
        }
        seen.push(&r.label);
    }
    let objectives = objectives(&mut src, raw.objectives);
    if !src.errors.is_empty() {
        return Err(src.errors);
    }
    let Some(objectives) = objectives else {
        return Err(vec![src.error_at(whole, "objectives could not be read")]);
    };
    Ok(Playbook {
        name,
        file: file.to_path_buf(),
        description: raw.description,
        repository: raw.repository.map(Spanned::into_inner),
        restores,
        objectives,
    })
}

fn objectives(src: &mut Src<'_>, raw: Option<Spanned<RawObjectives>>) -> Option<Objectives> {
    let Some(raw) = raw else {
        src.err(
            src.text.len()..src.text.len(),
            "no [objectives] table: a drill proves targets; add [objectives] with rto = \"...\" and rpo = \"...\"",
        );
        return None;
    };
    let span = raw.span();
    let o = raw.into_inner();
    let rto = match &o.rto {
        Some(v) => src.duration(v, "rto"),
        None => {
            src.err(span.clone(), "[objectives] has no rto: add rto = \"15m\" (the longest a restore may take, from the drill's start to checked data)");
            None
        }
    };
    let rpo = match &o.rpo {
        Some(v) => src.duration(v, "rpo"),
        None => {
            src.err(
                span.clone(),
                "[objectives] has no rpo: add rpo = \"26h\" (the oldest the restored point may be)",
            );
            None
        }
    };
    let timeout = o.timeout.as_ref().and_then(|v| src.duration(v, "timeout"));
    let site_rto = o
        .site_rto
        .as_ref()
        .and_then(|v| src.duration(v, "site_rto"));
    let every = o.every.as_ref().and_then(|v| src.duration(v, "every"));
    let (rto, rpo) = (rto?, rpo?);
    if let (Some(t), Some(v)) = (timeout, &o.timeout) {
        if t < rto {
            src.err(v.span(), format!("timeout ({}) is shorter than rto ({}): the drill would be stopped before it could show whether the RTO is met", duration::Human(t), duration::Human(rto)));
        }
    }
    Some(Objectives {
        rto,
        rpo,
        timeout: timeout.unwrap_or_else(|| rto.saturating_mul(4).max(600)),
        site_rto,
        every,
    })
}

fn restore(
    src: &mut Src<'_>,
    span: Range<usize>,
    label: Option<String>,
    snapshot: Option<Spanned<RawSnapshot>>,
    target: Option<Spanned<RawTarget>>,
    checks: Vec<Spanned<RawCheck>>,
) -> Option<Restore> {
    let where_ = if span.is_empty() {
        "the playbook"
    } else {
        "this [[restore]]"
    };
    let target = match target {
        Some(t) => self::target(src, t),
        None => {
            src.err(span.clone(), format!("{where_} has no [target] table: add [target] with kind = \"directory\", \"postgres-scratch\" or \"postgres-server\""));
            None
        }
    };
    let snapshot = match snapshot {
        Some(s) => self::snapshot(src, s, target.as_ref()),
        None => {
            src.err(span.clone(), format!("{where_} has no [snapshot] table: add [snapshot] with source = \"...\" and pick = \"latest\""));
            None
        }
    };
    if checks.is_empty() {
        src.err(span.clone(), format!("{where_} has no [[check]]: a drill must check what it restored (e.g. [[check]] kind = \"files\")"));
    }
    let mut out = Vec::new();
    for c in checks {
        if let Some(c) = check(src, c, target.as_ref(), snapshot.as_ref()) {
            out.push(c);
        }
    }
    let (target, snapshot) = (target?, snapshot?);
    Some(Restore {
        label: label.unwrap_or_else(|| snapshot.source.clone()),
        snapshot,
        target,
        checks: out,
    })
}

fn target(src: &mut Src<'_>, raw: Spanned<RawTarget>) -> Option<Target> {
    let span = raw.span();
    let t = raw.into_inner();
    let Some(kind) = &t.kind else {
        src.err(
            span,
            format!("[target] has no kind: add kind = one of {TARGETS}"),
        );
        return None;
    };
    let path = |v: &Option<Spanned<String>>, src: &mut Src<'_>, what: &str| -> Option<PathBuf> {
        let v = v.as_ref()?;
        if v.get_ref().trim().is_empty() {
            src.err(v.span(), format!("{what} is empty"));
            return None;
        }
        Some(PathBuf::from(v.get_ref()))
    };
    match kind.get_ref().as_str() {
        "directory" => {
            src.unused(
                &[("bin_dir", span_of(&t.bin_dir)), ("dsn", span_of(&t.dsn))],
                "a target",
                "directory",
            );
            if let (Some(p), Some(q)) = (&t.path, &t.parent) {
                let _ = p;
                src.err(q.span(), "give either path (the scratch directory itself) or parent (where a temporary one is made), not both");
            }
            if let Some(p) = &t.path {
                if !Path::new(p.get_ref()).is_absolute() {
                    src.err(p.span(), format!("path {:?} is relative: give an absolute path (a drill may run from any directory)", p.get_ref()));
                }
            }
            Some(Target::Directory {
                path: path(&t.path, src, "path"),
                parent: path(&t.parent, src, "parent"),
                keep: t.keep.as_ref().is_some_and(|k| *k.get_ref()),
            })
        }
        "postgres-scratch" => {
            src.unused(
                &[
                    ("path", span_of(&t.path)),
                    ("keep", span_of(&t.keep)),
                    ("dsn", span_of(&t.dsn)),
                ],
                "a target",
                "postgres-scratch",
            );
            Some(Target::PostgresScratch {
                bin_dir: path(&t.bin_dir, src, "bin_dir"),
                parent: path(&t.parent, src, "parent"),
                database: t.database.as_ref().map(|d| d.get_ref().clone()),
            })
        }
        "postgres-server" => {
            src.unused(
                &[
                    ("path", span_of(&t.path)),
                    ("parent", span_of(&t.parent)),
                    ("keep", span_of(&t.keep)),
                    ("bin_dir", span_of(&t.bin_dir)),
                    ("database", span_of(&t.database)),
                ],
                "a target",
                "postgres-server",
            );
            match &t.dsn {
                Some(d) if !d.get_ref().trim().is_empty() => Some(Target::PostgresServer {
                    dsn: d.get_ref().clone(),
                }),
                Some(d) => {
                    src.err(d.span(), "dsn is empty");
                    None
                }
                None => {
                    src.err(span, "a postgres-server target needs dsn = \"postgresql://user@host:port/postgres\" (the drill creates and drops its own database there)");
                    None
                }
            }
        }
        other => {
            src.err(
                kind.span(),
                format!("unknown target kind {other:?}: expected {TARGETS}"),
            );
            None
        }
    }
}

fn snapshot(
    src: &mut Src<'_>,
    raw: Spanned<RawSnapshot>,
    target: Option<&Target>,
) -> Option<SnapshotPick> {
    let span = raw.span();
    let s = raw.into_inner();
    let source = match &s.source {
        Some(v) if !v.get_ref().trim().is_empty() => Some(v.get_ref().clone()),
        Some(v) => {
            src.err(
                v.span(),
                "source is empty: name the source whose snapshot is restored",
            );
            None
        }
        None => {
            src.err(
                span.clone(),
                "[snapshot] has no source: add source = \"...\" (the source name given at backup)",
            );
            None
        }
    };
    let implied = match target {
        Some(Target::Directory { .. }) => Some("files"),
        Some(Target::PostgresServer { .. }) => Some("postgres-logical"),
        Some(Target::PostgresScratch { .. }) if s.point_in_time.is_some() => {
            Some("postgres-physical")
        }
        Some(Target::PostgresScratch { .. }) => Some("postgres-logical"),
        None => None,
    };
    let kind = match &s.kind {
        Some(k) if !SNAPSHOT_KINDS.contains(&k.get_ref().as_str()) => {
            src.err(
                k.span(),
                format!(
                    "unknown snapshot kind {:?}: expected {}",
                    k.get_ref(),
                    SNAPSHOT_KINDS.join(", ")
                ),
            );
            None
        }
        Some(k) => {
            let fits = match (target, k.get_ref().as_str()) {
                (Some(Target::Directory { .. }), "files") => true,
                (Some(Target::Directory { .. }), _) => false,
                (Some(Target::PostgresServer { .. }), "postgres-logical") => true,
                (Some(Target::PostgresServer { .. }), _) => false,
                (Some(Target::PostgresScratch { .. }), "files") => false,
                _ => true,
            };
            if !fits {
                src.err(
                    k.span(),
                    format!(
                        "a {} snapshot cannot be restored into a {} target{}",
                        k.get_ref(),
                        target.map_or("", Target::kind),
                        match target {
                            Some(Target::PostgresServer { .. }) => " (a physical base backup needs its own cluster: use postgres-scratch)",
                            Some(Target::Directory { .. }) => " (use postgres-scratch or postgres-server)",
                            _ => " (use a directory target)",
                        }
                    ),
                );
                None
            } else {
                Some(k.get_ref().clone())
            }
        }
        None => implied.map(str::to_string),
    };
    let within = s.within.as_ref().and_then(|w| src.duration(w, "within"));
    let seed = src.seed(&s.seed, "seed");
    let pick = match s.pick.as_ref().map(|p| (p.get_ref().as_str(), p.span())) {
        None | Some(("latest", _)) => {
            src.unused(
                &[("within", span_of(&s.within)), ("seed", span_of(&s.seed))],
                "a pick",
                "latest",
            );
            Some(Pick::Latest)
        }
        Some(("latest-within", p)) => {
            src.unused(&[("seed", span_of(&s.seed))], "a pick", "latest-within");
            match (&s.within, within) {
                (None, _) => {
                    src.err(p, "pick = \"latest-within\" needs within = \"...\" (e.g. \"7d\"): how young the snapshot must be");
                    None
                }
                (Some(_), w) => w.map(Pick::LatestWithin),
            }
        }
        Some(("random-within", p)) => match (&s.within, within) {
            (None, _) => {
                src.err(p, "pick = \"random-within\" needs within = \"...\" (e.g. \"30d\"): the window the snapshot is drawn from");
                None
            }
            (Some(_), w) => w.map(|within| Pick::RandomWithin { within, seed }),
        },
        Some((other, p)) => {
            src.err(p, format!("unknown pick {other:?}: expected {PICKS}"));
            None
        }
    };
    let point_seed = src.seed(&s.point_seed, "point_seed");
    let point_in_time = match &s.point_in_time {
        None => {
            if let Some(ps) = &s.point_seed {
                src.err(
                    ps.span(),
                    "point_seed is used only with point_in_time = \"random\"",
                );
            }
            None
        }
        Some(p) => {
            if kind.as_deref().is_some_and(|k| k != "postgres-physical") {
                src.err(p.span(), "point_in_time needs a postgres-physical snapshot (a base backup with archived WAL) restored into a postgres-scratch target");
            }
            match p.get_ref().as_str() {
                "latest" => Some(PointInTime::Latest),
                "random" => Some(PointInTime::Random { seed: point_seed }),
                t => match DateTime::parse_from_rfc3339(t) {
                    Ok(at) => Some(PointInTime::At(at.with_timezone(&Utc))),
                    Err(e) => {
                        src.err(p.span(), format!("point_in_time {t:?}: expected \"latest\", \"random\" or an RFC 3339 time such as \"2026-11-30T14:00:00Z\" ({e})"));
                        None
                    }
                },
            }
        }
    };
    if point_in_time.is_some() && !matches!(point_in_time, Some(PointInTime::Random { .. })) {
        if let Some(ps) = &s.point_seed {
            src.err(
                ps.span(),
                "point_seed is used only with point_in_time = \"random\"",
            );
        }
    }
    Some(SnapshotPick {
        source: source?,
        kind: kind?,
        tags: s.tags,
        pick: pick?,
        point_in_time,
    })
}

fn check(
    src: &mut Src<'_>,
    raw: Spanned<RawCheck>,
    target: Option<&Target>,
    snapshot: Option<&SnapshotPick>,
) -> Option<Check> {
    let span = raw.span();
    let c = raw.into_inner();
    let Some(kind) = &c.kind else {
        src.err(
            span,
            format!("[[check]] has no kind: add kind = one of {CHECKS}"),
        );
        return None;
    };
    let k = kind.get_ref().as_str();
    let all = [
        ("name", span_of(&c.name)),
        ("sample", span_of(&c.sample)),
        ("seed", span_of(&c.seed)),
        ("query", span_of(&c.query)),
        ("expect", span_of(&c.expect)),
        ("min", span_of(&c.min)),
        ("max", span_of(&c.max)),
        ("tables", span_of(&c.tables)),
        ("run", span_of(&c.run)),
        ("timeout", span_of(&c.timeout)),
    ];
    let uses: &[&str] = match k {
        "files" => &["sample", "seed"],
        "sql" => &["name", "query", "expect", "min", "max"],
        "row-counts" => &["tables"],
        "amcheck" => &[],
        "command" => &["name", "run", "timeout"],
        "pitr" => &[],
        other => {
            src.err(
                kind.span(),
                format!("unknown check kind {other:?}: expected {CHECKS}"),
            );
            return None;
        }
    };
    let unused: Vec<_> = all
        .iter()
        .filter(|(key, _)| !uses.contains(key))
        .cloned()
        .collect();
    src.unused(&unused, "a check", k);
    // Which targets each check can run against.
    let postgres = matches!(
        target,
        Some(Target::PostgresScratch { .. } | Target::PostgresServer { .. })
    );
    let fits = match k {
        "files" => matches!(target, Some(Target::Directory { .. })) || target.is_none(),
        "sql" | "row-counts" | "amcheck" => postgres || target.is_none(),
        "pitr" => snapshot.is_none_or(|s| s.kind == "postgres-physical"),
        _ => true,
    };
    if !fits {
        let why = match k {
            "files" => "a files check needs a directory target (databases are checked with sql, row-counts and amcheck)".to_string(),
            "pitr" => "a pitr check needs point_in_time in [snapshot] (a physical PostgreSQL drill)".to_string(),
            _ => format!("a {k} check needs a postgres-scratch or postgres-server target"),
        };
        src.err(kind.span(), why);
    }
    if k == "row-counts" && snapshot.is_some_and(|s| s.kind == "postgres-physical") {
        src.err(kind.span(), "row counts are recorded by logical backups only; a physical drill checks with sql, amcheck and pitr");
    }
    match k {
        "files" => {
            let sample = match &c.sample {
                None => None,
                Some(v) if *v.get_ref() >= 1 => Some(*v.get_ref() as u64),
                Some(v) => {
                    src.err(v.span(), format!("sample = {}: expected a number of files from 1 (leave it out to check every file)", v.get_ref()));
                    None
                }
            };
            let seed = src.seed(&c.seed, "seed");
            if c.seed.is_some() && c.sample.is_none() {
                if let Some(s) = &c.seed {
                    src.err(
                        s.span(),
                        "seed is used only with sample (which files are drawn)",
                    );
                }
            }
            Some(Check::Files { sample, seed })
        }
        "sql" => {
            let query = match &c.query {
                Some(q) if !q.get_ref().trim().is_empty() => Some(q.get_ref().clone()),
                Some(q) => {
                    src.err(q.span(), "query is empty");
                    None
                }
                None => {
                    src.err(
                        span.clone(),
                        "a sql check needs query = \"SELECT ...\" returning one value",
                    );
                    None
                }
            };
            let expect = match (&c.expect, &c.min, &c.max) {
                (Some(e), None, None) => Some(Expect::Equals(match e.get_ref() {
                    RawValue::Bool(b) => if *b { "t" } else { "f" }.to_string(),
                    RawValue::Int(i) => i.to_string(),
                    RawValue::Float(f) => f.to_string(),
                    RawValue::Text(t) => t.clone(),
                })),
                (Some(e), _, _) => {
                    src.err(
                        e.span(),
                        "give expect (an exact value) or min/max (bounds), not both",
                    );
                    None
                }
                (None, None, None) => {
                    src.err(
                        span.clone(),
                        "a sql check needs expect = <value>, or min and/or max bounds",
                    );
                    None
                }
                (None, min, max) => {
                    let (lo, hi) = (
                        min.as_ref().map(|v| *v.get_ref()),
                        max.as_ref().map(|v| *v.get_ref()),
                    );
                    if let (Some(lo), Some(hi), Some(m)) = (lo, hi, min) {
                        if lo > hi {
                            src.err(m.span(), format!("min ({lo}) is greater than max ({hi})"));
                        }
                    }
                    Some(Expect::Between { min: lo, max: hi })
                }
            };
            let name = c
                .name
                .as_ref()
                .map(|n| n.get_ref().clone())
                .or_else(|| query.clone())?;
            Some(Check::Sql {
                name,
                query: query?,
                expect: expect?,
            })
        }
        "row-counts" => Some(Check::RowCounts {
            tables: c.tables.map(Spanned::into_inner).unwrap_or_default(),
        }),
        "amcheck" => Some(Check::Amcheck),
        "pitr" => Some(Check::Pitr),
        "command" => {
            let run = match &c.run {
                None => {
                    src.err(span.clone(), "a command check needs run = [\"program\", \"arg\", ...] (or a string run by sh -c)");
                    None
                }
                Some(r) => match r.get_ref() {
                    RawRun::Shell(s) if !s.trim().is_empty() => {
                        Some(vec!["sh".to_string(), "-c".to_string(), s.clone()])
                    }
                    RawRun::Argv(v) if v.first().is_some_and(|p| !p.is_empty()) => Some(v.clone()),
                    _ => {
                        src.err(r.span(), "run is empty: give the program and its arguments");
                        None
                    }
                },
            };
            let timeout = c.timeout.as_ref().and_then(|t| src.duration(t, "timeout"));
            let run = run?;
            let name = c
                .name
                .as_ref()
                .map(|n| n.get_ref().clone())
                .unwrap_or_else(|| run.join(" "));
            Some(Check::Command { name, run, timeout })
        }
        _ => None,
    }
}

/// Read, parse and validate a playbook file.
pub fn load_file(path: &Path) -> Result<Playbook, Vec<PlaybookError>> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_str(path, &text),
        Err(e) => Err(vec![PlaybookError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
        }]),
    }
}
