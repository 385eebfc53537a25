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

    /// phase4 sends `payload` as one user message; returns whether phase4 got and verified a
    /// receipt, and the answer it got.
    pub fn send(&self, message: &Phase4Message<'_>) -> Result<Sent, String> {
        let certs = message.certs;
        let pem = |name: &str| certs.join(name).display().to_string();
        let output = Command::new("java")
            .arg("-cp")
            .arg(&self.classpath)
            .arg("ventanilla.peer.Phase4Peer")
            .arg("send")
            .args(["--endpoint", message.endpoint])
            .args(["--key", &pem(&format!("{}-sign-rsa.key", message.from_code))])
            .args(["--cert", &pem(&format!("{}-sign-rsa.pem", message.from_code))])
            .args(["--ca", &pem("ca.pem")])
            .args(["--receiver-cert", &pem(&format!("{}-enc-rsa.pem", message.to_code))])
            .arg("--payload")
            .arg(message.payload)
            .args(["--from", message.from, "--to", message.to])
            .args(["--party-type", super::wire::PARTY_TYPE])
            .args(["--service", message.service, "--action", message.action])
            .args(["--agreement", message.agreement, "--pmode-id", message.pmode_id])
            .args(["--message-id", message.message_id])
            .args(["--variant", message.variant])
            .output()
            .map_err(|e| format!("java: {e}"))?;
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

/// What phase4 reported.
pub struct Sent {
    pub receipted: bool,
    pub result: String,
    /// The SUT's answer as phase4 got it.
    pub response: String,
}

/// One message for phase4 to send.
pub struct Phase4Message<'a> {
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
