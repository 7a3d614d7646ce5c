//! X.509: private keys, self-signed certificates, CSRs and certificates
//! signed by a CA from an earlier generator (or the manifest).
//!
//! Chaining (`key_pem: "{{ key.private_key_pem }}"`) is what makes these
//! useful together: the pipeline renders string config values with the
//! outputs of the generators before.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Deserializer};
use time::{Duration, OffsetDateTime};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

use super::keys::{self, KeyMaterial, KeySpec, LoadedKey};
use super::{Generator, Limits, rfc3339};
use crate::secret::Outputs;

/// Longest certificate validity accepted (100 years).
pub const MAX_VALIDITY_DAYS: i64 = 36_500;
pub const MAX_VALIDITY_HOURS: i64 = MAX_VALIDITY_DAYS * 24;
/// Most SANs in one certificate or request.
pub const MAX_SANS: usize = 100;

/// Accepts `organization: Acme` as well as `organization: [Acme]`.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string or a list of strings")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(vec![v.to_owned()])
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element::<String>()? {
                out.push(s);
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

/// The subject fields a certificate or request may set.
struct Subject<'a> {
    common_name: &'a str,
    organization: &'a [String],
    organizational_unit: &'a [String],
    country: &'a [String],
    province: &'a [String],
    locality: &'a [String],
}

impl Subject<'_> {
    fn distinguished_name(&self) -> Result<DistinguishedName, String> {
        let mut dn = DistinguishedName::new();
        if !self.common_name.is_empty() {
            dn.push(DnType::CommonName, self.common_name);
        }
        for (field, ty, values) in [
            ("organization", DnType::OrganizationName, self.organization),
            (
                "organizational_unit",
                DnType::OrganizationalUnitName,
                self.organizational_unit,
            ),
            ("country", DnType::CountryName, self.country),
            ("province", DnType::StateOrProvinceName, self.province),
            ("locality", DnType::LocalityName, self.locality),
        ] {
            match values {
                [] => {}
                [one] if one.is_empty() => {}
                [one] => dn.push(ty, one.as_str()),
                _ => {
                    return Err(format!(
                        "{field}: at most one value is supported, got {}",
                        values.len()
                    ));
                }
            }
        }
        Ok(dn)
    }
}

/// SANs from `dns_names` and `ip_addresses`.
fn subject_alt_names(
    dns_names: &[String],
    ip_addresses: &[String],
) -> Result<Vec<SanType>, String> {
    if dns_names.len() + ip_addresses.len() > MAX_SANS {
        return Err(format!(
            "at most {MAX_SANS} dns_names and ip_addresses together"
        ));
    }
    let mut sans = Vec::with_capacity(dns_names.len() + ip_addresses.len());
    for name in dns_names {
        if name.is_empty()
            || name.len() > 253
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '*' | '_'))
        {
            return Err(format!("dns_names: {name:?} is not a DNS name"));
        }
        let ia5 = name
            .as_str()
            .try_into()
            .map_err(|_| format!("dns_names: {name:?} is not a DNS name"))?;
        sans.push(SanType::DnsName(ia5));
    }
    for ip in ip_addresses {
        let addr: IpAddr = ip
            .trim()
            .parse()
            .map_err(|_| format!("ip_addresses: {ip:?} is not an IP address"))?;
        sans.push(SanType::IpAddress(addr));
    }
    Ok(sans)
}

