//! The connection test of a link: sends the AS4 test service message (ebMS 3 §5.2.2,
//! service `…/200704/service`, action `…/200704/test`) signed and encrypted as the link says,
//! and checks the partner's receipt as for any message. The partner does not deliver it to its
//! backend; nothing is stored here. What an operator runs before the first real message and
//! when a partner says "we receive nothing".

use super::AccessPoint;
use super::outbound::{Outcome, check_signal, interpret, package, protect};
use crate::ebms::{PartInfo, Property, Service, UserMessage, ns};
use crate::mime;
use crate::store::StoredPayload;
use std::sync::Arc;

#[derive(Debug, Clone, serde::Serialize)]
pub struct TestResult {
    pub pmode: String,
    pub partner: String,
    pub endpoint: String,
    pub message_id: String,
    pub ok: bool,
    pub detail: String,
    pub round_trip_ms: u64,
}

/// Sends the test message on the link `pmode`; an owned task, so a console request that goes
/// away does not cut it (it commits nothing either way).
pub async fn run(ap: &Arc<AccessPoint>, pmode: &str) -> TestResult {
    let (ap2, pmode2) = (ap.clone(), pmode.to_owned());
    match ap.tasks.spawn(async move { test_link(&ap2, &pmode2).await }).await {
        Ok(result) => result,
        Err(e) => TestResult {
            pmode: pmode.to_owned(),
            partner: String::new(),
            endpoint: String::new(),
            message_id: String::new(),
            ok: false,
            detail: format!("the test task failed: {e}"),
            round_trip_ms: 0,
        },
    }
}

async fn test_link(ap: &AccessPoint, pmode: &str) -> TestResult {
    let mut result = TestResult {
        pmode: pmode.to_owned(),
        partner: String::new(),
        endpoint: String::new(),
        message_id: crate::clock::new_message_id(&ap.config.host),
        ok: false,
        detail: String::new(),
        round_trip_ms: 0,
    };
    let pmodes = ap.pmodes();
    let Some(link) = pmodes.links().iter().find(|l| l.id == pmode).cloned() else {
        result.detail = format!("P-Mode {pmode} is not loaded");
        return result;
    };
    let (Some(me), Some(partner)) = (link.party(ap.me()), link.partner_of(ap.me())) else {
        result.detail = format!("this access point ({}) is not a party of P-Mode {pmode}", ap.me());
        return result;
    };
    result.partner = partner.id.clone();
    result.endpoint = ap.endpoint_of(partner).to_owned();
    let dir = ap.tmp_dir().join(format!("test-{}", uuid::Uuid::new_v4().simple()));
    let outcome = send(ap, &link, me, partner, &dir, &result.message_id, &result.endpoint).await;
    let _ = std::fs::remove_dir_all(&dir);
    match outcome {
        Ok((Outcome::Receipt, ms)) => {
            result.ok = true;
            result.round_trip_ms = ms;
            result.detail = format!("receipt received in {ms} ms (signature and NRR checked)");
        }
        Ok((Outcome::Refused { reason, .. }, ms)) => {
            result.round_trip_ms = ms;
            result.detail = format!("refused by the partner: {reason}");
        }
        Ok((Outcome::NoReceipt { reason, .. }, ms)) => {
            result.round_trip_ms = ms;
            result.detail = format!("no receipt: {reason}");
        }
        Err(e) => result.detail = e,
    }
    tracing::info!(pmode, partner = %result.partner, ok = result.ok, detail = %result.detail, "connection test");
    result
}

async fn send(
    ap: &AccessPoint,
    link: &Arc<crate::pmode::Link>,
    me: &crate::pmode::Party,
    partner: &crate::pmode::Party,
    dir: &std::path::Path,
    message_id: &str,
    url: &str,
) -> Result<(Outcome, u64), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let text = b"Ventanilla connection test\n";
    let path = dir.join("part-1");
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let content_id = super::outbound::new_content_id(ap, 0);
    let payload = StoredPayload {
        content_id: content_id.clone(),
        mime_type: "text/plain".into(),
        path,
        size: text.len() as u64,
        sha256: String::new(),
        filename: None,
        wire_type: None,
    };
    let um = UserMessage {
        service: Service { value: ns::TEST_SERVICE.into(), kind: None },
        action: ns::TEST_ACTION.into(),
        conversation_id: uuid::Uuid::new_v4().to_string(),
        properties: Vec::new(),
        parts: vec![PartInfo {
            href: Some(format!("cid:{content_id}")),
            properties: vec![Property { name: "MimeType".into(), kind: None, value: "text/plain".into() }],
        }],
        ..super::outbound::addressed(link, me, partner, message_id)
    };
    let (security, link2, me_id) = (ap.security.clone(), link.clone(), ap.me().to_owned());
    let super::outbound::Protected { envelope, wire: payloads, written } = crate::blocking::spawn(move || {
        protect(&security, &link2, false, &me_id, &um, vec![payload], &Default::default())
    })
    .await
    .map_err(|e| format!("signing task failed: {e}"))?
    .map_err(|e| format!("cannot build the test message: {e}"))?;
    let boundary = mime::writer::new_boundary();
    let root_id = format!("root.{}@{}", crate::util::short_hash(message_id.as_bytes()), ap.config.host);
    let content_type = mime::writer::content_type(&boundary, &root_id);
    let written = written.into_iter().map(|w| w.map(bytes::Bytes::from)).collect();
    let body = package(&boundary, &root_id, envelope.clone(), &payloads, written);
    let started = std::time::Instant::now();
    let response = ap
        .client
        .post(&ap.tls_identity(link), url, &content_type, body, link.timeout)
        .await
        .map_err(|e| format!("cannot reach {url}: {e}"))?;
    let ms = started.elapsed().as_millis() as u64;
    let (outcome, signal) =
        interpret(message_id, response.status, response.content_type.as_deref(), &response.body).await;
    let outcome = match (outcome, signal) {
        (Outcome::Receipt, Some(signal)) if link.profile.is_secure() => {
            match check_signal(ap, link, partner, &signal, &envelope, true) {
                Ok(()) => Outcome::Receipt,
                Err(reason) => {
                    Outcome::NoReceipt { reason: format!("EBMS:0302 InvalidReceipt: {reason}"), error: None }
                }
            }
        }
        (outcome, _) => outcome,
    };
    Ok((outcome, ms))
}
