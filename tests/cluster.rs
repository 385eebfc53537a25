//! Two access point nodes for one country on a shared PostgreSQL store (a real server from
//! Debian's package, started by the test): they share the queue, each attempt runs on one
//! node (FOR UPDATE SKIP LOCKED), duplicates are caught across nodes, and when one node is
//! SIGKILLed mid-run the other takes over its work once the lease expires.

mod common;

use common::postgres::Postgres;
use common::*;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use ventanilla::backend::client::{ApiClient, Upload};
use ventanilla::store::postgres::PostgresStore;
use ventanilla::store::{Creation, Happening, Inserted, MessageStore, NewMessage, State, StoreError};

const TOKEN: &str = "cluster-test-token-0123456789";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Proc(Option<Child>);

impl Proc {
    fn start(config: &Path) -> Proc {
        let log = std::fs::File::create(config.with_extension("log")).unwrap();
        Proc(Some(
            Command::new(env!("CARGO_BIN_EXE_ventanilla"))
                .args(["serve", "--config"])
                .arg(config)
                .stderr(log)
                .spawn()
                .unwrap(),
        ))
    }
    fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

#[allow(clippy::too_many_arguments)]
fn config(
    dir: &Path,
    name: &str,
    code: &str,
    party: &str,
    as4: u16,
    backend: u16,
    partner: (&str, u16),
    store: &str,
) -> PathBuf {
    let c = dir.join("certs/demo");
    let text = format!(
        r#"party_id = "{party}"
host = "ap.{code}.cluster"
data_dir = "{data}"
pmodes = "{pmodes}"
[as4]
listen = "127.0.0.1:{as4}"
tls_cert = "{c}/{code}-tls.pem"
tls_key = "{c}/{code}-tls.key"
trust = "{c}/ca.pem"
[backend]
listen = "127.0.0.1:{backend}"
token = "{TOKEN}"
[endpoints]
"{p}" = "https://127.0.0.1:{pp}/as4"
[[keys]]
profile = "edelivery-2.0"
sign = {{ key = "{c}/{code}-sign-ed25519.key", cert = "{c}/{code}-sign-ed25519.pem" }}
enc = {{ key = "{c}/{code}-enc-x25519.key", cert = "{c}/{code}-enc-x25519.pem" }}
[security]
crls = ["{c}/ca.crl"]
{store}
"#,
        data = dir.join(code).display(),
        pmodes = dir.join("pmodes").display(),
        c = c.display(),
        p = partner.0,
        pp = partner.1,
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_the_work_and_one_finishes_what_the_killed_one_started() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    ventanilla_testkit::demo_pki::write_demo_pki(&dir.path().join("certs/demo"), &["cl", "co", "mx", "pe"]).unwrap();
    std::fs::create_dir_all(dir.path().join("pmodes")).unwrap();
    let link = std::fs::read_to_string(repo().join("pmodes/cl-pe.toml")).unwrap().replace(
        r#"retry            = ["1m", "5m", "15m", "1h", "4h"]"#,
        &format!("retry = [{}]", vec!["\"1s\""; 30].join(", ")),
    );
    std::fs::write(dir.path().join("pmodes/cl-pe.toml"), link).unwrap();
    let (a_as4, a_api, b_as4, b_api, pe_as4, pe_api) =
        (free_port(), free_port(), free_port(), free_port(), free_port(), free_port());
    let store =
        |node: &str| format!("[store]\nkind = \"postgres\"\nurl = \"{}\"\nnode = \"{node}\"\nlease = \"3s\"", pg.url());
    let mut a =
        Proc::start(&config(dir.path(), "cl-a", "cl", "CL-SICEX", a_as4, a_api, ("PE-VUCE", pe_as4), &store("a")));
    let _b = Proc::start(&config(dir.path(), "cl-b", "cl", "CL-SICEX", b_as4, b_api, ("PE-VUCE", pe_as4), &store("b")));
    let _pe = Proc::start(&config(dir.path(), "pe", "pe", "PE-VUCE", pe_as4, pe_api, ("CL-SICEX", a_as4), ""));
    let (api_a, api_b, api_pe) = (
        ApiClient::new(&format!("http://127.0.0.1:{a_api}"), TOKEN),
        ApiClient::new(&format!("http://127.0.0.1:{b_api}"), TOKEN),
        ApiClient::new(&format!("http://127.0.0.1:{pe_api}"), TOKEN),
    );
    wait_until_up(&api_a).await;
    wait_until_up(&api_b).await;
    wait_until_up(&api_pe).await;

    let doc = file(dir.path(), "ephyto.xml", &ephyto("CL", "PE"));
    let metadata = serde_json::json!({"to": "PE-VUCE", "leg": "ephyto"});
    let uploads = [Upload { path: &doc, mime_type: "application/xml" }];
    let mut accepted = Vec::new();
    let started = Instant::now();
    for i in 0..300 {
        if i == 150 {
            a.kill(); // SIGKILL node a mid-run, with messages of its in flight
        }
        let api = if i < 150 && i % 2 == 0 { &api_a } else { &api_b };
        if let Ok(r) = api.submit(&metadata, &uploads).await {
            accepted.push(r["message_id"].as_str().unwrap().to_owned());
        }
    }
    assert!(accepted.len() >= 299, "both nodes accept submissions: {}", accepted.len());

    // Node b finishes everything, including what a had leased.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let done = api_b.list_all("/api/v1/messages?direction=outbound&state=acknowledged").await.unwrap();
        if done.len() >= accepted.len() {
            break;
        }
        assert!(Instant::now() < deadline, "{} of {} acknowledged", done.len(), accepted.len());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let inbox = api_pe.list_all("/api/v1/inbox?all=true").await.unwrap();
    let delivered: Vec<&str> = inbox.iter().map(|m| m["message_id"].as_str().unwrap()).collect();
    let unique: HashSet<&str> = delivered.iter().copied().collect();
    assert_eq!(unique.len(), delivered.len(), "delivered once each");
    assert!(accepted.iter().all(|id| unique.contains(id.as_str())), "every accepted message delivered");
    // Each attempt ran on one node: the partner saw a message twice only if its node died
    // while sending it (a lease taken over).
    let cl_events = api_b.get_json("/api/v1/events?after=0&limit=10000").await.unwrap();
    let takeovers = cl_events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["detail"].as_str().unwrap().contains("lease expired"))
        .count();
    let pe_events = api_pe.get_json("/api/v1/events?after=0&limit=10000").await.unwrap();
    let duplicates = pe_events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["detail"].as_str().unwrap().starts_with("duplicate received"))
        .count();
    assert!(duplicates <= takeovers, "{duplicates} duplicates at the partner, {takeovers} takeovers");
    // The kill cut node a's transactions, and their count changes with them: the queue's counts
    // still equal a count of the stored messages.
    let (db, connection) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let reader = PostgresStore::connect(&pg.url(), 2, Duration::from_secs(60)).await.unwrap();
    let (kept, full) = counted(&reader, &db).await;
    assert_eq!(kept, full, "the queue counts after a node was killed mid-run");
    eprintln!(
        "cluster: {} messages via two nodes on PostgreSQL in {:.1?}; {takeovers} taken over after node a was killed",
        accepted.len(),
        started.elapsed()
    );
}

