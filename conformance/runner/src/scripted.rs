//! A scripted AS4 endpoint: it answers the SUT's pushes the way a misbehaving or unreachable
//! partner would (a wrong receipt, an error, HTTP 503, receipts dropped), and records what
//! it was sent, so the runner can check the SUT's sender: retries, identical resends,
//! EBMS:0301, no retry after an ebMS failure.

use crate::ebms::error::{EbmsCode, EbmsError};
use crate::ebms::{MessageInfo, write};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How the endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// A receipt whose RefToMessageId names another message.
    ReceiptForAnotherMessage,
    /// An ebMS error EBMS:0004 (severity failure) with HTTP 500.
    FailureWith500,
    /// EBMS:0202 DeliveryFailure.
    DeliveryFailure,
    /// HTTP 503 to the first `n` attempts, then a receipt.
    UnavailableThenReceipt(usize),
    /// Receipts dropped (HTTP 500, empty body) for the first `n` attempts, then a receipt.
    DroppedThenReceipt(usize),
    /// HTTP 503 to every attempt.
    AlwaysUnavailable,
    /// An unsigned reception-awareness receipt (on a signed link it is no receipt).
    UnsignedReceipt,
    /// A signed NRR receipt whose first reference digest differs from the one sent.
    ReceiptWithWrongDigest,
}

impl Script {
    pub fn named(name: &str) -> Option<Script> {
        Some(match name {
            "receipt-for-another-message" => Script::ReceiptForAnotherMessage,
            "failure-500" => Script::FailureWith500,
            "delivery-failure" => Script::DeliveryFailure,
            "unavailable-then-receipt" => Script::UnavailableThenReceipt(1),
            "dropped-then-receipt" => Script::DroppedThenReceipt(1),
            "always-unavailable" => Script::AlwaysUnavailable,
            "unsigned-receipt" => Script::UnsignedReceipt,
            "receipt-with-wrong-digest" => Script::ReceiptWithWrongDigest,
            _ => return None,
        })
    }
}

/// What the endpoint was sent: (MessageId, whole request body) per attempt.
#[derive(Default)]
pub struct Seen {
    pub attempts: Vec<(String, Bytes)>,
}

#[derive(Clone)]
struct Endpoint {
    script: Script,
    seen: Arc<Mutex<Seen>>,
    /// The partner's signing key, for the signed receipts of a secure link.
    signer: Option<Arc<crate::wss::sign::Credential>>,
}

/// A running scripted endpoint.
pub struct ScriptedPeer {
    pub url: String,
    pub seen: Arc<Mutex<Seen>>,
    shutdown: CancellationToken,
}

impl ScriptedPeer {
    /// Serves `script` over TLS on `listener` (bound before the SUT is configured with its URL).
    pub fn start(
        listener: TcpListener,
        script: Script,
        tls: Arc<rustls::ServerConfig>,
        signer: Option<crate::wss::sign::Credential>,
    ) -> std::io::Result<ScriptedPeer> {
        let url = format!("https://127.0.0.1:{}/as4", listener.local_addr()?.port());
        let seen = Arc::new(Mutex::new(Seen::default()));
        let endpoint = Endpoint { script, seen: seen.clone(), signer: signer.map(Arc::new) };
        let router = axum::Router::new().route("/as4", axum::routing::post(answer)).with_state(endpoint);
        let shutdown = CancellationToken::new();
        tokio::spawn(crate::transport::server::serve_tls(
            listener,
            crate::transport::tls::TlsSource::fixed(tls),
            router,
            Default::default(),
            shutdown.clone(),
        ));
        Ok(ScriptedPeer { url, seen, shutdown })
    }

    /// The MessageIds of every attempt so far, and whether all attempts were byte-identical
    /// apart from the MIME boundary.
    pub fn attempts(&self) -> (Vec<String>, bool) {
        let seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let ids = seen.attempts.iter().map(|(id, _)| id.clone()).collect();
        let identical = seen.attempts.windows(2).all(|w| without_boundaries(&w[0].1) == without_boundaries(&w[1].1));
        (ids, identical)
    }

    pub fn stop(&self) {
        self.shutdown.cancel();
    }
}

/// The request body with its MIME boundary lines dropped (a resend may use a new boundary).
fn without_boundaries(body: &[u8]) -> Vec<&[u8]> {
    body.split(|b| *b == b'\n').filter(|line| !line.starts_with(b"--")).collect()
}

