//! `alibaba-kms`: Alibaba Cloud KMS Secrets Manager, through the KMS OpenAPI
//! (version 2016-01-20, RPC style) on the shared HTTPS client
//! (`store::http`). Alibaba Cloud has no official Rust SDK, so this is a
//! small typed client of the documented operations it needs, with the
//! documented RPC request signature implemented here (HMAC-SHA1,
//! `SignatureMethod=HMAC-SHA1`, `SignatureVersion=1.0`: the method KMS's
//! "Request signatures" topic documents) and checked in unit tests against
//! the worked examples of Alibaba's own signature documentation.
//!
//! **Requests.** `POST https://kms.{regionId}.aliyuncs.com/` (or
//! `kms-vpc.{regionId}.aliyuncs.com` with `vpcEndpoint: true`, or
//! `endpoint`, where `{regionId}` is replaced), every parameter (common and
//! operation-specific, `Signature` included) in an
//! `application/x-www-form-urlencoded` body: secret values never travel in
//! a URL, where proxies and access logs would keep them. The signature
//! covers all parameters: `POST&%2F&` + the percent-encoded canonicalized
//! query string (parameters sorted by name, `name=value` joined by `&`,
//! both percent-encoded with only `A-Z a-z 0-9 - _ . ~` left as they are),
//! HMAC-SHA1 with the AccessKey secret followed by `&`, base64. Each request
//! has a fresh `SignatureNonce` and `Timestamp`. `RegionId` is sent as the
//! official SDKs send it.
//!
//! **Names.** KMS secret names are 1 to 192 characters of letters, digits
//! and `_ / + = . @ -`, and must not start with `acs/`. Remote names
//! (`prefix` + `{namespace}/{name}`) already fit: they are used as they are,
//! and any other character is an error naming it.
//!
//! **Payload.** A UTF-8 payload is stored with `SecretDataType=text`; any
//! other payload base64-encoded with `SecretDataType=binary`, and decoded on
//! read.
//!
//! **Ownership** is the secret's tags (`Tags` of `CreateSecret`, read back
//! with `DescribeSecret FetchTags=true`, rewritten with `TagResource` by
//! `put` when they differ). KMS allows 10 tags per secret: five are
//! ownership, the rest come from the store's `tags` and the destination.
//! Tag keys are at most 128 characters and must not start with `aliyun` or
//! `acs:`, values at most 128 characters; neither may contain `http://` or
//! `https://` (Alibaba Cloud's tag rules). All is checked before anything is
//! written.
//!
//! **Create-if-absent.** `CreateSecret` is conditional on the server: it
//! answers `409 Rejected.ResourceExist` when the name is taken; then the
//! secret is read back (`GetSecretValue` + `DescribeSecret`). A create whose
//! answer was lost and that is retried finds its own version id (a fresh
//! UUID per create) and counts as created. `atomic_create()` is true.
//!
//! **Put** reads the current value and tags first and writes only what
//! differs: `PutSecretValue` with a fresh version id (KMS makes it
//! `ACSCurrent`), then `TagResource`.
//!
//! **Several regions** (`regions: [..]`): the same secret in each region,
//! all of which must be written for a write to succeed. The first region is
//! the arbiter: a create goes there first and only its winner writes the
//! other regions (with its value, created there or put where a replica
//! exists, never over an entry of another owner). How retries converge: a
//! read queries every region and reports the first region's entry; when it
//! is missing from, or different in, another region (a write that failed
//! half-way), an entry we own reads back with its key-set tag replaced by
//! `replication-incomplete`, so the engine converges on its values and
//! writes them with `put`, which completes every region. Regions that
//! disagree on *who* owns the entry are an error naming them; nothing is
//! overwritten. A create that finds the first region already holding an
//! entry of the same Secret completes the other regions from it before
//! reporting it. `kmsKeyId` and `kmsInstanceId` are per region
//! (`regionSettings`), since KMS keys and instances are regional.
//!
//! **Auth** (`auth.method`): `accessKey` (an AccessKey pair from
//! `accessKeyIdFile` and `accessKeySecretFile`, re-read for every request,
//! so a rotated Secret volume takes effect without a restart), `ramRoleArn`
//! (STS `AssumeRole` of `roleArn` signed with that AccessKey pair),
//! `ecsRamRole` (the ECS instance's RAM role from the instance metadata
//! service, `http://100.100.100.200/latest/meta-data/ram/security-credentials/{role}`,
//! with an IMDSv2 session token when the service gives one), or `rrsa`
//! (ACK RAM Roles for Service Accounts: the OIDC token in
//! `ALIBABA_CLOUD_OIDC_TOKEN_FILE` exchanged with STS `AssumeRoleWithOIDC`
//! for `ALIBABA_CLOUD_ROLE_ARN`, trusting `ALIBABA_CLOUD_OIDC_PROVIDER_ARN`;
//! all three as the ack-pod-identity-webhook injects them, or set in the
//! config). Temporary credentials are cached, shared by all reviews, and
//! replaced when two thirds of their lifetime are gone (still used while
//! valid should a refresh fail), or when KMS stops accepting them.
//!
//! **Errors** name the operation, the secret, the region, KMS's code and
//! message and the request id; permission errors name the RAM action needed.
//! Alibaba's gateway answers a signature mismatch with its own string to
//! sign in the message, which holds every parameter of the request, the
//! secret value included: messages are cut before it, and the value is
//! scrubbed from any message.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use futures_util::future::join_all;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use zeroize::{Zeroize, Zeroizing};

use super::http::{HttpClient, HttpConfig, HttpError, Response};
use super::text::truncate;
use super::{
    CreateOutcome, Ownership, RemoteEntry, RemoteName, SecretStore, StoreError, TAG_KEY_SET,
    WriteOptions,
};
use crate::config::StoreConfig;
use crate::secret::SecretValue;

pub const TYPE: &str = "alibaba-kms";

/// The KMS OpenAPI version.
pub const KMS_VERSION: &str = "2016-01-20";
/// The STS OpenAPI version.
pub const STS_VERSION: &str = "2015-04-01";

/// KMS's limits.
pub const MAX_NAME_CHARS: usize = 192;
pub const MAX_TAGS: usize = 10;
pub const MAX_TAG_KEY_CHARS: usize = 128;
pub const MAX_TAG_VALUE_CHARS: usize = 128;

/// The key-set tag value of an entry that is not the same in every region:
/// the engine then writes it again (see the module docs).
pub const REPLICATION_INCOMPLETE: &str = "replication-incomplete";

/// The store's per-call deadline when the admin config sets none (the same
/// default `mirror` applies).
const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// One retry of a transient failure, when less than half the deadline is
/// gone.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Temporary credentials younger than this are not thrown away when KMS
/// refuses them (the refusal is then about something else).
const RECHECK_MIN_AGE_SECS: i64 = 5;

const DEFAULT_STS_ENDPOINT: &str = "https://sts.aliyuncs.com";
const DEFAULT_METADATA_ENDPOINT: &str = "http://100.100.100.200";
const METADATA_CREDENTIALS_PATH: &str = "/latest/meta-data/ram/security-credentials/";
const METADATA_TOKEN_PATH: &str = "/latest/api/token";
const METADATA_TOKEN_TTL_SECS: u32 = 21_600;
const DEFAULT_SESSION_NAME: &str = "secret-santa";
const DEFAULT_DURATION_SECS: u32 = 3600;
const MIN_DURATION_SECS: u32 = 900;
const MAX_DURATION_SECS: u32 = 43_200;

const ENV_ROLE_ARN: &str = "ALIBABA_CLOUD_ROLE_ARN";
const ENV_OIDC_PROVIDER_ARN: &str = "ALIBABA_CLOUD_OIDC_PROVIDER_ARN";
const ENV_OIDC_TOKEN_FILE: &str = "ALIBABA_CLOUD_OIDC_TOKEN_FILE";

const SETTING_KEYS: &str =
    "regionId, regions, regionSettings, endpoint, vpcEndpoint, kmsInstanceId, caFile, auth";

// ---------------------------------------------------------------------------
// The RPC signature.

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn percent_encode_into(out: &mut String, text: &str) {
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

/// Alibaba Cloud's percent-encoding for RPC signatures: the UTF-8 bytes,
/// `A-Z a-z 0-9 - _ . ~` as they are, every other byte as `%XY` with
/// uppercase hex (so a space is `%20`, not `+`; `*` is `%2A`; `~` stays).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    percent_encode_into(&mut out, text);
    out
}

/// The canonicalized query string: every parameter but `Signature`, sorted
/// by name, `percentEncode(name)=percentEncode(value)` joined by `&`.
pub fn canonicalized_query(params: &BTreeMap<String, String>) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::new());
    for (k, v) in params.iter().filter(|(k, _)| k.as_str() != "Signature") {
        if !out.is_empty() {
            out.push('&');
        }
        percent_encode_into(&mut out, k);
        out.push('=');
        percent_encode_into(&mut out, v);
    }
    out
}

/// `HTTPMethod&percentEncode("/")&percentEncode(CanonicalizedQueryString)`.
pub fn string_to_sign(method: &str, params: &BTreeMap<String, String>) -> Zeroizing<String> {
    let query = canonicalized_query(params);
    let mut out = Zeroizing::new(String::with_capacity(method.len() + 6 + query.len() * 3));
    out.push_str(method);
    out.push('&');
    percent_encode_into(&mut out, "/");
    out.push('&');
    percent_encode_into(&mut out, &query);
    out
}

/// `Base64(HMAC-SHA1(AccessKeySecret + "&", StringToSign))`.
pub fn signature(access_key_secret: &str, string_to_sign: &str) -> String {
    let mut key = Zeroizing::new(String::with_capacity(access_key_secret.len() + 1));
    key.push_str(access_key_secret);
    key.push('&');
    let key = aws_lc_rs::hmac::Key::new(
        aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        key.as_bytes(),
    );
    let tag = aws_lc_rs::hmac::sign(&key, string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

/// The `Timestamp` parameter: UTC, `YYYY-MM-DDThh:mm:ssZ`.
fn timestamp() -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_default()
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Request parameters; the values (a secret value, a token) are wiped when
/// dropped.
#[derive(Default)]
struct Params(BTreeMap<String, String>);

impl Params {
    fn new() -> Params {
        Params::default()
    }

    fn set(&mut self, name: &str, value: impl Into<String>) {
        if let Some(mut old) = self.0.insert(name.to_owned(), value.into()) {
            old.zeroize();
        }
    }

    fn with(mut self, name: &str, value: impl Into<String>) -> Params {
        self.set(name, value);
        self
    }
}

impl Drop for Params {
    fn drop(&mut self) {
        for v in self.0.values_mut() {
            v.zeroize();
        }
    }
}

/// Sends one RPC request: the common parameters, `params`, signed with
/// `cred` (anonymous without: `AssumeRoleWithOIDC`), all in a form body.
async fn send_rpc(
    http: &HttpClient,
    url: &str,
    action: &str,
    version: &str,
    params: &Params,
    cred: Option<&Cred>,
) -> Result<Response, HttpError> {
    let mut all = Params::new()
        .with("Action", action)
        .with("Version", version)
        .with("Format", "JSON")
        .with("Timestamp", timestamp())
        .with("SignatureNonce", uuid::Uuid::new_v4().to_string());
    for (k, v) in &params.0 {
        all.set(k, v.clone());
    }
    if let Some(c) = cred {
        all.set("AccessKeyId", c.access_key_id.clone());
        all.set("SignatureMethod", "HMAC-SHA1");
        all.set("SignatureVersion", "1.0");
        if let Some(token) = &c.security_token {
            all.set("SecurityToken", token.as_str());
        }
        let to_sign = string_to_sign("POST", &all.0);
        let sig = signature(&c.access_key_secret, &to_sign);
        all.set("Signature", sig);
    }
    let mut body = Zeroizing::new(String::new());
    for (k, v) in &all.0 {
        if !body.is_empty() {
            body.push('&');
        }
        percent_encode_into(&mut body, k);
        body.push('=');
        percent_encode_into(&mut body, v);
    }
    let headers = [
        (
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
        ),
        (ACCEPT, HeaderValue::from_static("application/json")),
    ];
    http.request(
        Method::POST,
        url,
        &headers,
        Some(Bytes::copy_from_slice(body.as_bytes())),
    )
    .await
}

// ---------------------------------------------------------------------------
// Settings.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Settings {
    #[serde(default)]
    region_id: Option<String>,
    #[serde(default)]
    regions: Option<Vec<String>>,
    #[serde(default)]
    region_settings: BTreeMap<String, RegionSettings>,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    vpc_endpoint: bool,
    #[serde(default)]
    kms_instance_id: Option<String>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    auth: AuthSettings,
}

/// What differs per region.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RegionSettings {
    #[serde(default)]
    kms_key_id: Option<String>,
    #[serde(default)]
    kms_instance_id: Option<String>,
}

