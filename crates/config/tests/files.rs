//! `holdfast.toml`: the minimal file of the issue and the shipped example
//! are valid and mean what they say; every class of mistake gives an error
//! naming file, line and column.

use std::path::{Path, PathBuf};

use holdfast_config::{
    parse_str, AlertFormat, ConfigError, JobKind, Missed, PgMode, Seconds, Secret, SourceKind,
    WebhookUrl,
};

fn errors(text: &str) -> Vec<ConfigError> {
    parse_str(Path::new("holdfast.toml"), text).expect_err("accepted")
}

/// The first error of `text`, checked for position and words.
fn error_at(text: &str, line: usize, column: usize, words: &[&str]) {
    let e = errors(text);
    let e = &e[0];
    assert_eq!((e.line, e.column), (line, column), "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("holdfast.toml:{line}:{column}: ")),
        "{e}"
    );
    for w in words {
        assert!(e.message.contains(w), "{w:?} missing from: {e}");
    }
}

const MINIMAL: &str = r#"[repository.main]
url = "/srv/backups/repo"            # or s3://bucket/prefix
password_file = "/etc/holdfast/pass"

[source.docs]
paths = ["/srv/documents"]
rpo = "26h"

[[job]]
name = "docs-backup"
kind = "backup"                       # backup | retention | drill | check
source = "docs"
repository = "main"
schedule = "0 30 1 * * *"             # cron with seconds
timezone = "Europe/Berlin"

[listen]
address = "127.0.0.1:9187"
"#;

#[test]
fn the_minimal_file_is_valid_and_means_what_it_says() {
    let c = parse_str(Path::new("h.toml"), MINIMAL).expect("valid");
    let r = &c.repositories["main"];
    assert_eq!(r.url, "/srv/backups/repo");
    assert!(!r.is_s3());
    assert_eq!(r.password, Some(Secret::File("/etc/holdfast/pass".into())));
    let s = &c.sources["docs"];
    assert_eq!(
        s.kind,
        SourceKind::Paths {
            paths: vec![PathBuf::from("/srv/documents")],
            exclude: vec![]
        }
    );
    assert_eq!(s.rpo, Some(Seconds(26 * 3600)));
    assert_eq!(c.jobs.len(), 1);
    let j = &c.jobs[0];
    assert_eq!(j.name, "docs-backup");
    assert_eq!(
        j.kind,
        JobKind::Backup {
            source: "docs".into()
        }
    );
    assert_eq!(j.repository, "main");
    assert_eq!(j.schedule.timezone(), chrono_tz::Europe::Berlin);
    assert_eq!(j.line, 9);
    // 01:30:00 Berlin time (CEST in June: 23:30 UTC the day before).
    let t = chrono::DateTime::parse_from_rfc3339("2026-06-01T12:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    assert_eq!(
        j.schedule.next_after(t).unwrap().to_rfc3339(),
        "2026-06-01T23:30:00+00:00"
    );
    assert_eq!((j.retries, j.missed, j.timeout), (0, Missed::Skip, None));
    assert_eq!(c.listen.unwrap().address.to_string(), "127.0.0.1:9187");
}

