//! `policy apply` on real local repositories: a dry run changes nothing,
//! `--yes` purges exactly what the plan says and never what the floor,
//! the last verified snapshot of a source or a hold protects; `check`
//! stays clean after purges but still reports a deletion without a record
//! and a forged or misplaced record; a crash between the record and the
//! delete is finished by the next run; a delete the store refuses as
//! locked is kept, not an error; `check --read-data` records only the
//! snapshots whose data it found good.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use holdfast_ops::backup::{backup_files, FileBackupConfig};
use holdfast_ops::init::{init, InitConfig};
use holdfast_ops::open::{open, Credential};
use holdfast_ops::policy::{self, ApplyConfig, ApplyReport, Outcome, PlanConfig};
use holdfast_ops::verification;
use holdfast_policy::{Action, HoldCheck, Policy, SnapshotInfo};
use holdfast_repo::check::{CheckOptions, CheckReport};
use holdfast_repo::keys::KdfParams;
use holdfast_repo::{Id, Repository};
use holdfast_sources::Progress;
use holdfast_storage::fault::{self, FaultPlan, FaultyBackend, Op, Rule};
use holdfast_storage::local::LocalBackend;
use holdfast_storage::{Backend, ErrorClass, ObjectKind};
use tokio::runtime::Runtime;

const PASSWORD: &[u8] = b"policy apply test password";

struct Fixture {
    dir: tempfile::TempDir,
    repo_dir: PathBuf,
    rt: Runtime,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let f = Fixture {
            repo_dir: dir.path().join("repo"),
            dir,
            rt,
        };
        init(
            f.plain(),
            f.rt.handle(),
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
        .expect("init");
        f
    }

    fn plain(&self) -> Arc<dyn Backend> {
        Arc::new(LocalBackend::new(&self.repo_dir))
    }

    fn open_with(&self, backend: Arc<dyn Backend>) -> Arc<Repository> {
        open(
            backend,
            self.rt.handle(),
            &Credential::Password(PASSWORD.to_vec()),
        )
        .expect("open")
    }

    fn open(&self) -> Arc<Repository> {
        self.open_with(self.plain())
    }

    /// A backup of a small tree of source `source` at `time`; `salt`
    /// makes its content unique.
    fn backup(&self, repo: &Repository, source: &str, time: DateTime<Utc>, salt: &str) -> Id {
        let src = self.dir.path().join("src").join(source);
        std::fs::create_dir_all(&src).expect("mkdir");
        std::fs::write(src.join("note.txt"), format!("{source} {time} {salt}\n")).expect("write");
        std::fs::write(src.join("data.bin"), format!("{salt}{source}").repeat(3000))
            .expect("write");
        let mut cfg = FileBackupConfig::new(vec![src]);
        cfg.source = Some(source.into());
        cfg.time = Some(time);
        backup_files(repo, &cfg, &Progress::default())
            .expect("backup")
            .outcome
            .id
    }

    /// Every stored object as key -> bytes.
    fn storage(&self) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        walk(&self.repo_dir, &self.repo_dir, &mut out);
        out
    }

    fn check(&self, repo: &Repository, read_data: bool) -> CheckReport {
        holdfast_ops::check::check(
            repo,
            &CheckOptions {
                read_data,
                read_data_subset: None,
            },
            &|_, _| {},
        )
        .expect("check")
    }
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            walk(root, &p, out);
        } else {
            let key = p.strip_prefix(root).expect("under root");
            out.insert(
                key.to_string_lossy().into_owned(),
                std::fs::read(&p).expect("read"),
            );
        }
    }
}

fn t(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, hour, 0, 0)
        .single()
        .expect("valid time")
}

fn policies(text: &str) -> Vec<Policy> {
    holdfast_policy::parse_str(Path::new("test.toml"), text).expect("valid policy")
}

fn apply_cfg(text: &str, at: DateTime<Utc>, delete: bool) -> ApplyConfig {
    ApplyConfig {
        plan: PlanConfig {
            policies: policies(text),
            at,
        },
        delete,
    }
}

fn ids_with(report: &ApplyReport, o: Outcome) -> BTreeSet<String> {
    report
        .snapshots
        .iter()
        .filter(|a| a.outcome == o)
        .map(|a| a.decision.snapshot.clone())
        .collect()
}

