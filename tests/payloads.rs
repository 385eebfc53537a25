//! Business documents: every shared sample through `ventanilla payload check`, and bad
//! documents refused on submit (to the backend, located) and on receipt (to the partner, with
//! the ebMS error of docs/payloads.md §4.3), never reaching a backend inbox.

mod common;

use common::*;
use std::path::PathBuf;
use ventanilla::backend::client::Upload;
use ventanilla::ebms::write;

fn samples(folder: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("samples").join(folder))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "xml" || e == "edi"))
        .collect();
    files.sort();
    files
}

fn check(file: &PathBuf, extra: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ventanilla"))
        .args(["payload", "check"])
        .args(extra)
        .arg(file)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn every_shared_sample_is_judged_as_its_name_says() {
    let mut count = 0;
    for folder in ["ephyto/own", "origin", "edifact"] {
        for file in samples(folder) {
            let name = file.file_name().unwrap().to_string_lossy().to_string();
            // The D13B sample is negative under the IPPC :17 profile.
            let extra: &[&str] = if name.contains("legacy_namespace_v11") { &["--versions", "17"] } else { &[] };
            let (ok, out) = check(&file, extra);
            assert_eq!(ok, !name.starts_with("neg_"), "{name}:\n{out}");
            if !ok {
                assert!(
                    out.lines().skip(1).all(|l| l.trim_start().starts_with("line ")
                        || l.contains("segment ")
                        || l.contains("interchange")
                        || l.contains("Content")),
                    "{name}: every error is located:\n{out}"
                );
            }
            count += 1;
        }
    }
    assert!(count >= 37, "{count} samples");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_documents_are_refused_on_submit_with_their_location() {
    let cluster = Cluster::start_secure(&[("cl", "CL-SICEX"), ("pe", "PE-VUCE")]).await;
    let api = &cluster.node("cl").api;
    let submit = |leg: &'static str, path: PathBuf| async move {
        api.submit(
            &serde_json::json!({"to": "PE-VUCE", "leg": leg}),
            &[Upload { path: &path, mime_type: "application/xml" }],
        )
        .await
    };
    for (leg, file, expected) in [
        ("ephyto", "ephyto/own/neg_ephyto_bad_typecode.xml", "EPHYTO-TYPECODE"),
        ("ephyto", "ephyto/own/neg_ephyto_schema_wrong_order.xml", "EPHYTO-XSD"),
        ("ephyto", "ephyto/own/neg_ephyto_not_wellformed.xml", "EPHYTO-XML"),
        ("ephyto", "ephyto/own/neg_ephyto_missing_import_country.xml", "EPHYTO-MISSING"),
        ("origin", "origin/neg_cod_v1.8.3_A35_tampered_after_signing.xml", "COD-SIG-EXPORTER"),
        ("origin", "origin/neg_cod_v1.8.3_A35_anomalous_no_exporter_signature.xml", "COD-SIG-EXPORTER"),
    ] {
        let err = submit(leg, sample(file)).await.unwrap_err().to_string();
        assert!(err.contains("422") && err.contains(expected) && err.contains("line "), "{file}: {err}");
    }
    // A valid certificate for another destination: the countries disagree with the link.
    let err = submit("ephyto", sample("ephyto/own/ephyto_CL-MX_851_issued.xml")).await.unwrap_err().to_string();
    assert!(err.contains("422") && err.contains("MX"), "{err}");
    // 50 MB and deeply nested documents: refused within bounded time and memory.
    let big = file(cluster.dir.path(), "big.xml", &[b"<a>".as_slice(), &vec![b'x'; 50 << 20], b"</a>"].concat());
    let err = submit("ephyto", big).await.unwrap_err().to_string();
    // Refused while it streams: past as4.max_message (8 MiB here), before any validation. The
    // access point answers 413 and closes; a client still sending may see the close first.
    let answered = err.contains("413") && err.contains("as4.max_message");
    assert!(answered || err.contains("unreachable"), "refused by the request limit: {err}");
    let deep =
        file(cluster.dir.path(), "deep.xml", format!("{}{}", "<a>".repeat(100_000), "</a>".repeat(100_000)).as_bytes());
    let err = submit("ephyto", deep).await.unwrap_err().to_string();
    assert!(err.contains("422"), "{err}");
    assert!(
        cluster
            .node("cl")
            .api
            .get_json("/api/v1/messages?direction=outbound")
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .is_empty(),
        "nothing was queued"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_documents_received_get_an_error_and_never_reach_the_inbox() {
    let cluster = Cluster::start(&[("cl", "CL-SICEX"), ("pe", "PE-VUCE")]).await;
    let ct = multipart_content_type();
    let post = |id: &str, action_leg: &str, bytes: Vec<u8>| {
        let mut um = user_message(id);
        if action_leg == "origin" {
            um.service.value = "urn:pacific-alliance:as4:service:origin".into();
            um.action = "CertificateOfOrigin".into();
        }
        multipart(&write::user_message_envelope(&um), &[("doc@test", &bytes)])
    };
    for (i, (leg, file)) in [
        ("ephyto", "ephyto/own/neg_ephyto_bad_typecode.xml"),
        ("ephyto", "ephyto/own/neg_ephyto_schema_wrong_order.xml"),
        ("ephyto", "ephyto/own/neg_ephyto_not_wellformed.xml"),
        ("ephyto", "ephyto/own/neg_ephyto_missing_import_country.xml"),
        ("ephyto", "ephyto/own/neg_hub_ephytoenvelope_header_mismatch.xml"),
        ("origin", "origin/neg_cod_v1.8.3_A35_tampered_after_signing.xml"),
        ("origin", "origin/neg_cod_v1.8.3_A35_anomalous_no_exporter_signature.xml"),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("neg-{i}@test");
        let (status, response) = cluster.post_raw("pe", &ct, post(&id, leg, read(&sample(file)))).await;
        assert_eq!(error_code(&response).as_deref(), Some("EBMS:0004"), "{file}: {response}");
        assert_eq!(status, 400);
        assert!(response.contains("line "), "{file}: the detail locates the problem: {response}");
        let kept = cluster.node("pe").api.received(&id).await.unwrap();
        assert_eq!(kept["state"], "rejected", "{file}: kept for inspection");
        // The same message again gets the same error, not a receipt.
        let (_, again) = cluster.post_raw("pe", &ct, post(&id, leg, read(&sample(file)))).await;
        assert_eq!(error_code(&again).as_deref(), Some("EBMS:0004"), "{file}: {again}");
    }
    // Valid, but for another destination: EBMS:0003.
    let (_, response) = cluster.post_raw("pe", &ct, post("neg-country@test", "ephyto", ephyto("CL", "MX"))).await;
    assert_eq!(error_code(&response).as_deref(), Some("EBMS:0003"), "{response}");
    // A valid one is delivered with what was extracted.
    let (_, ok) = cluster.post_raw("pe", &ct, post("good@test", "ephyto", ephyto("CL", "PE"))).await;
    assert!(is_receipt_for(&ok, "good@test"), "{ok}");
    let inbox = cluster.node("pe").api.inbox().await.unwrap();
    let ids: Vec<&str> = inbox.as_array().unwrap().iter().map(|m| m["message_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["good@test"], "nothing invalid reached the inbox");
    assert_eq!(inbox[0]["document"]["kind"], "ephyto");
    assert_eq!(inbox[0]["document"]["status"], "issued");
    cluster.stop().await;
}
