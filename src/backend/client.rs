//! A client of the backend API, for `ventanilla send`, the demo and the tests.

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("backend API unreachable: {0}")]
    Connection(String),
    #[error("backend API answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("cannot read {path}: {source}")]
    File { path: String, source: std::io::Error },
    #[error("backend API sent invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

#[derive(Clone)]
pub struct ApiClient {
    base: String,
    token: String,
    http: Client<hyper_util::client::legacy::connect::HttpConnector, RequestBody>,
}

/// A request body: whole bytes, or payload files streamed from disk (never held whole).
type RequestBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// A piece of a request body as it streams.
type ContentStream = futures_util::stream::BoxStream<'static, Result<Bytes, std::io::Error>>;

/// One payload to submit: its bytes' file, MIME type and file name.
pub struct Upload<'a> {
    pub path: &'a Path,
    pub mime_type: &'a str,
}

impl ApiClient {
    /// The bearer token this client presents.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The API's base URL (`http://host:port`).
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn new(base: &str, token: &str) -> ApiClient {
        ApiClient {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            http: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<(u16, Bytes), ClientError> {
        self.call_with_headers(method, path, content_type, body).await.map(|(status, _, body)| (status, body))
    }

    /// Any call: the status, headers and body as they came (tests of the API itself).
    pub async fn call_with_headers(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<(u16, hyper::HeaderMap, Bytes), ClientError> {
        self.send(method, path, content_type, Full::new(body).map_err(|never| match never {}).boxed_unsync()).await
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: RequestBody,
    ) -> Result<(u16, hyper::HeaderMap, Bytes), ClientError> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path))
            .header("Authorization", format!("Bearer {}", self.token));
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        let req = req.body(body).map_err(|e| ClientError::Connection(e.to_string()))?;
        let resp = self.http.request(req).await.map_err(|e| ClientError::Connection(e.to_string()))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.map_err(|e| ClientError::Connection(e.to_string()))?.to_bytes();
        Ok((status, headers, body))
    }

