//! Bad input on the AS4 endpoint: each gets the ebMS error of docs/as4.md §4, nothing is
//! stored, and the server keeps serving.

mod common;

use common::*;
use ventanilla::ebms::write;

fn sample_envelope(name: &str) -> String {
    std::fs::read_to_string(
        repo().join("conformance/samples/phase4/phase4-test/src/test/resources/testfiles").join(name),
    )
    .unwrap()
}

async fn expect(cluster: &Cluster, content_type: &str, body: Vec<u8>, code: &str, status: u16) {
    let (got_status, response) = cluster.post_raw("pe", content_type, body).await;
    assert_eq!(error_code(&response).as_deref(), Some(code), "{response}");
    assert_eq!(got_status, status, "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_its_ebms_error_and_nothing_is_stored() {
    let cluster = Cluster::start(&[("cl", "CL-SICEX"), ("pe", "PE-VUCE")]).await;
    let ct = multipart_content_type();
    let good = write::user_message_envelope(&user_message("bad@test"));
    let valid = ephyto("CL", "PE");
    let doc: &[(&str, &[u8])] = &[("doc@test", &valid)];

    // MIME level: EBMS:0007
    expect(&cluster, &ct, b"this is not a multipart body".to_vec(), "EBMS:0007", 400).await;
    let truncated = multipart(&good, doc);
    expect(&cluster, &ct, truncated[..truncated.len() - 30].to_vec(), "EBMS:0007", 400).await;
    let no_start = ct.replace("root@test", "missing@test");
    expect(&cluster, &no_start, multipart(&good, doc), "EBMS:0007", 400).await;
    expect(&cluster, "text/plain", good.clone().into_bytes(), "EBMS:0007", 400).await;
    expect(&cluster, "multipart/related; type=\"text/xml\"; boundary=x", multipart(&good, doc), "EBMS:0007", 400).await;
    let oversized = vec![b'a'; 9 << 20];
    expect(&cluster, &ct, multipart(&good, &[("doc@test", &oversized)]), "EBMS:0007", 400).await;

    // XML and header level: EBMS:0009
    expect(
        &cluster,
        &ct,
        multipart("<S12:Envelope xmlns:S12=\"http://www.w3.org/2003/05/soap-envelope\"><S12:Header>", doc),
        "EBMS:0009",
        400,
    )
    .await;
    let dtd = format!(
        "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY e \"boom\">]>{}",
        &good[good.find("<S12:Envelope").unwrap()..]
    );
    expect(&cluster, &ct, multipart(&dtd, doc), "EBMS:0009", 400).await;
    expect(&cluster, "application/soap+xml", sample_envelope("NoResponder.xml").into_bytes(), "EBMS:0009", 400).await;
    expect(
        &cluster,
        "application/soap+xml",
        sample_envelope("UserMessageNoPartyID.xml").into_bytes(),
        "EBMS:0009",
        400,
    )
    .await;
    let soap11 = good.replace("http://www.w3.org/2003/05/soap-envelope", "http://schemas.xmlsoap.org/soap/envelope/");
    expect(&cluster, &ct, multipart(&soap11, doc), "EBMS:0009", 400).await;

    // Bundling: two UserMessages, EBMS:0003
    expect(&cluster, "application/soap+xml", sample_envelope("TwoUserMessages.xml").into_bytes(), "EBMS:0003", 400)
        .await;

    // P-Mode: unknown party / service / action: EBMS:0001; no matching leg: EBMS:0010
    let mut um = user_message("bad-party@test");
    um.from.ids[0].value = "AR-VUCE".into();
    expect(&cluster, &ct, multipart(&write::user_message_envelope(&um), doc), "EBMS:0001", 400).await;
    let mut um = user_message("bad-service@test");
    um.service.value = "urn:pacific-alliance:as4:service:unknown".into();
    expect(&cluster, &ct, multipart(&write::user_message_envelope(&um), doc), "EBMS:0001", 400).await;
    let mut um = user_message("bad-action@test");
    um.action = "Invoice".into();
    expect(&cluster, &ct, multipart(&write::user_message_envelope(&um), doc), "EBMS:0001", 400).await;
    let mut um = user_message("bad-agreement@test");
    um.agreement.as_mut().unwrap().value = "urn:pacific-alliance:as4:agreement:other".into();
    expect(&cluster, &ct, multipart(&write::user_message_envelope(&um), doc), "EBMS:0010", 400).await;
    let mut um = user_message("bad-to@test");
    um.to.ids[0].value = "MX-VUCEM".into();
    expect(&cluster, &ct, multipart(&write::user_message_envelope(&um), doc), "EBMS:0001", 400).await;

    // Payload references: a cid that matches no part, a part no PartInfo names: EBMS:0011
    expect(&cluster, &ct, multipart(&good, &[("other@test", b"<doc/>")]), "EBMS:0011", 400).await;
    expect(&cluster, &ct, multipart(&good, &[("doc@test", b"<doc/>"), ("extra@test", b"x")]), "EBMS:0011", 400).await;
    // Duplicate Content-IDs: EBMS:0003
    expect(&cluster, &ct, multipart(&good, &[("doc@test", b"<a/>"), ("doc@test", b"<b/>")]), "EBMS:0003", 400).await;

    // Compression: corrupt gzip, a decompression bomb past the leg's max_payload, an unknown
    // CompressionType: EBMS:0303; compressed without MimeType: EBMS:0003.
    let mut um = user_message("bad-gzip@test");
    um.parts[0].properties.push(ventanilla::ebms::Property {
        name: "CompressionType".into(),
        kind: None,
        value: "application/gzip".into(),
    });
    let compressed = write::user_message_envelope(&um);
    expect(
        &cluster,
        &ct,
        multipart(&compressed, &[("doc@test", b"\x1f\x8b\x08\x00 not gzip at all")]),
        "EBMS:0303",
        400,
    )
    .await;
    let bomb = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&vec![b'0'; 21 << 20]).unwrap();
        e.finish().unwrap()
    };
    assert!(bomb.len() < 100_000);
    expect(&cluster, &ct, multipart(&compressed, &[("doc@test", &bomb)]), "EBMS:0303", 400).await;
    expect(
        &cluster,
        &ct,
        multipart(&compressed.replace("application/gzip", "application/x-lzma"), doc),
        "EBMS:0303",
        400,
    )
    .await;
    let mut um = user_message("bad-gzip-type@test");
    um.parts[0].properties = vec![ventanilla::ebms::Property {
        name: "CompressionType".into(),
        kind: None,
        value: "application/gzip".into(),
    }];
    expect(&cluster, &ct, multipart(&write::user_message_envelope(&um), doc), "EBMS:0003", 400).await;

    // An unprocessed mustUnderstand header is a SOAP MustUnderstand fault.
    let mu = good.replace("<S12:Header>", "<S12:Header><x:Custom xmlns:x=\"urn:x\" S12:mustUnderstand=\"true\"/>");
    let (status, response) = cluster.post_raw("pe", &ct, multipart(&mu, doc)).await;
    assert_eq!(status, 400);
    assert!(response.contains("S12:MustUnderstand"), "{response}");

    // Nothing was stored, nothing half-stored, and the server still serves.
    assert_eq!(inbox_len(cluster.node("pe")).await, 0);
    let inbound = std::fs::read_dir(cluster.dir.path().join("pe/data/inbound")).unwrap().count();
    assert_eq!(inbound, 0, "no payload files kept");
    let staging = std::fs::read_dir(cluster.dir.path().join("pe/data/tmp/node")).unwrap().count();
    assert_eq!(staging, 0, "no staged parts left behind");
    let (status, ok) = cluster.post_raw("pe", &ct, multipart(&good, doc)).await;
    assert_eq!(status, 200);
    assert!(is_receipt_for(&ok, "bad@test"), "{ok}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unsigned_profile_is_refused_unless_allowed() {
    let cluster = Cluster::start(&[("cl", "CL-SICEX"), ("pe", "PE-VUCE")]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = cluster.node("pe").node.ap.config.clone();
    config.allow_insecure_profile = false;
    config.data_dir = dir.path().join("data");
    let as4 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let strict = ventanilla::node::Node::start_with(config, as4, backend).await.unwrap();
    let client = ventanilla::transport::As4Client::default();
    let identity = ventanilla::transport::TlsIdentity { trust: cluster.ca(), client_cert: None };
    let body = multipart(&write::user_message_envelope(&user_message("strict@test")), &[("doc@test", b"<d/>")]);
    let stream: ventanilla::transport::BodyStream =
        Box::pin(futures_util::stream::iter([Ok(bytes::Bytes::from(body))]));
    let url = format!("https://127.0.0.1:{}/as4", strict.as4_addr.port());
    let response = client
        .post(&identity, &url, &multipart_content_type(), stream, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&response.body).into_owned();
    assert_eq!(error_code(&text).as_deref(), Some("EBMS:0103"), "{text}");
    strict.stop().await;
    cluster.stop().await;
}
