//! Frames (format 2): many small blobs compressed together, read back one
//! by one, deduplicated one by one, checked, and refused when damaged; and
//! a format-1 repository (the golden fixture) that gets no frames.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use holdfast_repo::check::{check, CheckOptions};
use holdfast_repo::config::RepoConfig;
use holdfast_repo::keys::KdfParams;
use holdfast_repo::pack::{read_info, BlobType, PACK_VERSION, PACK_VERSION_1};
use holdfast_repo::writer::BlobWriter;
use holdfast_repo::{Id, Repository};
use holdfast_storage::local::LocalBackend;

const FAST_KDF: KdfParams = KdfParams {
    m_cost: 64,
    t_cost: 1,
    p_cost: 1,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// 16 KiB blocks that look like heap pages: fixed-stride records whose
/// keys count up, so a frame of them compresses far better than a block.
fn page_blocks(first: u32, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|b| {
            let mut page = Vec::with_capacity(16384);
            let mut k = first + b as u32 * 128;
            while page.len() < 16384 {
                page.extend_from_slice(&k.to_le_bytes());
                page.extend_from_slice(&(k % 10).to_le_bytes());
                page.extend_from_slice(&[b' '; 120]);
                k += 1;
            }
            page
        })
        .collect()
}

fn packs(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in std::fs::read_dir(root.join("data")).unwrap() {
        for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out.sort();
    out
}

fn store_frames(repo: &Repository, frames: &[Vec<Vec<u8>>]) -> Vec<Vec<Id>> {
    let w = BlobWriter::with_threads(repo, 2);
    let pending: Vec<_> = frames
        .iter()
        .map(|f| w.submit_frame(BlobType::Data, f.clone()).unwrap())
        .collect();
    let ids = pending.into_iter().map(|p| p.wait().unwrap()).collect();
    w.finish(repo).unwrap();
    ids
}

#[test]
fn frames_round_trip_dedup_per_block_and_check() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(LocalBackend::new(dir.path()));
    let repo = Repository::init(
        backend.clone(),
        rt.handle().clone(),
        b"pw",
        FAST_KDF,
        RepoConfig::new(),
    )
    .unwrap();
    assert_eq!(repo.format_version(), holdfast_repo::config::FORMAT_VERSION);
    assert!(repo.takes_frames());

    // Two frames; the second repeats two blocks of the first and one of
    // its own (zero pages), which must be stored once.
    let a = page_blocks(0, 64);
    let mut b = page_blocks(1_000_000, 8);
    b.insert(3, a[5].clone());
    b.push(vec![0u8; 16384]);
    b.push(vec![0u8; 16384]);
    b.push(a[60][..1000].to_vec()); // a short last block
    let ids = store_frames(&repo, &[a.clone(), b.clone()]);
    assert_eq!(ids[1][3], ids[0][5], "a block is one blob wherever it is");
    assert_eq!(ids[1][9], ids[1][10]);

    let index = repo.index();
    let unique: std::collections::HashSet<Id> = ids.iter().flatten().copied().collect();
    assert_eq!(index.len(), unique.len());
    let framed = unique
        .iter()
        .filter(|id| index.get(id).unwrap().inner > 0)
        .count();
    assert!(framed > 60, "blocks share frames: {framed}");

    // Stored far smaller than the blocks compressed one by one would be
    // (the sealed regions, without pack headers and trailers).
    let mut regions = std::collections::HashSet::new();
    for p in packs(dir.path()) {
        let bytes = std::fs::read(&p).unwrap();
        for e in read_info(repo.key(), &bytes, "p").unwrap().entries {
            regions.insert((p.clone(), e.offset, e.length));
        }
    }
    let stored: u64 = regions.iter().map(|r| u64::from(r.2)).sum();
    let mut enc = holdfast_repo::compress::Encoder::new(3).unwrap();
    let one_by_one: usize = a.iter().chain(&b).map(|x| enc.encode(x).len()).sum();
    assert!(
        (stored as usize) < one_by_one / 2,
        "frames {stored} vs blocks {one_by_one}"
    );
    for p in packs(dir.path()) {
        assert_eq!(std::fs::read(&p).unwrap()[4], PACK_VERSION);
    }

    // Every blob reads back, alone and through a whole-pack visit, from a
    // freshly opened repository (index objects as written).
    let reopened = Repository::open(backend.clone(), rt.handle().clone(), b"pw").unwrap();
    reopened.load_index().unwrap();
    for (frame, fids) in [&a, &b].iter().zip(&ids) {
        for (data, id) in frame.iter().zip(fids) {
            assert_eq!(&reopened.read_blob(id).unwrap(), data);
        }
    }
    let report = check(
        &reopened,
        &CheckOptions {
            read_data: true,
            read_data_subset: None,
        },
        &|_, _| {},
    )
    .unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.blobs_read, unique.len());

    // A stored-again frame adds nothing.
    let before = packs(dir.path());
    let again = store_frames(&reopened, &[b.clone()]);
    assert_eq!(again[0], ids[1]);
    assert_eq!(packs(dir.path()), before);

    // One flipped byte inside the first frame: every blob of that frame is
    // refused (never wrong bytes), blobs elsewhere still read.
    // (The region of frame `a`'s first block, in whichever pack holds it.)
    let (pack, bytes, info) = packs(dir.path())
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            let info = read_info(reopened.key(), &bytes, "p").unwrap();
            (p, bytes, info)
        })
        .find(|(_, _, i)| i.entries.iter().any(|e| e.id == ids[0][0]))
        .unwrap();
    let first = *info.entries.iter().find(|e| e.id == ids[0][0]).unwrap();
    let in_first: Vec<Id> = info
        .entries
        .iter()
        .filter(|e| e.offset == first.offset)
        .map(|e| e.id)
        .collect();
    assert!(in_first.len() > 1);
    let mut bad = bytes.clone();
    bad[first.offset as usize + 40] ^= 0x10;
    std::fs::write(&pack, &bad).unwrap();
    let damaged = Repository::open(backend, rt.handle().clone(), b"pw").unwrap();
    damaged.load_index().unwrap();
    for id in &in_first {
        assert!(damaged.read_blob(id).is_err());
    }
    let elsewhere = ids
        .iter()
        .flatten()
        .find(|id| !in_first.contains(id))
        .unwrap();
    assert!(damaged.read_blob(elsewhere).is_ok());
    let report = check(
        &damaged,
        &CheckOptions {
            read_data: true,
            read_data_subset: None,
        },
        &|_, _| {},
    )
    .unwrap();
    let blob_errors = report
        .errors
        .iter()
        .filter(|e| e.contains(": blob ") && e.contains("is damaged"))
        .count();
    assert_eq!(blob_errors, in_first.len(), "{:?}", report.errors);
}

