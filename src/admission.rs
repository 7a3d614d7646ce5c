//! The AdmissionReview wire format, decoded and encoded in one pass.
//!
//! A request keeps only the fields a review reads, borrowed from the body
//! where JSON lets it (strings without escapes); its objects stay raw JSON
//! until the review parses them as Secrets, so a body is walked once and no
//! generic JSON tree is built. A response is written the way the
//! apiserver reads it, with `patch` as a base64 string (Go's `[]byte`).

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::ByteString;

use kube::core::Status;
use kube::core::admission::Operation;
use serde::Deserialize;
use serde_json::value::RawValue;

pub const API_VERSION_V1: &str = "admission.k8s.io/v1";
pub const API_VERSION_V1BETA1: &str = "admission.k8s.io/v1beta1";
pub const KIND: &str = "AdmissionReview";

/// An AdmissionReview as it arrives.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Review<'a> {
    #[serde(default, borrow)]
    pub api_version: Cow<'a, str>,
    #[serde(default, borrow)]
    pub kind: Cow<'a, str>,
    #[serde(default, borrow)]
    pub request: Option<Request<'a>>,
}

impl Review<'_> {
    /// `admission.k8s.io/v1` or `v1beta1`, kind AdmissionReview.
    pub fn is_supported(&self) -> bool {
        self.kind == KIND && matches!(&*self.api_version, API_VERSION_V1 | API_VERSION_V1BETA1)
    }
}

/// The request of an AdmissionReview: what was asked, of which object.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request<'a> {
    #[serde(borrow)]
    pub uid: Cow<'a, str>,
    /// The kind of the object (after any conversion to the webhook's version).
    #[serde(borrow)]
    pub kind: Kind<'a>,
    pub operation: Operation,
    #[serde(default, borrow)]
    pub name: Cow<'a, str>,
    #[serde(default, borrow, deserialize_with = "borrowed")]
    pub namespace: Option<Cow<'a, str>>,
    #[serde(default)]
    pub dry_run: bool,
    /// The object as submitted (`null` on DELETE).
    #[serde(default, borrow)]
    pub object: Option<&'a RawValue>,
    /// The stored object (UPDATE and DELETE).
    #[serde(default, borrow)]
    pub old_object: Option<&'a RawValue>,
}

/// An optional string, borrowed when it has no escapes (serde borrows a
/// `Cow` field itself, but not one inside an `Option`).
fn borrowed<'de: 'a, 'a, D>(deserializer: D) -> Result<Option<Cow<'a, str>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<Borrowed<'a>>::deserialize(deserializer)?.map(|b| b.0))
}

/// The group, version and kind of a request's object.
#[derive(Debug, Deserialize)]
pub struct Kind<'a> {
    #[serde(default, borrow)]
    pub group: Cow<'a, str>,
    #[serde(default, borrow)]
    pub version: Cow<'a, str>,
    #[serde(borrow)]
    pub kind: Cow<'a, str>,
}

impl<'a> Request<'a> {
    /// An AdmissionRequest (the `request` of a review) from its JSON text.
    pub fn from_json(text: &'a str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Whether the object is a core/v1 Secret.
    pub fn is_secret(&self) -> bool {
        self.kind.group.is_empty() && self.kind.kind == "Secret"
    }
}

/// A core/v1 Secret as a review reads it: the fields it uses, decoded; the
/// rest (`managedFields` above all) skipped unparsed. `apiVersion` and
/// `kind`, when present, must say a v1 Secret ([`Secret::check_kind`]).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Secret {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub data: Option<BTreeMap<String, ByteString>>,
    pub string_data: Option<BTreeMap<String, String>>,
    #[serde(rename = "type")]
    pub type_: Option<String>,
}

/// The metadata of a [`Secret`] that a review reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub generate_name: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Secret {
    /// An object that names itself something other than a v1 Secret.
    pub fn check_kind(&self) -> Result<(), &'static str> {
        if self.api_version.as_deref().is_some_and(|v| v != "v1") {
            return Err("its apiVersion is not v1");
        }
        if self.kind.as_deref().is_some_and(|k| k != "Secret") {
            return Err("its kind is not Secret");
        }
        Ok(())
    }
}

