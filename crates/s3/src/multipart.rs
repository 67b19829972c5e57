//! Multipart upload of large objects, write-once like single puts.
//!
//! 1. A `HeadObject` pre-check refuses a name that already exists before
//!    any part is sent (a cheap answer, not the guarantee).
//! 2. `CreateMultipartUpload` with the storage class, Object Lock settings,
//!    CRC32C checksums and the put id.
//! 3. Parts go up concurrently (each a retried request holding one of the
//!    backend's permits), each with its own CRC32C.
//! 4. `CompleteMultipartUpload` with `If-None-Match: *`: the atomic
//!    write-once guard; a `412` is [`StorageError::AlreadyExists`].
//!
//! Any failure aborts the upload (`AbortMultipartUpload`, retried), and so
//! does dropping the future mid-way (a guard spawns the abort), so no parts
//! are left behind to be billed. A `CreateMultipartUpload` whose answer was
//! lost leaves an upload we never learn the id of: after such a retry, the
//! other uploads of that exact key are listed and aborted once ours is done
//! (another process uploading the very same key at that moment would lose
//! its upload and fail, never corrupt anything). What a crash leaves is for
//! a bucket lifecycle rule `AbortIncompleteMultipartUpload` (e.g. 7 days).

use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ObjectLockLegalHoldStatus,
    ObjectLockMode, StorageClass,
};
use bytes::Bytes;
use holdfast_storage::{PutOptions, StorageError, StorageResult};
use tokio::task::JoinSet;

use crate::backend::{crc32c_b64, Op, S3Backend, PUT_ID_META};
use crate::config::MIN_PART_SIZE;
use crate::failure::Failure;

/// S3's cap on the number of parts of one upload.
const MAX_PARTS: usize = 10_000;

/// Aborts the upload when dropped while still armed (error or cancellation).
struct AbortGuard {
    backend: S3Backend,
    key: String,
    upload_id: String,
    armed: bool,
}

impl AbortGuard {
    async fn abort_now(mut self) {
        self.armed = false;
        abort(&self.backend, &self.key, &self.upload_id).await;
    }
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (backend, key, id) = (
                self.backend.clone(),
                self.key.clone(),
                self.upload_id.clone(),
            );
            rt.spawn(async move { abort(&backend, &key, &id).await });
        }
    }
}

/// AbortMultipartUpload, retried like any request; best effort (a failure
/// leaves parts for the bucket's lifecycle rule to clean).
async fn abort(backend: &S3Backend, key: &str, upload_id: &str) {
    let inner = &backend.inner;
    let _ = inner
        .retrier
        .run(Some(inner.cfg.request_timeout), || async {
            inner
                .client
                .abort_multipart_upload()
                .bucket(&inner.cfg.bucket)
                .key(key)
                .upload_id(upload_id)
                .send()
                .await
                .map(|_| ())
                .map_err(Failure::from_sdk)
        })
        .await;
}

/// Part size for `len` bytes: the configured size, grown if needed to stay
/// within S3's 10 000 parts.
fn part_size(configured: usize, len: usize) -> usize {
    configured.max(MIN_PART_SIZE).max(len.div_ceil(MAX_PARTS))
}

