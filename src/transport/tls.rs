//! rustls configurations (ring provider) for the AS4 server and client.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{file}: {message}")]
    File { file: String, message: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_err = |message: String| TlsError::File { file: path.display().to_string(), message };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(file_err("no PEM certificate found".into()));
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| TlsError::File { file: path.display().to_string(), message: e.to_string() })
}

fn roots(trust: &Path) -> Result<Arc<rustls::RootCertStore>, TlsError> {
    let mut store = rustls::RootCertStore::empty();
    for cert in load_certs(trust)? {
        store.add(cert).map_err(|e| TlsError::Config(e.to_string()))?;
    }
    Ok(Arc::new(store))
}

/// A server with our certificate for HTTP/1.1, checking client certificates with `verifier`
/// (none: no client authentication).
fn server_with(
    cert: &Path,
    key: &Path,
    verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config =
        builder.with_single_cert(load_certs(cert)?, load_key(key)?).map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The server asks for a client certificate but does not require one: links that require
/// client authentication are enforced per P-Mode once the partner is known.
pub fn server_config(cert: &Path, key: &Path, trust: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots(trust)?, provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    server_with(cert, key, Some(verifier))
}

/// A server that requires a client certificate issued by one of the CAs in `client_ca` (the
/// backend API with mutual TLS).
pub fn client_auth_server_config(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots(client_ca)?, provider())
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    server_with(cert, key, Some(verifier))
}

/// A server without client authentication (the web console).
pub fn plain_server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    server_with(cert, key, None)
}

/// TLS 1.2 and 1.3 only (rustls has nothing older); a client certificate when given.
pub fn client_config(trust: &Path, client_auth: Option<(&Path, &Path)>) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots(trust)?);
    let config = match client_auth {
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| TlsError::Config(e.to_string()))?,
        None => builder.with_no_client_auth(),
    };
    Ok(config)
}

/// Modification time and size of each file (what says a file was replaced).
pub type FileStamps = Vec<Option<(std::time::SystemTime, u64)>>;

pub fn file_stamps(files: &[std::path::PathBuf]) -> FileStamps {
    files.iter().map(|f| std::fs::metadata(f).ok().and_then(|m| Some((m.modified().ok()?, m.len())))).collect()
}

/// A listener's TLS configuration, rebuilt when one of its files (certificate, key, trusted
/// CAs) is replaced: a renewed certificate or a new partner CA takes effect at the next
/// connection, without a restart. A replacement that does not load keeps the one in force.
type Build = Box<dyn Fn() -> Result<Arc<rustls::ServerConfig>, TlsError> + Send + Sync>;

pub struct TlsSource {
    files: Vec<std::path::PathBuf>,
    build: Option<Build>,
    current: std::sync::Mutex<(FileStamps, Arc<rustls::ServerConfig>)>,
}

impl TlsSource {
    /// Built now from `files` by `build`, and again whenever they change.
    pub fn watching(
        files: Vec<std::path::PathBuf>,
        build: impl Fn() -> Result<Arc<rustls::ServerConfig>, TlsError> + Send + Sync + 'static,
    ) -> Result<Arc<TlsSource>, TlsError> {
        let stamps = file_stamps(&files);
        let config = build()?;
        Ok(Arc::new(TlsSource {
            files,
            build: Some(Box::new(build)),
            current: std::sync::Mutex::new((stamps, config)),
        }))
    }

    /// A configuration that never changes (tests, scripted peers).
    pub fn fixed(config: Arc<rustls::ServerConfig>) -> Arc<TlsSource> {
        Arc::new(TlsSource { files: Vec::new(), build: None, current: std::sync::Mutex::new((Vec::new(), config)) })
    }

    /// The configuration for a new connection (a few `stat` calls; rebuilt after a change).
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        let mut current = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(build) = &self.build {
            let now = file_stamps(&self.files);
            if now != current.0 {
                match build() {
                    Ok(config) => {
                        tracing::info!(files = ?self.files, "TLS certificate or trust reloaded");
                        current.1 = config;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "ALERT: a replaced TLS file does not load; the previous one stays in force")
                    }
                }
                current.0 = now;
            }
        }
        current.1.clone()
    }
}
