//! Key material shared by the crypto, tls and ssh generators: generation with
//! aws-lc-rs, PKCS#8 / SPKI DER, PEM, OpenSSH encodings, and reading keys,
//! certificates and CSRs that earlier generators (or the manifest) produced.
//!
//! Nothing here puts key material into an error message.

use aws_lc_rs::encoding::{
    AsBigEndian, AsDer, Curve25519SeedBin, EcPrivateKeyBin, PublicKeyX509Der,
};
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, EcdsaSigningAlgorithm, Ed25519KeyPair, KeyPair as _,
};
use data_encoding::{BASE64, BASE64_NOPAD};
use md5::Digest as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::asn1_rs::BitString;
use x509_parser::oid_registry;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo};
use zeroize::Zeroizing;

use super::Limits;

/// Smallest and largest RSA modulus a Secret author may ask for (before the
/// admin's cap).
pub const RSA_MIN_BITS: u32 = 2048;
pub const RSA_MAX_BITS: u32 = 8192;

/// A NIST curve for ECDSA / ECDH.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    /// Parses `P256`, `p-256`, `secp256r1`, `prime256v1`, ... `field` names
    /// the config key in the error.
    pub fn parse(value: &str, field: &str) -> Result<Self, String> {
        let norm: String = value
            .trim()
            .chars()
            .filter(|c| !matches!(c, '-' | '_' | ' '))
            .collect::<String>()
            .to_ascii_uppercase();
        match norm.as_str() {
            "P256" | "SECP256R1" | "PRIME256V1" | "NISTP256" => Ok(Curve::P256),
            "P384" | "SECP384R1" | "NISTP384" => Ok(Curve::P384),
            "P521" | "SECP521R1" | "NISTP521" => Ok(Curve::P521),
            "P224" | "SECP224R1" => Err(format!(
                "{field} P224 is not supported (no maintained implementation in this webhook's crypto library); use P256, P384 or P521"
            )),
            _ => Err(format!(
                "{field} {value:?} is not supported; use P256, P384 or P521"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P256",
            Curve::P384 => "P384",
            Curve::P521 => "P521",
        }
    }

    pub fn bits(self) -> u32 {
        match self {
            Curve::P256 => 256,
            Curve::P384 => 384,
            Curve::P521 => 521,
        }
    }

    fn signing(self) -> &'static EcdsaSigningAlgorithm {
        match self {
            Curve::P256 => &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            Curve::P384 => &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
            Curve::P521 => &signature::ECDSA_P521_SHA512_ASN1_SIGNING,
        }
    }
}

/// Which key to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySpec {
    Rsa(u32),
    Ecdsa(Curve),
    Ed25519,
}

impl KeySpec {
    /// Parses an `algorithm` value (`RSA`, `ECDSA`, `ED25519`, any case) with
    /// the RSA size and curve that go with it.
    pub fn parse(
        algorithm: &str,
        field: &str,
        rsa_bits: u32,
        curve: &str,
        curve_field: &str,
    ) -> Result<Self, String> {
        match algorithm.trim().to_ascii_uppercase().as_str() {
            "RSA" => Ok(KeySpec::Rsa(rsa_bits)),
            "ECDSA" | "EC" => Ok(KeySpec::Ecdsa(Curve::parse(curve, curve_field)?)),
            "ED25519" | "EDDSA" => Ok(KeySpec::Ed25519),
            _ => Err(format!(
                "{field} {algorithm:?} is not supported; use RSA, ECDSA or ED25519"
            )),
        }
    }

    /// The name the ancestor reported (`RSA`, `ECDSA`, `ED25519`).
    pub fn algorithm_name(self) -> &'static str {
        match self {
            KeySpec::Rsa(_) => "RSA",
            KeySpec::Ecdsa(_) => "ECDSA",
            KeySpec::Ed25519 => "ED25519",
        }
    }

    pub fn key_size(self) -> u32 {
        match self {
            KeySpec::Rsa(bits) => bits,
            KeySpec::Ecdsa(c) => c.bits(),
            KeySpec::Ed25519 => 256,
        }
    }
}

