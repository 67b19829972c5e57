//! Small files gathered into frames.
//!
//! A document store is mostly small files by count: forms, notes and
//! records of a few KiB. Compressed one by one, each starts with an empty
//! zstd window and pays its own frame header, so they stay at about 2.5x
//! where the same bytes compressed together reach 4x or more (measured on
//! the standard corpus: files under 64 KiB took 4.4 MB stored alone and
//! 2.6 MB in 1 MiB frames). The walk hands every file of at most
//! [`GATHERED_FILE_MAX`] bytes to a [`Gatherer`], which collects them in
//! the order they are read and submits each full batch as one mixed frame
//! ([`BlobWriter::submit_mixed_frame`]). Every file is still its own blob
//! (its own id, deduplicated on its own); only its storage is shared, and
//! a restore of one file decodes its frame, at most about 1 MiB.
//!
//! A batch is submitted when it is full, or by the first node that needs
//! one of its ids ([`PendingContent::wait`]), so no waiter depends on files that
//! have not been read yet: the walk resolves a directory's nodes only
//! after reading them, and whoever resolves first sends the batch.
//!
//! Crash safety is the frame's: a batch lands in a pack like any blob, and
//! the index names each file's blob at its place in the frame.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use holdfast_repo::pack::BlobType;
use holdfast_repo::writer::{BlobWriter, PendingBlob, PendingFrame, FRAME_TARGET};
use holdfast_repo::{Id, RepoError};

/// Files up to this size are gathered. Most of the gain is in the
/// smallest files (files under 16 KiB gave 1.77 MB of the 2.0 MB saved on
/// the corpus above, under 64 KiB 1.85 MB); larger ones have context
/// enough of their own, and a restore of one of them should not decode
/// a frame of others.
pub const GATHERED_FILE_MAX: usize = 64 * 1024;

/// A file's content blob as the walk hands it on.
pub enum PendingContent {
    /// Stored as a blob of its own.
    Alone(PendingBlob),
    /// Member `usize` of a gathered batch.
    Gathered(Arc<Batch>, usize),
}

impl PendingContent {
    /// The blob's id once stored (or known to be stored).
    pub fn wait(self, writer: &BlobWriter) -> Result<Id, RepoError> {
        match self {
            PendingContent::Alone(p) => p.wait(),
            PendingContent::Gathered(batch, i) => batch.id(writer, i),
        }
    }
}

/// One batch of small files on its way to becoming a frame.
pub struct Batch {
    state: Mutex<State>,
    /// Signalled when the answer arrives.
    answered: Condvar,
}

enum State {
    /// Still taking files.
    Open {
        blocks: Vec<Vec<u8>>,
        bytes: usize,
    },
    /// Handed to the writer.
    Sent(PendingFrame),
    /// One asker is receiving the writer's answer.
    Receiving,
    /// The writer's answer: the members' ids in order.
    Stored(Vec<Id>),
    Failed(RepoError),
}

impl Batch {
    fn new() -> Batch {
        Batch {
            state: Mutex::new(State::Open {
                blocks: Vec::new(),
                bytes: 0,
            }),
            answered: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Add `data` if the batch is still open: its member number, and
    /// whether the batch is now full.
    fn push(&self, data: Vec<u8>) -> Result<(usize, bool), Vec<u8>> {
        match &mut *self.lock() {
            State::Open { blocks, bytes } => {
                *bytes += data.len();
                blocks.push(data);
                Ok((blocks.len() - 1, *bytes >= FRAME_TARGET))
            }
            _ => Err(data),
        }
    }

    /// Hand the batch to the writer unless it was already.
    fn send(&self, writer: &BlobWriter) {
        let mut state = self.lock();
        Self::send_locked(&mut state, writer);
    }

    fn send_locked(state: &mut State, writer: &BlobWriter) {
        if let State::Open { blocks, .. } = state {
            let blocks = std::mem::take(blocks);
            *state = match writer.submit_mixed_frame(BlobType::Data, blocks) {
                Ok(p) => State::Sent(p),
                Err(e) => State::Failed(e),
            };
        }
    }

    /// Member `i`'s id, sending the batch first if nobody has. One asker
    /// receives the writer's answer (outside the lock, so readers adding
    /// to the next batch never wait for it); the others wait for it.
    fn id(&self, writer: &BlobWriter, i: usize) -> Result<Id, RepoError> {
        let mut state = self.lock();
        Self::send_locked(&mut state, writer);
        match std::mem::replace(&mut *state, State::Receiving) {
            State::Sent(p) => {
                drop(state);
                let answer = match p.wait() {
                    Ok(ids) => State::Stored(ids),
                    Err(e) => State::Failed(e),
                };
                state = self.lock();
                *state = answer;
                self.answered.notify_all();
            }
            other => *state = other,
        }
        while matches!(&*state, State::Receiving) {
            state = self.answered.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        match &*state {
            State::Stored(ids) => ids.get(i).copied().ok_or_else(|| {
                RepoError::Invalid(format!(
                    "the writer returned {} ids for a batch of more small files",
                    ids.len()
                ))
            }),
            State::Failed(e) => Err(e.clone()),
            State::Open { .. } | State::Sent(_) | State::Receiving => Err(RepoError::Invalid(
                "a batch of small files was not sent".into(),
            )),
        }
    }
}

/// Collects small files into batches for one backup's walk; shared by the
/// reader threads.
pub struct Gatherer<'a> {
    writer: &'a BlobWriter,
    current: Mutex<Option<Arc<Batch>>>,
}

impl<'a> Gatherer<'a> {
    pub fn new(writer: &'a BlobWriter) -> Gatherer<'a> {
        Gatherer {
            writer,
            current: Mutex::new(None),
        }
    }

    /// Add one small file's content; a full batch is sent at once.
    pub fn add(&self, mut data: Vec<u8>) -> PendingContent {
        let (batch, i, full) = {
            let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                let batch = current
                    .get_or_insert_with(|| Arc::new(Batch::new()))
                    .clone();
                match batch.push(data) {
                    Ok((i, full)) => {
                        if full {
                            *current = None;
                        }
                        break (batch, i, full);
                    }
                    // A waiter sent it early: start the next batch.
                    Err(back) => {
                        data = back;
                        *current = None;
                    }
                }
            }
        };
        if full {
            // Outside the gatherer's lock: sending blocks while the
            // writer's queue is full, and other readers need not wait.
            batch.send(self.writer);
        }
        PendingContent::Gathered(batch, i)
    }
}
