//! A demo PKI for tests and `make demo`: one root CA and, per access point, a TLS
//! certificate valid for localhost and 127.0.0.1 (server and client use). Test-only.

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName, SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509Name};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("openssl: {0}")]
    Openssl(#[from] openssl::error::ErrorStack),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Tls,
    Signing,
    KeyTransport,
    KeyAgreement,
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

pub struct Authority {
    cert: X509,
    key: PKey<Private>,
}

fn ec_key() -> Result<PKey<Private>, PkiError> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    Ok(PKey::from_ec_key(EcKey::generate(&group)?)?)
}

fn name(common_name: &str) -> Result<X509Name, PkiError> {
    let mut n = X509Name::builder()?;
    n.append_entry_by_nid(Nid::ORGANIZATIONNAME, "Ventanilla demo PKI (test only)")?;
    n.append_entry_by_nid(Nid::COMMONNAME, common_name)?;
    Ok(n.build())
}

fn serial() -> Result<openssl::asn1::Asn1Integer, PkiError> {
    let mut bn = BigNum::new()?;
    bn.rand(127, MsbOption::MAYBE_ZERO, false)?;
    Ok(bn.to_asn1_integer()?)
}

impl Authority {
    pub fn new(common_name: &str) -> Result<Authority, PkiError> {
        let key = ec_key()?;
        let mut b = X509::builder()?;
        b.set_version(2)?;
        let serial = serial()?;
        b.set_serial_number(&serial)?;
        let n = name(common_name)?;
        b.set_subject_name(&n)?;
        b.set_issuer_name(&n)?;
        b.set_pubkey(&key)?;
        let not_before = Asn1Time::days_from_now(0)?;
        b.set_not_before(&not_before)?;
        let not_after = Asn1Time::days_from_now(3650)?;
        b.set_not_after(&not_after)?;
        b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
        b.append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().build()?)?;
        let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
        b.append_extension(ski)?;
        b.sign(&key, MessageDigest::sha256())?;
        Ok(Authority { cert: b.build(), key })
    }

    /// A TLS certificate for `common_name`, valid for localhost and 127.0.0.1.
    pub fn issue_tls(&self, common_name: &str) -> Result<(X509, PKey<Private>), PkiError> {
        let key = ec_key()?;
        let cert = self.issue(common_name, &key, Usage::Tls, 825)?;
        Ok((cert, key))
    }

    /// A certificate for `key` (any algorithm, including X25519, which cannot sign itself).
    pub fn issue(
        &self,
        common_name: &str,
        key: &PKey<impl HasPublic>,
        usage: Usage,
        days: i64,
    ) -> Result<X509, PkiError> {
        self.issue_between(common_name, key, usage, -1, days)
    }

    /// A certificate valid from `from_days` to `to_days` relative to now (tests make
    /// expired ones with negative values).
    pub fn issue_between(
        &self,
        common_name: &str,
        key: &PKey<impl HasPublic>,
        usage: Usage,
        from_days: i64,
        to_days: i64,
    ) -> Result<X509, PkiError> {
        let mut b = X509::builder()?;
        b.set_version(2)?;
        let serial = serial()?;
        b.set_serial_number(&serial)?;
        let subject = name(common_name)?;
        b.set_subject_name(&subject)?;
        b.set_issuer_name(self.cert.subject_name())?;
        b.set_pubkey(key)?;
        let not_before = Asn1Time::from_unix(now() + from_days * 86_400)?;
        b.set_not_before(&not_before)?;
        let not_after = Asn1Time::from_unix(now() + to_days * 86_400)?;
        b.set_not_after(&not_after)?;
        b.append_extension(BasicConstraints::new().build()?)?;
        match usage {
            Usage::Tls => {
                b.append_extension(KeyUsage::new().critical().digital_signature().key_agreement().build()?)?;
                b.append_extension(ExtendedKeyUsage::new().server_auth().client_auth().build()?)?;
                let san = SubjectAlternativeName::new()
                    .dns("localhost")
                    .ip("127.0.0.1")
                    .build(&b.x509v3_context(Some(&self.cert), None))?;
                b.append_extension(san)?;
            }
            Usage::Signing => {
                b.append_extension(KeyUsage::new().critical().digital_signature().non_repudiation().build()?)?
            }
            Usage::KeyTransport => b.append_extension(KeyUsage::new().critical().key_encipherment().build()?)?,
            Usage::KeyAgreement => b.append_extension(KeyUsage::new().critical().key_agreement().build()?)?,
        }
        let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(Some(&self.cert), None))?;
        b.append_extension(ski)?;
        // Which CA key signed it: with several demo CAs trusted together (two countries),
        // chain building picks the right one.
        let aki = AuthorityKeyIdentifier::new().keyid(true).build(&b.x509v3_context(Some(&self.cert), None))?;
        b.append_extension(aki)?;
        b.sign(&self.key, MessageDigest::sha256())?;
        Ok(b.build())
    }

    pub fn key_pem(&self) -> Result<Vec<u8>, PkiError> {
        Ok(self.key.private_key_to_pem_pkcs8()?)
    }

    /// A CRL of this authority listing `revoked`, valid for `seconds` from now.
    pub fn crl(&self, revoked: &[&X509], seconds: i64) -> Result<openssl::x509::X509Crl, PkiError> {
        use foreign_types::{ForeignType, ForeignTypeRef};
        let this_update = Asn1Time::from_unix(now())?;
        let next_update = Asn1Time::from_unix(now() + seconds)?;
        // SAFETY: every pointer comes from a live openssl object; ownership of `crl` passes
        // to the returned X509Crl, and of each X509_REVOKED to the CRL (add0).
        unsafe {
            let crl = openssl_sys::X509_CRL_new();
            if crl.is_null() {
                return Err(openssl::error::ErrorStack::get().into());
            }
            let result = openssl::x509::X509Crl::from_ptr(crl);
            let ok = openssl_sys::X509_CRL_set_version(crl, 1) == 1
                && openssl_sys::X509_CRL_set_issuer_name(crl, self.cert.subject_name().as_ptr()) == 1
                && openssl_sys::X509_CRL_set1_lastUpdate(crl, this_update.as_ptr()) == 1
                && openssl_sys::X509_CRL_set1_nextUpdate(crl, next_update.as_ptr()) == 1;
            if !ok {
                return Err(openssl::error::ErrorStack::get().into());
            }
            for cert in revoked {
                let entry = openssl_sys::X509_REVOKED_new();
                let serial = cert.serial_number().to_bn()?.to_asn1_integer()?;
                let ok = !entry.is_null()
                    && openssl_sys::X509_REVOKED_set_serialNumber(entry, serial.as_ptr()) == 1
                    && openssl_sys::X509_REVOKED_set_revocationDate(entry, this_update.as_ptr()) == 1
                    && openssl_sys::X509_CRL_add0_revoked(crl, entry) == 1;
                if !ok {
                    return Err(openssl::error::ErrorStack::get().into());
                }
            }
            if openssl_sys::X509_CRL_sort(crl) != 1
                || openssl_sys::X509_CRL_sign(crl, self.key.as_ptr(), MessageDigest::sha256().as_ptr()) <= 0
            {
                return Err(openssl::error::ErrorStack::get().into());
            }
            Ok(result)
        }
    }

    /// An existing authority from its certificate and key (PEM).
    pub fn load(cert: &Path, key: &Path) -> Result<Authority, PkiError> {
        let read = |p: &Path| std::fs::read(p).map_err(|source| PkiError::Io { path: p.to_owned(), source });
        Ok(Authority { cert: X509::from_pem(&read(cert)?)?, key: PKey::private_key_from_pem(&read(key)?)? })
    }

    pub fn cert_pem(&self) -> Result<Vec<u8>, PkiError> {
        Ok(self.cert.to_pem()?)
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), PkiError> {
    std::fs::write(path, bytes).map_err(|source| PkiError::Io { path: path.to_owned(), source })
}

