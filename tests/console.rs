//! The web console in a real browser (Debian's chromium, driven through chromedriver): log in,
//! search, open a message, download its payload, resend it, test a link, look at every page
//! (screenshots), a forged form without the CSRF token refused, a viewer kept from admin
//! pages, log out. `UPDATE_SCREENSHOTS=1` also writes the screenshots to `docs/console/`.

mod common;

use common::*;
use fantoccini::{ClientBuilder, Locator};
use std::time::Duration;
use ventanilla::backend::client::Upload;
use ventanilla::demo::Options;
use ventanilla::ops::users::{Role, put};

/// chromedriver on a free port, killed when dropped.
struct Driver(std::process::Child, u16);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_driver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = std::process::Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chromedriver (Debian package chromium-driver; `make test-deps` installs it)");
    Driver(child, port)
}

async fn browser(driver: &Driver) -> fantoccini::Client {
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), "chrome".into());
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1360,900"]
        }),
    );
    let url = format!("http://127.0.0.1:{}", driver.1);
    for _ in 0..100 {
        if let Ok(client) = ClientBuilder::native().capabilities(caps.clone()).connect(&url).await {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot start chromium through chromedriver");
}

async fn shot(client: &fantoccini::Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    let dir = repo().join("target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), &png).unwrap();
    if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
        let docs = repo().join("docs/console");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::write(docs.join(format!("{name}.png")), &png).unwrap();
    }
}

/// Waits (a page load may still be under way after a click) until the path ends with `path`.
async fn arrived(client: &fantoccini::Client, path: &str) -> bool {
    for _ in 0..100 {
        if client.current_url().await.unwrap().path().ends_with(path) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn text(client: &fantoccini::Client) -> String {
    match client.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css("body")).await {
        Ok(body) => body.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The page's text once it contains `needle` (a page load may still be under way).
async fn wait_text(client: &fantoccini::Client, needle: &str) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        last = text(client).await;
        if last.contains(needle) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the page never showed '{needle}': {last}");
}

async fn log_in(client: &fantoccini::Client, console: &str, user: &str, password: &str) {
    client.goto(&format!("{console}/messages")).await.unwrap();
    assert!(arrived(client, "/login").await, "a page without a session goes to the login");
    client.find(Locator::Id("user")).await.unwrap().send_keys(user).await.unwrap();
    client.find(Locator::Id("password")).await.unwrap().send_keys(password).await.unwrap();
    client.find(Locator::Id("login-button")).await.unwrap().click().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_finds_downloads_and_resends_a_failed_message_in_the_browser() {
    let alerts = ventanilla::ops::settings::AlertsConfig {
        interval: ventanilla::config::Interval(Duration::from_millis(300)),
        rules: vec![
            ventanilla::ops::settings::AlertRule::MessageFailed,
            ventanilla::ops::settings::AlertRule::PartnerUnreachable { after: ventanilla::config::Interval::secs(0) },
            ventanilla::ops::settings::AlertRule::CertificateExpiry { days: 30 },
            // Always true here: an alert that stays active, to acknowledge.
            ventanilla::ops::settings::AlertRule::DiskLow { below: ventanilla::config::ByteSize(1 << 60) },
        ],
        ..Default::default()
    };
    let options = Options { retry: Some(vec!["1s".into()]), alerts, ..Options::default() };
    let mut cluster = Cluster::start_options(&[("cl", "CL-SICEX"), ("pe", "PE-VUCE")], options).await;
    let ap = cluster.node("cl").node.ap.clone();
    put(ap.store.as_ref(), "cli", "ana", Role::Operator, "ana-password-123").await.unwrap();
    put(ap.store.as_ref(), "cli", "root", Role::Admin, "root-password-123").await.unwrap();
    put(ap.store.as_ref(), "cli", "vio", Role::Viewer, "vio-password-123").await.unwrap();
    let document = ephyto("CL", "PE");
    let doc = file(cluster.dir.path(), "ephyto.xml", &document);
    let send = async |cluster: &Cluster| {
        let r = cluster
            .node("cl")
            .api
            .submit(
                &serde_json::json!({"to": "PE-VUCE", "leg": "ephyto"}),
                &[Upload { path: &doc, mime_type: "application/xml" }],
            )
            .await
            .unwrap();
        let id = r["message_id"].as_str().unwrap().to_owned();
        let state = cluster.node("cl").api.wait_settled(&id, Duration::from_secs(60)).await.unwrap()["state"].clone();
        (id, state)
    };
    let (delivered, state) = send(&cluster).await;
    assert_eq!(state, "acknowledged");
    let saved = cluster.take_down("pe").await;
    let (failed, state) = send(&cluster).await;
    assert_eq!(state, "failed");
    let (also_failed, state) = send(&cluster).await;
    assert_eq!(state, "failed");
    cluster.restart("pe", saved, |_| {}).await;
    // Something refused, for the Refused page.
    let _ = cluster.post_raw("cl", &multipart_content_type(), multipart("<not-soap/>", &[])).await;

    // `localhost`: browsers keep `Secure` cookies on plain HTTP only for it (a secure context).
    let console = format!("http://localhost:{}", cluster.node("cl").node.console_addr.unwrap().port());
    let driver = start_driver();
    let client = browser(&driver).await;
    log_in(&client, &console, "ana", "wrong-password").await;
    wait_text(&client, "Wrong user name or password").await;
    shot(&client, "login").await;
    log_in(&client, &console, "ana", "ana-password-123").await;
    assert!(arrived(&client, "/messages").await);
    let page = wait_text(&client, &failed).await;
    assert!(page.contains(&delivered), "{page}");
    shot(&client, "messages").await;

    // Search: failed messages only.
    client.find(Locator::Id("state")).await.unwrap().select_by_value("failed").await.unwrap();
    client.find(Locator::Id("search")).await.unwrap().click().await.unwrap();
    for _ in 0..100 {
        if client.current_url().await.unwrap().query().is_some_and(|q| q.contains("state=failed")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page = wait_text(&client, &failed).await;
    assert!(page.contains(&failed) && !page.contains(&delivered), "{page}");

    // Open it: history, the partner's silence, the resend form.
    client.find(Locator::LinkText(&failed)).await.unwrap().click().await.unwrap();
    let page = wait_text(&client, "retries_exhausted").await;
    assert!(page.contains("EBMS:0301"), "{page}");
    shot(&client, "message").await;

    // Download the payload (the browser's own request, with its session cookie).
    let href = client.find(Locator::Css("a.download")).await.unwrap().attr("href").await.unwrap().unwrap();
    let downloaded = client
        .execute_async(
            "const done = arguments[arguments.length - 1]; fetch(arguments[0]).then(r => r.text()).then(done);",
            vec![href.into()],
        )
        .await
        .unwrap();
    assert_eq!(downloaded.as_str().unwrap().as_bytes(), document.as_slice(), "the payload as submitted");

    // Resend the identical message; the partner is back.
    client.find(Locator::Id("resend-button")).await.unwrap().click().await.unwrap();
    wait_text(&client, "Resent.").await;
    let status = cluster.node("cl").api.wait_settled(&failed, Duration::from_secs(60)).await.unwrap();
    assert_eq!(status["state"], "acknowledged", "{status}");
    // The other failed one, through "resend all" on the filtered list.
    client.goto(&format!("{console}/messages?state=failed")).await.unwrap();
    wait_text(&client, &also_failed).await;
    client.find(Locator::Css("#resend-filtered button")).await.unwrap().click().await.unwrap();
    wait_text(&client, "Resent 1 failed message.").await;
    let status = cluster.node("cl").api.wait_settled(&also_failed, Duration::from_secs(60)).await.unwrap();
    assert_eq!(status["state"], "acknowledged", "{status}");

    // Partners: the connection test.
    client.goto(&format!("{console}/partners")).await.unwrap();
    wait_text(&client, "cl-pe").await;
    shot(&client, "partners").await;
    client
        .find(Locator::Css("form[action='/partners/test']:has(input[value='cl-pe']) button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&client, "Connection test passed").await;

    for (path, name, expect) in [
        ("/certificates", "certificates", "partner"),
        ("/refused", "refused", "not-soap"),
        ("/alerts", "alerts", "partner_unreachable"),
        ("/audit", "audit", "resend"),
        ("/deliveries", "deliveries", "no [[delivery]] rule"),
    ] {
        client.goto(&format!("{console}{path}")).await.unwrap();
        wait_text(&client, expect).await;
        shot(&client, name).await;
    }

    // An operator acknowledges the active alert; it stays active, marked with who.
    client.goto(&format!("{console}/alerts")).await.unwrap();
    client.find(Locator::Css("form[action='/alerts/acknowledge'] button")).await.unwrap().click().await.unwrap();
    // Still on /alerts: wait for the answer to the form, not for the path.
    let page = wait_text(&client, "ana 20").await;
    assert!(page.contains("disk_low") && !page.contains("Acknowledge\n"), "{page}");

    // A form that did not come from a console page (no CSRF token) changes nothing.
    client
        .execute(
            "document.body.insertAdjacentHTML('beforeend', '<form id=forged method=post action=/message/resend><input name=id value=x><input name=mode value=identical></form>'); document.getElementById('forged').submit();",
            vec![],
        )
        .await
        .unwrap();
    wait_text(&client, "CSRF token missing or wrong").await;
    client.goto(&format!("{console}/users")).await.unwrap();
    wait_text(&client, "This needs the admin role").await;

    // Log out: the session is gone.
    client.goto(&format!("{console}/messages")).await.unwrap();
    client.find(Locator::Id("logout")).await.unwrap().click().await.unwrap();
    assert!(arrived(&client, "/login").await);
    client.goto(&format!("{console}/messages")).await.unwrap();
    assert!(arrived(&client, "/login").await, "logged out");

    // An admin sees the users; a viewer cannot resend.
    log_in(&client, &console, "root", "root-password-123").await;
    assert!(arrived(&client, "/messages").await);
    client.goto(&format!("{console}/users")).await.unwrap();
    wait_text(&client, "vio").await;
    shot(&client, "users").await;
    client.find(Locator::Id("logout")).await.unwrap().click().await.unwrap();
    assert!(arrived(&client, "/login").await);
    log_in(&client, &console, "vio", "vio-password-123").await;
    assert!(arrived(&client, "/messages").await);
    client.goto(&format!("{console}/messages?state=acknowledged")).await.unwrap();
    let page = wait_text(&client, &delivered).await;
    assert!(!page.contains("Resend all"));
    let audit = ap.store.audit_log(None, 100).await.unwrap();
    assert!(audit.iter().any(|e| e.actor == "ana" && e.action == "resend" && e.target == failed));
    assert!(audit.iter().any(|e| e.actor == "ana" && e.action == "csrf_refused"));
    assert!(audit.iter().any(|e| e.actor == "ana" && e.action == "login_failed"));
    assert!(audit.iter().any(|e| e.actor == "ana" && e.action == "alert_acknowledged" && e.target == "disk_low"));
    client.close().await.unwrap();
    cluster.stop().await;
}
