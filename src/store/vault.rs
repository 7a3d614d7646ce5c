//! `vault`: HashiCorp Vault and OpenBao KV secrets engines, version 1 and 2,
//! over the shared HTTPS client (`store::http`).
//!
//! **Payload.** A `json`-format payload (a JSON object of strings, as the
//! engine writes it) becomes the KV data itself, so `vault kv get` shows the
//! keys; any other payload is stored as `{"value": "<text>"}` (or
//! `{"value_base64": "..."}` when it is not UTF-8). Reads turn the data back
//! into exactly the bytes that were written: an object is re-serialized as
//! compact JSON with sorted keys, which is how the engine encodes it.
//!
//! **KV v2.** Create-if-absent is a data write with check-and-set `cas=0`;
//! a `check-and-set parameter did not match` answer means someone else was
//! first, and the entry is read back. Ownership tags are the secret's
//! `custom_metadata`, written right after the first version. The two writes
//! run in a task of their own, so a caller that gives up (a deadline) does
//! not leave a version without ownership behind; should the metadata write
//! fail, the version is deleted again. `put` writes with `cas` = the
//! current version. The version id is the KV v2 version number.
//!
//! **KV v1.** No versions and no check-and-set: create-if-absent is
//! read-then-write under a per-path lock, which makes it atomic within one
//! webhook process but **not across replicas** (two replicas may both create
//! the same path at the same moment; the later write wins, and the engine's
//! read-back of ownership still converges a retry). Ownership tags live in
//! a reserved field of the data, `__secret_santa_owner`, removed on read.
//!
//! **Auth.** A token from a file (re-read on every call, so an agent can
//! rotate it) or an environment variable, looked up once and renewed with
//! `renew-self` when two thirds of its TTL are gone; or an AppRole or
//! Kubernetes login whose token is cached and replaced by a fresh login when
//! two thirds of its lease are gone (or when Vault stops accepting it).
//! Enterprise namespaces via `X-Vault-Namespace`.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use super::http::{HttpClient, HttpConfig, HttpError, Response, truncate};
use super::{
    CreateOutcome, Ownership, RemoteEntry, RemoteName, SecretStore, StoreError, WriteOptions,
};
use crate::config::StoreConfig;
use crate::secret::SecretValue;

pub const TYPE: &str = "vault";

/// The store's per-call deadline when the admin config sets none (the same
/// default `mirror` applies).
const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_MOUNT: &str = "secret";
const DEFAULT_JWT_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// KV v1: the reserved data field holding the ownership tags.
pub const V1_OWNER_FIELD: &str = "__secret_santa_owner";
/// The data field of a payload that is not a JSON object of strings.
pub const VALUE_FIELD: &str = "value";
/// The same, base64, for payloads that are not UTF-8.
pub const VALUE_BASE64_FIELD: &str = "value_base64";

/// Vault's limits on KV v2 custom metadata.
const MAX_METADATA_KEYS: usize = 64;
const MAX_METADATA_KEY_BYTES: usize = 128;
const MAX_METADATA_VALUE_BYTES: usize = 512;
const MAX_NAME_BYTES: usize = 1024;

/// Per-path locks for KV v1 read-then-write (striped: bounded memory).
const V1_LOCK_STRIPES: usize = 64;

/// How long a create that lost the check-and-set race waits for the
/// winner's ownership metadata to appear (it is written right after the
/// data).
const RACE_METADATA_WAITS: [Duration; 4] = [
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(200),
    Duration::from_millis(400),
];

/// An entry nobody owns whose only version is younger than this may be
/// another replica's create between its two writes (see `v2_read_settled`).
const IN_FLIGHT: Duration = Duration::from_secs(5);

/// A token obtained by a login is not thrown away on a 403 younger than this
/// (the 403 is then about the policy, not the token).
const RELOGIN_MIN_AGE: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvVersion {
    V1,
    V2,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Settings {
    address: String,
    #[serde(default)]
    mount: Option<String>,
    #[serde(default)]
    kv_version: Option<u8>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    auth: AuthSettings,
}

/// How the store authenticates to Vault.
#[derive(Clone, Debug, Deserialize)]
#[serde(
    tag = "method",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
enum AuthSettings {
    /// A token from a file (e.g. written by Vault Agent) or an env variable.
    Token {
        #[serde(default)]
        token_file: Option<PathBuf>,
        #[serde(default)]
        token_env: Option<String>,
    },
    /// AppRole: role id and secret id from files.
    Approle {
        role_id_file: PathBuf,
        secret_id_file: PathBuf,
        #[serde(default)]
        mount: Option<String>,
    },
    /// Kubernetes auth with the pod's service-account token.
    Kubernetes {
        role: String,
        #[serde(default)]
        mount: Option<String>,
        #[serde(default)]
        jwt_file: Option<PathBuf>,
    },
}

/// Checked settings.
#[derive(Debug)]
struct Parsed {
    /// `https://vault.example:8200` (no trailing `/`).
    address: String,
    mount: String,
    kv_version: Option<KvVersion>,
    namespace: Option<String>,
    ca_file: Option<PathBuf>,
    auth: AuthSettings,
}

fn settings(config: &StoreConfig) -> Result<Parsed, String> {
    let s: Settings =
        serde_json::from_value(Value::Object(config.settings.clone())).map_err(|e| {
            format!(
                "{TYPE} settings: {e} (keys: address, mount, kvVersion, namespace, caFile, auth)"
            )
        })?;
    let address = s.address.trim_end_matches('/').to_owned();
    let uri: http::Uri = address
        .parse()
        .map_err(|e| format!("address {:?} is not a URL: {e}", s.address))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(format!(
            "address {:?} must be an http:// or https:// URL with a host, like https://vault.example:8200",
            s.address
        ));
    }
    if uri.query().is_some() {
        return Err(format!("address {:?} must not have a query", s.address));
    }
    let mount = s
        .mount
        .as_deref()
        .unwrap_or(DEFAULT_MOUNT)
        .trim_matches('/')
        .to_owned();
    check_path(&mount).map_err(|e| format!("mount {mount:?}: {e}"))?;
    let kv_version = match s.kv_version {
        None => None,
        Some(1) => Some(KvVersion::V1),
        Some(2) => Some(KvVersion::V2),
        Some(other) => {
            return Err(format!(
                "kvVersion {other} is not a KV version: use 1 or 2, or leave it out to detect it"
            ));
        }
    };
    let namespace = match s.namespace {
        Some(ns) => {
            let ns = ns.trim_matches('/').to_owned();
            check_path(&ns).map_err(|e| format!("namespace {ns:?}: {e}"))?;
            Some(ns)
        }
        None => None,
    };
    match &s.auth {
        AuthSettings::Token {
            token_file,
            token_env,
        } => match (token_file, token_env) {
            (Some(_), Some(_)) => {
                return Err("auth: give either tokenFile or tokenEnv, not both".into());
            }
            (None, None) => {
                return Err("auth: method token needs tokenFile or tokenEnv".into());
            }
            (None, Some(env)) if env.is_empty() => {
                return Err("auth.tokenEnv must name an environment variable".into());
            }
            _ => {}
        },
        AuthSettings::Approle { mount, .. } => {
            if let Some(m) = mount {
                check_path(m.trim_matches('/')).map_err(|e| format!("auth.mount {m:?}: {e}"))?;
            }
        }
        AuthSettings::Kubernetes { role, mount, .. } => {
            if role.is_empty() {
                return Err("auth.role must not be empty".into());
            }
            if let Some(m) = mount {
                check_path(m.trim_matches('/')).map_err(|e| format!("auth.mount {m:?}: {e}"))?;
            }
        }
    }
    // Vault encrypts with its own barrier key: a KMS key would be ignored.
    if config.kms_key_id.is_some() || config.allows_override("kmsKeyId") {
        return Err(
            "kmsKeyId: Vault KV takes no KMS key (Vault encrypts with its own barrier key); remove kmsKeyId and the kmsKeyId override".into(),
        );
    }
    Ok(Parsed {
        address,
        mount,
        kv_version,
        namespace,
        ca_file: s.ca_file,
        auth: s.auth,
    })
}

