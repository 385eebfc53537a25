//! Push delivery to the national system: a webhook that is down and comes back (every message
//! delivered, HMAC over the whole body checked, payloads byte-identical, the inbox emptied), a
//! dead delivery retried by an operator, and the watched folders (drop a document and its
//! sidecar on one side, find it written once in the other side's folder; the folder broken and
//! repaired meanwhile).

mod common;

use common::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use ventanilla::backend::client::Upload;
use ventanilla::config::Interval;
use ventanilla::demo::Options;
use ventanilla::push::settings::{DeliveryRule, PushWebhook, SubmitFolder};

/// What the national system's endpoint received: (message id, HMAC ok, metadata, payloads).
type Received = Arc<Mutex<Vec<(String, bool, serde_json::Value, Vec<Vec<u8>>)>>>;

async fn national_system(status: Arc<AtomicU16>) -> (String, Received) {
    let received: Received = Arc::default();
    let kept = received.clone();
    let app = axum::Router::new().route(
        "/inbound",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let (kept, status) = (kept.clone(), status.clone());
            async move {
                let answer = status.load(Ordering::SeqCst);
                if answer == 200 {
                    let signature = headers["x-ventanilla-signature"].to_str().unwrap().to_owned();
                    let ok = signature == ventanilla::ops::alerts::signature(b"push-secret", &body);
                    let content_type = headers["content-type"].to_str().unwrap();
                    let boundary = content_type.split("boundary=").nth(1).unwrap().to_owned();
                    let mut form = multer::Multipart::new(
                        futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) }),
                        boundary,
                    );
                    let (mut metadata, mut payloads) = (serde_json::Value::Null, Vec::new());
                    while let Some(field) = form.next_field().await.unwrap() {
                        let name = field.name().unwrap().to_owned();
                        let bytes = field.bytes().await.unwrap();
                        if name == "metadata" {
                            metadata = serde_json::from_slice(&bytes).unwrap();
                        } else {
                            payloads.push(bytes.to_vec());
                        }
                    }
                    let id = metadata["message_id"].as_str().unwrap().to_owned();
                    kept.lock().unwrap().push((id, ok, metadata, payloads));
                }
                axum::http::StatusCode::from_u16(answer).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/inbound", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

