//! Interop with an implementation we did not write: the Python `as4` package (PyPI, pinned in
//! conformance/peers/python-as4/requirements.txt), under edelivery-1.15 cryptography with its
//! Peppol profile, both directions over HTTPS, signed receipts checked on both sides.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;
use ventanilla::backend::client::{ApiClient, Upload};
use ventanilla::config::{As4Config, BackendConfig, Config, KeyConfig, KeyPair, SecurityConfig};
use ventanilla::pki::trust::RevocationPolicy;

const VT: &str = "PVT000001";
const PY: &str = "PPY000001";
const PEPPOL_AP: &str = "urn:fdc:peppol.eu:2017:identifiers:ap";
const PROCESS: &str = "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0";
const ACTION: &str = "busdox-docid-qns::urn:oasis:names:specification:ubl:schema:xsd:Invoice-2::Invoice##urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0::2.1";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The peer's virtualenv, made once (pip downloads are cached in the home folder).
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let venv = repo().join("target/peers/python-as4");
        let python = venv.join("bin/python");
        if !python.exists() {
            let status =
                Command::new("python3").arg("-m").arg("venv").arg(&venv).status().expect("python3 is installed");
            assert!(status.success(), "cannot create the virtualenv");
        }
        let status = Command::new(&python)
            .args(["-m", "pip", "install", "-q", "-r"])
            .arg(repo().join("conformance/peers/python-as4/requirements.txt"))
            .status()
            .unwrap();
        assert!(status.success(), "cannot install the pinned `as4` package");
        python
    })
}

