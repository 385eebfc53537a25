//! The durable message store (runtime): one trait, SQLite by default.
//!
//! Rule: a message is on disk (payload files durable — synced, or copied into the row's own
//! transaction, see [`durability`] — and the row committed with synchronous=FULL)
//! before anyone is told it was accepted: the backend on submit, the partner by a receipt.

pub mod durability;
pub mod files;
pub mod operations;
pub mod postgres;
pub mod sqlite;

use serde::Serialize;

pub use operations::{
    AlertRecord, AuditEntry, Delivery, DeliveryOutcome, NewRefusal, QueueStat, Refusal, Search, Summary, User,
    document_number,
};

/// What happens to a stored message (see [`crate::lifecycle`]).
pub use crate::lifecycle::Event as Happening;
pub use crate::lifecycle::{Creation, Direction, PartnerError, State};

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
    pub message_id: String,
    pub conversation_id: String,
    pub pmode: String,
    pub leg: String,
    pub partner: String,
    pub service: String,
    pub action: String,
    /// How it came to be: its direction, first state, first history entry and event.
    pub creation: Creation,
    /// The SOAP envelope as sent (outbound) or received (inbound).
    pub envelope: Vec<u8>,
    /// Inbound: the receipt (or error) we answered with, so a duplicate gets the same answer.
    pub response: Option<Vec<u8>>,
    pub payloads: Vec<StoredPayload>,
    /// What the payload handler extracted from the leading document (JSON).
    pub document: Option<serde_json::Value>,
    /// AS4, or the legacy IOP service.
    pub transport: crate::pmode::Transport,
    /// Payload files written but not synced, with their content: the row is their durable copy
    /// until a checkpoint syncs the files (see [`durability`]). Empty when the caller synced
    /// them (and always for a store that does not keep copies).
    pub unsynced: Vec<UnsyncedFile>,
}

#[cfg(test)]
impl NewMessage {
    /// A small message for the store's own tests: one payload named `/tmp/p`, a stored answer,
    /// no copies; each test changes what it needs.
    pub(crate) fn for_tests(id: &str, creation: Creation) -> NewMessage {
        NewMessage {
            message_id: id.into(),
            conversation_id: "c".into(),
            pmode: "cl-pe".into(),
            leg: "ephyto".into(),
            partner: "PE".into(),
            service: "s".into(),
            action: "a".into(),
            creation,
            envelope: b"<env/>".to_vec(),
            response: Some(b"<receipt/>".to_vec()),
            payloads: vec![StoredPayload {
                content_id: "p@x".into(),
                mime_type: "application/xml".into(),
                path: "/tmp/p".into(),
                size: 3,
                sha256: "ab".into(),
                filename: Some("doc.xml".into()),
                wire_type: None,
            }],
            document: None,
            transport: crate::pmode::Transport::As4,
            unsynced: Vec::new(),
        }
    }
}

/// A small payload file and its bytes, kept with the row that names it until the file itself
/// is known to be durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsyncedFile {
    pub path: std::path::PathBuf,
    pub content: Vec<u8>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    pub at: String,
    pub state: String,
    /// The lifecycle event of a transition; None for a note (a duplicate received, retention).
    pub event: Option<String>,
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
    pub transport: crate::pmode::Transport,
    pub state: State,
    pub attempts: u32,
    pub next_attempt_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub error: Option<String>,
    /// The partner's last error signal, verified or not (an unverified one is shown, not
    /// trusted).
    pub partner_error: Option<PartnerError>,
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
    /// Compare-and-set lost: someone else moved the message first.
    #[error("message row {row} is {actual}, not {expected}: changed concurrently", actual = .actual.as_str(), expected = .expected.as_str())]
    Conflict { row: i64, expected: State, actual: State },
    #[error(transparent)]
    Illegal(#[from] crate::lifecycle::IllegalTransition),
    #[error("store data error: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether the failed write certainly did not commit (SQLite rolls the transaction back on
    /// any error it reports). A lost connection or a failed task may have committed first: the
    /// caller must then keep the files the row would name (the orphan sweep decides later).
    pub fn definitely_not_stored(&self) -> bool {
        matches!(self, StoreError::Database(_) | StoreError::Conflict { .. } | StoreError::Illegal(_))
    }

    /// Whether the same write may succeed if tried again: the database or the disk failed (busy,
    /// full, a lost connection), not the write itself (a lost compare-and-set, an illegal
    /// transition, a missing row or unreadable data).
    pub fn may_pass(&self) -> bool {
        matches!(self, StoreError::Database(_) | StoreError::Io(_) | StoreError::Task(_))
    }
}

/// A pulled message whose receipt did not come in time.
#[derive(Debug, Clone)]
pub struct Overdue {
    pub row: i64,
    pub attempts: u32,
    pub pmode: String,
}

/// The outcome of storing an inbound message.
#[derive(Debug)]
pub enum Inserted {
    New(i64),
    /// Already received: the stored answer (receipt, or error for a refused message) to
    /// answer with again, and the state the first copy is in.
    Duplicate {
        response: Option<Vec<u8>>,
        state: State,
    },
}