/// How the store gets credentials.
#[derive(Clone, Debug, Deserialize)]
#[serde(
    tag = "method",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
enum AuthSettings {
    /// A RAM user's AccessKey pair from files.
    AccessKey {
        access_key_id_file: PathBuf,
        access_key_secret_file: PathBuf,
    },
    /// STS `AssumeRole`, signed with an AccessKey pair from files.
    RamRoleArn {
        role_arn: String,
        access_key_id_file: PathBuf,
        access_key_secret_file: PathBuf,
        #[serde(default)]
        role_session_name: Option<String>,
        #[serde(default)]
        duration_seconds: Option<u32>,
        #[serde(default)]
        external_id: Option<String>,
        #[serde(default)]
        sts_endpoint: Option<String>,
    },
    /// The ECS instance's RAM role, from the instance metadata service.
    EcsRamRole {
        #[serde(default)]
        role_name: Option<String>,
        #[serde(default)]
        metadata_endpoint: Option<String>,
        #[serde(default)]
        disable_imds_v1: bool,
    },
    /// ACK RRSA: an OIDC token exchanged with STS `AssumeRoleWithOIDC`.
    Rrsa {
        #[serde(default)]
        role_arn: Option<String>,
        #[serde(default)]
        oidc_provider_arn: Option<String>,
        #[serde(default)]
        oidc_token_file: Option<PathBuf>,
        #[serde(default)]
        role_session_name: Option<String>,
        #[serde(default)]
        duration_seconds: Option<u32>,
        #[serde(default)]
        sts_endpoint: Option<String>,
    },
}

impl AuthSettings {
    fn method(&self) -> &'static str {
        match self {
            AuthSettings::AccessKey { .. } => "accessKey",
            AuthSettings::RamRoleArn { .. } => "ramRoleArn",
            AuthSettings::EcsRamRole { .. } => "ecsRamRole",
            AuthSettings::Rrsa { .. } => "rrsa",
        }
    }

    fn sts_endpoint(&self) -> Option<&str> {
        match self {
            AuthSettings::RamRoleArn { sts_endpoint, .. }
            | AuthSettings::Rrsa { sts_endpoint, .. } => sts_endpoint.as_deref(),
            _ => None,
        }
    }
}

/// One region the store writes to.
#[derive(Clone, Debug)]
struct Region {
    id: String,
    /// `https://kms.{id}.aliyuncs.com/`.
    url: String,
    kms_key_id: Option<String>,
    kms_instance_id: Option<String>,
}

/// Checked settings.
#[derive(Debug)]
struct Parsed {
    /// The first one is the arbiter.
    regions: Vec<Region>,
    ca_file: Option<PathBuf>,
    auth: AuthSettings,
    /// `https://sts.aliyuncs.com/`.
    sts_url: String,
    /// The store's `kmsKeyId`.
    default_key: Option<String>,
}

fn settings(config: &StoreConfig) -> Result<Parsed, String> {
    let s: Settings = serde_json::from_value(Value::Object(config.settings.clone()))
        .map_err(|e| format!("{TYPE} settings: {e} (keys: {SETTING_KEYS})"))?;
    let ids: Vec<String> = match (s.region_id, s.regions) {
        (Some(_), Some(_)) => {
            return Err("give either regionId or regions, not both".into());
        }
        (None, None) => {
            return Err(
                "regionId is required (like cn-hangzhou), or regions: [..] to keep the same secret in several regions"
                    .into(),
            );
        }
        (Some(r), None) => {
            check_region(&r).map_err(|e| format!("regionId {r:?}: {e}"))?;
            vec![r]
        }
        (None, Some(list)) => {
            if list.is_empty() {
                return Err("regions must list at least one region".into());
            }
            for (i, r) in list.iter().enumerate() {
                check_region(r).map_err(|e| format!("regions[{i}] {r:?}: {e}"))?;
                if list[..i].contains(r) {
                    return Err(format!("regions[{i}]: {r:?} is listed twice"));
                }
            }
            list
        }
    };
    for (region, rs) in &s.region_settings {
        if !ids.contains(region) {
            return Err(format!(
                "regionSettings.{region}: {region:?} is not one of the store's regions ({})",
                ids.join(", ")
            ));
        }
        for (key, value) in [
            ("kmsKeyId", &rs.kms_key_id),
            ("kmsInstanceId", &rs.kms_instance_id),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(format!("regionSettings.{region}.{key} must not be empty"));
            }
        }
    }
    if s.kms_instance_id
        .as_deref()
        .is_some_and(|v| v.trim().is_empty())
    {
        return Err("kmsInstanceId must not be empty".into());
    }
    if config
        .kms_key_id
        .as_deref()
        .is_some_and(|v| v.trim().is_empty())
    {
        return Err("kmsKeyId must not be empty".into());
    }
    let endpoint = match &s.endpoint {
        Some(e) => Some(check_endpoint(e, "endpoint", true, false)?),
        None => None,
    };
    let regions = ids
        .iter()
        .map(|id| {
            let rs = s.region_settings.get(id);
            Region {
                id: id.clone(),
                url: match &endpoint {
                    Some(e) => format!("{}/", e.replace("{regionId}", id)),
                    None => format!(
                        "https://kms{}.{id}.aliyuncs.com/",
                        if s.vpc_endpoint { "-vpc" } else { "" }
                    ),
                },
                kms_key_id: rs
                    .and_then(|r| r.kms_key_id.clone())
                    .or_else(|| config.kms_key_id.clone()),
                kms_instance_id: rs
                    .and_then(|r| r.kms_instance_id.clone())
                    .or_else(|| s.kms_instance_id.clone()),
            }
        })
        .collect::<Vec<_>>();
    match &s.auth {
        AuthSettings::AccessKey { .. } => {}
        AuthSettings::RamRoleArn {
            role_arn,
            role_session_name,
            duration_seconds,
            external_id,
            ..
        } => {
            check_role_arn(role_arn, "auth.roleArn")?;
            check_session(role_session_name.as_deref(), *duration_seconds)?;
            if external_id.as_deref().is_some_and(|e| e.trim().is_empty()) {
                return Err("auth.externalId must not be empty".into());
            }
        }
        AuthSettings::EcsRamRole {
            role_name,
            metadata_endpoint,
            ..
        } => {
            if let Some(r) = role_name
                && (r.is_empty()
                    || !r
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
            {
                return Err(format!(
                    "auth.roleName {r:?} is not a RAM role name (letters, digits, - _ .)"
                ));
            }
            if let Some(m) = metadata_endpoint {
                check_endpoint(m, "auth.metadataEndpoint", false, true)?;
            }
        }
        AuthSettings::Rrsa {
            role_arn,
            oidc_provider_arn,
            role_session_name,
            duration_seconds,
            ..
        } => {
            if let Some(r) = role_arn {
                check_role_arn(r, "auth.roleArn")?;
            }
            if let Some(p) = oidc_provider_arn {
                check_provider_arn(p, "auth.oidcProviderArn")?;
            }
            check_session(role_session_name.as_deref(), *duration_seconds)?;
        }
    }
    let sts_url = match s.auth.sts_endpoint() {
        Some(e) => format!("{}/", check_endpoint(e, "auth.stsEndpoint", false, false)?),
        None if s.vpc_endpoint => format!("https://sts-vpc.{}.aliyuncs.com/", ids[0]),
        None => format!("{DEFAULT_STS_ENDPOINT}/"),
    };
    Ok(Parsed {
        regions,
        ca_file: s.ca_file,
        auth: s.auth,
        sts_url,
        default_key: config.kms_key_id.clone(),
    })
}

/// Checks the settings without connecting anywhere or reading files.
pub fn validate(config: &StoreConfig) -> Result<(), String> {
    settings(config).map(|_| ())
}

/// A region id: `cn-hangzhou`, `ap-southeast-1`, `cn-shanghai-finance-1`.
fn check_region(region: &str) -> Result<(), String> {
    let ok = region.len() <= 64
        && region.starts_with(|c: char| c.is_ascii_lowercase())
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && region.contains('-')
        && !region.ends_with('-')
        && !region.contains("--");
    if ok {
        Ok(())
    } else {
        Err("is not an Alibaba Cloud region id (like cn-hangzhou or ap-southeast-1)".into())
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// An `https://host[:port]` origin (no trailing `/`); `http://` only to a
/// loopback address (a test server) unless `any_http`. With `placeholder`,
/// `{regionId}` may appear and is replaced per region.
fn check_endpoint(
    value: &str,
    key: &str,
    placeholder: bool,
    any_http: bool,
) -> Result<String, String> {
    let trimmed = value.trim().trim_end_matches('/');
    if !placeholder && trimmed.contains("{regionId}") {
        return Err(format!(
            "{key} {value:?}: {{regionId}} is not replaced here"
        ));
    }
    let sample = trimmed.replace("{regionId}", "cn-hangzhou");
    let uri: http::Uri = sample
        .parse()
        .map_err(|e| format!("{key} {value:?} is not a URL: {e}"))?;
    let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
        return Err(format!(
            "{key} {value:?} must be an https:// URL with a host, like https://kms.cn-hangzhou.aliyuncs.com"
        ));
    };
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "{key} {value:?} must be scheme, host and port only, without path or query"
        ));
    }
    match scheme {
        "https" => {}
        "http" if any_http || is_loopback(host) => {}
        "http" => {
            return Err(format!(
                "{key} {value:?} must be an https:// URL (requests carry credentials and secret values; http:// only to a loopback address, for tests)"
            ));
        }
        _ => {
            return Err(format!(
                "{key} {value:?} must be an https:// URL with a host"
            ));
        }
    }
    Ok(trimmed.to_owned())
}

fn check_role_arn(arn: &str, key: &str) -> Result<(), String> {
    let ok = arn.starts_with("acs:ram::")
        && arn
            .split_once(":role/")
            .is_some_and(|(_, name)| !name.is_empty());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{key} {arn:?} is not a RAM role ARN (acs:ram::ACCOUNT_ID:role/NAME)"
        ))
    }
}

fn check_provider_arn(arn: &str, key: &str) -> Result<(), String> {
    let ok = arn.starts_with("acs:ram::")
        && arn
            .split_once(":oidc-provider/")
            .is_some_and(|(_, name)| !name.is_empty());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{key} {arn:?} is not an OIDC provider ARN (acs:ram::ACCOUNT_ID:oidc-provider/NAME)"
        ))
    }
}

