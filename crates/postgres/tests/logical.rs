//! Logical backup and restore against real PostgreSQL 15 clusters.

mod common;

use std::path::Path;

use common::{tools, Cluster, TestRepo};
use holdfast_postgres::{
    backup_logical, restore_logical, table_row_counts, Dsn, LogicalBackupOptions,
    LogicalRestoreOptions, PgError,
};

const MANY_TYPES: &str = r#"
CREATE SCHEMA app;
CREATE SEQUENCE app.ticket_seq START 1000;
CREATE TYPE app.mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE app.things (
  id bigint PRIMARY KEY DEFAULT nextval('app.ticket_seq'),
  doc jsonb NOT NULL,
  blob bytea,
  tags text[],
  nums int4[],
  big text,
  amount numeric(20,6),
  at timestamptz DEFAULT now(),
  mood app.mood,
  u uuid,
  ip inet,
  span tsrange,
  flag boolean
);
CREATE INDEX things_doc_idx ON app.things USING gin (doc);
CREATE INDEX things_at_idx ON app.things (at DESC);
CREATE VIEW app.happy_things AS SELECT id, doc->>'name' AS name FROM app.things WHERE mood = 'happy';
INSERT INTO app.things (doc, blob, tags, nums, big, amount, at, mood, u, ip, span, flag)
SELECT jsonb_build_object('name', 'thing ' || i, 'nested', jsonb_build_object('k', i, 'arr', jsonb_build_array(i, i * 2))),
       decode(md5(i::text) || md5((i + 1)::text), 'hex'),
       ARRAY['a' || i, 'b''quote', 'c"dq', E'tab\there'],
       ARRAY[i, -i, 0],
       repeat('large text ' || i || E' with newline\n and backslash \\ ', 300),
       (i * 1234.567891)::numeric(20,6),
       timestamptz '2024-01-01 00:00:00+00' + i * interval '1 hour',
       (ARRAY['sad','ok','happy']::app.mood[])[1 + i % 3],
       md5(i::text)::uuid,
       ('10.0.' || (i % 256) || '.1')::inet,
       tsrange('2024-01-01', '2024-02-01'),
       i % 2 = 0
FROM generate_series(1, 3000) i;
INSERT INTO app.things (doc, blob, big) VALUES ('{"nul": "x", "emoji": "\u00e9\u4e2d"}', '\x00ff00', NULL);
CREATE TABLE public.plain (k int, v text);
INSERT INTO public.plain SELECT g, 'row ' || g FROM generate_series(1, 500) g;
CREATE FUNCTION app.add(a int, b int) RETURNS int LANGUAGE sql AS 'SELECT a + b';
"#;

fn opts(dbs: &[&str]) -> LogicalBackupOptions {
    LogicalBackupOptions {
        databases: dbs.iter().map(|s| s.to_string()).collect(),
        tools: tools(),
        ..LogicalBackupOptions::default()
    }
}

/// Row counts are read from the dump stream, not counted with a second
/// scan, and must still equal `count(*)` in every awkward case.
#[test]
fn row_counts_from_the_dump_stream_equal_count_star() {
    let pg = Cluster::new("");
    let tr = TestRepo::new();
    pg.psql("postgres", "CREATE DATABASE rc");
    pg.psql(
        "rc",
        r#"
CREATE TABLE parent (k int, v text);
CREATE TABLE child (extra int) INHERITS (parent);
CREATE TABLE grandchild () INHERITS (child);
INSERT INTO parent SELECT g, 'p' || g FROM generate_series(1, 10) g;
INSERT INTO child SELECT g, 'c', g FROM generate_series(1, 7) g;
INSERT INTO grandchild SELECT g, E'multi\nline\\.', g FROM generate_series(1, 5) g;
CREATE TABLE nocols ();
INSERT INTO nocols SELECT FROM generate_series(1, 4);
CREATE TABLE empty (k int);
CREATE TABLE "We.ird ""name""" (t text);
INSERT INTO "We.ird ""name""" VALUES (E'\\.'), ('.'), (E'a\rb'), (E'\n');
CREATE TABLE parted (k int) PARTITION BY RANGE (k);
CREATE TABLE parted_lo PARTITION OF parted FOR VALUES FROM (0) TO (100);
CREATE TABLE parted_hi PARTITION OF parted FOR VALUES FROM (100) TO (1000);
INSERT INTO parted SELECT g FROM generate_series(0, 299) g;
SELECT lo_from_bytea(0, decode(repeat('0a', 1000), 'hex'));
"#,
    );
    let dsn = pg.dsn_parsed("postgres");
    tr.repo.load_index().expect("index");
    let out = backup_logical(&tr.repo, tr.rt.handle(), &dsn, &opts(&["rc"])).expect("backup");
    let dbs = holdfast_postgres::logical::snapshot_databases(&out.snapshot).unwrap();
    let info = &dbs["rc"];
    assert_eq!(info.row_counts_source, "dump");
    assert_eq!(info.row_counts["public.parent"], 22);
    assert_eq!(info.row_counts["public.child"], 12);
    assert_eq!(info.row_counts["public.nocols"], 4);
    assert_eq!(info.row_counts["public.empty"], 0);
    assert_eq!(info.row_counts["public.We.ird \"name\""], 4);
    assert_eq!(info.row_counts["public.parted_hi"], 200);
    let counts = table_row_counts(tr.rt.handle(), &dsn, "rc").unwrap();
    assert_eq!(counts, info.row_counts);
}

