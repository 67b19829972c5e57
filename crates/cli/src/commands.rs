//! One function per subcommand: open, call the library, print.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use holdfast_ops::backup::{self as ops_backup, FileBackupConfig};
use holdfast_ops::keys::{self as ops_keys, AddedSlot, NewSecret, NewSlot};
use holdfast_ops::open::Prefetch;
use holdfast_ops::restore::{self as ops_restore, FileRestoreConfig, SnapshotSpec};
use holdfast_repo::check::CheckOptions;
use holdfast_repo::keys::KdfParams;
use holdfast_repo::snapshot::{SnapshotEntry, SnapshotFilter};
use holdfast_repo::tree::{Node, NodeKind};
use holdfast_repo::Repository;
use holdfast_sources::backup;
use holdfast_sources::exclude::{self, ExcludeRules};
use holdfast_sources::meta::NameCache;
use holdfast_sources::restore::{RestoreOptions, SparseMode};
use holdfast_sources::{diff, walk, Progress, SourceError};
use serde_json::json;

use crate::args::*;
use crate::exit;
use crate::interrupt;
use crate::open;
use crate::ui::{self, Bar};

pub fn run(cli: Cli) -> Result<i32> {
    let rt = open::runtime()?;
    let g = &cli.global;
    match cli.command {
        Command::Init(a) => init(g, &rt, a),
        Command::Backup(a) if a.postgres.is_some() || a.postgres_physical.is_some() => {
            crate::postgres::backup(g, &rt, a)
        }
        Command::Backup(a) => backup_cmd(g, &rt, a),
        Command::Snapshots(a) => snapshots(g, &rt, a),
        Command::Ls(a) => ls(g, &rt, a),
        Command::Restore(a) if a.to_postgres.is_some() || a.to_datadir.is_some() => {
            crate::postgres::restore(g, &rt, a)
        }
        Command::Restore(a) => restore_cmd(g, &rt, a),
        Command::Check(a) => check_cmd(g, &rt, a),
        Command::Key(k) => key(g, &rt, k),
        Command::Stats(a) => stats(g, &rt, a),
        Command::Diff(a) => diff_cmd(g, &rt, a),
        Command::Repair(RepairCommand::Index) => repair_index(g, &rt),
        Command::Repair(RepairCommand::Snapshots) => repair_snapshots(g, &rt),
        Command::WalPush(a) => crate::postgres::wal_push(g, &rt, a),
        Command::WalFetch(a) => crate::postgres::wal_fetch(g, &rt, a),
        Command::WalPrefetch(a) => crate::postgres::wal_prefetch(g, &rt, a),
        Command::Policy(c) => crate::policy::run(g, &rt, c),
        Command::BenchSynthIndex(a) => crate::bench::synth_index(g, &rt, a),
        Command::BenchOpen => crate::bench::open_index(g, &rt),
        Command::Migrate => crate::migrate::run(g, &rt),
        Command::Locks => crate::locks::locks(g, &rt),
        Command::Unlock(a) => crate::locks::unlock(g, &rt, a),
        Command::Gc(a) => crate::gc::run(g, &rt, a),
        Command::Audit(c) => crate::audit::run(g, &rt, c),
        Command::Drill(c) => crate::drill::run(g, &rt, c),
        Command::Config(c) => crate::config::run(g, c),
        Command::Daemon(a) => crate::daemon::run(g, &rt, a),
        Command::Status(a) => crate::daemon::status(g, &rt, a),
        Command::Signer(c) => crate::signer::run(g, &rt, c),
        Command::Hold(c) => crate::hold::run(g, &rt, c),
        Command::Compliance(c) => crate::compliance::run(g, &rt, c),
        Command::Erasure(c) => crate::erasure::run(g, &rt, c),
    }
}

fn info(g: &Global, msg: impl AsRef<str>) {
    if !g.quiet && !g.json {
        errln!("{}", msg.as_ref());
    }
}

fn filter(s: &SnapshotSelect) -> SnapshotFilter {
    SnapshotFilter {
        source: s.source.clone(),
        tags: s.tags.clone(),
        kind: None,
    }
}