/// Key usages by the names Terraform's `tls` provider uses.
fn parse_uses(
    uses: &[String],
) -> Result<(Vec<KeyUsagePurpose>, Vec<ExtendedKeyUsagePurpose>), String> {
    let mut ku = Vec::new();
    let mut eku = Vec::new();
    for u in uses {
        match u.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "digital_signature" => ku.push(KeyUsagePurpose::DigitalSignature),
            "content_commitment" | "non_repudiation" => ku.push(KeyUsagePurpose::ContentCommitment),
            "key_encipherment" => ku.push(KeyUsagePurpose::KeyEncipherment),
            "data_encipherment" => ku.push(KeyUsagePurpose::DataEncipherment),
            "key_agreement" => ku.push(KeyUsagePurpose::KeyAgreement),
            "cert_signing" => ku.push(KeyUsagePurpose::KeyCertSign),
            "crl_signing" => ku.push(KeyUsagePurpose::CrlSign),
            "encipher_only" => ku.push(KeyUsagePurpose::EncipherOnly),
            "decipher_only" => ku.push(KeyUsagePurpose::DecipherOnly),
            "server_auth" => eku.push(ExtendedKeyUsagePurpose::ServerAuth),
            "client_auth" => eku.push(ExtendedKeyUsagePurpose::ClientAuth),
            "code_signing" => eku.push(ExtendedKeyUsagePurpose::CodeSigning),
            "email_protection" => eku.push(ExtendedKeyUsagePurpose::EmailProtection),
            "timestamping" | "time_stamping" => eku.push(ExtendedKeyUsagePurpose::TimeStamping),
            "ocsp_signing" => eku.push(ExtendedKeyUsagePurpose::OcspSigning),
            "any_extended" => eku.push(ExtendedKeyUsagePurpose::Any),
            _ => {
                return Err(format!(
                    "allowed_uses: {u:?} is not one of digital_signature, content_commitment, key_encipherment, data_encipherment, key_agreement, cert_signing, crl_signing, encipher_only, decipher_only, server_auth, client_auth, code_signing, email_protection, timestamping, ocsp_signing, any_extended"
                ));
            }
        }
    }
    ku.dedup();
    eku.dedup();
    Ok((ku, eku))
}

/// The key usages of a certificate: `allowed_uses` when given, else the
/// defaults. A CA always gets `cert_signing` (keyCertSign): without it the
/// CA flag is useless, since no verifier accepts what it signs.
fn key_uses(
    allowed: Option<&[String]>,
    is_ca: bool,
    rsa: bool,
) -> Result<(Vec<KeyUsagePurpose>, Vec<ExtendedKeyUsagePurpose>), String> {
    let (mut ku, eku) = match allowed {
        Some(uses) => parse_uses(uses)?,
        None => default_uses(is_ca, rsa),
    };
    if is_ca && !ku.contains(&KeyUsagePurpose::KeyCertSign) {
        ku.insert(0, KeyUsagePurpose::KeyCertSign);
    }
    Ok((ku, eku))
}

/// Key usages when `allowed_uses` is absent: what the Go ancestor set for a
/// leaf (keyEncipherment only for RSA, where it means something), or the CA
/// set for a CA.
fn default_uses(is_ca: bool, rsa: bool) -> (Vec<KeyUsagePurpose>, Vec<ExtendedKeyUsagePurpose>) {
    if is_ca {
        (
            vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ],
            Vec::new(),
        )
    } else {
        let mut ku = vec![KeyUsagePurpose::DigitalSignature];
        if rsa {
            ku.push(KeyUsagePurpose::KeyEncipherment);
        }
        (ku, vec![ExtendedKeyUsagePurpose::ServerAuth])
    }
}

/// A random, positive, 128-bit serial number.
fn random_serial() -> SerialNumber {
    use rand::RngExt;
    let mut bytes = [0u8; 16];
    rand::rng().fill(&mut bytes);
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(0).unwrap_or(t)
}

fn validity_outputs(out: Outputs, start: OffsetDateTime, end: OffsetDateTime) -> Outputs {
    out.with("validity_start_time", rfc3339(start))
        .with("validity_end_time", rfc3339(end))
        .with("ready_for_renewal", "false")
}

fn rcgen_error(what: &str, e: &rcgen::Error) -> String {
    format!("{what}: {e}")
}

// --- tls_private_key -------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivateKeyConfig {
    /// RSA (default, as the ancestor), ECDSA or ED25519.
    pub algorithm: String,
    pub rsa_bits: u32,
    pub ecdsa_curve: String,
}

impl Default for PrivateKeyConfig {
    fn default() -> Self {
        Self {
            algorithm: "RSA".into(),
            rsa_bits: 2048,
            ecdsa_curve: "P256".into(),
        }
    }
}

