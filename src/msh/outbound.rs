//! The outbound pipeline: submit → validate payload → match P-Mode → compress → sign →
//! encrypt → persist; then the sender: claim → package → POST → check receipt → acknowledged |
//! waiting_retry | failed, each a lifecycle transition applied as compare-and-set.
//!
//! # Cancellation
//! [`submit`] runs inside an owned task (the backend API spawns it on `AccessPoint::tasks`),
//! so none of its `.await`s is cancelled by the backend hanging up: the blocking job that
//! validates, compresses, signs and encrypts writes only beside the staged payloads (no row
//! names them yet); `store.insert_submission` is the commit (and, when a send permit was
//! free, the claim); after it only a task is spawned, nothing awaited.
//! The sender ([`run_sender`]) is a task of the node; each claimed message is sent by
//! `send_one` in a task of its own on `AccessPoint::tasks`, which a graceful stop waits for.
//! In `send_one`: the POST may time out or fail (nothing is committed by it; the outcome is a
//! retry); `store.transition` commits the outcome, tried again for about a minute if the store
//! fails ([`record_outcome`]). A stop or crash between the two leaves the message in `sending`,
//! and [`crate::store::MessageStore::recover`] resends it at the next start (the partner
//! answers a resend with its stored receipt).

use super::AccessPoint;
use crate::compress;
use crate::ebms::read::read_envelope;
use crate::ebms::tree::Limits as XmlLimits;
use crate::ebms::{
    AgreementRef, MessageInfo, PartInfo, Party, PartyId, Property, Service, Signal, UserMessage, ns, write,
};
use crate::lifecycle::{Creation, PartnerError};
use crate::mime::{self, Packaging};
use crate::pmode::Profile;
use crate::store::{Direction, Happening, MessageRecord, NewMessage, State, StoreError, StoredPayload, now_ms};
use crate::transport::{BodyStream, SendError};
use crate::wss::content::Content;
use bytes::Bytes;
use futures_util::StreamExt;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The part property that carries a payload's file name.
pub const FILE_NAME: &str = "FileName";

