//! Scratch clusters for restore drills: a PostgreSQL server of our own in
//! a directory of our own, on a free port of 127.0.0.1 and a private
//! socket directory, that is always torn down — `teardown`, or `Drop` if
//! the caller never got there (an error, a panic).
//!
//! As root, the server binaries run as the `postgres` user through
//! `runuser` (PostgreSQL refuses to run as root) and the directory is
//! handed to that user. Access: the socket directory is private to the
//! server's user, TCP needs the random password made for this cluster.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::conn::Dsn;
use crate::error::{PgError, Result};

/// The user server binaries run as when we are root.
const SERVER_USER: &str = "postgres";
/// How long `pg_ctl` waits for a start or stop.
const PG_CTL_WAIT: &str = "120";

/// Where the server binaries (`initdb`, `pg_ctl`, `postgres`) are: `dir`,
/// or the newest Debian-style `/usr/lib/postgresql/<major>/bin`.
pub fn server_bindir(dir: Option<&Path>) -> Result<PathBuf> {
    if let Some(d) = dir {
        return Ok(d.to_path_buf());
    }
    let found = fs::read_dir("/usr/lib/postgresql")
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .max_by_key(|(m, _)| *m)
        .map(|(_, p)| p);
    found.ok_or_else(|| {
        PgError::Invalid(
            "no PostgreSQL server binaries (initdb, pg_ctl) found under /usr/lib/postgresql; set bin_dir in the playbook's [target] or HOLDFAST_PG_BINDIR".into(),
        )
    })
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// uid and gid of `user`.
fn user_ids(user: &str) -> Result<(u32, u32)> {
    let name = std::ffi::CString::new(user)
        .map_err(|_| PgError::Invalid(format!("bad user name {user:?}")))?;
    // SAFETY: getpwnam returns a pointer to static storage or null; we
    // copy the two ids out at once, on this thread, before any other call.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(PgError::Invalid(format!(
            "running as root, a scratch cluster runs as the {user:?} user, which does not exist"
        )));
    }
    // SAFETY: pw is non-null and points to a valid passwd record.
    Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

fn chown(path: &Path, ids: Option<(u32, u32)>) -> Result<()> {
    if let Some((uid, gid)) = ids {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| {
            PgError::Invalid(format!(
                "handing {} to the server user: {e}",
                path.display()
            ))
        })?;
    }
    Ok(())
}

/// A free TCP port on 127.0.0.1 (free when asked; a start that loses the
/// race is retried on another).
fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| PgError::Invalid(format!("finding a free port on 127.0.0.1: {e}")))
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| PgError::Invalid(format!("reading /dev/urandom: {e}")))?;
    Ok(hex::encode(buf))
}

/// A running (or stopped) scratch cluster.
#[derive(Debug)]
pub struct ScratchCluster {
    /// The directory that holds everything; removed at teardown.
    pub root: PathBuf,
    pub datadir: PathBuf,
    pub sockdir: PathBuf,
    pub port: u16,
    pub password: String,
    bindir: PathBuf,
    ids: Option<(u32, u32)>,
    torn_down: bool,
}

impl ScratchCluster {
    /// A new, empty directory for a cluster under `parent`, named after
    /// `name`, handed to the server user. Nothing runs yet.
    pub fn prepare(bindir: &Path, parent: &Path, name: &str) -> Result<ScratchCluster> {
        let ids = if is_root() {
            Some(user_ids(SERVER_USER)?)
        } else {
            None
        };
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let root = parent.join(format!("holdfast-drill-{safe}-{}", random_hex(4)?));
        fs::create_dir(&root).map_err(|e| {
            PgError::Invalid(format!(
                "creating the scratch directory {}: {e}",
                root.display()
            ))
        })?;
        let mut c = ScratchCluster {
            datadir: root.join("data"),
            sockdir: root.join("sock"),
            root,
            port: 0,
            password: random_hex(16)?,
            bindir: bindir.to_path_buf(),
            ids,
            torn_down: false,
        };
        // From here on, Drop removes the directory on any error.
        fs::set_permissions(&c.root, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(|e| PgError::Invalid(format!("{}: {e}", c.root.display())))?;
        chown(&c.root, ids)?;
        fs::create_dir(&c.sockdir)
            .map_err(|e| PgError::Invalid(format!("{}: {e}", c.sockdir.display())))?;
        chown(&c.sockdir, ids)?;
        c.port = free_port()?;
        Ok(c)
    }

    /// `initdb` a new cluster: UTF8, C locale, the `postgres` superuser with
    /// this cluster's password.
    pub fn initdb(&self) -> Result<()> {
        let pwfile = self.root.join("pw");
        fs::write(&pwfile, &self.password)
            .map_err(|e| PgError::Invalid(format!("{}: {e}", pwfile.display())))?;
        chown(&pwfile, self.ids)?;
        let out = self
            .server_cmd("initdb")
            .arg("-D")
            .arg(&self.datadir)
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
            .output();
        let _ = fs::remove_file(&pwfile);
        check(out, "initdb", &self.bindir)
    }

    /// Settings appended to the data directory's `postgresql.conf`: our
    /// port and socket directory, local TCP only, no fsync (a scratch
    /// cluster is thrown away), plus `extra`.
    pub fn configure(&self, extra: &str) -> Result<()> {
        let conf = self.datadir.join("postgresql.conf");
        let text = format!(
            "\n# holdfast drill scratch cluster\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\nfsync = off\nsynchronous_commit = off\nlogging_collector = off\narchive_mode = off\n{extra}\n",
            self.port,
            self.sockdir.display()
        );
        use std::io::Write;
        fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| PgError::Invalid(format!("{}: {e}", conf.display())))
    }