fn inbound(id: &str) -> NewMessage {
    NewMessage {
        message_id: id.into(),
        conversation_id: "c".into(),
        pmode: "cl-pe".into(),
        leg: "ephyto".into(),
        partner: "CL-SICEX".into(),
        service: "s".into(),
        action: "a".into(),
        creation: Creation::Received,
        envelope: b"<env/>".to_vec(),
        response: Some(format!("<receipt for {id}/>").into_bytes()),
        payloads: Vec::new(),
        document: None,
        transport: ventanilla::pmode::Transport::As4,
        unsynced: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_detected_across_nodes_and_work_is_leased_once() {
    let pg = Postgres::start();
    let one = PostgresStore::connect(&pg.url(), 4, Duration::from_secs(60)).await.unwrap();
    let two = PostgresStore::connect(&pg.url(), 4, Duration::from_secs(60)).await.unwrap();
    // The same MessageId arriving at both nodes at once: stored once, the other answered
    // with the stored receipt.
    for i in 0..20 {
        let id = format!("dup-{i}@test");
        let (x, y) = tokio::join!(one.insert(inbound(&id)), two.insert(inbound(&id)));
        let outcomes = [x.unwrap(), y.unwrap()];
        assert_eq!(outcomes.iter().filter(|o| matches!(o, Inserted::New(_))).count(), 1, "{outcomes:?}");
        assert!(outcomes.iter().any(
            |o| matches!(o, Inserted::Duplicate { response: Some(r), state: State::Delivered } if r == format!("<receipt for {id}/>").as_bytes())
        ));
    }
    // Outbound work leased by two nodes claiming at the same time: each message exactly once.
    for i in 0..50 {
        let mut m = inbound(&format!("out-{i}@test"));
        m.creation = Creation::Submitted { pull: false };
        one.insert(m).await.unwrap();
    }
    let now = ventanilla::store::now_ms();
    let (x, y) = tokio::join!(one.claim_due(now, 30), two.claim_due(now, 30));
    let (x, y) = (x.unwrap(), y.unwrap());
    let ids: HashSet<String> = x.iter().chain(y.iter()).map(|r| r.message_id.clone()).collect();
    assert_eq!(x.len() + y.len(), 50, "all claimed");
    assert_eq!(ids.len(), 50, "none claimed twice");
    assert!(one.shared() && two.shared());
    // Within the lease nobody takes them back; a recovery sees nothing expired.
    assert_eq!(two.recover(ventanilla::store::now_ms()).await.unwrap(), 0);
    assert_eq!(
        two.recover(ventanilla::store::now_ms() + 61_000).await.unwrap(),
        50,
        "after the lease, another node takes over"
    );
    // Compare-and-set across nodes: the backend acknowledging one received message through
    // both nodes at once moves it once, with one event.
    for i in 0..20 {
        let id = format!("ack-{i}@test");
        let Inserted::New(row) = one.insert(inbound(&id)).await.unwrap() else { panic!("new") };
        let (x, y) = tokio::join!(
            one.transition(row, State::Delivered, Happening::BackendAcknowledged, None),
            two.transition(row, State::Delivered, Happening::BackendAcknowledged, None)
        );
        let won = [&x, &y].iter().filter(|r| matches!(r, Ok(State::Acknowledged))).count();
        let lost = [&x, &y].iter().filter(|r| matches!(r, Err(StoreError::Conflict { .. }))).count();
        assert_eq!((won, lost), (1, 1), "{x:?} {y:?}");
    }
    let feed = one.events(0, 10_000).await.unwrap();
    assert_eq!(feed.iter().filter(|e| e.event == "backend_acknowledged").count(), 20, "one event per transition");
    assert!(feed.iter().all(|e| e.pmode == "cl-pe" && e.partner == "CL-SICEX"));
}

/// What the console and the alerts read and write, on PostgreSQL with two nodes: one search
/// with cursor paging, queue statistics, users, the audit log, refusals, alerts raised and
/// cleared once across nodes, and an operator's resend (failed → submitted, attempts reset).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_queries_work_across_nodes_on_postgresql() {
    use ventanilla::store::{AuditEntry, Direction, NewRefusal, Search, User};
    let pg = Postgres::start();
    let one = PostgresStore::connect(&pg.url(), 4, Duration::from_secs(60)).await.unwrap();
    let two = PostgresStore::connect(&pg.url(), 4, Duration::from_secs(60)).await.unwrap();
    for i in 0..25 {
        let mut m = inbound(&format!("ops-{i}@test"));
        m.document = Some(serde_json::json!({ "number": format!("CL-2026-{i}") }));
        one.insert(m).await.unwrap();
    }
    let (mut rows, mut before) = (Vec::new(), None);
    loop {
        let mut page = two
            .search(&Search { direction: Some(Direction::Inbound), before, limit: 10, ..Default::default() })
            .await
            .unwrap();
        let more = page.len() > 10;
        page.truncate(10);
        before = page.last().map(|m| m.row);
        rows.extend(page.into_iter().map(|m| m.message_id));
        if !more {
            break;
        }
    }
    assert_eq!(rows.len(), 25);
    assert_eq!(rows[0], "ops-24@test", "newest first");
    let found = two
        .search(&Search { document_number: Some("CL-2026-7".into()), limit: 5, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].message_id, "ops-7@test");
    let stats = two.queue_stats().await.unwrap();
    assert_eq!(stats.iter().filter(|s| s.direction == Direction::Inbound).map(|s| s.count).sum::<u64>(), 25);

    let user = User {
        name: "ana".into(),
        role: "operator".into(),
        password_hash: "$argon2id$x".into(),
        failures: 0,
        locked_until_ms: None,
        created_ms: 1,
    };
    one.put_user(&user).await.unwrap();
    one.put_user(&User { failures: 2, ..user.clone() }).await.unwrap();
    assert_eq!(two.user("ana").await.unwrap().unwrap().failures, 2, "users are shared");
    assert_eq!(two.users().await.unwrap().len(), 1);
    let entry = AuditEntry {
        id: 0,
        at: String::new(),
        at_ms: 5,
        actor: "ana".into(),
        action: "resend".into(),
        target: "m".into(),
        detail: String::new(),
    };
    one.append_audit(&entry).await.unwrap();
    assert_eq!(two.audit_log(None, 10).await.unwrap()[0].action, "resend");
    assert!(two.delete_user("ana").await.unwrap());

    let now = ventanilla::store::now_ms();
    for i in 0..5 {
        let r = NewRefusal {
            at_ms: now + i,
            remote: Some("192.0.2.7".into()),
            partner: None,
            message_id: None,
            code: "EBMS:0009".into(),
            detail: "bad".into(),
            header: b"<x".to_vec(),
        };
        one.record_refusal(r, 3, 60_000).await.unwrap();
    }
    assert_eq!(two.refusals(None, 10).await.unwrap().len(), 3, "bounded in count");

    let (x, y) = tokio::join!(one.raise_alert("k", "disk_low", "d", now), two.raise_alert("k", "disk_low", "d", now));
    assert_eq!([x.unwrap(), y.unwrap()].iter().filter(|r| **r).count(), 1, "raised by one node");
    let (x, y) = tokio::join!(one.clear_alert("k", now), two.clear_alert("k", now));
    assert_eq!([x.unwrap(), y.unwrap()].iter().filter(|r| r.is_some()).count(), 1, "cleared by one node");
    assert_eq!(two.alerts(10).await.unwrap().len(), 1);

    let mut m = inbound("resend@test");
    m.creation = Creation::Submitted { pull: false };
    let Inserted::New(row) = one.insert(m).await.unwrap() else { panic!("new") };
    one.claim_due(ventanilla::store::now_ms(), 100).await.unwrap();
    let exhausted = Happening::NoReceipt { reason: "down".into(), retry_at: None, error: None };
    assert_eq!(one.transition(row, State::Sending, exhausted, None).await.unwrap(), State::Failed);
    let resend = Happening::ResentByOperator { by: "ana".into(), pull: false, at: 0 };
    assert_eq!(two.transition(row, State::Failed, resend, None).await.unwrap(), State::Submitted);
    let record = two.get(Direction::Outbound, "resend@test").await.unwrap();
    assert_eq!(record.attempts, 0, "a fresh schedule");
    two.note(row, "resubmitted by ana as x").await.unwrap();
    let record = one.get(Direction::Outbound, "resend@test").await.unwrap();
    assert_eq!(record.history.last().unwrap().detail, "resubmitted by ana as x");

    // Retention, in batches from both nodes: content first, then the records.
    let received = two.get(Direction::Inbound, "ops-0@test").await.unwrap().state;
    let later = ventanilla::store::now_ms() + 1;
    let (a, b) = tokio::join!(one.purge_content(received, later, 10), two.purge_content(received, later, 10));
    assert_eq!(a.unwrap().0 + b.unwrap().0, 20);
    assert_eq!(one.purge_content(received, later, 10).await.unwrap().0, 5);
    assert_eq!(two.purge_content(received, later, 10).await.unwrap().0, 0, "each content removed once");
    assert_eq!(one.purge_messages(received, None, later, 100).await.unwrap().0, 25);
    assert!(two.queue_stats().await.unwrap().iter().all(|s| s.direction != Direction::Inbound));
}

/// The queue's counts as `queue_stats` gives them, and as a count of every stored message.
async fn counted(
    store: &PostgresStore,
    db: &tokio_postgres::Client,
) -> (Vec<(String, String, u64)>, Vec<(String, String, u64)>) {
    let mut kept: Vec<_> = store
        .queue_stats()
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.direction.as_str().to_string(), s.state.as_str().to_string(), s.count))
        .collect();
    let mut full: Vec<_> = db
        .query("SELECT direction, state, COUNT(*) FROM messages GROUP BY direction, state", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1), r.get::<_, i64>(2) as u64))
        .collect();
    kept.sort();
    full.sort();
    (kept, full)
}

