//! An open repository: backend, master key, config and the loaded index.
//!
//! The API is synchronous; storage I/O runs on a tokio runtime whose handle
//! the caller passes in (the CLI owns one runtime for the process). This
//! keeps CPU-bound pipelines in plain threads and lets any backend, local or
//! remote, be driven the same way. Never call these methods from inside an
//! async task: they block.

use std::future::Future;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use holdfast_storage::{Backend, ObjectKind, ObjectMeta, PutOptions, StorageError, StorageResult};
use tokio::runtime::Handle;

use crate::cache::{Cache, CacheKind};
use crate::chunker::Gear;
use crate::compress;
use crate::config::{self, RepoConfig};
use crate::crypto::MasterKey;
use crate::error::SlotCounts;
use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::index::{self, BlobLocation, Index};
use crate::keys::{
    self, KdfHint, KdfParams, KeySlot, Prederived, Secret, SlotOutcome, KEY_FILE_LEN,
};
use crate::lease::{LeaseOptions, WriterSlot};
use crate::object::{self, Binding};
use crate::pack::{BlobType, PackInfo};
use crate::prefetch::{first_reads, read_config, Ahead, FirstReads, Prefetch};
use crate::retention::{self, Clock, RetentionPolicy, SystemClock};
use crate::snapshot::{Snapshot, SnapshotEntry, SnapshotFilter};
use crate::tree::Tree;

/// An object that could not be read: (name, reason).
pub type Unreadable = (String, String);

/// Index objects that could not be read when the index was loaded.
#[derive(Debug, Clone, Default)]
pub struct IndexProblems {
    pub corrupt: Vec<(String, String)>,
}

pub struct Repository {
    backend: Arc<dyn Backend>,
    rt: Handle,
    key: MasterKey,
    key_slot: String,
    config: RepoConfig,
    /// The repository's format version (config header): decides which
    /// objects writers may create (format 1: no frames, version-1 packs).
    format_version: u32,
    index: RwLock<Arc<Index>>,
    index_problems: RwLock<IndexProblems>,
    /// The local cache, if the caller gave one (see `use_cache`).
    cache: RwLock<Option<Arc<Cache>>>,
    /// Object Lock retention of every write, if configured (computed at
    /// each write from `clock`, never once per open).
    retention: Option<RetentionPolicy>,
    clock: RwLock<Arc<dyn Clock>>,
    /// Whole packs of trees, by pack id (see `cached_tree_pack`).
    tree_packs: std::sync::Mutex<std::collections::HashMap<Id, Bytes>>,
    /// What opening found and worked around (skipped or damaged key
    /// slots, an unfinished migration), for the caller to show.
    warnings: Vec<String>,
    /// Durations of the leases this session takes (see `lease`).
    pub(crate) lease_opts: RwLock<LeaseOptions>,
    /// The shared lease this process's writers hold, while any does.
    pub(crate) writer_slot: WriterSlot,
    /// Leases dropped and still being deleted (see `lease::Releases`).
    pub(crate) releases: Arc<crate::lease::Releases>,
    /// Names of the index objects the in-memory index was loaded from.
    index_names: std::sync::Mutex<Option<Vec<String>>>,
    /// Listings read while opening, for their first readers (see
    /// [`crate::prefetch`]).
    ahead: Ahead,
    /// What a password's KDF needs from the slot that opened, to derive
    /// ahead next time (see [`KdfHint`]); `None` for a key file.
    kdf_hint: Option<KdfHint>,
    /// The audit trail's actor, witness and known head (see `audit`).
    pub(crate) audit: crate::audit::State,
}

/// What [`Repository::sweep_check`] found.
pub(crate) struct SweepCheck {
    /// Whether the snapshot asked about exists (`None`: none was asked).
    pub parent_exists: Option<bool>,
    /// The fresh listing of `index/`, when an object the in-memory index
    /// was loaded from is missing from it (a GC sweep ran).
    pub swept: Option<Vec<ObjectMeta>>,
}

impl Drop for Repository {
    fn drop(&mut self) {
        // No delete of a dropped lease may be left unsent when the process
        // exits (see `lease::Releases`).
        self.releases.settle();
    }
}

/// The key slots of a repository: (id, slot) of the readable ones, oldest
/// first, and (id, why) of those that cannot be read.
#[derive(Debug, Clone, Default)]
pub struct KeySlots {
    pub readable: Vec<(String, KeySlot)>,
    pub damaged: Vec<(String, String)>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("location", &self.backend.location())
            .finish()
    }
}

impl Repository {
    /// Create a new repository in an empty store, in the newest format.
    pub fn init(
        backend: Arc<dyn Backend>,
        rt: Handle,
        password: &[u8],
        kdf: KdfParams,
        config: RepoConfig,
    ) -> Result<Repository> {
        Repository::init_format(backend, rt, password, kdf, config, config::FORMAT_VERSION)
    }

