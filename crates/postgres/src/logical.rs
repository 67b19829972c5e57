//! Logical backups: `pg_dump` streamed into the repository, `pg_restore` back.
//!
//! Backup: for each database we open a REPEATABLE READ transaction, export
//! its snapshot and hand it to `pg_dump --snapshot`, so the exact per-table
//! row counts we record (counted on our connection, concurrently with the
//! dump) describe precisely the data in the dump. `pg_dump -Fc -Z0` writes
//! uncompressed custom format to a pipe that goes straight into the
//! content-defined chunker with the DATABASE chunk sizes: no temp file, and
//! yesterday's unchanged table data yields the same chunks again. The
//! snapshot is saved only after every dump exited 0 and every pack and
//! index object is durable; any failure leaves no snapshot.
//!
//! Restore: creates the database (or drops and recreates it with `clean`),
//! refuses a non-empty one, and runs `pg_restore` streaming from the
//! repository on stdin (one job) or from a temporary file (parallel jobs,
//! which need a seekable archive).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use holdfast_repo::chunker::ChunkerParams;
use holdfast_repo::reader::ContentReader;
use holdfast_repo::snapshot::{Snapshot, SnapshotEntry, Summary};
use holdfast_repo::tree::Tree;
use holdfast_repo::writer::{BlobWriter, WriterOptions};
use holdfast_repo::{Id, Repository};
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tokio_postgres::Client;

use crate::conn::{Dsn, PgTools};
use crate::dumpscan::{self, DumpScanner, ScanningReader};
use crate::error::{PgError, Result};
use crate::fstree;
use crate::sqltext::quote_ident;
use crate::tool;
use crate::{dbprops, globals};

pub const KIND_LOGICAL: &str = "postgres-logical";
const GLOBALS_FILE: &str = "globals.sql";
/// Default zstd level for dumps; see [`LogicalBackupOptions::compression_level`].
pub const DUMP_LEVEL: i32 = 1;

/// What to back up and how.
#[derive(Debug, Clone)]
pub struct LogicalBackupOptions {
    /// Databases to dump; empty means the DSN's database, or every
    /// connectable non-template database when the DSN names none.
    pub databases: Vec<String>,
    /// Snapshot source name; default `postgres:<host>:<port>`.
    pub source: Option<String>,
    pub tags: Vec<String>,
    pub tools: PgTools,
    /// Dump roles and tablespaces with `pg_dumpall --globals-only`.
    pub globals: bool,
    /// Record exact per-table row counts as of the dump's snapshot. They
    /// are counted from the dump stream itself (no second scan); a table the
    /// stream does not account for is counted with `count(*)`.
    pub row_counts: bool,
    /// Chunk sizes for the dump stream.
    pub chunker: ChunkerParams,
    /// zstd level of the dump's blobs (default 1; the CLI's
    /// `HOLDFAST_PG_DUMP_LEVEL` overrides, for measuring). Dumps are large and arrive while `pg_dump` and its
    /// server process compete for the same cores, so compression speed
    /// decides the wall time: on the EHR benchmark level 1 is twice as fast
    /// as level 3 and stores about as much.
    pub compression_level: i32,
}

impl Default for LogicalBackupOptions {
    fn default() -> Self {
        LogicalBackupOptions {
            databases: Vec::new(),
            source: None,
            tags: Vec::new(),
            tools: PgTools::discover(),
            globals: true,
            row_counts: true,
            chunker: ChunkerParams::DATABASE,
            compression_level: DUMP_LEVEL,
        }
    }
}

/// Chunk sizes written `min,avg,max` (bytes), as the CLI's
/// `HOLDFAST_PG_DUMP_CHUNK` takes them for benchmarking; `None` if they do
/// not parse or are not valid chunker sizes.
pub fn parse_chunk_sizes(v: &str) -> Option<ChunkerParams> {
    let n: Vec<u32> = v.split(',').filter_map(|x| x.trim().parse().ok()).collect();
    let p = ChunkerParams {
        min: *n.first()?,
        avg: *n.get(1)?,
        max: *n.get(2)?,
    };
    p.validate().ok().map(|_| p)
}

/// Per-database facts recorded in `Snapshot.meta["databases"]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatabaseInfo {
    /// File of the dump in the snapshot tree.
    pub file: String,
    pub size_bytes: u64,
    pub dump_bytes: u64,
    pub encoding: String,
    /// `schema.table` -> rows, as of the dump's snapshot.
    #[serde(default)]
    pub row_counts: BTreeMap<String, u64>,
    /// How the counts were taken: `dump` (read from the dump stream),
    /// `dump+count` (some tables needed a `count(*)`), `count`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub row_counts_source: String,
}

