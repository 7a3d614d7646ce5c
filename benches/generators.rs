//! Per-generator cost: the median time of one `generate` call, as the
//! pipeline pays it (config parsing, validation, generation, and dropping the
//! zeroized outputs), for every registered generator type with a typical
//! config, against a baseline measured in the same run: filling 32 bytes
//! from `rand::rng()`, the least any generator does.
//!
//! `cargo bench --bench generators` (release build). `SS_BENCH_SECONDS` sets
//! the measuring time per row (default 1); every row takes at least 5
//! samples whatever the time. Calls far shorter than the clock's resolution
//! are timed in batches (a sample is then the batch's time over its size).
//! The run fails if a registered generator type has no row.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use rand::RngExt as _;
use secret_santa::generators::{Limits, lookup, registry};
use serde_json::{Value, json};

/// Fewest samples per row, whatever the time budget.
const MIN_SAMPLES: usize = 5;
/// Most samples per row.
const MAX_SAMPLES: usize = 10_000;
/// A timed batch lasts at least this long, so that the clock's own cost
/// (tens of nanoseconds) does not dominate sub-microsecond calls.
const BATCH_TARGET: Duration = Duration::from_micros(50);

struct Case {
    generator: &'static str,
    label: &'static str,
    config: Value,
}

/// The inputs the chained TLS generators take, made once before measuring:
/// an ECDSA P-256 CA key and CA certificate, a leaf key and its CSR.
struct Inputs {
    ca_key_pem: String,
    ca_cert_pem: String,
    leaf_key_pem: String,
    csr_pem: String,
}

fn output(generator: &str, config: &Value, field: &str) -> String {
    let entry = lookup(generator).unwrap_or_else(|| panic!("{generator} is not registered"));
    let out = entry
        .generate(config, &Limits::default())
        .unwrap_or_else(|e| panic!("{generator}: {e}"));
    out.get_str(field)
        .unwrap_or_else(|| panic!("{generator} has no output {field}"))
        .to_owned()
}

fn inputs() -> Inputs {
    let ecdsa = json!({ "algorithm": "ECDSA", "ecdsa_curve": "P256" });
    let ca_key_pem = output("tls_private_key", &ecdsa, "private_key_pem");
    let ca_cert_pem = output(
        "tls_self_signed_cert",
        &json!({ "key_pem": ca_key_pem, "common_name": "Bench CA", "is_ca": true }),
        "cert_pem",
    );
    let leaf_key_pem = output("tls_private_key", &ecdsa, "private_key_pem");
    let csr_pem = output(
        "tls_cert_request",
        &json!({
            "private_key_pem": leaf_key_pem,
            "common_name": "app.shop.svc",
            "dns_names": ["app.shop.svc"],
        }),
        "cert_request_pem",
    );
    Inputs {
        ca_key_pem,
        ca_cert_pem,
        leaf_key_pem,
        csr_pem,
    }
}

fn cases(inputs: &Inputs) -> Vec<Case> {
    let case = |generator, label, config| Case {
        generator,
        label,
        config,
    };
    vec![
        case("random_password", "length 32", json!({ "length": 32 })),
        case("random_string", "length 32", json!({ "length": 32 })),
        case("random_uuid", "", json!({})),
        case("random_bytes", "32 bytes, base64", json!({ "length": 32 })),
        case(
            "random_integer",
            "1..=65535",
            json!({ "min": 1, "max": 65535 }),
        ),
        case(
            "random_id",
            "8 bytes, prefix",
            json!({ "byte_length": 8, "prefix": "id-" }),
        ),
        case("time_static", "now", json!({})),
        case("crypto_aes_key", "256 bits", json!({ "key_size": 256 })),
        case("crypto_chacha20_key", "", json!({})),
        case("crypto_xchacha20_key", "", json!({})),
        case(
            "crypto_hmac",
            "sha256, 32-byte key, 64-byte msg",
            json!({ "algorithm": "sha256", "key_size": 32, "message": "m".repeat(64) }),
        ),
        case("crypto_rsa_key", "2048 bits", json!({ "key_size": 2048 })),
        case("crypto_ed25519_key", "", json!({})),
        case("crypto_ecdsa_key", "P256", json!({ "curve": "P256" })),
        case("crypto_ecdh_key", "P256", json!({ "curve": "P256" })),
        case("crypto_ecdh_key", "X25519", json!({ "curve": "X25519" })),
        case(
            "tls_private_key",
            "RSA 2048",
            json!({ "algorithm": "RSA", "rsa_bits": 2048 }),
        ),
        case(
            "tls_private_key",
            "ECDSA P256",
            json!({ "algorithm": "ECDSA", "ecdsa_curve": "P256" }),
        ),
        case(
            "tls_private_key",
            "ED25519",
            json!({ "algorithm": "ED25519" }),
        ),
        case(
            "tls_self_signed_cert",
            "given ECDSA P256 key, CA",
            json!({ "key_pem": inputs.ca_key_pem, "common_name": "Bench CA", "is_ca": true }),
        ),
        case(
            "tls_self_signed_cert",
            "own RSA 2048 key (default)",
            json!({ "common_name": "app.shop.svc", "dns_names": ["app.shop.svc"] }),
        ),
        case(
            "tls_cert_request",
            "ECDSA P256 key",
            json!({
                "private_key_pem": inputs.leaf_key_pem,
                "common_name": "app.shop.svc",
                "dns_names": ["app.shop.svc"],
            }),
        ),
        case(
            "tls_locally_signed_cert",
            "ECDSA P256 CA and leaf",
            json!({
                "cert_request_pem": inputs.csr_pem,
                "ca_private_key_pem": inputs.ca_key_pem,
                "ca_cert_pem": inputs.ca_cert_pem,
                "validity_period_hours": 8760,
            }),
        ),
        case(
            "ssh_keypair",
            "ed25519",
            json!({ "algorithm": "ed25519", "comment": "bench@secret-santa" }),
        ),
        case(
            "ssh_keypair",
            "ecdsa P256",
            json!({ "algorithm": "ecdsa", "ecdsa_curve": "P256" }),
        ),
        case(
            "basic_auth",
            "bcrypt cost 10 (default)",
            json!({ "username": "admin" }),
        ),
    ]
}

