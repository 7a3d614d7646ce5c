//! `azure-key-vault`: Azure Key Vault secrets through the official Azure SDK
//! for Rust (`azure_security_keyvault_secrets` + `azure_identity`), with the
//! SDK's HTTP transport replaced by the shared HTTPS client of the REST
//! stores (`store::http`: hyper 1, rustls on aws-lc-rs, the platform's CA
//! certificates or the store's `caFile`). The SDK's own default transport
//! (reqwest 0.13 with rustls on aws-lc-rs and the platform verifier) is not
//! compiled in: every SDK pipeline (the secret client and each credential)
//! gets this transport.
//!
//! **Names.** Key Vault secret names are `[0-9a-zA-Z-]{1,127}`: `/`, `.` and
//! `_` of the logical remote name become `-` (`k8s/shop/db` →
//! `k8s-shop-db`); any other character, an empty name or one longer than
//! 127 characters is an error naming the problem. Two logical names may map
//! to one secret name (`shop/db` and `shop-db`); the ownership tags tell
//! them apart and the engine refuses the one that is not the owner.
//!
//! **Payload.** Key Vault values are strings: a UTF-8 payload is stored as
//! it is, with the destination's content type; any other payload is stored
//! base64-encoded with the tag `file-encoding: base64` (the convention of
//! `az keyvault secret set --encoding base64`), and decoded on read. Values
//! are at most 25 KiB (after encoding).
//!
//! **Ownership** is the secret's tags (Key Vault allows 15 per secret, each
//! name and value at most 256 characters: five are ownership, the rest come
//! from the store's `tags` and the destination; more is an error before
//! anything is written). Tags are written with the value, in one call, so a
//! version is never without its ownership.
//!
//! **Create-if-absent.** Key Vault has no conditional create: `SetSecret`
//! always adds a version. So: get the secret (absent: `SecretNotFound`), set
//! it with tags and content type, then get the latest version again; if it
//! is not the version just written, another writer came after us and its
//! entry is reported as existing (the engine converges on it when it is
//! owned by the same Secret). Within one webhook process creates of the
//! same name are serialized by a per-name lock; **across replicas the check
//! and the set are not atomic**: two replicas admitting the same Secret at
//! the same instant may both write a version, and the later one wins in the
//! vault. `atomic_create()` is false, so the engine always probes first.
//!
//! **Soft delete.** A deleted secret keeps its name while it is recoverable:
//! `SetSecret` answers 409 `ObjectIsDeletedButRecoverable`. That is a
//! `PendingDeletion` denial saying how to recover or purge it, unless the
//! store sets `recoverSoftDeleted: true`: then the secret is recovered, read
//! once it is readable again, and treated as present (so its ownership is
//! checked like any existing entry). A disabled secret is an `Invalid`
//! error, never overwritten.
//!
//! **Auth** (`auth.method`): `workloadIdentity` (AKS workload identity: the
//! federated token file, tenant and client id default to the
//! `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_TENANT_ID` and `AZURE_CLIENT_ID` the
//! workload identity webhook injects), `managedIdentity` (IMDS; system
//! assigned, or user assigned by `clientId`, `objectId` or `resourceId`),
//! `clientSecret` (a service principal's secret read from a file, re-read
//! when the SDK needs a new token, so a rotated file is picked up),
//! `clientCertificate` (a service principal's RSA certificate: the client
//! assertion is signed here with aws-lc-rs, so the SDK's OpenSSL-based
//! certificate feature is not needed), or `default` (when `auth` is left
//! out): workload identity when `AZURE_FEDERATED_TOKEN_FILE` is set, else a
//! client secret when `AZURE_CLIENT_SECRET` is set, else managed identity
//! (with `AZURE_CLIENT_ID` as the user-assigned identity when set), chosen
//! once when the store is built. The Entra ID authority is `authorityHost`,
//! else `AZURE_AUTHORITY_HOST`, else the one of the vault's cloud
//! (`*.vault.azure.cn` → `https://login.chinacloudapi.cn`,
//! `*.vault.usgovcloudapi.net` → `https://login.microsoftonline.us`, else
//! `https://login.microsoftonline.com`). The token scope comes from the
//! vault's bearer challenge, and the SDK checks that the challenge's
//! resource is the vault URL's parent domain (`NAME.vault.azure.net` ←
//! `https://vault.azure.net`), so `vaultUrl` must name the vault by its DNS
//! name, never by an address.
//!
//! **`endpoint`** (optional, `https://` only): connect there instead of the
//! vault URL's host, sending the vault's name as the `Host` header. For
//! tests and emulators (and a private endpoint without DNS); TLS is then
//! verified against the endpoint's name or address. **`caFile`** replaces
//! the platform's CA certificates for the vault *and* the authority.

use std::collections::{BTreeMap, HashMap};
use std::error::Error as StdError;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{
    AccessToken, Secret as CredentialSecret, TokenCredential, TokenRequestOptions,
};
use azure_core::error::ErrorKind;
use azure_core::http::headers::{
    HeaderName as SdkHeaderName, HeaderValue as SdkHeaderValue, Headers as SdkHeaders,
};
use azure_core::http::{
    AsyncRawResponse, Body as SdkBody, ClientMethodOptions, ClientOptions, ExponentialRetryOptions,
    Request as SdkRequest, RequestContent, RetryOptions, StatusCode as SdkStatus, Transport, Url,
};
use azure_identity::{
    ClientAssertion, ClientAssertionCredential, ClientAssertionCredentialOptions,
    ClientSecretCredential, ClientSecretCredentialOptions, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId, WorkloadIdentityCredential,
    WorkloadIdentityCredentialOptions,
};
use azure_security_keyvault_secrets::models::{Secret as KvSecret, SetSecretParameters};
use azure_security_keyvault_secrets::{ResourceExt as _, SecretClient, SecretClientOptions};
use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use zeroize::{Zeroize, Zeroizing};

use super::http::{HttpClient, HttpConfig, HttpError};
use super::text::{one_line, truncate};
use super::{
    CreateOutcome, Ownership, RemoteEntry, RemoteName, SecretStore, StoreError, WriteOptions,
};
use crate::config::StoreConfig;
use crate::secret::SecretValue;

pub const TYPE: &str = "azure-key-vault";

/// The tag that marks a base64-encoded (binary) value, as `az keyvault
/// secret set --encoding base64` writes it.
pub const TAG_ENCODING: &str = "file-encoding";
pub const ENCODING_BASE64: &str = "base64";

/// Key Vault's limits.
pub const MAX_NAME_CHARS: usize = 127;
pub const MAX_TAGS: usize = 15;
const MAX_TAG_NAME_CHARS: usize = 256;
const MAX_TAG_VALUE_CHARS: usize = 256;
/// 25 KiB.
pub const MAX_VALUE_BYTES: usize = 25 * 1024;
const MAX_CONTENT_TYPE_CHARS: usize = 255;

/// The store's per-call deadline when the admin config sets none (the same
/// default `mirror` applies).
const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Per-name locks for check-then-set (striped: bounded memory).
const LOCK_STRIPES: usize = 64;
/// A client assertion (certificate auth) is valid this long.
const ASSERTION_LIFETIME_SECS: i64 = 600;

const PUBLIC_AUTHORITY: &str = "https://login.microsoftonline.com";
const ENV_AUTHORITY_HOST: &str = "AZURE_AUTHORITY_HOST";
const ENV_TENANT_ID: &str = "AZURE_TENANT_ID";
const ENV_CLIENT_ID: &str = "AZURE_CLIENT_ID";
const ENV_CLIENT_SECRET: &str = "AZURE_CLIENT_SECRET";
const ENV_FEDERATED_TOKEN_FILE: &str = "AZURE_FEDERATED_TOKEN_FILE";

