//! End to end against a real kube-apiserver (v1.20.2, built from Debian's
//! source package by `.ci/install-kube.sh`) and etcd: the apiserver calls
//! the real binary over TLS and stores what we patched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::cluster::Cluster;
use common::harness::{Server, make_certs};
use serde_json::Value;

fn data(secret: &Value) -> BTreeMap<String, String> {
    secret["data"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(v.as_str().unwrap())
                        .unwrap();
                    (k.clone(), String::from_utf8(bytes).unwrap())
                })
                .collect()
        })
        .unwrap_or_default()
}

fn annotation<'a>(secret: &'a Value, key: &str) -> Option<&'a str> {
    secret["metadata"]["annotations"][key].as_str()
}

const DB: &str = r#"apiVersion: v1
kind: Secret
metadata:
  name: shop-db
  namespace: shop
  labels:
    secret-santa.io/enabled: "true"
  annotations:
    secret-santa.io/generators: |
      - name: user
        type: random_string
        config: { length: 12, special: false, upper: false }
      - name: pass
        type: random_password
        config: { length: 32 }
    secret-santa.io/template: |
      username: app_{{ user.value }}
      password: {{ pass.value | json }}
      url: "postgres://app_{{ user.value }}:{{ pass.value | urlencode }}@db:5432/shop"
type: Opaque
"#;

fn webhook_config(port: u16, ca_bundle: &str) -> String {
    format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: secret-santa
webhooks:
  - name: secrets.secret-santa.io
    admissionReviewVersions: ["v1"]
    clientConfig:
      url: https://127.0.0.1:{port}/mutate
      caBundle: {ca_bundle}
    rules:
      - apiGroups: [""]
        apiVersions: ["v1"]
        operations: ["CREATE", "UPDATE"]
        resources: ["secrets"]
        scope: Namespaced
    objectSelector:
      matchLabels:
        secret-santa.io/enabled: "true"
    sideEffects: NoneOnDryRun
    failurePolicy: Fail
    timeoutSeconds: 10
    reinvocationPolicy: Never
    matchPolicy: Equivalent
"#
    )
}

#[test]
fn real_apiserver_stores_what_the_webhook_generates() {
    let cluster = Cluster::start();
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let server = Server::start(
        &certs.path().join("tls.crt"),
        &certs.path().join("tls.key"),
        &[],
        certs.path(),
    );
    let ca = base64::engine::general_purpose::STANDARD
        .encode(std::fs::read(certs.path().join("ca.crt")).unwrap());
    cluster.ok(
        &["apply", "-f", "-"],
        Some(&webhook_config(server.webhook.port(), &ca)),
    );
    cluster.ok(&["create", "namespace", "shop"], None);

    // The apiserver picks webhook configurations up asynchronously: wait
    // until a probe Secret comes back mutated.
    let probe = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: probe\n  namespace: shop\n  labels: {secret-santa.io/enabled: \"true\"}\n  annotations: {secret-santa.io/autogenerate: token}\n";
    let started = Instant::now();
    loop {
        cluster.ok(&["apply", "-f", "-"], Some(probe));
        let s = cluster.get_secret("probe");
        if data(&s).contains_key("token") {
            break;
        }
        cluster.ok(&["-n", "shop", "delete", "secret", "probe"], None);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "webhook never called: {}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // kubectl apply: values filled once, metadata annotations written.
    cluster.ok(&["apply", "-f", "-"], Some(DB));
    let first = cluster.get_secret("shop-db");
    let values = data(&first);
    assert_eq!(
        values.keys().collect::<Vec<_>>(),
        ["password", "url", "username"]
    );
    assert_eq!(values["password"].chars().count(), 32);
    assert!(values["url"].starts_with(&format!("postgres://{}:", values["username"])));
    assert_eq!(
        annotation(&first, "secret-santa.io/generated-keys"),
        Some("password,url,username")
    );
    assert!(annotation(&first, "secret-santa.io/generated-at").is_some());

    // kubectl apply of the same manifest again keeps them.
    cluster.ok(&["apply", "-f", "-"], Some(DB));
    assert!(
        data(&cluster.get_secret("shop-db")) == values,
        "re-apply must not change values"
    );

    // kubectl replace with the bare manifest: the webhook restores them.
    cluster.ok(&["replace", "-f", "-"], Some(DB));
    let replaced = cluster.get_secret("shop-db");
    assert!(
        data(&replaced) == values,
        "replace must restore the generated values"
    );
    assert_eq!(
        annotation(&replaced, "secret-santa.io/generated-keys"),
        Some("password,url,username")
    );

    // Explicit regeneration of one key.
    cluster.ok(
        &[
            "-n",
            "shop",
            "annotate",
            "secret",
            "shop-db",
            "secret-santa.io/regenerate=password",
        ],
        None,
    );
    let regenerated = cluster.get_secret("shop-db");
    let after = data(&regenerated);
    assert!(
        after["password"] != values["password"],
        "password regenerated"
    );
    assert!(after["username"] == values["username"], "username kept");
    assert!(annotation(&regenerated, "secret-santa.io/regenerate").is_none());

    // Server-side dry run: previewed, warned, not stored.
    let dry = DB.replace("name: shop-db", "name: preview");
    let out = cluster.kubectl(
        &["create", "--dry-run=server", "-o", "json", "-f", "-"],
        Some(&dry),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let previewed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(data(&previewed).len(), 3);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("dry run"),
        "warning shown to the user"
    );
    assert!(
        !cluster
            .kubectl(&["-n", "shop", "get", "secret", "preview"], None)
            .status
            .success()
    );

    // A broken annotation is refused with our message.
    let broken = DB
        .replace("name: shop-db", "name: broken")
        .replace("type: random_password", "type: random_pasword");
    let out = cluster.kubectl(&["create", "-f", "-"], Some(&broken));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("secret-santa.io/generators") && stderr.contains("random_pasword"),
        "{stderr}"
    );

    // An unlabelled Secret is untouched (the objectSelector never sends it).
    let plain = DB
        .replace("name: shop-db", "name: plain")
        .replace("secret-santa.io/enabled: \"true\"", "app: shop");
    cluster.ok(&["create", "-f", "-"], Some(&plain));
    let untouched = cluster.get_secret("plain");
    assert!(data(&untouched).is_empty());
    assert!(annotation(&untouched, "secret-santa.io/generated-at").is_none());

    // generateName works.
    let generated = DB.replace("  name: shop-db", "  generateName: db-");
    let out = cluster.ok(&["create", "-o", "json", "-f", "-"], Some(&generated));
    let created: Value = serde_json::from_str(&out).unwrap();
    assert!(
        created["metadata"]["name"]
            .as_str()
            .unwrap()
            .starts_with("db-")
    );
    assert_eq!(data(&created).len(), 3);
}
