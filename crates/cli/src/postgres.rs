//! PostgreSQL commands: logical and physical backups, restores into a
//! server or a data directory, and the WAL archive commands. The behaviour
//! lives in `holdfast-postgres`; this module parses, opens and prints.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use holdfast_ops::postgres as ops_pg;
use holdfast_ops::restore::SnapshotSpec;
use holdfast_postgres::{
    self as pg, Dsn, LogicalBackupOptions, LogicalRestoreOptions, PgError, PhysicalBackupOptions,
    RecoveryTarget,
};
use holdfast_repo::snapshot::{SnapshotEntry, SnapshotFilter};
use serde_json::json;
use tokio::runtime::Runtime;

use crate::args::{BackupArgs, Global, RestoreArgs, WalFetchArgs, WalPrefetchArgs, WalPushArgs};
use crate::exit;
use crate::open;
use crate::ui;

/// Exit status of `wal-fetch` for a file that is not archived. Any non-zero
/// status ends archive recovery; a distinct one lets scripts tell "end of
/// archive" from a broken repository.
pub const WAL_NOT_FOUND: i32 = 9;

/// The PostgreSQL settings the binary takes from the environment (the
/// library reads none): where the client tools are, and the measuring
/// knobs of `crates/postgres/README.md`. A knob that does not parse is
/// ignored, as before.
struct PgEnv {
    bindir: Option<PathBuf>,
    pg_dump: Option<PathBuf>,
    dump_level: Option<i32>,
    dump_chunk: Option<holdfast_repo::chunker::ChunkerParams>,
    block_size: Option<usize>,
    physical_level: Option<i32>,
}

impl PgEnv {
    fn read() -> PgEnv {
        // Empty counts as unset, as for every other variable (`open`).
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        PgEnv {
            bindir: var("HOLDFAST_PG_BINDIR").map(PathBuf::from),
            pg_dump: var("HOLDFAST_PG_DUMP").map(PathBuf::from),
            dump_level: var("HOLDFAST_PG_DUMP_LEVEL").and_then(|v| v.trim().parse().ok()),
            dump_chunk: var("HOLDFAST_PG_DUMP_CHUNK")
                .and_then(|v| pg::logical::parse_chunk_sizes(&v)),
            block_size: var("HOLDFAST_PG_BLOCK_SIZE")
                .and_then(|v| v.trim().parse::<usize>().ok())
                .filter(|b| *b >= 8192 && b.is_multiple_of(8192)),
            physical_level: var("HOLDFAST_PG_PHYSICAL_LEVEL").and_then(|v| v.trim().parse().ok()),
        }
    }

    fn tools(&self) -> pg::PgTools {
        pg::PgTools::discover_in(self.bindir.clone(), self.pg_dump.clone())
    }
}

/// A DSN with libpq's environment defaults (`PGUSER`, `USER`,
/// `PGPASSWORD`), which the library leaves to the binary.
pub(crate) fn dsn_from(s: &str) -> Result<Dsn, PgError> {
    Dsn::parse_with(s, |n| std::env::var(n).ok().filter(|v| !v.is_empty()))
}

fn info(g: &Global, msg: impl AsRef<str>) {
    if !g.quiet && !g.json {
        errln!("{}", msg.as_ref());
    }
}

