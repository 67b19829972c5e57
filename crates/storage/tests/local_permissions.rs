//! Modes of what the local backend writes: 0600 files and 0700 directories
//! whatever the umask, group bits only when the repository directory has
//! them. One test function: the umask is process-wide.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use bytes::Bytes;
use holdfast_storage::local::LocalBackend;
use holdfast_storage::{Backend, ObjectKind, PutOptions};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn put_all(b: &LocalBackend) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for kind in ObjectKind::ALL {
        let name = if kind == ObjectKind::Config {
            "config"
        } else {
            "ab01"
        };
        rt.block_on(b.put(kind, name, Bytes::from_static(b"x"), &PutOptions::default()))
            .unwrap();
    }
}

/// Every file and directory under `root` (root excluded) with its mode.
fn modes_under(root: &Path) -> Vec<(String, bool, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let is_dir = p.is_dir();
            if is_dir {
                stack.push(p.clone());
            }
            out.push((p.display().to_string(), is_dir, mode(&p)));
        }
    }
    assert!(out.len() >= 15, "every kind written: {out:?}");
    out
}

#[test]
fn objects_are_private_whatever_the_umask() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, umask) in [0o000, 0o022, 0o077].into_iter().enumerate() {
        // SAFETY: umask has no preconditions; this binary has one test.
        unsafe { libc::umask(umask) };
        // A repository directory holdfast creates (with a missing parent).
        let root = tmp.path().join(format!("new{i}/repo"));
        put_all(&LocalBackend::new(&root));
        assert_eq!(mode(&root), 0o700, "root, umask {umask:o}");
        for (p, is_dir, m) in modes_under(&root) {
            let want = if is_dir { 0o700 } else { 0o600 };
            assert_eq!(m, want, "{p} under umask {umask:o}");
        }

        // A repository directory the administrator shared with a group.
        let shared = tmp.path().join(format!("shared{i}"));
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o2750)).unwrap();
        put_all(&LocalBackend::new(&shared));
        for (p, is_dir, m) in modes_under(&shared) {
            let want = if is_dir { 0o2750 } else { 0o640 };
            assert_eq!(m, want, "{p} under umask {umask:o}");
        }
    }
    unsafe { libc::umask(0o022) };
}
