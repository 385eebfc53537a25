//! Round trips and attacks on signing and verification.

use super::keyinfo::KeyReference;
use super::ns;
use super::sign::{Credential, SignedPart, sign_envelope};
use super::verify::{PartToVerify, verify_envelope};
use super::xml::Xml;
use crate::ebms::write::user_message_builder;
use crate::ebms::{EbmsCode, EbmsError};
use crate::pmode::model::TokenReference;
use openssl::pkey::PKey;
use openssl::x509::X509;
use ventanilla_testkit::demo_pki::{Authority, Usage};

pub(crate) fn credential(ca: &Authority, ed25519: bool) -> Credential {
    let key = if ed25519 {
        PKey::generate_ed25519().unwrap()
    } else {
        PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap()
    };
    let cert = ca.issue("signer", &key, Usage::Signing, 30).unwrap();
    Credential { key, cert }
}

fn resolver(cert: X509) -> impl Fn(&KeyReference) -> Result<X509, EbmsError> {
    move |r| {
        if r.matches(&cert) {
            Ok(cert.clone())
        } else {
            Err(EbmsError::new(EbmsCode::FailedAuthentication, "unknown signer"))
        }
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    xml_part: std::path::PathBuf,
    bin_part: std::path::PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let xml_part = dir.path().join("doc.xml");
    let bin_part = dir.path().join("doc.bin");
    std::fs::write(&xml_part, "<?xml version=\"1.0\"?>\n<cert xmlns=\"urn:x\" b='1' a='2'>Año é</cert>").unwrap();
    std::fs::write(&bin_part, (0..5000u32).map(|i| (i % 256) as u8).collect::<Vec<_>>()).unwrap();
    Fixture { _dir: dir, xml_part, bin_part }
}

fn sign(f: &Fixture, cred: &Credential, token: TokenReference) -> String {
    let um = crate::ebms::write::tests_support::sample();
    let parts = [
        SignedPart {
            content_id: "part1@ap.cl.example",
            content_type: "application/xml",
            content: (&f.xml_part).into(),
        },
        SignedPart {
            content_id: "part2@ap.cl.example",
            content_type: "application/octet-stream",
            content: (&f.bin_part).into(),
        },
    ];
    sign_envelope(&user_message_builder(&um), cred, token, &parts, "").unwrap()
}

fn verify(
    f: &Fixture,
    envelope: &str,
    cert: &X509,
    method: &str,
) -> Result<super::verify::VerifiedSignature, EbmsError> {
    let xml = Xml::parse(envelope.as_bytes()).unwrap();
    verify_envelope(&xml, &fixture_parts(f), method, &resolver(cert.clone()))
}

/// The fixture's two attachments as the verifier reads them.
fn fixture_parts(f: &Fixture) -> Vec<PartToVerify<'_>> {
    vec![
        PartToVerify {
            content_id: "part1@ap.cl.example",
            content_type: "application/xml",
            content: (&f.xml_part).into(),
        },
        PartToVerify {
            content_id: "part2@ap.cl.example",
            content_type: "application/octet-stream",
            content: (&f.bin_part).into(),
        },
    ]
}

#[test]
fn rsa_and_ed25519_round_trip_with_every_token_reference() {
    let ca = Authority::new("test CA").unwrap();
    let f = fixture();
    for (ed, method) in [(false, ns::RSA_SHA256), (true, ns::ED25519)] {
        let cred = credential(&ca, ed);
        for token in [TokenReference::Bst, TokenReference::Ski, TokenReference::IssuerSerial] {
            let env = sign(&f, &cred, token);
            let verified = verify(&f, &env, &cred.cert, method).unwrap_or_else(|e| panic!("{token:?} {method}: {e}"));
            assert_eq!(verified.references.len(), 4);
            assert!(verified.references[0].uri.starts_with("#_msg-"));
        }
    }
}

