//! What went wrong with one S3 request, reduced to what the retry loop and
//! the error mapping need: status, S3 error code, message, and whether the
//! request may be retried.
//!
//! Every SDK error is first turned into a [`Failure`] (so the retry loop is
//! written once, for every operation), and only the final failure of an
//! operation becomes a [`StorageError`], with the operation's context (which
//! key, what a 404 or a 412 means there).

use std::error::Error as StdError;
use std::fmt;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

/// How a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// The server answered with an error status.
    Service,
    /// Our attempt timeout, or the SDK's, fired.
    Timeout,
    /// Connect refused, reset, dropped, TLS failure, truncated body.
    Network,
    /// The response could not be read or parsed (truncated, garbled).
    Response,
    /// No credentials could be found or loaded.
    Credentials,
    /// The request could not be built (a bug or a bad argument).
    Construction,
}

/// One failed request.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub kind: FailureKind,
    pub status: Option<u16>,
    pub code: Option<String>,
    pub message: Option<String>,
    /// The whole error chain, for messages.
    pub detail: String,
    /// `x-amz-bucket-region` of the response, if any (wrong-region redirects).
    pub bucket_region: Option<String>,
    /// `Content-Range` of the response, if any (416 answers carry the size).
    pub content_range: Option<String>,
    /// The start of the response body of a service error, when it is text.
    /// Some S3-compatible servers answer `200` with a body the SDK cannot
    /// parse; callers that can read what they need from it do.
    pub raw_body: Option<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.status, &self.code) {
            (Some(s), Some(c)) => write!(f, "HTTP {s} {c}")?,
            (Some(s), None) => write!(f, "HTTP {s}")?,
            _ => {}
        }
        if let Some(m) = &self.message {
            write!(f, ": {m}")
        } else if self.kind == FailureKind::Service {
            Ok(())
        } else {
            f.write_str(&self.detail)
        }
    }
}

impl Failure {
    pub fn from_sdk<E>(err: SdkError<E>) -> Self
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        let detail = error_chain(&err);
        let (status, bucket_region, content_range, raw_body) = match err.raw_response() {
            Some(r) => (
                Some(r.status().as_u16()),
                r.headers().get("x-amz-bucket-region").map(str::to_string),
                r.headers().get("content-range").map(str::to_string),
                r.body()
                    .bytes()
                    .map(|b| String::from_utf8_lossy(&b[..b.len().min(4096)]).into_owned()),
            ),
            None => (None, None, None, None),
        };
        let kind = match &err {
            SdkError::ServiceError(_) => FailureKind::Service,
            SdkError::TimeoutError(_) => FailureKind::Timeout,
            SdkError::ResponseError(_) => FailureKind::Response,
            SdkError::ConstructionFailure(_) => FailureKind::Construction,
            SdkError::DispatchFailure(d) => {
                if chain_has::<CredentialsError>(&err) {
                    FailureKind::Credentials
                } else if d.is_timeout() {
                    FailureKind::Timeout
                } else if d.is_user() {
                    FailureKind::Construction
                } else {
                    FailureKind::Network
                }
            }
            _ => FailureKind::Network,
        };
        let (code, message) = match &err {
            SdkError::ServiceError(s) => (
                s.err().code().map(str::to_string),
                s.err().message().map(str::to_string),
            ),
            _ => (None, None),
        };
        Failure {
            kind,
            status,
            code,
            message,
            detail,
            bucket_region,
            content_range,
            raw_body,
        }
    }

    /// A failure we produced ourselves (timeouts, body read errors).
    pub fn local(kind: FailureKind, detail: impl Into<String>) -> Self {
        Failure {
            kind,
            status: None,
            code: None,
            message: None,
            detail: detail.into(),
            bucket_region: None,
            content_range: None,
            raw_body: None,
        }
    }

    pub fn code_is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    /// Worth another attempt: throttling, server errors, timeouts, dropped
    /// or reset connections, truncated responses. Permanent answers (403,
    /// 404, 400, 412...) fail fast.
    pub fn retryable(&self) -> bool {
        match self.kind {
            FailureKind::Timeout | FailureKind::Network | FailureKind::Response => true,
            FailureKind::Credentials | FailureKind::Construction => false,
            FailureKind::Service => {
                let code = self.code.as_deref().unwrap_or("");
                match self.status.unwrap_or(0) {
                    500..=599 | 429 | 408 => true,
                    // Concurrent conditional writes on one key: AWS asks to retry.
                    409 => matches!(code, "ConditionalRequestConflict" | "OperationAborted"),
                    // Socket idle too long, checksum mismatch in transit, clock skew.
                    400 => matches!(
                        code,
                        "RequestTimeout"
                            | "BadDigest"
                            | "XAmzContentSHA256Mismatch"
                            | "InvalidDigest"
                            | "RequestTimeTooSkewed"
                            | "SlowDown"
                    ),
                    403 => code == "RequestTimeTooSkewed",
                    _ => matches!(code, "SlowDown" | "Throttling" | "ThrottlingException"),
                }
            }
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status == Some(404) && !self.code_is("NoSuchBucket")
    }

    pub fn is_no_such_bucket(&self) -> bool {
        self.code_is("NoSuchBucket")
    }

    pub fn is_access_denied(&self) -> bool {
        self.status == Some(403) && !self.code_is("InvalidObjectState")
    }
}

/// `outer: cause: root cause`, each level's Display once (no Debug dumps).
fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        let s = e.to_string();
        if !s.is_empty() && !parts.last().is_some_and(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

/// Does the error's source chain hold an error of type `T`?
fn chain_has<T: StdError + 'static>(err: &(dyn StdError + 'static)) -> bool {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.is::<T>() {
            return true;
        }
        cur = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(status: u16, code: &str) -> Failure {
        Failure {
            kind: FailureKind::Service,
            status: Some(status),
            code: Some(code.into()),
            message: None,
            detail: String::new(),
            bucket_region: None,
            content_range: None,
            raw_body: None,
        }
    }

    #[test]
    fn classification() {
        assert!(service(503, "SlowDown").retryable());
        assert!(service(500, "InternalError").retryable());
        assert!(service(409, "ConditionalRequestConflict").retryable());
        assert!(service(400, "RequestTimeout").retryable());
        assert!(!service(400, "InvalidRequest").retryable());
        assert!(!service(403, "AccessDenied").retryable());
        assert!(!service(404, "NoSuchBucket").retryable());
        assert!(!service(412, "PreconditionFailed").retryable());
        assert!(Failure::local(FailureKind::Timeout, "t").retryable());
        assert!(!Failure::local(FailureKind::Credentials, "c").retryable());
        assert!(service(404, "NoSuchKey").is_not_found());
        assert!(!service(404, "NoSuchBucket").is_not_found());
        assert!(!service(403, "InvalidObjectState").is_access_denied());
    }
}
