//! The inbound pipeline: read MIME → parse header → match P-Mode → authorize partner →
//! decrypt → verify → check payloads → decompress → validate payload → detect duplicate and
//! persist → answer with a receipt or an error.
//!
//! # Cancellation
//! The whole pipeline runs as an owned task ([`receive_as`] spawns it and only awaits its
//! answer): when the partner's connection closes, the HTTP request future is dropped, but the
//! pipeline is not. Its `.await`s, one by one:
//! - reading the body (`read_mime`): nothing is committed yet; a closed connection ends the
//!   stream with an error, the staged files are removed, nothing is kept.
//! - one `spawn_blocking` job for decrypt, verify, decompress, payload validation and the
//!   signed answer ([`examine`]), then the rename of the staged files to their final place
//!   ([`keep_staging`]); no commit. A blocking job runs to its end even if nothing awaits it.
//! - `persist_and_answer`: the row is inserted. From the rename on, the files are never
//!   removed by a guard, only by an explicit decision once the store has answered (a
//!   duplicate, or a definite refusal), and files a crash left unreferenced are swept at
//!   start ([`crate::store::files::sweep_orphans`]).
//! - pull signals (`handle_signals`): store reads and compare-and-set transitions (a receipt's
//!   retried for about a minute while the store fails), inside the same owned task.

use super::AccessPoint;
use crate::ebms::read::{Envelope, EnvelopeError, read_envelope};
use crate::ebms::tree::Limits as XmlLimits;
use crate::ebms::{EbmsCode, EbmsError, MessageInfo, Signal, UserMessage, write};
use crate::lifecycle::Creation;
use crate::mime::{self, Packaging};
use crate::pmode::{Matched, Profile};
use crate::store::files::{FileSink, MessageFiles, SunkPart};
use crate::store::{Inserted, NewMessage, StoredPayload};
use crate::transport::PeerCertificates;
use bytes::Bytes;
use futures_util::Stream;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use tracing::Instrument;

/// What goes back on the HTTP response.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    /// A streamed body instead of `body` (a pulled message), with its Content-Type.
    pub stream: Option<(String, crate::transport::BodyStream)>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Reply({}, {} bytes{})",
            self.status,
            self.body.len(),
            if self.stream.is_some() { ", streamed" } else { "" }
        )
    }
}

impl Reply {
    fn soap(status: u16, xml: String) -> Reply {
        Reply { status, body: xml.into_bytes(), stream: None }
    }
}

/// The files of one request in the staging folder (see [`MessageFiles`]), removed unless the
/// message is kept.
pub(crate) struct Staging {
    pub(crate) files: MessageFiles,
    /// Whether any file may have been written: only then does a request that is not kept look
    /// for its files (a signal has none).
    pub(crate) may_hold_files: bool,
    /// The files in their final place once kept ([`keep_staging`]); from then on removed only
    /// by an explicit decision (see the module doc).
    pub(crate) kept: Option<Vec<PathBuf>>,
}

impl Staging {
    pub(crate) fn new(folder: PathBuf) -> Self {
        Staging { files: MessageFiles::new(folder), may_hold_files: false, kept: None }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.kept.is_none() && self.may_hold_files {
            self.files.remove_listed();
        }
    }
}

enum Rejection {
    Ebms(EbmsError),
    MustUnderstand(String),
}

impl From<EbmsError> for Rejection {
    fn from(e: EbmsError) -> Self {
        Rejection::Ebms(e)
    }
}

impl From<EnvelopeError> for Rejection {
    fn from(e: EnvelopeError) -> Self {
        match e {
            EnvelopeError::MustUnderstand(h) => Rejection::MustUnderstand(h),
            EnvelopeError::Ebms(e) => Rejection::Ebms(e),
        }
    }
}

pub async fn receive<S, E>(ap: Arc<AccessPoint>, peer: PeerCertificates, content_type: Option<String>, body: S) -> Reply
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + std::fmt::Display + 'static,
{
    receive_as(ap, peer, false, content_type, body).await
}

