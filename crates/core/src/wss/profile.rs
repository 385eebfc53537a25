//! What each eDelivery profile fixes: the signature algorithm, the key transport, the kinds
//! of keys (docs/as4.md §2.2, §2.6).

use super::decrypt::KeyTransport;
use super::ns;
use crate::pki::keys::KeyKind;
use crate::pmode::Profile;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suite {
    pub signature_method: &'static str,
    pub key_transport: KeyTransport,
    pub signing_key: KeyKind,
    pub encryption_key: KeyKind,
}

pub fn suite(profile: Profile) -> Option<Suite> {
    match profile {
        Profile::None => None,
        Profile::Edelivery115 => Some(Suite {
            signature_method: ns::RSA_SHA256,
            key_transport: KeyTransport::RsaOaep,
            signing_key: KeyKind::Rsa,
            encryption_key: KeyKind::Rsa,
        }),
        Profile::Edelivery20 => Some(Suite {
            signature_method: ns::ED25519,
            key_transport: KeyTransport::X25519,
            signing_key: KeyKind::Ed25519,
            encryption_key: KeyKind::X25519,
        }),
    }
}
