//! The `ibm-secrets-manager` store on a fake IBM Cloud Secrets Manager
//! instance and a fake IBM Cloud IAM (`common/ibm_fake.rs`, one plain HTTP
//! server on 127.0.0.1, written from the public API reference and the IBM
//! SDKs: no Secrets Manager emulator exists). The fake verifies the bearer
//! tokens it issued (and their expiry), the API keys and compute-resource
//! tokens, and the caller's service role, and answers with IAM's and
//! Secrets Manager's error JSON. The shared store contract with each login
//! and secret group, then CONTRACT §4 through the whole review pipeline:
//! fresh create, retried create, unowned entries, destroyed secrets,
//! permissions, bad credentials, an instance that is down or silent, dry
//! run, regeneration, token caching and refresh, settings. Values are
//! compared with `assert!(a == b)` so a failure never prints them, and
//! every denial is checked for the values it must not show.
#![cfg(feature = "ibm")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/ibm_fake.rs"]
mod ibm_fake;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ibm_fake::{DEFAULT_GROUP, IbmFake, Op, Role};
use secret_santa::config::AdminConfig;
use secret_santa::secret::SecretValue;
use secret_santa::store::ibm::{LABEL_BASE64, LABEL_MANAGED};
use secret_santa::store::{self, CreateOutcome, Ownership, StoreError, Stores, WriteOptions};
use secret_santa::{App, Reviewer};
use serde_json::{Value, json};

/// The service ID the webhook writes with (Writer), one that may only read
/// secrets (SecretsReader), and the trusted profile of the webhook's pods.
const WRITER_KEY: &str = "writer-api-key-4f1c9a77e2b0";
const WRITER_ID: &str = "iam-ServiceId-writer";
const READER_KEY: &str = "reader-api-key-8d2b7e31aa5c";
const READER_ID: &str = "iam-ServiceId-reader";
const PROFILE_ID: &str = "Profile-9a2b2dc2-0b51-4e7e-8c2d-6ea1d7f3c1b2";
const PROFILE_NAME: &str = "secret-santa-webhook";
const CR_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.fake-projected-service-account-token.c2ln";
/// Every access token the fake issues starts so.
const ACCESS_TOKEN_PREFIX: &str = "eyJraWQiOiJmYWtlIn0.";

struct World {
    fake: IbmFake,
    closed_port: u16,
    /// Accepts connections (the kernel's backlog) and never answers.
    _hang: TcpListener,
    files: tempfile::TempDir,
    /// The webhook under test and its admin config.
    hook: Webhook,
    /// The id of secret group `team-a`.
    team: String,
}

impl std::ops::Deref for World {
    type Target = Webhook;

    fn deref(&self) -> &Webhook {
        &self.hook
    }
}

fn config_yaml(fake: &IbmFake, closed: u16, hang: u16, files: &Path, team: &str) -> String {
    let f = |name: &str| files.join(name).display().to_string();
    let iam = &fake.url;
    let settings = |instance: &str, deadline: &str| {
        format!(
            "    type: ibm-secrets-manager\n    instanceUrl: {instance}\n    iamEndpoint: {iam}\n    namespaces: [\"shop\"]\n    deadline: {deadline}\n"
        )
    };
    let writer = format!("{{ method: apiKey, apiKeyFile: \"{}\" }}", f("writer-key"));
    format!(
        r#"
clusterId: test-cluster
limits: {{ requestDeadline: 6s }}
stores:
  - name: ibm
{sm}    auth: {writer}
    prefix: "k8s/"
    tags: {{ team: platform }}
  - name: ibm-team
{sm}    auth: {writer}
    secretGroup: team-a
    prefix: "team/"
  - name: ibm-team-id
{sm}    auth: {writer}
    secretGroup: "{team}"
    prefix: "team-id/"
  - name: ibm-nogroup
{sm}    auth: {writer}
    secretGroup: no-such-group
  - name: ibm-tp
{sm}    auth: {{ method: trustedProfile, trustedProfileId: "{PROFILE_ID}", crTokenFile: "{cr}" }}
    prefix: "tp/"
  - name: ibm-tp-name
{sm}    auth: {{ method: trustedProfile, trustedProfileName: "{PROFILE_NAME}", crTokenFile: "{cr}" }}
    prefix: "tpn/"
  - name: ibm-reader
{sm}    auth: {{ method: apiKey, apiKeyFile: "{reader}" }}
    prefix: "k8s/"
  - name: ibm-down
{down}    auth: {writer}
  - name: ibm-hang
{hang_store}    auth: {writer}
"#,
        sm = settings(&fake.url, "3s"),
        down = settings(&format!("http://127.0.0.1:{closed}"), "1s"),
        hang_store = settings(&format!("http://127.0.0.1:{hang}"), "1s"),
        cr = f("cr-token"),
        reader = f("reader-key"),
    )
}

