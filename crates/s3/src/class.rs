//! Storage class changes: [`holdfast_storage::Backend::set_storage_class`]
//! on S3, and listings with the class of every object.
//!
//! S3 changes an object's class only by writing it again, so the move is a
//! server-side `CopyObject` of the object onto its own key with the new
//! `StorageClass` and `MetadataDirective: COPY` (the bytes, the user
//! metadata and the checksum stay; nothing crosses the network). That is
//! atomic: until the copy completes, readers get the old object; after,
//! the new one with the same bytes.
//!
//! Object Lock: a copy is a new version and does not inherit the source's
//! lock, so the source's retention (when still in force) and legal hold
//! are read first (`HeadObject`) and set on the copy. On a versioned
//! bucket the copy leaves the previous version behind, still in the old
//! class and still billed: it is deleted, unless its own retention or
//! hold refuses (then it stays until that ends, and the caller is told).

use aws_sdk_s3::types::{
    ChecksumAlgorithm, MetadataDirective, ObjectLockLegalHoldStatus, ObjectLockMode, StorageClass,
};
use holdfast_storage::{ClassChange, StorageError, StorageResult};

use crate::backend::{Inner, Op};
use crate::failure::Failure;

/// Base64 MD5 of zero bytes.
const EMPTY_BODY_MD5: &str = "1B2M2Y8AsgTpgAEGKsAFfg==";

impl Inner {
    /// Move `key` into `class` (see the module docs).
    pub async fn set_class_key(&self, key: &str, class: &str) -> StorageResult<ClassChange> {
        let h = self.head_raw(key).await?;
        // S3 leaves the header out for STANDARD.
        let current = h.storage_class().map_or("STANDARD", |c| c.as_str());
        if current == class {
            return Ok(ClassChange::Unchanged);
        }
        let size = h.content_length().unwrap_or(0).max(0) as u64;
        let source_version = h.version_id().map(str::to_string);
        let mut source = format!("{}/{}", encode_source(&self.cfg.bucket), encode_source(key));
        // Copy exactly the version we looked at (versioned buckets).
        if let Some(v) = &source_version {
            source.push_str("?versionId=");
            source.push_str(&encode_source(v));
        }
        let now = chrono::Utc::now().timestamp();
        // A retention that has run out cannot be set again (S3 refuses a
        // retain-until in the past), and need not be.
        let retention = match (h.object_lock_mode(), h.object_lock_retain_until_date()) {
            (Some(m), Some(u)) if u.secs() > now => Some((m.clone(), *u)),
            _ => None,
        };
        let hold = h.object_lock_legal_hold_status() == Some(&ObjectLockLegalHoldStatus::On);
        let out = self
            .retrier
            .run(Some(self.attempt_timeout(size)), || {
                let mut req = self
                    .client
                    .copy_object()
                    .bucket(&self.cfg.bucket)
                    .key(key)
                    .copy_source(&source)
                    .metadata_directive(MetadataDirective::Copy)
                    .storage_class(StorageClass::from(class))
                    // A fresh full-object checksum of the copy (a multipart
                    // original's composite one no longer fits it), which
                    // whole-object reads verify. CRC32, not the CRC32C of
                    // puts: the server computes this one, and some
                    // S3-compatible servers (moto without its optional
                    // crc32c module) compute a wrong CRC32C.
                    .checksum_algorithm(ChecksumAlgorithm::Crc32);
                if let Some((mode, until)) = &retention {
                    req = req
                        .object_lock_mode(ObjectLockMode::from(mode.as_str()))
                        .object_lock_retain_until_date(*until);
                }
                if hold {
                    req = req.object_lock_legal_hold_status(ObjectLockLegalHoldStatus::On);
                }
                let locking = retention.is_some() || hold;
                async move {
                    if !locking {
                        return req.send().await.map_err(Failure::from_sdk);
                    }
                    // Writes that set a lock must carry an integrity header
                    // (some servers ask it of copies too); the copy request
                    // has an empty body, whose MD5 this is.
                    req.customize()
                        .mutate_request(|r| {
                            r.headers_mut().insert("Content-MD5", EMPTY_BODY_MD5);
                        })
                        .send()
                        .await
                        .map_err(Failure::from_sdk)
                }
            })
            .await;
        let new_version = match &out.result {
            Ok(o) => o.version_id().map(str::to_string),
            Err(_) => return Err(self.to_error(Op::Copy, key, &out)),
        };
        match (source_version, new_version) {
            (Some(old), Some(new)) if old != new => self.drop_previous_versions(key).await,
            _ => Ok(ClassChange::Moved),
        }
    }

    /// After a move on a versioned bucket: delete every version of `key`
    /// but the current one (copies in the old class, and a retried copy's
    /// extra version). Locked ones stay.
    async fn drop_previous_versions(&self, key: &str) -> StorageResult<ClassChange> {
        let (others, _current, _) = self.versions_of(key).await?;
        let mut kept = false;
        for v in &others {
            match self.delete_version(key, v).await {
                Ok(()) | Err(StorageError::NotFound { .. }) => {}
                Err(StorageError::Locked { .. }) => kept = true,
                Err(e) => return Err(e),
            }
        }
        Ok(if kept {
            ClassChange::MovedPreviousKept
        } else {
            ClassChange::Moved
        })
    }
}

/// Percent-encode a bucket, key or version for `x-amz-copy-source`: every
/// byte but unreserved characters and `/`.
fn encode_source(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::encode_source;

    #[test]
    fn copy_sources_are_percent_encoded() {
        assert_eq!(encode_source("repo/data/ab12"), "repo/data/ab12");
        assert_eq!(encode_source("my repo/+x"), "my%20repo/%2Bx");
        assert_eq!(encode_source("é"), "%C3%A9");
    }
}
