//! Upgrading a repository's format in place (see `holdfast_repo::migrate`),
//! audited as `migrate`.

use holdfast_repo::audit::{Draft, Outcome};
use holdfast_repo::migrate::{self, MigrateReport};
use holdfast_repo::Repository;

use crate::audit;
use crate::error::Result;

/// Migrate `repo` to the newest format; `progress` is told each step.
pub fn migrate(repo: &Repository, progress: &dyn Fn(&str)) -> Result<MigrateReport> {
    let draft = Draft::new("migrate", Outcome::Success).arg("from", repo.format_version());
    audit::audited(
        repo,
        draft,
        || Ok(migrate::migrate(repo, progress)?),
        |r, d| {
            d.arg("to", r.to)
                .arg("already_current", r.already_current)
                .arg("index_objects", r.index_objects)
                .arg("snapshots", r.snapshots.len())
                .arg("wal_manifests", r.wal_manifests)
        },
    )
}
