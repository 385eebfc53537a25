//! WS-Security between access points over HTTPS: both eDelivery profiles, signed NRR
//! receipts, and every way a message must be refused (docs/as4.md §4: 0101, 0102, 0103).

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;
use ventanilla::demo::exchange;
use ventanilla::ebms::write;
use ventanilla::wss::sign::Credential;
use ventanilla_testkit::wire::Protection;

fn credential(dir: &Path, name: &str) -> Credential {
    ventanilla_testkit::wire::credential(dir, name).unwrap()
}

/// A user message from `from` (party) to PE on a 2.0 or 1.15 link, signed with `signer`
/// and encrypted for `recipient_cert`; returns the SwA body.
fn protected_message(
    message_id: &str,
    from: &str,
    agreement: &str,
    signer: &Credential,
    recipient_cert: &Path,
    payload: &[u8],
) -> Vec<u8> {
    let mut um = user_message(message_id);
    um.from.ids[0].value = from.into();
    um.agreement.as_mut().unwrap().value = agreement.into();
    let protection = Protection::edelivery(signer, recipient_cert);
    ventanilla_testkit::wire::protected_message(&um, payload, &protection).unwrap()
}

fn certs(cluster: &Cluster) -> PathBuf {
    cluster.dir.path().join("certs/demo")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_profiles_exchange_signed_encrypted_and_receipted() {
    let cluster = Cluster::start_secure(&[("cl", "CL-SICEX"), ("co", "CO-VUCE"), ("mx", "MX-VUCEM")]).await;
    for (from, to, profile) in [
        ("cl", "mx", "edelivery-1.15"),
        ("mx", "cl", "edelivery-1.15"),
        ("cl", "co", "edelivery-2.0"),
        ("co", "cl", "edelivery-2.0"),
    ] {
        let (f, t) = (from.to_uppercase(), to.to_uppercase());
        let ephyto_doc = file(cluster.dir.path(), &format!("ephyto-{from}-{to}.xml"), &ephyto(&f, &t));
        let origin_doc = file(cluster.dir.path(), &format!("cod-{from}-{to}.xml"), &cod(&f, &t));
        for (leg, doc) in [("ephyto", &ephyto_doc), ("origin", &origin_doc)] {
            let e = exchange(cluster.node(from), cluster.node(to), leg, doc, Duration::from_secs(60)).await;
            assert!(e.ok(), "{from} -> {to} {leg}: {e:?}");
            assert_eq!(e.profile, profile);
            // The sender kept the partner's signed NRR receipt; an independent check of it:
            let record = cluster
                .node(from)
                .node
                .ap
                .store
                .get(ventanilla::store::Direction::Outbound, &e.message_id)
                .await
                .unwrap();
            let receipt = cluster.dir.path().join(format!("receipt-{from}-{to}-{leg}.xml"));
            std::fs::write(&receipt, record.response.unwrap()).unwrap();
            let options = ventanilla::inspect::VerifyOptions {
                truststore: Some(certs(&cluster).join("ca.pem")),
                cert: None,
                decrypt: None,
            };
            let report = ventanilla::inspect::verify_file(&receipt, &options).await.unwrap();
            assert!(report.valid, "{:?}", report.lines);
            let text = std::fs::read_to_string(&receipt).unwrap();
            assert!(text.contains("ebbp:NonRepudiationInformation") && text.contains("cid:"), "an NRR receipt: {text}");
            // The payload went encrypted: the wire file differs from the document.
            assert_ne!(std::fs::read(&record.payloads[0].path).unwrap(), std::fs::read(doc).unwrap());
        }
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wire_message_verifies_with_the_verify_command() {
    let cluster = Cluster::start_secure(&[("cl", "CL-SICEX"), ("mx", "MX-VUCEM")]).await;
    let doc = sample("ephyto/own/ephyto_CL-MX_851_issued.xml");
    let e = exchange(cluster.node("cl"), cluster.node("mx"), "ephyto", &doc, Duration::from_secs(60)).await;
    assert!(e.ok(), "{e:?}");
    let record =
        cluster.node("cl").node.ap.store.get(ventanilla::store::Direction::Outbound, &e.message_id).await.unwrap();
    // Rebuild the message as it went on the wire: HTTP header, envelope, ciphertext part.
    let envelope = String::from_utf8(record.envelope.clone()).unwrap();
    let cipher = std::fs::read(&record.payloads[0].path).unwrap();
    let mut raw = format!("POST /as4 HTTP/1.1\r\nContent-Type: {}\r\n\r\n", multipart_content_type()).into_bytes();
    raw.extend(multipart(&envelope, &[(&record.payloads[0].content_id, &cipher)]));
    let file = cluster.dir.path().join("wire.mime");
    std::fs::write(&file, &raw).unwrap();
    let binary = env!("CARGO_BIN_EXE_ventanilla");
    let certs = certs(&cluster);
    let out = std::process::Command::new(binary)
        .arg("verify")
        .arg(&file)
        .arg("--truststore")
        .arg(certs.join("ca.pem"))
        .arg("--decrypt-key")
        .arg(certs.join("mx-enc-rsa.key"))
        .arg("--decrypt-cert")
        .arg(certs.join("mx-enc-rsa.pem"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.matches(": OK").count(), 3, "messaging, body, attachment: {stdout}");
    assert!(stdout.contains("VALID: signature by"), "{stdout}");
    // Without the key the encrypted attachment cannot be checked: said so, the rest judged,
    // exit 3 (valid as far as checked).
    let out = std::process::Command::new(binary).arg("verify").arg(&file).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("not checked (encrypted") && stdout.contains("VALID as far as checked"), "{stdout}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_the_security_failure() {
    let cluster = Cluster::start_secure(&[("cl", "CL-SICEX"), ("pe", "PE-VUCE")]).await;
    let dir = certs(&cluster);
    let ct = multipart_content_type();
    let cl_pe = "urn:pacific-alliance:as4:agreement:cl-pe";
    let cl = credential(&dir, "cl-sign-ed25519");
    let pe_enc = dir.join("pe-enc-x25519.pem");

    // Positive control: CL signs and encrypts correctly, PE answers with a signed receipt.
    let good = protected_message("sec-ok@test", "CL-SICEX", cl_pe, &cl, &pe_enc, &ephyto("CL", "PE"));
    let (status, response) = cluster.post_raw("pe", &ct, good).await;
    assert_eq!(status, 200, "{response}");
    assert!(is_receipt_for(&response, "sec-ok@test"), "{response}");
    assert!(response.contains("ds:SignatureValue"), "the receipt is signed");

    // Unsigned and unencrypted on a link that requires both: EBMS:0103.
    let plain =
        multipart(&write::user_message_envelope(&user_message("sec-plain@test")), &[("doc@test", &ephyto("CL", "PE"))]);
    let (_, response) = cluster.post_raw("pe", &ct, plain).await;
    assert_eq!(error_code(&response).as_deref(), Some("EBMS:0103"), "{response}");
    assert!(response.contains("ds:SignatureValue"), "errors are signed on a signing link: {response}");

    // Signed with a certificate the P-Mode binds to another party: EBMS:0101.
    let mx = credential(&dir, "mx-sign-ed25519");
    let forged = protected_message("sec-forged@test", "CL-SICEX", cl_pe, &mx, &pe_enc, &ephyto("CL", "PE"));
    let (_, response) = cluster.post_raw("pe", &ct, forged).await;
    assert_eq!(error_code(&response).as_deref(), Some("EBMS:0101"), "{response}");

    // The wrong algorithm for the profile (RSA on a 2.0 link): EBMS:0103.
    let rsa = credential(&dir, "cl-sign-rsa");
    let weak = protected_message("sec-rsa@test", "CL-SICEX", cl_pe, &rsa, &pe_enc, &ephyto("CL", "PE"));
    let (_, response) = cluster.post_raw("pe", &ct, weak).await;
    assert_eq!(error_code(&response).as_deref(), Some("EBMS:0103"), "{response}");

    // Encrypted for someone else: EBMS:0102.
    let wrong_key =
        protected_message("sec-key@test", "CL-SICEX", cl_pe, &cl, &dir.join("cl-enc-x25519.pem"), &ephyto("CL", "PE"));
    let (_, response) = cluster.post_raw("pe", &ct, wrong_key).await;
    assert_eq!(error_code(&response).as_deref(), Some("EBMS:0102"), "{response}");

    // Ciphertext altered in transit: EBMS:0102.
    let mut altered = protected_message("sec-gcm@test", "CL-SICEX", cl_pe, &cl, &pe_enc, &ephyto("CL", "PE"));
    let at = altered.len() - 40;
    altered[at] ^= 0x01;
    let (_, response) = cluster.post_raw("pe", &ct, altered).await;
    assert_eq!(error_code(&response).as_deref(), Some("EBMS:0102"), "{response}");

    // A header value changed after signing: EBMS:0101.
    let body = protected_message("sec-header@test", "CL-SICEX", cl_pe, &cl, &pe_enc, &ephyto("CL", "PE"));
    let at = body.windows(9).position(|w| w == b"conv-test").unwrap();
    let mut changed = body;
    changed[at..at + 9].copy_from_slice(b"conv-evil");
    let (_, response) = cluster.post_raw("pe", &ct, changed).await;
    assert_eq!(error_code(&response).as_deref(), Some("EBMS:0101"), "{response}");

    // Nothing of the refused messages reached the inbox.
    let inbox = cluster.node("pe").api.inbox().await.unwrap();
    let ids: Vec<&str> = inbox.as_array().unwrap().iter().map(|m| m["message_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["sec-ok@test"]);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_certificate_rollover_and_expired_certificates() {
    let cluster = Cluster::start_secure(&[("cl", "CL-SICEX"), ("pe", "PE-VUCE")]).await;
    let dir = certs(&cluster);
    let ca = ventanilla_testkit::demo_pki::Authority::load(&dir.join("ca.pem"), &dir.join("ca.key")).unwrap();
    // CL's next signing certificate, and an expired one.
    let next_key = openssl::pkey::PKey::generate_ed25519().unwrap();
    let next_cert =
        ca.issue("CL sign-ed25519 next", &next_key, ventanilla_testkit::demo_pki::Usage::Signing, 365).unwrap();
    let old_key = openssl::pkey::PKey::generate_ed25519().unwrap();
    let old_cert = ca
        .issue_between("CL sign-ed25519 expired", &old_key, ventanilla_testkit::demo_pki::Usage::Signing, -400, -30)
        .unwrap();
    std::fs::write(dir.join("cl-sign-next.pem"), next_cert.to_pem().unwrap()).unwrap();
    std::fs::write(dir.join("cl-sign-old.pem"), old_cert.to_pem().unwrap()).unwrap();
    let next = Credential { key: next_key, cert: next_cert };
    let old = Credential { key: old_key, cert: old_cert };
    let ct = multipart_content_type();
    let cl_pe = "urn:pacific-alliance:as4:agreement:cl-pe";
    let pe_enc = dir.join("pe-enc-x25519.pem");

    let (_, before) = cluster
        .post_raw("pe", &ct, protected_message("roll-1@test", "CL-SICEX", cl_pe, &next, &pe_enc, &ephyto("CL", "PE")))
        .await;
    assert_eq!(error_code(&before).as_deref(), Some("EBMS:0101"), "not yet announced: {before}");

    // Announce the next certificate in the P-Mode; the access point reloads it while running.
    let file = cluster.pmodes_dir().join("cl-pe.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let announced = text.replacen(
        "enc_cert  = \"../certs/demo/cl-enc-x25519.pem\"\n",
        "enc_cert  = \"../certs/demo/cl-enc-x25519.pem\"\nnext_sign_cert = \"../certs/demo/cl-sign-next.pem\"\n",
        1,
    );
    assert_ne!(announced, text);
    std::fs::write(&file, announced).unwrap();
    let mut after = String::new();
    for i in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (_, r) = cluster
            .post_raw(
                "pe",
                &ct,
                protected_message(&format!("roll-2-{i}@test"), "CL-SICEX", cl_pe, &next, &pe_enc, &ephyto("CL", "PE")),
            )
            .await;
        after = r;
        if is_receipt_for(&after, &format!("roll-2-{i}@test")) {
            break;
        }
    }
    assert!(after.contains("eb:Receipt"), "the next certificate is accepted after the reload: {after}");
    // The current certificate still works during the rollover.
    let current = credential(&dir, "cl-sign-ed25519");
    let (_, r) = cluster
        .post_raw(
            "pe",
            &ct,
            protected_message("roll-3@test", "CL-SICEX", cl_pe, &current, &pe_enc, &ephyto("CL", "PE")),
        )
        .await;
    assert!(is_receipt_for(&r, "roll-3@test"), "{r}");

    // An expired certificate is refused even when the P-Mode names it.
    let expired = std::fs::read_to_string(&file).unwrap().replace("cl-sign-next.pem", "cl-sign-old.pem");
    std::fs::write(&file, expired).unwrap();
    let mut refused = String::new();
    for i in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (_, r) = cluster
            .post_raw(
                "pe",
                &ct,
                protected_message(&format!("old-{i}@test"), "CL-SICEX", cl_pe, &old, &pe_enc, &ephyto("CL", "PE")),
            )
            .await;
        refused = r;
        if refused.contains("expired") {
            break;
        }
    }
    assert_eq!(error_code(&refused).as_deref(), Some("EBMS:0101"), "{refused}");
    assert!(refused.contains("expired"), "the reason is named: {refused}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_refused_once_the_crl_lists_it() {
    let cluster = Cluster::start_secure(&[("cl", "CL-SICEX"), ("pe", "PE-VUCE")]).await;
    let dir = certs(&cluster);
    let ct = multipart_content_type();
    let cl_pe = "urn:pacific-alliance:as4:agreement:cl-pe";
    let cl = credential(&dir, "cl-sign-ed25519");
    let pe_enc = dir.join("pe-enc-x25519.pem");
    let (_, ok) = cluster
        .post_raw("pe", &ct, protected_message("crl-1@test", "CL-SICEX", cl_pe, &cl, &pe_enc, &ephyto("CL", "PE")))
        .await;
    assert!(is_receipt_for(&ok, "crl-1@test"), "{ok}");
    // The CA publishes a CRL revoking CL's signing certificate; the access point reloads it.
    let ca = ventanilla_testkit::demo_pki::Authority::load(&dir.join("ca.pem"), &dir.join("ca.key")).unwrap();
    std::fs::write(dir.join("ca.crl"), ca.crl(&[&cl.cert], 86_400).unwrap().to_pem().unwrap()).unwrap();
    let mut refused = String::new();
    for i in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let id = format!("crl-2-{i}@test");
        let (_, r) = cluster
            .post_raw("pe", &ct, protected_message(&id, "CL-SICEX", cl_pe, &cl, &pe_enc, &ephyto("CL", "PE")))
            .await;
        refused = r;
        if !is_receipt_for(&refused, &id) {
            break;
        }
    }
    assert_eq!(error_code(&refused).as_deref(), Some("EBMS:0101"), "{refused}");
    assert!(refused.contains("revoked"), "{refused}");
    // A CRL that cannot be read keeps the previous one in force.
    std::fs::write(dir.join("ca.crl"), b"not a CRL").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, still) = cluster
        .post_raw("pe", &ct, protected_message("crl-3@test", "CL-SICEX", cl_pe, &cl, &pe_enc, &ephyto("CL", "PE")))
        .await;
    assert!(still.contains("revoked"), "{still}");
    cluster.stop().await;
}

/// Issue 14: a partner moves to a certificate from a new CA; its operator sends the new CA and
/// certificate; ours adds the CA to the truststore file and replaces the certificate file the
/// P-Mode names. No restart: the next message is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_partner_ca_and_certificate_take_effect_without_a_restart() {
    let options = ventanilla::demo::Options {
        revocation: ventanilla::pki::trust::RevocationPolicy::Off,
        ..ventanilla::demo::Options::default()
    };
    let mut cluster = Cluster::start_options(&[("cl", "CL-SICEX"), ("pe", "PE-VUCE")], options).await;
    let demo = cluster.dir.path().join("certs/demo");
    let fresh = cluster.dir.path().join("certs/pe-new");
    ventanilla_testkit::demo_pki::write_demo_pki(&fresh, &["pe"]).unwrap();
    // The partner restarts with its new signing key (its business, not ours).
    let saved = cluster.take_down("pe").await;
    let (key, cert) = (fresh.join("pe-sign-ed25519.key"), fresh.join("pe-sign-ed25519.pem"));
    cluster
        .restart("pe", saved, |config| {
            let keys = config.keys.iter_mut().find(|k| k.profile == "edelivery-2.0").unwrap();
            keys.sign.key = Some(key);
            keys.sign.cert = Some(cert);
        })
        .await;
    let send = async |cluster: &Cluster| {
        let doc = file(cluster.dir.path(), "pe.xml", &ephyto("PE", "CL"));
        let r = cluster
            .node("pe")
            .api
            .submit(
                &serde_json::json!({"to": "CL-SICEX", "leg": "ephyto"}),
                &[ventanilla::backend::client::Upload { path: &doc, mime_type: "application/xml" }],
            )
            .await
            .unwrap();
        let id = r["message_id"].as_str().unwrap().to_owned();
        cluster.node("pe").api.wait_settled(&id, Duration::from_secs(30)).await.unwrap()
    };
    // Before our operator acts: refused (the P-Mode binds the old certificate).
    let refused = {
        let cl = cluster.node("cl").node.ap.clone();
        let before = cl.store.refusals(None, 100).await.unwrap().len();
        let doc = file(cluster.dir.path(), "pe0.xml", &ephyto("PE", "CL"));
        cluster
            .node("pe")
            .api
            .submit(
                &serde_json::json!({"to": "CL-SICEX", "leg": "ephyto"}),
                &[ventanilla::backend::client::Upload { path: &doc, mime_type: "application/xml" }],
            )
            .await
            .unwrap();
        let mut refused = false;
        for _ in 0..100 {
            if cl.store.refusals(None, 100).await.unwrap().len() > before {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        refused
    };
    assert!(refused, "the old binding refuses the new certificate");
    // Our operator: the new CA into the truststore file, the new certificate into the file the
    // P-Mode names.
    let mut cas = std::fs::read(demo.join("ca.pem")).unwrap();
    cas.extend(std::fs::read(fresh.join("ca.pem")).unwrap());
    std::fs::write(demo.join("ca.pem"), cas).unwrap();
    std::fs::copy(fresh.join("pe-sign-ed25519.pem"), demo.join("pe-sign-ed25519.pem")).unwrap();
    let mut state = serde_json::Value::Null;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        state = send(&cluster).await;
        if state["state"] == "acknowledged" {
            break;
        }
    }
    assert_eq!(state["state"], "acknowledged", "{state}");
    cluster.stop().await;
}

/// Issue 14: TLS files reload without a restart. Client side: a partner's new TLS CA appended
/// to our trust file is used at the next connection. Server side: our replaced certificate is
/// what the next connection sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_trust_and_certificates_reload_without_a_restart() {
    use ventanilla::transport::tls::{TlsSource, plain_server_config};
    use ventanilla::transport::{As4Client, TlsIdentity};
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    ventanilla_testkit::demo_pki::write_demo_pki(&a, &["x"]).unwrap();
    ventanilla_testkit::demo_pki::write_demo_pki(&b, &["x"]).unwrap();
    let router = axum::Router::new().route("/as4", axum::routing::post(|| async { "ok" }));
    let serve = async |cert: PathBuf, key: PathBuf| {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let source =
            TlsSource::watching(vec![cert.clone(), key.clone()], move || plain_server_config(&cert, &key)).unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        tokio::spawn(ventanilla::transport::server::serve_tls(
            listener,
            source,
            router.clone(),
            Default::default(),
            shutdown,
        ));
        format!("https://localhost:{port}/as4")
    };
    let post = async |client: &As4Client, trust: &Path, url: &str| {
        let identity = TlsIdentity { trust: trust.to_owned(), client_cert: None };
        let body: ventanilla::transport::BodyStream =
            Box::pin(futures_util::stream::iter([Ok(bytes::Bytes::from_static(b"x"))]));
        client.post(&identity, url, "text/plain", body, Duration::from_secs(10)).await.map(|r| r.status)
    };
    // Client side: one client, one trust file; a server of the other CA is trusted once its CA is added.
    let trust = dir.path().join("trust.pem");
    std::fs::copy(a.join("ca.pem"), &trust).unwrap();
    let of_a = serve(a.join("x-tls.pem"), a.join("x-tls.key")).await;
    let of_b = serve(b.join("x-tls.pem"), b.join("x-tls.key")).await;
    let client = As4Client::default();
    assert_eq!(post(&client, &trust, &of_a).await.unwrap(), 200);
    assert!(post(&client, &trust, &of_b).await.is_err(), "B is not trusted yet");
    let mut both = std::fs::read(&trust).unwrap();
    both.extend(std::fs::read(b.join("ca.pem")).unwrap());
    std::fs::write(&trust, both).unwrap();
    assert_eq!(post(&client, &trust, &of_b).await.unwrap(), 200, "the appended CA is used without a restart");
    // Server side: its certificate replaced by one of CA B; a client trusting only B connects.
    let served_cert = dir.path().join("served.pem");
    let served_key = dir.path().join("served.key");
    std::fs::copy(a.join("x-tls.pem"), &served_cert).unwrap();
    std::fs::copy(a.join("x-tls.key"), &served_key).unwrap();
    let url = serve(served_cert.clone(), served_key.clone()).await;
    let only_b = b.join("ca.pem");
    assert!(post(&As4Client::default(), &only_b, &url).await.is_err());
    std::thread::sleep(Duration::from_millis(20));
    std::fs::copy(b.join("x-tls.key"), &served_key).unwrap();
    std::fs::copy(b.join("x-tls.pem"), &served_cert).unwrap();
    assert_eq!(post(&As4Client::default(), &only_b, &url).await.unwrap(), 200, "the new certificate is served");
}
