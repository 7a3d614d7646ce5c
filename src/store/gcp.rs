//! `gcp-secret-manager`: Google Cloud Secret Manager through the official
//! client (`google-cloud-secretmanager-v1`, HTTP/JSON REST).
//!
//! **Names.** A remote name becomes a secret id (`[A-Za-z0-9_-]{1,255}`):
//! `/` is written as `_` and `.` as `-`; any other character, an empty name
//! or an id longer than 255 characters is refused with the rule. (So
//! `shop/db` and `shop_db` are the same secret: keep one naming style per
//! store.)
//!
//! **Create-if-absent.** `CreateSecret` is conditional on the server (it
//! answers `ALREADY_EXISTS`), then `AddSecretVersion` writes the value with
//! its CRC32C, which the service verifies. When the secret exists, it is
//! read back (`GetSecret` + `versions/latest:access`). A secret that exists
//! without an accessible latest version (none yet, or disabled/destroyed) and
//! is owned by the same Secret gets a version added: that is what a crash or
//! a failed `AddSecretVersion` between the two calls leaves behind, and a
//! retry converges through it. Unowned secrets are reported as they are.
//!
//! **Ownership.** GCP labels are strict (lowercase, digits, `_`, `-`, at
//! most 63 characters) while namespaces, Secret names (dots) and cluster ids
//! (uppercase) are not, so the exact ownership tags and the extra tags are
//! written as secret **annotations**, and read back from there. The same
//! tags are also written as **labels** with sanitized values (lowercased,
//! other characters as `_`, cut to 63) so admins can filter
//! (`labels.secret-santa-managed-by=secret-santa`); extra tags whose keys are
//! not valid label keys are annotations only.
//!
//! **Put.** `AddSecretVersion` (a new version), then `UpdateSecret` of labels
//! and annotations (merged into what the secret already has).
//!
//! **Replication.** Automatic by default, with the store's `kmsKeyId` as the
//! customer-managed key; or user-managed with a list of locations, each with
//! an optional `kmsKeyName`.
//!
//! **Auth.** Application Default Credentials (`GOOGLE_APPLICATION_CREDENTIALS`,
//! gcloud's application-default login, workload identity federation files,
//! the metadata server of GCE/GKE Workload Identity); a service account key
//! file read at start; or no credentials, for emulators and test fakes.

use std::collections::{BTreeMap, HashMap};
use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use google_cloud_auth::credentials::Credentials;
use google_cloud_gax::error::Error as GaxError;
use google_cloud_gax::error::rpc::{Code, Status};
use google_cloud_gax::exponential_backoff::ExponentialBackoffBuilder;
use google_cloud_gax::retry_policy::{Aip194Strict, RetryPolicyExt};
use google_cloud_gax::retry_throttler::CircuitBreaker;
use google_cloud_secretmanager_v1::client::SecretManagerService;
use google_cloud_secretmanager_v1::model::{
    CustomerManagedEncryption, Replication, Secret, SecretPayload, replication,
};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::config::StoreConfig;
use crate::secret::SecretValue;
use crate::store::{
    CreateOutcome, Ownership, RemoteEntry, RemoteName, SecretStore, StoreError, TAG_CLUSTER,
    TAG_KEY_SET, TAG_MANAGED_BY, TAG_NAME, TAG_NAMESPACE, WriteOptions,
};

pub const TYPE: &str = "gcp-secret-manager";

/// The store's per-call deadline when the admin config sets none (the same
/// default `mirror` applies).
const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);
/// One retry at most (of what the SDK considers retryable): a second
/// attempt must still fit in the deadline.
const MAX_ATTEMPTS: u32 = 2;
/// Where requests go without an `endpoint` override (for messages).
const DEFAULT_ENDPOINT: &str = "https://secretmanager.googleapis.com";
/// Set on Application Default Credentials so that building the client does
/// not ask the metadata server for it (the SDK would otherwise, at start).
const UNIVERSE_DOMAIN: &str = "googleapis.com";
/// Secret Manager's limit on a version's payload.
const MAX_PAYLOAD_BYTES: usize = 65_536;
const MAX_ID_CHARS: usize = 255;
const MAX_LABELS: usize = 64;
const MAX_LABEL_CHARS: usize = 63;
/// "The total size of annotation keys and values must be less than 16KiB."
const MAX_ANNOTATION_BYTES: usize = 16 * 1024;
/// The ownership tags: written exactly in annotations, read only from there.
const OWNERSHIP_KEYS: [&str; 5] = [
    TAG_MANAGED_BY,
    TAG_CLUSTER,
    TAG_NAMESPACE,
    TAG_NAME,
    TAG_KEY_SET,
];

