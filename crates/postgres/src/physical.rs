//! Physical base backups with the non-exclusive backup API, and restores
//! that set up point-in-time recovery.
//!
//! Backup: `pg_backup_start` on a tokio-postgres session that stays open,
//! our own walk and copy of the data directory, `pg_backup_stop`, whose
//! backup label and tablespace map go into the snapshot (as files at the
//! tree root, where PostgreSQL expects them, and in `meta`). The WAL from
//! the start to the stop segment is added under `pg_wal/`, so a snapshot
//! restores to a consistent cluster even without the archive.
//!
//! Why copy ourselves rather than stream `pg_basebackup`: relation files
//! are arrays of 8 KiB pages that never move, so we cut them into fixed,
//! page-aligned blocks (content-defined boundaries buy nothing there and
//! cost hashing), and a file whose size, mtime, ctime and inode are
//! unchanged since the parent snapshot (and whose mtime is safely older
//! than that backup's start) is not read at all: its block list is reused.
//! Changed files cost only their changed blocks. A tar stream from the
//! server would have to be read, chunked and hashed in full every time.
//!
//! Restore: lays the tree out (in parallel, with the original ownership when
//! run as root), writes `recovery.signal` and appends `restore_command`,
//! the recovery target and `recovery_target_action = 'promote'` to
//! `postgresql.auto.conf`. Before writing anything it checks that the
//! snapshot ended at or before a time target, that the archive holds an
//! unbroken run of WAL segments up to the target (naming the first missing
//! one, or the latest recoverable point when the archive simply ends), and
//! that every tablespace directory is empty or absent. Tablespaces are
//! restored as PostgreSQL keeps them: `pg_tblspc/OID` links to their
//! directories, created first so that the files land there.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use holdfast_repo::pack::BlobType;
use holdfast_repo::reader::ContentReader;
use holdfast_repo::snapshot::{Snapshot, SnapshotEntry, Summary};
use holdfast_repo::tree::{Node, NodeKind, Tree};
use holdfast_repo::writer::{BlobWriter, PendingFrame, WriterOptions, FRAME_TARGET};
use holdfast_repo::{Id, Repository};
use tokio_postgres::Client;

use crate::conn::Dsn;
use crate::error::{PgError, Result};
use crate::fstree;
use crate::logical::BackupOutcome;
use crate::wal;

pub const KIND_PHYSICAL: &str = "postgres-physical";

/// Default block size for data directory files: 2 pages. A changed page
/// costs its whole block in the next backup: on the EHR benchmark's day of
/// changes, 16 KiB blocks stored 74 MB against 105 MB with 64 KiB blocks,
/// for 5 % more on a full backup. See README ("Block size").
pub const DEFAULT_BLOCK_SIZE: usize = 16 * 1024;

#[derive(Debug, Clone)]
pub struct PhysicalBackupOptions {
    /// The data directory; default: the server's `data_directory` setting.
    /// Must be this machine's view of the server's data directory.
    pub pgdata: Option<PathBuf>,
    /// Snapshot source; default `postgres-cluster:<system identifier>`.
    pub source: Option<String>,
    pub tags: Vec<String>,
    /// Block size for files (a multiple of 8 KiB).
    pub block_size: usize,
    /// Reuse unchanged files' blocks from the newest earlier snapshot of
    /// the same cluster without reading them.
    pub incremental: bool,
    /// Wait in `pg_backup_stop` until the last segment is archived; default:
    /// when `archive_mode` is on.
    pub wait_for_archive: Option<bool>,
    /// zstd level of the blocks; default the repository's (the CLI's
    /// `HOLDFAST_PG_PHYSICAL_LEVEL` overrides, for measuring).
    pub compression_level: Option<i32>,
    /// Frames of pages that zstd already shrinks 5x may be stored with
    /// LZMA2 when smaller (see `holdfast_repo::compress`); off: zstd only.
    pub lzma_frames: bool,
}

impl Default for PhysicalBackupOptions {
    /// Reads no environment (the CLI applies `HOLDFAST_PG_BLOCK_SIZE` and
    /// `HOLDFAST_PG_PHYSICAL_LEVEL`, which exist for measuring).
    fn default() -> Self {
        PhysicalBackupOptions {
            pgdata: None,
            source: None,
            tags: Vec::new(),
            block_size: DEFAULT_BLOCK_SIZE,
            incremental: true,
            wait_for_archive: None,
            lzma_frames: true,
            compression_level: None,
        }
    }
}

/// Directories whose contents are not backed up (the directory itself is):
/// the PostgreSQL documentation's list for base backups. `pg_wal` gets the
/// backup's own segments instead.
const SKIP_CONTENTS: &[&str] = &[
    "pg_wal",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
    "pg_replslot",
];

/// Top-level files never copied: server run state, and the label and map
/// that we write from `pg_backup_stop`'s answer.
const SKIP_FILES: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "backup_label.old",
    "tablespace_map",
    "recovery.signal",
    "standby.signal",
    "recovery.conf",
    "recovery.done",
    "postgresql.auto.conf.tmp",
];

/// A walked directory: its node, entries, and files to read.
struct WalkDir {
    node: Option<Node>,
    entries: Vec<WalkEntry>,
}

enum WalkEntry {
    Dir(WalkDir),
    /// A leaf node; for files to read, `read` indexes `to_read`.
    Leaf {
        node: Node,
        read: Option<usize>,
    },
}

struct ToRead {
    path: PathBuf,
    content: Vec<Id>,
    size: u64,
    gone: bool,
}

struct Walker<'a> {
    repo: &'a Repository,
    /// Told about reused blocks (their packs' Object Lock retention is
    /// extended for the new snapshot).
    writer: &'a BlobWriter,
    to_read: Vec<ToRead>,
    parent_cutoff: i64,
    reused_files: u64,
    reused_bytes: u64,
}

