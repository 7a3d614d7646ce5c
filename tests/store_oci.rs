//! The `oci-vault` store on a fake OCI Vault (`common/oci_fake.rs`: the
//! Secret Management and Secret Retrieval APIs on one in-process server,
//! written from the public API reference; no OCI Vault emulator exists)
//! that verifies every request signature the way OCI does — the fake's
//! verifier is itself checked against Oracle's documented example requests
//! here. The shared store contract with PKCS#8 and PKCS#1 API keys, then
//! CONTRACT §4 through the whole review pipeline: fresh create, retried
//! create, unowned entries, pending deletion, bad signatures and missing
//! permissions, a vault that is down, dry run, regeneration, settings.
//! And instance principals: the contract again with a store that signs with
//! the security token it federated for from the fake's metadata service and
//! federation endpoint, the token cached across reviews and replaced in
//! time (certificates fetched again), a refused token replaced, a
//! certificate the auth service does not trust, and a metadata service
//! that is down.
//! Values are compared with `assert!(a == b)` so a failure never prints
//! them, and every denial is checked for the values it must not show.
#![cfg(feature = "oci")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/oci_fake.rs"]
mod oci_fake;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use oci_fake::{
    COMPARTMENT, KEY, KeyFormat, OTHER_COMPARTMENT, OciFake, Op, Perms, REGION, TENANCY, TestKey,
    VAULT, test_key,
};
use secret_santa::config::AdminConfig;
use secret_santa::secret::SecretValue;
use secret_santa::store::{self, CreateOutcome, Ownership, StoreError, Stores, WriteOptions};
use secret_santa::{App, Reviewer};
use serde_json::{Value, json};

const WRITER_USER: &str = "ocid1.user.oc1..aaaaaaaawriterwriter5x2nq4lq7uv4m2yrb3a6tq2fkx3wq";
const PKCS1_USER: &str = "ocid1.user.oc1..aaaaaaaapkcsonepkcs5x2nq4lq7uv4m2yrb3a6tq2fkx3wq";
const READER_USER: &str = "ocid1.user.oc1..aaaaaaaareaderreader5x2nq4lq7uv4m2yrb3a6tq2fkx3wq";
const ROGUE_USER: &str = "ocid1.user.oc1..aaaaaaaarogueroguer5x2nq4lq7uv4m2yrb3a6tq2fkx3wq";
const IMPOSTOR_USER: &str = "ocid1.user.oc1..aaaaaaaaimpostorimp5x2nq4lq7uv4m2yrb3a6tq2fkx3wq";
const UNKNOWN_KEY: &str = "ocid1.key.oc1.iad.bbpfakevault.abuwcljrunknownkey5x2nq4lq7uv4m2yrb3a6tq";

/// A value the Secret's author set and mirrors along with the generated
/// ones: it must never show up in a denial.
const PRESET: &str = "preset-value-8c2e4f1a";

struct Keys {
    writer: TestKey,
    pkcs1: TestKey,
    reader: TestKey,
    rogue: TestKey,
    impostor: TestKey,
}

struct World {
    fake: OciFake,
    keys: Keys,
    closed_port: u16,
    _files: tempfile::TempDir,
    /// The webhook under test and its admin config.
    hook: Webhook,
}

impl std::ops::Deref for World {
    type Target = Webhook;

    fn deref(&self) -> &Webhook {
        &self.hook
    }
}

/// One `oci-vault` store entry of the admin config.
fn store_yaml(
    name: &str,
    key: &TestKey,
    endpoint: &str,
    deadline: &str,
    prefix: &str,
    key_line: &str,
    extra: &str,
) -> String {
    format!(
        "  - name: {name}\n    type: oci-vault\n    namespaces: [\"shop\"]\n    region: {REGION}\n    compartmentId: \"{COMPARTMENT}\"\n    vaultId: \"{VAULT}\"\n{key_line}    tenancy: \"{TENANCY}\"\n    user: \"{user}\"\n    fingerprint: \"{fp}\"\n    privateKeyFile: \"{file}\"\n    endpoint: \"{endpoint}\"\n    secretsEndpoint: \"{endpoint}\"\n    deadline: {deadline}\n    prefix: \"{prefix}\"\n{extra}",
        user = key.user,
        fp = key.fingerprint,
        file = key.pem_file.display(),
    )
}

/// One `oci-vault` store entry signing as an instance principal.
fn instance_store_yaml(
    name: &str,
    metadata: &str,
    federation: &str,
    endpoint: &str,
    deadline: &str,
) -> String {
    format!(
        "  - name: {name}\n    type: oci-vault\n    namespaces: [\"shop\"]\n    region: {REGION}\n    compartmentId: \"{COMPARTMENT}\"\n    vaultId: \"{VAULT}\"\n    kmsKeyId: \"{KEY}\"\n    auth: instancePrincipal\n    metadataEndpoint: \"{metadata}\"\n    federationEndpoint: \"{federation}\"\n    endpoint: \"{endpoint}\"\n    secretsEndpoint: \"{endpoint}\"\n    deadline: {deadline}\n    prefix: \"ip/\"\n"
    )
}

fn config_yaml(fake: &OciFake, keys: &Keys, closed: u16) -> String {
    let kms = format!("    kmsKeyId: \"{KEY}\"\n");
    let key_setting = format!("    keyId: \"{KEY}\"\n");
    let ep = fake.endpoint.as_str();
    let down = format!("http://127.0.0.1:{closed}");
    let stores = [
        store_yaml(
            "oci",
            &keys.writer,
            ep,
            "3s",
            "k8s/",
            &kms,
            "    tags: { team: platform }\n",
        ),
        store_yaml("oci-pkcs1", &keys.pkcs1, ep, "3s", "p1/", &kms, ""),
        store_yaml("oci-reader", &keys.reader, ep, "3s", "k8s/", &kms, ""),
        store_yaml("oci-rogue", &keys.rogue, ep, "3s", "k8s/", &kms, ""),
        store_yaml("oci-impostor", &keys.impostor, ep, "3s", "k8s/", &kms, ""),
        store_yaml("oci-down", &keys.writer, &down, "1s", "k8s/", &kms, ""),
        store_yaml(
            "oci-keyid",
            &keys.writer,
            ep,
            "3s",
            "alt/",
            &key_setting,
            "",
        ),
        instance_store_yaml(
            "oci-instance",
            &fake.metadata_endpoint(),
            &fake.federation_endpoint(),
            ep,
            "3s",
        ),
        instance_store_yaml(
            "oci-instance-down",
            &format!("{down}/opc/v2"),
            &fake.federation_endpoint(),
            ep,
            "1s",
        ),
    ];
    format!(
        "clusterId: test-cluster\nlimits: {{ requestDeadline: 6s }}\nstores:\n{}",
        stores.concat()
    )
}

async fn app_for(config: &AdminConfig) -> Arc<App> {
    let stores = Stores::from_config(config).await.unwrap();
    App::new(Reviewer::new(config.clone(), stores), 3 * 1024 * 1024)
}

impl World {
    async fn new() -> World {
        let fake = OciFake::start();
        let files = tempfile::tempdir().unwrap();
        let dir = files.path();
        let keys = Keys {
            writer: test_key(dir, "writer.pem", WRITER_USER, KeyFormat::Pkcs8),
            pkcs1: test_key(dir, "pkcs1.pem", PKCS1_USER, KeyFormat::Pkcs1),
            reader: test_key(dir, "reader.pem", READER_USER, KeyFormat::Pkcs1),
            rogue: test_key(dir, "rogue.pem", ROGUE_USER, KeyFormat::Pkcs8),
            impostor: test_key(dir, "impostor.pem", IMPOSTOR_USER, KeyFormat::Pkcs8),
        };
        fake.register_key(&keys.writer, Perms::MANAGE);
        fake.register_key(&keys.pkcs1, Perms::MANAGE);
        fake.register_key(&keys.reader, Perms::READ);
        // The impostor's keyId is registered with someone else's public key.
        fake.register_public_key(
            &keys.impostor.key_id(),
            &keys.writer.spki_der,
            Perms::MANAGE,
        );
        let closed_port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = AdminConfig::parse(&config_yaml(&fake, &keys, closed_port)).unwrap();
        let app = app_for(&config).await;
        World {
            fake,
            keys,
            closed_port,
            _files: files,
            hook: Webhook { config, app },
        }
    }

