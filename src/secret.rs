//! Values that must never be printed: Secret data and generator outputs.

use std::collections::BTreeMap;
use std::fmt;

use zeroize::Zeroizing;

/// Raw bytes of one Secret data value. `Debug` never shows the content and
/// the memory is wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    pub fn from_string(s: String) -> Self {
        Self::new(s.into_bytes())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue(<{} bytes redacted>)", self.0.len())
    }
}

/// Secret data keyed by data key.
pub type SecretData = BTreeMap<String, SecretValue>;

/// The outputs of one generator run (`value`, `private_key_pem`, ...), as the
/// template sees them. `Debug` lists field names only.
#[derive(Clone, Default, PartialEq)]
pub struct Outputs(serde_json::Map<String, serde_json::Value>);

impl Outputs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a field; builder style.
    pub fn with(mut self, field: &str, value: impl Into<serde_json::Value>) -> Self {
        self.0.insert(field.to_owned(), value.into());
        self
    }

    pub fn insert(&mut self, field: &str, value: impl Into<serde_json::Value>) {
        self.0.insert(field.to_owned(), value.into());
    }

    pub fn get(&self, field: &str) -> Option<&serde_json::Value> {
        self.0.get(field)
    }

    /// The field as a string, if it is one.
    pub fn get_str(&self, field: &str) -> Option<&str> {
        self.0.get(field).and_then(|v| v.as_str())
    }

    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub fn as_map(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.0
    }
}

impl fmt::Debug for Outputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outputs")
            .field("fields", &self.0.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Drop for Outputs {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for (_, v) in self.0.iter_mut() {
            if let serde_json::Value::String(s) = v {
                s.zeroize();
            }
        }
    }
}

/// Zeroizes every string in a JSON value (values being dropped that held
/// secret material).
pub fn wipe_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => zeroize::Zeroize::zeroize(s),
        serde_json::Value::Object(o) => o.values_mut().for_each(wipe_json),
        serde_json::Value::Array(a) => a.iter_mut().for_each(wipe_json),
        _ => {}
    }
}