pub(crate) async fn put(
    backend: &S3Backend,
    key: &str,
    data: Bytes,
    class: Option<StorageClass>,
    opts: &PutOptions,
    put_id: &str,
) -> StorageResult<()> {
    let inner = &backend.inner;
    let cfg = &inner.cfg;

    // 1. Cheap refusal before uploading megabytes for nothing.
    match inner.head_raw(key).await {
        Ok(_) => {
            return Err(StorageError::AlreadyExists {
                backend: inner.label.clone(),
                key: key.to_string(),
            })
        }
        Err(StorageError::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }

    // 2. Create.
    let out = inner
        .retrier
        .run(Some(cfg.request_timeout), || {
            let mut req = inner
                .client
                .create_multipart_upload()
                .bucket(&cfg.bucket)
                .key(key)
                .checksum_algorithm(ChecksumAlgorithm::Crc32C)
                .metadata(PUT_ID_META, put_id)
                .set_storage_class(class.clone());
            if let Some(r) = &opts.retention {
                req = req
                    .object_lock_mode(ObjectLockMode::from(r.mode.as_str()))
                    .object_lock_retain_until_date(aws_smithy_types::DateTime::from_secs(
                        r.until.timestamp(),
                    ));
            }
            if opts.legal_hold {
                req = req.object_lock_legal_hold_status(ObjectLockLegalHoldStatus::On);
            }
            async move { req.send().await.map_err(Failure::from_sdk) }
        })
        .await;
    // A lost answer to CreateMultipartUpload leaves an upload we never
    // learn the id of; after such a retry, abort any other upload of this
    // exact key (the key lock keeps this process's writers out of the way).
    let create_ambiguous = out.ambiguous;
    let upload_id = match &out.result {
        Ok(r) => match r.upload_id() {
            Some(id) => id.to_string(),
            None => {
                return Err(StorageError::Other {
                    backend: inner.label.clone(),
                    detail: format!("CreateMultipartUpload for {key} returned no upload id"),
                })
            }
        },
        Err(_) => {
            if create_ambiguous {
                abort_strays(backend, key, None).await;
            }
            return Err(inner.to_error(Op::Put, key, &out));
        }
    };
    let result = upload_and_complete(backend, key, data, opts, put_id, &upload_id).await;
    if create_ambiguous {
        abort_strays(backend, key, Some(&upload_id)).await;
    }
    result
}

/// Steps 3 and 4: parts, then the conditional Complete.
async fn upload_and_complete(
    backend: &S3Backend,
    key: &str,
    data: Bytes,
    opts: &PutOptions,
    put_id: &str,
    upload_id: &str,
) -> StorageResult<()> {
    let inner = &backend.inner;
    let cfg = &inner.cfg;
    let guard = AbortGuard {
        backend: backend.clone(),
        key: key.to_string(),
        upload_id: upload_id.to_string(),
        armed: true,
    };

    // 3. Parts, concurrently; the backend's semaphore bounds the requests.
    let size = part_size(cfg.multipart_part_size, data.len());
    let upload_id: Arc<str> = Arc::from(upload_id);
    let mut tasks = JoinSet::new();
    for (i, start) in (0..data.len()).step_by(size).enumerate() {
        let part = data.slice(start..(start + size).min(data.len()));
        let backend = backend.clone();
        let key = key.to_string();
        let upload_id = upload_id.clone();
        tasks.spawn(
            async move { upload_part(&backend, &key, &upload_id, i as i32 + 1, part).await },
        );
    }
    let mut parts = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let res = joined.unwrap_or_else(|e| {
            Err(StorageError::Other {
                backend: inner.label.clone(),
                detail: format!("upload of a part of {key} failed: {e}"),
            })
        });
        match res {
            Ok(p) => parts.push(p),
            Err(e) => {
                tasks.abort_all();
                guard.abort_now().await;
                return Err(e);
            }
        }
    }
    parts.sort_by_key(|p| p.part_number());

    // 4. Complete, atomically and only if the name is still free.
    let completed = CompletedMultipartUpload::builder()
        .set_parts(Some(parts))
        .build();
    let out = inner
        .retrier
        .run(Some(cfg.request_timeout), || {
            let req = inner
                .client
                .complete_multipart_upload()
                .bucket(&cfg.bucket)
                .key(key)
                .upload_id(&*upload_id)
                .multipart_upload(completed.clone())
                .if_none_match("*");
            async move { req.send().await.map(|_| ()).map_err(Failure::from_sdk) }
        })
        .await;
    if out.result.is_ok() {
        let mut guard = guard;
        guard.armed = false;
        return ensure_lock(backend, key, opts).await;
    }
    guard.abort_now().await;
    inner.finish_put(key, put_id, out).await
}

/// Abort every in-progress upload of exactly `key` except `ours`. Best effort.
async fn abort_strays(backend: &S3Backend, key: &str, ours: Option<&str>) {
    let inner = &backend.inner;
    let out = inner
        .retrier
        .run(Some(inner.cfg.request_timeout), || async {
            inner
                .client
                .list_multipart_uploads()
                .bucket(&inner.cfg.bucket)
                .prefix(key)
                .send()
                .await
                .map_err(Failure::from_sdk)
        })
        .await;
    let Ok(list) = out.result else {
        return;
    };
    for u in list.uploads() {
        match (u.key(), u.upload_id()) {
            (Some(k), Some(id)) if k == key && Some(id) != ours => abort(backend, key, id).await,
            _ => {}
        }
    }
}

/// Make sure the Object Lock settings asked for at creation are on the
/// completed object. S3 applies them from CreateMultipartUpload, but some
/// S3-compatible servers (moto among them) drop them there; a lock the
/// caller asked for must not silently be missing, so check and set it.
async fn ensure_lock(backend: &S3Backend, key: &str, opts: &PutOptions) -> StorageResult<()> {
    let inner = &backend.inner;
    if let Some(r) = opts.retention {
        inner.extend_retention_key(key, r).await?;
    }
    if opts.legal_hold {
        inner.set_legal_hold_key(key, true).await?;
    }
    Ok(())
}

async fn upload_part(
    backend: &S3Backend,
    key: &str,
    upload_id: &str,
    number: i32,
    part: Bytes,
) -> StorageResult<CompletedPart> {
    let inner = &backend.inner;
    let crc = crc32c_b64(&part);
    let out = inner
        .retrier
        .run(Some(inner.attempt_timeout(part.len() as u64)), || {
            let req = inner
                .client
                .upload_part()
                .bucket(&inner.cfg.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(part.clone()))
                .content_length(part.len() as i64)
                .checksum_algorithm(ChecksumAlgorithm::Crc32C)
                .checksum_crc32_c(&crc)
                // Unsigned body, CRC32C checked (see `backend::put`).
                .customize()
                .disable_payload_signing();
            async move { req.send().await.map_err(Failure::from_sdk) }
        })
        .await;
    match &out.result {
        Ok(r) => Ok(CompletedPart::builder()
            .part_number(number)
            .set_e_tag(r.e_tag().map(str::to_string))
            .checksum_crc32_c(crc)
            .build()),
        Err(_) => Err(inner.to_error(Op::Put, key, &out)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes_respect_s3_limits() {
        const MIB: usize = 1024 * 1024;
        assert_eq!(part_size(8 * MIB, 20 * MIB), 8 * MIB);
        assert_eq!(part_size(MIB, 20 * MIB), 5 * MIB);
        let huge = 200_000 * MIB;
        assert!(huge.div_ceil(part_size(8 * MIB, huge)) <= MAX_PARTS);
    }
}
