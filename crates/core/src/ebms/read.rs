//! Reading a SOAP 1.2 envelope with `eb:Messaging`, in the decision order of docs/as4.md §4.2.

use super::error::{EbmsCode, EbmsError};
use super::model::*;
use super::ns;
use super::tree::{self, Element, Limits, XmlError};

/// What the receiver learns from the SOAP envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub messaging: Messaging,
    pub body_id: Option<String>,
    /// Element children of the SOAP Body (eDelivery sends an empty Body).
    pub body_children: usize,
    /// Whether a `wsse:Security` header for us is present.
    pub has_security_header: bool,
}

/// Why an envelope was refused. `MustUnderstand` is a SOAP fault of its own, not an ebMS error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("header block {0} must be understood but is not processed here")]
    MustUnderstand(String),
    #[error(transparent)]
    Ebms(#[from] EbmsError),
}

fn invalid(detail: impl Into<String>) -> EbmsError {
    EbmsError::new(EbmsCode::InvalidHeader, detail)
}

fn inconsistent(detail: impl Into<String>) -> EbmsError {
    EbmsError::new(EbmsCode::ValueInconsistent, detail)
}

pub fn read_envelope(bytes: &[u8], limits: Limits) -> Result<Envelope, EnvelopeError> {
    read_tree(tree::parse_pruned(bytes, limits, what_is_read), limits)
}

/// What [`read_envelope`] looks into: the Envelope, its Header and Body, and the
/// `eb:Messaging` blocks. Of the other header blocks (`wsse:Security` above all) it needs their
/// names and attributes, of the Body's children only how many there are.
fn what_is_read(ancestors: &[Element], element: &Element) -> bool {
    match ancestors {
        [] => true,
        [_] => element.is(ns::SOAP12, "Header") || element.is(ns::SOAP12, "Body"),
        [_, parent] => parent.is(ns::SOAP12, "Header") && element.is(ns::EB, "Messaging"),
        _ => true,
    }
}

/// [`read_envelope`] from a tree with nothing left out: the fuzz target checks both agree.
#[doc(hidden)]
pub fn read_envelope_whole(bytes: &[u8], limits: Limits) -> Result<Envelope, EnvelopeError> {
    read_tree(tree::parse(bytes, limits), limits)
}

fn read_tree(root: Result<Element, XmlError>, limits: Limits) -> Result<Envelope, EnvelopeError> {
    let root = root.map_err(|e| match e {
        XmlError::LimitExceeded { .. } => invalid(format!("SOAP envelope refused: {e}")),
        _ => invalid(format!("SOAP envelope is not acceptable XML: {e}")),
    })?;
    if root.is(ns::SOAP11, "Envelope") {
        return Err(invalid("SOAP 1.1 envelope: AS4 requires SOAP 1.2").into());
    }
    if !root.is(ns::SOAP12, "Envelope") {
        return Err(invalid(format!("root element {{{}}}{} is not a SOAP 1.2 Envelope", root.ns, root.local)).into());
    }
    let header = root.child(ns::SOAP12, "Header").ok_or_else(|| invalid("SOAP envelope has no Header"))?;
    let body = root.child(ns::SOAP12, "Body").ok_or_else(|| invalid("SOAP envelope has no Body"))?;

    let mut messaging_blocks = Vec::new();
    let mut has_security_header = false;
    for block in &header.children {
        let understood = block.is(ns::EB, "Messaging") || block.is(ns::WSSE, "Security");
        let targeted_at_us = match block.attr(ns::SOAP12, "role") {
            None => true,
            Some(role) => {
                role == "http://www.w3.org/2003/05/soap-envelope/role/ultimateReceiver"
                    || role == "http://www.w3.org/2003/05/soap-envelope/role/next"
            }
        };
        if block.is(ns::EB, "Messaging") {
            messaging_blocks.push(block);
        } else if block.is(ns::WSSE, "Security") && targeted_at_us {
            has_security_header = true;
        }
        let must_understand =
            matches!(block.attr(ns::SOAP12, "mustUnderstand").map(str::trim), Some("true") | Some("1"));
        if must_understand && targeted_at_us && !understood {
            return Err(EnvelopeError::MustUnderstand(format!("{{{}}}{}", block.ns, block.local)));
        }
    }
    let messaging = match messaging_blocks.as_slice() {
        [one] => read_messaging(one, &limits)?,
        [] => return Err(invalid("no eb:Messaging header").into()),
        _ => return Err(invalid("more than one eb:Messaging header").into()),
    };
    Ok(Envelope {
        messaging,
        body_id: body.attr(ns::WSU, "Id").map(str::to_owned),
        body_children: body.children.len(),
        has_security_header,
    })
}

