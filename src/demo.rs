//! `ventanilla demo`: the four Pacific Alliance access points on loopback, exchanging an
//! ePhyto and a certificate of origin on each of the six links through the backend API.

use crate::backend::client::{ApiClient, Upload};
use crate::config::{As4Config, BackendConfig, Config, KeyConfig, KeyPair, SecurityConfig};
use crate::node::Node;
use crate::pki::trust::RevocationPolicy;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// The four access points: short code and party id.
pub const COUNTRIES: [(&str, &str); 4] = [("cl", "CL-SICEX"), ("co", "CO-VUCE"), ("mx", "MX-VUCEM"), ("pe", "PE-VUCE")];

/// Anything that stops the demo from starting (certificates, ports, configuration).
pub type DemoError = Box<dyn std::error::Error + Send + Sync>;

pub struct Running {
    pub code: String,
    pub party: String,
    pub node: Node,
    pub api: ApiClient,
}

/// Generates the demo PKI and configs under `work`, and starts one access point per
/// `(code, party)` on free loopback ports, all loading the P-Modes in `pmodes`.
pub async fn launch(work: &Path, pmodes: &Path, countries: &[(&str, &str)]) -> Result<Vec<Running>, DemoError> {
    launch_with(work, pmodes, countries, &Options::default()).await
}

/// How the access points are set up.
#[derive(Debug, Clone)]
pub struct Options {
    pub max_message: String,
    /// Rewrite the P-Modes to `profile = "none"` and allow it (tests that post raw, unsigned
    /// messages).
    pub insecure: bool,
    /// Revocation policy; the demo PKI publishes an (empty) CRL, `certs/demo/ca.crl`.
    pub revocation: RevocationPolicy,
    /// A PostgreSQL connection string without dbname: each access point then keeps its
    /// messages in database `ventanilla_<code>` (which must exist) instead of SQLite.
    pub postgres: Option<String>,
    /// Endpoints for parties that are not started here (a partner under test).
    pub extra_endpoints: BTreeMap<String, String>,
    /// Text replacements applied to every copied P-Mode file (conformance variants).
    pub pmode_patches: Vec<(String, String)>,
    /// Replace every link's retry schedule (e.g. `["1s", "1s"]` for quick outage tests).
    pub retry: Option<Vec<String>>,
    /// Stores put in between, by country code (tests that stall or fail the store).
    pub store_wrappers: BTreeMap<String, crate::node::StoreWrapper>,
    /// Alert rules and their webhook or e-mail, for every access point.
    pub alerts: crate::ops::settings::AlertsConfig,
    /// Country codes whose demo certificates are made too, for partners not started here (the
    /// legacy IOP node).
    pub extra_pki: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_message: "256MiB".into(),
            insecure: false,
            revocation: RevocationPolicy::FailClosed,
            postgres: None,
            extra_endpoints: BTreeMap::new(),
            pmode_patches: Vec::new(),
            retry: None,
            store_wrappers: BTreeMap::new(),
            alerts: Default::default(),
            extra_pki: Vec::new(),
        }
    }
}

