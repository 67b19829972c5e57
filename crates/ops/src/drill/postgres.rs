//! Drills of logical PostgreSQL snapshots: into a scratch cluster the
//! drill creates (`initdb` on a free port) and always tears down, or into
//! an existing server where the drill creates and drops its own database.
//! Checks: SQL queries with expected values or bounds, row counts against
//! those the backup recorded, `amcheck`, commands; after them, the SQL
//! erasures recorded since the snapshot are applied again in the restored
//! databases (an `erasures` check row, as in a real restore).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_drill::{Check, CheckResult, Expect, Phase, Restore, RestoreReport};
use holdfast_postgres::scratch::{self, ScratchCluster};
use holdfast_postgres::{self as pg, quote_ident, Dsn, LogicalRestoreOptions};
use holdfast_repo::snapshot::SnapshotEntry;

use super::{command, Ctx, Teardown};
use crate::erasure::DrillDatabases;

impl Teardown for ScratchCluster {
    fn teardown(mut self: Box<Self>) -> std::result::Result<(), String> {
        ScratchCluster::teardown(&mut self).map_err(|e| e.to_string())
    }
}

/// A database the drill created on an existing server: dropped at
/// teardown (or when dropped).
struct DrillDatabase {
    admin: Dsn,
    name: String,
    rt: tokio::runtime::Handle,
    done: bool,
}

impl DrillDatabase {
    fn drop_it(&mut self) -> std::result::Result<(), String> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        let c = self.admin.connect(&self.rt).map_err(|e| e.to_string())?;
        self.rt
            .block_on(c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(&self.name)
            )))
            .map_err(|e| format!("dropping the drill's database {}: {e}", self.name))
    }
}

impl Teardown for DrillDatabase {
    fn teardown(mut self: Box<Self>) -> std::result::Result<(), String> {
        self.drop_it()
    }
}

impl Drop for DrillDatabase {
    fn drop(&mut self) {
        let _ = self.drop_it();
    }
}

/// While `f` runs, a stop request runs `on_stop` (which makes `f` fail
/// fast: the scratch server is stopped under the running restore).
fn stoppable<T>(ctx: &Ctx<'_>, on_stop: &(dyn Fn() + Sync), f: impl FnOnce() -> T) -> T {
    let finished = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !finished.load(Ordering::Relaxed) {
                if ctx.stopped() {
                    on_stop();
                    return;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        });
        let out = f();
        finished.store(true, Ordering::Relaxed);
        out
    })
}

/// The databases of a logical snapshot, by name.
fn databases(snap: &SnapshotEntry) -> Result<Vec<String>, String> {
    let dbs = pg::logical::snapshot_databases(&snap.snapshot).map_err(|e| e.to_string())?;
    if dbs.is_empty() {
        return Err(format!("snapshot {} holds no database", snap.id.short()));
    }
    Ok(dbs.into_keys().collect())
}

/// Settings of a scratch cluster that a logical drill restores into: it
/// never replicates nor archives and is thrown away, so it writes no WAL
/// for the tables and indexes `pg_restore` creates (`wal_level = minimal`:
/// a parallel restore truncates each new table in the transaction that
/// fills it for exactly this) and does not zero-fill new WAL segments. The
/// restore's data then passes through the page cache once instead of
/// twice. On the 2-core benchmark VM, where a page first written costs
/// several times a reused one, this took the `pg_restore` inside a drill
/// from 19-23 s to about 16-17 s (docs/benchmarks.md). What the drill
/// proves, that the dump restores and checks out, does not depend on WAL.
const LOGICAL_RESTORE_SETTINGS: &str =
    "wal_level = minimal\nmax_wal_senders = 0\nwal_init_zero = off\n";

/// Where a scratch cluster goes and which database checks use.
pub(crate) struct ScratchTarget {
    pub bin_dir: Option<PathBuf>,
    pub parent: Option<PathBuf>,
    pub database: Option<String>,
}

