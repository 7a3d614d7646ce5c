//! The `azure-key-vault` store on a fake Key Vault and a fake Entra ID
//! (`common/azure_fake.rs`, one HTTPS server with a test CA, written from
//! the public REST reference: no Key Vault emulator can be installed here),
//! with the real Azure SDK and the real credential types: the bearer
//! challenge, client-secret, workload-identity and certificate logins. The
//! shared store contract, then CONTRACT §4 through the whole review
//! pipeline: fresh create, retried create, unowned entries, soft delete
//! (denied, or recovered when allowed), permissions, a vault that is down
//! or silent, TLS, dry run, regeneration, settings. Values are compared
//! with `assert!(a == b)` so a failure never prints them, and every denial
//! is checked for the values it must not show.
#![cfg(feature = "azure")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/azure_fake.rs"]
mod azure_fake;
mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_fake::{AzureFake, Op, Perms, TENANT, VAULT_URL, client_certificate};
use common::*;
use secret_santa::config::AdminConfig;
use secret_santa::secret::SecretValue;
use secret_santa::store::azure::{ENCODING_BASE64, TAG_ENCODING};
use secret_santa::store::{self, CreateOutcome, Ownership, StoreError, Stores, WriteOptions};
use secret_santa::{App, Reviewer};
use serde_json::{Value, json};

/// The service principal the webhook writes with (Key Vault Secrets
/// Officer), one that may only read, a workload identity and a certificate
/// client.
const WRITER: &str = "11111111-1111-4111-8111-111111111111";
const WRITER_SECRET: &str = "writer-secret-4f1c9a77";
const READER: &str = "22222222-2222-4222-8222-222222222222";
const READER_SECRET: &str = "reader-secret-8d2b7e31";
const WORKLOAD: &str = "33333333-3333-4333-8333-333333333333";
const SA_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.fake-projected-service-account-token.c2ln";
const CERT_CLIENT: &str = "44444444-4444-4444-8444-444444444444";

