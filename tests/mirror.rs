//! Mirroring through the whole review pipeline, on in-memory stores with
//! fault injection: CONTRACT §4 rule by rule.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use secret_santa::config::AdminConfig;
use secret_santa::store::memory::MemoryStore;
use secret_santa::store::{DynStore, StoreError, Stores};
use secret_santa::{App, Reviewer};
use serde_json::{Value, json};

const CONFIG: &str = r#"
clusterId: test-cluster
limits: { requestDeadline: 3s }
stores:
  - name: main
    type: memory
    namespaces: ["shop"]
    prefix: "k8s/"
    deadline: 500ms
  - name: second
    type: memory
    namespaces: ["*"]
    deadline: 500ms
  - name: adopting
    type: memory
    namespaces: ["shop"]
    allowAdoption: true
  - name: open
    type: memory
    namespaces: ["shop"]
    allowAnyKey: true
    allowOverrides: [description, tags]
"#;

struct World {
    app: Arc<App>,
    stores: BTreeMap<String, Arc<MemoryStore>>,
}

impl World {
    fn new() -> World {
        let config = AdminConfig::parse(CONFIG).unwrap();
        let stores: BTreeMap<String, Arc<MemoryStore>> = config
            .stores
            .iter()
            .map(|s| (s.name.clone(), Arc::new(MemoryStore::new())))
            .collect();
        let clients: BTreeMap<String, DynStore> = stores
            .iter()
            .map(|(k, v)| (k.clone(), v.clone() as DynStore))
            .collect();
        let stores_built = Stores::with_clients(&config, clients).unwrap();
        World {
            app: App::new(Reviewer::new(config, stores_built), 3 * 1024 * 1024),
            stores,
        }
    }

    fn store(&self, name: &str) -> &MemoryStore {
        &self.stores[name]
    }

    async fn send(&self, review: &Value) -> Value {
        send(&self.app, review).await
    }

    async fn create(&self, doc: &Value) -> (Value, Value) {
        create_and_apply(&self.app, doc).await
    }
}

fn mirrored(mirror: &str) -> Value {
    SecretDoc::new("db")
        .labelled()
        .autogenerate("password, token")
        .annotate("secret-santa.io/mirror", mirror)
        .value()
}

fn stored_json(store: &MemoryStore, name: &str) -> BTreeMap<String, String> {
    let entry = store
        .get(name)
        .unwrap_or_else(|| panic!("{name} is in the store"));
    serde_json::from_slice(entry.payload.expose()).unwrap()
}

#[tokio::test]
async fn fresh_create_writes_the_same_values_with_ownership_tags() {
    let w = World::new();
    let (answer, result) = w.create(&mirrored("- store: main\n")).await;
    assert!(allowed(&answer), "{answer}");
    let secret = as_secret(&result);
    let data = data_of(&secret);
    let remote = stored_json(w.store("main"), "k8s/shop/db");
    assert!(remote == data, "store and Secret hold the same values");
    let tags = w.store("main").get("k8s/shop/db").unwrap().tags;
    assert_eq!(tags["secret-santa-cluster"], "test-cluster");
    assert_eq!(tags["secret-santa-namespace"], "shop");
    assert_eq!(tags["secret-santa-name"], "db");
    assert_eq!(tags["secret-santa-managed-by"], "secret-santa");
    assert_eq!(
        annotations_of(&secret)["secret-santa.io/mirrored-to"],
        "main"
    );
}

#[tokio::test]
async fn a_retried_create_converges_on_the_stored_value() {
    let w = World::new();
    let doc = mirrored("- store: main\n- store: second\n");
    let (a1, r1) = w.create(&doc).await;
    assert!(allowed(&a1));
    // The apiserver retries (or the Secret was deleted and re-created).
    let (a2, r2) = w.create(&doc).await;
    assert!(allowed(&a2), "{a2}");
    assert!(
        data_of(&as_secret(&r1)) == data_of(&as_secret(&r2)),
        "retry reuses the stored values"
    );
    assert_eq!(w.store("main").writes(), 1, "no second write");
    assert_eq!(w.store("second").writes(), 1);
}

