//! A fake IBM Cloud Secrets Manager instance (API v2, the `arbitrary`
//! secret subset) and a fake IBM Cloud IAM token endpoint, on one plain
//! HTTP server on 127.0.0.1 (the store accepts `http://` for loopback
//! addresses only), written from the public API reference and the IBM SDKs
//! (Go, Java, Python: request paths, content types, models and their unit
//! tests' mock answers):
//!
//! - IAM: `POST /identity/token`, `application/x-www-form-urlencoded`, with
//!   `grant_type=urn:ibm:params:oauth:grant-type:apikey` (`apikey`) or
//!   `grant_type=urn:ibm:params:oauth:grant-type:cr-token` (`cr_token` and
//!   `profile_id` and/or `profile_name` of a trusted profile); the answer
//!   `{access_token, refresh_token, token_type, expires_in, expiration,
//!   scope}`; refusals in IAM's error JSON, `400 {"errorCode":"BXNIM0415E",
//!   "errorMessage":"Provided API key could not be found.","context":{..}}`
//!   for an unknown API key (IAM's documented answer; the other codes the
//!   fake uses have the same shape and are illustrative);
//! - Secrets Manager: the bearer token is verified on every request (one
//!   this fake issued, not expired, not revoked), else `401`; the caller's
//!   service role (Reader, SecretsReader, Writer) is checked per operation,
//!   else `403`; errors in the API's JSON `{"errors":[{"code","message",
//!   "more_info"}],"status_code","trace"}`. Operations: `GET
//!   /api/v2/secret_groups`, `GET /api/v2/secret_groups/{id}`, `POST
//!   /api/v2/secrets` (`409` when the group holds an arbitrary secret of
//!   the name), `GET /api/v2/secrets/{id}`, `GET
//!   /api/v2/secret_groups/{group_name}/secret_types/{type}/secrets/{name}`,
//!   `GET /api/v2/secrets/{id}/versions/{id|current|previous}[/metadata]`,
//!   `POST /api/v2/secrets/{id}/versions` and `PATCH
//!   /api/v2/secrets/{id}/metadata` (a JSON merge patch,
//!   `application/merge-patch+json`), with the documented name, label and
//!   description rules checked and content types enforced.
//!
//! Plus secret groups, destroyed (expired) secrets, a configurable token
//! lifetime, fault injection (the next N calls of an operation answer a
//! status), a request log (operation, method, path, status, identity,
//! grant: never a body, a token or a value) and accessors for assertions.
//! Stopped when dropped.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};

pub const DEFAULT_GROUP: &str = "default";
pub const INSTANCE_ID: &str = "0b5571f7-21e6-42b7-91c5-3f5ac9793a46";
pub const ACCOUNT_ID: &str = "b8b5d2c3d4e5f6a7b8c9d0e1f2a3b4c5";
pub const REGION: &str = "us-south";

const GRANT_API_KEY: &str = "urn:ibm:params:oauth:grant-type:apikey";
const GRANT_CR_TOKEN: &str = "urn:ibm:params:oauth:grant-type:cr-token";
const MORE_INFO: &str =
    "https://cloud.ibm.com/apidocs/secrets-manager/secrets-manager-v2#error-handling";
const DEFAULT_TOKEN_TTL: u64 = 3600;

/// The operations the fake tells apart (for faults and the log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Token,
    ListSecretGroups,
    GetSecretGroup,
    CreateSecret,
    GetSecret,
    GetSecretByNameType,
    GetSecretVersion,
    GetSecretVersionMetadata,
    CreateSecretVersion,
    UpdateSecretMetadata,
    Unknown,
}

/// One request as the fake saw it. Never a body, a token or a value.
#[derive(Clone, Debug)]
pub struct Logged {
    pub op: Op,
    pub method: String,
    /// Without the query.
    pub path: String,
    pub status: u16,
    /// The IAM identity of the token (or the token request).
    pub identity: Option<String>,
    /// A Secrets Manager request with a valid token.
    pub authorized: bool,
    /// Token requests: `apikey` or `cr-token`.
    pub grant: Option<&'static str>,
}

/// A Secrets Manager service role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Role {
    pub name: &'static str,
    /// Secret groups and secret metadata.
    pub read_metadata: bool,
    /// Secret payloads.
    pub read_payload: bool,
    /// Create secrets and versions, update metadata.
    pub write: bool,
}

impl Role {
    pub const READER: Role = Role {
        name: "Reader",
        read_metadata: true,
        read_payload: false,
        write: false,
    };
    pub const SECRETS_READER: Role = Role {
        name: "SecretsReader",
        read_metadata: true,
        read_payload: true,
        write: false,
    };
    pub const WRITER: Role = Role {
        name: "Writer",
        read_metadata: true,
        read_payload: true,
        write: true,
    };
}

