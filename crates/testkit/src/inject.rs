//! The named ways a conformance case makes the bytes it posts: each starts from a valid
//! message from CL and changes one thing. Unsigned ones go to an AP on the test profile
//! `none`; protected ones to an AP on the shipped eDelivery links.

use super::wire::*;
use crate::ebms::{Property, write};
use crate::pmode::model::TokenReference;
use crate::wss::ns as wss_ns;
use crate::wss::sign::sign_envelope;
use std::path::Path;

/// A message ready to post, and what the receiver must deliver if it accepts it.
pub struct Injected {
    pub message_id: String,
    pub content_type: String,
    pub body: Vec<u8>,
    /// Who receives it: `pe` (2.0 and the test profile) or `mx` (1.15).
    pub receiver: &'static str,
}

type Made = Result<Injected, Box<dyn std::error::Error + Send + Sync>>;

/// A valid ePhyto from `from` to `to` (country codes) with a fresh certificate number.
pub fn ephyto(from: &str, to: &str) -> Vec<u8> {
    let number = format!("{from}-2026-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    crate::payload::ephyto::testing::certificate(from, to, &number).into_bytes()
}

fn fresh_id(name: &str) -> String {
    format!("{name}-{}@conformance.ventanilla", uuid::Uuid::new_v4().simple())
}

fn unsigned(message_id: String, envelope: &str, parts: &[(&str, &[u8])]) -> Made {
    Ok(Injected {
        message_id,
        content_type: multipart_content_type(),
        body: multipart(envelope, parts),
        receiver: "pe",
    })
}

fn phase4_sample(repo: &Path, name: &str) -> Made {
    let path = repo.join("conformance/samples/phase4/phase4-test/src/test/resources/testfiles").join(name);
    let body = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Injected { message_id: String::new(), content_type: "application/soap+xml".into(), body, receiver: "pe" })
}

fn compressed(um: &mut crate::ebms::UserMessage, mime_type: bool) {
    if !mime_type {
        um.parts[0].properties.clear();
    }
    um.parts[0].properties.push(Property {
        name: "CompressionType".into(),
        kind: None,
        value: "application/gzip".into(),
    });
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let _ = e.write_all(bytes);
    e.finish().unwrap_or_default()
}

