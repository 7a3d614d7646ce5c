//! CPU cost of one review in-process, without the transport: the review
//! function alone (decode, generate, render, patch, encode) on one thread,
//! per case, against a baseline in the same run: decoding the same body as
//! a `serde_json::Value` and encoding a fixed answer (the least any
//! AdmissionReview server does). Prints µs per review and the ratio.
//!
//! `cargo bench --bench review_cpu` (release build). `SS_BENCH_ROUNDS` sets
//! the reviews per case (default 20000), `SS_BENCH_CASE` picks cases by name.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Instant;

use secret_santa::config::AdminConfig;
use secret_santa::{App, Reviewer};
use serde_json::{Value, json};

/// The allocator the server binary runs with (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    secret_santa::install_crypto_provider();
    let rounds: usize = std::env::var("SS_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let app = App::new(
        Reviewer::without_stores(AdminConfig::default()),
        3 * 1024 * 1024,
    );
    let cases = [
        ("password-only", password_review()),
        (
            "password-only, apiserver-shaped",
            apiserver_password_review(),
        ),
        ("10-key template", template_review()),
        ("not opted in", plain_review()),
    ];
    let fixed = serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "response": {"uid": "b7d3e2a4-bench", "allowed": true}
    }))
    .unwrap();
    println!("# review CPU per call, one thread, {rounds} rounds per case");
    println!("case               ours µs   baseline µs   ratio (ours / baseline)");
    // `SS_BENCH_CASE` runs just the cases whose name contains it (for
    // profiling one case under callgrind or perf).
    let only = std::env::var("SS_BENCH_CASE").unwrap_or_default();
    for (name, review) in cases {
        if !name.contains(only.as_str()) {
            continue;
        }
        let body = serde_json::to_vec(&review).unwrap();
        let started = Instant::now();
        for _ in 0..rounds {
            let v: Value = serde_json::from_slice(black_box(&body)).unwrap();
            black_box(&v);
            black_box(fixed.clone());
        }
        let base = started.elapsed().as_secs_f64() * 1e6 / rounds as f64;
        let started = Instant::now();
        for _ in 0..rounds {
            black_box(rt.block_on(app.answer(black_box(&body), None)));
        }
        let ours = started.elapsed().as_secs_f64() * 1e6 / rounds as f64;
        println!("{name:<18} {ours:>8.2} {base:>13.2} {:>10.1}x", ours / base);
    }
}

fn review_of(object: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "b7d3e2a4-bench",
            "kind": {"group": "", "version": "v1", "kind": "Secret"},
            "resource": {"group": "", "version": "v1", "resource": "secrets"},
            "name": "bench", "namespace": "bench", "operation": "CREATE",
            "userInfo": {"username": "bench"},
            "object": object, "oldObject": null, "dryRun": false
        }
    })
}

fn secret(annotations: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "bench", "namespace": "bench",
            "labels": {"secret-santa.io/enabled": "true"}, "annotations": annotations}
    })
}

fn password_review() -> Value {
    review_of(secret(json!({"secret-santa.io/autogenerate": "password"})))
}

/// The first CREATE a real kube-apiserver sent (tests/fixtures), opted in
/// with the `autogenerate` shorthand: managedFields, the last-applied
/// annotation and the rest of what the apiserver adds, as it arrives.
fn apiserver_password_review() -> Value {
    let line = include_str!("../tests/fixtures/apiserver-1.20.2-reviews.jsonl")
        .lines()
        .next()
        .unwrap();
    let mut review: Value = serde_json::from_str::<Value>(line).unwrap()["review"].take();
    let metadata = &mut review["request"]["object"]["metadata"];
    metadata["labels"]["secret-santa.io/enabled"] = json!("true");
    metadata["annotations"]["secret-santa.io/autogenerate"] = json!("password");
    review
}

fn plain_review() -> Value {
    let mut review = review_of(secret(json!({})));
    review["request"]["object"]["metadata"]["labels"] = json!({});
    review
}

fn template_review() -> Value {
    let mut generators = String::new();
    let mut template = String::new();
    for i in 0..10 {
        generators.push_str(&format!(
            "- name: g{i}\n  type: random_password\n  config: {{ length: 24 }}\n"
        ));
        template.push_str(&format!("key{i}: {{{{ g{i}.value | json }}}}\n"));
    }
    review_of(secret(json!({
        "secret-santa.io/generators": generators,
        "secret-santa.io/template": template,
    })))
}
