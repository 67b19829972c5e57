//! The blob writer: the back half of every backup pipeline.
//!
//! Callers (file walkers, database dump readers) chunk their input and
//! [`BlobWriter::submit`] each chunk. A pool of worker threads, one per core,
//! hashes, deduplicates and compresses chunks, each into a buffer of its
//! own, then appends them, encrypted, to the one data pack being filled;
//! full packs are uploaded as tokio tasks, at most `parallelism` at a time.
//! One shared pack rather than one per worker: a pack fills (and its upload
//! starts) after `pack size` new bytes rather than `workers × pack size`,
//! so less is left to upload once the input ends (with per-worker packs, a
//! backup of 2 × 16 MiB of new data on two cores uploaded everything after
//! its walk), for the same number of packs.
//! Every queue is bounded, so memory stays bounded whatever the input size:
//! roughly (1 + uploads in flight) × pack size, plus an encoded chunk per
//! worker and the queued chunks.
//!
//! An [`UploadGate`] holds uploads back until the caller lets them go (a
//! backup that walks while its lease is being taken).
//!
//! Crash safety: index objects are written only for packs whose upload
//! finished, and the caller writes its snapshot only after [`BlobWriter::finish`]
//! returned. A crash at any point therefore leaves, at worst, packs that no
//! index or snapshot mentions; they cost space until GC, never correctness.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use crossbeam_channel::{bounded, Receiver, Sender};
use holdfast_storage::{Backend, ObjectKind, PutOptions, StorageError};
use tokio::runtime::Handle;
use tokio::sync::{watch, Semaphore};

use crate::cache::{Cache, CacheKind};
use crate::chunker::{ChunkerParams, StreamChunker};
use crate::compress::Encoder;
use crate::crypto::MasterKey;
use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::index::Index;
use crate::pack::{BlobType, PackInfo, PackWriter};
use crate::repository::{write_index_object, Repository};
use crate::retention::{Clock, RetentionPolicy};

/// Packs indexed per index object written during a backup (about 1 GiB),
/// so that a crash late in a long backup keeps most of the uploaded data
/// usable for dedup, without an extra request per few hundred MiB.
const INDEX_EVERY_PACKS: usize = 64;

/// What a writer added to the repository.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    pub blobs_added: u64,
    /// Plaintext bytes of the new data blobs (file or stream content).
    pub data_added: u64,
    /// Plaintext bytes of the new tree blobs (metadata).
    pub meta_added: u64,
    /// Bytes of packs written.
    pub stored_added: u64,
    /// Packs written.
    pub packs_added: u64,
}

enum Job {
    Blob {
        blob_type: BlobType,
        data: Vec<u8>,
        reply: Sender<Result<Id>>,
    },
    /// Consecutive small blobs of one source, stored as one frame (see
    /// [`BlobWriter::submit_frame`]).
    Frame {
        blob_type: BlobType,
        blocks: Vec<Vec<u8>>,
        /// Unrelated blobs (small files), not consecutive parts of one
        /// source: see [`BlobWriter::submit_mixed_frame`].
        mixed: bool,
        reply: Sender<Result<Vec<Id>>>,
    },
}

/// Raw bytes of a frame the writer aims for: 64 blocks of 16 KiB. Past
/// about 1 MiB, zstd and LZMA2 gain little more context, and a reader of
/// one block decodes the whole frame.
pub const FRAME_TARGET: usize = 1024 * 1024;