/// Checks the settings without connecting anywhere or reading files.
pub fn validate(config: &StoreConfig) -> Result<(), String> {
    settings(config).map(|_| ())
}

/// A Vault path (mount, namespace or secret name): `/`-separated segments
/// of letters, digits and `_ - . @ + = ,`, none empty, `.` or `..`.
fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("is empty".into());
    }
    if path.len() > MAX_NAME_BYTES {
        return Err(format!("is longer than {MAX_NAME_BYTES} bytes"));
    }
    for segment in path.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err("has an empty, '.' or '..' segment".into());
        }
        if let Some(c) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "_-.@+=,".contains(*c)))
        {
            return Err(format!(
                "character {c:?} is not allowed (letters, digits and / _ - . @ + = ,)"
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Payload <-> KV data.

/// The KV data for a payload (without ownership).
pub fn kv_data(payload: &SecretValue, content_type: &str) -> Map<String, Value> {
    if content_type == "application/json"
        && let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(payload.expose())
    {
        let plain = !map.is_empty()
            && map.values().all(Value::is_string)
            && !map.contains_key(V1_OWNER_FIELD)
            && !(map.len() == 1
                && (map.contains_key(VALUE_FIELD) || map.contains_key(VALUE_BASE64_FIELD)));
        if plain && serde_json::to_vec(&map).is_ok_and(|canonical| canonical == payload.expose()) {
            return map;
        }
        wipe_map(&mut map);
    }
    let mut out = Map::new();
    match std::str::from_utf8(payload.expose()) {
        Ok(text) => out.insert(VALUE_FIELD.into(), Value::String(text.to_owned())),
        Err(_) => out.insert(
            VALUE_BASE64_FIELD.into(),
            Value::String(base64::engine::general_purpose::STANDARD.encode(payload.expose())),
        ),
    };
    out
}

/// The payload bytes of KV data (ownership already removed).
pub fn payload_of(data: &Map<String, Value>) -> SecretValue {
    if data.len() == 1 {
        if let Some(Value::String(text)) = data.get(VALUE_FIELD) {
            return SecretValue::new(text.as_bytes().to_vec());
        }
        if let Some(Value::String(b64)) = data.get(VALUE_BASE64_FIELD)
            && let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64)
        {
            return SecretValue::new(bytes);
        }
    }
    SecretValue::new(serde_json::to_vec(data).unwrap_or_default())
}

fn wipe_map(m: &mut Map<String, Value>) {
    m.values_mut().for_each(crate::secret::wipe_json);
}

/// A JSON request body holding secret data: serialized once, the tree wiped.
struct Body(Bytes);

impl Body {
    fn new(mut value: Value) -> Result<Body, StoreError> {
        let bytes = serde_json::to_vec(&value)
            .map_err(|e| StoreError::Invalid(format!("JSON body: {e}")))?;
        crate::secret::wipe_json(&mut value);
        Ok(Body(Bytes::from(bytes)))
    }
}

fn all_tags(owner: &Ownership, options: &WriteOptions) -> BTreeMap<String, String> {
    let mut tags = options.tags.clone();
    tags.extend(owner.tags());
    tags
}

fn tags_of(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

fn check_metadata(tags: &BTreeMap<String, String>) -> Result<(), StoreError> {
    if tags.len() > MAX_METADATA_KEYS {
        return Err(StoreError::Invalid(format!(
            "{} tags; Vault custom metadata holds at most {MAX_METADATA_KEYS}",
            tags.len()
        )));
    }
    for (k, v) in tags {
        if k.len() > MAX_METADATA_KEY_BYTES {
            return Err(StoreError::Invalid(format!(
                "tag {k:?} is longer than Vault's {MAX_METADATA_KEY_BYTES} bytes for custom metadata keys"
            )));
        }
        if v.len() > MAX_METADATA_VALUE_BYTES {
            return Err(StoreError::Invalid(format!(
                "the value of tag {k:?} is longer than Vault's {MAX_METADATA_VALUE_BYTES} bytes for custom metadata values"
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Errors.

/// Vault's `errors` array, joined.
fn vault_errors(resp: &Response) -> String {
    let doc = resp.json_or_null();
    let text = doc
        .get("errors")
        .and_then(Value::as_array)
        .map(|errs| {
            errs.iter()
                .filter_map(Value::as_str)
                .map(one_line)
                .filter(|e| !e.is_empty())
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default();
    truncate(text, 300)
}

/// One Vault error on one line: the items of a Go multierror
/// (`1 error occurred:\n\t* permission denied\n\n`) joined, whitespace
/// collapsed.
fn one_line(error: &str) -> String {
    let items: Vec<&str> = error
        .lines()
        .filter_map(|l| l.trim().strip_prefix("* "))
        .collect();
    let text = if error.contains(" occurred:") && !items.is_empty() {
        items.join("; ")
    } else {
        error.to_owned()
    };
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A non-success answer as a store error. `what` is the operation and path
/// (`read secret/data/shop/db`), `caps` the policy capabilities it needs.
fn status_error(what: &str, caps: &str, resp: &Response) -> StoreError {
    let errors = vault_errors(resp);
    let status = resp.status.as_u16();
    let detail = if errors.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {errors}")
    };
    match status {
        401 | 403 => StoreError::PermissionDenied(format!(
            "{what}: {detail} (the Vault token is invalid, expired or revoked, or its policy does not grant {caps} on this path)"
        )),
        429 => StoreError::Throttled(format!("{what}: {detail}")),
        503 if errors.contains("sealed") => {
            StoreError::Unavailable(format!("{what}: Vault is sealed ({detail})"))
        }
        301 | 302 | 307 | 308 => StoreError::Invalid(format!(
            "{what}: HTTP {status}: Vault redirected to {}; point address at the active node or its load balancer",
            resp.headers
                .get(http::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .map_or_else(
                    || "another node".to_owned(),
                    |l| format!("{:?}", truncate(l.to_owned(), 200))
                )
        )),
        412 | 500..=599 => StoreError::Unavailable(format!("{what}: {detail}")),
        400 | 404 | 405 | 409 | 413 | 422 => StoreError::Invalid(format!("{what}: {detail}")),
        _ => StoreError::Other(format!("{what}: {detail}")),
    }
}

fn transport_error(what: &str, e: HttpError) -> StoreError {
    match e {
        HttpError::Unavailable(m) => StoreError::Unavailable(format!("{what}: {m}")),
        HttpError::Invalid(m) => StoreError::Invalid(format!("{what}: {m}")),
    }
}

fn unexpected(what: &str, problem: impl std::fmt::Display) -> StoreError {
    StoreError::Other(format!("{what}: unexpected answer from Vault: {problem}"))
}

// ---------------------------------------------------------------------------
// Auth.

/// A Vault token and when it must be replaced.
struct Token {
    value: Zeroizing<String>,
    obtained: Instant,
    /// `None`: does not expire (or unknown).
    ttl: Option<Duration>,
    renewable: bool,
}

impl Token {
    fn new(value: Zeroizing<String>, ttl_secs: u64, renewable: bool) -> Token {
        Token {
            value,
            obtained: Instant::now(),
            ttl: (ttl_secs > 0).then(|| Duration::from_secs(ttl_secs)),
            renewable,
        }
    }

    /// Two thirds of the TTL are gone.
    fn refresh_due(&self) -> bool {
        self.ttl
            .is_some_and(|ttl| self.obtained.elapsed() >= ttl.mul_f64(2.0 / 3.0))
    }

    fn expired(&self) -> bool {
        self.ttl.is_some_and(|ttl| self.obtained.elapsed() >= ttl)
    }
}

/// Reads a credential file: trimmed, not empty; errors name the setting.
async fn read_secret_file(path: &Path, what: &str) -> Result<Zeroizing<String>, String> {
    let text = Zeroizing::new(
        tokio::fs::read_to_string(path)
            .await
            .map_err(|e| format!("auth.{what} {}: {e}", path.display()))?,
    );
    let trimmed = Zeroizing::new(text.trim().to_owned());
    if trimmed.is_empty() {
        return Err(format!("auth.{what} {} is empty", path.display()));
    }
    Ok(trimmed)
}

fn read_secret_env(name: &str) -> Result<Zeroizing<String>, String> {
    let value = Zeroizing::new(
        std::env::var(name)
            .map_err(|_| format!("auth.tokenEnv: environment variable {name} is not set"))?,
    );
    let trimmed = Zeroizing::new(value.trim().to_owned());
    if trimmed.is_empty() {
        return Err(format!(
            "auth.tokenEnv: environment variable {name} is empty"
        ));
    }
    Ok(trimmed)
}

// ---------------------------------------------------------------------------
// The store.

pub struct VaultStore {
    inner: Arc<Inner>,
}

struct Inner {
    http: HttpClient,
    address: String,
    mount: String,
    namespace: Option<HeaderValue>,
    configured_kv: Option<KvVersion>,
    detected_kv: tokio::sync::OnceCell<KvVersion>,
    auth: AuthSettings,
    token: tokio::sync::Mutex<Option<Token>>,
    v1_locks: Box<[tokio::sync::Mutex<()>]>,
}

impl VaultStore {
    /// Builds the client once; it is shared by all reviews. Checks that the
    /// credential files (or variable) are there, naming the one that is
    /// not; contacts nothing.
    pub async fn build(config: &StoreConfig) -> Result<Self, String> {
        let s = settings(config)?;
        match &s.auth {
            AuthSettings::Token {
                token_file: Some(f),
                ..
            } => {
                read_secret_file(f, "tokenFile").await?;
            }
            AuthSettings::Token {
                token_env: Some(env),
                ..
            } => {
                read_secret_env(env)?;
            }
            AuthSettings::Token { .. } => {}
            AuthSettings::Approle {
                role_id_file,
                secret_id_file,
                ..
            } => {
                read_secret_file(role_id_file, "roleIdFile").await?;
                read_secret_file(secret_id_file, "secretIdFile").await?;
            }
            AuthSettings::Kubernetes { jwt_file, .. } => {
                let path = jwt_file
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_JWT_FILE));
                read_secret_file(&path, "jwtFile").await?;
            }
        }
        let deadline = config.deadline.unwrap_or(DEFAULT_DEADLINE);
        let http = HttpClient::new(&HttpConfig {
            ca_file: s.ca_file.clone(),
            connect_timeout: CONNECT_TIMEOUT.min(deadline),
            request_timeout: deadline,
        })?;
        if s.kv_version == Some(KvVersion::V1) {
            warn_v1(&s.mount);
        }
        let namespace = s
            .namespace
            .as_deref()
            .map(HeaderValue::from_str)
            .transpose()
            .map_err(|e| format!("namespace: {e}"))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                address: s.address,
                mount: s.mount,
                namespace,
                configured_kv: s.kv_version,
                detected_kv: tokio::sync::OnceCell::new(),
                auth: s.auth,
                token: tokio::sync::Mutex::new(None),
                v1_locks: (0..V1_LOCK_STRIPES)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
            }),
        })
    }

    /// The KV version in use: configured, or detected on first use.
    pub async fn kv_version(&self) -> Result<KvVersion, StoreError> {
        self.inner.kv().await
    }
}

/// KV v1 has no check-and-set: say so once per store, where admins look.
fn warn_v1(mount: &str) {
    tracing::warn!(
        mount,
        "Vault KV v1 mount: create-if-absent is read-then-write, atomic within one webhook process \
         but not across replicas (two replicas admitting the same Secret at the same moment may \
         both write; the later write wins); use a KV v2 mount for check-and-set"
    );
}

/// What a call needs besides method and path.
struct Op<'a> {
    /// `read`, `create`, `write metadata`, ...
    name: &'a str,
    /// Capabilities the policy must grant, for permission errors.
    caps: &'a str,
}

impl Inner {
    fn url(&self, path: &str) -> String {
        format!("{}/v1/{path}", self.address)
    }

    fn base_headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        let mut headers = vec![(
            HeaderName::from_static("x-vault-request"),
            HeaderValue::from_static("true"),
        )];
        if let Some(ns) = &self.namespace {
            headers.push((HeaderName::from_static("x-vault-namespace"), ns.clone()));
        }
        headers
    }

    /// One request, with the given token (or none: logins).
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Body>,
        token: Option<&str>,
        what: &str,
    ) -> Result<Response, StoreError> {
        let mut headers = self.base_headers();
        if let Some(t) = token {
            let mut value = HeaderValue::from_str(t).map_err(|_| {
                StoreError::PermissionDenied(format!(
                    "{what}: the Vault token has characters a header cannot carry"
                ))
            })?;
            value.set_sensitive(true);
            headers.push((HeaderName::from_static("x-vault-token"), value));
        }
        if body.is_some() {
            headers.push((
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ));
        }
        self.http
            .request(method, &self.url(path), &headers, body.map(|b| b.0.clone()))
            .await
            .map_err(|e| transport_error(what, e))
    }

    /// An authenticated request. With a login method, a 403 on a token that
    /// has been in use for a while is answered by one fresh login and one
    /// retry (the token may have been revoked).
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Body>,
        op: &Op<'_>,
    ) -> Result<Response, StoreError> {
        let what = format!("{} {path}", op.name);
        let token = self.token().await?;
        let resp = self
            .send(method.clone(), path, body, Some(&token), &what)
            .await?;
        if resp.status == StatusCode::FORBIDDEN && self.forget_token(&token).await {
            let token = self.token().await?;
            return self.send(method, path, body, Some(&token), &what).await;
        }
        Ok(resp)
    }

    // -- auth ---------------------------------------------------------------

    fn login_path(&self) -> Option<String> {
        match &self.auth {
            AuthSettings::Token { .. } => None,
            AuthSettings::Approle { mount, .. } => Some(format!(
                "auth/{}/login",
                mount.as_deref().unwrap_or("approle").trim_matches('/')
            )),
            AuthSettings::Kubernetes { mount, .. } => Some(format!(
                "auth/{}/login",
                mount.as_deref().unwrap_or("kubernetes").trim_matches('/')
            )),
        }
    }

    /// A token to use now: cached, renewed or replaced as its TTL requires.
    async fn token(&self) -> Result<Zeroizing<String>, StoreError> {
        let mut state = self.token.lock().await;
        if let AuthSettings::Token {
            token_file,
            token_env,
        } = &self.auth
        {
            let current = match (token_file, token_env) {
                (Some(f), _) => read_secret_file(f, "tokenFile").await,
                (None, Some(env)) => read_secret_env(env),
                (None, None) => Err("auth: no token source".to_owned()),
            }
            .map_err(StoreError::PermissionDenied)?;
            let changed = state.as_ref().is_none_or(|t| t.value != current);
            if changed {
                *state = Some(self.lookup_self(current).await?);
            }
            let Some(token) = state.as_mut() else {
                return Err(StoreError::Other("no token".into()));
            };
            if token.renewable && token.refresh_due() {
                match self.renew_self(&token.value).await {
                    Ok(renewed) => *token = renewed,
                    Err(e) if !token.expired() => {
                        tracing::warn!(error = %e, "renewing the Vault token failed; the current one is still valid");
                    }
                    Err(e) => return Err(e),
                }
            }
            return Ok(token.value.clone());
        }
        let due = state.as_ref().is_none_or(Token::refresh_due);
        if due {
            match self.login().await {
                Ok(fresh) => *state = Some(fresh),
                Err(e) => match state.as_ref() {
                    Some(old) if !old.expired() => {
                        tracing::warn!(error = %e, "Vault login failed; the current token is still valid");
                    }
                    _ => return Err(e),
                },
            }
        }
        state
            .as_ref()
            .map(|t| t.value.clone())
            .ok_or_else(|| StoreError::Other("no token".into()))
    }

    /// After a 403: drops the cached token if it came from a login and is
    /// not brand new; true when a retry with a fresh login makes sense.
    async fn forget_token(&self, used: &str) -> bool {
        if self.login_path().is_none() {
            return false;
        }
        let mut state = self.token.lock().await;
        match state.as_ref() {
            Some(t) if t.value.as_str() == used && t.obtained.elapsed() >= RELOGIN_MIN_AGE => {
                *state = None;
                true
            }
            _ => false,
        }
    }

    async fn lookup_self(&self, token: Zeroizing<String>) -> Result<Token, StoreError> {
        let what = "look up the Vault token (auth/token/lookup-self)";
        let resp = self
            .send(
                Method::GET,
                "auth/token/lookup-self",
                None,
                Some(&token),
                what,
            )
            .await?;
        if !resp.status.is_success() {
            // A token without the default policy may not look itself up:
            // use it as it is, without renewal.
            tracing::debug!(
                status = resp.status.as_u16(),
                "Vault token lookup-self refused; not renewing"
            );
            return Ok(Token::new(token, 0, false));
        }
        let doc = resp.json_or_null();
        let ttl = doc
            .pointer("/data/ttl")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let renewable = doc
            .pointer("/data/renewable")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(Token::new(token, ttl, renewable))
    }

    async fn renew_self(&self, token: &str) -> Result<Token, StoreError> {
        let what = "renew the Vault token (auth/token/renew-self)";
        let body = Body::new(json!({}))?;
        let resp = self
            .send(
                Method::POST,
                "auth/token/renew-self",
                Some(&body),
                Some(token),
                what,
            )
            .await?;
        if !resp.status.is_success() {
            return Err(status_error(what, "\"update\"", &resp));
        }
        let token = Zeroizing::new(token.to_owned());
        let (ttl, renewable) = lease_of(&resp);
        tracing::debug!(ttl_secs = ttl, "Vault token renewed");
        Ok(Token::new(token, ttl, renewable))
    }

    async fn login(&self) -> Result<Token, StoreError> {
        let Some(path) = self.login_path() else {
            return Err(StoreError::Other("login without a login method".into()));
        };
        let denied = |e: String| StoreError::PermissionDenied(format!("Vault login: {e}"));
        let body = match &self.auth {
            AuthSettings::Approle {
                role_id_file,
                secret_id_file,
                ..
            } => {
                let role_id = read_secret_file(role_id_file, "roleIdFile")
                    .await
                    .map_err(denied)?;
                let secret_id = read_secret_file(secret_id_file, "secretIdFile")
                    .await
                    .map_err(denied)?;
                Body::new(json!({ "role_id": role_id.as_str(), "secret_id": secret_id.as_str() }))?
            }
            AuthSettings::Kubernetes { role, jwt_file, .. } => {
                let path = jwt_file
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_JWT_FILE));
                let jwt = read_secret_file(&path, "jwtFile").await.map_err(denied)?;
                Body::new(json!({ "role": role, "jwt": jwt.as_str() }))?
            }
            AuthSettings::Token { .. } => {
                return Err(StoreError::Other("login without a login method".into()));
            }
        };
        let what = format!("Vault login ({path})");
        let resp = self
            .send(Method::POST, &path, Some(&body), None, &what)
            .await?;
        if !resp.status.is_success() {
            // Bad credentials are 400 on some versions: a login refusal is a
            // permission problem whatever its status.
            return Err(match resp.status.as_u16() {
                400 | 401 | 403 => StoreError::PermissionDenied(format!(
                    "{what}: {}",
                    match vault_errors(&resp) {
                        e if e.is_empty() => format!("HTTP {}", resp.status.as_u16()),
                        e => e,
                    }
                )),
                _ => status_error(&what, "\"update\"", &resp),
            });
        }
        let doc = resp.json_or_null();
        let Some(client_token) = doc.pointer("/auth/client_token").and_then(Value::as_str) else {
            return Err(unexpected(&what, "no auth.client_token"));
        };
        let (ttl, renewable) = lease_of(&resp);
        tracing::debug!(ttl_secs = ttl, "Vault login succeeded");
        Ok(Token::new(
            Zeroizing::new(client_token.to_owned()),
            ttl,
            renewable,
        ))
    }

    // -- KV version ---------------------------------------------------------

    async fn kv(&self) -> Result<KvVersion, StoreError> {
        if let Some(v) = self.configured_kv {
            return Ok(v);
        }
        self.detected_kv
            .get_or_try_init(|| self.detect_kv())
            .await
            .copied()
    }

    async fn detect_kv(&self) -> Result<KvVersion, StoreError> {
        let path = format!("sys/internal/ui/mounts/{}", self.mount);
        let what = format!("detecting the KV version of mount {:?}", self.mount);
        let resp = self
            .call(
                Method::GET,
                &path,
                None,
                &Op {
                    name: "detect",
                    caps: "",
                },
            )
            .await
            .map_err(|e| match e {
                StoreError::Unavailable(m) => StoreError::Unavailable(m),
                other => other,
            })?;
        if !resp.status.is_success() {
            let errors = vault_errors(&resp);
            let hint = "set kvVersion (1 or 2) in the store config, or check that the mount exists and the token's policy grants a capability on it";
            return Err(match resp.status.as_u16() {
                401 | 403 => StoreError::PermissionDenied(format!("{what}: {errors}; {hint}")),
                _ => match status_error(&what, "", &resp) {
                    StoreError::Invalid(m) => StoreError::Invalid(format!("{m}; {hint}")),
                    other => other,
                },
            });
        }
        let doc = resp.json_or_null();
        let engine = doc
            .pointer("/data/type")
            .and_then(Value::as_str)
            .unwrap_or("");
        let mount_path = doc
            .pointer("/data/path")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim_matches('/');
        if !mount_path.is_empty() && mount_path != self.mount {
            return Err(StoreError::Invalid(format!(
                "{what}: {:?} is not a mount point, it lies inside mount {mount_path:?}; set mount to {mount_path:?} and put the rest into the store's prefix",
                self.mount
            )));
        }
        if !matches!(engine, "kv" | "generic") {
            return Err(StoreError::Invalid(format!(
                "{what}: mount {:?} is a {engine:?} secrets engine, not KV",
                self.mount
            )));
        }
        let version = match doc.pointer("/data/options/version").and_then(Value::as_str) {
            Some("2") => KvVersion::V2,
            _ => KvVersion::V1,
        };
        tracing::info!(mount = %self.mount, ?version, "detected the Vault KV version");
        if version == KvVersion::V1 {
            warn_v1(&self.mount);
        }
        Ok(version)
    }

    // -- KV v2 --------------------------------------------------------------

    fn data_path(&self, name: &RemoteName) -> String {
        format!("{}/data/{}", self.mount, name.as_str())
    }

    fn metadata_path(&self, name: &RemoteName) -> String {
        format!("{}/metadata/{}", self.mount, name.as_str())
    }

    fn cli_hint(&self, name: &RemoteName) -> String {
        format!("-mount={} {}", self.mount, name.as_str())
    }

    async fn v2_read(&self, name: &RemoteName) -> Result<Option<RemoteEntry>, StoreError> {
        Ok(self.v2_read_dated(name).await?.map(|(entry, _)| entry))
    }

    /// A read that gives another replica's create in flight (between its
    /// data write and its ownership metadata write) a moment to finish: an
    /// entry nobody owns whose only version was written in the last
    /// `IN_FLIGHT` is read again after short waits before it is reported.
    async fn v2_read_settled(&self, name: &RemoteName) -> Result<Option<RemoteEntry>, StoreError> {
        let mut waits = RACE_METADATA_WAITS.iter();
        loop {
            let Some((entry, created)) = self.v2_read_dated(name).await? else {
                return Ok(None);
            };
            let in_flight = entry.owner().is_none()
                && entry.version.as_deref() == Some("1")
                && created.is_some_and(|t| {
                    (time::OffsetDateTime::now_utc() - t).unsigned_abs() < IN_FLIGHT
                });
            match waits.next() {
                Some(wait) if in_flight => tokio::time::sleep(*wait).await,
                _ => return Ok(Some(entry)),
            }
        }
    }

    /// The entry and when its current version was written.
    async fn v2_read_dated(
        &self,
        name: &RemoteName,
    ) -> Result<Option<(RemoteEntry, Option<time::OffsetDateTime>)>, StoreError> {
        let path = self.data_path(name);
        let op = Op {
            name: "read",
            caps: "\"read\"",
        };
        let resp = self.call(Method::GET, &path, None, &op).await?;
        let what = format!("read {path}");
        let mut doc = resp.json_or_null();
        let meta = doc
            .pointer("/data/metadata")
            .cloned()
            .unwrap_or(Value::Null);
        let version = meta.get("version").and_then(Value::as_u64);
        let deleted = meta
            .get("deletion_time")
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty());
        let destroyed = meta
            .get("destroyed")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let data_is_null = doc.pointer("/data/data").is_none_or(Value::is_null);
        if resp.status == StatusCode::NOT_FOUND
            || (resp.status.is_success() && data_is_null && (deleted || destroyed))
        {
            if deleted || destroyed {
                let v = version.unwrap_or(0);
                let state = if destroyed {
                    "destroyed".to_owned()
                } else {
                    format!(
                        "deleted at {}",
                        meta.get("deletion_time")
                            .and_then(Value::as_str)
                            .unwrap_or("?")
                    )
                };
                return Err(StoreError::PendingDeletion(format!(
                    "{path}: the current version {v} is {state}; restore it (vault kv undelete -versions={v} {hint}) \
                     or remove the secret with all its versions (vault kv metadata delete {hint})",
                    hint = self.cli_hint(name)
                )));
            }
            return Ok(None);
        }
        if !resp.status.is_success() {
            return Err(status_error(&what, op.caps, &resp));
        }
        let Some(data) = doc.pointer_mut("/data/data").and_then(Value::as_object_mut) else {
            return Err(unexpected(&what, "no data object"));
        };
        let payload = payload_of(data);
        wipe_map(data);
        let tags = match meta.get("custom_metadata") {
            Some(cm) => tags_of(Some(cm)),
            // Vault before 1.9 does not return custom metadata with the data.
            None => self.v2_metadata(name).await?.1,
        };
        let created = meta
            .get("created_time")
            .and_then(Value::as_str)
            .and_then(|t| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            });
        Ok(Some((
            RemoteEntry {
                payload,
                tags,
                version: version.map(|v| v.to_string()),
            },
            created,
        )))
    }

    /// The current version (0 when there is none) and the custom metadata.
    async fn v2_metadata(
        &self,
        name: &RemoteName,
    ) -> Result<(u64, BTreeMap<String, String>), StoreError> {
        let path = self.metadata_path(name);
        let op = Op {
            name: "read metadata",
            caps: "\"read\"",
        };
        let resp = self.call(Method::GET, &path, None, &op).await?;
        if resp.status == StatusCode::NOT_FOUND {
            return Ok((0, BTreeMap::new()));
        }
        if !resp.status.is_success() {
            return Err(status_error(&format!("read {path}"), op.caps, &resp));
        }
        let doc = resp.json_or_null();
        let current = doc
            .pointer("/data/current_version")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        Ok((current, tags_of(doc.pointer("/data/custom_metadata"))))
    }

    async fn v2_write_metadata(
        &self,
        name: &RemoteName,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        let path = self.metadata_path(name);
        let op = Op {
            name: "write metadata",
            caps: "\"create\" and \"update\"",
        };
        let body = Body::new(json!({ "custom_metadata": tags }))?;
        let resp = self.call(Method::POST, &path, Some(&body), &op).await?;
        if !resp.status.is_success() {
            return Err(status_error(&format!("write {path}"), op.caps, &resp));
        }
        Ok(())
    }

    /// A data write with check-and-set. `Ok(None)`: the check-and-set
    /// did not match.
    async fn v2_write_data(
        &self,
        name: &RemoteName,
        body: &Body,
    ) -> Result<Option<Option<String>>, StoreError> {
        let path = self.data_path(name);
        let op = Op {
            name: "write",
            caps: "\"create\" and \"update\"",
        };
        let resp = self.call(Method::POST, &path, Some(body), &op).await?;
        if resp.status.is_success() {
            let version = resp
                .json_or_null()
                .pointer("/data/version")
                .and_then(Value::as_u64)
                .map(|v| v.to_string());
            return Ok(Some(version));
        }
        if resp.status == StatusCode::BAD_REQUEST && vault_errors(&resp).contains("check-and-set") {
            return Ok(None);
        }
        Err(status_error(&format!("write {path}"), op.caps, &resp))
    }

    fn v2_body(
        payload: &SecretValue,
        options: &WriteOptions,
        cas: u64,
    ) -> Result<Body, StoreError> {
        Body::new(json!({
            "options": { "cas": cas },
            "data": Value::Object(kv_data(payload, options.content_type)),
        }))
    }

    /// The first version and its ownership metadata, as one unit that runs
    /// to its end even when the caller stops waiting.
    async fn v2_create(
        self: Arc<Self>,
        name: RemoteName,
        payload: SecretValue,
        tags: BTreeMap<String, String>,
        options: WriteOptions,
    ) -> Result<CreateOutcome, StoreError> {
        let body = Self::v2_body(&payload, &options, 0)?;
        let written = match self.v2_write_data(&name, &body).await {
            Ok(w) => w,
            // The answer was lost: did the write happen? Our freshly
            // generated value without anyone's ownership proves it did.
            Err(e @ StoreError::Unavailable(_)) => match self.v2_read(&name).await {
                Ok(Some(entry)) if entry.payload == payload && entry.owner().is_none() => {
                    Some(entry.version)
                }
                _ => return Err(e),
            },
            Err(e) => return Err(e),
        };
        let Some(version) = written else {
            return self.v2_read_back_after_race(&name).await;
        };
        if let Err(e) = self.v2_write_metadata(&name, &tags).await {
            // Leave nothing half-written: a version nobody owns would be
            // refused on every retry.
            let path = self.metadata_path(&name);
            let op = Op {
                name: "delete",
                caps: "\"delete\"",
            };
            let undo = match self.call(Method::DELETE, &path, None, &op).await {
                Ok(r) if r.status.is_success() || r.status == StatusCode::NOT_FOUND => {
                    "the new version was removed again".to_owned()
                }
                Ok(r) => format!(
                    "removing the new version failed too ({}); remove it with vault kv metadata delete {}",
                    status_error(&format!("delete {path}"), op.caps, &r),
                    self.cli_hint(&name)
                ),
                Err(e2) => format!(
                    "removing the new version failed too ({e2}); remove it with vault kv metadata delete {}",
                    self.cli_hint(&name)
                ),
            };
            return Err(match e {
                StoreError::PermissionDenied(m) => {
                    StoreError::PermissionDenied(format!("{m}; {undo}"))
                }
                StoreError::Unavailable(m) => StoreError::Unavailable(format!("{m}; {undo}")),
                StoreError::Throttled(m) => StoreError::Throttled(format!("{m}; {undo}")),
                StoreError::Invalid(m) => StoreError::Invalid(format!("{m}; {undo}")),
                StoreError::PendingDeletion(m) => {
                    StoreError::PendingDeletion(format!("{m}; {undo}"))
                }
                StoreError::Other(m) => StoreError::Other(format!("{m}; {undo}")),
            });
        }
        Ok(CreateOutcome::Created { version })
    }

    /// Someone else created the entry first: read it back, giving the
    /// winner a moment to write its ownership metadata.
    async fn v2_read_back_after_race(
        &self,
        name: &RemoteName,
    ) -> Result<CreateOutcome, StoreError> {
        let mut waits = RACE_METADATA_WAITS.iter();
        loop {
            match self.v2_read(name).await? {
                Some(entry) if entry.owner().is_some() => return Ok(CreateOutcome::Exists(entry)),
                Some(entry) => match waits.next() {
                    Some(wait) => tokio::time::sleep(*wait).await,
                    None => return Ok(CreateOutcome::Exists(entry)),
                },
                None => {
                    return Err(StoreError::Other(format!(
                        "{}: changed concurrently (created and removed while we wrote); a retry converges",
                        self.data_path(name)
                    )));
                }
            }
        }
    }

    async fn v2_put(
        &self,
        name: &RemoteName,
        payload: &SecretValue,
        tags: &BTreeMap<String, String>,
        options: &WriteOptions,
    ) -> Result<Option<String>, StoreError> {
        let (current, _) = self.v2_metadata(name).await?;
        let body = Self::v2_body(payload, options, current)?;
        let version = match self.v2_write_data(name, &body).await? {
            Some(v) => v,
            None => match self.v2_read(name).await? {
                // Another replica wrote the same value first.
                Some(entry) if entry.payload == *payload => entry.version,
                _ => {
                    return Err(StoreError::Other(format!(
                        "{}: a new version was written concurrently by someone else; a retry converges",
                        self.data_path(name)
                    )));
                }
            },
        };
        self.v2_write_metadata(name, tags).await?;
        Ok(version)
    }

    // -- KV v1 --------------------------------------------------------------

    fn v1_path(&self, name: &RemoteName) -> String {
        format!("{}/{}", self.mount, name.as_str())
    }

    fn v1_lock(&self, name: &RemoteName) -> &tokio::sync::Mutex<()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        name.as_str().hash(&mut h);
        let i = (h.finish() as usize) % self.v1_locks.len();
        &self.v1_locks[i]
    }

    async fn v1_read(&self, name: &RemoteName) -> Result<Option<RemoteEntry>, StoreError> {
        let path = self.v1_path(name);
        let op = Op {
            name: "read",
            caps: "\"read\"",
        };
        let resp = self.call(Method::GET, &path, None, &op).await?;
        if resp.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status.is_success() {
            return Err(status_error(&format!("read {path}"), op.caps, &resp));
        }
        let mut doc = resp.json_or_null();
        let Some(data) = doc.get_mut("data").and_then(Value::as_object_mut) else {
            return Err(unexpected(&format!("read {path}"), "no data object"));
        };
        let tags = tags_of(data.remove(V1_OWNER_FIELD).as_ref());
        let payload = payload_of(data);
        wipe_map(data);
        Ok(Some(RemoteEntry {
            payload,
            tags,
            version: None,
        }))
    }

    async fn v1_write(
        &self,
        name: &RemoteName,
        payload: &SecretValue,
        tags: &BTreeMap<String, String>,
        options: &WriteOptions,
    ) -> Result<(), StoreError> {
        let path = self.v1_path(name);
        let op = Op {
            name: "write",
            caps: "\"create\" and \"update\"",
        };
        let mut data = kv_data(payload, options.content_type);
        data.insert(V1_OWNER_FIELD.into(), json!(tags));
        let body = Body::new(Value::Object(data))?;
        let resp = self.call(Method::POST, &path, Some(&body), &op).await?;
        if !resp.status.is_success() {
            return Err(status_error(&format!("write {path}"), op.caps, &resp));
        }
        Ok(())
    }
}

