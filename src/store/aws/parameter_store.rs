//! `aws-parameter-store`: one `SecureString` parameter per remote name
//! (`shop/db` becomes `/shop/db`), tier by size or as configured, ownership
//! and extra tags as resource tags; a new value is a new parameter version.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_ssm::Client;
use aws_sdk_ssm::types::{ParameterTier, ParameterType, ResourceTypeForTagging, Tag};
use serde::Deserialize;

use super::{
    Auth, Call, Common, all_tags, code_of, endpoint_label, map_error, parse_settings, sdk_config,
};
use crate::config::StoreConfig;
use crate::secret::SecretValue;
use crate::store::{
    CreateOutcome, Ownership, RemoteEntry, RemoteName, SecretStore, StoreError, WriteOptions,
};

pub const TYPE: &str = "aws-parameter-store";

const STANDARD_MAX_BYTES: usize = 4096;
const ADVANCED_MAX_BYTES: usize = 8192;
const MAX_NAME_CHARS: usize = 1011;
const MAX_DEPTH: usize = 15;

/// `tier` setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum Tier {
    /// Standard up to 4 KiB, Advanced above (up to 8 KiB).
    #[default]
    #[serde(rename = "auto")]
    Auto,
    #[serde(alias = "standard")]
    Standard,
    #[serde(alias = "advanced")]
    Advanced,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Settings {
    region: String,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    auth: Auth,
    #[serde(default)]
    tier: Tier,
}

fn settings(config: &StoreConfig) -> Result<(Common, Tier), String> {
    let s: Settings = parse_settings(config)?;
    let common = Common {
        region: s.region,
        endpoint: s.endpoint,
        auth: s.auth,
    };
    common.check()?;
    Ok((common, s.tier))
}

/// Checks the settings without connecting anywhere.
pub fn validate(config: &StoreConfig) -> Result<(), String> {
    settings(config).map(|_| ())
}

pub struct ParameterStore {
    client: Client,
    endpoint: String,
    tier: Tier,
}

impl ParameterStore {
    /// Builds the client once; it is shared by all reviews.
    pub async fn build(config: &StoreConfig) -> Result<Self, String> {
        let (common, tier) = settings(config)?;
        let sdk = sdk_config(&common, config.deadline).await?;
        Ok(Self {
            endpoint: endpoint_label(&sdk, "ssm", &common.region),
            client: Client::new(&sdk),
            tier,
        })
    }

    fn call<'a>(&'a self, operation: &'static str, payload: Option<&'a SecretValue>) -> Call<'a> {
        Call {
            operation,
            endpoint: &self.endpoint,
            payload,
        }
    }

    /// The value as text, and the tier to write it with (`None`: leave the
    /// parameter's tier as it is, on overwrite).
    fn prepare<'a>(
        &self,
        payload: &'a SecretValue,
        overwrite: bool,
    ) -> Result<(&'a str, Option<ParameterTier>), StoreError> {
        let text = std::str::from_utf8(payload.expose()).map_err(|_| {
            StoreError::Invalid("Parameter Store holds text only; this value is not UTF-8 (mirror it base64-encoded)".into())
        })?;
        if text.is_empty() {
            return Err(StoreError::Invalid(
                "Parameter Store does not hold empty values".into(),
            ));
        }
        let size = text.len();
        let limit = match self.tier {
            Tier::Standard => STANDARD_MAX_BYTES,
            Tier::Auto | Tier::Advanced => ADVANCED_MAX_BYTES,
        };
        if size > limit {
            return Err(StoreError::Invalid(format!(
                "the value is {size} bytes; the {} tier takes at most {limit}",
                if limit == STANDARD_MAX_BYTES {
                    "Standard"
                } else {
                    "Advanced"
                }
            )));
        }
        let tier = match self.tier {
            Tier::Standard => Some(ParameterTier::Standard),
            Tier::Advanced => Some(ParameterTier::Advanced),
            Tier::Auto if size > STANDARD_MAX_BYTES => Some(ParameterTier::Advanced),
            // An Advanced parameter cannot go back to Standard: keep its tier.
            Tier::Auto if overwrite => None,
            Tier::Auto => Some(ParameterTier::Standard),
        };
        Ok((text, tier))
    }
}

fn tag_list(tags: &BTreeMap<String, String>) -> Result<Vec<Tag>, StoreError> {
    tags.iter()
        .map(|(k, v)| {
            Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| StoreError::Invalid(format!("tag {k:?}: {e}")))
        })
        .collect()
}

