//! A fake of the Alibaba Cloud OpenAPI subset the `alibaba-kms` store uses,
//! written from the public API reference (no emulator exists): KMS Secrets
//! Manager (version 2016-01-20), STS (2015-04-01) and the ECS instance
//! metadata service, on one in-process HTTP/1 server (hyper on its own
//! tokio runtime and thread) on a free loopback port, stopped when dropped.
//!
//! **RPC requests** are `POST /` (or `GET /`) with their parameters in the
//! query string and/or an `application/x-www-form-urlencoded` body, routed
//! by `Version` and `Action`. Every request but `AssumeRoleWithOIDC`
//! (anonymous, as documented) is authenticated the way Alibaba's gateway
//! does it: the common parameters must be there (`AccessKeyId`,
//! `SignatureMethod=HMAC-SHA1`, `SignatureVersion=1.0`, `SignatureNonce`,
//! `Timestamp` within 15 minutes), the AccessKey must exist, the signature
//! is **recomputed** from the received parameters with the key's secret
//! (an implementation of the documented algorithm of its own, on the
//! `percent-encoding` crate, not the store's) and compared, nonces are
//! single-use, temporary (`STS.`) keys need their `SecurityToken` and
//! expire. Refusals have the gateway's JSON shape
//! `{"RequestId","HostId","Code","Message","Recommend"}` and its codes:
//! `IncompleteSignature` and `SignatureDoesNotMatch` (400, whose message
//! ends with `server string to sign is:` and the server's string to sign,
//! as the real gateway's does, values and all), `InvalidAccessKeyId.NotFound`
//! (404), `InvalidTimeStamp.Expired`, `SignatureNonceUsed`,
//! `InvalidSecurityToken.Expired` / `.MismatchWithAccessKey`,
//! `MissingSecurityToken`, `MissingParameter`.
//!
//! **KMS:** `CreateSecret` (`Rejected.ResourceExist` 409,
//! `Rejected.ResourceInDeleteWindow` 409, `Forbidden.KeyNotFound` 404 for
//! an unknown `EncryptionKeyId`), `GetSecretValue`, `DescribeSecret`
//! (`FetchTags`, `PlannedDeleteTime`), `PutSecretValue` (idempotent for a
//! version id with the same value; the new version `ACSCurrent`, the old one
//! `ACSPrevious`, at most 10 versions), `TagResource`;
//! `Forbidden.ResourceNotFound` 404 for absent secrets and
//! `Forbidden.NoPermission` 403 with `AccessDeniedDetail` for a caller
//! without the RAM action. Secret names (192 characters of letters, digits
//! and `_ / + = . @ -`, not `acs/...`), version ids (64), `SecretDataType`
//! (`text`, or `binary` with base64 data) and tags (a JSON array of
//! `{TagKey, TagValue}`, at most 10 per secret, keys at most 128 characters
//! and not `aliyun...`/`acs:...`, values at most 128, no `http://`) are
//! validated as documented. The region is the `RegionId` parameter.
//!
//! **STS:** `AssumeRole` (signed; the caller's AccessKey must be trusted by
//! the role: `NoPermission` 403, `EntityNotExist.Role` 404) and
//! `AssumeRoleWithOIDC` (the registered token of the role's OIDC provider:
//! `AuthenticationFail.OIDCToken.Invalid` 400), issuing `STS.` keys with a
//! `SecurityToken` and an `Expiration` that KMS then accepts with the role's
//! permissions, and refuses once expired.
//!
//! **Metadata:** `PUT /latest/api/token` (IMDSv2, with
//! `X-aliyun-ecs-metadata-token-ttl-seconds`), `GET
//! /latest/meta-data/ram/security-credentials/` (the attached role) and
//! `.../{role}` (its temporary credentials, `Code: Success`), optionally
//! refusing requests without a session token.
//!
//! Test controls: fault injection (the next N calls of an action, in any or
//! one region, answer a status with the documented code for it), a request
//! log (action, region, which parameters were in the URL and which in the
//! body, the AccessKey id, whether the signature was checked: never a value),
//! counters of issued credentials, a credential lifetime override, and
//! direct access to the stored secrets, whose `Debug` never shows values.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde_json::{Value, json};

/// The default region and a second one.
pub const REGION: &str = "cn-hangzhou";
pub const REGION2: &str = "cn-shanghai";
/// The account of every ARN.
pub const ACCOUNT: &str = "1234567890123456";

const KMS_VERSION: &str = "2016-01-20";
const STS_VERSION: &str = "2015-04-01";
const MAX_TAGS: usize = 10;
const MAX_VERSIONS: usize = 10;
const MAX_SKEW_SECS: i64 = 15 * 60;
const TOKEN_TTL_HEADER: &str = "x-aliyun-ecs-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aliyun-ecs-metadata-token";

/// The documented encoding: only `A-Z a-z 0-9 - _ . ~` stay as they are.
const RPC_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn rpc_encode(text: &str) -> String {
    utf8_percent_encode(text, RPC_ENCODE).to_string()
}

/// The server's string to sign: every parameter but `Signature`, each name
/// and value percent-encoded, sorted, joined, encoded again after
/// `METHOD&%2F&`.
pub fn server_string_to_sign(method: &str, params: &BTreeMap<String, String>) -> String {
    let mut pairs: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k.as_str() != "Signature")
        .map(|(k, v)| (rpc_encode(k), rpc_encode(v)))
        .collect();
    pairs.sort();
    let canonical = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    format!("{method}&{}&{}", rpc_encode("/"), rpc_encode(&canonical))
}

