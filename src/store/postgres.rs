//! The PostgreSQL message store, for two or more access point nodes serving one country behind
//! one address. They share messages; outbound work is leased with `FOR UPDATE SKIP LOCKED`
//! so each attempt runs on one node; a node that dies mid-send leaves its lease to expire and
//! another node takes the message over; duplicates are caught across nodes by the unique
//! (direction, MessageId) constraint. Payload bytes stay in files on a folder every node
//! mounts (see README, "Several nodes on PostgreSQL"): they stream, and are never held whole
//! in memory, which bytea would require.

use super::*;
use deadpool_postgres::GenericClient;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::{NoTls, Row};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS messages (
    id              BIGSERIAL PRIMARY KEY,
    direction       TEXT NOT NULL,
    message_id      TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    pmode           TEXT NOT NULL,
    leg             TEXT NOT NULL,
    partner         TEXT NOT NULL,
    service         TEXT NOT NULL,
    action          TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    lease_until     BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    error           TEXT,
    envelope        BYTEA NOT NULL,
    response        BYTEA,
    document        TEXT,
    purged          BOOLEAN NOT NULL DEFAULT FALSE,
    UNIQUE (direction, message_id)
);
CREATE INDEX IF NOT EXISTS messages_due ON messages (state, next_attempt_at);
-- Retention's index (see the SQLite store's): purged or not before the age.
CREATE INDEX IF NOT EXISTS messages_retention ON messages (state, purged, updated_at);
DROP INDEX IF EXISTS messages_age;
CREATE INDEX IF NOT EXISTS messages_listing ON messages (direction, state, id);
CREATE TABLE IF NOT EXISTS payloads (
    message_id  BIGINT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    idx         INTEGER NOT NULL,
    content_id  TEXT NOT NULL,
    mime_type   TEXT NOT NULL,
    path        TEXT NOT NULL,
    size        BIGINT NOT NULL,
    sha256      TEXT NOT NULL,
    filename    TEXT,
    wire_type   TEXT,
    PRIMARY KEY (message_id, idx)
);
CREATE TABLE IF NOT EXISTS history (
    id          BIGSERIAL PRIMARY KEY,
    message_id  BIGINT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    at          BIGINT NOT NULL,
    state       TEXT NOT NULL,
    detail      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_message ON history (message_id);
ALTER TABLE messages ADD COLUMN IF NOT EXISTS partner_error TEXT;
ALTER TABLE history ADD COLUMN IF NOT EXISTS event TEXT;
ALTER TABLE history ADD COLUMN IF NOT EXISTS from_state TEXT;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS document_number TEXT;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS transport TEXT NOT NULL DEFAULT 'as4';
CREATE INDEX IF NOT EXISTS messages_partner ON messages (partner);
CREATE INDEX IF NOT EXISTS messages_message_id ON messages (message_id);
CREATE INDEX IF NOT EXISTS messages_conversation ON messages (conversation_id);
CREATE INDEX IF NOT EXISTS messages_created ON messages (created_at);
CREATE INDEX IF NOT EXISTS messages_document ON messages (document_number);
DROP INDEX IF EXISTS messages_queue;
CREATE INDEX IF NOT EXISTS messages_queue_leg ON messages (direction, state, partner, leg, created_at, updated_at);
CREATE TABLE IF NOT EXISTS refusals (
    id         BIGSERIAL PRIMARY KEY,
    at         BIGINT NOT NULL,
    remote     TEXT,
    partner    TEXT,
    message_id TEXT,
    code       TEXT NOT NULL,
    detail     TEXT NOT NULL,
    header     BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS refusals_at ON refusals (at);
CREATE TABLE IF NOT EXISTS users (
    name          TEXT PRIMARY KEY,
    role          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    failures      INTEGER NOT NULL DEFAULT 0,
    locked_until  BIGINT,
    created_at    BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id     BIGSERIAL PRIMARY KEY,
    at     BIGINT NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alerts (
    id         BIGSERIAL PRIMARY KEY,
    key        TEXT NOT NULL,
    rule       TEXT NOT NULL,
    detail     TEXT NOT NULL,
    raised_at  BIGINT NOT NULL,
    cleared_at BIGINT,
    acknowledged_by TEXT,
    acknowledged_at BIGINT
);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_active ON alerts (key) WHERE cleared_at IS NULL;
CREATE TABLE IF NOT EXISTS deliveries (
    message_row BIGINT NOT NULL PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    target      TEXT NOT NULL,
    state       TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     BIGINT,
    last_error  TEXT,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (target, state, next_at);
"#;

/// Messages counted by group (direction, state, partner, leg), for
/// [`PostgresStore::queue_stats`]: `/metrics`, the alerts and the partners page read the queue
/// often, and counting the stored messages each time read all of them (~280 ms of both cores
/// at 1,000,000 messages, more as they grow; 4 ms now: `make bench-postgres`). A counter row
/// per group, updated by every transaction, would make the nodes' writers queue on the same
/// few rows, so each change of a message appends a change of its group's count (+1, −1) to
/// `queue_count_changes` instead: an insert, nothing shared. Reading the queue folds the changes into `queue_counts` and adds the
/// ones not folded yet. Run in the schema transaction, under the schema lock: the first time,
/// `messages` is locked against writes from the fill until the triggers exist.
const QUEUE_COUNTS: &str = r#"
-- No key: rows are only appended, and a fold takes them all.
CREATE TABLE IF NOT EXISTS queue_count_changes (
    direction  TEXT NOT NULL,
    state      TEXT NOT NULL,
    partner    TEXT NOT NULL,
    leg        TEXT NOT NULL,
    delta      INTEGER NOT NULL,
    -- When a message came into the group (ms); 0 for one that left it.
    updated_at BIGINT NOT NULL
);
DO $$ BEGIN
    IF to_regclass('queue_counts') IS NULL THEN
        LOCK TABLE messages IN SHARE ROW EXCLUSIVE MODE;
        CREATE TABLE queue_counts (
            direction         TEXT NOT NULL,
            state             TEXT NOT NULL,
            partner           TEXT NOT NULL,
            leg               TEXT NOT NULL,
            count             BIGINT NOT NULL,
            latest_updated_at BIGINT NOT NULL,
            PRIMARY KEY (direction, state, partner, leg)
        );
        INSERT INTO queue_counts
            SELECT direction, state, partner, leg, COUNT(*), MAX(updated_at) FROM messages
            GROUP BY direction, state, partner, leg;
    END IF;
END $$;
CREATE OR REPLACE FUNCTION queue_count_change() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO queue_count_changes (direction, state, partner, leg, delta, updated_at)
            VALUES (OLD.direction, OLD.state, OLD.partner, OLD.leg, -1, 0);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO queue_count_changes (direction, state, partner, leg, delta, updated_at)
            VALUES (NEW.direction, NEW.state, NEW.partner, NEW.leg, 1, NEW.updated_at);
    END IF;
    RETURN NULL;
END $f$;
DROP TRIGGER IF EXISTS queue_counts_insert_delete ON messages;
DROP TRIGGER IF EXISTS queue_counts_update ON messages;
CREATE TRIGGER queue_counts_insert_delete AFTER INSERT OR DELETE ON messages
    FOR EACH ROW EXECUTE FUNCTION queue_count_change();
CREATE TRIGGER queue_counts_update AFTER UPDATE OF direction, state, partner, leg ON messages
    FOR EACH ROW
    WHEN ((OLD.direction, OLD.state, OLD.partner, OLD.leg) IS DISTINCT FROM (NEW.direction, NEW.state, NEW.partner, NEW.leg))
    EXECUTE FUNCTION queue_count_change();
"#;

/// Moves the changes into `queue_counts`. A change deleted by one node's fold is not seen by
/// another's (its `DELETE` waits, then skips the row), so each is counted once; the nodes also
/// take turns (`QUEUE_FOLD_LOCK`), and one that finds the lock taken reads without folding.
const FOLD_QUEUE_COUNT_CHANGES: &str = "
WITH folded AS (DELETE FROM queue_count_changes RETURNING direction, state, partner, leg, delta, updated_at)
INSERT INTO queue_counts (direction, state, partner, leg, count, latest_updated_at)
    SELECT direction, state, partner, leg, SUM(delta), MAX(updated_at) FROM folded
    GROUP BY direction, state, partner, leg
ON CONFLICT (direction, state, partner, leg) DO UPDATE SET
    count = queue_counts.count + EXCLUDED.count,
    latest_updated_at = GREATEST(queue_counts.latest_updated_at, EXCLUDED.latest_updated_at)";

/// Nodes folding the count changes at the same moment: one folds, the others only read.
const QUEUE_FOLD_LOCK: i64 = 0x5645_4e54_5155_4555;

/// The queue by group, in one statement (one snapshot): the folded counts plus the changes not
/// folded yet, and each group's oldest message found through the `messages_queue_leg` index
/// (its first entry for the group, not a scan).
const QUEUE_STATS: &str = "
SELECT g.direction, g.state, g.partner, g.leg, g.count,
    (SELECT MIN(m.created_at) FROM messages m
        WHERE m.direction = g.direction AND m.state = g.state AND m.partner = g.partner AND m.leg = g.leg),
    g.latest_updated_at
FROM (SELECT direction, state, partner, leg, SUM(count)::BIGINT AS count, MAX(latest_updated_at) AS latest_updated_at
      FROM (SELECT direction, state, partner, leg, count, latest_updated_at FROM queue_counts
            UNION ALL
            SELECT direction, state, partner, leg, delta, updated_at FROM queue_count_changes) c
      GROUP BY direction, state, partner, leg) g
WHERE g.count > 0";

/// Nodes creating the schema at the same moment take turns.
const SCHEMA_LOCK: i64 = 0x5645_4e54_414e_4953;

pub struct PostgresStore {
    pool: Pool,
    /// How long a node owns a message it is sending; past it, another node may take over.
    lease_ms: i64,
    _folding: Folding,
}

/// How often a node folds the queue count changes whether or not anyone reads the queue, so
/// that `queue_count_changes` holds at most this long's changes.
const QUEUE_FOLD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// The store's folding task, stopped with the store. A fold stopped midway rolls back whole.
struct Folding(tokio::task::AbortHandle);

impl Drop for Folding {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Folding {
    fn start(pool: Pool) -> Folding {
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(QUEUE_FOLD_INTERVAL);
            loop {
                tick.tick().await;
                if let Err(e) = fold_queue_counts(&pool).await {
                    tracing::warn!(error = %e, "cannot fold the queue count changes");
                }
            }
        });
        Folding(task.abort_handle())
    }
}

/// Folds the count changes into `queue_counts` (see [`QUEUE_COUNTS`]) in one transaction: a
/// fold cut short by a caller going away rolls back whole, so no change is lost or counted
/// twice.
async fn fold_queue_counts(pool: &Pool) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(pg)?;
    let tx = client.transaction().await.map_err(pg)?;
    let turn: bool =
        tx.query_one("SELECT pg_try_advisory_xact_lock($1)", &[&QUEUE_FOLD_LOCK]).await.map_err(pg)?.get(0);
    if turn {
        tx.execute(FOLD_QUEUE_COUNT_CHANGES, &[]).await.map_err(pg)?;
    }
    tx.commit().await.map_err(pg)
}

fn pg(e: impl std::error::Error + 'static) -> StoreError {
    // tokio-postgres says only "db error"; the server's message is in the source.
    let detail = std::error::Error::source(&e).map(|s| format!(": {s}")).unwrap_or_default();
    StoreError::Task(format!("PostgreSQL: {e}{detail}"))
}

impl PostgresStore {
    /// Connects with a libpq-style connection string (`host=... user=... dbname=...`).
    pub async fn connect(url: &str, pool_size: usize, lease: std::time::Duration) -> Result<PostgresStore, StoreError> {
        let config: tokio_postgres::Config = url.parse().map_err(pg)?;
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager).max_size(pool_size.max(2)).build().map_err(pg)?;
        let client = pool.get().await.map_err(pg)?;
        client.execute("SELECT pg_advisory_lock($1)", &[&SCHEMA_LOCK]).await.map_err(pg)?;
        let created = migrate(&client).await;
        client.execute("SELECT pg_advisory_unlock($1)", &[&SCHEMA_LOCK]).await.map_err(pg)?;
        created?;
        let folding = Folding::start(pool.clone());
        Ok(PostgresStore { pool, lease_ms: lease.as_millis() as i64, _folding: folding })
    }
}

/// Checks the schema version, then creates or migrates forward in one transaction (DDL is
/// transactional in PostgreSQL). Run under the schema lock.
async fn migrate(client: &deadpool_postgres::Object) -> Result<(), StoreError> {
    client.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)").await.map_err(pg)?;
    let found: Option<i64> = client.query_one("SELECT MAX(version) FROM schema_version", &[]).await.map_err(pg)?.get(0);
    if let Some(found) = found.filter(|v| *v > SCHEMA_VERSION) {
        return Err(newer_schema(found));
    }
    let sql = format!(
        "BEGIN; {SCHEMA} {QUEUE_COUNTS} DELETE FROM schema_version; INSERT INTO schema_version (version) VALUES ({SCHEMA_VERSION}); COMMIT;"
    );
    client.batch_execute(&sql).await.map_err(pg)
}

