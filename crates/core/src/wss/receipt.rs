//! Non-repudiation receipts (AS4 §5.1.8(b)): the receiver copies the `ds:Reference`s of the
//! message it verified; the sender checks that every reference it signed comes back with the
//! same digest.

use super::ns;
use super::verify::VerifiedReference;
use super::xml::{Xml, child, children, compact_text};

/// The content of `eb:Receipt` for a verified message.
pub fn nrr_content(references: &[VerifiedReference]) -> String {
    let mut out = format!(r#"<ebbp:NonRepudiationInformation xmlns:ebbp="{}">"#, ns::EBBP);
    for r in references {
        out.push_str("<ebbp:MessagePartNRInformation>");
        out.push_str(&String::from_utf8_lossy(&r.xml));
        out.push_str("</ebbp:MessagePartNRInformation>");
    }
    out.push_str("</ebbp:NonRepudiationInformation>");
    out
}

/// (URI, DigestValue) of every reference in the SignedInfo of an envelope we signed (none
/// when it has no signature for the ultimate receiver). Read with the small element tree, not
/// libxml2: it runs for every receipt, on an envelope that is already trusted (ours).
pub fn signed_references(envelope: &[u8]) -> Result<Vec<(String, String)>, String> {
    let root = crate::ebms::tree::parse(envelope, crate::ebms::tree::Limits::default())
        .map_err(|e| format!("the envelope sent: {e}"))?;
    let security = root.child(ns::SOAP12, "Header").and_then(|h| {
        h.children_named(ns::WSSE, "Security").find(|s| {
            let role = s.attr(ns::SOAP12, "role");
            role.is_none() || role == Some("http://www.w3.org/2003/05/soap-envelope/role/ultimateReceiver")
        })
    });
    let Some(signed_info) =
        security.and_then(|s| s.child(ns::DS, "Signature")).and_then(|s| s.child(ns::DS, "SignedInfo"))
    else {
        return Ok(Vec::new());
    };
    Ok(signed_info
        .children_named(ns::DS, "Reference")
        .map(|r| {
            let digest =
                r.child(ns::DS, "DigestValue").map(|d| d.text.split_whitespace().collect()).unwrap_or_default();
            (r.attr("", "URI").unwrap_or_default().to_owned(), digest)
        })
        .collect())
}

fn reference_pairs(references: &[libxml::tree::Node]) -> Vec<(String, String)> {
    references
        .iter()
        .map(|r| {
            let digest = child(r, ns::DS, "DigestValue").map(|d| compact_text(&d)).unwrap_or_default();
            (r.get_property_no_ns("URI").unwrap_or_default(), digest)
        })
        .collect()
}

/// Checks an NRR receipt against what we sent: every reference present, digests equal.
pub fn check_nrr(receipt: &Xml, sent: &[(String, String)]) -> Result<(), String> {
    let root = receipt.root().ok_or("empty receipt")?;
    let receipt_el = child(&root, ns::SOAP12, "Header")
        .and_then(|h| child(&h, ns::EB, "Messaging"))
        .and_then(|m| child(&m, ns::EB, "SignalMessage"))
        .and_then(|s| child(&s, ns::EB, "Receipt"))
        .ok_or("no eb:Receipt")?;
    let nri = child(&receipt_el, ns::EBBP, "NonRepudiationInformation")
        .ok_or("the receipt has no NonRepudiationInformation")?;
    let returned: Vec<libxml::tree::Node> = children(&nri, ns::EBBP, "MessagePartNRInformation")
        .iter()
        .flat_map(|p| children(p, ns::DS, "Reference"))
        .collect();
    let returned = reference_pairs(&returned);
    for (uri, digest) in sent {
        match returned.iter().find(|(u, _)| u == uri) {
            None => return Err(format!("the receipt does not acknowledge {uri}")),
            Some((_, d)) if d != digest => {
                return Err(format!("the receipt's digest for {uri} differs from the one sent"));
            }
            Some(_) => {}
        }
    }
    Ok(())
}
