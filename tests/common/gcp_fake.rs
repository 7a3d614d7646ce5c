//! A fake of the Google Cloud Secret Manager v1 REST API, written from the
//! public API reference (no emulator exists): an in-process HTTP/1 server
//! (hyper on its own tokio runtime and thread) on a free loopback port,
//! stopped when dropped.
//!
//! It serves the calls the official Rust client makes, with the REST
//! mapping it uses (`POST /v1/projects/P/secrets?secretId=ID`,
//! `POST /v1/{secret}:addVersion`, `GET /v1/{secret}`,
//! `PATCH /v1/{secret}?updateMask=labels,annotations`,
//! `GET /v1/{secret}/versions/{v}:access`, plus list, get version,
//! disable/enable/destroy version and delete), camelCase JSON, base64
//! payloads with `dataCrc32c` (an int64 as a string; verified), enums as
//! numbers when asked with `$alt=json;enum-encoding=int`, resource names
//! with the project **number** as GCP returns them, versions numbered
//! 1, 2, ..., `latest` being the newest version whatever its state.
//!
//! Validation follows the reference: secret ids `[A-Za-z0-9_-]{1,255}`,
//! label keys/values (lowercase letters, digits, `_`, `-`, 63 characters,
//! keys starting with a letter, at most 64 labels), annotation keys and
//! their 16 KiB total, a required replication policy, payloads of at most
//! 64 KiB. Errors are GCP's JSON shape with its HTTP statuses:
//! `{"error": {"code": 409, "message": "...", "status": "ALREADY_EXISTS"}}`
//! (404 NOT_FOUND, 403 PERMISSION_DENIED, 400 INVALID_ARGUMENT and
//! FAILED_PRECONDITION, 401 UNAUTHENTICATED, 429 RESOURCE_EXHAUSTED,
//! 503 UNAVAILABLE, ...).
//!
//! Test controls: fault injection (the next N calls of a method get a
//! status), an optional service-account requirement (a self-signed RS256
//! JWT whose signature is checked, as Google accepts from service account
//! keys), a request log (method and path only, never bodies), and direct
//! access to the stored state. Stored values are `SecretValue`s, whose
//! `Debug` never shows them.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use secret_santa::secret::SecretValue;
use serde_json::{Map, Value, json};

/// The project number resource names carry (GCP answers with numbers, even
/// when called with the project id).
pub const PROJECT_NUMBER: &str = "123456789012";
const MAX_PAYLOAD_BYTES: usize = 65_536;
const MAX_ANNOTATION_BYTES: usize = 16 * 1024;
const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionState {
    Enabled,
    Disabled,
    Destroyed,
}

impl VersionState {
    fn number(self) -> i64 {
        match self {
            VersionState::Enabled => 1,
            VersionState::Disabled => 2,
            VersionState::Destroyed => 3,
        }
    }

    fn name(self) -> &'static str {
        match self {
            VersionState::Enabled => "ENABLED",
            VersionState::Disabled => "DISABLED",
            VersionState::Destroyed => "DESTROYED",
        }
    }
}

/// A secret as stored, for assertions.
#[derive(Clone, Debug)]
pub struct SecretView {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The replication policy as sent (camelCase JSON).
    pub replication: Value,
    pub versions: Vec<VersionView>,
}

impl SecretView {
    /// The newest version, whatever its state.
    pub fn latest(&self) -> Option<&VersionView> {
        self.versions.last()
    }
}

#[derive(Clone, Debug)]
pub struct VersionView {
    pub number: usize,
    pub state: VersionState,
    pub data: SecretValue,
    /// The client sent a `dataCrc32c` (and it matched).
    pub client_checksum: bool,
}

/// One request as logged: the RPC it was routed to and its request line
/// (method, path and query; never the body).
#[derive(Clone, Debug)]
pub struct Logged {
    pub rpc: String,
    pub line: String,
}

struct StoredSecret {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    replication: Value,
    create_time: String,
    etag: String,
    versions: Vec<StoredVersion>,
}

struct StoredVersion {
    data: SecretValue,
    state: VersionState,
    create_time: String,
    client_checksum: bool,
}

struct Fault {
    rpc: String,
    status: String,
    remaining: usize,
}

struct RequiredAuth {
    client_email: String,
    /// RSAPublicKey (PKCS#1) or SubjectPublicKeyInfo DER.
    public_key: Vec<u8>,
}

#[derive(Default)]
struct State {
    project: String,
    secrets: BTreeMap<String, StoredSecret>,
    faults: Vec<Fault>,
    log: Vec<Logged>,
    auth: Option<RequiredAuth>,
    etags: u64,
}

