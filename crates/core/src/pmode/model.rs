//! Validated P-Modes: what the message service handler works with.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Unsigned and unencrypted: for tests only, refused unless the access point allows it.
    None,
    Edelivery115,
    Edelivery20,
}

impl Profile {
    /// Whether messages on this profile are signed and encrypted.
    pub fn is_secure(self) -> bool {
        self != Profile::None
    }

    pub fn parse(value: &str) -> Option<Profile> {
        match value {
            "none" => Some(Profile::None),
            "edelivery-1.15" => Some(Profile::Edelivery115),
            "edelivery-2.0" => Some(Profile::Edelivery20),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Profile::None => "none",
            Profile::Edelivery115 => "edelivery-1.15",
            Profile::Edelivery20 => "edelivery-2.0",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    pub id: String,
    pub kind: Option<String>,
    pub country: Option<String>,
    pub endpoint: String,
    pub tls_cert: Option<PathBuf>,
    /// DER of the signing certificates accepted from this party: current first, then next.
    pub sign_certs: Vec<Vec<u8>>,
    /// DER of the encryption certificate messages to this party are encrypted for, and the
    /// one it rolls over to.
    pub enc_cert: Option<Vec<u8>>,
    pub next_enc_cert: Option<Vec<u8>>,
    /// The party on the IOP, when the link has IOP legs.
    pub iop: Option<IopParty>,
}

/// A party as the IOP knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IopParty {
    pub id: String,
    pub country: String,
    pub endpoint: String,
    pub username: String,
    pub password: SecretSource,
    /// DER of the certificate bound to sign its SPS certificates.
    pub document_cert: Option<Vec<u8>>,
}

/// Where a secret is kept: never in the P-Mode itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

impl SecretSource {
    /// The secret, without a trailing line break (files are often written with one).
    pub fn read(&self) -> Result<String, String> {
        match self {
            SecretSource::Env(name) => {
                std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))
            }
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
                .map_err(|e| format!("cannot read {}: {e}", path.display())),
        }
        .and_then(|s| if s.is_empty() { Err("the password is empty".into()) } else { Ok(s) })
    }

    pub fn describe(&self) -> String {
        match self {
            SecretSource::Env(name) => format!("environment variable {name}"),
            SecretSource::File(path) => format!("file {}", path.display()),
        }
    }
}

/// How a leg's messages travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    As4,
    /// The Pacific Alliance IOP SOAP service (docs/iop.md).
    Iop,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::As4 => "as4",
            Transport::Iop => "iop",
        }
    }

    pub fn parse(value: &str) -> Option<Transport> {
        match value {
            "as4" => Some(Transport::As4),
            "iop" => Some(Transport::Iop),
            _ => None,
        }
    }
}

/// What the IOP legs of a link put in every `Cabecera`, and how we sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IopLink {
    pub codigo_interaccion: String,
    pub id_servicio: String,
    pub tipo_documento: String,
    pub estado_transaccion: String,
    pub soap_action: String,
    pub signature: crate::dsig::Algorithms,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    pub name: String,
    pub service: String,
    pub service_type: Option<String>,
    pub action: String,
    pub document: Option<String>,
    pub versions: Vec<String>,
    pub mpc: Option<String>,
    pub compression: bool,
    pub max_payload: u64,
    pub from: Option<String>,
    /// One-Way/Pull: `from` holds the messages on `mpc`; the other party pulls every
    /// `pull_interval`.
    pub pull: bool,
    pub pull_interval: Duration,
    pub required_properties: Vec<String>,
    pub allowed_properties: Vec<String>,
    pub transport: Transport,
}

impl Leg {
    pub fn may_send(&self, party_id: &str) -> bool {
        self.from.as_deref().is_none_or(|f| f == party_id)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub id: String,
    pub file: PathBuf,
    /// The certificate files the link read (its parties' sign, enc and TLS certificates): a
    /// replaced file reloads the link as a changed P-Mode file does.
    pub cert_files: Vec<PathBuf>,
    pub profile: Profile,
    pub agreement: Option<String>,
    pub agreement_type: Option<String>,
    pub parties: [Party; 2],
    pub legs: Vec<Leg>,
    pub retry: Vec<Duration>,
    pub duplicate_window: Duration,
    /// eb:Timestamp freshness: at most this far in the future...
    pub max_clock_skew: Duration,
    /// ...and at most this old (never more than `duplicate_window`).
    pub max_age: Duration,
    pub tls_client_auth: bool,
    pub timeout: Duration,
    pub token_reference: TokenReference,
    pub iop: Option<IopLink>,
}

/// How a signature's KeyInfo points at the signing certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenReference {
    /// A wsse:BinarySecurityToken in the header, referenced by id (the most common form).
    Bst,
    /// wsse:KeyIdentifier with the certificate's Subject Key Identifier.
    Ski,
    /// ds:X509Data/ds:X509IssuerSerial.
    IssuerSerial,
}

impl Link {
    pub fn party(&self, id: &str) -> Option<&Party> {
        self.parties.iter().find(|p| p.id == id)
    }

    /// The other party of the link, seen from `me`.
    pub fn partner_of(&self, me: &str) -> Option<&Party> {
        if self.parties[0].id == me {
            Some(&self.parties[1])
        } else if self.parties[1].id == me {
            Some(&self.parties[0])
        } else {
            None
        }
    }

    pub fn leg(&self, name: &str) -> Option<&Leg> {
        self.legs.iter().find(|l| l.name == name)
    }

    /// Whether any leg travels over AS4 (its profile's certificates are then needed).
    pub fn has_as4_legs(&self) -> bool {
        self.legs.iter().any(|l| l.transport == Transport::As4)
    }
}

pub const DEFAULT_RETRY: [u64; 5] = [60, 300, 900, 3600, 14_400];
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(30 * 86_400);
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);
pub const DEFAULT_MAX_PAYLOAD: u64 = 20 << 20;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

impl Link {
    /// Whether a received eb:Timestamp is fresh for this link at `now`: not further in the
    /// future than `max_clock_skew`, not older than `max_age`. Replay protection rests on the
    /// stored MessageIds of the duplicate window; a message older than that window could be
    /// replayed unrecognised, so it is refused for its age. A timestamp without a zone is UTC.
    pub fn check_timestamp(&self, timestamp: &str, now: time::OffsetDateTime) -> Result<(), String> {
        use time::format_description::well_known::Rfc3339;
        let parsed = time::OffsetDateTime::parse(timestamp, &Rfc3339)
            .or_else(|_| time::OffsetDateTime::parse(&format!("{timestamp}Z"), &Rfc3339))
            .map_err(|_| format!("eb:Timestamp '{timestamp}' is not an xs:dateTime"))?;
        let ahead = parsed - now;
        if ahead > self.max_clock_skew {
            return Err(format!(
                "eb:Timestamp {timestamp} is {} s in the future; P-Mode {} allows {} s (reliability.max_clock_skew)",
                ahead.whole_seconds(),
                self.id,
                self.max_clock_skew.as_secs()
            ));
        }
        let age = now - parsed;
        if age > self.max_age {
            return Err(format!(
                "eb:Timestamp {timestamp} is {} s old; P-Mode {} accepts messages up to {} s old (reliability.max_age)",
                age.whole_seconds(),
                self.id,
                self.max_age.as_secs()
            ));
        }
        Ok(())
    }
}
