//! `aws-secrets-manager`: one secret per remote name. UTF-8 payloads are
//! written as `SecretString`, others as `SecretBinary`; ownership and extra
//! tags as secret tags; a new value is a new version (`PutSecretValue`).

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::primitives::{Blob, DateTimeFormat};
use aws_sdk_secretsmanager::types::Tag;
use serde::Deserialize;

use super::{
    Auth, Call, Common, all_tags, code_of, endpoint_label, map_error, parse_settings, sdk_config,
};
use crate::config::StoreConfig;
use crate::secret::SecretValue;
use crate::store::{
    CreateOutcome, Ownership, RemoteEntry, RemoteName, SecretStore, StoreError, WriteOptions,
};

pub const TYPE: &str = "aws-secrets-manager";

/// Secrets Manager's limit on a secret value (string or binary).
const MAX_VALUE_BYTES: usize = 65_536;
const MAX_NAME_CHARS: usize = 512;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Settings {
    region: String,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    auth: Auth,
}

fn settings(config: &StoreConfig) -> Result<Common, String> {
    let s: Settings = parse_settings(config)?;
    let common = Common {
        region: s.region,
        endpoint: s.endpoint,
        auth: s.auth,
    };
    common.check()?;
    Ok(common)
}

/// Checks the settings without connecting anywhere.
pub fn validate(config: &StoreConfig) -> Result<(), String> {
    settings(config).map(|_| ())
}

pub struct SecretsManagerStore {
    client: Client,
    endpoint: String,
}

impl SecretsManagerStore {
    /// Builds the client once; it is shared by all reviews.
    pub async fn build(config: &StoreConfig) -> Result<Self, String> {
        let common = settings(config)?;
        let sdk = sdk_config(&common, config.deadline).await?;
        Ok(Self {
            endpoint: endpoint_label(&sdk, "secretsmanager", &common.region),
            client: Client::new(&sdk),
        })
    }

    fn call<'a>(&'a self, operation: &'static str, payload: Option<&'a SecretValue>) -> Call<'a> {
        Call {
            operation,
            endpoint: &self.endpoint,
            payload,
        }
    }

    /// Describes the secret: `None` when absent; `PendingDeletion` when it
    /// is in its recovery window.
    async fn describe(
        &self,
        name: &RemoteName,
    ) -> Result<Option<BTreeMap<String, String>>, StoreError> {
        match self
            .client
            .describe_secret()
            .secret_id(name.as_str())
            .send()
            .await
        {
            Ok(out) => {
                if let Some(date) = out.deleted_date() {
                    return Err(pending_deletion(
                        name,
                        &date.fmt(DateTimeFormat::DateTime).unwrap_or_default(),
                    ));
                }
                Ok(Some(
                    out.tags()
                        .iter()
                        .filter_map(|t| {
                            Some((
                                t.key()?.to_owned(),
                                t.value().unwrap_or_default().to_owned(),
                            ))
                        })
                        .collect(),
                ))
            }
            Err(e) if code_of(&e) == Some("ResourceNotFoundException") => Ok(None),
            Err(e) => Err(map_error(e, &self.call("DescribeSecret", None))),
        }
    }

    /// After a write was refused with `InvalidRequestException`: is the
    /// secret scheduled for deletion? Then that is the error to report.
    async fn deletion_or(&self, name: &RemoteName, original: StoreError) -> StoreError {
        match self.describe(name).await {
            Err(e @ StoreError::PendingDeletion(_)) => e,
            _ => original,
        }
    }
}

fn pending_deletion(name: &RemoteName, date: &str) -> StoreError {
    StoreError::PendingDeletion(format!(
        "secret {name} is scheduled for deletion (DeletedDate {date}) and refuses new values during its recovery window; \
         restore it (aws secretsmanager restore-secret --secret-id {name}) or wait until the window ends"
    ))
}

