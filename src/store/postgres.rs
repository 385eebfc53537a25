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
CREATE INDEX IF NOT EXISTS messages_age ON messages (state, updated_at);
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
"#;

/// Nodes creating the schema at the same moment take turns.
const SCHEMA_LOCK: i64 = 0x5645_4e54_414e_4953;

pub struct PostgresStore {
    pool: Pool,
    /// How long a node owns a message it is sending; past it, another node may take over.
    lease_ms: i64,
}

fn pg(e: impl std::fmt::Display) -> StoreError {
    StoreError::Task(format!("PostgreSQL: {e}"))
}

impl PostgresStore {
    /// Connects with a libpq-style connection string (`host=... user=... dbname=...`).
    pub async fn connect(url: &str, pool_size: usize, lease: std::time::Duration) -> Result<PostgresStore, StoreError> {
        let config: tokio_postgres::Config = url.parse().map_err(pg)?;
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager).max_size(pool_size.max(2)).build().map_err(pg)?;
        let client = pool.get().await.map_err(pg)?;
        client.execute("SELECT pg_advisory_lock($1)", &[&SCHEMA_LOCK]).await.map_err(pg)?;
        let created = client.batch_execute(SCHEMA).await.map_err(pg);
        client.execute("SELECT pg_advisory_unlock($1)", &[&SCHEMA_LOCK]).await.map_err(pg)?;
        created?;
        Ok(PostgresStore { pool, lease_ms: lease.as_millis() as i64 })
    }
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
        state: State::parse(row.get("state")).unwrap_or(State::Failed),
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
    let row = client.query_opt("SELECT * FROM messages WHERE id = $1", &[&id]).await.map_err(pg)?;
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
        .query("SELECT at, state, detail FROM history WHERE message_id = $1 ORDER BY id", &[&id])
        .await
        .map_err(pg)?
        .iter()
        .map(|h| HistoryEntry { at: format_ms(h.get(0)), state: h.get(1), detail: h.get(2) })
        .collect();
    Ok(r)
}