    /// The current value of a secret in the fake vault, as a JSON map.
    fn stored(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.fake
            .current(name)
            .map(|v| serde_json::from_slice(&v).expect("a JSON object of strings"))
    }
}

/// Secret `shop/<name>`: two generated keys plus one the author set,
/// mirrored (all three) to `stores`.
fn mirrored_named(name: &str, stores: &[&str]) -> Value {
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

fn mirrored(stores: &[&str]) -> Value {
    mirrored_named("db", stores)
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
    assert!(!msg.contains("PRIVATE KEY"), "a denial shows key material");
    for value in also {
        assert!(!msg.contains(value), "a denial shows a value");
    }
    msg
}

// ---------------------------------------------------------------------------
// The fake's verifier against Oracle's documented examples.

// Oracle's documented test values: "Request Signatures", sections "Test
// Values" and "Example Signed Requests", Oracle Cloud Infrastructure
// Documentation (https://docs.oracle.com/en-us/iaas/Content/API/Concepts/signingrequests.htm).
const DOC_PUBLIC_KEY: &str = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDCFENGw33yGihy92pDjZQhl0C36rPJj+CvfSC8+q28hxA161QFNUd13wuCTUcq0Qd2qsBe/2hFyc2DCJJg0h1L78+6Z4UMR7EOcpfdUE9Hf3m/hs+FUR45uBJeDK1HSFHD8bHKD6kv8FPGfJTotc+2xjJwoYi+1hqp1fIekaxsyQIDAQAB";
const DOC_KEY_ID: &str = "ocid1.tenancy.oc1..aaaaaaaaba3pv6wkcr4jqae5f15p2b2m2yt2j6rx32uzr4h25vqstifsfdsq/ocid1.user.oc1..aaaaaaaat5nvwcna5j6aqzjcaty5eqbb6qt2jvpkanghtgdaqedqw3rynjq/73:61:a2:21:67:e0:df:be:7e:4b:93:1e:15:98:a5:b7";
const DOC_DATE: &str = "Thu, 05 Jan 2014 21:31:40 GMT";
const DOC_HOST: &str = "iaas.us-phoenix-1.oraclecloud.com";
const DOC_GET_TARGET: &str = "/20160918/instances?availabilityDomain=Pjwf%3A%20PHX-AD-1&compartmentId=ocid1.compartment.oc1..aaaaaaaam3we6vgnherjq5q2idnccdflvjsnog7mlr6rtdb25gilchfeyjxa&displayName=TeamXInstances&volumeId=ocid1.volume.oc1.phx.abyhqljrgvttnlx73nmrwfaux7kcvzfs3s66izvxf2h4lgvyndsdsnoiwr5q";
const DOC_GET_AUTHORIZATION: &str = r#"Signature version="1",headers="date (request-target) host",keyId="ocid1.tenancy.oc1..aaaaaaaaba3pv6wkcr4jqae5f15p2b2m2yt2j6rx32uzr4h25vqstifsfdsq/ocid1.user.oc1..aaaaaaaat5nvwcna5j6aqzjcaty5eqbb6qt2jvpkanghtgdaqedqw3rynjq/73:61:a2:21:67:e0:df:be:7e:4b:93:1e:15:98:a5:b7",algorithm="rsa-sha256",signature="GBas7grhyrhSKHP6AVIj/h5/Vp8bd/peM79H9Wv8kjoaCivujVXlpbKLjMPeDUhxkFIWtTtLBj3sUzaFj34XE6YZAHc9r2DmE4pMwOAy/kiITcZxa1oHPOeRheC0jP2dqbTll8fmTZVwKZOKHYPtrLJIJQHJjNvxFWeHQjMaR7M=""#;
const DOC_POST_TARGET: &str = "/20160918/volumeAttachments";
const DOC_POST_BODY: &str = "{\n    \"compartmentId\": \"ocid1.compartment.oc1..aaaaaaaam3we6vgnherjq5q2idnccdflvjsnog7mlr6rtdb25gilchfeyjxa\",\n    \"instanceId\": \"ocid1.instance.oc1.phx.abuw4ljrlsfiqw6vzzxb43vyypt4pkodawglp3wqxjqofakrwvou52gb6s5a\",\n    \"volumeId\": \"ocid1.volume.oc1.phx.abyhqljrgvttnlx73nmrwfaux7kcvzfs3s66izvxf2h4lgvyndsdsnoiwr5q\"\n}";
const DOC_POST_SHA256: &str = "V9Z20UJTvkvpJ50flBzKE32+6m2zJjweHpDMX/U4Uy0=";
const DOC_POST_AUTHORIZATION: &str = r#"Signature version="1",headers="date (request-target) host content-length content-type x-content-sha256",keyId="ocid1.tenancy.oc1..aaaaaaaaba3pv6wkcr4jqae5f15p2b2m2yt2j6rx32uzr4h25vqstifsfdsq/ocid1.user.oc1..aaaaaaaat5nvwcna5j6aqzjcaty5eqbb6qt2jvpkanghtgdaqedqw3rynjq/73:61:a2:21:67:e0:df:be:7e:4b:93:1e:15:98:a5:b7",algorithm="rsa-sha256",signature="Mje8vIDPlwIHmD/cTDwRxE7HaAvBg16JnVcsuqaNRim23fFPgQfLoOOxae6WqKb1uPjYEl0qIdazWaBy/Ml8DRhqlocMwoSXv0fbukP8J5N80LCmzT/FFBvIvTB91XuXI3hYfP9Zt1l7S6ieVadHUfqBedWH0itrtPJBgKmrWso=""#;

fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (k, v) in pairs {
        map.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    map
}

#[test]
fn the_fake_verifies_oracles_documented_example_requests() {
    let spki = base64::engine::general_purpose::STANDARD
        .decode(DOC_PUBLIC_KEY)
        .unwrap();
    let key = |id: &str| (id == DOC_KEY_ID).then(|| spki.clone());
    let now = oci_fake::parse_http_date(DOC_DATE).unwrap();
    assert_eq!(now, 1_388_957_500);

    let get = headers(&[
        ("date", DOC_DATE),
        ("host", DOC_HOST),
        ("authorization", DOC_GET_AUTHORIZATION),
    ]);
    let request = oci_fake::SignedRequest {
        method: "GET",
        target: DOC_GET_TARGET,
        headers: &get,
        body: b"",
    };
    let verified = oci_fake::verify(&request, key, now).unwrap();
    assert_eq!(verified.key_id, DOC_KEY_ID);
    assert_eq!(verified.headers, "date (request-target) host");

    let post = headers(&[
        ("date", DOC_DATE),
        ("host", DOC_HOST),
        ("content-length", "316"),
        ("content-type", "application/json"),
        ("x-content-sha256", DOC_POST_SHA256),
        ("authorization", DOC_POST_AUTHORIZATION),
    ]);
    let request = oci_fake::SignedRequest {
        method: "POST",
        target: DOC_POST_TARGET,
        headers: &post,
        body: DOC_POST_BODY.as_bytes(),
    };
    assert!(oci_fake::verify(&request, key, now).is_ok());

    // What OCI refuses, the fake refuses.
    let refused = |req: &oci_fake::SignedRequest<'_>, now: i64| {
        oci_fake::verify(req, key, now).unwrap_err().reason
    };
    let tampered = b"{\"compartmentId\": \"elsewhere\"}";
    let reason = refused(
        &oci_fake::SignedRequest {
            body: tampered,
            ..oci_fake::SignedRequest {
                method: "POST",
                target: DOC_POST_TARGET,
                headers: &post,
                body: b"",
            }
        },
        now,
    );
    assert!(reason.contains("x-content-sha256"), "{reason}");
    let reason = refused(
        &oci_fake::SignedRequest {
            method: "GET",
            target: "/20160918/instances?availabilityDomain=Pjwf%3A%20PHX-AD-2",
            headers: &get,
            body: b"",
        },
        now,
    );
    assert!(reason.contains("does not verify"), "{reason}");
    let other_host = headers(&[
        ("date", DOC_DATE),
        ("host", "iaas.us-ashburn-1.oraclecloud.com"),
        ("authorization", DOC_GET_AUTHORIZATION),
    ]);
    let reason = refused(
        &oci_fake::SignedRequest {
            method: "GET",
            target: DOC_GET_TARGET,
            headers: &other_host,
            body: b"",
        },
        now,
    );
    assert!(reason.contains("does not verify"), "{reason}");
    let reason = refused(
        &oci_fake::SignedRequest {
            method: "GET",
            target: DOC_GET_TARGET,
            headers: &get,
            body: b"",
        },
        now + 301,
    );
    assert!(reason.contains("from the server's clock"), "{reason}");
    // A POST signed with the GET headers only lacks the body headers.
    let short = headers(&[
        ("date", DOC_DATE),
        ("host", DOC_HOST),
        ("authorization", DOC_GET_AUTHORIZATION),
    ]);
    let reason = refused(
        &oci_fake::SignedRequest {
            method: "POST",
            target: DOC_GET_TARGET,
            headers: &short,
            body: b"",
        },
        now,
    );
    assert!(reason.contains("content-length is not signed"), "{reason}");
    let reason = oci_fake::verify(
        &oci_fake::SignedRequest {
            method: "GET",
            target: DOC_GET_TARGET,
            headers: &get,
            body: b"",
        },
        |_| None,
        now,
    )
    .unwrap_err()
    .reason;
    assert!(reason.contains("unknown keyId"), "{reason}");
}