impl PrivateKeyConfig {
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

pub struct TlsPrivateKey;

impl Generator for TlsPrivateKey {
    const TYPE: &'static str = "tls_private_key";
    const EXPENSIVE: bool = true;
    type Config = PrivateKeyConfig;

    fn validate(config: &PrivateKeyConfig, limits: &Limits) -> Result<(), String> {
        config.spec(limits).map(|_| ())
    }

    fn generate(config: &PrivateKeyConfig, limits: &Limits) -> Result<Outputs, String> {
        let spec = config.spec(limits)?;
        let key = KeyMaterial::generate(spec)?;
        let ssh = key.to_ssh("")?;
        let public = keys::ssh_public(&ssh)?;
        let openssh_private = ssh
            .to_openssh(ssh_key::LineEnding::LF)
            .map_err(|_| "the key cannot be encoded in OpenSSH format".to_owned())?;
        let mut out = Outputs::new()
            .with("private_key_pem", key.private_key_pem_traditional()?)
            .with("private_key_pem_pkcs8", key.private_key_pem_pkcs8())
            .with("private_key_openssh", openssh_private.as_str())
            .with("public_key_pem", key.public_key_pem())
            .with("public_key_openssh", format!("{}\n", public.line))
            .with("public_key_fingerprint_sha256", public.sha256)
            .with("public_key_fingerprint_md5", public.md5)
            .with("algorithm", spec.algorithm_name());
        if let KeySpec::Ecdsa(curve) = spec {
            out.insert("ecdsa_curve", curve.name());
        }
        if let KeySpec::Rsa(bits) = spec {
            out.insert("rsa_bits", bits);
        }
        Ok(out)
    }
}

// --- tls_self_signed_cert ----------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelfSignedConfig {
    /// A key from an earlier generator; absent: the generator makes one.
    pub key_pem: String,
    /// For a key made here: RSA (default), ECDSA or ED25519.
    pub key_algorithm: Option<String>,
    /// For a key made here: RSA bits (default 2048).
    pub key_size: Option<u32>,
    /// For a key made here: ECDSA curve (default P256).
    pub ecdsa_curve: Option<String>,
    pub common_name: String,
    #[serde(deserialize_with = "one_or_many")]
    pub dns_names: Vec<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub ip_addresses: Vec<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub organization: Vec<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub organizational_unit: Vec<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub country: Vec<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub province: Vec<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub locality: Vec<String>,
    pub validity_days: i64,
    pub is_ca: bool,
    /// Key usages; default: server leaf usages, or CA usages with `is_ca`.
    pub allowed_uses: Option<Vec<String>>,
}

impl Default for SelfSignedConfig {
    fn default() -> Self {
        Self {
            key_pem: String::new(),
            key_algorithm: None,
            key_size: None,
            ecdsa_curve: None,
            common_name: "localhost".into(),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            organization: Vec::new(),
            organizational_unit: Vec::new(),
            country: Vec::new(),
            province: Vec::new(),
            locality: Vec::new(),
            validity_days: 365,
            is_ca: false,
            allowed_uses: None,
        }
    }
}

impl SelfSignedConfig {
    fn subject(&self) -> Subject<'_> {
        Subject {
            common_name: &self.common_name,
            organization: &self.organization,
            organizational_unit: &self.organizational_unit,
            country: &self.country,
            province: &self.province,
            locality: &self.locality,
        }
    }

    /// The key to make when `key_pem` is absent.
    fn own_key_spec(&self, limits: &Limits) -> Result<Option<KeySpec>, String> {
        if !self.key_pem.trim().is_empty() {
            if self.key_algorithm.is_some() || self.key_size.is_some() || self.ecdsa_curve.is_some()
            {
                return Err(
                    "key_algorithm, key_size and ecdsa_curve apply only when key_pem is absent"
                        .into(),
                );
            }
            return Ok(None);
        }
        let spec = KeySpec::parse(
            self.key_algorithm.as_deref().unwrap_or("RSA"),
            "key_algorithm",
            self.key_size.unwrap_or(2048),
            self.ecdsa_curve.as_deref().unwrap_or("P256"),
            "ecdsa_curve",
        )?;
        if let KeySpec::Rsa(bits) = spec {
            keys::check_rsa_bits("key_size", bits, limits)?;
        }
        Ok(Some(spec))
    }
}

