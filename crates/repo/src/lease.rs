//! Repository leases: the lock objects in `locks/`.
//!
//! A lease says "process P on host H is doing operation O until time E".
//! Writers (file backups, PostgreSQL backups, `wal-push`) hold *shared*
//! leases and never wait for each other; the short phases of garbage
//! collection that delete data hold an *exclusive* lease, which only exists
//! while no other live lease does. Backups never wait for maintenance: GC
//! takes its exclusive lease only for the seconds its deleting phase needs,
//! so a shared acquirer that meets one waits at most that lease's remaining
//! time (see `docs/format.md`, "Locks").
//!
//! Storage is write-once, so a lease object is never updated: a refresh
//! writes a new object (a new random name, a later expiry) and then deletes
//! the old one; a listing may briefly show both, never neither. A holder
//! refreshes in a background thread every third of the lease duration and
//! deletes its object when dropped. A lease that was not refreshed in time
//! (crashed process, suspended laptop, lost network) is *stale*: ignored by
//! acquirers, removable by `holdfast unlock`, and fatal to its holder, which
//! refuses to commit (see [`Lease::check`]) because a GC may have run.
//!
//! Staleness is judged by the lease's own expiry and by the store's
//! modification time of the object (plus the lease's validity), so that a
//! holder whose clock runs behind is not judged stale early; a holder whose
//! clock runs ahead is believed for at most [`MAX_CLOCK_SKEW`] past what the
//! store's clock says.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use holdfast_storage::{Backend, ObjectKind, ObjectMeta, PutOptions, StorageError};
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;

use crate::crypto::MasterKey;
use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::object::{self, Binding};
use crate::repository::Repository;
use crate::writer::UploadGate;

/// Version of the lease record written inside lease objects.
pub const LEASE_VERSION: u32 = 1;

/// How far ahead of the store's clock a lease holder's clock is believed.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// The longest validity a lease may claim; longer claims are cut to this
/// (a damaged or hostile lease must not block GC for years).
pub const MAX_LEASE_DURATION: Duration = Duration::from_secs(24 * 3600);

/// How long an unreadable object in `locks/` counts as live after the
/// store wrote it: it may be a lease of a newer holdfast we cannot judge.
pub const UNREADABLE_LEASE_LIFE: Duration = Duration::from_secs(3600);

/// Shared: writers, any number at once. Exclusive: nobody else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseMode {
    Shared,
    Exclusive,
}

impl std::fmt::Display for LeaseMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LeaseMode::Shared => "shared",
            LeaseMode::Exclusive => "exclusive",
        })
    }
}

/// Durations of leases and how long acquirers wait; built by the caller
/// (the binary, a daemon's configuration, a test), never from the
/// environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseOptions {
    /// Validity of a shared lease; it is refreshed every third of it.
    pub shared_duration: Duration,
    /// Validity of an exclusive lease: short, since shared acquirers may
    /// wait for it (GC's exclusive phases take seconds).
    pub exclusive_duration: Duration,
    /// How long an exclusive acquirer keeps retrying while other leases
    /// are live before it gives up naming a holder.
    pub exclusive_wait: Duration,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        LeaseOptions {
            // restic refreshes every 5 minutes and calls 30 stale; we keep
            // the window shorter so a crashed writer blocks GC less long.
            shared_duration: Duration::from_secs(10 * 60),
            exclusive_duration: Duration::from_secs(2 * 60),
            exclusive_wait: Duration::from_secs(30),
        }
    }
}

impl LeaseOptions {
    fn duration(&self, mode: LeaseMode) -> Duration {
        match mode {
            LeaseMode::Shared => self.shared_duration,
            LeaseMode::Exclusive => self.exclusive_duration,
        }
        .clamp(Duration::from_millis(300), MAX_LEASE_DURATION)
    }
}

/// What a lease object holds (sealed with the repository key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub version: u32,
    /// Random id of the lease, the same across refreshes (object names
    /// change with every refresh).
    pub lease: String,
    pub host: String,
    pub pid: u32,
    pub user: String,
    /// What the holder does: `backup`, `backup-postgres`, `wal-push`, `gc`...
    pub operation: String,
    pub mode: LeaseMode,
    /// When the lease was first acquired.
    pub start: DateTime<Utc>,
    /// When this object was written (the holder's clock).
    pub refreshed: DateTime<Utc>,
    /// Until when the holder claims the lease (the holder's clock).
    pub expires: DateTime<Utc>,
}

impl LeaseRecord {
    /// Validity this record claims, bounded.
    fn validity(&self) -> chrono::Duration {
        let max = chrono::Duration::from_std(MAX_LEASE_DURATION).unwrap_or(chrono::Duration::MAX);
        (self.expires - self.refreshed).clamp(chrono::Duration::zero(), max)
    }
}