fn check_session(name: Option<&str>, duration: Option<u32>) -> Result<(), String> {
    if let Some(n) = name {
        let ok = (2..=64).contains(&n.len())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".@_-".contains(c));
        if !ok {
            return Err(format!(
                "auth.roleSessionName {n:?} must be 2 to 64 letters, digits or . @ _ -"
            ));
        }
    }
    if let Some(d) = duration
        && !(MIN_DURATION_SECS..=MAX_DURATION_SECS).contains(&d)
    {
        return Err(format!(
            "auth.durationSeconds {d} must be between {MIN_DURATION_SECS} and {MAX_DURATION_SECS} (and at most the role's maximum session duration)"
        ));
    }
    Ok(())
}

/// Maps a logical remote name to a KMS secret name, or says why it cannot.
pub fn secret_name(logical: &str) -> Result<String, String> {
    if logical.is_empty() {
        return Err("remote name is empty".into());
    }
    if let Some(c) = logical
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_/+=.@-".contains(*c)))
    {
        return Err(format!(
            "character {c:?} is not allowed in KMS secret names (letters, digits and _ / + = . @ -)"
        ));
    }
    let chars = logical.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(format!(
            "KMS secret names have at most {MAX_NAME_CHARS} characters; this one has {chars}"
        ));
    }
    if logical.starts_with("acs/") {
        return Err("KMS secret names must not start with acs/ (reserved by Alibaba Cloud)".into());
    }
    Ok(logical.to_owned())
}

// ---------------------------------------------------------------------------
// Credentials.

/// An AccessKey pair, long-lived or temporary. `Debug` shows the id only.
#[derive(Clone)]
struct Cred {
    access_key_id: String,
    access_key_secret: Zeroizing<String>,
    security_token: Option<Zeroizing<String>>,
    /// Unix seconds; `None`: a long-lived AccessKey.
    expiration: Option<i64>,
    /// Unix seconds.
    obtained: i64,
}

impl std::fmt::Debug for Cred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cred")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

impl Cred {
    /// Two thirds of the lifetime are gone.
    fn refresh_due(&self, now: i64) -> bool {
        self.expiration.is_some_and(|exp| {
            let lifetime = (exp - self.obtained).max(0);
            now >= exp - lifetime / 3
        })
    }

    fn expired(&self, now: i64) -> bool {
        self.expiration.is_some_and(|exp| now >= exp)
    }
}

/// Reads a credential file: trimmed, not empty; errors name the setting.
async fn read_secret_file(path: &Path, key: &str) -> Result<Zeroizing<String>, String> {
    let text = Zeroizing::new(
        tokio::fs::read_to_string(path)
            .await
            .map_err(|e| format!("auth.{key} {}: {e}", path.display()))?,
    );
    let trimmed = Zeroizing::new(text.trim().to_owned());
    if trimmed.is_empty() {
        return Err(format!("auth.{key} {} is empty", path.display()));
    }
    Ok(trimmed)
}

async fn read_access_key(id_file: &Path, secret_file: &Path) -> Result<Cred, String> {
    let id = read_secret_file(id_file, "accessKeyIdFile").await?;
    if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') {
        return Err(format!(
            "auth.accessKeyIdFile {}: not an AccessKey ID (letters and digits)",
            id_file.display()
        ));
    }
    let secret = read_secret_file(secret_file, "accessKeySecretFile").await?;
    Ok(Cred {
        access_key_id: id.to_string(),
        access_key_secret: secret,
        security_token: None,
        expiration: None,
        obtained: unix_now(),
    })
}

/// Where credentials come from.
#[derive(Debug)]
enum Source {
    AccessKey {
        id_file: PathBuf,
        secret_file: PathBuf,
    },
    RamRoleArn {
        role_arn: String,
        session: String,
        duration: u32,
        external_id: Option<String>,
        id_file: PathBuf,
        secret_file: PathBuf,
    },
    EcsRamRole {
        role_name: Option<String>,
        /// `http://100.100.100.200` (no trailing `/`).
        base: String,
        disable_v1: bool,
    },
    Rrsa {
        role_arn: String,
        provider_arn: String,
        token_file: PathBuf,
        session: String,
        duration: u32,
    },
}

#[derive(Default)]
struct Cache {
    cred: Option<Cred>,
    /// The ECS instance's role, once discovered.
    ecs_role: Option<String>,
}

struct Credentials {
    source: Source,
    http: HttpClient,
    sts_url: String,
    cache: tokio::sync::Mutex<Cache>,
    /// Who the store acts as, for messages.
    identity: String,
}

impl Credentials {
    /// Credentials to sign with now: the AccessKey files as they are, or
    /// cached temporary credentials, refreshed when two thirds of their
    /// lifetime are gone.
    async fn get(&self) -> Result<Cred, StoreError> {
        if let Source::AccessKey {
            id_file,
            secret_file,
        } = &self.source
        {
            return read_access_key(id_file, secret_file)
                .await
                .map_err(StoreError::PermissionDenied);
        }
        let mut cache = self.cache.lock().await;
        let now = unix_now();
        if let Some(c) = &cache.cred
            && !c.refresh_due(now)
        {
            return Ok(c.clone());
        }
        match self.fetch(&mut cache).await {
            Ok(fresh) => {
                tracing::debug!(
                    expires_in_secs = ?fresh.expiration.map(|e| e - now),
                    "alibaba-kms: new temporary credentials"
                );
                cache.cred = Some(fresh.clone());
                Ok(fresh)
            }
            Err(e) => match &cache.cred {
                Some(old) if !old.expired(now) => {
                    tracing::warn!(error = %e, "alibaba-kms: refreshing the temporary credentials failed; the current ones are still valid");
                    Ok(old.clone())
                }
                _ => Err(e),
            },
        }
    }

    /// After KMS refused temporary credentials: forgets them unless they are
    /// brand new; true when a retry with fresh ones makes sense (also when
    /// another request replaced them meanwhile).
    async fn invalidate(&self, used: &Cred) -> bool {
        if used.expiration.is_none() {
            return false;
        }
        let mut cache = self.cache.lock().await;
        match &cache.cred {
            Some(c) if c.access_key_id == used.access_key_id => {
                if unix_now() - c.obtained >= RECHECK_MIN_AGE_SECS {
                    cache.cred = None;
                    true
                } else {
                    false
                }
            }
            _ => true,
        }
    }

    async fn fetch(&self, cache: &mut Cache) -> Result<Cred, StoreError> {
        match &self.source {
            Source::AccessKey {
                id_file,
                secret_file,
            } => read_access_key(id_file, secret_file)
                .await
                .map_err(StoreError::PermissionDenied),
            Source::RamRoleArn {
                role_arn,
                session,
                duration,
                external_id,
                id_file,
                secret_file,
            } => {
                let base = read_access_key(id_file, secret_file)
                    .await
                    .map_err(StoreError::PermissionDenied)?;
                let mut params = Params::new()
                    .with("RoleArn", role_arn.as_str())
                    .with("RoleSessionName", session.as_str())
                    .with("DurationSeconds", duration.to_string());
                if let Some(x) = external_id {
                    params.set("ExternalId", x.as_str());
                }
                self.sts("AssumeRole", role_arn, &params, Some(&base)).await
            }
            Source::Rrsa {
                role_arn,
                provider_arn,
                token_file,
                session,
                duration,
            } => {
                // Re-read every time: the kubelet rotates the projected token.
                let token = read_secret_file(token_file, "oidcTokenFile")
                    .await
                    .map_err(StoreError::PermissionDenied)?;
                let params = Params::new()
                    .with("RoleArn", role_arn.as_str())
                    .with("OIDCProviderArn", provider_arn.as_str())
                    .with("OIDCToken", token.as_str())
                    .with("RoleSessionName", session.as_str())
                    .with("DurationSeconds", duration.to_string());
                self.sts("AssumeRoleWithOIDC", role_arn, &params, None)
                    .await
            }
            Source::EcsRamRole {
                role_name,
                base,
                disable_v1,
            } => {
                self.ecs(cache, role_name.as_deref(), base, *disable_v1)
                    .await
            }
        }
    }

    async fn sts(
        &self,
        action: &'static str,
        role_arn: &str,
        params: &Params,
        base: Option<&Cred>,
    ) -> Result<Cred, StoreError> {
        let what = format!("STS {action} for role {role_arn}");
        let resp = send_rpc(&self.http, &self.sts_url, action, STS_VERSION, params, base)
            .await
            .map_err(|e| transport_error(&what, e))?;
        if !resp.status.is_success() {
            let r = Refusal::of(&resp, None);
            let detail = r.detail();
            let hint = if action == "AssumeRole" {
                "the AccessKey's RAM user needs sts:AssumeRole (the AliyunSTSAssumeRoleAccess policy) and the role's trust policy must trust its account"
                    .to_owned()
            } else {
                "the role's trust policy must trust the OIDC provider and this service account, and the token must be the one the RRSA webhook mounts"
                    .to_owned()
            };
            return Err(if r.status >= 500 {
                StoreError::Unavailable(format!("{what}: {detail}"))
            } else if r.status == 429 || r.code.contains("Throttling") {
                StoreError::Throttled(format!("{what}: {detail}"))
            } else {
                StoreError::PermissionDenied(format!("{what} was refused: {detail}; {hint}"))
            });
        }
        let mut doc = resp.json_or_null();
        let cred = cred_of(doc.get("Credentials"))
            .map_err(|e| StoreError::Other(format!("{what}: unexpected answer from STS: {e}")));
        crate::secret::wipe_json(&mut doc);
        cred
    }

    async fn ecs(
        &self,
        cache: &mut Cache,
        role_name: Option<&str>,
        base: &str,
        disable_v1: bool,
    ) -> Result<Cred, StoreError> {
        let what = format!("ECS instance metadata at {base}");
        let mut headers: Vec<(HeaderName, HeaderValue)> = Vec::new();
        // IMDSv2: a session token first; IMDSv1 (none) when the instance
        // does not give one, unless that is disabled.
        let token = self
            .http
            .request(
                Method::PUT,
                &format!("{base}{METADATA_TOKEN_PATH}"),
                &[(
                    HeaderName::from_static("x-aliyun-ecs-metadata-token-ttl-seconds"),
                    HeaderValue::from(METADATA_TOKEN_TTL_SECS),
                )],
                None,
            )
            .await;
        match token {
            Ok(r) if r.status.is_success() => {
                let text = Zeroizing::new(String::from_utf8_lossy(&r.body).trim().to_owned());
                let mut value = HeaderValue::from_str(&text).map_err(|_| {
                    StoreError::Other(format!("{what}: the metadata token is not a header value"))
                })?;
                value.set_sensitive(true);
                headers.push((
                    HeaderName::from_static("x-aliyun-ecs-metadata-token"),
                    value,
                ));
            }
            Ok(r) if disable_v1 => {
                return Err(StoreError::PermissionDenied(format!(
                    "{what}: no IMDSv2 session token (HTTP {}) and auth.disableImdsV1 is set",
                    r.status.as_u16()
                )));
            }
            Err(e) if disable_v1 => return Err(transport_error(&what, e)),
            _ => tracing::debug!("alibaba-kms: no IMDSv2 token; using IMDSv1"),
        }
        let role = match role_name
            .map(str::to_owned)
            .or_else(|| cache.ecs_role.clone())
        {
            Some(r) => r,
            None => {
                let url = format!("{base}{METADATA_CREDENTIALS_PATH}");
                let r = self
                    .http
                    .request(Method::GET, &url, &headers, None)
                    .await
                    .map_err(|e| transport_error(&what, e))?;
                if !r.status.is_success() {
                    return Err(StoreError::PermissionDenied(format!(
                        "{what}: HTTP {} listing the instance's RAM role; is a RAM role attached to this ECS instance?",
                        r.status.as_u16()
                    )));
                }
                let name = String::from_utf8_lossy(&r.body)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_owned();
                if name.is_empty() {
                    return Err(StoreError::PermissionDenied(format!(
                        "{what}: no RAM role is attached to this ECS instance"
                    )));
                }
                cache.ecs_role = Some(name.clone());
                name
            }
        };
        let url = format!("{base}{METADATA_CREDENTIALS_PATH}{role}");
        let r = self
            .http
            .request(Method::GET, &url, &headers, None)
            .await
            .map_err(|e| transport_error(&what, e))?;
        if !r.status.is_success() {
            return Err(StoreError::PermissionDenied(format!(
                "{what}: HTTP {} for the credentials of RAM role {role}; is that role attached to this ECS instance?",
                r.status.as_u16()
            )));
        }
        let mut doc = r.json_or_null();
        let code = doc
            .get("Code")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let cred = if code == "Success" {
            cred_of(Some(&doc)).map_err(|e| {
                StoreError::Other(format!(
                    "{what}: unexpected credentials of role {role}: {e}"
                ))
            })
        } else {
            Err(StoreError::PermissionDenied(format!(
                "{what}: the credentials of RAM role {role} are not available (Code {code:?})"
            )))
        };
        crate::secret::wipe_json(&mut doc);
        cred
    }
}