/// One version of a secret. `Debug` never shows the payload.
#[derive(Clone)]
pub struct Version {
    pub id: String,
    pub payload: String,
    pub created_at: String,
    pub created_by: String,
    pub version_custom_metadata: Map<String, Value>,
}

impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Version")
            .field("id", &self.id)
            .field("payload_bytes", &self.payload.len())
            .field("created_by", &self.created_by)
            .finish()
    }
}

/// An arbitrary secret.
#[derive(Clone, Debug)]
pub struct Secret {
    pub id: String,
    pub name: String,
    pub group_id: String,
    pub labels: Vec<String>,
    pub custom_metadata: Map<String, Value>,
    pub description: Option<String>,
    /// `active` or `destroyed`.
    pub state: &'static str,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
    pub downloaded: bool,
    /// Oldest first.
    pub versions: Vec<Version>,
}

impl Secret {
    pub fn current(&self) -> Option<&Version> {
        self.versions.last()
    }

    /// The current payload.
    pub fn payload(&self) -> Option<&str> {
        self.current().map(|v| v.payload.as_str())
    }

    /// The custom metadata's string values.
    pub fn tags(&self) -> BTreeMap<String, String> {
        self.custom_metadata
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect()
    }
}

#[derive(Clone, Debug)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub description: String,
}

struct ApiKey {
    iam_id: String,
    role: Role,
}

struct Profile {
    id: String,
    name: String,
    cr_token: String,
    role: Role,
}

struct Token {
    iam_id: String,
    role: Role,
    expires: Instant,
}

struct Fault {
    op: Op,
    status: u16,
    remaining: usize,
}

#[derive(Default)]
struct State {
    api_keys: BTreeMap<String, ApiKey>,
    profiles: Vec<Profile>,
    tokens: BTreeMap<String, Token>,
    issued: usize,
    token_ttl: u64,
    groups: Vec<Group>,
    secrets: Vec<Secret>,
    faults: Vec<Fault>,
    log: Vec<Logged>,
}

pub struct IbmFake {
    pub addr: SocketAddr,
    pub port: u16,
    /// `http://127.0.0.1:PORT`: the store's `instanceUrl` and `iamEndpoint`.
    pub url: String,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl IbmFake {
    /// Starts the server on a free loopback port, on a runtime of its own
    /// (so it serves whatever runtime the test uses).
    pub fn start() -> IbmFake {
        let listener = StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            token_ttl: DEFAULT_TOKEN_TTL,
            ..Default::default()
        }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = state.clone();
        let thread = std::thread::Builder::new()
            .name("ibm-fake".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(serve(listener, served, stopped));
            })
            .unwrap();
        IbmFake {
            addr,
            port: addr.port(),
            url: format!("http://127.0.0.1:{}", addr.port()),
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    // -- identities -------------------------------------------------------

    /// A service ID's API key with a service role on the instance.
    pub fn register_api_key(&self, key: &str, iam_id: &str, role: Role) {
        self.state().api_keys.insert(
            key.to_owned(),
            ApiKey {
                iam_id: iam_id.to_owned(),
                role,
            },
        );
    }

    /// A trusted profile whose compute-resource trust rule accepts exactly
    /// this (projected service account) token.
    pub fn register_profile(&self, id: &str, name: &str, cr_token: &str, role: Role) {
        self.state().profiles.push(Profile {
            id: id.to_owned(),
            name: name.to_owned(),
            cr_token: cr_token.to_owned(),
            role,
        });
    }

    /// Changes the role of an API key's identity.
    pub fn set_role(&self, key: &str, role: Role) {
        if let Some(k) = self.state().api_keys.get_mut(key) {
            k.role = role;
        }
    }

    /// Forgets every issued token: the next request is answered 401.
    pub fn revoke_tokens(&self) {
        self.state().tokens.clear();
    }

    /// Tokens issued so far.
    pub fn tokens_issued(&self) -> usize {
        self.state().issued
    }

    /// The `expires_in` of tokens issued from now on.
    pub fn set_token_ttl(&self, secs: u64) {
        self.state().token_ttl = secs;
    }

    // -- content ------------------------------------------------------------

    /// Creates a secret group; returns its id.
    pub fn add_group(&self, name: &str) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        self.state().groups.push(Group {
            id: id.clone(),
            name: name.to_owned(),
            description: format!("{name} secrets"),
        });
        id
    }

    /// The arbitrary secret `name` of the group (by id).
    pub fn secret_in(&self, group_id: &str, name: &str) -> Option<Secret> {
        self.state()
            .secrets
            .iter()
            .find(|s| s.group_id == group_id && s.name == name)
            .cloned()
    }

    /// The arbitrary secret `name` of the default group.
    pub fn secret(&self, name: &str) -> Option<Secret> {
        self.secret_in(DEFAULT_GROUP, name)
    }

