//! External secret stores: one async trait, one module per backend, an
//! in-memory backend for tests, and one contract every backend satisfies
//! (`tests/store_contract.rs`).

#[cfg(feature = "alibaba")]
pub mod alibaba;
#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "azure")]
pub mod azure;
#[cfg(feature = "gcp")]
pub mod gcp;
#[cfg(feature = "http-client")]
pub mod http;
#[cfg(feature = "ibm")]
pub mod ibm;
pub mod memory;
#[cfg(feature = "oci")]
pub mod oci;
#[cfg(feature = "s3")]
pub mod s3;
pub mod text;
#[cfg(feature = "vault")]
pub mod vault;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::secret::SecretValue;

/// Who owns a remote entry: written as tags/labels/metadata on every entry
/// the webhook creates, and compared on read-back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ownership {
    pub cluster_id: String,
    pub namespace: String,
    pub name: String,
    /// SHA-256 (hex, first 16 chars) of the sorted key names mirrored.
    pub key_set: String,
}

/// Tag names. Lowercase, no `/` or `:`, at most 63 characters: valid as AWS
/// tags, GCP labels, Azure tags, S3 metadata and Vault custom metadata alike.
pub const TAG_MANAGED_BY: &str = "secret-santa-managed-by";
pub const TAG_CLUSTER: &str = "secret-santa-cluster";
pub const TAG_NAMESPACE: &str = "secret-santa-namespace";
pub const TAG_NAME: &str = "secret-santa-name";
pub const TAG_KEY_SET: &str = "secret-santa-key-set";
pub const MANAGED_BY: &str = "secret-santa";

impl Ownership {
    /// The ownership tags, as written.
    pub fn tags(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (TAG_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
            (TAG_CLUSTER.to_owned(), self.cluster_id.clone()),
            (TAG_NAMESPACE.to_owned(), self.namespace.clone()),
            (TAG_NAME.to_owned(), self.name.clone()),
            (TAG_KEY_SET.to_owned(), self.key_set.clone()),
        ])
    }

    /// Reads ownership back from tags; `None` when the entry is not ours.
    pub fn from_tags(tags: &BTreeMap<String, String>) -> Option<Ownership> {
        if tags.get(TAG_MANAGED_BY).map(String::as_str) != Some(MANAGED_BY) {
            return None;
        }
        Some(Ownership {
            cluster_id: tags.get(TAG_CLUSTER)?.clone(),
            namespace: tags.get(TAG_NAMESPACE)?.clone(),
            name: tags.get(TAG_NAME)?.clone(),
            key_set: tags.get(TAG_KEY_SET).cloned().unwrap_or_default(),
        })
    }

    /// The same Secret (the key set may differ after the annotations changed).
    pub fn same_secret(&self, other: &Ownership) -> bool {
        self.cluster_id == other.cluster_id
            && self.namespace == other.namespace
            && self.name == other.name
    }
}

/// An entry as read back from a store.
#[derive(Clone, Debug)]
pub struct RemoteEntry {
    pub payload: SecretValue,
    /// All tags/labels on the entry (ownership is derived from them).
    pub tags: BTreeMap<String, String>,
    /// The store's version id of the current value, when it has one.
    pub version: Option<String>,
}

impl RemoteEntry {
    pub fn owner(&self) -> Option<Ownership> {
        Ownership::from_tags(&self.tags)
    }
}

/// Per-write options a destination may carry.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    pub description: Option<String>,
    /// Extra tags (admin-configured plus per-destination), beside ownership.
    pub tags: BTreeMap<String, String>,
    pub kms_key_id: Option<String>,
    /// `application/json`, `text/plain`, ...
    pub content_type: &'static str,
}

/// What `create_if_absent` found.
#[derive(Clone, Debug)]
pub enum CreateOutcome {
    /// We created it; the version id when the store has versions.
    Created { version: Option<String> },
    /// Something is already there (ours or not): read back.
    Exists(RemoteEntry),
}