impl Walker<'_> {
    fn walk(
        &mut self,
        dir: &Path,
        rel: &Path,
        node: Option<Node>,
        parent: Option<&Tree>,
    ) -> Result<WalkDir> {
        let mut out = WalkDir {
            node,
            entries: Vec::new(),
        };
        let top = rel.as_os_str().is_empty();
        let rel_s = rel.to_string_lossy();
        if SKIP_CONTENTS.contains(&rel_s.as_ref()) {
            return Ok(out);
        }
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            // Dropped while we walked (a database directory): fine for a base backup.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !top => return Ok(out),
            Err(e) => return Err(PgError::io(format!("listing {}", dir.display()), e)),
        };
        for ent in rd {
            let ent = ent.map_err(|e| PgError::io(format!("listing {}", dir.display()), e))?;
            let name = ent.file_name();
            let nb = name.as_bytes();
            let name_s = name.to_string_lossy();
            if (top && SKIP_FILES.contains(&name_s.as_ref()))
                || nb == b"pg_internal.init"
                || nb.starts_with(b"pgsql_tmp")
            {
                continue;
            }
            let path = ent.path();
            let lmd = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(PgError::io(format!("stat {}", path.display()), e)),
            };
            let child_rel = rel.join(&name);
            // Tablespace links and a linked pg_wal are followed: the tree
            // holds their contents as directories.
            let follow =
                lmd.file_type().is_symlink() && (rel_s == "pg_tblspc" || (top && nb == b"pg_wal"));
            let md = if follow {
                fs::metadata(&path)
                    .map_err(|e| PgError::io(format!("stat {}", path.display()), e))?
            } else {
                lmd
            };
            let ft = md.file_type();
            if ft.is_dir() {
                let node = fstree::node_from_meta(nb, NodeKind::Dir, &md);
                let sub_parent = parent
                    .and_then(|t| t.find(nb))
                    .filter(|n| n.kind == NodeKind::Dir)
                    .and_then(|n| n.subtree)
                    .and_then(|id| self.repo.load_tree(&id).ok());
                let sub = self.walk(&path, &child_rel, Some(node), sub_parent.as_ref())?;
                out.entries.push(WalkEntry::Dir(sub));
            } else if ft.is_file() {
                let mut node = fstree::node_from_meta(nb, NodeKind::File, &md);
                let reuse = parent.and_then(|t| t.find(nb)).filter(|p| {
                    p.kind == NodeKind::File
                        && p.size == node.size
                        && p.mtime == node.mtime
                        && p.ctime == node.ctime
                        && p.inode == node.inode
                        && node.mtime.sec < self.parent_cutoff
                        && child_rel != Path::new("global/pg_control")
                });
                if let Some(p) = reuse {
                    self.writer.note_reused(&p.content);
                    node.content = p.content.clone();
                    self.reused_files += 1;
                    self.reused_bytes += node.size;
                    out.entries.push(WalkEntry::Leaf { node, read: None });
                } else {
                    self.to_read.push(ToRead {
                        path: path.clone(),
                        content: Vec::new(),
                        size: 0,
                        gone: false,
                    });
                    out.entries.push(WalkEntry::Leaf {
                        node,
                        read: Some(self.to_read.len() - 1),
                    });
                }
            } else if ft.is_symlink() {
                let mut node = fstree::node_from_meta(nb, NodeKind::Symlink, &md);
                let target = fs::read_link(&path)
                    .map_err(|e| PgError::io(format!("readlink {}", path.display()), e))?;
                node.target = Some(holdfast_repo::tree::NodeName(
                    target.as_os_str().as_bytes().to_vec(),
                ));
                out.entries.push(WalkEntry::Leaf { node, read: None });
            }
            // sockets, fifos, devices: nothing PostgreSQL needs back
        }
        Ok(out)
    }
}

/// Read the files in `to_read` in page-aligned blocks through the writer.
/// Consecutive blocks of a file go to the writer as one frame (about
/// 1 MiB): each block is still its own blob for deduplication, but new
/// blocks are compressed together (16 KiB blocks compressed one by one cost
/// 1.3x the bytes). Several reader threads take whole files from a shared
/// queue, so no single thread stands between the disk and the writer's
/// workers (issue 14); a file's blocks stay in order because one thread
/// reads it. `pg_control` is read last, alone, as pg_basebackup does: it
/// must not be older than the other files.
fn read_files(writer: &BlobWriter, files: &mut [ToRead], block: usize) -> Result<u64> {
    let (control, rest): (Vec<usize>, Vec<usize>) =
        (0..files.len()).partition(|&i| files[i].path.ends_with("global/pg_control"));
    let readers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, MAX_READERS);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let paths: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
    let results: Vec<Result<Vec<(usize, FileRead)>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..readers)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&i) = rest.get(k) else { break };
                        out.push((i, read_one(writer, &paths[i], block, FRAMES_PER_READER)?));
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(PgError::Invalid("a reader thread panicked".into())))
            })
            .collect()
    });
    let mut total = 0u64;
    let mut apply = |i: usize, r: FileRead| {
        total += r.size;
        let f = &mut files[i];
        f.size = r.size;
        f.gone = r.gone;
        f.content = r.content;
    };
    for r in results {
        for (i, read) in r? {
            apply(i, read);
        }
    }
    for i in control {
        let read = read_one(writer, &paths[i], block, FRAMES_PER_READER)?;
        apply(i, read);
    }
    Ok(total)
}

/// Reader threads of a physical backup at most: past this the disk, not
/// the CPU, is the limit on any server we know of.
const MAX_READERS: usize = 16;
/// Frames (about 1 MiB each) one reader keeps in flight: enough to keep
/// the writer's workers busy; memory is readers × this × 1 MiB at most.
const FRAMES_PER_READER: usize = 8;

/// What reading one file gave.
struct FileRead {
    content: Vec<Id>,
    size: u64,
    /// The file disappeared before it was opened (dropped relation).
    gone: bool,
}

/// Read one file in blocks and hand it to the writer a frame at a time.
fn read_one(writer: &BlobWriter, path: &Path, block: usize, in_flight: usize) -> Result<FileRead> {
    let per_frame = (FRAME_TARGET / block).max(1);
    let mut out = FileRead {
        content: Vec::new(),
        size: 0,
        gone: false,
    };
    let mut f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            out.gone = true;
            return Ok(out);
        }
        Err(e) => return Err(PgError::io(format!("opening {}", path.display()), e)),
    };
    let mut pending: std::collections::VecDeque<PendingFrame> = Default::default();
    let mut eof = false;
    while !eof {
        let mut blocks = Vec::with_capacity(per_frame);
        while blocks.len() < per_frame {
            let mut buf = vec![0u8; block];
            let n = read_full(&mut f, &mut buf)
                .map_err(|e| PgError::io(format!("reading {}", path.display()), e))?;
            if n > 0 {
                buf.truncate(n);
                out.size += n as u64;
                blocks.push(buf);
            }
            if n < block {
                eof = true;
                break;
            }
        }
        if blocks.is_empty() {
            break;
        }
        pending.push_back(writer.submit_frame(BlobType::Data, blocks)?);
        while pending.len() > in_flight {
            if let Some(p) = pending.pop_front() {
                out.content.extend(p.wait()?);
            }
        }
    }
    for p in pending {
        out.content.extend(p.wait()?);
    }
    Ok(out)
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Store a walked directory bottom-up; returns its tree id.
fn store(writer: &BlobWriter, dir: WalkDir, files: &[ToRead], extra: Vec<Node>) -> Result<Id> {
    let mut tree = Tree::default();
    for e in dir.entries {
        match e {
            WalkEntry::Dir(sub) => {
                let mut node = sub
                    .node
                    .clone()
                    .ok_or_else(|| PgError::Invalid("directory without a node".into()))?;
                let extra = Vec::new();
                node.subtree = Some(store(writer, sub, files, extra)?);
                tree.nodes.push(node);
            }
            WalkEntry::Leaf { mut node, read } => {
                if let Some(i) = read {
                    if files[i].gone {
                        continue;
                    }
                    node.content = files[i].content.clone();
                    node.size = files[i].size;
                }
                tree.nodes.push(node);
            }
        }
    }
    for n in extra {
        tree.nodes.retain(|x| x.name != n.name);
        tree.nodes.push(n);
    }
    fstree::save_tree(writer, tree)
}

