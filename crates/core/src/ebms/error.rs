//! The EBMS error table (ebMS 3.0 Core §6.7 and AS4 §3.6), as docs/as4.md §4.1 lists it.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EbmsCode {
    ValueNotRecognized,
    FeatureNotSupported,
    ValueInconsistent,
    Other,
    ConnectionFailure,
    EmptyMessagePartitionChannel,
    MimeInconsistency,
    FeatureNotSupportedInconsistency,
    InvalidHeader,
    ProcessingModeMismatch,
    ExternalPayloadError,
    FailedAuthentication,
    FailedDecryption,
    PolicyNoncompliance,
    DysfunctionalReliability,
    DeliveryFailure,
    MissingReceipt,
    InvalidReceipt,
    DecompressionFailure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Warning,
    Failure,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Failure => "failure",
        }
    }
}

impl EbmsCode {
    pub const ALL: [EbmsCode; 19] = [
        EbmsCode::ValueNotRecognized,
        EbmsCode::FeatureNotSupported,
        EbmsCode::ValueInconsistent,
        EbmsCode::Other,
        EbmsCode::ConnectionFailure,
        EbmsCode::EmptyMessagePartitionChannel,
        EbmsCode::MimeInconsistency,
        EbmsCode::FeatureNotSupportedInconsistency,
        EbmsCode::InvalidHeader,
        EbmsCode::ProcessingModeMismatch,
        EbmsCode::ExternalPayloadError,
        EbmsCode::FailedAuthentication,
        EbmsCode::FailedDecryption,
        EbmsCode::PolicyNoncompliance,
        EbmsCode::DysfunctionalReliability,
        EbmsCode::DeliveryFailure,
        EbmsCode::MissingReceipt,
        EbmsCode::InvalidReceipt,
        EbmsCode::DecompressionFailure,
    ];

    /// (code, shortDescription, severity, category, origin)
    fn row(self) -> (&'static str, &'static str, Severity, &'static str, &'static str) {
        use EbmsCode::*;
        use Severity::*;
        match self {
            ValueNotRecognized => ("EBMS:0001", "ValueNotRecognized", Failure, "Content", "ebMS"),
            FeatureNotSupported => ("EBMS:0002", "FeatureNotSupported", Warning, "Content", "ebMS"),
            ValueInconsistent => ("EBMS:0003", "ValueInconsistent", Failure, "Content", "ebMS"),
            Other => ("EBMS:0004", "Other", Failure, "Content", "ebMS"),
            ConnectionFailure => ("EBMS:0005", "ConnectionFailure", Failure, "Communication", "ebMS"),
            EmptyMessagePartitionChannel => {
                ("EBMS:0006", "EmptyMessagePartitionChannel", Warning, "Communication", "ebMS")
            }
            MimeInconsistency => ("EBMS:0007", "MimeInconsistency", Failure, "Unpackaging", "ebMS"),
            FeatureNotSupportedInconsistency => ("EBMS:0008", "FeatureNotSupported", Failure, "Unpackaging", "ebMS"),
            InvalidHeader => ("EBMS:0009", "InvalidHeader", Failure, "Unpackaging", "ebMS"),
            ProcessingModeMismatch => ("EBMS:0010", "ProcessingModeMismatch", Failure, "Processing", "ebMS"),
            ExternalPayloadError => ("EBMS:0011", "ExternalPayloadError", Failure, "Content", "ebMS"),
            FailedAuthentication => ("EBMS:0101", "FailedAuthentication", Failure, "Processing", "security"),
            FailedDecryption => ("EBMS:0102", "FailedDecryption", Failure, "Processing", "security"),
            PolicyNoncompliance => ("EBMS:0103", "PolicyNoncompliance", Failure, "Processing", "security"),
            DysfunctionalReliability => ("EBMS:0201", "DysfunctionalReliability", Failure, "Processing", "reliability"),
            DeliveryFailure => ("EBMS:0202", "DeliveryFailure", Failure, "Communication", "reliability"),
            MissingReceipt => ("EBMS:0301", "MissingReceipt", Failure, "Communication", "ebMS"),
            InvalidReceipt => ("EBMS:0302", "InvalidReceipt", Failure, "Communication", "ebMS"),
            DecompressionFailure => ("EBMS:0303", "DecompressionFailure", Failure, "Communication", "ebMS"),
        }
    }

    pub fn code(self) -> &'static str {
        self.row().0
    }
    pub fn short_description(self) -> &'static str {
        self.row().1
    }
    pub fn severity(self) -> Severity {
        self.row().2
    }
    pub fn category(self) -> &'static str {
        self.row().3
    }
    pub fn origin(self) -> &'static str {
        self.row().4
    }

    pub fn from_code(code: &str) -> Option<EbmsCode> {
        EbmsCode::ALL.into_iter().find(|c| c.code() == code.trim())
    }

    /// The SOAP 1.2 fault code that accompanies a failure: the sender's fault for what it
    /// sent wrong, the receiver's for what we could not do (docs/as4.md §4.3).
    pub fn is_receiver_fault(self) -> bool {
        matches!(self, EbmsCode::DeliveryFailure | EbmsCode::DysfunctionalReliability)
    }
}

impl fmt::Display for EbmsCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.short_description())
    }
}

/// An error we raise while processing a message: the code plus a human-useful detail that
/// goes into `eb:ErrorDetail` (never a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct EbmsError {
    pub code: EbmsCode,
    pub detail: String,
    /// The MessageId in error, when it could be read.
    pub ref_to_message_id: Option<String>,
}

impl EbmsError {
    pub fn new(code: EbmsCode, detail: impl Into<String>) -> Self {
        EbmsError { code, detail: detail.into(), ref_to_message_id: None }
    }

    pub fn with_ref(mut self, message_id: Option<&str>) -> Self {
        if self.ref_to_message_id.is_none() {
            self.ref_to_message_id = message_id.map(str::to_owned);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        for code in EbmsCode::ALL {
            assert_eq!(EbmsCode::from_code(code.code()), Some(code));
        }
        assert_eq!(EbmsCode::EmptyMessagePartitionChannel.severity(), Severity::Warning);
        assert_eq!(EbmsCode::PolicyNoncompliance.origin(), "security");
    }
}
