//! XML Encryption of the attachments (docs/as4.md §2.4, §2.6): one content key, one
//! EncryptedKey (RSA-OAEP key transport for 1.15, X25519 + HKDF + AES-KW for 2.0) and one
//! EncryptedData per MIME part. The part bodies become IV ‖ ciphertext ‖ tag.

use super::cipher::{self, CipherError};
use super::content::Content;
use super::digest::b64;
use super::keyinfo::write_key_info;
use super::ns;
use crate::ebms::tree::escape;
use crate::pki::keys::{KeyKind, kind_of};
use crate::pmode::model::TokenReference;
use openssl::x509::X509;
use std::path::PathBuf;

pub struct PartToEncrypt<'a> {
    pub content_id: &'a str,
    /// The part's Content-Type before encryption (recorded as EncryptedData/@MimeType).
    pub content_type: &'a str,
    pub plaintext: Content<'a>,
    pub ciphertext: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum EncryptError {
    #[error(transparent)]
    Cipher(#[from] CipherError),
    #[error("crypto: {0}")]
    Crypto(#[from] openssl::error::ErrorStack),
    #[error("the partner's encryption certificate has a {0:?} key, which the profile cannot use")]
    KeyType(KeyKind),
}

/// Encrypts every part for `recipient`; returns the XML that goes into wsse:Security before
/// the signature (recipient token, EncryptedKey, EncryptedData elements).
pub fn encrypt_parts(
    parts: &[PartToEncrypt<'_>],
    recipient: &X509,
    token: TokenReference,
    id_suffix: &str,
) -> Result<String, EncryptError> {
    encrypt_parts_keeping(parts, recipient, token, id_suffix).map(|(xml, _)| xml)
}

/// By part, the bytes of a ciphertext file written from memory.
pub type Written = Vec<Option<Vec<u8>>>;

/// [`encrypt_parts`], also returning, by part, the ciphertext file's bytes of each part
/// encrypted from memory (`None` for a part streamed from its file).
pub fn encrypt_parts_keeping(
    parts: &[PartToEncrypt<'_>],
    recipient: &X509,
    token: TokenReference,
    id_suffix: &str,
) -> Result<(String, Written), EncryptError> {
    let cek = cipher::random(16);
    let mut written = Vec::with_capacity(parts.len());
    for part in parts {
        written.push(match part.plaintext {
            Content::File(path) => cipher::gcm_encrypt_file(&cek, path, &part.ciphertext).map(|_| None)?,
            Content::Memory(bytes) => Some(cipher::gcm_encrypt_into_file(&cek, bytes, &part.ciphertext)?),
        });
    }
    let ek_id = format!("EK-{id_suffix}");
    let (bst, key_info) = write_key_info(recipient, token, &format!("G-{id_suffix}"))?;
    let recipient_key = recipient.public_key()?;
    let data_refs: String =
        (1..=parts.len()).map(|i| format!(r##"<xenc:DataReference URI="#ED-{id_suffix}-{i}"/>"##)).collect();
    let encrypted_key = match kind_of(&recipient_key) {
        KeyKind::Rsa => {
            let wrapped = cipher::rsa_oaep_encrypt(&recipient_key, &cek)?;
            format!(
                r#"<xenc:EncryptedKey Id="{ek_id}"><xenc:EncryptionMethod Algorithm="{}"><ds:DigestMethod Algorithm="{}"/><xenc11:MGF Algorithm="{}"/></xenc:EncryptionMethod>{key_info}<xenc:CipherData><xenc:CipherValue>{}</xenc:CipherValue></xenc:CipherData><xenc:ReferenceList>{data_refs}</xenc:ReferenceList></xenc:EncryptedKey>"#,
                ns::RSA_OAEP,
                ns::SHA256,
                ns::MGF1_SHA256,
                b64(&wrapped)
            )
        }
        KeyKind::X25519 => {
            let (z, originator) = cipher::x25519_ephemeral(&recipient_key)?;
            let salt = cipher::random(32);
            let kek = cipher::hkdf_sha256(&z, &salt, b"", 16)?;
            let wrapped = cipher::aes_wrap(&kek, &cek)?;
            let recipient_str = key_info.trim_start_matches("<ds:KeyInfo>").trim_end_matches("</ds:KeyInfo>");
            format!(
                concat!(
                    r#"<xenc:EncryptedKey Id="{ek}"><xenc:EncryptionMethod Algorithm="{kw}"/><ds:KeyInfo>"#,
                    r#"<xenc:AgreementMethod Algorithm="{x25519}"><xenc11:KeyDerivationMethod Algorithm="{hkdf}">"#,
                    r#"<dsig-more:HKDFParams><dsig-more:PRF Algorithm="{prf}"/><dsig-more:Salt>{salt}</dsig-more:Salt><dsig-more:KeyLength>16</dsig-more:KeyLength></dsig-more:HKDFParams>"#,
                    r#"</xenc11:KeyDerivationMethod><xenc:OriginatorKeyInfo><dsig11:DEREncodedKeyValue>{orig}</dsig11:DEREncodedKeyValue></xenc:OriginatorKeyInfo>"#,
                    r#"<xenc:RecipientKeyInfo>{rcpt}</xenc:RecipientKeyInfo></xenc:AgreementMethod></ds:KeyInfo>"#,
                    r#"<xenc:CipherData><xenc:CipherValue>{cv}</xenc:CipherValue></xenc:CipherData><xenc:ReferenceList>{refs}</xenc:ReferenceList></xenc:EncryptedKey>"#
                ),
                ek = ek_id,
                kw = ns::KW_AES128,
                x25519 = ns::X25519,
                hkdf = ns::HKDF,
                prf = ns::HMAC_SHA256,
                salt = b64(&salt),
                orig = b64(&originator),
                rcpt = recipient_str,
                cv = b64(&wrapped),
                refs = data_refs
            )
        }
        other => return Err(EncryptError::KeyType(other)),
    };
    let mut xml = bst.unwrap_or_default();
    xml.push_str(&encrypted_key);
    for (i, part) in parts.iter().enumerate() {
        xml.push_str(&format!(
            concat!(
                r#"<xenc:EncryptedData Id="ED-{suffix}-{i}" MimeType="{mime}" Type="{only}"><xenc:EncryptionMethod Algorithm="{gcm}"/>"#,
                r##"<ds:KeyInfo><wsse:SecurityTokenReference wsse11:TokenType="{ekt}"><wsse:Reference URI="#{ek}"/></wsse:SecurityTokenReference></ds:KeyInfo>"##,
                r#"<xenc:CipherData><xenc:CipherReference URI="cid:{cid}"><xenc:Transforms><ds:Transform Algorithm="{ct}"/></xenc:Transforms></xenc:CipherReference></xenc:CipherData></xenc:EncryptedData>"#
            ),
            suffix = id_suffix,
            i = i + 1,
            mime = escape(part.content_type),
            only = ns::ATTACHMENT_CONTENT_ONLY,
            gcm = ns::AES128_GCM,
            ekt = ns::TOKEN_TYPE_ENCRYPTED_KEY,
            ek = ek_id,
            cid = escape(part.content_id),
            ct = ns::ATTACHMENT_CIPHERTEXT,
        ));
    }
    Ok((xml, written))
}
