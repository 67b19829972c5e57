//! Streaming reads of a blob list (a file's or a dump's content).
//!
//! [`ContentReader`] implements `std::io::Read` over an ordered list of blob
//! ids, fetching and decrypting up to `ahead` groups of blobs in parallel on
//! background threads while the consumer reads, so a restore into a pipe
//! (`pg_restore`) or a file runs at storage speed rather than one round trip
//! per chunk. Every blob is verified against its id before a byte of it is
//! returned.
//!
//! Consecutive blobs of the list that lie close together in one pack (a
//! dump is written in order, so nearly all of them do) form a group: one
//! ranged read and one decryption and decompression per frame for the
//! whole group. Reading blob by blob would decode a frame once for every
//! blob in it (format 2 packs several blobs into a frame), which made a
//! gigabyte dump take seconds longer to read than the same bytes restored
//! as a file.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver};

use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::index::BlobLocation;
use crate::repository::Repository;

/// A group's ranged read spans at most this many bytes of its pack.
const MAX_SPAN: u64 = 8 << 20;
/// Blobs closer than this in a pack share a read (the gap is read too).
const MAX_GAP: u64 = 64 << 10;

/// Blobs fetched together: one pack, or a single blob read on its own.
enum Group {
    Pack(Id, Vec<(Id, BlobLocation)>),
    Single(Id),
}

pub struct ContentReader {
    pending: VecDeque<Receiver<Vec<Result<Vec<u8>>>>>,
    queue: VecDeque<Id>,
    repo: Arc<Repository>,
    /// The blobs of the group being read, in order.
    ready: VecDeque<Result<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
    ahead: usize,
}

impl ContentReader {
    pub fn new(repo: Arc<Repository>, blobs: Vec<Id>, ahead: usize) -> ContentReader {
        let mut r = ContentReader {
            pending: VecDeque::new(),
            queue: blobs.into(),
            repo,
            ready: VecDeque::new(),
            current: Vec::new(),
            pos: 0,
            ahead: ahead.max(1),
        };
        r.refill();
        r
    }

    /// The next group from the front of the queue.
    fn next_group(&mut self) -> Option<Group> {
        let index = self.repo.index();
        let first = self.queue.pop_front()?;
        let Some(loc) = index.get(&first) else {
            // Not in the index (or a damaged cached run): `read_blob`
            // reloads it or names the missing blob.
            return Some(Group::Single(first));
        };
        let pack = loc.pack;
        let start = u64::from(loc.offset);
        let mut last = loc;
        let mut blobs = vec![(first, loc)];
        while let Some(next) = self.queue.front() {
            let Some(l) = index.get(next) else { break };
            let last_end = u64::from(last.offset) + u64::from(last.length);
            let same_frame = l.offset == last.offset;
            let close =
                u64::from(l.offset) >= last_end && u64::from(l.offset) - last_end <= MAX_GAP;
            let end = u64::from(l.offset) + u64::from(l.length);
            if l.pack != pack || !(same_frame || close) || end - start > MAX_SPAN {
                break;
            }
            last = l;
            blobs.push((*next, l));
            self.queue.pop_front();
        }
        Some(Group::Pack(pack, blobs))
    }

    fn refill(&mut self) {
        while self.pending.len() < self.ahead {
            let Some(group) = self.next_group() else {
                break;
            };
            let (tx, rx) = bounded(1);
            let repo = self.repo.clone();
            std::thread::spawn(move || {
                let _ = tx.send(fetch(&repo, group));
            });
            self.pending.push_back(rx);
        }
    }

    fn next_blob(&mut self) -> Result<bool> {
        if self.ready.is_empty() {
            let Some(rx) = self.pending.pop_front() else {
                return Ok(false);
            };
            let got = rx
                .recv()
                .unwrap_or_else(|_| vec![Err(RepoError::Invalid("blob fetch thread died".into()))]);
            self.ready = got.into();
            self.refill();
        }
        match self.ready.pop_front() {
            Some(data) => {
                self.current = data?;
                self.pos = 0;
                Ok(true)
            }
            None => self.next_blob(),
        }
    }
}

/// Every blob of `group`, in order, each verified (or its error).
fn fetch(repo: &Repository, group: Group) -> Vec<Result<Vec<u8>>> {
    match group {
        Group::Single(id) => vec![repo.read_blob(&id)],
        Group::Pack(pack, blobs) => {
            // visit_pack_blobs wants one frame's blobs adjacent: they are,
            // as consecutive blobs of a frame share its offset. A frame
            // that appears twice (a blob repeated) is simply decoded twice.
            let mut out: Vec<Result<Vec<u8>>> = Vec::with_capacity(blobs.len());
            let res = repo.visit_pack_blobs(pack, &blobs, &mut |_, r| {
                out.push(r.map(<[u8]>::to_vec));
            });
            match res {
                Ok(()) if out.len() == blobs.len() => out,
                Ok(()) => vec![Err(RepoError::Invalid(format!(
                    "pack {} gave {} of {} blobs",
                    pack.short(),
                    out.len(),
                    blobs.len()
                )))],
                Err(e) => vec![Err(RepoError::from(e))],
            }
        }
    }
}

impl Read for ContentReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.current.len() {
            match self.next_blob() {
                Ok(true) => {}
                Ok(false) => return Ok(0),
                // The repository error travels inside the io::Error whole.
                Err(e) => return Err(e.into()),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
