//! Partners (one row per link, with its file, certificates, queue and last contact; the
//! connection test) and Certificates and trust.

use super::layout::{badge, csrf, days, page};
use super::session::Session;
use super::{Console, forbidden};
use crate::ops::users::Role;
use crate::store::{Direction, State, format_ms, now_ms};
use axum::extract::{Extension, Form, State as AxState};
use axum::response::Response;
use maud::html;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Per partner: (queue depth, oldest waiting ms, last acknowledged outbound, last inbound).
#[derive(Default)]
struct Traffic {
    waiting: u64,
    oldest: Option<i64>,
    last_sent: Option<i64>,
    last_received: Option<i64>,
    failed: u64,
}

pub async fn list(AxState(console): AxState<Console>, Extension(session): Extension<Session>) -> Response {
    let ap = &console.ap;
    let mut traffic: BTreeMap<String, Traffic> = BTreeMap::new();
    for s in ap.store.queue_stats().await.unwrap_or_default() {
        let t = traffic.entry(s.partner.clone()).or_default();
        match (s.direction, s.state) {
            (Direction::Outbound, State::Acknowledged) => t.last_sent = t.last_sent.max(Some(s.latest_updated_ms)),
            (Direction::Outbound, State::Failed) => t.failed += s.count,
            (Direction::Outbound, _) => {
                t.waiting += s.count;
                t.oldest = Some(t.oldest.map_or(s.oldest_created_ms, |o| o.min(s.oldest_created_ms)));
            }
            (Direction::Inbound, State::Delivered | State::Acknowledged) => {
                t.last_received = t.last_received.max(Some(s.latest_updated_ms))
            }
            _ => {}
        }
    }
    let contacts = ap.ops.contacts();
    let files = ap.ops.pmode_files();
    let certificates = crate::ops::inventory::certificates(ap);
    let pmodes = ap.pmodes();
    let now = now_ms();
    let content = html! {
        @for (file, status) in files.iter().filter(|(_, s)| s.error.is_some()) {
            @if let Some((at, error)) = &status.error {
                p.notice.bad { "P-Mode file " span.mono { (file.display()) } " failed to load at " (format_ms(*at)) ": " (error) " — the previous version stays in force." }
            }
        }
        table #partners {
            thead { tr { th { "Link (P-Mode)" } th { "Partner" } th { "Profile" } th { "Endpoint" } th { "Bound certificates" } th { "Last success" } th { "Queue" } th { "Contact" } th {} } }
            tbody {
                @for link in pmodes.links_of(ap.me()) {
                    @let partner = link.partner_of(ap.me());
                    @let partner_id = partner.map(|p| p.id.clone()).unwrap_or_default();
                    @let t = traffic.get(&partner_id);
                    @let status = files.get(&link.file);
                    tr {
                        td {
                            strong { (link.id) } br;
                            span.mono.muted { (link.file.display()) } br;
                            span.muted { "loaded " (status.and_then(|s| s.loaded_ms).map(format_ms).unwrap_or_else(|| "at start".into())) }
                            @if let Some((at, e)) = status.and_then(|s| s.error.as_ref()) { br; span.badge.failed { "reload failed " (format_ms(*at)) } " " span.muted { (e) } }
                        }
                        td { (partner_id) }
                        td { (link.profile.as_str()) }
                        td.mono { (partner.map(|p| ap.endpoint_of(p)).unwrap_or("")) }
                        td {
                            @for c in certificates.iter().filter(|c| c.role == "partner" && c.source.starts_with(&format!("P-Mode {} ", link.id))) {
                                div { (c.source.rsplit(' ').next().unwrap_or("")) ": " (days(c.days_left)) }
                            }
                        }
                        td {
                            "sent: " (t.and_then(|t| t.last_sent).map(format_ms).unwrap_or_else(|| "never".into())) br;
                            "received: " (t.and_then(|t| t.last_received).map(format_ms).unwrap_or_else(|| "never".into()))
                        }
                        td {
                            (t.map_or(0, |t| t.waiting)) " waiting"
                            @if let Some(oldest) = t.and_then(|t| t.oldest) { br; span.muted { "oldest " ((now - oldest) / 60_000) " min" } }
                            @if t.is_some_and(|t| t.failed > 0) { br; a href=(format!("/messages?{}", super::layout::query(&[("partner", &partner_id), ("state", "failed")]))) { (t.map_or(0, |t| t.failed)) " failed" } }
                        }
                        td {
                            @match contacts.get(&partner_id) {
                                Some(c) if c.failing_since_ms.is_some() => { (badge("failed")) br; span.muted { "since " (c.failing_since_ms.map(format_ms).unwrap_or_default()) ": " (c.last_problem.clone().unwrap_or_default()) } }
                                Some(c) => { (badge("ok")) br; span.muted { (c.last_answer_ms.map(format_ms).unwrap_or_default()) } }
                                None => { span.muted { "no send since start" } }
                            }
                        }
                        td {
                            @if session.role >= Role::Operator {
                                form method="post" action="/partners/test" {
                                    (csrf(&session))
                                    input type="hidden" name="pmode" value=(link.id);
                                    button.secondary type="submit" { "Test connection" }
                                }
                            }
                        }
                    }
                }
            }
        }
        p.muted { "The connection test sends the AS4 test service message (service …/200704/service, action …/200704/test), signed and encrypted as the link says; the partner answers with a receipt and delivers nothing." }
    };
    page("Partners", ap.me(), &session, "/partners", content)
}

