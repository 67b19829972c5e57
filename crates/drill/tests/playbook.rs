//! Playbook files: the minimal file of the issue means what it says, and
//! every class of mistake is an error at the right line and column that
//! says what was expected.

use std::path::Path;

use holdfast_drill::{parse_str, Check, Expect, Pick, PlaybookError, PointInTime, Target};

const MINIMAL: &str = r#"name = "nightly-documents"
[snapshot]
source = "docs"
pick = "latest"                 # latest | latest-within | random-within
[target]
kind = "directory"              # directory | postgres-scratch | postgres-server
[[check]]
kind = "files"                  # verify every restored file against the snapshot
[objectives]
rto = "15m"
rpo = "26h"
"#;

fn errors(text: &str) -> Vec<PlaybookError> {
    match parse_str(Path::new("p.toml"), text) {
        Ok(p) => panic!("accepted: {p:?}"),
        Err(e) => e,
    }
}

/// The one error of `text`: at `line`:`column`, its message containing
/// every one of `words`.
fn one_error(text: &str, line: usize, column: usize, words: &[&str]) {
    let e = errors(text);
    assert_eq!(e.len(), 1, "{e:?}");
    let e = &e[0];
    assert_eq!((e.line, e.column), (line, column), "{e}");
    for w in words {
        assert!(e.message.contains(w), "{e} lacks {w:?}");
    }
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("p.toml:{line}:{column}: ")),
        "{shown}"
    );
}

/// MINIMAL with `from` replaced by `to` (which must occur).
fn edit(from: &str, to: &str) -> String {
    assert!(MINIMAL.contains(from), "{from:?}");
    MINIMAL.replacen(from, to, 1)
}

#[test]
fn minimal_file_means_what_it_says() {
    let p = parse_str(Path::new("p.toml"), MINIMAL).expect("valid");
    assert_eq!(p.name, "nightly-documents");
    assert_eq!(p.repository, None);
    assert_eq!(p.restores.len(), 1);
    let r = &p.restores[0];
    assert_eq!(r.label, "docs");
    assert_eq!(r.snapshot.source, "docs");
    assert_eq!(r.snapshot.kind, "files");
    assert_eq!(r.snapshot.pick, Pick::Latest);
    assert_eq!(r.snapshot.point_in_time, None);
    assert_eq!(
        r.target,
        Target::Directory {
            path: None,
            parent: None,
            keep: false
        }
    );
    assert_eq!(
        r.checks,
        vec![Check::Files {
            sample: None,
            seed: None
        }]
    );
    assert_eq!(p.objectives.rto, 15 * 60);
    assert_eq!(p.objectives.rpo, 26 * 3600);
    // Default timeout: four times the RTO, at least ten minutes.
    assert_eq!(p.objectives.timeout, 60 * 60);
    assert_eq!(p.objectives.site_rto, None);
    assert_eq!(p.objectives.every, None);
}

#[test]
fn full_schema_parses() {
    let text = r#"
name = "weekly-ehr"
description = "EHR database, logical"
repository = "/srv/backup"
[snapshot]
source = "ehr"
pick = "random-within"
within = "30d"
seed = 42
[target]
kind = "postgres-scratch"
bin_dir = "/usr/lib/postgresql/15/bin"
[[check]]
kind = "sql"
name = "patients present"
query = "SELECT count(*) FROM patients"
min = 1000
[[check]]
kind = "sql"
query = "SELECT 1"
expect = 1
[[check]]
kind = "row-counts"
[[check]]
kind = "amcheck"
[[check]]
kind = "command"
run = "psql -c 'select 1'"
timeout = "2m"
[objectives]
rto = "1h30m"
rpo = "8d"
timeout = "3h"
site_rto = "24h"
every = "7d"
"#;
    let p = parse_str(Path::new("p.toml"), text).expect("valid");
    let r = &p.restores[0];
    assert_eq!(p.repository.as_deref(), Some("/srv/backup"));
    assert_eq!(r.snapshot.kind, "postgres-logical");
    assert_eq!(
        r.snapshot.pick,
        Pick::RandomWithin {
            within: 30 * 86_400,
            seed: Some(42)
        }
    );
    assert_eq!(r.checks.len(), 5);
    assert!(matches!(
        &r.checks[0],
        Check::Sql { name, expect: Expect::Between { min: Some(m), max: None }, .. }
            if name == "patients present" && *m == 1000.0
    ));
    assert!(matches!(&r.checks[1], Check::Sql { expect: Expect::Equals(v), .. } if v == "1"));
    assert!(matches!(
        &r.checks[4],
        Check::Command { run, timeout: Some(120), .. } if run[0] == "sh" && run[1] == "-c"
    ));
    assert_eq!(p.objectives.timeout, 3 * 3600);
    assert_eq!(p.objectives.site_rto, Some(24 * 3600));
    assert_eq!(p.objectives.every, Some(7 * 86_400));
}

