//! The AWS stores on a real AWS API emulator (moto in server mode, started
//! per test on a free port): the shared store contract for both backends,
//! then CONTRACT §4 through the whole review pipeline. Values are compared
//! with `assert!(a == b)` so a failure never prints them.
#![cfg(feature = "aws")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::config::{Credentials, Region};
use aws_sdk_ssm::types::{ParameterTier, ParameterType, ResourceTypeForTagging};
use common::moto::{FaultProxy, Moto, free_port};
use common::*;
use secret_santa::config::AdminConfig;
use secret_santa::secret::SecretValue;
use secret_santa::store::{CreateOutcome, Ownership, StoreError, Stores, WriteOptions};
use secret_santa::{App, Reviewer};
use serde_json::{Value, json};

use common::moto::REGION;

/// moto, a fault-injecting proxy in front of it, static test credentials in
/// files, and the webhook built from an admin config that points at them.
struct World {
    moto: Moto,
    proxy: FaultProxy,
    closed_port: u16,
    _creds: tempfile::TempDir,
    /// The webhook under test and its admin config.
    hook: Webhook,
    sm: aws_sdk_secretsmanager::Client,
    ssm: aws_sdk_ssm::Client,
}

impl std::ops::Deref for World {
    type Target = Webhook;

    fn deref(&self) -> &Webhook {
        &self.hook
    }
}

fn config_yaml(endpoint: &str, proxy: &str, closed: &str, creds: &std::path::Path) -> String {
    let auth = format!(
        "{{ method: accessKey, accessKeyIdFile: {}, secretAccessKeyFile: {} }}",
        creds.join("id").display(),
        creds.join("secret").display()
    );
    format!(
        r#"
clusterId: test-cluster
limits: {{ requestDeadline: 6s }}
stores:
  - name: sm
    type: aws-secrets-manager
    region: {REGION}
    endpoint: {endpoint}
    auth: {auth}
    namespaces: ["shop"]
    prefix: "k8s/"
    deadline: 3s
    tags: {{ team: platform }}
  - name: ps
    type: aws-parameter-store
    region: {REGION}
    endpoint: {endpoint}
    auth: {auth}
    namespaces: ["shop"]
    prefix: "k8s/"
    deadline: 3s
    tags: {{ team: platform }}
  - name: ps-flaky
    type: aws-parameter-store
    region: {REGION}
    endpoint: {proxy}
    auth: {auth}
    namespaces: ["shop"]
    deadline: 3s
  - name: sm-flaky
    type: aws-secrets-manager
    region: {REGION}
    endpoint: {proxy}
    auth: {auth}
    namespaces: ["shop"]
    deadline: 3s
  - name: sm-down
    type: aws-secrets-manager
    region: {REGION}
    endpoint: {closed}
    auth: {auth}
    namespaces: ["shop"]
    deadline: 1s
  - name: ps-down
    type: aws-parameter-store
    region: {REGION}
    endpoint: {closed}
    auth: {auth}
    namespaces: ["shop"]
    deadline: 1s
"#
    )
}

fn credentials() -> Credentials {
    Credentials::new("test", "test", None, None, "moto")
}

impl World {
    async fn new() -> World {
        let moto = Moto::start();
        let proxy = FaultProxy::start(moto.port);
        let closed_port = free_port();
        let creds = tempfile::tempdir().unwrap();
        std::fs::write(creds.path().join("id"), "test\n").unwrap();
        std::fs::write(creds.path().join("secret"), "test\n").unwrap();
        let yaml = config_yaml(
            &moto.endpoint,
            &proxy.endpoint,
            &format!("http://127.0.0.1:{closed_port}"),
            creds.path(),
        );
        let config = AdminConfig::parse(&yaml).unwrap();
        let stores = Stores::from_config(&config).await.unwrap();
        let app = App::new(Reviewer::new(config.clone(), stores), 3 * 1024 * 1024);
        let sm = aws_sdk_secretsmanager::Client::from_conf(
            aws_sdk_secretsmanager::Config::builder()
                .behavior_version_latest()
                .region(Region::new(REGION))
                .endpoint_url(&moto.endpoint)
                .credentials_provider(credentials())
                .build(),
        );
        let ssm = aws_sdk_ssm::Client::from_conf(
            aws_sdk_ssm::Config::builder()
                .behavior_version_latest()
                .region(Region::new(REGION))
                .endpoint_url(&moto.endpoint)
                .credentials_provider(credentials())
                .build(),
        );
        World {
            moto,
            proxy,
            closed_port,
            _creds: creds,
            hook: Webhook { config, app },
            sm,
            ssm,
        }
    }