#[tokio::test]
async fn an_unowned_entry_is_refused_unless_adoption_is_allowed() {
    let w = World::new();
    w.store("main")
        .seed("k8s/shop/db", b"{\"password\":\"theirs\"}", BTreeMap::new());
    let (answer, _) = w.create(&mirrored("- store: main\n")).await;
    assert!(!allowed(&answer));
    let msg = message(&answer);
    assert!(
        msg.contains("\"main\"") && msg.contains("already exists") && msg.contains("adoption"),
        "{msg}"
    );
    assert!(!msg.contains("theirs"));
    assert!(
        stored_json(w.store("main"), "k8s/shop/db")["password"] == "theirs",
        "the store keeps the value it had"
    );

    // Owned by another Secret: named in the message.
    let mut other = secret_santa::store::Ownership {
        cluster_id: "test-cluster".into(),
        namespace: "shop".into(),
        name: "someone-else".into(),
        key_set: String::new(),
    }
    .tags();
    other.insert("x".into(), "y".into());
    w.store("second").seed("shop/db", b"{}", other);
    let (answer, _) = w.create(&mirrored("- store: second\n")).await;
    assert!(
        message(&answer).contains("shop/someone-else"),
        "{}",
        message(&answer)
    );

    // Adoption allowed: overwritten with our values and our tags.
    w.store("adopting")
        .seed("shop/db", b"{\"password\":\"theirs\"}", BTreeMap::new());
    let (answer, result) = w.create(&mirrored("- store: adopting\n")).await;
    assert!(allowed(&answer), "{answer}");
    assert!(stored_json(w.store("adopting"), "shop/db") == data_of(&as_secret(&result)));
    assert_eq!(
        w.store("adopting").get("shop/db").unwrap().tags["secret-santa-name"],
        "db"
    );
}

/// The apiserver's `?timeout=` (less the webhook's margin, so 500 ms here)
/// bounds the whole review: a store slower than that is given what is left
/// of it, not its own deadline, and is denied by name; nothing is patched.
#[tokio::test]
async fn the_apiservers_timeout_bounds_the_review() {
    let w = World::new();
    w.store("adopting").set_delay(Some(Duration::from_secs(10)));
    let review = create(&mirrored("- store: adopting\n"));
    let started = Instant::now();
    let answer = w
        .app
        .review_bytes(
            &serde_json::to_vec(&review).unwrap(),
            Some(Duration::from_secs(1)),
        )
        .await;
    let elapsed = started.elapsed();
    assert!(
        !allowed(&answer) && !has_patch(&answer),
        "{}",
        shown(&answer)
    );
    assert_eq!(response(&answer)["status"]["code"], 403);
    let msg = message(&answer);
    let bound: u64 = msg
        .split("no answer within ")
        .nth(1)
        .and_then(|rest| rest.split(" ms").next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("{msg}"));
    assert!(
        msg.contains("store \"adopting\"") && (400..=500).contains(&bound),
        "{msg}"
    );
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(3),
        "denied after {elapsed:?}, at the 500 ms deadline"
    );
}

#[tokio::test]
async fn a_store_that_is_down_or_slow_is_denied_within_its_deadline() {
    let w = World::new();
    w.store("main").set_down(true);
    let (answer, _) = w.create(&mirrored("- store: main\n")).await;
    assert!(!allowed(&answer));
    let msg = message(&answer);
    assert!(
        msg.contains("\"main\"") && msg.contains("not reachable"),
        "{msg}"
    );
    w.store("main").set_down(false);

    w.store("main").set_delay(Some(Duration::from_secs(5)));
    let started = Instant::now();
    let (answer, _) = w.create(&mirrored("- store: main\n")).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the store's 500ms deadline applies"
    );
    assert!(
        message(&answer).contains("no answer within 500 ms"),
        "{}",
        message(&answer)
    );

    w.store("main").set_delay(None);
    w.store("main")
        .fail_next(StoreError::Throttled("rate exceeded".into()));
    let (answer, _) = w.create(&mirrored("- store: main\n")).await;
    assert!(
        message(&answer).contains("throttled"),
        "{}",
        message(&answer)
    );
    // And the next try goes through.
    let (answer, _) = w.create(&mirrored("- store: main\n")).await;
    assert!(allowed(&answer));
}