/// Checks an RSA size against the fixed range, the admin's cap and what the
/// crypto library can generate. `field` is the config key to name.
pub fn check_rsa_bits(field: &str, bits: u32, limits: &Limits) -> Result<(), String> {
    if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) || !bits.is_multiple_of(8) {
        return Err(format!(
            "{field} must be a multiple of 8 from {RSA_MIN_BITS} to {RSA_MAX_BITS}, got {bits}"
        ));
    }
    if bits > limits.max_rsa_bits {
        return Err(format!(
            "{field} {bits} is above this cluster's limit of {} bits (limits.maxRsaBits in the webhook's config)",
            limits.max_rsa_bits
        ));
    }
    if rsa_key_size(bits).is_none() {
        return Err(format!(
            "{field} {bits} is not supported: RSA keys are generated with 2048, 3072, 4096 or 8192 bits"
        ));
    }
    Ok(())
}

fn rsa_key_size(bits: u32) -> Option<KeySize> {
    match bits {
        2048 => Some(KeySize::Rsa2048),
        3072 => Some(KeySize::Rsa3072),
        4096 => Some(KeySize::Rsa4096),
        8192 => Some(KeySize::Rsa8192),
        _ => None,
    }
}

/// A freshly generated signing key pair (RSA, ECDSA or Ed25519).
pub struct KeyMaterial {
    pub spec: KeySpec,
    inner: Inner,
    pkcs8: Zeroizing<Vec<u8>>,
    spki: Vec<u8>,
}

enum Inner {
    Rsa,
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

const GEN_FAILED: &str = "key generation failed in the crypto library";

impl KeyMaterial {
    /// Generates a key. RSA sizes must have passed [`check_rsa_bits`].
    pub fn generate(spec: KeySpec) -> Result<Self, String> {
        match spec {
            KeySpec::Rsa(bits) => {
                let size = rsa_key_size(bits)
                    .ok_or_else(|| format!("RSA size {bits} is not supported"))?;
                let kp = RsaKeyPair::generate(size).map_err(|_| GEN_FAILED.to_owned())?;
                let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&kp)
                    .map_err(|_| GEN_FAILED.to_owned())?;
                let spki: PublicKeyX509Der<'_> = kp
                    .public_key()
                    .as_der()
                    .map_err(|_| GEN_FAILED.to_owned())?;
                Ok(Self {
                    spec,
                    inner: Inner::Rsa,
                    pkcs8: Zeroizing::new(pkcs8.as_ref().to_vec()),
                    spki: spki.as_ref().to_vec(),
                })
            }
            KeySpec::Ecdsa(curve) => {
                let kp =
                    EcdsaKeyPair::generate(curve.signing()).map_err(|_| GEN_FAILED.to_owned())?;
                let pkcs8 = kp.to_pkcs8v1().map_err(|_| GEN_FAILED.to_owned())?;
                let spki: PublicKeyX509Der<'_> = kp
                    .public_key()
                    .as_der()
                    .map_err(|_| GEN_FAILED.to_owned())?;
                Ok(Self {
                    spec,
                    pkcs8: Zeroizing::new(pkcs8.as_ref().to_vec()),
                    spki: spki.as_ref().to_vec(),
                    inner: Inner::Ecdsa(kp),
                })
            }
            KeySpec::Ed25519 => {
                let kp = Ed25519KeyPair::generate().map_err(|_| GEN_FAILED.to_owned())?;
                // v1 (no embedded public key) is what OpenSSL writes and every
                // parser reads.
                let pkcs8 = kp.to_pkcs8v1().map_err(|_| GEN_FAILED.to_owned())?;
                let spki: PublicKeyX509Der<'_> = kp
                    .public_key()
                    .as_der()
                    .map_err(|_| GEN_FAILED.to_owned())?;
                Ok(Self {
                    spec,
                    pkcs8: Zeroizing::new(pkcs8.as_ref().to_vec()),
                    spki: spki.as_ref().to_vec(),
                    inner: Inner::Ed25519(kp),
                })
            }
        }
    }