/// `{AccessKeyId, AccessKeySecret, SecurityToken, Expiration}` of STS and
/// of the metadata service.
fn cred_of(doc: Option<&Value>) -> Result<Cred, String> {
    let doc = doc.ok_or("no Credentials")?;
    let field = |k: &str| {
        doc.get(k)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("no {k}"))
    };
    let expiration = field("Expiration")?;
    let expiration =
        time::OffsetDateTime::parse(expiration, &time::format_description::well_known::Rfc3339)
            .map_err(|e| format!("Expiration {expiration:?}: {e}"))?
            .unix_timestamp();
    Ok(Cred {
        access_key_id: field("AccessKeyId")?.to_owned(),
        access_key_secret: Zeroizing::new(field("AccessKeySecret")?.to_owned()),
        security_token: Some(Zeroizing::new(field("SecurityToken")?.to_owned())),
        expiration: Some(expiration),
        obtained: unix_now(),
    })
}

// ---------------------------------------------------------------------------
// Errors.

/// What KMS or STS answered with an error status.
#[derive(Debug, Default)]
struct Refusal {
    status: u16,
    code: String,
    message: String,
    request_id: String,
    /// `AccessDeniedDetail.AuthAction`.
    auth_action: Option<String>,
}

impl Refusal {
    fn of(resp: &Response, payload: Option<&SecretValue>) -> Refusal {
        let doc = resp.json_or_null();
        let text = |k: &str| doc.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        Refusal {
            status: resp.status.as_u16(),
            code: text("Code"),
            message: scrub(&text("Message"), payload),
            request_id: text("RequestId"),
            auth_action: doc
                .pointer("/AccessDeniedDetail/AuthAction")
                .and_then(Value::as_str)
                .map(|a| truncate(a.to_owned(), 100)),
        }
    }

    /// `HTTP 403 Forbidden.NoPermission: message (RequestId …)`.
    fn detail(&self) -> String {
        let mut out = format!("HTTP {}", self.status);
        if !self.code.is_empty() {
            out.push(' ');
            out.push_str(&truncate(self.code.clone(), 80));
        }
        if !self.message.is_empty() {
            out.push_str(": ");
            out.push_str(&self.message);
        }
        if let Some(a) = &self.auth_action {
            out.push_str(&format!(" (AuthAction {a})"));
        }
        if !self.request_id.is_empty() {
            out.push_str(&format!(
                " (RequestId {})",
                truncate(self.request_id.clone(), 64)
            ));
        }
        out
    }
}

/// A service message that shows no value: cut before the gateway's echo of
/// its string to sign (which holds every request parameter), the written
/// value removed, on one line, bounded.
fn scrub(message: &str, payload: Option<&SecretValue>) -> String {
    // ASCII lowercasing keeps byte offsets.
    let lower = message.to_ascii_lowercase();
    let cut = lower
        .find("server string to sign")
        .or_else(|| lower.find("string to sign"))
        .or_else(|| lower.find("stringtosign"));
    let text = match cut {
        Some(at) => {
            let mut head = message[..at]
                .trim_end()
                .trim_end_matches([':', '.', ','])
                .to_owned();
            head.push_str(
                " (the server's string to sign is not shown: it holds the request's values)",
            );
            head
        }
        None => message.to_owned(),
    };
    // The percent-encoded form too: the RPC body sends values that way.
    let extra = payload
        .and_then(|p| std::str::from_utf8(p.expose()).ok())
        .map(|t| vec![percent_encode(t)])
        .unwrap_or_default();
    super::text::redact(&text, payload, extra, 240)
}

fn transport_error(what: &str, e: HttpError) -> StoreError {
    match e {
        HttpError::Unavailable(m) => StoreError::Unavailable(format!("{what}: {m}")),
        HttpError::Invalid(m) => StoreError::Invalid(format!("{what}: {m}")),
    }
}

/// The same kind of error with another message.
fn with_message(e: &StoreError, message: String) -> StoreError {
    match e {
        StoreError::PermissionDenied(_) => StoreError::PermissionDenied(message),
        StoreError::Unavailable(_) => StoreError::Unavailable(message),
        StoreError::Throttled(_) => StoreError::Throttled(message),
        StoreError::PendingDeletion(_) => StoreError::PendingDeletion(message),
        StoreError::Invalid(_) => StoreError::Invalid(message),
        StoreError::Other(_) => StoreError::Other(message),
    }
}

fn message_of(e: &StoreError) -> String {
    match e {
        StoreError::PermissionDenied(m)
        | StoreError::Unavailable(m)
        | StoreError::Throttled(m)
        | StoreError::PendingDeletion(m)
        | StoreError::Invalid(m)
        | StoreError::Other(m) => m.clone(),
    }
}

/// Several regions' errors as one: the kind of the first, every message.
fn combine(errors: Vec<StoreError>, note: &str) -> StoreError {
    let text = errors.iter().map(message_of).collect::<Vec<_>>().join("; ");
    let text = if note.is_empty() {
        text
    } else {
        format!("{text}; {note}")
    };
    match errors.first() {
        Some(first) => with_message(first, text),
        None => StoreError::Other(text),
    }
}

/// Codes of requests KMS did not accept as coming from the credentials.
fn is_credential_code(code: &str) -> bool {
    matches!(
        code,
        "SignatureDoesNotMatch"
            | "IncompleteSignature"
            | "InvalidAccessKeyId"
            | "InvalidAccessKeyId.NotFound"
            | "InvalidAccessKeyId.Inactive"
            | "MissingSecurityToken"
    ) || code.starts_with("InvalidSecurityToken")
}

/// Codes that temporary credentials get when they expired or were revoked.
fn is_stale_credential_code(code: &str) -> bool {
    code.starts_with("InvalidSecurityToken") || code == "InvalidAccessKeyId.NotFound"
}

fn retryable(status: StatusCode, code: &str) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || code.contains("Throttling")
        || code.starts_with("ServiceUnavailable")
}

/// What an error mapping needs to know about the call.
struct Call<'a> {
    /// `CreateSecret`, `GetSecretValue`, ...
    op: &'static str,
    name: &'a RemoteName,
    region: &'a Region,
    /// The value being written, scrubbed from any message.
    payload: Option<&'a SecretValue>,
    /// The encryption key of a write, for permission hints.
    key_id: Option<&'a str>,
}

impl Call<'_> {
    fn what(&self) -> String {
        format!("{} {} in {}", self.op, self.name, self.region.id)
    }
}

// ---------------------------------------------------------------------------
// Payload and tags.

/// A value and its tags, ready to write to one region.
struct Prepared {
    data: Zeroizing<String>,
    /// `text` or `binary` (base64).
    data_type: &'static str,
    tags: BTreeMap<String, String>,
    /// `[{"TagKey":..,"TagValue":..}]`.
    tags_json: String,
    description: Option<String>,
    key_id: Option<String>,
    instance_id: Option<String>,
}

fn all_tags(owner: &Ownership, options: &WriteOptions) -> BTreeMap<String, String> {
    let mut tags = options.tags.clone();
    tags.extend(owner.tags());
    tags
}

/// Checks tags against KMS's (and Alibaba Cloud's) tag rules.
fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), StoreError> {
    if tags.len() > MAX_TAGS {
        return Err(StoreError::Invalid(format!(
            "{} tags (5 for ownership, the rest from the store's tags and the destination); KMS allows at most {MAX_TAGS} per secret",
            tags.len()
        )));
    }
    for (k, v) in tags {
        let lower = k.to_ascii_lowercase();
        if k.is_empty() || k.chars().count() > MAX_TAG_KEY_CHARS {
            return Err(StoreError::Invalid(format!(
                "tag key {:?} must have 1 to {MAX_TAG_KEY_CHARS} characters for KMS",
                truncate(k.clone(), 60)
            )));
        }
        if lower.starts_with("aliyun") || lower.starts_with("acs:") {
            return Err(StoreError::Invalid(format!(
                "tag key {k:?} must not start with aliyun or acs: (reserved by Alibaba Cloud)"
            )));
        }
        if v.chars().count() > MAX_TAG_VALUE_CHARS {
            return Err(StoreError::Invalid(format!(
                "the value of tag {k:?} is longer than KMS's {MAX_TAG_VALUE_CHARS} characters"
            )));
        }
        let lower_v = v.to_ascii_lowercase();
        for s in [&lower, &lower_v] {
            if s.contains("http://") || s.contains("https://") {
                return Err(StoreError::Invalid(format!(
                    "tag {k:?}: tag keys and values must not contain http:// or https:// (Alibaba Cloud's tag rules)"
                )));
            }
        }
    }
    Ok(())
}

fn tags_json(tags: &BTreeMap<String, String>) -> String {
    let list: Vec<Value> = tags
        .iter()
        .map(|(k, v)| json!({ "TagKey": k, "TagValue": v }))
        .collect();
    Value::Array(list).to_string()
}

/// Tags of `DescribeSecret`: `{"Tags": {"Tag": [{"TagKey", "TagValue"}]}}`.
fn tags_of(doc: &Value) -> BTreeMap<String, String> {
    let list = match doc.pointer("/Tags/Tag") {
        Some(Value::Array(a)) => a.clone(),
        Some(one @ Value::Object(_)) => vec![one.clone()],
        _ => Vec::new(),
    };
    list.iter()
        .filter_map(|t| {
            Some((
                t.get("TagKey")?.as_str()?.to_owned(),
                t.get("TagValue")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            ))
        })
        .collect()
}

/// Every tag of `wanted` is on the secret with that value.
fn covers(current: &BTreeMap<String, String>, wanted: &BTreeMap<String, String>) -> bool {
    wanted.iter().all(|(k, v)| current.get(k) == Some(v))
}

fn new_version_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Who owns an entry, for messages.
fn who(entry: &RemoteEntry) -> String {
    match entry.owner() {
        Some(o) => format!(
            "Secret {}/{} of cluster {}",
            o.namespace, o.name, o.cluster_id
        ),
        None => "nobody we know (no secret-santa ownership tags)".to_owned(),
    }
}

