//! A throw-away control plane for e2e tests: etcd + kube-apiserver on
//! loopback (`tests/e2e/cluster.sh`), and kubectl against it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use serde_json::Value;

/// etcd + kube-apiserver on loopback, stopped on drop.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub env: HashMap<String, String>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/cluster.sh")
}

impl Cluster {
    pub fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(dir.path())
            .output()
            .unwrap();
        if !out.status.success() {
            panic!(
                "could not start etcd + kube-apiserver (run `bash .ci/install.sh` first): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let env = std::fs::read_to_string(dir.path().join("cluster.env"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Cluster { dir, env }
    }

    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut child = Command::new(&self.env["KUBECTL"])
            .arg("--kubeconfig")
            .arg(&self.env["KUBECONFIG"])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut pipe = child.stdin.take().unwrap();
        if let Some(input) = stdin {
            pipe.write_all(input.as_bytes()).unwrap();
        }
        drop(pipe);
        child.wait_with_output().unwrap()
    }

    pub fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn get_secret(&self, name: &str) -> Value {
        serde_json::from_str(&self.ok(&["-n", "shop", "get", "secret", name, "-o", "json"], None))
            .unwrap()
    }
}

/// A Secret's `.data`, decoded (values are UTF-8 in these tests).
pub fn data(secret: &Value) -> BTreeMap<String, String> {
    secret["data"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(v.as_str().unwrap())
                        .unwrap();
                    (k.clone(), String::from_utf8(bytes).unwrap())
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn annotation<'a>(secret: &'a Value, key: &str) -> Option<&'a str> {
    secret["metadata"]["annotations"][key].as_str()
}

/// The webhook registration the shipped manifests make, pointed at a binary
/// on this machine by URL.
pub fn webhook_config(port: u16, ca_bundle: &str) -> String {
    format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: secret-santa
webhooks:
  - name: secrets.secret-santa.io
    admissionReviewVersions: ["v1"]
    clientConfig:
      url: https://127.0.0.1:{port}/mutate
      caBundle: {ca_bundle}
    rules:
      - apiGroups: [""]
        apiVersions: ["v1"]
        operations: ["CREATE", "UPDATE"]
        resources: ["secrets"]
        scope: Namespaced
    objectSelector:
      matchLabels:
        secret-santa.io/enabled: "true"
    sideEffects: NoneOnDryRun
    failurePolicy: Fail
    timeoutSeconds: 10
    reinvocationPolicy: Never
    matchPolicy: Equivalent
"#
    )
}

impl Cluster {
    /// Registers the webhook at `port` (its CA in `ca_file`), creates the
    /// namespace `shop`, and waits until the apiserver really calls the
    /// webhook (it picks registrations up asynchronously): a probe Secret
    /// comes back filled. `log` is shown when it never does.
    pub fn register_webhook(&self, port: u16, ca_file: &Path, log: impl Fn() -> String) {
        let ca = base64::engine::general_purpose::STANDARD.encode(std::fs::read(ca_file).unwrap());
        self.ok(&["apply", "-f", "-"], Some(&webhook_config(port, &ca)));
        self.ok(&["create", "namespace", "shop"], None);
        let probe = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: probe\n  namespace: shop\n  labels: {secret-santa.io/enabled: \"true\"}\n  annotations: {secret-santa.io/autogenerate: token}\n";
        let started = std::time::Instant::now();
        loop {
            self.ok(&["apply", "-f", "-"], Some(probe));
            let s = self.get_secret("probe");
            if data(&s).contains_key("token") {
                self.ok(&["-n", "shop", "delete", "secret", "probe"], None);
                return;
            }
            self.ok(&["-n", "shop", "delete", "secret", "probe"], None);
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "webhook never called: {}",
                log()
            );
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}