/// A finished backup.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    pub id: Id,
    pub snapshot: Snapshot,
}

/// Dump `opts.databases` (and globals) into a new `postgres-logical`
/// snapshot. The caller should have loaded the repository index so that
/// unchanged data deduplicates.
pub fn backup_logical(
    repo: &Repository,
    rt: &Handle,
    dsn: &Dsn,
    opts: &LogicalBackupOptions,
) -> Result<BackupOutcome> {
    let started = Instant::now();
    let time = chrono::Utc::now();
    let rt = rt.clone();
    let admin = dsn.connect(&rt)?;
    let server_version: String = query_one(&rt, &admin, "SHOW server_version", "server version")?;
    let databases = if !opts.databases.is_empty() {
        opts.databases.clone()
    } else if let Some(d) = dsn.dbname() {
        vec![d.to_string()]
    } else {
        let rows = rt
            .block_on(admin.query(
                "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1",
                &[],
            ))
            .map_err(|e| PgError::query("listing databases", e))?;
        rows.iter().map(|r| r.get::<_, String>(0)).collect()
    };
    for db in &databases {
        let exists = rt
            .block_on(admin.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[db]))
            .map_err(|e| PgError::query("looking up the database", e))?;
        if exists.is_none() {
            return Err(PgError::NoSuchDatabase(db.clone()));
        }
    }
    drop(admin);

    // Held until the snapshot is written (see `holdfast_repo::lease`).
    let _lease = repo.writer_lease("backup-postgres")?;
    let writer = BlobWriter::with_options(
        repo,
        WriterOptions {
            level: Some(opts.compression_level),
            ..WriterOptions::default()
        },
    );
    let mut tree = Tree::default();
    let mut infos: BTreeMap<String, DatabaseInfo> = BTreeMap::new();
    let mut total = 0u64;
    for db in &databases {
        let file = dump_file_name(db);
        let (ids, info) = dump_one(repo, &rt, &writer, dsn, db, &file, opts)?;
        total += info.dump_bytes;
        tree.nodes
            .push(fstree::generated_file(&file, info.dump_bytes, ids));
        infos.insert(db.clone(), info);
    }
    let mut globals_meta = serde_json::Value::Null;
    if opts.globals {
        let first = databases.first().map(String::as_str).unwrap_or("postgres");
        let (ids, size, without_passwords) = dump_globals(repo, &writer, dsn, first, &opts.tools)?;
        total += size;
        tree.nodes
            .push(fstree::generated_file(GLOBALS_FILE, size, ids));
        globals_meta = serde_json::json!({
            "file": GLOBALS_FILE,
            "bytes": size,
            "role_passwords": !without_passwords,
        });
    }
    let root = fstree::save_tree(&writer, tree)?;
    let stats = writer.finish(repo)?;

    let mut meta = BTreeMap::new();
    meta.insert("server_version".into(), server_version.into());
    meta.insert("server".into(), dsn.display().into());
    meta.insert(
        "databases".into(),
        serde_json::to_value(&infos).map_err(|e| PgError::Invalid(e.to_string()))?,
    );
    if !globals_meta.is_null() {
        meta.insert("globals".into(), globals_meta);
    }
    meta.insert(
        "dump_chunker".into(),
        serde_json::to_value(opts.chunker).map_err(|e| PgError::Invalid(e.to_string()))?,
    );
    meta.insert(
        "dump_format".into(),
        "custom, uncompressed (pg_dump -Fc -Z0)".into(),
    );
    let snapshot = Snapshot {
        time,
        hostname: holdfast_repo::hostname(),
        username: holdfast_repo::username(),
        source: opts.source.clone().unwrap_or_else(|| default_source(dsn)),
        kind: KIND_LOGICAL.into(),
        tags: opts.tags.clone(),
        paths: databases.clone(),
        tree: root,
        parent: None,
        summary: Summary {
            files_new: databases.len() as u64,
            total_bytes: total,
            bytes_read: total,
            blobs_added: stats.blobs_added,
            data_added: stats.data_added,
            meta_added: stats.meta_added,
            stored_added: stats.stored_added,
            duration_secs: started.elapsed().as_secs_f64(),
            ..Summary::default()
        },
        program_version: env!("CARGO_PKG_VERSION").into(),
        meta,
        predecessors: Vec::new(),
        migrated_from: None,
        audit_head: None,
    };
    let id = repo.save_snapshot(&snapshot)?;
    Ok(BackupOutcome { id, snapshot })
}

