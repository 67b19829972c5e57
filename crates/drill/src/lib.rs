//! Restore drills, the pure part: playbook files (`playbooks/*.toml`)
//! parsed and validated with the line and column of every error, the
//! choice of a snapshot and of a point in time (seeded, so a drill can be
//! repeated), the drill report and its outcome, the full-site RTO forecast
//! and the HTML report.
//!
//! **Architecture invariant:** no repository, storage, clock, processes or
//! environment. `holdfast-ops` (`ops::drill`) runs drills and feeds this
//! crate what it measured; this crate decides and describes.

pub mod duration;
pub mod forecast;
pub mod html;
pub mod pick;
pub mod playbook;
pub mod report;

use std::fmt;
use std::path::PathBuf;

pub use playbook::{
    load_file, parse_str, Check, Expect, Objectives, Pick, Playbook, PointInTime, Restore,
    SnapshotPick, Target,
};
pub use report::{Approval, CheckResult, DrillReport, Outcome, Phase, RestoreReport};

/// A syntax or validation error in a playbook, at a line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaybookError {
    pub file: PathBuf,
    /// 1-based; 0 when the file could not be read at all.
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for PlaybookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

impl std::error::Error for PlaybookError {}
