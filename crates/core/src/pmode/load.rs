//! Loading and validating P-Mode files; every error names file, line and key.

use super::file::*;
use super::model::*;
use crate::util::{parse_duration, parse_size};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PmodeError {
    pub file: PathBuf,
    pub line: usize,
    pub key: String,
    pub message: String,
}

impl fmt::Display for PmodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}: {}", self.file.display(), self.line, self.key, self.message)
    }
}

impl std::error::Error for PmodeError {}

/// Collects errors for one file, turning byte spans into line numbers.
struct Reporter<'a> {
    file: &'a Path,
    text: &'a str,
    errors: Vec<PmodeError>,
}

impl Reporter<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.text.as_bytes()[..offset.min(self.text.len())].iter().filter(|&&b| b == b'\n').count() + 1
    }

    fn at(&mut self, span: std::ops::Range<usize>, key: impl Into<String>, message: impl Into<String>) {
        let line = self.line_of(span.start);
        self.errors.push(PmodeError { file: self.file.to_owned(), line, key: key.into(), message: message.into() });
    }
}

fn looks_like_uri(value: &str) -> bool {
    value.split_once(':').is_some_and(|(scheme, rest)| {
        !rest.is_empty()
            && scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    })
}

/// Parses and validates one P-Mode file's text. `path` is used for messages and to resolve
/// relative certificate paths.
pub fn parse_link(path: &Path, text: &str) -> Result<Link, Vec<PmodeError>> {
    let mut r = Reporter { file: path, text, errors: Vec::new() };
    let raw: LinkFile = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let message = e.message().to_owned();
            let key = message
                .split('`')
                .nth(1)
                .filter(|_| message.contains("unknown field") || message.contains("missing field"))
                .unwrap_or("(syntax)")
                .to_owned();
            r.at(span, key, message);
            return Err(r.errors);
        }
    };
    let link = validate(&mut r, path, raw);
    if r.errors.is_empty() { link.ok_or(r.errors) } else { Err(r.errors) }
}

fn non_empty(r: &mut Reporter<'_>, value: &Spanned<String>, key: &str) -> Option<String> {
    let v = value.get_ref().trim();
    if v.is_empty() {
        r.at(value.span(), key, "must not be empty");
        None
    } else {
        Some(v.to_owned())
    }
}

fn duration(r: &mut Reporter<'_>, value: &Spanned<String>, key: &str) -> Option<Duration> {
    let d = parse_duration(value.get_ref());
    if d.is_none() {
        r.at(value.span(), key, format!("'{}' is not a duration (use e.g. 30s, 5m, 1h, 30d)", value.get_ref()));
    }
    d
}

