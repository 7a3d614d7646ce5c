//! YAML reading with the options this project wants everywhere: YAML 1.2
//! booleans only (`yes`/`on` stay strings) and error messages that carry a
//! position but never a snippet of the input (it may hold a secret).

use serde::de::DeserializeOwned;

use crate::generators::redact_serde_error;

fn options() -> serde_saphyr::Options {
    let mut o = serde_saphyr::Options::default();
    o.strict_booleans = true;
    o.with_snippet = false;
    o
}

/// Parses one YAML document. The error text names the position and the kind
/// of problem, never the offending text.
pub fn from_str<T: DeserializeOwned>(input: &str) -> Result<T, String> {
    serde_saphyr::from_str_with_options(input, options()).map_err(|e| describe(&e))
}

/// Parses a multi-document YAML stream.
pub fn from_str_multiple<T: DeserializeOwned>(input: &str) -> Result<Vec<T>, String> {
    serde_saphyr::from_str_multiple_with_options(input, options()).map_err(|e| describe(&e))
}

fn describe(e: &serde_saphyr::Error) -> String {
    let text = redact_serde_error(&e.without_snippet().to_string());
    // Keep the first line only: later lines may quote the input.
    let first = text
        .lines()
        .next()
        .unwrap_or("invalid YAML")
        .trim()
        .to_owned();
    match e.location() {
        Some(loc) if loc.line() > 0 && !first.contains("line ") => {
            format!("{first} (line {}, column {})", loc.line(), loc.column())
        }
        _ => first,
    }
}

/// Serializes to YAML.
pub fn to_string<T: serde::Serialize>(value: &T) -> Result<String, String> {
    serde_saphyr::to_string(value).map_err(|e| e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::BTreeMap;

    #[test]
    fn yes_is_a_string() {
        let m: BTreeMap<String, String> = super::from_str("a: yes\nb: on\n").unwrap();
        assert_eq!(m["a"], "yes");
    }

    #[test]
    fn errors_do_not_quote_input() {
        let err =
            super::from_str::<BTreeMap<String, String>>("password: [s3cr3t-value\n").unwrap_err();
        assert!(!err.contains("s3cr3t"), "{err}");
        let err = super::from_str::<BTreeMap<String, String>>("password: {a: s3cr3t-value}\n")
            .unwrap_err();
        assert!(!err.contains("s3cr3t"), "{err}");
    }
}
