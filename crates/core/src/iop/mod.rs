//! The Pacific Alliance IOP interface (docs/iop.md): the SOAP 1.1 service
//! `EnvioCertificadoFitosanitario` that the single windows exchanged phytosanitary
//! certificates through before AS4. This module is the message model, its limits and the
//! SOAP wire form ([`soap`]); the runtime sends and receives it on links whose legs say
//! `transport = "iop"`. The SPS certificate's own signature is [`crate::dsig`].

pub mod certificate;
pub mod soap;

/// The namespaces of the CrimsonLogic schemas (docs/iop.md §2).
pub mod ns {
    pub const SOAP11: &str = "http://schemas.xmlsoap.org/soap/envelope/";
    pub const WSSE: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
    pub const PASSWORD_TEXT: &str =
        "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText";
    pub const WS: &str = "http://iop.crimsonlogic.com/EnvioCertificadoFitosanitarioWS";
    pub const CFS: &str = "http://iop.crimsonlogic.com/EnvioCertificadoFitosanitario";
    pub const CAB: &str = "http://iop.crimsonlogic.com/Cabecera";
    pub const ACK: &str = "http://iop.crimsonlogic.com/AcuseRecibo";
    pub const FALLA: &str = "http://iop.crimsonlogic.com/Falla";
    pub const ERR: &str = "http://iop.crimsonlogic.com/Error";
}

/// The soapAction when the P-Mode names none (a guess: docs/iop.md §6).
pub const DEFAULT_SOAP_ACTION: &str =
    "http://iop.crimsonlogic.com/EnvioCertificadoFitosanitarioWS/envioCertificadoFitosanitarioOperation";
/// The path an IOP node serves the operation on (seen on CXF deployments).
pub const DEFAULT_PATH: &str = "/cxf/IOP/Certificados/WSDL/EnvioCertificadoFitosanitario/";
pub const DEFAULT_ESTADO: &str = "ECIOP";
pub const DEFAULT_TIPO_DOCUMENTO: &str = "FS";

/// The header of every IOP message (docs/iop.md §3), in schema order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cabecera {
    pub codigo_interaccion: String,
    pub id_servicio: String,
    pub id_remitente: String,
    pub pais_remitente: String,
    pub id_destinatario: String,
    pub pais_destinatario: String,
    pub id_transaccion: String,
    pub estado_transaccion: String,
    pub fecha_hora: String,
    pub tipo_documento: String,
    pub id_documento: String,
    pub id_transaccion_original: Option<String>,
}

/// One finding, as a `DetallesError` carries it: a code of at most 5 characters and a text of
/// at most 300. The codes are ours (no list was published): see [`code`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detalle {
    pub codigo: String,
    pub mensaje: String,
}

/// The error codes this access point puts in `CodigodeError`.
pub mod code {
    /// The request is not a well-formed, bounded `EnvioCertificadoFitosanitario`.
    pub const MALFORMED: &str = "E001";
    /// UsernameToken missing or wrong.
    pub const AUTHENTICATION: &str = "E002";
    /// A `Cabecera` field breaks its type or limits.
    pub const CABECERA: &str = "E003";
    /// Sender or receiver is not a party of an IOP link here.
    pub const UNKNOWN_PARTY: &str = "E004";
    /// The SPS certificate's signature is missing, broken or from an unbound signer.
    pub const SIGNATURE: &str = "E005";
    /// The SPS certificate breaks the ePhyto rules.
    pub const DOCUMENT: &str = "E006";
    /// Our trouble (disk, database): the sender should try again.
    pub const INTERNAL: &str = "E099";
}

impl Detalle {
    pub fn new(codigo: &str, mensaje: impl Into<String>) -> Detalle {
        Detalle { codigo: codigo.to_owned(), mensaje: truncate(&mensaje.into(), 300) }
    }
}

/// At most `max` characters, cut at a character boundary.
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => text[..at].to_owned(),
        None => text.to_owned(),
    }
}

