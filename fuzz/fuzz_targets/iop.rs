//! See ventanilla_core::fuzzing::iop.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ventanilla_core::fuzzing::iop(data));
