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
//!
//! Prefetching (`wal-fetch --prefetch N`) fills a spool directory in the
//! background; a segment found there is handed to PostgreSQL by a rename,
//! trusted on the strength of a stamp the prefetcher wrote after verifying
//! it (see the comment above [`SpoolStamp`] for what a hit checks and why).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use holdfast_repo::pack::{BlobType, PackEntry, PackInfo};
use holdfast_repo::reader::ContentReader;
pub use holdfast_repo::walmanifest::{StoredAt, WalManifest};
use holdfast_repo::writer::BlobWriter;
use holdfast_repo::{Id, Repository};
use holdfast_storage::ObjectKind;
use serde::{Deserialize, Serialize};

use crate::error::{PgError, Result};

/// Blob size for WAL files.
const WAL_BLOCK: usize = 1024 * 1024;
/// PostgreSQL's default segment size; physical snapshots record the real one.
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 * 1024 * 1024;

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
    Ok(repo.wal_manifest(obj)?)
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

    // Held until the manifest is written (see `holdfast_repo::lease`).
    let lease = repo.writer_lease("wal-push")?;
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
    // A lapsed lease means a GC may have removed data the blobs reuse.
    lease.confirm()?;
    if repo.put_wal_manifest(&manifest)? {
        return Ok(PushOutcome::Stored);
    }
    // Someone archived it concurrently: judge by content, like above.
    match read_manifest(repo, &obj)? {
        Some(existing) => same_or_conflict(&existing, &name, &hash, data.len() as u64),
        None => Err(PgError::Invalid(format!(
            "WAL manifest {obj} both exists and does not; retry"
        ))),
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
/// the same directory, renamed).
fn fetch_to(repo: &Arc<Repository>, m: &WalManifest, dest: &Path) -> Result<u64> {
    let dir = parent_dir(dest);
    let tmp = fetch_temp(repo, m, dir)?;
    // No fsync: PostgreSQL fsyncs a restored segment itself when it keeps
    // it (durable_rename), and one lost in a crash is fetched again.
    tmp.persist(dest)
        .map_err(|e| PgError::io(format!("moving WAL into {}", dest.display()), e.error))?;
    Ok(m.size)
}

fn parent_dir(p: &Path) -> &Path {
    p.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The file `m` describes, verified (size and BLAKE3), in a temporary file
/// in `dir`. Uses the manifest's own blob locations when it has them; if
/// those fail (a repack moved the blobs), loads the index and reads again.
fn fetch_temp(
    repo: &Arc<Repository>,
    m: &WalManifest,
    dir: &Path,
) -> Result<tempfile::NamedTempFile> {
    if let Some(first) = m.blobs.first() {
        if repo.index().get(first).is_none() {
            match known_packs(m) {
                Some(packs) => repo.add_known_packs(&packs),
                None => repo.load_index()?,
            }
        }
    }
    match write_verified(repo, m, dir) {
        Err(PgError::Repo(_)) | Err(PgError::Invalid(_)) if !m.stored_at.is_empty() => {
            repo.load_index()?;
            write_verified(repo, m, dir)
        }
        r => r,
    }
}

fn write_verified(
    repo: &Arc<Repository>,
    m: &WalManifest,
    dir: &Path,
) -> Result<tempfile::NamedTempFile> {
    let name = &m.name;
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .map_err(|e| PgError::io(format!("creating a temporary file in {}", dir.display()), e))?;
    let mut reader = ContentReader::new(repo.clone(), m.blobs.clone(), 4);
    let (total, hash) = copy_hashing(&mut reader, &mut tmp, 1 << 20, &|e| {
        PgError::io_or_repo(format!("reading archived WAL file {name}"), e)
    })?;
    if total != m.size || hash != m.blake3 {
        return Err(PgError::Invalid(format!(
            "archived WAL file {name} does not match its manifest (size or hash); the archive is damaged, run `holdfast check`"
        )));
    }
    Ok(tmp)
}

/// Prefix of temporary files (in the destination directory and the spool):
/// a file under it is never complete or verified.
const TEMP_PREFIX: &str = ".holdfast-wal-";

/// Name of the spool directory next to `dest` (`pg_wal/holdfast-prefetch`
/// for PostgreSQL's `%p`, which is in `pg_wal`): same file system, so a
/// spooled segment is renamed into place, and inside `pg_wal`, whose
/// content base backups leave out.
pub fn default_spool(dest: &Path) -> std::path::PathBuf {
    parent_dir(dest).join("holdfast-prefetch")
}

// The spool.
//
// A prefetcher (one at a time: [`SpoolLock`]) fetches each segment into a
// temporary file in the spool (`.holdfast-wal-*`), verifies it against the
// repository's manifest as it writes it (size and BLAKE3), sets its
// modification time to a mark no later write can produce, fsyncs it, writes
// a stamp `NAME.stamp` saying what it was verified against, and only then
// renames it to its final name `NAME`. So a file under a final name is
// complete and verified, whenever the prefetcher is killed or the machine
// crashes (the fsync comes before the rename).
//
// A hit (`wal-fetch` finding NAME) must not read 16 MiB again nor open the
// repository (a password costs argon2), so it trusts the stamp, after
// checking everything that could make it a wrong answer:
// - the stamp is for this repository (the fingerprint of its config object,
//   which is written once at init and readable without a key), this cluster
//   and exactly this file name (timeline included): a spool left by another
//   repository, cluster, timeline or restore is never served;
// - the spooled file is still the one stamped: a regular file (not a
//   symlink) with the stamped device, inode, size and modification mark.
//   Any write, truncation or replacement after verification changes at
//   least one of them (a write sets the time to now, never the mark).
// What this does not catch is damage below the file system (bit rot): the
// same trust PostgreSQL puts in the files of pg_wal, and its WAL records
// carry their own CRCs.

/// What a spooled segment was verified against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SpoolStamp {
    version: u32,
    /// [`repository_fingerprint`] of the repository it came from.
    repository: String,
    cluster: String,
    name: String,
    size: u64,
    blake3: String,
    dev: u64,
    ino: u64,
    /// The modification mark set before the fsync (seconds, nanoseconds).
    mtime: i64,
    mtime_nsec: i64,
}

const STAMP_VERSION: u32 = 1;
const STAMP_SUFFIX: &str = ".stamp";

/// An identity of a repository readable without its key: the BLAKE3 of
/// its config object, which is sealed with a random nonce at `init` and
/// never rewritten, so two repositories (even at the same location, one
/// re-created) never share it.
pub fn repository_fingerprint(
    backend: &dyn holdfast_storage::Backend,
    rt: &tokio::runtime::Handle,
) -> Result<String> {
    let bytes = rt
        .block_on(backend.get(ObjectKind::Config, "config", None))
        .map_err(holdfast_repo::RepoError::from)?;
    Ok(blake3::hash(&bytes).to_hex().to_string())
}

fn stamp_path(spool: &Path, name: &str) -> std::path::PathBuf {
    spool.join(format!("{name}{STAMP_SUFFIX}"))
}

fn read_stamp(spool: &Path, name: &str) -> Option<SpoolStamp> {
    let b = std::fs::read(stamp_path(spool, name)).ok()?;
    serde_json::from_slice(&b).ok()
}

/// True if `meta` (an lstat) is the file `st` stamped.
fn is_stamped_file(st: &SpoolStamp, meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    meta.file_type().is_file()
        && meta.dev() == st.dev
        && meta.ino() == st.ino
        && meta.len() == st.size
        && meta.mtime() == st.mtime
        && meta.mtime_nsec() == st.mtime_nsec
}

/// The stamp of spooled `name` if it is complete, verified for this
/// repository and cluster, and unchanged since.
fn valid_spooled(spool: &Path, fingerprint: &str, cluster: u64, name: &str) -> Option<SpoolStamp> {
    let st = read_stamp(spool, name)?;
    let meta = std::fs::symlink_metadata(spool.join(name)).ok()?;
    (st.version == STAMP_VERSION
        && st.repository == fingerprint
        && st.cluster == cluster.to_string()
        && st.name == name
        && is_stamped_file(&st, &meta))
    .then_some(st)
}

fn remove_spooled(spool: &Path, name: &str) {
    let _ = std::fs::remove_file(spool.join(name));
    let _ = std::fs::remove_file(stamp_path(spool, name));
}

/// Serve `name` from the spool if a prefetch put it there for this
/// repository (`fingerprint`, see [`repository_fingerprint`]) and cluster:
/// the checks above, then a rename to `dest`. Needs no key and reads no
/// segment. Returns false if it is not spooled or fails a check (the
/// spooled file is then removed and the caller fetches from the
/// repository). History files and other non-segment names are never
/// spooled.
pub fn take_from_spool(
    fingerprint: &str,
    cluster: u64,
    name: &str,
    spool: &Path,
    dest: &Path,
) -> Result<bool> {
    validate_name(name)?;
    if !is_segment_name(name) {
        return Ok(false);
    }
    let src = spool.join(name);
    let Some(st) = valid_spooled(spool, fingerprint, cluster, name) else {
        // Absent, or not usable: from another repository, changed since it
        // was verified, or a stamp without its file.
        if src.symlink_metadata().is_ok() || stamp_path(spool, name).exists() {
            remove_spooled(spool, name);
        }
        return Ok(false);
    };
    match std::fs::rename(&src, dest) {
        Ok(()) => {}
        // Another fetch took it first: fetch it from the repository.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        // A spool on another file system (--spool): copy, verifying.
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let ok = copy_verified(&src, dest, &st)?;
            remove_spooled(spool, name);
            return Ok(ok);
        }
        Err(e) => {
            return Err(PgError::io(
                format!("moving {} to {}", src.display(), dest.display()),
                e,
            ))
        }
    }
    // The checks above and the rename are not one step: make sure what
    // landed at `dest` is still the stamped file (a concurrent writer could
    // have swapped it in between). If not, it goes, and the caller fetches.
    let landed = std::fs::symlink_metadata(dest)
        .map(|m| is_stamped_file(&st, &m))
        .unwrap_or(false);
    let _ = std::fs::remove_file(stamp_path(spool, name));
    if !landed {
        let _ = std::fs::remove_file(dest);
        return Ok(false);
    }
    // The mark has done its job; give the file an ordinary time.
    touch(dest);
    Ok(true)
}

