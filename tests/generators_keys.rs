//! Property and parse-back tests for the key, certificate, SSH and auth
//! generators: every PEM / DER / OpenSSH output parses back, key pairs belong
//! together, CSRs and certificates verify, and bad configs are refused with
//! a message naming the config key.
//!
//! Generated values are never printed: comparisons of secret material use
//! `assert!(a == b, "what")`; `assert_eq!` only ever sees public data.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rcgen::SigningKey as _;
use rustls::client::danger::ServerCertVerifier as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{
    CertificateDer, CertificateSigningRequestDer, PrivateKeyDer, ServerName, UnixTime,
};
use secret_santa::generators::{self, Limits};
use secret_santa::secret::Outputs;
use serde_json::{Value, json};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};
use x509_parser::x509::SubjectPublicKeyInfo;

// --- helpers ------------------------------------------------------------------

fn generate_with(type_name: &str, config: Value, limits: &Limits) -> Result<Outputs, String> {
    let entry =
        generators::lookup(type_name).unwrap_or_else(|| panic!("{type_name} is not registered"));
    entry.generate(&config, limits)
}

fn generate(type_name: &str, config: Value) -> Outputs {
    generate_with(type_name, config, &Limits::default())
        .unwrap_or_else(|e| panic!("{type_name}: {e}"))
}

fn refuse(type_name: &str, config: Value) -> String {
    match generate_with(type_name, config, &Limits::default()) {
        Ok(_) => panic!("{type_name} accepted a config it should refuse"),
        Err(e) => e,
    }
}

fn field<'a>(out: &'a Outputs, name: &str) -> &'a str {
    out.get_str(name)
        .unwrap_or_else(|| panic!("output {name} is missing or not a string"))
}

fn b64(out: &Outputs, name: &str) -> Vec<u8> {
    STANDARD
        .decode(field(out, name))
        .unwrap_or_else(|_| panic!("output {name} is not base64"))
}

/// The DER of the one PEM block in `text`, checking its label.
fn pem_der(text: &str, label: &str) -> Vec<u8> {
    let begin = format!("-----BEGIN {label}-----\n");
    let end = format!("-----END {label}-----\n");
    assert!(
        text.starts_with(&begin),
        "PEM does not start with {begin:?}"
    );
    assert!(text.ends_with(&end), "PEM does not end with {end:?}");
    let body: String = text[begin.len()..text.len() - end.len()].lines().collect();
    for line in text[begin.len()..text.len() - end.len()].lines() {
        assert!(line.len() <= 64, "PEM line longer than 64 columns");
    }
    STANDARD
        .decode(body)
        .unwrap_or_else(|_| panic!("{label} PEM body is not base64"))
}

fn spki(der: &[u8]) -> SubjectPublicKeyInfo<'_> {
    let (rest, spki) = SubjectPublicKeyInfo::from_der(der).expect("SPKI parses");
    assert!(rest.is_empty(), "trailing bytes after SPKI");
    spki
}

/// The verification algorithm for a signature by a key of rcgen's algorithm.
fn verification_for(kp: &rcgen::KeyPair) -> &'static dyn signature::VerificationAlgorithm {
    let alg = kp.algorithm();
    if alg == &rcgen::PKCS_ED25519 {
        &signature::ED25519
    } else if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
        &signature::ECDSA_P256_SHA256_ASN1
    } else if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
        &signature::ECDSA_P384_SHA384_ASN1
    } else if alg == &rcgen::PKCS_ECDSA_P521_SHA512 {
        &signature::ECDSA_P521_SHA512_ASN1
    } else {
        &signature::RSA_PKCS1_2048_8192_SHA256
    }
}

/// The private key (any PEM form) signs, and the signature verifies under
/// `spki_der`: the two are one key pair.
fn assert_pair(private_pem: &str, spki_der: &[u8]) {
    let der =
        PrivateKeyDer::from_pem_slice(private_pem.as_bytes()).expect("private key PEM parses");
    let kp = rcgen::KeyPair::try_from(&der).expect("private key is usable");
    let info = spki(spki_der);
    assert!(
        kp.public_key_raw() == info.subject_public_key.data.as_ref(),
        "public key does not belong to the private key"
    );
    let msg = b"secret-santa parse-back";
    let sig = kp.sign(msg).expect("signs");
    UnparsedPublicKey::new(verification_for(&kp), info.subject_public_key.data.as_ref())
        .verify(msg, &sig)
        .expect("signature verifies under the public key");
}

