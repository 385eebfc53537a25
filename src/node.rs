//! Assembles a running access point: store, P-Modes, AS4 server, backend API, sender and
//! P-Mode watcher, all stopped by one cancellation token.

use crate::config::Config;
use crate::msh::{AccessPoint, inbound, outbound, pmode_watch};
use crate::store::sqlite::SqliteStore;
use crate::transport::{PeerCertificates, serve_plain, serve_tls};
use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Pmodes(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Tls(#[from] crate::transport::tls::TlsError),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{0}")]
    Config(String),
}

type SharedStore = Arc<dyn crate::store::MessageStore>;

/// Puts a store in between (see [`Node::start_wrapped`]).
#[derive(Clone)]
pub struct StoreWrapper(pub Arc<dyn Fn(SharedStore) -> SharedStore + Send + Sync>);

impl std::fmt::Debug for StoreWrapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreWrapper")
    }
}

pub struct Node {
    pub ap: Arc<AccessPoint>,
    pub as4_addr: SocketAddr,
    pub backend_addr: SocketAddr,
    /// The console, `/metrics` and `/health/*` listener, when `[console]` is configured.
    pub console_addr: Option<SocketAddr>,
    pub shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Node {
    /// Binds the configured addresses and starts.
    pub async fn start(config: Config) -> Result<Node, StartError> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Io { what: format!("cannot listen on {addr}"), source })
        };
        let as4 = bind(config.as4.listen).await?;
        let backend = bind(config.backend.listen).await?;
        Node::start_with(config, as4, backend).await
    }

    /// Starts on listeners bound by the caller (the demo and tests pick free ports first).
    pub async fn start_with(config: Config, as4: TcpListener, backend: TcpListener) -> Result<Node, StartError> {
        Node::start_wrapped(config, as4, backend, None).await
    }

    /// [`Node::start_with`], with the store passed through `wrap` first (tests put a store
    /// in between that stalls or fails at chosen moments).
    pub async fn start_wrapped(
        config: Config,
        as4: TcpListener,
        backend: TcpListener,
        wrap: Option<&StoreWrapper>,
    ) -> Result<Node, StartError> {
        let (watcher, pmodes) = crate::msh::pmode_watch::Watcher::load(&config.pmodes).map_err(|errors| {
            StartError::Pmodes(errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
        })?;
        if pmodes.links_of(&config.party_id).next().is_none() {
            return Err(StartError::Config(unknown_party(&config)));
        }
        let token = config.api_token().map_err(StartError::Config)?;
        // Decrypted payloads and the database are for this service only: folders 0700.
        for path in
            [config.data_dir.clone()].into_iter().chain(["tmp", "inbound", "outbound"].map(|d| config.data_dir.join(d)))
        {
            private_dir(&path)
                .map_err(|source| StartError::Io { what: format!("cannot create {}", path.display()), source })?;
        }
        for warning in key_file_warnings(&config) {
            tracing::warn!("{warning}");
        }
        // Staged parts of requests cut short by a crash are garbage: the sender never got a receipt.
        let staging = config.data_dir.join("tmp").join(&config.store.node);
        let _ = std::fs::remove_dir_all(&staging);
        let _ = std::fs::create_dir_all(&staging);
        let store = open_store(&config).await?;
        let store = match wrap {
            Some(wrap) => (wrap.0)(store),
            None => store,
        };
        // Payload files a power loss took before their checkpoint come back from their copies
        // in the store, before anything reads them.
        let file_sync = Arc::new(crate::store::durability::FileSync::new(&config.data_dir, config.store.file_sync));
        match crate::store::durability::repair(store.as_ref(), &file_sync).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(count = n, "payload files written back from their copies in the store"),
            Err(e) => {
                return Err(StartError::Io {
                    what: "cannot restore payload files from their copies in the store".into(),
                    source: std::io::Error::other(e),
                });
            }
        }
        // Payload files named by no row: a crash (or an ambiguous store error) between the
        // rename and the commit. On a shared store other nodes may be mid-write: only old ones go.
        let grace = if store.shared() { std::time::Duration::from_secs(600) } else { std::time::Duration::ZERO };
        match crate::store::files::sweep_orphans(store.as_ref(), &config.data_dir, grace).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(count = n, "removed payload files left by an interrupted write"),
            Err(e) => tracing::error!(error = %e, "cannot check for orphaned payload files"),
        }
        let tls = {
            let (cert, key, trust) =
                (config.as4.tls_cert.clone(), config.as4.tls_key.clone(), config.as4.trust.clone());
            crate::transport::tls::TlsSource::watching(vec![cert.clone(), key.clone(), trust.clone()], move || {
                crate::transport::tls::server_config(&cert, &key, &trust)
            })?
        };
        let security = crate::msh::security::SecurityContext::load(&config).map_err(StartError::Config)?;
        for link in pmodes.links_of(&config.party_id) {
            if link.profile.is_secure() && security.for_profile(link.profile).is_none() {
                tracing::warn!(pmode = %link.id, profile = link.profile.as_str(), "no [[keys]] entry for this profile: the link cannot exchange messages");
            }
        }
        let console = match &config.console {
            Some(settings) => {
                let listener = TcpListener::bind(settings.listen).await.map_err(|source| StartError::Io {
                    what: format!("cannot listen on {} (console.listen)", settings.listen),
                    source,
                })?;
                let tls = match (&settings.tls_cert, &settings.tls_key) {
                    (Some(cert), Some(key)) => {
                        let (cert, key) = (cert.clone(), key.clone());
                        Some(crate::transport::tls::TlsSource::watching(vec![cert.clone(), key.clone()], move || {
                            crate::transport::tls::plain_server_config(&cert, &key)
                        })?)
                    }
                    _ => None,
                };
                if tls.is_none() && !settings.listen.ip().is_loopback() {
                    tracing::warn!(listen = %settings.listen, "the console listens on a non-loopback address without TLS: passwords and session cookies cross the network in clear");
                }
                Some((listener, tls, settings.clone()))
            }
            None => None,
        };
        let backend_tls = backend_tls(&config.backend)?;
        let as4_path = config.as4.path.clone();
        let iop_path = config.iop.path.clone();
        let ap = AccessPoint::new(config, store, pmodes, security);
        let started = crate::store::now_ms();
        for file in watcher.loaded_files() {
            ap.ops.pmode_file_loaded(file, started);
        }
        let shutdown = CancellationToken::new();
        let as4_addr = as4.local_addr().map_err(|source| StartError::Io { what: "AS4 listener".into(), source })?;
        let backend_addr =
            backend.local_addr().map_err(|source| StartError::Io { what: "backend listener".into(), source })?;
        let mut as4_router = Router::new().route(&as4_path, post(receive_as4));
        if iop_path != as4_path {
            as4_router = as4_router.route(&iop_path, post(receive_iop));
            // CXF serves the operation with and without the trailing slash.
            let other = match iop_path.strip_suffix('/') {
                Some(bare) if !bare.is_empty() => bare.to_owned(),
                _ => format!("{iop_path}/"),
            };
            if other != as4_path {
                as4_router = as4_router.route(&other, post(receive_iop));
            }
        }
        let as4_router = as4_router.with_state(ap.clone());
        let backend_router = crate::backend::router(ap.clone(), token);
        let mut tasks = vec![
            tokio::spawn(serve_tls(as4, tls, as4_router, ap.config.as4.connections, shutdown.clone())),
            match backend_tls {
                Some(tls) => {
                    tokio::spawn(serve_tls(backend, tls, backend_router, ap.config.as4.connections, shutdown.clone()))
                }
                None => tokio::spawn(serve_plain(backend, backend_router, shutdown.clone())),
            },
            tokio::spawn(outbound::run_sender(ap.clone(), shutdown.clone())),
            tokio::spawn(pmode_watch::run(ap.clone(), watcher, shutdown.clone())),
            tokio::spawn(crate::msh::retention::run(ap.clone(), shutdown.clone())),
            tokio::spawn(crate::msh::pull::run(ap.clone(), shutdown.clone())),
            tokio::spawn(crate::ops::alerts::run(ap.clone(), shutdown.clone())),
            tokio::spawn(crate::push::run(ap.clone(), shutdown.clone())),
            tokio::spawn(crate::store::durability::run_checkpoints(ap.clone(), shutdown.clone())),
        ];
        let mut console_addr = None;
        if let Some((listener, tls, settings)) = console {
            let addr =
                listener.local_addr().map_err(|source| StartError::Io { what: "console listener".into(), source })?;
            let router = crate::ops::console::router(ap.clone(), settings);
            tasks.push(match tls {
                Some(tls) => {
                    tokio::spawn(serve_tls(listener, tls, router, ap.config.as4.connections, shutdown.clone()))
                }
                None => tokio::spawn(serve_plain(listener, router, shutdown.clone())),
            });
            console_addr = Some(addr);
        }
        tracing::info!(party = %ap.me(), %as4_addr, %backend_addr, console = ?console_addr, "access point started");
        Ok(Node { ap, as4_addr, backend_addr, console_addr, shutdown, tasks })
    }

    pub async fn stop(self) {
        self.stop_within(std::time::Duration::from_secs(30)).await;
    }

    /// Graceful stop: no new connections or work, then up to `grace` for what is in flight
    /// (requests being answered, messages being sent) to finish. Returns whether everything
    /// finished; what is cut off is safe (a send in progress is resent at the next start, a
    /// request not yet committed was never receipted).
    pub async fn stop_within(self, grace: std::time::Duration) -> bool {
        self.shutdown.cancel();
        let ap = self.ap.clone();
        let everything = async move {
            for t in self.tasks {
                let _ = t.await;
            }
            ap.tasks.close();
            ap.tasks.wait().await;
        };
        match tokio::time::timeout(grace, everything).await {
            Ok(()) => {
                tracing::info!("stopped; nothing was in flight");
                true
            }
            Err(_) => {
                tracing::warn!(
                    in_flight = self.ap.tasks.len(),
                    ?grace,
                    "stopped with work in flight; interrupted sends are resent at the next start"
                );
                false
            }
        }
    }
}

