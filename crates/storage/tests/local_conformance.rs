//! The shared backend conformance suite, against the local-directory backend.

use std::sync::Arc;

use holdfast_storage::local::LocalBackend;
use holdfast_storage::{conformance, Backend, ObjectKind, PutOptions, StorageError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_backend_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path().join("repo")));
    conformance::run_all(backend, 1100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_backend_ignores_interrupted_writes() {
    let dir = tempfile::tempdir().unwrap();
    let b = LocalBackend::new(dir.path());
    // A temporary left behind by a crash mid-write is invisible.
    std::fs::create_dir_all(dir.path().join("snapshots")).unwrap();
    std::fs::write(dir.path().join("snapshots/.tmp-abcd-1"), b"partial").unwrap();
    assert!(b.list(ObjectKind::Snapshot).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_backend_reports_lock_as_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    let b = LocalBackend::new(dir.path());
    assert!(!b.capabilities().retention);
    let opts = PutOptions {
        legal_hold: true,
        ..Default::default()
    };
    let err = b
        .put(
            ObjectKind::Pack,
            "aa",
            bytes::Bytes::from_static(b"x"),
            &opts,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Unsupported { .. }), "{err}");
    let err = b
        .set_legal_hold(ObjectKind::Pack, "aa", true)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("legal hold"), "{err}");
}