/// A submission as the store took it: inserted (or a repeat of an earlier one), its record as
/// stored, and whether it was also claimed for sending in the same commit.
#[derive(Debug)]
pub struct Accepted {
    pub inserted: Inserted,
    pub record: MessageRecord,
    pub claimed: bool,
}

/// One transition, as the events feed shows it to the backend: exactly one per transition
/// (notes such as a recognised duplicate are in the history, not in the feed).
#[derive(Debug, Clone, Serialize)]
pub struct FeedEvent {
    pub id: i64,
    pub at: String,
    pub message_id: String,
    pub direction: Direction,
    /// The lifecycle event (`submitted`, `claimed`, `receipt_received`, `received`…).
    pub event: String,
    /// The state before (None when the message was created).
    pub from: Option<String>,
    /// The state after.
    pub state: String,
    pub detail: String,
    pub partner: String,
    pub pmode: String,
    pub leg: String,
}

#[async_trait::async_trait]
pub trait MessageStore: Send + Sync {
    /// Stores a new message with its payload files; for inbound, a MessageId already present
    /// is a duplicate and nothing is written.
    async fn insert(&self, message: NewMessage) -> Result<Inserted, StoreError>;
    /// Leases due outbound messages (submitted or waiting_retry, next attempt reached) with
    /// the `claimed` event, moving them to `sending`.
    async fn claim_due(&self, now_ms: i64, limit: usize) -> Result<Vec<MessageRecord>, StoreError>;
    /// Inserts a submission (outbound) and reads it back; with `claim`, a message due now is
    /// also leased with the `claimed` event in the same commit, to be handed straight to a
    /// sender without a claim of its own. This default claims nothing (the sender's
    /// [`MessageStore::claim_due`] will).
    async fn insert_submission(&self, message: NewMessage, claim: bool) -> Result<Accepted, StoreError> {
        let _ = claim;
        let message_id = message.message_id.clone();
        let inserted = self.insert(message).await?;
        let record = self.get(Direction::Outbound, &message_id).await?;
        Ok(Accepted { inserted, record, claimed: false })
    }
    /// Applies `event` to the message at `row` if it is still in `expected` (compare-and-set):
    /// the new state, attempts, next attempt, error and partner error as the lifecycle says,
    /// `response` (the partner's signal) when given, and one history entry (one feed event).
    /// Returns the new state; [`StoreError::Conflict`] if the message had moved on.
    async fn transition(
        &self,
        row: i64,
        expected: State,
        event: Happening,
        response: Option<Vec<u8>>,
    ) -> Result<State, StoreError>;
    async fn get(&self, direction: Direction, message_id: &str) -> Result<MessageRecord, StoreError>;
    /// The messages of one page of [`MessageStore::search`] as records with payloads and
    /// history, but without the envelope and the stored signal (a list never reads them).
    async fn list(&self, search: &Search) -> Result<Vec<MessageRecord>, StoreError>;
    /// Messages left in `sending` by a crash go back to waiting_retry, due now (the
    /// `interrupted` event): all of them for a store one node owns, only expired leases for a
    /// shared one.
    async fn recover(&self, now_ms: i64) -> Result<usize, StoreError>;
    /// Pull: takes the oldest message held for `pmode`/`leg` with the `pulled_by_partner`
    /// event (receipt awaited until `expires_ms`).
    async fn take_pullable(&self, pmode: &str, leg: &str, expires_ms: i64)
    -> Result<Option<MessageRecord>, StoreError>;
    /// Whether several nodes share this store (then `recover` runs periodically, to take
    /// over the work of a node that died).
    fn shared(&self) -> bool {
        false
    }
    /// Ticks after every commit of this process that changed something, so that a long poll
    /// of the events answers at once instead of at its next look. None where other nodes
    /// commit too (PostgreSQL): their events are only seen by looking.
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
    /// Whether `insert` keeps [`NewMessage::unsynced`] copies (SQLite: they share the commit's
    /// one WAL fsync); otherwise callers sync payload files before inserting.
    fn keeps_file_copies(&self) -> bool {
        false
    }
    /// The newest kept copy (0 when there is none). A checkpoint reads it, syncs the data
    /// folder, then forgets the copies up to it: every one of them was written before.
    async fn unsynced_watermark(&self) -> Result<i64, StoreError> {
        Ok(0)
    }
    /// Forgets the kept copies up to `through`; returns how many.
    async fn forget_unsynced(&self, _through: i64) -> Result<usize, StoreError> {
        Ok(0)
    }
    /// Every kept copy (at start-up: files a power loss may have lost are written again).
    async fn unsynced_files(&self) -> Result<Vec<UnsyncedFile>, StoreError> {
        Ok(Vec::new())
    }
    /// Pulled messages whose receipt is overdue (indexed; no content read).
    async fn pulled_overdue(&self, now_ms: i64, limit: usize) -> Result<Vec<Overdue>, StoreError>;
    /// Every payload file path the store names (the orphan sweep's reference list).
    async fn payload_paths(&self) -> Result<Vec<std::path::PathBuf>, StoreError>;
    /// Transitions after `after` (an event id), oldest first.
    async fn events(&self, after: i64, limit: usize) -> Result<Vec<FeedEvent>, StoreError>;
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

