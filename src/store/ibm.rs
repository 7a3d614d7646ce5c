//! `ibm-secrets-manager`: IBM Cloud Secrets Manager (API v2) `arbitrary`
//! secrets, over the shared HTTPS client (`store::http`), authenticated
//! with IBM Cloud IAM bearer tokens. No IBM SDK for Rust exists: this is a
//! small typed client of the documented REST subset.
//!
//! **Endpoint.** `instanceUrl` is the instance's endpoint URL, public
//! (`https://{instance_id}.{region}.secrets-manager.appdomain.cloud`) or
//! private (`https://{instance_id}.private.{region}.secrets-manager.appdomain.cloud`,
//! for private networks and hybrid setups). The IAM token endpoint follows
//! it: `https://private.iam.cloud.ibm.com` for a `.private.` instance URL,
//! else `https://iam.cloud.ibm.com`; `iamEndpoint` overrides both (a VPE
//! address, a proxy, a test server). Both must be `https://` (plain
//! `http://` is accepted for loopback addresses only, for tests); `caFile`
//! replaces the platform's CA certificates for both.
//!
//! **Secret group.** `secretGroup` names the group the secrets live in, by
//! id (a UUID) or by name; default `default`. It is resolved on first use
//! (`GET /api/v2/secret_groups/{id}` for the name of an id,
//! `GET /api/v2/secret_groups` for the id of a name) and cached.
//!
//! **Names.** Secret names are 2 to 256 characters matching IBM's pattern
//! `^[A-Za-z0-9][A-Za-z0-9]*(?:_*-*\.*[A-Za-z0-9]+)*$` (letters and digits,
//! with runs of `_`, `-` and `.`, in that order, between them). The `/` of
//! a logical remote name becomes `-` (`k8s/shop/db` → `k8s-shop-db`); any
//! other character, or a name the pattern refuses, is an error naming the
//! problem. Names are unique per secret type within a group; the ownership
//! metadata tells two logical names that map to one secret name apart.
//!
//! **Payload.** Arbitrary secrets hold text only: a UTF-8 payload is stored
//! as it is; any other payload is stored base64-encoded with the label
//! `encode:base64` (the convention IBM's documentation recommends for
//! binary data), and decoded on read.
//!
//! **Ownership** is the secret's `custom_metadata` (the ownership tags plus
//! the store's and destination's extra tags), written with the value in the
//! create call, so a secret is never without its owner. Every secret also
//! carries the label `secret-santa` (labels are for search: 2 to 30
//! characters, at most 30 per secret).
//!
//! **Create-if-absent** is `POST /api/v2/secrets`, which the service refuses
//! with `409 Conflict` when the group already holds an arbitrary secret of
//! that name: the secret is then read back by name (`GET
//! /api/v2/secret_groups/{group}/secret_types/arbitrary/secrets/{name}`,
//! which returns the payload too) and reported as existing. The create is
//! atomic on the server (`atomic_create()` is true). **Put** looks the
//! secret up by name, adds a version (`POST /api/v2/secrets/{id}/versions`)
//! and rewrites labels, custom metadata and description (`PATCH
//! /api/v2/secrets/{id}/metadata`, a JSON merge patch). Version ids are the
//! service's version UUIDs (read: `versions/current/metadata`). A secret
//! whose state is `destroyed` (its expiration date passed: the value is
//! gone, the name is still taken) is a `PendingDeletion` error saying how to
//! free the name.
//!
//! **Auth** (`auth.method`): `apiKey`: an IAM API key (of a service ID)
//! from `apiKeyFile`, exchanged at `POST {iam}/identity/token` with
//! `grant_type=urn:ibm:params:oauth:grant-type:apikey`; or
//! `trustedProfile`: a compute-resource token (the pod's projected service
//! account token with audience `iam`) from `crTokenFile` exchanged with
//! `grant_type=urn:ibm:params:oauth:grant-type:cr-token` for a token of the
//! trusted profile `trustedProfileId` and/or `trustedProfileName`. Without
//! `crTokenFile`, the first readable of the IBM SDKs' default paths is used
//! (`/var/run/secrets/tokens/vault-token`, `/var/run/secrets/tokens/sa-token`,
//! `/var/run/secrets/codeengine.cloud.ibm.com/compute-resource-token/token`).
//! Both files are re-read for every token request (so a rotated key or a
//! refreshed projected token is picked up). The access token is cached and
//! replaced once 80% of its lifetime is gone, as the IBM SDKs do (refresh
//! time = `expiration` − 20% of `expires_in`); a failed refresh keeps using
//! the current token until it expires. A `401` from Secrets Manager drops
//! the cached token and retries once with a fresh one. There is no request
//! signature: the bearer token is the credential.
//!
//! **Encryption** is the instance's (its Key Protect or Hyper Protect
//! Crypto Services root key, set when the instance is created): `kmsKeyId`
//! is refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use zeroize::{Zeroize, Zeroizing};

use super::http::{HttpClient, HttpConfig, HttpError, Response};
use super::text::{one_line, truncate};
use super::{
    CreateOutcome, Ownership, RemoteEntry, RemoteName, SecretStore, StoreError, WriteOptions,
};
use crate::config::StoreConfig;
use crate::secret::SecretValue;

pub const TYPE: &str = "ibm-secrets-manager";

/// The secret type this store writes.
pub const SECRET_TYPE: &str = "arbitrary";
/// The label on every secret the store writes.
pub const LABEL_MANAGED: &str = "secret-santa";
/// The label of a base64-encoded (binary) payload, as IBM's documentation
/// suggests for arbitrary secrets holding encoded data.
pub const LABEL_BASE64: &str = "encode:base64";
/// The id and the name of every instance's default secret group.
pub const DEFAULT_GROUP: &str = "default";

/// IAM token endpoints.
pub const PUBLIC_IAM: &str = "https://iam.cloud.ibm.com";
pub const PRIVATE_IAM: &str = "https://private.iam.cloud.ibm.com";
pub const IAM_TOKEN_PATH: &str = "/identity/token";
pub const GRANT_API_KEY: &str = "urn:ibm:params:oauth:grant-type:apikey";
pub const GRANT_CR_TOKEN: &str = "urn:ibm:params:oauth:grant-type:cr-token";

/// Where the IBM SDKs' container authenticator looks for a compute-resource
/// token when none is configured, in this order (go-sdk-core
/// `container_authenticator.go`).
pub const DEFAULT_CR_TOKEN_FILES: [&str; 3] = [
    "/var/run/secrets/tokens/vault-token",
    "/var/run/secrets/tokens/sa-token",
    "/var/run/secrets/codeengine.cloud.ibm.com/compute-resource-token/token",
];

/// Secrets Manager's limits (API reference, `SecretPrototype`).
pub const MIN_NAME_CHARS: usize = 2;
pub const MAX_NAME_CHARS: usize = 256;
pub const MAX_LABELS: usize = 30;
pub const MIN_LABEL_CHARS: usize = 2;
pub const MAX_LABEL_CHARS: usize = 30;
pub const MAX_DESCRIPTION_CHARS: usize = 1024;

/// The store's per-call deadline when the admin config sets none (the same
/// default `mirror` applies).
const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A token is replaced once this share of its lifetime is gone (the IBM
/// SDKs refresh at `expiration - 0.2 * expires_in`).
const REFRESH_FRACTION: f64 = 0.8;
/// A token is not sent any more this long before it expires (at most a
/// tenth of its lifetime), so that it does not expire in flight.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);

const JSON: &str = "application/json";
const MERGE_PATCH: &str = "application/merge-patch+json";
const FORM: &str = "application/x-www-form-urlencoded";

/// Everything but RFC 3986 unreserved characters is percent-encoded (form
/// values and path segments).
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

// ---------------------------------------------------------------------------
// Settings.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Settings {
    instance_url: String,
    #[serde(default)]
    secret_group: Option<String>,
    auth: AuthSettings,
    #[serde(default)]
    iam_endpoint: Option<String>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
}

/// How the store gets IAM access tokens.
#[derive(Clone, Debug, Deserialize)]
#[serde(
    tag = "method",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
