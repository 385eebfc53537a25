//! One-Way/Pull. The holder keeps messages of a pull leg on its MPC and serves them to
//! signed PullRequests from the partner the P-Mode authorizes (EBMS:0006 when the channel is
//! empty); the puller polls on the leg's interval, processes what it pulls like any received
//! message, and sends the receipt back as a separate signal. A pulled message without a
//! receipt is offered again on the leg's retry schedule, then fails with EBMS:0301.
//!
//! # Cancellation
//! Serving (`serve_pull`, `settle_pulled`) runs inside the inbound pipeline's owned task. The
//! one commit of serving is `take_pullable` (pullable → pulled); if the puller disconnects
//! while the message streams out, it stays `pulled` until its receipt is due and is then
//! offered again. Receipts and errors for pulled messages are compare-and-set transitions from
//! `pulled`, so a late or repeated signal changes nothing; one the store fails to record is
//! tried again for about a minute (`outbound::record_outcome`), the signal's sender waiting.
//! Pulling ([`run`]) is a task of the node: the PullRequest's POST commits nothing; the
//! pulled message goes through the inbound pipeline as it streams in (its own owned task, the
//! commit inside); if returning the receipt fails, the holder offers the message again and
//! the duplicate is answered with the stored receipt.

use super::AccessPoint;
use super::inbound::{Reply, error_reply, receive_as, sign_signal};
use crate::ebms::read::Envelope;
use crate::ebms::{EbmsCode, EbmsError, MessageInfo, Signal, SignalMessage, write};
use crate::mime::{self, Packaging};
use crate::pmode::{Leg, Link, Matched};
use crate::store::{Direction, Happening, State, StoreError, now_ms};
use crate::transport::{BodyStream, PeerCertificates};
use bytes::Bytes;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Signals that arrive without a user message: PullRequests, and receipts or errors for
/// messages the partner pulled.
pub async fn handle_signals(ap: &Arc<AccessPoint>, envelope: &Envelope, raw: &[u8]) -> Reply {
    for s in &envelope.messaging.signals {
        match &s.signal {
            Signal::PullRequest { mpc } => return serve_pull(ap, s, mpc, raw).await,
            Signal::Receipt { .. } | Signal::Errors(_) => settle_pulled(ap, s, raw).await,
        }
    }
    Reply { status: 200, body: Vec::new(), stream: None }
}

