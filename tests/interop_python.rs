//! Interop with an implementation we did not write: the Python `as4` package (PyPI, pinned in
//! conformance/peers/python-as4/requirements.txt), under edelivery-1.15 cryptography with its
//! Peppol profile, both directions over HTTPS, signed receipts checked on both sides.

use std::path::PathBuf;
use ventanilla_conformance::python::PythonPair;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

async fn setup(dir: &tempfile::TempDir) -> PythonPair {
    PythonPair::start(&repo(), &dir.path().join("pair")).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ventanilla_sends_to_python_as4_and_verifies_its_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(&dir).await;
    let (id, status, sbdh) =
        s.node_sends(&repo().join("samples/ephyto/own/ephyto_CL-MX_851_issued.xml")).await.unwrap();
    let log = std::fs::read_to_string(s.received.join("received.jsonl")).unwrap_or_default();
    assert_eq!(
        status["state"], "acknowledged",
        "Ventanilla verified the signed NRR receipt of `as4`: {status}\npeer log: {log}"
    );
    let record: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(record["ok"], true, "`as4` verified, decrypted and decompressed our message: {log}");
    assert_eq!(record["message_id"], id.as_str());
    assert_eq!(
        std::fs::read(s.received.join("0.xml")).unwrap(),
        std::fs::read(&sbdh).unwrap(),
        "payload byte-identical"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_as4_sends_to_ventanilla_and_verifies_our_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(&dir).await;
    let payload = repo().join("samples/ephyto/own/ephyto_CL-MX_851_issued.xml");
    let (code, stdout) = s.peer_sends("pe-sign-rsa", &payload).unwrap();
    assert_eq!(code, Some(0), "`as4` verified our signed NRR receipt: {stdout}");
    let result: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap().trim()).unwrap();
    let id = result["message_id"].as_str().unwrap();
    let received = s.api.received(id).await.unwrap();
    assert_eq!(received["state"], "delivered");
    let delivered = String::from_utf8(s.api.download(id, 1).await.unwrap().to_vec()).unwrap();
    assert!(
        delivered.contains("StandardBusinessDocument") && delivered.contains("SPSCertificate"),
        "decrypted, decompressed SBDH"
    );

    // Signed with a certificate the P-Mode does not bind to the peer: our EBMS:0101, read by `as4`.
    let (code, stdout) = s.peer_sends("co-sign-rsa", &payload).unwrap();
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("0101"), "{stdout}");
    s.stop().await;
}
