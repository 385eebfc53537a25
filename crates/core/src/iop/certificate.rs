//! The signed SPS certificate an IOP message carries (docs/iop.md §4): an enveloped XML
//! signature inside the root `rsm:SPSCertificate`, referenced by its `id` (`SPSCERT`).

use crate::dsig::{self, Algorithms, Embedded};
use crate::wss::xml::{Xml, is};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

/// The id the IOP sample gives the certificate's root.
pub const TARGET: &str = "SPSCERT";

/// The root's ds:Signature children (an enveloped signature is a direct child).
fn root_signatures(xml: &Xml) -> Vec<libxml::tree::Node> {
    xml.root()
        .map(|r| r.get_child_elements().into_iter().filter(|c| is(c, dsig::DS, "Signature")).collect())
        .unwrap_or_default()
}

/// Whether the document already carries its enveloped signature.
pub fn is_signed(document: &[u8]) -> Result<bool, String> {
    let xml = Xml::parse(document).map_err(|e| e.to_string())?;
    Ok(!root_signatures(&xml).is_empty())
}

/// Signs an unsigned certificate: the root gets `id="SPSCERT"` when it has no id, and the
/// signature becomes its last child.
pub fn sign(document: &[u8], key: &PKey<Private>, cert: &X509, algorithms: Algorithms) -> Result<String, String> {
    let text = std::str::from_utf8(document).map_err(|_| "the certificate is not UTF-8".to_owned())?;
    let xml = Xml::parse(document).map_err(|e| e.to_string())?;
    let root = xml.root().ok_or("no root element")?;
    if !root_signatures(&xml).is_empty() {
        return Err("the certificate is signed already".into());
    }
    let qname = match root.get_namespace().map(|n| n.get_prefix()).filter(|p| !p.is_empty()) {
        Some(prefix) => format!("{prefix}:{}", root.get_name()),
        None => root.get_name(),
    };
    let (text, target) = match root.get_property_no_ns("id") {
        Some(id) => (text.to_owned(), id),
        None => {
            // The root's start tag is the first `<` + name outside the prolog.
            let open = format!("<{qname}");
            let at = text
                .match_indices(&open)
                .map(|(i, _)| i + open.len())
                .find(|&i| text[i..].starts_with(|c: char| c.is_whitespace() || c == '>' || c == '/'))
                .ok_or("the root's start tag was not found")?;
            (format!(r#"{} id="{TARGET}"{}"#, &text[..at], &text[at..]), TARGET.to_owned())
        }
    };
    let close = text.rfind(&format!("</{qname}")).ok_or("the root's end tag was not found (an empty root?)")?;
    dsig::sign_enveloped(&text, &target, close, key, cert, algorithms)
}

/// Verifies the certificate's enveloped signature: exactly one, in the root, over the root.
/// Which certificate may sign is the caller's question (the P-Mode binds it).
pub fn verify(document: &[u8]) -> Result<Embedded, String> {
    let xml = Xml::parse(document).map_err(|e| e.to_string())?;
    let root = xml.root().ok_or("no root element")?;
    let target = root.get_property_no_ns("id").ok_or("the certificate's root has no id to sign")?;
    let signatures = root_signatures(&xml);
    let [signature] = signatures.as_slice() else {
        return Err(format!(
            "the certificate carries {} enveloped signatures; exactly one is expected",
            signatures.len()
        ));
    };
    dsig::verify(&xml, signature, &target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::rsa::Rsa;

    fn signer() -> (PKey<Private>, X509) {
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut name = openssl::x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "VUCE Peru document signer").unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap()).unwrap();
        b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(30).unwrap()).unwrap();
        b.sign(&key, openssl::hash::MessageDigest::sha256()).unwrap();
        (key, b.build())
    }

    fn certificate() -> String {
        crate::payload::ephyto::testing::certificate_v11("PE", "MX", "PE-2026-000123")
    }

    #[test]
    fn signed_both_ways_verify_and_edits_do_not() {
        let (key, cert) = signer();
        for algorithms in [Algorithms::RsaSha256, Algorithms::LegacyRsaSha1] {
            let signed = sign(certificate().as_bytes(), &key, &cert, algorithms).unwrap();
            assert!(signed.contains(r#"id="SPSCERT""#) && is_signed(signed.as_bytes()).unwrap());
            let verified = verify(signed.as_bytes()).unwrap();
            assert_eq!(verified.signer.to_der().unwrap(), cert.to_der().unwrap());
            assert_eq!(verified.is_legacy(), algorithms == Algorithms::LegacyRsaSha1);
            let altered = signed.replacen("PE-2026-000123", "PE-2026-000124", 1);
            assert!(verify(altered.as_bytes()).unwrap_err().contains("altered"), "{algorithms:?}");
            assert!(sign(signed.as_bytes(), &key, &cert, algorithms).is_err(), "signed twice");
        }
        assert!(verify(certificate().as_bytes()).is_err(), "unsigned");
        assert!(!is_signed(certificate().as_bytes()).unwrap());
    }

    #[test]
    fn a_second_signature_or_element_with_the_id_is_refused() {
        let (key, cert) = signer();
        let signed = sign(certificate().as_bytes(), &key, &cert, Algorithms::RsaSha256).unwrap();
        let start = signed.find("<ds:Signature").unwrap();
        let end = signed.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
        let twice = format!("{}{}{}", &signed[..end], &signed[start..end], &signed[end..]);
        assert!(verify(twice.as_bytes()).unwrap_err().contains("2 enveloped signatures"));
        let wrapped = signed.replacen("<rsm:SPSExchangedDocument>", r#"<rsm:SPSExchangedDocument id="SPSCERT">"#, 1);
        assert!(verify(wrapped.as_bytes()).unwrap_err().contains("resolves to 2"));
    }
}