struct World {
    fake: AzureFake,
    closed_port: u16,
    /// Accepts connections (the kernel's backlog) and never answers.
    _hang: TcpListener,
    hang_port: u16,
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

fn config_yaml(fake: &AzureFake, closed: u16, hang: u16, files: &Path) -> String {
    let f = |name: &str| files.join(name).display().to_string();
    let endpoint = &fake.endpoint;
    let ca = fake.ca_file.display();
    let settings = |endpoint: &str, deadline: &str| {
        format!(
            "    type: azure-key-vault\n    vaultUrl: {VAULT_URL}\n    endpoint: {endpoint}\n    authorityHost: {authority}\n    caFile: {ca}\n    namespaces: [\"shop\"]\n    deadline: {deadline}\n",
            authority = fake.endpoint,
        )
    };
    let writer = format!(
        "{{ method: clientSecret, tenantId: \"{TENANT}\", clientId: \"{WRITER}\", clientSecretFile: \"{}\" }}",
        f("writer-secret")
    );
    format!(
        r#"
clusterId: test-cluster
limits: {{ requestDeadline: 6s }}
stores:
  - name: akv
{akv}    auth: {writer}
    prefix: "k8s/"
    tags: {{ team: platform }}
  - name: akv-recover
{akv}    auth: {writer}
    prefix: "k8s/"
    tags: {{ team: platform }}
    recoverSoftDeleted: true
  - name: akv-wi
{akv}    auth: {{ method: workloadIdentity, tenantId: "{TENANT}", clientId: "{WORKLOAD}", tokenFile: "{token}" }}
    prefix: "wi/"
  - name: akv-cert
{akv}    auth: {{ method: clientCertificate, tenantId: "{TENANT}", clientId: "{CERT_CLIENT}", certificateFile: "{cert}" }}
    prefix: "cert/"
  - name: akv-reader
{akv}    auth: {{ method: clientSecret, tenantId: "{TENANT}", clientId: "{READER}", clientSecretFile: "{reader}" }}
    prefix: "k8s/"
  - name: akv-down
{down}    auth: {writer}
  - name: akv-hang
{hang_store}    auth: {writer}
  - name: akv-untrusted
    type: azure-key-vault
    vaultUrl: {VAULT_URL}
    endpoint: {endpoint}
    authorityHost: {endpoint}
    auth: {writer}
    namespaces: ["shop"]
    deadline: 2s
"#,
        akv = settings(endpoint.as_str(), "3s"),
        down = settings(&format!("https://127.0.0.1:{closed}"), "1s"),
        hang_store = settings(&format!("https://127.0.0.1:{hang}"), "1s"),
        token = f("sa-token"),
        cert = f("client.pem"),
        reader = f("reader-secret"),
    )
}

async fn app_for(config: &AdminConfig) -> Arc<App> {
    let stores = Stores::from_config(config).await.unwrap();
    App::new(Reviewer::new(config.clone(), stores), 3 * 1024 * 1024)
}

impl World {
    async fn new() -> World {
        let fake = AzureFake::start();
        fake.register_client_secret(WRITER, WRITER_SECRET, Perms::OFFICER);
        fake.register_client_secret(READER, READER_SECRET, Perms::READER);
        fake.register_federated(WORKLOAD, SA_TOKEN, Perms::OFFICER);
        let files = tempfile::tempdir().unwrap();
        std::fs::write(
            files.path().join("writer-secret"),
            format!("{WRITER_SECRET}\n"),
        )
        .unwrap();
        std::fs::write(
            files.path().join("reader-secret"),
            format!("{READER_SECRET}\n"),
        )
        .unwrap();
        // Projected service account tokens have no trailing newline.
        std::fs::write(files.path().join("sa-token"), SA_TOKEN).unwrap();
        let cert = client_certificate(&files.path().join("client.pem"));
        fake.register_certificate(CERT_CLIENT, &cert, Perms::OFFICER);

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
            hang_port,
            files,
            hook: Webhook { config, app },
        }
    }

    fn write_file(&self, name: &str, content: &str) {
        std::fs::write(self.files.path().join(name), content).unwrap();
    }

