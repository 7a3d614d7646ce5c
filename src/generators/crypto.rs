//! Raw cryptographic keys: symmetric keys (AES, ChaCha20, XChaCha20), HMAC,
//! and key pairs (RSA, Ed25519, ECDSA, ECDH).
//!
//! Every key pair reports the same fields: `private_key_pem` (PKCS#8),
//! `public_key_pem` (SPKI), `private_key_base64` / `public_key_base64` (the
//! same DER, base64), `key_size` and `algorithm` (plus `curve` for the
//! elliptic ones).

use aws_lc_rs::agreement;
use aws_lc_rs::encoding::{AsBigEndian, AsDer, Curve25519SeedBin, Pkcs8V1Der, PublicKeyX509Der};
use data_encoding::{BASE64, HEXLOWER};
use rand::RngExt;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::keys::{self, Curve, KeyMaterial, KeySpec};
use super::random::NoConfig;
use super::{Generator, Limits};
use crate::secret::Outputs;

fn random_key(len: usize) -> Zeroizing<Vec<u8>> {
    let mut key = Zeroizing::new(vec![0u8; len]);
    rand::rng().fill(&mut key[..]);
    key
}

fn symmetric_outputs(key: &[u8]) -> Outputs {
    Outputs::new()
        .with("key_base64", BASE64.encode(key))
        .with("key_hex", HEXLOWER.encode(key))
        .with("key_size", key.len() * 8)
}

/// The outputs every key pair generator shares.
fn key_pair_outputs(pkcs8: &[u8], spki: &[u8], key_size: u32, algorithm: &str) -> Outputs {
    Outputs::new()
        .with("private_key_pem", keys::pem("PRIVATE KEY", pkcs8))
        .with("public_key_pem", keys::pem("PUBLIC KEY", spki))
        .with("private_key_base64", BASE64.encode(pkcs8))
        .with("public_key_base64", BASE64.encode(spki))
        .with("key_size", key_size)
        .with("algorithm", algorithm)
}

fn material_outputs(key: &KeyMaterial) -> Outputs {
    key_pair_outputs(
        key.pkcs8_der(),
        key.spki_der(),
        key.spec.key_size(),
        key.spec.algorithm_name(),
    )
}

// --- crypto_aes_key --------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AesConfig {
    /// Bits: 128, 192 or 256.
    pub key_size: u32,
}

impl Default for AesConfig {
    fn default() -> Self {
        Self { key_size: 256 }
    }
}

pub struct AesKey;

impl Generator for AesKey {
    const TYPE: &'static str = "crypto_aes_key";
    type Config = AesConfig;

    fn validate(config: &AesConfig, _: &Limits) -> Result<(), String> {
        match config.key_size {
            128 | 192 | 256 => Ok(()),
            other => Err(format!(
                "key_size must be 128, 192 or 256 (bits), got {other}"
            )),
        }
    }

    fn generate(config: &AesConfig, _: &Limits) -> Result<Outputs, String> {
        let key = random_key(config.key_size as usize / 8);
        Ok(symmetric_outputs(&key))
    }
}

// --- crypto_chacha20_key / crypto_xchacha20_key ------------------------------

pub struct ChaCha20Key;

impl Generator for ChaCha20Key {
    const TYPE: &'static str = "crypto_chacha20_key";
    type Config = NoConfig;

    fn validate(_: &NoConfig, _: &Limits) -> Result<(), String> {
        Ok(())
    }

    fn generate(_: &NoConfig, _: &Limits) -> Result<Outputs, String> {
        Ok(symmetric_outputs(&random_key(32)).with("algorithm", "ChaCha20"))
    }
}

pub struct XChaCha20Key;

impl Generator for XChaCha20Key {
    const TYPE: &'static str = "crypto_xchacha20_key";
    type Config = NoConfig;

    fn validate(_: &NoConfig, _: &Limits) -> Result<(), String> {
        Ok(())
    }

    fn generate(_: &NoConfig, _: &Limits) -> Result<Outputs, String> {
        Ok(symmetric_outputs(&random_key(32)).with("algorithm", "XChaCha20"))
    }
}

// --- crypto_hmac -------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HmacConfig {
    /// `sha256` or `sha512` (`SHA-256`, `HMAC-SHA256` ... accepted).
    pub algorithm: String,
    /// Key length in bytes.
    pub key_size: u32,
    /// The message to sign.
    pub message: String,
}