pub struct TlsSelfSignedCert;

impl Generator for TlsSelfSignedCert {
    const TYPE: &'static str = "tls_self_signed_cert";
    const EXPENSIVE: bool = true;
    type Config = SelfSignedConfig;

    fn validate(config: &SelfSignedConfig, limits: &Limits) -> Result<(), String> {
        if config.validity_days <= 0 || config.validity_days > MAX_VALIDITY_DAYS {
            return Err(format!(
                "validity_days must be from 1 to {MAX_VALIDITY_DAYS}, got {}",
                config.validity_days
            ));
        }
        config.own_key_spec(limits)?;
        config.subject().distinguished_name()?;
        subject_alt_names(&config.dns_names, &config.ip_addresses)?;
        if let Some(uses) = &config.allowed_uses {
            parse_uses(uses)?;
        }
        Ok(())
    }

    fn generate(config: &SelfSignedConfig, limits: &Limits) -> Result<Outputs, String> {
        let (key_pair, private_key_pem, algorithm) = match config.own_key_spec(limits)? {
            Some(spec) => {
                let key = KeyMaterial::generate(spec)?;
                (
                    key.rcgen_key_pair()?,
                    key.private_key_pem_traditional()?,
                    spec.algorithm_name(),
                )
            }
            None => {
                let loaded = LoadedKey::from_pem(&config.key_pem, "key_pem")?;
                let algorithm = loaded.algorithm_name();
                (loaded.key_pair, config.key_pem.clone(), algorithm)
            }
        };
        let mut sans = subject_alt_names(&config.dns_names, &config.ip_addresses)?;
        if sans.is_empty() && !config.is_ca && !config.common_name.is_empty() {
            // As the ancestor: a leaf without SANs is valid for its CN.
            if let Ok(mut cn_san) =
                subject_alt_names(std::slice::from_ref(&config.common_name), &[])
            {
                sans.append(&mut cn_san);
            }
        }
        let (key_usages, extended_key_usages) = key_uses(
            config.allowed_uses.as_deref(),
            config.is_ca,
            algorithm == "RSA",
        )?;
        let start = now();
        let end = start + Duration::days(config.validity_days);
        let mut params = CertificateParams::default();
        params.distinguished_name = config.subject().distinguished_name()?;
        params.subject_alt_names = sans;
        params.not_before = start;
        params.not_after = end;
        params.serial_number = Some(random_serial());
        params.key_usages = key_usages;
        params.extended_key_usages = extended_key_usages;
        params.is_ca = if config.is_ca {
            IsCa::Ca(BasicConstraints::Unconstrained)
        } else {
            IsCa::ExplicitNoCa
        };
        let cert = params
            .self_signed(&key_pair)
            .map_err(|e| rcgen_error("cannot make the certificate", &e))?;
        let out = Outputs::new()
            .with("cert_pem", cert.pem())
            .with("private_key_pem", private_key_pem)
            .with("key_algorithm", algorithm);
        Ok(validity_outputs(out, start, end))
    }
}

// --- tls_cert_request ----------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CertRequestConfig {
    pub private_key_pem: String,
    pub common_name: String,
    #[serde(deserialize_with = "one_or_many")]
    pub dns_names: Vec<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub ip_addresses: Vec<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub organization: Vec<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub organizational_unit: Vec<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub country: Vec<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub province: Vec<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub locality: Vec<String>,
}

impl CertRequestConfig {
    fn subject(&self) -> Subject<'_> {
        Subject {
            common_name: &self.common_name,
            organization: &self.organization,
            organizational_unit: &self.organizational_unit,
            country: &self.country,
            province: &self.province,
            locality: &self.locality,
        }
    }
}

pub struct TlsCertRequest;

impl Generator for TlsCertRequest {
    const TYPE: &'static str = "tls_cert_request";
    const EXPENSIVE: bool = true;
    type Config = CertRequestConfig;

