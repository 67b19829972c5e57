//! The backend conformance suite: one set of checks every [`Backend`] runs.
//!
//! Each check takes a backend over an empty store and panics with a message
//! naming the broken contract point. Backend crates call [`run_all`] from
//! their integration tests (the local backend in this crate's `tests/`, S3
//! against a real S3 server), so every store is held to the same contract.

use std::sync::Arc;

use bytes::Bytes;

use crate::{Backend, ObjectKind, PutOptions, StorageError};

fn pattern(len: usize, seed: u8) -> Bytes {
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761).wrapping_add(1);
    Bytes::from(
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect::<Vec<u8>>(),
    )
}

/// Run every check. `many` is how many objects the listing check writes
/// (use more than 1000 to cross S3's page size).
pub async fn run_all(backend: Arc<dyn Backend>, many: usize) {
    put_get_round_trip(backend.as_ref()).await;
    write_once(backend.as_ref()).await;
    ranged_get(backend.as_ref()).await;
    missing_objects(backend.as_ref()).await;
    delete(backend.as_ref()).await;
    large_object(backend.as_ref()).await;
    list_many(backend.as_ref(), many).await;
    concurrent_writers(backend.clone()).await;
}

pub async fn put_get_round_trip(b: &dyn Backend) {
    let data = pattern(1000, 1);
    b.put(
        ObjectKind::Snapshot,
        "aa01",
        data.clone(),
        &PutOptions::default(),
    )
    .await
    .expect("put of a new object must succeed");
    let got = b
        .get(ObjectKind::Snapshot, "aa01", None)
        .await
        .expect("get");
    assert_eq!(got, data, "get must return exactly what put stored");
    let meta = b.head(ObjectKind::Snapshot, "aa01").await.expect("head");
    assert_eq!(meta.size, 1000, "head must report the stored size");
    let empty = Bytes::new();
    b.put(
        ObjectKind::Lock,
        "ee00",
        empty.clone(),
        &PutOptions::default(),
    )
    .await
    .expect("empty objects are valid");
    assert_eq!(b.get(ObjectKind::Lock, "ee00", None).await.unwrap(), empty);
    b.put(
        ObjectKind::Config,
        "config",
        pattern(10, 9),
        &PutOptions::default(),
    )
    .await
    .expect("config put");
    let configs = b.list(ObjectKind::Config).await.expect("list config");
    assert_eq!(configs.len(), 1, "config listing");
}

pub async fn write_once(b: &dyn Backend) {
    let first = pattern(64, 2);
    b.put(
        ObjectKind::Index,
        "bb01",
        first.clone(),
        &PutOptions::default(),
    )
    .await
    .expect("first put");
    let second = b
        .put(
            ObjectKind::Index,
            "bb01",
            pattern(64, 3),
            &PutOptions::default(),
        )
        .await;
    match second {
        Err(StorageError::AlreadyExists { key, .. }) => {
            assert!(key.contains("bb01"), "error must name the key, got {key}")
        }
        other => panic!("second put of the same name must be AlreadyExists, got {other:?}"),
    }
    assert_eq!(
        b.get(ObjectKind::Index, "bb01", None).await.unwrap(),
        first,
        "a refused overwrite must leave the original intact"
    );
}

pub async fn ranged_get(b: &dyn Backend) {
    let data = pattern(4096, 4);
    b.put(
        ObjectKind::Pack,
        "cc0001",
        data.clone(),
        &PutOptions::default(),
    )
    .await
    .unwrap();
    let r = b
        .get(ObjectKind::Pack, "cc0001", Some(100..612))
        .await
        .expect("ranged get");
    assert_eq!(
        &r[..],
        &data[100..612],
        "ranged get returns exactly the range"
    );
    let tail = b
        .get(ObjectKind::Pack, "cc0001", Some(4000..4096))
        .await
        .unwrap();
    assert_eq!(&tail[..], &data[4000..]);
    let past = b.get(ObjectKind::Pack, "cc0001", Some(4000..5000)).await;
    assert!(
        past.is_err(),
        "a range past the end must be an error, not a short read"
    );
}

