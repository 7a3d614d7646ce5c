//! A fake Azure Key Vault (the secrets data plane) and a fake Entra ID
//! token endpoint, on one in-process HTTPS server (hyper 1 + tokio-rustls,
//! a test CA and a certificate for 127.0.0.1 made with rcgen through
//! `secret-santa certs`' own generator), written from the public REST
//! reference so that the real SDK and the real credential types run
//! against it:
//!
//! - `GET /secrets/{name}/` and `GET /secrets/{name}/{version}` (the secret
//!   bundle `{value, id, attributes, tags, contentType}`), `PUT
//!   /secrets/{name}` (a new version), `DELETE /secrets/{name}` (soft
//!   delete), `GET /deletedsecrets/{name}`, `POST
//!   /deletedsecrets/{name}/recover`, `DELETE /deletedsecrets/{name}`
//!   (purge), each with `api-version` checked;
//! - the bearer challenge on requests without a valid token, as Key Vault
//!   sends it: `401` with `WWW-Authenticate: Bearer
//!   authorization="https://login.microsoftonline.com/{tenant}",
//!   resource="https://vault.azure.net"` and `AKV10000`;
//! - Key Vault's error JSON: `{"error":{"code":..,"message":..,
//!   "innererror":{"code":..}}}` (`SecretNotFound` 404, `Conflict` 409 with
//!   `ObjectIsDeletedButRecoverable` / `ObjectIsBeingRecovered`, `Forbidden`
//!   403 with `ForbiddenByRbac` / `SecretDisabled`, `Throttled` 429);
//! - `POST /{tenant}/oauth2/v2.0/token` with the `client_credentials` grant:
//!   a client secret, a federated token (workload identity) or a client
//!   assertion signed with a registered certificate (RS256, `x5t`), and
//!   Entra ID's error JSON (`AADSTS…` descriptions, `error_codes`).
//!
//! Plus soft-deleted state, a recovery that completes only after a few
//! reads, fault injection (the next N calls of an operation answer a
//! status), a request log (method, path, operation, status, client: never
//! a body or a value) and accessors for assertions. The vault's requests
//! reach it through the store's `endpoint` setting with the vault's name
//! (`fake.vault.azure.net`) as the `Host` header, which is what the secret
//! ids are built from. Stopped when dropped.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};

/// The audience Key Vault's challenge names.
pub const VAULT_RESOURCE: &str = "https://vault.azure.net";
/// The vault's name as the store's `vaultUrl` gives it.
pub const VAULT_HOST: &str = "fake.vault.azure.net";
pub const VAULT_URL: &str = "https://fake.vault.azure.net";
pub const VAULT_NAME: &str = "fake";
/// The tenant of every registered client.
pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
/// Data-plane API versions the fake accepts (the SDK sends 2025-07-01).
pub const API_VERSIONS: &[&str] = &[
    "7.0",
    "7.1",
    "7.2",
    "7.3",
    "7.4",
    "7.5",
    "7.6",
    "2025-07-01",
];

/// An Entra ID refusal: HTTP status, error, AADSTS code, description.
type Refusal<'a> = (u16, &'a str, u32, String);

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const MAX_TAGS: usize = 15;
const MAX_VALUE_BYTES: usize = 25 * 1024;

/// The operations the fake tells apart (for faults and the log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Token,
    GetSecret,
    SetSecret,
    DeleteSecret,
    GetDeletedSecret,
    RecoverDeletedSecret,
    PurgeDeletedSecret,
    Unknown,
}

/// One request as the fake saw it. Never a body, never a value.
#[derive(Clone, Debug)]
pub struct Logged {
    pub op: Op,
    pub method: String,
    /// Without the query.
    pub path: String,
    pub host: String,
    pub api_version: Option<String>,
    pub status: u16,
    /// The client the token (or the token request) belongs to.
    pub client: Option<String>,
    /// A vault request with a valid token.
    pub authorized: bool,
    /// Token requests: `client_secret`, `federated` or `certificate`.
    pub grant: Option<&'static str>,
}

/// What a client may do (Key Vault Secrets Officer: everything).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perms {
    pub get: bool,
    pub set: bool,
    pub delete: bool,
    pub recover: bool,
}

