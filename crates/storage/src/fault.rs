//! A fault-injecting backend decorator, for tests of crash safety and error
//! handling that are deterministic rather than timed.
//!
//! [`FaultyBackend`] wraps any backend and, following a [`FaultPlan`],
//! makes a chosen operation fail with a chosen error class, or "crashes"
//! there: from that operation on, every operation fails, as if the process
//! had died, so what is left in the inner backend is exactly what a crash
//! at that point leaves. A crash can happen before the operation takes
//! effect (`Crash`) or right after (`CrashAfter`: the put is durable, its
//! caller never learns it). Rules count matching operations, so "the third
//! pack put" or "the first index put" (after a pack, before its index)
//! name one point in a run.
//!
//! Every `Backend` method is forwarded, the optional ones too, so the
//! decorator is transparent when no rule fires.
//!
//! It also measures what decides an operation's wall time on a WAN link:
//! the *round* of each request, one more than the highest round among the
//! requests that had completed when it started. Requests issued together
//! share a round; one issued after another returned is in a later round;
//! the highest round is the number of round trips the operation waited on
//! one after another (its critical path). With [`FaultyBackend::with_latency`]
//! every request is delayed, as on a WAN, so that requests issued together
//! are all under way before any returns, and rounds do not depend on how
//! fast the inner backend happens to be.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use crate::{
    ArchiveState, Backend, Capabilities, ClassChange, ClassedObject, ErrorClass, ObjectKind,
    ObjectMeta, PutOptions, Retention, StorageError, StorageResult,
};

/// An operation of the [`Backend`] trait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Put,
    Get,
    Head,
    List,
    Delete,
    /// [`Backend::set_storage_class`].
    SetClass,
}

/// What happens at the operation a rule names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The operation fails with an error of this class; later ones run.
    Fail(ErrorClass),
    /// The process "dies" before the operation takes effect.
    Crash,
    /// The operation takes effect, then the process "dies".
    CrashAfter,
}

/// One rule: the `nth` (1-based) operation `op` on objects of `kind` (any
/// kind when `None`) triggers `action`.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub op: Op,
    pub kind: Option<ObjectKind>,
    pub nth: u64,
    pub action: Action,
}

impl Rule {
    pub fn new(op: Op, kind: Option<ObjectKind>, nth: u64, action: Action) -> Rule {
        Rule {
            op,
            kind,
            nth,
            action,
        }
    }
}

/// The rules of one run.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    pub rules: Vec<Rule>,
}

impl FaultPlan {
    pub fn rule(mut self, rule: Rule) -> FaultPlan {
        self.rules.push(rule);
        self
    }
}

/// What the decorator saw: every operation in order, and whether it crashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub op: Op,
    pub kind: ObjectKind,
    pub name: String,
    /// Its round (see the module docs): 1 for the first requests.
    pub round: u64,
}

/// The decorator. See the module docs.
#[derive(Debug)]
pub struct FaultyBackend {
    inner: Arc<dyn Backend>,
    plan: FaultPlan,
    /// Per rule: matching operations so far.
    counts: Mutex<Vec<u64>>,
    crashed: AtomicBool,
    seen: Mutex<Vec<Seen>>,
    /// Delay added to every operation (see [`FaultyBackend::with_latency`]).
    latency: std::time::Duration,
    /// The highest round among completed operations.
    done_round: AtomicU64,
}

impl FaultyBackend {
    pub fn new(inner: Arc<dyn Backend>, plan: FaultPlan) -> FaultyBackend {
        let n = plan.rules.len();
        FaultyBackend {
            inner,
            plan,
            counts: Mutex::new(vec![0; n]),
            crashed: AtomicBool::new(false),
            seen: Mutex::new(Vec::new()),
            latency: std::time::Duration::ZERO,
            done_round: AtomicU64::new(0),
        }
    }

    /// Delay every operation by `latency` before it runs (a WAN round
    /// trip), so that rounds are measured as they would be on one.
    pub fn with_latency(mut self, latency: std::time::Duration) -> FaultyBackend {
        self.latency = latency;
        self
    }

