//! Regression tests for the findings of the security review (issue 10), each reproducing the
//! attack at a size that keeps the suite fast.

mod common;

use common::*;
use ventanilla::backend::client::{ClientError, Upload};
use ventanilla::ebms::{Property, write};

/// A submission refused while its body streams: the access point answers 413 with `expected`
/// and closes the connection; a client still sending may see the close before the answer.
fn cut_off(result: Result<serde_json::Value, ClientError>, expected: &str) {
    match result {
        Err(ClientError::Status { status: 413, body }) => assert!(body.contains(expected), "{body}"),
        Err(ClientError::Connection(_)) => {}
        other => panic!("not refused as it streamed: {other:?}"),
    }
}

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
            assert!(body.contains("more than 64 payloads") && body.contains("limits.max_parts"), "{body}")
        }
        other => panic!("{other:?}"),
    }
    cluster.stop().await;
}

/// 10.3: the metadata part and the whole request are bounded; a long field is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_metadata_and_payloads_are_refused_as_they_stream() {
    let cluster = Cluster::start_secure(&[("cl", "CL-SICEX")]).await;
    let doc = file(cluster.dir.path(), "doc.xml", &ephyto("CL", "PE"));
    let api = &cluster.node("cl").api;
    let upload = [Upload { path: &doc, mime_type: "application/xml" }];
    let huge = "x".repeat(100 << 10);
    match api.submit(&serde_json::json!({"to": "PE-VUCE", "leg": "ephyto", "conversation_id": huge}), &upload).await {
        Err(ClientError::Status { status: 413, body }) => {
            assert!(body.contains("'metadata' part exceeds 65536 bytes"), "{body}")
        }
        other => panic!("{other:?}"),
    }
    // A refusal read from the metadata is answered after the rest of the request is read, so a
    // client still sending a large payload gets the answer, not a reset connection.
    let long = "x".repeat(2000);
    let four_mib = file(cluster.dir.path(), "four.bin", &vec![b'a'; 4 << 20]);
    let four_mib_upload = [Upload { path: &four_mib, mime_type: "application/xml" }];
    match api
        .submit(&serde_json::json!({"to": "PE-VUCE", "leg": "ephyto", "conversation_id": long}), &four_mib_upload)
        .await
    {
        Err(ClientError::Status { status: 422, body }) => {
            assert!(body.contains("conversation_id has 2000 bytes"), "{body}")
        }
        other => panic!("{other:?}"),
    }
    // 10.6: a request over as4.max_message (8 MiB here) is cut off while it streams...
    let big = file(cluster.dir.path(), "big.bin", &vec![b'a'; 10 << 20]);
    let metadata = serde_json::json!({"to": "PE-VUCE", "leg": "ephyto"});
    cut_off(
        api.submit(&metadata, &[Upload { path: &big, mime_type: "application/xml" }]).await,
        "exceeds as4.max_message (8388608 bytes)",
    );
    // ...and a payload over the leg's max_payload as soon as it passes it.
    let pmode = cluster.pmodes_dir().join("cl-pe.toml");
    std::fs::write(
        &pmode,
        std::fs::read_to_string(&pmode).unwrap().replace("max_payload = \"20MiB\"", "max_payload = \"1MiB\""),
    )
    .unwrap();
    let node = &cluster.node("cl").node;
    let reloaded = async {
        loop {
            let link = node.ap.pmodes().links().iter().find(|l| l.id == "cl-pe").cloned().unwrap();
            if link.legs.iter().all(|l| l.max_payload == 1 << 20) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), reloaded).await.expect("the P-Mode change was picked up");
    let two_mib = file(cluster.dir.path(), "two.bin", &vec![b'a'; 2 << 20]);
    cut_off(
        api.submit(&metadata, &[Upload { path: &two_mib, mime_type: "application/xml" }]).await,
        "payload 1 exceeds 1048576 bytes",
    );
    let outbound = cluster.dir.path().join("cl/data/outbound");
    let left: Vec<_> = std::fs::read_dir(&outbound).unwrap().collect();
    assert!(left.is_empty(), "nothing of a refused submission stays: {left:?}");
    cluster.stop().await;
}

