//! The Go ancestor's generator scenarios as table tests through the public
//! review pipeline (`Reviewer` on an AdmissionRequest, as the webhook and
//! `secret-santa mutate` run it): chaining, template filters, typed Secrets,
//! and error messages that name the problem and the generator.
//!
//! Generated values are never printed: secret comparisons use
//! `assert!(a == b, "what")`, and error messages are checked not to carry them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls::client::danger::ServerCertVerifier as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use secret_santa::Reviewer;
use secret_santa::admission::Request;
use secret_santa::cli::mutate::create_request;
use secret_santa::config::AdminConfig;
use serde_json::{Value, json};
use sha2::Digest as _;
use x509_parser::prelude::{FromDer, X509Certificate};

const GENERATORS: &str = "secret-santa.io/generators";
const TEMPLATE: &str = "secret-santa.io/template";

fn secret(secret_type: &str, generators: &str, template: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "api",
            "namespace": "shop",
            "labels": { "secret-santa.io/enabled": "true" },
            "annotations": { GENERATORS: generators, TEMPLATE: template },
        },
        "type": secret_type,
    })
}

/// Runs the review; on success returns the Secret's data after the patch.
async fn review_with(
    config: AdminConfig,
    object: &Value,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let reviewer = Reviewer::from_config(config).await.expect("reviewer");
    let text = create_request(object, "shop", false);
    let req = Request::from_json(&text).expect("request");
    let mutation = reviewer.review(&req).await.map_err(|d| d.message)?;
    let mut doc = object.clone();
    let patch = mutation
        .patch
        .expect("a patch")
        .operations()
        .expect("patch parses");
    json_patch::patch(&mut doc, &patch).expect("patch applies");
    let data = doc.get("data").and_then(Value::as_object).expect("data");
    Ok(data
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                STANDARD
                    .decode(v.as_str().expect("string"))
                    .expect("base64"),
            )
        })
        .collect())
}

async fn review(object: &Value) -> Result<BTreeMap<String, Vec<u8>>, String> {
    review_with(AdminConfig::default(), object).await
}

fn text<'a>(data: &'a BTreeMap<String, Vec<u8>>, key: &str) -> &'a str {
    std::str::from_utf8(data.get(key).unwrap_or_else(|| panic!("key {key} missing")))
        .expect("utf-8")
}

fn cert_ders(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("certificates")
}

/// The certificate's public key is the private key's.
fn assert_cert_matches_key(cert_pem: &str, key_pem: &str) {
    let ders = cert_ders(cert_pem);
    let (_, cert) = X509Certificate::from_der(&ders[0]).expect("certificate parses");
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key PEM");
    let kp = rcgen::KeyPair::try_from(&key).expect("key parses");
    assert!(
        cert.public_key().subject_public_key.data.as_ref() == kp.public_key_raw(),
        "certificate and key do not match"
    );
}

fn webpki_verify(ca_pem: &str, leaf_pem: &str, name: &str) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    for der in cert_ders(ca_pem) {
        roots.add(der).expect("trust anchor");
    }
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
    )
    .build()
    .expect("verifier");
    let leaf = cert_ders(leaf_pem).remove(0);
    verifier
        .verify_server_cert(
            &leaf,
            &[],
            &ServerName::try_from(name.to_owned()).expect("name"),
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
}

// --- scenarios ----------------------------------------------------------------------

#[tokio::test]
async fn password_with_bcrypt_sha256_and_entropy_in_the_template() {
    let s = secret(
        "Opaque",
        "- name: pass\n  type: random_password\n  config: { length: 24, special: false }\n",
        "password: {{ pass.value | json }}\nhash: {{ pass.value | bcrypt(cost=4) | json }}\nsha: \"{{ pass.value | sha256 }}\"\nentropy: \"{{ pass.value | entropy }}\"\n",
    );
    let data = review(&s).await.unwrap_or_else(|e| panic!("{e}"));
    let password = text(&data, "password");
    assert_eq!(password.len(), 24);
    assert!(
        bcrypt::verify(password, text(&data, "hash")).unwrap(),
        "bcrypt hash does not verify"
    );
    assert!(
        text(&data, "sha") == hex::encode(sha2::Sha256::digest(password.as_bytes())),
        "sha256 differs"
    );
    let entropy: f64 = text(&data, "entropy").parse().expect("entropy is a number");
    assert!(entropy > 0.0 && entropy <= 24.0 * 62f64.log2() + 0.01);
}

