//! Policy files: parsing, and validation whose every error names the file,
//! line and column and says what was expected.
//!
//! ```toml
//! [[policy]]
//! name = "documents"
//! source = "docs"                 # a source name or glob
//! kind = "files"                  # or a list; default: every kind
//! timezone = "UTC"                # required: days and weeks are counted here
//! keep = { last = 2, daily = 7, weekly = 4, monthly = 12 }
//! floor = "3d"                    # nothing younger is purged
//! max_age = "6y"                  # everything older is purged (holds excepted)
//! archive_after = "90d"           # kept snapshots older than this go cold
//!
//! [holds]                         # settings for legal holds (optional)
//! require_signed_release = true   # a release must carry an electronic signature
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::TimeZone;
use chrono_tz::Tz;
use serde::Deserialize;
use toml::Spanned;

use crate::duration::Span;
use crate::glob;

/// The snapshot kinds a policy can select.
pub const KINDS: [&str; 4] = ["files", "postgres-logical", "postgres-physical", "wal"];

/// A validation or syntax error in a policy file, at a line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub file: PathBuf,
    /// 1-based; 0 when the error concerns the whole file.
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

impl std::error::Error for PolicyError {}

/// Which snapshots a policy governs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// Source name or glob (`*`, `?`).
    pub source: String,
    /// Kinds selected; empty means every kind.
    pub kinds: Vec<String>,
    /// Tags a snapshot must all carry.
    pub tags: Vec<String>,
}

impl Selector {
    /// Whether a snapshot of `source`, `kind` and `tags` is selected.
    pub fn selects(&self, source: &str, kind: &str, tags: &[String]) -> bool {
        glob::matches(&self.source, source)
            && (self.kinds.is_empty() || self.kinds.iter().any(|k| k == kind))
            && self.tags.iter().all(|t| tags.contains(t))
    }

    /// Whether some snapshot could be selected by both.
    fn may_overlap(&self, other: &Selector) -> bool {
        glob::may_overlap(&self.source, &other.source)
            && (self.kinds.is_empty()
                || other.kinds.is_empty()
                || self.kinds.iter().any(|k| other.kinds.contains(k)))
    }
}

/// Keep rules, with restic's meaning (see README "Retention"). `None` is
/// "not set"; `Some(u32::MAX)` is unlimited (`-1` in the file, as in restic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Keep {
    pub last: Option<u32>,
    pub hourly: Option<u32>,
    pub daily: Option<u32>,
    pub weekly: Option<u32>,
    pub monthly: Option<u32>,
    pub yearly: Option<u32>,
    pub within: Option<Span>,
    pub within_hourly: Option<Span>,
    pub within_daily: Option<Span>,
    pub within_weekly: Option<Span>,
    pub within_monthly: Option<Span>,
    pub within_yearly: Option<Span>,
}

impl Keep {
    fn is_empty(&self) -> bool {
        *self == Keep::default()
    }
}

/// One validated policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub name: String,
    pub file: PathBuf,
    pub line: usize,
    pub selector: Selector,
    pub timezone: Tz,
    pub keep: Keep,
    pub floor: Option<Span>,
    pub max_age: Option<Span>,
    pub archive_after: Option<Span>,
    /// Storage class of the cold tier (default `DEEP_ARCHIVE`).
    pub archive_class: String,
}