async fn app_for(config: &AdminConfig) -> Arc<App> {
    let stores = Stores::from_config(config).await.unwrap();
    App::new(Reviewer::new(config.clone(), stores), 3 * 1024 * 1024)
}

impl World {
    async fn new() -> World {
        let fake = IbmFake::start();
        fake.register_api_key(WRITER_KEY, WRITER_ID, Role::WRITER);
        fake.register_api_key(READER_KEY, READER_ID, Role::SECRETS_READER);
        fake.register_profile(PROFILE_ID, PROFILE_NAME, CR_TOKEN, Role::WRITER);
        let team = fake.add_group("team-a");
        fake.add_group("team-b");
        let files = tempfile::tempdir().unwrap();
        std::fs::write(files.path().join("writer-key"), format!("{WRITER_KEY}\n")).unwrap();
        std::fs::write(files.path().join("reader-key"), format!("{READER_KEY}\n")).unwrap();
        // Projected service account tokens have no trailing newline.
        std::fs::write(files.path().join("cr-token"), CR_TOKEN).unwrap();

        let closed_port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let hang = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let hang_port = hang.local_addr().unwrap().port();
        let config = AdminConfig::parse(&config_yaml(
            &fake,
            closed_port,
            hang_port,
            files.path(),
            &team,
        ))
        .unwrap();
        let app = app_for(&config).await;
        World {
            fake,
            closed_port,
            _hang: hang,
            files,
            hook: Webhook { config, app },
            team,
        }
    }

    fn write_file(&self, name: &str, content: &str) {
        std::fs::write(self.files.path().join(name), content).unwrap();
    }

    /// The current payload of a secret of the default group, as a JSON map.
    fn stored(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.fake.secret(name).map(|s| {
            serde_json::from_str(s.payload().expect("a payload")).expect("a JSON object of strings")
        })
    }
}

/// A denial that names the store and shows no value: neither the author's,
/// nor a credential or token, nor any in `also`.
fn denied(answer: &Value, store: &str, also: &[&str]) -> String {
    assert!(
        !allowed(answer),
        "{store}: expected a denial: {}",
        shown(answer)
    );
    let msg = message(answer);
    assert!(msg.contains(&format!("store \"{store}\"")), "{msg}");
    assert!(!msg.contains(PRESET), "a denial shows a Secret value");
    for secret in [WRITER_KEY, READER_KEY, CR_TOKEN, ACCESS_TOKEN_PREFIX] {
        assert!(!msg.contains(secret), "a denial shows a credential");
    }
    for value in also {
        assert!(!msg.contains(value), "a denial shows a value");
    }
    msg
}

// ---------------------------------------------------------------------------
// The shared contract, with each login and secret group.

#[tokio::test]
async fn api_key_store_satisfies_the_store_contract() {
    let w = World::new().await;
    common::contract::run(w.store("ibm").await, "contract").await;
    let s = w.fake.secret("contract-shop-db").unwrap();
    assert_eq!(s.versions.len(), 2, "create, then put: two versions");
    assert_owned(&s.tags(), "db", "custom metadata");
    assert_eq!(s.tags().get("team").map(String::as_str), Some("payments"));
    assert_eq!(s.labels, [LABEL_MANAGED]);
    assert_eq!(s.description.as_deref(), Some("contract test"));
    assert_eq!(s.created_by, WRITER_ID);
    let raw = w.fake.secret("contract-shop-raw").unwrap();
    assert!(
        raw.payload() == Some("line one\nline \"two\" = ü"),
        "text is stored as it is"
    );
    assert!(!raw.labels.iter().any(|l| l == LABEL_BASE64));
    assert_eq!(w.fake.tokens_issued(), 1, "one token for the whole run");
    let log = w.fake.log();
    let grants: Vec<_> = log.iter().filter_map(|l| l.grant).collect();
    assert_eq!(grants, ["apikey"]);
    assert!(
        log.iter()
            .filter(|l| l.op != Op::Token)
            .all(|l| l.authorized && l.identity.as_deref() == Some(WRITER_ID)),
        "every request carried the writer's token: {log:?}"
    );
    assert_eq!(
        w.fake.count(Op::ListSecretGroups) + w.fake.count(Op::GetSecretGroup),
        0,
        "the default group needs no lookup"
    );
}