/// One object of `locks/` as seen by a listing.
#[derive(Debug, Clone)]
pub struct LeaseEntry {
    /// Object name in `locks/`.
    pub name: String,
    /// When the store wrote it, if the store says.
    pub modified: Option<DateTime<Utc>>,
    /// The record, or why it cannot be read.
    pub record: std::result::Result<LeaseRecord, String>,
}

impl LeaseEntry {
    /// Until when this lease counts as live: its own expiry, but judged
    /// against the store's clock too (see the module docs).
    pub fn deadline(&self) -> Option<DateTime<Utc>> {
        let skew = chrono::Duration::from_std(MAX_CLOCK_SKEW).unwrap_or(chrono::Duration::zero());
        match (&self.record, self.modified) {
            (Ok(r), None) => Some(r.expires),
            (Ok(r), Some(m)) => {
                let by_store = m + r.validity();
                Some(by_store.max(r.expires.min(by_store + skew)))
            }
            (Err(_), Some(m)) => chrono::Duration::from_std(UNREADABLE_LEASE_LIFE)
                .ok()
                .map(|d| m + d),
            // Unreadable and undated: nothing will ever refresh it.
            (Err(_), None) => None,
        }
    }

    /// Live at `now`: acquirers respect it, `unlock` keeps it.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.deadline().is_some_and(|d| now < d)
    }

    pub fn mode(&self) -> Option<LeaseMode> {
        self.record.as_ref().ok().map(|r| r.mode)
    }

    fn lease_id(&self) -> Option<&str> {
        self.record.as_ref().ok().map(|r| r.lease.as_str())
    }

    /// "backup (shared) by pid 123 on host, since ..., until ...", for errors.
    pub fn describe(&self) -> String {
        match &self.record {
            Ok(r) => format!(
                "{} ({}) by pid {} of {} on {}, since {}, until {}",
                r.operation,
                r.mode,
                r.pid,
                r.user,
                r.host,
                r.start.format("%Y-%m-%d %H:%M:%S UTC"),
                self.deadline()
                    .unwrap_or(r.expires)
                    .format("%Y-%m-%d %H:%M:%S UTC")
            ),
            Err(e) => format!("unreadable lock object locks/{} ({e})", self.name),
        }
    }
}

/// Read every object of `locks/`. Objects that vanish between list and
/// get (released meanwhile) are left out.
pub fn list_leases(
    backend: &Arc<dyn Backend>,
    rt: &Handle,
    key: &MasterKey,
    format: u32,
) -> Result<Vec<LeaseEntry>> {
    let metas = rt.block_on(backend.list(ObjectKind::Lock))?;
    read_leases(backend, rt, key, format, metas, None)
}

