//! `holdfast`: the one binary. It parses arguments, opens the repository,
//! calls the libraries and prints; all behaviour lives in the library crates.
//!
//! Errors are `anyhow` here (and only here); the exit code is derived from
//! the typed library error at the bottom of the chain (see [`exit_code`]).

#[macro_use]
mod ui;
mod args;
mod audit;
mod bench;
mod commands;
mod compliance;
mod config;
mod daemon;
mod drill;
mod erasure;
mod gc;
mod hold;
mod identity;
mod interrupt;
mod locks;
mod memory;
mod migrate;
mod open;
mod policy;
mod postgres;
mod signer;

use clap::Parser;
use holdfast_repo::RepoError;
use holdfast_sources::SourceError;

/// Exit codes (also in `holdfast --help` and the README).
pub mod exit {
    pub const OK: i32 = 0;
    pub const ERROR: i32 = 1;
    pub const PARTIAL_BACKUP: i32 = 3;
    pub const INTEGRITY: i32 = 4;
    pub const NO_SPACE: i32 = 5;
    pub const STORAGE_UNAVAILABLE: i32 = 6;
    pub const LOCKED: i32 = 7;
    pub const NOT_A_REPOSITORY: i32 = 10;
    pub const WRONG_PASSWORD: i32 = 12;
    pub const UNSUPPORTED_VERSION: i32 = 13;
    /// `drill run`: a check failed (or data could not be restored).
    pub const DRILL_CHECK_FAILED: i32 = 20;
    /// `drill run`: every check passed but the RTO or RPO was missed.
    pub const DRILL_TARGET_MISSED: i32 = 21;
    /// `drill run`: an error before every check could run (no snapshot,
    /// the repository cannot be opened, the restore failed, the timeout).
    pub const DRILL_ERROR: i32 = 22;
    /// `compliance report`: the report was made and a control fails.
    pub const COMPLIANCE_FAIL: i32 = 23;
}

fn main() {
    let cli = parse_args();
    let mut code = match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            errln!("holdfast: error: {}", error_chain(&e));
            exit_code(&e)
        }
    };
    // A closed pipe is the reader's choice and keeps the command's code;
    // any other failure to write the output is an error.
    if let Some(e) = ui::stdout_error() {
        errln!("holdfast: error: writing to standard output: {e}");
        if code == exit::OK {
            code = exit::ERROR;
        }
    }
    std::process::exit(code);
}

/// Parse the command line. Usage lines in clap's errors list the options
/// that were given, and an option given only through the environment
/// (HOLDFAST_REPOSITORY...) would appear there as if it were required. So a
/// command line is first checked by a parser that ignores the environment,
/// whose errors are the ones shown; every option backed by the environment
/// is optional, so the environment never makes an invalid command line valid.
fn parse_args() -> args::Cli {
    use clap::error::ErrorKind;
    let full = <args::Cli as clap::CommandFactory>::command();
    unset_empty_env(&full);
    let argv = compliance_json_file(std::env::args_os().collect());
    if let Err(e) = without_env(full).try_get_matches_from(&argv) {
        // Help and version are shown by the full parser (with [env: ...]).
        if !matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
            e.exit();
        }
    }
    args::Cli::parse_from(argv)
}

/// `compliance report --json FILE` (the form the compliance issue names)
/// is `--report-json FILE`: `--json` alone is the global flag that prints
/// JSON, so after `compliance report` a `--json` followed by a value (not
/// an option) takes it as the report file.
fn compliance_json_file(mut argv: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let Some(at) = argv
        .windows(2)
        .position(|w| w[0] == "compliance" && w[1] == "report")
    else {
        return argv;
    };
    let mut i = at + 2;
    while i < argv.len() {
        let arg = argv[i].to_string_lossy().into_owned();
        if arg == "--" {
            break;
        }
        if let Some(file) = arg.strip_prefix("--json=") {
            argv[i] = format!("--report-json={file}").into();
        } else if arg == "--json"
            && argv
                .get(i + 1)
                .is_some_and(|n| !n.to_string_lossy().starts_with('-'))
        {
            argv[i] = "--report-json".into();
            i += 1;
        }
        i += 1;
    }
    argv
}

fn without_env(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|a| a.env(None)).mut_subcommands(without_env)
}

/// An empty environment variable means "not set" (`HOLDFAST_PASSWORD_FILE=`
/// in a unit file or a shell that clears it). clap would read it as a value
/// of the flag and fail with "a value is required for --password-file",
/// about a flag the user never typed; so empty ones are removed before
/// parsing, for every option backed by the environment.
fn unset_empty_env(cmd: &clap::Command) {
    for arg in cmd.get_arguments() {
        if let Some(name) = arg.get_env() {
            if std::env::var_os(name).is_some_and(|v| v.is_empty()) {
                // Single-threaded here: nothing else reads the environment yet.
                std::env::remove_var(name);
            }
        }
    }
    for sub in cmd.get_subcommands() {
        unset_empty_env(sub);
    }
}

/// The error and its causes, `outer: inner: ...`, leaving out a cause whose
/// text its parent already shows (many errors embed their source's text in
/// their own message and also expose it as `source()`).
fn error_chain(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        // A skipped cause is inside its parent, which is inside a printed
        // part: comparing with the printed parts covers the whole chain.
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

fn exit_code(e: &anyhow::Error) -> i32 {
    for cause in e.chain() {
        if let Some(o) = cause.downcast_ref::<holdfast_ops::OpsError>() {
            return class_code(o.class(), o.repo_error());
        }
        if let Some(r) = cause.downcast_ref::<RepoError>() {
            return repo_code(r);
        }
        match cause.downcast_ref::<SourceError>() {
            Some(SourceError::Repo(r)) => return repo_code(r),
            Some(SourceError::NoSpace { .. }) => return exit::NO_SPACE,
            _ => {}
        }
        if let Some(holdfast_postgres::PgError::Repo(r)) = cause.downcast_ref() {
            return repo_code(r);
        }
        if let Some(s) = cause.downcast_ref::<holdfast_storage::StorageError>() {
            return repo_code(&RepoError::Storage(s.clone()));
        }
    }
    exit::ERROR
}

/// The exit code of a repository error, from its class (never its text):
/// scripts and the daemon retry on 6, page someone on 5, 7 and 4.
fn repo_code(r: &RepoError) -> i32 {
    class_code(r.class(), Some(r))
}

fn class_code(class: holdfast_repo::Class, r: Option<&RepoError>) -> i32 {
    use holdfast_repo::Class;
    use holdfast_storage::ErrorClass;
    match class {
        Class::Repository => match r.map(RepoError::root) {
            Some(RepoError::UnsupportedVersion { .. }) => exit::UNSUPPORTED_VERSION,
            _ => exit::NOT_A_REPOSITORY,
        },
        Class::Credentials => exit::WRONG_PASSWORD,
        Class::Integrity => exit::INTEGRITY,
        Class::Storage(ErrorClass::NoSpace) => exit::NO_SPACE,
        Class::Storage(ErrorClass::Transient) => exit::STORAGE_UNAVAILABLE,
        Class::Storage(ErrorClass::Locked) => exit::LOCKED,
        _ => exit::ERROR,
    }
}
