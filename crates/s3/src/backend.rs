//! [`S3Backend`]: the [`Backend`] trait over S3.
//!
//! Keys are `prefix + kind.key(name)`, the same layout as every other
//! backend. Writes are write-once through `If-None-Match: *` (a `412` is
//! [`StorageError::AlreadyExists`]), carry a CRC32C checksum (which Object
//! Lock buckets require and which S3 verifies), and switch to multipart
//! upload above [`S3Config::multipart_threshold`].
//!
//! Bodies are sent with an unsigned payload (`x-amz-content-sha256:
//! UNSIGNED-PAYLOAD`, as minio-go, restic's and kopia's client, does over
//! HTTPS; here over plain HTTP too): SigV4 would
//! otherwise hash every pack with SHA-256 before the first byte is sent,
//! about 20 ms per 16 MiB pack on the path to the commit. The signature
//! still covers the headers, the CRC32C among them, which the store
//! checks against the body; and every object is authenticated by its own
//! AEAD, so a body altered in transit is refused when read.
//!
//! Delete on a versioned bucket removes the object's *versions*, not just
//! the current one: a plain `DeleteObject` there only adds a delete marker,
//! which hides the object but keeps its bytes stored (and billed), and lets
//! garbage collection believe it reclaimed space it did not. Deleting each
//! version is what S3 Object Lock actually guards, so a locked object
//! answers [`StorageError::Locked`] and stays readable; an unlocked one is
//! really gone. Non-current versions and delete markers go first, the
//! current version last, so a refused delete leaves the object intact.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketVersioningStatus, ChecksumAlgorithm, ChecksumMode, GlacierJobParameters,
    ObjectLockEnabled, ObjectLockLegalHold, ObjectLockLegalHoldStatus, ObjectLockMode,
    ObjectLockRetention, ObjectLockRetentionMode, RestoreRequest, StorageClass, Tier,
};
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, TimeZone, Utc};
use holdfast_storage::{
    ArchiveState, Backend, Capabilities, ClassChange, ClassedObject, LockMode, ObjectKind,
    ObjectMeta, PutOptions, Retention, StorageError, StorageResult,
};
use tokio::sync::OnceCell;

use crate::config::S3Config;
use crate::failure::{Failure, FailureKind};
use crate::keylock::KeyLocks;
use crate::retry::{Outcome, Retrier};

/// User metadata naming the write that created an object, so that a put
/// whose success answer was lost can recognise its own object on retry.
pub(crate) const PUT_ID_META: &str = "holdfast-put-id";

/// Attempts of the reachability probe in [`S3Backend::connect`]: a wrong
/// endpoint should be reported in about a second, not after a full backoff.
const PROBE_ATTEMPTS: u32 = 3;

/// An S3 bucket (or a prefix of one) holding one repository.
///
/// Cheap to clone; clones share the client, the connection pool and the
/// bound on requests in flight.
#[derive(Clone)]
pub struct S3Backend {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub client: Client,
    pub cfg: S3Config,
    pub label: String,
    pub retrier: Retrier,
    /// Bucket versioning is (or was) enabled: deletes remove versions.
    pub versioned: AtomicBool,
    /// Object Lock on the bucket, as seen at connect (unset: could not tell).
    pub lock_enabled: std::sync::OnceLock<bool>,
    /// Cached success of [`S3Backend::check_lock_ready`].
    pub lock_ready: OnceCell<()>,
    /// Concurrent puts of one key in this process queue up.
    pub writing: KeyLocks,
}

impl std::fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Backend")
            .field("location", &self.inner.label)
            .field("endpoint", &self.inner.cfg.endpoint_label())
            .field("versioned", &self.inner.versioned.load(Ordering::Relaxed))
            .field("lock_enabled", &self.inner.lock_enabled.get())
            .finish()
    }
}

/// What an operation was doing, to give a failure its meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Put,
    Get,
    Head,
    List,
    Delete,
    Retention,
    LegalHold,
    Restore,
    Copy,
    Bucket,
}

impl S3Backend {
    /// Connect to the bucket named in `cfg` and check that it is there and
    /// reachable (`HeadBucket`). Errors say what to fix: a missing bucket
    /// ([`StorageError::Config`], naming it and saying to create it), an
    /// unreachable endpoint (`Config`, naming the endpoint), refused
    /// credentials ([`StorageError::PermissionDenied`]). With
    /// `require_object_lock`, also [`S3Backend::check_lock_ready`].
    pub async fn connect(cfg: S3Config) -> Result<S3Backend, StorageError> {
        Ok(S3Backend::connect_with(cfg, |_| async {}).await?.0)
    }

