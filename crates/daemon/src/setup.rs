//! What the daemon runs on: a validated configuration together with the
//! secrets it names, already resolved by the binary (this crate reads no
//! environment and no secret file). A reload replaces the whole value.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use holdfast_config::Config;
use holdfast_ops::open::{Credential, Location, SessionOptions};
use holdfast_postgres::{Dsn, PgTools};

/// How to reach and open one repository.
pub struct RepoAccess {
    pub location: Location,
    pub credential: Arc<Credential>,
    pub session: SessionOptions,
}

/// The configuration with everything the binary resolved for it.
pub struct Setup {
    pub config: Config,
    /// By repository name; every repository of `config` is here.
    pub repositories: BTreeMap<String, RepoAccess>,
    /// PostgreSQL sources by name: the connection with its password.
    pub postgres: BTreeMap<String, Dsn>,
    pub pg_tools: PgTools,
    pub pg_bindir: Option<PathBuf>,
    /// Alert targets by name: the webhook URL (may be a secret itself).
    pub webhooks: BTreeMap<String, String>,
    /// Where drills make their scratch targets.
    pub scratch_dir: PathBuf,
    /// This host's name (in the view, in jitter seeds, in drill records).
    pub host: String,
    pub program_version: String,
}

impl Setup {
    /// A repository's URL as shown to the outside: no credentials (an S3
    /// URL in the file carries none; user info is cut to be sure).
    pub fn public_url(&self, repo: &str) -> String {
        let url = self
            .config
            .repositories
            .get(repo)
            .map(|r| r.url.clone())
            .unwrap_or_default();
        match (url.find("://"), url.find('@')) {
            (Some(s), Some(at)) if at > s => format!("{}{}", &url[..s + 3], &url[at + 1..]),
            _ => url,
        }
    }

    /// The repository a source is backed up to: that of its first backup
    /// job (a source backed up nowhere has none).
    pub fn source_repository(&self, source: &str) -> Option<String> {
        self.config.jobs.iter().find_map(|j| match &j.kind {
            holdfast_config::JobKind::Backup { source: s } if s == source => {
                Some(j.repository.clone())
            }
            _ => None,
        })
    }
}