    /// The current value of a secret in the fake vault, as a JSON map.
    fn stored(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.fake
            .current(name)
            .map(|v| serde_json::from_str(&v.value).expect("a JSON object of strings"))
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
    for secret in [WRITER_SECRET, READER_SECRET, SA_TOKEN] {
        assert!(!msg.contains(secret), "a denial shows a credential");
    }
    for value in also {
        assert!(!msg.contains(value), "a denial shows a value");
    }
    msg
}

// ---------------------------------------------------------------------------
// The shared contract, with each login.

#[tokio::test]
async fn client_secret_store_satisfies_the_store_contract() {
    let w = World::new().await;
    common::contract::run(w.store("akv").await, "contract").await;
    let versions = w.fake.versions("contract-shop-db");
    assert_eq!(versions.len(), 2, "create, then put: two versions");
    let current = versions.last().unwrap();
    assert_owned(&current.tags, "db", "tags");
    assert_eq!(
        current.tags.get("team").map(String::as_str),
        Some("payments")
    );
    assert_eq!(current.content_type.as_deref(), Some("application/json"));
    let raw = w.fake.current("contract-shop-raw").unwrap();
    assert_eq!(raw.content_type.as_deref(), Some("text/plain"));
    assert!(
        raw.value == "line one\nline \"two\" = ü",
        "text is stored as it is"
    );
    assert!(!raw.tags.contains_key(TAG_ENCODING));
    let grants: Vec<_> = w.fake.log().iter().filter_map(|l| l.grant).collect();
    assert_eq!(grants, ["client_secret"], "one token for the whole run");
}

#[tokio::test]
async fn workload_identity_and_certificate_stores_satisfy_the_store_contract() {
    let w = World::new().await;
    common::contract::run(w.store("akv-wi").await, "wi").await;
    common::contract::run(w.store("akv-cert").await, "cert").await;
    for (name, client) in [("wi-shop-db", WORKLOAD), ("cert-shop-db", CERT_CLIENT)] {
        assert_owned(&w.fake.current(name).unwrap().tags, "db", name);
        assert!(
            w.fake
                .log()
                .iter()
                .any(|l| l.op == Op::SetSecret && l.client.as_deref() == Some(client)),
            "{name} was written by {client}"
        );
    }
    let mut grants: Vec<_> = w
        .fake
        .log()
        .iter()
        .filter(|l| l.op == Op::Token && l.status == 200)
        .filter_map(|l| l.grant)
        .collect();
    grants.sort_unstable();
    assert_eq!(grants, ["certificate", "federated"]);
}

// ---------------------------------------------------------------------------
// Backend specifics.

#[tokio::test]
async fn the_bearer_challenge_is_answered_once_and_the_token_reused() {
    let w = World::new().await;
    for name in ["a", "b", "c"] {
        let (answer, _) = w.create(&mirrored_named(name, &["akv"])).await;
        assert!(allowed(&answer), "{answer}");
        assert!(w.fake.current(&format!("k8s-shop-{name}")).is_some());
    }
    assert_eq!(w.fake.tokens_issued(), 1, "one token for three reviews");
    let log = w.fake.log();
    let vault: Vec<_> = log.iter().filter(|l| l.op != Op::Token).collect();
    // The first request goes without a token (its body held back) and is
    // challenged; every later one carries the token.
    assert_eq!(vault[0].status, 401);
    assert!(!vault[0].authorized);
    assert!(vault[1..].iter().all(|l| l.authorized), "{log:?}");
    assert!(
        vault
            .iter()
            .all(|l| l.host == "fake.vault.azure.net"
                && l.api_version.as_deref() == Some("2025-07-01")),
        "the vault's name in Host and the SDK's api-version: {log:?}"
    );
    let token = log.iter().find(|l| l.op == Op::Token).unwrap();
    assert_eq!(token.path, format!("/{TENANT}/oauth2/v2.0/token"));
    assert_eq!(token.client.as_deref(), Some(WRITER));
}

#[tokio::test]
async fn names_map_to_key_vault_rules() {
    let w = World::new().await;
    let kv = w.store("akv").await;
    contract::assert_name_rules(
        &kv,
        ("k8s/shop/db.v1_x", "k8s-shop-db-v1-x"),
        &[],
        127,
        "127",
    );

    // Through the pipeline: the mapped name, and a clear refusal.
    let (answer, _) = w.create(&mirrored(&["akv"])).await;
    assert!(allowed(&answer), "{answer}");
    assert_eq!(w.fake.names(), ["k8s-shop-db"]);
    let mut doc = mirrored_named("web", &["akv"]);
    doc["metadata"]["annotations"]["secret-santa.io/mirror"] =
        json!("- store: akv\n  key: shop/web#1\n");
    let (answer, _) = w.create(&doc).await;
    let msg = denied(&answer, "akv", &[]);
    assert!(
        msg.contains("'#' is not allowed in Key Vault secret names"),
        "{msg}"
    );
    assert_eq!(w.fake.names(), ["k8s-shop-db"]);
}

#[tokio::test]
async fn binary_values_tags_and_sizes() {
    let w = World::new().await;
    let kv = w.store("akv").await;
    let me = owner("bin");
    let name = kv.remote_name("shop/bin").unwrap();
    let raw = SecretValue::new(vec![0, 159, 146, 150, 255]);
    let options = WriteOptions {
        content_type: "application/octet-stream",
        ..Default::default()
    };
    assert!(matches!(
        kv.create_if_absent(&name, &raw, &me, &options)
            .await
            .unwrap(),
        CreateOutcome::Created { version: Some(_) }
    ));
    let stored = w.fake.current("shop-bin").unwrap();
    assert_eq!(
        stored.tags.get(TAG_ENCODING).map(String::as_str),
        Some(ENCODING_BASE64),
        "binary values are stored base64, as az keyvault secret set --encoding base64 does"
    );
    assert!(stored.value == "AJ+Slv8=");
    assert!(kv.read(&name).await.unwrap().unwrap().payload == raw);

    let huge = SecretValue::new(vec![b'x'; 25 * 1024 + 1]);
    let err = kv
        .create_if_absent(&kv.remote_name("shop/huge").unwrap(), &huge, &me, &options)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid(_)) && err.to_string().contains("25600"),
        "{err}"
    );
    let many = WriteOptions {
        tags: (0..11)
            .map(|i| (format!("tag-{i}"), "v".to_owned()))
            .collect(),
        ..json_options()
    };
    let err = kv
        .create_if_absent(
            &kv.remote_name("shop/tags").unwrap(),
            &SecretValue::new(b"{}".to_vec()),
            &me,
            &many,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid(_))
            && err.to_string().contains("16 tags")
            && err.to_string().contains("at most 15"),
        "{err}"
    );
    assert!(w.fake.current("shop-huge").is_none() && w.fake.current("shop-tags").is_none());
}

