//! The legacy Pacific Alliance IOP transport (docs/iop.md) for legs with `transport = "iop"`:
//! the same lifecycle, store, inbox, events and console as AS4; only the wire differs.
//!
//! Pipeline steps. Submit: validate the SPS certificate (ePhyto rules, :11) → sign it when it
//! arrives unsigned → build the `Cabecera` (a fresh `IDdeTransaccion` = the message id) →
//! persist. Send (an attempt of the common sender): add the UsernameToken → POST → read the
//! `AcuseRecibo` (RCB: acknowledged; ERR or a client `MensajeFalla`: failed; no answer, HTTP
//! errors or a server fault: retried on the leg's schedule). Receive: read the request
//! (bounded, no DTD) → match the link by the IOP ids → check the UsernameToken → check the
//! `Cabecera` → verify the SPS signature → run the ePhyto handler → persist once per
//! `IDdeTransaccion` → answer RCB, or a fault whose `DetallesError` name each finding.
//!
//! # Cancellation
//! [`submit`] runs in the backend's owned submission task, like AS4's. [`receive`] runs the
//! whole pipeline as an owned task (it spawns it and only awaits the answer), so a legacy
//! node hanging up cancels nothing: its `.await`s are a blocking job that writes only its
//! staging file, the rename into the inbound folder (a blocking job, which runs to its end
//! whoever awaits it), `store.insert` (the commit), and recording a refusal. [`attempt`] is
//! awaited by the sender's `send_one`, inside its own task; the POST commits nothing.

use super::AccessPoint;
use super::outbound::{Outcome, Submission, SubmitError};
use crate::iop::soap::{self, ReadError};
use crate::iop::{Acuse, Answer, Cabecera, Codigo, Detalle, Envio, Falla, code};
use crate::lifecycle::{Creation, PartnerError};
use crate::pmode::{IopLink, IopParty, Link, Transport};
use crate::store::{Direction, Inserted, MessageRecord, NewMessage, StoredPayload};
use crate::transport::SendError;
use bytes::Bytes;
use std::sync::Arc;
use tracing::Instrument;

/// The IOP sides of a link: the link's `[iop]` table, our party and the partner's.
fn sides<'a>(ap: &AccessPoint, link: &'a Link) -> Result<(&'a IopLink, &'a IopParty, &'a IopParty), String> {
    let iop = link.iop.as_ref().ok_or_else(|| format!("P-Mode {} has no [iop] table", link.id))?;
    let me = link.party(ap.me()).and_then(|p| p.iop.as_ref());
    let partner = link.partner_of(ap.me()).and_then(|p| p.iop.as_ref());
    match (me, partner) {
        (Some(me), Some(partner)) => Ok((iop, me, partner)),
        _ => Err(format!("P-Mode {}: both parties need their IOP fields", link.id)),
    }
}

/// An `IDdeTransaccion` for a submission: a fresh UUID, or the backend's id when it fits the
/// type, else a stable digest of it (a repeated folder submission keeps its id).
fn transaction_id(requested: Option<&str>) -> String {
    match requested {
        Some(id) if crate::iop::is_transaction_id(id) => id.to_owned(),
        Some(id) => crate::util::short_hash(id.as_bytes()).chars().take(32).collect(),
        None => uuid::Uuid::new_v4().to_string(),
    }
}