/// The answer to one request; [`encode`] writes it.
#[derive(Debug)]
pub struct Response {
    pub uid: String,
    pub allowed: bool,
    /// Why a request was refused; empty when allowed.
    pub status: Status,
    /// A JSON Patch, sent as base64.
    pub patch: Option<Vec<u8>>,
    pub patch_type: Option<&'static str>,
    pub warnings: Vec<String>,
}

impl Response {
    /// Allowed as it is.
    pub fn allow(uid: &str) -> Self {
        Self {
            uid: uid.to_owned(),
            allowed: true,
            status: Status::default(),
            patch: None,
            patch_type: None,
            warnings: Vec::new(),
        }
    }

    /// Allowed with a JSON Patch (RFC 6902).
    pub fn patched(uid: &str, patch: crate::patch::JsonPatch) -> Self {
        let mut response = Self::allow(uid);
        response.patch = Some(patch.into_bytes());
        response.patch_type = Some("JSONPatch");
        response
    }

    /// Refused: HTTP 403 Forbidden with `message`.
    pub fn deny(uid: &str, message: String) -> Self {
        let mut response = Self::allow(uid);
        response.allowed = false;
        response.status = Status {
            status: Some(kube::core::response::StatusSummary::Failure),
            code: 403,
            message,
            reason: "Forbidden".into(),
            ..Status::default()
        };
        response
    }

    /// A body that is not a usable AdmissionReview: no uid to echo.
    pub fn invalid(message: String) -> Self {
        let mut response = Self::allow("");
        response.allowed = false;
        response.status = Status::failure(&message, "InvalidRequest");
        response
    }
}

