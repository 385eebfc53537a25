//! Operations over real HTTPS on loopback: a partner goes down, a message fails, alerts go to
//! a webhook (HMAC checked) and an SMTP server; `/metrics` parses as Prometheus text;
//! `/health/ready` names its components; an operator resends the failed message (identical,
//! then under a new MessageId) and the alerts recover; refused inbound messages are recorded;
//! the connection test answers.

mod common;

use common::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use ventanilla::backend::client::Upload;
use ventanilla::config::Interval;
use ventanilla::demo::Options;
use ventanilla::ops::resend::{ResendMode, resend};
use ventanilla::ops::settings::{AlertRule, AlertsConfig, EmailConfig, SmtpSecurity, WebhookConfig};

type Seen = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

/// An HTTP server that keeps every POSTed alert with its signature header.
async fn webhook_sink() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let kept = seen.clone();
    let app = axum::Router::new().route(
        "/alerts",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                let signature = headers.get("x-ventanilla-signature").and_then(|v| v.to_str().ok()).unwrap_or("");
                let secret_ok = signature == ventanilla::ops::alerts::signature(b"webhook-secret", &body);
                let mut notice: serde_json::Value = serde_json::from_slice(&body).unwrap();
                notice["signature_ok"] = secret_ok.into();
                kept.lock().unwrap().push((signature.to_owned(), notice));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

/// A minimal SMTP server that keeps each message's DATA.
async fn smtp_sink() -> (u16, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mails: Arc<Mutex<Vec<String>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let kept = mails.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else { return };
            let kept = kept.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                let _ = write.write_all(b"220 sink ESMTP\r\n").await;
                let mut data: Option<String> = None;
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(body) = data.as_mut() {
                        if line == "." {
                            kept.lock().unwrap().push(data.take().unwrap());
                            let _ = write.write_all(b"250 queued\r\n").await;
                        } else {
                            body.push_str(&line);
                            body.push('\n');
                        }
                        continue;
                    }
                    let verb = line.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
                    let answer: &[u8] = match verb.as_str() {
                        "EHLO" | "HELO" => b"250 sink\r\n",
                        "DATA" => {
                            data = Some(String::new());
                            b"354 end with .\r\n"
                        }
                        "QUIT" => {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            return;
                        }
                        _ => b"250 OK\r\n",
                    };
                    let _ = write.write_all(answer).await;
                }
            });
        }
    });
    (port, mails)
}

async fn wait_for<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..600 {
        if let Some(found) = probe().await {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

fn notices(seen: &Seen, party: &str, status: &str, alert: &str) -> Vec<serde_json::Value> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|(_, n)| n.clone())
        .filter(|n| n["access_point"] == party && n["status"] == status && n["alert"] == alert)
        .collect()
}

async fn submit(cluster: &Cluster, doc: &std::path::Path) -> String {
    let r = cluster
        .node("cl")
        .api
        .submit(
            &serde_json::json!({"to": "PE-VUCE", "leg": "ephyto"}),
            &[Upload { path: doc, mime_type: "application/xml" }],
        )
        .await
        .unwrap();
    r["message_id"].as_str().unwrap().to_owned()
}