const PERMISSION_HINT: &str = "the identity needs the \"Key Vault Secrets Officer\" role on the vault (Azure RBAC), or the secret permissions get, set and recover in the vault's access policy";

// ---------------------------------------------------------------------------
// Settings.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Settings {
    vault_url: String,
    #[serde(default)]
    auth: AuthSettings,
    #[serde(default)]
    authority_host: Option<String>,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    recover_soft_deleted: bool,
}

/// How the store gets Entra ID tokens.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(
    tag = "method",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
enum AuthSettings {
    /// Workload identity, else a client secret from the environment, else
    /// managed identity: chosen from the environment when built.
    #[default]
    Default,
    /// IMDS managed identity: system assigned, or one user-assigned id.
    ManagedIdentity {
        #[serde(default)]
        client_id: Option<String>,
        #[serde(default)]
        object_id: Option<String>,
        #[serde(default)]
        resource_id: Option<String>,
    },
    /// A federated (Kubernetes service account) token exchanged for an
    /// Entra ID token.
    WorkloadIdentity {
        #[serde(default)]
        tenant_id: Option<String>,
        #[serde(default)]
        client_id: Option<String>,
        #[serde(default)]
        token_file: Option<PathBuf>,
    },
    /// A service principal's client secret, read from a file.
    ClientSecret {
        tenant_id: String,
        client_id: String,
        client_secret_file: PathBuf,
    },
    /// A service principal's certificate (PEM) and RSA key (in the same
    /// file or in `keyFile`).
    ClientCertificate {
        tenant_id: String,
        client_id: String,
        certificate_file: PathBuf,
        #[serde(default)]
        key_file: Option<PathBuf>,
    },
}

impl AuthSettings {
    fn method(&self) -> &'static str {
        match self {
            AuthSettings::Default => "default",
            AuthSettings::ManagedIdentity { .. } => "managedIdentity",
            AuthSettings::WorkloadIdentity { .. } => "workloadIdentity",
            AuthSettings::ClientSecret { .. } => "clientSecret",
            AuthSettings::ClientCertificate { .. } => "clientCertificate",
        }
    }
}

/// Checked settings.
#[derive(Debug)]
struct Parsed {
    /// `https://NAME.vault.azure.net` (no trailing `/`).
    vault_url: String,
    vault_host: String,
    vault_port: u16,
    /// The first label of the vault host: the vault's name, for hints.
    vault_name: String,
    auth: AuthSettings,
    /// Explicitly configured; otherwise derived when built.
    authority_host: Option<String>,
    /// `https://host:port` (no trailing `/`).
    endpoint: Option<String>,
    ca_file: Option<PathBuf>,
    recover_soft_deleted: bool,
}

const SETTING_KEYS: &str = "vaultUrl, auth, authorityHost, endpoint, caFile, recoverSoftDeleted";

fn settings(config: &StoreConfig) -> Result<Parsed, String> {
    let s: Settings = serde_json::from_value(Value::Object(config.settings.clone()))
        .map_err(|e| format!("{TYPE} settings: {e} (keys: {SETTING_KEYS})"))?;
    let vault_url = s.vault_url.trim_end_matches('/').to_owned();
    let url = Url::parse(&vault_url)
        .map_err(|e| format!("vaultUrl {:?} is not a URL: {e}", s.vault_url))?;
    if url.scheme() != "https" {
        return Err(format!(
            "vaultUrl {:?} must be an https:// URL (Key Vault takes tokens over TLS only), like https://NAME.vault.azure.net",
            s.vault_url
        ));
    }
    let Some(domain) = url.domain() else {
        return Err(format!(
            "vaultUrl {:?} must name the vault by its DNS name (https://NAME.vault.azure.net, or the vault domain of a sovereign cloud): \
             the vault's authentication challenge is checked against it; to connect to another address, set endpoint",
            s.vault_url
        ));
    };
    if !matches!(url.path(), "" | "/")
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(format!(
            "vaultUrl {:?} must be the vault's address only (https://NAME.vault.azure.net), without path, query or credentials",
            s.vault_url
        ));
    }
    let vault_host = domain.to_ascii_lowercase();
    let vault_port = url.port_or_known_default().unwrap_or(443);
    let vault_name = vault_host
        .split('.')
        .next()
        .unwrap_or(vault_host.as_str())
        .to_owned();
    let authority_host = match s.authority_host {
        Some(a) => Some(check_https_origin(&a, "authorityHost")?),
        None => None,
    };
    let endpoint = match s.endpoint {
        Some(e) => Some(check_https_origin(&e, "endpoint")?),
        None => None,
    };
    match &s.auth {
        AuthSettings::Default => {}
        AuthSettings::ManagedIdentity {
            client_id,
            object_id,
            resource_id,
        } => {
            let given = [client_id, object_id, resource_id]
                .iter()
                .filter(|v| v.is_some())
                .count();
            if given > 1 {
                return Err(
                    "auth: give at most one of clientId, objectId and resourceId for a user-assigned managed identity".into(),
                );
            }
            for (key, value) in [
                ("clientId", client_id),
                ("objectId", object_id),
                ("resourceId", resource_id),
            ] {
                if value.as_deref().is_some_and(str::is_empty) {
                    return Err(format!("auth.{key} must not be empty"));
                }
            }
        }
        AuthSettings::WorkloadIdentity {
            tenant_id,
            client_id,
            ..
        } => {
            if let Some(t) = tenant_id {
                check_tenant(t)?;
            }
            if client_id.as_deref().is_some_and(str::is_empty) {
                return Err("auth.clientId must not be empty".into());
            }
        }
        AuthSettings::ClientSecret {
            tenant_id,
            client_id,
            ..
        }
        | AuthSettings::ClientCertificate {
            tenant_id,
            client_id,
            ..
        } => {
            check_tenant(tenant_id)?;
            if client_id.is_empty() {
                return Err("auth.clientId must not be empty".into());
            }
        }
    }
    // Key Vault encrypts secrets with the vault's own keys.
    if config.kms_key_id.is_some() || config.allows_override("kmsKeyId") {
        return Err(
            "kmsKeyId: Key Vault secrets take no KMS key (the vault encrypts them with its own keys); remove kmsKeyId and the kmsKeyId override".into(),
        );
    }
    Ok(Parsed {
        vault_url,
        vault_host,
        vault_port,
        vault_name,
        auth: s.auth,
        authority_host,
        endpoint,
        ca_file: s.ca_file,
        recover_soft_deleted: s.recover_soft_deleted,
    })
}

/// An `https://host[:port]` origin (a trailing `/` is dropped); errors name
/// the setting.
fn check_https_origin(value: &str, key: &str) -> Result<String, String> {
    let trimmed = value.trim_end_matches('/');
    let url = Url::parse(trimmed).map_err(|e| format!("{key} {value:?} is not a URL: {e}"))?;
    if url.scheme() != "https" || url.host_str().is_none() {
        return Err(format!(
            "{key} {value:?} must be an https:// URL with a host (tokens and values are sent over TLS only)"
        ));
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{key} {value:?} must be scheme, host and port only, without path or query"
        ));
    }
    Ok(trimmed.to_owned())
}

fn check_tenant(tenant: &str) -> Result<(), String> {
    if tenant.is_empty()
        || !tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    {
        return Err(format!(
            "auth.tenantId {tenant:?} is not a tenant id (a GUID or a domain like contoso.onmicrosoft.com)"
        ));
    }
    Ok(())
}

/// Checks the settings without connecting anywhere or reading files.
pub fn validate(config: &StoreConfig) -> Result<(), String> {
    settings(config).map(|_| ())
}