#[async_trait]
impl SecretStore for ParameterStore {
    fn kind(&self) -> &'static str {
        TYPE
    }

    /// PutParameter with Overwrite=false fails with ParameterAlreadyExists.
    fn atomic_create(&self) -> bool {
        true
    }

    /// Parameter names are hierarchies: `shop/db` becomes `/shop/db`; at most
    /// 1011 characters of `A-Z a-z 0-9 _ . - /`, 15 levels, no empty level,
    /// not under `aws` or `ssm`.
    fn remote_name(&self, logical: &str) -> Result<RemoteName, String> {
        let body = logical.strip_prefix('/').unwrap_or(logical);
        if body.is_empty() {
            return Err("remote name is empty".into());
        }
        let name = format!("/{body}");
        if name.len() > MAX_NAME_CHARS {
            return Err(format!(
                "Parameter Store names have at most {MAX_NAME_CHARS} characters"
            ));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "_.-/".contains(*c)))
        {
            return Err(format!(
                "character {c:?} is not allowed in Parameter Store names (letters, digits and _ . - /)"
            ));
        }
        let levels: Vec<&str> = body.split('/').collect();
        if levels.iter().any(|l| l.is_empty()) {
            return Err(format!(
                "{name} has an empty level (`//` or a trailing `/`)"
            ));
        }
        if levels.len() > MAX_DEPTH {
            return Err(format!(
                "{name} has {} levels; Parameter Store allows at most {MAX_DEPTH}",
                levels.len()
            ));
        }
        let first = levels[0].to_ascii_lowercase();
        if first.starts_with("aws") || first.starts_with("ssm") {
            return Err(format!(
                "{name}: Parameter Store names may not begin with \"aws\" or \"ssm\""
            ));
        }
        Ok(RemoteName::new_unchecked(name))
    }

    async fn read(&self, name: &RemoteName) -> Result<Option<RemoteEntry>, StoreError> {
        // The value first: an absent name (the common case, a fresh CREATE)
        // costs one call; the tags only for an entry that exists.
        let value = self
            .client
            .get_parameter()
            .name(name.as_str())
            .with_decryption(true)
            .send()
            .await;
        let (payload, version) = match value {
            Ok(out) => match out.parameter() {
                Some(p) => (
                    SecretValue::new(p.value().unwrap_or_default().as_bytes().to_vec()),
                    Some(p.version().to_string()),
                ),
                None => return Ok(None),
            },
            Err(e) if code_of(&e) == Some("ParameterNotFound") => return Ok(None),
            Err(e) => return Err(map_error(e, &self.call("GetParameter", None))),
        };
        let tags = self
            .client
            .list_tags_for_resource()
            .resource_type(ResourceTypeForTagging::Parameter)
            .resource_id(name.as_str())
            .send()
            .await;
        let tags = match tags {
            Ok(out) => out
                .tag_list()
                .iter()
                .map(|t| (t.key().to_owned(), t.value().to_owned()))
                .collect(),
            // Deleted between the two calls.
            Err(e) if code_of(&e) == Some("InvalidResourceId") => return Ok(None),
            Err(e) => return Err(map_error(e, &self.call("ListTagsForResource", None))),
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
        let (text, tier) = self.prepare(payload, false)?;
        let result = self
            .client
            .put_parameter()
            .name(name.as_str())
            .value(text)
            .r#type(ParameterType::SecureString)
            .overwrite(false)
            .set_tags(Some(tag_list(&all_tags(owner, options))?))
            .set_key_id(options.kms_key_id.clone())
            .set_description(options.description.clone())
            .set_tier(tier)
            .send()
            .await;
        match result {
            Ok(out) => Ok(CreateOutcome::Created {
                version: Some(out.version().to_string()),
            }),
            Err(e) if code_of(&e) == Some("ParameterAlreadyExists") => match self.read(name).await?
            {
                Some(entry) => Ok(CreateOutcome::Exists(entry)),
                None => Err(StoreError::Other(format!(
                    "parameter {name} existed at PutParameter and was gone when read back; a retry creates it"
                ))),
            },
            Err(e) => Err(map_error(e, &self.call("PutParameter", Some(payload)))),
        }
    }

    async fn put(
        &self,
        name: &RemoteName,
        payload: &SecretValue,
        owner: &Ownership,
        options: &WriteOptions,
    ) -> Result<Option<String>, StoreError> {
        let (text, tier) = self.prepare(payload, true)?;
        // Tags cannot be passed with Overwrite=true: the value first, then
        // the tags (an entry whose tagging failed stays unowned, so a retry
        // writes the value again).
        let out = self
            .client
            .put_parameter()
            .name(name.as_str())
            .value(text)
            .r#type(ParameterType::SecureString)
            .overwrite(true)
            .set_key_id(options.kms_key_id.clone())
            .set_description(options.description.clone())
            .set_tier(tier)
            .send()
            .await
            .map_err(|e| map_error(e, &self.call("PutParameter", Some(payload))))?;
        self.client
            .add_tags_to_resource()
            .resource_type(ResourceTypeForTagging::Parameter)
            .resource_id(name.as_str())
            .set_tags(Some(tag_list(&all_tags(owner, options))?))
            .send()
            .await
            .map_err(|e| map_error(e, &self.call("AddTagsToResource", None)))?;
        Ok(Some(out.version().to_string()))
    }
}
