//! Small sealed JSON records beside the snapshots: reading every object of
//! a kind concurrently, each opened with its name binding checked. Shared
//! by the deletion records (`forget`) and the verification records
//! (`verification`).

use bytes::Bytes;
use holdfast_storage::{ObjectKind, StorageError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{RepoError, Result};
use crate::object::{self, Binding};
use crate::repository::{Repository, Unreadable};

/// Records that opened, by object name, and those that did not, with why.
pub type Records<T> = (Vec<(String, T)>, Vec<Unreadable>);

/// Every object of `kind`, read concurrently and opened as JSON bound to
/// its kind and name; those that cannot be read or opened come back
/// separately, with why. Sorted by name.
pub(crate) fn read_all<T: DeserializeOwned>(
    repo: &Repository,
    kind: ObjectKind,
) -> Result<Records<T>> {
    // A listing read while opening serves (a restore reads `erasures/`
    // with the index and the snapshots); otherwise a fresh one.
    let names: Vec<String> = repo.list_ahead(kind)?.into_iter().map(|m| m.name).collect();
    let fetched = repo.fetch_all(kind, names);
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (name, r) in fetched {
        match r
            .map_err(RepoError::from)
            .and_then(|b| repo.open_json_object::<T>(Binding::new(kind, &name), &b))
        {
            Ok(v) => good.push((name, v)),
            Err(e) => bad.push((name, e.to_string())),
        }
    }
    good.sort_by(|a, b| a.0.cmp(&b.0));
    bad.sort();
    Ok((good, bad))
}

/// Seal `value` as object `kind/name` and store it (write-once). Returns
/// false, storing nothing, if an object of that name exists already.
/// These records exist only in name-bound (format 3) repositories: an
/// unbound one could be moved over another's name unnoticed.
pub(crate) fn put<T: Serialize>(
    repo: &Repository,
    kind: ObjectKind,
    name: &str,
    value: &T,
) -> Result<bool> {
    if !object::writes_bound(repo.format_version()) {
        return Err(RepoError::Invalid(format!(
            "{kind} records need repository format {} or later (this one is format {}); run `holdfast migrate` first",
            object::FIRST_BOUND_FORMAT,
            repo.format_version()
        )));
    }
    let json = serde_json::to_vec(value)
        .map_err(|e| RepoError::Invalid(format!("cannot serialise: {e}")))?;
    let sealed = repo.seal_object(Binding::new(kind, name), &json)?;
    match repo.block_on(
        repo.backend()
            .put(kind, name, Bytes::from(sealed), &repo.put_options()),
    ) {
        Ok(()) => Ok(true),
        Err(StorageError::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Read and open object `kind/name`; `None` if there is none.
pub(crate) fn get<T: DeserializeOwned>(
    repo: &Repository,
    kind: ObjectKind,
    name: &str,
) -> Result<Option<T>> {
    match repo.block_on(repo.backend().get(kind, name, None)) {
        Ok(b) => repo
            .open_json_object(Binding::new(kind, name), &b)
            .map(Some),
        Err(StorageError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
