//! Decryption of encrypted attachments, strict about the profile's algorithms and tolerant
//! of the encodings real peers use (docs/as4.md §2.6.4): namespace-based matching, `Id` or
//! `wsu:Id`, every STR form, Salt as text or wrapped, KeyLength in bytes or bits.

use super::cipher;
use super::digest::unb64;
use super::keyinfo::{KeyReference, read_key_info};
use super::ns;
use super::sign::Credential;
use super::verify::security_header;
use super::xml::{Xml, child, children, compact_text};
use crate::ebms::{EbmsCode, EbmsError};
use crate::pki::keys::{KeyKind, kind_of};
use libxml::tree::Node;
use openssl::hash::MessageDigest;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The key transport the link's profile requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyTransport {
    /// edelivery-1.15: RSA-OAEP (xmlenc11, MGF1-SHA256); legacy rsa-oaep-mgf1p accepted.
    RsaOaep,
    /// edelivery-2.0: X25519 key agreement, HKDF-SHA256, AES-128 key wrap.
    X25519,
}

pub struct EncryptedFile<'a> {
    pub content_id: &'a str,
    pub path: &'a Path,
    /// The file is ours to overwrite (a staging copy): when small
    /// ([`super::content::IN_MEMORY_MAX`]) it is decrypted into itself, else into `<path>.plain`.
    pub overwrite: bool,
    /// The part's bytes when the receiver still holds them (a small part, its file not
    /// written): decrypted in memory, and the plaintext handed back instead of written.
    pub in_memory: Option<&'a [u8]>,
}

#[derive(Debug, Clone)]
pub struct DecryptedPart {
    pub content_id: String,
    /// EncryptedData/@MimeType: the part's type before encryption.
    pub content_type: Option<String>,
    /// Where the plaintext is, or belongs when it is still in memory (`plain`).
    pub path: PathBuf,
    pub size: u64,
    /// The plaintext of a part decrypted in memory; not written to `path`.
    pub plain: Option<Vec<u8>>,
}

fn policy(detail: impl Into<String>) -> EbmsError {
    EbmsError::new(EbmsCode::PolicyNoncompliance, detail)
}

fn failed(detail: impl Into<String>) -> EbmsError {
    EbmsError::new(EbmsCode::FailedDecryption, detail)
}

fn algorithm(node: &Node) -> String {
    node.get_property_no_ns("Algorithm").unwrap_or_default()
}

