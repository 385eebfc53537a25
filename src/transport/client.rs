//! The HTTPS client: one pooled hyper client per TLS configuration (keep-alive reuse),
//! streaming request bodies, bounded response bodies, timeouts.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;
type HttpsClient =
    Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, StreamBody<FrameStream>>;
type FrameStream = Pin<Box<dyn Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot connect or send: {0}")]
    Connection(String),
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("response body exceeds {0} bytes")]
    ResponseTooLarge(usize),
    #[error("TLS: {0}")]
    Tls(#[from] super::tls::TlsError),
}

pub struct Response {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
}

/// A response whose body streams (a pulled message): the reader bounds it.
pub struct StreamedResponse {
    pub status: u16,
    pub content_type: Option<String>,
    /// Ends with an error if the exchange's deadline passes while it is still coming.
    pub body: BodyStream,
}

/// Which TLS identity a request uses: the trust store, plus a client certificate when the
/// link requires client authentication.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TlsIdentity {
    pub trust: PathBuf,
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

#[derive(Default, Clone)]
pub struct As4Client {
    /// One pooled client per TLS identity, with the stamps of its files when it was made: a
    /// replaced trust file (a partner's new CA) or client certificate makes a new one.
    clients: Arc<Mutex<HashMap<TlsIdentity, (super::tls::FileStamps, HttpsClient)>>>,
}

const MAX_RESPONSE: usize = 4 << 20;

impl As4Client {
    fn client(&self, identity: &TlsIdentity) -> Result<HttpsClient, SendError> {
        let mut clients = self.clients.lock().map_err(|_| SendError::Connection("client pool poisoned".into()))?;
        let mut files = vec![identity.trust.clone()];
        if let Some((cert, key)) = &identity.client_cert {
            files.extend([cert.clone(), key.clone()]);
        }
        let stamps = super::tls::file_stamps(&files);
        if let Some((made_with, c)) = clients.get(identity)
            && *made_with == stamps
        {
            return Ok(c.clone());
        }
        let tls = super::tls::client_config(
            &identity.trust,
            identity.client_cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        )?;
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        http.set_nodelay(true);
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(32)
            .build(connector);
        clients.insert(identity.clone(), (stamps, client.clone()));
        Ok(client)
    }

    /// POSTs a streamed body and reads the (bounded) response.
    pub async fn post(
        &self,
        identity: &TlsIdentity,
        url: &str,
        content_type: &str,
        body: BodyStream,
        timeout: Duration,
    ) -> Result<Response, SendError> {
        self.post_limited(identity, url, content_type, body, timeout, MAX_RESPONSE).await
    }

    /// [`As4Client::post`] with a given bound on the response.
    pub async fn post_limited(
        &self,
        identity: &TlsIdentity,
        url: &str,
        content_type: &str,
        body: BodyStream,
        timeout: Duration,
        max_response: usize,
    ) -> Result<Response, SendError> {
        let response = self.post_streaming(identity, url, content_type, body, timeout).await?;
        collect(response, timeout, max_response).await
    }

