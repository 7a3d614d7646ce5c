//! Typed Secrets (`kubernetes.io/tls`, `basic-auth`, `ssh-auth`,
//! `dockerconfigjson`) must come out valid for their type.
//!
//! Messages name the Secret type and the data key at fault, never a value.

use crate::denial::{Denial, Reason};
use crate::generators::keys;
use crate::secret::SecretData;

pub const TYPE_TLS: &str = "kubernetes.io/tls";
pub const TYPE_BASIC_AUTH: &str = "kubernetes.io/basic-auth";
pub const TYPE_SSH_AUTH: &str = "kubernetes.io/ssh-auth";
pub const TYPE_DOCKERCONFIGJSON: &str = "kubernetes.io/dockerconfigjson";

/// Checks the Secret's final data (present keys plus generated ones)
/// against the rules of its `type`. Opaque and unknown types pass.
pub fn validate(secret_type: Option<&str>, data: &SecretData) -> Result<(), Denial> {
    match secret_type {
        Some(TYPE_TLS) => tls(data),
        Some(TYPE_BASIC_AUTH) => basic_auth(data),
        Some(TYPE_SSH_AUTH) => ssh_auth(data),
        Some(TYPE_DOCKERCONFIGJSON) => dockerconfigjson(data),
        _ => Ok(()),
    }
}

fn deny(type_name: &str, key: &str, problem: impl std::fmt::Display) -> Denial {
    Denial::new(
        Reason::TypedSecret,
        format!("a {type_name} Secret's key {key:?} {problem}"),
    )
}

fn require<'a>(data: &'a SecretData, type_name: &str, key: &str) -> Result<&'a [u8], Denial> {
    data.get(key).map(|v| v.expose()).ok_or_else(|| {
        Denial::new(
            Reason::TypedSecret,
            format!("a {type_name} Secret needs key {key:?}, which neither the manifest nor the annotations provide"),
        )
    })
}

fn text<'a>(bytes: &'a [u8], type_name: &str, key: &str) -> Result<&'a str, Denial> {
    std::str::from_utf8(bytes).map_err(|_| deny(type_name, key, "is not text (PEM expected)"))
}

/// tls.crt and tls.key parse, and the first certificate is for tls.key.
fn tls(data: &SecretData) -> Result<(), Denial> {
    let crt = require(data, TYPE_TLS, "tls.crt")?;
    let key = require(data, TYPE_TLS, "tls.key")?;
    let crt = text(crt, TYPE_TLS, "tls.crt")?;
    let key = text(key, TYPE_TLS, "tls.key")?;
    let certs = keys::certificates_from_pem(crt, "tls.crt")
        .map_err(|_| deny(TYPE_TLS, "tls.crt", "does not hold PEM certificates"))?;
    let mut first_key: Option<Vec<u8>> = None;
    for (i, der) in certs.iter().enumerate() {
        let cert = keys::parse_certificate(der, "tls.crt").map_err(|_| {
            deny(
                TYPE_TLS,
                "tls.crt",
                format!("has certificate #{} that is not valid X.509", i + 1),
            )
        })?;
        if i == 0 {
            first_key = Some(cert.public_key().subject_public_key.data.to_vec());
        }
    }
    let loaded = keys::LoadedKey::from_pem(key, "\"tls.key\"").map_err(|e| {
        Denial::new(
            Reason::TypedSecret,
            format!("a {TYPE_TLS} Secret's key {e}"),
        )
    })?;
    if first_key.as_deref() != Some(loaded.public_key_raw()) {
        return Err(Denial::new(
            Reason::TypedSecret,
            format!(
                "a {TYPE_TLS} Secret's keys \"tls.crt\" and \"tls.key\" do not match: the first certificate in tls.crt is not for the private key in tls.key"
            ),
        ));
    }
    Ok(())
}

/// Kubernetes requires at least one of username and password.
fn basic_auth(data: &SecretData) -> Result<(), Denial> {
    if data.contains_key("username") || data.contains_key("password") {
        return Ok(());
    }
    Err(Denial::new(
        Reason::TypedSecret,
        format!(
            "a {TYPE_BASIC_AUTH} Secret needs key \"username\" or \"password\", and neither the manifest nor the annotations provide one"
        ),
    ))
}

