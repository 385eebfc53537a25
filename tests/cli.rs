//! The command line as an operator uses it.

use std::process::Command;

fn ventanilla() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ventanilla"))
}

#[test]
fn pmode_check_accepts_the_shipped_links() {
    let out = ventanilla().args(["pmode", "check", concat!(env!("CARGO_MANIFEST_DIR"), "/pmodes")]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for link in ["cl-co", "cl-mx", "cl-pe", "co-mx", "co-pe", "mx-pe"] {
        assert!(stdout.contains(&format!("ok: {link} ")), "{stdout}");
    }
}

#[test]
fn pmode_check_reports_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/pmodes/cl-pe.toml")).unwrap();
    let bad = good.replace(
        "retry            = [\"1m\", \"5m\", \"15m\", \"1h\", \"4h\"]",
        "retry            = [\"1m\", \"often\"]",
    );
    let file = dir.path().join("cl-pe.toml");
    std::fs::write(&file, &bad).unwrap();
    let out = ventanilla().args(["pmode", "check"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let line = bad.lines().position(|l| l.contains("often")).unwrap() + 1;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:{line}: reliability.retry: 'often' is not a duration", file.display())),
        "{stderr}"
    );
}

#[test]
fn send_dry_run_prints_the_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cl.toml");
    std::fs::write(
        &config,
        format!(
            "party_id = \"CL-SICEX\"\nhost = \"ap.cl.test\"\ndata_dir = \"data\"\npmodes = \"{0}/pmodes\"\nallow_insecure_profile = true\n[as4]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"x.pem\"\ntls_key = \"x.key\"\ntrust = \"ca.pem\"\n[backend]\nlisten = \"127.0.0.1:0\"\ntoken = \"0123456789abcdef0123\"\n[[keys]]\nprofile = \"edelivery-1.15\"\nsign = {{ key = \"{0}/certs/demo/cl-sign-rsa.key\", cert = \"{0}/certs/demo/cl-sign-rsa.pem\" }}\nenc = {{ key = \"{0}/certs/demo/cl-enc-rsa.key\", cert = \"{0}/certs/demo/cl-enc-rsa.pem\" }}\n[security]\ntruststore = \"{0}/certs/demo/ca.pem\"\n",
            env!("CARGO_MANIFEST_DIR")
        ),
    )
    .unwrap();
    let doc = concat!(env!("CARGO_MANIFEST_DIR"), "/samples/ephyto/own/ephyto_CL-MX_851_issued.xml");
    let out = ventanilla()
        .args(["send", "--dry-run", "--to", "MX-VUCEM", "--leg", "ephyto", "--config"])
        .arg(&config)
        .arg(doc)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("<eb:Action>SPSCertificate</eb:Action>") && stdout.contains(">MX-VUCEM</eb:PartyId>"),
        "{stdout}"
    );
}

#[test]
fn verify_fails_on_the_broken_phase4_samples() {
    let dir =
        concat!(env!("CARGO_MANIFEST_DIR"), "/conformance/samples/phase4/phase4-test/src/test/resources/testfiles/");
    for (file, reason) in [
        ("WrongSigningAlgorithm.xml", "SignatureMethod 'http://www.randomcrypt.com/random'"),
        ("WrongSigningDigestAlgorithm.xml", "DigestMethod 'http://www.randomdigest.com/randomdigest'"),
    ] {
        let out = ventanilla().arg("verify").arg(format!("{dir}{file}")).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{file}: {stdout}");
        assert!(stdout.contains("INVALID") && stdout.contains(reason), "{file}: {stdout}");
    }
}
