//! The annotation contract: annotations → a typed, validated [`Spec`].
//! Every error names the annotation at fault.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use crate::denial::{Denial, Reason};
use crate::generators::{self, Entry};

pub const PREFIX: &str = "secret-santa.io/";
/// The opt-in label.
pub const LABEL_ENABLED: &str = "secret-santa.io/enabled";

pub const ANN_AUTOGENERATE: &str = "secret-santa.io/autogenerate";
pub const ANN_GENERATORS: &str = "secret-santa.io/generators";
pub const ANN_TEMPLATE: &str = "secret-santa.io/template";
pub const ANN_MIRROR: &str = "secret-santa.io/mirror";
pub const ANN_REGENERATE: &str = "secret-santa.io/regenerate";

pub const ANN_GENERATED_AT: &str = "secret-santa.io/generated-at";
pub const ANN_GENERATED_KEYS: &str = "secret-santa.io/generated-keys";
pub const ANN_GENERATOR_TYPES: &str = "secret-santa.io/generator-types";
pub const ANN_TEMPLATE_CHECKSUM: &str = "secret-santa.io/template-checksum";
pub const ANN_MIRRORED_TO: &str = "secret-santa.io/mirrored-to";
/// `store@version` for each store that gave a version id, comma-separated.
pub const ANN_MIRRORED_VERSIONS: &str = "secret-santa.io/mirrored-versions";

/// The annotations the webhook writes (never values).
pub const METADATA_ANNOTATIONS: [&str; 6] = [
    ANN_GENERATED_AT,
    ANN_GENERATED_KEYS,
    ANN_GENERATOR_TYPES,
    ANN_TEMPLATE_CHECKSUM,
    ANN_MIRRORED_TO,
    ANN_MIRRORED_VERSIONS,
];

/// The type and length the `autogenerate` shorthand uses.
pub const AUTOGENERATE_TYPE: &str = "random_password";
pub const AUTOGENERATE_LENGTH: u64 = 32;

/// Most generators one Secret may declare.
pub const MAX_GENERATORS: usize = 64;
/// Largest template accepted, in bytes.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;

/// True when the labels carry `secret-santa.io/enabled: "true"`.
pub fn is_opted_in(labels: Option<&BTreeMap<String, String>>) -> bool {
    labels
        .and_then(|l| l.get(LABEL_ENABLED))
        .is_some_and(|v| v == "true")
}

/// True when any annotation of ours that asks for generation is present.
pub fn has_generation_annotations(annotations: &BTreeMap<String, String>) -> bool {
    [ANN_AUTOGENERATE, ANN_GENERATORS, ANN_TEMPLATE]
        .iter()
        .any(|a| annotations.contains_key(*a))
}

/// A generator name: usable as a template variable.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GeneratorName(String);

