//! The command line as a user meets it: `mutate` (stdin, masking,
//! `--reveal`), `check` (one line per problem, exit 1), `certs` (the printed
//! caBundle), and exit code 2 for usage errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use common::harness::binary;
use serde_json::Value;

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(binary())
        .args(args)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(input) = stdin {
        pipe.write_all(input.as_bytes()).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

const SECRET: &str = r#"apiVersion: v1
kind: Secret
metadata:
  name: shop-db
  namespace: shop
  labels:
    secret-santa.io/enabled: "true"
  annotations:
    secret-santa.io/autogenerate: "password, token"
data:
  kept: a2VwdA==
"#;

fn docs(out: &Output) -> Vec<Value> {
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    secret_santa::yaml::from_str_multiple(&text).unwrap()
}

#[test]
fn mutate_reads_stdin_and_masks_values_unless_revealed() {
    let masked = run(&["mutate", "-"], Some(SECRET));
    assert!(
        masked.status.success(),
        "{}",
        String::from_utf8_lossy(&masked.stderr)
    );
    let doc = &docs(&masked)[0];
    for key in ["password", "token"] {
        assert_eq!(
            doc["data"][key], "<masked: 32 bytes; --reveal shows it>",
            "{key} masked"
        );
    }
    // A value the author set is no secret of ours: shown as it is.
    assert_eq!(doc["data"]["kept"], "a2VwdA==");
    assert_eq!(
        doc["metadata"]["annotations"]["secret-santa.io/generated-keys"],
        "password,token"
    );

    let revealed = run(&["mutate", "--reveal", "-"], Some(SECRET));
    assert!(revealed.status.success());
    let doc = &docs(&revealed)[0];
    for key in ["password", "token"] {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(doc["data"][key].as_str().unwrap())
            .unwrap();
        assert_eq!(bytes.len(), 32, "{key} is a 32-character password");
    }
    // Each run generates anew (it is offline: nothing to converge on).
    let again = &docs(&run(&["mutate", "--reveal", "-"], Some(SECRET)))[0];
    assert!(again["data"]["password"] != doc["data"]["password"]);
}

#[test]
fn mutate_denies_bad_annotations_with_exit_1_naming_them() {
    let bad = SECRET.replace(
        "secret-santa.io/autogenerate: \"password, token\"",
        "secret-santa.io/generators: \"- {name: p, type: random_password, config: {length: 0}}\"",
    );
    let out = run(&["mutate", "-"], Some(&bad));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("random_password") && stderr.contains("length"),
        "{stderr}"
    );
}

#[test]
fn check_prints_one_line_per_problem_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.yaml"), SECRET).unwrap();
    let bad = format!(
        "{}---\n{}",
        SECRET.replace("name: shop-db", "name: typo").replace(
            "secret-santa.io/autogenerate: \"password, token\"",
            "secret-santa.io/generators: \"- {name: p, type: random_pasword}\"",
        ),
        SECRET
            .replace("name: shop-db", "name: unlabelled")
            .replace("secret-santa.io/enabled: \"true\"", "app: shop")
    );
    std::fs::write(dir.path().join("bad.yaml"), bad).unwrap();

    let out = run(
        &["check", dir.path().join("good.yaml").to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty(), "no problem, no line");

    let out = run(&["check", dir.path().to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].contains("bad.yaml: document 1 (Secret typo)")
            && lines[0].contains("secret-santa.io/generators")
            && lines[0].contains("random_pasword"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("document 2 (Secret unlabelled)")
            && lines[1].contains("secret-santa.io/enabled"),
        "{}",
        lines[1]
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("checked 3 Secret(s): 2 problem(s)"));
}

#[test]
fn certs_prints_the_ca_bundle_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &[
            "certs",
            "--out",
            dir.path().to_str().unwrap(),
            "--service",
            "secret-santa",
            "--namespace",
            "secret-santa",
        ],
        None,
    );
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let bundle = base64::engine::general_purpose::STANDARD
        .decode(printed.trim())
        .unwrap();
    assert_eq!(bundle, std::fs::read(dir.path().join("ca.crt")).unwrap());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("tls.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the key is readable by its owner only");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["serve", "--no-such-flag"][..],
        &["frobnicate"],
        &["certs", "--out"],
    ] {
        let out = run(args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}: says why");
    }
}