enum AuthSettings {
    /// An IAM API key (a service ID's) from a file.
    ApiKey { api_key_file: PathBuf },
    /// A trusted profile, with the compute resource's (pod's) token.
    TrustedProfile {
        #[serde(default)]
        trusted_profile_id: Option<String>,
        #[serde(default)]
        trusted_profile_name: Option<String>,
        #[serde(default)]
        cr_token_file: Option<PathBuf>,
    },
}

/// The configured secret group.
#[derive(Clone, Debug, PartialEq, Eq)]
enum GroupRef {
    Default,
    Id(String),
    Name(String),
}

/// A resolved secret group.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Group {
    id: String,
    name: String,
}

/// Checked settings.
#[derive(Debug)]
struct Parsed {
    /// `https://ID.REGION.secrets-manager.appdomain.cloud` (no trailing `/`).
    instance_url: String,
    /// `https://iam.cloud.ibm.com` (no trailing `/`, no path).
    iam_url: String,
    group: GroupRef,
    auth: AuthSettings,
    ca_file: Option<PathBuf>,
}

const SETTING_KEYS: &str = "instanceUrl, secretGroup, auth, iamEndpoint, caFile";

fn settings(config: &StoreConfig) -> Result<Parsed, String> {
    let s: Settings = serde_json::from_value(Value::Object(config.settings.clone()))
        .map_err(|e| format!("{TYPE} settings: {e} (keys: {SETTING_KEYS})"))?;
    let instance_url = check_origin(&s.instance_url, "instanceUrl")?;
    let private = host_of(&instance_url).is_some_and(|h| {
        h.split('.')
            .any(|label| label.eq_ignore_ascii_case("private"))
    });
    let iam_url = match &s.iam_endpoint {
        Some(e) => {
            let trimmed = e.trim().trim_end_matches('/');
            let trimmed = trimmed.strip_suffix(IAM_TOKEN_PATH).unwrap_or(trimmed);
            check_origin(trimmed, "iamEndpoint")?
        }
        None if private => PRIVATE_IAM.to_owned(),
        None => PUBLIC_IAM.to_owned(),
    };
    let group = parse_group(s.secret_group.as_deref())?;
    match &s.auth {
        AuthSettings::ApiKey { api_key_file } => {
            if api_key_file.as_os_str().is_empty() {
                return Err("auth.apiKeyFile must name a file".into());
            }
        }
        AuthSettings::TrustedProfile {
            trusted_profile_id,
            trusted_profile_name,
            cr_token_file,
        } => {
            if trusted_profile_id.is_none() && trusted_profile_name.is_none() {
                return Err(
                    "auth: method trustedProfile needs trustedProfileId or trustedProfileName"
                        .into(),
                );
            }
            for (key, value) in [
                ("trustedProfileId", trusted_profile_id),
                ("trustedProfileName", trusted_profile_name),
            ] {
                if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                    return Err(format!("auth.{key} must not be empty"));
                }
            }
            if cr_token_file
                .as_ref()
                .is_some_and(|f| f.as_os_str().is_empty())
            {
                return Err("auth.crTokenFile must name a file".into());
            }
        }
    }
    // The instance encrypts with its own root key.
    if config.kms_key_id.is_some() || config.allows_override("kmsKeyId") {
        return Err(
            "kmsKeyId: Secrets Manager secrets take no KMS key (the instance encrypts them with the Key Protect or Hyper Protect Crypto Services key it was created with); remove kmsKeyId and the kmsKeyId override".into(),
        );
    }
    Ok(Parsed {
        instance_url,
        iam_url,
        group,
        auth: s.auth,
        ca_file: s.ca_file,
    })
}

/// Checks the settings without connecting anywhere or reading files.
pub fn validate(config: &StoreConfig) -> Result<(), String> {
    settings(config).map(|_| ())
}

/// An `https://host[:port]` origin (trailing `/` dropped), or `http://` on
/// a loopback address; errors name the setting.
fn check_origin(value: &str, key: &str) -> Result<String, String> {
    let trimmed = value.trim().trim_end_matches('/');
    let uri: http::Uri = trimmed
        .parse()
        .map_err(|e| format!("{key} {value:?} is not a URL: {e}"))?;
    let Some(host) = uri.host() else {
        return Err(format!("{key} {value:?} must be a URL with a host"));
    };
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if is_loopback(host) => {}
        Some("http") => {
            return Err(format!(
                "{key} {value:?} must be an https:// URL (bearer tokens and values travel over TLS only; plain http:// is accepted for a loopback address only)"
            ));
        }
        _ => {
            return Err(format!(
                "{key} {value:?} must be an https:// URL, like https://INSTANCE_ID.REGION.secrets-manager.appdomain.cloud"
            ));
        }
    }
    let has_userinfo = uri.authority().is_some_and(|a| a.as_str().contains('@'));
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() || has_userinfo {
        return Err(format!(
            "{key} {value:?} must be scheme, host and port only, without path, query or credentials"
        ));
    }
    Ok(trimmed.to_owned())
}

fn host_of(origin: &str) -> Option<String> {
    origin
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| u.host().map(str::to_ascii_lowercase))
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn parse_group(value: Option<&str>) -> Result<GroupRef, String> {
    match value.map(str::trim) {
        None => Ok(GroupRef::Default),
        Some(g) if g == DEFAULT_GROUP => Ok(GroupRef::Default),
        Some("") => {
            Err("secretGroup must not be empty (leave it out for the default group)".into())
        }
        Some(g) if is_uuid(g) => Ok(GroupRef::Id(g.to_ascii_lowercase())),
        Some(g) if g.chars().any(char::is_control) || g.chars().count() > 64 => Err(format!(
            "secretGroup {g:?} is neither a secret group id (a UUID) nor a secret group name (at most 64 characters)"
        )),
        Some(g) => Ok(GroupRef::Name(g.to_owned())),
    }
}

/// `8-4-4-4-12` hexadecimal digits.
fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Maps a logical remote name to a Secrets Manager secret name: `/`
/// becomes `-`; the result must match IBM's name pattern.
pub fn secret_name(logical: &str) -> Result<String, String> {
    if logical.is_empty() {
        return Err("remote name is empty".into());
    }
    let mut out = String::with_capacity(logical.len());
    for c in logical.chars() {
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '-' | '.' => out.push(c),
            '/' => out.push('-'),
            other => {
                return Err(format!(
                    "character {other:?} is not allowed in IBM Secrets Manager secret names (letters, digits, _ - and .; / becomes -)"
                ));
            }
        }
    }
    let chars = out.chars().count();
    if !(MIN_NAME_CHARS..=MAX_NAME_CHARS).contains(&chars) {
        return Err(format!(
            "IBM Secrets Manager secret names have {MIN_NAME_CHARS} to {MAX_NAME_CHARS} characters; {} has {chars}",
            quote(&out)
        ));
    }
    let alnum = |c: char| c.is_ascii_alphanumeric();
    if !out.starts_with(alnum) || !out.ends_with(alnum) {
        return Err(format!(
            "IBM Secrets Manager secret names start and end with a letter or digit; {} does not",
            quote(&out)
        ));
    }
    // Between two runs of letters and digits: `_*-*\.*`.
    for run in out.split(alnum).filter(|r| !r.is_empty()) {
        let rest = run.trim_start_matches('_');
        let rest = rest.trim_start_matches('-');
        let rest = rest.trim_start_matches('.');
        if !rest.is_empty() {
            return Err(format!(
                "IBM Secrets Manager secret names allow _, - and . between letters and digits only in that order (like a_-.b); {run:?} in {} is not",
                quote(&out)
            ));
        }
    }
    Ok(out)
}

fn quote(name: &str) -> String {
    format!("{:?}", truncate(name.to_owned(), 80))
}

/// A percent-encoded path segment.
fn enc(segment: &str) -> String {
    utf8_percent_encode(segment, ENCODE).to_string()
}

