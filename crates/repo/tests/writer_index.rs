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

/// A writer's last data pack is uploaded in two halves when it is big
/// enough (see `writer::SPLIT_LAST_FROM`): both are indexed and every blob
/// reads back, from this session and from storage alone; a small last
/// pack stays whole.
#[test]
fn a_big_last_pack_is_stored_in_two_halves() {
    let rt = runtime();
    for (blobs, want_packs) in [(12u32, 2u64), (3, 1)] {
        let dir = tempfile::tempdir().unwrap();
        let repo = init_repo(dir.path(), &rt, RepoConfig::new());
        let w = BlobWriter::with_threads(&repo, 2);
        // Incompressible 512 KiB: 12 make a 6 MiB last pack, 3 one of 1.5 MiB.
        let blob = |i: u32| noise(i, 512 * 1024);
        let ids: Vec<Id> = (0..blobs)
            .map(|i| w.submit(BlobType::Data, blob(i)).unwrap().wait().unwrap())
            .collect();
        let stats = w.finish(&repo).unwrap();
        assert_eq!(stats.packs_added, want_packs, "{blobs} blobs");
        let packs = walk_files(&dir.path().join("data"));
        assert_eq!(packs.len() as u64, want_packs);
        if want_packs == 2 {
            let sizes: Vec<u64> = packs
                .iter()
                .map(|p| std::fs::metadata(p).unwrap().len())
                .collect();
            // Halves: neither holds much more than the other.
            assert!(
                sizes[0] < 2 * sizes[1] && sizes[1] < 2 * sizes[0],
                "{sizes:?}"
            );
        }
        let again = reopen(dir.path(), &rt);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(repo.read_blob(id).unwrap(), blob(i as u32));
            assert_eq!(again.read_blob(id).unwrap(), blob(i as u32));
        }
    }
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}
