//! A small, bounded, namespace-resolved element tree for SOAP envelopes.
//!
//! Envelopes are a few kilobytes; a tree is simpler to interpret than a streaming state
//! machine and the limits below keep hostile input cheap. DTDs are refused outright (no
//! entity expansion, no external loading); only the five predefined entities and character
//! references are decoded.

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

/// Limits on an envelope. The first three are checked while the tree is read; the counts of
/// repeated ebMS elements when eb:Messaging is read — all before any signature or decryption
/// work, so a hostile message is refused for the price of parsing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_depth: usize,
    pub max_elements: usize,
    /// eb:Property elements in eb:MessageProperties.
    pub max_properties: usize,
    /// eb:Property elements in one eb:PartProperties.
    pub max_part_properties: usize,
    /// eb:PartInfo elements (payloads) in a user message.
    pub max_parts: usize,
    /// eb:PartyId elements in eb:From or eb:To.
    pub max_party_ids: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 4 << 20,
            max_depth: 64,
            max_elements: 20_000,
            max_properties: 100,
            max_part_properties: 20,
            max_parts: 64,
            max_party_ids: 10,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum XmlError {
    #[error("XML is not well-formed at byte {position}: {reason}")]
    NotWellFormed { position: u64, reason: String },
    #[error("XML document type declarations are not accepted")]
    DoctypeRefused,
    #[error("XML exceeds the {limit} limit")]
    LimitExceeded { limit: &'static str },
    #[error("XML has no root element")]
    Empty,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub ns: String,
    pub local: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    pub ns: String,
    pub local: String,
    pub attrs: Vec<Attribute>,
    pub children: Vec<Element>,
    /// Concatenated character data directly inside this element.
    pub text: String,
}

impl Element {
    pub fn is(&self, ns: &str, local: &str) -> bool {
        self.ns == ns && self.local == local
    }

    /// An attribute by namespace ("" for unqualified) and local name.
    pub fn attr(&self, ns: &str, local: &str) -> Option<&str> {
        self.attrs.iter().find(|a| a.ns == ns && a.local == local).map(|a| a.value.as_str())
    }

    pub fn child(&self, ns: &str, local: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(ns, local))
    }

    pub fn children_named<'a>(&'a self, ns: &'a str, local: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.is(ns, local))
    }

    /// Text with surrounding whitespace removed (xs:token-like values).
    pub fn trimmed_text(&self) -> &str {
        self.text.trim()
    }
}

/// Parses `bytes` into a tree, enforcing `limits`.
pub fn parse(bytes: &[u8], limits: Limits) -> Result<Element, XmlError> {
    parse_pruned(bytes, limits, |_, _| true)
}

