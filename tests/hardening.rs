//! Regression tests for the findings of the security review (issue 10), each reproducing the
//! attack at a size that keeps the suite fast.

mod common;

use common::*;
use ventanilla::backend::client::{ClientError, Upload};
use ventanilla::ebms::{Property, write};

/// 10.2: thousands of eb:Property elements (an unauthenticated sender's CPU bomb) are refused
/// with EBMS:0009 when the header is read, before any decryption or signature work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_with_thousands_of_properties_is_refused_before_security_work() {
    let cluster = Cluster::start_secure(&[("mx", "MX-VUCEM")]).await;
    let mut um = user_message("many-properties@attacker");
    um.to.ids[0].value = "MX-VUCEM".into();
    um.properties = (0..19_000).map(|i| Property { name: format!("p{i}"), kind: None, value: "v".into() }).collect();
    let envelope = write::user_message_envelope(&um);
    let body = multipart(&envelope, &[("doc@test", b"<x/>")]);
    let (status, answer) = cluster.post_raw("mx", &multipart_content_type(), body).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(error_code(&answer).as_deref(), Some("EBMS:0009"), "{answer}");
    assert!(answer.contains("19000 eb:Property elements"), "{answer}");
    cluster.stop().await;
}

/// 10.4: what no receiver accepts is not accepted for sending: a 422 that names the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_over_the_limits_are_refused_with_the_limit_named() {
    let cluster = Cluster::start_secure(&[("cl", "CL-SICEX")]).await;
    let doc = file(cluster.dir.path(), "doc.xml", &ephyto("CL", "PE"));
    let api = &cluster.node("cl").api;
    let properties: serde_json::Map<String, serde_json::Value> =
        (0..101).map(|i| (format!("p{i}"), serde_json::Value::from("v"))).collect();
    let refused = api
        .submit(
            &serde_json::json!({"to": "PE-VUCE", "leg": "ephyto", "properties": properties}),
            &[Upload { path: &doc, mime_type: "application/xml" }],
        )
        .await;
    match refused {
        Err(ClientError::Status { status: 422, body }) => {
            assert!(body.contains("101 message properties") && body.contains("limits.max_properties"), "{body}")
        }
        other => panic!("{other:?}"),
    }
    let uploads: Vec<Upload> = (0..65).map(|_| Upload { path: &doc, mime_type: "application/xml" }).collect();
    match api.submit(&serde_json::json!({"to": "PE-VUCE", "leg": "ephyto"}), &uploads).await {
        Err(ClientError::Status { status: 422, body }) => {
            assert!(body.contains("65 payloads") && body.contains("limits.max_parts"), "{body}")
        }
        other => panic!("{other:?}"),
    }
    cluster.stop().await;
}
