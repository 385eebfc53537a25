//! How a signature or an encrypted key points at a certificate: a BinarySecurityToken in the
//! header, a Subject Key Identifier, or issuer and serial number — written and resolved.

use super::digest::{b64, unb64};
use super::ns;
use super::xml::{Xml, child, children, compact_text};
use crate::ebms::tree::escape;
use crate::pki::keys::subject_key_identifier;
use crate::pmode::model::TokenReference;
use libxml::tree::Node;
use openssl::x509::X509;

/// A reference found in a KeyInfo, before it is matched to a certificate.
#[derive(Debug, Clone)]
pub enum KeyReference {
    /// The certificate itself (BST by reference, or ds:X509Certificate); leaf first.
    Certificate(Vec<X509>),
    Ski(Vec<u8>),
    IssuerSerial {
        issuer: String,
        serial: String,
    },
}

impl KeyReference {
    /// Whether `cert` is the certificate this reference designates.
    pub fn matches(&self, cert: &X509) -> bool {
        match self {
            // X509_cmp: the digests OpenSSL keeps from parsing, then the kept encodings (not a
            // fresh DER encoding of both per message).
            KeyReference::Certificate(chain) => chain.first().is_some_and(|c| c.as_ref() == cert.as_ref()),
            KeyReference::Ski(ski) => &subject_key_identifier(cert) == ski,
            KeyReference::IssuerSerial { issuer, serial } => {
                let ours = cert.serial_number().to_bn().ok().and_then(|b| b.to_dec_str().ok()).map(|s| s.to_string());
                ours.as_deref() == Some(serial.trim()) && same_name(&rfc2253(cert.issuer_name()), issuer)
            }
        }
    }
}

/// Distinguished name as RFC 2253 writes it: most specific RDN first.
pub fn rfc2253(name: &openssl::x509::X509NameRef) -> String {
    let mut parts: Vec<String> = name
        .entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?").to_owned();
            let value = e.data().to_string().unwrap_or_default();
            let escaped: String =
                value.chars().flat_map(|c| if ",+\"\\<>;=".contains(c) { vec!['\\', c] } else { vec![c] }).collect();
            format!("{key}={escaped}")
        })
        .collect();
    parts.reverse();
    parts.join(",")
}

/// Compares distinguished names leniently: the same attributes and values, in any order,
/// ignoring spaces around separators and the case of attribute names.
fn same_name(a: &str, b: &str) -> bool {
    fn split(name: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut current = String::new();
        let mut escaped = false;
        for c in name.chars() {
            match c {
                '\\' if !escaped => escaped = true,
                ',' | ';' if !escaped => {
                    out.push(std::mem::take(&mut current));
                }
                _ => {
                    escaped = false;
                    current.push(c);
                }
            }
        }
        out.push(current);
        let mut pairs: Vec<(String, String)> = out
            .iter()
            .filter_map(|rdn| rdn.split_once('='))
            .map(|(k, v)| {
                let k = k.trim().to_ascii_uppercase();
                let k = match k.as_str() {
                    "EMAILADDRESS" => "EMAILADDRESS".into(),
                    "2.5.4.3" => "CN".into(),
                    other => other.to_owned(),
                };
                (k, v.trim().to_owned())
            })
            .collect();
        pairs.sort();
        pairs
    }
    split(a) == split(b)
}

/// The KeyInfo (and the BST it needs, if any) for our certificate.
pub fn write_key_info(
    cert: &X509,
    how: TokenReference,
    bst_id: &str,
) -> Result<(Option<String>, String), openssl::error::ErrorStack> {
    let der = cert.to_der()?;
    Ok(match how {
        TokenReference::Bst => (
            Some(format!(
                r#"<wsse:BinarySecurityToken EncodingType="{}" ValueType="{}" wsu:Id="{bst_id}">{}</wsse:BinarySecurityToken>"#,
                ns::BASE64_BINARY,
                ns::X509V3,
                b64(&der)
            )),
            format!(
                r##"<ds:KeyInfo><wsse:SecurityTokenReference><wsse:Reference URI="#{bst_id}" ValueType="{}"/></wsse:SecurityTokenReference></ds:KeyInfo>"##,
                ns::X509V3
            ),
        ),
        TokenReference::Ski => (
            None,
            format!(
                r#"<ds:KeyInfo><wsse:SecurityTokenReference><wsse:KeyIdentifier EncodingType="{}" ValueType="{}">{}</wsse:KeyIdentifier></wsse:SecurityTokenReference></ds:KeyInfo>"#,
                ns::BASE64_BINARY,
                ns::X509_SKI,
                b64(&subject_key_identifier(cert))
            ),
        ),
        TokenReference::IssuerSerial => (
            None,
            format!(
                "<ds:KeyInfo><wsse:SecurityTokenReference><ds:X509Data><ds:X509IssuerSerial><ds:X509IssuerName>{}</ds:X509IssuerName><ds:X509SerialNumber>{}</ds:X509SerialNumber></ds:X509IssuerSerial></ds:X509Data></wsse:SecurityTokenReference></ds:KeyInfo>",
                escape(&rfc2253(cert.issuer_name())),
                cert.serial_number().to_bn()?.to_dec_str()?
            ),
        ),
    })
}