/// Copies the `*.toml` files of `from` into `to`, optionally switching them to the
/// unsigned test profile.
fn copy_pmodes(from: &Path, to: &Path, options: &Options) -> std::io::Result<()> {
    let (insecure, retry) = (options.insecure, options.retry.as_deref());
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            let mut text = std::fs::read_to_string(&path)?;
            if insecure {
                text = text
                    .replace("profile = \"edelivery-2.0\"", "profile = \"none\"")
                    .replace("profile = \"edelivery-1.15\"", "profile = \"none\"");
            }
            for (from, to) in &options.pmode_patches {
                text = text.replace(from.as_str(), to);
            }
            if let Some(retry) = retry {
                let schedule: Vec<String> = retry.iter().map(|r| format!("{r:?}")).collect();
                text = text
                    .lines()
                    .map(|line| {
                        if line.trim_start().starts_with("retry ") || line.trim_start().starts_with("retry=") {
                            format!("retry = [{}]", schedule.join(", "))
                        } else {
                            line.to_owned()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
            }
            std::fs::write(to.join(path.file_name().unwrap_or_default()), text)?;
        }
    }
    Ok(())
}

fn key_pair(certs: &Path, code: &str, what: &str) -> KeyPair {
    KeyPair {
        key: Some(certs.join(format!("{code}-{what}.key"))),
        cert: Some(certs.join(format!("{code}-{what}.pem"))),
        pkcs12: None,
        password_env: None,
        password_file: None,
    }
}

/// [`launch`] with a given request size limit (tests use a small one).
pub async fn launch_with(
    work: &Path,
    pmodes: &Path,
    countries: &[(&str, &str)],
    options: &Options,
) -> Result<Vec<Running>, DemoError> {
    // The P-Modes name partner certificates as ../certs/demo/..., relative to their folder.
    let certs = work.join("certs/demo");
    let pmodes_src = pmodes;
    let pmodes = &work.join("pmodes");
    copy_pmodes(pmodes_src, pmodes, options)?;
    // Every shipped P-Mode names all four countries' certificates, whoever is started.
    let mut codes: Vec<&str> = COUNTRIES.iter().map(|(c, _)| *c).collect();
    codes.extend(countries.iter().map(|(c, _)| *c).filter(|c| !COUNTRIES.iter().any(|(k, _)| k == c)));
    codes.extend(options.extra_pki.iter().map(String::as_str));
    ventanilla_testkit::demo_pki::write_demo_pki(&certs, &codes)?;
    let mut listeners = Vec::new();
    for _ in countries {
        listeners.push((TcpListener::bind("127.0.0.1:0").await?, TcpListener::bind("127.0.0.1:0").await?));
    }
    let mut endpoints: BTreeMap<String, String> = countries
        .iter()
        .zip(&listeners)
        .map(|((_, party), (as4, _))| {
            Ok::<_, std::io::Error>((party.to_string(), format!("https://127.0.0.1:{}/as4", as4.local_addr()?.port())))
        })
        .collect::<Result<_, _>>()?;
    endpoints.extend(options.extra_endpoints.clone());
    let mut running = Vec::new();
    for ((code, party), (as4, backend)) in countries.iter().zip(listeners) {
        let token = format!("demo-token-{code}-{}", uuid::Uuid::new_v4().simple());
        let config = Config {
            party_id: party.to_string(),
            host: format!("ap.{code}.demo"),
            data_dir: work.join(code).join("data"),
            pmodes: pmodes.to_owned(),
            allow_insecure_profile: options.insecure,
            pmode_reload: crate::config::Interval::secs(1),
            shutdown_grace: crate::config::Interval::secs(10),
            as4: As4Config {
                listen: as4.local_addr()?,
                path: "/as4".into(),
                tls_cert: certs.join(format!("{code}-tls.pem")),
                tls_key: certs.join(format!("{code}-tls.key")),
                trust: certs.join("ca.pem"),
                max_message: options.max_message.parse()?,
                send_concurrency: 16,
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
            endpoints: endpoints
                .iter()
                .filter(|(p, _)| p.as_str() != *party)
                .map(|(p, e)| (p.clone(), e.clone()))
                .collect(),
            keys: vec![
                KeyConfig {
                    profile: "edelivery-1.15".into(),
                    sign: key_pair(&certs, code, "sign-rsa"),
                    enc: key_pair(&certs, code, "enc-rsa"),
                },
                KeyConfig {
                    profile: "edelivery-2.0".into(),
                    sign: key_pair(&certs, code, "sign-ed25519"),
                    enc: key_pair(&certs, code, "enc-x25519"),
                },
            ],
            security: SecurityConfig {
                crls: vec![certs.join("ca.crl")],
                revocation: options.revocation,
                ..SecurityConfig::default()
            },
            retention: Default::default(),
            limits: Default::default(),
            store: match &options.postgres {
                Some(base) => crate::config::StoreConfig {
                    kind: crate::config::StoreKind::Postgres,
                    url: Some(format!("{base} dbname=ventanilla_{code}")),
                    ..Default::default()
                },
                None => Default::default(),
            },

            console: Some(crate::ops::settings::ConsoleConfig {
                listen: ([127, 0, 0, 1], 0).into(),
                ..Default::default()
            }),
            health: Default::default(),
            alerts: options.alerts.clone(),
            logging: Default::default(),
            deliveries: Vec::new(),
            submit_folder: None,
            iop: Default::default(),
        };
        let node = Node::start_wrapped(config, as4, backend, options.store_wrappers.get(*code)).await?;
        let api = ApiClient::new(&format!("http://{}", node.backend_addr), &token);
        running.push(Running { code: code.to_string(), party: party.to_string(), node, api });
    }
    Ok(running)
}

#[derive(Debug, Clone)]
pub struct Exchange {
    pub message_id: String,
    pub from: String,
    pub to: String,
    pub document: String,
    pub profile: String,
    pub state: String,
    pub round_trip_ms: u128,
    pub identical: bool,
    /// What the receiving side extracted: certificate number and status.
    pub certificate: String,
    pub doc_status: String,
    pub problem: Option<String>,
    /// "as4", or "iop" with a legacy node.
    pub transport: String,
}

impl Exchange {
    /// An exchange not sent yet.
    pub fn new(from: &str, to: &str, document: &str, profile: &str, transport: &str) -> Exchange {
        Exchange {
            message_id: String::new(),
            from: from.to_uppercase(),
            to: to.to_uppercase(),
            document: document.to_owned(),
            profile: profile.to_owned(),
            state: "not sent".into(),
            round_trip_ms: 0,
            identical: false,
            certificate: String::new(),
            doc_status: String::new(),
            problem: None,
            transport: transport.to_owned(),
        }
    }

    pub fn ok(&self) -> bool {
        self.state == "acknowledged" && self.identical && self.problem.is_none()
    }
}

/// The document to send on `leg` from `from` to `to` (country codes): a shipped sample when
/// one fits the pair, else one made from the samples (ePhyto countries set; a COD re-signed
/// with the samples' TEST-ONLY keys), written under `work/documents`.
pub fn document_for(samples: &Path, work: &Path, leg: &str, from: &str, to: &str) -> Result<PathBuf, DemoError> {
    let (from, to) = (from.to_uppercase(), to.to_uppercase());
    let dir = work.join("documents");
    std::fs::create_dir_all(&dir)?;
    match leg {
        "ephyto" => {
            let own = samples.join("ephyto/own");
            let prefix = format!("ephyto_{from}-{to}_");
            let shipped = std::fs::read_dir(&own)?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&prefix)));
            if let Some(path) = shipped {
                return Ok(path);
            }
            let path = dir.join(format!("ephyto-{from}-{to}.xml"));
            let number = format!("{from}-2026-{to}0001");
            std::fs::write(&path, crate::payload::ephyto::testing::certificate(&from, &to, &number))?;
            Ok(path)
        }
        _ => {
            let keys =
                |name: &str| -> Result<(openssl::pkey::PKey<openssl::pkey::Private>, openssl::x509::X509), DemoError> {
                    let dir = samples.join("origin/test-keys");
                    Ok((
                        openssl::pkey::PKey::private_key_from_pem(&std::fs::read(
                            dir.join(format!("{name}.key.pem")),
                        )?)?,
                        openssl::x509::X509::from_pem(&std::fs::read(dir.join(format!("{name}.cert.pem")))?)?,
                    ))
                };
            let (ek, ec) = keys("exporter")?;
            let (ok, oc) = keys("official")?;
            let template = std::fs::read_to_string(samples.join("origin/cod_v1.8.3_A35_CL-AR_stage4_complete.xml"))?;
            let id = format!("{from}012A35260000{:04}00", to.bytes().map(u32::from).sum::<u32>());
            let cod = crate::payload::origin::testing::cod(&template, &from, &to, &id, (&ek, &ec), (&ok, &oc))?;
            let path = dir.join(format!("cod-{from}-{to}.xml"));
            std::fs::write(&path, cod)?;
            Ok(path)
        }
    }
}