async fn get(url: &str) -> (u16, String) {
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let response = client.get(url.parse().unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_message_alerts_shows_in_metrics_and_an_operator_resends_it() {
    let (webhook_url, webhook) = webhook_sink().await;
    let (smtp_port, mails) = smtp_sink().await;
    let secrets = tempfile::tempdir().unwrap();
    let secret_file = file(secrets.path(), "webhook.secret", b"webhook-secret\n");
    let options = Options {
        retry: Some(vec!["1s".into()]),
        alerts: AlertsConfig {
            interval: Interval(Duration::from_millis(300)),
            webhook: Some(WebhookConfig {
                url: webhook_url,
                secret_env: None,
                secret_file: Some(secret_file),
                timeout: Interval::secs(5),
            }),
            email: Some(EmailConfig {
                server: "127.0.0.1".into(),
                port: smtp_port,
                security: SmtpSecurity::None,
                from: "ventanilla@cl.example".into(),
                to: vec!["operations@cl.example".into()],
                username: None,
                password_env: None,
            }),
            rules: vec![AlertRule::MessageFailed, AlertRule::PartnerUnreachable { after: Interval::secs(0) }],
        },
        ..Options::default()
    };
    let mut cluster = Cluster::start_options(&[("cl", "CL-SICEX"), ("pe", "PE-VUCE")], options).await;
    let doc = file(cluster.dir.path(), "doc.xml", &ephyto("CL", "PE"));
    let first = submit(&cluster, &doc).await;
    let status = cluster.node("cl").api.wait_settled(&first, Duration::from_secs(60)).await.unwrap();
    assert_eq!(status["state"], "acknowledged", "{status}");

    // The connection test: the AS4 test service message, receipted, delivered nowhere.
    let ap = cluster.node("cl").node.ap.clone();
    let test = ventanilla::msh::connection_test::run(&ap, "cl-pe").await;
    assert!(test.ok, "{test:?}");
    assert_eq!(inbox_len(cluster.node("pe")).await, 1, "the test message is not delivered");

    // The partner goes down; the message fails after its one retry.
    let saved = cluster.take_down("pe").await;
    let failed = submit(&cluster, &doc).await;
    let status = cluster.node("cl").api.wait_settled(&failed, Duration::from_secs(60)).await.unwrap();
    assert_eq!(status["state"], "failed", "{status}");
    let raised = wait_for("the alerts raised", async || {
        let failed_alert = notices(&webhook, "CL-SICEX", "raised", &format!("message_failed:{failed}"));
        let unreachable = notices(&webhook, "CL-SICEX", "raised", "partner_unreachable:PE-VUCE");
        (!failed_alert.is_empty() && !unreachable.is_empty()).then(|| [failed_alert, unreachable].concat())
    })
    .await;
    for notice in &raised {
        assert_eq!(notice["signature_ok"], true, "HMAC signature: {notice}");
    }
    assert_eq!(notices(&webhook, "CL-SICEX", "raised", &format!("message_failed:{failed}")).len(), 1, "raised once");
    let mail = wait_for("the alert e-mail", async || {
        mails.lock().unwrap().iter().find(|m| m.contains(&format!("message_failed:{failed}"))).cloned()
    })
    .await;
    assert!(mail.contains("Subject: [ventanilla CL-SICEX] raised message_failed"), "{mail}");

    // Metrics: the Prometheus text format, parsed.
    let console = format!("http://{}", cluster.node("cl").node.console_addr.unwrap());
    let (status, text) = get(&format!("{console}/metrics")).await;
    assert_eq!(status, 200);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let value = |name: &str, labels: &[(&str, &str)]| -> Option<f64> {
        scrape.samples.iter().find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))).map(
            |s| match &s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => *v,
                prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
                prometheus_parse::Value::Summary(_) => f64::NAN,
            },
        )
    };
    assert_eq!(value("ventanilla_receipts_total", &[("side", "received"), ("partner", "PE-VUCE")]), Some(1.0));
    assert!(value("ventanilla_retries_total", &[("partner", "PE-VUCE")]).unwrap() >= 2.0);
    assert_eq!(
        value("ventanilla_messages", &[("direction", "outbound"), ("state", "failed"), ("partner", "PE-VUCE")]),
        Some(1.0)
    );
    assert!(value("ventanilla_send_round_trip_seconds", &[("partner", "PE-VUCE")]).unwrap() >= 3.0);
    assert!(value("ventanilla_certificate_expiry_days", &[("role", "own")]).unwrap() > 300.0);
    assert!(value("ventanilla_certificate_expiry_days", &[("role", "partner")]).is_some());
    assert!(value("ventanilla_crl_next_update_days", &[]).is_some());
    assert!(value("ventanilla_payload_size_bytes", &[("direction", "outbound")]).unwrap() >= 2.0);
    assert_eq!(value("ventanilla_ready", &[]), Some(1.0));
    // The memory parts (of this test process, which runs the access point).
    let memory = |part: &str| value("ventanilla_memory_bytes", &[("part", part)]).unwrap_or(0.0);
    assert!(memory("resident") > 1e6 && memory("heap_in_use") > 1e6 && memory("sqlite") > 0.0, "{text}");
    let (status, ready) = get(&format!("{console}/health/ready")).await;
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!((status, &ready["ready"]), (200, &serde_json::json!(true)), "{ready}");
    let names: Vec<&str> =
        ready["components"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["store", "disk", "pmodes", "keys"]);
    assert_eq!(get(&format!("{console}/health/live")).await.0, 200);

    // Only a failed outbound message can be resent.
    assert!(resend(&ap, "ana", &first, ResendMode::Identical).await.is_err());
    // The partner is back; the operator resends the identical message.
    cluster.restart("pe", saved, |_| {}).await;
    assert_eq!(resend(&ap, "ana", &failed, ResendMode::Identical).await.unwrap(), failed);
    let status = cluster.node("cl").api.wait_settled(&failed, Duration::from_secs(60)).await.unwrap();
    assert_eq!(status["state"], "acknowledged", "{status}");
    let events: Vec<String> =
        status["history"].as_array().unwrap().iter().filter_map(|h| h["event"].as_str().map(str::to_owned)).collect();
    assert!(events.contains(&"resent_by_operator".to_owned()), "{events:?}");
    wait_for("the recovery notices", async || {
        let a = notices(&webhook, "CL-SICEX", "recovered", &format!("message_failed:{failed}"));
        let b = notices(&webhook, "CL-SICEX", "recovered", "partner_unreachable:PE-VUCE");
        (!a.is_empty() && !b.is_empty()).then_some(())
    })
    .await;

    // The partner's keys changed (say): resubmitted under a new MessageId.
    let saved = cluster.take_down("pe").await;
    let again = submit(&cluster, &doc).await;
    assert_eq!(cluster.node("cl").api.wait_settled(&again, Duration::from_secs(60)).await.unwrap()["state"], "failed");
    cluster.restart("pe", saved, |_| {}).await;
    let new_id = resend(&ap, "ana", &again, ResendMode::NewMessageId).await.unwrap();
    assert_ne!(new_id, again);
    let status = cluster.node("cl").api.wait_settled(&new_id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(status["state"], "acknowledged", "{status}");
    let old = cluster.node("cl").api.status(&again).await.unwrap();
    assert_eq!(old["state"], "failed");
    assert!(old.to_string().contains(&format!("resubmitted by ana as {new_id}")), "{old}");
    let received = cluster.node("pe").api.download(&new_id, 1).await.unwrap();
    assert_eq!(received.as_ref(), read(&doc).as_slice(), "byte-identical at the partner");
    let audit: Vec<(String, String)> =
        ap.store.audit_log(None, 50).await.unwrap().into_iter().map(|e| (e.actor, e.action)).collect();
    assert!(audit.contains(&("ana".into(), "resend".into())) && audit.contains(&("ana".into(), "resubmit".into())));

    // A refused inbound message leaves a record (remote address, code, the start of its header).
    let body = multipart("<not-soap/>", &[]);
    let (status, _) = cluster.post_raw("cl", &multipart_content_type(), body).await;
    assert!(status >= 400);
    let refusals = ap.store.refusals(None, 10).await.unwrap();
    let refusal = refusals.first().expect("a refusal is recorded");
    assert_eq!(refusal.remote.as_deref(), Some("127.0.0.1"));
    assert!(refusal.code.starts_with("EBMS:"), "{refusal:?}");
    assert!(refusal.header.contains("not-soap"), "{refusal:?}");
    let (_, text) = get(&format!("{console}/metrics")).await;
    assert!(text.contains("ventanilla_refused_inbound_total{code=\""), "{text}");
    cluster.stop().await;
}