    /// Names of the secrets of a group, sorted.
    pub fn names_in(&self, group_id: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .state()
            .secrets
            .iter()
            .filter(|s| s.group_id == group_id)
            .map(|s| s.name.clone())
            .collect();
        names.sort();
        names
    }

    /// Names of every secret of every group, sorted.
    pub fn all_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .state()
            .secrets
            .iter()
            .map(|s| s.name.clone())
            .collect();
        names.sort();
        names
    }

    /// Creates a secret in the default group as another tool would;
    /// returns its id.
    pub fn seed(
        &self,
        name: &str,
        payload: &str,
        labels: &[&str],
        custom_metadata: &[(&str, &str)],
    ) -> String {
        let now = timestamp();
        let id = uuid::Uuid::new_v4().to_string();
        self.state().secrets.push(Secret {
            id: id.clone(),
            name: name.to_owned(),
            group_id: DEFAULT_GROUP.to_owned(),
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            custom_metadata: custom_metadata
                .iter()
                .map(|(k, v)| ((*k).to_owned(), json!(v)))
                .collect(),
            description: None,
            state: "active",
            created_by: "iam-ServiceId-other-tool".to_owned(),
            created_at: now.clone(),
            updated_at: now.clone(),
            downloaded: false,
            versions: vec![Version {
                id: uuid::Uuid::new_v4().to_string(),
                payload: payload.to_owned(),
                created_at: now,
                created_by: "iam-ServiceId-other-tool".to_owned(),
                version_custom_metadata: Map::new(),
            }],
        });
        id
    }

    /// The secret's expiration date passes: it is destroyed (its payload
    /// is gone, its name stays taken).
    pub fn destroy(&self, group_id: &str, name: &str) {
        let mut st = self.state();
        let s = st
            .secrets
            .iter_mut()
            .find(|s| s.group_id == group_id && s.name == name)
            .expect("the secret exists");
        s.state = "destroyed";
    }

    // -- faults and the log -----------------------------------------------

    /// The next `times` calls of `op` (after the token check) answer
    /// `status` with the service's error JSON for it (IAM's for `Token`).
    pub fn fail(&self, op: Op, status: u16, times: usize) {
        self.state().faults.push(Fault {
            op,
            status,
            remaining: times,
        });
    }

    pub fn pending_faults(&self) -> usize {
        self.state().faults.iter().map(|f| f.remaining).sum()
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state().log.clone()
    }

    pub fn clear_log(&self) {
        self.state().log.clear();
    }

    /// Requests of `op` so far (refused ones included).
    pub fn count(&self, op: Op) -> usize {
        self.state().log.iter().filter(|l| l.op == op).count()
    }
}

impl Drop for IbmFake {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// RFC 3339, as the API writes dates.
fn timestamp() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// The server.

async fn serve(
    listener: StdTcpListener,
    state: Arc<Mutex<State>>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(req, &state).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        }
    }
}

/// An answer before it is logged.
struct Answer {
    op: Op,
    status: u16,
    body: Value,
    identity: Option<String>,
    authorized: bool,
    grant: Option<&'static str>,
}

impl Answer {
    fn new(op: Op, status: u16, body: Value) -> Answer {
        Answer {
            op,
            status,
            body,
            identity: None,
            authorized: false,
            grant: None,
        }
    }
}

/// The request, as the handlers see it.
struct Call<'a> {
    method: &'a str,
    segments: Vec<String>,
    content_type: &'a str,
    authorization: Option<&'a str>,
    body: &'a [u8],
}

async fn handle(req: Request<Incoming>, state: &Mutex<State>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header("content-type").unwrap_or_default();
    let authorization = header("authorization");
    let method = parts.method.as_str().to_owned();
    let path = parts.uri.path().to_owned();
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let call = Call {
        method: &method,
        segments,
        content_type: &content_type,
        authorization: authorization.as_deref(),
        body: &body,
    };
    let answer = {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        let answer = st.handle(&call);
        st.log.push(Logged {
            op: answer.op,
            method: method.clone(),
            path: path.clone(),
            status: answer.status,
            identity: answer.identity.clone(),
            authorized: answer.authorized,
            grant: answer.grant,
        });
        answer
    };
    Response::builder()
        .status(answer.status)
        .header("content-type", "application/json")
        .header("x-correlation-id", uuid::Uuid::new_v4().to_string())
        .body(Full::new(Bytes::from(
            serde_json::to_vec(&answer.body).unwrap(),
        )))
        .unwrap()
}

/// `a=1&b=%20x` → map.
fn form(text: &str) -> BTreeMap<String, String> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}