/// Sends one document from `sender` to `receiver` through the backend API and follows it
/// until the receipt, then checks the receiver's inbox holds the identical bytes.
pub async fn exchange(sender: &Running, receiver: &Running, leg: &str, document: &Path, timeout: Duration) -> Exchange {
    let profile = sender
        .node
        .ap
        .pmodes()
        .outbound(&sender.party, &receiver.party, leg)
        .map(|(l, _)| l.profile.as_str().to_owned())
        .unwrap_or_else(|_| "?".into());
    let mut result = Exchange::new(&sender.code, &receiver.code, leg, &profile, "as4");
    let started = Instant::now();
    let metadata = serde_json::json!({ "to": receiver.party, "leg": leg, "properties": { "originalSender": sender.party, "finalRecipient": receiver.party } });
    let submitted = match sender.api.submit(&metadata, &[Upload { path: document, mime_type: "application/xml" }]).await
    {
        Ok(v) => v,
        Err(e) => {
            result.problem = Some(format!("submit failed: {e}"));
            return result;
        }
    };
    result.message_id = submitted["message_id"].as_str().unwrap_or_default().to_owned();
    match sender.api.wait_settled(&result.message_id, timeout).await {
        Ok(s) => {
            result.state = s["state"].as_str().unwrap_or("?").to_owned();
            match result.state.as_str() {
                "acknowledged" => {}
                "failed" => result.problem = s["error"].as_str().map(str::to_owned),
                _ => {
                    result.problem = Some(format!("no receipt within {timeout:?}"));
                    return result;
                }
            }
        }
        Err(e) => {
            result.problem = Some(format!("status failed: {e}"));
            return result;
        }
    }
    result.round_trip_ms = started.elapsed().as_millis();
    if result.state != "acknowledged" {
        return result;
    }
    let expected = tokio::fs::read(document).await.unwrap_or_default();
    match receiver.api.download(&result.message_id, 1).await {
        Ok(bytes) => {
            result.identical = bytes.as_ref() == expected.as_slice();
            if let Ok(record) = receiver.api.received(&result.message_id).await {
                result.certificate = record["document"]["number"].as_str().unwrap_or_default().to_owned();
                result.doc_status = record["document"]["status"].as_str().unwrap_or_default().to_owned();
            }
            if !result.identical {
                result.problem = Some("received payload differs from the one sent".into());
            } else if let Err(e) = receiver.api.acknowledge(&result.message_id).await {
                result.problem = Some(format!("inbox acknowledge failed: {e}"));
            }
        }
        Err(e) => result.problem = Some(format!("not in the receiver's inbox: {e}")),
    }
    result
}