/// ssh-privatekey is an OpenSSH private key or a PEM private key.
fn ssh_auth(data: &SecretData) -> Result<(), Denial> {
    let key = require(data, TYPE_SSH_AUTH, "ssh-privatekey")?;
    let key = text(key, TYPE_SSH_AUTH, "ssh-privatekey")?;
    if key.contains("-----BEGIN OPENSSH PRIVATE KEY-----") {
        return ssh_key::PrivateKey::from_openssh(key)
            .map(|_| ())
            .map_err(|_| {
                deny(
                    TYPE_SSH_AUTH,
                    "ssh-privatekey",
                    "is not a valid OpenSSH private key",
                )
            });
    }
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject;
    let der = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|_| {
        deny(
            TYPE_SSH_AUTH,
            "ssh-privatekey",
            "is not a private key (expected OPENSSH PRIVATE KEY, PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
        )
    })?;
    if !keys::is_der_sequence(der.secret_der()) {
        return Err(deny(
            TYPE_SSH_AUTH,
            "ssh-privatekey",
            "holds a PEM block that is not a valid key structure",
        ));
    }
    Ok(())
}

/// .dockerconfigjson is JSON with an `auths` object.
fn dockerconfigjson(data: &SecretData) -> Result<(), Denial> {
    const KEY: &str = ".dockerconfigjson";
    let raw = require(data, TYPE_DOCKERCONFIGJSON, KEY)?;
    let doc: serde_json::Value = serde_json::from_slice(raw).map_err(|e| {
        deny(
            TYPE_DOCKERCONFIGJSON,
            KEY,
            format!(
                "is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })?;
    match doc.get("auths") {
        Some(serde_json::Value::Object(auths)) => {
            for (registry, entry) in auths {
                if !entry.is_object() {
                    return Err(deny(
                        TYPE_DOCKERCONFIGJSON,
                        KEY,
                        format!("has an auths entry for {registry:?} that is not an object"),
                    ));
                }
            }
            Ok(())
        }
        Some(_) => Err(deny(
            TYPE_DOCKERCONFIGJSON,
            KEY,
            "has \"auths\" that is not an object",
        )),
        None => Err(deny(TYPE_DOCKERCONFIGJSON, KEY, "has no \"auths\" object")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::secret::SecretValue;

    fn data(pairs: &[(&str, &str)]) -> SecretData {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), SecretValue::from_string((*v).to_owned())))
            .collect()
    }

    #[test]
    fn opaque_passes() {
        assert!(validate(None, &data(&[])).is_ok());
        assert!(validate(Some("Opaque"), &data(&[])).is_ok());
    }

    #[test]
    fn basic_auth_needs_one_of_username_or_password() {
        assert!(validate(Some(TYPE_BASIC_AUTH), &data(&[("username", "u")])).is_ok());
        assert!(validate(Some(TYPE_BASIC_AUTH), &data(&[("password", "p")])).is_ok());
        let e = validate(Some(TYPE_BASIC_AUTH), &data(&[("other", "x")])).unwrap_err();
        assert!(
            e.message.contains(TYPE_BASIC_AUTH) && e.message.contains("username"),
            "{e}"
        );
    }

    #[test]
    fn dockerconfigjson_needs_auths() {
        let ok = r#"{"auths":{"ghcr.io":{"auth":"dTpw"}}}"#;
        assert!(
            validate(
                Some(TYPE_DOCKERCONFIGJSON),
                &data(&[(".dockerconfigjson", ok)])
            )
            .is_ok()
        );
        for bad in [
            r#"{"auths": 3}"#,
            r#"{"x": {}}"#,
            "{not json s3cret",
            r#"{"auths":{"r":"s3cret"}}"#,
        ] {
            let e = validate(
                Some(TYPE_DOCKERCONFIGJSON),
                &data(&[(".dockerconfigjson", bad)]),
            )
            .unwrap_err();
            assert!(e.message.contains(".dockerconfigjson"), "{e}");
            assert!(!e.message.contains("s3cret"), "{e}");
        }
    }

    #[test]
    fn ssh_auth_needs_a_parseable_key() {
        let e = validate(Some(TYPE_SSH_AUTH), &data(&[])).unwrap_err();
        assert!(e.message.contains("ssh-privatekey"), "{e}");
        let e = validate(
            Some(TYPE_SSH_AUTH),
            &data(&[("ssh-privatekey", "hunter22")]),
        )
        .unwrap_err();
        assert!(
            e.message.contains("ssh-privatekey") && !e.message.contains("hunter22"),
            "{e}"
        );
        let garbage =
            "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n";
        assert!(validate(Some(TYPE_SSH_AUTH), &data(&[("ssh-privatekey", garbage)])).is_err());
    }

    #[test]
    fn tls_needs_both_keys() {
        let e = validate(Some(TYPE_TLS), &data(&[("tls.key", "x")])).unwrap_err();
        assert!(e.message.contains("tls.crt"), "{e}");
        let e = validate(
            Some(TYPE_TLS),
            &data(&[("tls.crt", "junk"), ("tls.key", "junk")]),
        )
        .unwrap_err();
        assert!(
            e.message.contains("tls.crt") && e.message.contains(TYPE_TLS),
            "{e}"
        );
    }
}