fn q1<T>(rt: &tokio::runtime::Handle, c: &Client, sql: &str, what: &str) -> Result<T>
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    let row = rt
        .block_on(c.query_one(sql, &[]))
        .map_err(|e| PgError::query(what, e))?;
    row.try_get(0).map_err(|e| PgError::query(what, e))
}

/// Take a base backup of the cluster `dsn` points at.
pub fn backup_physical(
    repo: &Repository,
    rt: &tokio::runtime::Handle,
    dsn: &Dsn,
    opts: &PhysicalBackupOptions,
) -> Result<BackupOutcome> {
    let started = Instant::now();
    let time = Utc::now();
    if opts.block_size < 8192 || !opts.block_size.is_multiple_of(8192) {
        return Err(PgError::Invalid(format!(
            "block size {} is not a multiple of 8 KiB",
            opts.block_size
        )));
    }
    // Held until the snapshot is written (see `holdfast_repo::lease`).
    let _lease = repo.writer_lease("backup-postgres-physical")?;
    let rt = rt.clone();
    let c = dsn.connect(&rt)?;
    let version_num: i32 = q1(
        &rt,
        &c,
        "SELECT current_setting('server_version_num')::int",
        "server version",
    )?;
    let server_version: String = q1(&rt, &c, "SHOW server_version", "server version")?;
    let sysid: i64 = q1(
        &rt,
        &c,
        "SELECT system_identifier FROM pg_control_system()",
        "system identifier (needs PostgreSQL 9.6+)",
    )?;
    let sysid = sysid as u64;
    let seg_size: i64 = q1(
        &rt,
        &c,
        "SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'",
        "WAL segment size",
    )?;
    let seg_size = seg_size as u64;
    let archive_mode: String = q1(&rt, &c, "SHOW archive_mode", "archive_mode")?;
    let in_recovery: bool = q1(&rt, &c, "SELECT pg_is_in_recovery()", "recovery state")?;
    if in_recovery {
        return Err(PgError::Invalid(
            "the server is a standby; take physical backups from the primary".into(),
        ));
    }
    let pgdata = match &opts.pgdata {
        Some(p) => p.clone(),
        None => PathBuf::from(q1::<String>(
            &rt,
            &c,
            "SHOW data_directory",
            "data_directory (needs superuser or pg_read_all_settings; or pass --pgdata)",
        )?),
    };
    let local_id = wal::cluster_of_datadir(&pgdata)?;
    if local_id != sysid {
        return Err(PgError::Invalid(format!(
            "{} belongs to cluster {local_id}, but the server at {} is cluster {sysid}; pass the right --pgdata",
            pgdata.display(),
            dsn.display()
        )));
    }
    let source = opts
        .source
        .clone()
        .unwrap_or_else(|| format!("postgres-cluster:{sysid}"));

    // Parent: the newest physical snapshot of this cluster.
    let parent = if opts.incremental {
        repo.snapshots()?.into_iter().rfind(|s| {
            s.snapshot.kind == KIND_PHYSICAL
                && s.snapshot.meta.get("system_identifier")
                    == Some(&serde_json::Value::String(sysid.to_string()))
        })
    } else {
        None
    };
    let parent_tree = match &parent {
        Some(p) => Some(repo.load_tree(&p.snapshot.tree)?),
        None => None,
    };
    // Files modified within a second of the parent's start may have changed
    // again in the same clock tick after it read them: read those again.
    let parent_cutoff = parent
        .as_ref()
        .map(|p| p.snapshot.time.timestamp() - 1)
        .unwrap_or(i64::MIN);

    let tablespaces = list_tablespaces(&rt, &c)?;
    let label = format!("holdfast {}", time.format("%Y-%m-%dT%H:%M:%SZ"));
    let start_lsn: String = {
        let sql = if version_num >= 150000 {
            "SELECT pg_backup_start($1, true)::text"
        } else {
            "SELECT pg_start_backup($1, true, false)::text"
        };
        let row = rt
            .block_on(c.query_one(sql, &[&label]))
            .map_err(|e| PgError::query("starting the backup", e))?;
        row.get(0)
    };

    let writer = BlobWriter::with_options(
        repo,
        WriterOptions {
            level: opts.compression_level,
            zstd_only_frames: !opts.lzma_frames,
            ..WriterOptions::default()
        },
    );
    // From here on, any error must end the backup on the server.
    let copied = (|| -> Result<(WalkDir, Vec<ToRead>, u64, u64, u64)> {
        let mut w = Walker {
            repo,
            writer: &writer,
            to_read: Vec::new(),
            parent_cutoff,
            reused_files: 0,
            reused_bytes: 0,
        };
        let root = w.walk(&pgdata, Path::new(""), None, parent_tree.as_ref())?;
        let mut files = std::mem::take(&mut w.to_read);
        let read = read_files(&writer, &mut files, opts.block_size)?;
        Ok((root, files, read, w.reused_files, w.reused_bytes))
    })();
    let wait = opts.wait_for_archive.unwrap_or(archive_mode != "off");
    let stop_sql = if version_num >= 150000 {
        "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop($1)"
    } else {
        "SELECT lsn::text, labelfile, spcmapfile FROM pg_stop_backup(false, $1)"
    };
    let stopped = rt.block_on(c.query_one(stop_sql, &[&wait]));
    let (root, mut files, bytes_read, reused_files, reused_bytes) = copied?;
    let row = stopped.map_err(|e| PgError::query("stopping the backup", e))?;
    let stop_lsn: String = row.get(0);
    let labelfile: String = row.get(1);
    let spcmap: Option<String> = row.get(2);
    let stop_wal: String = {
        let r = rt
            .block_on(c.query_one("SELECT pg_walfile_name($1::text::pg_lsn)", &[&stop_lsn]))
            .map_err(|e| PgError::query("stop WAL file name", e))?;
        r.get(0)
    };
    let start_wal = labelfile
        .lines()
        .find_map(|l| {
            l.strip_prefix("START WAL LOCATION: ")
                .and_then(|r| r.split("(file ").nth(1))
                .map(|r| r.trim_end_matches(')').to_string())
        })
        .ok_or_else(|| PgError::Invalid(format!("unexpected backup label:\n{labelfile}")))?;
    let stopped_at = Utc::now();

    // The WAL this backup needs to be consistent, into pg_wal/.
    let timeline = start_wal
        .get(..8)
        .and_then(|t| u32::from_str_radix(t, 16).ok())
        .ok_or_else(|| PgError::Invalid(format!("bad WAL file name {start_wal}")))?;
    let first = wal::segment_number(&start_wal, seg_size)
        .ok_or_else(|| PgError::Invalid(format!("bad WAL file name {start_wal}")))?;
    let last = wal::segment_number(&stop_wal, seg_size)
        .ok_or_else(|| PgError::Invalid(format!("bad WAL file name {stop_wal}")))?;
    let mut wal_nodes = Vec::new();
    let mut wal_bytes = 0u64;
    for n in first..=last {
        let name = wal::segment_name(timeline, n, seg_size);
        let path = pgdata.join("pg_wal").join(&name);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fetch_archived(repo, sysid, &name)?
            }
            Err(e) => return Err(PgError::io(format!("reading {}", path.display()), e)),
        };
        let mut data = data;
        if n == last {
            // Past the stop position the segment holds only stale bytes of
            // a recycled file (often most of 16 MiB, poorly compressible).
            // Zero them after the WAL page that holds the stop LSN, as in a
            // freshly created segment: recovery reads zeros as the end of
            // WAL, and an archived copy of the full segment is still used
            // by archive recovery.
            if let Some(keep) = stop_keep_len(&stop_lsn, seg_size) {
                if keep < data.len() {
                    data[keep..].fill(0);
                }
            }
        }
        wal_bytes += data.len() as u64;
        let mut ids = Vec::new();
        for b in data.chunks(1 << 20) {
            ids.push(writer.submit(BlobType::Data, b.to_vec())?.wait()?);
        }
        let mut node = fstree::generated_file(&name, data.len() as u64, ids);
        node.uid = root_owner(&pgdata).0;
        node.gid = root_owner(&pgdata).1;
        wal_nodes.push(node);
    }
    let mut extra = Vec::new();
    let (uid, gid) = root_owner(&pgdata);
    let mut label_node = fstree::generated_file(
        "backup_label",
        labelfile.len() as u64,
        vec![writer.save(BlobType::Data, labelfile.as_bytes())?],
    );
    label_node.uid = uid;
    label_node.gid = gid;
    extra.push(label_node);
    if let Some(map) = spcmap.as_ref().filter(|m| !m.is_empty()) {
        let mut n = fstree::generated_file(
            "tablespace_map",
            map.len() as u64,
            vec![writer.save(BlobType::Data, map.as_bytes())?],
        );
        n.uid = uid;
        n.gid = gid;
        extra.push(n);
    }
    // Put the WAL nodes into the pg_wal directory entry.
    let mut root = root;
    for e in root.entries.iter_mut() {
        if let WalkEntry::Dir(d) = e {
            if d.node.as_ref().map(|n| n.name.0.as_slice()) == Some(b"pg_wal") {
                for n in wal_nodes.drain(..) {
                    d.entries.push(WalkEntry::Leaf {
                        node: n,
                        read: None,
                    });
                }
                let status = pgdata.join("pg_wal").join("archive_status");
                if let Ok(md) = fs::metadata(&status) {
                    d.entries.push(WalkEntry::Dir(WalkDir {
                        node: Some(fstree::node_from_meta(
                            b"archive_status",
                            NodeKind::Dir,
                            &md,
                        )),
                        entries: Vec::new(),
                    }));
                }
            }
        }
    }
    if !wal_nodes.is_empty() {
        return Err(PgError::Invalid(format!(
            "{} has no pg_wal directory",
            pgdata.display()
        )));
    }
    let tree = store(&writer, root, &files, extra)?;
    files.clear();
    let stats = writer.finish(repo)?;

    let mut meta = BTreeMap::new();
    let s = |v: &str| serde_json::Value::String(v.to_string());
    meta.insert("server_version".into(), s(&server_version));
    meta.insert("server".into(), s(&dsn.display()));
    meta.insert("system_identifier".into(), s(&sysid.to_string()));
    meta.insert("data_directory".into(), s(&pgdata.display().to_string()));
    meta.insert("backup_label".into(), s(&labelfile));
    meta.insert("tablespace_map".into(), s(spcmap.as_deref().unwrap_or("")));
    meta.insert(
        "tablespaces".into(),
        serde_json::to_value(&tablespaces)
            .map_err(|e| PgError::Invalid(format!("cannot record the tablespaces: {e}")))?,
    );
    meta.insert("start_lsn".into(), s(&start_lsn));
    meta.insert("stop_lsn".into(), s(&stop_lsn));
    meta.insert("start_wal".into(), s(&start_wal));
    meta.insert("stop_wal".into(), s(&stop_wal));
    meta.insert("timeline".into(), timeline.into());
    meta.insert("wal_segment_size".into(), seg_size.into());
    meta.insert("stopped_at".into(), s(&stopped_at.to_rfc3339()));
    meta.insert("block_size".into(), opts.block_size.into());
    meta.insert("datadir_uid".into(), uid.into());
    meta.insert("datadir_gid".into(), gid.into());
    meta.insert("reused_files".into(), reused_files.into());
    meta.insert("reused_bytes".into(), reused_bytes.into());
    meta.insert("wal_bytes".into(), wal_bytes.into());
    let snapshot = Snapshot {
        time,
        hostname: holdfast_repo::hostname(),
        username: holdfast_repo::username(),
        source,
        kind: KIND_PHYSICAL.into(),
        tags: opts.tags.clone(),
        paths: vec![pgdata.display().to_string()],
        tree,
        parent: parent.as_ref().map(|p| p.id),
        summary: Summary {
            files_changed: 0,
            files_unchanged: reused_files,
            total_bytes: bytes_read + reused_bytes + wal_bytes,
            bytes_read: bytes_read + wal_bytes,
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

/// A tablespace outside the data directory, as a physical snapshot records
/// it (`meta.tablespaces`; older snapshots have only `tablespace_map`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TablespaceInfo {
    /// The OID, which names its link under `pg_tblspc/`.
    pub oid: String,
    /// `None` for snapshots taken before names were recorded.
    pub name: Option<String>,
    /// Its directory on the backed-up host.
    pub location: String,
}

fn list_tablespaces(rt: &tokio::runtime::Handle, c: &Client) -> Result<Vec<TablespaceInfo>> {
    let rows = rt
        .block_on(c.query(
            "SELECT oid::text, spcname::text, pg_tablespace_location(oid) FROM pg_tablespace \
             WHERE pg_tablespace_location(oid) <> '' ORDER BY oid",
            &[],
        ))
        .map_err(|e| PgError::query("listing tablespaces", e))?;
    Ok(rows
        .iter()
        .map(|r| TablespaceInfo {
            oid: r.get(0),
            name: Some(r.get(1)),
            location: r.get(2),
        })
        .collect())
}

/// The tablespaces of a physical snapshot: names from `meta.tablespaces`
/// when recorded, else OIDs and locations from the tablespace map
/// (`OID PATH` lines, with `\` escaping in older PostgreSQL versions).
pub fn snapshot_tablespaces(snap: &Snapshot) -> Vec<TablespaceInfo> {
    if let Some(list) = snap
        .meta
        .get("tablespaces")
        .and_then(|v| serde_json::from_value::<Vec<TablespaceInfo>>(v.clone()).ok())
    {
        return list;
    }
    let map = snap
        .meta
        .get("tablespace_map")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    map.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(oid, path)| TablespaceInfo {
            oid: oid.to_string(),
            name: None,
            location: unescape_map_path(path),
        })
        .collect()
}