pub fn print_table(exchanges: &[Exchange]) {
    println!(
        "{:<3} {:<52} {:<9} {:<9} {:<9} {:<15} {:<13} {:>7}  {:<22} status (receiver)",
        "#", "message id", "from → to", "document", "transport", "profile", "state", "rtt ms", "certificate (receiver)"
    );
    for (i, e) in exchanges.iter().enumerate() {
        let state = if e.ok() { e.state.clone() } else { format!("{} ✗", e.state) };
        println!(
            "{:<3} {:<52} {:<9} {:<9} {:<9} {:<15} {:<13} {:>7}  {:<22} {}",
            i + 1,
            e.message_id,
            format!("{} → {}", e.from, e.to),
            e.document,
            e.transport,
            e.profile,
            state,
            e.round_trip_ms,
            e.certificate,
            e.doc_status
        );
        if let Some(p) = &e.problem {
            println!("    problem: {p}");
        }
    }
}

/// The console user the demo creates on each access point.
pub const DEMO_USER: &str = "demo";

/// Adds the demo's console user (role admin) with a fresh password, and returns it.
pub async fn add_console_user(r: &Running) -> Result<String, DemoError> {
    let password = format!("demo-{}", uuid::Uuid::new_v4().simple());
    crate::ops::users::put(r.node.ap.store.as_ref(), "demo", DEMO_USER, crate::ops::users::Role::Admin, &password)
        .await
        .map_err(|e| -> DemoError { e.to_string().into() })?;
    Ok(password)
}

