//! The operations sections of the config file: `[console]`, `[health]`, `[alerts]` and
//! `[logging]`. Typed like the rest of the config: a mistake names the file, line and key.

use crate::config::{ByteSize, Interval};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The web console, `/metrics` and `/health/*`, on their own listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Loopback by default: put a reverse proxy or TLS in front to reach it from elsewhere.
    #[serde(default = "default_console_listen")]
    pub listen: SocketAddr,
    /// TLS for the console (PEM), like the AS4 listener's. Both or neither.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// A session ends after this long without a request.
    #[serde(default = "default_session_idle")]
    pub session_idle: Interval,
    /// Failed logins in a row before the user is locked out …
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
    /// … for this long.
    #[serde(default = "default_lockout")]
    pub lockout: Interval,
    /// Refused inbound messages kept: at most this many …
    #[serde(default = "default_refusals_kept")]
    pub refusals_kept: usize,
    /// … and none older than this.
    #[serde(default = "default_refusals_age")]
    pub refusals_age: Interval,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            listen: default_console_listen(),
            tls_cert: None,
            tls_key: None,
            session_idle: default_session_idle(),
            max_failures: default_max_failures(),
            lockout: default_lockout(),
            refusals_kept: default_refusals_kept(),
            refusals_age: default_refusals_age(),
        }
    }
}

fn default_console_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8090))
}
fn default_session_idle() -> Interval {
    Interval::secs(30 * 60)
}
fn default_max_failures() -> u32 {
    5
}
fn default_lockout() -> Interval {
    Interval::secs(15 * 60)
}
fn default_refusals_kept() -> usize {
    10_000
}
fn default_refusals_age() -> Interval {
    Interval::secs(30 * 86_400)
}

/// What `/health/ready` requires beyond a store that answers, loaded P-Modes and valid keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Free space the data folder needs.
    #[serde(default = "default_min_free_disk")]
    pub min_free_disk: ByteSize,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig { min_free_disk: default_min_free_disk() }
    }
}

fn default_min_free_disk() -> ByteSize {
    ByteSize(256 << 20)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// How often the rules are evaluated.
    #[serde(default = "default_alert_interval")]
    pub interval: Interval,
    pub webhook: Option<WebhookConfig>,
    pub email: Option<EmailConfig>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<AlertRule>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig { interval: default_alert_interval(), webhook: None, email: None, rules: Vec::new() }
    }
}

fn default_alert_interval() -> Interval {
    Interval::secs(30)
}

/// A condition that raises an alert while it holds, and a recovery notice when it ends.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AlertRule {
    /// A certificate (own, partner, CA, TLS) or CRL expires within `days`.
    CertificateExpiry { days: u32 },
    /// An outbound message failed (one alert per message).
    MessageFailed,
    /// A partner's endpoint has not answered for `after`.
    PartnerUnreachable { after: Interval },
    /// An outbound message has waited longer than `after` without a receipt.
    MessageWaiting { after: Interval },
    /// A P-Mode file failed to load.
    PmodeReloadFailed,
    /// The data folder has less than `below` free.
    DiskLow { below: ByteSize },
}

impl AlertRule {
    /// The condition in words, for the console.
    pub fn describe(&self) -> String {
        let d = |i: &Interval| crate::util::format_duration(i.0);
        match self {
            AlertRule::CertificateExpiry { days } => format!("a certificate or CRL expires within {days} days"),
            AlertRule::MessageFailed => "an outbound message failed (one alert per message)".into(),
            AlertRule::PartnerUnreachable { after } => format!("a partner has not answered for {}", d(after)),
            AlertRule::MessageWaiting { after } => format!("an outbound message waits longer than {}", d(after)),
            AlertRule::PmodeReloadFailed => "a P-Mode file failed to load".into(),
            AlertRule::DiskLow { below } => format!("less than {} MiB free in the data folder", below.0 >> 20),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            AlertRule::CertificateExpiry { .. } => "certificate_expiry",
            AlertRule::MessageFailed => "message_failed",
            AlertRule::PartnerUnreachable { .. } => "partner_unreachable",
            AlertRule::MessageWaiting { .. } => "message_waiting",
            AlertRule::PmodeReloadFailed => "pmode_reload_failed",
            AlertRule::DiskLow { .. } => "disk_low",
        }
    }
}

/// Alerts POSTed as JSON, signed: `X-Ventanilla-Signature: sha256=<hex HMAC of the body>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// The HMAC key: from an environment variable or a file (never inline).
    pub secret_env: Option<String>,
    pub secret_file: Option<PathBuf>,
    #[serde(default = "default_webhook_timeout")]
    pub timeout: Interval,
}

fn default_webhook_timeout() -> Interval {
    Interval::secs(10)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// Plain SMTP (a relay on the same machine or network).
    None,
    /// STARTTLS (port 587).
    Starttls,
    /// TLS from the start (port 465).
    Tls,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub server: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    #[serde(default = "default_smtp_security")]
    pub security: SmtpSecurity,
    pub from: String,
    pub to: Vec<String>,
    pub username: Option<String>,
    pub password_env: Option<String>,
}

fn default_smtp_port() -> u16 {
    587
}
fn default_smtp_security() -> SmtpSecurity {
    SmtpSecurity::Starttls
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines (colours only on a terminal).
    #[default]
    Text,
    /// One JSON object per line, with the message id, partner and P-Mode of the message path.
    Json,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    #[serde(default)]
    pub format: LogFormat,
}
