//! Masked restores for staging: the rules of a masking file
//! (`holdfast_policy::masking`) applied to a restored database, and
//! verified, before anyone can mistake it for a usable copy.
//!
//! A masked logical restore (`postgres::restore_logical` with a
//! [`Masking`]) goes into a database of its own under a temporary name,
//! renamed to the name asked for only once the masking is verified. Any
//! failure drops the temporary database: a refusal never leaves unmasked
//! data under a name that looks like a finished restore. Two paths:
//!
//! - **Staged** (no erasure due; [`Staged`]): the restore runs the dump's
//!   script through `holdfast_postgres::script`. Once every table exists
//!   the file must cover every column of every ordinary table (a table or
//!   column it does not name is refused, naming `schema.table.column`, and
//!   so is a rule the column's type cannot take: a fake of a `jsonb`,
//!   `null` on a NOT NULL column). Each table with a masked column has
//!   its rows copied into a temporary table (no WAL; fields of `null` and
//!   `fixed` columns blanked on the way), sampled, written masked into the
//!   real table by one `INSERT … SELECT`, verified (no sampled source
//!   value remains) and the temporary table dropped; then the post-data
//!   section builds indexes, validates foreign keys on the masked rows and
//!   creates triggers. Nothing is rewritten afterwards.
//! - **Update** (erasures due, which need the unmasked rows and every
//!   constraint; [`apply`]): the complete restore, the erasures, then in
//!   one transaction samples, foreign keys over masked columns dropped,
//!   user triggers disabled (an audit trigger would copy the unmasked
//!   row), plain indexes dropped, one `UPDATE` per table, foreign keys
//!   added again (re-validated), triggers enabled, the verification;
//!   commit, then `VACUUM FULL` of the masked tables so the old row
//!   versions holding the unmasked values are gone from the heap, and the
//!   dropped indexes created again.
//!
//! Both build the same expressions ([`table_exprs`]) and run the same
//! checks ([`verify_column`]), so they mask alike.
//!
//! The keyed hash is HMAC-SHA256, computed by the server from `sha256()`
//! (built in since PostgreSQL 11; pgcrypto is not needed) with the key's
//! inner and outer pads passed as bind parameters: the key is never part
//! of an SQL text or a log. Fakes are drawn in this process from the same
//! HMAC of the original (`holdfast_policy::masking::fake`), through a
//! temporary mapping table, so the same value always gets the same fake.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use holdfast_policy::masking::{self, fake, DbColumn, FakeKind, FileAction, MaskingFile, Rule};
use holdfast_postgres::script::{CopyTarget, DataHook, Divert};
use holdfast_postgres::Dsn;
use holdfast_sources::exclude::PathGlob;
use serde::Serialize;
use tokio::runtime::Handle;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use crate::error::{OpsError, Result};
use holdfast_postgres::quote_ident;

/// Distinct source values sampled per masked column by default.
pub const DEFAULT_SAMPLE: usize = 200;

/// A loaded masking file with its key.
pub struct Masking {
    pub file: MaskingFile,
    key: Option<Vec<u8>>,
    /// Distinct source values sampled per column for the verification.
    pub sample: usize,
    /// The `[[files]]` patterns, compiled.
    pub file_globs: Vec<(PathGlob, FileAction)>,
}

impl std::fmt::Debug for Masking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Masking")
            .field("file", &self.file.path)
            .field("sample", &self.sample)
            .finish()
    }
}

impl Masking {
    /// Parse the masking file at `path`, read its key file (at least
    /// [`masking::MIN_KEY_BYTES`]) and compile its file patterns.
    pub fn load(path: &Path) -> Result<Masking> {
        let file = masking::load(path).map_err(|errs| {
            OpsError::invalid(format!(
                "the masking file is refused:\n  {}",
                errs.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n  ")
            ))
        })?;
        let key = match &file.key_file {
            None => None,
            Some(k) => {
                let bytes = std::fs::read(k).map_err(|e| OpsError::Io {
                    context: format!(
                        "reading the masking key file {} (named by {})",
                        k.display(),
                        path.display()
                    ),
                    cause: e,
                })?;
                if bytes.len() < masking::MIN_KEY_BYTES {
                    return Err(OpsError::invalid(format!(
                        "the masking key file {} holds {} bytes; it needs at least {} random bytes (head -c 32 /dev/urandom > {})",
                        k.display(),
                        bytes.len(),
                        masking::MIN_KEY_BYTES,
                        k.display()
                    )));
                }
                Some(bytes)
            }
        };
        let mut file_globs = Vec::new();
        for f in &file.files {
            let g = PathGlob::parse(&f.pattern).map_err(|why| {
                OpsError::invalid(format!(
                    "{}:{}: pattern {:?} is not a valid glob: {why}",
                    path.display(),
                    f.line,
                    f.pattern
                ))
            })?;
            file_globs.push((g, f.action.clone()));
        }
        Ok(Masking {
            file,
            key,
            sample: DEFAULT_SAMPLE,
            file_globs,
        })
    }

    fn key(&self) -> Result<&[u8]> {
        self.key.as_deref().ok_or_else(|| {
            OpsError::invalid(format!(
                "{}: the rules need key_file",
                self.file.path.display()
            ))
        })
    }
}

/// HMAC-SHA256 of `data` under `key`.
pub fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let tag = ring::hmac::sign(&k, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// The inner and outer pads of HMAC-SHA256 for `key` (RFC 2104): the
/// server computes `sha256(opad || sha256(ipad || message))` with them.
fn pads(key: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(ring::digest::digest(&ring::digest::SHA256, key).as_ref());
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    (
        k.iter().map(|b| b ^ 0x36).collect(),
        k.iter().map(|b| b ^ 0x5c).collect(),
    )
}

/// What masking did to one column.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnReport {
    /// `schema.table`.
    pub table: String,
    pub column: String,
    /// `hash`, `fake(email)`, `date_shift(by patient_id, 180d)`, ...
    pub rule: String,
    /// Non-null values the column held before masking.
    pub values: u64,
    /// Source values (or subject/date pairs) sampled for the check.
    pub sampled: usize,
    /// Sampled source values still present after masking (0, or the
    /// masking failed).
    pub survivors: u64,
}

/// What a masked restore did.
#[derive(Debug, Clone, Serialize)]
pub struct MaskReport {
    /// The masking file.
    pub file: String,
    /// Every masked column; kept columns are not listed.
    pub columns: Vec<ColumnReport>,
    /// `schema.table` -> rows updated.
    pub tables: BTreeMap<String, u64>,
    /// Foreign keys dropped and validated again over masked columns.
    pub foreign_keys_checked: Vec<String>,
    /// True when no sampled source value survived (always, on success).
    pub verified: bool,
    /// The masked tables were rewritten with VACUUM FULL (the path taken
    /// when erasures were re-applied first).
    pub vacuumed: bool,
    /// The rows were masked as they were restored: unmasked rows only
    /// ever sat in temporary tables (see [`Staged`]).
    pub staged: bool,
    /// Restored files dropped or replaced by `[[files]]` (file restores).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileMasked>,
}

impl MaskReport {
    /// The restore's audit entry: the masking file and, per column, its
    /// rule, rows and the verification (never a value).
    pub fn annotate(&self, d: holdfast_repo::audit::Draft) -> holdfast_repo::audit::Draft {
        let cols: Vec<serde_json::Value> = self
            .columns
            .iter()
            .map(|c| {
                serde_json::json!({
                    "column": format!("{}.{}", c.table, c.column),
                    "rule": c.rule,
                    "values": c.values,
                    "sampled": c.sampled,
                    "survivors": c.survivors,
                })
            })
            .collect();
        let mut d = d
            .arg("masking_file", self.file.clone())
            .arg("masked_columns", cols)
            .arg("masking_verified", self.verified);
        if !self.files.is_empty() {
            d = d.arg(
                "masked_files",
                self.files
                    .iter()
                    .map(|f| format!("{} {}", f.action, f.path))
                    .collect::<Vec<_>>(),
            );
        }
        d
    }
}

