//! JSONPatch building, written straight to the JSON the apiserver reads:
//! parents first, keys escaped as RFC 6901 pointer tokens (`~0`, `~1`),
//! values of `.data` base64-encoded. No operation or value tree is built
//! in between; [`JsonPatch::operations`] parses the text back for the
//! offline tool and tests.

use std::collections::BTreeMap;

use crate::secret::SecretValue;

/// A JSON Patch (RFC 6902) as its JSON text: an array of operations.
#[derive(Clone, PartialEq, Eq)]
pub struct JsonPatch(String);

impl JsonPatch {
    /// The JSON text, as sent (before the envelope's base64).
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0.into_bytes()
    }

    /// The operations, for applying the patch to a document.
    pub fn operations(&self) -> Result<json_patch::Patch, serde_json::Error> {
        serde_json::from_str(&self.0)
    }
}

/// The text holds generated values (base64 of them): never printed.
impl std::fmt::Debug for JsonPatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JsonPatch({} bytes)", self.0.len())
    }
}

/// Collects the operations of one mutation.
#[derive(Default)]
pub struct PatchBuilder {
    /// `[` and the operations written so far, comma-separated.
    out: String,
    ops: usize,
}

/// Bytes that JSON strings escape (`"`, `\`, control characters).
const JSON: u8 = 1;
/// Bytes that RFC 6901 reference tokens escape (`~`, `/`).
const TOKEN: u8 = 2;
/// [`JSON`] and [`TOKEN`] by byte.
static ESCAPES: [u8; 256] = {
    let mut table = [0; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = JSON;
        b += 1;
    }
    table[b'"' as usize] = JSON;
    table[b'\\' as usize] = JSON;
    table[b'~' as usize] = TOKEN;
    table[b'/' as usize] = TOKEN;
    table
};

/// Appends `s` as the inside of a JSON string, escaped as serde_json does
/// (`"`, `\` and control characters; everything else as it is), and, when
/// `token` is set, as an RFC 6901 reference token (`~` as `~0`, `/` as `~1`).
fn push_escaped(out: &mut String, s: &str, token: bool) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mask = if token { JSON | TOKEN } else { JSON };
    let special = |b: u8| ESCAPES[usize::from(b)] & mask != 0;
    // The usual case, a plain key or value, is one copy.
    let Some(first) = s.bytes().position(special) else {
        out.push_str(s);
        return;
    };
    let mut start = 0;
    for (i, &b) in s.as_bytes().iter().enumerate().skip(first) {
        if !special(b) {
            continue;
        }
        let escape: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'~' if token => "~0",
            b'/' if token => "~1",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => {
                // Only ASCII bytes stop here, so `i` is a char boundary.
                out.push_str(&s[start..i]);
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.push_str(&s[start..i]);
        out.push_str(escape);
        start = i + 1;
    }
    out.push_str(&s[start..]);
}