/// `holdfast backup --postgres DSN` / `--postgres-physical DSN`.
pub fn backup(g: &Global, rt: &Runtime, a: BackupArgs) -> Result<i32> {
    if !a.paths.is_empty() {
        bail!("give either paths or --postgres/--postgres-physical, not both");
    }
    if a.time.is_some() {
        bail!("--time applies to backups of files; a database backup records the time the server gives it");
    }
    let repo = open::open(g, rt)?;
    let env = PgEnv::read();
    let out = if let Some(dsn) = &a.postgres {
        let dsn = dsn_from(dsn)?;
        let defaults = LogicalBackupOptions::default();
        let opts = LogicalBackupOptions {
            databases: a.databases.clone(),
            source: a.source.clone(),
            tags: a.tags.clone(),
            tools: env.tools(),
            chunker: env.dump_chunk.unwrap_or(defaults.chunker),
            compression_level: env.dump_level.unwrap_or(defaults.compression_level),
            ..defaults
        };
        info(g, format!("dumping {} ...", dsn.display()));
        ops_pg::backup_logical(&repo, rt.handle(), &dsn, &opts)?
    } else if let Some(dsn) = &a.postgres_physical {
        if !a.databases.is_empty() {
            bail!("--database applies to logical backups (--postgres); a physical backup covers the whole cluster");
        }
        let dsn = dsn_from(dsn)?;
        let opts = PhysicalBackupOptions {
            pgdata: a.pgdata.clone(),
            source: a.source.clone(),
            tags: a.tags.clone(),
            incremental: !a.force,
            lzma_frames: a.page_compression == "auto",
            block_size: env.block_size.unwrap_or(pg::physical::DEFAULT_BLOCK_SIZE),
            compression_level: env.physical_level,
            ..PhysicalBackupOptions::default()
        };
        info(g, format!("base backup of {} ...", dsn.display()));
        ops_pg::backup_physical(&repo, rt.handle(), &dsn, &opts)?
    } else {
        bail!("internal: no PostgreSQL source");
    };
    let s = &out.snapshot.summary;
    if g.json {
        ui::print_json(&json!({
            "snapshot": out.id,
            "source": out.snapshot.source,
            "kind": out.snapshot.kind,
            "summary": s,
            "meta": out.snapshot.meta,
        }))?;
    } else if !g.quiet {
        outln!(
            "snapshot {} saved ({}, source {}): {} read, {} new data, {} stored in {:.2}s",
            out.id.short(),
            out.snapshot.kind,
            out.snapshot.source,
            ui::bytes(s.bytes_read),
            ui::bytes(s.data_added),
            ui::bytes(s.stored_added),
            s.duration_secs
        );
    }
    Ok(exit::OK)
}

