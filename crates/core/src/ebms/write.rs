//! Writing SOAP 1.2 envelopes with `eb:Messaging`. Output is deterministic for a given input,
//! so a retry resends byte-identical XML.

use super::error::EbmsError;
use super::model::*;
use super::ns;
use super::tree::escape;
use std::fmt::Write as _;

const ENVELOPE_OPEN: &str = concat!(
    r#"<?xml version="1.0" encoding="UTF-8"?>"#,
    r#"<S12:Envelope xmlns:S12="http://www.w3.org/2003/05/soap-envelope""#,
    r#" xmlns:wsu="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd""#,
    r#" xmlns:eb="http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/">"#,
);

/// Ids of the signature targets, derived from the MessageId so they are stable across retries.
pub fn element_ids(message_id: &str) -> (String, String) {
    let digest = crate::util::short_hash(message_id.as_bytes());
    (format!("_msg-{digest}"), format!("_body-{digest}"))
}

/// The parts of an envelope except its `wsse:Security` header, so that the security layer
/// can build the header (which must sign the other parts) and then the whole envelope.
#[derive(Debug, Clone)]
pub struct EnvelopeBuilder {
    pub messaging_id: String,
    pub body_id: String,
    pub messaging_inner: String,
    pub body_inner: String,
}

/// The namespaces [`ENVELOPE_OPEN`] declares, in scope for eb:Messaging and the Body.
pub const ENVELOPE_NAMESPACES: [(&str, &str); 3] = [
    ("S12", "http://www.w3.org/2003/05/soap-envelope"),
    ("wsu", "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"),
    ("eb", "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/"),
];

impl EnvelopeBuilder {
    /// The envelope with `security` (a complete `wsse:Security` element, or "") first in the
    /// Header.
    pub fn build(&self, security: &str) -> String {
        envelope_with(security, &self.messaging_id, &self.body_id, &self.messaging_inner, &self.body_inner)
    }

    /// The `eb:Messaging` element exactly as [`Self::build`] writes it.
    pub fn messaging_element(&self) -> String {
        let mut out = String::with_capacity(self.messaging_inner.len() + 200);
        write_messaging(&mut out, &self.messaging_id, &self.messaging_inner);
        out
    }

    /// The `S12:Body` element exactly as [`Self::build`] writes it.
    pub fn body_element(&self) -> String {
        let mut out = String::with_capacity(self.body_inner.len() + 100);
        write_body(&mut out, &self.body_id, &self.body_inner);
        out
    }
}

fn envelope(messaging_id: &str, body_id: &str, messaging_inner: &str, body_inner: &str) -> String {
    envelope_with("", messaging_id, body_id, messaging_inner, body_inner)
}

fn envelope_with(security: &str, messaging_id: &str, body_id: &str, messaging_inner: &str, body_inner: &str) -> String {
    let mut out = String::with_capacity(security.len() + messaging_inner.len() + body_inner.len() + 600);
    out.push_str(ENVELOPE_OPEN);
    out.push_str("<S12:Header>");
    out.push_str(security);
    write_messaging(&mut out, messaging_id, messaging_inner);
    out.push_str("</S12:Header>");
    write_body(&mut out, body_id, body_inner);
    out.push_str("</S12:Envelope>");
    out
}

