//! The AWS stores: Secrets Manager (`aws-secrets-manager`) and Systems
//! Manager Parameter Store (`aws-parameter-store`). Both are built from one
//! `aws-config` setup: region per store, optional endpoint override,
//! credentials from the default chain (web identity/IRSA, EKS Pod Identity,
//! environment, profile, instance profile) or from mounted key files, the
//! store's deadline as the SDK's operation timeout and at most two attempts.
//!
//! The `s3` store (`store::s3`) shares this setup (auth, endpoint, credential
//! files, timeouts, retries) and the SDK error mapping: the items it uses
//! are `pub(in crate::store)`.

pub mod parameter_store;
pub mod secrets_manager;

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::path::PathBuf;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use serde::Deserialize;

use super::{Ownership, StoreError, WriteOptions};
use crate::config::StoreConfig;
use crate::secret::SecretValue;

pub use parameter_store::ParameterStore;
pub use secrets_manager::SecretsManagerStore;

/// The store's per-call deadline when the admin config sets none (the same
/// default `mirror` applies).
const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);
/// TCP/TLS connect timeout, capped by the deadline.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// One retry at most: a second attempt must still fit in the deadline.
const MAX_ATTEMPTS: u32 = 2;

/// How a store gets AWS credentials.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(
    tag = "method",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum Auth {
    /// `aws-config`'s default chain: environment, profile, web identity
    /// (IRSA), ECS/EKS Pod Identity container credentials, instance profile.
    #[default]
    Default,
    /// A static access key read from two files (e.g. a mounted Kubernetes
    /// Secret), when the cluster runs outside AWS without workload identity.
    AccessKey {
        access_key_id_file: PathBuf,
        secret_access_key_file: PathBuf,
        #[serde(default)]
        session_token_file: Option<PathBuf>,
    },
}

/// Settings both AWS store types share.
#[derive(Clone, Debug)]
pub struct Common {
    pub region: String,
    pub endpoint: Option<String>,
    pub auth: Auth,
}

impl Common {
    pub(in crate::store) fn check(&self) -> Result<(), String> {
        if self.region.is_empty()
            || !self
                .region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(format!(
                "region {:?} is not an AWS region name (like eu-west-1)",
                self.region
            ));
        }
        if let Some(endpoint) = &self.endpoint {
            let uri: http::Uri = endpoint
                .parse()
                .map_err(|e| format!("endpoint {endpoint:?} is not a URL: {e}"))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                return Err(format!(
                    "endpoint {endpoint:?} must be an http:// or https:// URL with a host"
                ));
            }
        }
        Ok(())
    }
}

/// Reads typed settings out of the store's type-specific keys; unknown keys
/// and missing required keys are errors naming the key.
pub(in crate::store) fn parse_settings<T: serde::de::DeserializeOwned>(
    config: &StoreConfig,
) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::Object(config.settings.clone()))
        .map_err(|e| format!("{} settings: {e}", config.store_type))
}

/// Builds the shared SDK configuration of one store. Nothing is contacted
/// here: credentials are resolved on the first call.
pub(in crate::store) async fn sdk_config(
    common: &Common,
    deadline: Option<Duration>,
) -> Result<aws_config::SdkConfig, String> {
    let deadline = deadline.unwrap_or(DEFAULT_DEADLINE);
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new(common.region.clone()))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT.min(deadline))
                .operation_timeout(deadline)
                .build(),
        )
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(MAX_ATTEMPTS)
                .with_initial_backoff(Duration::from_millis(100))
                .with_max_backoff(Duration::from_millis(500)),
        );
    if let Some(endpoint) = &common.endpoint {
        loader = loader.endpoint_url(endpoint.trim_end_matches('/'));
    }
    if let Auth::AccessKey {
        access_key_id_file,
        secret_access_key_file,
        session_token_file,
    } = &common.auth
    {
        let read = |path: &PathBuf, what: &str| -> Result<String, String> {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("auth.{what} {}: {e}", path.display()))?;
            let text = text.trim().to_owned();
            if text.is_empty() {
                return Err(format!("auth.{what} {} is empty", path.display()));
            }
            Ok(text)
        };
        let id = read(access_key_id_file, "accessKeyIdFile")?;
        let secret = read(secret_access_key_file, "secretAccessKeyFile")?;
        let token = session_token_file
            .as_ref()
            .map(|p| read(p, "sessionTokenFile"))
            .transpose()?;
        loader = loader.credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            id,
            secret,
            token,
            None,
            "secret-santa-access-key-files",
        ));
    }
    Ok(loader.load().await)
}