    // What the console, the metrics and the alerts read and write (see [`operations`]).

    /// One page of messages, newest first, matching every condition given; rows below
    /// `search.before` (the cursor). At most `search.limit` + 1 (the extra one says there is a
    /// next page).
    async fn search(&self, search: &Search) -> Result<Vec<Summary>, StoreError>;
    /// Message counts by direction, state and partner, with the oldest creation and the
    /// latest change in each group (queue depth, oldest waiting, last success).
    async fn queue_stats(&self) -> Result<Vec<QueueStat>, StoreError>;
    /// Adds a note to a message's history (not a transition: the feed shows nothing).
    async fn note(&self, row: i64, detail: &str) -> Result<(), StoreError>;
    /// Records an inbound message this access point refused; keeps at most `keep` records
    /// and none older than `max_age_ms`.
    async fn record_refusal(&self, refusal: NewRefusal, keep: usize, max_age_ms: i64) -> Result<(), StoreError>;
    /// Refusals, newest first, with ids below `before`.
    async fn refusals(&self, before: Option<i64>, limit: usize) -> Result<Vec<Refusal>, StoreError>;
    async fn user(&self, name: &str) -> Result<Option<User>, StoreError>;
    async fn users(&self) -> Result<Vec<User>, StoreError>;
    /// Creates or replaces the user of that name.
    async fn put_user(&self, user: &User) -> Result<(), StoreError>;
    async fn delete_user(&self, name: &str) -> Result<bool, StoreError>;
    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;
    /// The audit log, newest first, with ids below `before`.
    async fn audit_log(&self, before: Option<i64>, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;
    /// Raises the alert `key` unless it is already active (compare-and-set: of several nodes,
    /// one raises it). Returns whether this call raised it.
    async fn raise_alert(&self, key: &str, rule: &str, detail: &str, at_ms: i64) -> Result<bool, StoreError>;
    /// Clears the active alert `key`; returns it if this call cleared it.
    async fn clear_alert(&self, key: &str, at_ms: i64) -> Result<Option<AlertRecord>, StoreError>;
    /// Push delivery: queues for `target` the received messages in the inbox (of `pmode` and
    /// `leg` when given) that no rule has queued yet; returns how many.
    async fn enqueue_deliveries(
        &self,
        target: &str,
        pmode: Option<&str>,
        leg: Option<&str>,
        now_ms: i64,
        limit: usize,
    ) -> Result<usize, StoreError>;
    /// Leases due deliveries of `target` until `lease_until_ms` (compare-and-set: of several
    /// nodes, one takes each); returns (message row, MessageId, attempts so far).
    async fn claim_deliveries(
        &self,
        target: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String, u32)>, StoreError>;
    async fn finish_delivery(&self, row: i64, target: &str, outcome: DeliveryOutcome) -> Result<(), StoreError>;
    /// Deliveries, newest first, in `state` when given.
    async fn deliveries(&self, state: Option<&str>, limit: usize) -> Result<Vec<Delivery>, StoreError>;
    /// A dead delivery is tried again now; returns whether it was dead.
    async fn retry_delivery(&self, row: i64, target: &str, now_ms: i64) -> Result<bool, StoreError>;
    /// An operator acknowledges the active alert `key` (once); returns whether this call did.
    async fn acknowledge_alert(&self, key: &str, by: &str, at_ms: i64) -> Result<bool, StoreError>;
    /// Active alerts first, then the latest cleared ones.
    async fn alerts(&self, limit: usize) -> Result<Vec<AlertRecord>, StoreError>;
}

/// The store's schema version. 1: the first release's tables; 2: document numbers, refusals,
/// users, audit, alerts and deliveries (the console and push delivery); 3: each message's
/// transport; 4: copies of payload files not yet synced (SQLite). A store at a higher version
/// was made by a newer release and is refused rather than misread.
pub const SCHEMA_VERSION: i64 = 4;

/// The error for a store made by a newer release.
pub fn newer_schema(found: i64) -> StoreError {
    StoreError::Corrupt(format!(
        "the store is at schema version {found}, made by a newer release; this one knows up to {SCHEMA_VERSION}: run that release, or restore a backup made by this one"
    ))
}

pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

pub fn format_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .map(crate::util::format_timestamp)
        .unwrap_or_default()
}

/// The time of a history entry: now, but never before the message's last entry (so the
/// history reads in order even when clocks of nodes or threads disagree by a little).
pub fn monotonic_at(now: i64, last: Option<i64>) -> i64 {
    last.map_or(now, |last| now.max(last))
}

/// The next-attempt column's new value, and whether to write it.
pub(crate) fn next_attempt_value(next: crate::lifecycle::NextAttempt) -> (bool, Option<i64>) {
    use crate::lifecycle::NextAttempt;
    match next {
        NextAttempt::Keep => (false, None),
        NextAttempt::Clear => (true, None),
        NextAttempt::At(at) => (true, Some(at)),
    }
}