    /// A Secrets Manager secret's current value and tags, read directly.
    async fn sm_get(&self, name: &str) -> Option<(String, BTreeMap<String, String>)> {
        let value = match self.sm.get_secret_value().secret_id(name).send().await {
            Ok(v) => v.secret_string().unwrap_or_default().to_owned(),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                return None;
            }
            Err(e) => panic!("GetSecretValue {name}: {e:?}"),
        };
        let described = self
            .sm
            .describe_secret()
            .secret_id(name)
            .send()
            .await
            .unwrap();
        let tags = described
            .tags()
            .iter()
            .map(|t| {
                (
                    t.key().unwrap_or_default().to_owned(),
                    t.value().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        Some((value, tags))
    }

    async fn sm_versions(&self, name: &str) -> usize {
        self.sm
            .list_secret_version_ids()
            .secret_id(name)
            .send()
            .await
            .unwrap()
            .versions()
            .len()
    }

    /// A parameter's decrypted value, tags, type, tier and version, read directly.
    async fn ssm_get(&self, name: &str) -> Option<(String, BTreeMap<String, String>, Parameter)> {
        let p = match self
            .ssm
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await
        {
            Ok(v) => v.parameter().cloned().unwrap(),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_parameter_not_found()) =>
            {
                return None;
            }
            Err(e) => panic!("GetParameter {name}: {e:?}"),
        };
        let tags = self
            .ssm
            .list_tags_for_resource()
            .resource_type(ResourceTypeForTagging::Parameter)
            .resource_id(name)
            .send()
            .await
            .unwrap()
            .tag_list()
            .iter()
            .map(|t| (t.key().to_owned(), t.value().to_owned()))
            .collect();
        let described = self
            .ssm
            .describe_parameters()
            .parameter_filters(
                aws_sdk_ssm::types::ParameterStringFilter::builder()
                    .key("Name")
                    .values(name)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        let meta = described.parameters().first().cloned().unwrap();
        Some((
            p.value().unwrap_or_default().to_owned(),
            tags,
            Parameter {
                kind: p.r#type().cloned(),
                tier: meta.tier().cloned(),
                version: p.version(),
            },
        ))
    }

    async fn sm_count(&self) -> usize {
        self.sm
            .list_secrets()
            .send()
            .await
            .unwrap()
            .secret_list()
            .len()
    }

    async fn ssm_count(&self) -> usize {
        self.ssm
            .describe_parameters()
            .send()
            .await
            .unwrap()
            .parameters()
            .len()
    }
}

#[derive(Debug)]
struct Parameter {
    kind: Option<ParameterType>,
    tier: Option<ParameterTier>,
    version: i64,
}

fn mirrored(mirror: &str) -> Value {
    SecretDoc::new("db")
        .labelled()
        .autogenerate("password, token")
        .annotate("secret-santa.io/mirror", mirror)
        .value()
}

fn json_map(text: &str) -> BTreeMap<String, String> {
    serde_json::from_str(text).expect("the stored value is a JSON object of strings")
}

fn assert_owned(tags: &BTreeMap<String, String>, what: &str) {
    assert_eq!(
        tags.get("secret-santa-managed-by").map(String::as_str),
        Some("secret-santa"),
        "{what}"
    );
    assert_eq!(
        tags.get("secret-santa-cluster").map(String::as_str),
        Some("test-cluster"),
        "{what}"
    );
    assert_eq!(
        tags.get("secret-santa-namespace").map(String::as_str),
        Some("shop"),
        "{what}"
    );
    assert_eq!(
        tags.get("secret-santa-name").map(String::as_str),
        Some("db"),
        "{what}"
    );
    assert_eq!(
        tags.get("team").map(String::as_str),
        Some("platform"),
        "{what}: the store's extra tags"
    );
}

// ---------------------------------------------------------------------------
// The shared contract.

#[tokio::test]
async fn secrets_manager_satisfies_the_store_contract() {
    let w = World::new().await;
    common::contract::run(w.store("sm").await, "contract").await;
}

#[tokio::test]
async fn parameter_store_satisfies_the_store_contract() {
    let w = World::new().await;
    common::contract::run(w.store("ps").await, "contract").await;
}

// ---------------------------------------------------------------------------
// Backend specifics.

#[tokio::test]
async fn secrets_manager_names_binary_values_and_limits() {
    let w = World::new().await;
    let sm = w.store("sm").await;
    assert!(sm.remote_name("k8s/shop/db+x=y.z@w-1_2").is_ok());
    let err = sm.remote_name("shop/db name").unwrap_err();
    assert!(err.contains("' '") && err.contains("not allowed"), "{err}");
    assert!(
        sm.remote_name(&"a".repeat(513))
            .unwrap_err()
            .contains("512")
    );

    // Non-UTF-8 goes in as SecretBinary and reads back byte for byte.
    let owner = Ownership {
        cluster_id: "test-cluster".into(),
        namespace: "shop".into(),
        name: "bin".into(),
        key_set: "k".into(),
    };
    let name = sm.remote_name("shop/bin").unwrap();
    let raw = SecretValue::new(vec![0, 159, 146, 150, 255]);
    let options = WriteOptions {
        content_type: "application/octet-stream",
        ..Default::default()
    };
    assert!(matches!(
        sm.create_if_absent(&name, &raw, &owner, &options)
            .await
            .unwrap(),
        CreateOutcome::Created { version: Some(_) }
    ));
    let direct =
        w.sm.get_secret_value()
            .secret_id("shop/bin")
            .send()
            .await
            .unwrap();
    assert!(direct.secret_string().is_none() && direct.secret_binary().is_some());
    assert!(sm.read(&name).await.unwrap().unwrap().payload == raw);

    let huge = SecretValue::new(vec![b'x'; 65_537]);
    let err = sm
        .create_if_absent(
            &sm.remote_name("shop/huge").unwrap(),
            &huge,
            &owner,
            &options,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid(_)) && err.to_string().contains("65536"),
        "{err}"
    );
}

#[tokio::test]
async fn parameter_store_names_tiers_and_text_only() {
    let w = World::new().await;
    let ps = w.store("ps").await;
    assert_eq!(ps.remote_name("shop/db").unwrap().as_str(), "/shop/db");
    assert_eq!(ps.remote_name("/shop/db").unwrap().as_str(), "/shop/db");
    for (bad, why) in [
        ("shop/db+1", "not allowed"),
        ("shop//db", "empty level"),
        ("shop/db/", "empty level"),
        ("aws/db", "may not begin"),
        ("SSM-x/db", "may not begin"),
        ("a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p", "levels"),
    ] {
        let err = ps.remote_name(bad).unwrap_err();
        assert!(err.contains(why), "{bad}: {err}");
    }
    assert!(
        ps.remote_name(&"a".repeat(1011))
            .unwrap_err()
            .contains("1011")
    );

    let owner = Ownership {
        cluster_id: "test-cluster".into(),
        namespace: "shop".into(),
        name: "big".into(),
        key_set: "k".into(),
    };
    let options = WriteOptions {
        content_type: "text/plain",
        ..Default::default()
    };
    // Tier by size: Standard up to 4 KiB, Advanced above.
    let small = ps.remote_name("shop/small").unwrap();
    ps.create_if_absent(
        &small,
        &SecretValue::new(vec![b's'; 4096]),
        &owner,
        &options,
    )
    .await
    .unwrap();
    let big = ps.remote_name("shop/big").unwrap();
    ps.create_if_absent(&big, &SecretValue::new(vec![b'b'; 5000]), &owner, &options)
        .await
        .unwrap();
    let (_, _, p) = w.ssm_get("/shop/small").await.unwrap();
    assert_eq!(p.tier, Some(ParameterTier::Standard));
    assert_eq!(p.kind, Some(ParameterType::SecureString));
    let (_, tags, p) = w.ssm_get("/shop/big").await.unwrap();
    assert_eq!(p.tier, Some(ParameterTier::Advanced));
    assert_eq!(
        tags.get("secret-santa-name").map(String::as_str),
        Some("big")
    );
    // A smaller value later keeps the Advanced tier (no downgrade attempted).
    ps.put(
        &big,
        &SecretValue::new(b"now small".to_vec()),
        &owner,
        &options,
    )
    .await
    .unwrap();
    let (value, _, p) = w.ssm_get("/shop/big").await.unwrap();
    assert!(value == "now small");
    assert_eq!(p.version, 2);

    let err = ps
        .create_if_absent(&big, &SecretValue::new(vec![b'x'; 8193]), &owner, &options)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("8192"), "{err}");
    let err = ps
        .create_if_absent(&big, &SecretValue::new(vec![0xff, 0xfe]), &owner, &options)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("text only"), "{err}");
}