/// Verifies a signature over `data` by `signer` (covers what our generators make).
fn verify(
    signer: &SubjectPublicKeyInfo<'_>,
    alg_oid: &x509_parser::asn1_rs::Oid<'_>,
    sig: &[u8],
    data: &[u8],
) {
    use x509_parser::oid_registry::*;
    let curve = signer
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    let alg: &dyn signature::VerificationAlgorithm = if *alg_oid == OID_PKCS1_SHA256WITHRSA {
        &signature::RSA_PKCS1_2048_8192_SHA256
    } else if *alg_oid == OID_SIG_ED25519 {
        &signature::ED25519
    } else if *alg_oid == OID_SIG_ECDSA_WITH_SHA256 && curve == Some(OID_EC_P256) {
        &signature::ECDSA_P256_SHA256_ASN1
    } else if *alg_oid == OID_SIG_ECDSA_WITH_SHA384 && curve == Some(OID_NIST_EC_P384) {
        &signature::ECDSA_P384_SHA384_ASN1
    } else if *alg_oid == OID_SIG_ECDSA_WITH_SHA512 && curve == Some(OID_NIST_EC_P521) {
        &signature::ECDSA_P521_SHA512_ASN1
    } else {
        panic!("unexpected signature algorithm {alg_oid}");
    };
    UnparsedPublicKey::new(alg, signer.subject_public_key.data.as_ref())
        .verify(data, sig)
        .expect("signature verifies");
}

fn parse_cert(der: &[u8]) -> X509Certificate<'_> {
    let (rest, cert) = X509Certificate::from_der(der).expect("certificate parses");
    assert!(rest.is_empty());
    cert
}

fn cert_der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("certificate PEM")
        .to_vec()
}

fn dns_sans(cert: &X509Certificate<'_>) -> Vec<String> {
    cert.subject_alternative_name()
        .expect("SAN parses")
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(s) => Some((*s).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

fn is_ca(cert: &X509Certificate<'_>) -> bool {
    cert.basic_constraints()
        .expect("basicConstraints parses")
        .is_some_and(|bc| bc.value.ca)
}

/// A full rustls (webpki) server-certificate check of `leaf` for `name`,
/// with `ca` as the only trust anchor.
fn webpki_verify(ca_pem: &str, leaf_pem: &str, name: &str) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(cert_der(ca_pem)))
        .expect("CA is a usable trust anchor");
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
    )
    .build()
    .expect("verifier");
    let leaf = CertificateDer::from(cert_der(leaf_pem));
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

const KEY_CONFIGS: [(&str, &str); 5] = [
    ("RSA", "P256"),
    ("ECDSA", "P256"),
    ("ECDSA", "P384"),
    ("ECDSA", "P521"),
    ("ED25519", "P256"),
];

fn tls_key(algorithm: &str, curve: &str) -> Outputs {
    generate(
        "tls_private_key",
        json!({ "algorithm": algorithm, "ecdsa_curve": curve }),
    )
}

// --- symmetric keys and HMAC -------------------------------------------------------

#[test]
fn aes_keys_have_the_requested_size_in_base64_and_hex() {
    for bits in [128usize, 192, 256] {
        let out = generate("crypto_aes_key", json!({ "key_size": bits }));
        let raw = b64(&out, "key_base64");
        assert_eq!(raw.len() * 8, bits);
        assert!(
            hex::decode(field(&out, "key_hex")).expect("hex") == raw,
            "key_hex and key_base64 differ"
        );
        assert_eq!(out.get("key_size"), Some(&json!(bits)));
    }
    assert_eq!(
        b64(&generate("crypto_aes_key", Value::Null), "key_base64").len(),
        32
    );
    let e = refuse("crypto_aes_key", json!({ "key_size": 64 }));
    assert!(e.contains("key_size") && e.contains("64"), "{e}");
}

#[test]
fn aes_keys_differ_and_look_uniform() {
    // Sanity, not a proof: 400 keys of 32 bytes; every byte value should
    // appear, and no two keys may be equal.
    let mut seen = std::collections::HashSet::new();
    let mut counts = [0u32; 256];
    for _ in 0..400 {
        let key = b64(&generate("crypto_aes_key", Value::Null), "key_base64");
        for b in &key {
            counts[usize::from(*b)] += 1;
        }
        assert!(seen.insert(key), "two AES keys were equal");
    }
    // 12,800 bytes over 256 values: expected 50 each.
    assert!(
        counts.iter().all(|&c| c > 15 && c < 100),
        "byte distribution is implausible"
    );
}

#[test]
fn chacha_keys_are_256_bit_with_their_algorithm() {
    for (ty, alg) in [
        ("crypto_chacha20_key", "ChaCha20"),
        ("crypto_xchacha20_key", "XChaCha20"),
    ] {
        let out = generate(ty, Value::Null);
        assert_eq!(b64(&out, "key_base64").len(), 32);
        assert_eq!(field(&out, "key_hex").len(), 64);
        assert_eq!(field(&out, "algorithm"), alg);
        assert_eq!(out.get("key_size"), Some(&json!(256)));
        let e = refuse(ty, json!({ "key_size": 128 }));
        assert!(e.contains("key_size"), "{e}");
    }
}