/// Restore `snap` into a new scratch cluster and check it.
pub(crate) fn scratch(
    ctx: &Ctx<'_>,
    r: &Restore,
    snap: &SnapshotEntry,
    t: &ScratchTarget,
    rep: &mut RestoreReport,
) -> Option<Box<dyn Teardown>> {
    let started = Instant::now();
    let bindir = match scratch::server_bindir(t.bin_dir.as_deref().or(ctx.pg_bindir.as_deref())) {
        Ok(b) => b,
        Err(e) => {
            rep.error = Some(e.to_string());
            return None;
        }
    };
    let parent = t
        .parent
        .clone()
        .unwrap_or_else(|| ctx.scratch_parent.clone());
    let mut cluster = match ScratchCluster::prepare(&bindir, &parent, &r.label) {
        Ok(c) => c,
        Err(e) => {
            rep.error = Some(format!("creating the scratch cluster: {e}"));
            return None;
        }
    };
    // The first database's dump is read out of the repository (download,
    // decrypt, decompress, verify) while the cluster is made and started.
    let first_db = databases(snap).ok().and_then(|n| n.into_iter().next());
    let spool_dir = cluster.root.clone();
    let repo = ctx.repo;
    let (up, prepared) = std::thread::scope(|s| {
        let pre = first_db.as_deref().map(|db| {
            let spool_dir = &spool_dir;
            s.spawn(move || pg::prepare_dump(repo, snap, db, true, Some(spool_dir)))
        });
        let up = cluster
            .initdb()
            .and_then(|()| cluster.configure(LOGICAL_RESTORE_SETTINGS))
            .and_then(|()| cluster.start());
        let server = started.elapsed().as_secs_f64();
        (up.map(|()| server), pre.map(|h| h.join()))
    });
    rep.location = format!("127.0.0.1:{} ({})", cluster.port, cluster.root.display());
    let server_secs = match &up {
        Ok(s) => *s,
        Err(_) => started.elapsed().as_secs_f64(),
    };
    let mut phase = Phase::new("server start", server_secs);
    phase.note = Some("initdb and start of the scratch cluster".into());
    rep.phases.push(phase);
    let prepared = match prepared {
        None => None,
        Some(Ok(Ok(p))) => {
            let mut phase = Phase::new("download, decrypt and decompress", p.seconds);
            phase.bytes = Some(p.bytes);
            phase.note = Some(format!(
                "the dump of database {} read out of the repository and verified, while the server started",
                first_db.as_deref().unwrap_or_default()
            ));
            rep.phases.push(phase);
            Some(Arc::new(p))
        }
        Some(Ok(Err(e))) => {
            rep.error = Some(format!(
                "restoring database {} of snapshot {}: {e}",
                first_db.as_deref().unwrap_or_default(),
                snap.id.short()
            ));
            return Some(Box::new(cluster));
        }
        Some(Err(_)) => {
            rep.error = Some("the thread reading the dump panicked".into());
            return Some(Box::new(cluster));
        }
    };
    if let Err(e) = up {
        rep.error = Some(format!("starting the scratch cluster: {e}"));
        return Some(Box::new(cluster));
    }

    let admin = match cluster.dsn("postgres") {
        Ok(d) => d,
        Err(e) => {
            rep.error = Some(e.to_string());
            return Some(Box::new(cluster));
        }
    };
    let tools = pg::PgTools::in_dir(&bindir);
    let opts = |db: &str| LogicalRestoreOptions {
        source_database: Some(db.to_string()),
        // A fresh cluster lacks the snapshot's roles: create them first.
        with_globals: snap_has_globals(ctx, snap),
        jobs: 2,
        tools: tools.clone(),
        temp_dir: Some(cluster.root.clone()),
        prepared: prepared.clone(),
        ..LogicalRestoreOptions::new(db)
    };
    let stop_server = || cluster.stop_now();
    let restored = stoppable(ctx, &stop_server, || {
        restore_all(ctx, snap, &admin, &opts, rep)
    });
    let dbs = match restored {
        Ok(mut d) => {
            if let Some(db) = &t.database {
                d.first_db = db.clone();
            }
            d
        }
        Err(e) => {
            rep.error = Some(if ctx.stopped() {
                "the restore was stopped".to_string()
            } else {
                e
            });
            return Some(Box::new(cluster));
        }
    };
    let env = pg_env(
        &cluster.dsn_string(&dbs.first_db),
        cluster.port,
        &cluster.password,
        &dbs.first_db,
    );
    run_checks(ctx, r, &admin, &dbs, &env, rep);
    let restored = dbs
        .expected
        .keys()
        .map(|db| (db.clone(), admin.with_dbname(db)))
        .collect();
    reapply_erasures(ctx, snap, &DrillDatabases::Restored(restored), rep);
    Some(Box::new(cluster))
}