#[test]
fn many_types_round_trip_with_row_counts_and_clean() {
    let pg = Cluster::new("");
    let tr = TestRepo::new();
    pg.psql("postgres", "CREATE DATABASE src");
    pg.psql("src", MANY_TYPES);
    let before = pg.plain_dump("src");

    let dsn = pg.dsn_parsed("postgres");
    tr.repo.load_index().expect("index");
    let out = backup_logical(&tr.repo, tr.rt.handle(), &dsn, &opts(&["src"])).expect("backup");
    assert_eq!(out.snapshot.kind, "postgres-logical");
    let dbs = holdfast_postgres::logical::snapshot_databases(&out.snapshot).unwrap();
    let info = &dbs["src"];
    assert_eq!(info.row_counts["app.things"], 3001);
    assert_eq!(info.row_counts["public.plain"], 500);
    assert_eq!(info.row_counts_source, "dump");
    assert!(info.size_bytes > 0 && info.dump_bytes > 0);
    assert!(out.snapshot.meta["server_version"]
        .as_str()
        .unwrap()
        .starts_with("15"));
    assert!(out.snapshot.meta.contains_key("globals"));

    // Restore streamed (one job) into a new database.
    let repo = tr.reopen();
    let snaps = repo.snapshots().unwrap();
    let snap = snaps.last().unwrap();
    let mut ro = LogicalRestoreOptions::new("copy1");
    ro.tools = tools();
    let rep = restore_logical(&repo, tr.rt.handle(), snap, &dsn, &ro).expect("restore jobs=1");
    assert_eq!(rep.source_database, "src");
    assert_eq!(
        pg.plain_dump("copy1"),
        before,
        "dump of restored db differs"
    );
    let counts = table_row_counts(tr.rt.handle(), &dsn, "copy1").unwrap();
    assert_eq!(counts, rep.expected_row_counts);

    // Parallel restore through a temporary file, and through the
    // in-memory copy (a memfd pg_restore opens by its /proc name); neither
    // is left behind.
    let spool_dir = tempfile::tempdir().unwrap();
    for (db, memory) in [("copy2", false), ("copy2m", true)] {
        let mut ro2 = LogicalRestoreOptions::new(db);
        ro2.tools = tools();
        ro2.jobs = 2;
        ro2.memory_spool = memory;
        ro2.temp_dir = Some(spool_dir.path().to_path_buf());
        restore_logical(&repo, tr.rt.handle(), snap, &dsn, &ro2).expect("restore jobs=2");
        assert_eq!(pg.plain_dump(db), before);
        assert_eq!(pg.psql(db, "SELECT app.add(2, 3)"), "5");
        assert_eq!(pg.psql(db, "SELECT nextval('app.ticket_seq')"), "4001");
        assert_eq!(std::fs::read_dir(spool_dir.path()).unwrap().count(), 0);
    }

    // An existing non-empty database is refused, then replaced with clean.
    let err = restore_logical(&repo, tr.rt.handle(), snap, &dsn, &ro).unwrap_err();
    assert!(matches!(err, PgError::TargetNotEmpty { .. }), "{err}");
    assert!(err.to_string().contains("--clean"));
    pg.psql("copy1", "INSERT INTO public.plain VALUES (-1, 'extra')");
    ro.clean = true;
    restore_logical(&repo, tr.rt.handle(), snap, &dsn, &ro).expect("clean restore");
    assert_eq!(pg.plain_dump("copy1"), before);

    // An existing empty database is used as is.
    pg.psql("postgres", "CREATE DATABASE empty_target");
    let mut ro3 = LogicalRestoreOptions::new("empty_target");
    ro3.tools = tools();
    restore_logical(&repo, tr.rt.handle(), snap, &dsn, &ro3).expect("restore into empty db");
    assert_eq!(pg.plain_dump("empty_target"), before);
}

