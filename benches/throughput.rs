//! End-to-end throughput: two access points on loopback HTTPS with the durable SQLite store,
//! signed + encrypted one-way push with a signed NRR receipt, a ~10 KB ePhyto per message,
//! payload validation on both sides. Prints messages per second delivered end to end.
//!
//!     cargo bench --bench throughput -- [MESSAGES] [PROFILE: edelivery-2.0 | edelivery-1.15]
//!
//! With `BENCH_POSTGRES="host=127.0.0.1 port=5432 user=postgres"` both access points keep
//! their messages in PostgreSQL (databases ventanilla_cl and ventanilla_pe, created here).

use std::time::{Duration, Instant};
use ventanilla::backend::client::Upload;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let messages: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let profile = args.get(1).cloned().unwrap_or_else(|| "edelivery-2.0".into());
    let work = tempfile::tempdir().unwrap();
    let pmodes = work.path().join("pmodes-src");
    std::fs::create_dir_all(&pmodes).unwrap();
    // cl-pe carries the chosen profile; certificates follow it.
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/pmodes/cl-pe.toml")).unwrap();
    let text = if profile == "edelivery-1.15" {
        text.replace("edelivery-2.0", "edelivery-1.15")
            .replace("sign-ed25519", "sign-rsa")
            .replace("enc-x25519", "enc-rsa")
    } else {
        text
    };
    std::fs::write(pmodes.join("cl-pe.toml"), text).unwrap();
    let postgres = std::env::var("BENCH_POSTGRES").ok();
    if let Some(base) = &postgres {
        let (client, connection) =
            tokio_postgres::connect(&format!("{base} dbname=postgres"), tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        for db in ["ventanilla_cl", "ventanilla_pe"] {
            let _ = client.execute(&format!("DROP DATABASE IF EXISTS {db}"), &[]).await;
            client.execute(&format!("CREATE DATABASE {db}"), &[]).await.unwrap();
        }
    }
    let store = if postgres.is_some() { "PostgreSQL" } else { "SQLite" };
    let options = ventanilla::demo::Options { postgres, ..Default::default() };
    let nodes = ventanilla::demo::launch_with(work.path(), &pmodes, &[("cl", "CL-SICEX"), ("pe", "PE-VUCE")], &options)
        .await
        .unwrap();
    let doc = work.path().join("ephyto.xml");
    std::fs::write(&doc, ventanilla::payload::ephyto::testing::certificate("CL", "PE", "CL-2026-BENCH")).unwrap();
    let size = std::fs::metadata(&doc).unwrap().len();
    let (cl, pe) = (&nodes[0], &nodes[1]);
    let started = Instant::now();
    let metadata = serde_json::json!({"to": "PE-VUCE", "leg": "ephyto"});
    let uploads = [Upload { path: &doc, mime_type: "application/xml" }];
    let mut submitted = 0;
    while submitted < messages {
        let batch: Vec<_> = (0..32.min(messages - submitted)).map(|_| cl.api.submit(&metadata, &uploads)).collect();
        for r in futures_util::future::join_all(batch).await {
            r.expect("submit");
            submitted += 1;
        }
    }
    let submit_time = started.elapsed();
    loop {
        let done = cl.api.list_all("/api/v1/messages?direction=outbound&state=acknowledged").await.unwrap();
        if done.len() >= messages {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = started.elapsed();
    let delivered = pe.api.list_all("/api/v1/inbox").await.unwrap().len();
    assert_eq!(delivered, messages);
    println!(
        "throughput ({profile}, {store}, {size}-byte ePhyto, {messages} messages): {:.0} messages/s delivered and receipted end to end ({total:.2?}; submissions took {submit_time:.2?})",
        messages as f64 / total.as_secs_f64()
    );
    for n in nodes {
        n.node.stop().await;
    }
}