fn kdf(memory_mib: u32, iterations: u32) -> Result<KdfParams> {
    Ok(holdfast_ops::init::kdf(memory_mib, iterations)?)
}

fn init(g: &Global, rt: &tokio::runtime::Runtime, a: InitArgs) -> Result<i32> {
    let b = open::backend_with(g, rt, a.lock_mode.is_some())?;
    let password = open::password(g, "new repository password: ")?;
    let cfg = holdfast_ops::init::InitConfig {
        password,
        kdf: kdf(a.kdf_memory_mib, a.kdf_iterations)?,
        compression_level: a.compression,
        lock: match (&a.lock_mode, a.lock_days) {
            (Some(mode), Some(days)) => Some(holdfast_repo::config::LockConfig {
                mode: mode.clone(),
                days,
            }),
            _ => None,
        },
    };
    let session = holdfast_ops::init::init_session(b, rt.handle(), cfg, &open::session_options(g))?;
    for w in &session.warnings {
        errln!("holdfast: warning: {w}");
    }
    let repo = session.repo;
    if g.json {
        ui::print_json(&json!({
            "location": repo.location(),
            "id": repo.config().id,
            "format_version": holdfast_repo::config::FORMAT_VERSION,
        }))?;
    } else {
        info(
            g,
            format!(
                "created repository {} at {}",
                repo.config().id.short(),
                repo.location()
            ),
        );
    }
    Ok(exit::OK)
}

fn backup_cmd(g: &Global, rt: &tokio::runtime::Runtime, a: BackupArgs) -> Result<i32> {
    let mode = ui::progress_mode(g.json, g.quiet, g.progress_interval);
    let cfg = FileBackupConfig {
        paths: a.paths.clone(),
        source: a.source.clone(),
        tags: a.tags.clone(),
        excludes: explicit_excludes(&a)?,
        inherit_excludes: !a.no_inherit_excludes,
        full: a.force,
        time: a
            .time
            .as_deref()
            .map(holdfast_ops::time::parse_time)
            .transpose()?,
        scan: mode != ui::ProgressMode::Off,
        no_xattrs: a.no_xattrs,
        parallelism: {
            let d = backup::Parallelism::default();
            backup::Parallelism {
                readers: a.threads.unwrap_or(d.readers),
                split_min: a.split_min.unwrap_or(d.split_min),
                segment: a.split_segment.unwrap_or(d.segment),
                split_budget: a.split_budget.unwrap_or(d.split_budget),
                ..d
            }
        },
    };
    // Paths and rules are checked before the repository is opened (and a
    // password asked for).
    ops_backup::validate(&cfg)?;
    let repo = open::open_for(g, rt, Prefetch::backup())?;
    let prepared = ops_backup::prepare(&repo, &cfg)?;
    warn_index_problems(g, &repo);
    if let Some(from) = prepared.inherited_from {
        info(
            g,
            format!(
                "using the exclude rules of snapshot {}: {} (give exclude options to replace them, --no-inherit-excludes to drop them)",
                from.short(),
                prepared.excludes().as_flags()
            ),
        );
    }
    if let Some(p) = prepared.parent() {
        info(g, format!("using parent snapshot {}", p.short()));
    }
    let progress = Arc::new(Progress::default());
    interrupt::install().context("installing the SIGINT/SIGTERM handlers")?;
    let watcher = interrupt::Watcher::start(progress.clone(), g.quiet);
    let bar = Bar::start(progress.clone(), mode, "backup");
    let res = prepared.run(&repo, &progress);
    bar.finish();
    drop(watcher);
    let done = match res {
        Err(holdfast_ops::OpsError::Source(SourceError::Interrupted { packs, stored })) => {
            return interrupted(g, packs, stored);
        }
        r => r?,
    };
    let out = &done.outcome;
    for w in &out.warnings {
        errln!("holdfast: warning: {w}");
    }
    for w in &out.changing {
        errln!("holdfast: warning: {w}");
    }
    let s = &out.snapshot.summary;
    if g.json {
        ui::print_json(&json!({
            "snapshot": out.id,
            "tree": out.snapshot.tree,
            "source": out.snapshot.source,
            "counts": s.counts(),
            "summary": s,
            "excludes": done.excludes,
            "warnings": out.warnings,
            "changing": out.changing,
            "cpu": out.cpu,
        }))?;
    } else if !g.quiet {
        print_backup_summary(out.id, s);
    }
    if out.warnings.is_empty() {
        Ok(exit::OK)
    } else {
        errln!(
            "holdfast: {} file(s) could not be read and are not in the snapshot",
            out.warnings.len()
        );
        Ok(exit::PARTIAL_BACKUP)
    }
}