pub struct GcpFake {
    pub port: u16,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub project: String,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GcpFake {
    /// Starts the fake for `project` (a project id; its number is
    /// [`PROJECT_NUMBER`]). Requests without credentials are accepted until
    /// [`GcpFake::require_service_account`].
    pub fn start(project: &str) -> GcpFake {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            project: project.to_owned(),
            ..Default::default()
        }));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let shared = state.clone();
        let thread = std::thread::Builder::new()
            .name("gcp-fake".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(accept_loop(listener, shared, stop_rx));
            })
            .unwrap();
        GcpFake {
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            project: project.to_owned(),
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// The next `times` calls of `rpc` (`CreateSecret`, `AddSecretVersion`,
    /// `GetSecret`, `UpdateSecret`, `AccessSecretVersion`, ...) are answered
    /// with the error `status` (`PERMISSION_DENIED`, `UNAVAILABLE`, ...).
    pub fn fail(&self, rpc: &str, status: &str, times: usize) {
        assert!(status_codes(status).is_some(), "unknown status {status}");
        self.lock().faults.push(Fault {
            rpc: rpc.to_owned(),
            status: status.to_owned(),
            remaining: times,
        });
    }

    /// Injected errors not yet served.
    pub fn pending(&self) -> usize {
        self.lock().faults.iter().map(|f| f.remaining).sum()
    }

    /// From now on every request must carry `Authorization: Bearer <JWT>`,
    /// a self-signed RS256 JWT of the service account `client_email` (with
    /// the cloud-platform scope, not expired) whose signature verifies with
    /// `public_key` (DER); otherwise 401 UNAUTHENTICATED.
    pub fn require_service_account(&self, client_email: &str, public_key: &[u8]) {
        self.lock().auth = Some(RequiredAuth {
            client_email: client_email.to_owned(),
            public_key: public_key.to_vec(),
        });
    }

    /// Every request so far, in order.
    pub fn log(&self) -> Vec<Logged> {
        self.lock().log.clone()
    }

    /// The RPC names of the requests so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.lock().log.iter().map(|l| l.rpc.clone()).collect()
    }

    /// How many requests went to `rpc`.
    pub fn count(&self, rpc: &str) -> usize {
        self.lock().log.iter().filter(|l| l.rpc == rpc).count()
    }

    pub fn clear_log(&self) {
        self.lock().log.clear();
    }

    /// A stored secret by id.
    pub fn secret(&self, id: &str) -> Option<SecretView> {
        let state = self.lock();
        let s = state.secrets.get(id)?;
        Some(SecretView {
            labels: s.labels.clone(),
            annotations: s.annotations.clone(),
            replication: s.replication.clone(),
            versions: s
                .versions
                .iter()
                .enumerate()
                .map(|(i, v)| VersionView {
                    number: i + 1,
                    state: v.state,
                    data: v.data.clone(),
                    client_checksum: v.client_checksum,
                })
                .collect(),
        })
    }

    pub fn secret_ids(&self) -> Vec<String> {
        self.lock().secrets.keys().cloned().collect()
    }

    /// Creates a secret directly (automatic replication, no version), as
    /// another tool or a crashed writer would have left it.
    pub fn insert_secret(&self, id: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]) {
        let mut state = self.lock();
        let etag = state.next_etag();
        state.secrets.insert(
            id.to_owned(),
            StoredSecret {
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                annotations: annotations
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                replication: json!({"automatic": {}}),
                create_time: now_rfc3339(),
                etag,
                versions: Vec::new(),
            },
        );
    }

    /// Adds an enabled version directly; its number.
    pub fn add_version(&self, id: &str, data: &[u8]) -> usize {
        let mut state = self.lock();
        let secret = state.secrets.get_mut(id).expect("the secret exists");
        secret.versions.push(StoredVersion {
            data: SecretValue::new(data.to_vec()),
            state: VersionState::Enabled,
            create_time: now_rfc3339(),
            client_checksum: false,
        });
        secret.versions.len()
    }

    /// Sets a label directly (an admin labelling the secret in the console).
    pub fn set_label(&self, id: &str, key: &str, value: &str) {
        let mut state = self.lock();
        let secret = state.secrets.get_mut(id).expect("the secret exists");
        secret.labels.insert(key.to_owned(), value.to_owned());
    }

    /// Disables, enables or destroys a version directly.
    pub fn set_version_state(&self, id: &str, number: usize, state: VersionState) {
        let mut guard = self.lock();
        let version = guard
            .secrets
            .get_mut(id)
            .and_then(|s| s.versions.get_mut(number - 1))
            .expect("the version exists");
        version.state = state;
        if state == VersionState::Destroyed {
            version.data = SecretValue::new(Vec::new());
        }
    }

    /// A raw HTTP/1.1 request (one connection, `Connection: close`), for
    /// tests of the fake itself: the status and the JSON answer.
    pub fn raw(&self, method: &str, path_and_query: &str, body: Option<&Value>) -> (u16, Value) {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let body = body.map(Value::to_string).unwrap_or_default();
        write!(
            stream,
            "{method} {path_and_query} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        let split = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("an HTTP answer");
        let head = String::from_utf8_lossy(&answer[..split]).into_owned();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let json = serde_json::from_slice(&answer[split + 4..]).unwrap_or(Value::Null);
        (status, json)
    }
}

