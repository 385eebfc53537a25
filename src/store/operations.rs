//! What operators read and write beside the messages: searches and queue statistics for the
//! console and the metrics, refused inbound messages, console users, the audit log and alerts.
//! Plain data; both stores implement the queries.

use super::{Direction, State};
use serde::{Deserialize, Serialize};

/// The console's and the API's message filters. Every condition given must hold.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Search {
    pub direction: Option<Direction>,
    pub state: Option<State>,
    pub partner: Option<String>,
    pub message_id: Option<String>,
    pub conversation_id: Option<String>,
    pub leg: Option<String>,
    pub service: Option<String>,
    pub action: Option<String>,
    /// The document number the payload handler read (certificate number).
    pub document_number: Option<String>,
    /// Created at or after (ms since the epoch).
    pub from_ms: Option<i64>,
    /// Created before (ms since the epoch).
    pub to_ms: Option<i64>,
    /// The cursor: only rows below this one.
    pub before: Option<i64>,
    pub limit: usize,
}

impl Search {
    /// The text conditions as (column, value), in a fixed order.
    pub fn text_conditions(&self) -> Vec<(&'static str, &str)> {
        [
            ("partner", &self.partner),
            ("message_id", &self.message_id),
            ("conversation_id", &self.conversation_id),
            ("leg", &self.leg),
            ("service", &self.service),
            ("action", &self.action),
            ("document_number", &self.document_number),
        ]
        .into_iter()
        .filter_map(|(column, value)| value.as_deref().filter(|v| !v.is_empty()).map(|v| (column, v)))
        .collect()
    }
}

/// A message as a list shows it (no envelope, payloads or history).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    #[serde(skip)]
    pub row: i64,
    pub direction: Direction,
    pub message_id: String,
    pub conversation_id: String,
    pub pmode: String,
    pub leg: String,
    pub partner: String,
    pub service: String,
    pub action: String,
    pub state: State,
    pub attempts: u32,
    pub created_at: String,
    pub updated_at: String,
    pub error: Option<String>,
    pub document_number: Option<String>,
}

/// One group of messages by direction, state and partner.
#[derive(Debug, Clone, Serialize)]
pub struct QueueStat {
    pub direction: Direction,
    pub state: State,
    pub partner: String,
    pub leg: String,
    pub count: u64,
    /// The oldest message's creation (ms).
    pub oldest_created_ms: i64,
    /// The latest change that brought a message into the group (ms): for `acknowledged`, the
    /// last success.
    pub latest_updated_ms: i64,
}

/// An inbound message refused before it was stored.
#[derive(Debug, Clone)]
pub struct NewRefusal {
    pub at_ms: i64,
    pub remote: Option<String>,
    /// The partner, when the message could be matched to a link.
    pub partner: Option<String>,
    pub message_id: Option<String>,
    /// `EBMS:0101`, or `SOAP:MustUnderstand`.
    pub code: String,
    pub detail: String,
    /// The first KiB of the SOAP header as received.
    pub header: Vec<u8>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    pub id: i64,
    pub at: String,
    pub remote: Option<String>,
    pub partner: Option<String>,
    pub message_id: Option<String>,
    pub code: String,
    pub detail: String,
    pub header: String,
}

/// The most of a refused message's header that is kept.
pub const REFUSAL_HEADER_BYTES: usize = 1024;

/// A console user. `password_hash` is an argon2id PHC string.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub role: String,
    pub password_hash: String,
    /// Failed logins since the last success.
    pub failures: u32,
    /// Locked out until (ms), after too many failures.
    pub locked_until_ms: Option<i64>,
    pub created_ms: i64,
}

/// One change an operator made.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    #[serde(skip)]
    pub id: i64,
    pub at: String,
    #[serde(skip)]
    pub at_ms: i64,
    /// The user name, or `cli` for a command run on the machine.
    pub actor: String,
    /// `resend`, `resubmit`, `user_add`, `login`, …
    pub action: String,
    pub target: String,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlertRecord {
    pub key: String,
    pub rule: String,
    pub detail: String,
    pub raised_at: String,
    pub cleared_at: Option<String>,
    /// An operator saw it (it stays active until its condition ends).
    pub acknowledged_by: Option<String>,
    pub acknowledged_at: Option<String>,
}

/// One received message's push to the national system (a webhook or a folder).
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    #[serde(skip)]
    pub row: i64,
    pub message_id: String,
    pub partner: String,
    pub pmode: String,
    pub leg: String,
    /// The `[[delivery]]` rule's name.
    pub target: String,
    /// `pending`, `delivered`, or `dead` (the schedule ran out; an operator may retry it).
    pub state: String,
    pub attempts: u32,
    pub next_at: Option<String>,
    pub last_error: Option<String>,
    pub updated_at: String,
}

/// How a delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Delivered,
    Retry { at_ms: i64, error: String },
    Dead { error: String },
}

/// The document number a payload handler's summary names (indexed for the search).
pub fn document_number(document: Option<&serde_json::Value>) -> Option<String> {
    document?.get("number")?.as_str().filter(|n| !n.is_empty()).map(str::to_owned)
}
