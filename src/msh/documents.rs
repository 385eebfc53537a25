//! Step: validate the leading business document with the leg's payload handler, on submit
//! and again on receipt, and check it against the link: the document's exporting country is
//! the sending party's, its importing country the receiving party's.

use crate::payload::{Context, Document, Finding, Registry};
use crate::pmode::{Leg, Link};
use crate::wss::content::Content;

/// Why a document is refused: its own findings, or a disagreement with the link.
#[derive(Debug)]
pub enum DocumentProblem {
    Invalid(Vec<Finding>),
    Inconsistent(String),
    Unreadable(String),
}

impl std::fmt::Display for DocumentProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DocumentProblem::Invalid(findings) => {
                let listed: Vec<String> = findings.iter().take(20).map(ToString::to_string).collect();
                write!(
                    f,
                    "{}{}",
                    listed.join("; "),
                    if findings.len() > 20 { format!("; and {} more", findings.len() - 20) } else { String::new() }
                )
            }
            DocumentProblem::Inconsistent(m) | DocumentProblem::Unreadable(m) => f.write_str(m),
        }
    }
}

/// Runs the leg's handler over the file of the leading payload; None when the leg names no
/// document type.
pub fn inspect(
    registry: &Registry,
    link: &Link,
    leg: &Leg,
    sender: &str,
    receiver: &str,
    content: Content<'_>,
) -> Result<Option<Document>, DocumentProblem> {
    let Some(kind) = leg.document.as_deref() else { return Ok(None) };
    let size = match content {
        Content::File(path) => std::fs::metadata(path).map_err(|e| DocumentProblem::Unreadable(e.to_string()))?.len(),
        Content::Memory(bytes) => bytes.len() as u64,
    };
    if size > crate::payload::MAX_DOCUMENT_BYTES as u64 {
        return Err(DocumentProblem::Invalid(vec![crate::payload::finding(
            "DOC-SIZE",
            "document",
            format!("{size} bytes; documents above {} bytes are refused", crate::payload::MAX_DOCUMENT_BYTES),
        )]));
    }
    let bytes = content.read().map_err(|e| DocumentProblem::Unreadable(e.to_string()))?;
    let context = Context { allowed_versions: leg.versions.clone() };
    let document = registry.inspect(Some(kind), &bytes, &context).map_err(DocumentProblem::Invalid)?;
    let country = |party: &str| link.party(party).and_then(|p| p.country.clone());
    for (found, party, role) in
        [(&document.origin_country, sender, "exporting"), (&document.destination_country, receiver, "importing")]
    {
        if let (Some(found), Some(expected)) = (found, country(party))
            && *found != expected
        {
            return Err(DocumentProblem::Inconsistent(format!(
                "the {kind} document {} names {found} as {role} country, but on P-Mode {} that party is {party} ({expected})",
                document.number, link.id
            )));
        }
    }
    Ok(Some(document))
}