/// [`receive`], for a message this access point pulled (no TLS client certificate to check:
/// we authenticated the holder's server).
pub async fn receive_as<S, E>(
    ap: Arc<AccessPoint>,
    peer: PeerCertificates,
    pulled: bool,
    content_type: Option<String>,
    body: S,
) -> Reply
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + std::fmt::Display + 'static,
{
    let span = tracing::info_span!(
        "inbound",
        message_id = tracing::field::Empty,
        partner = tracing::field::Empty,
        pmode = tracing::field::Empty
    );
    let tasks = ap.tasks.clone();
    let pipeline = async move {
        let started = std::time::Instant::now();
        let mut staging = Staging::new(ap.tmp_dir());
        let mut seen = Seen::default();
        let outcome = process(&ap, &peer, pulled, content_type.as_deref(), body, &mut staging, &mut seen).await;
        ap.ops.metrics.inbound_seconds.observe(started.elapsed().as_secs_f64());
        let (code, detail, reply) = match outcome {
            Ok(reply) => return reply,
            Err(Rejection::MustUnderstand(header)) => {
                tracing::warn!(header, "refused: mustUnderstand header not processed");
                let detail = format!("header {header} not understood");
                ("SOAP:MustUnderstand".to_owned(), detail, Reply::soap(400, write::must_understand_fault(&header)))
            }
            Err(Rejection::Ebms(error)) => {
                tracing::warn!(code = error.code.code(), detail = %error.detail, "refused with an ebMS error");
                let (code, detail) = (error.code.code().to_owned(), error.detail.clone());
                (code, detail, error_reply(&ap, error, seen.matched.as_ref()))
            }
        };
        record_refusal(&ap, &peer, seen, code, detail).await;
        reply
    }
    .instrument(span);
    // Owned: the request future may be dropped (the partner hung up); the pipeline is not.
    match tasks.spawn(pipeline).await {
        Ok(reply) => reply,
        Err(e) => {
            tracing::error!(error = %e, "the inbound pipeline task failed");
            Reply::soap(
                500,
                write::error_envelope(
                    &MessageInfo {
                        timestamp: crate::clock::timestamp_now(),
                        message_id: crate::clock::new_message_id("ventanilla.invalid"),
                        ref_to_message_id: None,
                    },
                    &[EbmsError::new(EbmsCode::DeliveryFailure, "internal failure; try again later")],
                ),
            )
        }
    }
}

/// What the pipeline learnt about a request before it was refused.
#[derive(Default)]
struct Seen {
    matched: Option<Matched>,
    message_id: Option<String>,
    /// The start of the SOAP envelope as received.
    header: Vec<u8>,
}

/// Counts a refused request and keeps a record of it for the console (bounded in count and
/// age). Runs in the owned pipeline task.
async fn record_refusal(ap: &AccessPoint, peer: &PeerCertificates, seen: Seen, code: String, detail: String) {
    let partner = seen.matched.as_ref().and_then(|m| m.link.partner_of(ap.me())).map(|p| p.id.clone());
    let refusal = crate::store::NewRefusal {
        at_ms: crate::store::now_ms(),
        remote: peer.1.map(|a| a.ip().to_string()),
        partner,
        message_id: seen.message_id,
        code,
        detail,
        header: seen.header,
    };
    store_refusal(ap, refusal).await;
}

/// Counts a refused request (AS4 or IOP) and keeps its record, bounded in count and age.
pub(crate) async fn store_refusal(ap: &AccessPoint, refusal: crate::store::NewRefusal) {
    ap.ops.metrics.error_sent(&refusal.code);
    ap.ops
        .metrics
        .refused
        .get_or_create(&crate::ops::metrics::ErrorLabels { code: refusal.code.clone(), side: "sent".into() })
        .inc();
    let (keep, age) = ap
        .config
        .console
        .as_ref()
        .map(|c| (c.refusals_kept, c.refusals_age.0))
        .unwrap_or((10_000, std::time::Duration::from_secs(30 * 86_400)));
    if let Err(e) = ap.store.record_refusal(refusal, keep, age.as_millis() as i64).await {
        tracing::warn!(error = %e, "cannot record the refused message for the console");
    }
}

/// An error signal; signed when the link is known and signs (peers such as Domibus refuse
/// unsigned errors), unsigned when we could not even tell the link.
pub(crate) fn error_reply(ap: &AccessPoint, error: EbmsError, matched: Option<&Matched>) -> Reply {
    let info = MessageInfo {
        timestamp: crate::clock::timestamp_now(),
        message_id: crate::clock::new_message_id(&ap.config.host),
        ref_to_message_id: error.ref_to_message_id.clone(),
    };
    let status = status_for(error.code);
    let builder = write::error_builder(&info, &[error]);
    let xml = matched.and_then(|m| sign_signal(ap, m, &builder)).unwrap_or_else(|| builder.build(""));
    Reply::soap(status, xml)
}

/// The HTTP status an error signal goes back with.
fn status_for(code: EbmsCode) -> u16 {
    match code.severity() {
        crate::ebms::error::Severity::Warning => 200,
        _ if code.is_receiver_fault() => 500,
        _ => 400,
    }
}

/// The HTTP status of a stored answer (a duplicate gets the first copy's answer again),
/// decided from the parsed signal: a receipt is 200, an error as [`error_reply`] sent it.
fn status_of_stored_answer(answer: &[u8]) -> u16 {
    let Ok(envelope) = read_envelope(answer, XmlLimits::default()) else { return 500 };
    for signal in &envelope.messaging.signals {
        match &signal.signal {
            Signal::Receipt { .. } => return 200,
            Signal::Errors(errors) => {
                let code = errors.iter().find(|e| e.is_failure()).or(errors.first());
                return code.and_then(|e| EbmsCode::from_code(&e.code)).map_or(400, status_for);
            }
            Signal::PullRequest { .. } => {}
        }
    }
    500
}

