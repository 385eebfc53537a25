//! The access point's own configuration file (TOML). Paths are relative to the file.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This access point's party id; it finds itself in the P-Mode files by it.
    pub party_id: String,
    /// The right-hand side of the MessageIds it generates.
    #[serde(default = "default_host")]
    pub host: String,
    pub data_dir: PathBuf,
    pub pmodes: PathBuf,
    /// Allow links with `profile = "none"` (unsigned, unencrypted). For tests only.
    #[serde(default)]
    pub allow_insecure_profile: bool,
    /// How often the P-Mode folder is checked for changes.
    #[serde(default = "default_reload")]
    pub pmode_reload: String,
    pub as4: As4Config,
    pub backend: BackendConfig,
    /// Endpoint overrides by partner party id (e.g. a test environment's addresses).
    #[serde(default)]
    pub endpoints: BTreeMap<String, String>,
    /// This access point's message keys, per profile. The first entry of a profile signs and
    /// is what partners encrypt to; every entry is tried for decryption (key rollover).
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    #[serde(default)]
    pub security: SecurityConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    #[serde(default)]
    pub store: StoreConfig,
}

/// Where messages are kept: SQLite in `data_dir` (one node), or PostgreSQL shared by several
/// nodes of one access point (then `data_dir` must be a folder every node mounts).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    #[serde(default = "default_store_kind")]
    pub kind: String,
    /// PostgreSQL: a libpq-style connection string without the password.
    pub url: Option<String>,
    /// PostgreSQL: the environment variable holding the password, if any.
    pub password_env: Option<String>,
    #[serde(default = "default_pool")]
    pub pool: usize,
    /// PostgreSQL: how long a node owns a message it is sending before another node may take
    /// it over (longer than the longest link timeout).
    #[serde(default = "default_lease")]
    pub lease: String,
    /// This node's name, distinct per node sharing a store (its staging folder).
    #[serde(default = "default_node")]
    pub node: String,
}

fn default_store_kind() -> String {
    "sqlite".into()
}
fn default_pool() -> usize {
    8
}
fn default_lease() -> String {
    "5m".into()
}
fn default_node() -> String {
    "node".into()
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: default_store_kind(),
            url: None,
            password_env: None,
            pool: default_pool(),
            lease: default_lease(),
            node: default_node(),
        }
    }
}

/// Retention: per state, when content (payload files, envelope) and then the whole message
/// record are removed, counted from the message's last change. Unlisted states are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    #[serde(default = "default_retention_interval")]
    pub interval: String,
    #[serde(default = "default_retention_batch")]
    pub batch: usize,
    #[serde(default)]
    pub states: BTreeMap<String, RetentionRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    pub content: Option<String>,
    pub metadata: Option<String>,
}

fn default_retention_interval() -> String {
    "10m".into()
}
fn default_retention_batch() -> usize {
    1000
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            interval: default_retention_interval(),
            batch: default_retention_batch(),
            states: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// edelivery-1.15 (RSA keys) or edelivery-2.0 (Ed25519 signing, X25519 encryption).
    pub profile: String,
    pub sign: KeyPair,
    pub enc: KeyPair,
}

/// A private key and its certificate: PEM files, or one PKCS#12 file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPair {
    pub key: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub pkcs12: Option<PathBuf>,
    /// Name of the environment variable holding the password (PKCS#12 or encrypted PEM).
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// CA certificates (PEM) trusted for partners' message signing certificates; defaults to
    /// `as4.trust`.
    pub truststore: Option<PathBuf>,
    /// CRL files (PEM or DER) checked for every certificate of a partner's chain.
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    /// When revocation status is unknown: fail-closed (default), fail-open, or off.
    #[serde(default)]
    pub revocation: crate::pki::trust::RevocationPolicy,
    /// Ask OCSP when no CRL answers (the responder named in the certificate, or `ocsp_responder`).
    #[serde(default = "default_true")]
    pub ocsp: bool,
    pub ocsp_responder: Option<String>,
    /// How long an OCSP response is reused, e.g. "1h".
    pub ocsp_cache: Option<String>,
    /// Timeout for the OCSP responder, e.g. "5s".
    pub ocsp_timeout: Option<String>,
}

