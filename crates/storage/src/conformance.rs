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
    remove(backend.as_ref()).await;
    large_object(backend.as_ref()).await;
    upload_in_pieces(backend.as_ref()).await;
    list_many(backend.as_ref(), many).await;
    concurrent_writers(backend.clone()).await;
    modification_times(backend.as_ref()).await;
    replace_by_put_and_delete(backend.as_ref()).await;
    racing_creators(backend.clone()).await;
    if !backend.capabilities().storage_classes {
        no_storage_classes(backend.as_ref()).await;
    }
}

/// A backend without storage classes says so: a class change is
/// `Unsupported` (naming the object) and listings carry no class.
pub async fn no_storage_classes(b: &dyn Backend) {
    b.put(
        ObjectKind::Pack,
        "c1a55",
        pattern(100, 21),
        &PutOptions::default(),
    )
    .await
    .unwrap();
    match b
        .set_storage_class(ObjectKind::Pack, "c1a55", "DEEP_ARCHIVE")
        .await
    {
        Err(StorageError::Unsupported { key, .. }) => assert!(key.contains("c1a55")),
        other => panic!("a backend without storage classes must refuse a move, got {other:?}"),
    }
    let listed = b.list_classes(ObjectKind::Pack).await.unwrap();
    let ours = listed.iter().find(|o| o.meta.name == "c1a55");
    assert!(
        ours.is_some_and(|o| o.storage_class.is_none() && o.meta.size == 100),
        "list_classes lists the object, with no class: {listed:?}"
    );
    assert_eq!(
        b.get(ObjectKind::Pack, "c1a55", None).await.unwrap(),
        pattern(100, 21),
        "a refused move leaves the object as it was"
    );
}

