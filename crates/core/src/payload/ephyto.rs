//! ePhyto: the UN/CEFACT SPSCertificate as the IPPC ePhyto Hub uses it (namespace
//! `SPSCertificate:17`, validated against the hub schema set shipped in `schemas/ephyto/`),
//! the older `SPSCertificate:11` (D13B) that the Pacific Alliance single windows exchange
//! (no schema set available: the business rules below are all that is checked), and the hub's
//! envelope forms. Business rules: docs/payloads.md §1.5.

use super::{Context, Document, Finding, PayloadHandler, finding, locate, parse_findings};
use crate::wss::xml::{Xml, is};
use base64::Engine as _;
use libxml::tree::Node;

pub const SPS17: &str = "urn:un:unece:uncefact:data:standard:SPSCertificate:17";
pub const SPS11: &str = "urn:un:unece:uncefact:data:standard:SPSCertificate:11";
const HUB: &str = "http://ephyto.ippc.int/HUB.Entities";
const EPHYTO: &str = "http://ephyto.ippc.int/";

pub struct Ephyto;

impl PayloadHandler for Ephyto {
    fn name(&self) -> &'static str {
        "ephyto"
    }

    fn detect(&self, head: &[u8]) -> bool {
        let text = String::from_utf8_lossy(head);
        text.contains("SPSCertificate") || text.contains(HUB)
    }

    fn inspect(&self, bytes: &[u8], context: &Context) -> Result<Document, Vec<Finding>> {
        let xml = Xml::parse_data_located(bytes).map_err(|e| parse_findings("EPHYTO-XML", e))?;
        let root = xml.root().ok_or_else(|| vec![finding("EPHYTO-XML", "document", "no root element")])?;
        if is(&root, HUB, "Envelope") {
            return envelope_with_content(&root, context);
        }
        if is(&root, EPHYTO, "ePhytoEnvelope") {
            schema::validate(&xml, schema::ENVELOPE)?;
            let header = Header::read(&root)?;
            let certificate =
                children(&root).into_iter().find(|c| c.get_name() == "SPSCertificate").ok_or_else(|| {
                    vec![finding("EPHYTO-ENVELOPE", locate(&root), "the ePhytoEnvelope holds no SPSCertificate")]
                })?;
            let document = certificate_rules(&certificate, version_of(&certificate, context)?)?;
            header.agrees_with(&document, &root)?;
            return Ok(document);
        }
        let version = version_of(&root, context)?;
        if version == "17" {
            schema::validate(&xml, schema::CERTIFICATE)?;
        }
        certificate_rules(&root, version)
    }
}

/// The schema version from the root namespace; the P-Mode says which versions it accepts.
fn version_of(root: &Node, context: &Context) -> Result<&'static str, Vec<Finding>> {
    let ns = root.get_namespace().map(|n| n.get_href()).unwrap_or_default();
    let version = match (ns.as_str(), root.get_name().as_str()) {
        (SPS17, "SPSCertificate") => "17",
        (SPS11, "SPSCertificate") => "11",
        (other, name) => {
            return Err(vec![finding(
                "EPHYTO-ROOT",
                locate(root),
                format!("root {{{other}}}{name} is not an SPSCertificate (:17 or :11) or an ePhyto hub envelope"),
            )]);
        }
    };
    if !context.allowed_versions.is_empty() && !context.allowed_versions.iter().any(|v| v == version) {
        return Err(vec![finding(
            "EPHYTO-VERSION",
            locate(root),
            format!(
                "SPSCertificate:{version} is not allowed on this link (allowed: {})",
                context.allowed_versions.join(", ")
            ),
        )]);
    }
    Ok(version)
}

fn children(node: &Node) -> Vec<Node> {
    node.get_child_elements()
}

/// The first descendant path by local names (namespaces are fixed by the schema for :17 and
/// by the root namespace check for :11).
fn path(node: &Node, names: &[&str]) -> Option<Node> {
    let mut current = node.clone();
    for name in names {
        current = children(&current).into_iter().find(|c| c.get_name() == *name)?;
    }
    Some(current)
}

fn all(node: &Node, name: &str) -> Vec<Node> {
    children(node).into_iter().filter(|c| c.get_name() == name).collect()
}