fn snapshot_ids(repo: &Repository) -> BTreeSet<String> {
    repo.snapshots()
        .expect("snapshots")
        .iter()
        .map(|s| s.id.to_hex())
        .collect()
}

fn assert_clean(r: &CheckReport) {
    assert!(r.errors.is_empty(), "check errors: {:?}", r.errors);
    assert!(r.warnings.is_empty(), "check warnings: {:?}", r.warnings);
}

const DOCS: &str = "[[policy]]\nname = \"documents\"\nsource = \"docs\"\ntimezone = \"UTC\"\nkeep = { last = 2, daily = 3 }\nfloor = \"2d\"\nmax_age = \"6y\"\n";

/// Ten daily snapshots of `docs`, 2026-03-01 .. 10, and two of `other`.
fn history(f: &Fixture, repo: &Repository) -> Vec<Id> {
    let mut ids = Vec::new();
    for day in 1..=10 {
        ids.push(f.backup(repo, "docs", t(day, 10), "a"));
    }
    f.backup(repo, "other", t(2, 9), "x");
    f.backup(repo, "other", t(3, 9), "y");
    ids
}

#[test]
fn dry_run_changes_nothing_and_yes_purges_exactly_the_plan() {
    let f = Fixture::new();
    let repo = f.open();
    history(&f, &repo);
    let at = t(12, 12);
    let before = f.storage();
    let dry = policy::apply(&repo, &apply_cfg(DOCS, at, false)).expect("dry run");
    assert!(!dry.deleted);
    assert_eq!(f.storage(), before, "a dry run changed the repository");
    let plan = policy::plan(
        &repo,
        &PlanConfig {
            policies: policies(DOCS),
            at,
        },
    )
    .expect("plan");
    let planned: BTreeSet<String> = plan
        .snapshots
        .iter()
        .filter(|d| d.action == Action::Purge)
        .map(|d| d.snapshot.clone())
        .collect();
    // last 2 (10th, 9th), daily 3 (10th, 9th, 8th), floor 2d (10th):
    // the 1st..7th are purged; `other` is selected by no policy.
    assert_eq!(planned.len(), 7, "{:#?}", plan.snapshots);
    assert_eq!(ids_with(&dry, Outcome::WouldPurge), planned);

    let all = snapshot_ids(&repo);
    let done = policy::apply(&repo, &apply_cfg(DOCS, at, true)).expect("apply");
    assert!(done.deleted);
    assert_eq!(ids_with(&done, Outcome::Purged), planned);
    let left = snapshot_ids(&repo);
    assert_eq!(
        left,
        all.difference(&planned).cloned().collect::<BTreeSet<_>>()
    );
    let (tombs, bad) = repo.tombstones().expect("tombstones");
    assert!(bad.is_empty(), "{bad:?}");
    let recorded: BTreeSet<String> = tombs.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(recorded, planned);
    for (_, tomb) in &tombs {
        assert_eq!(tomb.by, "policy apply");
        assert_eq!(tomb.policy.as_deref(), Some("documents"));
        assert_eq!(tomb.source, "docs");
        assert!(!tomb.rule.is_empty());
    }
    // No lease is left behind, and check is clean: no predecessor of a
    // kept snapshot is reported missing.
    assert!(repo.leases().expect("leases").is_empty());
    let r = f.check(&repo, true);
    assert_clean(&r);
    assert_eq!(r.tombstones, 7);
    // Applying again finds nothing more to do.
    let again = policy::apply(&repo, &apply_cfg(DOCS, at, true)).expect("apply again");
    assert!(ids_with(&again, Outcome::Purged).is_empty());
}

/// Holds by snapshot id: the stand-in for the legal holds of the next
/// issue, behind the same trait the planner and apply use.
struct StandInHolds(BTreeSet<String>);

impl HoldCheck for StandInHolds {
    fn holds(&self, s: &SnapshotInfo) -> Vec<String> {
        if self.0.contains(&s.id) {
            vec![format!("CASE-{}", &s.id[..4])]
        } else {
            Vec::new()
        }
    }
}

