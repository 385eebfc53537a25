//! The Python `as4` peer (PyPI, pinned in conformance/peers/python-as4/requirements.txt):
//! a Ventanilla node for party PVT000001 and the peer PPY000001 serving HTTPS, on one
//! edelivery-1.15 P-Mode that speaks Peppol's header values (the package's only profile).
//! Peppol uses one certificate for signing and encryption: CL's RSA signing certificate for
//! Ventanilla here, PE's for the peer.

use crate::backend::client::{ApiClient, Upload};
use crate::config::{As4Config, BackendConfig, Config, KeyConfig, KeyPair, SecurityConfig};
use crate::pki::trust::RevocationPolicy;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const VT: &str = "PVT000001";
pub const PY: &str = "PPY000001";
const PEPPOL_AP: &str = "urn:fdc:peppol.eu:2017:identifiers:ap";
const PROCESS: &str = "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0";
const ACTION: &str = "busdox-docid-qns::urn:oasis:names:specification:ubl:schema:xsd:Invoice-2::Invoice##urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0::2.1";

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The peer's virtualenv under `repo/target/peers/python-as4`, made and filled once per
/// process (pip downloads are cached in the home folder). Serialized: two peers starting at
/// once (parallel tests) must not both create it.
pub fn python(repo: &Path) -> Result<PathBuf, Error> {
    static READY: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);
    let mut ready = READY.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(python) = ready.as_ref() {
        return Ok(python.clone());
    }
    let python = make_venv(repo)?;
    *ready = Some(python.clone());
    Ok(python)
}

fn make_venv(repo: &Path) -> Result<PathBuf, Error> {
    let venv = repo.join("target/peers/python-as4");
    let python = venv.join("bin/python");
    if !python.exists() {
        let status = Command::new("python3").arg("-m").arg("venv").arg(&venv).status()?;
        if !status.success() {
            return Err("cannot create the virtualenv (python3-venv)".into());
        }
    }
    let status = Command::new(&python)
        .args(["-m", "pip", "install", "-q", "-r"])
        .arg(repo.join("conformance/peers/python-as4/requirements.txt"))
        .status()?;
    if !status.success() {
        return Err("cannot install the pinned `as4` package".into());
    }
    Ok(python)
}

/// `peer.py` run by the virtualenv's python.
pub fn peer(repo: &Path, python: &Path) -> Command {
    let mut c = Command::new(python);
    c.arg(repo.join("conformance/peers/python-as4/peer.py"));
    c
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Ventanilla node and a serving Python peer.
pub struct PythonPair {
    pub dir: PathBuf,
    pub node: crate::node::Node,
    pub api: ApiClient,
    pub received: PathBuf,
    repo: PathBuf,
    python: PathBuf,
    _peer: Killed,
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

impl PythonPair {
    /// Starts the peer and the node under `dir` (emptied first).
    pub async fn start(repo: &Path, dir: &Path) -> Result<PythonPair, Error> {
        let python = python(repo)?;
        let _ = std::fs::remove_dir_all(dir);
        let certs = dir.join("certs/demo");
        ventanilla_testkit::demo_pki::write_demo_pki(&certs, &["cl", "pe", "co"])?;
        let received = dir.join("python-received");
        let mut child = peer(repo, &python)
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
            .spawn()?;
        let mut line = String::new();
        let stdout = child.stdout.take().ok_or("the peer has no stdout")?;
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let peer_guard = Killed(child);
        let python_port: u16 =
            line.trim().rsplit(' ').next().unwrap_or_default().parse().map_err(|_| format!("peer said {line:?}"))?;
        let pmodes = dir.join("pmodes");
        std::fs::create_dir_all(&pmodes)?;
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
        )?;
        let as4 = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let token = format!("interop-token-{}", uuid::Uuid::new_v4().simple());
        let config = Config {
            party_id: VT.into(),
            host: "ap.vt.test".into(),
            data_dir: dir.join("data"),
            pmodes,
            allow_insecure_profile: false,
            pmode_reload: crate::config::Interval::secs(1),
            shutdown_grace: crate::config::Interval::secs(10),
            as4: As4Config {
                listen: as4.local_addr()?,
                path: "/as4".into(),
                tls_cert: certs.join("cl-tls.pem"),
                tls_key: certs.join("cl-tls.key"),
                trust: certs.join("ca.pem"),
                max_message: crate::config::ByteSize(64 << 20),
                send_concurrency: 4,
                connections: Default::default(),
            },
            backend: BackendConfig {
                listen: backend.local_addr()?,
                token: Some(token.clone()),
                token_file: None,
                token_env: None,
                tls_cert: None,
                tls_key: None,
                client_ca: None,
                allow_plain_http: false,
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
            limits: Default::default(),
            store: Default::default(),

            console: None,
            health: Default::default(),
            alerts: Default::default(),
            logging: Default::default(),
            deliveries: Vec::new(),
            submit_folder: None,
            iop: Default::default(),
        };
        let node = crate::node::Node::start_with(config, as4, backend).await?;
        let api = ApiClient::new(&format!("http://{}", node.backend_addr), &token);
        Ok(PythonPair { dir: dir.to_owned(), node, api, received, repo: repo.to_owned(), python, _peer: peer_guard })
    }

    pub fn certs(&self) -> PathBuf {
        self.dir.join("certs/demo")
    }

    pub fn peer(&self) -> Command {
        peer(&self.repo, &self.python)
    }

    /// `as4` sends `payload` to the node signed with `<signer>.key`; returns its exit status
    /// and what it printed (a JSON result with the message id on success).
    pub fn peer_sends(&self, signer: &str, payload: &Path) -> Result<(Option<i32>, String), Error> {
        let certs = self.certs();
        let url = format!("https://127.0.0.1:{}/as4", self.node.as4_addr.port());
        let out = self
            .peer()
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
            .arg(payload)
            .output()?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        Ok((out.status.code(), text))
    }

    /// The node sends `document` (wrapped in an SBDH, as the Peppol profile of `as4`
    /// requires) to the peer; returns the message id, its final state and the SBDH file.
    pub async fn node_sends(&self, document: &Path) -> Result<(String, serde_json::Value, PathBuf), Error> {
        let certs = self.certs();
        let sbdh = self.dir.join(format!("sbdh-{}.xml", uuid::Uuid::new_v4().simple()));
        let out = self
            .peer()
            .args(["sbdh", "--party", PY])
            .arg("--key")
            .arg(certs.join("pe-sign-rsa.key"))
            .arg("--cert")
            .arg(certs.join("pe-sign-rsa.pem"))
            .arg("--payload")
            .arg(document)
            .arg("--out")
            .arg(&sbdh)
            .output()?;
        if !out.status.success() {
            return Err(format!("peer.py sbdh: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        let metadata = serde_json::json!({
            "to": PY, "leg": "invoice",
            "properties": {
                "originalSender": {"value": "9932:1111111111", "type": "iso6523-actorid-upis"},
                "finalRecipient": {"value": "9932:2222222222", "type": "iso6523-actorid-upis"}
            }
        });
        let submitted = self.api.submit(&metadata, &[Upload { path: &sbdh, mime_type: "application/xml" }]).await?;
        let id = submitted["message_id"].as_str().unwrap_or_default().to_owned();
        let status = self.api.wait_settled(&id, Duration::from_secs(30)).await?;
        Ok((id, status, sbdh))
    }

    pub async fn stop(self) {
        self.node.stop().await;
    }
}
