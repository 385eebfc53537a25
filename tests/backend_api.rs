//! The backend API as a national system uses it: lists with every console filter and cursor
//! paging, a message by id in either direction, payloads (the originals), the raw envelope and
//! signal, resend, JSON errors everywhere, and the events feed as a long poll.

mod common;

use bytes::Bytes;
use common::*;
use std::time::Duration;
use ventanilla::backend::client::Upload;
use ventanilla::demo::Options;

/// Submits `doc` streamed from its file, or (`from_memory`) its bytes held by the client.
async fn submit(cluster: &Cluster, doc: &std::path::Path, from_memory: bool) -> String {
    let api = &cluster.node("cl").api;
    let metadata = serde_json::json!({"to": "PE-VUCE", "leg": "ephyto", "conversation_id": "conv-api"});
    let r = if from_memory {
        let bytes = Bytes::from(std::fs::read(doc).unwrap());
        api.submit_bytes(&metadata, "certificate.xml", "application/xml", bytes).await
    } else {
        api.submit(&metadata, &[Upload { path: doc, mime_type: "application/xml" }]).await
    };
    r.unwrap()["message_id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_national_system_pages_filters_downloads_and_resends_through_the_api() {
    let options = Options { retry: Some(vec!["1s".into()]), ..Options::default() };
    let mut cluster = Cluster::start_options(&[("cl", "CL-SICEX"), ("pe", "PE-VUCE")], options).await;
    let document = ephyto("CL", "PE");
    let doc = file(cluster.dir.path(), "certificate.xml", &document);
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(submit(&cluster, &doc, i % 2 == 1).await);
    }
    for id in &ids {
        let status = cluster.node("cl").api.wait_settled(id, Duration::from_secs(60)).await.unwrap();
        assert_eq!(status["state"], "acknowledged");
    }
    let cl = &cluster.node("cl").api;
    let pe = &cluster.node("pe").api;

    // Cursor paging: 5 messages, 2 a page, newest first, no repeats.
    let mut seen = Vec::new();
    let mut path = "/api/v1/messages?direction=outbound&conversation_id=conv-api&limit=2".to_owned();
    loop {
        let (status, headers, body) = cl.call_with_headers("GET", &path, None, Bytes::new()).await.unwrap();
        assert_eq!(status, 200);
        let page: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
        seen.extend(page.iter().map(|m| m["message_id"].as_str().unwrap().to_owned()));
        match headers.get("x-next-cursor") {
            Some(cursor) => {
                let link = headers.get("link").unwrap().to_str().unwrap();
                assert!(link.contains("rel=\"next\"") && link.contains("cursor="), "{link}");
                path = format!(
                    "/api/v1/messages?direction=outbound&conversation_id=conv-api&limit=2&cursor={}",
                    cursor.to_str().unwrap()
                );
            }
            None => break,
        }
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    assert_eq!(cl.list_all("/api/v1/messages?partner=PE-VUCE&state=acknowledged").await.unwrap().len(), 5);
    assert!(cl.list_all("/api/v1/messages?partner=CO-VUCE").await.unwrap().is_empty());
    let today = time::OffsetDateTime::now_utc().date().to_string();
    assert_eq!(
        cl.list_all(&format!("/api/v1/messages?direction=outbound&from={today}&to={today}")).await.unwrap().len(),
        5
    );
    assert!(cl.list_all("/api/v1/messages?from=2001-01-01&to=2001-01-02").await.unwrap().is_empty());
    let number = pe.list_all("/api/v1/inbox").await.unwrap()[0]["document"]["number"].as_str().unwrap().to_owned();
    assert_eq!(pe.list_all(&format!("/api/v1/inbox?document_number={number}")).await.unwrap().len(), 5);

    // A received message by id, with no direction given (it used to be 404).
    let received = pe.status(&ids[0]).await.unwrap();
    assert_eq!((received["direction"].as_str(), received["state"].as_str()), (Some("inbound"), Some("delivered")));
    // Payloads: the originals in both directions (the sender's file is not its ciphertext).
    for api in [cl, pe] {
        let (status, headers, body) = api
            .call_with_headers("GET", &format!("/api/v1/messages/{}/payloads/1", ids[0]), None, Bytes::new())
            .await
            .unwrap();
        assert_eq!(status, 200);
        assert_eq!(body.as_ref(), document.as_slice());
        assert_eq!(headers.get("content-disposition").unwrap(), "attachment; filename=\"certificate.xml\"");
    }
    // Sizes are the originals' on both sides (not the compressed or encrypted size).
    let sent = cl.status(&ids[0]).await.unwrap();
    assert_eq!(sent["payloads"][0]["size"].as_u64(), Some(document.len() as u64), "{sent}");
    assert_eq!(received["payloads"][0]["size"].as_u64(), Some(document.len() as u64), "{received}");
    assert_eq!(sent["payloads"][0]["sha256"], received["payloads"][0]["sha256"]);
    // The envelope as sent, and the partner's signed receipt.
    let (status, _, envelope) = cl
        .call_with_headers("GET", &format!("/api/v1/messages/{}/envelope", ids[0]), None, Bytes::new())
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&envelope).contains(&ids[0]));
    let (status, _, signal) =
        cl.call_with_headers("GET", &format!("/api/v1/messages/{}/signal", ids[0]), None, Bytes::new()).await.unwrap();
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&signal).contains("Receipt"), "{}", String::from_utf8_lossy(&signal));

    // Evidence: a bundle each side can hand to a lawyer, checked offline by `ventanilla verify`.
    for (api, name) in [(cl, "sent"), (pe, "received")] {
        let (status, headers, bundle) = api
            .call_with_headers("GET", &format!("/api/v1/messages/{}/evidence", ids[0]), None, Bytes::new())
            .await
            .unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bundle));
        assert!(headers.get("content-disposition").unwrap().to_str().unwrap().contains("evidence-"));
        let path = file(cluster.dir.path(), &format!("evidence-{name}.json"), &bundle);
        let out =
            std::process::Command::new(env!("CARGO_BIN_EXE_ventanilla")).arg("verify").arg(&path).output().unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{name}: {report}{}", String::from_utf8_lossy(&out.stderr));
        assert!(report.contains("envelope: signature VALID") && report.contains("signal: signature VALID"), "{report}");
        assert!(
            report.contains("repeats every signed reference") && report.contains("chains to the bundled CAs"),
            "{report}"
        );
        // A receipt for another message does not prove this one.
        let mut forged: serde_json::Value = serde_json::from_slice(&bundle).unwrap();
        let other: serde_json::Value = serde_json::from_slice(
            &api.call_with_headers("GET", &format!("/api/v1/messages/{}/evidence", ids[1]), None, Bytes::new())
                .await
                .unwrap()
                .2,
        )
        .unwrap();
        forged["signal"] = other["signal"].clone();
        let path = file(cluster.dir.path(), &format!("forged-{name}.json"), forged.to_string().as_bytes());
        let out =
            std::process::Command::new(env!("CARGO_BIN_EXE_ventanilla")).arg("verify").arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
        assert!(String::from_utf8_lossy(&out.stdout).contains("does not refer to"));
    }

    // Resend: only a failed message; 409 otherwise.
    let resend = |id: &str| format!("/api/v1/messages/{id}/resend");
    let body = Bytes::from_static(br#"{"mode":"identical"}"#);
    let (status, _, answer) =
        cl.call_with_headers("POST", &resend(&ids[0]), Some("application/json"), body.clone()).await.unwrap();
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&answer));
    let saved = cluster.take_down("pe").await;
    let failed = submit(&cluster, &doc, false).await;
    let cl = &cluster.node("cl").api;
    assert_eq!(cl.wait_settled(&failed, Duration::from_secs(60)).await.unwrap()["state"], "failed");
    cluster.restart("pe", saved, |_| {}).await;
    let cl = &cluster.node("cl").api;
    let (status, _, answer) =
        cl.call_with_headers("POST", &resend(&failed), Some("application/json"), body.clone()).await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    assert_eq!(cl.wait_settled(&failed, Duration::from_secs(60)).await.unwrap()["state"], "acknowledged");

    // Every error is JSON with an "error" text.
    for (method, path, content_type, body, expected) in [
        ("GET", "/api/v1/nothing-here", None, "", 404),
        ("DELETE", "/api/v1/messages", None, "", 405),
        ("GET", "/api/v1/messages?limit=0", None, "", 400),
        ("GET", "/api/v1/messages?limit=5000", None, "", 400),
        ("GET", "/api/v1/messages?direction=sideways", None, "", 400),
        ("GET", "/api/v1/messages?from=yesterday", None, "", 400),
        ("GET", "/api/v1/messages?cursor=abc", None, "", 400),
        ("GET", "/api/v1/messages/nope@x", None, "", 404),
        ("GET", "/api/v1/messages/nope@x?direction=inbound", None, "", 404),
        ("POST", "/api/v1/messages/x/resend", Some("application/json"), "{\"mode\":\"twice\"}", 400),
        ("POST", "/api/v1/messages/x/resend", Some("text/plain"), "identical", 400),
        ("GET", "/api/v1/events?wait=10m", None, "", 400),
    ] {
        let (status, headers, answer) =
            cl.call_with_headers(method, path, content_type, Bytes::from(body)).await.unwrap();
        assert_eq!(status, expected, "{method} {path}: {}", String::from_utf8_lossy(&answer));
        assert_eq!(headers.get("content-type").unwrap(), "application/json", "{method} {path}");
        let error: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        assert!(error["error"].as_str().is_some_and(|e| !e.is_empty()), "{method} {path}: {error}");
    }
    let anonymous = ventanilla::backend::client::ApiClient::new(
        &format!("http://{}", cluster.node("cl").node.backend_addr),
        "wrong",
    );
    let (status, headers, _) = anonymous.call_with_headers("GET", "/api/v1/inbox", None, Bytes::new()).await.unwrap();
    assert_eq!((status, headers.get("content-type").unwrap().to_str().unwrap()), (401, "application/json"));

    // The events feed as a long poll: it answers as soon as something happens.
    let next = cl.get_json("/api/v1/events?after=0&limit=10000").await.unwrap()["next"].as_i64().unwrap();
    let started = std::time::Instant::now();
    let quiet = cl.get_json(&format!("/api/v1/events?after={next}&wait=1s")).await.unwrap();
    assert!(quiet["events"].as_array().unwrap().is_empty() && started.elapsed() >= Duration::from_millis(900));
    let waiting = {
        let cl = cl.clone();
        tokio::spawn(async move { cl.get_json(&format!("/api/v1/events?after={next}&wait=30s")).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let new = submit(&cluster, &doc, true).await;
    let woke = waiting.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(20), "answered when the event came, not at the deadline");
    assert_eq!(woke["events"][0]["message_id"], new.as_str());
    assert_eq!(woke["events"][0]["event"], "submitted");
    cluster.stop().await;
}

/// The API over HTTPS with client certificates required: no certificate, no API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_can_require_tls_and_a_client_certificate() {
    let mut cluster = Cluster::start_options(&[("cl", "CL-SICEX")], Options::default()).await;
    let certs = cluster.dir.path().join("certs/demo");
    let ca = cluster.ca();
    let saved = cluster.take_down("cl").await;
    let (cert, key) = (certs.join("cl-tls.pem"), certs.join("cl-tls.key"));
    let (c, k, a) = (cert.clone(), key.clone(), ca.clone());
    cluster
        .restart("cl", saved, |config| {
            config.backend.tls_cert = Some(c);
            config.backend.tls_key = Some(k);
            config.backend.client_ca = Some(a);
        })
        .await;
    let node = &cluster.node("cl");
    let url = format!("https://127.0.0.1:{}/api/v1/inbox", node.node.backend_addr.port());
    let get = async |client_cert: Option<(&std::path::Path, &std::path::Path)>| {
        let tls = ventanilla::transport::tls::client_config(&ca, client_cert).unwrap();
        let connector =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_only().enable_http1().build();
        let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        let request = hyper::Request::get(&url)
            .header("authorization", format!("Bearer {}", node.api.token()))
            .body(http_body_util::Empty::new())
            .unwrap();
        client.request(request).await.map(|r| r.status().as_u16())
    };
    assert!(get(None).await.is_err(), "no client certificate: the handshake fails");
    assert_eq!(get(Some((&cert, &key))).await.unwrap(), 200);
    cluster.stop().await;
}
