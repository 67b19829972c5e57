//! The application layer: every operation Holdfast offers, as functions
//! that take an open repository (or a backend) and one configuration
//! struct, and return a typed report. The CLI parses arguments into these
//! structs, calls them and prints the reports; the daemon (and any other
//! front end) calls the same functions, so behaviour such as choosing the
//! parent snapshot, naming a source, the crash-ordered password change or
//! picking the base backup that reaches a recovery target exists once.
//!
//! **Architecture invariant:** this crate never reads the environment,
//! never prints, never prompts and knows nothing of clap or terminals.
//! Everything it needs comes in through its configuration structs; every
//! outcome goes out as a value (warnings included).

pub mod archive;
pub mod audit;
pub mod backup;
pub mod check;
pub mod compliance;
pub mod drill;
pub mod erasure;
mod error;
pub mod gc;
pub mod holds;
pub mod init;
pub mod inspect;
pub mod keys;
pub mod masking;
pub mod migrate;
pub mod open;
pub mod policy;
pub mod postgres;
pub mod repair;
pub mod restore;
pub mod secrets;
pub mod signers;
pub mod time;
pub mod verification;

pub use error::{OpsError, Result};
