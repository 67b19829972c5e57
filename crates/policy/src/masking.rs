//! Masking files (`policies/masking/*.toml`): what a masked restore for
//! staging does to each table and column, and to restored files.
//!
//! ```toml
//! key_file = "/etc/holdfast/masking.key"   # secret of the keyed hash, >= 32 bytes
//! unlisted_tables = "refuse"               # or "keep"; default refuse
//!
//! [tables."public.patient"]
//! default = "keep"                         # optional: unlisted columns are kept
//! [tables."public.patient".columns]
//! id         = "hash"                      # keyed hash: deterministic, joins still match
//! mrn        = { rule = "fake", kind = "mrn" }
//! family     = { rule = "fake", kind = "last_name" }
//! note       = "null"
//! title      = { rule = "fixed", value = "[redacted]" }
//! birth_date = { rule = "date_shift", by = "id", max_days = 180 }
//! gender     = "keep"
//!
//! [[files]]
//! pattern = "/srv/documents/**/*.pdf"      # the glob syntax of erasure paths
//! action = "replace"                       # or "drop"
//! ```
//!
//! The file is fail-closed by design: a table the file does not name is
//! refused unless `unlisted_tables = "keep"`, and a column of a named table
//! that the file does not name is refused unless the table says
//! `default = "keep"`, so a new PHI column cannot slip through a staging
//! refresh unmasked. Those checks need the restored schema and are made by
//! [`MaskingFile::coverage`]; this module parses and validates the file
//! itself. Every error names the file and line and says what is wrong;
//! unknown keys are errors.
//!
//! The fake generators ([`fake`]) are pure functions of a keyed digest of
//! the original value (the caller computes it), so the same source value
//! always maps to the same fake and joins on a faked column still match.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::file::PolicyError;

/// The smallest accepted hash key, in bytes.
pub const MIN_KEY_BYTES: usize = 32;
/// The schema of a table named without one.
pub const DEFAULT_SCHEMA: &str = "public";

/// What a masked restore does to one column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// Left as restored.
    Keep,
    /// Set to NULL.
    Null,
    /// Set to this value (the column type's input syntax).
    Fixed(String),
    /// A keyed hash of the value (HMAC-SHA256, shaped to the column type).
    Hash,
    /// A fake value of the same shape, derived from the keyed hash.
    Fake(FakeKind),
    /// Moved by a per-subject offset of 1 to `max_days` days, earlier or
    /// later (never 0), the same for every row of the subject, so
    /// intervals between one subject's dates are preserved.
    DateShift { by: String, max_days: u32 },
}

impl Rule {
    /// The rule's name as the file writes it.
    pub fn name(&self) -> &'static str {
        match self {
            Rule::Keep => "keep",
            Rule::Null => "null",
            Rule::Fixed(_) => "fixed",
            Rule::Hash => "hash",
            Rule::Fake(_) => "fake",
            Rule::DateShift { .. } => "date_shift",
        }
    }

    /// Whether the rule changes the column.
    pub fn masks(&self) -> bool {
        *self != Rule::Keep
    }

    /// A short description for reports: `fake(email)`, `date_shift(by id, 180d)`.
    pub fn describe(&self) -> String {
        match self {
            Rule::Fake(k) => format!("fake({})", k.name()),
            Rule::DateShift { by, max_days } => format!("date_shift(by {by}, {max_days}d)"),
            r => r.name().to_string(),
        }
    }
}

/// The shapes of fake values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FakeKind {
    /// `Given Family`.
    Name,
    FirstName,
    LastName,
    /// `1234 Oak Street, Springfield`.
    Address,
    /// The original's digits replaced, its punctuation and length kept.
    Phone,
    /// `given.family.1a2b3c4d5e6f@example.org`.
    Email,
    /// The original's digits replaced, letters and length kept; unique
    /// per column (re-drawn on a collision).
    Mrn,
    /// A city name.
    City,
    /// `0` to `9` for each digit, everything else kept (postal codes,
    /// other identifiers).
    Digits,
}

impl FakeKind {
    pub const ALL: [FakeKind; 9] = [
        FakeKind::Name,
        FakeKind::FirstName,
        FakeKind::LastName,
        FakeKind::Address,
        FakeKind::Phone,
        FakeKind::Email,
        FakeKind::Mrn,
        FakeKind::City,
        FakeKind::Digits,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FakeKind::Name => "name",
            FakeKind::FirstName => "first_name",
            FakeKind::LastName => "last_name",
            FakeKind::Address => "address",
            FakeKind::Phone => "phone",
            FakeKind::Email => "email",
            FakeKind::Mrn => "mrn",
            FakeKind::City => "city",
            FakeKind::Digits => "digits",
        }
    }

    fn parse(s: &str) -> Option<FakeKind> {
        FakeKind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Whether two different originals must not share a fake (the
    /// masking re-draws on a collision): identifiers that are often
    /// unique columns.
    pub fn unique(self) -> bool {
        matches!(self, FakeKind::Mrn | FakeKind::Email | FakeKind::Phone)
    }
}

/// What to do with restored files whose source path matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileAction {
    /// Remove the file (a directory with everything in it).
    Drop,
    /// Replace the content of each matching file with this text.
    Replace(String),
}

