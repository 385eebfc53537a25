//! The `ventanilla` command line.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use ventanilla::backend::client::{ApiClient, Upload};
use ventanilla::config::Config;

/// jemalloc, for the C libraries (libxml2, OpenSSL, SQLite) as well: the dependency overrides
/// `malloc` for the whole process. Why: `Cargo.toml`; what `/metrics` reads of it:
/// [`ventanilla::ops::memory`]. Its default settings: one arena per CPU (`percpu_arena`) saved
/// 1-2 MiB at 32 messages in flight and nothing else measurable (README, nineteenth session).
#[cfg(all(feature = "jemalloc", target_os = "linux", target_env = "gnu"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "ventanilla",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("VENTANILLA_COMMIT"), ")"),
    about = "AS4 access point for customs and trade single windows"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an access point.
    Serve {
        #[arg(long)]
        config: PathBuf,
        /// Log lines as text or as JSON objects (overrides `[logging] format`).
        #[arg(long, value_enum)]
        log_format: Option<ventanilla::ops::settings::LogFormat>,
    },
    /// A consistent copy of a running access point's SQLite store and the payload files it
    /// names, into an empty folder.
    Backup {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        to: PathBuf,
    },
    /// Puts a backup into the (empty) data folder of a config, the stored paths rewritten.
    Restore {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        from: PathBuf,
    },
    /// Partner links.
    Partner {
        #[command(subcommand)]
        command: PartnerCommand,
    },
    /// Console users (stored in the access point's store; each change is audited).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Submit a document through a running access point's backend API, or (with
    /// --dry-run) print its ebMS envelope as built before signing and encryption.
    Send {
        /// Backend API base URL, e.g. http://127.0.0.1:8080
        #[arg(long, required_unless_present = "dry_run")]
        api: Option<String>,
        /// Name of the environment variable holding the API token.
        #[arg(long, default_value = "VENTANILLA_TOKEN")]
        token_env: String,
        /// Partner party id, e.g. PE-VUCE.
        #[arg(long)]
        to: String,
        /// Leg name (or action) in the link's P-Mode, e.g. ephyto.
        #[arg(long)]
        leg: String,
        #[arg(long)]
        conversation_id: Option<String>,
        /// Message property NAME=VALUE (repeatable).
        #[arg(long = "property", value_parser = parse_property)]
        properties: Vec<(String, String)>,
        /// MIME type of the payloads.
        #[arg(long, default_value = "application/xml")]
        mime_type: String,
        /// Print the envelope instead of sending; needs --config for the P-Modes.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Verify the signature of a raw AS4 message or signal (HTTP headers optional, MIME or
    /// bare SOAP), or an evidence bundle (`GET /api/v1/messages/{id}/evidence`, checked offline:
    /// both signatures, the receipt's NRR against the envelope, the certificate chains): one
    /// line per check and a verdict; exit 0 if valid, 1 if not, 3 if valid as far as it could
    /// be checked (encrypted attachments without --decrypt-key).
    Verify {
        file: PathBuf,
        /// Also validate the signer's certificate chain against these CA certificates (PEM).
        #[arg(long)]
        truststore: Option<PathBuf>,
        /// The signer's certificate, when the message does not carry it.
        #[arg(long)]
        cert: Option<PathBuf>,
        /// The recipient's private key (PEM), to decrypt encrypted attachments first.
        #[arg(long, requires = "decrypt_cert")]
        decrypt_key: Option<PathBuf>,
        #[arg(long, requires = "decrypt_key")]
        decrypt_cert: Option<PathBuf>,
    },
    /// Business documents (ePhyto, certificates of origin, UN/EDIFACT).
    Payload {
        #[command(subcommand)]
        command: PayloadCommand,
    },
    /// P-Mode files.
    Pmode {
        #[command(subcommand)]
        command: PmodeCommand,
    },
    /// The access point's config file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Certificates: requests for a CA, installing what it issued, the demo PKI.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Start the four Pacific Alliance access points on loopback and exchange documents on
    /// every link; exits 0 only if every exchange succeeded.
    #[cfg(feature = "devtools")]
    Demo {
        #[arg(long, default_value = "target/demo")]
        work: PathBuf,
        #[arg(long, default_value = "pmodes")]
        pmodes: PathBuf,
        #[arg(long, default_value = "samples")]
        samples: PathBuf,
        /// Leave the access points running and print their URLs.
        #[arg(long)]
        keep_running: bool,
    },
    /// The conformance suite of docs/as4.md §7 (cases in conformance/cases): runs the
    /// `ventanilla-conformance` program installed beside this one with the same arguments.
    #[command(disable_help_flag = true)]
    Conformance {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum PartnerCommand {
    /// Before the first message: the link's P-Mode, our keys, the partner's certificates
    /// (chain and revocation status), and its endpoint answering the AS4 test service message
    /// over TLS with a valid signed receipt. One line per check; exit 1 if any fails.
    Check {
        /// The P-Mode (link) id, e.g. cl-pe.
        link: String,
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user, or change its role and password. The password is read from the
    /// environment variable named by --password-env, else from the first line of stdin.
    Add {
        #[arg(long)]
        config: PathBuf,
        name: String,
        #[arg(long, value_parser = ["viewer", "operator", "admin"])]
        role: String,
        #[arg(long)]
        password_env: Option<String>,
    },
    /// List the users, their roles and whether they are locked out.
    List {
        #[arg(long)]
        config: PathBuf,
    },
    /// Remove a user.
    Remove {
        #[arg(long)]
        config: PathBuf,
        name: String,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a config file and what it points to (P-Modes, keys, certificates, token)
    /// without starting; errors print as file:line: key: message; exits 1 on any.
    Check { file: PathBuf },
}

#[derive(Subcommand)]
enum PmodeCommand {
    /// Validate a P-Mode file or folder; errors print as file:line: key: message.
    Check { path: PathBuf },
    /// Draft a link between two parties with their certificates inline (the same file on both
    /// access points); checked before it is written.
    New {
        /// The link id, e.g. cl-ec.
        #[arg(long)]
        id: String,
        #[arg(long, value_parser = ["edelivery-1.15", "edelivery-2.0"])]
        profile: String,
        /// ID,https://endpoint/as4,SIGN-CERT.pem,ENC-CERT.pem (twice: both parties).
        #[arg(long = "party", num_args = 1)]
        parties: Vec<String>,
        /// Legs: ephyto, origin.
        #[arg(long = "leg", default_values_t = ["ephyto".to_owned()])]
        legs: Vec<String>,
        /// Where to write it (it is not overwritten).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum PayloadCommand {
    /// Detect, validate and extract each file; prints every error with its location and
    /// exits 1 if any file is invalid.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The document type (ephyto, origin, edifact) instead of detecting it.
        #[arg(long)]
        document: Option<String>,
        /// Accepted versions (ePhyto: 17, 11), as a P-Mode leg's `versions`.
        #[arg(long, value_delimiter = ',')]
        versions: Vec<String>,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Make the key pairs a profile needs (keys 0600) and PKCS#10 requests for your CA
    /// (X25519 cannot sign a request: its public key is written for the CA to certify).
    Request {
        /// Your party id, e.g. EC-VUE.
        #[arg(long)]
        party: String,
        #[arg(long, value_parser = ["edelivery-1.15", "edelivery-2.0"])]
        profile: String,
        #[arg(long)]
        out: PathBuf,
        /// The AS4 endpoint's host name, for the TLS request's subjectAltName.
        #[arg(long)]
        host: Option<String>,
        #[arg(long)]
        organisation: Option<String>,
        /// ISO 3166 alpha-2 country code.
        #[arg(long)]
        country: Option<String>,
    },
    /// Check a certificate the CA issued against its key and the profile (and the CA), then
    /// install both into a folder (key 0600) and print the config lines that use them.
    Import {
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        cert: PathBuf,
        #[arg(long, value_parser = ["edelivery-1.15", "edelivery-2.0"])]
        profile: String,
        #[arg(long, value_parser = ["sign", "enc", "tls"])]
        usage: String,
        /// The CA certificates it must chain to (PEM).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Where to install them.
        #[arg(long)]
        to: PathBuf,
        /// The installed files' name (default: the certificate file's stem).
        #[arg(long)]
        name: Option<String>,
    },
    /// Make a throw-away demo PKI (root CA and TLS certificates), for tests and the demo.
    #[cfg(feature = "devtools")]
    Demo {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_delimiter = ',', default_value = "cl,co,mx,pe")]
        names: Vec<String>,
    },
}

fn parse_property(value: &str) -> Result<(String, String), String> {
    value
        .split_once('=')
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("'{value}' is not NAME=VALUE"))
}

/// Logs to stderr: text (colours only on a terminal) or one JSON object per line, with the
/// span fields (message id, partner, P-Mode) of the message path.
fn init_logging_as(default: &str, format: ventanilla::ops::settings::LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        ventanilla::ops::settings::LogFormat::Json => {
            builder.json().with_current_span(true).with_span_list(false).flatten_event(true).init()
        }
        ventanilla::ops::settings::LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

fn main() -> anyhow::Result<()> {
    // Blocking-pool threads live long: each keeps what it prepared once (the compiled ePhyto
    // schema set, libxml2's parser state) instead of being made again after 10 s idle. And
    // they are few: the blocking jobs are mostly CPU (XML security, payload checks) and short
    // file work, and none waits for another job to run, so more threads than a few per core
    // buy nothing but memory (each has its allocator arena and its prepared state). At 32
    // messages in flight, 64 threads held the sender at 49-62 MiB, 16 at 39-49 MiB with the
    // same throughput, 8 at 39-42 MiB and 3% slower (make bench, throughput).
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_keep_alive(std::time::Duration::from_secs(600))
        .max_blocking_threads(16)
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // A report piped into `head` ends quietly, as other command-line tools do. Commands that
    // use sockets (serve, demo, send) keep Rust's default (SIGPIPE ignored), so a peer closing
    // a connection is an error to handle, never a signal that kills the process.
    if matches!(
        cli.command,
        Command::Payload { .. }
            | Command::Pmode { .. }
            | Command::Verify { .. }
            | Command::Config { .. }
            | Command::User { .. }
    ) {
        // SAFETY: sets the process's disposition of one signal; these commands open no socket.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match cli.command {
        Command::Config { command: ConfigCommand::Check { file } } => {
            let config = match Config::load(&file) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(1);
                }
            };
            let report = ventanilla::node::check(&config);
            for line in &report.lines {
                println!("{}: {line}", file.display());
            }
            for e in &report.errors {
                eprintln!("{}: {e}", file.display());
            }
            if !report.errors.is_empty() {
                std::process::exit(1);
            }
            println!("{}: ok", file.display());
        }
        Command::Serve { config, log_format } => {
            // Everything the service creates (database, payload files, staging) is its own:
            // files 0600, folders 0700, whatever umask the service manager left.
            // SAFETY: umask only sets this process's file mode creation mask.
            unsafe { libc::umask(0o077) };
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    init_logging_as("info", log_format.unwrap_or_default());
                    return Err(e.into());
                }
            };
            init_logging_as("info", log_format.unwrap_or(config.logging.format));
            let grace = config.shutdown_grace;
            ventanilla::node::preflight(&config).map_err(|e| anyhow::anyhow!(e))?;
            let node = ventanilla::node::Node::start(config).await?;
            // SIGTERM is what systemd and container runtimes send; SIGINT is Ctrl-C.
            let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            let signal = tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            };
            tracing::info!(signal, ?grace, "stopping: no new work; letting exchanges in flight finish");
            node.stop_within(grace.0).await;
        }
        Command::User { command } => user_command(command).await?,
        Command::Backup { config, to } => {
            // SAFETY: umask only sets this process's file mode creation mask (a private copy).
            unsafe { libc::umask(0o077) };
            let m = ventanilla::backup::backup(&Config::load(&config)?, &to).map_err(|e| anyhow::anyhow!(e))?;
            println!(
                "backup of {} in {}: {} messages, {} message folders and {} payload files (schema {})",
                m.party_id,
                to.display(),
                m.messages,
                m.folders,
                m.files,
                m.schema_version
            );
        }
        Command::Restore { config, from } => {
            // SAFETY: as for backup.
            unsafe { libc::umask(0o077) };
            let config = Config::load(&config)?;
            let m = ventanilla::backup::restore(&config, &from).map_err(|e| anyhow::anyhow!(e))?;
            println!(
                "restored {} messages of {} (backup of {}) into {}",
                m.messages,
                m.party_id,
                m.created_at,
                config.data_dir.display()
            );
        }
        Command::Partner { command: PartnerCommand::Check { link, config } } => {
            init_logging_as("warn", ventanilla::ops::settings::LogFormat::Text);
            let config = Config::load(&config)?;
            let report = ventanilla::ops::partner_check::check(config, &link).await.map_err(|e| anyhow::anyhow!(e))?;
            for line in &report.lines {
                println!("{line}");
            }
            if !report.ok {
                std::process::exit(1);
            }
        }
        Command::Verify { file, truststore, cert, decrypt_key, decrypt_cert } => {
            let options =
                ventanilla::inspect::VerifyOptions { truststore, cert, decrypt: decrypt_key.zip(decrypt_cert) };
            let report = ventanilla::inspect::verify_file(&file, &options).await.map_err(|e| anyhow::anyhow!(e))?;
            for line in &report.lines {
                println!("{line}");
            }
            if !report.valid {
                std::process::exit(1);
            }
            if report.partial {
                std::process::exit(3);
            }
        }
        Command::Payload { command: PayloadCommand::Check { files, document, versions } } => {
            let registry = ventanilla::payload::Registry::standard();
            let context = ventanilla::payload::Context { allowed_versions: versions };
            let mut invalid = 0;
            for file in &files {
                let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
                let kind = document.clone().or_else(|| registry.detect(&bytes).map(|h| h.name().to_owned()));
                match registry.inspect(kind.as_deref(), &bytes, &context) {
                    Ok(d) => {
                        println!("{}: {} {} valid", file.display(), d.kind, d.profile);
                        println!("  number: {}\n  type: {}\n  status: {}", d.number, d.doc_type, d.status);
                        println!(
                            "  from → to: {} → {}",
                            d.origin_country.as_deref().unwrap_or("?"),
                            d.destination_country.as_deref().unwrap_or("?")
                        );
                        for (k, v) in &d.fields {
                            println!("  {k}: {v}");
                        }
                        for w in &d.warnings {
                            println!("  warning: {w}");
                        }
                    }
                    Err(findings) => {
                        invalid += 1;
                        println!("{}: {} INVALID", file.display(), kind.as_deref().unwrap_or("unknown type"));
                        for f in findings {
                            println!("  {f}");
                        }
                    }
                }
            }
            if invalid > 0 {
                std::process::exit(1);
            }
        }
        Command::Pmode { command: PmodeCommand::New { id, profile, parties, legs, out } } => {
            let specs: Vec<ventanilla::pmode_new::PartySpec> = parties
                .iter()
                .map(|p| ventanilla::pmode_new::PartySpec::parse(p))
                .collect::<Result<_, _>>()
                .map_err(|e| anyhow::anyhow!("--party: {e}"))?;
            let Ok(pair) = <[ventanilla::pmode_new::PartySpec; 2]>::try_from(specs) else {
                anyhow::bail!("--party: give exactly two parties");
            };
            let text = ventanilla::pmode_new::draft(&id, &profile, &pair, &legs);
            if let Err(errors) = ventanilla::pmode::parse_link(&out, &text) {
                for e in &errors {
                    eprintln!("{e}");
                }
                anyhow::bail!("the draft does not check; nothing written");
            }
            if out.exists() {
                anyhow::bail!("{} exists; not overwritten", out.display());
            }
            std::fs::write(&out, text)?;
            println!(
                "{}: link {id} drafted ({}, {} <-> {}); check it with your partner, then both load the same file",
                out.display(),
                profile,
                pair[0].id,
                pair[1].id
            );
        }
        Command::Pmode { command: PmodeCommand::Check { path } } => match ventanilla::pmode::load_path(&path) {
            Ok(set) => {
                for link in set.links() {
                    let parties: Vec<&str> = link.parties.iter().map(|p| p.id.as_str()).collect();
                    let legs: Vec<&str> = link.legs.iter().map(|l| l.name.as_str()).collect();
                    println!(
                        "{}: ok: {} ({}) {} legs {}",
                        link.file.display(),
                        link.id,
                        link.profile.as_str(),
                        parties.join(" <-> "),
                        legs.join(", ")
                    );
                }
            }
            Err(errors) => {
                for e in &errors {
                    eprintln!("{e}");
                }
                std::process::exit(1);
            }
        },
        Command::Certs { command: CertsCommand::Request { party, profile, out, host, organisation, country } } => {
            // SAFETY: umask only sets this process's file mode creation mask.
            unsafe { libc::umask(0o077) };
            let made = ventanilla::certs::request_all(
                &out,
                &party,
                &profile,
                host.as_deref(),
                organisation.as_deref(),
                country.as_deref(),
            )
            .map_err(|e| anyhow::anyhow!(e))?;
            for f in &made.files {
                println!("wrote {}", f.display());
            }
            println!("send the .csr files (and the .pub.pem of an X25519 key) to your CA; keep the .key files here");
        }
        Command::Certs { command: CertsCommand::Import { key, cert, profile, usage, ca, to, name } } => {
            let usage = ventanilla::certs::Usage::parse(&usage).context("usage")?;
            let lines = ventanilla::certs::check_issued(&key, &cert, &profile, usage, ca.as_deref())
                .map_err(|e| anyhow::anyhow!("{}: {e}", cert.display()))?;
            for line in &lines {
                println!("ok: {line}");
            }
            let name = name.unwrap_or_else(|| {
                cert.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "certificate".into())
            });
            let (key_to, cert_to) =
                ventanilla::certs::install(&key, &cert, &to, &name).map_err(|e| anyhow::anyhow!(e))?;
            println!("installed {} and {}", key_to.display(), cert_to.display());
            match usage {
                ventanilla::certs::Usage::Tls => {
                    println!("config: [as4] tls_cert = \"{}\"  tls_key = \"{}\"", cert_to.display(), key_to.display())
                }
                _ => println!(
                    "config: [[keys]] profile = \"{profile}\"  {} = {{ key = \"{}\", cert = \"{}\" }}",
                    if usage == ventanilla::certs::Usage::Sign { "sign" } else { "enc" },
                    key_to.display(),
                    cert_to.display()
                ),
            }
        }
        #[cfg(feature = "devtools")]
        Command::Certs { command: CertsCommand::Demo { out, names } } => {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            ventanilla_testkit::demo_pki::write_demo_pki(&out, &names)?;
            println!("demo PKI written to {}", out.display());
        }
        Command::Conformance { args } => {
            // The runner lives in its own crate (conformance/runner), beside the cases.
            let exe = std::env::current_exe()?.with_file_name("ventanilla-conformance");
            let status = std::process::Command::new(&exe).args(&args).status().with_context(|| {
                format!(
                    "cannot run {}; build it with `cargo build -p ventanilla-conformance` (make conformance does)",
                    exe.display()
                )
            })?;
            std::process::exit(status.code().unwrap_or(1));
        }
        #[cfg(feature = "devtools")]
        Command::Demo { work, pmodes, samples, keep_running } => {
            init_logging_as("warn", ventanilla::ops::settings::LogFormat::Text);
            let ok =
                ventanilla::demo::run(&work, &pmodes, &samples, keep_running).await.map_err(|e| anyhow::anyhow!(e))?;
            if !ok {
                std::process::exit(1);
            }
        }
        Command::Send { api, token_env, to, leg, conversation_id, properties, mime_type, dry_run, config, files } => {
            if dry_run {
                let config = config.context("--dry-run needs --config to find the P-Modes")?;
                let config = Config::load(&config)?;
                let pmodes = ventanilla::pmode::load_path(&config.pmodes)
                    .map_err(|e| anyhow::anyhow!(e.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")))?;
                let store = std::sync::Arc::new(ventanilla::store::sqlite::SqliteStore::open(std::path::Path::new(
                    ":memory:",
                ))?);
                let security =
                    ventanilla::msh::security::SecurityContext::load(&config).map_err(|e| anyhow::anyhow!(e))?;
                let ap = ventanilla::msh::AccessPoint::new(config, store, pmodes, security);
                let mut payloads = Vec::new();
                for (i, f) in files.iter().enumerate() {
                    let meta = std::fs::metadata(f).with_context(|| format!("cannot read {}", f.display()))?;
                    payloads.push(ventanilla::store::StoredPayload {
                        content_id: ventanilla::msh::outbound::new_content_id(&ap, i),
                        mime_type: mime_type.clone(),
                        path: f.clone(),
                        size: meta.len(),
                        sha256: String::new(),
                        filename: None,
                        wire_type: None,
                    });
                }
                let properties = properties.into_iter().map(|(n, v)| (n, v, None)).collect();
                let sub = ventanilla::msh::outbound::Submission {
                    to,
                    leg,
                    conversation_id,
                    properties,
                    payloads,
                    unwritten: Default::default(),
                    message_id: None,
                };
                let (um, _, _) = ventanilla::msh::outbound::build_user_message(&ap, &sub)?;
                println!("{}", ventanilla::ebms::write::user_message_envelope(&um));
                return Ok(());
            }
            let token = std::env::var(&token_env).with_context(|| format!("set the API token in ${token_env}"))?;
            let client = ApiClient::new(api.as_deref().unwrap_or_default(), &token);
            let uploads: Vec<Upload> = files.iter().map(|f| Upload { path: f, mime_type: &mime_type }).collect();
            let mut metadata = serde_json::json!({ "to": to, "leg": leg, "properties": properties.into_iter().collect::<std::collections::BTreeMap<_, _>>() });
            if let Some(c) = conversation_id {
                metadata["conversation_id"] = c.into();
            }
            let record = client.submit(&metadata, &uploads).await?;
            println!("{}", serde_json::to_string_pretty(&record)?);
        }
    }
    Ok(())
}