/// `application/x-www-form-urlencoded` of the pairs.
fn form(pairs: &[(&str, &str)]) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::new());
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(&utf8_percent_encode(k, ENCODE).to_string());
        out.push('=');
        let mut value = utf8_percent_encode(v, ENCODE).to_string();
        out.push_str(&value);
        value.zeroize();
    }
    out
}

// ---------------------------------------------------------------------------
// Tokens.

/// When a token must be replaced, and until when it may be sent, counted
/// from the moment it was requested.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime {
    pub refresh_after: Duration,
    pub usable_for: Duration,
}

/// The lifetime of an IAM token answer. `expires_in` (seconds) and
/// `expiration` (Unix time) both describe it; the shorter positive one is
/// used, so that neither a clock ahead of IAM's nor one behind it makes a
/// token outlive itself. Refreshed after 80% of it, as the IBM SDKs do.
pub fn token_lifetime(expires_in: Option<i64>, expiration: Option<i64>, now_unix: i64) -> Lifetime {
    let relative = expires_in.filter(|s| *s > 0);
    let absolute = expiration
        .map(|e| e.saturating_sub(now_unix))
        .filter(|s| *s > 0);
    let secs = match (relative, absolute) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => 0,
    };
    let ttl = Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    Lifetime {
        refresh_after: ttl.mul_f64(REFRESH_FRACTION),
        usable_for: ttl.saturating_sub(EXPIRY_MARGIN.min(ttl / 10)),
    }
}

/// An IAM access token.
struct Token {
    value: Zeroizing<String>,
    /// When it was requested.
    obtained: Instant,
    lifetime: Lifetime,
}

impl Token {
    fn refresh_due_at(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.obtained) >= self.lifetime.refresh_after
    }

    fn expired_at(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.obtained) >= self.lifetime.usable_for
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Reads a credential file: trimmed, not empty; errors name the setting.
async fn read_secret_file(path: &Path, key: &str) -> Result<Zeroizing<String>, String> {
    let text = Zeroizing::new(
        tokio::fs::read_to_string(path)
            .await
            .map_err(|e| format!("{key} {}: {e}", path.display()))?,
    );
    let trimmed = Zeroizing::new(text.trim().to_owned());
    if trimmed.is_empty() {
        return Err(format!("{key} {} is empty", path.display()));
    }
    Ok(trimmed)
}

/// The compute-resource token: the configured file, or the first readable
/// default.
async fn read_cr_token(configured: Option<&Path>) -> Result<(PathBuf, Zeroizing<String>), String> {
    if let Some(path) = configured {
        return Ok((
            path.to_owned(),
            read_secret_file(path, "auth.crTokenFile").await?,
        ));
    }
    for candidate in DEFAULT_CR_TOKEN_FILES {
        let path = Path::new(candidate);
        if let Ok(token) = read_secret_file(path, "auth.crTokenFile").await {
            return Ok((path.to_owned(), token));
        }
    }
    Err(format!(
        "auth.crTokenFile is not set and none of the default compute-resource token files is readable ({}); mount a projected service account token with audience \"iam\", or set auth.crTokenFile",
        DEFAULT_CR_TOKEN_FILES.join(", ")
    ))
}

// ---------------------------------------------------------------------------
// Payload and metadata.

/// A create or put, checked against the service's limits.
struct Prepared {
    /// The text payload (base64 for binary values).
    payload: Zeroizing<String>,
    labels: Vec<String>,
    /// Custom metadata: extra tags and ownership.
    tags: BTreeMap<String, String>,
    description: Option<String>,
}

/// Checks the value, labels, metadata and description before anything is
/// written. `existing` are the labels the secret has (kept, except the two
/// this store manages).
fn prepare(
    payload: &SecretValue,
    owner: &Ownership,
    options: &WriteOptions,
    existing: &[String],
) -> Result<Prepared, StoreError> {
    let mut tags = options.tags.clone();
    tags.extend(owner.tags());
    let (text, binary) = match std::str::from_utf8(payload.expose()) {
        Ok(text) => (Zeroizing::new(text.to_owned()), false),
        Err(_) => (
            Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(payload.expose())),
            true,
        ),
    };
    let mut labels = vec![LABEL_MANAGED.to_owned()];
    labels.extend(
        existing
            .iter()
            .filter(|l| l.as_str() != LABEL_MANAGED && l.as_str() != LABEL_BASE64)
            .cloned(),
    );
    if binary {
        labels.push(LABEL_BASE64.to_owned());
    }
    if labels.len() > MAX_LABELS {
        return Err(StoreError::Invalid(format!(
            "{} labels ({} already on the secret); Secrets Manager allows at most {MAX_LABELS} per secret",
            labels.len(),
            existing.len()
        )));
    }
    for label in &labels {
        let n = label.chars().count();
        if !(MIN_LABEL_CHARS..=MAX_LABEL_CHARS).contains(&n) {
            return Err(StoreError::Invalid(format!(
                "label {:?} must have {MIN_LABEL_CHARS} to {MAX_LABEL_CHARS} characters for Secrets Manager",
                truncate(label.clone(), 60)
            )));
        }
    }
    if let Some(k) = tags.keys().find(|k| k.trim().is_empty()) {
        return Err(StoreError::Invalid(format!(
            "tag name {k:?}: custom metadata keys must not be empty"
        )));
    }
    let description = options.description.clone();
    if let Some(d) = &description
        && d.chars().count() > MAX_DESCRIPTION_CHARS
    {
        return Err(StoreError::Invalid(format!(
            "the description has {} characters; Secrets Manager allows at most {MAX_DESCRIPTION_CHARS}",
            d.chars().count()
        )));
    }
    Ok(Prepared {
        payload: text,
        labels,
        tags,
        description,
    })
}

/// The payload bytes of a stored text payload.
fn decode_payload(text: &str, labels: &[String]) -> Result<SecretValue, String> {
    if labels.iter().any(|l| l == LABEL_BASE64) {
        let compact: Zeroizing<String> =
            Zeroizing::new(text.chars().filter(|c| !c.is_ascii_whitespace()).collect());
        return base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .map(SecretValue::new)
            .map_err(|_| {
                format!("the secret is labelled {LABEL_BASE64} but its payload is not base64")
            });
    }
    Ok(SecretValue::new(text.as_bytes().to_vec()))
}

/// A JSON request body holding a value: serialized once, the tree wiped.
struct Body(Bytes);

impl Body {
    fn new(mut value: Value) -> Result<Body, StoreError> {
        let bytes =
            serde_json::to_vec(&value).map_err(|e| StoreError::Invalid(format!("JSON body: {e}")));
        crate::secret::wipe_json(&mut value);
        Ok(Body(Bytes::from(bytes?)))
    }
}

