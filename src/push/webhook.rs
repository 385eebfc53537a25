//! A received message POSTed to the national system: `multipart/form-data` with a `metadata`
//! part (the message as the API shows it, JSON) and one `payload` part per payload, streamed
//! from the files, signed with `X-Ventanilla-Signature: sha256=<hex HMAC-SHA256 of the body>`
//! (a first pass over the files computes it; the body is never held whole).

use super::settings::PushWebhook;
use crate::store::MessageRecord;
use bytes::Bytes;
use futures_util::StreamExt;
use hmac::Mac;

/// A piece of the body: bytes, or a file streamed as is.
enum Piece {
    Bytes(Bytes),
    File(std::path::PathBuf),
}

fn pieces(record: &MessageRecord, boundary: &str) -> Result<Vec<Piece>, String> {
    let metadata = serde_json::to_vec(record).map_err(|e| e.to_string())?;
    let mut out = vec![Piece::Bytes(Bytes::from(format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"\r\nContent-Type: application/json\r\n\r\n"
    )))];
    out.push(Piece::Bytes(Bytes::from(metadata)));
    for (i, p) in record.payloads.iter().enumerate() {
        let name =
            p.filename.as_deref().map(crate::backend::safe_file_name).unwrap_or_else(|| format!("payload-{}", i + 1));
        out.push(Piece::Bytes(Bytes::from(format!(
            "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"payload\"; filename=\"{name}\"\r\nContent-Type: {}\r\n\r\n",
            p.mime_type
        ))));
        out.push(Piece::File(p.path.clone()));
    }
    out.push(Piece::Bytes(Bytes::from(format!("\r\n--{boundary}--\r\n"))));
    Ok(out)
}

/// The signature header's value for `pieces` (reads the files once).
async fn sign(secret: &[u8], pieces: &[Piece]) -> Result<String, String> {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).map_err(|e| e.to_string())?;
    for piece in pieces {
        match piece {
            Piece::Bytes(b) => mac.update(b),
            Piece::File(path) => {
                let file = tokio::fs::File::open(path).await.map_err(|e| format!("{}: {e}", path.display()))?;
                let mut chunks = tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024);
                while let Some(chunk) = chunks.next().await {
                    mac.update(&chunk.map_err(|e| format!("{}: {e}", path.display()))?);
                }
            }
        }
    }
    Ok(format!("sha256={}", hex::encode(mac.finalize().into_bytes())))
}

fn stream(pieces: Vec<Piece>) -> crate::transport::BodyStream {
    let parts = pieces.into_iter().map(|piece| match piece {
        Piece::Bytes(b) => futures_util::stream::once(async move { Ok(b) }).boxed(),
        Piece::File(path) => crate::store::files::stream_file(path),
    });
    Box::pin(futures_util::stream::iter(parts).flatten())
}

pub async fn post(webhook: &PushWebhook, record: &MessageRecord) -> Result<(), String> {
    let boundary = format!("ventanilla-{}", uuid::Uuid::new_v4().simple());
    let secret = webhook.secret()?;
    let body = pieces(record, &boundary)?;
    let signature = sign(&secret, &body).await?;
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let headers =
        [("x-ventanilla-signature", signature.as_str()), ("x-ventanilla-message-id", record.message_id.as_str())];
    let (status, answer) =
        crate::transport::client::post_stream(&webhook.url, &content_type, &headers, stream(body), webhook.timeout.0)
            .await?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("{} answered HTTP {status}: {}", webhook.url, answer.trim()))
    }
}
