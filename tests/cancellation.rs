//! The defect of issue 9, made deterministic: the client's connection goes away while the
//! store commits. A store in between commits the row (in a task of its own, as the real
//! stores' blocking jobs do), tells the test, and only then stalls before answering; the
//! test drops the request at that moment. Before the fix, the dropped request's staging guard
//! removed the payload folder the committed row names; now the pipeline is an owned task and
//! the folder stays.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;
use tokio::sync::Notify;
use ventanilla::demo::{Options, launch_with};
use ventanilla::node::StoreWrapper;
use ventanilla::store::*;

/// Commits, says so, then stalls: the window in which a dropped request used to lose files.
/// Also fails the first `failing_transitions` transitions as a busy or lost database would.
struct CommitThenStall {
    inner: Arc<dyn MessageStore>,
    committed: Arc<Notify>,
    stall: Duration,
    failing_transitions: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl MessageStore for CommitThenStall {
    async fn insert(&self, message: NewMessage) -> Result<Inserted, StoreError> {
        let inner = self.inner.clone();
        // The commit runs to its end whoever awaits it, like a spawn_blocking job.
        let outcome = tokio::spawn(async move { inner.insert(message).await })
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?;
        self.committed.notify_one();
        tokio::time::sleep(self.stall).await;
        outcome
    }
    async fn claim_due(&self, now_ms: i64, limit: usize) -> Result<Vec<MessageRecord>, StoreError> {
        self.inner.claim_due(now_ms, limit).await
    }
    async fn transition(
        &self,
        row: i64,
        expected: State,
        event: Happening,
        response: Option<Vec<u8>>,
    ) -> Result<State, StoreError> {
        if self.failing_transitions.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(StoreError::Task("injected: the database went away".into()));
        }
        self.inner.transition(row, expected, event, response).await
    }
    async fn get(&self, direction: Direction, message_id: &str) -> Result<MessageRecord, StoreError> {
        self.inner.get(direction, message_id).await
    }
    async fn list(&self, search: &Search) -> Result<Vec<MessageRecord>, StoreError> {
        self.inner.list(search).await
    }
    async fn recover(&self, now_ms: i64) -> Result<usize, StoreError> {
        self.inner.recover(now_ms).await
    }
    async fn take_pullable(
        &self,
        pmode: &str,
        leg: &str,
        expires_ms: i64,
    ) -> Result<Option<MessageRecord>, StoreError> {
        self.inner.take_pullable(pmode, leg, expires_ms).await
    }
    async fn pulled_overdue(&self, now_ms: i64, limit: usize) -> Result<Vec<Overdue>, StoreError> {
        self.inner.pulled_overdue(now_ms, limit).await
    }
    async fn payload_paths(&self) -> Result<Vec<PathBuf>, StoreError> {
        self.inner.payload_paths().await
    }
    async fn events(&self, after: i64, limit: usize) -> Result<Vec<FeedEvent>, StoreError> {
        self.inner.events(after, limit).await
    }
    async fn purge_content(
        &self,
        state: State,
        before_ms: i64,
        limit: usize,
    ) -> Result<(usize, Vec<PathBuf>), StoreError> {
        self.inner.purge_content(state, before_ms, limit).await
    }
    async fn purge_messages(
        &self,
        state: State,
        pmode: Option<&str>,
        before_ms: i64,
        limit: usize,
    ) -> Result<(usize, Vec<PathBuf>), StoreError> {
        self.inner.purge_messages(state, pmode, before_ms, limit).await
    }
    async fn search(&self, search: &Search) -> Result<Vec<Summary>, StoreError> {
        self.inner.search(search).await
    }
    async fn queue_stats(&self) -> Result<Vec<QueueStat>, StoreError> {
        self.inner.queue_stats().await
    }
    async fn note(&self, row: i64, detail: &str) -> Result<(), StoreError> {
        self.inner.note(row, detail).await
    }
    async fn record_refusal(&self, refusal: NewRefusal, keep: usize, max_age_ms: i64) -> Result<(), StoreError> {
        self.inner.record_refusal(refusal, keep, max_age_ms).await
    }
    async fn refusals(&self, before: Option<i64>, limit: usize) -> Result<Vec<Refusal>, StoreError> {
        self.inner.refusals(before, limit).await
    }
    async fn user(&self, name: &str) -> Result<Option<User>, StoreError> {
        self.inner.user(name).await
    }
    async fn users(&self) -> Result<Vec<User>, StoreError> {
        self.inner.users().await
    }
    async fn put_user(&self, user: &User) -> Result<(), StoreError> {
        self.inner.put_user(user).await
    }
    async fn delete_user(&self, name: &str) -> Result<bool, StoreError> {
        self.inner.delete_user(name).await
    }
    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.inner.append_audit(entry).await
    }
    async fn audit_log(&self, before: Option<i64>, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.inner.audit_log(before, limit).await
    }
    async fn raise_alert(&self, key: &str, rule: &str, detail: &str, at_ms: i64) -> Result<bool, StoreError> {
        self.inner.raise_alert(key, rule, detail, at_ms).await
    }
    async fn clear_alert(&self, key: &str, at_ms: i64) -> Result<Option<AlertRecord>, StoreError> {
        self.inner.clear_alert(key, at_ms).await
    }
    async fn enqueue_deliveries(
        &self,
        target: &str,
        pmode: Option<&str>,
        leg: Option<&str>,
        now_ms: i64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        self.inner.enqueue_deliveries(target, pmode, leg, now_ms, limit).await
    }
    async fn claim_deliveries(
        &self,
        target: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String, u32)>, StoreError> {
        self.inner.claim_deliveries(target, now_ms, lease_until_ms, limit).await
    }
    async fn finish_delivery(&self, row: i64, target: &str, outcome: DeliveryOutcome) -> Result<(), StoreError> {
        self.inner.finish_delivery(row, target, outcome).await
    }
    async fn deliveries(&self, state: Option<&str>, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        self.inner.deliveries(state, limit).await
    }
    async fn retry_delivery(&self, row: i64, target: &str, now_ms: i64) -> Result<bool, StoreError> {
        self.inner.retry_delivery(row, target, now_ms).await
    }
    async fn acknowledge_alert(&self, key: &str, by: &str, at_ms: i64) -> Result<bool, StoreError> {
        self.inner.acknowledge_alert(key, by, at_ms).await
    }
    async fn alerts(&self, limit: usize) -> Result<Vec<AlertRecord>, StoreError> {
        self.inner.alerts(limit).await
    }
}