#[test]
fn the_references_read_back_from_a_signed_envelope_are_the_ones_the_receiver_verifies() {
    let ca = Authority::new("test CA").unwrap();
    let f = fixture();
    let cred = credential(&ca, true);
    let env = sign(&f, &cred, TokenReference::Bst);
    let verified = verify(&f, &env, &cred.cert, ns::ED25519).unwrap();
    let read = super::receipt::signed_references(env.as_bytes()).unwrap();
    let expected: Vec<(String, String)> =
        verified.references.iter().map(|r| (r.uri.clone(), r.digest_value.clone())).collect();
    assert_eq!(read, expected);
    // Unsigned: nothing to acknowledge; not XML: an error, never an empty (vacuous) list.
    assert!(
        super::receipt::signed_references(b"<S:Envelope xmlns:S='http://www.w3.org/2003/05/soap-envelope'/>")
            .unwrap()
            .is_empty()
    );
    assert!(super::receipt::signed_references(b"<a><b></a>").is_err());
    assert!(super::receipt::signed_references(b"<a>").is_err(), "truncated");
    assert!(super::receipt::signed_references(b"<a/><b/>").is_err(), "two roots");
}

#[test]
fn signed_references_come_from_the_ultimate_receivers_security_header_only() {
    let (s, w, d) = (ns::SOAP12, ns::WSSE, ns::DS);
    let signature = |uri: &str, digest: &str| {
        format!(
            r##"<ds:Signature><ds:SignedInfo><ds:Reference URI="{uri}"><ds:DigestValue>{digest}</ds:DigestValue></ds:Reference></ds:SignedInfo></ds:Signature>"##
        )
    };
    let ours = r##"<ds:Signature><ds:SignedInfo><ds:Reference URI="cid:a&amp;b"><ds:Transforms/><ds:DigestValue> QUJD
 REVG </ds:DigestValue></ds:Reference><ds:Reference URI="#m"><ds:DigestValue>R0hJ</ds:DigestValue><ds:DigestValue>extra</ds:DigestValue></ds:Reference></ds:SignedInfo><ds:SignedInfo><ds:Reference URI="#second-signedinfo"/></ds:SignedInfo></ds:Signature>"##;
    let envelope = format!(
        r##"<S:Envelope xmlns:S="{s}" xmlns:wsse="{w}" xmlns:ds="{d}"><S:Header><wsse:Security S:role="urn:other">{}</wsse:Security><wsse:Security><x:Signature xmlns:x="urn:not-ds"><ds:SignedInfo/></x:Signature>{}{}</wsse:Security><wsse:Security>{}</wsse:Security></S:Header><S:Body><ds:SignedInfo><ds:Reference URI="#body"/></ds:SignedInfo></S:Body></S:Envelope>"##,
        signature("#other", "AAAA"),
        ours,
        signature("#second-signature", "BBBB"),
        signature("#third-security", "CCCC"),
    );
    let read = super::receipt::signed_references(envelope.as_bytes()).unwrap();
    assert_eq!(
        read,
        [("cid:a&b".to_owned(), "QUJDREVG".to_owned()), ("#m".to_owned(), "R0hJ".to_owned())],
        "the first Security for the ultimate receiver, its first ds:Signature and ds:SignedInfo, each reference's first digest"
    );
}

#[test]
fn a_content_id_that_needs_escaping_signs_and_verifies() {
    // The SignedInfo is written in canonical form (sign.rs); the debug build checks it against
    // libxml2's canonicalization, which escapes these characters in attributes.
    let ca = Authority::new("test CA").unwrap();
    let f = fixture();
    let cred = credential(&ca, true);
    let cid = "p&\"<\t>@x";
    let um = crate::ebms::write::tests_support::sample();
    let parts =
        [SignedPart { content_id: cid, content_type: "application/octet-stream", content: (&f.bin_part).into() }];
    let env = sign_envelope(&user_message_builder(&um), &cred, TokenReference::Bst, &parts, "").unwrap();
    let xml = Xml::parse(env.as_bytes()).unwrap();
    let parts =
        [PartToVerify { content_id: cid, content_type: "application/octet-stream", content: (&f.bin_part).into() }];
    let verified = verify_envelope(&xml, &parts, ns::ED25519, &resolver(cred.cert.clone())).unwrap();
    assert_eq!(verified.references.last().unwrap().uri, format!("cid:{cid}"));
}