#[test]
fn hmac_signature_is_the_hmac_of_the_message_under_the_key() {
    for (alg, want_alg, len) in [
        ("sha256", "sha256", 32),
        ("SHA-512", "sha512", 64),
        ("HMAC-SHA256", "sha256", 32),
    ] {
        let out = generate(
            "crypto_hmac",
            json!({ "algorithm": alg, "message": "hello world", "key_size": 48 }),
        );
        assert_eq!(field(&out, "algorithm"), want_alg);
        let key = b64(&out, "key_base64");
        assert_eq!(key.len(), 48);
        let sig = b64(&out, "signature_base64");
        assert_eq!(sig.len(), len);
        assert!(
            hex::decode(field(&out, "signature_hex")).expect("hex") == sig,
            "hex and base64 signatures differ"
        );
        let algorithm = if want_alg == "sha256" {
            aws_lc_rs::hmac::HMAC_SHA256
        } else {
            aws_lc_rs::hmac::HMAC_SHA512
        };
        aws_lc_rs::hmac::verify(
            &aws_lc_rs::hmac::Key::new(algorithm, &key),
            b"hello world",
            &sig,
        )
        .expect("HMAC verifies");
    }
    let e = refuse("crypto_hmac", json!({ "algorithm": "md5" }));
    assert!(e.contains("algorithm") && e.contains("md5"), "{e}");
    let e = refuse("crypto_hmac", json!({ "key_size": 4 }));
    assert!(e.contains("key_size"), "{e}");
}

// --- key pairs -----------------------------------------------------------------------

fn assert_key_pair_outputs(out: &Outputs, algorithm: &str) {
    let private = pem_der(field(out, "private_key_pem"), "PRIVATE KEY");
    let public = pem_der(field(out, "public_key_pem"), "PUBLIC KEY");
    assert!(
        b64(out, "private_key_base64") == private,
        "private_key_base64 is not the PKCS#8 DER of private_key_pem"
    );
    assert!(
        b64(out, "public_key_base64") == public,
        "public_key_base64 is not the SPKI DER of public_key_pem"
    );
    assert_eq!(field(out, "algorithm"), algorithm);
    spki(&public);
}

#[test]
fn rsa_keys_parse_back_and_match() {
    for bits in [2048u32, 3072] {
        let out = generate("crypto_rsa_key", json!({ "key_size": bits }));
        assert_key_pair_outputs(&out, "RSA");
        assert_eq!(out.get("key_size"), Some(&json!(bits)));
        assert_pair(
            field(&out, "private_key_pem"),
            &b64(&out, "public_key_base64"),
        );
        let kp = aws_lc_rs::rsa::KeyPair::from_pkcs8(&b64(&out, "private_key_base64"))
            .expect("PKCS#8 RSA");
        assert_eq!(kp.public_modulus_len() * 8, bits as usize);
    }
}

#[test]
fn rsa_sizes_are_bounded_and_capped() {
    let e = refuse("crypto_rsa_key", json!({ "key_size": 100_000 }));
    assert!(e.contains("key_size") && e.contains("8192"), "{e}");
    let e = refuse("crypto_rsa_key", json!({ "key_size": 1024 }));
    assert!(e.contains("key_size") && e.contains("2048"), "{e}");
    let e = refuse("crypto_rsa_key", json!({ "key_size": 2049 }));
    assert!(e.contains("multiple of 8"), "{e}");
    // Default cap is 4096; the admin may lower or raise it.
    let e = refuse("crypto_rsa_key", json!({ "key_size": 8192 }));
    assert!(e.contains("limit of 4096"), "{e}");
    let low = Limits { max_rsa_bits: 2048 };
    let Err(e) = generate_with("crypto_rsa_key", json!({ "key_size": 3072 }), &low) else {
        panic!("a key over the cap was generated");
    };
    assert!(e.contains("limit of 2048"), "{e}");
    let e = refuse("crypto_rsa_key", json!({ "key_size": -5 }));
    assert!(e.contains("key_size") && e.contains("-5"), "{e}");
}

#[test]
fn ed25519_keys_parse_back_and_match() {
    let out = generate("crypto_ed25519_key", Value::Null);
    assert_key_pair_outputs(&out, "ED25519");
    assert_eq!(field(&out, "curve"), "Ed25519");
    assert_pair(
        field(&out, "private_key_pem"),
        &b64(&out, "public_key_base64"),
    );
    aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&b64(
        &out,
        "private_key_base64",
    ))
    .expect("PKCS#8 Ed25519");
    assert_eq!(
        b64(&out, "private_key_base64").len(),
        48,
        "PKCS#8 v1, as OpenSSL writes it"
    );
}

#[test]
fn ecdsa_keys_default_to_p256_and_parse_back() {
    let out = generate("crypto_ecdsa_key", Value::Null);
    assert_eq!(field(&out, "curve"), "P256");
    for (curve, alg, bits) in [
        ("P256", &signature::ECDSA_P256_SHA256_ASN1_SIGNING, 256),
        ("P384", &signature::ECDSA_P384_SHA384_ASN1_SIGNING, 384),
        ("P521", &signature::ECDSA_P521_SHA512_ASN1_SIGNING, 521),
    ] {
        let out = generate("crypto_ecdsa_key", json!({ "curve": curve }));
        assert_key_pair_outputs(&out, "ECDSA");
        assert_eq!(field(&out, "curve"), curve);
        assert_eq!(out.get("key_size"), Some(&json!(bits)));
        signature::EcdsaKeyPair::from_pkcs8(alg, &b64(&out, "private_key_base64"))
            .expect("PKCS#8 on the right curve");
        assert_pair(
            field(&out, "private_key_pem"),
            &b64(&out, "public_key_base64"),
        );
    }
    let e = refuse("crypto_ecdsa_key", json!({ "curve": "P224" }));
    assert!(e.contains("curve") && e.contains("P224"), "{e}");
}