    /// The highest round so far: how many round trips the operations so
    /// far waited on one after another.
    pub fn rounds(&self) -> u64 {
        self.done_round.load(Ordering::SeqCst)
    }

    /// Start counting rounds afresh (with [`FaultyBackend::take_seen`],
    /// to measure one phase of a run).
    pub fn reset_rounds(&self) {
        self.done_round.store(0, Ordering::SeqCst);
    }

    /// Whether a crash rule has fired.
    pub fn crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }

    /// Every operation attempted, in order (also those refused after a crash).
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Every operation attempted since the last call (or since creation),
    /// in order; the record starts afresh. With an empty plan this makes
    /// the decorator a request counter for tests.
    pub fn take_seen(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// How many operations `op` on `kind` were attempted.
    pub fn count(&self, op: Op, kind: ObjectKind) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.op == op && s.kind == kind)
            .count()
    }

    fn dead(&self, kind: ObjectKind, name: &str) -> StorageError {
        StorageError::Other {
            backend: self.inner.location(),
            detail: format!(
                "simulated crash: the process died before {}",
                kind.key(name)
            ),
        }
    }

    /// The action for this operation, if a rule fires; a crash with
    /// `Crash` is recorded here.
    fn before(&self, op: Op, kind: ObjectKind, name: &str) -> StorageResult<Option<Action>> {
        let round = self.done_round.load(Ordering::SeqCst) + 1;
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Seen {
                op,
                kind,
                name: name.to_string(),
                round,
            });
        if self.crashed() {
            return Err(self.dead(kind, name));
        }
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mut fired = None;
        for (i, r) in self.plan.rules.iter().enumerate() {
            if r.op != op || r.kind.is_some_and(|k| k != kind) {
                continue;
            }
            counts[i] += 1;
            if counts[i] == r.nth && fired.is_none() {
                fired = Some(r.action);
            }
        }
        drop(counts);
        match fired {
            Some(Action::Crash) => {
                self.crashed.store(true, Ordering::SeqCst);
                Err(self.dead(kind, name))
            }
            Some(Action::Fail(class)) => Err(self.failure(class, kind, name)),
            other => Ok(other),
        }
    }

    /// The round of an operation that just started (see [`Seen::round`]),
    /// after the added latency.
    async fn pace(&self) -> u64 {
        let round = self.done_round.load(Ordering::SeqCst) + 1;
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        round
    }

    /// After the operation ran: a `CrashAfter` hides its result.
    fn after<T>(
        &self,
        action: Option<Action>,
        r: StorageResult<T>,
        kind: ObjectKind,
        name: &str,
        round: u64,
    ) -> StorageResult<T> {
        self.done_round.fetch_max(round, Ordering::SeqCst);
        if action == Some(Action::CrashAfter) {
            self.crashed.store(true, Ordering::SeqCst);
            return Err(self.dead(kind, name));
        }
        r
    }

    fn failure(&self, class: ErrorClass, kind: ObjectKind, name: &str) -> StorageError {
        let backend = self.inner.location();
        let key = kind.key(name);
        let detail = "injected fault".to_string();
        match class {
            ErrorClass::NotFound => StorageError::NotFound { backend, key },
            ErrorClass::AlreadyExists => StorageError::AlreadyExists { backend, key },
            ErrorClass::NoSpace => StorageError::NoSpace { backend, key },
            ErrorClass::Transient => StorageError::Transient {
                backend,
                key,
                detail,
            },
            ErrorClass::Locked => StorageError::Locked { key },
            ErrorClass::Archived => StorageError::Archived { key },
            ErrorClass::PermissionDenied => StorageError::PermissionDenied {
                backend,
                key,
                detail,
            },
            ErrorClass::Unsupported => StorageError::Unsupported {
                operation: "injected",
                backend,
                key,
            },
            ErrorClass::Other => StorageError::Other { backend, detail },
        }
    }
}