#[tokio::test]
async fn service_errors_map_to_store_errors_with_short_messages() {
    let w = World::new().await;
    let kv = w.store("akv").await;
    let name = kv.remote_name("faults/x").unwrap();
    // Warm up: the challenge and the token.
    assert!(kv.read(&name).await.unwrap().is_none());

    // Two attempts per call: the SDK retries throttling once.
    w.fake.fail(Op::GetSecret, 429, 2);
    let err = kv.read(&name).await.unwrap_err();
    assert!(matches!(err, StoreError::Throttled(_)), "{err}");
    assert!(
        err.to_string()
            .contains("GetSecret faults-x: HTTP 429 Throttled"),
        "{err}"
    );
    assert_eq!(w.fake.pending_faults(), 0, "the SDK tried exactly twice");

    // One transient failure is retried away.
    w.fake.fail(Op::GetSecret, 503, 1);
    assert!(kv.read(&name).await.unwrap().is_none());
    assert_eq!(w.fake.pending_faults(), 0);

    w.fake.fail(Op::GetSecret, 500, 2);
    let err = kv.read(&name).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");

    w.fake.fail(Op::GetSecret, 403, 1);
    let err = kv.read(&name).await.unwrap_err();
    assert!(
        matches!(err, StoreError::PermissionDenied(_))
            && err.to_string().contains("GetSecret faults-x")
            && err.to_string().contains("Key Vault Secrets Officer"),
        "{err}"
    );

    // A 401 without a challenge on an authorized request: the token was
    // not accepted.
    w.fake.fail(Op::GetSecret, 401, 1);
    let err = kv.read(&name).await.unwrap_err();
    assert!(
        matches!(err, StoreError::PermissionDenied(_)) && err.to_string().contains(WRITER),
        "{err}"
    );

    let payload = SecretValue::new(br#"{"password":"never-shown-7c1e"}"#.to_vec());
    w.fake.fail(Op::SetSecret, 400, 1);
    let err = kv
        .create_if_absent(&name, &payload, &owner("x"), &json_options())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid(_))
            && err
                .to_string()
                .contains("SetSecret faults-x: HTTP 400 BadParameter"),
        "{err}"
    );
    assert!(!err.to_string().contains("never-shown"));
    assert!(err.to_string().len() < 400, "{err}");
    assert!(w.fake.current("faults-x").is_none());
}

#[tokio::test]
async fn a_disabled_secret_is_invalid_and_left_alone() {
    let w = World::new().await;
    let (answer, _) = w.create(&mirrored(&["akv"])).await;
    assert!(allowed(&answer), "{answer}");
    w.fake.disable("k8s-shop-db");
    let (answer, _) = w.create(&mirrored(&["akv"])).await;
    let msg = denied(&answer, "akv", &[]);
    assert!(
        msg.contains("invalid request")
            && msg.contains("is disabled")
            && msg.contains("az keyvault secret set-attributes --vault-name fake --name k8s-shop-db --enabled true"),
        "{msg}"
    );
    assert_eq!(w.fake.versions("k8s-shop-db").len(), 1);
}

