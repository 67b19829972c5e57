//! Configuration of the S3 backend: [`S3Config`], parsed from an
//! `s3://bucket/prefix` URL plus environment overrides.
//!
//! Everything has a default that suits AWS S3; the environment variables
//! below adjust it for MinIO, Ceph, Garage, R2 and the like without code:
//!
//! | variable | effect |
//! | --- | --- |
//! | `HOLDFAST_S3_ENDPOINT` | custom endpoint URL (`https://minio.lan:9000`) |
//! | `HOLDFAST_S3_PATH_STYLE` | `true`: path-style addressing (`host/bucket/key`) |
//! | `HOLDFAST_S3_ALLOW_HTTP` | `true`: permit a plain `http://` endpoint |
//! | `HOLDFAST_S3_CA_BUNDLE` | PEM file of extra CA certificates to trust |
//! | `AWS_REGION`, `AWS_DEFAULT_REGION` | region (default `us-east-1`) |
//! | `HOLDFAST_S3_STORAGE_CLASS_DATA` | storage class of packs |
//! | `HOLDFAST_S3_STORAGE_CLASS_META` | storage class of every other object |
//! | `HOLDFAST_S3_OBJECT_LOCK` | `true`: refuse to connect unless the bucket has Object Lock |
//! | `HOLDFAST_S3_PARALLELISM` | concurrent requests (default 8) |
//! | `HOLDFAST_S3_MAX_ATTEMPTS` | attempts per request, first included (default 8) |
//! | `HOLDFAST_S3_REQUEST_TIMEOUT` | seconds one attempt may take, before the size allowance (default 30) |
//!
//! Credentials come from the standard AWS chain (environment, shared profile,
//! web identity, ECS/EC2 instance metadata) unless [`S3Config::credentials`]
//! is set explicitly.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use holdfast_storage::StorageError;

/// Explicit static credentials. When absent, the standard AWS credential
/// chain is used.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"** redacted **")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "** redacted **"),
            )
            .finish()
    }
}

/// Everything the S3 backend needs to know. Build it with
/// [`S3Config::from_url`] (which also applies the environment) or
/// [`S3Config::new`] (defaults only), then adjust fields as needed.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix of the repository inside the bucket: empty, or ending in `/`.
    pub prefix: String,
    /// Custom endpoint URL (MinIO, Ceph, R2, a test server). `None` is AWS.
    pub endpoint: Option<String>,
    /// Region to sign requests for.
    pub region: String,
    /// Path-style addressing (`endpoint/bucket/key`) instead of virtual hosts.
    pub path_style: bool,
    /// Permit a plain-HTTP endpoint. Off by default: credentials are signed,
    /// not encrypted, and the data would travel in the clear (it is
    /// encrypted by the repository, but its size and timing are not).
    pub allow_http: bool,
    /// Extra CA certificates (PEM) to trust, for endpoints with a private
    /// CA. There is deliberately no "skip verification" switch.
    pub ca_bundle: Option<PathBuf>,
    /// Storage class of packs ([`holdfast_storage::ObjectKind::Pack`]), e.g.
    /// `STANDARD_IA`, `GLACIER_IR`, `DEEP_ARCHIVE`. `None`: bucket default.
    pub storage_class_data: Option<String>,
    /// Storage class of every other kind (index, snapshots, keys, locks...).
    /// These are read often and should stay in an instantly readable class.
    pub storage_class_meta: Option<String>,
    /// Refuse to connect unless the bucket is versioned with Object Lock.
    pub require_object_lock: bool,
    /// Explicit credentials; `None` uses the standard AWS chain.
    pub credentials: Option<S3Credentials>,
    /// Requests in flight at once (the backend enforces it, and reports it
    /// through `capabilities().parallelism`).
    pub parallelism: usize,
    /// Attempts per request, the first included (the retry cap).
    pub max_attempts: u32,
    /// First backoff step; doubled each retry, then fully jittered.
    pub base_backoff: Duration,
    /// Upper bound of one backoff sleep.
    pub max_backoff: Duration,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Time one attempt may take for a small request. Requests that carry
    /// a body get `size / min_throughput` more, so a stalled connection is
    /// abandoned and retried but a large part on a slow link is not.
    pub request_timeout: Duration,
    /// Throughput (bytes/s) below which a transfer counts as stalled.
    pub min_throughput: u64,
    /// Objects larger than this use multipart upload.
    pub multipart_threshold: usize,
    /// Part size of multipart uploads (at least 5 MiB, S3's minimum).
    pub multipart_part_size: usize,
    /// Retrieval tier of `RestoreObject`: `Standard`, `Bulk` or `Expedited`.
    pub restore_tier: String,
}

