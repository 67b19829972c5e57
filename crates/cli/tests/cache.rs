//! The local cache on S3 and through the binary: an incremental backup to
//! a real S3 server (moto) with a warm cache makes no metadata GETs (every
//! request counted by a backend decorator around the S3 backend);
//! `--cache-dir`, `$XDG_CACHE_HOME` and `~/.cache` are where the cache goes,
//! `--no-cache` writes and reads none, and deleting the cache between
//! commands changes nothing but the requests.

mod common;
#[path = "../../s3/tests/harness/mod.rs"]
mod harness;

use std::collections::HashMap;
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use harness::Moto;
use holdfast_repo::config::RepoConfig;
use holdfast_repo::keys::KdfParams;
use holdfast_repo::Repository;
use holdfast_s3::S3Backend;
use holdfast_sources::backup::{self, BackupOptions};
use holdfast_sources::Progress;
use holdfast_storage::{Backend, Capabilities, ObjectKind, ObjectMeta, PutOptions, StorageResult};

/// Counts GET and HEAD requests by object kind, passing everything on.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn Backend>,
    reads: Mutex<HashMap<String, usize>>,
}

impl Counting {
    fn bump(&self, op: &str, kind: ObjectKind) {
        *self
            .reads
            .lock()
            .unwrap()
            .entry(format!("{op} {kind:?}"))
            .or_default() += 1;
    }
    fn take(&self) -> HashMap<String, usize> {
        std::mem::take(&mut *self.reads.lock().unwrap())
    }
}

#[async_trait::async_trait]
impl Backend for Counting {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn put(&self, k: ObjectKind, n: &str, d: Bytes, o: &PutOptions) -> StorageResult<()> {
        self.inner.put(k, n, d, o).await
    }
    async fn get(&self, k: ObjectKind, n: &str, r: Option<Range<u64>>) -> StorageResult<Bytes> {
        self.bump("GET", k);
        self.inner.get(k, n, r).await
    }
    async fn head(&self, k: ObjectKind, n: &str) -> StorageResult<ObjectMeta> {
        self.bump("HEAD", k);
        self.inner.head(k, n).await
    }
    async fn list(&self, k: ObjectKind) -> StorageResult<Vec<ObjectMeta>> {
        self.inner.list(k).await
    }
    async fn delete(&self, k: ObjectKind, n: &str) -> StorageResult<()> {
        self.inner.delete(k, n).await
    }
    async fn set_storage_class(
        &self,
        k: ObjectKind,
        n: &str,
        class: &str,
    ) -> StorageResult<holdfast_storage::ClassChange> {
        self.inner.set_storage_class(k, n, class).await
    }
    async fn list_classes(
        &self,
        k: ObjectKind,
    ) -> StorageResult<Vec<holdfast_storage::ClassedObject>> {
        self.inner.list_classes(k).await
    }
}