/// IAM's error JSON.
fn iam_error(code: &str, message: &str) -> Value {
    let now = unix_now();
    json!({
        "errorCode": code,
        "errorMessage": message,
        "context": {
            "requestId": format!("fake-{}", uuid::Uuid::new_v4().simple()),
            "requestType": "incoming.Identity_Token",
            "userAgent": "secret-santa",
            "url": "https://iam.cloud.ibm.com",
            "instanceId": "iamid-fake-0",
            "threadId": "1a2b",
            "host": "iamid-fake-0",
            "startTime": now.to_string(),
            "endTime": now.to_string(),
            "elapsedTime": "3",
            "locale": "en_US",
            "clusterName": "iam-id-fake",
        },
    })
}

/// Secrets Manager's error JSON.
fn sm_error(status: u16, code: &str, message: &str) -> Value {
    json!({
        "errors": [{ "code": code, "message": message, "more_info": MORE_INFO }],
        "status_code": status,
        "trace": uuid::Uuid::new_v4().to_string(),
    })
}

fn sm_answer(op: Op, status: u16, code: &str, message: &str) -> Answer {
    Answer::new(op, status, sm_error(status, code, message))
}

/// IBM's secret name pattern `^[A-Za-z0-9][A-Za-z0-9]*(?:_*-*\.*[A-Za-z0-9]+)*$`,
/// 2 to 256 characters.
fn valid_name(name: &str) -> bool {
    let n = name.chars().count();
    if !(2..=256).contains(&n)
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    {
        return false;
    }
    let alnum = |c: char| c.is_ascii_alphanumeric();
    if !name.starts_with(alnum) || !name.ends_with(alnum) {
        return false;
    }
    name.split(alnum).filter(|r| !r.is_empty()).all(|run| {
        run.trim_start_matches('_')
            .trim_start_matches('-')
            .trim_start_matches('.')
            .is_empty()
    })
}

fn check_labels(labels: &Value) -> Result<Vec<String>, String> {
    let Some(items) = labels.as_array() else {
        return Err(
            "Request validation error: Invalid parameter '/labels' in body: not an array".into(),
        );
    };
    if items.len() > 30 {
        return Err(
            "Request validation error: Invalid parameter '/labels' in body: at most 30 labels"
                .into(),
        );
    }
    let mut out = Vec::new();
    for item in items {
        let Some(label) = item.as_str() else {
            return Err(
                "Request validation error: Invalid parameter '/labels' in body: labels are strings"
                    .into(),
            );
        };
        if !(2..=30).contains(&label.chars().count()) {
            return Err(format!(
                "Request validation error: Invalid parameter '/labels' in body: label '{label}' must have 2 to 30 characters"
            ));
        }
        out.push(label.to_owned());
    }
    Ok(out)
}

/// RFC 7396 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn crn(id: &str) -> String {
    format!(
        "crn:v1:bluemix:public:secrets-manager:{REGION}:a/{ACCOUNT_ID}:{INSTANCE_ID}:secret:{id}"
    )
}

/// The secret's JSON (`ArbitrarySecret` / `ArbitrarySecretMetadata`).
fn secret_doc(s: &Secret, with_payload: bool) -> Value {
    let state = if s.state == "active" { 1 } else { 5 };
    let mut d = json!({
        "created_by": s.created_by,
        "created_at": s.created_at,
        "crn": crn(&s.id),
        "custom_metadata": s.custom_metadata,
        "downloaded": s.downloaded,
        "id": s.id,
        "labels": s.labels,
        "locks_total": 0,
        "name": s.name,
        "secret_group_id": s.group_id,
        "secret_type": "arbitrary",
        "state": state,
        "state_description": s.state,
        "updated_at": s.updated_at,
        "versions_total": s.versions.len(),
    });
    if let Some(desc) = &s.description {
        d["description"] = json!(desc);
    }
    if with_payload
        && s.state == "active"
        && let Some(p) = s.payload()
    {
        d["payload"] = json!(p);
    }
    d
}

/// A version's JSON (`ArbitrarySecretVersion` / `...VersionMetadata`).
fn version_doc(s: &Secret, index: usize, with_payload: bool) -> Value {
    let v = &s.versions[index];
    let alias = if index + 1 == s.versions.len() {
        Some("current")
    } else if index + 2 == s.versions.len() {
        Some("previous")
    } else {
        None
    };
    let mut d = json!({
        "auto_rotated": false,
        "created_by": v.created_by,
        "created_at": v.created_at,
        "downloaded": false,
        "id": v.id,
        "secret_name": s.name,
        "secret_type": "arbitrary",
        "secret_group_id": s.group_id,
        "payload_available": s.state == "active",
        "version_custom_metadata": v.version_custom_metadata,
        "secret_id": s.id,
    });
    if let Some(a) = alias {
        d["alias"] = json!(a);
    }
    if with_payload && s.state == "active" {
        d["payload"] = json!(v.payload);
    }
    d
}