/// Restore `snap` into a database of its own on the server `dsn` and
/// check it; the database is dropped afterwards.
pub(crate) fn server(
    ctx: &Ctx<'_>,
    r: &Restore,
    snap: &SnapshotEntry,
    dsn: &str,
    rep: &mut RestoreReport,
) -> Option<Box<dyn Teardown>> {
    let admin = match Dsn::parse(dsn) {
        Ok(d) => d,
        Err(e) => {
            rep.error = Some(e.to_string());
            return None;
        }
    };
    let names = match databases(snap) {
        Ok(n) => n,
        Err(e) => {
            rep.error = Some(e);
            return None;
        }
    };
    if names.len() != 1 {
        rep.error = Some(format!(
            "snapshot {} holds {} databases; a postgres-server drill restores one (use postgres-scratch for several)",
            snap.id.short(),
            names.len()
        ));
        return None;
    }
    let name = format!(
        "holdfast_drill_{:08x}",
        (ctx.seed ^ u64::from(std::process::id()).rotate_left(17)) as u32
    );
    rep.location = format!("{} database {name}", admin.display());
    let tools = ctx.pg_tools.clone();
    let source = names[0].clone();
    let opts = LogicalRestoreOptions {
        source_database: Some(source.clone()),
        // An existing server has its own roles: restore without them.
        no_owner: true,
        no_acl: true,
        tools,
        ..LogicalRestoreOptions::new(name.clone())
    };
    let guard = DrillDatabase {
        admin: admin.clone(),
        name: name.clone(),
        rt: ctx.rt.clone(),
        done: false,
    };
    let started = Instant::now();
    let res = pg::restore_logical(ctx.repo, &ctx.rt, snap, &admin, &opts);
    let report = match res {
        Ok(r) => r,
        Err(e) => {
            rep.error = Some(format!("restoring snapshot {}: {e}", snap.id.short()));
            return Some(Box::new(guard));
        }
    };
    let mut phase = Phase::new("restore", started.elapsed().as_secs_f64());
    phase.bytes = Some(report.bytes);
    phase.note = Some("pg_restore into the drill's own database".into());
    rep.phases.push(phase);
    rep.bytes = report.bytes;
    let dbs = Restored {
        first_db: name.clone(),
        expected: BTreeMap::from([(name.clone(), report.expected_row_counts)]),
    };
    let db_dsn = admin.with_dbname(&name);
    let env = vec![
        ("HOLDFAST_DRILL_DATABASE".to_string(), name.clone()),
        ("PGDATABASE".to_string(), name.clone()),
    ]
    .into_iter()
    .chain(db_dsn.tool_env())
    .collect::<Vec<_>>();
    run_checks(ctx, r, &admin, &dbs, &env, rep);
    reapply_erasures(
        ctx,
        snap,
        &DrillDatabases::Restored(vec![(source, db_dsn)]),
        rep,
    );
    Some(Box::new(guard))
}