impl Perms {
    pub const OFFICER: Perms = Perms {
        get: true,
        set: true,
        delete: true,
        recover: true,
    };
    pub const READER: Perms = Perms {
        get: true,
        set: false,
        delete: false,
        recover: false,
    };
}

/// One version of a secret. `Debug` never shows the value.
#[derive(Clone)]
pub struct Version {
    /// 32 lowercase hex characters, like Key Vault's.
    pub id: String,
    pub value: String,
    pub content_type: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub enabled: bool,
    pub created: i64,
    pub updated: i64,
}

impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Version")
            .field("id", &self.id)
            .field("value_bytes", &self.value.len())
            .field("content_type", &self.content_type)
            .field("tags", &self.tags)
            .field("enabled", &self.enabled)
            .finish()
    }
}

enum Proof {
    Secret(String),
    Federated(String),
    Certificate { x5t: String, public_key: Vec<u8> },
}

struct Client {
    tenant: String,
    proof: Proof,
    perms: Perms,
}

struct Token {
    client_id: String,
    audience: String,
    expires: Instant,
}

struct Deleted {
    versions: Vec<Version>,
    deleted_date: i64,
    scheduled_purge_date: i64,
}

struct Fault {
    op: Op,
    status: u16,
    remaining: usize,
}

#[derive(Default)]
struct State {
    clients: BTreeMap<String, Client>,
    tokens: BTreeMap<String, Token>,
    issued: usize,
    /// Active secrets: versions, oldest first.
    secrets: BTreeMap<String, Vec<Version>>,
    deleted: BTreeMap<String, Deleted>,
    /// Recovered secrets still answering 404 for this many reads.
    recovering: BTreeMap<String, usize>,
    recovery_lag: usize,
    faults: Vec<Fault>,
    log: Vec<Logged>,
}

/// A test certificate for `clientCertificate` auth: certificate and key in
/// one PEM file, and what the fake registers.
pub struct TestCertificate {
    pub pem_file: PathBuf,
    pub cert_der: Vec<u8>,
    /// The RSA public key (PKCS#1 `RSAPublicKey`, DER).
    pub public_key: Vec<u8>,
}

