//! UN/EDIFACT interchanges: the envelope (UNA, UNB/UNZ, UNG/UNE, UNH/UNT pairing, counts,
//! control references, the release character) validated by the `edifact-rs` crate; the
//! character repertoire of UNOA (upper case only), which that crate leaves to the caller,
//! checked here; message types detected (SANCRT for phytosanitary certificates and
//! certificates of origin, CUSDEC/CUSRES, CONTRL) and sender, recipient and references
//! extracted.

use super::{Context, Document, Finding, PayloadHandler, finding};
use edifact_rs::{ReaderConfig, Segment, from_bytes_with_config, validate_envelope_lenient};

pub struct Edifact;

impl PayloadHandler for Edifact {
    fn name(&self) -> &'static str {
        "edifact"
    }

    fn detect(&self, head: &[u8]) -> bool {
        let start = head.iter().position(|b| !b.is_ascii_whitespace()).map(|i| &head[i..]).unwrap_or(head);
        start.starts_with(b"UNA") || start.starts_with(b"UNB")
    }

    fn inspect(&self, bytes: &[u8], _context: &Context) -> Result<Document, Vec<Finding>> {
        let config = ReaderConfig::default().max_segments(200_000).max_input_bytes(super::MAX_DOCUMENT_BYTES as u64);
        let segments: Vec<Segment<'_>> = from_bytes_with_config(bytes, config)
            .collect::<Result<_, _>>()
            .map_err(|e| vec![finding("EDI-SYNTAX", "interchange", e.to_string())])?;
        let result = validate_envelope_lenient(&segments);
        let mut errors: Vec<Finding> =
            result.errors.iter().map(|e| finding("EDI-ENVELOPE", "interchange", e.to_string())).collect();
        let Some(interchange) = result.interchange else {
            if errors.is_empty() {
                errors.push(finding("EDI-ENVELOPE", "interchange", "not a complete UNB…UNZ interchange"));
            }
            return Err(errors);
        };
        let envelope = &interchange.interchange;
        if envelope.syntax_identifier == "UNOA" {
            errors.extend(unoa_violations(&segments));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let message_types: Vec<String> = interchange
            .messages
            .iter()
            .map(|m| format!("{}:{}:{}:{}", m.message_type, m.version, m.release, m.controlling_agency))
            .collect();
        // The business document of the first message: BGM (document name code and number),
        // LOC 27 (country of origin) and 28 (country of destination).
        let first_message: Vec<&Segment<'_>> =
            segments.iter().skip_while(|s| s.tag != "UNH").skip(1).take_while(|s| s.tag != "UNT").collect();
        let bgm = first_message.iter().find(|s| s.tag == "BGM");
        let code = bgm.and_then(|s| s.component_str(0, 0)).unwrap_or_default().to_owned();
        let number =
            bgm.and_then(|s| s.element_str(1)).map(str::to_owned).unwrap_or_else(|| envelope.control_ref.clone());
        let loc = |qualifier: &str| {
            first_message
                .iter()
                .find(|s| s.tag == "LOC" && s.element_str(0) == Some(qualifier))
                .and_then(|s| s.component_str(1, 0))
                .map(str::to_owned)
        };
        let kind = match (interchange.messages.first().map(|m| m.message_type.as_str()), code.as_str()) {
            (Some("SANCRT"), "851") => "phytosanitary certificate",
            (Some("SANCRT"), "657") => "phytosanitary re-export certificate",
            (Some("SANCRT"), "861") => "certificate of origin",
            (Some("CUSDEC"), _) => "customs declaration",
            (Some("CUSRES"), _) => "customs response",
            (Some("CONTRL"), _) => "syntax and service report",
            _ => "interchange",
        };
        let mut fields = std::collections::BTreeMap::new();
        fields.insert("sender".into(), envelope.sender_id.clone());
        fields.insert("recipient".into(), envelope.recipient_id.clone());
        fields.insert("interchange_reference".into(), envelope.control_ref.clone());
        fields.insert("syntax".into(), format!("{}:{}", envelope.syntax_identifier, envelope.syntax_version));
        fields.insert("messages".into(), message_types.join(", "));
        Ok(Document {
            kind: "edifact".into(),
            profile: message_types.first().cloned().unwrap_or_else(|| "UN/EDIFACT".into()),
            number,
            doc_type: if code.is_empty() {
                interchange.messages.first().map(|m| m.message_type.clone()).unwrap_or_default()
            } else {
                code
            },
            status: format!("{kind}, {} message(s)", interchange.messages.len()),
            origin_country: loc("27"),
            destination_country: loc("28"),
            fields,
            warnings: Vec::new(),
        })
    }
}

/// UNOA allows upper-case letters, digits, space and `.,-()/='+:?!"%&*;<>` only.
fn unoa_violations(segments: &[Segment<'_>]) -> Vec<Finding> {
    let allowed = |c: char| c.is_ascii_uppercase() || c.is_ascii_digit() || " .,-()/='+:?!\"%&*;<>".contains(c);
    let mut out = Vec::new();
    for (i, s) in segments.iter().enumerate() {
        for (e, element) in s.elements.iter().enumerate() {
            for value in element.components() {
                if let Some(bad) = value.chars().find(|c| !allowed(*c)) {
                    out.push(finding(
                        "EDI-CHARSET",
                        format!("segment {} ({}), element {}", i + 1, s.tag, e + 1),
                        format!("'{bad}' is outside the UNOA repertoire (upper case only) declared in UNB"),
                    ));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<(String, Vec<u8>)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../samples/edifact");
        let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "edi"))
            .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn valid_interchanges_pass_and_negatives_fail() {
        let all = samples();
        assert!(all.len() >= 19);
        for (name, bytes) in all {
            let result = Edifact.inspect(&bytes, &Context::default());
            if name.starts_with("neg_") {
                let findings = result.expect_err(&name);
                assert!(!findings.is_empty(), "{name}");
            } else {
                result.unwrap_or_else(|e| panic!("{name}: {e:?}"));
            }
        }
    }

    #[test]
    fn sancrt_metadata_and_unoa() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../samples/edifact");
        let d = Edifact
            .inspect(&std::fs::read(dir.join("valid_v4_sancrt_phyto_single.edi")).unwrap(), &Context::default())
            .unwrap();
        assert_eq!((d.doc_type.as_str(), d.number.as_str()), ("851", "CL-2025-0001234"));
        assert_eq!((d.origin_country.as_deref(), d.destination_country.as_deref()), (Some("CL"), Some("MX")));
        assert_eq!(d.fields["sender"], "CLSAG");
        assert!(d.status.starts_with("phytosanitary certificate"));
        let lower = Edifact
            .inspect(&std::fs::read(dir.join("neg_unoa_lowercase_not_allowed.edi")).unwrap(), &Context::default())
            .unwrap_err();
        assert_eq!(lower[0].rule, "EDI-CHARSET");
        assert!(lower[0].location.starts_with("segment "), "{lower:?}");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let mut input = b"UNB+UNOC:4+A+B+250101:1200+1'".to_vec();
            input.extend(bytes);
            let _ = Edifact.inspect(&input, &Context::default());
        }
    }
}
