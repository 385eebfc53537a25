//! Messages: the filtered list (cursor paging, indexed filters), one message's detail, its
//! downloads, and the operator's resend.

use super::layout::{badge, csrf, error_page, page, query};
use super::session::Session;
use super::{Console, forbidden};
use crate::ops::filters::Filters;
use crate::ops::resend::{ResendMode, resend as resend_message};
use crate::ops::users::Role;
use crate::store::{Direction, State, StoreError};
use axum::extract::{Extension, Form, Query, State as AxState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

pub const PAGE_SIZE: usize = 50;
/// The most messages one "resend all filtered" resends.
const MAX_BULK: usize = 1000;

fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::NotFound(what) => error_page(StatusCode::NOT_FOUND, &format!("Not found: {what}")),
        other => {
            tracing::error!(error = %other, "console: store error");
            error_page(StatusCode::SERVICE_UNAVAILABLE, "The message store is unavailable; try again shortly.")
        }
    }
}

pub async fn list(
    AxState(console): AxState<Console>,
    Extension(session): Extension<Session>,
    Query(filters): Query<Filters>,
) -> Response {
    let search = match filters.search(PAGE_SIZE) {
        Ok(s) => s,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e),
    };
    let mut rows = match console.ap.store.search(&search).await {
        Ok(r) => r,
        Err(e) => return store_error(e),
    };
    let more = rows.len() > PAGE_SIZE;
    rows.truncate(PAGE_SIZE);
    let partners: std::collections::BTreeSet<String> = console
        .ap
        .pmodes()
        .links_of(console.ap.me())
        .filter_map(|l| l.partner_of(console.ap.me()).map(|p| p.id.clone()))
        .collect();
    let next = rows.last().filter(|_| more).map(|last| {
        let mut pairs = filters.pairs();
        let before = last.row.to_string();
        pairs.push(("before", &before));
        format!("/messages?{}", query(&pairs))
    });
    let first = format!("/messages?{}", query(&filters.pairs()));
    let select = |name: &str, current: &str, options: Vec<String>| {
        html! {
            select name=(name) id=(name) {
                option value="" { "any" }
                @for o in &options { option value=(o) selected[o == current] { (o.replace('_', " ")) } }
            }
        }
    };
    let content = html! {
        form.filters method="get" action="/messages" id="filters" {
            label { "Message id" input name="message_id" id="message_id" value=(filters.message_id); }
            label { "Conversation id" input name="conversation_id" value=(filters.conversation_id); }
            label { "Partner" (select("partner", &filters.partner, partners.into_iter().collect())) }
            label { "Direction" (select("direction", &filters.direction, vec!["outbound".into(), "inbound".into()])) }
            label { "State" (select("state", &filters.state, State::ALL.iter().map(|s| s.as_str().to_owned()).collect())) }
            label { "Leg" input name="leg" value=(filters.leg); }
            label { "Service" input name="service" value=(filters.service); }
            label { "Action" input name="action" value=(filters.action); }
            label { "Document number" input name="document_number" id="document_number" value=(filters.document_number); }
            label { "Created from" input type="date" name="from" value=(filters.from); }
            label { "Created to" input type="date" name="to" value=(filters.to); }
            div.actions { button type="submit" id="search" { "Search" } a.button.secondary href="/messages" { "Clear" } }
        }
        @if filters.state == "failed" && session.role >= Role::Operator && !rows.is_empty() {
            form.notice method="post" action="/messages/resend" id="resend-filtered" {
                (csrf(&session)) (filters.hidden())
                "Resend every failed message matching these filters (at most " (MAX_BULK) "): "
                select name="mode" { option value="identical" { "the identical message" } option value="new_message_id" { "resubmitted under a new MessageId" } }
                " " button type="submit" { "Resend all" }
            }
        }
        table #messages {
            thead { tr { th { "Created (UTC)" } th { "Dir." } th { "Message id" } th { "Partner" } th { "Leg" } th { "Document" } th { "State" } th { "Tries" } th { "Last error" } } }
            tbody {
                @for m in &rows {
                    tr {
                        td { (m.created_at) }
                        td { (m.direction.as_str()) }
                        td.mono { a href=(format!("/message?{}", query(&[("d", m.direction.as_str()), ("id", &m.message_id)]))) { (m.message_id) } }
                        td { (m.partner) }
                        td { (m.leg) }
                        td.mono { (m.document_number.as_deref().unwrap_or("")) }
                        td { (badge(m.state.as_str())) }
                        td { (m.attempts) }
                        td { (m.error.as_deref().map(|e| e.chars().take(120).collect::<String>()).unwrap_or_default()) }
                    }
                }
                @if rows.is_empty() { tr { td colspan="9" .muted { "No message matches." } } }
            }
        }
        div.pager {
            @if filters.before.is_some() { a href=(first) { "« First page" } }
            span { (rows.len()) " shown" }
            @if let Some(next) = next { a href=(next) id="next-page" { "Next page »" } }
        }
    };
    page("Messages", console.ap.me(), &session, "/messages", content)
}

