//! The local witness of the audit trail: the newest head of a
//! repository's chain this machine has written or seen, kept in the local
//! cache root (`audit-witness/<repository id hex>`, JSON of a
//! [`super::Head`]).
//!
//! A chain shows every edit, deletion or reordering inside it, but not the
//! loss of its newest entries; the witness (with the head every snapshot
//! records) is what `audit verify` compares the chain's end against. It is
//! only ever raised, under an advisory lock so that two processes on one
//! machine cannot lower it, and it doubles as the hint that makes an
//! append one request. Unlike the rest of the cache it is not derived from
//! the repository: deleting it loses this machine's evidence of the tail
//! (the snapshots' heads remain). Writes are best effort, like the cache's.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::Head;
use crate::id::Id;

const DIR: &str = "audit-witness";
/// A witness is a few dozen bytes; anything larger is not one.
const MAX_LEN: u64 = 4096;

/// Where the witness of repository `id` lives under cache root `root`.
pub fn path(root: &Path, id: &Id) -> PathBuf {
    root.join(DIR).join(id.to_hex())
}

/// The witness of repository `id`, if there is a readable one.
pub fn read(root: &Path, id: &Id) -> Option<Head> {
    read_file(&path(root, id))
}

fn read_file(p: &Path) -> Option<Head> {
    let f = fs::File::open(p).ok()?;
    if f.metadata().ok()?.len() > MAX_LEN {
        return None;
    }
    let head: Head = serde_json::from_reader(f).ok()?;
    (head.seq > 0 && head.hash.len() == 64).then_some(head)
}

/// Raise the witness of repository `id` to `head` unless it already holds
/// this or a later entry. Best effort.
pub fn raise(root: &Path, id: &Id, head: &Head) {
    let _ = try_raise(root, id, head);
}

fn try_raise(root: &Path, id: &Id, head: &Head) -> std::io::Result<()> {
    let dir = root.join(DIR);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    let target = path(root, id);
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(dir.join(format!("{}.lock", id.to_hex())))?;
    // SAFETY: a valid open descriptor; flock has no other precondition.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // The lock is released when `lock` is closed (end of scope).
    if read_file(&target).is_some_and(|w| w.seq >= head.seq) {
        return Ok(());
    }
    let json = serde_json::to_vec(head).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!(".tmp-{}-{}", id.to_hex(), std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let written = f.write_all(&json).and_then(|()| f.sync_all());
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, &target)) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ever_raised() {
        let dir = tempfile::tempdir().unwrap();
        let id = Id([7; 32]);
        assert_eq!(read(dir.path(), &id), None);
        let h = |seq, c: char| Head {
            seq,
            hash: std::iter::repeat_n(c, 64).collect(),
        };
        raise(dir.path(), &id, &h(5, 'a'));
        raise(dir.path(), &id, &h(3, 'b'));
        assert_eq!(read(dir.path(), &id), Some(h(5, 'a')));
        raise(dir.path(), &id, &h(6, 'c'));
        assert_eq!(read(dir.path(), &id), Some(h(6, 'c')));
        fs::write(path(dir.path(), &id), b"garbage").unwrap();
        assert_eq!(read(dir.path(), &id), None);
    }
}
