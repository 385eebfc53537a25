//! A legacy IOP node for the demo and tests (TEST ONLY): `conformance/peers/iop/iop_peer.py`,
//! our own implementation of docs/iop.md in Python with `xmlsec1`, run as a child process,
//! and the P-Mode of a link between one of our access points and it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub type PeerError = Box<dyn std::error::Error + Send + Sync>;

/// The legacy partner of the demo: a single window that has not moved to AS4 yet.
pub const CODE: &str = "ec";
pub const PARTY: &str = "EC-VUE";
pub const IOP_ID: &str = "VUCEEC";
pub const COUNTRY: &str = "EC";
pub const USER: &str = "vuceec";
/// The IOP id and user of the access point that keeps a link with it.
pub const OUR_USER_SUFFIX: &str = "-iop";
pub const CODIGO_INTERACCION: &str = "IOP.MC.101";
pub const ID_SERVICIO: &str = "IOP.FS.001";

/// How the peer answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Rcb,
    Err,
    Fault,
}

impl Answer {
    fn as_str(self) -> &'static str {
        match self {
            Answer::Rcb => "rcb",
            Answer::Err => "err",
            Answer::Fault => "fault",
        }
    }
}

/// Where things are: the peer script and the demo PKI folder (`{code}-tls.pem`, `ca.pem`...).
#[derive(Debug, Clone)]
pub struct Setup {
    pub script: PathBuf,
    pub certs: PathBuf,
    pub work: PathBuf,
}

impl Setup {
    /// The script in a source tree (`repo` holds `conformance/`).
    pub fn new(repo: &Path, certs: &Path, work: &Path) -> Setup {
        Setup { script: repo.join("conformance/peers/iop/iop_peer.py"), certs: certs.to_owned(), work: work.to_owned() }
    }

    /// The password file our access point reads for `party` (mode 0600), written on first use.
    pub fn password_file(&self, party: &str) -> Result<PathBuf, PeerError> {
        // Absolute: the P-Mode that names it is read from another folder.
        let dir = std::path::absolute(self.work.join("iop"))?;
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{}.password", party.to_lowercase()));
        if !path.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
            std::io::Write::write_all(&mut file, format!("iop-{}\n", uuid::Uuid::new_v4().simple()).as_bytes())?;
        }
        Ok(path)
    }

    fn password(&self, party: &str) -> Result<String, PeerError> {
        Ok(std::fs::read_to_string(self.password_file(party)?)?.trim_end().to_owned())
    }
}

/// A running legacy node.
pub struct LegacyPeer {
    child: Child,
    pub port: u16,
    pub inbox: PathBuf,
}