/// `Base64(HMAC-SHA1(secret + "&", string_to_sign))`.
pub fn server_signature(secret: &str, string_to_sign: &str) -> String {
    let key = aws_lc_rs::hmac::Key::new(
        aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        format!("{secret}&").as_bytes(),
    );
    let tag = aws_lc_rs::hmac::sign(&key, string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

/// What a caller may do in KMS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perms {
    pub create: bool,
    pub get: bool,
    pub describe: bool,
    pub put: bool,
    pub tag: bool,
}

impl Perms {
    pub const FULL: Perms = Perms {
        create: true,
        get: true,
        describe: true,
        put: true,
        tag: true,
    };
    pub const READER: Perms = Perms {
        create: false,
        get: true,
        describe: true,
        put: false,
        tag: false,
    };
    pub const NONE: Perms = Perms {
        create: false,
        get: false,
        describe: false,
        put: false,
        tag: false,
    };
}

/// One version of a secret. `Debug` never shows the value.
#[derive(Clone)]
pub struct Version {
    pub id: String,
    /// As sent: text, or base64 for `binary`.
    pub data: String,
    pub data_type: String,
    pub stages: Vec<String>,
    pub created: String,
}

impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Version")
            .field("id", &self.id)
            .field("data_bytes", &self.data.len())
            .field("data_type", &self.data_type)
            .field("stages", &self.stages)
            .finish()
    }
}

/// A stored secret.
#[derive(Clone, Debug)]
pub struct Secret {
    pub name: String,
    pub region: String,
    /// Oldest first.
    pub versions: Vec<Version>,
    pub tags: BTreeMap<String, String>,
    pub description: Option<String>,
    pub encryption_key_id: Option<String>,
    pub instance_id: Option<String>,
    pub planned_delete_time: Option<String>,
    pub created: String,
    pub updated: String,
}

impl Secret {
    pub fn current(&self) -> Option<&Version> {
        self.versions
            .iter()
            .find(|v| v.stages.iter().any(|s| s.as_str() == "ACSCurrent"))
    }
}

/// One request as the fake saw it. Never a value.
#[derive(Clone, Debug)]
pub struct Logged {
    /// `CreateSecret`, `AssumeRole`, `metadata:credentials`, ...
    pub action: String,
    /// `kms`, `sts`, `metadata` or `unknown`.
    pub product: &'static str,
    pub region: Option<String>,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub code: Option<String>,
    pub access_key_id: Option<String>,
    pub security_token: bool,
    /// The signature was recomputed and matched.
    pub signature_verified: bool,
    /// Parameter names in the URL's query string.
    pub query_params: Vec<String>,
    /// Parameter names in the form body.
    pub body_params: Vec<String>,
    pub signature_nonce: Option<String>,
    /// Metadata requests: an IMDSv2 session token came along.
    pub metadata_token: bool,
}

struct Key {
    secret: String,
    principal: String,
    perms: Perms,
    /// Temporary keys: their token and end.
    token: Option<String>,
    expires: Option<Instant>,
}

struct Role {
    perms: Perms,
    trusted_keys: BTreeSet<String>,
    /// OIDC provider ARN and the one token it accepts.
    oidc: Option<(String, String)>,
    max_session_secs: u32,
}

struct Fault {
    action: String,
    region: Option<String>,
    status: u16,
    remaining: usize,
}

#[derive(Default)]
struct State {
    keys: BTreeMap<String, Key>,
    roles: BTreeMap<String, Role>,
    /// ECS role name → role ARN.
    ecs_roles: BTreeMap<String, String>,
    imds_v2_required: bool,
    metadata_tokens: BTreeSet<String>,
    kms_keys: BTreeSet<(String, String)>,
    secrets: BTreeMap<(String, String), Secret>,
    nonces: BTreeSet<String>,
    faults: Vec<Fault>,
    log: Vec<Logged>,
    issued: BTreeMap<&'static str, usize>,
    credential_lifetime: Option<Duration>,
}

