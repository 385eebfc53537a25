//! The SQLite message store: WAL, synchronous=FULL, one connection owned by a writer thread
//! that commits in groups.
//!
//! # Group commit
//! Every call is a job for the writer thread. The thread takes the first job waiting and every
//! other job already queued behind it (up to [`MAX_GROUP`]), runs them in one transaction, each
//! inside a savepoint of its own (a job that fails rolls back alone), commits once — one WAL
//! fsync for the group — and only then answers each caller. So nothing is reported committed
//! before it is durable, and concurrent messages share the fsync instead of queueing for one
//! each. A lone job is a group of one. The thread runs a job to its end
//! whether or not its caller still waits (a caller that went away cancels nothing).

use super::*;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::{Arc, Mutex};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS messages (
    row             INTEGER PRIMARY KEY,
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
    next_attempt_at INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    error           TEXT,
    partner_error   TEXT,
    envelope        BLOB NOT NULL,
    response        BLOB,
    document        TEXT,
    purged          INTEGER NOT NULL DEFAULT 0,
    transport       TEXT NOT NULL DEFAULT 'as4',
    UNIQUE (direction, message_id)
);
CREATE INDEX IF NOT EXISTS messages_due ON messages (state, next_attempt_at);
CREATE TABLE IF NOT EXISTS payloads (
    message_row INTEGER NOT NULL REFERENCES messages(row) ON DELETE CASCADE,
    idx         INTEGER NOT NULL,
    content_id  TEXT NOT NULL,
    mime_type   TEXT NOT NULL,
    path        TEXT NOT NULL,
    size        INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    filename    TEXT,
    wire_type   TEXT,
    PRIMARY KEY (message_row, idx)
);
CREATE TABLE IF NOT EXISTS history (
    message_row INTEGER NOT NULL REFERENCES messages(row) ON DELETE CASCADE,
    at          INTEGER NOT NULL,
    state       TEXT NOT NULL,
    detail      TEXT NOT NULL,
    event       TEXT,
    from_state  TEXT
);
CREATE INDEX IF NOT EXISTS history_row ON history (message_row);
-- Retention's index: by state, then purged or not, then age. With `purged` before the age, a
-- pass finds the messages whose content is still there without reading again each one it
-- emptied before (their metadata stays for months).
CREATE INDEX IF NOT EXISTS messages_retention ON messages (state, purged, updated_at);
CREATE INDEX IF NOT EXISTS messages_listing ON messages (direction, state);
CREATE INDEX IF NOT EXISTS messages_partner ON messages (partner);
CREATE INDEX IF NOT EXISTS messages_conversation ON messages (conversation_id);
CREATE INDEX IF NOT EXISTS messages_created ON messages (created_at);
DROP INDEX IF EXISTS messages_queue;
CREATE INDEX IF NOT EXISTS messages_queue_leg ON messages (direction, state, partner, leg, created_at, updated_at);
CREATE TABLE IF NOT EXISTS refusals (
    id         INTEGER PRIMARY KEY,
    at         INTEGER NOT NULL,
    remote     TEXT,
    partner    TEXT,
    message_id TEXT,
    code       TEXT NOT NULL,
    detail     TEXT NOT NULL,
    header     BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS refusals_at ON refusals (at);
CREATE TABLE IF NOT EXISTS users (
    name          TEXT PRIMARY KEY,
    role          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    failures      INTEGER NOT NULL DEFAULT 0,
    locked_until  INTEGER,
    created_at    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id     INTEGER PRIMARY KEY,
    at     INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alerts (
    id         INTEGER PRIMARY KEY,
    key        TEXT NOT NULL,
    rule       TEXT NOT NULL,
    detail     TEXT NOT NULL,
    raised_at  INTEGER NOT NULL,
    cleared_at INTEGER,
    acknowledged_by TEXT,
    acknowledged_at INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_active ON alerts (key) WHERE cleared_at IS NULL;
CREATE TABLE IF NOT EXISTS deliveries (
    message_row INTEGER NOT NULL PRIMARY KEY REFERENCES messages(row) ON DELETE CASCADE,
    target      TEXT NOT NULL,
    state       TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     INTEGER,
    last_error  TEXT,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (target, state, next_at);
CREATE TABLE IF NOT EXISTS unsynced_files (
    id          INTEGER PRIMARY KEY,
    message_row INTEGER NOT NULL REFERENCES messages(row) ON DELETE CASCADE,
    path        TEXT NOT NULL,
    content     BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS unsynced_files_row ON unsynced_files (message_row);
"#;

#[derive(Clone)]
pub struct SqliteStore {
    /// The writer thread's connection; tests reach into it directly.
    #[cfg_attr(not(test), allow(dead_code))]
    conn: Arc<Mutex<Connection>>,
    jobs: std::sync::mpsc::Sender<Job>,
    /// Counts the writer's commits that changed something (see [`MessageStore::changes`]).
    changes: tokio::sync::watch::Receiver<u64>,
}

/// What a job hands back to the writer: the caller's answer, sent once the group's commit is
/// known (`Err` with the commit's failure if it failed).
type Finish = Box<dyn FnOnce(Option<String>) + Send>;
type Job = Box<dyn FnOnce(&mut Connection) -> Finish + Send>;

/// At most this many jobs share one commit.
const MAX_GROUP: usize = 64;

/// The writer thread: groups of jobs, one commit each (see the module doc).
fn writer(
    conn: Arc<Mutex<Connection>>,
    jobs: std::sync::mpsc::Receiver<Job>,
    changed: tokio::sync::watch::Sender<u64>,
    checkpoints: Checkpoints,
) {
    // Told after the callers, once per group whose jobs changed a row (reads tell nobody).
    let mut changes_seen = conn.lock().map(|c| c.total_changes()).unwrap_or(0);
    let mut tell = |conn: &Connection| {
        let now = conn.total_changes();
        if now != changes_seen {
            changes_seen = now;
            changed.send_modify(|n| *n += 1);
            let frames = WAL_FRAMES.get();
            if frames >= RESTART_AFTER_FRAMES {
                checkpoints.long.store(true, std::sync::atomic::Ordering::Release);
            }
            if frames >= CHECKPOINT_AFTER_FRAMES {
                let _ = checkpoints.committed.try_send(());
            }
        }
    };
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let Ok(mut guard) = conn.lock() else {
            for job in group {
                drop(job);
            }
            continue;
        };
        let conn: &mut Connection = &mut guard;
        // A job that panics answers nothing (its caller gets an error); the thread goes on.
        let run = |job: Job, conn: &mut Connection| -> Option<Finish> {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(conn))).ok()
        };
        // The write lock is taken first, lone job or group: a job's savepoint alone would start
        // as a read and upgrade on its first write, and SQLite answers an upgrade that meets
        // the checkpointer's brief hold of the lock with "database is locked" at once, without
        // waiting (`BEGIN IMMEDIATE` waits, up to the busy timeout).
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            // Cannot group: run each on its own.
            tracing::warn!(error = %e, "cannot open a group transaction; committing one by one");
            for job in group {
                if let Some(finish) = run(job, conn) {
                    finish(None);
                }
            }
            tell(conn);
            continue;
        }
        let finishers: Vec<Finish> = group.into_iter().filter_map(|job| run(job, conn)).collect();
        let committed = conn.execute_batch("COMMIT").err().map(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            format!("the group commit failed: {e}")
        });
        for finish in finishers {
            finish(committed.clone());
        }
        tell(conn);
        if checkpoints.catch_up.swap(false, std::sync::atomic::Ordering::AcqRel) {
            catch_up(conn);
        }
    }
}

/// # Checkpoints off the writer thread
/// SQLite's automatic checkpoint runs on the committing connection: every ~4 MB of WAL the
/// writer copied the pages into the database file and fsynced it (7–15 ms measured), and every
/// message waiting for a commit waited through it. The writer's connection has automatic
/// checkpoints off; a thread of its own, with a second connection, runs a PASSIVE checkpoint
/// (which never blocks the writer) at most every [`CHECKPOINT_EVERY`], once the WAL holds
/// [`CHECKPOINT_AFTER_FRAMES`] (the writer learns the count from SQLite's WAL hook).
///
/// Not sooner: the first commit after a complete checkpoint starts the WAL over, and under
/// synchronous=FULL that costs a second fsync (of the new WAL header). Checkpointing after
/// every quiet spell made nearly every commit at a few messages a second pay it (0.6–0.7 ms
/// each, twice on a message's path); now one commit in some forty does.
///
/// A WAL file starts over from its beginning only when the writer begins a transaction with
/// every frame already copied, which a checkpoint racing a busy writer rarely leaves. So once
/// the WAL has grown past [`RESTART_AFTER_FRAMES`], the writer is asked to copy, between two
/// groups, the few frames committed during the checkpoint: the next transaction then restarts
/// the WAL, and its size stays bounded under any load.
struct Checkpoints {
    /// Woken (coalesced) after each commit that changed something and left the WAL at
    /// [`CHECKPOINT_AFTER_FRAMES`] or more.
    committed: std::sync::mpsc::SyncSender<()>,
    /// Set by the checkpointer: the writer runs a checkpoint after its current group.
    catch_up: Arc<std::sync::atomic::AtomicBool>,
    /// Set by the writer: the WAL has grown past [`RESTART_AFTER_FRAMES`], the checkpointer
    /// runs without waiting out [`CHECKPOINT_EVERY`]. Otherwise the WAL grew by whatever the
    /// writer wrote in that wait, without bound on a fast disk (58 MB in a test that writes
    /// 96 MB of envelopes as fast as it can, against 16 MB to restart at).
    long: Arc<std::sync::atomic::AtomicBool>,
}

