//! The backend API's submission metadata part (JSON with bounded fields).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ventanilla::backend::api::parse_metadata(data);
});