/// Set a file's times to now (best effort).
fn touch(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    if let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) {
        // SAFETY: a valid NUL-terminated path; a null `times` means "now".
        unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), std::ptr::null(), 0) };
    }
}

/// Copy a spooled file to `dest` (other file system), checking its BLAKE3
/// against the stamp on the way. False if it does not match.
fn copy_verified(src: &Path, dest: &Path, st: &SpoolStamp) -> Result<bool> {
    let mut f = std::fs::File::open(src)
        .map_err(|e| PgError::io(format!("opening {}", src.display()), e))?;
    let dir = parent_dir(dest);
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .map_err(|e| PgError::io(format!("creating a temporary file in {}", dir.display()), e))?;
    let (total, hash) = copy_hashing(&mut f, &mut tmp, 256 * 1024, &|e| {
        PgError::io(format!("reading {}", src.display()), e)
    })?;
    if total != st.size || hash != st.blake3 {
        return Ok(false);
    }
    tmp.persist(dest)
        .map_err(|e| PgError::io(format!("moving WAL into {}", dest.display()), e.error))?;
    Ok(true)
}

/// Copy `src` into `tmp` through a buffer of `buf` bytes, hashing on the
/// way; returns the bytes copied and their BLAKE3 (hex). Read errors go
/// through `read_err`, which names the source.
fn copy_hashing(
    src: &mut dyn Read,
    tmp: &mut tempfile::NamedTempFile,
    buf: usize,
    read_err: &dyn Fn(std::io::Error) -> PgError,
) -> Result<(u64, String)> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; buf];
    let mut total = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n])
            .map_err(|e| PgError::io(format!("writing {}", tmp.path().display()), e))?;
        total += n as u64;
    }
    Ok((total, hasher.finalize().to_hex().to_string()))
}

