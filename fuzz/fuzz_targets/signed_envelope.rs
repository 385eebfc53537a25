//! Signature verification and decryption on arbitrary envelopes (libxml2 parsing, KeyInfo
//! resolution, reference checks): errors, never panics.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(xml) = ventanilla_core::wss::xml::Xml::parse(data) {
        let refuse = |_: &ventanilla_core::wss::keyinfo::KeyReference| -> Result<openssl::x509::X509, ventanilla_core::ebms::EbmsError> {
            Err(ventanilla_core::ebms::EbmsError::new(ventanilla_core::ebms::EbmsCode::FailedAuthentication, "fuzz"))
        };
        let _ = ventanilla_core::wss::verify::verify_envelope(&xml, &[], "http://www.w3.org/2021/04/xmldsig-more#eddsa-ed25519", &refuse);
        let _ = ventanilla_core::wss::verify::check_each_reference(&xml, &[]);
        let _ = ventanilla_core::wss::decrypt::decrypt_parts(&xml, &[], ventanilla_core::wss::decrypt::KeyTransport::X25519, &[]);
    }
});
