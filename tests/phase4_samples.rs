//! The phase4 sample messages (Apache-2.0, conformance/samples/phase4) as parser golden tests.

use ventanilla::ebms::read::{EnvelopeError, read_envelope};
use ventanilla::ebms::tree::Limits;
use ventanilla::ebms::{EbmsCode, Signal};

fn load(rel: &str) -> Vec<u8> {
    std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/samples/phase4").join(rel))
        .unwrap()
}

const TESTFILES: &str = "phase4-test/src/test/resources/testfiles/";
const SOAP12: &str = "phase4-lib/src/test/resources/external/soap12test/";

#[test]
fn user_message_sample() {
    let env = read_envelope(&load(&format!("{SOAP12}UserMessage12.xml")), Limits::default()).unwrap();
    let um = env.messaging.user_message.unwrap();
    assert_eq!(um.info.message_id, "2011-921@5209999001264.example.com");
    assert_eq!(um.from.ids[0].value, "5209999001264");
    assert_eq!(um.from.ids[0].kind.as_deref(), Some("urn:oasis:names:tc:ebcore:partyid-type:iso6523:0088"));
    assert_eq!(um.to.role, "Buyer");
    assert_eq!(um.service.value, "http://docs.oasis-open.org/ebxml-msg/as4/200902/service");
    assert_eq!(um.parts[0].href.as_deref(), Some("#_f8aa8b55-b31c-4364-94d0-3615ca65aa40"));
    assert_eq!(env.messaging.id.as_deref(), Some("_9ecb9d3c-cef8-4006-ac18-f425c5c7ae3d"));
    assert!(env.has_security_header);
    assert_eq!(env.body_children, 1);
}

#[test]
fn compressed_payload_sample_is_not_well_formed() {
    // The sample's first eb:Property is never closed (a defect of the sample itself); a
    // lenient parser would guess, we refuse with EBMS:0009.
    match read_envelope(&load(&format!("{SOAP12}UserMessageWithCompressedPayload12.xml")), Limits::default()) {
        Err(EnvelopeError::Ebms(e)) => {
            assert_eq!(e.code, EbmsCode::InvalidHeader);
            assert!(e.detail.contains("not well-formed"), "{}", e.detail);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn pull_request_sample() {
    let env = read_envelope(&load(&format!("{SOAP12}PullRequest12.xml")), Limits::default()).unwrap();
    assert!(matches!(env.messaging.signals[0].signal, Signal::PullRequest { .. }));
}

#[test]
fn error_samples_are_read_leniently() {
    for (file, code) in [
        ("ErrorMessage.xml", "EBMS:0001"),
        ("ErrorMessageNoRefToMessageID.xml", ""),
        ("ErrorMessageWithFault.xml", "EBMS:0103"),
    ] {
        let env = read_envelope(&load(&format!("{TESTFILES}{file}")), Limits::default())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let Signal::Errors(errors) = &env.messaging.signals[0].signal else { panic!("{file}: not an error signal") };
        if !code.is_empty() {
            assert_eq!(errors[0].code, code, "{file}");
        }
        assert!(errors[0].is_failure(), "{file}: 'Failure' and 'failure' both mean failure");
    }
}

#[test]
fn negative_samples_get_their_codes() {
    for (file, code) in [
        ("TwoUserMessages.xml", EbmsCode::ValueInconsistent),
        ("UserMessageNoPartyID.xml", EbmsCode::InvalidHeader),
        ("NoResponder.xml", EbmsCode::InvalidHeader),
    ] {
        match read_envelope(&load(&format!("{TESTFILES}{file}")), Limits::default()) {
            Err(EnvelopeError::Ebms(e)) => assert_eq!(e.code, code, "{file}: {}", e.detail),
            other => panic!("{file}: {other:?}"),
        }
    }
}

#[test]
fn signed_samples_use_untyped_party_ids() {
    // ebMS Core 5.2.2.4: a PartyId without @type must be a URI; 'APP_1000000101' is not.
    for file in ["WrongSigningAlgorithm.xml", "WrongSigningDigestAlgorithm.xml"] {
        match read_envelope(&load(&format!("{TESTFILES}{file}")), Limits::default()) {
            Err(EnvelopeError::Ebms(e)) => {
                assert_eq!(e.code, EbmsCode::ValueInconsistent, "{file}");
                assert!(e.detail.contains("APP_1000000101"), "{file}: {}", e.detail);
            }
            other => panic!("{file}: {other:?}"),
        }
    }
}