/// Tidy the spool for a fetch of segment `name`: remove spooled segments
/// before it (already replayed, on any timeline: recovery only moves
/// forward) and leftovers that are not ours to keep; return how many
/// segments of `name`'s timeline after it are spooled. Cheap: one directory
/// read, no file is opened.
pub fn tidy_spool(spool: &Path, name: &str) -> usize {
    if !is_segment_name(name) {
        return 0;
    }
    let Ok(rd) = std::fs::read_dir(spool) else {
        return 0;
    };
    let want = name.to_ascii_uppercase();
    let mut ahead = 0;
    for e in rd.flatten() {
        let file = e.file_name();
        let Some(file) = file.to_str() else { continue };
        let seg = file.strip_suffix(STAMP_SUFFIX).unwrap_or(file);
        if !is_segment_name(seg) {
            continue;
        }
        let seg = seg.to_ascii_uppercase();
        // Log and segment numbers in fixed-width hex: comparing the text
        // compares the positions, whatever the segment size.
        if seg[8..] < want[8..] {
            let _ = std::fs::remove_file(e.path());
        } else if seg[..8] == want[..8] && seg[8..] > want[8..] && seg.len() == file.len() {
            ahead += 1;
        }
    }
    ahead
}

const POSITION: &str = ".position";

/// Note in the spool that recovery asked for segment `name`, so that a
/// prefetcher that fell behind skips what was replayed (best effort: a
/// lost or torn note only costs speed).
pub fn note_position(spool: &Path, name: &str) {
    if is_segment_name(name) && spool.is_dir() {
        let _ = std::fs::write(spool.join(POSITION), name.to_ascii_uppercase());
    }
}

