//! See ventanilla_core::fuzzing::pmode.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ventanilla_core::fuzzing::pmode(data));