impl State {
    fn handle(&mut self, call: &Call<'_>) -> Answer {
        let segs: Vec<&str> = call.segments.iter().map(String::as_str).collect();
        let op = match (call.method, segs.as_slice()) {
            ("POST", ["identity", "token"]) => return self.token(call),
            ("GET", ["api", "v2", "secret_groups"]) => Op::ListSecretGroups,
            ("GET", ["api", "v2", "secret_groups", _]) => Op::GetSecretGroup,
            ("POST", ["api", "v2", "secrets"]) => Op::CreateSecret,
            ("GET", ["api", "v2", "secrets", _]) => Op::GetSecret,
            (
                "GET",
                [
                    "api",
                    "v2",
                    "secret_groups",
                    _,
                    "secret_types",
                    _,
                    "secrets",
                    _,
                ],
            ) => Op::GetSecretByNameType,
            ("GET", ["api", "v2", "secrets", _, "versions", _]) => Op::GetSecretVersion,
            ("GET", ["api", "v2", "secrets", _, "versions", _, "metadata"]) => {
                Op::GetSecretVersionMetadata
            }
            ("POST", ["api", "v2", "secrets", _, "versions"]) => Op::CreateSecretVersion,
            ("PATCH", ["api", "v2", "secrets", _, "metadata"]) => Op::UpdateSecretMetadata,
            _ => Op::Unknown,
        };
        // The bearer token first.
        let bearer = call.authorization.and_then(|a| a.strip_prefix("Bearer "));
        let caller = bearer.and_then(|t| {
            self.tokens
                .get(t)
                .filter(|tok| tok.expires > Instant::now())
                .map(|tok| (tok.iam_id.clone(), tok.role))
        });
        let Some((iam_id, role)) = caller else {
            let message = if bearer.is_none() {
                "Unauthorized: the request has no IAM bearer token."
            } else {
                "Unauthorized: the IAM token is not valid or has expired."
            };
            return sm_answer(op, 401, "unauthorized", message);
        };
        let mut answer = self.authorized(op, call, &segs, &iam_id, role);
        answer.identity = Some(iam_id);
        answer.authorized = true;
        answer
    }

    // -- IAM ----------------------------------------------------------------