/// Makes the bytes of `mutation` (unsigned, for the AP on the test profile).
pub fn unsigned_message(mutation: &str, repo: &Path) -> Made {
    let id = fresh_id(mutation);
    let mut um = user_message(&id);
    let doc = ephyto("CL", "PE");
    let good = |um: &crate::ebms::UserMessage| write::user_message_envelope(um);
    let with_doc = |envelope: &str| unsigned(id.clone(), envelope, &[("doc@test", &doc)]);
    match mutation {
        "valid" => with_doc(&good(&um)),
        "no-agreement-pmode" => {
            um.agreement.as_mut().ok_or("template has an AgreementRef")?.pmode = None;
            with_doc(&good(&um))
        }
        "no-start-param" => {
            let mut m = with_doc(&good(&um))?;
            m.content_type = m.content_type.replace(r#"; start="<root@test>""#, "");
            Ok(m)
        }
        "bare-content-id-base64" => {
            use base64::Engine;
            let encoded = base64::engine::general_purpose::STANDARD.encode(&doc);
            let mut body = multipart(&good(&um), &[]);
            let end = format!("\r\n--{BOUNDARY}--\r\n");
            body.truncate(body.len() - end.len());
            body.extend(
                format!("\r\n--{BOUNDARY}\r\nContent-Type: application/xml\r\nContent-Transfer-Encoding: base64\r\nContent-ID: doc@test\r\n\r\n{encoded}{end}")
                    .bytes(),
            );
            Ok(Injected { message_id: id, content_type: multipart_content_type(), body, receiver: "pe" })
        }
        "no-messaging" => {
            let envelope = good(&um);
            let start = envelope.find("<eb:Messaging").ok_or("template has eb:Messaging")?;
            let end = envelope.find("</eb:Messaging>").ok_or("template has eb:Messaging")? + "</eb:Messaging>".len();
            with_doc(&format!("{}{}", &envelope[..start], &envelope[end..]))
        }
        "two-user-messages" => phase4_sample(repo, "TwoUserMessages.xml"),
        "empty-party-id" => phase4_sample(repo, "UserMessageNoPartyID.xml"),
        "missing-to" => phase4_sample(repo, "NoResponder.xml"),
        "untyped-non-uri-party-id" => {
            um.from.ids[0].kind = None;
            with_doc(&good(&um))
        }
        "cid-without-part" => unsigned(id, &good(&um), &[("other@test", &doc)]),
        "unreferenced-part" => unsigned(id, &good(&um), &[("doc@test", &doc), ("extra@test", b"not a payload")]),
        "external-href" => {
            um.parts[0].href = Some("https://example.org/payload.xml".into());
            with_doc(&good(&um))
        }
        "must-understand-header" => with_doc(
            &good(&um).replace("<S12:Header>", "<S12:Header><x:Custom xmlns:x=\"urn:x\" S12:mustUnderstand=\"true\"/>"),
        ),
        "must-understand-1" => {
            let envelope = good(&um);
            let changed = envelope.replacen("S12:mustUnderstand=\"true\"", "S12:mustUnderstand=\"1\"", 1);
            if changed == envelope {
                return Err("template eb:Messaging has mustUnderstand=\"true\"".into());
            }
            with_doc(&changed)
        }
        "soap11" => with_doc(
            &good(&um).replace("http://www.w3.org/2003/05/soap-envelope", "http://schemas.xmlsoap.org/soap/envelope/"),
        ),
        "utf8-bom" => with_doc(&format!("\u{feff}{}", good(&um))),
        "root-text-xml" => {
            let mut m = with_doc(&good(&um))?;
            m.content_type = m.content_type.replace("application/soap+xml", "text/xml");
            Ok(m)
        }
        "malformed-boundary" => {
            let mut m = with_doc(&good(&um))?;
            m.content_type = m.content_type.replace(BOUNDARY, "no-such-boundary");
            Ok(m)
        }
        "timestamp-offset" => {
            // Now, written with a +02:00 offset.
            let now = time::OffsetDateTime::now_utc().to_offset(time::UtcOffset::from_hms(2, 0, 0)?);
            um.info.timestamp = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.000+02:00",
                now.year(),
                u8::from(now.month()),
                now.day(),
                now.hour(),
                now.minute(),
                now.second()
            );
            with_doc(&good(&um))
        }
        "timestamp-no-zone" => {
            // Now, without a zone (read as UTC).
            um.info.timestamp =
                crate::util::format_timestamp(time::OffsetDateTime::now_utc()).trim_end_matches('Z').to_owned();
            with_doc(&good(&um))
        }
        "unknown-from-party" => {
            um.from.ids[0].value = "AR-VUCE".into();
            with_doc(&good(&um))
        }
        "unknown-service" => {
            um.service.value = "urn:pacific-alliance:as4:service:unknown".into();
            with_doc(&good(&um))
        }
        "unknown-action" => {
            um.action = "Invoice".into();
            with_doc(&good(&um))
        }
        "roles-swapped" => {
            std::mem::swap(&mut um.from.role, &mut um.to.role);
            with_doc(&good(&um))
        }
        "other-agreement" => {
            um.agreement.as_mut().ok_or("template has an AgreementRef")?.value =
                "urn:pacific-alliance:as4:agreement:cl-mx".into();
            with_doc(&good(&um))
        }
        "pmode-of-other-link" => {
            um.agreement.as_mut().ok_or("template has an AgreementRef")?.pmode = Some("cl-mx".into());
            with_doc(&good(&um))
        }
        "pull-default-mpc" => {
            let info = crate::ebms::MessageInfo {
                timestamp: crate::util::format_timestamp(time::OffsetDateTime::now_utc()),
                message_id: id.clone(),
                ref_to_message_id: None,
            };
            let envelope = write::pull_request_builder(&info, crate::ebms::ns::DEFAULT_MPC).build("");
            Ok(Injected {
                message_id: id,
                content_type: "application/soap+xml; charset=UTF-8".into(),
                body: envelope.into_bytes(),
                receiver: "pe",
            })
        }
        "ping" => {
            um.service.value = crate::ebms::ns::TEST_SERVICE.into();
            um.action = crate::ebms::ns::TEST_ACTION.into();
            um.parts.clear();
            unsigned(id, &good(&um), &[])
        }
        "invalid-ephyto" => unsigned(id, &good(&um), &[("doc@test", b"<NotAnSPSCertificate/>")]),
        "corrupt-gzip" => {
            compressed(&mut um, true);
            unsigned(id, &good(&um), &[("doc@test", b"\x1f\x8b\x08\x00 not gzip at all")])
        }
        "compressed-without-mime-type" => {
            compressed(&mut um, false);
            unsigned(id, &good(&um), &[("doc@test", &gzip(&doc))])
        }
        "gzip-bomb" => {
            compressed(&mut um, true);
            unsigned(id, &good(&um), &[("doc@test", &gzip(&vec![b'0'; 64 << 20]))])
        }
        "compression-type-zip" => {
            compressed(&mut um, true);
            um.parts[0].properties.last_mut().ok_or("CompressionType was just added")?.value = "application/zip".into();
            unsigned(id, &good(&um), &[("doc@test", &gzip(&doc))])
        }
        "compressed-valid" => {
            compressed(&mut um, true);
            unsigned(id, &good(&um), &[("doc@test", &gzip(&doc))])
        }
        other => Err(format!("unknown mutation {other:?}").into()),
    }
}

