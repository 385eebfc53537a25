//! Payload handlers (protocol core): one trait for a document type, and a registry. A handler
//! detects its documents, validates them, extracts their business metadata. The access point
//! runs it before accepting a submission and again before delivering a received message.
//!
//! Adding a document type: write a module implementing [`PayloadHandler`] and add one line to
//! [`Registry::standard`]; name it in a P-Mode leg's `document` key.

pub mod edifact;
pub mod ephyto;
pub mod origin;

use serde::Serialize;
use std::collections::BTreeMap;

/// A problem found in a document, located for the person who has to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable rule code, e.g. `EPHYTO-XSD`, `EPHYTO-TYPECODE`, `COD-SIG-EXPORTER`, `EDI-UNT-COUNT`.
    pub rule: String,
    /// Where: `line 42`, and the element path or segment when known.
    pub location: String,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} [{}] {}", self.location, self.rule, self.message)
    }
}

pub fn finding(rule: &str, location: impl Into<String>, message: impl Into<String>) -> Finding {
    Finding { rule: rule.into(), location: location.into(), message: message.into() }
}

/// What a handler extracted: the business metadata the access point routes and reports on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Document {
    /// The handler that read it: `ephyto`, `origin`, `edifact`.
    pub kind: String,
    /// The format and version, e.g. `SPSCertificate:17`, `ALADI COD 1.8.3`, `SANCRT:D:21A`.
    pub profile: String,
    /// Certificate number (or interchange/document reference).
    pub number: String,
    /// Document type code: 851 / 657 for ePhyto, the agreement for a COD, BGM 1001 for EDIFACT.
    pub doc_type: String,
    /// Human-readable status: issued, replaced, withdrawn, emission stage...
    pub status: String,
    /// ISO 3166 alpha-2 country that issued / exports.
    pub origin_country: Option<String>,
    /// ISO 3166 alpha-2 country of destination / import.
    pub destination_country: Option<String>,
    /// Further extracted fields (consignor, consignee, products, HS codes...).
    pub fields: BTreeMap<String, String>,
    /// Findings that do not make the document invalid.
    pub warnings: Vec<Finding>,
}

/// What a handler is told about the exchange.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// ePhyto schema versions the P-Mode allows (e.g. ["17", "11"]); empty means all.
    pub allowed_versions: Vec<String>,
}

pub trait PayloadHandler: Send + Sync {
    /// The name P-Mode legs use in `document = "..."`.
    fn name(&self) -> &'static str;
    /// Whether these bytes look like this handler's documents (cheap sniffing of the start).
    fn detect(&self, head: &[u8]) -> bool;
    /// Parses, validates and extracts; any finding here makes the document invalid.
    fn inspect(&self, bytes: &[u8], context: &Context) -> Result<Document, Vec<Finding>>;
}

/// Documents larger than this are refused before parsing (bounded memory and time).
pub const MAX_DOCUMENT_BYTES: usize = 32 << 20;

pub struct Registry {
    handlers: Vec<Box<dyn PayloadHandler>>,
}

impl Registry {
    /// The handlers this build ships. A new document type is one line here.
    pub fn standard() -> Registry {
        Registry { handlers: vec![Box::new(ephyto::Ephyto), Box::new(origin::AladiCod), Box::new(edifact::Edifact)] }
    }

    pub fn get(&self, name: &str) -> Option<&dyn PayloadHandler> {
        self.handlers.iter().find(|h| h.name() == name).map(|h| h.as_ref())
    }

    /// The handler whose documents these bytes look like.
    pub fn detect(&self, bytes: &[u8]) -> Option<&dyn PayloadHandler> {
        let head = &bytes[..bytes.len().min(4096)];
        self.handlers.iter().find(|h| h.detect(head)).map(|h| h.as_ref())
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.handlers.iter().map(|h| h.name()).collect()
    }

    /// Inspects with the named handler, or by sniffing when `name` is None.
    pub fn inspect(&self, name: Option<&str>, bytes: &[u8], context: &Context) -> Result<Document, Vec<Finding>> {
        if bytes.len() > MAX_DOCUMENT_BYTES {
            return Err(vec![finding(
                "DOC-SIZE",
                "document",
                format!("{} bytes; documents above {MAX_DOCUMENT_BYTES} bytes are refused", bytes.len()),
            )]);
        }
        let handler = match name {
            Some(n) => {
                self.get(n).ok_or_else(|| vec![finding("DOC-TYPE", "document", format!("no handler named '{n}'"))])?
            }
            None => self.detect(bytes).ok_or_else(|| {
                vec![finding(
                    "DOC-TYPE",
                    "document",
                    format!("not a document type this access point knows ({})", self.names().join(", ")),
                )]
            })?,
        };
        handler.inspect(bytes, context)
    }
}

/// Findings from libxml2's parse diagnostics.
pub(crate) fn parse_findings(rule: &str, errors: Vec<(Option<i32>, String)>) -> Vec<Finding> {
    errors
        .into_iter()
        .map(|(line, message)| {
            finding(rule, line.map(|l| format!("line {l}")).unwrap_or_else(|| "document".into()), message)
        })
        .collect()
}

/// `line N, /Root/Child/...` for an element.
pub(crate) fn locate(node: &libxml::tree::Node) -> String {
    let mut names = vec![node.get_name()];
    let mut current = node.get_parent();
    while let Some(p) = current {
        if p.get_type() != Some(libxml::tree::NodeType::ElementNode) {
            break;
        }
        names.push(p.get_name());
        current = p.get_parent();
    }
    names.reverse();
    format!("line {}, /{}", crate::wss::xml::line_of(node), names.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_detects_and_bounds() {
        let registry = Registry::standard();
        assert_eq!(registry.detect(b"UNA:+.? 'UNB+UNOA:3").map(|h| h.name()), Some("edifact"));
        assert_eq!(
            registry
                .detect(br#"<rsm:SPSCertificate xmlns:rsm="urn:un:unece:uncefact:data:standard:SPSCertificate:17"/>"#)
                .map(|h| h.name()),
            Some("ephyto")
        );
        assert!(registry.detect(b"%PDF-1.7").is_none());
        let huge = vec![b' '; MAX_DOCUMENT_BYTES + 1];
        assert_eq!(registry.inspect(Some("ephyto"), &huge, &Context::default()).unwrap_err()[0].rule, "DOC-SIZE");
        assert_eq!(registry.inspect(None, b"%PDF-1.7", &Context::default()).unwrap_err()[0].rule, "DOC-TYPE");
    }
}