/// How often, at most, the checkpointer copies committed pages into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// WAL frames (pages) from which a commit wakes the checkpointer (about 4 MB of 4 KiB pages,
/// SQLite's own default for its automatic checkpoint).
const CHECKPOINT_AFTER_FRAMES: i64 = 1024;

thread_local! {
    /// Frames in the WAL after the last commit on this thread's connection (the writer's), as
    /// SQLite's WAL hook reports them.
    static WAL_FRAMES: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

/// SQLite's WAL hook on the writer's connection: runs on the committing thread after each
/// commit.
fn count_wal_frames(_: &rusqlite::hooks::Wal, frames: std::os::raw::c_int) -> rusqlite::Result<()> {
    WAL_FRAMES.set(i64::from(frames));
    Ok(())
}

/// WAL frames (pages) past which the writer helps the WAL restart (about 16 MB of 4 KiB pages).
const RESTART_AFTER_FRAMES: i64 = 4096;

/// The writer's own checkpoint of the last frames (see [`Checkpoints`]); busy if the
/// checkpointer is running one, which is as good.
fn catch_up(conn: &Connection) {
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        tracing::debug!(error = %e, "the writer's checkpoint did not run");
    }
}

/// The checkpointer thread (see [`Checkpoints`]): ends when the writer does.
fn checkpointer(
    path: std::path::PathBuf,
    committed: std::sync::mpsc::Receiver<()>,
    catch_up: Arc<std::sync::atomic::AtomicBool>,
    long: Arc<std::sync::atomic::AtomicBool>,
) {
    // Returns once the writer asked for a checkpoint (its WAL is long enough), at most every
    // CHECKPOINT_EVERY unless the WAL has grown long (see `Checkpoints::long`); false when the
    // writer has stopped.
    let commits_happened = || {
        let woken = committed.recv().is_ok();
        if woken {
            let until = std::time::Instant::now() + CHECKPOINT_EVERY;
            // Each commit that asks again wakes the wait, to look at `long`.
            while !long.swap(false, std::sync::atomic::Ordering::AcqRel) {
                let Some(left) = until.checked_duration_since(std::time::Instant::now()) else { break };
                if committed.recv_timeout(left).is_err() {
                    break;
                }
            }
            while committed.try_recv().is_ok() {}
        }
        woken
    };
    let conn = match Connection::open(&path).and_then(|c| {
        c.pragma_update(None, "synchronous", "FULL")?;
        Ok(c)
    }) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot open the checkpoint connection; the writer checkpoints the WAL itself");
            while commits_happened() {
                catch_up.store(true, std::sync::atomic::Ordering::Release);
            }
            return;
        }
    };
    while commits_happened() {
        // (busy, frames in the WAL, frames copied): busy only if another checkpoint runs.
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))) {
            Ok((_, frames)) if frames >= RESTART_AFTER_FRAMES => {
                catch_up.store(true, std::sync::atomic::Ordering::Release)
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "checkpoint failed"),
        }
    }
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Statement journals and sorts in memory: on disk each is a temporary file created
        // and unlinked (a hundred a second under load).
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // A cached statement keeps its plan whatever its parameters. Without this, SQLite
        // compiles a statement again whenever a parameter that may steer its plan changes: the
        // sender's `LIMIT ?` of the due messages did on almost every claim (1% of all CPU).
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
        conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
        let found: Option<i64> = one(&conn, "SELECT MAX(version) FROM schema_version", [], |r| r.get(0))?;
        if let Some(found) = found.filter(|v| *v > SCHEMA_VERSION) {
            return Err(newer_schema(found));
        }
        // Forward, in one transaction: a failure leaves the store as it was.
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(SCHEMA)?;
        migrate(&tx)?;
        exec(&tx, "DELETE FROM schema_version", [])?;
        exec(&tx, "INSERT INTO schema_version (version) VALUES (?1)", params![SCHEMA_VERSION])?;
        tx.commit()?;
        // Checkpoints run on a thread of their own (see [`Checkpoints`]). The pragma replaces
        // any WAL hook, so the counting hook comes after it.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.wal_hook(Some(count_wal_frames));
        let conn = Arc::new(Mutex::new(conn));
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let (changed, changes) = tokio::sync::watch::channel(0);
        let (committed, commits) = std::sync::mpsc::sync_channel(1);
        let catch_up = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let long = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let checkpoints = Checkpoints { committed, catch_up: catch_up.clone(), long: long.clone() };
        let owned = conn.clone();
        let db = path.to_owned();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpointer(db, commits, catch_up, long))
            .map_err(|e| StoreError::Task(format!("cannot start the store's checkpoint thread: {e}")))?;
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer(owned, queue, changed, checkpoints))
            .map_err(|e| StoreError::Task(format!("cannot start the store's writer thread: {e}")))?;
        Ok(SqliteStore { conn, jobs, changes })
    }

    /// Runs `f` on the writer thread; its answer comes once its changes are durable.
    async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |conn: &mut Connection| -> Finish {
            let result = f(conn);
            Box::new(move |commit_failed: Option<String>| {
                let _ = reply.send(match commit_failed {
                    Some(e) => Err(StoreError::Task(e)),
                    None => result,
                });
            })
        });
        self.jobs.send(job).map_err(|_| StoreError::Task("the store's writer thread has stopped".into()))?;
        answer.await.map_err(|_| StoreError::Task("the store's writer thread dropped a job".into()))?
    }
}

/// Columns added since the first schema (a data folder of an earlier version opens as is).
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let has = |table: &str, column: &str| -> Result<bool, StoreError> {
        let mut stmt = conn.prepare(&format!("PRAGMA table_info({table})"))?;
        let names = stmt.query_map([], |r| r.get::<_, String>(1))?.collect::<Result<Vec<_>, _>>()?;
        Ok(names.iter().any(|n| n == column))
    };
    for (table, column, kind) in [
        ("messages", "partner_error", "TEXT"),
        ("history", "event", "TEXT"),
        ("history", "from_state", "TEXT"),
        ("messages", "document_number", "TEXT"),
        ("messages", "transport", "TEXT NOT NULL DEFAULT 'as4'"),
    ] {
        if !has(table, column)? {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))?;
            if column == "document_number" {
                // Messages stored before the console searched by document number.
                conn.execute_batch(
                    "UPDATE messages SET document_number = json_extract(document, '$.number') WHERE document IS NOT NULL",
                )?;
            }
        }
    }
    conn.execute_batch("CREATE INDEX IF NOT EXISTS messages_document ON messages (document_number)")?;
    // The unique (direction, message_id) index answers a search by message id as well (see
    // `search_query`); a second index on the id alone was one more page written per message.
    conn.execute_batch("DROP INDEX IF EXISTS messages_message_id")?;
    // Replaced by `messages_retention`.
    conn.execute_batch("DROP INDEX IF EXISTS messages_age")?;
    let counted: bool = one(
        conn,
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'queue_counts')",
        [],
        |r| r.get(0),
    )?;
    if !counted {
        conn.execute_batch(QUEUE_COUNTS)?;
    }
    // Always defined anew, so that a store keeps the triggers of the release that opens it.
    conn.execute_batch(QUEUE_COUNT_TRIGGERS)?;
    Ok(())
}

/// Messages counted by group (direction, state, partner, leg), for [`SqliteStore::queue_stats`]:
/// `/metrics`, the alerts and the partners page read the queue often, and counting the stored
/// messages each time read every one of them on the writer's connection (~70 ms at 550,000
/// messages, more as they grow, with nothing committed meanwhile). Triggers keep the counts in
/// the transaction of each change, so they are as durable and as current as the messages.
/// Created with the counts of the messages already stored.
const QUEUE_COUNTS: &str = "
CREATE TABLE queue_counts (
    direction         TEXT NOT NULL,
    state             TEXT NOT NULL,
    partner           TEXT NOT NULL,
    leg               TEXT NOT NULL,
    count             INTEGER NOT NULL,
    -- The latest change that brought a message into the group (ms).
    latest_updated_at INTEGER NOT NULL,
    PRIMARY KEY (direction, state, partner, leg)
) WITHOUT ROWID;
INSERT INTO queue_counts
    SELECT direction, state, partner, leg, COUNT(*), MAX(updated_at) FROM messages GROUP BY direction, state, partner, leg;
";

/// The triggers that keep `queue_counts` (see [`QUEUE_COUNTS`]).
const QUEUE_COUNT_TRIGGERS: &str = "
DROP TRIGGER IF EXISTS queue_counts_insert;
DROP TRIGGER IF EXISTS queue_counts_update;
DROP TRIGGER IF EXISTS queue_counts_delete;
CREATE TRIGGER queue_counts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO queue_counts VALUES (NEW.direction, NEW.state, NEW.partner, NEW.leg, 1, NEW.updated_at)
        ON CONFLICT DO UPDATE SET count = count + 1, latest_updated_at = MAX(latest_updated_at, excluded.latest_updated_at);
END;
CREATE TRIGGER queue_counts_update AFTER UPDATE OF direction, state, partner, leg ON messages
    WHEN OLD.direction IS NOT NEW.direction OR OLD.state IS NOT NEW.state
        OR OLD.partner IS NOT NEW.partner OR OLD.leg IS NOT NEW.leg