fn record(row: &Row) -> MessageRecord {
    let direction: String = row.get("direction");
    MessageRecord {
        row: row.get("id"),
        direction: if direction == "inbound" { Direction::Inbound } else { Direction::Outbound },
        message_id: row.get("message_id"),
        conversation_id: row.get("conversation_id"),
        pmode: row.get("pmode"),
        leg: row.get("leg"),
        partner: row.get("partner"),
        service: row.get("service"),
        action: row.get("action"),
        transport: crate::pmode::Transport::parse(row.get("transport")).unwrap_or_default(),
        state: State::parse(row.get("state")).unwrap_or(State::Failed),
        partner_error: row.get::<_, Option<String>>("partner_error").and_then(|d| serde_json::from_str(&d).ok()),
        attempts: row.get::<_, i32>("attempts") as u32,
        next_attempt_at: row.get::<_, Option<i64>>("next_attempt_at").map(format_ms),
        created_at: format_ms(row.get("created_at")),
        updated_at: format_ms(row.get("updated_at")),
        error: row.get("error"),
        document: row.get::<_, Option<String>>("document").and_then(|d| serde_json::from_str(&d).ok()),
        payloads: Vec::new(),
        history: Vec::new(),
        envelope: row.get("envelope"),
        response: row.get("response"),
    }
}