/// Custom metadata as tags (non-string values as their JSON text).
fn tags_of(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), text)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn labels_of(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Errors.

/// Removes credentials from an IAM message (it never echoes them, but a
/// proxy in front of it might).
fn scrub_secret(message: &str, secret: &str) -> String {
    let text = one_line(message);
    if secret.len() >= 4 && text.contains(secret) {
        return text.replace(secret, "<redacted>");
    }
    text
}

/// Secrets Manager's error JSON (`{"errors":[{"code","message","more_info"}],
/// "status_code","trace"}`): the errors joined, and the trace id.
fn sm_errors(resp: &Response) -> (String, Option<String>) {
    let doc = resp.json_or_null();
    let mut parts: Vec<String> = Vec::new();
    if let Some(errors) = doc.get("errors").and_then(Value::as_array) {
        for e in errors {
            let code = e.get("code").and_then(Value::as_str).unwrap_or("").trim();
            let message = e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .trim();
            match (code.is_empty(), message.is_empty()) {
                (false, false) => parts.push(format!("{code}: {message}")),
                (false, true) => parts.push(code.to_owned()),
                (true, false) => parts.push(message.to_owned()),
                (true, true) => {}
            }
        }
    }
    if parts.is_empty() {
        for key in ["message", "error", "errorMessage"] {
            if let Some(m) = doc.get(key).and_then(Value::as_str) {
                parts.push(m.to_owned());
                break;
            }
        }
    }
    let trace = doc
        .get("trace")
        .and_then(Value::as_str)
        .map(|t| truncate(t.to_owned(), 80));
    (one_line(&parts.join("; ")), trace)
}

/// A non-success Secrets Manager answer as a store error. `what` is the
/// operation and remote name, `role` the service role it needs, `scope`
/// where the role must be granted.
fn status_error(
    what: &str,
    role: &str,
    scope: &str,
    resp: &Response,
    payload: Option<&SecretValue>,
) -> StoreError {
    let status = resp.status.as_u16();
    let (errors, trace) = sm_errors(resp);
    let errors = scrub(&errors, payload);
    let mut detail = format!("HTTP {status}");
    if !errors.is_empty() {
        detail.push_str(": ");
        detail.push_str(&errors);
    }
    if let Some(t) = trace {
        detail.push_str(&format!(" (trace {t})"));
    }
    match status {
        401 => StoreError::PermissionDenied(format!(
            "{what}: {detail}; Secrets Manager did not accept the IAM access token (expired, revoked, or of another account)"
        )),
        403 => StoreError::PermissionDenied(format!(
            "{what}: {detail}; the IAM identity needs the {role} service role (or higher) on {scope}"
        )),
        429 => StoreError::Throttled(format!("{what}: {detail}")),
        500..=599 => StoreError::Unavailable(format!("{what}: {detail}")),
        400 | 404 | 405 | 409 | 413 | 415 | 422 => StoreError::Invalid(format!("{what}: {detail}")),
        _ => StoreError::Other(format!("{what}: {detail}")),
    }
}

/// IAM's error JSON (`{"errorCode":"BXNIM0415E","errorMessage":"Provided API
/// key could not be found.","context":{"requestId":..}}`) as a store error.
/// `what` says which credential was refused, `hint` what to check.
fn iam_error(what: &str, hint: &str, resp: &Response, secret: &str) -> StoreError {
    let status = resp.status.as_u16();
    let doc = resp.json_or_null();
    let mut detail = format!("HTTP {status}");
    if let Some(code) = doc.get("errorCode").and_then(Value::as_str) {
        detail.push(' ');
        detail.push_str(code);
    }
    for key in ["errorMessage", "errorDetails"] {
        if let Some(m) = doc.get(key).and_then(Value::as_str) {
            detail.push_str(": ");
            detail.push_str(m);
        }
    }
    if let Some(id) = doc.pointer("/context/requestId").and_then(Value::as_str) {
        detail.push_str(&format!(" (request id {})", truncate(id.to_owned(), 80)));
    }
    let detail = truncate(scrub_secret(&detail, secret), 300);
    match status {
        400 | 401 | 403 => {
            StoreError::PermissionDenied(format!("IBM Cloud IAM refused {what}: {detail}; {hint}"))
        }
        429 => StoreError::Throttled(format!("IBM Cloud IAM token request: {detail}")),
        500..=599 => StoreError::Unavailable(format!("IBM Cloud IAM token request: {detail}")),
        _ => StoreError::Other(format!("IBM Cloud IAM token request: {detail}")),
    }
}

fn transport_error(what: &str, e: HttpError) -> StoreError {
    match e {
        HttpError::Unavailable(m) => StoreError::Unavailable(format!("{what}: {m}")),
        HttpError::Invalid(m) => StoreError::Invalid(format!("{what}: {m}")),
    }
}

fn unexpected(what: &str, problem: impl std::fmt::Display) -> StoreError {
    StoreError::Other(format!(
        "{what}: unexpected answer from Secrets Manager: {problem}"
    ))
}

/// The same error with the operation in front.
fn prefixed(e: StoreError, what: &str) -> StoreError {
    match e {
        StoreError::PermissionDenied(m) => StoreError::PermissionDenied(format!("{what}: {m}")),
        StoreError::Unavailable(m) => StoreError::Unavailable(format!("{what}: {m}")),
        StoreError::Throttled(m) => StoreError::Throttled(format!("{what}: {m}")),
        StoreError::PendingDeletion(m) => StoreError::PendingDeletion(format!("{what}: {m}")),
        StoreError::Invalid(m) => StoreError::Invalid(format!("{what}: {m}")),
        StoreError::Other(m) => StoreError::Other(format!("{what}: {m}")),
    }
}

// ---------------------------------------------------------------------------
// The store.

pub struct IbmSecretsManagerStore {
    inner: Arc<Inner>,
}

struct Inner {
    http: HttpClient,
    instance_url: String,
    iam_url: String,
    group_ref: GroupRef,
    group: tokio::sync::OnceCell<Group>,
    auth: AuthSettings,
    token: tokio::sync::Mutex<Option<Token>>,
}

/// A secret as read by name.
struct Found {
    id: String,
    labels: Vec<String>,
    tags: BTreeMap<String, String>,
    payload: Option<Zeroizing<String>>,
}

impl IbmSecretsManagerStore {
    /// Builds the client once; it is shared by all reviews. Checks that the
    /// credential file is there, naming the setting when it is not;
    /// contacts nothing.
    pub async fn build(config: &StoreConfig) -> Result<Self, String> {
        let s = settings(config)?;
        match &s.auth {
            AuthSettings::ApiKey { api_key_file } => {
                read_secret_file(api_key_file, "auth.apiKeyFile").await?;
            }
            AuthSettings::TrustedProfile { cr_token_file, .. } => {
                read_cr_token(cr_token_file.as_deref()).await?;
            }
        }
        let deadline = config.deadline.unwrap_or(DEFAULT_DEADLINE);
        let http = HttpClient::new(&HttpConfig {
            ca_file: s.ca_file.clone(),
            connect_timeout: CONNECT_TIMEOUT.min(deadline),
            request_timeout: deadline,
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                instance_url: s.instance_url,
                iam_url: s.iam_url,
                group_ref: s.group,
                group: tokio::sync::OnceCell::new(),
                auth: s.auth,
                token: tokio::sync::Mutex::new(None),
            }),
        })
    }
}

/// Where a role must be granted, for permission errors.
fn scope(group: &Group) -> String {
    format!(
        "the Secrets Manager instance or its secret group {:?}",
        group.name
    )
}

impl Inner {
    // -- auth ---------------------------------------------------------------

    /// A token to use now: cached, or replaced once 80% of its lifetime is
    /// gone (the current one is kept while the refresh fails and it has not
    /// expired).
    async fn token(&self) -> Result<Zeroizing<String>, StoreError> {
        let mut state = self.token.lock().await;
        if let Some(t) = state.as_ref()
            && !t.refresh_due_at(Instant::now())
        {
            return Ok(t.value.clone());
        }
        match self.fetch_token().await {
            Ok(fresh) => {
                let value = fresh.value.clone();
                *state = Some(fresh);
                Ok(value)
            }
            Err(e) => match state.as_ref() {
                Some(old) if !old.expired_at(Instant::now()) => {
                    tracing::warn!(error = %e, "refreshing the IBM Cloud IAM token failed; the current one is still valid");
                    Ok(old.value.clone())
                }
                _ => Err(e),
            },
        }
    }

    /// After a 401: drops the token that was refused (unless another call
    /// replaced it already).
    async fn forget_token(&self, used: &str) {
        let mut state = self.token.lock().await;
        if state.as_ref().is_some_and(|t| t.value.as_str() == used) {
            *state = None;
        }
    }