#[tokio::test]
async fn trusted_profile_and_group_stores_satisfy_the_store_contract() {
    let w = World::new().await;
    common::contract::run(w.store("ibm-tp").await, "tp").await;
    common::contract::run(w.store("ibm-tp-name").await, "tpn").await;
    for name in ["tp-shop-db", "tpn-shop-db"] {
        let s = w.fake.secret(name).unwrap();
        assert_owned(&s.tags(), "db", name);
        assert_eq!(s.created_by, format!("iam-{PROFILE_ID}"), "{name}");
    }
    let grants: Vec<_> = w
        .fake
        .log()
        .iter()
        .filter(|l| l.op == Op::Token && l.status == 200)
        .filter_map(|l| l.grant)
        .collect();
    assert_eq!(grants, ["cr-token", "cr-token"], "one token per store");

    // A group by name (looked up in the list) and by id (its name looked up).
    common::contract::run(w.store("ibm-team").await, "team").await;
    common::contract::run(w.store("ibm-team-id").await, "teamid").await;
    for name in ["team-shop-db", "teamid-shop-db"] {
        let s = w.fake.secret_in(&w.team, name).unwrap();
        assert_owned(&s.tags(), "db", name);
        assert_eq!(s.versions.len(), 2);
        assert!(w.fake.secret(name).is_none(), "not in the default group");
    }
    assert_eq!(w.fake.count(Op::ListSecretGroups), 1, "resolved once");
    assert_eq!(w.fake.count(Op::GetSecretGroup), 1, "resolved once");
}

// ---------------------------------------------------------------------------
// Tokens.

#[tokio::test]
async fn tokens_are_cached_refreshed_before_expiry_and_replaced_when_refused() {
    let w = World::new().await;
    w.fake.set_token_ttl(3);
    let sm = w.store("ibm").await;
    let name = sm.remote_name("k8s/shop/tokens").unwrap();
    assert!(sm.read(&name).await.unwrap().is_none());
    assert_eq!(w.fake.tokens_issued(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(sm.read(&name).await.unwrap().is_none());
    assert_eq!(w.fake.tokens_issued(), 1, "cached");

    // 80% of the 3 s lifetime gone: replaced before it expires.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(sm.read(&name).await.unwrap().is_none());
    assert_eq!(
        w.fake.tokens_issued(),
        2,
        "refreshed after 80% of its lifetime"
    );
    assert!(
        w.fake.log().iter().all(|l| l.status != 401),
        "an expired token was never sent"
    );

    // A refresh that fails keeps the current token while it is valid
    // (refresh due after 2.4 s, sent until 2.7 s, accepted until 3 s).
    tokio::time::sleep(Duration::from_millis(2420)).await;
    w.fake.fail(Op::Token, 500, 1);
    assert!(sm.read(&name).await.unwrap().is_none());
    assert_eq!(w.fake.pending_faults(), 0, "a refresh was tried");
    assert_eq!(w.fake.tokens_issued(), 2, "and the current token kept");

    // The due refresh succeeds next time.
    w.fake.set_token_ttl(3600);
    assert!(sm.read(&name).await.unwrap().is_none());
    assert_eq!(w.fake.tokens_issued(), 3);

    // A revoked token: refused once, replaced, the call succeeds.
    w.fake.revoke_tokens();
    w.fake.clear_log();
    assert!(sm.read(&name).await.unwrap().is_none());
    let statuses: Vec<(Op, u16)> = w.fake.log().iter().map(|l| (l.op, l.status)).collect();
    assert_eq!(
        statuses,
        [
            (Op::GetSecretByNameType, 401),
            (Op::Token, 200),
            (Op::GetSecretByNameType, 404)
        ]
    );
    assert_eq!(w.fake.tokens_issued(), 4);

    // IAM itself down, no valid token left: a clear Unavailable error.
    w.fake.revoke_tokens();
    w.fake.fail(Op::Token, 500, 1);
    let err = sm.read(&name).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Unavailable(_))
            && err
                .to_string()
                .contains("GetSecretByNameType k8s-shop-tokens")
            && err
                .to_string()
                .contains("IBM Cloud IAM token request: HTTP 500 BXNIM0500E"),
        "{err}"
    );
}

#[tokio::test]
async fn a_wrong_api_key_is_a_clear_denial_and_a_fixed_file_is_picked_up() {
    let w = World::new().await;
    let bogus = "bogus-api-key-9d2e71";
    w.write_file("writer-key", bogus);
    let (answer, _) = w.create(&mirrored(&["ibm"])).await;
    let msg = denied(&answer, "ibm", &[bogus]);
    assert!(
        msg.contains("permission denied")
            && msg.contains("IBM Cloud IAM refused the API key of auth.apiKeyFile")
            && msg.contains("BXNIM0415E: Provided API key could not be found."),
        "{msg}"
    );
    assert!(w.fake.all_names().is_empty());
    assert!(
        w.fake
            .log()
            .iter()
            .all(|l| l.op == Op::Token && l.status == 400),
        "nothing reached Secrets Manager"
    );

    // The file is re-read when a token is needed: the rotated key works.
    w.write_file("writer-key", &format!("{WRITER_KEY}\n"));
    let (answer, _) = w.create(&mirrored(&["ibm"])).await;
    assert!(allowed(&answer), "{answer}");
    assert!(w.fake.secret("k8s-shop-db").is_some());
}