pub(crate) fn default_source(dsn: &Dsn) -> String {
    let d = dsn.display();
    // user@host:port/db -> postgres:host:port
    let hostport = d
        .split_once('@')
        .map(|(_, r)| r)
        .unwrap_or(&d)
        .split('/')
        .next()
        .unwrap_or("");
    format!("postgres:{hostport}")
}

/// Database names may hold any character but NUL; keep tree names to one
/// path component.
fn dump_file_name(db: &str) -> String {
    let mut s = String::new();
    for c in db.chars() {
        match c {
            '/' => s.push_str("%2F"),
            '%' => s.push_str("%25"),
            c => s.push(c),
        }
    }
    if s == "globals" {
        // would be fine, but avoid any confusion with globals.sql
        s.push('_');
    }
    format!("{s}.pgdump")
}

fn query_one(rt: &tokio::runtime::Handle, c: &Client, sql: &str, what: &str) -> Result<String> {
    let row = rt
        .block_on(c.query_one(sql, &[]))
        .map_err(|e| PgError::query(what, e))?;
    Ok(row.get(0))
}

/// What `count(*)` of `table` returns, from the rows each table holds
/// itself (`own`, counted in the dump): its own rows plus those of every
/// inheritance descendant. `None` when one of them is not in `own`.
fn inherited_count(
    table: &str,
    own: &HashMap<String, u64>,
    inherits: &[(String, String)],
) -> Option<u64> {
    let mut total = 0u64;
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![table];
    while let Some(t) = stack.pop() {
        if !seen.insert(t) {
            continue;
        }
        total += own.get(t)?;
        stack.extend(
            inherits
                .iter()
                .filter(|(p, _)| p == t)
                .map(|(_, c)| c.as_str()),
        );
    }
    Some(total)
}