    /// Create a new repository of an older `format` (1 to
    /// [`config::FORMAT_VERSION`]): what older holdfast builds wrote, for
    /// compatibility tests and `migrate`'s.
    pub fn init_format(
        backend: Arc<dyn Backend>,
        rt: Handle,
        password: &[u8],
        kdf: KdfParams,
        config: RepoConfig,
        format: u32,
    ) -> Result<Repository> {
        if !(1..=config::FORMAT_VERSION).contains(&format) {
            return Err(RepoError::Invalid(format!(
                "cannot create a format-{format} repository (1 to {} are known)",
                config::FORMAT_VERSION
            )));
        }
        let location = backend.location();
        match rt.block_on(backend.head(ObjectKind::Config, "config")) {
            Ok(_) => return Err(RepoError::AlreadyInitialized { location }),
            Err(StorageError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        config.chunker.validate().map_err(RepoError::Invalid)?;
        let key = MasterKey::generate();
        let slot = KeySlot::create(&key, password, kdf, "initial")?;
        let slot_bytes =
            serde_json::to_vec_pretty(&slot).map_err(|e| RepoError::Invalid(e.to_string()))?;
        let slot_name = Id::of_stored(&slot_bytes).to_hex();
        let policy = RetentionPolicy::of(&config);
        let put_opts = retention::put_options(policy.as_ref(), chrono::Utc::now());
        // Key first, config last: a crash in between leaves no config, so
        // the store is still "not a repository" and init can be rerun.
        rt.block_on(backend.put(
            ObjectKind::Key,
            &slot_name,
            Bytes::from(slot_bytes),
            &put_opts,
        ))?;
        let cfg_bytes = config::encode(&key, &config, format)?;
        rt.block_on(backend.put(
            ObjectKind::Config,
            "config",
            Bytes::from(cfg_bytes),
            &put_opts,
        ))?;
        Ok(Repository {
            backend,
            rt,
            key,
            key_slot: slot_name,
            config,
            format_version: format,
            index: RwLock::new(Arc::new(Index::new())),
            index_problems: RwLock::new(IndexProblems::default()),
            cache: RwLock::new(None),
            retention: policy,
            clock: RwLock::new(Arc::new(SystemClock)),
            tree_packs: Default::default(),
            warnings: Vec::new(),
            lease_opts: Default::default(),
            writer_slot: Default::default(),
            releases: Default::default(),
            index_names: Default::default(),
            ahead: Default::default(),
            kdf_hint: None,
            audit: Default::default(),
        })
    }

    /// Read the format version without any key (fails clearly on a store
    /// that is not a repository, or a newer format).
    pub fn probe(backend: &dyn Backend, rt: &Handle) -> Result<u32> {
        let got = rt.block_on(read_config(backend));
        Repository::probe_config(&got, &backend.location())
    }

    /// [`Repository::probe`] of a config already read (see
    /// [`crate::prefetch::first_reads`]): no request.
    pub fn probe_reads(first: &FirstReads, location: &str) -> Result<u32> {
        Repository::probe_config(first.config(), location)
    }

    fn probe_config(
        got: &std::result::Result<(Bytes, bool), StorageError>,
        location: &str,
    ) -> Result<u32> {
        let not_a_repository = |reason: &str| RepoError::NotARepository {
            location: location.to_string(),
            reason: reason.to_string(),
        };
        let bytes = match got {
            Ok((b, _)) => b,
            Err(StorageError::NotFound { .. }) => {
                return Err(not_a_repository("it has no config object"))
            }
            Err(StorageError::Io { cause, .. }) if cause.raw_os_error() == Some(libc::ENOTDIR) => {
                return Err(not_a_repository(
                    "it is a file, or inside one, not a directory",
                ))
            }
            Err(StorageError::Io { cause, .. }) if cause.raw_os_error() == Some(libc::EISDIR) => {
                return Err(not_a_repository("its config is a directory"))
            }
            Err(e) => return Err(e.clone().into()),
        };
        // Another program's `config` (restic has one) is not damage to a
        // Holdfast repository; a Holdfast config with a bad body is.
        if !bytes.starts_with(config::CONFIG_MAGIC) {
            return Err(not_a_repository(
                "its config object is not a Holdfast config: another program's data?",
            ));
        }
        config::read_version(bytes, location)
    }

    /// Open an existing repository with a password. Does not load the index
    /// (see [`Repository::load_index`]).
    pub fn open(backend: Arc<dyn Backend>, rt: Handle, password: &[u8]) -> Result<Repository> {
        Repository::open_with(backend, rt, &Secret::Password(password))
    }

    /// Open an existing repository with a password or a key-file key. Only
    /// slots of the secret's kind are tried, so a key file never pays for
    /// argon2. Does not load the index (see [`Repository::load_index`]).
    pub fn open_with(
        backend: Arc<dyn Backend>,
        rt: Handle,
        secret: &Secret<'_>,
    ) -> Result<Repository> {
        // The config and the key slot listing at once (one round trip).
        let first = rt.block_on(first_reads(backend.clone(), Prefetch::default()));
        Repository::open_from(backend, rt, secret, first, || None)
    }

    /// [`Repository::open_with`] from reads already made (see
    /// [`crate::prefetch::first_reads`]: the config, the key listing, and
    /// listings kept for their first readers), with `pre`, which gives a
    /// key-encryption key derived ahead for a slot (see [`KdfHint`]), used
    /// if it fits. `pre` is called once the slots are read (the KDF it
    /// waits for runs meanwhile). The slots are read all at once.
    pub fn open_from(
        backend: Arc<dyn Backend>,
        rt: Handle,
        secret: &Secret<'_>,
        first: FirstReads,
        pre: impl FnOnce() -> Option<Prederived>,
    ) -> Result<Repository> {
        let location = backend.location();
        let FirstReads {
            config: cfg_got,
            keys: slots,
            listings,
            slot: slot_ahead,
        } = first;
        let (cfg_bytes, staged) = match cfg_got {
            Ok(b) => b,
            Err(StorageError::NotFound { .. }) => {
                return Err(RepoError::NotARepository {
                    location,
                    reason: "it has no config object".into(),
                })
            }
            Err(e) => return Err(e.into()),
        };
        let format_version = config::read_version(&cfg_bytes, &location)?;
        let slots = slots?;
        let mut counts = SlotCounts::default();
        let mut damaged: Vec<(String, String)> = Vec::new();
        let mut warnings: Vec<String> = Vec::new();
        if staged {
            warnings.push(format!(
                "{location}: a `holdfast migrate` stopped before it replaced `config` (read from `{}`); run `holdfast migrate` again to finish",
                config::STAGED_CONFIG
            ));
        }
        // The slot that opened: its name, the key and the config.
        let mut opened: Option<(String, MasterKey, RepoConfig, Option<KdfHint>)> = None;
        // Every slot small enough to be one, read at once; the one read
        // ahead with the listing (see `first_reads_with_slot`) is used
        // if the listing names it and it was read whole.
        let small = |name: &str| {
            slots
                .iter()
                .any(|m| m.name == name && m.size <= keys::MAX_SLOT_BYTES)
        };
        let ahead: Option<(String, StorageResult<Bytes>)> = slot_ahead.filter(|(n, got)| {
            small(n) && matches!(got, Ok(b) if b.len() as u64 <= keys::MAX_SLOT_BYTES)
        });
        let wanted: Vec<String> = slots
            .iter()
            .filter(|m| m.size <= keys::MAX_SLOT_BYTES)
            .filter(|m| ahead.as_ref().is_none_or(|(n, _)| *n != m.name))
            .map(|m| m.name.clone())
            .collect();
        let fetched_now = match wanted.is_empty() {
            true => Vec::new(),
            false => rt.block_on(crate::prefetch::get_many(
                backend.clone(),
                ObjectKind::Key,
                wanted.clone(),
            )),
        };
        let mut fetched: std::collections::HashMap<String, StorageResult<Bytes>> =
            wanted.into_iter().zip(fetched_now).chain(ahead).collect();
        let pre = pre();
        for meta in &slots {
            let slot_key = ObjectKind::Key.key(&meta.name);
            // Damage and refusals are reported and the next slot tried: no
            // one slot may lock out the others.
            let mut problem = |damage: bool, detail: String| {
                if damage {
                    counts.damaged += 1;
                    warnings.push(format!("key slot {slot_key} is damaged: {detail}"));
                    damaged.push((slot_key.clone(), detail));
                } else {
                    counts.skipped += 1;
                    warnings.push(format!("key slot {slot_key} skipped: {detail}"));
                }
            };
            if meta.size > keys::MAX_SLOT_BYTES {
                problem(true, format!("{} bytes, not a key slot", meta.size));
                continue;
            }
            let bytes = match fetched.remove(&meta.name) {
                Some(got) => got?,
                None => rt.block_on(backend.get(ObjectKind::Key, &meta.name, None))?,
            };
            let slot = match keys::parse_slot(&meta.name, &bytes) {
                Ok(s) => s,
                Err(detail) => {
                    problem(true, detail);
                    continue;
                }
            };
            if opened.is_some() {
                // Already open: the other slots are only looked at (no
                // KDF runs), so that every damaged one is reported.
                match slot.inspect() {
                    Some(SlotOutcome::Damaged(d)) => problem(true, d),
                    Some(SlotOutcome::Skipped(d)) => problem(false, d),
                    _ => {}
                }
                continue;
            }
            let key = match slot.try_open_prederived(secret, pre.as_ref()) {
                SlotOutcome::Opened(k) => k,
                SlotOutcome::OtherKind => continue,
                SlotOutcome::Wrong => {
                    counts.wrong += 1;
                    continue;
                }
                SlotOutcome::Damaged(d) => {
                    problem(true, d);
                    continue;
                }
                SlotOutcome::Skipped(d) => {
                    problem(false, d);
                    continue;
                }
            };
            let config = match config::decode(&key, &cfg_bytes, &location) {
                Ok(c) => c,
                Err(e) => {
                    // The slot opens with this secret but holds another
                    // master key: left by an `init` that died before
                    // writing its config, or copied from another
                    // repository. It must not hide the right slot.
                    problem(
                        true,
                        format!("it opens with this {} but its key does not decrypt the config ({e}); it may be left by an init that crashed, or copied from another repository", secret.describe()),
                    );
                    continue;
                }
            };
            let hint = KdfHint::of(&meta.name, &slot);
            opened = Some((meta.name.clone(), key, config, hint));
        }
        if let Some((key_slot, key, config, kdf_hint)) = opened {
            let policy = RetentionPolicy::of(&config);
            return Ok(Repository {
                backend,
                rt,
                key,
                key_slot,
                config,
                format_version,
                index: RwLock::new(Arc::new(Index::new())),
                index_problems: RwLock::new(IndexProblems::default()),
                cache: RwLock::new(None),
                retention: policy,
                clock: RwLock::new(Arc::new(SystemClock)),
                tree_packs: Default::default(),
                warnings,
                lease_opts: Default::default(),
                writer_slot: Default::default(),
                releases: Default::default(),
                index_names: Default::default(),
                ahead: Ahead::new(listings),
                kdf_hint,
                audit: Default::default(),
            });
        }
        if let Some((slot, detail)) = damaged.into_iter().next() {
            return Err(RepoError::DamagedKeySlot {
                location,
                slot,
                detail,
                others: slots.len().saturating_sub(1),
                secret: secret.describe(),
                counts,
            });
        }
        Err(RepoError::WrongPassword {
            location,
            slots: slots.len(),
            secret: secret.describe(),
            counts,
        })
    }

    /// What opening found and worked around: key slots skipped as damaged
    /// or refused, an unfinished migration. The library never prints; the
    /// caller shows these.
    pub fn open_warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The KDF hint of the password slot this session opened with (see
    /// [`KdfHint`]), for the caller to keep for the next open.
    pub fn kdf_hint(&self) -> Option<&KdfHint> {
        self.kdf_hint.as_ref()
    }

    /// Every object of `kind`: the listing read while opening if there is
    /// one for this kind (once, and only if recent: see
    /// [`crate::prefetch`]), else a fresh one. Never for a listing that
    /// must follow a write (a lease's).
    pub(crate) fn list_ahead(&self, kind: ObjectKind) -> Result<Vec<ObjectMeta>> {
        match self.ahead.take(kind) {
            Some(l) => Ok(l),
            None => Ok(self.block_on(self.backend.list(kind))?),
        }
    }

    /// The `locks/` listing read while opening, if recent (see
    /// [`crate::lease::acquire_after`]).
    pub(crate) fn locks_listed_ahead(&self) -> Option<Vec<ObjectMeta>> {
        self.ahead.take(ObjectKind::Lock)
    }

    /// Drop every listing read ahead: once a lease is taken, a listing
    /// from before it must not stand in for one after it.
    pub(crate) fn forget_read_ahead(&self) {
        self.ahead.clear();
    }

    /// Seal `payload` as object `b` in this repository's envelope version.
    pub fn seal_object(&self, b: Binding<'_>, payload: &[u8]) -> Result<Vec<u8>> {
        object::seal_for(&self.key, self.format_version, b, payload)
    }

    /// Open stored object `b`, refusing it unless it is what its name says
    /// (see [`object::open_bound`]).
    pub fn open_object(&self, b: Binding<'_>, bytes: &[u8]) -> Result<Vec<u8>> {
        object::open_bound(&self.key, self.format_version, b, bytes)
    }

    /// [`Repository::open_object`] of a JSON object.
    pub fn open_json_object<T: serde::de::DeserializeOwned>(
        &self,
        b: Binding<'_>,
        bytes: &[u8],
    ) -> Result<T> {
        object::open_json_bound(&self.key, self.format_version, b, bytes)
    }

    /// The storage under this repository. Crate-private: other crates go
    /// through the repository's typed API, so every object they read is
    /// verified and every object they write is sealed and bound.
    pub(crate) fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// An identity of this repository readable without its key: the
    /// BLAKE3 of its stored config (see `holdfast_postgres::wal`'s spool).
    pub fn config_fingerprint(&self) -> Result<String> {
        let bytes = self.block_on(self.backend.get(ObjectKind::Config, "config", None))?;
        Ok(blake3::hash(&bytes).to_hex().to_string())
    }

    /// What the storage backend can do (parallelism, retention, ...).
    pub fn capabilities(&self) -> holdfast_storage::Capabilities {
        self.backend.capabilities()
    }

    pub fn location(&self) -> String {
        self.backend.location()
    }

    pub fn key(&self) -> &MasterKey {
        &self.key
    }

    /// The repository's format version (see `config`).
    pub fn format_version(&self) -> u32 {
        self.format_version
    }

    /// True if writers may store frames (format 2 and later).
    pub fn takes_frames(&self) -> bool {
        self.format_version >= 2
    }

    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    pub(crate) fn runtime(&self) -> &Handle {
        &self.rt
    }

    /// Options for an object written now (Object Lock retention from this
    /// moment, if configured): computed per write, so a repository kept
    /// open for weeks never writes an object retained for less than
    /// configured.
    pub fn put_options(&self) -> PutOptions {
        retention::put_options(self.retention.as_ref(), self.now())
    }

    /// The repository's Object Lock policy, if any.
    pub fn retention_policy(&self) -> Option<RetentionPolicy> {
        self.retention
    }

    /// The time retention is computed from.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.read().unwrap_or_else(|e| e.into_inner()).now()
    }

    /// The clock retention is computed from (tests move time with it).
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replace the clock (for tests: time that moves without sleeping).
    pub fn set_clock(&self, clock: Arc<dyn Clock>) {
        *self.clock.write().unwrap_or_else(|e| e.into_inner()) = clock;
    }

    pub fn gear(&self) -> Gear {
        Gear::from_key(self.key.chunker_key())
    }

    pub(crate) fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The id of the key slot this session opened with.
    pub fn current_key(&self) -> &str {
        &self.key_slot
    }

    // ---- index ------------------------------------------------------------

    /// Load the index (see [`crate::index::load`]): from the local cache's
    /// runs and copies when [`Repository::use_cache`] gave one, fetching
    /// only index objects it lacks. Unreadable objects are recorded in
    /// [`Repository::index_problems`] rather than failing the load: the data
    /// they describe is still in the packs, and `repair index` can rebuild them.
    pub fn load_index(&self) -> Result<()> {
        self.load_index_with(false).map(|_| ())
    }

    /// [`Repository::load_index`] unless this session already loaded it:
    /// for an operation that needs an index, called by a caller that may
    /// have loaded it already (one listing instead of two).
    pub fn ensure_index(&self) -> Result<()> {
        let loaded = self
            .index_names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        if loaded {
            return Ok(());
        }
        self.load_index()
    }

    /// Like [`Repository::load_index`], and also return every pack every
    /// readable index object describes, as written: the index keeps one
    /// location per blob, so a pack whose blobs are all also in another
    /// pack (two concurrent backups storing the same data) is in this list
    /// but unreachable through [`Index::get`]. `check` needs it.
    pub fn load_index_packs(&self) -> Result<Vec<PackInfo>> {
        self.load_index_with(true).map(|l| l.packs)
    }

    fn load_index_with(&self, want_packs: bool) -> Result<crate::index::load::Loaded> {
        let ahead = self.ahead.take(ObjectKind::Index);
        self.load_index_listed(want_packs, ahead)
    }

    /// Load the index from `listed` (a listing of `index/`), or from a
    /// fresh listing.
    fn load_index_listed(
        &self,
        want_packs: bool,
        listed: Option<Vec<ObjectMeta>>,
    ) -> Result<crate::index::load::Loaded> {
        let cache = self.cache();
        let mut loader = crate::index::load::Loader::new(
            &self.backend,
            &self.rt,
            &self.key,
            self.format_version,
            cache.as_deref(),
        );
        loader.listed = listed;
        let mut loaded = loader.load(want_packs)?;
        let idx = std::mem::take(&mut loaded.index);
        *self.index_names.lock().unwrap_or_else(|e| e.into_inner()) = Some(loaded.listed.clone());
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(idx);
        *self
            .index_problems
            .write()
            .unwrap_or_else(|e| e.into_inner()) = IndexProblems {
            corrupt: std::mem::take(&mut loaded.corrupt),
        };
        Ok(loaded)
    }

    /// The named index objects, each decoded or with why it is unreadable
    /// (see [`crate::index::load::Loader::read_named`]).
    #[allow(clippy::type_complexity)]
    pub(crate) fn read_index_objects(
        &self,
        names: &[String],
    ) -> Result<Vec<(String, Result<Vec<PackInfo>>)>> {
        let cache = self.cache();
        crate::index::load::Loader::new(
            &self.backend,
            &self.rt,
            &self.key,
            self.format_version,
            cache.as_deref(),
        )
        .read_named(names)
    }

    /// Read the named objects of `kind` concurrently (as many at once as
    /// the backend serves well); each name with its bytes or its error, in
    /// no particular order. A task that fails is reported as an error for
    /// the name `?`.
    pub(crate) fn fetch_all(
        &self,
        kind: ObjectKind,
        names: Vec<String>,
    ) -> Vec<(String, std::result::Result<Bytes, StorageError>)> {
        let par = self.backend.capabilities().parallelism.max(2);
        let backend = self.backend.clone();
        let location = self.location();
        self.block_on(async move {
            let sem = Arc::new(tokio::sync::Semaphore::new(par));
            let mut tasks = Vec::new();
            for name in names {
                let b = backend.clone();
                let sem = sem.clone();
                tasks.push(tokio::spawn(async move {
                    let _p = sem.acquire().await;
                    let r = b.get(kind, &name, None).await;
                    (name, r)
                }));
            }
            let mut out = Vec::new();
            for t in tasks {
                match t.await {
                    Ok(x) => out.push(x),
                    Err(e) => out.push((
                        String::from("?"),
                        Err(StorageError::Other {
                            backend: location.clone(),
                            detail: format!("a read task failed: {e}"),
                        }),
                    )),
                }
            }
            out
        })
    }

    /// Does snapshot `id` still exist? A writer asks after taking its lease
    /// before it reuses the parent snapshot's data: a purge and a GC may
    /// have removed the parent since it was chosen.
    pub fn snapshot_exists(&self, id: &Id) -> Result<bool> {
        Ok(self.block_on(holdfast_storage::exists(
            self.backend.as_ref(),
            ObjectKind::Snapshot,
            &id.to_hex(),
        ))?)
    }

    /// Use a local cache under `root` (see [`crate::cache`]) for index
    /// objects, snapshots and tree packs, keyed by this repository's id;
    /// `None` stops using one. Call before [`Repository::load_index`].
    pub fn use_cache(&self, root: Option<&std::path::Path>) -> Result<()> {
        let cache = match root {
            Some(r) => Some(Arc::new(Cache::open(r, &self.config.id)?)),
            None => None,
        };
        *self.cache.write().unwrap_or_else(|e| e.into_inner()) = cache;
        Ok(())
    }

    /// The local cache in use, if any.
    pub fn cache(&self) -> Option<Arc<Cache>> {
        self.cache.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stop using the cache until the guard is dropped: `check` must read
    /// what is in storage, not a good copy of a since damaged object.
    pub fn suspend_cache(&self) -> CacheSuspended<'_> {
        let taken = self.cache.write().unwrap_or_else(|e| e.into_inner()).take();
        CacheSuspended { repo: self, taken }
    }

    /// Reload the index if an index object it was loaded from is gone:
    /// GC deletes the index objects naming packs before the packs (see
    /// `docs/format.md`, "Garbage collection"), so this is how a writer
    /// whose lease began after it loaded the index learns of a sweep.
    ///
    /// Also asks whether snapshot `parent` exists, in the same round trip
    /// (see [`Repository::writer_lease_checking`]).
    pub(crate) fn reload_index_if_swept(&self, parent: Option<&Id>) -> Result<Option<bool>> {
        let seen = self.sweep_check(parent)?;
        if let Some(listing) = seen.swept {
            // Reloaded from this fresh listing, never from one read ahead.
            self.load_index_listed(false, Some(listing))?;
        }
        Ok(seen.parent_exists)
    }

    /// List `index/` (if an index is loaded) and ask whether `parent`
    /// exists, in one round trip; changes nothing.
    pub(crate) fn sweep_check(&self, parent: Option<&Id>) -> Result<SweepCheck> {
        let loaded = self
            .index_names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let backend = self.backend.as_ref();
        let (listing, exists) = self.block_on(async {
            let list = async {
                match loaded.is_some() {
                    true => Some(backend.list(ObjectKind::Index).await),
                    false => None,
                }
            };
            let head = async {
                match parent {
                    Some(id) => Some(
                        holdfast_storage::exists(backend, ObjectKind::Snapshot, &id.to_hex()).await,
                    ),
                    None => None,
                }
            };
            tokio::join!(list, head)
        });
        let parent_exists = exists.transpose()?;
        let (Some(loaded), Some(listing)) = (loaded, listing) else {
            return Ok(SweepCheck {
                parent_exists,
                swept: None,
            });
        };
        let listing = listing?;
        let now: std::collections::HashSet<&str> =
            listing.iter().map(|m| m.name.as_str()).collect();
        let gone = !loaded.iter().all(|n| now.contains(n.as_str()));
        Ok(SweepCheck {
            parent_exists,
            swept: gone.then_some(listing),
        })
    }

    pub fn index(&self) -> Arc<Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn index_problems(&self) -> IndexProblems {
        self.index_problems
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Tell the in-memory index where some blobs are, from a record other
    /// than the index objects (a WAL manifest lists where its blobs were
    /// stored, so `wal-fetch` need not load the whole index). Safe to trust:
    /// every blob read is authenticated and hashed against its id, so a
    /// stale location fails the read, never returns wrong data.
    pub fn add_known_packs(&self, packs: &[PackInfo]) {
        self.extend_index(packs);
    }

    /// Add freshly written packs to the index (its small table of new
    /// blobs: nothing is copied, and holders of the index see them too).
    pub(crate) fn extend_index(&self, packs: &[PackInfo]) {
        let idx = self.index();
        for p in packs {
            idx.add_pack(p);
        }
    }

    /// Write one index object describing `packs` (already durable).
    pub fn write_index(&self, packs: &[PackInfo]) -> Result<Id> {
        write_index_object(
            self.backend.as_ref(),
            &self.rt,
            &self.key,
            &self.put_options(),
            self.format_version,
            packs,
            self.cache().as_deref(),
        )
    }

    // ---- blobs ------------------------------------------------------------

    /// Read, decrypt, decode and verify one blob.
    pub fn read_blob(&self, id: &Id) -> Result<Vec<u8>> {
        let mut found = self.index().get(id);
        if found.is_none() && self.index().damaged() {
            // A cached index run failed its check (and was removed): the
            // miss may be that run's. Rebuild from the index objects.
            self.load_index()?;
            found = self.index().get(id);
        }
        let loc = found.ok_or_else(|| RepoError::MissingBlob {
            blob: id.to_hex(),
            referenced_by: "caller".into(),
        })?;
        if loc.blob_type == BlobType::Tree {
            if let Some(tree) = self.tree_from_cache(id, &loc) {
                return Ok(tree);
            }
            if let Some(pack) = self.cached_tree_pack(&loc)? {
                let (s, e) = (loc.offset as usize, (loc.offset + loc.length) as usize);
                if e <= pack.len() {
                    return self.decode_blob(id, &loc, &pack[s..e]);
                }
            }
        }
        let range = u64::from(loc.offset)..u64::from(loc.offset) + u64::from(loc.length);
        let sealed = self.block_on(self.backend.get(
            ObjectKind::Pack,
            &loc.pack.to_hex(),
            Some(range),
        ))?;
        self.decode_blob(id, &loc, &sealed)
    }

    /// A tree blob read from the local cache's copy of its pack: only the
    /// blob's bytes, so walking many snapshots holds no pack in memory.
    /// The blob is authenticated and hashed against its id like any read;
    /// a copy that fails is dropped from the cache and storage is asked.
    fn tree_from_cache(&self, id: &Id, loc: &BlobLocation) -> Option<Vec<u8>> {
        let cache = self.cache()?;
        let name = loc.pack.to_hex();
        let range = u64::from(loc.offset)..u64::from(loc.offset) + u64::from(loc.length);
        let sealed = cache.get_range(CacheKind::TreePack, &name, range)?;
        match self.decode_blob(id, loc, &sealed) {
            Ok(tree) => Some(tree),
            Err(_) => {
                cache.remove(CacheKind::TreePack, &name);
                None
            }
        }
    }

    /// Forget the cached tree packs (see `cached_tree_pack`): a restore
    /// calls this once it has walked its trees, so their memory is free for
    /// the content phase. Later tree reads simply fetch again.
    pub fn release_tree_cache(&self) {
        let mut cache = self.tree_packs.lock().unwrap_or_else(|e| e.into_inner());
        *cache = Default::default();
    }

    /// The whole pack holding a tree blob, read once and kept: walking a
    /// snapshot touches every tree, and a request per tree is what makes a
    /// remote store slow (and bills per request). Only packs small enough
    /// are cached, within a total budget; anything else reads per blob.
    ///
    /// With a local cache, tree packs are read from (and kept in) it, so a
    /// warm incremental backup reads its parent's trees without a request.
    fn cached_tree_pack(&self, loc: &BlobLocation) -> Result<Option<Bytes>> {
        const MAX_PACK: u64 = 32 * 1024 * 1024;
        const BUDGET: usize = 128 * 1024 * 1024;
        let mut cache = self.tree_packs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = cache.get(&loc.pack) {
            return Ok(Some(b.clone()));
        }
        let used: usize = cache.values().map(Bytes::len).sum();
        let name = loc.pack.to_hex();
        let local = self.cache();
        let bytes = match local
            .as_ref()
            .and_then(|c| c.get(CacheKind::TreePack, &name))
        {
            Some(b) => Bytes::from(b),
            None => {
                let size = self
                    .block_on(self.backend.head(ObjectKind::Pack, &name))?
                    .size;
                // Without a cache to keep it, a whole pack over the memory
                // budget would be fetched again for each of its trees:
                // read the one blob instead.
                if size > MAX_PACK || (local.is_none() && used + size as usize > BUDGET) {
                    return Ok(None);
                }
                let b = self.block_on(self.backend.get(ObjectKind::Pack, &name, None))?;
                if let Some(c) = &local {
                    c.put(CacheKind::TreePack, &name, &b);
                    // Its other trees are read from the cache's copy (see
                    // `tree_from_cache`): no need to hold the pack.
                    if c.has(CacheKind::TreePack, &name) {
                        return Ok(Some(b));
                    }
                }
                b
            }
        };
        if used + bytes.len() > BUDGET {
            // Over the memory budget: this read uses it, later ones read
            // the cache's copy (or storage) again.
            return Ok(Some(bytes));
        }
        cache.insert(loc.pack, bytes.clone());
        Ok(Some(bytes))
    }

    /// An object's stored bytes: the cache's verified copy, else fetched
    /// (and then cached). Only for content-named kinds the cache holds.
    fn get_cached(&self, kind: ObjectKind, ck: CacheKind, name: &str) -> Result<Vec<u8>> {
        let cache = self.cache();
        if let Some(b) = cache.as_ref().and_then(|c| c.get(ck, name)) {
            return Ok(b);
        }
        let b = self.block_on(self.backend.get(kind, name, None))?;
        if let Some(c) = &cache {
            c.put(ck, name, &b);
        }
        Ok(b.to_vec())
    }

    /// Decrypt, decode and verify a blob's stored bytes (the blob's own
    /// sealed region, or its frame's).
    pub fn decode_blob(&self, id: &Id, loc: &BlobLocation, sealed: &[u8]) -> Result<Vec<u8>> {
        let what = format!("blob {} in pack {}", id.short(), loc.pack);
        let cipher = self.key.cipher_for(&loc.salt);
        let mut buf = sealed.to_vec();
        cipher.open_in_place(
            u64::from(loc.offset),
            &[loc.blob_type as u8],
            &mut buf,
            &what,
        )?;
        let mut data = compress::decode_owned(buf, loc.needed(), &what)?;
        if loc.inner != 0 || data.len() != loc.raw_len as usize {
            data = data[loc.span()].to_vec();
        }
        if self.key.blob_id(&data) != *id {
            return Err(RepoError::corrupt(what, "content does not hash to its id"));
        }
        Ok(data)
    }

    /// Decrypt and decode a sealed region (a blob or a frame) in place in
    /// `buf`, once for every blob of `blobs` that lies in it (they share
    /// `offset`), and hand each blob's verified bytes to `visit`. An error
    /// in the region fails each of its blobs.
    pub(crate) fn visit_region(
        &self,
        buf: &mut [u8],
        blobs: &[(Id, BlobLocation)],
        dec: &mut compress::Decoder,
        visit: &mut dyn FnMut(&Id, Result<&[u8]>),
    ) {
        let Some((first_id, first)) = blobs.first() else {
            return;
        };
        let what = |id: &Id| format!("blob {} in pack {}", id.short(), first.pack);
        let cipher = self.key.cipher_for(&first.salt);
        let need = blobs.iter().map(|(_, l)| l.needed()).max().unwrap_or(0);
        // Named once per region (a restore opens thousands per second).
        let first_what = what(first_id);
        let plain = cipher
            .open_in_slice(
                u64::from(first.offset),
                &[first.blob_type as u8],
                buf,
                &first_what,
            )
            .and_then(|plain| dec.decode(plain, need, &first_what));
        let decoded = match plain {
            Ok(d) => d,
            Err(err) => {
                let detail = match &err {
                    RepoError::Corrupt { detail, .. } => detail.clone(),
                    other => other.to_string(),
                };
                for (id, _) in blobs {
                    let d = if id == first_id {
                        detail.clone()
                    } else {
                        format!("its frame (with blob {}): {detail}", first_id.short())
                    };
                    visit(id, Err(RepoError::corrupt(what(id), d)));
                }
                return;
            }
        };
        for (id, loc) in blobs {
            let data = &decoded[loc.span()];
            if self.key.blob_id(data) == *id {
                visit(id, Ok(data));
            } else {
                visit(
                    id,
                    Err(RepoError::corrupt(
                        what(id),
                        "content does not hash to its id",
                    )),
                );
            }
        }
    }

    /// Fetch several blobs of one pack with a single ranged read covering
    /// them all, and hand each blob's verified plaintext to `visit`, in the
    /// order given. Blobs are decrypted in place inside the fetched buffer,
    /// so a raw blob is never copied; each blob's result is independent (one
    /// corrupt blob does not fail the others; a corrupt frame fails its
    /// blobs). Blobs of one frame must be adjacent in `blobs` (sorting by
    /// offset does it). A failed read is returned as the storage
    /// error it is (so callers can tell an archived pack from a missing one)
    /// and `visit` is not called.
    pub fn visit_pack_blobs(
        &self,
        pack: Id,
        blobs: &[(Id, BlobLocation)],
        visit: &mut dyn FnMut(&Id, Result<&[u8]>),
    ) -> Result<(), StorageError> {
        let Some(start) = blobs.iter().map(|(_, l)| u64::from(l.offset)).min() else {
            return Ok(());
        };
        let end = blobs
            .iter()
            .map(|(_, l)| u64::from(l.offset) + u64::from(l.length))
            .max()
            .unwrap_or(start);
        let got = self.block_on(self.backend.get(
            ObjectKind::Pack,
            &pack.to_hex(),
            Some(start..end),
        ));
        // Zero-copy when the backend handed us a uniquely owned buffer.
        let mut buf: Vec<u8> = Vec::from(got?);
        let mut dec = compress::Decoder::new();
        // Blobs of one frame share a sealed region: decrypt and decode it
        // once for all of them (in place: it cannot be opened twice).
        let mut i = 0;
        while i < blobs.len() {
            let loc = &blobs[i].1;
            let mut j = i + 1;
            while j < blobs.len() && blobs[j].1.offset == loc.offset {
                j += 1;
            }
            let s = (u64::from(loc.offset) - start) as usize;
            let e = s + loc.length as usize;
            self.visit_region(&mut buf[s..e], &blobs[i..j], &mut dec, visit);
            i = j;
        }
        Ok(())
    }

    /// Make sure every pack in `packs` can be read: packs in an archival
    /// storage class get a restore request, then we poll (backing off from
    /// one second to a minute) until all are readable or `max_wait` passes.
    /// Returns how long we waited (it counts toward a restore's RTO).
    pub fn ensure_readable(
        &self,
        packs: &[Id],
        days: u32,
        max_wait: std::time::Duration,
    ) -> Result<std::time::Duration> {
        use holdfast_storage::ArchiveState;
        let started = std::time::Instant::now();
        if !self.backend.capabilities().archive_restore || packs.is_empty() {
            return Ok(std::time::Duration::ZERO);
        }
        let mut waiting: Vec<Id> = Vec::new();
        for p in packs {
            let name = p.to_hex();
            match self.block_on(self.backend.archive_state(ObjectKind::Pack, &name))? {
                ArchiveState::Readable => {}
                ArchiveState::Restoring => waiting.push(*p),
                ArchiveState::Archived => {
                    self.block_on(self.backend.restore_archived(ObjectKind::Pack, &name, days))?;
                    waiting.push(*p);
                }
            }
        }
        if waiting.is_empty() {
            return Ok(std::time::Duration::ZERO);
        }
        let mut pause = std::time::Duration::from_millis(200);
        while !waiting.is_empty() {
            if started.elapsed() > max_wait {
                return Err(RepoError::Invalid(format!(
                    "{} pack(s) still being retrieved from archival storage after {:?} (e.g. {}); try again later",
                    waiting.len(),
                    max_wait,
                    waiting[0]
                )));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_secs(60));
            let mut still = Vec::new();
            for p in waiting {
                if self.block_on(self.backend.archive_state(ObjectKind::Pack, &p.to_hex()))?
                    != ArchiveState::Readable
                {
                    still.push(p);
                }
            }
            waiting = still;
        }
        Ok(started.elapsed())
    }

    pub fn load_tree(&self, id: &Id) -> Result<Tree> {
        let bytes = self.read_blob(id).map_err(|e| match e {
            RepoError::MissingBlob { blob, .. } => RepoError::MissingBlob {
                blob,
                referenced_by: "a snapshot (tree)".into(),
            },
            e => e,
        })?;
        let tree: Tree = serde_json::from_slice(&bytes)
            .map_err(|e| RepoError::corrupt(format!("tree {}", id.short()), e.to_string()))?;
        // A newer tree may carry fields this version would silently drop
        // on restore (metadata, say): refuse instead.
        if tree.version > crate::tree::TREE_VERSION {
            return Err(RepoError::Invalid(format!(
                "tree {} uses tree format version {}, newer than this holdfast supports (up to {}); upgrade holdfast",
                id.short(),
                tree.version,
                crate::tree::TREE_VERSION
            )));
        }
        Ok(tree)
    }

    // ---- snapshots --------------------------------------------------------

    /// Every readable snapshot, oldest first. Unreadable ones are returned
    /// separately so listings can warn instead of failing.
    pub fn snapshots_with_errors(&self) -> Result<(Vec<SnapshotEntry>, Vec<Unreadable>)> {
        let metas = self.list_ahead(ObjectKind::Snapshot)?;
        let cache = self.cache();
        if let Some(c) = &cache {
            let keep: std::collections::HashSet<&str> =
                metas.iter().map(|m| m.name.as_str()).collect();
            c.retain(CacheKind::Snapshot, &|n| keep.contains(n));
        }
        let mut out = Vec::new();
        let mut bad = Vec::new();
        for m in metas {
            let r = self
                .get_cached(ObjectKind::Snapshot, CacheKind::Snapshot, &m.name)
                .and_then(|b| {
                    self.open_json_object::<Snapshot>(
                        Binding::new(ObjectKind::Snapshot, &m.name),
                        &b,
                    )
                });
            if r.is_err() {
                // Never keep a copy of what does not open.
                if let Some(c) = &cache {
                    c.remove(CacheKind::Snapshot, &m.name);
                }
            }
            match (r, m.name.parse::<Id>()) {
                (Ok(snapshot), Ok(id)) => out.push(SnapshotEntry { id, snapshot }),
                (Err(e), _) => bad.push((m.name, e.to_string())),
                (_, Err(e)) => bad.push((m.name, e.to_string())),
            }
        }
        out.sort_by(|a, b| a.snapshot.time.cmp(&b.snapshot.time).then(a.id.cmp(&b.id)));
        Ok((out, bad))
    }

    pub fn snapshots(&self) -> Result<Vec<SnapshotEntry>> {
        Ok(self.snapshots_with_errors()?.0)
    }

    /// Read one snapshot by its object name, its name binding checked.
    pub fn load_snapshot(&self, name: &str) -> Result<Snapshot> {
        let bytes = self.block_on(self.backend.get(ObjectKind::Snapshot, name, None))?;
        self.open_json_object(Binding::new(ObjectKind::Snapshot, name), &bytes)
    }

    /// Resolve `latest`, a full id or a unique id prefix, within `filter`.
    /// An unreadable snapshot is never skipped silently: asked for by id,
    /// its own error is returned; and `latest` is refused while any
    /// snapshot is unreadable, since it might be the newest one (a renamed
    /// or damaged newest snapshot must not make `latest` restore an older
    /// one with success).
    pub fn find_snapshot(&self, spec: &str, filter: &SnapshotFilter) -> Result<SnapshotEntry> {
        let (good, bad) = self.snapshots_with_errors()?;
        let all: Vec<_> = good
            .into_iter()
            .filter(|s| filter.matches(&s.snapshot))
            .collect();
        if spec == "latest" {
            if let Some((name, _)) = bad.first() {
                let err = match self.load_snapshot(name) {
                    Err(e) => e.to_string(),
                    Ok(_) => "unreadable when listed".into(),
                };
                return Err(RepoError::Invalid(format!(
                    "cannot tell which snapshot is the latest: {} snapshot(s) cannot be read, e.g. {err}; name the snapshot by id, or run `holdfast check`",
                    bad.len()
                )));
            }
            return all
                .into_iter()
                .last()
                .ok_or_else(|| RepoError::SnapshotNotFound(describe(spec, filter)));
        }
        let spec_l = spec.to_ascii_lowercase();
        let mut hits: Vec<_> = all
            .into_iter()
            .filter(|s| s.id.to_hex().starts_with(&spec_l))
            .collect();
        let bad_hits: Vec<&String> = bad
            .iter()
            .map(|(n, _)| n)
            .filter(|n| n.starts_with(&spec_l))
            .collect();
        match (hits.len(), bad_hits.as_slice()) {
            (0, []) => Err(RepoError::SnapshotNotFound(describe(spec, filter))),
            (0, [name]) => match self.load_snapshot(name) {
                Err(e) => Err(e),
                Ok(_) => Err(RepoError::SnapshotNotFound(describe(spec, filter))),
            },
            (1, []) => Ok(hits.remove(0)),
            (n, b) => Err(RepoError::AmbiguousSnapshot {
                prefix: spec.to_string(),
                count: n + b.len(),
            }),
        }
    }

    /// Write a snapshot manifest: the commit point of a backup. Unless the
    /// caller set them, its `predecessors` are the newest snapshots of the
    /// same source and host visible now (see [`Snapshot::predecessors`]).
    /// Refuses if this process's writer lease lapsed or was removed (see
    /// [`crate::lease`]).
    pub fn save_snapshot(&self, snap: &Snapshot) -> Result<Id> {
        self.save_snapshot_with(snap, Commit::default())
    }

    /// [`Repository::save_snapshot`] with what the writer already knows,
    /// so that its commit waits on fewer round trips: the predecessors
    /// (from the listing it chose its parent from, instead of listing
    /// again) and its lease confirmation, started while its last uploads
    /// were in flight. Without them it is `save_snapshot`.
    pub fn save_snapshot_with(&self, snap: &Snapshot, commit: Commit) -> Result<Id> {
        match commit.confirmation {
            Some(c) => c.finish()?,
            None => self.check_writer_lease()?,
        }
        let mut snap = snap.clone();
        if snap.predecessors.is_empty() {
            snap.predecessors = match commit.predecessors {
                Some(p) => p,
                None => crate::snapshot::latest_of_same_source(&self.snapshots()?, &snap),
            };
        }
        if snap.audit_head.is_none() {
            snap.audit_head = self.audit_head_for_snapshot();
        }
        self.put_snapshot(&snap)
    }

    /// Seal and store `snap` as it is (no predecessors added): `migrate`
    /// re-seals snapshots with this.
    pub(crate) fn put_snapshot(&self, snap: &Snapshot) -> Result<Id> {
        let json = serde_json::to_vec(snap)
            .map_err(|e| RepoError::Invalid(format!("cannot serialise: {e}")))?;
        let bytes = self.seal_object(Binding::new(ObjectKind::Snapshot, ""), &json)?;
        let id = Id::of_stored(&bytes);
        if let Some(c) = self.cache() {
            c.put(CacheKind::Snapshot, &id.to_hex(), &bytes);
        }
        self.block_on(self.backend.put(
            ObjectKind::Snapshot,
            &id.to_hex(),
            Bytes::from(bytes),
            &self.put_options(),
        ))?;
        Ok(id)
    }

    // ---- keys -------------------------------------------------------------

    /// Every readable key slot, oldest first. Unreadable ones are left
    /// out; [`Repository::key_slots`] reports them.
    pub fn list_keys(&self) -> Result<Vec<(String, KeySlot)>> {
        Ok(self.key_slots()?.readable)
    }

    /// Every key slot, oldest first, and the ones that cannot be read or
    /// parsed with why (a damaged slot must not hide the others: `key
    /// list` shows it, `key remove` can remove it).
    pub fn key_slots(&self) -> Result<KeySlots> {
        let metas = self.block_on(self.backend.list(ObjectKind::Key))?;
        let mut out = Vec::new();
        let mut bad = Vec::new();
        for m in metas {
            let bytes = match self.block_on(self.backend.get(ObjectKind::Key, &m.name, None)) {
                Ok(b) => b,
                Err(StorageError::NotFound { .. }) => continue, // removed meanwhile
                Err(e) => return Err(e.into()),
            };
            match serde_json::from_slice::<KeySlot>(&bytes) {
                Ok(slot) => out.push((m.name, slot)),
                Err(e) => bad.push((m.name, format!("not a readable key slot: {e}"))),
            }
        }
        out.sort_by_key(|k| k.1.created);
        bad.sort();
        Ok(KeySlots {
            readable: out,
            damaged: bad,
        })
    }

    /// Add a key slot for `password`; returns its id.
    pub fn add_key(&self, password: &[u8], kdf: KdfParams, label: &str) -> Result<String> {
        let slot = KeySlot::create(&self.key, password, kdf, label)?;
        self.put_slot(&slot)
    }

    /// Add a key-file slot for `key` (see [`crate::keys`]); returns its id.
    pub fn add_key_file(&self, key: &[u8; KEY_FILE_LEN], label: &str) -> Result<String> {
        let slot = KeySlot::create_for_key_file(&self.key, key, label)?;
        self.put_slot(&slot)
    }

    fn put_slot(&self, slot: &KeySlot) -> Result<String> {
        let bytes =
            serde_json::to_vec_pretty(slot).map_err(|e| RepoError::Invalid(e.to_string()))?;
        let name = Id::of_stored(&bytes).to_hex();
        self.block_on(self.backend.put(
            ObjectKind::Key,
            &name,
            Bytes::from(bytes),
            &PutOptions::default(),
        ))?;
        Ok(name)
    }

    /// Remove a key slot by id or unique prefix. Refuses the last slot and
    /// (unless `allow_current`) the one this session opened with.
    pub fn remove_key(&self, spec: &str, allow_current: bool) -> Result<String> {
        // By name, not by parsed slot: a damaged slot must be removable.
        let keys: Vec<String> = self
            .block_on(self.backend.list(ObjectKind::Key))?
            .into_iter()
            .map(|m| m.name)
            .collect();
        let hits: Vec<_> = keys.iter().filter(|n| n.starts_with(spec)).collect();
        let name = match hits.as_slice() {
            [] => return Err(RepoError::KeyNotFound(spec.to_string())),
            [n] => (*n).clone(),
            _ => {
                return Err(RepoError::Invalid(format!(
                    "key prefix {spec:?} is ambiguous"
                )))
            }
        };
        if keys.len() == 1 {
            return Err(RepoError::Invalid(
                "refusing to remove the last key slot: the repository would become unreadable"
                    .into(),
            ));
        }
        if name == self.key_slot && !allow_current {
            return Err(RepoError::Invalid(format!(
                "key {} is the one you opened the repository with; use another password to remove it",
                name.get(..8).unwrap_or(&name)
            )));
        }
        self.block_on(self.backend.delete(ObjectKind::Key, &name))?;
        Ok(name)
    }
}

/// What a writer knows when it commits (see
/// [`Repository::save_snapshot_with`]).
#[derive(Debug, Default)]
pub struct Commit {
    /// The snapshot's predecessors, found by the writer in the listing it
    /// chose its parent from (see [`crate::snapshot::latest_of_same_source`]);
    /// `None`: listed at commit.
    pub predecessors: Option<Vec<Id>>,
    /// The writer's lease confirmation, started earlier
    /// ([`Repository::start_writer_confirm`]); `None`: confirmed at commit.
    pub confirmation: Option<crate::lease::Confirmation>,
}

/// See [`Repository::suspend_cache`]: gives the cache back when dropped.
pub struct CacheSuspended<'a> {
    repo: &'a Repository,
    taken: Option<Arc<Cache>>,
}

impl Drop for CacheSuspended<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.taken.take() {
            *self.repo.cache.write().unwrap_or_else(|e| e.into_inner()) = Some(c);
        }
    }
}

fn describe(spec: &str, f: &SnapshotFilter) -> String {
    let mut s = spec.to_string();
    if let Some(src) = &f.source {
        s.push_str(&format!(" with source {src:?}"));
    }
    if !f.tags.is_empty() {
        s.push_str(&format!(" with tags {:?}", f.tags));
    }
    if let Some(k) = &f.kind {
        s.push_str(&format!(" of kind {k:?}"));
    }
    s
}

pub(crate) fn write_index_object(
    backend: &dyn Backend,
    rt: &Handle,
    key: &MasterKey,
    opts: &PutOptions,
    format: u32,
    packs: &[PackInfo],
    cache: Option<&Cache>,
) -> Result<Id> {
    let bytes = object::seal_for(
        key,
        format,
        Binding::new(ObjectKind::Index, ""),
        &index::encode(packs),
    )?;
    let id = Id::of_stored(&bytes);
    if let Some(c) = cache {
        // Before the put: a copy of an object that then failed to store is
        // dropped at the next load (it is not listed).
        c.put(CacheKind::Index, &id.to_hex(), &bytes);
    }
    rt.block_on(backend.put(ObjectKind::Index, &id.to_hex(), Bytes::from(bytes), opts))?;
    Ok(id)
}
