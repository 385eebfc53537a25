//! Log in and out, users (admin), the audit log, alerts and refused inbound messages.

use super::layout::{badge, csrf, error_page, page, query};
use super::session::{COOKIE, LOGIN_COOKIE, Session, constant_time_eq, cookie, random_token, set_cookie};
use super::{Console, forbidden};
use crate::ops::users::{self, Login, Role};
use crate::store::format_ms;
use axum::extract::{Extension, Form, Query, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

const PAGE: usize = 100;

fn login_form(party: &str, token: &str, problem: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "Log in · Ventanilla " (party) } link rel="stylesheet" href="/style.css"; }
            body {
                form.login method="post" action="/login" id="login" {
                    h1 { "Ventanilla " span.muted { (party) } }
                    @if let Some(p) = problem { p.notice.bad #login-problem { (p) } }
                    input type="hidden" name="csrf" value=(token);
                    label { "User" input name="user" id="user" autocomplete="username" required; }
                    label { "Password" input type="password" name="password" id="password" autocomplete="current-password" required; }
                    button type="submit" id="login-button" { "Log in" }
                }
            }
        }
    }
}

/// The login page sets a double-submit cookie its form must echo (login CSRF). A browser that
/// already holds one keeps it, so two loads of the page (a reload, a second tab) agree.
pub async fn login_page(AxState(console): AxState<Console>, headers: HeaderMap) -> Response {
    let token = cookie(&headers, LOGIN_COOKIE)
        .filter(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned)
        .unwrap_or_else(random_token);
    ([(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, &token, Some(600)))], login_form(console.ap.me(), &token, None))
        .into_response()
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    user: String,
    password: String,
    #[serde(default)]
    csrf: String,
}

pub async fn login(AxState(console): AxState<Console>, headers: HeaderMap, Form(form): Form<LoginForm>) -> Response {
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    if expected.is_empty() || !constant_time_eq(expected.as_bytes(), form.csrf.as_bytes()) {
        return error_page(
            StatusCode::FORBIDDEN,
            "The login form did not come from this console (CSRF); reload the login page.",
        );
    }
    let settings = &console.settings;
    let outcome =
        users::login(console.ap.store.as_ref(), &form.user, &form.password, settings.max_failures, settings.lockout.0)
            .await;
    let retry = |problem: &str| {
        (
            StatusCode::UNAUTHORIZED,
            [(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, expected, Some(600)))],
            login_form(console.ap.me(), expected, Some(problem)),
        )
            .into_response()
    };
    match outcome {
        Ok(Login::Ok(role)) => {
            let token = console.sessions.open(&form.user, role);
            let mut response = Redirect::to("/messages").into_response();
            let headers = response.headers_mut();
            for value in [set_cookie(COOKIE, &token, None), set_cookie(LOGIN_COOKIE, "", Some(0))] {
                if let Ok(v) = value.parse() {
                    headers.append(header::SET_COOKIE, v);
                }
            }
            response
        }
        Ok(Login::Refused) => retry("Wrong user name or password."),
        Ok(Login::LockedOut(until)) => {
            retry(&format!("Too many failed logins: this user is locked out until {until} UTC."))
        }
        Err(e) => {
            tracing::error!(error = %e, "console login: store error");
            retry("The user store is unavailable; try again shortly.")
        }
    }
}