/// Accepts an ePhyto for a partner on an IOP leg: after this returns, it is on disk and will
/// be sent.
pub async fn submit(
    ap: &AccessPoint,
    sub: Submission,
    link: Arc<Link>,
    leg_index: usize,
) -> Result<MessageRecord, SubmitError> {
    let refuse = |m: String| SubmitError::Refused(m);
    let leg = link.legs[leg_index].clone();
    let (iop, me, partner) = sides(ap, &link).map_err(refuse)?;
    let [payload] = sub.payloads.as_slice() else {
        return Err(refuse(format!(
            "an IOP message carries exactly one SPS certificate; {} payloads were submitted",
            sub.payloads.len()
        )));
    };
    if payload.size > leg.max_payload {
        return Err(refuse(format!(
            "the certificate has {} bytes; P-Mode {} leg '{}' allows {}",
            payload.size, link.id, leg.name, leg.max_payload
        )));
    }
    let original = sub.properties.iter().find(|(n, _, _)| n == "IDdeTransaccionOriginal").map(|(_, v, _)| v.clone());
    let message_id = transaction_id(sub.message_id.as_deref());
    let mut cabecera = Cabecera {
        codigo_interaccion: iop.codigo_interaccion.clone(),
        id_servicio: iop.id_servicio.clone(),
        id_remitente: me.id.clone(),
        pais_remitente: me.country.clone(),
        id_destinatario: partner.id.clone(),
        pais_destinatario: partner.country.clone(),
        id_transaccion: message_id.clone(),
        estado_transaccion: iop.estado_transaccion.clone(),
        fecha_hora: crate::clock::timestamp_now(),
        tipo_documento: iop.tipo_documento.clone(),
        id_documento: String::new(),
        id_transaccion_original: original,
    };
    let (registry, security) = (ap.documents.clone(), ap.security.clone());
    let (me_id, to) = (ap.me().to_owned(), sub.to.clone());
    let (path, algorithms, link2) = (payload.path.clone(), iop.signature, link.clone());
    let unwritten = sub.unwritten.clone();
    // Step: validate payload, then sign it if the backend did not.
    let (document, signed) = crate::blocking::spawn(move || {
        unwritten
            .write(&[path.as_path()])
            .map_err(|e| SubmitError::Refused(format!("cannot write the submitted certificate: {e}")))?;
        let document = super::documents::inspect(&registry, &link2, &leg, &me_id, &to, (&path).into())
            .map_err(|p| SubmitError::Refused(format!("the ephyto document is refused: {p}")))?
            .ok_or_else(|| SubmitError::Refused("an IOP leg needs document = \"ephyto\"".into()))?;
        let bytes = std::fs::read(&path).map_err(|e| SubmitError::Refused(format!("cannot read the payload: {e}")))?;
        let is_signed = crate::iop::certificate::is_signed(&bytes).map_err(SubmitError::Refused)?;
        let signed = if is_signed {
            crate::iop::certificate::verify(&bytes)
                .map_err(|e| SubmitError::Refused(format!("the submitted certificate's signature: {e}")))?;
            String::from_utf8(bytes).map_err(|_| SubmitError::Refused("the certificate is not UTF-8".into()))?
        } else {
            let signer = security.document_signer.as_ref().ok_or_else(|| {
                SubmitError::Refused(
                    "the certificate is unsigned and this access point has no document signing key ([iop] document_key or an edelivery-1.15 key)".into(),
                )
            })?;
            crate::iop::certificate::sign(&bytes, &signer.key, &signer.cert, algorithms)
                .map_err(|e| SubmitError::Refused(format!("cannot sign the certificate: {e}")))?
        };
        Ok::<_, SubmitError>((document, signed))
    })
    .await
    .map_err(|e| refuse(format!("signing task failed: {e}")))??;
    cabecera.id_documento = document.number.clone();
    if let Some(problem) = cabecera.check().first() {
        return Err(refuse(format!("cannot build the IOP Cabecera: {}", problem.mensaje)));
    }
    // The signed certificate replaces the submitted file: what the partner gets is what the
    // record and the evidence show.
    let signed_path = payload.path.with_extension("signed.xml");
    let (signed_bytes, target) = (signed.clone().into_bytes(), signed_path.clone());
    crate::blocking::spawn(move || {
        use std::io::Write;
        let mut file = std::fs::File::create(&target)?;
        file.write_all(&signed_bytes)?;
        file.sync_all()?;
        if let Some(dir) = target.parent() {
            crate::store::files::sync_dir(dir)?;
        }
        Ok::<_, std::io::Error>(())
    })
    .await
    .map_err(|e| refuse(format!("file task failed: {e}")))?
    .map_err(|e| refuse(format!("cannot write the signed certificate: {e}")))?;
    let stored = StoredPayload {
        path: signed_path,
        size: signed.len() as u64,
        sha256: hex::encode(openssl::sha::sha256(signed.as_bytes())),
        mime_type: "application/xml".into(),
        wire_type: None,
        ..payload.clone()
    };
    let envio = Envio { cabecera, signed_sps_cert: signed };
    let message = NewMessage {
        message_id: message_id.clone(),
        conversation_id: sub.conversation_id.clone().unwrap_or_else(|| message_id.clone()),
        pmode: link.id.clone(),
        leg: link.legs[leg_index].name.clone(),
        partner: sub.to.clone(),
        service: link.legs[leg_index].service.clone(),
        action: link.legs[leg_index].action.clone(),
        creation: Creation::Submitted { pull: false },
        envelope: soap::envio_body(&envio).into_bytes(),
        response: None,
        payloads: vec![stored],
        document: serde_json::to_value(&document).ok(),
        transport: Transport::Iop,
        unsynced: Vec::new(),
    };
    if let Inserted::Duplicate { .. } = ap.store.insert(message).await? {
        tracing::info!(message_id = %message_id, "submitted again; already accepted");
        return Ok(ap.store.get(Direction::Outbound, &message_id).await?);
    }
    ap.ops.metrics.payload(Direction::Outbound, payload.size);
    tracing::info!(message_id = %message_id, partner = %sub.to, transport = "iop", "submitted by the backend");
    ap.outbox.notify_one();
    Ok(ap.store.get(Direction::Outbound, &message_id).await?)
}