#[test]
fn ecdh_keys_parse_back_and_agree() {
    use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey as PeerKey};
    for (curve, alg) in [
        ("P256", &agreement::ECDH_P256),
        ("P384", &agreement::ECDH_P384),
        ("P521", &agreement::ECDH_P521),
        ("X25519", &agreement::X25519),
    ] {
        let out = generate("crypto_ecdh_key", json!({ "curve": curve }));
        assert_key_pair_outputs(&out, "ECDH");
        assert_eq!(field(&out, "curve"), curve);
        let pkcs8 = b64(&out, "private_key_base64");
        let private = if curve == "X25519" {
            // RFC 8410: the seed is the last 32 bytes, in an OCTET STRING in
            // the OCTET STRING.
            assert_eq!(
                &pkcs8[..16],
                &[
                    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04,
                    0x22, 0x04, 0x20
                ]
            );
            PrivateKey::from_private_key(alg, &pkcs8[16..]).expect("X25519 seed")
        } else {
            PrivateKey::from_private_key_der(alg, &pkcs8).expect("PKCS#8 ECDH")
        };
        let public_der = b64(&out, "public_key_base64");
        let info = spki(&public_der);
        let computed = private.compute_public_key().expect("public key");
        assert!(
            computed.as_ref() == info.subject_public_key.data.as_ref(),
            "ECDH public key does not match"
        );
        // Agreement with a fresh peer gives the same secret both ways.
        let peer = PrivateKey::generate(alg).expect("peer");
        let peer_pub = peer.compute_public_key().expect("peer public");
        let a = agreement::agree(&private, PeerKey::new(alg, peer_pub.as_ref()), (), |k| {
            Ok(k.to_vec())
        })
        .expect("agree");
        let b = agreement::agree(
            &peer,
            PeerKey::new(alg, info.subject_public_key.data.as_ref()),
            (),
            |k| Ok(k.to_vec()),
        )
        .expect("agree");
        assert!(a == b, "ECDH agreement differs");
    }
    let e = refuse("crypto_ecdh_key", json!({ "curve": "X448" }));
    assert!(e.contains("curve") && e.contains("X25519"), "{e}");
}

// --- tls_private_key ------------------------------------------------------------------

#[test]
fn tls_private_keys_parse_back_in_every_form() {
    for (algorithm, curve) in KEY_CONFIGS {
        let out = tls_key(algorithm, curve);
        assert_eq!(field(&out, "algorithm"), algorithm);
        let public = pem_der(field(&out, "public_key_pem"), "PUBLIC KEY");
        let pkcs8 = pem_der(field(&out, "private_key_pem_pkcs8"), "PRIVATE KEY");
        assert_pair(field(&out, "private_key_pem_pkcs8"), &public);
        assert_pair(field(&out, "private_key_pem"), &public);
        if algorithm == "RSA" {
            // Traditional PKCS#1, as the ancestor wrote it; same key.
            let pkcs1 = pem_der(field(&out, "private_key_pem"), "RSA PRIVATE KEY");
            let a = aws_lc_rs::rsa::KeyPair::from_der(&pkcs1).expect("PKCS#1");
            let b = aws_lc_rs::rsa::KeyPair::from_pkcs8(&pkcs8).expect("PKCS#8");
            use aws_lc_rs::signature::KeyPair as _;
            assert!(
                a.public_key().as_ref() == b.public_key().as_ref(),
                "PKCS#1 and PKCS#8 forms differ"
            );
        } else {
            assert!(
                field(&out, "private_key_pem") == field(&out, "private_key_pem_pkcs8"),
                "PKCS#8 forms differ"
            );
        }
        // OpenSSH forms.
        let ssh = ssh_key::PrivateKey::from_openssh(field(&out, "private_key_openssh"))
            .expect("OpenSSH private key");
        let line = field(&out, "public_key_openssh");
        assert!(line.ends_with('\n'));
        let public_ssh =
            ssh_key::PublicKey::from_openssh(line.trim_end()).expect("OpenSSH public key");
        assert_eq!(ssh.public_key().key_data(), public_ssh.key_data());
        assert_eq!(
            field(&out, "public_key_fingerprint_sha256"),
            public_ssh.fingerprint(ssh_key::HashAlg::Sha256).to_string()
        );
        let md5 = field(&out, "public_key_fingerprint_md5");
        assert_eq!(md5.len(), 47);
        assert!(
            md5.split(':')
                .all(|b| b.len() == 2 && u8::from_str_radix(b, 16).is_ok())
        );
    }
}

