//! The IOP messages on the wire: SOAP 1.1 envelopes written as text and read with the bounded
//! element tree of [`crate::ebms::tree`] (no DTDs, limits on size, depth and element count).

use super::{Acuse, Answer, Cabecera, Codigo, Detalle, Envio, Falla, MAX_DETALLES, Request, code, ns};
use crate::ebms::tree::{self, Element, Limits, escape};

/// Elements of a `Cabecera`, in schema order, with their values.
fn cabecera_fields(c: &Cabecera) -> Vec<(&'static str, &str)> {
    let mut fields = vec![
        ("CodigoInteraccion", c.codigo_interaccion.as_str()),
        ("IDdeServicio", &c.id_servicio),
        ("IDdeRemitente", &c.id_remitente),
        ("PaisdeRemitente", &c.pais_remitente),
        ("IDdeDestinatario", &c.id_destinatario),
        ("PaisdeDestinatario", &c.pais_destinatario),
        ("IDdeTransaccion", &c.id_transaccion),
        ("EstadoTransaccion", &c.estado_transaccion),
        ("FechaHora", &c.fecha_hora),
        ("TipodeDocumento", &c.tipo_documento),
        ("IDdeDocumento", &c.id_documento),
    ];
    if let Some(original) = &c.id_transaccion_original {
        fields.push(("IDdeTransaccionOriginal", original));
    }
    fields
}

fn write_cabecera(c: &Cabecera) -> String {
    let mut out = format!(r#"<cab:Cabecera xmlns:cab="{}" VersionEsquema="0.2">"#, ns::CAB);
    for (name, value) in cabecera_fields(c) {
        out.push_str(&format!("<cab:{name}>{}</cab:{name}>", escape(value)));
    }
    out.push_str("</cab:Cabecera>");
    out
}

/// The body element `EnvioCertificadoFitosanitario`: what is stored as the message's envelope
/// (the credentials are added at each attempt, never stored).
pub fn envio_body(envio: &Envio) -> String {
    format!(
        r#"<cfs:EnvioCertificadoFitosanitario xmlns:cfs="{}" VersionEsquema="0.4">{}<cfs:SignedSPSCert>{}</cfs:SignedSPSCert></cfs:EnvioCertificadoFitosanitario>"#,
        ns::CFS,
        write_cabecera(&envio.cabecera),
        escape(&envio.signed_sps_cert)
    )
}

/// A SOAP 1.1 request around a stored body, with a plain-text UsernameToken (the IOP's client
/// authentication, over server-authenticated TLS).
pub fn request_envelope(body: &str, username: &str, password: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="{}"><soapenv:Header><wsse:Security xmlns:wsse="{}" soapenv:mustUnderstand="1"><wsse:UsernameToken><wsse:Username>{}</wsse:Username><wsse:Password Type="{}">{}</wsse:Password></wsse:UsernameToken></wsse:Security></soapenv:Header><soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"#,
        ns::SOAP11,
        ns::WSSE,
        escape(username),
        ns::PASSWORD_TEXT,
        escape(password)
    )
}

/// The answer `AcuseRecibo`, in a SOAP 1.1 envelope.
pub fn acuse_envelope(acuse: &Acuse) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="{}"><soapenv:Body><ack:AcuseRecibo xmlns:ack="{}" VersionEsquema="0.1">{}<ack:CodigoAcuseRecibo>{}</ack:CodigoAcuseRecibo><ack:GlosaAcuseRecibo>{}</ack:GlosaAcuseRecibo><ack:FechaHoraAcuseRecibo>{}</ack:FechaHoraAcuseRecibo></ack:AcuseRecibo></soapenv:Body></soapenv:Envelope>"#,
        ns::SOAP11,
        ns::ACK,
        write_cabecera(&acuse.cabecera),
        acuse.codigo.as_str(),
        escape(&super::truncate(&acuse.glosa, 300)),
        escape(&acuse.fecha_hora)
    )
}