/// The whole demo; true when every exchange succeeded.
pub async fn run(work: &Path, pmodes: &Path, samples: &Path, keep_running: bool) -> Result<bool, DemoError> {
    if work.exists() {
        std::fs::remove_dir_all(work)?;
    }
    std::fs::create_dir_all(work)?;
    let options = Options { extra_pki: vec![crate::legacy_peer::CODE.into()], ..Options::default() };
    let running = launch_with(work, pmodes, &COUNTRIES, &options).await?;
    println!("Four access points on loopback (HTTPS AS4 endpoint, backend API):");
    for r in &running {
        println!(
            "  {} {:<9} https://{}/as4   http://{}/api/v1",
            r.code.to_uppercase(),
            r.party,
            r.node.as4_addr,
            r.node.backend_addr
        );
    }
    let by_party: BTreeMap<&str, &Running> = running.iter().map(|r| (r.party.as_str(), r)).collect();
    let links = running[0].node.ap.pmodes().links().to_vec();
    let mut jobs = Vec::new();
    for link in &links {
        let (Some(a), Some(b)) = (by_party.get(link.parties[0].id.as_str()), by_party.get(link.parties[1].id.as_str()))
        else {
            continue;
        };
        for (i, leg) in link.legs.iter().enumerate() {
            // Alternate directions so both sides of every link send.
            let (from, to) = if i % 2 == 0 { (*a, *b) } else { (*b, *a) };
            let doc = document_for(samples, work, &leg.name, &from.code, &to.code)?;
            jobs.push((from, to, leg.name.clone(), doc));
        }
    }
    println!("\nSending {} documents on {} links...\n", jobs.len(), links.len());
    let futures = jobs.iter().map(|(from, to, leg, doc)| exchange(from, to, leg, doc, Duration::from_secs(60)));
    let mut exchanges = futures_util::future::join_all(futures).await;
    // Chile's link with a partner still on the legacy IOP: one exchange each way.
    let repo = samples.parent().unwrap_or(Path::new("."));
    let chile = running.iter().find(|r| r.code == "cl").ok_or("no Chilean access point")?;
    let (legacy, iop_exchanges) = iop_exchanges(repo, work, chile).await;
    println!(
        "Chile also keeps a link with Ecuador's legacy IOP node (conformance/peers/iop), by one P-Mode file: {}",
        work.join("pmodes/cl-ec-iop.toml").display()
    );
    exchanges.extend(iop_exchanges);
    print_table(&exchanges);
    let ok = exchanges.iter().filter(|e| e.ok()).count();
    println!(
        "\ndemo: {ok} of {} exchanges succeeded (receipt received, payload byte-identical in the receiving inbox)",
        exchanges.len()
    );
    let all_ok = ok == exchanges.len() && !exchanges.is_empty();
    if keep_running {
        println!(
            "\nThe access points keep running; the API tokens are in the configs under {}. Ctrl-C stops them.",
            work.display()
        );
        for r in &running {
            let password = add_console_user(r).await?;
            println!("\n  {} {}", r.code.to_uppercase(), r.party);
            if let Some(addr) = r.node.console_addr {
                println!("console: http://{addr}/");
                println!("  login: {DEMO_USER} / {password} (role admin)");
                println!("metrics: http://{addr}/metrics");
            }
        }
        for r in &running {
            let config = toml_config(&r.node.ap.config);
            std::fs::write(work.join(format!("{}.toml", r.code)), config)?;
        }
        tokio::signal::ctrl_c().await?;
    }
    drop(legacy);
    for r in running {
        r.node.stop().await;
    }
    Ok(all_ok)
}

