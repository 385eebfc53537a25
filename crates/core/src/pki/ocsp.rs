//! OCSP (RFC 6960) requests and responses, without I/O: the runtime posts the request to the
//! responder through an [`OcspTransport`] and hands the answer back here to be checked.

use openssl::hash::MessageDigest;
use openssl::ocsp::{OcspCertId, OcspCertStatus, OcspFlag, OcspRequest, OcspResponse, OcspResponseStatus};
use openssl::stack::Stack;
use openssl::x509::X509;
use openssl::x509::store::X509StoreRef;

/// Posts a DER OCSP request to a responder URL and returns the DER response.
pub trait OcspTransport: Send + Sync {
    fn post(&self, url: &str, request: &[u8]) -> Result<Vec<u8>, String>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OcspAnswer {
    Good,
    Revoked(String),
    Unknown(String),
}

fn cert_id(cert: &X509, issuer: &X509) -> Result<OcspCertId, openssl::error::ErrorStack> {
    OcspCertId::from_cert(MessageDigest::sha1(), cert, issuer)
}

pub fn request(cert: &X509, issuer: &X509) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    let mut req = OcspRequest::new()?;
    req.add_id(cert_id(cert, issuer)?)?;
    req.to_der()
}

/// The responder named in the certificate's Authority Information Access extension.
pub fn responder_url(cert: &X509) -> Option<String> {
    cert.ocsp_responders().ok()?.iter().next().map(|s| s.to_string())
}

/// Checks a response: signed by the issuer or a responder it delegated to (verified against
/// `store`), about this certificate, and current (5 minutes of clock slack).
pub fn check_response(der: &[u8], cert: &X509, issuer: &X509, store: &X509StoreRef) -> OcspAnswer {
    let unknown = |m: String| OcspAnswer::Unknown(m);
    let Ok(response) = OcspResponse::from_der(der) else { return unknown("the OCSP response cannot be parsed".into()) };
    if response.status() != OcspResponseStatus::SUCCESSFUL {
        return unknown(format!("the OCSP responder answered status {:?}", response.status().as_raw()));
    }
    let Ok(basic) = response.basic() else { return unknown("the OCSP response has no basic response".into()) };
    let mut certs = match Stack::new() {
        Ok(s) => s,
        Err(e) => return unknown(e.to_string()),
    };
    let _ = certs.push(issuer.clone());
    if let Err(e) = basic.verify(&certs, store, OcspFlag::empty()) {
        return unknown(format!("the OCSP response signature does not verify: {e}"));
    }
    let Ok(id) = cert_id(cert, issuer) else { return unknown("cannot identify the certificate".into()) };
    let Some(status) = basic.find_status(&id) else {
        return unknown("the OCSP response does not mention this certificate".into());
    };
    if let Err(e) = status.check_validity(300, None) {
        return unknown(format!("the OCSP response is not current: {e}"));
    }
    match status.status {
        OcspCertStatus::GOOD => OcspAnswer::Good,
        OcspCertStatus::REVOKED => OcspAnswer::Revoked(format!(
            "OCSP: revoked{}",
            status.revocation_time.map(|t| format!(" at {t}")).unwrap_or_default()
        )),
        _ => unknown("the OCSP responder does not know this certificate".into()),
    }
}
