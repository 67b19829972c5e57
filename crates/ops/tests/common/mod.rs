//! Helpers the application-layer integration tests share: a runtime, seeded
//! test data, and a repository that must check clean (read data included).
//! Each test binary uses only some of them.
#![allow(dead_code)]

use holdfast_repo::check::CheckOptions;
use holdfast_repo::Repository;

/// A multi-threaded runtime of `workers` threads.
pub fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A xorshift stream seeded by `seed`: the same seed, the same numbers.
pub fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed.wrapping_mul(6364136223846793005) | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// `len` incompressible bytes, the same for the same seed.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut r = rng(seed);
    (0..len).map(|_| r() as u8).collect()
}

/// `check --read-data` through the application layer finds nothing wrong.
pub fn check_clean(repo: &Repository) {
    let report = holdfast_ops::check::check(
        repo,
        &CheckOptions {
            read_data: true,
            read_data_subset: None,
        },
        &|_, _| {},
    )
    .expect("check");
    assert!(report.ok(), "check found errors: {:?}", report.errors);
}
