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

/// A config for CL on the shipped P-Modes with the demo PKI, in `dir`.
fn demo_config(dir: &std::path::Path, party: &str, extra: &str) -> std::path::PathBuf {
    let certs = dir.join("certs/demo");
    ventanilla_testkit::demo_pki::write_demo_pki(&certs, &["cl", "co", "mx", "pe"]).unwrap();
    let pmodes = dir.join("pmodes");
    std::fs::create_dir_all(&pmodes).unwrap();
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/pmodes")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, pmodes.join(path.file_name().unwrap())).unwrap();
    }
    let c = certs.display();
    let text = format!(
        r#"party_id = "{party}"
data_dir = "data"
pmodes = "pmodes"
{extra}
[as4]
listen = "127.0.0.1:0"
tls_cert = "{c}/cl-tls.pem"
tls_key = "{c}/cl-tls.key"
trust = "{c}/ca.pem"
[backend]
listen = "127.0.0.1:0"
token = "0123456789abcdef0123"
[[keys]]
profile = "edelivery-1.15"
sign = {{ key = "{c}/cl-sign-rsa.key", cert = "{c}/cl-sign-rsa.pem" }}
enc = {{ key = "{c}/cl-enc-rsa.key", cert = "{c}/cl-enc-rsa.pem" }}
[[keys]]
profile = "edelivery-2.0"
sign = {{ key = "{c}/cl-sign-ed25519.key", cert = "{c}/cl-sign-ed25519.pem" }}
enc = {{ key = "{c}/cl-enc-x25519.key", cert = "{c}/cl-enc-x25519.pem" }}
[security]
crls = ["{c}/ca.crl"]
"#
    );
    let file = dir.join("ap.toml");
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn config_check_passes_a_good_config_and_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let good = demo_config(dir.path(), "CL-SICEX", "");
    let out = ventanilla().args(["config", "check"]).arg(&good).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("pmodes: 3 links for CL-SICEX: cl-co, cl-mx, cl-pe"), "{stdout}");
    // A party id no P-Mode names is an error (it used to be a warning at start).
    let typo = demo_config(dir.path(), "CL-SICES", "");
    let out = ventanilla().args(["config", "check"]).arg(&typo).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("party_id: 'CL-SICES' is a party of no P-Mode"));
    // serve refuses it too, before binding anything.
    let out = ventanilla().args(["serve", "--config"]).arg(&typo).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("party of no P-Mode"));
    // A misspelt store kind names file, line and key.
    let bad = demo_config(dir.path(), "CL-SICEX", "[store]\nkind = \"sqllite\"");
    let out = ventanilla().args(["config", "check"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{}:5: store.kind: unknown variant `sqllite`", bad.display())), "{stderr}");
}

/// Issue 10.7: keys are made 0600 by `certs demo`, `serve` keeps its data private (folders
/// 0700, database 0600) and warns about a key file others can read.
#[test]
fn files_and_secrets_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let out = ventanilla().args(["certs", "demo", "--out"]).arg(dir.path().join("pki")).output().unwrap();
    assert!(out.status.success());
    assert_eq!(mode(&dir.path().join("pki/ca.key")), 0o600);
    assert_eq!(mode(&dir.path().join("pki/cl-enc-x25519.key")), 0o600);

    let config = demo_config(dir.path(), "CL-SICEX", "");
    let tls_key = dir.path().join("certs/demo/cl-tls.key");
    std::fs::set_permissions(&tls_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let mut child = ventanilla().args(["serve", "--config"]).arg(&config).stderr(log).spawn().unwrap();
    let db = dir.path().join("data/messages.db");
    for _ in 0..200 {
        if db.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM: exit 0");
    assert_eq!(mode(&dir.path().join("data")), 0o700);
    assert_eq!(mode(&dir.path().join("data/inbound")), 0o700);
    assert_eq!(mode(&db), 0o600);
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(
        log.contains(&format!("as4.tls_key: {} is readable by everyone (mode 644); make it 0600", tls_key.display())),
        "{log}"
    );
}

/// Issue 10.9: a report piped into `head` ends quietly (no panic on the broken pipe).
#[test]
fn a_closed_pipe_ends_a_report_quietly() {
    use std::io::Read;
    let samples: Vec<std::path::PathBuf> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/samples/ephyto/own"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "xml"))
            .collect();
    let many: Vec<&std::path::PathBuf> = samples.iter().cycle().take(samples.len() * 100).collect();
    let mut child = ventanilla()
        .args(["payload", "check"])
        .args(many)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 64];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap(); // then the pipe closes
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Issue 10.9: `verify` on an encrypted message without the key checks what it can (the
/// signature over the header and Body) and says the attachments were not checked, instead of
/// reporting a digest mismatch over ciphertext.
#[test]
fn verify_judges_what_it_can_check_of_an_encrypted_message() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("pki");
    ventanilla_testkit::demo_pki::write_demo_pki(&certs, &["cl", "pe"]).unwrap();
    let signer = ventanilla_testkit::wire::credential(&certs, "cl-sign-ed25519").unwrap();
    let recipient = certs.join("pe-enc-x25519.pem");
    let um = ventanilla_testkit::wire::user_message("encrypted@cli.test");
    let protection = ventanilla_testkit::wire::Protection::edelivery(&signer, &recipient);
    let body = ventanilla_testkit::wire::protected_message(&um, b"<doc/>", &protection).unwrap();
    let file = dir.path().join("message.mime");
    let mut bytes =
        format!("Content-Type: {}\r\n\r\n", ventanilla_testkit::wire::multipart_content_type()).into_bytes();
    bytes.extend_from_slice(&body);
    std::fs::write(&file, bytes).unwrap();
    let out = ventanilla().arg("verify").arg(&file).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("cid:doc@test: not checked (encrypted; pass --decrypt-key and --decrypt-cert)"),
        "{stdout}"
    );
    assert!(!stdout.contains("digest mismatch"), "{stdout}");
    assert!(stdout.contains("VALID as far as checked"), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "valid as far as checked");
}

/// Console users from the command line (password on stdin, argon2id in the store), JSON logs
/// without colours, and the alert rules checked like the rest of the config.
#[test]
fn users_json_logs_and_alert_rules_from_the_command_line() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path(), "CL-SICEX", "[console]\nlisten = \"127.0.0.1:0\"");
    let add = |name: &str, password: &str| {
        let mut child = ventanilla()
            .args(["user", "add", "--config"])
            .arg(&config)
            .args([name, "--role", "operator"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let out = add("ana", "a-long-enough-password");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("user ana: operator (password stored as an argon2id hash)"));
    let out = add("bo", "short");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 12 characters"));
    let out = ventanilla().args(["user", "list", "--config"]).arg(&config).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ana\toperator\tok\n");

    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let mut child =
        ventanilla().args(["serve", "--log-format", "json", "--config"]).arg(&config).stderr(log).spawn().unwrap();
    let mut text = String::new();
    for _ in 0..200 {
        text = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
        if text.contains("access point started") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(child.wait().unwrap().success());
    assert!(!text.contains('\u{1b}'), "no ANSI colours in a file: {text}");
    let lines: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let started = lines.iter().find(|l| l["message"] == "access point started").expect("the start line");
    assert_eq!(started["party"], "CL-SICEX");
    assert!(started["console"].as_str().unwrap().contains("127.0.0.1:"), "{started}");

    // The API on a public address without TLS: refused unless the config says so.
    let open = demo_config(dir.path(), "CL-SICEX", "");
    let text = std::fs::read_to_string(&open)
        .unwrap()
        .replace("[backend]\nlisten = \"127.0.0.1:0\"", "[backend]\nlisten = \"0.0.0.0:0\"");
    std::fs::write(&open, &text).unwrap();
    let out = ventanilla().args(["config", "check"]).arg(&open).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("backend.listen: 0.0.0.0:0 is not a loopback address"));
    std::fs::write(&open, text.replace("[backend]\n", "[backend]\nallow_plain_http = true\n")).unwrap();
    let out = ventanilla().args(["config", "check"]).arg(&open).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let bad = demo_config(dir.path(), "CL-SICEX", "[[alerts.rule]]\nkind = \"disk_lo\"");
    let out = ventanilla().args(["config", "check"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{}:5: alerts.rule", bad.display())) && stderr.contains("disk_lo"), "{stderr}");
}

/// Issue 14: `--version` names the version and the commit it was built from.
#[test]
fn version_names_the_commit() {
    let out = ventanilla().arg("--version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with(&format!("ventanilla {} (", env!("CARGO_PKG_VERSION"))), "{text}");
    let commit = text.split('(').nth(1).unwrap().split([' ', ')']).next().unwrap();
    assert!(commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit()) || commit == "unknown", "{text}");
}

/// Issue 14: keys and requests for a CA (keys 0600; X25519 as a public key), certificates
/// issued by a test CA from them, checked and installed by `certs import`.
#[test]
fn certs_request_and_import_with_a_test_ca() {
    use std::os::unix::fs::PermissionsExt;
    use ventanilla_testkit::demo_pki::{Authority, Usage};
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("req");
    let run = |args: &[&str]| {
        let out = ventanilla().args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    let (code, text) = run(&[
        "certs",
        "request",
        "--party",
        "EC-VUE",
        "--profile",
        "edelivery-2.0",
        "--out",
        out.to_str().unwrap(),
        "--host",
        "as4.vue.ec.example",
        "--country",
        "EC",
    ]);
    assert_eq!(code, Some(0), "{text}");
    for key in ["ec-vue-sign-ed25519.key", "ec-vue-enc-x25519.key", "ec-vue-tls.key"] {
        assert_eq!(std::fs::metadata(out.join(key)).unwrap().permissions().mode() & 0o777, 0o600, "{key}");
    }
    // The CA's side: requests verified, certificates issued (X25519 from its public key).
    let ca = Authority::new("Test CA of Ecuador").unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.cert_pem().unwrap()).unwrap();
    let csr = openssl::x509::X509Req::from_pem(&std::fs::read(out.join("ec-vue-sign-ed25519.csr")).unwrap()).unwrap();
    let public = csr.public_key().unwrap();
    assert!(csr.verify(&public).unwrap(), "the request is signed by its key");
    let sign = ca.issue("EC-VUE sign", &public, Usage::Signing, 365).unwrap();
    std::fs::write(dir.path().join("sign.pem"), sign.to_pem().unwrap()).unwrap();
    let x25519 =
        openssl::pkey::PKey::public_key_from_pem(&std::fs::read(out.join("ec-vue-enc-x25519.pub.pem")).unwrap())
            .unwrap();
    let enc = ca.issue("EC-VUE enc", &x25519, Usage::KeyAgreement, 365).unwrap();
    std::fs::write(dir.path().join("enc.pem"), enc.to_pem().unwrap()).unwrap();
    let keys = dir.path().join("keys");
    let import = |key: &str, cert: &str, usage: &str| {
        run(&[
            "certs",
            "import",
            "--profile",
            "edelivery-2.0",
            "--usage",
            usage,
            "--key",
            out.join(key).to_str().unwrap(),
            "--cert",
            dir.path().join(cert).to_str().unwrap(),
            "--ca",
            dir.path().join("ca.pem").to_str().unwrap(),
            "--to",
            keys.to_str().unwrap(),
        ])
    };
    let (code, text) = import("ec-vue-sign-ed25519.key", "sign.pem", "sign");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("ok: the certificate is for this key") && text.contains("ok: chains to"), "{text}");
    assert!(text.contains("config: [[keys]] profile = \"edelivery-2.0\"  sign = { key ="), "{text}");
    assert_eq!(std::fs::metadata(keys.join("sign.key")).unwrap().permissions().mode() & 0o777, 0o600);
    let (code, text) = import("ec-vue-enc-x25519.key", "enc.pem", "enc");
    assert_eq!(code, Some(0), "{text}");
    // The wrong key, or the wrong use for the profile, is refused.
    let (code, text) = import("ec-vue-enc-x25519.key", "sign.pem", "sign");
    assert_eq!(code, Some(1));
    assert!(text.contains("not for this key"), "{text}");
    let (code, text) = import("ec-vue-sign-ed25519.key", "sign.pem", "enc");
    assert_eq!(code, Some(1));
    assert!(text.contains("needs a X25519 key"), "{text}");
    // A second request into the same folder never overwrites a key.
    let (code, text) =
        run(&["certs", "request", "--party", "EC-VUE", "--profile", "edelivery-2.0", "--out", out.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(text.contains("never overwrites a key"), "{text}");
}
