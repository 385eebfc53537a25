//! Certificates parsed once per process: the same DER (a partner's certificate in every message
//! it signs, the certificates a P-Mode binds) gives the same shared `X509`, without decoding it
//! again (OpenSSL's decoder was ~13% of a receiver's CPU in `make bench`). Keyed by the exact
//! bytes, so a hit is the very object a fresh parse would give; bounded, so certificates an
//! attacker makes up cannot grow it.

use openssl::error::ErrorStack;
use openssl::x509::X509;
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

/// Distinct certificates kept. An access point sees a few per partner; past this the cache
/// starts over.
const CAPACITY: usize = 1024;

static PARSED: LazyLock<Mutex<HashMap<Vec<u8>, X509>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// `X509::from_der`, remembered.
pub fn certificate(der: &[u8]) -> Result<X509, ErrorStack> {
    if let Some(cert) = PARSED.lock().ok().and_then(|cache| cache.get(der).cloned()) {
        return Ok(cert);
    }
    let cert = X509::from_der(der)?;
    if let Ok(mut cache) = PARSED.lock() {
        if cache.len() >= CAPACITY {
            cache.clear();
        }
        cache.insert(der.to_vec(), cert.clone());
    }
    Ok(cert)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_bytes_give_an_equal_certificate_and_garbage_an_error() {
        let authority = ventanilla_testkit::demo_pki::Authority::new("Parsed once CA").unwrap();
        let (cert, _) = authority.issue_tls("parsed.example").unwrap();
        let der = cert.to_der().unwrap();
        let first = certificate(&der).unwrap();
        let second = certificate(&der).unwrap();
        assert_eq!(first.to_der().unwrap(), der);
        assert_eq!(second.to_der().unwrap(), der);
        assert!(certificate(b"not a certificate").is_err());
        assert!(certificate(&der[..der.len() - 1]).is_err());
    }
}