/// How a store gets Google credentials.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(
    tag = "method",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum Auth {
    /// Application Default Credentials: `GOOGLE_APPLICATION_CREDENTIALS`
    /// (service account key, workload identity federation, ...), gcloud's
    /// application-default login, or the metadata server (GCE, GKE Workload
    /// Identity).
    #[default]
    Default,
    /// A service account key (JSON) from a file, e.g. a mounted Kubernetes
    /// Secret; read and checked at start.
    ServiceAccountKey { key_file: PathBuf },
    /// No credentials at all: only for emulators and test fakes (requires
    /// `endpoint`).
    #[serde(rename = "none")]
    Anonymous,
}

/// Where a secret's versions are stored.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ReplicationSetting {
    /// Google chooses the locations; the store's `kmsKeyId` (if any) is the
    /// customer-managed encryption key.
    #[default]
    Automatic,
    /// These locations, each with an optional customer-managed key.
    UserManaged(Vec<Replica>),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Replica {
    pub location: String,
    #[serde(default)]
    pub kms_key_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Settings {
    project: String,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    auth: Auth,
    #[serde(default)]
    replication: ReplicationSetting,
}

/// Reads and checks the store's settings; unknown and missing keys are
/// errors naming the key.
fn settings(config: &StoreConfig) -> Result<Settings, String> {
    let s: Settings =
        serde_path_to_error::deserialize(serde_json::Value::Object(config.settings.clone()))
            .map_err(|e| format!("{TYPE} settings: {e}"))?;
    check_project(&s.project)?;
    if let Some(endpoint) = &s.endpoint {
        check_endpoint(endpoint)?;
    }
    match &s.auth {
        Auth::Anonymous if s.endpoint.is_none() => {
            return Err(
                "auth method none (no credentials) is only for emulators and test fakes: set endpoint as well"
                    .into(),
            );
        }
        Auth::ServiceAccountKey { key_file } if key_file.as_os_str().is_empty() => {
            return Err("auth.keyFile is empty".into());
        }
        _ => {}
    }
    if let ReplicationSetting::UserManaged(replicas) = &s.replication {
        if replicas.is_empty() {
            return Err("replication.userManaged must list at least one location".into());
        }
        for (i, r) in replicas.iter().enumerate() {
            let valid = !r.location.is_empty()
                && r.location
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !valid {
                return Err(format!(
                    "replication.userManaged[{i}].location {:?} is not a Google Cloud location (like europe-west1)",
                    r.location
                ));
            }
            if replicas[..i].iter().any(|o| o.location == r.location) {
                return Err(format!(
                    "replication.userManaged[{i}].location {:?} is listed twice",
                    r.location
                ));
            }
            if let Some(key) = &r.kms_key_name {
                check_kms_key(&format!("replication.userManaged[{i}].kmsKeyName"), key)?;
            }
        }
        if config.kms_key_id.is_some() {
            return Err(
                "kmsKeyId applies to automatic replication; with replication.userManaged give each location its kmsKeyName"
                    .into(),
            );
        }
    }
    if let Some(key) = &config.kms_key_id {
        check_kms_key("kmsKeyId", key)?;
    }
    for key in config.tags.keys() {
        if OWNERSHIP_KEYS.contains(&key.as_str()) {
            continue;
        }
        if !is_annotation_key(key) {
            return Err(format!("tags: {}", annotation_key_rule(key)));
        }
    }
    Ok(s)
}

/// Checks the settings without connecting anywhere.
pub fn validate(config: &StoreConfig) -> Result<(), String> {
    settings(config).map(|_| ())
}

/// Project ids (`my-project-123`, or the legacy `example.com:my-project`)
/// and project numbers.
fn check_project(project: &str) -> Result<(), String> {
    let number =
        !project.is_empty() && project.len() <= 20 && project.bytes().all(|b| b.is_ascii_digit());
    let (domain, id) = match project.rsplit_once(':') {
        Some((domain, id)) => (Some(domain), id),
        None => (None, project),
    };
    let id_ok = (6..=30).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && !id.ends_with('-')
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let domain_ok = domain.is_none_or(|d| {
        !d.is_empty()
            && d.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    });
    if number || (id_ok && domain_ok) {
        Ok(())
    } else {
        Err(format!(
            "project {project:?} is not a Google Cloud project id (6 to 30 lowercase letters, digits and '-', like my-project-123) or project number"
        ))
    }
}

fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e| format!("endpoint {endpoint:?} is not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(format!(
            "endpoint {endpoint:?} must be an http:// or https:// URL with a host"
        ));
    }
    if uri.query().is_some() {
        return Err(format!("endpoint {endpoint:?} must not have a query"));
    }
    Ok(())
}

