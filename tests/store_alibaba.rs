//! The `alibaba-kms` store on a fake of the KMS, STS and ECS metadata APIs
//! (`common/alibaba_fake.rs`, written from the public API reference: no
//! emulator exists), which verifies every request's RPC signature the way
//! Alibaba's gateway does. The shared store contract with each credential
//! source (AccessKey, `AssumeRole`, the ECS instance RAM role, RRSA's
//! `AssumeRoleWithOIDC`), then CONTRACT §4 through the whole review
//! pipeline: fresh create, retried create, unowned entries, a secret
//! scheduled for deletion, permissions, a bad signature, a KMS that is down
//! or silent, dry run, regeneration, several regions and their repair,
//! settings. Values are compared with `assert!(a == b)` so a failure never
//! prints them, and every denial is checked for the values it must not
//! show.
#![cfg(feature = "alibaba")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/alibaba_fake.rs"]
mod alibaba_fake;
mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alibaba_fake::{AlibabaFake, Perms, REGION, REGION2, server_signature, server_string_to_sign};
use common::*;
use secret_santa::config::AdminConfig;
use secret_santa::secret::SecretValue;
use secret_santa::store::alibaba::REPLICATION_INCOMPLETE;
use secret_santa::store::{self, CreateOutcome, Ownership, StoreError, Stores, WriteOptions};
use secret_santa::{App, Reviewer};
use serde_json::{Value, json};

/// The webhook's RAM user (full KMS access to its secrets), one that may
/// only read, and one that may only assume the writer role.
const WRITER_ID: &str = "LTAI5tWriterKey00000001";
const WRITER_SECRET: &str = "writer-secret-4f1c9a77ZqXk";
const READER_ID: &str = "LTAI5tReaderKey00000002";
const READER_SECRET: &str = "reader-secret-8d2b7e31QpLm";
const DEPLOYER_ID: &str = "LTAI5tDeployerKey000003";
const DEPLOYER_SECRET: &str = "deployer-secret-1a2b3c4dWx";
const WRONG_SECRET: &str = "not-the-writer-secret-9d2e";

const ROLE_ARN: &str = "acs:ram::1234567890123456:role/secret-santa-writer";
const ECS_ROLE: &str = "secret-santa-node";
const ECS_ROLE_ARN: &str = "acs:ram::1234567890123456:role/secret-santa-node";
const RRSA_ROLE_ARN: &str = "acs:ram::1234567890123456:role/secret-santa-rrsa";
const OIDC_PROVIDER_ARN: &str = "acs:ram::1234567890123456:oidc-provider/ack-rrsa-c0ffee";
const SA_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.fake-rrsa-projected-service-account-token.c2ln";
const KMS_KEY: &str = "key-hzz63ff0db5hg3qje0001";

struct World {
    fake: AlibabaFake,
    closed_port: u16,
    /// Accepts connections (the kernel's backlog) and never answers.
    _hang: TcpListener,
    files: tempfile::TempDir,
    /// The webhook under test and its admin config.
    hook: Webhook,
}

impl std::ops::Deref for World {
    type Target = Webhook;

    fn deref(&self) -> &Webhook {
        &self.hook
    }
}

fn config_yaml(fake: &AlibabaFake, closed: u16, hang: u16, files: &Path) -> String {
    let f = |name: &str| files.join(name).display().to_string();
    let endpoint = &fake.endpoint;
    let store = |endpoint: &str, deadline: &str| {
        format!(
            "    type: alibaba-kms\n    regionId: {REGION}\n    endpoint: {endpoint}\n    namespaces: [\"shop\"]\n    deadline: {deadline}\n"
        )
    };
    let writer = format!(
        "{{ method: accessKey, accessKeyIdFile: \"{}\", accessKeySecretFile: \"{}\" }}",
        f("writer-id"),
        f("writer-secret")
    );
    format!(
        r#"
clusterId: test-cluster
limits: {{ requestDeadline: 6s }}
stores:
  - name: kms
{kms}    auth: {writer}
    prefix: "k8s/"
    tags: {{ team: platform }}
  - name: kms-cmk
{kms}    auth: {writer}
    prefix: "cmk/"
    kmsKeyId: {KMS_KEY}
  - name: kms-role
{kms}    auth: {{ method: ramRoleArn, roleArn: "{ROLE_ARN}", accessKeyIdFile: "{deployer_id}", accessKeySecretFile: "{deployer_secret}", stsEndpoint: "{endpoint}", durationSeconds: 900 }}
    prefix: "role/"
  - name: kms-ecs
{kms}    auth: {{ method: ecsRamRole, metadataEndpoint: "{endpoint}" }}
    prefix: "ecs/"
  - name: kms-rrsa
{kms}    auth: {{ method: rrsa, roleArn: "{RRSA_ROLE_ARN}", oidcProviderArn: "{OIDC_PROVIDER_ARN}", oidcTokenFile: "{token}", stsEndpoint: "{endpoint}" }}
    prefix: "rrsa/"
  - name: kms-reader
{kms}    auth: {{ method: accessKey, accessKeyIdFile: "{reader_id}", accessKeySecretFile: "{reader_secret}" }}
    prefix: "k8s/"
  - name: kms-badsig
{kms}    auth: {{ method: accessKey, accessKeyIdFile: "{writer_id}", accessKeySecretFile: "{bad_secret}" }}
    prefix: "k8s/"
  - name: kms-multi
    type: alibaba-kms
    regions: [{REGION}, {REGION2}]
    endpoint: {endpoint}
    namespaces: ["shop"]
    deadline: 3s
    auth: {writer}
    prefix: "multi/"
    tags: {{ team: platform }}
  - name: kms-down
{down}    auth: {writer}
  - name: kms-hang
{hang_store}    auth: {writer}
"#,
        kms = store(endpoint, "3s"),
        down = store(&format!("http://127.0.0.1:{closed}"), "1s"),
        hang_store = store(&format!("http://127.0.0.1:{hang}"), "1s"),
        deployer_id = f("deployer-id"),
        deployer_secret = f("deployer-secret"),
        reader_id = f("reader-id"),
        reader_secret = f("reader-secret"),
        writer_id = f("writer-id"),
        bad_secret = f("bad-secret"),
        token = f("sa-token"),
    )
}