/// The one entry a read reports for several regions' entries (in region
/// order): the first present one; marked `replication-incomplete` when we
/// own it and another region lacks it or holds something else; an error when
/// the regions disagree on its owner.
fn merge(
    name: &RemoteName,
    regions: &[&str],
    entries: Vec<Option<RemoteEntry>>,
) -> Result<Option<RemoteEntry>, StoreError> {
    let present: Vec<(&str, &RemoteEntry)> = regions
        .iter()
        .zip(entries.iter())
        .filter_map(|(r, e)| e.as_ref().map(|e| (*r, e)))
        .collect();
    let Some(&(_, reference)) = present.first() else {
        return Ok(None);
    };
    fn key(e: &RemoteEntry) -> Option<(String, String, String)> {
        e.owner().map(|o| (o.cluster_id, o.namespace, o.name))
    }
    if present.iter().any(|&(_, e)| key(e) != key(reference)) {
        let each = present
            .iter()
            .map(|(r, e)| format!("{r}: {}", who(e)))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(StoreError::Invalid(format!(
            "{name}: the regions disagree on who owns the secret ({each}); nothing is overwritten: remove the stray ones so the regions agree"
        )));
    }
    let complete = present.len() == regions.len()
        && present
            .iter()
            .all(|&(_, e)| e.payload == reference.payload && e.tags == reference.tags);
    let mut entry = reference.clone();
    if !complete && entry.owner().is_some() {
        let missing: Vec<&str> = regions
            .iter()
            .zip(entries.iter())
            .filter(|(_, e)| {
                e.as_ref()
                    .is_none_or(|e| e.payload != reference.payload || e.tags != reference.tags)
            })
            .map(|(r, _)| *r)
            .collect();
        tracing::info!(remote = %name, regions = ?missing, "alibaba-kms: the secret is missing from or different in some regions; the next write completes them");
        entry
            .tags
            .insert(TAG_KEY_SET.to_owned(), REPLICATION_INCOMPLETE.to_owned());
    }
    Ok(Some(entry))
}

// ---------------------------------------------------------------------------
// The store.

pub struct AlibabaKmsStore {
    http: HttpClient,
    /// The first one is the arbiter.
    regions: Vec<Region>,
    creds: Credentials,
    deadline: Duration,
    /// The store's `kmsKeyId` (a destination's differing key overrides
    /// every region's).
    default_key: Option<String>,
}

/// What a `CreateSecret` found.
enum Made {
    Created,
    Exists(RemoteEntry),
}