/// Maps a logical remote name to a Key Vault secret name: `/`, `.` and `_`
/// become `-`; other characters outside `[0-9a-zA-Z-]` are refused.
pub fn secret_name(logical: &str) -> Result<String, String> {
    if logical.is_empty() {
        return Err("remote name is empty".into());
    }
    let mut out = String::with_capacity(logical.len());
    for c in logical.chars() {
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' => out.push(c),
            '/' | '.' | '_' => out.push('-'),
            other => {
                return Err(format!(
                    "character {other:?} is not allowed in Key Vault secret names (letters, digits and -; / . _ become -)"
                ));
            }
        }
    }
    if out.len() > MAX_NAME_CHARS {
        return Err(format!(
            "Key Vault secret names have at most {MAX_NAME_CHARS} characters; this one has {}",
            out.len()
        ));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// The SDK's transport: the shared HTTPS client.

/// Sends the SDK's requests with the shared client, optionally routing the
/// vault's requests to `endpoint`.
#[derive(Clone)]
struct SdkTransport {
    http: HttpClient,
    route: Option<Route>,
}

#[derive(Clone)]
struct Route {
    vault_host: String,
    vault_port: u16,
    /// `https://host:port` to connect to.
    target: String,
    /// The vault's authority, as the `Host` header.
    host: http::HeaderValue,
}

impl std::fmt::Debug for SdkTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SdkTransport")
            .field("endpoint", &self.route.as_ref().map(|r| r.target.as_str()))
            .finish_non_exhaustive()
    }
}

impl SdkTransport {
    /// Where a request goes, and the `Host` header it needs when rerouted.
    fn target(&self, url: &Url) -> (String, Option<http::HeaderValue>) {
        if let Some(r) = &self.route
            && url.host_str() == Some(r.vault_host.as_str())
            && url.port_or_known_default() == Some(r.vault_port)
        {
            let mut target = format!("{}{}", r.target, url.path());
            if let Some(q) = url.query() {
                target.push('?');
                target.push_str(q);
            }
            return (target, Some(r.host.clone()));
        }
        (url.as_str().to_owned(), None)
    }
}

fn sdk_error(kind: ErrorKind, message: String) -> azure_core::Error {
    azure_core::Error::with_message(kind, message)
}

#[async_trait]
impl azure_core::http::HttpClient for SdkTransport {
    async fn execute_request(&self, request: &SdkRequest) -> azure_core::Result<AsyncRawResponse> {
        let method = http::Method::from_bytes(request.method().as_str().as_bytes())
            .map_err(|e| sdk_error(ErrorKind::Other, format!("HTTP method: {e}")))?;
        let (target, host) = self.target(request.url());
        let mut headers: Vec<(http::HeaderName, http::HeaderValue)> = Vec::new();
        for (name, value) in request.headers().iter() {
            let name = http::HeaderName::from_bytes(name.as_str().as_bytes()).map_err(|e| {
                sdk_error(
                    ErrorKind::Other,
                    format!("header name {:?}: {e}", name.as_str()),
                )
            })?;
            let mut value = http::HeaderValue::from_str(value.as_str()).map_err(|_| {
                sdk_error(
                    ErrorKind::Other,
                    format!("the value of header {name} is not a valid header value"),
                )
            })?;
            if name == http::header::AUTHORIZATION {
                value.set_sensitive(true);
            }
            headers.push((name, value));
        }
        if let Some(host) = host {
            headers.retain(|(k, _)| *k != http::header::HOST);
            headers.push((http::header::HOST, host));
        }
        let body: Bytes = match request.body() {
            SdkBody::Bytes(b) => b.clone(),
            SdkBody::SeekableStream(_) => {
                return Err(sdk_error(
                    ErrorKind::Other,
                    "streaming request bodies are not supported".into(),
                ));
            }
        };
        let body = (!body.is_empty()).then_some(body);
        let response = self
            .http
            .request(method, &target, &headers, body)
            .await
            .map_err(|e| match e {
                HttpError::Unavailable(m) if m.contains("connection refused") => {
                    sdk_error(ErrorKind::Connection, m)
                }
                HttpError::Unavailable(m) => sdk_error(ErrorKind::Io, m),
                HttpError::Invalid(m) => sdk_error(ErrorKind::Other, m),
            })?;
        let mut map: HashMap<SdkHeaderName, SdkHeaderValue> = HashMap::new();
        for (name, value) in response.headers.iter() {
            let Ok(value) = value.to_str() else { continue };
            let key = SdkHeaderName::from(name.as_str().to_owned());
            let joined = match map.get(&key) {
                Some(existing) => format!("{}, {value}", existing.as_str()),
                None => value.to_owned(),
            };
            map.insert(key, SdkHeaderValue::from(joined));
        }
        Ok(AsyncRawResponse::from_bytes(
            SdkStatus::from(response.status.as_u16()),
            SdkHeaders::from(map),
            response.body,
        ))
    }
}

