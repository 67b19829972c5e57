//! `holdfast-wal`: a minimal `archive_command`/`restore_command` for local
//! repositories, used by this crate's tests (the full `holdfast` CLI offers
//! the same as `holdfast wal-push` / `holdfast wal-fetch`).
//!
//! ```text
//! HOLDFAST_REPOSITORY=/dir HOLDFAST_PASSWORD_FILE=/file holdfast-wal push PATH
//! HOLDFAST_REPOSITORY=/dir HOLDFAST_KEY_FILE=/file holdfast-wal push PATH
//! HOLDFAST_REPOSITORY=/dir HOLDFAST_PASSWORD_FILE=/file holdfast-wal wal-fetch [--cluster ID] NAME DEST
//! ```
//! Exit status: 0 done, 1 not found (wal-fetch), 2 any other error.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use holdfast_postgres::{wal_fetch, wal_push, PgError};
use holdfast_repo::keys::{decode_key_file, strip_line_end, Secret};
use holdfast_repo::Repository;
use holdfast_storage::local::LocalBackend;

fn main() {
    let code = match run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("holdfast-wal: {e}");
            if matches!(e, PgError::WalNotFound { .. }) {
                1
            } else {
                2
            }
        }
    };
    std::process::exit(code);
}

fn run() -> Result<(), PgError> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut cluster = None;
    if let Some(i) = args.iter().position(|a| a == "--cluster") {
        let v = args
            .get(i + 1)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| PgError::Invalid("--cluster needs a system identifier".into()))?;
        cluster = Some(v);
        args.drain(i..i + 2);
    }
    let repo_dir = std::env::var("HOLDFAST_REPOSITORY")
        .map_err(|_| PgError::Invalid("HOLDFAST_REPOSITORY is not set".into()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| PgError::io("starting a runtime", e))?;
    let backend = Arc::new(LocalBackend::new(PathBuf::from(repo_dir)));
    let handle = rt.handle().clone();
    // A key file (no argon2) if given, else the password file.
    let repo = match std::env::var("HOLDFAST_KEY_FILE")
        .ok()
        .filter(|v| !v.is_empty())
    {
        Some(f) => {
            let text = std::fs::read(&f).map_err(|e| PgError::io(format!("reading {f}"), e))?;
            let key = decode_key_file(&text, &format!("key file {f}"))?;
            Repository::open_with(backend, handle, &Secret::KeyFile(&key))?
        }
        None => {
            let pw_file = std::env::var("HOLDFAST_PASSWORD_FILE").map_err(|_| {
                PgError::Invalid("set HOLDFAST_KEY_FILE or HOLDFAST_PASSWORD_FILE".into())
            })?;
            let password = std::fs::read(&pw_file)
                .map_err(|e| PgError::io(format!("reading {pw_file}"), e))?;
            Repository::open(backend, handle, strip_line_end(&password))?
        }
    };
    let repo = Arc::new(repo);
    match args.as_slice() {
        [cmd, path] if cmd == "wal-push" || cmd == "push" => {
            wal_push(&repo, Path::new(path), cluster)?;
        }
        [cmd, name, dest] if cmd == "wal-fetch" || cmd == "fetch" => {
            wal_fetch(&repo, name, Path::new(dest), cluster)?;
        }
        _ => {
            return Err(PgError::Invalid(
                "usage: holdfast-wal wal-push PATH | wal-fetch [--cluster ID] NAME DEST".into(),
            ))
        }
    }
    Ok(())
}
