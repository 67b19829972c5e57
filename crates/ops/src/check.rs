//! Verifying a repository.

use holdfast_repo::check::{self, CheckOptions, CheckReport};
use holdfast_repo::Repository;

use crate::error::Result;

/// Check `repo` (structure always; pack contents with `read_data`).
/// `progress(done, total)` is called as packs are read.
pub fn check(
    repo: &Repository,
    opts: &CheckOptions,
    progress: &dyn Fn(u64, u64),
) -> Result<CheckReport> {
    Ok(check::check(repo, opts, progress)?)
}