/// Opens the configured store (SQLite in the data folder, or PostgreSQL), creating or
/// migrating its schema.
pub async fn open_store(config: &Config) -> Result<SharedStore, StartError> {
    let store: SharedStore = match config.store.kind {
        crate::config::StoreKind::Postgres => {
            let mut url = config.store.url.clone().unwrap_or_default();
            if let Some(var) = &config.store.password_env {
                let password = std::env::var(var)
                    .map_err(|_| StartError::Config(format!("store.password_env: {var} is not set")))?;
                url.push_str(&format!(" password='{}'", password.replace('\\', "\\\\").replace('\'', "\\'")));
            }
            let lease = config.store.lease.0;
            Arc::new(crate::store::postgres::PostgresStore::connect(&url, config.store.pool, lease).await?)
        }
        crate::config::StoreKind::Sqlite => {
            let path = config.data_dir.join("messages.db");
            let store = SqliteStore::open(&path)?;
            // A database made by an earlier version (or under another umask) is made private.
            for file in [path.clone(), path.with_extension("db-wal"), path.with_extension("db-shm")] {
                use std::os::unix::fs::PermissionsExt;
                if file.exists() {
                    let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600));
                }
            }
            Arc::new(store)
        }
    };
    Ok(store)
}

/// The backend API's TLS configuration, when it has one (with client certificates required
/// when `client_ca` is set).
fn backend_tls(
    backend: &crate::config::BackendConfig,
) -> Result<Option<Arc<crate::transport::tls::TlsSource>>, crate::transport::tls::TlsError> {
    use crate::transport::tls::{TlsSource, client_auth_server_config, plain_server_config};
    Ok(match (backend.tls_cert.clone(), backend.tls_key.clone(), backend.client_ca.clone()) {
        (Some(cert), Some(key), Some(ca)) => {
            Some(TlsSource::watching(vec![cert.clone(), key.clone(), ca.clone()], move || {
                client_auth_server_config(&cert, &key, &ca)
            })?)
        }
        (Some(cert), Some(key), None) => {
            Some(TlsSource::watching(vec![cert.clone(), key.clone()], move || plain_server_config(&cert, &key))?)
        }
        _ => None,
    })
}

