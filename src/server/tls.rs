//! Serving certificates: loaded (and checked) before the socket is bound,
//! re-read when the files change. Polling the file contents catches every
//! kind of rotation, including kubelet's `..data` symlink swap, which
//! watches on the file path miss.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::Digest;

use crate::metrics::OutcomeLabels;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate file {path}: {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("key file {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("certificate {cert} and key {key} do not belong together: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// Parses a PEM chain and a PEM key (PKCS#8, PKCS#1 or SEC1) into a checked
/// [`CertifiedKey`].
pub fn certified_key_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Cert {
            path: cert_path.to_owned(),
            reason: format!("not valid PEM: {e}"),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Cert {
            path: cert_path.to_owned(),
            reason: "contains no CERTIFICATE block".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Key {
        path: key_path.to_owned(),
        reason: format!("no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
    })?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Key {
            path: key_path.to_owned(),
            reason: format!("unsupported key: {e}"),
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|e| TlsError::Mismatch {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(certified)
}

/// Where the certificate comes from.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    /// Reads both files; returns the key and a digest of their contents.
    pub fn load(&self) -> Result<(CertifiedKey, [u8; 32]), TlsError> {
        let cert = std::fs::read(&self.cert).map_err(|e| TlsError::Cert {
            path: self.cert.clone(),
            reason: e.to_string(),
        })?;
        let key = zeroize::Zeroizing::new(std::fs::read(&self.key).map_err(|e| TlsError::Key {
            path: self.key.clone(),
            reason: e.to_string(),
        })?);
        let digest = digest(&cert, &key);
        Ok((
            certified_key_from_pem(&cert, &key, &self.cert, &self.key)?,
            digest,
        ))
    }

    fn digest_now(&self) -> Option<[u8; 32]> {
        let cert = std::fs::read(&self.cert).ok()?;
        let key = zeroize::Zeroizing::new(std::fs::read(&self.key).ok()?);
        Some(digest(&cert, &key))
    }
}

fn digest(cert: &[u8], key: &[u8]) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    h.update((cert.len() as u64).to_le_bytes());
    h.update(cert);
    h.update(key);
    h.finalize().into()
}

/// Hands the current certificate to every new handshake.
pub struct ReloadingResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for ReloadingResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReloadingResolver")
    }
}

impl ReloadingResolver {
    pub fn new(initial: CertifiedKey) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(Arc::new(initial)),
        })
    }

    pub fn replace(&self, key: CertifiedKey) {
        let mut guard = match self.current.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = Arc::new(key);
    }
}

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let guard = match self.current.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        Some(Arc::clone(&guard))
    }
}

/// The rustls server config: TLS 1.2/1.3, ALPN h2 and http/1.1.
pub fn server_config(resolver: Arc<ReloadingResolver>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Polls the files every `interval`; on a content change that parses, swaps
/// the certificate. A change that does not parse (a half-written rotation)
/// keeps the old certificate and is retried on the next tick.
pub async fn watch(
    files: CertFiles,
    resolver: Arc<ReloadingResolver>,
    initial_digest: [u8; 32],
    interval: Duration,
    app: Arc<crate::webhook::App>,
) {
    let mut last = initial_digest;
    let mut last_failed: Option<[u8; 32]> = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let f = files.clone();
        let Ok(Some(now)) = tokio::task::spawn_blocking(move || f.digest_now()).await else {
            continue;
        };
        if now == last || Some(now) == last_failed {
            continue;
        }
        let f = files.clone();
        match tokio::task::spawn_blocking(move || f.load()).await {
            Ok(Ok((key, digest))) => {
                resolver.replace(key);
                last = digest;
                last_failed = None;
                app.metrics
                    .cert_reloads
                    .get_or_create(&OutcomeLabels { outcome: "success" })
                    .inc();
                tracing::info!(cert = %files.cert.display(), "serving certificate reloaded");
            }
            Ok(Err(e)) => {
                last_failed = Some(now);
                app.metrics
                    .cert_reloads
                    .get_or_create(&OutcomeLabels { outcome: "error" })
                    .inc();
                tracing::warn!(error = %e, "changed certificate files do not load; keeping the current certificate");
            }
            Err(_) => {}
        }
    }
}
