//! The `vault` store on a real OpenBao server (`bao server -dev`, started per
//! test on a free loopback port): the shared store contract on KV v2 and on a
//! KV v1 mount, then CONTRACT §4 through the whole review pipeline, with
//! AppRole and token auth, a policy that cannot write, TLS with the store's
//! CA file and an OpenBao namespace. Values are compared with
//! `assert!(a == b)` so a failure never prints them, and every denial is
//! checked for the values it must not show.
#![cfg(feature = "vault")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::openbao::{OpenBao, free_port_pair};
use common::*;
use secret_santa::config::AdminConfig;
use secret_santa::secret::SecretValue;
use secret_santa::store::vault::{KvVersion, V1_OWNER_FIELD, VaultStore};
use secret_santa::store::{self, CreateOutcome, Ownership, StoreError, Stores};
use secret_santa::{App, Reviewer};
use serde_json::{Value, json};

/// What the webhook's AppRole and token may do: read and write secrets under
/// `k8s/` and `contract/` of both KV mounts, nothing else.
const WEBHOOK_POLICY: &str = r#"
path "secret/data/k8s/*"         { capabilities = ["create", "read", "update"] }
path "secret/metadata/k8s/*"     { capabilities = ["create", "read", "update", "delete"] }
path "secret/data/contract/*"    { capabilities = ["create", "read", "update"] }
path "secret/metadata/contract/*" { capabilities = ["create", "read", "update", "delete"] }
path "kv1/k8s/*"                 { capabilities = ["create", "read", "update"] }
path "kv1/contract/*"            { capabilities = ["create", "read", "update"] }
"#;

/// A role that may read the same paths but not write them.
const READER_POLICY: &str = r#"
path "secret/data/k8s/*"     { capabilities = ["read"] }
path "secret/metadata/k8s/*" { capabilities = ["read"] }
"#;

/// An OpenBao dev server set up like a cluster admin would (a KV v1 mount
/// beside the default KV v2 `secret/`, scoped policies, two AppRoles, a
/// token in a file) and the webhook built from an admin config naming it.
struct World {
    bao: OpenBao,
    closed_port: u16,
    /// Accepts connections (the kernel's backlog) and never answers.
    _hang: TcpListener,
    hang_port: u16,
    files: tempfile::TempDir,
    /// The token in `files/token`.
    token: String,
    /// The webhook under test and its admin config.
    hook: Webhook,
}

impl std::ops::Deref for World {
    type Target = Webhook;

    fn deref(&self) -> &Webhook {
        &self.hook
    }
}

fn config_yaml(address: &str, closed: u16, hang: u16, files: &Path) -> String {
    let f = |name: &str| files.join(name).display().to_string();
    format!(
        r#"
clusterId: test-cluster
limits: {{ requestDeadline: 6s }}
stores:
  - name: vault
    type: vault
    address: {address}
    auth: {{ method: approle, roleIdFile: {role_id}, secretIdFile: {secret_id} }}
    namespaces: ["shop"]
    prefix: "k8s/"
    deadline: 3s
    tags: {{ team: platform }}
  - name: vault-v1
    type: vault
    address: {address}
    mount: kv1
    kvVersion: 1
    auth: {{ method: token, tokenFile: {token} }}
    namespaces: ["shop"]
    prefix: "k8s/"
    deadline: 3s
    tags: {{ team: platform }}
  - name: vault-token
    type: vault
    address: {address}
    mount: secret
    kvVersion: 2
    auth: {{ method: token, tokenFile: {token} }}
    namespaces: ["shop"]
    prefix: "k8s/by-token/"
    deadline: 3s
  - name: vault-readonly
    type: vault
    address: {address}
    kvVersion: 2
    auth: {{ method: approle, roleIdFile: {reader_role_id}, secretIdFile: {reader_secret_id} }}
    namespaces: ["shop"]
    prefix: "k8s/"
    deadline: 3s
  - name: vault-down
    type: vault
    address: http://127.0.0.1:{closed}
    kvVersion: 2
    auth: {{ method: token, tokenFile: {token} }}
    namespaces: ["shop"]
    deadline: 1s
  - name: vault-hang
    type: vault
    address: http://127.0.0.1:{hang}
    kvVersion: 2
    auth: {{ method: token, tokenFile: {token} }}
    namespaces: ["shop"]
    deadline: 1s
"#,
        role_id = f("role-id"),
        secret_id = f("secret-id"),
        reader_role_id = f("reader-role-id"),
        reader_secret_id = f("reader-secret-id"),
        token = f("token"),
    )
}

