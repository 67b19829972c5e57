//! The local cache and the bounded index, end to end on a real local
//! repository seen through a request-counting backend: a warm incremental
//! backup makes no metadata GETs, damaged cache entries are detected and
//! fetched again, runs of removed index objects are dropped, thousands of
//! small index objects open without fetching anything once warm, and a
//! format-1 repository reads the same with and without a cache.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use holdfast_repo::cache::CacheKind;
use holdfast_repo::config::RepoConfig;
use holdfast_repo::index::load::MAX_RUNS;
use holdfast_repo::keys::KdfParams;
use holdfast_repo::pack::{BlobType, PackEntry, PackInfo};
use holdfast_repo::snapshot::Snapshot;
use holdfast_repo::tree::Tree;
use holdfast_repo::writer::BlobWriter;
use holdfast_repo::{Id, Repository};
use holdfast_storage::fault::{FaultPlan, FaultyBackend, Op};
use holdfast_storage::local::LocalBackend;
use holdfast_storage::{Backend, Capabilities, ObjectKind, ObjectMeta, PutOptions, StorageResult};

const FAST_KDF: KdfParams = KdfParams {
    m_cost: 64,
    t_cost: 1,
    p_cost: 1,
};
const PASSWORD: &[u8] = b"cache test";

fn kind_name(k: ObjectKind) -> &'static str {
    match k {
        ObjectKind::Index => "index",
        ObjectKind::Snapshot => "snapshot",
        ObjectKind::Pack => "pack",
        ObjectKind::Config => "config",
        ObjectKind::Key => "key",
        _ => "other",
    }
}

/// The reads a repository made through `seen` since the last call, by kind
/// (GETs by kind name, HEADs as "pack head" or "other head").
fn reads(seen: &FaultyBackend) -> HashMap<&'static str, usize> {
    let mut out = HashMap::new();
    for s in seen.take_seen() {
        let what = match (s.op, s.kind) {
            (Op::Get, k) => kind_name(k),
            (Op::Head, ObjectKind::Pack) => "pack head",
            (Op::Head, _) => "other head",
            _ => continue,
        };
        *out.entry(what).or_default() += 1;
    }
    out
}

