//! SOAP-with-Attachments packaging (protocol core: framing and parsing, no sockets or files).

pub mod base64_stream;
pub mod content_type;
pub mod reader;
pub mod writer;

pub use content_type::{Packaging, parse_packaging};
pub use reader::{Limits, MemorySink, Multipart, PartSink, ReceivedPart, read_multipart};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebms::EbmsCode;
    use bytes::Bytes;

    fn stream(
        body: Vec<u8>,
        chunk: usize,
    ) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin {
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            body.chunks(chunk.max(1)).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        futures_util::stream::iter(chunks)
    }

    fn build(parts: &[(&str, &str, &[u8])]) -> (String, Vec<u8>) {
        let boundary = writer::new_boundary();
        let mut body = Vec::new();
        for (i, (ct, cid, content)) in parts.iter().enumerate() {
            body.extend(writer::part_head(&boundary, ct, cid, i == 0).into_bytes());
            body.extend_from_slice(content);
        }
        body.extend(writer::closing(&boundary).into_bytes());
        (boundary, body)
    }

    async fn read(
        boundary: &str,
        start: Option<&str>,
        body: Vec<u8>,
        chunk: usize,
    ) -> Result<(Multipart, MemorySink), crate::ebms::EbmsError> {
        let mut sink = MemorySink::default();
        let m = read_multipart(stream(body, chunk), boundary, start, Limits::default(), &mut sink).await?;
        Ok((m, sink))
    }

    #[tokio::test]
    async fn round_trip_in_small_chunks() {
        let payload: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let (boundary, body) = build(&[
            ("application/soap+xml; charset=UTF-8", "root@x", b"<env/>"),
            ("application/octet-stream", "p1@x", &payload),
            ("application/xml", "p2@x", b"<doc/>"),
        ]);
        for chunk in [1, 7, 64, 100_000] {
            let (m, sink) = read(&boundary, Some("root@x"), body.clone(), chunk).await.unwrap();
            assert_eq!(m.envelope, b"<env/>");
            assert_eq!(m.parts.len(), 2);
            assert_eq!(sink.parts[0], ("p1@x".to_owned(), payload.clone()));
            assert_eq!(m.parts[1].size, 6);
        }
    }

    #[tokio::test]
    async fn start_pointing_nowhere_and_wrong_root_type() {
        let (boundary, body) = build(&[("application/soap+xml", "root@x", b"<env/>")]);
        let err = read(&boundary, Some("other@x"), body, 10).await.unwrap_err();
        assert_eq!(err.code, EbmsCode::MimeInconsistency);
        let (boundary, body) = build(&[("text/plain", "root@x", b"<env/>")]);
        let err = read(&boundary, None, body, 10).await.unwrap_err();
        assert_eq!(err.code, EbmsCode::MimeInconsistency);
    }

    #[tokio::test]
    async fn truncated_and_garbage_bodies() {
        let (boundary, body) = build(&[("application/soap+xml", "root@x", b"<env/>"), ("a/b", "p@x", b"12345")]);
        let cut = body[..body.len() - 20].to_vec();
        assert_eq!(read(&boundary, None, cut, 10).await.unwrap_err().code, EbmsCode::MimeInconsistency);
        assert_eq!(
            read("b", None, b"no boundary here".to_vec(), 3).await.unwrap_err().code,
            EbmsCode::MimeInconsistency
        );
    }

    #[tokio::test]
    async fn duplicate_content_ids() {
        let (boundary, body) =
            build(&[("application/soap+xml", "root@x", b"<e/>"), ("a/b", "p@x", b"1"), ("a/b", "p@x", b"2")]);
        assert_eq!(read(&boundary, None, body, 10).await.unwrap_err().code, EbmsCode::ValueInconsistent);
    }

    #[tokio::test]
    async fn phase4_sample_with_base64_part_and_bare_content_id() {
        // The sample is stored with LF line ends; on the wire MIME uses CRLF.
        let raw = include_str!(
            "../../../../conformance/samples/phase4/phase4-test/src/test/resources/testfiles/WrongCompression.mime"
        )
        .replace('\n', "\r\n");
        let raw = raw.as_bytes();
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| (p, 4))
            .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2)))
            .unwrap();
        let (head, body) = (String::from_utf8_lossy(&raw[..split.0]).to_string(), raw[split.0 + split.1..].to_vec());
        let ct = head.split("Content-Type:").nth(1).unwrap().replace(['\r', '\n', '\t'], " ");
        let Packaging::Multipart { boundary, start } = parse_packaging(Some(ct.trim())).unwrap() else { panic!() };
        let (m, sink) = read(&boundary, start.as_deref(), body, 512).await.unwrap();
        assert!(String::from_utf8_lossy(&m.envelope).contains("eb:Messaging"));
        assert_eq!(m.parts.len(), 1);
        assert!(!sink.parts[0].0.starts_with('<'));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_garbage(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400), chunk in 1usize..40) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let _ = rt.block_on(read("xyz", None, body, chunk));
        }
    }
}
