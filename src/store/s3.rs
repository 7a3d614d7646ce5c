//! `s3`: one object per remote name in an S3-compatible bucket — Amazon S3,
//! DigitalOcean Spaces, Vultr Object Storage, Linode Object Storage (by
//! preset) or any S3 endpoint.
//!
//! **Object.** The key is the remote name (the store's `prefix` plus the
//! name template, checked against S3's safe characters); the body is the
//! payload, byte for byte, with the destination's content type. Ownership
//! and the extra tags are user metadata (`x-amz-meta-secret-santa-*`), which
//! every provider keeps and which come back with the object in one
//! `GetObject`; object tagging is not used (Spaces and others lack it).
//!
//! **Create-only.** `PutObject` with `If-None-Match: *`: a `412
//! PreconditionFailed` (or `409 ConditionalRequestConflict`, a concurrent
//! conditional write) means the key exists, and it is read back so the
//! engine can check ownership. A provider that ignores the header
//! overwrites instead: the engine's read before every create keeps the
//! window small, but it is not atomic there (see the README).
//!
//! **A new value** (regeneration, adoption) is a plain `PutObject`, which
//! replaces body and metadata at once; with bucket versioning on it is a
//! new version, whose id is reported.
//!
//! **Encryption.** `serverSideEncryption`: `none`, `sse-s3` (AES256),
//! `sse-kms` (the store's `kmsKeyId`, else the account's `aws/s3` key) or
//! `sse-c` (a 256-bit key from `sseCustomerKeyFile`, sent with every read
//! and write). Each preset accepts only what its provider supports.
//!
//! Client setup (region, endpoint, auth, timeouts, retries) and the error
//! mapping are the AWS stores' (`store::aws`).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use base64::Engine as _;
use md5::Digest as _;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::aws::{
    Auth, Call, Common, all_tags, code_of, endpoint_label, map_error_at, parse_settings, sdk_config,
};
use super::{
    CreateOutcome, Ownership, RemoteEntry, RemoteName, SecretStore, StoreError, WriteOptions,
};
use crate::config::StoreConfig;
use crate::secret::SecretValue;

pub const TYPE: &str = "s3";

/// S3's limit on a key (UTF-8 bytes).
const MAX_KEY_BYTES: usize = 1024;
/// S3's limit on user metadata: the keys and values, UTF-8 bytes.
const MAX_METADATA_BYTES: usize = 2048;
/// Largest object read back: a Kubernetes Secret holds at most 1 MiB.
const MAX_OBJECT_BYTES: i64 = 1024 * 1024;

/// Whose S3 the bucket lives in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Amazon S3 (endpoint from the region, or `endpoint`).
    #[default]
    Aws,
    /// DigitalOcean Spaces: `https://{region}.digitaloceanspaces.com`.
    Digitalocean,
    /// Vultr Object Storage: `https://{region}.vultrobjects.com`.
    Vultr,
    /// Linode (Akamai) Object Storage: `https://{region}.linodeobjects.com`.
    Linode,
    /// Any S3 endpoint (MinIO, Ceph RGW, ...): `endpoint` is required.
    #[serde(alias = "generic")]
    Custom,
}

impl Provider {
    fn name(self) -> &'static str {
        match self {
            Provider::Aws => "aws",
            Provider::Digitalocean => "digitalocean",
            Provider::Vultr => "vultr",
            Provider::Linode => "linode",
            Provider::Custom => "custom",
        }
    }

    /// The preset endpoint for `region`, when the provider has one.
    pub fn endpoint(self, region: &str) -> Option<String> {
        match self {
            Provider::Digitalocean => Some(format!("https://{region}.digitaloceanspaces.com")),
            Provider::Vultr => Some(format!("https://{region}.vultrobjects.com")),
            Provider::Linode => Some(format!("https://{region}.linodeobjects.com")),
            Provider::Aws | Provider::Custom => None,
        }
    }

    /// The encryption modes the provider's API accepts (per its published
    /// S3 compatibility notes); `custom` is not checked.
    fn supports(self, sse: Sse) -> bool {
        match self {
            Provider::Aws | Provider::Custom => true,
            // Spaces and Linode: SSE-C only. Vultr documents none.
            Provider::Digitalocean | Provider::Linode => matches!(sse, Sse::None | Sse::SseC),
            Provider::Vultr => sse == Sse::None,
        }
    }
}

