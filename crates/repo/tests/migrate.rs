//! `migrate` of a format-2 repository with snapshots, index objects and WAL
//! manifests, including a rerun after a crash in the middle of re-sealing a
//! WAL manifest, and the name binding of every kind after it.

use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use holdfast_repo::check::{check, CheckOptions};
use holdfast_repo::config::RepoConfig;
use holdfast_repo::keys::KdfParams;
use holdfast_repo::migrate::migrate;
use holdfast_repo::object::{self, Binding};
use holdfast_repo::pack::BlobType;
use holdfast_repo::snapshot::Snapshot;
use holdfast_repo::walmanifest::{WalManifest, STAGED_SUFFIX};
use holdfast_repo::writer::BlobWriter;
use holdfast_repo::{Id, RepoError, Repository};
use holdfast_storage::local::LocalBackend;
use holdfast_storage::{Backend, ObjectKind};

const FAST_KDF: KdfParams = KdfParams {
    m_cost: 64,
    t_cost: 1,
    p_cost: 1,
};
const PW: &[u8] = b"migrate test";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn snapshot(repo: &Repository, source: &str, data: &[u8]) -> Id {
    let w = BlobWriter::with_threads(repo, 1);
    let blob = w
        .submit(BlobType::Data, data.to_vec())
        .unwrap()
        .wait()
        .unwrap();
    let tree = holdfast_repo::tree::Tree::new(vec![]);
    let tree_json = serde_json::to_vec(&tree).unwrap();
    let tree_id = w.submit(BlobType::Tree, tree_json).unwrap().wait().unwrap();
    w.finish(repo).unwrap();
    let mut meta = std::collections::BTreeMap::new();
    meta.insert("blob".to_string(), serde_json::json!(blob));
    repo.save_snapshot(&Snapshot {
        time: Utc::now(),
        hostname: "h".into(),
        username: "u".into(),
        source: source.into(),
        kind: "files".into(),
        tags: vec![],
        paths: vec!["/x".into()],
        tree: tree_id,
        parent: None,
        summary: Default::default(),
        program_version: "test".into(),
        meta,
        predecessors: vec![],
        migrated_from: None,
        audit_head: None,
    })
    .unwrap()
}

fn manifest(repo: &Repository, name: &str, data: &[u8]) -> WalManifest {
    let w = BlobWriter::with_threads(repo, 1);
    let blob = w
        .submit(BlobType::Data, data.to_vec())
        .unwrap()
        .wait()
        .unwrap();
    w.finish(repo).unwrap();
    let m = WalManifest {
        version: 1,
        cluster: "7".into(),
        name: name.into(),
        size: data.len() as u64,
        blake3: blake3::hash(data).to_hex().to_string(),
        blobs: vec![blob],
        archived_at: Utc::now(),
        stored_at: vec![],
    };
    assert!(repo.put_wal_manifest(&m).unwrap());
    m
}

