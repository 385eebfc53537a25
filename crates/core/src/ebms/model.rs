//! The ebMS 3.0 message model: what travels in `eb:Messaging`.

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartyId {
    pub value: String,
    /// `@type`; when absent the value must be a URI.
    pub kind: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Party {
    pub ids: Vec<PartyId>,
    pub role: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Service {
    pub value: String,
    pub kind: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgreementRef {
    pub value: String,
    pub kind: Option<String>,
    /// `@pmode`: the P-Mode id; receivers must work without it.
    pub pmode: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Property {
    pub name: String,
    pub kind: Option<String>,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartInfo {
    /// `cid:...` for a MIME part, `#id` for a Body element, None for the whole Body.
    pub href: Option<String>,
    pub properties: Vec<Property>,
}

impl PartInfo {
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties.iter().find(|p| p.name == name).map(|p| p.value.as_str())
    }

    /// The Content-ID this part refers to, without `cid:`.
    pub fn content_id(&self) -> Option<&str> {
        self.href.as_deref().and_then(|h| h.strip_prefix("cid:"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageInfo {
    pub timestamp: String,
    pub message_id: String,
    pub ref_to_message_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserMessage {
    pub mpc: Option<String>,
    pub info: MessageInfo,
    pub from: Party,
    pub to: Party,
    pub agreement: Option<AgreementRef>,
    pub service: Service,
    pub action: String,
    pub conversation_id: String,
    pub properties: Vec<Property>,
    pub parts: Vec<PartInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorDetail {
    pub code: String,
    pub severity: String,
    pub category: Option<String>,
    pub origin: Option<String>,
    pub short_description: Option<String>,
    pub ref_to_message_in_error: Option<String>,
    pub description: Option<String>,
    pub detail: Option<String>,
}

impl ErrorDetail {
    /// Severity compared leniently: peers send `Failure` and `failure`.
    pub fn is_failure(&self) -> bool {
        !self.severity.eq_ignore_ascii_case("warning")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// A receipt; `nrr_references` holds the `ds:Reference` URIs of an NRR receipt.
    Receipt {
        nrr_references: Vec<String>,
    },
    Errors(Vec<ErrorDetail>),
    PullRequest {
        mpc: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalMessage {
    pub info: MessageInfo,
    pub signal: Signal,
}

/// The content of one `eb:Messaging` header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Messaging {
    /// `wsu:Id` (or `@id`) of eb:Messaging, the signature's reference target.
    pub id: Option<String>,
    pub user_message: Option<UserMessage>,
    pub signals: Vec<SignalMessage>,
}