/// The placeholder a `replace` without `content` writes.
pub const DEFAULT_PLACEHOLDER: &str = "[removed by holdfast masking]\n";

/// One `[[files]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRule {
    /// An absolute glob of backed-up source paths (the syntax of erasure
    /// paths; checked by the caller, which owns that glob).
    pub pattern: String,
    pub action: FileAction,
    /// Line of the entry, for errors the caller finds in the pattern.
    pub line: usize,
}

/// One column's rule and where the file says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnRule {
    pub rule: Rule,
    pub line: usize,
}

/// One table of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRules {
    pub schema: String,
    pub table: String,
    /// `default = "keep"`: columns the file does not name are kept.
    pub default_keep: bool,
    pub columns: BTreeMap<String, ColumnRule>,
    pub line: usize,
}

/// A parsed, validated masking file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskingFile {
    pub path: PathBuf,
    /// The secret of the keyed hash (relative paths are taken from the
    /// masking file's directory). Read by the caller.
    pub key_file: Option<PathBuf>,
    /// `unlisted_tables = "keep"`: tables the file does not name are kept.
    pub keep_unlisted_tables: bool,
    /// Keyed by (schema, table).
    pub tables: BTreeMap<(String, String), TableRules>,
    pub files: Vec<FileRule>,
}

/// A column or table of the restored database that the file does not
/// cover, or that the file names and the database lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoverageError {
    pub message: String,
}

impl fmt::Display for CoverageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The rule of every column, by (schema, table) and column name.
pub type Coverage = BTreeMap<(String, String), BTreeMap<String, Rule>>;

/// A column as the restored database has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbColumn {
    pub schema: String,
    pub table: String,
    pub column: String,
}

impl MaskingFile {
    /// Whether any rule needs the hash key (hash, fake, date_shift).
    pub fn needs_key(&self) -> bool {
        self.tables.values().any(|t| {
            t.columns
                .values()
                .any(|c| matches!(c.rule, Rule::Hash | Rule::Fake(_) | Rule::DateShift { .. }))
        })
    }