impl GeneratorName {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut chars = s.chars();
        let valid_start = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if !valid_start || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || s.len() > 63
        {
            return Err(format!(
                "generator name {s:?} must start with a letter or _ and contain only letters, digits and _ (at most 63)"
            ));
        }
        if s == "secret" {
            return Err(
                "generator name \"secret\" is reserved for the Secret's own metadata in templates"
                    .into(),
            );
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GeneratorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A valid Secret data key (`[-._a-zA-Z0-9]+`, at most 253 characters, not `.` or `..`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretKey(String);

impl SecretKey {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("a Secret key must not be empty".into());
        }
        if s.len() > 253 {
            return Err(format!(
                "Secret key {:?}… is longer than 253 characters",
                &s[..s.floor_char_boundary(40)]
            ));
        }
        if s == "." || s == ".." {
            return Err(format!("Secret key {s:?} is not allowed"));
        }
        if let Some(bad) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(format!(
                "Secret key {s:?} contains {bad:?}; keys may only contain letters, digits, '-', '_' and '.'"
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One entry of the `generators` annotation.
#[derive(Clone, Debug)]
pub struct GeneratorSpec {
    pub name: GeneratorName,
    pub entry: &'static Entry,
    pub config: Value,
}

impl GeneratorSpec {
    pub fn type_name(&self) -> &'static str {
        self.entry.type_name
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGenerator {
    name: String,
    #[serde(rename = "type")]
    type_name: String,
    #[serde(default)]
    config: Value,
}

/// How mirrored values are laid out in a store entry.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MirrorFormat {
    /// A JSON object of the chosen keys.
    #[default]
    Json,
    /// One key's raw value.
    Value,
    /// `KEY=value` lines.
    Dotenv,
}

/// One entry of the `mirror` annotation.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MirrorSpec {
    pub store: String,
    /// Remote name; default from the store's name template.
    #[serde(default)]
    pub key: Option<String>,
    /// Subset of keys; default all generated keys.
    #[serde(default)]
    pub keys: Option<Vec<String>>,
    #[serde(default)]
    pub format: MirrorFormat,
    #[serde(default)]
    pub description: Option<String>,
    /// Extra tags, where the admin allows it.
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    /// Encryption key, where the admin allows it.
    #[serde(default, rename = "kmsKeyId")]
    pub kms_key_id: Option<String>,
}

/// What the `regenerate` annotation asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Regenerate {
    All,
    Keys(BTreeSet<SecretKey>),
}

/// Everything the annotations ask for.
#[derive(Clone, Debug, Default)]
pub struct Spec {
    pub autogenerate: Vec<SecretKey>,
    pub generators: Vec<GeneratorSpec>,
    pub template: Option<String>,
    pub mirror: Vec<MirrorSpec>,
    pub regenerate: Option<Regenerate>,
}

impl Spec {
    /// Parses the annotations. Annotations outside ours are ignored.
    pub fn parse(annotations: &BTreeMap<String, String>) -> Result<Self, Denial> {
        let mut spec = Spec::default();
        if let Some(list) = annotations.get(ANN_AUTOGENERATE) {
            spec.autogenerate = parse_key_list(ANN_AUTOGENERATE, list)?;
            if spec.autogenerate.is_empty() {
                return Err(Denial::annotation(ANN_AUTOGENERATE, "lists no keys"));
            }
        }
        if let Some(text) = annotations.get(ANN_GENERATORS) {
            spec.generators = parse_generators(text)?;
        }
        if let Some(text) = annotations.get(ANN_TEMPLATE) {
            if text.len() > MAX_TEMPLATE_BYTES {
                return Err(Denial::new(
                    Reason::Template,
                    format!(
                        "annotation {ANN_TEMPLATE}: template is {} bytes, more than the {MAX_TEMPLATE_BYTES}-byte limit",
                        text.len()
                    ),
                ));
            }
            if text.trim().is_empty() {
                return Err(Denial::new(
                    Reason::Template,
                    format!("annotation {ANN_TEMPLATE}: template is empty"),
                ));
            }
            spec.template = Some(text.clone());
        } else if let Some(g) = spec
            .generators
            .iter()
            .find(|g| g.type_name() != AUTOGENERATE_TYPE && !produces_value(g))
        {
            return Err(Denial::annotation(
                ANN_TEMPLATE,
                format!(
                    "is required: without a template each generator's `value` becomes a key, but generator {:?} ({}) has no `value` output",
                    g.name.as_str(),
                    g.type_name()
                ),
            ));
        }
        if let Some(text) = annotations.get(ANN_MIRROR) {
            spec.mirror = crate::yaml::from_str::<Vec<MirrorSpec>>(text).map_err(|e| {
                Denial::annotation(ANN_MIRROR, format!("is not a valid list of mirrors: {e}"))
            })?;
        }
        if let Some(text) = annotations.get(ANN_REGENERATE) {
            spec.regenerate = Some(if text.trim() == "all" {
                Regenerate::All
            } else {
                let keys = parse_key_list(ANN_REGENERATE, text)?;
                if keys.is_empty() {
                    return Err(Denial::annotation(
                        ANN_REGENERATE,
                        "lists no keys (use \"all\" or a comma list)",
                    ));
                }
                Regenerate::Keys(keys.into_iter().collect())
            });
        }
        if spec.template.is_none() {
            // Without a template, generator names become keys: they must not
            // collide with the shorthand's keys.
            for g in &spec.generators {
                if spec
                    .autogenerate
                    .iter()
                    .any(|k| k.as_str() == g.name.as_str())
                {
                    return Err(Denial::annotation(
                        ANN_GENERATORS,
                        format!(
                            "key {:?} is defined by both {ANN_AUTOGENERATE} and {ANN_GENERATORS}",
                            g.name.as_str()
                        ),
                    ));
                }
            }
        }
        Ok(spec)
    }

    /// True when the spec asks for nothing to be generated.
    pub fn is_empty(&self) -> bool {
        self.autogenerate.is_empty() && self.generators.is_empty() && self.template.is_none()
    }

    /// Type names in use, de-duplicated, for the `generator-types` annotation.
    pub fn generator_types(&self) -> Vec<&'static str> {
        let mut types: Vec<&'static str> = self.generators.iter().map(|g| g.type_name()).collect();
        if !self.autogenerate.is_empty() {
            types.push(AUTOGENERATE_TYPE);
        }
        types.sort_unstable();
        types.dedup();
        types
    }
}

/// Types known to put a `value` field in their outputs.
fn produces_value(g: &GeneratorSpec) -> bool {
    matches!(
        g.type_name(),
        "random_password"
            | "random_string"
            | "random_uuid"
            | "random_bytes"
            | "random_integer"
            | "random_id"
    )
}

fn parse_key_list(annotation: &str, list: &str) -> Result<Vec<SecretKey>, Denial> {
    let mut keys: Vec<SecretKey> = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let key = SecretKey::parse(item)
            .map_err(|e| Denial::new(Reason::SecretKey, format!("annotation {annotation}: {e}")))?;
        if keys.contains(&key) {
            return Err(Denial::annotation(
                annotation,
                format!("lists key {item:?} twice"),
            ));
        }
        keys.push(key);
    }
    Ok(keys)
}

fn parse_generators(text: &str) -> Result<Vec<GeneratorSpec>, Denial> {
    let raw: Vec<RawGenerator> = crate::yaml::from_str(text).map_err(|e| {
        Denial::annotation(
            ANN_GENERATORS,
            format!("is not a valid list of {{name, type, config}}: {e}"),
        )
    })?;
    if raw.len() > MAX_GENERATORS {
        return Err(Denial::annotation(
            ANN_GENERATORS,
            format!(
                "declares {} generators, more than the limit of {MAX_GENERATORS}",
                raw.len()
            ),
        ));
    }
    let mut out: Vec<GeneratorSpec> = Vec::with_capacity(raw.len());
    for g in raw {
        let name =
            GeneratorName::parse(&g.name).map_err(|e| Denial::annotation(ANN_GENERATORS, e))?;
        if out.iter().any(|o| o.name == name) {
            return Err(Denial::annotation(
                ANN_GENERATORS,
                format!("generator name {:?} is used twice", name.as_str()),
            ));
        }
        let entry = generators::lookup(&g.type_name).ok_or_else(|| {
            Denial::generator(
                name.as_str(),
                &g.type_name,
                format!(
                    "unknown generator type; known types: {}",
                    generators::type_names().join(", ")
                ),
            )
        })?;
        if !matches!(g.config, Value::Null | Value::Object(_)) {
            return Err(Denial::generator(
                name.as_str(),
                entry.type_name,
                "config must be a mapping",
            ));
        }
        out.push(GeneratorSpec {
            name,
            entry,
            config: g.config,
        });
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn secret_keys_follow_kubernetes_rules() {
        for ok in ["password", "tls.crt", ".dockerconfigjson", "a-b_c.d", "X"] {
            SecretKey::parse(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "a~b", "a b", "ключ", &"x".repeat(254)] {
            assert!(SecretKey::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn generators_are_parsed_and_named_in_errors() {
        let spec = Spec::parse(&ann(&[(
            ANN_GENERATORS,
            "- name: user\n  type: random_string\n  config: { length: 12 }\n- name: pass\n  type: random_password\n",
        )]))
        .unwrap();
        assert_eq!(spec.generators.len(), 2);
        assert_eq!(
            spec.generator_types(),
            vec!["random_password", "random_string"]
        );

        let err = Spec::parse(&ann(&[(
            ANN_GENERATORS,
            "- name: a\n  type: random_pasword\n",
        )]))
        .unwrap_err();
        assert!(
            err.message.contains("random_pasword") && err.message.contains(ANN_GENERATORS),
            "{err}"
        );
        let err = Spec::parse(&ann(&[(
            ANN_GENERATORS,
            "- name: a\n  type: random_uuid\n- name: a\n  type: random_uuid\n",
        )]))
        .unwrap_err();
        assert!(err.message.contains("used twice"), "{err}");
        let err = Spec::parse(&ann(&[(
            ANN_GENERATORS,
            "- name: a\n  type: random_uuid\n  extra: 1\n",
        )]))
        .unwrap_err();
        assert!(err.message.contains("extra"), "{err}");
        let err = Spec::parse(&ann(&[(ANN_GENERATORS, "{not: a list")])).unwrap_err();
        assert_eq!(err.reason, Reason::Annotation);
    }

    #[test]
    fn autogenerate_lists_keys() {
        let spec = Spec::parse(&ann(&[(ANN_AUTOGENERATE, "password, api-token,")])).unwrap();
        let keys: Vec<&str> = spec.autogenerate.iter().map(SecretKey::as_str).collect();
        assert_eq!(keys, ["password", "api-token"]);
        let err = Spec::parse(&ann(&[(ANN_AUTOGENERATE, "a/b")])).unwrap_err();
        assert!(
            err.message.contains(ANN_AUTOGENERATE) && err.message.contains("a/b"),
            "{err}"
        );
    }

    #[test]
    fn opt_in_needs_the_exact_label_value() {
        let yes = ann(&[(LABEL_ENABLED, "true")]);
        assert!(is_opted_in(Some(&yes)));
        assert!(!is_opted_in(Some(&ann(&[(LABEL_ENABLED, "yes")]))));
        assert!(!is_opted_in(None));
    }
}
