//! `holdfast.toml`: parsing, and validation whose every error names the
//! file, line and column and says what was expected.
//!
//! ```toml
//! [repository.main]
//! url = "/srv/backups/repo"            # or s3://bucket/prefix
//! password_file = "/etc/holdfast/pass" # or password_env, or key_file
//!
//! [source.docs]
//! paths = ["/srv/documents"]
//! rpo = "26h"
//!
//! [[job]]
//! name = "docs-backup"
//! kind = "backup"                       # backup | retention | drill | check
//! source = "docs"
//! repository = "main"
//! schedule = "0 30 1 * * *"             # cron with seconds
//! timezone = "Europe/Berlin"
//!
//! [listen]
//! address = "127.0.0.1:9187"
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono_tz::Tz;
use serde::Deserialize;
use toml::Spanned;

use crate::duration::Seconds;
use crate::error::{ConfigError, Text};
use crate::schedule::Cron;

/// The default listener: loopback only (metrics say what is backed up).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9187";

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub file: PathBuf,
    pub repositories: BTreeMap<String, Repository>,
    pub sources: BTreeMap<String, Source>,
    pub jobs: Vec<Job>,
    pub alerts: BTreeMap<String, Alert>,
    /// `None` when `[listen]` sets `enabled = false`.
    pub listen: Option<Listen>,
    pub log_format: LogFormat,
    /// `[log] file`: append logs here instead of standard error.
    pub log_file: Option<PathBuf>,
    /// `[daemon]`: where the daemon keeps its state, how long it waits
    /// for running jobs at shutdown.
    pub daemon: DaemonSettings,
}