BEGIN
    UPDATE queue_counts SET count = count - 1
        WHERE direction = OLD.direction AND state = OLD.state AND partner = OLD.partner AND leg = OLD.leg;
    INSERT INTO queue_counts VALUES (NEW.direction, NEW.state, NEW.partner, NEW.leg, 1, NEW.updated_at)
        ON CONFLICT DO UPDATE SET count = count + 1, latest_updated_at = MAX(latest_updated_at, excluded.latest_updated_at);
END;
CREATE TRIGGER queue_counts_delete AFTER DELETE ON messages BEGIN
    UPDATE queue_counts SET count = count - 1
        WHERE direction = OLD.direction AND state = OLD.state AND partner = OLD.partner AND leg = OLD.leg;
END;
";

/// The queue by group: counts from `queue_counts`, and each group's oldest message found
/// through the `messages_queue_leg` index (its first entry for the group, not a scan).
const QUEUE_STATS: &str = "
SELECT q.direction, q.state, q.partner, q.leg, q.count,
    (SELECT MIN(m.created_at) FROM messages m
        WHERE m.direction = q.direction AND m.state = q.state AND m.partner = q.partner AND m.leg = q.leg),
    q.latest_updated_at
FROM queue_counts q WHERE q.count > 0";

/// `execute` through the connection's statement cache (each statement is parsed once, not per
/// message: parsing was ~10% of the writer's time).
fn exec(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// `query_row` through the statement cache.
fn one<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    row: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached(sql)?.query_row(params, row)
}

/// The outbound messages due to be sent at `?1`, oldest due first, at most `?2`.
const CLAIM_DUE: &str =
    "SELECT row, state FROM messages WHERE direction = 'outbound' AND state IN ('submitted', 'waiting_retry')
     AND (next_attempt_at IS NULL OR next_attempt_at <= ?1) ORDER BY next_attempt_at, row LIMIT ?2";

/// Retention: messages in state `?1` changed before `?2` whose content is still there, at most
/// `?3` (a range of `messages_retention`).
const PURGE_CONTENT: &str = "SELECT row FROM messages WHERE state = ?1 AND purged = 0 AND updated_at < ?2 LIMIT ?3";

/// Retention: messages in state `?1` changed before `?2`, of P-Mode `?4` if given, at most
/// `?3`. `purged IN (0, 1)` lets both ranges of `messages_retention` be read by age.
const PURGE_MESSAGES: &str = "SELECT row FROM messages WHERE state = ?1 AND purged IN (0, 1) AND updated_at < ?2
     AND (?4 IS NULL OR pmode = ?4) LIMIT ?3";

/// Distinct statements the store runs (more than rusqlite's default cache of 16).
const STATEMENT_CACHE: usize = 128;

const PULLED_OVERDUE: &str =
    "SELECT row, attempts, pmode FROM messages WHERE state = 'pulled' AND next_attempt_at <= ?1 LIMIT ?2";

fn direction_of(value: &str) -> Direction {
    Direction::parse(value).unwrap_or(Direction::Outbound)
}

fn state_of(value: &str) -> Result<State, StoreError> {
    State::parse(value).ok_or_else(|| StoreError::Corrupt(format!("unknown state '{value}'")))
}