/// Creates `path` (and its parents) and makes it 0700.
fn private_dir(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

/// Private key and password files that the group or others may read.
pub fn key_file_warnings(config: &Config) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut files: Vec<(&str, &std::path::Path)> = vec![("as4.tls_key", config.as4.tls_key.as_path())];
    for k in &config.keys {
        for pair in [&k.sign, &k.enc] {
            for p in [&pair.key, &pair.pkcs12, &pair.password_file].into_iter().flatten() {
                files.push(("keys", p.as_path()));
            }
        }
    }
    if let Some(f) = &config.backend.token_file {
        files.push(("backend.token_file", f.as_path()));
    }
    if let Some(key) = config.console.as_ref().and_then(|c| c.tls_key.as_ref()) {
        files.push(("console.tls_key", key.as_path()));
    }
    if let Some(secret) = config.alerts.webhook.as_ref().and_then(|w| w.secret_file.as_ref()) {
        files.push(("alerts.webhook.secret_file", secret.as_path()));
    }
    files
        .into_iter()
        .filter_map(|(key, file)| {
            let mode = std::fs::metadata(file).ok()?.permissions().mode();
            (mode & 0o077 != 0).then(|| {
                format!(
                    "{key}: {} is readable by {} (mode {:o}); make it 0600",
                    file.display(),
                    if mode & 0o007 != 0 { "everyone" } else { "its group" },
                    mode & 0o777
                )
            })
        })
        .collect()
}