/// The default grace period at shutdown: running jobs get this long to
/// finish before they are asked to stop.
pub const DEFAULT_GRACE: Seconds = Seconds(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSettings {
    /// The state file's directory (last run per job); `None`: the binary
    /// picks one (or `--state-dir`).
    pub state_dir: Option<PathBuf>,
    /// SIGTERM: how long running jobs may go on before they are stopped.
    pub grace: Seconds,
}

impl Default for DaemonSettings {
    fn default() -> Self {
        DaemonSettings {
            state_dir: None,
            grace: DEFAULT_GRACE,
        }
    }
}

/// Where a secret comes from; the binary reads it, never this crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// The whole content of a file (one trailing newline dropped).
    File(PathBuf),
    /// An environment variable of the daemon.
    Env(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    pub name: String,
    pub url: String,
    /// Password, or `None` when a key file opens the repository.
    pub password: Option<Secret>,
    /// Opens the repository with no password hashing.
    pub key_file: Option<PathBuf>,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub s3_path_style: bool,
    pub s3_allow_http: bool,
    /// S3 credentials come from the standard AWS environment or these.
    pub s3_access_key_id: Option<Secret>,
    pub s3_secret_access_key: Option<Secret>,
    pub cache_dir: Option<PathBuf>,
}

impl Repository {
    pub fn is_s3(&self) -> bool {
        self.url.starts_with("s3://")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgMode {
    Logical,
    Physical,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// Files and directories.
    Paths {
        paths: Vec<PathBuf>,
        exclude: Vec<String>,
    },
    /// A PostgreSQL cluster or database. The connection string carries no
    /// password (libpq reads `password` from `password_file`/`_env`).
    Postgres {
        mode: PgMode,
        dsn: String,
        password: Option<Secret>,
        /// Physical: WAL is archived to the repository (archive_command),
        /// so the RPO of the database is that of its WAL.
        wal_archive: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub name: String,
    pub kind: SourceKind,
    /// Alert when no successful backup is younger than this.
    pub rpo: Option<Seconds>,
    /// Watch each backup for a mass change (ransomware): on by default
    /// for paths sources, off for PostgreSQL (a dump is a few big files).
    pub anomaly: bool,
    /// On an anomaly, place a legal hold on the last snapshot before it.
    pub anomaly_hold: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum JobKind {
    Backup {
        source: String,
    },
    /// `policy apply` with these policy files, then `gc` when `gc`.
    Retention {
        policies: Vec<PathBuf>,
        gc: bool,
    },
    /// A recovery drill from a playbook.
    Drill {
        playbook: PathBuf,
    },
    /// `check`, reading this percentage of the packs (0: structure only).
    Check {
        read_data_percent: u8,
    },
    /// A staging refresh: the latest logical snapshot of `source`
    /// restored, masked with the masking file `mask`, into `database` on
    /// the PostgreSQL server of the source named `target` (replacing the
    /// database there only once the masked copy is verified).
    StagingRefresh {
        source: String,
        target: String,
        database: String,
        mask: PathBuf,
    },
}

impl JobKind {
    pub fn name(&self) -> &'static str {
        match self {
            JobKind::Backup { .. } => "backup",
            JobKind::Retention { .. } => "retention",
            JobKind::Drill { .. } => "drill",
            JobKind::Check { .. } => "check",
            JobKind::StagingRefresh { .. } => "staging-refresh",
        }
    }
}

/// What to do at start about a run that fell while the daemon was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    Skip,
    RunOnce,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub name: String,
    pub line: usize,
    pub kind: JobKind,
    pub repository: String,
    pub schedule: Cron,
    pub jitter: Seconds,
    pub timeout: Option<Seconds>,
    pub retries: u32,
    pub retry_backoff: Seconds,
    pub missed: Missed,
    /// Alert targets notified about this job (default: all).
    pub alert: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertFormat {
    /// `{"event": ..., "job": ..., ...}`.
    Json,
    /// `{"text": ...}` for Slack-compatible incoming webhooks.
    Slack,
}

/// A webhook URL. Slack-style hook URLs are secrets themselves, so they
/// can come from a file or a variable; a plain receiver's can be inline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookUrl {
    Inline(String),
    Secret(Secret),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub name: String,
    pub url: WebhookUrl,
    pub format: AlertFormat,
    pub retries: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub address: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

// ---- the file as written -------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    repository: BTreeMap<String, Spanned<RawRepository>>,
    #[serde(default)]
    source: BTreeMap<String, Spanned<RawSource>>,
    #[serde(default)]
    job: Vec<Spanned<RawJob>>,
    #[serde(default)]
    alert: BTreeMap<String, Spanned<RawAlert>>,
    listen: Option<Spanned<RawListen>>,
    log: Option<RawLog>,
    daemon: Option<RawDaemon>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    state_dir: Option<Spanned<String>>,
    grace: Option<Spanned<String>>,
}

/// Keys that would hold a secret inline; each is refused with a pointer
/// to its `_file` / `_env` form.
type Inline = Option<Spanned<toml::Value>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepository {
    url: Spanned<String>,
    password: Inline,
    password_file: Option<Spanned<String>>,
    password_env: Option<Spanned<String>>,
    key_file: Option<Spanned<String>>,
    s3_endpoint: Option<String>,
    s3_region: Option<String>,
    #[serde(default)]
    s3_path_style: bool,
    #[serde(default)]
    s3_allow_http: bool,
    s3_access_key_id: Inline,
    s3_access_key_id_file: Option<Spanned<String>>,
    s3_access_key_id_env: Option<Spanned<String>>,
    s3_secret_access_key: Inline,
    s3_secret_access_key_file: Option<Spanned<String>>,
    s3_secret_access_key_env: Option<Spanned<String>>,
    cache_dir: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    paths: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    exclude: Vec<String>,
    postgres: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    password: Inline,
    password_file: Option<Spanned<String>>,
    password_env: Option<Spanned<String>>,
    wal_archive: Option<Spanned<bool>>,
    rpo: Option<Spanned<String>>,
    anomaly: Option<Spanned<bool>>,
    anomaly_hold: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: Spanned<String>,
    kind: Spanned<String>,
    source: Option<Spanned<String>>,
    repository: Spanned<String>,
    schedule: Spanned<String>,
    timezone: Option<Spanned<String>>,
    jitter: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    retries: Option<Spanned<i64>>,
    retry_backoff: Option<Spanned<String>>,
    missed: Option<Spanned<String>>,
    policies: Option<Spanned<Vec<String>>>,
    gc: Option<bool>,
    playbook: Option<Spanned<String>>,
    read_data: Option<Spanned<String>>,
    target: Option<Spanned<String>>,
    database: Option<Spanned<String>>,
    mask: Option<Spanned<String>>,
    alert: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlert {
    url: Option<Spanned<String>>,
    url_file: Option<Spanned<String>>,
    url_env: Option<Spanned<String>>,
    format: Option<Spanned<String>>,
    retries: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    address: Option<Spanned<String>>,
    enabled: Option<bool>,
    /// A non-loopback address must be asked for explicitly.
    #[serde(default)]
    allow_remote: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<Spanned<String>>,
    file: Option<Spanned<String>>,
}

// ---- validation -----------------------------------------------------------

/// Parse and validate a configuration's text (`file` names it in errors).
/// Returns every error found, not only the first.
pub fn parse_str(file: &Path, text: &str) -> Result<Config, Vec<ConfigError>> {
    let src = Text { file, text };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let msg = e.message().to_string();
        vec![match e.span() {
            Some(span) => src.at(span, msg),
            None => src.whole(msg),
        }]
    })?;
    let mut v = Validator {
        src: &src,
        errors: Vec::new(),
    };
    let repositories: BTreeMap<String, Repository> = raw
        .repository
        .into_iter()
        .filter_map(|(name, r)| v.repository(&name, r).map(|r| (name, r)))
        .collect();
    let sources: BTreeMap<String, Source> = raw
        .source
        .into_iter()
        .filter_map(|(name, s)| v.source(&name, s).map(|s| (name, s)))
        .collect();
    let alerts: BTreeMap<String, Alert> = raw
        .alert
        .into_iter()
        .filter_map(|(name, a)| v.alert(&name, a).map(|a| (name, a)))
        .collect();
    let mut jobs = Vec::new();
    let mut names = BTreeSet::new();
    for j in raw.job {
        let span = j.get_ref().name.span();
        let name = j.get_ref().name.get_ref().clone();
        if let Some(job) = v.job(j, &repositories, &sources, &alerts) {
            if !names.insert(name.clone()) {
                v.errors.push(src.at(
                    span,
                    format!("job name {name:?} is used twice: job names must be unique (they name metrics and alerts)"),
                ));
            }
            jobs.push(job);
        }
    }
    if repositories.is_empty() && v.errors.is_empty() {
        v.errors.push(
            src.whole("no [repository.NAME] table: the daemon needs a repository to back up to"),
        );
    }
    let listen = v.listen(raw.listen);
    let (log_format, log_file) = match raw.log {
        Some(l) => (l.format, l.file),
        None => (None, None),
    };
    let log_file = log_file.and_then(|f| v.absolute(&f, "log file"));
    let daemon = match raw.daemon {
        None => DaemonSettings::default(),
        Some(d) => DaemonSettings {
            state_dir: d.state_dir.and_then(|s| v.absolute(&s, "state_dir")),
            grace: v.duration(&d.grace, "grace").unwrap_or(DEFAULT_GRACE),
        },
    };
    let log_format = match log_format {
        None => LogFormat::Text,
        Some(f) => match f.get_ref().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                v.errors.push(src.at(
                    f.span(),
                    format!("unknown log format {other:?}: expected \"text\" or \"json\""),
                ));
                LogFormat::Text
            }
        },
    };
    if !v.errors.is_empty() {
        v.errors.sort_by_key(|e| (e.line, e.column));
        return Err(v.errors);
    }
    Ok(Config {
        file: file.to_path_buf(),
        repositories,
        sources,
        jobs,
        alerts,
        listen,
        log_format,
        log_file,
        daemon,
    })
}