// ---------------------------------------------------------------------------
// The shared contract, with both key formats.

#[tokio::test]
async fn api_key_store_satisfies_the_store_contract() {
    let w = World::new().await;
    common::contract::run(w.store("oci").await, "contract").await;
    let secret = w.fake.secret("contract.shop.db").unwrap();
    assert_eq!(secret.versions.len(), 2, "create, then put: two versions");
    assert_eq!(secret.current, 2);
    assert_owned(&secret.tags, "db", "tags");
    assert_eq!(
        secret.tags.get("team").map(String::as_str),
        Some("payments")
    );
    assert_eq!(secret.compartment_id, COMPARTMENT);
    assert_eq!(secret.key_id, KEY);
    assert_eq!(
        secret.description.as_deref(),
        Some("contract test"),
        "the description is written"
    );
    assert!(
        w.fake.current("contract.shop.raw").unwrap() == "line one\nline \"two\" = ü".as_bytes(),
        "raw bytes are stored as they are"
    );
    let log = w.fake.log();
    assert!(!log.is_empty());
    let writer = w.keys.writer.key_id();
    assert!(
        log.iter()
            .all(|l| l.authenticated && l.key_id.as_deref() == Some(writer.as_str())),
        "every request is signed by the writer's key: {log:?}"
    );
    for op in [
        Op::ListSecrets,
        Op::CreateSecret,
        Op::GetSecretBundle,
        Op::UpdateSecret,
    ] {
        assert!(w.fake.count(op) > 0, "{op:?} is used");
    }
}

#[tokio::test]
async fn a_pkcs1_key_store_satisfies_the_store_contract_too() {
    let w = World::new().await;
    common::contract::run(w.store("oci-pkcs1").await, "pkcs1").await;
    assert_owned(&w.fake.secret("pkcs1.shop.db").unwrap().tags, "db", "tags");
    let pkcs1 = w.keys.pkcs1.key_id();
    assert!(
        w.fake
            .log()
            .iter()
            .all(|l| l.authenticated && l.key_id.as_deref() == Some(pkcs1.as_str()))
    );
}

// ---------------------------------------------------------------------------
// Backend specifics.

#[tokio::test]
async fn every_request_is_signed_with_the_documented_headers() {
    let w = World::new().await;
    let (answer, _) = w.create(&mirrored(&["oci"])).await;
    assert!(allowed(&answer), "{answer}");
    let (answer, _) = w.create(&mirrored(&["oci"])).await;
    assert!(allowed(&answer), "retried: {}", shown(&answer));
    let log = w.fake.log();
    assert!(log.iter().all(|l| l.authenticated), "{log:?}");
    for l in &log {
        let expected = if matches!(l.method.as_str(), "POST" | "PUT") {
            "date (request-target) host content-length content-type x-content-sha256"
        } else {
            "date (request-target) host"
        };
        assert_eq!(l.signed_headers.as_deref(), Some(expected), "{l:?}");
    }
    // A fresh CREATE is one conditional CreateSecret, carrying a retry token.
    assert_eq!(log[0].op, Op::CreateSecret);
    assert!(log[0].retry_token.as_ref().is_some_and(|t| t.len() >= 16));
    let list = log.iter().find(|l| l.op == Op::ListSecrets).unwrap();
    assert!(
        list.query.contains("name=k8s.shop.db")
            && list.query.contains(&format!("compartmentId={COMPARTMENT}"))
            && list.query.contains(&format!("vaultId={VAULT}")),
        "{list:?}"
    );
}

#[tokio::test]
async fn names_map_to_oci_rules() {
    let w = World::new().await;
    let oci = w.store("oci").await;
    contract::assert_name_rules(
        &oci,
        ("k8s/shop/db.v1_x-y", "k8s.shop.db.v1_x-y"),
        &[],
        255,
        "255",
    );

    // Through the pipeline: the mapped name, and a clear refusal.
    let (answer, _) = w.create(&mirrored(&["oci"])).await;
    assert!(allowed(&answer), "{answer}");
    assert_eq!(w.fake.names(), ["k8s.shop.db"]);
    let mut doc = mirrored_named("web", &["oci"]);
    doc["metadata"]["annotations"]["secret-santa.io/mirror"] =
        json!("- store: oci\n  key: shop/web#1\n");
    let (answer, _) = w.create(&doc).await;
    let msg = denied(&answer, "oci", &[]);
    assert!(
        msg.contains("'#' is not allowed in OCI Vault secret names"),
        "{msg}"
    );
    assert_eq!(w.fake.names(), ["k8s.shop.db"]);
}

#[tokio::test]
async fn binary_values_and_limits() {
    let w = World::new().await;
    let oci = w.store("oci").await;
    let me = owner("bin");
    let name = oci.remote_name("shop/bin").unwrap();
    let raw = SecretValue::new(vec![0, 159, 146, 150, 255]);
    let options = WriteOptions {
        content_type: "application/octet-stream",
        ..Default::default()
    };
    assert!(matches!(
        oci.create_if_absent(&name, &raw, &me, &options)
            .await
            .unwrap(),
        CreateOutcome::Created { version: Some(v) } if v == "1"
    ));
    assert!(w.fake.current("shop.bin").unwrap() == raw.expose());
    assert!(oci.read(&name).await.unwrap().unwrap().payload == raw);

    let huge = SecretValue::new(vec![b'x'; 25 * 1024 + 1]);
    let err = oci
        .create_if_absent(&oci.remote_name("shop/huge").unwrap(), &huge, &me, &options)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid(_)) && err.to_string().contains("25600"),
        "{err}"
    );
    let many = WriteOptions {
        tags: (0..60)
            .map(|i| (format!("tag-{i}"), "v".to_owned()))
            .collect(),
        ..json_options()
    };
    let err = oci
        .create_if_absent(
            &oci.remote_name("shop/tags").unwrap(),
            &SecretValue::new(b"{}".to_vec()),
            &me,
            &many,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid(_))
            && err.to_string().contains("65 freeform tags")
            && err.to_string().contains("at most 64"),
        "{err}"
    );
    assert!(w.fake.secret("shop.huge").is_none() && w.fake.secret("shop.tags").is_none());
    assert_eq!(w.fake.count(Op::CreateSecret), 1, "refused before any call");
}

