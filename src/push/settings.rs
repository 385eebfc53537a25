//! `[[delivery]]` (push received messages to the national system: a webhook or a folder) and
//! `[submit_folder]` (submit by dropping files), in the access point's config file.

use crate::config::Interval;
use serde::Deserialize;
use std::path::PathBuf;

/// Where received messages of a link (or leg) go, besides the inbox. The first rule that
/// matches a message takes it; a message delivered (2xx, or written) leaves the inbox
/// (`backend_acknowledged`); after the retry schedule it is `dead` until an operator retries it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryRule {
    /// Shown in the console and the logs; unique.
    pub name: String,
    /// Only messages of this P-Mode (link) …
    pub pmode: Option<String>,
    /// … and this leg.
    pub leg: Option<String>,
    pub webhook: Option<PushWebhook>,
    /// A folder: each message is written whole as `<folder>/<MessageId>/` (payloads and
    /// `message.json`), atomically.
    pub folder: Option<PathBuf>,
    /// The waits between attempts after the first; then the delivery is dead.
    #[serde(default = "default_retry")]
    pub retry: Vec<Interval>,
}

fn default_retry() -> Vec<Interval> {
    [10, 60, 300, 1800, 7200].into_iter().map(Interval::secs).collect()
}

/// A POST of `multipart/form-data` (`metadata`: the message as JSON, then one `payload` part
/// per payload) with `X-Ventanilla-Signature: sha256=<hex HMAC-SHA256 of the whole body>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushWebhook {
    pub url: String,
    pub secret_env: Option<String>,
    pub secret_file: Option<PathBuf>,
    #[serde(default = "default_timeout")]
    pub timeout: Interval,
}

fn default_timeout() -> Interval {
    Interval::secs(60)
}

/// Submission by file: `<path>/NAME` with its sidecar `<path>/NAME.json`
/// (`{"to": …, "leg": …, "conversation_id"?: …, "properties"?: {…}, "mime_type"?: …}`; write it
/// last). Processed pairs move to `sent/` (with `NAME.result.json`) or `failed/` (with
/// `NAME.error.txt`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitFolder {
    pub path: PathBuf,
    #[serde(default = "default_scan")]
    pub interval: Interval,
}

fn default_scan() -> Interval {
    Interval::secs(2)
}

impl PushWebhook {
    pub fn secret(&self) -> Result<Vec<u8>, String> {
        match (&self.secret_env, &self.secret_file) {
            (Some(var), None) => {
                std::env::var(var).map(String::into_bytes).map_err(|_| format!("environment variable {var} is not set"))
            }
            (None, Some(file)) => std::fs::read_to_string(file)
                .map(|s| s.trim().as_bytes().to_vec())
                .map_err(|e| format!("cannot read {}: {e}", file.display())),
            _ => Err("give exactly one of secret_env and secret_file".into()),
        }
    }
}

/// The rules' own checks (names unique, one target each), as `(key, message)`.
pub fn check(rules: &[DeliveryRule]) -> Result<(), (String, String)> {
    let mut names = std::collections::BTreeSet::new();
    for (i, rule) in rules.iter().enumerate() {
        let key = format!("delivery[{i}]");
        if !names.insert(rule.name.as_str()) {
            return Err((format!("{key}.name"), format!("'{}' names two delivery rules", rule.name)));
        }
        if rule.webhook.is_some() == rule.folder.is_some() {
            return Err((key, "give exactly one of webhook and folder".into()));
        }
        if let Some(w) = &rule.webhook
            && w.secret_env.is_some() == w.secret_file.is_some()
        {
            return Err((format!("{key}.webhook"), "give exactly one of secret_env and secret_file".into()));
        }
    }
    Ok(())
}
