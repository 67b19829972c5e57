//! Test harness: real PostgreSQL 15 clusters in temporary directories.
//!
//! Each [`Cluster`] is created with `initdb`, listens on 127.0.0.1 and a
//! private socket directory on a free port, and is stopped (immediate mode)
//! when dropped, so a failing test never leaves a server behind. As root,
//! server binaries run as the `postgres` user through `runuser`, and the
//! process umask is cleared so that repository files written by the test
//! (root) and by `archive_command` (postgres) are usable by both.
//! Missing binaries fail the tests; they never skip.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use holdfast_postgres::{Dsn, PgTools};
use holdfast_repo::config::RepoConfig;
use holdfast_repo::keys::KdfParams;
use holdfast_repo::Repository;
use holdfast_storage::local::LocalBackend;

pub const BIN: &str = "/usr/lib/postgresql/15/bin";
pub const PSQL: &str = "/usr/bin/psql";
pub const PASSWORD: &str = "s3cret-pw";
pub const REPO_PASSWORD: &str = "repo password";

static SETUP: Once = Once::new();

fn setup() {
    SETUP.call_once(|| {
        for b in ["initdb", "pg_ctl", "postgres", "pg_dump", "pg_restore", "pg_dumpall"] {
            assert!(
                Path::new(BIN).join(b).exists(),
                "PostgreSQL 15 binary {BIN}/{b} is missing: install postgresql-15 (scripts/test.sh does)"
            );
        }
        assert!(Path::new(PSQL).exists(), "psql is missing at {PSQL}");
        // SAFETY: umask has no preconditions.
        unsafe {
            libc::umask(0o022);
        }
        if is_root() {
            unsafe {
                libc::umask(0);
            }
        }
    });
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

pub fn tools() -> PgTools {
    PgTools::in_dir(Path::new(BIN))
}

/// A temporary directory the postgres user can use.
pub fn shared_tempdir() -> tempfile::TempDir {
    setup();
    let d = tempfile::Builder::new()
        .prefix("holdfast-pg-")
        .tempdir()
        .expect("temp dir");
    std::fs::set_permissions(
        d.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod temp dir");
    d
}

/// Make `path` a repository directory that both we and the `postgres` user
/// (archive_command, restore_command) can use: repositories are private
/// (0600 files, 0700 directories) unless their directory has group bits, so
/// as root it is made `root:postgres` 2770 and everything in it follows.
pub fn shared_repo_dir(path: &Path) {
    std::fs::create_dir_all(path).expect("repository dir");
    if !is_root() {
        return;
    }
    let out = Command::new("id")
        .args(["-g", "postgres"])
        .output()
        .expect("id -g postgres");
    let gid: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("postgres group id");
    std::os::unix::fs::chown(path, Some(0), Some(gid)).expect("chown repository dir");
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o2770))
        .expect("chmod repository dir");
}

/// Run a server binary, as `postgres` when we are root.
pub fn server_cmd(bin: &str) -> Command {
    let path = format!("{BIN}/{bin}");
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", &path]);
        c
    } else {
        Command::new(path)
    }
}