#[tokio::test]
async fn sdk_errors_map_to_store_errors_with_short_messages() {
    let w = World::new().await;
    let sm = w.store("sm-flaky").await;
    let name = sm.remote_name("shop/x").unwrap();
    // Two attempts per call: the SDK retries throttling once.
    w.proxy
        .fail("DescribeSecret", 400, "ThrottlingException", 2);
    let err = sm.read(&name).await.unwrap_err();
    assert!(matches!(err, StoreError::Throttled(_)), "{err}");
    assert!(
        err.to_string()
            .contains("DescribeSecret: ThrottlingException"),
        "{err}"
    );
    assert_eq!(w.proxy.pending(), 0, "the SDK tried exactly twice");

    w.proxy
        .fail("DescribeSecret", 400, "AccessDeniedException", 1);
    let err = sm.read(&name).await.unwrap_err();
    assert!(matches!(err, StoreError::PermissionDenied(_)), "{err}");
    assert!(
        err.to_string()
            .contains("DescribeSecret: AccessDeniedException: injected by the test proxy"),
        "{err}"
    );
    // An absent secret costs one call: DescribeSecret says so.
    assert!(sm.read(&name).await.unwrap().is_none());
    let owner = Ownership {
        cluster_id: "c".into(),
        namespace: "shop".into(),
        name: "x".into(),
        key_set: String::new(),
    };
    w.proxy
        .fail("CreateSecret", 400, "AccessDeniedException", 1);
    let err = sm
        .create_if_absent(
            &name,
            &SecretValue::new(b"v".to_vec()),
            &owner,
            &WriteOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::PermissionDenied(_)), "{err}");
    assert!(
        err.to_string()
            .contains("CreateSecret: AccessDeniedException"),
        "{err}"
    );

    let ps = w.store("ps-flaky").await;
    w.proxy.fail("GetParameter", 500, "InternalServerError", 2);
    let err = ps
        .read(&ps.remote_name("shop/x").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");

    // Nothing listening: a short message naming the endpoint.
    let down = w.store("sm-down").await;
    let err = down.read(&name).await.unwrap_err();
    let expected = format!("connection refused at http://127.0.0.1:{}", w.closed_port);
    assert!(
        matches!(err, StoreError::Unavailable(_)) && err.to_string().contains(&expected),
        "{err}"
    );
    assert!(err.to_string().len() < 200, "{err}");
}