#[tokio::test]
async fn multiple_generators_with_b64encode_remove_hyphens_and_to_hex() {
    let s = secret(
        "Opaque",
        r#"- name: id
  type: random_uuid
- name: user
  type: random_string
  config: { length: 10, special: false }
- name: token
  type: random_id
  config: { byte_length: 4, prefix: "tk_" }
"#,
        r#"id: "{{ id.value }}"
compact-id: "{{ id.value | removeHyphens }}"
user: "{{ user.value }}"
user-b64: "{{ user.value | b64encode }}"
token: "{{ token.value }}"
token-hex: "{{ token.value | toHex }}"
"#,
    );
    let data = review(&s).await.unwrap_or_else(|e| panic!("{e}"));
    let id = text(&data, "id");
    assert_eq!(id.len(), 36);
    assert!(
        text(&data, "compact-id") == id.replace('-', ""),
        "removeHyphens"
    );
    assert_eq!(text(&data, "compact-id").len(), 32);
    let user = text(&data, "user");
    assert!(
        STANDARD.decode(text(&data, "user-b64")).unwrap() == user.as_bytes(),
        "b64encode"
    );
    let token = text(&data, "token");
    assert!(token.starts_with("tk_") && token.len() == 3 + 8);
    assert!(
        hex::decode(text(&data, "token-hex")).unwrap() == token.as_bytes(),
        "toHex"
    );
}

#[tokio::test]
async fn aes_and_hmac_with_a_known_message() {
    // The message is itself rendered from the Secret's identity (chaining).
    let s = secret(
        "Opaque",
        r#"- name: aes
  type: crypto_aes_key
  config: { key_size: 256 }
- name: mac
  type: crypto_hmac
  config: { algorithm: SHA-256, message: "hello from {{ secret.namespace }}/{{ secret.name }}" }
"#,
        "aes-key: \"{{ aes.key_base64 }}\"\nhmac-key: \"{{ mac.key_hex }}\"\nhmac-sig: \"{{ mac.signature_hex }}\"\nhmac-alg: \"{{ mac.algorithm }}\"\n",
    );
    let data = review(&s).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(STANDARD.decode(text(&data, "aes-key")).unwrap().len(), 32);
    assert_eq!(text(&data, "hmac-alg"), "sha256");
    let key = hex::decode(text(&data, "hmac-key")).unwrap();
    let expected = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key),
        b"hello from shop/api",
    );
    assert!(
        text(&data, "hmac-sig") == hex::encode(expected.as_ref()),
        "HMAC differs from the one computed here"
    );
}

#[tokio::test]
async fn tls_secret_cert_and_key_match() {
    for (algorithm, extra) in [
        ("ECDSA", ""),
        ("RSA", ""),
        ("ED25519", ""),
        ("ECDSA", ", ecdsa_curve: P521"),
    ] {
        let s = secret(
            "kubernetes.io/tls",
            &format!(
                r#"- name: key
  type: tls_private_key
  config: {{ algorithm: {algorithm}{extra} }}
- name: cert
  type: tls_self_signed_cert
  config:
    key_pem: "{{{{ key.private_key_pem }}}}"
    common_name: web.shop.svc
    dns_names: [web.shop.svc, web]
"#
            ),
            "tls.crt: {{ cert.cert_pem | json }}\ntls.key: {{ key.private_key_pem | json }}\n",
        );
        let data = review(&s)
            .await
            .unwrap_or_else(|e| panic!("{algorithm}: {e}"));
        assert_cert_matches_key(text(&data, "tls.crt"), text(&data, "tls.key"));
        webpki_verify(
            text(&data, "tls.crt"),
            text(&data, "tls.crt"),
            "web.shop.svc",
        )
        .unwrap_or_else(|e| panic!("{algorithm}: pinned self-signed cert does not verify: {e}"));
    }
}

