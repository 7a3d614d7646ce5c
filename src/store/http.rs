//! The shared HTTPS client of the REST store backends (Vault today; OCI,
//! Alibaba and IBM later): hyper 1 over hyper-util's pooled client, rustls on
//! aws-lc-rs, the platform's CA certificates or the store's own CA file, a
//! connect timeout and an overall per-request timeout. Built once per store,
//! shared by all reviews. Plain `http://` is allowed (local servers,
//! emulators, a sidecar proxy); `https://` is verified.
//!
//! Errors say what happened (refused, timed out, TLS verification failed,
//! DNS) and where, never a request or response body.

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::text::error_chain;
pub use super::text::truncate;

/// Largest response body read (larger ones are an error, not a truncation).
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// How a client is built.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// PEM file of CA certificates. When set, only these are trusted for
    /// `https://` (like `VAULT_CACERT`); otherwise the platform's.
    pub ca_file: Option<PathBuf>,
    /// TCP connect (plus TLS handshake start) timeout.
    pub connect_timeout: Duration,
    /// Whole request: connect, send, response head and body.
    pub request_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            ca_file: None,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// A response, fully read. Its `Debug` shows the status and the body's
/// length only: bodies hold secret values.
#[derive(Clone)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("body_bytes", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl Response {
    /// The body as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_slice(&self.body).map_err(|e| {
            format!(
                "the {} response is not the expected JSON: {e}",
                self.status.as_u16()
            )
        })
    }

    /// The body as JSON when it is JSON; `Value::Null` otherwise.
    pub fn json_or_null(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// What can go wrong before a response arrives.
#[derive(Clone, Debug, thiserror::Error)]
pub enum HttpError {
    /// Nothing answered: refused, reset, DNS, TLS verification, timeouts.
    #[error("{0}")]
    Unavailable(String),
    /// The request could not be built (a bad URL or header).
    #[error("{0}")]
    Invalid(String),
}

/// A pooled HTTP/1.1 + HTTP/2 client.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    request_timeout: Duration,
    user_agent: HeaderValue,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

/// Reads every certificate of a PEM file; an error names the file.
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("caFile {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("caFile {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "caFile {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(certs)
}

fn roots(config: &HttpConfig) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match &config.ca_file {
        Some(path) => {
            for cert in load_ca_file(path)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("caFile {}: {e}", path.display()))?;
            }
        }
        None => {
            // Unreadable platform certificates are not fatal here: a plain
            // http:// store needs none, and an https:// one reports the
            // verification failure when it is called.
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!(
                    "no platform CA certificates found; https:// stores without caFile will fail verification"
                );
            }
        }
    }
    Ok(roots)
}

impl HttpClient {
    /// Builds the client; reads the CA file (or the platform's certificates)
    /// once. Nothing is contacted.
    pub fn new(config: &HttpConfig) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_root_certificates(roots(config)?)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(8)
            .build(connector);
        Ok(Self {
            client,
            request_timeout: config.request_timeout,
            user_agent: HeaderValue::from_static(concat!(
                "secret-santa/",
                env!("CARGO_PKG_VERSION")
            )),
        })
    }

    /// Sends one request and reads the whole response. A non-2xx status is
    /// a `Response`, not an error: the caller maps it.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Option<Bytes>,
    ) -> Result<Response, HttpError> {
        let uri: Uri = url
            .parse()
            .map_err(|e| HttpError::Invalid(format!("URL {url:?}: {e}")))?;
        let target = origin(&uri);
        let mut builder = Request::builder().method(method).uri(uri);
        let has_user_agent = headers.iter().any(|(k, _)| k == USER_AGENT);
        for (k, v) in headers {
            builder = builder.header(k, v);
        }
        if !has_user_agent {
            builder = builder.header(USER_AGENT, self.user_agent.clone());
        }
        let request = builder
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| HttpError::Invalid(format!("request to {target}: {e}")))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| HttpError::Unavailable(describe(&e, &target)))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    HttpError::Unavailable(format!(
                        "reading the response from {target}: {}",
                        error_chain(Some(e.as_ref()), 300)
                    ))
                })?
                .to_bytes();
            Ok(Response {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(self.request_timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(HttpError::Unavailable(format!(
                "no answer from {target} within {} ms",
                self.request_timeout.as_millis()
            ))),
        }
    }

    /// A request with a JSON body (when given) that accepts JSON.
    pub async fn request_json<T: serde::Serialize + ?Sized>(
        &self,
        method: Method,
        url: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Option<&T>,
    ) -> Result<Response, HttpError> {
        let mut all: Vec<(HeaderName, HeaderValue)> = headers.to_vec();
        all.push((ACCEPT, HeaderValue::from_static("application/json")));
        let body = match body {
            Some(b) => {
                all.push((CONTENT_TYPE, HeaderValue::from_static("application/json")));
                Some(Bytes::from(json_bytes(b)?))
            }
            None => None,
        };
        self.request(method, url, &all, body).await
    }
}