struct Shared {
    backend: Arc<dyn Backend>,
    rt: Handle,
    key: MasterKey,
    /// Object Lock retention, computed for each object as it is written.
    retention: Option<RetentionPolicy>,
    clock: Arc<dyn Clock>,
    /// With Object Lock: packs this backup deduplicated against. The new
    /// snapshot depends on them, so their retention is extended at finish.
    reused: Mutex<HashSet<Id>>,
    /// The repository's format: which envelope index objects get.
    format: u32,
    /// The repository's index; dedup lookups go to its runs and small table.
    index: Arc<Index>,
    /// Where tree packs and index objects are kept as they are written, so
    /// the next backup reads its parent's trees without a request.
    cache: Option<Arc<Cache>>,
    claimed: Mutex<HashSet<Id>>,
    pack_size: usize,
    level: i32,
    /// Format 2: frames allowed, version-2 packs.
    frames: bool,
    /// Frames may be encoded with LZMA2 (see `compress`).
    lzma_frames: bool,
    sem: Arc<Semaphore>,
    uploads: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    unindexed: Mutex<Vec<PackInfo>>,
    /// The first failure, kept whole so its class (no space, transient…)
    /// reaches the caller and the exit code.
    error: Mutex<Option<RepoError>>,
    blobs_added: AtomicU64,
    data_added: AtomicU64,
    meta_added: AtomicU64,
    stored_added: AtomicU64,
    packs_added: AtomicU64,
    /// The tree pack being filled, and the encoder of trees (taken first).
    tree_packer: Mutex<Option<PackWriter>>,
    tree_encoder: Mutex<Option<Encoder>>,
    /// The data pack the workers are filling.
    data_packer: Mutex<Option<PackWriter>>,
    /// Buffers of uploaded packs, reused for new packs (see `new_pack`).
    spare: Mutex<Vec<Vec<u8>>>,
    /// Uploads wait for it to open, when there is one.
    gate: Option<UploadGate>,
}

/// Holds a writer's uploads back until its caller says they may go. A
/// backup walks (reads, deduplicates, compresses) while its lease is being
/// taken, but nothing may be stored before the lease is held (see
/// `docs/format.md`, "Garbage collection"); its commit waits until the
/// walk's decisions are known to stand, which the caller checks before
/// [`BlobWriter::finish`]. Sealed packs wait in memory meanwhile;
/// the upload limit bounds how many, and the workers wait when it is
/// reached.
#[derive(Debug, Clone)]
pub struct UploadGate(Arc<watch::Sender<Gate>>);

#[derive(Debug, Clone)]
enum Gate {
    Shut,
    Open,
    Refused(RepoError),
}

impl Default for UploadGate {
    fn default() -> Self {
        UploadGate(Arc::new(watch::channel(Gate::Shut).0))
    }
}

impl UploadGate {
    /// A shut gate.
    pub fn new() -> UploadGate {
        UploadGate::default()
    }

    /// Let every upload, waiting or to come, go.
    pub fn open(&self) {
        self.0.send_replace(Gate::Open);
    }

    /// Store nothing: every upload, waiting or to come, fails with `why`
    /// (so the writer fails with it too).
    pub fn refuse(&self, why: RepoError) {
        self.0.send_replace(Gate::Refused(why));
    }

    /// Wait until the gate opens (`Ok`) or is refused (`Err`).
    async fn passed(&self) -> Result<()> {
        let mut rx = self.0.subscribe();
        let state = match rx.wait_for(|g| !matches!(g, Gate::Shut)).await {
            Ok(g) => g.clone(),
            // The sender lives in `self`: not reached.
            Err(_) => Gate::Refused(RepoError::Invalid("upload gate dropped".into())),
        };
        match state {
            Gate::Refused(e) => Err(e),
            _ => Ok(()),
        }
    }
}

/// A blob id that a worker is still computing.
pub struct PendingBlob(Receiver<Result<Id>>);

impl PendingBlob {
    pub fn wait(self) -> Result<Id> {
        self.0
            .recv()
            .unwrap_or_else(|_| Err(RepoError::Invalid("blob writer stopped early".into())))
    }
}

/// The blob ids of a submitted frame, in block order.
pub struct PendingFrame(Receiver<Result<Vec<Id>>>);

impl PendingFrame {
    pub fn wait(self) -> Result<Vec<Id>> {
        self.0
            .recv()
            .unwrap_or_else(|_| Err(RepoError::Invalid("blob writer stopped early".into())))
    }
}

/// Concurrent writer of blobs into packs. Create one per backup.
pub struct BlobWriter {
    shared: Arc<Shared>,
    jobs: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

/// How a [`BlobWriter`] works; `Default` is one worker per core at the
/// repository's zstd level, with LZMA2 allowed for frames.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriterOptions {
    /// Worker threads; `None`: one per available core.
    pub threads: Option<usize>,
    /// zstd level of new blobs instead of the repository's configured one
    /// (0 stores raw). The level only affects how new blobs are encoded,
    /// never their ids, so writers with different levels deduplicate
    /// against each other. Used for streams where compression speed
    /// decides the backup's wall time (large database dumps next to the
    /// dumping server on few cores).
    pub level: Option<i32>,
    /// Frames may not use LZMA2, only zstd (faster; see `compress`).
    pub zstd_only_frames: bool,
}

