//! Policy files: the minimal file of the issue means what it says, and
//! every class of mistake gives an error naming file, line and column.

use std::path::Path;

use holdfast_policy::{parse_str, PolicyError, Span};

fn errors(text: &str) -> Vec<PolicyError> {
    parse_str(Path::new("policies/test.toml"), text).expect_err("accepted")
}

/// The one error of `text`, checked for position and words.
fn one_error(text: &str, line: usize, column: usize, words: &[&str]) {
    let e = errors(text);
    assert!(!e.is_empty());
    let e = &e[0];
    assert_eq!((e.line, e.column), (line, column), "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("policies/test.toml:{line}:{column}: ")),
        "{e}"
    );
    for w in words {
        assert!(e.message.contains(w), "{w:?} missing from: {e}");
    }
}

const MINIMAL: &str = r#"[[policy]]
name = "documents"
source = "docs"                 # a source name or glob
timezone = "UTC"
keep = { last = 2, daily = 7, weekly = 4, monthly = 12 }
floor = "3d"                    # nothing younger is purged
max_age = "6y"
"#;

#[test]
fn the_minimal_file_is_valid_and_means_what_it_says() {
    let p = parse_str(Path::new("p.toml"), MINIMAL).expect("valid");
    assert_eq!(p.len(), 1);
    let p = &p[0];
    assert_eq!(p.name, "documents");
    assert_eq!(p.selector.source, "docs");
    assert!(p.selector.kinds.is_empty());
    assert_eq!(p.timezone, chrono_tz::UTC);
    assert_eq!(p.keep.last, Some(2));
    assert_eq!(p.keep.daily, Some(7));
    assert_eq!(p.keep.weekly, Some(4));
    assert_eq!(p.keep.monthly, Some(12));
    assert_eq!(p.keep.yearly, None);
    assert_eq!(p.floor, Some(Span::parse("3d").unwrap()));
    assert_eq!(p.max_age, Some(Span::parse("6y").unwrap()));
    assert_eq!(p.line, 1);
}

#[test]
fn unknown_key() {
    one_error(
        "[[policy]]\nname = \"a\"\nsource = \"*\"\ntimezone = \"UTC\"\nkeep = { daily = 7 }\nfloorr = \"3d\"\n",
        6,
        1,
        &["unknown field `floorr`", "floor"],
    );
}

#[test]
fn unknown_keep_rule() {
    let e = errors(
        "[[policy]]\nname = \"a\"\nsource = \"*\"\ntimezone = \"UTC\"\nkeep = { dayly = 7 }\n",
    );
    assert_eq!(e[0].line, 5, "{}", e[0]);
    assert!(
        e[0].message.contains("dayly") && e[0].message.contains("daily"),
        "{}",
        e[0]
    );
}

#[test]
fn bad_duration() {
    one_error(
        "[[policy]]\nname = \"a\"\nsource = \"*\"\ntimezone = \"UTC\"\nkeep = { daily = 7 }\nfloor = \"3 days\"\n",
        6,
        9,
        &["floor", "bad duration", "3 days"],
    );
    one_error(
        "[[policy]]\nname = \"a\"\nsource = \"*\"\ntimezone = \"UTC\"\nkeep = { within = \"6m\" }\n",
        5,
        19,
        &["keep.within", "ambiguous", "mo"],
    );
}

#[test]
fn floor_longer_than_max_age() {
    one_error(
        "[[policy]]\nname = \"a\"\nsource = \"*\"\ntimezone = \"UTC\"\nkeep = { daily = 7 }\nfloor = \"7y\"\nmax_age = \"6y\"\n",
        6,
        9,
        &["floor (7y) is longer than max_age (6y)"],
    );
}

#[test]
fn unknown_time_zone_and_missing_time_zone() {
    one_error(
        "[[policy]]\nname = \"a\"\nsource = \"*\"\ntimezone = \"Mars/Olympus\"\nkeep = { daily = 7 }\n",
        4,
        12,
        &["unknown time zone", "Mars/Olympus", "Europe/Berlin"],
    );
    let e = errors("[[policy]]\nname = \"a\"\nsource = \"*\"\nkeep = { daily = 7 }\n");
    assert!(
        e[0].message.contains("missing field `timezone`"),
        "{}",
        e[0]
    );
    assert_eq!(e[0].line, 1);
}

