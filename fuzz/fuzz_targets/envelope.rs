//! See ventanilla_core::fuzzing::envelope.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ventanilla_core::fuzzing::envelope(data));
