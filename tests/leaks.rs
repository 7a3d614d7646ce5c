//! No generated value may appear in logs (even at `trace`), metrics, denial
//! messages or warnings. Runs many scenarios through the real binary, then
//! searches everything it said for every value it generated.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use base64::Engine as _;
use common::harness::{Client, Server, make_certs};
use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn generated_values_never_leak() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "clusterId: leak\nstores:\n  - name: mem\n    type: memory\n    namespaces: [\"shop\"]\n  - name: elsewhere\n    type: memory\n    namespaces: [\"billing\"]\n",
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