impl Drop for GcpFake {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

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

async fn serve(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let authorization = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let (status, answer) =
        state
            .lock()
            .unwrap()
            .handle(&method, &path, &query, authorization.as_deref(), &body);
    let response = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(
            hyper::header::CONTENT_TYPE,
            "application/json; charset=UTF-8",
        )
        .body(Full::new(Bytes::from(answer.to_string())))
        .unwrap();
    Ok(response)
}

type Answer = (u16, Value);

/// HTTP status and gRPC code number of a status name.
fn status_codes(status: &str) -> Option<(u16, i32)> {
    Some(match status {
        "CANCELLED" => (499, 1),
        "UNKNOWN" => (500, 2),
        "INVALID_ARGUMENT" => (400, 3),
        "DEADLINE_EXCEEDED" => (504, 4),
        "NOT_FOUND" => (404, 5),
        "ALREADY_EXISTS" => (409, 6),
        "PERMISSION_DENIED" => (403, 7),
        "RESOURCE_EXHAUSTED" => (429, 8),
        "FAILED_PRECONDITION" => (400, 9),
        "ABORTED" => (409, 10),
        "OUT_OF_RANGE" => (400, 11),
        "UNIMPLEMENTED" => (501, 12),
        "INTERNAL" => (500, 13),
        "UNAVAILABLE" => (503, 14),
        "DATA_LOSS" => (500, 15),
        "UNAUTHENTICATED" => (401, 16),
        _ => return None,
    })
}

/// GCP's REST error body: `code` is the HTTP status.
fn error(status: &str, message: impl Into<String>) -> Answer {
    let (http, _) = status_codes(status).unwrap_or((500, 2));
    (
        http,
        json!({"error": {"code": http, "message": message.into(), "status": status}}),
    )
}

fn invalid(message: impl Into<String>) -> Answer {
    error("INVALID_ARGUMENT", message)
}

/// `PERMISSION_DENIED` as IAM sends it, with its ErrorInfo detail.
fn permission_denied(permission: &str, resource: &str) -> Answer {
    let http: u16 = 403;
    (
        http,
        json!({"error": {
            "code": http,
            "message": format!("Permission '{permission}' denied for resource '{resource}' (or it may not exist)."),
            "status": "PERMISSION_DENIED",
            "details": [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "IAM_PERMISSION_DENIED",
                "domain": "iam.googleapis.com",
                "metadata": {"permission": permission, "resource": resource}
            }]
        }}),
    )
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

/// A request routed to an RPC.
struct Route {
    rpc: &'static str,
    project: String,
    secret: Option<String>,
    version: Option<String>,
}

impl Route {
    /// The IAM permission the RPC needs.
    fn permission(&self) -> &'static str {
        match self.rpc {
            "ListSecrets" => "secretmanager.secrets.list",
            "CreateSecret" => "secretmanager.secrets.create",
            "GetSecret" => "secretmanager.secrets.get",
            "UpdateSecret" => "secretmanager.secrets.update",
            "DeleteSecret" => "secretmanager.secrets.delete",
            "AddSecretVersion" => "secretmanager.versions.add",
            "GetSecretVersion" => "secretmanager.versions.get",
            "AccessSecretVersion" => "secretmanager.versions.access",
            "DisableSecretVersion" => "secretmanager.versions.disable",
            "EnableSecretVersion" => "secretmanager.versions.enable",
            "DestroySecretVersion" => "secretmanager.versions.destroy",
            _ => "secretmanager.secrets.get",
        }
    }

    /// The resource as the caller named it.
    fn resource(&self) -> String {
        match (&self.secret, &self.version) {
            (Some(s), Some(v)) => format!("projects/{}/secrets/{s}/versions/{v}", self.project),
            (Some(s), None) => format!("projects/{}/secrets/{s}", self.project),
            _ => format!("projects/{}", self.project),
        }
    }
}