/// What the backend asks to send. Payload files are written; `submit` makes them durable with
/// the row.
#[derive(Debug, Clone)]
pub struct Submission {
    pub to: String,
    pub leg: String,
    pub conversation_id: Option<String>,
    /// (name, value, type)
    pub properties: Vec<(String, String, Option<String>)>,
    pub payloads: Vec<StoredPayload>,
    /// Payloads not written yet (the API keeps a small one in memory): `submit` writes them.
    pub unwritten: crate::store::files::Unwritten,
    /// The MessageId to use, for a submission that may be repeated (a watched folder after a
    /// crash): the same id is accepted once; a repeat returns the stored message.
    pub message_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Builds the user message for a submission: everything the wire needs, fixed once so that
/// every retry sends the identical message.
pub fn build_user_message(ap: &AccessPoint, sub: &Submission) -> Result<(UserMessage, String, String), SubmitError> {
    let refuse = |m: String| SubmitError::Refused(m);
    let pmodes = ap.pmodes();
    let (link, leg_index) = pmodes.outbound(ap.me(), &sub.to, &sub.leg).map_err(refuse)?;
    let leg = &link.legs[leg_index];
    if link.profile == Profile::None && !ap.config.allow_insecure_profile {
        return Err(refuse(format!("P-Mode {} has profile 'none', which this access point does not allow", link.id)));
    }
    if link.profile.is_secure() && ap.security.for_profile(link.profile).is_none() {
        return Err(refuse(format!(
            "P-Mode {} uses {}, but this access point has no [[keys]] for that profile",
            link.id,
            link.profile.as_str()
        )));
    }
    if sub.payloads.is_empty() {
        return Err(refuse("a message needs at least one payload".into()));
    }
    // What a receiver with our limits would refuse is refused here, before any work.
    let limits = &ap.config.limits;
    if sub.payloads.len() > limits.max_parts {
        return Err(refuse(format!(
            "{} payloads; a message may carry at most {} (limits.max_parts)",
            sub.payloads.len(),
            limits.max_parts
        )));
    }
    if sub.properties.len() > limits.max_properties {
        return Err(refuse(format!(
            "{} message properties; a message may carry at most {} (limits.max_properties)",
            sub.properties.len(),
            limits.max_properties
        )));
    }
    for p in &sub.payloads {
        if p.size > leg.max_payload {
            return Err(refuse(format!(
                "payload {} has {} bytes; P-Mode {} leg '{}' allows {}",
                p.filename.as_deref().unwrap_or(&p.content_id),
                p.size,
                link.id,
                leg.name,
                leg.max_payload
            )));
        }
    }
    for required in &leg.required_properties {
        if !sub.properties.iter().any(|(n, _, _)| n == required) {
            return Err(refuse(format!(
                "P-Mode {} leg '{}' requires the message property '{required}'",
                link.id, leg.name
            )));
        }
    }
    if !leg.allowed_properties.is_empty()
        && let Some((n, _, _)) = sub
            .properties
            .iter()
            .find(|(n, _, _)| !leg.allowed_properties.contains(n) && !leg.required_properties.contains(n))
    {
        return Err(refuse(format!("P-Mode {} leg '{}' does not allow the message property '{n}'", link.id, leg.name)));
    }
    let me = link.party(ap.me()).ok_or_else(|| refuse("this access point is not a party of the link".into()))?;
    let partner = link.partner_of(ap.me()).ok_or_else(|| refuse("no partner".into()))?;
    let message_id = sub.message_id.clone().unwrap_or_else(|| crate::clock::new_message_id(&ap.config.host));
    let um = UserMessage {
        mpc: leg.mpc.clone(),
        service: Service { value: leg.service.clone(), kind: leg.service_type.clone() },
        action: leg.action.clone(),
        conversation_id: sub.conversation_id.clone().unwrap_or_else(crate::clock::new_conversation_id),
        ..addressed(&link, me, partner, &message_id)
    };
    let um = UserMessage {
        properties: sub
            .properties
            .iter()
            .map(|(n, v, t)| Property { name: n.clone(), kind: t.clone(), value: v.clone() })
            .collect(),
        parts: sub
            .payloads
            .iter()
            .map(|p| {
                let mut properties = vec![Property { name: "MimeType".into(), kind: None, value: p.mime_type.clone() }];
                if leg.compression {
                    // Set by the MSH, never by the application (AS4 §3.1).
                    properties.push(Property {
                        name: "CompressionType".into(),
                        kind: None,
                        value: compress::GZIP.into(),
                    });
                }
                // The backend's file name travels with the part, so the receiving national
                // system gets the document under the name it was sent with.
                if let Some(name) = p.filename.as_deref().map(crate::backend::safe_file_name) {
                    properties.push(Property { name: FILE_NAME.into(), kind: None, value: name });
                }
                PartInfo { href: Some(format!("cid:{}", p.content_id)), properties }
            })
            .collect(),
        ..um
    };
    Ok((um, link.id.clone(), leg.name.clone()))
}

/// A user message from `me` to `partner` on `link`, with a fresh MessageInfo; service,
/// action and content are the caller's.
pub(crate) fn addressed(
    link: &crate::pmode::Link,
    me: &crate::pmode::Party,
    partner: &crate::pmode::Party,
    message_id: &str,
) -> UserMessage {
    UserMessage {
        mpc: None,
        info: MessageInfo {
            timestamp: crate::clock::timestamp_now(),
            message_id: message_id.to_owned(),
            ref_to_message_id: None,
        },
        from: Party {
            ids: vec![PartyId { value: me.id.clone(), kind: me.kind.clone() }],
            role: ns::ROLE_INITIATOR.into(),
        },
        to: Party {
            ids: vec![PartyId { value: partner.id.clone(), kind: partner.kind.clone() }],
            role: ns::ROLE_RESPONDER.into(),
        },
        agreement: link.agreement.as_ref().map(|a| AgreementRef {
            value: a.clone(),
            kind: link.agreement_type.clone(),
            pmode: Some(link.id.clone()),
        }),
        service: Service { value: String::new(), kind: None },
        action: String::new(),
        conversation_id: String::new(),
        properties: Vec::new(),
        parts: Vec::new(),
    }
}

/// Steps: compress, sign and encrypt, once, so that every retry sends the identical
/// message. The payload rows then name the files that go on the wire; the plaintext stays
/// beside them.
pub(crate) fn protect(
    security: &super::security::SecurityContext,
    link: &crate::pmode::Link,
    compression: bool,
    me: &str,
    um: &UserMessage,
    payloads: Vec<StoredPayload>,
    unwritten: &crate::store::files::Unwritten,
) -> Result<Protected, SubmitError> {
    use crate::wss::content::IN_MEMORY_MAX;
    use crate::wss::encrypt::{PartToEncrypt, encrypt_parts_keeping};
    use crate::wss::sign::{SignedPart, sign_envelope};
    let refuse = |m: String| SubmitError::Refused(m);
    let compressed = |e: compress::CompressError| refuse(format!("cannot compress: {e}"));
    // Compress: each part becomes application/gzip, its type stays in PartInfo's MimeType. A
    // small part that is encrypted next is compressed in memory: its gzip is never a file.
    let mut working: Vec<(Working, String)> = Vec::new();
    for (index, p) in payloads.iter().enumerate() {
        if !compression {
            working.push((Working::File(p.path.clone()), p.mime_type.clone()));
        } else if link.profile.is_secure() && p.size <= IN_MEMORY_MAX {
            let plain = match unwritten.get(index) {
                Some(held) => std::borrow::Cow::Borrowed(held),
                None => std::fs::read(&p.path).map_err(|e| refuse(format!("cannot read a payload: {e}")))?.into(),
            };
            working.push((Working::Memory(compress::gzip_bytes(&plain).map_err(compressed)?), compress::GZIP.into()));
        } else {
            let gz = p.path.with_extension("gz");
            compress::gzip_file(&p.path, &gz).map_err(compressed)?;
            working.push((Working::File(gz), compress::GZIP.to_owned()));
        }
    }
    let builder = write::user_message_builder(um);
    if !link.profile.is_secure() {
        let wire = payloads
            .into_iter()
            .zip(working)
            .map(|(p, (working, kind))| match working {
                // `size` and `sha256` stay the original's: what the backend submitted.
                Working::File(path) => Ok(StoredPayload { path, wire_type: Some(kind), ..p }),
                Working::Memory(_) => Err(refuse("a part in memory on an unprotected link".into())),
            })
            .collect::<Result<_, _>>()?;
        return Ok(Protected { envelope: builder.build("").into_bytes(), wire, written: Vec::new() });
    }
    let keys =
        security.for_profile(link.profile).ok_or_else(|| refuse(format!("no keys for {}", link.profile.as_str())))?;
    let partner = link.partner_of(me).ok_or_else(|| refuse("no partner".into()))?;
    let enc_cert = partner
        .enc_cert
        .as_deref()
        .and_then(|der| crate::pki::parsed::certificate(der).ok())
        .ok_or_else(|| refuse(format!("P-Mode {} has no encryption certificate for {}", link.id, partner.id)))?;
    let ciphertexts: Vec<std::path::PathBuf> = payloads.iter().map(|p| p.path.with_extension("enc")).collect();
    let to_encrypt: Vec<PartToEncrypt> = payloads
        .iter()
        .zip(&working)
        .zip(&ciphertexts)
        .map(|((p, (working, kind)), c)| PartToEncrypt {
            content_id: &p.content_id,
            content_type: kind,
            plaintext: working.content(),
            ciphertext: c.clone(),
        })
        .collect();
    let suffix = crate::util::short_hash(um.info.message_id.as_bytes());
    let (encryption, written) = encrypt_parts_keeping(&to_encrypt, &enc_cert, link.token_reference, &suffix)
        .map_err(|e| refuse(format!("cannot encrypt: {e}")))?;
    let to_sign: Vec<SignedPart> = payloads
        .iter()
        .zip(&working)
        .map(|(p, (working, kind))| SignedPart {
            content_id: &p.content_id,
            content_type: kind,
            content: working.content(),
        })
        .collect();
    let envelope = sign_envelope(&builder, &keys.sign, link.token_reference, &to_sign, &encryption)
        .map_err(|e| refuse(format!("cannot sign: {e}")))?;
    let wire = payloads
        .into_iter()
        .zip(ciphertexts)
        .map(|(p, c)| StoredPayload { path: c, wire_type: Some("application/octet-stream".into()), ..p })
        .collect();
    Ok(Protected { envelope: envelope.into_bytes(), wire, written })
}

/// A protected message: its envelope, its payloads as they go on the wire, and (by payload)
/// the bytes of each wire file that was written from memory, kept so that nothing reads the
/// file back before the first send.
pub(crate) struct Protected {
    pub(crate) envelope: Vec<u8>,
    pub(crate) wire: Vec<StoredPayload>,
    pub(crate) written: crate::wss::encrypt::Written,
}

/// A part as it is signed and encrypted: a file (the submitted one, or its gzip), or the gzip
/// of a small part in memory.
enum Working {
    File(std::path::PathBuf),
    Memory(Vec<u8>),
}

impl Working {
    fn content(&self) -> Content<'_> {
        match self {
            Working::File(path) => Content::File(path),
            Working::Memory(bytes) => Content::Memory(bytes),
        }
    }
}