    /// PKCS#8 v1 DER of the private key.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// SubjectPublicKeyInfo DER of the public key.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// `-----BEGIN PRIVATE KEY-----` (PKCS#8).
    pub fn private_key_pem_pkcs8(&self) -> String {
        pem("PRIVATE KEY", &self.pkcs8)
    }

    /// The traditional form: PKCS#1 `RSA PRIVATE KEY` for RSA, PKCS#8 for the
    /// others (as the Go ancestor's `tls_private_key` wrote them).
    pub fn private_key_pem_traditional(&self) -> Result<String, String> {
        match self.inner {
            Inner::Rsa => {
                let pkcs1 = pkcs8_private_key(&self.pkcs8).ok_or_else(|| GEN_FAILED.to_owned())?;
                Ok(pem("RSA PRIVATE KEY", pkcs1))
            }
            _ => Ok(self.private_key_pem_pkcs8()),
        }
    }

    /// `-----BEGIN PUBLIC KEY-----` (SPKI).
    pub fn public_key_pem(&self) -> String {
        pem("PUBLIC KEY", &self.spki)
    }

    /// The key as rcgen sees it, to sign certificates and CSRs.
    pub fn rcgen_key_pair(&self) -> Result<rcgen::KeyPair, String> {
        let der = PrivateKeyDer::Pkcs8(self.pkcs8.to_vec().into());
        rcgen::KeyPair::try_from(&der)
            .map_err(|_| "the generated key cannot be used for signing".to_owned())
    }

    /// The key as an OpenSSH private key (unencrypted).
    pub fn to_ssh(&self, comment: &str) -> Result<ssh_key::PrivateKey, String> {
        use ssh_key::private::{
            EcdsaKeypair, Ed25519Keypair, Ed25519PrivateKey, KeypairData, RsaKeypair, RsaPrivateKey,
        };
        use ssh_key::public::{Ed25519PublicKey, RsaPublicKey};
        use ssh_key::sec1::EncodedPoint;
        const FAILED: &str = "the key cannot be encoded in OpenSSH format";
        let failed = |_| FAILED.to_owned();
        let data = match &self.inner {
            Inner::Rsa => {
                let pkcs1 = pkcs8_private_key(&self.pkcs8).ok_or_else(|| FAILED.to_owned())?;
                let c = RsaComponents::parse(pkcs1).ok_or_else(|| FAILED.to_owned())?;
                let m = ssh_key::Mpint::from_positive_bytes;
                let public = RsaPublicKey::new(m(c.e), m(c.n)).map_err(failed)?;
                let private =
                    RsaPrivateKey::new(m(c.d), m(c.qinv), m(c.p), m(c.q)).map_err(failed)?;
                KeypairData::Rsa(RsaKeypair::new(public, private).map_err(failed)?)
            }
            Inner::Ecdsa(kp) => {
                let scalar: EcPrivateKeyBin<'_> = kp
                    .private_key()
                    .as_be_bytes()
                    .map_err(|_| FAILED.to_owned())?;
                let scalar = Zeroizing::new(scalar.as_ref().to_vec());
                let point = kp.public_key().as_ref();
                let keypair = match self.spec {
                    KeySpec::Ecdsa(Curve::P256) => EcdsaKeypair::NistP256 {
                        public: EncodedPoint::from_bytes(point).map_err(|_| FAILED.to_owned())?,
                        private: (*fixed::<32>(&scalar)?).into(),
                    },
                    KeySpec::Ecdsa(Curve::P384) => EcdsaKeypair::NistP384 {
                        public: EncodedPoint::from_bytes(point).map_err(|_| FAILED.to_owned())?,
                        private: (*fixed::<48>(&scalar)?).into(),
                    },
                    KeySpec::Ecdsa(Curve::P521) => EcdsaKeypair::NistP521 {
                        public: EncodedPoint::from_bytes(point).map_err(|_| FAILED.to_owned())?,
                        private: (*fixed::<66>(&scalar)?).into(),
                    },
                    _ => return Err(FAILED.to_owned()),
                };
                KeypairData::Ecdsa(keypair)
            }
            Inner::Ed25519(kp) => {
                let seed = kp.seed().map_err(|_| FAILED.to_owned())?;
                let seed: Curve25519SeedBin<'_> =
                    seed.as_be_bytes().map_err(|_| FAILED.to_owned())?;
                let seed = fixed::<32>(seed.as_ref())?;
                let public: [u8; 32] = kp
                    .public_key()
                    .as_ref()
                    .try_into()
                    .map_err(|_| FAILED.to_owned())?;
                KeypairData::Ed25519(Ed25519Keypair {
                    public: Ed25519PublicKey(public),
                    private: Ed25519PrivateKey::from_bytes(&seed),
                })
            }
        };
        ssh_key::PrivateKey::new(data, comment).map_err(failed)
    }
}