#[test]
fn tls_private_key_defaults_and_errors() {
    let out = generate("tls_private_key", Value::Null);
    assert_eq!(field(&out, "algorithm"), "RSA");
    assert_eq!(out.get("rsa_bits"), Some(&json!(2048)));
    let out = generate("tls_private_key", json!({ "algorithm": "ecdsa" }));
    assert_eq!(
        field(&out, "ecdsa_curve"),
        "P256",
        "ECDSA defaults to P256, not the ancestor's P224"
    );
    let e = refuse("tls_private_key", json!({ "algorithm": "DSA" }));
    assert!(e.contains("algorithm") && e.contains("DSA"), "{e}");
    let e = refuse("tls_private_key", json!({ "rsa_bits": 16384 }));
    assert!(e.contains("rsa_bits"), "{e}");
    let e = refuse(
        "tls_private_key",
        json!({ "algorithm": "ECDSA", "ecdsa_curve": "P224" }),
    );
    assert!(e.contains("ecdsa_curve"), "{e}");
    let e = refuse("tls_private_key", json!({ "rsa_bitz": 2048 }));
    assert!(e.contains("rsa_bitz"), "{e}");
}

// --- ssh_keypair -------------------------------------------------------------------------

fn ssh_keygen() -> Option<std::path::PathBuf> {
    let out = std::process::Command::new("ssh-keygen")
        .arg("-?")
        .output()
        .ok()?;
    // ssh-keygen prints usage and exits non-zero; being able to run it is enough.
    let _ = out;
    Some("ssh-keygen".into())
}

