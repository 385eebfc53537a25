//! Issue 14, end to end: Ecuador (EC-VUE) joins a running Chilean access point using only the
//! commands an operator has: `certs request`, a test CA of its own (separate from Chile's),
//! `certs import`, the CA and CRL appended to Chile's trust files (no restart), `pmode new`
//! with the certificates inline (the same file on both sides), `partner check` on both sides,
//! then documents both ways.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use ventanilla::backend::client::{ApiClient, Upload};
use ventanilla_testkit::demo_pki::{Authority, Usage};

fn run(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ventanilla")).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ventanilla {}: {text}", args.join(" "));
    text
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifth_country_with_its_own_ca_is_onboarded_with_the_commands_alone() {
    let cluster = Cluster::start_secure(&[("cl", "CL-SICEX")]).await;
    let work = cluster.dir.path();
    let chile = work.join("certs/demo");
    let ec = work.join("ec");
    // 1. Ecuador's keys and requests.
    let req = ec.join("req");
    run(&[
        "certs",
        "request",
        "--party",
        "EC-VUE",
        "--profile",
        "edelivery-2.0",
        "--out",
        s(&req),
        "--host",
        "localhost",
    ]);
    // 2. Ecuador's CA (not Chile's) issues from the requests.
    let ca = Authority::new("Test CA of Ecuador").unwrap();
    let csr_key = |name: &str| {
        openssl::x509::X509Req::from_pem(&std::fs::read(req.join(name)).unwrap()).unwrap().public_key().unwrap()
    };
    let x25519 =
        openssl::pkey::PKey::public_key_from_pem(&std::fs::read(req.join("ec-vue-enc-x25519.pub.pem")).unwrap())
            .unwrap();
    let issued = ec.join("issued");
    std::fs::create_dir_all(&issued).unwrap();
    for (name, cert) in [
        ("sign.pem", ca.issue("EC-VUE sign", &csr_key("ec-vue-sign-ed25519.csr"), Usage::Signing, 730).unwrap()),
        ("enc.pem", ca.issue("EC-VUE enc", &x25519, Usage::KeyAgreement, 730).unwrap()),
        ("tls.pem", ca.issue("EC-VUE tls", &csr_key("ec-vue-tls.csr"), Usage::Tls, 730).unwrap()),
    ] {
        std::fs::write(issued.join(name), cert.to_pem().unwrap()).unwrap();
    }
    std::fs::write(ec.join("ca.pem"), ca.cert_pem().unwrap()).unwrap();
    std::fs::write(ec.join("ca.crl"), ca.crl(&[], 30 * 86_400).unwrap().to_pem().unwrap()).unwrap();
    // 3. Installed after the checks.
    let own = ec.join("own");
    for (usage, key, cert) in [
        ("sign", "ec-vue-sign-ed25519.key", "sign.pem"),
        ("enc", "ec-vue-enc-x25519.key", "enc.pem"),
        ("tls", "ec-vue-tls.key", "tls.pem"),
    ] {
        run(&[
            "certs",
            "import",
            "--profile",
            "edelivery-2.0",
            "--usage",
            usage,
            "--key",
            s(&req.join(key)),
            "--cert",
            s(&issued.join(cert)),
            "--ca",
            s(&ec.join("ca.pem")),
            "--to",
            s(&own),
        ]);
    }
    // 4. Each side trusts the other's CA and CRL: Chile appends to its files (reloaded, no
    //    restart); Ecuador's trust file holds Chile's CA, its CRL Chile's CRL.
    let append = |to: &Path, from: &Path| {
        let mut bytes = std::fs::read(to).unwrap();
        bytes.extend(std::fs::read(from).unwrap());
        std::fs::write(to, bytes).unwrap();
    };
    append(&chile.join("ca.pem"), &ec.join("ca.pem"));
    append(&chile.join("ca.crl"), &ec.join("ca.crl"));
    std::fs::copy(chile.join("ca.pem"), ec.join("trust.pem")).unwrap();
    // 5. Ecuador's access point.
    let as4 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ec_url = format!("https://localhost:{}/as4", as4.local_addr().unwrap().port());
    let cl_node = &cluster.node("cl").node;
    let cl_url = format!("https://localhost:{}/as4", cl_node.as4_addr.port());
    let mut config = cl_node.ap.config.clone();
    config.party_id = "EC-VUE".into();
    config.host = "ap.ec.test".into();
    config.data_dir = ec.join("data");
    config.pmodes = ec.join("pmodes");
    config.endpoints.clear();
    config.as4.listen = as4.local_addr().unwrap();
    config.as4.tls_cert = own.join("tls.pem");
    config.as4.tls_key = own.join("tls.key");
    config.as4.trust = ec.join("trust.pem");
    config.backend.listen = backend.local_addr().unwrap();
    config.keys.retain(|k| k.profile == "edelivery-2.0");
    config.keys[0].sign.key = Some(own.join("sign.key"));
    config.keys[0].sign.cert = Some(own.join("sign.pem"));
    config.keys[0].enc.key = Some(own.join("enc.key"));
    config.keys[0].enc.cert = Some(own.join("enc.pem"));
    config.console = None;
    // 6. One P-Mode for both, certificates inline.
    let link = ec.join("cl-ec.toml");
    run(&[
        "pmode",
        "new",
        "--id",
        "cl-ec",
        "--profile",
        "edelivery-2.0",
        "--leg",
        "ephyto",
        "--party",
        &format!("CL-SICEX,{cl_url},{},{}", s(&chile.join("cl-sign-ed25519.pem")), s(&chile.join("cl-enc-x25519.pem"))),
        "--party",
        &format!("EC-VUE,{ec_url},{},{}", s(&own.join("sign.pem")), s(&own.join("enc.pem"))),
        "--out",
        s(&link),
    ]);
    std::fs::create_dir_all(&config.pmodes).unwrap();
    std::fs::copy(&link, config.pmodes.join("cl-ec.toml")).unwrap();
    std::fs::copy(&link, cluster.pmodes_dir().join("cl-ec.toml")).unwrap();
    let ec_node = ventanilla::node::Node::start_with(config.clone(), as4, backend).await.unwrap();
    // Chile's watcher loads the new P-Mode (and, in the same round, the appended CA and CRL).
    for _ in 0..300 {
        if cl_node.ap.pmodes().links().iter().any(|l| l.id == "cl-ec") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cl_node.ap.pmodes().links().iter().any(|l| l.id == "cl-ec"), "Chile loaded the link");
    // 7. Both sides check the link before the first message.
    let cl_config = file(work, "cl.toml", ventanilla::demo::toml_config(&cl_node.ap.config).as_bytes());
    let ec_config = file(work, "ec.toml", ventanilla::demo::toml_config(&config).as_bytes());
    for (who, config) in [("cl", cl_config), ("ec", ec_config)] {
        let report = tokio::task::spawn_blocking(move || run(&["partner", "check", "cl-ec", "--config", s(&config)]))
            .await
            .unwrap();
        assert!(report.contains("receipt received"), "{who}: {report}");
    }
    // 8. Documents both ways.
    let ec_api = ApiClient::new(&format!("http://{}", ec_node.backend_addr), cluster.node("cl").api.token());
    for (api, from, to, party) in [(&cluster.node("cl").api, "CL", "EC", "EC-VUE"), (&ec_api, "EC", "CL", "CL-SICEX")] {
        let doc = file(work, &format!("{from}.xml"), &ephyto(from, to));
        let r = api
            .submit(
                &serde_json::json!({"to": party, "leg": "ephyto"}),
                &[Upload { path: &doc, mime_type: "application/xml" }],
            )
            .await
            .unwrap();
        let id = r["message_id"].as_str().unwrap();
        let status = api.wait_settled(id, Duration::from_secs(60)).await.unwrap();
        assert_eq!(status["state"], "acknowledged", "{from} → {to}: {status}");
    }
    ec_node.stop().await;
    cluster.stop().await;
}