/// One attempt: the stored body with our UsernameToken, POSTed to the partner's IOP node.
pub async fn attempt(ap: &AccessPoint, record: &MessageRecord, link: &Link) -> Result<(Outcome, Vec<u8>), SendError> {
    let (iop, me, partner) = sides(ap, link).map_err(SendError::Connection)?;
    let password = me
        .password
        .read()
        .map_err(|e| SendError::Connection(format!("our IOP password ({}): {e}", me.password.describe())))?;
    let body =
        std::str::from_utf8(&record.envelope).map_err(|_| SendError::Connection("stored body is not UTF-8".into()))?;
    let request = soap::request_envelope(body, &me.username, &password);
    let response = ap
        .client
        .post_soap11(&ap.tls_identity(link), &partner.endpoint, &iop.soap_action, Bytes::from(request), link.timeout)
        .await?;
    Ok((interpret(&record.message_id, response.status, &response.body), response.body.to_vec()))
}

/// What a partner's IOP answer means for the message.
pub fn interpret(transaction: &str, status: u16, body: &[u8]) -> Outcome {
    let retry = |reason: String, error: Option<PartnerError>| Outcome::NoReceipt { reason, error };
    let refused = |code: &str, description: String| Outcome::Refused {
        reason: description.clone(),
        // Over server-authenticated TLS, unsigned: the IOP has no signed answers.
        error: PartnerError { code: code.to_owned(), severity: "failure".into(), description, verified: false },
    };
    match soap::read_answer(body) {
        Ok(Answer::Acuse(acuse)) if acuse.cabecera.id_transaccion != transaction => retry(
            format!(
                "HTTP {status}: an AcuseRecibo for transaction {}, not {transaction}",
                acuse.cabecera.id_transaccion
            ),
            None,
        ),
        Ok(Answer::Acuse(Acuse { codigo: Codigo::Recibido, .. })) => Outcome::Receipt,
        Ok(Answer::Acuse(Acuse { codigo: Codigo::Error, glosa, .. })) => {
            refused("IOP:ERR", format!("AcuseRecibo ERR: {glosa}"))
        }
        Ok(Answer::Fault { faultcode, faultstring, falla }) => {
            let detalles = falla.map(|f| f.detalles).unwrap_or_default();
            let described = if detalles.is_empty() {
                faultstring.clone()
            } else {
                detalles.iter().map(|d| format!("{} {}", d.codigo, d.mensaje)).collect::<Vec<_>>().join("; ")
            };
            let code = detalles.first().map(|d| d.codigo.clone()).unwrap_or_else(|| "IOP:FAULT".into());
            if faultcode.ends_with("Server") || detalles.is_empty() {
                // The node's own trouble, or no finding to act on: worth another try.
                let error =
                    PartnerError { code, severity: "warning".into(), description: described.clone(), verified: false };
                retry(format!("HTTP {status}: SOAP fault {faultcode}: {described}"), Some(error))
            } else {
                refused(&code, format!("MensajeFalla: {described}"))
            }
        }
        Err(ReadError(why)) => retry(format!("HTTP {status}, not an IOP answer: {why}"), None),
    }
}

/// What goes back to a legacy node: HTTP status and SOAP 1.1 body.
pub struct IopReply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A refusal: findings for the fault, and whether it is the sender's fault (SOAP Client) or ours.
struct Refusal {
    detalles: Vec<Detalle>,
    client: bool,
    partner: Option<String>,
}

