//! Masked restores for staging through the `holdfast` binary, with a real
//! repository and a real PostgreSQL 15 cluster: no source value survives
//! in a masked column, joins on hashed keys still match, a subject's date
//! intervals are kept, an unmentioned column is refused (and no database
//! is left behind), a malformed masking file is refused naming its line,
//! and directory restores drop or replace files by pattern.

#[path = "../../postgres/tests/common/mod.rs"]
mod common;
mod pgcli;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::{Cluster, PASSWORD};
use pgcli::*;

/// Every value of `col` in `table` (one per line; NULLs left out).
fn values(pg: &Cluster, db: &str, table: &str, col: &str) -> BTreeSet<String> {
    pg.psql(
        db,
        &format!("SELECT {col}::text FROM {table} WHERE {col} IS NOT NULL"),
    )
    .lines()
    .map(str::to_string)
    .collect()
}

const SCHEMA: &str = "
CREATE TABLE patient (
  id bigint PRIMARY KEY, mrn text UNIQUE NOT NULL, name text, email text, phone text,
  birth_date date, note text);
CREATE TABLE visit (
  id bigint PRIMARY KEY, patient_id bigint NOT NULL REFERENCES patient (id),
  at timestamptz NOT NULL, seen_on date, reason text);
INSERT INTO patient
SELECT g, 'MRN' || lpad(g::text, 9, '0'), 'Given' || g || ' Family' || g,
       'person' || g || '@mail.example', '(617) 555-' || lpad(g::text, 4, '0'),
       date '1950-01-01' + g * 1000, 'private note ' || g
FROM generate_series(1, 200) g;
INSERT INTO visit
SELECT g, 1 + (g % 200), timestamptz '2024-01-01 08:00+00' + g * interval '7 hours 13 minutes',
       date '2024-01-01' + (g % 300), 'reason ' || g
FROM generate_series(1, 1000) g;
CREATE MATERIALIZED VIEW contact AS SELECT name, email FROM patient;
";

const MASK: &str = r#"key_file = "mask.key"

[tables.patient.columns]
id = "hash"
mrn = { rule = "fake", kind = "mrn" }
name = { rule = "fake", kind = "name" }
email = { rule = "fake", kind = "email" }
phone = { rule = "fake", kind = "phone" }
birth_date = { rule = "date_shift", by = "id", max_days = 365 }
note = "null"

[tables.visit.columns]
id = "keep"
patient_id = "hash"
at = { rule = "date_shift", by = "patient_id", max_days = 90 }
seen_on = { rule = "date_shift", by = "patient_id", max_days = 90 }
reason = { rule = "fixed", value = "[redacted]" }
"#;

/// Per visit (by its kept id): the time since the patient's first visit.
const INTERVALS: &str = "SELECT string_agg(id || ':' || extract(epoch FROM at - first) || ':' || (seen_on - first_seen), ',' ORDER BY id) \
     FROM (SELECT id, at, seen_on, min(at) OVER w AS first, min(seen_on) OVER w AS first_seen \
           FROM visit WINDOW w AS (PARTITION BY patient_id)) s";