impl BlobWriter {
    /// A writer with one worker per available core.
    pub fn new(repo: &Repository) -> BlobWriter {
        BlobWriter::with_options(repo, WriterOptions::default())
    }

    pub fn with_threads(repo: &Repository, threads: usize) -> BlobWriter {
        BlobWriter::with_options(
            repo,
            WriterOptions {
                threads: Some(threads),
                ..WriterOptions::default()
            },
        )
    }

    pub fn with_options(repo: &Repository, opts: WriterOptions) -> BlobWriter {
        BlobWriter::build(repo, opts, None)
    }

    /// A writer whose uploads wait for `gate` to open (see [`UploadGate`]).
    pub fn gated(repo: &Repository, opts: WriterOptions, gate: UploadGate) -> BlobWriter {
        BlobWriter::build(repo, opts, Some(gate))
    }

    fn build(repo: &Repository, opts: WriterOptions, gate: Option<UploadGate>) -> BlobWriter {
        let threads = opts.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        });
        let level = opts.level.unwrap_or(repo.config().compression_level);
        let threads = threads.max(1);
        let par = repo.backend().capabilities().parallelism.clamp(1, 64);
        let shared = Arc::new(Shared {
            backend: repo.backend().clone(),
            rt: repo.runtime().clone(),
            key: repo.key().clone(),
            retention: repo.retention_policy(),
            clock: repo.clock(),
            reused: Mutex::new(HashSet::new()),
            format: repo.format_version(),
            index: repo.index(),
            cache: repo.cache(),
            claimed: Mutex::new(HashSet::new()),
            pack_size: repo.config().pack_size as usize,
            level,
            frames: repo.takes_frames(),
            lzma_frames: !opts.zstd_only_frames,
            sem: Arc::new(Semaphore::new(par)),
            uploads: Mutex::new(Vec::new()),
            unindexed: Mutex::new(Vec::new()),
            error: Mutex::new(None),
            blobs_added: AtomicU64::new(0),
            data_added: AtomicU64::new(0),
            meta_added: AtomicU64::new(0),
            stored_added: AtomicU64::new(0),
            packs_added: AtomicU64::new(0),
            tree_packer: Mutex::new(None),
            tree_encoder: Mutex::new(None),
            data_packer: Mutex::new(None),
            spare: Mutex::new(Vec::new()),
            gate,
        });
        let (tx, rx) = bounded::<Job>(threads * 2);
        let workers = (0..threads)
            .map(|i| {
                let rx = rx.clone();
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("holdfast-pack-{i}"))
                    .spawn(move || worker(shared, rx))
                    .expect("spawning a worker thread")
            })
            .collect();
        BlobWriter {
            shared,
            jobs: Some(tx),
            workers,
        }
    }

    /// Queue a chunk; blocks when the workers are saturated (backpressure).
    pub fn submit(&self, blob_type: BlobType, data: Vec<u8>) -> Result<PendingBlob> {
        let (reply, rx) = bounded(1);
        self.send(Job::Blob {
            blob_type,
            data,
            reply,
        })?;
        Ok(PendingBlob(rx))
    }

    /// Hand a job to the workers (blocking while they are saturated),
    /// unless the writer already failed or finished.
    fn send(&self, job: Job) -> Result<()> {
        if let Some(e) = self.failed() {
            return Err(e);
        }
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| RepoError::Invalid("blob writer already finished".into()))?;
        jobs.send(job)
            .map_err(|_| RepoError::Invalid("blob writer workers stopped".into()))
    }

    /// Queue consecutive small blocks of one source (about
    /// [`FRAME_TARGET`] bytes): each is its own blob, deduplicated on its
    /// own, and the new ones are compressed together as one frame, so they
    /// compress as well as the whole file would. In a format-1 repository
    /// (no frames) each new block is stored alone. Blocks by the caller.
    pub fn submit_frame(&self, blob_type: BlobType, blocks: Vec<Vec<u8>>) -> Result<PendingFrame> {
        self.frame_job(blob_type, blocks, false)
    }

    /// Queue unrelated small blobs (whole small files) to be stored as one
    /// frame: each is its own blob, deduplicated on its own, and the new
    /// ones are compressed together so that a note of 3 KiB gets the
    /// context of its neighbours instead of compressing alone. Encoded by
    /// [`Encoder::encode_mixed_into`]. Blocks by the caller.
    pub fn submit_mixed_frame(
        &self,
        blob_type: BlobType,
        blocks: Vec<Vec<u8>>,
    ) -> Result<PendingFrame> {
        self.frame_job(blob_type, blocks, true)
    }

    fn frame_job(
        &self,
        blob_type: BlobType,
        blocks: Vec<Vec<u8>>,
        mixed: bool,
    ) -> Result<PendingFrame> {
        let (reply, rx) = bounded(1);
        self.send(Job::Frame {
            blob_type,
            blocks,
            mixed,
            reply,
        })?;
        Ok(PendingFrame(rx))
    }

    /// Blobs the new snapshot takes over from its parent without storing
    /// them again (unchanged files): with Object Lock, their packs'
    /// retention is extended at [`BlobWriter::finish`]. Free otherwise.
    pub fn note_reused(&self, ids: &[Id]) {
        let s = &self.shared;
        if s.retention.is_none() {
            return;
        }
        let packs: Vec<Id> = ids
            .iter()
            .filter_map(|id| s.index.get(id))
            .map(|l| l.pack)
            .collect();
        s.reused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(packs);
    }

    /// Store one blob now, on the calling thread (used for trees, which are
    /// small and whose ids the caller needs immediately).
    pub fn save(&self, blob_type: BlobType, data: &[u8]) -> Result<Id> {
        if let Some(e) = self.failed() {
            return Err(e);
        }
        let s = &self.shared;
        let id = s.key.blob_id(data);
        if !s.claim(&id) {
            return Ok(id);
        }
        let mut enc = s.tree_encoder.lock().unwrap_or_else(|e| e.into_inner());
        if enc.is_none() {
            *enc = Some(Encoder::new(s.level)?);
        }
        if let Some(e) = enc.as_mut() {
            // Trees are small: encoded straight into the pack, under both locks.
            s.append(&s.tree_packer, true, |p| {
                p.add_with(blob_type, id, data.len(), |buf| e.encode_into(data, buf))
            });
        }
        s.count(blob_type, data.len());
        Ok(id)
    }

    /// Chunk a whole stream and store its chunks; returns the ordered blob ids
    /// and the number of bytes read. Used for single large streams such as
    /// database dumps.
    pub fn write_stream<R: std::io::Read>(
        &self,
        reader: R,
        params: ChunkerParams,
        gear: crate::chunker::Gear,
    ) -> Result<(Vec<Id>, u64, R)> {
        let mut chunker = StreamChunker::new(reader, gear, params);
        let mut pending = std::collections::VecDeque::new();
        let mut ids = Vec::new();
        let mut total = 0u64;
        loop {
            let chunk = chunker
                .next_chunk()
                .map_err(|e| RepoError::io("reading the stream to back up", e))?;
            let Some(chunk) = chunk else { break };
            total += chunk.len() as u64;
            pending.push_back(self.submit(BlobType::Data, chunk)?);
            // Keep the in-order result list short without stalling the workers.
            while pending.len() > 64 {
                if let Some(p) = pending.pop_front() {
                    ids.push(p.wait()?);
                }
            }
        }
        for p in pending {
            ids.push(p.wait()?);
        }
        Ok((ids, total, chunker.into_inner()))
    }

    fn failed(&self) -> Option<RepoError> {
        self.shared
            .error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .cloned()
    }

    /// Once no more blobs will come: encode what is queued, then seal the
    /// packs still being filled and send them (through the gate, if there
    /// is one), so that their uploads start now rather than when
    /// [`BlobWriter::finish`] is called (a backup seals as its walk ends,
    /// and finishes once its lease is validated). Submitting after this
    /// fails. Calling it again does nothing.
    pub fn seal(&mut self) {
        drop(self.jobs.take());
        for w in self.workers.drain(..) {
            if w.join().is_err() {
                self.shared
                    .fail(RepoError::Invalid("a pack worker thread panicked".into()));
            }
        }
        let s = self.shared.clone();
        s.flush(&s.data_packer, false);
        s.flush(&s.tree_packer, true);
    }

    /// Seal (see [`BlobWriter::seal`]), wait for uploads, write the index
    /// and add the new packs to the repository's in-memory index. Only
    /// after this returns `Ok` may a snapshot refer to the blobs.
    pub fn finish(mut self, repo: &Repository) -> Result<WriteStats> {
        self.seal();
        let s = self.shared.clone();
        let handles: Vec<_> =
            std::mem::take(&mut *s.uploads.lock().unwrap_or_else(|e| e.into_inner()));
        s.rt.block_on(async {
            for h in handles {
                if let Err(e) = h.await {
                    s.fail(RepoError::Invalid(format!("an upload task failed: {e}")));
                }
            }
        });
        if let Some(e) = self.failed() {
            return Err(e);
        }
        s.flush_index()?;
        s.extend_reused()?;
        // The packs went into the index as their index objects were
        // written. If the repository reloaded its index meanwhile, the new
        // one may predate some of them: give it this writer's blobs too.
        let current = repo.index();
        if !Arc::ptr_eq(&current, &s.index) {
            current.absorb_fresh(&s.index);
        }
        Ok(WriteStats {
            blobs_added: s.blobs_added.load(Ordering::Relaxed),
            data_added: s.data_added.load(Ordering::Relaxed),
            meta_added: s.meta_added.load(Ordering::Relaxed),
            stored_added: s.stored_added.load(Ordering::Relaxed),
            packs_added: s.packs_added.load(Ordering::Relaxed),
        })
    }

    /// Statistics so far (for progress display).
    pub fn stats(&self) -> WriteStats {
        WriteStats {
            blobs_added: self.shared.blobs_added.load(Ordering::Relaxed),
            data_added: self.shared.data_added.load(Ordering::Relaxed),
            meta_added: self.shared.meta_added.load(Ordering::Relaxed),
            stored_added: self.shared.stored_added.load(Ordering::Relaxed),
            packs_added: self.shared.packs_added.load(Ordering::Relaxed),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        drop(self.jobs.take());
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(s: Arc<Shared>, rx: Receiver<Job>) {
    let mut enc = match Encoder::new(s.level) {
        Ok(e) => e,
        Err(e) => {
            s.fail(e);
            return;
        }
    };
    let mut frame: Vec<u8> = Vec::new();
    // Encoded here, outside the pack's lock; only the copy into the pack
    // and its encryption (whose nonce is the offset) happen under it.
    let mut encoded: Vec<u8> = Vec::new();
    for job in rx {
        match job {
            Job::Blob {
                blob_type,
                data,
                reply,
            } => {
                let id = s.key.blob_id(&data);
                if s.claim(&id) {
                    s.store_blob(&mut enc, &mut encoded, blob_type, id, &data);
                }
                let _ = reply.send(Ok(id));
            }
            Job::Frame {
                blob_type,
                blocks,
                mixed,
                reply,
            } => {
                let ids: Vec<Id> = blocks.iter().map(|b| s.key.blob_id(b)).collect();
                // Claimed in block order, so a block repeated inside the
                // frame (zero pages) is stored once.
                let new: Vec<usize> = (0..blocks.len()).filter(|&i| s.claim(&ids[i])).collect();
                // Packs take frames exactly when the repository does
                // (`new_pack`).
                if new.len() == 1 || (!new.is_empty() && !s.frames) {
                    for &i in &new {
                        s.store_blob(&mut enc, &mut encoded, blob_type, ids[i], &blocks[i]);
                    }
                } else if !new.is_empty() {
                    frame.clear();
                    let list: Vec<(Id, usize)> = new
                        .iter()
                        .map(|&i| {
                            frame.extend_from_slice(&blocks[i]);
                            (ids[i], blocks[i].len())
                        })
                        .collect();
                    encoded.clear();
                    if mixed {
                        enc.encode_mixed_into(&frame, &mut encoded)
                    } else if s.lzma_frames {
                        enc.encode_frame_into(&frame, &mut encoded)
                    } else {
                        enc.encode_into(&frame, &mut encoded)
                    }
                    s.append(&s.data_packer, false, |p| {
                        p.add_frame(blob_type, &list, |buf| buf.extend_from_slice(&encoded))
                    });
                    for &i in &new {
                        s.count(blob_type, blocks[i].len());
                    }
                }
                let _ = reply.send(Ok(ids));
            }
        }
    }
}

impl Shared {
    /// Encode one new data blob outside the pack's lock (into `encoded`,
    /// a worker's own buffer), then append it to the data pack.
    fn store_blob(
        self: &Arc<Self>,
        enc: &mut Encoder,
        encoded: &mut Vec<u8>,
        blob_type: BlobType,
        id: Id,
        data: &[u8],
    ) {
        encoded.clear();
        enc.encode_into(data, encoded);
        self.append(&self.data_packer, false, |p| {
            p.add(blob_type, id, encoded, data.len())
        });
        self.count(blob_type, data.len());
    }

    /// Append to the pack being filled in `slot` (a new one if none is),
    /// and upload it once full. `metadata` marks the tree pack.
    fn append(
        self: &Arc<Self>,
        slot: &Mutex<Option<PackWriter>>,
        metadata: bool,
        add: impl FnOnce(&mut PackWriter),
    ) {
        let full = {
            let mut g = slot.lock().unwrap_or_else(|e| e.into_inner());
            let p = g.get_or_insert_with(|| self.new_pack());
            add(p);
            if p.len() >= self.pack_size {
                g.take()
            } else {
                None
            }
        };
        if let Some(p) = full {
            self.upload(p, metadata);
        }
    }

    /// Upload what the pack in `slot` holds, if anything.
    fn flush(self: &Arc<Self>, slot: &Mutex<Option<PackWriter>>, metadata: bool) {
        let left = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(p) = left.filter(|p| !p.is_empty()) {
            self.upload(p, metadata);
        }
    }

    /// True if this blob is new to the repository and this session: the
    /// caller must store it. Exactly one caller wins per id.
    fn claim(&self, id: &Id) -> bool {
        if self.retention.is_some() {
            if let Some(loc) = self.index.get(id) {
                self.reused
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(loc.pack);
                return false;
            }
        }
        !self.index.contains(id)
            && self
                .claimed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(*id)
    }

    /// A new pack, in a recycled buffer when one is free: a fresh 16 MiB
    /// buffer per pack costs 4096 page faults, most of a backup's kernel time.
    fn new_pack(&self) -> PackWriter {
        let buf = self
            .spare
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        let version = if self.frames {
            crate::pack::PACK_VERSION
        } else {
            crate::pack::PACK_VERSION_1
        };
        PackWriter::with_buffer(&self.key, self.pack_size, buf, version)
    }

    fn recycle(&self, buf: Vec<u8>) {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        // Enough for every worker's next pack; more would only hold memory.
        if spare.len() < 4 && buf.capacity() >= self.pack_size {
            spare.push(buf);
        }
    }

    fn count(&self, blob_type: BlobType, raw: usize) {
        self.blobs_added.fetch_add(1, Ordering::Relaxed);
        let bytes = match blob_type {
            BlobType::Data => &self.data_added,
            BlobType::Tree => &self.meta_added,
        };
        bytes.fetch_add(raw as u64, Ordering::Relaxed);
    }

    /// Options for an object written now.
    fn put_options(&self) -> PutOptions {
        crate::retention::put_options(self.retention.as_ref(), self.clock.now())
    }

    /// Extend the Object Lock retention of every pack this backup reused to
    /// cover a snapshot written now (plus the policy's margin, so that the
    /// next backups need not extend it again): one retention read per pack,
    /// and a write only where it falls short. Without this, a snapshot
    /// could outlive the retention of old packs it depends on.
    fn extend_reused(&self) -> Result<()> {
        let Some(policy) = self.retention else {
            return Ok(());
        };
        let packs: Vec<Id> =
            std::mem::take(&mut *self.reused.lock().unwrap_or_else(|e| e.into_inner()))
                .into_iter()
                .collect();
        if packs.is_empty() {
            return Ok(());
        }
        let now = self.clock.now();
        let backend = self.backend.clone();
        let sem = self.sem.clone();
        self.rt.block_on(async move {
            let mut tasks = tokio::task::JoinSet::new();
            for pack in packs {
                let (backend, sem) = (backend.clone(), sem.clone());
                tasks.spawn(async move {
                    let _permit = sem.acquire_owned().await;
                    let name = pack.to_hex();
                    let current = backend.retention(ObjectKind::Pack, &name).await?;
                    match policy.extension(current.map(|r| r.until), now) {
                        Some(r) => backend.extend_retention(ObjectKind::Pack, &name, r).await,
                        None => Ok(()),
                    }
                });
            }
            while let Some(done) = tasks.join_next().await {
                match done {
                    Ok(r) => r.map_err(|e| {
                        RepoError::Storage(e).context("extending the retention of a reused pack")
                    })?,
                    Err(e) => {
                        return Err(RepoError::Invalid(format!("a retention task failed: {e}")))
                    }
                }
            }
            Ok(())
        })
    }

    fn fail(&self, err: RepoError) {
        let mut e = self.error.lock().unwrap_or_else(|e| e.into_inner());
        if e.is_none() {
            *e = Some(err);
        }
    }

    /// Seal a pack and upload it in the background. Blocks while too many
    /// uploads are in flight. `metadata` marks packs of trees.
    fn upload(self: &Arc<Self>, p: PackWriter, metadata: bool) {
        let (bytes, info) = p.finish();
        self.stored_added
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.packs_added.fetch_add(1, Ordering::Relaxed);
        let permit = match self.rt.block_on(self.sem.clone().acquire_owned()) {
            Ok(p) => p,
            Err(_) => return self.fail(RepoError::Invalid("upload limiter closed".into())),
        };
        let s = self.clone();
        let h = self.rt.spawn(async move {
            if let Some(gate) = &s.gate {
                if let Err(e) = gate.passed().await {
                    drop(permit);
                    return s.fail(e);
                }
            }
            let name = info.id.to_hex();
            let opts = PutOptions {
                metadata,
                ..s.put_options()
            };
            let bytes = Bytes::from(bytes);
            let keep = bytes.clone();
            let r = s.backend.put(ObjectKind::Pack, &name, bytes, &opts).await;
            if metadata && r.is_ok() {
                if let Some(c) = &s.cache {
                    c.put(CacheKind::TreePack, &name, &keep);
                }
            }
            drop(permit);
            // The backend has let go of its handle: take the buffer back.
            if let Ok(buf) = keep.try_into_mut() {
                s.recycle(Vec::from(buf));
            }
            match r {
                // Same name means same bytes (names are content hashes).
                Ok(()) | Err(StorageError::AlreadyExists { .. }) => {
                    let batch = {
                        let mut u = s.unindexed.lock().unwrap_or_else(|e| e.into_inner());
                        u.push(info);
                        if u.len() >= INDEX_EVERY_PACKS {
                            std::mem::take(&mut *u)
                        } else {
                            Vec::new()
                        }
                    };
                    if !batch.is_empty() {
                        if let Err(e) = s.write_index_async(batch).await {
                            s.fail(e.context("writing an index object"));
                        }
                    }
                }
                Err(e) => s.fail(RepoError::Storage(e).context(format!("uploading pack {name}"))),
            }
        });
        self.uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(h);
    }

    async fn write_index_async(&self, batch: Vec<PackInfo>) -> Result<()> {
        let bytes = crate::object::seal_for(
            &self.key,
            self.format,
            crate::object::Binding::new(ObjectKind::Index, ""),
            &crate::index::encode(&batch),
        )?;
        let id = Id::of_stored(&bytes);
        if let Some(c) = &self.cache {
            c.put(CacheKind::Index, &id.to_hex(), &bytes);
        }
        self.backend
            .put(
                ObjectKind::Index,
                &id.to_hex(),
                Bytes::from(bytes),
                &self.put_options(),
            )
            .await?;
        self.indexed(&batch);
        Ok(())
    }

    /// The index object describing `batch` is stored: its blobs go into
    /// the index (where every later claim finds them), then leave the set
    /// of claimed ids. So the writer holds the ids of at most
    /// `INDEX_EVERY_PACKS` packs besides the index's table of new blobs,
    /// and no list of every pack written waits for `finish`.
    fn indexed(&self, batch: &[PackInfo]) {
        for p in batch {
            self.index.add_pack(p);
        }
        let mut claimed = self.claimed.lock().unwrap_or_else(|e| e.into_inner());
        for p in batch {
            for e in &p.entries {
                claimed.remove(&e.id);
            }
        }
        // Give back the memory of a large batch's ids.
        if claimed.capacity() > 4 * claimed.len() + 1024 {
            claimed.shrink_to_fit();
        }
    }

    fn flush_index(&self) -> Result<()> {
        let batch = std::mem::take(&mut *self.unindexed.lock().unwrap_or_else(|e| e.into_inner()));
        if batch.is_empty() {
            return Ok(());
        }
        write_index_object(
            self.backend.as_ref(),
            &self.rt,
            &self.key,
            &self.put_options(),
            self.format,
            &batch,
            self.cache.as_deref(),
        )?;
        self.indexed(&batch);
        Ok(())
    }
}
