//! The server's certificate: a local certificate authority made on first start, and a
//! server certificate it signs for the names cameras and clients use.
//!
//! Files in `<data>/tls/`: `ca.crt` (the root to install on cameras and clients), `ca.key`,
//! `server.crt` (leaf + CA chain), `server.key`, `server.names` (what the leaf was made
//! for). RSA-2048 throughout: not every camera's TLS stack is known to accept ECDSA. The
//! CA is reused forever; the leaf is remade when the names change or it nears expiry.
//! Every file is replaced atomically, the keys with mode 0600.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_RSA_SHA256, RsaKeySize,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use rushes_proto::atomic_file::write as write_atomic;

use crate::config::Config;

/// What the HTTPS listener needs, and what to tell the operator.
pub struct TlsMaterial {
    pub cert_chain_pem: String,
    pub key_pem: String,
    /// The generated root, when the server made its own certificate.
    pub ca: Option<GeneratedCa>,
}

pub struct GeneratedCa {
    pub path: PathBuf,
    pub pem: String,
    /// SHA-256 of the DER certificate, `AB:CD:...`, as browsers and `openssl x509
    /// -fingerprint -sha256` show it.
    pub fingerprint: String,
}

const LEAF_DAYS: i64 = 397;
const RENEW_WITHIN_DAYS: i64 = 30;

/// The names the server certificate covers: local ones, the host name, and the operator's.
pub fn server_names(extra: &[String]) -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Ok(host) = gethostname::gethostname().into_string() {
        names.push(host);
    }
    names.extend(extra.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    names
        .into_iter()
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty() && CertificateParams::new(vec![n.clone()]).is_ok())
        .filter(|n| seen.insert(n.clone()))
        .collect()
}

pub fn load_or_create(config: &Config) -> anyhow::Result<TlsMaterial> {
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        return Ok(TlsMaterial {
            cert_chain_pem: std::fs::read_to_string(cert)
                .with_context(|| format!("reading {}", cert.display()))?,
            key_pem: std::fs::read_to_string(key)
                .with_context(|| format!("reading {}", key.display()))?,
            ca: None,
        });
    }
    let dir = config.tls_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (ca_key, ca_pem) = load_or_create_ca(&dir)?;
    let ca_issuer = Issuer::new(ca_params(&ca_key)?, &ca_key);

    let names = server_names(&config.tls_names);
    let now = OffsetDateTime::now_utc();
    let names_file = dir.join("server.names");
    let wanted_names = names.join("\n");
    let current = std::fs::read_to_string(&names_file).ok().and_then(|text| {
        let (expiry, listed) = text.split_once('\n')?;
        let expiry = OffsetDateTime::from_unix_timestamp(expiry.trim().parse().ok()?).ok()?;
        Some((expiry, listed.trim_end().to_owned()))
    });
    let fresh = current.is_some_and(|(expiry, listed)| {
        listed == wanted_names && expiry - now > Duration::days(RENEW_WITHIN_DAYS)
    });
    let (cert_path, key_path) = (dir.join("server.crt"), dir.join("server.key"));
    if !(fresh && cert_path.exists() && key_path.exists()) {
        let mut params = CertificateParams::new(names.clone())?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_else(|| "localhost".into()),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::NoCa;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        // Cameras' clocks drift; a certificate valid since yesterday survives that.
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(LEAF_DAYS);
        let key = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048)?;
        let cert = params.signed_by(&key, &ca_issuer)?;
        write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_atomic(
            &cert_path,
            format!("{}{}", cert.pem(), ca_pem).as_bytes(),
            0o644,
        )?;
        let expiry = params.not_after.unix_timestamp();
        write_atomic(
            &names_file,
            format!("{expiry}\n{wanted_names}\n").as_bytes(),
            0o644,
        )?;
        tracing::info!(names = ?names, "made a server certificate");
    }
    Ok(TlsMaterial {
        cert_chain_pem: std::fs::read_to_string(&cert_path)?,
        key_pem: std::fs::read_to_string(&key_path)?,
        ca: Some(GeneratedCa {
            path: dir.join("ca.crt"),
            fingerprint: fingerprint(&ca_pem)?,
            pem: ca_pem,
        }),
    })
}

fn load_or_create_ca(dir: &Path) -> anyhow::Result<(KeyPair, String)> {
    let (key_path, cert_path) = (dir.join("ca.key"), dir.join("ca.crt"));
    if key_path.exists() && cert_path.exists() {
        let key = KeyPair::from_pem(&std::fs::read_to_string(&key_path)?)
            .context("reading tls/ca.key")?;
        return Ok((key, std::fs::read_to_string(&cert_path)?));
    }
    let key = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048)?;
    let cert = ca_params(&key)?.self_signed(&key)?;
    write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(&cert_path, cert.pem().as_bytes(), 0o644)?;
    tracing::info!(path = %cert_path.display(), "made a certificate authority");
    Ok((key, cert.pem()))
}

/// The CA's parameters, derived from its key alone so that the issuer can be rebuilt from
/// `ca.key` on every start without parsing the certificate.
fn ca_params(key: &KeyPair) -> anyhow::Result<CertificateParams> {
    let id = crate::secrets::hex(&Sha256::digest(key.public_key_raw()));
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("Rushes local CA {}", &id[..8]));
    dn.push(DnType::OrganizationName, "Rushes");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(3650);
    Ok(params)
}

/// `AB:CD:...` SHA-256 of the first certificate in `pem`.
pub fn fingerprint(pem: &str) -> anyhow::Result<String> {
    let der =
        CertificateDer::from_pem_slice(pem.as_bytes()).context("parsing a PEM certificate")?;
    let hex = crate::secrets::hex(&Sha256::digest(der.as_ref())).to_ascii_uppercase();
    let pairs: Vec<&str> = (0..hex.len())
        .step_by(2)
        .filter_map(|i| hex.get(i..i + 2))
        .collect();
    Ok(pairs.join(":"))
}