/// Client options for every SDK pipeline: our transport, one retry at most
/// (a second attempt must still fit in the deadline).
fn client_options(
    transport: &Transport,
    deadline: Duration,
    cloud: Option<Arc<CloudConfiguration>>,
) -> ClientOptions {
    let millis = i64::try_from(deadline.as_millis()).unwrap_or(i64::MAX);
    let retry = RetryOptions::exponential(ExponentialRetryOptions {
        initial_delay: azure_core::time::Duration::milliseconds(100),
        max_retries: 1,
        max_total_elapsed: azure_core::time::Duration::milliseconds(millis),
        max_delay: azure_core::time::Duration::milliseconds(500),
    });
    ClientOptions {
        transport: Some(transport.clone()),
        retry,
        cloud,
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------
// Credentials.

/// The Entra ID authority: configured, `AZURE_AUTHORITY_HOST`, or the one of
/// the vault's cloud.
fn authority_for(parsed: &Parsed) -> Result<String, String> {
    if let Some(a) = &parsed.authority_host {
        return Ok(a.clone());
    }
    if let Ok(env) = std::env::var(ENV_AUTHORITY_HOST)
        && !env.trim().is_empty()
    {
        return check_https_origin(env.trim(), ENV_AUTHORITY_HOST);
    }
    let host = parsed.vault_host.as_str();
    Ok(if host.ends_with(".vault.azure.cn") {
        "https://login.chinacloudapi.cn".to_owned()
    } else if host.ends_with(".vault.usgovcloudapi.net") {
        "https://login.microsoftonline.us".to_owned()
    } else {
        PUBLIC_AUTHORITY.to_owned()
    })
}

// `CustomConfiguration` is non-exhaustive: it cannot be built literally.
#[allow(clippy::field_reassign_with_default)]
fn cloud_for(authority: &str) -> Arc<CloudConfiguration> {
    let mut custom = CustomConfiguration::default();
    custom.authority_host = authority.to_owned();
    Arc::new(CloudConfiguration::Custom(custom))
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A credential and a description of the identity, for messages.
struct Credential {
    credential: Arc<dyn TokenCredential>,
    identity: String,
}

fn credential(
    parsed: &Parsed,
    transport: &Transport,
    deadline: Duration,
) -> Result<Credential, String> {
    let authority = authority_for(parsed)?;
    let entra = || client_options(transport, deadline, Some(cloud_for(&authority)));
    let auth = match &parsed.auth {
        AuthSettings::Default => {
            if env_var(ENV_FEDERATED_TOKEN_FILE).is_some() {
                AuthSettings::WorkloadIdentity {
                    tenant_id: None,
                    client_id: None,
                    token_file: None,
                }
            } else if env_var(ENV_CLIENT_SECRET).is_some() {
                let tenant_id = env_var(ENV_TENANT_ID).ok_or_else(|| {
                    format!("auth: {ENV_CLIENT_SECRET} is set but {ENV_TENANT_ID} is not")
                })?;
                check_tenant(&tenant_id)?;
                let client_id = env_var(ENV_CLIENT_ID).ok_or_else(|| {
                    format!("auth: {ENV_CLIENT_SECRET} is set but {ENV_CLIENT_ID} is not")
                })?;
                let secret = Zeroizing::new(env_var(ENV_CLIENT_SECRET).unwrap_or_default());
                let credential = ClientSecretCredential::new(
                    &tenant_id,
                    client_id.clone(),
                    CredentialSecret::new(secret.trim().to_owned()),
                    Some(ClientSecretCredentialOptions {
                        client_options: entra(),
                    }),
                )
                .map_err(|e| format!("auth (client secret from {ENV_CLIENT_SECRET}): {e}"))?;
                tracing::info!(
                    client_id = %client_id,
                    "azure-key-vault: using the client secret from the environment"
                );
                return Ok(Credential {
                    credential,
                    identity: format!("client {client_id} (client secret)"),
                });
            } else {
                AuthSettings::ManagedIdentity {
                    client_id: env_var(ENV_CLIENT_ID),
                    object_id: None,
                    resource_id: None,
                }
            }
        }
        other => other.clone(),
    };
    match auth {
        AuthSettings::Default => Err("auth: no credential source".into()),
        AuthSettings::ManagedIdentity {
            client_id,
            object_id,
            resource_id,
        } => {
            let (id, identity) = match (client_id, object_id, resource_id) {
                (Some(c), _, _) => (
                    Some(UserAssignedId::ClientId(c.clone())),
                    format!("managed identity with client id {c}"),
                ),
                (None, Some(o), _) => (
                    Some(UserAssignedId::ObjectId(o.clone())),
                    format!("managed identity with object id {o}"),
                ),
                (None, None, Some(r)) => (
                    Some(UserAssignedId::ResourceId(r.clone())),
                    format!("managed identity {r}"),
                ),
                (None, None, None) => (None, "the system-assigned managed identity".to_owned()),
            };
            let options = ManagedIdentityCredentialOptions {
                user_assigned_id: id,
                client_options: client_options(transport, deadline, None),
            };
            let credential = ManagedIdentityCredential::new(Some(options))
                .map_err(|e| format!("auth (managedIdentity): {}", one_line(&e.to_string())))?;
            Ok(Credential {
                credential,
                identity,
            })
        }
        AuthSettings::WorkloadIdentity {
            tenant_id,
            client_id,
            token_file,
        } => {
            let tenant_id = tenant_id.or_else(|| env_var(ENV_TENANT_ID)).ok_or_else(|| {
                format!("auth.tenantId is not set and neither is {ENV_TENANT_ID} (the workload identity webhook sets it on pods labelled azure.workload.identity/use: \"true\")")
            })?;
            check_tenant(&tenant_id)?;
            let client_id = client_id.or_else(|| env_var(ENV_CLIENT_ID)).ok_or_else(|| {
                format!("auth.clientId is not set and neither is {ENV_CLIENT_ID} (set it, or annotate the service account with azure.workload.identity/client-id)")
            })?;
            let token_file = token_file
                .or_else(|| env_var(ENV_FEDERATED_TOKEN_FILE).map(PathBuf::from))
                .ok_or_else(|| {
                    format!("auth.tokenFile is not set and neither is {ENV_FEDERATED_TOKEN_FILE}")
                })?;
            check_readable(&token_file, "tokenFile")?;
            let options = WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions {
                    client_options: entra(),
                },
                client_id: Some(client_id.clone()),
                tenant_id: Some(tenant_id),
                token_file_path: Some(token_file),
            };
            let credential = WorkloadIdentityCredential::new(Some(options))
                .map_err(|e| format!("auth (workloadIdentity): {}", one_line(&e.to_string())))?;
            Ok(Credential {
                credential,
                identity: format!("client {client_id} (workload identity)"),
            })
        }
        AuthSettings::ClientSecret {
            tenant_id,
            client_id,
            client_secret_file,
        } => {
            read_secret_file(&client_secret_file, "clientSecretFile")?;
            let credential = Arc::new(SecretFileCredential {
                tenant_id,
                client_id: client_id.clone(),
                path: client_secret_file,
                options: entra(),
                current: tokio::sync::Mutex::new(None),
            });
            Ok(Credential {
                credential,
                identity: format!("client {client_id} (client secret)"),
            })
        }
        AuthSettings::ClientCertificate {
            tenant_id,
            client_id,
            certificate_file,
            key_file,
        } => {
            let audience = Url::parse(&authority)
                .and_then(|a| a.join(&format!("/{tenant_id}/oauth2/v2.0/token")))
                .map_err(|e| format!("auth.tenantId {tenant_id:?}: {e}"))?
                .to_string();
            let assertion = CertificateAssertion::load(
                &client_id,
                audience,
                &certificate_file,
                key_file.as_deref(),
            )?;
            let credential: Arc<dyn TokenCredential> = ClientAssertionCredential::new(
                tenant_id,
                client_id.clone(),
                assertion,
                Some(ClientAssertionCredentialOptions {
                    client_options: entra(),
                }),
            )
            .map_err(|e| format!("auth (clientCertificate): {}", one_line(&e.to_string())))?;
            Ok(Credential {
                credential,
                identity: format!("client {client_id} (certificate)"),
            })
        }
    }
}

fn check_readable(path: &Path, key: &str) -> Result<(), String> {
    std::fs::metadata(path)
        .map(|_| ())
        .map_err(|e| format!("auth.{key} {}: {e}", path.display()))
}

/// Reads a credential file: trimmed, not empty; errors name the setting.
fn read_secret_file(path: &Path, key: &str) -> Result<Zeroizing<String>, String> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| format!("auth.{key} {}: {e}", path.display()))?,
    );
    let trimmed = Zeroizing::new(text.trim().to_owned());
    if trimmed.is_empty() {
        return Err(format!("auth.{key} {} is empty", path.display()));
    }
    Ok(trimmed)
}

/// A client secret from a file: re-read whenever the SDK needs a new token,
/// so a rotated file (a Secret volume) takes effect without a restart.
struct SecretFileCredential {
    tenant_id: String,
    client_id: String,
    path: PathBuf,
    options: ClientOptions,
    current: tokio::sync::Mutex<Option<(Zeroizing<String>, Arc<ClientSecretCredential>)>>,
}

impl std::fmt::Debug for SecretFileCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretFileCredential")
            .field("client_id", &self.client_id)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl TokenCredential for SecretFileCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let text = Zeroizing::new(tokio::fs::read_to_string(&self.path).await.map_err(|e| {
            sdk_error(
                ErrorKind::Credential,
                format!("auth.clientSecretFile {}: {e}", self.path.display()),
            )
        })?);
        let secret = Zeroizing::new(text.trim().to_owned());
        if secret.is_empty() {
            return Err(sdk_error(
                ErrorKind::Credential,
                format!("auth.clientSecretFile {} is empty", self.path.display()),
            ));
        }
        let credential = {
            let mut current = self.current.lock().await;
            match current.as_ref() {
                Some((known, credential)) if *known == secret => credential.clone(),
                _ => {
                    let credential = ClientSecretCredential::new(
                        &self.tenant_id,
                        self.client_id.clone(),
                        CredentialSecret::new(String::clone(&secret)),
                        Some(ClientSecretCredentialOptions {
                            client_options: self.options.clone(),
                        }),
                    )?;
                    *current = Some((secret, credential.clone()));
                    credential
                }
            }
        };
        credential.get_token(scopes, options).await
    }
}

/// A client assertion signed with a certificate's RSA key (RS256, `x5t`
/// thumbprint header), as Entra ID takes for certificate credentials.
struct CertificateAssertion {
    client_id: String,
    audience: String,
    /// base64url SHA-1 thumbprint of the certificate.
    x5t: String,
    key: aws_lc_rs::signature::RsaKeyPair,
}

impl std::fmt::Debug for CertificateAssertion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAssertion")
            .field("client_id", &self.client_id)
            .field("x5t", &self.x5t)
            .finish_non_exhaustive()
    }
}