/// A SOAP 1.1 fault whose detail is a `MensajeFalla` (at most 99 findings; HTTP 500 goes with
/// it). `client` says whose fault it is: the sender's (`soapenv:Client`) or ours.
pub fn fault_envelope(falla: &Falla, client: bool) -> String {
    let mut detalles = String::new();
    for d in falla.detalles.iter().take(MAX_DETALLES) {
        detalles.push_str(&format!(
            "<err:DetallesError><err:CodigodeError>{}</err:CodigodeError><err:MensajedeError>{}</err:MensajedeError></err:DetallesError>",
            escape(&super::truncate(&d.codigo, 5)),
            escape(&super::truncate(&d.mensaje, 300))
        ));
    }
    let faultstring = falla.detalles.first().map(|d| d.mensaje.as_str()).unwrap_or("refused");
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="{}"><soapenv:Body><soapenv:Fault><faultcode>soapenv:{}</faultcode><faultstring>{}</faultstring><detail><falla:MensajeFalla xmlns:falla="{}" xmlns:err="{}" VersionEsquema="0.1">{}{detalles}</falla:MensajeFalla></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"#,
        ns::SOAP11,
        if client { "Client" } else { "Server" },
        escape(&super::truncate(faultstring, 300)),
        ns::FALLA,
        ns::ERR,
        falla.cabecera.as_ref().map(write_cabecera).unwrap_or_default()
    )
}

/// Why a request or answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ReadError(pub String);

impl ReadError {
    pub fn detalle(&self) -> Detalle {
        Detalle::new(code::MALFORMED, &self.0)
    }
}

fn parse_envelope(bytes: &[u8], limits: Limits) -> Result<Element, ReadError> {
    let root = tree::parse(bytes, limits).map_err(|e| ReadError(e.to_string()))?;
    if !root.is(ns::SOAP11, "Envelope") {
        return Err(ReadError(format!("the root is {{{}}}{}, not a SOAP 1.1 Envelope", root.ns, root.local)));
    }
    Ok(root)
}

fn body_of(envelope: &Element) -> Result<&Element, ReadError> {
    only_child(envelope, ns::SOAP11, "Body", "the envelope")
}

fn only_child<'a>(parent: &'a Element, ns: &str, local: &str, what: &str) -> Result<&'a Element, ReadError> {
    let mut found = parent.children.iter().filter(|c| c.is(ns, local));
    let first = found.next().ok_or_else(|| ReadError(format!("{what} has no {local}")))?;
    if found.next().is_some() {
        return Err(ReadError(format!("{what} has more than one {local}")));
    }
    Ok(first)
}

fn read_cabecera(element: &Element) -> Result<Cabecera, ReadError> {
    let text = |local: &str| -> Result<String, ReadError> {
        Ok(only_child(element, ns::CAB, local, "Cabecera")?.trimmed_text().to_owned())
    };
    let original = match element.child(ns::CAB, "IDdeTransaccionOriginal") {
        Some(_) => Some(text("IDdeTransaccionOriginal")?),
        None => None,
    };
    Ok(Cabecera {
        codigo_interaccion: text("CodigoInteraccion")?,
        id_servicio: text("IDdeServicio")?,
        id_remitente: text("IDdeRemitente")?,
        pais_remitente: text("PaisdeRemitente")?,
        id_destinatario: text("IDdeDestinatario")?,
        pais_destinatario: text("PaisdeDestinatario")?,
        id_transaccion: text("IDdeTransaccion")?,
        estado_transaccion: text("EstadoTransaccion")?,
        fecha_hora: text("FechaHora")?,
        tipo_documento: text("TipodeDocumento")?,
        // xs:token: whitespace is collapsed by the schema; the value is checked as sent.
        id_documento: only_child(element, ns::CAB, "IDdeDocumento", "Cabecera")?.text.clone(),
        id_transaccion_original: original,
    })
}

/// Limits for an IOP envelope that carries a certificate of up to `max_document` bytes as
/// text: the certificate is one text node, so the element count stays small.
pub fn limits(max_document: usize) -> Limits {
    Limits { max_bytes: max_document.saturating_add(64 << 10), max_depth: 16, max_elements: 200, ..Limits::default() }
}

