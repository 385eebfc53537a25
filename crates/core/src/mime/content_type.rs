//! The HTTP Content-Type of an AS4 request or response: SwA multipart or bare SOAP 1.2.

use crate::ebms::{EbmsCode, EbmsError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packaging {
    /// `multipart/related` with its boundary and the Content-ID of the root part (no brackets).
    Multipart { boundary: String, start: Option<String> },
    /// A bare `application/soap+xml` envelope (signals, or messages without attachments).
    Soap,
}

fn mime_error(detail: impl Into<String>) -> EbmsError {
    EbmsError::new(EbmsCode::MimeInconsistency, detail)
}

/// Strips the angle brackets of a Content-ID header value, if present.
pub fn strip_brackets(value: &str) -> &str {
    let v = value.trim();
    v.strip_prefix('<').and_then(|s| s.strip_suffix('>')).unwrap_or(v)
}

pub fn parse_packaging(content_type: Option<&str>) -> Result<Packaging, EbmsError> {
    let raw = content_type.ok_or_else(|| mime_error("request has no Content-Type"))?;
    let parsed: mime::Mime =
        raw.parse().map_err(|e| mime_error(format!("Content-Type '{raw}' cannot be parsed: {e}")))?;
    match parsed.essence_str() {
        "multipart/related" => {
            let boundary = parsed
                .get_param("boundary")
                .map(|b| b.as_str().to_owned())
                .filter(|b| !b.is_empty() && b.len() <= 200)
                .ok_or_else(|| mime_error("multipart/related without a usable boundary"))?;
            if let Some(kind) = parsed.get_param("type")
                && !kind.as_str().eq_ignore_ascii_case("application/soap+xml")
            {
                return Err(mime_error(format!(
                    "multipart/related type is '{}', AS4 requires application/soap+xml",
                    kind.as_str()
                )));
            }
            let start = parsed.get_param("start").map(|s| strip_brackets(s.as_str()).to_owned());
            Ok(Packaging::Multipart { boundary, start })
        }
        "application/soap+xml" => Ok(Packaging::Soap),
        other => Err(mime_error(format!("Content-Type {other} is neither multipart/related nor application/soap+xml"))),
    }
}

/// Whether a part Content-Type is SOAP 1.2 (the root part must be).
pub fn is_soap(content_type: &str) -> bool {
    content_type.parse::<mime::Mime>().map(|m| m.essence_str() == "application/soap+xml").unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_with_start_and_type() {
        let ct = r#"multipart/related; type="application/soap+xml"; boundary="----=_Part_0_1"; start="<root@x>"; start-info="application/soap+xml""#;
        assert_eq!(
            parse_packaging(Some(ct)).unwrap(),
            Packaging::Multipart { boundary: "----=_Part_0_1".into(), start: Some("root@x".into()) }
        );
    }

    #[test]
    fn refuses_other_types() {
        for ct in [
            "text/plain",
            "multipart/related; boundary=\"\"",
            "multipart/related; type=\"text/xml\"; boundary=b",
            "%%%",
        ] {
            assert_eq!(parse_packaging(Some(ct)).unwrap_err().code, EbmsCode::MimeInconsistency, "{ct}");
        }
        assert!(parse_packaging(None).is_err());
        assert_eq!(parse_packaging(Some("application/soap+xml; charset=UTF-8")).unwrap(), Packaging::Soap);
    }

    #[test]
    fn content_ids() {
        assert_eq!(strip_brackets("<a@b>"), "a@b");
        assert_eq!(strip_brackets(" a@b "), "a@b");
    }
}
