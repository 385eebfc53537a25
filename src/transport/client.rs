//! The HTTPS client: one pooled hyper client per TLS configuration (keep-alive reuse),
//! streaming request bodies, bounded response bodies, timeouts.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body_util::{BodyExt, StreamBody};
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

/// Which TLS identity a request uses: the trust store, plus a client certificate when the
/// link requires client authentication.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TlsIdentity {
    pub trust: PathBuf,
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

#[derive(Default, Clone)]
pub struct As4Client {
    clients: Arc<Mutex<HashMap<TlsIdentity, HttpsClient>>>,
}

const MAX_RESPONSE: usize = 4 << 20;

impl As4Client {
    fn client(&self, identity: &TlsIdentity) -> Result<HttpsClient, SendError> {
        let mut clients = self.clients.lock().map_err(|_| SendError::Connection("client pool poisoned".into()))?;
        if let Some(c) = clients.get(identity) {
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
        clients.insert(identity.clone(), client.clone());
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

    /// [`As4Client::post`] with a given bound on the response (a pulled message).
    pub async fn post_limited(
        &self,
        identity: &TlsIdentity,
        url: &str,
        content_type: &str,
        body: BodyStream,
        timeout: Duration,
        max_response: usize,
    ) -> Result<Response, SendError> {
        let client = self.client(identity)?;
        let frames: FrameStream = Box::pin(body.map(|chunk| chunk.map(Frame::data)));
        let request = hyper::Request::post(url)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .header("MIME-Version", "1.0")
            .body(StreamBody::new(frames))
            .map_err(|e| SendError::Connection(e.to_string()))?;
        let exchange = async {
            let response = client.request(request).await.map_err(|e| SendError::Connection(error_chain(&e)))?;
            let status = response.status().as_u16();
            let content_type =
                response.headers().get(hyper::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let limited = http_body_util::Limited::new(response.into_body(), max_response);
            let body = limited
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        SendError::ResponseTooLarge(max_response)
                    } else {
                        SendError::Connection(e.to_string())
                    }
                })?
                .to_bytes();
            Ok(Response { status, content_type, body })
        };
        tokio::time::timeout(timeout, exchange).await.map_err(|_| SendError::Timeout(timeout))?
    }
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