struct Validator<'a> {
    src: &'a Text<'a>,
    errors: Vec<ConfigError>,
}

impl Validator<'_> {
    fn err(&mut self, span: std::ops::Range<usize>, msg: impl Into<String>) {
        let e = self.src.at(span, msg);
        self.errors.push(e);
    }

    /// A literal secret is refused; `_file` and `_env` forms are read.
    fn secret(
        &mut self,
        what: &str,
        inline: &Inline,
        file: &Option<Spanned<String>>,
        env: &Option<Spanned<String>>,
    ) -> Option<Secret> {
        if let Some(v) = inline {
            self.err(
                v.span(),
                format!("{what} is written in the file: secrets never go in holdfast.toml; use {what}_file = \"/path\" (a file readable only by the daemon) or {what}_env = \"VARIABLE\""),
            );
        }
        match (file, env) {
            (Some(f), Some(e)) => {
                self.err(
                    e.span(),
                    format!("both {what}_file and {what}_env are set: give one"),
                );
                let _ = f;
                None
            }
            (Some(f), None) => {
                if f.get_ref().is_empty() {
                    self.err(f.span(), format!("{what}_file is empty: give a path"));
                }
                Some(Secret::File(PathBuf::from(f.get_ref())))
            }
            (None, Some(e)) => {
                let n = e.get_ref();
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    self.err(
                        e.span(),
                        format!("{what}_env = {n:?}: expected the name of an environment variable (letters, digits, _), not its value"),
                    );
                }
                Some(Secret::Env(n.clone()))
            }
            (None, None) => None,
        }
    }

    /// An absolute path (a daemon's working directory is not the user's).
    fn absolute(&mut self, s: &Spanned<String>, what: &str) -> Option<PathBuf> {
        if !s.get_ref().starts_with('/') {
            self.err(
                s.span(),
                format!("{what} {:?}: give an absolute path (a daemon's working directory is not yours)", s.get_ref()),
            );
            return None;
        }
        Some(PathBuf::from(s.get_ref()))
    }

    fn duration(&mut self, s: &Option<Spanned<String>>, what: &str) -> Option<Seconds> {
        let s = s.as_ref()?;
        match Seconds::parse(s.get_ref()) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(s.span(), format!("{what}: bad duration: {e}"));
                None
            }
        }
    }

    fn count(&mut self, v: &Option<Spanned<i64>>, what: &str, max: i64) -> Option<u32> {
        let v = v.as_ref()?;
        match u32::try_from(*v.get_ref()) {
            Ok(n) if i64::from(n) <= max => Some(n),
            _ => {
                self.err(
                    v.span(),
                    format!("{what} = {}: expected a count from 0 to {max}", v.get_ref()),
                );
                None
            }
        }
    }

    fn name(&mut self, kind: &str, name: &str, span: std::ops::Range<usize>) {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            self.err(
                span,
                format!("{kind} name {name:?}: expected letters, digits, '-', '_' or '.' (names appear in metrics and snapshots)"),
            );
        }
    }

    fn repository(&mut self, name: &str, r: Spanned<RawRepository>) -> Option<Repository> {
        let span = r.span();
        let r = r.into_inner();
        self.name("repository", name, span.clone());
        let url = r.url.get_ref().clone();
        if url.is_empty() {
            self.err(
                r.url.span(),
                "url is empty: give a directory path or s3://bucket/prefix",
            );
        } else if url.contains("://") && !url.starts_with("s3://") {
            self.err(
                r.url.span(),
                format!("url {url:?}: expected a local directory path or s3://bucket/prefix"),
            );
        } else if !url.contains("://") && !url.starts_with('/') {
            self.err(
                r.url.span(),
                format!("url {url:?} is a relative path: give an absolute path (a daemon's working directory is not yours)"),
            );
        }
        let password = self.secret("password", &r.password, &r.password_file, &r.password_env);
        let key_file = r.key_file.as_ref().map(|k| PathBuf::from(k.get_ref()));
        if password.is_none() && key_file.is_none() && r.password.is_none() {
            self.err(
                span.clone(),
                format!("repository {name:?} has no password_file, password_env or key_file: the daemon cannot prompt for a password"),
            );
        }
        let s3_access_key_id = self.secret(
            "s3_access_key_id",
            &r.s3_access_key_id,
            &r.s3_access_key_id_file,
            &r.s3_access_key_id_env,
        );
        let s3_secret_access_key = self.secret(
            "s3_secret_access_key",
            &r.s3_secret_access_key,
            &r.s3_secret_access_key_file,
            &r.s3_secret_access_key_env,
        );
        if s3_access_key_id.is_some() != s3_secret_access_key.is_some() {
            self.err(
                span,
                "give both s3_access_key_id_* and s3_secret_access_key_*, or neither (then the standard AWS environment is used)",
            );
        }
        Some(Repository {
            name: name.to_string(),
            url,
            password,
            key_file,
            s3_endpoint: r.s3_endpoint,
            s3_region: r.s3_region,
            s3_path_style: r.s3_path_style,
            s3_allow_http: r.s3_allow_http,
            s3_access_key_id,
            s3_secret_access_key,
            cache_dir: r.cache_dir.map(PathBuf::from),
        })
    }

    fn source(&mut self, name: &str, s: Spanned<RawSource>) -> Option<Source> {
        let span = s.span();
        let s = s.into_inner();
        self.name("source", name, span.clone());
        let rpo = self.duration(&s.rpo, "rpo");
        if let (Some(r), Some(raw)) = (rpo, &s.rpo) {
            if r.0 < 60 {
                self.err(
                    raw.span(),
                    format!("rpo {r} is shorter than a minute: expected e.g. \"26h\""),
                );
            }
        }
        let kind = match (&s.paths, &s.postgres) {
            (Some(p), None) => {
                for extra in [&s.mode, &s.password_file, &s.password_env]
                    .into_iter()
                    .flatten()
                {
                    self.err(
                        extra.span(),
                        "this key is for PostgreSQL sources (postgres = \"...\"), not paths",
                    );
                }
                if p.get_ref().is_empty() {
                    self.err(p.span(), "paths is empty: give one or more absolute paths");
                }
                for path in p.get_ref() {
                    if !path.starts_with('/') {
                        self.err(
                            p.span(),
                            format!("path {path:?} is relative: give absolute paths (a daemon's working directory is not yours)"),
                        );
                    }
                }
                SourceKind::Paths {
                    paths: p.get_ref().iter().map(PathBuf::from).collect(),
                    exclude: s.exclude.clone(),
                }
            }
            (None, Some(dsn)) => {
                let mode = match s.mode.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
                    Some(("logical", _)) => PgMode::Logical,
                    Some(("physical", _)) => PgMode::Physical,
                    Some((other, sp)) => {
                        self.err(sp, format!("unknown mode {other:?}: expected \"logical\" (pg_dump-style, one database) or \"physical\" (base backup of the cluster)"));
                        PgMode::Logical
                    }
                    None => {
                        self.err(
                            span.clone(),
                            "a PostgreSQL source needs mode = \"logical\" or \"physical\"",
                        );
                        PgMode::Logical
                    }
                };
                if dsn_has_password(dsn.get_ref()) {
                    self.err(
                        dsn.span(),
                        "the connection string holds a password: secrets never go in holdfast.toml; use password_file or password_env (or a .pgpass file)",
                    );
                }
                let wal_archive = s.wal_archive.as_ref().is_some_and(|w| *w.get_ref());
                if let (Some(w), PgMode::Logical) = (&s.wal_archive, mode) {
                    if *w.get_ref() {
                        self.err(
                            w.span(),
                            "wal_archive is for mode = \"physical\": a logical dump has no WAL",
                        );
                    }
                }
                let password =
                    self.secret("password", &s.password, &s.password_file, &s.password_env);
                SourceKind::Postgres {
                    mode,
                    dsn: dsn.get_ref().clone(),
                    password,
                    wal_archive,
                }
            }
            (Some(p), Some(_)) => {
                self.err(
                    p.span(),
                    "a source has paths or postgres, not both: make two sources",
                );
                return None;
            }
            (None, None) => {
                self.err(
                    span,
                    format!("source {name:?} has neither paths = [...] nor postgres = \"connection string\""),
                );
                return None;
            }
        };
        if let Some(p) = &s.password {
            if matches!(kind, SourceKind::Paths { .. }) {
                self.err(
                    p.span(),
                    "password is written in the file: secrets never go in holdfast.toml",
                );
            }
        }
        let anomaly = match &s.anomaly {
            Some(a) => *a.get_ref(),
            None => matches!(kind, SourceKind::Paths { .. }),
        };
        let anomaly_hold = s.anomaly_hold.as_ref().is_some_and(|h| *h.get_ref());
        if let Some(h) = &s.anomaly_hold {
            if *h.get_ref() && !anomaly {
                self.err(
                    h.span(),
                    "anomaly_hold = true needs anomaly = true: a hold is placed when an anomaly is detected",
                );
            }
        }
        Some(Source {
            name: name.to_string(),
            kind,
            rpo,
            anomaly,
            anomaly_hold,
        })
    }

    fn alert(&mut self, name: &str, a: Spanned<RawAlert>) -> Option<Alert> {
        let span = a.span();
        let a = a.into_inner();
        self.name("alert", name, span.clone());
        if let Some(u) = &a.url {
            if !(u.get_ref().starts_with("http://") || u.get_ref().starts_with("https://")) {
                self.err(
                    u.span(),
                    format!(
                        "url {:?}: expected an http:// or https:// webhook URL",
                        u.get_ref()
                    ),
                );
            }
        }
        let from = self.secret("url", &None, &a.url_file, &a.url_env);
        let url = match (&a.url, from) {
            (Some(u), None) => WebhookUrl::Inline(u.get_ref().clone()),
            (None, Some(s)) => WebhookUrl::Secret(s),
            (Some(u), Some(_)) => {
                self.err(u.span(), "give url, url_file or url_env, not several");
                return None;
            }
            (None, None) => {
                self.err(
                    span,
                    format!("alert {name:?} has no url (or url_file / url_env)"),
                );
                return None;
            }
        };
        let format = match a.format.as_ref().map(|f| (f.get_ref().as_str(), f.span())) {
            None | Some(("json", _)) => AlertFormat::Json,
            Some(("slack", _)) => AlertFormat::Slack,
            Some((other, sp)) => {
                self.err(
                    sp,
                    format!("unknown alert format {other:?}: expected \"json\" or \"slack\""),
                );
                AlertFormat::Json
            }
        };
        let retries = self.count(&a.retries, "retries", 20).unwrap_or(3);
        Some(Alert {
            name: name.to_string(),
            url,
            format,
            retries,
        })
    }

    fn job(
        &mut self,
        j: Spanned<RawJob>,
        repositories: &BTreeMap<String, Repository>,
        sources: &BTreeMap<String, Source>,
        alerts: &BTreeMap<String, Alert>,
    ) -> Option<Job> {
        let table = j.span();
        let j = j.into_inner();
        let before = self.errors.len();
        let name = j.name.get_ref().clone();
        self.name("job", &name, j.name.span());
        let repo = j.repository.get_ref().clone();
        if !repositories.contains_key(&repo) {
            self.err(
                j.repository.span(),
                format!(
                    "no repository {repo:?}: defined are {}",
                    list(repositories.keys())
                ),
            );
        }
        let tz = match &j.timezone {
            None => Tz::UTC,
            Some(t) => match Tz::from_str(t.get_ref()) {
                Ok(tz) => tz,
                Err(_) => {
                    self.err(
                        t.span(),
                        format!("unknown time zone {:?}: expected an IANA name such as \"UTC\" or \"Europe/Berlin\"", t.get_ref()),
                    );
                    Tz::UTC
                }
            },
        };
        let schedule = match Cron::parse(j.schedule.get_ref(), tz) {
            Ok(c) => Some(c),
            Err(e) => {
                self.err(j.schedule.span(), e);
                None
            }
        };
        let jitter = self.duration(&j.jitter, "jitter").unwrap_or_default();
        let timeout = self.duration(&j.timeout, "timeout");
        if let (Some(t), Some(raw)) = (timeout, &j.timeout) {
            if t.0 == 0 {
                self.err(raw.span(), "timeout is zero: leave it out for no timeout");
            }
        }
        let retries = self.count(&j.retries, "retries", 100).unwrap_or(0);
        let retry_backoff = self
            .duration(&j.retry_backoff, "retry_backoff")
            .unwrap_or(Seconds(60));
        let missed = match j.missed.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
            None | Some(("skip", _)) => Missed::Skip,
            Some(("run-once", _)) => Missed::RunOnce,
            Some((other, sp)) => {
                self.err(
                    sp,
                    format!(
                        "unknown missed-run policy {other:?}: expected \"skip\" or \"run-once\""
                    ),
                );
                Missed::Skip
            }
        };
        let kind_name = j.kind.get_ref().as_str();
        // Keys that belong to another kind of job are mistakes, not noise.
        let foreign =
            |this: &mut Self, key: &str, present: Option<std::ops::Range<usize>>, owner: &str| {
                if let Some(sp) = present {
                    if kind_name != owner {
                        this.err(
                            sp,
                            format!("{key} is for kind = \"{owner}\" jobs, not \"{kind_name}\""),
                        );
                    }
                }
            };
        if kind_name != "staging-refresh" {
            foreign(
                self,
                "source",
                j.source.as_ref().map(|s| s.span()),
                "backup",
            );
        }
        for (key, span) in [
            ("target", j.target.as_ref().map(|s| s.span())),
            ("database", j.database.as_ref().map(|s| s.span())),
            ("mask", j.mask.as_ref().map(|s| s.span())),
        ] {
            foreign(self, key, span, "staging-refresh");
        }
        foreign(
            self,
            "policies",
            j.policies.as_ref().map(|s| s.span()),
            "retention",
        );
        foreign(
            self,
            "playbook",
            j.playbook.as_ref().map(|s| s.span()),
            "drill",
        );
        foreign(
            self,
            "read_data",
            j.read_data.as_ref().map(|s| s.span()),
            "check",
        );
        let kind = match kind_name {
            "backup" => match &j.source {
                Some(s) if sources.contains_key(s.get_ref()) => Some(JobKind::Backup {
                    source: s.get_ref().clone(),
                }),
                Some(s) => {
                    self.err(
                        s.span(),
                        format!(
                            "no source {:?}: defined are {}",
                            s.get_ref(),
                            list(sources.keys())
                        ),
                    );
                    None
                }
                None => {
                    self.err(
                        table.clone(),
                        format!("backup job {name:?} has no source = \"...\""),
                    );
                    None
                }
            },
            "retention" => match &j.policies {
                Some(p) if !p.get_ref().is_empty() => Some(JobKind::Retention {
                    policies: p.get_ref().iter().map(PathBuf::from).collect(),
                    gc: j.gc.unwrap_or(true),
                }),
                Some(p) => {
                    self.err(
                        p.span(),
                        "policies is empty: give the policy files to apply",
                    );
                    None
                }
                None => {
                    self.err(table.clone(), format!("retention job {name:?} has no policies = [\"/etc/holdfast/policies/....toml\"]"));
                    None
                }
            },
            "drill" => match &j.playbook {
                Some(p) => Some(JobKind::Drill {
                    playbook: PathBuf::from(p.get_ref()),
                }),
                None => {
                    self.err(
                        table.clone(),
                        format!("drill job {name:?} has no playbook = \"...\""),
                    );
                    None
                }
            },
            "check" => {
                let pct = match &j.read_data {
                    None => Some(0),
                    Some(r) => match parse_percent(r.get_ref()) {
                        Some(p) => Some(p),
                        None => {
                            self.err(r.span(), format!("read_data = {:?}: expected a percentage of the packs to read, e.g. \"5%\" (\"100%\" reads everything)", r.get_ref()));
                            None
                        }
                    },
                };
                pct.map(|read_data_percent| JobKind::Check { read_data_percent })
            }
            "staging-refresh" => {
                let logical = |this: &mut Self,
                               key: &str,
                               v: &Option<Spanned<String>>,
                               need_logical: bool|
                 -> Option<String> {
                    let Some(v) = v else {
                        this.err(table.clone(), format!("staging-refresh job {name:?} has no {key} = \"...\" (a PostgreSQL source)"));
                        return None;
                    };
                    match sources.get(v.get_ref()).map(|s| &s.kind) {
                        Some(SourceKind::Postgres { mode, .. })
                            if !need_logical || *mode == PgMode::Logical =>
                        {
                            Some(v.get_ref().clone())
                        }
                        Some(_) => {
                            this.err(
                                v.span(),
                                format!(
                                    "{key} = {:?}: expected a PostgreSQL source{}",
                                    v.get_ref(),
                                    if need_logical {
                                        " of mode logical (its snapshots are restored)"
                                    } else {
                                        " (the staging server)"
                                    }
                                ),
                            );
                            None
                        }
                        None => {
                            this.err(
                                v.span(),
                                format!(
                                    "no source {:?}: defined are {}",
                                    v.get_ref(),
                                    list(sources.keys())
                                ),
                            );
                            None
                        }
                    }
                };
                let source = logical(self, "source", &j.source, true);
                let target = logical(self, "target", &j.target, false);
                let database = match &j.database {
                    Some(d) if !d.get_ref().trim().is_empty() => Some(d.get_ref().clone()),
                    Some(d) => {
                        self.err(
                            d.span(),
                            "database is empty: name the staging database to (re)create",
                        );
                        None
                    }
                    None => {
                        self.err(table.clone(), format!("staging-refresh job {name:?} has no database = \"...\" (the staging database to create or replace)"));
                        None
                    }
                };
                let mask = match &j.mask {
                    Some(m) => Some(PathBuf::from(m.get_ref())),
                    None => {
                        self.err(table.clone(), format!("staging-refresh job {name:?} has no mask = \"/etc/holdfast/masking/....toml\": a staging copy is always masked"));
                        None
                    }
                };
                match (source, target, database, mask) {
                    (Some(source), Some(target), Some(database), Some(mask)) => {
                        Some(JobKind::StagingRefresh {
                            source,
                            target,
                            database,
                            mask,
                        })
                    }
                    _ => None,
                }
            }
            other => {
                self.err(
                    j.kind.span(),
                    format!("unknown job kind {other:?}: expected \"backup\", \"retention\", \"drill\", \"check\" or \"staging-refresh\""),
                );
                None
            }
        };
        let mut alert = Vec::new();
        for a in j.alert.unwrap_or_default() {
            if !alerts.contains_key(a.get_ref()) {
                self.err(
                    a.span(),
                    format!(
                        "no alert {:?}: defined are {}",
                        a.get_ref(),
                        list(alerts.keys())
                    ),
                );
            }
            alert.push(a.into_inner());
        }
        if self.errors.len() > before {
            return None;
        }
        Some(Job {
            name,
            line: self.src.at(table, "").line,
            kind: kind?,
            repository: repo,
            schedule: schedule?,
            jitter,
            timeout,
            retries,
            retry_backoff,
            missed,
            alert,
        })
    }

    fn listen(&mut self, l: Option<Spanned<RawListen>>) -> Option<Listen> {
        let Some(l) = l else {
            return Some(Listen {
                address: DEFAULT_LISTEN.parse().ok()?,
            });
        };
        let l = l.into_inner();
        if l.enabled == Some(false) {
            return None;
        }
        let address = match &l.address {
            None => DEFAULT_LISTEN.parse().ok()?,
            Some(a) => match a.get_ref().parse::<SocketAddr>() {
                Ok(addr) => {
                    if !addr.ip().is_loopback() && !l.allow_remote {
                        self.err(
                            a.span(),
                            format!("address {addr} is reachable from other hosts: metrics and status tell what is backed up; bind to 127.0.0.1 (and scrape through a proxy), or set allow_remote = true"),
                        );
                    }
                    addr
                }
                Err(_) => {
                    self.err(
                        a.span(),
                        format!(
                            "address {:?}: expected IP:PORT, e.g. \"127.0.0.1:9187\"",
                            a.get_ref()
                        ),
                    );
                    return None;
                }
            },
        };
        Some(Listen { address })
    }
}

fn list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<String> = names.map(|n| format!("{n:?}")).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn parse_percent(s: &str) -> Option<u8> {
    let n: u8 = s.trim().strip_suffix('%')?.trim().parse().ok()?;
    (n <= 100).then_some(n)
}

/// Whether a libpq connection string carries a password: URI userinfo
/// (`postgresql://user:secret@host`) or a `password=` keyword.
fn dsn_has_password(dsn: &str) -> bool {
    let d = dsn.trim();
    if let Some(rest) = d
        .strip_prefix("postgresql://")
        .or_else(|| d.strip_prefix("postgres://"))
    {
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        if authority
            .rsplit_once('@')
            .is_some_and(|(userinfo, _)| userinfo.contains(':'))
        {
            return true;
        }
        return rest
            .split_once('?')
            .is_some_and(|(_, q)| q.split('&').any(|kv| kv.starts_with("password=")));
    }
    d.split_whitespace()
        .any(|kv| kv.trim_start().to_ascii_lowercase().starts_with("password"))
}

/// Read, parse and validate a configuration file.
pub fn load_file(path: &Path) -> Result<Config, Vec<ConfigError>> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_str(path, &text),
        Err(e) => Err(vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
        }]),
    }
}