#[async_trait::async_trait]
impl MessageStore for PostgresStore {
    async fn insert(&self, m: NewMessage) -> Result<Inserted, StoreError> {
        let mut client = self.pool.get().await.map_err(pg)?;
        let tx = client.transaction().await.map_err(pg)?;
        let now = now_ms();
        let document = m.document.as_ref().map(|d| d.to_string());
        // ON CONFLICT makes duplicate detection race-free across nodes.
        let inserted = tx
            .query_opt(
                "INSERT INTO messages (direction, message_id, conversation_id, pmode, leg, partner, service, action, state,
                                       next_attempt_at, created_at, updated_at, envelope, response, document, error)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $13, $14, $15)
                 ON CONFLICT (direction, message_id) DO NOTHING RETURNING id",
                &[
                    &m.direction.as_str(),
                    &m.message_id,
                    &m.conversation_id,
                    &m.pmode,
                    &m.leg,
                    &m.partner,
                    &m.service,
                    &m.action,
                    &m.state.as_str(),
                    &m.next_attempt_at,
                    &now,
                    &m.envelope,
                    &m.response,
                    &document,
                    &m.error,
                ],
            )
            .await
            .map_err(pg)?;
        let Some(inserted) = inserted else {
            let existing = tx
                .query_one(
                    "SELECT id, response FROM messages WHERE direction = $1 AND message_id = $2",
                    &[&m.direction.as_str(), &m.message_id],
                )
                .await
                .map_err(pg)?;
            if m.direction == Direction::Inbound {
                tx.execute(
                    "INSERT INTO history (message_id, at, state, detail) SELECT id, $2, state, 'duplicate received; answered with the stored receipt' FROM messages WHERE id = $1",
                    &[&existing.get::<_, i64>(0), &now],
                )
                .await
                .map_err(pg)?;
            }
            tx.commit().await.map_err(pg)?;
            return Ok(Inserted::Duplicate { response: existing.get(1) });
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
        let detail = match (m.direction, m.state) {
            (Direction::Outbound, _) => "accepted from the backend".to_owned(),
            (Direction::Inbound, State::Rejected) => {
                format!("refused for its content and kept for inspection: {}", m.error.as_deref().unwrap_or(""))
            }
            (Direction::Inbound, _) => "received from the partner and persisted; receipt sent".to_owned(),
        };
        tx.execute(
            "INSERT INTO history (message_id, at, state, detail) VALUES ($1, $2, $3, $4)",
            &[&id, &now, &m.state.as_str(), &detail],
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
        let ids: Vec<i64> = tx
            .query(
                "UPDATE messages SET state = 'sending', attempts = attempts + 1, updated_at = $1, lease_until = $3
                 WHERE id IN (SELECT id FROM messages WHERE direction = 'outbound' AND state IN ('submitted', 'waiting_retry')
                              AND (next_attempt_at IS NULL OR next_attempt_at <= $1)
                              ORDER BY next_attempt_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)
                 RETURNING id",
                &[&now_ms, &(limit as i64), &lease_until],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for id in &ids {
            tx.execute(
                "INSERT INTO history (message_id, at, state, detail) SELECT id, $2, 'sending', 'attempt ' || attempts FROM messages WHERE id = $1",
                &[id, &now_ms],
            )
            .await
            .map_err(pg)?;
        }
        let mut records = Vec::with_capacity(ids.len());
        for id in ids {
            records.push(load(&tx, id).await?);
        }
        tx.commit().await.map_err(pg)?;
        Ok(records)
    }

    async fn transition(
        &self,
        row: i64,
        state: State,
        detail: &str,
        next_attempt_at: Option<i64>,
        error: Option<&str>,
        response: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(pg)?;
        let tx = client.transaction().await.map_err(pg)?;
        let now = now_ms();
        let changed = tx
            .execute(
                "UPDATE messages SET state = $2, next_attempt_at = $3, error = COALESCE($4, error), response = COALESCE($5, response),
                        updated_at = $6, lease_until = NULL WHERE id = $1",
                &[&row, &state.as_str(), &next_attempt_at, &error, &response, &now],
            )
            .await
            .map_err(pg)?;
        if changed == 0 {
            return Err(StoreError::NotFound(format!("row {row}")));
        }
        tx.execute(
            "INSERT INTO history (message_id, at, state, detail) VALUES ($1, $2, $3, $4)",
            &[&row, &now, &state.as_str(), &detail],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(())
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

    async fn list(&self, filter: ListFilter) -> Result<Vec<MessageRecord>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let limit = if filter.limit == 0 { 100 } else { filter.limit.min(10_000) } as i64;
        let direction = filter.direction.map(Direction::as_str);
        let state = filter.state.map(State::as_str);
        let ids: Vec<i64> = client
            .query(
                "SELECT id FROM messages WHERE ($1::TEXT IS NULL OR direction = $1) AND ($2::TEXT IS NULL OR state = $2) ORDER BY id DESC LIMIT $3",
                &[&direction, &state, &limit],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(load(&client, id).await?);
        }
        Ok(out)
    }

    fn shared(&self) -> bool {
        true
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
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<Option<MessageRecord>, StoreError> {
        let mut client = self.pool.get().await.map_err(pg)?;
        let tx = client.transaction().await.map_err(pg)?;
        let row = tx
            .query_opt(
                "UPDATE messages SET state = 'pulled', attempts = attempts + 1, next_attempt_at = $4, updated_at = $3
                 WHERE id = (SELECT id FROM messages WHERE direction = 'outbound' AND state = 'pullable' AND pmode = $1 AND leg = $2
                             ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id",
                &[&pmode, &leg, &now_ms, &expires_ms],
            )
            .await
            .map_err(pg)?;
        let Some(row) = row else { return Ok(None) };
        let id: i64 = row.get(0);
        tx.execute(
            "INSERT INTO history (message_id, at, state, detail) VALUES ($1, $2, 'pulled', 'pulled by the partner; waiting for its receipt')",
            &[&id, &now_ms],
        )
        .await
        .map_err(pg)?;
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
                "UPDATE messages SET state = 'waiting_retry', next_attempt_at = $1, updated_at = $1, lease_until = NULL
                 WHERE id IN (SELECT id FROM messages WHERE direction = 'outbound' AND state = 'sending'
                              AND (lease_until IS NULL OR lease_until < $1) FOR UPDATE SKIP LOCKED)
                 RETURNING id",
                &[&now_ms],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for id in &ids {
            tx.execute(
                "INSERT INTO history (message_id, at, state, detail) VALUES ($1, $2, 'waiting_retry', 'lease expired (its node stopped); will resend')",
                &[id, &now_ms],
            )
            .await
            .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(ids.len())
    }

    async fn events(&self, after: i64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let client = self.pool.get().await.map_err(pg)?;
        let rows = client
            .query(
                "SELECT h.id, h.at, m.message_id, m.direction, h.state, h.detail FROM history h JOIN messages m ON m.id = h.message_id
                 WHERE h.id > $1 ORDER BY h.id LIMIT $2",
                &[&after, &(limit.clamp(1, 10_000) as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| Event {
                id: r.get(0),
                at: format_ms(r.get(1)),
                message_id: r.get(2),
                direction: if r.get::<_, String>(3) == "inbound" { Direction::Inbound } else { Direction::Outbound },
                state: r.get(4),
                detail: r.get(5),
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
                 (SELECT id FROM messages WHERE state = $1 AND updated_at < $2 AND NOT purged LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING id",
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
                "SELECT id FROM messages WHERE state = $1 AND updated_at < $2 AND ($4::TEXT IS NULL OR pmode = $4) LIMIT $3 FOR UPDATE SKIP LOCKED",
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
}
