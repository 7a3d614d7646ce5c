//! The `gcp-secret-manager` store through the official client against a fake
//! of the Secret Manager REST API written from the public reference
//! (`common/gcp_fake.rs`; no emulator exists): the shared store contract,
//! then CONTRACT §4 through the whole review pipeline, the error mapping,
//! settings and credentials. Values are compared with `assert!(a == b)` so
//! a failure never prints them.
#![cfg(feature = "gcp")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/gcp_fake.rs"]
mod gcp_fake;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::moto::free_port;
use common::*;
use gcp_fake::{GcpFake, PROJECT_NUMBER, SecretView, VersionState, is_valid_label};
use secret_santa::config::AdminConfig;
use secret_santa::secret::SecretValue;
use secret_santa::store::{self, CreateOutcome, Ownership, StoreError, Stores, WriteOptions};
use secret_santa::{App, Reviewer};
use serde_json::{Value, json};

const PROJECT: &str = "test-project";
const CMEK: &str = "projects/test-project/locations/global/keyRings/ring/cryptoKeys/key";
const EU_KEY: &str = "projects/test-project/locations/europe-west1/keyRings/ring/cryptoKeys/key";
const SERVICE_ACCOUNT: &str = "secret-santa@test-project.iam.gserviceaccount.com";

/// The fake, a closed port, and the webhook built from an admin config that
/// points at them.
struct World {
    fake: GcpFake,
    closed_port: u16,
    /// The webhook under test and its admin config.
    hook: Webhook,
}

impl std::ops::Deref for World {
    type Target = Webhook;

    fn deref(&self) -> &Webhook {
        &self.hook
    }
}

fn config_yaml(cluster: &str, endpoint: &str, closed: &str) -> String {
    format!(
        r#"
clusterId: {cluster}
limits: {{ requestDeadline: 6s }}
stores:
  - name: gcp
    type: gcp-secret-manager
    project: {PROJECT}
    endpoint: {endpoint}
    auth: {{ method: none }}
    namespaces: ["shop"]
    prefix: "k8s/"
    deadline: 3s
    tags: {{ team: platform, Cost.Center: "4711" }}
  - name: gcp-eu
    type: gcp-secret-manager
    project: {PROJECT}
    endpoint: {endpoint}
    auth: {{ method: none }}
    replication:
      userManaged:
        - location: europe-west1
          kmsKeyName: {EU_KEY}
        - location: europe-west4
    namespaces: ["shop"]
    prefix: "eu/"
    deadline: 3s
  - name: gcp-cmek
    type: gcp-secret-manager
    project: {PROJECT}
    endpoint: {endpoint}
    auth: {{ method: none }}
    kmsKeyId: {CMEK}
    namespaces: ["shop"]
    prefix: "cmek/"
    deadline: 3s
  - name: gcp-adopt
    type: gcp-secret-manager
    project: {PROJECT}
    endpoint: {endpoint}
    auth: {{ method: none }}
    namespaces: ["shop"]
    prefix: "adopt/"
    allowAdoption: true
    deadline: 3s
  - name: gcp-down
    type: gcp-secret-manager
    project: {PROJECT}
    endpoint: {closed}
    auth: {{ method: none }}
    namespaces: ["shop"]
    deadline: 1s
"#
    )
}

impl World {
    async fn new() -> World {
        World::with_cluster("test-cluster").await
    }

    async fn with_cluster(cluster: &str) -> World {
        let fake = GcpFake::start(PROJECT);
        let closed_port = free_port();
        let yaml = config_yaml(
            cluster,
            &fake.endpoint,
            &format!("http://127.0.0.1:{closed_port}"),
        );
        let config = AdminConfig::parse(&yaml).unwrap();
        let stores = Stores::from_config(&config).await.unwrap();
        let app = App::new(Reviewer::new(config.clone(), stores), 3 * 1024 * 1024);
        World {
            fake,
            closed_port,
            hook: Webhook { config, app },
        }
    }

    /// A stored secret; panics naming the id when it is absent.
    fn secret(&self, id: &str) -> SecretView {
        self.fake
            .secret(id)
            .unwrap_or_else(|| panic!("the fake holds no secret {id}"))
    }
}

fn mirrored(mirror: &str) -> Value {
    SecretDoc::new("db")
        .labelled()
        .autogenerate("password, token")
        .annotate("secret-santa.io/mirror", mirror)
        .value()
}

fn json_map(value: &SecretValue) -> BTreeMap<String, String> {
    serde_json::from_slice(value.expose()).expect("the stored value is a JSON object of strings")
}

/// The newest version's value as a JSON map.
fn latest_map(secret: &SecretView) -> BTreeMap<String, String> {
    let latest = secret.latest().expect("the secret has a version");
    assert_eq!(latest.state, VersionState::Enabled);
    json_map(&latest.data)
}