/// Starts the legacy IOP node, gives `chile` a link with it, and exchanges one :11 certificate
/// each way: ours signed by the access point, the node's with its legacy RSA-SHA1.
async fn iop_exchanges(
    repo: &Path,
    work: &Path,
    chile: &Running,
) -> (Option<crate::legacy_peer::LegacyPeer>, Vec<Exchange>) {
    use crate::legacy_peer::{self as legacy, Answer, LegacyPeer, Sending, Setup};
    let setup = Setup::new(repo, &work.join("certs/demo"), work);
    let (mut out, mut back) =
        (Exchange::new("CL", "EC", "ephyto", "SPS:11", "iop"), Exchange::new("EC", "CL", "ephyto", "SPS:11", "iop"));
    let peer = match LegacyPeer::start(&setup, 0, Answer::Rcb, &chile.party) {
        Ok(peer) => peer,
        Err(e) => {
            out.problem = Some(format!("the legacy IOP node did not start (python3 and xmlsec1 are needed): {e}"));
            back.problem = out.problem.clone();
            return (None, vec![out, back]);
        }
    };
    let link = legacy::link_pmode(&setup, &chile.code, &chile.party, &peer.url())
        .and_then(|text| Ok(std::fs::write(work.join("pmodes/cl-ec-iop.toml"), text)?));
    if let Err(e) = link {
        out.problem = Some(format!("cannot write the IOP P-Mode: {e}"));
        return (Some(peer), vec![out, back]);
    }
    for _ in 0..100 {
        if chile.node.ap.pmodes().links().iter().any(|l| l.id == "cl-ec-iop") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let documents = work.join("documents");
    let _ = std::fs::create_dir_all(&documents);
    let write = |from: &str, to: &str| -> std::io::Result<(PathBuf, String)> {
        let number = format!("{from}-2026-IOP{to}1");
        let path = documents.join(format!("ephyto-v11-{from}-{to}.xml"));
        std::fs::write(&path, crate::payload::ephyto::testing::certificate_v11(from, to, &number))?;
        Ok((path, number))
    };
    // Out: through the backend API, as any AS4 message.
    match write("CL", "EC") {
        Ok((path, number)) => {
            let started = Instant::now();
            let metadata = serde_json::json!({ "to": legacy::PARTY, "leg": "ephyto-iop" });
            match chile.api.submit(&metadata, &[Upload { path: &path, mime_type: "application/xml" }]).await {
                Ok(record) => {
                    out.message_id = record["message_id"].as_str().unwrap_or_default().to_owned();
                    match chile.api.wait_settled(&out.message_id, Duration::from_secs(60)).await {
                        Ok(status) => {
                            out.state = status["state"].as_str().unwrap_or("?").to_owned();
                            out.round_trip_ms = started.elapsed().as_millis();
                            let kept = peer.received(&out.message_id);
                            out.identical = kept.as_deref().is_some_and(|k| {
                                crate::iop::certificate::verify(k).is_ok()
                                    && String::from_utf8_lossy(k).contains(&number)
                            });
                            if out.identical {
                                out.certificate = number;
                                out.doc_status = "issued (signed by CL)".into();
                            }
                            if out.state != "acknowledged" {
                                out.problem = status["error"].as_str().map(str::to_owned);
                            } else if !out.identical {
                                out.problem = Some("the legacy node holds no verifiable certificate".into());
                            }
                        }
                        Err(e) => out.problem = Some(format!("status failed: {e}")),
                    }
                }
                Err(e) => out.problem = Some(format!("submit failed: {e}")),
            }
        }
        Err(e) => out.problem = Some(e.to_string()),
    }
    // In: the legacy node posts to Chile's IOP path; the document lands in the same inbox.
    match write("EC", "CL") {
        Ok((path, number)) => {
            let started = Instant::now();
            let url = format!("https://{}{}", chile.node.as4_addr, chile.node.ap.config.iop.path);
            let (setup2, party) = (setup.clone(), chile.party.clone());
            let report = tokio::task::spawn_blocking(move || {
                let sending = Sending {
                    url,
                    to_party: &party,
                    to_country: "CL",
                    document: &path,
                    transaction: None,
                    password: None,
                    algorithm: "rsa-sha1",
                };
                legacy::send(&setup2, &sending)
            })
            .await;
            match report {
                Ok(Ok(report)) => {
                    back.round_trip_ms = started.elapsed().as_millis();
                    back.message_id = report["transaction"].as_str().unwrap_or_default().to_owned();
                    back.state = match report["codigo"].as_str() {
                        Some("RCB") => "acknowledged".into(),
                        _ => format!("refused {}", report["detalles"]),
                    };
                    match chile.api.download(&back.message_id, 1).await {
                        Ok(bytes) => {
                            back.identical = crate::iop::certificate::verify(&bytes).is_ok()
                                && String::from_utf8_lossy(&bytes).contains(&number);
                            if let Ok(record) = chile.api.received(&back.message_id).await {
                                back.certificate = record["document"]["number"].as_str().unwrap_or_default().to_owned();
                                back.doc_status = "issued (RSA-SHA1, legacy)".into();
                            }
                            if !back.identical {
                                back.problem = Some("the inbox holds no verifiable certificate".into());
                            } else if let Err(e) = chile.api.acknowledge(&back.message_id).await {
                                back.problem = Some(format!("inbox acknowledge failed: {e}"));
                            }
                        }
                        Err(e) => back.problem = Some(format!("not in Chile's inbox: {e}")),
                    }
                }
                Ok(Err(e)) => back.problem = Some(e.to_string()),
                Err(e) => back.problem = Some(e.to_string()),
            }
        }
        Err(e) => back.problem = Some(e.to_string()),
    }
    (Some(peer), vec![out, back])
}

/// The config file of a running demo access point (for `--keep-running`), without its console
/// (a second process on the same config would find the console's port taken).
pub fn toml_config(c: &Config) -> String {
    let endpoints: String = c.endpoints.iter().map(|(p, e)| format!("\"{p}\" = \"{e}\"\n")).collect();
    format!(
        "party_id = \"{}\"\nhost = \"{}\"\ndata_dir = \"{}\"\npmodes = \"{}\"\nallow_insecure_profile = {}\n\n[as4]\nlisten = \"{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\ntrust = \"{}\"\n\n[backend]\nlisten = \"{}\"\ntoken = \"{}\"\n\n[endpoints]\n{endpoints}",
        c.party_id,
        c.host,
        c.data_dir.display(),
        c.pmodes.display(),
        c.allow_insecure_profile,
        c.as4.listen,
        c.as4.tls_cert.display(),
        c.as4.tls_key.display(),
        c.as4.trust.display(),
        c.backend.listen,
        c.backend.token.as_deref().unwrap_or_default(),
    ) + &keys_toml(c)
}

/// The `[[keys]]` and `[security]` tables, so the written config can be used as it is (by
/// `ventanilla serve`, or `conformance run --peer URL --config`).
fn keys_toml(c: &Config) -> String {
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    let mut out = String::new();
    for k in &c.keys {
        out.push_str(&format!(
            "\n[[keys]]\nprofile = \"{}\"\nsign = {{ key = \"{}\", cert = \"{}\" }}\nenc = {{ key = \"{}\", cert = \"{}\" }}\n",
            k.profile,
            path(&k.sign.key),
            path(&k.sign.cert),
            path(&k.enc.key),
            path(&k.enc.cert)
        ));
    }
    let crls: Vec<String> = c.security.crls.iter().map(|p| format!("\"{}\"", p.display())).collect();
    out.push_str(&format!("\n[security]\ncrls = [{}]\n", crls.join(", ")));
    out
}