    /// `POST {iam}/identity/token`.
    async fn fetch_token(&self) -> Result<Token, StoreError> {
        let denied = StoreError::PermissionDenied;
        let (body, what, hint, secret) = match &self.auth {
            AuthSettings::ApiKey { api_key_file } => {
                let key = read_secret_file(api_key_file, "auth.apiKeyFile")
                    .await
                    .map_err(denied)?;
                let body = form(&[
                    ("grant_type", GRANT_API_KEY),
                    ("apikey", key.as_str()),
                    ("response_type", "cloud_iam"),
                ]);
                (
                    body,
                    format!("the API key of auth.apiKeyFile {}", api_key_file.display()),
                    "check that the file holds a current API key (of a service ID) of the instance's account".to_owned(),
                    key,
                )
            }
            AuthSettings::TrustedProfile {
                trusted_profile_id,
                trusted_profile_name,
                cr_token_file,
            } => {
                let (path, cr_token) = read_cr_token(cr_token_file.as_deref())
                    .await
                    .map_err(denied)?;
                let body = {
                    let mut pairs: Vec<(&str, &str)> = vec![
                        ("grant_type", GRANT_CR_TOKEN),
                        ("cr_token", cr_token.as_str()),
                    ];
                    if let Some(id) = trusted_profile_id {
                        pairs.push(("profile_id", id.as_str()));
                    }
                    if let Some(name) = trusted_profile_name {
                        pairs.push(("profile_name", name.as_str()));
                    }
                    form(&pairs)
                };
                let profile = trusted_profile_id
                    .as_deref()
                    .or(trusted_profile_name.as_deref())
                    .unwrap_or("");
                (
                    body,
                    format!(
                        "the compute-resource token of {} for trusted profile {profile:?}",
                        path.display()
                    ),
                    "the trusted profile needs a compute resource trust rule that matches this cluster, namespace and service account, and the projected token must have audience \"iam\" and at most 1 hour of validity".to_owned(),
                    cr_token,
                )
            }
        };
        let url = format!("{}{IAM_TOKEN_PATH}", self.iam_url);
        let headers = [
            (CONTENT_TYPE, HeaderValue::from_static(FORM)),
            (ACCEPT, HeaderValue::from_static(JSON)),
        ];
        let requested_unix = unix_now();
        let obtained = Instant::now();
        let resp = self
            .http
            .request(
                Method::POST,
                &url,
                &headers,
                Some(Bytes::from(body.as_bytes().to_vec())),
            )
            .await
            .map_err(|e| transport_error("IBM Cloud IAM token request", e))?;
        if !resp.status.is_success() {
            return Err(iam_error(&what, &hint, &resp, &secret));
        }
        let mut doc = resp.json_or_null();
        let Some(access) = doc.get("access_token").and_then(Value::as_str) else {
            return Err(StoreError::Other(format!(
                "IBM Cloud IAM token request: HTTP {}: the answer has no access_token",
                resp.status.as_u16()
            )));
        };
        let value = Zeroizing::new(access.to_owned());
        let lifetime = token_lifetime(
            doc.get("expires_in").and_then(Value::as_i64),
            doc.get("expiration").and_then(Value::as_i64),
            requested_unix,
        );
        crate::secret::wipe_json(&mut doc);
        tracing::debug!(
            refresh_after_secs = lifetime.refresh_after.as_secs(),
            "IBM Cloud IAM token obtained"
        );
        Ok(Token {
            value,
            obtained,
            lifetime,
        })
    }