pub fn chown_postgres(p: &Path) {
    if is_root() {
        let st = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(p)
            .status()
            .expect("chown");
        assert!(st.success());
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn check(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub struct Cluster {
    pub root: tempfile::TempDir,
    pub datadir: PathBuf,
    pub sockdir: PathBuf,
    pub port: u16,
    running: bool,
}

impl Cluster {
    /// initdb + start, with `conf` appended to postgresql.conf.
    pub fn new(conf: &str) -> Cluster {
        let root = shared_tempdir();
        let datadir = root.path().join("data");
        let sockdir = root.path().join("sock");
        std::fs::create_dir(&sockdir).expect("sockdir");
        chown_postgres(&sockdir);
        let pwfile = root.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).expect("pwfile");
        chown_postgres(&pwfile);
        let out = server_cmd("initdb")
            .arg("-D")
            .arg(&datadir)
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("run initdb");
        check(out, "initdb");
        let port = free_port();
        let base = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = on\nwal_level = replica\n\
             max_wal_senders = 2\nshared_buffers = 32MB\nlogging_collector = off\n{conf}\n",
            sockdir.display()
        );
        append(&datadir.join("postgresql.conf"), &base);
        let mut c = Cluster {
            root,
            datadir,
            sockdir,
            port,
            running: false,
        };
        c.start();
        c
    }

    /// A cluster on an existing (restored) data directory, on a new port.
    pub fn on_datadir(root: tempfile::TempDir, datadir: PathBuf) -> Cluster {
        let sockdir = root.path().join("sock2");
        std::fs::create_dir_all(&sockdir).expect("sockdir");
        chown_postgres(&sockdir);
        let port = free_port();
        append(
            &datadir.join("postgresql.conf"),
            &format!(
                "\nport = {port}\nunix_socket_directories = '{}'\n",
                sockdir.display()
            ),
        );
        Cluster {
            root,
            datadir,
            sockdir,
            port,
            running: false,
        }
    }

    pub fn start(&mut self) {
        let log = self.root.path().join(format!("server-{}.log", self.port));
        let out = server_cmd("pg_ctl")
            .arg("-D")
            .arg(&self.datadir)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "120", "start"])
            .output()
            .expect("pg_ctl start");
        if !out.status.success() {
            let l = std::fs::read_to_string(&log).unwrap_or_default();
            panic!(
                "pg_ctl start failed: {}\n{}\nserver log:\n{l}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.running = true;
    }

    pub fn try_start(&mut self) -> Result<(), String> {
        let log = self.root.path().join(format!("server-{}.log", self.port));
        let out = server_cmd("pg_ctl")
            .arg("-D")
            .arg(&self.datadir)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "120", "start"])
            .output()
            .expect("pg_ctl start");
        if out.status.success() {
            self.running = true;
            Ok(())
        } else {
            Err(std::fs::read_to_string(&log).unwrap_or_default())
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.path().join(format!("server-{}.log", self.port)))
            .unwrap_or_default()
    }

    pub fn stop(&mut self) {
        if self.running {
            let _ = server_cmd("pg_ctl")
                .arg("-D")
                .arg(&self.datadir)
                .args(["-m", "fast", "-w", "stop"])
                .output();
            self.running = false;
        }
    }

    /// A DSN over TCP with password authentication.
    pub fn dsn(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres password={PASSWORD} dbname={db}",
            self.port
        )
    }

    pub fn dsn_parsed(&self, db: &str) -> Dsn {
        Dsn::parse(&self.dsn(db)).expect("dsn")
    }

    /// psql over the socket; returns unaligned tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(PSQL)
            .args([
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "postgres",
            ])
            .arg("-h")
            .arg(&self.sockdir)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-d")
            .arg(db)
            .arg("-c")
            .arg(sql)
            .output()
            .expect("run psql");
        check(out, &format!("psql {sql}")).trim().to_string()
    }

    pub fn psql_file(&self, db: &str, file: &Path) {
        let out = Command::new(PSQL)
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-U", "postgres"])
            .arg("-h")
            .arg(&self.sockdir)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-d")
            .arg(db)
            .arg("-f")
            .arg(file)
            .output()
            .expect("run psql");
        check(out, &format!("psql -f {}", file.display()));
    }

    /// Plain-text dump of a database, minus lines that legitimately differ
    /// between two databases (version banners, psql's random \restrict keys).
    pub fn plain_dump(&self, db: &str) -> String {
        let out = Command::new(format!("{BIN}/pg_dump"))
            .args(["-U", "postgres", "--no-sync"])
            .arg("-h")
            .arg(&self.sockdir)
            .arg("-p")
            .arg(self.port.to_string())
            .arg(db)
            .output()
            .expect("pg_dump");
        check(out, "pg_dump plain")
            .lines()
            .filter(|l| {
                !l.starts_with("-- Dumped")
                    && !l.starts_with("\\restrict")
                    && !l.starts_with("\\unrestrict")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Wait until the server accepts queries and has left recovery.
    pub fn wait_promoted(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let out = Command::new(PSQL)
                .args(["-X", "-A", "-t", "-q", "-U", "postgres"])
                .arg("-h")
                .arg(&self.sockdir)
                .arg("-p")
                .arg(self.port.to_string())
                .args(["-d", "postgres", "-c", "SELECT pg_is_in_recovery()"])
                .output()
                .expect("psql");
            if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "f" {
                return;
            }
            if Instant::now() > deadline {
                panic!("server did not finish recovery; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running {
            let _ = server_cmd("pg_ctl")
                .arg("-D")
                .arg(&self.datadir)
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}

pub fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open conf");
    f.write_all(text.as_bytes()).expect("append conf");
}

/// A local repository in a temp dir, with its runtime.
pub struct TestRepo {
    pub dir: tempfile::TempDir,
    pub rt: tokio::runtime::Runtime,
    pub repo: Arc<Repository>,
    pub path: PathBuf,
    pub password_file: PathBuf,
}

impl TestRepo {
    pub fn new() -> TestRepo {
        let dir = shared_tempdir();
        let path = dir.path().join("repo");
        shared_repo_dir(&path);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let backend = Arc::new(LocalBackend::new(&path));
        let repo = Repository::init(
            backend,
            rt.handle().clone(),
            REPO_PASSWORD.as_bytes(),
            KdfParams {
                m_cost: 1024,
                t_cost: 1,
                p_cost: 1,
            },
            RepoConfig::new(),
        )
        .expect("init repo");
        let password_file = dir.path().join("password");
        std::fs::write(&password_file, REPO_PASSWORD).expect("password file");
        TestRepo {
            dir,
            rt,
            repo: Arc::new(repo),
            path,
            password_file,
        }
    }

    /// Reopen (fresh index), as a new process would.
    pub fn reopen(&self) -> Arc<Repository> {
        let backend = Arc::new(LocalBackend::new(&self.path));
        let r = Repository::open(backend, self.rt.handle().clone(), REPO_PASSWORD.as_bytes())
            .expect("open");
        r.load_index().expect("index");
        Arc::new(r)
    }

    /// The test WAL tool, copied where the postgres user can run it.
    pub fn wal_tool(&self) -> PathBuf {
        let dst = self.dir.path().join("holdfast-wal");
        if !dst.exists() {
            let Some(src) = option_env!("CARGO_BIN_EXE_holdfast-wal") else {
                panic!("the holdfast-wal tool is built only for holdfast-postgres tests");
            };
            std::fs::copy(src, &dst).expect("copy wal tool");
            std::fs::set_permissions(&dst, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .expect("chmod");
        }
        dst
    }

    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("HOLDFAST_REPOSITORY", self.path.display().to_string()),
            (
                "HOLDFAST_PASSWORD_FILE",
                self.password_file.display().to_string(),
            ),
        ]
    }

    /// archive_command pushing into this repository.
    pub fn archive_conf(&self) -> String {
        let env = self.env();
        let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut cmd = String::new();
        for (k, v) in &env_ref {
            cmd.push_str(&format!("{k}={v} "));
        }
        cmd.push_str(&format!("{} wal-push %p", self.wal_tool().display()));
        format!(
            "archive_mode = on\narchive_command = '{}'\narchive_timeout = 0\n",
            cmd.replace('\'', "''")
        )
    }

    pub fn restore_command(&self) -> String {
        let env = self.env();
        let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        holdfast_postgres::restore_command(&self.wal_tool(), &env_ref, None)
    }

    pub fn snapshot_count(&self) -> usize {
        self.reopen().snapshots().expect("snapshots").len()
    }
}
