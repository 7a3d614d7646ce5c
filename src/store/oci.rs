//! `oci-vault`: Oracle Cloud Infrastructure Vault secrets over the shared
//! HTTPS client (`store::http`), every request signed with OCI's HTTP
//! request signature ("Signature Version 1", based on
//! draft-cavage-http-signatures-08), computed here with aws-lc-rs. There is
//! no official OCI SDK for Rust: this is a small typed REST client of the
//! two APIs a mirrored secret needs:
//!
//! - the **Secret Management API** (`https://vaults.{region}.oci.oraclecloud.com/20180608`):
//!   `CreateSecret`, `ListSecrets` (by name, in the store's compartment and
//!   vault), `GetSecret` and `UpdateSecret` (a new version);
//! - the **Secret Retrieval API** (`https://secrets.vaults.{region}.oci.oraclecloud.com/20190301`):
//!   `GetSecretBundle` (the content of the current version) and
//!   `GetSecretBundleByName`.
//!
//! **Names.** OCI secret names are letters, digits, `-`, `_` and `.`, at
//! most 255 characters, unique per vault. The `/` of a logical remote name
//! becomes `.` (`k8s/shop/db` → `k8s.shop.db`: namespaces hold no `.`, so
//! the default `{namespace}/{name}` stays unambiguous); any other character
//! is an error naming it. Two logical names may still map to one secret
//! name (`shop/a.b` and `shop.a/b` with author-chosen keys): the ownership
//! tags tell them apart and the engine refuses the one that is not the
//! owner.
//!
//! **Payload.** Secret contents are written as `BASE64`, so any bytes
//! round-trip; at most 25 KiB per value.
//!
//! **Ownership** is the secret's freeform tags (at most 64 per resource,
//! keys up to 100 characters and case-insensitive, values up to 256
//! characters; checked before anything is written), sent with the first
//! version in the same `CreateSecret` call, so no version is ever without
//! its owner. `UpdateSecret` (a new version) rewrites the tags: the ones
//! already on the secret are kept, ours are set on top.
//!
//! **Create-if-absent** is `CreateSecret`, which the service refuses when the
//! vault already holds a secret of that name (OCI answers `400
//! InvalidParameter` "name already exists", or `409`): the existing secret
//! is then found with `ListSecrets` and its current bundle read back. So
//! `atomic_create()` is true. Every create carries an `opc-retry-token`, so
//! the one automatic retry after a `429`/`5xx` or a lost connection cannot
//! create twice.
//!
//! **Reads** list the name in the store's compartment and vault; names are
//! unique per *vault*, not per compartment, so a name not listed there is
//! looked up in the vault with `GetSecretBundleByName` (and its tags with
//! `GetSecret`): a secret another compartment holds is seen, and owned or
//! refused, like any other.
//!
//! **Lifecycle.** A secret that is `CREATING` (or, before an update,
//! `UPDATING`) is polled with `GetSecret` until it settles, within the
//! store's deadline. One that is `PENDING_DELETION` (or being deleted, or
//! `DELETED` while its name is still reserved) is a `PendingDeletion`
//! denial that names the secret and the command to cancel the deletion; it
//! is never written.
//!
//! **Auth** (`auth: apiKey`, the default): a user principal's API key —
//! `tenancy`, `user`, `fingerprint` and `privateKeyFile` (PEM RSA, PKCS#1
//! or PKCS#8, unencrypted, at least 2048 bits), read once when the store is
//! built; a missing or unusable file, or a fingerprint that is not the key's
//! (MD5 of its DER public key, as the console shows it), is a start error
//! naming the file. The `keyId` of the signature is
//! `{tenancy}/{user}/{fingerprint}`.
//!
//! `auth: instancePrincipal`: the compute instance (an OKE node) is the
//! principal, as in Oracle's SDKs (oci-go-sdk `common/auth`, the Python
//! SDK's `InstancePrincipalsSecurityTokenSigner` and `X509FederationClient`,
//! the Java SDK's `X509FederationClient`); `tenancy`, `user`, `fingerprint`
//! and `privateKeyFile` must then be absent. From the instance metadata
//! service (`http://169.254.169.254/opc/v2`, `metadataEndpoint` replaces it;
//! every request carries `Authorization: Bearer Oracle`) the store reads
//! `identity/cert.pem` (the instance's leaf certificate, whose subject names
//! the tenancy in an `opc-tenant:<tenancy OCID>` attribute), its key
//! `identity/key.pem` and `identity/intermediate.pem`. It generates a
//! session RSA-2048 key pair and posts to the auth service's X.509
//! federation endpoint (`https://auth.{region}.oraclecloud.com/v1/x509`,
//! the region the metadata service's `instance/region` names, else the
//! store's `region`; `federationEndpoint` replaces it, e.g. for another
//! realm) `{"certificate", "publicKey", "intermediateCertificates",
//! "purpose": "DEFAULT", "fingerprintAlgorithm": "SHA256"}` (base64 DER),
//! signed with the leaf key under `keyId
//! {tenancy}/fed-x509-sha256/{SHA-256 fingerprint of the leaf}` over date,
//! (request-target), content-length, content-type and x-content-sha256 (the
//! SDKs sign no host there). The answer's security token (a JWT) is cached:
//! every Vault request is then signed with the session key under `keyId
//! ST${token}`. A new token (new session key, certificates fetched again:
//! they rotate) is obtained 60 seconds before the token's `exp` (the Python
//! SDK's margin), or after half its lifetime when that is sooner, and after
//! a request signed with it is refused with `401` (then sent once more, as
//! the SDKs do); while a refresh fails the current token is used until it
//! expires. Nothing is contacted when the store is built. A metadata service
//! that does not answer is `Unavailable` naming it; a certificate the auth
//! service refuses is `PermissionDenied`. `workloadIdentity` and
//! `resourcePrincipal` are **not supported yet** and refused when the config
//! is loaded.
//!
//! **Endpoints.** `region` gives the endpoints of the commercial realm
//! (`oraclecloud.com`); `endpoint` and `secretsEndpoint` replace them
//! (another realm, a private endpoint, a test server; `http://` is
//! accepted for tests and sidecar proxies and sends values in the clear).
//! `caFile` replaces the platform's CA certificates (for the federation
//! endpoint too).
//!
//! **Key.** CreateSecret needs the OCID of a symmetric master encryption
//! key of the vault: the store's `kmsKeyId` (or the `keyId` setting), or a
//! destination's `kmsKeyId` when the admin config allows that override.
//!
//! **Permissions** (OCI answers `404 NotAuthorizedOrNotFound` for both "no
//! permission" and "not there"): `Allow group <group> to manage
//! secret-family in compartment <compartment>` and `Allow group <group> to
//! use keys in compartment <compartment> where target.key.id = '<key>'`
//! (for an instance principal: `Allow dynamic-group <dynamic-group> ...`,
//! a dynamic group whose matching rule takes in the instance).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::signature::{KeyPair as _, RsaKeyPair};
use base64::Engine as _;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Method, StatusCode};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Digest as _;
use zeroize::{Zeroize, Zeroizing};

use super::http::{HttpClient, HttpConfig, HttpError, Response};
use super::text::{one_line, truncate};
use super::{
    CreateOutcome, Ownership, RemoteEntry, RemoteName, SecretStore, StoreError, WriteOptions,
};
use crate::config::StoreConfig;
use crate::secret::SecretValue;

pub const TYPE: &str = "oci-vault";

/// API versions (path prefixes) of the two services.
const VAULTS_API: &str = "/20180608";
const SECRETS_API: &str = "/20190301";

/// OCI's limits.
pub const MAX_NAME_CHARS: usize = 255;
/// 25 KiB per secret value.
pub const MAX_CONTENT_BYTES: usize = 25 * 1024;
pub const MAX_TAGS: usize = 64;
const MAX_TAG_KEY_CHARS: usize = 100;
const MAX_TAG_VALUE_CHARS: usize = 256;
/// OCI API signing keys are RSA keys of at least 2048 bits.
const MIN_KEY_BITS: usize = 2048;

/// The headers signed on every request and, after them, on requests with
/// a body (PUT, POST), in the order of Oracle's documented examples.
pub const SIGNED_HEADERS: [&str; 3] = ["date", "(request-target)", "host"];
pub const SIGNED_BODY_HEADERS: [&str; 3] = ["content-length", "content-type", "x-content-sha256"];
/// The headers of a request to the X.509 federation endpoint: Oracle's SDKs
/// sign it without `host`.
pub const FEDERATION_SIGNED_HEADERS: &str =
    "date (request-target) content-length content-type x-content-sha256";

/// Instance principals: the instance metadata service (v2), the path of
/// the auth service's X.509 federation endpoint, and what the token
/// request says.
pub const DEFAULT_METADATA_ENDPOINT: &str = "http://169.254.169.254/opc/v2";
const METADATA_PATH: &str = "/opc/v2";
pub const FEDERATION_PATH: &str = "/v1/x509";
const METADATA_AUTHORIZATION: &str = "Bearer Oracle";
const FEDERATION_PURPOSE: &str = "DEFAULT";
const FINGERPRINT_ALGORITHM: &str = "SHA256";
/// A security token is replaced this long before its `exp` (the Python
/// SDK's `valid_with_jitter`), or after half its lifetime if that is sooner.
const TOKEN_EXPIRY_JITTER_SECS: i64 = 60;

/// The store's per-call deadline when the admin config sets none (the same
/// default `mirror` applies).
const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Per-name locks for create and put (striped: bounded memory).
const LOCK_STRIPES: usize = 64;
/// `ListSecrets` page size and how many pages are followed.
const LIST_LIMIT: &str = "100";
const MAX_LIST_PAGES: usize = 20;
/// The pause before the one retry of a throttled or failed request.
const RETRY_WAIT: Duration = Duration::from_millis(150);

const JSON: &str = "application/json";
const X_CONTENT_SHA256: &str = "x-content-sha256";
const OPC_RETRY_TOKEN: &str = "opc-retry-token";
const OPC_REQUEST_ID: &str = "opc-request-id";
const OPC_NEXT_PAGE: &str = "opc-next-page";

/// Lifecycle states (`Secret.lifecycleState`).
const CREATING: &str = "CREATING";
const UPDATING: &str = "UPDATING";
const DELETED: &str = "DELETED";
const CANCELLING_DELETION: &str = "CANCELLING_DELETION";
/// States a read waits out, and those a write waits out.
const READ_BUSY: &[&str] = &[CREATING, CANCELLING_DELETION];
const WRITE_BUSY: &[&str] = &[CREATING, UPDATING, CANCELLING_DELETION];

/// Query values and path segments: everything but unreserved characters is
/// percent-encoded (OCIDs and secret names pass unchanged).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

// ---------------------------------------------------------------------------
// Settings.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Settings {
    region: String,
    compartment_id: String,
    vault_id: String,
    #[serde(default)]
    key_id: Option<String>,
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    tenancy: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    fingerprint: Option<String>,
    #[serde(default)]
    private_key_file: Option<PathBuf>,
    #[serde(default)]
    metadata_endpoint: Option<String>,
    #[serde(default)]
    federation_endpoint: Option<String>,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    secrets_endpoint: Option<String>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
}

const SETTING_KEYS: &str = "region, compartmentId, vaultId, keyId, auth, tenancy, user, fingerprint, privateKeyFile, metadataEndpoint, federationEndpoint, endpoint, secretsEndpoint, caFile";

/// Where one of the two services is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Origin {
    /// `https://host[:port]`, no trailing `/`.
    base: String,
    /// The URL's authority: the `Host` header, as signed.
    host: String,
}

/// A URL with a path: the instance metadata service's base, the
/// federation endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Endpoint {
    origin: Origin,
    /// `/opc/v2`, `/v1/x509`: no trailing `/`.
    path: String,
}

impl Endpoint {
    fn url(&self) -> String {
        format!("{}{}", self.origin.base, self.path)
    }
}

/// How the store signs.
#[derive(Clone, Debug, PartialEq, Eq)]
enum AuthSettings {
    ApiKey {
        tenancy: String,
        user: String,
        /// Lowercase `aa:bb:...`.
        fingerprint: String,
        private_key_file: PathBuf,
    },
    InstancePrincipal {
        metadata: Endpoint,
        /// `None`: the auth endpoint of the instance's region.
        federation: Option<Endpoint>,
    },
}

/// Checked settings.
#[derive(Debug)]
struct Parsed {
    region: String,
    compartment_id: String,
    vault_id: String,
    /// The master encryption key: `kmsKeyId` or `keyId`.
    key_id: String,
    auth: AuthSettings,
    vaults: Origin,
    secrets: Origin,
    ca_file: Option<PathBuf>,
}

