//! No generated value may appear in logs (even at `trace`), metrics, denial
//! messages or warnings. Runs many scenarios through the real binary, then
//! searches everything it said for every value it generated.
#![cfg(feature = "aws")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use base64::Engine as _;
use common::harness::{Client, Server, make_certs};
use common::moto::{Moto, REGION, free_port};
use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn generated_values_never_leak() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let config = dir.path().join("config.yaml");
    // Real SDK stores too (on moto, and one whose port is closed): at
    // `trace` the AWS SDK logs its own requests, and a failing store's
    // denial carries the SDK's error.
    let moto = Moto::start();
    std::fs::write(dir.path().join("id"), "test\n").unwrap();
    std::fs::write(dir.path().join("secret"), "test\n").unwrap();
    let auth = format!(
        "{{ method: accessKey, accessKeyIdFile: {}, secretAccessKeyFile: {} }}",
        dir.path().join("id").display(),
        dir.path().join("secret").display()
    );
    std::fs::write(
        &config,
        format!(
            "clusterId: leak\nstores:\n  - name: mem\n    type: memory\n    namespaces: [\"shop\"]\n  - name: elsewhere\n    type: memory\n    namespaces: [\"billing\"]\n  \
             - name: sm\n    type: aws-secrets-manager\n    region: {REGION}\n    endpoint: {}\n    auth: {auth}\n    namespaces: [\"shop\"]\n  \
             - name: sm-down\n    type: aws-secrets-manager\n    region: {REGION}\n    endpoint: http://127.0.0.1:{}\n    auth: {auth}\n    namespaces: [\"shop\"]\n    deadline: 1s\n",
            moto.endpoint,
            free_port()
        ),
    )
    .unwrap();
    let server = Server::start(
        &dir.path().join("tls.crt"),
        &dir.path().join("tls.key"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--log",
            "trace",
            "--log-format",
            "json",
        ],
        dir.path(),
    );
    let mut client = Client::connect(server.webhook, &dir.path().join("ca.crt"))
        .await
        .unwrap();

    let mut values: BTreeSet<String> = BTreeSet::new();
    let mut said: Vec<String> = Vec::new();
    let record =
        |answer: &Value, object: &Value, values: &mut BTreeSet<String>, said: &mut Vec<String>| {
            said.push(message(answer));
            said.extend(warnings(answer));
            let result = apply(object, answer);
            for v in data_of(&as_secret(&result)).into_values() {
                values.insert(v);
            }
        };

    let pin = "- name: pin\n  type: random_password\n  config: { length: 12, lower: false, upper: false, special: false }\n";
    let pass = "- name: pass\n  type: random_password\n  config: { length: 24 }\n";
    // A "random" value we know in advance: one allowed character. It goes
    // through every denial path, where the real values cannot be seen.
    let canary = "- name: canary\n  type: random_string\n  config: { length: 40, lower: false, upper: false, numeric: false, override_special: \"Q\" }\n";
    values.insert("Q".repeat(40));
    let docs = vec![
        SecretDoc::new("k1").labelled().generators(canary).template("v: {{ canary.value | int }}\n"),
        SecretDoc::new("k2").labelled().generators(canary).template("v: {{ canary.value | b64decode }}\n"),
        SecretDoc::new("k3").labelled().generators(canary).template("v: {{ canary.value }} {{ canary.value }}: x\n"),
        SecretDoc::new("k4").labelled().generators(canary).template("v: {{ canary.value | json }}\nv: {{ canary.value | json }}\n"),
        SecretDoc::new("k5").labelled().generators(canary).template("v: [{{ canary.value }}\n"),
        SecretDoc::new("k6").labelled().generators(&format!("{canary}- name: n\n  type: random_integer\n  config: {{ min: \"{{{{ canary.value }}}}\" }}\n")).template("x: y\n"),
        SecretDoc::new("k7").labelled().generators(&format!("{canary}- name: t\n  type: time_static\n  config: {{ rfc3339: \"{{{{ canary.value }}}}\" }}\n")).template("x: y\n"),
        SecretDoc::new("k8").labelled().generators(canary).template("v: {{ canary.value | json }}\n").annotate("secret-santa.io/mirror", "- store: elsewhere\n"),
        SecretDoc::new("k9").labelled().generators(canary).template("v: {{ canary.value | json }}\n").typed("kubernetes.io/tls"),
        SecretDoc::new("a").labelled().autogenerate("password, token"),
        SecretDoc::new("b")
            .labelled()
            .generators(&format!("{pass}- name: u\n  type: random_uuid\n- name: b\n  type: random_bytes\n  config: {{ encoding: hex }}\n"))
            .template("password: {{ pass.value | json }}\nid: {{ u.value | removeHyphens | json }}\nhash: {{ pass.value | sha256 | json }}\nraw: {{ b.value | json }}\n"),
        SecretDoc::new("c").labelled().autogenerate("password").annotate("secret-santa.io/mirror", "- store: mem\n"),
        // Denials after values were generated: the message must not echo them.
        SecretDoc::new("d").labelled().generators(pin).template("pin: {{ pin.value }}\n"),
        SecretDoc::new("e").labelled().generators(pass).template("password: {{ pass.value | int }}\n"),
        SecretDoc::new("f").labelled().generators(pass).template("password: {{ pass.value | b64decode }}\n"),
        SecretDoc::new("g").labelled().generators(pass).template("password: [{{ pass.value | json }}\n"),
        SecretDoc::new("h").labelled().generators(&format!("{pass}- name: n\n  type: random_integer\n  config: {{ min: \"{{{{ pass.value }}}}\" }}\n")).template("x: y\n"),
        SecretDoc::new("i").labelled().autogenerate("password").annotate("secret-santa.io/mirror", "- store: elsewhere\n"),
        // Real stores: written (the SDK's trace logging on), and down.
        SecretDoc::new("j").labelled().generators(pass).template("password: {{ pass.value | json }}\n").annotate("secret-santa.io/mirror", "- store: sm\n"),
        SecretDoc::new("k").labelled().generators(pass).template("password: {{ pass.value | json }}\n").annotate("secret-santa.io/mirror", "- store: sm-down\n"),
        // Keys and certificates, PEM and OpenSSH.
        SecretDoc::new("l").labelled().typed("kubernetes.io/tls")
            .generators("- name: key\n  type: tls_private_key\n  config: { algorithm: ED25519 }\n- name: cert\n  type: tls_self_signed_cert\n  config: { key_pem: \"{{ key.private_key_pem }}\", common_name: db }\n")
            .template("tls.crt: {{ cert.cert_pem | json }}\ntls.key: {{ key.private_key_pem | json }}\n"),
        SecretDoc::new("m").labelled()
            .generators("- name: ssh\n  type: ssh_keypair\n- name: auth\n  type: basic_auth\n")
            .template("id: {{ ssh.private_key_openssh | json }}\npub: {{ ssh.public_key_openssh | json }}\nhtpasswd: {{ auth.htpasswd | json }}\npassword: {{ auth.password | json }}\n"),
    ];
    for doc in &docs {
        let obj = doc.value();
        for dry in [false, true] {
            let review = review("CREATE", Some(&obj), None, dry);
            let (status, answer) = client.post_review(&review).await.unwrap();
            assert_eq!(status, 200);
            record(&answer, &obj, &mut values, &mut said);
        }
    }
    // UPDATE paths: restore and regenerate.
    let obj = docs[0].value();
    let (_, answer) = client.post_review(&create(&obj)).await.unwrap();
    let old = apply(&obj, &answer);
    record(&answer, &obj, &mut values, &mut said);
    let (_, answer) = client.post_review(&update(&obj, &old)).await.unwrap();
    record(&answer, &obj, &mut values, &mut said);
    let mut regen = old.clone();
    regen["metadata"]["annotations"]["secret-santa.io/regenerate"] = json!("all");
    let (_, answer) = client.post_review(&update(&regen, &old)).await.unwrap();
    record(&answer, &regen, &mut values, &mut said);

    assert!(
        values.len() >= 10,
        "scenarios generated values: {}",
        values.len()
    );
    let (_, metrics) = server.admin_get("/metrics").await;
    // Give the log writer a moment.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let log = server.log();
    assert!(
        log.contains("\"level\":\"TRACE\"") || log.contains("TRACE"),
        "trace logging was on"
    );
    assert!(
        log.contains("aws_smithy"),
        "the AWS SDK's own trace logging was on"
    );
    assert!(
        said.iter()
            .any(|m| m.contains("sm-down") && m.contains("not reachable")),
        "a failing real store was denied"
    );
    let haystacks = [
        ("log", log.as_str()),
        ("metrics", metrics.as_str()),
        ("messages", &said.join("\n")),
    ];
    let mut leaks = Vec::new();
    for v in &values {
        if v.len() < 6 {
            continue;
        }
        // A multi-line value (a PEM key) also must not show line by line.
        let mut lines: Vec<String> = v
            .lines()
            .filter(|l| l.len() >= 16 && !l.starts_with("-----"))
            .map(str::to_owned)
            .collect();
        lines.retain(|l| l != v);
        for line in &lines {
            for (name, text) in &haystacks {
                if text.contains(line.as_str()) {
                    leaks.push(format!("a line of a generated value appears in {name}"));
                }
            }
        }
        let forms = [
            v.clone(),
            base64::engine::general_purpose::STANDARD.encode(v),
            serde_json::to_string(v).unwrap(),
        ];
        for (name, text) in &haystacks {
            for form in &forms {
                if text.contains(form.trim_matches('"')) {
                    leaks.push(format!(
                        "a generated value ({} bytes) appears in {name}",
                        v.len()
                    ));
                }
            }
        }
    }
    assert!(leaks.is_empty(), "{leaks:?}");
}