/// Read the listed lock objects `metas` (all at once: one round trip
/// however many there are), except the one named `skip` (our own, whose
/// record we know).
fn read_leases(
    backend: &Arc<dyn Backend>,
    rt: &Handle,
    key: &MasterKey,
    format: u32,
    metas: Vec<ObjectMeta>,
    skip: Option<&str>,
) -> Result<Vec<LeaseEntry>> {
    let metas: Vec<ObjectMeta> = metas
        .into_iter()
        .filter(|m| Some(m.name.as_str()) != skip)
        .collect();
    let names = metas.iter().map(|m| m.name.clone()).collect();
    let got = rt.block_on(crate::prefetch::get_many(
        backend.clone(),
        ObjectKind::Lock,
        names,
    ));
    let mut out = Vec::with_capacity(metas.len());
    for (m, got) in metas.into_iter().zip(got) {
        let bytes = match got {
            Ok(b) => b,
            Err(StorageError::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        let binding = Binding::new(ObjectKind::Lock, &m.name);
        let record = object::open_json_bound::<LeaseRecord>(key, format, binding, &bytes)
            .map_err(|e| e.to_string())
            .and_then(|r| {
                if r.version > LEASE_VERSION {
                    Err(format!(
                        "lease format version {} is newer than this holdfast's",
                        r.version
                    ))
                } else {
                    Ok(r)
                }
            });
        out.push(LeaseEntry {
            name: m.name,
            modified: m.modified,
            record,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// What `unlock` removed and kept.
#[derive(Debug, Clone, Default)]
pub struct Unlocked {
    pub removed: Vec<LeaseEntry>,
    pub kept: Vec<LeaseEntry>,
}

/// Remove stale leases (all leases with `force`). A lease that vanished
/// meanwhile (its holder released it) counts as neither.
pub fn remove_leases(
    backend: &Arc<dyn Backend>,
    rt: &Handle,
    key: &MasterKey,
    format: u32,
    force: bool,
) -> Result<Unlocked> {
    let now = Utc::now();
    let mut out = Unlocked::default();
    for e in list_leases(backend, rt, key, format)? {
        if force || !e.is_live(now) {
            match rt.block_on(backend.delete(ObjectKind::Lock, &e.name)) {
                Ok(()) => out.removed.push(e),
                Err(StorageError::NotFound { .. }) => {}
                Err(err) => return Err(err.into()),
            }
        } else {
            out.kept.push(e);
        }
    }
    Ok(out)
}

/// Who is asking for a lease, and for what.
#[derive(Debug, Clone)]
pub struct LeaseRequest {
    pub operation: String,
    pub mode: LeaseMode,
    pub host: String,
    pub user: String,
    pub pid: u32,
}

impl LeaseRequest {
    /// A request from this process.
    pub fn here(operation: &str, mode: LeaseMode) -> LeaseRequest {
        LeaseRequest {
            operation: operation.to_string(),
            mode,
            host: crate::hostname(),
            user: crate::username(),
            pid: std::process::id(),
        }
    }
}

/// Everything the holder and its refresh thread share.
struct LeaseState {
    backend: Arc<dyn Backend>,
    rt: Handle,
    key: MasterKey,
    /// Repository format: decides the envelope (see `object::seal_for`).
    format: u32,
    duration: Duration,
    current: Mutex<Current>,
}

struct Current {
    record: LeaseRecord,
    /// Object name of the newest written record.
    name: String,
    /// Why the lease is no longer valid, once it is not.
    lost: Option<String>,
    /// Old objects whose delete failed; retried at the next refresh.
    leftovers: Vec<String>,
}

struct LeaseCore {
    state: Arc<LeaseState>,
    stop: Mutex<Option<Sender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Where a drop leaves its release to finish (see [`Releases`]);
    /// `None`: a drop waits for the delete itself.
    releases: Option<Arc<Releases>>,
}

/// Lease releases under way: the refresh threads of dropped leases,
/// deleting their objects. A writer drops its lease as soon as it has
/// committed, and what it does next (its audit entry) need not wait for
/// the delete: the two requests travel together, one round trip instead
/// of two. Holding a lease a moment longer than needed is harmless (a GC
/// waits or retries). [`Releases::settle`] waits for them all; the
/// repository settles before anything that lists `locks/` or takes a
/// lease, and when it is dropped, so that a process never exits with its
/// delete unsent.
#[derive(Default)]
pub(crate) struct Releases(Mutex<Vec<JoinHandle<()>>>);

impl Releases {
    fn push(&self, t: JoinHandle<()>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(t);
    }

    /// Wait until every release handed over has finished.
    pub(crate) fn settle(&self) {
        let pending = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        for t in pending {
            let _ = t.join();
        }
    }
}

/// A held lease. Clones share it; the last one dropped stops the refresh
/// thread and deletes the lease object.
#[derive(Clone)]
pub struct Lease(Arc<LeaseCore>);

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = self.0.state.lock();
        f.debug_struct("Lease")
            .field("name", &c.name)
            .field("operation", &c.record.operation)
            .field("mode", &c.record.mode)
            .finish()
    }
}

impl LeaseState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self, record: &LeaseRecord) -> Result<String> {
        let name = hex::encode(rand::random::<[u8; 16]>());
        let binding = Binding::new(ObjectKind::Lock, &name);
        let bytes = object::seal_json_for(&self.key, self.format, binding, record)?;
        self.rt.block_on(self.backend.put(
            ObjectKind::Lock,
            &name,
            Bytes::from(bytes),
            // Leases are deleted within minutes: never under Object Lock.
            &PutOptions::default(),
        ))?;
        Ok(name)
    }

    /// Remove one of our lock objects, present or not (one request).
    fn delete(&self, name: &str) -> Result<()> {
        Ok(self
            .rt
            .block_on(self.backend.remove(ObjectKind::Lock, name))?)
    }

    /// Write a record with a later expiry, then delete the previous one.
    fn refresh(&self) {
        let now = Utc::now();
        let (mut record, old, leftovers) = {
            let mut c = self.lock();
            if c.lost.is_some() {
                return;
            }
            if now >= c.record.expires {
                // Too late: a GC may have judged us stale meanwhile, so
                // renewing now would hide that; the holder must not commit.
                let expired = c.record.expires.format("%Y-%m-%d %H:%M:%S UTC");
                c.lost = Some(format!(
                    "it expired at {expired} before it could be refreshed (process suspended, or storage unreachable)"
                ));
                return;
            }
            (c.record.clone(), c.name.clone(), c.leftovers.clone())
        };
        record.refreshed = now;
        record.expires = now + to_chrono(self.duration);
        // A failed write is retried at the next tick; the lease stays
        // valid until its expiry, and a refresh past it marks it lost.
        if let Ok(name) = self.write(&record) {
            // Our previous object gone means someone removed the lease
            // (`unlock --force`): the operator judged us dead, and a GC
            // may now run, so we must not carry on as if we held it.
            let mut failed = Vec::new();
            let removed = match self
                .rt
                .block_on(self.backend.delete(ObjectKind::Lock, &old))
            {
                Ok(()) => false,
                Err(StorageError::NotFound { .. }) => true,
                Err(_) => {
                    failed.push(old.clone());
                    false
                }
            };
            for old in leftovers {
                if self.delete(&old).is_err() {
                    failed.push(old);
                }
            }
            if removed {
                let _ = self.delete(&name);
                let mut c = self.lock();
                c.leftovers = failed;
                c.lost = Some(format!(
                    "its lock object locks/{old} was removed by someone else (`holdfast unlock --force`?)"
                ));
                return;
            }
            let mut c = self.lock();
            c.record = record;
            c.name = name;
            c.leftovers = failed;
        }
    }

    fn release(&self) -> Result<()> {
        let (name, leftovers) = {
            let c = self.lock();
            (c.name.clone(), c.leftovers.clone())
        };
        let mut first = Ok(());
        for n in std::iter::once(name).chain(leftovers) {
            if let Err(e) = self.delete(&n) {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Poll interval while waiting for other leases to go away.
const POLL: Duration = Duration::from_millis(250);

/// Acquire a lease following the protocol of `docs/format.md` ("Locks").
pub fn acquire(
    backend: Arc<dyn Backend>,
    rt: Handle,
    key: MasterKey,
    format: u32,
    req: &LeaseRequest,
    opts: &LeaseOptions,
) -> Result<Lease> {
    acquire_after(backend, rt, key, format, req, opts, Taking::default())
}

/// How a lease is taken, beyond what it asks for.
#[derive(Default)]
pub(crate) struct Taking {
    /// A listing of `locks/` taken a moment ago (see [`acquire_after`]).
    pub listed: Option<Vec<ObjectMeta>>,
    /// Where a drop leaves its release to finish (see [`Releases`]).
    pub releases: Option<Arc<Releases>>,
}

/// [`acquire`], with `how.listed`, a listing of `locks/` taken a moment
/// ago (while the repository was being opened), in place of the first
/// listing. That first listing only spares a write when an exclusive lease
/// is already there; what makes the protocol safe is the listing after our
/// write, which is always fresh.
pub(crate) fn acquire_after(
    backend: Arc<dyn Backend>,
    rt: Handle,
    key: MasterKey,
    format: u32,
    req: &LeaseRequest,
    opts: &LeaseOptions,
    how: Taking,
) -> Result<Lease> {
    let Taking { listed, releases } = how;
    let location = backend.location();
    let state = Arc::new(LeaseState {
        backend,
        rt,
        key,
        format,
        duration: opts.duration(req.mode),
        current: Mutex::new(Current {
            record: LeaseRecord {
                version: LEASE_VERSION,
                lease: hex::encode(rand::random::<[u8; 16]>()),
                host: req.host.clone(),
                pid: req.pid,
                user: req.user.clone(),
                operation: req.operation.clone(),
                mode: req.mode,
                start: Utc::now(),
                refreshed: Utc::now(),
                expires: Utc::now(),
            },
            name: String::new(),
            lost: None,
            leftovers: Vec::new(),
        }),
    });
    match req.mode {
        LeaseMode::Shared => acquire_shared(&state, &location, listed)?,
        LeaseMode::Exclusive => acquire_exclusive(&state, &location, opts.exclusive_wait)?,
    }
    let (tx, rx) = mpsc::channel::<()>();
    let every = state.duration / 3;
    let st = state.clone();
    let thread = std::thread::Builder::new()
        .name("holdfast-lease".into())
        .spawn(move || {
            // A message or a dropped sender both mean: stop.
            while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                st.refresh();
            }
            let _ = st.release();
        })
        .map_err(|e| RepoError::io("starting the lease refresh thread", e))?;
    Ok(Lease(Arc::new(LeaseCore {
        state,
        stop: Mutex::new(Some(tx)),
        thread: Mutex::new(Some(thread)),
        releases,
    })))
}

/// Write our record with a fresh expiry; returns the object name.
fn write_fresh(state: &LeaseState) -> Result<String> {
    let record = {
        let mut c = state.lock();
        let now = Utc::now();
        c.record.refreshed = now;
        c.record.expires = now + to_chrono(state.duration);
        c.record.clone()
    };
    let name = state.write(&record)?;
    state.lock().name = name.clone();
    Ok(name)
}

/// Live leases of other holders, by the given filter, from a fresh
/// listing of `locks/` or from `listed`. Our own object (if written) is
/// not read: we know what it says.
fn others(
    state: &LeaseState,
    own: &str,
    listed: Option<Vec<ObjectMeta>>,
    f: impl Fn(&LeaseEntry) -> bool,
) -> Result<Vec<LeaseEntry>> {
    let metas = match listed {
        Some(m) => m,
        None => state.rt.block_on(state.backend.list(ObjectKind::Lock))?,
    };
    let written = state.lock().name.clone();
    let skip = (!written.is_empty()).then_some(written.as_str());
    let now = Utc::now();
    Ok(read_leases(
        &state.backend,
        &state.rt,
        &state.key,
        state.format,
        metas,
        skip,
    )?
    .into_iter()
    .filter(|e| e.lease_id() != Some(own) && e.is_live(now) && f(e))
    .collect())
}

/// Shared: never waits for another shared lease; waits for a live
/// exclusive one at most until the deadline of the first one it met.
/// `listed` stands in for the first listing (see [`acquire_after`]).
fn acquire_shared(
    state: &LeaseState,
    location: &str,
    mut listed: Option<Vec<ObjectMeta>>,
) -> Result<()> {
    let own = state.lock().record.lease.clone();
    let blocks = |e: &LeaseEntry| e.mode() == Some(LeaseMode::Exclusive);
    let mut limit: Option<(DateTime<Utc>, String)> = None;
    let mut written: Option<String> = None;
    loop {
        let ex = others(state, &own, listed.take(), blocks)?;
        if ex.is_empty() {
            match &written {
                // Written and still alone with shared ones: held.
                Some(_) => return Ok(()),
                None => {
                    written = Some(write_fresh(state)?);
                    // Re-list: an exclusive acquirer may have written its
                    // lease between our listing and our write.
                    continue;
                }
            }
        }
        // An exclusive lease is live: get out of its way.
        if let Some(name) = written.take() {
            state.delete(&name)?;
            state.lock().name.clear();
        }
        let first = &ex[0];
        let (deadline, holder) = limit
            .get_or_insert_with(|| (first.deadline().unwrap_or_else(Utc::now), first.describe()));
        if Utc::now() > *deadline {
            return Err(RepoError::RepositoryLocked {
                location: location.to_string(),
                detail: format!(
                    "an exclusive lease is still live after waiting for its expiry: {}; exclusive leases are meant for seconds, so its holder may be stuck (see `holdfast locks`)",
                    holder
                ),
            });
        }
        std::thread::sleep(POLL);
    }
}

/// Exclusive: write, list, and back off if anyone else is live; retry
/// until `wait` has passed, then fail naming a holder.
fn acquire_exclusive(state: &LeaseState, location: &str, wait: Duration) -> Result<()> {
    let own = state.lock().record.lease.clone();
    let give_up = Utc::now() + to_chrono(wait);
    let mut pause = Duration::from_millis(100);
    loop {
        let mut blocking = others(state, &own, None, |_| true)?;
        if blocking.is_empty() {
            let name = write_fresh(state)?;
            blocking = others(state, &own, None, |_| true)?;
            if blocking.is_empty() {
                return Ok(());
            }
            state.delete(&name)?;
            state.lock().name.clear();
        }
        if Utc::now() + to_chrono(pause) > give_up {
            let n = blocking.len();
            return Err(RepoError::RepositoryLocked {
                location: location.to_string(),
                detail: format!(
                    "{n} other lease(s) are live, e.g. {}; retry when it ends, or if its process is gone wait for the lease to expire (`holdfast locks`, `holdfast unlock`)",
                    blocking[0].describe()
                ),
            });
        }
        // Jitter: two exclusive acquirers that met must not meet again.
        let jitter = Duration::from_millis(rand::random::<u64>() % 100);
        std::thread::sleep(pause + jitter);
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

impl Lease {
    /// Ok while the lease is held and unexpired; an error saying why not
    /// otherwise. Writers call it before committing (a snapshot, a WAL
    /// manifest): after a lapse a GC may have deleted data they reuse.
    pub fn check(&self) -> Result<()> {
        let c = self.0.state.lock();
        let why = match &c.lost {
            Some(why) => Some(why.clone()),
            None if Utc::now() >= c.record.expires => Some(format!(
                "it expired at {} without being refreshed",
                c.record.expires.format("%Y-%m-%d %H:%M:%S UTC")
            )),
            None => None,
        };
        match why {
            None => Ok(()),
            Some(why) => Err(RepoError::LeaseLost {
                operation: c.record.operation.clone(),
                detail: why,
            }),
        }
    }

    /// [`Lease::check`], and also that the lease object is still stored
    /// (one `head`): how a writer about to commit learns that someone
    /// removed its lease (`unlock --force`) since the last refresh.
    pub fn confirm(&self) -> Result<()> {
        self.start_confirm().finish()
    }

    /// Start [`Lease::confirm`]'s `head` now and finish it later (see
    /// [`Confirmation::finish`]): a writer overlaps it with its last
    /// uploads instead of paying a round trip of its own before it commits.
    pub fn start_confirm(&self) -> Confirmation {
        let st = &self.0.state;
        let name = st.lock().name.clone();
        let (backend, n) = (st.backend.clone(), name.clone());
        let task = st
            .rt
            .spawn(async move { backend.head(ObjectKind::Lock, &n).await.map(|_| ()) });
        Confirmation {
            lease: self.clone(),
            name,
            task,
        }
    }
    /// The record as last written.
    pub fn record(&self) -> LeaseRecord {
        self.0.state.lock().record.clone()
    }

    /// Name of the current lease object in `locks/`.
    pub fn object_name(&self) -> String {
        self.0.state.lock().name.clone()
    }

    /// Refresh now instead of waiting for the background thread.
    pub fn refresh_now(&self) -> Result<()> {
        self.0.state.refresh();
        self.check()
    }

    /// Release now, reporting a failure to delete the lease object (drop
    /// releases too, silently). Other clones of this lease stop holding it.
    pub fn release(self) -> Result<()> {
        self.0.stop_thread();
        self.0.state.release()
    }
}

/// A [`Lease::confirm`] under way: its `head` was sent when it started.
pub struct Confirmation {
    lease: Lease,
    /// The lease object the `head` asks about.
    name: String,
    task: tokio::task::JoinHandle<std::result::Result<(), StorageError>>,
}

impl std::fmt::Debug for Confirmation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Confirmation")
            .field("name", &self.name)
            .finish()
    }
}

impl Confirmation {
    /// Wait for the `head` and judge the lease as [`Lease::confirm`] does:
    /// lost if its object was gone when asked (unless a refresh replaced
    /// it meanwhile, which found the old one present or would have marked
    /// the lease lost), or if it lapsed since.
    pub fn finish(self) -> Result<()> {
        self.lease.check()?;
        let st = &self.lease.0.state;
        let got = st.rt.block_on(self.task).map_err(|e| {
            RepoError::Invalid(format!(
                "confirming the lease locks/{} failed: {e}",
                self.name
            ))
        })?;
        match got {
            Ok(()) => {}
            Err(StorageError::NotFound { .. }) if st.lock().name != self.name => {
                // Refreshed meanwhile: the refresh judged the old object.
            }
            Err(StorageError::NotFound { .. }) => {
                let mut c = st.lock();
                let why = format!(
                    "its lock object locks/{} was removed by someone else (`holdfast unlock --force`?)",
                    self.name
                );
                c.lost = Some(why.clone());
                return Err(RepoError::LeaseLost {
                    operation: c.record.operation.clone(),
                    detail: why,
                });
            }
            Err(e) => return Err(e.into()),
        }
        self.lease.check()
    }
}

impl LeaseCore {
    fn stop_thread(&self) {
        drop(self.stop.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Drop for LeaseCore {
    fn drop(&mut self) {
        // The thread deletes the lease object as it stops: told to stop
        // here, waited for here or by whoever settles the releases.
        match &self.releases {
            // Handed over only while the repository is there to settle.
            Some(r) if Arc::strong_count(r) > 1 => {
                drop(self.stop.lock().unwrap_or_else(|e| e.into_inner()).take());
                if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    r.push(t);
                }
            }
            _ => self.stop_thread(),
        }
    }
}

/// What a writer that walked before its lease learns once it holds it
/// ([`Repository::writer_lease_validating`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseCheck {
    /// Whether the parent snapshot asked about still exists (`None`: none
    /// was asked about).
    pub parent_exists: Option<bool>,
    /// No index object the in-memory index was loaded from has gone (no
    /// GC sweep ran since it was loaded).
    pub index_current: bool,
}

impl LeaseCheck {
    /// The writer's decisions stand: nothing it deduplicated against can
    /// have been swept, and the parent it reused (if `used_parent`) is
    /// still a root.
    pub fn holds(&self, used_parent: bool) -> bool {
        self.index_current && (!used_parent || self.parent_exists == Some(true))
    }
}

/// What [`Repository::writer_lease_validating`] hands back.
pub struct ValidatedLease {
    pub lease: Lease,
    pub check: LeaseCheck,
    /// The lease's confirmation, already under way when the writer had
    /// decided everything before its lease was held.
    pub confirmation: Option<Confirmation>,
}

/// The shared lease of this process's writers, while one is held: writers
/// of one process (a daemon running several jobs) share one lease.
#[derive(Default)]
pub(crate) struct WriterSlot(
    Mutex<std::sync::Weak<LeaseCore>>,
    /// Held while a writer lease is being taken, so that writers starting
    /// together (a daemon's jobs, a backup's lease thread beside another
    /// backup) take one lease between them, not one each.
    Mutex<()>,
);

impl Repository {
    /// Use these durations for the leases this session takes.
    pub fn set_lease_options(&self, opts: LeaseOptions) {
        *self.lease_opts.write().unwrap_or_else(|e| e.into_inner()) = opts;
    }

    pub fn lease_options(&self) -> LeaseOptions {
        *self.lease_opts.read().unwrap_or_else(|e| e.into_inner())
    }

    /// A shared lease for a writer (`operation` names it in `holdfast
    /// locks`): the one this process already holds, or a new one. Hold it
    /// until the snapshot (or WAL manifest) is written; [`Repository::save_snapshot`]
    /// refuses to commit if it lapsed. If the in-memory index was loaded
    /// before the lease and an index object it was built from is gone
    /// since (a GC sweep ran in between), the index is reloaded, so that no
    /// blob of a deleted pack is ever deduplicated against.
    pub fn writer_lease(&self, operation: &str) -> Result<Lease> {
        Ok(self.writer_lease_checking(operation, None)?.0)
    }

    /// [`Repository::writer_lease`], and whether snapshot `parent` still
    /// exists, asked in the same round trip as the listing of `index/`
    /// that follows the lease: both must follow it, neither waits for the
    /// other. A writer reuses its parent's data only if the parent is
    /// still there once its lease is held (a purge and a GC may have
    /// removed it since it was chosen). `None` when no parent was asked
    /// about.
    pub fn writer_lease_checking(
        &self,
        operation: &str,
        parent: Option<&Id>,
    ) -> Result<(Lease, Option<bool>)> {
        let lease = self.take_writer_lease(operation)?;
        // Only now, not beside the listing of `locks/` that follows the
        // lease's write: a GC whose exclusive phase began before our write
        // and ended between a concurrent listing of `index/` and that
        // listing of `locks/` would have swept unseen by both.
        let exists = self.reload_index_if_swept(parent)?;
        Ok((lease, exists))
    }

    /// For a writer that began deciding what to deduplicate against
    /// before its lease (see `docs/format.md`, "Garbage collection": a
    /// backup walks while its lease is being taken): take the lease, then
    /// say whether those decisions still hold. Unlike
    /// [`Repository::writer_lease_checking`], nothing is reloaded, since
    /// the writer's threads are still using the index: when
    /// [`LeaseCheck::holds`] is false, the writer throws its work away and
    /// runs again under the lease it now holds (which reloads).
    /// Meant to run on a thread of its own beside the writer.
    ///
    /// `gate` holds the writer's uploads back; it is opened as soon as the
    /// lease is held, before the check. From then until the lease ends no
    /// sweep can run (an exclusive acquirer would see the lease; one that
    /// began before it was seen by the listing that made it held), so
    /// what is stored stays stored. Only the writer's commit (its last
    /// index object, its snapshot) depends on the check, and comes after
    /// it. When the check fails, what was stored meanwhile is a killed
    /// writer's leftovers: packs of new blobs that GC removes unless a
    /// snapshot comes to use them.
    ///
    /// `decided` is set by the writer once it has decided everything (its
    /// walk is over). If it already is when the lease is held, the lease's
    /// confirmation ([`Lease::start_confirm`]) is sent beside the check
    /// and handed back, so that a writer with nothing left to upload (an
    /// unchanged backup) does not wait a round trip of its own for it
    /// before it commits. That `head` is as late as the writer's own would
    /// be: it follows every moment the writer could have stalled while
    /// deciding, and the uploads, index and commit still to come are what
    /// the writer's own confirmation overlaps too ([`Confirmation::finish`]
    /// checks the lease's expiry again when the writer commits).
    pub fn writer_lease_validating(
        &self,
        operation: &str,
        parent: Option<&Id>,
        gate: &UploadGate,
        decided: &AtomicBool,
    ) -> Result<ValidatedLease> {
        let lease = self.take_writer_lease(operation)?;
        gate.open();
        let confirmation = decided
            .load(Ordering::Acquire)
            .then(|| lease.start_confirm());
        // After, not beside, the lease's last listing of `locks/` (see
        // `writer_lease_checking`).
        let seen = self.sweep_check(parent)?;
        Ok(ValidatedLease {
            lease,
            check: LeaseCheck {
                parent_exists: seen.parent_exists,
                index_current: seen.swept.is_none(),
            },
            confirmation,
        })
    }

    /// The shared lease of this process's writers: the one held, if still
    /// good, or a new one.
    fn take_writer_lease(&self, operation: &str) -> Result<Lease> {
        let _taking = self.writer_slot.1.lock().unwrap_or_else(|e| e.into_inner());
        let held = {
            let slot = self.writer_slot.0.lock().unwrap_or_else(|e| e.into_inner());
            slot.upgrade().map(Lease)
        };
        // What was read ahead was read before the lease: after it, only
        // fresh listings count (see `prefetch`).
        let listed = self.locks_listed_ahead();
        self.forget_read_ahead();
        let lease = match held {
            Some(l) if l.check().is_ok() => l,
            _ => {
                // Our own earlier lease, if still being deleted, is gone
                // before the new one is written and `locks/` listed.
                self.releases.settle();
                let l = acquire_after(
                    self.backend().clone(),
                    self.runtime().clone(),
                    self.key().clone(),
                    self.format_version(),
                    &LeaseRequest::here(operation, LeaseMode::Shared),
                    &self.lease_options(),
                    Taking {
                        listed,
                        releases: Some(self.releases.clone()),
                    },
                )?;
                *self.writer_slot.0.lock().unwrap_or_else(|e| e.into_inner()) =
                    Arc::downgrade(&l.0);
                l
            }
        };
        Ok(lease)
    }

    /// An exclusive lease for the deleting phases of GC (see
    /// `docs/format.md`): acquired only while no other live lease exists,
    /// retried for [`LeaseOptions::exclusive_wait`], else an error naming a
    /// holder. Keep it for seconds: shared acquirers wait for it.
    pub fn acquire_exclusive(&self, operation: &str) -> Result<Lease> {
        self.forget_read_ahead();
        // This process's own writer lease, just dropped, must not count
        // as another holder.
        self.releases.settle();
        acquire_after(
            self.backend().clone(),
            self.runtime().clone(),
            self.key().clone(),
            self.format_version(),
            &LeaseRequest::here(operation, LeaseMode::Exclusive),
            &self.lease_options(),
            Taking {
                listed: None,
                releases: Some(self.releases.clone()),
            },
        )
    }

    /// Wait until the leases this repository's writers dropped are
    /// deleted (see [`Releases`]). Listing `locks/` and taking a lease do
    /// this first, and so does dropping the repository.
    pub fn settle_releases(&self) {
        self.releases.settle();
    }

    /// Every object of `locks/`, readable or not.
    pub fn leases(&self) -> Result<Vec<LeaseEntry>> {
        self.releases.settle();
        list_leases(
            self.backend(),
            self.runtime(),
            self.key(),
            self.format_version(),
        )
    }

    /// Remove stale leases, or every lease with `force`.
    pub fn unlock(&self, force: bool) -> Result<Unlocked> {
        self.releases.settle();
        remove_leases(
            self.backend(),
            self.runtime(),
            self.key(),
            self.format_version(),
            force,
        )
    }

    /// Err if this process's writer lease lapsed or was removed (see
    /// [`Lease::confirm`]).
    pub(crate) fn check_writer_lease(&self) -> Result<()> {
        match self.start_writer_confirm() {
            Some(c) => c.finish(),
            None => Ok(()),
        }
    }

    /// Start confirming this process's writer lease (see
    /// [`Lease::start_confirm`]); `None` when no writer lease is held.
    /// Give it to [`Repository::save_snapshot_with`].
    pub fn start_writer_confirm(&self) -> Option<Confirmation> {
        let slot = self.writer_slot.0.lock().unwrap_or_else(|e| e.into_inner());
        slot.upgrade().map(|c| Lease(c).start_confirm())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(refreshed: i64, valid: i64, modified: Option<i64>) -> LeaseEntry {
        let t0 = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let s = chrono::Duration::seconds;
        LeaseEntry {
            name: "ab".into(),
            modified: modified.map(|m| t0 + s(m)),
            record: Ok(LeaseRecord {
                version: LEASE_VERSION,
                lease: "x".into(),
                host: "h".into(),
                pid: 1,
                user: "u".into(),
                operation: "backup".into(),
                mode: LeaseMode::Shared,
                start: t0 + s(refreshed),
                refreshed: t0 + s(refreshed),
                expires: t0 + s(refreshed + valid),
            }),
        }
    }

    #[test]
    fn staleness_uses_the_store_clock_too() {
        let t0 = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let at = |x: i64| t0 + chrono::Duration::seconds(x);
        // Clocks agree: live until the expiry.
        let e = entry(0, 600, Some(0));
        assert!(e.is_live(at(599)) && !e.is_live(at(601)));
        // The holder's clock is an hour behind: judged by the store's time.
        let e = entry(-3600, 600, Some(0));
        assert!(e.is_live(at(599)) && !e.is_live(at(601)));
        // An hour ahead: believed for at most MAX_CLOCK_SKEW past the store.
        let e = entry(3600, 600, Some(0));
        let skew = MAX_CLOCK_SKEW.as_secs() as i64;
        assert!(e.is_live(at(600 + skew - 1)) && !e.is_live(at(600 + skew + 1)));
        // No store time: the record alone.
        let e = entry(0, 600, None);
        assert!(e.is_live(at(599)) && !e.is_live(at(601)));
        // A claimed validity of years is cut to MAX_LEASE_DURATION.
        let e = entry(0, 10 * 365 * 86400, Some(0));
        let max = MAX_LEASE_DURATION.as_secs() as i64;
        assert!(!e.is_live(at(max + skew + 1)));
    }
}
