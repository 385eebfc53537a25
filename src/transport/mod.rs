//! HTTPS transport (runtime): hyper 1 + tokio-rustls with the ring provider.

pub mod client;
pub mod ocsp_http;
pub mod server;
pub mod tls;

pub use client::{As4Client, BodyStream, Response, SendError, TlsIdentity};
pub use server::{PeerCertificates, serve_plain, serve_tls};
