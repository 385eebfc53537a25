//! Certificates of origin: the ALADI COD (Certificado de Origen Digital; versions 1.8.x and
//! 4.1.1 share the structure checked here). No redistributable COD schema exists
//! (docs/payloads.md §2.1), so the checks are structural plus both embedded XML signatures,
//! verified with the same libxml2 c14n and OpenSSL code as the WS-Security layer: the
//! exporter's over `#COD`, the certifying official's over `#CODEH` (which covers the
//! exporter's signature).

use super::{Context, Document, Finding, PayloadHandler, finding, locate, parse_findings};
use crate::wss::digest::b64;
use crate::wss::xml::{Xml, child};
use libxml::tree::Node;
use openssl::x509::X509;
use sha2::{Digest, Sha256};

const ENVELOPE_NS: &str = "http://www.w3.org/2001/12/soap-envelope";
use crate::dsig::{C14N_COMMENTS, DS, ENVELOPED, EXC_C14N, RSA_SHA256, SHA256};

pub struct AladiCod;

impl PayloadHandler for AladiCod {
    fn name(&self) -> &'static str {
        "origin"
    }

    fn detect(&self, head: &[u8]) -> bool {
        let text = String::from_utf8_lossy(head);
        text.contains("CertOrigin") && text.contains(ENVELOPE_NS)
    }

    fn inspect(&self, bytes: &[u8], _context: &Context) -> Result<Document, Vec<Finding>> {
        if bytes.starts_with(b"\xEF\xBB\xBF") {
            return Err(vec![finding("COD-ENCODING", "line 1", "a COD must not start with a byte order mark")]);
        }
        let xml = Xml::parse_located(bytes).map_err(|e| parse_findings("COD-XML", e))?;
        inspect(&xml)
    }
}

fn el(node: &Node, name: &str) -> Option<Node> {
    node.get_child_elements().into_iter().find(|c| c.get_name() == name && c.get_namespace().is_none())
}

fn text(node: &Node, names: &[&str]) -> Option<String> {
    let mut current = node.clone();
    for name in names {
        current = el(&current, name)?;
    }
    Some(current.get_content().trim().to_owned()).filter(|t| !t.is_empty())
}

