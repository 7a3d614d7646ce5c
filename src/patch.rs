//! JSONPatch building: parents first, keys escaped (`~0`, `~1`) by the
//! pointer type, values of `.data` base64-encoded.

use std::collections::BTreeMap;

use base64::Engine as _;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation};
use serde_json::Value;

use crate::secret::SecretValue;

/// Collects the operations of one mutation.
#[derive(Debug, Default)]
pub struct PatchBuilder {
    ops: Vec<PatchOperation>,
}

fn pointer(parts: &[&str]) -> PointerBuf {
    // RFC 6901 escaping (`~` as `~0`, then `/` as `~1`), sized up front.
    let mut encoded = String::with_capacity(parts.iter().map(|p| p.len() + 3).sum());
    for part in parts {
        encoded.push('/');
        if part.contains(['~', '/']) {
            encoded.push_str(&part.replace('~', "~0").replace('/', "~1"));
        } else {
            encoded.push_str(part);
        }
    }
    // Escaped above, so always valid; `from_tokens` is the slow, sure way.
    PointerBuf::parse(encoded).unwrap_or_else(|_| PointerBuf::from_tokens(parts.iter().copied()))
}

impl PatchBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Sets `.data` entries. When the object has no `.data` map, one `add` of
    /// the whole map creates it; otherwise one `add` per key (which replaces
    /// an existing member).
    pub fn set_data(&mut self, has_data: bool, entries: &BTreeMap<String, SecretValue>) {
        if entries.is_empty() {
            return;
        }
        let encode = |v: &SecretValue| {
            Value::String(base64::engine::general_purpose::STANDARD.encode(v.expose()))
        };
        if has_data {
            for (k, v) in entries {
                self.ops.push(PatchOperation::Add(AddOperation {
                    path: pointer(&["data", k]),
                    value: encode(v),
                }));
            }
        } else {
            let map: serde_json::Map<String, Value> = entries
                .iter()
                .map(|(k, v)| (k.clone(), encode(v)))
                .collect();
            self.ops.push(PatchOperation::Add(AddOperation {
                path: pointer(&["data"]),
                value: Value::Object(map),
            }));
        }
    }

    /// Sets annotations, creating `/metadata/annotations` when absent.
    pub fn set_annotations(&mut self, has_annotations: bool, entries: &BTreeMap<String, String>) {
        if entries.is_empty() {
            return;
        }
        if has_annotations {
            for (k, v) in entries {
                self.ops.push(PatchOperation::Add(AddOperation {
                    path: pointer(&["metadata", "annotations", k]),
                    value: Value::String(v.clone()),
                }));
            }
        } else {
            let map: serde_json::Map<String, Value> = entries
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            self.ops.push(PatchOperation::Add(AddOperation {
                path: pointer(&["metadata", "annotations"]),
                value: Value::Object(map),
            }));
        }
    }

    /// Removes one annotation that is known to exist.
    pub fn remove_annotation(&mut self, key: &str) {
        self.ops.push(PatchOperation::Remove(RemoveOperation {
            path: pointer(&["metadata", "annotations", key]),
        }));
    }

    pub fn build(self) -> Patch {
        Patch(self.ops)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn pointers_escape_as_jsonptr_does() {
        for key in ["plain", "a/b", "a~b", "a~1b", "~/~/", "", "é/~0"] {
            let parts = ["metadata", "annotations", key];
            assert_eq!(pointer(&parts), PointerBuf::from_tokens(parts), "{key:?}");
        }
    }

    #[test]
    fn creates_parents_and_escapes_keys() {
        let mut doc = serde_json::json!({"metadata": {"name": "x"}});
        let mut b = PatchBuilder::new();
        let data: BTreeMap<String, SecretValue> =
            [("password".to_string(), SecretValue::new(b"pw".to_vec()))].into();
        b.set_data(false, &data);
        let ann: BTreeMap<String, String> = [
            (
                "secret-santa.io/generated-keys".to_string(),
                "password".to_string(),
            ),
            ("a~b".to_string(), "1".to_string()),
        ]
        .into();
        b.set_annotations(false, &ann);
        let patch = b.build();
        json_patch::patch(&mut doc, &patch).unwrap();
        assert_eq!(doc["data"]["password"], "cHc=");
        assert_eq!(
            doc["metadata"]["annotations"]["secret-santa.io/generated-keys"],
            "password"
        );

        let mut b = PatchBuilder::new();
        b.set_annotations(true, &[("x/y~z".to_string(), "v".to_string())].into());
        b.remove_annotation("a~b");
        let patch = b.build();
        let text = serde_json::to_string(&patch).unwrap();
        assert!(text.contains("/metadata/annotations/x~1y~0z"), "{text}");
        json_patch::patch(&mut doc, &patch).unwrap();
        assert_eq!(doc["metadata"]["annotations"]["x/y~z"], "v");
        assert!(doc["metadata"]["annotations"].get("a~b").is_none());
    }
}
