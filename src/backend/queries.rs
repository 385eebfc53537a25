//! The API's reads and the operator actions a backend may take: message lists with the
//! console's filters and cursor paging, one message in either direction, its payloads, raw
//! envelope and signal, resend, the inbox and its acknowledgement, the events feed (long poll).
//!
//! # Cancellation
//! Reads commit nothing. `acknowledge` is one compare-and-set transition (committed whole or
//! not at all); `resend` runs as an owned task (see [`crate::ops::resend`]).

use super::api::{Api, ApiError};
use crate::ops::filters::Filters;
use crate::ops::resend::{ResendError, ResendMode};
use crate::store::{Direction, Happening, MessageRecord, State, StoreError};
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, RawQuery, State as AxState};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

/// The default and the largest page.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;
/// The most events in one answer (they are small).
pub const MAX_EVENTS: usize = 10_000;
/// The longest a long poll of the events waits.
pub const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

fn bad(message: String) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message)
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q).map_err(|e| bad(format!("query string: {}", e.body_text())))
}

fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    p.map(|Path(p)| p).map_err(|e| bad(format!("path: {}", e.body_text())))
}

#[derive(Debug, Deserialize)]
pub struct Page {
    limit: Option<usize>,
}

fn limit(page: &Page) -> Result<usize, ApiError> {
    match page.limit.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_LIMIT => Ok(n),
        n => Err(bad(format!("limit {n} is outside 1..={MAX_LIMIT}; follow the X-Next-Cursor header for more"))),
    }
}

/// The API is strict where the console's form is lenient: a filter given empty is a mistake.
fn no_empty_filters(raw: &Option<String>) -> Result<(), ApiError> {
    const KEYS: [&str; 13] = [
        "direction",
        "state",
        "partner",
        "message_id",
        "conversation_id",
        "leg",
        "service",
        "action",
        "document_number",
        "from",
        "to",
        "cursor",
        "limit",
    ];
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or("")).unwrap_or_default();
    match pairs.iter().find(|(k, v)| v.is_empty() && KEYS.contains(&k.as_str())) {
        Some((k, _)) => Err(bad(format!("query string: '{k}' is empty; leave it out to not filter by it"))),
        None => Ok(()),
    }
}

/// One page: an array body, the cursor of the next page in `X-Next-Cursor` and a `Link`.
async fn page(api: &Api, path: &str, filters: Filters, limit: usize) -> Result<Response, ApiError> {
    let search = filters.search(limit).map_err(bad)?;
    let mut records = api.ap.store.list(&search).await?;
    let more = records.len() > limit;
    records.truncate(limit);
    let mut response = Json(&records).into_response();
    if more && let Some(last) = records.last() {
        let mut pairs = filters.pairs();
        let cursor = last.row.to_string();
        let limit = limit.to_string();
        pairs.push(("cursor", &cursor));
        pairs.push(("limit", &limit));
        let link = format!("<{path}?{}>; rel=\"next\"", serde_urlencoded::to_string(&pairs).unwrap_or_default());
        let headers = response.headers_mut();
        for (name, value) in [("x-next-cursor", cursor), ("link", link)] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
    }
    Ok(response)
}

/// `GET /api/v1/messages`: both directions, every filter of the console, newest first.
pub async fn list_messages(
    AxState(api): AxState<Api>,
    RawQuery(raw): RawQuery,
    filters: Result<Query<Filters>, QueryRejection>,
    p: Result<Query<Page>, QueryRejection>,
) -> Result<Response, ApiError> {
    no_empty_filters(&raw)?;
    let (filters, p) = (query(filters)?, query(p)?);
    page(&api, "/api/v1/messages", filters, limit(&p)?).await
}

#[derive(Debug, Deserialize)]
pub struct InboxQuery {
    /// Include messages the backend already acknowledged (and refused ones).
    #[serde(default)]
    all: bool,
}

/// `GET /api/v1/inbox`: received messages not yet acknowledged by the backend.
pub async fn inbox(
    AxState(api): AxState<Api>,
    RawQuery(raw): RawQuery,
    filters: Result<Query<Filters>, QueryRejection>,
    p: Result<Query<Page>, QueryRejection>,
    q: Result<Query<InboxQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    no_empty_filters(&raw)?;
    let (mut filters, p, q) = (query(filters)?, query(p)?, query(q)?);
    // What the inbox fixes is still checked as given (a wrong value is a mistake to report).
    filters.search(1).map_err(bad)?;
    filters.direction = "inbound".into();
    if !q.all {
        filters.state = "delivered".into();
    }
    page(&api, "/api/v1/inbox", filters, limit(&p)?).await
}

#[derive(Debug, Deserialize)]
pub struct DirectionQuery {
    direction: Option<Direction>,
}