    /// Connect as [`S3Backend::connect`] does and, while the bucket is
    /// being checked, run `first` on the new backend: the caller's first
    /// reads (a repository's config and key listing, say), so that on a WAN
    /// link opening costs one round trip instead of two. `first` must only
    /// read (what the bucket's versioning means for deletes is not known
    /// yet). Its output is returned only when the checks pass, so that a
    /// missing bucket or a refused credential is explained by the check,
    /// not by whatever `first` made of it.
    pub async fn connect_with<T, F, Fut>(
        cfg: S3Config,
        first: F,
    ) -> Result<(S3Backend, T), StorageError>
    where
        F: FnOnce(S3Backend) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        cfg.validate()?;
        let client = crate::client::build(&cfg).await?;
        let inner = Inner {
            client,
            label: cfg.location(),
            retrier: Retrier::new(
                cfg.max_attempts,
                cfg.base_backoff,
                cfg.max_backoff,
                cfg.parallelism,
            ),
            cfg,
            versioned: AtomicBool::new(false),
            lock_enabled: std::sync::OnceLock::new(),
            lock_ready: OnceCell::new(),
            writing: KeyLocks::default(),
        };
        let backend = S3Backend {
            inner: Arc::new(inner),
        };
        // Independent questions, asked at once: on a WAN link each round
        // trip is most of what opening a repository costs. The probe's
        // error (missing bucket, denied) is the one that explains a failure.
        let inner = &backend.inner;
        let (probe, versioning, lock, out) = tokio::join!(
            inner.probe_bucket(),
            inner.bucket_versioning(),
            inner.bucket_lock_enabled(),
            first(backend.clone())
        );
        probe?;
        inner
            .versioned
            .store(matches!(versioning, Ok(Some(_))), Ordering::Relaxed);
        if let Ok(on) = lock {
            let _ = inner.lock_enabled.set(on);
        }
        if backend.inner.cfg.require_object_lock {
            backend.check_lock_ready().await?;
        }
        Ok((backend, out))
    }

    /// The configuration this backend runs with.
    pub fn config(&self) -> &S3Config {
        &self.inner.cfg
    }

    /// Whether deletes remove object versions (the bucket is versioned).
    pub fn is_versioned(&self) -> bool {
        self.inner.versioned.load(Ordering::Relaxed)
    }

    /// Check that Object Lock can be used: the bucket must be versioned and
    /// have Object Lock enabled. Errors say which of the two is missing and
    /// how to get a bucket that has both (Object Lock can only be turned on
    /// at bucket creation on most stores).
    pub async fn check_lock_ready(&self) -> StorageResult<()> {
        self.inner.check_lock_ready().await
    }

    /// Poll [`Backend::archive_state`] every `poll` until the object is
    /// readable, for at most `max_wait`. Returns how long it waited. An
    /// object that is archived with no restore requested is an error
    /// ([`StorageError::Archived`]): call [`Backend::restore_archived`] first,
    /// or use [`S3Backend::restore_and_wait`].
    pub async fn wait_until_readable(
        &self,
        kind: ObjectKind,
        name: &str,
        poll: Duration,
        max_wait: Duration,
    ) -> StorageResult<Duration> {
        let start = Instant::now();
        loop {
            match self.archive_state(kind, name).await? {
                ArchiveState::Readable => return Ok(start.elapsed()),
                ArchiveState::Archived => {
                    return Err(StorageError::Archived {
                        key: self.inner.key(kind, name),
                    })
                }
                ArchiveState::Restoring => {}
            }
            if start.elapsed() + poll > max_wait {
                return Err(StorageError::Transient {
                    backend: self.inner.label.clone(),
                    key: self.inner.key(kind, name),
                    detail: format!(
                        "restore from the archive still in progress after {:?}",
                        start.elapsed()
                    ),
                });
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Request a restore (if needed) and wait until the object is readable.
    /// Returns how long the object took to become readable.
    pub async fn restore_and_wait(
        &self,
        kind: ObjectKind,
        name: &str,
        days: u32,
        poll: Duration,
        max_wait: Duration,
    ) -> StorageResult<Duration> {
        let start = Instant::now();
        if self.archive_state(kind, name).await? == ArchiveState::Archived {
            self.restore_archived(kind, name, days).await?;
        }
        let left = max_wait.saturating_sub(start.elapsed());
        self.wait_until_readable(kind, name, poll, left).await?;
        Ok(start.elapsed())
    }
}

impl Inner {
    pub fn key(&self, kind: ObjectKind, name: &str) -> String {
        format!("{}{}", self.cfg.prefix, kind.key(name))
    }

    pub fn config_error(&self, detail: String) -> StorageError {
        StorageError::Config {
            backend: self.label.clone(),
            detail,
        }
    }

    /// Attempt timeout for a request carrying `body` bytes.
    pub fn attempt_timeout(&self, body: u64) -> Duration {
        self.cfg.request_timeout
            + Duration::from_secs_f64(body as f64 / self.cfg.min_throughput as f64)
    }

    /// Storage class for a new object of `kind`.
    pub fn storage_class(&self, kind: ObjectKind, opts: &PutOptions) -> Option<StorageClass> {
        let class = opts.storage_class.as_deref().or(match kind {
            // Packs of trees are metadata: listing and planning must never
            // wait for a retrieval from an archival class.
            ObjectKind::Pack if !opts.metadata => self.cfg.storage_class_data.as_deref(),
            _ => self.cfg.storage_class_meta.as_deref(),
        })?;
        Some(StorageClass::from(class))
    }

    /// Turn the final failure of an operation on `key` into a StorageError.
    pub fn to_error<T>(&self, op: Op, key: &str, out: &Outcome<T>) -> StorageError {
        let backend = self.label.clone();
        let f = match &out.result {
            Err(f) => f,
            Ok(_) => {
                return StorageError::Other {
                    backend,
                    detail: format!("{op:?} {key}: internal error (success mapped as failure)"),
                }
            }
        };
        let key = key.to_string();
        let retried = if out.attempts > 1 {
            format!(
                " (gave up after {} attempts in {:.1?})",
                out.attempts, out.elapsed
            )
        } else {
            String::new()
        };
        if f.retryable() {
            return StorageError::Transient {
                backend,
                key,
                detail: format!("{f}{retried}"),
            };
        }
        match f.kind {
            FailureKind::Credentials => {
                return StorageError::PermissionDenied {
                    backend,
                    key,
                    detail: format!(
                        "no usable AWS credentials ({}): set AWS_ACCESS_KEY_ID and \
                         AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run with an IAM role",
                        f.detail
                    ),
                }
            }
            FailureKind::Construction => {
                return StorageError::Other {
                    backend,
                    detail: format!("cannot build the request for {key}: {}", f.detail),
                }
            }
            _ => {}
        }
        if f.is_no_such_bucket() {
            return self.config_error(format!(
                "bucket {} does not exist at {} (it was there at connect: was it deleted?)",
                self.cfg.bucket,
                self.cfg.endpoint_label()
            ));
        }
        // A read, or a copy whose source, is in an archival class and not
        // retrieved (S3 answers a copy with ObjectNotInActiveTierError).
        if (f.code_is("InvalidObjectState") || f.code_is("ObjectNotInActiveTierError"))
            && matches!(op, Op::Get | Op::Copy)
        {
            return StorageError::Archived { key };
        }
        match f.status {
            Some(404) => StorageError::NotFound { backend, key },
            Some(412) if op == Op::Put => StorageError::AlreadyExists { backend, key },
            Some(403) => StorageError::PermissionDenied {
                backend,
                key,
                detail: format!(
                    "{f}: check the credentials and that the bucket or IAM policy allows \
                     this {op:?} operation"
                ),
            },
            _ => StorageError::Other {
                backend,
                detail: format!("{op:?} {key}: {f}{retried}"),
            },
        }
    }

    /// HeadBucket, with errors phrased for a user setting up a repository.
    async fn probe_bucket(&self) -> StorageResult<()> {
        let bucket = &self.cfg.bucket;
        let endpoint = self.cfg.endpoint_label();
        let mut attempt = || async {
            self.client
                .head_bucket()
                .bucket(bucket)
                .send()
                .await
                .map(|_| ())
                .map_err(Failure::from_sdk)
        };
        let mut out = self
            .retrier
            .run_limited(
                PROBE_ATTEMPTS.min(self.cfg.max_attempts),
                Some(self.cfg.request_timeout),
                &mut attempt,
            )
            .await;
        // A server that answers 5xx (500, 503 SlowDown) is reachable: the
        // quick give-up is for wrong endpoints, so such a server gets the
        // attempts every other request gets.
        let server_busy = matches!(&out.result, Err(f) if f.status.is_some_and(|c| c >= 500));
        let rest = self.cfg.max_attempts.saturating_sub(PROBE_ATTEMPTS);
        if server_busy && rest > 0 {
            out = self
                .retrier
                .run_limited(rest, Some(self.cfg.request_timeout), &mut attempt)
                .await;
        }
        let f = match &out.result {
            Ok(()) => return Ok(()),
            Err(f) => f.clone(),
        };
        let err = match (f.kind, f.status) {
            // Transient (exit 6, retried by the daemon): a server that is
            // down now may be up at the next run.
            (FailureKind::Network | FailureKind::Timeout | FailureKind::Response, _) => {
                StorageError::Transient {
                    backend: self.label.clone(),
                    key: format!("bucket {bucket}"),
                    detail: format!(
                        "cannot reach the S3 endpoint {endpoint}: {}; check \
                         HOLDFAST_S3_ENDPOINT, that the server is running, and the network",
                        f.detail
                    ),
                }
            }
            (_, Some(404)) => self.config_error(format!(
                "bucket {bucket} does not exist at {endpoint}; create it first (with Object \
                 Lock enabled if you want retention), or fix the bucket name in the URL"
            )),
            (_, Some(301 | 307 | 400)) if f.bucket_region.is_some() => {
                let region = f.bucket_region.as_deref().unwrap_or("?");
                self.config_error(format!(
                    "bucket {bucket} is in region {region}, not {}; set AWS_REGION={region}",
                    self.cfg.region
                ))
            }
            (FailureKind::Service, Some(403)) => StorageError::PermissionDenied {
                backend: self.label.clone(),
                key: format!("bucket {bucket}"),
                detail: format!(
                    "access to bucket {bucket} at {endpoint} was refused ({f}); check the \
                     credentials (AWS_ACCESS_KEY_ID/AWS_PROFILE/role) and that the bucket \
                     policy or IAM policy grants s3:ListBucket, s3:GetObject, s3:PutObject \
                     and s3:DeleteObject on it"
                ),
            },
            _ => self.to_error(Op::Bucket, &format!("bucket {bucket}"), &out),
        };
        Err(err)
    }

    /// `None`: versioning never enabled.
    async fn bucket_versioning(&self) -> StorageResult<Option<BucketVersioningStatus>> {
        let bucket = &self.cfg.bucket;
        let out = self
            .retrier
            .run(Some(self.cfg.request_timeout), || async {
                self.client
                    .get_bucket_versioning()
                    .bucket(bucket)
                    .send()
                    .await
                    .map_err(Failure::from_sdk)
            })
            .await;
        match &out.result {
            Ok(v) => Ok(v.status().cloned()),
            // A 200 the SDK could not parse (moto, for one, names the root
            // element GetBucketVersioningResponse): read the status ourselves.
            Err(f) if f.status == Some(200) && f.raw_body.is_some() => {
                let body = f.raw_body.as_deref().unwrap_or("");
                Ok(if body.contains("<Status>Enabled</Status>") {
                    Some(BucketVersioningStatus::Enabled)
                } else if body.contains("<Status>Suspended</Status>") {
                    Some(BucketVersioningStatus::Suspended)
                } else {
                    None
                })
            }
            Err(_) => Err(self.to_error(Op::Bucket, &format!("bucket {bucket}"), &out)),
        }
    }

    async fn bucket_lock_enabled(&self) -> StorageResult<bool> {
        let bucket = &self.cfg.bucket;
        let out = self
            .retrier
            .run(Some(self.cfg.request_timeout), || async {
                self.client
                    .get_object_lock_configuration()
                    .bucket(bucket)
                    .send()
                    .await
                    .map_err(Failure::from_sdk)
            })
            .await;
        match out.result {
            Ok(v) => Ok(v
                .object_lock_configuration()
                .and_then(|c| c.object_lock_enabled())
                == Some(&ObjectLockEnabled::Enabled)),
            Err(f)
                if f.code_is("ObjectLockConfigurationNotFoundError")
                    || (f.status == Some(404) && !f.is_no_such_bucket()) =>
            {
                Ok(false)
            }
            Err(_) => Err(self.to_error(Op::Bucket, &format!("bucket {bucket}"), &out)),
        }
    }

    /// HeadObject, raw.
    pub async fn head_raw(
        &self,
        key: &str,
    ) -> Result<aws_sdk_s3::operation::head_object::HeadObjectOutput, StorageError> {
        let out = self
            .retrier
            .run(Some(self.cfg.request_timeout), || async {
                self.client
                    .head_object()
                    .bucket(&self.cfg.bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(Failure::from_sdk)
            })
            .await;
        match out.result {
            Ok(h) => Ok(h),
            Err(_) => Err(self.to_error(Op::Head, key, &out)),
        }
    }

    /// Was the object at `key` written by the put that carried `put_id`?
    pub async fn written_by(&self, key: &str, put_id: &str) -> bool {
        match self.head_raw(key).await {
            Ok(h) => h
                .metadata()
                .and_then(|m| m.get(PUT_ID_META))
                .is_some_and(|v| v == put_id),
            Err(_) => false,
        }
    }

    async fn put_single(
        &self,
        key: &str,
        data: Bytes,
        class: Option<StorageClass>,
        opts: &PutOptions,
        put_id: &str,
    ) -> StorageResult<()> {
        let crc = crc32c_b64(&data);
        let timeout = self.attempt_timeout(data.len() as u64);
        let out = self
            .retrier
            .run(Some(timeout), || {
                let mut req = self
                    .client
                    .put_object()
                    .bucket(&self.cfg.bucket)
                    .key(key)
                    .body(ByteStream::from(data.clone()))
                    .content_length(data.len() as i64)
                    .if_none_match("*")
                    .checksum_algorithm(ChecksumAlgorithm::Crc32C)
                    .checksum_crc32_c(&crc)
                    .metadata(PUT_ID_META, put_id)
                    .set_storage_class(class.clone());
                req = apply_lock(req, opts);
                // The body is not hashed for the signature (see the
                // module doc): its CRC32C, a signed header, is checked
                // by the store.
                let req = req.customize().disable_payload_signing();
                async move { req.send().await.map(|_| ()).map_err(Failure::from_sdk) }
            })
            .await;
        self.finish_put(key, put_id, out).await
    }

    /// Map the outcome of a write, recognising our own write behind a 412
    /// that follows a lost answer.
    pub async fn finish_put(&self, key: &str, put_id: &str, out: Outcome<()>) -> StorageResult<()> {
        match out.result {
            Ok(()) => Ok(()),
            Err(ref f) => {
                if f.status == Some(412) && out.ambiguous && self.written_by(key, put_id).await {
                    return Ok(());
                }
                if f.code_is("InvalidRequest")
                    && f.message
                        .as_deref()
                        .is_some_and(|m| m.to_ascii_lowercase().contains("object lock"))
                {
                    self.check_lock_ready().await?;
                }
                Err(self.to_error(Op::Put, key, &out))
            }
        }
    }

    /// See [`S3Backend::check_lock_ready`].
    pub async fn check_lock_ready(&self) -> StorageResult<()> {
        let inner = self;
        inner
            .lock_ready
            .get_or_try_init(|| async {
                let bucket = &inner.cfg.bucket;
                let how = format!(
                    "create the bucket with Object Lock enabled (e.g. `aws s3api create-bucket \
                     --bucket {bucket} --object-lock-enabled-for-bucket`), which also enables \
                     versioning"
                );
                match inner.bucket_versioning().await? {
                    Some(BucketVersioningStatus::Enabled) => {}
                    other => {
                        let state = match other {
                            Some(s) => format!("versioning is {}", s.as_str()),
                            None => "versioning was never enabled".to_string(),
                        };
                        return Err(inner.config_error(format!(
                            "Object Lock was requested but bucket {bucket} is not versioned \
                             ({state}) and has no Object Lock; {how}"
                        )));
                    }
                }
                if !inner.bucket_lock_enabled().await? {
                    return Err(inner.config_error(format!(
                        "Object Lock was requested but bucket {bucket} does not have Object \
                         Lock enabled (it is versioned, but that is not enough); {how}"
                    )));
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// All versions and delete markers of exactly `key`, oldest-first order
    /// of deletion: non-current ones first, the current version last.
    pub(crate) async fn versions_of(
        &self,
        key: &str,
    ) -> StorageResult<(Vec<String>, Option<String>, bool)> {
        let mut others = Vec::new();
        let mut current = None;
        let mut has_data = false;
        let mut key_marker: Option<String> = None;
        let mut version_marker: Option<String> = None;
        loop {
            let (km, vm) = (key_marker.clone(), version_marker.clone());
            let out = self
                .retrier
                .run(Some(self.cfg.request_timeout), || {
                    let req = self
                        .client
                        .list_object_versions()
                        .bucket(&self.cfg.bucket)
                        .prefix(key)
                        .set_key_marker(km.clone())
                        .set_version_id_marker(vm.clone());
                    async move { req.send().await.map_err(Failure::from_sdk) }
                })
                .await;
            let page = match out.result {
                Ok(p) => p,
                Err(_) => {
                    return Err(self.to_error(Op::Delete, key, &out));
                }
            };
            for v in page.versions() {
                if v.key() != Some(key) {
                    continue;
                }
                let id = v.version_id().unwrap_or("null").to_string();
                has_data = true;
                if v.is_latest() == Some(true) {
                    current = Some(id);
                } else {
                    others.push(id);
                }
            }
            for m in page.delete_markers() {
                if m.key() != Some(key) {
                    continue;
                }
                others.push(m.version_id().unwrap_or("null").to_string());
            }
            if page.is_truncated() == Some(true) {
                key_marker = page.next_key_marker().map(str::to_string);
                version_marker = page.next_version_id_marker().map(str::to_string);
                if key_marker.is_none() && version_marker.is_none() {
                    break;
                }
            } else {
                break;
            }
        }
        Ok((others, current, has_data))
    }

    /// Delete one version; AccessDenied becomes Locked when the version is
    /// under retention or legal hold.
    pub(crate) async fn delete_version(&self, key: &str, version: &str) -> StorageResult<()> {
        let out = self
            .retrier
            .run(Some(self.cfg.request_timeout), || async {
                self.client
                    .delete_object()
                    .bucket(&self.cfg.bucket)
                    .key(key)
                    .version_id(version)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(Failure::from_sdk)
            })
            .await;
        match out.result {
            Ok(()) => Ok(()),
            Err(ref f) if f.is_access_denied() => {
                if self.version_is_locked(key, version, f).await {
                    Err(StorageError::Locked {
                        key: key.to_string(),
                    })
                } else {
                    Err(self.to_error(Op::Delete, key, &out))
                }
            }
            Err(ref f) if f.is_not_found() && out.ambiguous => Ok(()),
            Err(_) => Err(self.to_error(Op::Delete, key, &out)),
        }
    }

    /// After an AccessDenied on a delete: is the version under Object Lock?
    /// Read from HeadObject (which reports lock mode, retain-until and legal
    /// hold), as GetObjectRetention is missing on some S3-compatible servers.
    async fn version_is_locked(&self, key: &str, version: &str, denied: &Failure) -> bool {
        let mut req = self.client.head_object().bucket(&self.cfg.bucket).key(key);
        if version != "null" {
            req = req.version_id(version);
        }
        match req.send().await {
            Ok(h) => {
                h.object_lock_legal_hold_status() == Some(&ObjectLockLegalHoldStatus::On)
                    || h.object_lock_retain_until_date()
                        .is_some_and(|d| d.secs() > Utc::now().timestamp())
            }
            // Could not read the lock state: trust the server's words.
            Err(_) => denied
                .message
                .as_deref()
                .is_some_and(|m| m.to_ascii_lowercase().contains("object lock")),
        }
    }

    async fn delete_versions(&self, key: &str) -> StorageResult<()> {
        let (others, current, has_data) = self.versions_of(key).await?;
        if !has_data && others.is_empty() {
            return Err(StorageError::NotFound {
                backend: self.label.clone(),
                key: key.to_string(),
            });
        }
        for v in &others {
            self.delete_version(key, v).await?;
        }
        if let Some(v) = &current {
            self.delete_version(key, v).await?;
        }
        if !has_data {
            // Only delete markers were left: the object was already gone.
            return Err(StorageError::NotFound {
                backend: self.label.clone(),
                key: key.to_string(),
            });
        }
        Ok(())
    }

    /// DeleteObject in an unversioned bucket. It succeeds on missing keys;
    /// `delete`'s contract wants NotFound, so with `must_exist` a HeadObject
    /// asks first (`remove` does without).
    async fn delete_plain(&self, key: &str, must_exist: bool) -> StorageResult<()> {
        if must_exist {
            self.head_raw(key).await?;
        }
        let out = self
            .retrier
            .run(Some(self.cfg.request_timeout), || async {
                self.client
                    .delete_object()
                    .bucket(&self.cfg.bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(Failure::from_sdk)
            })
            .await;
        match out.result {
            Ok(r) if r.delete_marker() == Some(true) => {
                // The bucket is versioned after all (enabled since connect, or
                // unreadable then): that only hid the object. Remove its
                // versions, our delete marker included.
                self.versioned.store(true, Ordering::Relaxed);
                match self.delete_versions(key).await {
                    Ok(()) | Err(StorageError::NotFound { .. }) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Ok(_) => Ok(()),
            Err(ref f) if f.is_access_denied() => {
                if self.version_is_locked(key, "null", f).await {
                    Err(StorageError::Locked {
                        key: key.to_string(),
                    })
                } else {
                    Err(self.to_error(Op::Delete, key, &out))
                }
            }
            Err(_) => Err(self.to_error(Op::Delete, key, &out)),
        }
    }

    /// The object's current retention, read from HeadObject (see
    /// [`Inner::version_is_locked`] for why not GetObjectRetention).
    async fn current_retention(&self, key: &str) -> StorageResult<Option<Retention>> {
        let h = self.head_raw(key).await?;
        let mode = match h.object_lock_mode() {
            Some(ObjectLockMode::Compliance) => LockMode::Compliance,
            Some(ObjectLockMode::Governance) => LockMode::Governance,
            _ => return Ok(None),
        };
        let Some(until) = h.object_lock_retain_until_date() else {
            return Ok(None);
        };
        let until = Utc
            .timestamp_opt(until.secs(), 0)
            .single()
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        Ok(Some(Retention { mode, until }))
    }

    /// Extend (never shorten) the retention of `key`.
    pub async fn extend_retention_key(&self, key: &str, retention: Retention) -> StorageResult<()> {
        let inner = self;
        let key = key.to_string();
        let current = inner.current_retention(&key).await?;
        let wanted = match current {
            None => retention,
            Some(cur) => Retention {
                mode: if cur.mode == LockMode::Compliance || retention.mode == LockMode::Compliance
                {
                    LockMode::Compliance
                } else {
                    LockMode::Governance
                },
                until: cur.until.max(retention.until),
            },
        };
        let same =
            |c: Retention| c.mode == wanted.mode && c.until.timestamp() >= wanted.until.timestamp();
        if current.is_some_and(same) {
            return Ok(()); // already at least as long and as strict
        }
        let body = ObjectLockRetention::builder()
            .mode(ObjectLockRetentionMode::from(wanted.mode.as_str()))
            .retain_until_date(s3_date(wanted.until))
            .build();
        let out = inner
            .retrier
            .run(Some(inner.cfg.request_timeout), || async {
                inner
                    .client
                    .put_object_retention()
                    .bucket(&inner.cfg.bucket)
                    .key(&key)
                    .retention(body.clone())
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(Failure::from_sdk)
            })
            .await;
        match out.result {
            Ok(()) => Ok(()),
            Err(_) => Err(inner.to_error(Op::Retention, &key, &out)),
        }
    }

    /// Place or release the legal hold of `key`.
    pub async fn set_legal_hold_key(&self, key: &str, on: bool) -> StorageResult<()> {
        let inner = self;
        let key = key.to_string();
        let status = if on {
            ObjectLockLegalHoldStatus::On
        } else {
            ObjectLockLegalHoldStatus::Off
        };
        let hold = ObjectLockLegalHold::builder().status(status).build();
        let out = inner
            .retrier
            .run(Some(inner.cfg.request_timeout), || async {
                inner
                    .client
                    .put_object_legal_hold()
                    .bucket(&inner.cfg.bucket)
                    .key(&key)
                    .legal_hold(hold.clone())
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(Failure::from_sdk)
            })
            .await;
        match out.result {
            Ok(()) => Ok(()),
            Err(ref f) if f.code_is("InvalidRequest") => {
                inner.check_lock_ready().await?;
                Err(inner.to_error(Op::LegalHold, &key, &out))
            }
            Err(_) => Err(inner.to_error(Op::LegalHold, &key, &out)),
        }
    }
}

/// Base64 CRC32C of `data`, as S3 expects in `x-amz-checksum-crc32c`.
pub(crate) fn crc32c_b64(data: &[u8]) -> String {
    let mut h = aws_smithy_checksums::ChecksumAlgorithm::Crc32c.into_impl();
    h.update(data);
    aws_smithy_types::base64::encode(h.finalize())
}

fn s3_date(t: DateTime<Utc>) -> aws_smithy_types::DateTime {
    // Whole seconds: some servers parse the date without fractions.
    aws_smithy_types::DateTime::from_secs(t.timestamp())
}

/// Add Object Lock headers to a write request.
/// An S3 timestamp (`LastModified`, whole seconds on AWS) as chrono's.
fn from_s3_date(t: &aws_smithy_types::DateTime) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(t.secs(), t.subsec_nanos()).single()
}

pub(crate) fn apply_lock(
    mut req: aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder,
    opts: &PutOptions,
) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
    if let Some(r) = &opts.retention {
        req = req
            .object_lock_mode(ObjectLockMode::from(r.mode.as_str()))
            .object_lock_retain_until_date(s3_date(r.until));
    }
    if opts.legal_hold {
        req = req.object_lock_legal_hold_status(ObjectLockLegalHoldStatus::On);
    }
    req
}

/// Parse the total size out of `Content-Range: bytes a-b/size` or `bytes */size`.
fn range_total(cr: Option<&str>) -> Option<u64> {
    cr?.rsplit_once('/')?.1.trim().parse().ok()
}

fn is_archive_class(c: Option<&StorageClass>) -> bool {
    matches!(
        c,
        Some(StorageClass::Glacier) | Some(StorageClass::DeepArchive)
    )
}

#[async_trait]
impl Backend for S3Backend {
    fn location(&self) -> String {
        self.inner.label.clone()
    }

    /// Retention and legal hold are reported as available when the bucket
    /// had Object Lock at connect (or its state could not be read, in which
    /// case a write with retention reports precisely what is missing).
    fn capabilities(&self) -> Capabilities {
        let lock = self.inner.lock_enabled.get().copied().unwrap_or(true);
        Capabilities {
            retention: lock,
            legal_hold: lock,
            storage_classes: true,
            archive_restore: true,
            parallelism: self.inner.cfg.parallelism,
        }
    }

    async fn put(
        &self,
        kind: ObjectKind,
        name: &str,
        data: Bytes,
        opts: &PutOptions,
    ) -> StorageResult<()> {
        let inner = &self.inner;
        let key = inner.key(kind, name);
        if opts.retention.is_some() || opts.legal_hold {
            self.check_lock_ready().await?;
        }
        let class = inner.storage_class(kind, opts);
        let _writing = inner.writing.lock(&key).await;
        let put_id = format!("{:032x}", rand::random::<u128>());
        if data.len() > inner.cfg.multipart_threshold {
            crate::multipart::put(self, &key, data, class, opts, &put_id).await
        } else {
            inner.put_single(&key, data, class, opts, &put_id).await
        }
    }

    async fn get(
        &self,
        kind: ObjectKind,
        name: &str,
        range: Option<Range<u64>>,
    ) -> StorageResult<Bytes> {
        let inner = &self.inner;
        let key = inner.key(kind, name);
        if let Some(r) = &range {
            // S3 cannot express an empty or inverted range: answer from the size.
            if r.start >= r.end {
                let size = self.head(kind, name).await?.size;
                if r.start == r.end && r.end <= size {
                    return Ok(Bytes::new());
                }
                return Err(StorageError::InvalidRange {
                    key,
                    start: r.start,
                    end: r.end,
                    size,
                });
            }
        }
        let idle = inner.cfg.request_timeout;
        let out = inner
            .retrier
            .run(None, || {
                let mut req = inner
                    .client
                    .get_object()
                    .bucket(&inner.cfg.bucket)
                    .key(&key);
                req = match &range {
                    Some(r) => req.range(format!("bytes={}-{}", r.start, r.end - 1)),
                    // Whole objects: have the SDK verify the stored checksum.
                    None => req.checksum_mode(ChecksumMode::Enabled),
                };
                async move {
                    let resp = match tokio::time::timeout(idle, req.send()).await {
                        Ok(r) => r.map_err(Failure::from_sdk)?,
                        Err(_) => {
                            return Err(Failure::local(
                                FailureKind::Timeout,
                                format!("no response headers within {idle:?}"),
                            ))
                        }
                    };
                    let total = range_total(resp.content_range());
                    let expect = resp.content_length().unwrap_or(0).max(0) as usize;
                    let mut body = resp.body;
                    let mut buf = BytesMut::with_capacity(expect);
                    loop {
                        match tokio::time::timeout(idle, body.next()).await {
                            Ok(Some(Ok(chunk))) => buf.extend_from_slice(&chunk),
                            Ok(Some(Err(e))) => {
                                return Err(Failure::local(
                                    FailureKind::Network,
                                    format!("reading the body: {e}"),
                                ))
                            }
                            Ok(None) => break,
                            Err(_) => {
                                return Err(Failure::local(
                                    FailureKind::Timeout,
                                    format!("body stalled for {idle:?}"),
                                ))
                            }
                        }
                    }
                    Ok((buf.freeze(), total))
                }
            })
            .await;
        match out.result {
            Ok((data, total)) => {
                if let Some(r) = &range {
                    if data.len() as u64 != r.end - r.start {
                        // S3 answers a range running past the end with the
                        // bytes it has: that is an invalid range, not data.
                        let size = match total {
                            Some(s) => s,
                            None => self.head(kind, name).await?.size,
                        };
                        return Err(StorageError::InvalidRange {
                            key,
                            start: r.start,
                            end: r.end,
                            size,
                        });
                    }
                }
                Ok(data)
            }
            Err(ref f) if f.status == Some(416) => {
                let r = range.unwrap_or(0..0);
                let size = match range_total(f.content_range.as_deref()) {
                    Some(s) => s,
                    None => self.head(kind, name).await?.size,
                };
                Err(StorageError::InvalidRange {
                    key,
                    start: r.start,
                    end: r.end,
                    size,
                })
            }
            Err(_) => Err(inner.to_error(Op::Get, &key, &out)),
        }
    }

    async fn head(&self, kind: ObjectKind, name: &str) -> StorageResult<ObjectMeta> {
        let key = self.inner.key(kind, name);
        let h = self.inner.head_raw(&key).await?;
        Ok(ObjectMeta {
            kind,
            name: name.to_string(),
            size: h.content_length().unwrap_or(0).max(0) as u64,
            modified: h.last_modified().and_then(from_s3_date),
        })
    }

    async fn list(&self, kind: ObjectKind) -> StorageResult<Vec<ObjectMeta>> {
        Ok(self
            .list_classes(kind)
            .await?
            .into_iter()
            .map(|o| o.meta)
            .collect())
    }

    async fn list_classes(&self, kind: ObjectKind) -> StorageResult<Vec<ClassedObject>> {
        let inner = &self.inner;
        let prefix = &inner.cfg.prefix;
        let list_prefix = match kind {
            ObjectKind::Config => format!("{prefix}config"),
            other => format!("{prefix}{}/", other.dir()),
        };
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let tok = token.clone();
            let out = inner
                .retrier
                .run(Some(inner.cfg.request_timeout), || {
                    let req = inner
                        .client
                        .list_objects_v2()
                        .bucket(&inner.cfg.bucket)
                        .prefix(&list_prefix)
                        .set_continuation_token(tok.clone());
                    async move { req.send().await.map_err(Failure::from_sdk) }
                })
                .await;
            let page = match out.result {
                Ok(p) => p,
                Err(_) => {
                    return Err(inner.to_error(Op::List, &list_prefix, &out));
                }
            };
            for obj in page.contents() {
                let Some(rel) = obj.key().and_then(|k| k.strip_prefix(prefix.as_str())) else {
                    continue;
                };
                if let Some((k, name)) = ObjectKind::parse_key(rel) {
                    if k == kind {
                        found.push(ClassedObject {
                            meta: ObjectMeta {
                                kind,
                                name,
                                size: obj.size().unwrap_or(0).max(0) as u64,
                                modified: obj.last_modified().and_then(from_s3_date),
                            },
                            storage_class: obj.storage_class().map(|c| c.as_str().to_string()),
                        });
                    }
                }
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(found)
    }

    async fn delete(&self, kind: ObjectKind, name: &str) -> StorageResult<()> {
        let key = self.inner.key(kind, name);
        if self.is_versioned() {
            self.inner.delete_versions(&key).await
        } else {
            self.inner.delete_plain(&key, true).await
        }
    }

    /// One DeleteObject in an unversioned bucket (no HeadObject first: a
    /// missing object is success here anyway).
    async fn remove(&self, kind: ObjectKind, name: &str) -> StorageResult<()> {
        let key = self.inner.key(kind, name);
        let r = if self.is_versioned() {
            self.inner.delete_versions(&key).await
        } else {
            self.inner.delete_plain(&key, false).await
        };
        match r {
            Err(StorageError::NotFound { .. }) => Ok(()),
            other => other,
        }
    }

    async fn retention(&self, kind: ObjectKind, name: &str) -> StorageResult<Option<Retention>> {
        let key = self.inner.key(kind, name);
        self.inner.current_retention(&key).await
    }

    async fn extend_retention(
        &self,
        kind: ObjectKind,
        name: &str,
        retention: Retention,
    ) -> StorageResult<()> {
        let key = self.inner.key(kind, name);
        self.inner.extend_retention_key(&key, retention).await
    }

    async fn set_legal_hold(&self, kind: ObjectKind, name: &str, on: bool) -> StorageResult<()> {
        let key = self.inner.key(kind, name);
        self.inner.set_legal_hold_key(&key, on).await
    }

    async fn legal_hold(&self, kind: ObjectKind, name: &str) -> StorageResult<bool> {
        let key = self.inner.key(kind, name);
        let h = self.inner.head_raw(&key).await?;
        Ok(h.object_lock_legal_hold_status() == Some(&ObjectLockLegalHoldStatus::On))
    }

    async fn archive_state(&self, kind: ObjectKind, name: &str) -> StorageResult<ArchiveState> {
        let key = self.inner.key(kind, name);
        let h = self.inner.head_raw(&key).await?;
        let archived = is_archive_class(h.storage_class()) || h.archive_status().is_some();
        if !archived {
            return Ok(ArchiveState::Readable);
        }
        Ok(match h.restore() {
            None => ArchiveState::Archived,
            Some(r) if r.contains("ongoing-request=\"true\"") => ArchiveState::Restoring,
            Some(_) => ArchiveState::Readable,
        })
    }

    async fn set_storage_class(
        &self,
        kind: ObjectKind,
        name: &str,
        class: &str,
    ) -> StorageResult<ClassChange> {
        let key = self.inner.key(kind, name);
        self.inner.set_class_key(&key, class).await
    }

    async fn restore_archived(&self, kind: ObjectKind, name: &str, days: u32) -> StorageResult<()> {
        let inner = &self.inner;
        let key = inner.key(kind, name);
        let params = GlacierJobParameters::builder()
            .tier(Tier::from(inner.cfg.restore_tier.as_str()))
            .build()
            .map_err(|e| inner.config_error(format!("restore tier: {e}")))?;
        let request = RestoreRequest::builder()
            .days(days.min(i32::MAX as u32) as i32)
            .glacier_job_parameters(params)
            .build();
        let out = inner
            .retrier
            .run(Some(inner.cfg.request_timeout), || async {
                inner
                    .client
                    .restore_object()
                    .bucket(&inner.cfg.bucket)
                    .key(&key)
                    .restore_request(request.clone())
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(Failure::from_sdk)
            })
            .await;
        match out.result {
            Ok(()) => Ok(()),
            // Already on its way, or not archived at all: readable (soon).
            Err(ref f)
                if f.code_is("RestoreAlreadyInProgress") || f.code_is("InvalidObjectState") =>
            {
                Ok(())
            }
            Err(_) => Err(inner.to_error(Op::Restore, &key, &out)),
        }
    }
}
