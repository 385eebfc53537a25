//! The P-Mode file format: one symmetric TOML file per bilateral link (see README, "P-Mode files").

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkFile {
    pub id: Spanned<String>,
    pub profile: Spanned<String>,
    pub agreement: Option<Spanned<String>>,
    pub agreement_type: Option<String>,
    #[serde(default)]
    pub party: Vec<Spanned<PartyFile>>,
    #[serde(default)]
    pub leg: Vec<Spanned<LegFile>>,
    #[serde(default)]
    pub reliability: Option<ReliabilityFile>,
    #[serde(default)]
    pub transport: Option<TransportFile>,
    #[serde(default)]
    pub security: Option<SecurityFile>,
    /// What the legs with `transport = "iop"` need (docs/iop.md §3).
    #[serde(default)]
    pub iop: Option<IopFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IopFile {
    pub codigo_interaccion: Spanned<String>,
    pub id_servicio: Spanned<String>,
    pub tipo_documento: Option<Spanned<String>>,
    pub estado_transaccion: Option<Spanned<String>>,
    pub soap_action: Option<Spanned<String>>,
    /// How this access point signs an unsigned SPS certificate: rsa-sha256 (default) or
    /// rsa-sha1 (inclusive c14n; only for a partner that cannot check anything newer).
    pub signature: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityFile {
    /// How our signing certificate is referenced: bst (default), ski or issuer-serial.
    pub token_reference: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartyFile {
    pub id: Spanned<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// ISO 3166 alpha-2 country of the single window.
    pub country: Option<Spanned<String>>,
    pub endpoint: Spanned<String>,
    /// PEM file of the TLS client certificate this party presents (when client auth is on).
    pub tls_cert: Option<String>,
    /// The party's message signing certificate (RSA for edelivery-1.15, Ed25519 for 2.0).
    pub sign_cert: Option<Spanned<String>>,
    /// Its encryption certificate (RSA key transport for 1.15, X25519 key agreement for 2.0).
    pub enc_cert: Option<Spanned<String>>,
    /// The certificates it rolls over to: accepted alongside the current ones.
    pub next_sign_cert: Option<Spanned<String>>,
    pub next_enc_cert: Option<Spanned<String>>,
    /// The party's id on the IOP (`IDdeRemitente`/`IDdeDestinatario`, 3-10 alphanumerics).
    pub iop_id: Option<Spanned<String>>,
    /// Its IOP service URL (default: `endpoint`).
    pub iop_endpoint: Option<Spanned<String>>,
    /// The UsernameToken this party presents when it sends over the IOP...
    pub iop_username: Option<Spanned<String>>,
    /// ...and where its password is: an environment variable or a file (never in the P-Mode).
    pub iop_password_env: Option<Spanned<String>>,
    pub iop_password_file: Option<Spanned<String>>,
    /// The certificate that signs this party's SPS certificates (the single window's
    /// document signer); absent, any signer the truststore validates is accepted.
    pub document_cert: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegFile {
    pub name: Spanned<String>,
    pub service: Spanned<String>,
    pub service_type: Option<String>,
    pub action: Spanned<String>,
    /// The payload handler for the leading document ("ephyto", "origin", "edifact", or none).
    pub document: Option<String>,
    /// Document versions accepted on this leg (ePhyto: "17", "11"); absent means all.
    #[serde(default)]
    pub versions: Vec<String>,
    pub mpc: Option<String>,
    #[serde(default)]
    pub compression: bool,
    pub max_payload: Option<Spanned<String>>,
    /// Party id allowed to send on this leg; absent means both directions. For a pull leg,
    /// the party that holds the messages.
    pub from: Option<Spanned<String>>,
    /// One-Way/Pull: the sender holds messages on `mpc` until the other party pulls them.
    #[serde(default)]
    pub pull: bool,
    /// How often the pulling party asks (default 5s).
    pub pull_interval: Option<Spanned<String>>,
    #[serde(default)]
    pub properties: PropertiesFile,
    /// "as4" (default) or "iop": the legacy Pacific Alliance SOAP service.
    pub transport: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropertiesFile {
    #[serde(default)]
    pub required: Vec<String>,
    #[serde(default)]
    pub allowed: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReliabilityFile {
    pub retry: Option<Spanned<Vec<String>>>,
    pub duplicate_window: Option<Spanned<String>>,
    /// How far in the future an eb:Timestamp may be (clocks differ a little).
    pub max_clock_skew: Option<Spanned<String>>,
    /// How old an eb:Timestamp may be; at most the duplicate window (an older message's id
    /// could no longer be recognised as a replay).
    pub max_age: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportFile {
    #[serde(default)]
    pub tls_client_auth: bool,
    pub timeout: Option<Spanned<String>>,
}
