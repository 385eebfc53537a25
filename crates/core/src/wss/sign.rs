//! XML Signature of an AS4 envelope: one detached `ds:Signature` in `wsse:Security` over
//! eb:Messaging, the Body and every attachment (docs/as4.md §2.3).

use super::canonical;
use super::content::Content;
use super::digest::{DigestError, attachment_digest, b64};
use super::keyinfo::write_key_info;
use super::ns;
use super::xml::{Xml, XmlError};
use crate::ebms::write::{ENVELOPE_NAMESPACES, EnvelopeBuilder};
use crate::pki::keys::{KeyKind, kind_of};
use crate::pmode::model::TokenReference;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use sha2::{Digest, Sha256};

/// A private key with its certificate.
#[derive(Clone)]
pub struct Credential {
    pub key: PKey<Private>,
    pub cert: X509,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        write!(f, "Credential({})", crate::pki::trust::subject_of(&self.cert))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("XML: {0}")]
    Xml(#[from] XmlError),
    #[error("attachment {cid}: {source}")]
    Attachment { cid: String, source: DigestError },
    #[error("crypto: {0}")]
    Crypto(#[from] openssl::error::ErrorStack),
    #[error("{0}")]
    Ed25519(#[from] super::ed25519::SignKeyError),
    #[error("signing keys of type {0:?} are not supported")]
    KeyType(KeyKind),
    #[error("the envelope lost its {0}")]
    Structure(&'static str),
}

/// An attachment as signed: its Content-ID, the Content-Type that selects its transform
/// (the type before encryption), and the file with its (possibly compressed) bytes.
pub struct SignedPart<'a> {
    pub content_id: &'a str,
    pub content_type: &'a str,
    pub content: Content<'a>,
}

pub fn signature_method(key: &PKey<Private>) -> Result<&'static str, SignError> {
    match kind_of(key) {
        KeyKind::Rsa => Ok(ns::RSA_SHA256),
        KeyKind::Ed25519 => Ok(ns::ED25519),
        other => Err(SignError::KeyType(other)),
    }
}

pub fn sign_bytes(key: &PKey<Private>, data: &[u8]) -> Result<Vec<u8>, SignError> {
    match kind_of(key) {
        KeyKind::Rsa => {
            let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), key)?;
            signer.update(data)?;
            Ok(signer.sign_to_vec()?)
        }
        KeyKind::Ed25519 => Ok(super::ed25519::sign(key, data)?),
        other => Err(SignError::KeyType(other)),
    }
}

pub const SECURITY_OPEN: &str = concat!(
    r#"<wsse:Security S12:mustUnderstand="true""#,
    r#" xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd""#,
    r#" xmlns:wsse11="http://docs.oasis-open.org/wss/oasis-wss-wssecurity-secext-1.1.xsd""#,
    r#" xmlns:ds="http://www.w3.org/2000/09/xmldsig#""#,
    r#" xmlns:xenc="http://www.w3.org/2001/04/xmlenc#""#,
    r#" xmlns:xenc11="http://www.w3.org/2009/xmlenc11#""#,
    r#" xmlns:dsig11="http://www.w3.org/2009/xmldsig11#""#,
    r#" xmlns:dsig-more="http://www.w3.org/2021/04/xmldsig-more#">"#,
);

const PLACEHOLDER: &str = "\u{0}SIGNATURE-VALUE\u{0}";

/// A `ds:Reference`, written in canonical form like all of `ds:SignedInfo` (see
/// [`signed_info`]).
fn reference(uri: &str, transform: &str, digest: &[u8]) -> String {
    format!(
        r#"<ds:Reference URI="{}"><ds:Transforms><ds:Transform Algorithm="{transform}"></ds:Transform></ds:Transforms><ds:DigestMethod Algorithm="{}"></ds:DigestMethod><ds:DigestValue>{}</ds:DigestValue></ds:Reference>"#,
        c14n_attribute(uri),
        ns::SHA256,
        b64(digest)
    )
}

/// An attribute value escaped the way canonical XML writes it, so that parsing and
/// canonicalizing it gives back these bytes.
fn c14n_attribute(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    canonical::push_attribute_value(&mut out, value);
    out
}