/// A message by id: of the direction asked, else the outbound one, else the inbound one (a
/// MessageId is unique per direction; the same id both ways happens only between two access
/// points of one test).
async fn find(api: &Api, id: &str, direction: Option<Direction>) -> Result<MessageRecord, ApiError> {
    if let Some(direction) = direction {
        return Ok(api.ap.store.get(direction, id).await?);
    }
    match api.ap.store.get(Direction::Outbound, id).await {
        Err(StoreError::NotFound(_)) => Ok(api.ap.store.get(Direction::Inbound, id).await?),
        other => Ok(other?),
    }
}

/// `GET /api/v1/messages/{id}?direction=`: state, attempts, history, payloads, the partner's
/// error, in either direction.
pub async fn get_message(
    AxState(api): AxState<Api>,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<DirectionQuery>, QueryRejection>,
) -> Result<Json<MessageRecord>, ApiError> {
    Ok(Json(find(&api, &path(id)?, query(q)?.direction).await?))
}

/// `GET /api/v1/inbox/{id}`: a received message.
pub async fn get_received(
    AxState(api): AxState<Api>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<MessageRecord>, ApiError> {
    Ok(Json(api.ap.store.get(Direction::Inbound, &path(id)?).await?))
}

/// Streams payload `index` (from 1): the original bytes, whatever went on the wire.
async fn stream_payload(record: &MessageRecord, index: usize) -> Result<Response, ApiError> {
    let id = &record.message_id;
    let payload = index.checked_sub(1).and_then(|i| record.payloads.get(i)).ok_or_else(|| {
        ApiError(StatusCode::NOT_FOUND, format!("message {id} has {} payloads", record.payloads.len()))
    })?;
    // Outbound rows name the files as sent (compressed, encrypted); the original is beside them.
    let file_path = crate::store::files::plaintext_of(&payload.path);
    let file = tokio::fs::File::open(&file_path).await.map_err(|e| {
        tracing::warn!(message_id = %id, file = %file_path.display(), error = %e, "a stored payload cannot be read");
        ApiError(StatusCode::GONE, format!("payload {index} of message {id} is no longer stored (retention): {e}"))
    })?;
    let size = file.metadata().await.map(|m| m.len()).unwrap_or(payload.size);
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024));
    let mut response = (
        [
            (header::CONTENT_TYPE, payload.mime_type.clone()),
            (header::CONTENT_LENGTH, size.to_string()),
            (header::HeaderName::from_static("x-content-id"), payload.content_id.clone()),
            (header::HeaderName::from_static("x-sha256"), payload.sha256.clone()),
        ],
        body,
    )
        .into_response();
    if let Some(name) = &payload.filename
        && let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{}\"", safe_file_name(name)))
    {
        response.headers_mut().insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// A file name safe in a header and on any file system.
pub fn safe_file_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let safe: String =
        base.chars().map(|c| if c.is_ascii_alphanumeric() || ".-_".contains(c) { c } else { '_' }).collect();
    if safe.trim_matches('.').is_empty() { "payload".into() } else { safe }
}

/// `GET /api/v1/messages/{id}/payloads/{index}?direction=`.
pub async fn download_payload(
    AxState(api): AxState<Api>,
    p: Result<Path<(String, usize)>, PathRejection>,
    q: Result<Query<DirectionQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (id, index) = path(p)?;
    let record = find(&api, &id, query(q)?.direction).await?;
    stream_payload(&record, index).await
}

/// `GET /api/v1/inbox/{id}/payloads/{index}`.
pub async fn download_received(
    AxState(api): AxState<Api>,
    p: Result<Path<(String, usize)>, PathRejection>,
) -> Result<Response, ApiError> {
    let (id, index) = path(p)?;
    let record = api.ap.store.get(Direction::Inbound, &id).await?;
    stream_payload(&record, index).await
}

fn xml(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/soap+xml; charset=UTF-8")], bytes).into_response()
}

/// `GET /api/v1/messages/{id}/envelope?direction=`: the SOAP envelope as sent or received.
pub async fn envelope(
    AxState(api): AxState<Api>,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<DirectionQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let record = find(&api, &path(id)?, query(q)?.direction).await?;
    if record.envelope.is_empty() {
        return Err(ApiError(
            StatusCode::GONE,
            format!("the envelope of {} was removed (retention)", record.message_id),
        ));
    }
    Ok(xml(record.envelope))
}

/// `GET /api/v1/messages/{id}/signal?direction=`: the receipt or error: the partner's for an
/// outbound message, ours for an inbound one.
pub async fn signal(
    AxState(api): AxState<Api>,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<DirectionQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let record = find(&api, &path(id)?, query(q)?.direction).await?;
    match record.response {
        Some(signal) => Ok(xml(signal)),
        None => {
            Err(ApiError(StatusCode::NOT_FOUND, format!("no receipt or error is stored for {}", record.message_id)))
        }
    }
}