impl AlibabaKmsStore {
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
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let (source, identity) = match &s.auth {
            AuthSettings::AccessKey {
                access_key_id_file,
                access_key_secret_file,
            } => {
                read_access_key(access_key_id_file, access_key_secret_file).await?;
                (
                    Source::AccessKey {
                        id_file: access_key_id_file.clone(),
                        secret_file: access_key_secret_file.clone(),
                    },
                    format!("the AccessKey pair of {}", access_key_id_file.display()),
                )
            }
            AuthSettings::RamRoleArn {
                role_arn,
                access_key_id_file,
                access_key_secret_file,
                role_session_name,
                duration_seconds,
                external_id,
                ..
            } => {
                read_access_key(access_key_id_file, access_key_secret_file).await?;
                (
                    Source::RamRoleArn {
                        role_arn: role_arn.clone(),
                        session: role_session_name
                            .clone()
                            .unwrap_or_else(|| DEFAULT_SESSION_NAME.to_owned()),
                        duration: duration_seconds.unwrap_or(DEFAULT_DURATION_SECS),
                        external_id: external_id.clone(),
                        id_file: access_key_id_file.clone(),
                        secret_file: access_key_secret_file.clone(),
                    },
                    format!(
                        "RAM role {role_arn} (assumed with the AccessKey pair of {})",
                        access_key_id_file.display()
                    ),
                )
            }
            AuthSettings::EcsRamRole {
                role_name,
                metadata_endpoint,
                disable_imds_v1,
            } => {
                let base = match metadata_endpoint {
                    Some(m) => check_endpoint(m, "auth.metadataEndpoint", false, true)?,
                    None => DEFAULT_METADATA_ENDPOINT.to_owned(),
                };
                (
                    Source::EcsRamRole {
                        role_name: role_name.clone(),
                        base,
                        disable_v1: *disable_imds_v1,
                    },
                    match role_name {
                        Some(r) => format!("the ECS instance RAM role {r}"),
                        None => "the ECS instance's RAM role".to_owned(),
                    },
                )
            }
            AuthSettings::Rrsa {
                role_arn,
                oidc_provider_arn,
                oidc_token_file,
                role_session_name,
                duration_seconds,
                ..
            } => {
                let webhook = "the ack-pod-identity-webhook sets it on pods of namespaces labelled pod-identity.alibabacloud.com/injection: on";
                let role_arn = match role_arn.clone().or_else(|| env(ENV_ROLE_ARN)) {
                    Some(r) => r,
                    None => {
                        return Err(format!(
                            "auth.roleArn is not set and neither is {ENV_ROLE_ARN} ({webhook})"
                        ));
                    }
                };
                check_role_arn(&role_arn, ENV_ROLE_ARN)?;
                let provider_arn = match oidc_provider_arn
                    .clone()
                    .or_else(|| env(ENV_OIDC_PROVIDER_ARN))
                {
                    Some(p) => p,
                    None => {
                        return Err(format!(
                            "auth.oidcProviderArn is not set and neither is {ENV_OIDC_PROVIDER_ARN} ({webhook})"
                        ));
                    }
                };
                check_provider_arn(&provider_arn, ENV_OIDC_PROVIDER_ARN)?;
                let token_file = match oidc_token_file
                    .clone()
                    .or_else(|| env(ENV_OIDC_TOKEN_FILE).map(PathBuf::from))
                {
                    Some(t) => t,
                    None => {
                        return Err(format!(
                            "auth.oidcTokenFile is not set and neither is {ENV_OIDC_TOKEN_FILE} ({webhook})"
                        ));
                    }
                };
                read_secret_file(&token_file, "oidcTokenFile").await?;
                (
                    Source::Rrsa {
                        role_arn: role_arn.clone(),
                        provider_arn: provider_arn.clone(),
                        token_file,
                        session: role_session_name
                            .clone()
                            .unwrap_or_else(|| DEFAULT_SESSION_NAME.to_owned()),
                        duration: duration_seconds.unwrap_or(DEFAULT_DURATION_SECS),
                    },
                    format!("RAM role {role_arn} (RRSA, OIDC provider {provider_arn})"),
                )
            }
        };
        let region_ids: Vec<&str> = s.regions.iter().map(|r| r.id.as_str()).collect();
        tracing::info!(
            regions = ?region_ids,
            auth = s.auth.method(),
            identity = %identity,
            "alibaba-kms store ready"
        );
        Ok(Self {
            creds: Credentials {
                source,
                http: http.clone(),
                sts_url: s.sts_url,
                cache: tokio::sync::Mutex::new(Cache::default()),
                identity,
            },
            http,
            regions: s.regions,
            deadline,
            default_key: s.default_key,
        })
    }

    /// The regions the store writes to, the arbiter first.
    pub fn regions(&self) -> Vec<&str> {
        self.regions.iter().map(|r| r.id.as_str()).collect()
    }

    /// One signed KMS request. Transient failures (no answer, 5xx,
    /// throttling) are retried once while less than half the deadline is
    /// gone; temporary credentials KMS no longer accepts are replaced once.
    /// A non-success answer is returned for the caller to map.
    async fn kms(&self, call: &Call<'_>, params: Params) -> Result<Response, StoreError> {
        let started = Instant::now();
        let params = params.with("RegionId", call.region.id.as_str());
        let mut retried = false;
        let mut renewed = false;
        loop {
            let cred = self.creds.get().await.map_err(|e| {
                with_message(
                    &e,
                    format!("{}: credentials: {}", call.what(), message_of(&e)),
                )
            })?;
            let sent = send_rpc(
                &self.http,
                &call.region.url,
                call.op,
                KMS_VERSION,
                &params,
                Some(&cred),
            )
            .await;
            let may_retry = !retried && started.elapsed() < self.deadline / 2;
            match sent {
                Err(HttpError::Unavailable(m)) if may_retry => {
                    tracing::debug!(op = call.op, error = %m, "alibaba-kms: retrying once");
                    retried = true;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) => return Err(transport_error(&call.what(), e)),
                Ok(resp) if resp.status.is_success() => return Ok(resp),
                Ok(resp) => {
                    let code = resp
                        .json_or_null()
                        .get("Code")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned();
                    if may_retry && retryable(resp.status, &code) {
                        tracing::debug!(
                            op = call.op,
                            status = resp.status.as_u16(),
                            code = %code,
                            "alibaba-kms: retrying once"
                        );
                        retried = true;
                        tokio::time::sleep(RETRY_PAUSE).await;
                    } else if !renewed
                        && is_stale_credential_code(&code)
                        && self.creds.invalidate(&cred).await
                    {
                        renewed = true;
                    } else {
                        return Ok(resp);
                    }
                }
            }
        }
    }

    /// Maps a KMS refusal to a `StoreError` with a short message naming the
    /// operation, the secret, the region and the cause; never a value.
    fn refusal(&self, call: &Call<'_>, resp: &Response) -> StoreError {
        let r = Refusal::of(resp, call.payload);
        let what = call.what();
        let detail = r.detail();
        let code = r.code.as_str();
        let name = call.name;
        let region = &call.region.id;
        if code == "Rejected.ResourceInDeleteWindow" {
            return StoreError::PendingDeletion(format!(
                "{what}: {detail}; secret {name} in {region} is scheduled for deletion: {}",
                deletion_hint(name, region)
            ));
        }
        if is_credential_code(code) {
            return StoreError::PermissionDenied(format!(
                "{what}: {detail}; KMS did not accept the credentials of {} (check the AccessKey ID and secret)",
                self.creds.identity
            ));
        }
        if code.starts_with("InvalidTimeStamp") || code == "RequestTimeTooSkewed" {
            return StoreError::Invalid(format!(
                "{what}: {detail}; check this machine's clock (requests must be within 15 minutes of Alibaba Cloud's time)"
            ));
        }
        if matches!(code, "Forbidden.KeyNotFound" | "Forbidden.AliasNotFound") {
            return StoreError::Invalid(format!(
                "{what}: {detail}; the encryption key {} is not a key of region {region}: set kmsKeyId (or regionSettings.{region}.kmsKeyId) to a symmetric key of that region",
                call.key_id.unwrap_or("(none)")
            ));
        }
        let denied = r.status == 403
            || code.contains("NoPermission")
            || code == "Forbidden.RAM"
            || (code.starts_with("Forbidden") && code != "Forbidden.ResourceNotFound");
        if denied {
            let key = match (call.op, call.key_id) {
                ("CreateSecret" | "PutSecretValue", Some(k)) => {
                    format!(", and kms:GenerateDataKey on key {k}")
                }
                ("GetSecretValue", _) => {
                    ", and kms:Decrypt on the secret's key when it is a customer key".to_owned()
                }
                _ => String::new(),
            };
            return StoreError::PermissionDenied(format!(
                "{what}: {detail}; {} needs kms:{} on acs:kms:{region}:*:secret/{name}{key}",
                self.creds.identity, call.op
            ));
        }
        if r.status == 429 || code.contains("Throttling") {
            return StoreError::Throttled(format!("{what}: {detail}"));
        }
        if r.status >= 500
            || code.starts_with("ServiceUnavailable")
            || matches!(code, "InternalFailure" | "InternalError")
        {
            return StoreError::Unavailable(format!("{what}: {detail}"));
        }
        match r.status {
            400 | 404 | 405 | 409 | 413 | 414 => StoreError::Invalid(format!("{what}: {detail}")),
            _ => StoreError::Other(format!("{what}: {detail}")),
        }
    }

    fn unexpected(call: &Call<'_>, problem: &str) -> StoreError {
        StoreError::Other(format!(
            "{}: unexpected answer from KMS: {problem}",
            call.what()
        ))
    }

    /// The key of a write to `region`: a destination's own `kmsKeyId`
    /// (differing from the store's) everywhere, else the region's.
    fn key_for(&self, region: &Region, options: &WriteOptions) -> Option<String> {
        match &options.kms_key_id {
            Some(k) if Some(k) != self.default_key.as_ref() => Some(k.clone()),
            _ => region.kms_key_id.clone(),
        }
    }

    fn prepare(
        &self,
        region: &Region,
        payload: &SecretValue,
        tags: &BTreeMap<String, String>,
        options: &WriteOptions,
    ) -> Result<Prepared, StoreError> {
        check_tags(tags)?;
        let (data, data_type) = match std::str::from_utf8(payload.expose()) {
            Ok(text) => (Zeroizing::new(text.to_owned()), "text"),
            Err(_) => (
                Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(payload.expose())),
                "binary",
            ),
        };
        Ok(Prepared {
            data,
            data_type,
            tags: tags.clone(),
            tags_json: tags_json(tags),
            description: options.description.clone().filter(|d| !d.is_empty()),
            key_id: self.key_for(region, options),
            instance_id: region.kms_instance_id.clone(),
        })
    }

    // -- one region ---------------------------------------------------------

    /// `DescribeSecret FetchTags=true`: the tags; `None` when absent; a
    /// secret scheduled for deletion is an error.
    async fn describe(
        &self,
        region: &Region,
        name: &RemoteName,
    ) -> Result<Option<BTreeMap<String, String>>, StoreError> {
        let call = Call {
            op: "DescribeSecret",
            name,
            region,
            payload: None,
            key_id: None,
        };
        let params = Params::new()
            .with("SecretName", name.as_str())
            .with("FetchTags", "true");
        let resp = self.kms(&call, params).await?;
        if !resp.status.is_success() {
            if Refusal::of(&resp, None).code == "Forbidden.ResourceNotFound" {
                return Ok(None);
            }
            return Err(self.refusal(&call, &resp));
        }
        let doc = resp.json_or_null();
        if doc.get("SecretName").is_none() && doc.get("Arn").is_none() {
            return Err(Self::unexpected(&call, "no SecretName"));
        }
        if let Some(when) = doc
            .get("PlannedDeleteTime")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            return Err(StoreError::PendingDeletion(format!(
                "{}: secret {name} in {} is scheduled for deletion at {}: {}",
                call.what(),
                region.id,
                truncate(when.to_owned(), 40),
                deletion_hint(name, &region.id)
            )));
        }
        Ok(Some(tags_of(&doc)))
    }

    /// `GetSecretValue` (`ACSCurrent`): the value and its version id; `None`
    /// when absent.
    async fn get_value(
        &self,
        region: &Region,
        name: &RemoteName,
    ) -> Result<Option<(SecretValue, Option<String>)>, StoreError> {
        let call = Call {
            op: "GetSecretValue",
            name,
            region,
            payload: None,
            key_id: None,
        };
        let resp = self
            .kms(&call, Params::new().with("SecretName", name.as_str()))
            .await?;
        if !resp.status.is_success() {
            if Refusal::of(&resp, None).code == "Forbidden.ResourceNotFound" {
                return Ok(None);
            }
            return Err(self.refusal(&call, &resp));
        }
        let mut doc = resp.json_or_null();
        let result = (|| {
            let data = doc
                .get("SecretData")
                .and_then(Value::as_str)
                .ok_or("no SecretData")?;
            let payload = match doc.get("SecretDataType").and_then(Value::as_str) {
                Some("binary") => SecretValue::new(
                    base64::engine::general_purpose::STANDARD
                        .decode(data.trim())
                        .map_err(|_| "binary SecretData that is not base64")?,
                ),
                _ => SecretValue::new(data.as_bytes().to_vec()),
            };
            let version = doc
                .get("VersionId")
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .map(str::to_owned);
            Ok::<_, &str>((payload, version))
        })();
        crate::secret::wipe_json(&mut doc);
        result
            .map(Some)
            .map_err(|problem| Self::unexpected(&call, problem))
    }

    /// The entry in one region; `None` when absent.
    async fn read_region(
        &self,
        region: &Region,
        name: &RemoteName,
    ) -> Result<Option<RemoteEntry>, StoreError> {
        let (described, value) =
            tokio::join!(self.describe(region, name), self.get_value(region, name));
        let Some(tags) = described? else {
            return Ok(None);
        };
        Ok(value?.map(|(payload, version)| RemoteEntry {
            payload,
            tags,
            version,
        }))
    }

    /// `CreateSecret`; false when the name is taken.
    async fn create_secret(
        &self,
        region: &Region,
        name: &RemoteName,
        payload: &SecretValue,
        prepared: &Prepared,
        version_id: &str,
    ) -> Result<bool, StoreError> {
        let call = Call {
            op: "CreateSecret",
            name,
            region,
            payload: Some(payload),
            key_id: prepared.key_id.as_deref(),
        };
        let mut params = Params::new()
            .with("SecretName", name.as_str())
            .with("SecretData", prepared.data.as_str())
            .with("SecretDataType", prepared.data_type)
            .with("VersionId", version_id)
            .with("SecretType", "Generic");
        if !prepared.tags.is_empty() {
            params.set("Tags", prepared.tags_json.as_str());
        }
        if let Some(d) = &prepared.description {
            params.set("Description", d.as_str());
        }
        if let Some(k) = &prepared.key_id {
            params.set("EncryptionKeyId", k.as_str());
        }
        if let Some(i) = &prepared.instance_id {
            params.set("DKMSInstanceId", i.as_str());
        }
        let resp = self.kms(&call, params).await?;
        if resp.status.is_success() {
            return Ok(true);
        }
        if Refusal::of(&resp, None).code == "Rejected.ResourceExist" {
            return Ok(false);
        }
        Err(self.refusal(&call, &resp))
    }

    /// `PutSecretValue` (a new `ACSCurrent` version); false when the secret
    /// is gone.
    async fn put_value(
        &self,
        region: &Region,
        name: &RemoteName,
        payload: &SecretValue,
        prepared: &Prepared,
        version_id: &str,
    ) -> Result<bool, StoreError> {
        let call = Call {
            op: "PutSecretValue",
            name,
            region,
            payload: Some(payload),
            key_id: prepared.key_id.as_deref(),
        };
        let params = Params::new()
            .with("SecretName", name.as_str())
            .with("SecretData", prepared.data.as_str())
            .with("SecretDataType", prepared.data_type)
            .with("VersionId", version_id);
        let resp = self.kms(&call, params).await?;
        if resp.status.is_success() {
            return Ok(true);
        }
        if Refusal::of(&resp, None).code == "Forbidden.ResourceNotFound" {
            return Ok(false);
        }
        Err(self.refusal(&call, &resp))
    }

    /// `TagResource` with all of the write's tags.
    async fn tag_resource(
        &self,
        region: &Region,
        name: &RemoteName,
        prepared: &Prepared,
    ) -> Result<(), StoreError> {
        let call = Call {
            op: "TagResource",
            name,
            region,
            payload: None,
            key_id: None,
        };
        let params = Params::new()
            .with("SecretName", name.as_str())
            .with("Tags", prepared.tags_json.as_str());
        let resp = self.kms(&call, params).await?;
        if resp.status.is_success() {
            return Ok(());
        }
        Err(self.refusal(&call, &resp))
    }

    /// `CreateSecret`, and what is there when the name is taken. A create
    /// that finds its own version id (its first answer was lost) counts as
    /// created.
    async fn create_or_read(
        &self,
        region: &Region,
        name: &RemoteName,
        payload: &SecretValue,
        prepared: &Prepared,
        version_id: &str,
    ) -> Result<Made, StoreError> {
        if self
            .create_secret(region, name, payload, prepared, version_id)
            .await?
        {
            return Ok(Made::Created);
        }
        match self.read_region(region, name).await? {
            Some(e) if e.version.as_deref() == Some(version_id) => Ok(Made::Created),
            Some(e) => Ok(Made::Exists(e)),
            None => Err(StoreError::Other(format!(
                "CreateSecret {name} in {}: the name is taken and the secret could not be read back (deleted concurrently?); a retry converges",
                region.id
            ))),
        }
    }

    /// Makes `region` hold `payload` with `prepared`'s tags, writing only
    /// what differs. With `guard`, an existing entry that is not the same
    /// Secret's is an error, never overwritten. Returns the version id now
    /// current there.
    #[allow(clippy::too_many_arguments)]
    async fn converge_region(
        &self,
        region: &Region,
        name: &RemoteName,
        payload: &SecretValue,
        prepared: &Prepared,
        version_id: &str,
        guard: Option<&Ownership>,
        create_first: bool,
    ) -> Result<Option<String>, StoreError> {
        let existing = if create_first {
            None
        } else {
            self.read_region(region, name).await?
        };
        let current = match existing {
            Some(e) => e,
            None => match self
                .create_or_read(region, name, payload, prepared, version_id)
                .await?
            {
                Made::Created => return Ok(Some(version_id.to_owned())),
                Made::Exists(e) => e,
            },
        };
        if let Some(owner) = guard
            && !current.owner().is_some_and(|o| o.same_secret(owner))
        {
            return Err(StoreError::Invalid(format!(
                "{name} already exists in region {} and is owned by {}; it is not overwritten: remove it so the regions agree",
                region.id,
                who(&current)
            )));
        }
        let mut version = current.version.clone();
        if current.payload != *payload {
            if !self
                .put_value(region, name, payload, prepared, version_id)
                .await?
            {
                return Err(StoreError::Other(format!(
                    "PutSecretValue {name} in {}: the secret was removed while it was written; a retry converges",
                    region.id
                )));
            }
            version = Some(version_id.to_owned());
        }
        if !covers(&current.tags, &prepared.tags) {
            self.tag_resource(region, name, prepared).await?;
        }
        Ok(version)
    }

    /// Every region, in parallel, merged (see [`merge`]).
    async fn read_all(&self, name: &RemoteName) -> Result<Option<RemoteEntry>, StoreError> {
        if let [only] = self.regions.as_slice() {
            return self.read_region(only, name).await;
        }
        let results = join_all(self.regions.iter().map(|r| self.read_region(r, name))).await;
        let mut entries = Vec::with_capacity(results.len());
        let mut errors = Vec::new();
        for result in results {
            match result {
                Ok(e) => entries.push(e),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(combine(errors, ""));
        }
        merge(name, &self.regions(), entries)
    }

    /// Copies the arbiter's entry (ours) to the other regions.
    async fn replicate(
        &self,
        name: &RemoteName,
        entry: &RemoteEntry,
        options: &WriteOptions,
    ) -> Result<(), StoreError> {
        let Some(owner) = entry.owner() else {
            return Ok(());
        };
        let version_id = new_version_id();
        let results = join_all(self.regions[1..].iter().map(|r| {
            let owner = &owner;
            let version_id = version_id.as_str();
            async move {
                let prepared = self.prepare(r, &entry.payload, &entry.tags, options)?;
                self.converge_region(
                    r,
                    name,
                    &entry.payload,
                    &prepared,
                    version_id,
                    Some(owner),
                    true,
                )
                .await
            }
        }))
        .await;
        let errors: Vec<StoreError> = results.into_iter().filter_map(Result::err).collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(combine(
                errors,
                &format!(
                    "the secret is in {}; a retry completes the other regions",
                    self.regions[0].id
                ),
            ))
        }
    }
}

/// How to get out of a scheduled deletion.
fn deletion_hint(name: &RemoteName, region: &str) -> String {
    format!(
        "restore it (aliyun kms RestoreSecret --region {region} --SecretName {name}) or delete it for good (aliyun kms DeleteSecret --region {region} --SecretName {name} --ForceDeleteWithoutRecovery true), then retry"
    )
}