/// Metadata reads: index objects, snapshots, packs (of trees, here) and their HEADs.
fn metadata_gets(c: &HashMap<&'static str, usize>) -> usize {
    ["index", "snapshot", "pack", "pack head"]
        .iter()
        .map(|k| c.get(k).copied().unwrap_or(0))
        .sum()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn init(root: &Path, rt: &tokio::runtime::Runtime) {
    Repository::init(
        Arc::new(LocalBackend::new(root)),
        rt.handle().clone(),
        PASSWORD,
        FAST_KDF,
        RepoConfig::new(),
    )
    .unwrap();
}

/// Open through a recording backend (the fault decorator with no fault),
/// with a cache under `cache` (or none).
fn open(
    root: &Path,
    rt: &tokio::runtime::Runtime,
    cache: Option<&Path>,
) -> (Repository, Arc<FaultyBackend>) {
    let counting = Arc::new(FaultyBackend::new(
        Arc::new(LocalBackend::new(root)),
        FaultPlan::default(),
    ));
    let repo = Repository::open(counting.clone(), rt.handle().clone(), PASSWORD).unwrap();
    repo.use_cache(cache).unwrap();
    repo.load_index().unwrap();
    (repo, counting)
}

/// A "backup": content blobs, a tree naming them (and the parent's tree),
/// a snapshot. Reads the parent snapshot's tree as an incremental does.
fn backup(repo: &Repository, day: u8) -> Id {
    let parent = repo.snapshots().unwrap().into_iter().last();
    let parent_tree: Option<Tree> = parent.map(|p| repo.load_tree(&p.snapshot.tree).unwrap());
    let w = BlobWriter::with_threads(repo, 2);
    let mut content = Vec::new();
    for i in 0..20u8 {
        let data: Vec<u8> = (0..40_000u32)
            .map(|k| (k as u8) ^ i ^ day.wrapping_mul(31))
            .collect();
        content.push(w.submit(BlobType::Data, data).unwrap().wait().unwrap());
    }
    let mut tree = serde_json::json!({
        "version": 2,
        "nodes": [{"name": format!("day{day}"), "kind": "file", "mode": 420, "uid": 0, "gid": 0,
                   "size": 800000, "mtime": {"sec": 1, "nsec": 0}, "content": content}]
    });
    if let Some(t) = parent_tree {
        tree["previous"] = serde_json::json!(t.nodes.len());
    }
    let tree_id = w
        .save(BlobType::Tree, &serde_json::to_vec(&tree).unwrap())
        .unwrap();
    w.finish(repo).unwrap();
    let mut snap: Snapshot = serde_json::from_value(serde_json::json!({
        "time": format!("2026-12-0{}T00:00:00Z", day.clamp(1, 9)), "hostname": "h", "username": "u",
        "source": "h:/d", "kind": "files", "tags": [], "paths": ["/d"],
        "tree": tree_id, "program_version": "test"
    }))
    .unwrap();
    snap.parent = None;
    repo.save_snapshot(&snap).unwrap()
}

/// With a warm cache, opening, listing snapshots, reading the parent's
/// trees and writing the next backup fetch no index object, snapshot or
/// tree pack; without a cache the same work fetches them.
#[test]
fn warm_incremental_backup_makes_no_metadata_gets() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let (root, cache) = (dir.path().join("repo"), dir.path().join("cache"));
    init(&root, &rt);
    {
        let (repo, _) = open(&root, &rt, Some(&cache));
        backup(&repo, 1);
    }
    for day in 2..5 {
        let (repo, counting) = open(&root, &rt, Some(&cache));
        backup(&repo, day);
        let gets = reads(&counting);
        assert_eq!(metadata_gets(&gets), 0, "day {day}: {gets:?}");
    }
    // --no-cache: the same work reads the metadata from storage.
    let (repo, counting) = open(&root, &rt, None);
    backup(&repo, 5);
    let gets = reads(&counting);
    assert!(gets.get("index").copied().unwrap_or(0) >= 4, "{gets:?}");
    assert!(gets.get("snapshot").copied().unwrap_or(0) >= 4, "{gets:?}");
    assert!(gets.get("pack").copied().unwrap_or(0) >= 1, "{gets:?}");
    // And a cold cache fills itself: the next open is warm.
    let cold = dir.path().join("cold");
    let (repo2, _) = open(&root, &rt, Some(&cold));
    assert_eq!(repo2.snapshots().unwrap().len(), 5);
    drop((repo, repo2));
    let (repo, counting) = open(&root, &rt, Some(&cold));
    let snaps = repo.snapshots().unwrap();
    assert_eq!(snaps.len(), 5);
    assert_eq!(reads(&counting).get("index"), None);
}

fn cached_files(cache: &Path, sub: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for repo in std::fs::read_dir(cache).unwrap().flatten() {
        if let Ok(rd) = std::fs::read_dir(repo.path().join(sub)) {
            out.extend(rd.flatten().map(|e| e.path()));
        }
    }
    out.sort();
    out
}