#[test]
fn the_shipped_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/holdfast.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let c = parse_str(&path, &text).unwrap_or_else(|e| {
        panic!(
            "{}",
            e.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    let kinds: Vec<&str> = c.jobs.iter().map(|j| j.kind.name()).collect();
    assert_eq!(
        kinds,
        [
            "backup",
            "backup",
            "backup",
            "retention",
            "drill",
            "check",
            "staging-refresh"
        ]
    );
    assert!(matches!(
        c.sources["ehr-logical"].kind,
        SourceKind::Postgres {
            mode: PgMode::Logical,
            ..
        }
    ));
    assert_eq!(
        c.daemon.state_dir.as_deref(),
        Some(Path::new("/var/lib/holdfast"))
    );
    assert_eq!(c.daemon.grace.0, 300);
    assert_eq!(
        c.log_file.as_deref(),
        Some(Path::new("/var/log/holdfast/daemon.log"))
    );
    assert!(matches!(
        c.sources["ehr-physical"].kind,
        SourceKind::Postgres {
            mode: PgMode::Physical,
            wal_archive: true,
            ..
        }
    ));
    assert!(c.repositories["main"].is_s3());
    assert_eq!(
        c.jobs[5].kind,
        JobKind::Check {
            read_data_percent: 5
        }
    );
    assert_eq!(c.alerts["oncall"].format, AlertFormat::Slack);
    assert_eq!(
        c.alerts["oncall"].url,
        WebhookUrl::Secret(Secret::File("/etc/holdfast/slack-webhook".into()))
    );
}

#[test]
fn toml_syntax_and_unknown_keys() {
    error_at("[repository.main\nurl = \"/r\"\n", 1, 17, &[]);
    error_at(
        &MINIMAL.replace("rpo = \"26h\"", "rpoo = \"26h\""),
        7,
        1,
        &["rpoo"],
    );
    error_at(&format!("{MINIMAL}\n[extra]\nx = 1\n"), 20, 2, &["extra"]);
}

#[test]
fn literal_secrets_are_refused_wherever_they_are() {
    error_at(
        &MINIMAL.replace(
            "password_file = \"/etc/holdfast/pass\"",
            "password = \"hunter2\"",
        ),
        3,
        12,
        &["password_file", "password_env", "never"],
    );
    let s3 = MINIMAL.replace(
        "password_file = \"/etc/holdfast/pass\"",
        "password_file = \"/p\"\ns3_secret_access_key = \"abc\"",
    );
    error_at(&s3, 4, 24, &["s3_secret_access_key_file"]);
    for dsn in [
        "postgresql://u:secret@db/ehr",
        "postgres://u:secret@db:5432/ehr?sslmode=require",
        "postgresql://u@db/ehr?password=secret",
        "host=db dbname=ehr password=secret",
    ] {
        let pg = MINIMAL.replace(
            "paths = [\"/srv/documents\"]",
            &format!("postgres = \"{dsn}\"\nmode = \"logical\""),
        );
        error_at(&pg, 6, 12, &["password", "password_file"]);
    }
    let pg = MINIMAL.replace(
        "paths = [\"/srv/documents\"]",
        "postgres = \"host=db dbname=ehr\"\nmode = \"logical\"\npassword = \"x\"",
    );
    error_at(&pg, 8, 12, &["never"]);
    // An environment variable's value where its name belongs.
    error_at(
        &MINIMAL.replace(
            "password_file = \"/etc/holdfast/pass\"",
            "password_env = \"s3cr3t!\"",
        ),
        3,
        16,
        &["name of an environment variable"],
    );
}

#[test]
fn a_repository_without_a_way_to_open_it() {
    error_at(
        &MINIMAL.replace("password_file = \"/etc/holdfast/pass\"\n", ""),
        1,
        1,
        &["cannot prompt"],
    );
    error_at(
        &MINIMAL.replace("/srv/backups/repo", "backups/repo"),
        2,
        7,
        &["relative"],
    );
    error_at(
        &MINIMAL.replace("/srv/backups/repo", "ftp://host/x"),
        2,
        7,
        &["s3://"],
    );
    let e = errors("[listen]\naddress = \"127.0.0.1:1\"\n");
    assert!(e[0].message.contains("no [repository.NAME]"), "{}", e[0]);
}

#[test]
fn sources_that_are_not_one_thing() {
    error_at(
        &MINIMAL.replace("/srv/documents", "srv/documents"),
        6,
        9,
        &["relative"],
    );
    error_at(
        &MINIMAL.replace("paths = [\"/srv/documents\"]\n", ""),
        5,
        1,
        &["neither paths"],
    );
    let both = MINIMAL.replace(
        "paths = [\"/srv/documents\"]",
        "paths = [\"/a\"]\npostgres = \"host=db\"",
    );
    error_at(&both, 6, 9, &["not both"]);
    let mode = MINIMAL.replace(
        "paths = [\"/srv/documents\"]",
        "postgres = \"host=db\"\nmode = \"dump\"",
    );
    error_at(&mode, 7, 8, &["logical", "physical"]);
    let wal = MINIMAL.replace(
        "paths = [\"/srv/documents\"]",
        "postgres = \"host=db\"\nmode = \"logical\"\nwal_archive = true",
    );
    error_at(&wal, 8, 15, &["physical"]);
}

#[test]
fn bad_durations_counts_and_names() {
    error_at(
        &MINIMAL.replace("\"26h\"", "\"26\""),
        7,
        7,
        &["rpo", "unit"],
    );
    error_at(
        &MINIMAL.replace("\"26h\"", "\"1d2x\""),
        7,
        7,
        &["unknown unit"],
    );
    let job = |extra: &str| {
        MINIMAL.replace(
            "timezone = \"Europe/Berlin\"",
            &format!("timezone = \"Europe/Berlin\"\n{extra}"),
        )
    };
    error_at(&job("timeout = \"0s\""), 16, 11, &["zero"]);
    error_at(&job("retries = -1"), 16, 11, &["count"]);
    error_at(&job("jitter = \"soon\""), 16, 10, &["jitter"]);
    error_at(&job("missed = \"always\""), 16, 10, &["skip", "run-once"]);
    error_at(
        &MINIMAL.replace("[source.docs]", "[source.\"my docs\"]"),
        5,
        1,
        &["source name"],
    );
}

#[test]
fn schedules_and_time_zones() {
    error_at(
        &MINIMAL.replace("0 30 1 * * *", "30 1 * * *"),
        14,
        12,
        &["six", "seconds first"],
    );
    error_at(
        &MINIMAL.replace("0 30 1 * * *", "0 61 1 * * *"),
        14,
        12,
        &["cron"],
    );
    error_at(
        &MINIMAL.replace("0 30 1 * * *", "0 0 0 31 2 *"),
        14,
        12,
        &["never fires"],
    );
    error_at(
        &MINIMAL.replace("Europe/Berlin", "Europe/Berln"),
        15,
        12,
        &["time zone", "IANA"],
    );
}

#[test]
fn jobs_that_point_nowhere_or_mix_kinds() {
    error_at(
        &MINIMAL.replace("repository = \"main\"", "repository = \"mian\""),
        13,
        14,
        &["no repository", "\"main\""],
    );
    error_at(
        &MINIMAL.replace("source = \"docs\"", "source = \"doc\""),
        12,
        10,
        &["no source", "\"docs\""],
    );
    error_at(
        &MINIMAL.replace("kind = \"backup\"", "kind = \"copy\""),
        11,
        8,
        &["backup", "retention", "drill", "check"],
    );
    error_at(
        &MINIMAL.replace("source = \"docs\"\n", ""),
        9,
        1,
        &["no source"],
    );
    error_at(
        &MINIMAL.replace("kind = \"backup\"", "kind = \"check\""),
        12,
        10,
        &["for kind = \"backup\""],
    );
    let retention = MINIMAL
        .replace("kind = \"backup\"", "kind = \"retention\"")
        .replace("source = \"docs\"\n", "");
    error_at(&retention, 9, 1, &["policies"]);
    let check = MINIMAL
        .replace(
            "kind = \"backup\"",
            "kind = \"check\"\nread_data = \"150%\"",
        )
        .replace("source = \"docs\"\n", "");
    error_at(&check, 12, 13, &["percentage"]);
    let dup = format!(
        "{}{}",
        MINIMAL.replace("[listen]\naddress = \"127.0.0.1:9187\"\n", ""),
        &MINIMAL[MINIMAL.find("[[job]]").unwrap()..MINIMAL.find("[listen]").unwrap()]
    );
    let e = errors(&dup);
    assert!(
        e.iter()
            .any(|e| e.message.contains("used twice") && e.line == 18),
        "{e:?}"
    );
    let alert = MINIMAL.replace(
        "timezone = \"Europe/Berlin\"",
        "timezone = \"Europe/Berlin\"\nalert = [\"pager\"]",
    );
    error_at(&alert, 16, 10, &["no alert"]);
}

#[test]
fn alerts_and_the_listener() {
    let a = |body: &str| format!("{MINIMAL}\n[alert.a]\n{body}\n");
    error_at(&a("format = \"json\""), 20, 1, &["no url"]);
    error_at(&a("url = \"ftp://x\""), 21, 7, &["http://"]);
    error_at(
        &a("url = \"http://x\"\nformat = \"xml\""),
        22,
        10,
        &["json", "slack"],
    );
    error_at(
        &a("url = \"http://x\"\nurl_env = \"HOOK\""),
        21,
        7,
        &["not several"],
    );
    error_at(
        &MINIMAL.replace("127.0.0.1:9187", "0.0.0.0:9187"),
        18,
        11,
        &["allow_remote"],
    );
    error_at(
        &MINIMAL.replace("127.0.0.1:9187", "localhost"),
        18,
        11,
        &["IP:PORT"],
    );
    let remote = MINIMAL.replace("127.0.0.1:9187\"", "0.0.0.0:9187\"\nallow_remote = true");
    assert!(parse_str(Path::new("h"), &remote).is_ok());
    let off = MINIMAL.replace("address = \"127.0.0.1:9187\"", "enabled = false");
    assert!(parse_str(Path::new("h"), &off).unwrap().listen.is_none());
    let default = MINIMAL.replace("[listen]\naddress = \"127.0.0.1:9187\"\n", "");
    let c = parse_str(Path::new("h"), &default).unwrap();
    assert!(c.listen.unwrap().address.ip().is_loopback());
}

#[test]
fn every_error_is_reported_not_only_the_first() {
    let text = MINIMAL
        .replace("\"26h\"", "\"26\"")
        .replace("Europe/Berlin", "Mars/Olympus")
        .replace("password_file = \"/etc/holdfast/pass\"", "password = \"x\"");
    let e = errors(&text);
    let lines: Vec<usize> = e.iter().map(|e| e.line).collect();
    assert!(
        lines.contains(&3) && lines.contains(&7) && lines.contains(&15),
        "{e:?}"
    );
}

#[test]
fn anomaly_keys() {
    // Default: on for paths sources, off for PostgreSQL; no hold.
    let c = parse_str(Path::new("h.toml"), MINIMAL).expect("valid");
    assert!(c.sources["docs"].anomaly);
    assert!(!c.sources["docs"].anomaly_hold);
    let pg = MINIMAL.replace(
        "paths = [\"/srv/documents\"]",
        "postgres = \"host=db\"\nmode = \"logical\"",
    );
    let c = parse_str(Path::new("h.toml"), &pg).expect("valid");
    assert!(!c.sources["docs"].anomaly);
    let on = MINIMAL.replace("rpo = \"26h\"", "rpo = \"26h\"\nanomaly_hold = true");
    let c = parse_str(Path::new("h.toml"), &on).expect("valid");
    assert!(c.sources["docs"].anomaly && c.sources["docs"].anomaly_hold);
    let off = MINIMAL.replace(
        "rpo = \"26h\"",
        "rpo = \"26h\"\nanomaly = false\nanomaly_hold = true",
    );
    error_at(&off, 9, 16, &["anomaly_hold", "anomaly = true"]);
    let bad = MINIMAL.replace("rpo = \"26h\"", "rpo = \"26h\"\nanomaly = \"yes\"");
    error_at(&bad, 8, 11, &["bool"]);
}

const STAGING: &str = r#"[repository.main]
url = "/srv/backups/repo"
password_file = "/etc/holdfast/pass"

[source.ehr]
postgres = "host=db1 user=backup dbname=ehr"
mode = "logical"

[source.staging]
postgres = "host=staging user=postgres dbname=postgres"
mode = "logical"
password_file = "/etc/holdfast/staging.pw"

[[job]]
name = "ehr-staging"
kind = "staging-refresh"
source = "ehr"
target = "staging"
database = "ehr_staging"
mask = "/etc/holdfast/masking/ehr.toml"
repository = "main"
schedule = "0 0 5 * * *"
"#;

#[test]
fn staging_refresh_jobs_name_a_logical_source_a_target_server_and_a_masking_file() {
    let c = parse_str(Path::new("h.toml"), STAGING).expect("valid");
    assert_eq!(
        c.jobs[0].kind,
        JobKind::StagingRefresh {
            source: "ehr".into(),
            target: "staging".into(),
            database: "ehr_staging".into(),
            mask: PathBuf::from("/etc/holdfast/masking/ehr.toml"),
        }
    );
    assert_eq!(c.jobs[0].kind.name(), "staging-refresh");
    // A staging copy is always masked.
    let e = errors(&STAGING.replace("mask = \"/etc/holdfast/masking/ehr.toml\"\n", ""));
    assert!(e[0].message.contains("has no mask"), "{}", e[0]);
    error_at(
        &STAGING.replace("target = \"staging\"", "target = \"stagin\""),
        18,
        10,
        &["no source \"stagin\""],
    );
    // Restoring needs logical snapshots.
    error_at(
        &STAGING.replace(
            "dbname=ehr\"\nmode = \"logical\"",
            "dbname=ehr\"\nmode = \"physical\"",
        ),
        17,
        10,
        &["mode logical"],
    );
    // The keys are the staging job's own.
    error_at(
        &MINIMAL.replace("source = \"docs\"", "source = \"docs\"\nmask = \"m.toml\""),
        13,
        8,
        &["mask is for kind = \"staging-refresh\""],
    );
}