/// `projects/P/locations/L/keyRings/R/cryptoKeys/K`.
fn check_kms_key(what: &str, key: &str) -> Result<(), String> {
    let parts: Vec<&str> = key.split('/').collect();
    let ok = parts.len() == 8
        && parts[0] == "projects"
        && parts[2] == "locations"
        && parts[4] == "keyRings"
        && parts[6] == "cryptoKeys"
        && [1, 3, 5, 7].iter().all(|&i| !parts[i].is_empty());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {key:?} is not a Cloud KMS key name (projects/PROJECT/locations/LOCATION/keyRings/RING/cryptoKeys/KEY)"
        ))
    }
}

/// Builds the credentials of `auth`. Nothing is contacted here.
fn credentials(auth: &Auth) -> Result<Credentials, String> {
    match auth {
        Auth::Default => google_cloud_auth::credentials::Builder::default()
            .with_universe_domain(UNIVERSE_DOMAIN)
            .build()
            .map_err(|e| {
                format!(
                    "auth.method default: no usable Application Default Credentials \
                     (GOOGLE_APPLICATION_CREDENTIALS, gcloud application-default login, or the metadata server): {}",
                    chain(Some(&e))
                )
            }),
        Auth::Anonymous => Ok(google_cloud_auth::credentials::anonymous::Builder::new().build()),
        Auth::ServiceAccountKey { key_file } => service_account_credentials(key_file),
    }
}

/// Reads and checks a service account key file. Messages name the file and
/// the problem, never the key.
fn service_account_credentials(path: &Path) -> Result<Credentials, String> {
    let shown = path.display();
    let text = Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| format!("auth.keyFile {shown}: {e}"))?,
    );
    if text.trim().is_empty() {
        return Err(format!("auth.keyFile {shown} is empty"));
    }
    // serde_json's messages give a position, never the input.
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("auth.keyFile {shown} is not a JSON service account key: {e}"))?;
    let Some(fields) = json.as_object() else {
        return Err(format!(
            "auth.keyFile {shown} is not a JSON service account key (not an object)"
        ));
    };
    match fields.get("type").and_then(serde_json::Value::as_str) {
        Some("service_account") => {}
        Some(other) => {
            return Err(format!(
                "auth.keyFile {shown} holds credentials of type {other:?}, not a service account key (\"type\": \"service_account\"); \
                 for workload identity federation or user credentials use auth method default with GOOGLE_APPLICATION_CREDENTIALS"
            ));
        }
        None => {
            return Err(format!(
                "auth.keyFile {shown} has no \"type\"; expected a service account key (\"type\": \"service_account\")"
            ));
        }
    }
    for field in [
        "client_email",
        "private_key_id",
        "private_key",
        "project_id",
    ] {
        let present = fields
            .get(field)
            .and_then(serde_json::Value::as_str)
            .is_some_and(|s| !s.is_empty());
        if !present {
            return Err(format!(
                "auth.keyFile {shown}: field {field:?} is missing or empty"
            ));
        }
    }
    let pem = fields
        .get("private_key")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    match PrivateKeyDer::from_pem_slice(pem.as_bytes()) {
        // The SDK signs with RS256 from a PKCS#8 key, as Google issues them.
        Ok(PrivateKeyDer::Pkcs8(_)) => {}
        Ok(_) => {
            return Err(format!(
                "auth.keyFile {shown}: private_key is not a PKCS#8 key (-----BEGIN PRIVATE KEY-----)"
            ));
        }
        Err(_) => {
            return Err(format!(
                "auth.keyFile {shown}: private_key is not a PEM private key"
            ));
        }
    }
    google_cloud_auth::credentials::service_account::Builder::new(json)
        .build()
        .map_err(|_| format!("auth.keyFile {shown} is not a usable service account key"))
}

/// Maps a logical remote name to a secret id.
pub fn secret_id(logical: &str) -> Result<String, String> {
    const RULE: &str = "secret ids have 1 to 255 letters, digits, '_' and '-'; '/' is written as '_' and '.' as '-'";
    if logical.is_empty() {
        return Err(format!("remote name is empty ({RULE})"));
    }
    let mut id = String::with_capacity(logical.len());
    for c in logical.chars() {
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '-' => id.push(c),
            '/' => id.push('_'),
            '.' => id.push('-'),
            other => {
                return Err(format!(
                    "{logical:?} cannot be a Secret Manager secret id: character {other:?} is not allowed ({RULE})"
                ));
            }
        }
    }
    if id.len() > MAX_ID_CHARS {
        return Err(format!(
            "{logical:?} maps to a secret id of {} characters; Secret Manager allows at most {MAX_ID_CHARS} ({RULE})",
            id.len()
        ));
    }
    Ok(id)
}

/// `[a-z][a-z0-9_-]{0,62}` (GCP also allows non-ASCII lowercase letters;
/// this store writes ASCII only).
fn is_label_key(key: &str) -> bool {
    key.len() <= MAX_LABEL_CHARS
        && key.starts_with(|c: char| c.is_ascii_lowercase())
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// Lowercased; anything but `[a-z0-9_-]` as `_`; at most 63 characters.
fn label_value(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_LABEL_CHARS)
        .collect()
}

