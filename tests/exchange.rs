//! Access points over real HTTPS on loopback: push with receipts, duplicates, hot reload.

mod common;

use common::*;
use std::time::Duration;
use ventanilla::backend::client::Upload;
use ventanilla::demo::exchange;
use ventanilla::ebms::write;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_access_points_exchange_both_documents_both_ways() {
    let cluster = Cluster::start(&[("cl", "CL-SICEX"), ("mx", "MX-VUCEM"), ("pe", "PE-VUCE")]).await;
    let pairs = [("cl", "mx"), ("mx", "cl"), ("cl", "pe"), ("pe", "mx")];
    for (from, to) in pairs {
        let (f, t) = (from.to_uppercase(), to.to_uppercase());
        let ephyto_doc = file(cluster.dir.path(), &format!("ephyto-{from}-{to}.xml"), &ephyto(&f, &t));
        let origin_doc = file(cluster.dir.path(), &format!("cod-{from}-{to}.xml"), &cod(&f, &t));
        for (leg, doc) in [("ephyto", &ephyto_doc), ("origin", &origin_doc)] {
            let e = exchange(cluster.node(from), cluster.node(to), leg, doc, Duration::from_secs(60)).await;
            assert!(e.ok(), "{from} -> {to} {leg}: {e:?}");
            let received = cluster.node(to).api.received(&e.message_id).await.unwrap();
            assert_eq!(received["state"], "acknowledged", "the backend acknowledged it");
            assert_eq!(received["leg"], leg);
            assert_eq!(
                received["document"]["destination_country"],
                t.as_str(),
                "the receiver extracted the document: {received}"
            );
            let history =
                cluster.node(from).api.status(&e.message_id).await.unwrap()["history"].as_array().unwrap().len();
            assert!(history >= 3, "submitted, sending, acknowledged");
        }
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_payloads_keep_order_and_bytes() {
    let cluster = Cluster::start(&[("co", "CO-VUCE"), ("pe", "PE-VUCE")]).await;
    let files = [
        sample("ephyto/own/ephyto_CO-PE_657_reexport.xml"),
        sample("origin/cod_v1.8.3_A35_CL-AR_stage1_unsigned.xml"),
        sample("edifact/valid_v4_sancrt_phyto_single.edi"),
    ];
    let uploads: Vec<Upload> =
        files.iter().map(|f| Upload { path: f, mime_type: "application/octet-stream" }).collect();
    let co = cluster.node("co");
    let submitted = co
        .api
        .submit(&serde_json::json!({"to": "PE-VUCE", "leg": "ephyto", "conversation_id": "conv-42"}), &uploads)
        .await
        .unwrap();
    let id = submitted["message_id"].as_str().unwrap().to_owned();
    let mut state = String::new();
    for _ in 0..600 {
        state = co.api.status(&id).await.unwrap()["state"].as_str().unwrap().to_owned();
        if state == "acknowledged" || state == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state, "acknowledged");
    let pe = cluster.node("pe");
    let received = pe.api.received(&id).await.unwrap();
    assert_eq!(received["conversation_id"], "conv-42");
    for (i, f) in files.iter().enumerate() {
        assert_eq!(pe.api.download(&id, i + 1).await.unwrap().as_ref(), read(f).as_slice());
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_gets_the_same_receipt_and_is_delivered_once() {
    let cluster = Cluster::start(&[("cl", "CL-SICEX"), ("pe", "PE-VUCE")]).await;
    let um = user_message("dup-1@test");
    let body = multipart(&write::user_message_envelope(&um), &[("doc@test", &ephyto("CL", "PE"))]);
    let (status1, first) = cluster.post_raw("pe", &multipart_content_type(), body.clone()).await;
    assert_eq!(status1, 200, "{first}");
    assert!(is_receipt_for(&first, "dup-1@test"), "{first}");
    let (status2, second) = cluster.post_raw("pe", &multipart_content_type(), body).await;
    assert_eq!(status2, 200);
    assert_eq!(first, second, "the stored receipt is sent again");
    assert_eq!(inbox_len(cluster.node("pe")).await, 1);
    let history = cluster.node("pe").api.received("dup-1@test").await.unwrap()["history"].as_array().unwrap().len();
    assert_eq!(history, 2, "received, then the duplicate noted");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pmode_file_added_while_running_takes_effect() {
    let cluster = Cluster::start(&[("cl", "CL-SICEX"), ("pe", "PE-VUCE")]).await;
    // A new document type on a new link file: unknown until the file appears.
    let mut um = user_message("reload-1@test");
    um.service.value = "urn:pacific-alliance:as4:service:edifact".into();
    um.action = "SANCRT".into();
    um.agreement = None;
    let body = multipart(&write::user_message_envelope(&um), &[("doc@test", b"UNA:+.? '")]);
    let (_, refused) = cluster.post_raw("pe", &multipart_content_type(), body.clone()).await;
    assert_eq!(error_code(&refused).as_deref(), Some("EBMS:0001"), "{refused}");

    let link = std::fs::read_to_string(cluster.pmodes_dir().join("cl-pe.toml"))
        .unwrap()
        .replace("id      = \"cl-pe\"", "id      = \"cl-pe-edifact\"")
        .replace("agreement = \"urn:pacific-alliance:as4:agreement:cl-pe\"\n", "")
        .replace("urn:pacific-alliance:as4:service:ephyto", "urn:pacific-alliance:as4:service:edifact")
        .replace("action      = \"SPSCertificate\"", "action      = \"SANCRT\"")
        .replace("document    = \"ephyto\"\n", "")
        .replace("urn:pacific-alliance:as4:service:origin", "urn:pacific-alliance:as4:service:edifact-origin");
    // A broken file next to it is reported and ignored; it does not block the good one.
    std::fs::write(cluster.pmodes_dir().join("zz-broken.toml"), "id = \"x\"\nprofile = \"nope\"\n").unwrap();
    std::fs::write(cluster.pmodes_dir().join("cl-pe-edifact.toml"), link).unwrap();
    let mut accepted = String::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, response) = cluster.post_raw("pe", &multipart_content_type(), body.clone()).await;
        accepted = response;
        if is_receipt_for(&accepted, "reload-1@test") {
            break;
        }
    }
    assert!(is_receipt_for(&accepted, "reload-1@test"), "{accepted}");
    // The shipped links still work after the reload.
    let (_, ok) = cluster
        .post_raw(
            "pe",
            &multipart_content_type(),
            multipart(
                &write::user_message_envelope(&user_message("after-reload@test")),
                &[("doc@test", &ephyto("CL", "PE"))],
            ),
        )
        .await;
    assert!(is_receipt_for(&ok, "after-reload@test"), "{ok}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_api_needs_its_token_and_publishes_openapi() {
    let cluster = Cluster::start(&[("cl", "CL-SICEX"), ("pe", "PE-VUCE")]).await;
    let addr = cluster.node("cl").node.backend_addr;
    let wrong = ventanilla::backend::client::ApiClient::new(&format!("http://{addr}"), "not-the-token-at-all");
    let err = wrong.inbox().await.unwrap_err().to_string();
    assert!(err.contains("401"), "{err}");
    let doc = wrong.get_json("/api/v1/openapi.json").await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/api/v1/messages"]["post"].is_object());
    // Refused submissions say why.
    let api = &cluster.node("cl").api;
    let file = sample("ephyto/own/ephyto_CL-MX_851_issued.xml");
    let err = api
        .submit(
            &serde_json::json!({"to": "XX-NOBODY", "leg": "ephyto"}),
            &[Upload { path: &file, mime_type: "application/xml" }],
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("422") && err.contains("XX-NOBODY"), "{err}");
    cluster.stop().await;
}
