//! `secret-santa mutate`: the admission logic, offline, on Secret manifests.

use std::process::ExitCode;

use crate::admission::Request;
use base64::Engine as _;
use serde_json::{Value, json};

use crate::config::{AdminConfig, MutateArgs};
use crate::review::{Mutation, Reviewer};

pub async fn run(args: MutateArgs) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(path) => AdminConfig::load(path).map_err(anyhow::Error::msg)?,
        None => AdminConfig::default(),
    };
    let reviewer = Reviewer::from_config(config)
        .await
        .map_err(anyhow::Error::msg)?;
    let mut out_docs = Vec::new();
    let mut failed = false;
    for path in &args.files {
        let text = match super::read_input(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(1));
            }
        };
        let docs: Vec<Value> = match crate::yaml::from_str_multiple(&text) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: {}: not valid YAML: {e}", path.display());
                return Ok(ExitCode::from(1));
            }
        };
        for (i, doc) in docs.into_iter().enumerate() {
            if doc.is_null() {
                continue;
            }
            let label = format!("{} (document {})", path.display(), i + 1);
            match mutate_one(&reviewer, doc, &args).await {
                Ok((doc, warnings)) => {
                    for w in warnings {
                        eprintln!("warning: {label}: {w}");
                    }
                    out_docs.push(doc);
                }
                Err(message) => {
                    eprintln!("error: {label}: {message}");
                    failed = true;
                }
            }
        }
    }
    let mut stdout = String::new();
    for doc in &out_docs {
        stdout.push_str("---\n");
        stdout.push_str(&crate::yaml::to_string(doc).map_err(anyhow::Error::msg)?);
    }
    print!("{stdout}");
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The AdmissionRequest the apiserver would send for `kubectl create`, as
/// JSON text; [`Request::from_json`] reads it as the webhook reads one.
pub fn create_request(object: &Value, namespace: &str, dry_run: bool) -> String {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let request = json!({
            "uid": "00000000-0000-0000-0000-000000000000",
            "kind": {"group": "", "version": "v1", "kind": "Secret"},
            "resource": {"group": "", "version": "v1", "resource": "secrets"},
            "requestKind": {"group": "", "version": "v1", "kind": "Secret"},
            "requestResource": {"group": "", "version": "v1", "resource": "secrets"},
            "name": name,
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "secret-santa-mutate"},
            "object": object,
            "oldObject": null,
            "dryRun": dry_run,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
    });
    // Through text: the objects stay raw JSON, as they do off the wire.
    request.to_string()
}

async fn mutate_one(
    reviewer: &Reviewer,
    mut doc: Value,
    args: &MutateArgs,
) -> Result<(Value, Vec<String>), String> {
    let is_secret = doc.get("kind").and_then(Value::as_str) == Some("Secret")
        && doc.get("apiVersion").and_then(Value::as_str) == Some("v1");
    if !is_secret {
        return Ok((doc, Vec::new()));
    }
    let namespace = doc
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or(&args.namespace)
        .to_owned();
    let text = create_request(&doc, &namespace, !args.mirror);
    let req = Request::from_json(&text).map_err(|e| format!("not a Kubernetes object: {e}"))?;
    let Mutation {
        patch,
        mut warnings,
        generated_keys,
        ..
    } = reviewer.review(&req).await.map_err(|d| d.message)?;
    if !args.mirror {
        // In the offline tool a dry run is the default, not news.
        warnings.retain(|w| !w.contains("dry run"));
    }
    if let Some(patch) = patch {
        let operations = patch
            .operations()
            .map_err(|e| format!("internal error: patch does not parse: {e}"))?;
        json_patch::patch(&mut doc, &operations)
            .map_err(|e| format!("internal error: patch does not apply: {e}"))?;
    }
    if !args.reveal
        && let Some(Value::Object(data)) = doc.get_mut("data")
    {
        {
            for key in &generated_keys {
                if let Some(v) = data.get_mut(key) {
                    let len = v
                        .as_str()
                        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                        .map_or(0, |b| b.len());
                    *v = Value::String(format!("<masked: {len} bytes; --reveal shows it>"));
                }
            }
        }
    }
    Ok((doc, warnings))
}