pub async fn logout(
    AxState(console): AxState<Console>,
    headers: HeaderMap,
    Extension(session): Extension<Session>,
) -> Response {
    if let Some(token) = cookie(&headers, COOKIE) {
        console.sessions.close(token);
    }
    users::audit(console.ap.store.as_ref(), &session.user, "logout", &session.user, "").await;
    let mut response = Redirect::to("/login").into_response();
    if let Ok(v) = set_cookie(COOKIE, "", Some(0)).parse() {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

#[derive(Debug, Deserialize)]
pub struct Cursor {
    before: Option<i64>,
}

pub async fn refused(
    AxState(console): AxState<Console>,
    Extension(session): Extension<Session>,
    Query(cursor): Query<Cursor>,
) -> Response {
    let rows = console.ap.store.refusals(cursor.before, PAGE + 1).await.unwrap_or_default();
    let more = rows.len() > PAGE;
    let settings = &console.settings;
    let content = html! {
        p.muted { "Inbound messages this access point refused before storing them (kept: the latest " (settings.refusals_kept) ", none older than " (settings.refusals_age.0.as_secs() / 86_400) " days)." }
        table #refused {
            thead { tr { th { "At (UTC)" } th { "From" } th { "Partner" } th { "Message id" } th { "Code" } th { "Detail" } th { "Header (first KiB)" } } }
            tbody {
                @for r in rows.iter().take(PAGE) {
                    tr {
                        td { (r.at) } td.mono { (r.remote.as_deref().unwrap_or("")) } td { (r.partner.as_deref().unwrap_or("unknown")) }
                        td.mono { (r.message_id.as_deref().unwrap_or("")) } td { (badge(&r.code)) } td { (r.detail) }
                        td { details { summary { "show" } pre { (r.header) } } }
                    }
                }
                @if rows.is_empty() { tr { td colspan="7" .muted { "Nothing refused." } } }
            }
        }
        @if more { @if let Some(last) = rows.get(PAGE - 1) { p.pager { a href=(format!("/refused?before={}", last.id)) { "Older »" } } } }
    };
    page("Refused inbound messages", console.ap.me(), &session, "/refused", content)
}

pub async fn alerts(AxState(console): AxState<Console>, Extension(session): Extension<Session>) -> Response {
    let alerts = console.ap.store.alerts(200).await.unwrap_or_default();
    let config = &console.ap.config.alerts;
    let content = html! {
        h2 { "Rules" }
        table #rules {
            thead { tr { th { "Rule" } th { "Condition" } } }
            tbody {
                @for rule in &config.rules { tr { td { (rule.name()) } td { (rule.describe()) } } }
                @if config.rules.is_empty() { tr { td colspan="2" .muted { "No rule is configured ([[alerts.rule]] in the config file)." } } }
            }
        }
        p.muted {
            "Notices go to: "
            @if let Some(w) = &config.webhook { "webhook " span.mono { (w.url) } " " }
            @if let Some(e) = &config.email { "e-mail " (e.to.join(", ")) " via " (e.server) }
            @if config.webhook.is_none() && config.email.is_none() { "this page only" }
        }
        h2 { "Alerts" }
        table #alerts {
            thead { tr { th { "State" } th { "Rule" } th { "Detail" } th { "Raised (UTC)" } th { "Recovered (UTC)" } th { "Acknowledged" } } }
            tbody {
                @for a in &alerts {
                    tr {
                        td { @if a.cleared_at.is_none() { (badge("active")) } @else { (badge("recovered")) } }
                        td { (a.rule) } td { (a.detail) } td { (a.raised_at) } td { (a.cleared_at.as_deref().unwrap_or("")) }
                        td {
                            @if let Some(by) = &a.acknowledged_by { (by) " " span.muted { (a.acknowledged_at.as_deref().unwrap_or("")) } }
                            @else if a.cleared_at.is_none() && session.role >= Role::Operator {
                                form method="post" action="/alerts/acknowledge" { (csrf(&session)) input type="hidden" name="key" value=(a.key); button.secondary type="submit" { "Acknowledge" } }
                            }
                        }
                    }
                }
                @if alerts.is_empty() { tr { td colspan="6" .muted { "No alert has been raised." } } }
            }
        }
    };
    page("Alerts", console.ap.me(), &session, "/alerts", content)
}

#[derive(Debug, Deserialize)]
pub struct DeliveryFilter {
    #[serde(default)]
    state: String,
}