/// Accepts a submission: after this returns, the message is on disk and will be sent.
pub async fn submit(ap: &Arc<AccessPoint>, sub: Submission) -> Result<MessageRecord, SubmitError> {
    let iop_leg = ap
        .pmodes()
        .outbound(ap.me(), &sub.to, &sub.leg)
        .ok()
        .filter(|(link, index)| link.legs[*index].transport == crate::pmode::Transport::Iop);
    if let Some((link, index)) = iop_leg {
        return super::iop::submit(ap, sub, link, index).await;
    }
    let (um, pmode, leg) = build_user_message(ap, &sub)?;
    let link = ap
        .pmodes()
        .links()
        .iter()
        .find(|l| l.id == pmode)
        .cloned()
        .ok_or_else(|| SubmitError::Refused(format!("P-Mode {pmode} was unloaded")))?;
    let security = ap.security.clone();
    let registry = ap.documents.clone();
    let me = ap.me().to_owned();
    let to = sub.to.clone();
    let um_for_protect = um.clone();
    let leg_name = leg.clone();
    let sizes: Vec<u64> = sub.payloads.iter().map(|p| p.size).collect();
    let file_sync = ap.file_sync.clone();
    let keeps_copies = ap.store.keeps_file_copies();
    let submitted: Vec<std::path::PathBuf> = sub.payloads.iter().map(|p| p.path.clone()).collect();
    let (envelope, payloads, document, pull, unsynced, on_the_wire_held) = crate::blocking::spawn(move || {
        let leg = link.leg(&leg_name).ok_or_else(|| SubmitError::Refused(format!("leg {leg_name} was unloaded")))?;
        // The submitted files are kept (a resubmission sends them again): those still in memory
        // are written here, and read from memory below.
        let paths: Vec<&std::path::Path> = sub.payloads.iter().map(|p| p.path.as_path()).collect();
        sub.unwritten
            .write(&paths)
            .map_err(|e| SubmitError::Refused(format!("cannot write a submitted payload: {e}")))?;
        // Step: validate payload. The leading document must be valid and fit the link.
        let document = match sub.payloads.first() {
            Some(first) => super::documents::inspect(
                &registry,
                &link,
                leg,
                &me,
                &to,
                sub.unwritten.get(0).map_or(first.path.as_path().into(), Content::Memory),
            )
            .map_err(|p| {
                SubmitError::Refused(format!(
                    "the {} document is refused: {p}",
                    leg.document.as_deref().unwrap_or("leading")
                ))
            })?,
            None => None,
        };
        let originals: Vec<std::path::PathBuf> = sub.payloads.iter().map(|p| p.path.clone()).collect();
        let Protected { envelope, wire: payloads, written } =
            protect(&security, &link, leg.compression, &me, &um_for_protect, sub.payloads, &sub.unwritten)?;
        // Durable with the commit that names them (copied into it when small, else synced
        // first): the submitted files (kept for a resubmission) and what goes on the wire;
        // intermediates (the gzip before encryption) are neither.
        let named: Vec<&std::path::Path> =
            originals.iter().map(|p| p.as_path()).chain(payloads.iter().map(|p| p.path.as_path())).collect();
        // The copies come from the bytes just written, where they are still in memory.
        let mut held = sub.unwritten.0;
        held.resize(originals.len(), None);
        held.extend(written.iter().cloned());
        // Their folders' new entries with them (`secure` syncs each file's folder).
        let unsynced = file_sync
            .secure(keeps_copies, &named, held, &[])
            .map_err(|e| SubmitError::Refused(format!("cannot make the payloads durable: {e}")))?;
        // Kept for the first send while the message's together stay within what a received
        // message may hold in memory; the rest is read from its file then.
        let mut kept = 0usize;
        let written: Vec<Option<Bytes>> = written
            .into_iter()
            .map(|w| {
                let w = w.filter(|w| kept + w.len() <= crate::store::files::SPOOL_IN_MEMORY)?;
                kept += w.len();
                Some(Bytes::from(w))
            })
            .collect();
        Ok::<_, SubmitError>((envelope, payloads, document, leg.pull, unsynced, written))
    })
    .await
    .map_err(|e| SubmitError::Refused(format!("signing task failed: {e}")))??;
    let message = NewMessage {
        message_id: um.info.message_id.clone(),
        conversation_id: um.conversation_id.clone(),
        pmode,
        leg,
        partner: sub.to.clone(),
        service: um.service.value.clone(),
        action: um.action.clone(),
        // A pull leg holds the message until the partner pulls it.
        creation: Creation::Submitted { pull },
        envelope,
        response: None,
        payloads,
        document: document.and_then(|d| serde_json::to_value(d).ok()),
        transport: crate::pmode::Transport::As4,
        unsynced,
    };
    // A free send permit: the commit that accepts the message also claims it, and it is sent
    // now, without waiting for the sender to claim it (one store round trip less; the claim
    // is durable with the message, so a crash leaves it in `sending`, resent at the start).
    let permit = if pull { None } else { ap.free_send_permit() };
    let on_the_wire: Vec<std::path::PathBuf> = message.payloads.iter().map(|p| p.path.clone()).collect();
    let accepted = ap.store.insert_submission(message, permit.is_some()).await?;
    if let crate::store::Inserted::Duplicate { .. } = accepted.inserted {
        // A repeated submission (same MessageId): the first is the message; these files are not.
        tracing::info!(message_id = %um.info.message_id, "submitted again; already accepted");
        for file in submitted.iter().chain(&on_the_wire) {
            let _ = std::fs::remove_file(file);
        }
        return Ok(accepted.record);
    }
    for size in sizes {
        ap.ops.metrics.payload(Direction::Outbound, size);
    }
    tracing::info!(message_id = %um.info.message_id, partner = %sub.to, "submitted by the backend");
    match permit {
        // Sent now: its wire files' bytes are still here, so the send reads no file.
        Some(permit) if accepted.claimed => spawn_send(ap, accepted.record.clone(), on_the_wire_held, permit),
        _ => ap.outbox.notify_one(),
    }
    Ok(accepted.record)
}