async fn app_for(config: &AdminConfig) -> Arc<App> {
    let stores = Stores::from_config(config).await.unwrap();
    App::new(Reviewer::new(config.clone(), stores), 3 * 1024 * 1024)
}

impl World {
    async fn new() -> World {
        let fake = AlibabaFake::start();
        fake.add_access_key(WRITER_ID, WRITER_SECRET, "secret-santa-writer", Perms::FULL);
        fake.add_access_key(
            READER_ID,
            READER_SECRET,
            "secret-santa-reader",
            Perms::READER,
        );
        fake.add_access_key(
            DEPLOYER_ID,
            DEPLOYER_SECRET,
            "secret-santa-deployer",
            Perms::NONE,
        );
        fake.add_role(ROLE_ARN, Perms::FULL);
        fake.trust_access_key(ROLE_ARN, DEPLOYER_ID);
        fake.add_role(ECS_ROLE_ARN, Perms::FULL);
        fake.attach_ecs_role(ECS_ROLE, ECS_ROLE_ARN);
        fake.add_role(RRSA_ROLE_ARN, Perms::FULL);
        fake.trust_oidc(RRSA_ROLE_ARN, OIDC_PROVIDER_ARN, SA_TOKEN);
        fake.add_kms_key(REGION, KMS_KEY);

        let files = tempfile::tempdir().unwrap();
        for (name, content) in [
            ("writer-id", format!("{WRITER_ID}\n")),
            ("writer-secret", format!("{WRITER_SECRET}\n")),
            ("reader-id", format!("{READER_ID}\n")),
            ("reader-secret", format!("{READER_SECRET}\n")),
            ("deployer-id", format!("{DEPLOYER_ID}\n")),
            ("deployer-secret", format!("{DEPLOYER_SECRET}\n")),
            ("bad-secret", format!("{WRONG_SECRET}\n")),
            // Projected service account tokens have no trailing newline.
            ("sa-token", SA_TOKEN.to_owned()),
        ] {
            std::fs::write(files.path().join(name), content).unwrap();
        }
        let closed_port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let hang = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let hang_port = hang.local_addr().unwrap().port();
        let config =
            AdminConfig::parse(&config_yaml(&fake, closed_port, hang_port, files.path())).unwrap();
        let app = app_for(&config).await;
        World {
            fake,
            closed_port,
            _hang: hang,
            files,
            hook: Webhook { config, app },
        }
    }

    fn write_file(&self, name: &str, content: &str) {
        std::fs::write(self.files.path().join(name), content).unwrap();
    }

    /// The current value of a secret in the fake, as a JSON map.
    fn stored(&self, region: &str, name: &str) -> Option<BTreeMap<String, String>> {
        self.fake
            .current(region, name)
            .map(|v| serde_json::from_str(&v.data).expect("a JSON object of strings"))
    }
}

/// A denial that names the store and shows no value: neither the author's,
/// nor a credential, nor any in `also`.
fn denied(answer: &Value, store: &str, also: &[&str]) -> String {
    assert!(
        !allowed(answer),
        "{store}: expected a denial: {}",
        shown(answer)
    );
    let msg = message(answer);
    assert!(msg.contains(&format!("store \"{store}\"")), "{msg}");
    assert!(!msg.contains(PRESET), "a denial shows a Secret value");
    for secret in [
        WRITER_SECRET,
        READER_SECRET,
        DEPLOYER_SECRET,
        WRONG_SECRET,
        SA_TOKEN,
    ] {
        assert!(!msg.contains(secret), "a denial shows a credential");
    }
    for value in also {
        assert!(!msg.contains(value), "a denial shows a value");
    }
    msg
}

/// Every KMS and STS request of the log was signed, verified, sent as a
/// form body (nothing in the URL) and had its own nonce.
fn assert_signed_in_body(fake: &AlibabaFake) {
    let log = fake.log();
    let rpc: Vec<_> = log
        .iter()
        .filter(|l| l.product == "kms" || l.product == "sts")
        .collect();
    assert!(!rpc.is_empty());
    for l in &rpc {
        assert_eq!(l.method, "POST", "{l:?}");
        assert!(l.query_params.is_empty(), "nothing in the URL: {l:?}");
        if l.action != "AssumeRoleWithOIDC" {
            assert!(l.signature_verified, "{l:?}");
            assert!(l.body_params.iter().any(|p| p == "Signature"), "{l:?}");
        }
    }
    let mut nonces: Vec<_> = rpc
        .iter()
        .filter_map(|l| l.signature_nonce.clone())
        .collect();
    let all = nonces.len();
    nonces.sort();
    nonces.dedup();
    assert_eq!(nonces.len(), all, "a fresh SignatureNonce per request");
}

// ---------------------------------------------------------------------------
// The signature.