#[tokio::test]
async fn concurrent_creates_in_one_process_write_one_version() {
    let w = World::new().await;
    let kv = w.store("akv").await;
    let me = owner("race");
    let name = kv.remote_name("k8s/shop/race").unwrap();
    let a = SecretValue::new(br#"{"password":"from-a"}"#.to_vec());
    let b = SecretValue::new(br#"{"password":"from-b"}"#.to_vec());
    let options = json_options();
    let (ra, rb) = tokio::join!(
        kv.create_if_absent(&name, &a, &me, &options),
        kv.create_if_absent(&name, &b, &me, &options)
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
    assert_eq!(w.fake.versions("k8s-shop-race").len(), 1);
    assert!(w.stored("k8s-shop-race").unwrap()["password"] == winner);
}

// ---------------------------------------------------------------------------
// Through the review pipeline.

#[tokio::test]
async fn fresh_create_fills_the_secret_and_the_vault_holds_it_owned() {
    let w = World::new().await;
    let (answer, result) = w.create(&mirrored(&["akv"])).await;
    assert!(allowed(&answer), "{answer}");
    let secret = as_secret(&result);
    let data = data_of(&secret);
    assert!(data.keys().eq(["password", "preset", "token"]));
    assert!(data["preset"] == PRESET, "the author's value is kept");

    let versions = w.fake.versions("k8s-shop-db");
    assert_eq!(versions.len(), 1, "one version");
    let current = &versions[0];
    assert!(
        w.stored("k8s-shop-db").unwrap() == data,
        "the vault holds the Secret's values"
    );
    assert_eq!(current.content_type.as_deref(), Some("application/json"));
    assert_owned(&current.tags, "db", "tags");
    assert_eq!(
        current.tags.get("team").map(String::as_str),
        Some("platform"),
        "the store's extra tags"
    );
    assert!(current.enabled);
    assert_eq!(
        annotations_of(&secret)["secret-santa.io/mirrored-to"],
        "akv"
    );
}

#[tokio::test]
async fn a_retried_create_converges_on_the_stored_value() {
    let w = World::new().await;
    let doc = mirrored(&["akv"]);
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
    assert_eq!(w.fake.versions("k8s-shop-db").len(), 1, "no second version");
    assert!(w.stored("k8s-shop-db").unwrap() == first);

    // A create racing the first one (its probe saw nothing) checks first
    // and reads the owned entry back.
    let kv = w.store("akv").await;
    let name = kv.remote_name("k8s/shop/db").unwrap();
    let me = Ownership {
        key_set: w.fake.current("k8s-shop-db").unwrap().tags["secret-santa-key-set"].clone(),
        ..owner("db")
    };
    let fresh = SecretValue::new(br#"{"password":"a-newer-value"}"#.to_vec());
    match kv
        .create_if_absent(&name, &fresh, &me, &json_options())
        .await
        .unwrap()
    {
        CreateOutcome::Exists(entry) => {
            assert_eq!(entry.owner(), Some(me));
            assert_eq!(
                entry.version,
                Some(w.fake.current("k8s-shop-db").unwrap().id)
            );
            let stored: BTreeMap<String, String> =
                serde_json::from_slice(entry.payload.expose()).unwrap();
            assert!(stored == first, "the stored value is read back");
        }
        CreateOutcome::Created { .. } => panic!("create-if-absent overwrote an entry"),
    }
    assert_eq!(w.fake.versions("k8s-shop-db").len(), 1);
}

#[tokio::test]
async fn unowned_entries_are_refused_and_left_alone() {
    let w = World::new().await;
    let theirs = w.fake.seed(
        "k8s-shop-db",
        r#"{"password":"theirs-kv"}"#,
        &[("owner", "team-x")],
    );
    let (answer, _) = w.create(&mirrored(&["akv"])).await;
    let msg = denied(&answer, "akv", &["theirs-kv"]);
    assert!(
        msg.contains("k8s-shop-db")
            && msg.contains("already exists")
            && msg.contains("nobody we know")
            && msg.contains("adoption"),
        "{msg}"
    );
    let versions = w.fake.versions("k8s-shop-db");
    assert_eq!(versions.len(), 1, "no version added");
    assert_eq!(versions[0].id, theirs);
    assert!(versions[0].value == r#"{"password":"theirs-kv"}"#);

    // Another Secret's entry is refused just the same, naming its owner.
    let (answer, _) = w.create(&mirrored_named("web", &["akv"])).await;
    assert!(allowed(&answer), "{answer}");
    let mut doc = mirrored_named("db2", &["akv"]);
    doc["metadata"]["annotations"]["secret-santa.io/mirror"] =
        json!("- store: akv\n  key: shop/web\n  keys: [password, token, preset]\n");
    let (answer, _) = w.create(&doc).await;
    let msg = denied(&answer, "akv", &[]);
    assert!(
        msg.contains("owned by Secret shop/web of cluster test-cluster"),
        "{msg}"
    );
    assert_eq!(w.fake.versions("k8s-shop-web").len(), 1);
}

#[tokio::test]
async fn a_soft_deleted_secret_is_denied_with_a_hint_or_recovered_when_allowed() {
    let w = World::new().await;
    let doc = mirrored(&["akv"]);
    let (answer, first) = w.create(&doc).await;
    assert!(allowed(&answer), "{answer}");
    let first = data_of(&as_secret(&first));
    // `az keyvault secret delete`: the name stays reserved while recoverable.
    w.fake.soft_delete("k8s-shop-db");
    let (answer, _) = w.create(&doc).await;
    let values: Vec<&str> = first.values().map(String::as_str).collect();
    let msg = denied(&answer, "akv", &values);
    assert!(
        msg.contains("scheduled for deletion or soft-deleted")
            && msg.contains("deleted but recoverable")
            && msg.contains("az keyvault secret recover --vault-name fake --name k8s-shop-db")
            && msg.contains("az keyvault secret purge --vault-name fake --name k8s-shop-db")
            && msg.contains("recoverSoftDeleted"),
        "{msg}"
    );
    assert!(
        w.fake.is_deleted("k8s-shop-db"),
        "never silently overwritten"
    );
    assert_eq!(w.fake.count(Op::RecoverDeletedSecret), 0);

    // A store that may recover: recovered (completing after a few reads),
    // then its owned value is reused.
    w.fake.set_recovery_lag(2);
    let recovering = mirrored(&["akv-recover"]);
    let (answer, again) = w.create(&recovering).await;
    assert!(allowed(&answer), "{answer}");
    assert!(
        data_of(&as_secret(&again)) == first,
        "the recovered value is admitted"
    );
    assert!(!w.fake.is_deleted("k8s-shop-db"));
    assert_eq!(w.fake.count(Op::RecoverDeletedSecret), 1);
    assert_eq!(w.fake.versions("k8s-shop-db").len(), 1, "no version added");
}

#[tokio::test]
async fn a_role_that_cannot_write_is_a_clear_denial() {
    let w = World::new().await;
    let (answer, _) = w.create(&mirrored(&["akv-reader"])).await;
    let msg = denied(&answer, "akv-reader", &[]);
    assert!(
        msg.contains("permission denied")
            && msg.contains("SetSecret k8s-shop-db")
            && msg.contains("ForbiddenByRbac")
            && msg.contains("Key Vault Secrets Officer")
            && msg.contains(READER),
        "{msg}"
    );
    assert!(w.fake.names().is_empty(), "nothing written");
}

#[tokio::test]
async fn a_wrong_client_secret_is_a_clear_denial_and_a_fixed_file_is_picked_up() {
    let w = World::new().await;
    let bogus = "bogus-client-secret-9d2e";
    w.write_file("writer-secret", bogus);
    let (answer, _) = w.create(&mirrored(&["akv"])).await;
    let msg = denied(&answer, "akv", &[bogus]);
    assert!(
        msg.contains("permission denied")
            && msg.contains("Entra ID refused the credential")
            && msg.contains("AADSTS7000215"),
        "{msg}"
    );
    assert!(w.fake.names().is_empty());

    // The file is re-read when a token is needed: the rotated secret works.
    w.write_file("writer-secret", &format!("{WRITER_SECRET}\n"));
    let (answer, _) = w.create(&mirrored(&["akv"])).await;
    assert!(allowed(&answer), "{answer}");
    assert!(w.fake.current("k8s-shop-db").is_some());
}

#[tokio::test]
async fn a_vault_that_is_down_or_silent_is_denied_within_the_deadline() {
    let w = World::new().await;
    for (store, cause) in [
        (
            "akv-down",
            format!("connection refused at https://127.0.0.1:{}", w.closed_port),
        ),
        ("akv-hang", "no answer".to_owned()),
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
    let _ = w.hang_port;
    assert!(w.fake.names().is_empty());
}

#[tokio::test]
async fn tls_is_verified_against_the_store_ca_file() {
    let w = World::new().await;
    let (answer, _) = w.create(&mirrored(&["akv-untrusted"])).await;
    let msg = denied(&answer, "akv-untrusted", &[]);
    assert!(
        msg.contains("not reachable") && msg.contains("TLS with") && msg.contains("certificate"),
        "{msg}"
    );
    assert!(
        w.fake.log().is_empty(),
        "no request got through the handshake"
    );
}

#[tokio::test]
async fn dry_run_touches_nothing() {
    let w = World::new().await;
    let doc = mirrored(&["akv", "akv-wi"]);
    let answer = w.send(&review("CREATE", Some(&doc), None, true)).await;
    assert!(allowed(&answer), "{answer}");
    assert!(
        warnings(&answer).iter().any(|w| w.contains("not written")),
        "{}",
        shown(&answer)
    );
    assert!(w.fake.log().is_empty(), "not a request, not even a token");
    assert!(w.fake.names().is_empty());
}

#[tokio::test]
async fn regenerate_adds_a_version_and_reports_its_id() {
    let w = World::new().await;
    let (answer, old) = w.create(&mirrored(&["akv"])).await;
    assert!(allowed(&answer), "{answer}");
    let before = data_of(&as_secret(&old));
    let first_version = w.fake.current("k8s-shop-db").unwrap().id;
    let mut new = old.clone();
    new["metadata"]["annotations"]["secret-santa.io/regenerate"] = json!("password");
    let answer = w.send(&update(&new, &old)).await;
    assert!(allowed(&answer), "{answer}");
    let after = data_of(&as_secret(&apply(&new, &answer)));
    assert!(after["password"] != before["password"] && after["token"] == before["token"]);
    let versions = w.fake.versions("k8s-shop-db");
    assert_eq!(versions.len(), 2, "a new version");
    assert_eq!(versions[0].id, first_version, "the old one is kept");
    assert!(
        w.stored("k8s-shop-db").unwrap() == after,
        "the vault follows the regenerated Secret"
    );
    assert_owned(&versions[1].tags, "db", "ownership kept");
    // The Secret carries the version ids Key Vault gave.
    let patched = apply(&new, &answer);
    assert_eq!(
        patched["metadata"]["annotations"]["secret-santa.io/mirrored-versions"],
        json!(format!("akv@{}", versions[1].id)),
        "the new version id is on the Secret"
    );

    // `put` reports the version id Key Vault gave the new version.
    let kv = w.store("akv").await;
    let name = kv.remote_name("k8s/shop/db").unwrap();
    let me = Ownership {
        key_set: versions[1].tags["secret-santa-key-set"].clone(),
        ..owner("db")
    };
    let id = kv
        .put(
            &name,
            &SecretValue::new(serde_json::to_vec(&after).unwrap()),
            &me,
            &json_options(),
        )
        .await
        .unwrap()
        .expect("Key Vault versions values");
    let current = w.fake.current("k8s-shop-db").unwrap();
    assert_eq!(current.id, id);
    assert_eq!(id.len(), 32, "a Key Vault version id");
    assert_eq!(
        kv.read(&name).await.unwrap().unwrap().version.as_deref(),
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
    let secret = |file: &Path| json!({"method": "clientSecret", "tenantId": TENANT, "clientId": WRITER, "clientSecretFile": file});
    let vault = "https://v.vault.azure.net";
    let cases = [
        (
            json!({"vaultUrl": vault, "auth": secret(&missing)}),
            "clientSecretFile",
        ),
        (
            json!({"vaultUrl": vault, "auth": secret(&empty)}),
            "is empty",
        ),
        (
            json!({"vaultUrl": vault, "caFile": missing, "auth": secret(&present)}),
            "caFile",
        ),
        (
            json!({"vaultUrl": vault, "auth": {"method": "workloadIdentity", "tenantId": TENANT, "clientId": WORKLOAD, "tokenFile": missing}}),
            "tokenFile",
        ),
        (
            json!({"vaultUrl": vault, "auth": {"method": "clientCertificate", "tenantId": TENANT, "clientId": CERT_CLIENT, "certificateFile": present}}),
            "certificateFile",
        ),
        (
            json!({"vaultUrl": vault, "kmsKeyId": "k", "auth": secret(&present)}),
            "kmsKeyId",
        ),
        (
            json!({"vaultUrl": "http://v.vault.azure.net", "auth": secret(&present)}),
            "vaultUrl",
        ),
        (
            json!({"vaultUrl": "https://127.0.0.1:8443", "auth": secret(&present)}),
            "DNS name",
        ),
        (
            json!({"vaultUrl": vault, "endpoint": "http://127.0.0.1:1", "auth": secret(&present)}),
            "endpoint",
        ),
    ];
    for (settings, needle) in cases {
        let err = match store::build(&store_config("kv", "azure-key-vault", settings.clone())).await
        {
            Ok(_) => panic!("{settings}: built"),
            Err(e) => e,
        };
        assert!(err.contains(needle), "{settings}: {err}");
    }

    // An admin config with an Azure store is checked at load.
    let store = |extra: &str| {
        format!(
            "clusterId: c\nstores:\n  - name: kv\n    type: azure-key-vault\n    namespaces: ['*']\n{extra}"
        )
    };
    for (extra, expected) in [
        ("    vaultUri: https://v.vault.azure.net\n", "vaultUri"),
        (
            "    authorityHost: https://login.microsoftonline.us\n",
            "vaultUrl",
        ),
        (
            "    vaultUrl: https://v.vault.azure.net\n    recoverSoftDelete: true\n",
            "recoverSoftDelete",
        ),
        (
            "    vaultUrl: https://v.vault.azure.net\n    auth: { method: password }\n",
            "password",
        ),
        (
            "    vaultUrl: https://v.vault.azure.net\n    auth: { method: clientSecret, tenantId: t, clientId: c }\n",
            "clientSecretFile",
        ),
        (
            "    vaultUrl: https://v.vault.azure.net\n    auth: { method: workloadIdentity, tokenPath: /t }\n",
            "tokenPath",
        ),
    ] {
        let err = AdminConfig::parse(&store(extra)).unwrap_err();
        assert!(err.contains(expected), "{extra}: {err}");
    }
    let ok = AdminConfig::parse(&store(
        "    vaultUrl: https://v.vault.usgovcloudapi.net/\n    auth: { method: managedIdentity, clientId: c }\n    recoverSoftDeleted: true\n",
    ));
    assert!(ok.is_ok(), "{ok:?}");
}