fn pattern_ok(value: &str, min: usize, max: usize, allowed: impl Fn(char) -> bool) -> bool {
    let n = value.chars().count();
    (min..=max).contains(&n) && value.chars().all(allowed)
}

/// `CodigoInteraccion`, `IDdeServicio`: 8–16 of `[a-zA-Z0-9.]`.
pub fn is_code(value: &str) -> bool {
    pattern_ok(value, 8, 16, |c| c.is_ascii_alphanumeric() || c == '.')
}

/// `IDdeRemitente`, `IDdeDestinatario`: 3–10 of `[a-zA-Z0-9]`.
pub fn is_party_id(value: &str) -> bool {
    pattern_ok(value, 3, 10, |c| c.is_ascii_alphanumeric())
}

/// `PaisdeRemitente`, `PaisdeDestinatario`: `[A-Z][A-Z]`.
pub fn is_country(value: &str) -> bool {
    pattern_ok(value, 2, 2, |c| c.is_ascii_uppercase())
}

/// `IDdeTransaccion`: 12–36 of `[a-zA-Z0-9-]`.
pub fn is_transaction_id(value: &str) -> bool {
    pattern_ok(value, 12, 36, |c| c.is_ascii_alphanumeric() || c == '-')
}

/// `EstadoTransaccion`, `TipodeDocumento`: a string of at most 5 characters (required, so
/// not empty).
pub fn is_short(value: &str) -> bool {
    pattern_ok(value, 1, 5, |c| !c.is_control())
}

/// `IDdeDocumento`: an `xs:token` of at most 100 characters (no tabs or line breaks, no
/// leading, trailing or doubled spaces), not empty.
pub fn is_token(value: &str) -> bool {
    pattern_ok(value, 1, 100, |c| !c.is_control())
        && !value.starts_with(' ')
        && !value.ends_with(' ')
        && !value.contains("  ")
}

/// `FechaHora`: an `xs:dateTime` (a zone is optional).
pub fn is_date_time(value: &str) -> bool {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::parse(value, &Rfc3339).is_ok()
        || time::OffsetDateTime::parse(&format!("{value}Z"), &Rfc3339).is_ok()
}

impl Cabecera {
    /// Every field against its type and limits; one finding per bad field, naming it.
    pub fn check(&self) -> Vec<Detalle> {
        let mut findings = Vec::new();
        let mut field = |name: &str, value: &str, ok: bool, rule: &str| {
            if !ok {
                findings.push(Detalle::new(code::CABECERA, format!("{name} '{}' is not {rule}", truncate(value, 60))));
            }
        };
        field("CodigoInteraccion", &self.codigo_interaccion, is_code(&self.codigo_interaccion), "8-16 of [a-zA-Z0-9.]");
        field("IDdeServicio", &self.id_servicio, is_code(&self.id_servicio), "8-16 of [a-zA-Z0-9.]");
        field("IDdeRemitente", &self.id_remitente, is_party_id(&self.id_remitente), "3-10 of [a-zA-Z0-9]");
        field("PaisdeRemitente", &self.pais_remitente, is_country(&self.pais_remitente), "[A-Z][A-Z]");
        field("IDdeDestinatario", &self.id_destinatario, is_party_id(&self.id_destinatario), "3-10 of [a-zA-Z0-9]");
        field("PaisdeDestinatario", &self.pais_destinatario, is_country(&self.pais_destinatario), "[A-Z][A-Z]");
        field(
            "IDdeTransaccion",
            &self.id_transaccion,
            is_transaction_id(&self.id_transaccion),
            "12-36 of [a-zA-Z0-9-]",
        );
        field("EstadoTransaccion", &self.estado_transaccion, is_short(&self.estado_transaccion), "1-5 characters");
        field("FechaHora", &self.fecha_hora, is_date_time(&self.fecha_hora), "an xs:dateTime");
        field("TipodeDocumento", &self.tipo_documento, is_short(&self.tipo_documento), "1-5 characters");
        field("IDdeDocumento", &self.id_documento, is_token(&self.id_documento), "an xs:token of 1-100 characters");
        if let Some(original) = &self.id_transaccion_original {
            field("IDdeTransaccionOriginal", original, is_transaction_id(original), "12-36 of [a-zA-Z0-9-]");
        }
        findings
    }
}