/// Decrypts every part; each must be covered by an EncryptedData of the profile's algorithm.
pub fn decrypt_parts(
    xml: &Xml,
    parts: &[EncryptedFile<'_>],
    transport: KeyTransport,
    keys: &[Credential],
) -> Result<Vec<DecryptedPart>, EbmsError> {
    let security =
        security_header(xml).ok_or_else(|| policy("the message is not encrypted: no wsse:Security header"))?;
    // By the part they name (the first, if two name one), so finding each part's stays
    // linear in the parts.
    let mut encrypted_data: HashMap<String, Node> = HashMap::new();
    for ed in children(&security, ns::XENC, "EncryptedData") {
        if let Some(reference) = cipher_reference(&ed) {
            encrypted_data.entry(reference).or_insert(ed);
        }
    }
    let mut out = Vec::new();
    let mut content_keys: HashMap<String, Vec<u8>> = HashMap::new();
    for part in parts {
        let ed = encrypted_data
            .get(&format!("cid:{}", part.content_id))
            .ok_or_else(|| policy(format!("attachment cid:{} is not encrypted", part.content_id)))?;
        if ed.get_property_no_ns("Type").as_deref() != Some(ns::ATTACHMENT_CONTENT_ONLY) {
            return Err(policy(format!(
                "EncryptedData for cid:{} is not of type Attachment-Content-Only",
                part.content_id
            )));
        }
        let method = child(ed, ns::XENC, "EncryptionMethod").map(|m| algorithm(&m)).unwrap_or_default();
        if method != ns::AES128_GCM {
            return Err(policy(format!("cid:{} is encrypted with '{method}', not AES-128-GCM", part.content_id)));
        }
        let ek = encrypted_key_for(xml, &security, ed)?;
        let ek_key = ek.get_property_no_ns("Id").or_else(|| ek.get_property_ns("Id", ns::WSU)).unwrap_or_default();
        let cek = match content_keys.get(&ek_key) {
            Some(k) => k.clone(),
            None => {
                let k = unwrap_content_key(xml, &security, &ek, transport, keys)?;
                content_keys.insert(ek_key, k.clone());
                k
            }
        };
        let failed = |e: cipher::CipherError| failed(format!("cid:{}: {e}", part.content_id));
        let (path, size, plain) = if let Some(bytes) = part.in_memory {
            let plain = cipher::gcm_decrypt_bytes(&cek, bytes).map_err(failed)?;
            (part.path.to_path_buf(), plain.len() as u64, Some(plain))
        } else if part.overwrite
            && std::fs::metadata(part.path).map(|m| m.len() <= super::content::IN_MEMORY_MAX).unwrap_or(false)
        {
            (part.path.to_path_buf(), cipher::gcm_decrypt_in_place(&cek, part.path).map_err(failed)?, None)
        } else {
            let plain = part.path.with_extension("plain");
            let size = cipher::gcm_decrypt_file(&cek, part.path, &plain).map_err(failed)?;
            (plain, size, None)
        };
        out.push(DecryptedPart {
            content_id: part.content_id.to_owned(),
            content_type: ed.get_property_no_ns("MimeType"),
            path,
            size,
            plain,
        });
    }
    Ok(out)
}

fn cipher_reference(ed: &Node) -> Option<String> {
    let data = child(ed, ns::XENC, "CipherData")?;
    child(&data, ns::XENC, "CipherReference")?.get_property_no_ns("URI")
}

/// The EncryptedKey of an EncryptedData: by its KeyInfo's STR, else the one whose
/// ReferenceList names it.
fn encrypted_key_for(xml: &Xml, security: &Node, ed: &Node) -> Result<Node, EbmsError> {
    let reference = child(ed, ns::DS, "KeyInfo")
        .and_then(|ki| child(&ki, ns::WSSE, "SecurityTokenReference"))
        .and_then(|s| child(&s, ns::WSSE, "Reference"))
        .and_then(|r| r.get_property_no_ns("URI"));
    if let Some(uri) = reference {
        let id = uri.trim_start_matches('#');
        let found = xml.elements_with_id(id);
        return match found.as_slice() {
            [ek] if super::xml::is(ek, ns::XENC, "EncryptedKey") => Ok(ek.clone()),
            _ => Err(failed(format!("EncryptedData refers to {uri}, which is not one EncryptedKey"))),
        };
    }
    let ed_id = ed.get_property_no_ns("Id").or_else(|| ed.get_property_ns("Id", ns::WSU)).unwrap_or_default();
    children(security, ns::XENC, "EncryptedKey")
        .into_iter()
        .find(|ek| {
            child(ek, ns::XENC, "ReferenceList")
                .map(|rl| {
                    children(&rl, ns::XENC, "DataReference")
                        .iter()
                        .any(|d| d.get_property_no_ns("URI").as_deref() == Some(&format!("#{ed_id}")))
                })
                .unwrap_or(false)
        })
        .ok_or_else(|| failed("no EncryptedKey for an EncryptedData"))
}

fn our_key<'a>(reference: &KeyReference, keys: &'a [Credential], kind: KeyKind) -> Result<&'a Credential, EbmsError> {
    keys.iter()
        .filter(|k| kind_of(&k.key) == kind)
        .find(|k| reference.matches(&k.cert))
        .ok_or_else(|| failed("the message is encrypted for a certificate this access point has no key for"))
}