/// `holdfast restore SNAPSHOT --to-postgres DSN` / `--to-datadir DIR`.
pub fn restore(g: &Global, rt: &Runtime, a: RestoreArgs) -> Result<i32> {
    let erasures = crate::erasure::mode(&a)?;
    let repo = open::open(g, rt)?;
    let spec = SnapshotSpec {
        spec: a.snapshot.clone(),
        filter: SnapshotFilter {
            source: a.select.source.clone(),
            tags: a.select.tags.clone(),
            kind: None,
        },
    };
    if let Some(dsn) = &a.to_postgres {
        let Some(db) = a.database.clone() else {
            bail!("--to-postgres needs --database NAME (the database to create)");
        };
        let dsn = dsn_from(dsn)?;
        let mut o = LogicalRestoreOptions::new(db);
        o.tools = PgEnv::read().tools();
        o.source_database = a.from_database.clone();
        o.jobs = a.jobs.max(1);
        o.clean = a.clean;
        o.no_owner = a.no_owner;
        o.no_acl = a.no_acl;
        o.with_globals = a.with_globals;
        let mask = a
            .mask
            .as_deref()
            .map(holdfast_ops::masking::Masking::load)
            .transpose()?;
        let done = ops_pg::restore_logical(
            &repo,
            rt.handle(),
            &spec,
            &dsn,
            &o,
            &erasures,
            mask.as_ref(),
        )?;
        let (snap, rep) = (&done.snapshot, &done.report);
        if g.json {
            ui::print_json(&json!({
                "snapshot": snap.id,
                "database": rep.database,
                "source_database": rep.source_database,
                "bytes": rep.bytes,
                "expected_row_counts": rep.expected_row_counts,
                "seconds": rep.duration_secs,
                "erasures": done.erasures,
                "masking": done.masking,
            }))?;
        } else if !g.quiet {
            outln!(
                "restored database {} of snapshot {} into {} ({}) in {:.2}s",
                rep.source_database,
                snap.id.short(),
                rep.database,
                ui::bytes(rep.bytes),
                rep.duration_secs
            );
            if let Some(m) = &done.masking {
                print_masking(m);
            }
        }
        crate::erasure::print_report(g, &done.erasures);
        return Ok(exit::OK);
    }
    let Some(dir) = &a.to_datadir else {
        bail!("internal: no PostgreSQL restore target");
    };
    let target = match (&a.until, a.until_latest) {
        (Some(_), true) => bail!("give --until or --until-latest, not both"),
        (Some(t), false) => RecoveryTarget::Time(holdfast_ops::time::parse_time(t)?),
        (None, true) => RecoveryTarget::Latest,
        (None, false) => RecoveryTarget::Immediate,
    };
    let cwd = std::env::current_dir().context("finding the current directory")?;
    let cfg = ops_pg::PhysicalRestoreConfig {
        snapshot: spec,
        datadir: dir.clone(),
        target,
        restore_command: Some(restore_command(g)?),
        keep_archiving: a.keep_archiving,
        tablespace_map: a
            .tablespace_map
            .iter()
            .map(|m| ops_pg::parse_tablespace_map(m, &cwd))
            .collect::<Result<_, _>>()?,
        erasures,
    };
    let done = ops_pg::restore_physical(&repo, &cfg)
        .with_context(|| format!("restoring snapshot {} to {}", a.snapshot, dir.display()))?;
    let (snap, rep) = (&done.snapshot, &done.report);
    if g.json {
        ui::print_json(&json!({
            "snapshot": snap.id,
            "datadir": rep.datadir,
            "files": rep.files,
            "bytes": rep.bytes,
            "cluster": rep.cluster.to_string(),
            "wal_through": rep.wal_through,
            "tablespaces": rep.tablespaces,
            "target": format!("{target:?}"),
            "seconds": rep.duration_secs,
            "erasures": done.erasures,
        }))?;
    } else if !g.quiet {
        outln!(
            "restored snapshot {} to {}: {} files, {} in {:.2}s; recovery target {}{}",
            snap.id.short(),
            dir.display(),
            rep.files,
            ui::bytes(rep.bytes),
            rep.duration_secs,
            match target {
                RecoveryTarget::Immediate => "end of backup".to_string(),
                RecoveryTarget::Latest => "latest archived WAL".to_string(),
                RecoveryTarget::Time(t) => t.to_rfc3339(),
            },
            rep.wal_through
                .as_ref()
                .map(|w| format!(" (WAL through {w})"))
                .unwrap_or_default()
        );
        for (oid, d) in &rep.tablespaces {
            outln!("tablespace {oid} restored to {}", d.display());
        }
        outln!(
            "start the server on {} to replay WAL (pg_ctl -D {} start)",
            dir.display(),
            dir.display()
        );
    }
    crate::erasure::print_report(g, &done.erasures);
    Ok(exit::OK)
}

/// The masking lines of a restore's summary: per column its rule, values
/// and the verification.
pub(crate) fn print_masking(m: &holdfast_ops::masking::MaskReport) {
    outln!(
        "masked with {}: {} column(s) in {} table(s), verified ({}){}",
        m.file,
        m.columns.len(),
        m.tables.len(),
        if m.verified {
            "no sampled source value remains"
        } else {
            "NOT VERIFIED"
        },
        if m.vacuumed {
            "; masked tables rewritten (VACUUM FULL)"
        } else {
            ""
        }
    );
    for c in &m.columns {
        outln!(
            "  {}.{}: {} ({} value(s); {} sampled, {} survived)",
            c.table,
            c.column,
            c.rule,
            c.values,
            c.sampled,
            c.survivors
        );
    }
    for fk in &m.foreign_keys_checked {
        outln!("  foreign key {fk} validated after masking");
    }
    for f in &m.files {
        outln!("  {} {}", f.action, f.path);
    }
}