fn route(method: &Method, path: &str) -> Option<Route> {
    let rest = percent_decode(path.strip_prefix("/v1/")?);
    // A custom verb (`:addVersion`, `:access`) ends the last segment.
    let (base, verb) = match rest.rsplit_once('/') {
        Some((head, last)) => match last.split_once(':') {
            Some((last, verb)) => (format!("{head}/{last}"), Some(verb.to_owned())),
            None => (rest.clone(), None),
        },
        None => (rest.clone(), None),
    };
    let segments: Vec<&str> = base.split('/').collect();
    let (rpc, secret, version) = match (segments.as_slice(), verb.as_deref()) {
        (["projects", _, "secrets"], None) if *method == Method::GET => ("ListSecrets", None, None),
        (["projects", _, "secrets"], None) if *method == Method::POST => {
            ("CreateSecret", None, None)
        }
        (["projects", _, "secrets", s], None) if *method == Method::GET => {
            ("GetSecret", Some(*s), None)
        }
        (["projects", _, "secrets", s], None) if *method == Method::PATCH => {
            ("UpdateSecret", Some(*s), None)
        }
        (["projects", _, "secrets", s], None) if *method == Method::DELETE => {
            ("DeleteSecret", Some(*s), None)
        }
        (["projects", _, "secrets", s], Some("addVersion")) if *method == Method::POST => {
            ("AddSecretVersion", Some(*s), None)
        }
        (["projects", _, "secrets", s, "versions", v], None) if *method == Method::GET => {
            ("GetSecretVersion", Some(*s), Some(*v))
        }
        (["projects", _, "secrets", s, "versions", v], Some("access"))
            if *method == Method::GET =>
        {
            ("AccessSecretVersion", Some(*s), Some(*v))
        }
        (["projects", _, "secrets", s, "versions", v], Some("disable"))
            if *method == Method::POST =>
        {
            ("DisableSecretVersion", Some(*s), Some(*v))
        }
        (["projects", _, "secrets", s, "versions", v], Some("enable"))
            if *method == Method::POST =>
        {
            ("EnableSecretVersion", Some(*s), Some(*v))
        }
        (["projects", _, "secrets", s, "versions", v], Some("destroy"))
            if *method == Method::POST =>
        {
            ("DestroySecretVersion", Some(*s), Some(*v))
        }
        _ => return None,
    };
    Some(Route {
        rpc,
        project: segments.get(1).map(|p| (*p).to_owned()).unwrap_or_default(),
        secret: secret.map(str::to_owned),
        version: version.map(str::to_owned),
    })
}

impl State {
    fn next_etag(&mut self) -> String {
        self.etags += 1;
        format!("\"{:016x}\"", 0x5ec0_0000_0000_0000u64 + self.etags)
    }

    fn secret_name(id: &str) -> String {
        format!("projects/{PROJECT_NUMBER}/secrets/{id}")
    }