    // -- requests -----------------------------------------------------------

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, &Body)>,
        token: &str,
        what: &str,
    ) -> Result<Response, StoreError> {
        let bearer = Zeroizing::new(format!("Bearer {token}"));
        let mut authorization = HeaderValue::from_str(&bearer).map_err(|_| {
            StoreError::PermissionDenied(format!(
                "{what}: the IAM access token has characters a header cannot carry"
            ))
        })?;
        authorization.set_sensitive(true);
        let mut headers: Vec<(HeaderName, HeaderValue)> = vec![
            (AUTHORIZATION, authorization),
            (ACCEPT, HeaderValue::from_static(JSON)),
        ];
        if let Some((content_type, _)) = body {
            headers.push((CONTENT_TYPE, HeaderValue::from_static(content_type)));
        }
        self.http
            .request(
                method,
                &format!("{}{path}", self.instance_url),
                &headers,
                body.map(|(_, b)| b.0.clone()),
            )
            .await
            .map_err(|e| transport_error(what, e))
    }

    /// An authenticated request; a 401 is answered by one retry with a
    /// fresh token.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, &Body)>,
        what: &str,
    ) -> Result<Response, StoreError> {
        let token = self.token().await.map_err(|e| prefixed(e, what))?;
        let resp = self.send(method.clone(), path, body, &token, what).await?;
        if resp.status == StatusCode::UNAUTHORIZED {
            self.forget_token(&token).await;
            let token = self.token().await.map_err(|e| prefixed(e, what))?;
            return self.send(method, path, body, &token, what).await;
        }
        Ok(resp)
    }

    // -- the secret group ---------------------------------------------------

    async fn group(&self) -> Result<Group, StoreError> {
        self.group
            .get_or_try_init(|| self.resolve_group())
            .await
            .cloned()
    }

    async fn resolve_group(&self) -> Result<Group, StoreError> {
        let instance_scope = "the Secrets Manager instance";
        match &self.group_ref {
            GroupRef::Default => Ok(Group {
                id: DEFAULT_GROUP.to_owned(),
                name: DEFAULT_GROUP.to_owned(),
            }),
            GroupRef::Id(id) => {
                let what = format!("GetSecretGroup {id} (secretGroup)");
                let path = format!("/api/v2/secret_groups/{}", enc(id));
                let resp = self.call(Method::GET, &path, None, &what).await?;
                if resp.status == StatusCode::NOT_FOUND {
                    return Err(StoreError::Invalid(format!(
                        "secretGroup {id:?}: the instance {} has no secret group with this id",
                        self.instance_url
                    )));
                }
                if !resp.status.is_success() {
                    return Err(status_error(&what, "Reader", instance_scope, &resp, None));
                }
                let doc = resp.json_or_null();
                let Some(name) = doc.get("name").and_then(Value::as_str) else {
                    return Err(unexpected(&what, "the secret group has no name"));
                };
                tracing::info!(group_id = %id, group = %name, "resolved the Secrets Manager secret group");
                Ok(Group {
                    id: id.clone(),
                    name: name.to_owned(),
                })
            }
            GroupRef::Name(name) => {
                let what = format!("ListSecretGroups (secretGroup {name:?})");
                let resp = self
                    .call(Method::GET, "/api/v2/secret_groups", None, &what)
                    .await?;
                if !resp.status.is_success() {
                    return Err(status_error(&what, "Reader", instance_scope, &resp, None));
                }
                let doc = resp.json_or_null();
                let Some(groups) = doc.get("secret_groups").and_then(Value::as_array) else {
                    return Err(unexpected(&what, "no secret_groups list"));
                };
                let found = groups.iter().find_map(|g| {
                    (g.get("name").and_then(Value::as_str) == Some(name.as_str()))
                        .then(|| g.get("id").and_then(Value::as_str))
                        .flatten()
                });
                match found {
                    Some(id) => {
                        tracing::info!(group_id = %id, group = %name, "resolved the Secrets Manager secret group");
                        Ok(Group {
                            id: id.to_owned(),
                            name: name.clone(),
                        })
                    }
                    None => {
                        let names: Vec<&str> = groups
                            .iter()
                            .filter_map(|g| g.get("name").and_then(Value::as_str))
                            .take(20)
                            .collect();
                        Err(StoreError::Invalid(format!(
                            "secretGroup {name:?}: the instance {} has no secret group of this name (it has: {}); create it (ibmcloud secrets-manager secret-group-create --name {name}) or give its id",
                            self.instance_url,
                            if names.is_empty() {
                                "only the default group".to_owned()
                            } else {
                                names.join(", ")
                            }
                        )))
                    }
                }
            }
        }
    }

    // -- secrets ------------------------------------------------------------

    /// `GET /api/v2/secret_groups/{group}/secret_types/arbitrary/secrets/{name}`.
    async fn get_secret(
        &self,
        name: &RemoteName,
        group: &Group,
    ) -> Result<Option<Found>, StoreError> {
        let what = format!("GetSecretByNameType {name} (secret group {})", group.name);
        let path = format!(
            "/api/v2/secret_groups/{}/secret_types/{SECRET_TYPE}/secrets/{}",
            enc(&group.name),
            enc(name.as_str())
        );
        let resp = self.call(Method::GET, &path, None, &what).await?;
        if resp.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status.is_success() {
            return Err(status_error(
                &what,
                "SecretsReader",
                &scope(group),
                &resp,
                None,
            ));
        }
        let mut doc = resp.json_or_null();
        let payload = match doc.as_object_mut().and_then(|o| o.remove("payload")) {
            Some(mut p) => {
                let text = p.as_str().map(|s| Zeroizing::new(s.to_owned()));
                crate::secret::wipe_json(&mut p);
                text
            }
            None => None,
        };
        let Some(id) = doc.get("id").and_then(Value::as_str).map(str::to_owned) else {
            return Err(unexpected(&what, "the secret has no id"));
        };
        let state = doc
            .get("state_description")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_ascii_lowercase();
        if matches!(state.as_str(), "destroyed" | "deactivated") {
            return Err(StoreError::PendingDeletion(format!(
                "{what}: the secret {id} is {state} (its expiration date passed; its value is gone and the name stays taken); delete it (ibmcloud secrets-manager secret-delete --id {id}) and retry to create a new one"
            )));
        }
        Ok(Some(Found {
            id,
            labels: labels_of(doc.get("labels")),
            tags: tags_of(doc.get("custom_metadata")),
            payload,
        }))
    }

    /// The id of the current version, or `None` when it cannot be read
    /// (it only informs: a failure does not fail the caller).
    async fn current_version(&self, id: &str, name: &RemoteName) -> Option<String> {
        let what = format!("GetSecretVersionMetadata {name} current");
        let path = format!("/api/v2/secrets/{}/versions/current/metadata", enc(id));
        match self.call(Method::GET, &path, None, &what).await {
            Ok(resp) if resp.status.is_success() => resp
                .json_or_null()
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_owned),
            Ok(resp) => {
                tracing::debug!(status = resp.status.as_u16(), remote = %name, "reading the current version id failed");
                None
            }
            Err(e) => {
                tracing::debug!(error = %e, remote = %name, "reading the current version id failed");
                None
            }
        }
    }

    async fn read_entry(
        &self,
        name: &RemoteName,
        group: &Group,
    ) -> Result<Option<RemoteEntry>, StoreError> {
        let Some(found) = self.get_secret(name, group).await? else {
            return Ok(None);
        };
        let what = format!("GetSecretByNameType {name} (secret group {})", group.name);
        let Some(text) = found.payload.as_ref() else {
            return Err(unexpected(&what, "the secret has no payload"));
        };
        let payload = decode_payload(text, &found.labels)
            .map_err(|e| StoreError::Other(format!("{what}: {e}")))?;
        let version = self.current_version(&found.id, name).await;
        Ok(Some(RemoteEntry {
            payload,
            tags: found.tags,
            version,
        }))
    }

    /// `POST /api/v2/secrets`; a 409 reads the existing secret back.
    async fn create(
        &self,
        name: &RemoteName,
        prepared: &Prepared,
        group: &Group,
        payload: &SecretValue,
    ) -> Result<CreateOutcome, StoreError> {
        let what = format!("CreateSecret {name} (secret group {})", group.name);
        let mut doc = json!({
            "name": name.as_str(),
            "secret_type": SECRET_TYPE,
            "secret_group_id": group.id,
            "payload": prepared.payload.as_str(),
            "labels": prepared.labels,
            "custom_metadata": prepared.tags,
        });
        if let Some(d) = &prepared.description {
            doc["description"] = json!(d);
        }
        let body = Body::new(doc)?;
        let resp = self
            .call(Method::POST, "/api/v2/secrets", Some((JSON, &body)), &what)
            .await?;
        if resp.status.is_success() {
            let mut answer = resp.json_or_null();
            let id = answer.get("id").and_then(Value::as_str).map(str::to_owned);
            crate::secret::wipe_json(&mut answer);
            let version = match id {
                Some(id) => self.current_version(&id, name).await,
                None => None,
            };
            return Ok(CreateOutcome::Created { version });
        }
        if resp.status == StatusCode::CONFLICT {
            return match self.read_entry(name, group).await? {
                Some(existing) => Ok(CreateOutcome::Exists(existing)),
                None => Err(StoreError::Other(format!(
                    "{what}: HTTP 409 ({}), and no arbitrary secret of this name reads back in the group (it was removed concurrently); a retry converges",
                    scrub(&sm_errors(&resp).0, Some(payload))
                ))),
            };
        }
        Err(status_error(
            &what,
            "Writer",
            &scope(group),
            &resp,
            Some(payload),
        ))
    }

    /// A new version, then the labels and metadata.
    async fn put(
        &self,
        name: &RemoteName,
        payload: &SecretValue,
        owner: &Ownership,
        options: &WriteOptions,
    ) -> Result<Option<String>, StoreError> {
        let group = self.group().await?;
        let Some(found) = self.get_secret(name, &group).await? else {
            return Err(StoreError::Other(format!(
                "CreateSecretVersion {name} (secret group {}): the secret is gone (removed concurrently); a retry converges",
                group.name
            )));
        };
        let prepared = prepare(payload, owner, options, &found.labels)?;
        let id = enc(&found.id);

        let what = format!("CreateSecretVersion {name} (secret group {})", group.name);
        let body = Body::new(json!({
            "payload": prepared.payload.as_str(),
            "custom_metadata": prepared.tags,
        }))?;
        let resp = self
            .call(
                Method::POST,
                &format!("/api/v2/secrets/{id}/versions"),
                Some((JSON, &body)),
                &what,
            )
            .await?;
        if !resp.status.is_success() {
            return Err(status_error(
                &what,
                "Writer",
                &scope(&group),
                &resp,
                Some(payload),
            ));
        }
        let mut answer = resp.json_or_null();
        let version = answer.get("id").and_then(Value::as_str).map(str::to_owned);
        crate::secret::wipe_json(&mut answer);

        let what = format!("UpdateSecretMetadata {name} (secret group {})", group.name);
        let mut patch = Map::new();
        patch.insert("labels".into(), json!(prepared.labels));
        patch.insert("custom_metadata".into(), json!(prepared.tags));
        if let Some(d) = &prepared.description {
            patch.insert("description".into(), json!(d));
        }
        let body = Body::new(Value::Object(patch))?;
        let resp = self
            .call(
                Method::PATCH,
                &format!("/api/v2/secrets/{id}/metadata"),
                Some((MERGE_PATCH, &body)),
                &what,
            )
            .await?;
        if !resp.status.is_success() {
            return Err(status_error(
                &what,
                "Writer",
                &scope(&group),
                &resp,
                Some(payload),
            ));
        }
        Ok(version)
    }
}

#[async_trait]
impl SecretStore for IbmSecretsManagerStore {
    fn kind(&self) -> &'static str {
        TYPE
    }

    /// The service refuses a create whose name the group holds (409).
    fn atomic_create(&self) -> bool {
        true
    }

    fn remote_name(&self, logical: &str) -> Result<RemoteName, String> {
        secret_name(logical).map(RemoteName::new_unchecked)
    }

    async fn read(&self, name: &RemoteName) -> Result<Option<RemoteEntry>, StoreError> {
        let group = self.inner.group().await?;
        self.inner.read_entry(name, &group).await
    }

    async fn create_if_absent(
        &self,
        name: &RemoteName,
        payload: &SecretValue,
        owner: &Ownership,
        options: &WriteOptions,
    ) -> Result<CreateOutcome, StoreError> {
        let prepared = prepare(payload, owner, options, &[])?;
        let group = self.inner.group().await?;
        self.inner.create(name, &prepared, &group, payload).await
    }

    async fn put(
        &self,
        name: &RemoteName,
        payload: &SecretValue,
        owner: &Ownership,
        options: &WriteOptions,
    ) -> Result<Option<String>, StoreError> {
        self.inner.put(name, payload, owner, options).await
    }
}