async fn load(client: &impl GenericClient, id: i64) -> Result<MessageRecord, StoreError> {
    load_with(client, id, true).await
}

/// A record; with its envelope and stored signal only when `content` (lists leave them out).
async fn load_with(client: &impl GenericClient, id: i64, content: bool) -> Result<MessageRecord, StoreError> {
    let sql = if content {
        "SELECT * FROM messages WHERE id = $1"
    } else {
        "SELECT id, direction, message_id, conversation_id, pmode, leg, partner, service, action, state, attempts,
                next_attempt_at, created_at, updated_at, error, partner_error, document, transport,
                ''::BYTEA AS envelope, NULL::BYTEA AS response
         FROM messages WHERE id = $1"
    };
    let row = client.query_opt(sql, &[&id]).await.map_err(pg)?;
    let mut r = record(&row.ok_or_else(|| StoreError::NotFound(format!("row {id}")))?);
    r.payloads = client
        .query("SELECT content_id, mime_type, path, size, sha256, filename, wire_type FROM payloads WHERE message_id = $1 ORDER BY idx", &[&id])
        .await
        .map_err(pg)?
        .iter()
        .map(|p| StoredPayload {
            content_id: p.get(0),
            mime_type: p.get(1),
            path: std::path::PathBuf::from(p.get::<_, String>(2)),
            size: p.get::<_, i64>(3) as u64,
            sha256: p.get(4),
            filename: p.get(5),
            wire_type: p.get(6),
        })
        .collect();
    r.history = client
        .query("SELECT at, state, detail, event FROM history WHERE message_id = $1 ORDER BY id", &[&id])
        .await
        .map_err(pg)?
        .iter()
        .map(|h| HistoryEntry { at: format_ms(h.get(0)), state: h.get(1), detail: h.get(2), event: h.get(3) })
        .collect();
    Ok(r)
}

