//! The SOAP envelope reader: never panics, whatever the bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ventanilla_core::ebms::read::read_envelope(data, ventanilla_core::ebms::tree::Limits::default());
});