fn seconds() -> Duration {
    Duration::from_secs_f64(
        std::env::var("SS_BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .unwrap_or(1.0),
    )
}

struct Measurement {
    /// Median time of one call.
    median: Duration,
    samples: usize,
    /// Calls per sample.
    batch: u32,
}

/// Times `f`: first a warm-up that doubles the batch size until one batch
/// lasts `BATCH_TARGET` (a slow call runs once), then samples of one batch
/// each until `budget` is spent (at least `MIN_SAMPLES`, at most
/// `MAX_SAMPLES`); returns the median per call.
fn measure(budget: Duration, mut f: impl FnMut()) -> Measurement {
    let mut batch: u32 = 1;
    loop {
        let t = Instant::now();
        for _ in 0..batch {
            f();
        }
        if t.elapsed() >= BATCH_TARGET || batch >= 1 << 20 {
            break;
        }
        batch *= 2;
    }
    let mut samples = Vec::with_capacity(MIN_SAMPLES);
    let started = Instant::now();
    while samples.len() < MIN_SAMPLES || (started.elapsed() < budget && samples.len() < MAX_SAMPLES)
    {
        let t = Instant::now();
        for _ in 0..batch {
            f();
        }
        samples.push(t.elapsed() / batch);
    }
    samples.sort_unstable();
    let n = samples.len();
    let median = if !n.is_multiple_of(2) {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2
    };
    Measurement {
        median,
        samples: n,
        batch,
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    secret_santa::install_crypto_provider();
    let budget = seconds();
    let limits = Limits::default();
    let inputs = inputs();
    let cases = cases(&inputs);

    // Skip nothing: every registered type has a row, every row a registered type.
    let missing: Vec<&str> = registry()
        .iter()
        .map(|e| e.type_name)
        .filter(|t| !cases.iter().any(|c| c.generator == *t))
        .collect();
    assert!(
        missing.is_empty(),
        "no bench row for {missing:?}: every registered generator must be measured"
    );

    let baseline = measure(budget, || {
        let mut buf = [0u8; 32];
        rand::rng().fill(&mut buf[..]);
        black_box(&buf);
    });
    let baseline_n = format!("{} × {}", baseline.samples, baseline.batch);
    println!(
        "generators: median time per generate call; {:.1} s per row (SS_BENCH_SECONDS)",
        budget.as_secs_f64()
    );
    println!(
        "{:<24} {:<34} {:>5} {:>12} {:>12} {:>18}",
        "generator", "config", "pool", "median µs", "× baseline", "samples × batch"
    );
    println!(
        "{:<24} {:<34} {:>5} {:>12.3} {:>12.1} {:>18}",
        "(baseline)",
        "rand::rng() fills 32 bytes",
        "",
        us(baseline.median),
        1.0,
        baseline_n
    );
    let floor = baseline.median.as_secs_f64().max(1e-12);
    for case in &cases {
        let entry = lookup(case.generator)
            .unwrap_or_else(|| panic!("{} is not registered", case.generator));
        let m = measure(budget, || {
            let out = entry
                .generate(black_box(&case.config), &limits)
                .unwrap_or_else(|e| panic!("{}: {e}", case.generator));
            black_box(&out);
        });
        let n = format!("{} × {}", m.samples, m.batch);
        println!(
            "{:<24} {:<34} {:>5} {:>12.3} {:>12.1} {:>18}",
            case.generator,
            case.label,
            if entry.expensive { "yes" } else { "" },
            us(m.median),
            m.median.as_secs_f64() / floor,
            n
        );
    }
    println!(
        "pool = marked expensive (runs on the blocking pool); × baseline = median / baseline median"
    );
}
