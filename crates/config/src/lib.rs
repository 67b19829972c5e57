//! The daemon's configuration (`holdfast.toml`) and its job schedules:
//! pure logic. Parsing and validation read only the text they are given
//! (every error names file, line and column); schedules compute run times
//! from a "now" the caller passes. Secrets are never in the file: it names
//! an environment variable or a file, which the binary reads.
//!
//! **Architecture invariant:** knows nothing of repositories, storage or
//! the CLI, reads no environment and no clock.

pub mod duration;
mod error;
mod file;
pub mod schedule;
pub mod timetable;

pub use duration::Seconds;
pub use error::ConfigError;
pub use file::{
    load_file, parse_str, Alert, AlertFormat, Config, DaemonSettings, Job, JobKind, Listen,
    LogFormat, Missed, PgMode, Repository, Secret, Source, SourceKind, WebhookUrl, DEFAULT_GRACE,
    DEFAULT_LISTEN,
};
pub use schedule::Cron;
pub use timetable::Timetable;