fn write_messaging(out: &mut String, id: &str, inner: &str) {
    let _ = write!(out, r#"<eb:Messaging S12:mustUnderstand="true" wsu:Id="{}">"#, escape(id));
    out.push_str(inner);
    out.push_str("</eb:Messaging>");
}

fn write_body(out: &mut String, id: &str, inner: &str) {
    let _ = write!(out, r#"<S12:Body wsu:Id="{}">"#, escape(id));
    out.push_str(inner);
    out.push_str("</S12:Body>");
}

fn opt_attr(out: &mut String, name: &str, value: Option<&str>) {
    if let Some(v) = value {
        let _ = write!(out, r#" {name}="{}""#, escape(v));
    }
}

fn message_info(out: &mut String, info: &MessageInfo) {
    let _ = write!(
        out,
        "<eb:MessageInfo><eb:Timestamp>{}</eb:Timestamp><eb:MessageId>{}</eb:MessageId>",
        escape(&info.timestamp),
        escape(&info.message_id)
    );
    if let Some(r) = &info.ref_to_message_id {
        let _ = write!(out, "<eb:RefToMessageId>{}</eb:RefToMessageId>", escape(r));
    }
    out.push_str("</eb:MessageInfo>");
}

fn party(out: &mut String, tag: &str, party: &Party) {
    let _ = write!(out, "<eb:{tag}>");
    for id in &party.ids {
        out.push_str("<eb:PartyId");
        opt_attr(out, "type", id.kind.as_deref());
        let _ = write!(out, ">{}</eb:PartyId>", escape(&id.value));
    }
    let _ = write!(out, "<eb:Role>{}</eb:Role></eb:{tag}>", escape(&party.role));
}

fn properties(out: &mut String, tag: &str, props: &[Property]) {
    if props.is_empty() {
        return;
    }
    let _ = write!(out, "<eb:{tag}>");
    for p in props {
        let _ = write!(out, r#"<eb:Property name="{}""#, escape(&p.name));
        opt_attr(out, "type", p.kind.as_deref());
        let _ = write!(out, ">{}</eb:Property>", escape(&p.value));
    }
    let _ = write!(out, "</eb:{tag}>");
}

/// The `eb:UserMessage` element, with the given namespace prefix for eb.
pub fn user_message_xml(um: &UserMessage) -> String {
    let mut out = String::with_capacity(1024);
    out.push_str("<eb:UserMessage");
    opt_attr(&mut out, "mpc", um.mpc.as_deref());
    out.push('>');
    message_info(&mut out, &um.info);
    out.push_str("<eb:PartyInfo>");
    party(&mut out, "From", &um.from);
    party(&mut out, "To", &um.to);
    out.push_str("</eb:PartyInfo><eb:CollaborationInfo>");
    if let Some(a) = &um.agreement {
        out.push_str("<eb:AgreementRef");
        opt_attr(&mut out, "type", a.kind.as_deref());
        opt_attr(&mut out, "pmode", a.pmode.as_deref());
        let _ = write!(out, ">{}</eb:AgreementRef>", escape(&a.value));
    }
    out.push_str("<eb:Service");
    opt_attr(&mut out, "type", um.service.kind.as_deref());
    let _ = write!(
        out,
        ">{}</eb:Service><eb:Action>{}</eb:Action><eb:ConversationId>{}</eb:ConversationId></eb:CollaborationInfo>",
        escape(&um.service.value),
        escape(&um.action),
        escape(&um.conversation_id)
    );
    properties(&mut out, "MessageProperties", &um.properties);
    if !um.parts.is_empty() {
        out.push_str("<eb:PayloadInfo>");
        for part in &um.parts {
            out.push_str("<eb:PartInfo");
            opt_attr(&mut out, "href", part.href.as_deref());
            out.push('>');
            properties(&mut out, "PartProperties", &part.properties);
            out.push_str("</eb:PartInfo>");
        }
        out.push_str("</eb:PayloadInfo>");
    }
    out.push_str("</eb:UserMessage>");
    out
}

/// A complete envelope for a user message (Body empty, payloads travel as MIME parts).
pub fn user_message_envelope(um: &UserMessage) -> String {
    user_message_builder(um).build("")
}

pub fn user_message_builder(um: &UserMessage) -> EnvelopeBuilder {
    let (messaging_id, body_id) = element_ids(&um.info.message_id);
    EnvelopeBuilder { messaging_id, body_id, messaging_inner: user_message_xml(um), body_inner: String::new() }
}

/// A receipt whose `eb:Receipt` holds `content` (for NRR: the ebbp:NonRepudiationInformation).
pub fn receipt_builder(info: &MessageInfo, content: &str) -> EnvelopeBuilder {
    let mut inner = String::with_capacity(content.len() + 500);
    inner.push_str("<eb:SignalMessage>");
    message_info(&mut inner, info);
    let _ = write!(inner, "<eb:Receipt>{content}</eb:Receipt></eb:SignalMessage>");
    let (messaging_id, body_id) = element_ids(&info.message_id);
    EnvelopeBuilder { messaging_id, body_id, messaging_inner: inner, body_inner: String::new() }
}

/// A reception-awareness receipt for an unsigned exchange: it carries a copy of the received
/// UserMessage inside an element of our own namespace (the Receipt content model requires a
/// foreign namespace, docs/as4.md §1.3).
pub fn receipt_envelope(info: &MessageInfo, received: &UserMessage) -> String {
    let mut inner = String::with_capacity(1500);
    inner.push_str("<eb:SignalMessage>");
    message_info(&mut inner, info);
    let _ = write!(
        inner,
        r#"<eb:Receipt><vt:UserMessageCopy xmlns:vt="{}">{}</vt:UserMessageCopy></eb:Receipt></eb:SignalMessage>"#,
        ns::VENTANILLA,
        user_message_xml(received)
    );
    let (messaging_id, body_id) = element_ids(&info.message_id);
    envelope(&messaging_id, &body_id, &inner, "")
}

/// A PullRequest for messages held on `mpc`.
pub fn pull_request_builder(info: &MessageInfo, mpc: &str) -> EnvelopeBuilder {
    let mut inner = String::with_capacity(500);
    inner.push_str("<eb:SignalMessage>");
    message_info(&mut inner, info);
    let _ = write!(inner, r#"<eb:PullRequest mpc="{}"/></eb:SignalMessage>"#, escape(mpc));
    let (messaging_id, body_id) = element_ids(&info.message_id);
    EnvelopeBuilder { messaging_id, body_id, messaging_inner: inner, body_inner: String::new() }
}

/// An error signal; failures also carry a SOAP 1.2 Fault in the Body (ebMS Core §6.6).
pub fn error_envelope(info: &MessageInfo, errors: &[EbmsError]) -> String {
    error_builder(info, errors).build("")
}

pub fn error_builder(info: &MessageInfo, errors: &[EbmsError]) -> EnvelopeBuilder {
    let mut inner = String::with_capacity(1000);
    inner.push_str("<eb:SignalMessage>");
    message_info(&mut inner, info);
    for e in errors {
        let _ = write!(
            inner,
            r#"<eb:Error errorCode="{}" severity="{}" category="{}" origin="{}" shortDescription="{}""#,
            e.code.code(),
            e.code.severity().as_str(),
            e.code.category(),
            e.code.origin(),
            e.code.short_description()
        );
        opt_attr(&mut inner, "refToMessageInError", e.ref_to_message_id.as_deref());
        let _ = write!(
            inner,
            r#"><eb:Description xml:lang="en">{}</eb:Description><eb:ErrorDetail>{}</eb:ErrorDetail></eb:Error>"#,
            e.code.short_description(),
            escape(&e.detail)
        );
    }
    inner.push_str("</eb:SignalMessage>");
    let fault = errors.iter().find(|e| e.code.severity() == super::error::Severity::Failure).map(|e| {
        let code = if e.code.is_receiver_fault() { "S12:Receiver" } else { "S12:Sender" };
        soap_fault(code, &format!("{}: {}", e.code, e.detail))
    });
    let (messaging_id, body_id) = element_ids(&info.message_id);
    EnvelopeBuilder { messaging_id, body_id, messaging_inner: inner, body_inner: fault.unwrap_or_default() }
}

fn soap_fault(code: &str, reason: &str) -> String {
    format!(
        r#"<S12:Fault><S12:Code><S12:Value>{code}</S12:Value></S12:Code><S12:Reason><S12:Text xml:lang="en">{}</S12:Text></S12:Reason></S12:Fault>"#,
        escape(reason)
    )
}

/// A bare SOAP fault envelope, for faults that are not ebMS errors (MustUnderstand).
pub fn must_understand_fault(header: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><S12:Envelope xmlns:S12="{}"><S12:Body>{}</S12:Body></S12:Envelope>"#,
        ns::SOAP12,
        soap_fault("S12:MustUnderstand", &format!("header block {header} was not understood"))
    )
}

/// A sample user message for tests elsewhere in the crate.
#[cfg(test)]
pub(crate) mod tests_support {
    pub(crate) fn sample() -> super::UserMessage {
        super::tests::sample()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::read::{Envelope, read_envelope};
    use super::super::tree::Limits;
    use super::*;
    use crate::ebms::error::EbmsCode;

    #[test]
    fn envelope_namespaces_are_the_ones_the_envelope_declares() {
        assert_eq!(ENVELOPE_OPEN.matches("xmlns:").count(), ENVELOPE_NAMESPACES.len());
        for (prefix, uri) in ENVELOPE_NAMESPACES {
            assert!(ENVELOPE_OPEN.contains(&format!(r#"xmlns:{prefix}="{uri}""#)), "{prefix}");
        }
        let builder = user_message_builder(&sample());
        let whole = builder.build("");
        assert!(whole.contains(&builder.messaging_element()) && whole.contains(&builder.body_element()));
    }

    pub(crate) fn sample() -> UserMessage {
        UserMessage {
            mpc: None,
            info: MessageInfo {
                timestamp: "2026-05-01T12:00:00.000Z".into(),
                message_id: "6f9c@ap.cl.example".into(),
                ref_to_message_id: None,
            },
            from: Party {
                ids: vec![PartyId { value: "CL-SAG".into(), kind: Some("urn:x:unregistered".into()) }],
                role: ns::ROLE_INITIATOR.into(),
            },
            to: Party {
                ids: vec![PartyId { value: "PE-SENASA".into(), kind: Some("urn:x:unregistered".into()) }],
                role: ns::ROLE_RESPONDER.into(),
            },
            agreement: Some(AgreementRef {
                value: "urn:pa:agreement:cl-pe".into(),
                kind: None,
                pmode: Some("cl-pe".into()),
            }),
            service: Service { value: "urn:pa:service:ephyto".into(), kind: None },
            action: "IPPC-ePhyto & <SPS>".into(),
            conversation_id: "conv-1".into(),
            properties: vec![Property { name: "originalSender".into(), kind: Some("t".into()), value: "CL".into() }],
            parts: vec![PartInfo {
                href: Some("cid:part1@ap.cl.example".into()),
                properties: vec![Property { name: "MimeType".into(), kind: None, value: "application/xml".into() }],
            }],
        }
    }

    #[test]
    fn user_message_round_trips() {
        let um = sample();
        let xml = user_message_envelope(&um);
        let Envelope { messaging, body_id, body_children, .. } =
            read_envelope(xml.as_bytes(), Limits::default()).unwrap();
        assert_eq!(messaging.user_message.unwrap(), um);
        assert_eq!(body_id, Some(element_ids(&um.info.message_id).1));
        assert_eq!(body_children, 0);
        assert_eq!(xml, user_message_envelope(&um), "deterministic output");
    }

    #[test]
    fn error_round_trips() {
        let info = MessageInfo {
            timestamp: "2026-05-01T12:00:00Z".into(),
            message_id: "e1@x".into(),
            ref_to_message_id: Some("m1@x".into()),
        };
        let err = EbmsError::new(EbmsCode::ProcessingModeMismatch, "no leg").with_ref(Some("m1@x"));
        let xml = error_envelope(&info, &[err]);
        let env = read_envelope(xml.as_bytes(), Limits::default()).unwrap();
        let signal = &env.messaging.signals[0];
        assert_eq!(signal.info.ref_to_message_id.as_deref(), Some("m1@x"));
        match &signal.signal {
            Signal::Errors(errors) => {
                assert_eq!(errors[0].code, "EBMS:0010");
                assert_eq!(errors[0].detail.as_deref(), Some("no leg"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(env.body_children, 1, "failure carries a SOAP fault");
    }

    #[test]
    fn receipt_round_trips() {
        let info = MessageInfo {
            timestamp: "2026-05-01T12:00:00Z".into(),
            message_id: "r1@x".into(),
            ref_to_message_id: Some("m1@x".into()),
        };
        let xml = receipt_envelope(&info, &sample());
        let env = read_envelope(xml.as_bytes(), Limits::default()).unwrap();
        assert!(matches!(env.messaging.signals[0].signal, Signal::Receipt { .. }));
    }
}