    /// Hand the data directory (restored by us as root) to the server user
    /// with the modes PostgreSQL requires.
    pub fn own_datadir(&self) -> Result<()> {
        let Some((uid, gid)) = self.ids else {
            return Ok(());
        };
        let mut stack = vec![self.datadir.clone()];
        while let Some(p) = stack.pop() {
            std::os::unix::fs::lchown(&p, Some(uid), Some(gid))
                .map_err(|e| PgError::Invalid(format!("{}: {e}", p.display())))?;
            if fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                for e in fs::read_dir(&p)
                    .map_err(|e| PgError::Invalid(format!("{}: {e}", p.display())))?
                {
                    let e = e.map_err(|e| PgError::Invalid(format!("{}: {e}", p.display())))?;
                    stack.push(e.path());
                }
            }
        }
        fs::set_permissions(
            &self.datadir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .map_err(|e| PgError::Invalid(format!("{}: {e}", self.datadir.display())))
    }

    /// Start the server and wait until it accepts connections (for a
    /// recovering one: until recovery ends, as `pg_ctl -w` does). A port
    /// taken meanwhile is retried on another.
    pub fn start(&mut self) -> Result<()> {
        let mut last = String::new();
        for _ in 0..3 {
            let log = self.root.join("server.log");
            let out = self
                .server_cmd("pg_ctl")
                .arg("-D")
                .arg(&self.datadir)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", PG_CTL_WAIT, "start"])
                .output();
            match check(out, "pg_ctl start", &self.bindir) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let text = fs::read_to_string(&log).unwrap_or_default();
                    if !text.contains("could not bind") {
                        return Err(PgError::Invalid(format!(
                            "{e}; server log: {}",
                            tail(&text, 2000)
                        )));
                    }
                    last = text;
                    self.port = free_port()?;
                    self.configure("")?;
                }
            }
        }
        Err(PgError::Invalid(format!(
            "the scratch cluster could not get a free port: {}",
            tail(&last, 2000)
        )))
    }

    /// Replace the data directory's `pg_hba.conf` (a restored cluster's
    /// own, with passwords we do not have) with one that admits local
    /// socket connections only: the socket directory is private to the
    /// server's user (and root), TCP is refused.
    pub fn socket_only_access(&self) -> Result<()> {
        let hba = self.datadir.join("pg_hba.conf");
        fs::write(
            &hba,
            "# holdfast drill scratch cluster: socket only\nlocal all all trust\n",
        )
        .map_err(|e| PgError::Invalid(format!("{}: {e}", hba.display())))?;
        chown(&hba, self.ids)
    }

    /// A connection string to `db` over the private socket.
    pub fn socket_dsn_string(&self, db: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={db}",
            self.sockdir.display(),
            self.port
        )
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.root.join("server.log")).unwrap_or_default()
    }

    /// A connection string to `db` over TCP with this cluster's password.
    pub fn dsn(&self, db: &str) -> Result<Dsn> {
        Dsn::parse(&self.dsn_string(db))
    }

    /// The same as a URI, for commands (`HOLDFAST_DRILL_DSN`).
    pub fn dsn_string(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres password={} dbname={db}",
            self.port, self.password
        )
    }

    /// Stop the server at once (`immediate`): what a drill that must end
    /// now does; the data is thrown away anyway.
    pub fn stop_now(&self) {
        let _ = self
            .server_cmd("pg_ctl")
            .arg("-D")
            .arg(&self.datadir)
            .args(["-m", "immediate", "-w", "-t", "30", "stop"])
            .output();
        // pg_ctl gave up or was never able to: end the postmaster itself.
        if let Some(pid) = self.postmaster_pid() {
            // SAFETY: kill(2) on the pid our own server wrote.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            for _ in 0..100 {
                // SAFETY: signal 0 only checks the process exists.
                if unsafe { libc::kill(pid, 0) } != 0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// The postmaster's pid while it runs.
    fn postmaster_pid(&self) -> Option<i32> {
        let text = fs::read_to_string(self.datadir.join("postmaster.pid")).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        // SAFETY: signal 0 only checks the process exists.
        (pid > 0 && unsafe { libc::kill(pid, 0) } == 0).then_some(pid)
    }

    /// Stop the server and remove the directory. Safe to call twice.
    pub fn teardown(&mut self) -> Result<()> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        self.stop_now();
        fs::remove_dir_all(&self.root).map_err(|e| {
            PgError::Invalid(format!(
                "removing the scratch cluster {}: {e}",
                self.root.display()
            ))
        })
    }

    fn server_cmd(&self, bin: &str) -> Command {
        let path = self.bindir.join(bin);
        let mut c = if self.ids.is_some() {
            let mut c = Command::new("runuser");
            c.args(["-u", SERVER_USER, "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        // Server processes must not inherit our terminal's Ctrl-C: the
        // drill stops them itself, in order.
        std::os::unix::process::CommandExt::process_group(&mut c, 0);
        c.stdin(std::process::Stdio::null());
        c
    }
}

impl Drop for ScratchCluster {
    fn drop(&mut self) {
        let _ = self.teardown();
    }
}

fn tail(s: &str, n: usize) -> String {
    let skip = s.chars().count().saturating_sub(n);
    s.chars().skip(skip).collect()
}

fn check(out: std::io::Result<Output>, what: &str, bindir: &Path) -> Result<()> {
    let out = out.map_err(|e| PgError::ToolMissing {
        tool: what.to_string(),
        path: bindir.display().to_string(),
        cause: e,
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(PgError::ToolFailed {
        tool: what.to_string(),
        status: out.status.to_string(),
        stderr: tail(
            &format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            2000,
        ),
    })
}