#[test]
fn several_restores_and_pitr() {
    let text = r#"
name = "quarterly"
[[restore]]
name = "ehr"
[restore.snapshot]
source = "ehr-cluster"
point_in_time = "2026-11-30T14:00:00Z"
[restore.target]
kind = "postgres-scratch"
[[restore.check]]
kind = "pitr"
[[restore]]
name = "documents"
[restore.snapshot]
source = "docs"
pick = "latest-within"
within = "2d"
[restore.target]
kind = "directory"
parent = "/var/tmp"
[[restore.check]]
kind = "files"
sample = 500
seed = 3
[objectives]
rto = "4h"
rpo = "1h"
"#;
    let p = parse_str(Path::new("p.toml"), text).expect("valid");
    assert_eq!(p.restores.len(), 2);
    assert_eq!(p.restores[0].snapshot.kind, "postgres-physical");
    assert!(matches!(
        p.restores[0].snapshot.point_in_time,
        Some(PointInTime::At(_))
    ));
    assert_eq!(p.restores[1].snapshot.pick, Pick::LatestWithin(2 * 86_400));
    assert_eq!(
        p.restores[1].checks,
        vec![Check::Files {
            sample: Some(500),
            seed: Some(3)
        }]
    );
}

#[test]
fn syntax_error() {
    one_error(&edit("rto = \"15m\"", "rto = \"15m"), 10, 11, &["string"]);
}

#[test]
fn unknown_key() {
    one_error(
        &edit("pick = \"latest\"", "pik = \"latest\""),
        4,
        1,
        &["unknown field", "pik"],
    );
    one_error(&format!("{MINIMAL}colour = 1\n"), 12, 1, &["colour"]);
}

#[test]
fn wrong_type() {
    one_error(&edit("rto = \"15m\"", "rto = 15"), 10, 7, &["string"]);
    one_error(
        &edit("source = \"docs\"", "source = [\"docs\"]"),
        3,
        10,
        &["string"],
    );
}

#[test]
fn bad_duration() {
    one_error(
        &edit("rto = \"15m\"", "rto = \"15 minutes\""),
        10,
        7,
        &["rto", "bad duration", "unit"],
    );
    one_error(
        &edit("rpo = \"26h\"", "rpo = \"1mo\""),
        11,
        7,
        &["rpo", "unit"],
    );
    one_error(&edit("rpo = \"26h\"", "rpo = \"26\""), 11, 7, &["no unit"]);
}

#[test]
fn bad_pick() {
    one_error(
        &edit("\"latest\"", "\"newest\""),
        4,
        8,
        &["unknown pick", "latest-within"],
    );
    // A window is needed, and used only by windowed picks.
    one_error(&edit("\"latest\"", "\"random-within\""), 4, 8, &["within"]);
    one_error(
        &edit("pick = \"latest\"", "pick = \"latest\"\nwithin = \"2d\""),
        5,
        10,
        &["within is not used"],
    );
    one_error(
        &edit(
            "pick = \"latest\"",
            "pick = \"random-within\"\nwithin = \"2d\"\nseed = -1",
        ),
        6,
        8,
        &["seed"],
    );
}

#[test]
fn missing_section() {
    one_error(
        &edit("[objectives]\nrto = \"15m\"\nrpo = \"26h\"\n", ""),
        9,
        1,
        &["[objectives]"],
    );
    one_error(&edit("[snapshot]\nsource = \"docs\"\npick = \"latest\"                 # latest | latest-within | random-within\n", ""), 1, 1, &["[snapshot]"]);
    one_error(&edit("[target]\nkind = \"directory\"              # directory | postgres-scratch | postgres-server\n", ""), 1, 1, &["[target]"]);
    one_error(&edit("[[check]]\nkind = \"files\"                  # verify every restored file against the snapshot\n", ""), 1, 1, &["[[check]]"]);
    one_error(&edit("name = \"nightly-documents\"\n", ""), 1, 1, &["name"]);
}

#[test]
fn missing_required_key() {
    one_error(&edit("rpo = \"26h\"\n", ""), 9, 1, &["no rpo"]);
    one_error(&edit("source = \"docs\"\n", ""), 2, 1, &["no source"]);
    one_error(
        &edit("kind = \"directory\"", "path = \"/tmp/x\""),
        5,
        1,
        &["no kind"],
    );
}

#[test]
fn bad_check_kind() {
    one_error(
        &edit("kind = \"files\"", "kind = \"checksum\""),
        8,
        8,
        &["unknown check kind", "row-counts"],
    );
    one_error(
        &edit("kind = \"files\"", "name = \"x\""),
        7,
        1,
        &["no kind"],
    );
}