#[tokio::test]
async fn service_errors_map_to_store_errors_with_short_messages() {
    let w = World::new().await;
    let oci = w.store("oci").await;
    let name = oci.remote_name("faults/x").unwrap();
    assert!(oci.read(&name).await.unwrap().is_none());

    // Throttling is retried once, then reported.
    w.fake.fail(Op::ListSecrets, 429, 2);
    let err = oci.read(&name).await.unwrap_err();
    assert!(matches!(err, StoreError::Throttled(_)), "{err}");
    assert!(
        err.to_string()
            .contains("ListSecrets faults.x: HTTP 429 TooManyRequests"),
        "{err}"
    );
    assert!(err.to_string().contains("opc-request-id"), "{err}");
    assert_eq!(w.fake.pending_faults(), 0, "tried exactly twice");

    // One transient failure is retried away.
    w.fake.fail(Op::ListSecrets, 503, 1);
    assert!(oci.read(&name).await.unwrap().is_none());
    assert_eq!(w.fake.pending_faults(), 0);

    w.fake.fail(Op::ListSecrets, 500, 2);
    let err = oci.read(&name).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");

    // OCI's "not authorized or not found" says what to grant.
    w.fake.fail(Op::ListSecrets, 404, 1);
    let err = oci.read(&name).await.unwrap_err();
    assert!(
        matches!(err, StoreError::PermissionDenied(_))
            && err.to_string().contains("NotAuthorizedOrNotFound")
            && err.to_string().contains("read secret-family")
            && err.to_string().contains(COMPARTMENT),
        "{err}"
    );

    let payload = SecretValue::new(br#"{"password":"never-shown-7c1e"}"#.to_vec());
    w.fake.fail(Op::CreateSecret, 400, 1);
    let err = oci
        .create_if_absent(&name, &payload, &owner("x"), &json_options())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid(_))
            && err
                .to_string()
                .contains("CreateSecret faults.x: HTTP 400 InvalidParameter"),
        "{err}"
    );
    assert!(!err.to_string().contains("never-shown"));
    assert!(err.to_string().len() < 400, "{err}");
    assert!(w.fake.secret("faults.x").is_none());

    // A 409 on create is a taken name: what is there is read back.
    assert!(matches!(
        oci.create_if_absent(&name, &payload, &owner("x"), &json_options())
            .await
            .unwrap(),
        CreateOutcome::Created { .. }
    ));
    w.fake.fail(Op::CreateSecret, 409, 1);
    let other = SecretValue::new(br#"{"password":"other"}"#.to_vec());
    match oci
        .create_if_absent(&name, &other, &owner("x"), &json_options())
        .await
        .unwrap()
    {
        CreateOutcome::Exists(entry) => assert!(entry.payload == payload),
        CreateOutcome::Created { .. } => panic!("created over an existing secret"),
    }

    // An update that keeps meeting a secret changing state gives up.
    w.fake.fail(Op::UpdateSecret, 409, 2);
    let err = oci
        .put(&name, &other, &owner("x"), &json_options())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Unavailable(_))
            && err
                .to_string()
                .contains("UpdateSecret faults.x: HTTP 409 IncorrectState"),
        "{err}"
    );
    assert_eq!(w.fake.pending_faults(), 0);
    assert_eq!(w.fake.versions("faults.x").len(), 1);
}