/// Signs a receipt or error with our key for the link's profile; None on a 'none' link.
pub(crate) fn sign_signal(ap: &AccessPoint, matched: &Matched, builder: &write::EnvelopeBuilder) -> Option<String> {
    let keys = ap.security.for_profile(matched.link.profile)?;
    match crate::wss::sign::sign_envelope(builder, &keys.sign, matched.link.token_reference, &[], "") {
        Ok(xml) => Some(xml),
        Err(e) => {
            tracing::error!(error = %e, "cannot sign a signal; sending it unsigned");
            None
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn process<S, E>(
    ap: &Arc<AccessPoint>,
    peer: &PeerCertificates,
    pulled: bool,
    content_type: Option<&str>,
    body: S,
    staging: &mut Staging,
    seen: &mut Seen,
) -> Result<Reply, Rejection>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + std::fmt::Display + 'static,
{
    let (envelope_bytes, parts) = read_mime(ap, content_type, body, staging).await?;
    seen.header = envelope_bytes[..envelope_bytes.len().min(crate::store::operations::REFUSAL_HEADER_BYTES)].to_vec();
    let envelope = parse_header(&envelope_bytes, ap.config.envelope_limits())?;
    let Some(um) = envelope.messaging.user_message.clone() else {
        return Ok(super::pull::handle_signals(ap, &envelope, &envelope_bytes).await);
    };
    let span = tracing::Span::current();
    span.record("message_id", um.info.message_id.as_str());
    seen.message_id = Some(um.info.message_id.clone());
    let matched = match_pmode(ap, &um)?;
    span.record("pmode", matched.link.id.as_str());
    if let Some(partner) = matched.link.partner_of(ap.me()) {
        span.record("partner", partner.id.as_str());
    }
    seen.matched = Some(matched.clone());
    authorize_partner(ap, peer, pulled, &matched, &um, &envelope)?;
    check_freshness(&matched, &um)?;
    // The CPU-bound steps and the move of the payloads to their final place run as one job off
    // the async workers: one hand-off per message, not one per step.
    let (ap2, matched2, um2) = (ap.clone(), matched.clone(), um.clone());
    let bytes = envelope_bytes.clone();
    let staging_folder = staging.files.folder().to_path_buf();
    let (examined, kept) = crate::blocking::spawn(move || {
        let mut examined = examine(&ap2, &matched2, &um2, &envelope, &bytes, parts)?;
        // The files the row will name, durable in their final place (the received parts and
        // intermediates were only written).
        let kept = match &mut examined {
            Examined::Deliver(payloads, _, held) if !payloads.is_empty() => {
                let named: Vec<std::ffi::OsString> =
                    payloads.iter().filter_map(|p| p.path.file_name().map(ToOwned::to_owned)).collect();
                Some(keep_staging(&ap2, &staging_folder, &named, std::mem::take(held)))
            }
            _ => None,
        };
        Ok::<_, Rejection>((examined, kept))
    })
    .await
    .map_err(|e| {
        EbmsError::new(EbmsCode::DeliveryFailure, format!("processing task failed: {e}"))
            .with_ref(Some(&um.info.message_id))
    })??;
    let (payloads, answer) = match examined {
        Examined::TestService(reply) => {
            tracing::info!("test service message answered with a receipt, not delivered");
            if let Some(partner) = matched.link.partner_of(ap.me()) {
                ap.ops.metrics.receipt("sent", &partner.id);
            }
            return Ok(reply);
        }
        Examined::Deliver(payloads, answer, _) => (payloads, answer),
    };
    persist_and_answer(ap, &matched, &um, envelope_bytes, Received { payloads, kept }, answer, staging).await
}

/// What the examining job decided.
enum Examined {
    /// A test service message: answered with a receipt, not delivered.
    TestService(Reply),
    /// The payloads as they will be delivered, the answer (a receipt, or an error for a
    /// payload the handler refused), and the payloads' bytes that were held in memory.
    Deliver(Vec<StoredPayload>, Answer, Held),
}

/// Steps: decrypt → verify → check payloads → decompress → validate payload, and the signed
/// answer. Blocking (files, libxml2, OpenSSL); works on the staged files only, no commit.
fn examine(
    ap: &AccessPoint,
    matched: &Matched,
    um: &UserMessage,
    envelope: &Envelope,
    envelope_bytes: &[u8],
    parts: Vec<SunkPart>,
) -> Result<Examined, Rejection> {
    let (parts, references) = if matched.link.profile.is_secure() {
        unprotect(ap, matched, um, envelope_bytes, parts)?
    } else {
        (parts, Vec::new())
    };
    let payloads = check_payloads(matched, um, envelope, &parts)?;
    let (payloads, held) = decompress(matched, um, payloads, parts)?;
    let Some(leg) = matched.leg() else {
        return Ok(Examined::TestService(Reply::soap(200, receipt(ap, matched, um, &references))));
    };
    // Step: validate payload, before anything reaches the backend.
    let verdict = match payloads.first() {
        Some(first) => {
            let sender = matched.link.partner_of(ap.me()).map(|p| p.id.clone()).unwrap_or_default();
            let content = held
                .first()
                .and_then(Option::as_deref)
                .map_or((&first.path).into(), crate::wss::content::Content::Memory);
            super::documents::inspect(&ap.documents, &matched.link, leg, &sender, ap.me(), content)
        }
        None => Ok(None),
    };
    let answer = match verdict {
        Ok(document) => Answer {
            creation: Creation::Received,
            reply: Reply::soap(200, receipt(ap, matched, um, &references)),
            document: document.and_then(|d| serde_json::to_value(d).ok()),
        },
        Err(super::documents::DocumentProblem::Unreadable(e)) => {
            // Our own trouble (disk), not the sender's: answer an error, keep nothing.
            return Err(EbmsError::new(EbmsCode::DeliveryFailure, format!("cannot read the received payload: {e}"))
                .with_ref(Some(&um.info.message_id))
                .into());
        }
        Err(problem) => {
            use super::documents::DocumentProblem;
            let code = match &problem {
                DocumentProblem::Invalid(_) => EbmsCode::Other,
                DocumentProblem::Inconsistent(_) => EbmsCode::ValueInconsistent,
                DocumentProblem::Unreadable(_) => EbmsCode::DeliveryFailure,
            };
            let error = EbmsError::new(code, format!("payload refused: {problem}")).with_ref(Some(&um.info.message_id));
            tracing::warn!(code = code.code(), detail = %error.detail, "payload refused");
            let text = format!("{}: {}", code, error.detail);
            Answer {
                creation: Creation::RefusedForContent { reason: text },
                reply: error_reply(ap, error, Some(matched)),
                document: None,
            }
        }
    };
    Ok(Examined::Deliver(payloads, answer, held))
}

/// Steps: decrypt, then verify (docs/as4.md §4.2 items 6-8). The parts come back as their
/// decrypted files; the ciphertext files are removed.
fn unprotect(
    ap: &AccessPoint,
    matched: &Matched,
    um: &UserMessage,
    envelope: &[u8],
    parts: Vec<SunkPart>,
) -> Result<(Vec<SunkPart>, Vec<crate::wss::verify::VerifiedReference>), Rejection> {
    use crate::wss::decrypt::{EncryptedFile, decrypt_parts};
    use crate::wss::verify::{PartToVerify, verify_envelope};
    let id = Some(um.info.message_id.as_str());
    let with_ref = |e: EbmsError| Rejection::Ebms(e.with_ref(id));
    let link = &matched.link;
    let suite = crate::wss::profile::suite(link.profile)
        .ok_or_else(|| with_ref(EbmsError::new(EbmsCode::PolicyNoncompliance, "no security suite")))?;
    let keys = ap.security.for_profile(link.profile).ok_or_else(|| {
        with_ref(EbmsError::new(
            EbmsCode::PolicyNoncompliance,
            format!("this access point has no keys for {}", link.profile.as_str()),
        ))
    })?;
    let partner = link
        .partner_of(ap.me())
        .ok_or_else(|| with_ref(EbmsError::new(EbmsCode::ProcessingModeMismatch, "no partner")))?;
    let xml = crate::wss::xml::Xml::parse(envelope)
        .map_err(|e| with_ref(EbmsError::new(EbmsCode::InvalidHeader, e.to_string())))?;
    let files: Vec<EncryptedFile> = parts
        .iter()
        .map(|p| EncryptedFile {
            content_id: &p.content_id,
            path: &p.path,
            overwrite: true,
            in_memory: p.unwritten.as_deref(),
        })
        .collect();
    let decrypted = decrypt_parts(&xml, &files, suite.key_transport, &keys.enc).map_err(with_ref)?;
    let content_type = |cid: &str, from_ed: &Option<String>| -> String {
        from_ed
            .clone()
            .or_else(|| {
                um.parts
                    .iter()
                    .find(|p| p.content_id() == Some(cid))
                    .and_then(|p| p.property("MimeType"))
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "application/octet-stream".into())
    };
    let types: Vec<String> = decrypted.iter().map(|d| content_type(&d.content_id, &d.content_type)).collect();
    let to_verify: Vec<PartToVerify> = decrypted
        .iter()
        .zip(&types)
        .map(|(d, t)| PartToVerify {
            content_id: &d.content_id,
            content_type: t,
            content: match &d.plain {
                Some(plain) => crate::wss::content::Content::Memory(plain),
                None => (&d.path).into(),
            },
        })
        .collect();
    let verified =
        verify_envelope(&xml, &to_verify, suite.signature_method, &|r| ap.security.partner_signer(partner, r))
            .map_err(with_ref)?;
    tracing::info!(signer = %crate::pki::trust::subject_of(&verified.signer), "decrypted and verified");
    let mut plain = Vec::new();
    let disk = |e: std::io::Error| with_ref(EbmsError::new(EbmsCode::DeliveryFailure, e.to_string()));
    let compressed_ids = compressed_parts(um);
    for (part, d) in parts.into_iter().zip(decrypted) {
        if part.path != d.path {
            let _ = std::fs::remove_file(&part.path);
        }
        // A compressed part is hashed as it is decompressed, next; hashing its gzip is wasted.
        // It stays in memory for that if it was decrypted there.
        let compressed = compressed_ids.contains(d.content_id.as_str());
        let sha256 = match (&d.plain, compressed) {
            (_, true) => String::new(),
            (Some(bytes), false) => hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes)),
            (None, false) => crate::store::files::sha256_file(&d.path).map_err(disk)?,
        };
        plain.push(SunkPart {
            content_id: d.content_id,
            content_type: content_type(&part.content_id, &d.content_type),
            path: d.path,
            size: d.size,
            sha256,
            unwritten: d.plain,
        });
    }
    Ok((plain, verified.references))
}

/// Step: read MIME. Payload parts stream to their staging files.
async fn read_mime<S, E>(
    ap: &AccessPoint,
    content_type: Option<&str>,
    body: S,
    staging: &mut Staging,
) -> Result<(Vec<u8>, Vec<SunkPart>), Rejection>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + std::fmt::Display + 'static,
{
    let max_total = ap.config.max_message_bytes();
    let limits = mime::Limits { max_total_bytes: max_total, ..mime::Limits::default() };
    match mime::parse_packaging(content_type)? {
        Packaging::Soap => {
            use futures_util::StreamExt;
            let mut bytes = Vec::new();
            let mut body = body;
            while let Some(chunk) = body.next().await {
                let chunk =
                    chunk.map_err(|e| EbmsError::new(EbmsCode::MimeInconsistency, format!("reading the body: {e}")))?;
                if bytes.len() + chunk.len() > limits.max_envelope_bytes {
                    return Err(EbmsError::new(EbmsCode::MimeInconsistency, "SOAP envelope too large").into());
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok((bytes, Vec::new()))
        }
        Packaging::Multipart { boundary, start } => {
            let mut sink = FileSink::new(staging.files.clone(), max_total);
            let read = mime::read_multipart(body, &boundary, start.as_deref(), limits, &mut sink).await;
            // A part begun may have a file (a large one streams to it), even if the read failed.
            staging.may_hold_files = !sink.parts.is_empty();
            let multipart = read?;
            debug_assert_eq!(multipart.parts.len(), sink.parts.len());
            Ok((multipart.envelope, sink.parts))
        }
    }
}

/// Step: parse the SOAP header (eb:Messaging).
fn parse_header(bytes: &[u8], limits: XmlLimits) -> Result<Envelope, Rejection> {
    Ok(read_envelope(bytes, limits)?)
}

/// Step: match the header to exactly one P-Mode leg.
fn match_pmode(ap: &AccessPoint, um: &UserMessage) -> Result<Matched, Rejection> {
    Ok(ap.pmodes().match_incoming(ap.me(), um)?)
}

/// Step: authorize the partner: the link's security profile, and its TLS client certificate
/// when the link requires client authentication.
fn authorize_partner(
    ap: &AccessPoint,
    peer: &PeerCertificates,
    pulled: bool,
    matched: &Matched,
    um: &UserMessage,
    envelope: &Envelope,
) -> Result<(), Rejection> {
    let id = Some(um.info.message_id.as_str());
    let link = &matched.link;
    match link.profile {
        Profile::None if !ap.config.allow_insecure_profile => {
            return Err(EbmsError::new(
                EbmsCode::PolicyNoncompliance,
                format!("P-Mode {} has profile 'none', which this access point does not allow", link.id),
            )
            .with_ref(id)
            .into());
        }
        Profile::None => {
            if envelope.has_security_header {
                tracing::debug!("wsse:Security present on a 'none' link; not processed");
            }
        }
        Profile::Edelivery115 | Profile::Edelivery20 => {}
    }
    if link.tls_client_auth && !pulled {
        let partner =
            link.partner_of(ap.me()).ok_or_else(|| EbmsError::new(EbmsCode::ProcessingModeMismatch, "no partner"))?;
        let expected = partner
            .tls_cert
            .as_deref()
            .map(crate::transport::tls::load_certs)
            .transpose()
            .map_err(|e| {
                // The file's path and error stay in our log; the partner learns the link only.
                tracing::error!(error = %e, "cannot load the partner's TLS certificate named by the P-Mode");
                EbmsError::new(
                    EbmsCode::Other,
                    format!("P-Mode {}: the partner's TLS certificate cannot be loaded", link.id),
                )
                .with_ref(id)
            })?
            .unwrap_or_default();
        let presented = peer.0.first();
        if presented.is_none() || expected.first() != presented {
            return Err(EbmsError::new(
                EbmsCode::FailedAuthentication,
                format!("P-Mode {} requires TLS client authentication as {}; the connection did not present its certificate", link.id, partner.id),
            )
            .with_ref(id)
            .into());
        }
    }
    Ok(())
}

/// Step: check freshness. Cheap and needing no trust, so before decryption: an eb:Timestamp
/// from the future (past the link's clock skew) or older than the link's max_age (at most its
/// duplicate window, within which a replayed MessageId is recognised) is refused.
fn check_freshness(matched: &Matched, um: &UserMessage) -> Result<(), Rejection> {
    matched
        .link
        .check_timestamp(&um.info.timestamp, time::OffsetDateTime::now_utc())
        .map_err(|detail| EbmsError::new(EbmsCode::Other, detail).with_ref(Some(&um.info.message_id)).into())
}

/// Step: check PayloadInfo against the MIME parts and the leg.
fn check_payloads(
    matched: &Matched,
    um: &UserMessage,
    envelope: &Envelope,
    parts: &[SunkPart],
) -> Result<Vec<StoredPayload>, Rejection> {
    let id = Some(um.info.message_id.as_str());
    let err = |code, detail: String| Rejection::Ebms(EbmsError::new(code, detail).with_ref(id));
    // Looked up by Content-ID (unique: the MIME reader refuses a repeated one), so the step
    // stays linear in the number of parts.
    let by_content_id: HashMap<&str, &SunkPart> = parts.iter().map(|p| (p.content_id.as_str(), p)).collect();
    let mut payloads = Vec::new();
    for part_info in &um.parts {
        let Some(cid) = part_info.content_id() else {
            return Err(match part_info.href.as_deref() {
                None | Some("") if envelope.body_children > 0 => err(
                    EbmsCode::FeatureNotSupportedInconsistency,
                    "payloads in the SOAP Body are not supported; send them as MIME parts".into(),
                ),
                Some(h) if h.starts_with('#') => err(
                    EbmsCode::FeatureNotSupportedInconsistency,
                    format!("payload {h} in the SOAP Body is not supported; send it as a MIME part"),
                ),
                other => {
                    err(EbmsCode::ExternalPayloadError, format!("PartInfo href {other:?} is not a cid: reference"))
                }
            });
        };
        let part = by_content_id
            .get(cid)
            .ok_or_else(|| err(EbmsCode::ExternalPayloadError, format!("PartInfo cid:{cid} matches no MIME part")))?;
        if let Some(kind) = part_info.property("CompressionType") {
            if kind != crate::compress::GZIP {
                return Err(err(
                    EbmsCode::DecompressionFailure,
                    format!("part cid:{cid}: CompressionType '{kind}' is not application/gzip"),
                ));
            }
            if part_info.property("MimeType").is_none() {
                return Err(err(
                    EbmsCode::ValueInconsistent,
                    format!("part cid:{cid} is compressed but has no MimeType property"),
                ));
            }
        }
        if let Some(leg) = matched.leg()
            && part.size > leg.max_payload
        {
            return Err(err(
                EbmsCode::ValueInconsistent,
                format!(
                    "part cid:{cid} has {} bytes; P-Mode {} leg '{}' allows {}",
                    part.size, matched.link.id, leg.name, leg.max_payload
                ),
            ));
        }
        let mime_type = part_info.property("MimeType").map(str::to_owned).unwrap_or_else(|| part.content_type.clone());
        payloads.push(StoredPayload {
            content_id: cid.to_owned(),
            mime_type,
            path: part.path.clone(),
            size: part.size,
            sha256: part.sha256.clone(),
            // Cleaned: a partner's name becomes a file name on our disks and in our folders.
            filename: part_info.property(super::outbound::FILE_NAME).map(crate::backend::safe_file_name),
            wire_type: None,
        });
    }
    let referenced: HashSet<&str> = um.parts.iter().filter_map(|pi| pi.content_id()).collect();
    if let Some(extra) = parts.iter().find(|p| !referenced.contains(p.content_id.as_str())) {
        return Err(err(
            EbmsCode::ExternalPayloadError,
            format!("MIME part <{}> is not referenced by any PartInfo", extra.content_id),
        ));
    }
    if let Some(leg) = matched.leg() {
        for required in &leg.required_properties {
            if !um.properties.iter().any(|p| &p.name == required) {
                return Err(err(
                    EbmsCode::ProcessingModeMismatch,
                    format!(
                        "required message property '{required}' is missing (P-Mode {} leg '{}')",
                        matched.link.id, leg.name
                    ),
                ));
            }
        }
    }
    Ok(payloads)
}

/// Step: decompress the parts whose PartInfo says CompressionType, bounded by the leg's
/// max_payload (a decompression bomb or corrupt gzip is EBMS:0303).
fn decompress(
    matched: &Matched,
    um: &UserMessage,
    payloads: Vec<StoredPayload>,
    parts: Vec<SunkPart>,
) -> Result<(Vec<StoredPayload>, Held), Rejection> {
    let id = Some(um.info.message_id.as_str());
    let limit = matched.leg().map(|l| l.max_payload).unwrap_or(crate::pmode::model::DEFAULT_MAX_PAYLOAD);
    let mut unwritten: HashMap<String, Vec<u8>> =
        parts.into_iter().filter_map(|p| Some((p.content_id, p.unwritten?))).collect();
    let compressed = compressed_parts(um);
    // Writing what was held in memory: our disk's trouble, not the sender's.
    let disk = |e: std::io::Error| {
        let detail = format!("cannot write a received part: {e}");
        Rejection::Ebms(EbmsError::new(EbmsCode::DeliveryFailure, detail).with_ref(id))
    };
    let mut out = Vec::with_capacity(payloads.len());
    let mut held = Vec::with_capacity(payloads.len());
    for p in payloads {
        let in_memory = unwritten.remove(&p.content_id);
        if !compressed.contains(p.content_id.as_str()) {
            if let Some(bytes) = &in_memory {
                crate::store::files::write_part(&p.path, bytes).map_err(disk)?;
            }
            out.push(p);
            held.push(in_memory);
            continue;
        }
        // A small part in place (see IN_MEMORY_MAX): no second file, no unlink; one held in
        // memory straight into its file.
        let small = in_memory.is_some() || p.size <= crate::wss::content::IN_MEMORY_MAX;
        let target = if small { p.path.clone() } else { p.path.with_extension("dec") };
        let refused = |e: crate::compress::CompressError| {
            Rejection::Ebms(
                EbmsError::new(EbmsCode::DecompressionFailure, format!("part cid:{}: {e}", p.content_id)).with_ref(id),
            )
        };
        // Held in memory: gunzipped there, written once and kept for the checks that follow,
        // unless it inflates past what a message may hold in memory (then it streams to its
        // file as before).
        let (gunzipped, plain) = if let Some(bytes) = in_memory {
            let cap = crate::store::files::SPOOL_IN_MEMORY as u64;
            let gunzip = || crate::compress::gunzip_held(&bytes, &target, limit, cap);
            // The staging folder is made at start; should it be gone, it is made again (a
            // failure to is ours, not the sender's gzip) rather than asked after each message.
            let result = match gunzip() {
                Err(crate::compress::CompressError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                    if let Some(folder) = target.parent() {
                        std::fs::create_dir_all(folder).map_err(disk)?;
                    }
                    gunzip()
                }
                other => other,
            };
            result.map_err(|e| match e {
                crate::compress::CompressError::Io(e) => disk(e),
                e => refused(e),
            })?
        } else if small {
            (crate::compress::gunzip_in_place(&p.path, limit).map_err(refused)?, None)
        } else {
            let gunzipped = crate::compress::gunzip_file(&p.path, &target, limit).map_err(refused)?;
            let _ = std::fs::remove_file(&p.path);
            (gunzipped, None)
        };
        let sha256 = hex::encode(gunzipped.sha256);
        out.push(StoredPayload { path: target, size: gunzipped.size, sha256, ..p });
        held.push(plain);
    }
    Ok((out, held))
}

/// The bytes of each payload's file (by index) when the receiver held them in memory: the
/// payload check and the row's copy take them from here instead of reading the file back.
type Held = Vec<Option<Vec<u8>>>;

/// The Content-IDs whose PartInfo says CompressionType (decompressed, and hashed then),
/// gathered once per message so that looking a part up stays linear in the number of parts.
fn compressed_parts(um: &UserMessage) -> HashSet<&str> {
    um.parts.iter().filter(|pi| pi.property("CompressionType").is_some()).filter_map(|pi| pi.content_id()).collect()
}

/// The receipt: on a signing link a signed non-repudiation receipt copying the references
/// we verified; otherwise a reception-awareness receipt with a copy of the user message.
fn receipt(
    ap: &AccessPoint,
    matched: &Matched,
    um: &UserMessage,
    references: &[crate::wss::verify::VerifiedReference],
) -> String {
    let info = MessageInfo {
        timestamp: crate::clock::timestamp_now(),
        message_id: crate::clock::new_message_id(&ap.config.host),
        ref_to_message_id: Some(um.info.message_id.clone()),
    };
    if matched.link.profile.is_secure() {
        let builder = write::receipt_builder(&info, &crate::wss::receipt::nrr_content(references));
        if let Some(signed) = sign_signal(ap, matched, &builder) {
            return signed;
        }
    }
    write::receipt_envelope(&info, um)
}

/// Moves the files named (by file name) from the staging folder to `inbound/` and makes them
/// and their new entries durable with the coming commit: copies for the row when small, else
/// one shared sync now (see [`crate::store::durability`]). Returns where they are and the
/// copies; on an error none of them is in `inbound/`. Blocking: call it from a blocking job,
/// which runs to its end whoever awaits it.
pub(crate) fn keep_staging(
    ap: &AccessPoint,
    staging: &std::path::Path,
    files: &[std::ffi::OsString],
    held: Held,
) -> Result<Kept, String> {
    let root = ap.config.data_dir.join("inbound");
    let mut moved: Vec<PathBuf> = Vec::with_capacity(files.len());
    for name in files {
        let (from, to) = (staging.join(name), root.join(name));
        // The inbound folder exists but the first time: created then, not tried for every file.
        let result = match std::fs::rename(&from, &to) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !root.exists() => std::fs::create_dir_all(&root)
                .map_err(|e| format!("cannot create the inbound folder: {e}"))
                .and_then(|()| std::fs::rename(&from, &to).map_err(|e| e.to_string())),
            other => other.map_err(|e| e.to_string()),
        };
        if let Err(e) = result {
            // No row will name these: back out of `inbound/` (the staging guard takes the rest).
            for done in &moved {
                let _ = std::fs::remove_file(done);
            }
            return Err(format!("cannot move received payloads: {e}"));
        }
        moved.push(to);
    }
    let named: Vec<&std::path::Path> = moved.iter().map(PathBuf::as_path).collect();
    let copies = ap
        .file_sync
        .secure(ap.store.keeps_file_copies(), &named, held, &[&root])
        .map_err(|e| format!("cannot make the payloads durable: {e}"))?;
    Ok(Kept { folder: root, files: moved, copies })
}

/// A message's files in their final place, with the copies that make them durable with the row
/// ([`keep_staging`]).
pub(crate) struct Kept {
    pub(crate) folder: PathBuf,
    pub(crate) files: Vec<PathBuf>,
    pub(crate) copies: Vec<crate::store::UnsyncedFile>,
}

/// A received message's payloads, and their files once in their final place.
struct Received {
    payloads: Vec<StoredPayload>,
    /// `None` when there are no payloads (nothing to move).
    kept: Option<Result<Kept, String>>,
}

/// [`keep_staging`] as a blocking job.
pub(crate) async fn commit_staging(
    ap: &Arc<AccessPoint>,
    staging: &std::path::Path,
    files: Vec<std::ffi::OsString>,
) -> Result<Kept, String> {
    let (ap, staging) = (ap.clone(), staging.to_owned());
    crate::blocking::spawn(move || keep_staging(&ap, &staging, &files, Vec::new()))
        .await
        .map_err(|e| format!("the file task failed: {e}"))?
}

/// Step: detect a duplicate, persist, and answer. The receipt is stored with the message in
/// one transaction, so a duplicate gets the very same receipt and is not delivered twice.
async fn persist_and_answer(
    ap: &AccessPoint,
    matched: &Matched,
    um: &UserMessage,
    envelope: Vec<u8>,
    received: Received,
    answer: Answer,
    staging: &mut Staging,
) -> Result<Reply, Rejection> {
    let Received { mut payloads, kept } = received;
    let id = Some(um.info.message_id.as_str());
    let failure = |what: &str, e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "{what}");
        Rejection::Ebms(EbmsError::new(EbmsCode::DeliveryFailure, format!("{what}; try again later")).with_ref(id))
    };
    let mut unsynced = Vec::new();
    if let Some(kept) = kept {
        let Kept { folder, files, copies } = kept.map_err(|e| failure("cannot keep the payloads", &e))?;
        unsynced = copies;
        // The files may be named by a committed row from here on (see the module doc).
        staging.kept = Some(files);
        for p in &mut payloads {
            if let Some(name) = p.path.file_name() {
                p.path = folder.join(name);
            }
        }
    }
    let leg = matched.leg().map(|l| l.name.clone()).unwrap_or_default();
    let partner = matched.link.partner_of(ap.me()).map(|p| p.id.clone()).unwrap_or_default();
    let sizes: Vec<u64> = payloads.iter().map(|p| p.size).collect();
    let metrics = &ap.ops.metrics;
    let partner_label = crate::ops::metrics::PartnerLabels { partner: partner.clone() };
    let message = NewMessage {
        message_id: um.info.message_id.clone(),
        conversation_id: um.conversation_id.clone(),
        pmode: matched.link.id.clone(),
        leg,
        partner,
        service: um.service.value.clone(),
        action: um.action.clone(),
        creation: answer.creation.clone(),
        envelope,
        response: Some(answer.reply.body.clone()),
        payloads,
        document: answer.document,
        transport: crate::pmode::Transport::As4,
        unsynced,
    };
    // From the rename on, the files may be referenced by a committed row even if the insert
    // below reports an error (or never returns: a crash); they are removed only on a definite
    // "not stored" and otherwise left for the orphan sweep, which checks the store.
    let outcome = ap.store.insert(message).await;
    let remove_final = || {
        for file in staging.kept.iter().flatten() {
            let _ = std::fs::remove_file(file);
        }
    };
    match outcome {
        Ok(Inserted::New(_)) => {
            if answer.creation == Creation::Received {
                tracing::info!("received, persisted and delivered to the backend inbox");
                metrics.receipt("sent", &partner_label.partner);
                for size in sizes {
                    metrics.payload(crate::store::Direction::Inbound, size);
                }
            } else {
                tracing::warn!("refused for its content; kept for inspection, not delivered");
                if let Creation::RefusedForContent { reason } = &answer.creation {
                    metrics.error_sent(reason.split(' ').next().unwrap_or("EBMS:0004"));
                }
            }
            Ok(answer.reply)
        }
        Ok(Inserted::Duplicate { response, state }) => {
            metrics.duplicates.get_or_create(&partner_label).inc();
            // Nothing was written for this copy: its payload files are ours to remove.
            remove_final();
            tracing::info!(
                first_copy = state.as_str(),
                "duplicate: answered with the stored answer, not delivered again"
            );
            // The stored answer is a receipt or, for a refused message, the same error.
            let body = response.unwrap_or(answer.reply.body);
            Ok(Reply { status: status_of_stored_answer(&body), body, stream: None })
        }
        Err(e) if e.definitely_not_stored() => {
            remove_final();
            Err(failure("cannot persist the message", &e))
        }
        Err(e) => Err(failure("cannot persist the message (the orphan sweep will check its files)", &e)),
    }
}

/// What is stored with a received message and sent back.
struct Answer {
    creation: Creation,
    reply: Reply,
    document: Option<serde_json::Value>,
}