fn validate(r: &mut Reporter<'_>, path: &Path, raw: LinkFile) -> Option<Link> {
    let id = non_empty(r, &raw.id, "id");
    let profile = match Profile::parse(raw.profile.get_ref()) {
        Some(p) => Some(p),
        None => {
            r.at(
                raw.profile.span(),
                "profile",
                format!("'{}' is not a profile (edelivery-1.15, edelivery-2.0, none)", raw.profile.get_ref()),
            );
            None
        }
    };
    if let Some(a) = &raw.agreement
        && raw.agreement_type.is_none()
        && !looks_like_uri(a.get_ref())
    {
        r.at(a.span(), "agreement", "without agreement_type the agreement must be a URI");
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let mut cert_files: Vec<std::path::PathBuf> = Vec::new();
    let mut parties = Vec::new();
    if raw.party.len() != 2 {
        let span = raw.party.first().map(|p| p.span()).unwrap_or(0..0);
        r.at(span, "party", format!("a link has exactly two [[party]] tables, found {}", raw.party.len()));
    }
    for (i, p) in raw.party.iter().enumerate() {
        let p = p.get_ref();
        let key = |k: &str| format!("party[{i}].{k}");
        let Some(pid) = non_empty(r, &p.id, &key("id")) else {
            continue;
        };
        if p.kind.is_none() && !looks_like_uri(&pid) {
            r.at(p.id.span(), key("id"), "without a type the party id must be a URI");
        }
        if let Some(c) = &p.country {
            let v = c.get_ref();
            if v.len() != 2 || !v.chars().all(|ch| ch.is_ascii_uppercase()) {
                r.at(c.span(), key("country"), format!("'{v}' is not an ISO 3166 alpha-2 code"));
            }
        }
        let endpoint = p.endpoint.get_ref();
        if !endpoint.starts_with("https://") {
            r.at(p.endpoint.span(), key("endpoint"), format!("'{endpoint}' is not an https:// URL"));
        } else if endpoint.parse::<http::Uri>().is_err() {
            r.at(p.endpoint.span(), key("endpoint"), format!("'{endpoint}' is not a valid URL"));
        }
        let mut cert = |value: &Option<Spanned<String>>, what: &str, sign: bool| -> Option<Vec<u8>> {
            let v = value.as_ref()?;
            if !is_inline_pem(v.get_ref()) {
                cert_files.push(base.join(v.get_ref()));
            }
            match certificate(base, v.get_ref(), profile, sign) {
                Ok(der) => Some(der),
                Err(message) => {
                    r.at(v.span(), key(what), message);
                    None
                }
            }
        };
        let sign_cert = cert(&p.sign_cert, "sign_cert", true);
        let next_sign_cert = cert(&p.next_sign_cert, "next_sign_cert", true);
        let enc_cert = cert(&p.enc_cert, "enc_cert", false);
        let next_enc_cert = cert(&p.next_enc_cert, "next_enc_cert", false);
        let iop = iop_party(r, base, &raw, i, p, &mut cert_files);
        if profile.is_some_and(Profile::is_secure) && has_as4_legs(&raw) {
            for (value, what) in [(&p.sign_cert, "sign_cert"), (&p.enc_cert, "enc_cert")] {
                if value.is_none() {
                    r.at(
                        p.id.span(),
                        key(what),
                        format!("profile '{}' needs each party's {what}", raw.profile.get_ref()),
                    );
                }
            }
        }
        parties.push(Party {
            id: pid,
            kind: p.kind.clone(),
            country: p.country.as_ref().map(|c| c.get_ref().clone()),
            endpoint: endpoint.clone(),
            tls_cert: p.tls_cert.as_ref().map(|c| base.join(c)),
            sign_certs: sign_cert.into_iter().chain(next_sign_cert).collect(),
            enc_cert,
            next_enc_cert,
            iop,
        });
    }
    if parties.len() == 2 && parties[0].id == parties[1].id {
        r.at(raw.party[1].get_ref().id.span(), "party[1].id", "both parties have the same id");
    }
    let mut legs: Vec<Leg> = Vec::new();
    if raw.leg.is_empty() {
        r.at(0..0, "leg", "a link needs at least one [[leg]]");
    }
    for (i, l) in raw.leg.iter().enumerate() {
        let span = l.span();
        let l = l.get_ref();
        let key = |k: &str| format!("leg[{i}].{k}");
        let (Some(name), Some(service), Some(action)) = (
            non_empty(r, &l.name, &key("name")),
            non_empty(r, &l.service, &key("service")),
            non_empty(r, &l.action, &key("action")),
        ) else {
            continue;
        };
        if l.service_type.is_none() && !looks_like_uri(&service) {
            r.at(l.service.span(), key("service"), "without service_type the service must be a URI");
        }
        if legs.iter().any(|o| o.name == name) {
            r.at(l.name.span(), key("name"), format!("leg name '{name}' is used twice"));
        }
        if legs.iter().any(|o| o.service == service && o.action == action) {
            r.at(
                span.clone(),
                key("action"),
                format!("service '{service}' with action '{action}' is already a leg of this link"),
            );
        }
        let max_payload = match &l.max_payload {
            None => DEFAULT_MAX_PAYLOAD,
            Some(v) => parse_size(v.get_ref()).unwrap_or_else(|| {
                r.at(v.span(), key("max_payload"), format!("'{}' is not a size (use e.g. 20MiB)", v.get_ref()));
                0
            }),
        };
        if let Some(from) = &l.from
            && !parties.iter().any(|p| &p.id == from.get_ref())
        {
            r.at(from.span(), key("from"), format!("'{}' is not one of the link's parties", from.get_ref()));
        }
        if l.pull && (l.mpc.is_none() || l.from.is_none()) {
            r.at(span.clone(), key("pull"), "a pull leg needs its mpc and `from` (the party holding the messages)");
        }
        let transport = match l.transport.as_ref().map(|t| (t.get_ref().as_str(), t.span())) {
            None | Some(("as4", _)) => Transport::As4,
            Some(("iop", _)) => Transport::Iop,
            Some((other, at)) => {
                r.at(at, key("transport"), format!("'{other}' is not a transport (as4, iop)"));
                Transport::As4
            }
        };
        if transport == Transport::Iop {
            // The IOP carries one signed phytosanitary certificate per message (docs/iop.md §3).
            if l.document.as_deref() != Some("ephyto") {
                r.at(span.clone(), key("document"), "an IOP leg carries ePhyto certificates: document = \"ephyto\"");
            }
            if !l.versions.is_empty() && !l.versions.iter().any(|v| v == "11") {
                r.at(
                    span.clone(),
                    key("versions"),
                    "the IOP exchanges SPSCertificate:11: versions must include \"11\"",
                );
            }
            if l.pull || l.compression {
                r.at(span.clone(), key("transport"), "an IOP leg is pushed and uncompressed (no pull, no compression)");
            }
            if raw.iop.is_none() {
                r.at(span.clone(), key("transport"), "an IOP leg needs the link's [iop] table");
            }
        }
        if let Some(doc) = &l.document
            && !KNOWN_DOCUMENTS.contains(&doc.as_str())
        {
            r.at(
                span.clone(),
                key("document"),
                format!("'{doc}' is not a document type ({})", KNOWN_DOCUMENTS.join(", ")),
            );
        }
        legs.push(Leg {
            name,
            service,
            service_type: l.service_type.clone(),
            action,
            document: l.document.clone(),
            versions: l.versions.clone(),
            mpc: l.mpc.clone(),
            compression: l.compression,
            max_payload,
            from: l.from.as_ref().map(|f| f.get_ref().clone()),
            pull: l.pull,
            pull_interval: match &l.pull_interval {
                Some(v) => duration(r, v, &key("pull_interval")).unwrap_or(Duration::from_secs(5)),
                None => Duration::from_secs(5),
            },
            required_properties: l.properties.required.clone(),
            allowed_properties: l.properties.allowed.clone(),
            transport,
        });
    }
    let mut retry: Vec<Duration> = DEFAULT_RETRY.iter().map(|s| Duration::from_secs(*s)).collect();
    let mut duplicate_window = DEFAULT_DUPLICATE_WINDOW;
    let mut max_clock_skew = DEFAULT_MAX_CLOCK_SKEW;
    let mut max_age = None;
    if let Some(rel) = &raw.reliability {
        if let Some(list) = &rel.retry {
            let parsed: Vec<Option<Duration>> = list.get_ref().iter().map(|v| parse_duration(v)).collect();
            if let Some(bad) = list.get_ref().iter().zip(&parsed).find(|(_, d)| d.is_none()) {
                r.at(list.span(), "reliability.retry", format!("'{}' is not a duration (use e.g. 1m, 5m, 1h)", bad.0));
            }
            retry = parsed.into_iter().flatten().collect();
        }
        if let Some(w) = &rel.duplicate_window {
            duplicate_window = duration(r, w, "reliability.duplicate_window").unwrap_or(duplicate_window);
        }
        if let Some(v) = &rel.max_clock_skew {
            max_clock_skew = duration(r, v, "reliability.max_clock_skew").unwrap_or(max_clock_skew);
        }
        if let Some(v) = &rel.max_age {
            max_age = duration(r, v, "reliability.max_age");
            if let Some(age) = max_age
                && age > duplicate_window
            {
                r.at(
                    v.span(),
                    "reliability.max_age",
                    "must not exceed duplicate_window: an older message could be replayed unrecognised",
                );
            }
        }
    }
    let max_age = max_age.unwrap_or(duplicate_window);
    let mut timeout = DEFAULT_TIMEOUT;
    let mut tls_client_auth = false;
    if let Some(t) = &raw.transport {
        tls_client_auth = t.tls_client_auth;
        if let Some(v) = &t.timeout {
            timeout = duration(r, v, "transport.timeout").unwrap_or(timeout);
        }
        if tls_client_auth {
            for (i, p) in parties.iter().enumerate() {
                if p.tls_cert.is_none() {
                    r.at(0..0, format!("party[{i}].tls_cert"), "transport.tls_client_auth needs each party's tls_cert");
                }
            }
        }
    }
    let token_reference = match raw.security.as_ref().and_then(|s| s.token_reference.as_ref()) {
        None => TokenReference::Bst,
        Some(v) => match v.get_ref().as_str() {
            "bst" => TokenReference::Bst,
            "ski" => TokenReference::Ski,
            "issuer-serial" => TokenReference::IssuerSerial,
            other => {
                r.at(v.span(), "security.token_reference", format!("'{other}' is not bst, ski or issuer-serial"));
                TokenReference::Bst
            }
        },
    };
    let iop = raw.iop.as_ref().map(|t| iop_link(r, t));
    let parties: [Party; 2] = parties.try_into().ok()?;
    cert_files.extend(parties.iter().filter_map(|p| p.tls_cert.clone()));
    Some(Link {
        id: id?,
        file: path.to_owned(),
        cert_files,
        profile: profile?,
        agreement: raw.agreement.map(|a| a.into_inner()),
        agreement_type: raw.agreement_type,
        parties,
        legs,
        retry,
        duplicate_window,
        max_clock_skew,
        max_age,
        tls_client_auth,
        timeout,
        token_reference,
        iop,
    })
}

fn has_as4_legs(raw: &LinkFile) -> bool {
    raw.leg.iter().any(|l| l.get_ref().transport.as_ref().is_none_or(|t| t.get_ref() != "iop"))
}

fn has_iop_legs(raw: &LinkFile) -> bool {
    raw.leg.iter().any(|l| l.get_ref().transport.as_ref().is_some_and(|t| t.get_ref() == "iop"))
}

/// The `[iop]` table, checked against the limits of docs/iop.md §3.
fn iop_link(r: &mut Reporter<'_>, t: &IopFile) -> IopLink {
    use crate::iop;
    let mut checked =
        |value: Option<&Spanned<String>>, default: &str, key: &str, ok: fn(&str) -> bool, rule: &str| match value {
            Some(v) => {
                if !ok(v.get_ref()) {
                    r.at(v.span(), format!("iop.{key}"), format!("'{}' is not {rule}", v.get_ref()));
                }
                v.get_ref().clone()
            }
            None => default.to_owned(),
        };
    let codigo_interaccion =
        checked(Some(&t.codigo_interaccion), "", "codigo_interaccion", iop::is_code, "8-16 of [a-zA-Z0-9.]");
    let id_servicio = checked(Some(&t.id_servicio), "", "id_servicio", iop::is_code, "8-16 of [a-zA-Z0-9.]");
    let tipo_documento = checked(
        t.tipo_documento.as_ref(),
        iop::DEFAULT_TIPO_DOCUMENTO,
        "tipo_documento",
        iop::is_short,
        "1-5 characters",
    );
    let estado_transaccion = checked(
        t.estado_transaccion.as_ref(),
        iop::DEFAULT_ESTADO,
        "estado_transaccion",
        iop::is_short,
        "1-5 characters",
    );
    let soap_action = checked(t.soap_action.as_ref(), iop::DEFAULT_SOAP_ACTION, "soap_action", looks_like_uri, "a URI");
    let signature = match t.signature.as_ref().map(|v| (v.get_ref().as_str(), v.span())) {
        None | Some(("rsa-sha256", _)) => crate::dsig::Algorithms::RsaSha256,
        Some(("rsa-sha1", _)) => crate::dsig::Algorithms::LegacyRsaSha1,
        Some((other, at)) => {
            r.at(at, "iop.signature", format!("'{other}' is not rsa-sha256 or rsa-sha1"));
            crate::dsig::Algorithms::RsaSha256
        }
    };
    IopLink { codigo_interaccion, id_servicio, tipo_documento, estado_transaccion, soap_action, signature }
}

/// A party's IOP fields: required when the link has IOP legs, ignored otherwise.
fn iop_party(
    r: &mut Reporter<'_>,
    base: &Path,
    raw: &LinkFile,
    i: usize,
    p: &PartyFile,
    cert_files: &mut Vec<PathBuf>,
) -> Option<IopParty> {
    let key = |k: &str| format!("party[{i}].{k}");
    // A link that moved to AS4 may keep its IOP fields (moving back is one word).
    if !has_iop_legs(raw) {
        return None;
    }
    let missing = |r: &mut Reporter<'_>, what: &str| {
        r.at(
            p.id.span(),
            key(what),
            "a link with IOP legs needs each party's iop_id, country, iop_username and password",
        );
    };
    let id = match &p.iop_id {
        Some(v) if crate::iop::is_party_id(v.get_ref()) => Some(v.get_ref().clone()),
        Some(v) => {
            r.at(v.span(), key("iop_id"), format!("'{}' is not 3-10 of [a-zA-Z0-9]", v.get_ref()));
            None
        }
        None => {
            missing(r, "iop_id");
            None
        }
    };
    let country = p.country.as_ref().map(|c| c.get_ref().clone());
    if country.is_none() {
        missing(r, "country");
    }
    let username = p.iop_username.as_ref().map(|u| u.get_ref().clone());
    if username.as_deref().is_none_or(str::is_empty) {
        missing(r, "iop_username");
    }
    let password = match (&p.iop_password_env, &p.iop_password_file) {
        (Some(env), None) => Some(SecretSource::Env(env.get_ref().clone())),
        (None, Some(file)) => Some(SecretSource::File(base.join(file.get_ref()))),
        (Some(env), Some(_)) => {
            r.at(env.span(), key("iop_password_env"), "give iop_password_env or iop_password_file, not both");
            None
        }
        (None, None) => {
            missing(r, "iop_password_env");
            None
        }
    };
    let endpoint = p.iop_endpoint.as_ref().unwrap_or(&p.endpoint);
    if !endpoint.get_ref().starts_with("https://") || endpoint.get_ref().parse::<http::Uri>().is_err() {
        r.at(endpoint.span(), key("iop_endpoint"), format!("'{}' is not an https:// URL", endpoint.get_ref()));
    }
    let document_cert = match &p.document_cert {
        Some(v) => {
            if !is_inline_pem(v.get_ref()) {
                cert_files.push(base.join(v.get_ref()));
            }
            match certificate(base, v.get_ref(), None, true) {
                Ok(der) => Some(der),
                Err(message) => {
                    r.at(v.span(), key("document_cert"), message);
                    None
                }
            }
        }
        None => None,
    };
    Some(IopParty {
        id: id?,
        country: country?,
        endpoint: endpoint.get_ref().clone(),
        username: username?,
        password: password?,
        document_cert,
    })
}

