//! Reachability (`holdfast_repo::reach`) on a real local repository: a
//! subtree shared by two snapshots is walked once, the packs found are
//! exactly those holding the snapshots' blobs (by the index), trees and
//! data are told apart, WAL manifest blobs count, and a blob in no index
//! stops the walk naming its snapshot instead of being guessed around.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use holdfast_repo::config::RepoConfig;
use holdfast_repo::index::BlobLocation;
use holdfast_repo::keys::KdfParams;
use holdfast_repo::pack::BlobType;
use holdfast_repo::reach::{reachable, Walker};
use holdfast_repo::snapshot::{Snapshot, SnapshotEntry};
use holdfast_repo::walmanifest::WalManifest;
use holdfast_repo::writer::BlobWriter;
use holdfast_repo::{Id, RepoError, Repository};
use holdfast_storage::local::LocalBackend;

const PASSWORD: &[u8] = b"reach test";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn open(root: &Path, rt: &tokio::runtime::Runtime) -> Repository {
    Repository::init(
        Arc::new(LocalBackend::new(root)),
        rt.handle().clone(),
        PASSWORD,
        KdfParams {
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
        },
        RepoConfig::new(),
    )
    .unwrap();
    Repository::open(
        Arc::new(LocalBackend::new(root)),
        rt.handle().clone(),
        PASSWORD,
    )
    .unwrap()
}

fn file(name: &str, content: &[Id]) -> serde_json::Value {
    serde_json::json!({"name": name, "kind": "file", "mode": 420, "uid": 0, "gid": 0,
        "size": 1, "mtime": {"sec": 1, "nsec": 0}, "content": content})
}

fn dir(name: &str, subtree: Id) -> serde_json::Value {
    serde_json::json!({"name": name, "kind": "dir", "mode": 493, "uid": 0, "gid": 0,
        "size": 0, "mtime": {"sec": 1, "nsec": 0}, "subtree": subtree})
}

fn tree(w: &BlobWriter, nodes: Vec<serde_json::Value>) -> Id {
    let t = serde_json::json!({"version": 2, "nodes": nodes});
    w.save(BlobType::Tree, &serde_json::to_vec(&t).unwrap())
        .unwrap()
}

fn data(w: &BlobWriter, seed: u8) -> Id {
    let bytes: Vec<u8> = (0..50_000u32).map(|k| (k as u8) ^ seed).collect();
    w.submit(BlobType::Data, bytes).unwrap().wait().unwrap()
}

fn snapshot(repo: &Repository, tree: Id, day: u8) -> SnapshotEntry {
    let snap: Snapshot = serde_json::from_value(serde_json::json!({
        "time": format!("2026-12-0{day}T00:00:00Z"), "hostname": "h", "username": "u",
        "source": "h:/d", "kind": "files", "tags": [], "paths": ["/d"],
        "tree": tree, "program_version": "test"
    }))
    .unwrap();
    let id = repo.save_snapshot(&snap).unwrap();
    SnapshotEntry { id, snapshot: snap }
}