fn read_messaging(el: &Element, limits: &Limits) -> Result<Messaging, EbmsError> {
    let id = el.attr(ns::WSU, "Id").or_else(|| el.attr("", "id")).map(str::to_owned);
    let users: Vec<&Element> = el.children_named(ns::EB, "UserMessage").collect();
    if users.len() > 1 {
        let first_id = users
            .first()
            .and_then(|u| u.child(ns::EB, "MessageInfo"))
            .and_then(|i| i.child(ns::EB, "MessageId"))
            .map(|m| m.trimmed_text().to_owned());
        return Err(inconsistent(format!("{} eb:UserMessage elements; at most one is allowed", users.len()))
            .with_ref(first_id.as_deref()));
    }
    let user_message = users.first().map(|u| read_user_message(u, limits)).transpose()?;
    let mut signals: Vec<SignalMessage> = Vec::new();
    for s in el.children_named(ns::EB, "SignalMessage") {
        let signal = read_signal(s)?;
        let same_kind =
            signals.iter().any(|o| std::mem::discriminant(&o.signal) == std::mem::discriminant(&signal.signal));
        if same_kind {
            return Err(inconsistent("two signal messages of the same type in one eb:Messaging"));
        }
        signals.push(signal);
    }
    if user_message.is_none() && signals.is_empty() {
        return Err(invalid("eb:Messaging holds neither a UserMessage nor a SignalMessage"));
    }
    Ok(Messaging { id, user_message, signals })
}

fn required<'a>(parent: &'a Element, local: &str, context: &str) -> Result<&'a Element, EbmsError> {
    parent.child(ns::EB, local).ok_or_else(|| invalid(format!("{context} has no eb:{local}")))
}

fn required_text(parent: &Element, local: &str, context: &str) -> Result<String, EbmsError> {
    let value = required(parent, local, context)?.trimmed_text();
    if value.is_empty() {
        return Err(invalid(format!("eb:{local} in {context} is empty")));
    }
    Ok(value.to_owned())
}

