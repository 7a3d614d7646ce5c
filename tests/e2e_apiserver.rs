//! End to end against a real kube-apiserver (v1.20.2, built from Debian's
//! source package by `.ci/install-kube.sh`) and etcd: the apiserver calls
//! the real binary over TLS and stores what we patched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::cluster::{Cluster, annotation, data};
use common::harness::Server;
use serde_json::Value;

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

#[test]
fn real_apiserver_stores_what_the_webhook_generates() {
    let cluster = Cluster::start();
    let (certs, server) = Server::with_fresh_certs();
    cluster.register_webhook(server.webhook.port(), &certs.path().join("ca.crt"), || {
        server.log()
    });

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
