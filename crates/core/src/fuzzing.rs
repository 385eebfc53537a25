//! What each fuzz target does with its input, in one place: the cargo-fuzz targets in `fuzz/`
//! call these, and `tests/fuzz_seeds.rs` replays the committed seeds (and every input a campaign
//! ever found) through them in `make test`. Each must return, never panic, on any bytes.

use crate::ebms::{EbmsCode, EbmsError};

/// The SOAP/ebMS header reader.
pub fn envelope(data: &[u8]) {
    let limits = crate::ebms::tree::Limits::default();
    let read = crate::ebms::read::read_envelope(data, limits);
    // Reading leaves out what it does not need (`tree::parse_pruned`); it must not change
    // what is accepted or refused.
    assert_eq!(read, crate::ebms::read::read_envelope_whole(data, limits), "pruned and whole readings differ");
}

/// The streaming SwA multipart reader, fed in 7-byte chunks.
pub fn multipart(data: &[u8]) {
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> =
        data.chunks(7).map(|c| Ok(bytes::Bytes::copy_from_slice(c))).collect();
    let mut sink = crate::mime::MemorySink::default();
    let reading = crate::mime::read_multipart(
        futures_util::stream::iter(chunks),
        "----=_Part_fuzz",
        None,
        crate::mime::Limits::default(),
        &mut sink,
    );
    let _ = run_to_end(reading);
}

/// Signature verification, reference checks and decryption on arbitrary envelopes.
pub fn signed_envelope(data: &[u8]) {
    if let Ok(xml) = crate::wss::xml::Xml::parse(data) {
        let refuse = |_: &crate::wss::keyinfo::KeyReference| -> Result<openssl::x509::X509, EbmsError> {
            Err(EbmsError::new(EbmsCode::FailedAuthentication, "fuzz"))
        };
        let _ = crate::wss::verify::verify_envelope(&xml, &[], crate::wss::ns::ED25519, &refuse);
        let _ = crate::wss::verify::verify_envelope_without_attachments(&xml, crate::wss::ns::RSA_SHA256, &refuse);
        let _ = crate::wss::verify::check_each_reference(&xml, &[]);
        let _ = crate::wss::decrypt::decrypt_parts(&xml, &[], crate::wss::decrypt::KeyTransport::X25519, &[]);
    }
}

/// Every payload handler (ePhyto, COD, EDIFACT).
pub fn documents(data: &[u8]) {
    let registry = crate::payload::Registry::standard();
    for name in registry.names() {
        let _ = registry.inspect(Some(name), data, &crate::payload::Context::default());
    }
}

/// P-Mode files.
pub fn pmode(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::pmode::parse_link(std::path::Path::new("fuzz.toml"), text);
    }
}

/// Polls an in-memory future to its end (its stream is always ready; no runtime needed).
fn run_to_end<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
    }
}

/// The IOP SOAP readers (request and answer) and the SPS certificate's signature check, on
/// what a legacy node sends.
pub fn iop(data: &[u8]) {
    let limits = crate::iop::soap::limits(1 << 20);
    if let Ok(request) = crate::iop::soap::read_request(data, limits) {
        let _ = request.envio.cabecera.check();
        let _ = crate::iop::certificate::verify(request.envio.signed_sps_cert.as_bytes());
    }
    let _ = crate::iop::soap::read_answer(data);
    let _ = crate::iop::certificate::verify(data);
}
