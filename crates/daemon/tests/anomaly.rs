//! The mass-change detector on real backups (holdfast-ops, a local
//! repository): a document tree over several ordinary days, a few percent
//! of its files edited each day, never fires; most files replaced by
//! random bytes (what an encrypting attack leaves) fires on that backup,
//! and the automatic hold lands on the last snapshot before it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use holdfast_daemon::anomaly::{self, Settings};
use holdfast_ops::backup::{backup_files, FileBackupConfig};
use holdfast_ops::holds;
use holdfast_ops::init::{init, InitConfig};
use holdfast_ops::open::{open, Credential};
use holdfast_repo::keys::KdfParams;
use holdfast_repo::Repository;
use holdfast_sources::Progress;
use holdfast_storage::local::LocalBackend;
use rand::{Rng, RngCore, SeedableRng};

const PASSWORD: &[u8] = b"anomaly test password";
const FILES: usize = 200;

const WORDS: &[&str] = &[
    "patient",
    "record",
    "dosage",
    "allergy",
    "history",
    "visit",
    "notes",
    "lab",
    "result",
    "referral",
    "discharge",
    "summary",
    "medication",
    "insulin",
    "blood",
    "pressure",
    "follow-up",
    "the",
    "and",
    "of",
    "with",
    "was",
    "normal",
    "review",
];

/// A page of plausible text: compresses like documents do.
fn text(rng: &mut impl Rng, bytes: usize) -> String {
    let mut s = String::with_capacity(bytes + 16);
    while s.len() < bytes {
        s.push_str(WORDS[rng.gen_range(0..WORDS.len())]);
        s.push(if rng.gen_ratio(1, 12) { '\n' } else { ' ' });
    }
    s
}

fn file(tree: &Path, i: usize) -> PathBuf {
    tree.join(format!("dept{}", i % 7))
        .join(format!("doc{i:04}.txt"))
}

#[test]
fn fires_on_mass_encryption_not_on_ordinary_days_and_holds_the_snapshot_before() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let backend = Arc::new(LocalBackend::new(dir.path().join("repo")));
    init(
        backend.clone(),
        rt.handle(),
        InitConfig {
            password: PASSWORD.to_vec(),
            kdf: KdfParams {
                m_cost: 64,
                t_cost: 1,
                p_cost: 1,
            },
            compression_level: 3,
            lock: None,
        },
    )
    .unwrap();
    let repo: Arc<Repository> = open(
        backend,
        rt.handle(),
        &Credential::Password(PASSWORD.to_vec()),
    )
    .unwrap();

    let tree = dir.path().join("documents");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for i in 0..FILES {
        let p = file(&tree, i);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let size = rng.gen_range(4_000..24_000);
        std::fs::write(&p, text(&mut rng, size)).unwrap();
    }
    let day0 = Utc.with_ymd_and_hms(2026, 11, 1, 1, 30, 0).unwrap();
    let backup = |day: i64| -> String {
        let mut cfg = FileBackupConfig::new(vec![tree.clone()]);
        cfg.source = Some("docs".into());
        cfg.time = Some(day0 + Duration::days(day));
        backup_files(&repo, &cfg, &Progress::default())
            .expect("backup")
            .outcome
            .id
            .to_hex()
    };
    let settings = Settings::default();
    let mut ids = vec![backup(0)];
    assert_eq!(anomaly::detect_in(&repo, "docs", &settings).unwrap(), None);

    // Ordinary days: 2-4% of the files edited (a paragraph added or
    // rewritten), one or two new ones.
    for day in 1..=6i64 {
        let edits = rng.gen_range(4..=8);
        for _ in 0..edits {
            let p = file(&tree, rng.gen_range(0..FILES));
            let mut t = std::fs::read_to_string(&p).unwrap();
            let extra = text(&mut rng, 1500);
            if rng.gen_bool(0.5) {
                t.push_str(&extra);
            } else {
                t.replace_range(..t.len().min(1500), &extra);
            }
            std::fs::write(&p, t).unwrap();
        }
        let new = tree.join(format!("dept0/new-day{day}.txt"));
        std::fs::write(&new, text(&mut rng, 6000)).unwrap();
        ids.push(backup(day));
        let found = anomaly::detect_in(&repo, "docs", &settings).unwrap();
        assert_eq!(found, None, "an ordinary day {day} fired");
    }
    // A busy but ordinary day: 10% of the files edited.
    for i in (0..FILES).step_by(10) {
        let p = file(&tree, i);
        let mut t = std::fs::read_to_string(&p).unwrap();
        t.push_str(&text(&mut rng, 3000));
        std::fs::write(&p, t).unwrap();
    }
    ids.push(backup(7));
    assert_eq!(
        anomaly::detect_in(&repo, "docs", &settings).unwrap(),
        None,
        "busy day fired"
    );
    let before_attack = ids.last().unwrap().clone();

    // The attack: 90% of the files replaced by random bytes of their size.
    for i in 0..FILES {
        if i % 10 == 3 {
            continue;
        }
        let p = file(&tree, i);
        let len = std::fs::metadata(&p).unwrap().len() as usize;
        let mut junk = vec![0u8; len];
        rng.fill_bytes(&mut junk);
        std::fs::write(&p, junk).unwrap();
    }
    let attacked = backup(8);
    let mut finding = anomaly::detect_in(&repo, "docs", &settings)
        .unwrap()
        .expect("the mass encryption fires");
    assert_eq!(finding.snapshot, attacked);
    assert_eq!(
        finding.held_snapshot.as_deref(),
        Some(before_attack.as_str())
    );
    assert!(finding.changed_share > 0.85, "{finding:?}");
    assert!(finding.changed_baseline < 0.1, "{finding:?}");
    assert!(
        finding.reason.contains("of files changed"),
        "{}",
        finding.reason
    );

    // The hold: on the snapshot before the jump, recorded in the finding.
    let placed = anomaly::hold_before(&repo, "docs", &mut finding, "holdfast-daemon@test")
        .unwrap()
        .expect("a hold");
    let hold_id = finding.hold.clone().expect("hold id in the finding");
    assert_eq!(placed.view.hold.id, hold_id);
    let list = holds::list(&repo, false).unwrap();
    let h = list
        .holds
        .iter()
        .find(|h| h.hold.id == hold_id)
        .expect("listed");
    assert!(h.active);
    let covered: Vec<&str> = h.snapshots.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(covered, [before_attack.as_str()]);
    assert_eq!(h.hold.placed_by, "holdfast-daemon@test");
    assert!(h.hold.case.starts_with("anomaly-docs-"), "{}", h.hold.case);
}