/// Reads a KeyInfo (or any element holding an STR or ds:X509Data), resolving BST references
/// inside `security` (the wsse:Security header).
pub fn read_key_info(xml: &Xml, key_info: &Node, security: &Node) -> Result<KeyReference, String> {
    let str_node = child(key_info, ns::WSSE, "SecurityTokenReference");
    let holder = str_node.clone().unwrap_or_else(|| key_info.clone());
    if let Some(reference) = child(&holder, ns::WSSE, "Reference") {
        let uri = reference.get_property_no_ns("URI").unwrap_or_default();
        let id = uri.strip_prefix('#').ok_or_else(|| format!("token reference '{uri}' is not a local #id"))?;
        let targets = xml.elements_with_id(id);
        let [bst] = targets.as_slice() else {
            return Err(format!("token reference #{id} resolves to {} elements", targets.len()));
        };
        let in_header = bst.get_parent().is_some_and(|p| p.node_ptr() == security.node_ptr());
        if !super::xml::is(bst, ns::WSSE, "BinarySecurityToken") || !in_header {
            return Err(format!("#{id} is not a BinarySecurityToken of this security header"));
        }
        return read_bst(bst).map(KeyReference::Certificate);
    }
    if let Some(ki) = child(&holder, ns::WSSE, "KeyIdentifier") {
        let value_type = ki.get_property_no_ns("ValueType").unwrap_or_default();
        if value_type != ns::X509_SKI {
            return Err(format!("KeyIdentifier type '{value_type}' is not supported"));
        }
        return unb64(&ki.get_content()).map(KeyReference::Ski).ok_or_else(|| "KeyIdentifier is not base64".into());
    }
    if let Some(data) = child(&holder, ns::DS, "X509Data") {
        if let Some(is) = child(&data, ns::DS, "X509IssuerSerial") {
            let issuer = child(&is, ns::DS, "X509IssuerName").map(|n| n.get_content()).unwrap_or_default();
            let serial = child(&is, ns::DS, "X509SerialNumber").map(|n| n.get_content()).unwrap_or_default();
            return Ok(KeyReference::IssuerSerial { issuer, serial });
        }
        if let Some(ski) = child(&data, ns::DS, "X509SKI") {
            return unb64(&ski.get_content()).map(KeyReference::Ski).ok_or_else(|| "X509SKI is not base64".into());
        }
        let certs: Vec<X509> = children(&data, ns::DS, "X509Certificate")
            .iter()
            .filter_map(|c| unb64(&c.get_content()).and_then(|der| crate::pki::parsed::certificate(&der).ok()))
            .collect();
        if !certs.is_empty() {
            return Ok(KeyReference::Certificate(certs));
        }
    }
    Err("KeyInfo holds no supported certificate reference".into())
}

/// The certificate(s) of a BinarySecurityToken: X509v3 (one) or X509PKIPathv1 (a path,
/// returned leaf first).
pub fn read_bst(bst: &Node) -> Result<Vec<X509>, String> {
    let value_type = bst.get_property_no_ns("ValueType").unwrap_or_default();
    let der = unb64(&compact_text(bst)).ok_or("BinarySecurityToken is not base64")?;
    match value_type.as_str() {
        ns::X509V3 => crate::pki::parsed::certificate(&der)
            .map(|c| vec![c])
            .map_err(|e| format!("BinarySecurityToken is not a certificate: {e}")),
        ns::X509_PKIPATH => {
            let mut path = pkipath(&der).ok_or("X509PKIPathv1 token cannot be read")?;
            path.reverse();
            Ok(path)
        }
        other => Err(format!("BinarySecurityToken ValueType '{other}' is not supported")),
    }
}

/// PkiPath ::= SEQUENCE OF Certificate (root first).
fn pkipath(der: &[u8]) -> Option<Vec<X509>> {
    let (len, mut rest, _) = der_len(der.get(1..)?)?;
    if der.first()? != &0x30 || rest.len() < len {
        return None;
    }
    rest = &rest[..len];
    let mut certs = Vec::new();
    while !rest.is_empty() {
        let (l, _, header) = der_len(rest.get(1..)?)?;
        let total = 1 + header + l;
        certs.push(crate::pki::parsed::certificate(rest.get(..total)?).ok()?);
        rest = &rest[total..];
    }
    Some(certs)
}

/// (length, content after the length bytes, number of length bytes)
fn der_len(input: &[u8]) -> Option<(usize, &[u8], usize)> {
    let first = *input.first()? as usize;
    if first < 0x80 {
        return Some((first, input.get(1..)?, 1));
    }
    let n = first & 0x7f;
    if n == 0 || n > 4 {
        return None;
    }
    let mut len = 0usize;
    for i in 0..n {
        len = (len << 8) | *input.get(1 + i)? as usize;
    }
    Some((len, input.get(1 + n..)?, 1 + n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_compare_leniently() {
        assert!(same_name("CN=AP CL,O=Demo", "O=Demo, cn=AP CL"));
        assert!(!same_name("CN=AP CL,O=Demo", "CN=AP PE,O=Demo"));
        assert!(same_name("CN=a\\,b,O=x", "O=x,CN=a\\,b"));
    }
}
