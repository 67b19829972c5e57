//! Building the aws-sdk-s3 client from an [`S3Config`].
//!
//! The HTTP client is hyper 1.x with rustls over `ring` (see the crate's
//! Cargo.toml for why not aws-lc). The SDK's retries are disabled (our own
//! loop in [`crate::retry`] does them); its connect timeout is set from the
//! configuration and attempt timeouts are ours too.

use aws_config::BehaviorVersion;
use aws_config::Region;
use aws_credential_types::Credentials;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
use holdfast_storage::StorageError;

use crate::config::S3Config;

pub(crate) async fn build(cfg: &S3Config) -> Result<aws_sdk_s3::Client, StorageError> {
    let config_err = |detail: String| StorageError::Config {
        backend: cfg.location(),
        detail,
    };
    let mut http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring));
    if let Some(path) = &cfg.ca_bundle {
        let pem = std::fs::read(path)
            .map_err(|e| config_err(format!("cannot read CA bundle {}: {e}", path.display())))?;
        let trust = TrustStore::default().with_pem_certificate(pem);
        let ctx = TlsContext::builder()
            .with_trust_store(trust)
            .build()
            .map_err(|e| config_err(format!("CA bundle {}: {e}", path.display())))?;
        http = http.tls_context(ctx);
    }
    let http = http.build_https();

    let timeouts = TimeoutConfig::builder()
        .connect_timeout(cfg.connect_timeout)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(cfg.region.clone()))
        .http_client(http)
        .timeout_config(timeouts.clone());
    if let Some(c) = &cfg.credentials {
        loader = loader.credentials_provider(Credentials::new(
            c.access_key_id.clone(),
            c.secret_access_key.clone(),
            c.session_token.clone(),
            None,
            "holdfast-explicit",
        ));
    }
    let shared = loader.load().await;
    let mut s3 = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(cfg.path_style)
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts);
    if let Some(ep) = &cfg.endpoint {
        s3 = s3.endpoint_url(ep.clone());
    }
    Ok(aws_sdk_s3::Client::from_conf(s3.build()))
}