/// Compare-and-set: applies `event` to `row` if it is in `expected`, inside `tx`.
fn apply(
    tx: &Connection,
    row: i64,
    expected: State,
    event: &Happening,
    response: Option<&[u8]>,
) -> Result<State, StoreError> {
    let found: Option<(String, String, u32, Option<i64>)> = one(tx,
            "SELECT direction, state, attempts, (SELECT MAX(at) FROM history WHERE message_row = ?1) FROM messages WHERE row = ?1",
            params![row],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let (direction, actual, attempts, last_at) = found.ok_or_else(|| StoreError::NotFound(format!("row {row}")))?;
    let actual = state_of(&actual)?;
    if actual != expected {
        return Err(StoreError::Conflict { row, expected, actual });
    }
    let t = crate::lifecycle::next(direction_of(&direction), actual, event, attempts)?;
    let at = monotonic_at(now_ms(), last_at);
    let (set_next, next) = next_attempt_value(t.next_attempt);
    let partner_error = t.partner_error.as_ref().and_then(|e| serde_json::to_string(e).ok());
    let changed = exec(
        tx,
        "UPDATE messages SET state = ?2, attempts = CASE WHEN ?11 THEN 0 ELSE attempts + ?3 END,
                next_attempt_at = CASE WHEN ?4 THEN ?5 ELSE next_attempt_at END,
                error = COALESCE(?6, error), partner_error = COALESCE(?7, partner_error),
                response = COALESCE(?8, response), updated_at = ?9
         WHERE row = ?1 AND state = ?10",
        params![
            row,
            t.to.as_str(),
            t.counts_attempt as i64,
            set_next,
            next,
            t.error,
            partner_error,
            response,
            at,
            expected.as_str(),
            t.resets_attempts
        ],
    )?;
    if changed == 0 {
        return Err(StoreError::Conflict { row, expected, actual });
    }
    exec(
        tx,
        "INSERT INTO history (message_row, at, state, detail, event, from_state) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![row, at, t.to.as_str(), t.detail, t.event, expected.as_str()],
    )?;
    Ok(t.to)
}

/// Inserts a new message (its payloads, kept copies and first history entry) inside the
/// caller's transaction; an inbound MessageId already present gets a history note and is
/// answered as a duplicate, an outbound one only answered.
fn insert_in(tx: &Connection, m: &NewMessage) -> Result<Inserted, StoreError> {
    let now = now_ms();
    let (direction, created) = crate::lifecycle::create(&m.creation, now);
    let existing: Option<(i64, Option<Vec<u8>>, String)> = one(
        tx,
        "SELECT row, response, state FROM messages WHERE direction = ?1 AND message_id = ?2",
        params![direction.as_str(), m.message_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .optional()?;
    if let Some((row, response, state)) = existing {
        if direction == Direction::Inbound {
            // A note, not a transition: nothing changed, the feed shows nothing.
            exec(tx,
                "INSERT INTO history (message_row, at, state, detail)
                 VALUES (?1, MAX(?2, (SELECT MAX(at) FROM history WHERE message_row = ?1)), ?3, 'duplicate received; answered with the stored answer')",
                params![row, now, state],
            )?;
        }
        return Ok(Inserted::Duplicate { response, state: state_of(&state)? });
    }
    let (_, next_attempt) = next_attempt_value(created.next_attempt);
    exec(
        tx,
        "INSERT INTO messages (direction, message_id, conversation_id, pmode, leg, partner, service, action, state,
                               next_attempt_at, created_at, updated_at, envelope, response, document, error,
                               document_number, transport)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
        params![
            direction.as_str(),
            m.message_id,
            m.conversation_id,
            m.pmode,
            m.leg,
            m.partner,
            m.service,
            m.action,
            created.to.as_str(),
            next_attempt,
            now,
            m.envelope,
            m.response,
            m.document.as_ref().map(|d| d.to_string()),
            created.error,
            document_number(m.document.as_ref()),
            m.transport.as_str(),
        ],
    )?;
    let row = tx.last_insert_rowid();
    for (idx, p) in m.payloads.iter().enumerate() {
        exec(
            tx,
            "INSERT INTO payloads (message_row, idx, content_id, mime_type, path, size, sha256, filename, wire_type)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                row,
                idx as i64,
                p.content_id,
                p.mime_type,
                p.path.to_string_lossy(),
                p.size as i64,
                p.sha256,
                p.filename,
                p.wire_type
            ],
        )?;
    }
    for f in &m.unsynced {
        exec(
            tx,
            "INSERT INTO unsynced_files (message_row, path, content) VALUES (?1, ?2, ?3)",
            params![row, f.path.to_string_lossy(), f.content],
        )?;
    }
    exec(
        tx,
        "INSERT INTO history (message_row, at, state, detail, event) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![row, now, created.to.as_str(), created.detail, created.event],
    )?;
    Ok(Inserted::New(row))
}

fn load(conn: &Connection, row: i64) -> Result<MessageRecord, StoreError> {
    load_with(conn, row, true)
}

/// A record; with its envelope and stored signal only when `content` (lists leave them out).
fn load_with(conn: &Connection, row: i64, content: bool) -> Result<MessageRecord, StoreError> {
    let mut record = one(
        conn,
        "SELECT row, direction, message_id, conversation_id, pmode, leg, partner, service, action, state, attempts,
                next_attempt_at, created_at, updated_at, error,
                CASE WHEN ?2 THEN envelope ELSE x'' END, CASE WHEN ?2 THEN response END, document, partner_error,
                transport
         FROM messages WHERE row = ?1",
        params![row, content],
        |r| {
            Ok(MessageRecord {
                row: r.get(0)?,
                direction: direction_of(&r.get::<_, String>(1)?),
                message_id: r.get(2)?,
                conversation_id: r.get(3)?,
                pmode: r.get(4)?,
                leg: r.get(5)?,
                partner: r.get(6)?,
                service: r.get(7)?,
                action: r.get(8)?,
                state: State::parse(&r.get::<_, String>(9)?).unwrap_or(State::Failed),
                attempts: r.get(10)?,
                next_attempt_at: r.get::<_, Option<i64>>(11)?.map(format_ms),
                created_at: format_ms(r.get(12)?),
                updated_at: format_ms(r.get(13)?),
                error: r.get(14)?,
                envelope: r.get(15)?,
                response: r.get(16)?,
                document: r.get::<_, Option<String>>(17)?.and_then(|d| serde_json::from_str(&d).ok()),
                partner_error: r.get::<_, Option<String>>(18)?.and_then(|d| serde_json::from_str(&d).ok()),
                transport: crate::pmode::Transport::parse(&r.get::<_, String>(19)?).unwrap_or_default(),
                payloads: Vec::new(),
                history: Vec::new(),
            })
        },
    )?;
    let mut stmt = conn.prepare_cached(
        "SELECT content_id, mime_type, path, size, sha256, filename, wire_type FROM payloads WHERE message_row = ?1 ORDER BY idx",
    )?;
    record.payloads = stmt
        .query_map(params![row], |r| {
            Ok(StoredPayload {
                content_id: r.get(0)?,
                mime_type: r.get(1)?,
                path: std::path::PathBuf::from(r.get::<_, String>(2)?),
                size: r.get::<_, i64>(3)? as u64,
                sha256: r.get(4)?,
                filename: r.get(5)?,
                wire_type: r.get(6)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut stmt =
        conn.prepare_cached("SELECT at, state, detail, event FROM history WHERE message_row = ?1 ORDER BY rowid")?;
    record.history = stmt
        .query_map(params![row], |r| {
            Ok(HistoryEntry { at: format_ms(r.get(0)?), state: r.get(1)?, detail: r.get(2)?, event: r.get(3)? })
        })?
        .collect::<Result<_, _>>()?;
    Ok(record)
}

#[async_trait::async_trait]
impl MessageStore for SqliteStore {
    async fn insert(&self, m: NewMessage) -> Result<Inserted, StoreError> {
        self.with(move |conn| {
            let tx = conn.savepoint()?;
            let inserted = insert_in(&tx, &m)?;
            tx.commit()?;
            Ok(inserted)
        })
        .await
    }

    async fn insert_submission(&self, m: NewMessage, claim: bool) -> Result<Accepted, StoreError> {
        self.with(move |conn| {
            let tx = conn.savepoint()?;
            let inserted = insert_in(&tx, &m)?;
            let row = match &inserted {
                Inserted::New(row) => *row,
                Inserted::Duplicate { .. } => one(
                    &tx,
                    "SELECT row FROM messages WHERE direction = 'outbound' AND message_id = ?1",
                    params![m.message_id],
                    |r| r.get(0),
                )?,
            };
            let due = matches!(m.creation, Creation::Submitted { pull: false });
            let claimed = claim && due && matches!(inserted, Inserted::New(_));
            if claimed {
                apply(&tx, row, State::Submitted, &Happening::Claimed, None)?;
            }
            let record = load(&tx, row)?;
            tx.commit()?;
            Ok(Accepted { inserted, record, claimed })
        })
        .await
    }

    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.changes.clone())
    }

    fn keeps_file_copies(&self) -> bool {
        true
    }

    async fn unsynced_watermark(&self) -> Result<i64, StoreError> {
        self.with(|conn| Ok(one(conn, "SELECT COALESCE(MAX(id), 0) FROM unsynced_files", [], |r| r.get(0))?)).await
    }

    async fn forget_unsynced(&self, through: i64) -> Result<usize, StoreError> {
        self.with(move |conn| Ok(exec(conn, "DELETE FROM unsynced_files WHERE id <= ?1", params![through])?)).await
    }

    async fn unsynced_files(&self) -> Result<Vec<UnsyncedFile>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached("SELECT path, content FROM unsynced_files ORDER BY id")?;
            let files = stmt
                .query_map([], |r| {
                    Ok(UnsyncedFile { path: std::path::PathBuf::from(r.get::<_, String>(0)?), content: r.get(1)? })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(files)
        })
        .await
    }

    async fn claim_due(&self, now_ms: i64, limit: usize) -> Result<Vec<MessageRecord>, StoreError> {
        self.with(move |conn| {
            let tx = conn.savepoint()?;
            let due: Vec<(i64, String)> = {
                let mut stmt = tx.prepare_cached(CLAIM_DUE)?;
                stmt.query_map(params![now_ms, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?
            };
            let mut records = Vec::with_capacity(due.len());
            for (row, state) in due {
                apply(&tx, row, state_of(&state)?, &Happening::Claimed, None)?;
                records.push(load(&tx, row)?);
            }
            tx.commit()?;
            Ok(records)
        })
        .await
    }

    async fn transition(
        &self,
        row: i64,
        expected: State,
        event: Happening,
        response: Option<Vec<u8>>,
    ) -> Result<State, StoreError> {
        self.with(move |conn| {
            let tx = conn.savepoint()?;
            let to = apply(&tx, row, expected, &event, response.as_deref())?;
            tx.commit()?;
            Ok(to)
        })
        .await
    }

    async fn get(&self, direction: Direction, message_id: &str) -> Result<MessageRecord, StoreError> {
        let message_id = message_id.to_owned();
        self.with(move |conn| {
            let row: Option<i64> = one(
                conn,
                "SELECT row FROM messages WHERE direction = ?1 AND message_id = ?2",
                params![direction.as_str(), message_id],
                |r| r.get(0),
            )
            .optional()?;
            let row = row.ok_or_else(|| StoreError::NotFound(message_id.clone()))?;
            load(conn, row)
        })
        .await
    }

    async fn list(&self, search: &Search) -> Result<Vec<MessageRecord>, StoreError> {
        let search = search.clone();
        self.with(move |conn| {
            let (sql, values) = search_query(&search);
            let rows: Vec<i64> = {
                let mut stmt = conn.prepare_cached(&sql)?;
                stmt.query_map(rusqlite::params_from_iter(values.iter()), |r| r.get(0))?.collect::<Result<_, _>>()?
            };
            rows.iter().map(|row| load_with(conn, *row, false)).collect()
        })
        .await
    }

    async fn pulled_overdue(&self, now_ms: i64, limit: usize) -> Result<Vec<Overdue>, StoreError> {
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(PULLED_OVERDUE)?;
            let overdue = stmt
                .query_map(params![now_ms, limit as i64], |r| {
                    Ok(Overdue { row: r.get(0)?, attempts: r.get(1)?, pmode: r.get(2)? })
                })?
                .collect::<Result<_, _>>()?;
            Ok(overdue)
        })
        .await
    }

    async fn payload_paths(&self) -> Result<Vec<std::path::PathBuf>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare("SELECT path FROM payloads")?;
            let paths = stmt.query_map([], |r| r.get::<_, String>(0))?.map(|p| p.map(std::path::PathBuf::from));
            Ok(paths.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn events(&self, after: i64, limit: usize) -> Result<Vec<FeedEvent>, StoreError> {
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT h.rowid, h.at, m.message_id, m.direction, h.state, h.detail, h.event, h.from_state, m.partner, m.pmode, m.leg
                 FROM history h JOIN messages m ON m.row = h.message_row
                 WHERE h.rowid > ?1 AND h.event IS NOT NULL ORDER BY h.rowid LIMIT ?2",
            )?;
            let events = stmt
                .query_map(params![after, limit.clamp(1, 10_000) as i64], |r| {
                    Ok(FeedEvent {
                        id: r.get(0)?,
                        at: format_ms(r.get(1)?),
                        message_id: r.get(2)?,
                        direction: direction_of(&r.get::<_, String>(3)?),
                        state: r.get(4)?,
                        detail: r.get(5)?,
                        event: r.get(6)?,
                        from: r.get(7)?,
                        partner: r.get(8)?,
                        pmode: r.get(9)?,
                        leg: r.get(10)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(events)
        })
        .await
    }

    async fn purge_content(
        &self,
        state: State,
        before_ms: i64,
        limit: usize,
    ) -> Result<(usize, Vec<std::path::PathBuf>), StoreError> {
        self.with(move |conn| {
            let tx = conn.savepoint()?;
            let rows: Vec<i64> = {
                let mut stmt = tx.prepare_cached(PURGE_CONTENT)?;
                stmt.query_map(params![state.as_str(), before_ms, limit as i64], |r| r.get(0))?.collect::<Result<_, _>>()?
            };
            let mut files = Vec::new();
            for row in &rows {
                let mut stmt = tx.prepare_cached("SELECT path FROM payloads WHERE message_row = ?1")?;
                for path in stmt.query_map(params![row], |r| r.get::<_, String>(0))? {
                    files.push(std::path::PathBuf::from(path?));
                }
                // Kept copies go with the files (a start-up must not write them back).
                exec(&tx, "DELETE FROM unsynced_files WHERE message_row = ?1", params![row])?;
                // The stored receipt stays: a duplicate within the window gets it again.
                exec(&tx, "UPDATE messages SET envelope = x'', purged = 1 WHERE row = ?1", params![row])?;
                exec(&tx,
                    "INSERT INTO history (message_row, at, state, detail) VALUES (?1, ?2, ?3, 'content removed by retention')",
                    params![row, now_ms(), state.as_str()],
                )?;
            }
            tx.commit()?;
            Ok((rows.len(), files))
        })
        .await
    }

    async fn purge_messages(
        &self,
        state: State,
        pmode: Option<&str>,
        before_ms: i64,
        limit: usize,
    ) -> Result<(usize, Vec<std::path::PathBuf>), StoreError> {
        let pmode = pmode.map(str::to_owned);
        self.with(move |conn| {
            let tx = conn.savepoint()?;
            let rows: Vec<i64> = {
                let mut stmt = tx.prepare_cached(PURGE_MESSAGES)?;
                stmt.query_map(params![state.as_str(), before_ms, limit as i64, pmode], |r| r.get(0))?
                    .collect::<Result<_, _>>()?
            };
            let mut files = Vec::new();
            for row in &rows {
                let mut stmt = tx.prepare_cached("SELECT path FROM payloads WHERE message_row = ?1")?;
                for path in stmt.query_map(params![row], |r| r.get::<_, String>(0))? {
                    files.push(std::path::PathBuf::from(path?));
                }
                exec(&tx, "DELETE FROM history WHERE message_row = ?1", params![row])?;
                exec(&tx, "DELETE FROM payloads WHERE message_row = ?1", params![row])?;
                exec(&tx, "DELETE FROM messages WHERE row = ?1", params![row])?;
            }
            tx.commit()?;
            Ok((rows.len(), files))
        })
        .await
    }

    async fn take_pullable(
        &self,
        pmode: &str,
        leg: &str,
        expires_ms: i64,
    ) -> Result<Option<MessageRecord>, StoreError> {
        let (pmode, leg) = (pmode.to_owned(), leg.to_owned());
        self.with(move |conn| {
            let tx = conn.savepoint()?;
            let row: Option<i64> = one(&tx,
                    "SELECT row FROM messages WHERE direction = 'outbound' AND state = 'pullable' AND pmode = ?1 AND leg = ?2 ORDER BY row LIMIT 1",
                    params![pmode, leg],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(row) = row else { return Ok(None) };
            apply(&tx, row, State::Pullable, &Happening::PulledByPartner { receipt_due: expires_ms }, None)?;
            let record = load(&tx, row)?;
            tx.commit()?;
            Ok(Some(record))
        })
        .await
    }

    async fn recover(&self, now_ms: i64) -> Result<usize, StoreError> {
        self.with(move |conn| {
            let tx = conn.savepoint()?;
            let rows: Vec<i64> = {
                let mut stmt =
                    tx.prepare_cached("SELECT row FROM messages WHERE direction = 'outbound' AND state = 'sending'")?;
                stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?
            };
            for row in &rows {
                apply(&tx, *row, State::Sending, &Happening::Interrupted { retry_at: now_ms }, None)?;
            }
            tx.commit()?;
            Ok(rows.len())
        })
        .await
    }

    async fn search(&self, search: &Search) -> Result<Vec<Summary>, StoreError> {
        let search = search.clone();
        self.with(move |conn| {
            let (sql, values) = search_query(&search);
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(values.iter()), summary)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn queue_stats(&self) -> Result<Vec<QueueStat>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(QUEUE_STATS)?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get(6)?,
                ))
            })?;
            let mut stats = Vec::new();
            for row in rows {
                let (direction, state, partner, leg, count, oldest, latest) = row?;
                stats.push(QueueStat {
                    direction: direction_of(&direction),
                    state: state_of(&state)?,
                    partner,
                    leg,
                    count: count as u64,
                    // Always found while the count is right; the latest change otherwise.
                    oldest_created_ms: oldest.unwrap_or(latest),
                    latest_updated_ms: latest,
                });
            }
            Ok(stats)
        })
        .await
    }

    async fn note(&self, row: i64, detail: &str) -> Result<(), StoreError> {
        let detail = detail.to_owned();
        self.with(move |conn| {
            let changed = exec(
                conn,
                "INSERT INTO history (message_row, at, state, detail)
                 SELECT row, MAX(?2, COALESCE((SELECT MAX(at) FROM history WHERE message_row = ?1), 0)), state, ?3
                 FROM messages WHERE row = ?1",
                params![row, now_ms(), detail],
            )?;
            if changed == 0 { Err(StoreError::NotFound(format!("row {row}"))) } else { Ok(()) }
        })
        .await
    }

    async fn record_refusal(&self, r: NewRefusal, keep: usize, max_age_ms: i64) -> Result<(), StoreError> {
        self.with(move |conn| {
            let tx = conn.savepoint()?;
            exec(&tx,
                "INSERT INTO refusals (at, remote, partner, message_id, code, detail, header) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![r.at_ms, r.remote, r.partner, r.message_id, r.code, r.detail, r.header],
            )?;
            let newest = tx.last_insert_rowid();
            exec(&tx,
                "DELETE FROM refusals WHERE id <= ?1 - ?2 OR at < ?3",
                params![newest, keep as i64, r.at_ms - max_age_ms],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn refusals(&self, before: Option<i64>, limit: usize) -> Result<Vec<Refusal>, StoreError> {
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, at, remote, partner, message_id, code, detail, header FROM refusals
                 WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![before.unwrap_or(i64::MAX), limit as i64], |r| {
                Ok(Refusal {
                    id: r.get(0)?,
                    at: format_ms(r.get(1)?),
                    remote: r.get(2)?,
                    partner: r.get(3)?,
                    message_id: r.get(4)?,
                    code: r.get(5)?,
                    detail: r.get(6)?,
                    header: String::from_utf8_lossy(&r.get::<_, Vec<u8>>(7)?).into_owned(),
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn user(&self, name: &str) -> Result<Option<User>, StoreError> {
        let name = name.to_owned();
        self.with(move |conn| {
            Ok(one(
                conn,
                "SELECT name, role, password_hash, failures, locked_until, created_at FROM users WHERE name = ?1",
                params![name],
                user,
            )
            .optional()?)
        })
        .await
    }

    async fn users(&self) -> Result<Vec<User>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT name, role, password_hash, failures, locked_until, created_at FROM users ORDER BY name",
            )?;
            Ok(stmt.query_map([], user)?.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn put_user(&self, u: &User) -> Result<(), StoreError> {
        let u = u.clone();
        self.with(move |conn| {
            exec(
                conn,
                "INSERT INTO users (name, role, password_hash, failures, locked_until, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (name) DO UPDATE SET role = ?2, password_hash = ?3, failures = ?4, locked_until = ?5",
                params![u.name, u.role, u.password_hash, u.failures, u.locked_until_ms, u.created_ms],
            )?;
            Ok(())
        })
        .await
    }

    async fn delete_user(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.with(move |conn| Ok(exec(conn, "DELETE FROM users WHERE name = ?1", params![name])? > 0)).await
    }

    async fn append_audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        let e = e.clone();
        self.with(move |conn| {
            exec(
                conn,
                "INSERT INTO audit (at, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![e.at_ms, e.actor, e.action, e.target, e.detail],
            )?;
            Ok(())
        })
        .await
    }

    async fn audit_log(&self, before: Option<i64>, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, at, actor, action, target, detail FROM audit WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![before.unwrap_or(i64::MAX), limit as i64], |r| {
                Ok(AuditEntry {
                    id: r.get(0)?,
                    at_ms: r.get(1)?,
                    at: format_ms(r.get(1)?),
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    detail: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn raise_alert(&self, key: &str, rule: &str, detail: &str, at_ms: i64) -> Result<bool, StoreError> {
        let (key, rule, detail) = (key.to_owned(), rule.to_owned(), detail.to_owned());
        self.with(move |conn| {
            let raised = exec(
                conn,
                "INSERT INTO alerts (key, rule, detail, raised_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (key) WHERE cleared_at IS NULL DO NOTHING",
                params![key, rule, detail, at_ms],
            )?;
            Ok(raised > 0)
        })
        .await
    }

    async fn clear_alert(&self, key: &str, at_ms: i64) -> Result<Option<AlertRecord>, StoreError> {
        let key = key.to_owned();
        self.with(move |conn| {
            Ok(one(
                conn,
                "UPDATE alerts SET cleared_at = ?2 WHERE key = ?1 AND cleared_at IS NULL
                     RETURNING key, rule, detail, raised_at, cleared_at, acknowledged_by, acknowledged_at",
                params![key, at_ms],
                alert,
            )
            .optional()?)
        })
        .await
    }

    async fn enqueue_deliveries(
        &self,
        target: &str,
        pmode: Option<&str>,
        leg: Option<&str>,
        now_ms: i64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let (target, pmode, leg) = (target.to_owned(), pmode.map(str::to_owned), leg.map(str::to_owned));
        self.with(move |conn| {
            Ok(exec(
                conn,
                "INSERT INTO deliveries (message_row, target, state, attempts, next_at, updated_at)
                 SELECT row, ?1, 'pending', 0, ?4, ?4 FROM messages m
                 WHERE direction = 'inbound' AND state = 'delivered'
                   AND (?2 IS NULL OR pmode = ?2) AND (?3 IS NULL OR leg = ?3)
                   AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_row = m.row)
                 ORDER BY row LIMIT ?5",
                params![target, pmode, leg, now_ms, limit as i64],
            )?)
        })
        .await
    }

    async fn claim_deliveries(
        &self,
        target: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String, u32)>, StoreError> {
        let target = target.to_owned();
        self.with(move |conn| {
            let tx = conn.savepoint()?;
            let due: Vec<(i64, String, u32)> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT d.message_row, m.message_id, d.attempts FROM deliveries d JOIN messages m ON m.row = d.message_row
                     WHERE d.target = ?1 AND d.state = 'pending' AND d.next_at <= ?2 ORDER BY d.next_at LIMIT ?3",
                )?;
                stmt.query_map(params![target, now_ms, limit as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<Result<_, _>>()?
            };
            for (row, _, _) in &due {
                exec(&tx, "UPDATE deliveries SET next_at = ?2 WHERE message_row = ?1", params![row, lease_until_ms])?;
            }
            tx.commit()?;
            Ok(due)
        })
        .await
    }

    async fn finish_delivery(&self, row: i64, target: &str, outcome: DeliveryOutcome) -> Result<(), StoreError> {
        let target = target.to_owned();
        self.with(move |conn| {
            let (state, next, error) = match outcome {
                DeliveryOutcome::Delivered => ("delivered", None, None),
                DeliveryOutcome::Retry { at_ms, error } => ("pending", Some(at_ms), Some(error)),
                DeliveryOutcome::Dead { error } => ("dead", None, Some(error)),
            };
            exec(
                conn,
                "UPDATE deliveries SET state = ?3, attempts = attempts + 1, next_at = ?4,
                        last_error = COALESCE(?5, last_error), updated_at = ?6
                 WHERE message_row = ?1 AND target = ?2",
                params![row, target, state, next, error, now_ms()],
            )?;
            Ok(())
        })
        .await
    }

    async fn deliveries(&self, state: Option<&str>, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let state = state.map(str::to_owned);
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT d.message_row, m.message_id, m.partner, m.pmode, m.leg, d.target, d.state, d.attempts,
                        d.next_at, d.last_error, d.updated_at
                 FROM deliveries d JOIN messages m ON m.row = d.message_row
                 WHERE ?1 IS NULL OR d.state = ?1 ORDER BY d.updated_at DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![state, limit as i64], |r| {
                Ok(Delivery {
                    row: r.get(0)?,
                    message_id: r.get(1)?,
                    partner: r.get(2)?,
                    pmode: r.get(3)?,
                    leg: r.get(4)?,
                    target: r.get(5)?,
                    state: r.get(6)?,
                    attempts: r.get(7)?,
                    next_at: r.get::<_, Option<i64>>(8)?.map(format_ms),
                    last_error: r.get(9)?,
                    updated_at: format_ms(r.get(10)?),
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn retry_delivery(&self, row: i64, target: &str, now_ms: i64) -> Result<bool, StoreError> {
        let target = target.to_owned();
        self.with(move |conn| {
            Ok(exec(
                conn,
                "UPDATE deliveries SET state = 'pending', attempts = 0, next_at = ?3, updated_at = ?3
                 WHERE message_row = ?1 AND target = ?2 AND state = 'dead'",
                params![row, target, now_ms],
            )? > 0)
        })
        .await
    }

    async fn acknowledge_alert(&self, key: &str, by: &str, at_ms: i64) -> Result<bool, StoreError> {
        let (key, by) = (key.to_owned(), by.to_owned());
        self.with(move |conn| {
            Ok(exec(
                conn,
                "UPDATE alerts SET acknowledged_by = ?2, acknowledged_at = ?3
                 WHERE key = ?1 AND cleared_at IS NULL AND acknowledged_by IS NULL",
                params![key, by, at_ms],
            )? > 0)
        })
        .await
    }

    async fn alerts(&self, limit: usize) -> Result<Vec<AlertRecord>, StoreError> {
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT key, rule, detail, raised_at, cleared_at, acknowledged_by, acknowledged_at FROM alerts
                 ORDER BY cleared_at IS NOT NULL, COALESCE(cleared_at, raised_at) DESC LIMIT ?1",
            )?;
            Ok(stmt.query_map(params![limit as i64], alert)?.collect::<Result<_, _>>()?)
        })
        .await
    }
}

/// The search with only the conditions given (each one indexed), newest first.
fn search_query(search: &Search) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let mut conditions = Vec::new();
    let mut values: Vec<Value> = Vec::new();
    let mut push = |condition: &str, value: Value| {
        values.push(value);
        conditions.push(condition.replace('?', &format!("?{}", values.len())));
    };
    if let Some(d) = search.direction {
        push("direction = ?", Value::Text(d.as_str().into()));
    }
    if let Some(s) = search.state {
        push("state = ?", Value::Text(s.as_str().into()));
    }
    for (column, value) in search.text_conditions() {
        push(&format!("{column} = ?"), Value::Text(value.into()));
    }
    if let Some(from) = search.from_ms {
        push("created_at >= ?", Value::Integer(from));
    }
    if let Some(to) = search.to_ms {
        push("created_at < ?", Value::Integer(to));
    }
    if let Some(before) = search.before {
        push("row < ?", Value::Integer(before));
    }
    if search.direction.is_none() && search.message_id.as_deref().is_some_and(|id| !id.is_empty()) {
        // Both directions spelled out: the unique (direction, message_id) index then serves a
        // search by message id.
        conditions.push("direction IN ('inbound', 'outbound')".into());
    }
    let clause = if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) };
    let sql = format!(
        "SELECT row, direction, message_id, conversation_id, pmode, leg, partner, service, action, state, attempts,
                created_at, updated_at, error, document_number
         FROM messages {clause} ORDER BY row DESC LIMIT {}",
        search.limit.saturating_add(1)
    );
    (sql, values)
}

fn summary(r: &rusqlite::Row<'_>) -> rusqlite::Result<Summary> {
    Ok(Summary {
        row: r.get(0)?,
        direction: direction_of(&r.get::<_, String>(1)?),
        message_id: r.get(2)?,
        conversation_id: r.get(3)?,
        pmode: r.get(4)?,
        leg: r.get(5)?,
        partner: r.get(6)?,
        service: r.get(7)?,
        action: r.get(8)?,
        state: State::parse(&r.get::<_, String>(9)?).unwrap_or(State::Failed),
        attempts: r.get(10)?,
        created_at: format_ms(r.get(11)?),
        updated_at: format_ms(r.get(12)?),
        error: r.get(13)?,
        document_number: r.get(14)?,
    })
}

fn user(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        name: r.get(0)?,
        role: r.get(1)?,
        password_hash: r.get(2)?,
        failures: r.get(3)?,
        locked_until_ms: r.get(4)?,
        created_ms: r.get(5)?,
    })
}

fn alert(r: &rusqlite::Row<'_>) -> rusqlite::Result<AlertRecord> {
    Ok(AlertRecord {
        key: r.get(0)?,
        rule: r.get(1)?,
        detail: r.get(2)?,
        raised_at: format_ms(r.get(3)?),
        cleared_at: r.get::<_, Option<i64>>(4)?.map(format_ms),
        acknowledged_by: r.get(5)?,
        acknowledged_at: r.get::<_, Option<i64>>(6)?.map(format_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(creation: Creation, id: &str) -> NewMessage {
        NewMessage::for_tests(id, creation)
    }

    /// SQLite's plan for `sql` with `params` bound, its steps joined by "; ".
    fn query_plan(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let steps = stmt.query_map(params, |r| r.get::<_, String>(3)).unwrap();
        steps.collect::<Result<Vec<_>, _>>().unwrap().join("; ")
    }

    #[tokio::test]
    async fn claiming_with_a_new_limit_does_not_compile_the_query_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        for (i, limit) in [1, 7, 3, 12, 5].into_iter().enumerate() {
            store
                .insert_submission(message(Creation::Submitted { pull: false }, &format!("q{i}")), false)
                .await
                .unwrap();
            assert_eq!(store.claim_due(now_ms() + 1, limit).await.unwrap().len(), 1);
        }
        let conn = store.conn.lock().unwrap();
        let claim = conn.prepare_cached(CLAIM_DUE).unwrap();
        assert_eq!(claim.get_status(rusqlite::StatementStatus::RePrepare), 0, "recompiled for its parameters");
    }

    /// The queue's counts come from `queue_counts`, kept by triggers: after inserts, state
    /// changes and deletions they equal a count of the stored messages, and reading them scans
    /// no table.
    #[tokio::test]
    async fn the_queue_counts_follow_every_change_without_a_scan() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        let submitted = || Creation::Submitted { pull: false };
        let mut sending = Vec::new();
        for i in 0..30 {
            let handed = store.insert_submission(message(submitted(), &format!("c{i}")), i % 3 == 0).await.unwrap();
            if handed.claimed {
                sending.push(handed.record.row);
            }
        }
        sending.extend(store.claim_due(now_ms() + 1, 8).await.unwrap().iter().map(|c| c.row));
        for row in sending.iter().step_by(2) {
            store.transition(*row, State::Sending, Happening::ReceiptReceived, None).await.unwrap();
        }
        let purged = store.purge_messages(State::Acknowledged, None, now_ms() + 1, 4).await.unwrap().0;
        assert_eq!(purged, 4);
        let counted = |store: &SqliteStore| -> Vec<(String, String, u64)> {
            let conn = store.conn.lock().unwrap();
            let mut stmt = conn
                .prepare("SELECT direction, state, COUNT(*) FROM messages GROUP BY direction, state ORDER BY 1, 2")
                .unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let mut stats: Vec<(String, String, u64)> = store
            .queue_stats()
            .await
            .unwrap()
            .into_iter()
            .map(|q| (q.direction.as_str().to_owned(), q.state.as_str().to_owned(), q.count))
            .collect();
        stats.sort();
        assert_eq!(stats, counted(&store));
        assert_eq!(stats.iter().map(|s| s.2).sum::<u64>(), 26);
        let plan = query_plan(&store.conn.lock().unwrap(), QUEUE_STATS, []);
        assert!(
            !plan.contains("SCAN m") && plan.contains("SEARCH m USING COVERING INDEX messages_queue_leg"),
            "{plan}"
        );
    }

    /// A retention pass reads only what it removes: the messages it emptied before are not
    /// read again (both queries are ranges of one index, with no row left to filter).
    #[test]
    fn retention_reads_a_range_of_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        let conn = store.conn.lock().unwrap();
        for (sql, parameters) in [(PURGE_CONTENT, 3), (PURGE_MESSAGES, 4)] {
            let unbound = vec![rusqlite::types::Null; parameters];
            let plan = query_plan(&conn, sql, rusqlite::params_from_iter(unbound));
            assert!(plan.contains("messages_retention (state=? AND purged=? AND updated_at<?)"), "{sql}: {plan}");
        }
    }

    #[tokio::test]
    async fn a_submission_is_claimed_in_its_own_commit_only_when_asked_and_due() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        let submitted = || Creation::Submitted { pull: false };
        let handed = store.insert_submission(message(submitted(), "o1"), true).await.unwrap();
        assert!(handed.claimed && matches!(handed.inserted, Inserted::New(_)));
        assert_eq!((handed.record.state, handed.record.attempts), (State::Sending, 1));
        let states: Vec<&str> = handed.record.history.iter().map(|h| h.state.as_str()).collect();
        assert_eq!(states, ["submitted", "sending"], "both steps recorded, as a claim by the sender would");
        assert!(store.claim_due(now_ms() + 1, 10).await.unwrap().is_empty(), "not claimed a second time");
        // The stored record is what the submission was answered with.
        let stored = store.get(Direction::Outbound, "o1").await.unwrap();
        assert_eq!((stored.state, stored.attempts), (State::Sending, 1));

        let left = store.insert_submission(message(submitted(), "o2"), false).await.unwrap();
        assert!(!left.claimed);
        assert_eq!(left.record.state, State::Submitted, "no permit: the sender claims it");
        let pulled = store.insert_submission(message(Creation::Submitted { pull: true }, "o3"), true).await.unwrap();
        assert!(!pulled.claimed, "a message held for pulling is never handed to the sender");
        assert_ne!(pulled.record.state, State::Sending);
        let again = store.insert_submission(message(submitted(), "o1"), true).await.unwrap();
        assert!(!again.claimed && matches!(again.inserted, Inserted::Duplicate { .. }));
        assert_eq!((again.record.message_id.as_str(), again.record.attempts), ("o1", 1), "the first submission");
        let due: Vec<String> =
            store.claim_due(now_ms() + 1, 10).await.unwrap().into_iter().map(|r| r.message_id).collect();
        assert_eq!(due, ["o2"]);
        // After a crash, a handed-over message is resent like any claimed one.
        assert_eq!(store.recover(now_ms()).await.unwrap(), 2);
    }

    /// A few commits, spaced wider than the checkpointer's pace, leave the WAL alone: each one
    /// appends to it, none starts it over (which would cost a second fsync under FULL).
    #[tokio::test]
    async fn a_quiet_writer_is_not_checkpointed_after_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = SqliteStore::open(&path).unwrap();
        let wal_size = || std::fs::metadata(path.with_extension("db-wal")).map(|m| m.len()).unwrap_or(0);
        let pause = CHECKPOINT_EVERY + std::time::Duration::from_millis(100);
        let mut sizes = Vec::new();
        for i in 0..4 {
            store.insert(message(Creation::Received, &format!("m{i}"))).await.unwrap();
            sizes.push(wal_size());
            tokio::time::sleep(pause).await;
        }
        // A WAL started over is rewritten from its first frame: its file keeps its size.
        assert!(sizes.windows(2).all(|w| w[1] > w[0]), "the WAL was started over between commits: sizes {sizes:?}");
    }

    /// Checkpoints run beside the writer: under sustained concurrent writes no job meets
    /// "database is locked", and the WAL restarts, so its file stays bounded.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn under_sustained_writes_the_wal_stays_bounded_and_nothing_is_locked_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = SqliteStore::open(&path).unwrap();
        // 96 MB of envelopes through the WAL, 32 writers at once, each message claimed and
        // acknowledged as the sender does.
        let mut writers = tokio::task::JoinSet::new();
        for w in 0..32 {
            let store = store.clone();
            writers.spawn(async move {
                for i in 0..64 {
                    let mut m = message(Creation::Submitted { pull: false }, &format!("m{w}-{i}"));
                    m.envelope = vec![b'x'; 48 << 10];
                    let handed = store.insert_submission(m, true).await.unwrap();
                    let row = handed.record.row;
                    store.transition(row, State::Sending, Happening::ReceiptReceived, None).await.unwrap();
                    let _ = store.claim_due(now_ms(), 4).await.unwrap();
                }
            });
        }
        while let Some(done) = writers.join_next().await {
            done.unwrap();
        }
        let wal = std::fs::metadata(path.with_extension("db-wal")).map(|m| m.len()).unwrap_or(0);
        let bound = 3 * RESTART_AFTER_FRAMES as u64 * (4096 + 24);
        assert!(wal < bound, "the WAL grew to {wal} bytes (bound {bound}): it never restarted");
        let acknowledged = store
            .queue_stats()
            .await
            .unwrap()
            .iter()
            .filter(|q| q.state == State::Acknowledged)
            .map(|q| q.count)
            .sum::<u64>();
        assert_eq!(acknowledged, 32 * 64);
    }

    #[tokio::test]
    async fn commits_that_change_rows_tick_and_reads_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        let mut changes = store.changes().unwrap();
        changes.borrow_and_update();
        store.events(0, 10).await.unwrap();
        store.claim_due(now_ms(), 10).await.unwrap();
        assert!(!changes.has_changed().unwrap(), "a read, and a claim that found nothing, change nothing");
        store.insert(message(Creation::Submitted { pull: false }, "m1")).await.unwrap();
        // The tick follows the caller's answer, on the writer thread.
        tokio::time::timeout(std::time::Duration::from_secs(30), changes.changed()).await.unwrap().unwrap();
        assert_eq!(store.events(0, 10).await.unwrap().len(), 1, "what woke the waiter is there to read");
    }

    #[tokio::test]
    async fn lifecycle_duplicates_and_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        assert!(matches!(store.insert(message(Creation::Received, "m1")).await.unwrap(), Inserted::New(_)));
        match store.insert(message(Creation::Received, "m1")).await.unwrap() {
            Inserted::Duplicate { response, state } => {
                assert_eq!(response.unwrap(), b"<receipt/>");
                assert_eq!(state, State::Delivered);
            }
            other => panic!("{other:?}"),
        }
        store.insert(message(Creation::Submitted { pull: false }, "m1")).await.unwrap();
        let claimed = store.claim_due(now_ms(), 10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].state, State::Sending);
        assert_eq!(claimed[0].payloads[0].filename.as_deref(), Some("doc.xml"));
        assert!(store.claim_due(now_ms(), 10).await.unwrap().is_empty(), "leased once");
        assert_eq!(store.recover(now_ms()).await.unwrap(), 1);
        let again = store.claim_due(now_ms(), 10).await.unwrap();
        assert_eq!(again[0].attempts, 2);
        let row = again[0].row;
        store.transition(row, State::Sending, Happening::ReceiptReceived, Some(b"r".to_vec())).await.unwrap();
        // Compare-and-set: a second receipt (or a late retry decision) finds it moved on.
        match store.transition(row, State::Sending, Happening::ReceiptReceived, None).await {
            Err(StoreError::Conflict { expected: State::Sending, actual: State::Acknowledged, .. }) => {}
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            store.transition(row, State::Acknowledged, Happening::Claimed, None).await,
            Err(StoreError::Illegal(_))
        ));
        let record = store.get(Direction::Outbound, "m1").await.unwrap();
        assert_eq!(record.state, State::Acknowledged);
        assert_eq!(record.response.as_deref(), Some(&b"r"[..]));
        let states: Vec<&str> = record.history.iter().map(|h| h.state.as_str()).collect();
        assert_eq!(states, ["submitted", "sending", "waiting_retry", "sending", "acknowledged"]);
        let times: Vec<&str> = record.history.iter().map(|h| h.at.as_str()).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "history never goes backwards: {times:?}");
        let inbox = store
            .list(&Search {
                direction: Some(Direction::Inbound),
                state: Some(State::Delivered),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(inbox.len(), 1);
        assert!(matches!(store.get(Direction::Inbound, "nope").await, Err(StoreError::NotFound(_))));
        // The feed: one event per transition, none for the duplicate, each naming the link.
        let feed = store.events(0, 100).await.unwrap();
        let names: Vec<(&str, &str)> = feed.iter().map(|e| (e.message_id.as_str(), e.event.as_str())).collect();
        assert_eq!(
            names,
            [
                ("m1", "received"),
                ("m1", "submitted"),
                ("m1", "claimed"),
                ("m1", "interrupted"),
                ("m1", "claimed"),
                ("m1", "receipt_received")
            ]
        );
        assert!(feed.iter().all(|e| e.partner == "PE" && e.pmode == "cl-pe" && e.leg == "ephyto"));
        assert_eq!(feed[2].from.as_deref(), Some("submitted"));
        let inbound = store.get(Direction::Inbound, "m1").await.unwrap();
        assert_eq!(inbound.history.len(), 2, "the duplicate is a note in the history");
        assert_eq!(inbound.history[1].event, None);
    }

    /// Issue 10.5: what runs on a timer or per API call reads through an index, never the
    /// whole table (whose rows carry the envelopes).
    #[test]
    fn periodic_and_listing_queries_use_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        let conn = store.conn.lock().unwrap();
        let plan = |sql: &str, n: usize| query_plan(&conn, sql, rusqlite::params_from_iter(vec!["x"; n]));
        let overdue = plan(PULLED_OVERDUE, 2);
        assert!(overdue.contains("USING INDEX"), "{overdue}");
    }

    /// 100,000 messages (bulk-inserted in one transaction): every page of a filtered search is
    /// newest first, pages join without gaps or repeats, and every filter is served by an index.
    #[tokio::test]
    async fn searches_page_through_100_000_messages_by_cursor_with_indexed_filters() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        {
            let mut conn = store.conn.lock().unwrap();
            let tx = conn.transaction().unwrap();
            tx.execute_batch(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
                 INSERT INTO messages (direction, message_id, conversation_id, pmode, leg, partner, service, action,
                                       state, created_at, updated_at, envelope, document_number)
                 SELECT CASE WHEN i % 2 = 0 THEN 'outbound' ELSE 'inbound' END, 'm' || i, 'c' || (i / 10),
                        'cl-pe', 'ephyto', CASE WHEN i % 3 = 0 THEN 'PE-VUCE' ELSE 'CO-VUCE' END, 's', 'a',
                        CASE WHEN i % 7 = 0 THEN 'failed' ELSE 'acknowledged' END, 1700000000000 + i * 1000,
                        1700000000000 + i * 1000, x'', 'CL-2026-' || i
                 FROM n",
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let search = Search {
            direction: Some(Direction::Outbound),
            state: Some(State::Failed),
            partner: Some("PE-VUCE".into()),
            limit: 500,
            ..Default::default()
        };
        let (mut seen, mut before, mut pages) = (Vec::new(), None, 0);
        loop {
            let mut page = store.search(&Search { before, ..search.clone() }).await.unwrap();
            let more = page.len() > 500;
            page.truncate(500);
            assert!(page.windows(2).all(|w| w[0].row > w[1].row), "newest first");
            assert!(page.iter().all(|m| m.state == State::Failed && m.partner == "PE-VUCE"));
            before = page.last().map(|m| m.row);
            seen.extend(page.into_iter().map(|m| m.row));
            pages += 1;
            if !more {
                break;
            }
        }
        // i even, i % 3 == 0, i % 7 == 0: multiples of 42.
        assert_eq!(seen.len(), 100_000 / 42);
        assert_eq!(pages, seen.len().div_ceil(500));
        let unique: std::collections::BTreeSet<i64> = seen.iter().copied().collect();
        assert_eq!(unique.len(), seen.len(), "no message on two pages");
        let by_number = store
            .search(&Search { document_number: Some("CL-2026-4242".into()), limit: 10, ..Default::default() })
            .await
            .unwrap();
        assert_eq!(by_number.iter().map(|m| m.message_id.as_str()).collect::<Vec<_>>(), ["m4242"]);
        let day = store
            .search(&Search {
                from_ms: Some(1700000000000 + 1000 * 1000),
                to_ms: Some(1700000000000 + 1010 * 1000),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(day.len(), 10);
        let stats = store.queue_stats().await.unwrap();
        assert_eq!(stats.iter().map(|s| s.count).sum::<u64>(), 100_000);
        // Each single filter is answered through an index, not a scan of the table.
        let conn = store.conn.lock().unwrap();
        for search in [
            Search { partner: Some("x".into()), ..Default::default() },
            Search { message_id: Some("x".into()), ..Default::default() },
            Search { conversation_id: Some("x".into()), ..Default::default() },
            Search { document_number: Some("x".into()), ..Default::default() },
            Search { from_ms: Some(1), to_ms: Some(2), ..Default::default() },
            Search { direction: Some(Direction::Outbound), state: Some(State::Failed), ..Default::default() },
        ] {
            let (sql, values) = search_query(&Search { limit: 50, ..search.clone() });
            let plan = query_plan(&conn, &sql, rusqlite::params_from_iter(values.iter()));
            assert!(plan.contains("INDEX"), "{search:?}: {plan}");
        }
    }

    #[tokio::test]
    async fn refusals_are_bounded_and_alerts_are_raised_and_cleared_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        let now = now_ms();
        for i in 0..30 {
            let refusal = NewRefusal {
                at_ms: now - 1000 + i,
                remote: Some("192.0.2.1".into()),
                partner: None,
                message_id: Some(format!("r{i}")),
                code: "EBMS:0009".into(),
                detail: "bad".into(),
                header: b"<S12:Envelope".to_vec(),
            };
            store.record_refusal(refusal, 20, 60_000).await.unwrap();
        }
        let kept = store.refusals(None, 100).await.unwrap();
        assert_eq!(kept.len(), 20, "at most `keep`");
        assert_eq!(kept[0].message_id.as_deref(), Some("r29"), "newest first");
        let old = NewRefusal { at_ms: now + 120_000, ..store_refusal("late") };
        store.record_refusal(old, 20, 60_000).await.unwrap();
        assert_eq!(store.refusals(None, 100).await.unwrap().len(), 1, "none older than the age limit");
        let page = store.refusals(Some(kept[5].id), 100).await.unwrap();
        assert!(page.iter().all(|r| r.id < kept[5].id));

        assert!(store.raise_alert("disk_low", "disk_low", "10 MiB free", now).await.unwrap());
        assert!(!store.raise_alert("disk_low", "disk_low", "9 MiB free", now).await.unwrap(), "raised once");
        assert!(store.clear_alert("disk_low", now + 1).await.unwrap().is_some());
        assert!(store.clear_alert("disk_low", now + 2).await.unwrap().is_none(), "cleared once");
        assert!(store.raise_alert("disk_low", "disk_low", "again", now + 3).await.unwrap(), "a new episode");
        assert!(store.acknowledge_alert("disk_low", "ana", now + 4).await.unwrap());
        assert!(!store.acknowledge_alert("disk_low", "bo", now + 5).await.unwrap(), "acknowledged once");
        let alerts = store.alerts(10).await.unwrap();
        assert_eq!(alerts.len(), 2);
        assert!(alerts[0].cleared_at.is_none(), "active first: {alerts:?}");
        assert_eq!(alerts[0].acknowledged_by.as_deref(), Some("ana"));
    }

    fn store_refusal(id: &str) -> NewRefusal {
        NewRefusal {
            at_ms: now_ms(),
            remote: None,
            partner: Some("PE-VUCE".into()),
            message_id: Some(id.into()),
            code: "EBMS:0101".into(),
            detail: "signature".into(),
            header: Vec::new(),
        }
    }

    #[tokio::test]
    async fn two_racing_acknowledgements_move_the_message_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(SqliteStore::open(&dir.path().join("s.db")).unwrap());
        let Inserted::New(row) = store.insert(message(Creation::Received, "m2")).await.unwrap() else { panic!() };
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    store.transition(row, State::Delivered, Happening::BackendAcknowledged, None).await
                })
            })
            .collect();
        let mut won = 0;
        for r in racers {
            match r.await.unwrap() {
                Ok(State::Acknowledged) => won += 1,
                Err(StoreError::Conflict { .. }) => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(won, 1);
        assert_eq!(store.events(0, 100).await.unwrap().len(), 2, "received, backend_acknowledged");
    }

    /// Issue 14: a store made by the release before schema versions opens, migrates forward in
    /// one transaction and keeps its messages; a store from a newer release is refused.
    #[tokio::test]
    async fn an_older_store_is_migrated_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let conn = Connection::open(&path).unwrap();
            let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/store-v1.sql");
            conn.execute_batch(&std::fs::read_to_string(fixture).unwrap()).unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let old = store.get(Direction::Outbound, "old-1@ap.cl.demo").await.unwrap();
        assert_eq!(
            (old.state, old.history.len(), old.payloads[0].filename.as_deref()),
            (State::Acknowledged, 2, Some("cert.xml"))
        );
        let found = store
            .search(&Search { document_number: Some("CL-2025-0042".into()), limit: 5, ..Default::default() })
            .await
            .unwrap();
        assert_eq!(found.len(), 1, "the document number was filled in from the stored summary");
        assert!(store.users().await.unwrap().is_empty() && store.alerts(5).await.unwrap().is_empty(), "new tables");
        let stored: i64 =
            store.conn.lock().unwrap().query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0)).unwrap();
        let queued = store.queue_stats().await.unwrap().iter().map(|q| q.count).sum::<u64>();
        assert_eq!(queued, stored as u64, "the queue counts start from the messages already stored");
        drop(store);
        let version = |path: &Path| -> i64 {
            Connection::open(path).unwrap().query_row("SELECT version FROM schema_version", [], |r| r.get(0)).unwrap()
        };
        assert_eq!(version(&path), SCHEMA_VERSION);
        SqliteStore::open(&path).unwrap();
        assert_eq!(version(&path), SCHEMA_VERSION, "opening again changes nothing");
        Connection::open(&path).unwrap().execute("UPDATE schema_version SET version = 99", []).unwrap();
        let refused = SqliteStore::open(&path).err().expect("a newer store is refused");
        assert!(refused.to_string().contains("schema version 99, made by a newer release"), "{refused}");
    }
}