impl Default for HmacConfig {
    fn default() -> Self {
        Self {
            algorithm: "sha256".into(),
            key_size: 32,
            message: String::new(),
        }
    }
}

/// Smallest and largest HMAC key, in bytes.
pub const HMAC_MIN_KEY: u32 = 16;
pub const HMAC_MAX_KEY: u32 = 1024;
/// Largest message signed.
pub const HMAC_MAX_MESSAGE: usize = 64 * 1024;

fn hmac_algorithm(name: &str) -> Result<(&'static str, aws_lc_rs::hmac::Algorithm), String> {
    let norm: String = name
        .trim()
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | ' '))
        .collect::<String>()
        .to_ascii_lowercase();
    match norm.strip_prefix("hmac").unwrap_or(&norm) {
        "sha256" => Ok(("sha256", aws_lc_rs::hmac::HMAC_SHA256)),
        "sha512" => Ok(("sha512", aws_lc_rs::hmac::HMAC_SHA512)),
        _ => Err(format!(
            "algorithm {name:?} is not supported; use sha256 or sha512"
        )),
    }
}

pub struct Hmac;

impl Generator for Hmac {
    const TYPE: &'static str = "crypto_hmac";
    type Config = HmacConfig;

    fn validate(config: &HmacConfig, _: &Limits) -> Result<(), String> {
        hmac_algorithm(&config.algorithm)?;
        if !(HMAC_MIN_KEY..=HMAC_MAX_KEY).contains(&config.key_size) {
            return Err(format!(
                "key_size must be from {HMAC_MIN_KEY} to {HMAC_MAX_KEY} (bytes), got {}",
                config.key_size
            ));
        }
        if config.message.len() > HMAC_MAX_MESSAGE {
            return Err(format!("message is longer than {HMAC_MAX_MESSAGE} bytes"));
        }
        Ok(())
    }

    fn generate(config: &HmacConfig, _: &Limits) -> Result<Outputs, String> {
        let (name, alg) = hmac_algorithm(&config.algorithm)?;
        let key = random_key(config.key_size as usize);
        let tag = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(alg, &key),
            config.message.as_bytes(),
        );
        Ok(Outputs::new()
            .with("key_base64", BASE64.encode(&key))
            .with("key_hex", HEXLOWER.encode(&key))
            .with("signature_base64", BASE64.encode(tag.as_ref()))
            .with("signature_hex", HEXLOWER.encode(tag.as_ref()))
            .with("algorithm", name))
    }
}

// --- crypto_rsa_key ------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RsaConfig {
    /// Modulus bits.
    pub key_size: u32,
}

impl Default for RsaConfig {
    fn default() -> Self {
        Self { key_size: 2048 }
    }
}

pub struct RsaKey;

impl Generator for RsaKey {
    const TYPE: &'static str = "crypto_rsa_key";
    const EXPENSIVE: bool = true;
    type Config = RsaConfig;

    fn validate(config: &RsaConfig, limits: &Limits) -> Result<(), String> {
        keys::check_rsa_bits("key_size", config.key_size, limits)
    }

    fn generate(config: &RsaConfig, _: &Limits) -> Result<Outputs, String> {
        let key = KeyMaterial::generate(KeySpec::Rsa(config.key_size))?;
        Ok(material_outputs(&key))
    }
}

// --- crypto_ed25519_key --------------------------------------------------------

pub struct Ed25519Key;

impl Generator for Ed25519Key {
    const TYPE: &'static str = "crypto_ed25519_key";
    const EXPENSIVE: bool = true;
    type Config = NoConfig;

    fn validate(_: &NoConfig, _: &Limits) -> Result<(), String> {
        Ok(())
    }

    fn generate(_: &NoConfig, _: &Limits) -> Result<Outputs, String> {
        let key = KeyMaterial::generate(KeySpec::Ed25519)?;
        Ok(material_outputs(&key).with("curve", "Ed25519"))
    }
}

// --- crypto_ecdsa_key ----------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CurveConfig {
    pub curve: String,
}

impl Default for CurveConfig {
    fn default() -> Self {
        Self {
            curve: "P256".into(),
        }
    }
}

pub struct EcdsaKey;