/// `EnvioCertificadoFitosanitario`: the header and the signed certificate as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envio {
    pub cabecera: Cabecera,
    pub signed_sps_cert: String,
}

/// A request as it arrived: the UsernameToken (if any) and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub username: Option<String>,
    pub password: Option<String>,
    pub envio: Envio,
}

/// `CodigoAcuseRecibo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codigo {
    /// RCB: received.
    Recibido,
    /// ERR: refused.
    Error,
}

impl Codigo {
    pub fn as_str(self) -> &'static str {
        match self {
            Codigo::Recibido => "RCB",
            Codigo::Error => "ERR",
        }
    }
}

/// `AcuseRecibo`: the synchronous answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acuse {
    pub cabecera: Cabecera,
    pub codigo: Codigo,
    pub glosa: String,
    pub fecha_hora: String,
}

/// `MensajeFalla`, the detail of a SOAP fault: the request's header when it could be read,
/// and 1 to 99 findings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Falla {
    pub cabecera: Option<Cabecera>,
    pub detalles: Vec<Detalle>,
}

/// At most this many `DetallesError` in one `MensajeFalla`.
pub const MAX_DETALLES: usize = 99;

/// What a partner's IOP node answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Acuse(Acuse),
    /// A SOAP fault; `falla` when it carried a readable `MensajeFalla`.
    Fault {
        /// `soapenv:Client` (the request is at fault) or `soapenv:Server` (try again).
        faultcode: String,
        faultstring: String,
        falla: Option<Falla>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn cabecera() -> Cabecera {
        Cabecera {
            codigo_interaccion: "IOP.MC.101".into(),
            id_servicio: "IOP.PE.FS.001".into(),
            id_remitente: "VUCEPE".into(),
            pais_remitente: "PE".into(),
            id_destinatario: "VUCEMX".into(),
            pais_destinatario: "MX".into(),
            id_transaccion: "PE041219000001".into(),
            estado_transaccion: "ECIOP".into(),
            fecha_hora: "2026-12-02T10:00:00-05:00".into(),
            tipo_documento: "FS".into(),
            id_documento: "PE-2026-000123".into(),
            id_transaccion_original: None,
        }
    }

    #[test]
    fn the_limits_of_iop_md_section_3() {
        assert!(cabecera().check().is_empty(), "{:?}", cabecera().check());
        let bad = Cabecera {
            codigo_interaccion: "IOP".into(),
            id_remitente: "VU".into(),
            pais_destinatario: "mx".into(),
            id_transaccion: "short".into(),
            estado_transaccion: "TOOLONG".into(),
            fecha_hora: "yesterday".into(),
            id_documento: " padded ".into(),
            id_transaccion_original: Some("bad_chars_here!".into()),
            ..cabecera()
        };
        let findings = bad.check();
        let named: Vec<&str> = findings.iter().map(|f| f.mensaje.split(' ').next().unwrap()).collect();
        assert_eq!(
            named,
            [
                "CodigoInteraccion",
                "IDdeRemitente",
                "PaisdeDestinatario",
                "IDdeTransaccion",
                "EstadoTransaccion",
                "FechaHora",
                "IDdeDocumento",
                "IDdeTransaccionOriginal"
            ]
        );
        assert!(findings.iter().all(|f| f.codigo == code::CABECERA));
        assert!(is_transaction_id(&"a".repeat(36)) && !is_transaction_id(&"a".repeat(37)));
        assert!(is_transaction_id("3f2b6f6e-0c4e-4f8a-9d3b-8e1f2a3b4c5d"), "a UUID fits");
        assert!(is_date_time("2026-12-02T10:00:00") && is_date_time("2026-12-02T10:00:00.123Z"));
        assert_eq!(truncate("ñandú", 3), "ñan");
        assert_eq!(Detalle::new("E001", "x".repeat(400)).mensaje.len(), 300);
    }
}