#[test]
fn floor_last_verified_and_holds_are_never_purged() {
    // Several histories and plan times; a policy whose max_age alone
    // would purge nearly everything, so only the protections keep.
    let cases: [(u32, &[usize], &[usize], u32); 3] = [
        // (snapshots, held indexes, verified indexes, plan day)
        (8, &[0, 3], &[2], 9),
        (6, &[], &[1, 4], 7),
        (9, &[8, 1], &[0], 12),
    ];
    for (n, held, verified, day) in cases {
        let f = Fixture::new();
        let repo = f.open();
        let ids: Vec<Id> = (1..=n)
            .map(|d| f.backup(&repo, "docs", t(d, 10), &format!("{d}")))
            .collect();
        f.backup(&repo, "scans", t(1, 8), "s");
        let holds = StandInHolds(held.iter().map(|i| ids[*i].to_hex()).collect());
        let v: Vec<Id> = verified.iter().map(|i| ids[*i]).collect();
        verification::record(&repo, &v, verification::METHOD_DRILL).expect("record");
        let text = "[[policy]]\nname = \"docs\"\nsource = \"*\"\ntimezone = \"Europe/Berlin\"\nkeep = { last = 1 }\nfloor = \"2d\"\nmax_age = \"2d\"\n";
        let at = t(day, 12);
        let report = policy::apply_with(&repo, &apply_cfg(text, at, true), &holds).expect("apply");
        let left = snapshot_ids(&repo);
        for i in held {
            assert!(left.contains(&ids[*i].to_hex()), "held snapshot {i} purged");
        }
        let newest_verified = verified.iter().max().expect("one verified");
        assert!(
            left.contains(&ids[*newest_verified].to_hex()),
            "last verified snapshot {newest_verified} purged"
        );
        for (i, id) in ids.iter().enumerate() {
            let under_floor = t(i as u32 + 1, 10) + Duration::days(2) > at;
            if under_floor {
                assert!(
                    left.contains(&id.to_hex()),
                    "snapshot {i} under the floor purged"
                );
            }
            let protected = under_floor || held.contains(&i) || i == *newest_verified;
            assert_eq!(
                left.contains(&id.to_hex()),
                protected,
                "snapshot {i}: only the protections keep (max_age 2d): {:#?}",
                report.snapshots
            );
        }
        let r = f.check(&repo, false);
        assert_clean(&r);
    }
}

#[test]
fn check_reports_a_deletion_without_record_and_forged_or_misplaced_records() {
    let f = Fixture::new();
    let repo = f.open();
    let ids = history(&f, &repo);
    let done = policy::apply(&repo, &apply_cfg(DOCS, t(12, 12), true)).expect("apply");
    assert_eq!(ids_with(&done, Outcome::Purged).len(), 7);
    assert_clean(&f.check(&repo, false));

    // The 8th is kept and its successor (9th) names it: deleting it by
    // hand, without a record, is reported.
    let victim = ids[7].to_hex();
    let manifest = f.repo_dir.join("snapshots").join(&victim);
    let saved = std::fs::read(&manifest).expect("read manifest");
    std::fs::remove_file(&manifest).expect("delete by hand");
    let r = f.check(&repo, false);
    assert!(
        r.errors
            .iter()
            .any(|e| e.contains(&victim) && e.contains("deleted or rolled back")),
        "{:?}",
        r.errors
    );

    // A forged record (random bytes, or a record sealed with another
    // repository's key) excuses nothing and is itself reported.
    let forged = f.repo_dir.join("forgotten").join(&victim);
    for bytes in [b"not a record".to_vec(), other_repository_record(&victim)] {
        std::fs::write(&forged, &bytes).expect("forge");
        let r = f.check(&repo, false);
        assert!(
            r.errors
                .iter()
                .any(|e| e.contains("deleted or rolled back")),
            "{:?}",
            r.errors
        );
        assert!(
            r.errors
                .iter()
                .any(|e| e.contains(&format!("forgotten/{victim}")) && e.contains("cannot be read")),
            "{:?}",
            r.errors
        );
    }

    // A genuine record of another snapshot copied to its name neither.
    let genuine = ids[0].to_hex();
    std::fs::copy(f.repo_dir.join("forgotten").join(&genuine), &forged).expect("copy");
    let r = f.check(&repo, false);
    assert!(
        r.errors
            .iter()
            .any(|e| e.contains("deleted or rolled back")),
        "{:?}",
        r.errors
    );
    assert!(
        r.errors
            .iter()
            .any(|e| e.contains(&format!("forgotten/{victim}")) && e.contains(&genuine)),
        "{:?}",
        r.errors
    );

    // Put everything back: clean again.
    std::fs::remove_file(&forged).expect("remove forged");
    std::fs::write(&manifest, saved).expect("restore manifest");
    assert_clean(&f.check(&repo, false));
}