/// Reads an `EnvioCertificadoFitosanitario` request. The header's values are returned as sent;
/// [`Cabecera::check`] judges them.
pub fn read_request(bytes: &[u8], limits: Limits) -> Result<Request, ReadError> {
    let root = parse_envelope(bytes, limits)?;
    let token = root
        .child(ns::SOAP11, "Header")
        .and_then(|h| h.child(ns::WSSE, "Security"))
        .and_then(|s| s.child(ns::WSSE, "UsernameToken"));
    let username = token.and_then(|t| t.child(ns::WSSE, "Username")).map(|u| u.trimmed_text().to_owned());
    let password = match token.and_then(|t| t.child(ns::WSSE, "Password")) {
        Some(p) => {
            if p.attr("", "Type").is_some_and(|t| t != ns::PASSWORD_TEXT) {
                return Err(ReadError("only PasswordText UsernameTokens are accepted".into()));
            }
            Some(p.text.clone())
        }
        None => None,
    };
    let body = body_of(&root)?;
    let envio = only_child(body, ns::CFS, "EnvioCertificadoFitosanitario", "the Body")?;
    Ok(Request { username, password, envio: read_envio(envio)? })
}

/// Reads the body element stored for an outbound message (what [`envio_body`] wrote).
pub fn read_envio_body(bytes: &[u8], limits: Limits) -> Result<Envio, ReadError> {
    let envio = tree::parse(bytes, limits).map_err(|e| ReadError(e.to_string()))?;
    if !envio.is(ns::CFS, "EnvioCertificadoFitosanitario") {
        return Err(ReadError("not an EnvioCertificadoFitosanitario".into()));
    }
    read_envio(&envio)
}

/// The header and the certificate text of an `EnvioCertificadoFitosanitario` element.
fn read_envio(envio: &Element) -> Result<Envio, ReadError> {
    let cabecera = read_cabecera(only_child(envio, ns::CAB, "Cabecera", "EnvioCertificadoFitosanitario")?)?;
    let signed_sps_cert = only_child(envio, ns::CFS, "SignedSPSCert", "EnvioCertificadoFitosanitario")?.text.clone();
    Ok(Envio { cabecera, signed_sps_cert })
}

/// Reads a partner's answer: an `AcuseRecibo`, or a SOAP fault (with its `MensajeFalla` when
/// readable).
pub fn read_answer(bytes: &[u8]) -> Result<Answer, ReadError> {
    let root =
        parse_envelope(bytes, Limits { max_bytes: 1 << 20, max_depth: 16, max_elements: 2_000, ..Limits::default() })?;
    let body = body_of(&root)?;
    if let Some(fault) = body.child(ns::SOAP11, "Fault") {
        let faultstring = fault.child("", "faultstring").map(|f| f.trimmed_text().to_owned()).unwrap_or_default();
        let faultcode = fault.child("", "faultcode").map(|f| f.trimmed_text().to_owned()).unwrap_or_default();
        let falla = fault.child("", "detail").and_then(|d| d.child(ns::FALLA, "MensajeFalla")).map(|m| Falla {
            cabecera: m.child(ns::CAB, "Cabecera").and_then(|c| read_cabecera(c).ok()),
            detalles: m
                .children_named(ns::ERR, "DetallesError")
                .take(MAX_DETALLES)
                .map(|d| Detalle {
                    codigo: d.child(ns::ERR, "CodigodeError").map(|c| c.trimmed_text().to_owned()).unwrap_or_default(),
                    mensaje: d
                        .child(ns::ERR, "MensajedeError")
                        .map(|c| super::truncate(c.trimmed_text(), 300))
                        .unwrap_or_default(),
                })
                .collect(),
        });
        return Ok(Answer::Fault { faultcode, faultstring, falla });
    }
    let acuse = only_child(body, ns::ACK, "AcuseRecibo", "the Body")?;
    let cabecera = read_cabecera(only_child(acuse, ns::CAB, "Cabecera", "AcuseRecibo")?)?;
    let codigo = match only_child(acuse, ns::ACK, "CodigoAcuseRecibo", "AcuseRecibo")?.trimmed_text() {
        "RCB" => Codigo::Recibido,
        "ERR" => Codigo::Error,
        other => {
            return Err(ReadError(format!(
                "CodigoAcuseRecibo '{}' is neither RCB nor ERR",
                super::truncate(other, 20)
            )));
        }
    };
    let text = |local: &str| acuse.child(ns::ACK, local).map(|e| e.trimmed_text().to_owned()).unwrap_or_default();
    Ok(Answer::Acuse(Acuse {
        cabecera,
        codigo,
        glosa: text("GlosaAcuseRecibo"),
        fecha_hora: text("FechaHoraAcuseRecibo"),
    }))
}