#[test]
fn tampering_is_detected() {
    let ca = Authority::new("test CA").unwrap();
    let f = fixture();
    let cred = credential(&ca, false);
    let env = sign(&f, &cred, TokenReference::Bst);
    let code = |e: Result<_, EbmsError>| e.map(|_| ()).unwrap_err().code;

    // A changed header value: digest mismatch.
    let changed = env.replace("conv-1", "conv-2");
    assert_eq!(code(verify(&f, &changed, &cred.cert, ns::RSA_SHA256)), EbmsCode::FailedAuthentication);
    // A changed attachment.
    std::fs::write(&f.bin_part, b"other bytes").unwrap();
    assert_eq!(code(verify(&f, &env, &cred.cert, ns::RSA_SHA256)), EbmsCode::FailedAuthentication);
    let f = fixture();
    // A weaker or other algorithm than the profile's.
    assert_eq!(code(verify(&f, &env, &cred.cert, ns::ED25519)), EbmsCode::PolicyNoncompliance);
    let sha1 = env.replacen(ns::SHA256, "http://www.w3.org/2000/09/xmldsig#sha1", 1);
    assert_eq!(code(verify(&f, &sha1, &cred.cert, ns::RSA_SHA256)), EbmsCode::PolicyNoncompliance);
    // Another signer.
    let other = credential(&ca, false);
    assert_eq!(code(verify(&f, &env, &other.cert, ns::RSA_SHA256)), EbmsCode::FailedAuthentication);
    // Unsigned.
    let unsigned = user_message_builder(&crate::ebms::write::tests_support::sample()).build("");
    assert_eq!(code(verify(&f, &unsigned, &cred.cert, ns::RSA_SHA256)), EbmsCode::PolicyNoncompliance);
}

#[test]
fn signature_wrapping_is_refused() {
    let ca = Authority::new("test CA").unwrap();
    let f = fixture();
    let cred = credential(&ca, false);
    let env = sign(&f, &cred, TokenReference::Bst);
    // Move the signed eb:Messaging into the Body under a wrapper and put an attacker's
    // Messaging (with the same Id) in the header.
    let start = env.find("<eb:Messaging").unwrap();
    let end = env.find("</eb:Messaging>").unwrap() + "</eb:Messaging>".len();
    let original = &env[start..end];
    let forged = original.replace("PE-SENASA", "MX-VUCEM");
    let wrapped = format!("{}{}{}", &env[..start], forged, &env[end..])
        .replace("</S12:Body>", &format!("<w:Wrap xmlns:w=\"urn:w\">{original}</w:Wrap></S12:Body>"));
    let err = verify(&f, &wrapped, &cred.cert, ns::RSA_SHA256).unwrap_err();
    assert_eq!(err.code, EbmsCode::FailedAuthentication, "{}", err.detail);
    // A signature that leaves out an attachment.
    let xml = Xml::parse(env.as_bytes()).unwrap();
    let mut extra = fixture_parts(&f);
    extra.push(PartToVerify {
        content_id: "part3@ap.cl.example",
        content_type: "application/octet-stream",
        content: (&f.bin_part).into(),
    });
    let err = verify_envelope(&xml, &extra, ns::RSA_SHA256, &resolver(cred.cert.clone())).unwrap_err();
    assert_eq!(err.code, EbmsCode::PolicyNoncompliance);
    assert!(err.detail.contains("part3"), "{}", err.detail);
}

/// A signed envelope with `more(first_reference)` written after its first `ds:Reference`,
/// verified: the error it gets.
fn verify_with_references_added(more: impl Fn(&str) -> String) -> EbmsError {
    let ca = Authority::new("test CA").unwrap();
    let f = fixture();
    let cred = credential(&ca, false);
    let env = sign(&f, &cred, TokenReference::Bst);
    let start = env.find("<ds:Reference").unwrap();
    let end = env[start..].find("</ds:Reference>").unwrap() + start + "</ds:Reference>".len();
    let added = format!("{}{}{}", &env[..end], more(&env[start..end]), &env[end..]);
    verify(&f, &added, &cred.cert, ns::RSA_SHA256).unwrap_err()
}

#[test]
fn a_reference_repeated_in_signed_info_is_refused_before_any_digest() {
    // The same reference a thousand times: refused as such, not digested a thousand times.
    let err = verify_with_references_added(|reference| reference.repeat(1000));
    assert_eq!(err.code, EbmsCode::PolicyNoncompliance, "{}", err.detail);
    assert!(err.detail.contains("more than once"), "{}", err.detail);
}

