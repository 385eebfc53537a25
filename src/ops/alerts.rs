//! Alerts: rules from `[alerts]` evaluated every `interval`; each condition raises one alert
//! (compare-and-set in the store, so of several nodes one notifies) and one recovery notice
//! when it ends. Notices go to a webhook (JSON, `X-Ventanilla-Signature: sha256=<HMAC>`) and by
//! e-mail (SMTP), and show in the console.

use crate::msh::AccessPoint;
use crate::ops::settings::{AlertRule, EmailConfig, SmtpSecurity, WebhookConfig};
use crate::store::{Direction, Search, State, now_ms};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A condition that holds now.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub key: String,
    pub rule: &'static str,
    pub detail: String,
}

/// What is sent, raised or recovered.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Notice {
    pub access_point: String,
    pub status: &'static str,
    pub alert: String,
    pub rule: String,
    pub detail: String,
    pub at: String,
}

pub async fn run(ap: Arc<AccessPoint>, shutdown: CancellationToken) {
    if ap.config.alerts.rules.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(ap.config.alerts.interval.0);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        evaluate(&ap).await;
    }
}

/// One round: raises what holds and was not raised, clears what no longer holds.
pub async fn evaluate(ap: &AccessPoint) {
    let rules = &ap.config.alerts.rules;
    let holding = conditions(ap, rules).await;
    let now = now_ms();
    for c in holding.values() {
        match ap.store.raise_alert(&c.key, c.rule, &c.detail, now).await {
            Ok(true) => {
                tracing::warn!(alert = %c.key, detail = %c.detail, "alert raised");
                notify(ap, "raised", &c.key, c.rule, &c.detail).await;
            }
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, alert = %c.key, "cannot record an alert"),
        }
    }
    let active = match ap.store.alerts(10_000).await {
        Ok(a) => a.into_iter().filter(|a| a.cleared_at.is_none()),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the active alerts");
            return;
        }
    };
    let ours: Vec<&str> = rules.iter().map(AlertRule::name).collect();
    for alert in active {
        if holding.contains_key(&alert.key) || !ours.contains(&alert.rule.as_str()) {
            continue;
        }
        // Failed messages are looked at newest first, a page at a time: an older one is
        // still failed unless its state says otherwise.
        if alert.rule == "message_failed"
            && let Some(id) = alert.key.strip_prefix("message_failed:")
            && ap.store.get(Direction::Outbound, id).await.is_ok_and(|m| m.state == State::Failed)
        {
            continue;
        }
        match ap.store.clear_alert(&alert.key, now_ms()).await {
            Ok(Some(cleared)) => {
                tracing::info!(alert = %cleared.key, "alert recovered");
                notify(ap, "recovered", &cleared.key, &cleared.rule, &format!("recovered: {}", cleared.detail)).await;
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, alert = %alert.key, "cannot clear an alert"),
        }
    }
}

