//! schemathesis (pinned in tests/schemathesis/requirements.txt, installed into
//! target/peers/schemathesis) with every check against the backend API's OpenAPI document, on
//! an access point holding messages in both directions. Three seeds: a finding is reproducible
//! with `schemathesis run … --seed N`. One worker: with two, CPython 3.11.7's `ast.parse` in
//! hypothesis' threads sometimes fails ("AST constructor recursion depth mismatch", a
//! schemathesis runtime error, not a finding).

mod common;

use common::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use ventanilla::backend::client::Upload;

fn schemathesis() -> PathBuf {
    let repo = repo();
    let venv = repo.join("target/peers/schemathesis");
    let bin = venv.join("bin/schemathesis");
    if !bin.exists() {
        let status = Command::new("python3").arg("-m").arg("venv").arg(&venv).status().unwrap();
        assert!(status.success(), "cannot create a virtualenv (python3-venv; `make test-deps`)");
        let status = Command::new(venv.join("bin/python"))
            .args(["-m", "pip", "install", "-q", "-r"])
            .arg(repo.join("tests/schemathesis/requirements.txt"))
            .status()
            .unwrap();
        assert!(status.success(), "cannot install schemathesis from PyPI");
    }
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_with_every_check_finds_nothing() {
    let bin = tokio::task::spawn_blocking(schemathesis).await.unwrap();
    let cluster = Cluster::start_secure(&[("cl", "CL-SICEX"), ("pe", "PE-VUCE")]).await;
    for (from, to, party) in [("cl", "pe", "PE-VUCE"), ("pe", "cl", "CL-SICEX")] {
        let doc = file(cluster.dir.path(), &format!("{from}.xml"), &ephyto(&from.to_uppercase(), &to.to_uppercase()));
        for _ in 0..2 {
            let r = cluster
                .node(from)
                .api
                .submit(
                    &serde_json::json!({"to": party, "leg": "ephyto"}),
                    &[Upload { path: &doc, mime_type: "application/xml" }],
                )
                .await
                .unwrap();
            let id = r["message_id"].as_str().unwrap();
            let state =
                cluster.node(from).api.wait_settled(id, Duration::from_secs(60)).await.unwrap()["state"].clone();
            assert_eq!(state, "acknowledged");
        }
    }
    let node = cluster.node("cl");
    let url = format!("http://{}/api/v1/openapi.json", node.node.backend_addr);
    let auth = format!("Authorization: Bearer {}", node.api.token());
    let config = repo().join("tests/schemathesis/schemathesis.toml");
    for seed in ["1", "2", "3"] {
        let (bin, url, auth, config) = (bin.clone(), url.clone(), auth.clone(), config.clone());
        let out = tokio::task::spawn_blocking(move || {
            Command::new(bin)
                .arg("--config-file")
                .arg(config)
                .args(["run", &url, "-H", &auth, "--checks", "all", "--max-examples", "30", "--workers", "1"])
                .args(["--seed", seed, "--phases", "examples,coverage,fuzzing", "--no-color"])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "seed {seed}:\n{report}{}", String::from_utf8_lossy(&out.stderr));
        assert!(report.contains("passed") && report.contains("Tested: 16"), "{report}");
    }
    cluster.stop().await;
}