fn dump_one(
    repo: &Repository,
    rt: &Handle,
    writer: &BlobWriter,
    dsn: &Dsn,
    db: &str,
    file: &str,
    opts: &LogicalBackupOptions,
) -> Result<(Vec<Id>, DatabaseInfo)> {
    let rt = rt.clone();
    let dsn = dsn.with_dbname(db);
    let client = dsn.connect(&rt)?;
    rt.block_on(client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        .map_err(|e| PgError::query("starting the dump transaction", e))?;
    let snap = query_one(
        &rt,
        &client,
        "SELECT pg_export_snapshot()",
        "exporting a snapshot",
    )?;
    let row = rt
        .block_on(client.query_one(
            "SELECT pg_database_size(current_database()), pg_encoding_to_char(encoding) \
             FROM pg_database WHERE datname = current_database()",
            &[],
        ))
        .map_err(|e| PgError::query("database size", e))?;
    let size: i64 = row.get(0);
    let encoding: String = row.get(1);
    let (tables, inherits) = if opts.row_counts {
        let tables = user_tables(&rt, &client)?;
        // count(*) of an inheritance parent includes its children's rows.
        let inherits: Vec<(String, String)> = rt
            .block_on(client.query(
                "SELECT pn.nspname::text || '.' || p.relname::text, \
                        cn.nspname::text || '.' || c.relname::text \
                 FROM pg_inherits i \
                 JOIN pg_class p ON p.oid = i.inhparent \
                 JOIN pg_namespace pn ON pn.oid = p.relnamespace \
                 JOIN pg_class c ON c.oid = i.inhrelid \
                 JOIN pg_namespace cn ON cn.oid = c.relnamespace",
                &[],
            ))
            .map_err(|e| PgError::query("listing inheritance", e))?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        (tables, inherits)
    } else {
        (Vec::new(), Vec::new())
    };

    let args = vec![
        "--format=custom".to_string(),
        "--compress=0".to_string(),
        format!("--snapshot={snap}"),
        "--no-password".to_string(),
    ];
    let mut env = dsn.tool_env();
    env.retain(|(k, _)| k != "PGDATABASE");
    env.push(("PGDATABASE".into(), db.to_string()));
    let mut running = tool::spawn(&opts.tools.pg_dump, &args, &env, false, true)?;
    let stdout = running
        .child
        .stdout
        .take()
        .ok_or_else(|| PgError::Invalid("pg_dump has no stdout pipe".into()))?;
    tool::widen_pipe(&stdout);
    let reader = ScanningReader {
        inner: stdout,
        scanner: DumpScanner::new(),
    };

    let streamed = writer.write_stream(reader, opts.chunker, repo.gear());
    let (ids, bytes, scanned) = match streamed {
        Ok((ids, bytes, reader)) => {
            running.finish()?;
            (ids, bytes, reader.scanner.finish())
        }
        Err(e) => {
            let stderr = running.abort();
            return Err(PgError::Invalid(format!(
                "storing the dump of {db} failed: {e}; pg_dump said: {}",
                stderr.trim()
            )));
        }
    };
    let (counts, counts_source) = if opts.row_counts {
        // The stream's counts are exact when it could be followed; any
        // table it does not account for is counted in the same snapshot.
        let own = scanned.unwrap_or_default();
        let mut counts = BTreeMap::new();
        let mut counted = 0usize;
        for (schema, table) in tables {
            let name = format!("{schema}.{table}");
            let n = match inherited_count(&name, &own, &inherits) {
                Some(n) => n,
                None => {
                    let sql = format!(
                        "SELECT count(*) FROM {}.{}",
                        quote_ident(&schema),
                        quote_ident(&table)
                    );
                    let r = rt
                        .block_on(client.query_one(&sql, &[]))
                        .map_err(|e| PgError::query(format!("counting rows of {name}"), e))?;
                    counted += 1;
                    r.get::<_, i64>(0) as u64
                }
            };
            counts.insert(name, n);
        }
        let source = match counted {
            0 => "dump",
            n if n == counts.len() => "count",
            _ => "dump+count",
        };
        (counts, source.to_string())
    } else {
        (BTreeMap::new(), String::new())
    };
    let _ = rt.block_on(client.batch_execute("COMMIT"));
    if bytes == 0 {
        return Err(PgError::ToolFailed {
            tool: "pg_dump".into(),
            status: "exit status 0".into(),
            stderr: "it wrote nothing".into(),
        });
    }
    Ok((
        ids,
        DatabaseInfo {
            file: file.to_string(),
            size_bytes: size.max(0) as u64,
            dump_bytes: bytes,
            encoding,
            row_counts: counts,
            row_counts_source: counts_source,
        },
    ))
}

/// Returns blob ids, size, and whether role passwords had to be left out.
fn dump_globals(
    repo: &Repository,
    writer: &BlobWriter,
    dsn: &Dsn,
    db: &str,
    tools: &PgTools,
) -> Result<(Vec<Id>, u64, bool)> {
    let env = dsn.tool_env();
    for without_passwords in [false, true] {
        let mut args = vec![
            "--globals-only".to_string(),
            "--no-password".to_string(),
            format!("--database={db}"),
        ];
        if without_passwords {
            // Non-superusers (managed services) cannot read pg_authid.
            args.push("--no-role-passwords".into());
        }
        let mut running = tool::spawn(&tools.pg_dumpall, &args, &env, false, true)?;
        let stdout = running
            .child
            .stdout
            .take()
            .ok_or_else(|| PgError::Invalid("pg_dumpall has no stdout pipe".into()))?;
        // The output is small: buffer it so a failed first attempt stores nothing.
        let mut buf = Vec::new();
        let mut stdout = stdout;
        std::io::Read::read_to_end(&mut stdout, &mut buf)
            .map_err(|e| PgError::io("reading pg_dumpall output", e))?;
        match running.finish() {
            Ok(_) => {
                let (ids, n, _) =
                    writer.write_stream(&buf[..], ChunkerParams::DATABASE, repo.gear())?;
                return Ok((ids, n, without_passwords));
            }
            Err(e) if !without_passwords && e.to_string().contains("pg_authid") => continue,
            Err(e) => return Err(e),
        }
    }
    Err(PgError::Invalid("pg_dumpall failed".into()))
}

/// Where and how to restore.
#[derive(Debug, Clone)]
pub struct LogicalRestoreOptions {
    /// Database to create and restore into.
    pub database: String,
    /// Which database of the snapshot; may be omitted when it holds one.
    pub source_database: Option<String>,
    /// Parallel `pg_restore` jobs; more than one needs a temporary file.
    pub jobs: usize,
    /// Drop and recreate the target database if it exists.
    pub clean: bool,
    /// Skip ownership (for targets without the original roles), the
    /// database's owner included.
    pub no_owner: bool,
    /// Skip grants (`pg_restore --no-acl`), the database's own included.
    pub no_acl: bool,
    /// Create the snapshot's roles and tablespaces first (from its
    /// `globals.sql`), leaving those that exist alone.
    pub with_globals: bool,
    pub tools: PgTools,
    /// Directory for the temporary archive when `jobs > 1` and the dump
    /// does not fit in memory (see `Spool`).
    pub temp_dir: Option<PathBuf>,
    /// With `jobs > 1`, keep the dump's copy in memory when it fits in a
    /// quarter of the available memory (the default); false always writes
    /// a temporary file.
    pub memory_spool: bool,
    /// The dump's seekable copy, filled ahead (see [`prepare_dump`]); used
    /// when it is the copy of the database restored and `jobs > 1`.
    pub prepared: Option<Arc<PreparedDump>>,
}

impl LogicalRestoreOptions {
    pub fn new(database: impl Into<String>) -> Self {
        LogicalRestoreOptions {
            database: database.into(),
            source_database: None,
            jobs: 1,
            clean: false,
            no_owner: false,
            no_acl: false,
            with_globals: false,
            tools: PgTools::discover(),
            temp_dir: None,
            memory_spool: true,
            prepared: None,
        }
    }
}

/// What a logical restore did; `expected_row_counts` come from the snapshot
/// so drills can compare.
#[derive(Debug, Clone)]
pub struct LogicalRestoreReport {
    pub database: String,
    pub source_database: String,
    pub bytes: u64,
    pub expected_row_counts: BTreeMap<String, u64>,
    pub duration_secs: f64,
}

/// Which database of `snap` a restore takes, with its facts: `requested`,
/// or the only one.
pub fn source_database(
    snap: &SnapshotEntry,
    requested: Option<&str>,
) -> Result<(String, DatabaseInfo)> {
    let dbs = snapshot_databases(&snap.snapshot)?;
    let name = match requested {
        Some(d) => d.to_string(),
        None if dbs.len() == 1 => dbs.keys().next().cloned().unwrap_or_default(),
        None => {
            return Err(PgError::Invalid(format!(
                "snapshot {} holds several databases ({}); say which one to restore",
                snap.id.short(),
                dbs.keys().cloned().collect::<Vec<_>>().join(", ")
            )))
        }
    };
    let info = dbs.get(&name).cloned().ok_or_else(|| {
        PgError::Invalid(format!(
            "snapshot {} has no database {name:?} (it has: {})",
            snap.id.short(),
            dbs.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })?;
    Ok((name, info))
}

/// The per-database facts of a logical snapshot.
pub fn snapshot_databases(snap: &Snapshot) -> Result<BTreeMap<String, DatabaseInfo>> {
    let v = snap
        .meta
        .get("databases")
        .cloned()
        .ok_or_else(|| PgError::Invalid("snapshot has no database list".into()))?;
    serde_json::from_value(v)
        .map_err(|e| PgError::Invalid(format!("snapshot database list is malformed: {e}")))
}

pub fn restore_logical(
    repo: &Arc<Repository>,
    rt: &Handle,
    snap: &SnapshotEntry,
    dsn: &Dsn,
    opts: &LogicalRestoreOptions,
) -> Result<LogicalRestoreReport> {
    restore_logical_through(repo, rt, snap, dsn, opts, None)
}

/// [`restore_logical`], with every table's rows passing through `hook`
/// when one is given (see [`crate::script`]; `opts.jobs` does not apply
/// then).
pub fn restore_logical_through(
    repo: &Arc<Repository>,
    rt: &Handle,
    snap: &SnapshotEntry,
    dsn: &Dsn,
    opts: &LogicalRestoreOptions,
    hook: Option<&mut dyn crate::script::DataHook>,
) -> Result<LogicalRestoreReport> {
    let started = Instant::now();
    if snap.snapshot.kind != KIND_LOGICAL {
        return Err(PgError::WrongKind {
            snapshot: snap.id.short(),
            found: snap.snapshot.kind.clone(),
            expected: KIND_LOGICAL.into(),
        });
    }
    let (source_db, info) = source_database(snap, opts.source_database.as_deref())?;
    let tree = repo.load_tree(&snap.snapshot.tree)?;
    let node = tree.find(info.file.as_bytes()).cloned().ok_or_else(|| {
        PgError::Invalid(format!("snapshot tree lacks the dump file {}", info.file))
    })?;

    let db_entries = stored_database_entries(repo, &node.content)?;

    let rt = rt.clone();
    let target = &opts.database;
    let maint_db = match dsn.dbname() {
        Some(d) if d != target => d.to_string(),
        _ => "postgres".to_string(),
    };
    let admin = dsn.with_dbname(&maint_db).connect(&rt)?;
    if opts.with_globals {
        let globals = tree.find(GLOBALS_FILE.as_bytes()).cloned().ok_or_else(|| {
            PgError::Invalid(format!(
                "snapshot {} has no {GLOBALS_FILE} (it was taken without globals); \
                 create the roles on the target server yourself",
                snap.id.short()
            ))
        })?;
        let mut sql = Vec::new();
        ContentReader::new(repo.clone(), globals.content.clone(), 4)
            .read_to_end(&mut sql)
            .map_err(|e| PgError::io(format!("reading {GLOBALS_FILE} from the snapshot"), e))?;
        globals::apply(&rt, &admin, &String::from_utf8_lossy(&sql))?;
    }
    let exists = rt
        .block_on(admin.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[target]))
        .map_err(|e| PgError::query("looking up the target database", e))?
        .is_some();
    let mut create = !exists;
    if exists {
        let empty = database_is_empty(&rt, &dsn.with_dbname(target))?;
        if !empty && !opts.clean {
            return Err(PgError::TargetNotEmpty {
                database: target.clone(),
            });
        }
        if opts.clean {
            rt.block_on(admin.batch_execute(&format!(
                "DROP DATABASE {} WITH (FORCE)",
                quote_ident(target)
            )))
            .map_err(|e| PgError::query(format!("dropping database {target}"), e))?;
            create = true;
        }
    }
    if create {
        let mut sql = format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(target));
        if !info.encoding.is_empty() {
            sql.push_str(&format!(
                " ENCODING '{}'",
                info.encoding.replace('\'', "''")
            ));
        }
        rt.block_on(admin.batch_execute(&sql))
            .map_err(|e| PgError::query(format!("creating database {target}"), e))?;
    }
    let ran = match hook {
        Some(h) => crate::script::restore_through(repo, &rt, &node, dsn, opts, h),
        None => run_pg_restore(repo, &node, dsn, opts),
    };
    let restored = ran.and_then(|()| {
        let old_name = db_entries
            .iter()
            .find(|e| e.desc == "DATABASE")
            .map(|e| e.tag.clone())
            .unwrap_or_else(|| source_db.clone());
        let props = dbprops::statements_for(&db_entries, &old_name, target, opts);
        dbprops::apply(&rt, &admin, target, &props)
    });
    if let Err(e) = restored {
        // Leave nothing half-restored behind: the database is ours.
        if create {
            let _ = rt.block_on(admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(target)
            )));
        }
        return Err(missing_role_error(e, target));
    }
    drop(admin);
    Ok(LogicalRestoreReport {
        database: target.clone(),
        source_database: source_db,
        bytes: node.size,
        expected_row_counts: info.row_counts,
        duration_secs: started.elapsed().as_secs_f64(),
    })
}