impl Refusal {
    fn client(detalles: Vec<Detalle>) -> Refusal {
        Refusal { detalles, client: true, partner: None }
    }
}

/// Receives one `EnvioCertificadoFitosanitario` from a legacy node, as an owned task.
pub async fn receive(ap: Arc<AccessPoint>, remote: Option<std::net::SocketAddr>, body: Bytes) -> IopReply {
    let span = tracing::info_span!(
        "iop_inbound",
        message_id = tracing::field::Empty,
        partner = tracing::field::Empty,
        pmode = tracing::field::Empty
    );
    let tasks = ap.tasks.clone();
    let pipeline = async move {
        let mut cabecera = None;
        let outcome = process(&ap, &body, &mut cabecera).await;
        match outcome {
            Ok(reply) => reply,
            Err(refusal) => {
                let first =
                    refusal.detalles.first().cloned().unwrap_or_else(|| Detalle::new(code::MALFORMED, "refused"));
                tracing::warn!(code = %first.codigo, detail = %first.mensaje, "IOP request refused");
                let record = crate::store::NewRefusal {
                    at_ms: crate::store::now_ms(),
                    remote: remote.map(|a| a.ip().to_string()),
                    partner: refusal.partner.clone(),
                    message_id: cabecera.as_ref().map(|c: &Cabecera| c.id_transaccion.clone()),
                    code: format!("IOP:{}", first.codigo),
                    detail: refusal
                        .detalles
                        .iter()
                        .map(|d| format!("{} {}", d.codigo, d.mensaje))
                        .collect::<Vec<_>>()
                        .join("; "),
                    header: redacted_head(&body),
                };
                super::inbound::store_refusal(&ap, record).await;
                let falla = Falla { cabecera, detalles: refusal.detalles };
                IopReply { status: 500, body: soap::fault_envelope(&falla, refusal.client).into_bytes() }
            }
        }
    }
    .instrument(span);
    match tasks.spawn(pipeline).await {
        Ok(reply) => reply,
        Err(e) => {
            tracing::error!(error = %e, "the IOP pipeline task failed");
            let falla = Falla {
                cabecera: None,
                detalles: vec![Detalle::new(code::INTERNAL, "internal failure; try again later")],
            };
            IopReply { status: 500, body: soap::fault_envelope(&falla, false).into_bytes() }
        }
    }
}

/// The first KiB of a request for the console, with the password's text blanked.
fn redacted_head(body: &[u8]) -> Vec<u8> {
    let head = &body[..body.len().min(crate::store::operations::REFUSAL_HEADER_BYTES)];
    let head = String::from_utf8_lossy(head);
    let mut out = String::with_capacity(head.len());
    let mut rest: &str = &head;
    while let Some(at) = rest.find("Password") {
        let tag_end = rest[at..].find('>').map_or(rest.len(), |i| at + i + 1);
        out.push_str(&rest[..tag_end]);
        rest = &rest[tag_end..];
        let tag_start = out.rfind('<').unwrap_or(0);
        let is_start_tag = !out[tag_start..].starts_with("</") && !out.ends_with("/>");
        if is_start_tag {
            // The element's text, up to the next tag (or the cut).
            let text_end = rest.find('<').unwrap_or(rest.len());
            out.push_str("(redacted)");
            rest = &rest[text_end..];
        }
    }
    out.push_str(rest);
    out.into_bytes()
}

fn secret_eq(a: &str, b: &str) -> bool {
    // Equal lengths for the constant-time comparison, whatever the inputs.
    openssl::memcmp::eq(&openssl::sha::sha256(a.as_bytes()), &openssl::sha::sha256(b.as_bytes()))
}