/// A format-1 repository stays readable by older holdfast builds: frames
/// submitted to it are stored as separate blobs in version-1 packs.
#[test]
fn format_1_repository_gets_no_frames() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/golden-v1/repo");
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(&fixture)
        .arg(dir.path().join("repo"))
        .status()
        .unwrap();
    assert!(st.success());
    let root = dir.path().join("repo");
    let before = packs(&root);
    let backend = Arc::new(LocalBackend::new(&root));
    let repo = Repository::open(
        backend.clone(),
        rt.handle().clone(),
        b"golden fixture password",
    )
    .unwrap();
    assert_eq!(repo.format_version(), 1);
    assert!(!repo.takes_frames());
    repo.load_index().unwrap();
    let blocks = page_blocks(7, 16);
    let ids = store_frames(&repo, std::slice::from_ref(&blocks));
    let index = repo.index();
    for id in &ids[0] {
        assert_eq!(index.get(id).unwrap().inner, 0);
    }
    let new: Vec<PathBuf> = packs(&root)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert_eq!(new.len(), 1);
    assert_eq!(std::fs::read(&new[0]).unwrap()[4], PACK_VERSION_1);
    let cfg = std::fs::read(root.join("config")).unwrap();
    assert_eq!(&cfg[8..12], &1u32.to_le_bytes());
    let reopened =
        Repository::open(backend, rt.handle().clone(), b"golden fixture password").unwrap();
    reopened.load_index().unwrap();
    for (data, id) in blocks.iter().zip(&ids[0]) {
        assert_eq!(&reopened.read_blob(id).unwrap(), data);
    }
}