fn fixed<const N: usize>(bytes: &[u8]) -> Result<Zeroizing<[u8; N]>, String> {
    let mut out = Zeroizing::new([0u8; N]);
    if bytes.len() > N {
        return Err("unexpected key length".into());
    }
    out[N - bytes.len()..].copy_from_slice(bytes);
    Ok(out)
}

/// The OpenSSH public key line (`ssh-ed25519 AAAA... comment`, no newline)
/// and the SHA-256 (`SHA256:...`) and legacy MD5 (`aa:bb:...`) fingerprints.
pub struct SshPublic {
    pub line: String,
    pub sha256: String,
    pub md5: String,
}

pub fn ssh_public(key: &ssh_key::PrivateKey) -> Result<SshPublic, String> {
    let public = key.public_key();
    let line = public
        .to_openssh()
        .map_err(|_| "the public key cannot be encoded in OpenSSH format".to_owned())?;
    let blob = public
        .to_bytes()
        .map_err(|_| "the public key cannot be encoded in OpenSSH format".to_owned())?;
    let sha256 = format!(
        "SHA256:{}",
        BASE64_NOPAD.encode(&sha2::Sha256::digest(&blob))
    );
    let md5 = md5::Md5::digest(&blob)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    Ok(SshPublic { line, sha256, md5 })
}

/// PEM-encodes DER with the given label, 64 columns, trailing newline.
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = Zeroizing::new(BASE64.encode(der));
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

// ---------------------------------------------------------------------------
// Minimal DER reading: only what is needed to take PKCS#8 and PKCS#1 apart.

/// Reads one TLV; returns (tag, content, rest).
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

fn der_expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, content, rest) = der_tlv(input)?;
    (t == tag).then_some((content, rest))
}

/// True when `der` is exactly one DER SEQUENCE (a structural sanity check
/// for key blobs whose algorithm this webhook does not need to understand).
pub fn is_der_sequence(der: &[u8]) -> bool {
    matches!(der_tlv(der), Some((0x30, _, rest)) if rest.is_empty())
}

/// The `privateKey` OCTET STRING content of a PKCS#8 `PrivateKeyInfo`.
pub fn pkcs8_private_key(pkcs8: &[u8]) -> Option<&[u8]> {
    let (seq, _) = der_expect(pkcs8, 0x30)?;
    let (_version, rest) = der_expect(seq, 0x02)?;
    let (_alg, rest) = der_expect(rest, 0x30)?;
    let (key, _) = der_expect(rest, 0x04)?;
    Some(key)
}

/// The integers of a PKCS#1 `RSAPrivateKey` (big-endian, as in the DER).
struct RsaComponents<'a> {
    n: &'a [u8],
    e: &'a [u8],
    d: &'a [u8],
    p: &'a [u8],
    q: &'a [u8],
    qinv: &'a [u8],
}

impl<'a> RsaComponents<'a> {
    fn parse(pkcs1: &'a [u8]) -> Option<Self> {
        let (seq, _) = der_expect(pkcs1, 0x30)?;
        let mut ints = Vec::with_capacity(9);
        let mut rest = seq;
        while !rest.is_empty() && ints.len() < 9 {
            let (int, r) = der_expect(rest, 0x02)?;
            ints.push(int);
            rest = r;
        }
        if ints.len() != 9 {
            return None;
        }
        Some(Self {
            n: ints[1],
            e: ints[2],
            d: ints[3],
            p: ints[4],
            q: ints[5],
            qinv: ints[8],
        })
    }
}

