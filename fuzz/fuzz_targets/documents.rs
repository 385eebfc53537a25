//! Every payload handler (ePhyto, COD, EDIFACT) on arbitrary bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let registry = ventanilla_core::payload::Registry::standard();
    for name in registry.names() {
        let _ = registry.inspect(Some(name), data, &ventanilla_core::payload::Context::default());
    }
});