/// A response inside its AdmissionReview envelope, as bytes. Written
/// directly: the patch goes in as base64 without a pass through a JSON
/// string escaper (base64 has nothing to escape), everything else through
/// serde_json.
pub fn encode(api_version: &str, response: &Response) -> Result<Vec<u8>, serde_json::Error> {
    let patch_len = response
        .patch
        .as_ref()
        .map_or(0, |p| base64_simd::STANDARD.encoded_length(p.len()));
    let mut out =
        Vec::with_capacity(192 + response.uid.len() + response.status.message.len() + patch_len);
    out.extend_from_slice(b"{\"apiVersion\":");
    serde_json::to_writer(&mut out, api_version)?;
    out.extend_from_slice(b",\"kind\":\"AdmissionReview\",\"response\":{\"uid\":");
    serde_json::to_writer(&mut out, &response.uid)?;
    out.extend_from_slice(if response.allowed {
        b",\"allowed\":true,\"status\":"
    } else {
        b",\"allowed\":false,\"status\":"
    });
    serde_json::to_writer(&mut out, &response.status)?;
    if let Some(patch) = &response.patch {
        out.extend_from_slice(b",\"patch\":\"");
        base64_simd::STANDARD.encode_append(patch, &mut out);
        out.push(b'"');
    }
    if let Some(patch_type) = response.patch_type {
        out.extend_from_slice(b",\"patchType\":");
        serde_json::to_writer(&mut out, patch_type)?;
    }
    if !response.warnings.is_empty() {
        out.extend_from_slice(b",\"warnings\":");
        serde_json::to_writer(&mut out, &response.warnings)?;
    }
    out.extend_from_slice(b"}}");
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use kube::core::DynamicObject;
    use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
    use serde_json::{Value, json};

    fn body() -> Value {
        json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "", "version": "v1", "kind": "Secret"},
                "resource": {"group": "", "version": "v1", "resource": "secrets"},
                "name": "s", "namespace": "ns", "operation": "UPDATE",
                "userInfo": {"username": "me"},
                "object": {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}},
                "oldObject": null, "dryRun": true
            }
        })
    }

    /// kube's own encoding of the same response, with `patch` turned from
    /// its array of numbers into base64: what we must send.
    fn kube_encoding(response: AdmissionResponse) -> Value {
        use base64::Engine as _;
        let mut value = serde_json::to_value(response.into_review()).unwrap();
        if let Some(patch) = value.pointer_mut("/response/patch") {
            let bytes: Vec<u8> = serde_json::from_value(patch.clone()).unwrap();
            *patch = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
        }
        value
    }

    fn kube_request() -> AdmissionRequest<DynamicObject> {
        let review: AdmissionReview<DynamicObject> = serde_json::from_value(body()).unwrap();
        review.try_into().unwrap()
    }

    #[test]
    fn a_request_decodes_with_its_objects_raw() {
        let text = body().to_string();
        let review: Review = serde_json::from_str(&text).unwrap();
        assert!(review.is_supported());
        let request = review.request.unwrap();
        assert_eq!(request.uid, "u-1");
        assert!(request.is_secret());
        assert_eq!(request.operation, Operation::Update);
        assert_eq!(request.namespace.as_deref(), Some("ns"));
        assert!(request.dry_run);
        assert!(request.old_object.is_none());
        let object: Value = serde_json::from_str(request.object.unwrap().get()).unwrap();
        assert_eq!(object["metadata"]["name"], "s");
        // Borrowed from the body, not copied.
        assert!(matches!(request.uid, Cow::Borrowed(_)));
        assert!(matches!(request.namespace, Some(Cow::Borrowed(_))));
    }

    #[test]
    fn escaped_strings_decode_too() {
        // JSON escapes cannot be borrowed; they are unescaped into owned text.
        let text = body()
            .to_string()
            .replace("\"u-1\"", "\"u\\u002d1\"")
            .replace("\"ns\"", "\"n\\u0073\"")
            .replace("\"Secret\"", "\"Secr\\u0065t\"");
        assert!(text.contains("\\u002d"), "{text}");
        let review: Review = serde_json::from_str(&text).unwrap();
        let request = review.request.unwrap();
        assert_eq!(request.uid, "u-1");
        assert_eq!(request.namespace.as_deref(), Some("ns"));
        assert!(request.is_secret());
        assert!(matches!(request.uid, Cow::Owned(_)));
        assert!(
            request
                .namespace
                .is_some_and(|n| matches!(n, Cow::Owned(_)))
        );
        // An absent and a null namespace are both none.
        let mut cluster_scoped = body();
        cluster_scoped["request"]
            .as_object_mut()
            .unwrap()
            .remove("namespace");
        let text = cluster_scoped.to_string();
        let review: Review = serde_json::from_str(&text).unwrap();
        assert!(review.request.unwrap().namespace.is_none());
        cluster_scoped["request"]["namespace"] = Value::Null;
        let text = cluster_scoped.to_string();
        let review: Review = serde_json::from_str(&text).unwrap();
        assert!(review.request.unwrap().namespace.is_none());
    }

    #[test]
    fn a_secret_decodes_what_a_review_reads_and_skips_the_rest() {
        // Shaped like the apiserver's (tests/fixtures): managedFields,
        // ownerReferences and immutable are skipped, not parsed.
        let text = json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque", "immutable": false,
            "metadata": {
                "name": "s", "namespace": "ns", "generateName": "s-",
                "creationTimestamp": null, "uid": "1", "resourceVersion": "7",
                "labels": {"a": "b"}, "annotations": {"c": "d"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "2"}],
                "managedFields": [{"manager": "kubectl", "operation": "Update",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {".": {}, "f:k": {}}}}]
            },
            "data": {"k": "c2VjcmV0"}, "stringData": {"s": "plain"}
        })
        .to_string();
        let secret: Secret = serde_json::from_str(&text).unwrap();
        assert_eq!(secret.check_kind(), Ok(()));
        assert_eq!(secret.metadata.name.as_deref(), Some("s"));
        assert_eq!(secret.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(secret.metadata.generate_name.as_deref(), Some("s-"));
        assert_eq!(secret.metadata.labels.unwrap()["a"], "b");
        assert_eq!(secret.metadata.annotations.unwrap()["c"], "d");
        assert_eq!(secret.data.unwrap()["k"].0, b"secret");
        assert_eq!(secret.string_data.unwrap()["s"], "plain");
        assert_eq!(secret.type_.as_deref(), Some("Opaque"));
        // Nothing but metadata (or not even that) is a Secret too.
        let bare: Secret = serde_json::from_str("{}").unwrap();
        assert_eq!(bare.check_kind(), Ok(()));
        assert!(bare.metadata.name.is_none() && bare.data.is_none());
        // What a Secret's fields cannot hold is an error.
        for bad in [
            r#"{"data": {"k": "not base64!"}}"#,
            r#"{"data": ["k"]}"#,
            r#"{"metadata": {"labels": {"a": 1}}}"#,
            r#"{"type": 5}"#,
        ] {
            assert!(serde_json::from_str::<Secret>(bad).is_err(), "{bad}");
        }
        for (text, why) in [
            (r#"{"apiVersion": "v2"}"#, "its apiVersion is not v1"),
            (r#"{"kind": "ConfigMap"}"#, "its kind is not Secret"),
        ] {
            let secret: Secret = serde_json::from_str(text).unwrap();
            assert_eq!(secret.check_kind(), Err(why), "{text}");
        }
    }

    #[test]
    fn other_versions_and_kinds_are_not_supported() {
        for (version, kind) in [
            ("admission.k8s.io/v2", KIND),
            (API_VERSION_V1, "AdmissionRevue"),
            ("", ""),
        ] {
            let mut body = body();
            body["apiVersion"] = json!(version);
            body["kind"] = json!(kind);
            let text = body.to_string();
            let review: Review = serde_json::from_str(&text).unwrap();
            assert!(!review.is_supported(), "{version} {kind}");
        }
    }

    #[test]
    fn responses_encode_as_kube_does_with_a_base64_patch() {
        let mut builder = crate::patch::PatchBuilder::new();
        builder.set_data(
            true,
            &[(
                "password".to_owned(),
                crate::secret::SecretValue::new(b"secret".to_vec()),
            )]
            .into(),
        );
        let ours = builder.build();
        let patch = ours.operations().unwrap();
        assert_eq!(
            serde_json::to_value(&patch).unwrap(),
            json!([{"op": "add", "path": "/data/password", "value": "c2VjcmV0"}])
        );
        let mut with_warnings = Response::patched("u-1", ours.clone());
        with_warnings.warnings = vec!["careful".into()];
        let mut kube_with_warnings = AdmissionResponse::from(&kube_request())
            .with_patch(patch.clone())
            .unwrap();
        kube_with_warnings.warnings = Some(vec!["careful".into()]);
        let mut kube_denied = AdmissionResponse::from(&kube_request()).deny("no");
        kube_denied.result.code = 403;
        kube_denied.result.reason = "Forbidden".into();
        kube_denied.result.status = Some(kube::core::response::StatusSummary::Failure);
        let cases = [
            (
                Response::allow("u-1"),
                AdmissionResponse::from(&kube_request()),
            ),
            (with_warnings, kube_with_warnings),
            (Response::deny("u-1", "no".into()), kube_denied),
            (
                Response::invalid("bad".into()),
                AdmissionResponse::invalid("bad"),
            ),
        ];
        for (ours, theirs) in cases {
            let ours: Value =
                serde_json::from_slice(&encode(API_VERSION_V1, &ours).unwrap()).unwrap();
            assert_eq!(ours, kube_encoding(theirs));
        }
        let encoded: Value =
            serde_json::from_slice(&encode(API_VERSION_V1, &Response::patched("u", ours)).unwrap())
                .unwrap();
        assert_eq!(encoded["response"]["patchType"], "JSONPatch");
        assert!(encoded["response"]["patch"].is_string());
        // Strings that need escaping stay JSON.
        let mut odd = Response::deny("u\"1\\\n", "a \"quoted\"\nmessage".into());
        odd.warnings = vec!["w\u{7}\"".into()];
        let encoded: Value =
            serde_json::from_slice(&encode(API_VERSION_V1, &odd).unwrap()).unwrap();
        assert_eq!(encoded["response"]["uid"], "u\"1\\\n");
        assert_eq!(
            encoded["response"]["status"]["message"],
            "a \"quoted\"\nmessage"
        );
        assert_eq!(encoded["response"]["warnings"][0], "w\u{7}\"");
    }
}