fn read_position(spool: &Path) -> Option<String> {
    let s = std::fs::read_to_string(spool.join(POSITION)).ok()?;
    let s = s.trim();
    is_segment_name(s).then(|| s.to_ascii_uppercase())
}

/// Fill `spool` so that up to `count` segments following `after` (same
/// timeline) are there, stopping at the first one not archived; while
/// recovery consumes them, keep going until `count` are waiting. Returns
/// how many were fetched. Callers run this in the background, holding the
/// [`SpoolLock`]. Only segments are prefetched, never history files: a
/// guess is only ever served under the exact name it was archived under.
pub fn prefetch(
    repo: &Arc<Repository>,
    cluster: u64,
    after: &str,
    count: usize,
    spool: &Path,
) -> Result<usize> {
    if !is_segment_name(after) || count == 0 {
        return Ok(0);
    }
    std::fs::create_dir_all(spool)
        .map_err(|e| PgError::io(format!("creating {}", spool.display()), e))?;
    remove_temporaries(spool);
    let fingerprint = repo.config_fingerprint()?;
    let after = after.to_ascii_uppercase();
    tidy_spool(spool, &after);
    if !is_segment_name(&after) {
        return Err(PgError::Invalid(format!(
            "{after:?} is not a WAL segment name"
        )));
    }
    let timeline = u32::from_str_radix(&after[..8], 16)
        .map_err(|_| PgError::Invalid(format!("{after:?} is not a WAL segment name")))?;
    // The segment size decides how names count; the archived `after` says
    // it (a cluster initialised with --wal-segsize), else the default.
    let size = match manifest(repo, cluster, &after)? {
        Some(m) if m.size.is_power_of_two() && (1 << 20..=1 << 30).contains(&m.size) => m.size,
        _ => DEFAULT_SEGMENT_SIZE,
    };
    let Some(first) = segment_number(&after, size) else {
        return Ok(0);
    };
    let mut fetched = 0;
    let mut n = first;
    let mut at = after;
    loop {
        // Where recovery is now: it consumes while we fetch. If it has
        // passed us (a slow repository), skip what it already replayed.
        if let Some(p) = read_position(spool) {
            if p[..8] == at[..8] && p[8..] > at[8..] {
                at = p;
            }
        }
        if let Some(pos) = segment_number(&at, size) {
            n = n.max(pos);
        }
        if tidy_spool(spool, &at) >= count {
            break;
        }
        n += 1;
        let name = segment_name(timeline, n, size);
        if valid_spooled(spool, &fingerprint, cluster, &name).is_some() {
            continue;
        }
        let m = match fetch_manifest(repo, cluster, &name) {
            Ok(m) => m,
            Err(PgError::WalNotFound { .. }) => break,
            Err(e) => return Err(e),
        };
        spool_one(repo, &fingerprint, cluster, &m, spool)?;
        fetched += 1;
    }
    Ok(fetched)
}