/// The restore_command the restored server runs: this binary, the
/// repository and a password file, all absolute, in its environment.
pub(crate) fn restore_command(g: &Global) -> Result<ops_pg::RestoreCommand> {
    let exe = std::env::current_exe().context("finding the holdfast binary")?;
    let repo = g
        .repo
        .as_deref()
        .context("no repository given")?
        .to_string();
    let repo = if repo.contains("://") {
        repo
    } else {
        absolute(Path::new(&repo))?.display().to_string()
    };
    // A key file opens without argon2 and lets restore_command prefetch.
    let (var, file) = match (&g.key_file, &g.password_file) {
        (Some(k), _) => ("HOLDFAST_KEY_FILE", k),
        (None, Some(p)) => ("HOLDFAST_PASSWORD_FILE", p),
        (None, None) => bail!("point-in-time restores need --key-file (HOLDFAST_KEY_FILE) or --password-file (HOLDFAST_PASSWORD_FILE): the server's restore_command opens the repository with it; it must be readable by the PostgreSQL server user"),
    };
    let file = absolute(file)?.display().to_string();
    Ok(ops_pg::RestoreCommand {
        program: exe,
        env: vec![
            ("HOLDFAST_REPOSITORY".into(), repo),
            (var.into(), file),
            ("HOLDFAST_WAL_PREFETCH".into(), "8".into()),
        ],
    })
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    Ok(std::env::current_dir()
        .context("current directory")?
        .join(p))
}

/// `holdfast wal-push PATH` (archive_command).
pub fn wal_push(g: &Global, rt: &Runtime, a: WalPushArgs) -> Result<i32> {
    let repo = open::open(g, rt)?;
    let outcome = ops_pg::wal_push(&repo, &a.path, a.cluster)?;
    if g.json {
        ui::print_json(&json!({"file": a.path, "outcome": format!("{outcome:?}")}))?;
    } else if outcome == pg::PushOutcome::AlreadyArchived {
        info(
            g,
            format!(
                "{} was already archived with identical content",
                a.path.display()
            ),
        );
    }
    Ok(exit::OK)
}

/// `holdfast wal-fetch NAME DEST` (restore_command).
///
/// With `--prefetch N`, a segment a background prefetcher already put in
/// the spool is served by a rename, without the key (see
/// `holdfast_postgres::wal` on what a hit checks); a new prefetcher is
/// started only when fewer than N/2 segments are waiting and none is
/// running.
pub fn wal_fetch(g: &Global, rt: &Runtime, a: WalFetchArgs) -> Result<i32> {
    let cluster = match a.cluster {
        Some(c) => c,
        None => pg::wal::cluster_of_datadir(Path::new("."))?,
    };
    let spool = match &a.spool {
        Some(s) => s.clone(),
        None => pg::default_spool(&a.dest),
    };
    // History files, `.partial` files and backup labels are never spooled
    // nor prefetched: always asked of the repository.
    let prefetch = a.prefetch > 0 && pg::wal::is_segment_name(&a.name);
    if prefetch {
        let ahead = pg::tidy_spool(&spool, &a.name);
        pg::note_position(&spool, &a.name);
        if spool.join(&a.name).symlink_metadata().is_ok() {
            let backend = open::backend(g, rt)?;
            let fingerprint = pg::repository_fingerprint(backend.as_ref(), rt.handle())?;
            if pg::take_from_spool(&fingerprint, cluster, &a.name, &spool, &a.dest)? {
                if ahead * 2 < a.prefetch {
                    start_prefetch(g, &a, cluster, &spool);
                }
                return Ok(exit::OK);
            }
        }
    }
    let repo = open::open(g, rt)?;
    match ops_pg::wal_fetch(&repo, &a.name, &a.dest, Some(cluster)) {
        Ok(_) => {
            if prefetch {
                start_prefetch(g, &a, cluster, &spool);
            }
            Ok(exit::OK)
        }
        Err(holdfast_ops::OpsError::Postgres(e @ PgError::WalNotFound { .. })) => {
            // Routine at the end of recovery: one line, no "error:" noise.
            if !g.quiet {
                errln!("holdfast: {e}");
            }
            Ok(WAL_NOT_FOUND)
        }
        Err(e) => Err(e.into()),
    }
}