#[tokio::test]
async fn a_lost_create_answer_is_retried_with_the_same_token_and_creates_once() {
    let w = World::new().await;
    let oci = w.store("oci").await;
    let name = oci.remote_name("shop/lost").unwrap();
    let payload = SecretValue::new(br#"{"password":"lost-answer"}"#.to_vec());
    w.fake.fail_after(Op::CreateSecret, 503, 1);
    assert!(matches!(
        oci.create_if_absent(&name, &payload, &owner("lost"), &json_options())
            .await
            .unwrap(),
        CreateOutcome::Created { version: Some(v) } if v == "1"
    ));
    assert_eq!(w.fake.names(), ["shop.lost"]);
    assert_eq!(w.fake.versions("shop.lost").len(), 1);
    let creates: Vec<_> = w
        .fake
        .log()
        .into_iter()
        .filter(|l| l.op == Op::CreateSecret)
        .collect();
    assert_eq!(creates.len(), 2);
    assert_eq!(creates[0].status, 503);
    assert_eq!(creates[1].status, 200);
    assert!(creates[0].retry_token.is_some() && creates[0].retry_token == creates[1].retry_token);
}

#[tokio::test]
async fn busy_secrets_are_waited_for_and_pages_are_followed() {
    let w = World::new().await;
    let oci = w.store("oci").await;
    let me = owner("slow");
    let name = oci.remote_name("shop/slow").unwrap();
    let payload = SecretValue::new(br#"{"password":"slow"}"#.to_vec());
    w.fake.set_settle_lag(3);
    oci.create_if_absent(&name, &payload, &me, &json_options())
        .await
        .unwrap();
    let entry = oci.read(&name).await.unwrap().unwrap();
    assert!(entry.payload == payload, "read once it is ACTIVE");
    assert!(w.fake.count(Op::GetSecret) >= 2, "polled while CREATING");

    // A secret that stays CREATING is reported within the deadline.
    w.fake.set_settle_lag(1_000);
    let mut fast = w.store_config("oci");
    fast.deadline = Some(Duration::from_secs(1));
    let fast = store::build(&fast).await.unwrap();
    let stuck = fast.remote_name("shop/stuck").unwrap();
    fast.create_if_absent(&stuck, &payload, &owner("stuck"), &json_options())
        .await
        .unwrap();
    let started = Instant::now();
    let err = fast.read(&stuck).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Unavailable(_)) && err.to_string().contains("still CREATING"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_millis(1500));
    w.fake.set_settle_lag(0);

    // The secret of a name can be on a later page, after a deleted one.
    w.fake.set_page_size(1);
    w.fake.seed("shop.paged", b"current", &[]);
    w.fake.seed("shop.paged", b"old", &[]);
    w.fake.set_state("shop.paged", "DELETED");
    w.fake.clear_log();
    let entry = oci
        .read(&oci.remote_name("shop/paged").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(entry.payload.expose() == b"current");
    assert_eq!(w.fake.count(Op::ListSecrets), 2, "two pages");
}

#[tokio::test]
async fn concurrent_creates_in_one_process_write_one_secret() {
    let w = World::new().await;
    let oci = w.store("oci").await;
    let me = owner("race");
    let name = oci.remote_name("k8s/shop/race").unwrap();
    let a = SecretValue::new(br#"{"password":"from-a"}"#.to_vec());
    let b = SecretValue::new(br#"{"password":"from-b"}"#.to_vec());
    let options = json_options();
    let (ra, rb) = tokio::join!(
        oci.create_if_absent(&name, &a, &me, &options),
        oci.create_if_absent(&name, &b, &me, &options)
    );
    let winner: &[u8] = match (ra.unwrap(), rb.unwrap()) {
        (CreateOutcome::Created { .. }, CreateOutcome::Exists(seen)) => {
            assert!(seen.payload == a, "b reads back a's value");
            a.expose()
        }
        (CreateOutcome::Exists(seen), CreateOutcome::Created { .. }) => {
            assert!(seen.payload == b, "a reads back b's value");
            b.expose()
        }
        (x, y) => panic!(
            "exactly one create wins: {} and {}",
            matches!(x, CreateOutcome::Created { .. }),
            matches!(y, CreateOutcome::Created { .. })
        ),
    };
    assert_eq!(w.fake.names(), ["k8s.shop.race"]);
    assert_eq!(w.fake.versions("k8s.shop.race").len(), 1);
    assert!(w.fake.current("k8s.shop.race").unwrap() == winner);
}

#[tokio::test]
async fn the_master_key_comes_from_kms_key_id_key_id_or_an_override() {
    let w = World::new().await;
    // The keyId setting instead of kmsKeyId.
    let (answer, _) = w.create(&mirrored(&["oci-keyid"])).await;
    assert!(allowed(&answer), "{answer}");
    assert_eq!(w.fake.secret("alt.shop.db").unwrap().key_id, KEY);

    // A destination's kmsKeyId (when the admin allows it) replaces it: a
    // key the user may not use is a permission denial naming the key.
    let oci = w.store("oci").await;
    let options = WriteOptions {
        kms_key_id: Some(UNKNOWN_KEY.to_owned()),
        ..json_options()
    };
    let err = oci
        .create_if_absent(
            &oci.remote_name("shop/other-key").unwrap(),
            &SecretValue::new(b"{}".to_vec()),
            &owner("other-key"),
            &options,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::PermissionDenied(_))
            && err
                .to_string()
                .contains("RelatedResourceNotAuthorizedOrNotFound")
            && err.to_string().contains("use keys")
            && err.to_string().contains(UNKNOWN_KEY),
        "{err}"
    );
    let options = WriteOptions {
        kms_key_id: Some("arn:aws:kms:eu-west-1:1:key/x".to_owned()),
        ..json_options()
    };
    let err = oci
        .create_if_absent(
            &oci.remote_name("shop/other-key").unwrap(),
            &SecretValue::new(b"{}".to_vec()),
            &owner("other-key"),
            &options,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid(_)) && err.to_string().contains("kmsKeyId"),
        "{err}"
    );
    assert!(w.fake.secret("shop.other-key").is_none());
}

// ---------------------------------------------------------------------------
// Through the review pipeline.

#[tokio::test]
async fn fresh_create_fills_the_secret_and_the_vault_holds_it_owned() {
    let w = World::new().await;
    let (answer, result) = w.create(&mirrored(&["oci"])).await;
    assert!(allowed(&answer), "{answer}");
    let secret = as_secret(&result);
    let data = data_of(&secret);
    assert!(data.keys().eq(["password", "preset", "token"]));
    assert!(data["preset"] == PRESET, "the author's value is kept");

    let stored = w.fake.secret("k8s.shop.db").unwrap();
    assert_eq!(stored.versions.len(), 1, "one version");
    assert!(
        w.stored("k8s.shop.db").unwrap() == data,
        "the vault holds the Secret's values"
    );
    assert_owned(&stored.tags, "db", "tags");
    assert_eq!(
        stored.tags.get("team").map(String::as_str),
        Some("platform"),
        "the store's extra tags"
    );
    assert_eq!(
        stored.description.as_deref(),
        Some("Managed by secret-santa for Secret shop/db")
    );
    assert_eq!(
        annotations_of(&secret)["secret-santa.io/mirrored-to"],
        "oci"
    );
    assert_eq!(
        w.fake.count(Op::CreateSecret),
        1,
        "a fresh CREATE is one conditional create, no probe"
    );
    assert_eq!(w.fake.count(Op::ListSecrets), 0);
}

#[tokio::test]
async fn a_retried_create_converges_on_the_stored_value() {
    let w = World::new().await;
    let doc = mirrored(&["oci"]);
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
    assert_eq!(w.fake.names(), ["k8s.shop.db"]);
    assert_eq!(w.fake.versions("k8s.shop.db").len(), 1, "no second version");
    assert_eq!(w.fake.count(Op::UpdateSecret), 0);
    assert!(w.stored("k8s.shop.db").unwrap() == first);

    // The store reads the owned entry back when its create finds the name
    // taken.
    let oci = w.store("oci").await;
    let name = oci.remote_name("k8s/shop/db").unwrap();
    let me = Ownership {
        key_set: w.fake.secret("k8s.shop.db").unwrap().tags["secret-santa-key-set"].clone(),
        ..owner("db")
    };
    let fresh = SecretValue::new(br#"{"password":"a-newer-value"}"#.to_vec());
    match oci
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
        CreateOutcome::Created { .. } => panic!("create-if-absent overwrote an entry"),
    }
    assert_eq!(w.fake.versions("k8s.shop.db").len(), 1);
}

#[tokio::test]
async fn unowned_entries_are_refused_and_left_alone() {
    let w = World::new().await;
    let theirs = w.fake.seed(
        "k8s.shop.db",
        br#"{"password":"theirs-oci"}"#,
        &[("owner", "team-x")],
    );
    let (answer, _) = w.create(&mirrored(&["oci"])).await;
    let msg = denied(&answer, "oci", &["theirs-oci"]);
    assert!(
        msg.contains("k8s.shop.db")
            && msg.contains("already exists")
            && msg.contains("nobody we know")
            && msg.contains("adoption"),
        "{msg}"
    );
    let secret = w.fake.secret("k8s.shop.db").unwrap();
    assert_eq!(secret.id, theirs);
    assert_eq!(secret.versions.len(), 1, "no version added");
    assert!(secret.current_content().unwrap() == br#"{"password":"theirs-oci"}"#);
    assert_eq!(secret.tags.len(), 1, "tags untouched");

    // Another Secret's entry is refused just the same, naming its owner.
    let (answer, _) = w.create(&mirrored_named("web", &["oci"])).await;
    assert!(allowed(&answer), "{answer}");
    let mut doc = mirrored_named("db2", &["oci"]);
    doc["metadata"]["annotations"]["secret-santa.io/mirror"] =
        json!("- store: oci\n  key: shop/web\n  keys: [password, token, preset]\n");
    let (answer, _) = w.create(&doc).await;
    let msg = denied(&answer, "oci", &[]);
    assert!(
        msg.contains("owned by Secret shop/web of cluster test-cluster"),
        "{msg}"
    );
    assert_eq!(w.fake.versions("k8s.shop.web").len(), 1);
}

#[tokio::test]
async fn a_secret_pending_deletion_is_denied_with_a_hint() {
    let w = World::new().await;
    let doc = mirrored(&["oci"]);
    let (answer, first) = w.create(&doc).await;
    assert!(allowed(&answer), "{answer}");
    let first = data_of(&as_secret(&first));
    let id = w.fake.secret("k8s.shop.db").unwrap().id;
    // `oci vault secret schedule-secret-deletion`: the name stays taken.
    w.fake.schedule_deletion("k8s.shop.db");
    let (answer, _) = w.create(&doc).await;
    let values: Vec<&str> = first.values().map(String::as_str).collect();
    let msg = denied(&answer, "oci", &values);
    assert!(
        msg.contains("scheduled for deletion or soft-deleted")
            && msg.contains(&format!(
                "oci vault secret cancel-secret-deletion --secret-id {id}"
            ))
            && msg.contains(VAULT),
        "{msg}"
    );
    let secret = w.fake.secret("k8s.shop.db").unwrap();
    assert_eq!(secret.state, "PENDING_DELETION", "never written");
    assert_eq!(secret.versions.len(), 1);

    // A deleted secret whose name OCI still reserves is denied too.
    w.fake.seed("k8s.shop.web", b"{}", &[]);
    w.fake.set_state("k8s.shop.web", "DELETED");
    let (answer, _) = w.create(&mirrored_named("web", &["oci"])).await;
    let msg = denied(&answer, "oci", &[]);
    assert!(
        msg.contains("still holds this name") && msg.contains("another name"),
        "{msg}"
    );
    assert!(!w.fake.names().contains(&"k8s.shop.web".to_owned()));
}

#[tokio::test]
async fn a_secret_in_another_compartment_of_the_vault_is_found_by_name() {
    let w = World::new().await;
    let keys: Vec<String> = ["password", "token", "preset"]
        .iter()
        .map(|k| (*k).to_owned())
        .collect();
    let key_set = secret_santa::mirror::key_set_hash(&keys);
    // In the order the engine lays the keys out, so that the stored bytes
    // are what it would write.
    let stored =
        json!({"password": "from-other-compartment", "token": "tok-9f1c", "preset": PRESET});
    let owned = Ownership {
        key_set,
        ..owner("db")
    }
    .tags();
    let tags: Vec<(&str, &str)> = owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let id = w.fake.seed_in(
        OTHER_COMPARTMENT,
        "k8s.shop.db",
        &serde_json::to_vec(&stored).unwrap(),
        &tags,
    );
    let (answer, result) = w.create(&mirrored(&["oci"])).await;
    assert!(allowed(&answer), "{answer}");
    let data = data_of(&as_secret(&result));
    assert!(
        data["password"] == "from-other-compartment",
        "the owned value is admitted"
    );
    assert!(w.fake.count(Op::GetSecretBundleByName) >= 1);
    let secret = w.fake.secret("k8s.shop.db").unwrap();
    assert_eq!(secret.id, id, "no second secret");
    assert_eq!(secret.versions.len(), 1);

    // Regeneration writes a new version of that secret.
    let mut new = result.clone();
    new["metadata"]["annotations"]["secret-santa.io/regenerate"] = json!("password");
    let answer = w.send(&update(&new, &result)).await;
    assert!(allowed(&answer), "{answer}");
    let secret = w.fake.secret("k8s.shop.db").unwrap();
    assert_eq!(secret.id, id);
    assert_eq!(secret.compartment_id, OTHER_COMPARTMENT);
    assert_eq!(secret.versions.len(), 2);
}

#[tokio::test]
async fn a_bad_signature_is_a_clear_permission_denial() {
    let w = World::new().await;
    for (store, key, reason) in [
        ("oci-rogue", w.keys.rogue.key_id(), "unknown keyId"),
        (
            "oci-impostor",
            w.keys.impostor.key_id(),
            "the signature does not verify",
        ),
    ] {
        w.fake.clear_log();
        let (answer, _) = w.create(&mirrored(&[store])).await;
        let msg = denied(&answer, store, &[]);
        assert!(
            msg.contains("permission denied")
                && msg.contains("CreateSecret k8s.shop.db: HTTP 401 NotAuthenticated")
                && msg.contains("request signature")
                && msg.contains(&key),
            "{msg}"
        );
        let log = w.fake.log();
        assert!(
            log.iter().all(|l| !l.authenticated
                && l.status == 401
                && l.auth_error.as_deref() == Some(reason)),
            "{log:?}"
        );
    }
    assert!(w.fake.names().is_empty(), "nothing written");

    // A clock more than 5 minutes off is refused the same way.
    w.fake.set_clock_skew(600);
    w.fake.clear_log();
    let (answer, _) = w.create(&mirrored(&["oci"])).await;
    let msg = denied(&answer, "oci", &[]);
    assert!(
        msg.contains("NotAuthenticated") && msg.contains("clock"),
        "{msg}"
    );
    assert!(
        w.fake.log()[0]
            .auth_error
            .as_deref()
            .is_some_and(|e| e.contains("from the server's clock"))
    );
    w.fake.set_clock_skew(0);
    let (answer, _) = w.create(&mirrored(&["oci"])).await;
    assert!(allowed(&answer), "{answer}");
}

#[tokio::test]
async fn a_user_who_may_not_write_is_a_clear_denial() {
    let w = World::new().await;
    let (answer, _) = w.create(&mirrored(&["oci-reader"])).await;
    let msg = denied(&answer, "oci-reader", &[]);
    assert!(
        msg.contains("permission denied")
            && msg.contains("CreateSecret k8s.shop.db: HTTP 404 NotAuthorizedOrNotFound")
            && msg.contains("manage secret-family")
            && msg.contains("use keys"),
        "{msg}"
    );
    assert!(w.fake.names().is_empty(), "nothing written");
    // It may read.
    let reader = w.store("oci-reader").await;
    assert!(
        reader
            .read(&reader.remote_name("k8s/shop/db").unwrap())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_vault_that_is_down_is_denied_within_the_deadline() {
    let w = World::new().await;
    let started = Instant::now();
    let (answer, _) = w.create(&mirrored(&["oci-down"])).await;
    let took = started.elapsed();
    let msg = denied(&answer, "oci-down", &[]);
    assert!(
        msg.contains("not reachable")
            && msg.contains(&format!(
                "connection refused at http://127.0.0.1:{}",
                w.closed_port
            )),
        "{msg}"
    );
    assert!(
        took < Duration::from_millis(1600),
        "denied after {took:?}, the store's deadline is 1s"
    );
    assert!(w.fake.names().is_empty());
}

#[tokio::test]
async fn dry_run_touches_nothing() {
    let w = World::new().await;
    let doc = mirrored(&["oci", "oci-pkcs1"]);
    let answer = w.send(&review("CREATE", Some(&doc), None, true)).await;
    assert!(allowed(&answer), "{answer}");
    assert!(
        warnings(&answer).iter().any(|w| w.contains("not written")),
        "{}",
        shown(&answer)
    );
    assert!(w.fake.log().is_empty(), "not a single request");
    assert!(w.fake.names().is_empty());
}

#[tokio::test]
async fn regenerate_adds_a_version_and_reports_its_id() {
    let w = World::new().await;
    let (answer, old) = w.create(&mirrored(&["oci"])).await;
    assert!(allowed(&answer), "{answer}");
    let before = data_of(&as_secret(&old));
    let mut new = old.clone();
    new["metadata"]["annotations"]["secret-santa.io/regenerate"] = json!("password");
    let answer = w.send(&update(&new, &old)).await;
    assert!(allowed(&answer), "{answer}");
    let after = data_of(&as_secret(&apply(&new, &answer)));
    assert!(after["password"] != before["password"] && after["token"] == before["token"]);
    let secret = w.fake.secret("k8s.shop.db").unwrap();
    assert_eq!(secret.versions.len(), 2, "a new version");
    assert_eq!(secret.current, 2);
    assert!(
        w.stored("k8s.shop.db").unwrap() == after,
        "the vault follows the regenerated Secret"
    );
    assert!(secret.versions[0].content != secret.versions[1].content);
    assert_owned(&secret.tags, "db", "ownership kept");
    assert_eq!(
        secret.tags.get("team").map(String::as_str),
        Some("platform")
    );

    // `put` reports the version number OCI gave the new version.
    let oci = w.store("oci").await;
    let name = oci.remote_name("k8s/shop/db").unwrap();
    let me = Ownership {
        key_set: secret.tags["secret-santa-key-set"].clone(),
        ..owner("db")
    };
    let version = oci
        .put(
            &name,
            &SecretValue::new(serde_json::to_vec(&after).unwrap()),
            &me,
            &json_options(),
        )
        .await
        .unwrap();
    assert_eq!(version.as_deref(), Some("3"));
    assert_eq!(
        oci.read(&name).await.unwrap().unwrap().version.as_deref(),
        Some("3")
    );
}

// ---------------------------------------------------------------------------
// Config and key files.

#[tokio::test]
async fn settings_and_key_files_fail_the_build_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = test_key(dir.path(), "key.pem", WRITER_USER, KeyFormat::Pkcs8);
    let other = test_key(dir.path(), "other.pem", WRITER_USER, KeyFormat::Pkcs1);
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a key\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let base = |file: &Path, fingerprint: &str| {
        json!({
            "region": REGION,
            "compartmentId": COMPARTMENT,
            "vaultId": VAULT,
            "kmsKeyId": KEY,
            "tenancy": TENANCY,
            "user": WRITER_USER,
            "fingerprint": fingerprint,
            "privateKeyFile": file,
        })
    };
    let ok = store::build(&store_config(
        "oci",
        "oci-vault",
        base(&key.pem_file, &key.fingerprint),
    ))
    .await;
    assert!(ok.is_ok(), "a good config builds");
    let with = |file: &Path, fingerprint: &str, changes: Value| {
        let mut doc = base(file, fingerprint);
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                doc.as_object_mut().unwrap().remove(k);
            } else {
                doc[k] = v.clone();
            }
        }
        doc
    };
    let cases = [
        (base(&missing, &key.fingerprint), "privateKeyFile"),
        (base(&missing, &key.fingerprint), "missing.pem"),
        (base(&junk, &key.fingerprint), "junk.pem"),
        (
            base(&key.pem_file, &other.fingerprint),
            "does not match privateKeyFile",
        ),
        (
            with(
                &key.pem_file,
                &key.fingerprint,
                json!({"auth": "instancePrincipal"}),
            ),
            "tenancy, user, fingerprint, privateKeyFile: not used with auth: instancePrincipal",
        ),
        (
            with(
                &key.pem_file,
                &key.fingerprint,
                json!({"auth": "resourcePrincipal"}),
            ),
            "not supported yet",
        ),
        (
            with(
                &key.pem_file,
                &key.fingerprint,
                json!({"metadataEndpoint": "http://127.0.0.1:1/opc/v2"}),
            ),
            "metadataEndpoint is only used with auth: instancePrincipal",
        ),
        (
            with(&key.pem_file, &key.fingerprint, json!({"kmsKeyId": null})),
            "kmsKeyId",
        ),
        (
            with(&key.pem_file, &key.fingerprint, json!({"keyId": KEY})),
            "not both",
        ),
        (
            with(&key.pem_file, &key.fingerprint, json!({"vaultOcid": VAULT})),
            "vaultOcid",
        ),
        (
            with(
                &key.pem_file,
                &key.fingerprint,
                json!({"endpoint": "ftp://127.0.0.1:1"}),
            ),
            "endpoint",
        ),
        (
            with(&key.pem_file, &key.fingerprint, json!({"tenancy": null})),
            "tenancy",
        ),
        (
            with(&key.pem_file, &key.fingerprint, json!({"caFile": missing})),
            "caFile",
        ),
    ];
    for (settings, needle) in cases {
        let err = match store::build(&store_config("oci", "oci-vault", settings.clone())).await {
            Ok(_) => panic!("{settings}: built"),
            Err(e) => e,
        };
        assert!(err.contains(needle), "{settings}: {err}");
    }

    // An admin config with an OCI store is checked at load.
    let store_doc = |extra: &str| {
        format!(
            "clusterId: c\nstores:\n  - name: oci\n    type: oci-vault\n    namespaces: ['*']\n{extra}"
        )
    };
    let required = format!(
        "    region: {REGION}\n    compartmentId: \"{COMPARTMENT}\"\n    vaultId: \"{VAULT}\"\n    tenancy: \"{TENANCY}\"\n    user: \"{WRITER_USER}\"\n    fingerprint: \"{}\"\n    privateKeyFile: /keys/oci.pem\n",
        key.fingerprint
    );
    for (extra, expected) in [
        (format!("    vaultID: \"{VAULT}\"\n"), "vaultID"),
        (required.clone(), "kmsKeyId"),
        (
            format!("{required}    kmsKeyId: \"{KEY}\"\n    auth: workloadIdentity\n"),
            "not supported yet",
        ),
        (
            format!("{required}    kmsKeyId: \"{KEY}\"\n    region2: x\n"),
            "region2",
        ),
    ] {
        let err = AdminConfig::parse(&store_doc(&extra)).unwrap_err();
        assert!(err.contains(expected), "{extra}: {err}");
    }
    let ok = AdminConfig::parse(&store_doc(&format!("{required}    kmsKeyId: \"{KEY}\"\n")));
    assert!(ok.is_ok(), "{ok:?}");

    // An instance principal needs none of the API key's settings, and
    // refuses them; nothing is contacted when its store is built.
    let instance = format!(
        "    region: {REGION}\n    compartmentId: \"{COMPARTMENT}\"\n    vaultId: \"{VAULT}\"\n    kmsKeyId: \"{KEY}\"\n    auth: instancePrincipal\n"
    );
    let ok = AdminConfig::parse(&store_doc(&instance));
    assert!(ok.is_ok(), "{ok:?}");
    let err = AdminConfig::parse(&store_doc(&format!(
        "{instance}    privateKeyFile: /keys/oci.pem\n"
    )))
    .unwrap_err();
    assert!(
        err.contains("privateKeyFile: not used with auth: instancePrincipal"),
        "{err}"
    );
    let instance = json!({
        "region": REGION,
        "compartmentId": COMPARTMENT,
        "vaultId": VAULT,
        "kmsKeyId": KEY,
        "auth": "instancePrincipal",
        "metadataEndpoint": "http://127.0.0.1:1/opc/v2",
    });
    assert!(
        store::build(&store_config("oci", "oci-vault", instance.clone()))
            .await
            .is_ok(),
        "an instance principal store builds without its metadata service"
    );
    for (key, value) in [
        ("metadataEndpoint", json!("ftp://169.254.169.254/opc/v2")),
        (
            "federationEndpoint",
            json!("auth.us-ashburn-1.oraclecloud.com"),
        ),
        ("user", json!(WRITER_USER)),
    ] {
        let mut settings = instance.clone();
        settings[key] = value;
        let err = match store::build(&store_config("oci", "oci-vault", settings.clone())).await {
            Ok(_) => panic!("{settings}: built"),
            Err(e) => e,
        };
        assert!(err.contains(key), "{settings}: {err}");
    }
}

// ---------------------------------------------------------------------------
// Instance principals.

/// The Vault requests of a log (not the metadata service's, nor the
/// federation endpoint's).
fn service_requests(log: &[oci_fake::Logged]) -> Vec<&oci_fake::Logged> {
    log.iter()
        .filter(|l| !matches!(l.op, Op::Metadata | Op::Federation))
        .collect()
}

#[tokio::test]
async fn instance_principal_store_satisfies_the_store_contract() {
    let w = World::new().await;
    let identity = w.fake.provision_instance();
    common::contract::run(w.store("oci-instance").await, "instance").await;
    let secret = w.fake.secret("instance.shop.db").unwrap();
    assert_eq!(secret.versions.len(), 2, "create, then put: two versions");
    assert_owned(&secret.tags, "db", "tags");
    assert_eq!(secret.compartment_id, COMPARTMENT);

    let log = w.fake.log();
    // The identity read once from the metadata service, with its header.
    let metadata: Vec<&str> = log
        .iter()
        .filter(|l| l.op == Op::Metadata)
        .map(|l| l.path.as_str())
        .collect();
    assert_eq!(
        metadata,
        [
            "/opc/v2/identity/cert.pem",
            "/opc/v2/identity/key.pem",
            "/opc/v2/identity/intermediate.pem"
        ],
        "{log:?}"
    );
    assert!(
        log.iter()
            .filter(|l| l.op == Op::Metadata)
            .all(|l| l.authenticated && l.status == 200)
    );
    // One token for the whole contract, requested with the instance
    // certificate's key the way Oracle's SDKs sign it.
    let federations: Vec<_> = log.iter().filter(|l| l.op == Op::Federation).collect();
    assert_eq!(federations.len(), 1, "{log:?}");
    let federation = federations[0];
    assert!(
        federation.authenticated && federation.status == 200,
        "{federation:?}"
    );
    assert_eq!(
        federation.key_id.as_deref(),
        Some(identity.federation_key_id().as_str())
    );
    assert_eq!(
        federation.signed_headers.as_deref(),
        Some("date (request-target) content-length content-type x-content-sha256")
    );
    assert_eq!(w.fake.tokens_issued(), 1);
    // Every Vault request signed with the session key, under the token.
    let service = service_requests(&log);
    assert!(!service.is_empty());
    assert!(
        service
            .iter()
            .all(|l| l.authenticated && l.key_id.as_deref().is_some_and(|k| k.starts_with("ST$"))),
        "{service:?}"
    );
    for l in &service {
        let expected = if matches!(l.method.as_str(), "POST" | "PUT") {
            "date (request-target) host content-length content-type x-content-sha256"
        } else {
            "date (request-target) host"
        };
        assert_eq!(l.signed_headers.as_deref(), Some(expected), "{l:?}");
    }
    let tokens: BTreeSet<&str> = service.iter().filter_map(|l| l.key_id.as_deref()).collect();
    assert_eq!(tokens.len(), 1, "one token");
    for op in [
        Op::ListSecrets,
        Op::CreateSecret,
        Op::GetSecretBundle,
        Op::UpdateSecret,
    ] {
        assert!(w.fake.count(op) > 0, "{op:?} is used");
    }
}

#[tokio::test]
async fn the_security_token_is_cached_across_reviews_and_replaced_in_time() {
    let w = World::new().await;
    w.fake.provision_instance();
    // A short-lived token: replaced after half its lifetime (3 s).
    w.fake.set_token_lifetime(6);
    for name in ["db", "web"] {
        let (answer, _) = w.create(&mirrored_named(name, &["oci-instance"])).await;
        assert!(allowed(&answer), "{name}: {}", shown(&answer));
    }
    assert_eq!(w.fake.names(), ["ip.shop.db", "ip.shop.web"]);
    assert_eq!(
        w.fake.count(Op::Federation),
        1,
        "one token for both reviews"
    );

    // The certificates rotate; once the token is due it is replaced,
    // with the certificate the metadata service serves now, before any
    // request is refused.
    let rotated = w.fake.provision_instance();
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let (answer, _) = w.create(&mirrored_named("api", &["oci-instance"])).await;
    assert!(allowed(&answer), "{answer}");
    let log = w.fake.log();
    let federations: Vec<_> = log.iter().filter(|l| l.op == Op::Federation).collect();
    assert_eq!(federations.len(), 2, "{log:?}");
    assert_eq!(
        federations[1].key_id.as_deref(),
        Some(rotated.federation_key_id().as_str()),
        "the certificates are fetched again for a new token"
    );
    assert_eq!(
        log.iter().filter(|l| l.op == Op::Metadata).count(),
        6,
        "three items for each token"
    );
    assert!(
        log.iter().all(|l| l.status != 401),
        "no request was refused: {log:?}"
    );
    let tokens: BTreeSet<&str> = log
        .iter()
        .filter(|l| l.op == Op::CreateSecret)
        .filter_map(|l| l.key_id.as_deref())
        .collect();
    assert_eq!(tokens.len(), 2, "the third review signs with the new token");

    // A token refused before its time (revoked, a clock ahead): replaced,
    // and the request sent once more.
    w.fake.expire_tokens();
    w.fake.clear_log();
    let (answer, _) = w.create(&mirrored_named("cache", &["oci-instance"])).await;
    assert!(allowed(&answer), "{answer}");
    let log = w.fake.log();
    let creates: Vec<_> = log.iter().filter(|l| l.op == Op::CreateSecret).collect();
    assert_eq!(creates.len(), 2, "{log:?}");
    assert_eq!(creates[0].status, 401);
    assert_eq!(
        creates[0].auth_error.as_deref(),
        Some("the security token has expired")
    );
    assert_eq!(creates[1].status, 200);
    assert!(creates[0].key_id != creates[1].key_id, "a new token");
    assert_eq!(log.iter().filter(|l| l.op == Op::Federation).count(), 1);
    assert_eq!(w.fake.versions("ip.shop.cache").len(), 1, "created once");
}

#[tokio::test]
async fn a_certificate_the_auth_service_does_not_trust_is_a_clear_permission_denial() {
    let w = World::new().await;
    let identity = w.fake.provision_untrusted_instance();
    let (answer, _) = w.create(&mirrored(&["oci-instance"])).await;
    let msg = denied(&answer, "oci-instance", &[]);
    assert!(
        msg.contains("permission denied")
            && msg.contains("CreateSecret ip.shop.db: instance principal")
            && msg.contains("HTTP 401 NotAuthenticated")
            && msg.contains("did not accept the instance certificate")
            && msg.contains(TENANCY)
            && msg.contains(&identity.fingerprint),
        "{msg}"
    );
    let log = w.fake.log();
    assert!(
        service_requests(&log).is_empty(),
        "no Vault request without a token: {log:?}"
    );
    let federation = log.iter().find(|l| l.op == Op::Federation).unwrap();
    assert_eq!(federation.status, 401);
    assert!(
        federation
            .auth_error
            .as_deref()
            .is_some_and(|e| e.contains("does not chain to a CA the auth service trusts")),
        "{federation:?}"
    );
    assert_eq!(w.fake.tokens_issued(), 0);
    assert!(w.fake.names().is_empty(), "nothing written");

    let store = w.store("oci-instance").await;
    let err = store
        .read(&store.remote_name("ip/shop/db").unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::PermissionDenied(_))
            && err
                .to_string()
                .contains("ListSecrets ip.shop.db: instance principal"),
        "{err}"
    );

    // A trusted instance whose dynamic group may only read: the denial says
    // which policy the dynamic group needs.
    w.fake.provision_instance();
    w.fake.set_instance_perms(Perms::READ);
    let (answer, _) = w.create(&mirrored(&["oci-instance"])).await;
    let msg = denied(&answer, "oci-instance", &[]);
    assert!(
        msg.contains("CreateSecret ip.shop.db: HTTP 404 NotAuthorizedOrNotFound")
            && msg.contains("the instance principal may not write secrets")
            && msg.contains("Allow dynamic-group <dynamic-group> to manage secret-family"),
        "{msg}"
    );
    assert!(w.fake.names().is_empty(), "nothing written");
}

#[tokio::test]
async fn a_metadata_service_that_is_down_is_unavailable_naming_it() {
    let w = World::new().await;
    let metadata = format!("http://127.0.0.1:{}/opc/v2", w.closed_port);
    let started = Instant::now();
    let (answer, _) = w.create(&mirrored(&["oci-instance-down"])).await;
    let took = started.elapsed();
    let msg = denied(&answer, "oci-instance-down", &[]);
    assert!(
        msg.contains("not reachable")
            && msg.contains(&format!(
                "the instance metadata service at {metadata} (identity/cert.pem)"
            ))
            && msg.contains("connection refused"),
        "{msg}"
    );
    assert!(
        took < Duration::from_millis(1600),
        "denied after {took:?}, the store's deadline is 1s"
    );
    assert!(w.fake.log().is_empty(), "nothing reached the vault");

    let store = w.store("oci-instance-down").await;
    let err = store
        .read(&store.remote_name("ip/shop/db").unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Unavailable(_))
            && err.to_string().contains("instance metadata service"),
        "{err}"
    );
}
