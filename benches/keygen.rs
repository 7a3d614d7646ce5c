//! Key generation: our generators (aws-lc-rs underneath, PEM outputs
//! included) against `openssl genpkey` writing PEM, in the same run, per
//! algorithm. openssl runs as a process per key, so its figure includes a
//! process start; that start is measured too (`openssl version`) and the
//! report gives the ratio both raw and with the start subtracted.
//!
//! `cargo bench --bench keygen` (release build). `SS_BENCH_SECONDS` sets the
//! measuring time per side and algorithm (default 3); RSA takes at least 5
//! samples per side whatever the time.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use secret_santa::generators::{Limits, lookup};
use serde_json::{Value, json};

struct Case {
    label: &'static str,
    generator: &'static str,
    config: Value,
    openssl: &'static [&'static str],
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            label: "RSA-2048",
            generator: "crypto_rsa_key",
            config: json!({"key_size": 2048}),
            openssl: &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        },
        Case {
            label: "RSA-3072",
            generator: "crypto_rsa_key",
            config: json!({"key_size": 3072}),
            openssl: &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072"],
        },
        Case {
            label: "RSA-4096",
            generator: "crypto_rsa_key",
            config: json!({"key_size": 4096}),
            openssl: &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096"],
        },
        Case {
            label: "EC P-256",
            generator: "crypto_ecdsa_key",
            config: json!({"curve": "P256"}),
            openssl: &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        },
        Case {
            label: "Ed25519",
            generator: "crypto_ed25519_key",
            config: json!({}),
            openssl: &["-algorithm", "ED25519"],
        },
    ]
}

fn seconds() -> Duration {
    Duration::from_secs_f64(
        std::env::var("SS_BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3.0),
    )
}

/// Runs `f` until `budget` is spent (at least `min` times, at most 10,000)
/// and returns the median duration.
fn median_of(budget: Duration, min: usize, mut f: impl FnMut()) -> (Duration, usize) {
    let mut samples = Vec::new();
    let started = Instant::now();
    while samples.len() < min || (started.elapsed() < budget && samples.len() < 10_000) {
        let t = Instant::now();
        f();
        samples.push(t.elapsed());
    }
    samples.sort();
    (samples[samples.len() / 2], samples.len())
}

fn openssl(args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl is installed (.ci/install.sh)");
    assert!(status.success(), "openssl {args:?} failed");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    secret_santa::install_crypto_provider();
    let budget = seconds();
    let limits = Limits::default();
    let version = String::from_utf8_lossy(
        &Command::new("openssl")
            .arg("version")
            .output()
            .expect("openssl is installed (.ci/install.sh)")
            .stdout,
    )
    .trim()
    .to_owned();
    let (spawn, _) = median_of(budget / 3, 20, || openssl(&["version"]));
    println!(
        "key generation, median per key; {version}; process start {:.2} ms",
        ms(spawn)
    );
    println!(
        "{:<10} {:>10} {:>12} {:>10} {:>22}",
        "algorithm", "ours ms", "openssl ms", "ratio", "ratio (start removed)"
    );
    for case in cases() {
        let entry = lookup(case.generator).expect("generator is registered");
        let min = if case.label.starts_with("RSA") { 5 } else { 50 };
        let (ours, n_ours) = median_of(budget, min, || {
            let out = entry.generate(&case.config, &limits).expect("generates");
            std::hint::black_box(out);
        });
        let mut args = vec!["genpkey"];
        args.extend_from_slice(case.openssl);
        let (theirs, n_theirs) = median_of(budget, min, || openssl(&args));
        let net = theirs.saturating_sub(spawn);
        println!(
            "{:<10} {:>10.3} {:>12.3} {:>9.2}x {:>21.2}x   (n = {n_ours} / {n_theirs})",
            case.label,
            ms(ours),
            ms(theirs),
            ours.as_secs_f64() / theirs.as_secs_f64(),
            ours.as_secs_f64() / net.as_secs_f64().max(1e-9),
        );
    }
    println!("ratio = our time / openssl's time: below 1 means we are faster");
}
