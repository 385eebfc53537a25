//! Revocation by OCSP against an independent responder (`openssl ocsp`), with caching and
//! the fail-closed policy when the responder cannot be reached.

use openssl::pkey::PKey;
use openssl::x509::X509;
use std::sync::Arc;
use std::time::Duration;
use ventanilla::pki::trust::{OcspSettings, RevocationPolicy, TrustError, TrustStore};
use ventanilla::transport::ocsp_http::HttpOcsp;
use ventanilla_testkit::demo_pki::{Authority, Usage};

fn index_line(cert: &X509, status: &str) -> String {
    let serial = cert.serial_number().to_bn().unwrap().to_hex_str().unwrap().to_string();
    let serial = if serial.len() % 2 == 1 { format!("0{serial}") } else { serial };
    let revoked = if status == "R" { "250101000000Z" } else { "" };
    format!("{status}\t301231235959Z\t{revoked}\t{serial}\tunknown\t/CN={serial}\n")
}

struct Responder(std::process::Child);

impl Drop for Responder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn ocsp_good_revoked_cached_and_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("OCSP test CA").unwrap();
    let issue = |name: &str| ca.issue(name, &PKey::generate_ed25519().unwrap(), Usage::Signing, 30).unwrap();
    let (good, bad, other) = (issue("good"), issue("bad"), issue("other"));
    std::fs::write(dir.path().join("ca.pem"), ca.cert_pem().unwrap()).unwrap();
    std::fs::write(dir.path().join("ca.key"), ca.key_pem().unwrap()).unwrap();
    std::fs::write(
        dir.path().join("index.txt"),
        index_line(&good, "V") + &index_line(&bad, "R") + &index_line(&other, "V"),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let responder = Responder(
        std::process::Command::new("openssl")
            .args(["ocsp", "-port", &port.to_string(), "-index"])
            .arg(dir.path().join("index.txt"))
            .arg("-rsigner")
            .arg(dir.path().join("ca.pem"))
            .arg("-rkey")
            .arg(dir.path().join("ca.key"))
            .arg("-CA")
            .arg(dir.path().join("ca.pem"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("responder.log")).unwrap())
            .spawn()
            .expect("openssl is installed"),
    );
    // The responder serves one connection at a time: wait for its banner rather than probing.
    for _ in 0..100 {
        let log = std::fs::read_to_string(dir.path().join("responder.log")).unwrap_or_default();
        if log.contains("waiting for OCSP client connections") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let settings = OcspSettings::new(
        Arc::new(HttpOcsp { timeout: Duration::from_secs(2) }),
        Some(format!("http://127.0.0.1:{port}/")),
        Duration::from_secs(3600),
    );
    let store =
        TrustStore::load(&dir.path().join("ca.pem"), &[], RevocationPolicy::FailClosed).unwrap().with_ocsp(settings);
    assert_eq!(store.validate(&good, &[]), Ok(Vec::new()));
    match store.validate(&bad, &[]) {
        Err(TrustError::Revoked { reason, .. }) => assert!(reason.contains("OCSP"), "{reason}"),
        other => panic!("{other:?}"),
    }
    drop(responder);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(store.validate(&good, &[]), Ok(Vec::new()), "answered from the cache");
    match store.validate(&other, &[]) {
        Err(TrustError::RevocationUnknown { reason, .. }) => assert!(reason.contains("unreachable"), "{reason}"),
        other => panic!("fail-closed when the responder is down: {other:?}"),
    }
    // What the console's Certificates page shows: the last answer for each certificate.
    let results = store.ocsp_results();
    let status_of = |name: &str| {
        results.iter().find(|r| r.subject.contains(&format!("CN={name}"))).map(|r| r.status.clone()).unwrap_or_default()
    };
    assert_eq!(status_of("good"), "good", "{results:?}");
    assert!(status_of("bad").starts_with("revoked"), "{results:?}");
    assert!(status_of("other").starts_with("unknown") && status_of("other").contains("unreachable"), "{results:?}");
}