/// The fake's own signer reproduces the worked example of Alibaba Cloud's
/// signature documentation (`DescribeRegions`, AccessKey secret
/// `testsecret`), so its verdicts can be trusted.
#[test]
fn the_fake_verifies_with_the_documented_algorithm() {
    let params: BTreeMap<String, String> = [
        ("Timestamp", "2016-02-23T12:46:24Z"),
        ("Format", "XML"),
        ("AccessKeyId", "testid"),
        ("Action", "DescribeRegions"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
        ("Version", "2014-05-26"),
        ("SignatureVersion", "1.0"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let sts = server_string_to_sign("GET", &params);
    assert_eq!(
        sts,
        "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML\
         %26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf\
         %26SignatureVersion%3D1.0%26Timestamp%3D2016-02-23T12%253A46%253A24Z%26Version%3D2014-05-26"
    );
    assert_eq!(
        server_signature("testsecret", &sts),
        "OLeaidS1JvxuMvnyHOwuJ+uX5qY="
    );
    // And the store's signer agrees with it on a request with a secret value.
    let mut post = params.clone();
    post.insert("SecretData".into(), r#"{"password":"p ü*~+/"}"#.into());
    assert_eq!(
        secret_santa::store::alibaba::string_to_sign("POST", &post).as_str(),
        server_string_to_sign("POST", &post)
    );
}

// ---------------------------------------------------------------------------
// The shared contract, with each credential source.

#[tokio::test]
async fn access_key_store_satisfies_the_store_contract() {
    let w = World::new().await;
    common::contract::run(w.store("kms").await, "contract").await;
    let secret = w.fake.secret(REGION, "contract/shop/db").unwrap();
    assert_eq!(secret.versions.len(), 2, "create, then put: two versions");
    assert_owned(&secret.tags, "db", "tags");
    assert_eq!(
        secret.tags.get("team").map(String::as_str),
        Some("payments")
    );
    assert_eq!(secret.description.as_deref(), Some("contract test"));
    let current = secret.current().unwrap();
    assert_eq!(current.data_type, "text");
    assert_eq!(current.stages, ["ACSCurrent"]);
    assert_eq!(secret.versions[0].stages, ["ACSPrevious"]);
    let raw = w.fake.current(REGION, "contract/shop/raw").unwrap();
    assert!(
        raw.data == "line one\nline \"two\" = ü",
        "text is stored as it is"
    );
    assert_eq!(raw.data_type, "text");
    assert_signed_in_body(&w.fake);
    assert!(
        w.fake
            .log()
            .iter()
            .filter(|l| l.product == "kms")
            .all(|l| l.access_key_id.as_deref() == Some(WRITER_ID) && !l.security_token)
    );
}

#[tokio::test]
async fn role_ecs_and_rrsa_stores_satisfy_the_store_contract() {
    let w = World::new().await;
    w.fake.require_imds_v2();
    common::contract::run(w.store("kms-role").await, "role").await;
    common::contract::run(w.store("kms-ecs").await, "ecs").await;
    common::contract::run(w.store("kms-rrsa").await, "rrsa").await;
    for prefix in ["role", "ecs", "rrsa"] {
        let secret = w.fake.secret(REGION, &format!("{prefix}/shop/db")).unwrap();
        assert_owned(&secret.tags, "db", prefix);
    }
    // One set of temporary credentials each, for the whole run.
    assert_eq!(w.fake.issued("AssumeRole"), 1);
    assert_eq!(w.fake.issued("AssumeRoleWithOIDC"), 1);
    assert_eq!(w.fake.issued("ecs"), 1);
    let log = w.fake.log();
    // KMS saw temporary keys only; the deployer's key only assumed the role.
    for l in log.iter().filter(|l| l.product == "kms") {
        assert!(
            l.access_key_id
                .as_deref()
                .is_some_and(|k| k.starts_with("STS."))
                && l.security_token,
            "{l:?}"
        );
    }
    assert!(
        log.iter()
            .filter(|l| l.access_key_id.as_deref() == Some(DEPLOYER_ID))
            .all(|l| l.action == "AssumeRole")
    );
    // IMDSv2: a session token, then the role's name and credentials with it.
    let metadata: Vec<&str> = log
        .iter()
        .filter(|l| l.product == "metadata")
        .map(|l| l.action.as_str())
        .collect();
    assert_eq!(
        metadata,
        ["metadata:token", "metadata:list", "metadata:credentials"]
    );
    assert!(
        log.iter()
            .filter(|l| l.action.starts_with("metadata:") && l.action != "metadata:token")
            .all(|l| l.metadata_token && l.status == 200)
    );
    assert_signed_in_body(&w.fake);
}

// ---------------------------------------------------------------------------
// Credentials.

#[tokio::test]
async fn temporary_credentials_are_cached_and_refreshed_before_they_expire() {
    let w = World::new().await;
    w.fake.set_credential_lifetime(Duration::from_secs(3));
    let kms = w.store("kms-role").await;
    let name = kms.remote_name("role/shop/cache").unwrap();
    assert!(kms.read(&name).await.unwrap().is_none());
    assert!(kms.read(&name).await.unwrap().is_none());
    assert_eq!(w.fake.issued("AssumeRole"), 1, "cached");
    // Two thirds of the three seconds gone: replaced before they expire.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(kms.read(&name).await.unwrap().is_none());
    assert_eq!(w.fake.issued("AssumeRole"), 2, "refreshed");
    assert!(
        w.fake
            .log()
            .iter()
            .filter(|l| l.product == "kms")
            .all(|l| l.status == 404),
        "never refused for stale credentials"
    );
}

#[tokio::test]
async fn credentials_kms_stops_accepting_are_replaced_once() {
    let w = World::new().await;
    let kms = w.store("kms-rrsa").await;
    let name = kms.remote_name("rrsa/shop/revoked").unwrap();
    assert!(kms.read(&name).await.unwrap().is_none());
    assert_eq!(w.fake.issued("AssumeRoleWithOIDC"), 1);
    // Credentials younger than a few seconds are kept on a refusal.
    tokio::time::sleep(Duration::from_millis(5200)).await;
    w.fake.expire_temporary_keys();
    assert!(kms.read(&name).await.unwrap().is_none());
    assert_eq!(w.fake.issued("AssumeRoleWithOIDC"), 2, "replaced");
    assert!(
        w.fake
            .log()
            .iter()
            .any(|l| l.code.as_deref() == Some("InvalidSecurityToken.Expired"))
    );
}

#[tokio::test]
async fn a_wrong_access_key_secret_is_a_clear_denial_and_a_fixed_file_is_picked_up() {
    let w = World::new().await;
    let (answer, _) = w.create(&mirrored(&["kms-badsig"])).await;
    let msg = denied(&answer, "kms-badsig", &[]);
    assert!(
        msg.contains("permission denied")
            && msg.contains("SignatureDoesNotMatch")
            && msg.contains("KMS did not accept the credentials")
            && msg.contains("string to sign is not shown")
            && !msg.contains("SecretData"),
        "{msg}"
    );
    assert!(w.fake.names(REGION).is_empty(), "nothing written");

    // Directly: the message holds neither the value nor its encodings,
    // though the gateway's answer echoes all of them.
    let kms = w.store("kms-badsig").await;
    let name = kms.remote_name("k8s/shop/direct").unwrap();
    let value = SecretValue::new(br#"{"password":"never-shown-7c1e"}"#.to_vec());
    let err = kms
        .create_if_absent(&name, &value, &owner("direct"), &json_options())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::PermissionDenied(_)), "{err}");
    assert!(!err.to_string().contains("never-shown"), "{err}");
    assert!(err.to_string().len() < 600, "{err}");

    // The AccessKey files are read for every request: the fixed one works.
    w.write_file("bad-secret", &format!("{WRITER_SECRET}\n"));
    let (answer, _) = w.create(&mirrored(&["kms-badsig"])).await;
    assert!(allowed(&answer), "{answer}");
    assert!(w.fake.current(REGION, "k8s/shop/db").is_some());
}

#[tokio::test]
async fn a_refused_sts_exchange_is_a_clear_denial() {
    let w = World::new().await;
    w.write_file("sa-token", "eyJhbGciOiJSUzI1NiJ9.another-token.c2ln");
    let (answer, _) = w.create(&mirrored(&["kms-rrsa"])).await;
    let msg = denied(&answer, "kms-rrsa", &["another-token"]);
    assert!(
        msg.contains("permission denied")
            && msg.contains("STS AssumeRoleWithOIDC for role")
            && msg.contains("AuthenticationFail.OIDCToken.Invalid")
            && msg.contains("trust policy"),
        "{msg}"
    );
    // A role the deployer may not assume.
    let mut config = w.store_config("kms-role");
    config.settings["auth"]["roleArn"] = json!("acs:ram::1234567890123456:role/someone-else");
    let kms = store::build(&config).await.unwrap();
    let err = kms
        .read(&kms.remote_name("role/shop/x").unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::PermissionDenied(_))
            && err.to_string().contains("EntityNotExist.Role")
            && err.to_string().contains("sts:AssumeRole"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// Backend specifics.

#[tokio::test]
async fn names_map_to_kms_rules() {
    let w = World::new().await;
    let kms = w.store("kms").await;
    contract::assert_name_rules(
        &kms,
        ("k8s/shop/db.v1_x+y=z@w", "k8s/shop/db.v1_x+y=z@w"),
        &[("acs/shop/db", "acs/")],
        192,
        "192",
    );

    // Through the pipeline: the name as it is, and a clear refusal.
    let (answer, _) = w.create(&mirrored(&["kms"])).await;
    assert!(allowed(&answer), "{answer}");
    assert_eq!(w.fake.names(REGION), ["k8s/shop/db"]);
    let mut doc = mirrored_named("web", &["kms"]);
    doc["metadata"]["annotations"]["secret-santa.io/mirror"] =
        json!("- store: kms\n  key: shop/web#1\n");
    let (answer, _) = w.create(&doc).await;
    let msg = denied(&answer, "kms", &[]);
    assert!(
        msg.contains("'#' is not allowed in KMS secret names"),
        "{msg}"
    );
    assert_eq!(w.fake.names(REGION), ["k8s/shop/db"]);
}

#[tokio::test]
async fn binary_values_and_tag_limits() {
    let w = World::new().await;
    let kms = w.store("kms").await;
    let me = owner("bin");
    let name = kms.remote_name("shop/bin").unwrap();
    let raw = SecretValue::new(vec![0, 159, 146, 150, 255]);
    let options = WriteOptions {
        content_type: "application/octet-stream",
        ..Default::default()
    };
    assert!(matches!(
        kms.create_if_absent(&name, &raw, &me, &options)
            .await
            .unwrap(),
        CreateOutcome::Created { version: Some(_) }
    ));
    let stored = w.fake.current(REGION, "shop/bin").unwrap();
    assert_eq!(
        stored.data_type, "binary",
        "SecretDataType binary, base64 data"
    );
    assert!(stored.data == "AJ+Slv8=");
    assert!(kms.read(&name).await.unwrap().unwrap().payload == raw);

    let many = WriteOptions {
        tags: (0..6)
            .map(|i| (format!("tag-{i}"), "v".to_owned()))
            .collect(),
        ..json_options()
    };
    let err = kms
        .create_if_absent(
            &kms.remote_name("shop/tags").unwrap(),
            &SecretValue::new(b"{}".to_vec()),
            &me,
            &many,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid(_))
            && err.to_string().contains("11 tags")
            && err.to_string().contains("at most 10"),
        "{err}"
    );
    let reserved = WriteOptions {
        tags: [("aliyun-team".to_owned(), "x".to_owned())].into(),
        ..json_options()
    };
    let err = kms
        .create_if_absent(
            &kms.remote_name("shop/tags").unwrap(),
            &SecretValue::new(b"{}".to_vec()),
            &me,
            &reserved,
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("must not start with aliyun"),
        "{err}"
    );
    assert!(
        w.fake.secret(REGION, "shop/tags").is_none(),
        "nothing written"
    );
}

#[tokio::test]
async fn a_customer_key_is_used_and_a_foreign_one_is_named() {
    let w = World::new().await;
    let (answer, _) = w.create(&mirrored(&["kms-cmk"])).await;
    assert!(allowed(&answer), "{answer}");
    let secret = w.fake.secret(REGION, "cmk/shop/db").unwrap();
    assert_eq!(secret.encryption_key_id.as_deref(), Some(KMS_KEY));

    let mut config = w.store_config("kms-cmk");
    config.kms_key_id = Some("key-of-another-region".into());
    let kms = store::build(&config).await.unwrap();
    let err = kms
        .create_if_absent(
            &kms.remote_name("cmk/shop/other").unwrap(),
            &SecretValue::new(br#"{"password":"x"}"#.to_vec()),
            &owner("other"),
            &WriteOptions {
                kms_key_id: Some("key-of-another-region".into()),
                ..json_options()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid(_))
            && err.to_string().contains("Forbidden.KeyNotFound")
            && err.to_string().contains("key-of-another-region")
            && err.to_string().contains("kmsKeyId"),
        "{err}"
    );
}

#[tokio::test]
async fn kms_errors_map_to_store_errors_with_short_messages() {
    let w = World::new().await;
    let kms = w.store("kms").await;
    let name = kms.remote_name("faults/x").unwrap();
    let value = SecretValue::new(br#"{"password":"never-shown-7c1e"}"#.to_vec());
    kms.create_if_absent(&name, &value, &owner("x"), &json_options())
        .await
        .unwrap();

    // One transient failure is retried away.
    w.fake.fail("GetSecretValue", 503, 1);
    assert!(kms.read(&name).await.unwrap().unwrap().payload == value);
    assert_eq!(w.fake.pending_faults(), 0);

    w.fake.fail("GetSecretValue", 503, 2);
    let err = kms.read(&name).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Unavailable(_))
            && err.to_string().contains(
                "GetSecretValue faults/x in cn-hangzhou: HTTP 503 ServiceUnavailableTemporary"
            )
            && err.to_string().contains("RequestId"),
        "{err}"
    );
    assert_eq!(w.fake.pending_faults(), 0, "tried exactly twice");

    w.fake.fail("DescribeSecret", 429, 2);
    let err = kms.read(&name).await.unwrap_err();
    assert!(matches!(err, StoreError::Throttled(_)), "{err}");
    assert!(err.to_string().contains("Rejected.Throttling"), "{err}");

    w.fake.fail("GetSecretValue", 403, 1);
    let err = kms.read(&name).await.unwrap_err();
    assert!(
        matches!(err, StoreError::PermissionDenied(_))
            && err.to_string().contains("Forbidden.NoPermission")
            && err
                .to_string()
                .contains("needs kms:GetSecretValue on acs:kms:cn-hangzhou:*:secret/faults/x"),
        "{err}"
    );

    let other = kms.remote_name("faults/y").unwrap();
    w.fake.fail("CreateSecret", 400, 1);
    let err = kms
        .create_if_absent(&other, &value, &owner("y"), &json_options())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid(_))
            && err
                .to_string()
                .contains("CreateSecret faults/y in cn-hangzhou: HTTP 400 InvalidParameter"),
        "{err}"
    );
    assert!(!err.to_string().contains("never-shown"));
    assert!(err.to_string().len() < 400, "{err}");
    assert!(w.fake.secret(REGION, "faults/y").is_none());

    // A transient failure of a write is retried once with the same version
    // id (PutSecretValue is idempotent for it): one new version.
    w.fake.fail("PutSecretValue", 500, 1);
    let newer = SecretValue::new(br#"{"password":"newer-7c1e"}"#.to_vec());
    kms.put(&name, &newer, &owner("x"), &json_options())
        .await
        .unwrap();
    assert_eq!(w.fake.versions(REGION, "faults/x").len(), 2);
}

#[tokio::test]
async fn a_secret_scheduled_for_deletion_is_denied_with_a_hint() {
    let w = World::new().await;
    let doc = mirrored(&["kms"]);
    let (answer, first) = w.create(&doc).await;
    assert!(allowed(&answer), "{answer}");
    let first = data_of(&as_secret(&first));
    w.fake.schedule_deletion(REGION, "k8s/shop/db");
    let (answer, _) = w.create(&doc).await;
    let values: Vec<&str> = first.values().map(String::as_str).collect();
    let msg = denied(&answer, "kms", &values);
    assert!(
        msg.contains("scheduled for deletion")
            && msg
                .contains("aliyun kms RestoreSecret --region cn-hangzhou --SecretName k8s/shop/db")
            && msg.contains("--ForceDeleteWithoutRecovery true"),
        "{msg}"
    );
    assert_eq!(
        w.fake.versions(REGION, "k8s/shop/db").len(),
        1,
        "left alone"
    );
}

// ---------------------------------------------------------------------------
// Through the review pipeline.

#[tokio::test]
async fn fresh_create_fills_the_secret_and_kms_holds_it_owned() {
    let w = World::new().await;
    let (answer, result) = w.create(&mirrored(&["kms"])).await;
    assert!(allowed(&answer), "{answer}");
    let secret = as_secret(&result);
    let data = data_of(&secret);
    assert!(data.keys().eq(["password", "preset", "token"]));
    assert!(data["preset"] == PRESET, "the author's value is kept");

    let stored = w.fake.secret(REGION, "k8s/shop/db").unwrap();
    assert_eq!(stored.versions.len(), 1, "one version");
    assert!(
        w.stored(REGION, "k8s/shop/db").unwrap() == data,
        "KMS holds the Secret's values"
    );
    assert_owned(&stored.tags, "db", "tags");
    assert_eq!(
        stored.tags.get("team").map(String::as_str),
        Some("platform"),
        "the store's extra tags"
    );
    assert_eq!(
        stored.description.as_deref(),
        Some("Managed by secret-santa for Secret shop/db")
    );
    assert!(stored.encryption_key_id.is_none(), "the default key");
    let annotations = annotations_of(&secret);
    assert_eq!(annotations["secret-santa.io/mirrored-to"], "kms");
    assert_eq!(
        annotations["secret-santa.io/mirrored-versions"],
        format!("kms@{}", stored.versions[0].id)
    );
    // A fresh single-store CREATE: the conditional create alone.
    let actions: Vec<String> = w
        .fake
        .log()
        .iter()
        .filter(|l| l.product == "kms")
        .map(|l| l.action.clone())
        .collect();
    assert_eq!(actions, ["CreateSecret"]);
}

#[tokio::test]
async fn a_retried_create_converges_on_the_stored_value() {
    let w = World::new().await;
    let doc = mirrored(&["kms"]);
    let (a1, r1) = w.create(&doc).await;
    assert!(allowed(&a1), "{a1}");
    // The apiserver retries, or the Secret was deleted and re-created.
    let (a2, r2) = w.create(&doc).await;
    assert!(allowed(&a2), "{a2}");
    let first = data_of(&as_secret(&r1));
    assert!(
        first == data_of(&as_secret(&r2)),
        "the retry admits the stored values, not new ones"
    );
    assert_eq!(
        w.fake.versions(REGION, "k8s/shop/db").len(),
        1,
        "no second version"
    );
    assert!(w.stored(REGION, "k8s/shop/db").unwrap() == first);

    let kms = w.store("kms").await;
    let name = kms.remote_name("k8s/shop/db").unwrap();
    let current = w.fake.current(REGION, "k8s/shop/db").unwrap();
    let me = Ownership {
        key_set: w.fake.secret(REGION, "k8s/shop/db").unwrap().tags["secret-santa-key-set"].clone(),
        ..owner("db")
    };
    let fresh = SecretValue::new(br#"{"password":"a-newer-value"}"#.to_vec());
    match kms
        .create_if_absent(&name, &fresh, &me, &json_options())
        .await
        .unwrap()
    {
        CreateOutcome::Exists(entry) => {
            assert_eq!(entry.owner(), Some(me));
            assert_eq!(entry.version, Some(current.id.clone()));
            let stored: BTreeMap<String, String> =
                serde_json::from_slice(entry.payload.expose()).unwrap();
            assert!(stored == first, "the stored value is read back");
        }
        CreateOutcome::Created { .. } => panic!("create-if-absent overwrote an entry"),
    }
    assert_eq!(w.fake.versions(REGION, "k8s/shop/db").len(), 1);
}

#[tokio::test]
async fn unowned_entries_are_refused_and_left_alone() {
    let w = World::new().await;
    let theirs = w.fake.seed(
        REGION,
        "k8s/shop/db",
        r#"{"password":"theirs-kms"}"#,
        &[("owner", "team-x")],
    );
    let (answer, _) = w.create(&mirrored(&["kms"])).await;
    let msg = denied(&answer, "kms", &["theirs-kms"]);
    assert!(
        msg.contains("k8s/shop/db")
            && msg.contains("already exists")
            && msg.contains("nobody we know")
            && msg.contains("adoption"),
        "{msg}"
    );
    let versions = w.fake.versions(REGION, "k8s/shop/db");
    assert_eq!(versions.len(), 1, "no version added");
    assert_eq!(versions[0].id, theirs);
    assert!(versions[0].data == r#"{"password":"theirs-kms"}"#);
    assert_eq!(
        w.fake.secret(REGION, "k8s/shop/db").unwrap().tags.len(),
        1,
        "no tags added"
    );

    // Another Secret's entry is refused just the same, naming its owner.
    let (answer, _) = w.create(&mirrored_named("web", &["kms"])).await;
    assert!(allowed(&answer), "{answer}");
    let mut doc = mirrored_named("db2", &["kms"]);
    doc["metadata"]["annotations"]["secret-santa.io/mirror"] =
        json!("- store: kms\n  key: shop/web\n  keys: [password, token, preset]\n");
    let (answer, _) = w.create(&doc).await;
    let msg = denied(&answer, "kms", &[]);
    assert!(
        msg.contains("owned by Secret shop/web of cluster test-cluster"),
        "{msg}"
    );
    assert_eq!(w.fake.versions(REGION, "k8s/shop/web").len(), 1);
}

#[tokio::test]
async fn a_user_that_cannot_write_is_a_clear_denial() {
    let w = World::new().await;
    let (answer, _) = w.create(&mirrored(&["kms-reader"])).await;
    let msg = denied(&answer, "kms-reader", &[]);
    assert!(
        msg.contains("permission denied")
            && msg.contains("CreateSecret k8s/shop/db in cn-hangzhou")
            && msg.contains("Forbidden.NoPermission")
            && msg.contains("AuthAction kms:CreateSecret")
            && msg.contains("needs kms:CreateSecret on acs:kms:cn-hangzhou:*:secret/k8s/shop/db"),
        "{msg}"
    );
    assert!(w.fake.names(REGION).is_empty(), "nothing written");
}

#[tokio::test]
async fn a_kms_that_is_down_or_silent_is_denied_within_the_deadline() {
    let w = World::new().await;
    for (store, cause) in [
        (
            "kms-down",
            format!("connection refused at http://127.0.0.1:{}", w.closed_port),
        ),
        ("kms-hang", "no answer".to_owned()),
    ] {
        let started = Instant::now();
        let (answer, _) = w.create(&mirrored(&[store])).await;
        let took = started.elapsed();
        let msg = denied(&answer, store, &[]);
        assert!(
            msg.contains("not reachable") && msg.contains(&cause),
            "{msg}"
        );
        assert!(
            took < Duration::from_millis(1600),
            "{store}: denied after {took:?}, the store's deadline is 1s"
        );
    }
    assert!(w.fake.names(REGION).is_empty());
}

#[tokio::test]
async fn dry_run_touches_nothing() {
    let w = World::new().await;
    let doc = mirrored(&["kms", "kms-role", "kms-multi"]);
    let answer = w.send(&review("CREATE", Some(&doc), None, true)).await;
    assert!(allowed(&answer), "{answer}");
    assert!(
        warnings(&answer).iter().any(|w| w.contains("not written")),
        "{}",
        shown(&answer)
    );
    assert!(w.fake.log().is_empty(), "not a request, not even STS");
}

#[tokio::test]
async fn regenerate_adds_a_version_and_reports_its_id() {
    let w = World::new().await;
    let (answer, old) = w.create(&mirrored(&["kms"])).await;
    assert!(allowed(&answer), "{answer}");
    let before = data_of(&as_secret(&old));
    let first_version = w.fake.current(REGION, "k8s/shop/db").unwrap().id;
    let mut new = old.clone();
    new["metadata"]["annotations"]["secret-santa.io/regenerate"] = json!("password");
    let answer = w.send(&update(&new, &old)).await;
    assert!(allowed(&answer), "{answer}");
    let after = data_of(&as_secret(&apply(&new, &answer)));
    assert!(after["password"] != before["password"] && after["token"] == before["token"]);
    let secret = w.fake.secret(REGION, "k8s/shop/db").unwrap();
    assert_eq!(secret.versions.len(), 2, "a new version");
    assert_eq!(secret.versions[0].id, first_version, "the old one is kept");
    assert_eq!(secret.versions[0].stages, ["ACSPrevious"]);
    assert!(
        w.stored(REGION, "k8s/shop/db").unwrap() == after,
        "KMS follows the regenerated Secret"
    );
    assert_owned(&secret.tags, "db", "ownership kept");

    // `put` reports the version id it wrote; one that changes nothing
    // writes nothing and reports the current one.
    let kms = w.store("kms").await;
    let name = kms.remote_name("k8s/shop/db").unwrap();
    let me = Ownership {
        key_set: secret.tags["secret-santa-key-set"].clone(),
        ..owner("db")
    };
    let mut newest = after.clone();
    newest.insert("password".into(), "rotated-by-hand".into());
    let payload = SecretValue::new(serde_json::to_vec(&newest).unwrap());
    let options = WriteOptions {
        tags: [("team".to_owned(), "platform".to_owned())].into(),
        ..json_options()
    };
    let id = kms
        .put(&name, &payload, &me, &options)
        .await
        .unwrap()
        .expect("KMS versions values");
    assert_eq!(w.fake.current(REGION, "k8s/shop/db").unwrap().id, id);
    assert_eq!(
        kms.read(&name).await.unwrap().unwrap().version.as_deref(),
        Some(id.as_str())
    );
    w.fake.clear_log();
    let again = kms.put(&name, &payload, &me, &options).await.unwrap();
    assert_eq!(again.as_deref(), Some(id.as_str()));
    assert_eq!(w.fake.count("PutSecretValue"), 0);
    assert_eq!(w.fake.count("TagResource"), 0);
    assert_eq!(w.fake.versions(REGION, "k8s/shop/db").len(), 3);
}

// ---------------------------------------------------------------------------
// Several regions.

#[tokio::test]
async fn several_regions_hold_the_same_secret_and_a_half_done_write_converges() {
    let w = World::new().await;
    let (answer, result) = w.create(&mirrored(&["kms-multi"])).await;
    assert!(allowed(&answer), "{answer}");
    let data = data_of(&as_secret(&result));
    for region in [REGION, REGION2] {
        let secret = w.fake.secret(region, "multi/shop/db").unwrap();
        assert!(
            w.stored(region, "multi/shop/db").unwrap() == data,
            "{region}"
        );
        assert_owned(&secret.tags, "db", region);
        assert_eq!(secret.versions.len(), 1, "{region}");
    }
    assert_eq!(
        w.fake.current(REGION, "multi/shop/db").unwrap().id,
        w.fake.current(REGION2, "multi/shop/db").unwrap().id,
        "one version id"
    );

    // The second region fails: denied, and the first one holds the value.
    w.fake.fail_in(REGION2, "CreateSecret", 503, 2);
    let doc = mirrored_named("web", &["kms-multi"]);
    let (answer, _) = w.create(&doc).await;
    let msg = denied(&answer, "kms-multi", &[]);
    assert!(
        msg.contains("CreateSecret multi/shop/web in cn-shanghai")
            && msg.contains("a retry completes the other regions"),
        "{msg}"
    );
    let held = w.stored(REGION, "multi/shop/web").unwrap();
    assert!(w.fake.secret(REGION2, "multi/shop/web").is_none());

    // The retry admits the value the first region holds and completes the
    // second; nothing is written twice.
    let (answer, result) = w.create(&doc).await;
    assert!(allowed(&answer), "{answer}");
    assert!(
        data_of(&as_secret(&result)) == held,
        "the stored values win"
    );
    assert!(w.stored(REGION2, "multi/shop/web").unwrap() == held);
    assert_owned(
        &w.fake.secret(REGION2, "multi/shop/web").unwrap().tags,
        "web",
        "replica",
    );
    assert_eq!(w.fake.versions(REGION, "multi/shop/web").len(), 1);
    assert_eq!(w.fake.versions(REGION2, "multi/shop/web").len(), 1);

    // A replica lost later: the read says so, and a put completes it.
    w.fake.remove(REGION2, "multi/shop/db");
    let kms = w.store("kms-multi").await;
    let name = kms.remote_name("multi/shop/db").unwrap();
    let entry = kms.read(&name).await.unwrap().unwrap();
    let seen = entry.owner().unwrap();
    assert_eq!(seen.name, "db");
    assert_eq!(seen.key_set, REPLICATION_INCOMPLETE);
    let key_set =
        w.fake.secret(REGION, "multi/shop/db").unwrap().tags["secret-santa-key-set"].clone();
    let me = Ownership {
        key_set,
        ..owner("db")
    };
    let options = WriteOptions {
        tags: [("team".to_owned(), "platform".to_owned())].into(),
        ..json_options()
    };
    kms.put(&name, &entry.payload, &me, &options).await.unwrap();
    assert!(w.stored(REGION2, "multi/shop/db").unwrap() == data);
    assert_eq!(
        w.fake.versions(REGION, "multi/shop/db").len(),
        1,
        "the first region unchanged"
    );
    let complete = kms.read(&name).await.unwrap().unwrap();
    assert_eq!(complete.owner(), Some(me));
}

#[tokio::test]
async fn regions_that_disagree_on_the_owner_are_refused_and_left_alone() {
    let w = World::new().await;
    w.fake.seed(
        REGION2,
        "multi/shop/api",
        r#"{"password":"theirs-sh"}"#,
        &[],
    );
    let doc = mirrored_named("api", &["kms-multi"]);
    let (answer, _) = w.create(&doc).await;
    let msg = denied(&answer, "kms-multi", &["theirs-sh"]);
    assert!(
        msg.contains("multi/shop/api already exists in region cn-shanghai")
            && msg.contains("nobody we know")
            && msg.contains("not overwritten"),
        "{msg}"
    );
    let theirs = w.fake.versions(REGION2, "multi/shop/api");
    assert_eq!(theirs.len(), 1);
    assert!(theirs[0].data == r#"{"password":"theirs-sh"}"#);
    assert!(
        w.fake
            .secret(REGION2, "multi/shop/api")
            .unwrap()
            .tags
            .is_empty()
    );

    // Read through the probe, the disagreement is named as such.
    let kms = w.store("kms-multi").await;
    let err = kms
        .read(&kms.remote_name("multi/shop/api").unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid(_)) && err.to_string().contains("regions disagree"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// Config and credentials.

#[tokio::test]
async fn settings_and_credential_files_fail_the_build_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let present = dir.path().join("present");
    std::fs::write(&present, "LTAI5tPresent\n").unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let key = |id: &Path, secret: &Path| json!({"method": "accessKey", "accessKeyIdFile": id, "accessKeySecretFile": secret});
    let mut cases = vec![
        (
            json!({"regionId": REGION, "auth": key(&missing, &present)}),
            "accessKeyIdFile",
        ),
        (
            json!({"regionId": REGION, "auth": key(&present, &empty)}),
            "is empty",
        ),
        (
            json!({"regionId": REGION, "caFile": missing, "auth": key(&present, &present)}),
            "caFile",
        ),
        (
            json!({"regionId": REGION, "auth": {"method": "rrsa", "roleArn": RRSA_ROLE_ARN, "oidcProviderArn": OIDC_PROVIDER_ARN, "oidcTokenFile": missing}}),
            "oidcTokenFile",
        ),
        (
            json!({"regionId": REGION, "auth": {"method": "ramRoleArn", "roleArn": ROLE_ARN, "accessKeyIdFile": present, "accessKeySecretFile": missing}}),
            "accessKeySecretFile",
        ),
        (
            json!({"regionId": REGION, "endpoint": "http://kms.example.com", "auth": key(&present, &present)}),
            "endpoint",
        ),
        (
            json!({"regionId": "cn_hangzhou", "auth": key(&present, &present)}),
            "regionId",
        ),
    ];
    // Without the variables the RRSA webhook injects, they are named.
    if std::env::var("ALIBABA_CLOUD_ROLE_ARN").is_err() {
        cases.push((
            json!({"regionId": REGION, "auth": {"method": "rrsa"}}),
            "ALIBABA_CLOUD_ROLE_ARN",
        ));
    }
    for (settings, needle) in cases {
        let err = match store::build(&store_config("kms", "alibaba-kms", settings.clone())).await {
            Ok(_) => panic!("{settings}: built"),
            Err(e) => e,
        };
        assert!(err.contains(needle), "{settings}: {err}");
    }

    // An admin config with a KMS store is checked at load.
    let store = |extra: &str| {
        format!(
            "clusterId: c\nstores:\n  - name: kms\n    type: alibaba-kms\n    namespaces: ['*']\n{extra}"
        )
    };
    let auth =
        "    auth: { method: accessKey, accessKeyIdFile: /id, accessKeySecretFile: /secret }\n";
    for (extra, expected) in [
        (format!("    regionID: {REGION}\n{auth}"), "regionID"),
        (auth.to_owned(), "regionId is required"),
        (
            format!("    regionId: {REGION}\n    regions: [{REGION}]\n{auth}"),
            "not both",
        ),
        (
            format!("    regionId: {REGION}\n    auth: {{ method: password }}\n"),
            "password",
        ),
        (
            format!(
                "    regionId: {REGION}\n    auth: {{ method: ramRoleArn, roleArn: writer, accessKeyIdFile: /i, accessKeySecretFile: /s }}\n"
            ),
            "auth.roleArn",
        ),
        (
            format!(
                "    regions: [{REGION}]\n    regionSettings: {{ {REGION2}: {{ kmsKeyId: k }} }}\n{auth}"
            ),
            "regionSettings.cn-shanghai",
        ),
    ] {
        let err = AdminConfig::parse(&store(&extra)).unwrap_err();
        assert!(err.contains(expected), "{extra}: {err}");
    }
    let ok = AdminConfig::parse(&store(&format!(
        "    regions: [{REGION}, {REGION2}]\n    vpcEndpoint: true\n    kmsKeyId: alias/secret-santa\n    regionSettings: {{ {REGION2}: {{ kmsKeyId: key-sh, kmsInstanceId: kst-shh01 }} }}\n    auth: {{ method: ecsRamRole }}\n"
    )));
    assert!(ok.is_ok(), "{ok:?}");
}
