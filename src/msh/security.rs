//! The access point's message security material: its own keys per profile, the truststore,
//! and the binding of partners' certificates to their party in the P-Mode.

use crate::config::{Config, KeyPair};
use crate::ebms::{EbmsCode, EbmsError};
use crate::pki::keys::{self, kind_of};
use crate::pki::trust::TrustStore;
use crate::pmode::{Party, Profile};
use crate::wss::keyinfo::KeyReference;
use crate::wss::profile::suite;
use crate::wss::sign::Credential;
use openssl::x509::X509;

pub struct ProfileKeys {
    pub profile: Profile,
    pub sign: Credential,
    /// The first is current; later ones are kept to decrypt during a rollover.
    pub enc: Vec<Credential>,
}

#[derive(Default)]
pub struct SecurityContext {
    pub keys: Vec<ProfileKeys>,
    /// Signs SPS certificates submitted unsigned for IOP links (`[iop] document_key`, else
    /// the edelivery-1.15 signing key).
    pub document_signer: Option<Credential>,
    /// Swapped whole when a CRL file changes on disk.
    trust: std::sync::RwLock<Option<std::sync::Arc<TrustStore>>>,
    trust_source: Option<TrustSource>,
}

/// Where the truststore comes from, to reload it when its CRL files change.
struct TrustSource {
    roots: std::path::PathBuf,
    crls: Vec<std::path::PathBuf>,
    policy: crate::pki::trust::RevocationPolicy,
    ocsp: Option<(Option<String>, std::time::Duration, std::time::Duration)>,
    stamps: std::sync::Mutex<Vec<Option<std::time::SystemTime>>>,
}

impl TrustSource {
    /// The files the truststore is made of: the CA certificates and the CRLs.
    fn files(&self) -> Vec<std::path::PathBuf> {
        std::iter::once(self.roots.clone()).chain(self.crls.iter().cloned()).collect()
    }

    fn load(&self) -> Result<TrustStore, String> {
        let store = TrustStore::load(&self.roots, &self.crls, self.policy)?;
        Ok(match &self.ocsp {
            Some((responder, ttl, timeout)) => store.with_ocsp(crate::pki::trust::OcspSettings::new(
                std::sync::Arc::new(crate::transport::ocsp_http::HttpOcsp { timeout: *timeout }),
                responder.clone(),
                *ttl,
            )),
            None => store,
        })
    }
}

fn stamps(files: &[std::path::PathBuf]) -> Vec<Option<std::time::SystemTime>> {
    files.iter().map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok()).collect()
}

fn load_pair(pair: &KeyPair, what: &str) -> Result<Credential, String> {
    let password = match (&pair.password_env, &pair.password_file) {
        (Some(v), None) => Some(keys::PasswordSource::Env(v.clone())),
        (None, Some(f)) => Some(keys::PasswordSource::File(f.clone())),
        (None, None) => None,
        _ => return Err(format!("{what}: set password_env or password_file, not both")),
    };
    match (&pair.pkcs12, &pair.key, &pair.cert) {
        (Some(p12), None, None) => {
            let password =
                password.ok_or_else(|| format!("{what}: a PKCS#12 file needs password_env or password_file"))?;
            let (key, cert, _chain) = keys::load_pkcs12(p12, &password).map_err(|e| format!("{what}: {e}"))?;
            Ok(Credential { key, cert })
        }
        (None, Some(key), Some(cert)) => Ok(Credential {
            key: keys::load_key(key, password.as_ref()).map_err(|e| format!("{what}: {e}"))?,
            cert: keys::load_cert(cert).map_err(|e| format!("{what}: {e}"))?,
        }),
        _ => Err(format!("{what}: give either pkcs12, or key and cert")),
    }
}