#[test]
fn pagila_fidelity_and_day_over_day_dedup() {
    let pg = Cluster::new("");
    let tr = TestRepo::new();
    pg.psql("postgres", "CREATE DATABASE pagila");
    let schema = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata/pagila/pagila-schema.sql");
    let schema = if schema.exists() {
        schema
    } else {
        Path::new("/work/shared/testdata/pagila/pagila-schema.sql").to_path_buf()
    };
    pg.psql_file("pagila", &schema);
    // Some data of our own so dedup has something to chew on (~8 MB).
    pg.psql(
        "pagila",
        "CREATE TABLE public.bulk (id int PRIMARY KEY, payload text); \
         INSERT INTO public.bulk SELECT g, md5(g::text) || repeat(md5((g*7)::text), 6) FROM generate_series(1, 40000) g;",
    );
    let before = pg.plain_dump("pagila");
    let dsn = pg.dsn_parsed("pagila");
    tr.repo.load_index().unwrap();
    let first = backup_logical(&tr.repo, tr.rt.handle(), &dsn, &opts(&[])).expect("backup day 1");
    assert_eq!(first.snapshot.paths, vec!["pagila".to_string()]);

    // Day 2: a few changes; the new dump must cost a fraction of the first.
    pg.psql(
        "pagila",
        "UPDATE public.bulk SET payload = 'changed' WHERE id <= 200; \
         INSERT INTO public.bulk SELECT g, md5(g::text) FROM generate_series(40001, 40100) g;",
    );
    let second = backup_logical(&tr.repo, tr.rt.handle(), &dsn, &opts(&[])).expect("backup day 2");
    let a = first.snapshot.summary.stored_added;
    let b = second.snapshot.summary.stored_added;
    assert!(
        b * 3 < a,
        "day-2 dump stored {b} bytes, day 1 {a}: dedup is not working"
    );

    let repo = tr.reopen();
    let snaps = repo.snapshots().unwrap();
    let snap = snaps.iter().find(|s| s.id == first.id).unwrap();
    let mut ro = LogicalRestoreOptions::new("pagila_copy");
    ro.tools = tools();
    ro.jobs = 2;
    restore_logical(&repo, tr.rt.handle(), snap, &pg.dsn_parsed("postgres"), &ro)
        .expect("restore pagila");
    assert_eq!(pg.plain_dump("pagila_copy"), before);
}

