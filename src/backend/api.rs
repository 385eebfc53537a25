//! REST API: submit, status and history, the queue, the inbox, payload download, acknowledge.
//! Every route but `/health` and the OpenAPI document needs `Authorization: Bearer <token>`.
//!
//! # Cancellation
//! A handler's future is dropped when the backend hangs up. In `submit_message`, reading the
//! multipart body only stages files (a guard removes them if the request goes away); the
//! persist step (validate, protect, insert the row) is an owned task on `AccessPoint::tasks`
//! that owns the guard, so a commit is never followed by the removal of the files it names.
//! A refused submission's body is drained before the answer (nothing is stored by then, so
//! the drain may be dropped at any point).
//! `acknowledge` is one compare-and-set transition (a SQLite blocking job or one PostgreSQL
//! transaction: it commits whole or not at all, and names no files).

use crate::msh::AccessPoint;
use crate::msh::outbound::{Submission, SubmitError, new_content_id, submit};
use crate::store::{StoreError, StoredPayload};
use axum::extract::{DefaultBodyLimit, Multipart, Request, State as AxState};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tracing::Instrument;

#[derive(Clone)]
pub(super) struct Api {
    pub(super) ap: Arc<AccessPoint>,
    token: Arc<String>,
}

pub fn router(ap: Arc<AccessPoint>, token: String) -> Router {
    let api = Api { ap, token: Arc::new(token) };
    use super::queries;
    let protected = Router::new()
        .route("/api/v1/messages", post(submit_message).get(queries::list_messages))
        .route("/api/v1/messages/{id}", get(queries::get_message))
        .route("/api/v1/messages/{id}/payloads/{index}", get(queries::download_payload))
        .route("/api/v1/messages/{id}/envelope", get(queries::envelope))
        .route("/api/v1/messages/{id}/signal", get(queries::signal))
        .route("/api/v1/messages/{id}/resend", post(queries::resend))
        .route("/api/v1/messages/{id}/evidence", get(queries::evidence))
        .route("/api/v1/inbox", get(queries::inbox))
        .route("/api/v1/inbox/{id}", get(queries::get_received))
        .route("/api/v1/inbox/{id}/payloads/{index}", get(queries::download_received))
        .route("/api/v1/inbox/{id}/ack", post(queries::acknowledge))
        .route("/api/v1/events", get(queries::events))
        .layer(axum::middleware::from_fn_with_state(api.clone(), require_token))
        // The whole request: the largest message plus room for the metadata and the framing.
        .layer(DefaultBodyLimit::max(request_limit(&api.ap.config)));
    Router::new()
        .route("/health", get(health))
        .route("/health/ready", get(health))
        .route("/health/live", get(|| async { Json(serde_json::json!({ "status": "live" })) }))
        .route("/api/v1/openapi.json", get(|| async { Json(super::openapi::document()) }))
        .merge(protected)
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such API path; see /api/v1/openapi.json".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this path; see /api/v1/openapi.json".into())
        })
        .with_state(api)
}

/// Readiness (the store answers, disk, P-Modes, keys): 200 or 503 with each component.
async fn health(AxState(api): AxState<Api>) -> Response {
    crate::ops::console::readiness_response(&api.ap).await
}

fn request_limit(config: &crate::config::Config) -> usize {
    usize::try_from(config.max_message_bytes()).unwrap_or(usize::MAX).saturating_add(MAX_METADATA_BYTES + (1 << 20))
}