/// GETs and HEADs of metadata: index objects, snapshots, packs (a file
/// backup whose files are unchanged or new reads no data pack, so every
/// pack read is a tree pack). Not the `HEAD` of the parent snapshot a
/// writer makes once its lease is held: that asks whether the parent
/// still exists (a purge and a GC may have removed it), which no cache
/// can answer.
fn metadata_reads(c: &HashMap<String, usize>) -> usize {
    c.iter()
        .filter(|(k, _)| k.ends_with("Index") || k.ends_with("Snapshot") || k.ends_with("Pack"))
        .filter(|(k, _)| k.as_str() != "HEAD Snapshot")
        .map(|(_, v)| v)
        .sum()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn tree(root: &Path) {
    for d in 0..6 {
        let dir = root.join(format!("ward{d}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..8 {
            fs::write(
                dir.join(format!("note{f}.txt")),
                text(20_000 + f * 999, d as u64 * 10 + f as u64),
            )
            .unwrap();
        }
    }
    fs::write(root.join("scan.pdf"), noise(3_000_000, 9)).unwrap();
}

/// One file backup through the library, as the CLI does it: lineage
/// (snapshots), parent trees, new blobs, index, snapshot.
fn backup_once(repo: &Repository, src: &Path) -> holdfast_repo::snapshot::Summary {
    repo.load_index().unwrap();
    let source = "test:/src".to_string();
    let lineage = backup::lineage(repo, &source, None, true).unwrap();
    let opts = BackupOptions {
        source,
        tags: vec![],
        parent: lineage.latest,
        excludes: lineage.excludes,
        scan: false,
        no_xattrs: false,
        parallelism: backup::Parallelism::default(),
        time: None,
        predecessors: Some(lineage.predecessors),
    };
    let out = backup::backup(repo, &[src.to_path_buf()], &opts, &Progress::default()).unwrap();
    out.snapshot.summary
}

/// The target: an incremental backup to S3 with a warm cache makes
/// no GET or HEAD of an index object, snapshot or pack. The cold one
/// (a new cache directory) does, and fills the cache.
#[test]
fn warm_incremental_backup_to_s3_makes_no_metadata_gets() {
    let moto = Moto::start();
    let rt = runtime();
    rt.block_on(moto.create_bucket("cache"));
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    tree(&src);
    let connect = || -> (Arc<Counting>, Arc<dyn Backend>) {
        let s3 = rt
            .block_on(S3Backend::connect(moto.config("cache", "clinic")))
            .unwrap();
        let c = Arc::new(Counting {
            inner: Arc::new(s3),
            reads: Mutex::default(),
        });
        (c.clone(), c)
    };
    let kdf = KdfParams {
        m_cost: 64,
        t_cost: 1,
        p_cost: 1,
    };
    let (_, b) = connect();
    Repository::init(b, rt.handle().clone(), b"pw", kdf, RepoConfig::new()).unwrap();
    let open = |cache: Option<&Path>| {
        let (c, b) = connect();
        let repo = Repository::open(b, rt.handle().clone(), b"pw").unwrap();
        repo.use_cache(cache).unwrap();
        (repo, c)
    };
    let cache = dir.path().join("cache");
    let (repo, _) = open(Some(&cache));
    let first = backup_once(&repo, &src);
    assert_eq!(first.files_new, 49);
    drop(repo);
    for round in 0..3u64 {
        // The "next day": one file changed, one added.
        fs::write(src.join("ward1/note3.txt"), text(25_000, 100 + round)).unwrap();
        fs::write(
            src.join(format!("new{round}.txt")),
            text(5_000, 200 + round),
        )
        .unwrap();
        let (repo, counting) = open(Some(&cache));
        let s = backup_once(&repo, &src);
        assert!(s.files_unchanged >= 47, "round {round}: {s:?}");
        assert!(s.files_changed + s.files_new >= 2, "round {round}: {s:?}");
        let reads = counting.take();
        assert_eq!(metadata_reads(&reads), 0, "round {round}: {reads:?}");
    }
    // A cold cache: the same backup reads the metadata, once.
    let cold = dir.path().join("cold");
    let (repo, counting) = open(Some(&cold));
    backup_once(&repo, &src);
    let reads = counting.take();
    assert!(
        reads.get("GET Index").copied().unwrap_or(0) >= 4,
        "{reads:?}"
    );
    assert!(
        reads.get("GET Snapshot").copied().unwrap_or(0) >= 4,
        "{reads:?}"
    );
    assert!(
        reads.get("GET Pack").copied().unwrap_or(0) >= 1,
        "{reads:?}"
    );
    drop(repo);
    // No cache at all: every open reads the metadata.
    let (repo, counting) = open(None);
    backup_once(&repo, &src);
    assert!(metadata_reads(&counting.take()) >= 9);
    // And the snapshots restore-verify clean through the cache.
    let (repo, _) = open(Some(&cache));
    repo.load_index().unwrap();
    let report = holdfast_repo::check::check(
        &repo,
        &holdfast_repo::check::CheckOptions {
            read_data: true,
            ..Default::default()
        },
        &|_, _| {},
    )
    .unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
}

/// The repositories' directories under a cache root (named by repository
/// id; `kdf-hints` beside them is not one).
fn cache_repos(root: &Path) -> Vec<PathBuf> {
    match fs::read_dir(root) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.parse::<holdfast_repo::Id>().is_ok())
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Where the cache goes, `--no-cache`, and a cache deleted between commands.
#[test]
fn cache_location_no_cache_and_deletion() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    tree(&src);
    let home = env.path("home");
    let xdg = env.path("xdg");
    let explicit = env.path("explicit");
    fs::create_dir_all(&home).unwrap();
    let run = |extra_env: &[(&str, &Path)], args: &[&str]| {
        let mut c = env.cmd();
        c.env_remove("XDG_CACHE_HOME")
            .env_remove("HOLDFAST_CACHE_DIR")
            .env("HOME", &home);
        for (k, v) in extra_env {
            c.env(k, v);
        }
        let out = c.args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        out
    };
    let s = src.to_str().unwrap();
    // --no-cache: nothing is written anywhere.
    run(&[("XDG_CACHE_HOME", &xdg)], &["--no-cache", "backup", s]);
    run(
        &[],
        &[
            "--no-cache",
            "--cache-dir",
            explicit.to_str().unwrap(),
            "snapshots",
        ],
    );
    assert!(!xdg.exists() && !explicit.exists() && !home.join(".cache").exists());
    // Default: ~/.cache/holdfast/<repository id>/...
    run(&[], &["backup", s]);
    let repos = cache_repos(&home.join(".cache/holdfast"));
    assert_eq!(repos.len(), 1);
    let id = repos[0].file_name().unwrap().to_owned();
    for sub in ["index", "snapshots", "data", "runs"] {
        assert!(
            fs::read_dir(repos[0].join(sub)).unwrap().next().is_some(),
            "{sub} is empty"
        );
    }
    assert!(home.join(".cache/holdfast/CACHEDIR.TAG").exists());
    // $XDG_CACHE_HOME wins over ~/.cache, --cache-dir over both.
    run(&[("XDG_CACHE_HOME", &xdg)], &["snapshots"]);
    assert_eq!(cache_repos(&xdg.join("holdfast")).len(), 1);
    run(
        &[("XDG_CACHE_HOME", &xdg)],
        &["--cache-dir", explicit.to_str().unwrap(), "snapshots"],
    );
    assert!(explicit.join(&id).join("snapshots").exists());
    // Private: the cache holds a repository's metadata.
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(home.join(".cache/holdfast").join(&id))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "cache directory mode {mode:o}");
    // Deleted between commands: the next backup and restore just work.
    fs::remove_dir_all(home.join(".cache")).unwrap();
    fs::write(src.join("ward2/note1.txt"), text(31_000, 77)).unwrap();
    let out = run(&[], &["backup", s, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["summary"]["files_changed"], 1);
    let target = env.path("restored");
    run(
        &[],
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    let restored = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(
        fs::read(restored.join("ward2/note1.txt")).unwrap(),
        fs::read(src.join("ward2/note1.txt")).unwrap()
    );
    // A file in the cache damaged on purpose: detected, replaced, same result.
    for sub in ["index", "snapshots", "data"] {
        let d = cache_repos(&home.join(".cache/holdfast"))[0].join(sub);
        for f in fs::read_dir(&d).unwrap().flatten() {
            let mut b = fs::read(f.path()).unwrap();
            let i = b.len() / 3;
            b[i] ^= 0x40;
            fs::write(f.path(), b).unwrap();
        }
    }
    run(&[], &["check"]);
    let out = run(&[], &["backup", s, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["summary"]["files_new"], 0);
    assert_eq!(v["summary"]["files_changed"], 0);
}

/// Trees are read from the cache's copy of their pack one blob at a time,
/// without checking the whole copy first. A copy damaged everywhere is
/// therefore caught blob by blob: every tree read falls back to storage,
/// the damaged copies are dropped, and the restore is exact.
#[test]
fn damaged_cached_tree_packs_are_never_trusted() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    tree(&src);
    let cache = env.path("cache");
    let c = cache.to_str().unwrap();
    let s = src.to_str().unwrap();
    env.ok(["--cache-dir", c, "backup", s]);
    let data = cache_repos(&cache)[0].join("data");
    let damaged: Vec<PathBuf> = fs::read_dir(&data)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(!damaged.is_empty(), "the backup cached its tree packs");
    for p in &damaged {
        let mut b = fs::read(p).unwrap();
        // Past the header, a flipped byte every 512: every region is hit.
        for i in (40..b.len()).step_by(512) {
            b[i] ^= 0x5a;
        }
        fs::write(p, b).unwrap();
    }
    let target = env.path("restored");
    env.ok([
        "--cache-dir",
        c,
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_same_tree(&src, &target.join(src.strip_prefix("/").unwrap()));
    for p in &damaged {
        if let Ok(b) = fs::read(p) {
            let name = p.file_name().unwrap().to_str().unwrap();
            assert_eq!(
                holdfast_repo::Id::of_stored(&b).to_hex(),
                name,
                "a damaged cached pack was kept"
            );
        }
    }
}