impl CertificateAssertion {
    fn load(
        client_id: &str,
        audience: String,
        certificate_file: &Path,
        key_file: Option<&Path>,
    ) -> Result<Self, String> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let cert = CertificateDer::from_pem_file(certificate_file).map_err(|e| {
            format!(
                "auth.certificateFile {}: no PEM certificate: {e}",
                certificate_file.display()
            )
        })?;
        let (key_path, key_setting) = match key_file {
            Some(k) => (k, "keyFile"),
            None => (certificate_file, "certificateFile"),
        };
        let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
            format!(
                "auth.{key_setting} {}: no PEM private key: {e}",
                key_path.display()
            )
        })?;
        let rejected = |e: aws_lc_rs::error::KeyRejected| {
            format!(
                "auth.{key_setting} {}: not a usable RSA key: {e}",
                key_path.display()
            )
        };
        let key = match &key {
            PrivateKeyDer::Pkcs8(k) => {
                aws_lc_rs::signature::RsaKeyPair::from_pkcs8(k.secret_pkcs8_der())
                    .map_err(rejected)?
            }
            PrivateKeyDer::Pkcs1(k) => {
                aws_lc_rs::signature::RsaKeyPair::from_der(k.secret_pkcs1_der())
                    .map_err(rejected)?
            }
            _ => {
                return Err(format!(
                    "auth.{key_setting} {}: Entra ID certificate credentials need an RSA key",
                    key_path.display()
                ));
            }
        };
        let thumbprint =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, cert.as_ref());
        Ok(Self {
            client_id: client_id.to_owned(),
            audience,
            x5t: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(thumbprint.as_ref()),
            key,
        })
    }

    fn jwt(&self) -> Result<String, String> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let header = json!({ "alg": "RS256", "typ": "JWT", "x5t": self.x5t });
        let claims = json!({
            "aud": self.audience,
            "iss": self.client_id,
            "sub": self.client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
            "nbf": now,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
        });
        let signing_input = format!(
            "{}.{}",
            b64.encode(header.to_string()),
            b64.encode(claims.to_string())
        );
        let mut signature = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| "signing the client assertion failed".to_owned())?;
        Ok(format!("{signing_input}.{}", b64.encode(&signature)))
    }
}

#[async_trait]
impl ClientAssertion for CertificateAssertion {
    async fn secret(
        &self,
        _options: Option<ClientMethodOptions<'_>>,
    ) -> azure_core::Result<String> {
        self.jwt().map_err(|e| sdk_error(ErrorKind::Credential, e))
    }
}

// ---------------------------------------------------------------------------
// Errors.

#[derive(Default, Deserialize)]
struct KvErrorBody {
    #[serde(default)]
    error: Option<KvError>,
}

#[derive(Default, Deserialize)]
struct KvError {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default, rename = "innererror")]
    inner: Option<KvInnerError>,
}

#[derive(Default, Deserialize)]
struct KvInnerError {
    #[serde(default)]
    code: Option<String>,
}

/// What Key Vault answered, when it answered with an error status.
#[derive(Debug, Default)]
struct Refusal {
    status: u16,
    code: Option<String>,
    inner: Option<String>,
    message: String,
}

fn refusal(err: &azure_core::Error) -> Option<Refusal> {
    let ErrorKind::HttpResponse {
        status,
        error_code,
        raw_response,
    } = err.kind()
    else {
        return None;
    };
    let body: KvErrorBody = raw_response
        .as_ref()
        .and_then(|r| serde_json::from_slice(r.body().as_ref()).ok())
        .unwrap_or_default();
    let detail = body.error.unwrap_or_default();
    Some(Refusal {
        status: u16::from(*status),
        code: error_code.clone().or(detail.code),
        inner: detail.inner.and_then(|i| i.code),
        message: detail.message.unwrap_or_default(),
    })
}

fn status_of(err: &azure_core::Error) -> Option<u16> {
    err.http_status().map(u16::from)
}

fn inner_code_is(err: &azure_core::Error, code: &str) -> bool {
    refusal(err).is_some_and(|r| r.inner.as_deref() == Some(code))
}

/// The kinds of an SDK error and of the SDK errors it wraps.
fn kinds(err: &azure_core::Error) -> Vec<ErrorKind> {
    let mut out = Vec::new();
    let mut next: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = next {
        if let Some(sdk) = e.downcast_ref::<azure_core::Error>() {
            out.push(sdk.kind().clone());
        }
        next = e.source();
    }
    out
}

/// The innermost message of an error chain, on one line.
fn root_cause(err: &(dyn StdError + 'static)) -> String {
    let mut last = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        let text = e.to_string();
        if !text.trim().is_empty() {
            last = text;
        }
        next = e.source();
    }
    one_line(&last)
}

/// What an error mapping needs to know about the call.
struct Call<'a> {
    /// `GetSecret`, `SetSecret`, `RecoverDeletedSecret`.
    op: &'static str,
    name: &'a RemoteName,
    /// The value being written, scrubbed from any message.
    payload: Option<&'a SecretValue>,
}

// ---------------------------------------------------------------------------
// The store.

pub struct AzureKeyVaultStore {
    client: SecretClient,
    vault_url: String,
    vault_name: String,
    /// `endpoint` when set, else the vault URL: where requests go.
    target: String,
    identity: String,
    auth_method: &'static str,
    recover_soft_deleted: bool,
    deadline: Duration,
    locks: Box<[tokio::sync::Mutex<()>]>,
}

/// A value and its tags, ready to write.
struct Prepared {
    value: Zeroizing<String>,
    tags: BTreeMap<String, String>,
    content_type: Option<String>,
}

impl AzureKeyVaultStore {
    /// Builds the client once; it is shared by all reviews. Reads the
    /// credential files (naming the one that is missing) and the CA file;
    /// contacts nothing.
    pub async fn build(config: &StoreConfig) -> Result<Self, String> {
        let s = settings(config)?;
        let deadline = config.deadline.unwrap_or(DEFAULT_DEADLINE);
        let http = HttpClient::new(&HttpConfig {
            ca_file: s.ca_file.clone(),
            connect_timeout: CONNECT_TIMEOUT.min(deadline),
            request_timeout: deadline,
        })?;
        let route = match &s.endpoint {
            Some(target) => {
                let authority = if s.vault_port == 443 {
                    s.vault_host.clone()
                } else {
                    format!("{}:{}", s.vault_host, s.vault_port)
                };
                Some(Route {
                    vault_host: s.vault_host.clone(),
                    vault_port: s.vault_port,
                    target: target.clone(),
                    host: http::HeaderValue::from_str(&authority)
                        .map_err(|e| format!("vaultUrl host {authority:?}: {e}"))?,
                })
            }
            None => None,
        };
        let transport = Transport::new(Arc::new(SdkTransport { http, route }));
        let Credential {
            credential,
            identity,
        } = credential(&s, &transport, deadline)?;
        let options = SecretClientOptions {
            client_options: client_options(&transport, deadline, None),
            ..Default::default()
        };
        let client = SecretClient::new(&s.vault_url, credential, Some(options))
            .map_err(|e| format!("vaultUrl {:?}: {}", s.vault_url, one_line(&e.to_string())))?;
        tracing::info!(
            vault = %s.vault_url,
            auth = s.auth.method(),
            identity = %identity,
            "azure-key-vault store ready (create-if-absent is check-then-set: Key Vault has no conditional create)"
        );
        Ok(Self {
            client,
            target: s.endpoint.clone().unwrap_or_else(|| s.vault_url.clone()),
            vault_url: s.vault_url,
            vault_name: s.vault_name,
            identity,
            auth_method: s.auth.method(),
            recover_soft_deleted: s.recover_soft_deleted,
            deadline,
            locks: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        })
    }