/// Writes the private key to a 0600 file and asks ssh-keygen for its public
/// key and fingerprints. None when ssh-keygen is not installed.
fn ssh_keygen_view(private: &str) -> Option<(String, String, String)> {
    use std::os::unix::fs::PermissionsExt as _;
    let bin = ssh_keygen()?;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("id");
    std::fs::write(&path, private).expect("write key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&bin)
            .args(args)
            .arg(&path)
            .output()
            .expect("ssh-keygen runs");
        assert!(
            out.status.success(),
            "ssh-keygen {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let public = run(&["-y", "-f"]);
    let sha = run(&["-l", "-E", "sha256", "-f"]);
    let md5 = run(&["-l", "-E", "md5", "-f"]);
    Some((public, sha, md5))
}

#[test]
fn ssh_keypairs_parse_back_and_ssh_keygen_agrees() {
    for (algorithm, curve, ssh_alg) in [
        ("ed25519", "P256", "ssh-ed25519"),
        ("ecdsa", "P256", "ecdsa-sha2-nistp256"),
        ("ecdsa", "P384", "ecdsa-sha2-nistp384"),
        ("ecdsa", "P521", "ecdsa-sha2-nistp521"),
        ("rsa", "P256", "ssh-rsa"),
    ] {
        let out = generate(
            "ssh_keypair",
            json!({ "algorithm": algorithm, "ecdsa_curve": curve, "comment": "deploy@shop", "rsa_bits": 2048 }),
        );
        assert_eq!(field(&out, "algorithm"), ssh_alg);
        let private = field(&out, "private_key_openssh");
        assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"));
        let key = ssh_key::PrivateKey::from_openssh(private).expect("OpenSSH private key parses");
        assert!(!key.is_encrypted());
        assert_eq!(key.comment().as_bytes(), b"deploy@shop");
        let line = field(&out, "public_key_openssh");
        let mut parts = line.trim_end().split(' ');
        assert_eq!(parts.next(), Some(ssh_alg));
        assert!(parts.next().is_some());
        assert_eq!(parts.next(), Some("deploy@shop"));
        let public = ssh_key::PublicKey::from_openssh(line.trim_end()).expect("public key parses");
        assert_eq!(key.public_key().key_data(), public.key_data());
        assert_eq!(
            field(&out, "fingerprint"),
            field(&out, "public_key_fingerprint_sha256")
        );
        assert!(field(&out, "fingerprint").starts_with("SHA256:"));
        // The PEM forms are the same key.
        assert_pair(
            field(&out, "private_key_pem"),
            &pem_der(field(&out, "public_key_pem"), "PUBLIC KEY"),
        );

        match ssh_keygen_view(private) {
            Some((kg_public, kg_sha, kg_md5)) => {
                let ours: Vec<&str> = line.split_whitespace().take(2).collect();
                let theirs: Vec<&str> = kg_public.split_whitespace().take(2).collect();
                assert_eq!(ours, theirs, "ssh-keygen derives a different public key");
                assert!(
                    kg_sha.contains(field(&out, "fingerprint")),
                    "ssh-keygen SHA256 fingerprint differs"
                );
                let md5 = format!("MD5:{}", field(&out, "public_key_fingerprint_md5"));
                assert!(kg_md5.contains(&md5), "ssh-keygen MD5 fingerprint differs");
            }
            None => eprintln!("ssh-keygen not installed: skipping the cross-check"),
        }
    }
}

#[test]
fn ssh_keypair_defaults_and_errors() {
    let out = generate("ssh_keypair", Value::Null);
    assert_eq!(field(&out, "algorithm"), "ssh-ed25519");
    let e = refuse("ssh_keypair", json!({ "algorithm": "dsa" }));
    assert!(e.contains("algorithm"), "{e}");
    let e = refuse("ssh_keypair", json!({ "comment": "two\nlines" }));
    assert!(e.contains("comment"), "{e}");
    let e = refuse(
        "ssh_keypair",
        json!({ "algorithm": "rsa", "rsa_bits": 8192 }),
    );
    assert!(e.contains("rsa_bits") && e.contains("4096"), "{e}");
}

// --- certificates ---------------------------------------------------------------------------

#[test]
fn self_signed_cert_matches_its_own_key() {
    // Own key (RSA by default, as the ancestor).
    let out = generate(
        "tls_self_signed_cert",
        json!({ "common_name": "app.example", "validity_days": 30 }),
    );
    assert_eq!(field(&out, "key_algorithm"), "RSA");
    let der = cert_der(field(&out, "cert_pem"));
    let cert = parse_cert(&der);
    assert_pair(field(&out, "private_key_pem"), cert.public_key().raw);
    verify(
        cert.public_key(),
        &cert.signature_algorithm.algorithm,
        &cert.signature_value.data,
        cert.tbs_certificate.as_ref(),
    );
    assert_eq!(
        dns_sans(&cert),
        vec!["app.example"],
        "a leaf without dns_names is valid for its CN"
    );
    assert!(!is_ca(&cert));
    let days =
        (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) / 86_400;
    assert_eq!(days, 30);
    assert_eq!(
        field(&out, "validity_start_time"),
        cert.validity()
            .not_before
            .to_datetime()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    );
    // Trusted directly (as a client would pin it), it is a valid server
    // certificate for its name.
    webpki_verify(
        field(&out, "cert_pem"),
        field(&out, "cert_pem"),
        "app.example",
    )
    .expect("pinned self-signed cert verifies");
}

#[test]
fn self_signed_cert_uses_a_key_from_an_earlier_generator() {
    for (algorithm, curve) in KEY_CONFIGS {
        let key = tls_key(algorithm, curve);
        let out = generate(
            "tls_self_signed_cert",
            json!({
                "key_pem": field(&key, "private_key_pem"),
                "common_name": "svc",
                "dns_names": ["svc.ns.svc", "svc.ns.svc.cluster.local"],
                "ip_addresses": ["10.0.0.1"],
                "organization": "Shop",
            }),
        );
        assert!(
            field(&out, "private_key_pem") == field(&key, "private_key_pem"),
            "private_key_pem is not the given key"
        );
        assert_eq!(field(&out, "key_algorithm"), algorithm);
        let der = cert_der(field(&out, "cert_pem"));
        let cert = parse_cert(&der);
        assert_pair(field(&key, "private_key_pem"), cert.public_key().raw);
        verify(
            cert.public_key(),
            &cert.signature_algorithm.algorithm,
            &cert.signature_value.data,
            cert.tbs_certificate.as_ref(),
        );
        assert_eq!(
            dns_sans(&cert),
            vec!["svc.ns.svc", "svc.ns.svc.cluster.local"]
        );
        let org = cert
            .subject()
            .iter_organization()
            .next()
            .and_then(|o| o.as_str().ok());
        assert_eq!(org, Some("Shop"));
    }
}

#[test]
fn self_signed_ca_has_ca_constraints() {
    let out = generate(
        "tls_self_signed_cert",
        json!({ "common_name": "Shop CA", "is_ca": true, "key_algorithm": "ECDSA" }),
    );
    let der = cert_der(field(&out, "cert_pem"));
    let cert = parse_cert(&der);
    assert!(is_ca(&cert));
    let ku = cert
        .key_usage()
        .expect("keyUsage parses")
        .expect("keyUsage present");
    assert!(ku.value.key_cert_sign() && ku.value.crl_sign());
    assert!(dns_sans(&cert).is_empty());
}

#[test]
fn self_signed_cert_errors_name_the_key() {
    let e = refuse("tls_self_signed_cert", json!({ "validity_days": 0 }));
    assert!(e.contains("validity_days"), "{e}");
    let e = refuse("tls_self_signed_cert", json!({ "validity_days": -3 }));
    assert!(e.contains("validity_days"), "{e}");
    let e = refuse(
        "tls_self_signed_cert",
        json!({ "key_pem": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n" }),
    );
    assert!(e.contains("key_pem"), "{e}");
    let e = refuse("tls_self_signed_cert", json!({ "key_pem": "not pem" }));
    assert!(e.contains("key_pem"), "{e}");
    let key = tls_key("ECDSA", "P256");
    let e = refuse(
        "tls_self_signed_cert",
        json!({ "key_pem": field(&key, "private_key_pem"), "key_size": 4096 }),
    );
    assert!(e.contains("key_size") && e.contains("key_pem"), "{e}");
    let e = refuse(
        "tls_self_signed_cert",
        json!({ "ip_addresses": ["300.1.1.1"] }),
    );
    assert!(e.contains("ip_addresses"), "{e}");
    let e = refuse("tls_self_signed_cert", json!({ "key_size": 8192 }));
    assert!(e.contains("key_size") && e.contains("4096"), "{e}");
}

#[test]
fn cert_requests_verify_and_carry_the_subject() {
    for (algorithm, curve) in KEY_CONFIGS {
        let key = tls_key(algorithm, curve);
        let out = generate(
            "tls_cert_request",
            json!({
                "private_key_pem": field(&key, "private_key_pem"),
                "common_name": "app.shop.svc",
                "dns_names": ["app.shop.svc"],
                "ip_addresses": "10.1.2.3",
            }),
        );
        assert_eq!(field(&out, "key_algorithm"), algorithm);
        let der = CertificateSigningRequestDer::from_pem_slice(
            field(&out, "cert_request_pem").as_bytes(),
        )
        .expect("CSR PEM");
        let (rest, csr) = X509CertificationRequest::from_der(der.as_ref()).expect("CSR parses");
        assert!(rest.is_empty());
        let info = &csr.certification_request_info;
        verify(
            &info.subject_pki,
            &csr.signature_algorithm.algorithm,
            &csr.signature_value.data,
            info.raw,
        );
        assert_pair(field(&key, "private_key_pem"), info.subject_pki.raw);
        let cn = info
            .subject
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok());
        assert_eq!(cn, Some("app.shop.svc"));
        let mut names = Vec::new();
        for ext in csr.requested_extensions().into_iter().flatten() {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for n in &san.general_names {
                    names.push(format!("{n:?}"));
                }
            }
        }
        assert_eq!(names.len(), 2, "DNS and IP SANs requested");
    }
    let e = refuse("tls_cert_request", json!({ "common_name": "x" }));
    assert!(
        e.contains("private_key_pem") && e.contains("required"),
        "{e}"
    );
}

/// CA key + CA cert + leaf key + CSR + signed leaf, with the CA key of the
/// given kind.
fn chain(ca_algorithm: &str, ca_curve: &str) -> (Outputs, Outputs, Outputs) {
    let ca_key = tls_key(ca_algorithm, ca_curve);
    let ca = generate(
        "tls_self_signed_cert",
        json!({ "key_pem": field(&ca_key, "private_key_pem"), "common_name": "Shop CA", "is_ca": true, "organization": "Shop" }),
    );
    let leaf_key = tls_key("ECDSA", "P256");
    let csr = generate(
        "tls_cert_request",
        json!({ "private_key_pem": field(&leaf_key, "private_key_pem"), "common_name": "app.shop.svc", "dns_names": ["app.shop.svc", "app"] }),
    );
    let leaf = generate(
        "tls_locally_signed_cert",
        json!({
            "cert_request_pem": field(&csr, "cert_request_pem"),
            "ca_private_key_pem": field(&ca_key, "private_key_pem"),
            "ca_cert_pem": field(&ca, "cert_pem"),
            "validity_period_hours": 48,
        }),
    );
    (ca, leaf_key, leaf)
}

#[test]
fn locally_signed_certs_verify_against_their_ca() {
    for (algorithm, curve) in KEY_CONFIGS {
        let (ca, leaf_key, leaf) = chain(algorithm, curve);
        assert_eq!(field(&leaf, "ca_key_algorithm"), algorithm);
        webpki_verify(
            field(&ca, "cert_pem"),
            field(&leaf, "cert_pem"),
            "app.shop.svc",
        )
        .unwrap_or_else(|e| panic!("{algorithm}/{curve} CA: leaf does not verify: {e}"));
        webpki_verify(
            field(&ca, "cert_pem"),
            field(&leaf, "cert_pem"),
            "other.shop.svc",
        )
        .expect_err("name mismatch");
        let leaf_der = cert_der(field(&leaf, "cert_pem"));
        let cert = parse_cert(&leaf_der);
        let ca_der = cert_der(field(&ca, "cert_pem"));
        let ca_cert = parse_cert(&ca_der);
        verify(
            ca_cert.public_key(),
            &cert.signature_algorithm.algorithm,
            &cert.signature_value.data,
            cert.tbs_certificate.as_ref(),
        );
        assert_pair(field(&leaf_key, "private_key_pem"), cert.public_key().raw);
        assert!(!is_ca(&cert));
        assert_eq!(cert.issuer(), ca_cert.subject());
        let hours =
            (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) / 3600;
        assert_eq!(hours, 48);
    }
}

#[test]
fn locally_signed_cert_refuses_bad_inputs() {
    let ca_key = tls_key("ECDSA", "P256");
    let ca = generate(
        "tls_self_signed_cert",
        json!({ "key_pem": field(&ca_key, "private_key_pem"), "common_name": "CA", "is_ca": true }),
    );
    let leaf_key = tls_key("ECDSA", "P256");
    let csr = generate(
        "tls_cert_request",
        json!({ "private_key_pem": field(&leaf_key, "private_key_pem"), "common_name": "x" }),
    );
    let sign = |csr_pem: &str, ca_key_pem: &str, ca_pem: &str| {
        refuse(
            "tls_locally_signed_cert",
            json!({ "cert_request_pem": csr_pem, "ca_private_key_pem": ca_key_pem, "ca_cert_pem": ca_pem }),
        )
    };
    let csr_pem = field(&csr, "cert_request_pem");
    let ca_key_pem = field(&ca_key, "private_key_pem");
    let ca_pem = field(&ca, "cert_pem");

    // The CA key does not belong to the CA certificate.
    let e = sign(csr_pem, field(&leaf_key, "private_key_pem"), ca_pem);
    assert!(
        e.contains("ca_private_key_pem") && e.contains("does not match"),
        "{e}"
    );

    // The "CA" is a leaf.
    let not_ca = generate(
        "tls_self_signed_cert",
        json!({ "key_pem": ca_key_pem, "common_name": "leaf" }),
    );
    let e = sign(csr_pem, ca_key_pem, field(&not_ca, "cert_pem"));
    assert!(e.contains("ca_cert_pem") && e.contains("not a CA"), "{e}");

    // The CA has expired.
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    let expired_key = rcgen::KeyPair::from_pem(ca_key_pem).unwrap();
    let expired = params.self_signed(&expired_key).unwrap();
    let e = sign(csr_pem, ca_key_pem, &expired.pem());
    assert!(
        e.contains("ca_cert_pem") && e.contains("not valid now"),
        "{e}"
    );

    // A CSR whose signature does not verify: flip a bit in the signature.
    let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes()).unwrap();
    let mut bytes = der.to_vec();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x01;
    let tampered = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        STANDARD.encode(&bytes)
    );
    let e = sign(&tampered, ca_key_pem, ca_pem);
    assert!(
        e.contains("cert_request_pem") && e.contains("signature"),
        "{e}"
    );

    // Required inputs and validity.
    let e = refuse(
        "tls_locally_signed_cert",
        json!({ "cert_request_pem": csr_pem, "ca_cert_pem": ca_pem }),
    );
    assert!(
        e.contains("ca_private_key_pem") && e.contains("required"),
        "{e}"
    );
    let e = refuse(
        "tls_locally_signed_cert",
        json!({ "cert_request_pem": csr_pem, "ca_private_key_pem": ca_key_pem, "ca_cert_pem": ca_pem, "validity_period_hours": 0 }),
    );
    assert!(e.contains("validity_period_hours"), "{e}");
    let e = sign("garbage", ca_key_pem, ca_pem);
    assert!(e.contains("cert_request_pem"), "{e}");
}

