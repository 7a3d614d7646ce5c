//! What each fuzz target checks, shared with `tests/fuzz_regressions.rs`
//! (which runs the seeds and every saved crash through the same checks in
//! the ordinary test suite). Each function panics on a finding.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use secret_santa::config::AdminConfig;
use secret_santa::render::{self, RenderContext};
use secret_santa::secret::Outputs;
use secret_santa::spec::{self, Spec};
use secret_santa::store::Stores;
use secret_santa::{App, Reviewer};

const CONFIG: &str = "clusterId: fuzz\nlimits: { requestDeadline: 2s, maxRsaBits: 2048 }\nstores:\n  - name: mem\n    type: memory\n    namespaces: [\"*\"]\n";

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
});

static APP: LazyLock<Arc<App>> = LazyLock::new(|| {
    secret_santa::install_crypto_provider();
    let config = AdminConfig::parse(CONFIG).expect("fuzz config");
    let stores = RUNTIME
        .block_on(Stores::from_config(&config))
        .expect("memory store");
    App::new(Reviewer::new(config, stores), 3 * 1024 * 1024)
});

/// AdmissionReview decoding and the whole review function, with an
/// in-memory store behind a mirror: any body gets a well-formed
/// AdmissionReview answer, and a denial says why.
pub fn review(body: &[u8]) {
    let answer = RUNTIME.block_on(APP.review_bytes(body, None));
    assert_eq!(answer["kind"], "AdmissionReview");
    let response = &answer["response"];
    assert!(response["allowed"].is_boolean(), "{answer}");
    if response["allowed"] == false {
        let message = response["status"]["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "a denial says why: {answer}");
    }
}

const ANNOTATIONS: [&str; 5] = [
    "secret-santa.io/autogenerate",
    "secret-santa.io/generators",
    "secret-santa.io/template",
    "secret-santa.io/mirror",
    "secret-santa.io/regenerate",
];

/// The annotation parser: the input is split at NUL bytes into the
/// `autogenerate`, `generators`, `template`, `mirror` and `regenerate`
/// annotations. Any input parses or is denied naming an annotation.
pub fn spec(data: &[u8]) {
    let mut annotations = BTreeMap::new();
    for (name, part) in ANNOTATIONS.iter().zip(data.split(|b| *b == 0)) {
        if !part.is_empty() {
            annotations.insert(
                (*name).to_owned(),
                String::from_utf8_lossy(part).into_owned(),
            );
        }
    }
    match Spec::parse(&annotations) {
        Ok(parsed) => assert!(parsed.generators.len() <= spec::MAX_GENERATORS),
        Err(denial) => assert!(
            denial.message.contains("secret-santa.io/"),
            "a denial names the annotation: {}",
            denial.message
        ),
    }
}

const VALUE: &str = "fuzz-generated-value-7d1e";

/// Template rendering with hostile templates: any template renders within
/// the output limit or fails with a message, and once scrubbed (as the
/// review scrubs it before denying) the message shows no generated value.
pub fn template(data: &[u8]) {
    let Ok(template) = std::str::from_utf8(data) else {
        return;
    };
    let labels = BTreeMap::from([("app".to_owned(), "shop".to_owned())]);
    let mut ctx = RenderContext::new("db", "", "shop", &labels, &BTreeMap::new());
    ctx.insert(
        "pass",
        &Outputs::new().with("value", VALUE).with("length", 25),
    );
    match render::render(template, &ctx) {
        Ok(out) => assert!(out.len() <= render::MAX_OUTPUT_BYTES),
        Err(message) => {
            assert!(!message.is_empty());
            let message = render::scrub(&message, &[VALUE]);
            assert!(
                !message.contains(VALUE),
                "an error shows a value: {message}"
            );
        }
    }
}
