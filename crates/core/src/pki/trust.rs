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
    ocsp: Option<OcspSettings>,
    /// Chains found valid, by the digest of certificate and intermediates: a partner's
    /// certificate is checked once a minute, not for every message. The cache lives and dies
    /// with this truststore, which is replaced whole when a CA or CRL file changes.
    validated: std::sync::Mutex<ValidatedChains>,
}

/// Chain digest → when it was found valid, with the warnings it gave.
type ValidatedChains = std::collections::HashMap<[u8; 32], (std::time::Instant, Vec<String>)>;

/// How long a successful validation is reused (expiry and OCSP answers are seen within it).
pub const VALIDATION_TTL: std::time::Duration = std::time::Duration::from_secs(60);
const VALIDATED_MAX: usize = 4096;

/// OCSP responses by certificate fingerprint, with when they were fetched.
type ResponseCache = std::collections::HashMap<Vec<u8>, (std::time::Instant, Vec<u8>)>;

/// OCSP, asked when no loaded CRL answers for a certificate.
pub struct OcspSettings {
    pub transport: std::sync::Arc<dyn super::ocsp::OcspTransport>,
    /// Ask this responder instead of the one named in each certificate.
    pub responder: Option<String>,
    /// How long a response is reused (it is re-checked for currency each time).
    pub cache_ttl: std::time::Duration,
    cache: std::sync::Mutex<ResponseCache>,
    /// The last answer for each certificate asked about, for operators.
    results: std::sync::Mutex<std::collections::BTreeMap<String, OcspResult>>,
}

/// The last OCSP answer about one certificate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OcspResult {
    pub subject: String,
    pub responder: String,
    /// `good`, `revoked: …` or `unknown: …`.
    pub status: String,
    /// Seconds since the epoch.
    pub checked_at: i64,
}

