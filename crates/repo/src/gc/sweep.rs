//! The sweep: under the exclusive lease, re-check what the mark decided
//! against the roots and index objects written since, rewrite the index
//! objects that name doomed packs (and merge small ones), then delete.
//!
//! Order matters for crash safety and for writers: new index objects are
//! stored before the ones they replace are deleted (a crash leaves
//! duplicate entries, which are harmless), and index objects naming a
//! doomed pack are deleted before the pack (a crash leaves an unindexed
//! pack, which the next run deletes; never an index entry pointing at a
//! deleted pack, which a writer could deduplicate against). An index object
//! that storage refuses to delete (Object Lock) keeps every pack it names.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use holdfast_storage::{Backend, ErrorClass, ObjectKind, StorageError};

use crate::error::{RepoError, Result};
use crate::id::Id;
use crate::pack::PackInfo;
use crate::repository::Repository;

/// An object storage refused to delete (Object Lock retention or a legal
/// hold): kept, reported, tried again by a later run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LockedObject {
    pub kind: String,
    pub name: String,
    /// Retain-until, when the store said (none for a legal hold).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
}

/// Index objects to write and delete.
#[derive(Debug, Default)]
pub(crate) struct IndexRewrite {
    /// Objects replaced (deleted once the replacements are stored).
    pub replace: Vec<String>,
    /// Packs the replacements describe.
    pub keep: Vec<PackInfo>,
}

/// Which index objects to rewrite: every one naming a doomed pack, and,
/// when there are several small ones, the small ones (merged into few).
pub(crate) fn plan_rewrite(
    objects: &[(String, Vec<PackInfo>)],
    doomed: &HashSet<Id>,
    small_entries: usize,
) -> IndexRewrite {
    let entries = |packs: &[PackInfo]| packs.iter().map(|p| p.entries.len()).sum::<usize>();
    let small: Vec<usize> = (0..objects.len())
        .filter(|&i| entries(&objects[i].1) < small_entries)
        .collect();
    let merge_small = small.len() >= 2;
    let mut out = IndexRewrite::default();
    let mut seen: HashSet<Id> = HashSet::new();
    for (i, (name, packs)) in objects.iter().enumerate() {
        let names_doomed = packs.iter().any(|p| doomed.contains(&p.id));
        let merged = merge_small && small.contains(&i);
        if !(names_doomed || merged) {
            continue;
        }
        out.replace.push(name.clone());
        for p in packs {
            if !doomed.contains(&p.id) && seen.insert(p.id) {
                out.keep.push(p.clone());
            }
        }
    }
    out
}