    fn handle(
        &mut self,
        method: &Method,
        path: &str,
        query: &str,
        authorization: Option<&str>,
        body: &[u8],
    ) -> Answer {
        let line = if query.is_empty() {
            format!("{method} {path}")
        } else {
            format!("{method} {path}?{query}")
        };
        let Some(route) = route(method, path) else {
            self.log.push(Logged {
                rpc: "Unknown".into(),
                line,
            });
            return error(
                "UNIMPLEMENTED",
                format!("the fake does not implement {method} {path}"),
            );
        };
        self.log.push(Logged {
            rpc: route.rpc.to_owned(),
            line,
        });
        if let Some(required) = &self.auth
            && let Err(answer) = check_auth(required, authorization)
        {
            return answer;
        }
        if route.project != self.project && route.project != PROJECT_NUMBER {
            return permission_denied(route.permission(), &route.resource());
        }
        if let Some(fault) = self
            .faults
            .iter_mut()
            .find(|f| f.remaining > 0 && f.rpc == route.rpc)
        {
            fault.remaining -= 1;
            let status = fault.status.clone();
            return injected(&status, &route);
        }
        let query = parse_query(query);
        let int_enums = query
            .get("$alt")
            .is_some_and(|alt| alt.contains("enum-encoding=int"));
        let body: Value = if body.is_empty() {
            Value::Object(Map::new())
        } else {
            match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return invalid(format!("Invalid JSON payload received. {e}")),
            }
        };
        let secret = route.secret.as_deref().unwrap_or_default();
        let version = route.version.as_deref().unwrap_or_default();
        match route.rpc {
            "ListSecrets" => self.list_secrets(),
            "CreateSecret" => self.create_secret(&query, &body),
            "GetSecret" => self.get_secret(secret),
            "UpdateSecret" => self.update_secret(secret, &query, &body),
            "DeleteSecret" => self.delete_secret(secret),
            "AddSecretVersion" => self.add_secret_version(secret, &body, int_enums),
            "GetSecretVersion" => self.get_secret_version(secret, version, int_enums),
            "AccessSecretVersion" => self.access_secret_version(secret, version),
            "DisableSecretVersion" => {
                self.set_state(secret, version, VersionState::Disabled, int_enums)
            }
            "EnableSecretVersion" => {
                self.set_state(secret, version, VersionState::Enabled, int_enums)
            }
            "DestroySecretVersion" => {
                self.set_state(secret, version, VersionState::Destroyed, int_enums)
            }
            _ => error("UNIMPLEMENTED", "not implemented"),
        }
    }

    fn secret_json(id: &str, s: &StoredSecret) -> Value {
        let mut out = json!({
            "name": Self::secret_name(id),
            "replication": s.replication,
            "createTime": s.create_time,
            "etag": s.etag,
        });
        if !s.labels.is_empty() {
            out["labels"] = json!(s.labels);
        }
        if !s.annotations.is_empty() {
            out["annotations"] = json!(s.annotations);
        }
        out
    }

    fn version_json(id: &str, number: usize, v: &StoredVersion, int_enums: bool) -> Value {
        let state = if int_enums {
            json!(v.state.number())
        } else {
            json!(v.state.name())
        };
        json!({
            "name": format!("{}/versions/{number}", Self::secret_name(id)),
            "createTime": v.create_time,
            "state": state,
            "etag": format!("\"{:016x}\"", number),
            "clientSpecifiedPayloadChecksum": v.client_checksum,
        })
    }

    fn not_found(id: &str) -> Answer {
        error(
            "NOT_FOUND",
            format!("Secret [{}] not found.", Self::secret_name(id)),
        )
    }

    fn list_secrets(&self) -> Answer {
        let secrets: Vec<Value> = self
            .secrets
            .iter()
            .map(|(id, s)| Self::secret_json(id, s))
            .collect();
        if secrets.is_empty() {
            return (200, json!({}));
        }
        let total = secrets.len();
        (200, json!({"secrets": secrets, "totalSize": total}))
    }

    fn create_secret(&mut self, query: &BTreeMap<String, String>, body: &Value) -> Answer {
        let id = query.get("secretId").cloned().unwrap_or_default();
        let id_ok = (1..=255).contains(&id.len())
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !id_ok {
            return invalid(format!(
                "Secret ID [{id}] must be 1-255 characters and contain only letters, numerals, underscores, and hyphens."
            ));
        }
        let replication = match check_replication(body.get("replication")) {
            Ok(r) => r,
            Err(answer) => return answer,
        };
        let labels = match check_labels(body.get("labels")) {
            Ok(l) => l,
            Err(answer) => return answer,
        };
        let annotations = match check_annotations(body.get("annotations")) {
            Ok(a) => a,
            Err(answer) => return answer,
        };
        if self.secrets.contains_key(&id) {
            return error(
                "ALREADY_EXISTS",
                format!("Secret [{}] already exists.", Self::secret_name(&id)),
            );
        }
        let etag = self.next_etag();
        let stored = StoredSecret {
            labels,
            annotations,
            replication,
            create_time: now_rfc3339(),
            etag,
            versions: Vec::new(),
        };
        let answer = Self::secret_json(&id, &stored);
        self.secrets.insert(id, stored);
        (200, answer)
    }

    fn get_secret(&self, id: &str) -> Answer {
        match self.secrets.get(id) {
            Some(s) => (200, Self::secret_json(id, s)),
            None => Self::not_found(id),
        }
    }

    fn update_secret(
        &mut self,
        id: &str,
        query: &BTreeMap<String, String>,
        body: &Value,
    ) -> Answer {
        let mask = query.get("updateMask").cloned().unwrap_or_default();
        let paths: Vec<&str> = mask
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        if paths.is_empty() {
            return invalid("update_mask must be set and name at least one field.");
        }
        if let Some(p) = paths
            .iter()
            .find(|p| !["labels", "annotations"].contains(p))
        {
            return invalid(format!("Invalid update_mask path: {p}"));
        }
        let labels = if paths.contains(&"labels") {
            match check_labels(body.get("labels")) {
                Ok(l) => Some(l),
                Err(answer) => return answer,
            }
        } else {
            None
        };
        let annotations = if paths.contains(&"annotations") {
            match check_annotations(body.get("annotations")) {
                Ok(a) => Some(a),
                Err(answer) => return answer,
            }
        } else {
            None
        };
        let etag = self.next_etag();
        let Some(secret) = self.secrets.get_mut(id) else {
            return Self::not_found(id);
        };
        if let Some(given) = body.get("etag").and_then(Value::as_str)
            && !given.is_empty()
            && given != secret.etag
        {
            return error(
                "ABORTED",
                "The etag provided in the request does not match the current etag of the secret.",
            );
        }
        if let Some(labels) = labels {
            secret.labels = labels;
        }
        if let Some(annotations) = annotations {
            secret.annotations = annotations;
        }
        secret.etag = etag;
        (200, Self::secret_json(id, secret))
    }

    fn delete_secret(&mut self, id: &str) -> Answer {
        match self.secrets.remove(id) {
            Some(_) => (200, json!({})),
            None => Self::not_found(id),
        }
    }

    fn add_secret_version(&mut self, id: &str, body: &Value, int_enums: bool) -> Answer {
        let Some(secret) = self.secrets.get_mut(id) else {
            return Self::not_found(id);
        };
        let Some(payload) = body.get("payload").filter(|p| p.is_object()) else {
            return invalid("Secret payload is required.");
        };
        let data = match payload.get("data") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(b64)) => match base64::engine::general_purpose::STANDARD.decode(b64)
            {
                Ok(d) => d,
                Err(_) => {
                    return invalid("Invalid value at 'payload.data' (TYPE_BYTES): not base64.");
                }
            },
            Some(_) => return invalid("Invalid value at 'payload.data' (TYPE_BYTES)."),
        };
        let data = SecretValue::new(data);
        if data.len() > MAX_PAYLOAD_BYTES {
            return invalid(format!(
                "Secret Version payload data must be no larger than {MAX_PAYLOAD_BYTES} bytes."
            ));
        }
        let checksum = match payload.get("dataCrc32c") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => match s.parse::<i64>() {
                Ok(n) => Some(n),
                Err(_) => return invalid("Invalid value at 'payload.data_crc32c' (TYPE_INT64)."),
            },
            Some(Value::Number(n)) => match n.as_i64() {
                Some(n) => Some(n),
                None => return invalid("Invalid value at 'payload.data_crc32c' (TYPE_INT64)."),
            },
            Some(_) => return invalid("Invalid value at 'payload.data_crc32c' (TYPE_INT64)."),
        };
        if let Some(expected) = checksum
            && expected != i64::from(crc32c(data.expose()))
        {
            return invalid(
                "Checksum mismatch: the CRC32C of the payload data does not match data_crc32c.",
            );
        }
        secret.versions.push(StoredVersion {
            data,
            state: VersionState::Enabled,
            create_time: now_rfc3339(),
            client_checksum: checksum.is_some(),
        });
        let number = secret.versions.len();
        let answer = Self::version_json(id, number, &secret.versions[number - 1], int_enums);
        (200, answer)
    }

    /// `latest` (the newest version, whatever its state) or a number.
    fn resolve(&self, id: &str, version: &str) -> Result<usize, Answer> {
        let Some(secret) = self.secrets.get(id) else {
            return Err(if version == "latest" {
                error(
                    "NOT_FOUND",
                    format!(
                        "Secret [{}] not found or has no versions.",
                        Self::secret_name(id)
                    ),
                )
            } else {
                Self::not_found(id)
            });
        };
        let version_missing = || {
            error(
                "NOT_FOUND",
                format!(
                    "Secret Version [{}/versions/{version}] not found.",
                    Self::secret_name(id)
                ),
            )
        };
        if version == "latest" {
            if secret.versions.is_empty() {
                return Err(error(
                    "NOT_FOUND",
                    format!(
                        "Secret [{}] not found or has no versions.",
                        Self::secret_name(id)
                    ),
                ));
            }
            return Ok(secret.versions.len());
        }
        match version.parse::<usize>() {
            Ok(n) if n >= 1 && n <= secret.versions.len() => Ok(n),
            _ => Err(version_missing()),
        }
    }

    fn get_secret_version(&self, id: &str, version: &str, int_enums: bool) -> Answer {
        match self.resolve(id, version) {
            Ok(n) => (
                200,
                Self::version_json(id, n, &self.secrets[id].versions[n - 1], int_enums),
            ),
            Err(answer) => answer,
        }
    }

    fn access_secret_version(&self, id: &str, version: &str) -> Answer {
        let n = match self.resolve(id, version) {
            Ok(n) => n,
            Err(answer) => return answer,
        };
        let v = &self.secrets[id].versions[n - 1];
        if v.state != VersionState::Enabled {
            return error(
                "FAILED_PRECONDITION",
                format!(
                    "Secret Version [{}/versions/{n}] is in {} state.",
                    Self::secret_name(id),
                    v.state.name()
                ),
            );
        }
        let mut payload = json!({"dataCrc32c": crc32c(v.data.expose()).to_string()});
        if !v.data.is_empty() {
            payload["data"] =
                json!(base64::engine::general_purpose::STANDARD.encode(v.data.expose()));
        }
        (
            200,
            json!({
                "name": format!("{}/versions/{n}", Self::secret_name(id)),
                "payload": payload,
            }),
        )
    }

    fn set_state(
        &mut self,
        id: &str,
        version: &str,
        state: VersionState,
        int_enums: bool,
    ) -> Answer {
        let n = match self.resolve(id, version) {
            Ok(n) => n,
            Err(answer) => return answer,
        };
        let Some(v) = self.secrets.get_mut(id).map(|s| &mut s.versions[n - 1]) else {
            return Self::not_found(id);
        };
        if v.state == VersionState::Destroyed && state != VersionState::Destroyed {
            return error(
                "FAILED_PRECONDITION",
                format!(
                    "Secret Version [{}/versions/{n}] is in DESTROYED state.",
                    Self::secret_name(id)
                ),
            );
        }
        v.state = state;
        if state == VersionState::Destroyed {
            v.data = SecretValue::new(Vec::new());
        }
        let answer = Self::version_json(id, n, v, int_enums);
        (200, answer)
    }
}