/// What can go wrong talking to a store. Messages never hold values.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("not reachable: {0}")]
    Unavailable(String),
    #[error("throttled: {0}")]
    Throttled(String),
    #[error("the entry is scheduled for deletion or soft-deleted: {0}")]
    PendingDeletion(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("{0}")]
    Other(String),
}

impl StoreError {
    /// A fixed label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            StoreError::PermissionDenied(_) => "permission_denied",
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Throttled(_) => "throttled",
            StoreError::PendingDeletion(_) => "pending_deletion",
            StoreError::Invalid(_) => "invalid",
            StoreError::Other(_) => "error",
        }
    }
}

/// A remote name after the store's rules were applied (prefix, template,
/// the backend's own character rules).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemoteName(String);

impl RemoteName {
    pub fn new_unchecked(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RemoteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One store backend.
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// The config `type` (`aws-secrets-manager`, `memory`, ...).
    fn kind(&self) -> &'static str;

    /// Maps a logical remote name (`prefix + template`) to the backend's
    /// rules, or says why it cannot.
    fn remote_name(&self, logical: &str) -> Result<RemoteName, String> {
        if logical.is_empty() {
            return Err("remote name is empty".into());
        }
        Ok(RemoteName(logical.to_owned()))
    }

    /// True when `create_if_absent` is atomic on the server (a conditional
    /// create the server refuses when the entry exists), so that a fresh
    /// single-destination CREATE may skip the engine's probe.
    fn atomic_create(&self) -> bool {
        false
    }

    /// Reads the current value and tags; `None` when absent.
    async fn read(&self, name: &RemoteName) -> Result<Option<RemoteEntry>, StoreError>;

    /// Creates the entry with `payload` and `owner`'s tags only if nothing is
    /// there; otherwise returns what is there.
    async fn create_if_absent(
        &self,
        name: &RemoteName,
        payload: &SecretValue,
        owner: &Ownership,
        options: &WriteOptions,
    ) -> Result<CreateOutcome, StoreError>;

    /// Writes a new value (a new version where the store versions values)
    /// of an entry we own or may adopt, and (re)writes the ownership tags.
    /// Returns the new version id when there is one.
    async fn put(
        &self,
        name: &RemoteName,
        payload: &SecretValue,
        owner: &Ownership,
        options: &WriteOptions,
    ) -> Result<Option<String>, StoreError>;
}

pub type DynStore = Arc<dyn SecretStore>;

/// Store types this build can write to.
pub const STORE_TYPES: &[&str] = &[
    "memory",
    #[cfg(feature = "aws")]
    aws::secrets_manager::TYPE,
    #[cfg(feature = "aws")]
    aws::parameter_store::TYPE,
    #[cfg(feature = "vault")]
    vault::TYPE,
    #[cfg(feature = "s3")]
    s3::TYPE,
    #[cfg(feature = "gcp")]
    gcp::TYPE,
    #[cfg(feature = "azure")]
    azure::TYPE,
    #[cfg(feature = "ibm")]
    ibm::TYPE,
    #[cfg(feature = "alibaba")]
    alibaba::TYPE,
    #[cfg(feature = "oci")]
    oci::TYPE,
];

/// Checks a store's type-specific settings without connecting anywhere.
pub fn validate_settings(config: &crate::config::StoreConfig) -> Result<(), String> {
    match config.store_type.as_str() {
        "memory" => no_settings(config),
        #[cfg(feature = "aws")]
        aws::secrets_manager::TYPE => aws::secrets_manager::validate(config),
        #[cfg(feature = "aws")]
        aws::parameter_store::TYPE => aws::parameter_store::validate(config),
        #[cfg(feature = "vault")]
        vault::TYPE => vault::validate(config),
        #[cfg(feature = "s3")]
        s3::TYPE => s3::validate(config),
        #[cfg(feature = "gcp")]
        gcp::TYPE => gcp::validate(config),
        #[cfg(feature = "azure")]
        azure::TYPE => azure::validate(config),
        #[cfg(feature = "ibm")]
        ibm::TYPE => ibm::validate(config),
        #[cfg(feature = "alibaba")]
        alibaba::TYPE => alibaba::validate(config),
        #[cfg(feature = "oci")]
        oci::TYPE => oci::validate(config),
        other => Err(format!(
            "store type {other:?} is not available in this build (available: {})",
            STORE_TYPES.join(", ")
        )),
    }
}

fn no_settings(config: &crate::config::StoreConfig) -> Result<(), String> {
    match config.settings.keys().next() {
        Some(k) => Err(format!(
            "unknown key {k:?} for store type {}",
            config.store_type
        )),
        None => Ok(()),
    }
}

/// Builds the client of one configured store. Clients are built once, at
/// start (and on config reload), and shared by all reviews.
pub async fn build(config: &crate::config::StoreConfig) -> Result<DynStore, String> {
    validate_settings(config)?;
    match config.store_type.as_str() {
        "memory" => Ok(Arc::new(memory::MemoryStore::new())),
        #[cfg(feature = "aws")]
        aws::secrets_manager::TYPE => Ok(Arc::new(aws::SecretsManagerStore::build(config).await?)),
        #[cfg(feature = "aws")]
        aws::parameter_store::TYPE => Ok(Arc::new(aws::ParameterStore::build(config).await?)),
        #[cfg(feature = "vault")]
        vault::TYPE => Ok(Arc::new(vault::VaultStore::build(config).await?)),
        #[cfg(feature = "s3")]
        s3::TYPE => Ok(Arc::new(s3::S3Store::build(config).await?)),
        #[cfg(feature = "gcp")]
        gcp::TYPE => Ok(Arc::new(gcp::GcpSecretManagerStore::build(config).await?)),
        #[cfg(feature = "azure")]
        azure::TYPE => Ok(Arc::new(azure::AzureKeyVaultStore::build(config).await?)),
        #[cfg(feature = "ibm")]
        ibm::TYPE => Ok(Arc::new(ibm::IbmSecretsManagerStore::build(config).await?)),
        #[cfg(feature = "alibaba")]
        alibaba::TYPE => Ok(Arc::new(alibaba::AlibabaKmsStore::build(config).await?)),
        #[cfg(feature = "oci")]
        oci::TYPE => Ok(Arc::new(oci::OciVaultStore::build(config).await?)),
        other => Err(format!(
            "store type {other:?} is not available in this build"
        )),
    }
}

/// The configured stores by name, each with its config and client.
#[derive(Clone, Default)]
pub struct Stores {
    entries: BTreeMap<String, (crate::config::StoreConfig, DynStore)>,
}

impl Stores {
    /// Builds every store of the admin config.
    pub async fn from_config(config: &crate::config::AdminConfig) -> Result<Self, String> {
        let mut entries = BTreeMap::new();
        for s in &config.stores {
            let client = build(s)
                .await
                .map_err(|e| format!("store {}: {e}", s.name))?;
            entries.insert(s.name.clone(), (s.clone(), client));
        }
        Ok(Self { entries })
    }

    /// Uses the given clients (tests: memory stores with fault injection)
    /// for the configured stores of the same names.
    pub fn with_clients(
        config: &crate::config::AdminConfig,
        clients: BTreeMap<String, DynStore>,
    ) -> Result<Self, String> {
        let mut entries = BTreeMap::new();
        for s in &config.stores {
            let client = clients
                .get(&s.name)
                .cloned()
                .ok_or_else(|| format!("no client given for store {}", s.name))?;
            entries.insert(s.name.clone(), (s.clone(), client));
        }
        Ok(Self { entries })
    }

    pub fn get(&self, name: &str) -> Option<(&crate::config::StoreConfig, &DynStore)> {
        self.entries.get(name).map(|(c, s)| (c, s))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }
}