/// 1 to 63 characters, beginning and ending with `[a-zA-Z0-9]`, with
/// `[a-zA-Z0-9._-]` between.
fn is_annotation_key(key: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    (1..=63).contains(&key.len())
        && key.starts_with(alnum)
        && key.ends_with(alnum)
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
}

fn annotation_key_rule(key: &str) -> String {
    format!(
        "tag {key:?} cannot be a Secret Manager annotation key (1 to 63 letters, digits, '.', '_' and '-', beginning and ending with a letter or digit)"
    )
}

/// Ownership tags win over extra tags of the same name.
fn all_tags(owner: &Ownership, options: &WriteOptions) -> BTreeMap<String, String> {
    let mut tags = options.tags.clone();
    tags.extend(owner.tags());
    tags
}

/// The exact tags, as annotations.
fn annotations_for(tags: &BTreeMap<String, String>) -> Result<HashMap<String, String>, StoreError> {
    let mut size = 0;
    for (k, v) in tags {
        if !is_annotation_key(k) {
            return Err(StoreError::Invalid(annotation_key_rule(k)));
        }
        size += k.len() + v.len();
    }
    if size >= MAX_ANNOTATION_BYTES {
        return Err(StoreError::Invalid(format!(
            "the tags take {size} bytes as annotations; Secret Manager takes less than {MAX_ANNOTATION_BYTES}"
        )));
    }
    Ok(tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// The tags as labels, for filtering: ownership first, then the extra tags
/// whose keys are valid label keys, at most 64.
fn labels_for(tags: &BTreeMap<String, String>) -> HashMap<String, String> {
    let mut labels = HashMap::new();
    for key in OWNERSHIP_KEYS {
        if let Some(v) = tags.get(key) {
            labels.insert(key.to_owned(), label_value(v));
        }
    }
    for (k, v) in tags {
        if labels.len() >= MAX_LABELS {
            break;
        }
        if !labels.contains_key(k) && is_label_key(k) {
            labels.insert(k.clone(), label_value(v));
        }
    }
    labels
}

/// Labels and annotations as read back: ownership only from annotations
/// (the labels hold sanitized copies), annotations winning.
fn tags_of(secret: &Secret) -> BTreeMap<String, String> {
    let mut tags: BTreeMap<String, String> = secret
        .labels
        .iter()
        .filter(|(k, _)| !OWNERSHIP_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    tags.extend(
        secret
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    tags
}

/// CRC32C (Castagnoli), as Secret Manager checks payloads.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0x82F6_3B78 & mask);
        }
    }
    !crc
}

/// `projects/P/secrets/S/versions/3` → `3`.
fn version_of(name: &str) -> Option<String> {
    name.rsplit_once("/versions/")
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty())
}

fn check_size(payload: &SecretValue) -> Result<(), StoreError> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(StoreError::Invalid(format!(
            "the value is {} bytes; Secret Manager takes at most {MAX_PAYLOAD_BYTES}",
            payload.len()
        )));
    }
    Ok(())
}

/// The status of a service error; through a "retries exhausted" wrapper too.
fn status_of(err: &GaxError) -> Option<&Status> {
    err.status().or_else(|| {
        err.source()
            .and_then(|s| s.downcast_ref::<GaxError>())
            .and_then(GaxError::status)
    })
}

fn code_of(err: &GaxError) -> Option<Code> {
    status_of(err).map(|s| s.code)
}

/// Appends a note to an error, keeping its kind.
fn with_note(err: StoreError, note: &str) -> StoreError {
    match err {
        StoreError::PermissionDenied(m) => StoreError::PermissionDenied(format!("{m}; {note}")),
        StoreError::Unavailable(m) => StoreError::Unavailable(format!("{m}; {note}")),
        StoreError::Throttled(m) => StoreError::Throttled(format!("{m}; {note}")),
        StoreError::PendingDeletion(m) => StoreError::PendingDeletion(format!("{m}; {note}")),
        StoreError::Invalid(m) => StoreError::Invalid(format!("{m}; {note}")),
        StoreError::Other(m) => StoreError::Other(format!("{m}; {note}")),
    }
}

/// The latest version of a secret, as far as it can be read.
enum Latest {
    Value {
        payload: SecretValue,
        version: Option<String>,
    },
    /// No version yet, or the latest is disabled or destroyed.
    NotAccessible,
}

pub struct GcpSecretManagerStore {
    client: SecretManagerService,
    project: String,
    /// Where requests go, for messages.
    endpoint: String,
    replication: ReplicationSetting,
}

