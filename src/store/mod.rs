//! The durable message store (runtime): one trait, SQLite by default.
//!
//! Rule: a message is on disk (payload files fsync'ed, row committed with synchronous=FULL)
//! before anyone is told it was accepted: the backend on submit, the partner by a receipt.

pub mod files;
pub mod postgres;
pub mod sqlite;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Outbound,
    Inbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// Message states. Outbound: submitted → sending → (waiting_retry → sending)* → acknowledged |
/// failed. Inbound: delivered (in the backend inbox) → acknowledged (the backend took it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Submitted,
    Sending,
    WaitingRetry,
    Acknowledged,
    Failed,
    Delivered,
    /// Inbound, refused for its content (payload validation): kept for inspection, never in
    /// the inbox.
    Rejected,
    /// Outbound on a pull leg: held until the partner pulls it.
    Pullable,
    /// Outbound on a pull leg: pulled, waiting for the partner's receipt.
    Pulled,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Submitted => "submitted",
            State::Sending => "sending",
            State::WaitingRetry => "waiting_retry",
            State::Acknowledged => "acknowledged",
            State::Failed => "failed",
            State::Delivered => "delivered",
            State::Rejected => "rejected",
            State::Pullable => "pullable",
            State::Pulled => "pulled",
        }
    }

    pub fn parse(value: &str) -> Option<State> {
        [
            State::Submitted,
            State::Sending,
            State::WaitingRetry,
            State::Acknowledged,
            State::Failed,
            State::Delivered,
            State::Rejected,
            State::Pullable,
            State::Pulled,
        ]
        .into_iter()
        .find(|s| s.as_str() == value)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredPayload {
    pub content_id: String,
    pub mime_type: String,
    #[serde(skip)]
    pub path: std::path::PathBuf,
    pub size: u64,
    pub sha256: String,
    pub filename: Option<String>,
    /// Outbound: the MIME part's Content-Type on the wire when it differs from `mime_type`
    /// (application/gzip when compressed, application/octet-stream when encrypted).
    #[serde(skip)]
    pub wire_type: Option<String>,
}

/// What is written when a message is accepted.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub direction: Direction,
    pub message_id: String,
    pub conversation_id: String,
    pub pmode: String,
    pub leg: String,
    pub partner: String,
    pub service: String,
    pub action: String,
    pub state: State,
    /// The SOAP envelope as sent (outbound) or received (inbound).
    pub envelope: Vec<u8>,
    /// Inbound: the receipt we answered with, so a duplicate gets the same receipt.
    pub response: Option<Vec<u8>>,
    pub payloads: Vec<StoredPayload>,
    pub next_attempt_at: Option<i64>,
    /// What the payload handler extracted from the leading document (JSON).
    pub document: Option<serde_json::Value>,
    /// Why an inbound message was refused (state `rejected`).
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    pub at: String,
    pub state: String,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct MessageRecord {
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
    pub next_attempt_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub error: Option<String>,
    pub document: Option<serde_json::Value>,
    pub payloads: Vec<StoredPayload>,
    pub history: Vec<HistoryEntry>,
    #[serde(skip)]
    pub envelope: Vec<u8>,
    #[serde(skip)]
    pub response: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store database error: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("store file error: {0}")]
    Io(#[from] std::io::Error),
    #[error("store task failed: {0}")]
    Task(String),
    #[error("message {0} not found")]
    NotFound(String),
}

impl StoreError {
    /// Whether the failed write certainly did not commit (SQLite rolls the transaction back on
    /// any error it reports). A lost connection or a failed task may have committed first: the
    /// caller must then keep the files the row would name (the orphan sweep decides later).
    pub fn definitely_not_stored(&self) -> bool {
        matches!(self, StoreError::Database(_))
    }
}

/// The outcome of storing an inbound message.
#[derive(Debug)]
pub enum Inserted {
    New(i64),
    /// Already received: the stored response (receipt) to answer with again.
    Duplicate {
        response: Option<Vec<u8>>,
    },
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub direction: Option<Direction>,
    pub state: Option<State>,
    pub limit: usize,
}

/// One entry of a message's history, as an event feed for the backend.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub id: i64,
    pub at: String,
    pub message_id: String,
    pub direction: Direction,
    pub state: String,
    pub detail: String,
}

#[async_trait::async_trait]
pub trait MessageStore: Send + Sync {
    /// Stores a new message with its payload files; for inbound, a MessageId already present
    /// is a duplicate and nothing is written.
    async fn insert(&self, message: NewMessage) -> Result<Inserted, StoreError>;
    /// Leases due outbound messages (submitted or waiting_retry, next attempt reached) by
    /// moving them to `sending`.
    async fn claim_due(&self, now_ms: i64, limit: usize) -> Result<Vec<MessageRecord>, StoreError>;
    /// Sets a new state with a history entry; `next_attempt_at` and `error` as given.
    async fn transition(
        &self,
        row: i64,
        state: State,
        detail: &str,
        next_attempt_at: Option<i64>,
        error: Option<&str>,
        response: Option<&[u8]>,
    ) -> Result<(), StoreError>;
    async fn get(&self, direction: Direction, message_id: &str) -> Result<MessageRecord, StoreError>;
    async fn list(&self, filter: ListFilter) -> Result<Vec<MessageRecord>, StoreError>;
    /// Messages left in `sending` by a crash go back to waiting_retry, due now: all of them
    /// for a store one node owns, only expired leases for a shared one.
    async fn recover(&self, now_ms: i64) -> Result<usize, StoreError>;
    /// Pull: takes the oldest message held for `pmode`/`leg`, marking it pulled (receipt
    /// awaited until `expires_ms`).
    async fn take_pullable(
        &self,
        pmode: &str,
        leg: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<Option<MessageRecord>, StoreError>;
    /// Whether several nodes share this store (then `recover` runs periodically, to take
    /// over the work of a node that died).
    fn shared(&self) -> bool {
        false
    }
    /// Every payload file path the store names (the orphan sweep's reference list).
    async fn payload_paths(&self) -> Result<Vec<std::path::PathBuf>, StoreError>;
    /// History entries after `after` (an event id), oldest first.
    async fn events(&self, after: i64, limit: usize) -> Result<Vec<Event>, StoreError>;
    /// Retention, one batch: empties the content (payload files, envelope) of messages in
    /// `state` last changed before `before_ms`; returns how many, and the files to delete.
    async fn purge_content(
        &self,
        state: State,
        before_ms: i64,
        limit: usize,
    ) -> Result<(usize, Vec<std::path::PathBuf>), StoreError>;
    /// Retention, one batch: deletes messages in `state` (of P-Mode `pmode`, if given) last
    /// changed before `before_ms`, with their history; returns how many, and the files.
    async fn purge_messages(
        &self,
        state: State,
        pmode: Option<&str>,
        before_ms: i64,
        limit: usize,
    ) -> Result<(usize, Vec<std::path::PathBuf>), StoreError>;
}

pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

pub fn format_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .map(crate::util::format_timestamp)
        .unwrap_or_default()
}
