//! Connection strings, server connections and the PostgreSQL client tools.
//!
//! A DSN (URI or `key=value` form) is parsed once with tokio-postgres'
//! parser. Our own queries use tokio-postgres; the client tools (`pg_dump`,
//! `pg_dumpall`, `pg_restore`) get the same settings through the standard
//! `PG*` environment variables, never on their command line, so a password
//! never shows up in `ps`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls};

use crate::error::{describe_pg_error, PgError, Result};

/// A parsed connection string.
#[derive(Clone)]
pub struct Dsn {
    config: Config,
}

impl std::fmt::Debug for Dsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

impl Dsn {
    /// Parse a libpq connection string or URI; what it leaves out gets
    /// libpq's defaults (local socket, user `postgres`), never from the
    /// environment (see [`Dsn::parse_with`]).
    pub fn parse(s: &str) -> Result<Dsn> {
        Dsn::parse_with(s, |_| None)
    }

    /// Like [`Dsn::parse`], taking `PGUSER`, `USER` and `PGPASSWORD` from
    /// `get` as libpq takes them from the environment; the binary passes
    /// `|n| std::env::var(n).ok()` (libraries read no environment).
    pub fn parse_with(s: &str, get: impl Fn(&str) -> Option<String>) -> Result<Dsn> {
        let mut config: Config = s.parse().map_err(|e: tokio_postgres::Error| {
            PgError::Dsn(format!("{}: {}", redact(s), describe_pg_error(&e)))
        })?;
        if config.get_hosts().is_empty() {
            // libpq's default: the local socket directory (Debian's is
            // /var/run/postgresql), else localhost.
            let sock = Path::new("/var/run/postgresql");
            if sock.is_dir() {
                config.host_path(sock);
            } else {
                config.host("localhost");
            }
        }
        if config.get_user().is_none() {
            let user = get("PGUSER")
                .or_else(|| get("USER"))
                .unwrap_or_else(|| "postgres".into());
            config.user(&user);
        }
        if config.get_password().is_none() {
            if let Some(p) = get("PGPASSWORD") {
                config.password(p);
            }
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        Ok(Dsn { config })
    }

    /// The same server and credentials, another database.
    pub fn with_dbname(&self, db: &str) -> Dsn {
        let mut config = self.config.clone();
        config.dbname(db);
        Dsn { config }
    }

    pub fn dbname(&self) -> Option<&str> {
        self.config.get_dbname()
    }

    pub fn user(&self) -> &str {
        self.config.get_user().unwrap_or("postgres")
    }

    /// Where this DSN points, without the password: for messages and snapshots.
    pub fn display(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!(
            "{}@{}:{}/{}",
            self.user(),
            host,
            port,
            self.dbname().unwrap_or("")
        )
    }

    /// Environment for the client tools.
    pub fn tool_env(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        if let Some(h) = self.config.get_hosts().first() {
            let v = match h {
                Host::Tcp(h) => h.clone(),
                #[cfg(unix)]
                Host::Unix(p) => p.display().to_string(),
            };
            env.push(("PGHOST".into(), v));
        }
        if let Some(p) = self.config.get_ports().first() {
            env.push(("PGPORT".into(), p.to_string()));
        }
        env.push(("PGUSER".into(), self.user().to_string()));
        if let Some(p) = self.config.get_password() {
            env.push(("PGPASSWORD".into(), String::from_utf8_lossy(p).into_owned()));
        }
        if let Some(d) = self.dbname() {
            env.push(("PGDATABASE".into(), d.to_string()));
        }
        if let Some(t) = self.config.get_connect_timeout() {
            env.push(("PGCONNECT_TIMEOUT".into(), t.as_secs().max(1).to_string()));
        }
        let ssl = match self.config.get_ssl_mode() {
            tokio_postgres::config::SslMode::Disable => "disable",
            tokio_postgres::config::SslMode::Require => "require",
            _ => "prefer",
        };
        env.push(("PGSSLMODE".into(), ssl.into()));
        env.push(("PGAPPNAME".into(), "holdfast".into()));
        env
    }

    /// Connect (blocking on `rt`); the connection task runs on `rt`.
    /// Requires a multi-threaded runtime, like the rest of the repository API.
    pub fn connect(&self, rt: &Handle) -> Result<Client> {
        let mut config = self.config.clone();
        config.application_name("holdfast");
        let target = self.display();
        let (client, connection) =
            rt.block_on(config.connect(NoTls))
                .map_err(|e| PgError::Connect {
                    target: target.clone(),
                    detail: describe_pg_error(&e),
                })?;
        rt.spawn(async move {
            // Errors surface on the client's next query; nothing to add here.
            let _ = connection.await;
        });
        Ok(client)
    }
}

/// Hide a password in a DSN before it goes into a message.
pub(crate) fn redact(s: &str) -> String {
    // URI form: scheme://user:password@host
    if let Some(scheme_end) = s.find("://") {
        let rest = &s[scheme_end + 3..];
        if let Some(at) = rest.find('@') {
            let userinfo = &rest[..at];
            if let Some(colon) = userinfo.find(':') {
                return format!(
                    "{}{}:***{}",
                    &s[..scheme_end + 3],
                    &userinfo[..colon],
                    &rest[at..]
                );
            }
        }
        return s.to_string();
    }
    s.split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=***".to_string()
            } else {
                kv.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Paths of the PostgreSQL client tools.
#[derive(Debug, Clone)]
pub struct PgTools {
    pub pg_dump: PathBuf,
    pub pg_dumpall: PathBuf,
    pub pg_restore: PathBuf,
}

impl PgTools {
    /// The newest Debian-style `/usr/lib/postgresql/<major>/bin` (pg_dump
    /// must be at least as new as the server, and Debian's `/usr/bin`
    /// wrappers pick a version by cluster configuration we cannot see);
    /// else the tools on `PATH`. Reads no environment: the binary passes
    /// its settings through [`PgTools::discover_in`].
    pub fn discover() -> PgTools {
        PgTools::discover_in(None, None)
    }

    /// Like [`PgTools::discover`], with the tools taken from `bindir` when
    /// given (the CLI's `HOLDFAST_PG_BINDIR`), and `pg_dump` overriding
    /// pg_dump alone (`HOLDFAST_PG_DUMP`).
    pub fn discover_in(bindir: Option<PathBuf>, pg_dump: Option<PathBuf>) -> PgTools {
        let dir = bindir.or_else(newest_debian_bindir);
        let tool = |name: &str| match &dir {
            Some(d) => d.join(name),
            None => PathBuf::from(name),
        };
        let mut t = PgTools {
            pg_dump: tool("pg_dump"),
            pg_dumpall: tool("pg_dumpall"),
            pg_restore: tool("pg_restore"),
        };
        if let Some(p) = pg_dump {
            t.pg_dump = p;
        }
        t
    }

    /// All tools from one directory.
    pub fn in_dir(dir: &Path) -> PgTools {
        PgTools {
            pg_dump: dir.join("pg_dump"),
            pg_dumpall: dir.join("pg_dumpall"),
            pg_restore: dir.join("pg_restore"),
        }
    }
}

fn newest_debian_bindir() -> Option<PathBuf> {
    let entries = std::fs::read_dir("/usr/lib/postgresql").ok()?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_dump").exists().then_some((major, bin))
        })
        .max_by_key(|(m, _)| *m)
        .map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgresql://u:secret@h:5/db"),
            "postgresql://u:***@h:5/db"
        );
        assert_eq!(
            redact("host=h password=secret user=u"),
            "host=h password=*** user=u"
        );
    }

    #[test]
    fn tool_env_carries_settings() {
        let d = Dsn::parse("host=127.0.0.1 port=5999 user=alice password=pw dbname=x").unwrap();
        let env = d.tool_env();
        assert!(env.contains(&("PGPORT".into(), "5999".into())));
        assert!(env.contains(&("PGPASSWORD".into(), "pw".into())));
        assert_eq!(d.with_dbname("y").dbname(), Some("y"));
        assert!(!d.display().contains("pw"));
    }
}
