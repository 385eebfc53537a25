//! `ventanilla partner check LINK`: everything a link needs, checked before the first message
//! (issue 14): certificates chain with their revocation status, our keys, and the partner
//! answering the AS4 test service message.

mod common;

use common::*;

fn check(config: &std::path::Path, link: &str) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ventanilla"))
        .args(["partner", "check", link, "--config"])
        .arg(config)
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partner_check_tells_what_a_link_lacks_before_the_first_message() {
    let mut cluster = Cluster::start_secure(&[("cl", "CL-SICEX"), ("pe", "PE-VUCE")]).await;
    let config = file(
        cluster.dir.path(),
        "cl.toml",
        ventanilla::demo::toml_config(&cluster.node("cl").node.ap.config).as_bytes(),
    );
    let (code, report) = tokio::task::spawn_blocking({
        let config = config.clone();
        move || check(&config, "cl-pe")
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{report}");
    assert!(report.contains("ok   own keys for edelivery-2.0"), "{report}");
    assert!(report.contains("chains to the truststore, revocation status obtained"), "{report}");
    assert!(report.contains("receipt received"), "{report}");
    // A link whose partner is not there: the certificates are fine, the endpoint is not.
    let saved = cluster.take_down("pe").await;
    let (code, report) = tokio::task::spawn_blocking({
        let config = config.clone();
        move || check(&config, "cl-pe")
    })
    .await
    .unwrap();
    assert_eq!(code, Some(1), "{report}");
    assert!(report.contains("FAIL endpoint") && report.contains("cannot reach"), "{report}");
    assert!(report.contains("ok   sign"), "{report}");
    let (code, report) = tokio::task::spawn_blocking(move || check(&config, "cl-nowhere")).await.unwrap();
    assert_eq!(code, Some(1));
    assert!(report.contains("no P-Mode with id 'cl-nowhere'; this party's links: cl-co, cl-mx, cl-pe"), "{report}");
    cluster.restart("pe", saved, |_| {}).await;
    cluster.stop().await;
}

/// Issue 14: `pmode new` drafts a link with the certificates inline; the same file, loaded by
/// both access points, carries messages both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drafted_pmode_with_inline_certificates_works_on_both_sides() {
    let cluster = Cluster::start_secure(&[("cl", "CL-SICEX"), ("pe", "PE-VUCE")]).await;
    let certs = cluster.dir.path().join("certs/demo");
    let draft = cluster.dir.path().join("cl-pe-draft.toml");
    let party = |id: &str, code: &str| {
        format!(
            "{id},https://as4.{code}.example/as4,{},{}",
            certs.join(format!("{code}-sign-ed25519.pem")).display(),
            certs.join(format!("{code}-enc-x25519.pem")).display()
        )
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ventanilla"))
        .args(["pmode", "new", "--id", "cl-pe", "--profile", "edelivery-2.0", "--leg", "ephyto", "--leg", "origin"])
        .args(["--party", &party("CL-SICEX", "cl"), "--party", &party("PE-VUCE", "pe"), "--out"])
        .arg(&draft)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&draft).unwrap();
    assert!(text.contains("-----BEGIN CERTIFICATE-----") && !text.contains("certs/demo"), "{text}");
    // Both access points load the very same file in place of the shipped one.
    std::fs::write(cluster.pmodes_dir().join("cl-pe.toml"), &text).unwrap();
    for (from, to, party) in [("cl", "pe", "PE-VUCE"), ("pe", "cl", "CL-SICEX")] {
        // The draft is loaded (its link names no certificate file) once the watcher has seen it.
        let loaded = || {
            let pmodes = cluster.node(from).node.ap.pmodes();
            pmodes.links().iter().any(|l| l.id == "cl-pe" && l.cert_files.is_empty())
        };
        for _ in 0..300 {
            if loaded() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(loaded(), "{from} loaded the drafted P-Mode");
        let doc = file(cluster.dir.path(), &format!("{from}.xml"), &ephyto(&from.to_uppercase(), &to.to_uppercase()));
        let r = cluster
            .node(from)
            .api
            .submit(
                &serde_json::json!({"to": party, "leg": "ephyto"}),
                &[ventanilla::backend::client::Upload { path: &doc, mime_type: "application/xml" }],
            )
            .await
            .unwrap();
        let id = r["message_id"].as_str().unwrap();
        let status = cluster.node(from).api.wait_settled(id, std::time::Duration::from_secs(60)).await.unwrap();
        assert_eq!(status["state"], "acknowledged", "{from} → {to}: {status}");
    }
    cluster.stop().await;
}
