//! `holdfast policy validate|plan` and `backup --time`: the shipped example
//! policies are valid, mistakes exit 2 naming file, line and column, and a
//! plan over an imported history says what each snapshot gets and why.

mod common;

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