#[test]
fn masked_restores_leave_no_source_value_keep_joins_and_refuse_what_is_not_covered() {
    let pg = Cluster::new("");
    pg.psql("postgres", "CREATE DATABASE clinic");
    pg.psql("clinic", SCHEMA);
    let cli = Cli::acting_as(Some("staging@clinic.example"));
    let work = common::shared_tempdir();
    let key: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37) ^ 0xa5).collect();
    std::fs::write(work.path().join("mask.key"), &key).unwrap();
    let mask = work.path().join("clinic.toml");
    std::fs::write(&mask, MASK).unwrap();
    let mask_arg = mask.to_str().unwrap();
    let server = dsn(&pg, "postgres");
    let first = cli.json(
        &["backup", "--postgres", &server, "--database", "clinic"],
        "backup",
    )["snapshot"]
        .as_str()
        .expect("snapshot id")
        .to_string();

    let r = cli.json(
        &[
            "restore",
            "latest",
            "--to-postgres",
            &server,
            "--database",
            "staging",
            "--mask",
            mask_arg,
        ],
        "masked restore",
    );
    let m = &r["masking"];
    assert_eq!(m["verified"], true, "{r}");
    // No erasure due: the rows were masked as they were restored.
    assert_eq!(m["staged"], true, "{r}");
    assert_eq!(m["vacuumed"], false, "{r}");
    let cols = m["columns"].as_array().expect("columns");
    // Every masked column is reported, none of its samples survived.
    assert_eq!(cols.len(), 11, "{m}");
    for c in cols {
        assert_eq!(c["survivors"], 0, "{c}");
        // null and fixed are checked value by value, not by a sample.
        if c["rule"] != "null" && c["rule"] != "fixed" {
            assert!(c["sampled"].as_u64().unwrap() > 0, "{c}");
        }
        assert!(c["values"].as_u64().unwrap() > 0, "{c}");
    }
    assert_eq!(m["tables"]["public.visit"], 1000);
    assert_eq!(m["tables"]["public.patient"], 200);
    assert_eq!(
        m["foreign_keys_checked"],
        serde_json::json!(["public.visit.visit_patient_id_fkey"])
    );

    // No source value survives in any masked column (all of them, not a
    // sample). Birth dates are 1000 days apart, more than two shifts of
    // at most 365 days: a shifted date can only equal its own original.
    for (table, col) in [
        ("patient", "id"),
        ("patient", "mrn"),
        ("patient", "name"),
        ("patient", "email"),
        ("patient", "phone"),
        ("patient", "birth_date"),
        ("patient", "note"),
        ("visit", "patient_id"),
        ("visit", "reason"),
    ] {
        let before = values(&pg, "clinic", table, col);
        let after = values(&pg, "staging", table, col);
        assert!(!before.is_empty());
        let kept: Vec<_> = before.intersection(&after).collect();
        assert!(kept.is_empty(), "{table}.{col} kept {kept:?}");
    }
    assert!(values(&pg, "staging", "patient", "note").is_empty());
    // A materialized view holds what the masked tables hold.
    let before = values(&pg, "clinic", "contact", "email");
    let after = values(&pg, "staging", "contact", "email");
    assert_eq!(after.len(), 200);
    assert!(before.is_disjoint(&after));
    assert_eq!(after, values(&pg, "staging", "patient", "email"));
    assert_eq!(
        values(&pg, "staging", "visit", "reason"),
        BTreeSet::from(["[redacted]".to_string()])
    );
    // Every visit's time moved (row by row: visit ids are kept).
    let times = |db: &str| -> Vec<String> {
        pg.psql(db, "SELECT at || '|' || seen_on FROM visit ORDER BY id")
            .lines()
            .map(str::to_string)
            .collect()
    };
    let (t0, t1) = (times("clinic"), times("staging"));
    assert_eq!(t0.len(), 1000);
    assert!(t0.iter().zip(&t1).all(|(a, b)| a != b));
    // Shapes: fakes look like what they replace; MRNs stay unique.
    for e in values(&pg, "staging", "patient", "email") {
        assert!(
            e.ends_with("@example.org") && e.matches('@').count() == 1,
            "{e}"
        );
    }
    for p in values(&pg, "staging", "patient", "phone") {
        assert!(
            p.starts_with('(') && p.len() == "(617) 555-0001".len(),
            "{p}"
        );
    }
    assert_eq!(values(&pg, "staging", "patient", "mrn").len(), 200);

    // Joins still match: every visit finds its patient, as many per patient.
    let join = "SELECT count(*) FROM visit v JOIN patient p ON p.id = v.patient_id";
    assert_eq!(pg.psql("staging", join), "1000");
    let per_patient = "SELECT string_agg(n::text, ',' ORDER BY n) FROM (SELECT count(*) n FROM visit GROUP BY patient_id) s";
    assert_eq!(
        pg.psql("staging", per_patient),
        pg.psql("clinic", per_patient)
    );
    // Intervals between one patient's dates are preserved.
    assert_eq!(pg.psql("staging", INTERVALS), pg.psql("clinic", INTERVALS));
    // Deterministic: the same key gives the same masked database.
    let again = cli.json(
        &[
            "restore",
            "latest",
            "--to-postgres",
            &server,
            "--database",
            "staging_again",
            "--mask",
            mask_arg,
        ],
        "second masked restore",
    );
    assert_eq!(again["masking"]["verified"], true);
    let all = "SELECT string_agg(id || mrn || name || email || phone || birth_date, ',' ORDER BY id) FROM patient";
    assert_eq!(pg.psql("staging", all), pg.psql("staging_again", all));

    // The audit entry names the file and the verification.
    let audit = cli.json(&["audit", "log"], "audit log");
    let entry = audit
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|e| e["operation"] == "restore" && e["outcome"] == "success")
        .expect("restore entry")
        .clone();
    assert_eq!(entry["args"]["masking_verified"], true, "{entry}");
    assert_eq!(entry["args"]["masking_file"], mask_arg);
    assert_eq!(
        entry["args"]["masked_columns"].as_array().unwrap().len(),
        11
    );
    // The key never appears in what holdfast prints or records.
    let key_hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    assert!(!entry.to_string().contains(&key_hex));

    // A new PHI column the file does not mention: refused, naming it, and
    // no database is left (neither the target nor the temporary one).
    pg.psql(
        "clinic",
        "ALTER TABLE patient ADD COLUMN ssn text; UPDATE patient SET ssn = 'ssn-' || id",
    );
    cli.json(
        &["backup", "--postgres", &server, "--database", "clinic"],
        "backup with ssn",
    );
    let out = cli.run(&[
        "restore",
        "latest",
        "--to-postgres",
        &server,
        "--database",
        "staging2",
        "--mask",
        mask_arg,
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let e = err(&out);
    assert!(
        e.contains("public.patient.ssn") && e.contains("not covered"),
        "{e}"
    );
    assert!(e.contains("was dropped, nothing was left behind"), "{e}");
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'staging2%'"
        ),
        "0"
    );
    let audit = cli.json(&["audit", "log"], "audit log");
    let last = audit.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["operation"], "restore");
    assert_eq!(last["outcome"], "failure");

    // A table the file does not name is refused as well.
    pg.psql(
        "clinic",
        "ALTER TABLE patient DROP COLUMN ssn; CREATE TABLE audit_log (who text)",
    );
    cli.json(
        &["backup", "--postgres", &server, "--database", "clinic"],
        "backup with audit_log",
    );
    let out = cli.run(&[
        "restore",
        "latest",
        "--to-postgres",
        &server,
        "--database",
        "staging3",
        "--mask",
        mask_arg,
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        err(&out).contains("table public.audit_log is not in the masking file"),
        "{}",
        err(&out)
    );

    // An existing target is only replaced with --clean, after verification.
    let out = cli.run(&[
        "restore",
        "latest",
        "--to-postgres",
        &server,
        "--database",
        "staging",
        "--mask",
        mask_arg,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err(&out).contains("database staging exists"),
        "{}",
        err(&out)
    );

    // --clean replaces it, only after the masked copy is verified; the
    // erasure register runs before the masking (here: on the first
    // snapshot, with an erasure recorded after it).
    std::thread::sleep(std::time::Duration::from_millis(30));
    // What a killed masked restore would leave: dropped by the next one.
    pg.psql("postgres", "CREATE DATABASE staging_hfmask_0badc0de");
    let erased = cli.json(
        &[
            "erasure",
            "add",
            "--ref",
            "DSAR-9",
            "--sql",
            "DELETE FROM visit WHERE id = 5",
            "--database",
            "clinic",
            "--postgres",
            &server,
            "--reason",
            "Art. 17",
        ],
        "erasure add",
    )["id"]
        .as_str()
        .expect("erasure id")
        .to_string();
    let r = cli.json(
        &[
            "restore",
            &first,
            "--to-postgres",
            &server,
            "--database",
            "staging",
            "--clean",
            "--mask",
            mask_arg,
        ],
        "masked restore with --clean",
    );
    assert_eq!(r["masking"]["verified"], true);
    // An erasure was due: the full restore, the erasure, then the masking
    // rewrote the tables.
    assert_eq!(r["masking"]["staged"], false, "{r}");
    assert_eq!(r["masking"]["vacuumed"], true, "{r}");
    assert_eq!(
        r["masking"]["foreign_keys_checked"],
        serde_json::json!(["public.visit.visit_patient_id_fkey"])
    );
    assert_eq!(r["erasures"]["applied"][0]["id"], erased.as_str());
    assert_eq!(r["masking"]["tables"]["public.visit"], 999);
    assert_eq!(
        pg.psql("staging", "SELECT count(*) FROM visit WHERE id = 5"),
        "0"
    );
    assert_eq!(pg.psql("staging", join), "999");
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE '%hfmask%'"
        ),
        "0"
    );

    // A masking that breaks a join (the referencing side hashed, the
    // referenced kept) fails when the foreign key is validated again; the
    // restored database is dropped.
    let half = work.path().join("half.toml");
    std::fs::write(&half, MASK.replacen("id = \"hash\"", "id = \"keep\"", 1)).unwrap();
    let out = cli.run(&[
        "restore",
        &first,
        "--to-postgres",
        &server,
        "--database",
        "staging5",
        "--mask",
        half.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let e = err(&out);
    assert!(
        e.contains("visit_patient_id_fkey") && e.contains("no longer holds"),
        "{e}"
    );
    assert!(e.contains("nothing was left behind"), "{e}");
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'staging5%'"
        ),
        "0"
    );

    // Large objects: no rule can cover them, refused.
    pg.psql(
        "clinic",
        "DROP TABLE audit_log; SELECT lo_from_bytea(0, 'scan of a passport')",
    );
    cli.json(
        &["backup", "--postgres", &server, "--database", "clinic"],
        "backup with a large object",
    );
    let out = cli.run(&[
        "restore",
        "latest",
        "--to-postgres",
        &server,
        "--database",
        "staging6",
        "--mask",
        mask_arg,
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(err(&out).contains("1 large object(s)"), "{}", err(&out));

    // A malformed masking file is refused naming its line, before any
    // data is read.
    let bad = work.path().join("bad.toml");
    std::fs::write(
        &bad,
        "key_file = \"mask.key\"\n[tables.patient.columns]\nname = { rule = \"fake\", kind = \"pokemon\" }\n",
    )
    .unwrap();
    let out = cli.run(&[
        "restore",
        "latest",
        "--to-postgres",
        &server,
        "--database",
        "staging4",
        "--mask",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let e = err(&out);
    assert!(
        e.contains("bad.toml:3:") && e.contains("unknown fake kind \"pokemon\""),
        "{e}"
    );
    // A short key is refused too.
    std::fs::write(work.path().join("short.key"), b"too short").unwrap();
    std::fs::write(&bad, MASK.replace("mask.key", "short.key")).unwrap();
    let out = cli.run(&[
        "restore",
        "latest",
        "--to-postgres",
        &server,
        "--database",
        "staging4",
        "--mask",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(err(&out).contains("at least 32"), "{}", err(&out));
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'staging4%' OR datname LIKE 'staging6%' OR datname LIKE '%hfmask%'"
        ),
        "0"
    );
}

/// A schema with what a dump's COPY statements make hard: a partitioned
/// table (rows arrive per partition, the rules are the root's), an
/// inheritance child (its own rules), identity columns GENERATED ALWAYS,
/// a generated column, names that need quoting, an empty table, a view
/// over a masked column, and a trigger that must not fire during the
/// restore.
const ODD_SCHEMA: &str = r#"
CREATE SCHEMA "Clinic Data";
CREATE TABLE "Clinic Data"."Person" (
  "Id" bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "E-mail" text NOT NULL,
  "Full Name" text, name_len int GENERATED ALWAYS AS (length("Full Name")) STORED,
  secret text NOT NULL);
CREATE TABLE lab (id bigint, person bigint REFERENCES "Clinic Data"."Person", taken date NOT NULL,
  result text) PARTITION BY RANGE (taken);
CREATE TABLE lab_2023 PARTITION OF lab FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
CREATE TABLE lab_2024 PARTITION OF lab FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE note (id int, body text);
CREATE TABLE urgent_note (level int) INHERITS (note);
CREATE TABLE empty_one (x text);
CREATE VIEW contacts AS SELECT "E-mail" FROM "Clinic Data"."Person";
CREATE TABLE trail (what text);
CREATE FUNCTION log_it() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO trail VALUES (NEW."E-mail"); RETURN NEW; END $$;
CREATE TRIGGER person_trail AFTER INSERT ON "Clinic Data"."Person" FOR EACH ROW EXECUTE FUNCTION log_it();
INSERT INTO "Clinic Data"."Person" ("E-mail", "Full Name", secret)
SELECT 'odd' || g || E'@tab\there.example', 'Name With\nNewline ' || g, 'SECRET-' || lpad(g::text, 6, '0')
FROM generate_series(1, 300) g;
TRUNCATE trail;
INSERT INTO lab SELECT g, 1 + g % 300, date '2023-06-01' + (g % 400), 'result-' || g FROM generate_series(1, 900) g;
INSERT INTO note SELECT g, 'plain note ' || g FROM generate_series(1, 50) g;
INSERT INTO urgent_note SELECT g, 'urgent note ' || g, g % 3 FROM generate_series(51, 80) g;
"#;

const ODD_MASK: &str = r#"key_file = "mask.key"

[tables."Clinic Data.Person".columns]
Id = "keep"
"E-mail" = { rule = "fake", kind = "email" }
"Full Name" = { rule = "fake", kind = "name" }
name_len = "keep"
secret = { rule = "fixed", value = "xxx" }

[tables.lab.columns]
id = "keep"
person = "keep"
taken = { rule = "date_shift", by = "person", max_days = 30 }
result = "hash"

[tables.note.columns]
id = "keep"
body = "null"

[tables.urgent_note.columns]
id = "keep"
body = { rule = "fixed", value = "[urgent]" }
level = "keep"

[tables.empty_one]
default = "keep"

[tables.trail]
default = "keep"
"#;

#[test]
fn rows_are_masked_as_they_are_restored_whatever_the_table_shape_and_no_source_byte_is_left_in_the_database_files(
) {
    let pg = Cluster::new("");
    pg.psql("postgres", "CREATE DATABASE odd");
    pg.psql("odd", ODD_SCHEMA);
    let cli = Cli::acting_as(Some("staging@clinic.example"));
    let work = common::shared_tempdir();
    std::fs::write(work.path().join("mask.key"), [7u8; 32]).unwrap();
    let mask = work.path().join("odd.toml");
    std::fs::write(&mask, ODD_MASK).unwrap();
    let server = dsn(&pg, "postgres");
    cli.json(
        &["backup", "--postgres", &server, "--database", "odd"],
        "backup",
    );
    let r = cli.json(
        &[
            "restore",
            "latest",
            "--to-postgres",
            &server,
            "--database",
            "odd_staging",
            "--mask",
            mask.to_str().unwrap(),
        ],
        "masked restore",
    );
    let m = &r["masking"];
    assert_eq!(m["staged"], true, "{r}");
    assert_eq!(m["verified"], true, "{r}");
    // Rows per table as the dump copies them: partitions one by one.
    assert_eq!(m["tables"]["Clinic Data.Person"], 300, "{m}");
    assert_eq!(
        m["tables"]["public.lab_2023"].as_u64().unwrap()
            + m["tables"]["public.lab_2024"].as_u64().unwrap(),
        900,
        "{m}"
    );
    assert_eq!(m["tables"]["public.note"], 50, "{m}");
    assert_eq!(m["tables"]["public.urgent_note"], 30, "{m}");
    for c in m["columns"].as_array().unwrap() {
        assert_eq!(c["survivors"], 0, "{c}");
    }
    let q = |sql: &str| pg.psql("odd_staging", sql);
    let src = |sql: &str| pg.psql("odd", sql);
    // Every row arrived; no source value of a masked column is left.
    assert_eq!(q("SELECT count(*) FROM lab"), "900");
    assert_eq!(
        q(r#"SELECT count(*) FROM "Clinic Data"."Person" WHERE secret <> 'xxx'"#),
        "0"
    );
    assert_eq!(
        q("SELECT count(*) FROM lab WHERE result LIKE 'result-%'"),
        "0"
    );
    assert_eq!(
        q("SELECT count(*) FROM ONLY note WHERE body IS NOT NULL"),
        "0"
    );
    assert_eq!(
        q("SELECT string_agg(DISTINCT body, ',') FROM urgent_note"),
        "[urgent]"
    );
    assert_eq!(q("SELECT count(*) FROM note"), "80");
    let emails = |f: &dyn Fn(&str) -> String| -> BTreeSet<String> {
        f(r#"SELECT "E-mail" FROM "Clinic Data"."Person""#)
            .lines()
            .map(str::to_string)
            .collect()
    };
    assert!(emails(&src).is_disjoint(&emails(&q)));
    assert_eq!(emails(&q).len(), 300);
    // The view reads the masked column.
    assert_eq!(
        q("SELECT count(*) FROM contacts WHERE \"E-mail\" LIKE 'odd%'"),
        "0"
    );
    // Identity values kept, and the sequence continues after them.
    assert_eq!(
        q(r#"SELECT string_agg("Id"::text, ',' ORDER BY "Id") FROM "Clinic Data"."Person""#),
        src(r#"SELECT string_agg("Id"::text, ',' ORDER BY "Id") FROM "Clinic Data"."Person""#)
    );
    assert_eq!(
        q(
            r#"INSERT INTO "Clinic Data"."Person" ("E-mail", secret) VALUES ('n@x', 's') RETURNING "Id""#
        ),
        "301"
    );
    // The generated column follows the masked name.
    assert_eq!(
        q(
            r#"SELECT count(*) FROM "Clinic Data"."Person" WHERE name_len IS DISTINCT FROM length("Full Name")"#
        ),
        "0"
    );
    // The trigger exists but did not fire while rows were restored.
    assert_eq!(q("SELECT count(*) FROM trail WHERE what LIKE 'odd%'"), "0");
    assert_eq!(q("SELECT count(*) FROM trail"), "1");
    // Dates moved by one offset per person: intervals within a person kept.
    let spans = "SELECT string_agg(person || ':' || span, ',' ORDER BY person) \
                 FROM (SELECT person, max(taken) - min(taken) AS span FROM lab GROUP BY person) s";
    assert_eq!(q(spans), src(spans));

    // No byte of a source value reached the restored database's files:
    // the unmasked rows only ever sat in temporary tables.
    pg.psql("postgres", "CHECKPOINT");
    let oid = pg.psql(
        "postgres",
        "SELECT oid FROM pg_database WHERE datname = 'odd_staging'",
    );
    let dir = pg.datadir.join("base").join(oid.trim());
    let mut files = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let bytes = std::fs::read(&p).unwrap();
        files += 1;
        for needle in [
            "SECRET-000123",
            "result-77",
            "plain note 12",
            "urgent note 60",
            "odd12@tab",
        ] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{} holds {needle:?}",
                p.display()
            );
        }
    }
    assert!(files > 10, "{files} files in {}", dir.display());
}

fn write(p: &Path, text: &str) {
    std::fs::create_dir_all(p.parent().expect("parent")).unwrap();
    std::fs::write(p, text).unwrap();
}

#[test]
fn directory_restores_drop_or_replace_files_by_pattern() {
    let cli = Cli::acting_as(Some("staging@clinic.example"));
    let work = common::shared_tempdir();
    let src = work.path().join("docs");
    write(
        &src.join("patients/1/scan.pdf"),
        "%PDF secret scan of patient 1",
    );
    write(&src.join("patients/1/summary.txt"), "summary");
    write(&src.join("tmp/upload-1.bin"), "half an upload");
    write(&src.join("tmp/nested/x"), "x");
    cli.json(&["backup", src.to_str().unwrap()], "backup");
    let root = src.display().to_string();
    let mask = work.path().join("files.toml");
    std::fs::write(
        &mask,
        format!(
            "[[files]]\npattern = \"{root}/**/*.pdf\"\naction = \"replace\"\ncontent = \"placeholder\"\n\n[[files]]\npattern = \"{root}/tmp\"\naction = \"drop\"\n"
        ),
    )
    .unwrap();
    let target = work.path().join("restored");
    let r = cli.json(
        &[
            "restore",
            "latest",
            "--target",
            target.to_str().unwrap(),
            "--mask",
            mask.to_str().unwrap(),
        ],
        "masked directory restore",
    );
    let at = |p: &str| target.join(root.trim_start_matches('/')).join(p);
    assert_eq!(
        std::fs::read_to_string(at("patients/1/scan.pdf")).unwrap(),
        "placeholder"
    );
    assert_eq!(
        std::fs::read_to_string(at("patients/1/summary.txt")).unwrap(),
        "summary"
    );
    assert!(!at("tmp").exists());
    let files = r["masking"]["files"].as_array().expect("files");
    assert_eq!(files.len(), 2, "{r}");
    // A masking file without [[files]] rules is refused for a directory.
    std::fs::write(&mask, "[tables.t]\ndefault = \"keep\"\n").unwrap();
    let out = cli.run(&[
        "restore",
        "latest",
        "--target",
        work.path().join("r2").to_str().unwrap(),
        "--mask",
        mask.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(err(&out).contains("no [[files]] rules"), "{}", err(&out));
}

#[test]
fn the_daemon_refreshes_a_masked_staging_database() {
    let pg = Cluster::new("");
    pg.psql("postgres", "CREATE DATABASE clinic");
    pg.psql("clinic", SCHEMA);
    let cli = Cli::acting_as(Some("staging@clinic.example"));
    let work = common::shared_tempdir();
    let key: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(11) ^ 0x3c).collect();
    std::fs::write(work.path().join("mask.key"), &key).unwrap();
    let mask = work.path().join("clinic.toml");
    std::fs::write(&mask, MASK).unwrap();
    let server = dsn(&pg, "postgres");
    cli.json(
        &[
            "backup",
            "--postgres",
            &server,
            "--database",
            "clinic",
            "--source",
            "clinic",
        ],
        "backup",
    );
    let pgpass = work.path().join("pg.pw");
    std::fs::write(&pgpass, PASSWORD).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = work.path().join("holdfast.toml");
    std::fs::write(
        &config,
        format!(
            "[repository.main]\nurl = \"{repo}\"\npassword_file = \"{pw}\"\n\n\
             [source.clinic]\npostgres = \"postgresql://postgres@127.0.0.1:{p}/clinic\"\nmode = \"logical\"\npassword_file = \"{pgpass}\"\n\n\
             [source.staging]\npostgres = \"postgresql://postgres@127.0.0.1:{p}/postgres\"\nmode = \"logical\"\npassword_file = \"{pgpass}\"\n\n\
             [[job]]\nname = \"clinic-staging\"\nkind = \"staging-refresh\"\nsource = \"clinic\"\ntarget = \"staging\"\ndatabase = \"clinic_staging\"\nmask = \"{mask}\"\nrepository = \"main\"\nschedule = \"*/2 * * * * *\"\n\n\
             [listen]\naddress = \"127.0.0.1:{port}\"\n",
            repo = cli.dir.path().join("repo").display(),
            pw = cli.dir.path().join("pw").display(),
            p = pg.port,
            pgpass = pgpass.display(),
            mask = mask.display(),
        ),
    )
    .unwrap();
    let log = work.path().join("daemon.log");
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["daemon", "--config"])
        .arg(&config)
        .arg("--state-dir")
        .arg(work.path().join("state"))
        .env_remove("HOLDFAST_PASSWORD")
        .env_remove("HOLDFAST_PASSWORD_FILE")
        .env_remove("HOLDFAST_REPOSITORY")
        .env("HOLDFAST_PG_BINDIR", common::BIN)
        .env("HOLDFAST_CACHE_DIR", work.path().join("cache"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("starting the daemon");
    let started = std::time::Instant::now();
    let exists = "SELECT count(*) FROM pg_database WHERE datname = 'clinic_staging'";
    while pg.psql("postgres", exists) != "1" {
        if started.elapsed() > std::time::Duration::from_secs(120) {
            let _ = daemon.kill();
            panic!(
                "no staging database after 120s; daemon log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    // A refresh also replaces the database it made before (clean): let
    // one more run finish, then stop.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let _ = daemon.kill();
    let _ = daemon.wait();
    for (table, col) in [
        ("patient", "mrn"),
        ("patient", "email"),
        ("visit", "patient_id"),
    ] {
        let before = values(&pg, "clinic", table, col);
        let after = values(&pg, "clinic_staging", table, col);
        assert_eq!(after.len(), before.len(), "{table}.{col}");
        assert!(
            before.is_disjoint(&after),
            "{table}.{col} kept source values"
        );
    }
    let join = "SELECT count(*) FROM visit v JOIN patient p ON p.id = v.patient_id";
    assert_eq!(pg.psql("clinic_staging", join), "1000");
    let audit = cli.json(&["audit", "log"], "audit log");
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["operation"] == "restore"
                && e["outcome"] == "success"
                && e["args"]["masking_verified"] == true),
        "no verified masked restore on the audit trail"
    );
}
