//! The WAL archive: `wal-push` for `archive_command`, `wal-fetch` for
//! `restore_command`, and the recoverable range (RPO) it allows.
//!
//! Each archived file becomes data blobs (fixed 1 MiB blocks: WAL does not
//! deduplicate, and a zero-filled tail after a segment switch is one repeated
//! block) plus a manifest object `wal/<system identifier>-<file name>`:
//! sealed JSON listing the blobs, the size, the BLAKE3 hash of the content
//! and the archive time. Names carry the cluster's system identifier because
//! every cluster numbers its segments from the same start: two clusters
//! sharing a repository must not collide.
//!
//! Write-once objects give the idempotency `archive_command` needs: before
//! storing anything we look for the manifest; the same content again is a
//! success (PostgreSQL retries after a crash between archiving and
//! recording it), different content is a loud failure, never an overwrite.
//!
//! `wal-push` does not load the repository index: WAL almost never
//! deduplicates, and an archive command must stay fast however large the
//! repository grows. The price is that an identical block archived twice is
//! stored twice (GC's repack removes the copy). `wal-fetch` loads the index
//! lazily, only when the manifest's first blob is not already known.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use holdfast_repo::pack::{BlobType, PackEntry, PackInfo};
use holdfast_repo::reader::ContentReader;
use holdfast_repo::writer::BlobWriter;
use holdfast_repo::{object, Id, Repository};
use holdfast_storage::{ObjectKind, StorageError};
use serde::{Deserialize, Serialize};

use crate::error::{PgError, Result};

/// Blob size for WAL files.
const WAL_BLOCK: usize = 1024 * 1024;
/// PostgreSQL's default segment size; physical snapshots record the real one.
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 * 1024 * 1024;

/// The manifest of one archived WAL file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WalManifest {
    pub version: u32,
    /// System identifier of the cluster, in decimal.
    pub cluster: String,
    pub name: String,
    pub size: u64,
    /// BLAKE3 of the content, hex.
    pub blake3: String,
    pub blobs: Vec<Id>,
    pub archived_at: DateTime<Utc>,
    /// Where each blob was stored when it was archived, so `wal-fetch` reads
    /// it without loading the repository index. Absent in manifests written
    /// before this field existed; may be stale after a repack. Either way
    /// `wal-fetch` falls back to the index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stored_at: Vec<StoredAt>,
}

/// Where one blob of a WAL file was stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAt {
    pub pack: Id,
    /// The pack's salt, hex.
    pub salt: String,
    pub offset: u32,
    pub length: u32,
    pub raw_len: u32,
    /// Where the blob starts in its decoded frame (format 2); absent and 0
    /// for WAL, which is never framed, kept so a location is complete.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub inner: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// Repository object name of a WAL file of a cluster.
pub fn object_name(cluster: u64, name: &str) -> String {
    format!("{cluster}-{name}")
}

fn split_object_name(obj: &str) -> Option<(u64, &str)> {
    let (c, n) = obj.split_once('-')?;
    Some((c.parse().ok()?, n))
}

/// The system identifier recorded in a data directory's `global/pg_control`.
pub fn cluster_of_datadir(datadir: &Path) -> Result<u64> {
    let path = datadir.join("global").join("pg_control");
    let mut f = std::fs::File::open(&path).map_err(|e| {
        PgError::io(
            format!(
                "reading {} to find the cluster's system identifier (run from the data directory or pass the cluster explicitly)",
                path.display()
            ),
            e,
        )
    })?;
    let mut b = [0u8; 8];
    f.read_exact(&mut b)
        .map_err(|e| PgError::io(format!("reading {}", path.display()), e))?;
    // pg_control is written in the server's native byte order.
    Ok(u64::from_ne_bytes(b))
}

/// The system identifier in a WAL segment's first (long) page header.
pub fn cluster_of_segment(data: &[u8]) -> Option<u64> {
    const XLP_LONG_HEADER: u16 = 0x0002;
    if data.len() < 40 {
        return None;
    }
    let info = u16::from_ne_bytes([data[2], data[3]]);
    if info & XLP_LONG_HEADER == 0 {
        return None;
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&data[24..32]);
    let id = u64::from_ne_bytes(b);
    (id != 0).then_some(id)
}