fn peer() -> Command {
    let mut c = Command::new(python());
    c.arg(repo().join("conformance/peers/python-as4/peer.py"));
    c
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Setup {
    dir: tempfile::TempDir,
    node: ventanilla::node::Node,
    api: ApiClient,
    _python: Killed,
    received: PathBuf,
}

impl Setup {
    fn certs(&self) -> PathBuf {
        self.dir.path().join("certs/demo")
    }
}

fn pair(certs: &Path, name: &str) -> KeyPair {
    KeyPair {
        key: Some(certs.join(format!("{name}.key"))),
        cert: Some(certs.join(format!("{name}.pem"))),
        pkcs12: None,
        password_env: None,
        password_file: None,
    }
}

/// A Ventanilla node for party PVT000001 and the Python peer PPY000001 serving HTTPS, on one
/// edelivery-1.15 P-Mode that speaks Peppol's header values. Peppol uses one certificate for
/// signing and encryption: CL's RSA signing certificate here, PE's for the peer.
async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs/demo");
    ventanilla::pki::demo::write_demo_pki(&certs, &["cl", "pe", "co"]).unwrap();
    let received = dir.path().join("python-received");
    let mut child = peer()
        .args(["serve", "--party", PY, "--partner", VT, "--port", "0"])
        .arg("--key")
        .arg(certs.join("pe-sign-rsa.key"))
        .arg("--cert")
        .arg(certs.join("pe-sign-rsa.pem"))
        .arg("--partner-cert")
        .arg(certs.join("cl-sign-rsa.pem"))
        .arg("--tls-cert")
        .arg(certs.join("pe-tls.pem"))
        .arg("--tls-key")
        .arg(certs.join("pe-tls.key"))
        .arg("--out-dir")
        .arg(&received)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let python_port: u16 =
        line.trim().rsplit(' ').next().unwrap().parse().unwrap_or_else(|_| panic!("peer said {line:?}"));
    let pmodes = dir.path().join("pmodes");
    std::fs::create_dir_all(&pmodes).unwrap();
    std::fs::write(
        pmodes.join("peppol-python.toml"),
        format!(
            r#"id = "peppol-python"
profile = "edelivery-1.15"
agreement = "urn:fdc:peppol.eu:2017:agreements:tia:ap_provider"
[[party]]
id = "{VT}"
type = "{PEPPOL_AP}"
endpoint = "https://127.0.0.1:1/as4"
sign_cert = "../certs/demo/cl-sign-rsa.pem"
enc_cert = "../certs/demo/cl-sign-rsa.pem"
[[party]]
id = "{PY}"
type = "{PEPPOL_AP}"
endpoint = "https://127.0.0.1:{python_port}/as4"
sign_cert = "../certs/demo/pe-sign-rsa.pem"
enc_cert = "../certs/demo/pe-sign-rsa.pem"
[[leg]]
name = "invoice"
service = "{PROCESS}"
service_type = "cenbii-procid-ubl"
action = "{ACTION}"
compression = true
properties = {{ required = ["originalSender", "finalRecipient"] }}
[reliability]
retry = ["1s", "2s"]
"#
        ),
    )
    .unwrap();
    let as4 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token = "interop-token-0123456789".to_owned();
    let config = Config {
        party_id: VT.into(),
        host: "ap.vt.test".into(),
        data_dir: dir.path().join("data"),
        pmodes,
        allow_insecure_profile: false,
        pmode_reload: "1s".into(),
        as4: As4Config {
            listen: as4.local_addr().unwrap(),
            path: "/as4".into(),
            tls_cert: certs.join("cl-tls.pem"),
            tls_key: certs.join("cl-tls.key"),
            trust: certs.join("ca.pem"),
            max_message: "64MiB".into(),
            send_concurrency: 4,
        },
        backend: BackendConfig {
            listen: backend.local_addr().unwrap(),
            token: Some(token.clone()),
            token_file: None,
            token_env: None,
        },
        endpoints: Default::default(),
        keys: vec![KeyConfig {
            profile: "edelivery-1.15".into(),
            sign: pair(&certs, "cl-sign-rsa"),
            enc: pair(&certs, "cl-sign-rsa"),
        }],
        security: SecurityConfig {
            crls: vec![certs.join("ca.crl")],
            revocation: RevocationPolicy::FailClosed,
            ..SecurityConfig::default()
        },
        retention: Default::default(),
        store: Default::default(),
    };
    let node = ventanilla::node::Node::start_with(config, as4, backend).await.unwrap();
    let api = ApiClient::new(&format!("http://{}", node.backend_addr), &token);
    Setup { dir, node, api, _python: Killed(child), received }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ventanilla_sends_to_python_as4_and_verifies_its_receipt() {
    let s = setup().await;
    let certs = s.certs();
    // An SBDH-wrapped document, as the Peppol profile of `as4` requires of a payload.
    let sbdh = s.dir.path().join("sbdh.xml");
    let out = peer()
        .args(["sbdh", "--party", PY])
        .arg("--key")
        .arg(certs.join("pe-sign-rsa.key"))
        .arg("--cert")
        .arg(certs.join("pe-sign-rsa.pem"))
        .arg("--payload")
        .arg(repo().join("samples/ephyto/own/ephyto_CL-MX_851_issued.xml"))
        .arg("--out")
        .arg(&sbdh)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let metadata = serde_json::json!({
        "to": PY, "leg": "invoice",
        "properties": {
            "originalSender": {"value": "9932:1111111111", "type": "iso6523-actorid-upis"},
            "finalRecipient": {"value": "9932:2222222222", "type": "iso6523-actorid-upis"}
        }
    });
    let submitted = s.api.submit(&metadata, &[Upload { path: &sbdh, mime_type: "application/xml" }]).await.unwrap();
    let id = submitted["message_id"].as_str().unwrap().to_owned();
    let mut status = serde_json::Value::Null;
    for _ in 0..300 {
        status = s.api.status(&id).await.unwrap();
        if status["state"] == "acknowledged" || status["state"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(s.received.join("received.jsonl")).unwrap_or_default();
    assert_eq!(
        status["state"], "acknowledged",
        "Ventanilla verified the signed NRR receipt of `as4`: {status}\npeer log: {log}"
    );
    let record: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(record["ok"], true, "`as4` verified, decrypted and decompressed our message: {log}");
    assert_eq!(record["message_id"], id.as_str());
    assert_eq!(
        std::fs::read(s.received.join("0.xml")).unwrap(),
        std::fs::read(&sbdh).unwrap(),
        "payload byte-identical"
    );
    s.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_as4_sends_to_ventanilla_and_verifies_our_receipt() {
    let s = setup().await;
    let certs = s.certs();
    let url = format!("https://127.0.0.1:{}/as4", s.node.as4_addr.port());
    let send = |signer: &str| {
        peer()
            .args(["send", "--party", PY, "--partner", VT, "--url", &url])
            .arg("--key")
            .arg(certs.join(format!("{signer}.key")))
            .arg("--cert")
            .arg(certs.join(format!("{signer}.pem")))
            .arg("--partner-cert")
            .arg(certs.join("cl-sign-rsa.pem"))
            .arg("--ca")
            .arg(certs.join("ca.pem"))
            .arg("--payload")
            .arg(repo().join("samples/ephyto/own/ephyto_CL-MX_851_issued.xml"))
            .output()
            .unwrap()
    };
    let out = send("pe-sign-rsa");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "`as4` verified our signed NRR receipt: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let id = result["message_id"].as_str().unwrap();
    let received = s.api.received(id).await.unwrap();
    assert_eq!(received["state"], "delivered");
    let payload = String::from_utf8(s.api.download(id, 1).await.unwrap().to_vec()).unwrap();
    assert!(
        payload.contains("StandardBusinessDocument") && payload.contains("SPSCertificate"),
        "decrypted, decompressed SBDH"
    );

    // Signed with a certificate the P-Mode does not bind to the peer: our EBMS:0101, read by `as4`.
    let out = send("co-sign-rsa");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("0101"), "{stdout}");
    s.node.stop().await;
}
