//! See ventanilla_core::fuzzing::multipart.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ventanilla_core::fuzzing::multipart(data));