/// Fetch one segment into the spool: verified temporary file, mark, fsync,
/// stamp, then the rename to its final name (see the comment on the spool).
fn spool_one(
    repo: &Arc<Repository>,
    fingerprint: &str,
    cluster: u64,
    m: &WalManifest,
    spool: &Path,
) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let tmp = fetch_temp(repo, m, spool)?;
    let file = tmp.as_file();
    let ctx = |what: &str| format!("{what} {}", tmp.path().display());
    // A time in 2000 that no write can set (writes set "now"), with
    // nanoseconds from the hash so that marks differ between files.
    let nanos =
        u32::from_str_radix(m.blake3.get(..8).unwrap_or("0"), 16).unwrap_or(0) % 1_000_000_000;
    let mark = std::time::UNIX_EPOCH + std::time::Duration::new(946_684_800, nanos);
    file.set_modified(mark)
        .map_err(|e| PgError::io(ctx("setting the time of"), e))?;
    file.sync_all()
        .map_err(|e| PgError::io(ctx("syncing"), e))?;
    let meta = file
        .metadata()
        .map_err(|e| PgError::io(ctx("reading the status of"), e))?;
    let stamp = SpoolStamp {
        version: STAMP_VERSION,
        repository: fingerprint.to_string(),
        cluster: cluster.to_string(),
        name: m.name.clone(),
        size: m.size,
        blake3: m.blake3.clone(),
        dev: meta.dev(),
        ino: meta.ino(),
        mtime: meta.mtime(),
        mtime_nsec: meta.mtime_nsec(),
    };
    let json = serde_json::to_vec(&stamp)
        .map_err(|e| PgError::Invalid(format!("encoding a spool stamp: {e}")))?;
    // The stamp first, then the segment: a segment under its final name
    // without its stamp would only be a miss, never a wrong answer; the
    // stamp needs no fsync for the same reason (unreadable = miss).
    let mut st = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(spool)
        .map_err(|e| {
            PgError::io(
                format!("creating a temporary file in {}", spool.display()),
                e,
            )
        })?;
    st.write_all(&json)
        .map_err(|e| PgError::io(format!("writing {}", st.path().display()), e))?;
    let stamp_at = stamp_path(spool, &m.name);
    st.persist(&stamp_at)
        .map_err(|e| PgError::io(format!("writing {}", stamp_at.display()), e.error))?;
    let dest = spool.join(&m.name);
    tmp.persist(&dest)
        .map_err(|e| PgError::io(format!("moving WAL into {}", dest.display()), e.error))?;
    Ok(())
}

/// Remove temporary files a killed prefetcher left (only the lock holder
/// calls this, so none is being written).
fn remove_temporaries(spool: &Path) {
    let Ok(rd) = std::fs::read_dir(spool) else {
        return;
    };
    for e in rd.flatten() {
        if e.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
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
    let all = repo.list_wal_manifests()?;
    let mut out: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for obj in all {
        if let Some((c, name)) = split_object_name(&obj) {
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
    let all = repo.list_wal_manifests()?;
    Ok(all
        .iter()
        .filter_map(|m| split_object_name(m).map(|(c, _)| c))
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