/// Start `holdfast wal-prefetch` detached (own process group, no standard
/// streams), as pgBackRest's asynchronous archive-get does: PostgreSQL
/// replays the segment it has while the next ones are fetched. Failing to
/// start it only costs speed, so it is not an error.
fn start_prefetch(g: &Global, a: &WalFetchArgs, cluster: u64, spool: &Path) {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let Ok(spool) = absolute(spool) else {
        return;
    };
    // One prefetcher at a time: if one holds the spool, starting another
    // (a process and a repository open per fetch) only takes CPU from replay.
    match pg::SpoolLock::try_acquire(&spool) {
        Ok(Some(lock)) => drop(lock),
        _ => return,
    }
    let mut c = Command::new(exe);
    c.arg("wal-prefetch")
        .arg(&a.name)
        .args(["--cluster", &cluster.to_string()])
        .args(["--count", &a.prefetch.to_string()])
        .arg("--spool")
        .arg(&spool)
        .arg("--quiet");
    // Inherited environment carries HOLDFAST_PASSWORD / HOLDFAST_KEY; the
    // options may have come from the command line, so pass them on.
    if let Some(r) = &g.repo {
        let r = if r.contains("://") {
            r.clone()
        } else {
            absolute(Path::new(r)).map_or(r.clone(), |p| p.display().to_string())
        };
        c.args(["--repo", &r]);
    }
    if let Some(k) = &g.key_file {
        if let Ok(k) = absolute(k) {
            c.arg("--key-file").arg(k);
        }
    }
    if let Some(p) = &g.password_file {
        if let Ok(p) = absolute(p) {
            c.arg("--password-file").arg(p);
        }
    }
    if let Some(e) = &g.s3_endpoint {
        c.args(["--s3-endpoint", e]);
    }
    if let Some(r) = &g.s3_region {
        c.args(["--s3-region", r]);
    }
    if g.s3_path_style {
        c.arg("--s3-path-style");
    }
    if g.s3_allow_http {
        c.arg("--s3-allow-http");
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let _ = c.spawn();
}

/// `holdfast wal-prefetch AFTER` (started by `wal-fetch --prefetch`).
pub fn wal_prefetch(g: &Global, rt: &Runtime, a: WalPrefetchArgs) -> Result<i32> {
    let Some(_lock) = pg::SpoolLock::try_acquire(&a.spool)? else {
        return Ok(exit::OK); // another prefetcher is filling the spool
    };
    let repo = open::open(g, rt)?;
    ops_pg::wal_prefetch(&repo, a.cluster, &a.after, a.count, &a.spool)?;
    Ok(exit::OK)
}

/// For `holdfast snapshots`: the recoverable point of every cluster, added
/// to each physical snapshot's JSON (`cluster_recovery`) and printed after
/// the table.
pub fn annotate(
    values: &mut [serde_json::Value],
    list: &[SnapshotEntry],
    points: &[pg::ClusterRecoveryPoint],
) {
    for (v, s) in values.iter_mut().zip(list) {
        let Some(c) = pg::physical::snapshot_cluster(&s.snapshot) else {
            continue;
        };
        if let (Some(o), Some(p)) = (
            v.as_object_mut(),
            points.iter().find(|p| p.cluster == c.to_string()),
        ) {
            o.insert("cluster_recovery".into(), json!(p));
        }
    }
}

pub fn print_points(points: &[pg::ClusterRecoveryPoint]) -> Result<()> {
    for p in points {
        outln!(
            "cluster {}: latest recoverable point {}{}{}",
            p.cluster,
            p.latest_recoverable_time
                .map(|t| t.to_rfc3339())
                .unwrap_or_else(|| "none (no base backup)".into()),
            p.last_wal_segment
                .as_ref()
                .map(|w| format!(", WAL through {w}"))
                .unwrap_or_default(),
            p.wal_gap_at
                .as_ref()
                .map(|w| format!(", GAP: segment {w} is missing"))
                .unwrap_or_default()
        );
    }
    Ok(())
}
