//! Who this process acts as, for the audit trail: `HOLDFAST_ACTOR` (a
//! person or a service account, e.g. `jdoe@clinic.example`), else nobody
//! in particular, and the library records `user@host` of the process.
//! Only the binary reads the environment; the libraries take the actor
//! as a parameter (`holdfast_ops::open::SessionOptions::actor`).

use crate::open::env_nonempty;

/// The variable naming the actor.
pub const ACTOR_ENV: &str = "HOLDFAST_ACTOR";

/// The configured actor, if any (control characters removed: it is
/// printed by `audit log`).
pub fn actor() -> Option<String> {
    env_nonempty(ACTOR_ENV)
        .map(|a| a.chars().filter(|c| !c.is_control()).collect::<String>())
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
}