pub struct AlibabaFake {
    pub port: u16,
    /// `http://127.0.0.1:PORT`: the store's `endpoint`, `auth.stsEndpoint`
    /// and `auth.metadataEndpoint`.
    pub endpoint: String,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AlibabaFake {
    /// Starts the server on a free loopback port, on a runtime of its own
    /// (so it serves whatever runtime the test uses).
    pub fn start() -> AlibabaFake {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let shared = state.clone();
        let thread = std::thread::Builder::new()
            .name("alibaba-fake".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(accept_loop(listener, shared, stop_rx));
            })
            .unwrap();
        AlibabaFake {
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    // -- identities -------------------------------------------------------

    /// A RAM user's AccessKey pair with these KMS permissions.
    pub fn add_access_key(&self, id: &str, secret: &str, principal: &str, perms: Perms) {
        self.lock().keys.insert(
            id.to_owned(),
            Key {
                secret: secret.to_owned(),
                principal: principal.to_owned(),
                perms,
                token: None,
                expires: None,
            },
        );
    }

    /// A RAM role with these KMS permissions (its sessions get them).
    pub fn add_role(&self, arn: &str, perms: Perms) {
        self.lock().roles.insert(
            arn.to_owned(),
            Role {
                perms,
                trusted_keys: BTreeSet::new(),
                oidc: None,
                max_session_secs: 3600,
            },
        );
    }

    /// The role's trust policy lets the holder of this AccessKey assume it.
    pub fn trust_access_key(&self, role_arn: &str, access_key_id: &str) {
        if let Some(r) = self.lock().roles.get_mut(role_arn) {
            r.trusted_keys.insert(access_key_id.to_owned());
        }
    }

    /// The role trusts this OIDC provider, which vouches for this token.
    pub fn trust_oidc(&self, role_arn: &str, provider_arn: &str, token: &str) {
        if let Some(r) = self.lock().roles.get_mut(role_arn) {
            r.oidc = Some((provider_arn.to_owned(), token.to_owned()));
        }
    }

    /// The ECS instance has this RAM role attached.
    pub fn attach_ecs_role(&self, role_name: &str, role_arn: &str) {
        self.lock()
            .ecs_roles
            .insert(role_name.to_owned(), role_arn.to_owned());
    }

    /// Metadata requests without an IMDSv2 session token are refused.
    pub fn require_imds_v2(&self) {
        self.lock().imds_v2_required = true;
    }

    /// Temporary credentials issued from now on last this long.
    pub fn set_credential_lifetime(&self, lifetime: Duration) {
        self.lock().credential_lifetime = Some(lifetime);
    }

    /// Every temporary key issued so far stops being accepted.
    pub fn expire_temporary_keys(&self) {
        let past = Instant::now() - Duration::from_secs(1);
        for k in self.lock().keys.values_mut() {
            if k.token.is_some() {
                k.expires = Some(past);
            }
        }
    }

    /// Credentials issued by `AssumeRole`, `AssumeRoleWithOIDC` or `ecs`
    /// (the metadata service).
    pub fn issued(&self, how: &str) -> usize {
        self.lock().issued.get(how).copied().unwrap_or(0)
    }

    /// A symmetric KMS key of `region`, usable as `EncryptionKeyId`.
    pub fn add_kms_key(&self, region: &str, key_id: &str) {
        self.lock()
            .kms_keys
            .insert((region.to_owned(), key_id.to_owned()));
    }

    // -- the secrets ------------------------------------------------------

    pub fn secret(&self, region: &str, name: &str) -> Option<Secret> {
        self.lock()
            .secrets
            .get(&(region.to_owned(), name.to_owned()))
            .cloned()
    }

    /// The `ACSCurrent` version.
    pub fn current(&self, region: &str, name: &str) -> Option<Version> {
        self.secret(region, name).and_then(|s| s.current().cloned())
    }

    /// All versions, oldest first.
    pub fn versions(&self, region: &str, name: &str) -> Vec<Version> {
        self.secret(region, name)
            .map(|s| s.versions)
            .unwrap_or_default()
    }

    /// Secret names of a region.
    pub fn names(&self, region: &str) -> Vec<String> {
        self.lock()
            .secrets
            .keys()
            .filter(|(r, _)| r == region)
            .map(|(_, n)| n.clone())
            .collect()
    }

    /// A secret as another tool would write it (no ownership unless given).
    pub fn seed(&self, region: &str, name: &str, data: &str, tags: &[(&str, &str)]) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let now = now_text(0);
        self.lock().secrets.insert(
            (region.to_owned(), name.to_owned()),
            Secret {
                name: name.to_owned(),
                region: region.to_owned(),
                versions: vec![Version {
                    id: id.clone(),
                    data: data.to_owned(),
                    data_type: "text".into(),
                    stages: vec!["ACSCurrent".into()],
                    created: now.clone(),
                }],
                tags: tags
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                description: None,
                encryption_key_id: None,
                instance_id: None,
                planned_delete_time: None,
                created: now.clone(),
                updated: now,
            },
        );
        id
    }

    /// Removes a secret at once (`DeleteSecret --ForceDeleteWithoutRecovery`).
    pub fn remove(&self, region: &str, name: &str) {
        self.lock()
            .secrets
            .remove(&(region.to_owned(), name.to_owned()));
    }

    /// `DeleteSecret` with a recovery window: scheduled for deletion.
    pub fn schedule_deletion(&self, region: &str, name: &str) {
        if let Some(s) = self
            .lock()
            .secrets
            .get_mut(&(region.to_owned(), name.to_owned()))
        {
            s.planned_delete_time = Some(now_text(30 * 86_400));
        }
    }

    // -- faults and the log -----------------------------------------------

    /// The next `times` authenticated calls of `action` (any region) answer
    /// `status` with the documented code for it.
    pub fn fail(&self, action: &str, status: u16, times: usize) {
        self.push_fault(action, None, status, times);
    }

    /// The same, in one region only.
    pub fn fail_in(&self, region: &str, action: &str, status: u16, times: usize) {
        self.push_fault(action, Some(region), status, times);
    }

    fn push_fault(&self, action: &str, region: Option<&str>, status: u16, times: usize) {
        self.lock().faults.push(Fault {
            action: action.to_owned(),
            region: region.map(str::to_owned),
            status,
            remaining: times,
        });
    }

    /// Injected errors not yet served.
    pub fn pending_faults(&self) -> usize {
        self.lock().faults.iter().map(|f| f.remaining).sum()
    }

    pub fn log(&self) -> Vec<Logged> {
        self.lock().log.clone()
    }

    pub fn clear_log(&self) {
        self.lock().log.clear();
    }

    /// Requests of `action` so far (refused ones included).
    pub fn count(&self, action: &str) -> usize {
        self.lock()
            .log
            .iter()
            .filter(|l| l.action == action)
            .count()
    }
}

impl Drop for AlibabaFake {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------
// The server.

async fn accept_loop(
    listener: TcpListener,
    state: Arc<Mutex<State>>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| serve(state.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
}

enum Body {
    Json(Value),
    Text(String),
}

/// An answer before it is logged.
struct Answer {
    status: u16,
    body: Body,
    code: Option<String>,
}

impl Answer {
    fn json(status: u16, body: Value) -> Answer {
        Answer {
            status,
            body: Body::Json(body),
            code: None,
        }
    }

    fn text(status: u16, body: &str) -> Answer {
        Answer {
            status,
            body: Body::Text(body.to_owned()),
            code: None,
        }
    }
}

/// The gateway's error shape.
fn refuse(status: u16, code: &str, message: &str, host: &str) -> Answer {
    let product = if host.starts_with("sts") {
        "Sts"
    } else {
        "Kms"
    };
    Answer {
        status,
        body: Body::Json(json!({
            "RequestId": request_id(),
            "HostId": host,
            "Code": code,
            "Message": message,
            "Recommend": format!("https://api.aliyun.com/troubleshoot?q={code}&product={product}"),
        })),
        code: Some(code.to_owned()),
    }
}

fn request_id() -> String {
    uuid::Uuid::new_v4().to_string().to_uppercase()
}

fn random_text(len: usize) -> String {
    let mut out = String::new();
    while out.len() < len {
        out.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    out.truncate(len);
    out
}

/// Now plus `secs`, as Alibaba writes times: `YYYY-MM-DDThh:mm:ssZ`.
fn now_text(secs: i64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    (time::OffsetDateTime::now_utc() + time::Duration::seconds(secs))
        .format(&format)
        .unwrap()
}

/// `a=1&b=%20x` → pairs (form bodies and queries; `+` is a space).
fn form(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}

async fn serve(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header("content-type").unwrap_or_default();
    let token_ttl = header(TOKEN_TTL_HEADER);
    let token = header(TOKEN_HEADER);
    let host = header("host").unwrap_or_default();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let answer = {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        let mut logged = Logged {
            action: String::new(),
            product: "unknown",
            region: None,
            method: method.clone(),
            path: path.clone(),
            status: 0,
            code: None,
            access_key_id: None,
            security_token: false,
            signature_verified: false,
            query_params: Vec::new(),
            body_params: Vec::new(),
            signature_nonce: None,
            metadata_token: token.is_some(),
        };
        let answer = if path.starts_with("/latest/") {
            logged.product = "metadata";
            st.metadata(
                &method,
                &path,
                token_ttl.as_deref(),
                token.as_deref(),
                &mut logged,
            )
        } else if path == "/" {
            let mut params: BTreeMap<String, String> = BTreeMap::new();
            for (k, v) in form(&query) {
                logged.query_params.push(k.clone());
                params.insert(k, v);
            }
            if content_type.starts_with("application/x-www-form-urlencoded") {
                for (k, v) in form(&String::from_utf8_lossy(&body)) {
                    logged.body_params.push(k.clone());
                    params.insert(k, v);
                }
            }
            st.rpc(&method, &params, &host, &mut logged)
        } else {
            refuse(
                404,
                "InvalidAction.NotFound",
                "Specified api is not found, please check your url and method.",
                "kms.aliyuncs.com",
            )
        };
        logged.status = answer.status;
        logged.code = answer.code.clone();
        st.log.push(logged);
        answer
    };
    let (content_type, bytes) = match answer.body {
        Body::Json(v) => (
            "application/json;charset=utf-8",
            Bytes::from(serde_json::to_vec(&v).unwrap()),
        ),
        Body::Text(t) => ("text/plain", Bytes::from(t)),
    };
    Ok(Response::builder()
        .status(answer.status)
        .header("content-type", content_type)
        .header("x-acs-request-id", request_id())
        .body(Full::new(bytes))
        .unwrap())
}

/// Who signed a request.
struct Caller {
    access_key_id: String,
    principal: String,
    perms: Perms,
}

fn valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= 192
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_/+=.@-".contains(c))
        && !name.starts_with("acs/")
}

/// `Tags` of `CreateSecret`/`TagResource`, validated.
fn parse_tags(text: &str, host: &str) -> Result<BTreeMap<String, String>, Answer> {
    let bad = |m: &str| refuse(400, "InvalidParameter", m, host);
    let Ok(Value::Array(list)) = serde_json::from_str::<Value>(text) else {
        return Err(bad(
            "The specified parameter Tags is not valid: a JSON array of {\"TagKey\",\"TagValue\"} objects is expected.",
        ));
    };
    let mut tags = BTreeMap::new();
    for t in &list {
        let (Some(k), Some(v)) = (
            t.get("TagKey").and_then(Value::as_str),
            t.get("TagValue").and_then(Value::as_str),
        ) else {
            return Err(bad(
                "The specified parameter Tags is not valid: every tag needs a TagKey and a TagValue string.",
            ));
        };
        let lk = k.to_ascii_lowercase();
        let lv = v.to_ascii_lowercase();
        if k.is_empty()
            || k.chars().count() > 128
            || lk.starts_with("aliyun")
            || lk.starts_with("acs:")
            || lk.contains("http://")
            || lk.contains("https://")
        {
            return Err(bad(&format!("The specified tag key {k:?} is not valid.")));
        }
        if v.chars().count() > 128 || lv.contains("http://") || lv.contains("https://") {
            return Err(bad(&format!("The value of tag {k:?} is not valid.")));
        }
        tags.insert(k.to_owned(), v.to_owned());
    }
    if tags.len() > MAX_TAGS {
        return Err(refuse(
            400,
            "Rejected.LimitExceeded",
            "The tag quota is exceeded.",
            host,
        ));
    }
    Ok(tags)
}

fn stages_json(stages: &[String]) -> Value {
    json!({ "VersionStage": stages })
}

impl State {
    // -- RPC ----------------------------------------------------------------

    fn rpc(
        &mut self,
        method: &str,
        params: &BTreeMap<String, String>,
        host: &str,
        logged: &mut Logged,
    ) -> Answer {
        let action = params.get("Action").cloned().unwrap_or_default();
        let version = params.get("Version").cloned().unwrap_or_default();
        logged.action = action.clone();
        logged.access_key_id = params.get("AccessKeyId").cloned();
        logged.security_token = params.contains_key("SecurityToken");
        logged.signature_nonce = params.get("SignatureNonce").cloned();
        let (product, host_id) = match version.as_str() {
            KMS_VERSION => {
                let region = params
                    .get("RegionId")
                    .cloned()
                    .or_else(|| {
                        host.strip_prefix("kms.")
                            .and_then(|h| h.split('.').next())
                            .map(str::to_owned)
                    })
                    .unwrap_or_else(|| REGION.to_owned());
                logged.region = Some(region.clone());
                ("kms", format!("kms.{region}.aliyuncs.com"))
            }
            STS_VERSION => ("sts", "sts.aliyuncs.com".to_owned()),
            _ => {
                return refuse(
                    400,
                    "InvalidVersion",
                    "Specified parameter Version is not valid.",
                    "kms.aliyuncs.com",
                );
            }
        };
        logged.product = product;
        if action.is_empty() {
            return refuse(
                400,
                "MissingParameter",
                "The input parameter \"Action\" that is mandatory for processing this request is not supplied.",
                &host_id,
            );
        }
        let anonymous = product == "sts" && action == "AssumeRoleWithOIDC";
        let caller = if anonymous {
            None
        } else {
            match self.authenticate(method, params, &host_id) {
                Ok(c) => {
                    logged.signature_verified = true;
                    Some(c)
                }
                Err(a) => return a,
            }
        };
        let region = logged.region.clone().unwrap_or_else(|| REGION.to_owned());
        if let Some(fault) = self.faults.iter_mut().find(|f| {
            f.action == action && f.remaining > 0 && f.region.as_ref().is_none_or(|r| *r == region)
        }) {
            fault.remaining -= 1;
            let (code, message) = match fault.status {
                400 => (
                    "InvalidParameter",
                    "The specified parameter is invalid. (injected)",
                ),
                403 => (
                    "Forbidden.NoPermission",
                    "You are not authorized to perform the operation. (injected)",
                ),
                404 => ("Forbidden.ResourceNotFound", "The resource is not found."),
                409 => ("Rejected.ResourceExist", "The resource already exists."),
                429 => ("Rejected.Throttling", "The QPS upper limit is exceeded."),
                500 => ("InternalFailure", "An internal error occurred."),
                503 => (
                    "ServiceUnavailableTemporary",
                    "Service Unavailable Temporary.",
                ),
                _ => ("UnknownError", "Injected error."),
            };
            return refuse(fault.status, code, message, &host_id);
        }
        let unknown = || {
            refuse(
                404,
                "InvalidAction.NotFound",
                "Specified api is not found, please check your url and method.",
                &host_id,
            )
        };
        match (product, action.as_str()) {
            // Authenticated by its token, not a signature.
            ("sts", "AssumeRoleWithOIDC") => return self.assume_role_with_oidc(params, &host_id),
            (
                "kms",
                "CreateSecret" | "GetSecretValue" | "DescribeSecret" | "PutSecretValue"
                | "TagResource",
            )
            | ("sts", "AssumeRole") => {}
            _ => return unknown(),
        }
        // Every other action must be signed.
        let Some(caller) = caller else {
            return refuse(
                400,
                "IncompleteSignature",
                "The request is not signed.",
                &host_id,
            );
        };
        match (product, action.as_str()) {
            ("kms", "CreateSecret") => self.create_secret(&region, params, caller, &host_id),
            ("kms", "GetSecretValue") => self.get_secret_value(&region, params, caller, &host_id),
            ("kms", "DescribeSecret") => self.describe_secret(&region, params, caller, &host_id),
            ("kms", "PutSecretValue") => self.put_secret_value(&region, params, caller, &host_id),
            ("kms", "TagResource") => self.tag_resource(&region, params, caller, &host_id),
            ("sts", "AssumeRole") => self.assume_role(params, caller, &host_id),
            _ => unknown(),
        }
    }

    /// The gateway's checks, in its order: common parameters, the key, the
    /// signature (recomputed), the clock, the nonce, the security token.
    fn authenticate(
        &mut self,
        method: &str,
        params: &BTreeMap<String, String>,
        host: &str,
    ) -> Result<Caller, Answer> {
        for p in ["AccessKeyId", "Timestamp", "SignatureNonce"] {
            if params.get(p).is_none_or(|v| v.is_empty()) {
                return Err(refuse(
                    400,
                    "MissingParameter",
                    &format!(
                        "The input parameter \"{p}\" that is mandatory for processing this request is not supplied."
                    ),
                    host,
                ));
            }
        }
        let to_sign = server_string_to_sign(method, params);
        let incomplete = params.get("Signature").is_none_or(|s| s.is_empty())
            || params.get("SignatureMethod").map(String::as_str) != Some("HMAC-SHA1")
            || params.get("SignatureVersion").map(String::as_str) != Some("1.0");
        if incomplete {
            return Err(refuse(
                400,
                "IncompleteSignature",
                &format!(
                    "The request signature does not conform to Aliyun standards. server string to sign is:{to_sign}"
                ),
                host,
            ));
        }
        let id = &params["AccessKeyId"];
        let Some(key) = self.keys.get(id) else {
            return Err(refuse(
                404,
                "InvalidAccessKeyId.NotFound",
                "Specified access key is not found.",
                host,
            ));
        };
        if server_signature(&key.secret, &to_sign) != params["Signature"] {
            return Err(refuse(
                400,
                "SignatureDoesNotMatch",
                &format!(
                    "Specified signature is not matched with our calculation. server string to sign is:{to_sign}"
                ),
                host,
            ));
        }
        let format =
            time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
        let Ok(when) = time::PrimitiveDateTime::parse(&params["Timestamp"], &format) else {
            return Err(refuse(
                400,
                "InvalidTimeStamp.Format",
                "Specified time stamp or date value is not well formatted.",
                host,
            ));
        };
        let skew = (time::OffsetDateTime::now_utc().unix_timestamp()
            - when.assume_utc().unix_timestamp())
        .abs();
        if skew > MAX_SKEW_SECS {
            return Err(refuse(
                400,
                "InvalidTimeStamp.Expired",
                "Specified time stamp or date value is expired.",
                host,
            ));
        }
        match (&key.token, params.get("SecurityToken")) {
            (None, _) => {}
            (Some(_), None) => {
                return Err(refuse(
                    400,
                    "MissingSecurityToken",
                    "SecurityToken is mandatory for this action.",
                    host,
                ));
            }
            (Some(t), Some(given)) if t != given => {
                return Err(refuse(
                    400,
                    "InvalidSecurityToken.MismatchWithAccessKey",
                    "Specified SecurityToken mismatch with the AccessKey.",
                    host,
                ));
            }
            (Some(_), Some(_)) => {
                if key.expires.is_some_and(|e| Instant::now() >= e) {
                    return Err(refuse(
                        400,
                        "InvalidSecurityToken.Expired",
                        "Specified SecurityToken is expired.",
                        host,
                    ));
                }
            }
        }
        let caller = Caller {
            access_key_id: id.clone(),
            principal: key.principal.clone(),
            perms: key.perms,
        };
        if !self.nonces.insert(params["SignatureNonce"].clone()) {
            return Err(refuse(
                400,
                "SignatureNonceUsed",
                "Specified signature nonce was used already.",
                host,
            ));
        }
        Ok(caller)
    }

    fn deny(&self, action: &str, caller: &Caller, host: &str) -> Answer {
        let mut a = refuse(
            403,
            "Forbidden.NoPermission",
            "You are not authorized to perform the operation.",
            host,
        );
        if let Body::Json(b) = &mut a.body {
            b["AccessDeniedDetail"] = json!({
                "AuthAction": format!("kms:{action}"),
                "AuthPrincipalDisplayName": caller.principal,
                "AuthPrincipalType": "SubUser",
                "NoPermissionType": "ImplicitDeny",
                "PolicyType": "AccountLevelIdentityBasedPolicy",
            });
        }
        a
    }

    // -- KMS ----------------------------------------------------------------

    fn create_secret(
        &mut self,
        region: &str,
        p: &BTreeMap<String, String>,
        caller: Caller,
        host: &str,
    ) -> Answer {
        if !caller.perms.create {
            return self.deny("CreateSecret", &caller, host);
        }
        let bad = |m: &str| refuse(400, "InvalidParameter", m, host);
        let name = p.get("SecretName").cloned().unwrap_or_default();
        if !valid_secret_name(&name) {
            return bad("The specified parameter SecretName is not valid.");
        }
        let version = p.get("VersionId").cloned().unwrap_or_default();
        if version.is_empty() || version.chars().count() > 64 {
            return bad("The specified parameter VersionId is not valid.");
        }
        let Some(data) = p.get("SecretData").cloned() else {
            return refuse(
                400,
                "MissingParameter",
                "The input parameter \"SecretData\" that is mandatory for processing this request is not supplied.",
                host,
            );
        };
        let data_type = p
            .get("SecretDataType")
            .cloned()
            .unwrap_or_else(|| "text".to_owned());
        match data_type.as_str() {
            "text" => {}
            "binary" => {
                if base64::engine::general_purpose::STANDARD
                    .decode(&data)
                    .is_err()
                {
                    return bad(
                        "The specified parameter SecretData is not valid base64 for SecretDataType binary.",
                    );
                }
            }
            _ => return bad("The specified parameter SecretDataType is not valid."),
        }
        if p.get("SecretType").is_some_and(|t| t != "Generic") {
            return bad("The specified parameter SecretType is not supported here.");
        }
        let tags = match p.get("Tags") {
            Some(t) => match parse_tags(t, host) {
                Ok(t) => t,
                Err(a) => return a,
            },
            None => BTreeMap::new(),
        };
        if let Some(k) = p.get("EncryptionKeyId")
            && !self.kms_keys.contains(&(region.to_owned(), k.clone()))
        {
            return refuse(
                404,
                "Forbidden.KeyNotFound",
                "The specified Key is not found.",
                host,
            );
        }
        let key = (region.to_owned(), name.clone());
        if let Some(existing) = self.secrets.get(&key) {
            return if existing.planned_delete_time.is_some() {
                refuse(
                    409,
                    "Rejected.ResourceInDeleteWindow",
                    "The secret is planned to be deleted.",
                    host,
                )
            } else {
                refuse(
                    409,
                    "Rejected.ResourceExist",
                    "The resource already exists.",
                    host,
                )
            };
        }
        let now = now_text(0);
        self.secrets.insert(
            key,
            Secret {
                name: name.clone(),
                region: region.to_owned(),
                versions: vec![Version {
                    id: version.clone(),
                    data,
                    data_type,
                    stages: vec!["ACSCurrent".into()],
                    created: now.clone(),
                }],
                tags,
                description: p.get("Description").cloned(),
                encryption_key_id: p.get("EncryptionKeyId").cloned(),
                instance_id: p.get("DKMSInstanceId").cloned(),
                planned_delete_time: None,
                created: now.clone(),
                updated: now,
            },
        );
        Answer::json(
            200,
            json!({
                "RequestId": request_id(),
                "Arn": format!("acs:kms:{region}:{ACCOUNT}:secret/{name}"),
                "SecretName": name,
                "VersionId": version,
                "SecretType": "Generic",
            }),
        )
    }

    /// The secret of a read or write, or the refusal.
    fn existing(
        &self,
        region: &str,
        p: &BTreeMap<String, String>,
        host: &str,
        usable: bool,
    ) -> Result<(String, String), Answer> {
        let name = p.get("SecretName").cloned().unwrap_or_default();
        if name.is_empty() {
            return Err(refuse(
                400,
                "MissingParameter",
                "The input parameter \"SecretName\" that is mandatory for processing this request is not supplied.",
                host,
            ));
        }
        let key = (region.to_owned(), name);
        match self.secrets.get(&key) {
            None => Err(refuse(
                404,
                "Forbidden.ResourceNotFound",
                "The resource is not found.",
                host,
            )),
            Some(s) if usable && s.planned_delete_time.is_some() => Err(refuse(
                409,
                "Rejected.ResourceInDeleteWindow",
                "The secret is planned to be deleted.",
                host,
            )),
            Some(_) => Ok(key),
        }
    }

    fn get_secret_value(
        &mut self,
        region: &str,
        p: &BTreeMap<String, String>,
        caller: Caller,
        host: &str,
    ) -> Answer {
        if !caller.perms.get {
            return self.deny("GetSecretValue", &caller, host);
        }
        let key = match self.existing(region, p, host, true) {
            Ok(k) => k,
            Err(a) => return a,
        };
        let secret = &self.secrets[&key];
        let stage = p
            .get("VersionStage")
            .cloned()
            .unwrap_or_else(|| "ACSCurrent".to_owned());
        let found = match p.get("VersionId") {
            Some(id) => secret.versions.iter().find(|v| v.id == *id),
            None => secret.versions.iter().find(|v| v.stages.contains(&stage)),
        };
        let Some(v) = found else {
            return refuse(
                404,
                "Forbidden.ResourceNotFound",
                "The resource is not found.",
                host,
            );
        };
        Answer::json(
            200,
            json!({
                "RequestId": request_id(),
                "SecretName": secret.name,
                "SecretType": "Generic",
                "VersionId": v.id,
                "CreateTime": v.created,
                "SecretData": v.data,
                "SecretDataType": v.data_type,
                "VersionStages": stages_json(&v.stages),
            }),
        )
    }

    fn describe_secret(
        &mut self,
        region: &str,
        p: &BTreeMap<String, String>,
        caller: Caller,
        host: &str,
    ) -> Answer {
        if !caller.perms.describe {
            return self.deny("DescribeSecret", &caller, host);
        }
        let key = match self.existing(region, p, host, false) {
            Ok(k) => k,
            Err(a) => return a,
        };
        let s = &self.secrets[&key];
        let mut doc = json!({
            "RequestId": request_id(),
            "Arn": format!("acs:kms:{region}:{ACCOUNT}:secret/{}", s.name),
            "SecretName": s.name,
            "SecretType": "Generic",
            "Description": s.description.clone().unwrap_or_default(),
            "CreateTime": s.created,
            "UpdateTime": s.updated,
            "EncryptionKeyId": s.encryption_key_id.clone().unwrap_or_default(),
        });
        if let Some(t) = &s.planned_delete_time {
            doc["PlannedDeleteTime"] = json!(t);
        }
        if let Some(i) = &s.instance_id {
            doc["DKMSInstanceId"] = json!(i);
        }
        if p.get("FetchTags").map(String::as_str) == Some("true") {
            let list: Vec<Value> = s
                .tags
                .iter()
                .map(|(k, v)| json!({ "TagKey": k, "TagValue": v }))
                .collect();
            doc["Tags"] = json!({ "Tag": list });
        }
        Answer::json(200, doc)
    }

    fn put_secret_value(
        &mut self,
        region: &str,
        p: &BTreeMap<String, String>,
        caller: Caller,
        host: &str,
    ) -> Answer {
        if !caller.perms.put {
            return self.deny("PutSecretValue", &caller, host);
        }
        let key = match self.existing(region, p, host, true) {
            Ok(k) => k,
            Err(a) => return a,
        };
        let bad = |m: &str| refuse(400, "InvalidParameter", m, host);
        let version = p.get("VersionId").cloned().unwrap_or_default();
        if version.is_empty() || version.chars().count() > 64 {
            return bad("The specified parameter VersionId is not valid.");
        }
        let Some(data) = p.get("SecretData").cloned() else {
            return refuse(
                400,
                "MissingParameter",
                "The input parameter \"SecretData\" that is mandatory for processing this request is not supplied.",
                host,
            );
        };
        let data_type = p
            .get("SecretDataType")
            .cloned()
            .unwrap_or_else(|| "text".to_owned());
        if !matches!(data_type.as_str(), "text" | "binary")
            || (data_type == "binary"
                && base64::engine::general_purpose::STANDARD
                    .decode(&data)
                    .is_err())
        {
            return bad("The specified parameter SecretDataType or SecretData is not valid.");
        }
        let secret = self.secrets.get_mut(&key).unwrap();
        if let Some(v) = secret.versions.iter().find(|v| v.id == version) {
            // Idempotent for the same value; a different one is refused.
            return if v.data == data && v.data_type == data_type {
                Answer::json(
                    200,
                    json!({
                        "RequestId": request_id(),
                        "SecretName": secret.name,
                        "VersionId": version,
                        "VersionStages": stages_json(&v.stages),
                    }),
                )
            } else {
                refuse(
                    409,
                    "Rejected.ResourceExist",
                    "The version already exists with another secret value.",
                    host,
                )
            };
        }
        for v in secret.versions.iter_mut() {
            v.stages.retain(|s| s.as_str() != "ACSPrevious");
            if let Some(s) = v.stages.iter_mut().find(|s| s.as_str() == "ACSCurrent") {
                *s = "ACSPrevious".into();
            }
        }
        let now = now_text(0);
        secret.versions.push(Version {
            id: version.clone(),
            data,
            data_type,
            stages: vec!["ACSCurrent".into()],
            created: now.clone(),
        });
        if secret.versions.len() > MAX_VERSIONS {
            secret.versions.remove(0);
        }
        secret.updated = now;
        Answer::json(
            200,
            json!({
                "RequestId": request_id(),
                "SecretName": secret.name,
                "VersionId": version,
                "VersionStages": stages_json(&["ACSCurrent".to_owned()]),
            }),
        )
    }

    fn tag_resource(
        &mut self,
        region: &str,
        p: &BTreeMap<String, String>,
        caller: Caller,
        host: &str,
    ) -> Answer {
        if !caller.perms.tag {
            return self.deny("TagResource", &caller, host);
        }
        if p.contains_key("KeyId") || p.contains_key("CertificateId") {
            return refuse(
                400,
                "InvalidParameter",
                "Only SecretName resources are kept by this fake.",
                host,
            );
        }
        let key = match self.existing(region, p, host, false) {
            Ok(k) => k,
            Err(a) => return a,
        };
        let Some(text) = p.get("Tags") else {
            return refuse(
                400,
                "MissingParameter",
                "The input parameter \"Tags\" that is mandatory for processing this request is not supplied.",
                host,
            );
        };
        let tags = match parse_tags(text, host) {
            Ok(t) => t,
            Err(a) => return a,
        };
        let secret = self.secrets.get_mut(&key).unwrap();
        let mut merged = secret.tags.clone();
        merged.extend(tags);
        if merged.len() > MAX_TAGS {
            return refuse(
                400,
                "Rejected.LimitExceeded",
                "The tag quota is exceeded.",
                host,
            );
        }
        secret.tags = merged;
        Answer::json(200, json!({ "RequestId": request_id() }))
    }

    // -- STS ----------------------------------------------------------------

    fn session_params(
        &self,
        p: &BTreeMap<String, String>,
        role: &Role,
        host: &str,
    ) -> Result<(String, u32), Answer> {
        let session = p.get("RoleSessionName").cloned().unwrap_or_default();
        let valid = (2..=64).contains(&session.len())
            && session
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".@_-".contains(c));
        if !valid {
            return Err(refuse(
                400,
                "InvalidParameter.RoleSessionName",
                "The parameter RoleSessionName is wrongly formed.",
                host,
            ));
        }
        let duration = match p.get("DurationSeconds") {
            None => 3600,
            Some(d) => match d.parse::<u32>() {
                Ok(d) if (900..=role.max_session_secs).contains(&d) => d,
                _ => {
                    return Err(refuse(
                        400,
                        "InvalidParameter.DurationSeconds",
                        "The Min/Max value of DurationSeconds is 15min/1hr.",
                        host,
                    ));
                }
            },
        };
        Ok((session, duration))
    }

    /// New temporary credentials with a role's permissions.
    fn issue(
        &mut self,
        role_arn: &str,
        perms: Perms,
        duration_secs: u32,
        how: &'static str,
    ) -> Value {
        let lifetime = self
            .credential_lifetime
            .unwrap_or(Duration::from_secs(u64::from(duration_secs)));
        let id = format!("STS.{}", random_text(25));
        let secret = random_text(44);
        let token = format!("CAIS{}", random_text(120));
        self.keys.insert(
            id.clone(),
            Key {
                secret: secret.clone(),
                principal: role_arn.to_owned(),
                perms,
                token: Some(token.clone()),
                expires: Some(Instant::now() + lifetime),
            },
        );
        *self.issued.entry(how).or_insert(0) += 1;
        json!({
            "AccessKeyId": id,
            "AccessKeySecret": secret,
            "SecurityToken": token,
            "Expiration": now_text(i64::try_from(lifetime.as_secs()).unwrap_or(3600)),
        })
    }

    fn assumed(
        &mut self,
        role_arn: &str,
        session: &str,
        perms: Perms,
        duration: u32,
        how: &'static str,
    ) -> Answer {
        let credentials = self.issue(role_arn, perms, duration, how);
        let role_name = role_arn.rsplit('/').next().unwrap_or("role");
        Answer::json(
            200,
            json!({
                "RequestId": request_id(),
                "AssumedRoleUser": {
                    "Arn": format!("acs:ram::{ACCOUNT}:assumed-role/{role_name}/{session}"),
                    "AssumedRoleId": format!("300800000000000000:{session}"),
                },
                "Credentials": credentials,
            }),
        )
    }

    fn assume_role(&mut self, p: &BTreeMap<String, String>, caller: Caller, host: &str) -> Answer {
        let arn = p.get("RoleArn").cloned().unwrap_or_default();
        if !arn.starts_with("acs:ram::") || !arn.contains(":role/") {
            return refuse(
                400,
                "InvalidParameter.RoleArn",
                "The parameter RoleArn is wrongly formed.",
                host,
            );
        }
        let Some(role) = self.roles.get(&arn) else {
            return refuse(
                404,
                "EntityNotExist.Role",
                &format!("The role not exists: {arn}."),
                host,
            );
        };
        if !role.trusted_keys.contains(&caller.access_key_id) {
            return refuse(
                403,
                "NoPermission",
                "You are not authorized to do this action. You should be authorized by RAM.",
                host,
            );
        }
        let (session, duration) = match self.session_params(p, role, host) {
            Ok(x) => x,
            Err(a) => return a,
        };
        let perms = role.perms;
        self.assumed(&arn, &session, perms, duration, "AssumeRole")
    }

    fn assume_role_with_oidc(&mut self, p: &BTreeMap<String, String>, host: &str) -> Answer {
        for k in ["RoleArn", "OIDCProviderArn", "OIDCToken"] {
            if p.get(k).is_none_or(|v| v.is_empty()) {
                return refuse(
                    400,
                    "MissingParameter",
                    &format!(
                        "The input parameter \"{k}\" that is mandatory for processing this request is not supplied."
                    ),
                    host,
                );
            }
        }
        let arn = p["RoleArn"].clone();
        let Some(role) = self.roles.get(&arn) else {
            return refuse(
                404,
                "EntityNotExist.Role",
                &format!("The role not exists: {arn}."),
                host,
            );
        };
        let Some((provider, token)) = &role.oidc else {
            return refuse(
                403,
                "NoPermission",
                "The role does not trust the OIDC provider.",
                host,
            );
        };
        if *provider != p["OIDCProviderArn"] {
            return refuse(
                404,
                "EntityNotExist.OIDCProvider",
                &format!("The OIDC provider not exists: {}.", p["OIDCProviderArn"]),
                host,
            );
        }
        if *token != p["OIDCToken"] {
            return refuse(
                400,
                "AuthenticationFail.OIDCToken.Invalid",
                "Invalid OIDC token.",
                host,
            );
        }
        let (session, duration) = match self.session_params(p, role, host) {
            Ok(x) => x,
            Err(a) => return a,
        };
        let perms = role.perms;
        self.assumed(&arn, &session, perms, duration, "AssumeRoleWithOIDC")
    }

    // -- the instance metadata service --------------------------------------

    fn metadata(
        &mut self,
        method: &str,
        path: &str,
        ttl: Option<&str>,
        token: Option<&str>,
        logged: &mut Logged,
    ) -> Answer {
        if method == "PUT" && path == "/latest/api/token" {
            logged.action = "metadata:token".into();
            return match ttl.and_then(|t| t.parse::<u32>().ok()) {
                Some(t) if (1..=21_600).contains(&t) => {
                    let token = random_text(48);
                    self.metadata_tokens.insert(token.clone());
                    Answer::text(200, &token)
                }
                _ => Answer::text(400, "Bad Request"),
            };
        }
        let Some(rest) = path.strip_prefix("/latest/meta-data/ram/security-credentials") else {
            logged.action = "metadata:other".into();
            return Answer::text(404, "Not Found");
        };
        if method != "GET" {
            logged.action = "metadata:other".into();
            return Answer::text(405, "Method Not Allowed");
        }
        let valid_token = token.is_some_and(|t| self.metadata_tokens.contains(t));
        if (self.imds_v2_required || token.is_some()) && !valid_token {
            logged.action = "metadata:refused".into();
            return Answer::text(403, "Forbidden");
        }
        let role = rest.trim_start_matches('/');
        if role.is_empty() {
            logged.action = "metadata:list".into();
            return match self.ecs_roles.keys().next() {
                Some(name) => Answer::text(200, name),
                None => Answer::text(404, "Not Found"),
            };
        }
        logged.action = "metadata:credentials".into();
        let Some(arn) = self.ecs_roles.get(role).cloned() else {
            return Answer::text(404, "Not Found");
        };
        let perms = self.roles.get(&arn).map_or(Perms::NONE, |r| r.perms);
        let mut creds = self.issue(&arn, perms, 6 * 3600, "ecs");
        creds["Code"] = json!("Success");
        creds["LastUpdated"] = json!(now_text(0));
        Answer::json(200, creds)
    }
}