fn injected(status: &str, route: &Route) -> Answer {
    match status {
        "PERMISSION_DENIED" => permission_denied(route.permission(), &route.resource()),
        "RESOURCE_EXHAUSTED" => error(
            status,
            format!(
                "Quota exceeded for quota metric 'Access requests' and limit 'Access requests per minute per project' \
                 of service 'secretmanager.googleapis.com' for consumer 'project_number:{PROJECT_NUMBER}'."
            ),
        ),
        "UNAVAILABLE" => error(status, "The service is currently unavailable."),
        "UNAUTHENTICATED" => error(
            status,
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
        ),
        _ => error(
            status,
            format!("{} failed: injected by the test fake", route.rpc),
        ),
    }
}

/// A self-signed service account JWT, as Google accepts them.
fn check_auth(required: &RequiredAuth, authorization: Option<&str>) -> Result<(), Answer> {
    let Some(token) = authorization.and_then(|h| h.strip_prefix("Bearer ")) else {
        return Err(error(
            "UNAUTHENTICATED",
            "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
        ));
    };
    let rejected = || {
        error(
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
        )
    };
    let parts: Vec<&str> = token.split('.').collect();
    let [header, claims, signature] = parts.as_slice() else {
        return Err(rejected());
    };
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let decode_json =
        |part: &str| -> Option<Value> { serde_json::from_slice(&b64.decode(part).ok()?).ok() };
    let (header, claims, signature) = (*header, *claims, *signature);
    let (Some(header_json), Some(claims_json), Ok(signature)) = (
        decode_json(header),
        decode_json(claims),
        b64.decode(signature),
    ) else {
        return Err(rejected());
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims_ok = header_json["alg"] == "RS256"
        && claims_json["iss"] == required.client_email.as_str()
        && claims_json["sub"] == required.client_email.as_str()
        && claims_json["scope"]
            .as_str()
            .is_some_and(|s| s.split(' ').any(|s| s == CLOUD_PLATFORM_SCOPE))
        && claims_json["exp"].as_i64().is_some_and(|exp| exp > now);
    let signed = format!("{header}.{claims}");
    let signature_ok = aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
        &required.public_key,
    )
    .verify(signed.as_bytes(), &signature)
    .is_ok();
    if claims_ok && signature_ok {
        Ok(())
    } else {
        Err(rejected())
    }
}