async fn process(ap: &Arc<AccessPoint>, body: &Bytes, seen: &mut Option<Cabecera>) -> Result<IopReply, Refusal> {
    let max_document = crate::payload::MAX_DOCUMENT_BYTES;
    let request =
        soap::read_request(body, soap::limits(max_document)).map_err(|e| Refusal::client(vec![e.detalle()]))?;
    let cabecera = request.envio.cabecera.clone();
    *seen = Some(cabecera.clone());
    let span = tracing::Span::current();
    span.record("message_id", cabecera.id_transaccion.as_str());
    // Who claims to send, before anything else is judged.
    let pmodes = ap.pmodes();
    let (link, leg_index) = pmodes
        .match_iop(ap.me(), &cabecera.id_remitente, &cabecera.id_destinatario)
        .map_err(|e| Refusal::client(vec![Detalle::new(code::UNKNOWN_PARTY, e)]))?;
    let partner_id = link.partner_of(ap.me()).map(|p| p.id.clone()).unwrap_or_default();
    span.record("partner", partner_id.as_str());
    span.record("pmode", link.id.as_str());
    let with_partner = |detalles: Vec<Detalle>| Refusal { detalles, client: true, partner: Some(partner_id.clone()) };
    let (iop, _, partner) = sides(ap, &link).map_err(|e| with_partner(vec![Detalle::new(code::UNKNOWN_PARTY, e)]))?;
    // Step: authenticate. Username and password both compared in constant time.
    let expected = partner.password.read().map_err(|e| {
        tracing::error!(error = %e, source = %partner.password.describe(), "cannot read the partner's IOP password");
        Refusal {
            client: false,
            ..with_partner(vec![Detalle::new(code::INTERNAL, "credentials unavailable; try again later")])
        }
    })?;
    let user_ok = secret_eq(request.username.as_deref().unwrap_or(""), &partner.username);
    let password_ok = secret_eq(request.password.as_deref().unwrap_or(""), &expected);
    if !(user_ok & password_ok) {
        return Err(with_partner(vec![Detalle::new(code::AUTHENTICATION, "UsernameToken missing or not accepted")]));
    }
    // Step: check the Cabecera: its types, then that it is this link's.
    let mut findings = cabecera.check();
    let mut must_equal = |name: &str, found: &str, expected: &str| {
        if found != expected {
            findings.push(Detalle::new(
                code::CABECERA,
                format!("{name} '{found}' is not '{expected}' on P-Mode {}", link.id),
            ));
        }
    };
    let me = link.party(ap.me()).and_then(|p| p.iop.as_ref()).map(|p| p.country.clone()).unwrap_or_default();
    must_equal("PaisdeRemitente", &cabecera.pais_remitente, &partner.country);
    must_equal("PaisdeDestinatario", &cabecera.pais_destinatario, &me);
    must_equal("CodigoInteraccion", &cabecera.codigo_interaccion, &iop.codigo_interaccion);
    must_equal("IDdeServicio", &cabecera.id_servicio, &iop.id_servicio);
    must_equal("TipodeDocumento", &cabecera.tipo_documento, &iop.tipo_documento);
    if !findings.is_empty() {
        return Err(with_partner(findings));
    }
    // Steps: verify the SPS signature, run the ePhyto handler (off the async workers).
    let mut guard = super::inbound::Staging::new(ap.tmp_dir());
    guard.may_hold_files = true;
    let staging = guard.files.path(CERTIFICATE_FILE);
    let staged = staging.clone();
    let (ap2, link2, document_text) = (ap.clone(), link.clone(), request.envio.signed_sps_cert.clone());
    let id_documento = cabecera.id_documento.clone();
    let checked = crate::blocking::spawn(move || {
        check_certificate(&ap2, &link2, leg_index, &staged, document_text.as_bytes(), &id_documento)
    })
    .await
    .map_err(|e| Refusal {
        client: false,
        ..with_partner(vec![Detalle::new(code::INTERNAL, format!("task failed: {e}"))])
    })?
    .map_err(|(detalles, client)| Refusal { detalles, client, partner: Some(partner_id.clone()) })?;
    if checked.legacy {
        ap.ops
            .metrics
            .iop_legacy_signatures
            .get_or_create(&crate::ops::metrics::PartnerLabels { partner: partner_id.clone() })
            .inc();
        tracing::info!("SPS certificate signed with SHA-1 (accepted inside the IOP payload only)");
    }
    // Step: persist once per IDdeTransaccion, then answer.
    let acuse = Acuse {
        cabecera: cabecera.clone(),
        codigo: Codigo::Recibido,
        glosa: "Recibido".into(),
        fecha_hora: crate::clock::timestamp_now(),
    };
    let answer = soap::acuse_envelope(&acuse).into_bytes();
    let internal = |what: String| {
        tracing::error!(error = %what, "cannot persist an IOP message");
        Refusal {
            client: false,
            ..with_partner(vec![Detalle::new(code::INTERNAL, "cannot store the message; try again later")])
        }
    };
    let name = staging.file_name().map(ToOwned::to_owned).unwrap_or_default();
    let super::inbound::Kept { files: kept, copies: unsynced, .. } =
        super::inbound::commit_staging(ap, guard.files.folder(), vec![name]).await.map_err(internal)?;
    let certificate = kept.first().cloned().unwrap_or_default();
    guard.kept = Some(kept);
    let leg = &link.legs[leg_index];
    let message = NewMessage {
        message_id: cabecera.id_transaccion.clone(),
        conversation_id: cabecera.id_transaccion.clone(),
        pmode: link.id.clone(),
        leg: leg.name.clone(),
        partner: partner_id.clone(),
        service: leg.service.clone(),
        action: leg.action.clone(),
        creation: Creation::Received,
        // The body only: the request's header holds the partner's password.
        envelope: soap::envio_body(&request.envio).into_bytes(),
        response: Some(answer.clone()),
        payloads: vec![StoredPayload { path: certificate.clone(), ..checked.payload }],
        document: serde_json::to_value(&checked.document).ok(),
        transport: Transport::Iop,
        unsynced,
    };
    let size = message.payloads[0].size;
    match ap.store.insert(message).await {
        Ok(Inserted::New(_)) => {
            tracing::info!(transport = "iop", "received, persisted and delivered to the backend inbox");
            ap.ops.metrics.receipt("sent", &partner_id);
            ap.ops.metrics.payload(Direction::Inbound, size);
            Ok(IopReply { status: 200, body: answer })
        }
        Ok(Inserted::Duplicate { response, .. }) => {
            let _ = std::fs::remove_file(&certificate);
            ap.ops.metrics.duplicates.get_or_create(&crate::ops::metrics::PartnerLabels { partner: partner_id }).inc();
            tracing::info!("duplicate IDdeTransaccion: answered with the stored AcuseRecibo, not delivered again");
            Ok(IopReply { status: 200, body: response.unwrap_or(answer) })
        }
        // The file may be named by a committed row if the insert's outcome is unknown: left
        // for the orphan sweep, which checks the store.
        Err(e) => Err(internal(e.to_string())),
    }
}