impl LegacyPeer {
    /// Starts the node on `port` (0: any) and waits until it listens. `ours` is the party id
    /// of the access point that sends to it (its user and password).
    pub fn start(setup: &Setup, port: u16, answer: Answer, ours: &str) -> Result<LegacyPeer, PeerError> {
        let inbox = setup.work.join("iop/inbox");
        let ready = setup.work.join(format!("iop/ready-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&inbox)?;
        let cert = |what: &str| setup.certs.join(format!("{CODE}-{what}"));
        let child = Command::new("python3")
            .arg(&setup.script)
            .arg("serve")
            .args(["--port", &port.to_string()])
            .arg("--tls-cert")
            .arg(cert("tls.pem"))
            .arg("--tls-key")
            .arg(cert("tls.key"))
            .args(["--id", IOP_ID, "--country", COUNTRY, "--user", &user_of(ours)])
            .args(["--password-env", "IOP_PEER_PASSWORD", "--answer", answer.as_str()])
            .arg("--inbox")
            .arg(&inbox)
            .arg("--ca")
            .arg(setup.certs.join("ca.pem"))
            .arg("--ready")
            .arg(&ready)
            .env("IOP_PEER_PASSWORD", setup.password(ours)?)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", setup.script.display()))?;
        let mut peer = LegacyPeer { child, port: 0, inbox };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                peer.port = text.trim().parse()?;
                let _ = std::fs::remove_file(&ready);
                return Ok(peer);
            }
            if let Some(status) = peer.child.try_wait()? {
                return Err(format!("the legacy IOP peer exited at start: {status}").into());
            }
            if std::time::Instant::now() > deadline {
                return Err("the legacy IOP peer did not start within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}{}", self.port, crate::iop::DEFAULT_PATH)
    }

    /// The certificate the node accepted for `transaction`, if any.
    pub fn received(&self, transaction: &str) -> Option<Vec<u8>> {
        std::fs::read(self.inbox.join(format!("{transaction}.xml"))).ok()
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LegacyPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The UsernameToken user of a party.
pub fn user_of(party: &str) -> String {
    if party == PARTY { USER.to_owned() } else { format!("{}{OUR_USER_SUFFIX}", party.to_lowercase()) }
}

/// The IOP id of one of our parties: `VUCE` + its country code.
pub fn iop_id_of(country: &str) -> String {
    format!("VUCE{}", country.to_uppercase())
}

/// What the legacy node sends to one of our access points.
#[derive(Debug, Clone)]
pub struct Sending<'a> {
    pub url: String,
    pub to_party: &'a str,
    pub to_country: &'a str,
    pub document: &'a Path,
    pub transaction: Option<&'a str>,
    /// Overrides the password (a wrong one for tests).
    pub password: Option<&'a str>,
    pub algorithm: &'a str,
}

/// Sends as the legacy node (`iop_peer.py send`); returns its JSON report of the answer.
pub fn send(setup: &Setup, sending: &Sending<'_>) -> Result<serde_json::Value, PeerError> {
    let cert = |what: &str| setup.certs.join(format!("{CODE}-{what}"));
    let password = match sending.password {
        Some(p) => p.to_owned(),
        None => setup.password(PARTY)?,
    };
    let mut command = Command::new("python3");
    command
        .arg(&setup.script)
        .arg("send")
        .args(["--url", &sending.url])
        .arg("--cafile")
        .arg(setup.certs.join("ca.pem"))
        .args(["--user", USER, "--password-env", "IOP_PEER_PASSWORD"])
        .args(["--from-id", IOP_ID, "--from-country", COUNTRY])
        .args(["--to-id", &iop_id_of(sending.to_country), "--to-country", sending.to_country])
        .arg("--document")
        .arg(sending.document)
        .arg("--sign-key")
        .arg(cert("sign-rsa.key"))
        .arg("--sign-cert")
        .arg(cert("sign-rsa.pem"))
        .args(["--algorithm", sending.algorithm])
        .args(["--codigo-interaccion", CODIGO_INTERACCION, "--id-servicio", ID_SERVICIO])
        .env("IOP_PEER_PASSWORD", password);
    if let Some(t) = sending.transaction {
        command.args(["--transaction", t]);
    }
    let _ = sending.to_party;
    let output = command.output()?;
    if !output.status.success() {
        return Err(format!("iop_peer.py send failed: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// The P-Mode of the IOP link between our party (`code`, `party`) and the legacy node at
/// `peer_url`. Certificates and password files are named relative to the P-Mode folder,
/// which sits beside the demo PKI's `certs/demo`.
pub fn link_pmode(setup: &Setup, code: &str, party: &str, peer_url: &str) -> Result<String, PeerError> {
    let ours = setup.password_file(party)?;
    let theirs = setup.password_file(PARTY)?;
    let country = code.to_uppercase();
    Ok(format!(
        r#"# P-Mode of the {country} <-> Ecuador link over the legacy IOP (Ecuador has not moved to AS4 yet).
# To migrate: set the leg's transport to "as4" and add the AS4 certificates, on both sides.
id        = "{code}-ec-iop"
profile   = "edelivery-2.0"
agreement = "urn:pacific-alliance:iop:agreement:{code}-ec"

[[party]]
id               = "{party}"
type             = "urn:oasis:names:tc:ebcore:partyid-type:unregistered:pacific-alliance"
country          = "{country}"
endpoint         = "https://as4.{code}.pacific-alliance.example/as4"
iop_id           = "{our_iop}"
iop_username     = "{our_user}"
iop_password_file = "{ours}"
document_cert    = "../certs/demo/{code}-sign-rsa.pem"

[[party]]
id               = "{PARTY}"
type             = "urn:oasis:names:tc:ebcore:partyid-type:unregistered:pacific-alliance"
country          = "{COUNTRY}"
endpoint         = "{peer_url}"
iop_id           = "{IOP_ID}"
iop_username     = "{USER}"
iop_password_file = "{theirs}"
document_cert    = "../certs/demo/{CODE}-sign-rsa.pem"

[[leg]]
name      = "ephyto-iop"
service   = "urn:pacific-alliance:iop:service:ephyto"
action    = "EnvioCertificadoFitosanitario"
document  = "ephyto"
versions  = ["11"]
transport = "iop"

[iop]
codigo_interaccion = "{CODIGO_INTERACCION}"
id_servicio        = "{ID_SERVICIO}"
tipo_documento     = "FS"

[reliability]
retry = ["1s", "2s", "4s", "8s", "16s"]
"#,
        our_iop = iop_id_of(code),
        our_user = user_of(party),
        ours = ours.display(),
        theirs = theirs.display(),
    ))
}