fn default_true() -> bool {
    true
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            truststore: None,
            crls: Vec::new(),
            revocation: Default::default(),
            ocsp: true,
            ocsp_responder: None,
            ocsp_cache: None,
            ocsp_timeout: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct As4Config {
    pub listen: SocketAddr,
    #[serde(default = "default_path")]
    pub path: String,
    /// TLS server certificate chain and key (PEM).
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// CA certificates (PEM) trusted for partners' TLS server and client certificates.
    pub trust: PathBuf,
    /// Largest accepted request body.
    #[serde(default = "default_max_message")]
    pub max_message: String,
    /// How many outbound messages are sent at once.
    #[serde(default = "default_concurrency")]
    pub send_concurrency: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub listen: SocketAddr,
    /// The API token: inline (tests), from a file, or from an environment variable.
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub token_env: Option<String>,
}

fn default_host() -> String {
    "ventanilla.local".into()
}
fn default_path() -> String {
    "/as4".into()
}
fn default_reload() -> String {
    "2s".into()
}
fn default_max_message() -> String {
    "256MiB".into()
}
fn default_concurrency() -> usize {
    16
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read { file: PathBuf, source: std::io::Error },
    #[error("{file}:{line}: {message}")]
    Parse { file: PathBuf, line: usize, message: String },
    #[error("{file}: {key}: {message}")]
    Invalid { file: PathBuf, key: String, message: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: path.into(), source })?;
        let mut config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            file: path.into(),
            line: e.span().map(|s| text[..s.start].matches('\n').count() + 1).unwrap_or(0),
            message: e.message().to_owned(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve(base);
        config.validate(path)?;
        Ok(config)
    }

    /// Makes every relative path relative to `base`.
    pub fn resolve(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.data_dir);
        fix(&mut self.pmodes);
        fix(&mut self.as4.tls_cert);
        fix(&mut self.as4.tls_key);
        fix(&mut self.as4.trust);
        if let Some(p) = self.backend.token_file.as_mut() {
            fix(p);
        }
        for k in &mut self.keys {
            for pair in [&mut k.sign, &mut k.enc] {
                for p in
                    [&mut pair.key, &mut pair.cert, &mut pair.pkcs12, &mut pair.password_file].into_iter().flatten()
                {
                    fix(p);
                }
            }
        }
        if let Some(p) = self.security.truststore.as_mut() {
            fix(p);
        }
        for p in &mut self.security.crls {
            fix(p);
        }
    }

    fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid { file: file.into(), key: key.into(), message };
        if crate::util::parse_size(&self.as4.max_message).is_none() {
            return Err(invalid("as4.max_message", format!("'{}' is not a size", self.as4.max_message)));
        }
        if crate::util::parse_duration(&self.pmode_reload).is_none() {
            return Err(invalid("pmode_reload", format!("'{}' is not a duration", self.pmode_reload)));
        }
        self.api_token().map_err(|m| invalid("backend.token", m))?;
        for (key, value) in
            [("security.ocsp_cache", &self.security.ocsp_cache), ("security.ocsp_timeout", &self.security.ocsp_timeout)]
        {
            if let Some(v) = value
                && crate::util::parse_duration(v).is_none()
            {
                return Err(invalid(key, format!("'{v}' is not a duration")));
            }
        }
        Ok(())
    }

    pub fn max_message_bytes(&self) -> u64 {
        crate::util::parse_size(&self.as4.max_message).unwrap_or(256 << 20)
    }

    pub fn reload_interval(&self) -> std::time::Duration {
        crate::util::parse_duration(&self.pmode_reload).unwrap_or(std::time::Duration::from_secs(2))
    }

    /// The backend API token; exactly one source must be set and the token not be short.
    pub fn api_token(&self) -> Result<String, String> {
        let b = &self.backend;
        let token = match (&b.token, &b.token_file, &b.token_env) {
            (Some(t), None, None) => t.clone(),
            (None, Some(f), None) => std::fs::read_to_string(f)
                .map_err(|e| format!("cannot read token_file {}: {e}", f.display()))?
                .trim()
                .to_owned(),
            (None, None, Some(v)) => std::env::var(v).map_err(|_| format!("environment variable {v} is not set"))?,
            _ => return Err("set exactly one of token, token_file, token_env".into()),
        };
        if token.len() < 16 {
            return Err("the token must be at least 16 characters".into());
        }
        Ok(token)
    }
}
