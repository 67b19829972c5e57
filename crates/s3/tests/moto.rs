//! The S3 backend against a real S3 wire protocol: a moto server on
//! 127.0.0.1 started by the harness, sometimes behind a fault-injecting
//! proxy. No mocks: every request crosses HTTP.

mod harness;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use harness::{config_for, pattern, Fault, FaultProxy, Moto};
use holdfast_s3::{S3Backend, S3Config};
use holdfast_storage::{
    conformance, ArchiveState, Backend, LockMode, ObjectKind, PutOptions, Retention, StorageError,
};

const MIB: usize = 1024 * 1024;

async fn connect(cfg: S3Config) -> S3Backend {
    S3Backend::connect(cfg).await.expect("connect to moto")
}

/// Versions (data and delete markers) stored under `key`, as the server sees them.
async fn versions_of(moto: &Moto, bucket: &str, key: &str) -> usize {
    let out = moto
        .admin()
        .list_object_versions()
        .bucket(bucket)
        .prefix(key)
        .send()
        .await
        .expect("list versions");
    out.versions()
        .iter()
        .filter(|v| v.key() == Some(key))
        .count()
        + out
            .delete_markers()
            .iter()
            .filter(|m| m.key() == Some(key))
            .count()
}

async fn retain_until(moto: &Moto, bucket: &str, key: &str) -> (String, i64) {
    // moto's server lacks GetObjectRetention; HeadObject reports the lock.
    let h = moto
        .admin()
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("head");
    (
        h.object_lock_mode()
            .expect("lock mode")
            .as_str()
            .to_string(),
        h.object_lock_retain_until_date().expect("until").secs(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_plain_bucket() {
    let moto = Moto::start();
    moto.create_bucket("conformance").await;
    let b = connect(moto.config("conformance", "repo/one")).await;
    assert_eq!(b.location(), "s3://conformance/repo/one/");
    assert!(!b.is_versioned());
    assert!(b.capabilities().parallelism >= 1);
    // 1100 objects: listing must follow continuation tokens past 1000 keys.
    let b = Arc::new(b);
    conformance::run_all(b.clone(), 1100).await;
    conformance::storage_class_moves(b.as_ref(), "STANDARD_IA").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_versioned_bucket() {
    // Same contract on a versioned bucket, where delete removes versions.
    let moto = Moto::start();
    moto.create_lock_bucket("versioned").await;
    let b = connect(moto.config("versioned", "")).await;
    assert!(b.is_versioned());
    conformance::put_get_round_trip(&b).await;
    conformance::write_once(&b).await;
    conformance::ranged_get(&b).await;
    conformance::missing_objects(&b).await;
    conformance::delete(&b).await;
    assert_eq!(
        versions_of(&moto, "versioned", "locks/dd01").await,
        1,
        "delete on a versioned bucket removes the versions, not just hides them"
    );
    conformance::remove(&b).await;
    assert_eq!(
        versions_of(&moto, "versioned", "locks/dd02").await,
        0,
        "remove on a versioned bucket removes the versions, not just hides them"
    );
    conformance::modification_times(&b).await;
    conformance::replace_by_put_and_delete(&b).await;
    conformance::storage_class_moves(&b, "STANDARD_IA").await;
    assert_eq!(
        versions_of(&moto, "versioned", "data/c1/c1a551").await,
        1,
        "a class change on a versioned bucket drops the copy in the old class"
    );
    let b = Arc::new(b);
    conformance::racing_creators(b.clone()).await;
    conformance::concurrent_writers(b).await;
}

/// Archival moves: an object moved into DEEP_ARCHIVE keeps its bytes but
/// needs a retrieval; on an Object Lock bucket the moved object keeps its
/// retention (mode, retain-until) and legal hold, and a previous version
/// the lock protects is kept and reported, an unlocked one is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_into_an_archival_class_keep_bytes_and_locks() {
    use holdfast_storage::ClassChange;
    let moto = Moto::start();
    moto.create_lock_bucket("cold").await;
    let b = connect(moto.config("cold", "r")).await;
    let hour = Utc::now() + chrono::Duration::hours(1);
    let locked = PutOptions {
        retention: Some(Retention {
            mode: LockMode::Compliance,
            until: hour,
        }),
        legal_hold: true,
        ..Default::default()
    };
    let expired = PutOptions {
        retention: Some(Retention {
            mode: LockMode::Governance,
            until: Utc::now() + chrono::Duration::seconds(2),
        }),
        ..Default::default()
    };
    b.put(ObjectKind::Pack, "aa01", pattern(4000, 1), &locked)
        .await
        .unwrap();
    b.put(ObjectKind::Pack, "aa02", pattern(4000, 2), &expired)
        .await
        .unwrap();
    b.put(
        ObjectKind::Pack,
        "aa03",
        pattern(4000, 3),
        &PutOptions::default(),
    )
    .await
    .unwrap();
    // Let aa02's short retention run out: its old version may then go.
    tokio::time::sleep(Duration::from_secs(3)).await;

    assert_eq!(
        b.set_storage_class(ObjectKind::Pack, "aa01", "DEEP_ARCHIVE")
            .await
            .unwrap(),
        ClassChange::MovedPreviousKept,
        "the locked version in STANDARD stays, and the caller is told"
    );
    let (mode, until) = retain_until(&moto, "cold", "r/data/aa/aa01").await;
    assert_eq!(mode, "COMPLIANCE");
    assert!(until >= hour.timestamp(), "the retention is carried");
    let h = moto
        .admin()
        .head_object()
        .bucket("cold")
        .key("r/data/aa/aa01")
        .send()
        .await
        .unwrap();
    assert_eq!(
        h.object_lock_legal_hold_status().map(|s| s.as_str()),
        Some("ON"),
        "the legal hold is carried"
    );
    assert_eq!(versions_of(&moto, "cold", "r/data/aa/aa01").await, 2);
    for name in ["aa02", "aa03"] {
        assert_eq!(
            b.set_storage_class(ObjectKind::Pack, name, "DEEP_ARCHIVE")
                .await
                .unwrap(),
            ClassChange::Moved,
            "{name}: nothing locks the old version"
        );
        assert_eq!(
            versions_of(&moto, "cold", &format!("r/data/aa/{name}")).await,
            1,
            "{name}: the hot copy is gone"
        );
    }
    // Moved again: nothing to do. Listed: the class shows without a head.
    assert_eq!(
        b.set_storage_class(ObjectKind::Pack, "aa03", "DEEP_ARCHIVE")
            .await
            .unwrap(),
        ClassChange::Unchanged
    );
    let listed = b.list_classes(ObjectKind::Pack).await.unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed
        .iter()
        .all(|o| o.storage_class.as_deref() == Some("DEEP_ARCHIVE")));
    // Out of an archival class into another: only after a retrieval.
    match b
        .set_storage_class(ObjectKind::Pack, "aa03", "GLACIER")
        .await
    {
        Err(StorageError::Archived { key }) => assert!(key.contains("aa03")),
        other => panic!("moving an archived object must need a retrieval, got {other:?}"),
    }
    // Cold now: unreadable until retrieved, then byte for byte the same.
    for (i, name) in ["aa01", "aa02", "aa03"].into_iter().enumerate() {
        assert_eq!(
            b.archive_state(ObjectKind::Pack, name).await.unwrap(),
            ArchiveState::Archived
        );
        assert!(matches!(
            b.get(ObjectKind::Pack, name, None).await,
            Err(StorageError::Archived { .. })
        ));
        b.restore_and_wait(
            ObjectKind::Pack,
            name,
            1,
            Duration::from_millis(50),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        assert_eq!(
            b.get(ObjectKind::Pack, name, None).await.unwrap(),
            pattern(4000, i as u64 + 1)
        );
    }
    // A locked object still refuses deletion after its move.
    assert!(matches!(
        b.delete(ObjectKind::Pack, "aa01").await,
        Err(StorageError::Locked { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_lock_retention_and_legal_hold() {
    let moto = Moto::start();
    moto.create_lock_bucket("locked").await;
    let mut cfg = moto.config("locked", "r");
    cfg.require_object_lock = true;
    let b = connect(cfg).await;
    let caps = b.capabilities();
    assert!(caps.retention && caps.legal_hold && caps.archive_restore);
    b.check_lock_ready().await.expect("lock ready");

    let hour = Utc::now() + chrono::Duration::hours(1);
    for (name, mode) in [
        ("aa01", LockMode::Governance),
        ("aa02", LockMode::Compliance),
    ] {
        let opts = PutOptions {
            retention: Some(Retention { mode, until: hour }),
            ..Default::default()
        };
        b.put(ObjectKind::Pack, name, pattern(1000, 1), &opts)
            .await
            .expect("put with retention");
        let (m, until) = retain_until(&moto, "locked", &format!("r/data/aa/{name}")).await;
        assert_eq!(m, mode.as_str());
        assert_eq!(until, hour.timestamp());
        match b.delete(ObjectKind::Pack, name).await {
            Err(StorageError::Locked { key }) => assert!(key.contains(name), "{key}"),
            other => panic!("delete of a {mode:?}-locked object must be Locked, got {other:?}"),
        }
        assert_eq!(
            b.get(ObjectKind::Pack, name, None)
                .await
                .expect("still readable"),
            pattern(1000, 1)
        );
    }

    // A lock written big enough to need multipart is applied too.
    let opts = PutOptions {
        retention: Some(Retention {
            mode: LockMode::Governance,
            until: hour,
        }),
        ..Default::default()
    };
    b.put(ObjectKind::Pack, "aa05", pattern(9 * MIB, 5), &opts)
        .await
        .expect("multipart put with retention");
    assert!(matches!(
        b.delete(ObjectKind::Pack, "aa05").await,
        Err(StorageError::Locked { .. })
    ));

    // Extend never shortens.
    let key = "r/data/aa/aa01";
    b.extend_retention(
        ObjectKind::Pack,
        "aa01",
        Retention {
            mode: LockMode::Governance,
            until: Utc::now() + chrono::Duration::minutes(5),
        },
    )
    .await
    .expect("shorter extend is a no-op");
    assert_eq!(retain_until(&moto, "locked", key).await.1, hour.timestamp());
    let later = hour + chrono::Duration::hours(24);
    b.extend_retention(
        ObjectKind::Pack,
        "aa01",
        Retention {
            mode: LockMode::Governance,
            until: later,
        },
    )
    .await
    .expect("extend");
    assert_eq!(
        retain_until(&moto, "locked", key).await,
        ("GOVERNANCE".to_string(), later.timestamp())
    );
    // Asking for GOVERNANCE on a COMPLIANCE object keeps COMPLIANCE.
    b.extend_retention(
        ObjectKind::Pack,
        "aa02",
        Retention {
            mode: LockMode::Governance,
            until: later,
        },
    )
    .await
    .expect("extend compliance");
    assert_eq!(
        retain_until(&moto, "locked", "r/data/aa/aa02").await,
        ("COMPLIANCE".to_string(), later.timestamp())
    );
    // An object without retention gets one.
    b.put(
        ObjectKind::Index,
        "cc01",
        pattern(10, 3),
        &PutOptions::default(),
    )
    .await
    .unwrap();
    b.extend_retention(
        ObjectKind::Index,
        "cc01",
        Retention {
            mode: LockMode::Governance,
            until: hour,
        },
    )
    .await
    .expect("first retention");
    assert!(matches!(
        b.delete(ObjectKind::Index, "cc01").await,
        Err(StorageError::Locked { .. })
    ));
    assert!(matches!(
        b.extend_retention(
            ObjectKind::Index,
            "ffff",
            Retention {
                mode: LockMode::Governance,
                until: hour
            }
        )
        .await,
        Err(StorageError::NotFound { .. })
    ));

    // Legal hold at creation, then released.
    let held = PutOptions {
        legal_hold: true,
        ..Default::default()
    };
    b.put(ObjectKind::Snapshot, "aa03", pattern(50, 4), &held)
        .await
        .expect("put with legal hold");
    assert!(matches!(
        b.delete(ObjectKind::Snapshot, "aa03").await,
        Err(StorageError::Locked { .. })
    ));
    b.set_legal_hold(ObjectKind::Snapshot, "aa03", false)
        .await
        .expect("release hold");
    b.delete(ObjectKind::Snapshot, "aa03")
        .await
        .expect("delete after release");
    assert_eq!(versions_of(&moto, "locked", "r/snapshots/aa03").await, 0);
    assert!(matches!(
        b.get(ObjectKind::Snapshot, "aa03", None).await,
        Err(StorageError::NotFound { .. })
    ));

    // Legal hold placed later.
    b.put(
        ObjectKind::Snapshot,
        "aa04",
        pattern(50, 5),
        &PutOptions::default(),
    )
    .await
    .unwrap();
    b.set_legal_hold(ObjectKind::Snapshot, "aa04", true)
        .await
        .expect("place hold");
    assert!(matches!(
        b.delete(ObjectKind::Snapshot, "aa04").await,
        Err(StorageError::Locked { .. })
    ));
    b.set_legal_hold(ObjectKind::Snapshot, "aa04", false)
        .await
        .unwrap();
    b.delete(ObjectKind::Snapshot, "aa04").await.unwrap();

    // Retention that has run out no longer protects, and delete frees the data.
    let soon = PutOptions {
        retention: Some(Retention {
            mode: LockMode::Compliance,
            until: Utc::now() + chrono::Duration::seconds(2),
        }),
        ..Default::default()
    };
    b.put(ObjectKind::Pack, "ab06", pattern(10, 6), &soon)
        .await
        .unwrap();
    assert!(matches!(
        b.delete(ObjectKind::Pack, "ab06").await,
        Err(StorageError::Locked { .. })
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    b.delete(ObjectKind::Pack, "ab06")
        .await
        .expect("expired retention");
    assert_eq!(versions_of(&moto, "locked", "r/data/ab/ab06").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_none_match_keeps_objects_write_once() {
    let moto = Moto::start();
    moto.create_bucket("once").await;
    let mut cfg = moto.config("once", "");
    cfg.multipart_threshold = 6 * MIB;
    cfg.multipart_part_size = 5 * MIB;
    let b = connect(cfg).await;

    let first = pattern(1000, 1);
    b.put(
        ObjectKind::Index,
        "aa",
        first.clone(),
        &PutOptions::default(),
    )
    .await
    .unwrap();
    match b
        .put(
            ObjectKind::Index,
            "aa",
            pattern(1000, 2),
            &PutOptions::default(),
        )
        .await
    {
        Err(StorageError::AlreadyExists { key, .. }) => assert_eq!(key, "index/aa"),
        other => panic!("second put must be AlreadyExists, got {other:?}"),
    }
    assert_eq!(b.get(ObjectKind::Index, "aa", None).await.unwrap(), first);

    // Multipart over an existing single-part object, and the reverse.
    let big = pattern(12 * MIB, 3);
    assert!(matches!(
        b.put(ObjectKind::Index, "aa", big.clone(), &PutOptions::default())
            .await,
        Err(StorageError::AlreadyExists { .. })
    ));
    b.put(
        ObjectKind::Pack,
        "bb01",
        big.clone(),
        &PutOptions::default(),
    )
    .await
    .unwrap();
    assert!(matches!(
        b.put(
            ObjectKind::Pack,
            "bb01",
            first.clone(),
            &PutOptions::default()
        )
        .await,
        Err(StorageError::AlreadyExists { .. })
    ));
    assert!(b.get(ObjectKind::Pack, "bb01", None).await.unwrap() == big);

    // Two multipart uploads racing for one name in one process: the second
    // waits for the first, then is refused without uploading.
    let (x, y) = (pattern(11 * MIB, 4), pattern(11 * MIB, 5));
    let none = PutOptions::default();
    let (rx, ry) = tokio::join!(
        b.put(ObjectKind::Pack, "cc01", x.clone(), &none),
        b.put(ObjectKind::Pack, "cc01", y.clone(), &none)
    );
    let stored = b.get(ObjectKind::Pack, "cc01", None).await.unwrap();
    match (rx, ry) {
        (Ok(()), Err(StorageError::AlreadyExists { .. })) => assert!(stored == x),
        (Err(StorageError::AlreadyExists { .. }), Ok(())) => assert!(stored == y),
        other => panic!("exactly one racing multipart put must win, got {other:?}"),
    }
    // The pre-check passed, then another writer created the name before
    // CompleteMultipartUpload: its If-None-Match refuses, the upload is
    // aborted and the other writer's object stays.
    let proxy = FaultProxy::start(moto.port, Duration::from_secs(3), 1).await;
    let mut cfg = config_for(&proxy.endpoint(), "once", "viaproxy");
    cfg.multipart_threshold = 6 * MIB;
    cfg.multipart_part_size = 5 * MIB;
    let via = connect(cfg).await;
    // HEAD pre-check, CreateMultipartUpload, 2 parts, then hold the Complete.
    proxy.script(&[None, None, None, None, Some(Fault::Hold)]);
    let racer = {
        let via = via.clone();
        tokio::spawn(async move {
            via.put(
                ObjectKind::Pack,
                "dd01",
                pattern(8 * MIB, 6),
                &PutOptions::default(),
            )
            .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.held() == 0 {
        assert!(
            Instant::now() < deadline,
            "Complete never reached the proxy"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    moto.admin()
        .put_object()
        .bucket("once")
        .key("viaproxy/data/dd/dd01")
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"intruder"))
        .send()
        .await
        .unwrap();
    proxy.release();
    match racer.await.unwrap() {
        Err(StorageError::AlreadyExists { key, .. }) => assert!(key.ends_with("dd01")),
        other => {
            panic!("Complete over a name taken meanwhile must be AlreadyExists, got {other:?}")
        }
    }
    assert_eq!(
        via.get(ObjectKind::Pack, "dd01", None).await.unwrap(),
        Bytes::from_static(b"intruder")
    );

    // No upload was left behind.
    let uploads = moto
        .admin()
        .list_multipart_uploads()
        .bucket("once")
        .send()
        .await
        .unwrap();
    assert!(
        uploads.uploads().is_empty(),
        "aborted uploads are cleaned up: {:?}",
        uploads.uploads()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_archive_needs_restore() {
    let moto = Moto::start();
    moto.create_bucket("archive").await;
    let mut cfg = moto.config("archive", "");
    cfg.storage_class_data = Some("DEEP_ARCHIVE".into());
    let b = connect(cfg).await;
    let data = pattern(5000, 9);

    // Per-kind default: packs go to the data class, metadata does not.
    b.put(
        ObjectKind::Pack,
        "dd01",
        data.clone(),
        &PutOptions::default(),
    )
    .await
    .unwrap();
    b.put(
        ObjectKind::Index,
        "dd02",
        data.clone(),
        &PutOptions::default(),
    )
    .await
    .unwrap();
    let head = moto
        .admin()
        .head_object()
        .bucket("archive")
        .key("index/dd02")
        .send()
        .await
        .unwrap();
    assert!(head
        .storage_class()
        .is_none_or(|c| c.as_str() == "STANDARD"));
    assert_eq!(
        b.archive_state(ObjectKind::Index, "dd02").await.unwrap(),
        ArchiveState::Readable
    );
    // An explicit class in PutOptions overrides the default.
    let opts = PutOptions {
        storage_class: Some("DEEP_ARCHIVE".into()),
        ..Default::default()
    };
    b.put(ObjectKind::Snapshot, "dd03", data.clone(), &opts)
        .await
        .unwrap();

    for (kind, name) in [(ObjectKind::Pack, "dd01"), (ObjectKind::Snapshot, "dd03")] {
        assert_eq!(
            b.archive_state(kind, name).await.unwrap(),
            ArchiveState::Archived
        );
        match b.get(kind, name, None).await {
            Err(StorageError::Archived { key }) => assert!(key.contains(name)),
            other => panic!("get of an archived object must be Archived, got {other:?}"),
        }
        assert!(matches!(
            b.get(kind, name, Some(0..10)).await,
            Err(StorageError::Archived { .. })
        ));
        // Head (size) works without a restore.
        assert_eq!(b.head(kind, name).await.unwrap().size, 5000);
    }

    // Restore one and poll until readable.
    b.restore_archived(ObjectKind::Pack, "dd01", 1)
        .await
        .expect("restore");
    b.restore_archived(ObjectKind::Pack, "dd01", 1)
        .await
        .expect("a second restore request is harmless");
    let waited = b
        .wait_until_readable(
            ObjectKind::Pack,
            "dd01",
            Duration::from_millis(100),
            Duration::from_secs(60),
        )
        .await
        .expect("restored");
    println!("dd01 readable after {waited:?}");
    assert!(waited < Duration::from_secs(60));
    assert_eq!(b.get(ObjectKind::Pack, "dd01", None).await.unwrap(), data);

    // The one-call helper does the same for the other.
    let waited = b
        .restore_and_wait(
            ObjectKind::Snapshot,
            "dd03",
            1,
            Duration::from_millis(100),
            Duration::from_secs(60),
        )
        .await
        .expect("restore and wait");
    println!("dd03 readable after {waited:?}");
    assert_eq!(
        b.get(ObjectKind::Snapshot, "dd03", Some(10..20))
            .await
            .unwrap(),
        data.slice(10..20)
    );
    // Waiting without a restore request is an error, not a hang.
    b.put(ObjectKind::Snapshot, "dd04", data.clone(), &opts)
        .await
        .unwrap();
    assert!(matches!(
        b.wait_until_readable(
            ObjectKind::Snapshot,
            "dd04",
            Duration::from_millis(10),
            Duration::from_secs(1)
        )
        .await,
        Err(StorageError::Archived { .. })
    ));
}

/// `connect_with` runs the caller's first reads beside the bucket checks
/// and hands back what they read; on a missing bucket the check's error
/// explains the failure, whatever the reads made of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_with_reads_while_checking_the_bucket() {
    let moto = Moto::start();
    moto.create_bucket("first").await;
    let b = connect(moto.config("first", "repo")).await;
    b.put(
        ObjectKind::Config,
        "config",
        Bytes::from_static(b"cfg"),
        &PutOptions::default(),
    )
    .await
    .unwrap();
    let (b2, got) = S3Backend::connect_with(moto.config("first", "repo"), |b| async move {
        b.get(ObjectKind::Config, "config", None).await
    })
    .await
    .expect("connect");
    assert_eq!(got.expect("read").as_ref(), b"cfg");
    assert!(!b2.is_versioned());
    assert!(b2.capabilities().parallelism >= 1);

    let err = S3Backend::connect_with(moto.config("no-such-bucket", ""), |b| async move {
        b.get(ObjectKind::Config, "config", None).await
    })
    .await
    .unwrap_err();
    assert!(
        matches!(err, StorageError::Config { .. }) && err.to_string().contains("does not exist"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_what_is_wrong() {
    let moto = Moto::start();

    // Missing bucket.
    let err = S3Backend::connect(moto.config("no-such-bucket", ""))
        .await
        .unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    assert!(matches!(err, StorageError::Config { .. }), "{err:?}");
    assert!(
        msg.contains("no-such-bucket") && msg.contains("does not exist") && msg.contains("create"),
        "{msg}"
    );

    // Unreachable endpoint: a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    let err = S3Backend::connect(config_for(&endpoint, "bucket", ""))
        .await
        .unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    // Transient: a server that is down now may be up at the next run.
    assert!(matches!(err, StorageError::Transient { .. }), "{err:?}");
    assert!(
        msg.contains(&endpoint) && msg.contains("cannot reach"),
        "{msg}"
    );
    assert!(start.elapsed() < Duration::from_secs(10), "fails fast");

    // Credentials the server refuses.
    let strict = Moto::start_with_env(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);
    let err = S3Backend::connect(strict.config("any-bucket", ""))
        .await
        .unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    assert!(
        matches!(err, StorageError::PermissionDenied { .. }),
        "{err:?}"
    );
    assert!(
        msg.contains("any-bucket") && msg.contains("credentials") && msg.contains("policy"),
        "{msg}"
    );
    drop(strict);

    // Plain HTTP without consent.
    let mut cfg = moto.config("bucket", "");
    cfg.allow_http = false;
    let err = S3Backend::connect(cfg).await.unwrap_err();
    assert!(err.to_string().contains("HOLDFAST_S3_ALLOW_HTTP"), "{err}");

    // Object Lock requested on a bucket that is not versioned.
    moto.create_bucket("plain").await;
    let mut cfg = moto.config("plain", "");
    cfg.require_object_lock = true;
    let err = S3Backend::connect(cfg).await.unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    assert!(matches!(err, StorageError::Config { .. }), "{err:?}");
    assert!(
        msg.contains("plain") && msg.contains("not versioned") && msg.contains("Object Lock"),
        "{msg}"
    );
    // ... and when a write asks for it without the connect-time check.
    let b = connect(moto.config("plain", "")).await;
    assert!(!b.capabilities().retention, "no lock on this bucket");
    let err = b
        .put(
            ObjectKind::Pack,
            "aa",
            Bytes::from_static(b"x"),
            &PutOptions {
                legal_hold: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not versioned"), "{err}");
    assert!(matches!(
        b.get(ObjectKind::Pack, "aa", None).await,
        Err(StorageError::NotFound { .. })
    ));

    // Versioned but without Object Lock.
    moto.create_bucket("versioned-only").await;
    moto.admin()
        .put_bucket_versioning()
        .bucket("versioned-only")
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let mut cfg = moto.config("versioned-only", "");
    cfg.require_object_lock = true;
    let err = S3Backend::connect(cfg).await.unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    assert!(
        msg.contains("versioned-only") && msg.contains("does not have Object Lock enabled"),
        "{msg}"
    );
    // A versioned bucket still gets real deletes.
    let b = connect(moto.config("versioned-only", "")).await;
    assert!(b.is_versioned());
    b.put(
        ObjectKind::Key,
        "k1",
        pattern(10, 1),
        &PutOptions::default(),
    )
    .await
    .unwrap();
    b.delete(ObjectKind::Key, "k1").await.unwrap();
    assert_eq!(versions_of(&moto, "versioned-only", "keys/k1").await, 0);
}

/// Objects of many sizes adding up to just over 64 MiB, some multipart.
fn workload() -> Vec<(String, Bytes)> {
    let mut sizes = vec![
        13 * MIB,
        11 * MIB + 7,
        9 * MIB,
        7 * MIB + 3,
        5 * MIB,
        3 * MIB,
    ];
    sizes.extend([MIB + 1; 8]);
    sizes.extend([256 * 1024 + 5; 24]);
    sizes.extend([4096; 16]);
    sizes.extend([0, 1, 17]);
    let total: usize = sizes.iter().sum();
    sizes.push((64 * MIB).saturating_sub(total) + 1);
    sizes
        .into_iter()
        .enumerate()
        .map(|(i, len)| {
            (
                format!("{:02x}{i:06}", i * 37 % 256),
                pattern(len, i as u64 + 100),
            )
        })
        .collect()
}

fn fault_config(endpoint: &str, bucket: &str) -> S3Config {
    let mut cfg = config_for(endpoint, bucket, "f");
    // Short enough that stalls cost little, long enough that a slow but
    // healthy request on a loaded 2-core machine is not cut off.
    cfg.request_timeout = Duration::from_secs(3);
    cfg.min_throughput = 10 * MIB as u64;
    cfg.multipart_threshold = 6 * MIB;
    cfg.multipart_part_size = 5 * MIB;
    cfg.max_attempts = 12;
    cfg.base_backoff = Duration::from_millis(10);
    cfg.max_backoff = Duration::from_millis(200);
    cfg.parallelism = 8;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_twenty_percent_faults() {
    let moto = Moto::start();
    moto.create_bucket("faulty").await;
    let proxy = FaultProxy::start(moto.port, Duration::from_secs(6), 0x5eed).await;
    let b = connect(fault_config(&proxy.endpoint(), "faulty")).await;
    proxy.set_fault_share(0.2);

    let objects = workload();
    let total: usize = objects.iter().map(|(_, d)| d.len()).sum();
    assert!(total >= 64 * MIB);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (name, data) in objects.clone() {
        let b = b.clone();
        tasks.spawn(async move {
            b.put(ObjectKind::Pack, &name, data, &PutOptions::default())
                .await
                .map_err(|e| format!("put {name}: {e}"))
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    let put_time = start.elapsed();

    let mut tasks = tokio::task::JoinSet::new();
    for (name, data) in objects.clone() {
        let b = b.clone();
        tasks.spawn(async move {
            let got = b
                .get(ObjectKind::Pack, &name, None)
                .await
                .map_err(|e| format!("get {name}: {e}"))?;
            if got != data {
                return Err(format!("{name}: read back differs"));
            }
            if data.len() > 100 {
                let r = 17..(data.len() as u64 - 3);
                let part = b
                    .get(ObjectKind::Pack, &name, Some(r.clone()))
                    .await
                    .map_err(|e| format!("ranged get {name}: {e}"))?;
                if part != data.slice(r.start as usize..r.end as usize) {
                    return Err(format!("{name}: ranged read differs"));
                }
            }
            Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    let listed = b.list(ObjectKind::Pack).await.expect("list under faults");
    assert_eq!(listed.len(), objects.len());
    for (name, data) in &objects {
        assert_eq!(
            b.head(ObjectKind::Pack, name).await.unwrap().size as usize,
            data.len()
        );
    }
    println!(
        "{} objects, {} MiB: puts {put_time:?}, total {:?}; proxy saw {} requests, injected {} faults",
        objects.len(),
        total / MIB,
        start.elapsed(),
        proxy.requests(),
        proxy.faults()
    );
    assert!(proxy.faults() >= 10, "faults were injected");
    let uploads = moto
        .admin()
        .list_multipart_uploads()
        .bucket("faulty")
        .send()
        .await
        .unwrap();
    // Failed uploads were aborted, and so were the strays of lost
    // CreateMultipartUpload answers.
    let lost_creates = proxy.faults_matching(Fault::ResetAfter, "?uploads")
        + proxy.faults_matching(Fault::TruncateBody, "?uploads");
    println!("lost CreateMultipartUpload answers: {lost_creates}");
    assert!(
        uploads.uploads().is_empty(),
        "no multipart upload left behind: {:?}",
        uploads.uploads()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_outage_fails_cleanly() {
    let moto = Moto::start();
    moto.create_bucket("down").await;
    let proxy = FaultProxy::start(moto.port, Duration::from_secs(3), 7).await;
    let mut cfg = fault_config(&proxy.endpoint(), "down");
    cfg.request_timeout = Duration::from_millis(800);
    cfg.max_attempts = 4;
    let b = connect(cfg).await;
    b.put(
        ObjectKind::Index,
        "aa",
        pattern(100, 1),
        &PutOptions::default(),
    )
    .await
    .unwrap();
    proxy.set_fault_share(1.0);

    let start = Instant::now();
    let put = b
        .put(
            ObjectKind::Index,
            "bb",
            pattern(100, 2),
            &PutOptions::default(),
        )
        .await;
    let big = b
        .put(
            ObjectKind::Pack,
            "cc01",
            pattern(7 * MIB, 3),
            &PutOptions::default(),
        )
        .await;
    let get = b.get(ObjectKind::Index, "aa", None).await;
    let list = b.list(ObjectKind::Index).await;
    let del = b.delete(ObjectKind::Index, "aa").await;
    let elapsed = start.elapsed();
    for (what, r) in [
        ("put", put.map(|_| ())),
        ("multipart put", big.map(|_| ())),
        ("get", get.map(|_| ())),
        ("list", list.map(|_| ())),
        ("delete", del),
    ] {
        match r {
            Err(e @ StorageError::Transient { .. }) => {
                assert!(e.is_transient());
                println!("{what}: {e}");
            }
            other => panic!("{what} under a total outage must be Transient, got {other:?}"),
        }
    }
    // 5 operations x 4 attempts x (<= 0.8 s timeout + <= 0.2 s backoff), plus slack.
    assert!(elapsed < Duration::from_secs(40), "took {elapsed:?}");

    // Service back: everything works again, nothing was damaged.
    proxy.set_fault_share(0.0);
    assert_eq!(
        b.get(ObjectKind::Index, "aa", None).await.unwrap(),
        pattern(100, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answers_are_recognised() {
    let moto = Moto::start();
    moto.create_bucket("lossy").await;
    let proxy = FaultProxy::start(moto.port, Duration::from_secs(3), 11).await;
    let mut cfg = fault_config(&proxy.endpoint(), "lossy");
    cfg.multipart_threshold = 6 * MIB;
    let b = connect(cfg).await;

    // The PUT reaches the server, its 200 is lost; the retry gets 412.
    // That is our own write, not a conflict.
    proxy.script(&[Some(Fault::ResetAfter)]);
    b.put(
        ObjectKind::Snapshot,
        "aa",
        pattern(300, 1),
        &PutOptions::default(),
    )
    .await
    .expect("lost answer to a successful put is not AlreadyExists");
    assert_eq!(
        b.get(ObjectKind::Snapshot, "aa", None).await.unwrap(),
        pattern(300, 1)
    );
    // A real conflict is still one.
    assert!(matches!(
        b.put(
            ObjectKind::Snapshot,
            "aa",
            pattern(300, 2),
            &PutOptions::default()
        )
        .await,
        Err(StorageError::AlreadyExists { .. })
    ));

    // Multipart: HEAD, Create, 2 parts, then Complete whose answer is lost.
    proxy.script(&[None, None, None, None, Some(Fault::ResetAfter)]);
    let big = pattern(8 * MIB, 2);
    b.put(
        ObjectKind::Pack,
        "bb01",
        big.clone(),
        &PutOptions::default(),
    )
    .await
    .expect("lost answer to CompleteMultipartUpload");
    assert!(b.get(ObjectKind::Pack, "bb01", None).await.unwrap() == big);

    // Delete whose answer is lost: HEAD passes, DELETE applied, answer lost.
    proxy.script(&[None, Some(Fault::ResetAfter)]);
    b.delete(ObjectKind::Snapshot, "aa")
        .await
        .expect("lost answer to a delete");
    assert!(matches!(
        b.head(ObjectKind::Snapshot, "aa").await,
        Err(StorageError::NotFound { .. })
    ));

    // A body cut off mid-way is retried, not returned short.
    proxy.script(&[Some(Fault::TruncateBody)]);
    assert!(
        b.get(ObjectKind::Pack, "bb01", Some(0..(3 * MIB as u64)))
            .await
            .unwrap()
            == big.slice(0..3 * MIB)
    );
}