/// `serverSideEncryption`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum Sse {
    /// No encryption header (the bucket's default encryption applies).
    #[default]
    #[serde(rename = "none")]
    None,
    /// `x-amz-server-side-encryption: AES256`.
    #[serde(rename = "sse-s3")]
    SseS3,
    /// `aws:kms` with the store's `kmsKeyId` (or the account's `aws/s3` key).
    #[serde(rename = "sse-kms")]
    SseKms,
    /// A customer-provided AES-256 key, sent with every request.
    #[serde(rename = "sse-c")]
    SseC,
}

impl Sse {
    fn name(self) -> &'static str {
        match self {
            Sse::None => "none",
            Sse::SseS3 => "sse-s3",
            Sse::SseKms => "sse-kms",
            Sse::SseC => "sse-c",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Settings {
    bucket: String,
    region: String,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    provider: Provider,
    #[serde(default)]
    force_path_style: Option<bool>,
    #[serde(default)]
    auth: Auth,
    #[serde(default)]
    server_side_encryption: Sse,
    #[serde(default)]
    sse_customer_key_file: Option<PathBuf>,
}

/// Checked settings.
#[derive(Debug)]
struct Parsed {
    bucket: String,
    provider: Provider,
    /// Region, endpoint (the preset's when not set) and auth.
    common: Common,
    force_path_style: bool,
    sse: Sse,
    sse_customer_key_file: Option<PathBuf>,
}

fn settings(config: &StoreConfig) -> Result<Parsed, String> {
    let s: Settings = parse_settings(config).map_err(|e| {
        format!(
            "{e} (keys: bucket, region, endpoint, provider, forcePathStyle, auth, serverSideEncryption, sseCustomerKeyFile)"
        )
    })?;
    check_bucket(&s.bucket)?;
    let endpoint = match (&s.endpoint, s.provider) {
        (Some(e), _) => Some(e.clone()),
        (None, Provider::Custom) => {
            return Err(
                "provider custom needs endpoint (the S3 API's URL, like https://minio.example:9000)"
                    .into(),
            );
        }
        (None, p) => p.endpoint(&s.region),
    };
    let common = Common {
        region: s.region,
        endpoint,
        auth: s.auth,
    };
    common.check()?;
    let sse = s.server_side_encryption;
    if !s.provider.supports(sse) {
        let supported: Vec<&str> = [Sse::None, Sse::SseS3, Sse::SseKms, Sse::SseC]
            .into_iter()
            .filter(|m| s.provider.supports(*m))
            .map(Sse::name)
            .collect();
        return Err(format!(
            "serverSideEncryption {} is not supported by provider {} (it supports: {}); \
             use provider custom with an endpoint to send it anyway",
            sse.name(),
            s.provider.name(),
            supported.join(", ")
        ));
    }
    match (sse, &s.sse_customer_key_file) {
        (Sse::SseC, None) => {
            return Err("serverSideEncryption sse-c needs sseCustomerKeyFile (a file holding a 256-bit key, raw or base64)".into());
        }
        (Sse::SseC, Some(_)) => {
            let endpoint = common.endpoint.as_deref().unwrap_or("https://");
            if endpoint.starts_with("http://") && !loopback(endpoint) {
                return Err(format!(
                    "serverSideEncryption sse-c sends the key with every request: endpoint {endpoint:?} must be https://"
                ));
            }
        }
        (_, Some(_)) => {
            return Err(format!(
                "sseCustomerKeyFile is only used with serverSideEncryption sse-c (it is {})",
                sse.name()
            ));
        }
        (_, None) => {}
    }
    if sse != Sse::SseKms {
        if config.kms_key_id.is_some() {
            return Err(format!(
                "kmsKeyId is only used with serverSideEncryption sse-kms (it is {})",
                sse.name()
            ));
        }
        if config.allows_override("kmsKeyId") {
            return Err(format!(
                "allowOverrides lists kmsKeyId, which is only used with serverSideEncryption sse-kms (it is {})",
                sse.name()
            ));
        }
    }
    Ok(Parsed {
        bucket: s.bucket,
        provider: s.provider,
        common,
        // Custom endpoints (MinIO, emulators) rarely have per-bucket DNS;
        // the presets and AWS serve virtual-hosted buckets.
        force_path_style: s.force_path_style.unwrap_or(s.provider == Provider::Custom),
        sse,
        sse_customer_key_file: s.sse_customer_key_file,
    })
}

/// An `http://` URL to this machine (emulators, port-forwards).
fn loopback(url: &str) -> bool {
    url.parse::<http::Uri>().ok().and_then(|u| {
        u.host()
            .map(|h| matches!(h, "localhost" | "127.0.0.1" | "[::1]" | "::1"))
    }) == Some(true)
}

/// Bucket names: 3–63 of lowercase letters, digits, `.` and `-`, starting
/// and ending with a letter or digit.
fn check_bucket(bucket: &str) -> Result<(), String> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric())
        && !bucket.contains("..");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bucket {bucket:?} is not an S3 bucket name (3 to 63 lowercase letters, digits, '.' and '-', starting and ending with a letter or digit)"
        ))
    }
}