// ---------------------------------------------------------------------------
// Reading what earlier generators (or Secret authors) produced.

/// A private key read from PEM (PKCS#8, PKCS#1 or SEC1).
pub struct LoadedKey {
    pub key_pair: rcgen::KeyPair,
}

impl LoadedKey {
    /// `field` names the config key (or Secret key) in errors.
    pub fn from_pem(text: &str, field: &str) -> Result<Self, String> {
        let der = PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|_| {
            format!("{field} is not a PEM private key (expected PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)")
        })?;
        let key_pair = rcgen::KeyPair::try_from(&der).map_err(|_| {
            format!(
                "{field} is not a usable private key (supported: RSA 2048–8192 bits, ECDSA P256/P384/P521, Ed25519)"
            )
        })?;
        Ok(Self { key_pair })
    }

    /// `RSA`, `ECDSA` or `ED25519`.
    pub fn algorithm_name(&self) -> &'static str {
        key_pair_algorithm_name(&self.key_pair)
    }

    /// The raw public key (the SPKI's BIT STRING content).
    pub fn public_key_raw(&self) -> &[u8] {
        self.key_pair.public_key_raw()
    }
}

pub fn key_pair_algorithm_name(kp: &rcgen::KeyPair) -> &'static str {
    let alg = kp.algorithm();
    if alg == &rcgen::PKCS_ED25519 {
        "ED25519"
    } else if alg == &rcgen::PKCS_ECDSA_P256_SHA256
        || alg == &rcgen::PKCS_ECDSA_P384_SHA384
        || alg == &rcgen::PKCS_ECDSA_P521_SHA512
        || alg == &rcgen::PKCS_ECDSA_P521_SHA384
        || alg == &rcgen::PKCS_ECDSA_P521_SHA256
    {
        "ECDSA"
    } else {
        "RSA"
    }
}

/// The DER certificates of a PEM bundle, in order. `field` names the key.
pub fn certificates_from_pem(
    text: &str,
    field: &str,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{field} is not valid PEM"))?;
    if certs.is_empty() {
        return Err(format!("{field} holds no PEM CERTIFICATE"));
    }
    Ok(certs)
}

/// Parses one DER certificate. `field` names where it came from.
pub fn parse_certificate<'a>(der: &'a [u8], field: &str) -> Result<X509Certificate<'a>, String> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        _ => Err(format!("{field} is not a valid X.509 certificate")),
    }
}

