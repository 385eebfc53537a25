//! The console's page frame, style sheet and small shared pieces.

use super::session::Session;
use crate::ops::users::Role;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

pub const STYLE: &str = r#"
:root { --ink:#1d2733; --muted:#5b6b7c; --line:#d8dee6; --bg:#f5f7fa; --brand:#0b5394; --ok:#1e7b34; --warn:#a86400; --bad:#b3261e; }
* { box-sizing: border-box; }
body { margin:0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--ink); background:var(--bg); }
header { background:var(--brand); color:#fff; display:flex; align-items:center; gap:1.5rem; padding:.6rem 1.2rem; }
header .brand { font-weight:700; font-size:1.1rem; letter-spacing:.02em; }
header .party { color:#cfe0f3; font-weight:600; }
header nav a { color:#dbe8f7; text-decoration:none; margin-right:1rem; }
header nav a.active, header nav a:hover { color:#fff; text-decoration:underline; }
header .who { margin-left:auto; display:flex; gap:.6rem; align-items:center; }
header .who button { background:transparent; color:#fff; border:1px solid #9fc0e6; border-radius:4px; padding:.2rem .6rem; cursor:pointer; }
main { padding:1rem 1.2rem 3rem; max-width:1400px; }
h1 { font-size:1.35rem; margin:.2rem 0 1rem; }
h2 { font-size:1.1rem; margin:1.6rem 0 .6rem; }
table { border-collapse:collapse; width:100%; background:#fff; border:1px solid var(--line); }
th, td { text-align:left; padding:.4rem .55rem; border-bottom:1px solid var(--line); vertical-align:top; }
th { background:#eef2f7; font-weight:600; white-space:nowrap; }
td.mono, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size:12.5px; word-break:break-all; }
form.filters { display:grid; grid-template-columns:repeat(auto-fill, minmax(180px, 1fr)); gap:.5rem .8rem; background:#fff; border:1px solid var(--line); padding:.8rem; margin-bottom:1rem; }
form.filters label { display:flex; flex-direction:column; font-size:12px; color:var(--muted); gap:.15rem; }
input, select { font:inherit; padding:.3rem .4rem; border:1px solid #b9c4d0; border-radius:4px; background:#fff; }
button, .button { font:inherit; padding:.35rem .8rem; border-radius:4px; border:1px solid var(--brand); background:var(--brand); color:#fff; cursor:pointer; text-decoration:none; display:inline-block; }
button.secondary, .button.secondary { background:#fff; color:var(--brand); }
button.danger { background:var(--bad); border-color:var(--bad); }
.actions { display:flex; gap:.6rem; align-items:end; flex-wrap:wrap; }
.badge { display:inline-block; padding:.05rem .45rem; border-radius:10px; font-size:12px; font-weight:600; background:#e4e9ef; color:var(--ink); white-space:nowrap; }
.badge.acknowledged, .badge.delivered, .badge.ok, .badge.verified, .badge.recovered { background:#dcf1e1; color:var(--ok); }
.badge.failed, .badge.rejected, .badge.expired, .badge.critical, .badge.active, .badge.unverified { background:#fbe1de; color:var(--bad); }
.badge.waiting_retry, .badge.warning, .badge.pulled, .badge.sending { background:#fdf0d5; color:var(--warn); }
.notice { padding:.6rem .8rem; border-radius:4px; margin:0 0 1rem; border:1px solid var(--line); background:#fff; }
.notice.ok { border-color:#a9d8b5; background:#effaf1; }
.notice.bad { border-color:#efb4ae; background:#fdf1ef; }
dl.facts { display:grid; grid-template-columns:max-content 1fr; gap:.25rem 1rem; background:#fff; border:1px solid var(--line); padding:.8rem; }
dl.facts dt { color:var(--muted); }
dl.facts dd { margin:0; }
pre { background:#fff; border:1px solid var(--line); padding:.6rem; overflow:auto; max-height:24rem; font-size:12px; }
.pager { margin:.8rem 0; display:flex; gap:.6rem; align-items:center; color:var(--muted); }
.login { max-width:22rem; margin:4rem auto; background:#fff; border:1px solid var(--line); padding:1.4rem; }
.login label { display:flex; flex-direction:column; margin-bottom:.8rem; gap:.2rem; }
.muted { color:var(--muted); }
"#;

/// The pages in the menu: (path, title, role needed).
const MENU: [(&str, &str, Role); 9] = [
    ("/messages", "Messages", Role::Viewer),
    ("/refused", "Refused", Role::Viewer),
    ("/deliveries", "Deliveries", Role::Viewer),
    ("/partners", "Partners", Role::Viewer),
    ("/certificates", "Certificates", Role::Viewer),
    ("/alerts", "Alerts", Role::Viewer),
    ("/audit", "Audit log", Role::Viewer),
    ("/users", "Users", Role::Admin),
    ("/metrics", "Metrics", Role::Viewer),
];

pub fn page(title: &str, party: &str, session: &Session, active: &str, content: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Ventanilla " (party) }
                link rel="stylesheet" href="/style.css";
            }
            body {
                header {
                    span.brand { "Ventanilla " span.party { (party) } }
                    nav {
                        @for (path, name, role) in MENU {
                            @if session.role >= role {
                                a href=(path) class=[(path == active).then_some("active")] { (name) }
                            }
                        }
                    }
                    div.who {
                        span { (session.user) " (" (session.role.as_str()) ")" }
                        form method="post" action="/logout" {
                            (csrf(session))
                            button type="submit" id="logout" { "Log out" }
                        }
                    }
                }
                main { h1 { (title) } (content) }
            }
        }
    };
    markup.into_response()
}

pub fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

pub fn error_page(status: StatusCode, text: &str) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "Ventanilla" } link rel="stylesheet" href="/style.css"; }
            body { main { h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) } p.notice.bad { (text) } p { a href="/messages" { "Back to the console" } } } }
        }
    };
    (status, markup).into_response()
}

pub fn badge(text: &str) -> Markup {
    html! { span class=(format!("badge {text}")) { (text.replace('_', " ")) } }
}

/// Days left, colour-coded.
pub fn days(days_left: f64) -> Markup {
    let class = crate::ops::inventory::urgency(days_left);
    let text = if days_left.is_finite() { format!("{days_left:.0} days") } else { "—".into() };
    html! { span class=(format!("badge {class}")) { (text) } }
}

/// A query string for links (values escaped).
pub fn query(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}