    /// The rule of every column of `columns` (the restored database's
    /// ordinary tables), or every way the file fails to cover them: a
    /// table not named (unless `unlisted_tables = "keep"`), a column not
    /// named (unless its table says `default = "keep"`), and a table or
    /// column the file names that the database lacks (a misspelt name
    /// would otherwise mask nothing).
    pub fn coverage(&self, columns: &[DbColumn]) -> Result<Coverage, Vec<CoverageError>> {
        let mut out: Coverage = BTreeMap::new();
        let mut errors = Vec::new();
        let mut seen_tables = BTreeSet::new();
        let mut refused_tables = BTreeSet::new();
        let at = |line: usize| format!("{}:{line}", self.path.display());
        for c in columns {
            let key = (c.schema.clone(), c.table.clone());
            seen_tables.insert(key.clone());
            let rule = match self.tables.get(&key) {
                None if self.keep_unlisted_tables => Rule::Keep,
                None => {
                    if refused_tables.insert(key.clone()) {
                        errors.push(CoverageError {
                            message: format!(
                                "table {}.{} is not in the masking file {}: name it (with its columns' rules, or default = \"keep\") or set unlisted_tables = \"keep\"",
                                c.schema,
                                c.table,
                                self.path.display()
                            ),
                        });
                    }
                    continue;
                }
                Some(t) => match t.columns.get(&c.column) {
                    Some(r) => r.rule.clone(),
                    None if t.default_keep => Rule::Keep,
                    None => {
                        errors.push(CoverageError {
                            message: format!(
                                "column {}.{}.{} is not covered by the masking file ({} names table {}.{} without it and without default = \"keep\"): give it a rule (\"keep\" if it holds no personal data)",
                                c.schema,
                                c.table,
                                c.column,
                                at(t.line),
                                c.schema,
                                c.table
                            ),
                        });
                        continue;
                    }
                },
            };
            out.entry(key).or_default().insert(c.column.clone(), rule);
        }
        for (key, t) in &self.tables {
            if !seen_tables.contains(key) {
                errors.push(CoverageError {
                    message: format!(
                        "{}: table {}.{} is not in the restored database (misspelt?)",
                        at(t.line),
                        key.0,
                        key.1
                    ),
                });
                continue;
            }
            for (col, r) in &t.columns {
                let exists = columns
                    .iter()
                    .any(|c| c.schema == key.0 && c.table == key.1 && &c.column == col);
                if !exists {
                    errors.push(CoverageError {
                        message: format!(
                            "{}: column {}.{}.{} is not in the restored database (misspelt?)",
                            at(r.line),
                            key.0,
                            key.1,
                            col
                        ),
                    });
                }
                if let Rule::DateShift { by, .. } = &r.rule {
                    let exists = columns
                        .iter()
                        .any(|c| c.schema == key.0 && c.table == key.1 && &c.column == by);
                    if !exists {
                        errors.push(CoverageError {
                            message: format!(
                                "{}: column {}.{}.{}: date_shift by {by:?}, which is not a column of that table",
                                at(r.line),
                                key.0,
                                key.1,
                                col
                            ),
                        });
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    key_file: Option<Spanned<String>>,
    unlisted_tables: Option<Spanned<String>>,
    #[serde(default)]
    tables: BTreeMap<String, RawTable>,
    #[serde(default)]
    files: Vec<Spanned<RawFiles>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    default: Option<Spanned<String>>,
    #[serde(default)]
    columns: BTreeMap<String, Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFiles {
    pattern: Spanned<String>,
    action: Spanned<String>,
    content: Option<Spanned<String>>,
}

struct Source<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn line(&self, span: &Range<usize>) -> (usize, usize) {
        let start = span.start.min(self.text.len());
        let before = &self.text[..start];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }

    fn at(&self, span: Range<usize>, message: impl Into<String>) -> PolicyError {
        let (line, column) = self.line(&span);
        PolicyError {
            file: self.file.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }
}

/// Read and parse a masking file.
pub fn load(path: &Path) -> Result<MaskingFile, Vec<PolicyError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![PolicyError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read the masking file: {e}"),
        }]
    })?;
    parse(path, &text)
}

/// Split `schema.table` (a name without a dot is in `public`).
fn table_name(s: &str) -> Result<(String, String), String> {
    let (schema, table) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (DEFAULT_SCHEMA, s),
    };
    if schema.is_empty() || table.is_empty() || table.contains('.') {
        return Err(format!(
            "table name {s:?}: expected TABLE or SCHEMA.TABLE (quote it: [tables.\"public.patient\"])"
        ));
    }
    Ok((schema.to_string(), table.to_string()))
}

/// Parse and validate a masking file's text (`file` names it in errors).
/// Returns every error found.
pub fn parse(file: &Path, text: &str) -> Result<MaskingFile, Vec<PolicyError>> {
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
    let mut errors = Vec::new();
    let keep_unlisted_tables = match &raw.unlisted_tables {
        None => false,
        Some(s) => match s.get_ref().as_str() {
            "keep" => true,
            "refuse" => false,
            other => {
                errors.push(src.at(
                    s.span(),
                    format!("unlisted_tables = {other:?}: expected \"refuse\" (the default) or \"keep\""),
                ));
                false
            }
        },
    };
    let key_file = match &raw.key_file {
        None => None,
        Some(k) if k.get_ref().trim().is_empty() => {
            errors.push(src.at(
                k.span(),
                "key_file is empty: name the file holding the hash key (at least 32 random bytes)",
            ));
            None
        }
        Some(k) => {
            let p = PathBuf::from(k.get_ref());
            Some(if p.is_absolute() {
                p
            } else {
                file.parent().unwrap_or(Path::new(".")).join(p)
            })
        }
    };
    let mut tables = BTreeMap::new();
    for (name, t) in raw.tables {
        // Implicit tables (`[tables.visit.columns]` alone) carry no span
        // of their own: the table is where its first entry is.
        let tspan = t
            .default
            .iter()
            .map(|d| d.span())
            .chain(t.columns.values().map(|v| v.span()))
            .min_by_key(|s| s.start)
            .unwrap_or(0..0);
        let (line, _) = src.line(&tspan);
        let key = match table_name(&name) {
            Ok(k) => k,
            Err(m) => {
                errors.push(src.at(tspan, m));
                continue;
            }
        };
        if tables.contains_key(&key) {
            errors.push(src.at(
                tspan,
                format!(
                    "table {}.{} is named twice (\"{}\" and \"{}.{}\" are the same table)",
                    key.0, key.1, name, key.0, key.1
                ),
            ));
            continue;
        }
        let default_keep = match &t.default {
            None => false,
            Some(d) if d.get_ref() == "keep" => true,
            Some(d) => {
                errors.push(src.at(
                    d.span(),
                    format!(
                        "default = {:?}: the only default is \"keep\" (leave it out to require a rule for every column)",
                        d.get_ref()
                    ),
                ));
                false
            }
        };
        let no_columns = t.columns.is_empty();
        let mut columns = BTreeMap::new();
        for (col, v) in t.columns {
            let (cline, _) = src.line(&v.span());
            let what = format!("column {}.{}.{col}", key.0, key.1);
            match rule(&what, v.get_ref()) {
                Ok(rule) => {
                    columns.insert(col, ColumnRule { rule, line: cline });
                }
                Err(m) => errors.push(src.at(v.span(), m)),
            }
        }
        if no_columns && !default_keep {
            errors.push(src.at(
                tspan,
                format!(
                    "table {}.{} has no columns and no default = \"keep\": every column of it would be refused",
                    key.0, key.1
                ),
            ));
        }
        tables.insert(
            key.clone(),
            TableRules {
                schema: key.0,
                table: key.1,
                default_keep,
                columns,
                line,
            },
        );
    }
    let mut files = Vec::new();
    for f in raw.files {
        let (line, _) = src.line(&f.span());
        let f = f.into_inner();
        if !f.pattern.get_ref().starts_with('/') {
            errors.push(src.at(
                f.pattern.span(),
                format!(
                    "pattern {:?} is not absolute: patterns name backed-up source paths from the root, as erasure paths do",
                    f.pattern.get_ref()
                ),
            ));
        }
        let action = match (f.action.get_ref().as_str(), &f.content) {
            ("drop", None) => FileAction::Drop,
            ("drop", Some(c)) => {
                errors.push(src.at(c.span(), "content is for action = \"replace\""));
                FileAction::Drop
            }
            ("replace", c) => FileAction::Replace(
                c.as_ref()
                    .map(|c| c.get_ref().clone())
                    .unwrap_or_else(|| DEFAULT_PLACEHOLDER.to_string()),
            ),
            (other, _) => {
                errors.push(src.at(
                    f.action.span(),
                    format!("action = {other:?}: expected \"drop\" or \"replace\""),
                ));
                FileAction::Drop
            }
        };
        files.push(FileRule {
            pattern: f.pattern.into_inner(),
            action,
            line,
        });
    }
    let mf = MaskingFile {
        path: file.to_path_buf(),
        key_file,
        keep_unlisted_tables,
        tables,
        files,
    };
    if mf.needs_key() && mf.key_file.is_none() && raw.key_file.is_none() {
        errors.push(PolicyError {
            file: file.to_path_buf(),
            line: 1,
            column: 1,
            message: "hash, fake and date_shift rules need key_file = \"...\" (a secret file of at least 32 random bytes): without a key a hash of a guessable value can be reversed".into(),
        });
    }
    if mf.tables.is_empty() && mf.files.is_empty() && errors.is_empty() {
        errors.push(PolicyError {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            message: "the masking file names no table and no [[files]]: it would mask nothing"
                .into(),
        });
    }
    if errors.is_empty() {
        Ok(mf)
    } else {
        errors.sort_by_key(|e| (e.line, e.column));
        Err(errors)
    }
}

const RULE_KEYS: [&str; 5] = ["rule", "kind", "value", "by", "max_days"];

/// One column's rule: a string (`"keep"`, `"null"`, `"hash"`) or a table
/// with `rule` and that rule's own keys (no others).
fn rule(what: &str, v: &toml::Value) -> Result<Rule, String> {
    let simple = |name: &str| -> Result<Rule, String> {
        match name {
            "keep" => Ok(Rule::Keep),
            "null" => Ok(Rule::Null),
            "hash" => Ok(Rule::Hash),
            "fixed" => Err(format!("{what}: fixed needs a value: {{ rule = \"fixed\", value = \"...\" }}")),
            "fake" => Err(format!(
                "{what}: fake needs a kind: {{ rule = \"fake\", kind = \"name\" }} ({})",
                kinds()
            )),
            "date_shift" => Err(format!(
                "{what}: date_shift needs the subject column and a maximum: {{ rule = \"date_shift\", by = \"patient_id\", max_days = 180 }}"
            )),
            other => Err(format!(
                "{what}: unknown rule {other:?}: expected keep, null, fixed, hash, fake or date_shift"
            )),
        }
    };
    let t = match v {
        toml::Value::String(s) => return simple(s),
        toml::Value::Table(t) => t,
        other => {
            return Err(format!(
                "{what}: expected a rule (\"keep\", \"null\", \"hash\" or {{ rule = ... }}), found a {}",
                other.type_str()
            ))
        }
    };
    for k in t.keys() {
        if !RULE_KEYS.contains(&k.as_str()) {
            return Err(format!(
                "{what}: unknown key {k:?} (a rule takes {})",
                RULE_KEYS.join(", ")
            ));
        }
    }
    let s = |k: &str| -> Result<Option<&str>, String> {
        match t.get(k) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.as_str())),
            Some(v) => Err(format!(
                "{what}: {k} must be a string, found a {}",
                v.type_str()
            )),
        }
    };
    let name = s("rule")?.ok_or_else(|| format!("{what}: the table has no rule = \"...\""))?;
    let allowed: &[&str] = match name {
        "fixed" => &["rule", "value"],
        "fake" => &["rule", "kind"],
        "date_shift" => &["rule", "by", "max_days"],
        _ => &["rule"],
    };
    if let Some(k) = t.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("{what}: {k:?} does not apply to rule {name:?}"));
    }
    match name {
        "fixed" => match s("value")? {
            Some(v) => Ok(Rule::Fixed(v.to_string())),
            None => simple("fixed"),
        },
        "fake" => {
            let k = s("kind")?.ok_or_else(|| simple("fake").unwrap_err())?;
            FakeKind::parse(k)
                .map(Rule::Fake)
                .ok_or_else(|| format!("{what}: unknown fake kind {k:?}: expected {}", kinds()))
        }
        "date_shift" => {
            let by = s("by")?.ok_or_else(|| simple("date_shift").unwrap_err())?;
            if by.is_empty() {
                return Err(format!("{what}: by is empty: name the subject column"));
            }
            let max = match t.get("max_days") {
                Some(toml::Value::Integer(n)) if (1..=36_500).contains(n) => *n as u32,
                Some(toml::Value::Integer(n)) => {
                    return Err(format!("{what}: max_days = {n}: expected 1 to 36500 days"))
                }
                Some(v) => {
                    return Err(format!(
                        "{what}: max_days must be a number of days, found a {}",
                        v.type_str()
                    ))
                }
                None => return Err(simple("date_shift").unwrap_err()),
            };
            Ok(Rule::DateShift {
                by: by.to_string(),
                max_days: max,
            })
        }
        other => simple(other),
    }
}

