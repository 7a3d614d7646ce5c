//! Generators: named, typed producers of secret material.
//!
//! Each generator type implements [`Generator`] with a typed, `deny_unknown_fields`
//! config; the [`registry`] erases the types so the pipeline can look a type up by
//! the name used in the `secret-santa.io/generators` annotation.

mod auth;
mod crypto;
pub(crate) mod keys;
pub(crate) mod random;
mod ssh;
mod time;
mod tls;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::secret::Outputs;

/// Limits set by the cluster admin that generators must respect.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest RSA modulus a Secret author may ask for.
    pub max_rsa_bits: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_rsa_bits: 4096 }
    }
}

/// One generator type.
pub trait Generator: 'static {
    /// The type name used in annotations (`random_password`, ...).
    const TYPE: &'static str;
    /// True when generation may take milliseconds or more (key generation):
    /// the pipeline then runs it on the blocking pool.
    const EXPENSIVE: bool = false;
    /// The typed config; unknown keys must be rejected (`deny_unknown_fields`).
    type Config: DeserializeOwned;

    /// Checks the config beyond its types (ranges, consistency). Must not
    /// generate anything.
    fn validate(config: &Self::Config, limits: &Limits) -> Result<(), String>;

    /// Produces the outputs. Called only with a config that passed `validate`.
    fn generate(config: &Self::Config, limits: &Limits) -> Result<Outputs, String>;
}

/// A generator type with its types erased, as the registry holds it.
pub struct Entry {
    pub type_name: &'static str,
    pub expensive: bool,
    check: fn(&Value, &Limits, bool) -> Result<(), String>,
    generate: fn(&Value, &Limits) -> Result<Outputs, String>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("type_name", &self.type_name)
            .finish_non_exhaustive()
    }
}

impl Entry {
    const fn of<G: Generator>() -> Self {
        Self {
            type_name: G::TYPE,
            expensive: G::EXPENSIVE,
            check: check_erased::<G>,
            generate: generate_erased::<G>,
        }
    }

    /// Parses the config and, when `full`, validates it as well.
    pub fn check(&self, config: &Value, limits: &Limits, full: bool) -> Result<(), String> {
        (self.check)(config, limits, full)
    }

    /// Parses, validates and generates.
    pub fn generate(&self, config: &Value, limits: &Limits) -> Result<Outputs, String> {
        (self.generate)(config, limits)
    }
}

fn check_erased<G: Generator>(config: &Value, limits: &Limits, full: bool) -> Result<(), String> {
    let parsed = parse_config::<G::Config>(config)?;
    if full {
        G::validate(&parsed, limits)?;
    }
    Ok(())
}

fn generate_erased<G: Generator>(config: &Value, limits: &Limits) -> Result<Outputs, String> {
    let parsed = parse_config::<G::Config>(config)?;
    G::validate(&parsed, limits)?;
    G::generate(&parsed, limits)
}

/// Deserializes a generator config; an absent config means all defaults.
/// Errors name the config key at fault (`length: invalid value: ...`) and
/// never echo string values (they may be rendered secrets).
pub fn parse_config<C: DeserializeOwned>(config: &Value) -> Result<C, String> {
    let value = match config {
        Value::Null => Value::Object(Default::default()),
        other => other.clone(),
    };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = redact_serde_error(&e.into_inner().to_string());
        if path == "." || path.is_empty() {
            message
        } else {
            format!("{path}: {message}")
        }
    })
}

/// serde renders a wrong-typed string as `string "<content>"`; drop the content.
pub(crate) fn redact_serde_error(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find("string \"") {
        out.push_str(&rest[..start]);
        out.push_str("a string");
        let after = &rest[start + "string \"".len()..];
        // The content ends at the last `"` before the next `, expected` or end.
        let end = after
            .find("\", expected")
            .map(|i| i + 1)
            .or_else(|| after.rfind('"').map(|i| i + 1))
            .unwrap_or(after.len());
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

static REGISTRY: &[Entry] = &[
    Entry::of::<random::RandomPassword>(),
    Entry::of::<random::RandomString>(),
    Entry::of::<random::RandomUuid>(),
    Entry::of::<random::RandomBytes>(),
    Entry::of::<random::RandomInteger>(),
    Entry::of::<random::RandomId>(),
    Entry::of::<time::TimeStatic>(),
    Entry::of::<crypto::AesKey>(),
    Entry::of::<crypto::ChaCha20Key>(),
    Entry::of::<crypto::XChaCha20Key>(),
    Entry::of::<crypto::RsaKey>(),
    Entry::of::<crypto::Ed25519Key>(),
    Entry::of::<crypto::EcdsaKey>(),
    Entry::of::<crypto::EcdhKey>(),
    Entry::of::<crypto::Hmac>(),
    Entry::of::<tls::TlsPrivateKey>(),
    Entry::of::<tls::TlsSelfSignedCert>(),
    Entry::of::<tls::TlsCertRequest>(),
    Entry::of::<tls::TlsLocallySignedCert>(),
    Entry::of::<ssh::SshKeypair>(),
    Entry::of::<auth::BasicAuth>(),
];

/// Every registered generator type.
pub fn registry() -> &'static [Entry] {
    REGISTRY
}

/// Looks up a generator type by its annotation name.
pub fn lookup(type_name: &str) -> Option<&'static Entry> {
    REGISTRY.iter().find(|e| e.type_name == type_name)
}

/// The type names, for "unknown generator" messages.
pub fn type_names() -> Vec<&'static str> {
    REGISTRY.iter().map(|e| e.type_name).collect()
}

/// `now` as RFC 3339 UTC with second precision, as generators report it.
pub(crate) fn now_rfc3339() -> String {
    rfc3339(::time::OffsetDateTime::now_utc())
}

pub(crate) fn rfc3339(t: ::time::OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&::time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn serde_errors_do_not_echo_strings() {
        let msg = redact_serde_error(r#"invalid type: string "hunter2", expected u32"#);
        assert_eq!(msg, "invalid type: a string, expected u32");
        let msg = redact_serde_error("unknown field `lenght`, expected one of `length`");
        assert_eq!(msg, "unknown field `lenght`, expected one of `length`");
    }

    #[test]
    fn registry_names_are_unique() {
        let mut names = type_names();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