async fn app_for(config: &AdminConfig) -> Arc<App> {
    let stores = Stores::from_config(config).await.unwrap();
    App::new(Reviewer::new(config.clone(), stores), 3 * 1024 * 1024)
}

impl World {
    async fn new() -> World {
        let bao = OpenBao::start().await;
        bao.enable_kv("kv1", 1).await;
        bao.put_policy("webhook", WEBHOOK_POLICY).await;
        bao.put_policy("reader", READER_POLICY).await;
        let (role_id, secret_id) = bao.approle("webhook", &["webhook"]).await;
        let (reader_role_id, reader_secret_id) = bao.approle("reader", &["reader"]).await;
        let token = bao.create_token(&["webhook"], "1h", true).await;

        let files = tempfile::tempdir().unwrap();
        for (name, value) in [
            ("role-id", &role_id),
            ("secret-id", &secret_id),
            ("reader-role-id", &reader_role_id),
            ("reader-secret-id", &reader_secret_id),
            ("token", &token),
        ] {
            std::fs::write(files.path().join(name), format!("{value}\n")).unwrap();
        }
        let closed_port = free_port_pair();
        let hang = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let hang_port = hang.local_addr().unwrap().port();
        let config = AdminConfig::parse(&config_yaml(
            &bao.address,
            closed_port,
            hang_port,
            files.path(),
        ))
        .unwrap();
        let app = app_for(&config).await;
        World {
            bao,
            closed_port,
            _hang: hang,
            hang_port,
            files,
            token,
            hook: Webhook { config, app },
        }
    }

    fn write_file(&self, name: &str, content: &str) {
        std::fs::write(self.files.path().join(name), content).unwrap();
    }

    /// Nothing under `k8s/` in either mount.
    async fn assert_nothing_written(&self) {
        assert!(
            self.bao.list("secret/metadata/k8s").await.is_empty(),
            "KV v2 holds nothing under k8s/"
        );
        assert!(
            self.bao.list("kv1/k8s").await.is_empty(),
            "KV v1 holds nothing under k8s/"
        );
    }
}

/// A denial that names the store and shows no value: neither the author's
/// nor any in `also`.
fn denied(answer: &Value, store: &str, also: &[&str]) -> String {
    assert!(
        !allowed(answer),
        "{store}: expected a denial: {}",
        shown(answer)
    );
    let msg = message(answer);
    assert!(msg.contains(&format!("store \"{store}\"")), "{msg}");
    assert!(!msg.contains(PRESET), "a denial shows a Secret value");
    for value in also {
        assert!(!msg.contains(value), "a denial shows a value");
    }
    msg
}

/// The KV v1 ownership field of an entry, as tags; the rest as data.
fn split_v1(
    mut raw: serde_json::Map<String, Value>,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let owner = common::openbao::strings(raw.get(V1_OWNER_FIELD));
    raw.remove(V1_OWNER_FIELD);
    (common::openbao::strings(Some(&Value::Object(raw))), owner)
}

// ---------------------------------------------------------------------------
// The shared contract.

#[tokio::test]
async fn kv2_satisfies_the_store_contract() {
    let w = World::new().await;
    common::contract::run(w.store("vault").await, "contract").await;
    let kv = w.bao.kv2("secret", "contract/shop/db").await.unwrap();
    assert_owned(&kv.custom_metadata, "db", "custom_metadata");
    assert_eq!(
        kv.custom_metadata.get("team").map(String::as_str),
        Some("payments")
    );
    assert_eq!(kv.current_version, 2, "create, then put: two versions");
    assert!(kv.data.contains_key("password") && kv.data.len() == 1);
    let raw = w.bao.kv2("secret", "contract/shop/raw").await.unwrap();
    assert!(raw.data.keys().eq(["value"]), "a text payload is one field");
}