/// `ds:SignedInfo` as it goes in the envelope, and its exclusive canonical form. It is written
/// canonically (every element closed by an end tag, one attribute each, escaped as c14n does,
/// no whitespace), so the canonical bytes are known without parsing the signed envelope back:
/// the only difference is `xmlns:ds`, which the document declares on `wsse:Security` and
/// exclusive c14n puts on the apex, where it is first used.
fn signed_info(method: &str, references: &str) -> (String, String) {
    let inner = format!(
        r#"<ds:CanonicalizationMethod Algorithm="{}"></ds:CanonicalizationMethod><ds:SignatureMethod Algorithm="{method}"></ds:SignatureMethod>{references}"#,
        ns::EXC_C14N
    );
    (
        format!("<ds:SignedInfo>{inner}</ds:SignedInfo>"),
        format!(r#"<ds:SignedInfo xmlns:ds="{}">{inner}</ds:SignedInfo>"#, ns::DS),
    )
}

/// Signs the envelope: returns it complete, with `wsse:Security` holding `before_signature`
/// (the encryption elements, which receivers process first), the token and the signature.
pub fn sign_envelope(
    envelope: &EnvelopeBuilder,
    credential: &Credential,
    token: TokenReference,
    parts: &[SignedPart<'_>],
    before_signature: &str,
) -> Result<String, SignError> {
    let method = signature_method(&credential.key)?;
    let mut references = String::new();
    // Parsed only if a target is beyond what the streamed canonicalization covers.
    let mut unsigned: Option<Xml> = None;
    for (id, element) in
        [(&envelope.messaging_id, envelope.messaging_element()), (&envelope.body_id, envelope.body_element())]
    {
        let canonical = match canonical::exclusive(&element, &ENVELOPE_NAMESPACES) {
            Some(text) => {
                // Every test build checks the streamed form against libxml2's.
                #[cfg(debug_assertions)]
                assert_eq!(text.as_bytes(), libxml2_c14n(envelope, &mut unsigned, id)?, "canonical {id}");
                text.into_bytes()
            }
            None => libxml2_c14n(envelope, &mut unsigned, id)?,
        };
        references.push_str(&reference(&format!("#{id}"), ns::EXC_C14N, &Sha256::digest(canonical)));
    }
    for part in parts {
        let digest = attachment_digest(part.content_type, part.content)
            .map_err(|source| SignError::Attachment { cid: part.content_id.to_owned(), source })?;
        references.push_str(&reference(&format!("cid:{}", part.content_id), ns::ATTACHMENT_CONTENT_SIGNATURE, &digest));
    }
    let (signed_info, canonical) = signed_info(method, &references);
    let suffix = crate::util::short_hash(envelope.messaging_id.as_bytes());
    let (bst, key_info) = write_key_info(&credential.cert, token, &format!("X509-{suffix}"))?;
    let security = format!(
        r#"{SECURITY_OPEN}{before_signature}{}<ds:Signature Id="SIG-{suffix}">{signed_info}<ds:SignatureValue>{PLACEHOLDER}</ds:SignatureValue>{key_info}</ds:Signature></wsse:Security>"#,
        bst.unwrap_or_default()
    );
    #[cfg(debug_assertions)]
    {
        // Every test build checks the shortcut against libxml2's canonicalization.
        let parsed = Xml::parse(envelope.build(&security).replace(PLACEHOLDER, "").as_bytes())?;
        let node = find_signed_info(&parsed).ok_or(SignError::Structure("ds:SignedInfo"))?;
        assert_eq!(String::from_utf8_lossy(&parsed.c14n_subtree(&node, &[])?), canonical, "canonical SignedInfo");
    }
    let value = sign_bytes(&credential.key, canonical.as_bytes())?;
    Ok(envelope.build(&security.replace(PLACEHOLDER, &b64(&value))))
}

/// The exclusive canonical form of the element `id` of the unsigned envelope, by libxml2.
fn libxml2_c14n(envelope: &EnvelopeBuilder, unsigned: &mut Option<Xml>, id: &str) -> Result<Vec<u8>, SignError> {
    let xml = match unsigned {
        Some(xml) => xml,
        None => unsigned.insert(Xml::parse(envelope.build("").as_bytes())?),
    };
    let nodes = xml.elements_with_id(id);
    let node = nodes.first().ok_or(SignError::Structure("signature target"))?;
    Ok(xml.c14n_subtree(node, &[])?)
}

#[cfg(debug_assertions)]
fn find_signed_info(xml: &Xml) -> Option<libxml::tree::Node> {
    use super::xml::child;
    let root = xml.root()?;
    let header = child(&root, ns::SOAP12, "Header")?;
    let security = child(&header, ns::WSSE, "Security")?;
    let signature = child(&security, ns::DS, "Signature")?;
    child(&signature, ns::DS, "SignedInfo")
}
