//! Hand-made AS4 messages for the conformance cases and the integration tests: a valid
//! template user message, the SwA framing, a signed and encrypted variant, and a reading
//! of the answer.

use crate::ebms::*;
use crate::pki::keys::{load_cert, load_key};
use crate::pmode::model::TokenReference;
use crate::wss::encrypt::{PartToEncrypt, encrypt_parts};
use crate::wss::sign::{Credential, SignedPart, sign_envelope};
use std::path::Path;

pub const PARTY_TYPE: &str = "urn:oasis:names:tc:ebcore:partyid-type:unregistered:pacific-alliance";
pub const BOUNDARY: &str = "----=_Part_test";

/// A valid ePhyto user message from CL to PE with one payload part `cid:doc@test`.
pub fn user_message(message_id: &str) -> UserMessage {
    UserMessage {
        mpc: None,
        info: MessageInfo {
            timestamp: crate::util::format_timestamp(time::OffsetDateTime::now_utc()),
            message_id: message_id.into(),
            ref_to_message_id: None,
        },
        from: Party {
            ids: vec![PartyId { value: "CL-SICEX".into(), kind: Some(PARTY_TYPE.into()) }],
            role: ns::ROLE_INITIATOR.into(),
        },
        to: Party {
            ids: vec![PartyId { value: "PE-VUCE".into(), kind: Some(PARTY_TYPE.into()) }],
            role: ns::ROLE_RESPONDER.into(),
        },
        agreement: Some(AgreementRef {
            value: "urn:pacific-alliance:as4:agreement:cl-pe".into(),
            kind: None,
            pmode: None,
        }),
        service: Service { value: "urn:pacific-alliance:as4:service:ephyto".into(), kind: None },
        action: "SPSCertificate".into(),
        conversation_id: "conv-test".into(),
        properties: vec![],
        parts: vec![PartInfo {
            href: Some("cid:doc@test".into()),
            properties: vec![Property { name: "MimeType".into(), kind: None, value: "application/xml".into() }],
        }],
    }
}

pub fn multipart_content_type() -> String {
    format!(r#"multipart/related; type="application/soap+xml"; boundary="{BOUNDARY}"; start="<root@test>""#)
}

/// A SwA body: the envelope as root `root@test`, then (content-id, bytes) parts.
pub fn multipart(envelope: &str, parts: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Type: application/soap+xml; charset=UTF-8\r\nContent-ID: <root@test>\r\n\r\n{envelope}"
    )
    .into_bytes();
    for (cid, bytes) in parts {
        body.extend(
            format!("\r\n--{BOUNDARY}\r\nContent-Type: application/xml\r\nContent-ID: <{cid}>\r\n\r\n").bytes(),
        );
        body.extend_from_slice(bytes);
    }
    body.extend(format!("\r\n--{BOUNDARY}--\r\n").bytes());
    body
}

/// A signing key and certificate `<name>.key` / `<name>.pem` from a demo PKI folder.
pub fn credential(dir: &Path, name: &str) -> std::io::Result<Credential> {
    let bad = |e: String| std::io::Error::other(format!("{name}: {e}"));
    Ok(Credential {
        key: load_key(&dir.join(format!("{name}.key")), None).map_err(|e| bad(e.to_string()))?,
        cert: load_cert(&dir.join(format!("{name}.pem"))).map_err(|e| bad(e.to_string()))?,
    })
}

/// How to protect a hand-made message.
pub struct Protection<'a> {
    pub signer: Option<&'a Credential>,
    /// Encrypt the part for this certificate.
    pub recipient: Option<&'a Path>,
    pub token: TokenReference,
    /// Leave the part out of the signature.
    pub unsigned_part: bool,
    /// Encrypt and send these bytes instead of the signed payload (wrong processing orders).
    pub sent_instead: Option<&'a [u8]>,
    /// Gzip the ciphertext after encryption (encrypted-then-compressed).
    pub compress_ciphertext: bool,
}

impl<'a> Protection<'a> {
    /// Signed by `signer` and encrypted for `recipient`, as eDelivery sends.
    pub fn edelivery(signer: &'a Credential, recipient: &'a Path) -> Protection<'a> {
        Protection {
            signer: Some(signer),
            recipient: Some(recipient),
            token: TokenReference::Bst,
            unsigned_part: false,
            sent_instead: None,
            compress_ciphertext: false,
        }
    }
}

/// `um` with its one part `doc@test` holding `payload`, signed and/or encrypted as
/// `protection` says; returns the SwA body.
pub fn protected_message(
    um: &UserMessage,
    payload: &[u8],
    protection: &Protection<'_>,
) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
    // A compressed part is signed and encrypted as the gzip stream it is (AS4 §3.1).
    let compressed = um.parts.first().is_some_and(|p| p.properties.iter().any(|p| p.name == "CompressionType"));
    let content_type = if compressed { "application/gzip" } else { "application/xml" };
    let dir = tempfile::tempdir()?;
    let plain = dir.path().join("doc.xml");
    std::fs::write(&plain, payload)?;
    let sent = match protection.sent_instead {
        Some(bytes) => {
            let path = dir.path().join("sent.bin");
            std::fs::write(&path, bytes)?;
            path
        }
        None => plain.clone(),
    };
    let cipher = dir.path().join("doc.enc");
    let encryption = match protection.recipient {
        Some(cert) => encrypt_parts(
            &[PartToEncrypt {
                content_id: "doc@test",
                content_type,
                plaintext: (&sent).into(),
                ciphertext: cipher.clone(),
            }],
            &load_cert(cert)?,
            protection.token,
            "t",
        )?,
        None => String::new(),
    };
    let envelope = match protection.signer {
        Some(signer) => {
            let parts = [SignedPart { content_id: "doc@test", content_type, content: (&plain).into() }];
            let signed: &[SignedPart<'_>] = if protection.unsigned_part { &[] } else { &parts };
            sign_envelope(&write::user_message_builder(um), signer, protection.token, signed, &encryption)?
        }
        None if protection.recipient.is_some() => {
            return Err("encryption without a signature is not a form eDelivery uses".into());
        }
        None => write::user_message_envelope(um),
    };
    let mut part = if protection.recipient.is_some() { std::fs::read(&cipher)? } else { std::fs::read(&sent)? };
    if protection.compress_ciphertext {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&part)?;
        part = gz.finish()?;
    }
    Ok(multipart(&envelope, &[("doc@test", &part)]))
}

/// The ebMS error code of an error signal, if the answer is one.
pub fn error_code(response: &str) -> Option<String> {
    let env = read::read_envelope(response.as_bytes(), tree::Limits::default()).ok()?;
    env.messaging.signals.iter().find_map(|s| match &s.signal {
        Signal::Errors(errors) => errors.first().map(|e| e.code.clone()),
        _ => None,
    })
}

/// Whether the answer is a receipt for `message_id`.
pub fn is_receipt_for(response: &str, message_id: &str) -> bool {
    read::read_envelope(response.as_bytes(), tree::Limits::default())
        .map(|env| {
            env.messaging.signals.iter().any(|s| {
                matches!(s.signal, Signal::Receipt { .. }) && s.info.ref_to_message_id.as_deref() == Some(message_id)
            })
        })
        .unwrap_or(false)
}