#[async_trait]
impl SecretStore for AlibabaKmsStore {
    fn kind(&self) -> &'static str {
        TYPE
    }

    /// `CreateSecret` is refused by the server when the name is taken (in
    /// the arbiter region, with several).
    fn atomic_create(&self) -> bool {
        true
    }

    fn remote_name(&self, logical: &str) -> Result<RemoteName, String> {
        secret_name(logical).map(RemoteName::new_unchecked)
    }

    async fn read(&self, name: &RemoteName) -> Result<Option<RemoteEntry>, StoreError> {
        self.read_all(name).await
    }

    async fn create_if_absent(
        &self,
        name: &RemoteName,
        payload: &SecretValue,
        owner: &Ownership,
        options: &WriteOptions,
    ) -> Result<CreateOutcome, StoreError> {
        let tags = all_tags(owner, options);
        check_tags(&tags)?;
        let version_id = new_version_id();
        let arbiter = &self.regions[0];
        let prepared = self.prepare(arbiter, payload, &tags, options)?;
        match self
            .create_or_read(arbiter, name, payload, &prepared, &version_id)
            .await?
        {
            Made::Created => {}
            Made::Exists(existing) => {
                if self.regions.len() == 1 {
                    return Ok(CreateOutcome::Exists(existing));
                }
                if existing.owner().is_some_and(|o| o.same_secret(owner)) {
                    self.replicate(name, &existing, options).await?;
                }
                return match self.read_all(name).await? {
                    Some(entry) => Ok(CreateOutcome::Exists(entry)),
                    None => Err(StoreError::Other(format!(
                        "CreateSecret {name}: the secret exists in {} and could not be read back (deleted concurrently?); a retry converges",
                        arbiter.id
                    ))),
                };
            }
        }
        if self.regions.len() > 1 {
            let results = join_all(self.regions[1..].iter().map(|r| {
                let tags = &tags;
                let version_id = version_id.as_str();
                async move {
                    let prepared = self.prepare(r, payload, tags, options)?;
                    self.converge_region(r, name, payload, &prepared, version_id, Some(owner), true)
                        .await
                }
            }))
            .await;
            let errors: Vec<StoreError> = results.into_iter().filter_map(Result::err).collect();
            if !errors.is_empty() {
                return Err(combine(
                    errors,
                    &format!(
                        "the secret was created in {}; a retry completes the other regions with its value",
                        arbiter.id
                    ),
                ));
            }
        }
        Ok(CreateOutcome::Created {
            version: Some(version_id),
        })
    }

    async fn put(
        &self,
        name: &RemoteName,
        payload: &SecretValue,
        owner: &Ownership,
        options: &WriteOptions,
    ) -> Result<Option<String>, StoreError> {
        let tags = all_tags(owner, options);
        check_tags(&tags)?;
        let version_id = new_version_id();
        let results = join_all(self.regions.iter().map(|r| {
            let tags = &tags;
            let version_id = version_id.as_str();
            async move {
                let prepared = self.prepare(r, payload, tags, options)?;
                self.converge_region(r, name, payload, &prepared, version_id, None, false)
                    .await
            }
        }))
        .await;
        let mut versions = Vec::with_capacity(results.len());
        let mut errors = Vec::new();
        for result in results {
            match result {
                Ok(v) => versions.push(v),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(combine(
                errors,
                if self.regions.len() > 1 {
                    "the other regions were written; a retry completes them"
                } else {
                    ""
                },
            ));
        }
        Ok(versions.into_iter().next().flatten())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// The worked example of Alibaba Cloud's RPC signature documentation
    /// ("Request signatures" / "Signature method" of the ECS API reference,
    /// help doc 28139 and its copies for other products, e.g. KMS's doc
    /// 69009): `DescribeRegions` with AccessKey ID `testid` and secret
    /// `testsecret`, signed with the key `testsecret&`.
    #[test]
    fn the_documented_describe_regions_example_signs_as_documented() {
        let p = params(&[
            ("Timestamp", "2016-02-23T12:46:24Z"),
            ("Format", "XML"),
            ("AccessKeyId", "testid"),
            ("Action", "DescribeRegions"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
            ("Version", "2014-05-26"),
            ("SignatureVersion", "1.0"),
        ]);
        assert_eq!(
            canonicalized_query(&p).as_str(),
            "AccessKeyId=testid&Action=DescribeRegions&Format=XML&SignatureMethod=HMAC-SHA1\
             &SignatureNonce=3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf&SignatureVersion=1.0\
             &Timestamp=2016-02-23T12%3A46%3A24Z&Version=2014-05-26"
        );
        let sts = string_to_sign("GET", &p);
        assert_eq!(
            sts.as_str(),
            "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML\
             %26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf\
             %26SignatureVersion%3D1.0%26Timestamp%3D2016-02-23T12%253A46%253A24Z%26Version%3D2014-05-26"
        );
        let sig = signature("testsecret", &sts);
        assert_eq!(sig, "OLeaidS1JvxuMvnyHOwuJ+uX5qY=");
        // As it goes into the request: `Signature=OLeaidS1JvxuMvnyHOwuJ%2BuX5qY%3D`.
        assert_eq!(percent_encode(&sig), "OLeaidS1JvxuMvnyHOwuJ%2BuX5qY%3D");
        // The Signature parameter itself is never signed.
        let mut with_sig = p.clone();
        with_sig.insert("Signature".into(), sig.clone());
        assert_eq!(string_to_sign("GET", &with_sig).as_str(), sts.as_str());
    }

    /// The worked example of Alibaba Cloud SMS's signature documentation
    /// ("签名机制", dysmsapi `SendSms`): UTF-8 (Chinese) and JSON values,
    /// AccessKey ID `testId`, secret `testSecret`.
    #[test]
    fn the_documented_send_sms_example_signs_as_documented() {
        let p = params(&[
            ("AccessKeyId", "testId"),
            ("Action", "SendSms"),
            ("Format", "XML"),
            ("OutId", "123"),
            ("PhoneNumbers", "15300000001"),
            ("RegionId", "cn-hangzhou"),
            ("SignName", "阿里云短信测试专用"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "45e25e9b-0a6f-4070-8c85-2956eda1b466"),
            ("SignatureVersion", "1.0"),
            ("TemplateCode", "SMS_71390007"),
            ("TemplateParam", r#"{"customer":"test"}"#),
            ("Timestamp", "2017-07-12T02:42:19Z"),
            ("Version", "2017-05-25"),
        ]);
        let query = canonicalized_query(&p);
        assert!(query.contains(
            "SignName=%E9%98%BF%E9%87%8C%E4%BA%91%E7%9F%AD%E4%BF%A1%E6%B5%8B%E8%AF%95%E4%B8%93%E7%94%A8"
        ));
        assert!(query.contains("TemplateParam=%7B%22customer%22%3A%22test%22%7D"));
        let sig = signature("testSecret", &string_to_sign("GET", &p));
        assert_eq!(sig, "zJDF+Lrzhj/ThnlvIToysFRq6t4=");
    }

    #[test]
    fn percent_encoding_follows_the_documented_rules() {
        assert_eq!(percent_encode("AZaz09-_.~"), "AZaz09-_.~");
        assert_eq!(percent_encode("a b"), "a%20b", "a space is %20, never +");
        assert_eq!(percent_encode("*"), "%2A");
        assert_eq!(percent_encode("+/=&:"), "%2B%2F%3D%26%3A");
        assert_eq!(percent_encode("\""), "%22");
        assert_eq!(percent_encode("é"), "%C3%A9", "UTF-8 bytes, uppercase hex");
        assert_eq!(percent_encode("\n"), "%0A");
    }

    #[test]
    fn a_post_is_signed_over_every_parameter() {
        let p = params(&[("Action", "GetSecretValue"), ("SecretName", "a b")]);
        let sts = string_to_sign("POST", &p);
        assert!(sts.starts_with("POST&%2F&"), "{}", sts.as_str());
        assert!(
            sts.contains("SecretName%3Da%2520b"),
            "values are encoded twice"
        );
        assert_ne!(
            signature("s", &sts),
            signature("s", &string_to_sign("GET", &p)),
            "the method is signed"
        );
        assert_ne!(signature("s", &sts), signature("t", &sts));
    }

    fn config(settings: Value) -> StoreConfig {
        let mut c: StoreConfig = serde_json::from_value(json!({
            "name": "kms",
            "type": TYPE,
            "namespaces": ["*"],
        }))
        .unwrap();
        c.settings = settings.as_object().unwrap().clone();
        c
    }

    fn access_key() -> Value {
        json!({"method": "accessKey", "accessKeyIdFile": "/id", "accessKeySecretFile": "/secret"})
    }

    #[test]
    fn settings_are_checked_with_the_key_named() {
        let p = settings(&config(
            json!({"regionId": "cn-hangzhou", "auth": access_key()}),
        ))
        .unwrap();
        assert_eq!(p.regions.len(), 1);
        assert_eq!(p.regions[0].url, "https://kms.cn-hangzhou.aliyuncs.com/");
        assert_eq!(p.sts_url, "https://sts.aliyuncs.com/");

        let p = settings(&config(json!({
            "regions": ["cn-hangzhou", "cn-shanghai"],
            "vpcEndpoint": true,
            "kmsInstanceId": "kst-hzz1",
            "regionSettings": {"cn-shanghai": {"kmsKeyId": "key-sh", "kmsInstanceId": "kst-shh2"}},
            "auth": {"method": "ramRoleArn", "roleArn": "acs:ram::123456789012:role/kms-writer",
                     "accessKeyIdFile": "/id", "accessKeySecretFile": "/secret"},
        })))
        .unwrap();
        assert_eq!(
            p.regions[0].url,
            "https://kms-vpc.cn-hangzhou.aliyuncs.com/"
        );
        assert_eq!(
            p.regions[1].url,
            "https://kms-vpc.cn-shanghai.aliyuncs.com/"
        );
        assert_eq!(p.regions[0].kms_instance_id.as_deref(), Some("kst-hzz1"));
        assert_eq!(p.regions[1].kms_instance_id.as_deref(), Some("kst-shh2"));
        assert_eq!(p.regions[1].kms_key_id.as_deref(), Some("key-sh"));
        assert_eq!(p.sts_url, "https://sts-vpc.cn-hangzhou.aliyuncs.com/");

        let p = settings(&config(json!({
            "regions": ["cn-hangzhou", "cn-beijing"],
            "endpoint": "http://127.0.0.1:8080/",
            "auth": {"method": "rrsa", "stsEndpoint": "http://127.0.0.1:8080"},
        })))
        .unwrap();
        assert_eq!(p.regions[1].url, "http://127.0.0.1:8080/");
        assert_eq!(p.sts_url, "http://127.0.0.1:8080/");
        let p = settings(&config(json!({
            "regionId": "cn-hangzhou",
            "endpoint": "https://kms-proxy.{regionId}.internal",
            "auth": {"method": "ecsRamRole"},
        })))
        .unwrap();
        assert_eq!(p.regions[0].url, "https://kms-proxy.cn-hangzhou.internal/");

        let cases = [
            (
                json!({"regionId": "cn-hangzhou", "auth": access_key(), "regionID": "x"}),
                "regionID",
            ),
            (json!({"auth": access_key()}), "regionId is required"),
            (
                json!({"regionId": "cn-hangzhou", "regions": ["cn-hangzhou"], "auth": access_key()}),
                "not both",
            ),
            (
                json!({"regionId": "Hangzhou", "auth": access_key()}),
                "regionId \"Hangzhou\"",
            ),
            (json!({"regions": [], "auth": access_key()}), "at least one"),
            (
                json!({"regions": ["cn-hangzhou", "cn-hangzhou"], "auth": access_key()}),
                "twice",
            ),
            (json!({"regionId": "cn-hangzhou"}), "auth"),
            (
                json!({"regionId": "cn-hangzhou", "auth": {"method": "password"}}),
                "password",
            ),
            (
                json!({"regionId": "cn-hangzhou", "auth": {"method": "accessKey", "accessKeyIdFile": "/id"}}),
                "accessKeySecretFile",
            ),
            (
                json!({"regionId": "cn-hangzhou", "endpoint": "http://kms.example.com", "auth": access_key()}),
                "endpoint",
            ),
            (
                json!({"regionId": "cn-hangzhou", "endpoint": "https://kms.example.com/v1", "auth": access_key()}),
                "without path",
            ),
            (
                json!({"regionId": "cn-hangzhou", "regionSettings": {"cn-beijing": {}}, "auth": access_key()}),
                "regionSettings.cn-beijing",
            ),
            (
                json!({"regionId": "cn-hangzhou", "regionSettings": {"cn-hangzhou": {"kmsKeyID": "k"}}, "auth": access_key()}),
                "kmsKeyID",
            ),
            (
                json!({"regionId": "cn-hangzhou", "auth": {"method": "ramRoleArn", "roleArn": "kms-writer", "accessKeyIdFile": "/id", "accessKeySecretFile": "/s"}}),
                "auth.roleArn",
            ),
            (
                json!({"regionId": "cn-hangzhou", "auth": {"method": "ramRoleArn", "roleArn": "acs:ram::1:role/r", "accessKeyIdFile": "/id", "accessKeySecretFile": "/s", "durationSeconds": 60}}),
                "auth.durationSeconds",
            ),
            (
                json!({"regionId": "cn-hangzhou", "auth": {"method": "rrsa", "roleSessionName": "x y"}}),
                "auth.roleSessionName",
            ),
            (
                json!({"regionId": "cn-hangzhou", "auth": {"method": "rrsa", "oidcProviderArn": "acs:ram::1:role/r"}}),
                "auth.oidcProviderArn",
            ),
            (
                json!({"regionId": "cn-hangzhou", "auth": {"method": "rrsa", "stsEndpoint": "http://sts.example.com"}}),
                "auth.stsEndpoint",
            ),
            (
                json!({"regionId": "cn-hangzhou", "auth": {"method": "ecsRamRole", "roleName": "a/b"}}),
                "auth.roleName",
            ),
            (
                json!({"regionId": "cn-hangzhou", "auth": {"method": "ecsRamRole", "metadataEndpoint": "ftp://x"}}),
                "auth.metadataEndpoint",
            ),
            (
                json!({"regionId": "cn-hangzhou", "auth": {"method": "ecsRamRole", "roleNam": "r"}}),
                "roleNam",
            ),
        ];
        for (settings_json, needle) in cases {
            let err = validate(&config(settings_json.clone())).unwrap_err();
            assert!(err.contains(needle), "{settings_json}: {err}");
        }
        // The metadata service is plain http by design.
        assert!(validate(&config(json!({"regionId": "cn-hangzhou", "auth": {"method": "ecsRamRole", "metadataEndpoint": "http://100.100.100.200"}}))).is_ok());
    }

    #[test]
    fn names_follow_kms_rules() {
        assert_eq!(secret_name("k8s/shop/db.v1").unwrap(), "k8s/shop/db.v1");
        assert!(secret_name("a_b/c+d=e.f@g-h").is_ok());
        assert!(secret_name("").unwrap_err().contains("empty"));
        assert!(secret_name("shop/db#1").unwrap_err().contains("'#'"));
        assert!(secret_name("shop/d b").unwrap_err().contains("' '"));
        assert!(secret_name("shop/dé").unwrap_err().contains("'é'"));
        assert!(secret_name("acs/shop/db").unwrap_err().contains("acs/"));
        assert!(secret_name(&"a".repeat(192)).is_ok());
        assert!(secret_name(&"a".repeat(193)).unwrap_err().contains("192"));
    }

    #[test]
    fn tags_are_checked_before_writing() {
        let owner = Ownership {
            cluster_id: "c".into(),
            namespace: "n".into(),
            name: "s".into(),
            key_set: "k".into(),
        };
        let mut options = WriteOptions::default();
        assert!(check_tags(&all_tags(&owner, &options)).is_ok());
        options.tags = (0..6).map(|i| (format!("t{i}"), "v".into())).collect();
        let err = check_tags(&all_tags(&owner, &options)).unwrap_err();
        assert!(
            matches!(err, StoreError::Invalid(_))
                && err.to_string().contains("11 tags")
                && err.to_string().contains("at most 10"),
            "{err}"
        );
        for (k, v, needle) in [
            ("aliyun-team", "x", "aliyun"),
            ("ACS:team", "x", "acs:"),
            ("team", "https://x", "http"),
            (&*"k".repeat(129), "x", "128"),
            ("team", &*"v".repeat(129), "128"),
        ] {
            let tags = BTreeMap::from([(k.to_owned(), v.to_owned())]);
            let err = check_tags(&tags).unwrap_err();
            assert!(err.to_string().contains(needle), "{k}: {err}");
        }
        let json: Value = serde_json::from_str(&tags_json(&owner.tags())).unwrap();
        assert_eq!(json.as_array().unwrap().len(), 5);
        assert_eq!(json[0]["TagKey"], "secret-santa-cluster");
        assert_eq!(json[0]["TagValue"], "c");
    }

    #[test]
    fn described_tags_are_read_in_either_shape() {
        let doc = json!({"Tags": {"Tag": [{"TagKey": "a", "TagValue": "1"}, {"TagKey": "b", "TagValue": "2"}]}});
        assert_eq!(tags_of(&doc).len(), 2);
        let doc = json!({"Tags": {"Tag": {"TagKey": "a", "TagValue": "1"}}});
        assert_eq!(tags_of(&doc)["a"], "1");
        assert!(tags_of(&json!({})).is_empty());
    }

    #[test]
    fn messages_never_show_the_string_to_sign_or_the_value() {
        let v = SecretValue::new(br#"{"password":"hunter2-secret"}"#.to_vec());
        let echoed = format!(
            "Specified signature is not matched with our calculation. server string to sign is:POST&%2F&SecretData%3D{}",
            percent_encode(&percent_encode(r#"{"password":"hunter2-secret"}"#))
        );
        let out = scrub(&echoed, Some(&v));
        assert!(!out.contains("hunter2"), "{out}");
        assert!(
            out.starts_with("Specified signature is not matched with our calculation"),
            "{out}"
        );
        assert!(out.contains("not shown"), "{out}");
        let out = scrub(
            "bad value {\"password\":\"hunter2-secret\"}\r\n here",
            Some(&v),
        );
        assert_eq!(out, "bad value <redacted> here");
        let out = scrub(
            &format!("bad {}", percent_encode(r#"{"password":"hunter2-secret"}"#)),
            Some(&v),
        );
        assert!(!out.contains("hunter2"), "{out}");
    }

    #[test]
    fn temporary_credentials_are_refreshed_when_two_thirds_are_gone() {
        let c = Cred {
            access_key_id: "STS.x".into(),
            access_key_secret: Zeroizing::new("s".into()),
            security_token: None,
            expiration: Some(1_000 + 3_600),
            obtained: 1_000,
        };
        assert!(!c.refresh_due(1_000));
        assert!(!c.refresh_due(1_000 + 2_399));
        assert!(c.refresh_due(1_000 + 2_400));
        assert!(!c.expired(1_000 + 3_599));
        assert!(c.expired(1_000 + 3_600));
        let long_lived = Cred {
            expiration: None,
            ..c.clone()
        };
        assert!(!long_lived.refresh_due(i64::MAX) && !long_lived.expired(i64::MAX));
        assert!(!format!("{c:?}").contains("access_key_secret"));
    }

    #[test]
    fn sts_credentials_parse() {
        let doc = json!({
            "AccessKeyId": "STS.NUgYrLnoC37mZZCNnAbez****",
            "AccessKeySecret": "CVwjCkNzTMupZ8NbTCxCBRq3K16jtcWFTJAyBEv2****",
            "SecurityToken": "CAIS****",
            "Expiration": "2015-04-09T11:52:19Z"
        });
        let c = cred_of(Some(&doc)).unwrap();
        assert_eq!(c.access_key_id, "STS.NUgYrLnoC37mZZCNnAbez****");
        assert_eq!(c.expiration, Some(1_428_580_339));
        assert!(c.security_token.is_some());
        let mut missing = doc.clone();
        missing.as_object_mut().unwrap().remove("SecurityToken");
        assert!(
            cred_of(Some(&missing))
                .unwrap_err()
                .contains("SecurityToken")
        );
    }

    fn entry(payload: &str, owner: Option<&str>) -> RemoteEntry {
        let tags = match owner {
            Some(name) => Ownership {
                cluster_id: "c".into(),
                namespace: "shop".into(),
                name: name.into(),
                key_set: "0123456789abcdef".into(),
            }
            .tags(),
            None => BTreeMap::new(),
        };
        RemoteEntry {
            payload: SecretValue::new(payload.as_bytes().to_vec()),
            tags,
            version: Some(format!("v-{payload}")),
        }
    }

    #[test]
    fn regions_merge_into_one_entry_and_incomplete_ones_are_marked() {
        let name = RemoteName::new_unchecked("k8s/shop/db");
        let regions = ["cn-hangzhou", "cn-shanghai"];
        assert!(merge(&name, &regions, vec![None, None]).unwrap().is_none());

        let same = merge(
            &name,
            &regions,
            vec![Some(entry("a", Some("db"))), Some(entry("a", Some("db")))],
        )
        .unwrap()
        .unwrap();
        assert_eq!(same.owner().unwrap().key_set, "0123456789abcdef");
        assert_eq!(same.version.as_deref(), Some("v-a"));

        for entries in [
            vec![Some(entry("a", Some("db"))), None],
            vec![Some(entry("a", Some("db"))), Some(entry("b", Some("db")))],
            vec![None, Some(entry("a", Some("db")))],
        ] {
            let e = merge(&name, &regions, entries).unwrap().unwrap();
            let owner = e.owner().unwrap();
            assert_eq!(owner.key_set, REPLICATION_INCOMPLETE);
            assert_eq!(owner.name, "db", "still the same Secret's");
            assert!(
                e.payload == SecretValue::new(b"a".to_vec()),
                "the first present region's value"
            );
        }

        let foreign = merge(&name, &regions, vec![None, Some(entry("x", None))])
            .unwrap()
            .unwrap();
        assert!(
            foreign.owner().is_none() && foreign.tags.is_empty(),
            "unowned entries are reported as they are"
        );

        let err = merge(
            &name,
            &regions,
            vec![Some(entry("a", Some("db"))), Some(entry("x", None))],
        )
        .unwrap_err();
        assert!(
            matches!(err, StoreError::Invalid(_))
                && err.to_string().contains("disagree")
                && err.to_string().contains("cn-shanghai: nobody we know"),
            "{err}"
        );
        let err = merge(
            &name,
            &regions,
            vec![Some(entry("a", Some("db"))), Some(entry("a", Some("web")))],
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("Secret shop/web of cluster c"),
            "{err}"
        );
    }

    #[test]
    fn several_errors_keep_the_first_kind() {
        let e = combine(
            vec![
                StoreError::Unavailable("a".into()),
                StoreError::PermissionDenied("b".into()),
            ],
            "note",
        );
        assert!(matches!(e, StoreError::Unavailable(_)));
        assert_eq!(e.to_string(), "not reachable: a; b; note");
    }
}
