//! Legal hold invariants as properties over random sequences of backups
//! (two sources, random contents sharing data), hold placements (on
//! snapshots, and on a source with a time range that also covers later
//! backups), releases, `policy apply --yes` (a policy keeping only the
//! newest snapshot of each source, so everything else is purged unless
//! held) and `gc`, on a real local repository with small packs:
//!
//! - **no held data is ever deleted:** after every apply and gc, every
//!   snapshot a model of the holds says is held still exists and
//!   restores byte for byte;
//! - **holds hold nothing else:** after every apply, exactly the newest
//!   snapshot of each source and the held ones remain;
//! - **released data becomes collectable:** at the end every hold is
//!   released, apply and gc run, and only the newest snapshot of each
//!   source remains, with no pack left that holds nothing it needs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use holdfast_ops::backup::{backup_files, FileBackupConfig};
use holdfast_ops::gc::{gc, GcConfig};
use holdfast_ops::holds::{self, PlaceConfig, ReleaseConfig, Target};
use holdfast_ops::open::{open, Credential};
use holdfast_ops::policy::{self, ApplyConfig, PlanConfig};
use holdfast_ops::restore::{restore_files, FileRestoreConfig, SnapshotSpec};
use holdfast_policy::Policy;
use holdfast_repo::config::RepoConfig;
use holdfast_repo::keys::KdfParams;
use holdfast_repo::{Id, Repository};
use holdfast_sources::restore::RestoreOptions;
use holdfast_sources::Progress;
use holdfast_storage::local::LocalBackend;
use holdfast_storage::{Backend, ObjectKind};
use proptest::prelude::*;

const PASSWORD: &[u8] = b"hold property test";
const SOURCES: [&str; 2] = ["ehr", "docs"];

#[derive(Debug, Clone)]
enum Step {
    /// A backup of `source` with the pool files picked by `mask`.
    Backup {
        source: usize,
        mask: u8,
    },
    /// A hold on the `pick`-th snapshot that exists (modulo their count).
    HoldSnapshot {
        pick: usize,
    },
    /// A hold on a source from `from` to `from + len` days after the
    /// first backup (`len` None: open-ended).
    HoldSource {
        source: usize,
        from: i64,
        len: Option<i64>,
    },
    /// Release the `pick`-th active hold.
    Release {
        pick: usize,
    },
    Apply,
    Gc,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..2usize, 1..=255u8).prop_map(|(source, mask)| Step::Backup { source, mask }),
        3 => (0..64usize).prop_map(|pick| Step::HoldSnapshot { pick }),
        2 => (0..2usize, 0..8i64, prop::option::of(0..4i64))
            .prop_map(|(source, from, len)| Step::HoldSource { source, from, len }),
        1 => (0..64usize).prop_map(|pick| Step::Release { pick }),
        2 => Just(Step::Apply),
        2 => Just(Step::Gc),
    ]
}

/// What the model knows of a hold.
enum Covers {
    Snapshot(Id),
    Source {
        source: String,
        from: DateTime<Utc>,
        to: Option<DateTime<Utc>>,
    },
}

struct ModelHold {
    id: String,
    covers: Covers,
}

/// What the model knows of a snapshot.
struct Snap {
    source: String,
    time: DateTime<Utc>,
    files: HashMap<String, Vec<u8>>,
}

fn held(holds: &[ModelHold], id: &Id, s: &Snap) -> bool {
    holds.iter().any(|h| match &h.covers {
        Covers::Snapshot(x) => x == id,
        Covers::Source { source, from, to } => {
            *source == s.source && s.time >= *from && to.is_none_or(|t| s.time <= t)
        }
    })
}

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

struct World {
    dir: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
    repo: Arc<Repository>,
    pool: Vec<Vec<u8>>,
    policies: Vec<Policy>,
    snaps: BTreeMap<Id, Snap>,
    holds: Vec<ModelHold>,
    start: DateTime<Utc>,
    day: i64,
    restores: usize,
}