/// Verifies a signature made by the key in `signer` over `data` (a
/// certificate's TBS or a CSR's info). Covers RSA PKCS#1 v1.5 / PSS, ECDSA on
/// P-256/P-384/P-521 with SHA-2, and Ed25519.
pub fn verify_signature(
    signer: &SubjectPublicKeyInfo<'_>,
    algorithm: &AlgorithmIdentifier<'_>,
    signature_value: &BitString<'_>,
    data: &[u8],
) -> Result<(), String> {
    use oid_registry::*;
    let oid = &algorithm.algorithm;
    let curve = signer
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    let ecdsa = |sha: u32| -> Option<&'static dyn signature::VerificationAlgorithm> {
        let curve = curve.as_ref()?;
        let alg: &'static signature::EcdsaVerificationAlgorithm = if *curve == OID_EC_P256 {
            match sha {
                256 => &signature::ECDSA_P256_SHA256_ASN1,
                384 => &signature::ECDSA_P256_SHA384_ASN1,
                _ => &signature::ECDSA_P256_SHA512_ASN1,
            }
        } else if *curve == OID_NIST_EC_P384 {
            match sha {
                256 => &signature::ECDSA_P384_SHA256_ASN1,
                384 => &signature::ECDSA_P384_SHA384_ASN1,
                _ => &signature::ECDSA_P384_SHA512_ASN1,
            }
        } else if *curve == OID_NIST_EC_P521 {
            match sha {
                256 => &signature::ECDSA_P521_SHA256_ASN1,
                384 => &signature::ECDSA_P521_SHA384_ASN1,
                _ => &signature::ECDSA_P521_SHA512_ASN1,
            }
        } else {
            return None;
        };
        Some(alg)
    };
    let alg: Option<&'static dyn signature::VerificationAlgorithm> =
        if *oid == OID_PKCS1_SHA256WITHRSA {
            Some(&signature::RSA_PKCS1_2048_8192_SHA256)
        } else if *oid == OID_PKCS1_SHA384WITHRSA {
            Some(&signature::RSA_PKCS1_2048_8192_SHA384)
        } else if *oid == OID_PKCS1_SHA512WITHRSA {
            Some(&signature::RSA_PKCS1_2048_8192_SHA512)
        } else if *oid == OID_SIG_ECDSA_WITH_SHA256 {
            ecdsa(256)
        } else if *oid == OID_SIG_ECDSA_WITH_SHA384 {
            ecdsa(384)
        } else if *oid == OID_SIG_ECDSA_WITH_SHA512 {
            ecdsa(512)
        } else if *oid == OID_SIG_ED25519 {
            Some(&signature::ED25519)
        } else {
            None
        };
    match alg {
        Some(alg) => signature::UnparsedPublicKey::new(alg, &signer.subject_public_key.data)
            .verify(data, &signature_value.data)
            .map_err(|_| "signature does not verify".to_owned()),
        None => {
            // RSA-PSS and the rest: x509-parser knows the parameters.
            x509_parser::verify::verify_signature(signer, algorithm, signature_value, data).map_err(
                |e| match e {
                    x509_parser::error::X509Error::SignatureUnsupportedAlgorithm => {
                        "signature algorithm is not supported".to_owned()
                    }
                    _ => "signature does not verify".to_owned(),
                },
            )
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn curves_parse_in_common_spellings() {
        assert_eq!(Curve::parse("p-256", "curve").unwrap(), Curve::P256);
        assert_eq!(Curve::parse("secp384r1", "curve").unwrap(), Curve::P384);
        assert_eq!(Curve::parse("P521", "curve").unwrap(), Curve::P521);
        assert!(Curve::parse("P224", "curve").unwrap_err().contains("P224"));
        assert!(
            Curve::parse("K-163", "ecdsa_curve")
                .unwrap_err()
                .contains("ecdsa_curve")
        );
    }

    #[test]
    fn rsa_bits_are_checked_against_range_cap_and_library() {
        let limits = Limits::default();
        assert!(check_rsa_bits("key_size", 2048, &limits).is_ok());
        assert!(
            check_rsa_bits("key_size", 100_000, &limits)
                .unwrap_err()
                .contains("2048 to 8192")
        );
        assert!(
            check_rsa_bits("key_size", 2050, &limits)
                .unwrap_err()
                .contains("multiple of 8")
        );
        let err = check_rsa_bits("key_size", 8192, &limits).unwrap_err();
        assert!(err.contains("limit of 4096"), "{err}");
        let err = check_rsa_bits("key_size", 2056, &limits).unwrap_err();
        assert!(err.contains("3072"), "{err}");
    }

    #[test]
    fn pem_wraps_at_64_columns() {
        let p = pem("TEST", &[0u8; 100]);
        let lines: Vec<&str> = p.lines().collect();
        assert_eq!(lines[0], "-----BEGIN TEST-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines.last().copied(), Some("-----END TEST-----"));
    }

    #[test]
    fn der_reader_rejects_truncation() {
        assert!(der_tlv(&[0x30, 0x05, 0x01]).is_none());
        assert!(der_tlv(&[0x30, 0x82, 0x01]).is_none());
        assert_eq!(
            der_tlv(&[0x04, 0x01, 0xaa, 0xbb]),
            Some((0x04, &[0xaa][..], &[0xbb][..]))
        );
    }
}