fn unknown_party(config: &Config) -> String {
    format!(
        "party_id: '{}' is a party of no P-Mode in {}: a typo, or the P-Modes of another access point",
        config.party_id,
        config.pmodes.display()
    )
}

/// What `ventanilla config check` reports, one line per check.
pub struct CheckReport {
    pub lines: Vec<String>,
    pub errors: Vec<String>,
}

/// Checks a loaded config and everything it points to, without starting: the P-Modes (and
/// that this party is in one), the TLS certificate and key, the message keys and trust, the
/// API token, and for each link of this party whether the profile has keys.
pub fn check(config: &Config) -> CheckReport {
    let mut report = CheckReport { lines: Vec::new(), errors: Vec::new() };
    match crate::pmode::load_path(&config.pmodes) {
        Ok(set) => {
            let links: Vec<String> = set.links_of(&config.party_id).map(|l| l.id.clone()).collect();
            if links.is_empty() {
                report.errors.push(unknown_party(config));
            } else {
                report.lines.push(format!(
                    "pmodes: {} links for {}: {}",
                    links.len(),
                    config.party_id,
                    links.join(", ")
                ));
            }
            match crate::msh::security::SecurityContext::load(config) {
                Ok(security) => {
                    report.lines.push("keys and message trust: ok".into());
                    for link in set.links_of(&config.party_id) {
                        if link.profile.is_secure() && security.for_profile(link.profile).is_none() {
                            report.errors.push(format!(
                                "P-Mode {} ({}): uses {}, but no [[keys]] entry has that profile",
                                link.id,
                                link.file.display(),
                                link.profile.as_str()
                            ));
                        }
                    }
                }
                Err(e) => report.errors.push(format!("keys: {e}")),
            }
        }
        Err(errors) => report.errors.extend(errors.iter().map(ToString::to_string)),
    }
    match crate::transport::tls::server_config(&config.as4.tls_cert, &config.as4.tls_key, &config.as4.trust) {
        Ok(_) => report.lines.push(format!("as4 TLS: ok ({})", config.as4.tls_cert.display())),
        Err(e) => report.errors.push(format!("as4.tls_cert/tls_key/trust: {e}")),
    }
    match config.api_token() {
        Ok(_) => report.lines.push("backend token: ok".into()),
        Err(e) => report.errors.push(format!("backend.token: {e}")),
    }
    match backend_tls(&config.backend) {
        Ok(Some(_)) => report.lines.push(format!(
            "backend API: https://{}/{}",
            config.backend.listen,
            if config.backend.client_ca.is_some() { " (client certificates required)" } else { "" }
        )),
        Ok(None) => report.lines.push(format!("backend API: http://{}/", config.backend.listen)),
        Err(e) => report.errors.push(format!("backend.tls_cert/tls_key/client_ca: {e}")),
    }
    if let Some(console) = &config.console {
        match (&console.tls_cert, &console.tls_key) {
            (Some(cert), Some(key)) => match crate::transport::tls::plain_server_config(cert, key) {
                Ok(_) => report.lines.push(format!("console: https://{}/ ({})", console.listen, cert.display())),
                Err(e) => report.errors.push(format!("console.tls_cert/tls_key: {e}")),
            },
            _ if console.listen.ip().is_loopback() => {
                report.lines.push(format!("console: http://localhost:{}/", console.listen.port()))
            }
            _ => report.lines.push(format!(
                "warning: console.listen {} is not loopback and has no TLS: passwords would cross the network in clear",
                console.listen
            )),
        }
    }
    if let Some(webhook) = &config.alerts.webhook {
        match (&webhook.secret_env, &webhook.secret_file) {
            (Some(var), _) if std::env::var_os(var).is_none() => {
                report.errors.push(format!("alerts.webhook.secret_env: environment variable {var} is not set"))
            }
            (None, Some(file)) if std::fs::metadata(file).is_err() => {
                report.errors.push(format!("alerts.webhook.secret_file: cannot read {}", file.display()))
            }
            _ => report.lines.push(format!("alerts: webhook {}", webhook.url)),
        }
    }
    if let Some(email) = &config.alerts.email {
        if let Some(var) = email.password_env.as_ref().filter(|v| std::env::var_os(v).is_none()) {
            report.errors.push(format!("alerts.email.password_env: environment variable {var} is not set"));
        } else {
            report.lines.push(format!("alerts: e-mail to {} via {}:{}", email.to.join(", "), email.server, email.port));
        }
    }
    report.lines.extend(key_file_warnings(config).into_iter().map(|w| format!("warning: {w}")));
    report
}

