//! `ventanilla backup` of a running access point under traffic, `ventanilla restore` into
//! another data folder: every message acknowledged before the backup is there, with its files
//! (issue 14).

mod common;

use common::*;
use std::time::Duration;
use ventanilla::backend::client::Upload;
use ventanilla::store::{Direction, MessageStore, State};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_traffic_restores_every_acknowledged_message() {
    let cluster = Cluster::start_secure(&[("cl", "CL-SICEX"), ("pe", "PE-VUCE")]).await;
    let doc = file(cluster.dir.path(), "doc.xml", &ephyto("CL", "PE"));
    let submit = async |api: &ventanilla::backend::client::ApiClient| {
        let r = api
            .submit(
                &serde_json::json!({"to": "PE-VUCE", "leg": "ephyto"}),
                &[Upload { path: &doc, mime_type: "application/xml" }],
            )
            .await
            .unwrap();
        r["message_id"].as_str().unwrap().to_owned()
    };
    let api = cluster.node("cl").api.clone();
    let mut before = Vec::new();
    for _ in 0..10 {
        before.push(submit(&api).await);
    }
    for id in &before {
        assert_eq!(api.wait_settled(id, Duration::from_secs(60)).await.unwrap()["state"], "acknowledged");
    }
    let config = cluster.node("cl").node.ap.config.clone();
    let config_file = file(cluster.dir.path(), "cl.toml", ventanilla::demo::toml_config(&config).as_bytes());
    let target = cluster.dir.path().join("backup");
    // Traffic goes on while the backup runs.
    let traffic = {
        let api = api.clone();
        let doc = doc.clone();
        tokio::spawn(async move {
            for _ in 0..10 {
                let _ = api
                    .submit(
                        &serde_json::json!({"to": "PE-VUCE", "leg": "ephyto"}),
                        &[Upload { path: &doc, mime_type: "application/xml" }],
                    )
                    .await;
            }
        })
    };
    let out = tokio::task::spawn_blocking({
        let (config_file, target) = (config_file.clone(), target.clone());
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_ventanilla"))
                .args(["backup", "--config"])
                .arg(config_file)
                .arg("--to")
                .arg(target)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    traffic.await.unwrap();
    // Restored elsewhere.
    let mut moved = config.clone();
    moved.data_dir = cluster.dir.path().join("restored");
    let moved_file = file(cluster.dir.path(), "restored.toml", ventanilla::demo::toml_config(&moved).as_bytes());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ventanilla"))
        .args(["restore", "--config"])
        .arg(&moved_file)
        .arg("--from")
        .arg(&target)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let store = ventanilla::store::sqlite::SqliteStore::open(&moved.data_dir.join("messages.db")).unwrap();
    for id in &before {
        let m = store.get(Direction::Outbound, id).await.unwrap();
        assert_eq!(m.state, State::Acknowledged);
        for p in &m.payloads {
            assert!(p.path.starts_with(&moved.data_dir), "{}", p.path.display());
            let mut original = p.path.clone();
            while matches!(original.extension().and_then(|e| e.to_str()), Some("enc" | "gz")) {
                original = original.with_extension("");
            }
            let digest = ventanilla::store::files::sha256_file(&original).unwrap();
            assert_eq!(digest, p.sha256, "{id}: the payload restored byte for byte");
        }
    }
    // A second restore into the same folder is refused.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ventanilla"))
        .args(["restore", "--config"])
        .arg(&moved_file)
        .arg("--from")
        .arg(&target)
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("exists"));
    cluster.stop().await;
}