/// The exclude rules given on this command line, if any.
fn explicit_excludes(a: &BackupArgs) -> Result<Option<ExcludeRules>> {
    let mut patterns = a.excludes.clone();
    for f in &a.exclude_files {
        patterns.extend(exclude::patterns_from_file(f)?);
    }
    let rules = ExcludeRules {
        patterns,
        if_present: a.exclude_if_present.clone(),
        caches: a.exclude_caches,
        one_file_system: a.one_file_system,
        larger_than: a.exclude_larger_than,
    };
    let given = !a.exclude_files.is_empty() || !rules.is_empty();
    Ok(given.then_some(rules))
}

fn print_backup_summary(id: holdfast_repo::Id, s: &holdfast_repo::snapshot::Summary) {
    outln!(
        "snapshot {} saved: {} ({} new, {} changed, {} unchanged files), {} total",
        id.short(),
        s.counts(),
        s.files_new,
        s.files_changed,
        s.files_unchanged,
        ui::bytes(s.total_bytes)
    );
    let mut notes = Vec::new();
    if s.excluded > 0 {
        notes.push(format!("{} entries left out by exclude rules", s.excluded));
    }
    if s.files_reread > 0 {
        notes.push(format!("{} re-read after changing", s.files_reread));
    }
    if s.files_changing > 0 {
        notes.push(format!("{} still changing", s.files_changing));
    }
    if !notes.is_empty() {
        outln!("{}", notes.join(", "));
    }
    outln!(
        "data: read {}, added {} new; metadata: added {}; stored {} in {:.2}s",
        ui::bytes(s.bytes_read),
        ui::bytes(s.data_added),
        ui::bytes(s.meta_added),
        ui::bytes(s.stored_added),
        s.duration_secs
    );
}

/// A backup stopped by SIGINT or SIGTERM: say what was kept and exit 128 + signal.
fn interrupted(g: &Global, packs: u64, stored: u64) -> Result<i32> {
    let sig = interrupt::received().unwrap_or(libc::SIGINT);
    if g.json {
        ui::print_json(&json!({
            "interrupted": interrupt::name(sig),
            "packs_indexed": packs,
            "stored_bytes": stored,
            "snapshot": null,
        }))?;
    }
    errln!(
        "holdfast: backup interrupted by {}: {packs} pack(s) ({}) stored and indexed; no snapshot was written; the next backup reuses this data",
        interrupt::name(sig),
        ui::bytes(stored)
    );
    Ok(128 + sig)
}

fn warn_index_problems(g: &Global, repo: &Repository) {
    for (name, e) in repo.index_problems().corrupt {
        if !g.quiet {
            errln!("holdfast: warning: index object {name} is unreadable ({e}); run `holdfast repair index`");
        }
    }
}

fn snapshot_json(s: &SnapshotEntry, names: &NameCache) -> serde_json::Value {
    let mut v = serde_json::to_value(&s.snapshot).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "username".into(),
            json!(ui::user_name(&s.snapshot.username, names)),
        );
        o.insert("id".into(), json!(s.id));
        o.insert("short_id".into(), json!(s.id.short()));
    }
    v
}