/// Content-IDs for the payload parts of a new message.
pub fn new_content_id(ap: &AccessPoint, index: usize) -> String {
    format!("part{}.{}@{}", index + 1, uuid::Uuid::new_v4().simple(), ap.config.host)
}

/// The sender: leases due messages and sends them, bounded by `send_concurrency`.
pub async fn run_sender(ap: Arc<AccessPoint>, shutdown: CancellationToken) {
    match ap.store.recover(now_ms()).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(count = n, "messages interrupted while sending will be resent"),
        Err(e) => tracing::error!(error = %e, "cannot recover interrupted messages"),
    }
    let permits = Arc::new(Semaphore::new(ap.config.as4.send_concurrency.max(1)));
    let _registered = SendPermits::register(&ap, &permits);
    let mut last_recovery = std::time::Instant::now();
    // Whether messages may be due beyond what the last claim took: then a freed permit is
    // worth a claim. Otherwise it is not (a message accepted with a free permit is sent at
    // once, unclaimed ones wake the sender through `outbox`), and a claim per finished send
    // would be a store round trip on the writer thread per message for nothing.
    let mut backlog = true;
    let mut claim = true;
    // Retries coming due and other nodes' messages (a shared store) are found by a claim at
    // least every half second, however often sends end in between.
    const SWEEP: std::time::Duration = std::time::Duration::from_millis(500);
    let mut next_sweep = tokio::time::Instant::now() + SWEEP;
    loop {
        // On a shared store, take over messages whose sending node died (expired leases).
        if ap.store.shared() && last_recovery.elapsed() > std::time::Duration::from_secs(2) {
            last_recovery = std::time::Instant::now();
            match ap.store.recover(now_ms()).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(count = n, "took over messages of a node whose lease expired"),
                Err(e) => tracing::error!(error = %e, "cannot check for expired leases"),
            }
        }
        let free = permits.available_permits();
        if claim {
            next_sweep = tokio::time::Instant::now() + SWEEP;
        }
        let due = if !claim {
            Vec::new()
        } else if free == 0 {
            backlog = true;
            Vec::new()
        } else {
            match ap.store.claim_due(now_ms(), free).await {
                Ok(d) => {
                    // A full claim may have left more behind.
                    backlog = d.len() >= free;
                    d
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the outbox");
                    backlog = true;
                    Vec::new()
                }
            }
        };
        let idle = due.is_empty();
        for record in due {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            spawn_send(&ap, record, Vec::new(), permit);
        }
        if idle {
            claim = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ap.outbox.notified() => true,
                _ = ap.permit_freed.notified() => backlog,
                _ = tokio::time::sleep_until(next_sweep) => true,
            };
        } else if shutdown.is_cancelled() {
            return;
        } else {
            claim = true;
        }
    }
}

