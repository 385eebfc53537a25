//! XML signatures embedded in business documents (not WS-Security): the ALADI certificate of
//! origin's two signatures beside the elements they sign, and the SPS certificate's enveloped
//! signature inside its root (the Pacific Alliance IOP). Same libxml2 c14n and OpenSSL code as
//! the WS-Security layer; the bytes that arrived are parsed once and never re-serialized.
//!
//! SHA-1 is tolerated here, inside documents signed years ago by national CAs, and reported to
//! the caller ([`Embedded::sha1`]) so it can warn or count; WS-Security never accepts it.

use crate::wss::digest::{b64, unb64};
use crate::wss::xml::{Xml, child, compact_text};
use libxml::tree::Node;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use sha2::{Digest, Sha256};

pub const DS: &str = "http://www.w3.org/2000/09/xmldsig#";
pub const C14N: &str = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315";
pub const C14N_COMMENTS: &str = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments";
pub const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
pub const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
pub const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
pub const RSA_SHA1: &str = "http://www.w3.org/2000/09/xmldsig#rsa-sha1";
pub const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
pub const SHA1: &str = "http://www.w3.org/2000/09/xmldsig#sha1";

/// A verified embedded signature.
#[derive(Debug)]
pub struct Embedded {
    /// The certificate from KeyInfo whose key verified the signature (its trust is the
    /// caller's question).
    pub signer: X509,
    /// Which parts used SHA-1: "digest", "signature" (empty for none).
    pub sha1: Vec<&'static str>,
}

impl Embedded {
    pub fn is_legacy(&self) -> bool {
        !self.sha1.is_empty()
    }
}

fn ds(node: &Node, name: &str) -> Option<Node> {
    child(node, DS, name)
}

fn algorithm(node: Option<Node>) -> String {
    node.and_then(|n| n.get_property_no_ns("Algorithm")).unwrap_or_default()
}

/// Canonical form in one of the c14n algorithms a document signature may name; `excluded` is
/// left out (the enveloped-signature transform).
fn canonical(xml: &Xml, node: &Node, method: &str, excluded: Option<&Node>) -> Result<Vec<u8>, String> {
    let (mode, comments) = match method {
        C14N => (0, false),
        C14N_COMMENTS => (0, true),
        EXC_C14N => (1, false),
        other => return Err(format!("unsupported canonicalization '{other}'")),
    };
    match excluded {
        Some(excluded) => xml.c14n_subtree_without(node, excluded, mode, comments),
        None => xml.c14n_subtree_mode(node, mode, comments),
    }
    .map_err(|e| e.to_string())
}

/// Verifies `sig`, an XML signature with exactly one reference, to `#target`: inside the
/// target (an enveloped signature, which must then name the enveloped-signature transform)
/// or outside it. The error says what is wrong in words for an operator.
pub fn verify(xml: &Xml, sig: &Node, target: &str) -> Result<Embedded, String> {
    let mut sha1 = Vec::new();
    let signed_info = ds(sig, "SignedInfo").ok_or("ds:Signature without SignedInfo")?;
    let references: Vec<Node> =
        signed_info.get_child_elements().into_iter().filter(|c| c.get_name() == "Reference").collect();
    let [reference] = references.as_slice() else { return Err("exactly one ds:Reference is expected".into()) };
    let uri = reference.get_property_no_ns("URI").unwrap_or_default();
    if uri != format!("#{target}") {
        return Err(format!("the signature references '{uri}', not #{target}"));
    }
    let targets = xml.elements_with_id(target);
    let [target_node] = targets.as_slice() else {
        return Err(format!("#{target} resolves to {} elements", targets.len()));
    };
    let mut enveloped = false;
    let mut ancestor = sig.get_parent();
    while let Some(a) = ancestor {
        if a.node_ptr() == target_node.node_ptr() {
            enveloped = true;
            break;
        }
        ancestor = a.get_parent();
    }
    let transforms: Vec<String> = ds(reference, "Transforms")
        .map(|t| {
            t.get_child_elements().into_iter().map(|x| x.get_property_no_ns("Algorithm").unwrap_or_default()).collect()
        })
        .unwrap_or_default();
    if enveloped && !transforms.iter().any(|t| t == ENVELOPED) {
        return Err("the signature lies inside the element it signs but names no enveloped-signature transform".into());
    }
    let c14n = match transforms.iter().filter(|t| *t != ENVELOPED).map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => C14N,
        [one] => *one,
        other => return Err(format!("unsupported transforms {other:?}")),
    };
    let bytes = canonical(xml, target_node, c14n, enveloped.then_some(sig))?;
    let digest = match algorithm(ds(reference, "DigestMethod")).as_str() {
        SHA256 => Sha256::digest(&bytes).to_vec(),
        SHA1 => {
            sha1.push("digest");
            openssl::sha::sha1(&bytes).to_vec()
        }
        other => return Err(format!("unsupported DigestMethod '{other}'")),
    };
    let expected = ds(reference, "DigestValue").and_then(|d| unb64(&d.get_content())).ok_or("no DigestValue")?;
    if digest != expected {
        return Err(format!("the digest of #{target} does not match: the document was altered after signing"));
    }
    let signed_info_bytes = canonical(xml, &signed_info, &algorithm(ds(&signed_info, "CanonicalizationMethod")), None)?;
    let signer = ds(sig, "KeyInfo")
        .and_then(|k| ds(&k, "X509Data"))
        .and_then(|d| ds(&d, "X509Certificate"))
        .and_then(|c| unb64(&compact_text(&c)))
        .and_then(|der| X509::from_der(&der).ok())
        .ok_or("KeyInfo carries no X509Certificate")?;
    let value = ds(sig, "SignatureValue").and_then(|v| unb64(&v.get_content())).ok_or("no SignatureValue")?;
    let md = match algorithm(ds(&signed_info, "SignatureMethod")).as_str() {
        RSA_SHA256 => openssl::hash::MessageDigest::sha256(),
        RSA_SHA1 => {
            sha1.push("signature");
            openssl::hash::MessageDigest::sha1()
        }
        other => return Err(format!("unsupported SignatureMethod '{other}'")),
    };
    let key = signer.public_key().map_err(|e| e.to_string())?;
    let ok = openssl::sign::Verifier::new(md, &key).and_then(|mut v| {
        v.update(&signed_info_bytes)?;
        v.verify(&value)
    });
    if !ok.unwrap_or(false) {
        return Err(format!("the signature over #{target} does not verify with its certificate"));
    }
    Ok(Embedded { signer, sha1 })
}

