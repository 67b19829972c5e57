//! Archival's invariants over random histories, checked independently of
//! the code under test:
//!
//! - **never too much:** every hot snapshot restores (and lists) byte for
//!   byte without a single retrieval, so nothing a hot snapshot needs,
//!   data or tree, went cold;
//! - **never too little:** every data pack that only archived snapshots
//!   need (found here by walking the trees) and that holds no tree is in
//!   the archive class, and nothing else is;
//! - archived snapshots restore byte for byte after their retrievals;
//! - a second run moves nothing.
//!
//! The store is a real local directory seen through a small decorator
//! that gives it storage classes as S3 has them (a class per object, an
//! archival class unreadable until retrieved), so that many random
//! histories run in seconds; the S3 path itself runs on moto in
//! `tests/archive.rs`. Packs are 64 KiB, so files spread over many packs
//! and snapshots share some of them and not others.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use holdfast_ops::archive::{archive, ArchiveConfig};
use holdfast_ops::backup::{backup_files, FileBackupConfig};
use holdfast_ops::open::{open, Credential};
use holdfast_ops::restore::{restore_files, FileRestoreConfig, SnapshotSpec};
use holdfast_repo::config::RepoConfig;
use holdfast_repo::keys::KdfParams;
use holdfast_repo::snapshot::SnapshotEntry;
use holdfast_repo::{Id, Repository};
use holdfast_sources::restore::RestoreOptions;
use holdfast_sources::Progress;
use holdfast_storage::local::LocalBackend;
use holdfast_storage::{
    ArchiveState, Backend, Capabilities, ClassChange, ClassedObject, ObjectKind, ObjectMeta,
    PutOptions, StorageError, StorageResult,
};

const PASSWORD: &[u8] = b"archive property test";
const COLD: &str = "DEEP_ARCHIVE";

/// A local directory with S3-like storage classes: every object has a
/// class (STANDARD unless moved), objects in `DEEP_ARCHIVE` answer
/// `Archived` to reads until `restore_archived` (which is immediate here).
#[derive(Debug)]
struct Classed {
    inner: LocalBackend,
    classes: Mutex<HashMap<String, String>>,
    /// Names of the packs moved into the archive class.
    cold_packs: Mutex<HashSet<String>>,
    retrieved: Mutex<HashSet<String>>,
    restores: AtomicUsize,
}

impl Classed {
    fn new(root: &Path) -> Classed {
        Classed {
            inner: LocalBackend::new(root),
            classes: Mutex::default(),
            cold_packs: Mutex::default(),
            retrieved: Mutex::default(),
            restores: AtomicUsize::new(0),
        }
    }

    fn class(&self, kind: ObjectKind, name: &str) -> String {
        self.classes
            .lock()
            .unwrap()
            .get(&kind.key(name))
            .cloned()
            .unwrap_or_else(|| "STANDARD".into())
    }

    fn readable(&self, kind: ObjectKind, name: &str) -> bool {
        self.class(kind, name) != COLD || self.retrieved.lock().unwrap().contains(&kind.key(name))
    }

    /// Forget every retrieval (a new day: restored copies expired).
    fn expire(&self) {
        self.retrieved.lock().unwrap().clear();
        self.restores.store(0, Ordering::SeqCst);
    }
}