/// True for a WAL segment file name (timeline, log, segment: 24 hex digits).
pub fn is_segment_name(name: &str) -> bool {
    name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Result of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    Stored,
    /// The archive already held this file with identical content.
    AlreadyArchived,
}

fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(PgError::Invalid(format!(
            "{name:?} is not a WAL file name (like 000000010000000000000001 or 00000002.history)"
        )))
    }
}

fn read_manifest(repo: &Repository, obj: &str) -> Result<Option<WalManifest>> {
    match repo.block_on(repo.backend().get(ObjectKind::Wal, obj, None)) {
        Ok(bytes) => Ok(Some(object::open_json(
            repo.key(),
            &bytes,
            &format!("WAL manifest {obj}"),
        )?)),
        Err(StorageError::NotFound { .. }) => Ok(None),
        Err(e) => Err(PgError::Repo(e.into())),
    }
}

/// Archive one WAL file (the `%p` of `archive_command`). `cluster` defaults
/// to the identifier in the segment's header, else the one in
/// `./global/pg_control` (PostgreSQL runs archive_command in the data directory).
pub fn wal_push(repo: &Repository, path: &Path, cluster: Option<u64>) -> Result<PushOutcome> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| PgError::Invalid(format!("{} has no file name", path.display())))?
        .to_string();
    validate_name(&name)?;
    let data =
        std::fs::read(path).map_err(|e| PgError::io(format!("reading {}", path.display()), e))?;
    let cluster = match cluster {
        Some(c) => c,
        None => match is_segment_name(&name)
            .then(|| cluster_of_segment(&data))
            .flatten()
        {
            Some(c) => c,
            None => cluster_of_datadir(Path::new("."))?,
        },
    };
    let obj = object_name(cluster, &name);
    let hash = blake3::hash(&data).to_hex().to_string();
    if let Some(existing) = read_manifest(repo, &obj)? {
        return same_or_conflict(&existing, &name, &hash, data.len() as u64);
    }

    let writer = BlobWriter::with_threads(repo, 2);
    let mut pending = Vec::new();
    for block in data.chunks(WAL_BLOCK) {
        pending.push(writer.submit(BlobType::Data, block.to_vec())?);
    }
    let blobs = pending
        .into_iter()
        .map(|p| p.wait())
        .collect::<holdfast_repo::Result<Vec<_>>>()?;
    writer.finish(repo)?;
    let stored_at = locations_of(repo, &blobs);
    let manifest = WalManifest {
        version: 1,
        cluster: cluster.to_string(),
        name: name.clone(),
        size: data.len() as u64,
        blake3: hash.clone(),
        blobs,
        archived_at: Utc::now(),
        stored_at,
    };
    let sealed = object::seal_json(repo.key(), &manifest)?;
    match repo.block_on(repo.backend().put(
        ObjectKind::Wal,
        &obj,
        Bytes::from(sealed),
        repo.put_options(),
    )) {
        Ok(()) => Ok(PushOutcome::Stored),
        // Someone archived it concurrently: judge by content, like above.
        Err(StorageError::AlreadyExists { .. }) => match read_manifest(repo, &obj)? {
            Some(existing) => same_or_conflict(&existing, &name, &hash, data.len() as u64),
            None => Err(PgError::Invalid(format!(
                "WAL manifest {obj} both exists and does not; retry"
            ))),
        },
        Err(e) => Err(PgError::Repo(e.into())),
    }
}

/// Where the writer just stored `blobs` (it extends the in-memory index,
/// which `wal-push` never loads, so every blob is one written now). Empty if
/// any is unknown: the manifest then relies on the index alone.
fn locations_of(repo: &Repository, blobs: &[Id]) -> Vec<StoredAt> {
    let index = repo.index();
    blobs
        .iter()
        .map(|id| {
            index.get(id).map(|l| StoredAt {
                pack: l.pack,
                salt: hex::encode(l.salt),
                offset: l.offset,
                length: l.length,
                raw_len: l.raw_len,
                inner: l.inner,
            })
        })
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default()
}

