//! Verifying a restored tree against its snapshot: every regular file (or
//! a chosen sample) is read back from the target and each blob-sized
//! piece hashed with the repository's keyed blob id, which must equal the
//! id the snapshot records; sizes must match and nothing may follow.
//! Symlinks must point where the snapshot says. Restore drills run this
//! after the restore, on the restored bytes as they lie on disk.

use std::fs::{self, OpenOptions};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use holdfast_repo::index::Index;
use holdfast_repo::snapshot::SnapshotEntry;
use holdfast_repo::tree::NodeKind;
use holdfast_repo::Repository;

use crate::error::SourceResult;
use crate::restore::{self, Item, RestoreOptions};

/// What a verification found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Verification {
    /// Regular files and symlinks in the snapshot (the population a sample
    /// is drawn from).
    pub entries: u64,
    /// Entries chosen to be checked.
    pub chosen: u64,
    /// Entries checked (fewer than `chosen` only when stopped).
    pub checked: u64,
    /// Bytes read back and hashed.
    pub bytes: u64,
    /// Entries that differ, with how (sorted; at most `MAX_LISTED`, the
    /// count is `mismatched`).
    pub mismatches: Vec<String>,
    pub mismatched: u64,
}

/// At most this many differences are listed one by one.
pub const MAX_LISTED: usize = 100;

/// Verify the restore of `snap` at `target` (as `restore` laid it out with
/// `opts.includes`). `choose` is given the number of entries and returns
/// the indexes to check (all of them, or a sample). Runs on `threads`
/// threads (0: one per core). Setting `stop` ends it early: then
/// `checked` counts what was done.
pub fn verify(
    repo: &Arc<Repository>,
    snap: &SnapshotEntry,
    target: &Path,
    opts: &RestoreOptions,
    choose: &dyn Fn(usize) -> Vec<usize>,
    threads: usize,
    stop: &AtomicBool,
) -> SourceResult<Verification> {
    repo.ensure_index()?;
    let items: Vec<Item> = restore::plan(repo, snap, target, opts)?
        .into_iter()
        .filter(|i| matches!(i.meta.kind, NodeKind::File | NodeKind::Symlink))
        .collect();
    let mut chosen = choose(items.len());
    chosen.retain(|&i| i < items.len());
    chosen.sort_unstable();
    chosen.dedup();
    let index = repo.index();
    let next = AtomicUsize::new(0);
    let done = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let found: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let threads = if threads > 0 {
        threads
    } else {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    }
    .min(chosen.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut buf = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = chosen.get(k).and_then(|&i| items.get(i)) else {
                        break;
                    };
                    let why = match item.meta.kind {
                        NodeKind::Symlink => symlink_mismatch(item),
                        _ => content_mismatch(repo, &index, item, &mut buf),
                    };
                    if item.meta.kind == NodeKind::File {
                        bytes.fetch_add(item.size, Ordering::Relaxed);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                    if let Some(why) = why {
                        found
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(format!("{}: {why}", item.path.display()));
                    }
                }
            });
        }
    });
    let mut mismatches = found.into_inner().unwrap_or_else(|e| e.into_inner());
    mismatches.sort();
    let mismatched = mismatches.len() as u64;
    mismatches.truncate(MAX_LISTED);
    Ok(Verification {
        entries: items.len() as u64,
        chosen: chosen.len() as u64,
        checked: done.into_inner(),
        bytes: bytes.into_inner(),
        mismatches,
        mismatched,
    })
}

fn symlink_mismatch(item: &Item) -> Option<String> {
    match fs::read_link(&item.path) {
        Ok(t) if t.as_os_str().as_bytes() == item.target.as_slice() => None,
        Ok(t) => Some(format!(
            "symlink points to {} instead of {}",
            t.display(),
            String::from_utf8_lossy(&item.target)
        )),
        Err(e) => Some(format!("symlink cannot be read: {e}")),
    }
}

/// Why the file at `item.path` is not exactly the item's content, or
/// `None` if it is: every blob-sized piece hashes to its blob id and
/// nothing follows. Only a regular file itself counts: a symlink to a file
/// with the right bytes is not a restored file (its target can change
/// under it), so it is never followed.
pub(crate) fn content_mismatch(
    repo: &Repository,
    index: &Index,
    item: &Item,
    buf: &mut Vec<u8>,
) -> Option<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&item.path)
    {
        Ok(f) => f,
        Err(e) => return Some(format!("cannot be opened: {e}")),
    };
    match f.metadata() {
        Ok(m) if !m.is_file() => return Some("is not a regular file".into()),
        Ok(m) if m.len() != item.size => {
            return Some(format!("{} bytes instead of {}", m.len(), item.size))
        }
        Ok(_) => {}
        Err(e) => return Some(format!("cannot be read: {e}")),
    }
    let mut total = 0u64;
    for (n, id) in item.content.iter().enumerate() {
        let Some(loc) = index.get(id) else {
            return Some(format!(
                "blob {} (piece {n}) is not in the index",
                id.short()
            ));
        };
        buf.resize(loc.raw_len as usize, 0);
        if let Err(e) = f.read_exact(buf) {
            return Some(format!("cannot be read at offset {total}: {e}"));
        }
        if repo.key().blob_id(buf) != *id {
            return Some(format!(
                "content differs from the snapshot in bytes {total}..{} (blob {})",
                total + u64::from(loc.raw_len),
                id.short()
            ));
        }
        total += u64::from(loc.raw_len);
    }
    let mut one = [0u8; 1];
    if total != item.size || !matches!(f.read(&mut one), Ok(0)) {
        return Some(format!(
            "holds more than the snapshot's {} bytes",
            item.size
        ));
    }
    None
}
