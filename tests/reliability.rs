//! Reception awareness over HTTPS: a partner outage queues messages with their next attempt
//! and they go out when it returns; an exhausted schedule fails with EBMS:0301 and tells the
//! backend; retention empties and then removes old messages, never inside the duplicate window.

mod common;

use common::*;
use std::time::Duration;
use ventanilla::backend::client::Upload;

/// Shortens the cl-pe retry schedule (and the duplicate window) and waits for the reload.
async fn set_link(cluster: &Cluster, retry: &str, window: &str) {
    let path = cluster.pmodes_dir().join("cl-pe.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = regex_replace(&text, "retry ", &format!("retry = {retry}"));
    let text = regex_replace(&text, "duplicate_window", &format!("duplicate_window = \"{window}\""));
    std::fs::write(&path, text).unwrap();
    let node = &cluster.node("cl").node;
    for _ in 0..100 {
        let link = node.ap.pmodes().links().iter().find(|l| l.id == "cl-pe").cloned().unwrap();
        if format!("{:?}", link.duplicate_window) == format!("{:?}", ventanilla::util::parse_duration(window).unwrap())
            && link.retry.len() == retry.matches(',').count() + 1
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the P-Mode change was not picked up");
}

fn regex_replace(text: &str, key: &str, line: &str) -> String {
    text.lines()
        .map(|l| if l.trim_start().starts_with(key) { line.to_owned() } else { l.to_owned() })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

async fn submit(cluster: &Cluster, n: usize) -> Vec<String> {
    let doc = file(cluster.dir.path(), "doc.xml", &ephyto("CL", "PE"));
    let mut ids = Vec::new();
    for _ in 0..n {
        let r = cluster
            .node("cl")
            .api
            .submit(
                &serde_json::json!({"to": "PE-VUCE", "leg": "ephyto"}),
                &[Upload { path: &doc, mime_type: "application/xml" }],
            )
            .await
            .unwrap();
        ids.push(r["message_id"].as_str().unwrap().to_owned());
    }
    ids
}

async fn outbound(cluster: &Cluster, state: &str) -> Vec<serde_json::Value> {
    cluster
        .node("cl")
        .api
        .get_json(&format!("/api/v1/messages?direction=outbound&state={state}"))
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_queues_messages_and_they_go_out_when_the_partner_returns() {
    let mut cluster = Cluster::start_secure(&[("cl", "CL-SICEX"), ("pe", "PE-VUCE")]).await;
    set_link(&cluster, r#"["1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s"]"#, "30d").await;
    let saved = cluster.take_down("pe").await;
    let ids = submit(&cluster, 3).await;
    // The queue, with each message's next attempt and the reason.
    let mut waiting = Vec::new();
    for _ in 0..100 {
        waiting = outbound(&cluster, "waiting_retry").await;
        if waiting.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(waiting.len(), 3, "queued while the partner is down");
    for m in &waiting {
        assert!(m["next_attempt_at"].is_string() && m["attempts"].as_u64().unwrap() >= 1, "{m}");
        assert!(m["error"].as_str().unwrap_or_default().contains("connect"), "{m}");
    }
    cluster.restart("pe", saved, |_| {}).await;
    for _ in 0..200 {
        if outbound(&cluster, "acknowledged").await.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(outbound(&cluster, "acknowledged").await.len(), 3);
    let inbox = cluster.node("pe").api.inbox().await.unwrap();
    assert_eq!(inbox.as_array().unwrap().len(), 3);
    for id in ids {
        let record = cluster.node("cl").api.status(&id).await.unwrap();
        // The identical message went out each time: one envelope, several attempts.
        assert!(record["attempts"].as_u64().unwrap() >= 2, "{record}");
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_schedule_fails_with_missing_receipt_and_tells_the_backend() {
    let mut cluster = Cluster::start_secure(&[("cl", "CL-SICEX"), ("pe", "PE-VUCE")]).await;
    set_link(&cluster, r#"["200ms", "200ms"]"#, "30d").await;
    let _down = cluster.take_down("pe").await;
    let ids = submit(&cluster, 1).await;
    let mut record = serde_json::Value::Null;
    for _ in 0..100 {
        record = cluster.node("cl").api.status(&ids[0]).await.unwrap();
        if record["state"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(record["state"], "failed", "{record}");
    assert_eq!(record["attempts"], 3, "first attempt plus the two retries of the schedule");
    assert!(record["error"].as_str().unwrap().starts_with("EBMS:0301 MissingReceipt"), "{record}");
    let events = cluster.node("cl").api.get_json("/api/v1/events?after=0").await.unwrap();
    let failed = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["message_id"] == ids[0].as_str() && e["state"] == "failed")
        .cloned();
    assert!(failed.is_some_and(|e| e["detail"].as_str().unwrap().contains("EBMS:0301")), "{events}");
    assert!(events["next"].as_i64().unwrap() > 0);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_purges_content_then_records_but_not_within_the_duplicate_window() {
    let mut cluster = Cluster::start_secure(&[("cl", "CL-SICEX"), ("pe", "PE-VUCE")]).await;
    let saved = cluster.take_down("cl").await;
    cluster
        .restart("cl", saved, |c| {
            let mut states = std::collections::BTreeMap::new();
            let now = Some(ventanilla::config::Interval::secs(0));
            states.insert(
                ventanilla::store::State::Acknowledged,
                ventanilla::config::RetentionRule { content: now, metadata: now },
            );
            c.retention = ventanilla::config::RetentionConfig {
                interval: ventanilla::config::Interval::secs(3600),
                batch: 2,
                states,
            };
        })
        .await;
    let ids = submit(&cluster, 5).await;
    for _ in 0..200 {
        if outbound(&cluster, "acknowledged").await.len() == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = cluster.node("cl").api.status(&ids[0]).await.unwrap();
    assert_eq!(outbound(&cluster, "acknowledged").await.len(), 5);
    assert!(!cluster.node("cl").node.ap.config.retention.states.is_empty(), "retention configured");
    let ap = cluster.node("cl").node.ap.clone();

    let purged = ventanilla::msh::retention::pass(&ap).await;

    assert_eq!(purged.contents, 5, "content removed in batches of 2: {purged:?}");
    assert_eq!(purged.messages, 0, "records stay inside the 30 day duplicate window");
    // The files as sent and the submitted originals beside them.
    let left: Vec<_> = std::fs::read_dir(cluster.dir.path().join("cl/data/outbound"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "no payload file stays: {left:?} ({purged:?})");
    let after = cluster.node("cl").api.status(&ids[0]).await.unwrap();
    assert!(
        after["history"].as_array().unwrap().iter().any(|h| h["detail"] == "content removed by retention"),
        "{after}"
    );
    assert_eq!(before["message_id"], after["message_id"]);
    // With a short window, the records go too.
    set_link(&cluster, r#"["1m", "5m"]"#, "1s").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let purged = ventanilla::msh::retention::pass(&ap).await;
    assert_eq!(purged.messages, 5, "{purged:?}");
    assert!(cluster.node("cl").api.status(&ids[0]).await.is_err(), "the record is gone");
    cluster.stop().await;
}
