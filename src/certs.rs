//! Production certificates: `ventanilla certs request` makes the key pairs a profile needs with
//! PKCS#10 requests for a CA (keys written 0600), and `ventanilla certs import` checks what the CA
//! issued against its key and the profile before installing it.
//!
//! eDelivery AS4 1.15: RSA signing and RSA-OAEP key transport. 2.0: Ed25519 signing and X25519
//! key agreement. An X25519 key cannot sign, so it has no CSR: the request folder holds its
//! public key (`…-enc-x25519.pub.pem`), which the CA certifies directly (with OpenSSL:
//! `openssl x509 -new -force_pubkey PUB.pem -subj … -CA ca.pem -CAkey ca.key
//! -extfile <(echo keyUsage=critical,keyAgreement)`), proof of possession being the
//! organisational procedure that carries the request. Every profile also gets a TLS key (ECDSA
//! P-256) and request for the AS4 endpoint's host name.

use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::x509::extension::{ExtendedKeyUsage, KeyUsage, SubjectAlternativeName};
use openssl::x509::{X509, X509Name, X509Req};
use std::path::{Path, PathBuf};

/// What a key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Sign,
    Enc,
    Tls,
}

impl Usage {
    pub fn parse(value: &str) -> Option<Usage> {
        match value {
            "sign" => Some(Usage::Sign),
            "enc" => Some(Usage::Enc),
            "tls" => Some(Usage::Tls),
            _ => None,
        }
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn write_key(path: &Path, key: &PKey<Private>) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let pem = key.private_key_to_pem_pkcs8().map_err(err)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e} (a request never overwrites a key)", path.display()))?;
    file.write_all(&pem).map_err(err)?;
    file.sync_all().map_err(err)
}

fn subject(party: &str, organisation: Option<&str>, country: Option<&str>, what: &str) -> Result<X509Name, String> {
    let mut n = X509Name::builder().map_err(err)?;
    if let Some(c) = country {
        n.append_entry_by_nid(Nid::COUNTRYNAME, c).map_err(err)?;
    }
    if let Some(o) = organisation {
        n.append_entry_by_nid(Nid::ORGANIZATIONNAME, o).map_err(err)?;
    }
    n.append_entry_by_nid(Nid::COMMONNAME, &format!("{party} {what}")).map_err(err)?;
    Ok(n.build())
}

fn request(key: &PKey<Private>, name: &X509Name, usage: Usage, host: Option<&str>) -> Result<X509Req, String> {
    let mut b = X509Req::builder().map_err(err)?;
    b.set_subject_name(name).map_err(err)?;
    b.set_pubkey(key).map_err(err)?;
    let mut extensions = Stack::new().map_err(err)?;
    match usage {
        Usage::Sign => {
            extensions
                .push(KeyUsage::new().critical().digital_signature().non_repudiation().build().map_err(err)?)
                .map_err(err)?;
        }
        Usage::Enc => {
            extensions.push(KeyUsage::new().critical().key_encipherment().build().map_err(err)?).map_err(err)?;
        }
        Usage::Tls => {
            extensions
                .push(KeyUsage::new().critical().digital_signature().key_agreement().build().map_err(err)?)
                .map_err(err)?;
            extensions.push(ExtendedKeyUsage::new().server_auth().client_auth().build().map_err(err)?).map_err(err)?;
            if let Some(host) = host {
                let san = SubjectAlternativeName::new().dns(host).build(&b.x509v3_context(None)).map_err(err)?;
                extensions.push(san).map_err(err)?;
            }
        }
    }
    b.add_extensions(&extensions).map_err(err)?;
    // Ed25519 signs without a separate digest.
    let digest = if key.id() == openssl::pkey::Id::ED25519 { MessageDigest::null() } else { MessageDigest::sha256() };
    b.sign(key, digest).map_err(err)?;
    Ok(b.build())
}

/// What `certs request` wrote.
pub struct Requested {
    pub files: Vec<PathBuf>,
}

