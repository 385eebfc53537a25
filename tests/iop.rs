//! The legacy IOP transport (issue 15) against our own legacy node
//! (`conformance/peers/iop/iop_peer.py`, Python and xmlsec1, written from docs/iop.md):
//! a valid exchange both ways beside an AS4 exchange on the same access point, a wrong
//! password both ways, a bad `Cabecera` field, a bad SPS signature, a duplicate
//! `IDdeTransaccion`, a partner answering ERR, a partner's server fault, and a partner down
//! then back.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;
use ventanilla::backend::client::Upload;
use ventanilla::demo::{Options, Running};
use ventanilla::legacy_peer::{self, Answer, LegacyPeer, Sending, Setup};

const CL: &str = "CL-SICEX";

fn setup(cluster: &Cluster) -> Setup {
    Setup::new(&repo(), &cluster.dir.path().join("certs/demo"), cluster.dir.path())
}

/// Writes the IOP link into the running node's P-Mode folder and waits until it is loaded.
async fn add_link(cluster: &Cluster, setup: &Setup, peer_url: &str) {
    let text = legacy_peer::link_pmode(setup, "cl", CL, peer_url).unwrap();
    std::fs::write(cluster.pmodes_dir().join("cl-ec-iop.toml"), text).unwrap();
    let node = cluster.node("cl");
    for _ in 0..200 {
        let loaded = node.node.ap.pmodes().links().iter().any(|l| l.id == "cl-ec-iop" && l.file.exists());
        if loaded && node.node.ap.pmodes().links().iter().any(|l| l.parties[1].endpoint == peer_url) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ids: Vec<String> = node.node.ap.pmodes().links().iter().map(|l| l.id.clone()).collect();
    panic!("the IOP link was not loaded: {ids:?}");
}

fn certificate(dir: &Path, from: &str, to: &str) -> (PathBuf, String) {
    let number = format!("{from}-2026-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let path = dir.join(format!("{number}.xml"));
    std::fs::write(&path, ventanilla::payload::ephyto::testing::certificate_v11(from, to, &number)).unwrap();
    (path, number)
}

async fn submit(node: &Running, document: &Path) -> String {
    let metadata = serde_json::json!({ "to": legacy_peer::PARTY, "leg": "ephyto-iop" });
    let record = node.api.submit(&metadata, &[Upload { path: document, mime_type: "application/xml" }]).await.unwrap();
    record["message_id"].as_str().unwrap().to_owned()
}

fn sending<'a>(node: &Running, document: &'a Path) -> Sending<'a> {
    Sending {
        url: format!("https://{}{}", node.node.as4_addr, ventanilla::iop::DEFAULT_PATH),
        to_party: CL,
        to_country: "CL",
        document,
        transaction: None,
        password: None,
        algorithm: "rsa-sha1",
    }
}