/// Reads the SSE-C key: 32 raw bytes, or their base64 (as `openssl rand
/// -base64 32` writes it). Returns the base64 key and the base64 MD5 of the
/// raw key, as the headers want them.
fn read_customer_key(path: &std::path::Path) -> Result<(Zeroizing<String>, String), String> {
    let what = format!("sseCustomerKeyFile {}", path.display());
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| format!("{what}: {e}"))?);
    let raw: Zeroizing<Vec<u8>> = if bytes.len() == 32 {
        Zeroizing::new(bytes.to_vec())
    } else {
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| format!("{what}: not 32 raw bytes and not base64 text"))?;
        Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| format!("{what}: not 32 raw bytes and not base64 text"))?,
        )
    };
    if raw.len() != 32 {
        return Err(format!(
            "{what}: the key is {} bytes; SSE-C takes a 256-bit (32-byte) AES key",
            raw.len()
        ));
    }
    let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&raw[..]));
    let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&raw[..]));
    Ok((b64, md5))
}

/// Checks the settings without connecting anywhere (key files are read
/// when the store is built).
pub fn validate(config: &StoreConfig) -> Result<(), String> {
    settings(config).map(|_| ())
}

/// The SSE-C key as sent: base64 key and base64 MD5.
struct CustomerKey {
    key: Zeroizing<String>,
    md5: String,
}

pub struct S3Store {
    client: Client,
    bucket: String,
    /// Where requests go, for messages.
    endpoint: String,
    force_path_style: bool,
    sse: Sse,
    customer_key: Option<CustomerKey>,
}

impl S3Store {
    /// Builds the client once; it is shared by all reviews. Reads the SSE-C
    /// key file and any credential files; contacts nothing.
    pub async fn build(config: &StoreConfig) -> Result<Self, String> {
        let p = settings(config)?;
        let customer_key = match &p.sse_customer_key_file {
            Some(path) => {
                let (key, md5) = read_customer_key(path)?;
                Some(CustomerKey { key, md5 })
            }
            None => None,
        };
        let sdk = sdk_config(&p.common, config.deadline).await?;
        let mut s3 = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(p.force_path_style);
        if p.provider != Provider::Aws {
            // The SDK's default CRC checksums (headers and aws-chunked
            // trailers) are not understood by every S3 implementation.
            s3 = s3
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        Ok(Self {
            endpoint: endpoint_label(&sdk, "s3", &p.common.region),
            client: Client::from_conf(s3.build()),
            bucket: p.bucket,
            force_path_style: p.force_path_style,
            sse: p.sse,
            customer_key,
        })
    }

    /// The endpoint requests go to (`https://ams3.digitaloceanspaces.com`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Path-style (`endpoint/bucket/key`) rather than virtual-hosted
    /// (`bucket.endpoint/key`) addressing.
    pub fn force_path_style(&self) -> bool {
        self.force_path_style
    }

    fn call<'a>(&'a self, operation: &'static str, payload: Option<&'a SecretValue>) -> Call<'a> {
        Call {
            operation,
            endpoint: &self.endpoint,
            payload,
        }
    }

    /// `s3://bucket/key`, for messages.
    fn target(&self, name: &RemoteName) -> String {
        format!("s3://{}/{name}", self.bucket)
    }

    /// The object's metadata: extra tags, then ownership (which wins).
    fn metadata(
        &self,
        owner: &Ownership,
        options: &WriteOptions,
    ) -> Result<HashMap<String, String>, StoreError> {
        let tags = all_tags(owner, options);
        let mut size = 0;
        for (k, v) in &tags {
            if k.is_empty()
                || !k.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
                })
            {
                return Err(StoreError::Invalid(format!(
                    "tag {k:?}: S3 metadata names are lowercase letters, digits, '-', '_' and '.'"
                )));
            }
            if !v.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
                return Err(StoreError::Invalid(format!(
                    "tag {k:?}: S3 metadata values are printable ASCII"
                )));
            }
            size += k.len() + v.len();
        }
        if size > MAX_METADATA_BYTES {
            return Err(StoreError::Invalid(format!(
                "the tags are {size} bytes of S3 metadata; S3 takes at most {MAX_METADATA_BYTES}"
            )));
        }
        Ok(tags.into_iter().collect())
    }

    /// One `PutObject` with the metadata `check_write` made; `create_only`
    /// adds `If-None-Match: *`.
    async fn put_object(
        &self,
        name: &RemoteName,
        payload: &SecretValue,
        metadata: HashMap<String, String>,
        options: &WriteOptions,
        create_only: bool,
    ) -> Result<
        aws_sdk_s3::operation::put_object::PutObjectOutput,
        aws_sdk_s3::error::SdkError<
            aws_sdk_s3::operation::put_object::PutObjectError,
            aws_sdk_s3::config::http::HttpResponse,
        >,
    > {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(name.as_str())
            .body(ByteStream::from(payload.expose().to_vec()))
            .set_metadata(Some(metadata));
        if !options.content_type.is_empty() {
            req = req.content_type(options.content_type);
        }
        if create_only {
            req = req.if_none_match("*");
        }
        req = match self.sse {
            Sse::None => req,
            Sse::SseS3 => req.server_side_encryption(ServerSideEncryption::Aes256),
            Sse::SseKms => req
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .set_ssekms_key_id(options.kms_key_id.clone()),
            Sse::SseC => match &self.customer_key {
                Some(k) => req
                    .sse_customer_algorithm("AES256")
                    .sse_customer_key(k.key.as_str())
                    .sse_customer_key_md5(&k.md5),
                None => req,
            },
        };
        req.send().await
    }

    /// Checks a write before sending it (a KMS key only where SSE-KMS is
    /// configured) and makes its metadata.
    fn check_write(
        &self,
        owner: &Ownership,
        options: &WriteOptions,
    ) -> Result<HashMap<String, String>, StoreError> {
        if options.kms_key_id.is_some() && self.sse != Sse::SseKms {
            return Err(StoreError::Invalid(format!(
                "kmsKeyId is only used with serverSideEncryption sse-kms (the store uses {})",
                self.sse.name()
            )));
        }
        self.metadata(owner, options)
    }
}