/// Run `pg_restore` of the dump `node` into `opts.database`, which exists.
fn run_pg_restore(
    repo: &Arc<Repository>,
    node: &holdfast_repo::tree::Node,
    dsn: &Dsn,
    opts: &LogicalRestoreOptions,
) -> Result<()> {
    let target = &opts.database;

    let mut env = dsn.tool_env();
    env.retain(|(k, _)| k != "PGDATABASE");
    let mut args = vec![
        format!(
            "--dbname=dbname='{}'",
            target.replace('\\', "\\\\").replace('\'', "\\'")
        ),
        "--exit-on-error".to_string(),
        "--no-password".to_string(),
    ];
    if opts.no_owner {
        args.push("--no-owner".into());
    }
    if opts.no_acl {
        args.push("--no-acl".into());
    }
    let reader = || ContentReader::new(repo.clone(), node.content.clone(), 8);
    if opts.jobs <= 1 {
        // A failed restore rolls back entirely rather than leaving half a database.
        args.push("--single-transaction".into());
        let mut running = tool::spawn(&opts.tools.pg_restore, &args, &env, true, false)?;
        let feeder = tool::feed(&mut running, reader())?;
        let fed = feeder
            .join()
            .map_err(|_| PgError::Invalid("the restore feeder thread panicked".into()))?;
        // pg_restore's own failure explains a broken pipe better than we can.
        running.finish()?;
        fed.map_err(|e| PgError::io_or_repo("streaming the dump into pg_restore", e))?;
    } else {
        let filled;
        let path = match opts.prepared.as_ref().filter(|p| p.content == node.content) {
            Some(p) => p.spool.path(),
            None => {
                filled = fill_spool(
                    reader(),
                    node.size,
                    opts.memory_spool,
                    opts.temp_dir.as_deref(),
                )?;
                filled.path()
            }
        };
        args.push(format!("--jobs={}", opts.jobs));
        args.push(path);
        tool::spawn(&opts.tools.pg_restore, &args, &env, false, false)?.finish()?;
    }
    Ok(())
}