/// The checks that must pass before `serve` binds anything.
pub fn preflight(config: &Config) -> Result<(), String> {
    let report = check(config);
    if report.errors.is_empty() { Ok(()) } else { Err(report.errors.join("\n")) }
}

async fn receive_as4(State(ap): State<Arc<AccessPoint>>, request: Request) -> Response {
    let peer = request.extensions().get::<PeerCertificates>().cloned().unwrap_or_default();
    let content_type =
        request.headers().get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    // A request that announces more than we accept is answered before its body is read: the
    // sender gets an ebMS error (EBMS:0007), not just a closed connection.
    let announced = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(length) = announced.filter(|l| *l > ap.config.max_message_bytes()) {
        let error = crate::ebms::EbmsError::new(
            crate::ebms::EbmsCode::MimeInconsistency,
            format!(
                "the request has {length} bytes; this access point accepts at most {} (as4.max_message)",
                ap.config.max_message_bytes()
            ),
        );
        tracing::warn!(length, "refused: request larger than as4.max_message");
        let reply = inbound::error_reply(&ap, error, None);
        let status = axum::http::StatusCode::from_u16(reply.status).unwrap_or(axum::http::StatusCode::BAD_REQUEST);
        return (status, [(axum::http::header::CONTENT_TYPE, "application/soap+xml; charset=UTF-8")], reply.body)
            .into_response();
    }
    let limits = ap.config.as4.connections;
    let body = crate::transport::server::paced(
        request.into_body().into_data_stream(),
        limits.body_idle_timeout.0,
        limits.min_rate.0,
    );
    let reply = inbound::receive(ap, peer, content_type, body).await;
    let status =
        axum::http::StatusCode::from_u16(reply.status).unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    if let Some((content_type, stream)) = reply.stream {
        // A pulled message: streamed from its files.
        return (status, [(axum::http::header::CONTENT_TYPE, content_type)], axum::body::Body::from_stream(stream))
            .into_response();
    }
    if reply.body.is_empty() {
        return status.into_response();
    }
    (status, [(axum::http::header::CONTENT_TYPE, "application/soap+xml; charset=UTF-8")], reply.body).into_response()
}

/// The legacy IOP service (`[iop] path` on the AS4 listener): the body is read whole, up to
/// the largest certificate a message may carry, then handed to the owned IOP pipeline.
async fn receive_iop(State(ap): State<Arc<AccessPoint>>, request: Request) -> Response {
    let peer = request.extensions().get::<PeerCertificates>().cloned().unwrap_or_default();
    let limit = crate::iop::soap::limits(crate::payload::MAX_DOCUMENT_BYTES).max_bytes;
    let soap = |status: axum::http::StatusCode, body: Vec<u8>| {
        (status, [(axum::http::header::CONTENT_TYPE, "text/xml; charset=utf-8")], body).into_response()
    };
    let limits = ap.config.as4.connections;
    let body = crate::transport::server::paced(
        request.into_body().into_data_stream(),
        limits.body_idle_timeout.0,
        limits.min_rate.0,
    );
    let bytes = match read_bounded(body, limit).await {
        Ok(bytes) => bytes,
        Err(why) => {
            tracing::warn!(reason = %why, "IOP request not read");
            let falla = crate::iop::Falla {
                cabecera: None,
                detalles: vec![crate::iop::Detalle::new(crate::iop::code::MALFORMED, why)],
            };
            return soap(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                crate::iop::soap::fault_envelope(&falla, true).into_bytes(),
            );
        }
    };
    let reply = crate::msh::iop::receive(ap, peer.1, bytes).await;
    soap(
        axum::http::StatusCode::from_u16(reply.status).unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR),
        reply.body,
    )
}

async fn read_bounded<S, E>(mut body: S, limit: usize) -> Result<bytes::Bytes, String>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    use futures_util::StreamExt;
    let mut collected = bytes::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("the request body broke off: {e}"))?;
        if collected.len() + chunk.len() > limit {
            return Err(format!("the request exceeds {limit} bytes"));
        }
        collected.extend_from_slice(&chunk);
    }
    Ok(collected.freeze())
}