    fn validate(config: &CertRequestConfig, _: &Limits) -> Result<(), String> {
        if config.private_key_pem.trim().is_empty() {
            return Err(
                "private_key_pem is required (e.g. private_key_pem: \"{{ key.private_key_pem }}\")"
                    .into(),
            );
        }
        config.subject().distinguished_name()?;
        subject_alt_names(&config.dns_names, &config.ip_addresses)?;
        Ok(())
    }

    fn generate(config: &CertRequestConfig, _: &Limits) -> Result<Outputs, String> {
        let key = LoadedKey::from_pem(&config.private_key_pem, "private_key_pem")?;
        let mut params = CertificateParams::default();
        params.distinguished_name = config.subject().distinguished_name()?;
        params.subject_alt_names = subject_alt_names(&config.dns_names, &config.ip_addresses)?;
        let csr = params
            .serialize_request(&key.key_pair)
            .map_err(|e| rcgen_error("cannot make the request", &e))?;
        let pem = csr
            .pem()
            .map_err(|e| rcgen_error("cannot encode the request", &e))?;
        Ok(Outputs::new()
            .with("cert_request_pem", pem)
            .with("key_algorithm", key.algorithm_name()))
    }
}

// --- tls_locally_signed_cert ----------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocallySignedConfig {
    pub cert_request_pem: String,
    pub ca_private_key_pem: String,
    pub ca_cert_pem: String,
    pub validity_period_hours: i64,
    /// Makes an intermediate CA instead of a leaf.
    pub is_ca: bool,
    /// Key usages; default: server leaf usages, or CA usages with `is_ca`.
    pub allowed_uses: Option<Vec<String>>,
}

impl Default for LocallySignedConfig {
    fn default() -> Self {
        Self {
            cert_request_pem: String::new(),
            ca_private_key_pem: String::new(),
            ca_cert_pem: String::new(),
            validity_period_hours: 8760,
            is_ca: false,
            allowed_uses: None,
        }
    }
}

/// The CSR's subject, as rcgen wants it. Multi-valued RDNs keep their
/// attributes in order.
fn dn_from_name(name: &X509Name<'_>) -> Result<DistinguishedName, String> {
    use x509_parser::der_parser::asn1_rs::Tag;
    let mut dn = DistinguishedName::new();
    for attr in name.iter_attributes() {
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or_else(|| {
                "cert_request_pem: the request's subject has an unreadable attribute type"
                    .to_owned()
            })?
            .collect();
        let value = attr.as_str().map_err(|_| {
            "cert_request_pem: the request's subject has a non-text attribute".to_owned()
        })?;
        let value = match attr.attr_value().header.tag() {
            Tag::PrintableString => value
                .try_into()
                .map(DnValue::PrintableString)
                .unwrap_or_else(|_| DnValue::Utf8String(value.to_owned())),
            _ => DnValue::Utf8String(value.to_owned()),
        };
        dn.push(DnType::from_oid(&oid), value);
    }
    Ok(dn)
}

/// The SANs the CSR asks for (DNS, IP, URI, e-mail).
fn requested_sans(csr: &X509CertificationRequest<'_>) -> Result<Vec<SanType>, String> {
    let mut sans = Vec::new();
    let Some(exts) = csr.requested_extensions() else {
        return Ok(sans);
    };
    for ext in exts {
        let ParsedExtension::SubjectAlternativeName(san) = ext else {
            continue;
        };
        for name in &san.general_names {
            let bad = || {
                "cert_request_pem: the request has a malformed subject alternative name".to_owned()
            };
            match name {
                GeneralName::DNSName(s) => {
                    sans.push(SanType::DnsName((*s).try_into().map_err(|_| bad())?))
                }
                GeneralName::URI(s) => sans.push(SanType::URI((*s).try_into().map_err(|_| bad())?)),
                GeneralName::RFC822Name(s) => {
                    sans.push(SanType::Rfc822Name((*s).try_into().map_err(|_| bad())?))
                }
                GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => IpAddr::from(<[u8; 4]>::try_from(*b).map_err(|_| bad())?),
                        16 => IpAddr::from(<[u8; 16]>::try_from(*b).map_err(|_| bad())?),
                        _ => return Err(bad()),
                    };
                    sans.push(SanType::IpAddress(ip));
                }
                _ => {}
            }
        }
    }
    if sans.len() > MAX_SANS {
        return Err(format!(
            "cert_request_pem: the request asks for more than {MAX_SANS} names"
        ));
    }
    Ok(sans)
}