#[derive(Debug, Deserialize)]
pub struct MessageRef {
    pub d: String,
    pub id: String,
    #[serde(default)]
    pub n: Option<usize>,
}

async fn load(console: &Console, r: &MessageRef) -> Result<crate::store::MessageRecord, Response> {
    let direction = Direction::parse(&r.d).ok_or_else(|| error_page(StatusCode::BAD_REQUEST, "unknown direction"))?;
    console.ap.store.get(direction, &r.id).await.map_err(store_error)
}

pub async fn detail(
    AxState(console): AxState<Console>,
    Extension(session): Extension<Session>,
    Query(r): Query<MessageRef>,
) -> Response {
    let m = match load(&console, &r).await {
        Ok(m) => m,
        Err(e) => return e,
    };
    let link = |what: &str, extra: Option<(&str, String)>| {
        let mut pairs = vec![("d", m.direction.as_str()), ("id", m.message_id.as_str())];
        let n;
        if let Some((k, v)) = &extra {
            n = v.clone();
            pairs.push((k, &n));
        }
        format!("/message/{what}?{}", query(&pairs))
    };
    let document = m.document.as_ref().and_then(|d| serde_json::to_string_pretty(d).ok());
    let content = html! {
        dl.facts {
            dt { "Message id" } dd.mono #message-id { (m.message_id) }
            dt { "Direction" } dd { (m.direction.as_str()) }
            dt { "State" } dd #state { (badge(m.state.as_str())) }
            dt { "Partner" } dd { (m.partner) }
            dt { "P-Mode / leg" } dd { (m.pmode) " / " (m.leg) }
            dt { "Transport" } dd #transport {
                @match m.transport {
                    crate::pmode::Transport::As4 => "AS4",
                    crate::pmode::Transport::Iop => "IOP (legacy Pacific Alliance SOAP service; IDdeTransaccion = message id)",
                }
            }
            dt { "Service / action" } dd.mono { (m.service) " / " (m.action) }
            dt { "Conversation" } dd.mono { (m.conversation_id) }
            dt { "Attempts" } dd { (m.attempts) @if let Some(next) = &m.next_attempt_at { " (next: " (next) ")" } }
            dt { "Created / changed" } dd { (m.created_at) " / " (m.updated_at) }
            @if let Some(e) = &m.error { dt { "Error" } dd { (e) } }
        }
        @if let Some(pe) = &m.partner_error {
            h2 { "The partner's error " @if pe.verified { (badge("verified")) } @else { (badge("unverified")) } }
            dl.facts {
                dt { "Code" } dd { (pe.code) " (" (pe.severity) ")" }
                dt { "Description" } dd { (pe.description) }
                @if m.transport == crate::pmode::Transport::Iop {
                    dt { "" } dd.muted { "The IOP has no signed answers: taken as the partner's word over its authenticated TLS." }
                } @else if !pe.verified {
                    dt { "" } dd.muted { "Not signed by the partner's bound certificate: shown, not trusted." }
                }
            }
        }
        @if m.direction == Direction::Outbound && m.state == State::Failed && session.role >= Role::Operator {
            h2 { "Resend" }
            form.notice method="post" action="/message/resend" id="resend" {
                (csrf(&session))
                input type="hidden" name="id" value=(m.message_id);
                label { input type="radio" name="mode" value="identical" checked; " the identical message (same MessageId; the partner was down or has fixed its side)" } br;
                label { input type="radio" name="mode" value="new_message_id"; " resubmit under a new MessageId, signed and encrypted with the keys in force now (the partner's keys changed)" } br;
                button type="submit" id="resend-button" { "Resend" }
            }
        }
        h2 { "Payloads" }
        table #payloads {
            thead { tr { th { "#" } th { "Content-ID" } th { "Type" } th { "File name" } th { "Size" } th { "SHA-256 (original)" } th {} } }
            tbody {
                @for (i, p) in m.payloads.iter().enumerate() {
                    tr {
                        td { (i + 1) }
                        td.mono { (p.content_id) }
                        td { (p.mime_type) }
                        td { (p.filename.as_deref().unwrap_or("")) }
                        td { (p.size) }
                        td.mono { (p.sha256) }
                        td { a.download href=(link("payload", Some(("n", (i + 1).to_string())))) { "Download" } }
                    }
                }
            }
        }
        p.actions {
            a.button.secondary href=(link("envelope", None)) id="download-envelope" { "Raw envelope" }
            a.button.secondary href=(link("evidence", None)) id="download-evidence" { "Evidence bundle" }
            @if m.response.is_some() { a.button.secondary href=(link("receipt", None)) id="download-receipt" { (if m.direction == Direction::Outbound { "Partner's receipt or error" } else { "Our receipt or error" }) } }
        }
        @if let Some(doc) = document { h2 { "Document summary" } pre #document { (doc) } }
        h2 { "History" }
        table #history {
            thead { tr { th { "At (UTC)" } th { "Event" } th { "State" } th { "Detail" } } }
            tbody { @for h in &m.history { tr { td { (h.at) } td { (h.event.as_deref().unwrap_or("note")) } td { (badge(&h.state)) } td { (h.detail) } } } }
        }
    };
    page("Message", console.ap.me(), &session, "/messages", content)
}