/// Writes into `out` the keys (0600) and requests for `party` under `profile`.
pub fn request_all(
    out: &Path,
    party: &str,
    profile: &str,
    host: Option<&str>,
    organisation: Option<&str>,
    country: Option<&str>,
) -> Result<Requested, String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let stem =
        party.to_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect::<String>();
    let mut files = Vec::new();
    let mut emit = |what: &str, key: PKey<Private>, usage: Usage| -> Result<(), String> {
        let key_file = out.join(format!("{stem}-{what}.key"));
        write_key(&key_file, &key)?;
        files.push(key_file);
        let name = subject(party, organisation, country, what)?;
        if key.id() == openssl::pkey::Id::X25519 {
            let public = out.join(format!("{stem}-{what}.pub.pem"));
            std::fs::write(&public, key.public_key_to_pem().map_err(err)?).map_err(err)?;
            files.push(public);
        } else {
            let csr = out.join(format!("{stem}-{what}.csr"));
            std::fs::write(&csr, request(&key, &name, usage, host)?.to_pem().map_err(err)?).map_err(err)?;
            files.push(csr);
        }
        Ok(())
    };
    match profile {
        "edelivery-1.15" => {
            emit(
                "sign-rsa",
                PKey::from_rsa(openssl::rsa::Rsa::generate(3072).map_err(err)?).map_err(err)?,
                Usage::Sign,
            )?;
            emit("enc-rsa", PKey::from_rsa(openssl::rsa::Rsa::generate(3072).map_err(err)?).map_err(err)?, Usage::Enc)?;
        }
        "edelivery-2.0" => {
            emit("sign-ed25519", PKey::generate_ed25519().map_err(err)?, Usage::Sign)?;
            emit("enc-x25519", PKey::generate_x25519().map_err(err)?, Usage::Enc)?;
        }
        other => return Err(format!("profile '{other}' is not edelivery-1.15 or edelivery-2.0")),
    }
    let group = openssl::ec::EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(err)?;
    emit("tls", PKey::from_ec_key(openssl::ec::EcKey::generate(&group).map_err(err)?).map_err(err)?, Usage::Tls)?;
    Ok(Requested { files })
}

/// Checks a certificate the CA issued against its key, the profile and (when given) the CA
/// certificates; returns what was found, one line each. Errors say what is wrong.
pub fn check_issued(
    key: &Path,
    cert: &Path,
    profile: &str,
    usage: Usage,
    ca: Option<&Path>,
) -> Result<Vec<String>, String> {
    use crate::pki::keys::{KeyKind, kind_of};
    let key = crate::pki::keys::load_key(key, None).map_err(err)?;
    let cert = crate::pki::keys::load_cert(cert).map_err(err)?;
    let public = cert.public_key().map_err(err)?;
    let mut lines = Vec::new();
    if public.public_key_to_der().map_err(err)? != public_of(&key)? {
        return Err("the certificate is not for this key (its public key differs)".into());
    }
    lines.push("the certificate is for this key".into());
    let kind = kind_of(&public);
    let expected = match (profile, usage) {
        (_, Usage::Tls) => None,
        ("edelivery-1.15", _) => Some(KeyKind::Rsa),
        ("edelivery-2.0", Usage::Sign) => Some(KeyKind::Ed25519),
        ("edelivery-2.0", Usage::Enc) => Some(KeyKind::X25519),
        (other, _) => return Err(format!("profile '{other}' is not edelivery-1.15 or edelivery-2.0")),
    };
    if let Some(expected) = expected
        && kind != expected
    {
        return Err(format!("{profile} needs a {expected:?} key here, the certificate has {kind:?}"));
    }
    let now = openssl::asn1::Asn1Time::days_from_now(0).map_err(err)?;
    if cert.not_after() < now || cert.not_before() > now {
        return Err(format!("not valid now (valid {} to {})", cert.not_before(), cert.not_after()));
    }
    lines.push(format!("valid until {}", cert.not_after()));
    if let Some(ca) = ca {
        let roots = crate::pki::keys::load_certs_pem(ca).map_err(err)?;
        let trust = crate::pki::trust::TrustStore::new(roots, Vec::new(), crate::pki::trust::RevocationPolicy::Off)
            .map_err(err)?;
        trust.validate(&cert, &[]).map_err(|e| format!("does not chain to {}: {e}", ca.display()))?;
        lines.push(format!("chains to {}", ca.display()));
    }
    lines.push(format!("subject {}", crate::pki::trust::subject_of(&cert)));
    Ok(lines)
}

fn public_of(key: &PKey<Private>) -> Result<Vec<u8>, String> {
    key.public_key_to_der().map_err(err)
}

/// Installs a checked key and certificate into `dir` as `name.key` (0600) and `name.pem`.
pub fn install(key: &Path, cert: &Path, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (key_to, cert_to) = (dir.join(format!("{name}.key")), dir.join(format!("{name}.pem")));
    if key != key_to {
        std::fs::copy(key, &key_to).map_err(|e| format!("{}: {e}", key_to.display()))?;
    }
    std::fs::set_permissions(&key_to, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    let pem = X509::from_pem(&std::fs::read(cert).map_err(err)?)
        .or_else(|_| X509::from_der(&std::fs::read(cert).unwrap_or_default()))
        .map_err(err)?
        .to_pem()
        .map_err(err)?;
    std::fs::write(&cert_to, pem).map_err(err)?;
    Ok((key_to, cert_to))
}
