//! The access point's config file: typed sizes, durations, store kind, retention states.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ventanilla::config::Config::parse(std::path::Path::new("fuzz.toml"), text);
    }
});
