//! See ventanilla_core::fuzzing::signed_envelope.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ventanilla_core::fuzzing::signed_envelope(data));