fn kinds() -> String {
    FakeKind::ALL
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Fake values: pure functions of the keyed digest of the original (and,
/// for shape-keeping kinds, of the original itself). `attempt` > 0 asks
/// for another draw when the first collided in a unique column.
pub mod fake {
    use super::FakeKind;

    pub const FIRST_NAMES: [&str; 64] = [
        "Avery", "Blake", "Cameron", "Dakota", "Emerson", "Finley", "Gray", "Harper", "Indigo",
        "Jordan", "Kendall", "Logan", "Morgan", "Noel", "Oakley", "Parker", "Quinn", "Reese",
        "Sawyer", "Taylor", "Umber", "Vale", "Wren", "Xen", "Yael", "Zion", "Alder", "Briar",
        "Cedar", "Dell", "Ember", "Fern", "Garnet", "Hollis", "Iris", "Jules", "Kit", "Linden",
        "Marlo", "Nico", "Onyx", "Perry", "Rowan", "Sage", "Tatum", "Uma", "Vesper", "Wynn",
        "Arden", "Bellamy", "Corin", "Darby", "Ellery", "Frankie", "Gale", "Hadley", "Ira",
        "Jesse", "Kai", "Lane", "Merritt", "Nova", "Ollie", "Peyton",
    ];
    pub const LAST_NAMES: [&str; 64] = [
        "Ashdown",
        "Birchley",
        "Coldwell",
        "Dunmore",
        "Elsworth",
        "Fairbank",
        "Glenholm",
        "Hartwell",
        "Ingleby",
        "Jessop",
        "Kettering",
        "Lockridge",
        "Marchbank",
        "Northcott",
        "Oakhurst",
        "Pemberton",
        "Quarrington",
        "Redfern",
        "Stanwick",
        "Thornbury",
        "Underhill",
        "Varley",
        "Whitlock",
        "Yardley",
        "Ashcombe",
        "Bramley",
        "Carrow",
        "Denholm",
        "Eastwood",
        "Foxley",
        "Greaves",
        "Holloway",
        "Ivesdale",
        "Kingsley",
        "Langford",
        "Merriman",
        "Netherby",
        "Ormsby",
        "Penrose",
        "Rothwell",
        "Selwyn",
        "Tennant",
        "Upton",
        "Vickery",
        "Westbrook",
        "Alcott",
        "Blakemore",
        "Cresswell",
        "Dunstan",
        "Everly",
        "Fenwick",
        "Galloway",
        "Hawthorne",
        "Ingram",
        "Kendrick",
        "Lovell",
        "Mortimer",
        "Nettleton",
        "Oldham",
        "Prescott",
        "Radcliffe",
        "Sherwood",
        "Tolliver",
        "Wakefield",
    ];
    pub const STREETS: [&str; 16] = [
        "Oak", "Maple", "Cedar", "Elm", "Willow", "Birch", "Aspen", "Hazel", "Juniper", "Laurel",
        "Linden", "Poplar", "Rowan", "Spruce", "Sycamore", "Chestnut",
    ];
    pub const STREET_TYPES: [&str; 8] = [
        "Street", "Avenue", "Road", "Lane", "Drive", "Court", "Way", "Place",
    ];
    pub const CITIES: [&str; 16] = [
        "Springfield",
        "Riverton",
        "Fairview",
        "Greenville",
        "Kingsport",
        "Lakeside",
        "Milford",
        "Northfield",
        "Oakdale",
        "Pinecrest",
        "Clearwater",
        "Brookside",
        "Ashford",
        "Westbury",
        "Elmwood",
        "Harborview",
    ];
    /// The domain of fake emails (reserved by RFC 2606: never delivered).
    pub const EMAIL_DOMAIN: &str = "example.org";

    /// Bytes of the digest as a stream of draws (the digest is 32 bytes;
    /// draws past it wrap with the attempt mixed in).
    struct Draws<'a> {
        d: &'a [u8; 32],
        i: usize,
        attempt: u32,
    }

    impl Draws<'_> {
        fn byte(&mut self) -> u8 {
            let b = self.d[self.i % 32]
                ^ (self.attempt.wrapping_mul(0x9e) as u8)
                ^ ((self.i / 32) as u8).wrapping_mul(0x3b);
            self.i += 1;
            b
        }

        fn below(&mut self, n: usize) -> usize {
            let v = u16::from_be_bytes([self.byte(), self.byte()]) as usize;
            v % n
        }

        fn pick<'s>(&mut self, list: &[&'s str]) -> &'s str {
            list[self.below(list.len())]
        }

        fn digit(&mut self) -> char {
            char::from(b'0' + (self.byte() % 10))
        }
    }

    /// The fake of `original` of `kind`, from `digest` (the keyed hash of
    /// the original); `attempt` 0 is the first draw.
    pub fn generate(kind: FakeKind, digest: &[u8; 32], original: &str, attempt: u32) -> String {
        // The attempt moves the starting point too, so a re-draw changes
        // every position, not only the mixed-in bits.
        let mut r = Draws {
            d: digest,
            i: attempt as usize * 7,
            attempt,
        };
        let out = match kind {
            FakeKind::FirstName => r.pick(&FIRST_NAMES).to_string(),
            FakeKind::LastName => r.pick(&LAST_NAMES).to_string(),
            FakeKind::Name => format!("{} {}", r.pick(&FIRST_NAMES), r.pick(&LAST_NAMES)),
            FakeKind::City => r.pick(&CITIES).to_string(),
            FakeKind::Address => format!(
                "{} {} {}, {}",
                1 + r.below(9999),
                r.pick(&STREETS),
                r.pick(&STREET_TYPES),
                r.pick(&CITIES)
            ),
            FakeKind::Email => {
                let mut tag = String::with_capacity(12);
                for _ in 0..6 {
                    tag.push_str(&format!("{:02x}", r.byte()));
                }
                format!(
                    "{}.{}.{tag}@{EMAIL_DOMAIN}",
                    r.pick(&FIRST_NAMES).to_lowercase(),
                    r.pick(&LAST_NAMES).to_lowercase()
                )
            }
            FakeKind::Phone | FakeKind::Mrn | FakeKind::Digits => {
                let mut s: String = original
                    .chars()
                    .map(|c| if c.is_ascii_digit() { r.digit() } else { c })
                    .collect();
                if !original.chars().any(|c| c.is_ascii_digit()) {
                    // Nothing to keep the shape of: a value of digits.
                    s = (0..10).map(|_| r.digit()).collect();
                }
                s
            }
        };
        // A dictionary fake equal to its original would leave it as it was.
        if out == original && attempt < 8 {
            return generate(kind, digest, original, attempt + 1);
        }
        out
    }

    /// Whether `value` is a word a dictionary fake of `kind` can produce
    /// (such a source value can appear in the masked column as some other
    /// row's fake, which is not a leak of that row).
    pub fn in_dictionary(kind: FakeKind, value: &str) -> bool {
        match kind {
            FakeKind::FirstName => FIRST_NAMES.contains(&value),
            FakeKind::LastName => LAST_NAMES.contains(&value),
            FakeKind::City => CITIES.contains(&value),
            FakeKind::Name => value
                .split_once(' ')
                .is_some_and(|(a, b)| FIRST_NAMES.contains(&a) && LAST_NAMES.contains(&b)),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<MaskingFile, Vec<PolicyError>> {
        parse(Path::new("/etc/masking/ehr.toml"), text)
    }

    fn err(text: &str) -> String {
        p(text)
            .expect_err("should be refused")
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    const GOOD: &str = r#"key_file = "mask.key"
unlisted_tables = "refuse"

[tables."public.patient"]
default = "keep"
[tables."public.patient".columns]
id = "hash"
mrn = { rule = "fake", kind = "mrn" }
family = { rule = "fake", kind = "last_name" }
note = "null"
title = { rule = "fixed", value = "[redacted]" }
birth_date = { rule = "date_shift", by = "id", max_days = 180 }
gender = "keep"

[tables.visit.columns]
patient_id = "hash"
at = { rule = "date_shift", by = "patient_id", max_days = 30 }

[[files]]
pattern = "/srv/docs/**/*.pdf"
action = "replace"

[[files]]
pattern = "/srv/docs/tmp/**"
action = "drop"
"#;

    #[test]
    fn a_good_file_parses_with_every_rule() {
        let m = p(GOOD).unwrap();
        assert_eq!(m.key_file, Some(PathBuf::from("/etc/masking/mask.key")));
        assert!(!m.keep_unlisted_tables);
        let t = &m.tables[&("public".into(), "patient".into())];
        assert!(t.default_keep);
        assert_eq!(t.line, 5);
        assert_eq!(t.columns["id"].rule, Rule::Hash);
        assert_eq!(t.columns["id"].line, 7);
        assert_eq!(t.columns["mrn"].rule, Rule::Fake(FakeKind::Mrn));
        assert_eq!(t.columns["note"].rule, Rule::Null);
        assert_eq!(t.columns["title"].rule, Rule::Fixed("[redacted]".into()));
        assert_eq!(
            t.columns["birth_date"].rule,
            Rule::DateShift {
                by: "id".into(),
                max_days: 180
            }
        );
        assert_eq!(t.columns["gender"].rule, Rule::Keep);
        let v = &m.tables[&("public".into(), "visit".into())];
        assert!(!v.default_keep);
        assert_eq!(m.files.len(), 2);
        assert_eq!(
            m.files[0].action,
            FileAction::Replace(DEFAULT_PLACEHOLDER.into())
        );
        assert_eq!(m.files[1].action, FileAction::Drop);
        assert_eq!(m.files[1].line, 23);
        assert!(m.needs_key());
    }

    #[test]
    fn errors_name_the_line_and_what_is_wrong() {
        let e = err("key_file = \"k\"\n[tables.patient.columns]\nname = \"scramble\"\n");
        assert!(
            e.contains("ehr.toml:3:") && e.contains("unknown rule \"scramble\""),
            "{e}"
        );
        let e = err("key_file = \"k\"\n\n[tables.patient.columns]\nname = { rule = \"fake\", kind = \"pokemon\" }\n");
        assert!(
            e.contains(":4:") && e.contains("unknown fake kind \"pokemon\""),
            "{e}"
        );
        let e = err("key_file = \"k\"\n[tables.patient.columns]\nname = { rule = \"fake\", kind = \"name\", colour = \"red\" }\n");
        assert!(
            e.contains(":3:") && e.contains("unknown key \"colour\""),
            "{e}"
        );
        let e = err("[tables.patient.columns]\nname = { rule = \"null\", kind = \"name\" }\n");
        assert!(
            e.contains("\"kind\" does not apply to rule \"null\""),
            "{e}"
        );
        let e = err("key_file = \"k\"\nkey_flie = \"x\"\n[tables.t.columns]\na = \"keep\"\n");
        assert!(
            e.contains(":2:") && e.contains("unknown field `key_flie`"),
            "{e}"
        );
        let e = err("[tables.t]\ndefault = \"mask\"\n[tables.t.columns]\na = \"null\"\n");
        assert!(
            e.contains(":2:") && e.contains("the only default is \"keep\""),
            "{e}"
        );
        let e = err("[tables.t]\ncolumn = {}\n");
        assert!(
            e.contains(":2:") && e.contains("unknown field `column`"),
            "{e}"
        );
        let e =
            err("[tables.t.columns]\nd = { rule = \"date_shift\", by = \"p\", max_days = 0 }\n");
        assert!(e.contains("max_days = 0"), "{e}");
        let e = err("[tables.t.columns]\nd = { rule = \"date_shift\", max_days = 3 }\n");
        assert!(e.contains("date_shift needs the subject column"), "{e}");
        let e = err("[tables.t.columns]\na = \"hash\"\n");
        assert!(e.contains("need key_file"), "{e}");
        let e = err("unlisted_tables = \"sometimes\"\n[tables.t.columns]\na = \"null\"\n");
        assert!(
            e.contains(":1:") && e.contains("expected \"refuse\""),
            "{e}"
        );
        let e = err("[[files]]\npattern = \"docs/*\"\naction = \"shred\"\n");
        assert!(e.contains(":2:") && e.contains("not absolute"), "{e}");
        assert!(
            e.contains(":3:") && e.contains("expected \"drop\" or \"replace\""),
            "{e}"
        );
        let e = err("[tables.\"a.b.c\".columns]\nx = \"null\"\n");
        assert!(e.contains(":2:") && e.contains("SCHEMA.TABLE"), "{e}");
        let e = err("[tables.t]\ndefault = \"keep\"\n[tables.\"public.t\"]\ndefault = \"keep\"\n");
        assert!(e.contains("named twice"), "{e}");
        let e = err("[tables.t]\n");
        assert!(e.contains("no columns and no default"), "{e}");
        let e = err("key_file = \"k\"\n");
        assert!(
            e.contains("masks nothing") || e.contains("mask nothing"),
            "{e}"
        );
        // Syntax errors, with their line.
        let e = err("key_file = \"k\"\n[tables.t.columns]\na = \n");
        assert!(e.contains(":3:"), "{e}");
    }

    fn cols(list: &[(&str, &str)]) -> Vec<DbColumn> {
        list.iter()
            .map(|(t, c)| DbColumn {
                schema: "public".into(),
                table: t.to_string(),
                column: c.to_string(),
            })
            .collect()
    }

    #[test]
    fn coverage_refuses_unlisted_columns_and_tables_and_misspellings() {
        let m = p(GOOD).unwrap();
        let db = cols(&[
            ("patient", "id"),
            ("patient", "mrn"),
            ("patient", "family"),
            ("patient", "note"),
            ("patient", "title"),
            ("patient", "birth_date"),
            ("patient", "gender"),
            ("patient", "updated_at"),
            ("visit", "patient_id"),
            ("visit", "at"),
        ]);
        let rules = m.coverage(&db).unwrap();
        // default = "keep" covers patient.updated_at.
        assert_eq!(
            rules[&("public".into(), "patient".into())]["updated_at"],
            Rule::Keep
        );
        let mut more = db.clone();
        more.extend(cols(&[("visit", "email"), ("audit", "who")]));
        let e: Vec<String> = m
            .coverage(&more)
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert!(
            e.iter()
                .any(|e| e.contains("column public.visit.email is not covered")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|e| e.contains("table public.audit is not in the masking file")),
            "{e:?}"
        );
        let fewer: Vec<DbColumn> = db.iter().filter(|c| c.column != "mrn").cloned().collect();
        let e: Vec<String> = m
            .coverage(&fewer)
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert!(
            e.iter().any(|e| e
                .contains("ehr.toml:8: column public.patient.mrn is not in the restored database")),
            "{e:?}"
        );
        let keep = p(&GOOD.replace("\"refuse\"", "\"keep\"")).unwrap();
        let mut with_audit = db.clone();
        with_audit.extend(cols(&[("audit", "who")]));
        assert_eq!(
            keep.coverage(&with_audit).unwrap()[&("public".into(), "audit".into())]["who"],
            Rule::Keep
        );
    }

    fn digest(seed: u8) -> [u8; 32] {
        let mut d = [0u8; 32];
        for (i, b) in d.iter_mut().enumerate() {
            *b = seed
                .wrapping_mul(31)
                .wrapping_add((i as u8).wrapping_mul(17))
                ^ 0x5a;
        }
        d
    }

    #[test]
    fn fakes_keep_their_shape_and_are_deterministic() {
        for seed in 0..=255u8 {
            let d = digest(seed);
            let email = fake::generate(FakeKind::Email, &d, "jane.doe@hospital.example", 0);
            let (local, domain) = email.split_once('@').expect("an @");
            assert_eq!(domain, fake::EMAIL_DOMAIN);
            assert!(
                !local.is_empty()
                    && local
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.'),
                "{email}"
            );
            let phone = fake::generate(FakeKind::Phone, &d, "+1 (617) 555-0143", 0);
            assert_eq!(phone.len(), "+1 (617) 555-0143".len());
            for (a, b) in phone.chars().zip("+1 (617) 555-0143".chars()) {
                assert_eq!(a.is_ascii_digit(), b.is_ascii_digit(), "{phone}");
                if !b.is_ascii_digit() {
                    assert_eq!(a, b, "{phone}");
                }
            }
            let mrn = fake::generate(FakeKind::Mrn, &d, "MRN000012345", 0);
            assert!(
                mrn.starts_with("MRN")
                    && mrn.len() == 12
                    && mrn[3..].chars().all(|c| c.is_ascii_digit()),
                "{mrn}"
            );
            let name = fake::generate(FakeKind::Name, &d, "Jane Doe", 0);
            assert!(fake::in_dictionary(FakeKind::Name, &name), "{name}");
            let first = fake::generate(FakeKind::FirstName, &d, "Jane", 0);
            assert!(fake::FIRST_NAMES.contains(&first.as_str()));
            let last = fake::generate(FakeKind::LastName, &d, "Doe", 0);
            assert!(fake::LAST_NAMES.contains(&last.as_str()));
            let addr = fake::generate(FakeKind::Address, &d, "1 Main St", 0);
            let (num, rest) = addr.split_once(' ').unwrap();
            assert!(num.parse::<u32>().is_ok() && rest.contains(", "), "{addr}");
            // Deterministic: the same digest gives the same fake.
            assert_eq!(
                email,
                fake::generate(FakeKind::Email, &d, "jane.doe@hospital.example", 0)
            );
            assert_eq!(mrn, fake::generate(FakeKind::Mrn, &d, "MRN000012345", 0));
            // A re-draw differs.
            assert_ne!(mrn, fake::generate(FakeKind::Mrn, &d, "MRN000012345", 1));
        }
        // A dictionary fake is never its own original.
        for seed in 0..=255u8 {
            let d = digest(seed);
            for n in fake::FIRST_NAMES {
                assert_ne!(fake::generate(FakeKind::FirstName, &d, n, 0), n);
            }
        }
        // Different digests spread over the dictionary.
        let distinct: BTreeSet<String> = (0..=255u8)
            .map(|s| fake::generate(FakeKind::LastName, &digest(s), "Doe", 0))
            .collect();
        assert!(distinct.len() > 32, "{distinct:?}");
    }

    #[test]
    fn the_ehr_example_covers_the_bench_schema() {
        let m = parse(
            Path::new("policies/masking/ehr.toml"),
            include_str!("../../../policies/masking/ehr.toml"),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        // The columns of ../shared/bench/ehr_db.sql.
        let schema: &[(&str, &[&str])] = &[
            (
                "patient",
                &[
                    "id",
                    "mrn",
                    "family",
                    "given",
                    "birth_date",
                    "gender",
                    "address",
                    "updated_at",
                ],
            ),
            (
                "encounter",
                &["id", "patient_id", "started_at", "kind", "note"],
            ),
            (
                "observation",
                &[
                    "id",
                    "patient_id",
                    "encounter_id",
                    "code",
                    "value",
                    "unit",
                    "effective",
                    "resource",
                ],
            ),
            (
                "document",
                &["id", "patient_id", "title", "mime", "content"],
            ),
        ];
        let db: Vec<DbColumn> = schema
            .iter()
            .flat_map(|(t, cs)| cs.iter().map(move |c| (*t, *c)))
            .map(|(t, c)| DbColumn {
                schema: "public".into(),
                table: t.into(),
                column: c.into(),
            })
            .collect();
        let rules = m.coverage(&db).unwrap();
        assert_eq!(
            rules[&("public".into(), "patient".into())]["mrn"],
            Rule::Fake(FakeKind::Mrn)
        );
        // A new column is refused.
        let mut more = db.clone();
        more.push(DbColumn {
            schema: "public".into(),
            table: "patient".into(),
            column: "ssn".into(),
        });
        assert!(m.coverage(&more).is_err());
    }
}
