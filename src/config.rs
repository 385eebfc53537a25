//! The access point's own configuration file (TOML). Paths are relative to the file.
//!
//! Parsed, not guessed: sizes, durations, the store kind and retention states are typed, and
//! every mistake is an error that names the file, the line and the key
//! (`ventanilla.toml:14: store.kind: unknown variant `sqlit`, expected `sqlite` or `postgres``),
//! never a silent default. `ventanilla config check FILE` runs every check without starting.

use crate::lifecycle::State;
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
    pub pmode_reload: Interval,
    /// On SIGTERM or SIGINT, how long exchanges in flight may take to finish before the
    /// process exits anyway (what is cut off is resent at the next start).
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: Interval,
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
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The web console, metrics and health listener (off unless the section is present).
    pub console: Option<crate::ops::settings::ConsoleConfig>,
    #[serde(default)]
    pub health: crate::ops::settings::HealthConfig,
    #[serde(default)]
    pub alerts: crate::ops::settings::AlertsConfig,
    #[serde(default)]
    pub logging: crate::ops::settings::LoggingConfig,
    /// Push delivery of received messages (webhooks, folders), first match wins.
    #[serde(default, rename = "delivery")]
    pub deliveries: Vec<crate::push::settings::DeliveryRule>,
    /// Submission by dropping files into a folder.
    pub submit_folder: Option<crate::push::settings::SubmitFolder>,
    /// The legacy Pacific Alliance IOP service, for links with `transport = "iop"` legs.
    #[serde(default)]
    pub iop: IopConfig,
}

/// `[iop]`: where legacy partners reach us, and how we sign SPS certificates.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IopConfig {
    /// The path on the AS4 listener that serves `EnvioCertificadoFitosanitario`.
    #[serde(default = "default_iop_path")]
    pub path: String,
    /// An RSA key and certificate that sign the SPS certificates the backend submits unsigned
    /// (the single window's document signer); without it, the edelivery-1.15 signing key.
    pub document_key: Option<KeyPair>,
}

impl Default for IopConfig {
    fn default() -> Self {
        IopConfig { path: default_iop_path(), document_key: None }
    }
}

fn default_iop_path() -> String {
    crate::iop::DEFAULT_PATH.to_owned()
}

/// How much of each repeated ebMS element a message may carry, received or submitted. What
/// this access point would refuse from a partner it also refuses from its backend (422), so it
/// never sends what a receiver with the same limits refuses.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    #[serde(default = "default_max_properties")]
    pub max_properties: usize,
    #[serde(default = "default_max_part_properties")]
    pub max_part_properties: usize,
    /// Payloads in one message (the MIME reader also refuses more than 64 parts).
    #[serde(default = "default_max_parts")]
    pub max_parts: usize,
    #[serde(default = "default_max_party_ids")]
    pub max_party_ids: usize,
}

fn default_max_properties() -> usize {
    crate::ebms::tree::Limits::default().max_properties
}
fn default_max_part_properties() -> usize {
    crate::ebms::tree::Limits::default().max_part_properties
}
fn default_max_parts() -> usize {
    crate::ebms::tree::Limits::default().max_parts
}
fn default_max_party_ids() -> usize {
    crate::ebms::tree::Limits::default().max_party_ids
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_properties: default_max_properties(),
            max_part_properties: default_max_part_properties(),
            max_parts: default_max_parts(),
            max_party_ids: default_max_party_ids(),
        }
    }
}

/// Where messages are kept: SQLite in `data_dir` (one node), or PostgreSQL shared by several
/// nodes of one access point (then `data_dir` must be a folder every node mounts).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    #[serde(default)]
    pub kind: StoreKind,
    /// PostgreSQL: a libpq-style connection string without the password.
    pub url: Option<String>,
    /// PostgreSQL: the environment variable holding the password, if any.
    pub password_env: Option<String>,
    #[serde(default = "default_pool")]
    pub pool: usize,
    /// PostgreSQL: how long a node owns a message it is sending before another node may take
    /// it over (longer than the longest link timeout).
    #[serde(default = "default_lease")]
    pub lease: Interval,
    /// This node's name, distinct per node sharing a store (its staging folder).
    #[serde(default = "default_node")]
    pub node: String,
    /// How payload files are made durable before their row commits: `filesystem` (one shared
    /// `syncfs` of the data folder's filesystem for concurrent messages) or `each` (one fsync
    /// per file and folder).
    #[serde(default)]
    pub file_sync: crate::store::durability::FileSyncMode,
}

/// Where messages are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// One node: `data_dir/messages.db`.
    #[default]
    Sqlite,
    /// Several nodes of one access point sharing a database.
    Postgres,
}