// ---------------------------------------------------------------------------
// Through the review pipeline.

#[tokio::test]
async fn fresh_create_fills_the_secret_and_both_stores_hold_it_tagged() {
    let w = World::new().await;
    let (answer, result) = w.create(&mirrored("- store: sm\n- store: ps\n")).await;
    assert!(allowed(&answer), "{answer}");
    let secret = as_secret(&result);
    let data = data_of(&secret);
    assert_eq!(data.len(), 2);

    let (value, tags) = w
        .sm_get("k8s/shop/db")
        .await
        .expect("Secrets Manager holds k8s/shop/db");
    assert!(
        json_map(&value) == data,
        "Secrets Manager holds the Secret's values"
    );
    assert_owned(&tags, "Secrets Manager tags");
    let described =
        w.sm.describe_secret()
            .secret_id("k8s/shop/db")
            .send()
            .await
            .unwrap();
    assert_eq!(
        described.description(),
        Some("Managed by secret-santa for Secret shop/db")
    );

    let (value, tags, p) = w
        .ssm_get("/k8s/shop/db")
        .await
        .expect("Parameter Store holds /k8s/shop/db");
    assert!(
        json_map(&value) == data,
        "Parameter Store holds the Secret's values"
    );
    assert_owned(&tags, "Parameter Store tags");
    assert_eq!(p.kind, Some(ParameterType::SecureString));
    assert_eq!(p.tier, Some(ParameterTier::Standard));

    assert_eq!(
        annotations_of(&secret)["secret-santa.io/mirrored-to"],
        "sm,ps"
    );
}

