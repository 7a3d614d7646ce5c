//! End to end with mirroring: a real kube-apiserver v1.20.2 + etcd calls the
//! real binary over TLS, and the binary mirrors to real servers on loopback:
//! moto (AWS Secrets Manager, Parameter Store and S3) and OpenBao (Vault KV
//! v2). What the apiserver stores is compared with what each store holds,
//! with `assert!(a == b)` so that a failure never prints a value.
#![cfg(all(feature = "aws", feature = "vault", feature = "s3"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use aws_sdk_secretsmanager::config::{Credentials, Region};
use common::cluster::{Cluster, annotation, data};
use common::harness::{Server, make_certs};
use common::moto::{Moto, REGION};
use common::openbao::OpenBao;

const BUCKET: &str = "cluster-secrets";

/// What the webhook's Vault token may do: KV v2 under `k8s/`, nothing else.
const POLICY: &str = r#"
path "secret/data/k8s/*"     { capabilities = ["create", "read", "update"] }
path "secret/metadata/k8s/*" { capabilities = ["create", "read", "update", "delete"] }
"#;

fn config_yaml(moto: &str, vault: &str, files: &std::path::Path) -> String {
    let f = |name: &str| files.join(name).display().to_string();
    let aws_auth = format!(
        "{{ method: accessKey, accessKeyIdFile: {}, secretAccessKeyFile: {} }}",
        f("id"),
        f("secret")
    );
    format!(
        r#"
clusterId: e2e
limits: {{ requestDeadline: 8s }}
stores:
  - name: aws
    type: aws-secrets-manager
    region: {REGION}
    endpoint: {moto}
    auth: {aws_auth}
    namespaces: ["shop"]
    prefix: "k8s/"
  - name: ssm
    type: aws-parameter-store
    region: {REGION}
    endpoint: {moto}
    auth: {aws_auth}
    namespaces: ["shop"]
    prefix: "/k8s/"
  - name: vault
    type: vault
    address: {vault}
    auth: {{ method: token, tokenFile: {token} }}
    namespaces: ["shop"]
    prefix: "k8s/"
  - name: s3
    type: s3
    region: {REGION}
    endpoint: {moto}
    bucket: {BUCKET}
    auth: {aws_auth}
    namespaces: ["shop"]
    prefix: "k8s/"
"#,
        token = f("vault-token"),
    )
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
    secret-santa.io/mirror: |
      - store: aws
      - store: ssm
        keys: [password]
        format: value
      - store: vault
      - store: s3
        format: dotenv
type: Opaque
"#;

fn aws_config(moto: &str) -> aws_sdk_secretsmanager::config::Builder {
    aws_sdk_secretsmanager::Config::builder()
        .behavior_version_latest()
        .region(Region::new(REGION))
        .endpoint_url(moto)
        .credentials_provider(Credentials::new("test", "test", None, None, "moto"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_apiserver_mirrors_to_aws_vault_and_s3() {
    let moto = Moto::start();
    let bao = OpenBao::start().await;
    bao.put_policy("webhook", POLICY).await;
    let token = bao.create_token(&["webhook"], "1h", false).await;

    let sm = aws_sdk_secretsmanager::Client::from_conf(aws_config(&moto.endpoint).build());
    let ssm = aws_sdk_ssm::Client::from_conf(
        aws_sdk_ssm::Config::builder()
            .behavior_version_latest()
            .region(aws_sdk_ssm::config::Region::new(REGION))
            .endpoint_url(&moto.endpoint)
            .credentials_provider(aws_sdk_ssm::config::Credentials::new(
                "test", "test", None, None, "moto",
            ))
            .build(),
    );
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::Config::builder()
            .behavior_version_latest()
            .region(aws_sdk_s3::config::Region::new(REGION))
            .endpoint_url(&moto.endpoint)
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "test", "test", None, None, "moto",
            ))
            .build(),
    );
    s3.create_bucket()
        .bucket(BUCKET)
        .create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(REGION))
                .build(),
        )
        .send()
        .await
        .unwrap();

    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("id"), "test\n").unwrap();
    std::fs::write(files.path().join("secret"), "test\n").unwrap();
    std::fs::write(files.path().join("vault-token"), format!("{token}\n")).unwrap();
    let config = files.path().join("config.yaml");
    std::fs::write(
        &config,
        config_yaml(&moto.endpoint, &bao.address, files.path()),
    )
    .unwrap();

    let cluster = Cluster::start();
    make_certs(files.path());
    let server = Server::start(
        &files.path().join("tls.crt"),
        &files.path().join("tls.key"),
        &["--config", config.to_str().unwrap()],
        files.path(),
    );
    cluster.register_webhook(server.webhook.port(), &files.path().join("ca.crt"), || {
        server.log()
    });

    // kubectl create: the Secret is filled and every store holds the values.
    cluster.ok(&["create", "-f", "-"], Some(DB));
    let created = cluster.get_secret("shop-db");
    let values = data(&created);
    assert_eq!(values.keys().collect::<Vec<_>>(), ["password", "username"]);
    let mut mirrored: Vec<&str> = annotation(&created, "secret-santa.io/mirrored-to")
        .unwrap()
        .split(',')
        .collect();
    mirrored.sort_unstable();
    assert_eq!(mirrored, ["aws", "s3", "ssm", "vault"]);
    // The versions the stores gave: Vault's first KV v2 version among them.
    let versions = annotation(&created, "secret-santa.io/mirrored-versions").unwrap();
    assert!(
        versions.split(',').any(|v| v == "vault@1"),
        "mirrored-versions {versions:?}"
    );

    // Secrets Manager: a JSON object of the keys, tagged as ours.
    let got = sm
        .get_secret_value()
        .secret_id("k8s/shop/shop-db")
        .send()
        .await
        .unwrap();
    let json: BTreeMap<String, String> =
        serde_json::from_str(got.secret_string().unwrap()).unwrap();
    assert!(json == values, "Secrets Manager holds the Secret's values");
    let tags: BTreeMap<String, String> = sm
        .describe_secret()
        .secret_id("k8s/shop/shop-db")
        .send()
        .await
        .unwrap()
        .tags()
        .iter()
        .map(|t| (t.key().unwrap().to_owned(), t.value().unwrap().to_owned()))
        .collect();
    assert_eq!(
        tags.get("secret-santa-cluster").map(String::as_str),
        Some("e2e")
    );
    assert_eq!(
        tags.get("secret-santa-namespace").map(String::as_str),
        Some("shop")
    );
    assert_eq!(
        tags.get("secret-santa-name").map(String::as_str),
        Some("shop-db")
    );

    // Parameter Store: the password alone, as a SecureString.
    let param = ssm
        .get_parameter()
        .name("/k8s/shop/shop-db")
        .with_decryption(true)
        .send()
        .await
        .unwrap();
    let param = param.parameter().unwrap();
    assert_eq!(
        param.r#type(),
        Some(&aws_sdk_ssm::types::ParameterType::SecureString)
    );
    assert!(param.value() == Some(values["password"].as_str()));

    // Vault KV v2: the keys as the secret's data, ownership in custom_metadata.
    let kv = bao.kv2("secret", "k8s/shop/shop-db").await.unwrap();
    assert!(kv.data == values, "Vault holds the Secret's values");
    assert_eq!(kv.current_version, 1);
    assert_eq!(
        kv.custom_metadata
            .get("secret-santa-name")
            .map(String::as_str),
        Some("shop-db")
    );

    // S3: a dotenv object with ownership metadata.
    let object = s3
        .get_object()
        .bucket(BUCKET)
        .key("k8s/shop/shop-db")
        .send()
        .await
        .unwrap();
    let metadata = object.metadata().cloned().unwrap_or_default();
    let body = object.body.collect().await.unwrap().into_bytes();
    let expected = format!(
        "PASSWORD={}\nUSERNAME={}\n",
        dotenv_quote(&values["password"]),
        dotenv_quote(&values["username"])
    );
    assert!(body == expected.as_bytes(), "S3 holds the Secret's values");
    assert_eq!(
        metadata.get("secret-santa-namespace").map(String::as_str),
        Some("shop")
    );

    // Delete and create the same manifest again: the stores keep their
    // values (create-if-absent) and the new Secret converges on them.
    cluster.ok(&["-n", "shop", "delete", "secret", "shop-db"], None);
    cluster.ok(&["create", "-f", "-"], Some(DB));
    let again = data(&cluster.get_secret("shop-db"));
    assert!(again == values, "re-created Secret converges on the stores");
    assert_eq!(
        bao.kv2("secret", "k8s/shop/shop-db")
            .await
            .unwrap()
            .current_version,
        1,
        "no second Vault version"
    );

    // Server-side dry run: previewed, nothing written anywhere.
    let preview = DB.replace("name: shop-db", "name: preview");
    let out = cluster.kubectl(&["create", "--dry-run=server", "-f", "-"], Some(&preview));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(bao.kv2("secret", "k8s/shop/preview").await.is_none());
    assert!(
        sm.describe_secret()
            .secret_id("k8s/shop/preview")
            .send()
            .await
            .is_err()
    );

    // A Secret in a namespace the stores do not serve is refused, naming
    // the store; nothing is stored.
    cluster.ok(&["create", "namespace", "billing"], None);
    let other = DB.replace("namespace: shop", "namespace: billing");
    let out = cluster.kubectl(&["create", "-f", "-"], Some(&other));
    assert!(
        !out.status.success(),
        "a store outside the namespace's reach"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("secret-santa.io/mirror") && stderr.contains("\"aws\""),
        "{stderr}"
    );
    assert!(bao.kv2("secret", "k8s/billing/shop-db").await.is_none());

    // A Vault entry someone else wrote at the remote name is not adopted:
    // the create is denied naming the store, and the entry is left alone.
    bao.ok(
        "POST",
        "secret/data/k8s/shop/taken",
        Some(serde_json::json!({"data": {"password": "theirs"}})),
    )
    .await;
    let taken = DB
        .replace("name: shop-db", "name: taken")
        .replace("      - store: aws\n      - store: ssm\n        keys: [password]\n        format: value\n", "")
        .replace("      - store: s3\n        format: dotenv\n", "");
    let out = cluster.kubectl(&["create", "-f", "-"], Some(&taken));
    assert!(!out.status.success(), "an unowned Vault entry is refused");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("vault") && !stderr.contains("theirs"),
        "{stderr}"
    );
    let kv = bao.kv2("secret", "k8s/shop/taken").await.unwrap();
    assert!(kv.data.get("password").map(String::as_str) == Some("theirs"));
    assert!(
        !cluster
            .kubectl(&["-n", "shop", "get", "secret", "taken"], None)
            .status
            .success()
    );
    assert!(
        !server.log().contains(&values["password"]),
        "no value in the webhook's log"
    );
}

/// A dotenv value as the `dotenv` format writes it: a JSON string.
fn dotenv_quote(value: &str) -> String {
    serde_json::to_string(value).unwrap()
}