/// The sender's permits, offered to submissions while the sender runs; withdrawn (and closed,
/// so no submission hands a message over after the sender stopped) when it returns.
struct SendPermits<'a> {
    ap: &'a AccessPoint,
    permits: Arc<Semaphore>,
}

impl<'a> SendPermits<'a> {
    fn register(ap: &'a AccessPoint, permits: &Arc<Semaphore>) -> SendPermits<'a> {
        if let Ok(mut slot) = ap.send_permits.lock() {
            *slot = Some(permits.clone());
        }
        SendPermits { ap, permits: permits.clone() }
    }
}

impl Drop for SendPermits<'_> {
    fn drop(&mut self) {
        if let Ok(mut slot) = self.ap.send_permits.lock() {
            *slot = None;
        }
        self.permits.close();
    }
}

/// Sends a claimed message in an owned task holding one of the sender's permits. `held`: by
/// payload, the bytes of its wire file when still in memory (a message sent as it is accepted).
fn spawn_send(
    ap: &Arc<AccessPoint>,
    record: MessageRecord,
    held: Vec<Option<Bytes>>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let ap = ap.clone();
    let span = tracing::info_span!("outbound", message_id = %record.message_id, partner = %record.partner, pmode = %record.pmode);
    let tasks = ap.tasks.clone();
    tasks.spawn(
        async move {
            send_one(&ap, record, held).await;
            drop(permit);
            ap.permit_freed.notify_one();
        }
        .instrument(span),
    );
}

/// What the partner's answer means for the message.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Receipt,
    /// An ebMS error of severity failure, to be trusted (signed by the partner on a signing
    /// link): not retried.
    Refused {
        reason: String,
        error: PartnerError,
    },
    /// No usable answer: retried on the schedule. An error signal that could not be trusted
    /// (unsigned, or warnings only) is kept in `error` so an operator sees the partner's word.
    NoReceipt {
        reason: String,
        error: Option<PartnerError>,
    },
}

impl Outcome {
    pub(crate) fn no_receipt(reason: String) -> Outcome {
        Outcome::NoReceipt { reason, error: None }
    }
}