#[test]
fn many_same_document_references_are_refused_before_any_digest() {
    // Each one would be canonicalized by a walk of the whole envelope: bounded, not walked.
    let err = verify_with_references_added(|reference| {
        let uri = reference.split("URI=\"").nth(1).and_then(|r| r.split('"').next()).unwrap();
        (0..1000).map(|i| reference.replace(uri, &format!("#signed-{i}"))).collect()
    });
    assert_eq!(err.code, EbmsCode::PolicyNoncompliance, "{}", err.detail);
    assert!(err.detail.contains("at most 16 are accepted"), "{}", err.detail);
}

/// Debian's xmlsec1 (an independent implementation) verifies an RSA-signed envelope of ours.
/// xmlsec1 1.2 cannot resolve `cid:` references or WS-Security token references, so the
/// envelope has no attachments and the key is given on the command line.
#[test]
fn xmlsec1_verifies_our_rsa_signature() {
    let ca = Authority::new("test CA").unwrap();
    let cred = credential(&ca, false);
    let dir = tempfile::tempdir().unwrap();
    let mut um = crate::ebms::write::tests_support::sample();
    um.parts.clear();
    let signed = sign_envelope(&user_message_builder(&um), &cred, TokenReference::Bst, &[], "").unwrap();
    let envelope = dir.path().join("signed.xml");
    let cert = dir.path().join("signer.pem");
    std::fs::write(&envelope, &signed).unwrap();
    std::fs::write(&cert, cred.cert.to_pem().unwrap()).unwrap();
    let run = |file: &std::path::Path| {
        std::process::Command::new("xmlsec1")
            .args(["--verify", "--pubkey-cert-pem"])
            .arg(&cert)
            .args(["--id-attr:Id", &format!("{}:Messaging", ns::EB), "--id-attr:Id", &format!("{}:Body", ns::SOAP12)])
            .arg(file)
            .output()
            .expect("xmlsec1 is installed by `make test`")
    };
    let out = run(&envelope);
    assert!(out.status.success(), "xmlsec1 refused our signature: {}", String::from_utf8_lossy(&out.stderr));
    let tampered = dir.path().join("tampered.xml");
    std::fs::write(&tampered, signed.replace("conv-1", "conv-9")).unwrap();
    assert!(!run(&tampered).status.success(), "xmlsec1 must refuse a tampered envelope");
}

mod encryption {
    use super::*;
    use crate::wss::decrypt::{EncryptedFile, KeyTransport, decrypt_parts};
    use crate::wss::encrypt::{PartToEncrypt, encrypt_parts};

    fn enc_credential(ca: &Authority, x25519: bool) -> Credential {
        let key = if x25519 {
            PKey::generate_x25519().unwrap()
        } else {
            PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap()
        };
        let cert =
            ca.issue("recipient", &key, if x25519 { Usage::KeyAgreement } else { Usage::KeyTransport }, 30).unwrap();
        Credential { key, cert }
    }

    /// Sign then encrypt as a sender does; returns the envelope and the ciphertext file.
    fn protect(
        f: &Fixture,
        signer: &Credential,
        recipient: &X509,
        token: TokenReference,
    ) -> (String, std::path::PathBuf) {
        let cipher_path = f.xml_part.with_extension("enc");
        let parts = [PartToEncrypt {
            content_id: "part1@ap.cl.example",
            content_type: "application/xml",
            plaintext: (&f.xml_part).into(),
            ciphertext: cipher_path.clone(),
        }];
        let before = encrypt_parts(&parts, recipient, token, "t1").unwrap();
        let mut um = crate::ebms::write::tests_support::sample();
        um.parts.truncate(1);
        let signed = [SignedPart {
            content_id: "part1@ap.cl.example",
            content_type: "application/xml",
            content: (&f.xml_part).into(),
        }];
        (sign_envelope(&user_message_builder(&um), signer, TokenReference::Bst, &signed, &before).unwrap(), cipher_path)
    }