impl GcpSecretManagerStore {
    /// Builds the client once; it is shared by all reviews. Credentials are
    /// read here (a key file that is missing or invalid fails the start);
    /// nothing is contacted.
    pub async fn build(config: &StoreConfig) -> Result<Self, String> {
        let s = settings(config)?;
        let credentials = credentials(&s.auth)?;
        let deadline = config.deadline.unwrap_or(DEFAULT_DEADLINE);
        let backoff = ExponentialBackoffBuilder::new()
            .with_initial_delay(Duration::from_millis(100))
            .with_maximum_delay(Duration::from_millis(500))
            .build()
            .map_err(|e| format!("retry backoff: {e}"))?;
        let mut builder = SecretManagerService::builder()
            .with_credentials(credentials)
            .with_retry_policy(
                Aip194Strict
                    .with_attempt_limit(MAX_ATTEMPTS)
                    .with_time_limit(deadline),
            )
            .with_backoff_policy(backoff)
            // Deterministic: retries stop after a run of failures and resume
            // with successes (the default throttler drops retries at random).
            .with_retry_throttler(CircuitBreaker::default())
            .with_attempt_timeout(deadline);
        let endpoint = match &s.endpoint {
            Some(e) => {
                let e = e.trim_end_matches('/').to_owned();
                builder = builder.with_endpoint(e.clone());
                e
            }
            None => DEFAULT_ENDPOINT.to_owned(),
        };
        let client = builder
            .build()
            .await
            .map_err(|e| format!("Secret Manager client: {}", chain(Some(&e))))?;
        Ok(Self {
            client,
            project: s.project,
            endpoint,
            replication: s.replication,
        })
    }

    /// `projects/P/secrets/ID`.
    fn secret_name(&self, name: &RemoteName) -> String {
        format!("projects/{}/secrets/{}", self.project, name.as_str())
    }

    /// The secret to create: replication (with CMEK), labels, annotations.
    fn new_secret(
        &self,
        tags: &BTreeMap<String, String>,
        kms_key: Option<&str>,
    ) -> Result<Secret, StoreError> {
        let replication = match &self.replication {
            ReplicationSetting::Automatic => {
                let mut automatic = replication::Automatic::new();
                if let Some(key) = kms_key {
                    check_kms_key("kmsKeyId", key).map_err(StoreError::Invalid)?;
                    automatic = automatic.set_customer_managed_encryption(
                        CustomerManagedEncryption::new().set_kms_key_name(key),
                    );
                }
                Replication::new().set_automatic(automatic)
            }
            ReplicationSetting::UserManaged(replicas) => {
                if kms_key.is_some() {
                    return Err(StoreError::Invalid(
                        "kmsKeyId applies to automatic replication; this store replicates to user-managed locations, each with its own kmsKeyName"
                            .into(),
                    ));
                }
                let replicas = replicas.iter().map(|r| {
                    let mut replica =
                        replication::user_managed::Replica::new().set_location(&r.location);
                    if let Some(key) = &r.kms_key_name {
                        replica = replica.set_customer_managed_encryption(
                            CustomerManagedEncryption::new().set_kms_key_name(key),
                        );
                    }
                    replica
                });
                Replication::new()
                    .set_user_managed(replication::UserManaged::new().set_replicas(replicas))
            }
        };
        Ok(Secret::new()
            .set_replication(replication)
            .set_labels(labels_for(tags))
            .set_annotations(annotations_for(tags)?))
    }

    /// `GetSecret`: `None` when absent.
    async fn get_secret(&self, full: &str) -> Result<Option<Secret>, StoreError> {
        match self.client.get_secret().set_name(full).send().await {
            Ok(secret) => Ok(Some(secret)),
            Err(e) if code_of(&e) == Some(Code::NotFound) => Ok(None),
            Err(e) => Err(self.map_error(&e, "GetSecret", full, None)),
        }
    }

    /// `AccessSecretVersion` of `versions/latest`, its CRC32C checked.
    async fn access_latest(&self, full: &str) -> Result<Latest, StoreError> {
        let version_name = format!("{full}/versions/latest");
        match self
            .client
            .access_secret_version()
            .set_name(&version_name)
            .send()
            .await
        {
            Ok(response) => {
                let version = version_of(&response.name);
                let payload = response.payload.unwrap_or_default();
                if let Some(expected) = payload.data_crc32c
                    && i64::from(crc32c(&payload.data)) != expected
                {
                    return Err(StoreError::Other(format!(
                        "AccessSecretVersion {version_name}: the payload does not match its CRC32C; not using it"
                    )));
                }
                Ok(Latest::Value {
                    payload: SecretValue::new(payload.data.to_vec()),
                    version,
                })
            }
            // NOT_FOUND: the secret has no versions (or just went away);
            // FAILED_PRECONDITION: the latest version is disabled or destroyed.
            Err(e) if matches!(code_of(&e), Some(Code::NotFound | Code::FailedPrecondition)) => {
                Ok(Latest::NotAccessible)
            }
            Err(e) => Err(self.map_error(&e, "AccessSecretVersion", &version_name, None)),
        }
    }