/// On PostgreSQL the queue's counts are kept from the changes each write of a message appends
/// (a read no longer counts every stored message): they equal a count of the messages while two
/// nodes insert, claim and read at once, after retention removes messages, and for messages
/// stored before the counts existed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_counts_stay_exact_while_two_nodes_write_and_read() {
    let pg = Postgres::start();
    let (db, connection) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    // A store of an earlier release: messages, no counts.
    let old = PostgresStore::connect(&pg.url(), 4, Duration::from_secs(60)).await.unwrap();
    for i in 0..30 {
        old.insert(inbound(&format!("before-{i}@test"))).await.unwrap();
    }
    drop(old);
    db.batch_execute(
        "DROP TRIGGER queue_counts_insert_delete ON messages; DROP TRIGGER queue_counts_update ON messages;
         DROP TABLE queue_counts; DROP TABLE queue_count_changes;",
    )
    .await
    .unwrap();
    for i in 30..40 {
        db.execute(
            "INSERT INTO messages (direction, message_id, conversation_id, pmode, leg, partner, service, action, state,
             created_at, updated_at, envelope) VALUES ('inbound', $1, 'c', 'cl-pe', 'ephyto', 'CL-SICEX', 's', 'a',
             'delivered', 1, 1, '\\x00')",
            &[&format!("before-{i}@test")],
        )
        .await
        .unwrap();
    }
    let one = std::sync::Arc::new(PostgresStore::connect(&pg.url(), 4, Duration::from_secs(60)).await.unwrap());
    let two = std::sync::Arc::new(PostgresStore::connect(&pg.url(), 4, Duration::from_secs(60)).await.unwrap());
    let (kept, full) = counted(&one, &db).await;
    assert_eq!(kept, full, "an earlier store's messages are counted when it opens");
    assert_eq!(full, vec![("inbound".to_string(), "delivered".to_string(), 40)]);

    // Two nodes writing while both read (and so fold) the counts.
    let mut writers = Vec::new();
    for (n, store) in [one.clone(), two.clone()].into_iter().enumerate() {
        writers.push(tokio::spawn(async move {
            for i in 0..60 {
                let mut m = inbound(&format!("n{n}-{i}@test"));
                if i % 2 == 0 {
                    m.creation = Creation::Submitted { pull: false };
                }
                store.insert(m).await.unwrap();
                if i % 10 == 9 {
                    store.claim_due(ventanilla::store::now_ms(), 3).await.unwrap();
                }
            }
        }));
    }
    let readers: Vec<_> = [one.clone(), two.clone()]
        .into_iter()
        .map(|store| {
            tokio::spawn(async move {
                for _ in 0..40 {
                    store.queue_stats().await.unwrap();
                }
            })
        })
        .collect();
    for task in writers.into_iter().chain(readers) {
        task.await.unwrap();
    }
    for store in [&one, &two] {
        let (kept, full) = counted(store, &db).await;
        assert_eq!(kept, full, "while two nodes wrote and read");
    }
    let total: u64 = counted(&two, &db).await.0.iter().map(|c| c.2).sum();
    assert_eq!(total, 160);

    // Retention from both nodes at once.
    let later = ventanilla::store::now_ms() + 1;
    let (a, b) = tokio::join!(
        one.purge_messages(State::Delivered, None, later, 7),
        two.purge_messages(State::Delivered, None, later, 7)
    );
    assert_eq!(a.unwrap().0 + b.unwrap().0, 14);
    let (kept, full) = counted(&one, &db).await;
    assert_eq!(kept, full, "after retention");
    let pending: i64 = db.query_one("SELECT COUNT(*) FROM queue_count_changes", &[]).await.unwrap().get(0);
    assert_eq!(pending, 0, "a read folds the changes");
}
