//! `holdfast policy validate|plan|apply` and `backup --time`: the shipped
//! example policies are valid, mistakes exit 2 naming file, line and
//! column, a plan over an imported history says what each snapshot gets
//! and why, and `apply` is a dry run until `--yes`, which purges exactly
//! what the plan said (Object Lock refusals are kept, not errors).

mod common;
#[path = "../../s3/tests/harness/mod.rs"]
mod harness;

use std::fs;
use std::path::PathBuf;

use common::*;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn shipped_example_policies_are_valid() {
    let env = Env::new();
    let dir = repo_root().join("policies");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    for name in [
        "ehr-database.toml",
        "clinical-documents.toml",
        "audit-evidence.toml",
    ] {
        assert!(
            files.iter().any(|f| f.ends_with(name)),
            "policies/{name} is missing"
        );
    }
    let mut args: Vec<std::ffi::OsString> = vec!["policy".into(), "validate".into()];
    args.extend(files.iter().map(|f| f.clone().into_os_string()));
    let out = env.ok(&args);
    assert!(stdout(&out).contains("valid"), "{}", stdout(&out));
}

#[test]
fn invalid_policy_files_exit_2_naming_file_line_and_column() {
    let env = Env::new();
    let bad = env.path("bad.toml");
    fs::write(
        &bad,
        "[[policy]]\nname = \"docs\"\nsource = \"docs\"\ntimezone = \"UTC\"\nkeep = { daily = 7 }\nfloor = \"7y\"\nmax_age = \"6y\"\n",
    )
    .unwrap();
    let out = env.run(["policy".as_ref(), "validate".as_ref(), bad.as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    let e = stderr(&out);
    assert!(
        e.contains(&format!("{}:6:9:", bad.display())) && e.contains("longer than max_age"),
        "{e}"
    );
    let json = env.run([
        "--json".as_ref(),
        "policy".as_ref(),
        "validate".as_ref(),
        bad.as_os_str(),
    ]);
    assert_eq!(json.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"][0]["line"], 6);
    assert_eq!(v["errors"][0]["column"], 9);
}

/// `policy plan --policy FILE --at AT` (exit 0), as JSON or text.
fn plan_at(env: &Env, policy: &std::path::Path, at: &str, json: bool) -> std::process::Output {
    let mut args: Vec<&std::ffi::OsStr> = Vec::new();
    if json {
        args.push("--json".as_ref());
    }
    args.extend::<[&std::ffi::OsStr; 6]>([
        "policy".as_ref(),
        "plan".as_ref(),
        "--policy".as_ref(),
        policy.as_os_str(),
        "--at".as_ref(),
        at.as_ref(),
    ]);
    env.ok(&args)
}

#[test]
fn plan_over_an_imported_history() {
    let env = Env::new();
    env.init();
    let src = env.path("docs");
    fs::create_dir_all(&src).unwrap();
    // Ten daily snapshots, 2026-03-01 .. 2026-03-10, at 10:00 UTC, and a
    // second one on the last day.
    for day in 1..=10 {
        fs::write(src.join("note.txt"), format!("day {day}\n")).unwrap();
        env.ok([
            "backup",
            "--source",
            "docs",
            "--time",
            &format!("2026-03-{day:02}T10:00:00Z"),
            src.to_str().unwrap(),
        ]);
    }
    env.ok([
        "backup",
        "--source",
        "docs",
        "--time",
        "2026-03-10T18:00:00Z",
        src.to_str().unwrap(),
    ]);
    let policy = env.path("docs.toml");
    fs::write(
        &policy,
        "[[policy]]\nname = \"documents\"\nsource = \"docs\"\ntimezone = \"UTC\"\nkeep = { last = 2, daily = 4 }\nfloor = \"3d\"\nmax_age = \"8d\"\n",
    )
    .unwrap();
    let plan: serde_json::Value =
        serde_json::from_slice(&plan_at(&env, &policy, "2026-03-11T12:00:00Z", true).stdout)
            .unwrap();
    let plan = plan.as_array().unwrap();
    assert_eq!(plan.len(), 11);
    let by_time = |t: &str| {
        plan.iter()
            .find(|d| d["time"].as_str().unwrap().starts_with(t))
            .unwrap_or_else(|| panic!("no snapshot at {t}"))
            .clone()
    };
    for d in plan {
        assert!(d["snapshot"].as_str().unwrap().len() == 64, "{d}");
        assert!(
            ["keep", "archive", "purge"].contains(&d["action"].as_str().unwrap()),
            "{d}"
        );
        assert!(!d["rule"].as_str().unwrap().is_empty(), "{d}");
    }
    // Under the 3-day floor (after 2026-03-08 12:00): kept by the floor.
    assert_eq!(by_time("2026-03-10T18")["action"], "keep");
    assert!(by_time("2026-03-10T10")["rule"]
        .as_str()
        .unwrap()
        .starts_with("floor 3d until"));
    assert!(by_time("2026-03-09T10")["rule"]
        .as_str()
        .unwrap()
        .starts_with("floor 3d until"));
    // Daily #3 and #4 are the 8th and 7th.
    assert_eq!(by_time("2026-03-08T10")["rule"], "daily #3 of 4");
    assert_eq!(by_time("2026-03-07T10")["rule"], "daily #4 of 4");
    assert_eq!(by_time("2026-03-06T10")["action"], "purge");
    // Older than 8 days at the plan's time: past max_age.
    assert_eq!(by_time("2026-03-02T10")["rule"], "past max_age 8d");
    assert_eq!(by_time("2026-03-02T10")["action"], "purge");
    // A year later everything is past max_age.
    let later: serde_json::Value =
        serde_json::from_slice(&plan_at(&env, &policy, "2027-03-11T12:00:00Z", true).stdout)
            .unwrap();
    assert!(later
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["action"] == "purge"));
    // The human table says the same.
    let out = plan_at(&env, &policy, "2026-03-11T12:00:00Z", false);
    let text = stdout(&out);
    assert!(
        text.contains("daily #3 of 4") && text.contains("purge"),
        "{text}"
    );
    assert!(text.contains("keep 5, archive 0, purge 6"), "{text}");
}

#[test]
fn backup_time_must_parse() {
    let env = Env::new();
    env.init();
    let src = env.path("docs");
    fs::create_dir_all(&src).unwrap();
    let out = env.run(["backup", "--time", "yesterday", src.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot read time \"yesterday\""),
        "{}",
        stderr(&out)
    );
}

/// Every stored object under `root` (path -> bytes), lease objects aside.
fn stored(root: &std::path::Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    fn walk(dir: &std::path::Path, out: &mut std::collections::BTreeMap<PathBuf, Vec<u8>>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.insert(p.clone(), fs::read(&p).unwrap());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(root, &mut out);
    out.retain(|k, _| !k.starts_with(root.join("locks")));
    out
}

/// The policy file of the issue, verbatim.
const MINIMAL: &str = r#"[[policy]]
name = "documents"
source = "docs"                 # a source name or glob
timezone = "UTC"
keep = { last = 2, daily = 7, weekly = 4, monthly = 12 }
floor = "3d"                    # nothing younger is purged
max_age = "6y"
"#;

fn ids_where(v: &serde_json::Value, key: &str, value: &str) -> Vec<String> {
    // A plan is a list; an apply report has its list under "snapshots".
    let list = if v.is_array() { v } else { &v["snapshots"] };
    let mut out: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d[key] == value)
        .map(|d| d["snapshot"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn apply_with_the_minimal_policy_is_a_dry_run_until_yes() {
    let env = Env::new();
    env.init();
    let src = env.path("docs");
    fs::create_dir_all(&src).unwrap();
    // Two snapshots a day for twelve days.
    for day in 1..=12 {
        for hour in [9, 17] {
            fs::write(src.join("note.txt"), format!("day {day} {hour}\n")).unwrap();
            env.ok([
                "backup",
                "--source",
                "docs",
                "--time",
                &format!("2026-03-{day:02}T{hour:02}:00:00Z"),
                src.to_str().unwrap(),
            ]);
        }
    }
    let policy = env.path("documents.toml");
    fs::write(&policy, MINIMAL).unwrap();
    let at = "2026-03-14T12:00:00Z";
    let plan: serde_json::Value =
        serde_json::from_slice(&plan_at(&env, &policy, at, true).stdout).unwrap();
    let purge = ids_where(&plan, "action", "purge");
    // Kept: last 2 (both of the 12th), the floor (after 03-11 12:00: the
    // 11th 17:00 too), daily 7 (17:00 of the 6th..12th), weekly 4 (ISO
    // weeks 11, 10, 9: the 12th, 8th and 1st at 17:00), monthly 12 (the
    // 12th): nine snapshots; the other fifteen are purged.
    assert_eq!(purge.len(), 15, "{plan}");
    assert_eq!(ids_where(&plan, "action", "keep").len(), 9);

    let apply = |yes: bool| {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "--json".as_ref(),
            "policy".as_ref(),
            "apply".as_ref(),
            "--policy".as_ref(),
            policy.as_os_str(),
            "--at".as_ref(),
            at.as_ref(),
        ];
        if yes {
            args.push("--yes".as_ref());
        }
        let out = env.ok(&args);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let before = stored(&env.repo);
    let dry = apply(false);
    assert_eq!(dry["deleted"], false);
    assert_eq!(ids_where(&dry, "outcome", "would-purge"), purge);
    assert_eq!(
        stored(&env.repo),
        before,
        "the dry run changed the repository"
    );

    let done = apply(true);
    assert_eq!(done["deleted"], true);
    assert_eq!(ids_where(&done, "outcome", "purged"), purge);
    let listed = env.json(["snapshots"]);
    let mut left: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    left.sort();
    assert_eq!(left, ids_where(&plan, "action", "keep"));
    for id in &purge {
        assert!(
            env.repo.join("forgotten").join(id).exists(),
            "no record of {id}"
        );
    }
    // No "deleted or rolled back" report for what was purged on purpose.
    let check = env.ok(["check", "--read-data"]);
    assert!(stderr(&check).is_empty(), "{}", stderr(&check));
    assert!(
        stdout(&check).contains("recorded 9 snapshot(s)"),
        "{}",
        stdout(&check)
    );

    // Deleting a kept snapshot by hand (no record) is still reported,
    // even the oldest, whose successor was purged: the chain of
    // predecessors runs on through the deletion records.
    let by_time = plan.as_array().unwrap();
    let i = by_time.iter().position(|d| d["action"] == "keep").unwrap();
    let oldest_kept = by_time[i]["snapshot"].as_str().unwrap().to_string();
    assert_eq!(
        by_time[i + 1]["action"],
        "purge",
        "its successor was purged"
    );
    fs::remove_file(env.repo.join("snapshots").join(&oldest_kept)).unwrap();
    let out = env.run(["check"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        stderr(&out).contains(&format!("predecessor {oldest_kept}"))
            && stderr(&out).contains("deleted or rolled back"),
        "{}",
        stderr(&out)
    );

    // The human dry run says what it would do and that nothing changed.
    let text = env.ok([
        "policy".as_ref(),
        "apply".as_ref(),
        "--policy".as_ref(),
        policy.as_os_str(),
        "--at".as_ref(),
        std::ffi::OsStr::new("2027-03-14T12:00:00Z"),
    ]);
    assert!(stdout(&text).contains("dry run as of"), "{}", stdout(&text));
    assert!(stdout(&text).contains("add --yes"), "{}", stdout(&text));
    // Applying a plan for a future date is refused: the floor of today
    // would not hold.
    let future = env.run([
        "policy".as_ref(),
        "apply".as_ref(),
        "--yes".as_ref(),
        "--policy".as_ref(),
        policy.as_os_str(),
        "--at".as_ref(),
        std::ffi::OsStr::new("2099-01-01T00:00:00Z"),
    ]);
    assert_ne!(future.status.code(), Some(0));
    assert!(
        stderr(&future).contains("in the future"),
        "{}",
        stderr(&future)
    );
}

#[test]
fn plan_keeps_the_last_snapshot_check_read_data_verified() {
    let env = Env::new();
    env.init();
    let src = env.path("ehr");
    fs::create_dir_all(&src).unwrap();
    for day in 1..=3 {
        fs::write(src.join("dump.sql"), format!("day {day}\n")).unwrap();
        env.ok([
            "backup",
            "--source",
            "ehr",
            "--time",
            &format!("2026-03-{day:02}T10:00:00Z"),
            src.to_str().unwrap(),
        ]);
    }
    let policy = env.path("ehr.toml");
    fs::write(
        &policy,
        "[[policy]]\nname = \"ehr\"\nsource = \"ehr\"\ntimezone = \"UTC\"\nkeep = { last = 1 }\nmax_age = \"1d\"\n",
    )
    .unwrap();
    let at = "2026-06-01T00:00:00Z";
    let before: serde_json::Value =
        serde_json::from_slice(&plan_at(&env, &policy, at, true).stdout).unwrap();
    assert_eq!(ids_where(&before, "action", "purge").len(), 3);
    let check = env.json(["check", "--read-data"]);
    assert!(
        check["report"]["verification_record"].is_string(),
        "{check}"
    );
    assert_eq!(check["report"]["verified"].as_array().unwrap().len(), 3);
    // The newest is now "last verified good" and outranks max_age.
    let after: serde_json::Value =
        serde_json::from_slice(&plan_at(&env, &policy, at, true).stdout).unwrap();
    assert_eq!(ids_where(&after, "action", "purge").len(), 2);
    let text = stdout(&plan_at(&env, &policy, at, false));
    assert!(text.contains("last verified good of source ehr"), "{text}");
}

/// On an Object Lock repository (the S3 test server) every snapshot
/// manifest is retained: `apply --yes` keeps them all, says why, exits 0,
/// and writes no deletion record that could later vouch for them.
#[test]
fn apply_on_an_object_lock_repository_keeps_locked_snapshots() {
    let moto = harness::Moto::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(moto.create_lock_bucket("worm-policy"));
    let env = Env::new();
    let hf = |args: &[&std::ffi::OsStr]| {
        let out = env
            .cmd()
            .env("HOLDFAST_REPOSITORY", "s3://worm-policy/r")
            .env("HOLDFAST_S3_ENDPOINT", moto.endpoint())
            .env("HOLDFAST_S3_PATH_STYLE", "true")
            .env("HOLDFAST_S3_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        out
    };
    let os = |s: &str| std::ffi::OsString::from(s);
    let run = |args: &[std::ffi::OsString]| {
        let a: Vec<&std::ffi::OsStr> = args.iter().map(|s| s.as_os_str()).collect();
        hf(&a)
    };
    run(&[
        os("init"),
        os("--lock-mode"),
        os("governance"),
        os("--lock-days"),
        os("1"),
        os("--kdf-memory-mib"),
        os("8"),
        os("--kdf-iterations"),
        os("1"),
    ]);
    let src = env.path("docs");
    fs::create_dir_all(&src).unwrap();
    for day in 1..=3 {
        fs::write(src.join("note.txt"), format!("day {day}\n")).unwrap();
        run(&[
            os("backup"),
            os("--source"),
            os("docs"),
            os("--time"),
            os(&format!("2026-03-{day:02}T10:00:00Z")),
            src.clone().into_os_string(),
        ]);
    }
    let policy = env.path("docs.toml");
    fs::write(
        &policy,
        "[[policy]]\nname = \"documents\"\nsource = \"docs\"\ntimezone = \"UTC\"\nkeep = { last = 1 }\n",
    )
    .unwrap();
    let out = run(&[
        os("--json"),
        os("policy"),
        os("apply"),
        os("--yes"),
        os("--policy"),
        policy.into_os_string(),
        os("--at"),
        os("2026-03-10T00:00:00Z"),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let locked = ids_where(&v, "outcome", "kept-locked");
    assert_eq!(locked.len(), 2, "{v}");
    assert!(ids_where(&v, "outcome", "purged").is_empty(), "{v}");
    for s in v["snapshots"].as_array().unwrap() {
        if s["outcome"] == "kept-locked" {
            assert!(
                s["detail"].as_str().unwrap().contains("retention until"),
                "{s}"
            );
        }
    }
    let listed = run(&[os("--json"), os("snapshots")]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 3);
    let check = run(&[os("--json"), os("check")]);
    let check: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(check["report"]["tombstones"], 0, "{check}");
    assert!(
        check["report"]["warnings"].as_array().unwrap().is_empty(),
        "{check}"
    );
}

/// A local directory has no storage classes: `policy apply --yes` with
/// snapshots past `archive_after` exits 0, warns that archival is not
/// possible there, reports them as kept where they are, and changes
/// nothing in the repository.
#[test]
fn archival_on_a_local_repository_warns_and_keeps_the_snapshots() {
    let env = Env::new();
    env.init();
    let src = env.path("docs");
    fs::create_dir_all(&src).unwrap();
    for (i, t) in ["2026-01-05T10:00:00Z", "2026-02-05T10:00:00Z"]
        .iter()
        .enumerate()
    {
        fs::write(src.join("note.txt"), format!("version {i}\n")).unwrap();
        env.ok([
            "backup",
            "--source",
            "docs",
            "--time",
            t,
            src.to_str().unwrap(),
        ]);
    }
    let policy = env.path("cold.toml");
    fs::write(
        &policy,
        "[[policy]]\nname = \"docs\"\nsource = \"docs\"\ntimezone = \"UTC\"\nkeep = { last = 5 }\narchive_after = \"30d\"\n",
    )
    .unwrap();
    let before = stored(&env.repo);
    let out = env.ok([
        "--json".as_ref(),
        "policy".as_ref(),
        "apply".as_ref(),
        "--policy".as_ref(),
        policy.as_os_str(),
        "--yes".as_ref(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        ids_where(&v, "outcome", "archive-not-possible").len(),
        2,
        "{v}"
    );
    assert_eq!(v["archival"][0]["supported"], false);
    assert!(
        stderr(&out).contains("no storage classes"),
        "{}",
        stderr(&out)
    );
    let after = stored(&env.repo);
    let changed: Vec<_> = after
        .iter()
        .filter(|(p, b)| {
            before.get(*p) != Some(b)
                && !p.starts_with(env.repo.join("locks"))
                && !p.starts_with(env.repo.join("audit"))
        })
        .map(|(p, _)| p)
        .collect();
    assert!(changed.is_empty(), "archival changed {changed:?}");
}