#[tokio::test]
async fn a_compute_resource_token_the_profile_does_not_trust_is_a_clear_denial() {
    let w = World::new().await;
    let other = "eyJhbGciOiJSUzI1NiJ9.another-service-account.c2ln";
    w.write_file("cr-token", other);
    let (answer, _) = w.create(&mirrored(&["ibm-tp"])).await;
    let msg = denied(&answer, "ibm-tp", &[other]);
    assert!(
        msg.contains("permission denied")
            && msg.contains("IBM Cloud IAM refused the compute-resource token")
            && msg.contains(PROFILE_ID)
            && msg.contains("BXNIM0538E")
            && msg.contains("trust rule"),
        "{msg}"
    );
    assert!(w.fake.all_names().is_empty());

    // The projected token is re-read: a refreshed one works.
    w.write_file("cr-token", CR_TOKEN);
    let (answer, _) = w.create(&mirrored(&["ibm-tp"])).await;
    assert!(allowed(&answer), "{answer}");
    assert!(w.fake.secret("tp-shop-db").is_some());
}

// ---------------------------------------------------------------------------
// Backend specifics.

#[tokio::test]
async fn names_map_to_secrets_manager_rules() {
    let w = World::new().await;
    let sm = w.store("ibm").await;
    contract::assert_name_rules(
        &sm,
        ("k8s/shop/db.v1_x", "k8s-shop-db.v1_x"),
        &[
            ("shop/_db", "in that order"),
            ("shop/db.", "start and end"),
            ("a", "2 to 256"),
        ],
        256,
        "257",
    );

    // Through the pipeline: the mapped name, and a clear refusal.
    let (answer, _) = w.create(&mirrored(&["ibm"])).await;
    assert!(allowed(&answer), "{answer}");
    assert_eq!(w.fake.names_in(DEFAULT_GROUP), ["k8s-shop-db"]);
    let mut doc = mirrored_named("web", &["ibm"]);
    doc["metadata"]["annotations"]["secret-santa.io/mirror"] =
        json!("- store: ibm\n  key: shop/web#1\n");
    let (answer, _) = w.create(&doc).await;
    let msg = denied(&answer, "ibm", &[]);
    assert!(
        msg.contains("'#' is not allowed in IBM Secrets Manager secret names"),
        "{msg}"
    );
    assert_eq!(w.fake.names_in(DEFAULT_GROUP), ["k8s-shop-db"]);
}

#[tokio::test]
async fn binary_values_are_base64_with_the_documented_label() {
    let w = World::new().await;
    let sm = w.store("ibm").await;
    let me = owner("bin");
    let name = sm.remote_name("shop/bin").unwrap();
    let raw = SecretValue::new(vec![0, 159, 146, 150, 255]);
    let options = WriteOptions {
        content_type: "application/octet-stream",
        ..Default::default()
    };
    assert!(matches!(
        sm.create_if_absent(&name, &raw, &me, &options)
            .await
            .unwrap(),
        CreateOutcome::Created { version: Some(_) }
    ));
    let stored = w.fake.secret("shop-bin").unwrap();
    assert_eq!(stored.labels, [LABEL_MANAGED, LABEL_BASE64]);
    assert!(stored.payload() == Some("AJ+Slv8="));
    assert!(sm.read(&name).await.unwrap().unwrap().payload == raw);

    // Back to text: a new version, and the label goes.
    let text = SecretValue::new(b"now text".to_vec());
    let version = sm.put(&name, &text, &me, &options).await.unwrap();
    let stored = w.fake.secret("shop-bin").unwrap();
    assert_eq!(
        version.as_deref(),
        Some(stored.current().unwrap().id.as_str())
    );
    assert_eq!(stored.labels, [LABEL_MANAGED]);
    assert!(stored.payload() == Some("now text"));
    assert!(sm.read(&name).await.unwrap().unwrap().payload == text);

    // Limits are checked before anything is written.
    let long = WriteOptions {
        description: Some("d".repeat(1025)),
        ..json_options()
    };
    let err = sm
        .create_if_absent(
            &sm.remote_name("shop/long").unwrap(),
            &SecretValue::new(b"{}".to_vec()),
            &me,
            &long,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid(_)) && err.to_string().contains("1024"),
        "{err}"
    );
    assert!(w.fake.secret("shop-long").is_none());
}

