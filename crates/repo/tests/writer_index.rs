//! The blob writer puts each batch of packs into the index as soon as its
//! index object is stored (not in one copy at the end), and a repository
//! that reloads its index during a backup still finds every blob after it.

use std::sync::Arc;

use holdfast_repo::config::RepoConfig;
use holdfast_repo::keys::KdfParams;
use holdfast_repo::pack::BlobType;
use holdfast_repo::writer::BlobWriter;
use holdfast_repo::{Id, Repository};
use holdfast_storage::local::LocalBackend;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A repository in `dir` with a cheap KDF and `cfg`.
fn init_repo(dir: &std::path::Path, rt: &tokio::runtime::Runtime, cfg: RepoConfig) -> Repository {
    let kdf = KdfParams {
        m_cost: 64,
        t_cost: 1,
        p_cost: 1,
    };
    Repository::init(
        Arc::new(LocalBackend::new(dir)),
        rt.handle().clone(),
        b"pw",
        kdf,
        cfg,
    )
    .unwrap()
}

/// The repository in `dir` opened afresh, its index loaded from storage.
fn reopen(dir: &std::path::Path, rt: &tokio::runtime::Runtime) -> Repository {
    let again =
        Repository::open(Arc::new(LocalBackend::new(dir)), rt.handle().clone(), b"pw").unwrap();
    again.load_index().unwrap();
    again
}

/// `len` incompressible bytes from `seed`.
fn noise(seed: u32, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut b);
    b
}

#[test]
fn packs_enter_the_index_as_their_index_objects_are_written() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = RepoConfig::new();
    // About one blob per pack: 64 packs (an index object) come quickly.
    cfg.pack_size = 64 * 1024;
    let repo = init_repo(dir.path(), &rt, cfg);
    for reload_midway in [false, true] {
        let w = BlobWriter::with_threads(&repo, 2);
        // Incompressible: one blob fills a pack.
        let blob = |i: u32| noise(i + if reload_midway { 1_000_000 } else { 0 }, 70_000);
        let mut ids: Vec<Id> = Vec::new();
        for i in 0..150 {
            ids.push(w.submit(BlobType::Data, blob(i)).unwrap().wait().unwrap());
        }
        // Wait for the first index objects (written by the upload tasks).
        let index_objects = || {
            std::fs::read_dir(dir.path().join("index"))
                .map(|d| d.count())
                .unwrap_or(0)
        };
        let before = if reload_midway { 1 } else { 0 };
        let started = std::time::Instant::now();
        while index_objects() <= before && started.elapsed().as_secs() < 60 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(
            index_objects() > before,
            "no index object during the backup"
        );
        if reload_midway {
            repo.load_index().unwrap();
        } else {
            // Already in the index, before finish.
            assert!(repo.index().contains(&ids[0]));
        }
        let more: Vec<Id> = (150..200)
            .map(|i| w.submit(BlobType::Data, blob(i)).unwrap().wait().unwrap())
            .collect();
        ids.extend(more);
        let stats = w.finish(&repo).unwrap();
        assert_eq!(stats.blobs_added, 200);
        let idx = repo.index();
        for id in &ids {
            assert!(
                idx.contains(id),
                "reload {reload_midway}: {id:?} missing after finish"
            );
            assert!(repo.read_blob(id).is_ok());
        }
        // And from storage alone.
        let again = reopen(dir.path(), &rt);
        assert!(ids.iter().all(|id| again.index().contains(id)));
    }
}