#[tokio::test]
async fn dry_run_touches_no_store() {
    let w = World::new();
    let doc = mirrored("- store: main\n");
    let answer = w.send(&review("CREATE", Some(&doc), None, true)).await;
    assert!(allowed(&answer));
    assert!(w.store("main").is_empty());
    assert!(warnings(&answer).iter().any(|w| w.contains("not written")));
    // ...but the admin config is still enforced.
    let doc = SecretDoc::new("db")
        .labelled()
        .autogenerate("p")
        .annotate("secret-santa.io/mirror", "- store: nope\n")
        .value();
    let answer = w.send(&review("CREATE", Some(&doc), None, true)).await;
    assert!(!allowed(&answer));
}

#[tokio::test]
async fn a_failed_second_destination_then_a_retry_converges_everywhere() {
    let w = World::new();
    let doc = mirrored("- store: main\n- store: second\n");
    w.store("second")
        .fail_next_write(StoreError::Unavailable("503 Service Unavailable".into()));
    let (answer, _) = w.create(&doc).await;
    assert!(!allowed(&answer));
    assert!(message(&answer).contains("\"second\""));
    // The first store was written before the failure was known.
    let first_try = stored_json(w.store("main"), "k8s/shop/db");
    let (answer, result) = w.create(&doc).await;
    assert!(allowed(&answer), "{answer}");
    let data = data_of(&as_secret(&result));
    assert!(
        data == first_try,
        "the retry reuses what the first store holds"
    );
    assert!(
        stored_json(w.store("second"), "shop/db") == first_try,
        "and writes it to the second"
    );
}

#[tokio::test]
async fn tenants_reach_only_what_the_admin_allows() {
    let w = World::new();
    let mut doc = mirrored("- store: main\n");
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
        .create(&mirrored("- store: main\n  key: other-team/db\n"))
        .await;
    assert!(
        message(&answer).contains("must start with \"shop/\""),
        "{}",
        message(&answer)
    );
    let (answer, _) = w
        .create(&mirrored("- store: main\n  key: shop/../x\n"))
        .await;
    assert!(!allowed(&answer));
    let (answer, _) = w
        .create(&mirrored("- store: main\n  description: mine\n"))
        .await;
    assert!(message(&answer).contains("does not allow setting description"));
    // A store that allows any key and overrides.
    let (answer, _) = w
        .create(&mirrored(
            "- store: open\n  key: shared/db\n  description: mine\n  tags: {team: pay}\n",
        ))
        .await;
    assert!(allowed(&answer), "{answer}");
    assert_eq!(
        w.store("open").get("shared/db").unwrap().tags["team"],
        "pay"
    );
}

#[tokio::test]
async fn formats_value_and_dotenv() {
    let w = World::new();
    let doc = mirrored(
        "- store: main\n  format: value\n  keys: [token]\n- store: second\n  format: dotenv\n",
    );
    let (answer, result) = w.create(&doc).await;
    assert!(allowed(&answer), "{answer}");
    let data = data_of(&as_secret(&result));
    let raw = w.store("main").get("k8s/shop/db").unwrap();
    assert!(raw.payload.expose() == data["token"].as_bytes());
    let dotenv = String::from_utf8(
        w.store("second")
            .get("shop/db")
            .unwrap()
            .payload
            .expose()
            .to_vec(),
    )
    .unwrap();
    assert!(
        dotenv
            == format!(
                "PASSWORD={}\nTOKEN={}\n",
                serde_json::to_string(&data["password"]).unwrap(),
                serde_json::to_string(&data["token"]).unwrap()
            )
    );
    // A retry reads both formats back.
    let (_, again) = w.create(&doc).await;
    assert!(data_of(&as_secret(&again)) == data);

    let (answer, _) = w
        .create(&mirrored("- store: main\n  format: value\n"))
        .await;
    assert!(message(&answer).contains("exactly one key"));
}

