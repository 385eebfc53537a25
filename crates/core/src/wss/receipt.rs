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
/// when it has no signature for the ultimate receiver). It runs for every receipt, on an
/// envelope that is already trusted (ours), so it streams: the whole envelope is read (a
/// malformed one is an error, never an empty list), but nothing is kept beyond the path to
/// the references; no tree, no copy of the token or the other headers.
pub fn signed_references(envelope: &[u8]) -> Result<Vec<(String, String)>, String> {
    use quick_xml::events::Event;
    use quick_xml::name::ResolveResult;
    /// Envelope / Header / Security (the first for the ultimate receiver) / Signature /
    /// SignedInfo / Reference (every one) / DigestValue: each level is the first element of
    /// its name in its parent, except the references.
    const PATH: [(&str, &str); 7] = [
        (ns::SOAP12, "Envelope"),
        (ns::SOAP12, "Header"),
        (ns::WSSE, "Security"),
        (ns::DS, "Signature"),
        (ns::DS, "SignedInfo"),
        (ns::DS, "Reference"),
        (ns::DS, "DigestValue"),
    ];
    const SECURITY: usize = 2;
    const REFERENCE: usize = 5;
    const DIGEST: usize = 6;
    let bad = |e: &dyn std::fmt::Display| format!("the envelope sent: {e}");
    let bytes = envelope.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(envelope);
    let mut reader = quick_xml::NsReader::from_reader(bytes);
    reader.config_mut().check_end_names = true;
    let (mut depth, mut matched) = (0usize, 0usize);
    // Whether a level was entered already inside its current parent (first one wins).
    let mut entered = [false; PATH.len()];
    let mut references: Vec<(String, String)> = Vec::new();
    let mut seen_root = false;
    loop {
        let (resolved, event) = reader.read_resolved_event().map_err(|e| bad(&e))?;
        match &event {
            Event::Start(start) | Event::Empty(start) => {
                if depth == 0 && std::mem::replace(&mut seen_root, true) {
                    return Err(bad(&"content after the root element"));
                }
                if matched == depth && depth < PATH.len() && (depth == REFERENCE || !entered[depth]) {
                    let (want_ns, want_local) = PATH[depth];
                    let named = matches!(&resolved, ResolveResult::Bound(n) if n.as_ref() == want_ns.as_bytes())
                        && start.local_name().as_ref() == want_local.as_bytes();
                    let role_ok = depth != SECURITY || {
                        let mut role = None;
                        for attr in start.attributes() {
                            let attr = attr.map_err(|e| bad(&e))?;
                            let (res, local) = reader.resolver().resolve_attribute(attr.key);
                            if local.as_ref() == b"role"
                                && matches!(res, ResolveResult::Bound(n) if n.as_ref() == ns::SOAP12.as_bytes())
                            {
                                role = Some(attr.unescape_value().map_err(|e| bad(&e))?.into_owned());
                            }
                        }
                        role.is_none_or(|r| r == "http://www.w3.org/2003/05/soap-envelope/role/ultimateReceiver")
                    };
                    if named && role_ok {
                        entered[depth] = true;
                        entered[depth + 1..].fill(false);
                        if depth == REFERENCE {
                            let uri = start
                                .try_get_attribute("URI")
                                .map_err(|e| bad(&e))?
                                .map(|a| a.unescape_value().map(|v| v.into_owned()))
                                .transpose()
                                .map_err(|e| bad(&e))?
                                .unwrap_or_default();
                            references.push((uri, String::new()));
                        }
                        if matches!(event, Event::Start(_)) {
                            matched += 1;
                        }
                    }
                }
                if matches!(event, Event::Start(_)) {
                    depth += 1;
                }
            }
            Event::End(_) => {
                if matched == depth {
                    matched -= 1;
                }
                depth = depth.checked_sub(1).ok_or_else(|| bad(&"unbalanced end tag"))?;
            }
            Event::Text(text) if matched == DIGEST + 1 && depth == DIGEST + 1 => {
                let value = text.decode().map_err(|e| bad(&e))?;
                if let Some((_, digest)) = references.last_mut() {
                    digest.extend(value.split_whitespace());
                }
            }
            Event::DocType(_) => return Err(bad(&"document type declarations are not accepted")),
            Event::Eof => break,
            _ => {}
        }
    }
    if depth != 0 || !seen_root {
        return Err(bad(&"unexpected end of document"));
    }
    Ok(references)
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
    // By URI (the first, if the receipt repeats one): linear in what was sent and returned.
    let mut by_uri: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for (uri, digest) in reference_pairs(&returned) {
        by_uri.entry(uri).or_insert(digest);
    }
    for (uri, digest) in sent {
        match by_uri.get(uri) {
            None => return Err(format!("the receipt does not acknowledge {uri}")),
            Some(d) if d != digest => {
                return Err(format!("the receipt's digest for {uri} differs from the one sent"));
            }
            Some(_) => {}
        }
    }
    Ok(())
}