/// `reader`'s bytes in a new [`Spool`], with the data offsets that a dump
/// streamed from `pg_dump` lacks written into its TOC
/// ([`dumpscan::TocOffsets`]).
fn fill_spool(
    reader: ContentReader,
    size: u64,
    memory: bool,
    temp_dir: Option<&std::path::Path>,
) -> Result<Spool> {
    let spool = Spool::new(size, memory, temp_dir)?;
    let mut reader = ScanningReader {
        inner: reader,
        scanner: DumpScanner::locating(),
    };
    {
        let mut w = BufWriter::with_capacity(1 << 20, spool.file());
        std::io::copy(&mut reader, &mut w)
            .map_err(|e| PgError::io_or_repo(format!("writing {}", spool.describe()), e))?;
        w.flush()
            .map_err(|e| PgError::io(format!("writing {}", spool.describe()), e))?;
    }
    // A stream the scanner could not follow (an archive version it does not
    // know) is restored as it is: pg_restore then finds each block by
    // skipping through the ones before it, slower but the same result.
    if let Ok(offsets) = reader.scanner.finish_offsets() {
        use std::os::unix::fs::FileExt;
        for (at, bytes) in &offsets.patches {
            spool
                .file()
                .write_all_at(bytes, *at)
                .map_err(|e| PgError::io(format!("writing {}", spool.describe()), e))?;
        }
    }
    Ok(spool)
}

