//! P-Mode files: any text gives a link or located errors, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ventanilla_core::pmode::parse_link(std::path::Path::new("fuzz.toml"), text);
    }
});