/// `GET /api/v1/messages/{id}/evidence?direction=`: the evidence bundle (see
/// [`crate::evidence`]); `ventanilla verify BUNDLE` checks it offline.
pub async fn evidence(
    AxState(api): AxState<Api>,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<DirectionQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let record = find(&api, &path(id)?, query(q)?.direction).await?;
    let ap = api.ap.clone();
    let bundle = crate::blocking::spawn(move || crate::evidence::bundle(&ap, &record))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError(StatusCode::GONE, e))?;
    let name = format!("evidence-{}.json", safe_file_name(&bundle.message_id));
    let mut response = Json(bundle).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        response.headers_mut().insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResendBody {
    mode: ResendMode,
}

/// `POST /api/v1/messages/{id}/resend` `{"mode": "identical" | "new_message_id"}`: a failed
/// outbound message goes out again (see [`crate::ops::resend`]); audited as `backend`.
pub async fn resend(
    AxState(api): AxState<Api>,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<ResendBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let id = path(id)?;
    let Json(body) = body.map_err(|e| bad(format!("body: {}", e.body_text())))?;
    match crate::ops::resend::resend(&api.ap, "backend", &id, body.mode).await {
        Ok(now) => Ok(Json(serde_json::json!({ "message_id": now, "resent": id })).into_response()),
        Err(ResendError::NotFailed(..)) | Err(ResendError::Store(StoreError::Conflict { .. })) => Err(ApiError(
            StatusCode::CONFLICT,
            format!("message {id} is not failed; only a failed outbound message can be resent"),
        )),
        Err(ResendError::Store(e)) => Err(e.into()),
        Err(ResendError::Refused(m)) => Err(ApiError(StatusCode::UNPROCESSABLE_ENTITY, m)),
    }
}

/// `POST /api/v1/inbox/{id}/ack`: the backend has taken the message; it leaves the inbox.
pub async fn acknowledge(
    AxState(api): AxState<Api>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<MessageRecord>, ApiError> {
    let id = path(id)?;
    let record = api.ap.store.get(Direction::Inbound, &id).await?;
    // Compare-and-set: of two acknowledgements racing, one moves it; the other (a conflict,
    // or an already acknowledged message) answers with the record as it is: idempotent.
    match api.ap.store.transition(record.row, State::Delivered, Happening::BackendAcknowledged, None).await {
        Ok(_) | Err(StoreError::Conflict { .. }) | Err(StoreError::Illegal(_)) => {}
        Err(e) if record.state != State::Delivered => {
            tracing::debug!(error = %e, "acknowledging a message not in the inbox");
        }
        Err(e) => return Err(e.into()),
    }
    Ok(Json(api.ap.store.get(Direction::Inbound, &id).await?))
}

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    /// The last event id already seen (0 for the start).
    #[serde(default)]
    after: i64,
    limit: Option<usize>,
    /// Long poll: with nothing new, wait up to this long (`30s`, at most 60 s) for an event.
    wait: Option<String>,
}

/// `GET /api/v1/events?after=N&wait=30s`: what happened to messages (one event per lifecycle
/// transition), oldest first, for the backend to follow.
pub async fn events(
    AxState(api): AxState<Api>,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q = query(q)?;
    if q.after < 0 {
        return Err(bad(format!("after {} is negative; start at 0", q.after)));
    }
    let limit = match q.limit.unwrap_or(500) {
        n @ 1..=MAX_EVENTS => n,
        n => return Err(bad(format!("limit {n} is outside 1..={MAX_EVENTS}"))),
    };
    let wait = match q.wait.as_deref() {
        None => std::time::Duration::ZERO,
        Some(w) => crate::util::parse_duration(w)
            .filter(|d| *d <= MAX_WAIT)
            .ok_or_else(|| bad(format!("wait '{w}' is not a duration of at most 60s (e.g. 30s)")))?,
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes = if wait.is_zero() { None } else { api.ap.store.changes() };
    loop {
        // Marked seen before the look, so a commit during it wakes the wait below.
        if let Some(c) = changes.as_mut() {
            c.borrow_and_update();
        }
        let events = api.ap.store.events(q.after, limit).await?;
        if !events.is_empty() || tokio::time::Instant::now() >= deadline {
            let next = events.last().map(|e| e.id).unwrap_or(q.after);
            return Ok(Json(serde_json::json!({ "events": events, "next": next })));
        }
        // Woken by this process's commits; looked at every 200 ms regardless, because every
        // node of a cluster sees the events any node commits only by looking.
        let nap = std::time::Duration::from_millis(200).min(deadline - tokio::time::Instant::now());
        match changes.as_mut() {
            Some(c) => {
                if let Ok(Err(_)) = tokio::time::timeout(nap, c.changed()).await {
                    changes = None; // the store has closed: nothing will tick again
                }
            }
            None => tokio::time::sleep(nap).await,
        }
    }
}
