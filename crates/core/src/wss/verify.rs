//! Verification of an AS4 envelope's signature, strict about what must be covered: the one
//! eb:Messaging header, the Body and every attachment, each reference resolving to exactly
//! one element (no signature wrapping), with the profile's algorithms only.

use super::content::Content;
use super::digest::{attachment_digest, unb64};
use super::keyinfo::{KeyReference, read_key_info};
use super::ns;
use super::xml::{Xml, child, children};
use crate::ebms::{EbmsCode, EbmsError};
use crate::pki::keys::{KeyKind, kind_of};
use libxml::tree::Node;
use openssl::x509::X509;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};

/// An attachment as received (decrypted): the type that selects its transform and its file.
pub struct PartToVerify<'a> {
    pub content_id: &'a str,
    pub content_type: &'a str,
    /// The part's bytes as they were signed: its file, or memory for a part decrypted there.
    pub content: Content<'a>,
}

#[derive(Debug, Clone)]
pub struct VerifiedReference {
    pub uri: String,
    pub digest_value: String,
    /// The ds:Reference element, canonicalized, for an NRR receipt.
    pub xml: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct VerifiedSignature {
    pub signer: X509,
    /// Further certificates the token carried (a PKIPath), for chain building.
    pub intermediates: Vec<X509>,
    pub references: Vec<VerifiedReference>,
}

fn policy(detail: impl Into<String>) -> EbmsError {
    EbmsError::new(EbmsCode::PolicyNoncompliance, detail)
}

fn auth(detail: impl Into<String>) -> EbmsError {
    EbmsError::new(EbmsCode::FailedAuthentication, detail)
}

/// The `wsse:Security` header addressed to us (no role, or the ultimate receiver).
pub fn security_header(xml: &Xml) -> Option<Node> {
    let root = xml.root()?;
    let header = child(&root, ns::SOAP12, "Header")?;
    children(&header, ns::WSSE, "Security").into_iter().find(|s| {
        let role = s.get_property_ns("role", ns::SOAP12);
        role.is_none() || role.as_deref() == Some("http://www.w3.org/2003/05/soap-envelope/role/ultimateReceiver")
    })
}

fn inclusive_prefixes(transform_or_method: &Node) -> Vec<String> {
    child(transform_or_method, ns::EC, "InclusiveNamespaces")
        .and_then(|i| i.get_property_no_ns("PrefixList"))
        .map(|l| l.split_whitespace().map(|p| if p == "#default" { String::new() } else { p.to_owned() }).collect())
        .unwrap_or_default()
}

/// Same-document references a signature may carry. AS4 signs eb:Messaging and the Body; some
/// senders add wsu:Timestamp or a token: a handful, never near this.
pub const MAX_ID_REFERENCES: usize = 16;

/// Verifies the signature. `expected_method` is the profile's SignatureMethod URI;
/// `resolve` turns the KeyInfo into the certificate to verify with (and refuses
/// certificates not bound to the partner).
pub fn verify_envelope(
    xml: &Xml,
    parts: &[PartToVerify<'_>],
    expected_method: &str,
    resolve: &dyn Fn(&KeyReference) -> Result<X509, EbmsError>,
) -> Result<VerifiedSignature, EbmsError> {
    verify(xml, Some(parts), expected_method, resolve)
}

/// [`verify_envelope`] for an offline check of a message whose attachments are encrypted
/// and cannot be decrypted here: the signature value and the header and Body references are
/// checked, the `cid:` references are not (the caller says so).
pub fn verify_envelope_without_attachments(
    xml: &Xml,
    expected_method: &str,
    resolve: &dyn Fn(&KeyReference) -> Result<X509, EbmsError>,
) -> Result<VerifiedSignature, EbmsError> {
    verify(xml, None, expected_method, resolve)
}

/// `parts` None: attachment references are not checked (see above).
fn verify(
    xml: &Xml,
    parts: Option<&[PartToVerify<'_>]>,
    expected_method: &str,
    resolve: &dyn Fn(&KeyReference) -> Result<X509, EbmsError>,
) -> Result<VerifiedSignature, EbmsError> {
    let check_attachments = parts.is_some();
    let parts = parts.unwrap_or_default();
    let root = xml.root().ok_or_else(|| policy("empty envelope"))?;
    let header = child(&root, ns::SOAP12, "Header").ok_or_else(|| policy("no SOAP Header"))?;
    let body = child(&root, ns::SOAP12, "Body").ok_or_else(|| policy("no SOAP Body"))?;
    let security = security_header(xml).ok_or_else(|| policy("the message is not signed: no wsse:Security header"))?;
    let signatures = children(&security, ns::DS, "Signature");
    let [signature] = signatures.as_slice() else {
        return Err(policy(format!(
            "wsse:Security holds {} ds:Signature elements; exactly one is required",
            signatures.len()
        )));
    };
    let messaging_headers = children(&header, ns::EB, "Messaging");
    let [messaging] = messaging_headers.as_slice() else { return Err(policy("not exactly one eb:Messaging header")) };
    if xml.count_elements(ns::EB, "Messaging") != 1 {
        return Err(auth("a second eb:Messaging element appears in the envelope (signature wrapping)"));
    }
    let signed_info = child(signature, ns::DS, "SignedInfo").ok_or_else(|| policy("ds:Signature has no SignedInfo"))?;
    let c14n =
        child(&signed_info, ns::DS, "CanonicalizationMethod").ok_or_else(|| policy("no CanonicalizationMethod"))?;
    if c14n.get_property_no_ns("Algorithm").as_deref() != Some(ns::EXC_C14N) {
        return Err(policy(format!(
            "CanonicalizationMethod {:?} is not exclusive c14n",
            c14n.get_property_no_ns("Algorithm")
        )));
    }
    let method = child(&signed_info, ns::DS, "SignatureMethod")
        .and_then(|m| m.get_property_no_ns("Algorithm"))
        .unwrap_or_default();
    if method != expected_method {
        return Err(policy(format!("SignatureMethod '{method}' is not the profile's {expected_method}")));
    }

    let signed_info_canonical =
        xml.c14n_subtree(&signed_info, &inclusive_prefixes(&c14n)).map_err(|e| auth(e.to_string()))?;
    let reference_nodes = children(&signed_info, ns::DS, "Reference");

    let uris: Vec<String> = reference_nodes.iter().map(|r| r.get_property_no_ns("URI").unwrap_or_default()).collect();
    // A reference names something of its own; the same one twice would only make us digest
    // the same bytes again, which a crafted SignedInfo could repeat at will.
    let mut distinct = HashSet::with_capacity(uris.len());
    if let Some(repeated) = uris.iter().find(|uri| !distinct.insert(uri.as_str())) {
        return Err(policy(format!("reference {repeated} appears more than once in SignedInfo")));
    }
    // An `#id` reference that the subtree walk declines (or one with inclusive prefixes) is
    // canonicalized by libxml2, which walks the whole envelope, so their number is bounded
    // before any digest: otherwise a sender, before its signature is checked, could make us
    // walk the envelope once for each of thousands of signed elements.
    let ids: Vec<&str> = uris.iter().filter_map(|uri| uri.strip_prefix('#')).collect();
    if ids.len() > MAX_ID_REFERENCES {
        return Err(policy(format!(
            "SignedInfo has {} same-document (#id) references; at most {MAX_ID_REFERENCES} are accepted",
            ids.len()
        )));
    }
    // The targets of all `#id` references in one walk of the envelope, and the parts by
    // Content-ID: the check stays linear in the envelope and the number of parts.
    let mut targets_by_id: HashMap<&str, Vec<Node>> = ids.iter().copied().zip(xml.elements_with_ids(&ids)).collect();
    let part_index: HashMap<&str, usize> = parts.iter().enumerate().map(|(i, p)| (p.content_id, i)).collect();

    let mut references = Vec::new();
    let mut covered_messaging = false;
    let mut covered_body = false;
    let mut covered_parts = vec![false; parts.len()];
    for (reference, uri) in reference_nodes.into_iter().zip(uris.iter().cloned()) {
        let digest_method = child(&reference, ns::DS, "DigestMethod")
            .and_then(|d| d.get_property_no_ns("Algorithm"))
            .unwrap_or_default();
        if digest_method != ns::SHA256 {
            return Err(policy(format!("reference {uri}: DigestMethod '{digest_method}' is not SHA-256")));
        }
        let digest_value = child(&reference, ns::DS, "DigestValue").map(|d| d.get_content()).unwrap_or_default();
        let expected =
            unb64(&digest_value).ok_or_else(|| auth(format!("reference {uri}: DigestValue is not base64")))?;
        let transforms: Vec<Node> =
            child(&reference, ns::DS, "Transforms").map(|t| children(&t, ns::DS, "Transform")).unwrap_or_default();
        let actual = if let Some(id) = uri.strip_prefix('#') {
            let [transform] = transforms.as_slice() else {
                return Err(policy(format!("reference {uri}: exactly one transform (exclusive c14n) is required")));
            };
            if transform.get_property_no_ns("Algorithm").as_deref() != Some(ns::EXC_C14N) {
                return Err(policy(format!("reference {uri}: transform is not exclusive c14n")));
            }
            let targets = targets_by_id.remove(id).unwrap_or_default();
            let [target] = targets.as_slice() else {
                return Err(auth(format!(
                    "reference {uri} resolves to {} elements (signature wrapping?)",
                    targets.len()
                )));
            };
            if target.node_ptr() == messaging.node_ptr() {
                covered_messaging = true;
            }
            if target.node_ptr() == body.node_ptr() {
                covered_body = true;
            }
            let canonical = xml
                .c14n_subtree(target, &inclusive_prefixes(transform))
                .map_err(|e| auth(format!("reference {uri}: {e}")))?;
            Sha256::digest(canonical).to_vec()
        } else if let Some(cid) = uri.strip_prefix("cid:") {
            let algorithms: Vec<String> = transforms.iter().filter_map(|t| t.get_property_no_ns("Algorithm")).collect();
            if algorithms != [ns::ATTACHMENT_CONTENT_SIGNATURE] {
                return Err(policy(format!(
                    "reference {uri}: transform must be Attachment-Content-Signature-Transform, not {algorithms:?}"
                )));
            }
            if !check_attachments {
                continue;
            }
            let index = *part_index.get(cid).ok_or_else(|| auth(format!("reference {uri}: no such MIME part")))?;
            covered_parts[index] = true;
            let part = &parts[index];
            attachment_digest(part.content_type, part.content).map_err(|e| auth(format!("reference {uri}: {e}")))?
        } else {
            return Err(policy(format!("reference URI '{uri}' is neither #id nor cid:")));
        };
        if actual != expected {
            return Err(auth(format!("digest mismatch for reference {uri}")));
        }
        // The reference as an NRR receipt copies it (a walk of its own subtree).
        let xml_copy = xml.c14n_subtree(&reference, &[]).map_err(|e| auth(e.to_string()))?;
        references.push(VerifiedReference {
            uri,
            digest_value: digest_value.split_whitespace().collect(),
            xml: xml_copy,
        });
    }
    if !covered_messaging {
        return Err(policy("the signature does not cover eb:Messaging"));
    }
    if !covered_body {
        return Err(policy("the signature does not cover the SOAP Body"));
    }
    if let Some(i) = covered_parts.iter().position(|c| !c) {
        return Err(policy(format!("the signature does not cover attachment cid:{}", parts[i].content_id)));
    }

    let key_info = child(signature, ns::DS, "KeyInfo").ok_or_else(|| auth("ds:Signature has no KeyInfo"))?;
    let key_ref = read_key_info(xml, &key_info, &security).map_err(auth)?;
    let intermediates = match &key_ref {
        KeyReference::Certificate(chain) => chain.iter().skip(1).cloned().collect(),
        _ => Vec::new(),
    };
    let signer = resolve(&key_ref)?;
    let value = child(signature, ns::DS, "SignatureValue")
        .map(|v| v.get_content())
        .and_then(|v| unb64(&v))
        .ok_or_else(|| auth("SignatureValue missing or not base64"))?;
    if !verify_bytes(&signer, &signed_info_canonical, &value) {
        return Err(auth("the signature value does not verify with the signer's certificate"));
    }
    Ok(VerifiedSignature { signer, intermediates, references })
}

/// The digest check of one reference, for reports (`ventanilla verify`): no policy, just
/// whether the referenced bytes still have the digest the signature carries.
#[derive(Debug)]
pub struct ReferenceCheck {
    pub uri: String,
    pub result: Result<(), String>,
}

pub fn check_each_reference(xml: &Xml, parts: &[PartToVerify<'_>]) -> Vec<ReferenceCheck> {
    let Some(signed_info) =
        security_header(xml).and_then(|s| child(&s, ns::DS, "Signature")).and_then(|s| child(&s, ns::DS, "SignedInfo"))
    else {
        return Vec::new();
    };
    let reference_nodes = children(&signed_info, ns::DS, "Reference");
    let uris: Vec<String> = reference_nodes.iter().map(|r| r.get_property_no_ns("URI").unwrap_or_default()).collect();
    // One walk for every `#id` target, parts by Content-ID: linear, as in the check itself.
    let ids: Vec<&str> = uris.iter().filter_map(|uri| uri.strip_prefix('#')).collect();
    let targets_by_id: HashMap<&str, Vec<Node>> = ids.iter().copied().zip(xml.elements_with_ids(&ids)).collect();
    let parts_by_id: HashMap<&str, &PartToVerify<'_>> = parts.iter().map(|p| (p.content_id, p)).collect();
    reference_nodes
        .iter()
        .zip(uris.iter().cloned())
        .map(|(reference, uri)| {
            let result = (|| {
                let method = child(reference, ns::DS, "DigestMethod")
                    .and_then(|d| d.get_property_no_ns("Algorithm"))
                    .unwrap_or_default();
                if method != ns::SHA256 {
                    return Err(format!("DigestMethod '{method}' is not SHA-256"));
                }
                let expected = child(reference, ns::DS, "DigestValue")
                    .and_then(|d| unb64(&d.get_content()))
                    .ok_or("no base64 DigestValue")?;
                let actual = if let Some(id) = uri.strip_prefix('#') {
                    let targets = targets_by_id.get(id).map(Vec::as_slice).unwrap_or_default();
                    let [target] = targets else {
                        return Err(format!("resolves to {} elements", targets.len()));
                    };
                    let transform = child(reference, ns::DS, "Transforms").and_then(|t| child(&t, ns::DS, "Transform"));
                    let prefixes = transform.as_ref().map(inclusive_prefixes).unwrap_or_default();
                    Sha256::digest(xml.c14n_subtree(target, &prefixes).map_err(|e| e.to_string())?).to_vec()
                } else if let Some(cid) = uri.strip_prefix("cid:") {
                    let part = parts_by_id.get(cid).ok_or("no such MIME part")?;
                    attachment_digest(part.content_type, part.content).map_err(|e| e.to_string())?
                } else {
                    return Err("neither #id nor cid:".into());
                };
                if actual == expected { Ok(()) } else { Err("digest mismatch".into()) }
            })();
            ReferenceCheck { uri, result }
        })
        .collect()
}

/// The SignatureMethod a message declares.
pub fn declared_signature_method(xml: &Xml) -> Option<String> {
    let signature = security_header(xml).and_then(|s| child(&s, ns::DS, "Signature"))?;
    child(&child(&signature, ns::DS, "SignedInfo")?, ns::DS, "SignatureMethod")?.get_property_no_ns("Algorithm")
}

pub fn verify_bytes(cert: &X509, data: &[u8], signature: &[u8]) -> bool {
    let Ok(key) = cert.public_key() else { return false };
    let result = match kind_of(&key) {
        KeyKind::Rsa => openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &key).and_then(|mut v| {
            v.update(data)?;
            v.verify(signature)
        }),
        KeyKind::Ed25519 => return super::ed25519::verify(&key, data, signature),
        _ => return false,
    };
    result.unwrap_or(false)
}