/// A download, never rendered by the browser.
fn attachment(name: &str, content_type: &str, body: axum::body::Body) -> Response {
    let safe: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || ".-_".contains(c) { c } else { '_' }).collect();
    (
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{safe}\"")),
        ],
        body,
    )
        .into_response()
}

pub async fn payload(AxState(console): AxState<Console>, Query(r): Query<MessageRef>) -> Response {
    let m = match load(&console, &r).await {
        Ok(m) => m,
        Err(e) => return e,
    };
    let Some(p) = r.n.and_then(|n| n.checked_sub(1)).and_then(|i| m.payloads.get(i)) else {
        return error_page(StatusCode::NOT_FOUND, "No such payload.");
    };
    // Outbound rows name the files as sent (compressed, encrypted); the original is beside them.
    let path = crate::store::files::plaintext_of(&p.path);
    match tokio::fs::File::open(&path).await {
        Ok(file) => {
            let name = p.filename.clone().unwrap_or_else(|| format!("payload-{}", r.n.unwrap_or(1)));
            attachment(&name, &p.mime_type, axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file)))
        }
        Err(e) => {
            tracing::warn!(message_id = %m.message_id, file = %path.display(), error = %e, "console: payload not readable");
            error_page(StatusCode::GONE, "The payload is no longer stored (removed by retention).")
        }
    }
}