/// 10.10: a validly signed and encrypted message dated 2020, or 2099, is refused for its
/// eb:Timestamp (older than the link's max_age = duplicate window, or beyond its clock skew);
/// one dated now is receipted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_and_future_timestamps_are_refused() {
    let cluster = Cluster::start_secure(&[("pe", "PE-VUCE")]).await;
    let certs = cluster.dir.path().join("certs/demo");
    let signer = ventanilla_testkit::wire::credential(&certs, "cl-sign-ed25519").unwrap();
    let recipient = certs.join("pe-enc-x25519.pem");
    let send = |timestamp: Option<&str>| {
        let mut um = user_message(&format!("fresh-{}@test", uuid::Uuid::new_v4().simple()));
        if let Some(t) = timestamp {
            um.info.timestamp = t.into();
        }
        let protection = ventanilla_testkit::wire::Protection::edelivery(&signer, &recipient);
        ventanilla_testkit::wire::protected_message(&um, &ephyto("CL", "PE"), &protection).unwrap()
    };
    for (timestamp, expected) in [
        ("2020-01-01T00:00:00.000Z", "s old; P-Mode cl-pe accepts messages up to 2592000 s old (reliability.max_age)"),
        ("2099-01-01T00:00:00.000Z", "in the future; P-Mode cl-pe allows 900 s (reliability.max_clock_skew)"),
    ] {
        let (status, answer) = cluster.post_raw("pe", &multipart_content_type(), send(Some(timestamp))).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(error_code(&answer).as_deref(), Some("EBMS:0004"), "{answer}");
        assert!(answer.contains(expected), "{timestamp}: {answer}");
    }
    let (status, answer) = cluster.post_raw("pe", &multipart_content_type(), send(None)).await;
    assert_eq!(status, 200, "a message dated now is receipted: {answer}");
    cluster.stop().await;
}

/// 10.1: a client that holds connections, or sends a body that never comes, cannot take the
/// AS4 port: a connection over the per-address cap is closed at once, and a silent body is
/// cut off (here after 1 s) with an answer, never held for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_and_connection_floods_are_cut_off() {
    use tokio::io::AsyncReadExt;
    let mut cluster = Cluster::start_secure(&[("pe", "PE-VUCE")]).await;
    let saved = cluster.take_down("pe").await;
    cluster
        .restart("pe", saved, |c| {
            c.as4.connections = ventanilla::config::ConnectionLimits {
                per_address: 4,
                body_idle_timeout: ventanilla::config::Interval::secs(1),
                header_timeout: ventanilla::config::Interval::secs(2),
                ..Default::default()
            }
        })
        .await;
    let addr = cluster.node("pe").node.as4_addr;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let mut fifth = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), fifth.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the fifth connection is closed at once: {read:?}");
    drop(held);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // Headers announcing 1 MB, then nothing: cut off after the idle timeout, with an answer.
    let answer = raw_post(addr, 1_000_000).await;
    assert!(
        answer.starts_with("HTTP/1.1 4") || answer.starts_with("HTTP/1.1 5"),
        "an answer, then the close: {answer}"
    );
    assert!(answer.contains("eb:Error"), "{answer}");
    // 10.6: headers announcing 2 GiB (over as4.max_message): EBMS:0007 at once, body unread.
    let answer = raw_post(addr, 2_147_483_648).await;
    assert!(answer.contains("EBMS:0007") && answer.contains("as4.max_message"), "{answer}");
    cluster.stop().await;
}

/// POSTs headers announcing `length` bytes and the first line of a multipart body, then
/// reads whatever comes back until the access point closes the connection.
async fn raw_post(addr: std::net::SocketAddr, length: u64) -> String {
    tokio::task::spawn_blocking(move || {
        use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
        use std::io::{Read, Write};
        let mut builder = SslConnector::builder(SslMethod::tls_client()).unwrap();
        builder.set_verify(SslVerifyMode::NONE);
        let tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
        let mut tls = builder.build().connect("localhost", tcp).unwrap();
        let head = format!(
            "POST /as4 HTTP/1.1\r\nHost: pe\r\nContent-Type: multipart/related; boundary=b; type=\"application/soap+xml\"\r\nContent-Length: {length}\r\n\r\n--b\r\n"
        );
        tls.write_all(head.as_bytes()).unwrap();
        let mut answer = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n) = tls.read(&mut chunk) {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .unwrap()
}