/// Whether a certificate value is the PEM itself (inline) rather than a file name: the same
/// P-Mode file then works on both access points whatever their folder layouts.
pub fn is_inline_pem(value: &str) -> bool {
    value.trim_start().starts_with("-----BEGIN CERTIFICATE-----")
}

/// Loads a partner certificate (a file, or PEM inline) and checks its key fits the profile.
fn certificate(base: &Path, file: &str, profile: Option<Profile>, sign: bool) -> Result<Vec<u8>, String> {
    use crate::pki::keys::{KeyKind, kind_of, load_cert};
    let (path, cert) = if is_inline_pem(file) {
        let cert = openssl::x509::X509::from_pem(file.trim().as_bytes())
            .map_err(|e| format!("the inline certificate is not valid PEM: {e}"))?;
        (Path::new("(inline certificate)").to_path_buf(), cert)
    } else {
        let path = base.join(file);
        let cert = load_cert(&path).map_err(|e| e.to_string())?;
        (path, cert)
    };
    let key = cert.public_key().map_err(|e| format!("{}: no usable public key: {e}", path.display()))?;
    let kind = kind_of(&key);
    let expected = match (profile, sign) {
        (Some(Profile::Edelivery115), _) => Some(KeyKind::Rsa),
        (Some(Profile::Edelivery20), true) => Some(KeyKind::Ed25519),
        (Some(Profile::Edelivery20), false) => Some(KeyKind::X25519),
        _ => None,
    };
    if let Some(expected) = expected
        && kind != expected
    {
        return Err(format!(
            "{}: a {kind:?} key; profile '{}' needs {expected:?}",
            path.display(),
            profile.map(Profile::as_str).unwrap_or_default()
        ));
    }
    cert.to_der().map_err(|e| e.to_string())
}