fn unescape_map_path(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    let mut chars = p.chars();
    while let Some(ch) = chars.next() {
        if ch == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(ch);
        }
    }
    out
}

/// Where each tablespace of a snapshot goes: `--tablespace-map` entries
/// (by OID or name), else the original location.
fn plan_tablespaces(
    tablespaces: &[TablespaceInfo],
    map: &[(String, PathBuf)],
) -> Result<Vec<(TablespaceInfo, PathBuf)>> {
    for (given, _) in map {
        if !tablespaces
            .iter()
            .any(|t| &t.oid == given || t.name.as_ref() == Some(given))
        {
            return Err(PgError::UnknownTablespace {
                given: given.clone(),
                known: if tablespaces.is_empty() {
                    "none".into()
                } else {
                    tablespaces
                        .iter()
                        .map(describe_tablespace)
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            });
        }
    }
    let mut out = Vec::new();
    for t in tablespaces {
        let target = map
            .iter()
            .rev()
            .find(|(k, _)| k == &t.oid || t.name.as_ref() == Some(k))
            .map(|(_, d)| d.clone())
            .unwrap_or_else(|| PathBuf::from(&t.location));
        if !target.is_absolute() {
            return Err(PgError::Invalid(format!(
                "tablespace {} must be restored to an absolute path, not {}",
                describe_tablespace(t),
                target.display()
            )));
        }
        if !dir_is_empty_or_absent(&target)? {
            return Err(PgError::TablespaceTargetNotEmpty {
                tablespace: describe_tablespace(t),
                key: t.name.clone().unwrap_or_else(|| t.oid.clone()),
                path: target.display().to_string(),
            });
        }
        out.push((t.clone(), target));
    }
    Ok(out)
}

fn describe_tablespace(t: &TablespaceInfo) -> String {
    match &t.name {
        Some(n) => format!("{n} (OID {}, at {})", t.oid, t.location),
        None => format!("OID {} (at {})", t.oid, t.location),
    }
}

fn dir_is_empty_or_absent(p: &Path) -> Result<bool> {
    match fs::read_dir(p) {
        Ok(mut rd) => Ok(rd.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Ok(false),
        Err(e) => Err(PgError::io(format!("reading {}", p.display()), e)),
    }
}

/// Create each tablespace directory and its `pg_tblspc/OID` link, as
/// PostgreSQL keeps them, before the tree is laid out: the restore engine
/// then writes the tablespace's files through the link, straight into its
/// directory (which is often on another file system).
fn link_tablespaces(datadir: &Path, plan: &[(TablespaceInfo, PathBuf)]) -> Result<()> {
    if plan.is_empty() {
        return Ok(());
    }
    let links = datadir.join("pg_tblspc");
    fs::create_dir_all(&links)
        .map_err(|e| PgError::io(format!("creating {}", links.display()), e))?;
    for (t, dir) in plan {
        fs::create_dir_all(dir)
            .map_err(|e| PgError::io(format!("creating {}", dir.display()), e))?;
        let link = links.join(&t.oid);
        std::os::unix::fs::symlink(dir, &link).map_err(|e| {
            PgError::io(
                format!("linking {} to {}", link.display(), dir.display()),
                e,
            )
        })?;
    }
    Ok(())
}

/// WAL page size (XLOG_BLCKSZ; PostgreSQL's default and what Debian builds).
const WAL_PAGE: u64 = 8192;

/// How many bytes of the stop segment to keep: through the end of the WAL
/// page that holds `stop_lsn` (`X/Y` hex). `None` if the LSN cannot be parsed.
fn stop_keep_len(stop_lsn: &str, seg_size: u64) -> Option<usize> {
    let (hi, lo) = stop_lsn.split_once('/')?;
    let lsn = (u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?;
    let offset = lsn % seg_size;
    Some(((offset / WAL_PAGE + 1) * WAL_PAGE).min(seg_size) as usize)
}

fn root_owner(p: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(p)
        .map(|m| (m.uid(), m.gid()))
        .unwrap_or((0, 0))
}

fn fetch_archived(repo: &Repository, cluster: u64, name: &str) -> Result<Vec<u8>> {
    let m = wal::manifest(repo, cluster, name)?.ok_or_else(|| {
        PgError::Invalid(format!(
            "WAL segment {name} needed by this backup is neither in pg_wal nor in the archive; \
             raise wal_keep_size or enable archiving with holdfast wal-push"
        ))
    })?;
    if m.blobs
        .first()
        .is_some_and(|b| repo.index().get(b).is_none())
    {
        repo.load_index()?;
    }
    let mut out = Vec::with_capacity(m.size as usize);
    for b in &m.blobs {
        out.extend_from_slice(&repo.read_blob(b)?);
    }
    Ok(out)
}

/// How far recovery should go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// Stop at the end of the backup: crash recovery from the WAL stored in
    /// the snapshot (needs no archive, writes no recovery.signal).
    Immediate,
    /// Replay every archived segment.
    Latest,
    /// Replay up to this time (inclusive), then promote.
    Time(DateTime<Utc>),
}

#[derive(Debug, Clone)]
pub struct PhysicalRestoreOptions {
    pub target: RecoveryTarget,
    /// Shell command PostgreSQL runs to fetch `%f` into `%p`; required for
    /// `Latest` and `Time`. See [`restore_command`].
    pub restore_command: Option<String>,
    /// Keep the restored cluster's `archive_mode`. Off by default: a
    /// restored copy must not write into the archive of the original.
    pub keep_archiving: bool,
    /// Check the archive for gaps up to the target before restoring.
    pub check_archive: bool,
    pub threads: usize,
    /// Tablespace directories: (OID or name, absolute directory). A
    /// tablespace not named here goes back to its original location.
    pub tablespace_map: Vec<(String, PathBuf)>,
}

impl PhysicalRestoreOptions {
    pub fn new(target: RecoveryTarget) -> Self {
        PhysicalRestoreOptions {
            target,
            restore_command: None,
            keep_archiving: false,
            check_archive: true,
            threads: 4,
            tablespace_map: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PhysicalRestoreReport {
    pub datadir: PathBuf,
    pub files: u64,
    pub bytes: u64,
    pub cluster: u64,
    /// Last archived segment recovery can reach (for `Latest`/`Time`).
    pub wal_through: Option<String>,
    /// Where each tablespace went: (OID, directory).
    pub tablespaces: Vec<(String, PathBuf)>,
    pub duration_secs: f64,
}

/// A `restore_command` running `program wal-fetch %f %p` with the
/// repository location and password file in its environment (the server
/// process has neither on its own).
pub fn restore_command(program: &Path, env: &[(&str, &str)], cluster: Option<u64>) -> String {
    let mut s = String::new();
    for (k, v) in env {
        s.push_str(&format!("{k}={} ", shell_quote(v)));
    }
    s.push_str(&shell_quote(&program.display().to_string()));
    s.push_str(" wal-fetch");
    if let Some(c) = cluster {
        s.push_str(&format!(" --cluster {c}"));
    }
    s.push_str(" \"%f\" \"%p\"");
    s
}

/// Quote for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:=@,+".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The cluster (system identifier) a physical snapshot belongs to.
pub fn snapshot_cluster(snap: &Snapshot) -> Option<u64> {
    snap.meta
        .get("system_identifier")
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse().ok())
}

fn meta_str<'a>(snap: &'a Snapshot, key: &str) -> Result<&'a str> {
    snap.meta
        .get(key)
        .and_then(|v| v.as_str())
        .ok_or_else(|| PgError::Invalid(format!("physical snapshot lacks {key} in its metadata")))
}

/// Check that archived WAL reaches the target without gaps; returns the
/// last segment recovery will use.
fn check_archive(
    repo: &Repository,
    snap: &Snapshot,
    target: RecoveryTarget,
) -> Result<Option<String>> {
    let cluster = snapshot_cluster(snap)
        .ok_or_else(|| PgError::Invalid("snapshot lacks its system identifier".into()))?;
    let seg_size = snap
        .meta
        .get("wal_segment_size")
        .and_then(|v| v.as_u64())
        .unwrap_or(wal::DEFAULT_SEGMENT_SIZE);
    let stop_wal = meta_str(snap, "stop_wal")?;
    let stop = wal::segment_number(stop_wal, seg_size)
        .ok_or_else(|| PgError::Invalid(format!("bad stop WAL name {stop_wal}")))?;
    let segments = wal::archived_segments(repo, cluster, seg_size)?;
    let timeline = snap
        .meta
        .get("timeline")
        .and_then(|v| v.as_u64())
        .unwrap_or(1) as u32;
    let mut n = stop + 1;
    let mut last_present = stop_wal.to_string();
    loop {
        let Some(names) = segments.get(&n) else {
            // Only a hole followed by more WAL is a gap; otherwise the
            // archive simply ends here.
            let later = segments.range(n..).next().is_some();
            if later {
                return Err(PgError::WalGap {
                    missing: wal::segment_name(timeline, n, seg_size),
                    last_present,
                    hint: "later segments exist but recovery cannot skip over a missing one; \
                           restore to a time before the gap or find the segment"
                        .into(),
                });
            }
            if let RecoveryTarget::Time(t) = target {
                // Not reached and nothing more: recovery would stop short.
                let latest = match last_archived_at(repo, cluster, &last_present, stop_wal)? {
                    Some(at) => at,
                    None => backup_end(snap).unwrap_or(snap.time),
                };
                return Err(PgError::TargetAfterArchive {
                    target: t.to_rfc3339(),
                    latest: latest.to_rfc3339(),
                    last_segment: last_present,
                });
            }
            return Ok(Some(last_present));
        };
        let name = names.last().cloned().unwrap_or_default();
        if let RecoveryTarget::Time(t) = target {
            // The first segment completed after the target holds the target.
            if let Some(m) = wal::manifest(repo, cluster, &name)? {
                if m.archived_at >= t {
                    return Ok(Some(name));
                }
            }
        }
        last_present = name;
        n += 1;
    }
}

/// When the archived segment `name` was archived: every commit it holds
/// happened before. `None` for the backup's own stop segment (its end is
/// the backup's end) or a segment without a manifest.
fn last_archived_at(
    repo: &Repository,
    cluster: u64,
    name: &str,
    stop_wal: &str,
) -> Result<Option<DateTime<Utc>>> {
    if name == stop_wal {
        return Ok(None);
    }
    Ok(wal::manifest(repo, cluster, name)?.map(|m| m.archived_at))
}

/// When a base backup ended (`pg_backup_stop` returned): the earliest point
/// recovery from it reaches. `None` for a snapshot without that record.
pub fn backup_end(snap: &Snapshot) -> Option<DateTime<Utc>> {
    snap.meta
        .get("stopped_at")
        .and_then(|v| v.as_str())
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// Refuse a recovery target earlier than the backup's end: PostgreSQL
/// would replay to consistency first and stop only at the first commit
/// after that, returning data committed after the target.
fn check_target_reachable(snap: &SnapshotEntry, target: RecoveryTarget) -> Result<()> {
    let RecoveryTarget::Time(t) = target else {
        return Ok(());
    };
    let end = backup_end(&snap.snapshot).unwrap_or(snap.snapshot.time);
    if end > t {
        return Err(PgError::TargetBeforeBackup {
            snapshot: snap.id.short(),
            target: t.to_rfc3339(),
            backup_end: end.to_rfc3339(),
            hint: "Restore `latest` (which picks the newest backup that ended at or before \
                   the target) or name an earlier snapshot."
                .into(),
        });
    }
    Ok(())
}

/// The base backup to restore for `target` among `candidates` (physical
/// snapshots of one source, oldest first, as `Repository::snapshots`
/// lists them): the newest whose end is at or before a time target (as
/// pgBackRest chooses), else the newest. Only snapshots of the newest
/// candidate's cluster are considered.
pub fn choose_base_backup(
    candidates: &[SnapshotEntry],
    target: RecoveryTarget,
) -> Result<SnapshotEntry> {
    let physical: Vec<&SnapshotEntry> = candidates
        .iter()
        .filter(|s| s.snapshot.kind == KIND_PHYSICAL)
        .collect();
    let newest = physical
        .iter()
        .max_by_key(|s| s.snapshot.time)
        .ok_or_else(|| PgError::Invalid("no physical snapshot matches".into()))?;
    let cluster = snapshot_cluster(&newest.snapshot);
    let same_cluster: Vec<&&SnapshotEntry> = physical
        .iter()
        .filter(|s| snapshot_cluster(&s.snapshot) == cluster)
        .collect();
    let RecoveryTarget::Time(t) = target else {
        return Ok((*newest).clone());
    };
    let end_of = |s: &SnapshotEntry| backup_end(&s.snapshot).unwrap_or(s.snapshot.time);
    if let Some(best) = same_cluster
        .iter()
        .filter(|s| end_of(s) <= t)
        .max_by_key(|s| end_of(s))
    {
        return Ok((**best).clone());
    }
    let earliest = same_cluster
        .iter()
        .min_by_key(|s| end_of(s))
        .ok_or_else(|| PgError::Invalid("no physical snapshot matches".into()))?;
    Err(PgError::TargetBeforeEveryBackup {
        target: t.to_rfc3339(),
        earliest: end_of(earliest).to_rfc3339(),
        snapshot: earliest.id.short(),
    })
}

/// Restore a physical snapshot into `datadir` (new or empty) and configure
/// recovery. Start the server on it to replay to the target.
pub fn restore_physical(
    repo: &Arc<Repository>,
    snap: &SnapshotEntry,
    datadir: &Path,
    opts: &PhysicalRestoreOptions,
) -> Result<PhysicalRestoreReport> {
    let started = Instant::now();
    let s = &snap.snapshot;
    if s.kind != KIND_PHYSICAL {
        return Err(PgError::WrongKind {
            snapshot: snap.id.short(),
            found: s.kind.clone(),
            expected: KIND_PHYSICAL.into(),
        });
    }
    let cluster = snapshot_cluster(s)
        .ok_or_else(|| PgError::Invalid("snapshot lacks its system identifier".into()))?;
    if opts.target != RecoveryTarget::Immediate && opts.restore_command.is_none() {
        return Err(PgError::Invalid(
            "recovery past the end of the backup needs a restore_command (holdfast wal-fetch)"
                .into(),
        ));
    }
    check_target_reachable(snap, opts.target)?;
    let wal_through = if opts.target != RecoveryTarget::Immediate && opts.check_archive {
        check_archive(repo, s, opts.target)?
    } else {
        None
    };
    if !dir_is_empty_or_absent(datadir)? {
        return Err(PgError::DatadirNotEmpty {
            path: datadir.display().to_string(),
        });
    }
    let tablespaces = plan_tablespaces(&snapshot_tablespaces(s), &opts.tablespace_map)?;
    fs::create_dir_all(datadir)
        .map_err(|e| PgError::io(format!("creating {}", datadir.display()), e))?;
    link_tablespaces(datadir, &tablespaces)?;
    let chown = fstree::effective_uid_is_root();
    let uid = s
        .meta
        .get("datadir_uid")
        .and_then(|v| v.as_u64())
        .unwrap_or(0) as u32;
    let gid = s
        .meta
        .get("datadir_gid")
        .and_then(|v| v.as_u64())
        .unwrap_or(0) as u32;
    // The same parallel, verified restore as for document trees: blobs
    // grouped by pack into ranged reads, files created by the workers.
    let restored = holdfast_sources::restore::restore(
        repo,
        snap,
        datadir,
        &holdfast_sources::restore::RestoreOptions {
            threads: opts.threads,
            ..Default::default()
        },
        &holdfast_sources::Progress::default(),
    )?;
    if let Some(first) = restored.failed.first() {
        return Err(PgError::Invalid(format!(
            "{} file(s) of the data directory could not be restored, e.g. {first}; \
             the data directory is incomplete: do not start a server on it",
            restored.failed.len()
        )));
    }
    // The links are in place; a tablespace_map would make PostgreSQL
    // point them back at the original locations.
    let map_file = datadir.join("tablespace_map");
    if !tablespaces.is_empty() || map_file.exists() {
        match fs::remove_file(&map_file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(PgError::io(format!("removing {}", map_file.display()), e)),
        }
    }
    let stats = fstree::LayOutStats {
        files: restored.files + restored.links,
        dirs: restored.dirs,
        bytes: restored.bytes,
    };

    // End of backup: the snapshot holds the WAL up to its stop segment, so
    // plain crash recovery from backup_label reaches consistency from
    // pg_wal alone (as after pg_basebackup), with no archive round trips and
    // no new timeline. Later targets need archive recovery.
    let archive_recovery = opts.target != RecoveryTarget::Immediate;
    let mut conf = format!(
        "\n# Added by holdfast: restore of snapshot {} (backup of {})\n",
        snap.id.short(),
        s.time.to_rfc3339()
    );
    let lit = |v: &str| format!("'{}'", v.replace('\'', "''"));
    if archive_recovery {
        if let Some(cmd) = &opts.restore_command {
            conf.push_str(&format!("restore_command = {}\n", lit(cmd)));
        }
        if let RecoveryTarget::Time(t) = opts.target {
            conf.push_str(&format!(
                "recovery_target_time = {}\n",
                lit(&t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string())
            ));
        }
        conf.push_str("recovery_target_action = 'promote'\n");
    }
    if !opts.keep_archiving {
        conf.push_str("archive_mode = 'off'\n");
    }
    let auto = datadir.join("postgresql.auto.conf");
    {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&auto)
            .map_err(|e| PgError::io(format!("opening {}", auto.display()), e))?;
        f.write_all(conf.as_bytes())
            .map_err(|e| PgError::io(format!("writing {}", auto.display()), e))?;
    }
    let mut written = vec![auto];
    if archive_recovery {
        let signal = datadir.join("recovery.signal");
        fs::write(&signal, b"")
            .map_err(|e| PgError::io(format!("writing {}", signal.display()), e))?;
        written.push(signal);
    }
    use std::os::unix::fs::PermissionsExt;
    for p in &written {
        let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o600));
        if chown {
            std::os::unix::fs::chown(p, Some(uid), Some(gid))
                .map_err(|e| PgError::io(format!("chown {}", p.display()), e))?;
        }
    }
    let owned_dirs =
        std::iter::once(datadir.to_path_buf()).chain(tablespaces.iter().map(|(_, d)| d.clone()));
    for dir in owned_dirs {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| PgError::io(format!("chmod {}", dir.display()), e))?;
        if chown {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|e| PgError::io(format!("chown {}", dir.display()), e))?;
        }
    }
    Ok(PhysicalRestoreReport {
        datadir: datadir.to_path_buf(),
        files: stats.files,
        bytes: stats.bytes,
        cluster,
        wal_through,
        tablespaces: tablespaces.into_iter().map(|(t, d)| (t.oid, d)).collect(),
        duration_secs: started.elapsed().as_secs_f64(),
    })
}