fn owner(cluster: &str, name: &str) -> [(&'static str, String); 5] {
    [
        ("secret-santa-managed-by", "secret-santa".to_owned()),
        ("secret-santa-cluster", cluster.to_owned()),
        ("secret-santa-namespace", "shop".to_owned()),
        ("secret-santa-name", name.to_owned()),
        ("secret-santa-key-set", "0123456789abcdef".to_owned()),
    ]
}

/// Exact ownership in the annotations; sanitized, valid labels beside.
fn assert_owned(secret: &SecretView, cluster: &str, name: &str) {
    let a = &secret.annotations;
    for (key, expected) in [
        ("secret-santa-managed-by", "secret-santa"),
        ("secret-santa-cluster", cluster),
        ("secret-santa-namespace", "shop"),
        ("secret-santa-name", name),
    ] {
        assert_eq!(
            a.get(key).map(String::as_str),
            Some(expected),
            "annotation {key}"
        );
    }
    assert!(a.contains_key("secret-santa-key-set"), "{a:?}");
    for (k, v) in &secret.labels {
        assert!(is_valid_label(k, v), "label {k}={v} breaks GCP's rules");
    }
    assert_eq!(
        secret
            .labels
            .get("secret-santa-managed-by")
            .map(String::as_str),
        Some("secret-santa")
    );
    assert_eq!(
        secret
            .labels
            .get("secret-santa-namespace")
            .map(String::as_str),
        Some("shop")
    );
}

// ---------------------------------------------------------------------------
// The shared contract.

#[tokio::test]
async fn gcp_secret_manager_satisfies_the_store_contract() {
    let w = World::new().await;
    common::contract::run(w.store("gcp").await, "contract").await;
    // What the contract wrote is valid for GCP and versioned.
    let db = w.secret("contract_shop_db");
    assert_eq!(db.versions.len(), 2, "create, then put");
    assert!(db.versions.iter().all(|v| v.client_checksum), "CRC32C sent");
    assert_eq!(
        db.annotations.get("team").map(String::as_str),
        Some("payments")
    );
    assert_eq!(db.labels.get("team").map(String::as_str), Some("payments"));
}

// ---------------------------------------------------------------------------
// Backend specifics.

#[tokio::test]
async fn remote_names_map_to_secret_ids_or_say_why_not() {
    let w = World::new().await;
    let gcp = w.store("gcp").await;
    assert_eq!(
        gcp.remote_name("k8s/shop/db.v1").unwrap().as_str(),
        "k8s_shop_db-v1"
    );
    assert_eq!(gcp.remote_name("Shop_DB-1").unwrap().as_str(), "Shop_DB-1");
    let err = gcp.remote_name("shop/db#1").unwrap_err();
    assert!(
        err.contains("\"shop/db#1\"") && err.contains("'#' is not allowed") && err.contains("'_'"),
        "{err}"
    );
    assert!(gcp.remote_name("").unwrap_err().contains("empty"));
    assert!(gcp.remote_name(&"a".repeat(255)).is_ok());
    let err = gcp.remote_name(&"a".repeat(256)).unwrap_err();
    assert!(err.contains("256") && err.contains("255"), "{err}");

    // Through the pipeline: a denial naming the store, the name and the rule.
    let (answer, _) = w
        .create(&mirrored("- store: gcp\n  key: shop/db#1\n"))
        .await;
    assert!(!allowed(&answer));
    let msg = message(&answer);
    assert!(
        msg.contains("store \"gcp\"")
            && msg.contains("k8s/shop/db#1")
            && msg.contains("cannot be a Secret Manager secret id"),
        "{msg}"
    );
    assert!(w.fake.secret_ids().is_empty());
    assert!(w.fake.calls().is_empty(), "refused before any call");
}

#[tokio::test]
async fn errors_map_to_store_errors_with_short_messages() {
    let w = World::new().await;
    let gcp = w.store("gcp").await;
    let name = gcp.remote_name("shop/x").unwrap();
    let owner = Ownership {
        cluster_id: "c".into(),
        namespace: "shop".into(),
        name: "x".into(),
        key_set: String::new(),
    };
    let value = SecretValue::new(br#"{"password":"v"}"#.to_vec());

    // An absent secret costs one call.
    assert!(gcp.read(&name).await.unwrap().is_none());
    assert_eq!(w.fake.calls(), ["GetSecret"]);

    w.fake.fail("GetSecret", "RESOURCE_EXHAUSTED", 1);
    let err = gcp.read(&name).await.unwrap_err();
    assert!(matches!(err, StoreError::Throttled(_)), "{err}");
    assert!(
        err.to_string().contains(
            "GetSecret projects/test-project/secrets/shop_x: RESOURCE_EXHAUSTED: Quota exceeded"
        ),
        "{err}"
    );
    assert_eq!(w.fake.pending(), 0);

    // UNAVAILABLE on a GET is retried once, within the deadline.
    w.fake.clear_log();
    w.fake.fail("GetSecret", "UNAVAILABLE", 2);
    let err = gcp.read(&name).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(err.to_string().contains("UNAVAILABLE"), "{err}");
    assert_eq!(w.fake.pending(), 0, "the client tried exactly twice");
    assert_eq!(w.fake.count("GetSecret"), 2);

    // A POST is not retried: CreateSecret is not idempotent.
    w.fake.clear_log();
    w.fake.fail("CreateSecret", "UNAVAILABLE", 1);
    let err = gcp
        .create_if_absent(&name, &value, &owner, &WriteOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert_eq!(w.fake.count("CreateSecret"), 1);

    w.fake.fail("CreateSecret", "PERMISSION_DENIED", 1);
    let err = gcp
        .create_if_absent(&name, &value, &owner, &WriteOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::PermissionDenied(_)), "{err}");
    assert!(
        err.to_string().contains(
            "CreateSecret projects/test-project/secrets/shop_x: PERMISSION_DENIED: \
             Permission 'secretmanager.secrets.create' denied"
        ),
        "{err}"
    );
    assert!(err.to_string().len() < 400, "{err}");

    w.fake.fail("CreateSecret", "INVALID_ARGUMENT", 1);
    let err = gcp
        .create_if_absent(&name, &value, &owner, &WriteOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");

    // Too large for Secret Manager: refused before any call.
    w.fake.clear_log();
    let err = gcp
        .create_if_absent(
            &name,
            &SecretValue::new(vec![b'x'; 65_537]),
            &owner,
            &WriteOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid(_)) && err.to_string().contains("65536"),
        "{err}"
    );
    assert!(w.fake.calls().is_empty());

    // A tag that cannot be an annotation key: refused before any call.
    let err = gcp
        .create_if_absent(
            &name,
            &value,
            &owner,
            &WriteOptions {
                tags: [("team/x".to_owned(), "y".to_owned())].into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid(_)) && err.to_string().contains("\"team/x\""),
        "{err}"
    );
    assert!(w.fake.calls().is_empty());

    // Nothing listening: a short message naming the endpoint.
    let down = w.store("gcp-down").await;
    let err = down.read(&name).await.unwrap_err();
    let expected = format!("connection refused at http://127.0.0.1:{}", w.closed_port);
    assert!(
        matches!(err, StoreError::Unavailable(_)) && err.to_string().contains(&expected),
        "{err}"
    );
    assert!(err.to_string().len() < 200, "{err}");
}

#[tokio::test]
async fn binary_values_round_trip_with_their_checksum() {
    let w = World::new().await;
    let gcp = w.store("gcp").await;
    let owner = Ownership {
        cluster_id: "test-cluster".into(),
        namespace: "shop".into(),
        name: "bin".into(),
        key_set: "k".into(),
    };
    let name = gcp.remote_name("shop/bin").unwrap();
    let raw = SecretValue::new(vec![0, 159, 146, 150, 255]);
    let options = WriteOptions {
        content_type: "application/octet-stream",
        ..Default::default()
    };
    match gcp
        .create_if_absent(&name, &raw, &owner, &options)
        .await
        .unwrap()
    {
        CreateOutcome::Created { version } => assert_eq!(version.as_deref(), Some("1")),
        CreateOutcome::Exists(_) => panic!("fresh name must be created"),
    }
    let stored = w.secret("shop_bin");
    assert!(stored.versions[0].data == raw, "stored byte for byte");
    assert!(stored.versions[0].client_checksum);
    let entry = gcp.read(&name).await.unwrap().unwrap();
    assert!(entry.payload == raw, "reads back byte for byte");
    assert_eq!(entry.version.as_deref(), Some("1"));
    assert_eq!(entry.owner(), Some(owner));
    assert_eq!(gcp_fake::crc32c(b"123456789"), 0xE306_9283);
}

#[tokio::test]
async fn replication_and_cmek_come_from_the_config() {
    let w = World::new().await;
    let (answer, _) = w.create(&mirrored("- store: gcp-eu\n")).await;
    assert!(allowed(&answer), "{answer}");
    let eu = w.secret("eu_shop_db");
    assert_eq!(
        eu.replication,
        json!({"userManaged": {"replicas": [
            {"location": "europe-west1", "customerManagedEncryption": {"kmsKeyName": EU_KEY}},
            {"location": "europe-west4"}
        ]}})
    );

    let (answer, _) = w.create(&mirrored("- store: gcp-cmek\n")).await;
    assert!(allowed(&answer), "{answer}");
    let cmek = w.secret("cmek_shop_db");
    assert_eq!(
        cmek.replication,
        json!({"automatic": {"customerManagedEncryption": {"kmsKeyName": CMEK}}})
    );

    let (answer, _) = w.create(&mirrored("- store: gcp\n")).await;
    assert!(allowed(&answer), "{answer}");
    assert_eq!(
        w.secret("k8s_shop_db").replication,
        json!({"automatic": {}})
    );
}

// ---------------------------------------------------------------------------
// Through the review pipeline.

#[tokio::test]
async fn fresh_create_fills_the_secret_and_the_store_holds_it_owned() {
    let w = World::new().await;
    let (answer, result) = w.create(&mirrored("- store: gcp\n")).await;
    assert!(allowed(&answer), "{answer}");
    let secret = as_secret(&result);
    let data = data_of(&secret);
    assert_eq!(data.len(), 2);

    let stored = w.secret("k8s_shop_db");
    assert_eq!(stored.versions.len(), 1);
    assert!(
        latest_map(&stored) == data,
        "Secret Manager holds the Secret's values"
    );
    assert_owned(&stored, "test-cluster", "db");
    // Extra admin tags: as annotations, and as labels where the key allows.
    assert_eq!(
        stored.annotations.get("team").map(String::as_str),
        Some("platform")
    );
    assert_eq!(
        stored.labels.get("team").map(String::as_str),
        Some("platform")
    );
    assert_eq!(
        stored.annotations.get("Cost.Center").map(String::as_str),
        Some("4711")
    );
    assert!(
        !stored.labels.contains_key("Cost.Center"),
        "not a valid label key: annotation only"
    );
    assert_eq!(
        annotations_of(&secret)["secret-santa.io/mirrored-to"],
        "gcp"
    );
    // One conditional create and one version: no probe before.
    assert_eq!(w.fake.calls(), ["CreateSecret", "AddSecretVersion"]);
    // The request log holds request lines only, never values.
    let log: Vec<String> = w.fake.log().into_iter().map(|l| l.line).collect();
    assert!(
        log[0].starts_with("POST /v1/projects/test-project/secrets?"),
        "{log:?}"
    );
    assert!(log[0].contains("secretId=k8s_shop_db"), "{log:?}");
    assert_eq!(
        log[1].split('?').next(),
        Some("POST /v1/projects/test-project/secrets/k8s_shop_db:addVersion")
    );
    for v in data.values() {
        assert!(
            !log.iter().any(|l| l.contains(v.as_str())),
            "no value in the log"
        );
    }
}

#[tokio::test]
async fn labels_are_sanitized_while_annotations_keep_exact_ownership() {
    // Uppercase and dots: fine as annotations, not as labels.
    let w = World::with_cluster("Prod.EU-1").await;
    let doc = SecretDoc::new("db.main")
        .labelled()
        .autogenerate("password")
        .annotate("secret-santa.io/mirror", "- store: gcp\n")
        .value();
    let (answer, result) = w.create(&doc).await;
    assert!(allowed(&answer), "{answer}");
    let stored = w.secret("k8s_shop_db-main");
    assert_owned(&stored, "Prod.EU-1", "db.main");
    assert_eq!(
        stored
            .labels
            .get("secret-santa-cluster")
            .map(String::as_str),
        Some("prod_eu-1")
    );
    assert_eq!(
        stored.labels.get("secret-santa-name").map(String::as_str),
        Some("db_main")
    );
    // Ownership is compared exactly (from the annotations): the retry
    // converges instead of being refused.
    let (again, result2) = w.create(&doc).await;
    assert!(allowed(&again), "{again}");
    assert!(data_of(&as_secret(&result)) == data_of(&as_secret(&result2)));
    assert_eq!(w.secret("k8s_shop_db-main").versions.len(), 1);
}

#[tokio::test]
async fn a_retried_create_converges_on_the_stored_value() {
    let w = World::new().await;
    let doc = mirrored("- store: gcp\n");
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
    let stored = w.secret("k8s_shop_db");
    assert_eq!(stored.versions.len(), 1, "no second version");
    assert!(latest_map(&stored) == first);
}

#[tokio::test]
async fn unowned_secrets_are_refused_and_left_alone() {
    let w = World::new().await;
    // Someone else's secret, with a value.
    w.fake
        .insert_secret("k8s_shop_db", &[("env", "prod")], &[("owner", "billing")]);
    w.fake
        .add_version("k8s_shop_db", br#"{"password":"theirs"}"#);
    // Someone else's secret, without a value yet.
    w.fake.insert_secret("k8s_shop_cache", &[], &[]);

    for (doc, id) in [
        (mirrored("- store: gcp\n"), "k8s_shop_db"),
        (
            SecretDoc::new("cache")
                .labelled()
                .autogenerate("password")
                .annotate("secret-santa.io/mirror", "- store: gcp\n")
                .value(),
            "k8s_shop_cache",
        ),
    ] {
        let (answer, _) = w.create(&doc).await;
        assert!(!allowed(&answer), "{id}: {}", shown(&answer));
        let msg = message(&answer);
        assert!(
            msg.contains("store \"gcp\"")
                && msg.contains(id)
                && msg.contains("already exists")
                && msg.contains("adoption"),
            "{msg}"
        );
        assert!(
            !msg.contains("theirs"),
            "the message does not show the stored value"
        );
    }
    let db = w.secret("k8s_shop_db");
    assert_eq!(db.versions.len(), 1);
    assert!(db.versions[0].data == SecretValue::new(br#"{"password":"theirs"}"#.to_vec()));
    assert!(db.annotations == BTreeMap::from([("owner".to_owned(), "billing".to_owned())]));
    assert!(db.labels == BTreeMap::from([("env".to_owned(), "prod".to_owned())]));
    let cache = w.secret("k8s_shop_cache");
    assert!(
        cache.versions.is_empty(),
        "no version added to a secret we do not own"
    );
    assert!(cache.annotations.is_empty() && cache.labels.is_empty());
    assert_eq!(w.fake.count("AddSecretVersion"), 0);
    assert_eq!(w.fake.count("UpdateSecret"), 0);
}

#[tokio::test]
async fn an_owned_secret_without_an_enabled_version_gets_one() {
    let w = World::new().await;
    // What a crash between CreateSecret and AddSecretVersion leaves behind.
    let tags = owner("test-cluster", "db");
    let annotations: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (*k, v.as_str())).collect();
    w.fake.insert_secret("k8s_shop_db", &[], &annotations);
    let (answer, result) = w.create(&mirrored("- store: gcp\n")).await;
    assert!(allowed(&answer), "{answer}");
    let stored = w.secret("k8s_shop_db");
    assert_eq!(stored.versions.len(), 1);
    assert!(latest_map(&stored) == data_of(&as_secret(&result)));
    assert_eq!(
        w.fake.calls(),
        [
            "CreateSecret",
            "GetSecret",
            "AccessSecretVersion",
            "AddSecretVersion"
        ]
    );

    // Ours, with the latest version disabled by an admin: a new version.
    let tags = owner("test-cluster", "api");
    let annotations: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (*k, v.as_str())).collect();
    w.fake.insert_secret("k8s_shop_api", &[], &annotations);
    w.fake.add_version("k8s_shop_api", br#"{"password":"old"}"#);
    w.fake
        .set_version_state("k8s_shop_api", 1, VersionState::Disabled);
    let doc = SecretDoc::new("api")
        .labelled()
        .autogenerate("password")
        .annotate("secret-santa.io/mirror", "- store: gcp\n")
        .value();
    let (answer, result) = w.create(&doc).await;
    assert!(allowed(&answer), "{answer}");
    let api = w.secret("k8s_shop_api");
    assert_eq!(api.versions.len(), 2);
    assert_eq!(
        api.versions[0].state,
        VersionState::Disabled,
        "left as it was"
    );
    assert!(latest_map(&api) == data_of(&as_secret(&result)));
}

#[tokio::test]
async fn a_failed_add_secret_version_then_a_retry_converges() {
    let w = World::new().await;
    let doc = mirrored("- store: gcp\n");
    w.fake.fail("AddSecretVersion", "PERMISSION_DENIED", 1);
    let (answer, _) = w.create(&doc).await;
    assert!(!allowed(&answer));
    let msg = message(&answer);
    assert!(
        msg.contains("store \"gcp\"")
            && msg.contains("permission denied")
            && msg.contains(
                "AddSecretVersion projects/test-project/secrets/k8s_shop_db: PERMISSION_DENIED"
            )
            && msg.contains("secretmanager.versions.add")
            && msg.contains("a retry adds it"),
        "{msg}"
    );
    // The secret exists, owned, without a value.
    let stored = w.secret("k8s_shop_db");
    assert!(stored.versions.is_empty());
    assert_owned(&stored, "test-cluster", "db");

    let (answer, result) = w.create(&doc).await;
    assert!(allowed(&answer), "{answer}");
    let stored = w.secret("k8s_shop_db");
    assert_eq!(stored.versions.len(), 1);
    assert!(latest_map(&stored) == data_of(&as_secret(&result)));
}

#[tokio::test]
async fn permission_denied_names_the_store_and_the_operation_never_the_value() {
    let w = World::new().await;
    // A value the author set, mirrored with a generated one.
    let doc = SecretDoc::new("db")
        .labelled()
        .autogenerate("token")
        .data("password", "hunter2-do-not-print")
        .annotate(
            "secret-santa.io/mirror",
            "- store: gcp\n  keys: [password, token]\n",
        )
        .value();
    w.fake.fail("CreateSecret", "PERMISSION_DENIED", 1);
    let (answer, _) = w.create(&doc).await;
    assert!(!allowed(&answer));
    let msg = message(&answer);
    assert!(
        msg.contains("store \"gcp\" (gcp-secret-manager)")
            && msg.contains("permission denied")
            && msg.contains(
                "CreateSecret projects/test-project/secrets/k8s_shop_db: PERMISSION_DENIED"
            )
            && msg.contains("secretmanager.secrets.create"),
        "{msg}"
    );
    assert!(!msg.contains("hunter2"), "the message never holds a value");
    assert!(w.fake.secret_ids().is_empty(), "nothing was created");
}

#[tokio::test]
async fn a_store_that_is_down_is_denied_within_its_deadline() {
    let w = World::new().await;
    let started = Instant::now();
    let (answer, _) = w.create(&mirrored("- store: gcp-down\n")).await;
    let took = started.elapsed();
    assert!(!allowed(&answer));
    let msg = message(&answer);
    let expected = format!("connection refused at http://127.0.0.1:{}", w.closed_port);
    assert!(
        msg.contains("store \"gcp-down\"")
            && msg.contains("not reachable")
            && msg.contains(&expected),
        "{msg}"
    );
    assert!(
        took < Duration::from_millis(1500),
        "denied after {took:?}, the store's deadline is 1s"
    );
}

#[tokio::test]
async fn dry_run_touches_nothing() {
    let w = World::new().await;
    let doc = mirrored("- store: gcp\n");
    let answer = w.send(&review("CREATE", Some(&doc), None, true)).await;
    assert!(allowed(&answer), "{answer}");
    assert!(
        warnings(&answer).iter().any(|w| w.contains("not written")),
        "{}",
        shown(&answer)
    );
    assert!(
        w.fake.calls().is_empty(),
        "no request reached Secret Manager"
    );
    assert!(w.fake.secret_ids().is_empty());
}

#[tokio::test]
async fn regenerate_adds_version_2_and_keeps_the_admins_labels() {
    let w = World::new().await;
    let (answer, old) = w.create(&mirrored("- store: gcp\n")).await;
    assert!(allowed(&answer), "{answer}");
    let before = data_of(&as_secret(&old));
    // An admin labels the secret in the console meanwhile.
    w.fake.set_label("k8s_shop_db", "env", "prod");

    let mut new = old.clone();
    new["metadata"]["annotations"]["secret-santa.io/regenerate"] = json!("password");
    let answer = w.send(&update(&new, &old)).await;
    assert!(allowed(&answer), "{answer}");
    let after = data_of(&as_secret(&apply(&new, &answer)));
    assert!(after["password"] != before["password"] && after["token"] == before["token"]);

    let stored = w.secret("k8s_shop_db");
    assert_eq!(stored.versions.len(), 2, "a new version");
    assert!(
        json_map(&stored.versions[0].data) == before,
        "version 1 kept"
    );
    assert!(
        latest_map(&stored) == after,
        "Secret Manager follows the regenerated Secret"
    );
    assert_owned(&stored, "test-cluster", "db");
    assert_eq!(
        stored.labels.get("env").map(String::as_str),
        Some("prod"),
        "labels merged, not replaced"
    );
    assert_eq!(w.fake.count("UpdateSecret"), 1);
}

#[tokio::test]
async fn adoption_writes_a_new_version_and_takes_ownership() {
    let w = World::new().await;
    w.fake.insert_secret(
        "adopt_shop_db",
        &[("env", "prod")],
        &[("owner-team", "legacy")],
    );
    w.fake
        .add_version("adopt_shop_db", br#"{"password":"legacy"}"#);
    let (answer, result) = w.create(&mirrored("- store: gcp-adopt\n")).await;
    assert!(allowed(&answer), "{answer}");
    let data = data_of(&as_secret(&result));
    let stored = w.secret("adopt_shop_db");
    assert_eq!(stored.versions.len(), 2);
    assert!(
        stored.versions[0].data == SecretValue::new(br#"{"password":"legacy"}"#.to_vec()),
        "the old version is left as it was"
    );
    assert!(latest_map(&stored) == data);
    assert_owned(&stored, "test-cluster", "db");
    assert_eq!(
        stored.annotations.get("owner-team").map(String::as_str),
        Some("legacy")
    );
    assert_eq!(stored.labels.get("env").map(String::as_str), Some("prod"));
}

// ---------------------------------------------------------------------------
// Config and credentials.

#[test]
fn gcp_settings_are_validated_with_errors_naming_the_key() {
    let store = |extra: &str| {
        format!(
            "stores:\n  - name: s\n    namespaces: [\"*\"]\n    type: gcp-secret-manager\n{extra}"
        )
    };
    for ok in [
        "    project: test-project\n",
        "    project: \"123456789012\"\n    auth: { method: default }\n",
        "    project: test-project\n    auth: { method: serviceAccountKey, keyFile: /etc/gcp/key.json }\n",
        "    project: test-project\n    endpoint: http://127.0.0.1:8085\n    auth: { method: none }\n",
        "    project: test-project\n    replication: automatic\n    kmsKeyId: projects/p/locations/global/keyRings/r/cryptoKeys/k\n",
        "    project: test-project\n    replication:\n      userManaged:\n        - location: europe-west1\n          kmsKeyName: projects/p/locations/europe-west1/keyRings/r/cryptoKeys/k\n        - location: us-east1\n",
        "    project: test-project\n    tags: { team: platform, Cost.Center: \"1\" }\n",
    ] {
        let parsed = AdminConfig::parse(&store(ok));
        assert!(parsed.is_ok(), "{ok}: {parsed:?}");
    }
    for (extra, expected) in [
        ("", "missing field `project`"),
        (
            "    project: test-project\n    projcet: x\n",
            "unknown field `projcet`",
        ),
        (
            "    project: test-project\n    region: eu\n",
            "unknown field `region`",
        ),
        ("    project: My Project\n", "project \"My Project\""),
        (
            "    project: test-project\n    endpoint: localhost:8085\n",
            "endpoint \"localhost:8085\"",
        ),
        (
            "    project: test-project\n    auth: { method: magic }\n",
            "unknown variant `magic`",
        ),
        (
            "    project: test-project\n    auth: { method: serviceAccountKey }\n",
            "missing field `keyFile`",
        ),
        (
            "    project: test-project\n    auth: { method: serviceAccountKey, keyFile: /k, keyfile: /k }\n",
            "unknown field `keyfile`",
        ),
        (
            "    project: test-project\n    auth: { method: none }\n",
            "auth method none",
        ),
        (
            "    project: test-project\n    replication: manual\n",
            "unknown variant `manual`",
        ),
        (
            "    project: test-project\n    replication: { userManaged: [] }\n",
            "at least one location",
        ),
        (
            "    project: test-project\n    replication: { userManaged: [ { region: x } ] }\n",
            "unknown field `region`",
        ),
        (
            "    project: test-project\n    replication: { userManaged: [ { location: Europe West } ] }\n",
            "replication.userManaged[0].location \"Europe West\"",
        ),
        (
            "    project: test-project\n    replication: { userManaged: [ { location: europe-west1, kmsKeyName: mine } ] }\n",
            "replication.userManaged[0].kmsKeyName \"mine\"",
        ),
        (
            "    project: test-project\n    kmsKeyId: alias/mine\n",
            "kmsKeyId \"alias/mine\"",
        ),
        (
            "    project: test-project\n    kmsKeyId: projects/p/locations/global/keyRings/r/cryptoKeys/k\n    \
             replication: { userManaged: [ { location: europe-west1 } ] }\n",
            "kmsKeyName",
        ),
        (
            "    project: test-project\n    tags: { \"team/x\": y }\n",
            "tag \"team/x\"",
        ),
    ] {
        let err = AdminConfig::parse(&store(extra)).unwrap_err();
        assert!(
            err.contains(expected) && err.contains("stores[0] (s)"),
            "{extra}: {err}"
        );
    }
}

/// A service account key (JSON) with a fresh RSA key, and the public key
/// (RSAPublicKey DER) the fake verifies its JWTs with.
fn service_account_key(email: &str) -> (String, Vec<u8>) {
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
    use aws_lc_rs::signature::KeyPair as _;
    let key_pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let pkcs8: Pkcs8V1Der<'_> = AsDer::<Pkcs8V1Der>::as_der(&key_pair).unwrap();
    let public = key_pair.public_key().as_ref().to_vec();
    let key = json!({
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "0123456789abcdef",
        "private_key": pem("PRIVATE KEY", pkcs8.as_ref()),
        "client_email": email,
        "client_id": "100000000000000000001",
        "token_uri": "https://oauth2.googleapis.com/token",
    });
    (key.to_string(), public)
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn key_file_config(endpoint: &str, key_file: &std::path::Path) -> AdminConfig {
    AdminConfig::parse(&format!(
        "clusterId: test-cluster\nstores:\n  - name: s\n    type: gcp-secret-manager\n    project: {PROJECT}\n    \
         endpoint: {endpoint}\n    namespaces: [\"shop\"]\n    deadline: 3s\n    \
         auth: {{ method: serviceAccountKey, keyFile: {} }}\n",
        key_file.display()
    ))
    .unwrap()
}

#[tokio::test]
async fn service_account_key_files_are_checked_at_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let (good, _) = service_account_key(SERVICE_ACCOUNT);
    let good: Value = serde_json::from_str(&good).unwrap();
    let mut external = good.clone();
    external["type"] = json!("external_account");
    let mut no_key = good.clone();
    no_key.as_object_mut().unwrap().remove("private_key");
    let mut bad_pem = good.clone();
    bad_pem["private_key"] =
        json!("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n");
    for (name, content) in [
        ("empty.json", " \n".to_owned()),
        ("garbage.json", "this is not JSON".to_owned()),
        ("array.json", "[]".to_owned()),
        ("external.json", external.to_string()),
        ("no-key.json", no_key.to_string()),
        ("bad-pem.json", bad_pem.to_string()),
        ("good.json", good.to_string()),
    ] {
        std::fs::write(path(name), content).unwrap();
    }
    for (name, expected) in [
        ("missing.json", "auth.keyFile"),
        ("empty.json", "is empty"),
        ("garbage.json", "is not a JSON service account key"),
        ("array.json", "is not a JSON service account key"),
        ("external.json", "\"external_account\""),
        ("no-key.json", "\"private_key\" is missing"),
        ("bad-pem.json", "not a PEM private key"),
    ] {
        let config = key_file_config("http://127.0.0.1:9", &path(name));
        let err = Stores::from_config(&config)
            .await
            .err()
            .unwrap_or_else(|| panic!("{name}: the store must not start"));
        let shown = path(name).display().to_string();
        assert!(
            err.contains("store s") && err.contains(&shown) && err.contains(expected),
            "{name}: {err}"
        );
        assert!(
            !err.contains("BEGIN PRIVATE KEY"),
            "{name}: the key is never shown"
        );
    }
    let config = key_file_config("http://127.0.0.1:9", &path("good.json"));
    assert!(Stores::from_config(&config).await.is_ok());
}

#[tokio::test]
async fn a_service_account_key_authenticates_with_a_signed_jwt() {
    let fake = GcpFake::start(PROJECT);
    let (key, public) = service_account_key(SERVICE_ACCOUNT);
    fake.require_service_account(SERVICE_ACCOUNT, &public);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key.json"), &key).unwrap();
    let config = key_file_config(&fake.endpoint, &dir.path().join("key.json"));
    let gcp = store::build(&config.stores[0]).await.unwrap();
    common::contract::run(gcp, "sa").await;
    assert!(fake.secret("sa_shop_db").is_some());

    // Another key for the same account: its JWTs do not verify.
    let (other, _) = service_account_key(SERVICE_ACCOUNT);
    std::fs::write(dir.path().join("other.json"), &other).unwrap();
    let config = key_file_config(&fake.endpoint, &dir.path().join("other.json"));
    let impostor = store::build(&config.stores[0]).await.unwrap();
    let err = impostor
        .read(&impostor.remote_name("sa/shop/db").unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::PermissionDenied(_))
            && err
                .to_string()
                .contains("GetSecret projects/test-project/secrets/sa_shop_db: UNAUTHENTICATED"),
        "{err}"
    );

    // No credentials at all.
    let anonymous = AdminConfig::parse(&format!(
        "stores:\n  - name: s\n    type: gcp-secret-manager\n    project: {PROJECT}\n    endpoint: {}\n    \
         namespaces: [\"shop\"]\n    auth: {{ method: none }}\n",
        fake.endpoint
    ))
    .unwrap();
    let anonymous = store::build(&anonymous.stores[0]).await.unwrap();
    let err = anonymous
        .read(&anonymous.remote_name("sa/shop/db").unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::PermissionDenied(_))
            && err
                .to_string()
                .contains("missing required authentication credential"),
        "{err}"
    );
}

/// `secret-santa mutate --mirror` with the default auth method: Application
/// Default Credentials from `GOOGLE_APPLICATION_CREDENTIALS`.
#[tokio::test]
async fn the_cli_mirrors_with_application_default_credentials() {
    let fake = GcpFake::start(PROJECT);
    let (key, public) = service_account_key(SERVICE_ACCOUNT);
    fake.require_service_account(SERVICE_ACCOUNT, &public);
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("adc.json");
    std::fs::write(&key_file, &key).unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "clusterId: cli\nstores:\n  - name: gcp\n    type: gcp-secret-manager\n    project: {PROJECT}\n    \
             endpoint: {}\n    namespaces: [\"*\"]\n",
            fake.endpoint
        ),
    )
    .unwrap();
    let manifest = dir.path().join("secret.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: api\n  namespace: shop\n  labels: {secret-santa.io/enabled: \"true\"}\n  \
         annotations:\n    secret-santa.io/autogenerate: token\n    secret-santa.io/mirror: \"- store: gcp\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_secret-santa"))
        .args(["mutate", "--mirror", "--reveal", "--config"])
        .arg(&config)
        .arg(&manifest)
        .env("GOOGLE_APPLICATION_CREDENTIALS", &key_file)
        .env("HOME", dir.path())
        .env_remove("GOOGLE_CLOUD_RUST_LOGGING")
        .env_remove("GOOGLE_CLOUD_UNIVERSE_DOMAIN")
        .env_remove("CLOUDSDK_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mutate failed: {stderr}");
    let docs: Vec<Value> =
        secret_santa::yaml::from_str_multiple(&String::from_utf8(out.stdout).unwrap()).unwrap();
    let data = data_of(&as_secret(&docs[0]));
    let stored = fake.secret("shop_api").expect("the CLI wrote shop_api");
    assert!(
        latest_map(&stored) == data,
        "the store holds what the CLI printed"
    );
    assert_eq!(
        stored
            .annotations
            .get("secret-santa-cluster")
            .map(String::as_str),
        Some("cli")
    );
}

// ---------------------------------------------------------------------------
// The fake itself answers as the reference says.

#[test]
fn the_fake_validates_and_answers_like_secret_manager() {
    let fake = GcpFake::start(PROJECT);
    let create = |id: &str, body: Value| {
        fake.raw(
            "POST",
            &format!(
                "/v1/projects/{PROJECT}/secrets?secretId={id}&%24alt=json%3Benum-encoding%3Dint"
            ),
            Some(&body),
        )
    };
    let automatic = json!({"automatic": {}});

    let (status, body) = create(
        "ok",
        json!({"replication": automatic, "labels": {"Team": "x"}}),
    );
    assert_eq!(status, 400);
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(body["error"]["code"], 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Label key 'Team'")
    );
    let (status, body) = create(
        "ok",
        json!({"replication": automatic, "labels": {"team": "Platform"}}),
    );
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Label value 'Platform'")
    );
    let (status, body) = create(
        "ok",
        json!({"replication": automatic, "labels": {"team": "x".repeat(64)}}),
    );
    assert_eq!(status, 400, "{body}");
    let (status, _) = create(
        "ok",
        json!({"replication": automatic, "annotations": {"team/x": "y"}}),
    );
    assert_eq!(status, 400);
    let (status, _) = create("ok", json!({}));
    assert_eq!(status, 400, "replication is required");
    let (status, _) = create("bad.id", json!({"replication": automatic}));
    assert_eq!(status, 400);

    let (status, body) = create(
        "ok",
        json!({"replication": automatic, "labels": {"team": "payments_eu-1"}, "annotations": {"Owner.Team": "Payments EU"}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["name"],
        format!("projects/{PROJECT_NUMBER}/secrets/ok")
    );
    let (status, body) = create("ok", json!({"replication": automatic}));
    assert_eq!(status, 409);
    assert_eq!(body["error"]["status"], "ALREADY_EXISTS");

    let (status, body) = fake.raw("GET", &format!("/v1/projects/{PROJECT}/secrets/nope"), None);
    assert_eq!(
        (status, body["error"]["status"].as_str()),
        (404, Some("NOT_FOUND"))
    );
    let access = |version: &str| {
        fake.raw(
            "GET",
            &format!("/v1/projects/{PROJECT}/secrets/ok/versions/{version}:access"),
            None,
        )
    };
    let (status, body) = access("latest");
    assert_eq!(status, 404);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("has no versions")
    );

    let b64 = base64::engine::general_purpose::STANDARD.encode(b"s3cr3t");
    let add = |payload: Value| {
        fake.raw(
            "POST",
            &format!(
                "/v1/projects/{PROJECT}/secrets/ok:addVersion?%24alt=json%3Benum-encoding%3Dint"
            ),
            Some(&json!({"payload": payload})),
        )
    };
    let (status, body) = add(json!({"data": b64, "dataCrc32c": "12345"}));
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Checksum mismatch")
    );
    let crc = gcp_fake::crc32c(b"s3cr3t").to_string();
    let (status, body) = add(json!({"data": b64, "dataCrc32c": crc}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["name"],
        format!("projects/{PROJECT_NUMBER}/secrets/ok/versions/1")
    );
    assert_eq!(body["state"], 1, "enums as numbers when asked");
    assert_eq!(body["clientSpecifiedPayloadChecksum"], true);
    let (status, body) = access("latest");
    assert_eq!(status, 200);
    assert_eq!(body["payload"]["data"], b64.as_str());
    assert_eq!(body["payload"]["dataCrc32c"], crc.as_str());

    let (status, _) = fake.raw(
        "POST",
        &format!("/v1/projects/{PROJECT}/secrets/ok/versions/1:disable"),
        Some(&json!({})),
    );
    assert_eq!(status, 200);
    let (status, body) = access("latest");
    assert_eq!(status, 400);
    assert_eq!(body["error"]["status"], "FAILED_PRECONDITION");
    let (status, _) = access("7");
    assert_eq!(status, 404);

    let (status, body) = fake.raw(
        "PATCH",
        &format!("/v1/projects/{PROJECT}/secrets/ok?updateMask=labels"),
        Some(&json!({"labels": {"Bad": "x"}})),
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = fake.raw(
        "PATCH",
        &format!("/v1/projects/{PROJECT}/secrets/ok?updateMask=labels"),
        Some(&json!({"labels": {"env": "prod"}})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["labels"], json!({"env": "prod"}));
    assert_eq!(
        body["annotations"],
        json!({"Owner.Team": "Payments EU"}),
        "outside the mask: unchanged"
    );

    let (status, body) = fake.raw("GET", "/v1/projects/other-project/secrets/ok", None);
    assert_eq!(status, 403);
    assert_eq!(body["error"]["status"], "PERMISSION_DENIED");
    assert_eq!(
        body["error"]["details"][0]["reason"],
        "IAM_PERMISSION_DENIED"
    );

    fake.fail("GetSecret", "UNAVAILABLE", 1);
    let (status, body) = fake.raw("GET", &format!("/v1/projects/{PROJECT}/secrets/ok"), None);
    assert_eq!(
        (status, body["error"]["status"].as_str()),
        (503, Some("UNAVAILABLE"))
    );
    assert_eq!(fake.pending(), 0);
    let (status, _) = fake.raw(
        "GET",
        &format!("/v1/projects/{PROJECT_NUMBER}/secrets/ok"),
        None,
    );
    assert_eq!(status, 200, "the project number names the project too");
}
