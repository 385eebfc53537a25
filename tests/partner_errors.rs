//! What a partner's error signal does to a message, on the signed eDelivery 2.0 link: a partner
//! that answers every message with an unsigned EBMS:0004 (as the Rust asx-rs library does) is
//! not trusted as a refusal, so the message is retried to EBMS:0301; but the partner's code
//! and description are kept on the message, marked unverified, for the operator to see.

mod common;

use common::*;
use std::time::Duration;
use ventanilla::backend::client::Upload;
use ventanilla::demo::{Options, launch_with};
use ventanilla_conformance::scripted::{Script, ScriptedPeer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_error_is_recorded_unverified_and_the_message_retried_to_0301() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://127.0.0.1:{}/as4", listener.local_addr().unwrap().port());
    let options = Options {
        extra_endpoints: [("PE-VUCE".to_owned(), url)].into(),
        retry: Some(vec!["300ms".into(), "300ms".into()]),
        ..Options::default()
    };
    let nodes = launch_with(dir.path(), &repo().join("pmodes"), &[("cl", "CL-SICEX")], &options).await.unwrap();
    let certs = dir.path().join("certs/demo");
    let tls = ventanilla::transport::tls::server_config(
        &certs.join("pe-tls.pem"),
        &certs.join("pe-tls.key"),
        &certs.join("ca.pem"),
    )
    .unwrap();
    // FailureWith500: an unsigned eb:Error EBMS:0004, severity failure, HTTP 500.
    let partner = ScriptedPeer::start(listener, Script::FailureWith500, tls, None).unwrap();
    let doc = file(dir.path(), "doc.xml", &ephyto("CL", "PE"));
    let cl = &nodes[0];
    let submitted = cl
        .api
        .submit(
            &serde_json::json!({"to": "PE-VUCE", "leg": "ephyto"}),
            &[Upload { path: &doc, mime_type: "application/xml" }],
        )
        .await
        .unwrap();
    let id = submitted["message_id"].as_str().unwrap();
    let settled = cl.api.wait_settled(id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(settled["state"], "failed", "{settled:#}");
    assert!(settled["error"].as_str().unwrap().starts_with("EBMS:0301"), "{settled:#}");
    assert_eq!(settled["attempts"], 3, "not trusted as a refusal: retried on the schedule");
    let partner_error = &settled["partner_error"];
    assert_eq!(partner_error["code"], "EBMS:0004", "{settled:#}");
    assert_eq!(partner_error["severity"], "failure");
    assert_eq!(partner_error["verified"], false);
    assert!(partner_error["description"].as_str().unwrap().contains("scripted by the conformance runner"));
    // Each attempt's history names what the partner said.
    let retries: Vec<&str> = settled["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["state"] == "waiting_retry")
        .map(|h| h["detail"].as_str().unwrap())
        .collect();
    assert_eq!(retries.len(), 2);
    assert!(retries.iter().all(|d| d.contains("EBMS:0004") && d.contains("not trusted")), "{retries:?}");
    partner.stop();
    for n in nodes {
        n.node.stop().await;
    }
}