fn text(node: &Node, names: &[&str]) -> Option<String> {
    crate::wss::xml::text_at(node, names)
}

fn is_country(code: &str) -> bool {
    code.len() == 2 && code.chars().all(|c| c.is_ascii_uppercase())
}

fn certificate_rules(root: &Node, version: &str) -> Result<Document, Vec<Finding>> {
    let mut errors = Vec::new();
    let doc = path(root, &["SPSExchangedDocument"]);
    let consignment = path(root, &["SPSConsignment"]);
    let (Some(doc), Some(consignment)) = (doc, consignment) else {
        return Err(vec![finding(
            "EPHYTO-MISSING",
            locate(root),
            "SPSExchangedDocument and SPSConsignment are required",
        )]);
    };
    let mut required = |node: &Node, names: &[&str], what: &str| -> String {
        let value = text(node, names);
        if value.is_none() {
            errors.push(finding("EPHYTO-MISSING", locate(node), format!("{} is required ({what})", names.join("/"))));
        }
        value.unwrap_or_default()
    };
    let number = required(&doc, &["ID"], "the certificate number");
    let type_code = required(&doc, &["TypeCode"], "851 or 657");
    let status_code = required(&doc, &["StatusCode"], "70 issued or 40 withdrawn");
    let issued = required(&doc, &["IssueDateTime", "DateTimeString"], "the issue date");
    let export = required(&consignment, &["ExportSPSCountry", "ID"], "the exporting country");
    let import = required(&consignment, &["ImportSPSCountry", "ID"], "the importing country");
    let issuer = text(&doc, &["IssuerSPSParty", "Name"]).unwrap_or_default();
    if !type_code.is_empty() && type_code != "851" && type_code != "657" {
        errors.push(finding(
            "EPHYTO-TYPECODE",
            locate(&path(&doc, &["TypeCode"]).unwrap_or(doc.clone())),
            format!("TypeCode {type_code} is neither 851 (phytosanitary) nor 657 (re-export)"),
        ));
    }
    let status = match status_code.as_str() {
        "70" => "issued",
        "40" => "withdrawn",
        "" => "",
        other => {
            errors.push(finding(
                "EPHYTO-STATUS",
                locate(&path(&doc, &["StatusCode"]).unwrap_or(doc.clone())),
                format!("StatusCode {other} is not 70 (issued) or 40 (withdrawn)"),
            ));
            ""
        }
    };
    for (code, what) in [(&export, "ExportSPSCountry"), (&import, "ImportSPSCountry")] {
        if !code.is_empty() && !is_country(code) {
            errors.push(finding(
                "EPHYTO-COUNTRY",
                locate(&path(&consignment, &[what]).unwrap_or(consignment.clone())),
                format!("{what}/ID '{code}' is not an ISO 3166 alpha-2 code"),
            ));
        }
    }
    if !export.is_empty() && export == import {
        errors.push(finding(
            "EPHYTO-COUNTRY",
            locate(&consignment),
            format!("exporting and importing country are both {export}"),
        ));
    }
    for transit in all(&consignment, "TransitSPSCountry") {
        let id = text(&transit, &["ID"]).unwrap_or_default();
        if id == export || id == import {
            errors.push(finding(
                "EPHYTO-COUNTRY",
                locate(&transit),
                format!("transit country {id} is also the exporting or importing country"),
            ));
        }
    }
    if !issued.is_empty() {
        match parse_date(&issued) {
            None => errors.push(finding(
                "EPHYTO-DATE",
                locate(&doc),
                format!("IssueDateTime '{issued}' is not a date-time"),
            )),
            Some(t) if t > time::OffsetDateTime::now_utc() + time::Duration::days(1) => {
                errors.push(finding("EPHYTO-DATE", locate(&doc), format!("IssueDateTime {issued} is in the future")))
            }
            _ => {}
        }
    }
    let lines = crate::wss::xml::descendants_named(&consignment, "IncludedSPSTradeLineItem");
    if lines.is_empty() {
        errors.push(finding(
            "EPHYTO-MISSING",
            locate(&consignment),
            "at least one IncludedSPSTradeLineItem is required",
        ));
    }
    let mut sequence = Vec::new();
    let mut products = Vec::new();
    let mut line_notes = Vec::new();
    for line in &lines {
        match text(line, &["SequenceNumeric"]) {
            None => errors.push(finding("EPHYTO-LINE", locate(line), "a trade line item needs its SequenceNumeric")),
            Some(n) if sequence.contains(&n) => {
                errors.push(finding("EPHYTO-LINE", locate(line), format!("SequenceNumeric {n} is used twice")))
            }
            Some(n) => sequence.push(n),
        }
        match text(line, &["ScientificName"]).or_else(|| text(line, &["Description"])) {
            Some(p) => products.push(p),
            None => errors.push(finding(
                "EPHYTO-LINE",
                locate(line),
                "a trade line item needs a ScientificName or Description",
            )),
        }
        for note in all(line, "AdditionalInformationSPSNote") {
            line_notes.push(text(&note, &["Subject"]).unwrap_or_default());
        }
    }
    if type_code == "657" {
        for subject in ["RPCCO", "RPCRF"] {
            if !line_notes.iter().any(|s| s == subject) {
                errors.push(finding(
                    "EPHYTO-REEXPORT",
                    locate(&doc),
                    format!("a re-export certificate (657) needs the {subject} note on its lines"),
                ));
            }
        }
    }
    let mut replaces = None;
    for note in all(&doc, "IncludedSPSNote") {
        if text(&note, &["Subject"]).as_deref() == Some("ADRPN") {
            let replaced = text(&note, &["Content"]).unwrap_or_default();
            if replaced == number {
                errors.push(finding(
                    "EPHYTO-REPLACEMENT",
                    locate(&note),
                    "a replacement certificate cannot replace itself",
                ));
            }
            replaces = Some(replaced);
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut fields = std::collections::BTreeMap::new();
    fields.insert("issuer".into(), issuer);
    fields.insert("issued_at".into(), issued);
    fields.insert("consignor".into(), text(&consignment, &["ConsignorSPSParty", "Name"]).unwrap_or_default());
    fields.insert("consignee".into(), text(&consignment, &["ConsigneeSPSParty", "Name"]).unwrap_or_default());
    fields.insert("products".into(), products.join("; "));
    if let Some(r) = &replaces {
        fields.insert("replaces".into(), r.clone());
    }
    let status = match (&replaces, status) {
        (Some(r), "issued") => format!("issued (replaces {r})"),
        (_, s) => s.to_owned(),
    };
    Ok(Document {
        kind: "ephyto".into(),
        profile: format!("SPSCertificate:{version}"),
        number,
        doc_type: type_code,
        status,
        origin_country: Some(export),
        destination_country: Some(import),
        fields,
        warnings: Vec::new(),
    })
}

fn parse_date(value: &str) -> Option<time::OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::parse(value, &Rfc3339)
        .or_else(|_| time::OffsetDateTime::parse(&format!("{value}Z"), &Rfc3339))
        .or_else(|_| time::OffsetDateTime::parse(&format!("{value}T00:00:00Z"), &Rfc3339))
        .ok()
}

/// The hub envelope header, which must agree with the certificate it carries.
struct Header {
    from: String,
    to: String,
    kind: String,
    status: String,
    number: String,
}

impl Header {
    fn read(root: &Node) -> Result<Header, Vec<Finding>> {
        let field = |name: &str| {
            children(root).into_iter().find(|c| is(c, HUB, name)).map(|c| c.get_content().trim().to_owned()).ok_or_else(
                || vec![finding("EPHYTO-ENVELOPE", locate(root), format!("the envelope header lacks {name}"))],
            )
        };
        Ok(Header {
            from: field("From")?,
            to: field("To")?,
            kind: field("CertificateType")?,
            status: field("CertificateStatus")?,
            number: field("NPPOCertificateNumber")?,
        })
    }

    fn agrees_with(&self, d: &Document, root: &Node) -> Result<(), Vec<Finding>> {
        let pairs = [
            ("From", &self.from, d.origin_country.clone().unwrap_or_default(), "ExportSPSCountry/ID"),
            ("To", &self.to, d.destination_country.clone().unwrap_or_default(), "ImportSPSCountry/ID"),
            ("CertificateType", &self.kind, d.doc_type.clone(), "TypeCode"),
            ("NPPOCertificateNumber", &self.number, d.number.clone(), "ID"),
        ];
        let mut errors: Vec<Finding> = pairs
            .iter()
            .filter(|(_, h, c, _)| *h != c)
            .map(|(name, h, c, what)| {
                finding(
                    "EPHYTO-HEADER",
                    locate(root),
                    format!("envelope {name} '{h}' disagrees with the certificate's {what} '{c}'"),
                )
            })
            .collect();
        let status_code = match d.status.as_str() {
            s if s.starts_with("issued") => "70",
            "withdrawn" => "40",
            _ => "",
        };
        if self.status != status_code {
            errors.push(finding(
                "EPHYTO-HEADER",
                locate(root),
                format!("envelope CertificateStatus '{}' disagrees with the certificate's StatusCode", self.status),
            ));
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}

/// `HUB.Entities:Envelope`: the header plus `Content`, base64 of the certificate or the XML text.
fn envelope_with_content(root: &Node, context: &Context) -> Result<Document, Vec<Finding>> {
    let header = Header::read(root)?;
    let content = children(root)
        .into_iter()
        .find(|c| is(c, HUB, "Content"))
        .ok_or_else(|| vec![finding("EPHYTO-ENVELOPE", locate(root), "the envelope has no Content")])?;
    let raw = content.get_content();
    let compact: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
    let inner = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .unwrap_or_else(|_| raw.trim().as_bytes().to_vec());
    let document = Ephyto.inspect(&inner, context).map_err(|errors| {
        errors
            .into_iter()
            .map(|f| Finding {
                location: format!(
                    "Content (line {} of the envelope): {}",
                    crate::wss::xml::line_of(&content),
                    f.location
                ),
                ..f
            })
            .collect::<Vec<_>>()
    })?;
    header.agrees_with(&document, root)?;
    Ok(document)
}

/// The hub schema set, embedded in the binary and written to a private folder for each
/// compilation (libxml2 resolves its imports from files), removed right after. Compiled
/// contexts are pooled per process: a validation borrows one and gives it back, and there are
/// at most [`max_contexts`] per schema entry; a validation that finds them all in use waits
/// for one. Not one per thread (a compiled set per blocking thread was much of an access
/// point's memory under load), and not as many as validations ever ran at once either: a
/// context is about 0.8 MiB of heap, and a pool that grew with each new peak of concurrency
/// made the sender's heap in use climb through a 25-minute soak (13.5 to 17.6 MiB), a step
/// each time the load's jitter set a new peak. Validation is CPU work, so more at once than
/// the machine has cores would not finish sooner.
mod schema {
    use super::super::{Finding, finding};
    use crate::wss::xml::Xml;
    use libxml::schemas::{SchemaParserContext, SchemaValidationContext};
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::sync::{Condvar, Mutex};

    pub const CERTIFICATE: &str = "hub_SPSCertificate_17.xsd";
    pub const ENVELOPE: &str = "hub_ephyto.ippc.int.xsd";

    const FILES: [(&str, &[u8]); 7] = [
        ("hub_HUB.Entities.xsd", include_bytes!("../../../../schemas/ephyto/hub_HUB.Entities.xsd")),
        ("hub_QualifiedDataType_21.xsd", include_bytes!("../../../../schemas/ephyto/hub_QualifiedDataType_21.xsd")),
        ("hub_RABIE_21.xsd", include_bytes!("../../../../schemas/ephyto/hub_RABIE_21.xsd")),
        ("hub_SPSAcknowledgement_17.xsd", include_bytes!("../../../../schemas/ephyto/hub_SPSAcknowledgement_17.xsd")),
        ("hub_SPSCertificate_17.xsd", include_bytes!("../../../../schemas/ephyto/hub_SPSCertificate_17.xsd")),
        ("hub_UnqualifiedDataType_21.xsd", include_bytes!("../../../../schemas/ephyto/hub_UnqualifiedDataType_21.xsd")),
        ("hub_ephyto.ippc.int.xsd", include_bytes!("../../../../schemas/ephyto/hub_ephyto.ippc.int.xsd")),
    ];

    /// A private folder holding the schema set for the length of one compilation: libxml2
    /// resolves `xsd:import` against files, and a folder left behind would pile up in the
    /// temporary directory (one per process start, hundreds under a test suite). Created
    /// afresh (0700, a random name) so another local user cannot plant a schema in it.
    struct SchemaFolder(PathBuf);

    impl SchemaFolder {
        fn write() -> Result<Self, String> {
            let name =
                format!("ventanilla-schemas-{}-{}", std::process::id(), hex::encode(crate::wss::cipher::random(8)));
            let dir = std::env::temp_dir().join(name);
            let mut builder = std::fs::DirBuilder::new();
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.create(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let folder = SchemaFolder(dir);
            for (name, bytes) in FILES {
                let path = folder.0.join(name);
                std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            Ok(folder)
        }
    }

    impl Drop for SchemaFolder {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A compiled context, used by one thread at a time.
    struct Compiled(SchemaValidationContext);
    // SAFETY: a libxml2 schema validation context (and the schema it owns) has no thread
    // affinity: it is plain heap data behind raw pointers, with its error handler set on the
    // context itself. The pool hands each one to a single thread at a time (taken out of the
    // mutex-guarded pool, put back after use), so it is never used concurrently.
    unsafe impl Send for Compiled {}

    /// Contexts compiled per schema entry at most: one per core, at least two and at most
    /// eight (6-7 MiB), so the pool reaches its size in the first seconds of load and stays
    /// there.
    fn max_contexts() -> usize {
        static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        *MAX.get_or_init(|| std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8))
    }

    /// Per schema entry: the idle contexts and how many exist (idle or borrowed).
    #[derive(Default)]
    struct Entry {
        idle: Vec<Compiled>,
        compiled: usize,
    }

    static POOL: Mutex<Option<HashMap<&'static str, Entry>>> = Mutex::new(None);
    /// Signalled when a context is given back (or a compilation failed and freed its place).
    static RETURNED: Condvar = Condvar::new();

    /// The pool's record of `entry`, made on first use.
    fn slot<'a>(pool: &'a mut Option<HashMap<&'static str, Entry>>, entry: &'static str) -> &'a mut Entry {
        pool.get_or_insert_with(HashMap::new).entry(entry).or_default()
    }

    /// An idle context of `entry` (`Some`), or the right to compile one (`None`) while fewer
    /// than [`max_contexts`] exist; otherwise waits until one is given back.
    fn take(entry: &'static str) -> Option<Compiled> {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let slot = slot(&mut pool, entry);
            if let Some(compiled) = slot.idle.pop() {
                return Some(compiled);
            }
            if slot.compiled < max_contexts() {
                slot.compiled += 1;
                return None;
            }
            pool = RETURNED.wait(pool).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// A place in the pool taken by [`take`]: given back when dropped, with its context or,
    /// when none was compiled, as room for another. So neither a failed compilation nor a
    /// panic while validating can shrink the pool and leave validations waiting for good.
    struct Lease {
        entry: &'static str,
        compiled: Option<Compiled>,
    }

    impl Drop for Lease {
        fn drop(&mut self) {
            let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
            let slot = slot(&mut pool, self.entry);
            match self.compiled.take() {
                Some(compiled) => slot.idle.push(compiled),
                None => slot.compiled -= 1,
            }
            drop(pool);
            RETURNED.notify_one();
        }
    }

    fn compile(entry: &'static str) -> Result<Compiled, Vec<Finding>> {
        let folder = SchemaFolder::write()
            .map_err(|e| vec![finding("EPHYTO-XSD", "schema", format!("cannot prepare the schema set: {e}"))])?;
        let mut parser = SchemaParserContext::from_file(&folder.0.join(entry).to_string_lossy());
        SchemaValidationContext::from_parser(&mut parser).map(Compiled).map_err(|errors| {
            vec![finding(
                "EPHYTO-XSD",
                "schema",
                format!("the schema set does not compile: {:?}", errors.first().and_then(|e| e.message.clone())),
            )]
        })
    }

    pub fn validate(xml: &Xml, entry: &'static str) -> Result<(), Vec<Finding>> {
        let mut lease = Lease { entry, compiled: take(entry) };
        let compiled = match &mut lease.compiled {
            Some(compiled) => compiled,
            none => none.insert(compile(entry)?),
        };
        compiled.0.validate_document(xml.document()).map_err(|errors| {
            errors
                .into_iter()
                .map(|e| {
                    finding(
                        "EPHYTO-XSD",
                        e.line.map(|l| format!("line {l}")).unwrap_or_else(|| "document".into()),
                        e.message.unwrap_or_default().trim().to_owned(),
                    )
                })
                .collect()
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_schema_folder_is_private_and_removed_after_use() {
            let folder = SchemaFolder::write().unwrap();
            let path = folder.0.clone();
            assert_eq!(std::fs::read_dir(&path).unwrap().count(), FILES.len());
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o700);
            }
            assert!(compile(CERTIFICATE).is_ok());
            drop(folder);
            assert!(!path.exists(), "{} left behind", path.display());
        }

        #[test]
        fn a_panic_while_a_place_is_taken_gives_it_back() {
            // More panics than places: were a place lost with each, the validation after them
            // would wait for good.
            for _ in 0..=max_contexts() {
                let outcome = std::panic::catch_unwind(|| {
                    let _lease = Lease { entry: CERTIFICATE, compiled: take(CERTIFICATE) };
                    panic!("while validating");
                });
                assert!(outcome.is_err());
            }
            let (done, finished) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let document = super::super::testing::certificate("CL", "PE", "CL-2026-POOL-2");
                let _ = done.send(validate(&Xml::parse(document.as_bytes()).unwrap(), CERTIFICATE).is_ok());
            });
            let outcome = finished.recv_timeout(std::time::Duration::from_secs(60));
            assert_eq!(outcome, Ok(true), "the validation after the panics got no context");
        }

        #[test]
        fn contexts_are_reused_across_threads_and_errors_do_not_leak_between_documents() {
            let valid = super::super::testing::certificate("CL", "PE", "CL-2026-POOL-1");
            let broken = valid.replace("<rsm:SPSExchangedDocument>", "<rsm:SPSExchangedDocument><rsm:Unknown/>");
            let check = |text: &str| validate(&Xml::parse(text.as_bytes()).unwrap(), CERTIFICATE);
            assert!(check(&valid).is_ok());
            // More threads than contexts may exist: some wait for one.
            let threads: Vec<_> = (0..max_contexts() + 2)
                .map(|_| {
                    let (valid, broken) = (valid.clone(), broken.clone());
                    std::thread::spawn(move || {
                        for _ in 0..5 {
                            assert!(validate(&Xml::parse(broken.as_bytes()).unwrap(), CERTIFICATE).is_err());
                            assert!(validate(&Xml::parse(valid.as_bytes()).unwrap(), CERTIFICATE).is_ok());
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let (idle, compiled) =
                POOL.lock().unwrap().as_ref().unwrap().get(CERTIFICATE).map_or((0, 0), |e| (e.idle.len(), e.compiled));
            // More threads than the cap at once, yet no more contexts than it. (Other tests may
            // hold some now: only the bounds are certain.)
            assert!((1..=max_contexts()).contains(&compiled), "{compiled} contexts compiled");
            assert!(idle <= compiled, "{idle} idle of {compiled}");
            assert!(check(&valid).is_ok());
        }
    }
}

/// ePhyto documents for tests and the demo (TEST ONLY), from the CC0 sample certificate.
pub mod testing {
    const TEMPLATE: &str = include_str!("../../../../samples/ephyto/own/ephyto_CL-MX_851_issued.xml");

    /// An issued phytosanitary certificate `number` from country `from` to `to`.
    pub fn certificate(from: &str, to: &str, number: &str) -> String {
        let set_country = |text: &str, block: &str, code: &str| -> String {
            let open = format!("<ram:{block}>");
            match text.find(&open) {
                Some(start) => {
                    let id_start = text[start..].find("<ram:ID>").map(|i| start + i + "<ram:ID>".len());
                    let id_end = id_start.and_then(|s| text[s..].find("</ram:ID>").map(|e| s + e));
                    match (id_start, id_end) {
                        (Some(a), Some(b)) => format!("{}{code}{}", &text[..a], &text[b..]),
                        _ => text.to_owned(),
                    }
                }
                None => text.to_owned(),
            }
        };
        let text = set_country(TEMPLATE, "ExportSPSCountry", from);
        let text = set_country(&text, "ImportSPSCountry", to);
        text.replacen("<ram:ID>CL-2025-0001234</ram:ID>", &format!("<ram:ID>{number}</ram:ID>"), 1)
    }

    /// The same certificate in the D13B namespaces (`SPSCertificate:11`) the Pacific Alliance
    /// IOP exchanges, unsigned.
    pub fn certificate_v11(from: &str, to: &str, number: &str) -> String {
        certificate(from, to, number)
            .replace(super::SPS17, super::SPS11)
            .replace(
                "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:21",
                "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:14",
            )
            .replace(
                "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:21",
                "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:15",
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> Vec<u8> {
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../samples/ephyto/own").join(name))
            .unwrap()
    }

    fn check(name: &str) -> Result<Document, Vec<Finding>> {
        Ephyto.inspect(&sample(name), &Context::default())
    }

    #[test]
    fn valid_samples_and_their_metadata() {
        let d = check("ephyto_CL-MX_851_issued.xml").unwrap();
        assert_eq!((d.number.as_str(), d.doc_type.as_str(), d.status.as_str()), ("CL-2025-0001234", "851", "issued"));
        assert_eq!((d.origin_country.as_deref(), d.destination_country.as_deref()), (Some("CL"), Some("MX")));
        assert!(!d.fields["products"].is_empty());
        assert_eq!(check("ephyto_MX-CL_851_withdrawn.xml").unwrap().status, "withdrawn");
        assert_eq!(check("ephyto_CO-PE_657_reexport.xml").unwrap().doc_type, "657");
        assert!(check("ephyto_PE-CO_851_replacement.xml").unwrap().status.starts_with("issued (replaces "));
        for envelope in ["hub_envelope_CL-MX_851_base64.xml", "hub_ephytoenvelope_CL-MX_851.xml"] {
            let d = check(envelope).unwrap_or_else(|e| panic!("{envelope}: {e:?}"));
            assert_eq!(d.number, "CL-2025-0001234", "{envelope}");
        }
    }

    #[test]
    fn negative_samples_fail_with_located_findings() {
        for (name, rule) in [
            ("neg_ephyto_schema_wrong_order.xml", "EPHYTO-XSD"),
            ("neg_ephyto_not_wellformed.xml", "EPHYTO-XML"),
            ("neg_ephyto_missing_import_country.xml", "EPHYTO-MISSING"),
            ("neg_ephyto_bad_typecode.xml", "EPHYTO-TYPECODE"),
            ("neg_hub_ephytoenvelope_header_mismatch.xml", "EPHYTO-HEADER"),
        ] {
            let findings = check(name).unwrap_err();
            assert!(findings.iter().any(|f| f.rule == rule), "{name}: {findings:?}");
            assert!(
                findings.iter().all(|f| f.location.contains("line") || f.location.contains("Content")),
                "{name}: located {findings:?}"
            );
        }
        // The D13B namespace: refused where the link allows only :17, read where :11 is allowed.
        let only17 = Context { allowed_versions: vec!["17".into()] };
        let findings = Ephyto.inspect(&sample("neg_ephyto_legacy_namespace_v11.xml"), &only17).unwrap_err();
        assert_eq!(findings[0].rule, "EPHYTO-VERSION");
        let both = Context { allowed_versions: vec!["17".into(), "11".into()] };
        assert_eq!(
            Ephyto.inspect(&sample("neg_ephyto_legacy_namespace_v11.xml"), &both).unwrap().profile,
            "SPSCertificate:11"
        );
    }

    #[test]
    fn generated_certificates_are_valid() {
        let text = testing::certificate("PE", "CO", "PE-2026-0000001");
        let d = Ephyto.inspect(text.as_bytes(), &Context::default()).unwrap();
        assert_eq!(
            (d.origin_country.as_deref(), d.destination_country.as_deref(), d.number.as_str()),
            (Some("PE"), Some("CO"), "PE-2026-0000001")
        );
    }

    #[test]
    fn hostile_input_is_bounded() {
        let deep = format!(
            "<rsm:SPSCertificate xmlns:rsm=\"{SPS17}\">{}{}</rsm:SPSCertificate>",
            "<a>".repeat(5000),
            "</a>".repeat(5000)
        );
        assert!(Ephyto.inspect(deep.as_bytes(), &Context::default()).is_err());
        let entity = b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'aaaa'>]><x>&a;</x>";
        assert!(Ephyto.inspect(entity, &Context::default()).is_err());
    }
}