    /// The vault URL the store writes to.
    pub fn vault_url(&self) -> &str {
        &self.vault_url
    }

    fn lock(&self, name: &RemoteName) -> &tokio::sync::Mutex<()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        name.as_str().hash(&mut h);
        let i = (h.finish() as usize) % self.locks.len();
        &self.locks[i]
    }

    /// One SDK call under the store's deadline.
    async fn timed<T>(
        &self,
        op: &'static str,
        name: &RemoteName,
        fut: impl std::future::Future<Output = azure_core::Result<T>>,
    ) -> Result<azure_core::Result<T>, StoreError> {
        tokio::time::timeout(self.deadline, fut).await.map_err(|_| {
            StoreError::Unavailable(format!(
                "{op} {name}: no answer from {} within {} ms",
                self.target,
                self.deadline.as_millis()
            ))
        })
    }

    fn deleted_hint(&self, name: &RemoteName) -> String {
        format!(
            "recover it (az keyvault secret recover --vault-name {v} --name {name}) or purge it \
             (az keyvault secret purge --vault-name {v} --name {name}), or set recoverSoftDeleted: true \
             on the store to recover it automatically",
            v = self.vault_name
        )
    }

    /// Turns an SDK error into a `StoreError` with a short message naming
    /// the operation, the secret and the cause; never a value.
    fn map_error(&self, err: &azure_core::Error, call: &Call<'_>) -> StoreError {
        let what = format!("{} {}", call.op, call.name);
        if let Some(r) = refusal(err) {
            let code = r.code.clone().unwrap_or_default();
            let inner = r.inner.clone().unwrap_or_default();
            let message = scrub(&r.message, call.payload);
            let label = match (code.is_empty(), inner.is_empty() || inner == code) {
                (true, _) => format!("HTTP {}", r.status),
                (false, true) => format!("HTTP {} {code}", r.status),
                (false, false) => format!("HTTP {} {code} ({inner})", r.status),
            };
            let detail = if message.is_empty() {
                label
            } else {
                format!("{label}: {message}")
            };
            return match (r.status, inner.as_str()) {
                (409, "ObjectIsDeletedButRecoverable") => StoreError::PendingDeletion(format!(
                    "{what}: secret {} in vault {} is deleted but recoverable (soft delete keeps its name until it is purged); {}",
                    call.name,
                    self.vault_name,
                    self.deleted_hint(call.name)
                )),
                (409, "ObjectIsBeingDeleted") => StoreError::PendingDeletion(format!(
                    "{what}: secret {} in vault {} is being deleted; once it is, {}",
                    call.name,
                    self.vault_name,
                    self.deleted_hint(call.name)
                )),
                (409, "ObjectIsBeingRecovered") => StoreError::Unavailable(format!(
                    "{what}: {detail}; the secret is being recovered, a retry shortly converges"
                )),
                (403, "SecretDisabled") => StoreError::Invalid(format!(
                    "{what}: secret {} in vault {} is disabled; enable it (az keyvault secret set-attributes --vault-name {} --name {} --enabled true) or remove it",
                    call.name, self.vault_name, self.vault_name, call.name
                )),
                (403, "ForbiddenByFirewall" | "ForbiddenByConnection") => {
                    StoreError::PermissionDenied(format!(
                        "{what}: {detail} (the vault's network rules do not admit this client)"
                    ))
                }
                (401, _) => StoreError::PermissionDenied(format!(
                    "{what}: {detail} (the vault did not accept the token of {}: is it from the vault's tenant?)",
                    self.identity
                )),
                (403, _) => StoreError::PermissionDenied(format!(
                    "{what}: {detail}; {PERMISSION_HINT} (identity: {})",
                    self.identity
                )),
                (429, _) => StoreError::Throttled(format!("{what}: {detail}")),
                (408 | 500..=599, _) => StoreError::Unavailable(format!("{what}: {detail}")),
                (400 | 404 | 405 | 409 | 413 | 415 | 422, _) => {
                    StoreError::Invalid(format!("{what}: {detail}"))
                }
                _ => StoreError::Other(format!("{what}: {detail}")),
            };
        }
        let kinds = kinds(err);
        let transport = kinds
            .iter()
            .any(|k| matches!(k, ErrorKind::Io | ErrorKind::Connection));
        let cause = scrub(&root_cause(err), call.payload);
        if kinds.iter().any(|k| matches!(k, ErrorKind::Credential)) {
            if transport {
                return StoreError::Unavailable(format!(
                    "{what}: getting an Entra ID token for {} failed: {cause}",
                    self.identity
                ));
            }
            let refused = kinds.iter().find_map(|k| match k {
                ErrorKind::HttpResponse {
                    status, error_code, ..
                } => Some((u16::from(*status), error_code.clone())),
                _ => None,
            });
            return StoreError::PermissionDenied(match refused {
                Some((status, code)) => format!(
                    "{what}: Entra ID refused the credential of {} (auth.method {}, HTTP {status}{}): {cause}",
                    self.identity,
                    self.auth_method,
                    code.map(|c| format!(", error codes {c}"))
                        .unwrap_or_default()
                ),
                None => format!(
                    "{what}: no Entra ID token for {} (auth.method {}): {cause}",
                    self.identity, self.auth_method
                ),
            });
        }
        if transport {
            return StoreError::Unavailable(format!("{what}: {cause}"));
        }
        let text = super::text::error_chain(Some(err), usize::MAX);
        if text.contains("doesn't match the requested domain") {
            return StoreError::Invalid(format!(
                "{what}: the vault's authentication challenge names a resource that is not the parent domain of vaultUrl {}: {}; \
                 check vaultUrl (https://NAME.vault.azure.net, or the vault domain of a sovereign cloud)",
                self.vault_url,
                truncate(text, 200)
            ));
        }
        match err.kind() {
            ErrorKind::DataConversion => StoreError::Other(format!(
                "{what}: unexpected answer from {}: {cause}",
                self.target
            )),
            _ => StoreError::Other(format!("{what}: {cause}")),
        }
    }

    /// The latest version; `None` when the secret is absent (or deleted).
    async fn get(&self, name: &RemoteName) -> Result<Option<RemoteEntry>, StoreError> {
        let call = Call {
            op: "GetSecret",
            name,
            payload: None,
        };
        let answer = self
            .timed(call.op, name, self.client.get_secret(name.as_str(), None))
            .await?;
        let secret = match answer.and_then(|r| r.into_model()) {
            Ok(secret) => secret,
            Err(e) => {
                let absent = refusal(&e).is_some_and(|r| {
                    r.status == 404
                        && matches!(r.code.as_deref(), Some("SecretNotFound") | Some("NotFound"))
                });
                if absent {
                    return Ok(None);
                }
                return Err(self.map_error(&e, &call));
            }
        };
        self.entry_of(name, secret).map(Some)
    }

    fn entry_of(&self, name: &RemoteName, mut secret: KvSecret) -> Result<RemoteEntry, StoreError> {
        let value = Zeroizing::new(secret.value.take().unwrap_or_default());
        if secret.attributes.as_ref().and_then(|a| a.enabled) == Some(false) {
            return Err(StoreError::Invalid(format!(
                "GetSecret {name}: secret {name} in vault {} is disabled; enable it (az keyvault secret set-attributes --vault-name {} --name {name} --enabled true) or remove it",
                self.vault_name, self.vault_name
            )));
        }
        let version = version_of(&secret);
        let tags: BTreeMap<String, String> =
            secret.tags.take().unwrap_or_default().into_iter().collect();
        let payload = if tags.get(TAG_ENCODING).map(String::as_str) == Some(ENCODING_BASE64) {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(value.trim().as_bytes())
                .map_err(|e| {
                    StoreError::Other(format!(
                        "GetSecret {name}: the value is tagged {TAG_ENCODING}: {ENCODING_BASE64} but is not base64: {e}"
                    ))
                })?;
            SecretValue::new(bytes)
        } else {
            SecretValue::new(value.as_bytes().to_vec())
        };
        Ok(RemoteEntry {
            payload,
            tags,
            version,
        })
    }

    /// `SetSecret`: a new version with the value, tags and content type.
    /// The SDK error is returned as it is, for the caller to look at.
    async fn set(
        &self,
        name: &RemoteName,
        prepared: &Prepared,
    ) -> Result<azure_core::Result<Option<String>>, StoreError> {
        let content = request_body(prepared)?;
        let answer = self
            .timed(
                "SetSecret",
                name,
                self.client.set_secret(name.as_str(), content, None),
            )
            .await?;
        Ok(answer.and_then(|r| r.into_model()).map(|mut secret| {
            if let Some(v) = secret.value.as_mut() {
                v.zeroize();
            }
            version_of(&secret)
        }))
    }

    /// Recovers a soft-deleted secret and waits until it is readable.
    async fn recover(&self, name: &RemoteName) -> Result<RemoteEntry, StoreError> {
        let call = Call {
            op: "RecoverDeletedSecret",
            name,
            payload: None,
        };
        let answer = self
            .timed(
                call.op,
                name,
                self.client.recover_deleted_secret(name.as_str(), None),
            )
            .await?;
        match answer.and_then(|r| r.into_model()) {
            Ok(mut secret) => {
                if let Some(v) = secret.value.as_mut() {
                    v.zeroize();
                }
            }
            // Another replica is recovering it, or it is back already.
            Err(e) if matches!(status_of(&e), Some(404 | 409)) => {}
            Err(e) => return Err(self.map_error(&e, &call)),
        }
        tracing::info!(remote = %name, vault = %self.vault_url, "recovered a soft-deleted Key Vault secret (recoverSoftDeleted)");
        // Recovery completes in the background: poll until it is readable.
        let started = Instant::now();
        let mut wait = Duration::from_millis(100);
        loop {
            if let Some(entry) = self.get(name).await? {
                return Ok(entry);
            }
            if started.elapsed() + wait >= self.deadline {
                return Err(StoreError::Unavailable(format!(
                    "RecoverDeletedSecret {name}: the recovery was started and the secret is not readable yet; a retry converges"
                )));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(1));
        }
    }

    /// Writes a new version; recovers a soft-deleted secret first when the
    /// store allows it.
    async fn write(
        &self,
        name: &RemoteName,
        payload: &SecretValue,
        prepared: &Prepared,
    ) -> Result<Option<String>, StoreError> {
        let call = Call {
            op: "SetSecret",
            name,
            payload: Some(payload),
        };
        match self.set(name, prepared).await? {
            Ok(version) => Ok(version),
            Err(e)
                if self.recover_soft_deleted
                    && inner_code_is(&e, "ObjectIsDeletedButRecoverable") =>
            {
                self.recover(name).await?;
                self.set(name, prepared)
                    .await?
                    .map_err(|e| self.map_error(&e, &call))
            }
            Err(e) => Err(self.map_error(&e, &call)),
        }
    }
}