// --- basic_auth -------------------------------------------------------------------------------

#[test]
fn basic_auth_htpasswd_verifies_for_generated_and_given_passwords() {
    let out = generate("basic_auth", json!({ "bcrypt_cost": 4 }));
    assert_eq!(field(&out, "username"), "admin");
    let pass = field(&out, "password");
    assert_eq!(pass.chars().count(), 32);
    let hash = field(&out, "htpasswd")
        .strip_prefix("admin:")
        .expect("user: prefix");
    assert!(
        hash.starts_with("$2y$04$"),
        "htpasswd uses the $2y$ bcrypt prefix"
    );
    assert!(
        bcrypt::verify(pass, hash).unwrap(),
        "htpasswd hash does not verify"
    );

    let out = generate(
        "basic_auth",
        json!({ "username": "ops", "password": "given-password-1", "bcrypt_cost": 4 }),
    );
    assert!(field(&out, "password") == "given-password-1");
    let hash = field(&out, "htpasswd")
        .strip_prefix("ops:")
        .expect("user: prefix");
    assert!(bcrypt::verify("given-password-1", hash).unwrap());

    let out = generate(
        "basic_auth",
        json!({ "length": 12, "special": false, "min_numeric": 3, "bcrypt_cost": 4 }),
    );
    let pass = field(&out, "password");
    assert_eq!(pass.len(), 12);
    assert!(pass.chars().all(|c| c.is_ascii_alphanumeric()));
    assert!(pass.chars().filter(char::is_ascii_digit).count() >= 3);
}

// --- registry --------------------------------------------------------------------------------

#[test]
fn the_whole_catalogue_is_registered_and_key_generation_is_marked_expensive() {
    let expensive = [
        "crypto_rsa_key",
        "crypto_ed25519_key",
        "crypto_ecdsa_key",
        "crypto_ecdh_key",
        "tls_private_key",
        "tls_self_signed_cert",
        "tls_cert_request",
        "tls_locally_signed_cert",
        "ssh_keypair",
        "basic_auth",
    ];
    let cheap = [
        "random_password",
        "random_string",
        "random_uuid",
        "random_integer",
        "random_bytes",
        "random_id",
        "time_static",
        "crypto_aes_key",
        "crypto_chacha20_key",
        "crypto_xchacha20_key",
        "crypto_hmac",
    ];
    for name in expensive {
        assert!(
            generators::lookup(name).is_some_and(|e| e.expensive),
            "{name} should be registered and expensive"
        );
    }
    for name in cheap {
        assert!(
            generators::lookup(name).is_some_and(|e| !e.expensive),
            "{name} should be registered and cheap"
        );
    }
    assert_eq!(generators::registry().len(), expensive.len() + cheap.len());
}