async fn user_command(command: UserCommand) -> anyhow::Result<()> {
    use ventanilla::ops::users::{self, Role};
    // SAFETY: umask only sets this process's file mode creation mask (a new database is 0600).
    unsafe { libc::umask(0o077) };
    let config_of = |path: &PathBuf| -> anyhow::Result<Config> {
        let config = Config::load(path)?;
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
        Ok(config)
    };
    match command {
        UserCommand::Add { config, name, role, password_env } => {
            let config = config_of(&config)?;
            let password = match password_env {
                Some(var) => {
                    std::env::var(&var).map_err(|_| anyhow::anyhow!("environment variable {var} is not set"))?
                }
                None => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line).context("cannot read the password from stdin")?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            let store = ventanilla::node::open_store(&config).await?;
            let role = Role::parse(&role).context("unknown role")?;
            users::put(store.as_ref(), "cli", &name, role, &password).await?;
            println!("user {name}: {} (password stored as an argon2id hash)", role.as_str());
        }
        UserCommand::List { config } => {
            let store = ventanilla::node::open_store(&config_of(&config)?).await?;
            let now = ventanilla::store::now_ms();
            for u in store.users().await? {
                let status = match u.locked_until_ms.filter(|t| *t > now) {
                    Some(until) => format!("locked until {}", ventanilla::store::format_ms(until)),
                    None if u.failures > 0 => format!("{} failed logins", u.failures),
                    None => "ok".into(),
                };
                println!("{}\t{}\t{}", u.name, u.role, status);
            }
        }
        UserCommand::Remove { config, name } => {
            let store = ventanilla::node::open_store(&config_of(&config)?).await?;
            if !users::remove(store.as_ref(), "cli", &name).await? {
                anyhow::bail!("no user named {name}");
            }
            println!("user {name} removed");
        }
    }
    Ok(())
}