/// The version id: the last segment of the secret's id
/// (`https://NAME.vault.azure.net/secrets/NAME/VERSION`).
fn version_of(secret: &KvSecret) -> Option<String> {
    secret
        .resource_id()
        .ok()
        .and_then(|r| r.version)
        .filter(|v| !v.is_empty())
}

/// Checks the value and tags against Key Vault's limits before anything is
/// written.
fn prepare(
    payload: &SecretValue,
    owner: &Ownership,
    options: &WriteOptions,
) -> Result<Prepared, StoreError> {
    let mut tags = options.tags.clone();
    tags.extend(owner.tags());
    let value = match std::str::from_utf8(payload.expose()) {
        Ok(text) => {
            tags.remove(TAG_ENCODING);
            Zeroizing::new(text.to_owned())
        }
        Err(_) => {
            tags.insert(TAG_ENCODING.to_owned(), ENCODING_BASE64.to_owned());
            Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(payload.expose()))
        }
    };
    if value.len() > MAX_VALUE_BYTES {
        return Err(StoreError::Invalid(format!(
            "the value is {} bytes{}; Key Vault takes at most {MAX_VALUE_BYTES} bytes per secret",
            value.len(),
            if tags.contains_key(TAG_ENCODING) {
                " after base64 (it is binary)"
            } else {
                ""
            }
        )));
    }
    if tags.len() > MAX_TAGS {
        return Err(StoreError::Invalid(format!(
            "{} tags ({} for ownership{}, the rest from the store's tags and the destination); Key Vault allows at most {MAX_TAGS} per secret",
            tags.len(),
            owner.tags().len(),
            if tags.contains_key(TAG_ENCODING) {
                format!(", 1 for {TAG_ENCODING}")
            } else {
                String::new()
            }
        )));
    }
    for (k, v) in &tags {
        if k.is_empty() || k.chars().count() > MAX_TAG_NAME_CHARS {
            return Err(StoreError::Invalid(format!(
                "tag name {:?} must have 1 to {MAX_TAG_NAME_CHARS} characters for Key Vault",
                truncate(k.clone(), 60)
            )));
        }
        if v.chars().count() > MAX_TAG_VALUE_CHARS {
            return Err(StoreError::Invalid(format!(
                "the value of tag {k:?} is longer than Key Vault's {MAX_TAG_VALUE_CHARS} characters"
            )));
        }
    }
    let content_type = (!options.content_type.is_empty()).then(|| options.content_type.to_owned());
    if content_type
        .as_deref()
        .is_some_and(|c| c.chars().count() > MAX_CONTENT_TYPE_CHARS)
    {
        return Err(StoreError::Invalid(format!(
            "the content type is longer than Key Vault's {MAX_CONTENT_TYPE_CHARS} characters"
        )));
    }
    Ok(Prepared {
        value,
        tags,
        content_type,
    })
}

/// The `SetSecret` body, serialized once; the copy of the value in the
/// parameters is wiped.
fn request_body(prepared: &Prepared) -> Result<RequestContent<SetSecretParameters>, StoreError> {
    let mut params = SetSecretParameters {
        value: Some(String::clone(&prepared.value)),
        tags: Some(
            prepared
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<String, String>>(),
        ),
        content_type: prepared.content_type.clone(),
        ..Default::default()
    };
    let body = serde_json::to_vec(&params);
    if let Some(v) = params.value.as_mut() {
        v.zeroize();
    }
    let body = body.map_err(|e| StoreError::Invalid(format!("SetSecret request body: {e}")))?;
    Ok(RequestContent::from(body))
}