/// A deletion record for `name` sealed by a different repository (its own
/// key): it opens nowhere but there.
fn other_repository_record(name: &str) -> Vec<u8> {
    let other = Fixture::new();
    let repo = other.open();
    let id = other.backup(&repo, "docs", t(1, 1), "z");
    let entry = repo
        .snapshots()
        .expect("snapshots")
        .into_iter()
        .find(|s| s.id == id)
        .expect("snapshot");
    let tomb =
        holdfast_repo::forget::Tombstone::new(&entry, "policy apply", None, "test", Utc::now());
    repo.seal_object(
        holdfast_repo::object::Binding::new(ObjectKind::Tombstone, name),
        &serde_json::to_vec(&tomb).expect("json"),
    )
    .expect("seal")
}

#[test]
fn a_crash_between_record_and_delete_is_finished_by_the_next_run() {
    let points = [
        Rule::new(
            Op::Put,
            Some(ObjectKind::Tombstone),
            1,
            fault::Action::CrashAfter,
        ),
        Rule::new(
            Op::Delete,
            Some(ObjectKind::Snapshot),
            1,
            fault::Action::Crash,
        ),
        Rule::new(
            Op::Delete,
            Some(ObjectKind::Snapshot),
            3,
            fault::Action::Crash,
        ),
        Rule::new(
            Op::Put,
            Some(ObjectKind::Tombstone),
            4,
            fault::Action::Crash,
        ),
        Rule::new(
            Op::Delete,
            Some(ObjectKind::Snapshot),
            2,
            fault::Action::CrashAfter,
        ),
    ];
    for rule in points {
        let f = Fixture::new();
        let repo = f.open();
        history(&f, &repo);
        let at = t(12, 12);
        let planned: BTreeSet<String> = policy::apply(&repo, &apply_cfg(DOCS, at, false))
            .expect("dry run")
            .snapshots
            .iter()
            .filter(|a| a.outcome == Outcome::WouldPurge)
            .map(|a| a.decision.snapshot.clone())
            .collect();
        drop(repo);

        let faulty = Arc::new(FaultyBackend::new(
            f.plain(),
            FaultPlan::default().rule(rule),
        ));
        let repo = f.open_with(faulty.clone());
        assert!(
            policy::apply(&repo, &apply_cfg(DOCS, at, true)).is_err(),
            "apply went on past {rule:?}"
        );
        assert!(faulty.crashed(), "{rule:?} never fired");
        drop(repo);

        // What the crash left: no error; a record beside a snapshot that
        // still exists is a warning naming the way out.
        let repo = f.open();
        let r = f.check(&repo, false);
        assert!(r.errors.is_empty(), "{rule:?}: {:?}", r.errors);
        let (tombs, _) = repo.tombstones().expect("tombstones");
        let present = snapshot_ids(&repo);
        let interrupted = tombs.iter().filter(|(n, _)| present.contains(n)).count();
        assert_eq!(
            r.warnings
                .iter()
                .filter(|w| w.contains("deletion record") && w.contains("policy apply --yes"))
                .count(),
            interrupted,
            "{rule:?}: {:?}",
            r.warnings
        );
        // Every snapshot already gone has its record.
        for id in &planned {
            if !present.contains(id) {
                assert!(
                    tombs.iter().any(|(n, _)| n == id),
                    "{id} gone without record"
                );
            }
        }

        let done = policy::apply(&repo, &apply_cfg(DOCS, at, true)).expect("rerun");
        let finished: BTreeSet<String> = ids_with(&done, Outcome::Purged);
        assert!(finished.is_subset(&planned));
        let left = snapshot_ids(&repo);
        assert!(left.is_disjoint(&planned), "{rule:?}: purge not finished");
        assert_clean(&f.check(&repo, false));
    }
}