impl World {
    fn new() -> World {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path().join("repo")));
        let mut cfg = RepoConfig::new();
        cfg.pack_size = 64 * 1024;
        Repository::init(
            backend.clone(),
            rt.handle().clone(),
            PASSWORD,
            KdfParams {
                m_cost: 64,
                t_cost: 1,
                p_cost: 1,
            },
            cfg,
        )
        .expect("init");
        let repo = open(
            backend,
            rt.handle(),
            &Credential::Password(PASSWORD.to_vec()),
        )
        .expect("open");
        let policies = holdfast_policy::parse_str(
            Path::new("p.toml"),
            "[[policy]]\nname = \"newest\"\nsource = \"*\"\ntimezone = \"UTC\"\nkeep = { last = 1 }\n",
        )
        .expect("policy");
        World {
            pool: (0..8)
                .map(|i| noise(30_000 + 9_000 * i, i as u64 + 1))
                .collect(),
            dir,
            _rt: rt,
            repo,
            policies,
            snaps: BTreeMap::new(),
            holds: Vec::new(),
            start: Utc.with_ymd_and_hms(2025, 1, 1, 10, 0, 0).unwrap(),
            day: 0,
            restores: 0,
        }
    }

    fn run(&mut self, s: &Step) {
        match s {
            Step::Backup { source, mask } => self.backup(SOURCES[*source], *mask),
            Step::HoldSnapshot { pick } => {
                let ids: Vec<Id> = self.snaps.keys().copied().collect();
                if ids.is_empty() {
                    return;
                }
                let id = ids[pick % ids.len()];
                let placed = holds::place(
                    &self.repo,
                    &PlaceConfig {
                        target: Target::Snapshots(vec![id.to_hex()]),
                        case: format!("CASE-{}", self.holds.len()),
                        reason: "property".into(),
                        actor: "prop@test".into(),
                    },
                )
                .expect("place");
                self.holds.push(ModelHold {
                    id: placed.view.hold.id,
                    covers: Covers::Snapshot(id),
                });
            }
            Step::HoldSource { source, from, len } => {
                let from = self.start + Duration::days(*from);
                let to = len.map(|l| from + Duration::days(l) + Duration::hours(12));
                let placed = holds::place(
                    &self.repo,
                    &PlaceConfig {
                        target: Target::Source {
                            source: SOURCES[*source].into(),
                            from: Some(from),
                            to,
                        },
                        case: format!("CASE-{}", self.holds.len()),
                        reason: "property".into(),
                        actor: "prop@test".into(),
                    },
                )
                .expect("place");
                self.holds.push(ModelHold {
                    id: placed.view.hold.id,
                    covers: Covers::Source {
                        source: SOURCES[*source].into(),
                        from,
                        to,
                    },
                });
            }
            Step::Release { pick } => {
                if self.holds.is_empty() {
                    return;
                }
                let h = self.holds.remove(pick % self.holds.len());
                holds::release(
                    &self.repo,
                    &ReleaseConfig {
                        hold: h.id,
                        reason: "done".into(),
                        actor: "prop@test".into(),
                    },
                )
                .expect("release");
            }
            Step::Apply => self.apply(),
            Step::Gc => {
                gc(&self.repo, &GcConfig::default(), &|_, _, _| {}).expect("gc");
                self.check_held();
            }
        }
    }

    fn backup(&mut self, source: &str, mask: u8) {
        let src = self.dir.path().join("src").join(source);
        let _ = std::fs::remove_dir_all(&src);
        std::fs::create_dir_all(&src).expect("mkdir");
        let mut files = HashMap::new();
        for (i, c) in self.pool.iter().enumerate() {
            if mask & (1 << i) != 0 {
                let name = format!("f{i}.bin");
                std::fs::write(src.join(&name), c).expect("write");
                files.insert(name, c.clone());
            }
        }
        let time = self.start + Duration::days(self.day);
        self.day += 1;
        let mut cfg = FileBackupConfig::new(vec![src]);
        cfg.source = Some(source.into());
        cfg.time = Some(time);
        let out = backup_files(&self.repo, &cfg, &Progress::default()).expect("backup");
        self.snaps.insert(
            out.outcome.id,
            Snap {
                source: source.into(),
                time,
                files,
            },
        );
    }

    fn newest(&self) -> HashSet<Id> {
        let mut newest: HashMap<&str, (DateTime<Utc>, Id)> = HashMap::new();
        for (id, s) in &self.snaps {
            let e = newest.entry(&s.source).or_insert((s.time, *id));
            if (s.time, *id) > *e {
                *e = (s.time, *id);
            }
        }
        newest.values().map(|(_, id)| *id).collect()
    }

    fn apply(&mut self) {
        policy::apply(
            &self.repo,
            &ApplyConfig {
                plan: PlanConfig {
                    policies: self.policies.clone(),
                    at: self.repo.now(),
                },
                delete: true,
            },
        )
        .expect("apply");
        let stays: HashSet<Id> = self
            .snaps
            .iter()
            .filter(|(id, s)| held(&self.holds, id, s))
            .map(|(id, _)| *id)
            .chain(self.newest())
            .collect();
        let stored: HashSet<Id> = self
            .repo
            .snapshots()
            .expect("snapshots")
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(
            stored, stays,
            "after apply: exactly the newest of each source and the held snapshots remain"
        );
        self.snaps.retain(|id, _| stays.contains(id));
        self.check_held();
    }

    /// Every held snapshot exists and restores byte for byte.
    fn check_held(&mut self) {
        self.repo.load_index().expect("index");
        let held_ids: Vec<Id> = self
            .snaps
            .iter()
            .filter(|(id, s)| held(&self.holds, id, s))
            .map(|(id, _)| *id)
            .collect();
        for id in held_ids {
            self.restore_same(id);
        }
    }

    fn restore_same(&mut self, id: Id) {
        self.restores += 1;
        let target = self.dir.path().join(format!("out{}", self.restores));
        let done = restore_files(
            &self.repo,
            &FileRestoreConfig {
                snapshot: SnapshotSpec {
                    spec: id.to_hex(),
                    filter: Default::default(),
                },
                target: target.clone(),
                includes: Vec::new(),
                cwd: self.dir.path().to_path_buf(),
                options: RestoreOptions::default(),
            },
            &Progress::default(),
        )
        .unwrap_or_else(|e| panic!("held snapshot {} does not restore: {e}", id.short()));
        assert!(done.outcome.failed.is_empty(), "{:?}", done.outcome.failed);
        let snap = &self.snaps[&id];
        let src = self.dir.path().join("src").join(&snap.source);
        let got = target.join(src.strip_prefix("/").expect("absolute"));
        let mut names: Vec<String> = std::fs::read_dir(&got)
            .expect("restored dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut want: Vec<String> = snap.files.keys().cloned().collect();
        want.sort();
        assert_eq!(names, want, "held snapshot {}: files", id.short());
        for (name, content) in &snap.files {
            assert!(
                std::fs::read(got.join(name)).expect("read") == *content,
                "held snapshot {}: {name} differs",
                id.short()
            );
        }
        let _ = std::fs::remove_dir_all(&target);
    }

    /// Release everything, apply, gc: only the newest snapshot of each
    /// source remains and every stored pack holds something it needs.
    fn finish(&mut self) {
        while !self.holds.is_empty() {
            self.run(&Step::Release { pick: 0 });
        }
        self.apply();
        gc(&self.repo, &GcConfig::default(), &|_, _, _| {}).expect("gc");
        let remaining = self.repo.snapshots().expect("snapshots");
        assert_eq!(
            remaining.iter().map(|e| e.id).collect::<HashSet<_>>(),
            self.newest()
        );
        self.repo.load_index().expect("index");
        let index = self.repo.index();
        let mut needed: HashSet<Id> = HashSet::new();
        for e in &remaining {
            let mut stack = vec![e.snapshot.tree];
            while let Some(t) = stack.pop() {
                needed.insert(index.get(&t).expect("tree indexed").pack);
                for n in self.repo.load_tree(&t).expect("tree").nodes {
                    stack.extend(n.subtree);
                    for b in &n.content {
                        needed.insert(index.get(b).expect("blob indexed").pack);
                    }
                }
            }
        }
        // The packs in storage, listed from the directory itself.
        let mut stored: HashSet<Id> = HashSet::new();
        for fan in std::fs::read_dir(self.dir.path().join("repo").join(ObjectKind::Pack.dir()))
            .expect("data/")
        {
            for p in std::fs::read_dir(fan.expect("fan").path()).expect("fan dir") {
                let name = p.expect("pack").file_name().to_string_lossy().into_owned();
                stored.insert(name.parse().expect("pack name"));
            }
        }
        let garbage: Vec<&Id> = stored.difference(&needed).collect();
        assert!(
            garbage.is_empty(),
            "released data was not reclaimed: {} pack(s) nothing needs",
            garbage.len()
        );
        for id in remaining.iter().map(|e| e.id).collect::<Vec<_>>() {
            self.restore_same(id);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn held_data_is_never_deleted_and_released_data_is_collectable(
        steps in prop::collection::vec(step(), 6..18)
    ) {
        let mut w = World::new();
        // Something to hold from the start.
        w.run(&Step::Backup { source: 0, mask: 0b0000_0111 });
        w.run(&Step::Backup { source: 1, mask: 0b0011_1000 });
        for s in &steps {
            w.run(s);
        }
        w.finish();
    }
}
