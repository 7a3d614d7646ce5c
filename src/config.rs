//! Command line (clap, with `SECRET_SANTA_*` environment variables) and the
//! admin config file. Unknown config keys are errors that name the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Deserializer};

use crate::generators::Limits;

#[derive(Debug, Parser)]
#[command(name = "secret-santa", version, about = "Generate Kubernetes Secret values once, at admission", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `secret_santa=debug`.
    #[arg(long, global = true, env = "SECRET_SANTA_LOG", default_value = "info")]
    pub log: String,
    /// Log format.
    #[arg(long, global = true, env = "SECRET_SANTA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the admission webhook server.
    Serve(ServeArgs),
    /// Run the admission logic offline on Secret manifests and print the result.
    Mutate(MutateArgs),
    /// Write a development CA and serving certificate for the webhook Service.
    Certs(CertsArgs),
    /// Validate annotations, generator configs and templates without generating.
    Check(CheckArgs),
}

#[derive(Clone, Debug, Args)]
pub struct ServeArgs {
    /// Admin config file (stores, limits). Without it: no stores, default limits.
    #[arg(long, env = "SECRET_SANTA_CONFIG")]
    pub config: Option<PathBuf>,
    /// PEM certificate chain for the webhook's TLS listener.
    #[arg(
        long,
        env = "SECRET_SANTA_TLS_CERT_FILE",
        required_unless_present = "self_signed",
        requires = "tls_key_file"
    )]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "SECRET_SANTA_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// Make an in-memory certificate for local use and print its CA.
    #[arg(long, env = "SECRET_SANTA_SELF_SIGNED", conflicts_with_all = ["tls_cert_file", "tls_key_file"])]
    pub self_signed: bool,
    /// Webhook listener (HTTPS, `POST /mutate`).
    #[arg(long, env = "SECRET_SANTA_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Admin listener (plain HTTP: /healthz, /readyz, /metrics).
    #[arg(
        long,
        env = "SECRET_SANTA_ADMIN_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    pub admin_listen: SocketAddr,
    /// How often the certificate files are checked for changes.
    #[arg(long, env = "SECRET_SANTA_CERT_RELOAD_INTERVAL", default_value = "5s", value_parser = parse_duration_arg)]
    pub cert_reload_interval: Duration,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "SECRET_SANTA_MAX_BODY_BYTES", default_value_t = 3 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// How long in-flight reviews may take to finish after SIGTERM.
    #[arg(long, env = "SECRET_SANTA_SHUTDOWN_GRACE", default_value = "25s", value_parser = parse_duration_arg)]
    pub shutdown_grace: Duration,
}

#[derive(Clone, Debug, Args)]
pub struct MutateArgs {
    /// Secret manifests (multi-document YAML); `-` reads standard input.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print generated values instead of masking them.
    #[arg(long)]
    pub reveal: bool,
    /// Write mirrors to the stores of `--config` (otherwise no store is touched).
    #[arg(long, requires = "config")]
    pub mirror: bool,
    /// Admin config file.
    #[arg(long, env = "SECRET_SANTA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Namespace for manifests that do not name one.
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
}

#[derive(Clone, Debug, Args)]
pub struct CertsArgs {
    /// Directory to write ca.crt, tls.crt and tls.key into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// The webhook Service's name.
    #[arg(long, default_value = "secret-santa")]
    pub service: String,
    /// The webhook Service's namespace.
    #[arg(long, default_value = "secret-santa")]
    pub namespace: String,
    /// Extra IP SANs (repeatable), e.g. 127.0.0.1 for a locally running webhook.
    #[arg(long = "ip")]
    pub ips: Vec<std::net::IpAddr>,
    /// Extra DNS SANs (repeatable).
    #[arg(long = "dns")]
    pub dns: Vec<String>,
    /// Validity of the serving certificate in days (the CA gets ten times that).
    #[arg(long, default_value_t = 365)]
    pub days: u32,
}

#[derive(Clone, Debug, Args)]
pub struct CheckArgs {
    /// Secret manifests or directories of them (*.yaml, *.yml); `-` reads standard input.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Admin config file, to check mirror store names against.
    #[arg(long, env = "SECRET_SANTA_CONFIG")]
    pub config: Option<PathBuf>,
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

/// Parses `500ms`, `8s`, `2m`, `1h`, or a combination like `1m30s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("invalid duration {s:?}: expected a number"));
        }
        let number: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let secs = match unit {
            "ms" => number / 1000.0,
            "s" => number,
            "m" => number * 60.0,
            "h" => number * 3600.0,
            "" => {
                return Err(format!(
                    "invalid duration {s:?}: missing unit (ms, s, m, h)"
                ));
            }
            other => return Err(format!("invalid duration {s:?}: unknown unit {other:?}")),
        };
        total +=
            Duration::try_from_secs_f64(secs).map_err(|_| format!("invalid duration {s:?}"))?;
    }
    Ok(total)
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

