//! The web console: server-rendered pages (maud; assets in the binary), on its own listener
//! with `/metrics` and `/health/*`. Users log in (argon2id, lock-out); every form carries the
//! session's CSRF token, checked once for every POST before any handler runs; every change
//! goes to the audit log. Roles: viewer (reads), operator (resends, tests links), admin (users).
//!
//! # Cancellation
//! Changes a page asks for (resend, resubmit, connection test) run as owned tasks on
//! `AccessPoint::tasks` (see [`crate::ops::resend`]); a user closing the tab does not cut them.
//! User changes are single store writes, each committed whole.

mod admin;
mod layout;
mod messages;
mod partners;
pub mod session;

use crate::msh::AccessPoint;
use crate::ops::settings::ConsoleConfig;
use crate::ops::users::Role;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use session::{COOKIE, Session, Sessions, constant_time_eq, cookie};
use std::sync::Arc;

#[derive(Clone)]
pub struct Console {
    pub ap: Arc<AccessPoint>,
    pub sessions: Arc<Sessions>,
    pub settings: ConsoleConfig,
}

/// The most a console form may send.
const MAX_FORM: usize = 64 << 10;

pub fn router(ap: Arc<AccessPoint>, settings: ConsoleConfig) -> Router {
    let console = Console { ap, sessions: Arc::new(Sessions::new(settings.session_idle.0)), settings };
    let pages = Router::new()
        .route("/", get(|| async { Redirect::to("/messages") }))
        .route("/messages", get(messages::list))
        .route("/messages/resend", post(messages::resend_filtered))
        .route("/message", get(messages::detail))
        .route("/message/payload", get(messages::payload))
        .route("/message/envelope", get(messages::envelope))
        .route("/message/receipt", get(messages::receipt))
        .route("/message/evidence", get(messages::evidence))
        .route("/message/resend", post(messages::resend))
        .route("/refused", get(admin::refused))
        .route("/partners", get(partners::list))
        .route("/partners/test", post(partners::test))
        .route("/certificates", get(partners::certificates))
        .route("/alerts", get(admin::alerts))
        .route("/alerts/acknowledge", post(admin::acknowledge_alert))
        .route("/audit", get(admin::audit))
        .route("/deliveries", get(admin::deliveries))
        .route("/deliveries/retry", post(admin::retry_delivery))
        .route("/users", get(admin::users).post(admin::add_user))
        .route("/users/delete", post(admin::delete_user))
        .route("/logout", post(admin::logout))
        .layer(axum::middleware::from_fn_with_state(console.clone(), require_session));
    Router::new()
        .route("/login", get(admin::login_page).post(admin::login))
        .route("/style.css", get(|| async { ([(header::CONTENT_TYPE, "text/css")], layout::STYLE) }))
        .route("/metrics", get(metrics))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .merge(pages)
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(console)
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::CONTENT_SECURITY_POLICY, "default-src 'self'; form-action 'self'; frame-ancestors 'none'"),
    ] {
        headers.entry(name).or_insert(header::HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    }
    response
}

/// Every page needs a live session; every POST also the session's CSRF token (the form field
/// `csrf`), checked here so that no handler can forget it.
async fn require_session(State(console): State<Console>, request: Request, next: Next) -> Response {
    let session = cookie(request.headers(), COOKIE).and_then(|token| console.sessions.get(token));
    let Some(session) = session else {
        if request.method() == http::Method::GET {
            return Redirect::to("/login").into_response();
        }
        return layout::error_page(StatusCode::UNAUTHORIZED, "Your session has ended; log in again.");
    };
    let (parts, body) = request.into_parts();
    let request = if parts.method == http::Method::POST {
        let bytes = match axum::body::to_bytes(body, MAX_FORM).await {
            Ok(b) => b,
            Err(_) => return layout::error_page(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large."),
        };
        let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
        let presented = fields.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.as_str()).unwrap_or("");
        if !constant_time_eq(presented.as_bytes(), session.csrf.as_bytes()) {
            tracing::warn!(user = %session.user, path = %parts.uri.path(), "console form refused: missing or wrong CSRF token");
            crate::ops::users::audit(
                console.ap.store.as_ref(),
                &session.user,
                "csrf_refused",
                parts.uri.path(),
                "a form without the session's CSRF token",
            )
            .await;
            return layout::error_page(
                StatusCode::FORBIDDEN,
                "This form did not come from the console page (CSRF token missing or wrong); nothing was changed.",
            );
        }
        Request::from_parts(parts, Body::from(bytes))
    } else {
        Request::from_parts(parts, body)
    };
    let mut request = request;
    request.extensions_mut().insert(session);
    next.run(request).await
}

/// A 403 page unless the session's role is at least `role`.
pub(crate) fn forbidden(session: &Session, role: Role) -> Option<Response> {
    if session.role >= role {
        None
    } else {
        Some(layout::error_page(
            StatusCode::FORBIDDEN,
            &format!("This needs the {} role; you are {}.", role.as_str(), session.role.as_str()),
        ))
    }
}

async fn metrics(State(console): State<Console>) -> Response {
    crate::ops::health::refresh_gauges(&console.ap).await;
    let _ = crate::ops::health::readiness(&console.ap).await;
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        console.ap.ops.metrics.encode(),
    )
        .into_response()
}

async fn live() -> Response {
    axum::Json(serde_json::json!({ "status": "live" })).into_response()
}

async fn ready(State(console): State<Console>) -> Response {
    readiness_response(&console.ap).await
}

/// `/health/ready` on either listener: 200 when ready, 503 when not, with each component.
pub async fn readiness_response(ap: &AccessPoint) -> Response {
    let readiness = crate::ops::health::readiness(ap).await;
    let status = if readiness.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(readiness)).into_response()
}
