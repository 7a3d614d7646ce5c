//! The deployment story, checked: `manifests/` renders with kustomize into
//! what the README promises, the real kube-apiserver accepts every overlay,
//! the `dev` overlay's registration drives the real binary for every
//! example in `examples/`, and the binary runs the way the container image
//! runs it (empty environment, nothing written).
//!
//! Tools: kustomize, kubectl, etcd and kube-apiserver from
//! `.ci/install.sh` (`$KUBE_BIN_DIR`, else `/var/cache/secret-santa-kube/bin`).
//! The apiserver is v1.20.2; see [`for_apiserver_1_20`] for the few kinds
//! and fields the manifests use that it predates. CRD-backed kinds
//! (cert-manager's Issuer and Certificate) cannot be sent to a bare
//! apiserver: they are checked in the rendered output only.
//!
//! Secret values are never printed: assertions name keys and files only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::cluster::Cluster;
use common::harness::{Server, binary, make_certs};
use serde_json::{Value, json};

// --- tools and paths --------------------------------------------------------

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The directory with kustomize, kubectl, etcd, kube-apiserver (as
/// `tests/e2e/cluster.sh` finds it).
fn kube_bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("KUBE_BIN_DIR") {
        return PathBuf::from(d);
    }
    let root = std::env::var("SECRET_SANTA_KUBE_DIR")
        .unwrap_or_else(|_| "/var/cache/secret-santa-kube".into());
    Path::new(&root).join("bin")
}

fn kustomize() -> PathBuf {
    let path = kube_bin_dir().join("kustomize");
    assert!(
        path.exists(),
        "{} is missing: run `bash .ci/install.sh`",
        path.display()
    );
    path
}