/// One restored file a `[[files]]` rule acted on.
#[derive(Debug, Clone, Serialize)]
pub struct FileMasked {
    /// The source path as backed up.
    pub path: String,
    /// `drop` or `replace`.
    pub action: String,
}

/// A column of the restored database with what its type allows.
#[derive(Debug, Clone)]
struct Col {
    schema: String,
    table: String,
    name: String,
    /// `format_type` (for casts): `character varying(20)`, `bigint`.
    sql_type: String,
    /// `typname` of the type (or of a domain's base type).
    base: String,
    category: String,
    /// Length of varchar/char, if limited.
    max_len: Option<i32>,
    not_null: bool,
    generated: bool,
}

fn qt(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

fn pg_err(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{}: {}", db.severity(), db.message());
            if let Some(d) = db.detail() {
                s.push_str(&format!(" ({d})"));
            }
            s
        }
        None => e.to_string(),
    }
}

fn q(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> OpsError {
    let what = what.into();
    move |e| OpsError::invalid(format!("{what}: {}", pg_err(&e)))
}

/// Bind parameters of one statement, numbered as they are added.
#[derive(Default)]
struct Params {
    values: Vec<Box<dyn ToSql + Sync + Send>>,
    pads: Option<(usize, usize)>,
}

impl Params {
    fn push(&mut self, v: impl ToSql + Sync + Send + 'static) -> String {
        self.values.push(Box::new(v));
        format!("${}", self.values.len())
    }

    /// `$i`, `$o`: the HMAC pads, added once per statement.
    fn pads(&mut self, key: &[u8]) -> (String, String) {
        if let Some((i, o)) = self.pads {
            return (format!("${i}"), format!("${o}"));
        }
        let (ipad, opad) = pads(key);
        let i = self.push(ipad);
        let o = self.push(opad);
        let n = self.values.len();
        self.pads = Some((n - 1, n));
        (i, o)
    }

    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.values
            .iter()
            .map(|b| b.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// The server's HMAC-SHA256 of `x::text` (NULL stays NULL).
fn hmac_sql(p: &mut Params, key: &[u8], x: &str) -> String {
    let (i, o) = p.pads(key);
    format!("sha256({o}::bytea || sha256({i}::bytea || convert_to(({x})::text, 'UTF8')))")
}

/// The masked value of `x` (an SQL expression of column `c`'s type) under
/// `rule`; `row` resolves another column of the same row (date_shift's
/// subject). `maps` names the fake mapping table of each faked column.
fn mask_expr(
    p: &mut Params,
    key: Option<&[u8]>,
    c: &Col,
    rule: &Rule,
    x: &str,
    subject: Option<&str>,
    map: Option<&str>,
) -> Result<String> {
    let need = |k: Option<&[u8]>| {
        k.map(|k| k.to_vec())
            .ok_or_else(|| OpsError::invalid("internal: masking rule without a key"))
    };
    Ok(match rule {
        Rule::Keep => x.to_string(),
        Rule::Null => "NULL".to_string(),
        Rule::Fixed(v) => format!("CAST({}::text AS {})", p.push(v.clone()), c.sql_type),
        Rule::Hash => {
            let key = need(key)?;
            let h = hmac_sql(p, &key, x);
            let hex = format!("encode({h}, 'hex')");
            match c.base.as_str() {
                "int8" => format!("('x' || left({hex}, 15))::bit(60)::bigint"),
                "int4" => format!("('x' || left({hex}, 7))::bit(28)::integer"),
                "int2" => format!("('x' || left({hex}, 3))::bit(12)::integer::smallint"),
                "numeric" => {
                    format!(
                        "(('x' || left({hex}, 15))::bit(60)::bigint)::{}",
                        c.sql_type
                    )
                }
                "uuid" => format!("left({hex}, 32)::uuid"),
                "bytea" => h,
                _ if c.category == "S" => {
                    let len = c.max_len.map_or(32, |l| l.clamp(1, 32));
                    format!("CAST(left({hex}, {len}) AS {})", c.sql_type)
                }
                _ => unreachable_type(c, rule)?,
            }
        }
        Rule::Fake(_) => {
            let map = map.ok_or_else(|| OpsError::invalid("internal: fake without a map"))?;
            format!(
                "CAST((SELECT m.new FROM {map} m WHERE m.old = ({x})::text) AS {})",
                c.sql_type
            )
        }
        Rule::DateShift { max_days, .. } => {
            let key = need(key)?;
            let s =
                subject.ok_or_else(|| OpsError::invalid("internal: date_shift without subject"))?;
            let h = hmac_sql(p, &key, &format!("coalesce(({s})::text, '')"));
            let m = i64::from(*max_days);
            // v in [0, 2m) maps to [-m, -1] and [1, m]: never 0, so every
            // date moves; the same subject always gets the same offset.
            let off = format!(
                "(SELECT v - {m} + (v >= {m})::int FROM (SELECT (('x' || left(encode({h}, 'hex'), 8))::bit(32)::bigint % {}) AS v) hf_o)",
                2 * m
            );
            match c.base.as_str() {
                "date" => format!("({x} + ({off})::int)"),
                _ => format!("({x} + ({off})::int * interval '86400 seconds')"),
            }
        }
    })
}

fn unreachable_type(c: &Col, rule: &Rule) -> Result<String> {
    Err(OpsError::invalid(format!(
        "column {}.{}.{} ({}) cannot take rule {}",
        c.schema,
        c.table,
        c.name,
        c.sql_type,
        rule.describe()
    )))
}

/// Why `rule` cannot apply to column `c`, if it cannot.
fn type_problem(c: &Col, rule: &Rule, rules: &BTreeMap<String, Rule>) -> Option<String> {
    let name = format!("{}.{}.{} ({})", c.schema, c.table, c.name, c.sql_type);
    if c.generated && rule.masks() {
        return Some(format!(
            "column {name} is generated: mask the columns it is computed from and keep it"
        ));
    }
    match rule {
        Rule::Null if c.not_null => Some(format!(
            "column {name} is NOT NULL: use fixed (or hash/fake) instead of null"
        )),
        Rule::Hash => {
            let ok = matches!(
                c.base.as_str(),
                "int8" | "int4" | "int2" | "numeric" | "uuid" | "bytea"
            ) || c.category == "S";
            (!ok).then(|| format!(
                "column {name}: hash is for text, integer, numeric, uuid and bytea columns; use fixed or null"
            ))
        }
        Rule::Fake(k) => (c.category != "S").then(|| {
            format!(
                "column {name}: fake({}) makes text; this column is not text (use fixed or null)",
                k.name()
            )
        }),
        Rule::DateShift { by, .. } => {
            if !matches!(c.base.as_str(), "date" | "timestamp" | "timestamptz") {
                return Some(format!(
                    "column {name}: date_shift is for date, timestamp and timestamptz columns"
                ));
            }
            match rules.get(by) {
                Some(Rule::Null | Rule::Fixed(_)) => Some(format!(
                    "column {name}: date_shift by {by}, which the file sets to one value for every row: the subject must stay distinguishable (keep, hash or fake it)"
                )),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The ordinary tables' columns of the database `c` is connected to.
fn columns(rt: &Handle, c: &Client) -> Result<Vec<Col>> {
    let rows = rt
        .block_on(c.query(
            "SELECT n.nspname::text, cl.relname::text, a.attname::text, \
                    format_type(a.atttypid, a.atttypmod), \
                    (CASE WHEN t.typtype = 'd' THEN bt.typname ELSE t.typname END)::text, \
                    (CASE WHEN t.typtype = 'd' THEN bt.typcategory ELSE t.typcategory END)::text, \
                    a.atttypmod, a.attnotnull, a.attgenerated <> '' \
             FROM pg_attribute a \
             JOIN pg_class cl ON cl.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = cl.relnamespace \
             JOIN pg_type t ON t.oid = a.atttypid \
             LEFT JOIN pg_type bt ON bt.oid = t.typbasetype \
             WHERE cl.relkind IN ('r', 'p') AND NOT cl.relispartition \
               AND a.attnum > 0 AND NOT a.attisdropped \
               AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' \
             ORDER BY 1, 2, a.attnum",
            &[],
        ))
        .map_err(q("listing the restored database's columns"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let base: String = r.get(4);
            let typmod: i32 = r.get(6);
            let max_len = match base.as_str() {
                "varchar" | "bpchar" if typmod > 4 => Some(typmod - 4),
                _ => None,
            };
            Col {
                schema: r.get(0),
                table: r.get(1),
                name: r.get(2),
                sql_type: r.get(3),
                base,
                category: r.get(5),
                max_len,
                not_null: r.get(7),
                generated: r.get(8),
            }
        })
        .collect())
}

/// A foreign key over masked columns: dropped before the updates and
/// added again after, which validates it.
struct ForeignKey {
    name: String,
    table: (String, String),
    def: String,
}

fn foreign_keys(
    rt: &Handle,
    c: &Client,
    masked: &BTreeSet<(String, String, String)>,
) -> Result<Vec<ForeignKey>> {
    let rows = rt
        .block_on(c.query(
            "SELECT co.conname::text, n.nspname::text, cl.relname::text, pg_get_constraintdef(co.oid), \
                    ARRAY(SELECT attname::text FROM pg_attribute WHERE attrelid = co.conrelid AND attnum = ANY(co.conkey)), \
                    fn.nspname::text, fcl.relname::text, \
                    ARRAY(SELECT attname::text FROM pg_attribute WHERE attrelid = co.confrelid AND attnum = ANY(co.confkey)) \
             FROM pg_constraint co \
             JOIN pg_class cl ON cl.oid = co.conrelid JOIN pg_namespace n ON n.oid = cl.relnamespace \
             JOIN pg_class fcl ON fcl.oid = co.confrelid JOIN pg_namespace fn ON fn.oid = fcl.relnamespace \
             WHERE co.contype = 'f' AND co.conparentid = 0 ORDER BY 2, 3, 1",
            &[],
        ))
        .map_err(q("listing foreign keys"))?;
    let mut out = Vec::new();
    for r in rows {
        let (s, t): (String, String) = (r.get(1), r.get(2));
        let (fs, ft): (String, String) = (r.get(5), r.get(6));
        let cols: Vec<String> = r.get(4);
        let fcols: Vec<String> = r.get(7);
        let hit = cols
            .iter()
            .any(|c| masked.contains(&(s.clone(), t.clone(), c.clone())))
            || fcols
                .iter()
                .any(|c| masked.contains(&(fs.clone(), ft.clone(), c.clone())));
        if hit {
            out.push(ForeignKey {
                name: r.get(0),
                table: (s, t),
                def: r.get(3),
            });
        }
    }
    Ok(out)
}

/// The fake of every distinct value of a column: the same value always
/// gets the same fake (a draw from its HMAC); a unique kind re-draws
/// when its fake is taken by another value or is some other row's
/// original (which the verification would then find).
fn fake_map(key: &[u8], kind: FakeKind, values: &[String]) -> Result<Vec<(String, String)>> {
    let originals: HashSet<&str> = values.iter().map(String::as_str).collect();
    let mut used: HashSet<String> = HashSet::with_capacity(values.len());
    let mut out = Vec::with_capacity(values.len());
    let dictionary = !kind.unique();
    for v in values {
        let d = hmac(key, v.as_bytes());
        let mut attempt = 0u32;
        let f = loop {
            let f = fake::generate(kind, &d, v, attempt);
            let clash = used.contains(&f) || originals.contains(f.as_str());
            if dictionary || !clash {
                break f;
            }
            attempt += 1;
            if attempt > 64 {
                return Err(OpsError::invalid(format!(
                    "fake({}) found no free value for one of {} distinct values after 64 draws (the shape leaves too few digits): use hash for this column",
                    kind.name(),
                    values.len()
                )));
            }
        };
        if !dictionary {
            used.insert(f.clone());
        }
        out.push((v.clone(), f));
    }
    Ok(out)
}

/// The sampled values of one masked column.
enum Sample {
    /// Distinct source values (as text) that must not remain.
    Values(Vec<String>),
    /// (subject, date) pairs: the subject's rows must not keep the date.
    Pairs(Vec<(Option<String>, String)>),
}

/// The rules of every covered table: `(schema, table)` → column → rule.
type Rules = BTreeMap<(String, String), BTreeMap<String, Rule>>;

/// The masking file checked against a database: every column covered,
/// every rule possible for its column's type, the key read.
struct Prepared {
    cols: Vec<Col>,
    rules: Rules,
    /// `(schema, table, column)` of every column a rule changes.
    masked: BTreeSet<(String, String, String)>,
    key: Option<Vec<u8>>,
}

impl Prepared {
    fn col(&self, s: &str, t: &str, c: &str) -> Option<&Col> {
        self.cols
            .iter()
            .find(|x| x.schema == s && x.table == t && x.name == c)
    }

    fn masked_of(&self, s: &str, t: &str) -> Vec<&String> {
        self.masked
            .iter()
            .filter(|(ms, mt, _)| ms == s && mt == t)
            .map(|(_, _, c)| c)
            .collect()
    }
}

/// Check `m` against the database `client` is connected to.
fn prepare(rt: &Handle, client: &Client, m: &Masking) -> Result<Prepared> {
    let cols = columns(rt, client)?;
    let db_cols: Vec<DbColumn> = cols
        .iter()
        .map(|c| DbColumn {
            schema: c.schema.clone(),
            table: c.table.clone(),
            column: c.name.clone(),
        })
        .collect();
    let rules = m.file.coverage(&db_cols).map_err(|errs| {
        OpsError::invalid(format!(
            "the masking file {} does not cover the restored database:\n  {}",
            m.file.path.display(),
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n  ")
        ))
    })?;
    let mut problems = Vec::new();
    for c in &cols {
        let Some(trules) = rules.get(&(c.schema.clone(), c.table.clone())) else {
            continue;
        };
        if let Some(r) = trules.get(&c.name) {
            if let Some(p) = type_problem(c, r, trules) {
                problems.push(p);
            }
        }
    }
    if !problems.is_empty() {
        return Err(OpsError::invalid(format!(
            "the masking file {} cannot be applied:\n  {}",
            m.file.path.display(),
            problems.join("\n  ")
        )));
    }
    let key = if m.file.needs_key() {
        Some(m.key()?.to_vec())
    } else {
        None
    };
    let masked = rules
        .iter()
        .flat_map(|((s, t), cs)| {
            cs.iter()
                .filter(|(_, r)| r.masks())
                .map(move |(c, _)| (s.clone(), t.clone(), c.clone()))
        })
        .collect();
    Ok(Prepared {
        cols,
        rules,
        masked,
        key,
    })
}

/// Large objects are outside any table: no rule can cover them.
fn refuse_large_objects(rt: &Handle, client: &Client) -> Result<()> {
    let blobs: i64 = rt
        .block_on(client.query_one("SELECT count(*) FROM pg_largeobject_metadata", &[]))
        .map_err(q("counting large objects"))?
        .get(0);
    if blobs > 0 {
        return Err(OpsError::invalid(format!(
            "the restored database holds {blobs} large object(s) (pg_largeobject), which a masking file cannot cover: a masked restore refuses them"
        )));
    }
    Ok(())
}

/// Non-null values of each of `cols` in `rel`.
fn count_values(rt: &Handle, client: &Client, rel: &str, cols: &[&String]) -> Result<Vec<u64>> {
    let sql = format!(
        "SELECT {} FROM {rel}",
        cols.iter()
            .map(|c| format!("count({})", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let row = rt
        .block_on(client.query_one(&sql, &[]))
        .map_err(q(format!("counting the values of {rel}")))?;
    Ok((0..cols.len())
        .map(|i| row.get::<_, i64>(i) as u64)
        .collect())
}

/// Up to `n` source values of column `c` of `rel` (rows drawn by ctid
/// first, so only they are turned into text). Null and fixed leave
/// nothing of the source to sample: their check is that every value is
/// NULL or the fixed value.
fn take_sample(
    rt: &Handle,
    client: &Client,
    rel: &str,
    c: &str,
    rule: &Rule,
    n: usize,
) -> Result<Sample> {
    let n = n as i64;
    Ok(match rule {
        Rule::Null | Rule::Fixed(_) | Rule::Keep => Sample::Values(Vec::new()),
        Rule::DateShift { by, .. } => Sample::Pairs(
            rt.block_on(client.query(
                &format!(
                    "SELECT ({by})::text, ({c})::text FROM {rel} WHERE ctid = ANY(ARRAY(\
                     SELECT ctid FROM {rel} WHERE {c} IS NOT NULL AND {by} IS NOT NULL ORDER BY random() LIMIT $1::bigint))",
                    by = quote_ident(by),
                    c = quote_ident(c)
                ),
                &[&n],
            ))
            .map_err(q(format!("sampling {rel}.{c}")))?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect(),
        ),
        _ => Sample::Values(
            rt.block_on(client.query(
                &format!(
                    "SELECT DISTINCT v FROM (SELECT ({c})::text AS v FROM {rel} WHERE ctid = ANY(ARRAY(\
                     SELECT ctid FROM {rel} WHERE {c} IS NOT NULL ORDER BY random() LIMIT $1::bigint * 4))) s LIMIT $1::bigint",
                    c = quote_ident(c)
                ),
                &[&n],
            ))
            .map_err(q(format!("sampling {rel}.{c}")))?
            .iter()
            .map(|r| r.get(0))
            .collect(),
        ),
    })
}

/// The temporary table `pg_temp.{name}` mapping every distinct value of
/// column `c` of `rel` to its fake.
fn fake_table(
    rt: &Handle,
    client: &Client,
    rel: &str,
    c: &str,
    kind: FakeKind,
    key: &[u8],
    name: &str,
) -> Result<String> {
    let values: Vec<String> = rt
        .block_on(client.query(
            &format!(
                "SELECT DISTINCT ({c})::text FROM {rel} WHERE {c} IS NOT NULL ORDER BY 1",
                c = quote_ident(c)
            ),
            &[],
        ))
        .map_err(q(format!("reading {rel}.{c}")))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let pairs = fake_map(key, kind, &values).map_err(|e| e.context(format!("column {rel}.{c}")))?;
    rt.block_on(client.batch_execute(&format!(
        "CREATE TEMP TABLE {name} (old text PRIMARY KEY, new text NOT NULL) ON COMMIT DROP"
    )))
    .map_err(q("creating a fake mapping table"))?;
    for chunk in pairs.chunks(10_000) {
        let (olds, news): (Vec<String>, Vec<String>) = chunk.iter().cloned().unzip();
        rt.block_on(client.execute(
            &format!("INSERT INTO pg_temp.{name} SELECT * FROM unnest($1::text[], $2::text[])"),
            &[&olds, &news],
        ))
        .map_err(q("filling a fake mapping table"))?;
    }
    rt.block_on(client.batch_execute(&format!("ANALYZE pg_temp.{name}")))
        .map_err(q("analyzing a fake mapping table"))?;
    Ok(format!("pg_temp.{name}"))
}

/// The masked value of every masked column of table `(s, t)` as an
/// expression over the row `hf_t` (read from `src`), with the temporary
/// tables of date-shift offsets it joins (`((subject, max_days), alias)`),
/// and their bind parameters.
struct TableExprs {
    sets: Vec<(String, String)>,
    offsets: Vec<((String, u32), String)>,
    params: Params,
}

impl TableExprs {
    /// ` FROM … WHERE …` joining the offsets (for an UPDATE) or
    /// `, … WHERE …` (after a FROM).
    fn joins(&self, lead: &str) -> String {
        if self.offsets.is_empty() {
            return String::new();
        }
        format!(
            "{lead}{} WHERE {}",
            self.offsets
                .iter()
                .map(|(_, a)| format!("pg_temp.{a} AS {a}"))
                .collect::<Vec<_>>()
                .join(", "),
            self.offsets
                .iter()
                .map(|((by, _), a)| format!(
                    "{a}.k = coalesce((hf_t.{})::text, '')",
                    quote_ident(by)
                ))
                .collect::<Vec<_>>()
                .join(" AND ")
        )
    }
}

#[allow(clippy::too_many_arguments)]
fn table_exprs(
    rt: &Handle,
    client: &Client,
    prep: &Prepared,
    s: &str,
    t: &str,
    src: &str,
    ti: usize,
    maps: &BTreeMap<(String, String, String), String>,
) -> Result<TableExprs> {
    let key = prep.key.as_deref();
    let trules = &prep.rules[&(s.to_string(), t.to_string())];
    let mut out = TableExprs {
        sets: Vec::new(),
        offsets: Vec::new(),
        params: Params::default(),
    };
    for (c, r) in trules.iter().filter(|(_, r)| r.masks()) {
        let col = prep
            .col(s, t, c)
            .ok_or_else(|| OpsError::invalid(format!("internal: no column {s}.{t}.{c}")))?;
        if let Rule::DateShift { by, max_days } = r {
            let k = (by.clone(), *max_days);
            let alias = match out.offsets.iter().find(|(o, _)| *o == k) {
                Some((_, a)) => a.clone(),
                None => {
                    // One HMAC per subject, not per row.
                    let a = format!("hf_off_{ti}_{}", out.offsets.len());
                    let mut op = Params::default();
                    let kkey =
                        key.ok_or_else(|| OpsError::invalid("internal: date_shift without a key"))?;
                    let h = hmac_sql(&mut op, kkey, "hf_k.k");
                    let m = i64::from(*max_days);
                    rt.block_on(client.batch_execute(&format!(
                        "CREATE TEMP TABLE {a} (k text PRIMARY KEY, off integer NOT NULL) ON COMMIT DROP"
                    )))
                    .map_err(q("creating a date shift table"))?;
                    let sql = format!(
                        "INSERT INTO pg_temp.{a} SELECT k, (v - {m} + (v >= {m})::int)::int FROM \
                         (SELECT k, (('x' || left(encode({h}, 'hex'), 8))::bit(32)::bigint % {}) AS v \
                          FROM (SELECT DISTINCT coalesce(({})::text, '') AS k FROM {src}) hf_k) hf_v",
                        2 * m,
                        quote_ident(by),
                    );
                    rt.block_on(client.execute(&sql, &op.refs()))
                        .map_err(q(format!("computing the date shifts of {s}.{t} by {by}")))?;
                    rt.block_on(client.batch_execute(&format!("ANALYZE pg_temp.{a}")))
                        .map_err(q("analyzing a date shift table"))?;
                    out.offsets.push((k, a.clone()));
                    a
                }
            };
            let e = match col.base.as_str() {
                "date" => format!("(hf_t.{} + {alias}.off)", quote_ident(c)),
                _ => format!(
                    "(hf_t.{} + {alias}.off * interval '86400 seconds')",
                    quote_ident(c)
                ),
            };
            out.sets.push((c.clone(), e));
            continue;
        }
        let map = maps
            .get(&(s.to_string(), t.to_string(), c.clone()))
            .map(String::as_str);
        // Qualified: a fake's subquery has columns of its own.
        let e = mask_expr(
            &mut out.params,
            key,
            col,
            r,
            &format!("hf_t.{}", quote_ident(c)),
            None,
            map,
        )?;
        out.sets.push((c.clone(), e));
    }
    Ok(out)
}

/// Check one masked column of `rel` after the masking: no sampled source
/// value remains, a fixed column holds only its value, a null one only
/// NULL. Returns the column's report and what failed.
#[allow(clippy::too_many_arguments)]
fn verify_column(
    rt: &Handle,
    client: &Client,
    prep: &Prepared,
    maps: &BTreeMap<(String, String, String), String>,
    (s, t, c): (&str, &str, &str),
    rel: &str,
    sample: &Sample,
    values: u64,
) -> Result<(ColumnReport, Vec<String>)> {
    let key = prep.key.as_deref();
    let rule = &prep.rules[&(s.to_string(), t.to_string())][c];
    let mut failures = Vec::new();
    let (sampled, survivors) = match sample {
        Sample::Values(vals) => {
            // Values a rule itself writes are not survivors: the fixed
            // value, a dictionary fake's own words.
            let check: Vec<String> = vals
                .iter()
                .filter(|v| match rule {
                    Rule::Fixed(f) => *v != f,
                    Rule::Fake(k) => !fake::in_dictionary(*k, v),
                    _ => true,
                })
                .cloned()
                .collect();
            let n: i64 = if check.is_empty() {
                0
            } else {
                rt.block_on(client.query_one(
                    &format!(
                        "SELECT count(*) FROM {rel} WHERE ({})::text = ANY($1::text[])",
                        quote_ident(c)
                    ),
                    &[&check],
                ))
                .map_err(q(format!("verifying {s}.{t}.{c}")))?
                .get(0)
            };
            (vals.len(), n as u64)
        }
        Sample::Pairs(pairs) => {
            let Rule::DateShift { by, .. } = rule else {
                return Err(OpsError::invalid(
                    "internal: date pairs of a column that is not shifted",
                ));
            };
            let subj_col = prep
                .col(s, t, by)
                .ok_or_else(|| OpsError::invalid(format!("internal: no column {s}.{t}.{by}")))?;
            let subj_rule = prep.rules[&(s.to_string(), t.to_string())]
                .get(by)
                .cloned()
                .unwrap_or(Rule::Keep);
            // One pass over the table for every sampled pair: the
            // subject's masked value (the same expression on the sampled
            // original) joined with the sampled date.
            let mut p = Params::default();
            let subjects: Vec<String> = pairs.iter().filter_map(|(s, _)| s.clone()).collect();
            let dates: Vec<String> = pairs
                .iter()
                .filter(|(s, _)| s.is_some())
                .map(|(_, d)| d.clone())
                .collect();
            let a = p.push(subjects);
            let b = p.push(dates);
            let lit = format!("CAST(hf_s.subj AS {})", subj_col.sql_type);
            let map = maps
                .get(&(s.to_string(), t.to_string(), by.clone()))
                .map(String::as_str);
            let subj_after = mask_expr(&mut p, key, subj_col, &subj_rule, &lit, None, map)?;
            let sql = format!(
                "SELECT count(*) FROM {rel} hf_t JOIN (SELECT subj, d, {subj_after} AS after FROM unnest({a}::text[], {b}::text[]) AS hf_s(subj, d)) hf_m \
                 ON hf_t.{} = hf_m.after AND (hf_t.{})::text = hf_m.d",
                quote_ident(by),
                quote_ident(c)
            );
            let n = rt
                .block_on(client.query_one(&sql, &p.refs()))
                .map_err(q(format!("verifying {s}.{t}.{c}")))?
                .get::<_, i64>(0) as u64;
            (pairs.len(), n)
        }
    };
    if survivors > 0 {
        failures.push(format!(
            "{s}.{t}.{c} ({}): {survivors} row(s) still hold one of {sampled} sampled source values",
            rule.describe()
        ));
    }
    if let Rule::Fixed(v) = rule {
        let col = prep
            .col(s, t, c)
            .ok_or_else(|| OpsError::invalid(format!("internal: no column {s}.{t}.{c}")))?;
        let other: i64 = rt
            .block_on(client.query_one(
                &format!(
                    "SELECT count(*) FROM {rel} WHERE {} IS DISTINCT FROM CAST($1::text AS {})",
                    quote_ident(c),
                    col.sql_type
                ),
                &[v],
            ))
            .map_err(q(format!("verifying {s}.{t}.{c}")))?
            .get(0);
        if other > 0 {
            failures.push(format!(
                "{s}.{t}.{c} (fixed): {other} value(s) are not the fixed value"
            ));
        }
    }
    if matches!(rule, Rule::Null) {
        let left: i64 = rt
            .block_on(
                client.query_one(&format!("SELECT count({}) FROM {rel}", quote_ident(c)), &[]),
            )
            .map_err(q(format!("verifying {s}.{t}.{c}")))?
            .get(0);
        if left > 0 {
            failures.push(format!("{s}.{t}.{c} (null): {left} value(s) are not NULL"));
        }
    }
    Ok((
        ColumnReport {
            table: format!("{s}.{t}"),
            column: c.to_string(),
            rule: rule.describe(),
            values,
            sampled,
            survivors,
        },
        failures,
    ))
}

fn verification_failed(failures: Vec<String>) -> Result<()> {
    if failures.is_empty() {
        return Ok(());
    }
    Err(OpsError::invalid(format!(
        "the masking verification failed:\n  {}",
        failures.join("\n  ")
    )))
}

/// Apply the masking file in the database `dsn` names (a restore that is
/// already complete): check coverage, mask, verify, commit, VACUUM FULL
/// the masked tables. This is the path of a masked restore with erasures
/// to re-apply first (they need the unmasked rows and every constraint);
/// otherwise [`Staged`] masks the rows while they are restored.
/// On an error nothing is committed: the caller must still drop the
/// database, which holds the unmasked restore.
pub fn apply(rt: &Handle, dsn: &Dsn, m: &Masking) -> Result<MaskReport> {
    let client = dsn.connect(rt)?;
    let prep = prepare(rt, &client, m)?;
    let key = prep.key.as_deref();
    let masked = &prep.masked;
    refuse_large_objects(rt, &client)?;
    let tx = |sql: &str, what: &str| -> Result<()> {
        rt.block_on(client.batch_execute(sql))
            .map_err(q(what.to_string()))
    };
    tx("BEGIN", "starting the masking transaction")?;
    let mut dropped_indexes: Vec<(String, String)> = Vec::new();
    let masked_tables: BTreeSet<(String, String)> = masked
        .iter()
        .map(|(s, t, _)| (s.clone(), t.clone()))
        .collect();
    let res = (|| -> Result<MaskReport> {
        // 1. Samples and counts, before anything changes.
        let mut samples: BTreeMap<(String, String, String), (Sample, u64)> = BTreeMap::new();
        for (s, t) in &masked_tables {
            let cs = prep.masked_of(s, t);
            let counts = count_values(rt, &client, &qt(s, t), &cs)?;
            for (c, n) in cs.iter().zip(counts) {
                let rule = &prep.rules[&(s.clone(), t.clone())][*c];
                let sample = take_sample(rt, &client, &qt(s, t), c, rule, m.sample)?;
                samples.insert((s.clone(), t.clone(), (*c).clone()), (sample, n));
            }
        }

        // 2. Fake mappings, drawn here from each value's HMAC.
        let mut maps: BTreeMap<(String, String, String), String> = BTreeMap::new();
        for (i, (s, t, c)) in masked.iter().enumerate() {
            let Rule::Fake(kind) = &prep.rules[&(s.clone(), t.clone())][c] else {
                continue;
            };
            let k = key.ok_or_else(|| OpsError::invalid("internal: fake without key"))?;
            let name = fake_table(rt, &client, &qt(s, t), c, *kind, k, &format!("hf_fake_{i}"))?;
            maps.insert((s.clone(), t.clone(), c.clone()), name);
        }

        // 3. Foreign keys over masked columns out, user triggers off.
        let fks = foreign_keys(rt, &client, masked)?;
        for fk in &fks {
            tx(
                &format!(
                    "ALTER TABLE {} DROP CONSTRAINT {}",
                    qt(&fk.table.0, &fk.table.1),
                    quote_ident(&fk.name)
                ),
                &format!("dropping foreign key {} for the masking", fk.name),
            )?;
        }
        let mut triggers = Vec::new();
        for (s, t) in &masked_tables {
            let names: Vec<String> = rt
                .block_on(client.query(
                    "SELECT tg.tgname::text FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid \
                     JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = $1 AND c.relname = $2 AND NOT tg.tgisinternal AND tg.tgenabled <> 'D'",
                    &[s, t],
                ))
                .map_err(q(format!("listing the triggers of {s}.{t}")))?
                .iter()
                .map(|r| r.get(0))
                .collect();
            for n in names {
                tx(
                    &format!(
                        "ALTER TABLE {} DISABLE TRIGGER {}",
                        qt(s, t),
                        quote_ident(&n)
                    ),
                    "disabling a trigger for the masking",
                )?;
                triggers.push((s.clone(), t.clone(), n));
            }
        }

        // 4. Plain indexes of masked tables out (not unique, no
        // constraint, default tablespace, no comment: what their
        // definition alone recreates): VACUUM FULL rebuilds every index
        // anyway, so they are built once afterwards instead of updated row
        // by row now.
        for (s, t) in &masked_tables {
            let rows = rt
                .block_on(client.query(
                    "SELECT ic.relname::text, pg_get_indexdef(i.indexrelid) FROM pg_index i \
                     JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class tc ON tc.oid = i.indrelid \
                     JOIN pg_namespace n ON n.oid = tc.relnamespace \
                     WHERE n.nspname = $1 AND tc.relname = $2 AND tc.relkind = 'r' AND NOT i.indisunique \
                       AND ic.reltablespace = 0 AND obj_description(i.indexrelid, 'pg_class') IS NULL \
                       AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) \
                       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.refobjid = i.indexrelid AND d.deptype <> 'a' AND d.classid = 'pg_constraint'::regclass)",
                    &[s, t],
                ))
                .map_err(q(format!("listing the indexes of {s}.{t}")))?;
            for r in rows {
                let (name, def): (String, String) = (r.get(0), r.get(1));
                tx(
                    &format!("DROP INDEX {}", qt(s, &name)),
                    &format!("dropping index {name} for the masking"),
                )?;
                dropped_indexes.push((format!("{s}.{name}"), def));
            }
        }

        // 5. One UPDATE per table; every expression sees the row as it was.
        let mut tables = BTreeMap::new();
        for (ti, (s, t)) in masked_tables.iter().enumerate() {
            let e = table_exprs(rt, &client, &prep, s, t, &qt(s, t), ti, &maps)?;
            let sql = format!(
                "UPDATE {} AS hf_t SET {}{}",
                qt(s, t),
                e.sets
                    .iter()
                    .map(|(c, x)| format!("{} = {x}", quote_ident(c)))
                    .collect::<Vec<_>>()
                    .join(", "),
                e.joins(" FROM ")
            );
            let n = rt
                .block_on(client.execute(&sql, &e.params.refs()))
                .map_err(q(format!("masking table {s}.{t}")))?;
            tables.insert(format!("{s}.{t}"), n);
        }

        // Materialized views were filled by the restore from the unmasked
        // tables: fill them again from the masked ones (in creation
        // order, which is the order they depend on each other).
        let matviews: Vec<(String, String)> = rt
            .block_on(client.query(
                "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind = 'm' AND c.relispopulated ORDER BY c.oid",
                &[],
            ))
            .map_err(q("listing materialized views"))?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        if !masked.is_empty() {
            for (s, t) in &matviews {
                tx(
                    &format!("REFRESH MATERIALIZED VIEW {}", qt(s, t)),
                    &format!("refreshing materialized view {s}.{t} from the masked tables"),
                )?;
            }
        }

        // 6. Foreign keys back (validated now), triggers on.
        let mut fk_names = Vec::new();
        for fk in &fks {
            let table = format!("{}.{}", fk.table.0, fk.table.1);
            tx(
                &format!(
                    "ALTER TABLE {} ADD CONSTRAINT {} {}",
                    qt(&fk.table.0, &fk.table.1),
                    quote_ident(&fk.name),
                    fk.def
                ),
                &format!(
                    "foreign key {} of {table} no longer holds after masking (give the referencing and the referenced columns the same rule, e.g. hash on both, and the same type)",
                    fk.name
                ),
            )?;
            fk_names.push(format!("{table}.{}", fk.name));
        }
        for (s, t, n) in &triggers {
            tx(
                &format!("ALTER TABLE {} ENABLE TRIGGER {}", qt(s, t), quote_ident(n)),
                "enabling a trigger after the masking",
            )?;
        }

        // 7. Verify: no sampled source value remains.
        let mut reports = Vec::new();
        let mut failures = Vec::new();
        for ((s, t, c), (sample, values)) in &samples {
            let (r, f) = verify_column(
                rt,
                &client,
                &prep,
                &maps,
                (s, t, c),
                &qt(s, t),
                sample,
                *values,
            )?;
            reports.push(r);
            failures.extend(f);
        }
        verification_failed(failures)?;
        Ok(MaskReport {
            file: m.file.path.display().to_string(),
            columns: reports,
            tables,
            foreign_keys_checked: fk_names,
            verified: true,
            vacuumed: false,
            staged: false,
            files: Vec::new(),
        })
    })();
    let mut report = match res {
        Ok(r) => r,
        Err(e) => {
            let _ = rt.block_on(client.batch_execute("ROLLBACK"));
            return Err(e);
        }
    };
    tx("COMMIT", "committing the masking")?;
    // The old row versions still hold the unmasked values: rewrite the
    // masked tables so they are gone from the heap (WAL: see README).
    for (s, t) in &masked_tables {
        tx(
            &format!("VACUUM FULL {}", qt(s, t)),
            &format!("rewriting {s}.{t} after the masking"),
        )?;
        // Statistics taken before the masking (autovacuum may have run)
        // keep the masked columns' most common values: take theirs again.
        let cols: Vec<String> = prep
            .masked_of(s, t)
            .into_iter()
            .map(|c| quote_ident(c))
            .collect();
        tx(
            &format!("ANALYZE {} ({})", qt(s, t), cols.join(", ")),
            &format!("analyzing {s}.{t} after the masking"),
        )?;
    }
    report.vacuumed = true;
    for (name, def) in &dropped_indexes {
        tx(
            def,
            &format!("creating index {name} again after the masking"),
        )?;
    }
    Ok(report)
}

/// The masked restore's hook into the restore itself
/// ([`holdfast_postgres::script`]): the rows of every table with a
/// masked column are copied into a temporary table (the fields of `null`
/// and `fixed` columns blanked on the way), then written into their table
/// masked, with one `INSERT … SELECT`, and verified there; the temporary
/// table is dropped. All of it happens before the post-data section, so
/// indexes are built and foreign keys validated once, on masked rows (a
/// foreign key between columns masked differently fails there), triggers
/// do not exist yet, and materialized views are filled from masked
/// tables. Unmasked rows are only ever in temporary tables (no WAL, gone
/// with the transaction), so nothing needs a rewrite afterwards.
pub struct Staged<'a> {
    m: &'a Masking,
    prep: Option<Prepared>,
    /// Temporary tables made so far (names are numbered).
    n: usize,
    columns: Vec<ColumnReport>,
    tables: BTreeMap<String, u64>,
    foreign_keys: Vec<String>,
    /// The error behind the last failed hook call (its text alone goes
    /// through the restore).
    pub error: Option<OpsError>,
}

impl<'a> Staged<'a> {
    pub fn new(m: &'a Masking) -> Self {
        Staged {
            m,
            prep: None,
            n: 0,
            columns: Vec::new(),
            tables: BTreeMap::new(),
            foreign_keys: Vec::new(),
            error: None,
        }
    }

    /// The report, once the restore committed.
    pub fn report(self) -> MaskReport {
        MaskReport {
            file: self.m.file.path.display().to_string(),
            columns: self.columns,
            tables: self.tables,
            foreign_keys_checked: self.foreign_keys,
            verified: true,
            vacuumed: false,
            staged: true,
            files: Vec::new(),
        }
    }

    fn keep<T>(&mut self, r: Result<T>) -> holdfast_postgres::Result<T> {
        r.map_err(|e| {
            let text = e.to_string();
            self.error = Some(e);
            holdfast_postgres::PgError::Invalid(text)
        })
    }

    /// The rules that apply to `t`: its own, or its partition root's.
    fn rules_of(&self, rt: &Handle, c: &Client, t: &CopyTarget) -> Result<(String, String)> {
        let prep = self.prep.as_ref().ok_or_else(|| {
            OpsError::invalid("internal: a table's rows came before the masking was prepared")
        })?;
        let own = (t.schema.clone(), t.table.clone());
        if prep.rules.contains_key(&own) {
            return Ok(own);
        }
        let row = rt
            .block_on(c.query_opt(
                "SELECT n.nspname::text, r.relname::text, cl.relkind::text, cl.relispartition \
                 FROM pg_class cl JOIN pg_namespace cn ON cn.oid = cl.relnamespace \
                 JOIN pg_class r ON r.oid = pg_partition_root(cl.oid) JOIN pg_namespace n ON n.oid = r.relnamespace \
                 WHERE cn.nspname = $1 AND cl.relname = $2",
                &[&t.schema, &t.table],
            ))
            .map_err(q(format!("looking up table {}.{}", t.schema, t.table)))?;
        match row {
            // Coverage gave every partitioned table its rules: a root
            // without them would let rows through unmasked, so refuse.
            Some(r) if r.get::<_, bool>(3) => {
                let root: (String, String) = (r.get(0), r.get(1));
                if prep.rules.contains_key(&root) {
                    Ok(root)
                } else {
                    Err(OpsError::invalid(format!(
                        "partition {}.{} belongs to {}.{}, which the masking file does not cover: a masked restore refuses it",
                        t.schema, t.table, root.0, root.1
                    )))
                }
            }
            _ => Err(OpsError::invalid(format!(
                "the dump copies rows into {}.{}, which the masking file does not cover (not an ordinary table of the restored schema): a masked restore refuses it",
                t.schema, t.table
            ))),
        }
    }

    fn divert_table(&mut self, rt: &Handle, c: &Client, t: &CopyTarget) -> Result<Option<Divert>> {
        let key = self.rules_of(rt, c, t)?;
        let prep = self
            .prep
            .as_ref()
            .ok_or_else(|| OpsError::invalid("internal: unprepared"))?;
        let trules = &prep.rules[&key];
        if !trules.values().any(Rule::masks) {
            return Ok(None);
        }
        // Every masked column must be among the copied ones (generated
        // columns are not copied, and cannot be masked).
        for (col, r) in trules.iter().filter(|(_, r)| r.masks()) {
            if !t.columns.contains(col) {
                return Err(OpsError::invalid(format!(
                    "the dump's rows of {}.{} lack column {col}, which the masking file masks",
                    t.schema, t.table
                )));
            }
            let _ = r;
        }
        self.n += 1;
        let stage = format!("hf_stage_{}", self.n);
        let cols = t
            .columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        // Same names and types, no constraints (blanked fields are NULL).
        rt.block_on(c.batch_execute(&format!(
            "CREATE TEMP TABLE {stage} ON COMMIT DROP AS SELECT {cols} FROM ONLY {} WITH NO DATA",
            qt(&t.schema, &t.table)
        )))
        .map_err(q(format!("staging the rows of {}.{}", t.schema, t.table)))?;
        let null_fields = t
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(trules.get(*c), Some(Rule::Null | Rule::Fixed(_))))
            .map(|(i, _)| i)
            .collect();
        Ok(Some(Divert {
            into: format!("pg_temp.{stage}"),
            null_fields,
        }))
    }

    fn mask_table(
        &mut self,
        rt: &Handle,
        c: &Client,
        t: &CopyTarget,
        d: &Divert,
        staged: u64,
        nulled: &[u64],
    ) -> Result<()> {
        let (rs, rt_) = self.rules_of(rt, c, t)?;
        let prep = self
            .prep
            .as_ref()
            .ok_or_else(|| OpsError::invalid("internal: unprepared"))?;
        let key = prep.key.as_deref();
        let stage = &d.into;
        // A partition's rows go in through their partitioned table: a
        // date shift of the partition key may move a row to another
        // partition. The checks look at the whole partitioned table (its
        // partitions only ever receive masked rows); a plain table's at
        // its own rows (an inheritance child is masked by its own rules).
        let partition = (rs.as_str(), rt_.as_str()) != (t.schema.as_str(), t.table.as_str());
        // A dump made with --load-via-partition-root copies into the
        // partitioned table itself: `ONLY` of it would hold no row.
        let partitioned: bool = rt
            .block_on(c.query_one(
                "SELECT c.relkind = 'p' FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2",
                &[&t.schema, &t.table],
            ))
            .map_err(q(format!("looking up table {}.{}", t.schema, t.table)))?
            .get(0);
        let (into, target) = if partition || partitioned {
            (qt(&rs, &rt_), qt(&rs, &rt_))
        } else {
            (
                qt(&t.schema, &t.table),
                format!("ONLY {}", qt(&t.schema, &t.table)),
            )
        };
        let cs = prep.masked_of(&rs, &rt_);
        // Samples and counts from the staged rows; blanked columns were
        // counted on the way in.
        let counts = count_values(rt, c, stage, &cs)?;
        let mut samples = Vec::new();
        for (col, n) in cs.iter().zip(counts) {
            let rule = &prep.rules[&(rs.clone(), rt_.clone())][*col];
            let n = match t.columns.iter().position(|x| x == *col) {
                Some(i) => match d.null_fields.iter().position(|f| *f == i) {
                    Some(k) => nulled.get(k).copied().unwrap_or(0),
                    None => n,
                },
                None => n,
            };
            samples.push((
                (*col).clone(),
                take_sample(rt, c, stage, col, rule, self.m.sample)?,
                n,
            ));
        }
        let mut maps = BTreeMap::new();
        for col in &cs {
            let Rule::Fake(kind) = &prep.rules[&(rs.clone(), rt_.clone())][*col] else {
                continue;
            };
            let k = key.ok_or_else(|| OpsError::invalid("internal: fake without key"))?;
            self.n += 1;
            let name = fake_table(rt, c, stage, col, *kind, k, &format!("hf_fake_{}", self.n))?;
            maps.insert((rs.clone(), rt_.clone(), (*col).clone()), name);
        }
        self.n += 1;
        let e = table_exprs(rt, c, prep, &rs, &rt_, stage, self.n, &maps)?;
        let select: Vec<String> = t
            .columns
            .iter()
            .map(|col| match e.sets.iter().find(|(n, _)| n == col) {
                Some((_, x)) => x.clone(),
                None => format!("hf_t.{}", quote_ident(col)),
            })
            .collect();
        let sql = format!(
            "INSERT INTO {into} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {stage} AS hf_t{}",
            t.columns
                .iter()
                .map(|c| quote_ident(c))
                .collect::<Vec<_>>()
                .join(", "),
            select.join(", "),
            e.joins(", ")
        );
        let rows = rt
            .block_on(c.execute(&sql, &e.params.refs()))
            .map_err(q(format!(
                "writing the masked rows of {}.{}",
                t.schema, t.table
            )))?;
        if rows != staged {
            return Err(OpsError::invalid(format!(
                "masking {}.{} wrote {rows} row(s) of {staged}: refused",
                t.schema, t.table
            )));
        }
        let mut failures = Vec::new();
        for (col, sample, values) in &samples {
            let (mut r, f) = verify_column(
                rt,
                c,
                prep,
                &maps,
                (&rs, &rt_, col),
                &target,
                sample,
                *values,
            )?;
            r.table = format!("{}.{}", t.schema, t.table);
            self.columns.push(r);
            failures.extend(f);
        }
        verification_failed(failures)?;
        // The unmasked rows go now, not at commit.
        rt.block_on(c.batch_execute(&format!("DROP TABLE {stage}")))
            .map_err(q("dropping a staging table"))?;
        for m in maps.values() {
            rt.block_on(c.batch_execute(&format!("DROP TABLE {m}")))
                .map_err(q("dropping a fake mapping table"))?;
        }
        for (_, a) in &e.offsets {
            rt.block_on(c.batch_execute(&format!("DROP TABLE pg_temp.{a}")))
                .map_err(q("dropping a date shift table"))?;
        }
        self.tables
            .insert(format!("{}.{}", t.schema, t.table), rows);
        Ok(())
    }
}

impl DataHook for Staged<'_> {
    fn before_data(&mut self, rt: &Handle, c: &Client) -> holdfast_postgres::Result<()> {
        // Large objects exist by now (pre-data creates them).
        let p = prepare(rt, c, self.m).and_then(|p| refuse_large_objects(rt, c).map(|()| p));
        let p = self.keep(p)?;
        self.prep = Some(p);
        Ok(())
    }

    fn divert(
        &mut self,
        rt: &Handle,
        c: &Client,
        t: &CopyTarget,
    ) -> holdfast_postgres::Result<Option<Divert>> {
        let r = self.divert_table(rt, c, t);
        self.keep(r)
    }

    fn diverted(
        &mut self,
        rt: &Handle,
        c: &Client,
        t: &CopyTarget,
        d: &Divert,
        rows: u64,
        nulled: &[u64],
    ) -> holdfast_postgres::Result<()> {
        // `rows`: what the COPY put in the staging table.
        let r = self.mask_table(rt, c, t, d, rows, nulled);
        self.keep(r)
    }

    fn finish(&mut self, rt: &Handle, c: &Client) -> holdfast_postgres::Result<()> {
        let r = (|| {
            // A dump without any table data never prepared.
            if self.prep.is_none() {
                self.prep = Some(prepare(rt, c, self.m)?);
            }
            refuse_large_objects(rt, c)?;
            // The post-data section created the foreign keys, which
            // validated them on the masked rows.
            let prep = self
                .prep
                .as_ref()
                .ok_or_else(|| OpsError::invalid("internal: unprepared"))?;
            self.foreign_keys = foreign_keys(rt, c, &prep.masked)?
                .into_iter()
                .map(|fk| format!("{}.{}.{}", fk.table.0, fk.table.1, fk.name))
                .collect();
            Ok(())
        })();
        self.keep(r)
    }
}

/// A file restore's `[[files]]` rules: every restored entry (of the
/// snapshot paths `includes`, empty meaning all) whose source path
/// matches a pattern is dropped (a directory with everything in it) or,
/// for `replace`, has its content replaced by the placeholder (each file
/// under a matching directory). The first matching rule decides. Entries
/// the restore did not write (erased, or left out) are skipped.
pub fn apply_files(
    repo: &holdfast_repo::Repository,
    snap: &holdfast_repo::snapshot::SnapshotEntry,
    includes: &[Vec<u8>],
    target: &Path,
    m: &Masking,
) -> Result<Vec<FileMasked>> {
    if m.file_globs.is_empty() {
        return Ok(Vec::new());
    }
    let hits = crate::erasure::matching_entries(repo, snap, includes, |path| {
        m.file_globs.iter().position(|(g, _)| g.matches(path))
    })?;
    let mut done = Vec::new();
    let mut dropped: Vec<Vec<u8>> = Vec::new();
    for (i, path) in hits {
        if dropped
            .iter()
            .any(|r| path.starts_with(r) && path.get(r.len()) == Some(&b'/'))
        {
            continue;
        }
        let full = crate::erasure::restored_path(target, &path);
        let meta = match std::fs::symlink_metadata(&full) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(OpsError::Io {
                    context: format!("masking {}", full.display()),
                    cause: e,
                })
            }
        };
        let io = |e: std::io::Error| OpsError::Io {
            context: format!("masking {}", full.display()),
            cause: e,
        };
        let action = match &m.file_globs[i].1 {
            FileAction::Drop => {
                if meta.is_dir() {
                    std::fs::remove_dir_all(&full).map_err(io)?;
                } else {
                    std::fs::remove_file(&full).map_err(io)?;
                }
                dropped.push(path.clone());
                "drop"
            }
            FileAction::Replace(content) => {
                if !meta.is_file() {
                    // Directories: their files are matched on their own
                    // only if the pattern reaches them; replace those.
                    if meta.is_dir() {
                        replace_under(&full, content).map_err(io)?;
                    }
                    continue;
                }
                std::fs::write(&full, content).map_err(io)?;
                "replace"
            }
        };
        done.push(FileMasked {
            path: String::from_utf8_lossy(&path).into_owned(),
            action: action.into(),
        });
    }
    Ok(done)
}

/// Replace the content of every regular file under `dir`.
fn replace_under(dir: &Path, content: &str) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            replace_under(&e.path(), content)?;
        } else if t.is_file() {
            std::fs::write(e.path(), content)?;
        }
    }
    Ok(())
}

/// The temporary databases of earlier masked restores of `target` that
/// did not finish (named as [`staging_name`] names them).
pub fn stale_staging(rt: &Handle, admin: &Client, target: &str) -> Result<Vec<String>> {
    let base = staging_base(target);
    let names: Vec<String> = rt
        .block_on(admin.query("SELECT datname::text FROM pg_database", &[]))
        .map_err(q("listing databases"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(names
        .into_iter()
        .filter(|n| {
            n.strip_prefix(&base)
                .and_then(|r| r.strip_prefix("_hfmask_"))
                .is_some_and(|h| h.len() == 8 && h.chars().all(|c| c.is_ascii_hexdigit()))
        })
        .collect())
}

/// The part of a target's name its temporary database starts with.
fn staging_base(target: &str) -> String {
    let mut base = String::new();
    for ch in target.chars() {
        if base.len() + ch.len_utf8() > 40 {
            break;
        }
        base.push(ch);
    }
    base
}

/// The name a masked restore uses until it is verified: the target's
/// with a random suffix, within PostgreSQL's 63 bytes.
pub fn staging_name(target: &str) -> String {
    let base = staging_base(target);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or(0);
    format!(
        "{base}_hfmask_{:08x}",
        nanos ^ std::process::id().rotate_left(16)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_make_the_same_hmac_as_ring() {
        for key in [vec![7u8; 32], vec![1u8; 64], (0..100u8).collect::<Vec<_>>()] {
            let (i, o) = pads(&key);
            let msg = b"MRN000012345";
            let inner = ring::digest::digest(&ring::digest::SHA256, &[&i[..], msg].concat());
            let outer =
                ring::digest::digest(&ring::digest::SHA256, &[&o[..], inner.as_ref()].concat());
            assert_eq!(outer.as_ref(), &hmac(&key, msg)[..]);
        }
    }

    #[test]
    fn unique_fakes_never_collide_nor_reuse_an_original() {
        let key = [9u8; 32];
        // 3 digits: 1000 possible values; 600 originals leave 400 free
        // for 600 fakes: refused, with the way out.
        let crowded: Vec<String> = (0..600).map(|i| format!("A{i:03}")).collect();
        let e = fake_map(&key, FakeKind::Mrn, &crowded)
            .unwrap_err()
            .to_string();
        assert!(e.contains("use hash"), "{e}");
        // 300 originals: 700 free.
        let values: Vec<String> = (0..300).map(|i| format!("A{i:03}")).collect();
        let map = fake_map(&key, FakeKind::Mrn, &values).unwrap();
        let fakes: HashSet<&String> = map.iter().map(|(_, f)| f).collect();
        assert_eq!(fakes.len(), values.len());
        for (o, f) in &map {
            assert!(!values.contains(f), "{o} -> {f} is another original");
            assert!(f.starts_with('A') && f.len() == 4);
        }
        // Deterministic.
        assert_eq!(map, fake_map(&key, FakeKind::Mrn, &values).unwrap());
    }
}