/// For backends with storage classes: [`Backend::set_storage_class`]
/// moves an object into `class` (one that reads without a retrieval, e.g.
/// S3's `STANDARD_IA`) keeping its bytes, both for a small object and one
/// past the multipart threshold; a second move is `Unchanged`;
/// [`Backend::list_classes`] reports the new class; a missing object is
/// `NotFound`.
pub async fn storage_class_moves(b: &dyn Backend, class: &str) {
    use crate::ClassChange;
    let small = pattern(3000, 22);
    let large = pattern(20 * 1024 * 1024 + 5, 23);
    for (name, data) in [("c1a551", &small), ("c1a552", &large)] {
        b.put(ObjectKind::Pack, name, data.clone(), &PutOptions::default())
            .await
            .unwrap();
        let before = b.head(ObjectKind::Pack, name).await.unwrap();
        let change = b
            .set_storage_class(ObjectKind::Pack, name, class)
            .await
            .expect("move into another class");
        assert_ne!(change, ClassChange::Unchanged, "{name} was not in {class}");
        assert_eq!(
            b.set_storage_class(ObjectKind::Pack, name, class)
                .await
                .expect("move again"),
            ClassChange::Unchanged,
            "a second move into the same class changes nothing"
        );
        let got = b.get(ObjectKind::Pack, name, None).await.unwrap();
        assert!(got == *data, "{name}: a class change must keep every byte");
        let after = b.head(ObjectKind::Pack, name).await.unwrap();
        assert_eq!(after.size, before.size);
    }
    let listed = b.list_classes(ObjectKind::Pack).await.unwrap();
    for name in ["c1a551", "c1a552"] {
        let o = listed.iter().find(|o| o.meta.name == name);
        assert_eq!(
            o.and_then(|o| o.storage_class.as_deref()),
            Some(class),
            "list_classes reports the new class of {name}: {listed:?}"
        );
    }
    match b.set_storage_class(ObjectKind::Pack, "c1a55f", class).await {
        Err(StorageError::NotFound { key, .. }) => assert!(key.contains("c1a55f")),
        other => panic!("moving a missing object must be NotFound, got {other:?}"),
    }
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

/// An object written in pieces (`Backend::upload`) reads back as the
/// pieces in order, is invisible until finished, obeys write-once, and an
/// abandoned upload leaves nothing behind.
pub async fn upload_in_pieces(b: &dyn Backend) {
    let data = pattern(3 * 1024 * 1024 + 17, 40);
    let mut up = b
        .upload(ObjectKind::Pack, &PutOptions::default())
        .expect("upload start");
    for piece in data.chunks(700 * 1024 + 3) {
        up.write(piece).await.expect("upload write");
    }
    assert!(
        b.list(ObjectKind::Pack)
            .await
            .expect("list")
            .iter()
            .all(|m| m.name != "ab0de1"),
        "an unfinished upload must not be listed"
    );
    up.finish("ab0de1").await.expect("upload finish");
    assert_eq!(
        b.get(ObjectKind::Pack, "ab0de1", None).await.expect("get"),
        data,
        "an uploaded object must read back as its pieces in order"
    );
    let listed = b.list(ObjectKind::Pack).await.expect("list");
    let meta = listed
        .iter()
        .find(|m| m.name == "ab0de1")
        .expect("a finished upload is listed");
    assert_eq!(meta.size, data.len() as u64, "listed size of an upload");

    // Write-once: a second upload to the same name is refused and the
    // first object stays.
    let mut again = b
        .upload(ObjectKind::Pack, &PutOptions::default())
        .expect("upload start");
    again.write(b"other bytes").await.expect("upload write");
    match again.finish("ab0de1").await {
        Err(StorageError::AlreadyExists { key, .. }) => {
            assert!(key.contains("ab0de1"), "error must name the key, got {key}")
        }
        other => panic!("an upload over an existing name must be AlreadyExists, got {other:?}"),
    }
    assert_eq!(
        b.get(ObjectKind::Pack, "ab0de1", None).await.expect("get"),
        data,
        "a refused upload must leave the original intact"
    );

    // Abandoned: nothing appears, under any name.
    let before = b.list(ObjectKind::Pack).await.expect("list").len();
    let mut dropped = b
        .upload(ObjectKind::Pack, &PutOptions::default())
        .expect("upload start");
    dropped.write(&data[..1000]).await.expect("upload write");
    drop(dropped);
    assert_eq!(
        b.list(ObjectKind::Pack).await.expect("list").len(),
        before,
        "an abandoned upload must leave no object"
    );
    b.delete(ObjectKind::Pack, "ab0de1").await.expect("delete");
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

/// `remove`: the object is gone afterwards, and removing a missing one is
/// success (no `NotFound`: callers of `remove` do not care).
pub async fn remove(b: &dyn Backend) {
    b.put(
        ObjectKind::Lock,
        "dd02",
        pattern(10, 7),
        &PutOptions::default(),
    )
    .await
    .unwrap();
    b.remove(ObjectKind::Lock, "dd02").await.expect("remove");
    match b.get(ObjectKind::Lock, "dd02", None).await {
        Err(StorageError::NotFound { .. }) => {}
        other => panic!("a removed object must be gone, got {other:?}"),
    }
    assert!(
        !b.list(ObjectKind::Lock)
            .await
            .expect("list")
            .iter()
            .any(|m| m.name == "dd02"),
        "a removed object must not be listed"
    );
    b.remove(ObjectKind::Lock, "dd02")
        .await
        .expect("remove of a missing object is success");
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

/// Contract point 8: `head` and `list` report when the store wrote each
/// object, by a clock close to ours, and a later write is not older.
/// Lease staleness and GC's grace periods depend on it.
pub async fn modification_times(b: &dyn Backend) {
    // Generous: the store's clock may differ from ours a little, and S3
    // reports whole seconds.
    let slack = chrono::Duration::minutes(5);
    let before = chrono::Utc::now();
    b.put(
        ObjectKind::Lock,
        "a0a0",
        pattern(20, 11),
        &PutOptions::default(),
    )
    .await
    .expect("put a lock object");
    let head = b.head(ObjectKind::Lock, "a0a0").await.expect("head");
    let first = head
        .modified
        .expect("head must report the modification time (contract point 8)");
    assert!(
        first > before - slack && first < chrono::Utc::now() + slack,
        "modification time {first} is far from the time of the put ({before})"
    );
    let listed = b.list(ObjectKind::Lock).await.expect("list");
    let meta = listed
        .iter()
        .find(|m| m.name == "a0a0")
        .expect("listing shows the new object");
    let in_list = meta
        .modified
        .expect("list must report the modification time (contract point 8)");
    assert!(
        (in_list - first).num_seconds().abs() <= 1,
        "list ({in_list}) and head ({first}) disagree on the modification time"
    );
    // A later object is not older (at the store's granularity of a second).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    b.put(
        ObjectKind::Lock,
        "a0a1",
        pattern(20, 12),
        &PutOptions::default(),
    )
    .await
    .expect("second put");
    let second = b
        .head(ObjectKind::Lock, "a0a1")
        .await
        .expect("head")
        .modified
        .expect("modification time");
    assert!(
        second > first,
        "an object written a second later must have a later modification time ({second} vs {first})"
    );
    b.delete(ObjectKind::Lock, "a0a0").await.expect("cleanup");
    b.delete(ObjectKind::Lock, "a0a1").await.expect("cleanup");
}

/// How a lease is refreshed on write-once storage: put the new object,
/// then delete the old; a listing in between shows both, after only the
/// new one, never neither.
pub async fn replace_by_put_and_delete(b: &dyn Backend) {
    b.put(
        ObjectKind::Lock,
        "b0b0",
        pattern(30, 13),
        &PutOptions::default(),
    )
    .await
    .expect("put the first version");
    b.put(
        ObjectKind::Lock,
        "b0b1",
        pattern(30, 14),
        &PutOptions::default(),
    )
    .await
    .expect("put its replacement");
    let names = |v: Vec<crate::ObjectMeta>| {
        let mut n: Vec<String> = v
            .into_iter()
            .map(|m| m.name)
            .filter(|n| n.starts_with("b0b"))
            .collect();
        n.sort();
        n
    };
    let both = names(b.list(ObjectKind::Lock).await.expect("list"));
    assert_eq!(
        both,
        ["b0b0", "b0b1"],
        "both versions listed before the delete"
    );
    b.delete(ObjectKind::Lock, "b0b0")
        .await
        .expect("delete the old version");
    let after = names(b.list(ObjectKind::Lock).await.expect("list"));
    assert_eq!(
        after,
        ["b0b1"],
        "only the replacement is listed after the delete"
    );
    b.delete(ObjectKind::Lock, "b0b1").await.expect("cleanup");
}

/// The conditional put locks rely on, on the lock kind itself: of many
/// writers creating one lock name at once exactly one wins, the others get
/// `AlreadyExists` naming the key, and the winner's bytes are what is stored.
pub async fn racing_creators(b: Arc<dyn Backend>) {
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            let data = pattern(50, 100 + i);
            let r = b
                .put(
                    ObjectKind::Lock,
                    "c0c0",
                    data.clone(),
                    &PutOptions::default(),
                )
                .await;
            (data, r)
        }));
    }
    let mut won = Vec::new();
    for t in tasks {
        let (data, r) = t.await.expect("task");
        match r {
            Ok(()) => won.push(data),
            Err(StorageError::AlreadyExists { key, .. }) => {
                assert!(key.contains("c0c0"), "the refusal names the key, got {key}")
            }
            Err(e) => panic!("a losing creator must get AlreadyExists, got {e:?}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one creator of a lock name wins");
    let stored = b.get(ObjectKind::Lock, "c0c0", None).await.expect("get");
    assert_eq!(stored, won[0], "the stored lock is the winner's");
    b.delete(ObjectKind::Lock, "c0c0").await.expect("cleanup");
}