#[tokio::test]
async fn self_signed_cert_with_its_own_key_makes_a_tls_secret() {
    let s = secret(
        "kubernetes.io/tls",
        "- name: cert\n  type: tls_self_signed_cert\n  config: { common_name: local.test, key_algorithm: ECDSA }\n",
        "tls.crt: {{ cert.cert_pem | json }}\ntls.key: {{ cert.private_key_pem | json }}\n",
    );
    let data = review(&s).await.unwrap_or_else(|e| panic!("{e}"));
    assert_cert_matches_key(text(&data, "tls.crt"), text(&data, "tls.key"));
}

#[tokio::test]
async fn ca_csr_and_locally_signed_leaf_in_one_secret() {
    let s = secret(
        "kubernetes.io/tls",
        r#"- name: ca_key
  type: tls_private_key
  config: { algorithm: ECDSA, ecdsa_curve: P384 }
- name: ca
  type: tls_self_signed_cert
  config:
    key_pem: "{{ ca_key.private_key_pem }}"
    common_name: Shop CA
    organization: Shop
    is_ca: true
    validity_days: 3650
- name: key
  type: tls_private_key
  config: { algorithm: RSA }
- name: csr
  type: tls_cert_request
  config:
    private_key_pem: "{{ key.private_key_pem }}"
    common_name: api.shop.svc
    dns_names: [api.shop.svc, api.shop.svc.cluster.local]
- name: leaf
  type: tls_locally_signed_cert
  config:
    cert_request_pem: "{{ csr.cert_request_pem }}"
    ca_private_key_pem: "{{ ca_key.private_key_pem }}"
    ca_cert_pem: "{{ ca.cert_pem }}"
    validity_period_hours: 720
"#,
        "ca.crt: {{ ca.cert_pem | json }}\ntls.crt: {{ leaf.cert_pem | json }}\ntls.key: {{ key.private_key_pem | json }}\n",
    );
    let data = review(&s).await.unwrap_or_else(|e| panic!("{e}"));
    assert_cert_matches_key(text(&data, "tls.crt"), text(&data, "tls.key"));
    webpki_verify(
        text(&data, "ca.crt"),
        text(&data, "tls.crt"),
        "api.shop.svc.cluster.local",
    )
    .unwrap_or_else(|e| panic!("the leaf does not verify against the CA: {e}"));
    webpki_verify(
        text(&data, "ca.crt"),
        text(&data, "tls.crt"),
        "evil.example",
    )
    .expect_err("wrong name must fail");
}

#[tokio::test]
async fn ssh_auth_secret_from_ssh_keypair() {
    let s = secret(
        "kubernetes.io/ssh-auth",
        "- name: deploy\n  type: ssh_keypair\n  config: { comment: \"deploy@{{ secret.namespace }}\" }\n",
        "ssh-privatekey: {{ deploy.private_key_openssh | json }}\nssh-publickey: {{ deploy.public_key_openssh | json }}\nfingerprint: {{ deploy.fingerprint | json }}\n",
    );
    let data = review(&s).await.unwrap_or_else(|e| panic!("{e}"));
    let key =
        ssh_key::PrivateKey::from_openssh(text(&data, "ssh-privatekey")).expect("OpenSSH key");
    assert_eq!(key.comment().as_bytes(), b"deploy@shop");
    let public = ssh_key::PublicKey::from_openssh(text(&data, "ssh-publickey").trim_end())
        .expect("public key");
    assert_eq!(key.public_key().key_data(), public.key_data());
    assert_eq!(
        text(&data, "fingerprint"),
        public.fingerprint(ssh_key::HashAlg::Sha256).to_string()
    );
}

#[tokio::test]
async fn basic_auth_secret_with_htpasswd() {
    let s = secret(
        "kubernetes.io/basic-auth",
        "- name: auth\n  type: basic_auth\n  config: { username: ops, bcrypt_cost: 4, exclude: \"/'\\\"@\" }\n",
        "username: {{ auth.username | json }}\npassword: {{ auth.password | json }}\nauth: {{ auth.htpasswd | json }}\n",
    );
    let data = review(&s).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(text(&data, "username"), "ops");
    let password = text(&data, "password");
    assert!(!password.contains(['/', '\'', '"', '@']));
    let hash = text(&data, "auth")
        .strip_prefix("ops:")
        .expect("htpasswd line");
    assert!(
        bcrypt::verify(password, hash).unwrap(),
        "htpasswd does not verify"
    );
}