fn settings(config: &StoreConfig) -> Result<Parsed, String> {
    let s: Settings = serde_json::from_value(Value::Object(config.settings.clone()))
        .map_err(|e| format!("{TYPE} settings: {e} (keys: {SETTING_KEYS})"))?;
    let method = s.auth.clone().unwrap_or_else(|| "apiKey".to_owned());
    match method.as_str() {
        "apiKey" | "instancePrincipal" => {}
        method @ ("workloadIdentity" | "resourcePrincipal") => {
            return Err(format!(
                "auth: {method} is not supported yet by the {TYPE} store; use auth: apiKey (the default) with tenancy, user, fingerprint and privateKeyFile, or auth: instancePrincipal on an OCI compute instance"
            ));
        }
        other => {
            return Err(format!(
                "auth: unknown method {other:?}; use apiKey or instancePrincipal (workloadIdentity and resourcePrincipal are not supported yet)"
            ));
        }
    }
    check_region(&s.region)?;
    check_ocid(
        &s.compartment_id,
        "compartmentId",
        &["compartment", "tenancy"],
    )?;
    check_ocid(&s.vault_id, "vaultId", &["vault"])?;
    let key_id = match (&config.kms_key_id, &s.key_id) {
        (Some(_), Some(_)) => {
            return Err(
                "keyId: give the master encryption key as kmsKeyId or as keyId, not both".into(),
            );
        }
        (Some(k), None) => {
            check_ocid(k, "kmsKeyId", &["key"])?;
            k.clone()
        }
        (None, Some(k)) => {
            check_ocid(k, "keyId", &["key"])?;
            k.clone()
        }
        (None, None) => {
            return Err(format!(
                "kmsKeyId: OCI Vault encrypts every secret with a master encryption key of the vault; set kmsKeyId (or keyId) to the OCID of a symmetric key in vault {}",
                s.vault_id
            ));
        }
    };
    let auth = if method == "instancePrincipal" {
        let given: Vec<&str> = [
            ("tenancy", s.tenancy.is_some()),
            ("user", s.user.is_some()),
            ("fingerprint", s.fingerprint.is_some()),
            ("privateKeyFile", s.private_key_file.is_some()),
        ]
        .into_iter()
        .filter(|(_, given)| *given)
        .map(|(key, _)| key)
        .collect();
        if !given.is_empty() {
            return Err(format!(
                "{}: not used with auth: instancePrincipal, which signs with the instance's own certificate from the instance metadata service; remove {}, or use auth: apiKey",
                given.join(", "),
                if given.len() == 1 { "it" } else { "them" }
            ));
        }
        let metadata = endpoint(
            s.metadata_endpoint
                .as_deref()
                .unwrap_or(DEFAULT_METADATA_ENDPOINT),
            "metadataEndpoint",
            METADATA_PATH,
        )?;
        let federation = s
            .federation_endpoint
            .as_deref()
            .map(|e| endpoint(e, "federationEndpoint", FEDERATION_PATH))
            .transpose()?;
        AuthSettings::InstancePrincipal {
            metadata,
            federation,
        }
    } else {
        if let Some(key) = [
            ("metadataEndpoint", s.metadata_endpoint.is_some()),
            ("federationEndpoint", s.federation_endpoint.is_some()),
        ]
        .into_iter()
        .find(|(_, given)| *given)
        .map(|(key, _)| key)
        {
            return Err(format!(
                "{key} is only used with auth: instancePrincipal; auth apiKey signs with the API key of tenancy, user, fingerprint and privateKeyFile"
            ));
        }
        let tenancy = required(s.tenancy, "tenancy")?;
        check_ocid(&tenancy, "tenancy", &["tenancy"])?;
        let user = required(s.user, "user")?;
        check_ocid(&user, "user", &["user"])?;
        let fingerprint = check_fingerprint(&required(s.fingerprint, "fingerprint")?)?;
        let private_key_file = s
            .private_key_file
            .filter(|p| !p.as_os_str().is_empty())
            .ok_or_else(|| {
                "privateKeyFile is required for auth apiKey (the PEM file of the API signing key)"
                    .to_owned()
            })?;
        AuthSettings::ApiKey {
            tenancy,
            user,
            fingerprint,
            private_key_file,
        }
    };
    let vaults = match &s.endpoint {
        Some(e) => origin(e, "endpoint")?,
        None => origin(
            &format!("https://vaults.{}.oci.oraclecloud.com", s.region),
            "region",
        )?,
    };
    let secrets = match &s.secrets_endpoint {
        Some(e) => origin(e, "secretsEndpoint")?,
        None => origin(
            &format!("https://secrets.vaults.{}.oci.oraclecloud.com", s.region),
            "region",
        )?,
    };
    Ok(Parsed {
        region: s.region,
        compartment_id: s.compartment_id,
        vault_id: s.vault_id,
        key_id,
        auth,
        vaults,
        secrets,
        ca_file: s.ca_file,
    })
}

/// Checks the settings without connecting anywhere or reading files.
pub fn validate(config: &StoreConfig) -> Result<(), String> {
    settings(config).map(|_| ())
}

fn required(value: Option<String>, key: &str) -> Result<String, String> {
    value
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            format!(
                "{key} is required for auth apiKey (tenancy, user, fingerprint and privateKeyFile of an API signing key)"
            )
        })
}

fn check_region(region: &str) -> Result<(), String> {
    let valid = !region.is_empty()
        && region.contains('-')
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "region {region:?} is not an OCI region identifier like us-ashburn-1"
        ))
    }
}

/// An OCID: `ocid1.<type>.<realm>.[region][.future].<unique id>`.
fn check_ocid(value: &str, key: &str, kinds: &[&str]) -> Result<(), String> {
    let parts: Vec<&str> = value.split('.').collect();
    let valid = parts.len() >= 5
        && parts[0] == "ocid1"
        && kinds.contains(&parts[1])
        && !parts[2].is_empty()
        && parts.last().is_some_and(|p| !p.is_empty())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{key} {value:?} is not the OCID of a {} (ocid1.{}.<realm>.<region>.<unique id>)",
            kinds.join(" or "),
            kinds[0]
        ))
    }
}

/// `aa:bb:...` (16 hex pairs), lowercased.
fn check_fingerprint(value: &str) -> Result<String, String> {
    let lower = value.trim().to_ascii_lowercase();
    let pairs: Vec<&str> = lower.split(':').collect();
    let valid = pairs.len() == 16
        && pairs
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    if valid {
        Ok(lower)
    } else {
        Err(format!(
            "fingerprint {value:?} is not an API key fingerprint (16 hex pairs like 20:3b:97:13:55:1c:5b:0d:d3:37:d8:50:4e:c5:3a:34)"
        ))
    }
}

/// An `http(s)://host[:port]` origin; errors name the setting.
fn origin(value: &str, key: &str) -> Result<Origin, String> {
    let trimmed = value.trim_end_matches('/');
    let uri: http::Uri = trimmed
        .parse()
        .map_err(|e| format!("{key} {value:?} is not a URL: {e}"))?;
    let scheme = match uri.scheme_str() {
        Some(s @ ("http" | "https")) => s.to_owned(),
        _ => {
            return Err(format!(
                "{key} {value:?} must be an https:// (or, for tests, http://) URL with a host"
            ));
        }
    };
    let Some(authority) = uri.authority().filter(|a| !a.host().is_empty()) else {
        return Err(format!("{key} {value:?} must name a host"));
    };
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "{key} {value:?} must be scheme, host and port only, without path or query"
        ));
    }
    if authority.as_str().contains('@') {
        return Err(format!("{key} {value:?} must not hold credentials"));
    }
    Ok(Origin {
        base: format!("{scheme}://{authority}"),
        host: authority.as_str().to_owned(),
    })
}

/// An `http(s)://host[:port][/path]` URL; `default_path` when it has none.
/// Errors name the setting.
fn endpoint(value: &str, key: &str, default_path: &str) -> Result<Endpoint, String> {
    let trimmed = value.trim().trim_end_matches('/');
    let uri: http::Uri = trimmed
        .parse()
        .map_err(|e| format!("{key} {value:?} is not a URL: {e}"))?;
    let scheme = match uri.scheme_str() {
        Some(s @ ("http" | "https")) => s.to_owned(),
        _ => {
            return Err(format!(
                "{key} {value:?} must be an http:// or https:// URL with a host"
            ));
        }
    };
    let Some(authority) = uri.authority().filter(|a| !a.host().is_empty()) else {
        return Err(format!("{key} {value:?} must name a host"));
    };
    if uri.query().is_some() {
        return Err(format!("{key} {value:?} must not have a query"));
    }
    if authority.as_str().contains('@') {
        return Err(format!("{key} {value:?} must not hold credentials"));
    }
    let path = match uri.path().trim_end_matches('/') {
        "" => default_path.to_owned(),
        p => p.to_owned(),
    };
    Ok(Endpoint {
        origin: Origin {
            base: format!("{scheme}://{authority}"),
            host: authority.as_str().to_owned(),
        },
        path,
    })
}

/// The X.509 federation endpoint of a region of the commercial realm.
fn default_federation_endpoint(region: &str) -> Result<Endpoint, String> {
    endpoint(
        &format!("https://auth.{region}.oraclecloud.com"),
        "region",
        FEDERATION_PATH,
    )
}

// ---------------------------------------------------------------------------
// Names.

/// Maps a logical remote name to an OCI secret name: letters, digits, `-`,
/// `_` and `.` stay, `/` becomes `.`, anything else is refused.
pub fn secret_name(logical: &str) -> Result<String, String> {
    if logical.is_empty() {
        return Err("remote name is empty".into());
    }
    let mut out = String::with_capacity(logical.len());
    for c in logical.chars() {
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => out.push(c),
            '/' => out.push('.'),
            other => {
                return Err(format!(
                    "character {other:?} is not allowed in OCI Vault secret names (letters, digits, - _ and .; / becomes .)"
                ));
            }
        }
    }
    if out.len() > MAX_NAME_CHARS {
        return Err(format!(
            "OCI Vault secret names have at most {MAX_NAME_CHARS} characters; this one has {}",
            out.len()
        ));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Request signatures.

/// What OCI signs of a request ("Request Signatures", Signature Version 1).
#[derive(Clone, Copy, Debug)]
pub struct SigningInput<'a> {
    /// `GET`, `POST`, ... (lowercased in the signing string).
    pub method: &'a str,
    /// Path and query exactly as sent: `/20180608/secrets?compartmentId=...`.
    pub target: &'a str,
    /// The `Host` header.
    pub host: &'a str,
    /// The `Date` header (RFC 7231 IMF-fixdate).
    pub date: &'a str,
    /// PUT and POST: the body headers, always signed for them (an empty
    /// body included).
    pub body: Option<BodyHeaders<'a>>,
}

#[derive(Clone, Copy, Debug)]
pub struct BodyHeaders<'a> {
    pub content_length: usize,
    pub content_type: &'a str,
    /// base64 SHA-256 of the body (`x-content-sha256`).
    pub content_sha256: &'a str,
}

impl SigningInput<'_> {
    /// The `headers` parameter of the signature: the signed header names in
    /// signing order.
    pub fn headers(&self) -> String {
        let mut names: Vec<&str> = SIGNED_HEADERS.to_vec();
        if self.body.is_some() {
            names.extend(SIGNED_BODY_HEADERS);
        }
        names.join(" ")
    }

    /// The signing string: one `name: value` line per signed header, joined
    /// by `\n`, no trailing newline.
    pub fn signing_string(&self) -> String {
        self.lines(true).join("\n")
    }

    /// The signing string of a request to the X.509 federation endpoint
    /// (`FEDERATION_SIGNED_HEADERS`): the same without `host`.
    pub fn federation_signing_string(&self) -> String {
        self.lines(false).join("\n")
    }

    fn lines(&self, host: bool) -> Vec<String> {
        let mut lines = vec![
            format!("date: {}", self.date),
            format!(
                "(request-target): {} {}",
                self.method.to_ascii_lowercase(),
                self.target
            ),
        ];
        if host {
            lines.push(format!("host: {}", self.host));
        }
        if let Some(b) = &self.body {
            lines.push(format!("content-length: {}", b.content_length));
            lines.push(format!("content-type: {}", b.content_type));
            lines.push(format!("x-content-sha256: {}", b.content_sha256));
        }
        lines
    }
}

/// `x-content-sha256`: the base64 SHA-256 of the body.
pub fn body_sha256(body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(body))
}

/// The `Authorization` header value.
pub fn authorization(key_id: &str, headers: &str, signature_b64: &str) -> String {
    format!(
        r#"Signature version="1",headers="{headers}",keyId="{key_id}",algorithm="rsa-sha256",signature="{signature_b64}""#
    )
}

/// An RFC 7231 date in GMT, as the `Date` header carries it.
pub fn http_date(t: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_default()
}

/// An API key's fingerprint: the MD5 of its DER `SubjectPublicKeyInfo`, as
/// hex pairs (what `openssl rsa -pubout -outform DER | openssl md5 -c`
/// prints and the console shows).
pub fn key_fingerprint(spki_der: &[u8]) -> String {
    use md5::Digest as _;
    md5::Md5::digest(spki_der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// RSA-SHA256 (PKCS#1 v1.5) of the signing string, base64.
fn rsa_sha256(key: &RsaKeyPair, signing_string: &str) -> Result<String, String> {
    let mut signature = vec![0u8; key.public_modulus_len()];
    key.sign(
        &aws_lc_rs::signature::RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        signing_string.as_bytes(),
        &mut signature,
    )
    .map_err(|_| "signing the request failed".to_owned())?;
    Ok(base64::engine::general_purpose::STANDARD.encode(signature))
}

/// A user principal's API signing key.
struct ApiKey {
    /// `{tenancy}/{user}/{fingerprint}`.
    key_id: String,
    key: RsaKeyPair,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl ApiKey {
    /// Reads and checks the key file; errors name `privateKeyFile` and the
    /// file, or `fingerprint`.
    fn load(tenancy: &str, user: &str, fingerprint: &str, path: &Path) -> Result<ApiKey, String> {
        let pem = Zeroizing::new(
            std::fs::read(path).map_err(|e| format!("privateKeyFile {}: {e}", path.display()))?,
        );
        let key = parse_private_key(&pem, path)?;
        let actual = public_fingerprint(&key)
            .map_err(|e| format!("privateKeyFile {}: {e}", path.display()))?;
        if actual != fingerprint {
            return Err(format!(
                "fingerprint {fingerprint} does not match privateKeyFile {} (the fingerprint of its public key is {actual}); \
                 use the fingerprint the console shows for this key, or the key file that belongs to the fingerprint",
                path.display()
            ));
        }
        Ok(ApiKey {
            key_id: format!("{tenancy}/{user}/{fingerprint}"),
            key,
        })
    }

    /// The `Authorization` header of a request.
    fn authorization(&self, input: &SigningInput<'_>) -> Result<String, String> {
        let signature = rsa_sha256(&self.key, &input.signing_string())?;
        Ok(authorization(&self.key_id, &input.headers(), &signature))
    }
}

/// An unencrypted PEM RSA private key, PKCS#1 or PKCS#8, of at least 2048
/// bits.
fn parse_private_key(pem: &[u8], path: &Path) -> Result<RsaKeyPair, String> {
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject;
    let text = String::from_utf8_lossy(pem);
    let encrypted = text.lines().any(|l| {
        let l = l.trim();
        l.starts_with("-----BEGIN ENCRYPTED") || l.starts_with("Proc-Type: 4,ENCRYPTED")
    });
    if encrypted {
        return Err(format!(
            "privateKeyFile {}: the key is encrypted with a passphrase, which is not supported; \
             store it unencrypted (openssl rsa -in key.pem -out plain.pem) in a Kubernetes Secret",
            path.display()
        ));
    }
    let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
        format!(
            "privateKeyFile {}: no PEM private key in it ({e}); OCI API keys are PEM RSA keys (BEGIN RSA PRIVATE KEY or BEGIN PRIVATE KEY)",
            path.display()
        )
    })?;
    let rejected = |e: aws_lc_rs::error::KeyRejected| {
        format!(
            "privateKeyFile {}: not a usable RSA key ({e}); OCI API keys are RSA keys of at least {MIN_KEY_BITS} bits",
            path.display()
        )
    };
    match &der {
        PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()).map_err(rejected),
        PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()).map_err(rejected),
        _ => Err(format!(
            "privateKeyFile {}: OCI API keys are RSA keys; this is another kind of key",
            path.display()
        )),
    }
}