impl Policy {
    /// Same decisions for the same snapshots (selection aside).
    fn same_rules(&self, o: &Policy) -> bool {
        self.timezone == o.timezone
            && self.keep == o.keep
            && self.floor == o.floor
            && self.max_age == o.max_age
            && self.archive_after == o.archive_after
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    policy: Vec<Spanned<RawPolicy>>,
    holds: Option<RawHolds>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHolds {
    #[serde(default)]
    require_signed_release: bool,
}

/// Settings of policy files beside the policies (the `[holds]` table).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settings {
    /// `[holds] require_signed_release`: releasing a legal hold needs an
    /// electronic signature of a registered signer (21 CFR 11.50).
    pub require_signed_release: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    name: Spanned<String>,
    source: Spanned<String>,
    kind: Option<Spanned<OneOrMany>>,
    #[serde(default)]
    tags: Vec<String>,
    timezone: Spanned<String>,
    keep: Option<Spanned<RawKeep>>,
    floor: Option<Spanned<String>>,
    max_age: Option<Spanned<String>>,
    archive_after: Option<Spanned<String>>,
    archive_class: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawKeep {
    last: Option<Spanned<i64>>,
    hourly: Option<Spanned<i64>>,
    daily: Option<Spanned<i64>>,
    weekly: Option<Spanned<i64>>,
    monthly: Option<Spanned<i64>>,
    yearly: Option<Spanned<i64>>,
    within: Option<Spanned<String>>,
    within_hourly: Option<Spanned<String>>,
    within_daily: Option<Spanned<String>>,
    within_weekly: Option<Spanned<String>>,
    within_monthly: Option<Spanned<String>>,
    within_yearly: Option<Spanned<String>>,
}

/// Maps byte offsets of one file to lines and columns.
struct Source<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn at(&self, span: Range<usize>, message: impl Into<String>) -> PolicyError {
        let start = span.start.min(self.text.len());
        let before = &self.text[..start];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        PolicyError {
            file: self.file.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }

    fn span<T>(
        &self,
        s: &Spanned<String>,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, PolicyError> {
        parse(s.get_ref()).map_err(|m| self.at(s.span(), m))
    }
}

/// Parse and validate one policy file's text (`file` names it in errors).
/// Returns every error found, not only the first.
pub fn parse_str(file: &Path, text: &str) -> Result<Vec<Policy>, Vec<PolicyError>> {
    let src = Source { file, text };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let msg = e.message().to_string();
        vec![match e.span() {
            Some(span) => src.at(span, msg),
            None => PolicyError {
                file: file.to_path_buf(),
                line: 0,
                column: 0,
                message: msg,
            },
        }]
    })?;
    if raw.policy.is_empty() && raw.holds.is_none() {
        return Err(vec![PolicyError {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            message: "no [[policy]] table: a policy file holds one or more [[policy]] tables (or a [holds] table)"
                .into(),
        }]);
    }
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for p in raw.policy {
        match policy(&src, p) {
            Ok(p) => out.push(p),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn policy(src: &Source<'_>, p: Spanned<RawPolicy>) -> Result<Policy, Vec<PolicyError>> {
    let table = p.span();
    let p = p.into_inner();
    let mut errors = Vec::new();
    let mut dur = |s: &Option<Spanned<String>>, what: &str| -> Option<Span> {
        let s = s.as_ref()?;
        match src.span(s, |v| {
            Span::parse(v).map_err(|e| format!("{what}: bad duration: {e}"))
        }) {
            Ok(v) => Some(v),
            Err(e) => {
                errors.push(e);
                None
            }
        }
    };
    let floor = dur(&p.floor, "floor");
    let max_age = dur(&p.max_age, "max_age");
    let archive_after = dur(&p.archive_after, "archive_after");
    let raw_keep = p.keep.as_ref().map(|k| k.get_ref());
    let keep_span = p.keep.as_ref().map(|k| k.span()).unwrap_or(table.clone());
    let mut keep = Keep::default();
    if let Some(k) = raw_keep {
        keep.within = dur(&k.within, "keep.within");
        keep.within_hourly = dur(&k.within_hourly, "keep.within_hourly");
        keep.within_daily = dur(&k.within_daily, "keep.within_daily");
        keep.within_weekly = dur(&k.within_weekly, "keep.within_weekly");
        keep.within_monthly = dur(&k.within_monthly, "keep.within_monthly");
        keep.within_yearly = dur(&k.within_yearly, "keep.within_yearly");
        let mut count = |v: &Option<Spanned<i64>>, what: &str| -> Option<u32> {
            let v = v.as_ref()?;
            match *v.get_ref() {
                -1 => Some(u32::MAX),
                n if (0..=1_000_000).contains(&n) => Some(n as u32),
                n => {
                    errors.push(src.at(
                        v.span(),
                        format!("keep.{what} = {n}: expected a count from 0 to 1000000, or -1 for unlimited"),
                    ));
                    None
                }
            }
        };
        keep.last = count(&k.last, "last");
        keep.hourly = count(&k.hourly, "hourly");
        keep.daily = count(&k.daily, "daily");
        keep.weekly = count(&k.weekly, "weekly");
        keep.monthly = count(&k.monthly, "monthly");
        keep.yearly = count(&k.yearly, "yearly");
    }
    let timezone = match Tz::from_str(p.timezone.get_ref()) {
        Ok(tz) => Some(tz),
        Err(_) => {
            errors.push(src.at(
                p.timezone.span(),
                format!(
                    "unknown time zone {:?}: expected an IANA name such as \"UTC\" or \"Europe/Berlin\"",
                    p.timezone.get_ref()
                ),
            ));
            None
        }
    };
    let kinds = match &p.kind {
        None => Vec::new(),
        Some(k) => {
            let list = match k.get_ref() {
                OneOrMany::One(s) => vec![s.clone()],
                OneOrMany::Many(v) => v.clone(),
            };
            for kind in &list {
                if !KINDS.contains(&kind.as_str()) {
                    errors.push(src.at(
                        k.span(),
                        format!(
                            "unknown kind {kind:?}: expected one of {}",
                            KINDS.join(", ")
                        ),
                    ));
                }
            }
            list
        }
    };
    if p.name.get_ref().trim().is_empty() {
        errors.push(src.at(p.name.span(), "name is empty: give the policy a name"));
    }
    if p.source.get_ref().is_empty() {
        errors.push(src.at(
            p.source.span(),
            "source is empty: give a source name or glob (\"*\" for every source)",
        ));
    }
    if keep.is_empty() && errors.is_empty() {
        errors.push(src.at(
            keep_span.clone(),
            "no keep rule: this policy would purge every snapshot past its floor; add keep = { ... } (within = \"6y\" keeps everything for six years)",
        ));
    }
    // Measured back from a fixed instant: calendar units make "longer"
    // depend on the date only at the edges (1mo vs 30d).
    let reference = chrono::Utc.with_ymd_and_hms(2001, 3, 1, 0, 0, 0).single();
    if let (Some(f), Some(m), Some(at)) = (floor, max_age, reference) {
        if f.longer_than(&m, &at) {
            let s = p.floor.as_ref().map(|s| s.span()).unwrap_or(table.clone());
            errors.push(src.at(
                s,
                format!("floor ({f}) is longer than max_age ({m}): a snapshot past its maximum age would still be under the floor; make the floor shorter or the maximum age longer"),
            ));
        }
    }
    if let (Some(a), Some(m), Some(at)) = (archive_after, max_age, reference) {
        if !m.longer_than(&a, &at) {
            let s = p
                .archive_after
                .as_ref()
                .map(|s| s.span())
                .unwrap_or(table.clone());
            errors.push(src.at(
                s,
                format!("archive_after ({a}) is not shorter than max_age ({m}): snapshots would be purged before they are archived"),
            ));
        }
    }
    let archive_class = p
        .archive_class
        .as_ref()
        .map(|c| c.get_ref().clone())
        .unwrap_or_else(|| "DEEP_ARCHIVE".into());
    if let Some(c) = &p.archive_class {
        if ![
            "GLACIER",
            "DEEP_ARCHIVE",
            "GLACIER_IR",
            "STANDARD_IA",
            "ONEZONE_IA",
        ]
        .contains(&c.get_ref().as_str())
        {
            errors.push(src.at(
                c.span(),
                format!("unknown archive_class {:?}: expected GLACIER, DEEP_ARCHIVE, GLACIER_IR, STANDARD_IA or ONEZONE_IA", c.get_ref()),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let line = src.at(table, "").line;
    Ok(Policy {
        name: p.name.into_inner(),
        file: src.file.to_path_buf(),
        line,
        selector: Selector {
            source: p.source.into_inner(),
            kinds,
            tags: p.tags,
        },
        timezone: timezone.unwrap_or(Tz::UTC),
        keep,
        floor,
        max_age,
        archive_after,
        archive_class,
    })
}

/// Read, parse and validate policy files, then check them together: names
/// are unique, and two policies that may select the same snapshot decide
/// it the same way. Returns every error found.
pub fn load_files(paths: &[PathBuf]) -> Result<Vec<Policy>, Vec<PolicyError>> {
    let mut all = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        match std::fs::read_to_string(path) {
            Ok(text) => match parse_str(path, &text) {
                Ok(mut p) => all.append(&mut p),
                Err(mut e) => errors.append(&mut e),
            },
            Err(e) => errors.push(PolicyError {
                file: path.clone(),
                line: 0,
                column: 0,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    errors.extend(cross_check(&all));
    if errors.is_empty() {
        Ok(all)
    } else {
        Err(errors)
    }
}

/// The settings of policy files (see [`Settings`]): a setting is on when
/// any file turns it on. Syntax errors are reported as [`load_files`]
/// reports them.
pub fn load_settings(paths: &[PathBuf]) -> Result<Settings, Vec<PolicyError>> {
    let mut settings = Settings::default();
    let mut errors = Vec::new();
    for path in paths {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                errors.push(PolicyError {
                    file: path.clone(),
                    line: 0,
                    column: 0,
                    message: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        match parse_settings(path, &text) {
            Ok(s) => settings.require_signed_release |= s.require_signed_release,
            Err(mut e) => errors.append(&mut e),
        }
    }
    if errors.is_empty() {
        Ok(settings)
    } else {
        Err(errors)
    }
}

/// The settings of one policy file's text, after validating the whole
/// file as [`parse_str`] does.
pub fn parse_settings(file: &Path, text: &str) -> Result<Settings, Vec<PolicyError>> {
    parse_str(file, text)?;
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        vec![PolicyError {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            message: e.message().to_string(),
        }]
    })?;
    let holds = raw.holds.unwrap_or_default();
    Ok(Settings {
        require_signed_release: holds.require_signed_release,
    })
}

/// Errors between policies: duplicate names, conflicting overlaps.
pub(crate) fn cross_check(all: &[Policy]) -> Vec<PolicyError> {
    let mut errors = Vec::new();
    let mut seen: BTreeMap<&str, &Policy> = BTreeMap::new();
    for p in all {
        if let Some(first) = seen.insert(&p.name, p) {
            errors.push(PolicyError {
                file: p.file.clone(),
                line: p.line,
                column: 1,
                message: format!(
                    "a second policy named {:?} (the first is at {}:{})",
                    p.name,
                    first.file.display(),
                    first.line
                ),
            });
        }
    }
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            if a.selector.may_overlap(&b.selector) && !a.same_rules(b) {
                errors.push(PolicyError {
                    file: b.file.clone(),
                    line: b.line,
                    column: 1,
                    message: format!(
                        "policy {:?} (source {:?}) and policy {:?} at {}:{} (source {:?}) can select the same snapshots and decide them differently; narrow their source, kind or tags so each snapshot has one policy",
                        b.name,
                        b.selector.source,
                        a.name,
                        a.file.display(),
                        a.line,
                        a.selector.source
                    ),
                });
            }
        }
    }
    errors
}
