//! The streaming SwA multipart reader, fed in small chunks.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = data.chunks(7).map(|c| Ok(bytes::Bytes::copy_from_slice(c))).collect();
    let mut sink = ventanilla_core::mime::MemorySink::default();
    let _ = runtime.block_on(ventanilla_core::mime::read_multipart(
        futures_util::stream::iter(chunks),
        "----=_Part_fuzz",
        None,
        ventanilla_core::mime::Limits::default(),
        &mut sink,
    ));
});