/// The erasure register applies to a drill's restore like to any other:
/// after the checks, which compare with the snapshot as it was taken.
fn reapply_erasures(
    ctx: &Ctx<'_>,
    snap: &SnapshotEntry,
    dbs: &DrillDatabases,
    rep: &mut RestoreReport,
) {
    if ctx.stopped() {
        return;
    }
    let erased = crate::erasure::drill_sql_check(ctx.repo, &ctx.rt, snap, dbs);
    rep.checks.extend(erased.check);
    rep.erasures_applied = erased.applied;
}

fn snap_has_globals(ctx: &Ctx<'_>, snap: &SnapshotEntry) -> bool {
    ctx.repo
        .load_tree(&snap.snapshot.tree)
        .map(|t| t.find(b"globals.sql").is_some())
        .unwrap_or(false)
}

/// What was restored: the database checks run in, and each database's
/// row counts recorded at backup.
struct Restored {
    first_db: String,
    expected: BTreeMap<String, BTreeMap<String, u64>>,
}

fn restore_all(
    ctx: &Ctx<'_>,
    snap: &SnapshotEntry,
    admin: &Dsn,
    opts: &dyn Fn(&str) -> LogicalRestoreOptions,
    rep: &mut RestoreReport,
) -> Result<Restored, String> {
    let names = databases(snap)?;
    let started = Instant::now();
    let mut expected = BTreeMap::new();
    let mut bytes = 0;
    for (i, db) in names.iter().enumerate() {
        let mut o = opts(db);
        // Globals once, with the first database.
        o.with_globals = o.with_globals && i == 0;
        let report = pg::restore_logical(ctx.repo, &ctx.rt, snap, admin, &o).map_err(|e| {
            format!(
                "restoring database {db} of snapshot {}: {e}",
                snap.id.short()
            )
        })?;
        bytes += report.bytes;
        expected.insert(db.clone(), report.expected_row_counts);
    }
    let mut phase = Phase::new("restore", started.elapsed().as_secs_f64());
    phase.bytes = Some(bytes);
    phase.note = Some(
        "pg_restore -j2 from the dump's copy (read out of the repository here, or ahead: see the download phase)"
            .into(),
    );
    rep.phases.push(phase);
    rep.bytes = bytes;
    Ok(Restored {
        first_db: names.first().cloned().unwrap_or_default(),
        expected,
    })
}

/// The environment of a command check on a PostgreSQL target.
fn pg_env(dsn: &str, port: u16, password: &str, db: &str) -> Vec<(String, String)> {
    vec![
        ("HOLDFAST_DRILL_DSN".into(), dsn.into()),
        ("HOLDFAST_DRILL_DATABASE".into(), db.into()),
        ("PGHOST".into(), "127.0.0.1".into()),
        ("PGPORT".into(), port.to_string()),
        ("PGUSER".into(), "postgres".into()),
        ("PGPASSWORD".into(), password.into()),
        ("PGDATABASE".into(), db.into()),
    ]
}