#[tokio::test]
async fn regenerate_writes_a_new_version() {
    let w = World::new();
    let (_, old) = w.create(&mirrored("- store: main\n")).await;
    let before = stored_json(w.store("main"), "k8s/shop/db");
    let version_before = w.store("main").get("k8s/shop/db").unwrap().version;
    let mut new = old.clone();
    new["metadata"]["annotations"]["secret-santa.io/regenerate"] = json!("password");
    let answer = w.send(&update(&new, &old)).await;
    assert!(allowed(&answer), "{answer}");
    let after = data_of(&as_secret(&apply(&new, &answer)));
    let remote = stored_json(w.store("main"), "k8s/shop/db");
    assert!(remote == after, "store follows the regenerated Secret");
    assert!(remote["password"] != before["password"]);
    assert!(remote["token"] == before["token"]);
    assert_ne!(
        w.store("main").get("k8s/shop/db").unwrap().version,
        version_before
    );
}

#[tokio::test]
async fn racing_replicas_converge_on_one_value() {
    let w = World::new();
    let doc = mirrored("- store: main\n- store: second\n");
    w.store("main").set_delay(Some(Duration::from_millis(50)));
    let (a, b) = tokio::join!(w.create(&doc), w.create(&doc));
    assert!(allowed(&a.0) && allowed(&b.0), "{} / {}", a.0, b.0);
    let da = data_of(&as_secret(&a.1));
    let db = data_of(&as_secret(&b.1));
    assert!(da == db, "both replicas admit the same values");
    assert!(stored_json(w.store("main"), "k8s/shop/db") == da);
    assert!(stored_json(w.store("second"), "shop/db") == da);
}

#[tokio::test]
async fn generate_name_secrets_cannot_be_mirrored() {
    let w = World::new();
    let doc = SecretDoc::new("x")
        .generate_name("db-")
        .labelled()
        .autogenerate("password")
        .annotate("secret-santa.io/mirror", "- store: main\n")
        .value();
    let (answer, _) = w.create(&doc).await;
    assert!(
        message(&answer).contains("metadata.name"),
        "{}",
        message(&answer)
    );
}

#[tokio::test]
async fn store_metrics_are_counted() {
    let w = World::new();
    let _ = w.create(&mirrored("- store: main\n")).await;
    let text = w.app.metrics.encode();
    assert!(text.contains("secret_santa_store_operations_total{store=\"main\",operation=\"create\",result=\"success\"} 1"), "{text}");
    assert!(text.contains("secret_santa_store_operation_duration_seconds_count{store=\"main\",operation=\"create\"} 1"), "{text}");
    // One destination on a store that creates atomically: no probe first.
    assert!(!text.contains("operation=\"read\""), "{text}");
    // A failure is counted by its reason.
    w.store("main")
        .fail_next_write(StoreError::Throttled("rate exceeded".into()));
    let mut other = mirrored("- store: main\n");
    other["metadata"]["name"] = json!("db2");
    let (answer, _) = w.create(&other).await;
    assert!(!allowed(&answer));
    let text = w.app.metrics.encode();
    assert!(text.contains("secret_santa_store_operations_total{store=\"main\",operation=\"create\",result=\"throttled\"} 1"), "{text}");
}

#[tokio::test]
async fn a_retried_single_destination_create_converges_without_a_probe() {
    let w = World::new();
    let doc = mirrored("- store: main\n");
    let (first, secret) = w.create(&doc).await;
    assert!(allowed(&first), "{first}");
    let (again, retried) = w.create(&doc).await;
    assert!(allowed(&again), "{again}");
    assert!(
        data_of(&as_secret(&retried)) == data_of(&as_secret(&secret)),
        "the retry takes the stored values"
    );
    assert_eq!(w.store("main").writes(), 1, "nothing rewritten");
}