/// [`parse`], keeping the content of an element only where `descend(ancestors, element)` says
/// so (`ancestors` root first). An element not descended into keeps its name and attributes;
/// its content is read, counted and checked as in [`parse`] (the same documents are refused,
/// with the same errors) but not kept: the ebMS reader needs nothing inside `wsse:Security`,
/// which is most of a signed envelope's elements, and building it was half of reading the
/// envelope.
pub fn parse_pruned(
    bytes: &[u8],
    limits: Limits,
    descend: impl Fn(&[Element], &Element) -> bool,
) -> Result<Element, XmlError> {
    if bytes.len() > limits.max_bytes {
        return Err(XmlError::LimitExceeded { limit: "size" });
    }
    // Receivers must accept a UTF-8 byte order mark.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut reader = NsReader::from_reader(bytes);
    reader.config_mut().check_end_names = true;
    reader.config_mut().trim_text(false);
    let mut stack: Vec<Element> = Vec::new();
    // Elements open inside the top of `stack` when it is not descended into (0: keeping).
    let mut skipped_open = 0usize;
    let mut skipping = false;
    let mut root: Option<Element> = None;
    let mut elements = 0usize;
    loop {
        let position = reader.buffer_position();
        let bad = |e: &dyn std::fmt::Display| XmlError::NotWellFormed { position, reason: e.to_string() };
        let (resolved, event) = reader.read_resolved_event().map_err(|e| bad(&e))?;
        match event {
            Event::Start(ref start) | Event::Empty(ref start) => {
                if root.is_some() {
                    return Err(bad(&"content after the root element"));
                }
                elements += 1;
                if elements > limits.max_elements {
                    return Err(XmlError::LimitExceeded { limit: "element count" });
                }
                if stack.len() + skipped_open >= limits.max_depth {
                    return Err(XmlError::LimitExceeded { limit: "depth" });
                }
                if skipping {
                    known_namespace(&resolved).map_err(|e| bad(&e))?;
                    check_start(&reader, start).map_err(|e| bad(&e))?;
                    if matches!(event, Event::Start(_)) {
                        skipped_open += 1;
                    }
                    continue;
                }
                let ns = namespace_of(&resolved).map_err(|e| bad(&e))?;
                let local = String::from_utf8(start.local_name().as_ref().to_vec()).map_err(|e| bad(&e))?;
                let mut attrs = Vec::new();
                for attr in start.attributes() {
                    let attr = attr.map_err(|e| bad(&e))?;
                    let key = attr.key;
                    if key.as_namespace_binding().is_some() {
                        continue;
                    }
                    let (res, local_name) = reader.resolver().resolve_attribute(key);
                    let ns = namespace_of(&res).map_err(|e| bad(&e))?;
                    let value = attr.decode_and_unescape_value(reader.decoder()).map_err(|e| bad(&e))?;
                    attrs.push(Attribute {
                        ns,
                        local: String::from_utf8(local_name.as_ref().to_vec()).map_err(|e| bad(&e))?,
                        value: value.into_owned(),
                    });
                }
                let element = Element { ns, local, attrs, children: Vec::new(), text: String::new() };
                if matches!(event, Event::Empty(_)) {
                    attach(&mut stack, &mut root, element);
                } else {
                    skipping = !descend(&stack, &element);
                    stack.push(element);
                }
            }
            Event::End(_) if skipped_open > 0 => skipped_open -= 1,
            Event::End(_) => {
                skipping = false;
                let element = stack.pop().ok_or_else(|| bad(&"unbalanced end tag"))?;
                attach(&mut stack, &mut root, element);
            }
            Event::Text(text) => {
                let value = text.decode().map_err(|e| bad(&e))?;
                if !skipping {
                    push_text(&mut stack, &value, position)?;
                }
            }
            Event::GeneralRef(reference) => {
                // Only character references and the five predefined entities exist without a DTD.
                let name = reference.decode().map_err(|e| bad(&e))?;
                let decoded = match reference.resolve_char_ref().map_err(|e| bad(&e))? {
                    Some(c) => c.to_string(),
                    None => match name.as_ref() {
                        "lt" => "<".into(),
                        "gt" => ">".into(),
                        "amp" => "&".into(),
                        "apos" => "'".into(),
                        "quot" => "\"".into(),
                        other => return Err(bad(&format!("unknown entity &{other};"))),
                    },
                };
                if !skipping {
                    push_text(&mut stack, &decoded, position)?;
                }
            }
            Event::CData(data) => {
                if skipping {
                    std::str::from_utf8(&data).map_err(|e| bad(&e))?;
                } else {
                    let value = String::from_utf8(data.into_inner().into_owned()).map_err(|e| bad(&e))?;
                    push_text(&mut stack, &value, position)?;
                }
            }
            Event::DocType(_) => return Err(XmlError::DoctypeRefused),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(XmlError::NotWellFormed {
            position: reader.buffer_position(),
            reason: "unexpected end of document".into(),
        });
    }
    root.ok_or(XmlError::Empty)
}

/// The checks [`parse`] makes of a start tag it keeps (after its namespace), without keeping
/// anything: its names are UTF-8, its attributes' namespaces resolve, their values unescape.
fn check_start(reader: &NsReader<&[u8]>, start: &quick_xml::events::BytesStart<'_>) -> Result<(), String> {
    std::str::from_utf8(start.local_name().as_ref()).map_err(|e| e.to_string())?;
    for attr in start.attributes() {
        let attr = attr.map_err(|e| e.to_string())?;
        if attr.key.as_namespace_binding().is_some() {
            continue;
        }
        let (res, local_name) = reader.resolver().resolve_attribute(attr.key);
        known_namespace(&res)?;
        attr.decode_and_unescape_value(reader.decoder()).map_err(|e| e.to_string())?;
        std::str::from_utf8(local_name.as_ref()).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// [`namespace_of`]'s check without the copy.
fn known_namespace(resolved: &ResolveResult<'_>) -> Result<(), String> {
    match resolved {
        ResolveResult::Bound(ns) => std::str::from_utf8(ns.as_ref()).map(drop).map_err(|e| e.to_string()),
        ResolveResult::Unbound => Ok(()),
        ResolveResult::Unknown(prefix) => {
            Err(format!("undeclared namespace prefix '{}'", String::from_utf8_lossy(prefix)))
        }
    }
}

fn push_text(stack: &mut [Element], value: &str, position: u64) -> Result<(), XmlError> {
    match stack.last_mut() {
        Some(top) => {
            top.text.push_str(value);
            Ok(())
        }
        None if value.trim().is_empty() => Ok(()),
        None => Err(XmlError::NotWellFormed { position, reason: "text outside the root element".into() }),
    }
}

fn attach(stack: &mut [Element], root: &mut Option<Element>, element: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(element),
        None => *root = Some(element),
    }
}

fn namespace_of(resolved: &ResolveResult<'_>) -> Result<String, String> {
    match resolved {
        ResolveResult::Bound(ns) => String::from_utf8(ns.as_ref().to_vec()).map_err(|e| e.to_string()),
        ResolveResult::Unbound => Ok(String::new()),
        ResolveResult::Unknown(prefix) => {
            Err(format!("undeclared namespace prefix '{}'", String::from_utf8_lossy(prefix)))
        }
    }
}

/// Escapes text for element content and attribute values.
pub fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_namespaces_and_attributes() {
        let doc = br#"<a:r xmlns:a="urn:a" xmlns:b="urn:b" b:x="1" y="2"><a:c>t&amp;u&#233;</a:c></a:r>"#;
        let root = parse(doc, Limits::default()).unwrap();
        assert!(root.is("urn:a", "r"));
        assert_eq!(root.attr("urn:b", "x"), Some("1"));
        assert_eq!(root.attr("", "y"), Some("2"));
        assert_eq!(root.child("urn:a", "c").unwrap().text, "t&u\u{e9}");
    }

    #[test]
    fn refuses_doctype_and_unknown_entities() {
        let doc = b"<?xml version='1.0'?><!DOCTYPE r [<!ENTITY e 'x'>]><r>&e;</r>";
        assert_eq!(parse(doc, Limits::default()), Err(XmlError::DoctypeRefused));
        assert!(matches!(parse(b"<r>&e;</r>", Limits::default()), Err(XmlError::NotWellFormed { .. })));
    }

    #[test]
    fn enforces_depth_and_mismatched_tags() {
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert_eq!(parse(deep.as_bytes(), Limits::default()), Err(XmlError::LimitExceeded { limit: "depth" }));
        assert!(parse(b"<a><b></a></b>", Limits::default()).is_err());
        assert!(parse(b"<a>", Limits::default()).is_err());
        assert!(parse(b"<a/><b/>", Limits::default()).is_err());
        assert!(parse(b"<p:a/>", Limits::default()).is_err());
    }

    #[test]
    fn accepts_bom() {
        assert!(parse(b"\xEF\xBB\xBF<a/>", Limits::default()).is_ok());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = parse(&bytes, Limits::default());
        }
    }
}