fn inspect(xml: &Xml) -> Result<Document, Vec<Finding>> {
    let root = xml.root().ok_or_else(|| vec![finding("COD-XML", "document", "no root element")])?;
    let structure = |node: &Node, m: &str| vec![finding("COD-STRUCTURE", locate(node), m)];
    if !(root.get_name() == "Envelope" && root.get_namespace().map(|n| n.get_href()).as_deref() == Some(ENVELOPE_NS)) {
        return Err(structure(
            &root,
            "the root must be the COD container Envelope (http://www.w3.org/2001/12/soap-envelope)",
        ));
    }
    let cert_origin = child(&root, ENVELOPE_NS, "CertOrigin").ok_or_else(|| structure(&root, "no CertOrigin"))?;
    let codeh = el(&cert_origin, "CODEH").ok_or_else(|| structure(&cert_origin, "no CODEH"))?;
    let exporter_part = el(&codeh, "CODExporter").ok_or_else(|| structure(&codeh, "no CODExporter"))?;
    let cod = el(&exporter_part, "COD").ok_or_else(|| structure(&exporter_part, "no COD"))?;

    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    fn need(errors: &mut Vec<Finding>, node: &Node, names: &[&str]) -> String {
        let v = text(node, names);
        if v.is_none() {
            errors.push(finding("COD-MISSING", locate(node), format!("{} is required", names.join("/"))));
        }
        v.unwrap_or_default()
    }
    let version = need(&mut errors, &cod, &["CODVer"]);
    let submitter = need(&mut errors, &cod, &["CODSubmitterType"]);
    let agreement = need(&mut errors, &cod, &["Agreement", "AgreementAcronym"]);
    let form = el(&cod, &format!("Form{agreement}"));
    if submitter != "EXP" && !submitter.is_empty() {
        errors.push(finding("COD-STRUCTURE", locate(&cod), format!("CODSubmitterType is '{submitter}', not EXP")));
    }
    let Some(form) = form else {
        errors.push(finding("COD-STRUCTURE", locate(&cod), format!("no Form{agreement} for agreement '{agreement}'")));
        return Err(errors);
    };
    let exporter_country = need(&mut errors, &form, &["Exporter", "ExporterCountry"]);
    let importer_country = need(&mut errors, &form, &["Importer", "ImporterCountry"]);
    let exporter = need(&mut errors, &form, &["Exporter", "ExporterBusinessName"]);
    let importer = text(&form, &["Importer", "ImporterBusinessName"]).unwrap_or_default();
    let declaration_date = need(&mut errors, &form, &["Declaration", "DeclarationDate"]);
    let goods_list = el(&form, "GoodsList");
    let goods: Vec<Node> = goods_list
        .as_ref()
        .map(|g| g.get_child_elements().into_iter().filter(|c| c.get_name() == "Goods").collect())
        .unwrap_or_default();
    if goods.is_empty() {
        errors.push(finding("COD-GOODS", locate(&form), "GoodsList needs at least one Goods line"));
    }
    if let Some(list) = &goods_list {
        let declared = text(list, &["GoodsQty"]).unwrap_or_default();
        if declared != goods.len().to_string() {
            errors.push(finding(
                "COD-GOODS",
                locate(list),
                format!("GoodsQty says {declared}, the list has {} lines", goods.len()),
            ));
        }
    }
    let mut hs_codes = Vec::new();
    for g in &goods {
        match text(g, &["GoodsItemCode"]) {
            Some(code) => hs_codes.push(code),
            None => errors.push(finding("COD-GOODS", locate(g), "a Goods line needs its GoodsItemCode (NALADISA/HS)")),
        }
    }
    for (code, what) in [(&exporter_country, "ExporterCountry"), (&importer_country, "ImporterCountry")] {
        let iso = code.len() == 2 && code.chars().all(|c| c.is_ascii_uppercase());
        if !code.is_empty() && !iso {
            errors.push(finding(
                "COD-COUNTRY",
                locate(&form),
                format!("{what} '{code}' is not an ISO 3166 alpha-2 code"),
            ));
        }
    }

    // Emission stage and signatures.
    let exporter_sig = exporter_part.get_child_elements().into_iter().find(|c| c.get_name() == "Signature" && is_ds(c));
    let eh = el(&codeh, "EH");
    let certification = el(&codeh, "CertificationEH");
    let official_sig = cert_origin.get_child_elements().into_iter().find(|c| c.get_name() == "Signature" && is_ds(c));
    let certificate_id = certification.as_ref().and_then(|c| text(c, &["CertificateID"])).unwrap_or_default();
    let certificate_date = certification.as_ref().and_then(|c| text(c, &["CertificateDate"])).unwrap_or_default();
    let mut signers = Vec::new();
    match &exporter_sig {
        Some(sig) => match verify_embedded(xml, sig, "COD", &declaration_date) {
            Ok((subject, w)) => {
                signers.push(format!("exporter: {subject}"));
                warnings.extend(w);
            }
            Err(f) => errors.push(Finding { rule: "COD-SIG-EXPORTER".into(), ..f }),
        },
        None if official_sig.is_some() => errors.push(finding(
            "COD-SIG-EXPORTER",
            locate(&exporter_part),
            "the official's signature is present but the exporter's is missing",
        )),
        None => {}
    }
    if let Some(sig) = &official_sig {
        if eh.is_none() || certification.is_none() {
            errors.push(finding(
                "COD-STRUCTURE",
                locate(&codeh),
                "an official's signature needs EH and CertificationEH",
            ));
        }
        match verify_embedded(xml, sig, "CODEH", &certificate_date) {
            Ok((subject, w)) => {
                signers.push(format!("official: {subject}"));
                warnings.extend(w);
            }
            Err(f) => errors.push(Finding { rule: "COD-SIG-OFFICIAL".into(), ..f }),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let stage = match (exporter_sig.is_some(), certification.is_some(), official_sig.is_some()) {
        (_, _, true) => 4,
        (_, true, false) => 3,
        (true, false, false) => 2,
        _ => 1,
    };
    let status = match stage {
        4 => "certified and signed by the official (stage 4)".to_owned(),
        3 => "certified, not yet signed by the official (stage 3)".to_owned(),
        2 => "signed by the exporter (stage 2)".to_owned(),
        _ => "unsigned (stage 1)".to_owned(),
    };
    if stage < 4 {
        warnings.push(finding(
            "COD-STAGE",
            locate(&codeh),
            format!("emission stage {stage}: only a stage 4 COD is legally complete"),
        ));
    }
    let mut fields = std::collections::BTreeMap::new();
    fields.insert("exporter".into(), exporter);
    fields.insert("importer".into(), importer);
    fields.insert("agreement".into(), agreement.clone());
    fields.insert("goods_lines".into(), goods.len().to_string());
    fields.insert("hs_codes".into(), hs_codes.join(", "));
    fields.insert("declaration_date".into(), declaration_date);
    fields.insert("certificate_date".into(), certificate_date);
    fields.insert("signatures".into(), signers.join("; "));
    Ok(Document {
        kind: "origin".into(),
        profile: format!("ALADI COD {version}"),
        number: certificate_id,
        doc_type: agreement,
        status,
        origin_country: Some(exporter_country),
        destination_country: Some(importer_country),
        fields,
        warnings,
    })
}

fn is_ds(node: &Node) -> bool {
    node.get_namespace().map(|n| n.get_href()).as_deref() == Some(DS)
}

fn ds(node: &Node, name: &str) -> Option<Node> {
    child(node, DS, name)
}

/// Verifies an XML signature over `#target` (beside it, never inside: the COD layout); returns
/// the signer and warnings. The certificate must have been valid at `when` (the declaration
/// or certification date: COD dates carry no zone and are taken as UTC), not merely now.
fn verify_embedded(xml: &Xml, sig: &Node, target: &str, when: &str) -> Result<(String, Vec<Finding>), Finding> {
    let fail = |m: String| finding("COD-SIG", locate(sig), m);
    let mut ancestor = sig.get_parent();
    while let Some(a) = ancestor {
        if a.get_property_no_ns("id").as_deref() == Some(target)
            || a.get_property_no_ns("Id").as_deref() == Some(target)
        {
            return Err(fail("a signature inside the element it signs is not a COD layout".into()));
        }
        ancestor = a.get_parent();
    }
    let verified = crate::dsig::verify(xml, sig, target).map_err(fail)?;
    let mut warnings = Vec::new();
    if verified.sha1.contains(&"digest") {
        warnings.push(finding("COD-SIG-WEAK", locate(sig), "SHA-1 digest (accepted for older COD signatures)"));
    }
    if verified.sha1.contains(&"signature") {
        warnings.push(finding("COD-SIG-WEAK", locate(sig), "RSA-SHA1 signature (older exporter certificates)"));
    }
    let cert = verified.signer;
    // Reported, not fatal: the shared COD samples were signed with keys issued after their
    // declaration dates, and no ALADI directory is at hand to tell a real back-dating apart.
    if let Some(at) = date_as_asn1(when)
        && (cert.not_before() > at || cert.not_after() < at)
    {
        warnings.push(finding(
            "COD-SIG-VALIDITY",
            locate(sig),
            format!("the signer's certificate was not valid on {when}"),
        ));
    }
    Ok((crate::pki::trust::subject_of(&cert), warnings))
}

fn date_as_asn1(value: &str) -> Option<openssl::asn1::Asn1Time> {
    use time::format_description::well_known::Rfc3339;
    let t = time::OffsetDateTime::parse(value, &Rfc3339)
        .or_else(|_| time::OffsetDateTime::parse(&format!("{value}Z"), &Rfc3339))
        .ok()?;
    openssl::asn1::Asn1Time::from_unix(t.unix_timestamp()).ok()
}

/// Makes COD documents for tests and the demo (TEST ONLY): takes a stage 4 COD, sets the
/// countries and certificate number, and signs it again, first as the exporter over `#COD`,
/// then as the official over `#CODEH`, in the layout and algorithms of the ALADI samples.
pub mod testing {
    use super::*;
    use openssl::pkey::{PKey, Private};

    fn strip_signatures(mut text: String) -> String {
        while let Some(start) = text.find("<ds:Signature>") {
            let end = text[start..]
                .find("</ds:Signature>")
                .map(|e| start + e + "</ds:Signature>".len())
                .unwrap_or(text.len());
            text.replace_range(start..end, "");
        }
        text
    }

    fn signature(
        xml_text: &str,
        target: &str,
        insert_after: &str,
        key: &PKey<Private>,
        cert: &X509,
    ) -> Result<String, String> {
        let parsed = Xml::parse(xml_text.as_bytes()).map_err(|e| e.to_string())?;
        let node = parsed.elements_with_id(target).into_iter().next().ok_or("no signature target")?;
        let digest = Sha256::digest(parsed.c14n_subtree(&node, &[]).map_err(|e| e.to_string())?);
        let signed_info = format!(
            r##"<ds:SignedInfo><ds:CanonicalizationMethod Algorithm="{C14N_COMMENTS}"/><ds:SignatureMethod Algorithm="{RSA_SHA256}"/><ds:Reference URI="#{target}"><ds:Transforms><ds:Transform Algorithm="{ENVELOPED}"/><ds:Transform Algorithm="{EXC_C14N}"/></ds:Transforms><ds:DigestMethod Algorithm="{SHA256}"/><ds:DigestValue>{}</ds:DigestValue></ds:Reference></ds:SignedInfo>"##,
            b64(&digest)
        );
        let cert_b64 = b64(&cert.to_der().map_err(|e| e.to_string())?);
        let with_placeholder = format!(
            "<ds:Signature>{signed_info}<ds:SignatureValue></ds:SignatureValue><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert_b64}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></ds:Signature>"
        );
        let at = xml_text.find(insert_after).ok_or("insertion point not found")? + insert_after.len();
        let draft = format!("{}{}{}", &xml_text[..at], with_placeholder, &xml_text[at..]);
        let parsed = Xml::parse(draft.as_bytes()).map_err(|e| e.to_string())?;
        let sig = parsed
            .root()
            .and_then(|r| {
                let mut found = Vec::new();
                find_signatures(&r, &mut found);
                found.into_iter().find(|s| {
                    s.get_parent().map(|p| p.get_name())
                        == Some(if target == "COD" { "CODExporter".to_owned() } else { "CertOrigin".to_owned() })
                })
            })
            .ok_or("signature not found")?;
        let si = ds(&sig, "SignedInfo").ok_or("no SignedInfo")?;
        let canonical = parsed.c14n_subtree_mode(&si, 0, true).map_err(|e| e.to_string())?;
        let mut signer =
            openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), key).map_err(|e| e.to_string())?;
        signer.update(&canonical).map_err(|e| e.to_string())?;
        let value = signer.sign_to_vec().map_err(|e| e.to_string())?;
        Ok(draft.replacen(
            "<ds:SignatureValue></ds:SignatureValue>",
            &format!("<ds:SignatureValue>{}</ds:SignatureValue>", b64(&value)),
            1,
        ))
    }

    fn find_signatures(node: &Node, out: &mut Vec<Node>) {
        for c in node.get_child_elements() {
            if c.get_name() == "Signature" && is_ds(&c) {
                out.push(c.clone());
            }
            find_signatures(&c, out);
        }
    }

    /// A stage 4 COD from `exporter_country` to `importer_country`, re-signed.
    pub fn cod(
        template: &str,
        exporter_country: &str,
        importer_country: &str,
        certificate_id: &str,
        exporter: (&PKey<Private>, &X509),
        official: (&PKey<Private>, &X509),
    ) -> Result<String, String> {
        let replace_between = |text: String, open: &str, close: &str, value: &str| -> String {
            match (text.find(open), text.find(close)) {
                (Some(a), Some(b)) if a < b => format!("{}{open}{value}{}", &text[..a], &text[b..]),
                _ => text,
            }
        };
        let mut text = strip_signatures(template.to_owned());
        text = replace_between(text, "<ExporterCountry>", "</ExporterCountry>", exporter_country);
        text = replace_between(text, "<ImporterCountry>", "</ImporterCountry>", importer_country);
        text = replace_between(text, "<EHCountry>", "</EHCountry>", exporter_country);
        text = replace_between(text, "<CertificateID>", "</CertificateID>", certificate_id);
        let text = signature(&text, "COD", "</COD>", exporter.0, exporter.1)?;
        signature(&text, "CODEH", "</CODEH>", official.0, official.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../samples/origin").join(name)
    }

    fn check(name: &str) -> Result<Document, Vec<Finding>> {
        AladiCod.inspect(&std::fs::read(path(name)).unwrap(), &Context::default())
    }

    #[test]
    fn the_four_emission_stages() {
        let d = check("cod_v1.8.3_A35_CL-AR_stage4_complete.xml").unwrap();
        assert_eq!(d.number, "CL012A35250000004200");
        assert_eq!((d.origin_country.as_deref(), d.destination_country.as_deref()), (Some("CL"), Some("AR")));
        assert!(d.status.contains("stage 4"), "{}", d.status);
        assert!(d.fields["signatures"].contains("exporter") && d.fields["signatures"].contains("official"));
        assert_eq!(d.fields["hs_codes"], "0806.10.00");
        assert!(
            check("cod_v1.8.3_A35_CL-AR_stage3_certified_not_yet_signed_by_official.xml")
                .unwrap()
                .status
                .contains("stage 3")
        );
        assert!(check("cod_v1.8.3_A35_CL-AR_stage2_exporter_signed.xml").unwrap().status.contains("stage 2"));
        let stage1 = check("cod_v1.8.3_A35_CL-AR_stage1_unsigned.xml").unwrap();
        assert!(stage1.status.contains("stage 1") && stage1.warnings.iter().any(|w| w.rule == "COD-STAGE"));
    }

    #[test]
    fn tampered_and_anomalous_documents_are_refused() {
        let tampered = check("neg_cod_v1.8.3_A35_tampered_after_signing.xml").unwrap_err();
        assert!(tampered.iter().any(|f| f.rule == "COD-SIG-EXPORTER"), "{tampered:?}");
        assert!(tampered.iter().any(|f| f.rule == "COD-SIG-OFFICIAL"), "{tampered:?}");
        let anomalous = check("neg_cod_v1.8.3_A35_anomalous_no_exporter_signature.xml").unwrap_err();
        assert!(anomalous.iter().any(|f| f.rule == "COD-SIG-EXPORTER"), "{anomalous:?}");
        assert!(anomalous.iter().all(|f| f.location.starts_with("line ")), "{anomalous:?}");
    }

    #[test]
    fn re_signed_documents_verify_and_edits_do_not() {
        let keys = |name: &str| {
            let dir = path("test-keys");
            let key =
                openssl::pkey::PKey::private_key_from_pem(&std::fs::read(dir.join(format!("{name}.key.pem"))).unwrap())
                    .unwrap();
            let cert = X509::from_pem(&std::fs::read(dir.join(format!("{name}.cert.pem"))).unwrap()).unwrap();
            (key, cert)
        };
        let (ek, ec) = keys("exporter");
        let (ok, oc) = keys("official");
        let template = std::fs::read_to_string(path("cod_v1.8.3_A35_CL-AR_stage4_complete.xml")).unwrap();
        let made = testing::cod(&template, "PE", "MX", "PE012A35260000000100", (&ek, &ec), (&ok, &oc)).unwrap();
        let d = AladiCod.inspect(made.as_bytes(), &Context::default()).unwrap();
        assert_eq!(
            (d.origin_country.as_deref(), d.destination_country.as_deref(), d.number.as_str()),
            (Some("PE"), Some("MX"), "PE012A35260000000100")
        );
        let edited = made.replace("<GoodsItemFOB>36288.00", "<GoodsItemFOB>1.00");
        assert!(AladiCod.inspect(edited.as_bytes(), &Context::default()).is_err());
    }
}