    #[test]
    fn both_profiles_round_trip() {
        let ca = Authority::new("test CA").unwrap();
        for (x25519, transport, method) in
            [(false, KeyTransport::RsaOaep, ns::RSA_SHA256), (true, KeyTransport::X25519, ns::ED25519)]
        {
            for token in [TokenReference::Bst, TokenReference::Ski, TokenReference::IssuerSerial] {
                let f = fixture();
                let signer = credential(&ca, x25519);
                let recipient = enc_credential(&ca, x25519);
                let (envelope, cipher_path) = protect(&f, &signer, &recipient.cert, token);
                let original = std::fs::read(&f.xml_part).unwrap();
                assert_ne!(std::fs::read(&cipher_path).unwrap(), original);
                let xml = Xml::parse(envelope.as_bytes()).unwrap();
                let decrypted = decrypt_parts(
                    &xml,
                    &[EncryptedFile {
                        content_id: "part1@ap.cl.example",
                        path: &cipher_path,
                        overwrite: false,
                        in_memory: None,
                    }],
                    transport,
                    std::slice::from_ref(&recipient),
                )
                .unwrap_or_else(|e| panic!("{transport:?} {token:?}: {e}"));
                assert_eq!(std::fs::read(&decrypted[0].path).unwrap(), original);
                assert_eq!(decrypted[0].content_type.as_deref(), Some("application/xml"));
                let parts = [PartToVerify {
                    content_id: "part1@ap.cl.example",
                    content_type: "application/xml",
                    content: (&decrypted[0].path).into(),
                }];
                verify_envelope(&xml, &parts, method, &resolver(signer.cert.clone())).unwrap();
                // The same part held in memory: decrypted and verified there, no file written.
                let ciphertext = std::fs::read(&cipher_path).unwrap();
                let unwritten = f.xml_part.with_extension("never-written");
                let in_memory = |bytes: &[u8]| {
                    let part = EncryptedFile {
                        content_id: "part1@ap.cl.example",
                        path: &unwritten,
                        overwrite: true,
                        in_memory: Some(bytes),
                    };
                    decrypt_parts(&xml, &[part], transport, std::slice::from_ref(&recipient))
                };
                let decrypted = in_memory(&ciphertext).unwrap();
                let plain = decrypted[0].plain.as_deref().expect("plaintext handed back");
                assert_eq!((plain, decrypted[0].size), (original.as_slice(), original.len() as u64));
                assert!(!unwritten.exists());
                let parts = [PartToVerify {
                    content_id: "part1@ap.cl.example",
                    content_type: "application/xml",
                    content: crate::wss::content::Content::Memory(plain),
                }];
                verify_envelope(&xml, &parts, method, &resolver(signer.cert.clone())).unwrap();
                let mut tampered = ciphertext.clone();
                *tampered.last_mut().unwrap() ^= 1;
                let refused = in_memory(&tampered).unwrap_err();
                assert_eq!(refused.code, EbmsCode::FailedDecryption, "{refused}");
            }
        }
    }

