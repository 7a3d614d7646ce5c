//! The latency one mirror adds to a review, against a direct SDK
//! `CreateSecret` on the same moto server in the same run (issue 4's figure;
//! target: the review with a mirror ≤ 1.2× a direct CreateSecret).
//!
//! Each round times, interleaved so drift hits every side alike:
//! a direct `CreateSecret`; a review with one Secrets Manager mirror (the
//! whole in-process pipeline: decode, generate, probe, create, patch); and the
//! same review without a mirror.
//!
//! `cargo bench --bench mirror` (release build; needs moto from
//! `.ci/install.sh`). `SS_BENCH_ROUNDS` sets the rounds (default 200).
#![allow(clippy::expect_used, clippy::unwrap_used, dead_code)]

#[path = "../tests/common/moto.rs"]
mod moto;

use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::config::{Credentials, Region};
use secret_santa::config::AdminConfig;
use secret_santa::store::Stores;
use secret_santa::{App, Reviewer};
use serde_json::{Value, json};

fn review(name: &str, mirror: bool) -> Vec<u8> {
    let mut annotations = json!({"secret-santa.io/autogenerate": "password, token"});
    if mirror {
        annotations["secret-santa.io/mirror"] = json!("- store: sm\n");
    }
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("uid-{name}"),
            "kind": {"group": "", "version": "v1", "kind": "Secret"},
            "resource": {"group": "", "version": "v1", "resource": "secrets"},
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "bench"},
            "dryRun": false,
            "object": {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": name,
                    "namespace": "shop",
                    "labels": {"secret-santa.io/enabled": "true"},
                    "annotations": annotations,
                },
                "type": "Opaque",
            },
        },
    }))
    .unwrap()
}

fn allowed(answer: &Value) -> bool {
    answer["response"]["allowed"] == json!(true)
}

fn stats(v: &mut [Duration]) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[(v.len() * 99 / 100).min(v.len() - 1)])
}

fn main() {
    secret_santa::install_crypto_provider();
    let rounds: usize = std::env::var("SS_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(rounds));
}

async fn run(rounds: usize) {
    let moto = moto::Moto::start();
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(creds.path().join("id"), "test\n").unwrap();
    std::fs::write(creds.path().join("secret"), "test\n").unwrap();
    let yaml = format!(
        "clusterId: bench\nstores:\n  - name: sm\n    type: aws-secrets-manager\n    region: {}\n    endpoint: {}\n    \
         auth: {{ method: accessKey, accessKeyIdFile: {}, secretAccessKeyFile: {} }}\n    namespaces: [\"shop\"]\n    prefix: \"k8s/\"\n",
        moto::REGION,
        moto.endpoint,
        creds.path().join("id").display(),
        creds.path().join("secret").display(),
    );
    let config = AdminConfig::parse(&yaml).unwrap();
    let stores = Stores::from_config(&config).await.unwrap();
    let app = App::new(Reviewer::new(config, stores), 3 * 1024 * 1024);
    let sm = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::Config::builder()
            .behavior_version_latest()
            .region(Region::new(moto::REGION))
            .endpoint_url(&moto.endpoint)
            .credentials_provider(Credentials::new("test", "test", None, None, "bench"))
            .build(),
    );

    // Warm both connection pools and moto's backend.
    for i in 0..5 {
        let answer = app
            .review_bytes(&review(&format!("warm{i}"), true), None)
            .await;
        assert!(allowed(&answer), "warm-up review is allowed");
        sm.create_secret()
            .name(format!("warm/{i}"))
            .secret_string("{}")
            .send()
            .await
            .unwrap();
    }

    let mut direct = Vec::with_capacity(rounds);
    let mut mirrored = Vec::with_capacity(rounds);
    let mut plain = Vec::with_capacity(rounds);
    for i in 0..rounds {
        // The direct call sends a payload of the same shape the mirror sends.
        let started = Instant::now();
        sm.create_secret()
            .name(format!("direct/{i}"))
            .secret_string(r#"{"password":"0123456789abcdef","token":"0123456789abcdef"}"#)
            .send()
            .await
            .unwrap();
        direct.push(started.elapsed());

        let body = review(&format!("m{i}"), true);
        let started = Instant::now();
        let answer = app.review_bytes(&body, None).await;
        mirrored.push(started.elapsed());
        assert!(allowed(&answer), "mirrored review is allowed");

        let body = review(&format!("p{i}"), false);
        let started = Instant::now();
        let answer = app.review_bytes(&body, None).await;
        plain.push(started.elapsed());
        assert!(allowed(&answer), "plain review is allowed");
    }
    let (d50, d99) = stats(&mut direct);
    let (m50, m99) = stats(&mut mirrored);
    let (p50, p99) = stats(&mut plain);
    let added = m50.saturating_sub(p50);
    println!("mirror latency over {rounds} rounds against moto on loopback (p50 / p99)");
    println!("  direct SDK CreateSecret            {d50:>10.2?} / {d99:>10.2?}");
    println!("  review with one Secrets Manager mirror {m50:>6.2?} / {m99:>10.2?}");
    println!("  review without a mirror            {p50:>10.2?} / {p99:>10.2?}");
    println!(
        "  ratio review-with-mirror / direct CreateSecret (p50): {:.2}x (target <= 1.2x)",
        m50.as_secs_f64() / d50.as_secs_f64()
    );
    println!(
        "  latency the mirror adds (p50): {added:.2?} = {:.2}x of a direct CreateSecret",
        added.as_secs_f64() / d50.as_secs_f64()
    );
}