#[tokio::test]
async fn a_retried_create_converges_on_the_stored_value() {
    let w = World::new().await;
    let doc = mirrored("- store: sm\n- store: ps\n");
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
        w.sm_versions("k8s/shop/db").await,
        1,
        "no second Secrets Manager version"
    );
    let (value, _, p) = w.ssm_get("/k8s/shop/db").await.unwrap();
    assert_eq!(p.version, 1, "no second parameter version");
    assert!(json_map(&value) == first);
}

#[tokio::test]
async fn unowned_entries_are_refused_and_left_alone() {
    let w = World::new().await;
    w.sm.create_secret()
        .name("k8s/shop/db")
        .secret_string(r#"{"password":"theirs-sm"}"#)
        .send()
        .await
        .unwrap();
    w.ssm
        .put_parameter()
        .name("/k8s/shop/db")
        .value(r#"{"password":"theirs-ps"}"#)
        .r#type(ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    for (store, remote) in [("sm", "k8s/shop/db"), ("ps", "/k8s/shop/db")] {
        let (answer, _) = w.create(&mirrored(&format!("- store: {store}\n"))).await;
        assert!(!allowed(&answer), "{store}: {}", shown(&answer));
        let msg = message(&answer);
        assert!(
            msg.contains(&format!("store \"{store}\""))
                && msg.contains(remote)
                && msg.contains("already exists")
                && msg.contains("adoption"),
            "{msg}"
        );
        assert!(
            !msg.contains("theirs"),
            "the message does not show the stored value"
        );
    }
    assert!(w.sm_get("k8s/shop/db").await.unwrap().0 == r#"{"password":"theirs-sm"}"#);
    assert_eq!(w.sm_versions("k8s/shop/db").await, 1);
    let (value, tags, p) = w.ssm_get("/k8s/shop/db").await.unwrap();
    assert!(value == r#"{"password":"theirs-ps"}"#);
    assert!(tags.is_empty() && p.version == 1);
}

#[tokio::test]
async fn a_store_that_is_down_is_denied_within_its_deadline() {
    let w = World::new().await;
    for store in ["sm-down", "ps-down"] {
        let started = Instant::now();
        let (answer, _) = w.create(&mirrored(&format!("- store: {store}\n"))).await;
        let took = started.elapsed();
        assert!(!allowed(&answer));
        let msg = message(&answer);
        let expected = format!("connection refused at http://127.0.0.1:{}", w.closed_port);
        assert!(
            msg.contains(&format!("store \"{store}\""))
                && msg.contains("not reachable")
                && msg.contains(&expected),
            "{msg}"
        );
        assert!(
            took < Duration::from_millis(1500),
            "{store}: denied after {took:?}, the store's deadline is 1s"
        );
    }
    assert_eq!(w.sm_count().await, 0);
    assert_eq!(w.ssm_count().await, 0);
}

#[tokio::test]
async fn dry_run_writes_nothing() {
    let w = World::new().await;
    let doc = mirrored("- store: sm\n- store: ps\n");
    let answer = w.send(&review("CREATE", Some(&doc), None, true)).await;
    assert!(allowed(&answer), "{answer}");
    assert!(
        warnings(&answer).iter().any(|w| w.contains("not written")),
        "{}",
        shown(&answer)
    );
    assert_eq!(w.sm_count().await, 0, "no secret created");
    assert_eq!(w.ssm_count().await, 0, "no parameter created");
}

#[tokio::test]
async fn a_failed_second_destination_then_a_retry_converges() {
    let w = World::new().await;
    let doc = SecretDoc::new("db")
        .labelled()
        .autogenerate("password, token")
        .annotate("secret-santa.io/mirror", "- store: sm\n- store: ps-flaky\n")
        .value();
    // Both attempts of the parameter's create are throttled.
    w.proxy.fail("PutParameter", 400, "ThrottlingException", 2);
    let (answer, _) = w.create(&doc).await;
    assert!(!allowed(&answer));
    let msg = message(&answer);
    assert!(
        msg.contains("store \"ps-flaky\"")
            && msg.contains("throttled")
            && msg.contains("a retry converges"),
        "{msg}"
    );
    // The first store was written before the failure was known.
    let first_try = json_map(&w.sm_get("k8s/shop/db").await.unwrap().0);
    assert!(w.ssm_get("/shop/db").await.is_none());

    let (answer, result) = w.create(&doc).await;
    assert!(allowed(&answer), "{answer}");
    let data = data_of(&as_secret(&result));
    assert!(
        data == first_try,
        "the retry reuses what the first store holds"
    );
    assert!(
        json_map(&w.ssm_get("/shop/db").await.unwrap().0) == first_try,
        "and writes it to the second"
    );
    assert_eq!(w.sm_versions("k8s/shop/db").await, 1);
}

#[tokio::test]
async fn a_slow_store_is_denied_in_time_and_the_retry_converges_on_what_it_wrote() {
    let w = World::new().await;
    let doc = mirrored("- store: sm-flaky\n");
    // CreateSecret is held 4 s (the store's deadline, the SDK's operation
    // timeout, is 3 s), then reaches moto all the same: it creates the
    // secret after the webhook gave up.
    w.proxy.delay("CreateSecret", Duration::from_secs(4), 1);
    let started = Instant::now();
    let (answer, _) = w.create(&doc).await;
    let took = started.elapsed();
    assert!(!allowed(&answer));
    let msg = message(&answer);
    assert!(
        msg.contains("store \"sm-flaky\"") && msg.contains("not reachable"),
        "{msg}"
    );
    assert!(
        took < Duration::from_millis(3800),
        "denied within the store's deadline: {took:?}"
    );

    // The held request lands; a retry takes what it wrote instead of
    // generating anew, and writes no second version.
    let deadline = Instant::now() + Duration::from_secs(10);
    let stored = loop {
        if let Some((value, _)) = w.sm_get("shop/db").await {
            break json_map(&value);
        }
        assert!(
            Instant::now() < deadline,
            "the held CreateSecret reached moto"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (answer, result) = w.create(&doc).await;
    assert!(allowed(&answer), "{answer}");
    assert!(
        data_of(&as_secret(&result)) == stored,
        "the retry converges on the value the slow request stored"
    );
    assert_eq!(w.sm_versions("shop/db").await, 1);
}

#[tokio::test]
async fn tenants_reach_only_what_the_admin_allows() {
    let w = World::new().await;
    let mut doc = mirrored("- store: sm\n");
    doc["metadata"]["namespace"] = json!("billing");
    let mut req = create(&doc);
    req["request"]["namespace"] = json!("billing");
    let answer = w.send(&req).await;
    assert!(!allowed(&answer));
    assert!(
        message(&answer).contains("not available to namespace \"billing\""),
        "{}",
        message(&answer)
    );

    let (answer, _) = w
        .create(&mirrored("- store: ps\n  key: other-team/db\n"))
        .await;
    assert!(
        message(&answer).contains("must start with \"shop/\""),
        "{}",
        message(&answer)
    );
    let (answer, _) = w.create(&mirrored("- store: sm\n  key: shop/db#1\n")).await;
    assert!(
        message(&answer).contains("'#' is not allowed in Secrets Manager names"),
        "{}",
        message(&answer)
    );
    let (answer, _) = w.create(&mirrored("- store: ps\n  key: shop/db+1\n")).await;
    assert!(
        message(&answer).contains("'+' is not allowed in Parameter Store names"),
        "{}",
        message(&answer)
    );
    let (answer, _) = w
        .create(&mirrored("- store: sm\n  kmsKeyId: alias/mine\n"))
        .await;
    assert!(
        message(&answer).contains("does not allow setting kmsKeyId"),
        "{}",
        message(&answer)
    );

    assert_eq!(w.sm_count().await, 0);
    assert_eq!(w.ssm_count().await, 0);
}

#[tokio::test]
async fn a_secret_scheduled_for_deletion_is_a_clear_denial() {
    let w = World::new().await;
    let doc = mirrored("- store: sm\n");
    let (answer, _) = w.create(&doc).await;
    assert!(allowed(&answer), "{answer}");
    w.sm.delete_secret()
        .secret_id("k8s/shop/db")
        .recovery_window_in_days(7)
        .send()
        .await
        .unwrap();
    let (answer, _) = w.create(&doc).await;
    assert!(!allowed(&answer));
    let msg = message(&answer);
    assert!(
        msg.contains("store \"sm\"")
            && msg.contains("scheduled for deletion")
            && msg.contains("restore-secret --secret-id k8s/shop/db"),
        "{msg}"
    );
    // Restored, the owned secret is reused again.
    w.sm.restore_secret()
        .secret_id("k8s/shop/db")
        .send()
        .await
        .unwrap();
    let (answer, _) = w.create(&doc).await;
    assert!(allowed(&answer), "{answer}");
}

#[tokio::test]
async fn regenerate_writes_a_new_version_in_both_stores() {
    let w = World::new().await;
    let (answer, old) = w.create(&mirrored("- store: sm\n- store: ps\n")).await;
    assert!(allowed(&answer), "{answer}");
    let before = data_of(&as_secret(&old));
    let mut new = old.clone();
    new["metadata"]["annotations"]["secret-santa.io/regenerate"] = json!("password");
    let answer = w.send(&update(&new, &old)).await;
    assert!(allowed(&answer), "{answer}");
    let after = data_of(&as_secret(&apply(&new, &answer)));
    assert!(after["password"] != before["password"] && after["token"] == before["token"]);
    let (value, tags) = w.sm_get("k8s/shop/db").await.unwrap();
    assert!(
        json_map(&value) == after,
        "Secrets Manager follows the regenerated Secret"
    );
    assert_owned(&tags, "tags rewritten");
    assert_eq!(w.sm_versions("k8s/shop/db").await, 2);
    let (value, tags, p) = w.ssm_get("/k8s/shop/db").await.unwrap();
    assert!(
        json_map(&value) == after,
        "Parameter Store follows the regenerated Secret"
    );
    assert_owned(&tags, "tags rewritten");
    assert_eq!(p.version, 2);
}

// ---------------------------------------------------------------------------
// Config and credentials.

#[test]
fn aws_settings_are_validated_with_errors_naming_the_key() {
    let store = |extra: &str| format!("stores:\n  - name: s\n    namespaces: [\"*\"]\n{extra}");
    let ok = AdminConfig::parse(&store(
        "    type: aws-parameter-store\n    region: eu-west-1\n    tier: Advanced\n    auth: { method: default }\n",
    ));
    assert!(ok.is_ok(), "{ok:?}");
    for (extra, expected) in [
        ("    type: aws-secrets-manager\n", "missing field `region`"),
        (
            "    type: aws-secrets-manager\n    region: eu-west-1\n    regoin: x\n",
            "unknown field `regoin`",
        ),
        (
            "    type: aws-secrets-manager\n    region: eu-west-1\n    tier: Standard\n",
            "unknown field `tier`",
        ),
        (
            "    type: aws-parameter-store\n    region: eu-west-1\n    tier: huge\n",
            "unknown variant `huge`",
        ),
        (
            "    type: aws-parameter-store\n    region: Europe\n",
            "region \"Europe\"",
        ),
        (
            "    type: aws-parameter-store\n    region: eu-west-1\n    endpoint: localhost:4566\n",
            "endpoint",
        ),
        (
            "    type: aws-secrets-manager\n    region: eu-west-1\n    auth: { method: magic }\n",
            "unknown variant `magic`",
        ),
        (
            "    type: aws-secrets-manager\n    region: eu-west-1\n    auth: { method: accessKey, accessKeyIdFile: /a }\n",
            "missing field `secretAccessKeyFile`",
        ),
    ] {
        let err = AdminConfig::parse(&store(extra)).unwrap_err();
        assert!(
            err.contains(expected) && err.contains("stores[0] (s)"),
            "{extra}: {err}"
        );
    }
}

#[tokio::test]
async fn missing_credential_files_fail_the_build_naming_the_file() {
    let config = AdminConfig::parse(
        "stores:\n  - name: s\n    type: aws-secrets-manager\n    region: eu-west-1\n    namespaces: [\"*\"]\n    \
         auth: { method: accessKey, accessKeyIdFile: /nonexistent/id, secretAccessKeyFile: /nonexistent/secret }\n",
    )
    .unwrap();
    let err = Stores::from_config(&config)
        .await
        .err()
        .expect("no credentials, no store");
    assert!(
        err.contains("store s") && err.contains("accessKeyIdFile /nonexistent/id"),
        "{err}"
    );
}

/// `secret-santa mutate --mirror` with no `auth` setting: credentials come
/// from the default chain (here the environment).
#[tokio::test]
async fn the_cli_mirrors_with_the_default_credential_chain() {
    let w = World::new().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "clusterId: cli\nstores:\n  - name: sm\n    type: aws-secrets-manager\n    region: {REGION}\n    endpoint: {}\n    namespaces: [\"*\"]\n",
            w.moto.endpoint
        ),
    )
    .unwrap();
    let manifest = dir.path().join("secret.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: api\n  namespace: shop\n  labels: {secret-santa.io/enabled: \"true\"}\n  \
         annotations:\n    secret-santa.io/autogenerate: token\n    secret-santa.io/mirror: \"- store: sm\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_secret-santa"))
        .args(["mutate", "--mirror", "--reveal", "--config"])
        .arg(&config)
        .arg(&manifest)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mutate failed: {stderr}");
    let docs: Vec<Value> =
        secret_santa::yaml::from_str_multiple(&String::from_utf8(out.stdout).unwrap()).unwrap();
    let data = data_of(&as_secret(&docs[0]));
    let (value, tags) = w.sm_get("shop/api").await.expect("the CLI wrote shop/api");
    assert!(
        json_map(&value) == data,
        "the store holds what the CLI printed"
    );
    assert_eq!(
        tags.get("secret-santa-cluster").map(String::as_str),
        Some("cli")
    );
}