/// `(ttl seconds, renewable)` of a login or renewal answer.
fn lease_of(resp: &Response) -> (u64, bool) {
    let doc = resp.json_or_null();
    (
        doc.pointer("/auth/lease_duration")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        doc.pointer("/auth/renewable")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    )
}

#[async_trait]
impl SecretStore for VaultStore {
    fn kind(&self) -> &'static str {
        TYPE
    }

    /// KV v2 creates with check-and-set `cas=0`; v1 cannot, and a version
    /// not yet detected counts as v1 until it is.
    fn atomic_create(&self) -> bool {
        self.inner
            .configured_kv
            .or_else(|| self.inner.detected_kv.get().copied())
            == Some(KvVersion::V2)
    }

    /// Secret paths under the mount: `/`-separated segments of letters,
    /// digits and `_ - . @ + = ,`.
    fn remote_name(&self, logical: &str) -> Result<RemoteName, String> {
        check_path(logical).map(|()| RemoteName::new_unchecked(logical))
    }

    async fn read(&self, name: &RemoteName) -> Result<Option<RemoteEntry>, StoreError> {
        match self.inner.kv().await? {
            KvVersion::V2 => self.inner.v2_read_settled(name).await,
            KvVersion::V1 => self.inner.v1_read(name).await,
        }
    }

    async fn create_if_absent(
        &self,
        name: &RemoteName,
        payload: &SecretValue,
        owner: &Ownership,
        options: &WriteOptions,
    ) -> Result<CreateOutcome, StoreError> {
        let tags = all_tags(owner, options);
        match self.inner.kv().await? {
            KvVersion::V2 => {
                check_metadata(&tags)?;
                let task = tokio::spawn(self.inner.clone().v2_create(
                    name.clone(),
                    payload.clone(),
                    tags,
                    options.clone(),
                ));
                task.await
                    .map_err(|e| StoreError::Other(format!("the create task failed: {e}")))?
            }
            KvVersion::V1 => {
                let _guard = self.inner.v1_lock(name).lock().await;
                if let Some(existing) = self.inner.v1_read(name).await? {
                    return Ok(CreateOutcome::Exists(existing));
                }
                self.inner.v1_write(name, payload, &tags, options).await?;
                // Another replica's read-then-write may have run alongside
                // ours: if the entry no longer holds what we wrote, that
                // write came last and wins (this narrows the window; KV v1
                // cannot close it).
                match self.inner.v1_read(name).await? {
                    Some(entry)
                        if entry.payload != *payload || entry.owner().as_ref() != Some(owner) =>
                    {
                        Ok(CreateOutcome::Exists(entry))
                    }
                    _ => Ok(CreateOutcome::Created { version: None }),
                }
            }
        }
    }

    async fn put(
        &self,
        name: &RemoteName,
        payload: &SecretValue,
        owner: &Ownership,
        options: &WriteOptions,
    ) -> Result<Option<String>, StoreError> {
        let tags = all_tags(owner, options);
        match self.inner.kv().await? {
            KvVersion::V2 => {
                check_metadata(&tags)?;
                self.inner.v2_put(name, payload, &tags, options).await
            }
            KvVersion::V1 => {
                let _guard = self.inner.v1_lock(name).lock().await;
                self.inner.v1_write(name, payload, &tags, options).await?;
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn config(settings: Value) -> StoreConfig {
        let mut c: StoreConfig = serde_json::from_value(json!({
            "name": "v",
            "type": "vault",
            "namespaces": ["*"],
        }))
        .unwrap();
        c.settings = settings.as_object().unwrap().clone();
        c
    }

    fn roundtrip(payload: &[u8], content_type: &str) -> (Map<String, Value>, Vec<u8>) {
        let data = kv_data(&SecretValue::new(payload.to_vec()), content_type);
        // Through JSON, as Vault stores and returns it.
        let back: Map<String, Value> =
            serde_json::from_slice(&serde_json::to_vec(&data).unwrap()).unwrap();
        (data, payload_of(&back).expose().to_vec())
    }

    #[test]
    fn json_payloads_become_the_kv_data_and_read_back_byte_exact() {
        let p = r#"{"password":"p\"w\u0001ü","user":"app"}"#.as_bytes();
        let (data, back) = roundtrip(p, "application/json");
        assert_eq!(data.len(), 2, "the keys are the KV data");
        assert!(data.contains_key("password") && data.contains_key("user"));
        assert!(back == p);
    }

    #[test]
    fn other_payloads_are_wrapped_and_read_back_byte_exact() {
        for (p, ct) in [
            (&b"line one\nline \"two\" = \xc3\xbc"[..], "text/plain"),
            (br#"{"value":"x"}"#, "application/json"),
            (br#"{"b":"1","a":"2"}"#, "application/json"), // not canonical
            (br#"{"a":1}"#, "application/json"),           // not strings
            (br#"{"password":"x"}"#, "text/plain"),        // not json format
            (b"", "text/plain"),
            (&[0xff, 0x00, 0x80][..], "text/plain"),
        ] {
            let (data, back) = roundtrip(p, ct);
            assert_eq!(data.len(), 1);
            assert!(back == p, "{:?}", String::from_utf8_lossy(p));
        }
        let (data, _) = roundtrip(&[0xff], "text/plain");
        assert!(data.contains_key(VALUE_BASE64_FIELD));
    }

    #[test]
    fn settings_are_checked_with_the_key_named() {
        let ok = json!({
            "address": "https://vault.example:8200/",
            "mount": "/kv/",
            "kvVersion": 2,
            "namespace": "team-a",
            "auth": { "method": "approle", "roleIdFile": "/r", "secretIdFile": "/s" }
        });
        let p = settings(&config(ok)).unwrap();
        assert_eq!(p.address, "https://vault.example:8200");
        assert_eq!(p.mount, "kv");
        assert_eq!(p.kv_version, Some(KvVersion::V2));

        let cases = [
            (
                json!({"address": "https://v", "auth": {"method": "token", "tokenFile": "/t"}, "mout": "x"}),
                "mout",
            ),
            (
                json!({"address": "https://v", "auth": {"method": "token", "tokenFil": "/t"}}),
                "tokenFil",
            ),
            (json!({"address": "https://v"}), "auth"),
            (
                json!({"address": "ftp://v", "auth": {"method": "token", "tokenEnv": "T"}}),
                "address",
            ),
            (
                json!({"address": "https://v", "kvVersion": 3, "auth": {"method": "token", "tokenEnv": "T"}}),
                "kvVersion",
            ),
            (
                json!({"address": "https://v", "auth": {"method": "token"}}),
                "tokenFile",
            ),
            (
                json!({"address": "https://v", "auth": {"method": "token", "tokenFile": "/a", "tokenEnv": "T"}}),
                "not both",
            ),
            (
                json!({"address": "https://v", "auth": {"method": "userpass"}}),
                "userpass",
            ),
            (
                json!({"address": "https://v", "mount": "a/../b", "auth": {"method": "token", "tokenEnv": "T"}}),
                "mount",
            ),
            (
                json!({"address": "https://v", "auth": {"method": "kubernetes", "role": ""}}),
                "auth.role",
            ),
        ];
        for (settings_json, needle) in cases {
            let err = validate(&config(settings_json.clone())).unwrap_err();
            assert!(err.contains(needle), "{settings_json}: {err}");
        }
    }

    #[test]
    fn remote_names_are_vault_paths() {
        assert!(check_path("k8s/shop/db-1.x@y+z=w,v").is_ok());
        for bad in [
            "", "/a", "a/", "a//b", "a/../b", "a b", "a?b", "a%2fb", "a#b",
        ] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn vault_errors_are_one_line() {
        assert_eq!(
            one_line("1 error occurred:\n\t* permission denied\n\n"),
            "permission denied"
        );
        assert_eq!(one_line("2 errors occurred:\n\t* a\n\t* b c\n\n"), "a; b c");
        assert_eq!(
            one_line("invalid role or\nsecret ID"),
            "invalid role or secret ID"
        );
    }

    #[test]
    fn metadata_limits_are_enforced_before_writing() {
        let mut tags = BTreeMap::new();
        tags.insert("k".repeat(129), "v".into());
        assert!(matches!(check_metadata(&tags), Err(StoreError::Invalid(_))));
        let many: BTreeMap<String, String> =
            (0..65).map(|i| (format!("k{i}"), "v".into())).collect();
        assert!(check_metadata(&many).is_err());
    }
}
