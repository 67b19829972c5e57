//! The parallel backup pipeline (issue 14): the snapshot does not depend on
//! the number of threads, split reads of large files restore byte-exact,
//! the segment budget bounds split reads, and an unchanged re-backup on
//! many threads keeps every file without reading it.

mod common;

use std::fs;
use std::path::Path;

use common::*;

/// A tree with many small files in several directories, a few chunked
/// ones, a sparse file, symlinks and one file large enough to be split.
fn make_tree(root: &Path) {
    for d in 0..6u64 {
        let dir = root.join(format!("d{d}")).join("sub");
        fs::create_dir_all(&dir).unwrap();
        for f in 0..40u64 {
            fs::write(
                dir.join(format!("f{f}.txt")),
                text(100 + 37 * f as usize, d * 100 + f),
            )
            .unwrap();
        }
        fs::write(root.join(format!("d{d}/mid.bin")), noise(3 << 20, d)).unwrap();
        std::os::unix::fs::symlink("sub/f1.txt", root.join(format!("d{d}/link"))).unwrap();
    }
    // 50 MiB: four segments of 16 MiB (the least segment for 8 MiB chunks).
    fs::write(root.join("big.bin"), noise(50 << 20, 42)).unwrap();
    let sparse = fs::File::create(root.join("sparse.img")).unwrap();
    sparse.set_len(40 << 20).unwrap();
    fs::create_dir(root.join("empty")).unwrap();
}

/// The two snapshots hold the same nodes below `src` (their trees differ
/// at most in its ancestors, such as `/tmp`, whose times other tests move).
/// Subtrees with equal ids are not even entered by `diff`, so for a backup
/// of the same files this is the same tree bytes below `src`.
fn assert_same_below(env: &Env, a: &serde_json::Value, b: &serde_json::Value, src: &Path) {
    let out = env.ok([
        "diff",
        a["snapshot"].as_str().unwrap(),
        b["snapshot"].as_str().unwrap(),
    ]);
    let text = stdout(&out);
    for line in text.lines() {
        let mut c = line.chars();
        if let (Some(sym), Some(' ')) = (c.next(), c.next()) {
            if "+-MUT".contains(sym) {
                assert!(!Path::new(&line[2..]).starts_with(src), "{line}\n{text}");
            }
        }
    }
}

fn backup(env: &Env, src: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["backup", src.to_str().unwrap(), "--force"];
    args.extend_from_slice(extra);
    env.json(args)
}

#[test]
fn same_snapshot_tree_whatever_the_thread_count_and_split_reads_restore_exactly() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    make_tree(&src);

    // Serial: one reader thread, no split reads.
    let one = backup(&env, &src, &["--threads", "1", "--split-min", "1T"]);
    assert_eq!(one["cpu"]["reader_threads"], 1);
    assert_eq!(one["cpu"]["split_files"], 0);
    // Many threads, and the two large files split into 16 MiB segments.
    let many = backup(
        &env,
        &src,
        &[
            "--threads",
            "5",
            "--split-min",
            "20M",
            "--split-segment",
            "16M",
        ],
    );
    assert_eq!(many["cpu"]["reader_threads"], 5);
    assert_eq!(many["cpu"]["split_files"], 2, "{many}");
    assert_same_below(&env, &one, &many, &src);
    assert_eq!(one["summary"]["files_new"], many["summary"]["files_new"]);
    assert_eq!(one["summary"]["bytes_read"], many["summary"]["bytes_read"]);
    // Segments smaller than two maximal chunks are raised to that: still the same.
    let tiny = backup(
        &env,
        &src,
        &[
            "--threads",
            "3",
            "--split-min",
            "1M",
            "--split-segment",
            "1K",
        ],
    );
    assert_same_below(&env, &one, &tiny, &src);

    let out = env.path("out");
    env.ok([
        "restore",
        many["snapshot"].as_str().unwrap(),
        "--target",
        out.to_str().unwrap(),
    ]);
    let restored = out.join(src.strip_prefix("/").unwrap());
    assert_eq!(
        fs::read(restored.join("big.bin")).unwrap(),
        fs::read(src.join("big.bin")).unwrap()
    );
    assert_same_tree(&src, &restored);
}

#[test]
fn a_tiny_segment_budget_reads_large_files_as_streams_with_the_same_result() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a.bin"), noise(40 << 20, 1)).unwrap();
    fs::write(src.join("b.bin"), noise(40 << 20, 2)).unwrap();

    let split = backup(
        &env,
        &src,
        &[
            "--threads",
            "4",
            "--split-min",
            "1M",
            "--split-segment",
            "16M",
        ],
    );
    assert_eq!(split["cpu"]["split_files"], 2);
    // Room for one 24 MiB segment buffer only: no file may be split (two
    // segments are the least a split read takes), so none is.
    let bounded = backup(
        &env,
        &src,
        &[
            "--threads",
            "4",
            "--split-min",
            "1M",
            "--split-segment",
            "16M",
            "--split-budget",
            "40M",
        ],
    );
    assert_eq!(bounded["cpu"]["split_files"], 0, "{bounded}");
    assert_same_below(&env, &split, &bounded, &src);
}

#[test]
fn unchanged_rebackup_on_many_threads_reads_nothing_and_keeps_the_tree() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    for d in 0..20u64 {
        let dir = src.join(format!("dir{d:02}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..50u64 {
            fs::write(
                dir.join(format!("{f}")),
                text(50 + f as usize, d * 1000 + f),
            )
            .unwrap();
        }
    }
    let first = env.json(["backup", src.to_str().unwrap(), "--threads", "4"]);
    let second = env.json(["backup", src.to_str().unwrap(), "--threads", "4"]);
    assert_eq!(second["summary"]["files_unchanged"], 1000);
    assert_eq!(second["summary"]["files_new"], 0);
    assert_eq!(second["summary"]["files_changed"], 0);
    assert_eq!(second["summary"]["bytes_read"], 0);
    assert_same_below(&env, &first, &second, &src);
    // One file changes: only it is read, and the tree changes.
    fs::write(src.join("dir07/3"), b"changed").unwrap();
    let third = env.json(["backup", src.to_str().unwrap(), "--threads", "3"]);
    assert_eq!(third["summary"]["files_unchanged"], 999);
    assert_eq!(third["summary"]["files_changed"], 1);
    assert_eq!(third["summary"]["bytes_read"], 7);
    let diff = stdout(&env.ok([
        "diff",
        first["snapshot"].as_str().unwrap(),
        third["snapshot"].as_str().unwrap(),
    ]));
    assert!(
        diff.lines()
            .any(|l| l == format!("M {}", src.join("dir07/3").display())),
        "{diff}"
    );
}