fn run_checks(
    ctx: &Ctx<'_>,
    r: &Restore,
    admin: &Dsn,
    dbs: &Restored,
    env: &[(String, String)],
    rep: &mut RestoreReport,
) {
    let started = Instant::now();
    let dsn = admin.with_dbname(&dbs.first_db);
    for check in &r.checks {
        if ctx.stopped() {
            break;
        }
        let t = Instant::now();
        let (kind, name, res) = match check {
            Check::Sql {
                name,
                query,
                expect,
            } => ("sql", name.clone(), sql_check(ctx, &dsn, query, expect)),
            Check::RowCounts { tables } => (
                "row-counts",
                "row counts match those recorded at backup".to_string(),
                row_counts(ctx, admin, dbs, tables),
            ),
            Check::Amcheck => (
                "amcheck",
                "bt_index_check on every B-tree index".to_string(),
                amcheck(ctx, &dsn),
            ),
            Check::Pitr => (
                "pitr",
                "the last replayed transaction is within the RPO of the requested point"
                    .to_string(),
                pitr_check(ctx, rep),
            ),
            Check::Command { name, run, timeout } => {
                let env: Vec<(&str, &std::ffi::OsStr)> = env
                    .iter()
                    .map(|(k, v)| (k.as_str(), std::ffi::OsStr::new(v.as_str())))
                    .collect();
                rep.checks
                    .push(command::run(ctx, name, run, *timeout, &env));
                continue;
            }
            other => (
                other.kind(),
                other.kind().to_string(),
                Err(format!(
                    "a {} check does not apply to this target",
                    other.kind()
                )),
            ),
        };
        let (passed, detail) = match res {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        rep.checks.push(CheckResult {
            kind: kind.into(),
            name,
            passed,
            detail,
            seconds: t.elapsed().as_secs_f64(),
        });
    }
    rep.phases
        .push(Phase::new("checks", started.elapsed().as_secs_f64()));
}

/// The single value `query` returns, as text (`None` for NULL).
fn one_value(ctx: &Ctx<'_>, dsn: &Dsn, query: &str) -> Result<Option<String>, String> {
    let c = dsn.connect(&ctx.rt).map_err(|e| e.to_string())?;
    let msgs = ctx
        .rt
        .block_on(c.simple_query(query))
        .map_err(|e| format!("the query failed: {}", pg_error_text(&e)))?;
    let rows: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .collect();
    match rows.as_slice() {
        [row] if row.len() == 1 => Ok(row.get(0).map(str::to_string)),
        [row] => Err(format!(
            "the query returned {} columns; a check needs one value",
            row.len()
        )),
        rows => Err(format!(
            "the query returned {} rows; a check needs one value",
            rows.len()
        )),
    }
}

fn pg_error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}

fn sql_check(ctx: &Ctx<'_>, dsn: &Dsn, query: &str, expect: &Expect) -> Result<String, String> {
    let v = one_value(ctx, dsn, query)?;
    let shown = v.clone().unwrap_or_else(|| "NULL".into());
    match expect {
        Expect::Equals(want) => {
            if v.as_deref() == Some(want.as_str()) {
                Ok(format!("returned {shown}, as expected"))
            } else {
                Err(format!("returned {shown}, expected {want}"))
            }
        }
        Expect::Between { min, max } => {
            let n: f64 = v
                .as_deref()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| format!("returned {shown}, which is not a number"))?;
            let bounds = match (min, max) {
                (Some(a), Some(b)) => format!("between {a} and {b}"),
                (Some(a), None) => format!("at least {a}"),
                (None, Some(b)) => format!("at most {b}"),
                (None, None) => "any number".into(),
            };
            if min.is_none_or(|a| n >= a) && max.is_none_or(|b| n <= b) {
                Ok(format!("returned {shown}, {bounds}"))
            } else {
                Err(format!("returned {shown}, expected {bounds}"))
            }
        }
    }
}

fn row_counts(
    ctx: &Ctx<'_>,
    admin: &Dsn,
    dbs: &Restored,
    tables: &[String],
) -> Result<String, String> {
    let mut differ = Vec::new();
    let mut compared = 0;
    let mut recorded_any = false;
    for (db, expected) in &dbs.expected {
        if expected.is_empty() {
            continue;
        }
        recorded_any = true;
        let actual = pg::table_row_counts(&ctx.rt, admin, db).map_err(|e| e.to_string())?;
        for (table, want) in expected {
            if !tables.is_empty()
                && !tables
                    .iter()
                    .any(|t| t == table || t == &format!("{db}.{table}"))
            {
                continue;
            }
            compared += 1;
            match actual.get(table) {
                Some(got) if got == want => {}
                Some(got) => differ.push(format!("{db}.{table}: {got} rows, {want} at backup")),
                None => differ.push(format!("{db}.{table}: missing (had {want} rows at backup)")),
            }
        }
    }
    if !recorded_any {
        return Err(
            "the snapshot recorded no row counts (a backup made before they were recorded)".into(),
        );
    }
    for t in tables {
        let found = dbs
            .expected
            .iter()
            .any(|(db, e)| e.contains_key(t) || e.keys().any(|k| &format!("{db}.{k}") == t));
        if !found {
            differ.push(format!("{t}: no row count was recorded at backup"));
        }
    }
    if differ.is_empty() {
        Ok(format!(
            "{compared} table(s) have the rows recorded at backup"
        ))
    } else {
        differ.sort();
        let n = differ.len();
        differ.truncate(20);
        Err(format!("{n} table(s) differ: {}", differ.join("; ")))
    }
}