#[tokio::test]
async fn kv1_satisfies_the_store_contract() {
    let w = World::new().await;
    common::contract::run(w.store("vault-v1").await, "contract").await;
    let (data, owner) = split_v1(w.bao.kv1("kv1", "contract/shop/db").await.unwrap());
    assert_owned(&owner, "db", "the reserved ownership field");
    assert_eq!(owner.get("team").map(String::as_str), Some("payments"));
    assert!(data.keys().eq(["password"]), "the keys are the KV data");
}

// ---------------------------------------------------------------------------
// Check-and-set.

#[tokio::test]
async fn kv2_concurrent_creates_agree_on_one_value() {
    let w = World::new().await;
    // Two replicas: two clients, two AppRole logins.
    let a = w.store("vault").await;
    let b = w.store("vault").await;
    let me = owner("race");
    for i in 0..5 {
        let name = a.remote_name(&format!("k8s/shop/race-{i}")).unwrap();
        let va = SecretValue::new(format!(r#"{{"password":"from-a-{i}"}}"#).into_bytes());
        let vb = SecretValue::new(format!(r#"{{"password":"from-b-{i}"}}"#).into_bytes());
        let options = json_options();
        let (ra, rb) = tokio::join!(
            a.create_if_absent(&name, &va, &me, &options),
            b.create_if_absent(&name, &vb, &me, &options)
        );
        let winner = match (ra.unwrap(), rb.unwrap()) {
            (CreateOutcome::Created { version }, CreateOutcome::Exists(seen)) => {
                assert!(seen.payload == va, "b reads back a's value");
                assert_eq!(seen.owner(), Some(me.clone()), "with a's ownership");
                assert_eq!(version.as_deref(), Some("1"));
                &va
            }
            (CreateOutcome::Exists(seen), CreateOutcome::Created { version }) => {
                assert!(seen.payload == vb, "a reads back b's value");
                assert_eq!(seen.owner(), Some(me.clone()), "with b's ownership");
                assert_eq!(version.as_deref(), Some("1"));
                &vb
            }
            (x, y) => panic!(
                "exactly one create wins: {} and {}",
                matches!(x, CreateOutcome::Created { .. }),
                matches!(y, CreateOutcome::Created { .. })
            ),
        };
        let kv = w
            .bao
            .kv2("secret", &format!("k8s/shop/race-{i}"))
            .await
            .unwrap();
        assert_eq!(kv.current_version, 1, "one version, the winner's");
        let expected: BTreeMap<String, String> = serde_json::from_slice(winner.expose()).unwrap();
        assert!(kv.data == expected, "Vault holds the winner's value");
        assert_owned(&kv.custom_metadata, "race", "the winner's ownership");
    }
}

// ---------------------------------------------------------------------------
// Through the review pipeline.

#[tokio::test]
async fn fresh_create_fills_the_secret_and_vault_holds_it_owned() {
    let w = World::new().await;
    let (answer, result) = w.create(&mirrored(&["vault", "vault-v1"])).await;
    assert!(allowed(&answer), "{answer}");
    let secret = as_secret(&result);
    let data = data_of(&secret);
    assert!(data.keys().eq(["password", "preset", "token"]));
    assert!(data["preset"] == PRESET, "the author's value is kept");

    // KV v2 (detected): the keys are the data, ownership is custom metadata.
    let kv = w
        .bao
        .kv2("secret", "k8s/shop/db")
        .await
        .expect("KV v2 holds k8s/shop/db");
    assert!(kv.data == data, "KV v2 holds the Secret's values");
    assert_owned(&kv.custom_metadata, "db", "KV v2 custom_metadata");
    assert_eq!(
        kv.custom_metadata.get("team").map(String::as_str),
        Some("platform"),
        "the store's extra tags"
    );
    assert_eq!(kv.current_version, 1);

    // KV v1: the keys plus the reserved ownership field.
    let (v1_data, v1_owner) = split_v1(
        w.bao
            .kv1("kv1", "k8s/shop/db")
            .await
            .expect("KV v1 holds k8s/shop/db"),
    );
    assert!(v1_data == data, "KV v1 holds the Secret's values");
    assert_owned(&v1_owner, "db", "KV v1 ownership field");

    let annotations = annotations_of(&secret);
    assert_eq!(annotations["secret-santa.io/mirrored-to"], "vault,vault-v1");
}

#[tokio::test]
async fn a_retried_create_converges_on_the_stored_value() {
    let w = World::new().await;
    let doc = mirrored(&["vault", "vault-v1"]);
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
    let kv = w.bao.kv2("secret", "k8s/shop/db").await.unwrap();
    assert_eq!(kv.current_version, 1, "no second KV v2 version");
    assert!(kv.data == first);
    let (v1_data, _) = split_v1(w.bao.kv1("kv1", "k8s/shop/db").await.unwrap());
    assert!(v1_data == first);

    // A create racing the first one (its probe saw nothing) hits the
    // check-and-set: cas=0 fails and the owned entry is read back.
    let vault = w.store("vault").await;
    let name = vault.remote_name("k8s/shop/db").unwrap();
    let fresh = SecretValue::new(br#"{"password":"a-newer-value"}"#.to_vec());
    let me = Ownership {
        key_set: kv.custom_metadata["secret-santa-key-set"].clone(),
        ..owner("db")
    };
    match vault
        .create_if_absent(&name, &fresh, &me, &json_options())
        .await
        .unwrap()
    {
        CreateOutcome::Exists(entry) => {
            assert_eq!(entry.owner(), Some(me));
            assert_eq!(entry.version.as_deref(), Some("1"));
            let stored: BTreeMap<String, String> =
                serde_json::from_slice(entry.payload.expose()).unwrap();
            assert!(stored == first, "the stored value is read back");
        }
        CreateOutcome::Created { .. } => panic!("cas=0 must not overwrite"),
    }
    assert_eq!(
        w.bao.kv2("secret", "k8s/shop/db").await.unwrap().versions,
        1
    );
}

#[tokio::test]
async fn two_replicas_admitting_the_same_secret_agree() {
    let w = World::new().await;
    let other_replica = app_for(&w.config).await;
    let doc = mirrored(&["vault", "vault-v1"]);
    let (ra, rb) = (create(&doc), create(&doc));
    let (a, b) = tokio::join!(w.send(&ra), send(&other_replica, &rb));
    assert!(allowed(&a), "{a}");
    assert!(allowed(&b), "{b}");
    let da = data_of(&as_secret(&apply(&doc, &a)));
    let db = data_of(&as_secret(&apply(&doc, &b)));
    assert!(da == db, "both replicas admit the same values");
    let kv = w.bao.kv2("secret", "k8s/shop/db").await.unwrap();
    assert!(kv.data == da, "and Vault holds them");
    let (v1_data, _) = split_v1(w.bao.kv1("kv1", "k8s/shop/db").await.unwrap());
    assert!(v1_data == da, "both mounts agree");
}

#[tokio::test]
async fn unowned_entries_are_refused_and_left_alone() {
    let w = World::new().await;
    w.bao
        .ok(
            "POST",
            "secret/data/k8s/shop/db",
            Some(json!({"data": {"password": "theirs-v2"}})),
        )
        .await;
    w.bao
        .ok(
            "POST",
            "kv1/k8s/shop/db",
            Some(json!({"password": "theirs-v1"})),
        )
        .await;
    for store in ["vault", "vault-v1"] {
        let (answer, _) = w.create(&mirrored(&[store])).await;
        let msg = denied(&answer, store, &["theirs-v1", "theirs-v2"]);
        assert!(
            msg.contains("k8s/shop/db")
                && msg.contains("already exists")
                && msg.contains("nobody we know")
                && msg.contains("adoption"),
            "{msg}"
        );
    }
    let kv = w.bao.kv2("secret", "k8s/shop/db").await.unwrap();
    assert!(kv.data.get("password").is_some_and(|p| p == "theirs-v2") && kv.data.len() == 1);
    assert!(kv.custom_metadata.is_empty() && kv.versions == 1);
    let raw = w.bao.kv1("kv1", "k8s/shop/db").await.unwrap();
    assert!(raw.len() == 1 && raw["password"] == "theirs-v1");

    // Another Secret's entry is refused just the same, naming its owner.
    let (answer, _) = w.create(&mirrored_named("web", &["vault"])).await;
    assert!(allowed(&answer), "{answer}");
    let mut doc = mirrored_named("db2", &["vault"]);
    doc["metadata"]["annotations"]["secret-santa.io/mirror"] =
        json!("- store: vault\n  key: shop/web\n  keys: [password, token, preset]\n");
    let (answer, _) = w.create(&doc).await;
    let msg = denied(&answer, "vault", &[]);
    assert!(
        msg.contains("owned by Secret shop/web of cluster test-cluster"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_policy_that_cannot_write_is_a_clear_denial() {
    let w = World::new().await;
    let (answer, _) = w.create(&mirrored(&["vault-readonly"])).await;
    let msg = denied(&answer, "vault-readonly", &[]);
    assert!(
        msg.contains("permission denied")
            && msg.contains("secret/data/k8s/shop/db")
            && msg.contains("\"create\""),
        "{msg}"
    );
    w.assert_nothing_written().await;
}

#[tokio::test]
async fn approle_logs_in_from_files_once_and_reuses_the_token() {
    let w = World::new().await;
    let before = w.bao.token_count().await;
    for name in ["a", "b", "c"] {
        let (answer, _) = w.create(&mirrored_named(name, &["vault"])).await;
        assert!(allowed(&answer), "{answer}");
        assert!(
            w.bao
                .kv2("secret", &format!("k8s/shop/{name}"))
                .await
                .is_some()
        );
    }
    assert_eq!(
        w.bao.token_count().await,
        before + 1,
        "one AppRole login for three reviews"
    );
}

#[tokio::test]
async fn a_wrong_approle_secret_id_is_a_clear_denial() {
    let w = World::new().await;
    let bogus = "bogus-secret-id-9d2e";
    w.write_file("secret-id", bogus);
    let (answer, _) = w.create(&mirrored(&["vault"])).await;
    let msg = denied(&answer, "vault", &[bogus]);
    assert!(
        msg.contains("permission denied")
            && msg.contains("Vault login (auth/approle/login)")
            && msg.contains("invalid role or secret ID"),
        "{msg}"
    );
    w.assert_nothing_written().await;
}

#[tokio::test]
async fn a_token_from_a_file_is_used_and_re_read_when_rotated() {
    let w = World::new().await;
    let (answer, _) = w.create(&mirrored_named("one", &["vault-token"])).await;
    assert!(allowed(&answer), "{answer}");
    assert!(w.bao.kv2("secret", "k8s/by-token/shop/one").await.is_some());

    // Vault Agent (or an operator) rotates the token file.
    let next = w.bao.create_token(&["webhook"], "1h", true).await;
    w.write_file("token", &format!("{next}\n"));
    w.bao.revoke_token(&w.token).await;
    let (answer, _) = w.create(&mirrored_named("two", &["vault-token"])).await;
    assert!(
        allowed(&answer),
        "the new token is used: {}",
        shown(&answer)
    );
    assert!(w.bao.kv2("secret", "k8s/by-token/shop/two").await.is_some());

    // A revoked token is a permission problem that says so.
    w.bao.revoke_token(&next).await;
    let (answer, _) = w.create(&mirrored_named("three", &["vault-token"])).await;
    let msg = denied(&answer, "vault-token", &[&next, &w.token]);
    assert!(msg.contains("permission denied"), "{msg}");
    assert!(
        w.bao
            .kv2("secret", "k8s/by-token/shop/three")
            .await
            .is_none()
    );
}

#[tokio::test]
async fn a_token_from_a_file_is_renewed_before_it_expires() {
    let w = World::new().await;
    let short = w.bao.create_token(&["webhook"], "6s", true).await;
    w.write_file("token", &short);
    let ttl = async || {
        w.bao
            .ok("POST", "auth/token/lookup", Some(json!({ "token": short })))
            .await["data"]["ttl"]
            .as_u64()
            .unwrap()
    };
    let (answer, _) = w.create(&mirrored_named("one", &["vault-token"])).await;
    assert!(allowed(&answer), "{answer}");
    // Past two thirds of its TTL, the next call renews it first.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let (answer, _) = w.create(&mirrored_named("two", &["vault-token"])).await;
    assert!(allowed(&answer), "{answer}");
    let left = ttl().await;
    assert!(left >= 4, "renewed to its full TTL, {left}s left");
    // Past the original expiry, the same token still works.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (answer, _) = w.create(&mirrored_named("three", &["vault-token"])).await;
    assert!(allowed(&answer), "{answer}");
}

#[tokio::test]
async fn an_approle_token_is_replaced_by_a_fresh_login_before_it_expires() {
    let w = World::new().await;
    // The webhook role's tokens live 6 s.
    w.bao
        .ok(
            "POST",
            "auth/approle/role/webhook",
            Some(json!({"token_ttl": "6s", "token_max_ttl": "6s"})),
        )
        .await;
    let before = w.bao.token_count().await;
    let (answer, _) = w.create(&mirrored_named("one", &["vault"])).await;
    assert!(allowed(&answer), "{answer}");
    assert_eq!(w.bao.token_count().await, before + 1, "one login");
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let (answer, _) = w.create(&mirrored_named("two", &["vault"])).await;
    assert!(allowed(&answer), "{answer}");
    assert_eq!(
        w.bao.token_count().await,
        before + 2,
        "a second login while the first token is still valid"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (answer, _) = w.create(&mirrored_named("three", &["vault"])).await;
    assert!(allowed(&answer), "{answer}");
}

#[tokio::test]
async fn the_kv_version_is_detected_from_the_mount() {
    let w = World::new().await;
    let f = |name: &str| w.files.path().join(name).display().to_string();
    let approle =
        json!({"method": "approle", "roleIdFile": f("role-id"), "secretIdFile": f("secret-id")});
    let root = w.files.path().join("root-token");
    std::fs::write(&root, &w.bao.root_token).unwrap();
    let root = json!({"method": "token", "tokenFile": root});
    let build = |mount: &str, auth: &Value| {
        let c = store_config(
            "v",
            "vault",
            json!({"address": w.bao.address, "mount": mount, "auth": auth}),
        );
        async move { VaultStore::build(&c).await.unwrap() }
    };
    // With the webhook's scoped policy: it can see the mounts it may use.
    assert_eq!(
        build("secret", &approle).await.kv_version().await.unwrap(),
        KvVersion::V2
    );
    assert_eq!(
        build("kv1", &approle).await.kv_version().await.unwrap(),
        KvVersion::V1
    );
    let err = build("cubbyhole", &root)
        .await
        .kv_version()
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid(_)) && err.to_string().contains("not KV"),
        "{err}"
    );
    let err = build("secret/k8s", &root)
        .await
        .kv_version()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("lies inside mount \"secret\""),
        "{err}"
    );
    let err = build("nothere", &root)
        .await
        .kv_version()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("set kvVersion"), "{err}");
}

#[tokio::test]
async fn a_server_that_is_down_or_silent_is_denied_within_the_deadline() {
    let w = World::new().await;
    for (store, cause) in [
        (
            "vault-down",
            format!("connection refused at http://127.0.0.1:{}", w.closed_port),
        ),
        ("vault-hang", "no answer".to_owned()),
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
}

#[tokio::test]
async fn dry_run_writes_nothing() {
    let w = World::new().await;
    let before = w.bao.token_count().await;
    let doc = mirrored(&["vault", "vault-v1"]);
    let answer = w.send(&review("CREATE", Some(&doc), None, true)).await;
    assert!(allowed(&answer), "{answer}");
    assert!(
        warnings(&answer).iter().any(|w| w.contains("not written")),
        "{}",
        shown(&answer)
    );
    w.assert_nothing_written().await;
    assert_eq!(w.bao.token_count().await, before, "not even a login");
}

#[tokio::test]
async fn regenerate_writes_a_new_version() {
    let w = World::new().await;
    let (answer, old) = w.create(&mirrored(&["vault", "vault-v1"])).await;
    assert!(allowed(&answer), "{answer}");
    let before = data_of(&as_secret(&old));
    let mut new = old.clone();
    new["metadata"]["annotations"]["secret-santa.io/regenerate"] = json!("password");
    let answer = w.send(&update(&new, &old)).await;
    assert!(allowed(&answer), "{answer}");
    let after = data_of(&as_secret(&apply(&new, &answer)));
    assert!(after["password"] != before["password"] && after["token"] == before["token"]);
    let kv = w.bao.kv2("secret", "k8s/shop/db").await.unwrap();
    assert!(kv.data == after, "KV v2 follows the regenerated Secret");
    assert_eq!(kv.current_version, 2, "a new version");
    assert_owned(&kv.custom_metadata, "db", "ownership kept");
    let (v1_data, v1_owner) = split_v1(w.bao.kv1("kv1", "k8s/shop/db").await.unwrap());
    assert!(v1_data == after, "KV v1 follows the regenerated Secret");
    assert_owned(&v1_owner, "db", "ownership kept");
}

#[tokio::test]
async fn a_deleted_current_version_is_a_clear_denial() {
    let w = World::new().await;
    let doc = mirrored(&["vault"]);
    let (answer, first) = w.create(&doc).await;
    assert!(allowed(&answer), "{answer}");
    let first = data_of(&as_secret(&first));
    // `vault kv delete`: a soft delete of the current version.
    w.bao.ok("DELETE", "secret/data/k8s/shop/db", None).await;
    let (answer, _) = w.create(&doc).await;
    let values: Vec<&str> = first.values().map(String::as_str).collect();
    let msg = denied(&answer, "vault", &values);
    assert!(
        msg.contains("version 1 is deleted")
            && msg.contains("vault kv undelete -versions=1 -mount=secret k8s/shop/db"),
        "{msg}"
    );
    assert_eq!(
        w.bao.kv2("secret", "k8s/shop/db").await.unwrap().versions,
        1
    );
    // Restored, the owned entry is reused.
    w.bao
        .ok(
            "POST",
            "secret/undelete/k8s/shop/db",
            Some(json!({"versions": [1]})),
        )
        .await;
    let (answer, again) = w.create(&doc).await;
    assert!(allowed(&answer), "{answer}");
    assert!(data_of(&as_secret(&again)) == first);
}

#[tokio::test]
async fn tls_is_verified_against_the_store_ca_file() {
    let bao = OpenBao::start_tls().await;
    let files = tempfile::tempdir().unwrap();
    let token = files.path().join("token");
    std::fs::write(&token, &bao.root_token).unwrap();
    let yaml = format!(
        r#"
clusterId: test-cluster
stores:
  - name: vault-tls
    type: vault
    address: {address}
    caFile: {ca}
    auth: {{ method: token, tokenFile: {token} }}
    namespaces: ["*"]
    deadline: 2s
  - name: vault-untrusted
    type: vault
    address: {address}
    auth: {{ method: token, tokenFile: {token} }}
    namespaces: ["*"]
    deadline: 2s
"#,
        address = bao.address,
        ca = bao.ca_file.as_ref().unwrap().display(),
        token = token.display(),
    );
    let config = AdminConfig::parse(&yaml).unwrap();
    let app = app_for(&config).await;
    let doc = mirrored(&["vault-tls"]);
    let answer = send(&app, &create(&doc)).await;
    assert!(allowed(&answer), "{answer}");
    let data = data_of(&as_secret(&apply(&doc, &answer)));
    assert!(bao.kv2("secret", "shop/db").await.unwrap().data == data);

    let answer = send(&app, &create(&mirrored_named("web", &["vault-untrusted"]))).await;
    let msg = denied(&answer, "vault-untrusted", &[]);
    assert!(
        msg.contains("not reachable") && msg.contains("TLS with") && msg.contains("certificate"),
        "{msg}"
    );
    assert!(bao.kv2("secret", "shop/web").await.is_none());
}

#[tokio::test]
async fn a_namespace_is_reached_with_the_namespace_header() {
    let w = World::new().await;
    w.bao.ok("POST", "sys/namespaces/team-a", None).await;
    w.bao
        .ok_in(
            Some("team-a"),
            "POST",
            "sys/mounts/secret",
            Some(json!({"type": "kv", "options": {"version": "2"}})),
        )
        .await;
    let root = w.files.path().join("root-token");
    std::fs::write(&root, &w.bao.root_token).unwrap();
    let yaml = format!(
        r#"
clusterId: test-cluster
stores:
  - name: team-a
    type: vault
    address: {address}
    namespace: team-a
    auth: {{ method: token, tokenFile: {root} }}
    namespaces: ["*"]
"#,
        address = w.bao.address,
        root = root.display(),
    );
    let app = app_for(&AdminConfig::parse(&yaml).unwrap()).await;
    let doc = mirrored(&["team-a"]);
    let answer = send(&app, &create(&doc)).await;
    assert!(allowed(&answer), "{answer}");
    let data = data_of(&as_secret(&apply(&doc, &answer)));
    let kv = w
        .bao
        .kv2_in(Some("team-a"), "secret", "shop/db")
        .await
        .expect("the namespace's mount holds it");
    assert!(kv.data == data);
    assert_owned(&kv.custom_metadata, "db", "namespace entry");
    assert!(
        w.bao.kv2("secret", "shop/db").await.is_none(),
        "nothing in the root namespace"
    );
}

// ---------------------------------------------------------------------------
// Config and credentials.

#[tokio::test]
async fn settings_and_credential_files_fail_the_build_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("role-id");
    let present = dir.path().join("secret-id");
    std::fs::write(&present, "x\n").unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let cases = [
        (
            json!({"address": "http://127.0.0.1:1", "auth": {"method": "approle", "roleIdFile": missing, "secretIdFile": present}}),
            "roleIdFile",
        ),
        (
            json!({"address": "http://127.0.0.1:1", "auth": {"method": "token", "tokenFile": empty}}),
            "is empty",
        ),
        (
            json!({"address": "http://127.0.0.1:1", "kvVersion": 3, "auth": {"method": "token", "tokenFile": present}}),
            "kvVersion",
        ),
        (
            json!({"address": "http://127.0.0.1:1", "kmsKeyId": "alias/x", "auth": {"method": "token", "tokenFile": present}}),
            "kmsKeyId",
        ),
        (
            json!({"address": "http://127.0.0.1:1", "caFile": missing, "auth": {"method": "token", "tokenFile": present}}),
            "caFile",
        ),
        (
            json!({"address": "vault.example:8200", "auth": {"method": "token", "tokenFile": present}}),
            "address",
        ),
    ];
    for (settings, needle) in cases {
        let err = match store::build(&store_config("v", "vault", settings.clone())).await {
            Ok(_) => panic!("{settings}: built"),
            Err(e) => e,
        };
        assert!(err.contains(needle), "{settings}: {err}");
    }
    // An admin config with a Vault store is checked at load.
    let err = AdminConfig::parse(
        "clusterId: c\nstores:\n  - name: v\n    type: vault\n    namespaces: ['*']\n    adress: https://v\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("adress"), "{err}");
}