#[test]
fn bad_inputs_fail_clearly_and_commit_nothing() {
    let pg = Cluster::new("");
    let tr = TestRepo::new();
    pg.psql("postgres", "CREATE DATABASE db1; ");
    pg.psql(
        "db1",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g",
    );

    // Unreachable server.
    let closed = common::free_port();
    let dsn = Dsn::parse(&format!(
        "host=127.0.0.1 port={closed} user=postgres password=x dbname=db1 connect_timeout=3"
    ))
    .unwrap();
    let err = backup_logical(&tr.repo, tr.rt.handle(), &dsn, &opts(&[])).unwrap_err();
    assert!(matches!(err, PgError::Connect { .. }), "{err}");
    assert!(err.to_string().contains(&closed.to_string()), "{err}");

    // Wrong password.
    let dsn = Dsn::parse(&format!(
        "host=127.0.0.1 port={} user=postgres password=wrong dbname=db1",
        pg.port
    ))
    .unwrap();
    let err = backup_logical(&tr.repo, tr.rt.handle(), &dsn, &opts(&[])).unwrap_err();
    assert!(
        err.to_string().contains("password authentication failed"),
        "{err}"
    );
    assert!(!err.to_string().contains("wrong"), "password leaked: {err}");

    // Missing database.
    let dsn = pg.dsn_parsed("postgres");
    let err = backup_logical(&tr.repo, tr.rt.handle(), &dsn, &opts(&["nope"])).unwrap_err();
    assert!(
        matches!(err, PgError::NoSuchDatabase(ref d) if d == "nope"),
        "{err}"
    );

    // A pg_dump that dies midway: some bytes, then exit 1.
    let fake = tr.dir.path().join("fake_pg_dump");
    std::fs::write(
        &fake,
        "#!/bin/sh\nhead -c 300000 /dev/urandom\necho 'pg_dump: error: connection lost midway' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut o = opts(&["db1"]);
    o.tools.pg_dump = fake;
    let err = backup_logical(&tr.repo, tr.rt.handle(), &dsn, &o).unwrap_err();
    assert!(matches!(err, PgError::ToolFailed { .. }), "{err}");
    assert!(err.to_string().contains("connection lost midway"), "{err}");
    assert_eq!(
        tr.snapshot_count(),
        0,
        "a failed dump must not write a snapshot"
    );

    // A pg_dump binary that does not exist.
    let mut o = opts(&["db1"]);
    o.tools.pg_dump = "/nonexistent/pg_dump".into();
    let err = backup_logical(&tr.repo, tr.rt.handle(), &dsn, &o).unwrap_err();
    assert!(err.to_string().contains("HOLDFAST_PG_BINDIR"), "{err}");
    assert_eq!(tr.snapshot_count(), 0);

    // And a good one still works afterwards.
    backup_logical(&tr.repo, tr.rt.handle(), &dsn, &opts(&["db1"])).expect("good backup");
    assert_eq!(tr.snapshot_count(), 1);
}

const DATABASE_PROPERTIES: &str = r#"
CREATE ROLE alice LOGIN;
CREATE ROLE bob;
CREATE DATABASE app OWNER alice;
COMMENT ON DATABASE app IS 'clinical app; DATABASE app''s own comment';
REVOKE ALL ON DATABASE app FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE app TO bob;
ALTER DATABASE app SET work_mem = '7MB';
ALTER DATABASE app SET statement_timeout = '42s';
ALTER ROLE bob IN DATABASE app SET search_path = 'audit, public';
"#;

const APP_OBJECTS: &str = r#"
CREATE TABLE notes (id int PRIMARY KEY, body text);
ALTER TABLE notes OWNER TO alice;
GRANT SELECT ON notes TO bob;
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY bob_reads ON notes FOR SELECT TO bob USING (id > 0);
INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 100) g;
"#;

/// The database's own properties, as one string to compare.
fn database_properties(pg: &Cluster, db: &str) -> String {
    pg.psql(
        "postgres",
        &format!(
            "SELECT pg_get_userbyid(d.datdba) || ' | ' || coalesce(shobj_description(d.oid, 'pg_database'), '-') \
             || ' | ' || coalesce(array_to_string(d.datacl, ','), '-') || ' | ' || \
             coalesce((SELECT string_agg(coalesce(r.rolname, '*') || ':' || array_to_string(s.setconfig, ';'), ' ' ORDER BY r.rolname NULLS FIRST) \
                       FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole WHERE s.setdatabase = d.oid), '-') \
             FROM pg_database d WHERE d.datname = '{db}'"
        ),
    )
}

fn database_count(pg: &Cluster, db: &str) -> String {
    pg.psql(
        "postgres",
        &format!("SELECT count(*) FROM pg_database WHERE datname = '{db}'"),
    )
}

