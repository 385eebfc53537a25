//! Evidence for a dispute ("was this certificate delivered?"): one self-contained JSON bundle
//! per message with the signed envelope as sent or received, the signed receipt (or error), the
//! certificates that signed them with the CAs, the payload digests and the history; and its
//! offline check, `ventanilla verify --evidence BUNDLE`, which needs nothing else.
//!
//! What the check proves: the envelope's signature holds (over the ebMS header and Body, and
//! its references name every attachment's digest); the receipt's signature holds, by the
//! other party; the receipt refers to this MessageId and its non-repudiation information
//! repeats exactly the envelope's signed references (so the receiver acknowledged those
//! bytes); the signers' certificates chain to the bundled CAs. The payloads themselves are not
//! in the bundle: their SHA-256 is, and the original files can be compared with it.

use crate::ebms::read::read_envelope;
use crate::ebms::{Signal, tree::Limits};
use crate::msh::AccessPoint;
use crate::pki::trust::{RevocationPolicy, TrustStore, subject_of};
use crate::store::{Direction, MessageRecord};
use crate::wss::keyinfo::KeyReference;
use crate::wss::verify::{declared_signature_method, verify_envelope_without_attachments};
use crate::wss::xml::Xml;
use base64::Engine;
use openssl::x509::X509;
use serde::{Deserialize, Serialize};

pub const FORMAT: &str = "ventanilla-evidence/1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bundle {
    pub format: String,
    pub created_at: String,
    /// The access point that made the bundle.
    pub access_point: String,
    pub message_id: String,
    pub direction: Direction,
    pub partner: String,
    pub pmode: String,
    pub state: String,
    /// The SOAP envelope as sent (outbound) or received (inbound), base64.
    pub envelope: String,
    /// The receipt or error: the partner's (outbound) or ours (inbound), base64.
    pub signal: Option<String>,
    /// PEM: who signs the envelope, who signs the signal, and the CAs they chain to.
    pub sender_certificates: Vec<String>,
    pub receiver_certificates: Vec<String>,
    pub ca_certificates: Vec<String>,
    pub payloads: serde_json::Value,
    pub history: serde_json::Value,
    /// The check made when the bundle was made (the same as `ventanilla verify --evidence`).
    pub report: Vec<String>,
}

fn pem(cert: &X509) -> Option<String> {
    cert.to_pem().ok().and_then(|p| String::from_utf8(p).ok())
}