#[tokio::test]
async fn concurrent_creates_write_one_secret() {
    let w = World::new().await;
    let sm = w.store("ibm").await;
    let me = owner("race");
    let name = sm.remote_name("k8s/shop/race").unwrap();
    let a = SecretValue::new(br#"{"password":"from-a"}"#.to_vec());
    let b = SecretValue::new(br#"{"password":"from-b"}"#.to_vec());
    let options = json_options();
    let (ra, rb) = tokio::join!(
        sm.create_if_absent(&name, &a, &me, &options),
        sm.create_if_absent(&name, &b, &me, &options)
    );
    let winner = match (ra.unwrap(), rb.unwrap()) {
        (CreateOutcome::Created { .. }, CreateOutcome::Exists(seen)) => {
            assert!(seen.payload == a, "b reads back a's value");
            "from-a"
        }
        (CreateOutcome::Exists(seen), CreateOutcome::Created { .. }) => {
            assert!(seen.payload == b, "a reads back b's value");
            "from-b"
        }
        (x, y) => panic!(
            "exactly one create wins: {} and {}",
            matches!(x, CreateOutcome::Created { .. }),
            matches!(y, CreateOutcome::Created { .. })
        ),
    };
    assert_eq!(w.fake.secret("k8s-shop-race").unwrap().versions.len(), 1);
    assert!(w.stored("k8s-shop-race").unwrap()["password"] == winner);
    assert_eq!(
        w.fake.tokens_issued(),
        1,
        "the second call waited for the token"
    );
}

#[tokio::test]
async fn service_errors_map_to_store_errors_with_short_messages() {
    let w = World::new().await;
    let sm = w.store("ibm").await;
    let name = sm.remote_name("faults/x").unwrap();
    assert!(sm.read(&name).await.unwrap().is_none());

    w.fake.fail(Op::GetSecretByNameType, 429, 1);
    let err = sm.read(&name).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Throttled(_))
            && err.to_string().contains(
                "GetSecretByNameType faults-x (secret group default): HTTP 429: too_many_requests"
            )
            && err.to_string().contains("(trace "),
        "{err}"
    );
    w.fake.fail(Op::GetSecretByNameType, 503, 1);
    let err = sm.read(&name).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    w.fake.fail(Op::GetSecretByNameType, 403, 1);
    let err = sm.read(&name).await.unwrap_err();
    assert!(
        matches!(err, StoreError::PermissionDenied(_))
            && err.to_string().contains("SecretsReader service role")
            && err.to_string().contains("secret group \"default\""),
        "{err}"
    );

    let payload = SecretValue::new(br#"{"password":"never-shown-7c1e"}"#.to_vec());
    w.fake.fail(Op::CreateSecret, 400, 1);
    let err = sm
        .create_if_absent(&name, &payload, &owner("x"), &json_options())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid(_))
            && err
                .to_string()
                .contains("CreateSecret faults-x (secret group default): HTTP 400: bad_request"),
        "{err}"
    );
    assert!(!err.to_string().contains("never-shown"));
    assert!(err.to_string().len() < 400, "{err}");
    w.fake.fail(Op::CreateSecret, 500, 1);
    let err = sm
        .create_if_absent(&name, &payload, &owner("x"), &json_options())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(w.fake.secret("faults-x").is_none());

    // Through the pipeline: throttled, then a retry converges.
    w.fake.fail(Op::CreateSecret, 429, 1);
    let (answer, _) = w.create(&mirrored(&["ibm"])).await;
    let msg = denied(&answer, "ibm", &[]);
    assert!(msg.contains("throttled"), "{msg}");
    let (answer, _) = w.create(&mirrored(&["ibm"])).await;
    assert!(allowed(&answer), "{answer}");
}

#[tokio::test]
async fn an_unknown_secret_group_is_named_and_nothing_is_written() {
    let w = World::new().await;
    let (answer, _) = w.create(&mirrored(&["ibm-nogroup"])).await;
    let msg = denied(&answer, "ibm-nogroup", &[]);
    assert!(
        msg.contains("secretGroup \"no-such-group\"")
            && msg.contains("has no secret group of this name")
            && msg.contains("team-a, team-b"),
        "{msg}"
    );
    assert!(w.fake.all_names().is_empty());
    assert_eq!(w.fake.count(Op::CreateSecret), 0);
}

// ---------------------------------------------------------------------------
// Through the review pipeline.