/// A service message made safe to show: every form of the payload, each
/// string of a JSON payload included, redacted (see [`super::text::redact`]).
fn scrub(message: &str, payload: Option<&SecretValue>) -> String {
    super::text::redact(message, payload, Vec::new(), 300)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn config(settings: Value) -> StoreConfig {
        let mut c: StoreConfig = serde_json::from_value(json!({
            "name": "sm",
            "type": TYPE,
            "namespaces": ["*"],
        }))
        .unwrap();
        c.settings = settings.as_object().unwrap().clone();
        c
    }

    fn api_key() -> Value {
        json!({"method": "apiKey", "apiKeyFile": "/k"})
    }

    fn response(status: u16, body: &str) -> Response {
        Response {
            status: StatusCode::from_u16(status).unwrap(),
            headers: http::HeaderMap::new(),
            body: Bytes::from(body.to_owned()),
        }
    }

    fn owner() -> Ownership {
        Ownership {
            cluster_id: "c".into(),
            namespace: "n".into(),
            name: "s".into(),
            key_set: "k".into(),
        }
    }

    #[test]
    fn names_map_to_ibm_rules() {
        assert_eq!(secret_name("k8s/shop/db").unwrap(), "k8s-shop-db");
        assert_eq!(secret_name("shop/db.v1_x").unwrap(), "shop-db.v1_x");
        // `_*-*\.*` between alphanumerics: `_/` becomes `_-`, fine.
        assert_eq!(secret_name("a_/b").unwrap(), "a_-b");
        assert!(secret_name("").unwrap_err().contains("empty"));
        assert!(secret_name("shop/db#1").unwrap_err().contains("'#'"));
        assert!(secret_name("shop/dé").unwrap_err().contains("'é'"));
        assert!(secret_name("a").unwrap_err().contains("2 to 256"));
        assert!(secret_name(&"a".repeat(256)).is_ok());
        assert!(secret_name(&"a".repeat(257)).unwrap_err().contains("257"));
        for bad in ["/shop/db", "shop/db/", "_a", "a.", "-a"] {
            let err = secret_name(bad).unwrap_err();
            assert!(err.contains("start and end"), "{bad:?}: {err}");
        }
        for bad in ["a/_b", "a.-b", "a._b", "a-_b"] {
            let err = secret_name(bad).unwrap_err();
            assert!(err.contains("in that order"), "{bad:?}: {err}");
        }
        assert!(secret_name("a__--..b").is_ok());
    }

    #[test]
    fn settings_are_checked_with_the_key_named() {
        let p = settings(&config(json!({
            "instanceUrl": "https://0b5571f7-21e6-42b7-91c5-3f5ac9793a46.us-south.secrets-manager.appdomain.cloud/",
            "auth": api_key(),
        })))
        .unwrap();
        assert_eq!(
            p.instance_url,
            "https://0b5571f7-21e6-42b7-91c5-3f5ac9793a46.us-south.secrets-manager.appdomain.cloud"
        );
        assert_eq!(p.iam_url, PUBLIC_IAM);
        assert_eq!(p.group, GroupRef::Default);

        // A private endpoint gets the private IAM endpoint.
        let p = settings(&config(json!({
            "instanceUrl": "https://abc.private.eu-de.secrets-manager.appdomain.cloud",
            "secretGroup": "D898BB90-82F6-4D61-B5CC-B079B66CFA76",
            "auth": {"method": "trustedProfile", "trustedProfileId": "Profile-1"},
        })))
        .unwrap();
        assert_eq!(p.iam_url, PRIVATE_IAM);
        assert_eq!(
            p.group,
            GroupRef::Id("d898bb90-82f6-4d61-b5cc-b079b66cfa76".into())
        );

        // iamEndpoint overrides; the operation path is dropped like the SDKs do.
        let p = settings(&config(json!({
            "instanceUrl": "http://127.0.0.1:8080",
            "iamEndpoint": "http://127.0.0.1:9090/identity/token",
            "secretGroup": "team-a",
            "auth": api_key(),
        })))
        .unwrap();
        assert_eq!(p.iam_url, "http://127.0.0.1:9090");
        assert_eq!(p.group, GroupRef::Name("team-a".into()));
        let p = settings(&config(json!({
            "instanceUrl": "https://x.us-south.secrets-manager.appdomain.cloud",
            "secretGroup": "default",
            "iamEndpoint": "https://private.us-south.iam.cloud.ibm.com/",
            "auth": api_key(),
        })))
        .unwrap();
        assert_eq!(p.iam_url, "https://private.us-south.iam.cloud.ibm.com");
        assert_eq!(p.group, GroupRef::Default);

        let url = "https://x.us-south.secrets-manager.appdomain.cloud";
        let cases = [
            (
                json!({"instanceUrl": url, "auth": api_key(), "secretGrup": "g"}),
                "secretGrup",
            ),
            (json!({"auth": api_key()}), "instanceUrl"),
            (json!({"instanceUrl": url}), "auth"),
            (
                json!({"instanceUrl": "http://x.us-south.secrets-manager.appdomain.cloud", "auth": api_key()}),
                "loopback",
            ),
            (
                json!({"instanceUrl": "ftp://x", "auth": api_key()}),
                "instanceUrl",
            ),
            (
                json!({"instanceUrl": format!("{url}/api/v2"), "auth": api_key()}),
                "without path",
            ),
            (
                json!({"instanceUrl": url, "iamEndpoint": "http://iam.cloud.ibm.com", "auth": api_key()}),
                "iamEndpoint",
            ),
            (
                json!({"instanceUrl": url, "auth": {"method": "apiKey", "apiKey": "x"}}),
                "apiKey",
            ),
            (
                json!({"instanceUrl": url, "auth": {"method": "password"}}),
                "password",
            ),
            (
                json!({"instanceUrl": url, "auth": {"method": "trustedProfile", "crTokenFile": "/t"}}),
                "trustedProfileId or trustedProfileName",
            ),
            (
                json!({"instanceUrl": url, "auth": {"method": "trustedProfile", "trustedProfileName": " "}}),
                "auth.trustedProfileName",
            ),
            (
                json!({"instanceUrl": url, "secretGroup": "", "auth": api_key()}),
                "secretGroup",
            ),
            (
                json!({"instanceUrl": url, "kmsKeyId": "k", "auth": api_key()}),
                "kmsKeyId",
            ),
        ];
        for (settings_json, needle) in cases {
            let mut c = config(settings_json.clone());
            if let Some(k) = c.settings.remove("kmsKeyId") {
                c.kms_key_id = k.as_str().map(str::to_owned);
            }
            let err = validate(&c).unwrap_err();
            assert!(err.contains(needle), "{settings_json}: {err}");
        }
    }

    /// The IBM SDKs' token refresh rule (go-sdk-core `iam_authenticator.go`,
    /// `newIamTokenData`: `refreshTime := expireTime - int64(float64(timeToLive)*0.2)`,
    /// and `isTokenValid`: `GetCurrentTime() < this.Expiration`), on IAM's
    /// documented answer (`"expires_in": 3600`, `"expiration"`: one hour
    /// after the request).
    #[test]
    fn token_lifetime_follows_the_ibm_sdks() {
        let now = 1_700_000_000;
        let l = token_lifetime(Some(3600), Some(now + 3600), now);
        // expiration - 20% of expires_in = now + 2880.
        assert_eq!(l.refresh_after, Duration::from_secs(2880));
        assert_eq!(l.usable_for, Duration::from_secs(3570));

        // A local clock ten minutes ahead of IAM's: the shorter one counts.
        let l = token_lifetime(Some(3600), Some(now + 3000), now);
        assert_eq!(l.refresh_after, Duration::from_secs(2400));
        // A local clock far ahead (expiration already past): expires_in.
        let l = token_lifetime(Some(3600), Some(now - 100), now);
        assert_eq!(l.refresh_after, Duration::from_secs(2880));
        // Only one of them.
        assert_eq!(
            token_lifetime(None, Some(now + 1000), now).refresh_after,
            Duration::from_secs(800)
        );
        assert_eq!(
            token_lifetime(Some(1000), None, now).refresh_after,
            Duration::from_secs(800)
        );
        // Neither: replaced on every use.
        let l = token_lifetime(None, None, now);
        assert_eq!(l.refresh_after, Duration::ZERO);
        assert_eq!(l.usable_for, Duration::ZERO);
        // Short lifetimes keep a tenth as the margin.
        let l = token_lifetime(Some(3), None, now);
        assert_eq!(l.refresh_after, Duration::from_millis(2400));
        assert_eq!(l.usable_for, Duration::from_millis(2700));
    }

    #[test]
    fn tokens_are_refreshed_at_80_percent_and_kept_until_they_expire() {
        let t0 = Instant::now();
        let token = Token {
            value: Zeroizing::new("t".into()),
            obtained: t0,
            lifetime: token_lifetime(Some(3600), None, 0),
        };
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(!token.refresh_due_at(t0));
        assert!(!token.refresh_due_at(at(2879)));
        assert!(token.refresh_due_at(at(2880)));
        assert!(!token.expired_at(at(2880)), "still usable while refreshing");
        assert!(!token.expired_at(at(3569)));
        assert!(token.expired_at(at(3570)));
    }

    #[test]
    fn token_requests_are_form_encoded() {
        // IAM's documented request body, percent-encoded.
        let body = form(&[
            ("grant_type", GRANT_API_KEY),
            ("apikey", "MY_APIKEY"),
            ("response_type", "cloud_iam"),
        ]);
        assert_eq!(
            body.as_str(),
            "grant_type=urn%3Aibm%3Aparams%3Aoauth%3Agrant-type%3Aapikey&apikey=MY_APIKEY&response_type=cloud_iam"
        );
        let body = form(&[("cr_token", "a b+c/=&d"), ("profile_name", "my profile")]);
        assert_eq!(
            body.as_str(),
            "cr_token=a%20b%2Bc%2F%3D%26d&profile_name=my%20profile"
        );
        assert_eq!(enc("team a/b"), "team%20a%2Fb");
    }

    #[test]
    fn iam_refusals_are_permission_errors_with_the_code_and_without_the_key() {
        // IAM's documented answer to an unknown API key.
        let resp = response(
            400,
            r#"{"errorCode":"BXNIM0415E","errorMessage":"Provided API key could not be found.","context":{"requestId":"cGI3bGc-8b07","requestType":"incoming.Identity_Token","url":"https://iam.cloud.ibm.com"}}"#,
        );
        let err = iam_error(
            "the API key of auth.apiKeyFile /k",
            "check it",
            &resp,
            "s3cr3t-key",
        );
        let text = err.to_string();
        assert!(matches!(err, StoreError::PermissionDenied(_)), "{text}");
        assert!(
            text.contains("IBM Cloud IAM refused the API key")
                && text.contains("HTTP 400 BXNIM0415E: Provided API key could not be found.")
                && text.contains("request id cGI3bGc-8b07"),
            "{text}"
        );
        let echoed = response(
            400,
            r#"{"errorCode":"X","errorMessage":"bad key s3cr3t-key"}"#,
        );
        let text = iam_error("k", "h", &echoed, "s3cr3t-key").to_string();
        assert!(!text.contains("s3cr3t-key"), "{text}");
        assert!(matches!(
            iam_error("k", "h", &response(503, "{}"), "x"),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            iam_error("k", "h", &response(429, "{}"), "x"),
            StoreError::Throttled(_)
        ));
    }

    #[test]
    fn service_errors_name_the_code_trace_and_role() {
        let body = r#"{"errors":[{"code":"forbidden","message":"Forbidden","more_info":"https://cloud.ibm.com/apidocs/secrets-manager"}],"status_code":403,"trace":"3ab2c1"}"#;
        let err = status_error(
            "CreateSecret k8s-shop-db (secret group default)",
            "Writer",
            "the Secrets Manager instance or its secret group \"default\"",
            &response(403, body),
            None,
        );
        let text = err.to_string();
        assert!(matches!(err, StoreError::PermissionDenied(_)));
        assert!(
            text.contains("CreateSecret k8s-shop-db")
                && text.contains("HTTP 403: forbidden: Forbidden (trace 3ab2c1)")
                && text.contains("Writer service role"),
            "{text}"
        );
        assert!(matches!(
            status_error("x", "r", "s", &response(401, "{}"), None),
            StoreError::PermissionDenied(_)
        ));
        assert!(matches!(
            status_error("x", "r", "s", &response(429, "{}"), None),
            StoreError::Throttled(_)
        ));
        assert!(matches!(
            status_error("x", "r", "s", &response(503, "<html>"), None),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            status_error("x", "r", "s", &response(400, "{}"), None),
            StoreError::Invalid(_)
        ));
        // A message echoing the value is scrubbed.
        let v = SecretValue::new(br#"{"password":"hunter2-secret"}"#.to_vec());
        let echo =
            r#"{"errors":[{"code":"bad_request","message":"payload\n'hunter2-secret' rejected"}]}"#;
        let text = status_error("x", "r", "s", &response(400, echo), Some(&v)).to_string();
        assert!(text.contains("payload '<redacted>' rejected"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn values_labels_and_metadata_are_prepared_before_writing() {
        let text = prepare(
            &SecretValue::new(b"hello".to_vec()),
            &owner(),
            &WriteOptions {
                description: Some("d".into()),
                tags: [("team".to_owned(), "a".to_owned())].into(),
                ..Default::default()
            },
            &[],
        )
        .unwrap();
        assert!(text.payload.as_str() == "hello");
        assert_eq!(text.labels, [LABEL_MANAGED]);
        assert_eq!(text.tags.get("team").map(String::as_str), Some("a"));
        assert_eq!(owner().tags().len() + 1, text.tags.len());
        assert_eq!(text.description.as_deref(), Some("d"));

        // Binary: base64 with the documented label; labels of others kept.
        let existing = vec!["dev".to_owned(), LABEL_MANAGED.to_owned()];
        let binary = prepare(
            &SecretValue::new(vec![0xff, 0x00]),
            &owner(),
            &WriteOptions::default(),
            &existing,
        )
        .unwrap();
        assert!(binary.payload.as_str() == "/wA=");
        assert_eq!(binary.labels, [LABEL_MANAGED, "dev", LABEL_BASE64]);
        let back = decode_payload(&binary.payload, &binary.labels).unwrap();
        assert!(back.expose() == [0xff, 0x00]);
        // Back to text: the base64 label goes.
        let again = prepare(
            &SecretValue::new(b"t".to_vec()),
            &owner(),
            &WriteOptions::default(),
            &binary.labels,
        )
        .unwrap();
        assert_eq!(again.labels, [LABEL_MANAGED, "dev"]);
        assert!(decode_payload("a==", &[LABEL_BASE64.to_owned()]).is_err());
        assert!(decode_payload("/wA=", &[]).unwrap().expose() == b"/wA=");

        let many: Vec<String> = (0..30).map(|i| format!("label-{i}")).collect();
        let err = prepare(
            &SecretValue::new(b"x".to_vec()),
            &owner(),
            &WriteOptions::default(),
            &many,
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("31 labels"), "{err}");
        let long = WriteOptions {
            description: Some("d".repeat(1025)),
            ..Default::default()
        };
        let err = prepare(&SecretValue::new(b"x".to_vec()), &owner(), &long, &[])
            .err()
            .unwrap();
        assert!(err.to_string().contains("1024"), "{err}");
    }

    #[test]
    fn metadata_reads_back_as_tags() {
        let tags = tags_of(Some(
            &json!({"a": "1", "b": 2, "c": null, "d": {"x": true}}),
        ));
        assert_eq!(tags.get("a").map(String::as_str), Some("1"));
        assert_eq!(tags.get("b").map(String::as_str), Some("2"));
        assert!(!tags.contains_key("c"));
        assert_eq!(tags.get("d").map(String::as_str), Some(r#"{"x":true}"#));
        assert_eq!(labels_of(Some(&json!(["a", 1, "b"]))), ["a", "b"]);
        assert!(is_uuid("0b5571f7-21e6-42b7-91c5-3f5ac9793a46"));
        assert!(!is_uuid("0b5571f7-21e6-42b7-91c5-3f5ac9793a4"));
        assert!(!is_uuid("team-a"));
    }
}
