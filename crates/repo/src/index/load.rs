//! Loading the index: bring the sorted runs in step with the index objects
//! in storage, fetching only what the cache does not hold.
//!
//! With a cache, one listing of `index/` decides everything. A run is used
//! only if every index object it holds is still listed (one that was
//! removed, by GC say, may describe packs that are gone: a dedup against it
//! would lose data), so a stale run is dropped and the objects it held that
//! remain are read again, from the cache's copies. Objects no run holds are
//! read (cache first, then storage, in parallel, in batches so memory stays
//! bounded) and built into a new run. When there are more than
//! [`MAX_RUNS`] runs, the smallest are merged, so a repository with
//! thousands of small `wal-push` index objects opens with a handful of
//! lookups per blob and, warm, without fetching anything.
//!
//! Without a cache every object is fetched and one run is built in memory.

use std::collections::HashSet;
use std::sync::Arc;

use holdfast_storage::{Backend, ObjectKind, ObjectMeta, StorageError};
use tokio::runtime::Handle;

use crate::cache::{Cache, CacheKind};
use crate::crypto::MasterKey;
use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::object;
use crate::pack::PackInfo;

use super::build::{self, RunBuilder, DEFAULT_CHUNK};
use super::run::{self, Run};
use super::{decode, Index};

/// More runs than this and the smallest are merged.
pub const MAX_RUNS: usize = 8;

/// Index objects fetched per batch (their bytes are held until decoded).
const BATCH: usize = 16;

/// What loading found.
#[derive(Debug, Default)]
pub struct Loaded {
    pub index: Index,
    /// Index objects that could not be read: (name, reason).
    pub corrupt: Vec<(String, String)>,
    /// Every pack of every readable index object, as written (only when asked).
    pub packs: Vec<PackInfo>,
    /// Index objects read (from the cache or storage) to build runs.
    pub objects_read: usize,
    /// Of those, fetched from storage.
    pub objects_fetched: usize,
    /// Names of the index objects listed (the index describes these): a
    /// writer compares them after taking its lease (see `lease`).
    pub listed: Vec<String>,
}

/// How to load.
pub(crate) struct Loader<'a> {
    pub backend: &'a Arc<dyn Backend>,
    pub rt: &'a Handle,
    pub key: &'a MasterKey,
    /// The repository's format: which envelopes index objects may have.
    pub format: u32,
    pub cache: Option<&'a Cache>,
    /// Records sorted in memory before spilling (tests make it small).
    pub chunk: usize,
    /// A listing of `index/` read ahead (see [`crate::prefetch`]), used by
    /// the first try instead of listing.
    pub listed: Option<Vec<ObjectMeta>>,
}