fn default_pool() -> usize {
    8
}
fn default_lease() -> Interval {
    Interval::secs(300)
}
fn default_node() -> String {
    "node".into()
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::default(),
            url: None,
            password_env: None,
            pool: default_pool(),
            lease: default_lease(),
            node: default_node(),
            file_sync: Default::default(),
        }
    }
}

/// Retention: per state, when content (payload files, envelope) and then the whole message
/// record are removed, counted from the message's last change. Unlisted states are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    #[serde(default = "default_retention_interval")]
    pub interval: Interval,
    #[serde(default = "default_retention_batch")]
    pub batch: usize,
    /// By message state (`acknowledged`, `failed`, `delivered`…; a misspelt state is an error).
    #[serde(default)]
    pub states: BTreeMap<State, RetentionRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    /// After this long, the payload files and envelope go (the record and receipt stay).
    pub content: Option<Interval>,
    /// After this long, the whole record goes.
    pub metadata: Option<Interval>,
}

fn default_retention_interval() -> Interval {
    Interval::secs(600)
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
    pub ocsp_cache: Option<Interval>,
    /// Timeout for the OCSP responder, e.g. "5s".
    pub ocsp_timeout: Option<Interval>,
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
    pub max_message: ByteSize,
    /// How many outbound messages are sent at once.
    #[serde(default = "default_concurrency")]
    pub send_concurrency: usize,
    /// What one connection, and one remote address, may hold of this port.
    #[serde(default)]
    pub connections: ConnectionLimits,
}

/// Limits on the AS4 port's connections, against slow or too many clients.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionLimits {
    /// Open connections at once; also kept 64 below the process's file-descriptor limit, so
    /// the store, the payload files and the P-Mode watcher always have descriptors left.
    #[serde(default = "default_max_connections")]
    pub max: usize,
    /// Open connections from one remote IP address.
    #[serde(default = "default_per_address")]
    pub per_address: usize,
    /// Time to send the request headers (after the TLS handshake).
    #[serde(default = "default_header_timeout")]
    pub header_timeout: Interval,
    /// Longest silence inside a request body.
    #[serde(default = "default_body_idle_timeout")]
    pub body_idle_timeout: Interval,
    /// Slowest average body rate, in bytes per second, once a body has taken 10 seconds.
    #[serde(default = "default_min_rate")]
    pub min_rate: ByteSize,
}