    /// `AddSecretVersion` with the payload and its CRC32C; the new version
    /// number.
    async fn add_version(
        &self,
        full: &str,
        payload: &SecretValue,
    ) -> Result<Option<String>, GaxError> {
        // The SDK takes the bytes by value; this copy (and the request's JSON)
        // is not wiped on drop.
        let data = bytes::Bytes::copy_from_slice(payload.expose());
        let secret_payload = SecretPayload::new()
            .set_data(data)
            .set_data_crc32c(i64::from(crc32c(payload.expose())));
        self.client
            .add_secret_version()
            .set_parent(full)
            .set_payload(secret_payload)
            .send()
            .await
            .map(|v| version_of(&v.name))
    }

    /// After `CreateSecret` answered `ALREADY_EXISTS`: what is there, or a
    /// new version when the secret is ours and has none that can be read.
    async fn existing(
        &self,
        full: &str,
        payload: &SecretValue,
        owner: &Ownership,
    ) -> Result<CreateOutcome, StoreError> {
        let Some(secret) = self.get_secret(full).await? else {
            return Err(StoreError::Other(format!(
                "secret {full} existed at CreateSecret and was gone when read back; a retry creates it"
            )));
        };
        let tags = tags_of(&secret);
        match self.access_latest(full).await? {
            Latest::Value {
                payload: stored,
                version,
            } => Ok(CreateOutcome::Exists(RemoteEntry {
                payload: stored,
                tags,
                version,
            })),
            Latest::NotAccessible => {
                let ours = Ownership::from_tags(&tags).is_some_and(|o| o.same_secret(owner));
                if !ours {
                    return Ok(CreateOutcome::Exists(RemoteEntry {
                        payload: SecretValue::new(Vec::new()),
                        tags,
                        version: None,
                    }));
                }
                // Ours, without a value: a crash or a failed AddSecretVersion
                // after CreateSecret. Complete it.
                let version = self
                    .add_version(full, payload)
                    .await
                    .map_err(|e| self.map_error(&e, "AddSecretVersion", full, Some(payload)))?;
                Ok(CreateOutcome::Created { version })
            }
        }
    }

    /// Merges the tags into the secret's labels and annotations
    /// (`UpdateSecret` with the mask `labels,annotations`).
    async fn write_ownership(
        &self,
        full: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        let ours_annotations = annotations_for(tags)?;
        let ours_labels = labels_for(tags);
        let Some(current) = self.get_secret(full).await? else {
            return Err(StoreError::Other(format!(
                "secret {full} was deleted while its tags were written; a retry creates it"
            )));
        };
        // Ownership labels first; extra tags become labels only while there
        // is room (they are annotations anyway).
        let mut labels = current.labels.clone();
        for key in OWNERSHIP_KEYS {
            if let Some(v) = ours_labels.get(key) {
                labels.insert(key.to_owned(), v.clone());
            }
        }
        for (k, v) in ours_labels {
            if labels.contains_key(&k) || labels.len() < MAX_LABELS {
                labels.insert(k, v);
            }
        }
        if labels.len() > MAX_LABELS {
            return Err(StoreError::Invalid(format!(
                "secret {full} would have {} labels with ours; Secret Manager allows {MAX_LABELS}",
                labels.len()
            )));
        }
        let mut annotations = current.annotations.clone();
        annotations.extend(ours_annotations);
        let size: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
        if size >= MAX_ANNOTATION_BYTES {
            return Err(StoreError::Invalid(format!(
                "secret {full} would have {size} bytes of annotations with ours; Secret Manager takes less than {MAX_ANNOTATION_BYTES}"
            )));
        }
        self.client
            .update_secret()
            .set_secret(
                Secret::new()
                    .set_name(full)
                    .set_labels(labels)
                    .set_annotations(annotations),
            )
            .set_update_mask(
                google_cloud_wkt::FieldMask::default().set_paths(["labels", "annotations"]),
            )
            .send()
            .await
            .map_err(|e| self.map_error(&e, "UpdateSecret", full, None))?;
        Ok(())
    }