/// The manifest's locations as packs the in-memory index can take.
fn known_packs(m: &WalManifest) -> Option<Vec<PackInfo>> {
    if m.stored_at.len() != m.blobs.len() || m.blobs.is_empty() {
        return None;
    }
    let mut packs: Vec<PackInfo> = Vec::new();
    for (id, at) in m.blobs.iter().zip(&m.stored_at) {
        let salt: [u8; 32] = hex::decode(&at.salt).ok()?.try_into().ok()?;
        let entry = PackEntry {
            blob_type: BlobType::Data,
            id: *id,
            offset: at.offset,
            length: at.length,
            raw_len: at.raw_len,
            inner: at.inner,
        };
        match packs.iter_mut().find(|p| p.id == at.pack) {
            Some(p) => p.entries.push(entry),
            None => packs.push(PackInfo {
                id: at.pack,
                salt,
                entries: vec![entry],
            }),
        }
    }
    Some(packs)
}

fn same_or_conflict(
    existing: &WalManifest,
    name: &str,
    hash: &str,
    size: u64,
) -> Result<PushOutcome> {
    if existing.blake3 == hash && existing.size == size {
        Ok(PushOutcome::AlreadyArchived)
    } else {
        Err(PgError::WalConflict {
            name: name.to_string(),
            existing_size: existing.size,
            new_size: size,
        })
    }
}

/// Restore one archived WAL file to `dest` (the `%f` and `%p` of
/// `restore_command`). A file that is not archived is
/// [`PgError::WalNotFound`]: the caller must exit non-zero, which is how
/// recovery learns it reached the end of the archive.
pub fn wal_fetch(
    repo: &Arc<Repository>,
    name: &str,
    dest: &Path,
    cluster: Option<u64>,
) -> Result<u64> {
    validate_name(name)?;
    let cluster = match cluster {
        Some(c) => c,
        None => cluster_of_datadir(Path::new("."))?,
    };
    let m = fetch_manifest(repo, cluster, name)?;
    fetch_to(repo, &m, dest)
}

fn fetch_manifest(repo: &Repository, cluster: u64, name: &str) -> Result<WalManifest> {
    let obj = object_name(cluster, name);
    read_manifest(repo, &obj)?.ok_or_else(|| PgError::WalNotFound {
        name: name.to_string(),
        cluster: format!(" of cluster {cluster}"),
    })
}

/// Write the file `m` describes to `dest` (atomically: a temporary file in
/// the same directory, renamed). Uses the manifest's own blob locations
/// when it has them; if those fail (a repack moved the blobs), loads the
/// index and reads again.
fn fetch_to(repo: &Arc<Repository>, m: &WalManifest, dest: &Path) -> Result<u64> {
    if let Some(first) = m.blobs.first() {
        if repo.index().get(first).is_none() {
            match known_packs(m) {
                Some(packs) => repo.add_known_packs(&packs),
                None => repo.load_index()?,
            }
        }
    }
    match write_verified(repo, m, dest) {
        Err(PgError::Repo(_)) | Err(PgError::Invalid(_)) if !m.stored_at.is_empty() => {
            repo.load_index()?;
            write_verified(repo, m, dest)
        }
        r => r,
    }
}

fn write_verified(repo: &Arc<Repository>, m: &WalManifest, dest: &Path) -> Result<u64> {
    let name = &m.name;
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".holdfast-wal-")
        .tempfile_in(dir)
        .map_err(|e| PgError::io(format!("creating a temporary file in {}", dir.display()), e))?;
    let mut reader = ContentReader::new(repo.clone(), m.blobs.clone(), 4);
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(|e| {
            PgError::Repo(holdfast_repo::RepoError::Invalid(format!(
                "reading archived WAL file {name}: {e}"
            )))
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n])
            .map_err(|e| PgError::io(format!("writing {}", dest.display()), e))?;
        total += n as u64;
    }
    if total != m.size || hasher.finalize().to_hex().as_str() != m.blake3 {
        return Err(PgError::Invalid(format!(
            "archived WAL file {name} does not match its manifest (size or hash); the archive is damaged, run `holdfast check`"
        )));
    }
    // No fsync: PostgreSQL fsyncs a restored segment itself when it keeps
    // it (durable_rename), and one lost in a crash is fetched again.
    tmp.persist(dest)
        .map_err(|e| PgError::io(format!("moving WAL into {}", dest.display()), e.error))?;
    Ok(total)
}