/// The first `eb:MessageId` in the request (the UserMessage's: it comes before any other).
fn message_id(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.split_once("MessageId>")
        .and_then(|(_, rest)| rest.split_once('<'))
        .map(|(id, _)| id.trim().to_owned())
        .unwrap_or_default()
}

fn signal(status: StatusCode, envelope: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/soap+xml; charset=UTF-8")], envelope).into_response()
}

async fn answer(State(endpoint): State<Endpoint>, body: Bytes) -> Response {
    let id = message_id(&body);
    let references = copied_references(&body);
    let attempt = {
        let mut seen = endpoint.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.attempts.push((id.clone(), body));
        seen.attempts.len()
    };
    let info = |reference: &str| MessageInfo {
        timestamp: ventanilla::clock::timestamp_now(),
        message_id: format!("{}@scripted.peer", uuid::Uuid::new_v4().simple()),
        ref_to_message_id: Some(reference.to_owned()),
    };
    let receipt = |reference: &str| {
        let mut copy = super::wire::user_message(reference);
        copy.parts.clear();
        signal(StatusCode::OK, write::receipt_envelope(&info(reference), &copy))
    };
    let error = |status, code| {
        let e = EbmsError::new(code, "scripted by the conformance runner").with_ref(Some(&id));
        signal(status, write::error_envelope(&info(&id), &[e]))
    };
    match endpoint.script {
        Script::ReceiptForAnotherMessage => receipt("another-message@scripted.peer"),
        Script::FailureWith500 => error(StatusCode::INTERNAL_SERVER_ERROR, EbmsCode::Other),
        Script::DeliveryFailure => error(StatusCode::INTERNAL_SERVER_ERROR, EbmsCode::DeliveryFailure),
        Script::UnavailableThenReceipt(n) if attempt <= n => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Script::DroppedThenReceipt(n) if attempt <= n => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Script::UnavailableThenReceipt(_) | Script::DroppedThenReceipt(_) | Script::UnsignedReceipt => receipt(&id),
        Script::AlwaysUnavailable => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Script::ReceiptWithWrongDigest => {
            let Some(signer) = endpoint.signer.as_deref() else {
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            };
            let content = format!(
                r#"<ebbp:NonRepudiationInformation xmlns:ebbp="{}">{}</ebbp:NonRepudiationInformation>"#,
                crate::wss::ns::EBBP,
                tampered_first_digest(&references)
                    .iter()
                    .map(|r| format!("<ebbp:MessagePartNRInformation>{r}</ebbp:MessagePartNRInformation>"))
                    .collect::<String>()
            );
            let builder = write::receipt_builder(&info(&id), &content);
            match crate::wss::sign::sign_envelope(&builder, signer, crate::pmode::model::TokenReference::Bst, &[], "") {
                Ok(envelope) => signal(StatusCode::OK, envelope),
                Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            }
        }
    }
}

/// The `ds:Reference` elements of the request's signature, each made standalone (its `ds`
/// namespace declared), as an NRR receipt carries them.
fn copied_references(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    let Some(signed_info) = text.split("<ds:SignedInfo>").nth(1).and_then(|s| s.split("</ds:SignedInfo>").next())
    else {
        return Vec::new();
    };
    signed_info
        .split("<ds:Reference ")
        .skip(1)
        .filter_map(|r| r.split("</ds:Reference>").next())
        .map(|r| format!(r#"<ds:Reference xmlns:ds="{}" {r}</ds:Reference>"#, crate::wss::ns::DS))
        .collect()
}

/// The references with the first DigestValue changed (still valid base64).
fn tampered_first_digest(references: &[String]) -> Vec<String> {
    let mut out = references.to_vec();
    if let Some(first) = out.first_mut()
        && let Some(at) = first.find("<ds:DigestValue>").map(|i| i + "<ds:DigestValue>".len())
    {
        let replacement = if first[at..].starts_with('A') { "B" } else { "A" };
        first.replace_range(at..at + 1, replacement);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_id_is_read_from_the_envelope() {
        let body = b"--b\r\n<eb:MessageInfo><eb:Timestamp>t</eb:Timestamp><eb:MessageId>m@x</eb:MessageId>";
        assert_eq!(message_id(body), "m@x");
    }

    #[test]
    fn resends_compare_without_their_boundaries() {
        assert_eq!(without_boundaries(b"--a\nx\n--a--\n"), without_boundaries(b"--b\nx\n--b--\n"));
        assert_ne!(without_boundaries(b"--a\nx\n"), without_boundaries(b"--a\ny\n"));
    }
}