impl SecurityContext {
    pub fn load(config: &Config) -> Result<SecurityContext, String> {
        let mut out: Vec<ProfileKeys> = Vec::new();
        for (i, k) in config.keys.iter().enumerate() {
            let profile = Profile::parse(&k.profile)
                .filter(|p| p.is_secure())
                .ok_or_else(|| format!("keys[{i}].profile: '{}' is not edelivery-1.15 or edelivery-2.0", k.profile))?;
            let suite = suite(profile).ok_or("no suite")?;
            let sign = load_pair(&k.sign, &format!("keys[{i}].sign"))?;
            let enc = load_pair(&k.enc, &format!("keys[{i}].enc"))?;
            if kind_of(&sign.key) != suite.signing_key {
                return Err(format!(
                    "keys[{i}].sign: a {:?} key; {} signs with {:?}",
                    kind_of(&sign.key),
                    profile.as_str(),
                    suite.signing_key
                ));
            }
            if kind_of(&enc.key) != suite.encryption_key {
                return Err(format!(
                    "keys[{i}].enc: a {:?} key; {} encrypts with {:?}",
                    kind_of(&enc.key),
                    profile.as_str(),
                    suite.encryption_key
                ));
            }
            for (cred, what) in [(&sign, "sign"), (&enc, "enc")] {
                let matches = cred.cert.public_key().map(|p| p.public_eq(&cred.key)).unwrap_or(false);
                if !matches {
                    return Err(format!("keys[{i}].{what}: the certificate does not belong to the key"));
                }
            }
            match out.iter_mut().find(|p| p.profile == profile) {
                Some(existing) => existing.enc.push(enc),
                None => out.push(ProfileKeys { profile, sign, enc: vec![enc] }),
            }
        }
        let document_signer = match &config.iop.document_key {
            Some(pair) => {
                let cred = load_pair(pair, "iop.document_key")?;
                if kind_of(&cred.key) != keys::KeyKind::Rsa {
                    return Err("iop.document_key: SPS certificates are signed with RSA keys".into());
                }
                if !cred.cert.public_key().map(|p| p.public_eq(&cred.key)).unwrap_or(false) {
                    return Err("iop.document_key: the certificate does not belong to the key".into());
                }
                Some(cred)
            }
            None => out.iter().find(|k| k.profile == Profile::Edelivery115).map(|k| k.sign.clone()),
        };
        let trust_file = config.security.truststore.clone().unwrap_or_else(|| config.as4.trust.clone());
        if out.is_empty() {
            return Ok(SecurityContext { document_signer, ..SecurityContext::default() });
        }
        let duration = |v: &Option<crate::config::Interval>, default: u64| {
            v.map_or(std::time::Duration::from_secs(default), |i| i.0)
        };
        let s = &config.security;
        let source = TrustSource {
            roots: trust_file,
            crls: s.crls.clone(),
            policy: s.revocation,
            ocsp: s
                .ocsp
                .then(|| (s.ocsp_responder.clone(), duration(&s.ocsp_cache, 3600), duration(&s.ocsp_timeout, 5))),
            stamps: std::sync::Mutex::new(Vec::new()),
        };
        *source.stamps.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = stamps(&source.files());
        let trust = source.load()?;
        Ok(SecurityContext {
            keys: out,
            document_signer,
            trust: std::sync::RwLock::new(Some(std::sync::Arc::new(trust))),
            trust_source: Some(source),
        })
    }

    pub fn trust(&self) -> Option<std::sync::Arc<TrustStore>> {
        self.trust.read().ok().and_then(|t| t.clone())
    }

    /// Reloads the truststore when its CA file or a CRL file changed (CRLs are replaced as
    /// they are published; a new partner CA is added to the file). A file that fails to load
    /// keeps the truststore in force, with an alert.
    pub fn refresh_trust(&self) {
        let Some(source) = &self.trust_source else { return };
        let now = stamps(&source.files());
        let Ok(mut seen) = source.stamps.lock() else { return };
        if *seen == now {
            return;
        }
        match source.load() {
            Ok(store) => {
                if let Ok(mut t) = self.trust.write() {
                    *t = Some(std::sync::Arc::new(store));
                }
                tracing::info!(ca_file = %source.roots.display(), crls = source.crls.len(), "truststore reloaded");
                *seen = now;
            }
            Err(e) => {
                tracing::error!(error = %e, "ALERT: the truststore (CA or CRL file) could not be loaded; the previous one stays in force");
                *seen = now;
            }
        }
    }

    pub fn for_profile(&self, profile: Profile) -> Option<&ProfileKeys> {
        self.keys.iter().find(|k| k.profile == profile)
    }

    /// Resolves the certificate a partner signed with: it must be one of the certificates the
    /// P-Mode binds to that party (current or next), valid, trusted and not revoked.
    pub fn partner_signer(&self, partner: &Party, reference: &KeyReference) -> Result<X509, EbmsError> {
        let fail = |detail: String| EbmsError::new(EbmsCode::FailedAuthentication, detail);
        let bound: Vec<X509> =
            partner.sign_certs.iter().filter_map(|der| crate::pki::parsed::certificate(der).ok()).collect();
        let cert = bound.into_iter().find(|c| reference.matches(c)).ok_or_else(|| {
            fail(format!("the signing certificate is not the one the P-Mode binds to {}", partner.id))
        })?;
        let intermediates = match reference {
            KeyReference::Certificate(chain) => chain.iter().skip(1).cloned().collect(),
            _ => Vec::new(),
        };
        let trust = self.trust().ok_or_else(|| fail("no truststore is configured".into()))?;
        match trust.validate(&cert, &intermediates) {
            Ok(warnings) => {
                for w in warnings {
                    tracing::warn!(partner = %partner.id, "{w}");
                }
                Ok(cert)
            }
            Err(e) => Err(fail(e.to_string())),
        }
    }
}