#[async_trait]
impl Backend for FaultyBackend {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn put(
        &self,
        kind: ObjectKind,
        name: &str,
        data: Bytes,
        opts: &PutOptions,
    ) -> StorageResult<()> {
        let a = self.before(Op::Put, kind, name)?;
        let round = self.pace().await;
        let r = self.inner.put(kind, name, data, opts).await;
        self.after(a, r, kind, name, round)
    }

    async fn get(
        &self,
        kind: ObjectKind,
        name: &str,
        range: Option<Range<u64>>,
    ) -> StorageResult<Bytes> {
        let a = self.before(Op::Get, kind, name)?;
        let round = self.pace().await;
        let r = self.inner.get(kind, name, range).await;
        self.after(a, r, kind, name, round)
    }

    async fn head(&self, kind: ObjectKind, name: &str) -> StorageResult<ObjectMeta> {
        let a = self.before(Op::Head, kind, name)?;
        let round = self.pace().await;
        let r = self.inner.head(kind, name).await;
        self.after(a, r, kind, name, round)
    }

    async fn list(&self, kind: ObjectKind) -> StorageResult<Vec<ObjectMeta>> {
        let a = self.before(Op::List, kind, "")?;
        let round = self.pace().await;
        let r = self.inner.list(kind).await;
        self.after(a, r, kind, "", round)
    }

    async fn delete(&self, kind: ObjectKind, name: &str) -> StorageResult<()> {
        let a = self.before(Op::Delete, kind, name)?;
        let round = self.pace().await;
        let r = self.inner.delete(kind, name).await;
        self.after(a, r, kind, name, round)
    }

    async fn remove(&self, kind: ObjectKind, name: &str) -> StorageResult<()> {
        let a = self.before(Op::Delete, kind, name)?;
        let round = self.pace().await;
        let r = self.inner.remove(kind, name).await;
        self.after(a, r, kind, name, round)
    }

    async fn set_storage_class(
        &self,
        kind: ObjectKind,
        name: &str,
        class: &str,
    ) -> StorageResult<ClassChange> {
        let a = self.before(Op::SetClass, kind, name)?;
        let round = self.pace().await;
        let r = self.inner.set_storage_class(kind, name, class).await;
        self.after(a, r, kind, name, round)
    }

    async fn list_classes(&self, kind: ObjectKind) -> StorageResult<Vec<ClassedObject>> {
        let a = self.before(Op::List, kind, "")?;
        let round = self.pace().await;
        let r = self.inner.list_classes(kind).await;
        self.after(a, r, kind, "", round)
    }

    async fn extend_retention(
        &self,
        kind: ObjectKind,
        name: &str,
        retention: Retention,
    ) -> StorageResult<()> {
        if self.crashed() {
            return Err(self.dead(kind, name));
        }
        self.inner.extend_retention(kind, name, retention).await
    }

    async fn retention(&self, kind: ObjectKind, name: &str) -> StorageResult<Option<Retention>> {
        if self.crashed() {
            return Err(self.dead(kind, name));
        }
        self.inner.retention(kind, name).await
    }

    async fn set_legal_hold(&self, kind: ObjectKind, name: &str, on: bool) -> StorageResult<()> {
        if self.crashed() {
            return Err(self.dead(kind, name));
        }
        self.inner.set_legal_hold(kind, name, on).await
    }

    async fn legal_hold(&self, kind: ObjectKind, name: &str) -> StorageResult<bool> {
        if self.crashed() {
            return Err(self.dead(kind, name));
        }
        self.inner.legal_hold(kind, name).await
    }

    async fn archive_state(&self, kind: ObjectKind, name: &str) -> StorageResult<ArchiveState> {
        if self.crashed() {
            return Err(self.dead(kind, name));
        }
        self.inner.archive_state(kind, name).await
    }

    async fn restore_archived(&self, kind: ObjectKind, name: &str, days: u32) -> StorageResult<()> {
        if self.crashed() {
            return Err(self.dead(kind, name));
        }
        self.inner.restore_archived(kind, name, days).await
    }
}