/// The latest point a cluster can be recovered to from this repository.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClusterRecoveryPoint {
    /// System identifier.
    pub cluster: String,
    pub source: Option<String>,
    /// Newest base backup of the cluster.
    pub newest_backup: Option<String>,
    pub newest_backup_time: Option<DateTime<Utc>>,
    /// Last segment of the unbroken run of archived WAL after that backup.
    pub last_wal_segment: Option<String>,
    /// Upper bound of the recoverable point: when that segment was archived
    /// (every commit in it happened before). Without archived WAL after the
    /// backup, the backup's own end.
    pub latest_recoverable_time: Option<DateTime<Utc>>,
    /// First missing segment, when later ones exist (WAL past it is unusable).
    pub wal_gap_at: Option<String>,
    pub archived_files: usize,
}

/// Recovery points of every cluster with physical snapshots or archived WAL.
pub fn recovery_points(
    repo: &Repository,
    snapshots: &[SnapshotEntry],
) -> Result<Vec<ClusterRecoveryPoint>> {
    let mut clusters: BTreeMap<u64, Option<&SnapshotEntry>> = BTreeMap::new();
    for c in wal::archived_clusters(repo)? {
        clusters.insert(c, None);
    }
    for s in snapshots
        .iter()
        .filter(|s| s.snapshot.kind == KIND_PHYSICAL)
    {
        if let Some(c) = snapshot_cluster(&s.snapshot) {
            let e = clusters.entry(c).or_insert(None);
            if e.is_none_or(|prev| prev.snapshot.time <= s.snapshot.time) {
                *e = Some(s);
            }
        }
    }
    let mut out = Vec::new();
    for (cluster, snap) in clusters {
        let seg_size = snap
            .and_then(|s| s.snapshot.meta.get("wal_segment_size"))
            .and_then(|v| v.as_u64())
            .unwrap_or(wal::DEFAULT_SEGMENT_SIZE);
        let segments = wal::archived_segments(repo, cluster, seg_size)?;
        let archived_files = segments.values().map(Vec::len).sum();
        let mut p = ClusterRecoveryPoint {
            cluster: cluster.to_string(),
            source: snap.map(|s| s.snapshot.source.clone()),
            newest_backup: snap.map(|s| s.id.to_hex()),
            newest_backup_time: snap.map(|s| s.snapshot.time),
            last_wal_segment: None,
            latest_recoverable_time: None,
            wal_gap_at: None,
            archived_files,
        };
        if let Some(s) = snap {
            let stop = s
                .snapshot
                .meta
                .get("stop_wal")
                .and_then(|v| v.as_str())
                .and_then(|n| wal::segment_number(n, seg_size));
            p.latest_recoverable_time = s
                .snapshot
                .meta
                .get("stopped_at")
                .and_then(|v| v.as_str())
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc));
            if let Some(stop) = stop {
                let chain = wal::chain_from(&segments, stop + 1);
                if let Some((_, name)) = &chain.last {
                    p.last_wal_segment = Some(name.clone());
                    if let Some(m) = wal::manifest(repo, cluster, name)? {
                        p.latest_recoverable_time = Some(m.archived_at);
                    }
                }
                let tl = s
                    .snapshot
                    .meta
                    .get("timeline")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(1);
                p.wal_gap_at = chain.gap.map(|n| wal::segment_name(tl as u32, n, seg_size));
            }
        }
        out.push(p);
    }
    Ok(out)
}