const MIB: usize = 1024 * 1024;
/// S3's smallest allowed part (every part but the last).
pub const MIN_PART_SIZE: usize = 5 * MIB;

impl S3Config {
    /// Defaults for `bucket` and `prefix`, ignoring the environment.
    pub fn new(bucket: impl Into<String>, prefix: impl Into<String>) -> Self {
        S3Config {
            bucket: bucket.into(),
            prefix: normalize_prefix(&prefix.into()),
            endpoint: None,
            region: "us-east-1".to_string(),
            path_style: false,
            allow_http: false,
            ca_bundle: None,
            storage_class_data: None,
            storage_class_meta: None,
            require_object_lock: false,
            credentials: None,
            parallelism: 8,
            max_attempts: 8,
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            min_throughput: 256 * 1024,
            // Above the 16 MiB pack size (plus one maximal chunk): a pack is
            // one PUT, as with restic, while larger objects (configured
            // bigger packs) still go multipart. Each request costs money.
            multipart_threshold: 32 * MIB,
            multipart_part_size: 16 * MIB,
            restore_tier: "Standard".to_string(),
        }
    }

    /// Parse `s3://bucket[/prefix]` and apply the overrides that `get`
    /// returns for the variable names of the module documentation. The
    /// library reads no environment: the binary passes
    /// `|n| std::env::var(n).ok()`, tests pass a map.
    pub fn from_url(
        url: &str,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<S3Config, StorageError> {
        let mut cfg = Self::parse_url(url)?;
        cfg.apply_env(get)?;
        Ok(cfg)
    }

    /// Parse `s3://bucket[/prefix]` into a default configuration, without
    /// looking at the environment.
    pub fn parse_url(url: &str) -> Result<S3Config, StorageError> {
        let bad = |detail: String| StorageError::Config {
            backend: url.to_string(),
            detail,
        };
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            bad("an S3 repository URL has the form s3://bucket/prefix".to_string())
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        validate_bucket(bucket).map_err(bad)?;
        if prefix.split('/').any(|seg| seg == "." || seg == "..") {
            return Err(bad(format!(
                "prefix {prefix:?} must not contain '.' or '..' segments"
            )));
        }
        Ok(S3Config::new(bucket, prefix))
    }

    /// Apply environment overrides, reading variables through `var` (the
    /// process environment in [`S3Config::from_url`]; tests pass a map).
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), StorageError> {
        let get = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        if let Some(e) = get("HOLDFAST_S3_ENDPOINT") {
            self.endpoint = Some(e.trim().to_string());
        }
        if let Some(v) = get("HOLDFAST_S3_PATH_STYLE") {
            self.path_style = self.parse_bool("HOLDFAST_S3_PATH_STYLE", &v)?;
        }
        if let Some(v) = get("HOLDFAST_S3_ALLOW_HTTP") {
            self.allow_http = self.parse_bool("HOLDFAST_S3_ALLOW_HTTP", &v)?;
        }
        if let Some(v) = get("HOLDFAST_S3_CA_BUNDLE") {
            self.ca_bundle = Some(PathBuf::from(v));
        }
        if let Some(r) = get("AWS_REGION").or_else(|| get("AWS_DEFAULT_REGION")) {
            self.region = r.trim().to_string();
        }
        if let Some(c) = get("HOLDFAST_S3_STORAGE_CLASS_DATA") {
            self.storage_class_data = Some(c.trim().to_string());
        }
        if let Some(c) = get("HOLDFAST_S3_STORAGE_CLASS_META") {
            self.storage_class_meta = Some(c.trim().to_string());
        }
        if let Some(v) = get("HOLDFAST_S3_OBJECT_LOCK") {
            self.require_object_lock = self.parse_bool("HOLDFAST_S3_OBJECT_LOCK", &v)?;
        }
        if let Some(v) = get("HOLDFAST_S3_PARALLELISM") {
            self.parallelism = self.parse_num("HOLDFAST_S3_PARALLELISM", &v)? as usize;
        }
        if let Some(v) = get("HOLDFAST_S3_MAX_ATTEMPTS") {
            self.max_attempts = self.parse_num("HOLDFAST_S3_MAX_ATTEMPTS", &v)? as u32;
        }
        if let Some(v) = get("HOLDFAST_S3_REQUEST_TIMEOUT") {
            self.request_timeout =
                Duration::from_secs(self.parse_num("HOLDFAST_S3_REQUEST_TIMEOUT", &v)?);
        }
        Ok(())
    }