impl Generator for EcdsaKey {
    const TYPE: &'static str = "crypto_ecdsa_key";
    const EXPENSIVE: bool = true;
    type Config = CurveConfig;

    fn validate(config: &CurveConfig, _: &Limits) -> Result<(), String> {
        Curve::parse(&config.curve, "curve").map(|_| ())
    }

    fn generate(config: &CurveConfig, _: &Limits) -> Result<Outputs, String> {
        let curve = Curve::parse(&config.curve, "curve")?;
        let key = KeyMaterial::generate(KeySpec::Ecdsa(curve))?;
        Ok(material_outputs(&key).with("curve", curve.name()))
    }
}

// --- crypto_ecdh_key -----------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EcdhCurve {
    Nist(Curve),
    X25519,
}

fn ecdh_curve(value: &str) -> Result<EcdhCurve, String> {
    let norm = value.trim().to_ascii_uppercase();
    if norm == "X25519" || norm == "CURVE25519" {
        return Ok(EcdhCurve::X25519);
    }
    Curve::parse(value, "curve")
        .map(EcdhCurve::Nist)
        .map_err(|_| format!("curve {value:?} is not supported; use P256, P384, P521 or X25519"))
}

/// PKCS#8 v1 of an X25519 private key (RFC 8410): a fixed prefix and the
/// 32-byte seed.
fn x25519_pkcs8(seed: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
    if seed.len() != 32 {
        return Err("key generation failed in the crypto library".into());
    }
    const PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04,
        0x20,
    ];
    let mut out = Zeroizing::new(Vec::with_capacity(48));
    out.extend_from_slice(&PREFIX);
    out.extend_from_slice(seed);
    Ok(out)
}

pub struct EcdhKey;

impl Generator for EcdhKey {
    const TYPE: &'static str = "crypto_ecdh_key";
    const EXPENSIVE: bool = true;
    type Config = CurveConfig;

    fn validate(config: &CurveConfig, _: &Limits) -> Result<(), String> {
        ecdh_curve(&config.curve).map(|_| ())
    }

    fn generate(config: &CurveConfig, _: &Limits) -> Result<Outputs, String> {
        const FAILED: &str = "key generation failed in the crypto library";
        let curve = ecdh_curve(&config.curve)?;
        let (alg, name, bits) = match curve {
            EcdhCurve::Nist(Curve::P256) => (&agreement::ECDH_P256, "P256", 256),
            EcdhCurve::Nist(Curve::P384) => (&agreement::ECDH_P384, "P384", 384),
            EcdhCurve::Nist(Curve::P521) => (&agreement::ECDH_P521, "P521", 521),
            EcdhCurve::X25519 => (&agreement::X25519, "X25519", 256),
        };
        let private = agreement::PrivateKey::generate(alg).map_err(|_| FAILED.to_owned())?;
        let pkcs8 = match curve {
            EcdhCurve::X25519 => {
                let seed: Curve25519SeedBin<'_> =
                    private.as_be_bytes().map_err(|_| FAILED.to_owned())?;
                x25519_pkcs8(seed.as_ref())?
            }
            EcdhCurve::Nist(_) => {
                let der: Pkcs8V1Der<'_> = private.as_der().map_err(|_| FAILED.to_owned())?;
                Zeroizing::new(der.as_ref().to_vec())
            }
        };
        let public = private
            .compute_public_key()
            .map_err(|_| FAILED.to_owned())?;
        let spki: PublicKeyX509Der<'_> = public.as_der().map_err(|_| FAILED.to_owned())?;
        Ok(key_pair_outputs(&pkcs8, spki.as_ref(), bits, "ECDH").with("curve", name))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn hmac_algorithm_spellings() {
        assert_eq!(hmac_algorithm("SHA-256").unwrap().0, "sha256");
        assert_eq!(hmac_algorithm("hmac-sha512").unwrap().0, "sha512");
        assert!(hmac_algorithm("md5").unwrap_err().contains("md5"));
    }

    #[test]
    fn x25519_pkcs8_matches_the_rfc_8410_layout() {
        let der = x25519_pkcs8(&[7u8; 32]).unwrap();
        assert_eq!(der.len(), 48);
        assert_eq!(keys::pkcs8_private_key(&der).map(<[u8]>::len), Some(34));
    }
}
