//! secret-santa: a Kubernetes mutating admission webhook that generates the
//! values an annotated Secret is missing, exactly once.
//!
//! A review flows one way through these modules:
//!
//! ```text
//! server (TLS, HTTP) → webhook (decode/encode AdmissionReview)
//!   → review (CREATE/UPDATE semantics) → spec (annotations → typed spec)
//!   → generators (values) → render (Tera template) → patch (JSONPatch)
//! ```

pub mod admission;
pub mod cli;
pub mod config;
pub mod denial;
pub mod generators;
pub mod metrics;
pub mod mirror;
pub mod patch;
pub mod render;
pub mod review;
pub mod secret;
pub mod server;
pub mod spec;
pub mod store;
pub mod typed;
pub mod webhook;
pub mod yaml;

pub use review::Reviewer;
pub use webhook::App;

/// Install the process-wide rustls crypto provider (aws-lc-rs). Idempotent.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