    #[test]
    fn decryption_failures_and_policy() {
        let ca = Authority::new("test CA").unwrap();
        let f = fixture();
        let signer = credential(&ca, false);
        let recipient = enc_credential(&ca, false);
        let (envelope, cipher_path) = protect(&f, &signer, &recipient.cert, TokenReference::Bst);
        let xml = Xml::parse(envelope.as_bytes()).unwrap();
        let files = [EncryptedFile {
            content_id: "part1@ap.cl.example",
            path: &cipher_path,
            overwrite: false,
            in_memory: None,
        }];
        // Not our key.
        let other = enc_credential(&ca, false);
        assert_eq!(
            decrypt_parts(&xml, &files, KeyTransport::RsaOaep, &[other]).unwrap_err().code,
            EbmsCode::FailedDecryption
        );
        // The wrong profile's key transport.
        assert_eq!(
            decrypt_parts(&xml, &files, KeyTransport::X25519, std::slice::from_ref(&recipient)).unwrap_err().code,
            EbmsCode::PolicyNoncompliance
        );
        // A weaker OAEP digest.
        let weak = Xml::parse(
            envelope
                .replace(
                    &format!(r#"<ds:DigestMethod Algorithm="{}"/><xenc11:MGF"#, ns::SHA256),
                    &format!(r#"<ds:DigestMethod Algorithm="{}"/><xenc11:MGF"#, ns::SHA1),
                )
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            decrypt_parts(&weak, &files, KeyTransport::RsaOaep, std::slice::from_ref(&recipient)).unwrap_err().code,
            EbmsCode::PolicyNoncompliance
        );
        // AES-CBC instead of GCM.
        let cbc =
            Xml::parse(envelope.replace(ns::AES128_GCM, "http://www.w3.org/2001/04/xmlenc#aes128-cbc").as_bytes())
                .unwrap();
        assert_eq!(
            decrypt_parts(&cbc, &files, KeyTransport::RsaOaep, std::slice::from_ref(&recipient)).unwrap_err().code,
            EbmsCode::PolicyNoncompliance
        );
        // A part that is not encrypted at all.
        let extra = [
            EncryptedFile { content_id: "part1@ap.cl.example", path: &cipher_path, overwrite: false, in_memory: None },
            EncryptedFile { content_id: "plain@x", path: &f.bin_part, overwrite: false, in_memory: None },
        ];
        assert_eq!(
            decrypt_parts(&xml, &extra, KeyTransport::RsaOaep, std::slice::from_ref(&recipient)).unwrap_err().code,
            EbmsCode::PolicyNoncompliance
        );
        // Tampered ciphertext.
        let mut bytes = std::fs::read(&cipher_path).unwrap();
        let last = bytes.len() - 20;
        bytes[last] ^= 0x40;
        std::fs::write(&cipher_path, bytes).unwrap();
        assert_eq!(
            decrypt_parts(&xml, &files, KeyTransport::RsaOaep, std::slice::from_ref(&recipient)).unwrap_err().code,
            EbmsCode::FailedDecryption
        );
    }
}

/// Input forms that other implementations send (docs/as4.md §2.2, §2.6.4), accepted; and the
/// limits of that tolerance.
mod tolerance {
    use super::*;
    use crate::wss::cipher;
    use crate::wss::decrypt::{EncryptedFile, KeyTransport, decrypt_parts};
    use crate::wss::encrypt::{PartToEncrypt, encrypt_parts};

    fn setup(x25519: bool) -> (tempfile::TempDir, Credential, String, std::path::PathBuf, Vec<u8>) {
        let ca = Authority::new("tolerance CA").unwrap();
        let key = if x25519 {
            PKey::generate_x25519().unwrap()
        } else {
            PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap()
        };
        let cert =
            ca.issue("recipient", &key, if x25519 { Usage::KeyAgreement } else { Usage::KeyTransport }, 30).unwrap();
        let recipient = Credential { key, cert };
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("p");
        std::fs::write(&plain, b"payload bytes").unwrap();
        let cipher_path = dir.path().join("c");
        let parts = [PartToEncrypt {
            content_id: "p@x",
            content_type: "application/gzip",
            plaintext: (&plain).into(),
            ciphertext: cipher_path.clone(),
        }];
        let xml = encrypt_parts(&parts, &recipient.cert, TokenReference::Bst, "t").unwrap();
        let envelope = format!(
            r#"<S12:Envelope xmlns:S12="{}" xmlns:wsu="{}"><S12:Header>{}{xml}</wsse:Security></S12:Header><S12:Body/></S12:Envelope>"#,
            ns::SOAP12,
            ns::WSU,
            crate::wss::sign::SECURITY_OPEN
        );
        (dir, recipient, envelope, cipher_path, b"payload bytes".to_vec())
    }

    fn decrypt(
        envelope: &str,
        cipher_path: &std::path::Path,
        transport: KeyTransport,
        key: &Credential,
    ) -> Result<Vec<u8>, EbmsError> {
        let xml = Xml::parse(envelope.as_bytes()).unwrap();
        let out = decrypt_parts(
            &xml,
            &[EncryptedFile { content_id: "p@x", path: cipher_path, overwrite: false, in_memory: None }],
            transport,
            std::slice::from_ref(key),
        )?;
        Ok(std::fs::read(&out[0].path).unwrap())
    }

    #[test]
    fn x25519_encoding_variants() {
        let (_dir, key, envelope, cipher_path, plain) = setup(true);
        let t = KeyTransport::X25519;
        // The spec form, and the prefix phase4/WSS4J use.
        assert_eq!(decrypt(&envelope, &cipher_path, t, &key).unwrap(), plain);
        let rfc9231 = envelope.replace("dsig-more:", "rfc9231:").replace("xmlns:dsig-more=", "xmlns:rfc9231=");
        assert_eq!(decrypt(&rfc9231, &cipher_path, t, &key).unwrap(), plain);
        // KeyLength in bits (leifj/signedxml) or absent; the Salt inside a Specified wrapper.
        assert_eq!(
            decrypt(&envelope.replace("KeyLength>16<", "KeyLength>128<"), &cipher_path, t, &key).unwrap(),
            plain
        );
        let no_length = envelope.replace("<dsig-more:KeyLength>16</dsig-more:KeyLength>", "");
        assert_eq!(decrypt(&no_length, &cipher_path, t, &key).unwrap(), plain);
        let start = envelope.find("<dsig-more:Salt>").unwrap() + "<dsig-more:Salt>".len();
        let end = envelope.find("</dsig-more:Salt>").unwrap();
        let wrapped = format!(
            "{}<dsig-more:Specified>{}</dsig-more:Specified>{}",
            &envelope[..start],
            &envelope[start..end],
            &envelope[end..]
        );
        assert_eq!(decrypt(&wrapped, &cipher_path, t, &key).unwrap(), plain);
        // wsu:Id instead of Id on the EncryptedKey (the ENTSOG sample).
        let wsu_id = envelope.replace(r#"<xenc:EncryptedKey Id="EK-t""#, r#"<xenc:EncryptedKey wsu:Id="EK-t""#);
        assert_eq!(decrypt(&wsu_id, &cipher_path, t, &key).unwrap(), plain);
        // Beyond tolerance: a key length that does not fit kw-aes128, another PRF, ConcatKDF.
        let bad = envelope.replace("KeyLength>16<", "KeyLength>32<");
        assert_eq!(decrypt(&bad, &cipher_path, t, &key).unwrap_err().code, EbmsCode::PolicyNoncompliance);
        let bad = envelope.replace(ns::HMAC_SHA256, "http://www.w3.org/2001/04/xmldsig-more#hmac-sha512");
        assert_eq!(decrypt(&bad, &cipher_path, t, &key).unwrap_err().code, EbmsCode::PolicyNoncompliance);
        let bad = envelope.replace(ns::HKDF, "http://www.w3.org/2009/xmlenc11#ConcatKDF");
        assert_eq!(decrypt(&bad, &cipher_path, t, &key).unwrap_err().code, EbmsCode::PolicyNoncompliance);
    }

    #[test]
    fn legacy_rsa_oaep_mgf1p_is_accepted_on_input() {
        let (_dir, key, envelope, cipher_path, plain) = setup(false);
        // Re-wrap the content key the legacy way: OAEP with SHA-1 digest and MGF1-SHA1.
        let start = envelope.find("<xenc:CipherValue>").unwrap() + "<xenc:CipherValue>".len();
        let end = envelope[start..].find("</xenc:CipherValue>").unwrap() + start;
        let cek = cipher::rsa_oaep_decrypt(
            &key.key,
            &crate::wss::digest::unb64(&envelope[start..end]).unwrap(),
            openssl::hash::MessageDigest::sha256(),
            openssl::hash::MessageDigest::sha256(),
        )
        .unwrap();
        let mut enc = openssl::encrypt::Encrypter::new(&key.key).unwrap();
        enc.set_rsa_padding(openssl::rsa::Padding::PKCS1_OAEP).unwrap();
        let mut legacy = vec![0u8; enc.encrypt_len(&cek).unwrap()];
        let n = enc.encrypt(&cek, &mut legacy).unwrap();
        legacy.truncate(n);
        let method_start = envelope.find(&format!(r#"<xenc:EncryptionMethod Algorithm="{}">"#, ns::RSA_OAEP)).unwrap();
        let method_end = envelope[method_start..].find("</xenc:EncryptionMethod>").unwrap()
            + method_start
            + "</xenc:EncryptionMethod>".len();
        // Same key size, same ciphertext length: the offsets in `envelope` hold in `old`.
        let old = format!("{}{}{}", &envelope[..start], crate::wss::digest::b64(&legacy), &envelope[end..]);
        assert_eq!(old.len(), envelope.len());
        let old = format!(
            "{}<xenc:EncryptionMethod Algorithm=\"{}\"/>{}",
            &old[..method_start],
            ns::RSA_OAEP_MGF1P,
            &old[method_end..]
        );
        assert_eq!(decrypt(&old, &cipher_path, KeyTransport::RsaOaep, &key).unwrap(), plain);
        // RSA PKCS#1 v1.5 key transport is never accepted.
        let v15 = envelope.replace(ns::RSA_OAEP, "http://www.w3.org/2001/04/xmlenc#rsa-1_5");
        assert_eq!(
            decrypt(&v15, &cipher_path, KeyTransport::RsaOaep, &key).unwrap_err().code,
            EbmsCode::PolicyNoncompliance
        );
    }
}
