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