#[test]
fn bad_counts_kinds_and_classes() {
    one_error(
        "[[policy]]\nname = \"a\"\nsource = \"*\"\ntimezone = \"UTC\"\nkeep = { daily = -5 }\n",
        5,
        18,
        &["keep.daily = -5", "-1 for unlimited"],
    );
    one_error(
        "[[policy]]\nname = \"a\"\nsource = \"*\"\nkind = \"tarball\"\ntimezone = \"UTC\"\nkeep = { daily = 7 }\n",
        4,
        8,
        &["unknown kind \"tarball\"", "postgres-physical"],
    );
    one_error(
        "[[policy]]\nname = \"a\"\nsource = \"*\"\ntimezone = \"UTC\"\nkeep = { daily = 7 }\narchive_after = \"90d\"\narchive_class = \"COLD\"\n",
        7,
        17,
        &["archive_class", "DEEP_ARCHIVE"],
    );
}

#[test]
fn no_keep_rule_is_refused() {
    let e =
        errors("[[policy]]\nname = \"a\"\nsource = \"*\"\ntimezone = \"UTC\"\nmax_age = \"6y\"\n");
    assert!(e[0].message.contains("no keep rule"), "{}", e[0]);
}

#[test]
fn syntax_errors_have_positions() {
    one_error(
        "[[policy]]\nname = \"a\nsource = \"*\"\n",
        2,
        10,
        &["string"],
    );
}

#[test]
fn archive_after_must_come_before_max_age() {
    one_error(
        "[[policy]]\nname = \"a\"\nsource = \"*\"\ntimezone = \"UTC\"\nkeep = { daily = 7 }\nmax_age = \"1y\"\narchive_after = \"2y\"\n",
        7,
        17,
        &["archive_after (2y) is not shorter than max_age (1y)"],
    );
}

#[test]
fn conflicting_and_duplicate_policies_across_files() {
    let dir = tempdir();
    let a = dir.join("a.toml");
    let b = dir.join("b.toml");
    std::fs::write(&a, MINIMAL).unwrap();
    std::fs::write(
        &b,
        "# documents again, differently\n[[policy]]\nname = \"docs-short\"\nsource = \"d*\"\ntimezone = \"UTC\"\nkeep = { last = 1 }\n\n[[policy]]\nname = \"documents\"\nsource = \"other\"\ntimezone = \"UTC\"\nkeep = { last = 2, daily = 7, weekly = 4, monthly = 12 }\nfloor = \"3d\"\nmax_age = \"6y\"\n",
    )
    .unwrap();
    let e = holdfast_policy::load_files(&[a.clone(), b.clone()]).expect_err("accepted");
    let text: Vec<String> = e.iter().map(|e| e.to_string()).collect();
    assert!(
        text.iter()
            .any(|t| t.starts_with(&format!("{}:8:1:", b.display()))
                && t.contains("second policy named \"documents\"")),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|t| t.starts_with(&format!("{}:2:1:", b.display()))
                && t.contains("docs-short")
                && t.contains("decide them differently")),
        "{text:#?}"
    );
    // The same rules for overlapping selections are fine.
    std::fs::write(
        &b,
        MINIMAL
            .replace("documents", "documents-too")
            .replace("\"docs\"", "\"d*\""),
    )
    .unwrap();
    holdfast_policy::load_files(&[a, b]).expect("same rules may overlap");
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "holdfast-policy-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn holds_settings_parse_alone_or_beside_policies() {
    use holdfast_policy::{parse_settings, Settings};
    let f = std::path::Path::new("holds.toml");
    let on = parse_settings(f, "[holds]\nrequire_signed_release = true\n").unwrap();
    assert_eq!(
        on,
        Settings {
            require_signed_release: true
        }
    );
    let beside = parse_settings(
        f,
        "[holds]\nrequire_signed_release = false\n\n[[policy]]\nname = \"d\"\nsource = \"docs\"\ntimezone = \"UTC\"\nkeep = { last = 1 }\n",
    )
    .unwrap();
    assert!(!beside.require_signed_release);
    // Unknown keys and wrong types are errors naming the line.
    let e = parse_settings(f, "[holds]\nrequire_signed = true\n").unwrap_err();
    assert_eq!(e[0].line, 2, "{e:?}");
    assert!(e[0].message.contains("require_signed"), "{e:?}");
    let e = parse_settings(f, "[holds]\nrequire_signed_release = \"yes\"\n").unwrap_err();
    assert_eq!(e[0].line, 2, "{e:?}");
    // An empty file is still refused.
    assert!(parse_settings(f, "").is_err());
}