fn default_max_connections() -> usize {
    512
}
fn default_per_address() -> usize {
    64
}
fn default_header_timeout() -> Interval {
    Interval::secs(30)
}
fn default_body_idle_timeout() -> Interval {
    Interval::secs(30)
}
fn default_min_rate() -> ByteSize {
    ByteSize(1024)
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max: default_max_connections(),
            per_address: default_per_address(),
            header_timeout: default_header_timeout(),
            body_idle_timeout: default_body_idle_timeout(),
            min_rate: default_min_rate(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub listen: SocketAddr,
    /// The API token: inline (tests), from a file, or from an environment variable.
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub token_env: Option<String>,
    /// HTTPS for the API (PEM): both or neither.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// With TLS, require a client certificate issued by one of these CAs (PEM).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Plain HTTP on an address other than loopback: refused unless this is true (the token
    /// and the documents would cross the network in clear).
    #[serde(default)]
    pub allow_plain_http: bool,
}

fn default_host() -> String {
    "ventanilla.local".into()
}
fn default_path() -> String {
    "/as4".into()
}
fn default_reload() -> Interval {
    Interval::secs(2)
}
fn default_shutdown_grace() -> Interval {
    Interval::secs(30)
}
fn default_max_message() -> ByteSize {
    ByteSize(256 << 20)
}

/// A size in a config file: `"256MiB"`, `"512KiB"`, `"10MB"`, `"1000"` or a plain integer
/// (bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, String> {
        crate::util::parse_size(value)
            .map(ByteSize)
            .ok_or_else(|| format!("'{value}' is not a size (e.g. 256MiB, 512KiB, 10MB, 1000)"))
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d).map_err(|_| serde::de::Error::custom("expected a size such as \"256MiB\""))? {
            Raw::Bytes(n) => Ok(ByteSize(n)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A duration in a config file: `"250ms"`, `"30s"`, `"5m"`, `"1h"`, `"30d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Interval(pub std::time::Duration);

impl Interval {
    pub const fn secs(n: u64) -> Interval {
        Interval(std::time::Duration::from_secs(n))
    }
}

impl std::str::FromStr for Interval {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, String> {
        crate::util::parse_duration(value)
            .map(Interval)
            .ok_or_else(|| format!("'{value}' is not a duration (e.g. 250ms, 30s, 5m, 1h, 30d)"))
    }
}

impl std::fmt::Display for Interval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}ms", self.0.as_millis())
    }
}

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}
fn default_concurrency() -> usize {
    16
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read { file: PathBuf, source: std::io::Error },
    #[error("{file}:{line}: {key}: {message}")]
    Parse { file: PathBuf, line: usize, key: String, message: String },
    #[error("{file}: {key}: {message}")]
    Invalid { file: PathBuf, key: String, message: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: path.into(), source })?;
        let mut config = Config::parse(path, &text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve(base);
        config.validate(path)?;
        Ok(config)
    }

    /// Parses the text of `path`; a mistake names the line and the key (the dotted path).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let deserializer = toml::Deserializer::parse(text).map_err(|e| ConfigError::Parse {
            file: path.into(),
            line: e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1).unwrap_or(0),
            key: String::new(),
            message: e.message().to_owned(),
        })?;
        serde_path_to_error::deserialize(deserializer).map_err(|e| {
            // A map key that fails (a misspelt retention state) shows as `?`: name its table.
            let key = e.path().to_string().trim_end_matches(".?").to_owned();
            let inner = e.into_inner();
            ConfigError::Parse {
                file: path.into(),
                line: inner.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1).unwrap_or(0),
                key: if key == "." { String::new() } else { key },
                message: inner.message().to_owned(),
            }
        })
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
        for p in [
            &mut self.backend.token_file,
            &mut self.backend.tls_cert,
            &mut self.backend.tls_key,
            &mut self.backend.client_ca,
        ]
        .into_iter()
        .flatten()
        {
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
        if let Some(console) = self.console.as_mut() {
            for p in [&mut console.tls_cert, &mut console.tls_key].into_iter().flatten() {
                fix(p);
            }
        }
        if let Some(p) = self.alerts.webhook.as_mut().and_then(|w| w.secret_file.as_mut()) {
            fix(p);
        }
        for rule in &mut self.deliveries {
            if let Some(p) = rule.folder.as_mut() {
                fix(p);
            }
            if let Some(p) = rule.webhook.as_mut().and_then(|w| w.secret_file.as_mut()) {
                fix(p);
            }
        }
        if let Some(folder) = self.submit_folder.as_mut() {
            fix(&mut folder.path);
        }
    }

    fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid { file: file.into(), key: key.into(), message };
        self.api_token().map_err(|m| invalid("backend.token", m))?;
        if self.store.kind == StoreKind::Postgres && self.store.url.is_none() {
            return Err(invalid("store.url", "the postgres store needs a connection string".into()));
        }
        if self.store.kind == StoreKind::Sqlite && (self.store.url.is_some() || self.store.password_env.is_some()) {
            return Err(invalid("store.url", "url and password_env are for kind = \"postgres\"".into()));
        }
        if self.retention.interval.0.is_zero() {
            return Err(invalid("retention.interval", "must be more than 0".into()));
        }
        for (state, rule) in &self.retention.states {
            if let (Some(content), Some(metadata)) = (rule.content, rule.metadata)
                && metadata < content
            {
                return Err(invalid(
                    &format!("retention.states.{}", state.as_str()),
                    "metadata is removed before content: metadata must be the longer".into(),
                ));
            }
        }
        let l = &self.limits;
        for (key, value, most) in [
            ("limits.max_properties", l.max_properties, 10_000),
            ("limits.max_part_properties", l.max_part_properties, 1_000),
            ("limits.max_parts", l.max_parts, 64),
            ("limits.max_party_ids", l.max_party_ids, 100),
        ] {
            if value == 0 || value > most {
                return Err(invalid(key, format!("{value} is outside 1..={most}")));
            }
        }
        let b = &self.backend;
        if b.tls_cert.is_some() != b.tls_key.is_some() {
            return Err(invalid("backend.tls_cert", "give both tls_cert and tls_key, or neither".into()));
        }
        if b.client_ca.is_some() && b.tls_cert.is_none() {
            return Err(invalid("backend.client_ca", "client certificates need TLS: set tls_cert and tls_key".into()));
        }
        if b.tls_cert.is_none() && !b.listen.ip().is_loopback() && !b.allow_plain_http {
            return Err(invalid(
                "backend.listen",
                format!(
                    "{} is not a loopback address and the API has no TLS: the token and the documents would cross the network in clear; set tls_cert and tls_key, or allow_plain_http = true",
                    b.listen
                ),
            ));
        }
        if let Some(console) = &self.console
            && console.tls_cert.is_some() != console.tls_key.is_some()
        {
            return Err(invalid("console.tls_cert", "give both tls_cert and tls_key, or neither".into()));
        }
        if let Some(webhook) = &self.alerts.webhook
            && webhook.secret_env.is_some() == webhook.secret_file.is_some()
        {
            return Err(invalid("alerts.webhook", "give exactly one of secret_env and secret_file".into()));
        }
        if !self.alerts.rules.is_empty() && self.alerts.webhook.is_none() && self.alerts.email.is_none() {
            tracing::debug!("alert rules without a webhook or e-mail: alerts show in the console only");
        }
        crate::push::settings::check(&self.deliveries)
            .map_err(|(key, message): (String, String)| invalid(&key, message))?;
        if self.as4.send_concurrency == 0 {
            return Err(invalid("as4.send_concurrency", "must be at least 1".into()));
        }
        Ok(())
    }

    /// The envelope limits of received messages (and of signals), from `[limits]`.
    pub fn envelope_limits(&self) -> crate::ebms::tree::Limits {
        let l = &self.limits;
        crate::ebms::tree::Limits {
            max_properties: l.max_properties,
            max_part_properties: l.max_part_properties,
            max_parts: l.max_parts,
            max_party_ids: l.max_party_ids,
            ..crate::ebms::tree::Limits::default()
        }
    }

    pub fn max_message_bytes(&self) -> u64 {
        self.as4.max_message.0
    }

    pub fn reload_interval(&self) -> std::time::Duration {
        self.pmode_reload.0
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

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"party_id = "CL-SICEX"
data_dir = "data"
pmodes = "pmodes"
[as4]
listen = "127.0.0.1:0"
tls_cert = "t.pem"
tls_key = "t.key"
trust = "ca.pem"
[backend]
listen = "127.0.0.1:0"
token = "0123456789abcdef0123"
"#;

    fn error(extra: &str) -> String {
        Config::parse(Path::new("ap.toml"), &format!("{BASE}{extra}")).unwrap_err().to_string()
    }

    #[test]
    fn mistakes_name_file_line_and_key_instead_of_becoming_defaults() {
        // Each of these used to be silently replaced by a default.
        assert_eq!(
            error("[store]\nkind = \"sqlit\"\n"),
            "ap.toml:13: store.kind: unknown variant `sqlit`, expected `sqlite` or `postgres`"
        );
        assert_eq!(
            error("[store]\nkind = \"postgres\"\nlease = \"5 minutes\"\n"),
            "ap.toml:14: store.lease: '5 minutes' is not a duration (e.g. 250ms, 30s, 5m, 1h, 30d)"
        );
        let typo = error("[retention.states.acknowleged]\ncontent = \"30d\"\n");
        assert!(typo.starts_with("ap.toml:12: retention.states: unknown variant `acknowleged`"), "{typo}");
        let reload = Config::parse(Path::new("ap.toml"), &format!("pmode_reload = \"often\"\n{BASE}"));
        assert_eq!(
            reload.unwrap_err().to_string(),
            "ap.toml:1: pmode_reload: 'often' is not a duration (e.g. 250ms, 30s, 5m, 1h, 30d)"
        );
        let size = Config::parse(
            Path::new("ap.toml"),
            &BASE.replace("trust = \"ca.pem\"", "trust = \"ca.pem\"\nmax_message = \"lots\""),
        );
        assert_eq!(
            size.unwrap_err().to_string(),
            "ap.toml:9: as4.max_message: 'lots' is not a size (e.g. 256MiB, 512KiB, 10MB, 1000)"
        );
        assert!(error("[store]\nknd = \"sqlite\"\n").contains("store.knd"), "an unknown key is named");
    }

    #[test]
    fn typed_values() {
        let config = Config::parse(
            Path::new("ap.toml"),
            &format!(
                "shutdown_grace = \"5s\"\n{BASE}[store]\nkind = \"postgres\"\nurl = \"host=x\"\nlease = \"2m\"\n[retention.states.failed]\ncontent = \"30d\"\nmetadata = \"365d\"\n"
            ),
        )
        .unwrap();
        assert_eq!(config.store.kind, StoreKind::Postgres);
        assert_eq!(config.store.lease, Interval::secs(120));
        assert_eq!(config.shutdown_grace, Interval::secs(5));
        assert_eq!(config.max_message_bytes(), 256 << 20);
        assert_eq!(config.retention.states[&State::Failed].content, Some(Interval::secs(30 * 86_400)));
        let file = Path::new("ap.toml");
        let mut shorter = config.clone();
        shorter.retention.states.get_mut(&State::Failed).unwrap().metadata = Some(Interval::secs(1));
        assert!(shorter.validate(file).unwrap_err().to_string().contains("retention.states.failed"));
        let mut no_url = config;
        no_url.store.url = None;
        assert_eq!(
            no_url.validate(file).unwrap_err().to_string(),
            "ap.toml: store.url: the postgres store needs a connection string"
        );
    }
}
