//! One-Way/Pull over HTTPS: CL holds messages for PE on an MPC; PE pulls them with signed
//! PullRequests, receives them like pushed ones, and returns a signed receipt. An empty
//! channel answers EBMS:0006; an unknown MPC EBMS:0001; a party the P-Mode does not
//! authorize is refused.

mod common;

use common::*;
use std::time::Duration;
use ventanilla::backend::client::Upload;
use ventanilla::ebms::{MessageInfo, write};
use ventanilla::pmode::model::TokenReference;

const PULL_LEG: &str = r#"
[[leg]]
name          = "ephyto-pull"
service       = "urn:pacific-alliance:as4:service:ephyto-pull"
action        = "SPSCertificate"
document      = "ephyto"
compression   = true
mpc           = "urn:pacific-alliance:mpc:cl-to-pe"
from          = "CL-SICEX"
pull          = true
pull_interval = "300ms"
"#;

async fn with_pull_leg(cluster: &Cluster) {
    let path = cluster.pmodes_dir().join("cl-pe.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let at = text.find("[reliability]").unwrap();
    std::fs::write(
        &path,
        format!("{}{PULL_LEG}\n{}", &text[..at], &text[at..])
            .replace(r#"["1m", "5m", "15m", "1h", "4h"]"#, r#"["2s", "2s", "2s"]"#),
    )
    .unwrap();
    for _ in 0..100 {
        let ready =
            cluster.nodes.iter().all(|n| n.node.ap.pmodes().links().iter().any(|l| l.legs.iter().any(|leg| leg.pull)));
        if ready {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the pull leg was not loaded");
}

fn pull_request(cluster: &Cluster, signer: &str, mpc: &str) -> String {
    let certs = cluster.dir.path().join("certs/demo");
    let credential = ventanilla::wss::sign::Credential {
        key: ventanilla::pki::keys::load_key(&certs.join(format!("{signer}-sign-ed25519.key")), None).unwrap(),
        cert: ventanilla::pki::keys::load_cert(&certs.join(format!("{signer}-sign-ed25519.pem"))).unwrap(),
    };
    let info = MessageInfo {
        timestamp: "2026-11-26T10:00:00Z".into(),
        message_id: format!("pr-{}@test", uuid::Uuid::new_v4()),
        ref_to_message_id: None,
    };
    ventanilla::wss::sign::sign_envelope(
        &write::pull_request_builder(&info, mpc),
        &credential,
        TokenReference::Bst,
        &[],
        "",
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pe_pulls_what_cl_holds_and_receipts_it() {
    let cluster = Cluster::start_secure(&[("cl", "CL-SICEX"), ("pe", "PE-VUCE"), ("mx", "MX-VUCEM")]).await;
    with_pull_leg(&cluster).await;
    let doc = file(cluster.dir.path(), "doc.xml", &ephyto("CL", "PE"));
    let cl = &cluster.node("cl").api;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = cl
            .submit(
                &serde_json::json!({"to": "PE-VUCE", "leg": "ephyto-pull"}),
                &[Upload { path: &doc, mime_type: "application/xml" }],
            )
            .await
            .unwrap();
        assert_eq!(r["state"], "pullable", "held for the partner: {r}");
        ids.push(r["message_id"].as_str().unwrap().to_owned());
    }
    let mut states = Vec::new();
    for _ in 0..200 {
        states = Vec::new();
        for id in &ids {
            states.push(cl.status(id).await.unwrap()["state"].as_str().unwrap().to_owned());
        }
        if states.iter().all(|s| s == "acknowledged") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let detail = cl.status(&ids[0]).await.unwrap();
    assert!(states.iter().all(|s| s == "acknowledged"), "pulled and receipted: {states:?} {}", detail["history"]);
    let pe = &cluster.node("pe").api;
    for id in &ids {
        let received = pe.received(id).await.unwrap();
        assert_eq!(received["state"], "delivered");
        assert_eq!(pe.download(id, 1).await.unwrap().as_ref(), read(&doc).as_slice(), "byte-identical");
    }
    // The channel is empty now: EBMS:0006, a warning.
    let ct = "application/soap+xml; charset=UTF-8";
    let (status, empty) = cluster
        .post_raw("cl", ct, pull_request(&cluster, "pe", "urn:pacific-alliance:mpc:cl-to-pe").into_bytes())
        .await;
    assert_eq!(error_code(&empty).as_deref(), Some("EBMS:0006"), "{empty}");
    assert_eq!(status, 200);
    // Mexico may not pull Peru's channel.
    let (_, refused) = cluster
        .post_raw("cl", ct, pull_request(&cluster, "mx", "urn:pacific-alliance:mpc:cl-to-pe").into_bytes())
        .await;
    assert_eq!(error_code(&refused).as_deref(), Some("EBMS:0101"), "{refused}");
    assert!(refused.contains("not authorized to pull"), "{refused}");
    // An MPC nobody offers.
    let (_, unknown) = cluster.post_raw("cl", ct, pull_request(&cluster, "pe", "urn:nowhere").into_bytes()).await;
    assert_eq!(error_code(&unknown).as_deref(), Some("EBMS:0001"), "{unknown}");
    cluster.stop().await;
}