fn state_of(value: &str) -> Result<State, StoreError> {
    State::parse(value).ok_or_else(|| StoreError::Corrupt(format!("unknown state '{value}'")))
}

/// Compare-and-set inside `tx`: the row is locked, checked to be in `expected`, moved as the
/// lifecycle says. Another node's concurrent change makes this a [`StoreError::Conflict`].
async fn apply(
    tx: &deadpool_postgres::Transaction<'_>,
    row: i64,
    expected: State,
    event: &Happening,
    response: Option<&[u8]>,
    lease_until: Option<i64>,
) -> Result<State, StoreError> {
    let found = tx
        .query_opt(
            "SELECT direction, state, attempts, (SELECT MAX(at) FROM history WHERE message_id = $1) FROM messages WHERE id = $1 FOR UPDATE",
            &[&row],
        )
        .await
        .map_err(pg)?
        .ok_or_else(|| StoreError::NotFound(format!("row {row}")))?;
    let direction = Direction::parse(found.get(0)).unwrap_or(Direction::Outbound);
    let actual = state_of(found.get(1))?;
    if actual != expected {
        return Err(StoreError::Conflict { row, expected, actual });
    }
    let attempts = found.get::<_, i32>(2) as u32;
    let t = crate::lifecycle::next(direction, actual, event, attempts)?;
    let at = monotonic_at(now_ms(), found.get(3));
    let (set_next, next) = next_attempt_value(t.next_attempt);
    let partner_error = t.partner_error.as_ref().and_then(|e| serde_json::to_string(e).ok());
    let changed = tx
        .execute(
            "UPDATE messages SET state = $2, attempts = CASE WHEN $12 THEN 0 ELSE attempts + $3 END,
                    next_attempt_at = CASE WHEN $4 THEN $5 ELSE next_attempt_at END,
                    error = COALESCE($6, error), partner_error = COALESCE($7, partner_error),
                    response = COALESCE($8, response), updated_at = $9, lease_until = $11
             WHERE id = $1 AND state = $10",
            &[
                &row,
                &t.to.as_str(),
                &(t.counts_attempt as i32),
                &set_next,
                &next,
                &t.error,
                &partner_error,
                &response,
                &at,
                &expected.as_str(),
                &lease_until,
                &t.resets_attempts,
            ],
        )
        .await
        .map_err(pg)?;
    if changed == 0 {
        return Err(StoreError::Conflict { row, expected, actual });
    }
    tx.execute(
        "INSERT INTO history (message_id, at, state, detail, event, from_state) VALUES ($1, $2, $3, $4, $5, $6)",
        &[&row, &at, &t.to.as_str(), &t.detail, &t.event, &expected.as_str()],
    )
    .await
    .map_err(pg)?;
    Ok(t.to)
}