/// Makes the bytes of a protected `mutation` on the `profile` link (2.0: CL → PE, 1.15:
/// CL → MX), with the demo PKI in `certs`.
pub fn protected(mutation: &str, profile: &str, certs: &Path) -> Made {
    let id = fresh_id(mutation);
    if let Some(signer) = mutation.strip_prefix("pull-request-by-") {
        return pull_request(&id, signer, certs);
    }
    let mut um = user_message(&id);
    let (to, sign, enc, receiver) = match profile {
        "edelivery-2.0" => ("PE", "sign-ed25519", "enc-x25519", "pe"),
        "edelivery-1.15" => ("MX", "sign-rsa", "enc-rsa", "mx"),
        other => return Err(format!("no protected link for profile {other:?}").into()),
    };
    if receiver == "mx" {
        um.to.ids[0].value = "MX-VUCEM".into();
        um.agreement.as_mut().ok_or("template has an AgreementRef")?.value =
            "urn:pacific-alliance:as4:agreement:cl-mx".into();
    }
    let origin = Origin {
        um,
        document: ephyto("CL", to),
        signer: credential(certs, &format!("cl-{sign}"))?,
        recipient: certs.join(format!("{receiver}-{enc}.pem")),
        receiver,
        demo: Some((certs, sign)),
    };
    protected_from(mutation, origin)
}

/// What a protected message is made from: a link of the demo PKI, or a real partner's link
/// (`conformance run --peer URL`).
pub struct Origin<'a> {
    /// A valid user message for the link; `conv-test` as its ConversationId.
    pub um: crate::ebms::UserMessage,
    pub document: Vec<u8>,
    pub signer: crate::wss::sign::Credential,
    /// The receiver's encryption certificate (PEM).
    pub recipient: std::path::PathBuf,
    pub receiver: &'static str,
    /// The demo PKI and the signing key suffix, for the mutations that sign with another
    /// party's key (not possible against a real partner).
    pub demo: Option<(&'a Path, &'a str)>,
}