/// Document types a leg may name; each has a payload handler.
pub const KNOWN_DOCUMENTS: [&str; 3] = ["ephyto", "origin", "edifact"];

/// Reads every `*.toml` file of `dir` (or the single file `dir`), sorted by name.
pub fn read_files(path: &Path) -> std::io::Result<Vec<(PathBuf, String)>> {
    let mut files = Vec::new();
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        entries.sort();
        for p in entries {
            let text = std::fs::read_to_string(&p)?;
            files.push((p, text));
        }
    } else {
        files.push((path.to_owned(), std::fs::read_to_string(path)?));
    }
    Ok(files)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const GOOD: &str = r#"
id = "cl-pe"
profile = "none"
agreement = "urn:pacific-alliance:as4:agreement:cl-pe"

[[party]]
id = "CL-SAG"
type = "urn:oasis:names:tc:ebcore:partyid-type:unregistered:pacific-alliance"
country = "CL"
endpoint = "https://as4.cl.example/as4"

[[party]]
id = "PE-SENASA"
type = "urn:oasis:names:tc:ebcore:partyid-type:unregistered:pacific-alliance"
country = "PE"
endpoint = "https://as4.pe.example/as4"

[[leg]]
name = "ephyto"
service = "urn:pacific-alliance:service:ephyto"
action = "SPSCertificate"
document = "ephyto"