#[async_trait::async_trait]
impl MessageStore for PostgresStore {
    async fn insert(&self, m: NewMessage) -> Result<Inserted, StoreError> {
        let mut client = self.pool.get().await.map_err(pg)?;
        let tx = client.transaction().await.map_err(pg)?;
        let now = now_ms();
        let (direction, created) = crate::lifecycle::create(&m.creation, now);
        let (_, next_attempt) = next_attempt_value(created.next_attempt);
        let document = m.document.as_ref().map(|d| d.to_string());
        // ON CONFLICT makes duplicate detection race-free across nodes.
        let inserted = tx
            .query_opt(
                "INSERT INTO messages (direction, message_id, conversation_id, pmode, leg, partner, service, action, state,
                                       next_attempt_at, created_at, updated_at, envelope, response, document, error,
                                       document_number, transport)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $13, $14, $15, $16, $17)
                 ON CONFLICT (direction, message_id) DO NOTHING RETURNING id",
                &[
                    &direction.as_str(),
                    &m.message_id,
                    &m.conversation_id,
                    &m.pmode,
                    &m.leg,
                    &m.partner,
                    &m.service,
                    &m.action,
                    &created.to.as_str(),
                    &next_attempt,
                    &now,
                    &m.envelope,
                    &m.response,
                    &document,
                    &created.error,
                    &document_number(m.document.as_ref()),
                    &m.transport.as_str(),
                ],
            )
            .await
            .map_err(pg)?;
        let Some(inserted) = inserted else {
            let existing = tx
                .query_one(
                    "SELECT id, response, state FROM messages WHERE direction = $1 AND message_id = $2",
                    &[&direction.as_str(), &m.message_id],
                )
                .await
                .map_err(pg)?;
            if direction == Direction::Inbound {
                // A note, not a transition: nothing changed, the feed shows nothing.
                tx.execute(
                    "INSERT INTO history (message_id, at, state, detail)
                     SELECT id, GREATEST($2, (SELECT MAX(at) FROM history WHERE message_id = $1)), state,
                            'duplicate received; answered with the stored answer' FROM messages WHERE id = $1",
                    &[&existing.get::<_, i64>(0), &now],
                )
                .await
                .map_err(pg)?;
            }
            tx.commit().await.map_err(pg)?;
            return Ok(Inserted::Duplicate { response: existing.get(1), state: state_of(existing.get(2))? });
        };
        let id: i64 = inserted.get(0);
        for (idx, p) in m.payloads.iter().enumerate() {
            tx.execute(
                "INSERT INTO payloads (message_id, idx, content_id, mime_type, path, size, sha256, filename, wire_type) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[&id, &(idx as i32), &p.content_id, &p.mime_type, &p.path.to_string_lossy().as_ref(), &(p.size as i64), &p.sha256, &p.filename, &p.wire_type],
            )
            .await
            .map_err(pg)?;
        }
        tx.execute(
            "INSERT INTO history (message_id, at, state, detail, event) VALUES ($1, $2, $3, $4, $5)",
            &[&id, &now, &created.to.as_str(), &created.detail, &created.event],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(Inserted::New(id))
    }

    async fn claim_due(&self, now_ms: i64, limit: usize) -> Result<Vec<MessageRecord>, StoreError> {
        let mut client = self.pool.get().await.map_err(pg)?;
        let tx = client.transaction().await.map_err(pg)?;
        let lease_until = now_ms + self.lease_ms;
        let due = tx
            .query(
                "SELECT id, state FROM messages WHERE direction = 'outbound' AND state IN ('submitted', 'waiting_retry')
                 AND (next_attempt_at IS NULL OR next_attempt_at <= $1)
                 ORDER BY next_attempt_at, id LIMIT $2 FOR UPDATE SKIP LOCKED",
                &[&now_ms, &(limit as i64)],
            )
            .await
            .map_err(pg)?;
        let mut records = Vec::with_capacity(due.len());
        for row in due {
            let id: i64 = row.get(0);
            apply(&tx, id, state_of(row.get(1))?, &Happening::Claimed, None, Some(lease_until)).await?;
            records.push(load(&tx, id).await?);
        }
        tx.commit().await.map_err(pg)?;
        Ok(records)
    }

    async fn transition(
        &self,
        row: i64,
        expected: State,
        event: Happening,
        response: Option<Vec<u8>>,
    ) -> Result<State, StoreError> {
        let mut client = self.pool.get().await.map_err(pg)?;
        let tx = client.transaction().await.map_err(pg)?;
        let to = apply(&tx, row, expected, &event, response.as_deref(), None).await?;
        tx.commit().await.map_err(pg)?;
        Ok(to)
    }

    async fn get(&self, direction: Direction, message_id: &str) -> Result<MessageRecord, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let row = client
            .query_opt(
                "SELECT id FROM messages WHERE direction = $1 AND message_id = $2",
                &[&direction.as_str(), &message_id],
            )
            .await
            .map_err(pg)?
            .ok_or_else(|| StoreError::NotFound(message_id.to_owned()))?;
        load(&client, row.get(0)).await
    }

    async fn list(&self, search: &Search) -> Result<Vec<MessageRecord>, StoreError> {
        let rows = self.search(search).await?;
        let client = self.pool.get().await.map_err(pg)?;
        let mut out = Vec::with_capacity(rows.len());
        for summary in rows {
            out.push(load_with(&client, summary.row, false).await?);
        }
        Ok(out)
    }

    fn shared(&self) -> bool {
        true
    }

    async fn pulled_overdue(&self, now_ms: i64, limit: usize) -> Result<Vec<Overdue>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let rows = client
            .query(
                "SELECT id, attempts, pmode FROM messages WHERE state = 'pulled' AND next_attempt_at <= $1 LIMIT $2",
                &[&now_ms, &(limit as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| Overdue { row: r.get(0), attempts: r.get::<_, i32>(1) as u32, pmode: r.get(2) })
            .collect())
    }

    async fn payload_paths(&self) -> Result<Vec<std::path::PathBuf>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let rows = client.query("SELECT path FROM payloads", &[]).await.map_err(pg)?;
        Ok(rows.iter().map(|r| std::path::PathBuf::from(r.get::<_, String>(0))).collect())
    }

    async fn take_pullable(
        &self,
        pmode: &str,
        leg: &str,
        expires_ms: i64,
    ) -> Result<Option<MessageRecord>, StoreError> {
        let mut client = self.pool.get().await.map_err(pg)?;
        let tx = client.transaction().await.map_err(pg)?;
        let row = tx
            .query_opt(
                "SELECT id FROM messages WHERE direction = 'outbound' AND state = 'pullable' AND pmode = $1 AND leg = $2
                 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
                &[&pmode, &leg],
            )
            .await
            .map_err(pg)?;
        let Some(row) = row else { return Ok(None) };
        let id: i64 = row.get(0);
        apply(&tx, id, State::Pullable, &Happening::PulledByPartner { receipt_due: expires_ms }, None, None).await?;
        let record = load(&tx, id).await?;
        tx.commit().await.map_err(pg)?;
        Ok(Some(record))
    }

    /// Only leases that expired: other nodes may be sending right now.
    async fn recover(&self, now_ms: i64) -> Result<usize, StoreError> {
        let mut client = self.pool.get().await.map_err(pg)?;
        let tx = client.transaction().await.map_err(pg)?;
        let ids: Vec<i64> = tx
            .query(
                "SELECT id FROM messages WHERE direction = 'outbound' AND state = 'sending'
                 AND (lease_until IS NULL OR lease_until < $1) FOR UPDATE SKIP LOCKED",
                &[&now_ms],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for id in &ids {
            apply(&tx, *id, State::Sending, &Happening::Interrupted { retry_at: now_ms }, None, None).await?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(ids.len())
    }

    async fn events(&self, after: i64, limit: usize) -> Result<Vec<FeedEvent>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let rows = client
            .query(
                "SELECT h.id, h.at, m.message_id, m.direction, h.state, h.detail, h.event, h.from_state, m.partner, m.pmode, m.leg
                 FROM history h JOIN messages m ON m.id = h.message_id
                 WHERE h.id > $1 AND h.event IS NOT NULL ORDER BY h.id LIMIT $2",
                &[&after, &(limit.clamp(1, 10_000) as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| FeedEvent {
                id: r.get(0),
                at: format_ms(r.get(1)),
                message_id: r.get(2),
                direction: Direction::parse(r.get(3)).unwrap_or(Direction::Outbound),
                state: r.get(4),
                detail: r.get(5),
                event: r.get(6),
                from: r.get(7),
                partner: r.get(8),
                pmode: r.get(9),
                leg: r.get(10),
            })
            .collect())
    }

    async fn purge_content(
        &self,
        state: State,
        before_ms: i64,
        limit: usize,
    ) -> Result<(usize, Vec<std::path::PathBuf>), StoreError> {
        let mut client = self.pool.get().await.map_err(pg)?;
        let tx = client.transaction().await.map_err(pg)?;
        let ids: Vec<i64> = tx
            .query(
                "UPDATE messages SET envelope = '\\x', purged = TRUE WHERE id IN
                 (SELECT id FROM messages WHERE state = $1 AND purged = FALSE AND updated_at < $2 LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING id",
                &[&state.as_str(), &before_ms, &(limit as i64)],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let files = tx.query("SELECT path FROM payloads WHERE message_id = ANY($1)", &[&ids]).await.map_err(pg)?;
        for id in &ids {
            tx.execute(
                "INSERT INTO history (message_id, at, state, detail) VALUES ($1, $2, $3, 'content removed by retention')",
                &[id, &now_ms(), &state.as_str()],
            )
            .await
            .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)?;
        Ok((ids.len(), files.iter().map(|r| std::path::PathBuf::from(r.get::<_, String>(0))).collect()))
    }

    async fn purge_messages(
        &self,
        state: State,
        pmode: Option<&str>,
        before_ms: i64,
        limit: usize,
    ) -> Result<(usize, Vec<std::path::PathBuf>), StoreError> {
        let mut client = self.pool.get().await.map_err(pg)?;
        let tx = client.transaction().await.map_err(pg)?;
        let ids: Vec<i64> = tx
            .query(
                "SELECT id FROM messages WHERE state = $1 AND purged IN (FALSE, TRUE) AND updated_at < $2
                 AND ($4::TEXT IS NULL OR pmode = $4) LIMIT $3 FOR UPDATE SKIP LOCKED",
                &[&state.as_str(), &before_ms, &(limit as i64), &pmode],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let files = tx.query("SELECT path FROM payloads WHERE message_id = ANY($1)", &[&ids]).await.map_err(pg)?;
        tx.execute("DELETE FROM messages WHERE id = ANY($1)", &[&ids]).await.map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok((ids.len(), files.iter().map(|r| std::path::PathBuf::from(r.get::<_, String>(0))).collect()))
    }

    async fn search(&self, search: &Search) -> Result<Vec<Summary>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let mut conditions = Vec::new();
        let mut values: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> = Vec::new();
        let mut push = |condition: &str, value: Box<dyn tokio_postgres::types::ToSql + Sync + Send>| {
            values.push(value);
            conditions.push(condition.replace('?', &format!("${}", values.len())));
        };
        if let Some(d) = search.direction {
            push("direction = ?", Box::new(d.as_str()));
        }
        if let Some(s) = search.state {
            push("state = ?", Box::new(s.as_str()));
        }
        for (column, value) in search.text_conditions() {
            push(&format!("{column} = ?"), Box::new(value.to_owned()));
        }
        if let Some(from) = search.from_ms {
            push("created_at >= ?", Box::new(from));
        }
        if let Some(to) = search.to_ms {
            push("created_at < ?", Box::new(to));
        }
        if let Some(before) = search.before {
            push("id < ?", Box::new(before));
        }
        let clause = if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) };
        let sql = format!(
            "SELECT id, direction, message_id, conversation_id, pmode, leg, partner, service, action, state, attempts,
                    created_at, updated_at, error, document_number
             FROM messages {clause} ORDER BY id DESC LIMIT {}",
            search.limit.saturating_add(1)
        );
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            values.iter().map(|v| v.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
        let rows = client.query(&sql, &params).await.map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| Summary {
                row: r.get(0),
                direction: Direction::parse(r.get(1)).unwrap_or(Direction::Outbound),
                message_id: r.get(2),
                conversation_id: r.get(3),
                pmode: r.get(4),
                leg: r.get(5),
                partner: r.get(6),
                service: r.get(7),
                action: r.get(8),
                state: State::parse(r.get(9)).unwrap_or(State::Failed),
                attempts: r.get::<_, i32>(10) as u32,
                created_at: format_ms(r.get(11)),
                updated_at: format_ms(r.get(12)),
                error: r.get(13),
                document_number: r.get(14),
            })
            .collect())
    }

    /// Folds the count changes first, so that the read adds few of them.
    async fn queue_stats(&self) -> Result<Vec<QueueStat>, StoreError> {
        fold_queue_counts(&self.pool).await?;
        let client = self.pool.get().await.map_err(pg)?;
        let rows = client.query(QUEUE_STATS, &[]).await.map_err(pg)?;
        rows.iter()
            .map(|r| {
                let latest_updated_ms: i64 = r.get(6);
                Ok(QueueStat {
                    direction: Direction::parse(r.get(0)).unwrap_or(Direction::Outbound),
                    state: state_of(r.get(1))?,
                    partner: r.get(2),
                    leg: r.get(3),
                    count: r.get::<_, i64>(4) as u64,
                    // Present whenever the count is (same snapshot); a guard, not a case.
                    oldest_created_ms: r.get::<_, Option<i64>>(5).unwrap_or(latest_updated_ms),
                    latest_updated_ms,
                })
            })
            .collect()
    }

    async fn note(&self, row: i64, detail: &str) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let changed = client
            .execute(
                "INSERT INTO history (message_id, at, state, detail)
                 SELECT id, GREATEST($2, COALESCE((SELECT MAX(at) FROM history WHERE message_id = $1), 0)), state, $3
                 FROM messages WHERE id = $1",
                &[&row, &now_ms(), &detail],
            )
            .await
            .map_err(pg)?;
        if changed == 0 { Err(StoreError::NotFound(format!("row {row}"))) } else { Ok(()) }
    }

    async fn record_refusal(&self, r: NewRefusal, keep: usize, max_age_ms: i64) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let row = client
            .query_one(
                "INSERT INTO refusals (at, remote, partner, message_id, code, detail, header)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                &[&r.at_ms, &r.remote, &r.partner, &r.message_id, &r.code, &r.detail, &r.header],
            )
            .await
            .map_err(pg)?;
        let newest: i64 = row.get(0);
        client
            .execute(
                "DELETE FROM refusals WHERE id <= $1::BIGINT - $2::BIGINT OR at < $3",
                &[&newest, &(keep as i64), &(r.at_ms - max_age_ms)],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn refusals(&self, before: Option<i64>, limit: usize) -> Result<Vec<Refusal>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let rows = client
            .query(
                "SELECT id, at, remote, partner, message_id, code, detail, header FROM refusals
                 WHERE id < $1 ORDER BY id DESC LIMIT $2",
                &[&before.unwrap_or(i64::MAX), &(limit as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| Refusal {
                id: r.get(0),
                at: format_ms(r.get(1)),
                remote: r.get(2),
                partner: r.get(3),
                message_id: r.get(4),
                code: r.get(5),
                detail: r.get(6),
                header: String::from_utf8_lossy(r.get::<_, &[u8]>(7)).into_owned(),
            })
            .collect())
    }

    async fn user(&self, name: &str) -> Result<Option<User>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let row = client
            .query_opt(
                "SELECT name, role, password_hash, failures, locked_until, created_at FROM users WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(pg)?;
        Ok(row.as_ref().map(pg_user))
    }

    async fn users(&self) -> Result<Vec<User>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let rows = client
            .query("SELECT name, role, password_hash, failures, locked_until, created_at FROM users ORDER BY name", &[])
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(pg_user).collect())
    }

    async fn put_user(&self, u: &User) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        client
            .execute(
                "INSERT INTO users (name, role, password_hash, failures, locked_until, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (name) DO UPDATE SET role = $2, password_hash = $3, failures = $4, locked_until = $5",
                &[&u.name, &u.role, &u.password_hash, &(u.failures as i32), &u.locked_until_ms, &u.created_ms],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn delete_user(&self, name: &str) -> Result<bool, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        Ok(client.execute("DELETE FROM users WHERE name = $1", &[&name]).await.map_err(pg)? > 0)
    }

    async fn append_audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        client
            .execute(
                "INSERT INTO audit (at, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)",
                &[&e.at_ms, &e.actor, &e.action, &e.target, &e.detail],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn audit_log(&self, before: Option<i64>, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let rows = client
            .query(
                "SELECT id, at, actor, action, target, detail FROM audit WHERE id < $1 ORDER BY id DESC LIMIT $2",
                &[&before.unwrap_or(i64::MAX), &(limit as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| AuditEntry {
                id: r.get(0),
                at_ms: r.get(1),
                at: format_ms(r.get(1)),
                actor: r.get(2),
                action: r.get(3),
                target: r.get(4),
                detail: r.get(5),
            })
            .collect())
    }

    async fn raise_alert(&self, key: &str, rule: &str, detail: &str, at_ms: i64) -> Result<bool, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let raised = client
            .execute(
                "INSERT INTO alerts (key, rule, detail, raised_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (key) WHERE cleared_at IS NULL DO NOTHING",
                &[&key, &rule, &detail, &at_ms],
            )
            .await
            .map_err(pg)?;
        Ok(raised > 0)
    }

    async fn clear_alert(&self, key: &str, at_ms: i64) -> Result<Option<AlertRecord>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let row = client
            .query_opt(
                "UPDATE alerts SET cleared_at = $2 WHERE key = $1 AND cleared_at IS NULL
                 RETURNING key, rule, detail, raised_at, cleared_at, acknowledged_by, acknowledged_at",
                &[&key, &at_ms],
            )
            .await
            .map_err(pg)?;
        Ok(row.as_ref().map(pg_alert))
    }

    async fn enqueue_deliveries(
        &self,
        target: &str,
        pmode: Option<&str>,
        leg: Option<&str>,
        now_ms: i64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let queued = client
            .execute(
                "INSERT INTO deliveries (message_row, target, state, attempts, next_at, updated_at)
                 SELECT id, $1, 'pending', 0, $4, $4 FROM messages m
                 WHERE direction = 'inbound' AND state = 'delivered'
                   AND ($2::TEXT IS NULL OR pmode = $2) AND ($3::TEXT IS NULL OR leg = $3)
                   AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_row = m.id)
                 ORDER BY id LIMIT $5
                 ON CONFLICT (message_row) DO NOTHING",
                &[&target, &pmode, &leg, &now_ms, &(limit as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(queued as usize)
    }

    async fn claim_deliveries(
        &self,
        target: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String, u32)>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let rows = client
            .query(
                "WITH claimed AS (
                     UPDATE deliveries SET next_at = $3 WHERE message_row IN (
                         SELECT message_row FROM deliveries WHERE target = $1 AND state = 'pending' AND next_at <= $2
                         ORDER BY next_at LIMIT $4 FOR UPDATE SKIP LOCKED)
                     RETURNING message_row, attempts)
                 SELECT c.message_row, m.message_id, c.attempts FROM claimed c JOIN messages m ON m.id = c.message_row",
                &[&target, &now_ms, &lease_until_ms, &(limit as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get::<_, i32>(2) as u32)).collect())
    }

    async fn finish_delivery(&self, row: i64, target: &str, outcome: DeliveryOutcome) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let (state, next, error) = match outcome {
            DeliveryOutcome::Delivered => ("delivered", None, None),
            DeliveryOutcome::Retry { at_ms, error } => ("pending", Some(at_ms), Some(error)),
            DeliveryOutcome::Dead { error } => ("dead", None, Some(error)),
        };
        client
            .execute(
                "UPDATE deliveries SET state = $3, attempts = attempts + 1, next_at = $4,
                        last_error = COALESCE($5, last_error), updated_at = $6
                 WHERE message_row = $1 AND target = $2",
                &[&row, &target, &state, &next, &error, &now_ms()],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn deliveries(&self, state: Option<&str>, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let rows = client
            .query(
                "SELECT d.message_row, m.message_id, m.partner, m.pmode, m.leg, d.target, d.state, d.attempts,
                        d.next_at, d.last_error, d.updated_at
                 FROM deliveries d JOIN messages m ON m.id = d.message_row
                 WHERE $1::TEXT IS NULL OR d.state = $1 ORDER BY d.updated_at DESC LIMIT $2",
                &[&state, &(limit as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| Delivery {
                row: r.get(0),
                message_id: r.get(1),
                partner: r.get(2),
                pmode: r.get(3),
                leg: r.get(4),
                target: r.get(5),
                state: r.get(6),
                attempts: r.get::<_, i32>(7) as u32,
                next_at: r.get::<_, Option<i64>>(8).map(format_ms),
                last_error: r.get(9),
                updated_at: format_ms(r.get(10)),
            })
            .collect())
    }

    async fn retry_delivery(&self, row: i64, target: &str, now_ms: i64) -> Result<bool, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let changed = client
            .execute(
                "UPDATE deliveries SET state = 'pending', attempts = 0, next_at = $3, updated_at = $3
                 WHERE message_row = $1 AND target = $2 AND state = 'dead'",
                &[&row, &target, &now_ms],
            )
            .await
            .map_err(pg)?;
        Ok(changed > 0)
    }

    async fn acknowledge_alert(&self, key: &str, by: &str, at_ms: i64) -> Result<bool, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let changed = client
            .execute(
                "UPDATE alerts SET acknowledged_by = $2, acknowledged_at = $3
                 WHERE key = $1 AND cleared_at IS NULL AND acknowledged_by IS NULL",
                &[&key, &by, &at_ms],
            )
            .await
            .map_err(pg)?;
        Ok(changed > 0)
    }

    async fn alerts(&self, limit: usize) -> Result<Vec<AlertRecord>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let rows = client
            .query(
                "SELECT key, rule, detail, raised_at, cleared_at, acknowledged_by, acknowledged_at FROM alerts
                 ORDER BY cleared_at IS NOT NULL, COALESCE(cleared_at, raised_at) DESC LIMIT $1",
                &[&(limit as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(pg_alert).collect())
    }
}

fn pg_user(r: &Row) -> User {
    User {
        name: r.get(0),
        role: r.get(1),
        password_hash: r.get(2),
        failures: r.get::<_, i32>(3) as u32,
        locked_until_ms: r.get(4),
        created_ms: r.get(5),
    }
}

fn pg_alert(r: &Row) -> AlertRecord {
    AlertRecord {
        key: r.get(0),
        rule: r.get(1),
        detail: r.get(2),
        raised_at: format_ms(r.get(3)),
        cleared_at: r.get::<_, Option<i64>>(4).map(format_ms),
        acknowledged_by: r.get(5),
        acknowledged_at: r.get::<_, Option<i64>>(6).map(format_ms),
    }
}