    /// Check the values for consistency; [`crate::S3Backend::connect`]
    /// calls this first.
    pub fn validate(&self) -> Result<(), StorageError> {
        let bad = |detail: String| StorageError::Config {
            backend: self.location(),
            detail,
        };
        validate_bucket(&self.bucket).map_err(bad)?;
        if let Some(ep) = &self.endpoint {
            if ep.starts_with("http://") {
                if !self.allow_http {
                    return Err(bad(format!(
                        "endpoint {ep} is plain HTTP; use https:// or set \
                         HOLDFAST_S3_ALLOW_HTTP=true to permit it"
                    )));
                }
            } else if !ep.starts_with("https://") {
                return Err(bad(format!(
                    "endpoint {ep:?} must be a URL starting with https:// (or http://)"
                )));
            }
        }
        if self.region.is_empty() {
            return Err(bad("region is empty; set AWS_REGION".into()));
        }
        for (what, class) in [
            ("HOLDFAST_S3_STORAGE_CLASS_DATA", &self.storage_class_data),
            ("HOLDFAST_S3_STORAGE_CLASS_META", &self.storage_class_meta),
        ] {
            if let Some(c) = class {
                validate_storage_class(c).map_err(|d| bad(format!("{what}: {d}")))?;
            }
        }
        if self.parallelism == 0 {
            return Err(bad("parallelism must be at least 1".into()));
        }
        if self.max_attempts == 0 {
            return Err(bad("max_attempts must be at least 1".into()));
        }
        if self.multipart_part_size < MIN_PART_SIZE {
            return Err(bad(format!(
                "multipart part size {} is below S3's minimum of {MIN_PART_SIZE} bytes",
                self.multipart_part_size
            )));
        }
        if self.min_throughput == 0 {
            return Err(bad("min_throughput must be positive".into()));
        }
        Ok(())
    }

    /// `s3://bucket/prefix`, for messages and [`holdfast_storage::Backend::location`].
    pub fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    /// The endpoint as users should read it in messages.
    pub fn endpoint_label(&self) -> String {
        match &self.endpoint {
            Some(e) => e.clone(),
            None => format!("AWS S3 ({})", self.region),
        }
    }

    fn parse_bool(&self, name: &str, v: &str) -> Result<bool, StorageError> {
        match v.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            other => Err(StorageError::Config {
                backend: self.location(),
                detail: format!("{name}={other:?} is not a boolean (use true or false)"),
            }),
        }
    }

    fn parse_num(&self, name: &str, v: &str) -> Result<u64, StorageError> {
        v.trim().parse::<u64>().map_err(|_| StorageError::Config {
            backend: self.location(),
            detail: format!("{name}={v:?} is not a whole number"),
        })
    }
}

/// `""` stays empty; anything else loses leading slashes and gains exactly
/// one trailing slash.
fn normalize_prefix(p: &str) -> String {
    let p = p.trim_matches('/');
    if p.is_empty() {
        String::new()
    } else {
        format!("{p}/")
    }
}

