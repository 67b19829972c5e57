//! Reads issued before they are needed, all at once.
//!
//! On a WAN link every request costs a round trip (25 ms and more), and
//! what an operation waits for is the chain of requests that depend on one
//! another, not their number. Opening a repository needs the config and
//! the key listing; a backup then lists `index/`, `snapshots/` and
//! `locks/`, a restore `index/` and `snapshots/`. None of these depends on
//! another or on the key, so [`first_reads`] issues them together (and the
//! S3 backend issues them together with its bucket checks): one round
//! trip where there were six.
//!
//! A listing read ahead is used once, by the first reader of that kind,
//! and only within [`MAX_AGE`] of being taken; every later reader lists
//! again. Using it is the same as having listed a moment earlier, which
//! no caller can tell from a slow request: what is safe depends on the
//! listings that must be *fresh*, and those are never taken from here:
//! taking a lease (shared or exclusive) drops whatever was read ahead, so
//! every listing after a lease is written is made after it (see `lease`
//! and `docs/format.md`, "Locks").

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use holdfast_storage::{Backend, ObjectKind, ObjectMeta, StorageError, StorageResult};

/// How long a listing read ahead may stand in for a fresh one.
pub const MAX_AGE: Duration = Duration::from_secs(10);

/// Which listings to read ahead while opening.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prefetch {
    pub index: bool,
    pub snapshots: bool,
    pub locks: bool,
    /// The erasure register (`erasures/`), which a restore applies again.
    pub erasures: bool,
}

impl Prefetch {
    /// What a backup reads first: the index, the snapshots (its parent),
    /// the leases (before writing its own).
    pub fn backup() -> Prefetch {
        Prefetch {
            index: true,
            snapshots: true,
            locks: true,
            erasures: false,
        }
    }

    /// What a restore reads first: the index, the snapshots and the
    /// erasure register (whose erasures it applies again).
    pub fn restore() -> Prefetch {
        Prefetch {
            index: true,
            snapshots: true,
            locks: false,
            erasures: true,
        }
    }
}

/// What opening a repository reads first: the config (or the staged one
/// of an unfinished migration: `true`), the key listing, and the listings
/// asked for. Errors are kept as they are, to be reported where the read
/// would have been made.
#[derive(Debug)]
pub struct FirstReads {
    pub(crate) config: StorageResult<(Bytes, bool)>,
    pub(crate) keys: StorageResult<Vec<ObjectMeta>>,
    pub(crate) listings: Listings,
    /// The key slot read ahead, by name (see [`first_reads_with_slot`]).
    pub(crate) slot: Option<(String, StorageResult<Bytes>)>,
}

/// Listings read ahead, with when they were taken.
#[derive(Debug, Default)]
pub(crate) struct Listings {
    taken: Option<Instant>,
    index: Option<Vec<ObjectMeta>>,
    snapshots: Option<Vec<ObjectMeta>>,
    locks: Option<Vec<ObjectMeta>>,
    erasures: Option<Vec<ObjectMeta>>,
}

impl Listings {
    /// The listing of `kind` read ahead, if any and recent; taken out (a
    /// second reader lists again).
    pub(crate) fn take(&mut self, kind: ObjectKind) -> Option<Vec<ObjectMeta>> {
        let fresh = self.taken.is_some_and(|t| t.elapsed() < MAX_AGE);
        let slot = match kind {
            ObjectKind::Index => &mut self.index,
            ObjectKind::Snapshot => &mut self.snapshots,
            ObjectKind::Lock => &mut self.locks,
            ObjectKind::Erasure => &mut self.erasures,
            _ => return None,
        };
        let got = slot.take();
        got.filter(|_| fresh)
    }
}

/// A listing read ahead by the holder (see [`Listings::take`]).
#[derive(Debug, Default)]
pub(crate) struct Ahead(Mutex<Listings>);

impl Ahead {
    pub(crate) fn new(l: Listings) -> Ahead {
        Ahead(Mutex::new(l))
    }