/// Serializes a JSON body.
pub fn json_bytes<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, HttpError> {
    serde_json::to_vec(value).map_err(|e| HttpError::Invalid(format!("JSON body: {e}")))
}

/// `scheme://host:port` of a URI, for messages (no path or query).
fn origin(uri: &Uri) -> String {
    match (uri.scheme_str(), uri.authority()) {
        (Some(s), Some(a)) => format!("{s}://{a}"),
        _ => uri.to_string(),
    }
}

/// A short cause for a failed exchange.
fn describe(err: &hyper_util::client::legacy::Error, target: &str) -> String {
    let source = err as &(dyn StdError + 'static);
    if let Some(tls) = find::<rustls::Error>(source) {
        return format!("TLS with {target} failed: {tls}");
    }
    if let Some(io) = find::<std::io::Error>(source) {
        let cause = match io.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
            std::io::ErrorKind::ConnectionReset => "connection reset".to_owned(),
            std::io::ErrorKind::TimedOut => "connect timed out".to_owned(),
            _ => error_chain(Some(io), 300),
        };
        return format!("{cause} at {target}");
    }
    let text = error_chain(Some(source), 300);
    if err.is_connect() {
        format!("cannot connect to {target}: {text}")
    } else {
        format!("request to {target} failed: {text}")
    }
}

fn find<'a, E: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a E> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        // rustls errors travel inside io::Errors (hyper-rustls wraps
        // tokio-rustls' io::Error in another), and io::Error::source()
        // skips the error it wraps: look inside, at any depth.
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            let inner: &(dyn StdError + 'static) = inner;
            if let Some(found) = find::<E>(inner) {
                return Some(found);
            }
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_is_unavailable_with_the_origin_named() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = HttpClient::new(&HttpConfig::default()).unwrap();
        let err = client
            .request(
                Method::GET,
                &format!("http://127.0.0.1:{port}/v1/x?secret=1"),
                &[],
                None,
            )
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, HttpError::Unavailable(_)), "{text}");
        assert!(text.contains("connection refused"), "{text}");
        assert!(text.contains(&format!("http://127.0.0.1:{port}")), "{text}");
        assert!(!text.contains("secret=1"), "no path or query: {text}");
    }

    #[test]
    fn a_ca_file_without_certificates_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = HttpClient::new(&HttpConfig {
            ca_file: Some(path.clone()),
            ..HttpConfig::default()
        })
        .unwrap_err();
        assert!(err.contains("caFile") && err.contains("ca.pem"), "{err}");
        let err = load_ca_file(&dir.path().join("missing.pem")).unwrap_err();
        assert!(err.contains("missing.pem"), "{err}");
    }

    #[test]
    fn truncation_respects_characters() {
        let t = truncate("üüüü".into(), 3);
        assert_eq!(t, "ü…");
    }
}