/// Every kind of cache entry, damaged (a flipped bit, truncated, emptied),
/// is detected, never used, and replaced from storage.
#[test]
fn damaged_cache_entries_are_refetched() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let (root, cache) = (dir.path().join("repo"), dir.path().join("cache"));
    init(&root, &rt);
    let mut trees = Vec::new();
    {
        let (repo, _) = open(&root, &rt, Some(&cache));
        for day in 1..4 {
            backup(&repo, day);
        }
        for s in repo.snapshots().unwrap() {
            trees.push((s.snapshot.tree, repo.load_tree(&s.snapshot.tree).unwrap()));
        }
    }
    type Damage = fn(&mut Vec<u8>);
    let damages: [(&str, Damage); 3] = [
        ("bit flip", |b| {
            let i = b.len() / 2;
            b[i] ^= 4;
        }),
        ("truncated", |b| b.truncate(b.len() - 1)),
        ("empty", |b| b.clear()),
    ];
    for (what, damage) in damages {
        for sub in ["index", "snapshots", "data", "runs"] {
            let files = cached_files(&cache, sub);
            assert!(!files.is_empty(), "{sub}: nothing cached");
            for f in &files {
                let mut b = std::fs::read(f).unwrap();
                damage(&mut b);
                std::fs::write(f, &b).unwrap();
            }
            let (repo, counting) = open(&root, &rt, Some(&cache));
            let snaps = repo.snapshots().unwrap();
            assert_eq!(snaps.len(), 3, "{what} {sub}");
            for (id, want) in &trees {
                let got = repo.load_tree(id).unwrap();
                assert_eq!(
                    serde_json::to_value(&got.nodes).unwrap(),
                    serde_json::to_value(&want.nodes).unwrap(),
                    "{what} {sub}"
                );
                for n in &got.nodes {
                    for b in &n.content {
                        assert!(repo.read_blob(b).is_ok(), "{what} {sub}: blob {b}");
                    }
                }
            }
            let gets = reads(&counting);
            if sub != "runs" {
                assert!(
                    metadata_gets(&gets) > 0,
                    "{what} {sub}: damage went unnoticed"
                );
            }
            // Repaired: the next open is warm again and needs nothing.
            drop(repo);
            let (repo, counting) = open(&root, &rt, Some(&cache));
            for (id, _) in &trees {
                repo.load_tree(id).unwrap();
            }
            repo.snapshots().unwrap();
            let gets = reads(&counting);
            assert_eq!(
                metadata_gets(&gets),
                0,
                "{what} {sub}: not repaired: {gets:?}"
            );
        }
    }
}

/// A small index object as `wal-push` writes one: a pack of a few blobs.
fn small_object(repo: &Repository, seed: u64) -> Vec<Id> {
    let ids: Vec<Id> = (0..3u64)
        .map(|i| Id(*blake3::hash(&(seed * 10 + i).to_le_bytes()).as_bytes()))
        .collect();
    let pack = PackInfo {
        id: Id(*blake3::hash(format!("pack {seed}").as_bytes()).as_bytes()),
        salt: [seed as u8; 32],
        entries: ids
            .iter()
            .enumerate()
            .map(|(i, id)| PackEntry {
                blob_type: BlobType::Data,
                id: *id,
                offset: 37 + i as u32 * 100,
                length: 100,
                raw_len: 80,
                inner: 0,
            })
            .collect(),
    };
    repo.write_index(&[pack]).unwrap();
    ids
}

/// 1,500 small index objects: the first open builds one run, later opens
/// (with new objects each time) keep at most MAX_RUNS runs and fetch only
/// the new objects; every blob is found.
#[test]
fn thousands_of_small_index_objects_open_warm() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let (root, cache) = (dir.path().join("repo"), dir.path().join("cache"));
    init(&root, &rt);
    let mut all = Vec::new();
    {
        let (repo, _) = open(&root, &rt, None);
        for s in 0..1500 {
            all.extend(small_object(&repo, s));
        }
    }
    let t = std::time::Instant::now();
    let (_, counting) = open(&root, &rt, Some(&cache));
    eprintln!("cold open, 1500 index objects: {:?}", t.elapsed());
    assert_eq!(reads(&counting).get("index"), Some(&1500));
    for round in 0..30u64 {
        let (repo, _) = open(&root, &rt, Some(&cache));
        for s in 0..3 {
            all.extend(small_object(&repo, 10_000 + round * 3 + s));
        }
    }
    let t = std::time::Instant::now();
    let (repo, counting) = open(&root, &rt, Some(&cache));
    eprintln!("warm open, 1590 index objects: {:?}", t.elapsed());
    let gets = reads(&counting);
    assert_eq!(gets.get("index"), None, "{gets:?}");
    let f = repo.index().footprint();
    assert!(f.runs <= MAX_RUNS, "{f:?}");
    assert_eq!(f.fresh_entries, 0);
    let idx = repo.index();
    for id in &all {
        assert!(idx.contains(id), "{id:?} lost");
    }
    assert_eq!(idx.len(), all.len());
    assert!(cached_files(&cache, "runs").len() <= MAX_RUNS);
}