/// Push deliveries to the national system: dead ones first (with Retry), then the rest.
pub async fn deliveries(
    AxState(console): AxState<Console>,
    Extension(session): Extension<Session>,
    Query(filter): Query<DeliveryFilter>,
) -> Response {
    let state = Some(filter.state.as_str()).filter(|s| !s.is_empty());
    let mut rows = console.ap.store.deliveries(state, 500).await.unwrap_or_default();
    rows.sort_by_key(|d| match d.state.as_str() {
        "dead" => 0,
        "pending" => 1,
        _ => 2,
    });
    let rules = &console.ap.config.deliveries;
    let content = html! {
        p.muted {
            "Received messages pushed to the national system ("
            @for (i, r) in rules.iter().enumerate() {
                @if i > 0 { ", " }
                (r.name) ": " @if let Some(w) = &r.webhook { "webhook " span.mono { (w.url) } } @if let Some(f) = &r.folder { "folder " span.mono { (f.display()) } }
            }
            @if rules.is_empty() { "no [[delivery]] rule is configured; the backend polls the inbox" }
            "). A dead delivery stays in the inbox until it is retried or the backend takes it."
        }
        p { a href="/deliveries?state=dead" { "dead" } " · " a href="/deliveries?state=pending" { "pending" } " · " a href="/deliveries?state=delivered" { "delivered" } " · " a href="/deliveries" { "all" } }
        table #deliveries {
            thead { tr { th { "State" } th { "Message id" } th { "Partner" } th { "Rule" } th { "Attempts" } th { "Next attempt" } th { "Last error" } th { "Changed (UTC)" } th {} } }
            tbody {
                @for d in &rows {
                    tr {
                        td { (badge(if d.state == "dead" { "failed" } else if d.state == "delivered" { "acknowledged" } else { "waiting_retry" })) " " (d.state) }
                        td.mono { a href=(format!("/message?{}", query(&[("d", "inbound"), ("id", &d.message_id)]))) { (d.message_id) } }
                        td { (d.partner) } td { (d.target) } td { (d.attempts) }
                        td { (d.next_at.as_deref().unwrap_or("")) } td { (d.last_error.as_deref().unwrap_or("")) } td { (d.updated_at) }
                        td {
                            @if d.state == "dead" && session.role >= Role::Operator {
                                form method="post" action="/deliveries/retry" {
                                    (csrf(&session))
                                    input type="hidden" name="message_id" value=(d.message_id);
                                    input type="hidden" name="target" value=(d.target);
                                    button.secondary type="submit" { "Retry" }
                                }
                            }
                        }
                    }
                }
                @if rows.is_empty() { tr { td colspan="9" .muted { "Nothing here." } } }
            }
        }
    };
    page("Deliveries", console.ap.me(), &session, "/deliveries", content)
}

#[derive(Debug, Deserialize)]
pub struct RetryForm {
    message_id: String,
    target: String,
}