#[async_trait]
impl SecretStore for AzureKeyVaultStore {
    fn kind(&self) -> &'static str {
        TYPE
    }

    /// Key Vault has no conditional create (see the module docs).
    fn atomic_create(&self) -> bool {
        false
    }

    fn remote_name(&self, logical: &str) -> Result<RemoteName, String> {
        secret_name(logical).map(RemoteName::new_unchecked)
    }

    async fn read(&self, name: &RemoteName) -> Result<Option<RemoteEntry>, StoreError> {
        self.get(name).await
    }

    async fn create_if_absent(
        &self,
        name: &RemoteName,
        payload: &SecretValue,
        owner: &Ownership,
        options: &WriteOptions,
    ) -> Result<CreateOutcome, StoreError> {
        let prepared = prepare(payload, owner, options)?;
        let _guard = self.lock(name).lock().await;
        if let Some(existing) = self.get(name).await? {
            return Ok(CreateOutcome::Exists(existing));
        }
        let call = Call {
            op: "SetSecret",
            name,
            payload: Some(payload),
        };
        let version = match self.set(name, &prepared).await? {
            Ok(version) => version,
            Err(e) if inner_code_is(&e, "ObjectIsDeletedButRecoverable") => {
                if !self.recover_soft_deleted {
                    return Err(self.map_error(&e, &call));
                }
                // Recovered, it is an existing entry like any other: the
                // engine checks its ownership.
                return Ok(CreateOutcome::Exists(self.recover(name).await?));
            }
            Err(e) => return Err(self.map_error(&e, &call)),
        };
        let Some(version) = version else {
            return Ok(CreateOutcome::Created { version: None });
        };
        // No conditional create: whoever wrote the latest version wins.
        match self.get(name).await? {
            Some(latest) if latest.version.as_deref() != Some(version.as_str()) => {
                Ok(CreateOutcome::Exists(latest))
            }
            Some(_) => Ok(CreateOutcome::Created {
                version: Some(version),
            }),
            None => Err(StoreError::Other(format!(
                "SetSecret {name}: version {version} was written and the secret was gone when read back (deleted concurrently); a retry converges"
            ))),
        }
    }

    async fn put(
        &self,
        name: &RemoteName,
        payload: &SecretValue,
        owner: &Ownership,
        options: &WriteOptions,
    ) -> Result<Option<String>, StoreError> {
        let prepared = prepare(payload, owner, options)?;
        let _guard = self.lock(name).lock().await;
        self.write(name, payload, &prepared).await
    }
}

/// A service message made safe to show (see [`super::text::redact`]).
fn scrub(message: &str, payload: Option<&SecretValue>) -> String {
    super::text::redact(message, payload, Vec::new(), 240)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn config(settings: Value) -> StoreConfig {
        let mut c: StoreConfig = serde_json::from_value(json!({
            "name": "kv",
            "type": TYPE,
            "namespaces": ["*"],
        }))
        .unwrap();
        c.settings = settings.as_object().unwrap().clone();
        c
    }

    #[test]
    fn names_map_to_key_vault_rules() {
        assert_eq!(secret_name("k8s/shop/db").unwrap(), "k8s-shop-db");
        assert_eq!(secret_name("a.b_c-D9").unwrap(), "a-b-c-D9");
        assert!(secret_name("").unwrap_err().contains("empty"));
        assert!(secret_name("shop/db#1").unwrap_err().contains("'#'"));
        assert!(secret_name("shop/dé").unwrap_err().contains("'é'"));
        assert!(secret_name(&"a".repeat(127)).is_ok());
        assert!(secret_name(&"a".repeat(128)).unwrap_err().contains("127"));
    }

    #[test]
    fn settings_are_checked_with_the_key_named() {
        let ok = settings(&config(json!({
            "vaultUrl": "https://my-vault.vault.azure.net/",
            "auth": {"method": "clientSecret", "tenantId": "contoso.onmicrosoft.com", "clientId": "c", "clientSecretFile": "/s"},
            "endpoint": "https://127.0.0.1:8443/",
        })))
        .unwrap();
        assert_eq!(ok.vault_url, "https://my-vault.vault.azure.net");
        assert_eq!(ok.vault_name, "my-vault");
        assert_eq!(ok.vault_host, "my-vault.vault.azure.net");
        assert_eq!(ok.vault_port, 443);
        assert_eq!(ok.endpoint.as_deref(), Some("https://127.0.0.1:8443"));

        let cases = [
            (
                json!({"vaultUrl": "https://v.vault.azure.net", "vaultUri": "x"}),
                "vaultUri",
            ),
            (json!({}), "vaultUrl"),
            (json!({"vaultUrl": "http://v.vault.azure.net"}), "https://"),
            (json!({"vaultUrl": "https://127.0.0.1:8443"}), "DNS name"),
            (
                json!({"vaultUrl": "https://v.vault.azure.net/secrets"}),
                "without path",
            ),
            (
                json!({"vaultUrl": "https://v.vault.azure.net", "endpoint": "http://127.0.0.1:1"}),
                "endpoint",
            ),
            (
                json!({"vaultUrl": "https://v.vault.azure.net", "authorityHost": "login.microsoftonline.us"}),
                "authorityHost",
            ),
            (
                json!({"vaultUrl": "https://v.vault.azure.net", "auth": {"method": "password"}}),
                "password",
            ),
            (
                json!({"vaultUrl": "https://v.vault.azure.net", "auth": {"method": "clientSecret", "tenantId": "t", "clientId": "c"}}),
                "clientSecretFile",
            ),
            (
                json!({"vaultUrl": "https://v.vault.azure.net", "auth": {"method": "clientSecret", "tenantId": "t@x", "clientId": "c", "clientSecretFile": "/s"}}),
                "tenantId",
            ),
            (
                json!({"vaultUrl": "https://v.vault.azure.net", "auth": {"method": "managedIdentity", "clientId": "a", "objectId": "b"}}),
                "at most one",
            ),
            (
                json!({"vaultUrl": "https://v.vault.azure.net", "auth": {"method": "workloadIdentity", "tokenFil": "/t"}}),
                "tokenFil",
            ),
        ];
        for (settings_json, needle) in cases {
            let err = validate(&config(settings_json.clone())).unwrap_err();
            assert!(err.contains(needle), "{settings_json}: {err}");
        }
    }

    #[test]
    fn sovereign_clouds_get_their_authority() {
        // Only when neither authorityHost nor AZURE_AUTHORITY_HOST is set.
        if std::env::var(ENV_AUTHORITY_HOST).is_ok() {
            return;
        }
        let parsed = |url: &str| settings(&config(json!({ "vaultUrl": url }))).unwrap();
        assert_eq!(
            authority_for(&parsed("https://v.vault.azure.cn")).unwrap(),
            "https://login.chinacloudapi.cn"
        );
        assert_eq!(
            authority_for(&parsed("https://v.vault.usgovcloudapi.net")).unwrap(),
            "https://login.microsoftonline.us"
        );
        assert_eq!(
            authority_for(&parsed("https://v.vault.azure.net")).unwrap(),
            PUBLIC_AUTHORITY
        );
    }

    #[test]
    fn values_and_tags_are_checked_before_writing() {
        let owner = Ownership {
            cluster_id: "c".into(),
            namespace: "n".into(),
            name: "s".into(),
            key_set: "k".into(),
        };
        let text = prepare(
            &SecretValue::new(b"hello".to_vec()),
            &owner,
            &WriteOptions {
                content_type: "text/plain",
                ..Default::default()
            },
        )
        .unwrap();
        assert!(text.value.as_str() == "hello");
        assert!(!text.tags.contains_key(TAG_ENCODING));
        assert_eq!(text.content_type.as_deref(), Some("text/plain"));

        let binary = prepare(
            &SecretValue::new(vec![0xff, 0x00]),
            &owner,
            &WriteOptions::default(),
        )
        .unwrap();
        assert_eq!(
            binary.tags.get(TAG_ENCODING).map(String::as_str),
            Some(ENCODING_BASE64)
        );
        assert!(binary.value.as_str() == "/wA=");

        let big = prepare(
            &SecretValue::new(vec![b'x'; MAX_VALUE_BYTES + 1]),
            &owner,
            &WriteOptions::default(),
        )
        .err()
        .unwrap();
        assert!(big.to_string().contains("25600"), "{big}");

        let many = WriteOptions {
            tags: (0..11).map(|i| (format!("t{i}"), "v".into())).collect(),
            ..Default::default()
        };
        let err = prepare(&SecretValue::new(b"x".to_vec()), &owner, &many)
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("16 tags") && err.to_string().contains("15"),
            "{err}"
        );
    }

    #[test]
    fn service_messages_are_scrubbed_and_one_line() {
        let v = SecretValue::new(b"hunter2-secret".to_vec());
        let out = scrub("Value\r\n'hunter2-secret'\r\nrejected", Some(&v));
        assert_eq!(out, "Value '<redacted>' rejected");
    }
}