/// When an index object disappears from storage (GC replaced it), no run
/// holding it is used any more: its blobs are no longer found, the others are.
#[test]
fn runs_of_removed_index_objects_are_dropped() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let (root, cache) = (dir.path().join("repo"), dir.path().join("cache"));
    init(&root, &rt);
    let (a, b) = {
        let (repo, _) = open(&root, &rt, None);
        (small_object(&repo, 1), small_object(&repo, 2))
    };
    let (repo, _) = open(&root, &rt, Some(&cache));
    assert!(a.iter().chain(&b).all(|id| repo.index().contains(id)));
    drop(repo);
    // Remove the object holding `a`, as a GC would.
    let names: Vec<String> = rt
        .block_on(LocalBackend::new(&root).list(ObjectKind::Index))
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    let backend = LocalBackend::new(&root);
    for n in names {
        let (repo, _) = open(&root, &rt, None);
        let bytes = rt
            .block_on(backend.get(ObjectKind::Index, &n, None))
            .unwrap();
        let key = repo.key().clone();
        let packs = holdfast_repo::index::decode(
            &holdfast_repo::object::open_any(&key, &bytes, "i")
                .unwrap()
                .1,
            "i",
        )
        .unwrap();
        if packs[0].entries.iter().any(|e| e.id == a[0]) {
            rt.block_on(backend.delete(ObjectKind::Index, &n)).unwrap();
        }
    }
    let (repo, _) = open(&root, &rt, Some(&cache));
    assert!(
        a.iter().all(|id| !repo.index().contains(id)),
        "a stale run was used"
    );
    assert!(b.iter().all(|id| repo.index().contains(id)));
    let cached = repo.cache().unwrap();
    assert_eq!(cached.names(CacheKind::Index).len(), 1);
}

/// The golden format-1 fixture reads the same through the cache as without.
#[test]
fn format_1_repository_reads_the_same_through_the_cache() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/golden-v1/repo");
    let root = dir.path().join("repo");
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(&fixture)
        .arg(&root)
        .status()
        .unwrap();
    assert!(st.success());
    let open1 = |cache: Option<&Path>| {
        let repo = Repository::open(
            Arc::new(LocalBackend::new(&root)),
            rt.handle().clone(),
            b"golden fixture password",
        )
        .unwrap();
        repo.use_cache(cache).unwrap();
        repo.load_index().unwrap();
        repo
    };
    let plain = open1(None);
    let cache = dir.path().join("cache");
    for _ in 0..2 {
        let cached = open1(Some(&cache));
        assert_eq!(plain.index().len(), cached.index().len());
        assert!(!plain.index().is_empty());
        for s in plain.snapshots().unwrap() {
            let mut stack = vec![s.snapshot.tree];
            while let Some(t) = stack.pop() {
                let (a, b) = (plain.load_tree(&t).unwrap(), cached.load_tree(&t).unwrap());
                assert_eq!(
                    serde_json::to_value(&a.nodes).unwrap(),
                    serde_json::to_value(&b.nodes).unwrap()
                );
                for n in &a.nodes {
                    stack.extend(n.subtree);
                    for blob in &n.content {
                        assert_eq!(plain.index().get(blob), cached.index().get(blob));
                        assert_eq!(
                            plain.read_blob(blob).unwrap(),
                            cached.read_blob(blob).unwrap()
                        );
                    }
                }
            }
        }
    }
}

