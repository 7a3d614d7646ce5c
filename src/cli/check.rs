//! `secret-santa check`: validate annotations, generator configs and
//! templates without generating anything. One line per problem.

use std::collections::BTreeMap;
use std::process::ExitCode;

use serde_json::Value;

use crate::config::{AdminConfig, CheckArgs};
use crate::spec::{self, Spec};

pub fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(path) => match AdminConfig::load(path) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("{e}");
                return Ok(ExitCode::from(1));
            }
        },
        None => None,
    };
    let files = match super::expand_paths(&args.files) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(1));
        }
    };
    let mut problems = 0usize;
    let mut checked = 0usize;
    for path in files {
        let text = match super::read_input(&path) {
            Ok(t) => t,
            Err(e) => {
                println!("{e}");
                problems += 1;
                continue;
            }
        };
        let docs: Vec<Value> = match crate::yaml::from_str_multiple(&text) {
            Ok(d) => d,
            Err(e) => {
                println!("{}: not valid YAML: {e}", path.display());
                problems += 1;
                continue;
            }
        };
        for (i, doc) in docs.iter().enumerate() {
            if doc.get("kind").and_then(Value::as_str) != Some("Secret") {
                continue;
            }
            checked += 1;
            let name = doc
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("<generateName>");
            for problem in check_secret(doc, config.as_ref()) {
                println!(
                    "{}: document {} (Secret {name}): {problem}",
                    path.display(),
                    i + 1
                );
                problems += 1;
            }
        }
    }
    eprintln!("checked {checked} Secret(s): {problems} problem(s)");
    Ok(if problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Every problem found in one Secret manifest.
pub fn check_secret(doc: &Value, config: Option<&AdminConfig>) -> Vec<String> {
    let mut problems = Vec::new();
    let annotations: BTreeMap<String, String> = match doc.pointer("/metadata/annotations") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(v) => match serde_json::from_value(v.clone()) {
            Ok(a) => a,
            Err(_) => return vec!["metadata.annotations must map names to strings".into()],
        },
    };
    let labels: Option<BTreeMap<String, String>> = doc
        .pointer("/metadata/labels")
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    let ours = annotations.keys().any(|k| k.starts_with(spec::PREFIX));
    if !ours {
        return problems;
    }
    if !spec::is_opted_in(labels.as_ref()) {
        problems.push(format!(
            "has {} annotations but not the label {}: \"true\"; the webhook will not see it",
            spec::PREFIX,
            spec::LABEL_ENABLED
        ));
    }
    let spec = match Spec::parse(&annotations) {
        Ok(s) => s,
        Err(d) => {
            problems.push(d.message);
            return problems;
        }
    };
    let limits = config
        .map(|c| c.limits.generator_limits())
        .unwrap_or_default();
    for g in &spec.generators {
        let templated = has_template_strings(&g.config);
        if let Err(e) = g.entry.check(&g.config, &limits, !templated) {
            problems
                .push(crate::denial::Denial::generator(g.name.as_str(), g.type_name(), e).message);
        }
    }
    if let Some(t) = &spec.template
        && let Err(e) = crate::render::check_syntax(t)
    {
        problems.push(format!("annotation {}: {e}", spec::ANN_TEMPLATE));
    }
    if let Some(config) = config {
        for m in &spec.mirror {
            if !config.stores.iter().any(|s| s.name == m.store) {
                problems.push(format!(
                    "annotation {}: store {:?} is not configured by the cluster admin",
                    spec::ANN_MIRROR,
                    m.store
                ));
            }
        }
    }
    problems
}

fn has_template_strings(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains("{{") || s.contains("{%"),
        Value::Array(a) => a.iter().any(has_template_strings),
        Value::Object(o) => o.values().any(has_template_strings),
        _ => false,
    }
}