/// Name of the spool directory next to `dest` (`pg_wal/holdfast-prefetch`
/// for PostgreSQL's `%p`, which is in `pg_wal`): same file system, so a
/// spooled segment is renamed into place, and inside `pg_wal`, whose
/// content base backups leave out.
pub fn default_spool(dest: &Path) -> std::path::PathBuf {
    dest.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("holdfast-prefetch")
}

/// Serve `name` from the spool if a prefetch put it there: verified against
/// its manifest (size and BLAKE3) and renamed to `dest`. Returns false if it
/// is not spooled (or does not verify: it is then removed and fetched
/// normally).
pub fn take_from_spool(
    repo: &Repository,
    cluster: u64,
    name: &str,
    spool: &Path,
    dest: &Path,
) -> Result<bool> {
    validate_name(name)?;
    let path = spool.join(name);
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(PgError::io(format!("reading {}", path.display()), e)),
    };
    let m = fetch_manifest(repo, cluster, name)?;
    if data.len() as u64 != m.size || blake3::hash(&data).to_hex().as_str() != m.blake3 {
        let _ = std::fs::remove_file(&path);
        return Ok(false);
    }
    std::fs::rename(&path, dest).map_err(|e| {
        PgError::io(
            format!("moving {} to {}", path.display(), dest.display()),
            e,
        )
    })?;
    Ok(true)
}

/// Fetch up to `count` segments following `after` (same timeline) into
/// `spool`, stopping at the first one not archived; segments up to `after`
/// left in the spool are removed. Returns how many were fetched. Callers run
/// this in the background (one at a time: see [`SpoolLock`]).
pub fn prefetch(
    repo: &Arc<Repository>,
    cluster: u64,
    after: &str,
    count: usize,
    spool: &Path,
) -> Result<usize> {
    if !is_segment_name(after) {
        return Ok(0);
    }
    let size = DEFAULT_SEGMENT_SIZE;
    let timeline = u32::from_str_radix(&after[..8], 16)
        .map_err(|_| PgError::Invalid(format!("{after:?} is not a WAL segment name")))?;
    let first = segment_number(after, size).unwrap_or(0);
    remove_consumed(spool, first);
    let mut fetched = 0;
    for n in first + 1..=first + count as u64 {
        let name = segment_name(timeline, n, size);
        let path = spool.join(&name);
        if path.exists() {
            continue;
        }
        let m = match fetch_manifest(repo, cluster, &name) {
            Ok(m) => m,
            Err(PgError::WalNotFound { .. }) => break,
            Err(e) => return Err(e),
        };
        fetch_to(repo, &m, &path)?;
        fetched += 1;
    }
    Ok(fetched)
}

/// Remove spooled segments at or before number `upto` (already replayed).
fn remove_consumed(spool: &Path, upto: u64) {
    let Ok(rd) = std::fs::read_dir(spool) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if segment_number(&name, DEFAULT_SEGMENT_SIZE).is_some_and(|n| n <= upto) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// An exclusive, non-blocking lock on a spool directory: at most one
/// prefetcher fills it. Released when dropped (or when the process dies).
pub struct SpoolLock {
    _file: std::fs::File,
}

impl SpoolLock {
    /// The lock, or `None` if another prefetcher holds it.
    pub fn try_acquire(spool: &Path) -> Result<Option<SpoolLock>> {
        use std::os::unix::io::AsRawFd;
        std::fs::create_dir_all(spool)
            .map_err(|e| PgError::io(format!("creating {}", spool.display()), e))?;
        let path = spool.join(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| PgError::io(format!("opening {}", path.display()), e))?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        Ok((r == 0).then_some(SpoolLock { _file: file }))
    }
}

/// Linear number of a segment, ignoring its timeline.
pub fn segment_number(name: &str, segment_size: u64) -> Option<u64> {
    if !is_segment_name(name) {
        return None;
    }
    let log = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..24], 16).ok()?;
    let per_log = 0x1_0000_0000u64 / segment_size.max(1);
    Some(log * per_log + seg)
}