#[cfg(test)]
mod tests {
    use super::super::tests::cabecera;
    use super::*;

    const DOCUMENT: &str =
        r#"<?xml version="1.0"?><rsm:SPSCertificate xmlns:rsm="urn:x" id="SPSCERT">a &amp; b</rsm:SPSCertificate>"#;

    #[test]
    fn a_request_reads_back_as_written() {
        let envio = Envio { cabecera: cabecera(), signed_sps_cert: DOCUMENT.into() };
        let body = envio_body(&envio);
        assert_eq!(read_envio_body(body.as_bytes(), limits(1 << 20)).unwrap(), envio);
        let wire = request_envelope(&body, "vucepe", "s3cret <&>");
        let request = read_request(wire.as_bytes(), limits(1 << 20)).unwrap();
        assert_eq!(request.envio, envio, "the certificate text survives escaping");
        assert_eq!((request.username.as_deref(), request.password.as_deref()), (Some("vucepe"), Some("s3cret <&>")));
        let without = format!(r#"<s:Envelope xmlns:s="{}"><s:Body>{body}</s:Body></s:Envelope>"#, ns::SOAP11);
        assert_eq!(read_request(without.as_bytes(), limits(1 << 20)).unwrap().username, None);
    }

    #[test]
    fn cdata_certificates_are_read_too() {
        let body = envio_body(&Envio { cabecera: cabecera(), signed_sps_cert: "X".into() }).replace(
            "<cfs:SignedSPSCert>X</cfs:SignedSPSCert>",
            &format!("<cfs:SignedSPSCert><![CDATA[{DOCUMENT}]]></cfs:SignedSPSCert>"),
        );
        let wire = request_envelope(&body, "u", "p");
        assert_eq!(read_request(wire.as_bytes(), limits(1 << 20)).unwrap().envio.signed_sps_cert, DOCUMENT);
    }

    #[test]
    fn answers_read_back() {
        let acuse = Acuse {
            cabecera: cabecera(),
            codigo: Codigo::Recibido,
            glosa: "ok".into(),
            fecha_hora: "2026-12-02T10:00:01Z".into(),
        };
        assert_eq!(read_answer(acuse_envelope(&acuse).as_bytes()).unwrap(), Answer::Acuse(acuse));
        let falla = Falla {
            cabecera: Some(cabecera()),
            detalles: vec![
                Detalle::new(code::AUTHENTICATION, "wrong password"),
                Detalle::new(code::CABECERA, "IDdeRemitente"),
            ],
        };
        match read_answer(fault_envelope(&falla, true).as_bytes()).unwrap() {
            Answer::Fault { faultcode, faultstring, falla: Some(read) } => {
                assert_eq!((faultcode.as_str(), faultstring.as_str()), ("soapenv:Client", "wrong password"));
                assert_eq!(read, falla);
            }
            other => panic!("{other:?}"),
        }
        let many = Falla { cabecera: None, detalles: vec![Detalle::new("E003", "x"); 150] };
        match read_answer(fault_envelope(&many, true).as_bytes()).unwrap() {
            Answer::Fault { falla: Some(f), .. } => assert_eq!((f.detalles.len(), f.cabecera), (MAX_DETALLES, None)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hostile_requests_are_refused_cheaply() {
        let doctype = br#"<!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>"#;
        assert!(read_request(doctype, limits(1 << 20)).is_err());
        let deep = format!("{}{}", "<a>".repeat(100), "</a>".repeat(100));
        assert!(read_request(deep.as_bytes(), limits(1 << 20)).is_err());
        let big = vec![b' '; 2 << 20];
        assert!(read_request(&big, limits(1 << 20)).is_err());
        assert!(read_answer(b"<html>502 Bad Gateway</html>").is_err());
        let two = envio_body(&Envio { cabecera: cabecera(), signed_sps_cert: "x".into() });
        let wire = request_envelope(
            &two.replace(
                "</cfs:EnvioCertificadoFitosanitario>",
                "<cfs:SignedSPSCert>y</cfs:SignedSPSCert></cfs:EnvioCertificadoFitosanitario>",
            ),
            "u",
            "p",
        );
        assert!(read_request(wire.as_bytes(), limits(1 << 20)).unwrap_err().0.contains("more than one SignedSPSCert"));
    }
}
