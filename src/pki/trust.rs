//! The truststore: chain validation with validity period (OpenSSL), and revocation by CRL
//! with a configurable policy for when no revocation information is available.

use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::{CrlStatus, X509, X509Crl, X509StoreContext, X509VerifyResult};
use std::path::Path;

/// What to do when a certificate's revocation status cannot be established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RevocationPolicy {
    /// Refuse (the default for inbound signatures), with an alert in the log.
    #[default]
    FailClosed,
    /// Accept, with a warning in the log.
    FailOpen,
    /// Do not check revocation at all (tests, closed networks).
    Off,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error("certificate '{subject}' is not trusted: {reason}")]
    Untrusted { subject: String, reason: String },
    #[error("certificate '{subject}' has expired or is not yet valid: {reason}")]
    Validity { subject: String, reason: String },
    #[error("certificate '{subject}' is revoked ({reason})")]
    Revoked { subject: String, reason: String },
    #[error("revocation status of '{subject}' is unknown: {reason}")]
    RevocationUnknown { subject: String, reason: String },
}

pub struct TrustStore {
    store: X509Store,
    crls: Vec<X509Crl>,
    pub policy: RevocationPolicy,
}

pub fn subject_of(cert: &X509) -> String {
    cert.subject_name()
        .entries()
        .map(|e| {
            format!("{}={}", e.object().nid().short_name().unwrap_or("?"), e.data().to_string().unwrap_or_default())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl TrustStore {
    pub fn new(
        roots: Vec<X509>,
        crls: Vec<X509Crl>,
        policy: RevocationPolicy,
    ) -> Result<TrustStore, openssl::error::ErrorStack> {
        let mut builder = X509StoreBuilder::new()?;
        for root in roots {
            builder.add_cert(root)?;
        }
        Ok(TrustStore { store: builder.build(), crls, policy })
    }

    pub fn load(
        roots: &Path,
        crl_files: &[std::path::PathBuf],
        policy: RevocationPolicy,
    ) -> Result<TrustStore, String> {
        let roots = super::keys::load_certs_pem(roots).map_err(|e| e.to_string())?;
        let mut crls = Vec::new();
        for f in crl_files {
            let bytes = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
            let crl = X509Crl::from_pem(&bytes)
                .or_else(|_| X509Crl::from_der(&bytes))
                .map_err(|e| format!("{}: not a CRL: {e}", f.display()))?;
            crls.push(crl);
        }
        TrustStore::new(roots, crls, policy).map_err(|e| e.to_string())
    }

    /// Validates `cert` (with optional intermediates) against the roots, at the current time,
    /// then its revocation status under the policy. Returns the warnings to log.
    pub fn validate(&self, cert: &X509, intermediates: &[X509]) -> Result<Vec<String>, TrustError> {
        let subject = subject_of(cert);
        let mut untrusted =
            Stack::new().map_err(|e| TrustError::Untrusted { subject: subject.clone(), reason: e.to_string() })?;
        for c in intermediates {
            let _ = untrusted.push(c.clone());
        }
        let mut ctx = X509StoreContext::new()
            .map_err(|e| TrustError::Untrusted { subject: subject.clone(), reason: e.to_string() })?;
        let (ok, error, chain) = ctx
            .init(&self.store, cert, &untrusted, |c| {
                let ok = c.verify_cert()?;
                let chain: Vec<X509> = c.chain().map(|s| s.iter().map(|x| x.to_owned()).collect()).unwrap_or_default();
                Ok((ok, c.error(), chain))
            })
            .map_err(|e| TrustError::Untrusted { subject: subject.clone(), reason: e.to_string() })?;
        if !ok {
            let reason = error.error_string().to_owned();
            return Err(if is_validity_error(error) {
                TrustError::Validity { subject, reason }
            } else {
                TrustError::Untrusted { subject, reason }
            });
        }
        if self.policy == RevocationPolicy::Off {
            return Ok(Vec::new());
        }
        let mut warnings = Vec::new();
        // Every certificate but the root (trust anchors are not revocable by CRL).
        for pair in chain.windows(2) {
            let (subject_cert, issuer) = (&pair[0], &pair[1]);
            match self.crl_status(subject_cert, issuer) {
                Revocation::Good => {}
                Revocation::Revoked(reason) => {
                    return Err(TrustError::Revoked { subject: subject_of(subject_cert), reason });
                }
                Revocation::Unknown(reason) => match self.policy {
                    RevocationPolicy::FailClosed => {
                        tracing::error!(certificate = %subject_of(subject_cert), reason, "ALERT: revocation status unknown; refusing (revocation = fail-closed)");
                        return Err(TrustError::RevocationUnknown { subject: subject_of(subject_cert), reason });
                    }
                    _ => warnings.push(format!(
                        "revocation status of '{}' unknown ({reason}); accepted (fail-open)",
                        subject_of(subject_cert)
                    )),
                },
            }
        }
        Ok(warnings)
    }

    fn crl_status(&self, cert: &X509, issuer: &X509) -> Revocation {
        let Ok(issuer_key) = issuer.public_key() else { return Revocation::Unknown("issuer has no public key".into()) };
        let mut stale = None;
        for crl in &self.crls {
            let same_issuer = crl.issuer_name().to_der().ok() == cert.issuer_name().to_der().ok();
            if !same_issuer || !crl.verify(&issuer_key).unwrap_or(false) {
                continue;
            }
            let now = openssl::asn1::Asn1Time::days_from_now(0).ok();
            if let (Some(next), Some(now)) = (crl.next_update(), now.as_ref())
                && next < now
            {
                stale = Some(format!("the CRL of '{}' expired at {next}", subject_of(issuer)));
                continue;
            }
            return match crl.get_by_cert(cert) {
                CrlStatus::NotRevoked => Revocation::Good,
                CrlStatus::Revoked(entry) => {
                    Revocation::Revoked(format!("listed in the CRL since {}", entry.revocation_date()))
                }
                CrlStatus::RemoveFromCrl(_) => Revocation::Good,
            };
        }
        Revocation::Unknown(stale.unwrap_or_else(|| format!("no CRL of '{}' is loaded", subject_of(issuer))))
    }
}

enum Revocation {
    Good,
    Revoked(String),
    Unknown(String),
}

fn is_validity_error(e: X509VerifyResult) -> bool {
    // X509_V_ERR_CERT_NOT_YET_VALID = 9, X509_V_ERR_CERT_HAS_EXPIRED = 10
    matches!(e.as_raw(), 9 | 10)
}