#[derive(Debug, Deserialize)]
pub struct TestForm {
    pmode: String,
}

pub async fn test(
    AxState(console): AxState<Console>,
    Extension(session): Extension<Session>,
    Form(form): Form<TestForm>,
) -> Response {
    if let Some(refused) = forbidden(&session, Role::Operator) {
        return refused;
    }
    let result = crate::msh::connection_test::run(&console.ap, &form.pmode).await;
    crate::ops::users::audit(
        console.ap.store.as_ref(),
        &session.user,
        "connection_test",
        &form.pmode,
        &format!("{}: {}", if result.ok { "ok" } else { "failed" }, result.detail),
    )
    .await;
    let content = html! {
        p class=(if result.ok { "notice ok" } else { "notice bad" }) #outcome {
            (if result.ok { "Connection test passed: " } else { "Connection test failed: " }) (result.detail)
        }
        dl.facts {
            dt { "P-Mode" } dd { (result.pmode) }
            dt { "Partner" } dd { (result.partner) }
            dt { "Endpoint" } dd.mono { (result.endpoint) }
            dt { "Test message id" } dd.mono { (result.message_id) }
        }
        p { a href="/partners" { "Back to partners" } }
    };
    page("Connection test", console.ap.me(), &session, "/partners", content)
}

pub async fn certificates(AxState(console): AxState<Console>, Extension(session): Extension<Session>) -> Response {
    let ap = &console.ap;
    let certs = crate::ops::inventory::certificates(ap);
    let crls = crate::ops::inventory::crls(ap);
    let security = &ap.config.security;
    let content = html! {
        table #certificates {
            thead { tr { th { "Role" } th { "Where" } th { "Subject" } th { "Issuer" } th { "Expires" } th { "Left" } th { "SHA-256" } } }
            tbody {
                @for c in &certs {
                    tr {
                        td { (c.role) } td { (c.source) } td { (c.subject) } td.muted { (c.issuer) }
                        td { (c.not_after) } td { (days(c.days_left)) } td.mono { (c.sha256.get(..16).unwrap_or("")) "…" }
                    }
                }
            }
        }
        h2 { "Revocation" }
        dl.facts {
            dt { "Policy" } dd { (format!("{:?}", security.revocation)) }
            dt { "OCSP" } dd { @if security.ocsp { "asked when no CRL answers" @if let Some(r) = &security.ocsp_responder { " (responder " span.mono { (r) } ")" } } @else { "off" } }
        }
        @let ocsp = ap.security.trust().map(|t| t.ocsp_results()).unwrap_or_default();
        @if security.ocsp {
            table #ocsp {
                thead { tr { th { "OCSP: certificate" } th { "Responder" } th { "Last answer" } th { "At (UTC)" } } }
                tbody {
                    @for r in &ocsp {
                        tr {
                            td { (r.subject) } td.mono { (r.responder) }
                            td { @if r.status == "good" { (badge("ok")) } @else { span.badge.failed { (r.status) } } }
                            td { (format_ms(r.checked_at * 1000)) }
                        }
                    }
                    @if ocsp.is_empty() { tr { td colspan="4" .muted { "No certificate has needed OCSP since the last (re)load of the truststore." } } }
                }
            }
        }
        table #crls {
            thead { tr { th { "CRL file" } th { "Issuer" } th { "Next update" } th { "Left" } th { "Revoked" } } }
            tbody {
                @for c in &crls { tr { td.mono { (c.file) } td { (c.issuer) } td { (c.next_update) } td { (days(c.days_left)) } td { (c.revoked) } } }
                @if crls.is_empty() { tr { td colspan="5" .muted { "No CRL file is configured (security.crls)." } } }
            }
        }
    };
    page("Certificates and trust", ap.me(), &session, "/certificates", content)
}