/// The admin config file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AdminConfig {
    /// Written into ownership tags of mirrored entries.
    #[serde(default = "default_cluster_id")]
    pub cluster_id: String,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// External stores. Backends are added by the store issues; each entry is
    /// validated when the config is loaded.
    #[serde(default)]
    pub stores: Vec<StoreConfig>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            cluster_id: default_cluster_id(),
            limits: LimitsConfig::default(),
            stores: Vec::new(),
        }
    }
}

fn default_cluster_id() -> String {
    "default".into()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LimitsConfig {
    /// Overall deadline of one review, mirroring included.
    #[serde(default = "default_deadline", deserialize_with = "de_duration")]
    pub request_deadline: Duration,
    /// Largest RSA key a Secret author may ask for.
    #[serde(default = "default_max_rsa_bits")]
    pub max_rsa_bits: u32,
    /// Most expensive generations (key pairs) running at once.
    #[serde(default = "default_key_workers")]
    pub key_generation_workers: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            request_deadline: default_deadline(),
            max_rsa_bits: default_max_rsa_bits(),
            key_generation_workers: default_key_workers(),
        }
    }
}

fn default_deadline() -> Duration {
    Duration::from_secs(8)
}
fn default_max_rsa_bits() -> u32 {
    4096
}
fn default_key_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

impl LimitsConfig {
    pub fn generator_limits(&self) -> Limits {
        Limits {
            max_rsa_bits: self.max_rsa_bits,
        }
    }
}

/// One store instance, as named by `secret-santa.io/mirror`. The fields
/// here are common to every store type; the rest (`settings`) is read, with
/// unknown keys refused, by the backend of `type`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub store_type: String,
    /// Namespaces whose Secrets may use this store: names, or patterns
    /// where `*` stands for any run of characters (`team-*`); `["*"]` for all.
    pub namespaces: Vec<String>,
    /// Remote name template: `{namespace}`, `{name}`, `{cluster}`.
    #[serde(default = "default_name_template")]
    pub name_template: String,
    /// Prepended to every remote name (template or author-chosen `key`).
    #[serde(default)]
    pub prefix: String,
    /// May an author choose a `key` outside `{namespace}/`? Default no.
    #[serde(default)]
    pub allow_any_key: bool,
    /// Adopt existing entries that the Secret does not own. Default no.
    #[serde(default)]
    pub allow_adoption: bool,
    /// Deadline of each call to this store (within the review's deadline).
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub deadline: Option<Duration>,
    /// Extra tags on every entry.
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
    /// Encryption key for stores that take one (AWS KMS key id, ...).
    #[serde(default)]
    pub kms_key_id: Option<String>,
    /// Per-destination options authors may set: `description`, `tags`, `kmsKeyId`.
    #[serde(default)]
    pub allow_overrides: Vec<String>,
    /// Type-specific settings, validated by the backend.
    #[serde(flatten)]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

fn default_name_template() -> String {
    "{namespace}/{name}".into()
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    s.map(|s| parse_duration(&s).map_err(serde::de::Error::custom))
        .transpose()
}

impl StoreConfig {
    /// True when Secrets of `namespace` may use this store.
    pub fn allows_namespace(&self, namespace: &str) -> bool {
        self.namespaces
            .iter()
            .any(|pattern| wildcard_match(pattern, namespace))
    }

    pub fn allows_override(&self, option: &str) -> bool {
        self.allow_overrides.iter().any(|o| o == option)
    }
}

/// `pattern` matches all of `text`, `*` standing for any run of characters.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let tail: Vec<&str> = parts.collect();
    let Some((last, middle)) = tail.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

