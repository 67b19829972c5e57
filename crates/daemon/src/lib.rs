//! The scheduler daemon (`holdfast daemon`): runs the jobs of a validated
//! `holdfast.toml` on schedule, serves metrics, `/status` and the status
//! page, and sends alerts.
//!
//! Architecture invariant: this crate does not read the environment, parse
//! command lines or print; the binary resolves secrets and hands in
//! explicit configuration ([`setup::Setup`]) and turns signals into
//! [`scheduler::Control`] messages. Everything the outside sees of a
//! running daemon goes through one value, [`view::StatusView`]: `/status`
//! serialises it, the metrics, the status page and the alert conditions
//! are computed from it, and `holdfast status` reads it back.

pub mod alerts;
pub mod anomaly;
pub mod error;
pub mod example;
pub mod listener;
pub mod metrics;
pub mod page;
pub mod runner;
pub mod scheduler;
pub mod setup;
pub mod state;
pub mod view;

pub use error::DaemonError;
pub use scheduler::{Control, Daemon};
pub use setup::{RepoAccess, Setup};