#[test]
fn a_delete_refused_as_locked_is_kept_and_not_an_error() {
    let f = Fixture::new();
    let repo = f.open();
    history(&f, &repo);
    drop(repo);
    // The store refuses the 2nd and 5th manifest deletes (Object Lock,
    // a storage-level legal hold).
    let faulty = Arc::new(FaultyBackend::new(
        f.plain(),
        FaultPlan::default()
            .rule(Rule::new(
                Op::Delete,
                Some(ObjectKind::Snapshot),
                2,
                fault::Action::Fail(ErrorClass::Locked),
            ))
            .rule(Rule::new(
                Op::Delete,
                Some(ObjectKind::Snapshot),
                5,
                fault::Action::Fail(ErrorClass::Locked),
            )),
    ));
    let repo = f.open_with(faulty);
    let done = policy::apply(&repo, &apply_cfg(DOCS, t(12, 12), true)).expect("apply: exit 0");
    let locked = ids_with(&done, Outcome::KeptLocked);
    assert_eq!(locked.len(), 2, "{:#?}", done.snapshots);
    assert_eq!(ids_with(&done, Outcome::Purged).len(), 5);
    for a in done
        .snapshots
        .iter()
        .filter(|a| a.outcome == Outcome::KeptLocked)
    {
        assert!(a.detail.as_deref().is_some_and(|d| !d.is_empty()));
    }
    drop(repo);
    let repo = f.open();
    let left = snapshot_ids(&repo);
    assert!(locked.is_subset(&left));
    // Their records were taken back, so nothing vouches for a later
    // deletion of them: check is clean now and reports one later.
    let (tombs, _) = repo.tombstones().expect("tombstones");
    assert!(tombs.iter().all(|(n, _)| !locked.contains(n)));
    let r = f.check(&repo, true);
    assert_clean(&r);
    assert_eq!(r.snapshots, left.len());
}

#[test]
fn check_read_data_records_only_snapshots_found_good() {
    let f = Fixture::new();
    let repo = f.open();
    let packs = |f: &Fixture| -> BTreeSet<String> {
        f.storage()
            .keys()
            .filter(|k| k.starts_with("data/"))
            .cloned()
            .collect()
    };
    let a1 = f.backup(&repo, "a", t(1, 10), "a1");
    let a2 = f.backup(&repo, "a", t(2, 10), "a2");
    let before = packs(&f);
    let b1 = f.backup(&repo, "b", t(3, 10), "b1");
    let b_packs: Vec<String> = packs(&f).difference(&before).cloned().collect();
    assert!(!b_packs.is_empty());

    let plan_for = |repo: &Repository| {
        policy::plan(
            repo,
            &PlanConfig {
                policies: policies(
                    "[[policy]]\nname = \"all\"\nsource = \"*\"\ntimezone = \"UTC\"\nkeep = { last = 1 }\nmax_age = \"1h\"\n",
                ),
                at: t(20, 0),
            },
        )
        .expect("plan")
    };
    let decision = |plan: &policy::Plan, id: &Id| {
        plan.snapshots
            .iter()
            .find(|d| d.snapshot == id.to_hex())
            .cloned()
            .expect("planned")
    };

    // A structure-only check verifies nothing; neither does a subset read.
    let r = f.check(&repo, false);
    assert!(r.verified.is_empty() && r.verification_record.is_none());
    let sub = holdfast_ops::check::check(
        &repo,
        &CheckOptions {
            read_data: false,
            read_data_subset: Some("1/2".parse().expect("subset")),
        },
        &|_, _| {},
    )
    .expect("check");
    // A subset is chosen by pack id, so with few packs it can happen to
    // select every one; a read of everything is a full read and verifies.
    // Only a subset that left packs unread must verify nothing.
    if sub.packs_read < packs(&f).len() {
        assert!(sub.verified.is_empty() && sub.verification_record.is_none());
        assert!(repo.verifications().expect("records").0.is_empty());
    } else {
        // Not what this test is about: take that record away again.
        let name = sub
            .verification_record
            .clone()
            .expect("a full read records");
        std::fs::remove_file(f.repo_dir.join("verified").join(name)).expect("remove record");
    }

    // Damage every pack of b's backup: only a's snapshots are verified.
    let mut saved = Vec::new();
    for p in &b_packs {
        let path = f.repo_dir.join(p);
        let bytes = std::fs::read(&path).expect("read");
        let mut damaged = bytes.clone();
        let mid = damaged.len() / 2;
        damaged[mid] ^= 0x55;
        std::fs::write(&path, damaged).expect("write");
        saved.push((path, bytes));
    }
    let r = f.check(&repo, true);
    assert!(!r.errors.is_empty());
    let verified: BTreeSet<String> = r.verified.iter().cloned().collect();
    assert_eq!(
        verified,
        [a1, a2].iter().map(Id::to_hex).collect::<BTreeSet<_>>()
    );
    let name = r
        .verification_record
        .clone()
        .expect("a record for a's snapshots");
    let (records, bad) = repo.verifications().expect("records");
    assert!(bad.is_empty());
    let rec = &records.iter().find(|(n, _)| *n == name).expect("stored").1;
    assert_eq!(rec.method, "check --read-data");
    assert!(!rec.snapshots.contains(&b1));

    // The plan keeps a2 as the last verified good of a where max_age
    // would purge it; b1 was never verified and is purged.
    let plan = plan_for(&repo);
    let d = decision(&plan, &a2);
    assert_eq!(d.action, Action::Keep);
    assert_eq!(d.rule, "last verified good of source a");
    assert_eq!(decision(&plan, &a1).action, Action::Purge);
    assert_eq!(decision(&plan, &b1).action, Action::Purge);

    // Repaired, a full check verifies every snapshot, and b1 is kept too.
    for (path, bytes) in saved {
        std::fs::write(path, bytes).expect("repair");
    }
    let r = f.check(&repo, true);
    assert_clean(&r);
    let all: BTreeSet<String> = [a1, a2, b1].iter().map(Id::to_hex).collect();
    assert_eq!(r.verified.iter().cloned().collect::<BTreeSet<_>>(), all);
    let plan = plan_for(&repo);
    assert_eq!(decision(&plan, &b1).rule, "last verified good of source b");

    // A verification record that does not open vouches for nothing and
    // the plan says so.
    std::fs::write(f.repo_dir.join("verified").join("0".repeat(32)), b"junk").expect("junk");
    let plan = plan_for(&repo);
    assert!(
        plan.warnings.iter().any(|w| w.contains(&"0".repeat(32))),
        "{:?}",
        plan.warnings
    );
}