fn public_fingerprint(key: &RsaKeyPair) -> Result<String, String> {
    let der = key
        .public_key()
        .as_der()
        .map_err(|_| "cannot encode its public key".to_owned())?;
    Ok(key_fingerprint(AsRef::<[u8]>::as_ref(&*der)))
}

// ---------------------------------------------------------------------------
// Instance principals.

/// A certificate's fingerprint as Oracle's SDKs write it in a federation
/// `keyId`: the SHA-256 of its DER, lowercase hex pairs (`ab:cd:...`).
pub fn certificate_fingerprint(der: &[u8]) -> String {
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The `keyId` of a request to the X.509 federation endpoint, signed with
/// the instance certificate's key.
pub fn federation_key_id(tenancy: &str, fingerprint: &str) -> String {
    format!("{tenancy}/fed-x509-sha256/{fingerprint}")
}

/// The `keyId` of a request signed with a security token's session key.
pub fn security_token_key_id(token: &str) -> String {
    format!("ST${token}")
}

/// The tenancy OCID an instance certificate names: the value of the first
/// subject attribute (OCI puts it in an `OU`) that starts with
/// `opc-tenant:`, whatever its type, as the Go and Python SDKs read it; else
/// one that starts with `opc-identity:` (the Python SDK's fallback).
pub fn certificate_tenancy(cert_der: &[u8]) -> Result<String, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| format!("not an X.509 certificate ({e})"))?;
    tenancy_of(&cert)
}

fn tenancy_of(cert: &x509_parser::certificate::X509Certificate<'_>) -> Result<String, String> {
    let values: Vec<&str> = cert
        .subject()
        .iter_attributes()
        .filter_map(|a| a.as_str().ok())
        .collect();
    let found = values
        .iter()
        .copied()
        .find_map(|v| v.strip_prefix("opc-tenant:"))
        .or_else(|| {
            values
                .iter()
                .copied()
                .find_map(|v| v.strip_prefix("opc-identity:"))
        })
        .map(str::trim);
    match found {
        Some(tenancy) if !tenancy.is_empty() && !tenancy.contains(char::is_whitespace) => {
            Ok(tenancy.to_owned())
        }
        _ => Err(format!(
            "its subject ({}) names no tenancy: it has no opc-tenant: attribute",
            truncate(cert.subject().to_string(), 200)
        )),
    }
}

/// The `exp` and `iat` claims (Unix seconds) of a security token, a JWT.
/// Its payload is read, not verified: the auth service signed it for the
/// services, which check it.
pub fn token_times(token: &str) -> Result<(i64, Option<i64>), String> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err("the security token is not a JWT (header.payload.signature)".into());
    }
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[1].trim_end_matches('='))
        .map_err(|e| format!("the security token's payload is not base64url ({e})"))?;
    let claims: Value = serde_json::from_slice(&payload)
        .map_err(|e| format!("the security token's payload is not JSON ({e})"))?;
    let number = |name: &str| {
        claims
            .get(name)
            .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
    };
    let exp = number("exp").ok_or("the security token has no exp claim")?;
    Ok((exp, number("iat")))
}

/// When a token is replaced (Unix seconds): `TOKEN_EXPIRY_JITTER_SECS`
/// before it expires, or after half its lifetime (from `iat`, else from
/// when it was obtained) when that is sooner.
pub fn token_refresh_at(exp: i64, iat: Option<i64>, obtained: i64) -> i64 {
    let issued = iat.unwrap_or(obtained).min(exp);
    exp - TOKEN_EXPIRY_JITTER_SECS.min((exp - issued) / 2)
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The instance's identity, as the metadata service serves it.
struct Leaf {
    der: Vec<u8>,
    tenancy: String,
    /// `certificate_fingerprint` of `der`.
    fingerprint: String,
    key: RsaKeyPair,
}

/// The leaf certificate and its key: the tenancy named, the key the
/// certificate's.
fn leaf_identity(cert_pem: &[u8], key_pem: &[u8]) -> Result<Leaf, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let der = CertificateDer::from_pem_slice(cert_pem)
        .map_err(|e| format!("identity/cert.pem is not a PEM certificate ({e})"))?
        .to_vec();
    let (tenancy, public_key) = {
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| format!("identity/cert.pem is not an X.509 certificate ({e})"))?;
        let tenancy = tenancy_of(&cert).map_err(|e| format!("identity/cert.pem: {e}"))?;
        (tenancy, cert.public_key().subject_public_key.data.to_vec())
    };
    let key = match PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("identity/key.pem is not a PEM private key ({e})"))?
    {
        PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
        PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
        _ => return Err("identity/key.pem is not an RSA key".into()),
    }
    .map_err(|e| format!("identity/key.pem is not a usable RSA key ({e})"))?;
    if AsRef::<[u8]>::as_ref(key.public_key()) != public_key.as_slice() {
        return Err(
            "identity/key.pem is not the key of identity/cert.pem (they may be rotating; a retry converges)"
                .into(),
        );
    }
    Ok(Leaf {
        fingerprint: certificate_fingerprint(&der),
        der,
        tenancy,
        key,
    })
}

/// Every certificate of a PEM text, base64 DER.
fn certificates_b64(pem: &[u8]) -> Result<Vec<String>, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM certificates ({e})"))?;
    if certs.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(certs
        .iter()
        .map(|c| {
            let der: &[u8] = c;
            base64::engine::general_purpose::STANDARD.encode(der)
        })
        .collect())
}

/// A fresh RSA-2048 session key pair (off the async threads).
async fn session_key() -> Result<RsaKeyPair, String> {
    tokio::task::spawn_blocking(|| RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048))
        .await
        .map_err(|e| format!("generating the session key failed ({e})"))?
        .map_err(|_| "generating the session key failed".to_owned())
}

/// `{"token": "..."}`.
#[derive(Deserialize)]
struct TokenDto {
    token: String,
}

/// A security token and the session key it is bound to.
struct Session {
    /// `ST${token}`.
    key_id: Zeroizing<String>,
    key: RsaKeyPair,
    tenancy: String,
    /// Unix seconds.
    refresh_at: i64,
    expires_at: i64,
}

impl Session {
    /// The `Authorization` header of a request.
    fn authorization(&self, input: &SigningInput<'_>) -> Result<String, String> {
        let signature = rsa_sha256(&self.key, &input.signing_string())?;
        Ok(authorization(&self.key_id, &input.headers(), &signature))
    }
}

/// The instance principal: its security token, obtained and replaced as
/// Oracle's SDKs do.
struct InstancePrincipal {
    metadata: Endpoint,
    federation: Option<Endpoint>,
    /// The store's region: the federation endpoint's when the metadata
    /// service does not name one.
    region: String,
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
}

impl InstancePrincipal {
    fn new(metadata: Endpoint, federation: Option<Endpoint>, region: String) -> Self {
        Self {
            metadata,
            federation,
            region,
            session: tokio::sync::Mutex::new(None),
        }
    }

    /// The token to sign with now: the cached one, or a new one once it is
    /// due (the current one is kept while a refresh fails and it has not
    /// expired).
    async fn session(
        &self,
        http: &HttpClient,
        deadline: Duration,
    ) -> Result<Arc<Session>, StoreError> {
        let mut current = self.session.lock().await;
        let now = unix_now();
        if let Some(s) = current.as_ref()
            && now < s.refresh_at
        {
            return Ok(s.clone());
        }
        let previous = current.as_ref().map(|s| s.tenancy.clone());
        match self.federate(http, deadline, previous.as_deref()).await {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                *current = Some(fresh.clone());
                Ok(fresh)
            }
            Err(e) => match current.as_ref() {
                Some(old) if unix_now() < old.expires_at => {
                    tracing::warn!(error = %e, "refreshing the OCI instance principal's security token failed; the current one is still valid");
                    Ok(old.clone())
                }
                _ => Err(e),
            },
        }
    }

    /// After a 401: drops the token that was refused (unless another call
    /// replaced it already).
    async fn forget(&self, used: &Arc<Session>) {
        let mut current = self.session.lock().await;
        if current.as_ref().is_some_and(|s| Arc::ptr_eq(s, used)) {
            *current = None;
        }
    }

    /// The certificates (fetched anew: they rotate), a new session key, and
    /// a token for it from the federation endpoint.
    async fn federate(
        &self,
        http: &HttpClient,
        deadline: Duration,
        previous_tenancy: Option<&str>,
    ) -> Result<Session, StoreError> {
        let metadata = self.metadata.url();
        let other = |m: String| {
            StoreError::Other(format!(
                "instance principal: the instance metadata service at {metadata}: {m}"
            ))
        };
        let cert_pem = self.metadata_get(http, "identity/cert.pem").await?;
        let key_pem = Zeroizing::new(self.metadata_get(http, "identity/key.pem").await?.to_vec());
        let intermediate_pem = self.metadata_get(http, "identity/intermediate.pem").await?;
        let leaf = leaf_identity(&cert_pem, &key_pem).map_err(other)?;
        drop(key_pem);
        if let Some(previous) = previous_tenancy
            && previous != leaf.tenancy
        {
            return Err(other(format!(
                "the instance certificate now names tenancy {} instead of {previous}; restart to use the new tenancy",
                leaf.tenancy
            )));
        }
        let intermediates = certificates_b64(&intermediate_pem)
            .map_err(|e| other(format!("identity/intermediate.pem: {e}")))?;
        let federation = self.federation_endpoint(http).await?;
        let key = session_key()
            .await
            .map_err(|e| StoreError::Other(format!("instance principal: {e}")))?;
        let public_key = key.public_key().as_der().map_err(|_| {
            StoreError::Other("instance principal: cannot encode the session public key".into())
        })?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let body = serde_json::to_vec(&json!({
            "certificate": b64.encode(leaf.der.as_slice()),
            "publicKey": b64.encode(AsRef::<[u8]>::as_ref(&*public_key)),
            "intermediateCertificates": intermediates,
            "purpose": FEDERATION_PURPOSE,
            "fingerprintAlgorithm": FINGERPRINT_ALGORITHM,
        }))
        .map_err(|e| StoreError::Other(format!("instance principal: token request body: {e}")))?;
        let obtained = unix_now();
        let token = self
            .request_token(http, deadline, &federation, &leaf, Bytes::from(body))
            .await?;
        let (exp, iat) = token_times(&token).map_err(|e| {
            StoreError::Other(format!(
                "instance principal: the OCI auth service at {}: {e}",
                federation.url()
            ))
        })?;
        if exp <= obtained {
            tracing::warn!(
                exp,
                now = obtained,
                "the OCI instance principal's new security token has expired by this host's clock; check the clock"
            );
        }
        tracing::debug!(
            tenancy = %leaf.tenancy,
            certificate = %leaf.fingerprint,
            expires_in_secs = exp - obtained,
            "OCI instance principal security token obtained"
        );
        Ok(Session {
            key_id: Zeroizing::new(security_token_key_id(&token)),
            key,
            tenancy: leaf.tenancy,
            refresh_at: token_refresh_at(exp, iat, obtained),
            expires_at: exp,
        })
    }

    /// `GET {metadata}/{item}` with `Authorization: Bearer Oracle`.
    async fn metadata_get(&self, http: &HttpClient, item: &str) -> Result<Bytes, StoreError> {
        let base = self.metadata.url();
        let url = format!("{base}/{item}");
        let headers = [(
            http::header::AUTHORIZATION,
            HeaderValue::from_static(METADATA_AUTHORIZATION),
        )];
        let resp = http
            .request(Method::GET, &url, &headers, None)
            .await
            .map_err(|e| match e {
                HttpError::Unavailable(m) => StoreError::Unavailable(format!(
                    "instance principal: the instance metadata service at {base} ({item}): {m}; auth: instancePrincipal reads the instance's identity from it, so it works on an OCI compute instance (an OKE node whose pods reach 169.254.169.254) only"
                )),
                HttpError::Invalid(m) => StoreError::Invalid(format!(
                    "instance principal: the instance metadata service at {base} ({item}): {m}"
                )),
            })?;
        if resp.status.is_success() {
            return Ok(resp.body);
        }
        let message = format!(
            "instance principal: the instance metadata service at {base} answered HTTP {} for {item}",
            resp.status.as_u16()
        );
        Err(if resp.status.is_server_error() {
            StoreError::Unavailable(message)
        } else {
            StoreError::Other(format!(
                "{message}; is this an OCI compute instance with an instance principal identity?"
            ))
        })
    }

    /// `federationEndpoint`, else the auth endpoint of the region the
    /// metadata service names (`us-ashburn-1`; a short code like `iad`, as
    /// older instances answer: the store's region).
    async fn federation_endpoint(&self, http: &HttpClient) -> Result<Endpoint, StoreError> {
        if let Some(e) = &self.federation {
            return Ok(e.clone());
        }
        let answer = self.metadata_get(http, "instance/region").await?;
        let named = String::from_utf8_lossy(&answer).trim().to_ascii_lowercase();
        let region = if check_region(&named).is_ok() {
            named
        } else {
            self.region.clone()
        };
        default_federation_endpoint(&region)
            .map_err(|e| StoreError::Invalid(format!("instance principal: {e}")))
    }

    /// `POST` the token request, signed with the leaf key; sent once more
    /// after a `429`/`5xx` answer or a lost connection when time is left.
    async fn request_token(
        &self,
        http: &HttpClient,
        deadline: Duration,
        federation: &Endpoint,
        leaf: &Leaf,
        body: Bytes,
    ) -> Result<String, StoreError> {
        let url = federation.url();
        let key_id = federation_key_id(&leaf.tenancy, &leaf.fingerprint);
        let sha = body_sha256(&body);
        let invalid = |what: &str| {
            StoreError::Invalid(format!(
                "instance principal: the token request to {url}: {what} has characters a header cannot carry"
            ))
        };
        let started = Instant::now();
        let mut attempt = 0;
        let resp = loop {
            attempt += 1;
            let date = http_date(time::OffsetDateTime::now_utc());
            let input = SigningInput {
                method: "POST",
                target: &federation.path,
                host: &federation.origin.host,
                date: &date,
                body: Some(BodyHeaders {
                    content_length: body.len(),
                    content_type: JSON,
                    content_sha256: &sha,
                }),
            };
            let signature = rsa_sha256(&leaf.key, &input.federation_signing_string())
                .map_err(|e| StoreError::Other(format!("instance principal: {e}")))?;
            let mut authorization = HeaderValue::from_str(&authorization(
                &key_id,
                FEDERATION_SIGNED_HEADERS,
                &signature,
            ))
            .map_err(|_| invalid("the Authorization header"))?;
            authorization.set_sensitive(true);
            let headers = vec![
                (
                    http::header::DATE,
                    HeaderValue::from_str(&date).map_err(|_| invalid("the date"))?,
                ),
                (
                    http::header::HOST,
                    HeaderValue::from_str(&federation.origin.host)
                        .map_err(|_| invalid("the host"))?,
                ),
                (http::header::ACCEPT, HeaderValue::from_static(JSON)),
                (http::header::CONTENT_TYPE, HeaderValue::from_static(JSON)),
                (http::header::CONTENT_LENGTH, HeaderValue::from(body.len())),
                (
                    HeaderName::from_static(X_CONTENT_SHA256),
                    HeaderValue::from_str(&sha).map_err(|_| invalid("the body hash"))?,
                ),
                (http::header::AUTHORIZATION, authorization),
            ];
            let result = http
                .request(Method::POST, &url, &headers, Some(body.clone()))
                .await;
            let retryable = match &result {
                Ok(r) => matches!(r.status.as_u16(), 429 | 500 | 502 | 503 | 504),
                Err(HttpError::Unavailable(_)) => true,
                Err(HttpError::Invalid(_)) => false,
            };
            if attempt == 1 && retryable && started.elapsed() + RETRY_WAIT < deadline / 2 {
                tokio::time::sleep(RETRY_WAIT).await;
                continue;
            }
            break result.map_err(|e| match e {
                HttpError::Unavailable(m) => StoreError::Unavailable(format!(
                    "instance principal: the OCI auth service at {url}: {m}"
                )),
                HttpError::Invalid(m) => StoreError::Invalid(format!(
                    "instance principal: the OCI auth service at {url}: {m}"
                )),
            })?;
        };
        if !resp.status.is_success() {
            return Err(federation_error(&url, &resp, leaf));
        }
        let dto: TokenDto = resp.json().map_err(|e| {
            StoreError::Other(format!(
                "instance principal: the OCI auth service at {url}: {e}"
            ))
        })?;
        Ok(dto.token)
    }
}