#[tokio::test]
async fn fresh_create_fills_the_secret_and_the_instance_holds_it_owned() {
    let w = World::new().await;
    let (answer, result) = w.create(&mirrored(&["ibm"])).await;
    assert!(allowed(&answer), "{answer}");
    let secret = as_secret(&result);
    let data = data_of(&secret);
    assert!(data.keys().eq(["password", "preset", "token"]));
    assert!(data["preset"] == PRESET, "the author's value is kept");

    let s = w.fake.secret("k8s-shop-db").unwrap();
    assert_eq!(s.versions.len(), 1, "one version");
    assert!(
        w.stored("k8s-shop-db").unwrap() == data,
        "the instance holds the Secret's values"
    );
    assert_owned(&s.tags(), "db", "custom metadata");
    assert_eq!(
        s.tags().get("team").map(String::as_str),
        Some("platform"),
        "the store's extra tags"
    );
    assert_eq!(s.labels, [LABEL_MANAGED]);
    assert_eq!(s.group_id, DEFAULT_GROUP);
    assert_eq!(s.state, "active");
    let annotations = annotations_of(&secret);
    assert_eq!(annotations["secret-santa.io/mirrored-to"], "ibm");
    assert_eq!(
        annotations["secret-santa.io/mirrored-versions"],
        format!("ibm@{}", s.current().unwrap().id)
    );
    // The create is atomic on the server: no probe before it.
    let ops: Vec<Op> = w.fake.log().iter().map(|l| l.op).collect();
    assert_eq!(
        ops,
        [Op::Token, Op::CreateSecret, Op::GetSecretVersionMetadata]
    );
}