/// The algorithms of a signature this access point makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithms {
    /// RSA-SHA256, SHA-256 digest, exclusive c14n: the default.
    RsaSha256,
    /// RSA-SHA1, SHA-1 digest, inclusive c14n 1.0: what the 2019 IOP sample carries, only for
    /// a partner that cannot check anything newer (the P-Mode says so).
    LegacyRsaSha1,
}

/// Signs the element `#target` of `text` with an enveloped signature, inserted as the last
/// child of the element whose end tag starts at byte `insert_at` (the target's own end tag
/// for an enveloped signature). The signature is computed over the document as it will be
/// sent: the draft with an empty SignatureValue is parsed and SignedInfo canonicalized in
/// place, so namespaces in scope are the receiver's.
pub fn sign_enveloped(
    text: &str,
    target: &str,
    insert_at: usize,
    key: &PKey<Private>,
    cert: &X509,
    algorithms: Algorithms,
) -> Result<String, String> {
    let (c14n, digest_method, signature_method, md) = match algorithms {
        Algorithms::RsaSha256 => (EXC_C14N, SHA256, RSA_SHA256, openssl::hash::MessageDigest::sha256()),
        Algorithms::LegacyRsaSha1 => (C14N, SHA1, RSA_SHA1, openssl::hash::MessageDigest::sha1()),
    };
    let parsed = Xml::parse(text.as_bytes()).map_err(|e| e.to_string())?;
    let targets = parsed.elements_with_id(target);
    let [node] = targets.as_slice() else { return Err(format!("#{target} resolves to {} elements", targets.len())) };
    let bytes = canonical(&parsed, node, c14n, None)?;
    let digest = match algorithms {
        Algorithms::RsaSha256 => Sha256::digest(&bytes).to_vec(),
        Algorithms::LegacyRsaSha1 => openssl::sha::sha1(&bytes).to_vec(),
    };
    let signed_info = format!(
        r##"<ds:SignedInfo><ds:CanonicalizationMethod Algorithm="{c14n}"/><ds:SignatureMethod Algorithm="{signature_method}"/><ds:Reference URI="#{target}"><ds:Transforms><ds:Transform Algorithm="{ENVELOPED}"/><ds:Transform Algorithm="{c14n}"/></ds:Transforms><ds:DigestMethod Algorithm="{digest_method}"/><ds:DigestValue>{}</ds:DigestValue></ds:Reference></ds:SignedInfo>"##,
        b64(&digest)
    );
    let subject = crate::pki::trust::subject_of(cert);
    let cert_b64 = b64(&cert.to_der().map_err(|e| e.to_string())?);
    let draft = format!(
        r#"{}<ds:Signature xmlns:ds="{DS}">{signed_info}<ds:SignatureValue></ds:SignatureValue><ds:KeyInfo><ds:X509Data><ds:X509SubjectName>{}</ds:X509SubjectName><ds:X509Certificate>{cert_b64}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></ds:Signature>{}"#,
        text.get(..insert_at).ok_or("insertion point outside the document")?,
        crate::ebms::tree::escape(&subject),
        &text[insert_at..]
    );
    let parsed = Xml::parse(draft.as_bytes()).map_err(|e| e.to_string())?;
    let root = parsed.root().ok_or("no root element")?;
    let sig = find_signatures(&root).into_iter().next().ok_or("the signature was not inserted")?;
    let info = ds(&sig, "SignedInfo").ok_or("no SignedInfo")?;
    let info_bytes = canonical(&parsed, &info, c14n, None)?;
    let mut signer = openssl::sign::Signer::new(md, key).map_err(|e| e.to_string())?;
    signer.update(&info_bytes).map_err(|e| e.to_string())?;
    let value = signer.sign_to_vec().map_err(|e| e.to_string())?;
    Ok(draft.replacen(
        "<ds:SignatureValue></ds:SignatureValue>",
        &format!("<ds:SignatureValue>{}</ds:SignatureValue>", b64(&value)),
        1,
    ))
}

/// Every ds:Signature element under `node` (document order).
pub fn find_signatures(node: &Node) -> Vec<Node> {
    let mut found = Vec::new();
    collect(node, &mut found);
    found
}

fn collect(node: &Node, found: &mut Vec<Node>) {
    for c in node.get_child_elements() {
        if crate::wss::xml::is(&c, DS, "Signature") {
            found.push(c);
        } else {
            collect(&c, found);
        }
    }
}