pub struct TlsLocallySignedCert;

impl Generator for TlsLocallySignedCert {
    const TYPE: &'static str = "tls_locally_signed_cert";
    const EXPENSIVE: bool = true;
    type Config = LocallySignedConfig;

    fn validate(config: &LocallySignedConfig, _: &Limits) -> Result<(), String> {
        for (field, value) in [
            ("cert_request_pem", &config.cert_request_pem),
            ("ca_private_key_pem", &config.ca_private_key_pem),
            ("ca_cert_pem", &config.ca_cert_pem),
        ] {
            if value.trim().is_empty() {
                return Err(format!("{field} is required"));
            }
        }
        if config.validity_period_hours <= 0 || config.validity_period_hours > MAX_VALIDITY_HOURS {
            return Err(format!(
                "validity_period_hours must be from 1 to {MAX_VALIDITY_HOURS}, got {}",
                config.validity_period_hours
            ));
        }
        if let Some(uses) = &config.allowed_uses {
            parse_uses(uses)?;
        }
        Ok(())
    }

    fn generate(config: &LocallySignedConfig, _: &Limits) -> Result<Outputs, String> {
        // The request: parse and check it was signed by the key it carries.
        let csr_der =
            CertificateSigningRequestDer::from_pem_slice(config.cert_request_pem.as_bytes())
                .map_err(|_| "cert_request_pem is not a PEM CERTIFICATE REQUEST".to_owned())?;
        let csr = match X509CertificationRequest::from_der(&csr_der) {
            Ok(([], csr)) => csr,
            _ => return Err("cert_request_pem is not a valid certificate request".into()),
        };
        let info = &csr.certification_request_info;
        keys::verify_signature(
            &info.subject_pki,
            &csr.signature_algorithm,
            &csr.signature_value,
            info.raw,
        )
        .map_err(|e| format!("cert_request_pem: the request's {e}"))?;

        // The CA: key and certificate must belong together, and the
        // certificate must be a CA that is valid now.
        let ca_key = LoadedKey::from_pem(&config.ca_private_key_pem, "ca_private_key_pem")?;
        let ca_certs = keys::certificates_from_pem(&config.ca_cert_pem, "ca_cert_pem")?;
        let ca_der = &ca_certs[0];
        let ca = keys::parse_certificate(ca_der, "ca_cert_pem")?;
        if ca.public_key().subject_public_key.data.as_ref() != ca_key.public_key_raw() {
            return Err("ca_private_key_pem does not match the public key of ca_cert_pem".into());
        }
        let is_ca = ca
            .basic_constraints()
            .map_err(|_| "ca_cert_pem has a malformed basicConstraints extension".to_owned())?
            .is_some_and(|bc| bc.value.ca);
        if !is_ca {
            return Err(
                "ca_cert_pem is not a CA certificate (basicConstraints CA is not set)".into(),
            );
        }
        let key_usage = ca
            .key_usage()
            .map_err(|_| "ca_cert_pem has a malformed keyUsage extension".to_owned())?;
        if let Some(ku) = key_usage
            && !ku.value.key_cert_sign()
        {
            return Err(
                "ca_cert_pem may not sign certificates (keyUsage lacks keyCertSign)".into(),
            );
        }
        if !ca.validity().is_valid() {
            return Err(format!(
                "ca_cert_pem is not valid now (valid from {} to {})",
                ca.validity().not_before,
                ca.validity().not_after
            ));
        }
        let ca_algorithm = ca_key.algorithm_name();

        let leaf_key =
            rcgen::SubjectPublicKeyInfo::from_der(info.subject_pki.raw).map_err(|_| {
                "cert_request_pem: the request's public key type is not supported".to_owned()
            })?;
        let leaf_is_rsa = info.subject_pki.algorithm.algorithm
            == x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION;
        let (key_usages, extended_key_usages) =
            key_uses(config.allowed_uses.as_deref(), config.is_ca, leaf_is_rsa)?;
        let start = now();
        let end = start + Duration::hours(config.validity_period_hours);
        let mut params = CertificateParams::default();
        params.distinguished_name = dn_from_name(&info.subject)?;
        params.subject_alt_names = requested_sans(&csr)?;
        params.not_before = start;
        params.not_after = end;
        params.serial_number = Some(random_serial());
        params.key_usages = key_usages;
        params.extended_key_usages = extended_key_usages;
        params.use_authority_key_identifier_extension = true;
        params.is_ca = if config.is_ca {
            IsCa::Ca(BasicConstraints::Unconstrained)
        } else {
            IsCa::ExplicitNoCa
        };
        let issuer = Issuer::from_ca_cert_der(ca_der, &ca_key.key_pair)
            .map_err(|e| rcgen_error("ca_cert_pem cannot be used as an issuer", &e))?;
        let cert = params
            .signed_by(&leaf_key, &issuer)
            .map_err(|e| rcgen_error("cannot sign the certificate", &e))?;
        let out = Outputs::new()
            .with("cert_pem", cert.pem())
            .with("ca_key_algorithm", ca_algorithm);
        Ok(validity_outputs(out, start, end))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_can_always_sign_certificates() {
        let only = vec!["digital_signature".to_owned()];
        let (ku, _) = key_uses(Some(&only), true, false).unwrap();
        assert!(ku.contains(&KeyUsagePurpose::KeyCertSign), "{ku:?}");
        assert!(ku.contains(&KeyUsagePurpose::DigitalSignature), "{ku:?}");
        let (ku, _) = key_uses(Some(&only), false, false).unwrap();
        assert_eq!(ku, vec![KeyUsagePurpose::DigitalSignature]);
        let (ku, _) = key_uses(None, true, true).unwrap();
        assert!(ku.contains(&KeyUsagePurpose::KeyCertSign), "{ku:?}");
    }

    #[test]
    fn subject_fields_take_one_value() {
        let c: SelfSignedConfig = super::super::parse_config(
            &serde_json::json!({"organization": "Acme", "country": ["DE"]}),
        )
        .unwrap();
        assert_eq!(c.organization, vec!["Acme"]);
        assert!(c.subject().distinguished_name().is_ok());
        let c: SelfSignedConfig =
            super::super::parse_config(&serde_json::json!({"organization": ["A", "B"]})).unwrap();
        assert!(
            c.subject()
                .distinguished_name()
                .unwrap_err()
                .contains("organization")
        );
    }

    #[test]
    fn sans_are_validated() {
        assert!(
            subject_alt_names(&["a.example".into()], &["10.0.0.1".into(), "::1".into()]).is_ok()
        );
        assert!(
            subject_alt_names(&["bad name".into()], &[])
                .unwrap_err()
                .contains("dns_names")
        );
        assert!(
            subject_alt_names(&[], &["999.1.1.1".into()])
                .unwrap_err()
                .contains("ip_addresses")
        );
    }

    #[test]
    fn uses_are_named_like_terraform() {
        let (ku, eku) = parse_uses(&["digital_signature".into(), "client_auth".into()]).unwrap();
        assert_eq!(ku, vec![KeyUsagePurpose::DigitalSignature]);
        assert_eq!(eku, vec![ExtendedKeyUsagePurpose::ClientAuth]);
        assert!(parse_uses(&["fly".into()]).unwrap_err().contains("fly"));
    }

    #[test]
    fn validity_must_be_positive() {
        let c = SelfSignedConfig {
            validity_days: 0,
            ..Default::default()
        };
        assert!(
            TlsSelfSignedCert::validate(&c, &Limits::default())
                .unwrap_err()
                .contains("validity_days")
        );
        let c = LocallySignedConfig {
            cert_request_pem: "x".into(),
            ca_private_key_pem: "x".into(),
            ca_cert_pem: "x".into(),
            validity_period_hours: -1,
            ..Default::default()
        };
        assert!(
            TlsLocallySignedCert::validate(&c, &Limits::default())
                .unwrap_err()
                .contains("validity_period_hours")
        );
    }
}