/// S3 bucket naming rules (the general-purpose subset every store accepts).
fn validate_bucket(b: &str) -> Result<(), String> {
    if b.is_empty() {
        return Err("the bucket name is empty (URL form: s3://bucket/prefix)".into());
    }
    if b.len() < 3 || b.len() > 63 {
        return Err(format!("bucket name {b:?} must be 3 to 63 characters long"));
    }
    let ok_chars = b
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    let ok_ends = b.starts_with(|c: char| c.is_ascii_alphanumeric())
        && b.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !ok_chars || !ok_ends {
        return Err(format!(
            "bucket name {b:?} may only hold lowercase letters, digits, '-' and '.', \
             and must start and end with a letter or digit"
        ));
    }
    Ok(())
}

fn validate_storage_class(c: &str) -> Result<(), String> {
    if c.is_empty() || !c.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
        return Err(format!(
            "storage class {c:?} is not a valid S3 storage class name \
             (e.g. STANDARD, STANDARD_IA, GLACIER_IR, DEEP_ARCHIVE)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn parses_urls() {
        let c = S3Config::parse_url("s3://my-bucket/backups/laptop/").unwrap();
        assert_eq!(c.bucket, "my-bucket");
        assert_eq!(c.prefix, "backups/laptop/");
        assert_eq!(c.location(), "s3://my-bucket/backups/laptop/");
        let c = S3Config::parse_url("s3://my-bucket").unwrap();
        assert_eq!(c.prefix, "");
        let c = S3Config::parse_url("s3://my-bucket/").unwrap();
        assert_eq!(c.prefix, "");
        assert!(S3Config::parse_url("s3://").is_err());
        assert!(S3Config::parse_url("https://x/y").is_err());
        assert!(S3Config::parse_url("s3://Bad_Bucket/x").is_err());
        assert!(S3Config::parse_url("s3://bucket/../x").is_err());
    }

    #[test]
    fn env_overrides() {
        let env: HashMap<&str, &str> = [
            ("HOLDFAST_S3_ENDPOINT", "http://127.0.0.1:9000"),
            ("HOLDFAST_S3_PATH_STYLE", "true"),
            ("HOLDFAST_S3_ALLOW_HTTP", "1"),
            ("AWS_REGION", "eu-west-3"),
            ("HOLDFAST_S3_STORAGE_CLASS_DATA", "DEEP_ARCHIVE"),
            ("HOLDFAST_S3_STORAGE_CLASS_META", "STANDARD"),
            ("HOLDFAST_S3_PARALLELISM", "3"),
        ]
        .into_iter()
        .collect();
        let mut c = S3Config::parse_url("s3://bucket/p").unwrap();
        c.apply_env(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(c.path_style && c.allow_http);
        assert_eq!(c.region, "eu-west-3");
        assert_eq!(c.storage_class_data.as_deref(), Some("DEEP_ARCHIVE"));
        assert_eq!(c.storage_class_meta.as_deref(), Some("STANDARD"));
        assert_eq!(c.parallelism, 3);
        c.validate().unwrap();

        let mut c = S3Config::parse_url("s3://bucket/p").unwrap();
        let err = c
            .apply_env(|k| (k == "HOLDFAST_S3_PATH_STYLE").then(|| "maybe".to_string()))
            .unwrap_err();
        assert!(err.to_string().contains("HOLDFAST_S3_PATH_STYLE"), "{err}");
    }

    #[test]
    fn plain_http_needs_consent() {
        let mut c = S3Config::new("bucket", "");
        c.endpoint = Some("http://127.0.0.1:9000".into());
        let err = c.validate().unwrap_err();
        assert!(err.to_string().contains("HOLDFAST_S3_ALLOW_HTTP"), "{err}");
        c.allow_http = true;
        c.validate().unwrap();
        c.storage_class_data = Some("deep archive".into());
        assert!(c.validate().is_err());
    }

    #[test]
    fn credentials_debug_is_redacted() {
        let c = S3Credentials {
            access_key_id: "AKIA".into(),
            secret_access_key: "sekrit".into(),
            session_token: Some("tok".into()),
        };
        let s = format!("{c:?}");
        assert!(!s.contains("sekrit") && !s.contains("tok\""), "{s}");
    }
}