/// The bundle of a stored message.
pub fn bundle(ap: &AccessPoint, record: &MessageRecord) -> Result<Bundle, String> {
    if record.envelope.is_empty() {
        return Err(format!("the envelope of {} was removed (retention); no evidence remains", record.message_id));
    }
    if record.transport == crate::pmode::Transport::Iop {
        // Nothing to bundle that proves delivery: the SPS certificate's own signature proves
        // its origin, not its receipt.
        return Err(format!(
            "{} travelled over the legacy IOP, whose AcuseRecibo is unsigned: there is no non-repudiation evidence; the raw body, the AcuseRecibo and the signed certificate can be downloaded",
            record.message_id
        ));
    }
    let pmodes = ap.pmodes();
    let link = pmodes.links().iter().find(|l| l.id == record.pmode).cloned();
    let partner_certs: Vec<String> = link
        .as_ref()
        .and_then(|l| l.partner_of(ap.me()))
        .map(|p| p.sign_certs.iter().filter_map(|der| X509::from_der(der).ok()).filter_map(|c| pem(&c)).collect())
        .unwrap_or_default();
    let own_certs: Vec<String> = link
        .as_ref()
        .and_then(|l| ap.security.for_profile(l.profile))
        .and_then(|k| pem(&k.sign.cert))
        .into_iter()
        .collect();
    // The message truststore (the TLS trust when none is set, as for checking messages).
    let trust_file = ap.config.security.truststore.clone().unwrap_or_else(|| ap.config.as4.trust.clone());
    let ca_certificates =
        crate::pki::keys::load_certs_pem(&trust_file).ok().unwrap_or_default().iter().filter_map(pem).collect();
    let (sender_certificates, receiver_certificates) = match record.direction {
        Direction::Outbound => (own_certs, partner_certs),
        Direction::Inbound => (partner_certs, own_certs),
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut bundle = Bundle {
        format: FORMAT.into(),
        created_at: crate::clock::timestamp_now(),
        access_point: ap.me().to_owned(),
        message_id: record.message_id.clone(),
        direction: record.direction,
        partner: record.partner.clone(),
        pmode: record.pmode.clone(),
        state: record.state.as_str().into(),
        envelope: b64.encode(&record.envelope),
        signal: record.response.as_ref().map(|s| b64.encode(s)),
        sender_certificates,
        receiver_certificates,
        ca_certificates,
        payloads: serde_json::to_value(&record.payloads).unwrap_or_default(),
        history: serde_json::to_value(&record.history).unwrap_or_default(),
        report: Vec::new(),
    };
    bundle.report = check(&bundle).lines;
    Ok(bundle)
}

/// The outcome of checking a bundle.
pub struct Check {
    pub lines: Vec<String>,
    pub valid: bool,
}

fn certs(pems: &[String]) -> Vec<X509> {
    pems.iter().filter_map(|p| X509::from_pem(p.as_bytes()).ok()).collect()
}

/// Resolves a signature's key reference against the certificates the bundle names for that
/// signer (a certificate the token carries must be one of them too).
fn resolver(allowed: Vec<X509>) -> impl Fn(&KeyReference) -> Result<X509, crate::ebms::EbmsError> {
    move |r: &KeyReference| {
        allowed.iter().find(|c| r.matches(c)).cloned().ok_or_else(|| {
            crate::ebms::EbmsError::new(
                crate::ebms::EbmsCode::FailedAuthentication,
                "signed with a certificate the bundle does not name for this party",
            )
        })
    }
}

/// Checks a bundle offline.
pub fn check(bundle: &Bundle) -> Check {
    let mut lines = Vec::new();
    let mut valid = true;
    let mut fail = |lines: &mut Vec<String>, line: String| {
        valid = false;
        lines.push(line);
    };
    if bundle.format != FORMAT {
        return Check { lines: vec![format!("INVALID: format '{}' is not {FORMAT}", bundle.format)], valid: false };
    }
    lines.push(format!(
        "message {} ({}, partner {}, P-Mode {}, state {})",
        bundle.message_id,
        bundle.direction.as_str(),
        bundle.partner,
        bundle.pmode,
        bundle.state
    ));
    let b64 = base64::engine::general_purpose::STANDARD;
    let Ok(envelope) = b64.decode(&bundle.envelope) else {
        return Check { lines: vec!["INVALID: the envelope is not base64".into()], valid: false };
    };
    let trust = {
        let cas = certs(&bundle.ca_certificates);
        if cas.is_empty() { None } else { TrustStore::new(cas, Vec::new(), RevocationPolicy::Off).ok() }
    };
    // 1. The envelope, signed by the sender.
    let sent = match Xml::parse(&envelope) {
        Ok(x) => x,
        Err(e) => return Check { lines: vec![format!("INVALID: the envelope is not XML: {e}")], valid: false },
    };
    let method = declared_signature_method(&sent).unwrap_or_default();
    let signed = verify_envelope_without_attachments(&sent, &method, &resolver(certs(&bundle.sender_certificates)));
    match &signed {
        Ok(v) => {
            lines.push(format!("envelope: signature VALID by '{}' ({method})", subject_of(&v.signer)));
            for r in v.references.iter().filter(|r| r.uri.starts_with("cid:")) {
                lines.push(format!("  attachment {}: digest {} is signed", r.uri, r.digest_value));
            }
            match &trust {
                Some(t) => match t.validate(&v.signer, &v.intermediates) {
                    Ok(_) => lines.push("  the sender's certificate chains to the bundled CAs".into()),
                    Err(e) => fail(&mut lines, format!("INVALID: the sender's certificate: {e}")),
                },
                None => lines.push("  (no CA in the bundle: the certificate chain was not checked)".into()),
            }
        }
        Err(e) => fail(&mut lines, format!("INVALID: envelope signature: {} {}", e.code, e.detail)),
    }
    // 2. The signal, signed by the receiver, referring to this message, repeating the digests.
    let Some(signal) = bundle.signal.as_ref().and_then(|s| b64.decode(s).ok()) else {
        fail(&mut lines, "INVALID: no receipt is stored: delivery is not proven".into());
        return Check { lines, valid };
    };
    let receipt = match (Xml::parse(&signal), read_envelope(&signal, Limits::default())) {
        (Ok(x), Ok(parsed)) => Some((x, parsed)),
        _ => {
            fail(&mut lines, "INVALID: the stored signal is not an ebMS signal".into());
            None
        }
    };
    if let Some((xml, parsed)) = receipt {
        let ours =
            parsed.messaging.signals.iter().find(|s| s.info.ref_to_message_id.as_deref() == Some(&bundle.message_id));
        match ours.map(|s| &s.signal) {
            Some(Signal::Receipt { .. }) => lines.push(format!("signal: a Receipt referring to {}", bundle.message_id)),
            Some(Signal::Errors(errors)) => fail(
                &mut lines,
                format!(
                    "INVALID: the signal is an ebMS error ({}): the message was refused, not delivered",
                    errors.iter().map(|e| e.code.as_str()).collect::<Vec<_>>().join(", ")
                ),
            ),
            _ => fail(&mut lines, format!("INVALID: the signal does not refer to {}", bundle.message_id)),
        }
        let method = declared_signature_method(&xml).unwrap_or_default();
        match verify_envelope_without_attachments(&xml, &method, &resolver(certs(&bundle.receiver_certificates))) {
            Ok(v) => {
                lines.push(format!("signal: signature VALID by '{}' ({method})", subject_of(&v.signer)));
                if let Some(t) = &trust
                    && let Err(e) = t.validate(&v.signer, &v.intermediates)
                {
                    fail(&mut lines, format!("INVALID: the receiver's certificate: {e}"));
                }
            }
            Err(e) => fail(&mut lines, format!("INVALID: signal signature: {} {}", e.code, e.detail)),
        }
        if signed.is_ok() {
            let nrr = crate::wss::receipt::signed_references(&envelope)
                .and_then(|references| crate::wss::receipt::check_nrr(&xml, &references));
            match nrr {
                Ok(()) => lines.push(
                    "signal: its non-repudiation information repeats every signed reference of the envelope (header, Body and each attachment digest)"
                        .into(),
                ),
                Err(e) => fail(&mut lines, format!("INVALID: non-repudiation information: {e}")),
            }
        }
    }
    lines.push(if valid {
        "VALID: the envelope, its signed content and the signed receipt for it are proven".into()
    } else {
        "INVALID".into()
    });
    Check { lines, valid }
}