fn amcheck(ctx: &Ctx<'_>, dsn: &Dsn) -> Result<String, String> {
    let c = dsn.connect(&ctx.rt).map_err(|e| e.to_string())?;
    let available = ctx
        .rt
        .block_on(c.query_opt(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'amcheck'",
            &[],
        ))
        .map_err(|e| pg_error_text(&e))?
        .is_some();
    if !available {
        return Ok("skipped: the amcheck extension is not available on this server".into());
    }
    ctx.rt
        .block_on(c.batch_execute("CREATE EXTENSION IF NOT EXISTS amcheck"))
        .map_err(|e| format!("creating the amcheck extension: {}", pg_error_text(&e)))?;
    let rows = ctx
        .rt
        .block_on(c.query(
            "SELECT c.oid, n.nspname::text || '.' || c.relname::text FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE am.amname = 'btree' AND i.indisvalid AND i.indisready \
             AND c.relpersistence <> 't' ORDER BY 2",
            &[],
        ))
        .map_err(|e| pg_error_text(&e))?;
    let mut bad = Vec::new();
    for row in &rows {
        if ctx.stopped() {
            return Err("stopped with the drill".into());
        }
        let oid: u32 = row.get(0);
        let name: String = row.get(1);
        if let Err(e) = ctx
            .rt
            .block_on(c.execute("SELECT bt_index_check($1::oid::regclass)", &[&oid]))
        {
            bad.push(format!("{name}: {}", pg_error_text(&e)));
        }
    }
    if bad.is_empty() {
        Ok(format!(
            "{} B-tree index(es) checked: no corruption found",
            rows.len()
        ))
    } else {
        Err(format!(
            "{} of {} index(es) failed: {}",
            bad.len(),
            rows.len(),
            bad.join("; ")
        ))
    }
}