const CERTIFICATE_FILE: &str = "certificate.xml";

struct Checked {
    payload: StoredPayload,
    document: crate::payload::Document,
    legacy: bool,
}

/// Verifies the certificate's signature and signer, writes it to its staging file (`path`)
/// and runs the leg's ePhyto handler. Errors are findings and whether the sender is at fault.
fn check_certificate(
    ap: &AccessPoint,
    link: &Link,
    leg_index: usize,
    path: &std::path::Path,
    document: &[u8],
    id_documento: &str,
) -> Result<Checked, (Vec<Detalle>, bool)> {
    let sender = |d: Detalle| (vec![d], true);
    let ours =
        |e: std::io::Error| (vec![Detalle::new(code::INTERNAL, format!("cannot stage the certificate: {e}"))], false);
    let verified = crate::iop::certificate::verify(document)
        .map_err(|e| sender(Detalle::new(code::SIGNATURE, format!("SPS certificate signature: {e}"))))?;
    let partner = link.partner_of(ap.me()).and_then(|p| p.iop.as_ref());
    match partner.and_then(|p| p.document_cert.as_deref()) {
        Some(bound) => {
            if verified.signer.to_der().ok().as_deref() != Some(bound) {
                return Err(sender(Detalle::new(
                    code::SIGNATURE,
                    format!(
                        "the certificate is signed by '{}', not by the document signer bound in P-Mode {}",
                        crate::pki::trust::subject_of(&verified.signer),
                        link.id
                    ),
                )));
            }
        }
        None => {
            let trust = ap.security.trust().ok_or_else(|| {
                sender(Detalle::new(code::SIGNATURE, "no document signer is bound and no truststore is configured"))
            })?;
            trust.validate(&verified.signer, &[]).map_err(|e| {
                sender(Detalle::new(code::SIGNATURE, format!("the SPS certificate's signer is not trusted: {e}")))
            })?;
        }
    }
    {
        use std::io::Write;
        let mut file = crate::store::files::create_in_place(path).map_err(ours)?;
        // Synced when it moves into place (`commit_staging`).
        file.write_all(document).map_err(ours)?;
    }
    let leg = &link.legs[leg_index];
    let sender_id = link.partner_of(ap.me()).map(|p| p.id.clone()).unwrap_or_default();
    let document_record = super::documents::inspect(&ap.documents, link, leg, &sender_id, ap.me(), path.into())
        .map_err(|problem| match problem {
            super::documents::DocumentProblem::Unreadable(e) => {
                (vec![Detalle::new(code::INTERNAL, format!("cannot read the staged certificate: {e}"))], false)
            }
            super::documents::DocumentProblem::Invalid(findings) => (
                findings
                    .iter()
                    .take(crate::iop::MAX_DETALLES)
                    .map(|f| Detalle::new(code::DOCUMENT, f.to_string()))
                    .collect(),
                true,
            ),
            other => sender(Detalle::new(code::DOCUMENT, other.to_string())),
        })?
        .ok_or_else(|| sender(Detalle::new(code::DOCUMENT, "the IOP leg names no document handler")))?;
    if document_record.number != id_documento {
        return Err(sender(Detalle::new(
            code::CABECERA,
            format!("IDdeDocumento '{id_documento}' is not the certificate's number '{}'", document_record.number),
        )));
    }
    Ok(Checked {
        payload: StoredPayload {
            content_id: "certificate@iop".into(),
            mime_type: "application/xml".into(),
            path: path.to_path_buf(),
            size: document.len() as u64,
            sha256: hex::encode(openssl::sha::sha256(document)),
            filename: Some(format!("{}.xml", crate::backend::safe_file_name(id_documento))),
            wire_type: None,
        },
        document: document_record,
        legacy: verified.is_legacy(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cabecera(id: &str) -> Cabecera {
        Cabecera { id_transaccion: id.into(), ..Cabecera::default() }
    }

    #[test]
    fn what_an_iop_answer_means() {
        let acuse = |codigo, id: &str| {
            soap::acuse_envelope(&Acuse { cabecera: cabecera(id), codigo, glosa: "g".into(), fecha_hora: "t".into() })
        };
        assert_eq!(
            interpret("T-000000000001", 200, acuse(Codigo::Recibido, "T-000000000001").as_bytes()),
            Outcome::Receipt
        );
        assert!(matches!(
            interpret("T-000000000001", 200, acuse(Codigo::Recibido, "T-000000000002").as_bytes()),
            Outcome::NoReceipt { .. }
        ));
        match interpret("T-000000000001", 200, acuse(Codigo::Error, "T-000000000001").as_bytes()) {
            Outcome::Refused { error, .. } => assert_eq!(error.code, "IOP:ERR"),
            other => panic!("{other:?}"),
        }
        let falla = Falla {
            cabecera: None,
            detalles: vec![Detalle::new(code::AUTHENTICATION, "bad password"), Detalle::new(code::CABECERA, "x")],
        };
        match interpret("T-000000000001", 500, soap::fault_envelope(&falla, true).as_bytes()) {
            Outcome::Refused { error, .. } => {
                assert_eq!(error.code, "E002");
                assert!(error.description.contains("E002 bad password; E003 x"), "{}", error.description);
            }
            other => panic!("a client fault is final: {other:?}"),
        }
        assert!(
            matches!(
                interpret("T-000000000001", 500, soap::fault_envelope(&falla, false).as_bytes()),
                Outcome::NoReceipt { error: Some(_), .. }
            ),
            "a server fault is retried"
        );
        assert!(matches!(interpret("T-000000000001", 502, b"<html>Bad Gateway</html>"), Outcome::NoReceipt { .. }));
        assert!(matches!(interpret("T-000000000001", 503, b""), Outcome::NoReceipt { .. }));
    }

    #[test]
    fn transaction_ids_fit_the_type() {
        assert!(crate::iop::is_transaction_id(&transaction_id(None)));
        assert_eq!(transaction_id(Some("PE041219000001")), "PE041219000001");
        let derived = transaction_id(Some("folder-1@ap.cl"));
        assert!(crate::iop::is_transaction_id(&derived) && derived == transaction_id(Some("folder-1@ap.cl")));
    }

    #[test]
    fn passwords_never_reach_the_refusal_record() {
        let wire = soap::request_envelope("<x/>", "user", "hunter2-secret");
        let head = String::from_utf8(redacted_head(wire.as_bytes())).unwrap();
        assert!(!head.contains("hunter2") && head.contains("(redacted)"), "{head}");
    }
}