/// `[console] tls_cert`/`tls_key`: the console, metrics and health answer over HTTPS only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_listens_on_tls_when_configured() {
    let mut cluster = Cluster::start_options(&[("cl", "CL-SICEX")], Options::default()).await;
    let certs = cluster.dir.path().join("certs/demo");
    let saved = cluster.take_down("cl").await;
    let (cert, key) = (certs.join("cl-tls.pem"), certs.join("cl-tls.key"));
    cluster
        .restart("cl", saved, |config| {
            let console = config.console.as_mut().unwrap();
            console.tls_cert = Some(cert);
            console.tls_key = Some(key);
        })
        .await;
    let addr = cluster.node("cl").node.console_addr.unwrap();
    let tls = ventanilla::transport::tls::client_config(&cluster.ca(), None).unwrap();
    let connector = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_only().enable_http1().build();
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
    let response = client.get(format!("https://127.0.0.1:{}/health/live", addr.port()).parse().unwrap()).await.unwrap();
    assert_eq!(response.status(), 200);
    let response = client.get(format!("https://127.0.0.1:{}/login", addr.port()).parse().unwrap()).await.unwrap();
    let cookie = response.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly; Secure; SameSite=Strict"), "{cookie}");
    // Plain HTTP on the same port gets nothing useful.
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = socket.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let mut buffer = Vec::new();
        let _ = socket.read_to_end(&mut buffer).await;
        buffer
    })
    .await
    .unwrap_or_default();
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"), "plain HTTP is not served");
    cluster.stop().await;
}