/// Restore a physical base backup into a scratch cluster, recover it to
/// the playbook's point in time, and check it: the WAL replay is timed,
/// and the last replayed transaction is the restored point.
pub(crate) fn physical(
    ctx: &Ctx<'_>,
    r: &Restore,
    snap: &SnapshotEntry,
    t: &ScratchTarget,
    rep: &mut RestoreReport,
) -> Option<Box<dyn Teardown>> {
    use holdfast_drill::PointInTime;
    use pg::RecoveryTarget;
    let bindir = match scratch::server_bindir(t.bin_dir.as_deref().or(ctx.pg_bindir.as_deref())) {
        Ok(b) => b,
        Err(e) => {
            rep.error = Some(e.to_string());
            return None;
        }
    };
    let parent = t
        .parent
        .clone()
        .unwrap_or_else(|| ctx.scratch_parent.clone());
    let mut cluster = match ScratchCluster::prepare(&bindir, &parent, &r.label) {
        Ok(c) => c,
        Err(e) => {
            rep.error = Some(format!("creating the scratch cluster: {e}"));
            return None;
        }
    };
    let backup_end = pg::backup_end(&snap.snapshot).unwrap_or(snap.snapshot.time);
    // The point asked for, and the recovery target that reaches it.
    let (target, requested) = match &r.snapshot.point_in_time {
        None => (RecoveryTarget::Immediate, None),
        Some(PointInTime::Latest) => (RecoveryTarget::Latest, Some(ctx.started_at)),
        Some(PointInTime::At(at)) => (RecoveryTarget::Time(*at), Some(*at)),
        Some(PointInTime::Random { seed }) => {
            let seed = seed.unwrap_or(ctx.seed);
            let end = match recoverable_end(ctx, snap) {
                Ok(e) => e.max(backup_end),
                Err(e) => {
                    rep.error = Some(e);
                    return Some(Box::new(cluster));
                }
            };
            let at = holdfast_drill::pick::random_point(backup_end, end, seed);
            rep.pick = format!("{}; point in time drawn with seed {seed}", rep.pick);
            (RecoveryTarget::Time(at), Some(at))
        }
    };
    rep.requested_point = requested;
    rep.location = format!("127.0.0.1:{} ({})", cluster.port, cluster.root.display());
    let mut opts = pg::PhysicalRestoreOptions::new(target);
    opts.restore_command = ctx.restore_command.as_ref().map(|rc| {
        let env: Vec<(&str, &str)> = rc
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        pg::restore_command(
            &rc.program,
            &env,
            pg::physical::snapshot_cluster(&snap.snapshot),
        )
    });
    if !matches!(target, RecoveryTarget::Immediate) && opts.restore_command.is_none() {
        rep.error = Some("a point-in-time drill needs a key file or password file (HOLDFAST_KEY_FILE, HOLDFAST_PASSWORD_FILE) that the scratch server's restore_command opens the repository with".into());
        return Some(Box::new(cluster));
    }
    let started = Instant::now();
    let restored = pg::restore_physical(ctx.repo, snap, &cluster.datadir, &opts);
    let report = match restored {
        Ok(r) => r,
        Err(e) => {
            rep.error = Some(format!("restoring snapshot {}: {e}", snap.id.short()));
            return Some(Box::new(cluster));
        }
    };
    let mut phase = Phase::new("restore", started.elapsed().as_secs_f64());
    phase.bytes = Some(report.bytes);
    phase.note = Some("base backup laid out: download, decrypt, decompress, write".into());
    rep.phases.push(phase);
    rep.bytes = report.bytes;
    rep.files = report.files;
    if ctx.stopped() {
        rep.error = Some("the restore was stopped".into());
        return Some(Box::new(cluster));
    }
    let up = cluster
        .socket_only_access()
        .and_then(|()| cluster.own_datadir())
        .and_then(|()| cluster.configure("hot_standby = on\n"));
    if let Err(e) = up {
        rep.error = Some(e.to_string());
        return Some(Box::new(cluster));
    }
    let started = Instant::now();
    // With hot_standby, pg_ctl returns once the data is consistent; the
    // replay that follows is waited for (and stopped) below.
    let start = cluster.start();
    let mut phase = Phase::new("server start", started.elapsed().as_secs_f64());
    phase.note = Some("pg_ctl start until connections are accepted".into());
    rep.phases.push(phase);
    if let Err(e) = start {
        rep.error = Some(if ctx.stopped() {
            "the recovery was stopped".into()
        } else {
            format!("starting the restored cluster: {e}")
        });
        return Some(Box::new(cluster));
    }
    // The restored cluster keeps its own roles and passwords: the drill
    // connects through the private socket.
    let admin = match Dsn::parse(&cluster.socket_dsn_string("postgres")) {
        Ok(d) => d,
        Err(e) => {
            rep.error = Some(e.to_string());
            return Some(Box::new(cluster));
        }
    };
    let started = Instant::now();
    let replayed = wait_promoted(ctx, &admin);
    let mut phase = Phase::new("wal replay", started.elapsed().as_secs_f64());
    phase.note = Some("until recovery reached its target and the server was promoted".into());
    rep.phases.push(phase);
    let last = match replayed {
        Ok(last) => last,
        Err(e) => {
            rep.error = Some(format!("{e}; server log: {}", log_tail(&cluster)));
            return Some(Box::new(cluster));
        }
    };
    // Nothing replayed past the backup: the data is as of its end.
    let restored_point = last.unwrap_or(backup_end);
    rep.restored_point = Some(restored_point);
    rep.rpo_seconds = Some(match requested {
        Some(p) => ((p - restored_point).num_milliseconds() as f64 / 1000.0).abs(),
        None => super::age(ctx.started_at, restored_point),
    });
    let db = t.database.clone().unwrap_or_else(|| "postgres".into());
    let dbs = Restored {
        first_db: db.clone(),
        expected: BTreeMap::new(),
    };
    let env = vec![
        (
            "HOLDFAST_DRILL_DSN".to_string(),
            cluster.socket_dsn_string(&db),
        ),
        ("HOLDFAST_DRILL_DATABASE".to_string(), db.clone()),
        ("PGHOST".to_string(), cluster.sockdir.display().to_string()),
        ("PGPORT".to_string(), cluster.port.to_string()),
        ("PGUSER".to_string(), "postgres".to_string()),
        ("PGDATABASE".to_string(), db.clone()),
    ];
    run_checks(ctx, r, &admin, &dbs, &env, rep);
    reapply_erasures(
        ctx,
        snap,
        &DrillDatabases::Cluster(Box::new(admin.clone())),
        rep,
    );
    Some(Box::new(cluster))
}