#[test]
fn check_that_does_not_fit_the_target() {
    one_error(
        &edit("kind = \"files\"", "kind = \"amcheck\""),
        8,
        8,
        &["postgres"],
    );
    one_error(
        &edit("kind = \"files\"", "kind = \"pitr\""),
        8,
        8,
        &["point_in_time"],
    );
}

#[test]
fn key_a_check_does_not_use() {
    one_error(
        &edit("kind = \"files\"", "kind = \"files\"\nquery = \"SELECT 1\""),
        9,
        9,
        &["query is not used", "files"],
    );
}

#[test]
fn bad_check_values() {
    one_error(
        &edit("kind = \"files\"", "kind = \"files\"\nsample = 0"),
        9,
        10,
        &["sample"],
    );
    one_error(
        &edit("kind = \"files\"", "kind = \"files\"\nseed = 4"),
        9,
        8,
        &["seed is used only with sample"],
    );
    let pg = edit("kind = \"directory\"", "kind = \"postgres-scratch\"");
    let sql = pg.replacen(
        "kind = \"files\"",
        "kind = \"sql\"\nquery = \"SELECT 1\"",
        1,
    );
    one_error(&sql, 7, 1, &["expect", "min"]);
    one_error(
        &sql.replacen("SELECT 1\"", "SELECT 1\"\nmin = 5\nmax = 2", 1),
        10,
        7,
        &["greater than max"],
    );
    one_error(
        &sql.replacen("SELECT 1\"", "SELECT 1\"\nexpect = 1\nmax = 2", 1),
        10,
        10,
        &["not both"],
    );
    let cmd = MINIMAL.replacen("kind = \"files\"", "kind = \"command\"\nrun = []", 1);
    one_error(&cmd, 9, 7, &["run is empty"]);
}

#[test]
fn bad_target() {
    one_error(
        &edit("\"directory\"", "\"tape\""),
        6,
        8,
        &["unknown target kind", "postgres-scratch"],
    );
    one_error(
        &edit(
            "kind = \"directory\"",
            "kind = \"directory\"\npath = \"scratch\"",
        ),
        7,
        8,
        &["relative"],
    );
    one_error(
        &edit("kind = \"directory\"", "kind = \"directory\"\ndsn = \"x\""),
        7,
        7,
        &["dsn is not used"],
    );
    let server = edit("\"directory\"", "\"postgres-server\"").replacen(
        "kind = \"files\"",
        "kind = \"amcheck\"",
        1,
    );
    one_error(&server, 5, 1, &["dsn"]);
}

#[test]
fn snapshot_kind_that_does_not_fit() {
    one_error(
        &edit(
            "source = \"docs\"",
            "source = \"docs\"\nkind = \"postgres-logical\"",
        ),
        4,
        8,
        &["cannot be restored into a directory"],
    );
    one_error(
        &edit("source = \"docs\"", "source = \"docs\"\nkind = \"tarball\""),
        4,
        8,
        &["unknown snapshot kind"],
    );
}

#[test]
fn bad_point_in_time() {
    let pg = edit("kind = \"directory\"", "kind = \"postgres-scratch\"").replacen(
        "kind = \"files\"",
        "kind = \"pitr\"",
        1,
    );
    let ok = pg.replacen(
        "pick = \"latest\"",
        "point_in_time = \"random\"\npoint_seed = 9",
        1,
    );
    parse_str(Path::new("p.toml"), &ok).expect("valid");
    one_error(
        &pg.replacen("pick = \"latest\"", "point_in_time = \"yesterday\"", 1),
        4,
        17,
        &["RFC 3339"],
    );
    // On a directory target it cannot apply.
    one_error(
        &edit("pick = \"latest\"", "point_in_time = \"latest\""),
        4,
        17,
        &["postgres-physical"],
    );
}

#[test]
fn timeout_shorter_than_rto() {
    one_error(
        &edit("rpo = \"26h\"", "rpo = \"26h\"\ntimeout = \"5m\""),
        12,
        11,
        &["shorter than rto"],
    );
}

#[test]
fn restores_and_top_level_sections_do_not_mix() {
    let text = format!("{MINIMAL}[[restore]]\nname = \"x\"\n");
    let e = errors(&text);
    assert!(
        e.iter().any(|e| e.message.contains("cannot be combined")),
        "{e:?}"
    );
}

#[test]
fn every_error_is_reported_not_only_the_first() {
    let text = edit("rto = \"15m\"", "rto = \"soon\"")
        .replacen("\"latest\"", "\"newest\"", 1)
        .replacen("\"files\"", "\"checksum\"", 1);
    let e = errors(&text);
    assert_eq!(e.len(), 3, "{e:?}");
    let lines: Vec<_> = e.iter().map(|e| e.line).collect();
    assert!(
        lines.contains(&4) && lines.contains(&8) && lines.contains(&10),
        "{lines:?}"
    );
}