#[async_trait]
impl Backend for Classed {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            storage_classes: true,
            archive_restore: true,
            ..self.inner.capabilities()
        }
    }
    async fn put(&self, k: ObjectKind, n: &str, d: Bytes, o: &PutOptions) -> StorageResult<()> {
        self.inner.put(k, n, d, o).await
    }
    async fn get(&self, k: ObjectKind, n: &str, r: Option<Range<u64>>) -> StorageResult<Bytes> {
        if !self.readable(k, n) {
            return Err(StorageError::Archived { key: k.key(n) });
        }
        self.inner.get(k, n, r).await
    }
    async fn head(&self, k: ObjectKind, n: &str) -> StorageResult<ObjectMeta> {
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
    ) -> StorageResult<ClassChange> {
        self.inner.head(k, n).await?;
        let mut classes = self.classes.lock().unwrap();
        if classes.get(&k.key(n)).map(String::as_str) == Some(class) {
            return Ok(ClassChange::Unchanged);
        }
        classes.insert(k.key(n), class.to_string());
        if k == ObjectKind::Pack && class == COLD {
            self.cold_packs.lock().unwrap().insert(n.to_string());
        }
        Ok(ClassChange::Moved)
    }
    async fn list_classes(&self, k: ObjectKind) -> StorageResult<Vec<ClassedObject>> {
        Ok(self
            .inner
            .list(k)
            .await?
            .into_iter()
            .map(|meta| ClassedObject {
                storage_class: Some(self.class(k, &meta.name)),
                meta,
            })
            .collect())
    }
    async fn archive_state(&self, k: ObjectKind, n: &str) -> StorageResult<ArchiveState> {
        Ok(if self.readable(k, n) {
            ArchiveState::Readable
        } else {
            ArchiveState::Archived
        })
    }
    async fn restore_archived(&self, k: ObjectKind, n: &str, _days: u32) -> StorageResult<()> {
        self.restores.fetch_add(1, Ordering::SeqCst);
        self.retrieved.lock().unwrap().insert(k.key(n));
        Ok(())
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    (0..len).map(|_| r.next() as u8).collect()
}

/// Data packs and tree packs of `snap`, by walking its trees here.
fn packs_of(repo: &Repository, snap: &SnapshotEntry) -> (HashSet<Id>, HashSet<Id>) {
    let index = repo.index();
    let (mut data, mut trees) = (HashSet::new(), HashSet::new());
    let mut stack = vec![snap.snapshot.tree];
    while let Some(t) = stack.pop() {
        trees.insert(index.get(&t).expect("tree indexed").pack);
        for n in repo.load_tree(&t).expect("tree").nodes {
            stack.extend(n.subtree);
            for b in &n.content {
                data.insert(index.get(b).expect("blob indexed").pack);
            }
        }
    }
    (data, trees)
}