/// A JSON error body that says what went wrong and what to do.
#[derive(Debug)]
pub(super) struct ApiError(pub(super) StatusCode, pub(super) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let refused_mid_body = matches!(
            self.0,
            StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNPROCESSABLE_ENTITY
        );
        let mut response = (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response();
        // A submission refused while its body streams in may leave the rest unread (a payload
        // cut off at its limit, a malformed body; other refusals are drained first), so the
        // connection cannot carry another request: saying so keeps a client from reusing it.
        if refused_mid_body {
            response
                .headers_mut()
                .insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) => ApiError(StatusCode::NOT_FOUND, format!("message {id} not found")),
            other => {
                tracing::error!(error = %other, "store error in the backend API");
                ApiError(StatusCode::SERVICE_UNAVAILABLE, "the message store is unavailable; retry later".into())
            }
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_token(AxState(api): AxState<Api>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(presented.as_bytes(), api.token.as_bytes()) {
        next.run(request).await
    } else {
        ApiError(StatusCode::UNAUTHORIZED, "missing or wrong bearer token".into()).into_response()
    }
}

/// The metadata part is a small JSON object; more is refused (413) before it is parsed.
pub const MAX_METADATA_BYTES: usize = 64 << 10;
/// The longest id, name or value in the metadata (a MessageId-like string).
pub const MAX_METADATA_FIELD: usize = 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitMetadata {
    /// The partner's party id.
    pub to: String,
    /// The leg name (or action) in the P-Mode of the link.
    pub leg: String,
    pub conversation_id: Option<String>,
    /// Message properties: `"name": "value"`, or `"name": {"value": "...", "type": "..."}`.
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, PropertyValue>,
}

/// The submission's metadata part: JSON of the right shape (400 otherwise), every field within
/// its limit (422 naming it). A parser of bytes from the backend, fuzzed by
/// `fuzz/runtime` (`submission_metadata`).
pub fn parse_metadata(bytes: &[u8]) -> Result<SubmitMetadata, (StatusCode, String)> {
    if bytes.len() > MAX_METADATA_BYTES {
        return Err((StatusCode::PAYLOAD_TOO_LARGE, format!("the 'metadata' part exceeds {MAX_METADATA_BYTES} bytes")));
    }
    let parsed: SubmitMetadata =
        serde_json::from_slice(bytes).map_err(|e| (StatusCode::BAD_REQUEST, format!("metadata: {e}")))?;
    parsed.check().map_err(|m| (StatusCode::UNPROCESSABLE_ENTITY, m))?;
    Ok(parsed)
}

impl SubmitMetadata {
    /// The message properties as (name, value, type).
    pub fn properties_list(&self) -> Vec<(String, String, Option<String>)> {
        self.properties
            .iter()
            .map(|(name, v)| match v {
                PropertyValue::Plain(value) => (name.clone(), value.clone(), None),
                PropertyValue::Typed(TypedValue { value, kind }) => (name.clone(), value.clone(), kind.clone()),
            })
            .collect()
    }

    /// Every field within [`MAX_METADATA_FIELD`] characters.
    fn check(&self) -> Result<(), String> {
        let long = |what: &str, value: &str| {
            (value.len() > MAX_METADATA_FIELD)
                .then(|| format!("{what} has {} bytes; at most {MAX_METADATA_FIELD}", value.len()))
        };
        let mut problems = vec![long("to", &self.to), long("leg", &self.leg)];
        problems.push(self.conversation_id.as_deref().and_then(|c| long("conversation_id", c)));
        for (name, value) in &self.properties {
            problems.push(long("a property name", name));
            let (value, kind) = match value {
                PropertyValue::Plain(v) => (v, None),
                PropertyValue::Typed(TypedValue { value, kind }) => (value, kind.as_deref()),
            };
            problems.push(long(&format!("property '{name}'"), value));
            problems.push(kind.and_then(|k| long(&format!("the type of property '{name}'"), k)));
        }
        match problems.into_iter().flatten().next() {
            Some(problem) => Err(format!("metadata: {problem}")),
            None => Ok(()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PropertyValue {
    Plain(String),
    Typed(TypedValue),
}

/// `{"value": "...", "type": "..."}`; nothing else.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypedValue {
    pub value: String,
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// `POST /api/v1/messages`: multipart/form-data with a `metadata` JSON part and one or more
/// `payload` parts. Payloads stream to disk; 202 once the message is durable.
async fn submit_message(
    AxState(api): AxState<Api>,
    form: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Response, ApiError> {
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let mut form = form.map_err(|e| bad(format!("the body must be multipart/form-data: {}", e.body_text())))?;
    let files = crate::store::files::MessageFiles::new(api.ap.config.data_dir.join("outbound"));
    let mut cleanup = Cleanup { files: Some(files.clone()), parts: 0 };
    let mut metadata: Option<SubmitMetadata> = None;
    let mut payloads: Vec<StoredPayload> = Vec::new();
    let mut unwritten: Vec<Option<Vec<u8>>> = Vec::new();
    let mut held = 0;
    let limits = api.ap.config.limits;
    let too_large = |m: String| ApiError(StatusCode::PAYLOAD_TOO_LARGE, m);
    let multipart_error = |e: axum::extract::multipart::MultipartError| {
        // The request limit (DefaultBodyLimit) shows as a multipart error with status 413.
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(format!("the request exceeds as4.max_message ({} bytes)", api.ap.config.max_message_bytes()))
        } else {
            bad(format!("malformed multipart body: {}", e.body_text()))
        }
    };
    // Set when a payload passes its size limit: the rest of that request is not read.
    let mut cut_off = false;
    let read = async {
        while let Some(mut field) = form.next_field().await.map_err(multipart_error)? {
            match field.name() {
                Some("metadata") if metadata.is_some() => return Err(bad("a second 'metadata' part".into())),
                Some("metadata") => {
                    // Bounded: the metadata is a small JSON object, never read whole if it is not.
                    let mut text = Vec::new();
                    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                        if text.len() + chunk.len() > MAX_METADATA_BYTES {
                            return Err(too_large(format!("the 'metadata' part exceeds {MAX_METADATA_BYTES} bytes")));
                        }
                        text.extend_from_slice(&chunk);
                    }
                    metadata = Some(parse_metadata(&text).map_err(|(status, m)| ApiError(status, m))?);
                }
                Some("payload") => {
                    if payloads.len() >= limits.max_parts {
                        return Err(ApiError(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            format!(
                                "more than {} payloads; a message may carry at most that (limits.max_parts)",
                                limits.max_parts
                            ),
                        ));
                    }
                    // The leg's max_payload when the metadata came first (as the API asks), else the
                    // request limit: a payload too large is cut off as it streams, not after.
                    let max_payload = metadata
                        .as_ref()
                        .and_then(|m| {
                            let pmodes = api.ap.pmodes();
                            pmodes.outbound(api.ap.me(), &m.to, &m.leg).ok().map(|(link, i)| link.legs[i].max_payload)
                        })
                        .unwrap_or(api.ap.config.max_message_bytes());
                    let index = payloads.len();
                    let path = files.part(index);
                    cleanup.parts = index + 1;
                    let mime_type = field.content_type().unwrap_or("application/octet-stream").to_owned();
                    let filename = field.file_name().map(str::to_owned);
                    let mut file = crate::store::files::SpooledFile::new(path.clone());
                    let mut hasher = Sha256::new();
                    let mut size = 0u64;
                    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                        size += chunk.len() as u64;
                        if size > max_payload {
                            cut_off = true;
                            return Err(too_large(format!(
                                "payload {} exceeds {max_payload} bytes (the leg's max_payload, or as4.max_message)",
                                index + 1
                            )));
                        }
                        hasher.update(&chunk);
                        file.write(&chunk).await.map_err(|e| internal(&e))?;
                    }
                    // Written (if still in memory) and made durable by `submit`, with the files it
                    // derives, before its commit.
                    let finished = match file.finish().await.map_err(|e| internal(&e))? {
                        Some(bytes) => crate::store::files::hold_or_write(&path, bytes, &mut held)
                            .await
                            .map_err(|e| internal(&e))?,
                        None => None,
                    };
                    unwritten.push(finished);
                    payloads.push(StoredPayload {
                        content_id: new_content_id(&api.ap, index),
                        mime_type,
                        path,
                        size,
                        sha256: hex::encode(hasher.finalize()),
                        filename,
                        wire_type: None,
                    });
                }
                other => {
                    return Err(bad(format!("unexpected form field {other:?}: send 'metadata' and 'payload' parts")));
                }
            }
        }
        Ok(())
    };
    if let Err(refusal) = read.await {
        if !cut_off {
            drain(&mut form).await;
        }
        return Err(refusal);
    }
    let metadata = metadata.ok_or_else(|| bad("the 'metadata' part is missing".into()))?;
    if payloads.is_empty() {
        return Err(bad("at least one 'payload' part is needed".into()));
    }
    let properties = metadata.properties_list();
    let submission = Submission {
        to: metadata.to,
        leg: metadata.leg,
        conversation_id: metadata.conversation_id,
        properties,
        payloads,
        unwritten: crate::store::files::Unwritten(unwritten),
        message_id: None,
    };
    // Owned: once the row may commit, the backend hanging up must not drop the work (and with
    // it the guard that would remove the files the committed row names).
    let ap = api.ap.clone();
    let span = tracing::Span::current();
    let persist = api.ap.tasks.spawn(
        async move {
            let result = submit(&ap, submission).await;
            // Accepted, or maybe committed: keep the files (the orphan sweep checks files no
            // row names). Refused, or certainly not stored: the guard removes them.
            let keep_files = match &result {
                Ok(_) => true,
                Err(SubmitError::Store(e)) => !e.definitely_not_stored(),
                Err(SubmitError::Refused(_)) => false,
            };
            if keep_files {
                cleanup.keep();
            }
            result
        }
        .instrument(span),
    );
    match persist.await.map_err(|e| internal(&e))? {
        Ok(record) => Ok((StatusCode::ACCEPTED, Json(record)).into_response()),
        Err(SubmitError::Refused(m)) => Err(ApiError(StatusCode::UNPROCESSABLE_ENTITY, m)),
        Err(SubmitError::Store(e)) => Err(e.into()),
    }
}

/// Reads and discards the rest of a refused request, so that a client still sending it reads
/// the answer: a server that closes with unread bytes resets the connection, and the client
/// may then lose the answer too. Bounded by the request limit (`DefaultBodyLimit`, past which
/// the stream fails), like the read it replaces, and only for the authenticated backend (the
/// token is checked before the body is read); a malformed stream ends it at once.
async fn drain(form: &mut Multipart) {
    while let Ok(Some(mut field)) = form.next_field().await {
        while let Ok(Some(_)) = field.chunk().await {}
    }
}

fn internal(e: &dyn std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "cannot stage a submitted payload");
    ApiError(StatusCode::SERVICE_UNAVAILABLE, "cannot store the payload; retry later".into())
}

/// Removes a submission's files (its first `parts` payloads and what they gave) unless told
/// to keep them.
struct Cleanup {
    files: Option<crate::store::files::MessageFiles>,
    parts: usize,
}

impl Cleanup {
    fn keep(mut self) {
        self.files = None;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(files) = self.files.take() {
            files.remove_parts(self.parts);
        }
    }
}