fn stalling(committed: Arc<Notify>) -> StoreWrapper {
    StoreWrapper(Arc::new(move |inner| {
        Arc::new(CommitThenStall {
            inner,
            committed: committed.clone(),
            stall: Duration::from_millis(400),
            failing_transitions: Arc::default(),
        }) as Arc<dyn MessageStore>
    }))
}

/// A store whose first `failures` transitions fail (and whose inserts do not stall).
fn failing_transitions(failures: usize) -> StoreWrapper {
    let left = Arc::new(AtomicUsize::new(failures));
    StoreWrapper(Arc::new(move |inner| {
        Arc::new(CommitThenStall {
            inner,
            committed: Arc::default(),
            stall: Duration::ZERO,
            failing_transitions: left.clone(),
        }) as Arc<dyn MessageStore>
    }))
}

/// Chile's access point with `store` around its store, and Peru's, on loopback.
async fn sender_and_receiver(dir: &std::path::Path, store: StoreWrapper) -> Vec<ventanilla::demo::Running> {
    let options =
        Options { insecure: true, store_wrappers: BTreeMap::from([("cl".to_owned(), store)]), ..Options::default() };
    launch_with(dir, &repo().join("pmodes"), &[("cl", "CL-SICEX"), ("pe", "PE-VUCE")], &options).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_dropped_while_the_store_commits_loses_no_payload() {
    let dir = tempfile::tempdir().unwrap();
    let committed = Arc::new(Notify::new());
    let options = Options {
        insecure: true,
        store_wrappers: BTreeMap::from([("pe".to_owned(), stalling(committed.clone()))]),
        ..Options::default()
    };
    let nodes = launch_with(dir.path(), &repo().join("pmodes"), &[("pe", "PE-VUCE")], &options).await.unwrap();
    let pe = &nodes[0];
    let message = ventanilla_testkit::inject::unsigned_message("valid", &repo()).unwrap();
    let body = futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(message.body.clone()))]);
    let request = ventanilla::msh::inbound::receive(
        pe.node.ap.clone(),
        Default::default(),
        Some(message.content_type.clone()),
        body,
    );
    // The partner hangs up right after the commit: the request future is dropped.
    tokio::select! {
        reply = request => panic!("answered before the store returned: {reply:?}"),
        _ = committed.notified() => {}
    }
    // The pipeline finishes on its own; the committed message keeps its payload.
    let mut delivered = None;
    for _ in 0..100 {
        if let Ok(record) = pe.api.received(&message.message_id).await {
            delivered = Some(record);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let record = delivered.expect("the message was committed");
    assert_eq!(record["state"], "delivered");
    tokio::time::sleep(Duration::from_millis(600)).await; // past the stall: the pipeline ended
    let payload = pe.api.download(&message.message_id, 1).await.expect("the payload of a committed message");
    assert_eq!(record["payloads"][0]["sha256"], hex::encode(sha2::Sha256::digest(&payload)));
    for n in nodes {
        n.node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_whose_client_hangs_up_while_the_store_commits_is_still_sent() {
    let dir = tempfile::tempdir().unwrap();
    let committed = Arc::new(Notify::new());
    let nodes = sender_and_receiver(dir.path(), stalling(committed.clone())).await;
    let (cl, pe) = (&nodes[0], &nodes[1]);
    let document = ephyto("CL", "PE");
    // The backend's HTTP request, written by hand so that the test can close the socket.
    let boundary = "cancel-boundary";
    let mut form = Vec::new();
    form.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"\r\nContent-Type: application/json\r\n\r\n{{\"to\":\"PE-VUCE\",\"leg\":\"ephyto\"}}\r\n").as_bytes());
    form.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"payload\"; filename=\"c.xml\"\r\nContent-Type: application/xml\r\n\r\n").as_bytes());
    form.extend_from_slice(&document);
    form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let token = cl.api.token().to_owned();
    let head = format!(
        "POST /api/v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        form.len()
    );
    use tokio::io::AsyncWriteExt;
    let mut socket = tokio::net::TcpStream::connect(cl.node.backend_addr).await.unwrap();
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&form).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), committed.notified())
        .await
        .expect("the submission reached the store");
    drop(socket); // the backend hangs up while the store answers
    // Whatever the backend saw, the committed message goes out and arrives whole.
    let mut arrived = None;
    for _ in 0..200 {
        let inbox = pe.api.inbox().await.unwrap();
        if let Some(first) = inbox.as_array().and_then(|a| a.first()).cloned() {
            arrived = Some(first);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let arrived = arrived.expect("the committed submission was sent");
    let id = arrived["message_id"].as_str().unwrap().to_owned();
    let payload = pe.api.download(&id, 1).await.unwrap();
    assert_eq!(payload.as_ref(), document.as_slice());
    let sent = cl.api.wait_settled(&id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(sent["state"], "acknowledged");
    for n in nodes {
        n.node.stop().await;
    }
}

/// The sender's store fails as it records the receipt: the outcome is recorded when the store
/// comes back, without a restart (it used to stay `sending` until the next start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failure_while_recording_a_receipt_is_retried_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = sender_and_receiver(dir.path(), failing_transitions(2)).await;
    let (cl, pe) = (&nodes[0], &nodes[1]);
    let document = ephyto("CL", "PE");
    let path = dir.path().join("c.xml");
    std::fs::write(&path, &document).unwrap();
    let submitted = cl
        .api
        .submit(
            &serde_json::json!({"to": "PE-VUCE", "leg": "ephyto"}),
            &[ventanilla::backend::client::Upload { path: &path, mime_type: "application/xml" }],
        )
        .await
        .unwrap();
    let id = submitted["message_id"].as_str().unwrap().to_owned();
    let sent = cl.api.wait_settled(&id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(sent["state"], "acknowledged", "{sent}");
    assert_eq!(sent["attempts"], 1, "sent once, recorded after two store failures: {sent}");
    let received = pe.api.received(&id).await.unwrap();
    assert_eq!(received["state"], "delivered");
    for n in nodes {
        n.node.stop().await;
    }
}

/// Peru pulls what Chile holds, and Chile's store fails as it records Peru's receipt: the
/// outcome is recorded when the store comes back, without waiting for the receipt to be
/// overdue and the message to be offered (and pulled) a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failure_while_recording_a_pulled_messages_receipt_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    // Chile holds pulled messages only: its first transitions are the receipt's.
    let nodes = sender_and_receiver(dir.path(), failing_transitions(2)).await;
    let (cl, pe) = (&nodes[0], &nodes[1]);
    let pmode = dir.path().join("pmodes/cl-pe.toml");
    let text = std::fs::read_to_string(&pmode).unwrap();
    let at = text.find("[reliability]").unwrap();
    let pull_leg = r#"
[[leg]]
name          = "ephyto-pull"
service       = "urn:pacific-alliance:as4:service:ephyto-pull"
action        = "SPSCertificate"
document      = "ephyto"
mpc           = "urn:pacific-alliance:mpc:cl-to-pe"
from          = "CL-SICEX"
pull          = true
pull_interval = "300ms"
"#;
    std::fs::write(&pmode, format!("{}{pull_leg}\n{}", &text[..at], &text[at..])).unwrap();
    let loaded =
        |n: &ventanilla::demo::Running| n.node.ap.pmodes().links().iter().any(|l| l.legs.iter().any(|g| g.pull));
    for _ in 0..100 {
        if nodes.iter().all(loaded) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(nodes.iter().all(loaded), "the pull leg was loaded");
    let path = dir.path().join("c.xml");
    std::fs::write(&path, ephyto("CL", "PE")).unwrap();
    let submitted = cl
        .api
        .submit(
            &serde_json::json!({"to": "PE-VUCE", "leg": "ephyto-pull"}),
            &[ventanilla::backend::client::Upload { path: &path, mime_type: "application/xml" }],
        )
        .await
        .unwrap();
    assert_eq!(submitted["state"], "pullable", "{submitted}");
    let id = submitted["message_id"].as_str().unwrap().to_owned();
    let mut record = serde_json::Value::Null;
    for _ in 0..150 {
        record = cl.api.status(&id).await.unwrap();
        if record["state"] == "acknowledged" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(record["state"], "acknowledged", "{record}");
    assert_eq!(record["attempts"], 1, "pulled once, its receipt recorded after two store failures: {record}");
    assert_eq!(pe.api.received(&id).await.unwrap()["state"], "delivered");
    for n in nodes {
        n.node.stop().await;
    }
}

use sha2::Digest;