/// The partner's errors in one record: the first failure (or warning) decides the code; every
/// description is kept.
pub(crate) fn partner_error(errors: &[crate::ebms::ErrorDetail], verified: bool) -> Option<PartnerError> {
    let first = errors.iter().find(|e| e.is_failure()).or(errors.first())?;
    let describe = |e: &crate::ebms::ErrorDetail| {
        let text = [e.short_description.as_deref(), e.description.as_deref(), e.detail.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(": ");
        format!("{} {text}", e.code).trim_end().to_owned()
    };
    Some(PartnerError {
        code: first.code.clone(),
        severity: if first.is_failure() { "failure".into() } else { "warning".into() },
        description: errors.iter().map(describe).collect::<Vec<_>>().join("; "),
        verified,
    })
}

async fn send_one(ap: &AccessPoint, record: MessageRecord, held: Vec<Option<Bytes>>) {
    let started = std::time::Instant::now();
    let (outcome, body) = match attempt(ap, &record, held).await {
        Ok((outcome, body)) => (outcome, Some(body)),
        Err(e) => (Outcome::no_receipt(e.to_string()), None),
    };
    observe(ap, &record.partner, &outcome, started.elapsed());
    let (event, signal) = match outcome {
        Outcome::Receipt => {
            tracing::info!(attempt = record.attempts, "receipt received");
            (Happening::ReceiptReceived, body)
        }
        Outcome::Refused { reason, error } => {
            tracing::warn!(reason, "refused by the partner");
            (Happening::RefusedByPartner { reason, error: Some(error) }, body)
        }
        Outcome::NoReceipt { reason, error } => {
            let schedule =
                ap.pmodes().links().iter().find(|l| l.id == record.pmode).map(|l| l.retry.clone()).unwrap_or_default();
            let retry_at = schedule.get(record.attempts.saturating_sub(1) as usize).map(|wait| {
                tracing::warn!(reason, retry_in = ?wait, "no receipt; will retry");
                now_ms() + wait.as_millis() as i64
            });
            if retry_at.is_none() {
                tracing::error!(reason, attempts = record.attempts, "EBMS:0301 MissingReceipt: retries exhausted");
            }
            if let Some(e) = &error {
                tracing::warn!(code = %e.code, description = %e.description, "the partner answered with an error that is not trusted (unsigned or not a failure)");
            }
            (Happening::NoReceipt { reason, retry_at, error }, None)
        }
    };
    // Other failures are logged where they happen.
    if let Err(e @ StoreError::Conflict { .. }) = record_outcome(ap, record.row, State::Sending, event, signal).await {
        tracing::error!(error = %e, "cannot record the outcome");
    }
}

/// The waits between attempts to record a send's outcome when the store fails in a way that may
/// pass (a busy or full disk, a lost PostgreSQL connection): about a minute in all, during which
/// the message keeps its send permit, so a failing store also slows the sender down.
const RECORD_RETRIES: [std::time::Duration; 6] = [
    std::time::Duration::from_millis(100),
    std::time::Duration::from_millis(500),
    std::time::Duration::from_secs(2),
    std::time::Duration::from_secs(5),
    std::time::Duration::from_secs(15),
    std::time::Duration::from_secs(30),
];

/// Commits the outcome of a send or of a pull (`from`, `sending` or `pulled`, → the event's
/// state), retrying a store failure that may pass. Until it commits the message stays where it
/// was: past the last retry, a message `sending` is resent at the next start
/// ([`crate::store::MessageStore::recover`]) and one `pulled` is offered again when its
/// receipt is overdue ([`super::pull::requeue_expired`]); the partner answers either with its
/// stored receipt: at least once, never lost. A conflict on the first try (the message moved
/// on meanwhile) is the caller's to report; every other failure is logged here.
pub(crate) async fn record_outcome(
    ap: &AccessPoint,
    row: i64,
    from: State,
    event: Happening,
    signal: Option<Vec<u8>>,
) -> Result<(), StoreError> {
    let mut waits = RECORD_RETRIES.iter();
    let mut retried = false;
    loop {
        match ap.store.transition(row, from, event.clone(), signal.clone()).await {
            Ok(_) => {
                if retried {
                    tracing::info!("outcome recorded after a store failure");
                }
                return Ok(());
            }
            // An earlier attempt that reported a failure may have committed after all.
            Err(StoreError::Conflict { actual, .. }) if retried => {
                tracing::warn!(
                    state = actual.as_str(),
                    "after a store failure the message is already past {}",
                    from.as_str()
                );
                return Ok(());
            }
            Err(e) if e.may_pass() => match waits.next() {
                Some(wait) => {
                    tracing::warn!(error = %e, retry_in = ?wait, "cannot record the outcome; retrying");
                    retried = true;
                    tokio::time::sleep(*wait).await;
                }
                None => {
                    let then = if from == State::Pulled {
                        "offered again when its receipt is overdue"
                    } else {
                        "resent after a restart"
                    };
                    tracing::error!(error = %e, "cannot record the outcome; the message will be {then}");
                    return Err(e);
                }
            },
            Err(e @ StoreError::Conflict { .. }) => return Err(e),
            Err(e) => {
                tracing::error!(error = %e, "cannot record the outcome");
                return Err(e);
            }
        }
    }
}

/// Metrics and the partner's contact status, from one attempt's outcome.
fn observe(ap: &AccessPoint, partner: &str, outcome: &Outcome, took: std::time::Duration) {
    let ops = &ap.ops;
    let now = now_ms();
    ops.metrics
        .send_seconds
        .get_or_create(&crate::ops::metrics::PartnerLabels { partner: partner.to_owned() })
        .observe(took.as_secs_f64());
    match outcome {
        Outcome::Receipt => {
            ops.metrics.receipt("received", partner);
            ops.partner_answered(partner, now);
        }
        Outcome::Refused { error, .. } => {
            ops.metrics.error_received(&error.code);
            ops.partner_answered(partner, now);
        }
        Outcome::NoReceipt { reason, error } => {
            ops.metrics
                .retries
                .get_or_create(&crate::ops::metrics::PartnerLabels { partner: partner.to_owned() })
                .inc();
            match error {
                Some(error) => {
                    ops.metrics.error_received(&error.code);
                    ops.partner_answered(partner, now);
                }
                None => ops.partner_silent(partner, now, reason),
            }
        }
    }
}

/// One attempt: package, POST, interpret the answer.
async fn attempt(
    ap: &AccessPoint,
    record: &MessageRecord,
    held: Vec<Option<Bytes>>,
) -> Result<(Outcome, Vec<u8>), SendError> {
    let pmodes = ap.pmodes();
    let link = pmodes
        .links()
        .iter()
        .find(|l| l.id == record.pmode)
        .cloned()
        .ok_or_else(|| SendError::Connection(format!("P-Mode {} is no longer loaded", record.pmode)))?;
    if record.transport == crate::pmode::Transport::Iop {
        return super::iop::attempt(ap, record, &link).await;
    }
    let partner = link.partner_of(ap.me()).ok_or_else(|| SendError::Connection("no partner in the P-Mode".into()))?;
    let url = ap.endpoint_of(partner).to_owned();
    let identity = ap.tls_identity(&link);
    let boundary = mime::writer::new_boundary();
    let root_id = format!("root.{}@{}", crate::util::short_hash(record.message_id.as_bytes()), ap.config.host);
    let content_type = mime::writer::content_type(&boundary, &root_id);
    let body = package(&boundary, &root_id, record.envelope.clone(), &record.payloads, held);
    let response = ap.client.post(&identity, &url, &content_type, body, link.timeout).await?;
    let (outcome, envelope) =
        interpret(&record.message_id, response.status, response.content_type.as_deref(), &response.body).await;
    let outcome = match (outcome, envelope) {
        (outcome @ (Outcome::Receipt | Outcome::Refused { .. }), Some(envelope)) if link.profile.is_secure() => {
            let is_receipt = outcome == Outcome::Receipt;
            match (check_signal(ap, &link, partner, &envelope, &record.envelope, is_receipt), outcome) {
                (Ok(()), Outcome::Refused { reason, error }) => {
                    Outcome::Refused { reason, error: PartnerError { verified: true, ..error } }
                }
                (Ok(()), outcome) => outcome,
                (Err(reason), _) if is_receipt => Outcome::no_receipt(format!("EBMS:0302 InvalidReceipt: {reason}")),
                (Err(why), Outcome::Refused { reason, error }) => Outcome::NoReceipt {
                    reason: format!("the partner answered {reason}, in an error signal that is not trusted: {why}"),
                    error: Some(error),
                },
                (Err(why), _) => Outcome::no_receipt(why),
            }
        }
        (outcome, _) => outcome,
    };
    Ok((outcome, response.body.to_vec()))
}

/// Step: check receipt. On a signing link a receipt or error counts only if the partner
/// signed it; a receipt must also acknowledge every part we signed, with the same digests.
pub(crate) fn check_signal(
    ap: &AccessPoint,
    link: &crate::pmode::Link,
    partner: &crate::pmode::Party,
    envelope: &[u8],
    sent: &[u8],
    is_receipt: bool,
) -> Result<(), String> {
    use crate::wss::xml::Xml;
    let suite = crate::wss::profile::suite(link.profile).ok_or("no suite")?;
    let xml = Xml::parse(envelope).map_err(|e| e.to_string())?;
    crate::wss::verify::verify_envelope(&xml, &[], suite.signature_method, &|r| ap.security.partner_signer(partner, r))
        .map_err(|e| format!("{}: {}", e.code, e.detail))?;
    if is_receipt {
        crate::wss::receipt::check_nrr(&xml, &crate::wss::receipt::signed_references(sent)?)?;
    }
    Ok(())
}

/// Step: package. The envelope and each payload file stream as MIME parts; a payload whose
/// file's bytes are `held` (by index) is sent from them.
pub fn package(
    boundary: &str,
    root_id: &str,
    envelope: Vec<u8>,
    payloads: &[StoredPayload],
    mut held: Vec<Option<Bytes>>,
) -> BodyStream {
    let mut pieces: Vec<BodyStream> = Vec::new();
    let head = mime::writer::part_head(boundary, "application/soap+xml; charset=UTF-8", root_id, true);
    pieces.push(Box::pin(futures_util::stream::iter([Ok(Bytes::from(head)), Ok(Bytes::from(envelope))])));
    held.resize(payloads.len(), None);
    for (p, held) in payloads.iter().zip(held) {
        let part_type = p.wire_type.as_deref().unwrap_or(&p.mime_type);
        let head = mime::writer::part_head(boundary, part_type, &p.content_id, false);
        pieces.push(Box::pin(futures_util::stream::once(async move { Ok(Bytes::from(head)) })));
        pieces.push(match held {
            Some(bytes) => Box::pin(futures_util::stream::iter([Ok(bytes)])),
            None => crate::store::files::stream_file(p.path.clone()),
        });
    }
    let closing = mime::writer::closing(boundary);
    pieces.push(Box::pin(futures_util::stream::once(async move { Ok(Bytes::from(closing)) })));
    Box::pin(futures_util::stream::iter(pieces).flatten())
}

/// Step: check receipt. Any HTTP status may carry a signal; parse the body regardless.
pub async fn interpret(
    message_id: &str,
    status: u16,
    content_type: Option<&str>,
    body: &Bytes,
) -> (Outcome, Option<Vec<u8>>) {
    let envelope = match mime::parse_packaging(content_type) {
        Ok(Packaging::Soap) => body.to_vec(),
        Ok(Packaging::Multipart { boundary, start }) => {
            let mut sink = mime::MemorySink::default();
            let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(body.clone())]);
            match mime::read_multipart(stream, &boundary, start.as_deref(), mime::Limits::default(), &mut sink).await {
                Ok(m) => m.envelope,
                Err(e) => {
                    return (Outcome::no_receipt(format!("HTTP {status}, unreadable response: {}", e.detail)), None);
                }
            }
        }
        Err(_) if body.is_empty() => {
            return (Outcome::no_receipt(format!("HTTP {status} with an empty body")), None);
        }
        Err(e) => {
            return (Outcome::no_receipt(format!("HTTP {status}, unusable response: {}", e.detail)), None);
        }
    };
    let parsed = match read_envelope(&envelope, XmlLimits::default()) {
        Ok(p) => p,
        Err(e) => {
            return (Outcome::no_receipt(format!("HTTP {status}, response is not an ebMS signal: {e}")), None);
        }
    };
    let mut warnings = Vec::new();
    for signal in &parsed.messaging.signals {
        let refers_to_us = signal.info.ref_to_message_id.as_deref() == Some(message_id);
        match &signal.signal {
            Signal::Receipt { .. } if refers_to_us => return (Outcome::Receipt, Some(envelope)),
            Signal::Errors(errors) => {
                let ours: Vec<crate::ebms::ErrorDetail> = errors
                    .iter()
                    .filter(|e| refers_to_us || e.ref_to_message_in_error.as_deref().is_none_or(|r| r == message_id))
                    .cloned()
                    .collect();
                if ours.iter().any(|e| e.is_failure()) {
                    let error = partner_error(&ours, false).unwrap_or_else(|| PartnerError {
                        code: String::new(),
                        severity: "failure".into(),
                        description: String::new(),
                        verified: false,
                    });
                    return (Outcome::Refused { reason: error.description.clone(), error }, Some(envelope));
                }
                warnings.extend(ours);
            }
            _ => {}
        }
    }
    let reason = format!("HTTP {status} without a receipt for {message_id}");
    (Outcome::NoReceipt { reason, error: partner_error(&warnings, false) }, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebms::{EbmsCode, EbmsError, MessageInfo};

    fn info() -> MessageInfo {
        MessageInfo {
            timestamp: "2026-01-01T00:00:00Z".into(),
            message_id: "s@x".into(),
            ref_to_message_id: Some("m@x".into()),
        }
    }

    #[tokio::test]
    async fn what_an_answer_means_for_retries() {
        let ct = Some("application/soap+xml");
        let receipt = Bytes::from(write::receipt_envelope(&info(), &ventanilla_testkit::wire::user_message("u@x")));
        assert_eq!(interpret("m@x", 200, ct, &receipt).await.0, Outcome::Receipt);
        assert!(
            matches!(interpret("other@x", 200, ct, &receipt).await.0, Outcome::NoReceipt { .. }),
            "a receipt for another message"
        );
        let failure = EbmsError::new(EbmsCode::ValueNotRecognized, "unknown").with_ref(Some("m@x"));
        let error = Bytes::from(write::error_envelope(&info(), &[failure]));
        match interpret("m@x", 400, ct, &error).await.0 {
            Outcome::Refused { error, .. } => {
                assert_eq!((error.code.as_str(), error.verified), ("EBMS:0001", false), "verified later, by signature");
                assert!(error.description.contains("unknown"), "{error:?}");
            }
            other => panic!("an ebMS failure is a refusal: {other:?}"),
        }
        let warning = EbmsError::new(EbmsCode::EmptyMessagePartitionChannel, "empty").with_ref(Some("m@x"));
        let warn = Bytes::from(write::error_envelope(&info(), &[warning]));
        match interpret("m@x", 200, ct, &warn).await.0 {
            Outcome::NoReceipt { error: Some(e), .. } => {
                assert_eq!((e.code.as_str(), e.severity.as_str()), ("EBMS:0006", "warning"))
            }
            other => panic!("a warning is no receipt, and is kept: {other:?}"),
        }
        assert!(matches!(
            interpret("m@x", 503, Some("text/html"), &Bytes::from_static(b"<html/>")).await.0,
            Outcome::NoReceipt { error: None, .. }
        ));
        assert!(matches!(interpret("m@x", 500, None, &Bytes::new()).await.0, Outcome::NoReceipt { .. }));
    }
}