    /// Turns an SDK error into a `StoreError` whose message names the
    /// operation, the resource and the cause, never a value:
    /// `CreateSecret projects/p/secrets/shop_db: PERMISSION_DENIED: ...`.
    fn map_error(
        &self,
        err: &GaxError,
        operation: &str,
        target: &str,
        payload: Option<&SecretValue>,
    ) -> StoreError {
        let op = format!("{operation} {target}");
        // Retries given up: the last attempt's error is the source.
        let err = if err.is_exhausted() {
            err.source()
                .and_then(|s| s.downcast_ref::<GaxError>())
                .unwrap_or(err)
        } else {
            err
        };
        if let Some(status) = err.status() {
            let code = status.code;
            let message = scrub(&status.message, payload);
            let text = if message.is_empty() {
                format!("{op}: {}", code.name())
            } else {
                format!("{op}: {}: {message}", code.name())
            };
            return match code {
                Code::PermissionDenied | Code::Unauthenticated => {
                    StoreError::PermissionDenied(text)
                }
                Code::Unavailable | Code::DeadlineExceeded | Code::Internal => {
                    StoreError::Unavailable(text)
                }
                Code::ResourceExhausted => StoreError::Throttled(text),
                Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
                    StoreError::Invalid(text)
                }
                _ => StoreError::Other(text),
            };
        }
        // An HTTP error without a Google status body (a proxy, a load
        // balancer): named by its HTTP status.
        if let Some(http) = err.http_status_code() {
            let text = format!("{op}: HTTP {http} from {}", self.endpoint);
            return match http {
                401 | 403 => StoreError::PermissionDenied(text),
                429 => StoreError::Throttled(text),
                400 => StoreError::Invalid(text),
                500..=599 => StoreError::Unavailable(text),
                _ => StoreError::Other(text),
            };
        }
        if err.is_authentication() {
            return StoreError::PermissionDenied(format!(
                "{op}: no usable Google credentials: {}",
                chain(err.source())
            ));
        }
        if err.is_timeout() {
            return StoreError::Unavailable(format!(
                "{op}: no answer from {} in time",
                self.endpoint
            ));
        }
        if err.is_deserialization() {
            // Deserializer messages may quote response fields: not shown.
            return StoreError::Unavailable(format!(
                "{op}: unexpected response from {} (not the Secret Manager JSON this client reads)",
                self.endpoint
            ));
        }
        if err.is_binding() || err.is_serialization() {
            return StoreError::Invalid(format!("{op}: request not built: {}", chain(Some(err))));
        }
        // Connection and I/O errors.
        let cause = match find_io(err) {
            Some(io) => match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                std::io::ErrorKind::ConnectionReset => "connection reset".to_owned(),
                std::io::ErrorKind::TimedOut => "connection timed out".to_owned(),
                _ => truncate(io.to_string()),
            },
            None => {
                let text = chain(err.source());
                if text.to_ascii_lowercase().contains("connection refused") {
                    "connection refused".to_owned()
                } else if text.is_empty() {
                    "request not sent".to_owned()
                } else {
                    text
                }
            }
        };
        StoreError::Unavailable(format!("{op}: {cause} at {}", self.endpoint))
    }
}

#[async_trait]
impl SecretStore for GcpSecretManagerStore {
    fn kind(&self) -> &'static str {
        TYPE
    }

    /// CreateSecret fails with ALREADY_EXISTS.
    fn atomic_create(&self) -> bool {
        true
    }

    fn remote_name(&self, logical: &str) -> Result<RemoteName, String> {
        secret_id(logical).map(RemoteName::new_unchecked)
    }

    async fn read(&self, name: &RemoteName) -> Result<Option<RemoteEntry>, StoreError> {
        // An absent name (the common case, a fresh CREATE) costs one call.
        let full = self.secret_name(name);
        let Some(secret) = self.get_secret(&full).await? else {
            return Ok(None);
        };
        let tags = tags_of(&secret);
        let (payload, version) = match self.access_latest(&full).await? {
            Latest::Value { payload, version } => (payload, version),
            Latest::NotAccessible => (SecretValue::new(Vec::new()), None),
        };
        Ok(Some(RemoteEntry {
            payload,
            tags,
            version,
        }))
    }

    async fn create_if_absent(
        &self,
        name: &RemoteName,
        payload: &SecretValue,
        owner: &Ownership,
        options: &WriteOptions,
    ) -> Result<CreateOutcome, StoreError> {
        check_size(payload)?;
        let full = self.secret_name(name);
        let secret = self.new_secret(&all_tags(owner, options), options.kms_key_id.as_deref())?;
        let created = self
            .client
            .create_secret()
            .set_parent(format!("projects/{}", self.project))
            .set_secret_id(name.as_str())
            .set_secret(secret)
            .send()
            .await;
        match created {
            Ok(_) => {
                let version = self.add_version(&full, payload).await.map_err(|e| {
                    with_note(
                        self.map_error(&e, "AddSecretVersion", &full, Some(payload)),
                        "the secret was created without a value; a retry adds it",
                    )
                })?;
                Ok(CreateOutcome::Created { version })
            }
            Err(e) if code_of(&e) == Some(Code::AlreadyExists) => {
                self.existing(&full, payload, owner).await
            }
            Err(e) => Err(self.map_error(&e, "CreateSecret", &full, Some(payload))),
        }
    }

    async fn put(
        &self,
        name: &RemoteName,
        payload: &SecretValue,
        owner: &Ownership,
        options: &WriteOptions,
    ) -> Result<Option<String>, StoreError> {
        check_size(payload)?;
        let full = self.secret_name(name);
        let tags = all_tags(owner, options);
        // Refuse tags that cannot be written before writing the value.
        annotations_for(&tags)?;
        // The value first, then the tags: if tagging fails an adopted entry
        // stays unowned, and a retry writes the value again rather than
        // reading an old value back as ours.
        let version = match self.add_version(&full, payload).await {
            Ok(version) => version,
            Err(e) if code_of(&e) == Some(Code::NotFound) => {
                return Err(StoreError::Other(format!(
                    "secret {full} was deleted between read and write; a retry creates it"
                )));
            }
            Err(e) => return Err(self.map_error(&e, "AddSecretVersion", &full, Some(payload))),
        };
        self.write_ownership(&full, &tags).await?;
        Ok(version)
    }
}