#[test]
fn shared_subtrees_are_walked_once_and_packs_follow_the_index() {
    let rt = runtime();
    let dir_ = tempfile::tempdir().unwrap();
    let repo = open(dir_.path(), &rt);
    let w = BlobWriter::with_threads(&repo, 2);
    let common = data(&w, 1);
    let only1 = data(&w, 2);
    let only2 = data(&w, 3);
    let wal_blob = data(&w, 4);
    let deep = tree(&w, vec![file("c.txt", &[common, common])]);
    let shared = tree(&w, vec![dir("deep", deep), file("c2.txt", &[common])]);
    let root1 = tree(&w, vec![dir("common", shared), file("one", &[only1])]);
    let root2 = tree(&w, vec![dir("common", shared), file("two", &[only2])]);
    w.finish(&repo).unwrap();
    let s1 = snapshot(&repo, root1, 1);
    let s2 = snapshot(&repo, root2, 2);
    repo.load_index().unwrap();
    let index = repo.index();
    let pack = |b: &Id| index.get(b).unwrap().pack;

    // Each tree is visited once across both snapshots; data references
    // are all followed.
    let mut visits: HashMap<Id, usize> = HashMap::new();
    let mut walker = Walker::new(&repo);
    for s in [&s1, &s2] {
        walker
            .walk_tree(
                s.snapshot.tree,
                "test",
                &mut |id: &Id, loc: &BlobLocation| {
                    if loc.blob_type == BlobType::Tree {
                        *visits.entry(*id).or_default() += 1;
                    }
                },
            )
            .unwrap();
    }
    assert_eq!(walker.trees_seen(), 4, "deep, shared, root1, root2");
    assert!(visits.values().all(|v| *v == 1), "{visits:?}");

    let both = reachable(&repo, [&s1, &s2], []).unwrap();
    assert_eq!(both.trees, 4);
    // common twice in deep, once in c2.txt (walked once), plus one, two.
    assert_eq!(both.data_refs, 5);
    let want: HashSet<Id> = [common, only1, only2].iter().map(pack).collect();
    assert_eq!(both.data_packs, want);
    let want_trees: HashSet<Id> = [deep, shared, root1, root2].iter().map(pack).collect();
    assert_eq!(both.tree_packs, want_trees);
    assert!(
        both.data_packs.is_disjoint(&both.tree_packs),
        "trees and data are in separate packs"
    );
    // The index's own view of which packs hold trees agrees.
    assert_eq!(index.packs_holding(BlobType::Tree), want_trees);
    // A data blob stored the way trees are (a base backup's label) lands
    // in a pack of trees: that pack holds trees, whatever else it holds.
    let w = BlobWriter::with_threads(&repo, 1);
    let label = w
        .save(BlobType::Data, b"START WAL LOCATION: 0/2000028")
        .unwrap();
    let lone = tree(&w, vec![file("backup_label", &[label])]);
    w.finish(&repo).unwrap();
    repo.load_index().unwrap();
    let index = repo.index();
    let label_pack = index.get(&label).unwrap().pack;
    assert_eq!(label_pack, index.get(&lone).unwrap().pack);
    assert!(index.packs_holding(BlobType::Tree).contains(&label_pack));
    assert!(index.packs_holding(BlobType::Data).contains(&label_pack));

    // One snapshot alone: its own packs only; a WAL manifest's blobs count.
    let one = reachable(&repo, [&s1], []).unwrap();
    let want1: HashSet<Id> = [common, only1].iter().map(pack).collect();
    assert_eq!(one.data_packs, want1);
    let manifest = WalManifest {
        version: 1,
        cluster: "7".into(),
        name: "000000010000000000000001".into(),
        size: 50_000,
        blake3: String::new(),
        blobs: vec![wal_blob],
        archived_at: chrono::Utc::now(),
        stored_at: Vec::new(),
    };
    let named = ("7-000000010000000000000001".to_string(), manifest);
    let wal = reachable(&repo, [], [&named]).unwrap();
    assert_eq!(wal.data_packs, HashSet::from([pack(&wal_blob)]));
    assert_eq!(wal.trees, 0);
}

#[test]
fn a_blob_in_no_index_stops_the_walk_and_names_its_snapshot() {
    let rt = runtime();
    let dir_ = tempfile::tempdir().unwrap();
    let repo = open(dir_.path(), &rt);
    let w = BlobWriter::with_threads(&repo, 1);
    let stray = Id::of_stored(b"never stored");
    let root = tree(&w, vec![file("lost", &[stray])]);
    w.finish(&repo).unwrap();
    let s = snapshot(&repo, root, 3);
    repo.load_index().unwrap();
    match reachable(&repo, [&s], []) {
        Err(RepoError::MissingBlob {
            blob,
            referenced_by,
        }) => {
            assert_eq!(blob, stray.to_hex());
            assert!(referenced_by.contains(&s.id.short()), "{referenced_by}");
        }
        other => panic!("a missing blob must stop the walk, got {other:?}"),
    }
}