/// A refused token request: what the auth service said, and what to check.
fn federation_error(url: &str, resp: &Response, leaf: &Leaf) -> StoreError {
    let status = resp.status.as_u16();
    let body = refusal(resp);
    let mut detail = format!("HTTP {status}");
    if !body.code.is_empty() {
        detail.push(' ');
        detail.push_str(&truncate(one_line(&body.code), 60));
    }
    let message = scrub(&body.message, None);
    if !message.is_empty() {
        detail.push_str(": ");
        detail.push_str(&message);
    }
    if let Some(id) = header_text(resp, OPC_REQUEST_ID) {
        detail.push_str(&format!(" (opc-request-id {id})"));
    }
    let what = format!("instance principal: token request to the OCI auth service at {url}");
    match status {
        401 | 403 | 404 => StoreError::PermissionDenied(format!(
            "{what}: {detail}; the auth service did not accept the instance certificate of tenancy {} (SHA-256 fingerprint {}) \
             from the instance metadata service: this must run on an OCI compute instance of that tenancy, \
             federationEndpoint (if set) must be the auth endpoint of the instance's realm, and this host's clock must be right \
             (OCI allows 5 minutes of skew)",
            leaf.tenancy, leaf.fingerprint
        )),
        429 => StoreError::Throttled(format!("{what}: {detail}")),
        500..=599 => StoreError::Unavailable(format!("{what}: {detail}")),
        400 => StoreError::Invalid(format!("{what}: {detail}")),
        _ => StoreError::Other(format!("{what}: {detail}")),
    }
}

/// A store error with `what` (the operation and the secret) in front.
fn prefixed(what: &str, e: StoreError) -> StoreError {
    let p = |m: String| format!("{what}: {m}");
    match e {
        StoreError::PermissionDenied(m) => StoreError::PermissionDenied(p(m)),
        StoreError::Unavailable(m) => StoreError::Unavailable(p(m)),
        StoreError::Throttled(m) => StoreError::Throttled(p(m)),
        StoreError::PendingDeletion(m) => StoreError::PendingDeletion(p(m)),
        StoreError::Invalid(m) => StoreError::Invalid(p(m)),
        StoreError::Other(m) => StoreError::Other(p(m)),
    }
}

/// Who signs the store's requests.
enum Principal {
    ApiKey(ApiKey),
    Instance(InstancePrincipal),
}

// ---------------------------------------------------------------------------
// Answers.

/// `Secret` and `SecretSummary` (the fields used).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SecretDto {
    id: String,
    #[serde(default)]
    secret_name: String,
    #[serde(default)]
    vault_id: String,
    #[serde(default)]
    lifecycle_state: String,
    #[serde(default)]
    lifecycle_details: Option<String>,
    #[serde(default)]
    freeform_tags: Option<BTreeMap<String, String>>,
    #[serde(default)]
    current_version_number: Option<u64>,
    #[serde(default)]
    time_of_deletion: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BundleDto {
    secret_id: String,
    version_number: u64,
    #[serde(default)]
    secret_bundle_content: Option<BundleContentDto>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BundleContentDto {
    #[serde(default)]
    content_type: String,
    #[serde(default)]
    content: Option<String>,
}

/// A secret found by name, and its current content when the lookup read it
/// already.
struct Found {
    dto: SecretDto,
    bundle: Option<Bundle>,
}

/// A secret's current content.
struct Bundle {
    secret_id: String,
    version: u64,
    payload: SecretValue,
}

/// OCI's error JSON: `{"code": "...", "message": "..."}`.
#[derive(Default, Deserialize)]
struct OciErrorBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

fn refusal(resp: &Response) -> OciErrorBody {
    serde_json::from_slice(&resp.body).unwrap_or_default()
}

fn header_text(resp: &Response, name: &str) -> Option<String> {
    resp.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| truncate(v.to_owned(), 120))
}

/// `CreateSecret` was refused because the vault already holds the name.
fn name_taken(resp: &Response) -> bool {
    match resp.status.as_u16() {
        409 => refusal(resp).code != "IncorrectState",
        400 => refusal(resp)
            .message
            .to_ascii_lowercase()
            .contains("already exist"),
        _ => false,
    }
}

/// A service message without the written value (any form), bounded.
fn scrub(message: &str, payload: Option<&SecretValue>) -> String {
    super::text::redact(message, payload, Vec::new(), 240)
}

fn transport_error(what: &str, e: HttpError) -> StoreError {
    match e {
        HttpError::Unavailable(m) => StoreError::Unavailable(format!("{what}: {m}")),
        HttpError::Invalid(m) => StoreError::Invalid(format!("{what}: {m}")),
    }
}

fn unexpected(what: &str, problem: impl std::fmt::Display) -> StoreError {
    StoreError::Other(format!("{what}: unexpected answer from OCI: {problem}"))
}

/// A JSON body (it may hold a value): serialized once, the tree wiped.
fn body_bytes(mut doc: Value) -> Result<Bytes, StoreError> {
    let bytes = serde_json::to_vec(&doc);
    crate::secret::wipe_json(&mut doc);
    bytes
        .map(Bytes::from)
        .map_err(|e| StoreError::Invalid(format!("JSON body: {e}")))
}

/// `path?k=v&...` with the query values percent-encoded.
fn target_of(path: &str, query: &[(&str, String)]) -> String {
    if query.is_empty() {
        return path.to_owned();
    }
    let q: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, COMPONENT)))
        .collect();
    format!("{path}?{}", q.join("&"))
}

// ---------------------------------------------------------------------------
// Values and tags.

/// A value and its tags, checked against OCI's limits.
struct Prepared {
    /// base64 of the value.
    content: Zeroizing<String>,
    tags: BTreeMap<String, String>,
    description: Option<String>,
}

fn prepare(
    payload: &SecretValue,
    owner: &Ownership,
    options: &WriteOptions,
) -> Result<Prepared, StoreError> {
    if payload.len() > MAX_CONTENT_BYTES {
        return Err(StoreError::Invalid(format!(
            "the value is {} bytes; OCI Vault secrets hold at most {MAX_CONTENT_BYTES} bytes",
            payload.len()
        )));
    }
    let mut tags = options.tags.clone();
    tags.extend(owner.tags());
    check_tags(&tags)?;
    Ok(Prepared {
        content: Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(payload.expose())),
        tags,
        description: options.description.clone().filter(|d| !d.is_empty()),
    })
}