/// Segment file name of a linear number on a timeline.
pub fn segment_name(timeline: u32, number: u64, segment_size: u64) -> String {
    let per_log = 0x1_0000_0000u64 / segment_size.max(1);
    format!(
        "{timeline:08X}{:08X}{:08X}",
        number / per_log,
        number % per_log
    )
}

/// Archived segments of one cluster: linear number -> names (one per timeline).
pub(crate) fn archived_segments(
    repo: &Repository,
    cluster: u64,
    segment_size: u64,
) -> Result<BTreeMap<u64, Vec<String>>> {
    let all = repo
        .block_on(repo.backend().list(ObjectKind::Wal))
        .map_err(holdfast_repo::RepoError::from)?;
    let mut out: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for m in all {
        if let Some((c, name)) = split_object_name(&m.name) {
            if c == cluster {
                if let Some(n) = segment_number(name, segment_size) {
                    out.entry(n).or_default().push(name.to_string());
                }
            }
        }
    }
    for v in out.values_mut() {
        v.sort();
    }
    Ok(out)
}

/// Clusters that have WAL in the archive.
pub fn archived_clusters(repo: &Repository) -> Result<BTreeSet<u64>> {
    let all = repo
        .block_on(repo.backend().list(ObjectKind::Wal))
        .map_err(holdfast_repo::RepoError::from)?;
    Ok(all
        .iter()
        .filter_map(|m| split_object_name(&m.name).map(|(c, _)| c))
        .collect())
}

/// Where an unbroken chain of archived segments starting after `from` ends.
pub(crate) struct Chain {
    /// Last segment present (number and newest-timeline name).
    pub last: Option<(u64, String)>,
    /// First missing number, if any segment after it is archived.
    pub gap: Option<u64>,
}

pub(crate) fn chain_from(segments: &BTreeMap<u64, Vec<String>>, first: u64) -> Chain {
    let mut n = first;
    let mut last = None;
    while let Some(names) = segments.get(&n) {
        last = names.last().map(|s| (n, s.clone()));
        n += 1;
    }
    let gap = segments.range(n..).next().map(|_| n);
    Chain { last, gap }
}

/// Read one manifest by cluster and file name.
pub fn manifest(repo: &Repository, cluster: u64, name: &str) -> Result<Option<WalManifest>> {
    read_manifest(repo, &object_name(cluster, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_numbers_round_trip() {
        let s = DEFAULT_SEGMENT_SIZE;
        assert_eq!(segment_number("000000010000000000000001", s), Some(1));
        assert_eq!(
            segment_number("0000000100000001000000FF", s),
            Some(256 + 255)
        );
        assert_eq!(segment_name(1, 256 + 255, s), "0000000100000001000000FF");
        assert_eq!(segment_number("00000002.history", s), None);
        let mut m = BTreeMap::new();
        for n in [3u64, 4, 5, 7] {
            m.insert(n, vec![segment_name(1, n, s)]);
        }
        let c = chain_from(&m, 3);
        assert_eq!(c.last.map(|x| x.0), Some(5));
        assert_eq!(c.gap, Some(6));
        let c = chain_from(&m, 7);
        assert_eq!(c.gap, None);
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("000000010000000000000001").is_ok());
        assert!(validate_name("00000002.history").is_ok());
        assert!(validate_name("000000010000000000000002.00000028.backup").is_ok());
        assert!(validate_name("../etc/passwd").is_err());
        assert!(validate_name("").is_err());
    }
}