async fn options() -> Options {
    Options { extra_pki: vec![legacy_peer::CODE.into()], ..Options::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_with_a_legacy_node_both_ways_beside_as4() {
    let cluster = Cluster::start_options(&[("cl", CL), ("pe", "PE-VUCE")], options().await).await;
    let setup = setup(&cluster);
    let peer = LegacyPeer::start(&setup, 0, Answer::Rcb, CL).unwrap();
    add_link(&cluster, &setup, &peer.url()).await;
    let (cl, pe) = (cluster.node("cl"), cluster.node("pe"));
    let docs = cluster.dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();

    // Out: an unsigned :11 certificate, signed by the access point, acknowledged with RCB.
    let (document, number) = certificate(&docs, "CL", "EC");
    let id = submit(cl, &document).await;
    assert!(ventanilla::iop::is_transaction_id(&id), "the message id is the IDdeTransaccion: {id}");
    let status = cl.api.wait_settled(&id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(status["state"], "acknowledged", "{status}");
    assert_eq!(status["transport"], "iop");
    let delivered = peer.received(&id).expect("the legacy node keeps the certificate");
    let verified = ventanilla::iop::certificate::verify(&delivered).unwrap();
    let our_signer = std::fs::read(cluster.dir.path().join("certs/demo/cl-sign-rsa.pem")).unwrap();
    assert_eq!(verified.signer.to_pem().unwrap(), our_signer, "signed with the document key (the 1.15 key here)");
    assert!(!verified.is_legacy(), "RSA-SHA256 unless the link says rsa-sha1");
    assert!(String::from_utf8_lossy(&delivered).contains(&number));
    let cabecera: serde_json::Value =
        serde_json::from_slice(&std::fs::read(peer.inbox.join(format!("{id}.json"))).unwrap()).unwrap();
    assert_eq!(cabecera["IDdeDocumento"], number.as_str());
    assert_eq!(
        (cabecera["IDdeRemitente"].as_str(), cabecera["PaisdeRemitente"].as_str()),
        (Some("VUCECL"), Some("CL"))
    );

    // Beside it, an AS4 exchange on the same access point.
    let as4_doc = common::file(&docs, "as4.xml", &ephyto("CL", "PE"));
    let as4 = ventanilla::demo::exchange(cl, pe, "ephyto", &as4_doc, Duration::from_secs(60)).await;
    assert!(as4.ok(), "{as4:?}");
    assert_eq!(cl.api.status(&as4.message_id).await.unwrap()["transport"], "as4");

    // In: the legacy node signs with RSA-SHA1 (accepted inside the payload, counted).
    let (incoming, number_in) = certificate(&docs, "EC", "CL");
    let transaction = format!("EC-{}", uuid::Uuid::new_v4().simple());
    let first =
        legacy_peer::send(&setup, &Sending { transaction: Some(&transaction), ..sending(cl, &incoming) }).unwrap();
    assert_eq!((first["status"].as_i64(), first["codigo"].as_str()), (Some(200), Some("RCB")), "{first}");
    assert_eq!(first["answered_transaction"], transaction.as_str());
    let received = cl.api.received(&transaction).await.unwrap();
    assert_eq!(received["transport"], "iop", "{received}");
    assert_eq!(received["partner"], legacy_peer::PARTY);
    assert_eq!(received["document"]["number"], number_in.as_str());
    let payload = cl.api.download(&transaction, 1).await.unwrap();
    let inbound = ventanilla::iop::certificate::verify(&payload).unwrap();
    assert!(inbound.is_legacy());
    let legacy = cl
        .node
        .ap
        .ops
        .metrics
        .iop_legacy_signatures
        .get_or_create(&ventanilla::ops::metrics::PartnerLabels { partner: legacy_peer::PARTY.into() })
        .get();
    assert_eq!(legacy, 1);
    let stored = cl.node.ap.store.get(ventanilla::store::Direction::Inbound, &transaction).await.unwrap();
    assert!(!String::from_utf8_lossy(&stored.envelope).contains("Password"), "no credentials are stored");

    // Duplicate IDdeTransaccion: the same AcuseRecibo, delivered once.
    let inbox_before = inbox_len(cl).await;
    let again =
        legacy_peer::send(&setup, &Sending { transaction: Some(&transaction), ..sending(cl, &incoming) }).unwrap();
    assert_eq!(
        (again["codigo"].as_str(), again["answered_transaction"].as_str()),
        (Some("RCB"), Some(transaction.as_str()))
    );
    assert_eq!(inbox_len(cl).await, inbox_before, "a resend is not delivered twice");

    // Refused, each with its finding, nothing stored.
    let refused = |report: &serde_json::Value| -> (String, String) {
        assert_eq!(report["faultcode"], "soapenv:Client", "{report}");
        let first = &report["detalles"][0];
        (first[0].as_str().unwrap().to_owned(), first[1].as_str().unwrap().to_owned())
    };
    let wrong =
        legacy_peer::send(&setup, &Sending { password: Some("not-the-password"), ..sending(cl, &incoming) }).unwrap();
    assert_eq!(refused(&wrong).0, "E002", "{wrong}");
    let short =
        legacy_peer::send(&setup, &Sending { transaction: Some("EC-SHORT"), ..sending(cl, &incoming) }).unwrap();
    let (code, text) = refused(&short);
    assert_eq!(code, "E003");
    assert!(text.contains("IDdeTransaccion"), "{text}");
    // A certificate signed, then altered.
    let key = openssl::pkey::PKey::private_key_from_pem(
        &std::fs::read(cluster.dir.path().join("certs/demo/ec-sign-rsa.key")).unwrap(),
    )
    .unwrap();
    let cert =
        openssl::x509::X509::from_pem(&std::fs::read(cluster.dir.path().join("certs/demo/ec-sign-rsa.pem")).unwrap())
            .unwrap();
    let (plain, number_bad) = certificate(&docs, "EC", "CL");
    let signed = ventanilla::iop::certificate::sign(
        &std::fs::read(&plain).unwrap(),
        &key,
        &cert,
        ventanilla::dsig::Algorithms::RsaSha256,
    )
    .unwrap();
    let altered =
        common::file(&docs, "altered.xml", signed.replace("<ram:TypeCode>851", "<ram:TypeCode>657").as_bytes());
    let bad = legacy_peer::send(&setup, &sending(cl, &altered)).unwrap();
    let (code, text) = refused(&bad);
    assert_eq!(code, "E005", "{text}");
    assert!(text.contains("altered"), "{text}");
    // Signed by someone the P-Mode does not bind: our own key is not Ecuador's document signer.
    let ours = openssl::pkey::PKey::private_key_from_pem(
        &std::fs::read(cluster.dir.path().join("certs/demo/cl-sign-rsa.key")).unwrap(),
    )
    .unwrap();
    let our_cert = openssl::x509::X509::from_pem(&our_signer).unwrap();
    let (plain, _) = certificate(&docs, "EC", "CL");
    let impostor = ventanilla::iop::certificate::sign(
        &std::fs::read(&plain).unwrap(),
        &ours,
        &our_cert,
        ventanilla::dsig::Algorithms::RsaSha256,
    )
    .unwrap();
    let impostor = common::file(&docs, "impostor.xml", impostor.as_bytes());
    let (code, text) = refused(&legacy_peer::send(&setup, &sending(cl, &impostor)).unwrap());
    assert_eq!(code, "E005");
    assert!(text.contains("not by the document signer bound"), "{text}");
    assert_eq!(inbox_len(cl).await, inbox_before, "nothing refused reaches the inbox");
    let refusals = cl.node.ap.store.refusals(None, 50).await.unwrap();
    let iop_refusals: Vec<_> = refusals.iter().filter(|r| r.code.starts_with("IOP:")).collect();
    assert_eq!(iop_refusals.len(), 4, "{refusals:?}");
    assert!(iop_refusals.iter().all(|r| !r.header.contains("not-the-password")));
    assert!(!number_bad.is_empty());

    // Our wrong password: the legacy node's MensajeFalla fails the message, its code kept.
    let password_file = setup.password_file(CL).unwrap();
    let right = std::fs::read(&password_file).unwrap();
    std::fs::write(&password_file, b"not-what-the-node-expects\n").unwrap();
    let (document, _) = certificate(&docs, "CL", "EC");
    let id = submit(cl, &document).await;
    let status = cl.api.wait_settled(&id, Duration::from_secs(60)).await.unwrap();
    std::fs::write(&password_file, right).unwrap();
    assert_eq!(status["state"], "failed", "{status}");
    assert_eq!(status["partner_error"]["code"], "IOP01", "{status}");
    assert!(status["partner_error"]["description"].as_str().unwrap().contains("usuario o clave"), "{status}");
    peer.stop();
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_partner_refusing_failing_and_down_then_back() {
    let cluster = Cluster::start_options(&[("cl", CL)], options().await).await;
    let setup = setup(&cluster);
    let cl = cluster.node("cl");
    let docs = cluster.dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();

    // ERR: failed for good, the partner's words kept.
    let peer = LegacyPeer::start(&setup, 0, Answer::Err, CL).unwrap();
    let port = peer.port;
    add_link(&cluster, &setup, &peer.url()).await;
    let id = submit(cl, &certificate(&docs, "CL", "EC").0).await;
    let status = cl.api.wait_settled(&id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(status["state"], "failed", "{status}");
    assert_eq!(status["partner_error"]["code"], "IOP:ERR");
    assert!(status["partner_error"]["description"].as_str().unwrap().contains("rechazado"), "{status}");
    peer.stop();

    // A server fault, then the node down, then back: retried on the leg's schedule until the
    // RCB, durably (the same IDdeTransaccion every time).
    let peer = LegacyPeer::start(&setup, port, Answer::Fault, CL).unwrap();
    let id = submit(cl, &certificate(&docs, "CL", "EC").0).await;
    let mut waited = None;
    for _ in 0..300 {
        let s = cl.api.status(&id).await.unwrap();
        if s["state"] == "waiting_retry" {
            waited = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waited = waited.expect("a server fault is retried");
    assert_eq!(waited["partner_error"]["code"], "IOP99", "{waited}");
    peer.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let down = cl.api.status(&id).await.unwrap();
    assert_ne!(down["state"], "acknowledged");
    let peer = LegacyPeer::start(&setup, port, Answer::Rcb, CL).unwrap();
    let status = cl.api.wait_settled(&id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(status["state"], "acknowledged", "{status}");
    assert!(status["attempts"].as_u64().unwrap() >= 2, "{status}");
    assert!(peer.received(&id).is_some());
    peer.stop();
    cluster.stop().await;
}

/// Two of our access points on an IOP link with each other, then the link moved to AS4 by
/// changing one word of the one P-Mode file both load, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_moves_from_the_iop_to_as4_by_one_pmode_change() {
    let cluster = Cluster::start_options(&[("cl", CL), ("pe", "PE-VUCE")], Options::default()).await;
    let setup = setup(&cluster);
    let (cl, pe) = (cluster.node("cl"), cluster.node("pe"));
    let file = cluster.pmodes_dir().join("cl-pe.toml");
    let shipped = std::fs::read_to_string(&file).unwrap();
    let iop_fields = |code: &str, party: &str, node: &Running| {
        format!(
            "iop_id = \"{}\"\niop_endpoint = \"https://{}{}\"\niop_username = \"{}\"\niop_password_file = \"{}\"\ndocument_cert = \"../certs/demo/{code}-sign-rsa.pem\"\n",
            legacy_peer::iop_id_of(code),
            node.node.as4_addr,
            ventanilla::iop::DEFAULT_PATH,
            legacy_peer::user_of(party),
            setup.password_file(party).unwrap().display()
        )
    };
    let with_iop = shipped
        .replacen("country  = \"CL\"\n", &format!("country  = \"CL\"\n{}", iop_fields("cl", CL, cl)), 1)
        .replacen("country  = \"PE\"\n", &format!("country  = \"PE\"\n{}", iop_fields("pe", "PE-VUCE", pe)), 1)
        .replacen(
            "document    = \"ephyto\"\nmax_payload = \"20MiB\"\ncompression = true",
            "document    = \"ephyto\"\nmax_payload = \"20MiB\"\ntransport   = \"iop\"",
            1,
        )
        + "\n[iop]\ncodigo_interaccion = \"IOP.MC.101\"\nid_servicio = \"IOP.PE.FS.001\"\n";
    assert_ne!(with_iop, shipped);
    let nodes = [cl, pe];
    let wait_for = |transport: ventanilla::pmode::Transport| async move {
        for _ in 0..200 {
            let now = |n: &Running| {
                n.node
                    .ap
                    .pmodes()
                    .links()
                    .iter()
                    .any(|l| l.id == "cl-pe" && l.leg("ephyto").is_some_and(|leg| leg.transport == transport))
            };
            if nodes.iter().all(|n| now(n)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the P-Mode change to {transport:?} was not picked up");
    };
    std::fs::write(&file, &with_iop).unwrap();
    wait_for(ventanilla::pmode::Transport::Iop).await;
    let docs = cluster.dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let (document, number) = certificate(&docs, "CL", "PE");
    let metadata = serde_json::json!({ "to": "PE-VUCE", "leg": "ephyto" });
    let record = cl.api.submit(&metadata, &[Upload { path: &document, mime_type: "application/xml" }]).await.unwrap();
    let id = record["message_id"].as_str().unwrap().to_owned();
    let status = cl.api.wait_settled(&id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(
        (status["state"].as_str(), status["transport"].as_str()),
        (Some("acknowledged"), Some("iop")),
        "{status}"
    );
    let received = pe.api.received(&id).await.unwrap();
    assert_eq!(
        (received["transport"].as_str(), received["document"]["number"].as_str()),
        (Some("iop"), Some(number.as_str()))
    );

    // The move: one word, in the one file, no restart.
    std::fs::write(&file, with_iop.replacen("transport   = \"iop\"", "transport   = \"as4\"", 1)).unwrap();
    wait_for(ventanilla::pmode::Transport::As4).await;
    let (document, _) = certificate(&docs, "CL", "PE");
    let moved = ventanilla::demo::exchange(cl, pe, "ephyto", &document, Duration::from_secs(60)).await;
    assert!(moved.ok(), "{moved:?}");
    assert_eq!(pe.api.received(&moved.message_id).await.unwrap()["transport"], "as4");
    cluster.stop().await;
}