    /// Every item of a list (`/api/v1/messages?…`, `/api/v1/inbox?…`), following the
    /// `X-Next-Cursor` of each page.
    pub async fn list_all(&self, path: &str) -> Result<Vec<Value>, ClientError> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let separator = if path.contains('?') { '&' } else { '?' };
            let page_path = match &cursor {
                Some(c) => format!("{path}{separator}limit=1000&cursor={c}"),
                None => format!("{path}{separator}limit=1000"),
            };
            let (status, headers, body) = self.call_with_headers("GET", &page_path, None, Bytes::new()).await?;
            if !(200..300).contains(&status) {
                return Err(ClientError::Status { status, body: String::from_utf8_lossy(&body).into_owned() });
            }
            let page: Vec<Value> = serde_json::from_slice(&body)?;
            items.extend(page);
            match headers.get("x-next-cursor").and_then(|v| v.to_str().ok()) {
                Some(next) => cursor = Some(next.to_owned()),
                None => return Ok(items),
            }
        }
    }

    async fn json(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Value, ClientError> {
        let (status, body) = self.call(method, path, content_type, body).await?;
        if !(200..300).contains(&status) {
            return Err(ClientError::Status { status, body: String::from_utf8_lossy(&body).into_owned() });
        }
        Ok(serde_json::from_slice(&body)?)
    }

    /// Submits a message; returns the message record (with its `message_id`).
    pub async fn submit(&self, metadata: &Value, uploads: &[Upload<'_>]) -> Result<Value, ClientError> {
        // The files are opened first (a missing one is this call's error, before anything is
        // sent), then streamed in order: a gigabyte costs the client no more memory than a
        // kilobyte.
        let mut payloads = Vec::with_capacity(uploads.len());
        for u in uploads {
            let file = tokio::fs::File::open(u.path)
                .await
                .map_err(|source| ClientError::File { path: u.path.display().to_string(), source })?;
            let name = u.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            payloads.push((name, u.mime_type, tokio_util::io::ReaderStream::with_capacity(file, 64 << 10).boxed()));
        }
        self.submit_parts(metadata, payloads).await
    }

    /// [`submit`](Self::submit) with one payload's bytes already in memory (a backend that
    /// built the document itself; the benchmark's load, whose client must not be the one
    /// waiting on its disk).
    pub async fn submit_bytes(
        &self,
        metadata: &Value,
        name: &str,
        mime_type: &str,
        content: Bytes,
    ) -> Result<Value, ClientError> {
        let payload = futures_util::stream::iter([Ok(content)]).boxed();
        self.submit_parts(metadata, vec![(name.to_owned(), mime_type, payload)]).await
    }

    async fn submit_parts(
        &self,
        metadata: &Value,
        payloads: Vec<(String, &str, ContentStream)>,
    ) -> Result<Value, ClientError> {
        let boundary = format!("ventanilla-{}", uuid::Uuid::new_v4().simple());
        let mut head = Vec::new();
        head.extend(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"\r\nContent-Type: application/json\r\n\r\n").bytes());
        head.extend(serde_json::to_vec(metadata)?);
        let mut pieces: Vec<ContentStream> = vec![futures_util::stream::iter([Ok(Bytes::from(head))]).boxed()];
        for (name, mime_type, content) in payloads {
            let name = name.replace('"', "");
            let part_head = format!(
                "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"payload\"; filename=\"{name}\"\r\nContent-Type: {mime_type}\r\n\r\n"
            );
            pieces.push(futures_util::stream::iter([Ok(Bytes::from(part_head))]).boxed());
            pieces.push(content);
        }
        pieces.push(futures_util::stream::iter([Ok(Bytes::from(format!("\r\n--{boundary}--\r\n")))]).boxed());
        let frames = futures_util::stream::iter(pieces).flatten().map(|chunk| chunk.map(hyper::body::Frame::data));
        let content_type = format!("multipart/form-data; boundary={boundary}");
        let (status, _, body) =
            self.send("POST", "/api/v1/messages", Some(&content_type), StreamBody::new(frames).boxed_unsync()).await?;
        if !(200..300).contains(&status) {
            return Err(ClientError::Status { status, body: String::from_utf8_lossy(&body).into_owned() });
        }
        Ok(serde_json::from_slice(&body)?)
    }

    /// GET any API path returning JSON (e.g. `/api/v1/openapi.json`).
    pub async fn get_json(&self, path: &str) -> Result<Value, ClientError> {
        self.json("GET", path, None, Bytes::new()).await
    }

    pub async fn status(&self, message_id: &str) -> Result<Value, ClientError> {
        self.json("GET", &format!("/api/v1/messages/{}", encode(message_id)), None, Bytes::new()).await
    }

    /// Polls a sent message until it is settled (`acknowledged` or `failed`) or `patience`
    /// runs out; returns its last status either way.
    pub async fn wait_settled(&self, message_id: &str, patience: std::time::Duration) -> Result<Value, ClientError> {
        let started = std::time::Instant::now();
        loop {
            let status = self.status(message_id).await?;
            let settled = matches!(status["state"].as_str(), Some("acknowledged" | "failed"));
            if settled || started.elapsed() > patience {
                return Ok(status);
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    pub async fn inbox(&self) -> Result<Value, ClientError> {
        self.json("GET", "/api/v1/inbox", None, Bytes::new()).await
    }

    pub async fn received(&self, message_id: &str) -> Result<Value, ClientError> {
        self.json("GET", &format!("/api/v1/inbox/{}", encode(message_id)), None, Bytes::new()).await
    }

    pub async fn download(&self, message_id: &str, index: usize) -> Result<Bytes, ClientError> {
        let (status, body) = self
            .call("GET", &format!("/api/v1/inbox/{}/payloads/{index}", encode(message_id)), None, Bytes::new())
            .await?;
        if status != 200 {
            return Err(ClientError::Status { status, body: String::from_utf8_lossy(&body).into_owned() });
        }
        Ok(body)
    }

    pub async fn acknowledge(&self, message_id: &str) -> Result<Value, ClientError> {
        self.json("POST", &format!("/api/v1/inbox/{}/ack", encode(message_id)), None, Bytes::new()).await
    }
}

/// Percent-encodes a MessageId for a path segment.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}