/// A database's dump read out of the repository (downloaded, decrypted,
/// decompressed and verified) into its seekable copy before the restore
/// that uses it, so that this can overlap the start of the target server
/// (a drill's scratch cluster). Give it to the restore in
/// [`LogicalRestoreOptions::prepared`].
pub struct PreparedDump {
    content: Vec<holdfast_repo::Id>,
    spool: Spool,
    /// How long reading it took.
    pub seconds: f64,
    pub bytes: u64,
}

impl std::fmt::Debug for PreparedDump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedDump")
            .field("copy", &self.spool.describe())
            .field("bytes", &self.bytes)
            .finish()
    }
}

/// Read the dump of `database` in `snap` into its seekable copy
/// (in memory when `memory` and it fits, else a temporary file in
/// `temp_dir`).
pub fn prepare_dump(
    repo: &Arc<Repository>,
    snap: &SnapshotEntry,
    database: &str,
    memory: bool,
    temp_dir: Option<&std::path::Path>,
) -> Result<PreparedDump> {
    let started = Instant::now();
    let (_, info) = source_database(snap, Some(database))?;
    let tree = repo.load_tree(&snap.snapshot.tree)?;
    let node = tree.find(info.file.as_bytes()).cloned().ok_or_else(|| {
        PgError::Invalid(format!("snapshot tree lacks the dump file {}", info.file))
    })?;
    let reader = ContentReader::new(repo.clone(), node.content.clone(), 8);
    let spool = fill_spool(reader, node.size, memory, temp_dir)?;
    Ok(PreparedDump {
        content: node.content,
        spool,
        seconds: started.elapsed().as_secs_f64(),
        bytes: node.size,
    })
}

/// The seekable copy of a dump that `pg_restore --jobs` needs (its
/// workers open the archive by name and seek in it): in memory, a memfd
/// that pg_restore opens through `/proc/<our pid>/fd/<fd>`, when the dump
/// fits in a quarter of the memory available now; else a temporary file.
/// In memory, the copy is written faster and is gone the moment it is
/// dropped, where unlinking a gigabyte file can take seconds (a drill's
/// teardown waited on it).
enum Spool {
    Memory(std::fs::File),
    Disk(tempfile::NamedTempFile),
}

impl Spool {
    fn new(size: u64, memory: bool, temp_dir: Option<&std::path::Path>) -> Result<Spool> {
        if memory && mem_available().is_some_and(|m| size <= m / 4) {
            if let Some(f) = memfd("holdfast-restore") {
                return Ok(Spool::Memory(f));
            }
        }
        let t = match temp_dir {
            Some(d) => tempfile::Builder::new()
                .prefix("holdfast-restore-")
                .tempfile_in(d),
            None => tempfile::Builder::new()
                .prefix("holdfast-restore-")
                .tempfile(),
        }
        .map_err(|e| PgError::io("creating a temporary file for the parallel restore", e))?;
        Ok(Spool::Disk(t))
    }

    fn file(&self) -> &std::fs::File {
        match self {
            Spool::Memory(f) => f,
            Spool::Disk(t) => t.as_file(),
        }
    }