/// OCI's freeform tag rules, before anything is written.
fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), StoreError> {
    if tags.len() > MAX_TAGS {
        return Err(StoreError::Invalid(format!(
            "{} freeform tags (5 for ownership, the rest from the store's tags, the destination and the tags already on the secret); OCI allows at most {MAX_TAGS} per resource",
            tags.len()
        )));
    }
    let mut seen = BTreeSet::new();
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > MAX_TAG_KEY_CHARS {
            return Err(StoreError::Invalid(format!(
                "tag name {:?} must have 1 to {MAX_TAG_KEY_CHARS} characters for OCI",
                truncate(k.clone(), 60)
            )));
        }
        if v.chars().count() > MAX_TAG_VALUE_CHARS {
            return Err(StoreError::Invalid(format!(
                "the value of tag {k:?} is longer than OCI's {MAX_TAG_VALUE_CHARS} characters"
            )));
        }
        if !seen.insert(k.to_lowercase()) {
            return Err(StoreError::Invalid(format!(
                "tag name {k:?} differs from another only in case; OCI tag names are case-insensitive"
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The store.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Service {
    Vaults,
    Secrets,
}

/// One request.
struct Req {
    service: Service,
    method: Method,
    /// `/20180608/secrets`.
    path: String,
    query: Vec<(&'static str, String)>,
    body: Option<Bytes>,
    retry_token: Option<String>,
    /// May be sent twice: reads, and creates carrying a retry token.
    idempotent: bool,
}

/// What an error mapping needs to know about a call.
struct Call<'a> {
    /// `CreateSecret`, `ListSecrets`, ...
    op: &'static str,
    name: &'a RemoteName,
    /// What the user's policy must allow.
    needs: String,
    /// The value being written, scrubbed from any message.
    payload: Option<&'a SecretValue>,
}

impl Call<'_> {
    fn what(&self) -> String {
        format!("{} {}", self.op, self.name)
    }
}

enum Created {
    Version(u64),
    /// The vault already holds a secret of that name.
    Taken,
}

enum Updated {
    Version(Option<u64>),
    /// `409`: the secret is changing state.
    Busy(StoreError),
}

pub struct OciVaultStore {
    http: HttpClient,
    principal: Principal,
    region: String,
    compartment_id: String,
    vault_id: String,
    key_id: String,
    vaults: Origin,
    secrets: Origin,
    deadline: Duration,
    locks: Box<[tokio::sync::Mutex<()>]>,
}

impl OciVaultStore {
    /// Builds the client once; it is shared by all reviews. Reads the API
    /// key (naming the file when it is missing or unusable) and the CA file;
    /// contacts nothing (an instance principal gets its first token with the
    /// first request).
    pub async fn build(config: &StoreConfig) -> Result<Self, String> {
        let s = settings(config)?;
        let principal = match &s.auth {
            AuthSettings::ApiKey {
                tenancy,
                user,
                fingerprint,
                private_key_file,
            } => Principal::ApiKey(ApiKey::load(tenancy, user, fingerprint, private_key_file)?),
            AuthSettings::InstancePrincipal {
                metadata,
                federation,
            } => Principal::Instance(InstancePrincipal::new(
                metadata.clone(),
                federation.clone(),
                s.region.clone(),
            )),
        };
        let deadline = config.deadline.unwrap_or(DEFAULT_DEADLINE);
        let http = HttpClient::new(&HttpConfig {
            ca_file: s.ca_file.clone(),
            connect_timeout: CONNECT_TIMEOUT.min(deadline),
            request_timeout: deadline,
        })?;
        match &principal {
            Principal::ApiKey(key) => tracing::info!(
                region = %s.region,
                vault = %s.vault_id,
                compartment = %s.compartment_id,
                api_key = %key.key_id,
                "oci-vault store ready"
            ),
            Principal::Instance(instance) => tracing::info!(
                region = %s.region,
                vault = %s.vault_id,
                compartment = %s.compartment_id,
                metadata = %instance.metadata.url(),
                "oci-vault store ready (instance principal)"
            ),
        }
        Ok(Self {
            http,
            principal,
            region: s.region,
            compartment_id: s.compartment_id,
            vault_id: s.vault_id,
            key_id: s.key_id,
            vaults: s.vaults,
            secrets: s.secrets,
            deadline,
            locks: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        })
    }

    /// The `keyId` the store signs with when it uses an API key:
    /// `{tenancy}/{user}/{fingerprint}`.
    pub fn api_key_id(&self) -> Option<&str> {
        match &self.principal {
            Principal::ApiKey(key) => Some(key.key_id.as_str()),
            Principal::Instance(_) => None,
        }
    }

    fn lock(&self, name: &RemoteName) -> &tokio::sync::Mutex<()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        name.as_str().hash(&mut h);
        let i = (h.finish() as usize) % self.locks.len();
        &self.locks[i]
    }

    // -- permissions, for messages -------------------------------------------

    /// Who signs, who is granted in the policies, and as whom: for
    /// messages.
    fn grantee(&self) -> (&'static str, &'static str, &'static str) {
        match &self.principal {
            Principal::ApiKey(_) => ("the API key's user", "its groups need", "group <group>"),
            Principal::Instance(_) => (
                "the instance principal",
                "a dynamic group whose matching rule takes in this instance needs",
                "dynamic-group <dynamic-group>",
            ),
        }
    }

    fn needs_read(&self, what: &str) -> String {
        let (who, holder, grantee) = self.grantee();
        format!(
            "either it does not exist or {who} may not {what}: {holder} a policy like \
             \"Allow {grantee} to read secret-family in compartment <compartment>\" for compartment {} \
             (ListSecrets needs inspect secrets, GetSecret read secrets, GetSecretBundle read secret-bundles)",
            self.compartment_id
        )
    }

    fn needs_write(&self, key_id: &str) -> String {
        let (who, holder, grantee) = self.grantee();
        format!(
            "either {who} may not write secrets or vaultId {}, keyId {key_id} or compartmentId {} \
             does not exist in region {}: {holder} \"Allow {grantee} to manage secret-family in compartment <compartment>\" \
             and \"Allow {grantee} to use keys in compartment <compartment> where target.key.id = '{key_id}'\"",
            self.vault_id, self.compartment_id, self.region
        )
    }

    /// What a `401` means.
    fn signature_hint(&self) -> String {
        match &self.principal {
            Principal::ApiKey(key) => format!(
                "OCI did not accept the request signature of API key {}: check tenancy, user and fingerprint, \
                 that this key's public half is uploaded to the user (Identity > Users > API keys), and this host's clock \
                 (OCI allows 5 minutes of skew)",
                key.key_id
            ),
            Principal::Instance(_) => "OCI did not accept the request signature of the instance principal's security token, \
                 also not with a new token: check this host's clock (OCI allows 5 minutes of skew)"
                .to_owned(),
        }
    }

    // -- requests --------------------------------------------------------------

    /// The instance principal's security token (`None` with an API key).
    async fn session(&self, what: &str) -> Result<Option<Arc<Session>>, StoreError> {
        match &self.principal {
            Principal::ApiKey(_) => Ok(None),
            Principal::Instance(instance) => instance
                .session(&self.http, self.deadline)
                .await
                .map(Some)
                .map_err(|e| prefixed(what, e)),
        }
    }

    /// One signed request.
    async fn send_once(
        &self,
        req: &Req,
        what: &str,
        session: Option<&Session>,
    ) -> Result<Response, StoreError> {
        let origin = match req.service {
            Service::Vaults => &self.vaults,
            Service::Secrets => &self.secrets,
        };
        let target = target_of(&req.path, &req.query);
        let url = format!("{}{target}", origin.base);
        let date = http_date(time::OffsetDateTime::now_utc());
        let body = matches!(req.method, Method::POST | Method::PUT)
            .then(|| req.body.clone().unwrap_or_default());
        let sha = body.as_deref().map(body_sha256);
        let input = SigningInput {
            method: req.method.as_str(),
            target: &target,
            host: &origin.host,
            date: &date,
            body: match (&body, &sha) {
                (Some(b), Some(s)) => Some(BodyHeaders {
                    content_length: b.len(),
                    content_type: JSON,
                    content_sha256: s,
                }),
                _ => None,
            },
        };
        let header = |value: &str| {
            HeaderValue::from_str(value).map_err(|_| {
                StoreError::Invalid(format!(
                    "{what}: a header value has characters a header cannot carry"
                ))
            })
        };
        let signed = match (&self.principal, session) {
            (Principal::ApiKey(key), _) => key.authorization(&input),
            (Principal::Instance(_), Some(session)) => session.authorization(&input),
            (Principal::Instance(_), None) => Err("no security token to sign with".to_owned()),
        };
        let mut authorization =
            header(&signed.map_err(|e| StoreError::Other(format!("{what}: {e}")))?)?;
        authorization.set_sensitive(true);
        let mut headers = vec![
            (http::header::DATE, header(&date)?),
            (http::header::HOST, header(&origin.host)?),
            (http::header::ACCEPT, HeaderValue::from_static(JSON)),
        ];
        if let (Some(b), Some(s)) = (&body, &sha) {
            headers.push((http::header::CONTENT_TYPE, HeaderValue::from_static(JSON)));
            headers.push((http::header::CONTENT_LENGTH, HeaderValue::from(b.len())));
            headers.push((HeaderName::from_static(X_CONTENT_SHA256), header(s)?));
        }
        if let Some(token) = &req.retry_token {
            headers.push((HeaderName::from_static(OPC_RETRY_TOKEN), header(token)?));
        }
        headers.push((http::header::AUTHORIZATION, authorization));
        self.http
            .request(req.method.clone(), &url, &headers, body)
            .await
            .map_err(|e| transport_error(what, e))
    }

    /// A request, sent once more after a `429`/`5xx` answer or a lost
    /// connection when it is idempotent and time is left. A security token
    /// refused with `401` (revoked, or expired early) is replaced and the
    /// request sent once more with the new one, as Oracle's SDKs do (a
    /// refused request did nothing).
    async fn send(&self, req: &Req, what: &str) -> Result<Response, StoreError> {
        let started = Instant::now();
        let mut session = self.session(what).await?;
        let mut first = self.send_once(req, what, session.as_deref()).await;
        let refused = matches!(&first, Ok(r) if r.status == StatusCode::UNAUTHORIZED);
        if refused
            && let (Principal::Instance(instance), Some(used)) = (&self.principal, session.take())
        {
            instance.forget(&used).await;
            session = self.session(what).await?;
            first = self.send_once(req, what, session.as_deref()).await;
        }
        let retryable = match &first {
            Ok(r) => matches!(r.status.as_u16(), 429 | 500 | 502 | 503 | 504),
            Err(StoreError::Unavailable(_)) => true,
            Err(_) => false,
        };
        if !(req.idempotent && retryable && started.elapsed() + RETRY_WAIT < self.deadline / 2) {
            return first;
        }
        tokio::time::sleep(RETRY_WAIT).await;
        self.send_once(req, what, session.as_deref()).await
    }

    /// A non-success answer as a store error naming the operation, the
    /// secret, OCI's code and message, and what is needed; never a value.
    fn status_error(&self, call: &Call<'_>, resp: &Response) -> StoreError {
        let status = resp.status.as_u16();
        let body = refusal(resp);
        let message = scrub(&body.message, call.payload);
        let mut detail = format!("HTTP {status}");
        if !body.code.is_empty() {
            detail.push(' ');
            detail.push_str(&truncate(one_line(&body.code), 60));
        }
        if !message.is_empty() {
            detail.push_str(": ");
            detail.push_str(&message);
        }
        if let Some(id) = header_text(resp, OPC_REQUEST_ID) {
            detail.push_str(&format!(" (opc-request-id {id})"));
        }
        let what = call.what();
        match (status, body.code.as_str()) {
            (401, _) => {
                StoreError::PermissionDenied(format!("{what}: {detail}; {}", self.signature_hint()))
            }
            (403, _)
            | (404, "NotAuthorizedOrNotFound")
            | (400 | 404, "RelatedResourceNotAuthorizedOrNotFound")
            | (409, "NotAuthorizedOrResourceAlreadyExists") => {
                StoreError::PermissionDenied(format!("{what}: {detail}; {}", call.needs))
            }
            (429, _) => StoreError::Throttled(format!("{what}: {detail}")),
            (409 | 412, _) => StoreError::Unavailable(format!(
                "{what}: {detail}; the secret is changing state, a retry converges"
            )),
            (500..=599, _) => StoreError::Unavailable(format!("{what}: {detail}")),
            (400 | 404 | 405 | 413 | 422, _) => StoreError::Invalid(format!("{what}: {detail}")),
            _ => StoreError::Other(format!("{what}: {detail}")),
        }
    }

    // -- operations --------------------------------------------------------------

    /// `ListSecrets` by name in the store's compartment and vault: the
    /// secret of that name, preferring one that is not `DELETED`.
    async fn find(&self, name: &RemoteName) -> Result<Option<SecretDto>, StoreError> {
        let call = Call {
            op: "ListSecrets",
            name,
            needs: self.needs_read("list secrets (inspect secrets)"),
            payload: None,
        };
        let what = call.what();
        let mut deleted: Option<SecretDto> = None;
        let mut page: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let mut query = vec![
                ("compartmentId", self.compartment_id.clone()),
                ("limit", LIST_LIMIT.to_owned()),
                ("name", name.as_str().to_owned()),
            ];
            if let Some(p) = page.take() {
                query.push(("page", p));
            }
            query.push(("vaultId", self.vault_id.clone()));
            let req = Req {
                service: Service::Vaults,
                method: Method::GET,
                path: format!("{VAULTS_API}/secrets"),
                query,
                body: None,
                retry_token: None,
                idempotent: true,
            };
            let resp = self.send(&req, &what).await?;
            if !resp.status.is_success() {
                return Err(self.status_error(&call, &resp));
            }
            let items: Vec<SecretDto> = resp.json().map_err(|e| unexpected(&what, e))?;
            for item in items {
                if item.secret_name != name.as_str()
                    || (!item.vault_id.is_empty() && item.vault_id != self.vault_id)
                {
                    continue;
                }
                if item.lifecycle_state == DELETED {
                    deleted.get_or_insert(item);
                } else {
                    return Ok(Some(item));
                }
            }
            let next = resp
                .headers
                .get(OPC_NEXT_PAGE)
                .and_then(|v| v.to_str().ok())
                .filter(|p| !p.is_empty())
                .map(str::to_owned);
            match next {
                Some(next) => page = Some(next),
                None => return Ok(deleted),
            }
        }
        Err(StoreError::Other(format!(
            "{what}: more than {MAX_LIST_PAGES} pages of secrets named {name}"
        )))
    }

    /// `GetSecret`.
    async fn get_secret(&self, id: &str, name: &RemoteName) -> Result<SecretDto, StoreError> {
        let call = Call {
            op: "GetSecret",
            name,
            needs: self.needs_read("read secrets"),
            payload: None,
        };
        let what = call.what();
        let req = Req {
            service: Service::Vaults,
            method: Method::GET,
            path: format!(
                "{VAULTS_API}/secrets/{}",
                utf8_percent_encode(id, COMPONENT)
            ),
            query: Vec::new(),
            body: None,
            retry_token: None,
            idempotent: true,
        };
        let resp = self.send(&req, &what).await?;
        if !resp.status.is_success() {
            return Err(self.status_error(&call, &resp));
        }
        resp.json().map_err(|e| unexpected(&what, e))
    }

    /// Waits while the secret is in one of the `busy` states, within the
    /// store's deadline.
    async fn settle(
        &self,
        mut dto: SecretDto,
        name: &RemoteName,
        busy: &[&str],
    ) -> Result<SecretDto, StoreError> {
        let started = Instant::now();
        let mut wait = Duration::from_millis(100);
        while busy.contains(&dto.lifecycle_state.as_str()) {
            if started.elapsed() + wait >= self.deadline {
                return Err(StoreError::Unavailable(format!(
                    "GetSecret {name}: secret {} is still {} after {} ms; a retry converges",
                    dto.id,
                    dto.lifecycle_state,
                    started.elapsed().as_millis()
                )));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(1));
            dto = self.get_secret(&dto.id, name).await?;
        }
        Ok(dto)
    }

    /// Refuses secrets that must not be read as present or written.
    fn check_state(&self, dto: &SecretDto, name: &RemoteName) -> Result<(), StoreError> {
        let id = &dto.id;
        let vault = &self.vault_id;
        match dto.lifecycle_state.as_str() {
            "PENDING_DELETION" | "SCHEDULING_DELETION" => {
                let when = dto
                    .time_of_deletion
                    .as_deref()
                    .map(|t| format!(" (at {})", truncate(t.to_owned(), 40)))
                    .unwrap_or_default();
                Err(StoreError::PendingDeletion(format!(
                    "{name}: secret {id} in vault {vault} is scheduled for deletion{when} and OCI keeps its name until then; \
                     cancel the deletion to keep it (oci vault secret cancel-secret-deletion --secret-id {id}), \
                     or mirror to another name"
                )))
            }
            "DELETING" => Err(StoreError::PendingDeletion(format!(
                "{name}: secret {id} in vault {vault} is being deleted and OCI keeps its name reserved; mirror to another name"
            ))),
            DELETED => Err(StoreError::PendingDeletion(format!(
                "{name}: deleted secret {id} still holds this name in vault {vault} (OCI keeps the names of deleted secrets reserved for a while); \
                 mirror to another name or retry later"
            ))),
            "FAILED" => Err(StoreError::Other(format!(
                "{name}: secret {id} in vault {vault} is in state FAILED{}; repair or delete it",
                dto.lifecycle_details
                    .as_deref()
                    .filter(|d| !d.is_empty())
                    .map(|d| format!(" ({})", truncate(one_line(d), 120)))
                    .unwrap_or_default()
            ))),
            _ => Ok(()),
        }
    }

    /// The content of a bundle answer.
    fn bundle_of(&self, what: &str, resp: &Response) -> Result<Bundle, StoreError> {
        let mut dto: BundleDto = resp.json().map_err(|e| unexpected(what, e))?;
        let Some(content) = dto.secret_bundle_content.as_mut() else {
            return Err(unexpected(what, "no secretBundleContent"));
        };
        let mut text = content.content.take().unwrap_or_default();
        if content.content_type != "BASE64" {
            text.zeroize();
            return Err(StoreError::Invalid(format!(
                "{what}: the secret's content type is {:?}, not BASE64",
                truncate(content.content_type.clone(), 20)
            )));
        }
        let decoded = base64::engine::general_purpose::STANDARD.decode(text.trim().as_bytes());
        text.zeroize();
        let bytes = decoded.map_err(|e| unexpected(what, format!("content is not base64: {e}")))?;
        Ok(Bundle {
            secret_id: dto.secret_id,
            version: dto.version_number,
            payload: SecretValue::new(bytes),
        })
    }

    /// `GetSecretBundle`: the current version.
    async fn bundle(&self, id: &str, name: &RemoteName) -> Result<Bundle, StoreError> {
        let call = Call {
            op: "GetSecretBundle",
            name,
            needs: self.needs_read("read its content (read secret-bundles)"),
            payload: None,
        };
        let what = call.what();
        let req = Req {
            service: Service::Secrets,
            method: Method::GET,
            path: format!(
                "{SECRETS_API}/secretbundles/{}",
                utf8_percent_encode(id, COMPONENT)
            ),
            query: vec![("stage", "CURRENT".to_owned())],
            body: None,
            retry_token: None,
            idempotent: true,
        };
        let resp = self.send(&req, &what).await?;
        if !resp.status.is_success() {
            return Err(self.status_error(&call, &resp));
        }
        self.bundle_of(&what, &resp)
    }

    /// `GetSecretBundleByName` in the store's vault; `None` on `404`.
    async fn bundle_by_name(&self, name: &RemoteName) -> Result<Option<Bundle>, StoreError> {
        let call = Call {
            op: "GetSecretBundleByName",
            name,
            needs: self.needs_read("read its content (read secret-bundles)"),
            payload: None,
        };
        let what = call.what();
        let req = Req {
            service: Service::Secrets,
            method: Method::POST,
            path: format!("{SECRETS_API}/secretbundles/actions/getByName"),
            query: vec![
                ("secretName", name.as_str().to_owned()),
                ("stage", "CURRENT".to_owned()),
                ("vaultId", self.vault_id.clone()),
            ],
            body: None,
            retry_token: None,
            idempotent: true,
        };
        let resp = self.send(&req, &what).await?;
        if resp.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status.is_success() {
            return Err(self.status_error(&call, &resp));
        }
        self.bundle_of(&what, &resp).map(Some)
    }

    /// The secret of a name: the one listed in the store's compartment,
    /// else (names are unique per vault, not per compartment) the one
    /// `GetSecretBundleByName` finds in the vault, else a `DELETED` one
    /// still listed.
    async fn lookup(&self, name: &RemoteName) -> Result<Option<Found>, StoreError> {
        let listed = match self.find(name).await? {
            Some(dto) if dto.lifecycle_state != DELETED => {
                return Ok(Some(Found { dto, bundle: None }));
            }
            other => other,
        };
        if let Some(bundle) = self.bundle_by_name(name).await? {
            let dto = self.get_secret(&bundle.secret_id, name).await?;
            return Ok(Some(Found {
                dto,
                bundle: Some(bundle),
            }));
        }
        Ok(listed.map(|dto| Found { dto, bundle: None }))
    }

    /// The entry of a secret that was found: waited for while it is being
    /// created, refused when it is (pending) deleted or failed.
    async fn present(&self, found: Found, name: &RemoteName) -> Result<RemoteEntry, StoreError> {
        let was_busy = READ_BUSY.contains(&found.dto.lifecycle_state.as_str());
        let dto = self.settle(found.dto, name, READ_BUSY).await?;
        self.check_state(&dto, name)?;
        let bundle = match found.bundle {
            Some(b) if !was_busy => b,
            _ => self.bundle(&dto.id, name).await?,
        };
        Ok(RemoteEntry {
            payload: bundle.payload,
            tags: dto.freeform_tags.unwrap_or_default(),
            version: Some(bundle.version.to_string()),
        })
    }

    async fn read_entry(&self, name: &RemoteName) -> Result<Option<RemoteEntry>, StoreError> {
        match self.lookup(name).await? {
            Some(found) if found.dto.lifecycle_state != DELETED => {
                self.present(found, name).await.map(Some)
            }
            _ => Ok(None),
        }
    }

    /// `CreateSecret` with the first version and the tags, carrying a retry
    /// token.
    async fn create(
        &self,
        name: &RemoteName,
        payload: &SecretValue,
        prepared: &Prepared,
        key_id: &str,
    ) -> Result<Created, StoreError> {
        let call = Call {
            op: "CreateSecret",
            name,
            needs: self.needs_write(key_id),
            payload: Some(payload),
        };
        let what = call.what();
        let mut doc = json!({
            "compartmentId": self.compartment_id,
            "vaultId": self.vault_id,
            "keyId": key_id,
            "secretName": name.as_str(),
            "freeformTags": prepared.tags,
            "secretContent": {
                "contentType": "BASE64",
                "content": prepared.content.as_str(),
                "stage": "CURRENT",
            },
        });
        if let Some(d) = &prepared.description {
            doc["description"] = json!(d);
        }
        let req = Req {
            service: Service::Vaults,
            method: Method::POST,
            path: format!("{VAULTS_API}/secrets"),
            query: Vec::new(),
            body: Some(body_bytes(doc)?),
            retry_token: Some(uuid::Uuid::new_v4().simple().to_string()),
            idempotent: true,
        };
        let resp = self.send(&req, &what).await?;
        if resp.status.is_success() {
            let dto: SecretDto = resp.json().map_err(|e| unexpected(&what, e))?;
            return Ok(Created::Version(dto.current_version_number.unwrap_or(1)));
        }
        if name_taken(&resp) {
            return Ok(Created::Taken);
        }
        Err(self.status_error(&call, &resp))
    }

    /// `UpdateSecret`: a new current version and the tags.
    async fn update(
        &self,
        dto: &SecretDto,
        name: &RemoteName,
        payload: &SecretValue,
        prepared: &Prepared,
        tags: &BTreeMap<String, String>,
    ) -> Result<Updated, StoreError> {
        let call = Call {
            op: "UpdateSecret",
            name,
            needs: self.needs_write(&self.key_id),
            payload: Some(payload),
        };
        let what = call.what();
        let mut doc = json!({
            "freeformTags": tags,
            "secretContent": {
                "contentType": "BASE64",
                "content": prepared.content.as_str(),
                "stage": "CURRENT",
            },
        });
        if let Some(d) = &prepared.description {
            doc["description"] = json!(d);
        }
        let req = Req {
            service: Service::Vaults,
            method: Method::PUT,
            path: format!(
                "{VAULTS_API}/secrets/{}",
                utf8_percent_encode(&dto.id, COMPONENT)
            ),
            query: Vec::new(),
            body: Some(body_bytes(doc)?),
            retry_token: None,
            idempotent: false,
        };
        let resp = self.send(&req, &what).await?;
        if resp.status.is_success() {
            let updated: SecretDto = resp.json().map_err(|e| unexpected(&what, e))?;
            return Ok(Updated::Version(updated.current_version_number));
        }
        if resp.status == StatusCode::CONFLICT {
            return Ok(Updated::Busy(self.status_error(&call, &resp)));
        }
        Err(self.status_error(&call, &resp))
    }

    /// The name is taken: what is there.
    async fn existing_after_conflict(&self, name: &RemoteName) -> Result<RemoteEntry, StoreError> {
        match self.lookup(name).await? {
            Some(found) => self.present(found, name).await,
            None => Err(StoreError::Invalid(format!(
                "CreateSecret {name}: OCI reports the name as taken in vault {}, but no secret of that name is listed in \
                 compartment {} or readable by name; it may be pending deletion in another compartment of the vault",
                self.vault_id, self.compartment_id
            ))),
        }
    }

    fn key_for(&self, options: &WriteOptions) -> Result<String, StoreError> {
        let key = options.kms_key_id.as_deref().unwrap_or(&self.key_id);
        check_ocid(key, "kmsKeyId", &["key"]).map_err(StoreError::Invalid)?;
        Ok(key.to_owned())
    }

    async fn put_locked(
        &self,
        name: &RemoteName,
        payload: &SecretValue,
        prepared: &Prepared,
        key_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let existing = match self.lookup(name).await? {
            Some(found) => found.dto,
            None => {
                // Gone since it was read: write it anew.
                return match self.create(name, payload, prepared, key_id).await? {
                    Created::Version(v) => Ok(Some(v.to_string())),
                    Created::Taken => Err(StoreError::Other(format!(
                        "UpdateSecret {name}: no secret of that name in compartment {}, yet its name is taken in vault {}; a retry converges",
                        self.compartment_id, self.vault_id
                    ))),
                };
            }
        };
        let mut dto = self.settle(existing, name, WRITE_BUSY).await?;
        self.check_state(&dto, name)?;
        let mut attempt = 0;
        loop {
            let mut tags = dto.freeform_tags.clone().unwrap_or_default();
            // Case-insensitive keys: ours replace any spelling of them.
            tags.retain(|k, _| {
                !prepared
                    .tags
                    .keys()
                    .any(|ours| ours.eq_ignore_ascii_case(k) && ours != k)
            });
            tags.extend(prepared.tags.clone());
            check_tags(&tags)?;
            match self.update(&dto, name, payload, prepared, &tags).await? {
                Updated::Version(v) => return Ok(v.map(|v| v.to_string())),
                Updated::Busy(e) if attempt > 0 => return Err(e),
                Updated::Busy(_) => {
                    attempt += 1;
                    dto = self
                        .settle(self.get_secret(&dto.id, name).await?, name, WRITE_BUSY)
                        .await?;
                    self.check_state(&dto, name)?;
                }
            }
        }
    }
}

#[async_trait]
impl SecretStore for OciVaultStore {
    fn kind(&self) -> &'static str {
        TYPE
    }

    /// `CreateSecret` is refused when the vault holds the name.
    fn atomic_create(&self) -> bool {
        true
    }

    fn remote_name(&self, logical: &str) -> Result<RemoteName, String> {
        secret_name(logical).map(RemoteName::new_unchecked)
    }

    async fn read(&self, name: &RemoteName) -> Result<Option<RemoteEntry>, StoreError> {
        self.read_entry(name).await
    }

    async fn create_if_absent(
        &self,
        name: &RemoteName,
        payload: &SecretValue,
        owner: &Ownership,
        options: &WriteOptions,
    ) -> Result<CreateOutcome, StoreError> {
        let prepared = prepare(payload, owner, options)?;
        let key_id = self.key_for(options)?;
        let _guard = self.lock(name).lock().await;
        match self.create(name, payload, &prepared, &key_id).await? {
            Created::Version(v) => Ok(CreateOutcome::Created {
                version: Some(v.to_string()),
            }),
            Created::Taken => Ok(CreateOutcome::Exists(
                self.existing_after_conflict(name).await?,
            )),
        }
    }

    async fn put(
        &self,
        name: &RemoteName,
        payload: &SecretValue,
        owner: &Ownership,
        options: &WriteOptions,
    ) -> Result<Option<String>, StoreError> {
        let prepared = prepare(payload, owner, options)?;
        let key_id = self.key_for(options)?;
        let _guard = self.lock(name).lock().await;
        self.put_locked(name, payload, &prepared, &key_id).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    // Oracle's documented test values: "Request Signatures", sections "Test
    // Values" and "Example Signed Requests", Oracle Cloud Infrastructure
    // Documentation (https://docs.oracle.com/en-us/iaas/Content/API/Concepts/signingrequests.htm).
    // The same key, requests and expected signatures are the signer vectors
    // of Oracle's SDKs (e.g. oracle/oci-go-sdk common/http_signer_test.go).
    // The documented key is a 1024-bit RSA key, which aws-lc-rs refuses to
    // sign with (and OCI refuses to register: API keys are 2048 bits or
    // more); PKCS#1 v1.5 signatures are deterministic, so the documented
    // signature verifying over the signing string built here proves that
    // signing that string with the documented key yields exactly it.
    const DOC_PRIVATE_KEY: &str = "-----BEGIN RSA PRIVATE KEY-----
MIICXgIBAAKBgQDCFENGw33yGihy92pDjZQhl0C36rPJj+CvfSC8+q28hxA161QF
NUd13wuCTUcq0Qd2qsBe/2hFyc2DCJJg0h1L78+6Z4UMR7EOcpfdUE9Hf3m/hs+F
UR45uBJeDK1HSFHD8bHKD6kv8FPGfJTotc+2xjJwoYi+1hqp1fIekaxsyQIDAQAB
AoGBAJR8ZkCUvx5kzv+utdl7T5MnordT1TvoXXJGXK7ZZ+UuvMNUCdN2QPc4sBiA
QWvLw1cSKt5DsKZ8UETpYPy8pPYnnDEz2dDYiaew9+xEpubyeW2oH4Zx71wqBtOK
kqwrXa/pzdpiucRRjk6vE6YY7EBBs/g7uanVpGibOVAEsqH1AkEA7DkjVH28WDUg
f1nqvfn2Kj6CT7nIcE3jGJsZZ7zlZmBmHFDONMLUrXR/Zm3pR5m0tCmBqa5RK95u
412jt1dPIwJBANJT3v8pnkth48bQo/fKel6uEYyboRtA5/uHuHkZ6FQF7OUkGogc
mSJluOdc5t6hI1VsLn0QZEjQZMEOWr+wKSMCQQCC4kXJEsHAve77oP6HtG/IiEn7
kpyUXRNvFsDE0czpJJBvL/aRFUJxuRK91jhjC68sA7NsKMGg5OXb5I5Jj36xAkEA
gIT7aFOYBFwGgQAQkWNKLvySgKbAZRTeLBacpHMuQdl1DfdntvAyqpAZ0lY0RKmW
G6aFKaqQfOXKCyWoUiVknQJAXrlgySFci/2ueKlIE1QqIiLSZ8V8OlpFLRnb1pzI
7U1yQXnTAEFYM560yJlzUpOb1V4cScGd365tiSMvxLOvTA==
-----END RSA PRIVATE KEY-----
";
    const DOC_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDCFENGw33yGihy92pDjZQhl0C3
6rPJj+CvfSC8+q28hxA161QFNUd13wuCTUcq0Qd2qsBe/2hFyc2DCJJg0h1L78+6
Z4UMR7EOcpfdUE9Hf3m/hs+FUR45uBJeDK1HSFHD8bHKD6kv8FPGfJTotc+2xjJw
oYi+1hqp1fIekaxsyQIDAQAB
-----END PUBLIC KEY-----
";
    const DOC_TENANCY: &str =
        "ocid1.tenancy.oc1..aaaaaaaaba3pv6wkcr4jqae5f15p2b2m2yt2j6rx32uzr4h25vqstifsfdsq";
    const DOC_USER: &str =
        "ocid1.user.oc1..aaaaaaaat5nvwcna5j6aqzjcaty5eqbb6qt2jvpkanghtgdaqedqw3rynjq";
    const DOC_FINGERPRINT: &str = "73:61:a2:21:67:e0:df:be:7e:4b:93:1e:15:98:a5:b7";
    const DOC_DATE: &str = "Thu, 05 Jan 2014 21:31:40 GMT";
    const DOC_HOST: &str = "iaas.us-phoenix-1.oraclecloud.com";
    const DOC_GET_TARGET: &str = "/20160918/instances?availabilityDomain=Pjwf%3A%20PHX-AD-1&compartmentId=ocid1.compartment.oc1..aaaaaaaam3we6vgnherjq5q2idnccdflvjsnog7mlr6rtdb25gilchfeyjxa&displayName=TeamXInstances&volumeId=ocid1.volume.oc1.phx.abyhqljrgvttnlx73nmrwfaux7kcvzfs3s66izvxf2h4lgvyndsdsnoiwr5q";
    const DOC_GET_SIGNING_STRING: &str = "date: Thu, 05 Jan 2014 21:31:40 GMT\n(request-target): get /20160918/instances?availabilityDomain=Pjwf%3A%20PHX-AD-1&compartmentId=ocid1.compartment.oc1..aaaaaaaam3we6vgnherjq5q2idnccdflvjsnog7mlr6rtdb25gilchfeyjxa&displayName=TeamXInstances&volumeId=ocid1.volume.oc1.phx.abyhqljrgvttnlx73nmrwfaux7kcvzfs3s66izvxf2h4lgvyndsdsnoiwr5q\nhost: iaas.us-phoenix-1.oraclecloud.com";
    const DOC_GET_SIGNATURE: &str = "GBas7grhyrhSKHP6AVIj/h5/Vp8bd/peM79H9Wv8kjoaCivujVXlpbKLjMPeDUhxkFIWtTtLBj3sUzaFj34XE6YZAHc9r2DmE4pMwOAy/kiITcZxa1oHPOeRheC0jP2dqbTll8fmTZVwKZOKHYPtrLJIJQHJjNvxFWeHQjMaR7M=";
    const DOC_GET_AUTHORIZATION: &str = r#"Signature version="1",headers="date (request-target) host",keyId="ocid1.tenancy.oc1..aaaaaaaaba3pv6wkcr4jqae5f15p2b2m2yt2j6rx32uzr4h25vqstifsfdsq/ocid1.user.oc1..aaaaaaaat5nvwcna5j6aqzjcaty5eqbb6qt2jvpkanghtgdaqedqw3rynjq/73:61:a2:21:67:e0:df:be:7e:4b:93:1e:15:98:a5:b7",algorithm="rsa-sha256",signature="GBas7grhyrhSKHP6AVIj/h5/Vp8bd/peM79H9Wv8kjoaCivujVXlpbKLjMPeDUhxkFIWtTtLBj3sUzaFj34XE6YZAHc9r2DmE4pMwOAy/kiITcZxa1oHPOeRheC0jP2dqbTll8fmTZVwKZOKHYPtrLJIJQHJjNvxFWeHQjMaR7M=""#;
    const DOC_POST_TARGET: &str = "/20160918/volumeAttachments";
    const DOC_POST_BODY: &str = "{\n    \"compartmentId\": \"ocid1.compartment.oc1..aaaaaaaam3we6vgnherjq5q2idnccdflvjsnog7mlr6rtdb25gilchfeyjxa\",\n    \"instanceId\": \"ocid1.instance.oc1.phx.abuw4ljrlsfiqw6vzzxb43vyypt4pkodawglp3wqxjqofakrwvou52gb6s5a\",\n    \"volumeId\": \"ocid1.volume.oc1.phx.abyhqljrgvttnlx73nmrwfaux7kcvzfs3s66izvxf2h4lgvyndsdsnoiwr5q\"\n}";
    const DOC_POST_SHA256: &str = "V9Z20UJTvkvpJ50flBzKE32+6m2zJjweHpDMX/U4Uy0=";
    const DOC_POST_SIGNING_STRING: &str = "date: Thu, 05 Jan 2014 21:31:40 GMT\n(request-target): post /20160918/volumeAttachments\nhost: iaas.us-phoenix-1.oraclecloud.com\ncontent-length: 316\ncontent-type: application/json\nx-content-sha256: V9Z20UJTvkvpJ50flBzKE32+6m2zJjweHpDMX/U4Uy0=";
    const DOC_POST_SIGNATURE: &str = "Mje8vIDPlwIHmD/cTDwRxE7HaAvBg16JnVcsuqaNRim23fFPgQfLoOOxae6WqKb1uPjYEl0qIdazWaBy/Ml8DRhqlocMwoSXv0fbukP8J5N80LCmzT/FFBvIvTB91XuXI3hYfP9Zt1l7S6ieVadHUfqBedWH0itrtPJBgKmrWso=";
    const DOC_POST_AUTHORIZATION: &str = r#"Signature version="1",headers="date (request-target) host content-length content-type x-content-sha256",keyId="ocid1.tenancy.oc1..aaaaaaaaba3pv6wkcr4jqae5f15p2b2m2yt2j6rx32uzr4h25vqstifsfdsq/ocid1.user.oc1..aaaaaaaat5nvwcna5j6aqzjcaty5eqbb6qt2jvpkanghtgdaqedqw3rynjq/73:61:a2:21:67:e0:df:be:7e:4b:93:1e:15:98:a5:b7",algorithm="rsa-sha256",signature="Mje8vIDPlwIHmD/cTDwRxE7HaAvBg16JnVcsuqaNRim23fFPgQfLoOOxae6WqKb1uPjYEl0qIdazWaBy/Ml8DRhqlocMwoSXv0fbukP8J5N80LCmzT/FFBvIvTB91XuXI3hYfP9Zt1l7S6ieVadHUfqBedWH0itrtPJBgKmrWso=""#;

    fn pem_body(pem: &str) -> Vec<u8> {
        let b64: String = pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<Vec<_>>()
            .concat();
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
    }

    /// The documented signature verifies, with the documented public key,
    /// over `signing_string`.
    fn documented_signature_verifies(signature: &str, signing_string: &str) -> bool {
        let spki = pem_body(DOC_PUBLIC_KEY);
        let signature = base64::engine::general_purpose::STANDARD
            .decode(signature)
            .unwrap();
        aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
            &spki,
        )
        .verify(signing_string.as_bytes(), &signature)
        .is_ok()
    }

    fn doc_key_id() -> String {
        format!("{DOC_TENANCY}/{DOC_USER}/{DOC_FINGERPRINT}")
    }

    #[test]
    fn the_documented_get_request_is_signed_exactly() {
        let input = SigningInput {
            method: "GET",
            target: DOC_GET_TARGET,
            host: DOC_HOST,
            date: DOC_DATE,
            body: None,
        };
        assert_eq!(input.headers(), "date (request-target) host");
        assert_eq!(input.signing_string(), DOC_GET_SIGNING_STRING);
        assert!(documented_signature_verifies(
            DOC_GET_SIGNATURE,
            &input.signing_string()
        ));
        assert_eq!(
            authorization(&doc_key_id(), &input.headers(), DOC_GET_SIGNATURE),
            DOC_GET_AUTHORIZATION
        );
        // A different signing string does not verify: the check has teeth.
        let other = SigningInput {
            host: "iaas.us-ashburn-1.oraclecloud.com",
            ..input
        };
        assert!(!documented_signature_verifies(
            DOC_GET_SIGNATURE,
            &other.signing_string()
        ));
    }

    #[test]
    fn the_documented_post_request_is_signed_exactly() {
        assert_eq!(DOC_POST_BODY.len(), 316);
        let sha = body_sha256(DOC_POST_BODY.as_bytes());
        assert_eq!(sha, DOC_POST_SHA256);
        let input = SigningInput {
            method: "POST",
            target: DOC_POST_TARGET,
            host: DOC_HOST,
            date: DOC_DATE,
            body: Some(BodyHeaders {
                content_length: DOC_POST_BODY.len(),
                content_type: "application/json",
                content_sha256: &sha,
            }),
        };
        assert_eq!(
            input.headers(),
            "date (request-target) host content-length content-type x-content-sha256"
        );
        assert_eq!(input.signing_string(), DOC_POST_SIGNING_STRING);
        assert!(documented_signature_verifies(
            DOC_POST_SIGNATURE,
            &input.signing_string()
        ));
        assert_eq!(
            authorization(&doc_key_id(), &input.headers(), DOC_POST_SIGNATURE),
            DOC_POST_AUTHORIZATION
        );
    }

    #[test]
    fn the_documented_key_has_the_documented_fingerprint() {
        assert_eq!(key_fingerprint(&pem_body(DOC_PUBLIC_KEY)), DOC_FINGERPRINT);
    }

    #[test]
    fn dates_are_rfc_7231_in_gmt() {
        let t = time::OffsetDateTime::from_unix_timestamp(1_388_957_500).unwrap();
        // The documented example's weekday ("Thu") does not match its date:
        // 5 January 2014 was a Sunday.
        assert_eq!(http_date(t), "Sun, 05 Jan 2014 21:31:40 GMT");
        let t = time::OffsetDateTime::from_unix_timestamp(1_700_000_000)
            .unwrap()
            .to_offset(time::UtcOffset::from_hms(2, 0, 0).unwrap());
        assert_eq!(http_date(t), "Tue, 14 Nov 2023 22:13:20 GMT");
    }

    fn pem(label: &str, der: &[u8]) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    /// The `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo` (the content of
    /// its OCTET STRING).
    fn pkcs8_to_pkcs1(der: &[u8]) -> Vec<u8> {
        fn tlv(d: &[u8]) -> (u8, &[u8], &[u8]) {
            let tag = d[0];
            let (len, start) = match d[1] {
                n if n < 0x80 => (n as usize, 2),
                0x81 => (d[2] as usize, 3),
                0x82 => (((d[2] as usize) << 8) | d[3] as usize, 4),
                _ => panic!("length form"),
            };
            (tag, &d[start..start + len], &d[start + len..])
        }
        let (tag, seq, _) = tlv(der);
        assert_eq!(tag, 0x30);
        let (_, _, rest) = tlv(seq); // version
        let (_, _, rest) = tlv(rest); // algorithm
        let (tag, key, _) = tlv(rest);
        assert_eq!(tag, 0x04);
        key.to_vec()
    }

    #[test]
    fn api_keys_load_from_pkcs1_and_pkcs8_and_sign_verifiably() {
        let dir = tempfile::tempdir().unwrap();
        let pair = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8 = pair.as_der().unwrap();
        let pkcs8: &[u8] = AsRef::<[u8]>::as_ref(&*pkcs8);
        let spki = pair.public_key().as_der().unwrap();
        let spki: Vec<u8> = AsRef::<[u8]>::as_ref(&*spki).to_vec();
        let fingerprint = key_fingerprint(&spki);
        let p8 = dir.path().join("p8.pem");
        std::fs::write(&p8, pem("PRIVATE KEY", pkcs8)).unwrap();
        let p1 = dir.path().join("p1.pem");
        std::fs::write(&p1, pem("RSA PRIVATE KEY", &pkcs8_to_pkcs1(pkcs8))).unwrap();
        for file in [&p8, &p1] {
            let key = ApiKey::load(DOC_TENANCY, DOC_USER, &fingerprint, file).unwrap();
            assert_eq!(
                key.key_id,
                format!("{DOC_TENANCY}/{DOC_USER}/{fingerprint}")
            );
            let sha = body_sha256(b"{}");
            let input = SigningInput {
                method: "PUT",
                target: "/20180608/secrets/ocid1.vaultsecret.oc1.iad.x",
                host: "vaults.us-ashburn-1.oci.oraclecloud.com",
                date: DOC_DATE,
                body: Some(BodyHeaders {
                    content_length: 2,
                    content_type: "application/json",
                    content_sha256: &sha,
                }),
            };
            let header = key.authorization(&input).unwrap();
            let signature = header
                .split("signature=\"")
                .nth(1)
                .and_then(|s| s.strip_suffix('"'))
                .unwrap();
            assert_eq!(
                header,
                authorization(&key.key_id, &input.headers(), signature)
            );
            let signature = base64::engine::general_purpose::STANDARD
                .decode(signature)
                .unwrap();
            aws_lc_rs::signature::UnparsedPublicKey::new(
                &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
                &spki,
            )
            .verify(input.signing_string().as_bytes(), &signature)
            .unwrap();
        }

        // A fingerprint of another key is a start error naming both keys.
        let err = ApiKey::load(DOC_TENANCY, DOC_USER, DOC_FINGERPRINT, &p8).unwrap_err();
        assert!(
            err.contains("fingerprint")
                && err.contains("privateKeyFile")
                && err.contains(&fingerprint),
            "{err}"
        );
    }

    #[test]
    fn unusable_key_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = ApiKey::load(DOC_TENANCY, DOC_USER, DOC_FINGERPRINT, &missing).unwrap_err();
        assert!(
            err.contains("privateKeyFile") && err.contains("missing.pem"),
            "{err}"
        );

        // The documented key is 1024 bits: too small for an API key.
        let small = dir.path().join("small.pem");
        std::fs::write(&small, DOC_PRIVATE_KEY).unwrap();
        let err = ApiKey::load(DOC_TENANCY, DOC_USER, DOC_FINGERPRINT, &small).unwrap_err();
        assert!(err.contains("small.pem") && err.contains("2048"), "{err}");

        let encrypted = dir.path().join("enc.pem");
        std::fs::write(
            &encrypted,
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = ApiKey::load(DOC_TENANCY, DOC_USER, DOC_FINGERPRINT, &encrypted).unwrap_err();
        assert!(
            err.contains("enc.pem") && err.contains("encrypted"),
            "{err}"
        );

        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a key\n").unwrap();
        let err = ApiKey::load(DOC_TENANCY, DOC_USER, DOC_FINGERPRINT, &junk).unwrap_err();
        assert!(
            err.contains("junk.pem") && err.contains("no PEM private key"),
            "{err}"
        );
    }

    fn config(settings: Value) -> StoreConfig {
        let mut doc = json!({"name": "oci", "type": TYPE, "namespaces": ["*"]});
        doc.as_object_mut()
            .unwrap()
            .extend(settings.as_object().unwrap().clone());
        serde_json::from_value(doc).unwrap()
    }

    fn base() -> Value {
        json!({
            "region": "us-ashburn-1",
            "compartmentId": "ocid1.compartment.oc1..aaaaaaaacomp",
            "vaultId": "ocid1.vault.oc1.iad.bbbbbbbb.aaaaaaaavault",
            "kmsKeyId": "ocid1.key.oc1.iad.bbbbbbbb.aaaaaaaakey",
            "tenancy": DOC_TENANCY,
            "user": DOC_USER,
            "fingerprint": "73:61:A2:21:67:E0:DF:BE:7E:4B:93:1E:15:98:A5:B7",
            "privateKeyFile": "/keys/oci.pem",
        })
    }

    fn with(changes: Value) -> Value {
        let mut doc = base();
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                doc.as_object_mut().unwrap().remove(k);
            } else {
                doc[k] = v.clone();
            }
        }
        doc
    }

    #[test]
    fn settings_are_checked_with_the_key_named() {
        let p = settings(&config(base())).unwrap();
        let AuthSettings::ApiKey { fingerprint, .. } = &p.auth else {
            panic!("apiKey is the default: {:?}", p.auth);
        };
        assert_eq!(fingerprint.as_str(), DOC_FINGERPRINT, "lowercased");
        assert_eq!(p.key_id, "ocid1.key.oc1.iad.bbbbbbbb.aaaaaaaakey");
        assert_eq!(
            p.vaults,
            Origin {
                base: "https://vaults.us-ashburn-1.oci.oraclecloud.com".into(),
                host: "vaults.us-ashburn-1.oci.oraclecloud.com".into(),
            }
        );
        assert_eq!(
            p.secrets.base,
            "https://secrets.vaults.us-ashburn-1.oci.oraclecloud.com"
        );
        let p = settings(&config(with(json!({
            "kmsKeyId": null,
            "keyId": "ocid1.key.oc1.iad.bbbbbbbb.aaaaaaaakey2",
            "endpoint": "http://127.0.0.1:8080/",
            "secretsEndpoint": "https://secrets.example:8443",
        }))))
        .unwrap();
        assert_eq!(p.key_id, "ocid1.key.oc1.iad.bbbbbbbb.aaaaaaaakey2");
        assert_eq!(p.vaults.host, "127.0.0.1:8080");
        assert_eq!(p.vaults.base, "http://127.0.0.1:8080");
        assert_eq!(p.secrets.host, "secrets.example:8443");

        let cases = [
            (json!({"vaultID": "x"}), "vaultID"),
            (json!({"region": null}), "region"),
            (json!({"region": "Ashburn"}), "region"),
            (
                json!({"compartmentId": "ocid1.vault.oc1..x"}),
                "compartmentId",
            ),
            (json!({"vaultId": "vault"}), "vaultId"),
            (json!({"kmsKeyId": null}), "kmsKeyId"),
            (json!({"keyId": "ocid1.key.oc1.iad.b.k"}), "not both"),
            (json!({"kmsKeyId": "arn:aws:kms:x"}), "kmsKeyId"),
            (json!({"tenancy": null}), "tenancy"),
            (json!({"user": "ocid1.tenancy.oc1..x"}), "user"),
            (json!({"fingerprint": "73:61"}), "fingerprint"),
            (json!({"privateKeyFile": null}), "privateKeyFile"),
            (json!({"endpoint": "ftp://x"}), "endpoint"),
            (
                json!({"secretsEndpoint": "https://x/20190301"}),
                "secretsEndpoint",
            ),
            (
                json!({"auth": "instancePrincipal"}),
                "tenancy, user, fingerprint, privateKeyFile: not used with auth: instancePrincipal",
            ),
            (json!({"auth": "workloadIdentity"}), "not supported yet"),
            (json!({"auth": "resourcePrincipal"}), "not supported yet"),
            (
                json!({"metadataEndpoint": "http://127.0.0.1:1/opc/v2"}),
                "metadataEndpoint is only used with auth: instancePrincipal",
            ),
            (
                json!({"federationEndpoint": "http://127.0.0.1:1"}),
                "federationEndpoint is only used with auth: instancePrincipal",
            ),
            (json!({"auth": "password"}), "password"),
        ];
        for (changes, needle) in cases {
            let err = validate(&config(with(changes.clone()))).unwrap_err();
            assert!(err.contains(needle), "{changes}: {err}");
        }
    }

    #[test]
    fn names_map_to_oci_rules() {
        assert_eq!(secret_name("k8s/shop/db").unwrap(), "k8s.shop.db");
        assert_eq!(secret_name("a.b_c-D9").unwrap(), "a.b_c-D9");
        assert!(secret_name("").unwrap_err().contains("empty"));
        assert!(secret_name("shop/db#1").unwrap_err().contains("'#'"));
        assert!(secret_name("shop/dé").unwrap_err().contains("'é'"));
        assert!(secret_name(&"a".repeat(255)).is_ok());
        assert!(secret_name(&"a".repeat(256)).unwrap_err().contains("255"));
    }

    #[test]
    fn values_and_tags_are_checked_before_writing() {
        let owner = Ownership {
            cluster_id: "c".into(),
            namespace: "n".into(),
            name: "s".into(),
            key_set: "k".into(),
        };
        let p = prepare(
            &SecretValue::new(vec![0xff, 0x00]),
            &owner,
            &WriteOptions {
                description: Some("d".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(p.content.as_str() == "/wA=");
        assert_eq!(p.tags.len(), 5);
        assert_eq!(p.description.as_deref(), Some("d"));

        let big = prepare(
            &SecretValue::new(vec![b'x'; MAX_CONTENT_BYTES + 1]),
            &owner,
            &WriteOptions::default(),
        )
        .err()
        .unwrap();
        assert!(big.to_string().contains("25600"), "{big}");

        let many = WriteOptions {
            tags: (0..60).map(|i| (format!("t{i}"), "v".into())).collect(),
            ..Default::default()
        };
        let err = prepare(&SecretValue::new(b"x".to_vec()), &owner, &many)
            .err()
            .unwrap();
        assert!(err.to_string().contains("65 freeform tags"), "{err}");

        let mut tags = BTreeMap::new();
        tags.insert("Team".to_owned(), "a".to_owned());
        tags.insert("team".to_owned(), "b".to_owned());
        assert!(check_tags(&tags).unwrap_err().to_string().contains("case"));
        let long = BTreeMap::from([("k".repeat(101), "v".to_owned())]);
        assert!(check_tags(&long).is_err());
        let long = BTreeMap::from([("k".to_owned(), "v".repeat(257))]);
        assert!(check_tags(&long).is_err());
    }

    #[test]
    fn queries_are_encoded_as_signed() {
        assert_eq!(
            target_of(
                "/20180608/secrets",
                &[
                    ("compartmentId", "ocid1.compartment.oc1..aaa".into()),
                    ("page", "a b/c+d=".into()),
                ]
            ),
            "/20180608/secrets?compartmentId=ocid1.compartment.oc1..aaa&page=a%20b%2Fc%2Bd%3D"
        );
        assert_eq!(target_of("/x", &[]), "/x");
    }

    #[test]
    fn service_messages_are_scrubbed() {
        let v = SecretValue::new(b"hunter2-secret".to_vec());
        let b64 = base64::engine::general_purpose::STANDARD.encode(b"hunter2-secret");
        let out = scrub(&format!("bad\n'hunter2-secret' and {b64}"), Some(&v));
        assert_eq!(out, "bad '<redacted>' and <redacted>");
    }

    fn instance_principal() -> Value {
        with(json!({
            "auth": "instancePrincipal",
            "tenancy": null,
            "user": null,
            "fingerprint": null,
            "privateKeyFile": null,
        }))
    }

    #[test]
    fn instance_principal_settings_are_checked() {
        let p = settings(&config(instance_principal())).unwrap();
        assert_eq!(
            p.auth,
            AuthSettings::InstancePrincipal {
                metadata: Endpoint {
                    origin: Origin {
                        base: "http://169.254.169.254".into(),
                        host: "169.254.169.254".into(),
                    },
                    path: "/opc/v2".into(),
                },
                federation: None,
            }
        );
        assert_eq!(
            default_federation_endpoint("us-ashburn-1").unwrap().url(),
            "https://auth.us-ashburn-1.oraclecloud.com/v1/x509"
        );

        let mut doc = instance_principal();
        doc["metadataEndpoint"] = json!("http://127.0.0.1:8080/opc/v2/");
        doc["federationEndpoint"] = json!("http://127.0.0.1:8081");
        let p = settings(&config(doc)).unwrap();
        let AuthSettings::InstancePrincipal {
            metadata,
            federation,
        } = &p.auth
        else {
            panic!("{:?}", p.auth);
        };
        assert_eq!(metadata.url(), "http://127.0.0.1:8080/opc/v2");
        let federation = federation.as_ref().unwrap();
        assert_eq!(federation.url(), "http://127.0.0.1:8081/v1/x509");
        assert_eq!(federation.path, "/v1/x509");
        assert_eq!(federation.origin.host, "127.0.0.1:8081");
        let mut doc = instance_principal();
        doc["federationEndpoint"] = json!("https://auth.eu-frankfurt-1.oraclecloud.eu/v1/x509");
        let p = settings(&config(doc)).unwrap();
        let AuthSettings::InstancePrincipal { federation, .. } = &p.auth else {
            panic!("{:?}", p.auth);
        };
        assert_eq!(
            federation.as_ref().unwrap().url(),
            "https://auth.eu-frankfurt-1.oraclecloud.eu/v1/x509"
        );

        // An API key's settings are refused, named.
        let mut doc = instance_principal();
        doc["user"] = json!(DOC_USER);
        let err = validate(&config(doc)).unwrap_err();
        assert!(
            err.starts_with("user: not used with auth: instancePrincipal")
                && err.contains("remove it"),
            "{err}"
        );
        for (key, value) in [
            ("metadataEndpoint", "ftp://169.254.169.254/opc/v2"),
            ("metadataEndpoint", "http://169.254.169.254/opc/v2?x=1"),
            ("federationEndpoint", "auth.example"),
            ("federationEndpoint", "https://user:pw@auth.example/v1/x509"),
        ] {
            let mut doc = instance_principal();
            doc[key] = json!(value);
            let err = validate(&config(doc)).unwrap_err();
            assert!(err.contains(key), "{key} {value}: {err}");
        }
    }

    fn certificate_with(names: &[(rcgen::DnType, &str)]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = rcgen::DistinguishedName::new();
        for (kind, value) in names {
            dn.push(kind.clone(), *value);
        }
        params.distinguished_name = dn;
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_tenancy_comes_from_the_certificate_subject() {
        use rcgen::DnType;
        let tenant = format!("opc-tenant:{DOC_TENANCY}");
        // As OCI issues them: the tenancy in an OU, after other attributes.
        let cert = certificate_with(&[
            (DnType::CommonName, "ocid1.instance.oc1.iad.anuwcljrexample"),
            (
                DnType::OrganizationName,
                "opc-instance:ocid1.instance.oc1.iad.anuwcljrexample",
            ),
            (DnType::OrganizationalUnitName, tenant.as_str()),
        ]);
        assert_eq!(certificate_tenancy(&cert).unwrap(), DOC_TENANCY);
        // In an O, as the SDKs read any attribute.
        let cert = certificate_with(&[(DnType::OrganizationName, tenant.as_str())]);
        assert_eq!(certificate_tenancy(&cert).unwrap(), DOC_TENANCY);
        // opc-identity: is the Python SDK's fallback; opc-tenant: wins.
        let cert = certificate_with(&[(
            DnType::OrganizationalUnitName,
            "opc-identity:ocid1.tenancy.oc1..aaaaaaaaidentity",
        )]);
        assert_eq!(
            certificate_tenancy(&cert).unwrap(),
            "ocid1.tenancy.oc1..aaaaaaaaidentity"
        );
        let cert = certificate_with(&[
            (
                DnType::OrganizationName,
                "opc-identity:ocid1.tenancy.oc1..aaaaaaaaidentity",
            ),
            (DnType::OrganizationalUnitName, tenant.as_str()),
        ]);
        assert_eq!(certificate_tenancy(&cert).unwrap(), DOC_TENANCY);

        let cert = certificate_with(&[(DnType::CommonName, "opc-certtype:instance")]);
        let err = certificate_tenancy(&cert).unwrap_err();
        assert!(
            err.contains("no opc-tenant") && err.contains("opc-certtype:instance"),
            "{err}"
        );
        let cert = certificate_with(&[(DnType::OrganizationalUnitName, "opc-tenant:")]);
        assert!(certificate_tenancy(&cert).is_err());
        assert!(
            certificate_tenancy(b"junk")
                .unwrap_err()
                .contains("not an X.509 certificate")
        );
    }

    #[test]
    fn federation_key_ids_name_the_tenancy_and_the_sha256_fingerprint() {
        // SHA-256("abc"): FIPS 180-2, appendix B.1.
        let fingerprint = certificate_fingerprint(b"abc");
        assert_eq!(
            fingerprint,
            "ba:78:16:bf:8f:01:cf:ea:41:41:40:de:5d:ae:22:23:b0:03:61:a3:96:17:7a:9c:b4:10:ff:61:f2:00:15:ad"
        );
        assert_eq!(
            federation_key_id(DOC_TENANCY, &fingerprint),
            format!("{DOC_TENANCY}/fed-x509-sha256/{fingerprint}")
        );
        assert_eq!(security_token_key_id("aaa.bbb.ccc"), "ST$aaa.bbb.ccc");

        // The federation request is signed without host.
        let sha = body_sha256(b"{}");
        let input = SigningInput {
            method: "POST",
            target: FEDERATION_PATH,
            host: "auth.us-ashburn-1.oraclecloud.com",
            date: DOC_DATE,
            body: Some(BodyHeaders {
                content_length: 2,
                content_type: "application/json",
                content_sha256: &sha,
            }),
        };
        let signing = input.federation_signing_string();
        assert_eq!(
            signing,
            format!(
                "date: {DOC_DATE}\n(request-target): post /v1/x509\ncontent-length: 2\ncontent-type: application/json\nx-content-sha256: {sha}"
            )
        );
        let names: Vec<&str> = signing
            .lines()
            .map(|l| l.split(": ").next().unwrap())
            .collect();
        assert_eq!(names.join(" "), FEDERATION_SIGNED_HEADERS);
    }

    #[test]
    fn instance_identities_are_checked() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(
            rcgen::DnType::OrganizationalUnitName,
            format!("opc-tenant:{DOC_TENANCY}"),
        );
        params.distinguished_name = dn;
        let cert = params.self_signed(&key).unwrap();
        let cert_pem = cert.pem();
        let leaf = leaf_identity(cert_pem.as_bytes(), key.serialize_pem().as_bytes()).unwrap();
        assert_eq!(leaf.tenancy, DOC_TENANCY);
        assert_eq!(leaf.fingerprint, certificate_fingerprint(cert.der()));
        assert!(leaf.der == cert.der().to_vec());
        // The metadata service writes PKCS#1 keys.
        let pkcs1 = pem("RSA PRIVATE KEY", &pkcs8_to_pkcs1(&key.serialize_der()));
        assert!(leaf_identity(cert_pem.as_bytes(), pkcs1.as_bytes()).is_ok());

        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let err = leaf_identity(cert_pem.as_bytes(), other.serialize_pem().as_bytes())
            .err()
            .unwrap();
        assert!(err.contains("not the key of identity/cert.pem"), "{err}");
        let err = leaf_identity(b"junk", pkcs1.as_bytes()).err().unwrap();
        assert!(err.contains("identity/cert.pem"), "{err}");
        let err = leaf_identity(cert_pem.as_bytes(), b"junk").err().unwrap();
        assert!(err.contains("identity/key.pem"), "{err}");

        let two = format!("{cert_pem}{cert_pem}");
        assert_eq!(certificates_b64(two.as_bytes()).unwrap().len(), 2);
        assert!(certificates_b64(b"junk").is_err());
    }

    #[test]
    fn security_tokens_are_read_and_replaced_in_time() {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let token = |claims: Value| {
            format!(
                "{}.{}.c2lnbmF0dXJl",
                b64.encode(br#"{"alg":"RS256","typ":"JWT"}"#),
                b64.encode(claims.to_string())
            )
        };
        assert_eq!(
            token_times(&token(json!({"exp": 1_700_001_200, "iat": 1_700_000_000}))).unwrap(),
            (1_700_001_200, Some(1_700_000_000))
        );
        assert_eq!(
            token_times(&token(json!({"exp": 1_700_001_200.0}))).unwrap(),
            (1_700_001_200, None)
        );
        assert!(
            token_times(&token(json!({"iat": 1})))
                .unwrap_err()
                .contains("exp")
        );
        assert!(token_times("aaa.bbb").unwrap_err().contains("JWT"));
        assert!(
            token_times("aaa.!!!.ccc")
                .unwrap_err()
                .contains("base64url")
        );

        // A 20-minute token: 60 s before it expires.
        assert_eq!(token_refresh_at(1_200, Some(0), 5), 1_140);
        // A short one: after half its lifetime.
        assert_eq!(token_refresh_at(1_006, Some(1_000), 1_000), 1_003);
        // No iat: counted from when it was obtained.
        assert_eq!(token_refresh_at(1_100, None, 1_000), 1_050);
        // Expired on arrival (a clock behind): at once.
        assert_eq!(token_refresh_at(900, Some(1_000), 1_000), 900);
    }
}