    fn token(&mut self, call: &Call<'_>) -> Answer {
        let op = Op::Token;
        if let Some(fault) = self
            .faults
            .iter_mut()
            .find(|f| f.op == op && f.remaining > 0)
        {
            fault.remaining -= 1;
            let status = fault.status;
            return Answer::new(
                op,
                status,
                iam_error("BXNIM0500E", "Internal error (injected)."),
            );
        }
        let deny = |code: &str, message: &str| Answer::new(op, 400, iam_error(code, message));
        if !call
            .content_type
            .starts_with("application/x-www-form-urlencoded")
        {
            return deny(
                "BXNIM0109E",
                "Property missing or empty. The request must be application/x-www-form-urlencoded.",
            );
        }
        let f = form(&String::from_utf8_lossy(call.body));
        let (iam_id, role, grant) = match f.get("grant_type").map(String::as_str) {
            Some(GRANT_API_KEY) => {
                let Some(key) = f.get("apikey").filter(|k| !k.is_empty()) else {
                    return deny("BXNIM0109E", "Property missing or empty. Property: apikey");
                };
                let Some(k) = self.api_keys.get(key) else {
                    let mut a = deny("BXNIM0415E", "Provided API key could not be found.");
                    a.grant = Some("apikey");
                    return a;
                };
                (k.iam_id.clone(), k.role, "apikey")
            }
            Some(GRANT_CR_TOKEN) => {
                let Some(cr_token) = f.get("cr_token").filter(|k| !k.is_empty()) else {
                    return deny(
                        "BXNIM0109E",
                        "Property missing or empty. Property: cr_token",
                    );
                };
                let id = f.get("profile_id");
                let name = f.get("profile_name");
                if id.is_none() && name.is_none() {
                    return deny(
                        "BXNIM0109E",
                        "Property missing or empty. Property: profile_id or profile_name",
                    );
                }
                let Some(p) = self
                    .profiles
                    .iter()
                    .find(|p| id.is_none_or(|i| *i == p.id) && name.is_none_or(|n| *n == p.name))
                else {
                    let mut a = deny(
                        "BXNIM0486E",
                        "The trusted profile could not be found, or profile_id and profile_name name different profiles.",
                    );
                    a.grant = Some("cr-token");
                    return a;
                };
                if p.cr_token != *cr_token {
                    let mut a = deny(
                        "BXNIM0538E",
                        "The compute resource token is not valid, or no trust rule of the trusted profile matches it.",
                    );
                    a.grant = Some("cr-token");
                    a.identity = Some(p.id.clone());
                    return a;
                }
                (format!("iam-{}", p.id), p.role, "cr-token")
            }
            _ => {
                return deny(
                    "BXNIM0103E",
                    "Unsupported grant_type. Use urn:ibm:params:oauth:grant-type:apikey or urn:ibm:params:oauth:grant-type:cr-token.",
                );
            }
        };
        let token = format!(
            "eyJraWQiOiJmYWtlIn0.{}.{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let ttl = self.token_ttl;
        self.tokens.insert(
            token.clone(),
            Token {
                iam_id: iam_id.clone(),
                role,
                expires: Instant::now() + Duration::from_secs(ttl),
            },
        );
        self.issued += 1;
        let mut a = Answer::new(
            op,
            200,
            json!({
                "access_token": token,
                "refresh_token": "not_supported",
                "token_type": "Bearer",
                "expires_in": ttl,
                "expiration": unix_now() + ttl as i64,
                "scope": "ibm openid",
            }),
        );
        a.identity = Some(iam_id);
        a.grant = Some(grant);
        a
    }

    // -- Secrets Manager ----------------------------------------------------

    fn authorized(
        &mut self,
        op: Op,
        call: &Call<'_>,
        segs: &[&str],
        iam_id: &str,
        role: Role,
    ) -> Answer {
        if let Some(fault) = self
            .faults
            .iter_mut()
            .find(|f| f.op == op && f.remaining > 0)
        {
            fault.remaining -= 1;
            let status = fault.status;
            let (code, message) = match status {
                400 => ("bad_request", "Bad request (injected)."),
                401 => ("unauthorized", "Unauthorized (injected)."),
                403 => ("forbidden", "Forbidden (injected)."),
                404 => ("not_found", "Not found (injected)."),
                409 => ("conflict", "Conflict (injected)."),
                429 => (
                    "too_many_requests",
                    "Too many requests, retry later (injected).",
                ),
                500 => ("internal_server_error", "Internal server error (injected)."),
                503 => (
                    "service_unavailable",
                    "The service is unavailable (injected).",
                ),
                _ => ("error", "Injected error."),
            };
            return sm_answer(op, status, code, message);
        }
        let (allowed, action) = match op {
            Op::ListSecretGroups => (role.read_metadata, "secrets-manager.secret-groups.list"),
            Op::GetSecretGroup => (role.read_metadata, "secrets-manager.secret-group.read"),
            Op::GetSecretVersionMetadata => (
                role.read_metadata,
                "secrets-manager.secret-version-metadata.read",
            ),
            Op::GetSecret | Op::GetSecretByNameType | Op::GetSecretVersion => {
                (role.read_payload, "secrets-manager.secret.read")
            }
            Op::CreateSecret => (role.write, "secrets-manager.secret.create"),
            Op::CreateSecretVersion => (role.write, "secrets-manager.secret.rotate"),
            Op::UpdateSecretMetadata => (role.write, "secrets-manager.secret-metadata.update"),
            Op::Token | Op::Unknown => (true, ""),
        };
        if op == Op::Unknown {
            return sm_answer(
                op,
                404,
                "not_found",
                "The requested resource was not found.",
            );
        }
        if !allowed {
            return sm_answer(
                op,
                403,
                "forbidden",
                &format!(
                    "Forbidden: {iam_id} (service role {}) is not authorized to perform {action} on this instance.",
                    role.name
                ),
            );
        }
        if matches!(op, Op::CreateSecret | Op::CreateSecretVersion)
            && !call.content_type.starts_with("application/json")
        {
            return sm_answer(
                op,
                415,
                "unsupported_media_type",
                "The request must be application/json.",
            );
        }
        if op == Op::UpdateSecretMetadata
            && !call
                .content_type
                .starts_with("application/merge-patch+json")
        {
            return sm_answer(
                op,
                415,
                "unsupported_media_type",
                "The request must be application/merge-patch+json.",
            );
        }
        match (op, segs) {
            (Op::ListSecretGroups, _) => {
                let groups: Vec<Value> = self.groups.iter().map(group_doc).collect();
                Answer::new(
                    op,
                    200,
                    json!({ "secret_groups": groups, "total_count": groups.len() }),
                )
            }
            (Op::GetSecretGroup, [.., id]) => {
                if *id == DEFAULT_GROUP {
                    return Answer::new(
                        op,
                        200,
                        json!({"id": DEFAULT_GROUP, "name": DEFAULT_GROUP, "description": "The default secret group."}),
                    );
                }
                match self.groups.iter().find(|g| g.id == *id) {
                    Some(g) => Answer::new(op, 200, group_doc(g)),
                    None => sm_answer(op, 404, "not_found", "Secret group not found."),
                }
            }
            (Op::CreateSecret, _) => self.create_secret(call.body, iam_id),
            (Op::GetSecret, [.., id]) => match self.secrets.iter_mut().find(|s| s.id == *id) {
                Some(s) => {
                    s.downloaded = true;
                    Answer::new(op, 200, secret_doc(s, true))
                }
                None => sm_answer(op, 404, "not_found", "Secret not found."),
            },
            (Op::GetSecretByNameType, [_, _, _, group, _, kind, _, name]) => {
                let group_id = if *group == DEFAULT_GROUP {
                    Some(DEFAULT_GROUP.to_owned())
                } else {
                    self.groups
                        .iter()
                        .find(|g| g.name == *group)
                        .map(|g| g.id.clone())
                };
                let Some(group_id) = group_id else {
                    return sm_answer(op, 404, "not_found", "Secret group not found.");
                };
                if *kind != "arbitrary" {
                    return sm_answer(op, 404, "not_found", "Secret not found.");
                }
                match self
                    .secrets
                    .iter_mut()
                    .find(|s| s.group_id == group_id && s.name == *name)
                {
                    Some(s) => {
                        s.downloaded = true;
                        Answer::new(op, 200, secret_doc(s, true))
                    }
                    None => sm_answer(op, 404, "not_found", "Secret not found."),
                }
            }
            (Op::GetSecretVersion, [_, _, _, id, _, version])
            | (Op::GetSecretVersionMetadata, [_, _, _, id, _, version, _]) => {
                let Some(s) = self.secrets.iter().find(|s| s.id == *id) else {
                    return sm_answer(op, 404, "not_found", "Secret not found.");
                };
                let n = s.versions.len();
                let index = match *version {
                    "current" => n.checked_sub(1),
                    "previous" => n.checked_sub(2),
                    v => s.versions.iter().position(|x| x.id == v),
                };
                match index {
                    Some(i) => Answer::new(op, 200, version_doc(s, i, op == Op::GetSecretVersion)),
                    None => sm_answer(op, 404, "not_found", "Secret version not found."),
                }
            }
            (Op::CreateSecretVersion, [_, _, _, id, _]) => {
                self.create_version(id, call.body, iam_id)
            }
            (Op::UpdateSecretMetadata, [_, _, _, id, _]) => self.update_metadata(id, call.body),
            _ => sm_answer(
                op,
                404,
                "not_found",
                "The requested resource was not found.",
            ),
        }
    }

    fn create_secret(&mut self, body: &[u8], iam_id: &str) -> Answer {
        let op = Op::CreateSecret;
        let bad = |m: &str| sm_answer(op, 400, "bad_request", m);
        let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(body) else {
            return bad("Request validation error: the request body is not a JSON object.");
        };
        match doc.get("secret_type").and_then(Value::as_str) {
            Some("arbitrary") => {}
            Some(_) => {
                return bad(
                    "Request validation error: this instance (a fake) supports secret_type arbitrary only.",
                );
            }
            None => {
                return bad(
                    "Request validation error: Invalid parameter '/secret_type' in body: required",
                );
            }
        }
        let Some(name) = doc.get("name").and_then(Value::as_str) else {
            return bad("Request validation error: Invalid parameter '/name' in body: required");
        };
        if !valid_name(name) {
            return bad(&format!(
                "Request validation error: Invalid parameter '/name' in body: '{name}' does not match ^[A-Za-z0-9][A-Za-z0-9]*(?:_*-*\\.*[A-Za-z0-9]+)*$ or is not 2 to 256 characters"
            ));
        }
        let group_id = doc
            .get("secret_group_id")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_GROUP)
            .to_owned();
        if group_id != DEFAULT_GROUP && !self.groups.iter().any(|g| g.id == group_id) {
            return sm_answer(op, 404, "not_found", "Secret group not found.");
        }
        let Some(payload) = doc.get("payload").and_then(Value::as_str) else {
            return bad("Request validation error: Invalid parameter '/payload' in body: required");
        };
        if payload.is_empty() {
            return bad(
                "Request validation error: Invalid parameter '/payload' in body: must not be empty",
            );
        }
        let labels = match doc.get("labels") {
            None | Some(Value::Null) => Vec::new(),
            Some(l) => match check_labels(l) {
                Ok(l) => l,
                Err(m) => return bad(&m),
            },
        };
        let custom_metadata = match doc.get("custom_metadata") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => {
                return bad(
                    "Request validation error: Invalid parameter '/custom_metadata' in body: not an object",
                );
            }
        };
        let description = doc
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if description
            .as_ref()
            .is_some_and(|d| d.chars().count() > 1024)
        {
            return bad(
                "Request validation error: Invalid parameter '/description' in body: at most 1024 characters",
            );
        }
        if self
            .secrets
            .iter()
            .any(|s| s.group_id == group_id && s.name == name)
        {
            return sm_answer(
                op,
                409,
                "conflict",
                &format!(
                    "A secret with the name '{name}' and type 'arbitrary' already exists in secret group '{group_id}'."
                ),
            );
        }
        let now = timestamp();
        let secret = Secret {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_owned(),
            group_id,
            labels,
            custom_metadata,
            description,
            state: "active",
            created_by: iam_id.to_owned(),
            created_at: now.clone(),
            updated_at: now.clone(),
            downloaded: false,
            versions: vec![Version {
                id: uuid::Uuid::new_v4().to_string(),
                payload: payload.to_owned(),
                created_at: now,
                created_by: iam_id.to_owned(),
                version_custom_metadata: doc
                    .get("version_custom_metadata")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default(),
            }],
        };
        // As the SDKs' mock answers show it: the secret, payload included.
        let answer = Answer::new(op, 201, secret_doc(&secret, true));
        self.secrets.push(secret);
        answer
    }

    fn create_version(&mut self, id: &str, body: &[u8], iam_id: &str) -> Answer {
        let op = Op::CreateSecretVersion;
        let bad = |m: &str| sm_answer(op, 400, "bad_request", m);
        let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(body) else {
            return bad("Request validation error: the request body is not a JSON object.");
        };
        let Some(s) = self.secrets.iter_mut().find(|s| s.id == id) else {
            return sm_answer(op, 404, "not_found", "Secret not found.");
        };
        if s.state != "active" {
            return bad("The secret is destroyed: it takes no new versions.");
        }
        let Some(payload) = doc.get("payload").and_then(Value::as_str) else {
            return bad("Request validation error: Invalid parameter '/payload' in body: required");
        };
        if payload.is_empty() {
            return bad(
                "Request validation error: Invalid parameter '/payload' in body: must not be empty",
            );
        }
        match doc.get("custom_metadata") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => s.custom_metadata = m.clone(),
            Some(_) => {
                return bad(
                    "Request validation error: Invalid parameter '/custom_metadata' in body: not an object",
                );
            }
        }
        let now = timestamp();
        s.versions.push(Version {
            id: uuid::Uuid::new_v4().to_string(),
            payload: payload.to_owned(),
            created_at: now.clone(),
            created_by: iam_id.to_owned(),
            version_custom_metadata: doc
                .get("version_custom_metadata")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        });
        s.updated_at = now;
        let index = s.versions.len() - 1;
        Answer::new(op, 201, version_doc(s, index, false))
    }

    fn update_metadata(&mut self, id: &str, body: &[u8]) -> Answer {
        let op = Op::UpdateSecretMetadata;
        let bad = |m: &str| sm_answer(op, 400, "bad_request", m);
        let Ok(patch @ Value::Object(_)) = serde_json::from_slice::<Value>(body) else {
            return bad("Request validation error: the merge patch is not a JSON object.");
        };
        if let Some(k) = patch.as_object().unwrap().keys().find(|k| {
            ![
                "name",
                "description",
                "labels",
                "custom_metadata",
                "expiration_date",
            ]
            .contains(&k.as_str())
        }) {
            return bad(&format!(
                "Request validation error: Invalid parameter '/{k}' in body: not an updatable property"
            ));
        }
        let Some(index) = self.secrets.iter().position(|s| s.id == id) else {
            return sm_answer(op, 404, "not_found", "Secret not found.");
        };
        let s = &self.secrets[index];
        let mut current = json!({
            "name": s.name,
            "labels": s.labels,
            "custom_metadata": s.custom_metadata,
        });
        if let Some(d) = &s.description {
            current["description"] = json!(d);
        }
        merge(&mut current, &patch);
        let name = current
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if !valid_name(&name) {
            return bad("Request validation error: Invalid parameter '/name' in body");
        }
        if name != s.name
            && self
                .secrets
                .iter()
                .any(|o| o.group_id == s.group_id && o.name == name)
        {
            return sm_answer(
                op,
                409,
                "conflict",
                "A secret with this name already exists in the secret group.",
            );
        }
        let labels = match current.get("labels") {
            None | Some(Value::Null) => Vec::new(),
            Some(l) => match check_labels(l) {
                Ok(l) => l,
                Err(m) => return bad(&m),
            },
        };
        let custom_metadata = match current.get("custom_metadata") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        let description = current
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if description
            .as_ref()
            .is_some_and(|d| d.chars().count() > 1024)
        {
            return bad(
                "Request validation error: Invalid parameter '/description' in body: at most 1024 characters",
            );
        }
        let s = &mut self.secrets[index];
        s.name = name;
        s.labels = labels;
        s.custom_metadata = custom_metadata;
        s.description = description;
        s.updated_at = timestamp();
        Answer::new(op, 200, secret_doc(s, false))
    }
}

fn group_doc(g: &Group) -> Value {
    json!({
        "id": g.id,
        "name": g.name,
        "description": g.description,
        "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-01-01T00:00:00Z",
    })
}