/// Decodes base64 the way the apiserver does for `[]byte` fields: line
/// breaks (kustomize wraps long values) are ignored.
fn unb64(s: &str) -> Vec<u8> {
    let compact: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .expect("valid base64")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn parse_yaml_stream(text: &str) -> Vec<Value> {
    secret_santa::yaml::from_str_multiple::<Value>(text)
        .expect("valid YAML")
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

// --- the manifests, rendered --------------------------------------------------

/// The cloud credential components; each is rendered on top of the
/// cert-manager overlay, the way a user composes them.
const COMPONENTS: &[&str] = &[
    "aws",
    "aws-pod-identity",
    "gcp",
    "azure",
    "vault",
    "oci",
    "alibaba",
    "ibm",
];

/// A copy of `manifests/` next to a fresh `certs/` (from `secret-santa
/// certs --ip 127.0.0.1`), so the overlays that read `certs/` render
/// without touching the repository, plus one overlay per component.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&repo().join("manifests"), &dir.path().join("manifests"));
        make_certs(&dir.path().join("certs"));
        for c in COMPONENTS {
            let overlay = dir.path().join(format!("manifests/overlays/test-with-{c}"));
            std::fs::create_dir_all(&overlay).unwrap();
            std::fs::write(
                overlay.join("kustomization.yaml"),
                format!(
                    "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [../cert-manager]\ncomponents: [../../components/{c}]\n"
                ),
            )
            .unwrap();
        }
        Workspace { dir }
    }

    fn certs(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// The shipped overlays (every directory in manifests/overlays) and
    /// the component compositions.
    fn overlays(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(repo().join("manifests/overlays"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        for want in ["cert-manager", "self-managed", "bring-your-own", "dev"] {
            assert!(names.iter().any(|n| n == want), "overlay {want} exists");
        }
        names.extend(COMPONENTS.iter().map(|c| format!("test-with-{c}")));
        names
    }

    /// `kustomize build`, as the README tells users to run it: the
    /// overlays that read `certs/` (outside the overlay) need the load
    /// restrictor lifted, and are checked to fail without it; all others
    /// build with kustomize's defaults (what `kubectl apply -k` does).
    fn build_path(&self, relative: &str) -> Vec<Value> {
        let dir = self.dir.path().join("manifests").join(relative);
        let kustomization: Value = secret_santa::yaml::from_str(
            &std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap(),
        )
        .unwrap();
        let reads_certs = strings(&kustomization["components"])
            .iter()
            .any(|c| c.ends_with("components/file-certs"));
        let kustomize_build = |lift: bool| {
            let mut cmd = Command::new(kustomize());
            cmd.arg("build");
            if lift {
                cmd.args(["--load-restrictor", "LoadRestrictionsNone"]);
            }
            cmd.arg(&dir).output().unwrap()
        };
        if reads_certs {
            let refused = kustomize_build(false);
            assert!(
                !refused.status.success(),
                "{relative}: reads certs/ only with the load restrictor lifted, as documented"
            );
        }
        let out = kustomize_build(reads_certs);
        assert!(
            out.status.success(),
            "kustomize build {relative} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        parse_yaml_stream(&String::from_utf8(out.stdout).unwrap())
    }

    fn build(&self, overlay: &str) -> Vec<Value> {
        self.build_path(&format!("overlays/{overlay}"))
    }
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"].as_str() == Some(name))
}

fn get<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    find(docs, kind, name).unwrap_or_else(|| panic!("{kind} {name} is rendered"))
}

fn by_name<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("{name} present"))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Labels `selector` (a matchLabels map) all present in `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let sel = selector.as_object().unwrap();
    !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// What every overlay must render, whatever it adds.
fn assert_common(overlay: &str, docs: &[Value]) {
    let ctx = format!("overlay {overlay}");
    let ns = get(docs, "Namespace", "secret-santa");
    assert_eq!(
        ns["metadata"]["labels"]["kubernetes.io/metadata.name"], "secret-santa",
        "{ctx}"
    );

    // The webhook's identity: no token, and nothing binds a role to it.
    let sa = get(docs, "ServiceAccount", "secret-santa");
    assert_eq!(sa["automountServiceAccountToken"], false, "{ctx}");
    for d in docs
        .iter()
        .filter(|d| d["kind"] == "RoleBinding" || d["kind"] == "ClusterRoleBinding")
    {
        for s in d["subjects"].as_array().unwrap() {
            assert!(
                s["name"] != "secret-santa",
                "{ctx}: the webhook's ServiceAccount gets no RBAC"
            );
        }
    }

    // Deployment: hardened, probed on the admin port, drains in time.
    let deploy = get(docs, "Deployment", "secret-santa");
    let spec = &deploy["spec"];
    let replicas = spec["replicas"].as_i64().unwrap();
    assert_eq!(
        replicas,
        if overlay == "dev" { 1 } else { 2 },
        "{ctx}: replicas"
    );
    assert_eq!(
        spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0,
        "{ctx}"
    );
    let pod = &spec["template"]["spec"];
    let pod_labels = &spec["template"]["metadata"]["labels"];
    assert!(
        selects(&spec["selector"]["matchLabels"], pod_labels),
        "{ctx}: selector"
    );
    assert_eq!(pod["serviceAccountName"], "secret-santa", "{ctx}");
    assert_eq!(pod["automountServiceAccountToken"], false, "{ctx}");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{ctx}");
    assert!(
        pod["securityContext"]["runAsUser"].as_i64().unwrap() > 0,
        "{ctx}"
    );
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
        "{ctx}"
    );
    let spread = pod["topologySpreadConstraints"].as_array().unwrap();
    assert!(
        spread
            .iter()
            .any(|c| c["topologyKey"] == "kubernetes.io/hostname"
                && selects(&c["labelSelector"]["matchLabels"], pod_labels)),
        "{ctx}: spread over nodes"
    );
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "{ctx}");
    let c = &containers[0];
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{ctx}");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{ctx}");
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"], "{ctx}");
    assert!(sc.get("privileged").is_none_or(|p| p == false), "{ctx}");
    let image = c["image"].as_str().unwrap();
    assert!(
        image.contains(':') && !image.ends_with(":latest"),
        "{ctx}: a pinned image tag, not {image}"
    );
    assert_eq!(
        by_name(&c["ports"], "webhook")["containerPort"],
        8443,
        "{ctx}"
    );
    assert_eq!(
        by_name(&c["ports"], "admin")["containerPort"],
        8080,
        "{ctx}"
    );
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz", "{ctx}");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "admin", "{ctx}");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz", "{ctx}");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "admin", "{ctx}");
    for kind in ["requests", "limits"] {
        for r in ["cpu", "memory"] {
            assert!(
                c["resources"][kind][r].is_string(),
                "{ctx}: resources.{kind}.{r}"
            );
        }
    }
    // Grace covers the preStop sleep and the drain.
    let args = strings(&c["args"]);
    assert_eq!(args[0], "serve", "{ctx}");
    let arg = |flag: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("{flag}=")))
            .unwrap_or_else(|| panic!("{ctx}: {flag} set"))
    };
    let drain = secret_santa::config::parse_duration(arg("--shutdown-grace"))
        .unwrap()
        .as_secs();
    let pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap();
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert_eq!(grace, 35, "{ctx}");
    assert!(
        grace > pre_stop + drain,
        "{ctx}: terminationGracePeriodSeconds {grace} <= {pre_stop} + {drain}"
    );
    assert_eq!(arg("--listen"), "0.0.0.0:8443", "{ctx}");
    assert_eq!(arg("--admin-listen"), "0.0.0.0:8080", "{ctx}");

    // The files the args name are mounted: the TLS Secret and the config.
    let mounts = c["volumeMounts"].as_array().unwrap();
    let volumes = pod["volumes"].as_array().unwrap();
    let volume_at = |file: &str| -> (&Value, String) {
        let m = mounts
            .iter()
            .find(|m| file.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap())))
            .unwrap_or_else(|| panic!("{ctx}: {file} is under a mount"));
        assert_eq!(m["readOnly"], true, "{ctx}: {file} mounted read-only");
        let key = file.rsplit('/').next().unwrap().to_owned();
        let volume = volumes
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap_or_else(|| panic!("{ctx}: volume of {file}"));
        (volume, key)
    };
    for flag in ["--tls-cert-file", "--tls-key-file"] {
        let (v, _) = volume_at(arg(flag));
        assert!(
            v["secret"]["secretName"]
                .as_str()
                .unwrap()
                .starts_with("secret-santa-tls"),
            "{ctx}: {flag} comes from Secret secret-santa-tls"
        );
    }
    let (config_volume, config_key) = volume_at(arg("--config"));
    let cm = get(
        docs,
        "ConfigMap",
        config_volume["configMap"]["name"].as_str().unwrap(),
    );
    let config = cm["data"][&config_key]
        .as_str()
        .unwrap_or_else(|| panic!("{ctx}: ConfigMap has {config_key}"));
    secret_santa::config::AdminConfig::parse(config)
        .unwrap_or_else(|e| panic!("{ctx}: the admin config loads: {e}"));

    // Service 443 -> the webhook port of these pods.
    let svc = get(docs, "Service", "secret-santa");
    assert!(
        selects(&svc["spec"]["selector"], pod_labels),
        "{ctx}: Service selects the pods"
    );
    let https = by_name(&svc["spec"]["ports"], "https");
    assert_eq!(https["port"], 443, "{ctx}");
    assert_eq!(https["targetPort"], "webhook", "{ctx}");

    let pdb = get(docs, "PodDisruptionBudget", "secret-santa");
    assert!(
        selects(&pdb["spec"]["selector"]["matchLabels"], pod_labels),
        "{ctx}: PDB selects the pods"
    );
    assert_eq!(pdb["spec"]["maxUnavailable"], 1, "{ctx}");

    // NetworkPolicy: the webhook port from anywhere, the admin port, DNS and HTTPS out.
    let np = get(docs, "NetworkPolicy", "secret-santa");
    assert!(
        selects(&np["spec"]["podSelector"]["matchLabels"], pod_labels),
        "{ctx}"
    );
    assert_eq!(
        strings(&np["spec"]["policyTypes"]),
        ["Ingress", "Egress"],
        "{ctx}"
    );
    let ingress = np["spec"]["ingress"].as_array().unwrap();
    for port in ["webhook", "admin"] {
        assert!(
            ingress.iter().any(|r| r.get("from").is_none()
                && r["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["port"] == port)),
            "{ctx}: ingress to {port} from anywhere"
        );
    }
    let egress_ports: BTreeSet<(i64, String)> = np["spec"]["egress"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["ports"].as_array().unwrap().iter())
        .map(|p| {
            (
                p["port"].as_i64().unwrap(),
                p["protocol"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for want in [(53, "UDP"), (53, "TCP"), (443, "TCP")] {
        assert!(
            egress_ports.contains(&(want.0, want.1.to_owned())),
            "{ctx}: egress {want:?}"
        );
    }

    // The registration, field by field.
    let mwc = get(docs, "MutatingWebhookConfiguration", "secret-santa");
    assert_eq!(
        mwc["apiVersion"], "admissionregistration.k8s.io/v1",
        "{ctx}"
    );
    let hooks = mwc["webhooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 1, "{ctx}");
    let w = &hooks[0];
    assert_eq!(w["name"], "secrets.secret-santa.io", "{ctx}");
    assert_eq!(strings(&w["admissionReviewVersions"]), ["v1"], "{ctx}");
    assert_eq!(
        w["rules"],
        json!([{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["secrets"], "scope": "Namespaced"}]),
        "{ctx}"
    );
    assert_eq!(
        w["objectSelector"],
        json!({"matchLabels": {"secret-santa.io/enabled": "true"}}),
        "{ctx}"
    );
    assert_eq!(
        w["namespaceSelector"],
        json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "secret-santa"]}]}),
        "{ctx}"
    );
    assert_eq!(w["sideEffects"], "NoneOnDryRun", "{ctx}");
    assert_eq!(w["failurePolicy"], "Fail", "{ctx}");
    assert_eq!(w["timeoutSeconds"], 10, "{ctx}");
    assert_eq!(w["reinvocationPolicy"], "Never", "{ctx}");
    assert_eq!(w["matchPolicy"], "Equivalent", "{ctx}");
    // The webhook's own deadline answers before the apiserver gives up.
    let deadline = secret_santa::config::AdminConfig::parse(config)
        .unwrap()
        .limits
        .request_deadline;
    assert!(
        deadline < Duration::from_secs(w["timeoutSeconds"].as_u64().unwrap()),
        "{ctx}"
    );
    if overlay == "dev" {
        assert_eq!(
            w["clientConfig"]["url"], "https://127.0.0.1:8443/mutate",
            "{ctx}"
        );
        assert!(w["clientConfig"].get("service").is_none(), "{ctx}");
    } else {
        assert_eq!(
            w["clientConfig"]["service"],
            json!({"name": "secret-santa", "namespace": "secret-santa", "path": "/mutate", "port": 443}),
            "{ctx}"
        );
    }
}

/// The way each overlay gets its certificate and caBundle.
fn assert_tls(overlay: &str, docs: &[Value], certs: &Path) {
    let ctx = format!("overlay {overlay}");
    let mwc = get(docs, "MutatingWebhookConfiguration", "secret-santa");
    let ca_bundle = mwc["webhooks"][0]["clientConfig"]["caBundle"].as_str();
    let deploy = get(docs, "Deployment", "secret-santa");
    let tls_volume = by_name(&deploy["spec"]["template"]["spec"]["volumes"], "tls");
    let secret_name = tls_volume["secret"]["secretName"].as_str().unwrap();
    match overlay {
        "bring-your-own" | "dev" => {
            // kustomize made the Secret from certs/ and copied ca.crt.
            let secret = get(docs, "Secret", secret_name);
            assert_eq!(secret["type"], "kubernetes.io/tls", "{ctx}");
            for key in ["ca.crt", "tls.crt", "tls.key"] {
                let stored = unb64(secret["data"][key].as_str().unwrap());
                assert!(
                    stored == std::fs::read(certs.join(key)).unwrap(),
                    "{ctx}: Secret {key} is certs/{key}"
                );
            }
            let bundle = unb64(ca_bundle.unwrap_or_else(|| panic!("{ctx}: caBundle set")));
            assert!(
                bundle == std::fs::read(certs.join("ca.crt")).unwrap(),
                "{ctx}: caBundle is certs/ca.crt"
            );
        }
        "self-managed" => {
            assert_eq!(secret_name, "secret-santa-tls", "{ctx}");
            assert!(ca_bundle.is_none(), "{ctx}: caBundle is the Job's to set");
            for (kind, name) in [
                ("Job", "secret-santa-certs"),
                ("CronJob", "secret-santa-cert-rotation"),
            ] {
                let job = get(docs, kind, name);
                let spec = if kind == "CronJob" {
                    &job["spec"]["jobTemplate"]["spec"]
                } else {
                    &job["spec"]
                };
                let pod = &spec["template"]["spec"];
                assert_eq!(
                    pod["serviceAccountName"], "secret-santa-certs",
                    "{ctx}: {name}"
                );
                let init = &pod["initContainers"][0];
                assert_eq!(
                    strings(&init["args"])[..7],
                    [
                        "certs",
                        "--out",
                        "/certs",
                        "--service",
                        "secret-santa",
                        "--namespace",
                        "secret-santa"
                    ],
                    "{ctx}: {name} runs `secret-santa certs` for the Service"
                );
                assert_eq!(
                    init["image"], deploy["spec"]["template"]["spec"]["containers"][0]["image"],
                    "{ctx}"
                );
                let publish = &pod["containers"][0];
                let env = &publish["env"];
                assert_eq!(by_name(env, "SECRET")["value"], "secret-santa-tls", "{ctx}");
                assert_eq!(by_name(env, "WEBHOOK")["value"], "secret-santa", "{ctx}");
                assert_eq!(
                    by_name(env, "ROTATE")["value"],
                    if kind == "CronJob" { "true" } else { "false" },
                    "{ctx}"
                );
                assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{ctx}");
                for c in [init, publish] {
                    assert_eq!(
                        c["securityContext"]["readOnlyRootFilesystem"], true,
                        "{ctx}"
                    );
                    assert_eq!(
                        c["securityContext"]["allowPrivilegeEscalation"], false,
                        "{ctx}"
                    );
                }
            }
            let role = get(docs, "ClusterRole", "secret-santa-certs");
            assert_eq!(
                role["rules"],
                json!([{"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"], "resourceNames": ["secret-santa"], "verbs": ["get", "patch"]}]),
                "{ctx}: the Job may patch this one webhook only"
            );
            let script = get(docs, "ConfigMap", "secret-santa-certs-script");
            assert!(
                script["data"]["certs.sh"]
                    .as_str()
                    .unwrap()
                    .starts_with("#!/bin/sh"),
                "{ctx}"
            );
        }
        _ => {
            // cert-manager (alone or under a cloud component).
            assert_eq!(secret_name, "secret-santa-tls", "{ctx}");
            assert!(
                ca_bundle.is_none(),
                "{ctx}: caBundle is cert-manager's to inject"
            );
            assert_eq!(
                mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
                "secret-santa/secret-santa",
                "{ctx}"
            );
            let cert = get(docs, "Certificate", "secret-santa");
            assert_eq!(cert["metadata"]["namespace"], "secret-santa", "{ctx}");
            assert_eq!(cert["spec"]["secretName"], "secret-santa-tls", "{ctx}");
            assert!(
                strings(&cert["spec"]["dnsNames"]).contains(&"secret-santa.secret-santa.svc"),
                "{ctx}"
            );
            let issuer = get(
                docs,
                "Issuer",
                cert["spec"]["issuerRef"]["name"].as_str().unwrap(),
            );
            let ca_secret = issuer["spec"]["ca"]["secretName"].as_str().unwrap();
            let ca_cert = docs
                .iter()
                .find(|d| d["kind"] == "Certificate" && d["spec"]["secretName"] == ca_secret)
                .unwrap_or_else(|| panic!("{ctx}: a Certificate makes the CA"));
            assert_eq!(ca_cert["spec"]["isCA"], true, "{ctx}");
        }
    }
}

/// What each cloud component adds.
fn assert_component(component: &str, docs: &[Value]) {
    let ctx = format!("component {component}");
    let sa = get(docs, "ServiceAccount", "secret-santa");
    let annotations = &sa["metadata"]["annotations"];
    let pod = &get(docs, "Deployment", "secret-santa")["spec"]["template"];
    let mount_of = |secret: &str| -> String {
        let volume = pod["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["secret"]["secretName"] == secret)
            .unwrap_or_else(|| panic!("{ctx}: Secret {secret} is a volume"));
        let mount = pod["spec"]["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == volume["name"])
            .unwrap_or_else(|| panic!("{ctx}: Secret {secret} is mounted"));
        assert_eq!(mount["readOnly"], true, "{ctx}");
        mount["mountPath"].as_str().unwrap().to_owned()
    };
    match component {
        "aws" => {
            assert!(
                annotations["eks.amazonaws.com/role-arn"]
                    .as_str()
                    .unwrap()
                    .starts_with("arn:aws:iam::"),
                "{ctx}"
            );
            assert!(
                find(docs, "NetworkPolicy", "secret-santa-aws").is_some(),
                "{ctx}: Pod Identity agent reachable"
            );
            let policy: Value = serde_json::from_str(
                &std::fs::read_to_string(repo().join("manifests/components/aws/iam-policy.json"))
                    .unwrap(),
            )
            .expect("iam-policy.json is JSON");
            assert_eq!(policy["Version"], "2012-10-17", "{ctx}");
        }
        "aws-pod-identity" => {
            assert!(
                annotations.get("eks.amazonaws.com/role-arn").is_none(),
                "{ctx}: Pod Identity needs no IRSA annotation"
            );
            assert!(
                find(docs, "NetworkPolicy", "secret-santa-aws").is_some(),
                "{ctx}: Pod Identity agent reachable"
            );
        }
        "gcp" => {
            assert!(
                annotations["iam.gke.io/gcp-service-account"]
                    .as_str()
                    .unwrap()
                    .ends_with(".iam.gserviceaccount.com"),
                "{ctx}"
            );
            assert!(
                find(docs, "NetworkPolicy", "secret-santa-gcp").is_some(),
                "{ctx}: metadata server reachable"
            );
        }
        "azure" => {
            assert!(
                annotations["azure.workload.identity/client-id"].is_string(),
                "{ctx}"
            );
            assert_eq!(
                pod["metadata"]["labels"]["azure.workload.identity/use"], "true",
                "{ctx}"
            );
        }
        "vault" => {
            assert_eq!(mount_of("secret-santa-vault"), "/etc/vault", "{ctx}");
            let token = by_name(&pod["spec"]["volumes"], "vault-token");
            assert_eq!(
                token["projected"]["sources"][0]["serviceAccountToken"]["audience"], "vault",
                "{ctx}"
            );
            assert!(
                find(docs, "NetworkPolicy", "secret-santa-vault").is_some(),
                "{ctx}: port 8200 reachable"
            );
        }
        "oci" => assert_eq!(
            mount_of("secret-santa-oci"),
            "/etc/secret-santa/oci",
            "{ctx}"
        ),
        "alibaba" => assert_eq!(
            mount_of("secret-santa-alibaba"),
            "/etc/secret-santa/alibaba",
            "{ctx}"
        ),
        "ibm" => assert_eq!(
            mount_of("secret-santa-ibm"),
            "/etc/secret-santa/ibm",
            "{ctx}"
        ),
        other => panic!("no assertions for component {other}"),
    }
}

#[test]
fn every_overlay_renders_what_the_readme_promises() {
    let ws = Workspace::new();
    // The base renders on its own too (it is what the overlays share).
    let base = ws.build_path("base");
    assert!(find(&base, "MutatingWebhookConfiguration", "secret-santa").is_some());
    for overlay in ws.overlays() {
        let docs = ws.build(&overlay);
        assert_common(&overlay, &docs);
        assert_tls(&overlay, &docs, &ws.certs());
        if let Some(component) = overlay.strip_prefix("test-with-") {
            assert_component(component, &docs);
        }
    }
    // Every component directory is exercised above.
    let mut dirs: Vec<String> = std::fs::read_dir(repo().join("manifests/components"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !["cert-manager", "self-managed-certs", "file-certs"].contains(&n.as_str()))
        .collect();
    dirs.sort();
    let mut listed: Vec<String> = COMPONENTS.iter().map(|s| (*s).to_owned()).collect();
    listed.sort();
    assert_eq!(
        dirs, listed,
        "every cloud component has a rendered test overlay"
    );
}

// --- the real apiserver -----------------------------------------------------------

/// Adapts a rendered object to the v1.20.2 apiserver under test. Every
/// change is to something that apiserver predates, with the same schema
/// for the fields used:
/// - PodDisruptionBudget policy/v1 (1.21) -> policy/v1beta1;
/// - CronJob batch/v1 (1.21) -> batch/v1beta1;
/// - the preStop `sleep` action (1.30) is dropped.
///
/// Returns `None` for CRD-backed kinds (cert-manager.io) a bare apiserver
/// does not know.
fn for_apiserver_1_20(mut doc: Value) -> Option<Value> {
    let api = doc["apiVersion"].as_str().unwrap().to_owned();
    if api.starts_with("cert-manager.io/") {
        return None;
    }
    match (doc["kind"].as_str().unwrap(), api.as_str()) {
        ("PodDisruptionBudget", "policy/v1") => doc["apiVersion"] = json!("policy/v1beta1"),
        ("CronJob", "batch/v1") => doc["apiVersion"] = json!("batch/v1beta1"),
        ("Deployment", _) => {
            for c in doc["spec"]["template"]["spec"]["containers"]
                .as_array_mut()
                .unwrap()
            {
                if let Some(pre_stop) = c
                    .pointer_mut("/lifecycle/preStop")
                    .and_then(Value::as_object_mut)
                {
                    assert!(pre_stop.remove("sleep").is_some());
                }
                if c.pointer("/lifecycle/preStop")
                    .and_then(Value::as_object)
                    .is_some_and(|o| o.is_empty())
                {
                    c.as_object_mut().unwrap().remove("lifecycle");
                }
            }
        }
        _ => {}
    }
    Some(doc)
}

fn list(docs: &[Value]) -> String {
    json!({"apiVersion": "v1", "kind": "List", "items": docs}).to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn every_overlay_is_accepted_by_the_apiserver() {
    let ws = Workspace::new();
    let cluster = Cluster::start();
    let mut namespace_created = false;
    for overlay in ws.overlays() {
        let rendered = ws.build(&overlay);
        let crd_kinds = rendered
            .iter()
            .filter(|d| {
                d["apiVersion"]
                    .as_str()
                    .unwrap()
                    .starts_with("cert-manager.io/")
            })
            .count();
        let docs: Vec<Value> = rendered
            .into_iter()
            .filter_map(for_apiserver_1_20)
            .collect();
        if overlay.contains("cert-manager") || overlay.starts_with("test-with-") {
            assert_eq!(
                crd_kinds, 4,
                "{overlay}: Issuers and Certificates (checked in the rendered output only)"
            );
        }
        // Namespaced objects need their namespace for real, even in a dry run.
        if !namespace_created {
            cluster.ok(
                &["apply", "-f", "-"],
                Some(&list(&[get(&docs, "Namespace", "secret-santa").clone()])),
            );
            namespace_created = true;
        }
        let out = cluster.kubectl(
            &["apply", "--dry-run=server", "-o", "name", "-f", "-"],
            Some(&list(&docs)),
        );
        assert!(
            out.status.success(),
            "{overlay}: the apiserver refuses it: {}",
            stderr(&out)
        );
        let applied = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            applied.lines().count(),
            docs.len(),
            "{overlay}: every object went through:\n{applied}"
        );
    }

    // The self-managed Job's script, for real, as its ServiceAccount (RBAC
    // exactly as rendered): first install, a re-run, two rotations.
    let docs: Vec<Value> = ws
        .build("self-managed")
        .into_iter()
        .filter_map(for_apiserver_1_20)
        .collect();
    let keep = [
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ClusterRoleBinding",
        "MutatingWebhookConfiguration",
    ];
    let real: Vec<Value> = docs
        .iter()
        .filter(|d| keep.contains(&d["kind"].as_str().unwrap()))
        .cloned()
        .collect();
    cluster.ok(&["apply", "-f", "-"], Some(&list(&real)));
    let script = get(&docs, "ConfigMap", "secret-santa-certs-script")["data"]["certs.sh"]
        .as_str()
        .unwrap()
        .to_owned();
    let job = JobRunner::new(&cluster, &script);

    let first = tempfile::tempdir().unwrap();
    make_certs(first.path());
    job.run(first.path(), false);
    let ca = |dir: &Path| std::fs::read(dir.join("ca.crt")).unwrap();
    assert!(
        job.ca_bundle() == ca(first.path()),
        "first run: caBundle is the new CA"
    );
    assert!(job.secret("tls.crt") == std::fs::read(first.path().join("tls.crt")).unwrap());
    assert!(job.secret("ca.crt") == ca(first.path()));

    // A re-run (kubectl apply after the Job's TTL) changes nothing.
    let again = tempfile::tempdir().unwrap();
    make_certs(again.path());
    job.run(again.path(), false);
    assert!(job.ca_bundle() == ca(first.path()), "re-run keeps the CA");
    assert!(
        job.secret("tls.crt") == std::fs::read(first.path().join("tls.crt")).unwrap(),
        "re-run keeps the certificate"
    );

    // Rotation: the new CA and the previous one are trusted; the Secret is new.
    let second = tempfile::tempdir().unwrap();
    make_certs(second.path());
    job.run(second.path(), true);
    assert!(
        job.ca_bundle() == [ca(second.path()), ca(first.path())].concat(),
        "rotation trusts new + previous CA"
    );
    assert!(
        job.secret("tls.crt") == std::fs::read(second.path().join("tls.crt")).unwrap(),
        "rotation replaced the certificate"
    );
    assert!(job.secret("tls.key") == std::fs::read(second.path().join("tls.key")).unwrap());
    let third = tempfile::tempdir().unwrap();
    make_certs(third.path());
    job.run(third.path(), true);
    assert!(
        job.ca_bundle() == [ca(third.path()), ca(second.path())].concat(),
        "the oldest CA leaves at the next rotation"
    );
}

/// Runs certs.sh on this machine, with a `kubectl` that impersonates the
/// Job's ServiceAccount, so the rendered RBAC is what is tested.
struct JobRunner<'a> {
    cluster: &'a Cluster,
    dir: tempfile::TempDir,
}

impl<'a> JobRunner<'a> {
    fn new(cluster: &'a Cluster, script: &str) -> JobRunner<'a> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("certs.sh"), script).unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let wrapper = bin.join("kubectl");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nexec '{}' --kubeconfig '{}' --as=system:serviceaccount:secret-santa:secret-santa-certs \"$@\"\n",
                cluster.env["KUBECTL"], cluster.env["KUBECONFIG"]
            ),
        )
        .unwrap();
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        JobRunner { cluster, dir }
    }

    fn run(&self, certs: &Path, rotate: bool) {
        let path = format!("{}:/usr/bin:/bin", self.dir.path().join("bin").display());
        let out = Command::new("sh")
            .arg(self.dir.path().join("certs.sh"))
            .env_clear()
            .env("PATH", path)
            .env("HOME", self.dir.path())
            .env("CERTS_DIR", certs)
            .env("NAMESPACE", "secret-santa")
            .env("SECRET", "secret-santa-tls")
            .env("WEBHOOK", "secret-santa")
            .env("ROTATE", if rotate { "true" } else { "false" })
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "certs.sh (rotate={rotate}) failed: {}",
            stderr(&out)
        );
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        assert!(
            !said.contains("PRIVATE KEY") && !said.contains("CERTIFICATE"),
            "certs.sh prints no PEM"
        );
    }

    fn ca_bundle(&self) -> Vec<u8> {
        let out = self.cluster.ok(
            &[
                "get",
                "mutatingwebhookconfiguration",
                "secret-santa",
                "-o",
                "jsonpath={.webhooks[0].clientConfig.caBundle}",
            ],
            None,
        );
        unb64(&out)
    }

    fn secret(&self, key: &str) -> Vec<u8> {
        let v: Value = serde_json::from_str(&self.cluster.ok(
            &[
                "-n",
                "secret-santa",
                "get",
                "secret",
                "secret-santa-tls",
                "-o",
                "json",
            ],
            None,
        ))
        .unwrap();
        assert_eq!(v["type"], "kubernetes.io/tls");
        unb64(v["data"][key].as_str().unwrap())
    }
}

// --- examples/ ----------------------------------------------------------------------

/// Every example manifest (examples/**/*.yaml holding a Secret).
fn example_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "yaml") {
                let docs = parse_yaml_stream(&std::fs::read_to_string(&p).unwrap());
                if docs.iter().any(|d| d["kind"] == "Secret") {
                    out.push(p);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo().join("examples"), &mut out);
    out.sort();
    out
}

fn offline_config() -> PathBuf {
    repo().join("examples/stores/offline-config.yaml")
}

fn data_keys(secret: &Value) -> BTreeSet<String> {
    ["data", "stringData"]
        .iter()
        .filter_map(|f| secret[*f].as_object())
        .flat_map(|m| m.keys().cloned())
        .collect()
}

fn annotation<'a>(secret: &'a Value, key: &str) -> Option<&'a str> {
    secret["metadata"]["annotations"][key].as_str()
}

fn pem_blocks(text: &str, label: &str) -> Vec<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&begin) {
        let after = &rest[start + begin.len()..];
        let stop = after.find(&end).expect("PEM block ends");
        out.push(unb64(&after[..stop]));
        rest = &after[stop + end.len()..];
    }
    out
}

/// Type-specific checks of a stored example Secret (values never shown).
fn assert_typed(file: &str, stored: &Value, data: &BTreeMap<String, String>) {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let certs_of = |key: &str| pem_blocks(&data[key], "CERTIFICATE");
    match stored["type"].as_str().unwrap() {
        "kubernetes.io/tls" => {
            assert!(
                data["tls.key"].contains("PRIVATE KEY-----"),
                "{file}: tls.key is a PEM key"
            );
            let chain = certs_of("tls.crt");
            assert!(!chain.is_empty(), "{file}: tls.crt holds a certificate");
            let (_, leaf) = X509Certificate::from_der(&chain[0]).expect("tls.crt parses");
            if data.contains_key("ca.crt") {
                let ca_der = certs_of("ca.crt");
                let (_, ca) = X509Certificate::from_der(&ca_der[0]).expect("ca.crt parses");
                assert!(ca.is_ca(), "{file}: ca.crt is a CA");
                assert_eq!(
                    leaf.issuer(),
                    ca.subject(),
                    "{file}: tls.crt issued by ca.crt"
                );
                leaf.verify_signature(Some(ca.public_key()))
                    .expect("tls.crt signed by ca.crt's key");
            }
        }
        "kubernetes.io/ssh-auth" => {
            assert!(
                data["ssh-privatekey"].starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"),
                "{file}"
            );
            assert!(data["ssh-publickey"].starts_with("ssh-ed25519 "), "{file}");
        }
        "kubernetes.io/dockerconfigjson" => {
            let config: Value =
                serde_json::from_str(&data[".dockerconfigjson"]).expect("valid JSON");
            let auths = config["auths"].as_object().expect("auths");
            for (registry, entry) in auths {
                let auth = String::from_utf8(unb64(entry["auth"].as_str().unwrap())).unwrap();
                let expect = format!(
                    "{}:{}",
                    entry["username"].as_str().unwrap(),
                    entry["password"].as_str().unwrap()
                );
                assert!(
                    auth == expect,
                    "{file}: auth of {registry} is base64(username:password)"
                );
            }
        }
        _ => {}
    }
    if data.contains_key("auth") {
        assert!(
            data["auth"].contains(":$2y$"),
            "{file}: auth is an htpasswd bcrypt line"
        );
    }
}

#[test]
fn examples_through_the_dev_overlay_on_a_real_apiserver() {
    let ws = Workspace::new();
    let cluster = Cluster::start();
    let logs = tempfile::tempdir().unwrap();
    // The webhook on this machine, with the certificate the dev overlay
    // puts in caBundle, and every store the examples name as a memory store.
    let certs = ws.certs();
    let config = offline_config();
    let server = Server::start(
        &certs.join("tls.crt"),
        &certs.join("tls.key"),
        &["--config", config.to_str().unwrap()],
        logs.path(),
    );

    // The dev overlay, for real, with its URL moved to the port we got.
    let mut docs: Vec<Value> = ws
        .build("dev")
        .into_iter()
        .filter_map(for_apiserver_1_20)
        .collect();
    let mwc = docs
        .iter_mut()
        .find(|d| d["kind"] == "MutatingWebhookConfiguration")
        .unwrap();
    assert_eq!(
        mwc["webhooks"][0]["clientConfig"]["url"],
        "https://127.0.0.1:8443/mutate"
    );
    mwc["webhooks"][0]["clientConfig"]["url"] = json!(format!(
        "https://127.0.0.1:{}/mutate",
        server.webhook.port()
    ));
    cluster.ok(&["apply", "-f", "-"], Some(&list(&docs)));
    let stored_bundle = cluster.ok(
        &[
            "get",
            "mutatingwebhookconfiguration",
            "secret-santa",
            "-o",
            "jsonpath={.webhooks[0].clientConfig.caBundle}",
        ],
        None,
    );
    assert!(
        unb64(&stored_bundle) == std::fs::read(certs.join("ca.crt")).unwrap(),
        "caBundle stored as certs/ca.crt"
    );
    cluster.ok(&["create", "namespace", "shop"], None);

    // The apiserver picks the registration up asynchronously.
    let probe = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: probe\n  namespace: shop\n  labels: {secret-santa.io/enabled: \"true\"}\n  annotations: {secret-santa.io/autogenerate: token}\n";
    let started = Instant::now();
    loop {
        cluster.ok(&["apply", "-f", "-"], Some(probe));
        if cluster.get_secret("probe")["data"].get("token").is_some() {
            break;
        }
        cluster.ok(&["-n", "shop", "delete", "secret", "probe"], None);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "webhook never called: {}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // The webhook's own namespace is excluded (its Namespace carries the
    // kubernetes.io/metadata.name label a 1.20 apiserver does not set).
    let own = probe
        .replace("namespace: shop", "namespace: secret-santa")
        .replace("name: probe", "name: own");
    cluster.ok(&["create", "-f", "-"], Some(&own));
    let untouched: Value = serde_json::from_str(&cluster.ok(
        &["-n", "secret-santa", "get", "secret", "own", "-o", "json"],
        None,
    ))
    .unwrap();
    assert!(
        untouched.get("data").is_none_or(Value::is_null),
        "namespace secret-santa is never sent to the webhook"
    );

    let files = example_files();
    assert!(files.len() >= 17, "examples found: {}", files.len());
    for path in &files {
        let file = path.strip_prefix(repo()).unwrap().display().to_string();
        let manifest = parse_yaml_stream(&std::fs::read_to_string(path).unwrap()).remove(0);
        let name = manifest["metadata"]["name"].as_str().unwrap();

        // What the offline tool says the Secret will hold (masked values).
        let out = Command::new(binary())
            .args(["mutate", "--config"])
            .arg(&config)
            .arg(path)
            .env_clear()
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: offline mutate failed: {}",
            stderr(&out)
        );
        let offline = parse_yaml_stream(&String::from_utf8(out.stdout).unwrap()).remove(0);

        let out = cluster.kubectl(&["create", "-f", path.to_str().unwrap()], None);
        assert!(
            out.status.success(),
            "{file}: kubectl create failed: {}",
            stderr(&out)
        );
        let stored = cluster.get_secret(name);
        assert_eq!(
            data_keys(&stored),
            data_keys(&offline),
            "{file}: stored keys are what `mutate` promised"
        );
        assert_eq!(stored["type"], manifest["type"], "{file}");
        let generated = annotation(&stored, "secret-santa.io/generated-keys")
            .unwrap_or_else(|| panic!("{file}: generated-keys"));
        assert_eq!(
            Some(generated),
            annotation(&offline, "secret-santa.io/generated-keys"),
            "{file}"
        );
        assert!(
            annotation(&stored, "secret-santa.io/generated-at").is_some(),
            "{file}"
        );
        assert!(
            annotation(&stored, "secret-santa.io/generator-types").is_some(),
            "{file}"
        );
        for key in generated.split(',') {
            assert!(
                stored["data"][key].as_str().is_some_and(|v| !v.is_empty()),
                "{file}: {key} filled"
            );
        }
        // Mirrors went to exactly the stores the annotation names.
        if let Some(mirror) = annotation(&manifest, "secret-santa.io/mirror") {
            let wanted: BTreeSet<String> = secret_santa::yaml::from_str::<Vec<Value>>(mirror)
                .unwrap()
                .iter()
                .map(|m| m["store"].as_str().unwrap().to_owned())
                .collect();
            let done: BTreeSet<String> = annotation(&stored, "secret-santa.io/mirrored-to")
                .unwrap_or_else(|| panic!("{file}: mirrored-to"))
                .split(',')
                .map(str::to_owned)
                .collect();
            assert_eq!(done, wanted, "{file}: mirrored-to");
        }
        let data: BTreeMap<String, String> = stored["data"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    String::from_utf8(unb64(v.as_str().unwrap())).unwrap(),
                )
            })
            .collect();
        assert_typed(&file, &stored, &data);

        // Re-applying the example (GitOps) keeps every value.
        let out = cluster.kubectl(&["apply", "-f", path.to_str().unwrap()], None);
        assert!(
            out.status.success(),
            "{file}: kubectl apply failed: {}",
            stderr(&out)
        );
        assert!(
            cluster.get_secret(name)["data"] == stored["data"],
            "{file}: re-apply keeps the values"
        );
    }
}

#[test]
fn check_passes_on_examples_and_each_store_example_documents_its_config() {
    let run = |args: &[&str]| {
        Command::new(binary())
            .args(args)
            .current_dir(repo())
            .env_clear()
            .output()
            .unwrap()
    };
    let out = run(&["check", "examples/"]);
    assert!(
        out.status.success(),
        "secret-santa check examples/: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    let out = run(&[
        "check",
        "--config",
        "examples/stores/offline-config.yaml",
        "examples/",
    ]);
    assert!(
        out.status.success(),
        "with the offline config: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );

    for path in example_files() {
        let file = path.strip_prefix(repo()).unwrap().display().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# "),
            "{file} starts with a comment saying what it shows"
        );
        let header: String = text
            .lines()
            .take_while(|l| l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            header.contains("cargo run -- mutate") && header.contains(&file),
            "{file} says how to run it offline"
        );
        let manifest = parse_yaml_stream(&text).remove(0);
        assert_eq!(
            manifest["metadata"]["labels"]["secret-santa.io/enabled"], "true",
            "{file} opts in"
        );

        let Some(mirror) = annotation(&manifest, "secret-santa.io/mirror") else {
            continue;
        };
        // The header's "Admin config:" block is a config the store accepts,
        // or (stores not in this build yet) refused only for its type.
        let block: Vec<&str> = header
            .lines()
            .skip_while(|l| !l.starts_with("# Admin config"))
            .skip_while(|l| !l.starts_with("#  "))
            .take_while(|l| l.starts_with("#  "))
            .map(|l| &l[1..])
            .collect();
        assert!(
            !block.is_empty(),
            "{file}: documents the admin config of its store"
        );
        let indent = block
            .iter()
            .map(|l| l.len() - l.trim_start().len())
            .min()
            .unwrap();
        let block: Vec<&str> = block.iter().map(|l| &l[indent..]).collect();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::write(
            &config,
            format!("clusterId: example\n{}\n", block.join("\n")),
        )
        .unwrap();
        let parsed: Value =
            secret_santa::yaml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
        let store_type = parsed["stores"][0]["type"].as_str().unwrap().to_owned();
        let store_name = parsed["stores"][0]["name"].as_str().unwrap();
        assert!(
            mirror.contains(&format!("store: {store_name}")),
            "{file}: mirrors to the store it documents"
        );
        assert!(
            std::fs::read_to_string(offline_config())
                .unwrap()
                .contains(&format!("name: {store_name},")),
            "{file}: its store is in offline-config.yaml"
        );
        let out = run(&["check", "--config", config.to_str().unwrap(), &file]);
        let available = secret_santa::store::STORE_TYPES.contains(&store_type.as_str());
        if available {
            assert!(
                out.status.success(),
                "{file}: its admin config works with this build: {}",
                stderr(&out)
            );
        } else {
            assert!(
                stderr(&out).contains("not available in this build")
                    && header.contains("not in this build yet"),
                "{file}: a store type this build lacks is marked as planned: {}",
                stderr(&out)
            );
        }
    }
}

// --- the binary as the image runs it ------------------------------------------------

/// `GET path` over plain HTTP/1.1; the status code.
fn http_status(addr: std::net::SocketAddr, path: &str) -> u16 {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    response.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn release_style_run_with_an_empty_environment_writes_nothing() {
    // An empty working directory that must stay empty: the image's root
    // filesystem is read-only and its environment is only what the
    // Deployment sets.
    let cwd = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(binary())
            .args(args)
            .current_dir(cwd.path())
            .env_clear()
            .output()
            .unwrap()
    };

    let examples = repo().join("examples");
    let out = run(&["check", examples.to_str().unwrap()]);
    assert!(out.status.success(), "check: {}", stderr(&out));
    let out = run(&[
        "mutate",
        examples.join("database-credentials.yaml").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "mutate: {}", stderr(&out));
    let certs = tempfile::tempdir().unwrap();
    let out = run(&["certs", "--out", certs.path().to_str().unwrap()]);
    assert!(out.status.success(), "certs: {}", stderr(&out));
    let mut written: Vec<String> = std::fs::read_dir(certs.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    written.sort();
    assert_eq!(
        written,
        ["ca.crt", "tls.crt", "tls.key"],
        "certs writes only into --out"
    );

    let mut child = Command::new(binary())
        .args([
            "serve",
            "--self-signed",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .current_dir(cwd.path())
        .env_clear()
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut admin = None;
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 {
        if let Some(rest) = line.trim().strip_prefix("listening ") {
            admin = rest
                .split_whitespace()
                .find_map(|p| p.strip_prefix("admin="))
                .map(|a| a.parse().unwrap());
            break;
        }
        line.clear();
    }
    let Some(admin) = admin else {
        let _ = child.kill();
        panic!("serve --self-signed did not start with an empty environment");
    };
    assert_eq!(http_status(admin, "/readyz"), 200);
    assert_eq!(http_status(admin, "/healthz"), 200);
    assert_eq!(http_status(admin, "/metrics"), 200);
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        assert!(Instant::now() < deadline, "no exit within the drain grace");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0), "SIGTERM: clean exit");
    assert!(
        std::fs::read_dir(cwd.path()).unwrap().next().is_none(),
        "nothing written to the working directory"
    );
}

#[test]
fn dockerfile_builds_the_locked_release_into_a_shell_less_non_root_image() {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let stages: Vec<&str> = text.split("\nFROM ").skip(1).collect();
    assert_eq!(stages.len(), 2, "two stages: build and runtime");
    let (build, runtime) = (stages[0], stages[1]);

    // The builder's Rust is at least the crate's rust-version.
    let cargo: String = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let wanted = cargo
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap();
    let image = build.split_whitespace().next().unwrap();
    let tag = image.rsplit(':').next().unwrap();
    let version = tag.split('-').next().unwrap();
    let parse = |v: &str| {
        v.split('.')
            .map(|p| p.parse::<u32>().unwrap())
            .collect::<Vec<_>>()
    };
    assert!(
        image.contains("rust:") && parse(version) >= parse(wanted),
        "builder {image} has Rust >= {wanted}"
    );
    assert!(
        build.contains("cargo build --release --locked"),
        "a locked release build"
    );

    // What the build stage copies is a package cargo can read as it is:
    // replay its COPY lines into an empty directory and ask cargo for the
    // package's targets (a declared bench or binary that was not copied
    // fails here, as it would in `docker build`).
    let context = tempfile::tempdir().unwrap();
    for line in build.lines().filter_map(|l| l.strip_prefix("COPY ")) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let (dest, sources) = parts.split_last().unwrap();
        for source in sources {
            let from = repo().join(source);
            let to = if dest.ends_with('/') && *dest != "./" {
                context.path().join(dest).join(source)
            } else if *dest == "./" {
                context.path().join(source)
            } else {
                context.path().join(dest)
            };
            copy_tree(&from, &to);
        }
    }
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(context.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the Dockerfile's build context is not a readable cargo package: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: Value = serde_json::from_slice(&out.stdout).unwrap();
    let targets = metadata["packages"][0]["targets"].as_array().unwrap();
    assert!(
        targets.iter().any(|t| t["name"] == "secret-santa"
            && t["kind"].as_array().unwrap().iter().any(|k| k == "bin")),
        "the context builds the secret-santa binary"
    );

    assert!(
        runtime.starts_with("gcr.io/distroless/cc-debian12:nonroot"),
        "distroless runtime with glibc"
    );
    assert!(
        !runtime.contains("\nRUN "),
        "nothing runs in the runtime stage (it has no shell)"
    );
    let user = runtime
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER set");
    assert!(
        !user.starts_with('0') && !user.starts_with("root"),
        "non-root user"
    );
    assert!(
        runtime.contains("ENTRYPOINT [\"/usr/local/bin/secret-santa\"]"),
        "exec-form entrypoint, no shell"
    );
    // The Deployment runs the same user the image declares.
    let deployment =
        std::fs::read_to_string(repo().join("manifests/base/deployment.yaml")).unwrap();
    let uid = user.split(':').next().unwrap();
    assert!(
        deployment.contains(&format!("runAsUser: {uid}")),
        "Deployment runAsUser matches the image's USER"
    );
}

/// Copies a file or a directory tree.
fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    }
}