fn optional_attr(el: &Element, name: &str) -> Option<String> {
    el.attr("", name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// A value without `@type` must be a URI (ebMS Core 5.2.2): a scheme followed by a colon.
fn looks_like_uri(value: &str) -> bool {
    let Some((scheme, rest)) = value.split_once(':') else {
        return false;
    };
    !rest.is_empty()
        && scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
}

fn read_message_info(el: &Element, context: &str) -> Result<MessageInfo, EbmsError> {
    let info = required(el, "MessageInfo", context)?;
    let message_id = required_text(info, "MessageId", "eb:MessageInfo")?;
    let timestamp = required_text(info, "Timestamp", "eb:MessageInfo").map_err(|e| e.with_ref(Some(&message_id)))?;
    if !valid_timestamp(&timestamp) {
        return Err(invalid(format!("eb:Timestamp '{timestamp}' is not an xs:dateTime")).with_ref(Some(&message_id)));
    }
    let ref_to_message_id =
        info.child(ns::EB, "RefToMessageId").map(|r| r.trimmed_text().to_owned()).filter(|r| !r.is_empty());
    Ok(MessageInfo { timestamp, message_id, ref_to_message_id })
}

/// xs:dateTime, UTC "Z" optional and offsets accepted (phase4 sends +02:00).
fn valid_timestamp(value: &str) -> bool {
    use time::format_description::well_known::Rfc3339;
    if time::OffsetDateTime::parse(value, &Rfc3339).is_ok() {
        return true;
    }
    let with_zone = format!("{value}Z");
    time::OffsetDateTime::parse(&with_zone, &Rfc3339).is_ok()
}

fn read_party(party_info: &Element, local: &str) -> Result<Party, EbmsError> {
    let context = format!("eb:{local}");
    let el = required(party_info, local, "eb:PartyInfo")?;
    let mut ids = Vec::new();
    for id in el.children_named(ns::EB, "PartyId") {
        let value = id.trimmed_text();
        if value.is_empty() {
            return Err(invalid(format!("empty eb:PartyId in {context}")));
        }
        let kind = optional_attr(id, "type");
        if kind.is_none() && !looks_like_uri(value) {
            return Err(inconsistent(format!("eb:PartyId '{value}' in {context} has no @type and is not a URI")));
        }
        ids.push(PartyId { value: value.to_owned(), kind });
    }
    if ids.is_empty() {
        return Err(invalid(format!("{context} has no eb:PartyId")));
    }
    let role = required_text(el, "Role", &context)?;
    Ok(Party { ids, role })
}

/// Refuses more than `limit` repeated `local` children of `parent` before reading any.
fn at_most(parent: &Element, local: &str, limit: usize, setting: &str) -> Result<(), EbmsError> {
    let count = parent.children_named(ns::EB, local).count();
    if count > limit {
        return Err(invalid(format!(
            "{count} eb:{local} elements in eb:{}; this access point accepts at most {limit} ({setting})",
            parent.local
        )));
    }
    Ok(())
}

fn read_properties(
    container: &Element,
    context: &str,
    limit: usize,
    setting: &str,
) -> Result<Vec<Property>, EbmsError> {
    at_most(container, "Property", limit, setting)?;
    let mut properties = Vec::new();
    for p in container.children_named(ns::EB, "Property") {
        let name =
            optional_attr(p, "name").ok_or_else(|| invalid(format!("eb:Property without @name in {context}")))?;
        properties.push(Property { name, kind: optional_attr(p, "type"), value: p.trimmed_text().to_owned() });
    }
    if properties.is_empty() {
        return Err(invalid(format!("{context} must hold at least one eb:Property")));
    }
    Ok(properties)
}

fn read_user_message(el: &Element, limits: &Limits) -> Result<UserMessage, EbmsError> {
    let info = read_message_info(el, "eb:UserMessage")?;
    let id = info.message_id.clone();
    let with_id = |e: EbmsError| e.with_ref(Some(&id));
    let party_info = required(el, "PartyInfo", "eb:UserMessage").map_err(with_id)?;
    for side in ["From", "To"] {
        if let Some(party) = party_info.child(ns::EB, side) {
            at_most(party, "PartyId", limits.max_party_ids, "limits.max_party_ids").map_err(with_id)?;
        }
    }
    if let Some(mp) = el.child(ns::EB, "MessageProperties") {
        at_most(mp, "Property", limits.max_properties, "limits.max_properties").map_err(with_id)?;
    }
    if let Some(pi) = el.child(ns::EB, "PayloadInfo") {
        at_most(pi, "PartInfo", limits.max_parts, "limits.max_parts").map_err(with_id)?;
    }
    let from = read_party(party_info, "From").map_err(with_id)?;
    let to = read_party(party_info, "To").map_err(with_id)?;
    let collab = required(el, "CollaborationInfo", "eb:UserMessage").map_err(with_id)?;
    let service_el = required(collab, "Service", "eb:CollaborationInfo").map_err(with_id)?;
    let service = Service { value: service_el.trimmed_text().to_owned(), kind: optional_attr(service_el, "type") };
    if service.value.is_empty() {
        return Err(with_id(invalid("eb:Service is empty")));
    }
    if service.kind.is_none() && !looks_like_uri(&service.value) {
        return Err(with_id(inconsistent(format!("eb:Service '{}' has no @type and is not a URI", service.value))));
    }
    let action = required_text(collab, "Action", "eb:CollaborationInfo").map_err(with_id)?;
    let conversation_id = required_text(collab, "ConversationId", "eb:CollaborationInfo").map_err(with_id)?;
    let agreement = match collab.child(ns::EB, "AgreementRef") {
        None => None,
        Some(a) => {
            let agreement = AgreementRef {
                value: a.trimmed_text().to_owned(),
                kind: optional_attr(a, "type"),
                pmode: optional_attr(a, "pmode"),
            };
            if agreement.kind.is_none() && !looks_like_uri(&agreement.value) {
                return Err(with_id(inconsistent(format!(
                    "eb:AgreementRef '{}' has no @type and is not a URI",
                    agreement.value
                ))));
            }
            Some(agreement)
        }
    };
    let properties = match el.child(ns::EB, "MessageProperties") {
        Some(mp) => read_properties(mp, "eb:MessageProperties", limits.max_properties, "limits.max_properties")
            .map_err(with_id)?,
        None => Vec::new(),
    };
    let mut parts = Vec::new();
    if let Some(payload_info) = el.child(ns::EB, "PayloadInfo") {
        for part in payload_info.children_named(ns::EB, "PartInfo") {
            let href = optional_attr(part, "href");
            let properties = match part.child(ns::EB, "PartProperties") {
                Some(pp) => {
                    read_properties(pp, "eb:PartProperties", limits.max_part_properties, "limits.max_part_properties")
                        .map_err(with_id)?
                }
                None => Vec::new(),
            };
            parts.push(PartInfo { href, properties });
        }
        if parts.is_empty() {
            return Err(with_id(invalid("eb:PayloadInfo must hold at least one eb:PartInfo")));
        }
    }
    Ok(UserMessage {
        mpc: optional_attr(el, "mpc"),
        info,
        from,
        to,
        agreement,
        service,
        action,
        conversation_id,
        properties,
        parts,
    })
}

fn read_signal(el: &Element) -> Result<SignalMessage, EbmsError> {
    let info = read_message_info(el, "eb:SignalMessage")?;
    let signal = if let Some(receipt) = el.child(ns::EB, "Receipt") {
        let nrr_references = receipt
            .children_named(ns::EBBP, "NonRepudiationInformation")
            .flat_map(|nri| nri.children_named(ns::EBBP, "MessagePartNRInformation"))
            .flat_map(|part| part.children_named(ns::DS, "Reference"))
            .filter_map(|r| r.attr("", "URI").map(str::to_owned))
            .collect();
        Signal::Receipt { nrr_references }
    } else if let Some(pull) = el.child(ns::EB, "PullRequest") {
        Signal::PullRequest {
            mpc: pull.attr("", "mpc").map(str::to_owned).unwrap_or_else(|| ns::DEFAULT_MPC.to_owned()),
        }
    } else {
        let errors: Vec<ErrorDetail> = el
            .children_named(ns::EB, "Error")
            .map(|e| ErrorDetail {
                code: e.attr("", "errorCode").unwrap_or_default().trim().to_owned(),
                severity: e.attr("", "severity").unwrap_or("failure").trim().to_owned(),
                category: optional_attr(e, "category"),
                origin: optional_attr(e, "origin"),
                short_description: optional_attr(e, "shortDescription"),
                ref_to_message_in_error: optional_attr(e, "refToMessageInError"),
                description: e.child(ns::EB, "Description").map(|d| d.trimmed_text().to_owned()),
                detail: e.child(ns::EB, "ErrorDetail").map(|d| d.trimmed_text().to_owned()),
            })
            .collect();
        if errors.is_empty() {
            return Err(
                invalid("eb:SignalMessage holds no Receipt, Error or PullRequest").with_ref(Some(&info.message_id))
            );
        }
        Signal::Errors(errors)
    };
    Ok(SignalMessage { info, signal })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A signed ebMS envelope with a `wsse:Security` header of 40-odd elements.
    const SIGNED: &[u8] = include_bytes!("../../../../fuzz/seeds/envelope/WrongSigningAlgorithm.xml");

    #[test]
    fn the_security_header_is_read_only_for_its_name_and_attributes() {
        let pruned = tree::parse_pruned(SIGNED, Limits::default(), what_is_read).unwrap();
        let header = pruned.child(ns::SOAP12, "Header").unwrap();
        let security = header.child(ns::WSSE, "Security").unwrap();
        assert!(security.children.is_empty() && security.text.is_empty(), "nothing inside is kept");
        assert!(!header.child(ns::EB, "Messaging").unwrap().children.is_empty(), "eb:Messaging is whole");
        let whole = tree::parse(SIGNED, Limits::default()).unwrap();
        assert!(!whole.child(ns::SOAP12, "Header").unwrap().child(ns::WSSE, "Security").unwrap().children.is_empty());
        assert_eq!(read_envelope(SIGNED, Limits::default()), read_envelope_whole(SIGNED, Limits::default()));
    }

    proptest::proptest! {
        /// Damage anywhere in a signed envelope (inside the Security header as well) is
        /// accepted or refused, with the same error, whether or not that part is kept.
        #[test]
        fn leaving_out_what_is_not_read_changes_no_verdict(
            at in 0..SIGNED.len(),
            cut in 0usize..40,
            insert in proptest::collection::vec(proptest::sample::select(b"<>&;#/=:\"' xa\xff".to_vec()), 0..6),
        ) {
            let mut bytes = SIGNED[..at].to_vec();
            bytes.extend_from_slice(&insert);
            bytes.extend_from_slice(&SIGNED[(at + cut).min(SIGNED.len())..]);
            let limits = Limits { max_elements: 60, max_depth: 7, ..Limits::default() };
            proptest::prop_assert_eq!(read_envelope(&bytes, limits), read_envelope_whole(&bytes, limits));
            proptest::prop_assert_eq!(
                read_envelope(&bytes, Limits::default()),
                read_envelope_whole(&bytes, Limits::default())
            );
        }
    }

    #[test]
    fn uri_detection() {
        assert!(looks_like_uri("urn:pacific-alliance:ephyto"));
        assert!(looks_like_uri("http://x"));
        assert!(!looks_like_uri("CL-SAG"));
        assert!(!looks_like_uri("1:2"));
        assert!(!looks_like_uri("urn:"));
    }

    #[test]
    fn timestamps() {
        assert!(valid_timestamp("2026-05-01T12:00:00.000Z"));
        assert!(valid_timestamp("2016-12-21T11:01:16.795+01:00"));
        assert!(valid_timestamp("2016-12-21T11:01:16.795"));
        assert!(!valid_timestamp("yesterday"));
    }

    #[test]
    fn repeated_elements_are_bounded_before_they_are_read() {
        let mut um = crate::ebms::write::tests_support::sample();
        let property = |i: usize| Property { name: format!("p{i}"), kind: None, value: "v".into() };
        um.properties = (0..101).map(property).collect();
        let envelope = crate::ebms::write::user_message_envelope(&um);
        let Err(EnvelopeError::Ebms(e)) = read_envelope(envelope.as_bytes(), Limits::default()) else {
            panic!("101 properties accepted")
        };
        assert_eq!(e.code, EbmsCode::InvalidHeader);
        assert_eq!(e.ref_to_message_id.as_deref(), Some(um.info.message_id.as_str()));
        assert!(e.detail.contains("101 eb:Property elements in eb:MessageProperties; this access point accepts at most 100 (limits.max_properties)"), "{}", e.detail);
        um.properties.truncate(100);
        assert!(read_envelope(crate::ebms::write::user_message_envelope(&um).as_bytes(), Limits::default()).is_ok());
        // Part properties and parts, with limits an operator set lower.
        let tight = Limits { max_part_properties: 1, max_parts: 2, ..Limits::default() };
        um.parts[0].properties = vec![property(1), property(2)];
        let Err(EnvelopeError::Ebms(e)) =
            read_envelope(crate::ebms::write::user_message_envelope(&um).as_bytes(), tight)
        else {
            panic!("two part properties accepted under a limit of 1")
        };
        assert!(
            e.detail.contains("eb:PartProperties; this access point accepts at most 1 (limits.max_part_properties)"),
            "{}",
            e.detail
        );
        um.parts = vec![um.parts[0].clone(); 3];
        for p in &mut um.parts {
            p.properties.truncate(1);
        }
        let Err(EnvelopeError::Ebms(e)) =
            read_envelope(crate::ebms::write::user_message_envelope(&um).as_bytes(), tight)
        else {
            panic!("three parts accepted under a limit of 2")
        };
        assert!(e.detail.contains("3 eb:PartInfo elements in eb:PayloadInfo"), "{}", e.detail);
    }
}