#[async_trait]
impl SecretStore for S3Store {
    fn kind(&self) -> &'static str {
        TYPE
    }

    /// Object keys: at most 1024 bytes of letters, digits and
    /// `/ - _ . ! * ' ( )` (S3's safe characters), no empty, `.` or `..`
    /// segment (no leading or trailing `/`).
    fn remote_name(&self, logical: &str) -> Result<RemoteName, String> {
        if logical.is_empty() {
            return Err("remote name is empty".into());
        }
        if logical.len() > MAX_KEY_BYTES {
            return Err(format!("S3 object keys have at most {MAX_KEY_BYTES} bytes"));
        }
        if let Some(c) = logical
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "/-_.!*'()".contains(*c)))
        {
            return Err(format!(
                "character {c:?} is not allowed in S3 object keys here (letters, digits and / - _ . ! * ' ( ))"
            ));
        }
        if logical
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        {
            return Err(
                "S3 object keys here have no empty, '.' or '..' segment (no leading, trailing or double '/')"
                    .into(),
            );
        }
        Ok(RemoteName::new_unchecked(logical))
    }

    async fn read(&self, name: &RemoteName) -> Result<Option<RemoteEntry>, StoreError> {
        let mut req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(name.as_str());
        if let Some(k) = &self.customer_key {
            req = req
                .sse_customer_algorithm("AES256")
                .sse_customer_key(k.key.as_str())
                .sse_customer_key_md5(&k.md5);
        }
        let out = match req.send().await {
            Ok(out) => out,
            Err(e) if matches!(code_of(&e), Some("NoSuchKey" | "NotFound")) => return Ok(None),
            Err(e) => {
                return Err(map_error_at(
                    e,
                    &self.call("GetObject", None),
                    &self.target(name),
                ));
            }
        };
        if let Some(len) = out.content_length()
            && len > MAX_OBJECT_BYTES
        {
            return Err(StoreError::Invalid(format!(
                "GetObject {}: the object is {len} bytes; a mirrored Secret is at most {MAX_OBJECT_BYTES}",
                self.target(name)
            )));
        }
        let tags: BTreeMap<String, String> = out
            .metadata()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let version = out.version_id().map(str::to_owned);
        let body = out.body.collect().await.map_err(|e| {
            StoreError::Unavailable(format!(
                "GetObject {}: reading the body from {}: {e}",
                self.target(name),
                self.endpoint
            ))
        })?;
        Ok(Some(RemoteEntry {
            payload: SecretValue::new(body.into_bytes().to_vec()),
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
        let metadata = self.check_write(owner, options)?;
        match self
            .put_object(name, payload, metadata, options, true)
            .await
        {
            Ok(out) => Ok(CreateOutcome::Created {
                version: out.version_id().map(str::to_owned),
            }),
            // 412: the key exists. 409: another conditional write to the
            // key is in flight; once it lands the key exists.
            Err(e)
                if matches!(
                    code_of(&e),
                    Some("PreconditionFailed" | "ConditionalRequestConflict")
                ) =>
            {
                match self.read(name).await? {
                    Some(entry) => Ok(CreateOutcome::Exists(entry)),
                    None => Err(StoreError::Other(format!(
                        "PutObject {}: the object existed (If-None-Match) and was gone when read back; a retry creates it",
                        self.target(name)
                    ))),
                }
            }
            Err(e) => Err(map_error_at(
                e,
                &self.call("PutObject", Some(payload)),
                &self.target(name),
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
        let metadata = self.check_write(owner, options)?;
        // Body and metadata in one request: the object is never left with
        // a new value and old ownership, or the reverse.
        self.put_object(name, payload, metadata, options, false)
            .await
            .map(|out| out.version_id().map(str::to_owned))
            .map_err(|e| {
                map_error_at(
                    e,
                    &self.call("PutObject", Some(payload)),
                    &self.target(name),
                )
            })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn config(settings: serde_json::Value) -> StoreConfig {
        let mut c: StoreConfig = serde_json::from_value(serde_json::json!({
            "name": "s", "type": "s3", "namespaces": ["*"]
        }))
        .unwrap();
        c.settings = settings.as_object().unwrap().clone();
        c
    }

    #[test]
    fn presets_give_endpoints_and_addressing() {
        for (provider, region, endpoint) in [
            (
                "digitalocean",
                "ams3",
                "https://ams3.digitaloceanspaces.com",
            ),
            ("vultr", "ewr1", "https://ewr1.vultrobjects.com"),
            ("linode", "us-east-1", "https://us-east-1.linodeobjects.com"),
        ] {
            let p = settings(&config(serde_json::json!({
                "bucket": "b-1", "region": region, "provider": provider
            })))
            .unwrap();
            assert_eq!(p.common.endpoint.as_deref(), Some(endpoint));
            assert!(!p.force_path_style);
        }
        let p = settings(&config(
            serde_json::json!({ "bucket": "b-1", "region": "eu-west-1" }),
        ))
        .unwrap();
        assert_eq!(p.provider, Provider::Aws);
        assert_eq!(p.common.endpoint, None);
        let p = settings(&config(serde_json::json!({
            "bucket": "b-1", "region": "us-east-1", "provider": "generic", "endpoint": "http://127.0.0.1:9000"
        })))
        .unwrap();
        assert_eq!(p.provider, Provider::Custom);
        assert!(p.force_path_style, "custom endpoints default to path style");
    }

    #[test]
    fn unsupported_encryption_names_the_key() {
        let err = settings(&config(serde_json::json!({
            "bucket": "b-1", "region": "ams3", "provider": "digitalocean", "serverSideEncryption": "sse-kms"
        })))
        .unwrap_err();
        assert!(
            err.contains("serverSideEncryption sse-kms") && err.contains("none, sse-c"),
            "{err}"
        );
        let err = settings(&config(serde_json::json!({
            "bucket": "b-1", "region": "eu-west-1", "serverSideEncryption": "sse-c",
            "sseCustomerKeyFile": "/k", "endpoint": "http://s3.example"
        })))
        .unwrap_err();
        assert!(err.contains("must be https://"), "{err}");
        assert!(loopback("http://127.0.0.1:5000") && loopback("http://localhost"));
        assert!(!loopback("http://s3.example"));
    }

    #[test]
    fn customer_keys_raw_or_base64() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw");
        std::fs::write(&raw, [7u8; 32]).unwrap();
        let b64 = dir.path().join("b64");
        std::fs::write(
            &b64,
            format!(
                "{}\n",
                base64::engine::general_purpose::STANDARD.encode([7u8; 32])
            ),
        )
        .unwrap();
        let (k1, m1) = read_customer_key(&raw).unwrap();
        let (k2, m2) = read_customer_key(&b64).unwrap();
        assert!(k1 == k2 && m1 == m2);
        let short = dir.path().join("short");
        std::fs::write(&short, "c2hvcnQ=").unwrap();
        let err = read_customer_key(&short).unwrap_err();
        assert!(
            err.contains("sseCustomerKeyFile") && err.contains("5 bytes"),
            "{err}"
        );
    }

    #[test]
    fn bucket_names() {
        assert!(check_bucket("my-bucket.v2").is_ok());
        for bad in ["ab", "My-Bucket", "-x-", "a..b", "under_score"] {
            assert!(check_bucket(bad).unwrap_err().contains("bucket"), "{bad}");
        }
    }
}
