//! Test helpers that read like the spec: Secret builders, AdmissionReview
//! builders, and patch application.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod cluster;
pub mod contract;
pub mod harness;
pub mod moto;
#[cfg(feature = "http-client")]
pub mod openbao;

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use serde_json::{Value, json};

pub const LABEL: &str = "secret-santa.io/enabled";

/// A Secret manifest under construction.
#[derive(Clone, Debug)]
pub struct SecretDoc(pub Value);

impl SecretDoc {
    pub fn new(name: &str) -> Self {
        Self(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": "shop"},
            "type": "Opaque"
        }))
    }

    /// Carries the opt-in label.
    pub fn labelled(mut self) -> Self {
        self.0["metadata"]["labels"] = json!({ LABEL: "true" });
        self
    }

    pub fn annotate(mut self, key: &str, value: &str) -> Self {
        if self.0["metadata"].get("annotations").is_none() {
            self.0["metadata"]["annotations"] = json!({});
        }
        self.0["metadata"]["annotations"][key] = Value::String(value.to_owned());
        self
    }

    pub fn autogenerate(self, keys: &str) -> Self {
        self.annotate("secret-santa.io/autogenerate", keys)
    }

    pub fn generators(self, yaml: &str) -> Self {
        self.annotate("secret-santa.io/generators", yaml)
    }

    pub fn template(self, yaml: &str) -> Self {
        self.annotate("secret-santa.io/template", yaml)
    }

    /// Adds a `.data` entry (plain text in, base64 stored).
    pub fn data(mut self, key: &str, value: &str) -> Self {
        if self.0.get("data").is_none() {
            self.0["data"] = json!({});
        }
        self.0["data"][key] =
            Value::String(base64::engine::general_purpose::STANDARD.encode(value));
        self
    }

    pub fn string_data(mut self, key: &str, value: &str) -> Self {
        if self.0.get("stringData").is_none() {
            self.0["stringData"] = json!({});
        }
        self.0["stringData"][key] = Value::String(value.to_owned());
        self
    }

    pub fn typed(mut self, t: &str) -> Self {
        self.0["type"] = Value::String(t.to_owned());
        self
    }

    /// No name, only generateName.
    pub fn generate_name(mut self, prefix: &str) -> Self {
        let meta = self.0["metadata"].as_object_mut().unwrap();
        meta.remove("name");
        meta.insert("generateName".into(), Value::String(prefix.to_owned()));
        self
    }

    pub fn value(&self) -> Value {
        self.0.clone()
    }
}

/// An AdmissionReview request as kube-apiserver sends it.
pub fn review(
    operation: &str,
    object: Option<&Value>,
    old: Option<&Value>,
    dry_run: bool,
) -> Value {
    let obj = object.or(old).cloned().unwrap_or(Value::Null);
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("uid-{}", rand_suffix()),
            "kind": {"group": "", "version": "v1", "kind": "Secret"},
            "resource": {"group": "", "version": "v1", "resource": "secrets"},
            "requestKind": {"group": "", "version": "v1", "kind": "Secret"},
            "requestResource": {"group": "", "version": "v1", "resource": "secrets"},
            "name": name,
            "namespace": "shop",
            "operation": operation,
            "userInfo": {"username": "admin", "groups": ["system:masters", "system:authenticated"]},
            "object": object.cloned().unwrap_or(Value::Null),
            "oldObject": old.cloned().unwrap_or(Value::Null),
            "dryRun": dry_run,
            "options": null
        }
    })
}

pub fn create(object: &Value) -> Value {
    review("CREATE", Some(object), None, false)
}