/// Read a whole file of a snapshot tree at `path` (components separated by '/').
pub fn read_snapshot_file(repo: &Arc<Repository>, snap: &Snapshot, path: &str) -> Result<Vec<u8>> {
    let mut tree = repo.load_tree(&snap.tree)?;
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        let node = tree
            .find(part.as_bytes())
            .cloned()
            .ok_or_else(|| PgError::Invalid(format!("{path} is not in the snapshot")))?;
        if i + 1 == parts.len() {
            let mut out = Vec::new();
            ContentReader::new(repo.clone(), node.content, 4)
                .read_to_end(&mut out)
                .map_err(|e| PgError::io(format!("reading {path} from the snapshot"), e))?;
            return Ok(out);
        }
        let sub = node
            .subtree
            .ok_or_else(|| PgError::Invalid(format!("{part} is not a directory")))?;
        tree = repo.load_tree(&sub)?;
    }
    Err(PgError::Invalid(format!("{path} is not in the snapshot")))
}

#[cfg(test)]
mod stop_tests {
    use super::stop_keep_len;

    #[test]
    fn keeps_through_the_stop_page() {
        let seg = 16 * 1024 * 1024;
        assert_eq!(stop_keep_len("0/55000100", seg), Some(8192));
        assert_eq!(stop_keep_len("0/55002000", seg), Some(16384));
        assert_eq!(stop_keep_len("1/00FFFFFF", seg), Some(seg as usize));
        assert_eq!(stop_keep_len("junk", seg), None);
    }
}