impl PatchBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.ops == 0
    }

    /// Starts an operation: `{"op":"<op>","path":"/<parent>.../<key>"`.
    fn begin(&mut self, op: &str, parent: &[&str], key: Option<&str>) {
        if self.ops == 0 {
            self.out.reserve(256);
            self.out.push('[');
        } else {
            self.out.push(',');
        }
        self.ops += 1;
        self.out.push_str("{\"op\":\"");
        self.out.push_str(op);
        self.out.push_str("\",\"path\":\"");
        for part in parent.iter().copied().chain(key) {
            self.out.push('/');
            push_escaped(&mut self.out, part, true);
        }
        self.out.push('"');
    }

    /// `"<value>"`, JSON-escaped.
    fn push_string(&mut self, value: &str) {
        self.out.push('"');
        push_escaped(&mut self.out, value, false);
        self.out.push('"');
    }

    /// `"<base64 of value>"` (base64 has nothing to escape).
    fn push_base64(&mut self, value: &SecretValue) {
        self.out.push('"');
        base64_simd::STANDARD.encode_append(value.expose(), &mut self.out);
        self.out.push('"');
    }

    /// Sets `.data` entries. When the object has no `.data` map, one `add` of
    /// the whole map creates it; otherwise one `add` per key (which replaces
    /// an existing member).
    pub fn set_data(&mut self, has_data: bool, entries: &BTreeMap<String, SecretValue>) {
        self.set_members(&["data"], has_data, entries, Self::push_base64);
    }

    /// Sets annotations, creating `/metadata/annotations` when absent.
    pub fn set_annotations(&mut self, has_annotations: bool, entries: &BTreeMap<String, String>) {
        self.set_members(
            &["metadata", "annotations"],
            has_annotations,
            entries,
            |b, v| b.push_string(v),
        );
    }

    /// Members of the map at `parent`: one `add` per member when the map
    /// `exists`, else one `add` of the whole map; `push` writes a value.
    fn set_members<V>(
        &mut self,
        parent: &[&str],
        exists: bool,
        entries: &BTreeMap<String, V>,
        push: fn(&mut Self, &V),
    ) {
        if entries.is_empty() {
            return;
        }
        if exists {
            for (k, v) in entries {
                self.begin("add", parent, Some(k));
                self.out.push_str(",\"value\":");
                push(self, v);
                self.out.push('}');
            }
        } else {
            self.begin("add", parent, None);
            self.out.push_str(",\"value\":{");
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.push_string(k);
                self.out.push(':');
                push(self, v);
            }
            self.out.push_str("}}");
        }
    }

    /// Removes one annotation that is known to exist.
    pub fn remove_annotation(&mut self, key: &str) {
        self.begin("remove", &["metadata", "annotations"], Some(key));
        self.out.push('}');
    }

    pub fn build(mut self) -> JsonPatch {
        if self.ops == 0 {
            return JsonPatch("[]".to_owned());
        }
        self.out.push(']');
        JsonPatch(self.out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use json_patch::jsonptr::PointerBuf;
    use serde_json::json;

    const ODD: [&str; 12] = [
        "plain",
        "a/b",
        "a~b",
        "a~1b",
        "~/~/",
        "",
        "é/~0",
        "quote\"back\\slash",
        "ctl\u{0}\u{1f}\u{7f}\n\r\t\u{8}\u{c}",
        "\u{2028}emoji🎅",
        "secret-santa.io/generated-at",
        "</script>",
    ];

    #[test]
    fn strings_escape_as_serde_json_does() {
        for s in ODD {
            let mut ours = String::from("\"");
            push_escaped(&mut ours, s, false);
            ours.push('"');
            assert_eq!(ours, serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn path_tokens_escape_as_jsonptr_does() {
        for key in ODD {
            let mut b = PatchBuilder::new();
            b.remove_annotation(key);
            let ops = b.build().operations().unwrap();
            let expected = PointerBuf::from_tokens(["metadata", "annotations", key]);
            match &ops.0[..] {
                [json_patch::PatchOperation::Remove(op)] => assert_eq!(op.path, expected),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn creates_parents_and_escapes_keys() {
        let mut doc = json!({"metadata": {"name": "x"}});
        let mut b = PatchBuilder::new();
        let data: BTreeMap<String, SecretValue> = [
            ("password".to_string(), SecretValue::new(b"pw".to_vec())),
            ("bytes".to_string(), SecretValue::new(vec![0, 255, 10])),
        ]
        .into();
        b.set_data(false, &data);
        let ann: BTreeMap<String, String> = [
            (
                "secret-santa.io/generated-keys".to_string(),
                "password".to_string(),
            ),
            ("a~b".to_string(), "1".to_string()),
            ("odd\"key".to_string(), "line\nbreak \"quoted\"".to_string()),
        ]
        .into();
        b.set_annotations(false, &ann);
        let patch = b.build();
        json_patch::patch(&mut doc, &patch.operations().unwrap()).unwrap();
        assert_eq!(doc["data"]["password"], "cHc=");
        assert_eq!(doc["data"]["bytes"], "AP8K");
        assert_eq!(
            doc["metadata"]["annotations"]["secret-santa.io/generated-keys"],
            "password"
        );
        assert_eq!(
            doc["metadata"]["annotations"]["odd\"key"],
            "line\nbreak \"quoted\""
        );

        let mut b = PatchBuilder::new();
        b.remove_annotation("a~b");
        b.set_data(
            true,
            &[("extra".to_string(), SecretValue::new(b"x".to_vec()))].into(),
        );
        b.set_annotations(true, &[("x/y~z".to_string(), "v".to_string())].into());
        let patch = b.build();
        let text = String::from_utf8(patch.as_bytes().to_vec()).unwrap();
        assert!(text.contains("/metadata/annotations/x~1y~0z"), "{text}");
        json_patch::patch(&mut doc, &patch.operations().unwrap()).unwrap();
        assert_eq!(doc["metadata"]["annotations"]["x/y~z"], "v");
        assert_eq!(doc["data"]["extra"], "eA==");
        assert_eq!(doc["data"]["password"], "cHc=");
        assert!(doc["metadata"]["annotations"].get("a~b").is_none());
    }

    #[test]
    fn operations_are_json_patch_in_order() {
        assert!(PatchBuilder::new().is_empty());
        assert_eq!(PatchBuilder::new().build().as_bytes(), b"[]");
        let mut b = PatchBuilder::new();
        b.remove_annotation("k");
        b.set_annotations(true, &[("a".to_string(), "1".to_string())].into());
        assert!(!b.is_empty());
        let text: serde_json::Value = serde_json::from_slice(b.build().as_bytes()).unwrap();
        assert_eq!(
            text,
            json!([
                {"op": "remove", "path": "/metadata/annotations/k"},
                {"op": "add", "path": "/metadata/annotations/a", "value": "1"}
            ])
        );
    }

    #[test]
    fn simd_base64_is_standard_base64() {
        use base64::Engine as _;
        let bytes: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        for len in (0..70).chain([255, 256, 257, 999, 1000]) {
            let mut ours = String::new();
            base64_simd::STANDARD.encode_append(&bytes[..len], &mut ours);
            let standard = base64::engine::general_purpose::STANDARD.encode(&bytes[..len]);
            assert!(ours == standard, "length {len}");
        }
    }

    #[test]
    fn debug_withholds_the_values() {
        let mut b = PatchBuilder::new();
        b.set_data(
            false,
            &[("k".to_string(), SecretValue::new(b"hunter2".to_vec()))].into(),
        );
        let patch = b.build();
        let shown = format!("{patch:?}");
        assert!(!shown.contains("aHVudGVyMg"), "{shown}");
        assert!(shown.contains("bytes"), "{shown}");
    }
}