pub fn update(new: &Value, old: &Value) -> Value {
    review("UPDATE", Some(new), Some(old), false)
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

/// The `response` of a review answer.
pub fn response(answer: &Value) -> &Value {
    answer.get("response").expect("answer has a response")
}

pub fn allowed(answer: &Value) -> bool {
    response(answer)["allowed"].as_bool().unwrap()
}

pub fn message(answer: &Value) -> String {
    response(answer)["status"]["message"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

pub fn warnings(answer: &Value) -> Vec<String> {
    response(answer)["warnings"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|w| w.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Applies the base64 JSONPatch of an answer (if any) to `object`.
pub fn apply(object: &Value, answer: &Value) -> Value {
    let mut doc = object.clone();
    if let Some(p) = response(answer).get("patch").and_then(Value::as_str) {
        assert_eq!(response(answer)["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD.decode(p).unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        json_patch::patch(&mut doc, &patch).expect("the patch applies cleanly");
    }
    doc
}

/// An answer fit for an assertion message: the patch (base64 of generated
/// values) replaced by its length, so that a failing test prints no value.
pub fn shown(answer: &Value) -> Value {
    let mut shown = answer.clone();
    if let Some(patch) = shown.pointer_mut("/response/patch") {
        let len = patch.as_str().map_or(0, str::len);
        *patch = Value::String(format!("<{len} base64 characters withheld>"));
    }
    shown
}

pub fn has_patch(answer: &Value) -> bool {
    response(answer).get("patch").is_some_and(|p| !p.is_null())
}

/// The object as the typed Secret the apiserver would store.
pub fn as_secret(doc: &Value) -> Secret {
    serde_json::from_value(doc.clone()).expect("a valid core/v1 Secret")
}

/// Decoded `.data` of a Secret.
pub fn data_of(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).expect("utf-8 value")))
        .collect()
}

pub fn annotations_of(secret: &Secret) -> BTreeMap<String, String> {
    secret.metadata.annotations.clone().unwrap_or_default()
}

// ---- store tests --------------------------------------------------------

/// The owner the store tests write as: Secret `shop/<name>` of cluster
/// `test-cluster`.
pub fn owner(name: &str) -> secret_santa::store::Ownership {
    secret_santa::store::Ownership {
        cluster_id: "test-cluster".into(),
        namespace: "shop".into(),
        name: name.into(),
        key_set: "0123456789abcdef".into(),
    }
}

/// Write options of a `json`-format destination with no extras.
pub fn json_options() -> secret_santa::store::WriteOptions {
    secret_santa::store::WriteOptions {
        content_type: "application/json",
        ..Default::default()
    }
}

/// The ownership tags of Secret `shop/<name>` of `test-cluster`, with a
/// key-set hash.
pub fn assert_owned(tags: &BTreeMap<String, String>, name: &str, what: &str) {
    for (k, v) in [
        ("secret-santa-managed-by", "secret-santa"),
        ("secret-santa-cluster", "test-cluster"),
        ("secret-santa-namespace", "shop"),
        ("secret-santa-name", name),
    ] {
        assert_eq!(tags.get(k).map(String::as_str), Some(v), "{what}: {k}");
    }
    assert!(
        tags.get("secret-santa-key-set")
            .is_some_and(|s| s.len() == 16),
        "{what}: key set"
    );
}

/// A store config as the admin config would hold it: `settings` (the
/// type's own keys and any common ones) on a store `name` of `store_type`
/// open to every namespace.
pub fn store_config(
    name: &str,
    store_type: &str,
    settings: Value,
) -> secret_santa::config::StoreConfig {
    let mut doc = json!({"name": name, "type": store_type, "namespaces": ["*"]});
    doc.as_object_mut()
        .unwrap()
        .extend(settings.as_object().unwrap().clone());
    serde_json::from_value(doc).unwrap()
}

/// A value the Secret's author set and mirrors along with the generated
/// ones: it must never show up in a denial.
pub const PRESET: &str = "preset-value-5b1d0c7e";

/// Secret `shop/db`: two generated keys plus one the author set, mirrored
/// (all three) to `stores`.
pub fn mirrored(stores: &[&str]) -> Value {
    mirrored_named("db", stores)
}

pub fn mirrored_named(name: &str, stores: &[&str]) -> Value {
    let mirror: String = stores
        .iter()
        .map(|s| format!("- store: {s}\n  keys: [password, token, preset]\n"))
        .collect();
    SecretDoc::new(name)
        .labelled()
        .autogenerate("password, token")
        .data("preset", PRESET)
        .annotate("secret-santa.io/mirror", &mirror)
        .value()
}

/// One review through the webhook's own path (decode, review, answer), as
/// the JSON the apiserver would read.
pub async fn send(app: &secret_santa::App, review: &Value) -> Value {
    app.review_bytes(&serde_json::to_vec(review).unwrap(), None)
        .await
}

/// A CREATE of `doc`: the answer, and the object after its patch.
pub async fn create_and_apply(app: &secret_santa::App, doc: &Value) -> (Value, Value) {
    let answer = send(app, &create(doc)).await;
    let result = apply(doc, &answer);
    (answer, result)
}

/// The webhook a store test drives, with the admin config it was built
/// from. Each store test's world derefs to it.
pub struct Webhook {
    pub config: secret_santa::config::AdminConfig,
    pub app: std::sync::Arc<secret_santa::App>,
}

impl Webhook {
    /// The store `name` of the admin config.
    pub fn store_config(&self, name: &str) -> secret_santa::config::StoreConfig {
        self.config
            .stores
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no store {name:?} in the admin config"))
            .clone()
    }

    /// A client for the store `name`, built as `serve` builds it.
    pub async fn store(&self, name: &str) -> secret_santa::store::DynStore {
        secret_santa::store::build(&self.store_config(name))
            .await
            .unwrap()
    }

    pub async fn send(&self, review: &Value) -> Value {
        send(&self.app, review).await
    }

    pub async fn create(&self, doc: &Value) -> (Value, Value) {
        create_and_apply(&self.app, doc).await
    }
}