#[tokio::test]
async fn a_retried_create_converges_on_the_stored_value() {
    let w = World::new().await;
    let doc = mirrored(&["ibm"]);
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
    let s = w.fake.secret("k8s-shop-db").unwrap();
    assert_eq!(s.versions.len(), 1, "no second version");
    assert!(w.stored("k8s-shop-db").unwrap() == first);
    assert_eq!(w.fake.count(Op::CreateSecretVersion), 0);
    assert_eq!(w.fake.count(Op::UpdateSecretMetadata), 0);
    let conflicts = w
        .fake
        .log()
        .iter()
        .filter(|l| l.op == Op::CreateSecret && l.status == 409)
        .count();
    assert_eq!(conflicts, 1, "the second create was refused by the service");

    // A create racing the first one reads the owned entry back.
    let sm = w.store("ibm").await;
    let name = sm.remote_name("k8s/shop/db").unwrap();
    let me = Ownership {
        key_set: s.tags()["secret-santa-key-set"].clone(),
        ..owner("db")
    };
    let fresh = SecretValue::new(br#"{"password":"a-newer-value"}"#.to_vec());
    match sm
        .create_if_absent(&name, &fresh, &me, &json_options())
        .await
        .unwrap()
    {
        CreateOutcome::Exists(entry) => {
            assert_eq!(entry.owner(), Some(me));
            assert_eq!(entry.version, Some(s.current().unwrap().id.clone()));
            let stored: BTreeMap<String, String> =
                serde_json::from_slice(entry.payload.expose()).unwrap();
            assert!(stored == first, "the stored value is read back");
        }
        CreateOutcome::Created { .. } => panic!("create-if-absent overwrote an entry"),
    }
    assert_eq!(w.fake.secret("k8s-shop-db").unwrap().versions.len(), 1);
}

#[tokio::test]
async fn unowned_entries_are_refused_and_left_alone() {
    let w = World::new().await;
    let theirs = w.fake.seed(
        "k8s-shop-db",
        r#"{"password":"theirs-sm"}"#,
        &["dev"],
        &[("owner", "team-x")],
    );
    let (answer, _) = w.create(&mirrored(&["ibm"])).await;
    let msg = denied(&answer, "ibm", &["theirs-sm"]);
    assert!(
        msg.contains("k8s-shop-db")
            && msg.contains("already exists")
            && msg.contains("nobody we know")
            && msg.contains("adoption"),
        "{msg}"
    );
    let s = w.fake.secret("k8s-shop-db").unwrap();
    assert_eq!(s.id, theirs);
    assert_eq!(s.versions.len(), 1, "no version added");
    assert!(s.payload() == Some(r#"{"password":"theirs-sm"}"#));
    assert_eq!(s.labels, ["dev"], "labels untouched");
    assert_eq!(
        s.tags(),
        BTreeMap::from([("owner".to_owned(), "team-x".to_owned())]),
        "metadata untouched"
    );

    // Another Secret's entry is refused just the same, naming its owner.
    let (answer, _) = w.create(&mirrored_named("web", &["ibm"])).await;
    assert!(allowed(&answer), "{answer}");
    let mut doc = mirrored_named("db2", &["ibm"]);
    doc["metadata"]["annotations"]["secret-santa.io/mirror"] =
        json!("- store: ibm\n  key: shop/web\n  keys: [password, token, preset]\n");
    let (answer, _) = w.create(&doc).await;
    let msg = denied(&answer, "ibm", &[]);
    assert!(
        msg.contains("owned by Secret shop/web of cluster test-cluster"),
        "{msg}"
    );
    assert_eq!(w.fake.secret("k8s-shop-web").unwrap().versions.len(), 1);
}

#[tokio::test]
async fn a_destroyed_secret_is_denied_with_a_hint() {
    let w = World::new().await;
    let doc = mirrored(&["ibm"]);
    let (answer, first) = w.create(&doc).await;
    assert!(allowed(&answer), "{answer}");
    let first = data_of(&as_secret(&first));
    // Its expiration date passed: the value is gone, the name is taken.
    w.fake.destroy(DEFAULT_GROUP, "k8s-shop-db");
    let (answer, _) = w.create(&doc).await;
    let values: Vec<&str> = first.values().map(String::as_str).collect();
    let msg = denied(&answer, "ibm", &values);
    let id = w.fake.secret("k8s-shop-db").unwrap().id;
    assert!(
        msg.contains("scheduled for deletion or soft-deleted")
            && msg.contains("is destroyed")
            && msg.contains(&format!("ibmcloud secrets-manager secret-delete --id {id}")),
        "{msg}"
    );
    let s = w.fake.secret("k8s-shop-db").unwrap();
    assert_eq!(s.versions.len(), 1, "never written to");
    assert_eq!(w.fake.count(Op::CreateSecretVersion), 0);
}

#[tokio::test]
async fn a_role_that_cannot_write_is_a_clear_denial() {
    let w = World::new().await;
    let (answer, _) = w.create(&mirrored(&["ibm-reader"])).await;
    let msg = denied(&answer, "ibm-reader", &[]);
    assert!(
        msg.contains("permission denied")
            && msg.contains("CreateSecret k8s-shop-db (secret group default): HTTP 403: forbidden")
            && msg.contains(READER_ID)
            && msg.contains("needs the Writer service role"),
        "{msg}"
    );
    assert!(w.fake.all_names().is_empty(), "nothing written");
}

#[tokio::test]
async fn an_instance_that_is_down_or_silent_is_denied_within_the_deadline() {
    let w = World::new().await;
    for (store, cause) in [
        (
            "ibm-down",
            format!("connection refused at http://127.0.0.1:{}", w.closed_port),
        ),
        ("ibm-hang", "no answer".to_owned()),
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
    assert!(w.fake.all_names().is_empty());
}

#[tokio::test]
async fn dry_run_touches_nothing() {
    let w = World::new().await;
    let doc = mirrored(&["ibm", "ibm-tp"]);
    let answer = w.send(&review("CREATE", Some(&doc), None, true)).await;
    assert!(allowed(&answer), "{answer}");
    assert!(
        warnings(&answer).iter().any(|w| w.contains("not written")),
        "{}",
        shown(&answer)
    );
    assert!(w.fake.log().is_empty(), "not a request, not even a token");
    assert!(w.fake.all_names().is_empty());
}

#[tokio::test]
async fn regenerate_adds_a_version_and_reports_its_id() {
    let w = World::new().await;
    let (answer, old) = w.create(&mirrored(&["ibm"])).await;
    assert!(allowed(&answer), "{answer}");
    let before = data_of(&as_secret(&old));
    let first_version = w
        .fake
        .secret("k8s-shop-db")
        .unwrap()
        .current()
        .unwrap()
        .id
        .clone();
    let mut new = old.clone();
    new["metadata"]["annotations"]["secret-santa.io/regenerate"] = json!("password");
    let answer = w.send(&update(&new, &old)).await;
    assert!(allowed(&answer), "{answer}");
    let after = data_of(&as_secret(&apply(&new, &answer)));
    assert!(after["password"] != before["password"] && after["token"] == before["token"]);
    let s = w.fake.secret("k8s-shop-db").unwrap();
    assert_eq!(s.versions.len(), 2, "a new version");
    assert_eq!(s.versions[0].id, first_version, "the old one is kept");
    assert!(
        w.stored("k8s-shop-db").unwrap() == after,
        "the instance follows the regenerated Secret"
    );
    assert_owned(&s.tags(), "db", "ownership kept");
    assert_eq!(s.labels, [LABEL_MANAGED]);
    let patched = apply(&new, &answer);
    assert_eq!(
        patched["metadata"]["annotations"]["secret-santa.io/mirrored-versions"],
        json!(format!("ibm@{}", s.versions[1].id)),
        "the new version id is on the Secret"
    );

    // `put` reports the version id Secrets Manager gave the new version.
    let sm = w.store("ibm").await;
    let name = sm.remote_name("k8s/shop/db").unwrap();
    let me = Ownership {
        key_set: s.tags()["secret-santa-key-set"].clone(),
        ..owner("db")
    };
    let id = sm
        .put(
            &name,
            &SecretValue::new(serde_json::to_vec(&after).unwrap()),
            &me,
            &json_options(),
        )
        .await
        .unwrap()
        .expect("Secrets Manager versions values");
    let current = w.fake.secret("k8s-shop-db").unwrap();
    assert_eq!(current.current().unwrap().id, id);
    assert_eq!(id.len(), 36, "a version UUID");
    assert_eq!(
        sm.read(&name).await.unwrap().unwrap().version.as_deref(),
        Some(id.as_str())
    );
}

// ---------------------------------------------------------------------------
// Config and credentials.

#[tokio::test]
async fn settings_and_credential_files_fail_the_build_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let present = dir.path().join("present");
    std::fs::write(&present, "x\n").unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let key = |file: &Path| json!({"method": "apiKey", "apiKeyFile": file});
    let url =
        "https://0b5571f7-21e6-42b7-91c5-3f5ac9793a46.us-south.secrets-manager.appdomain.cloud";
    let cases = [
        (
            json!({"instanceUrl": url, "auth": key(&missing)}),
            "auth.apiKeyFile",
        ),
        (json!({"instanceUrl": url, "auth": key(&empty)}), "is empty"),
        (
            json!({"instanceUrl": url, "caFile": missing, "auth": key(&present)}),
            "caFile",
        ),
        (
            json!({"instanceUrl": url, "auth": {"method": "trustedProfile", "trustedProfileId": PROFILE_ID, "crTokenFile": missing}}),
            "auth.crTokenFile",
        ),
        (
            json!({"instanceUrl": url, "auth": {"method": "trustedProfile", "crTokenFile": present}}),
            "trustedProfileId or trustedProfileName",
        ),
        (
            json!({"instanceUrl": url, "kmsKeyId": "k", "auth": key(&present)}),
            "kmsKeyId",
        ),
        (
            json!({"instanceUrl": "http://x.us-south.secrets-manager.appdomain.cloud", "auth": key(&present)}),
            "instanceUrl",
        ),
        (
            json!({"instanceUrl": url, "iamEndpoint": "https://iam.cloud.ibm.com/v1", "auth": key(&present)}),
            "iamEndpoint",
        ),
        (
            json!({"instanceUrl": url, "secretGroup": "", "auth": key(&present)}),
            "secretGroup",
        ),
    ];
    for (settings, needle) in cases {
        let err = match store::build(&store_config("sm", "ibm-secrets-manager", settings.clone()))
            .await
        {
            Ok(_) => panic!("{settings}: built"),
            Err(e) => e,
        };
        assert!(err.contains(needle), "{settings}: {err}");
    }
    let built = store::build(&store_config(
        "sm",
        "ibm-secrets-manager",
        json!({
            "instanceUrl": format!("{url}/"),
            "secretGroup": "team-a",
            "auth": key(&present),
        }),
    ))
    .await;
    assert!(built.is_ok(), "contacts nothing when built");

    // An admin config with an IBM store is checked at load.
    let store = |extra: &str| {
        format!(
            "clusterId: c\nstores:\n  - name: sm\n    type: ibm-secrets-manager\n    namespaces: ['*']\n{extra}"
        )
    };
    for (extra, expected) in [
        (
            "    instanceURL: https://x.secrets-manager.appdomain.cloud\n    auth: { method: apiKey, apiKeyFile: /k }\n",
            "instanceURL",
        ),
        (
            "    auth: { method: apiKey, apiKeyFile: /k }\n",
            "instanceUrl",
        ),
        (
            "    instanceUrl: https://x.secrets-manager.appdomain.cloud\n    secretGrup: g\n    auth: { method: apiKey, apiKeyFile: /k }\n",
            "secretGrup",
        ),
        (
            "    instanceUrl: https://x.secrets-manager.appdomain.cloud\n    auth: { method: password }\n",
            "password",
        ),
        (
            "    instanceUrl: https://x.secrets-manager.appdomain.cloud\n    auth: { method: apiKey, apiKeyPath: /k }\n",
            "apiKeyPath",
        ),
        (
            "    instanceUrl: https://x.secrets-manager.appdomain.cloud\n",
            "auth",
        ),
    ] {
        let err = AdminConfig::parse(&store(extra)).unwrap_err();
        assert!(err.contains(expected), "{extra}: {err}");
    }
    let ok = AdminConfig::parse(&store(
        "    instanceUrl: https://x.private.eu-de.secrets-manager.appdomain.cloud/\n    secretGroup: d898bb90-82f6-4d61-b5cc-b079b66cfa76\n    auth: { method: trustedProfile, trustedProfileName: webhook }\n",
    ));
    assert!(ok.is_ok(), "{ok:?}");
}
