//! Streaming, bounded reading of a SwA `multipart/related` body. The root part (the SOAP
//! envelope) is kept in memory up to a limit; every other part streams into a [`PartSink`].

use super::base64_stream::Base64Decoder;
use super::content_type::{is_soap, strip_brackets};
use crate::ebms::{EbmsCode, EbmsError};
use bytes::Bytes;
use futures_util::Stream;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The whole body, all parts and headers together.
    pub max_total_bytes: u64,
    pub max_parts: usize,
    pub max_envelope_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_total_bytes: 64 << 20, max_parts: 64, max_envelope_bytes: 2 << 20 }
    }
}

/// Where payload parts go while they arrive (files in the runtime, memory in tests).
#[async_trait::async_trait]
pub trait PartSink: Send {
    async fn begin(&mut self, content_id: &str, content_type: &str) -> std::io::Result<()>;
    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    async fn finish(&mut self) -> std::io::Result<()>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedPart {
    pub content_id: String,
    pub content_type: String,
    /// Decoded size in bytes.
    pub size: u64,
}

#[derive(Debug)]
pub struct Multipart {
    pub envelope: Vec<u8>,
    /// Payload parts in arrival order (the root excluded).
    pub parts: Vec<ReceivedPart>,
}

fn mime_error(detail: impl Into<String>) -> EbmsError {
    EbmsError::new(EbmsCode::MimeInconsistency, detail)
}

fn io_error(e: std::io::Error) -> EbmsError {
    EbmsError::new(EbmsCode::DeliveryFailure, format!("cannot store a received part: {e}"))
}

enum Transfer {
    Identity,
    Base64(Base64Decoder),
}

pub async fn read_multipart<S, E>(
    body: S,
    boundary: &str,
    start: Option<&str>,
    limits: Limits,
    sink: &mut dyn PartSink,
) -> Result<Multipart, EbmsError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    let constraints =
        multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(limits.max_total_bytes));
    let mut multipart = multer::Multipart::with_constraints(body, boundary, constraints);
    let mut envelope: Option<Vec<u8>> = None;
    let mut parts: Vec<ReceivedPart> = Vec::new();
    let mut index = 0usize;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return Err(multer_error(e)),
        };
        index += 1;
        if index > limits.max_parts {
            return Err(mime_error(format!("more than {} MIME parts", limits.max_parts)));
        }
        let headers = field.headers();
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).map(str::to_owned);
        let content_type = header("content-type").unwrap_or_else(|| "application/octet-stream".to_owned());
        let content_id = header("content-id").map(|c| strip_brackets(&c).to_owned());
        let transfer = match header("content-transfer-encoding").map(|t| t.to_ascii_lowercase()).as_deref() {
            None | Some("binary") | Some("8bit") | Some("7bit") => Transfer::Identity,
            Some("base64") => Transfer::Base64(Base64Decoder::default()),
            Some(other) => {
                return Err(mime_error(format!("Content-Transfer-Encoding '{other}' is not supported")));
            }
        };
        let is_root = match start {
            Some(start) => content_id.as_deref() == Some(start),
            None => envelope.is_none() && index == 1,
        };
        let mut field = field;
        if is_root {
            if !is_soap(&content_type) {
                return Err(mime_error(format!(
                    "root part has Content-Type '{content_type}', not application/soap+xml"
                )));
            }
            let mut bytes = Vec::new();
            let mut transfer = transfer;
            while let Some(chunk) = field.chunk().await.map_err(multer_error)? {
                let decoded = decode(&mut transfer, &chunk)?;
                if bytes.len() + decoded.len() > limits.max_envelope_bytes {
                    return Err(mime_error(format!("SOAP envelope exceeds {} bytes", limits.max_envelope_bytes)));
                }
                bytes.extend_from_slice(&decoded);
            }
            bytes.extend(finish(transfer)?);
            envelope = Some(bytes);
            continue;
        }
        let content_id = content_id.ok_or_else(|| mime_error(format!("MIME part {index} has no Content-ID")))?;
        if parts.iter().any(|p| p.content_id == content_id) {
            return Err(EbmsError::new(EbmsCode::ValueInconsistent, format!("duplicate Content-ID <{content_id}>")));
        }
        sink.begin(&content_id, &content_type).await.map_err(io_error)?;
        let mut size = 0u64;
        let mut transfer = transfer;
        while let Some(chunk) = field.chunk().await.map_err(multer_error)? {
            let decoded = decode(&mut transfer, &chunk)?;
            size += decoded.len() as u64;
            sink.write(&decoded).await.map_err(io_error)?;
        }
        let tail = finish(transfer)?;
        size += tail.len() as u64;
        sink.write(&tail).await.map_err(io_error)?;
        sink.finish().await.map_err(io_error)?;
        parts.push(ReceivedPart { content_id, content_type, size });
    }
    let envelope = envelope.ok_or_else(|| match start {
        Some(s) => mime_error(format!("the start parameter <{s}> matches no MIME part")),
        None => mime_error("multipart body has no parts"),
    })?;
    Ok(Multipart { envelope, parts })
}

fn decode<'a>(transfer: &mut Transfer, chunk: &'a [u8]) -> Result<std::borrow::Cow<'a, [u8]>, EbmsError> {
    match transfer {
        Transfer::Identity => Ok(std::borrow::Cow::Borrowed(chunk)),
        Transfer::Base64(d) => d
            .decode_chunk(chunk)
            .map(std::borrow::Cow::Owned)
            .map_err(|e| mime_error(format!("invalid base64 part content: {e}"))),
    }
}

fn finish(transfer: Transfer) -> Result<Vec<u8>, EbmsError> {
    match transfer {
        Transfer::Identity => Ok(Vec::new()),
        Transfer::Base64(d) => d.finish().map_err(|e| mime_error(format!("invalid base64 part content: {e}"))),
    }
}

fn multer_error(e: multer::Error) -> EbmsError {
    match e {
        multer::Error::StreamSizeExceeded { limit } => mime_error(format!("message body exceeds {limit} bytes")),
        other => mime_error(format!("malformed multipart body: {other}")),
    }
}

/// A sink that keeps parts in memory: for tests and for the `verify` command on small files.
#[derive(Debug, Default)]
pub struct MemorySink {
    pub parts: Vec<(String, Vec<u8>)>,
}

#[async_trait::async_trait]
impl PartSink for MemorySink {
    async fn begin(&mut self, content_id: &str, _content_type: &str) -> std::io::Result<()> {
        self.parts.push((content_id.to_owned(), Vec::new()));
        Ok(())
    }
    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if let Some(last) = self.parts.last_mut() {
            last.1.extend_from_slice(bytes);
        }
        Ok(())
    }
    async fn finish(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