[[leg]]
name = "origin"
service = "urn:pacific-alliance:service:origin"
action = "CertificateOfOrigin"
compression = true
max_payload = "5MiB"

[reliability]
retry = ["1m", "5m"]
duplicate_window = "30d"
"#;

    const IOP: &str = r#"
id = "cl-ec-iop"
profile = "edelivery-2.0"

[[party]]
id = "CL-SAG"
type = "urn:oasis:names:tc:ebcore:partyid-type:unregistered:pacific-alliance"
country = "CL"
endpoint = "https://as4.cl.example/as4"
iop_id = "VUCECL"
iop_username = "vucecl"
iop_password_env = "CL_IOP_PASSWORD"

[[party]]
id = "EC-VUE"
type = "urn:oasis:names:tc:ebcore:partyid-type:unregistered:pacific-alliance"
country = "EC"
endpoint = "https://iop.ec.example/cxf/IOP/Certificados/WSDL/EnvioCertificadoFitosanitario/"
iop_id = "VUCEEC"
iop_username = "vuceec"
iop_password_file = "secrets/ec.password"

[[leg]]
name = "ephyto-iop"
service = "urn:pacific-alliance:iop:service:ephyto"
action = "EnvioCertificadoFitosanitario"
document = "ephyto"
versions = ["11"]
transport = "iop"