/// `mutation` applied to a message from `origin`.
pub fn protected_from(mutation: &str, origin: Origin<'_>) -> Made {
    let Origin { mut um, document: doc, signer, recipient, receiver, demo } = origin;
    let id = um.info.message_id.clone();
    let demo_only = || format!("mutation {mutation:?} needs the demo PKI");
    let zipped = gzip(&doc);
    let mut protection = Protection::edelivery(&signer, &recipient);
    let other_signer;
    let rsa_signer;
    let rsa_recipient = demo.map(|(certs, _)| certs.join(format!("{receiver}-enc-rsa.pem")));
    let mut flip_last_cipher_byte = false;
    let mut flip_key_char = false;
    let mut drop_messaging_reference = false;
    let mut change_after_signing: Option<(&str, &str)> = None;
    // (after this marker, replace this, by that): algorithm and key changes in the header.
    let mut rewrite: Vec<(&str, &str, String)> = Vec::new();
    match mutation {
        "valid" => {}
        "rsa-sha1-signature" => rewrite.push(("<ds:SignedInfo>", wss_ns::RSA_SHA256, refused::RSA_SHA1.into())),
        "bogus-signature-method" => {
            rewrite.push(("<ds:SignedInfo>", wss_ns::RSA_SHA256, "urn:bogus:signature".into()));
        }
        "bogus-digest-method" => rewrite.push(("<ds:SignedInfo>", wss_ns::SHA256, "urn:bogus:digest".into())),
        "aes128-cbc" => rewrite.push(("<xenc:EncryptedData", wss_ns::AES128_GCM, refused::AES128_CBC.into())),
        "rsa-1_5" => rewrite.push(("<xenc:EncryptedKey", wss_ns::RSA_OAEP, refused::RSA_1_5.into())),
        "encrypted-key-flipped" => flip_key_char = true,
        "messaging-not-signed" => drop_messaging_reference = true,
        "low-order-x25519" => rewrite.push((
            "<xenc:OriginatorKeyInfo>",
            "<dsig11:DEREncodedKeyValue>",
            format!("<dsig11:DEREncodedKeyValue>{X25519_ZERO_POINT}</dsig11:DEREncodedKeyValue><!--"),
        )),
        "signed-then-compressed" => {
            compressed(&mut um, true);
            protection.sent_instead = Some(&zipped);
        }
        "encrypted-then-compressed" => {
            compressed(&mut um, true);
            protection.compress_ciphertext = true;
        }
        "ski" => protection.token = TokenReference::Ski,
        "issuer-serial" => protection.token = TokenReference::IssuerSerial,
        "ciphertext-flipped" => flip_last_cipher_byte = true,
        "header-changed-after-signing" => change_after_signing = Some(("conv-test", "conv-TEST")),
        "unsigned" => {
            protection.signer = None;
            protection.recipient = None;
        }
        "not-encrypted" => protection.recipient = None,
        "part-not-signed" => protection.unsigned_part = true,
        "signer-of-other-party" => {
            let (certs, sign) = demo.ok_or_else(demo_only)?;
            other_signer = credential(certs, &format!("co-{sign}"))?;
            protection.signer = Some(&other_signer);
        }
        "rsa-on-2.0-link" => {
            let (certs, _) = demo.ok_or_else(demo_only)?;
            rsa_signer = credential(certs, "cl-sign-rsa")?;
            protection.signer = Some(&rsa_signer);
            protection.recipient = rsa_recipient.as_deref();
        }
        other => return Err(format!("unknown mutation {other:?}").into()),
    }
    // Signed as it should be: the compressed bytes when the message says it is compressed.
    let signed = if protection.compress_ciphertext { &zipped } else { &doc };
    let mut body = protected_message(&um, signed, &protection)?;
    if flip_last_cipher_byte {
        let end = format!("\r\n--{BOUNDARY}--\r\n").len();
        let at = body.len().checked_sub(end + 20).ok_or("message too short")?;
        body[at] ^= 0x01;
    }
    if let Some((from, to)) = change_after_signing {
        // The same length, so the MIME framing stays intact; only the signed header changes.
        debug_assert_eq!(from.len(), to.len());
        let at = body
            .windows(from.len())
            .position(|w| w == from.as_bytes())
            .ok_or_else(|| format!("{from:?} not in the signed message"))?;
        body[at..at + to.len()].copy_from_slice(to.as_bytes());
    }
    if drop_messaging_reference {
        let (messaging_id, _) = write::element_ids(&id);
        let start = format!("<ds:Reference URI=\"#{messaging_id}\"");
        let text = String::from_utf8_lossy(&body).into_owned();
        let from = text.find(&start).ok_or("no reference to eb:Messaging")?;
        let to = text[from..].find("</ds:Reference>").ok_or("unterminated ds:Reference")? + from;
        body = replace_after(&body, &start, &text[from..to + "</ds:Reference>".len()], "").ok_or("reference moved")?;
    }
    if flip_key_char {
        // One base64 character of the wrapped key: still valid base64, no longer the key.
        let marker = b"<xenc:EncryptedKey";
        let start = body.windows(marker.len()).position(|w| w == marker).ok_or("no EncryptedKey")?;
        let value = b"<xenc:CipherValue>";
        let at = start
            + body[start..].windows(value.len()).position(|w| w == value).ok_or("no EncryptedKey CipherValue")?
            + value.len()
            + 4;
        body[at] = if body[at] == b'A' { b'B' } else { b'A' };
    }
    for (after, from, to) in rewrite {
        body = replace_after(&body, after, from, &to).ok_or_else(|| format!("{from:?} after {after:?} not found"))?;
        if to.ends_with("<!--") {
            // The replaced element's old content becomes a comment up to its end tag.
            let end = "</dsig11:DEREncodedKeyValue>-->";
            body = replace_after(&body, "<!--", "</dsig11:DEREncodedKeyValue>", "-->")
                .ok_or_else(|| format!("no {end:?}"))?;
        }
    }
    Ok(Injected { message_id: id, content_type: multipart_content_type(), body, receiver })
}