    pub(crate) fn take(&self, kind: ObjectKind) -> Option<Vec<ObjectMeta>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take(kind)
    }

    /// Forget every listing (see `Repository::forget_read_ahead`).
    pub(crate) fn clear(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Listings::default();
    }
}

impl FirstReads {
    /// The config bytes read (see [`crate::Repository::probe_reads`]).
    pub fn config(&self) -> &StorageResult<(Bytes, bool)> {
        &self.config
    }
}

/// Read the config and list the key slots and whatever `want` names, all
/// at once. Only reads: safe to run before anything is known about the
/// store (the S3 backend runs it beside its bucket checks).
pub async fn first_reads(backend: Arc<dyn Backend>, want: Prefetch) -> FirstReads {
    first_reads_with_slot(backend, want, None).await
}

/// [`first_reads`], and the key slot named `slot` read too: the slot
/// that opened the repository last time (the name kept with the KDF hint,
/// see `keys::KdfHint`), so that opening needs no second round trip to
/// read it. Only the listing says which slots exist: a slot read ahead
/// that is not listed (removed since) is never used, and one that is gone
/// is read as missing and ignored.
pub async fn first_reads_with_slot(
    backend: Arc<dyn Backend>,
    want: Prefetch,
    slot: Option<String>,
) -> FirstReads {
    let b = backend.as_ref();
    let slot_read = |name: Option<String>| async move {
        match name {
            Some(n) => {
                let got = b.get(ObjectKind::Key, &n, None).await;
                Some((n, got))
            }
            None => None,
        }
    };
    let listing = |on: bool, kind: ObjectKind| async move {
        match on {
            true => Some(b.list(kind).await),
            false => None,
        }
    };
    let (config, keys, slot, index, snapshots, locks, erasures) = tokio::join!(
        read_config(b),
        b.list(ObjectKind::Key),
        slot_read(slot),
        listing(want.index, ObjectKind::Index),
        listing(want.snapshots, ObjectKind::Snapshot),
        listing(want.locks, ObjectKind::Lock),
        listing(want.erasures, ObjectKind::Erasure),
    );
    // A listing that failed is simply not used: its reader lists again
    // and reports the error then.
    FirstReads {
        config,
        keys,
        listings: Listings {
            taken: Some(Instant::now()),
            index: index.and_then(Result::ok),
            snapshots: snapshots.and_then(Result::ok),
            locks: locks.and_then(Result::ok),
            erasures: erasures.and_then(Result::ok),
        },
        slot,
    }
}

/// The config object, or, when a migration stopped between removing it
/// and writing it again, the staged one (true). The staged config is
/// sealed and bound to the name `config` like the final one, so reading
/// it is no weaker.
pub(crate) async fn read_config(backend: &dyn Backend) -> Result<(Bytes, bool), StorageError> {
    match backend.get(ObjectKind::Config, "config", None).await {
        Err(StorageError::NotFound { .. }) => backend
            .get(ObjectKind::Config, crate::config::STAGED_CONFIG, None)
            .await
            .map(|b| (b, true)),
        other => other.map(|b| (b, false)),
    }
}

/// Read the objects `names` of `kind` all at once; results in the order
/// of `names`.
pub(crate) async fn get_many(
    backend: Arc<dyn Backend>,
    kind: ObjectKind,
    names: Vec<String>,
) -> Vec<StorageResult<Bytes>> {
    let location = backend.location();
    let mut out: Vec<Option<StorageResult<Bytes>>> = Vec::new();
    out.resize_with(names.len(), || None);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, name) in names.into_iter().enumerate() {
        let b = backend.clone();
        tasks.spawn(async move { (i, b.get(kind, &name, None).await) });
    }
    while let Some(done) = tasks.join_next().await {
        // A task that panicked leaves its slot empty: reported below.
        if let Ok((i, r)) = done {
            if let Some(slot) = out.get_mut(i) {
                *slot = Some(r);
            }
        }
    }
    out.into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(StorageError::Other {
                    backend: location.clone(),
                    detail: format!("a read in {} failed unexpectedly", kind.dir()),
                })
            })
        })
        .collect()
}