pub async fn envelope(AxState(console): AxState<Console>, Query(r): Query<MessageRef>) -> Response {
    match load(&console, &r).await {
        Ok(m) if !m.envelope.is_empty() => attachment("envelope.xml", "application/xml", m.envelope.into()),
        Ok(_) => error_page(StatusCode::GONE, "The envelope is no longer stored (removed by retention)."),
        Err(e) => e,
    }
}

/// The evidence bundle (the API's), for a dispute; `ventanilla verify` checks it offline.
pub async fn evidence(AxState(console): AxState<Console>, Query(r): Query<MessageRef>) -> Response {
    let record = match load(&console, &r).await {
        Ok(m) => m,
        Err(e) => return e,
    };
    let ap = console.ap.clone();
    match crate::blocking::spawn(move || crate::evidence::bundle(&ap, &record)).await {
        Ok(Ok(bundle)) => {
            let name = format!("evidence-{}.json", bundle.message_id);
            let json = serde_json::to_vec_pretty(&bundle).unwrap_or_default();
            attachment(&name, "application/json", json.into())
        }
        Ok(Err(e)) => error_page(StatusCode::GONE, &e),
        Err(e) => error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

pub async fn receipt(AxState(console): AxState<Console>, Query(r): Query<MessageRef>) -> Response {
    match load(&console, &r).await {
        Ok(m) => match m.response {
            Some(signal) => attachment("signal.xml", "application/xml", signal.into()),
            None => error_page(StatusCode::NOT_FOUND, "No receipt or error is stored for this message."),
        },
        Err(e) => e,
    }
}

#[derive(Debug, Deserialize)]
pub struct ResendForm {
    id: String,
    mode: ResendMode,
}

pub async fn resend(
    AxState(console): AxState<Console>,
    Extension(session): Extension<Session>,
    Form(form): Form<ResendForm>,
) -> Response {
    if let Some(refused) = forbidden(&session, Role::Operator) {
        return refused;
    }
    let outcome = resend_message(&console.ap, &session.user, &form.id, form.mode).await;
    let content = match &outcome {
        Ok(now) => html! {
            p.notice.ok #outcome { "Resent. The message on its way is " span.mono { (now) } "." }
            p { a href=(format!("/message?{}", query(&[("d", "outbound"), ("id", now)]))) { "Open it" } }
        },
        Err(e) => html! { p.notice.bad #outcome { "Not resent: " (e) } },
    };
    page("Resend", console.ap.me(), &session, "/messages", content)
}

pub async fn resend_filtered(
    AxState(console): AxState<Console>,
    Extension(session): Extension<Session>,
    Form(form): Form<std::collections::HashMap<String, String>>,
) -> Response {
    if let Some(refused) = forbidden(&session, Role::Operator) {
        return refused;
    }
    let mode = match form.get("mode").map(String::as_str) {
        Some("new_message_id") => ResendMode::NewMessageId,
        _ => ResendMode::Identical,
    };
    let filters: Filters = match serde_urlencoded::from_str(&serde_urlencoded::to_string(&form).unwrap_or_default()) {
        Ok(f) => f,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let mut search = match filters.search(MAX_BULK) {
        Ok(s) => s,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e),
    };
    search.state = Some(State::Failed);
    search.direction = Some(Direction::Outbound);
    search.before = None;
    let rows = match console.ap.store.search(&search).await {
        Ok(r) => r,
        Err(e) => return store_error(e),
    };
    let (mut done, mut problems) = (0, Vec::new());
    for m in rows.iter().take(MAX_BULK) {
        match resend_message(&console.ap, &session.user, &m.message_id, mode).await {
            Ok(_) => done += 1,
            Err(e) => problems.push(e.to_string()),
        }
    }
    let content = html! {
        p.notice.ok #outcome { "Resent " (done) (if done == 1 { " failed message." } else { " failed messages." }) }
        @if !problems.is_empty() { p.notice.bad { (problems.len()) " not resent:" } ul { @for p in &problems { li { (p) } } } }
        p { a href="/messages?state=failed" { "Failed messages" } }
    };
    page("Resend", console.ap.me(), &session, "/messages", content)
}