impl AdminConfig {
    /// Reads and validates the config file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("config {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("config {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let config: AdminConfig = crate::yaml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.cluster_id.is_empty() || self.cluster_id.len() > 63 {
            return Err("clusterId must be 1 to 63 characters".into());
        }
        if !(1024..=16384).contains(&self.limits.max_rsa_bits) {
            return Err("limits.maxRsaBits must be between 1024 and 16384".into());
        }
        if self.limits.request_deadline.is_zero()
            || self.limits.request_deadline > Duration::from_secs(30)
        {
            return Err("limits.requestDeadline must be more than 0s and at most 30s (the apiserver's webhook limit)".into());
        }
        if self.limits.key_generation_workers == 0 {
            return Err("limits.keyGenerationWorkers must be at least 1".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, store) in self.stores.iter().enumerate() {
            if store.name.is_empty() {
                return Err(format!("stores[{i}].name must not be empty"));
            }
            if !names.insert(store.name.as_str()) {
                return Err(format!("stores[{i}].name {:?} is used twice", store.name));
            }
            if store.namespaces.is_empty() {
                return Err(format!(
                    "stores[{i}] ({}): namespaces must list the namespaces allowed to use it (or [\"*\"])",
                    store.name
                ));
            }
            for pattern in &store.namespaces {
                let literal = pattern.replace('*', "a");
                let valid = !literal.is_empty()
                    && literal.len() <= 63
                    && literal
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
                if !valid {
                    return Err(format!(
                        "stores[{i}] ({}): namespaces entry {pattern:?} is neither a namespace name nor a pattern of one (lowercase letters, digits, '-', and '*' for any run of characters)",
                        store.name
                    ));
                }
            }
            for placeholder in extract_placeholders(&store.name_template) {
                if !["namespace", "name", "cluster"].contains(&placeholder.as_str()) {
                    return Err(format!(
                        "stores[{i}] ({}): nameTemplate placeholder {{{placeholder}}} is unknown (use {{namespace}}, {{name}}, {{cluster}})",
                        store.name
                    ));
                }
            }
            if !store.name_template.contains("{name}") {
                return Err(format!(
                    "stores[{i}] ({}): nameTemplate must contain {{name}}, or Secrets would share one entry",
                    store.name
                ));
            }
            for o in &store.allow_overrides {
                if !["description", "tags", "kmsKeyId"].contains(&o.as_str()) {
                    return Err(format!(
                        "stores[{i}] ({}): allowOverrides entry {o:?} is unknown (description, tags, kmsKeyId)",
                        store.name
                    ));
                }
            }
            crate::store::validate_settings(store)
                .map_err(|e| format!("stores[{i}] ({}): {e}", store.name))?;
        }
        Ok(())
    }
}

fn extract_placeholders(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else { break };
        out.push(after[..end].to_owned());
        rest = &after[end + 1..];
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn namespace_patterns() {
        for (pattern, yes, no) in [
            ("*", &["shop", "a"][..], &[][..]),
            ("shop", &["shop"], &["shop2", "xshop", ""]),
            ("team-*", &["team-a", "team-"], &["team", "xteam-a"]),
            ("*-prod", &["shop-prod"], &["shop-prod2", "prod"]),
            (
                "a*b*c",
                &["abc", "axxbyyc", "abcbc"],
                &["ab", "acb", "abcx"],
            ),
            ("a*a", &["aa", "aba"], &["a"]),
        ] {
            for ns in yes {
                assert!(wildcard_match(pattern, ns), "{pattern} matches {ns}");
            }
            for ns in no {
                assert!(
                    !wildcard_match(pattern, ns),
                    "{pattern} does not match {ns}"
                );
            }
        }
        let store =
            |ns: &str| format!("stores:\n  - name: m\n    type: memory\n    namespaces: [{ns}]\n");
        assert!(AdminConfig::parse(&store("\"team-*\"")).is_ok());
        let err = AdminConfig::parse(&store("\"Team A\"")).unwrap_err();
        assert!(
            err.contains("\"Team A\"") && err.contains("namespaces"),
            "{err}"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("8s").unwrap(), Duration::from_secs(8));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("8").is_err());
        assert!(parse_duration("8x").is_err());
    }

    #[test]
    fn config_rejects_unknown_keys_by_name() {
        let c = AdminConfig::parse(
            "clusterId: prod\nlimits: { requestDeadline: 5s, maxRsaBits: 3072 }\n",
        )
        .unwrap();
        assert_eq!(c.limits.request_deadline, Duration::from_secs(5));
        let err = AdminConfig::parse("clusterId: prod\nlimts: {}\n").unwrap_err();
        assert!(err.contains("limts"), "{err}");
        let err = AdminConfig::parse("limits: { requestDeadline: soon }\n").unwrap_err();
        assert!(err.contains("soon") || err.contains("duration"), "{err}");
    }
}