/// Delete `names` of `kind`, `par` at a time. Returns the objects storage
/// refused as locked; a name already gone counts as deleted.
pub(crate) fn delete_all(
    repo: &Repository,
    kind: ObjectKind,
    names: Vec<String>,
    par: usize,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Vec<LockedObject>> {
    let backend: Arc<dyn Backend> = Arc::clone(repo.backend());
    let total = names.len() as u64;
    let results = repo.block_on(async move {
        let sem = Arc::new(tokio::sync::Semaphore::new(par.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for name in names {
            let (b, sem) = (backend.clone(), sem.clone());
            tasks.spawn(async move {
                let _p = sem.acquire_owned().await;
                let r = b.delete(kind, &name).await;
                let until = match &r {
                    Err(e) if e.class() == ErrorClass::Locked => b
                        .retention(kind, &name)
                        .await
                        .ok()
                        .flatten()
                        .map(|r| r.until),
                    _ => None,
                };
                (name, r, until)
            });
        }
        let mut out = Vec::new();
        while let Some(done) = tasks.join_next().await {
            out.push(done);
        }
        out
    });
    let mut locked = Vec::new();
    for (i, done) in results.into_iter().enumerate() {
        progress(i as u64 + 1, total);
        let (name, r, until) =
            done.map_err(|e| RepoError::Invalid(format!("a delete task failed: {e}")))?;
        match r {
            Ok(()) | Err(StorageError::NotFound { .. }) => {}
            Err(e) if e.class() == ErrorClass::Locked => locked.push(LockedObject {
                kind: kind.dir().to_string(),
                name,
                until,
            }),
            Err(e) => {
                return Err(RepoError::from(e).context(format!("deleting {}", kind.key(&name))))
            }
        }
    }
    Ok(locked)
}

/// Objects among `names` that Object Lock still protects now: retention
/// not yet ended (with its retain-until date) or a legal hold (`None`).
/// Asked only of backends that have them; GC leaves such objects alone
/// instead of failing on them.
pub(crate) fn retained(
    repo: &Repository,
    kind: ObjectKind,
    names: &[String],
    par: usize,
) -> Result<HashMap<String, Option<chrono::DateTime<chrono::Utc>>>> {
    let caps = repo.capabilities();
    if !(caps.retention || caps.legal_hold) || names.is_empty() {
        return Ok(HashMap::new());
    }
    let backend: Arc<dyn Backend> = Arc::clone(repo.backend());
    let now = repo.now();
    let names = names.to_vec();
    repo.block_on(async move {
        let sem = Arc::new(tokio::sync::Semaphore::new(par.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for name in names {
            let (b, sem) = (backend.clone(), sem.clone());
            tasks.spawn(async move {
                let _p = sem.acquire_owned().await;
                let r = if caps.retention {
                    b.retention(kind, &name).await
                } else {
                    Ok(None)
                };
                let held = match r {
                    Ok(Some(ret)) if ret.until > now => Ok(Some(Some(ret.until))),
                    Ok(_) | Err(StorageError::NotFound { .. }) if caps.legal_hold => {
                        b.legal_hold(kind, &name).await.map(|h| h.then_some(None))
                    }
                    Ok(_) => Ok(None),
                    Err(e) => Err(e),
                };
                (name, held)
            });
        }
        let mut out = HashMap::new();
        while let Some(done) = tasks.join_next().await {
            let (name, r) =
                done.map_err(|e| RepoError::Invalid(format!("a retention read failed: {e}")))?;
            match r {
                Ok(Some(until)) => {
                    out.insert(name, until);
                }
                Ok(None) | Err(StorageError::NotFound { .. }) => {}
                Err(e) if e.class() == ErrorClass::Unsupported => {}
                Err(e) => {
                    return Err(RepoError::from(e).context(format!(
                        "reading the Object Lock state of {}",
                        kind.key(&name)
                    )))
                }
            }
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::{BlobType, PackEntry};

    fn info(pack: u8, blobs: usize) -> PackInfo {
        PackInfo {
            id: Id([pack; 32]),
            salt: [0; 32],
            entries: (0..blobs)
                .map(|i| PackEntry {
                    blob_type: BlobType::Data,
                    id: Id([i as u8; 32]),
                    offset: 37 + i as u32,
                    length: 1,
                    raw_len: 1,
                    inner: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn objects_naming_doomed_packs_are_rewritten_without_them_and_small_ones_merged() {
        let objects = vec![
            ("a".to_string(), vec![info(1, 50), info(2, 50)]),
            ("b".to_string(), vec![info(3, 50)]),
            ("c".to_string(), vec![info(4, 2)]),
            ("d".to_string(), vec![info(5, 2), info(4, 2)]),
        ];
        let doomed: HashSet<Id> = [Id([2; 32])].into_iter().collect();
        // "a" names a doomed pack; "c" and "d" are small (< 10 entries).
        let r = plan_rewrite(&objects, &doomed, 10);
        assert_eq!(r.replace, vec!["a", "c", "d"]);
        let kept: Vec<Id> = r.keep.iter().map(|p| p.id).collect();
        assert_eq!(kept, vec![Id([1; 32]), Id([4; 32]), Id([5; 32])]);
        // One small object alone is left as it is.
        let r = plan_rewrite(&objects[..3], &HashSet::new(), 10);
        assert!(r.replace.is_empty());
    }
}