/// Every condition of the configured rules that holds now, by key.
pub async fn conditions(ap: &AccessPoint, rules: &[AlertRule]) -> BTreeMap<String, Condition> {
    let mut out = BTreeMap::new();
    let mut add = |key: String, rule: &'static str, detail: String| {
        out.insert(key.clone(), Condition { key, rule, detail });
    };
    let now = now_ms();
    for rule in rules {
        let name = rule.name();
        match rule {
            AlertRule::CertificateExpiry { days } => {
                let days = *days as f64;
                for c in crate::ops::inventory::certificates(ap)
                    .into_iter()
                    .filter(|c| crate::ops::inventory::within(c.days_left, days))
                {
                    let when = if c.days_left < 0.0 {
                        "expired".to_owned()
                    } else {
                        format!("expires in {:.0} days", c.days_left)
                    };
                    add(
                        format!("{name}:{}:{}", c.role, c.sha256),
                        name,
                        format!("{} certificate {} ({}) {when} ({})", c.role, c.subject, c.source, c.not_after),
                    );
                }
                for crl in crate::ops::inventory::crls(ap)
                    .into_iter()
                    .filter(|c| crate::ops::inventory::within(c.days_left, days))
                {
                    add(
                        format!("{name}:crl:{}", crl.file),
                        name,
                        format!(
                            "CRL of {} ({}) next update {} ({:.0} days)",
                            crl.issuer, crl.file, crl.next_update, crl.days_left
                        ),
                    );
                }
            }
            AlertRule::MessageFailed => {
                let search = Search {
                    direction: Some(Direction::Outbound),
                    state: Some(State::Failed),
                    limit: 100,
                    ..Default::default()
                };
                match ap.store.search(&search).await {
                    Ok(failed) => {
                        for m in failed.into_iter().take(100) {
                            add(
                                format!("{name}:{}", m.message_id),
                                name,
                                format!(
                                    "message {} to {} ({} {}) failed: {}",
                                    m.message_id,
                                    m.partner,
                                    m.pmode,
                                    m.leg,
                                    m.error.unwrap_or_default()
                                ),
                            );
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "alerts: cannot read failed messages"),
                }
            }
            AlertRule::PartnerUnreachable { after } => {
                for (partner, contact) in ap.ops.contacts() {
                    if let Some(since) = contact.failing_since_ms.filter(|s| now - s >= after.0.as_millis() as i64) {
                        add(
                            format!("{name}:{partner}"),
                            name,
                            format!(
                                "partner {partner} has not answered since {}: {}",
                                crate::store::format_ms(since),
                                contact.last_problem.unwrap_or_default()
                            ),
                        );
                    }
                }
            }
            AlertRule::MessageWaiting { after } => match ap.store.queue_stats().await {
                Ok(stats) => {
                    let mut oldest: BTreeMap<String, (i64, u64)> = BTreeMap::new();
                    for s in stats.iter().filter(|s| s.direction == Direction::Outbound && !s.state.is_final()) {
                        let entry = oldest.entry(s.partner.clone()).or_insert((s.oldest_created_ms, 0));
                        entry.0 = entry.0.min(s.oldest_created_ms);
                        entry.1 += s.count;
                    }
                    for (partner, (created, count)) in oldest {
                        if now - created >= after.0.as_millis() as i64 {
                            add(
                                format!("{name}:{partner}"),
                                name,
                                format!(
                                    "{count} messages to {partner} wait for a receipt; the oldest since {}",
                                    crate::store::format_ms(created)
                                ),
                            );
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "alerts: cannot read the queue"),
            },
            AlertRule::PmodeReloadFailed => {
                for (file, status) in ap.ops.pmode_files() {
                    if let Some((_, error)) = status.error {
                        add(format!("{name}:{}", file.display()), name, format!("P-Mode file failed to load: {error}"));
                    }
                }
            }
            AlertRule::DiskLow { below } => match crate::ops::free_disk(&ap.config.data_dir) {
                Ok(free) if free < below.0 => add(
                    name.to_owned(),
                    name,
                    format!(
                        "{} MiB free in {} (alert below {} MiB)",
                        free >> 20,
                        ap.config.data_dir.display(),
                        below.0 >> 20
                    ),
                ),
                Ok(_) => {}
                Err(e) => add(name.to_owned(), name, format!("cannot read the free space of the data folder: {e}")),
            },
        }
    }
    out
}

async fn notify(ap: &AccessPoint, status: &'static str, key: &str, rule: &str, detail: &str) {
    let notice = Notice {
        access_point: ap.me().to_owned(),
        status,
        alert: key.to_owned(),
        rule: rule.to_owned(),
        detail: detail.to_owned(),
        at: crate::store::format_ms(now_ms()),
    };
    if let Some(webhook) = &ap.config.alerts.webhook
        && let Err(e) = post_webhook(webhook, &notice).await
    {
        ap.ops.metrics.alerts_delivery_failures.inc();
        tracing::error!(alert = key, url = %webhook.url, error = %e, "cannot deliver an alert to the webhook");
    }
    if let Some(email) = &ap.config.alerts.email
        && let Err(e) = send_email(email, &notice).await
    {
        ap.ops.metrics.alerts_delivery_failures.inc();
        tracing::error!(alert = key, server = %email.server, error = %e, "cannot send an alert e-mail");
    }
}

/// The HMAC-SHA256 of `body` under `secret`, as the signature header carries it.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn webhook_secret(webhook: &WebhookConfig) -> Result<Vec<u8>, String> {
    match (&webhook.secret_env, &webhook.secret_file) {
        (Some(var), _) => {
            std::env::var(var).map(String::into_bytes).map_err(|_| format!("environment variable {var} is not set"))
        }
        (None, Some(file)) => std::fs::read_to_string(file)
            .map(|s| s.trim().as_bytes().to_vec())
            .map_err(|e| format!("cannot read {}: {e}", file.display())),
        (None, None) => Err("no secret configured".into()),
    }
}

/// POSTs the notice; three tries, 1 s and 2 s apart.
async fn post_webhook(webhook: &WebhookConfig, notice: &Notice) -> Result<(), String> {
    let body = serde_json::to_vec(notice).map_err(|e| e.to_string())?;
    let secret = webhook_secret(webhook)?;
    let sig = signature(&secret, &body);
    let mut last = String::new();
    for attempt in 0..3u32 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_secs(attempt as u64)).await;
        }
        match crate::transport::client::post_json(
            &webhook.url,
            &body,
            &[("x-ventanilla-signature", &sig)],
            webhook.timeout.0,
        )
        .await
        {
            Ok(status) if (200..300).contains(&status) => return Ok(()),
            Ok(status) => last = format!("HTTP {status}"),
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn send_email(email: &EmailConfig, notice: &Notice) -> Result<(), String> {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let subject = format!("[ventanilla {}] {} {}: {}", notice.access_point, notice.status, notice.rule, notice.alert);
    let text = format!(
        "Access point: {}\nAlert: {}\nRule: {}\nStatus: {}\nAt: {}\n\n{}\n",
        notice.access_point, notice.alert, notice.rule, notice.status, notice.at, notice.detail
    );
    let mut builder =
        Message::builder().from(email.from.parse().map_err(|e| format!("alerts.email.from: {e}"))?).subject(subject);
    for to in &email.to {
        builder = builder.to(to.parse().map_err(|e| format!("alerts.email.to '{to}': {e}"))?);
    }
    let message = builder.body(text).map_err(|e| e.to_string())?;
    let mut transport = match email.security {
        SmtpSecurity::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&email.server),
        SmtpSecurity::Starttls => {
            AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&email.server).map_err(|e| e.to_string())?
        }
        SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&email.server).map_err(|e| e.to_string())?,
    }
    .port(email.port)
    .timeout(Some(std::time::Duration::from_secs(30)));
    if let (Some(user), Some(var)) = (&email.username, &email.password_env) {
        let password = std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?;
        transport =
            transport.credentials(lettre::transport::smtp::authentication::Credentials::new(user.clone(), password));
    }
    transport.build().send(message).await.map(|_| ()).map_err(|e| e.to_string())
}