fn find_io<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a std::io::Error> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        next = e.source();
    }
    None
}

/// The messages of an error and its sources, at most 300 characters.
fn chain(err: Option<&(dyn StdError + 'static)>) -> String {
    super::text::error_chain(err, 300)
}

/// Removes the written value from a service message and bounds its length.
fn scrub(message: &str, payload: Option<&SecretValue>) -> String {
    super::text::redact(message, payload, Vec::new(), 300)
}

fn truncate(text: String) -> String {
    super::text::truncate(text, 300)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_castagnoli_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn remote_names_map_to_secret_ids() {
        assert_eq!(secret_id("k8s/shop/db.v1").unwrap(), "k8s_shop_db-v1");
        assert_eq!(secret_id("Shop_DB-1").unwrap(), "Shop_DB-1");
        assert!(secret_id("").unwrap_err().contains("empty"));
        let err = secret_id("shop/db#1").unwrap_err();
        assert!(err.contains("'#'") && err.contains("shop/db#1"), "{err}");
        assert!(secret_id(&"a".repeat(255)).is_ok());
        assert!(secret_id(&"a".repeat(256)).unwrap_err().contains("255"));
    }

    #[test]
    fn labels_are_sanitized_and_annotations_exact() {
        let owner = Ownership {
            cluster_id: "Prod.EU-1".into(),
            namespace: "shop".into(),
            name: "db.main".into(),
            key_set: "0123456789abcdef".into(),
        };
        let options = WriteOptions {
            tags: BTreeMap::from([
                ("team".to_owned(), "Payments Team".to_owned()),
                ("Cost.Center".to_owned(), "42".to_owned()),
            ]),
            ..Default::default()
        };
        let tags = all_tags(&owner, &options);
        let labels = labels_for(&tags);
        assert_eq!(labels[TAG_CLUSTER], "prod_eu-1");
        assert_eq!(labels[TAG_NAME], "db_main");
        assert_eq!(labels["team"], "payments_team");
        assert!(!labels.contains_key("Cost.Center"), "not a label key");
        for (k, v) in &labels {
            assert!(is_label_key(k), "{k}");
            assert!(
                v.len() <= 63
                    && v.chars().all(|c| c.is_ascii_lowercase()
                        || c.is_ascii_digit()
                        || c == '_'
                        || c == '-'),
                "{v}"
            );
        }
        let annotations = annotations_for(&tags).unwrap();
        assert_eq!(annotations[TAG_CLUSTER], "Prod.EU-1");
        assert_eq!(annotations["Cost.Center"], "42");
        assert_eq!(label_value(&"x".repeat(100)).len(), 63);

        let bad = BTreeMap::from([("team/x".to_owned(), "y".to_owned())]);
        assert!(matches!(annotations_for(&bad), Err(StoreError::Invalid(_))));
    }

    #[test]
    fn ownership_is_read_from_annotations_only() {
        let secret = Secret::new()
            .set_labels([
                (TAG_MANAGED_BY, "secret-santa"),
                (TAG_CLUSTER, "c"),
                (TAG_NAMESPACE, "shop"),
                (TAG_NAME, "db"),
                ("team", "a"),
            ])
            .set_annotations([("team", "A")]);
        let tags = tags_of(&secret);
        assert!(Ownership::from_tags(&tags).is_none());
        assert_eq!(tags["team"], "A");
    }

    #[test]
    fn versions_come_from_version_names() {
        assert_eq!(
            version_of("projects/123/secrets/s/versions/7").as_deref(),
            Some("7")
        );
        assert_eq!(version_of("projects/123/secrets/s"), None);
    }

    #[test]
    fn projects_and_kms_keys_are_checked() {
        assert!(check_project("my-project-123").is_ok());
        assert!(check_project("123456789012").is_ok());
        assert!(check_project("example.com:my-project").is_ok());
        assert!(check_project("My Project").is_err());
        assert!(check_project("short").is_err());
        assert!(check_kms_key("k", "projects/p/locations/global/keyRings/r/cryptoKeys/k").is_ok());
        assert!(check_kms_key("k", "alias/mine").is_err());
    }
}