fn check_replication(replication: Option<&Value>) -> Result<Value, Answer> {
    let Some(r) = replication.and_then(Value::as_object) else {
        return Err(invalid("Secret.replication is required."));
    };
    match (r.get("automatic"), r.get("userManaged")) {
        (Some(a), None) if a.is_object() => Ok(Value::Object(r.clone())),
        (None, Some(u)) => {
            let replicas = u
                .get("replicas")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if replicas.is_empty() {
                return Err(invalid(
                    "Secret.replication.user_managed.replicas must contain at least one replica.",
                ));
            }
            let mut seen = Vec::new();
            for replica in &replicas {
                let location = replica
                    .get("location")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if location.is_empty() {
                    return Err(invalid(
                        "Secret.replication.user_managed.replicas.location is required.",
                    ));
                }
                if seen.contains(&location) {
                    return Err(invalid(format!(
                        "Secret.replication.user_managed.replicas has location {location} twice."
                    )));
                }
                seen.push(location);
            }
            Ok(Value::Object(r.clone()))
        }
        _ => Err(invalid(
            "Secret.replication must set exactly one of automatic or user_managed.",
        )),
    }
}

/// `\p{Ll}`, `\p{Lo}` (approximated: letters without case), `\p{N}`, `_`, `-`.
fn label_char(c: char) -> bool {
    c.is_lowercase()
        || (c.is_alphabetic() && !c.is_uppercase() && !c.is_lowercase())
        || c.is_numeric()
        || c == '_'
        || c == '-'
}