pub async fn retry_delivery(
    AxState(console): AxState<Console>,
    Extension(session): Extension<Session>,
    Form(form): Form<RetryForm>,
) -> Response {
    if let Some(refused) = forbidden(&session, Role::Operator) {
        return refused;
    }
    let store = console.ap.store.as_ref();
    let row = match store.get(crate::store::Direction::Inbound, &form.message_id).await {
        Ok(m) => m.row,
        Err(e) => return error_page(StatusCode::NOT_FOUND, &e.to_string()),
    };
    match store.retry_delivery(row, &form.target, crate::store::now_ms()).await {
        Ok(true) => {
            users::audit(store, &session.user, "delivery_retried", &form.message_id, &form.target).await;
            Redirect::to("/deliveries?state=pending").into_response()
        }
        Ok(false) => {
            error_page(StatusCode::CONFLICT, "That delivery is not dead (it was retried or delivered meanwhile).")
        }
        Err(e) => error_page(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

#[derive(Debug, Deserialize)]
pub struct AlertForm {
    key: String,
}

/// An operator has seen an active alert: it stays active until its condition ends, marked
/// with who acknowledged it and when (audited).
pub async fn acknowledge_alert(
    AxState(console): AxState<Console>,
    Extension(session): Extension<Session>,
    Form(form): Form<AlertForm>,
) -> Response {
    if let Some(refused) = forbidden(&session, Role::Operator) {
        return refused;
    }
    match console.ap.store.acknowledge_alert(&form.key, &session.user, crate::store::now_ms()).await {
        Ok(true) => {
            users::audit(console.ap.store.as_ref(), &session.user, "alert_acknowledged", &form.key, "").await;
            Redirect::to("/alerts").into_response()
        }
        Ok(false) => error_page(StatusCode::CONFLICT, "That alert is no longer active, or was already acknowledged."),
        Err(e) => error_page(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

pub async fn audit(
    AxState(console): AxState<Console>,
    Extension(session): Extension<Session>,
    Query(cursor): Query<Cursor>,
) -> Response {
    let rows = console.ap.store.audit_log(cursor.before, PAGE + 1).await.unwrap_or_default();
    let more = rows.len() > PAGE;
    let content = html! {
        table #audit {
            thead { tr { th { "At (UTC)" } th { "Who" } th { "Action" } th { "On" } th { "Detail" } } }
            tbody {
                @for e in rows.iter().take(PAGE) { tr { td { (e.at) } td { (e.actor) } td { (e.action) } td.mono { (e.target) } td { (e.detail) } } }
            }
        }
        @if more { @if let Some(last) = rows.get(PAGE - 1) { p.pager { a href=(format!("/audit?{}", query(&[("before", &last.id.to_string())]))) { "Older »" } } } }
    };
    page("Audit log", console.ap.me(), &session, "/audit", content)
}

pub async fn users(AxState(console): AxState<Console>, Extension(session): Extension<Session>) -> Response {
    if let Some(refused) = forbidden(&session, Role::Admin) {
        return refused;
    }
    let list = console.ap.store.users().await.unwrap_or_default();
    let now = crate::store::now_ms();
    let content = html! {
        table #users {
            thead { tr { th { "User" } th { "Role" } th { "Created (UTC)" } th { "Status" } th {} } }
            tbody {
                @for u in &list {
                    tr {
                        td { (u.name) } td { (u.role) } td { (format_ms(u.created_ms)) }
                        td {
                            @if let Some(until) = u.locked_until_ms.filter(|t| *t > now) { (badge("failed")) " locked until " (format_ms(until)) }
                            @else if u.failures > 0 { (u.failures) " failed logins" } @else { (badge("ok")) }
                        }
                        td {
                            @if u.name != session.user {
                                form method="post" action="/users/delete" { (csrf(&session)) input type="hidden" name="name" value=(u.name); button.danger type="submit" { "Remove" } }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Add or change a user" }
        form.filters method="post" action="/users" id="add-user" {
            (csrf(&session))
            label { "User" input name="name" required; }
            label { "Role" select name="role" { option value="viewer" { "viewer" } option value="operator" { "operator" } option value="admin" { "admin" } } }
            label { "Password (12+ characters)" input type="password" name="password" autocomplete="new-password" required; }
            div.actions { button type="submit" { "Save" } }
        }
    };
    page("Users", console.ap.me(), &session, "/users", content)
}

#[derive(Debug, Deserialize)]
pub struct UserForm {
    name: String,
    role: String,
    password: String,
}

pub async fn add_user(
    AxState(console): AxState<Console>,
    Extension(session): Extension<Session>,
    Form(form): Form<UserForm>,
) -> Response {
    if let Some(refused) = forbidden(&session, Role::Admin) {
        return refused;
    }
    let Some(role) = Role::parse(&form.role) else {
        return error_page(StatusCode::BAD_REQUEST, "unknown role");
    };
    match users::put(console.ap.store.as_ref(), &session.user, &form.name, role, &form.password).await {
        Ok(()) => {
            console.sessions.close_user(&form.name);
            Redirect::to("/users").into_response()
        }
        Err(e) => error_page(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

#[derive(Debug, Deserialize)]
pub struct DeleteForm {
    name: String,
}

pub async fn delete_user(
    AxState(console): AxState<Console>,
    Extension(session): Extension<Session>,
    Form(form): Form<DeleteForm>,
) -> Response {
    if let Some(refused) = forbidden(&session, Role::Admin) {
        return refused;
    }
    if form.name == session.user {
        return error_page(StatusCode::BAD_REQUEST, "You cannot remove yourself.");
    }
    match users::remove(console.ap.store.as_ref(), &session.user, &form.name).await {
        Ok(_) => {
            console.sessions.close_user(&form.name);
            Redirect::to("/users").into_response()
        }
        Err(e) => error_page(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}
