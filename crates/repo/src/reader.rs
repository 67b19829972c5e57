//! Streaming reads of a blob list (a file's or a dump's content).
//!
//! [`ContentReader`] implements `std::io::Read` over an ordered list of blob
//! ids, fetching and decrypting up to `ahead` blobs in parallel on background
//! threads while the consumer reads, so a restore into a pipe (`pg_restore`)
//! or a file runs at storage speed rather than one round trip per chunk.
//! Every blob is verified against its id before a byte of it is returned.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver};

use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::repository::Repository;

pub struct ContentReader {
    pending: VecDeque<Receiver<Result<Vec<u8>>>>,
    queue: VecDeque<Id>,
    repo: Arc<Repository>,
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
            current: Vec::new(),
            pos: 0,
            ahead: ahead.max(1),
        };
        r.refill();
        r
    }

    fn refill(&mut self) {
        while self.pending.len() < self.ahead {
            let Some(id) = self.queue.pop_front() else {
                break;
            };
            let (tx, rx) = bounded(1);
            let repo = self.repo.clone();
            std::thread::spawn(move || {
                let _ = tx.send(repo.read_blob(&id));
            });
            self.pending.push_back(rx);
        }
    }

    fn next_blob(&mut self) -> Result<bool> {
        let Some(rx) = self.pending.pop_front() else {
            return Ok(false);
        };
        let data = rx
            .recv()
            .unwrap_or_else(|_| Err(RepoError::Invalid("blob fetch thread died".into())))?;
        self.current = data;
        self.pos = 0;
        self.refill();
        Ok(true)
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