    /// POSTs a SOAP 1.1 request (the legacy IOP service): `text/xml` with its SOAPAction.
    pub async fn post_soap11(
        &self,
        identity: &TlsIdentity,
        url: &str,
        soap_action: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Response, SendError> {
        let action = format!("\"{soap_action}\"");
        // A length, not chunks: older SOAP stacks expect one.
        let length = body.len().to_string();
        let headers = [
            ("content-type", "text/xml; charset=utf-8"),
            ("SOAPAction", action.as_str()),
            ("content-length", length.as_str()),
        ];
        let body: BodyStream = Box::pin(futures_util::stream::once(async move { Ok(body) }));
        let response = self.post_streaming_with(identity, url, &headers, body, timeout).await?;
        collect(response, timeout, MAX_RESPONSE).await
    }

    /// POSTs a streamed body; the response body streams too, all of it within `timeout` of
    /// the request (a pulled message goes through the inbound pipeline as it arrives, never
    /// held whole).
    pub async fn post_streaming(
        &self,
        identity: &TlsIdentity,
        url: &str,
        content_type: &str,
        body: BodyStream,
        timeout: Duration,
    ) -> Result<StreamedResponse, SendError> {
        let headers = [("content-type", content_type), ("MIME-Version", "1.0")];
        self.post_streaming_with(identity, url, &headers, body, timeout).await
    }

    async fn post_streaming_with(
        &self,
        identity: &TlsIdentity,
        url: &str,
        headers: &[(&str, &str)],
        body: BodyStream,
        timeout: Duration,
    ) -> Result<StreamedResponse, SendError> {
        let client = self.client(identity)?;
        let frames: FrameStream = Box::pin(body.map(|chunk| chunk.map(Frame::data)));
        let mut request = hyper::Request::post(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(StreamBody::new(frames)).map_err(|e| SendError::Connection(e.to_string()))?;
        let deadline = tokio::time::Instant::now() + timeout;
        let response = tokio::time::timeout_at(deadline, client.request(request))
            .await
            .map_err(|_| SendError::Timeout(timeout))?
            .map_err(|e| SendError::Connection(error_chain(&e)))?;
        let status = response.status().as_u16();
        let content_type =
            response.headers().get(hyper::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let data = http_body_util::BodyStream::new(response.into_body()).filter_map(|frame| async move {
            match frame {
                Ok(frame) => frame.into_data().ok().map(Ok),
                Err(e) => Some(Err(std::io::Error::other(e))),
            }
        });
        let body = futures_util::stream::unfold((Box::pin(data), false), move |(mut data, done)| async move {
            if done {
                return None;
            }
            match tokio::time::timeout_at(deadline, data.next()).await {
                Ok(Some(item)) => Some((item, (data, false))),
                Ok(None) => None,
                Err(_) => Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("response body not complete within {timeout:?}"),
                    )),
                    (data, true),
                )),
            }
        });
        Ok(StreamedResponse { status, content_type, body: Box::pin(body) })
    }
}

/// Reads a streamed response whole, up to `max_response` bytes.
async fn collect(response: StreamedResponse, timeout: Duration, max_response: usize) -> Result<Response, SendError> {
    let mut body = response.body;
    let mut collected = bytes::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| match e.kind() {
            std::io::ErrorKind::TimedOut => SendError::Timeout(timeout),
            _ => SendError::Connection(e.to_string()),
        })?;
        if collected.len() + chunk.len() > max_response {
            return Err(SendError::ResponseTooLarge(max_response));
        }
        collected.extend_from_slice(&chunk);
    }
    Ok(Response { status: response.status, content_type: response.content_type, body: collected.freeze() })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A client for the national system's and the operators' own services (alert and delivery
/// webhooks): HTTPS verified against the system's CA certificates, or plain HTTP.
fn service_client<B>()
-> Result<Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, B>, String>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector =
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// POSTs a small JSON body to an operator's service (an alert webhook); returns the status.
pub async fn post_json(url: &str, body: &[u8], headers: &[(&str, &str)], timeout: Duration) -> Result<u16, String> {
    let client = service_client::<http_body_util::Full<Bytes>>()?;
    let mut request = hyper::Request::post(url).header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(http_body_util::Full::new(Bytes::copy_from_slice(body))).map_err(|e| e.to_string())?;
    match tokio::time::timeout(timeout, client.request(request)).await {
        Ok(Ok(response)) => Ok(response.status().as_u16()),
        Ok(Err(e)) => Err(format!("cannot POST to {url}: {e}")),
        Err(_) => Err(format!("no answer from {url} within {timeout:?}")),
    }
}

/// POSTs a streamed body to the national system's service (a delivery webhook); returns the
/// status and the start of the answer.
pub async fn post_stream(
    url: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: BodyStream,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let client = service_client::<StreamBody<FrameStream>>()?;
    let mut request = hyper::Request::post(url).header("content-type", content_type);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let frames: FrameStream = Box::pin(body.map(|chunk| chunk.map(Frame::data)));
    let request = request.body(StreamBody::new(frames)).map_err(|e| e.to_string())?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| format!("cannot POST to {url}: {e}"))?;
        let status = response.status().as_u16();
        let mut answer = Vec::new();
        let mut body = response.into_body();
        while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
            if let Ok(data) = frame.map_err(|e| e.to_string())?.into_data() {
                answer.extend_from_slice(&data[..data.len().min(1024usize.saturating_sub(answer.len()))]);
            }
            if answer.len() >= 1024 {
                break;
            }
        }
        Ok((status, String::from_utf8_lossy(&answer).into_owned()))
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| format!("no answer from {url} within {timeout:?}"))?
}
