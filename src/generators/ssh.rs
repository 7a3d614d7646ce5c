//! `ssh_keypair`: an OpenSSH key pair (Ed25519 by default, ECDSA or RSA).

use serde::Deserialize;

use super::keys::{self, KeyMaterial, KeySpec};
use super::{Generator, Limits};
use crate::secret::Outputs;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SshConfig {
    /// ed25519 (default), ecdsa or rsa.
    pub algorithm: String,
    /// The comment written after the public key (and inside the private key).
    pub comment: String,
    /// RSA bits (default 3072, as ssh-keygen).
    pub rsa_bits: u32,
    /// ECDSA curve: P256 (default), P384, P521.
    pub ecdsa_curve: String,
}

impl Default for SshConfig {
    fn default() -> Self {
        Self {
            algorithm: "ed25519".into(),
            comment: String::new(),
            rsa_bits: 3072,
            ecdsa_curve: "P256".into(),
        }
    }
}

/// Longest comment accepted.
pub const MAX_COMMENT: usize = 1024;

impl SshConfig {
    fn spec(&self, limits: &Limits) -> Result<KeySpec, String> {
        let spec = KeySpec::parse(
            &self.algorithm,
            "algorithm",
            self.rsa_bits,
            &self.ecdsa_curve,
            "ecdsa_curve",
        )?;
        if let KeySpec::Rsa(bits) = spec {
            keys::check_rsa_bits("rsa_bits", bits, limits)?;
        }
        Ok(spec)
    }
}

pub struct SshKeypair;

impl Generator for SshKeypair {
    const TYPE: &'static str = "ssh_keypair";
    const EXPENSIVE: bool = true;
    type Config = SshConfig;

    fn validate(config: &SshConfig, limits: &Limits) -> Result<(), String> {
        config.spec(limits)?;
        if config.comment.len() > MAX_COMMENT {
            return Err(format!("comment is longer than {MAX_COMMENT} bytes"));
        }
        if config.comment.chars().any(char::is_control) {
            return Err("comment must be one line without control characters".into());
        }
        Ok(())
    }

    fn generate(config: &SshConfig, limits: &Limits) -> Result<Outputs, String> {
        let spec = config.spec(limits)?;
        let key = KeyMaterial::generate(spec)?;
        let ssh = key.to_ssh(&config.comment)?;
        let public = keys::ssh_public(&ssh)?;
        let private = ssh
            .to_openssh(ssh_key::LineEnding::LF)
            .map_err(|_| "the key cannot be encoded in OpenSSH format".to_owned())?;
        Ok(Outputs::new()
            .with("private_key_openssh", private.as_str())
            .with("public_key_openssh", format!("{}\n", public.line))
            .with("fingerprint", public.sha256.clone())
            .with("public_key_fingerprint_sha256", public.sha256)
            .with("public_key_fingerprint_md5", public.md5)
            .with("private_key_pem", key.private_key_pem_pkcs8())
            .with("public_key_pem", key.public_key_pem())
            .with("algorithm", ssh.algorithm().as_str())
            .with("comment", config.comment.clone()))
    }
}
