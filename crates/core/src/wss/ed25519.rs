//! Ed25519 signing and verification through `ring`, with the keys still loaded and held by
//! OpenSSL (PKCS#12, PEM, certificates).
//!
//! Why a second library for one algorithm: OpenSSL 3.0's Ed25519 is the portable reference
//! code, and here it costs 189 µs a verification and 78 µs a signature against ring's 90 and
//! 50 µs (measured on the bench machine). Every eDelivery 2.0 message is verified twice
//! (the message and its receipt) and signed twice, so this was the largest single item of
//! the 2.0 profile. `ring` is already linked for TLS. Both follow RFC 8032 (cofactorless
//! check, `S < L` required), and the tests below check each against the other.

use openssl::pkey::{HasPublic, Id, PKey, PKeyRef, Private};
use ring::signature::{ED25519, Ed25519KeyPair, UnparsedPublicKey};
use std::sync::{Arc, Mutex};

/// Whether `signature` is `key`'s Ed25519 signature of `data`.
pub fn verify(key: &PKeyRef<impl HasPublic>, data: &[u8], signature: &[u8]) -> bool {
    if key.id() != Id::ED25519 {
        return false;
    }
    match key.raw_public_key() {
        Ok(public) => UnparsedPublicKey::new(&ED25519, public).verify(data, signature).is_ok(),
        Err(_) => false,
    }
}

/// How many signing keys are kept ready (an access point has one or two; rotation adds one).
const KEYS_KEPT: usize = 8;

/// Signing keys prepared for ring, by public key: preparing one costs as much as a signature
/// (the public point is recomputed from the seed and checked).
static PREPARED: Mutex<Vec<(Vec<u8>, Arc<Ed25519KeyPair>)>> = Mutex::new(Vec::new());

/// `key`'s Ed25519 signature of `data`.
pub fn sign(key: &PKey<Private>, data: &[u8]) -> Result<Vec<u8>, SignKeyError> {
    if key.id() != Id::ED25519 {
        return Err(SignKeyError("not an Ed25519 key"));
    }
    let public = key.raw_public_key().map_err(|_| SignKeyError("no raw public key"))?;
    let prepared = {
        let kept = PREPARED.lock().unwrap_or_else(|e| e.into_inner());
        kept.iter().find(|(p, _)| *p == public).map(|(_, pair)| pair.clone())
    };
    let pair = match prepared {
        Some(pair) => pair,
        None => {
            let seed = Zeroing(key.raw_private_key().map_err(|_| SignKeyError("no raw private key"))?);
            let pair = Arc::new(
                Ed25519KeyPair::from_seed_and_public_key(&seed.0, &public)
                    .map_err(|_| SignKeyError("the private and public halves do not match"))?,
            );
            let mut kept = PREPARED.lock().unwrap_or_else(|e| e.into_inner());
            if kept.len() >= KEYS_KEPT {
                kept.remove(0);
            }
            kept.push((public, pair.clone()));
            pair
        }
    };
    Ok(pair.sign(data).as_ref().to_vec())
}

#[derive(Debug, thiserror::Error)]
#[error("Ed25519 signing key: {0}")]
pub struct SignKeyError(&'static str);

/// A seed that is overwritten when dropped.
struct Zeroing(Vec<u8>);

impl Drop for Zeroing {
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            // SAFETY: `b` is a valid, aligned, exclusive reference. Volatile, so the wipe of a
            // buffer about to be freed is not optimized out.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openssl_sign(key: &PKey<Private>, data: &[u8]) -> Vec<u8> {
        openssl::sign::Signer::new_without_digest(key).unwrap().sign_oneshot_to_vec(data).unwrap()
    }

    fn openssl_verify(key: &PKey<Private>, data: &[u8], signature: &[u8]) -> bool {
        openssl::sign::Verifier::new_without_digest(key).unwrap().verify_oneshot(signature, data).unwrap_or(false)
    }

    #[test]
    fn signatures_agree_with_openssl_both_ways() {
        for _ in 0..4 {
            let key = PKey::generate_ed25519().unwrap();
            for data in [&b""[..], b"<ds:SignedInfo/>", &[0xa5; 3000]] {
                let ours = sign(&key, data).unwrap();
                // Ed25519 is deterministic: the same signature from both libraries.
                assert_eq!(ours, openssl_sign(&key, data));
                assert!(verify(&key, data, &ours));
                assert!(openssl_verify(&key, data, &ours));
            }
        }
    }

    #[test]
    fn altered_data_signatures_and_keys_are_refused() {
        let key = PKey::generate_ed25519().unwrap();
        let other = PKey::generate_ed25519().unwrap();
        let signature = sign(&key, b"message").unwrap();
        assert!(!verify(&key, b"messagE", &signature));
        assert!(!verify(&other, b"message", &signature));
        let mut flipped = signature.clone();
        flipped[10] ^= 1;
        assert!(!verify(&key, b"message", &flipped));
        assert!(!verify(&key, b"message", &signature[..63]));
        // S + L: the same point, a non-canonical scalar (RFC 8032 §5.1.7 requires S < L).
        let mut malleated = signature.clone();
        let l: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for i in 0..32 {
            let sum = malleated[32 + i] as u16 + l[i] as u16 + carry;
            malleated[32 + i] = sum as u8;
            carry = sum >> 8;
        }
        assert!(!verify(&key, b"message", &malleated));
        assert!(!openssl_verify(&key, b"message", &malleated));
    }

    #[test]
    fn other_key_types_are_refused() {
        let rsa = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        assert!(sign(&rsa, b"x").is_err());
        assert!(!verify(&rsa, b"x", &[0; 64]));
    }

    #[test]
    fn many_keys_stay_correct_past_the_kept_ones() {
        let keys: Vec<_> = (0..KEYS_KEPT + 3).map(|_| PKey::generate_ed25519().unwrap()).collect();
        for _ in 0..2 {
            for key in &keys {
                assert_eq!(sign(key, b"rotation").unwrap(), openssl_sign(key, b"rotation"));
            }
        }
    }
}