[iop]
codigo_interaccion = "IOP.MC.101"
id_servicio = "IOP.FS.001"
signature = "rsa-sha1"
"#;

    #[test]
    fn iop_links_and_the_limits_of_their_fields() {
        let link = parse_link(Path::new("pmodes/cl-ec-iop.toml"), IOP).unwrap();
        assert_eq!(link.legs[0].transport, Transport::Iop);
        assert!(!link.has_as4_legs(), "no AS4 certificates needed while every leg is IOP");
        let iop = link.iop.as_ref().unwrap();
        assert_eq!((iop.tipo_documento.as_str(), iop.estado_transaccion.as_str()), ("FS", "ECIOP"));
        assert_eq!(iop.signature, crate::dsig::Algorithms::LegacyRsaSha1);
        let ec = link.party("EC-VUE").unwrap().iop.as_ref().unwrap();
        assert_eq!(ec.password, SecretSource::File(PathBuf::from("pmodes/secrets/ec.password")));
        assert_eq!(ec.endpoint, link.party("EC-VUE").unwrap().endpoint, "iop_endpoint defaults to endpoint");
        let keys = |text: &str| -> Vec<String> {
            parse_link(Path::new("cl-ec-iop.toml"), text).unwrap_err().into_iter().map(|e| e.key).collect()
        };
        let bad = IOP
            .replace(r#"iop_id = "VUCEEC""#, r#"iop_id = "EC""#)
            .replace(r#"codigo_interaccion = "IOP.MC.101""#, r#"codigo_interaccion = "IOP_MC_101""#)
            .replace(r#"signature = "rsa-sha1""#, r#"signature = "md5""#);
        assert_eq!(keys(&bad), ["party[1].iop_id", "iop.codigo_interaccion", "iop.signature"]);
        let no_password = IOP.replace(r#"iop_password_env = "CL_IOP_PASSWORD""#, "");
        assert_eq!(keys(&no_password), ["party[0].iop_password_env"]);
        let wrong_document = IOP.replace(r#"versions = ["11"]"#, r#"versions = ["17"]"#);
        assert_eq!(keys(&wrong_document), ["leg[0].versions"]);
        let without_table = &IOP[..IOP.find("[iop]").unwrap()];
        assert_eq!(keys(without_table), ["leg[0].transport"]);
        let unknown = IOP.replace(r#"transport = "iop""#, r#"transport = "ftp""#);
        assert!(keys(&unknown).contains(&"leg[0].transport".to_owned()));
        // Migrated to AS4: the same file, the leg says as4, and the profile's certificates are due.
        let migrated = IOP.replace(r#"transport = "iop""#, r#"transport = "as4""#);
        assert!(keys(&migrated).iter().any(|k| k == "party[0].sign_cert"), "{:?}", keys(&migrated));
    }

    #[test]
    fn parses_a_good_file() {
        let link = parse_link(Path::new("cl-pe.toml"), GOOD).unwrap();
        assert_eq!(link.id, "cl-pe");
        assert_eq!(link.partner_of("CL-SAG").unwrap().id, "PE-SENASA");
        assert_eq!(link.legs[1].max_payload, 5 << 20);
        assert_eq!(link.retry, vec![Duration::from_secs(60), Duration::from_secs(300)]);
    }

    #[test]
    fn timestamps_are_fresh_within_the_link_bounds() {
        use time::macros::datetime;
        let link = parse_link(Path::new("cl-pe.toml"), GOOD).unwrap();
        assert_eq!((link.max_age, link.max_clock_skew), (link.duplicate_window, DEFAULT_MAX_CLOCK_SKEW));
        let now = datetime!(2026-12-02 12:00:00 UTC);
        assert!(link.check_timestamp("2026-12-02T12:10:00.000Z", now).is_ok(), "within the skew");
        assert!(link.check_timestamp("2026-12-02T14:00:00+02:00", now).is_ok(), "an offset");
        assert!(link.check_timestamp("2026-12-01T12:00:00", now).is_ok(), "no zone: UTC");
        assert!(link.check_timestamp("2026-12-02T12:20:00Z", now).unwrap_err().contains("in the future"));
        assert!(link.check_timestamp("2026-10-01T00:00:00Z", now).unwrap_err().contains("reliability.max_age"));
        assert!(link.check_timestamp("tomorrow", now).is_err());
        let wide = GOOD.replace(r#"duplicate_window = "30d""#, "duplicate_window = \"30d\"\nmax_age = \"31d\"");
        let errs = parse_link(Path::new("cl-pe.toml"), &wide).unwrap_err();
        assert_eq!(errs[0].key, "reliability.max_age", "{errs:?}");
        let tight = GOOD.replace(
            r#"duplicate_window = "30d""#,
            "duplicate_window = \"30d\"\nmax_age = \"1h\"\nmax_clock_skew = \"1m\"",
        );
        let link = parse_link(Path::new("cl-pe.toml"), &tight).unwrap();
        assert_eq!((link.max_age.as_secs(), link.max_clock_skew.as_secs()), (3600, 60));
    }

    #[test]
    fn errors_name_line_and_key() {
        let bad = GOOD.replace(r#"retry = ["1m", "5m"]"#, r#"retry = ["1m", "soon"]"#);
        let errs = parse_link(Path::new("cl-pe.toml"), &bad).unwrap_err();
        assert_eq!(errs.len(), 1);
        let line = bad.lines().position(|l| l.contains("soon")).unwrap() + 1;
        assert_eq!(
            errs[0].to_string(),
            format!("cl-pe.toml:{line}: reliability.retry: 'soon' is not a duration (use e.g. 1m, 5m, 1h)")
        );

        let bad = GOOD.replace("https://as4.pe.example/as4", "http://as4.pe.example/as4");
        let errs = parse_link(Path::new("x.toml"), &bad).unwrap_err();
        assert_eq!(errs[0].key, "party[1].endpoint");
        assert_eq!(errs[0].line, bad.lines().position(|l| l.contains("http://as4.pe")).unwrap() + 1);

        let bad = GOOD.replace("compression = true", "compresion = true");
        let errs = parse_link(Path::new("x.toml"), &bad).unwrap_err();
        assert_eq!(errs[0].key, "compresion");
        assert_eq!(errs[0].line, bad.lines().position(|l| l.contains("compresion")).unwrap() + 1);

        let errs = parse_link(Path::new("x.toml"), "id = [").unwrap_err();
        assert_eq!(errs[0].key, "(syntax)");
    }

    #[test]
    fn refuses_duplicate_legs_and_bad_profile() {
        let bad = GOOD.replace("action = \"CertificateOfOrigin\"", "action = \"SPSCertificate\"").replace(
            "service = \"urn:pacific-alliance:service:origin\"",
            "service = \"urn:pacific-alliance:service:ephyto\"",
        );
        assert!(parse_link(Path::new("x.toml"), &bad).unwrap_err().iter().any(|e| e.key == "leg[1].action"));
        let bad = GOOD.replace("profile = \"none\"", "profile = \"as2\"");
        assert_eq!(parse_link(Path::new("x.toml"), &bad).unwrap_err()[0].key, "profile");
    }
}