fn log_tail(c: &ScratchCluster) -> String {
    let l = c.log();
    let skip = l.chars().count().saturating_sub(1500);
    l.chars().skip(skip).collect()
}

/// The end of the recoverable range of `snap`'s cluster: when the last
/// segment of the unbroken archive after the newest backup was archived.
fn recoverable_end(
    ctx: &Ctx<'_>,
    snap: &SnapshotEntry,
) -> Result<chrono::DateTime<chrono::Utc>, String> {
    let cluster = pg::physical::snapshot_cluster(&snap.snapshot).map(|c| c.to_string());
    let all = ctx.repo.snapshots().map_err(|e| e.to_string())?;
    let points = pg::recovery_points(ctx.repo, &all).map_err(|e| e.to_string())?;
    points
        .into_iter()
        .find(|p| Some(&p.cluster) == cluster.as_ref())
        .and_then(|p| p.latest_recoverable_time)
        .ok_or_else(|| {
            format!(
                "no recoverable range is known for the cluster of snapshot {}",
                snap.id.short()
            )
        })
}

/// Wait until the server has left recovery; the last replayed
/// transaction's time.
fn wait_promoted(
    ctx: &Ctx<'_>,
    dsn: &Dsn,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, String> {
    loop {
        if ctx.stopped() {
            return Err("the recovery was stopped".into());
        }
        let v = one_value(ctx, dsn, "SELECT pg_is_in_recovery()")?;
        if v.as_deref() == Some("f") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let v = one_value(
        ctx,
        dsn,
        "SELECT to_char(pg_last_xact_replay_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )?;
    match v {
        None => Ok(None),
        Some(t) => chrono::DateTime::parse_from_rfc3339(&t)
            .map(|t| Some(t.with_timezone(&chrono::Utc)))
            .map_err(|e| format!("reading the last replayed transaction time {t:?}: {e}")),
    }
}

/// The pitr check: the restored point lies within the RPO of the point
/// asked for.
pub(crate) fn pitr_check(ctx: &Ctx<'_>, rep: &RestoreReport) -> Result<String, String> {
    let (Some(req), Some(got)) = (rep.requested_point, rep.restored_point) else {
        return Err("no requested point in time (set point_in_time)".into());
    };
    let off = (req - got).num_milliseconds() as f64 / 1000.0;
    let rpo = holdfast_drill::duration::Human(ctx.rpo);
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string();
    if off.abs() <= ctx.rpo as f64 {
        Ok(format!(
            "asked for {}, last replayed transaction at {} ({} before), within the RPO of {rpo}",
            fmt(req),
            fmt(got),
            holdfast_drill::duration::measured(off)
        ))
    } else {
        Err(format!(
            "asked for {}, last replayed transaction at {}: {} apart, more than the RPO of {rpo}",
            fmt(req),
            fmt(got),
            holdfast_drill::duration::measured(off.abs())
        ))
    }
}