    /// The name pg_restore opens.
    fn path(&self) -> String {
        match self {
            Spool::Memory(f) => {
                use std::os::unix::io::AsRawFd;
                format!("/proc/{}/fd/{}", std::process::id(), f.as_raw_fd())
            }
            Spool::Disk(t) => t.path().display().to_string(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Spool::Memory(_) => "the in-memory copy of the dump".to_string(),
            Spool::Disk(t) => t.path().display().to_string(),
        }
    }
}

/// `MemAvailable` of /proc/meminfo, in bytes (Linux).
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// An anonymous in-memory file (Linux `memfd_create`), closed on exec.
fn memfd(name: &str) -> Option<std::fs::File> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::FromRawFd;
        let name = std::ffi::CString::new(name).ok()?;
        // SAFETY: a valid C string; the returned descriptor is ours alone.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        // SAFETY: fd is a fresh descriptor owned by nobody else.
        Some(unsafe { std::fs::File::from_raw_fd(fd) })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = name;
        None
    }
}

/// A role missing on the target, named in a tool's or the server's
/// message, becomes an error that names it and the way out.
fn missing_role_error(e: PgError, database: &str) -> PgError {
    let text = e.to_string();
    match missing_role(&text) {
        Some(role) => PgError::MissingRole {
            role,
            database: database.to_string(),
        },
        None => e,
    }
}

/// The role in `role "NAME" does not exist`, if the message says so.
fn missing_role(text: &str) -> Option<String> {
    let start = text.find("role \"")? + 6;
    let rest = &text[start..];
    let end = rest.find("\" does not exist")?;
    Some(rest[..end].to_string())
}

/// The database-level TOC entries of the stored dump, read from its head
/// (the TOC precedes the data; only the first blocks are fetched).
fn stored_database_entries(
    repo: &Arc<Repository>,
    content: &[Id],
) -> Result<Vec<dumpscan::TocEntry>> {
    let mut reader = ContentReader::new(repo.clone(), content.to_vec(), 2);
    let mut head = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut next_try = 0;
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| PgError::io("reading the stored dump", e))?;
        head.extend_from_slice(&buf[..n]);
        if n > 0 && head.len() < next_try {
            continue;
        }
        match dumpscan::database_entries(&head) {
            Ok(Some(entries)) => return Ok(entries),
            Ok(None) if n == 0 => {
                return Err(PgError::Invalid(
                    "the stored dump ends inside its table of contents".into(),
                ))
            }
            Ok(None) => next_try = head.len() * 2,
            Err(e) => {
                return Err(PgError::Invalid(format!(
                    "cannot read the database's properties from the stored dump: {e}"
                )))
            }
        }
    }
}

/// True when a database holds no user objects (tables, views, sequences,
/// functions, schemas other than `public`).
fn database_is_empty(rt: &tokio::runtime::Handle, dsn: &Dsn) -> Result<bool> {
    let c = dsn.connect(rt)?;
    let row = rt
        .block_on(c.query_one(
            "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%') \
                  + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                     WHERE n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%') \
                  + (SELECT count(*) FROM pg_namespace WHERE nspname NOT IN ('public', 'information_schema') \
                     AND nspname NOT LIKE 'pg\\_%')",
            &[],
        ))
        .map_err(|e| PgError::query("checking whether the target database is empty", e))?;
    let n: i64 = row.get(0);
    Ok(n == 0)
}

/// Exact row counts of every user table of a database, for comparing a
/// restore against the snapshot's record.
pub fn table_row_counts(
    rt: &tokio::runtime::Handle,
    dsn: &Dsn,
    database: &str,
) -> Result<BTreeMap<String, u64>> {
    let c = dsn.with_dbname(database).connect(rt)?;
    let tables = user_tables(rt, &c)?;
    let mut out = BTreeMap::new();
    for (s, t) in tables {
        let sql = format!(
            "SELECT count(*) FROM {}.{}",
            quote_ident(&s),
            quote_ident(&t)
        );
        let r = rt
            .block_on(c.query_one(&sql, &[]))
            .map_err(|e| PgError::query(format!("counting rows of {s}.{t}"), e))?;
        let n: i64 = r.get(0);
        out.insert(format!("{s}.{t}"), n as u64);
    }
    Ok(out)
}

/// Ordinary tables outside the system schemas, as (schema, table).
fn user_tables(
    rt: &tokio::runtime::Handle,
    client: &tokio_postgres::Client,
) -> Result<Vec<(String, String)>> {
    Ok(rt
        .block_on(client.query(
            "SELECT n.nspname::text, c.relname::text FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND n.nspname <> 'information_schema' \
             AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1, 2",
            &[],
        ))
        .map_err(|e| PgError::query("listing tables", e))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}