/// Makes a self-signed RSA certificate and key (as `az ad sp credential
/// reset --create-cert` would) and writes both into `path`.
pub fn client_certificate(path: &Path) -> TestCertificate {
    let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["secret-santa-test-client".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "secret-santa test client");
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(path, format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
    TestCertificate {
        pem_file: path.to_owned(),
        cert_der: cert.der().to_vec(),
        public_key: key.public_key_raw().to_vec(),
    }
}

/// base64url SHA-1 thumbprint, as in a client assertion's `x5t`.
pub fn thumbprint(cert_der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, cert_der);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

pub struct AzureFake {
    pub addr: SocketAddr,
    pub port: u16,
    /// `https://127.0.0.1:PORT`: the store's `endpoint` and `authorityHost`.
    pub endpoint: String,
    pub vault_url: String,
    pub tenant: String,
    /// The test CA (PEM), for the store's `caFile`.
    pub ca_file: PathBuf,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl AzureFake {
    /// Starts the server on a free loopback port, on a runtime of its own
    /// (so it serves whatever runtime the test uses).
    pub fn start() -> AzureFake {
        let dir = tempfile::tempdir().unwrap();
        let bundle = secret_santa::cli::certs::generate(
            &["localhost".to_owned()],
            &["127.0.0.1".parse().unwrap()],
            1,
        )
        .unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &bundle.ca_pem).unwrap();
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(bundle.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_slice(bundle.key_pem.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let listener = StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = state.clone();
        std::thread::Builder::new()
            .name("azure-fake".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(serve(listener, acceptor, served, stopped));
                rt.shutdown_background();
            })
            .unwrap();
        AzureFake {
            addr,
            port: addr.port(),
            endpoint: format!("https://127.0.0.1:{}", addr.port()),
            vault_url: VAULT_URL.to_owned(),
            tenant: TENANT.to_owned(),
            ca_file,
            state,
            stop: Some(stop),
            _dir: dir,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    // -- identities -------------------------------------------------------

    /// A service principal with a client secret.
    pub fn register_client_secret(&self, client_id: &str, secret: &str, perms: Perms) {
        self.register(client_id, Proof::Secret(secret.to_owned()), perms);
    }

    /// A workload identity: a federated credential that accepts exactly
    /// this (service account) token.
    pub fn register_federated(&self, client_id: &str, token: &str, perms: Perms) {
        self.register(client_id, Proof::Federated(token.to_owned()), perms);
    }

    /// A service principal with a certificate credential.
    pub fn register_certificate(&self, client_id: &str, cert: &TestCertificate, perms: Perms) {
        self.register(
            client_id,
            Proof::Certificate {
                x5t: thumbprint(&cert.cert_der),
                public_key: cert.public_key.clone(),
            },
            perms,
        );
    }

    fn register(&self, client_id: &str, proof: Proof, perms: Perms) {
        self.state().clients.insert(
            client_id.to_owned(),
            Client {
                tenant: TENANT.to_owned(),
                proof,
                perms,
            },
        );
    }

    /// Changes a client's role assignments.
    pub fn set_perms(&self, client_id: &str, perms: Perms) {
        if let Some(c) = self.state().clients.get_mut(client_id) {
            c.perms = perms;
        }
    }

    /// Forgets every issued token: the next vault call is challenged again.
    pub fn revoke_tokens(&self) {
        self.state().tokens.clear();
    }

    pub fn tokens_issued(&self) -> usize {
        self.state().issued
    }

    // -- the vault's content ----------------------------------------------

    /// The current version of an active secret.
    pub fn current(&self, name: &str) -> Option<Version> {
        self.state()
            .secrets
            .get(name)
            .and_then(|v| v.last().cloned())
    }

    /// All versions of an active secret, oldest first.
    pub fn versions(&self, name: &str) -> Vec<Version> {
        self.state().secrets.get(name).cloned().unwrap_or_default()
    }

    /// Names of the active secrets.
    pub fn names(&self) -> Vec<String> {
        self.state().secrets.keys().cloned().collect()
    }

    pub fn is_deleted(&self, name: &str) -> bool {
        self.state().deleted.contains_key(name)
    }

    /// Writes a version as another tool would (no ownership unless given).
    pub fn seed(&self, name: &str, value: &str, tags: &[(&str, &str)]) -> String {
        let version = new_version(
            value.to_owned(),
            None,
            tags.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            true,
        );
        let id = version.id.clone();
        self.state()
            .secrets
            .entry(name.to_owned())
            .or_default()
            .push(version);
        id
    }

    /// `az keyvault secret delete`: soft delete (recoverable).
    pub fn soft_delete(&self, name: &str) {
        let mut st = self.state();
        let versions = st.secrets.remove(name).expect("the secret exists");
        let now = now();
        st.deleted.insert(
            name.to_owned(),
            Deleted {
                versions,
                deleted_date: now,
                scheduled_purge_date: now + 90 * 86_400,
            },
        );
    }

    /// `az keyvault secret purge`.
    pub fn purge(&self, name: &str) {
        self.state().deleted.remove(name);
    }

    /// `az keyvault secret set-attributes --enabled false` on the current
    /// version.
    pub fn disable(&self, name: &str) {
        if let Some(v) = self
            .state()
            .secrets
            .get_mut(name)
            .and_then(|v| v.last_mut())
        {
            v.enabled = false;
        }
    }

    /// A recovered secret answers 404 to this many reads before it is back
    /// (recovery is asynchronous in Key Vault).
    pub fn set_recovery_lag(&self, reads: usize) {
        self.state().recovery_lag = reads;
    }

    // -- faults and the log -----------------------------------------------

    /// The next `times` authorized calls of `op` answer `status` with Key
    /// Vault's error JSON for it.
    pub fn fail(&self, op: Op, status: u16, times: usize) {
        self.state().faults.push(Fault {
            op,
            status,
            remaining: times,
        });
    }

    /// Injected errors not yet served.
    pub fn pending_faults(&self) -> usize {
        self.state().faults.iter().map(|f| f.remaining).sum()
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state().log.clone()
    }

    pub fn clear_log(&self) {
        self.state().log.clear();
    }

    /// Requests of `op` so far (challenged ones included).
    pub fn count(&self, op: Op) -> usize {
        self.state().log.iter().filter(|l| l.op == op).count()
    }
}

impl Drop for AzureFake {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn new_version(
    value: String,
    content_type: Option<String>,
    tags: BTreeMap<String, String>,
    enabled: bool,
) -> Version {
    let now = now();
    Version {
        id: uuid::Uuid::new_v4().simple().to_string(),
        value,
        content_type,
        tags,
        enabled,
        created: now,
        updated: now,
    }
}

// ---------------------------------------------------------------------------
// The server.

async fn serve(
    listener: StdTcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<Mutex<State>>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let acceptor = acceptor.clone();
                let state = state.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(req, &state).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
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
    body: Option<Value>,
    headers: Vec<(&'static str, String)>,
    client: Option<String>,
    authorized: bool,
    grant: Option<&'static str>,
}

impl Answer {
    fn new(op: Op, status: u16, body: Value) -> Answer {
        Answer {
            op,
            status,
            body: Some(body),
            headers: Vec::new(),
            client: None,
            authorized: false,
            grant: None,
        }
    }
}

async fn handle(req: Request<Incoming>, state: &Mutex<State>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let method = parts.method.as_str().to_owned();
    let path = parts.uri.path().to_owned();
    let query = form(parts.uri.query().unwrap_or(""));
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let host = header("host").unwrap_or_default();
    let authorization = header("authorization");
    let answer = {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let answer = if method == "POST"
            && segments.len() == 4
            && segments[1..] == ["oauth2", "v2.0", "token"]
        {
            st.token(segments[0], &form(&String::from_utf8_lossy(&body)), &host)
        } else {
            st.vault(
                &method,
                &segments,
                &query,
                &host,
                authorization.as_deref(),
                &body,
            )
        };
        st.log.push(Logged {
            op: answer.op,
            method: method.clone(),
            path: path.clone(),
            host: host.clone(),
            api_version: query.get("api-version").cloned(),
            status: answer.status,
            client: answer.client.clone(),
            authorized: answer.authorized,
            grant: answer.grant,
        });
        answer
    };
    let mut builder = Response::builder()
        .status(answer.status)
        .header("cache-control", "no-cache")
        .header("x-ms-request-id", uuid::Uuid::new_v4().to_string())
        .header("x-ms-keyvault-service-version", "1.9.0.0")
        .header("x-ms-keyvault-region", "westeurope");
    for (k, v) in &answer.headers {
        builder = builder.header(*k, v.as_str());
    }
    let bytes = match &answer.body {
        Some(b) => {
            builder = builder.header("content-type", "application/json; charset=utf-8");
            Bytes::from(serde_json::to_vec(b).unwrap())
        }
        None => Bytes::new(),
    };
    builder.body(Full::new(bytes)).unwrap()
}

/// `a=1&b=%20x` → map (form bodies and queries).
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

fn kv_error(code: &str, message: &str, inner: Option<&str>) -> Value {
    let mut error = json!({ "code": code, "message": message });
    if let Some(inner) = inner {
        error["innererror"] = json!({ "code": inner });
    }
    json!({ "error": error })
}

fn entra_error(error: &str, code: u32, description: &str) -> Value {
    let trace = uuid::Uuid::new_v4();
    let correlation = uuid::Uuid::new_v4();
    let timestamp = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    json!({
        "error": error,
        "error_description": format!(
            "AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {correlation} Timestamp: {timestamp}"
        ),
        "error_codes": [code],
        "timestamp": timestamp,
        "trace_id": trace.to_string(),
        "correlation_id": correlation.to_string(),
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 127
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// The secret bundle JSON.
fn bundle(base: &str, name: &str, v: &Version, with_value: bool) -> Value {
    let mut b = json!({
        "id": format!("{base}/secrets/{name}/{}", v.id),
        "attributes": {
            "enabled": v.enabled,
            "created": v.created,
            "updated": v.updated,
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": 90,
        },
    });
    if with_value {
        b["value"] = json!(v.value);
    }
    if let Some(ct) = &v.content_type {
        b["contentType"] = json!(ct);
    }
    if !v.tags.is_empty() {
        b["tags"] = json!(v.tags);
    }
    b
}

fn not_found(name: &str) -> Value {
    kv_error(
        "SecretNotFound",
        &format!(
            "A secret with (name/id) {name} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
        ),
        None,
    )
}

impl State {
    // -- Entra ID -----------------------------------------------------------

    fn token(&mut self, tenant: &str, form: &BTreeMap<String, String>, host: &str) -> Answer {
        let deny = |status: u16, error: &str, code: u32, description: &str| {
            Answer::new(Op::Token, status, entra_error(error, code, description))
        };
        if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
            return deny(
                400,
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type.",
            );
        }
        let Some(client_id) = form.get("client_id").cloned() else {
            return deny(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_id'.",
            );
        };
        let scope = form.get("scope").cloned().unwrap_or_default();
        let Some(client) = self.clients.get(&client_id).filter(|c| c.tenant == tenant) else {
            let mut a = deny(
                400,
                "unauthorized_client",
                700016,
                &format!(
                    "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant."
                ),
            );
            a.client = Some(client_id);
            return a;
        };
        if scope != format!("{VAULT_RESOURCE}/.default") {
            let mut a = deny(
                400,
                "invalid_scope",
                70011,
                "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid.",
            );
            a.client = Some(client_id);
            return a;
        }
        let audience = format!("https://{host}/{tenant}/oauth2/v2.0/token");
        let (grant, verdict): (&'static str, Result<(), Refusal<'_>>) = match &client.proof {
            Proof::Secret(secret) => (
                "client_secret",
                if form.get("client_secret") == Some(secret) {
                    Ok(())
                } else {
                    Err((
                        401,
                        "invalid_client",
                        7000215,
                        format!(
                            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
                        ),
                    ))
                },
            ),
            Proof::Federated(token) => (
                "federated",
                if form.get("client_assertion_type").map(String::as_str) == Some(ASSERTION_TYPE)
                    && form.get("client_assertion") == Some(token)
                {
                    Ok(())
                } else {
                    Err((
                        400,
                        "invalid_request",
                        70021,
                        "No matching federated identity record found for presented assertion."
                            .to_owned(),
                    ))
                },
            ),
            Proof::Certificate { x5t, public_key } => (
                "certificate",
                if form.get("client_assertion_type").map(String::as_str) != Some(ASSERTION_TYPE) {
                    Err((
                            401,
                            "invalid_client",
                            7000218,
                            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.".to_owned(),
                        ))
                } else {
                    verify_assertion(
                        form.get("client_assertion").map_or("", String::as_str),
                        x5t,
                        public_key,
                        &client_id,
                        &audience,
                    )
                    .map_err(|(code, text)| (401, "invalid_client", code, text.to_owned()))
                },
            ),
        };
        if let Err((status, error, code, text)) = verdict {
            let mut a = deny(status, error, code, &text);
            a.client = Some(client_id);
            a.grant = Some(grant);
            return a;
        }
        let token = format!(
            "fake-at-{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        self.tokens.insert(
            token.clone(),
            Token {
                client_id: client_id.clone(),
                audience: VAULT_RESOURCE.to_owned(),
                expires: Instant::now() + Duration::from_secs(3599),
            },
        );
        self.issued += 1;
        let mut a = Answer::new(
            Op::Token,
            200,
            json!({
                "token_type": "Bearer",
                "expires_in": 3599,
                "ext_expires_in": 3599,
                "access_token": token,
            }),
        );
        a.client = Some(client_id);
        a.grant = Some(grant);
        a
    }

    // -- Key Vault ----------------------------------------------------------

    fn vault(
        &mut self,
        method: &str,
        segments: &[&str],
        query: &BTreeMap<String, String>,
        host: &str,
        authorization: Option<&str>,
        body: &[u8],
    ) -> Answer {
        let (op, name, version) = match (method, segments) {
            ("GET", ["secrets", name]) => (Op::GetSecret, *name, None),
            ("GET", ["secrets", name, version]) => (Op::GetSecret, *name, Some(*version)),
            ("PUT", ["secrets", name]) => (Op::SetSecret, *name, None),
            ("DELETE", ["secrets", name]) => (Op::DeleteSecret, *name, None),
            ("GET", ["deletedsecrets", name]) => (Op::GetDeletedSecret, *name, None),
            ("POST", ["deletedsecrets", name, "recover"]) => {
                (Op::RecoverDeletedSecret, *name, None)
            }
            ("DELETE", ["deletedsecrets", name]) => (Op::PurgeDeletedSecret, *name, None),
            _ => (Op::Unknown, "", None),
        };
        // api-version first, as the service validates the URI.
        match query.get("api-version") {
            None => {
                return Answer::new(
                    op,
                    400,
                    kv_error(
                        "BadParameter",
                        "The request URI must contain the query parameter 'api-version'.",
                        None,
                    ),
                );
            }
            Some(v) if !API_VERSIONS.contains(&v.as_str()) => {
                return Answer::new(
                    op,
                    400,
                    kv_error(
                        "BadParameter",
                        &format!(
                            "The specified version ({v}) is not recognized. Consider using the latest supported version ({}).",
                            API_VERSIONS[API_VERSIONS.len() - 1]
                        ),
                        None,
                    ),
                );
            }
            Some(_) => {}
        }
        // The bearer challenge.
        let bearer = authorization.and_then(|a| a.strip_prefix("Bearer "));
        let client = bearer.and_then(|t| {
            self.tokens
                .get(t)
                .filter(|tok| tok.expires > Instant::now() && tok.audience == VAULT_RESOURCE)
                .map(|tok| tok.client_id.clone())
        });
        let Some(client_id) = client else {
            let message = if bearer.is_none() {
                "AKV10000: Request is missing a Bearer or PoP token."
            } else {
                "AKV10013: Invalid token: the token is unknown, expired or for another audience."
            };
            let mut a = Answer::new(op, 401, kv_error("Unauthorized", message, None));
            a.headers.push((
                "www-authenticate",
                format!(
                    r#"Bearer authorization="https://login.microsoftonline.com/{TENANT}", resource="{VAULT_RESOURCE}""#
                ),
            ));
            return a;
        };
        let mut answer = self.authorized(op, name, version, host, &client_id, body);
        answer.client = Some(client_id);
        answer.authorized = true;
        answer
    }

    fn authorized(
        &mut self,
        op: Op,
        name: &str,
        version: Option<&str>,
        host: &str,
        client_id: &str,
        body: &[u8],
    ) -> Answer {
        if let Some(fault) = self
            .faults
            .iter_mut()
            .find(|f| f.op == op && f.remaining > 0)
        {
            fault.remaining -= 1;
            let status = fault.status;
            let (code, message) = match status {
                429 => (
                    "Throttled",
                    "Request was not processed because too many requests were received. Reason: A1",
                ),
                401 => ("Unauthorized", "AKV10022: Invalid audience."),
                403 => ("Forbidden", "Access denied (injected)."),
                500 => ("InternalServerError", "An internal server error occurred."),
                503 => (
                    "ServiceUnavailable",
                    "The service is temporarily unavailable.",
                ),
                400 => ("BadParameter", "The request is invalid (injected)."),
                _ => ("Error", "Injected error."),
            };
            let mut a = Answer::new(op, status, kv_error(code, message, None));
            if status == 429 || status == 503 {
                a.headers.push(("retry-after", "0".to_owned()));
            }
            return a;
        }
        if op == Op::Unknown {
            return Answer::new(
                op,
                400,
                kv_error(
                    "BadParameter",
                    "The requested operation is not supported.",
                    None,
                ),
            );
        }
        if !valid_name(name) {
            return Answer::new(
                op,
                400,
                kv_error(
                    "BadParameter",
                    &format!(
                        "The request URI contains an invalid name: {name}. Follow this link for more information on how to name secrets: https://aka.ms/azure-key-vault-secret-name"
                    ),
                    None,
                ),
            );
        }
        let perms = self
            .clients
            .get(client_id)
            .map_or(Perms::READER, |c| c.perms);
        let (allowed, action) = match op {
            Op::GetSecret => (perms.get, "secrets/getSecret/action"),
            Op::SetSecret => (perms.set, "secrets/setSecret/action"),
            Op::DeleteSecret => (perms.delete, "secrets/delete"),
            Op::GetDeletedSecret => (perms.get, "deletedSecrets/read"),
            Op::RecoverDeletedSecret => (perms.recover, "deletedSecrets/recover/action"),
            Op::PurgeDeletedSecret => (perms.delete, "deletedSecrets/delete"),
            Op::Token | Op::Unknown => (false, "unknown"),
        };
        if !allowed {
            let message = format!(
                "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: appid={client_id};oid=00000000-0000-0000-0000-000000000001;iss=https://sts.windows.net/{TENANT}/\r\nAction: 'Microsoft.KeyVault/vaults/{action}'\r\nResource: '/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/test/providers/microsoft.keyvault/vaults/{VAULT_NAME}/secrets/{name}'\r\nAssignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: 'DeniedWithNoValidRBAC' \r\nVault: {VAULT_NAME};location=westeurope\r\n"
            );
            return Answer::new(
                op,
                403,
                kv_error("Forbidden", &message, Some("ForbiddenByRbac")),
            );
        }
        let base = if host.is_empty() {
            VAULT_URL.to_owned()
        } else {
            format!("https://{host}")
        };
        match op {
            Op::GetSecret => self.get_secret(name, version, &base),
            Op::SetSecret => self.set_secret(name, body, &base),
            Op::DeleteSecret => self.delete_secret(name, &base),
            Op::GetDeletedSecret => match self.deleted.get(name) {
                Some(d) => Answer::new(op, 200, deleted_bundle(&base, name, d)),
                None => Answer::new(
                    op,
                    404,
                    kv_error("SecretNotFound", "Deleted Secret not found", None),
                ),
            },
            Op::RecoverDeletedSecret => self.recover(name, &base),
            Op::PurgeDeletedSecret => match self.deleted.remove(name) {
                Some(_) => Answer {
                    body: None,
                    ..Answer::new(op, 204, Value::Null)
                },
                None => Answer::new(
                    op,
                    404,
                    kv_error("SecretNotFound", "Deleted Secret not found", None),
                ),
            },
            Op::Token | Op::Unknown => Answer::new(op, 400, Value::Null),
        }
    }

    fn get_secret(&mut self, name: &str, version: Option<&str>, base: &str) -> Answer {
        let op = Op::GetSecret;
        if let Some(left) = self.recovering.get_mut(name) {
            if *left > 0 {
                *left -= 1;
                return Answer::new(op, 404, not_found(name));
            }
            self.recovering.remove(name);
        }
        let Some(versions) = self.secrets.get(name) else {
            return Answer::new(op, 404, not_found(name));
        };
        let found = match version {
            None => versions.last(),
            Some(id) => versions.iter().find(|v| v.id == id),
        };
        let Some(v) = found else {
            return Answer::new(
                op,
                404,
                not_found(&format!("{name}/{}", version.unwrap_or(""))),
            );
        };
        if !v.enabled {
            return Answer::new(
                op,
                403,
                kv_error(
                    "Forbidden",
                    "Operation get is not allowed on a disabled secret.",
                    Some("SecretDisabled"),
                ),
            );
        }
        Answer::new(op, 200, bundle(base, name, v, true))
    }

    fn set_secret(&mut self, name: &str, body: &[u8], base: &str) -> Answer {
        let op = Op::SetSecret;
        if self.deleted.contains_key(name) {
            return Answer::new(
                op,
                409,
                kv_error(
                    "Conflict",
                    &format!(
                        "Secret {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged."
                    ),
                    Some("ObjectIsDeletedButRecoverable"),
                ),
            );
        }
        if self.recovering.get(name).is_some_and(|left| *left > 0) {
            return Answer::new(
                op,
                409,
                kv_error(
                    "Conflict",
                    &format!(
                        "Secret {name} is currently being recovered and cannot be re-created; retry later."
                    ),
                    Some("ObjectIsBeingRecovered"),
                ),
            );
        }
        let bad = |message: &str| Answer::new(op, 400, kv_error("BadParameter", message, None));
        let Ok(doc) = serde_json::from_slice::<Value>(body) else {
            return bad("The request body is not valid JSON.");
        };
        let Some(value) = doc.get("value").and_then(Value::as_str) else {
            return bad("Property value is required.");
        };
        if value.len() > MAX_VALUE_BYTES {
            return bad("The secret value exceeds the maximum allowed size of 25 KB.");
        }
        let mut tags = BTreeMap::new();
        if let Some(t) = doc.get("tags").filter(|t| !t.is_null()) {
            let Some(map) = t.as_object() else {
                return bad("Property tags must be an object.");
            };
            for (k, v) in map {
                let Some(v) = v.as_str() else {
                    return bad("Tag values must be strings.");
                };
                tags.insert(k.clone(), v.to_owned());
            }
        }
        if tags.len() > MAX_TAGS {
            return bad("The number of tags exceeds the maximum of 15.");
        }
        if tags
            .iter()
            .any(|(k, v)| k.chars().count() > 256 || v.chars().count() > 256)
        {
            return bad("Tag names and values must be at most 256 characters.");
        }
        let content_type = doc
            .get("contentType")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let enabled = doc
            .pointer("/attributes/enabled")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let version = new_version(value.to_owned(), content_type, tags, enabled);
        let answer = Answer::new(op, 200, bundle(base, name, &version, true));
        self.recovering.remove(name);
        self.secrets
            .entry(name.to_owned())
            .or_default()
            .push(version);
        answer
    }

    fn delete_secret(&mut self, name: &str, base: &str) -> Answer {
        let op = Op::DeleteSecret;
        let Some(versions) = self.secrets.remove(name) else {
            return Answer::new(op, 404, not_found(name));
        };
        let now = now();
        let deleted = Deleted {
            versions,
            deleted_date: now,
            scheduled_purge_date: now + 90 * 86_400,
        };
        let answer = Answer::new(op, 200, deleted_bundle(base, name, &deleted));
        self.deleted.insert(name.to_owned(), deleted);
        answer
    }

    fn recover(&mut self, name: &str, base: &str) -> Answer {
        let op = Op::RecoverDeletedSecret;
        let Some(deleted) = self.deleted.remove(name) else {
            return Answer::new(
                op,
                404,
                kv_error("SecretNotFound", "Deleted Secret not found", None),
            );
        };
        let body = deleted
            .versions
            .last()
            .map(|v| bundle(base, name, v, false))
            .unwrap_or(Value::Null);
        if self.recovery_lag > 0 {
            self.recovering.insert(name.to_owned(), self.recovery_lag);
        }
        self.secrets.insert(name.to_owned(), deleted.versions);
        Answer::new(op, 200, body)
    }
}

fn deleted_bundle(base: &str, name: &str, d: &Deleted) -> Value {
    let mut b = d
        .versions
        .last()
        .map(|v| bundle(base, name, v, false))
        .unwrap_or_else(|| json!({}));
    b["recoveryId"] = json!(format!("{base}/deletedsecrets/{name}"));
    b["deletedDate"] = json!(d.deleted_date);
    b["scheduledPurgeDate"] = json!(d.scheduled_purge_date);
    b
}

/// Checks a certificate client assertion as Entra ID does: the `x5t`
/// names the registered certificate, the RS256 signature verifies with its
/// key, the audience is this token endpoint, issuer and subject are the
/// client, and it is within its lifetime.
fn verify_assertion(
    jwt: &str,
    x5t: &str,
    public_key: &[u8],
    client_id: &str,
    audience: &str,
) -> Result<(), (u32, &'static str)> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let malformed = (50027, "JWT token is invalid or malformed.");
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, claims, signature] = parts.as_slice() else {
        return Err(malformed);
    };
    let header: Value = b64
        .decode(header)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(malformed)?;
    let claims: Value = b64
        .decode(claims)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(malformed)?;
    let signature = b64.decode(signature).map_err(|_| malformed)?;
    if header["alg"] != "RS256" {
        return Err((
            5002738,
            "The client assertion must be signed with RS256 or PS256.",
        ));
    }
    if header["x5t"].as_str() != Some(x5t) {
        return Err((
            700027,
            "The certificate with identifier used to sign the client assertion is not registered on application.",
        ));
    }
    let signed = format!("{}.{}", parts[0], parts[1]);
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
        public_key,
    )
    .verify(signed.as_bytes(), &signature)
    .map_err(|_| (700027, "Client assertion failed signature validation."))?;
    if claims["aud"].as_str() != Some(audience) {
        return Err((
            700212,
            "The client assertion's audience claim does not match the token endpoint.",
        ));
    }
    if claims["iss"].as_str() != Some(client_id) || claims["sub"].as_str() != Some(client_id) {
        return Err((
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter.",
        ));
    }
    let now = now();
    let exp = claims["exp"].as_i64().unwrap_or(0);
    let nbf = claims["nbf"].as_i64().unwrap_or(0);
    if exp <= now || nbf > now + 300 {
        return Err((
            700024,
            "Client assertion is not within its valid time range.",
        ));
    }
    Ok(())
}