/// The MPC of the pull variant of the CL–PE link (see conformance/cases/081.toml).
pub const PULL_MPC: &str = "urn:pacific-alliance:mpc:cl-to-pe";

/// A PullRequest for [`PULL_MPC`] signed (Ed25519, 2.0) by `signer` (a country code), sent
/// to CL, which holds the channel.
fn pull_request(id: &str, signer: &str, certs: &Path) -> Made {
    let credential = credential(certs, &format!("{signer}-sign-ed25519"))?;
    let info = crate::ebms::MessageInfo {
        timestamp: crate::util::format_timestamp(time::OffsetDateTime::now_utc()),
        message_id: id.to_owned(),
        ref_to_message_id: None,
    };
    let envelope =
        sign_envelope(&write::pull_request_builder(&info, PULL_MPC), &credential, TokenReference::Bst, &[], "")?;
    Ok(Injected {
        message_id: id.to_owned(),
        content_type: "application/soap+xml; charset=UTF-8".into(),
        body: envelope.into_bytes(),
        receiver: "cl",
    })
}

/// An X25519 SubjectPublicKeyInfo for the all-zero (low order) point: any shared secret
/// with it is zero (RFC 7748 §6.1).
const X25519_ZERO_POINT: &str = "MCowBQYDK2VuAyEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// Algorithm URIs the mutations swap in that the product never uses.
mod refused {
    pub const RSA_SHA1: &str = "http://www.w3.org/2000/09/xmldsig#rsa-sha1";
    pub const AES128_CBC: &str = "http://www.w3.org/2001/04/xmlenc#aes128-cbc";
    pub const RSA_1_5: &str = "http://www.w3.org/2001/04/xmlenc#rsa-1_5";
}

/// `body` with the first `from` after the first `after` replaced by `to` (MIME parts are
/// delimited by boundaries, so lengths may change).
fn replace_after(body: &[u8], after: &str, from: &str, to: &str) -> Option<Vec<u8>> {
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let start = find(body, after.as_bytes())?;
    let at = start + find(&body[start..], from.as_bytes())?;
    let mut out = Vec::with_capacity(body.len() + to.len());
    out.extend_from_slice(&body[..at]);
    out.extend_from_slice(to.as_bytes());
    out.extend_from_slice(&body[at + from.len()..]);
    Some(out)
}