/// The pull legs this access point holds messages for, on `mpc`.
fn held_legs(ap: &AccessPoint, mpc: &str) -> Vec<(Arc<Link>, usize)> {
    ap.pmodes()
        .links_of(ap.me())
        .flat_map(|l| {
            l.legs
                .iter()
                .enumerate()
                .filter(|(_, leg)| leg.pull && leg.mpc.as_deref() == Some(mpc) && leg.from.as_deref() == Some(ap.me()))
                .map(|(i, _)| (l.clone(), i))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Whether the PullRequest comes from the partner of `link`: on a signing link its signature
/// must verify with the certificate the P-Mode binds to that partner.
fn authorized(ap: &AccessPoint, link: &Link, raw: &[u8]) -> Result<(), EbmsError> {
    let partner =
        link.partner_of(ap.me()).ok_or_else(|| EbmsError::new(EbmsCode::ProcessingModeMismatch, "no partner"))?;
    match crate::wss::profile::suite(link.profile) {
        None if ap.config.allow_insecure_profile => Ok(()),
        None => Err(EbmsError::new(EbmsCode::PolicyNoncompliance, format!("P-Mode {} has profile 'none'", link.id))),
        Some(suite) => {
            let xml =
                crate::wss::xml::Xml::parse(raw).map_err(|e| EbmsError::new(EbmsCode::InvalidHeader, e.to_string()))?;
            crate::wss::verify::verify_envelope(&xml, &[], suite.signature_method, &|r| {
                ap.security.partner_signer(partner, r)
            })
            .map(|_| ())
        }
    }
}

async fn serve_pull(ap: &Arc<AccessPoint>, signal: &SignalMessage, mpc: &str, raw: &[u8]) -> Reply {
    let id = Some(signal.info.message_id.as_str());
    let candidates = held_legs(ap, mpc);
    if candidates.is_empty() {
        let error = EbmsError::new(EbmsCode::ValueNotRecognized, format!("no P-Mode offers pulling from MPC {mpc}"))
            .with_ref(id);
        return error_reply(ap, error, None);
    }
    // Authorization: the first candidate link whose partner signed the request.
    let mut last_error = None;
    let mut found = None;
    for (link, leg) in candidates {
        match authorized(ap, &link, raw) {
            Ok(()) => {
                found = Some((link, leg));
                break;
            }
            Err(e) => last_error = Some(e),
        }
    }
    let Some((link, leg_index)) = found else {
        let e = last_error.unwrap_or_else(|| EbmsError::new(EbmsCode::FailedAuthentication, "not authorized"));
        let error = EbmsError::new(e.code, format!("not authorized to pull from MPC {mpc}: {}", e.detail)).with_ref(id);
        tracing::warn!(mpc, detail = %error.detail, "PullRequest refused");
        return error_reply(ap, error, None);
    };
    let leg = &link.legs[leg_index];
    let matched = Matched { link: link.clone(), leg: Some(leg_index) };
    let expires = now_ms() + link.retry.first().map(|d| d.as_millis() as i64).unwrap_or(60_000);
    match ap.store.take_pullable(&link.id, &leg.name, expires).await {
        Ok(Some(record)) => {
            tracing::info!(message_id = %record.message_id, mpc, "served to a PullRequest");
            let boundary = mime::writer::new_boundary();
            let root = format!("root.{}@{}", crate::util::short_hash(record.message_id.as_bytes()), ap.config.host);
            let stream: BodyStream =
                super::outbound::package(&boundary, &root, record.envelope.clone(), &record.payloads, Vec::new());
            Reply {
                status: 200,
                body: Vec::new(),
                stream: Some((mime::writer::content_type(&boundary, &root), stream)),
            }
        }
        Ok(None) => {
            let warning =
                EbmsError::new(EbmsCode::EmptyMessagePartitionChannel, format!("no message waiting on MPC {mpc}"))
                    .with_ref(id);
            error_reply(ap, warning, Some(&matched))
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read the pull queue");
            error_reply(
                ap,
                EbmsError::new(EbmsCode::DeliveryFailure, "the pull queue is unavailable; try again").with_ref(id),
                None,
            )
        }
    }
}

/// A receipt or error from the partner for a message it pulled.
async fn settle_pulled(ap: &AccessPoint, signal: &SignalMessage, raw: &[u8]) {
    let Some(ref_id) = signal.info.ref_to_message_id.as_deref() else {
        tracing::info!("signal without RefToMessageId ignored");
        return;
    };
    let Ok(record) = ap.store.get(Direction::Outbound, ref_id).await else {
        tracing::info!(ref_to = ref_id, "signal for an unknown message ignored");
        return;
    };
    if record.state != State::Pulled {
        tracing::info!(ref_to = ref_id, state = record.state.as_str(), "signal for a message not awaiting one ignored");
        return;
    }
    let Some(link) = ap.pmodes().links().iter().find(|l| l.id == record.pmode).cloned() else { return };
    let Some(partner) = link.partner_of(ap.me()) else { return };
    let is_receipt = matches!(signal.signal, Signal::Receipt { .. });
    if link.profile.is_secure()
        && let Err(reason) = super::outbound::check_signal(ap, &link, partner, raw, &record.envelope, is_receipt)
    {
        tracing::warn!(ref_to = ref_id, reason, "signal for a pulled message fails its security check; ignored");
        return;
    }
    let event = match &signal.signal {
        Signal::Receipt { .. } => Happening::ReceiptReceived,
        Signal::Errors(errors) => {
            let error = super::outbound::partner_error(errors, link.profile.is_secure());
            let reason = error.as_ref().map(|e| e.description.clone()).unwrap_or_default();
            Happening::RefusedByPartner { reason, error }
        }
        Signal::PullRequest { .. } => return,
    };
    // Compare-and-set from `pulled`, retried while the store fails in a way that may pass: a
    // second signal for the same message (or a requeue that came first) finds it moved on and
    // changes nothing. Other failures are logged where they happen.
    let outcome = super::outbound::record_outcome(ap, record.row, State::Pulled, event, Some(raw.to_vec())).await;
    if let Err(StoreError::Conflict { actual, .. }) = outcome {
        tracing::info!(ref_to = ref_id, state = actual.as_str(), "the pulled message was settled meanwhile");
    }
}

/// Pulled messages whose receipt did not come in time are offered again, or fail. Called
/// every tick: one indexed query that reads no message content.
pub async fn requeue_expired(ap: &AccessPoint) {
    let overdue = match ap.store.pulled_overdue(now_ms(), 1000).await {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the pulled messages");
            return;
        }
    };
    for record in overdue {
        let schedule =
            ap.pmodes().links().iter().find(|l| l.id == record.pmode).map(|l| l.retry.clone()).unwrap_or_default();
        let offer_again = (record.attempts as usize) <= schedule.len();
        match ap.store.transition(record.row, State::Pulled, Happening::PullReceiptOverdue { offer_again }, None).await
        {
            Ok(_) | Err(StoreError::Conflict { .. }) => {}
            Err(e) => tracing::error!(error = %e, "cannot requeue a pulled message"),
        }
    }
}

/// The pulling side: every pull leg this access point receives on is polled on its interval.
pub async fn run(ap: Arc<AccessPoint>, shutdown: CancellationToken) {
    let mut last: std::collections::HashMap<(String, String), std::time::Instant> = Default::default();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        requeue_expired(&ap).await;
        let pmodes = ap.pmodes();
        for link in pmodes.links_of(ap.me()) {
            for leg in link.legs.iter().filter(|l| l.pull && l.from.as_deref() != Some(ap.me())) {
                let key = (link.id.clone(), leg.name.clone());
                if last.get(&key).is_some_and(|t| t.elapsed() < leg.pull_interval) {
                    continue;
                }
                last.insert(key, std::time::Instant::now());
                // Drain: keep pulling while messages come.
                for _ in 0..100 {
                    match pull_once(&ap, link, leg).await {
                        Ok(true) => continue,
                        Ok(false) => break,
                        Err(e) => {
                            tracing::warn!(pmode = %link.id, leg = %leg.name, error = %e, "pull failed");
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// One PullRequest; true when a message was pulled and answered.
pub async fn pull_once(ap: &Arc<AccessPoint>, link: &Link, leg: &Leg) -> Result<bool, String> {
    let holder = link.partner_of(ap.me()).ok_or("no partner")?;
    let mpc = leg.mpc.clone().ok_or("pull leg without MPC")?;
    let info = MessageInfo {
        timestamp: crate::clock::timestamp_now(),
        message_id: crate::clock::new_message_id(&ap.config.host),
        ref_to_message_id: None,
    };
    let builder = write::pull_request_builder(&info, &mpc);
    let matched = Matched { link: Arc::new(link.clone()), leg: link.legs.iter().position(|l| l.name == leg.name) };
    let request = if link.profile.is_secure() {
        sign_signal(ap, &matched, &builder).ok_or("cannot sign the PullRequest")?
    } else {
        builder.build("")
    };
    let identity = ap.tls_identity(link);
    let url = ap.endpoint_of(holder).to_owned();
    let body: BodyStream = Box::pin(futures_util::stream::iter([Ok(Bytes::from(request))]));
    let response = ap
        .client
        .post_streaming(&identity, &url, "application/soap+xml; charset=UTF-8", body, link.timeout)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status;
    // A pulled message comes as SwA (multipart) or, without payloads, as a bare SOAP
    // envelope; the holder's "nothing waiting" or refusal is a bare SOAP signal.
    let content_type = response.content_type.clone();
    let stream: BodyStream = match mime::parse_packaging(content_type.as_deref()) {
        Ok(Packaging::Multipart { .. }) => response.body,
        Ok(Packaging::Soap) => {
            let envelope = read_bounded(response.body, mime::Limits::default().max_envelope_bytes).await?;
            let parsed = crate::ebms::read::read_envelope(&envelope, crate::ebms::tree::Limits::default())
                .map_err(|e| format!("HTTP {status}: the answer to a PullRequest is not an ebMS message: {e}"))?;
            if parsed.messaging.user_message.is_none() {
                return match pull_answer(&parsed) {
                    PullAnswer::Empty => Ok(false),
                    PullAnswer::Refused(reason) => Err(format!("HTTP {status}: {reason}")),
                };
            }
            Box::pin(futures_util::stream::iter([Ok(Bytes::from(envelope))]))
        }
        Err(e) => return Err(format!("HTTP {status}: unusable answer to a PullRequest: {}", e.detail)),
    };
    // Process it as a received message, streaming to staging; the answer (receipt or error)
    // goes back as a signal of its own.
    let answer = receive_as(ap.clone(), PeerCertificates::default(), true, content_type, stream).await;
    let back: BodyStream = Box::pin(futures_util::stream::iter([Ok(Bytes::from(answer.body))]));
    ap.client
        .post(&identity, &url, "application/soap+xml; charset=UTF-8", back, link.timeout)
        .await
        .map_err(|e| format!("cannot return the receipt: {e}"))?;
    Ok(true)
}

/// What a signal-only answer to our PullRequest says.
enum PullAnswer {
    /// EBMS:0006: nothing waiting on the MPC.
    Empty,
    Refused(String),
}

fn pull_answer(parsed: &Envelope) -> PullAnswer {
    let errors: Vec<&crate::ebms::ErrorDetail> = parsed
        .messaging
        .signals
        .iter()
        .flat_map(|s| match &s.signal {
            Signal::Errors(e) => e.iter().collect(),
            _ => Vec::new(),
        })
        .collect();
    if errors.iter().any(|e| e.code == EbmsCode::EmptyMessagePartitionChannel.code())
        && !errors.iter().any(|e| e.is_failure())
    {
        return PullAnswer::Empty;
    }
    let described: Vec<String> = errors
        .iter()
        .map(|e| format!("{} {}", e.code, e.detail.as_deref().or(e.short_description.as_deref()).unwrap_or("")))
        .collect();
    if described.is_empty() {
        PullAnswer::Refused("neither a message nor an error signal".into())
    } else {
        PullAnswer::Refused(described.join("; "))
    }
}

/// Reads a small body whole (a bare SOAP envelope), refusing more than `limit` bytes.
async fn read_bounded(mut body: BodyStream, limit: usize) -> Result<Vec<u8>, String> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("reading the answer: {e}"))?;
        if out.len() + chunk.len() > limit {
            return Err(format!("a SOAP answer of more than {limit} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