async fn wait_for(what: &str, mut probe: impl AsyncFnMut() -> bool) {
    for _ in 0..600 {
        if probe().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_is_down_gets_every_message_when_it_returns() {
    let status = Arc::new(AtomicU16::new(503));
    let (url, received) = national_system(status.clone()).await;
    let mut cluster = Cluster::start_options(&[("cl", "CL-SICEX"), ("pe", "PE-VUCE")], Options::default()).await;
    let secret = file(cluster.dir.path(), "push.secret", b"push-secret\n");
    let saved = cluster.take_down("pe").await;
    let webhook = PushWebhook { url, secret_env: None, secret_file: Some(secret), timeout: Interval::secs(10) };
    cluster
        .restart("pe", saved, |config| {
            config.deliveries = vec![DeliveryRule {
                name: "sw-pe".into(),
                pmode: Some("cl-pe".into()),
                leg: None,
                webhook: Some(webhook),
                folder: None,
                retry: vec![Interval(Duration::from_millis(500)); 40],
            }];
        })
        .await;
    let mut documents = BTreeMap::new();
    for i in 0..4 {
        let bytes = ephyto("CL", "PE");
        let doc = file(cluster.dir.path(), &format!("doc{i}.xml"), &bytes);
        let r = cluster
            .node("cl")
            .api
            .submit(
                &serde_json::json!({"to": "PE-VUCE", "leg": "ephyto"}),
                &[Upload { path: &doc, mime_type: "application/xml" }],
            )
            .await
            .unwrap();
        documents.insert(r["message_id"].as_str().unwrap().to_owned(), bytes);
    }
    let pe = cluster.node("pe").node.ap.clone();
    // The national system is down: the deliveries wait, the messages stay in the inbox.
    wait_for("failed attempts", async || {
        let pending = pe.store.deliveries(Some("pending"), 100).await.unwrap();
        pending.len() == 4 && pending.iter().all(|d| d.attempts >= 2)
    })
    .await;
    assert_eq!(inbox_len(cluster.node("pe")).await, 4);
    assert!(pe.store.deliveries(Some("pending"), 1).await.unwrap()[0].last_error.as_deref().unwrap().contains("503"));
    // It comes back: every message is delivered, with its payload, and leaves the inbox.
    status.store(200, Ordering::SeqCst);
    wait_for("every delivery", async || pe.store.deliveries(Some("delivered"), 100).await.unwrap().len() == 4).await;
    let got = received.lock().unwrap().clone();
    let delivered: BTreeMap<String, Vec<u8>> = got.iter().map(|(id, _, _, p)| (id.clone(), p[0].clone())).collect();
    assert_eq!(delivered, documents, "every message, byte-identical");
    assert!(got.iter().all(|(_, hmac_ok, metadata, _)| *hmac_ok && metadata["partner"] == "CL-SICEX"));
    assert_eq!(inbox_len(cluster.node("pe")).await, 0, "delivered messages leave the inbox");

    // A delivery whose schedule runs out is dead until an operator retries it.
    status.store(500, Ordering::SeqCst);
    let saved = cluster.take_down("pe").await;
    cluster.restart("pe", saved, |config| config.deliveries[0].retry = vec![]).await;
    let pe = cluster.node("pe").node.ap.clone();
    let doc = file(cluster.dir.path(), "late.xml", &ephyto("CL", "PE"));
    let late = cluster
        .node("cl")
        .api
        .submit(
            &serde_json::json!({"to": "PE-VUCE", "leg": "ephyto"}),
            &[Upload { path: &doc, mime_type: "application/xml" }],
        )
        .await
        .unwrap()["message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for("a dead delivery", async || pe.store.deliveries(Some("dead"), 10).await.unwrap().len() == 1).await;
    let dead = pe.store.deliveries(Some("dead"), 10).await.unwrap().remove(0);
    assert_eq!(dead.message_id, late);
    status.store(200, Ordering::SeqCst);
    assert!(pe.store.retry_delivery(dead.row, &dead.target, ventanilla::store::now_ms()).await.unwrap());
    wait_for("the retried delivery", async || received.lock().unwrap().iter().any(|(id, ..)| *id == late)).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_dropped_in_one_folder_arrives_once_in_the_partners_folder() {
    let mut cluster = Cluster::start_options(&[("cl", "CL-SICEX"), ("pe", "PE-VUCE")], Options::default()).await;
    let out = cluster.dir.path().join("cl-out");
    let inbox = cluster.dir.path().join("pe-in");
    std::fs::create_dir_all(&out).unwrap();
    // The receiving folder is broken at first (a file where the folder should be).
    std::fs::write(&inbox, b"not a folder").unwrap();
    let saved = cluster.take_down("cl").await;
    let out2 = out.clone();
    cluster
        .restart("cl", saved, |config| {
            config.submit_folder = Some(SubmitFolder { path: out2, interval: Interval(Duration::from_millis(200)) })
        })
        .await;
    let saved = cluster.take_down("pe").await;
    let inbox2 = inbox.clone();
    cluster
        .restart("pe", saved, |config| {
            config.deliveries = vec![DeliveryRule {
                name: "pe-folder".into(),
                pmode: None,
                leg: None,
                webhook: None,
                folder: Some(inbox2),
                retry: vec![Interval(Duration::from_millis(300)); 100],
            }];
        })
        .await;
    let document = ephyto("CL", "PE");
    std::fs::write(out.join("cert-001.xml"), &document).unwrap();
    std::fs::write(
        out.join("cert-001.xml.json"),
        br#"{"to": "PE-VUCE", "leg": "ephyto", "conversation_id": "drop-1"}"#,
    )
    .unwrap();
    std::fs::write(out.join("wrong.xml"), &document).unwrap();
    std::fs::write(out.join("wrong.xml.json"), br#"{"to": "PE-VUCE", "leg": "no-such-leg"}"#).unwrap();
    let result = out.join("sent/cert-001.xml.result.json");
    wait_for("the submission", async || result.exists()).await;
    let result: serde_json::Value = serde_json::from_slice(&std::fs::read(&result).unwrap()).unwrap();
    let id = result["message_id"].as_str().unwrap().to_owned();
    assert!(out.join("sent/cert-001.xml").exists() && !out.join("cert-001.xml").exists());
    wait_for("the refusal", async || out.join("failed/wrong.xml.error.txt").exists()).await;
    let error = std::fs::read_to_string(out.join("failed/wrong.xml.error.txt")).unwrap();
    assert!(error.contains("no-such-leg"), "{error}");
    // Delivery fails while the folder is broken, then succeeds once it is repaired.
    let pe = cluster.node("pe").node.ap.clone();
    wait_for("a failed folder write", async || {
        pe.store.deliveries(Some("pending"), 10).await.unwrap().iter().any(|d| d.attempts >= 2)
    })
    .await;
    std::fs::remove_file(&inbox).unwrap();
    std::fs::create_dir(&inbox).unwrap();
    let written = inbox.join(ventanilla::push::folder::folder_name(&id));
    wait_for("the written message", async || written.join("message.json").exists()).await;
    // The sender's file name travels as the part property FileName.
    assert_eq!(std::fs::read(written.join("cert-001.xml")).unwrap(), document, "byte-identical, under its name");
    let message: serde_json::Value =
        serde_json::from_slice(&std::fs::read(written.join("message.json")).unwrap()).unwrap();
    assert_eq!(message["conversation_id"], "drop-1");
    wait_for("the delivery recorded", async || pe.store.deliveries(Some("delivered"), 10).await.unwrap().len() == 1)
        .await;
    // Written once: a second write of the same message (a crash before it was recorded) is a no-op.
    let record = pe.store.get(ventanilla::store::Direction::Inbound, &id).await.unwrap();
    ventanilla::push::folder::write_received(&inbox, &record).unwrap();
    let folders: Vec<_> = std::fs::read_dir(&inbox).unwrap().filter_map(Result::ok).collect();
    assert_eq!(folders.len(), 1, "one folder, no leftovers: {folders:?}");
    cluster.stop().await;
}
