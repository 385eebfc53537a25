//! The phase4 peer: `conformance/peers/phase4` (a Java harness on phase4-lib, pinned in its
//! pom.xml) compiled once with the Maven-resolved class path (downloads cached in ~/.m2), then
//! run as the sending access point against a Ventanilla AP.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The compiled harness: its class path.
pub struct Harness {
    classpath: String,
}

fn run(command: &mut Command, what: &str) -> Result<String, String> {
    let output = command.output().map_err(|e| format!("{what}: {e}"))?;
    if !output.status.success() {
        let tail: String = String::from_utf8_lossy(&output.stdout)
            .lines()
            .chain(String::from_utf8_lossy(&output.stderr).lines())
            .filter(|l| l.contains("ERROR") || l.contains("error"))
            .take(5)
            .collect::<Vec<_>>()
            .join(" | ");
        return Err(format!("{what} failed ({}): {tail}", output.status));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

impl Harness {
    /// Resolves the harness's dependencies with Maven and compiles it under `work`.
    pub fn build(repo: &Path, work: &Path) -> Result<Harness, String> {
        let project = repo.join("conformance/peers/phase4");
        // Absolute: Maven runs in the project folder.
        let out = std::path::absolute(work.join("phase4")).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
        let cp_file = out.join("classpath.txt");
        run(
            Command::new("mvn")
                .current_dir(&project)
                .args(["-B", "-q", "dependency:build-classpath"])
                .arg(format!("-Dmdep.outputFile={}", cp_file.display())),
            "mvn dependency:build-classpath",
        )?;
        let deps = std::fs::read_to_string(&cp_file).map_err(|e| e.to_string())?;
        let classes = out.join("classes");
        run(
            Command::new("javac")
                .arg("-d")
                .arg(&classes)
                .arg("-cp")
                .arg(deps.trim())
                .arg(project.join("src/main/java/ventanilla/peer/Phase4Peer.java")),
            "javac",
        )?;
        Ok(Harness { classpath: format!("{}:{}", classes.display(), deps.trim()) })
    }

    /// The harness run as the sending access point (`send` or `load`) for `message`.
    fn sender(&self, mode: &str, message: &Phase4Message<'_>) -> Command {
        let certs = message.certs;
        let pem = |name: &str| certs.join(name).display().to_string();
        let (sign, enc) =
            if message.profile == "edelivery-2.0" { ("sign-ed25519", "enc-x25519") } else { ("sign-rsa", "enc-rsa") };
        let mut command = Command::new("java");
        command
            .arg("-cp")
            .arg(&self.classpath)
            .arg("ventanilla.peer.Phase4Peer")
            .arg(mode)
            .args(["--endpoint", message.endpoint])
            .args(["--profile", message.profile])
            .args(["--key", &pem(&format!("{}-{sign}.key", message.from_code))])
            .args(["--cert", &pem(&format!("{}-{sign}.pem", message.from_code))])
            .args(["--ca", &pem("ca.pem")])
            .args(["--receiver-cert", &pem(&format!("{}-{enc}.pem", message.to_code))])
            .arg("--payload")
            .arg(message.payload)
            .args(["--from", message.from, "--to", message.to])
            .args(["--party-type", super::wire::PARTY_TYPE])
            .args(["--service", message.service, "--action", message.action])
            .args(["--agreement", message.agreement, "--pmode-id", message.pmode_id])
            .args(["--message-id", message.message_id])
            .args(["--variant", message.variant]);
        command
    }

    /// phase4 sending `count` messages after `warmup`, `concurrency` at a time, each with a
    /// fresh MessageId, with its default sender (a connection per message) or, `pooled`, one
    /// HTTP client with a connection pool (`make bench`). It prints `MEASURING` after the
    /// warm-up, then `LOAD ok=K failed=F seconds=S cpu-seconds=T`.
    pub fn load(
        &self,
        message: &Phase4Message<'_>,
        count: usize,
        warmup: usize,
        concurrency: usize,
        pooled: bool,
    ) -> Command {
        let mut command = self.sender("load", message);
        command.args(["--count", &count.to_string(), "--warmup", &warmup.to_string()]);
        command.args(["--concurrency", &concurrency.to_string(), "--pooled", &pooled.to_string()]);
        command
    }

    /// phase4 sends `payload` as one user message; returns whether phase4 got and verified a
    /// receipt, and the answer it got.
    pub fn send(&self, message: &Phase4Message<'_>) -> Result<Sent, String> {
        let output = self.sender("send", message).output().map_err(|e| format!("java: {e}"))?;
        // Exit 1 means no verified receipt, which a negative case expects; anything else is a
        // harness failure.
        if !matches!(output.status.code(), Some(0 | 1)) {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(format!("phase4 harness {}: {}", output.status, stderr.lines().last().unwrap_or_default()));
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        Ok(Sent {
            receipted: stdout.lines().any(|l| l == "RESULT SUCCESS"),
            result: stdout.lines().find_map(|l| l.strip_prefix("RESULT ")).unwrap_or("none").to_owned(),
            response: stdout.lines().find_map(|l| l.strip_prefix("RESPONSE ")).unwrap_or_default().to_owned(),
        })
    }
}

/// A running phase4 receiver (killed on drop).
pub struct Receiver {
    child: std::process::Child,
    pub url: String,
    pub out: PathBuf,
}

impl Receiver {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Harness {
    /// Starts phase4 receiving as `to_code` on `port`, for messages from `from` to `to` on the
    /// 1.15 link, with the demo PKI in `certs`; payloads are written to `out`.
    pub fn receive(
        &self,
        profile: &str,
        certs: &Path,
        port: u16,
        (from, to, to_code): (&str, &str, &str),
        (service, action, agreement, pmode_id): (&str, &str, &str, &str),
        out: &Path,
    ) -> Result<Receiver, String> {
        use std::io::BufRead;
        let pem = |name: String| certs.join(name).display().to_string();
        let (sign, enc) =
            if profile == "edelivery-2.0" { ("sign-ed25519", "enc-x25519") } else { ("sign-rsa", "enc-rsa") };
        let mut child = Command::new("java")
            .arg("-cp")
            .arg(&self.classpath)
            .arg("ventanilla.peer.Phase4Peer")
            .arg("receive")
            .args(["--profile", profile])
            .args(["--port", &port.to_string()])
            .args(["--tls-key", &pem(format!("{to_code}-tls.key")), "--tls-cert", &pem(format!("{to_code}-tls.pem"))])
            .args(["--sign-key", &pem(format!("{to_code}-{sign}.key"))])
            .args(["--sign-cert", &pem(format!("{to_code}-{sign}.pem"))])
            .args([
                "--enc-key",
                &pem(format!("{to_code}-{enc}.key")),
                "--enc-cert",
                &pem(format!("{to_code}-{enc}.pem")),
            ])
            .args(["--ca", &pem("ca.pem".into())])
            .args(["--from", from, "--to", to, "--party-type", super::wire::PARTY_TYPE])
            .args(["--service", service, "--action", action, "--agreement", agreement, "--pmode-id", pmode_id])
            .args(["--endpoint", &format!("https://127.0.0.1:{port}/as4")])
            .arg("--out")
            .arg(out)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("java: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let listening = lines.by_ref().map_while(Result::ok).find(|l| l.starts_with("LISTENING "));
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let receiver = Receiver { child, url: format!("https://127.0.0.1:{port}/as4"), out: out.to_owned() };
        match listening {
            Some(_) => Ok(receiver),
            None => Err("the phase4 receiver exited before listening".into()),
        }
    }
}

/// What phase4 reported.
pub struct Sent {
    pub receipted: bool,
    pub result: String,
    /// The SUT's answer as phase4 got it.
    pub response: String,
}

/// One message for phase4 to send.
pub struct Phase4Message<'a> {
    /// `edelivery-1.15` (RSA) or `edelivery-2.0` (Ed25519, X25519/HKDF).
    pub profile: &'a str,
    pub endpoint: &'a str,
    pub certs: &'a Path,
    pub from_code: &'a str,
    pub to_code: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub service: &'a str,
    pub action: &'a str,
    pub agreement: &'a str,
    pub pmode_id: &'a str,
    pub message_id: &'a str,
    pub payload: &'a PathBuf,
    /// `""`, `ski`, `issuer-serial`, `uncompressed` or `unencrypted`.
    pub variant: &'a str,
}