/// A logical restore gives the new database the original's owner, comment,
/// grants and settings (database-wide and per role); into a cluster that
/// lacks the roles it fails naming the role and leaves no database, and
/// succeeds with --with-globals, which leaves existing roles alone;
/// --no-owner and --no-acl drop ownership and grants.
#[test]
fn database_properties_globals_and_missing_roles() {
    let pg = Cluster::new("");
    let tr = TestRepo::new();
    let setup = tr.dir.path().join("props.sql");
    std::fs::write(&setup, DATABASE_PROPERTIES).unwrap();
    pg.psql_file("postgres", &setup);
    let objects = tr.dir.path().join("objects.sql");
    std::fs::write(&objects, APP_OBJECTS).unwrap();
    pg.psql_file("app", &objects);
    let original = database_properties(&pg, "app");
    assert!(original.starts_with("alice | clinical app"), "{original}");
    assert!(original.contains("bob=Tc/alice"), "{original}");
    assert!(
        original.contains("work_mem=7MB") && original.contains("bob:search_path"),
        "{original}"
    );

    tr.repo.load_index().unwrap();
    let dsn = pg.dsn_parsed("postgres");
    backup_logical(&tr.repo, tr.rt.handle(), &dsn, &opts(&["app"])).expect("backup");
    let repo = tr.reopen();
    let snaps = repo.snapshots().unwrap();
    let snap = snaps.last().unwrap();

    // Same cluster, another name: every property follows the database.
    let mut ro = LogicalRestoreOptions::new("app copy");
    ro.tools = tools();
    restore_logical(&repo, tr.rt.handle(), snap, &dsn, &ro).expect("restore under a new name");
    // (The comment's text mentions `DATABASE app`: it stays as written.)
    assert_eq!(database_properties(&pg, "app copy"), original);
    assert_eq!(pg.psql("app copy", "SELECT count(*) FROM notes"), "100");
    assert_eq!(pg.plain_dump("app copy"), pg.plain_dump("app"));

    // A second cluster without the roles.
    let other = Cluster::new("");
    let odsn = other.dsn_parsed("postgres");
    let mut ro = LogicalRestoreOptions::new("app");
    ro.tools = tools();
    let err = restore_logical(&repo, tr.rt.handle(), snap, &odsn, &ro).unwrap_err();
    assert!(matches!(err, PgError::MissingRole { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("alice") || msg.contains("bob"), "{msg}");
    assert!(msg.contains("--with-globals"), "{msg}");
    assert_eq!(
        database_count(&other, "app"),
        "0",
        "a failed restore left a database"
    );
    // --no-owner --no-acl is not enough: the policy names bob.
    ro.no_owner = true;
    ro.no_acl = true;
    let err = restore_logical(&repo, tr.rt.handle(), snap, &odsn, &ro).unwrap_err();
    assert!(
        matches!(err, PgError::MissingRole { ref role, .. } if role == "bob"),
        "{err}"
    );
    assert_eq!(
        database_count(&other, "app"),
        "0",
        "a failed restore left a database"
    );

    // --with-globals creates the missing roles and leaves existing ones alone.
    other.psql("postgres", "CREATE ROLE bob CONNECTION LIMIT 3");
    let mut ro = LogicalRestoreOptions::new("app");
    ro.tools = tools();
    ro.with_globals = true;
    restore_logical(&repo, tr.rt.handle(), snap, &odsn, &ro).expect("restore with globals");
    assert_eq!(database_properties(&other, "app"), original);
    assert_eq!(
        other.psql(
            "postgres",
            "SELECT rolconnlimit FROM pg_roles WHERE rolname = 'bob'"
        ),
        "3"
    );
    assert_eq!(
        other.psql(
            "postgres",
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'alice'"
        ),
        "t"
    );
    assert_eq!(other.plain_dump("app"), pg.plain_dump("app"));

    // --no-owner --no-acl: the restoring user owns everything, no grants.
    let mut ro = LogicalRestoreOptions::new("bare");
    ro.tools = tools();
    ro.no_owner = true;
    ro.no_acl = true;
    restore_logical(&repo, tr.rt.handle(), snap, &odsn, &ro)
        .expect("restore without owner and grants");
    let bare = database_properties(&other, "bare");
    assert!(bare.starts_with("postgres | clinical app"), "{bare}");
    assert!(bare.contains(" | - | "), "database grants restored: {bare}");
    assert_eq!(
        other.psql(
            "bare",
            "SELECT pg_get_userbyid(relowner) || ' ' || coalesce(relacl::text, '-') FROM pg_class WHERE relname = 'notes'"
        ),
        "postgres -"
    );
    assert_eq!(other.psql("bare", "SELECT count(*) FROM notes"), "100");
}