/// A hold placed on a snapshot after the planner looked at it.
struct HoldArrivesLate {
    target: String,
    asked: std::sync::Mutex<u32>,
}

impl HoldCheck for HoldArrivesLate {
    fn holds(&self, s: &SnapshotInfo) -> Vec<String> {
        if s.id != self.target {
            return Vec::new();
        }
        let mut n = self.asked.lock().expect("lock");
        *n += 1;
        if *n > 1 {
            vec!["CASE-LATE".into()]
        } else {
            Vec::new()
        }
    }
}

#[test]
fn a_hold_placed_after_planning_stops_the_apply_before_any_delete() {
    let f = Fixture::new();
    let repo = f.open();
    let ids = history(&f, &repo);
    let before = f.storage();
    let holds = HoldArrivesLate {
        target: ids[3].to_hex(),
        asked: std::sync::Mutex::new(0),
    };
    let e = policy::apply_with(&repo, &apply_cfg(DOCS, t(12, 12), true), &holds)
        .expect_err("must refuse");
    let msg = e.to_string();
    assert!(
        msg.contains(&ids[3].to_hex())
            && msg.contains("CASE-LATE")
            && msg.contains("nothing was deleted"),
        "{msg}"
    );
    // Only the apply's failure went on the audit trail.
    let unaudited = |m: BTreeMap<String, Vec<u8>>| -> BTreeMap<String, Vec<u8>> {
        m.into_iter()
            .filter(|(k, _)| !k.starts_with("locks/") && !k.starts_with("audit/"))
            .collect()
    };
    assert_eq!(
        unaudited(f.storage()),
        unaudited(before),
        "something was deleted or written"
    );
    let (log, _) = holdfast_ops::audit::log(&repo, &Default::default()).expect("audit log");
    let last = &log.last().expect("entries").entry;
    assert_eq!(
        (last.operation.as_str(), last.outcome.as_str()),
        ("policy apply", "failure")
    );
    assert!(last
        .error
        .as_deref()
        .is_some_and(|e| e.contains("CASE-LATE")));
}