pub async fn missing_objects(b: &dyn Backend) {
    match b.get(ObjectKind::Snapshot, "ffff", None).await {
        Err(StorageError::NotFound { key, .. }) => assert!(key.contains("ffff")),
        other => panic!("get of a missing object must be NotFound, got {other:?}"),
    }
    match b.head(ObjectKind::Pack, "ffff00").await {
        Err(StorageError::NotFound { .. }) => {}
        other => panic!("head of a missing object must be NotFound, got {other:?}"),
    }
    assert!(b.list(ObjectKind::Audit).await.unwrap().is_empty());
}

pub async fn delete(b: &dyn Backend) {
    b.put(
        ObjectKind::Lock,
        "dd01",
        pattern(10, 5),
        &PutOptions::default(),
    )
    .await
    .unwrap();
    b.delete(ObjectKind::Lock, "dd01").await.expect("delete");
    assert!(
        b.get(ObjectKind::Lock, "dd01", None).await.is_err(),
        "deleted objects are gone"
    );
    match b.delete(ObjectKind::Lock, "dd01").await {
        Err(StorageError::NotFound { .. }) => {}
        other => panic!("delete of a missing object must be NotFound, got {other:?}"),
    }
    // After delete, the name may be written again (GC then re-backup).
    b.put(
        ObjectKind::Lock,
        "dd01",
        pattern(10, 6),
        &PutOptions::default(),
    )
    .await
    .expect("re-put after delete");
}

pub async fn large_object(b: &dyn Backend) {
    // Larger than a default pack and than S3's multipart threshold.
    let data = pattern(20 * 1024 * 1024 + 17, 7);
    b.put(
        ObjectKind::Pack,
        "ee0001",
        data.clone(),
        &PutOptions::default(),
    )
    .await
    .expect("large put");
    let got = b.get(ObjectKind::Pack, "ee0001", None).await.unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "large object must round-trip byte for byte");
    let mid = b
        .get(ObjectKind::Pack, "ee0001", Some(9_000_000..9_001_000))
        .await
        .unwrap();
    assert_eq!(&mid[..], &data[9_000_000..9_001_000]);
}

pub async fn list_many(b: &dyn Backend, many: usize) {
    for i in 0..many {
        b.put(
            ObjectKind::Index,
            &format!("{i:08x}"),
            Bytes::from(vec![i as u8; i % 7]),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    }
    let mut names: Vec<_> = b
        .list(ObjectKind::Index)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.name.len() == 8)
        .map(|m| {
            let i = usize::from_str_radix(&m.name, 16).unwrap();
            assert_eq!(m.size as usize, i % 7, "listing reports sizes");
            m.name
        })
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), many, "listing returns every object once");
    // Packs spread over fan-out directories are listed too.
    for i in 0..20u32 {
        b.put(
            ObjectKind::Pack,
            &format!("{:02x}{i:06}", i * 13),
            pattern(3, i as u8),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    }
    let packs = b.list(ObjectKind::Pack).await.unwrap();
    assert!(packs.len() >= 20, "pack listing crosses fan-out dirs");
}

pub async fn concurrent_writers(b: Arc<dyn Backend>) {
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            // Everyone writes a distinct name and also races for one shared name.
            b.put(
                ObjectKind::Key,
                &format!("{i:02x}aa"),
                pattern(100, i),
                &PutOptions::default(),
            )
            .await
            .expect("distinct concurrent puts all succeed");
            b.put(
                ObjectKind::Key,
                "shared",
                pattern(100, i),
                &PutOptions::default(),
            )
            .await
            .is_ok()
        }));
    }
    let mut winners = 0;
    for t in tasks {
        if t.await.unwrap() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1, "exactly one racing put of one name succeeds");
    let keys = b.list(ObjectKind::Key).await.unwrap();
    assert_eq!(keys.len(), 17);
}