fn check_labels(labels: Option<&Value>) -> Result<BTreeMap<String, String>, Answer> {
    let Some(labels) = labels else {
        return Ok(BTreeMap::new());
    };
    let Some(labels) = labels.as_object() else {
        return Err(invalid("Invalid value at 'secret.labels'."));
    };
    if labels.len() > 64 {
        return Err(invalid(format!(
            "Too many labels: {}; at most 64 labels can be assigned to a secret.",
            labels.len()
        )));
    }
    let mut out = BTreeMap::new();
    for (k, v) in labels {
        let Some(v) = v.as_str() else {
            return Err(invalid(format!("Invalid value at 'secret.labels[{k}]'.")));
        };
        let key_ok = (1..=63).contains(&k.chars().count())
            && k.len() <= 128
            && k.chars()
                .next()
                .is_some_and(|c| c.is_lowercase() || (c.is_alphabetic() && !c.is_uppercase()))
            && k.chars().all(label_char);
        if !key_ok {
            return Err(invalid(format!(
                "Label key '{k}' violates format constraints. The key must start with a lowercase character, \
                 can only contain lowercase letters, numeric characters, underscores and dashes, and must be at most \
                 63 characters long. International characters are allowed."
            )));
        }
        let value_ok = v.chars().count() <= 63 && v.len() <= 128 && v.chars().all(label_char);
        if !value_ok {
            return Err(invalid(format!(
                "Label value '{v}' violates format constraints. The value can only contain lowercase letters, \
                 numeric characters, underscores and dashes. The value can be at most 63 characters long. \
                 International characters are allowed."
            )));
        }
        out.insert(k.clone(), v.to_owned());
    }
    Ok(out)
}

fn check_annotations(annotations: Option<&Value>) -> Result<BTreeMap<String, String>, Answer> {
    let Some(annotations) = annotations else {
        return Ok(BTreeMap::new());
    };
    let Some(annotations) = annotations.as_object() else {
        return Err(invalid("Invalid value at 'secret.annotations'."));
    };
    let mut out = BTreeMap::new();
    let mut size = 0;
    for (k, v) in annotations {
        let Some(v) = v.as_str() else {
            return Err(invalid(format!(
                "Invalid value at 'secret.annotations[{k}]'."
            )));
        };
        let alnum = |c: char| c.is_ascii_alphanumeric();
        let key_ok = (1..=63).contains(&k.chars().count())
            && k.len() <= 128
            && k.starts_with(alnum)
            && k.ends_with(alnum)
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if !key_ok {
            return Err(invalid(format!(
                "Annotation key '{k}' is invalid: keys must be 1 to 63 characters, begin and end with an \
                 alphanumeric character ([a-z0-9A-Z]), and may have dashes (-), underscores (_), dots (.), \
                 and alphanumerics in between."
            )));
        }
        size += k.len() + v.len();
        out.insert(k.clone(), v.to_owned());
    }
    if size >= MAX_ANNOTATION_BYTES {
        return Err(invalid(
            "The total size of annotation keys and values must be less than 16KiB.",
        ));
    }
    Ok(out)
}

/// CRC32C (Castagnoli), written independently of the store's.
pub fn crc32c(data: &[u8]) -> u32 {
    const POLY: u32 = 0x82F6_3B78;
    let table: Vec<u32> = (0..256u32)
        .map(|i| {
            (0..8).fold(i, |crc, _| {
                if crc & 1 == 1 {
                    (crc >> 1) ^ POLY
                } else {
                    crc >> 1
                }
            })
        })
        .collect();
    !data.iter().fold(!0u32, |crc, &b| {
        table[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8)
    })
}

/// GCP's label rules, for assertions on what the store wrote.
pub fn is_valid_label(key: &str, value: &str) -> bool {
    let mut labels = Map::new();
    labels.insert(key.to_owned(), Value::String(value.to_owned()));
    check_labels(Some(&Value::Object(labels))).is_ok()
}