/// Where a store's requests go, for error messages.
pub(in crate::store) fn endpoint_label(
    sdk: &aws_config::SdkConfig,
    service: &str,
    region: &str,
) -> String {
    match sdk.endpoint_url() {
        Some(url) => url.to_owned(),
        None => format!("https://{service}.{region}.amazonaws.com"),
    }
}

/// Ownership tags win over extra tags of the same name.
pub(in crate::store) fn all_tags(
    owner: &Ownership,
    options: &WriteOptions,
) -> BTreeMap<String, String> {
    let mut tags = options.tags.clone();
    tags.extend(owner.tags());
    tags
}

/// What an error mapping needs to know about the call.
pub(in crate::store) struct Call<'a> {
    /// `GetSecretValue`, `PutParameter`, ...
    pub operation: &'static str,
    /// The store's endpoint, for transport errors.
    pub endpoint: &'a str,
    /// The value being written, scrubbed from any service message.
    pub payload: Option<&'a SecretValue>,
}

/// The error code of a service error (`ResourceNotFoundException`, ...).
pub(in crate::store) fn code_of<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<&str> {
    match err {
        SdkError::ServiceError(_) => err.code(),
        _ => None,
    }
}

/// Turns an SDK error into a `StoreError` with a short message that names
/// the operation and the cause, never a value.
pub(in crate::store) fn map_error<E>(err: SdkError<E, HttpResponse>, call: &Call<'_>) -> StoreError
where
    E: ProvideErrorMetadata + StdError + 'static,
{
    map_error_labelled(err, call, call.operation)
}

/// The same, naming the entry as well: `GetObject s3://bucket/key: ...`.
#[cfg(feature = "s3")]
pub(in crate::store) fn map_error_at<E>(
    err: SdkError<E, HttpResponse>,
    call: &Call<'_>,
    target: &str,
) -> StoreError
where
    E: ProvideErrorMetadata + StdError + 'static,
{
    map_error_labelled(err, call, &format!("{} {target}", call.operation))
}

/// A service error without an error code (S3 answers `HEAD` requests
/// without a body) is named by its HTTP status.
fn map_error_labelled<E>(err: SdkError<E, HttpResponse>, call: &Call<'_>, op: &str) -> StoreError
where
    E: ProvideErrorMetadata + StdError + 'static,
{
    match &err {
        SdkError::ServiceError(service) => {
            let code = match err.code() {
                Some(code) => code.to_owned(),
                None => match service.raw().status().as_u16() {
                    401 | 403 => "AccessDenied".to_owned(),
                    429 => "Throttling".to_owned(),
                    503 => "ServiceUnavailable".to_owned(),
                    status => format!("HTTP {status}"),
                },
            };
            let message = scrub(err.message().unwrap_or(""), call.payload);
            let text = if message.is_empty() {
                format!("{op}: {code}")
            } else {
                format!("{op}: {code}: {message}")
            };
            match code.as_str() {
                "AccessDeniedException"
                | "AccessDenied"
                | "UnrecognizedClientException"
                | "InvalidClientTokenId"
                | "InvalidSignatureException"
                | "SignatureDoesNotMatch"
                | "ExpiredTokenException"
                | "ExpiredToken"
                | "IncompleteSignature"
                | "MissingAuthenticationToken"
                | "NotAuthorized"
                | "KMSAccessDeniedException"
                | "InvalidAccessKeyId"
                | "AllAccessDisabled"
                | "AccountProblem" => StoreError::PermissionDenied(text),
                "ThrottlingException"
                | "Throttling"
                | "TooManyRequestsException"
                | "RequestLimitExceeded"
                | "ThrottledException"
                | "TooManyUpdates"
                | "SlowDown" => StoreError::Throttled(text),
                "InternalServiceError"
                | "InternalServerError"
                | "InternalFailure"
                | "InternalError"
                | "ServiceUnavailable"
                | "ServiceUnavailableException" => StoreError::Unavailable(text),
                "InvalidParameterException"
                | "InvalidRequestException"
                | "ValidationException"
                | "LimitExceededException"
                | "InvalidKeyId"
                | "ParameterLimitExceeded"
                | "ParameterMaxVersionLimitExceeded"
                | "HierarchyLevelLimitExceededException"
                | "HierarchyTypeMismatchException"
                | "UnsupportedParameterType"
                | "ParameterPatternMismatchException"
                | "InvalidAllowedPatternException"
                | "TooManyTagsError"
                | "EncryptionFailure"
                | "DecryptionFailure"
                | "InvalidRequest"
                | "InvalidArgument"
                | "InvalidBucketName"
                | "NoSuchBucket"
                | "EntityTooLarge"
                | "KeyTooLongError"
                | "MetadataTooLarge"
                | "InvalidEncryptionAlgorithmError"
                | "KMS.NotFoundException"
                | "KMS.DisabledException" => StoreError::Invalid(text),
                _ => StoreError::Other(text),
            }
        }
        SdkError::TimeoutError(_) => {
            StoreError::Unavailable(format!("{op}: no answer from {} in time", call.endpoint))
        }
        SdkError::DispatchFailure(failure) => {
            let chain = chain_of(
                failure
                    .as_connector_error()
                    .map(|e| e as &(dyn StdError + 'static)),
            );
            if chain.to_ascii_lowercase().contains("credential") {
                return StoreError::PermissionDenied(format!(
                    "{op}: no usable AWS credentials: {chain}"
                ));
            }
            if failure.is_timeout() {
                return StoreError::Unavailable(format!(
                    "{op}: connection to {} timed out",
                    call.endpoint
                ));
            }
            let io = failure
                .as_connector_error()
                .and_then(|e| find_io(e as &(dyn StdError + 'static)));
            let cause = match io {
                Some(io) => match io.kind() {
                    std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                    std::io::ErrorKind::ConnectionReset => "connection reset".to_owned(),
                    std::io::ErrorKind::TimedOut => "connection timed out".to_owned(),
                    _ => io.to_string(),
                },
                None if chain.is_empty() => "request not sent".to_owned(),
                None => chain,
            };
            StoreError::Unavailable(format!("{op}: {cause} at {}", call.endpoint))
        }
        SdkError::ResponseError(_) => StoreError::Unavailable(format!(
            "{op}: unexpected response from {}: {}",
            call.endpoint,
            chain_of(err.source())
        )),
        SdkError::ConstructionFailure(_) => StoreError::Invalid(format!(
            "{op}: request not built: {}",
            chain_of(err.source())
        )),
        _ => StoreError::Other(format!("{op}: {}", chain_of(Some(&err)))),
    }
}

fn find_io<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a std::io::Error> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        next = e.source();
    }
    None
}

fn chain_of(err: Option<&(dyn StdError + 'static)>) -> String {
    super::text::error_chain(err, 300)
}

/// Removes the written value from a service message (some validation
/// messages quote the offending member) and bounds its length.
fn scrub(message: &str, payload: Option<&SecretValue>) -> String {
    super::text::redact(message, payload, Vec::new(), 300)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_the_value_and_bounds_the_length() {
        let v = SecretValue::new(b"hunter2-secret".to_vec());
        let out = scrub("Value 'hunter2-secret' at 'value' failed", Some(&v));
        assert!(!out.contains("hunter2"), "value scrubbed");
        assert!(out.contains("<redacted>"));
        assert!(scrub(&"x".repeat(1000), None).chars().count() <= 301);
    }

    #[test]
    fn common_settings_are_checked() {
        let ok = Common {
            region: "eu-west-1".into(),
            endpoint: Some("http://127.0.0.1:4566".into()),
            auth: Auth::Default,
        };
        assert!(ok.check().is_ok());
        let bad_region = Common {
            region: "EU West".into(),
            ..ok.clone()
        };
        assert!(bad_region.check().unwrap_err().contains("region"));
        let bad_endpoint = Common {
            endpoint: Some("ftp://x".into()),
            ..ok
        };
        assert!(bad_endpoint.check().unwrap_err().contains("endpoint"));
    }
}
