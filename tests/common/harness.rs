//! A harness that behaves like kube-apiserver toward the real binary: TLS
//! that verifies the CA bundle, keep-alive connections, `?timeout=10s`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_secret-santa")
}

/// Runs `secret-santa certs` into `dir` for 127.0.0.1.
pub fn make_certs(dir: &Path) {
    let out = Command::new(binary())
        .args(["certs", "--out"])
        .arg(dir)
        .args([
            "--service",
            "secret-santa",
            "--namespace",
            "secret-santa",
            "--ip",
            "127.0.0.1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "certs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["ca.crt", "tls.crt", "tls.key"] {
        assert!(dir.join(f).exists(), "{f} written");
    }
}

/// The real binary, serving on free loopback ports.
pub struct Server {
    pub child: Child,
    pub webhook: SocketAddr,
    pub admin: SocketAddr,
    pub stderr_log: PathBuf,
}

impl Server {
    /// The binary serving with a fresh CA and certificate (`make_certs`) in
    /// a temporary directory, which also holds its log; the caller keeps the
    /// directory alive (`ca.crt` is in it).
    pub fn with_fresh_certs() -> (tempfile::TempDir, Server) {
        let dir = tempfile::tempdir().unwrap();
        make_certs(dir.path());
        let server = Server::start(
            &dir.path().join("tls.crt"),
            &dir.path().join("tls.key"),
            &[],
            dir.path(),
        );
        (dir, server)
    }

    pub fn start(cert: &Path, key: &Path, extra: &[&str], log_dir: &Path) -> Server {
        let stderr_log = log_dir.join("server.log");
        let log = std::fs::File::create(&stderr_log).unwrap();
        let mut child = Command::new(binary())
            .arg("serve")
            .arg("--tls-cert-file")
            .arg(cert)
            .arg("--tls-key-file")
            .arg(key)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--cert-reload-interval",
                "200ms",
            ])
            .args(extra)
            .env_clear()
            .env("SECRET_SANTA_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let mut webhook = None;
        let mut admin = None;
        while reader.read_line(&mut line).unwrap() > 0 {
            if let Some(rest) = line.trim().strip_prefix("listening ") {
                for part in rest.split_whitespace() {
                    if let Some(a) = part.strip_prefix("webhook=") {
                        webhook = Some(a.parse().unwrap());
                    }
                    if let Some(a) = part.strip_prefix("admin=") {
                        admin = Some(a.parse().unwrap());
                    }
                }
                break;
            }
            line.clear();
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while reader.read_line(&mut sink).unwrap_or(0) > 0 {
                sink.clear();
            }
        });
        let (Some(webhook), Some(admin)) = (webhook, admin) else {
            let _ = child.kill();
            panic!(
                "server did not start: {}",
                std::fs::read_to_string(&stderr_log).unwrap_or_default()
            );
        };
        Server {
            child,
            webhook,
            admin,
            stderr_log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    pub fn terminate(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// GET on the admin port.
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let tcp = TcpStream::connect(self.admin).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .uri(path)
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TLS client config trusting exactly the CA in `ca_pem_file`.
pub fn client_config(ca_pem_file: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Opens a verified TLS connection to 127.0.0.1.
pub async fn tls_connect(addr: SocketAddr, ca: &Path) -> std::io::Result<TlsStream<TcpStream>> {
    let connector = TlsConnector::from(client_config(ca));
    let tcp = TcpStream::connect(addr).await?;
    connector
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
}

/// A keep-alive HTTP/1.1 client over a verified TLS connection.
pub struct Client {
    sender: SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr, ca: &Path) -> std::io::Result<Client> {
        let tls = tls_connect(addr, ca).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Ok(Client { sender })
    }

    /// POSTs a review as kube-apiserver does; returns (status, JSON answer).
    pub async fn post_review(&mut self, review: &Value) -> Result<(u16, Value), String> {
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let body = serde_json::to_vec(review).unwrap();
        let req = hyper::Request::builder()
            .method("POST")
            .uri("/mutate?timeout=10s")
            .header("host", "secret-santa.secret-santa.svc:443")
            .header("content-type", "application/json")
            .header("accept", "application/json, */*")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, json))
    }
}