fn same_dir(want: &HashMap<String, Vec<u8>>, got: &Path, what: &str) {
    let mut names: Vec<String> = std::fs::read_dir(got)
        .unwrap_or_else(|e| panic!("{what}: {}: {e}", got.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected: Vec<String> = want.keys().cloned().collect();
    expected.sort();
    assert_eq!(names, expected, "{what}: files");
    for (name, content) in want {
        assert!(
            std::fs::read(got.join(name)).expect("read") == *content,
            "{what}: {name} differs"
        );
    }
}

/// One random history; returns (packs moved, packs kept hot as shared).
fn one_history(seed: u64) -> (u64, u64) {
    let mut rng = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("repo");
    let backend = Arc::new(Classed::new(&root));
    let mut cfg = RepoConfig::new();
    cfg.pack_size = 64 * 1024;
    Repository::init(
        backend.clone(),
        rt.handle().clone(),
        PASSWORD,
        KdfParams {
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
        },
        cfg,
    )
    .expect("init");
    let repo = open(
        backend.clone(),
        rt.handle(),
        &Credential::Password(PASSWORD.to_vec()),
    )
    .expect("open");

    // A pool of contents; each snapshot holds a random subset of them.
    let pool: Vec<Vec<u8>> = (0..10)
        .map(|i| noise(20_000 + rng.below(150_000) as usize, seed * 100 + i))
        .collect();
    let src = dir.path().join("src");
    let n_snaps = 3 + rng.below(4) as usize;
    let mut contents: Vec<HashMap<String, Vec<u8>>> = Vec::new();
    for _ in 0..n_snaps {
        let _ = std::fs::remove_dir_all(&src);
        std::fs::create_dir_all(&src).expect("mkdir");
        let mut files = HashMap::new();
        for (i, c) in pool.iter().enumerate() {
            if rng.below(3) == 0 {
                let name = format!("f{i}.bin");
                std::fs::write(src.join(&name), c).expect("write");
                files.insert(name, c.clone());
            }
        }
        if files.is_empty() {
            std::fs::write(src.join("f0.bin"), &pool[0]).expect("write");
            files.insert("f0.bin".into(), pool[0].clone());
        }
        let mut b = FileBackupConfig::new(vec![src.clone()]);
        b.source = Some("s".into());
        backup_files(&repo, &b, &Progress::default()).expect("backup");
        contents.push(files);
    }
    let snaps = repo.snapshots().expect("snapshots");
    assert_eq!(snaps.len(), n_snaps);
    // Snapshots are listed by time; backups ran in order.
    let cold: BTreeSet<Id> = snaps
        .iter()
        .filter(|_| rng.below(2) == 0)
        .map(|s| s.id)
        .collect();

    repo.load_index().expect("index");
    let report = archive(
        &repo,
        &ArchiveConfig {
            snapshots: cold.clone(),
            leaving: BTreeSet::new(),
            class: COLD.into(),
            dry_run: false,
        },
        &|_, _| {},
    )
    .expect("archive");

    // Never too little, nothing else: computed here from the trees.
    let (mut hot_data, mut cold_data, mut tree_packs) =
        (HashSet::new(), HashSet::new(), HashSet::new());
    for s in &snaps {
        let (d, t) = packs_of(&repo, s);
        tree_packs.extend(t);
        if cold.contains(&s.id) {
            cold_data.extend(d);
        } else {
            hot_data.extend(d);
        }
    }
    let want: HashSet<Id> = cold_data
        .difference(&hot_data)
        .filter(|p| !tree_packs.contains(*p))
        .copied()
        .collect();
    let got: HashSet<Id> = backend
        .cold_packs
        .lock()
        .unwrap()
        .iter()
        .map(|n| n.parse::<Id>().expect("pack id"))
        .collect();
    assert_eq!(got, want, "seed {seed}: the packs in {COLD}");
    assert_eq!(report.packs_moved as usize, want.len(), "seed {seed}");

    // Never too much: hot snapshots list and restore with no retrieval.
    backend.expire();
    let fresh = open(
        backend.clone(),
        rt.handle(),
        &Credential::Password(PASSWORD.to_vec()),
    )
    .expect("open");
    fresh.load_index().expect("index");
    for (i, s) in snaps.iter().enumerate() {
        holdfast_sources::walk::walk(&fresh, s.snapshot.tree, b"/", &mut |_, _| Ok(()))
            .unwrap_or_else(|e| panic!("seed {seed}: ls of snapshot {i} needed a retrieval: {e}"));
        let target = dir.path().join(format!("out{i}"));
        let done = restore_files(
            &fresh,
            &FileRestoreConfig {
                snapshot: SnapshotSpec {
                    spec: s.id.to_hex(),
                    filter: Default::default(),
                },
                target: target.clone(),
                includes: Vec::new(),
                cwd: dir.path().to_path_buf(),
                options: RestoreOptions::default(),
            },
            &Progress::default(),
        )
        .unwrap_or_else(|e| panic!("seed {seed}: restore of snapshot {i}: {e}"));
        assert!(done.outcome.failed.is_empty(), "{:?}", done.outcome.failed);
        if !cold.contains(&s.id) {
            assert_eq!(
                backend.restores.load(Ordering::SeqCst),
                0,
                "seed {seed}: hot snapshot {i} needed a retrieval"
            );
        }
        same_dir(
            &contents[i],
            &target.join(src.strip_prefix("/").expect("absolute")),
            &format!("seed {seed}, snapshot {i}"),
        );
        backend.expire();
    }

    // Again: nothing moves.
    fresh.load_index().expect("index");
    let again = archive(
        &fresh,
        &ArchiveConfig {
            snapshots: cold,
            leaving: BTreeSet::new(),
            class: COLD.into(),
            dry_run: false,
        },
        &|_, _| {},
    )
    .expect("archive again");
    assert_eq!(again.packs_moved, 0, "seed {seed}");
    assert_eq!(again.packs_already as usize, want.len(), "seed {seed}");
    (report.packs_moved, report.packs_shared_hot)
}

#[test]
fn random_histories_archive_exactly_what_only_cold_snapshots_need() {
    let (mut moved, mut shared) = (0, 0);
    for seed in 1..=12 {
        let (m, s) = one_history(seed);
        moved += m;
        shared += s;
    }
    // The histories exercise both sides of the rule.
    assert!(moved > 0 && shared > 0, "moved {moved}, shared {shared}");
    println!("moved {moved} pack(s), kept {shared} shared pack(s) hot");
}
