//! A small blocking HTTP/1.0 client for OCSP responders (RFC 6960 Appendix A: POST of
//! `application/ocsp-request` over plain HTTP), with timeouts and a size bound. It runs on
//! the blocking pool, where signatures are verified.

use crate::pki::ocsp::OcspTransport;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

pub struct HttpOcsp {
    pub timeout: Duration,
}

const MAX_RESPONSE: u64 = 1 << 20;

impl OcspTransport for HttpOcsp {
    fn post(&self, url: &str, request: &[u8]) -> Result<Vec<u8>, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("bad OCSP URL {url}: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!("only http:// OCSP responders are supported, not {url}"));
        }
        let host = uri.host().ok_or("OCSP URL without host")?;
        let port = uri.port_u16().unwrap_or(80);
        let addr =
            (host, port).to_socket_addrs().map_err(|e| e.to_string())?.next().ok_or("OCSP host does not resolve")?;
        let mut stream = TcpStream::connect_timeout(&addr, self.timeout).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(self.timeout)).map_err(|e| e.to_string())?;
        stream.set_write_timeout(Some(self.timeout)).map_err(|e| e.to_string())?;
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let head = format!(
            "POST {path} HTTP/1.0\r\nHost: {host}\r\nContent-Type: application/ocsp-request\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            request.len()
        );
        stream.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
        stream.write_all(request).map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        stream.take(MAX_RESPONSE).read_to_end(&mut response).map_err(|e| e.to_string())?;
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or("malformed HTTP response from the OCSP responder")?;
        let status_line = String::from_utf8_lossy(&response[..split]).lines().next().unwrap_or_default().to_owned();
        if status_line.split_whitespace().nth(1).is_none_or(|c| c != "200") {
            return Err(format!("OCSP responder answered '{status_line}'"));
        }
        Ok(response[split + 4..].to_vec())
    }
}
