//! The certificates and CRLs an access point depends on, with days to expiry: read for the
//! console's Certificates page, the metrics and the expiry alerts. Files are read afresh each
//! time (they are small, and a replaced file must show at once).

use crate::msh::AccessPoint;
use openssl::x509::{X509, X509Crl};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct CertificateInfo {
    /// `own`, `partner`, `ca`, `tls`.
    pub role: &'static str,
    /// What holds it: `keys edelivery-1.15 sign`, `P-Mode cl-pe party PE sign`, a file.
    pub source: String,
    pub subject: String,
    pub issuer: String,
    pub not_after: String,
    pub days_left: f64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CrlInfo {
    pub file: String,
    pub issuer: String,
    pub next_update: String,
    pub days_left: f64,
    pub revoked: usize,
}

/// Whether a date `days_left` away is within `days` (an unreadable date counts as within).
pub fn within(days_left: f64, days: f64) -> bool {
    days_left.is_nan() || days_left < days
}

/// How a certificate or CRL's date compares with now, for colours and alerts.
pub fn urgency(days_left: f64) -> &'static str {
    if days_left < 0.0 {
        "expired"
    } else if days_left < 14.0 {
        "critical"
    } else if days_left < 45.0 {
        "warning"
    } else {
        "ok"
    }
}

fn days_until(time: &openssl::asn1::Asn1TimeRef) -> f64 {
    let now = openssl::asn1::Asn1Time::days_from_now(0);
    match now.as_ref().map(|now| now.diff(time)) {
        Ok(Ok(diff)) => diff.days as f64 + diff.secs as f64 / 86_400.0,
        _ => f64::NAN,
    }
}

fn describe(role: &'static str, source: String, cert: &X509) -> CertificateInfo {
    let fingerprint = cert.digest(openssl::hash::MessageDigest::sha256()).map(hex::encode).unwrap_or_default();
    CertificateInfo {
        role,
        source,
        subject: crate::pki::trust::subject_of(cert),
        issuer: cert
            .issuer_name()
            .entries()
            .map(|e| {
                format!("{}={}", e.object().nid().short_name().unwrap_or("?"), e.data().to_string().unwrap_or_default())
            })
            .collect::<Vec<_>>()
            .join(", "),
        not_after: cert.not_after().to_string(),
        days_left: days_until(cert.not_after()),
        sha256: fingerprint,
    }
}

fn pem_file(role: &'static str, path: &std::path::Path, out: &mut Vec<CertificateInfo>) {
    match crate::pki::keys::load_certs_pem(path) {
        Ok(certs) => {
            for cert in certs {
                out.push(describe(role, path.display().to_string(), &cert));
            }
        }
        Err(e) => tracing::debug!(file = %path.display(), error = %e, "cannot read certificates"),
    }
}

/// Own keys, partners' bound certificates, CAs, the TLS certificate and the TLS trust.
pub fn certificates(ap: &AccessPoint) -> Vec<CertificateInfo> {
    let mut out = Vec::new();
    for keys in &ap.security.keys {
        let profile = keys.profile.as_str();
        out.push(describe("own", format!("keys {profile} sign"), &keys.sign.cert));
        for (i, enc) in keys.enc.iter().enumerate() {
            let which = if i == 0 { "enc" } else { "enc (previous, decrypt only)" };
            out.push(describe("own", format!("keys {profile} {which}"), &enc.cert));
        }
    }
    pem_file("tls", &ap.config.as4.tls_cert, &mut out);
    let pmodes = ap.pmodes();
    for link in pmodes.links_of(ap.me()) {
        let Some(partner) = link.partner_of(ap.me()) else { continue };
        let mut bound: Vec<(&str, &[u8])> = partner.sign_certs.iter().map(|c| ("sign", c.as_slice())).collect();
        bound.extend(partner.enc_cert.as_deref().map(|c| ("enc", c)));
        bound.extend(partner.next_enc_cert.as_deref().map(|c| ("next enc", c)));
        for (usage, der) in bound {
            if let Ok(cert) = X509::from_der(der) {
                out.push(describe("partner", format!("P-Mode {} party {} {usage}", link.id, partner.id), &cert));
            }
        }
    }
    if let Some(truststore) = &ap.config.security.truststore {
        pem_file("ca", truststore, &mut out);
    }
    pem_file("ca", &ap.config.as4.trust, &mut out);
    out
}

/// The CRL files the config names.
pub fn crls(ap: &AccessPoint) -> Vec<CrlInfo> {
    ap.config
        .security
        .crls
        .iter()
        .filter_map(|file| {
            let bytes = std::fs::read(file).ok()?;
            let crl = X509Crl::from_pem(&bytes).or_else(|_| X509Crl::from_der(&bytes)).ok()?;
            let next = crl.next_update();
            Some(CrlInfo {
                file: file.display().to_string(),
                issuer: crl
                    .issuer_name()
                    .entries()
                    .map(|e| e.data().to_string().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(", "),
                next_update: next.map(|t| t.to_string()).unwrap_or_else(|| "(none)".into()),
                days_left: next.map(days_until).unwrap_or(f64::INFINITY),
                revoked: crl.get_revoked().map(|r| r.len()).unwrap_or(0),
            })
        })
        .collect()
}