impl Loader<'_> {
    pub(crate) fn new<'a>(
        backend: &'a Arc<dyn Backend>,
        rt: &'a Handle,
        key: &'a MasterKey,
        format: u32,
        cache: Option<&'a Cache>,
    ) -> Loader<'a> {
        Loader {
            backend,
            rt,
            key,
            format,
            cache,
            chunk: DEFAULT_CHUNK,
            listed: None,
        }
    }

    /// Load the index; with `want_packs`, also return every pack of every
    /// readable index object (`check` needs them all, as written). An index
    /// object removed between the listing and its read (a GC replacing
    /// index objects meanwhile) means listing again: its replacement was
    /// written before it was removed.
    pub(crate) fn load(&mut self, want_packs: bool) -> Result<Loaded> {
        let mut tries = 0;
        loop {
            let ahead = self.listed.take();
            match self.load_once(want_packs, ahead) {
                Err(Vanished(_)) if tries < 3 => tries += 1,
                Err(Vanished(e)) | Err(Failed(e)) => return Err(e),
                Ok(l) => return Ok(l),
            }
        }
    }

    fn load_once(
        &self,
        want_packs: bool,
        ahead: Option<Vec<ObjectMeta>>,
    ) -> std::result::Result<Loaded, LoadError> {
        let metas = match ahead {
            Some(m) => m,
            None => self.rt.block_on(self.backend.list(ObjectKind::Index))?,
        };
        let listed: Vec<String> = metas.into_iter().map(|m| m.name).collect();
        let mac_key = run::mac_key(self.key.as_bytes());
        if let Some(cache) = self.cache {
            let keep: HashSet<&str> = listed.iter().map(String::as_str).collect();
            cache.retain(CacheKind::Index, &|n| keep.contains(n));
        }
        let cache = match self.cache {
            Some(c) if !want_packs => c,
            _ => {
                // Everything from the objects: no cache, or `check`.
                let mut out = Loaded {
                    listed: listed.clone(),
                    ..Loaded::default()
                };
                let dir = self.cache.map(Cache::runs_dir);
                let mut b = RunBuilder::new(dir.as_deref(), self.chunk);
                self.read_objects(&listed, &mut b, &mut out, want_packs)?;
                let run = match &dir {
                    Some(_) => {
                        let path = b.finish_to_file(mac_key)?;
                        build::open_file(&path, mac_key)?
                    }
                    None => b.finish_in_memory(mac_key)?,
                };
                out.index = Index::from_runs(vec![run]);
                return Ok(out);
            }
        };
        let listed_ids: HashSet<Id> = listed.iter().filter_map(|n| n.parse().ok()).collect();
        let mut runs = self.usable_runs(cache, &listed_ids, mac_key);
        let covered: HashSet<Id> = runs.iter().flat_map(|r| r.names()).collect();
        let missing: Vec<String> = listed
            .iter()
            .filter(|n| n.parse::<Id>().map_or(true, |id| !covered.contains(&id)))
            .cloned()
            .collect();
        let mut out = Loaded {
            listed: listed.clone(),
            ..Loaded::default()
        };
        if !missing.is_empty() {
            let dir = cache.runs_dir();
            let mut b = RunBuilder::new(Some(&dir), self.chunk);
            self.read_objects(&missing, &mut b, &mut out, false)?;
            if b.records() > 0 || out.objects_read > 0 {
                let path = b.finish_to_file(mac_key)?;
                runs.push(build::open_file(&path, mac_key)?);
            }
        }
        let runs = compact(cache, runs, mac_key)?;
        out.index = Index::from_runs(runs);
        Ok(out)
    }

    /// The cached runs that hold only listed objects, largest first, each
    /// adding something the others lack. The rest are removed.
    fn usable_runs(&self, cache: &Cache, listed: &HashSet<Id>, key: [u8; 32]) -> Vec<Run> {
        let dir = cache.runs_dir();
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut found: Vec<Run> = Vec::new();
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().and_then(|x| x.to_str()) != Some("run") {
                continue;
            }
            match build::open_file(&p, key) {
                Ok(r) => found.push(r),
                // Damaged, truncated, or another repository's: rebuild.
                Err(_) => {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
        found.sort_by_key(|r| std::cmp::Reverse(r.len()));
        let mut covered: HashSet<Id> = HashSet::new();
        let mut out = Vec::new();
        for r in found {
            let names: Vec<Id> = r.names().collect();
            let stale = names.iter().any(|n| !listed.contains(n));
            let adds = names.iter().any(|n| !covered.contains(n));
            if stale || !adds {
                if let Some(p) = r.path() {
                    let _ = std::fs::remove_file(p);
                }
                continue;
            }
            covered.extend(names);
            out.push(r);
        }
        // Oldest (largest) first, as `Index` expects.
        out
    }

    /// Read index objects (cache first, then storage), decode them and
    /// add them to `b`. Unreadable ones go to `out.corrupt`.
    fn read_objects(
        &self,
        names: &[String],
        b: &mut RunBuilder,
        out: &mut Loaded,
        keep_packs: bool,
    ) -> std::result::Result<(), LoadError> {
        let mut vanished = Vec::new();
        for batch in names.chunks(BATCH) {
            for (name, got) in self.fetch(batch)? {
                let what = format!("index object {name}");
                let packs = match got {
                    Ok(bytes) => {
                        out.objects_read += 1;
                        open_index_object(self.key, self.format, &name, &bytes, &what)
                    }
                    Err(RepoError::Storage(StorageError::NotFound { .. })) => {
                        vanished.push(name);
                        continue;
                    }
                    Err(e) => Err(e),
                };
                match packs {
                    Ok(packs) => {
                        b.add_object(name.parse().ok(), &packs)?;
                        if keep_packs {
                            out.packs.extend(packs);
                        }
                    }
                    Err(e) => {
                        if let Some(c) = self.cache {
                            c.remove(CacheKind::Index, &name);
                        }
                        out.corrupt.push((name, e.to_string()));
                    }
                }
            }
        }
        if !vanished.is_empty() {
            // Listed, then gone: replaced by a merge or GC since the
            // listing. Its replacement was written before it was removed,
            // so a fresh listing has it: start over rather than miss blobs.
            return Err(Vanished(RepoError::Invalid(format!(
                "{} index object(s) were removed while the index was being loaded (e.g. {}), again after three new listings: is a repository maintenance job running? Run the command again",
                vanished.len(),
                vanished[0]
            ))));
        }
        Ok(())
    }

    /// Read and decode the named index objects (cache first, then storage,
    /// in parallel batches): each name with its packs as written, or why it
    /// could not be read. Garbage collection needs them object by object,
    /// to know which objects name the packs it deletes.
    #[allow(clippy::type_complexity)]
    pub(crate) fn read_named(
        &self,
        names: &[String],
    ) -> Result<Vec<(String, Result<Vec<PackInfo>>)>> {
        let mut out = Vec::with_capacity(names.len());
        for batch in names.chunks(BATCH * 4) {
            for (name, got) in self.fetch(batch)? {
                let what = format!("index object {name}");
                let packs =
                    got.and_then(|b| open_index_object(self.key, self.format, &name, &b, &what));
                out.push((name, packs));
            }
        }
        Ok(out)
    }

    /// The stored bytes of index objects: from the cache when it holds a
    /// verified copy, else fetched in parallel (and then cached).
    #[allow(clippy::type_complexity)]
    fn fetch(&self, names: &[String]) -> Result<Vec<(String, Result<Vec<u8>>)>> {
        let mut out = Vec::with_capacity(names.len());
        let mut remote = Vec::new();
        for n in names {
            match self.cache.and_then(|c| c.get(CacheKind::Index, n)) {
                Some(b) => out.push((n.clone(), Ok(b))),
                None => remote.push(n.clone()),
            }
        }
        if remote.is_empty() {
            return Ok(out);
        }
        let par = self.backend.capabilities().parallelism.max(2);
        let backend = self.backend.clone();
        let fetched = self.rt.block_on(async move {
            let sem = Arc::new(tokio::sync::Semaphore::new(par));
            let mut tasks = Vec::new();
            for name in remote {
                let b = backend.clone();
                let sem = sem.clone();
                tasks.push(tokio::spawn(async move {
                    let _p = sem.acquire().await;
                    let r = b.get(ObjectKind::Index, &name, None).await;
                    (name, r)
                }));
            }
            let mut got = Vec::new();
            for t in tasks {
                match t.await {
                    Ok(x) => got.push(x),
                    Err(e) => {
                        return Err(RepoError::Invalid(format!("an index fetch failed: {e}")))
                    }
                }
            }
            Ok(got)
        })?;
        for (name, r) in fetched {
            let r = r.map(|b| b.to_vec()).map_err(RepoError::from);
            if let (Ok(bytes), Some(c)) = (&r, self.cache) {
                c.put(CacheKind::Index, &name, bytes);
            }
            out.push((name, r));
        }
        Ok(out)
    }
}

/// Why one loading attempt failed.
enum LoadError {
    /// An index object was listed and then gone: list again.
    Vanished(RepoError),
    Failed(RepoError),
}
use LoadError::{Failed, Vanished};

impl From<RepoError> for LoadError {
    fn from(e: RepoError) -> LoadError {
        Failed(e)
    }
}

impl From<StorageError> for LoadError {
    fn from(e: StorageError) -> LoadError {
        Failed(e.into())
    }
}

/// Open and decode one index object's stored bytes. Every read of an index
/// object, fetched or cached, goes through here, so its name binding (the
/// bytes hash to `name`; a format-3 envelope of kind index) is checked on
/// every load.
pub(crate) fn open_index_object(
    key: &MasterKey,
    format: u32,
    name: &str,
    bytes: &[u8],
    what: &str,
) -> Result<Vec<PackInfo>> {
    let b = object::Binding::new(holdfast_storage::ObjectKind::Index, name);
    let payload = object::open_bound(key, format, b, bytes)?;
    decode(&payload, what)
}

/// Merge the smallest runs while there are more than [`MAX_RUNS`]: a new
/// small run per open costs little, and large runs are rewritten only when
/// enough small ones have gathered (size-tiered, as in LSM trees).
fn compact(cache: &Cache, mut runs: Vec<Run>, key: [u8; 32]) -> Result<Vec<Run>> {
    if runs.len() <= MAX_RUNS {
        return Ok(runs);
    }
    runs.sort_by_key(|r| std::cmp::Reverse(r.len()));
    let keep = MAX_RUNS / 2;
    let small: Vec<Run> = runs.split_off(keep);
    let refs: Vec<&Run> = small.iter().collect();
    let path = build::merge_runs(&cache.runs_dir(), key, &refs)?;
    let merged = build::open_file(&path, key)?;
    for r in &small {
        if let Some(p) = r.path() {
            if p != path {
                let _ = std::fs::remove_file(p);
            }
        }
    }
    runs.push(merged);
    Ok(runs)
}