fn snapshots(g: &Global, rt: &tokio::runtime::Runtime, a: SnapshotsArgs) -> Result<i32> {
    let repo = open::open(g, rt)?;
    let listed = holdfast_ops::inspect::snapshots(&repo, &filter(&a.select))?;
    for (name, e) in &listed.unreadable {
        errln!("holdfast: warning: snapshot {name} is unreadable: {e}");
    }
    let (list, points) = (listed.snapshots, listed.recovery_points);
    if g.json {
        let names = NameCache::default();
        let mut values: Vec<_> = list.iter().map(|s| snapshot_json(s, &names)).collect();
        crate::postgres::annotate(&mut values, &list, &points);
        ui::print_json(&values)?;
        return Ok(exit::OK);
    }
    outln!(
        "{:<10} {:<20} {:<10} {:<12} {:>12}  source / paths",
        "id",
        "time",
        "kind",
        "tags",
        "size"
    );
    for s in &list {
        if ui::stdout_closed() {
            break;
        }
        let sn = &s.snapshot;
        outln!(
            "{:<10} {:<20} {:<10} {:<12} {:>12}  {} {}",
            s.id.short(),
            sn.time.format("%Y-%m-%d %H:%M:%S"),
            sn.kind,
            ui::escape(sn.tags.join(",").as_bytes()),
            ui::bytes(sn.summary.total_bytes),
            ui::escape(sn.source.as_bytes()),
            ui::escape(sn.paths.join(" ").as_bytes())
        );
    }
    if !g.quiet {
        outln!("{} snapshot(s)", list.len());
    }
    crate::postgres::print_points(&points)?;
    Ok(exit::OK)
}

fn ls(g: &Global, rt: &tokio::runtime::Runtime, a: LsArgs) -> Result<i32> {
    let repo = open::open(g, rt)?;
    repo.load_index()?;
    let snap = repo.find_snapshot(&a.snapshot, &filter(&a.select))?;
    let prefix = match &a.path {
        Some(p) => snapshot_path(&repo, &snap, p)?,
        None => b"/".to_vec(),
    };
    let names = NameCache::default();
    let mut first = true;
    if g.json {
        outln!("[");
    }
    let res = walk::walk(&repo, snap.snapshot.tree, &prefix, &mut |path, n| {
        if ui::stdout_closed() {
            // The reader is gone: stop walking (the error is dropped below).
            return Err(holdfast_repo::RepoError::Invalid("standard output closed".into()).into());
        }
        if g.json {
            let sep = if std::mem::take(&mut first) { "" } else { "," };
            outln!("{sep}{}", ls_json(path, n));
        } else if a.long {
            outln!("{}", ls_long(path, n, &names));
        } else {
            outln!("{}", ls_name(path, n));
        }
        Ok(())
    });
    if let Err(e) = res {
        if !ui::stdout_closed() {
            return Err(e.into());
        }
    }
    if g.json {
        outln!("]");
    }
    Ok(exit::OK)
}

/// A path from the command line as an absolute path in the snapshot,
/// resolved as `backup` resolves its paths (see `walk::resolve`).
fn snapshot_path(
    repo: &Repository,
    snap: &SnapshotEntry,
    given: &std::ffi::OsStr,
) -> Result<Vec<u8>> {
    let cwd = std::env::current_dir().context("finding the current directory")?;
    Ok(ops_restore::snapshot_path(repo, snap, given, &cwd)?)
}

/// The snapshot named on the command line.
fn spec(snapshot: &str, select: &SnapshotSelect) -> SnapshotSpec {
    SnapshotSpec {
        spec: snapshot.to_string(),
        filter: filter(select),
    }
}

/// A `-l`-less listing line: the escaped path, and a symlink's target.
fn ls_name(path: &[u8], n: &Node) -> String {
    match &n.target {
        Some(t) if n.kind == NodeKind::Symlink => {
            format!("{} -> {}", ui::escape(path), ui::escape(&t.0))
        }
        _ => ui::escape(path),
    }
}

/// An `ls -l` line: mode, owner, group, size, mtime, name (-> target).
/// Owners are the names recorded at backup, else this host's, else numbers.
fn ls_long(path: &[u8], n: &Node, names: &NameCache) -> String {
    let user = n
        .user
        .clone()
        .or_else(|| names.user(n.uid))
        .unwrap_or_else(|| n.uid.to_string());
    let group = n
        .group
        .clone()
        .or_else(|| names.group(n.gid))
        .unwrap_or_else(|| n.gid.to_string());
    format!(
        "{} {:<8} {:<8} {:>12} {} {}",
        mode_string(n.kind, n.mode),
        ui::escape(user.as_bytes()),
        ui::escape(group.as_bytes()),
        n.size,
        chrono::DateTime::from_timestamp(n.mtime.sec, 0)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default(),
        ls_name(path, n)
    )
}