/// `check` reads storage, not the cache: a stored object damaged after the
/// cache took a good copy of it is still reported.
#[test]
fn check_reads_storage_not_the_cache() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let (root, cache) = (dir.path().join("repo"), dir.path().join("cache"));
    init(&root, &rt);
    let (repo, _) = open(&root, &rt, Some(&cache));
    backup(&repo, 1);
    backup(&repo, 2);
    let opts = holdfast_repo::check::CheckOptions::default();
    let clean = holdfast_repo::check::check(&repo, &opts, &|_, _| {}).unwrap();
    assert!(clean.errors.is_empty(), "{:?}", clean.errors);
    for sub in ["index", "snapshots"] {
        let f = std::fs::read_dir(root.join(sub))
            .unwrap()
            .flatten()
            .next()
            .unwrap()
            .path();
        let good = std::fs::read(&f).unwrap();
        let mut bad = good.clone();
        let i = bad.len() - 5;
        bad[i] ^= 1;
        std::fs::write(&f, &bad).unwrap();
        let (repo, _) = open(&root, &rt, Some(&cache));
        let report = holdfast_repo::check::check(&repo, &opts, &|_, _| {}).unwrap();
        assert!(
            !report.errors.is_empty(),
            "damaged {sub} object not reported"
        );
        // The cache is back in use after the check.
        assert!(repo.cache().is_some());
        std::fs::write(&f, &good).unwrap();
    }
}

/// Lists a phantom index object (as if a GC removed it after the listing)
/// for the first `times` listings, then stops.
#[derive(Debug)]
struct Phantom {
    inner: Arc<dyn Backend>,
    times: Mutex<usize>,
}

#[async_trait]
impl Backend for Phantom {
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
        self.inner.put(kind, name, data, opts).await
    }
    async fn get(
        &self,
        kind: ObjectKind,
        name: &str,
        range: Option<Range<u64>>,
    ) -> StorageResult<Bytes> {
        self.inner.get(kind, name, range).await
    }
    async fn head(&self, kind: ObjectKind, name: &str) -> StorageResult<ObjectMeta> {
        self.inner.head(kind, name).await
    }
    async fn list(&self, kind: ObjectKind) -> StorageResult<Vec<ObjectMeta>> {
        let mut out = self.inner.list(kind).await?;
        let mut t = self.times.lock().unwrap();
        if kind == ObjectKind::Index && *t > 0 {
            *t -= 1;
            out.push(ObjectMeta {
                kind,
                name: "ab".repeat(32),
                size: 100,
                modified: None,
            });
        }
        Ok(out)
    }
    async fn delete(&self, kind: ObjectKind, name: &str) -> StorageResult<()> {
        self.inner.delete(kind, name).await
    }
}

/// An index object listed and then gone (replaced by a GC meanwhile) makes
/// the load list again rather than miss blobs; one that keeps vanishing is
/// an error that says so, never an index with blobs missing.
#[test]
fn index_objects_removed_while_loading_are_listed_again() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    init(&root, &rt);
    let ids = {
        let (repo, _) = open(&root, &rt, None);
        small_object(&repo, 7)
    };
    for (times, ok) in [(2, true), (10, false)] {
        for cache in [None, Some(dir.path().join(format!("cache{times}")))] {
            let b = Arc::new(Phantom {
                inner: Arc::new(LocalBackend::new(&root)),
                times: Mutex::new(times),
            });
            let repo = Repository::open(b, rt.handle().clone(), PASSWORD).unwrap();
            repo.use_cache(cache.as_deref()).unwrap();
            match repo.load_index() {
                Ok(()) => {
                    assert!(ok, "{times} phantom listings accepted");
                    assert!(ids.iter().all(|id| repo.index().contains(id)));
                    assert!(repo.index_problems().corrupt.is_empty());
                }
                Err(e) => {
                    assert!(!ok, "{times}: {e}");
                    assert!(e
                        .to_string()
                        .contains("removed while the index was being loaded"));
                }
            }
        }
    }
}