#[test]
fn format_2_repository_migrates_and_a_crashed_run_finishes() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path()));
    let repo = Repository::init_format(
        backend.clone(),
        rt.handle().clone(),
        PW,
        FAST_KDF,
        RepoConfig::new(),
        2,
    )
    .unwrap();
    let s1 = snapshot(&repo, "a", b"first");
    let s2 = snapshot(&repo, "a", b"second");
    let s3 = snapshot(&repo, "b", b"other source");
    let seg1 = "000000010000000000000001";
    let seg2 = "000000010000000000000002";
    let m1 = manifest(&repo, seg1, b"wal one");
    let m2 = manifest(&repo, seg2, b"wal two");
    // Format 2 writes version-1 envelopes, and binds names by hash/content.
    let raw = rt
        .block_on(backend.get(ObjectKind::Wal, &format!("7-{seg1}"), None))
        .unwrap();
    assert_eq!(object::envelope_version(&raw), Some(1));
    let snaps = repo.snapshots().unwrap();
    let second = snaps.iter().find(|e| e.id == s2).unwrap();
    assert_eq!(second.snapshot.predecessors, vec![s1]);

    // A crash half-way through re-sealing manifest 1: the re-sealed copy
    // staged, the original deleted, the copy not yet in place.
    let name1 = format!("7-{seg1}");
    let json = serde_json::to_vec(&m1).unwrap();
    let staged =
        object::seal_bound(repo.key(), Binding::new(ObjectKind::Wal, &name1), &json).unwrap();
    rt.block_on(backend.put(
        ObjectKind::Wal,
        &format!("{name1}{STAGED_SUFFIX}"),
        Bytes::from(staged),
        &Default::default(),
    ))
    .unwrap();
    rt.block_on(backend.delete(ObjectKind::Wal, &name1))
        .unwrap();
    // Readers meanwhile find the staged copy, and never list it.
    assert_eq!(repo.wal_manifest(&name1).unwrap(), Some(m1.clone()));
    assert_eq!(
        repo.list_wal_manifests().unwrap(),
        vec![format!("7-{seg2}")]
    );

    let report = migrate(&repo, &|_| {}).unwrap();
    assert_eq!(report.from, 2);
    assert_eq!(report.snapshots.len(), 3);
    assert_eq!(report.wal_manifests, 2);
    drop(repo);

    let repo = Repository::open(backend.clone(), rt.handle().clone(), PW).unwrap();
    assert_eq!(repo.format_version(), 3);
    assert!(
        repo.open_warnings().is_empty(),
        "{:?}",
        repo.open_warnings()
    );
    assert_eq!(repo.wal_manifest(&name1).unwrap(), Some(m1));
    assert_eq!(repo.wal_manifest(&format!("7-{seg2}")).unwrap(), Some(m2));
    let snaps = repo.snapshots().unwrap();
    assert_eq!(snaps.len(), 3);
    let map: std::collections::HashMap<Id, Id> = report.snapshots.iter().copied().collect();
    let new2 = snaps.iter().find(|e| e.id == map[&s2]).unwrap();
    assert_eq!(new2.snapshot.predecessors, vec![map[&s1]]);
    assert_eq!(new2.snapshot.migrated_from, Some(s2));
    let new3 = snaps.iter().find(|e| e.id == map[&s3]).unwrap();
    assert!(new3.snapshot.predecessors.is_empty());
    for kind in [ObjectKind::Index, ObjectKind::Snapshot, ObjectKind::Wal] {
        for m in rt.block_on(backend.list(kind)).unwrap() {
            let b = rt.block_on(backend.get(kind, &m.name, None)).unwrap();
            assert_eq!(object::envelope_version(&b), Some(2), "{kind} {}", m.name);
        }
    }
    let r = check(
        &repo,
        &CheckOptions {
            read_data: true,
            ..Default::default()
        },
        &|_, _| {},
    )
    .unwrap();
    assert!(r.ok(), "{:?}", r.errors);
    assert_eq!(r.wal_manifests, 2);
    assert!(migrate(&repo, &|_| {}).unwrap().already_current);

    // After migration a new snapshot names the migrated predecessor.
    let s4 = snapshot(&repo, "a", b"third");
    let snaps = repo.snapshots().unwrap();
    let e4 = snaps.iter().find(|e| e.id == s4).unwrap();
    assert_eq!(e4.snapshot.predecessors, vec![map[&s2]]);
    // And a WAL manifest stored under the other's name is refused.
    let b1 = rt
        .block_on(backend.get(ObjectKind::Wal, &name1, None))
        .unwrap();
    rt.block_on(backend.delete(ObjectKind::Wal, &format!("7-{seg2}")))
        .unwrap();
    rt.block_on(backend.put(
        ObjectKind::Wal,
        &format!("7-{seg2}"),
        b1,
        &Default::default(),
    ))
    .unwrap();
    match repo.wal_manifest(&format!("7-{seg2}")) {
        Err(RepoError::Misplaced { object, holds, .. }) => {
            assert_eq!(object, format!("wal/7-{seg2}"));
            assert_eq!(holds, format!("the object named wal/{name1}"));
        }
        other => panic!("{other:?}"),
    }
}