/// One `ls --json` entry. Names are exact: `path` (and a symlink's
/// `target`) when UTF-8, else `path_hex` (`target_hex`), as trees store them.
fn ls_json(path: &[u8], n: &Node) -> serde_json::Value {
    let mut v = json!({
        "type": n.kind, "size": n.size, "mode": format!("{:o}", n.mode),
        "uid": n.uid, "gid": n.gid, "user": n.user, "group": n.group, "mtime": n.mtime.sec,
    });
    if let Some(o) = v.as_object_mut() {
        let (key, value) = ui::json_bytes("path", path);
        o.insert(key, value);
        if let Some(t) = n.target.as_ref().filter(|_| n.kind == NodeKind::Symlink) {
            let (key, value) = ui::json_bytes("target", &t.0);
            o.insert(key, value);
        }
    }
    v
}

fn mode_string(kind: NodeKind, mode: u32) -> String {
    let t = match kind {
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::Fifo => 'p',
        NodeKind::Chardev => 'c',
        NodeKind::Blockdev => 'b',
        NodeKind::Socket => 's',
        NodeKind::File => '-',
    };
    let mut s = String::from(t);
    for shift in [6, 3, 0] {
        let b = (mode >> shift) & 7;
        s.push(if b & 4 != 0 { 'r' } else { '-' });
        s.push(if b & 2 != 0 { 'w' } else { '-' });
        s.push(if b & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn restore_cmd(g: &Global, rt: &tokio::runtime::Runtime, a: RestoreArgs) -> Result<i32> {
    let target = a.target.clone().context("--target is required")?;
    let repo = open::open_for(g, rt, Prefetch::restore())?;
    repo.load_index()?;
    warn_index_problems(g, &repo);
    // The plan knows the total before any content is written.
    let (progress, bar) = known_total_bar(g, "restore");
    let options = RestoreOptions {
        includes: Vec::new(),
        overwrite: a.overwrite,
        threads: 0,
        max_retrieval_wait: None,
        no_xattrs: a.no_xattrs,
        sparse: if a.sparse {
            SparseMode::Always
        } else if a.no_sparse {
            SparseMode::Never
        } else {
            SparseMode::Auto
        },
    };
    let cfg = FileRestoreConfig {
        snapshot: spec(&a.snapshot, &a.select),
        target: target.clone(),
        includes: a.includes.clone(),
        cwd: std::env::current_dir().context("finding the current directory")?,
        options,
    };
    let erasures = crate::erasure::mode(&a)?;
    let mask = a
        .mask
        .as_deref()
        .map(holdfast_ops::masking::Masking::load)
        .transpose()?;
    let res = ops_restore::restore_files_masked(&repo, &cfg, &erasures, &progress, mask.as_ref());
    bar.finish();
    let done =
        res.with_context(|| format!("restoring snapshot {} to {}", a.snapshot, target.display()))?;
    let (snap, out, seconds) = (&done.snapshot, &done.outcome, done.seconds);
    for f in &out.failed {
        errln!("holdfast: error: not restored: {f}");
    }
    if !g.quiet {
        for w in &out.warnings {
            errln!("holdfast: warning: {w}");
        }
    }
    if g.json {
        ui::print_json(&json!({
            "snapshot": snap.id,
            "target": target,
            "counts": out.counts(),
            "restored": out,
            "seconds": seconds,
            "erasures": done.erasures,
            "masking": done.masking.as_ref().map(|files| json!({"files": files})),
        }))?;
    } else if !g.quiet {
        if out.retrieval_seconds > 0.0 {
            outln!(
                "waited {:.1}s for packs to be retrieved from archival storage",
                out.retrieval_seconds
            );
        }
        outln!(
            "restored snapshot {} to {}: {}, {} of data in {:.2}s",
            snap.id.short(),
            target.display(),
            out.counts(),
            ui::bytes(out.bytes),
            seconds
        );
        if out.resumed || out.files_skipped > 0 {
            outln!(
                "{}{} file(s) already complete in the target were kept, not written again",
                if out.resumed {
                    "resumed an interrupted restore: "
                } else {
                    ""
                },
                out.files_skipped
            );
        }
        if !out.warnings.is_empty() {
            outln!(
                "{} warning(s): the target refused some extended attributes (see above)",
                out.warnings.len()
            );
        }
    }
    crate::erasure::print_report(g, &done.erasures);
    if let (Some(files), false) = (&done.masking, g.quiet || g.json) {
        outln!(
            "masked: {} restored entr(ies) dropped or replaced",
            files.len()
        );
        for f in files {
            outln!("  {} {}", f.action, f.path);
        }
    }
    if out.failed.is_empty() {
        Ok(exit::OK)
    } else {
        errln!(
            "holdfast: {} item(s) could not be restored",
            out.failed.len()
        );
        Ok(exit::INTEGRITY)
    }
}

/// Progress for an operation whose library call knows its total up front
/// (restore plans, check lists packs): no scan-ahead, so the bar's total
/// counts as final from the start.
fn known_total_bar(g: &Global, label: &'static str) -> (Arc<Progress>, Bar) {
    let progress = Arc::new(Progress::default());
    progress
        .scan_done
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let bar = Bar::start(
        progress.clone(),
        ui::progress_mode(g.json, g.quiet, g.progress_interval),
        label,
    );
    (progress, bar)
}

/// The first 8 characters of a key slot id for display. Slot names come
/// from the repository listing, so a short or odd one must not panic.
fn short_id(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

fn check_cmd(g: &Global, rt: &tokio::runtime::Runtime, a: CheckArgs) -> Result<i32> {
    let repo = open::open(g, rt)?;
    let opts = CheckOptions {
        read_data: a.read_data,
        read_data_subset: a.read_data_subset,
    };
    let (progress, bar) = known_total_bar(g, "check");
    let p2 = progress.clone();
    let report = holdfast_ops::check::check(&repo, &opts, &move |done, total| {
        p2.files.store(done, std::sync::atomic::Ordering::Relaxed);
        p2.total_bytes
            .store(total, std::sync::atomic::Ordering::Relaxed);
        p2.bytes.store(done, std::sync::atomic::Ordering::Relaxed);
    });
    bar.finish();
    let report = report?;
    if g.json {
        ui::print_json(&json!({"ok": report.ok(), "report": report}))?;
    } else {
        for w in &report.warnings {
            errln!("warning: {w}");
        }
        for e in &report.errors {
            errln!("error: {e}");
        }
        if !g.quiet {
            outln!(
                "checked {} snapshot(s), {} tree(s), {} pack(s), {} WAL manifest(s); read {} pack(s), {} blob(s): {}",
                report.snapshots,
                report.trees,
                report.packs,
                report.wal_manifests,
                report.packs_read,
                report.blobs_read,
                if report.ok() {
                    "no errors".to_string()
                } else {
                    format!("{} error(s)", report.errors.len())
                }
            );
            if let Some(name) = &report.verification_record {
                outln!(
                    "recorded {} snapshot(s) read in full and found good as verified (verified/{name})",
                    report.verified.len()
                );
            }
        }
    }
    Ok(if report.ok() {
        exit::OK
    } else {
        exit::INTEGRITY
    })
}

fn new_password(a: &KeyAddArgs) -> Result<Vec<u8>> {
    let pw = match &a.new_password_file {
        Some(f) => open::read_password_file(f)?,
        None if std::io::IsTerminal::is_terminal(&std::io::stdin()) => {
            let p1 = rpassword::prompt_password("new password: ")?;
            let p2 = rpassword::prompt_password("repeat new password: ")?;
            if p1 != p2 {
                bail!("the passwords do not match");
            }
            p1.into_bytes()
        }
        None => bail!("no new password: pass --new-password-file or run on a terminal"),
    };
    if pw.is_empty() {
        bail!("refusing an empty password");
    }
    Ok(pw)
}

/// Where `key add`/`key passwd` put a key file: --new-key-file, or
/// --key-file naming a file that does not exist yet (then it cannot be what
/// opens the repository, and the password does).
fn new_key_file_target(g: &Global, k: &KeyCommand) -> Option<std::path::PathBuf> {
    let a = match k {
        KeyCommand::Add(a) | KeyCommand::Passwd(a) => a,
        _ => return None,
    };
    if a.new_password_file.is_some() {
        return None;
    }
    a.new_key_file
        .clone()
        .or_else(|| g.key_file.clone().filter(|p| !p.exists()))
}

/// The slot `a` asks for: a key file or a password.
fn new_slot(a: &KeyAddArgs, key_file: Option<&std::path::Path>) -> Result<NewSlot> {
    let secret = match key_file {
        Some(path) => NewSecret::KeyFile {
            path: path.to_path_buf(),
        },
        None => NewSecret::Password {
            password: new_password(a)?,
            kdf: kdf(a.kdf_memory_mib, a.kdf_iterations)?,
        },
    };
    Ok(NewSlot {
        secret,
        label: a.label.clone(),
    })
}

/// Say where a new key file is and how to treat it.
fn report_key_file(g: &Global, added: &AddedSlot) {
    if let Some((path, created)) = &added.key_file {
        info(
            g,
            format!(
                "{} key file {}; keep it as secret as a password (anyone who can read it can read the repository)",
                if *created { "created" } else { "using existing" },
                path.display()
            ),
        );
    }
}

fn key(g: &Global, rt: &tokio::runtime::Runtime, k: KeyCommand) -> Result<i32> {
    let target = new_key_file_target(g, &k);
    let repo = if target.is_some() && g.key_file.as_deref() == target.as_deref() {
        // --key-file names the file to create: open with the password.
        let mut g2 = g.clone();
        g2.key_file = None;
        open::open(&g2, rt)?
    } else {
        open::open(g, rt)?
    };
    match k {
        KeyCommand::List => {
            let holdfast_repo::repository::KeySlots {
                readable: keys,
                damaged,
            } = repo.key_slots()?;
            for (id, why) in &damaged {
                errln!("holdfast: warning: key slot {id} is damaged ({why}); `holdfast key remove {}` removes it", short_id(id));
            }
            let names = NameCache::default();
            if g.json {
                let v: Vec<_> = keys
                    .iter()
                    .map(|(id, s)| {
                        json!({
                            "id": id, "current": id == repo.current_key(), "created": s.created,
                            "hostname": s.hostname, "username": ui::user_name(&s.username, &names), "label": s.label,
                            "kdf": s.kdf, "memory_kib": s.params.map(|p| p.m_cost),
                            "iterations": s.params.map(|p| p.t_cost),
                        })
                    })
                    .collect();
                ui::print_json(&v)?;
            } else {
                for (id, s) in &keys {
                    outln!(
                        "{} {:<8} {} {}@{} {}",
                        if id == repo.current_key() { "*" } else { " " },
                        short_id(id),
                        s.created.format("%Y-%m-%d %H:%M:%S"),
                        ui::user_name(&s.username, &names),
                        ui::escape(s.hostname.as_bytes()),
                        ui::escape(s.label.as_bytes())
                    );
                }
            }
        }
        KeyCommand::Add(a) => {
            let added = ops_keys::add(&repo, new_slot(&a, target.as_deref())?)?;
            report_key_file(g, &added);
            let id = added.id;
            if g.json {
                ui::print_json(&json!({"added": id}))?;
            } else {
                info(g, format!("added key {}", short_id(&id)));
            }
        }
        KeyCommand::Remove { id } => {
            let removed = ops_keys::remove(&repo, &id)?;
            if g.json {
                ui::print_json(&json!({"removed": removed}))?;
            } else {
                info(g, format!("removed key {}", short_id(&removed)));
            }
        }
        KeyCommand::Passwd(a) => {
            let (added, old) = ops_keys::change(&repo, new_slot(&a, target.as_deref())?)?;
            report_key_file(g, &added);
            let id = added.id;
            if g.json {
                ui::print_json(&json!({"added": id, "removed": old}))?;
            } else {
                info(
                    g,
                    format!(
                        "password changed (key {} replaces {})",
                        short_id(&id),
                        short_id(&old)
                    ),
                );
            }
        }
    }
    Ok(exit::OK)
}

fn stats(g: &Global, rt: &tokio::runtime::Runtime, a: StatsArgs) -> Result<i32> {
    let repo = open::open(g, rt)?;
    let one = a.snapshot.as_deref().map(|s| spec(s, &a.select));
    let s = holdfast_ops::inspect::stats(&repo, one.as_ref(), &filter(&a.select))?;
    if g.json {
        ui::print_json(&s)?;
    } else {
        outln!("snapshots:          {}", s.snapshots);
        outln!("files (all snaps):  {}", s.files);
        outln!("logical size:       {}", ui::bytes(s.logical_bytes));
        outln!(
            "unique data:        {} in {} blobs",
            ui::bytes(s.unique_bytes),
            s.unique_blobs
        );
        outln!("stored size:        {}", ui::bytes(s.stored_bytes));
        outln!("dedup ratio:        {:.2}x", s.dedup_ratio);
        outln!("compression ratio:  {:.2}x", s.compression_ratio);
        outln!("overall ratio:      {:.2}x", s.total_ratio);
        outln!(
            "packs in repo:      {} ({})",
            s.packs,
            ui::bytes(s.repository_pack_bytes)
        );
    }
    Ok(exit::OK)
}

fn diff_cmd(g: &Global, rt: &tokio::runtime::Runtime, a: DiffArgs) -> Result<i32> {
    let repo = open::open(g, rt)?;
    let d = holdfast_ops::inspect::diff(&repo, &spec(&a.a, &a.select), &spec(&a.b, &a.select))?;
    if g.json {
        ui::print_json(&d)?;
    } else {
        for e in &d {
            if ui::stdout_closed() {
                break;
            }
            outln!("{} {}", e.change.symbol(), ui::escape(e.path.as_bytes()));
        }
        if !g.quiet {
            let count = |c| d.iter().filter(|e| e.change == c).count();
            outln!(
                "{} added, {} removed, {} modified, {} metadata only",
                count(diff::Change::Added),
                count(diff::Change::Removed),
                count(diff::Change::Modified),
                count(diff::Change::Metadata)
            );
        }
    }
    Ok(exit::OK)
}

fn repair_index(g: &Global, rt: &tokio::runtime::Runtime) -> Result<i32> {
    let repo = open::open(g, rt)?;
    let r = holdfast_ops::repair::index(&repo)?;
    if g.json {
        ui::print_json(&r)?;
    } else {
        for u in &r.unreadable_packs {
            errln!("warning: {u}");
        }
        print_relocations(&r);
        for d in &r.removed_index_objects {
            outln!("removed damaged index object {d}");
        }
        if !g.quiet {
            outln!(
                "scanned {} unindexed pack(s), reindexed {}, removed {} unreadable index object(s)",
                r.packs_scanned,
                r.packs_reindexed,
                r.removed_index_objects.len()
            );
        }
    }
    Ok(if r.unreadable_packs.is_empty() {
        exit::OK
    } else {
        exit::INTEGRITY
    })
}

fn print_relocations(r: &holdfast_repo::repair::RepairReport) {
    for p in &r.placed {
        outln!("put back: {p}");
    }
    for m in &r.moved_aside {
        outln!("moved aside: {m}");
    }
}

fn repair_snapshots(g: &Global, rt: &tokio::runtime::Runtime) -> Result<i32> {
    let repo = open::open(g, rt)?;
    let r = holdfast_ops::repair::snapshots(&repo)?;
    if g.json {
        ui::print_json(&r)?;
    } else {
        print_relocations(&r);
        if !g.quiet {
            outln!(
                "{} object(s) put back, {} moved to lost+found/ (inspect, then delete them yourself if unwanted)",
                r.placed.len(),
                r.moved_aside.len()
            );
        }
    }
    Ok(exit::OK)
}
