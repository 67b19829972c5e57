//! Verifying a repository, and recording which snapshots a full data read
//! found good (see [`crate::verification`]).

use holdfast_repo::check::{self, CheckOptions, CheckReport};
use holdfast_repo::{Id, Repository};

use crate::error::Result;
use crate::verification;

/// Check `repo` (structure always; pack contents with `read_data`).
/// `progress(done, total)` is called as packs are read. A full data read
/// records the snapshots it found good in a verification record
/// (`report.verification_record`); if that record cannot be written the
/// check's findings stand and a warning says so.
pub fn check(
    repo: &Repository,
    opts: &CheckOptions,
    progress: &dyn Fn(u64, u64),
) -> Result<CheckReport> {
    let mut report = check::check(repo, opts, progress)?;
    let ids: Vec<Id> = report
        .verified
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    if !ids.is_empty() {
        match verification::record(repo, &ids, verification::METHOD_CHECK) {
            Ok(name) => report.verification_record = Some(name),
            Err(e) => report.warnings.push(format!(
                "the {} snapshot(s) read and found good could not be recorded as verified: {e}",
                ids.len()
            )),
        }
    }
    Ok(report)
}