#[tokio::test]
async fn dockerconfigjson_secret_from_a_template() {
    let s = secret(
        "kubernetes.io/dockerconfigjson",
        "- name: pass\n  type: random_password\n  config: { length: 20, special: false }\n",
        r#"{% set auth = "bot:" ~ pass.value %}.dockerconfigjson: '{"auths":{"ghcr.io":{"username":"bot","password":"{{ pass.value }}","auth":"{{ auth | b64encode }}"}}}'
"#,
    );
    let data = review(&s).await.unwrap_or_else(|e| panic!("{e}"));
    let doc: Value = serde_json::from_slice(&data[".dockerconfigjson"]).expect("valid JSON");
    let auth = doc["auths"]["ghcr.io"]["auth"].as_str().expect("auth");
    let decoded = String::from_utf8(STANDARD.decode(auth).unwrap()).unwrap();
    let password = doc["auths"]["ghcr.io"]["password"].as_str().unwrap();
    assert!(
        decoded == format!("bot:{password}"),
        "auth is base64 of user:password"
    );
}

// --- typed Secrets that would come out invalid -------------------------------------------

#[tokio::test]
async fn typed_secrets_that_would_be_invalid_are_denied() {
    let mismatched = secret(
        "kubernetes.io/tls",
        r#"- name: k1
  type: tls_private_key
  config: { algorithm: ECDSA }
- name: k2
  type: tls_private_key
  config: { algorithm: ECDSA }
- name: cert
  type: tls_self_signed_cert
  config: { key_pem: "{{ k1.private_key_pem }}" }
"#,
        "tls.crt: {{ cert.cert_pem | json }}\ntls.key: {{ k2.private_key_pem | json }}\n",
    );
    let no_key = secret(
        "kubernetes.io/tls",
        "- name: cert\n  type: tls_self_signed_cert\n",
        "tls.crt: {{ cert.cert_pem | json }}\n",
    );
    let ssh_public_as_private = secret(
        "kubernetes.io/ssh-auth",
        "- name: k\n  type: ssh_keypair\n",
        "ssh-privatekey: {{ k.public_key_openssh | json }}\n",
    );
    let basic_without_user = secret(
        "kubernetes.io/basic-auth",
        "- name: t\n  type: random_password\n",
        "token: {{ t.value | json }}\n",
    );
    let docker_without_auths = secret(
        "kubernetes.io/dockerconfigjson",
        "- name: t\n  type: random_password\n  config: { special: false }\n",
        ".dockerconfigjson: '{\"registry\": \"{{ t.value }}\"}'\n",
    );
    let cases: [(&str, &Value, &[&str]); 5] = [
        (
            "tls mismatch",
            &mismatched,
            &["kubernetes.io/tls", "tls.crt", "tls.key", "do not match"],
        ),
        (
            "tls without key",
            &no_key,
            &["kubernetes.io/tls", "tls.key"],
        ),
        (
            "ssh public key",
            &ssh_public_as_private,
            &["kubernetes.io/ssh-auth", "ssh-privatekey"],
        ),
        (
            "basic-auth",
            &basic_without_user,
            &["kubernetes.io/basic-auth", "username", "password"],
        ),
        (
            "dockerconfigjson",
            &docker_without_auths,
            &[
                "kubernetes.io/dockerconfigjson",
                ".dockerconfigjson",
                "auths",
            ],
        ),
    ];
    for (what, object, needles) in cases {
        let e = review(object)
            .await
            .err()
            .unwrap_or_else(|| panic!("{what}: was allowed"));
        for n in needles {
            assert!(e.contains(n), "{what}: message lacks {n:?}: {e}");
        }
        assert!(
            !e.contains("BEGIN") && !e.contains("AAAA"),
            "{what}: message carries key material"
        );
    }
}

// --- errors name the problem and the generator ---------------------------------------------

