//! The daemon's small persisted state: per job the last scheduled time it
//! ran for (what the missed-run policy compares with at start) and its
//! last result. One JSON file, replaced atomically (write a temporary
//! file, fsync, rename, fsync the directory): a crash leaves the old or
//! the new state, never half of one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{DaemonError, Result};
use crate::view::RunResult;

/// The state file's name in the state directory.
pub const STATE_FILE: &str = "daemon-state.json";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobState {
    /// The scheduled time of the last run started.
    pub last_run: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last: Option<RunResult>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub jobs: BTreeMap<String, JobState>,
}

/// The state file in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(STATE_FILE)
}

fn err(path: &Path, message: impl Into<String>) -> DaemonError {
    DaemonError::State {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Read the state; a missing file is an empty state (first start).
pub fn load(dir: &Path) -> Result<State> {
    let p = path(dir);
    match std::fs::read(&p) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            err(
                &p,
                format!("not a daemon state file ({e}); move it away to start afresh"),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State {
            version: 1,
            jobs: BTreeMap::new(),
        }),
        Err(e) => Err(err(&p, format!("cannot read: {e}"))),
    }
}

/// Replace the state file atomically.
pub fn save(dir: &Path, state: &State) -> Result<()> {
    let p = path(dir);
    std::fs::create_dir_all(dir).map_err(|e| err(dir, format!("cannot create: {e}")))?;
    let tmp = dir.join(format!(".{STATE_FILE}.{}.tmp", std::process::id()));
    let bytes = serde_json::to_vec_pretty(state).map_err(|e| err(&p, e.to_string()))?;
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &p)?;
        // The rename is durable once the directory is.
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(&p, format!("cannot write: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_and_a_missing_file_is_empty() {
        let dir = std::env::temp_dir().join(format!("hf-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(load(&dir).unwrap().jobs.len(), 0);
        let mut s = State {
            version: 1,
            ..State::default()
        };
        s.jobs.insert(
            "a".into(),
            JobState {
                last_run: Some(Utc::now()),
                ..JobState::default()
            },
        );
        save(&dir, &s).unwrap();
        assert_eq!(load(&dir).unwrap(), s);
        std::fs::write(path(&dir), b"{not json").unwrap();
        let e = load(&dir).unwrap_err().to_string();
        assert!(e.contains("not a daemon state file"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
