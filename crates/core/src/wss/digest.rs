//! Reference digests: exclusive c14n for XML references, the SwA Attachment-Content-
//! Signature-Transform for MIME parts (docs/as4.md §2.3).

use super::content::Content;
use super::xml::{Xml, XmlError};
use base64::Engine as _;
use sha2::{Digest, Sha256};

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn unb64(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(compact).ok()
}

/// How an attachment is prepared before hashing, chosen by the part's Content-Type
/// (WSS SwA profile §5.4.2 as WSS4J implements it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachmentForm {
    /// `text/xml`, `application/xml`, `*/*+xml`: exclusive c14n of the document.
    Xml,
    /// Other `text/*`: line ends normalised to CRLF.
    Text,
    /// Everything else (including gzip): the raw octets.
    Octets,
}

pub fn attachment_form(content_type: &str) -> AttachmentForm {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if essence == "text/xml" || essence == "application/xml" || essence.ends_with("+xml") {
        AttachmentForm::Xml
    } else if essence.starts_with("text/") {
        AttachmentForm::Text
    } else {
        AttachmentForm::Octets
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("cannot read attachment: {0}")]
    Io(#[from] std::io::Error),
    #[error("XML attachment: {0}")]
    Xml(#[from] XmlError),
}

/// SHA-256 of an attachment after its transform. Octet files stream; XML and text parts
/// are read whole (their size is bounded by the leg's max_payload).
pub fn attachment_digest<'a>(content_type: &str, content: impl Into<Content<'a>>) -> Result<Vec<u8>, DigestError> {
    let content = content.into();
    match (attachment_form(content_type), content) {
        (AttachmentForm::Octets, Content::File(path)) => Ok(crate::util::sha256_file(path)?.to_vec()),
        (AttachmentForm::Octets, Content::Memory(bytes)) => Ok(Sha256::digest(bytes).to_vec()),
        (AttachmentForm::Xml, _) => {
            let xml = Xml::parse(&content.read()?)?;
            Ok(Sha256::digest(xml.c14n_document()?).to_vec())
        }
        (AttachmentForm::Text, _) => Ok(Sha256::digest(crlf(&content.read()?)).to_vec()),
    }
}

fn crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 40);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_and_line_ends() {
        assert_eq!(attachment_form("application/xml; charset=UTF-8"), AttachmentForm::Xml);
        assert_eq!(attachment_form("application/soap+xml"), AttachmentForm::Xml);
        assert_eq!(attachment_form("text/plain"), AttachmentForm::Text);
        assert_eq!(attachment_form("application/gzip"), AttachmentForm::Octets);
        assert_eq!(crlf(b"a\nb\r\nc\rd"), b"a\r\nb\r\nc\r\nd");
    }

    #[test]
    fn xml_attachments_digest_their_canonical_form() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.xml");
        let b = dir.path().join("b.xml");
        std::fs::write(&a, "<?xml version=\"1.0\"?>\n<r b='2' a=\"1\"><x/></r>").unwrap();
        std::fs::write(&b, "<r a=\"1\" b=\"2\"><x></x></r>").unwrap();
        assert_eq!(
            attachment_digest("application/xml", &a).unwrap(),
            attachment_digest("application/xml", &b).unwrap()
        );
        assert_ne!(
            attachment_digest("application/octet-stream", &a).unwrap(),
            attachment_digest("application/octet-stream", &b).unwrap()
        );
        // A part in memory digests as its file would, in every form.
        let bytes = std::fs::read(&a).unwrap();
        for kind in ["application/xml", "text/plain", "application/gzip"] {
            assert_eq!(
                attachment_digest(kind, Content::Memory(&bytes)).unwrap(),
                attachment_digest(kind, &a).unwrap(),
                "{kind}"
            );
        }
    }
}