#[tokio::test]
async fn errors_name_the_problem_and_the_generator() {
    let pass = "- name: pass\n  type: random_password\n";
    let cases: [(&str, Value, &[&str]); 10] = [
        (
            "bad template syntax",
            secret("Opaque", pass, "password: {{ pass.value \n"),
            &["secret-santa.io/template"],
        ),
        (
            "missing field",
            secret("Opaque", pass, "password: \"{{ pass.vaule }}\"\n"),
            &["secret-santa.io/template", "pass.vaule"],
        ),
        (
            "unknown type",
            secret(
                "Opaque",
                "- name: pass\n  type: random_pasword\n",
                "password: \"{{ pass.value }}\"\n",
            ),
            &[
                "secret-santa.io/generators",
                "\"pass\"",
                "random_pasword",
                "unknown generator type",
            ],
        ),
        (
            "negative length",
            secret(
                "Opaque",
                "- name: pass\n  type: random_password\n  config: { length: -5 }\n",
                "p: \"{{ pass.value }}\"\n",
            ),
            &["\"pass\"", "random_password", "length", "-5"],
        ),
        (
            "RSA 100000 bits",
            secret(
                "Opaque",
                "- name: rsa\n  type: crypto_rsa_key\n  config: { key_size: 100000 }\n",
                "k: \"{{ rsa.key_size }}\"\n",
            ),
            &["\"rsa\"", "crypto_rsa_key", "key_size", "100000", "8192"],
        ),
        (
            "RSA over the cap",
            secret(
                "Opaque",
                "- name: rsa\n  type: crypto_rsa_key\n  config: { key_size: 8192 }\n",
                "k: \"{{ rsa.key_size }}\"\n",
            ),
            &[
                "\"rsa\"",
                "crypto_rsa_key",
                "key_size",
                "limit of 4096",
                "maxRsaBits",
            ],
        ),
        (
            "unknown config key",
            secret(
                "Opaque",
                "- name: aes\n  type: crypto_aes_key\n  config: { keysize: 128 }\n",
                "k: \"{{ aes.key_hex }}\"\n",
            ),
            &["\"aes\"", "crypto_aes_key", "keysize"],
        ),
        (
            "chained field that does not exist",
            secret(
                "Opaque",
                "- name: key\n  type: tls_private_key\n  config: { algorithm: ED25519 }\n- name: csr\n  type: tls_cert_request\n  config: { private_key_pem: \"{{ key.private_pem }}\" }\n",
                "csr: {{ csr.cert_request_pem | json }}\n",
            ),
            &["\"csr\"", "tls_cert_request", "key.private_pem"],
        ),
        (
            "CA that is not a CA",
            secret(
                "Opaque",
                r#"- name: k
  type: tls_private_key
  config: { algorithm: ECDSA }
- name: notca
  type: tls_self_signed_cert
  config: { key_pem: "{{ k.private_key_pem }}" }
- name: csr
  type: tls_cert_request
  config: { private_key_pem: "{{ k.private_key_pem }}", common_name: x }
- name: leaf
  type: tls_locally_signed_cert
  config: { cert_request_pem: "{{ csr.cert_request_pem }}", ca_private_key_pem: "{{ k.private_key_pem }}", ca_cert_pem: "{{ notca.cert_pem }}" }
"#,
                "c: {{ leaf.cert_pem | json }}\n",
            ),
            &[
                "\"leaf\"",
                "tls_locally_signed_cert",
                "ca_cert_pem",
                "not a CA",
            ],
        ),
        (
            "P224 curve",
            secret(
                "Opaque",
                "- name: ec\n  type: crypto_ecdsa_key\n  config: { curve: P224 }\n",
                "k: {{ ec.private_key_pem | json }}\n",
            ),
            &["\"ec\"", "crypto_ecdsa_key", "curve", "P224"],
        ),
    ];
    for (what, object, needles) in cases {
        let e = review(&object)
            .await
            .err()
            .unwrap_or_else(|| panic!("{what}: was allowed"));
        for n in needles {
            assert!(e.contains(n), "{what}: message lacks {n:?}: {e}");
        }
        assert!(
            !e.contains("BEGIN") && !e.contains("PRIVATE KEY-----"),
            "{what}: message carries key material"
        );
    }
}

#[tokio::test]
async fn the_admins_rsa_cap_applies() {
    let config =
        AdminConfig::parse("clusterId: test\nlimits: { maxRsaBits: 2048 }\n").expect("config");
    let s = secret(
        "Opaque",
        "- name: k\n  type: tls_private_key\n  config: { rsa_bits: 3072 }\n",
        "k: {{ k.private_key_pem | json }}\n",
    );
    let Err(e) = review_with(config, &s).await else {
        panic!("a key over the cap was generated");
    };
    assert!(e.contains("rsa_bits") && e.contains("limit of 2048"), "{e}");
}
