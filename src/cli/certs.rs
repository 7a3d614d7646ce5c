//! `secret-santa certs`: a development CA and a serving certificate for the
//! webhook Service's DNS names (rcgen, ECDSA P-256).

use std::net::IpAddr;
use std::process::ExitCode;

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::config::CertsArgs;

/// A CA and a leaf it signed, PEM-encoded.
pub struct Bundle {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// The DNS names a Service is reached by from the apiserver.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// Makes a CA (valid 10× `days`) and a serving certificate (valid `days`).
pub fn generate(dns: &[String], ips: &[IpAddr], days: u32) -> Result<Bundle, rcgen::Error> {
    let now = OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "secret-santa webhook CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = now - Duration::hours(1);
    ca_params.not_after = now + Duration::days(i64::from(days) * 10);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(dns.to_vec())?;
    for ip in ips {
        leaf.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    let cn = dns
        .first()
        .cloned()
        .unwrap_or_else(|| "secret-santa".into());
    leaf.distinguished_name.push(DnType::CommonName, cn);
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = now - Duration::hours(1);
    leaf.not_after = now + Duration::days(i64::from(days));
    let cert = leaf.signed_by(&leaf_key, &issuer)?;
    Ok(Bundle {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: leaf_key.serialize_pem(),
    })
}

pub fn run(args: &CertsArgs) -> anyhow::Result<ExitCode> {
    if args.days == 0 {
        eprintln!("error: --days must be at least 1");
        return Ok(ExitCode::from(2));
    }
    let mut dns = service_dns_names(&args.service, &args.namespace);
    dns.extend(args.dns.iter().cloned());
    let bundle = generate(&dns, &args.ips, args.days)?;
    std::fs::create_dir_all(&args.out)?;
    write(&args.out.join("ca.crt"), &bundle.ca_pem, 0o644)?;
    write(&args.out.join("tls.crt"), &bundle.cert_pem, 0o644)?;
    write(&args.out.join("tls.key"), &bundle.key_pem, 0o600)?;
    eprintln!(
        "wrote {}/ca.crt, tls.crt, tls.key for {} (+{} IP SANs); caBundle:",
        args.out.display(),
        dns.join(", "),
        args.ips.len()
    );
    println!(
        "{}",
        base64::engine::general_purpose::STANDARD.encode(bundle.ca_pem.as_bytes())
    );
    Ok(ExitCode::SUCCESS)
}

fn write(path: &std::path::Path, contents: &str, mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(mode);
    let mut f = opts.open(&tmp)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