/// A private key: created 0600 (owner only), whatever the umask.
fn write_key(path: &Path, bytes: &[u8]) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| PkiError::Io { path: path.to_owned(), source };
    let _ = std::fs::remove_file(path); // an older file keeps its mode when rewritten
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io)?;
    file.write_all(bytes).map_err(io)
}

/// The files of one access point in a demo PKI folder, by country code.
pub fn file(dir: &Path, name: &str, what: &str) -> PathBuf {
    dir.join(format!("{name}-{what}"))
}

/// Writes the demo PKI into `dir`: `ca.pem`/`ca.key`, and for each name the TLS certificate
/// (`-tls`), RSA-2048 and Ed25519 signing certificates (`-sign-rsa`, `-sign-ed25519`), an RSA
/// key-transport and an X25519 key-agreement certificate (`-enc-rsa`, `-enc-x25519`), each as
/// `.pem` (certificate) and `.key` (PKCS#8 private key).
pub fn write_demo_pki(dir: &Path, names: &[&str]) -> Result<(), PkiError> {
    std::fs::create_dir_all(dir).map_err(|source| PkiError::Io { path: dir.to_owned(), source })?;
    // A name of its own per run: two countries' demo CAs trusted together stay distinct.
    let run = uuid::Uuid::new_v4().simple().to_string();
    let ca = Authority::new(&format!("Ventanilla demo root CA {}", &run[..8]))?;
    write(&dir.join("ca.pem"), &ca.cert_pem()?)?;
    write_key(&dir.join("ca.key"), &ca.key_pem()?)?;
    write(&dir.join("ca.crl"), &ca.crl(&[], 3650 * 86_400)?.to_pem()?)?;
    for n in names {
        let keys: [(&str, PKey<Private>, Usage); 5] = [
            ("tls", ec_key()?, Usage::Tls),
            ("sign-rsa", PKey::from_rsa(Rsa::generate(2048)?)?, Usage::Signing),
            ("enc-rsa", PKey::from_rsa(Rsa::generate(2048)?)?, Usage::KeyTransport),
            ("sign-ed25519", PKey::generate_ed25519()?, Usage::Signing),
            ("enc-x25519", PKey::generate_x25519()?, Usage::KeyAgreement),
        ];
        for (what, key, usage) in keys {
            let cert = ca.issue(&format!("{} {what}", n.to_uppercase()), &key, usage, 3650)?;
            write(&file(dir, n, &format!("{what}.pem")), &cert.to_pem()?)?;
            write_key(&file(dir, n, &format!("{what}.key")), &key.private_key_to_pem_pkcs8()?)?;
        }
    }
    write(
        &dir.join("README.txt"),
        b"TEST ONLY. Generated by `ventanilla certs demo`: a throw-away demo PKI for tests and `make demo`.\nNever use these keys for real messages.\n",
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ventanilla_core::pki::trust::{RevocationPolicy, TrustStore};

    /// Issue 14: two demo PKIs (two countries) trusted together; each one's certificates
    /// still chain to their own CA.
    #[test]
    fn two_demo_cas_coexist_in_one_truststore() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write_demo_pki(a.path(), &["cl"]).unwrap();
        write_demo_pki(b.path(), &["ec"]).unwrap();
        let load = |p: PathBuf| X509::from_pem(&std::fs::read(p).unwrap()).unwrap();
        let (ca_a, ca_b) = (load(a.path().join("ca.pem")), load(b.path().join("ca.pem")));
        assert_ne!(
            ca_a.subject_name().to_der().unwrap(),
            ca_b.subject_name().to_der().unwrap(),
            "each run names its CA"
        );
        let trust = TrustStore::new(vec![ca_a.clone(), ca_b.clone()], Vec::new(), RevocationPolicy::Off).unwrap();
        for (dir, name, ca) in [(&a, "cl", &ca_a), (&b, "ec", &ca_b)] {
            let cert = load(file(dir.path(), name, "sign-rsa.pem"));
            assert_eq!(
                cert.authority_key_id().map(|k| k.as_slice().to_vec()),
                ca.subject_key_id().map(|k| k.as_slice().to_vec())
            );
            assert!(trust.validate(&cert, &[]).is_ok(), "{name}: {:?}", trust.validate(&cert, &[]));
        }
    }
}
