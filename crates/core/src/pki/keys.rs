//! Private keys and certificates from PEM or PKCS#12. Passwords come from the environment
//! or a file, never from a P-Mode or a log line.

use openssl::pkcs12::Pkcs12;
use openssl::pkey::{Id, PKey, Private, Public};
use openssl::x509::X509;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{file}: {message}")]
    File { file: PathBuf, message: String },
    #[error("{0}")]
    Password(String),
}

fn file_error(file: &Path, message: impl std::fmt::Display) -> KeyError {
    KeyError::File { file: file.to_owned(), message: message.to_string() }
}

fn read(file: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(file).map_err(|e| file_error(file, e))
}

/// Where a password comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PasswordSource {
    Env(String),
    File(PathBuf),
}

impl PasswordSource {
    pub fn read(&self) -> Result<String, KeyError> {
        match self {
            PasswordSource::Env(var) => {
                std::env::var(var).map_err(|_| KeyError::Password(format!("environment variable {var} is not set")))
            }
            PasswordSource::File(f) => std::fs::read_to_string(f)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
                .map_err(|e| file_error(f, e)),
        }
    }
}

/// One certificate from a PEM or DER file (the first if the PEM holds a chain).
pub fn load_cert(file: &Path) -> Result<X509, KeyError> {
    let bytes = read(file)?;
    if bytes.starts_with(b"-----") || bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        X509::from_pem(&bytes).map_err(|e| file_error(file, format!("not a PEM certificate: {e}")))
    } else {
        X509::from_der(&bytes).map_err(|e| file_error(file, format!("not a DER certificate: {e}")))
    }
}

pub fn load_certs_pem(file: &Path) -> Result<Vec<X509>, KeyError> {
    let bytes = read(file)?;
    let certs = X509::stack_from_pem(&bytes).map_err(|e| file_error(file, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(file, "no certificate in the file"));
    }
    Ok(certs)
}

/// A private key from PEM (PKCS#8 or traditional), optionally encrypted.
pub fn load_key(file: &Path, password: Option<&PasswordSource>) -> Result<PKey<Private>, KeyError> {
    let bytes = read(file)?;
    match password {
        Some(p) => PKey::private_key_from_pem_passphrase(&bytes, p.read()?.as_bytes()),
        None => PKey::private_key_from_pem(&bytes),
    }
    .map_err(|e| file_error(file, format!("cannot read the private key: {e}")))
}

/// Key, certificate and chain from a PKCS#12 file.
pub fn load_pkcs12(file: &Path, password: &PasswordSource) -> Result<(PKey<Private>, X509, Vec<X509>), KeyError> {
    let bytes = read(file)?;
    // A password that cannot be read is that error ("environment variable X is not set"),
    // not a guess about a wrong password.
    let password = password.read()?;
    let parsed = Pkcs12::from_der(&bytes)
        .and_then(|p| p.parse2(&password))
        .map_err(|e| file_error(file, format!("cannot open the PKCS#12 file (wrong password?): {e}")))?;
    let key = parsed.pkey.ok_or_else(|| file_error(file, "no private key inside"))?;
    let cert = parsed.cert.ok_or_else(|| file_error(file, "no certificate inside"))?;
    let chain = parsed.ca.map(|s| s.into_iter().collect()).unwrap_or_default();
    Ok((key, cert, chain))
}

/// The algorithm family of a key, which the profiles constrain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    Ed25519,
    X25519,
    Other,
}

pub fn kind_of(key: &PKey<impl openssl::pkey::HasPublic>) -> KeyKind {
    match key.id() {
        Id::RSA => KeyKind::Rsa,
        Id::ED25519 => KeyKind::Ed25519,
        Id::X25519 => KeyKind::X25519,
        _ => KeyKind::Other,
    }
}

pub fn public_key(cert: &X509) -> Result<PKey<Public>, KeyError> {
    cert.public_key().map_err(|e| KeyError::Password(format!("certificate has no usable public key: {e}")))
}

/// The Subject Key Identifier: the extension if present, else SHA-1 of the subjectPublicKey
/// bits (as WSS4J computes it).
pub fn subject_key_identifier(cert: &X509) -> Vec<u8> {
    if let Some(ski) = cert.subject_key_id() {
        return ski.as_slice().to_vec();
    }
    let spki = cert.public_key().and_then(|k| k.public_key_to_der()).unwrap_or_default();
    // The BIT STRING content is the tail of the SPKI: for the key types we use, the public key
    // bytes follow the algorithm identifier; hashing the whole SPKI would differ from WSS4J.
    let bits = spki_bits(&spki).unwrap_or(&spki);
    openssl::sha::sha1(bits).to_vec()
}

/// The subjectPublicKey BIT STRING contents (without the unused-bits byte) of a DER SPKI.
fn spki_bits(spki: &[u8]) -> Option<&[u8]> {
    // SEQUENCE { SEQUENCE algorithm, BIT STRING key }
    let (_, inner) = der_header(spki, 0x30)?;
    let (alg_len, after_alg_header) = der_header(inner, 0x30)?;
    let rest = after_alg_header.get(alg_len..)?;
    let (len, bits) = der_header(rest, 0x03)?;
    bits.get(1..len)
}

fn der_header(input: &[u8], tag: u8) -> Option<(usize, &[u8])> {
    if *input.first()? != tag {
        return None;
    }
    let first = *input.get(1)? as usize;
    if first < 0x80 {
        return Some((first, input.get(2..)?));
    }
    let n = first & 0x7f;
    if n == 0 || n > 4 {
        return None;
    }
    let mut len = 0usize;
    for i in 0..n {
        len = (len << 8) | *input.get(2 + i)? as usize;
    }
    Some((len, input.get(2 + n..)?))
}

/// SHA-256 fingerprint of a certificate, hex, for logs and the console.
pub fn fingerprint(cert: &X509) -> String {
    cert.digest(openssl::hash::MessageDigest::sha256()).map(|d| hex::encode(d.as_ref())).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unset_password_variable_is_named_not_guessed_at() {
        let dir = tempfile::tempdir().unwrap();
        let p12 = dir.path().join("k.p12");
        std::fs::write(&p12, b"not read before the password").unwrap();
        let source = PasswordSource::Env("VENTANILLA_TEST_SURELY_UNSET_PASSWORD".into());
        let err = load_pkcs12(&p12, &source).unwrap_err().to_string();
        assert!(err.contains("environment variable VENTANILLA_TEST_SURELY_UNSET_PASSWORD is not set"), "{err}");
        assert!(!err.contains("wrong password"), "{err}");
    }
}