fn unwrap_content_key(
    xml: &Xml,
    security: &Node,
    ek: &Node,
    transport: KeyTransport,
    keys: &[Credential],
) -> Result<Vec<u8>, EbmsError> {
    let method_node =
        child(ek, ns::XENC, "EncryptionMethod").ok_or_else(|| policy("EncryptedKey has no EncryptionMethod"))?;
    let method = algorithm(&method_node);
    let wrapped = child(ek, ns::XENC, "CipherData")
        .and_then(|cd| child(&cd, ns::XENC, "CipherValue"))
        .and_then(|cv| unb64(&cv.get_content()))
        .ok_or_else(|| failed("EncryptedKey has no base64 CipherValue"))?;
    let key_info = child(ek, ns::DS, "KeyInfo").ok_or_else(|| failed("EncryptedKey has no KeyInfo"))?;
    let cek = match transport {
        KeyTransport::RsaOaep => {
            let (digest, mgf1) = match method.as_str() {
                ns::RSA_OAEP => {
                    let digest = child(&method_node, ns::DS, "DigestMethod")
                        .map(|d| algorithm(&d))
                        .unwrap_or_else(|| ns::SHA1.into());
                    let mgf = child(&method_node, ns::XENC11, "MGF").map(|m| algorithm(&m)).unwrap_or_default();
                    if digest != ns::SHA256 || mgf != ns::MGF1_SHA256 {
                        return Err(policy(format!(
                            "RSA-OAEP with digest '{digest}' and MGF '{mgf}' is weaker than the profile's SHA-256/MGF1-SHA256"
                        )));
                    }
                    (MessageDigest::sha256(), MessageDigest::sha256())
                }
                // Legacy form, accepted on input only (Holodeck 2017, docs/as4.md §2.2).
                ns::RSA_OAEP_MGF1P => {
                    let digest = child(&method_node, ns::DS, "DigestMethod")
                        .map(|d| algorithm(&d))
                        .unwrap_or_else(|| ns::SHA1.into());
                    let md = if digest == ns::SHA256 { MessageDigest::sha256() } else { MessageDigest::sha1() };
                    tracing::info!("legacy rsa-oaep-mgf1p key transport accepted");
                    (md, MessageDigest::sha1())
                }
                other => return Err(policy(format!("key transport '{other}' is not the profile's RSA-OAEP"))),
            };
            let reference = read_key_info(xml, &key_info, security).map_err(failed)?;
            let ours = our_key(&reference, keys, KeyKind::Rsa)?;
            cipher::rsa_oaep_decrypt(&ours.key, &wrapped, digest, mgf1)
                .map_err(|_| failed("RSA-OAEP decryption of the content key failed"))?
        }
        KeyTransport::X25519 => {
            if method != ns::KW_AES128 {
                return Err(policy(format!("key wrap '{method}' is not the profile's kw-aes128")));
            }
            let agreement = child(&key_info, ns::XENC, "AgreementMethod")
                .ok_or_else(|| policy("EncryptedKey has no AgreementMethod"))?;
            if algorithm(&agreement) != ns::X25519 {
                return Err(policy(format!("key agreement '{}' is not the profile's X25519", algorithm(&agreement))));
            }
            let kdm = child(&agreement, ns::XENC11, "KeyDerivationMethod")
                .ok_or_else(|| policy("AgreementMethod has no KeyDerivationMethod"))?;
            if algorithm(&kdm) != ns::HKDF {
                return Err(policy(format!("key derivation '{}' is not HKDF", algorithm(&kdm))));
            }
            let params = child(&kdm, ns::DSIG_MORE, "HKDFParams")
                .ok_or_else(|| policy("KeyDerivationMethod has no HKDFParams"))?;
            if let Some(prf) = child(&params, ns::DSIG_MORE, "PRF")
                && algorithm(&prf) != ns::HMAC_SHA256
            {
                return Err(policy(format!("HKDF PRF '{}' is not HMAC-SHA256", algorithm(&prf))));
            }
            let salt = match child(&params, ns::DSIG_MORE, "Salt") {
                None => Vec::new(),
                Some(s) => {
                    let text = child(&s, ns::DSIG_MORE, "Specified")
                        .map(|sp| compact_text(&sp))
                        .unwrap_or_else(|| compact_text(&s));
                    let salt = unb64(&text).ok_or_else(|| failed("HKDF Salt is not base64"))?;
                    if salt.len() > 1024 {
                        return Err(policy("HKDF Salt longer than 1 KiB"));
                    }
                    salt
                }
            };
            let info = match child(&params, ns::DSIG_MORE, "Info") {
                None => Vec::new(),
                Some(i) => unb64(&compact_text(&i)).ok_or_else(|| failed("HKDF Info is not base64"))?,
            };
            if let Some(len) = child(&params, ns::DSIG_MORE, "KeyLength") {
                let value = compact_text(&len);
                if value != "16" && value != "128" {
                    return Err(policy(format!("HKDF KeyLength {value} does not fit kw-aes128")));
                }
            }
            let originator = child(&agreement, ns::XENC, "OriginatorKeyInfo")
                .and_then(|o| child(&o, ns::DSIG11, "DEREncodedKeyValue"))
                .and_then(|d| unb64(&d.get_content()))
                .ok_or_else(|| policy("AgreementMethod has no DEREncodedKeyValue originator key"))?;
            let originator = cipher::x25519_public_from_der(&originator).map_err(|e| failed(e.to_string()))?;
            let recipient = child(&agreement, ns::XENC, "RecipientKeyInfo")
                .ok_or_else(|| failed("AgreementMethod has no RecipientKeyInfo"))?;
            let recipient = match child(&recipient, ns::DS, "KeyValue") {
                Some(wrapper) => wrapper,
                None => recipient,
            };
            let reference = read_key_info(xml, &recipient, security).map_err(failed)?;
            let ours = our_key(&reference, keys, KeyKind::X25519)?;
            let z = cipher::x25519(&ours.key, &originator).map_err(|e| failed(e.to_string()))?;
            let kek = cipher::hkdf_sha256(&z, &salt, &info, 16).map_err(|e| failed(e.to_string()))?;
            cipher::aes_unwrap(&kek, &wrapped).map_err(|e| failed(e.to_string()))?
        }
    };
    if cek.len() != 16 {
        return Err(failed(format!("content key has {} bytes, AES-128 needs 16", cek.len())));
    }
    Ok(cek)
}