impl OcspSettings {
    pub fn new(
        transport: std::sync::Arc<dyn super::ocsp::OcspTransport>,
        responder: Option<String>,
        cache_ttl: std::time::Duration,
    ) -> Self {
        OcspSettings { transport, responder, cache_ttl, cache: Default::default(), results: Default::default() }
    }
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
        Ok(TrustStore { store: builder.build(), crls, policy, ocsp: None, validated: Default::default() })
    }

    pub fn with_ocsp(mut self, settings: OcspSettings) -> TrustStore {
        self.ocsp = Some(settings);
        self
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
            // A PEM file may hold several CRLs (one per CA): operators append a new partner's.
            let text = String::from_utf8_lossy(&bytes);
            let blocks: Vec<&str> = text
                .split_inclusive("-----END X509 CRL-----")
                .filter(|b| b.contains("-----BEGIN X509 CRL-----"))
                .collect();
            if blocks.is_empty() {
                let crl = X509Crl::from_der(&bytes).map_err(|e| format!("{}: not a CRL: {e}", f.display()))?;
                crls.push(crl);
            }
            for block in blocks {
                let crl = X509Crl::from_pem(block.trim_start().as_bytes())
                    .map_err(|e| format!("{}: not a CRL: {e}", f.display()))?;
                crls.push(crl);
            }
        }
        TrustStore::new(roots, crls, policy).map_err(|e| e.to_string())
    }

    /// Validates `cert` (with optional intermediates) against the roots, at the current time,
    /// then its revocation status under the policy. Returns the warnings to log. A success is
    /// reused for [`VALIDATION_TTL`]; a failure is always checked again.
    pub fn validate(&self, cert: &X509, intermediates: &[X509]) -> Result<Vec<String>, TrustError> {
        let mut hasher = openssl::sha::Sha256::new();
        for c in std::iter::once(cert).chain(intermediates) {
            hasher.update(&c.to_der().unwrap_or_default());
        }
        let key = hasher.finish();
        let now = std::time::Instant::now();
        let cached = self.validated.lock().ok().and_then(|v| v.get(&key).cloned());
        // An OCSP answer is not reused longer than its own cache keeps it.
        let ttl = self.ocsp.as_ref().map_or(VALIDATION_TTL, |o| o.cache_ttl.min(VALIDATION_TTL));
        if let Some((at, warnings)) = cached
            && now.duration_since(at) < ttl
        {
            return Ok(warnings);
        }
        let warnings = self.validate_now(cert, intermediates)?;
        if let Ok(mut validated) = self.validated.lock() {
            if validated.len() >= VALIDATED_MAX {
                validated.clear();
            }
            validated.insert(key, (now, warnings.clone()));
        }
        Ok(warnings)
    }

    fn validate_now(&self, cert: &X509, intermediates: &[X509]) -> Result<Vec<String>, TrustError> {
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
            let status = match self.crl_status(subject_cert, issuer) {
                Revocation::Unknown(crl) if self.ocsp.is_some() => match self.ocsp_status(subject_cert, issuer) {
                    Revocation::Unknown(ocsp) => Revocation::Unknown(format!("{crl}; {ocsp}")),
                    known => known,
                },
                other => other,
            };
            match status {
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

    /// The last OCSP answer for each certificate checked since this truststore was loaded.
    pub fn ocsp_results(&self) -> Vec<OcspResult> {
        self.ocsp
            .as_ref()
            .and_then(|s| s.results.lock().ok().map(|r| r.values().cloned().collect()))
            .unwrap_or_default()
    }

    fn ocsp_status(&self, cert: &X509, issuer: &X509) -> Revocation {
        let answer = self.ask_ocsp(cert, issuer);
        if let Some(settings) = &self.ocsp {
            let status = match &answer {
                Revocation::Good => "good".to_owned(),
                Revocation::Revoked(r) => format!("revoked: {r}"),
                Revocation::Unknown(r) => format!("unknown: {r}"),
            };
            let responder = settings.responder.clone().or_else(|| super::ocsp::responder_url(cert)).unwrap_or_default();
            let checked_at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or_default();
            let subject = subject_of(cert);
            if let Ok(mut results) = settings.results.lock() {
                results.insert(subject.clone(), OcspResult { subject, responder, status, checked_at });
            }
        }
        answer
    }

    fn ask_ocsp(&self, cert: &X509, issuer: &X509) -> Revocation {
        use super::ocsp::{OcspAnswer, check_response, request, responder_url};
        let Some(settings) = &self.ocsp else { return Revocation::Unknown("OCSP is off".into()) };
        let Some(url) = settings.responder.clone().or_else(|| responder_url(cert)) else {
            return Revocation::Unknown("the certificate names no OCSP responder".into());
        };
        let key = cert.digest(openssl::hash::MessageDigest::sha256()).map(|d| d.to_vec()).unwrap_or_default();
        let to_revocation = |answer: OcspAnswer| match answer {
            OcspAnswer::Good => Revocation::Good,
            OcspAnswer::Revoked(r) => Revocation::Revoked(r),
            OcspAnswer::Unknown(r) => Revocation::Unknown(format!("OCSP {url}: {r}")),
        };
        let cached = settings.cache.lock().ok().and_then(|c| c.get(&key).cloned());
        if let Some((at, der)) = cached
            && at.elapsed() < settings.cache_ttl
        {
            let answer = check_response(&der, cert, issuer, &self.store);
            if !matches!(answer, OcspAnswer::Unknown(_)) {
                return to_revocation(answer);
            }
        }
        let Ok(req) = request(cert, issuer) else { return Revocation::Unknown("cannot build an OCSP request".into()) };
        let der = match settings.transport.post(&url, &req) {
            Ok(der) => der,
            Err(e) => return Revocation::Unknown(format!("OCSP responder {url} unreachable: {e}")),
        };
        let answer = check_response(&der, cert, issuer, &self.store);
        if !matches!(answer, OcspAnswer::Unknown(_))
            && let Ok(mut cache) = settings.cache.lock()
        {
            cache.insert(key, (std::time::Instant::now(), der));
        }
        to_revocation(answer)
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

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::pkey::PKey;
    use ventanilla_testkit::demo_pki::{Authority, Usage};

    /// Makes a CRL with `openssl ca -gencrl` listing `revoked` (an independent CRL writer).
    fn crl(dir: &Path, ca: &Authority, revoked: &[&X509], seconds: i64) -> std::path::PathBuf {
        std::fs::write(dir.join("ca.pem"), ca.cert_pem().unwrap()).unwrap();
        std::fs::write(dir.join("ca.key"), ca.key_pem().unwrap()).unwrap();
        let mut index = String::new();
        for cert in revoked {
            let serial = cert.serial_number().to_bn().unwrap().to_hex_str().unwrap().to_string();
            let subject: String = cert
                .subject_name()
                .entries()
                .map(|e| format!("/CN={}", e.data().to_string().unwrap()))
                .last()
                .unwrap_or_default();
            index.push_str(&format!("R\t301231235959Z\t250101000000Z\t{serial}\tunknown\t{subject}\n"));
        }
        std::fs::write(dir.join("index.txt"), index).unwrap();
        std::fs::write(dir.join("crlnumber"), "01\n").unwrap();
        let cnf = format!(
            "[ca]\ndefault_ca = d\n[d]\ndatabase = {0}/index.txt\ncrlnumber = {0}/crlnumber\ndefault_md = sha256\n",
            dir.display()
        );
        std::fs::write(dir.join("ca.cnf"), cnf).unwrap();
        let out = dir.join("ca.crl");
        let status = std::process::Command::new("openssl")
            .args(["ca", "-gencrl", "-batch", "-crlsec", &seconds.to_string(), "-config"])
            .arg(dir.join("ca.cnf"))
            .arg("-keyfile")
            .arg(dir.join("ca.key"))
            .arg("-cert")
            .arg(dir.join("ca.pem"))
            .arg("-out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
        out
    }

    fn leaf(ca: &Authority, name: &str) -> X509 {
        ca.issue(name, &PKey::generate_ed25519().unwrap(), Usage::Signing, 30).unwrap()
    }

    #[test]
    fn chain_validity_and_crl_revocation() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::new("CRL test CA").unwrap();
        let good = leaf(&ca, "good");
        let bad = leaf(&ca, "bad");
        let crl_file = crl(dir.path(), &ca, &[&bad], 30 * 86_400);
        let roots = dir.path().join("ca.pem");
        let store = TrustStore::load(&roots, std::slice::from_ref(&crl_file), RevocationPolicy::FailClosed).unwrap();
        assert_eq!(store.validate(&good, &[]), Ok(Vec::new()));
        assert!(matches!(store.validate(&bad, &[]), Err(TrustError::Revoked { .. })));
        // Another CA's certificate is not trusted.
        let stranger = leaf(&Authority::new("other CA").unwrap(), "stranger");
        assert!(matches!(store.validate(&stranger, &[]), Err(TrustError::Untrusted { .. })));
        // Expired.
        let old = ca.issue_between("old", &PKey::generate_ed25519().unwrap(), Usage::Signing, -10, -1).unwrap();
        assert!(matches!(store.validate(&old, &[]), Err(TrustError::Validity { .. })));
    }

    #[test]
    fn our_crls_verify_with_the_openssl_command() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::new("CRL writer CA").unwrap();
        let bad = leaf(&ca, "bad");
        std::fs::write(dir.path().join("ca.pem"), ca.cert_pem().unwrap()).unwrap();
        std::fs::write(dir.path().join("ours.crl"), ca.crl(&[&bad], 3600).unwrap().to_pem().unwrap()).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["crl", "-noout", "-text", "-in"])
            .arg(dir.path().join("ours.crl"))
            .arg("-CAfile")
            .arg(dir.path().join("ca.pem"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && text.contains("verify OK"), "{text}");
        let serial = bad.serial_number().to_bn().unwrap().to_hex_str().unwrap().to_string();
        assert!(text.to_uppercase().contains(&serial.to_uppercase()), "{text}");
        let store =
            TrustStore::load(&dir.path().join("ca.pem"), &[dir.path().join("ours.crl")], RevocationPolicy::FailClosed)
                .unwrap();
        assert!(matches!(store.validate(&bad, &[]), Err(TrustError::Revoked { .. })));
    }

    #[test]
    fn unknown_revocation_status_follows_the_policy() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::new("policy test CA").unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.cert_pem().unwrap()).unwrap();
        let roots = dir.path().join("ca.pem");
        let cert = leaf(&ca, "somebody");
        let closed = TrustStore::load(&roots, &[], RevocationPolicy::FailClosed).unwrap();
        assert!(matches!(closed.validate(&cert, &[]), Err(TrustError::RevocationUnknown { .. })));
        let open = TrustStore::load(&roots, &[], RevocationPolicy::FailOpen).unwrap();
        assert_eq!(open.validate(&cert, &[]).unwrap().len(), 1, "accepted with a warning");
        let off = TrustStore::load(&roots, &[], RevocationPolicy::Off).unwrap();
        assert!(off.validate(&cert, &[]).unwrap().is_empty());
        // A CRL past its nextUpdate does not count as an answer.
        let stale = crl(dir.path(), &ca, &[], 1);
        let with_stale = TrustStore::load(&roots, &[stale], RevocationPolicy::FailClosed).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2100));
        let result = with_stale.validate(&cert, &[]);
        match result {
            Err(TrustError::RevocationUnknown { reason, .. }) => assert!(reason.contains("expired"), "{reason}"),
            other => panic!("a stale CRL must not count: {other:?}"),
        }
    }
}