fn tag_list(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

fn check_size(payload: &SecretValue) -> Result<(), StoreError> {
    if payload.len() > MAX_VALUE_BYTES {
        return Err(StoreError::Invalid(format!(
            "the value is {} bytes; Secrets Manager takes at most {MAX_VALUE_BYTES}",
            payload.len()
        )));
    }
    Ok(())
}

#[async_trait]
impl SecretStore for SecretsManagerStore {
    fn kind(&self) -> &'static str {
        TYPE
    }

    /// CreateSecret fails with ResourceExistsException.
    fn atomic_create(&self) -> bool {
        true
    }

    /// Secret names: 1 to 512 of `A-Z a-z 0-9 / _ + = . @ -`.
    fn remote_name(&self, logical: &str) -> Result<RemoteName, String> {
        if logical.is_empty() {
            return Err("remote name is empty".into());
        }
        if logical.chars().count() > MAX_NAME_CHARS {
            return Err(format!(
                "Secrets Manager names have at most {MAX_NAME_CHARS} characters"
            ));
        }
        if let Some(c) = logical
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "/_+=.@-".contains(*c)))
        {
            return Err(format!(
                "character {c:?} is not allowed in Secrets Manager names (letters, digits and / _ + = . @ -)"
            ));
        }
        Ok(RemoteName::new_unchecked(logical))
    }

    async fn read(&self, name: &RemoteName) -> Result<Option<RemoteEntry>, StoreError> {
        // Tags and deletion state come from DescribeSecret, the value from
        // GetSecretValue. One after the other: an absent name (the common
        // case, a fresh CREATE) costs one call.
        let Some(tags) = self.describe(name).await? else {
            return Ok(None);
        };
        let value = self
            .client
            .get_secret_value()
            .secret_id(name.as_str())
            .send()
            .await;
        let (payload, version) = match value {
            Ok(out) => {
                let payload = match (out.secret_string(), out.secret_binary()) {
                    (Some(s), _) => SecretValue::new(s.as_bytes().to_vec()),
                    (None, Some(b)) => SecretValue::new(b.as_ref().to_vec()),
                    (None, None) => SecretValue::new(Vec::new()),
                };
                (payload, out.version_id().map(str::to_owned))
            }
            // The secret exists without a current value.
            Err(e) if code_of(&e) == Some("ResourceNotFoundException") => {
                (SecretValue::new(Vec::new()), None)
            }
            Err(e) => return Err(map_error(e, &self.call("GetSecretValue", None))),
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
        let mut req = self
            .client
            .create_secret()
            .name(name.as_str())
            .set_tags(Some(tag_list(&all_tags(owner, options))))
            .set_kms_key_id(options.kms_key_id.clone())
            .set_description(options.description.clone());
        req = match std::str::from_utf8(payload.expose()) {
            Ok(text) => req.secret_string(text),
            Err(_) => req.secret_binary(Blob::new(payload.expose().to_vec())),
        };
        match req.send().await {
            Ok(out) => Ok(CreateOutcome::Created {
                version: out.version_id().map(str::to_owned),
            }),
            Err(e) if code_of(&e) == Some("ResourceExistsException") => {
                match self.read(name).await? {
                    Some(entry) => Ok(CreateOutcome::Exists(entry)),
                    None => Err(StoreError::Other(format!(
                        "secret {name} existed at CreateSecret and was gone when read back; a retry creates it"
                    ))),
                }
            }
            Err(e) => {
                let deletion = code_of(&e) == Some("InvalidRequestException");
                let err = map_error(e, &self.call("CreateSecret", Some(payload)));
                if deletion {
                    Err(self.deletion_or(name, err).await)
                } else {
                    Err(err)
                }
            }
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
        // The value first, then the tags: if tagging fails the entry stays
        // unowned, and a retry writes the value again rather than reading an
        // adopted entry's old value back as ours.
        let mut req = self.client.put_secret_value().secret_id(name.as_str());
        req = match std::str::from_utf8(payload.expose()) {
            Ok(text) => req.secret_string(text),
            Err(_) => req.secret_binary(Blob::new(payload.expose().to_vec())),
        };
        let version = match req.send().await {
            Ok(out) => out.version_id().map(str::to_owned),
            Err(e) => {
                let code = code_of(&e).map(str::to_owned);
                let err = map_error(e, &self.call("PutSecretValue", Some(payload)));
                return Err(match code.as_deref() {
                    Some("InvalidRequestException") => self.deletion_or(name, err).await,
                    Some("ResourceNotFoundException") => StoreError::Other(format!(
                        "secret {name} was deleted between read and write; a retry creates it"
                    )),
                    _ => err,
                });
            }
        };
        self.client
            .tag_resource()
            .secret_id(name.as_str())
            .set_tags(Some(tag_list(&all_tags(owner, options))))
            .send()
            .await
            .map_err(|e| map_error(e, &self.call("TagResource", None)))?;
        Ok(version)
    }
}
