//! The HTTPS server: TLS accept loop, HTTP/1.1 with keep-alive, a per-connection handshake
//! timeout, and the client certificate (if any) handed to the handler as an extension.
//!
//! Shutdown is graceful: when the token is cancelled the listener stops accepting, every open
//! connection finishes the request it is serving and then closes, and [`serve_tls`] returns
//! once they all have (the caller bounds the wait).

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::CertificateDer;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::Service;

/// The verified TLS client certificate chain of the connection, leaf first.
#[derive(Clone, Debug, Default)]
pub struct PeerCertificates(pub Arc<Vec<CertificateDer<'static>>>, pub Option<std::net::SocketAddr>);

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// File descriptors kept free of connections: the store, payload files, the P-Mode watcher.
const DESCRIPTOR_RESERVE: u64 = 64;

/// Who may hold a connection: at most `max` at once (below the descriptor limit) and
/// `per_address` from one IP address. A connection over either is closed at once.
pub struct Gate {
    open: Arc<tokio::sync::Semaphore>,
    per_address: usize,
    by_address: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    pub max: usize,
}

/// A connection's place at the gate, given back when it ends.
pub struct Admitted {
    gate: Arc<Gate>,
    address: std::net::IpAddr,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.gate.by_address.lock()
            && let Some(n) = counts.get_mut(&self.address)
        {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

impl Gate {
    pub fn new(limits: &crate::config::ConnectionLimits) -> Arc<Gate> {
        let max = limits.max.min(descriptor_budget()).max(1);
        if max < limits.max {
            tracing::warn!(
                configured = limits.max,
                max,
                "as4.connections.max lowered to stay below the file-descriptor limit (raise LimitNOFILE)"
            );
        }
        Arc::new(Gate {
            open: Arc::new(tokio::sync::Semaphore::new(max)),
            per_address: limits.per_address.max(1),
            by_address: Default::default(),
            max,
        })
    }

    /// A place for a connection from `address`, or why not.
    pub fn admit(self: &Arc<Gate>, address: std::net::IpAddr) -> Result<Admitted, &'static str> {
        let permit = self.open.clone().try_acquire_owned().map_err(|_| "as4.connections.max reached")?;
        let mut counts = self.by_address.lock().map_err(|_| "gate poisoned")?;
        let n = counts.entry(address).or_default();
        if *n >= self.per_address {
            return Err("as4.connections.per_address reached");
        }
        *n += 1;
        Ok(Admitted { gate: self.clone(), address, _permit: permit })
    }
}

/// Connections this process can hold: its soft descriptor limit less a reserve.
fn descriptor_budget() -> usize {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct it is given.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    if !ok || limit.rlim_cur == libc::RLIM_INFINITY {
        return usize::MAX;
    }
    usize::try_from(limit.rlim_cur.saturating_sub(DESCRIPTOR_RESERVE)).unwrap_or(usize::MAX)
}

/// A request body that must keep coming: no silence longer than `idle`, and after a 10 s
/// grace an average of at least `min_rate` bytes a second. Otherwise it ends with an error
/// (the pipeline then refuses the request and the connection closes), so a client sending a
/// byte a second cannot hold a connection for ever.
pub fn paced<S, E>(
    body: S,
    idle: Duration,
    min_rate: u64,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + Unpin + 'static
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Send + Unpin + 'static,
    E: std::fmt::Display,
{
    use futures_util::StreamExt;
    const GRACE: Duration = Duration::from_secs(10);
    let started = tokio::time::Instant::now();
    Box::pin(futures_util::stream::unfold((body, 0u64, false), move |(mut body, received, failed)| async move {
        if failed {
            return None;
        }
        match tokio::time::timeout(idle, body.next()).await {
            Err(_) => Some((
                Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no body data for {idle:?}"))),
                (body, received, true),
            )),
            Ok(None) => None,
            Ok(Some(Err(e))) => Some((Err(std::io::Error::other(e.to_string())), (body, received, true))),
            Ok(Some(Ok(chunk))) => {
                let received = received + chunk.len() as u64;
                let elapsed = started.elapsed();
                if elapsed > GRACE && received < min_rate.saturating_mul(elapsed.as_secs()) {
                    return Some((
                        Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("body slower than {min_rate} bytes/s ({received} bytes in {elapsed:?})"),
                        )),
                        (body, received, true),
                    ));
                }
                Some((Ok(chunk), (body, received, false)))
            }
        }
    }))
}

pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<super::tls::TlsSource>,
    router: Router,
    limits: crate::config::ConnectionLimits,
    shutdown: CancellationToken,
) {
    let gate = Gate::new(&limits);
    let header_timeout = limits.header_timeout.0;
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (tcp, remote) = tokio::select! {
            _ = shutdown.cancelled() => {
                drop(listener);
                connections.close();
                connections.wait().await;
                return;
            }
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let admitted = match gate.admit(remote.ip()) {
            Ok(a) => a,
            Err(why) => {
                tracing::warn!(%remote, why, "connection refused");
                drop(tcp);
                continue;
            }
        };
        // The configuration in force now (a replaced certificate or CA file takes effect here).
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
        let router = router.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _admitted = admitted;
            let _ = tcp.set_nodelay(true);
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            let peer = PeerCertificates(
                Arc::new(
                    tls.get_ref()
                        .1
                        .peer_certificates()
                        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                        .unwrap_or_default(),
                ),
                Some(remote),
            );
            let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(peer.clone());
                let mut router = router.clone();
                async move { router.call(req.map(axum::body::Body::new)).await }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(tls), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = shutdown.cancelled() => {
                    // Finish the request in flight, then close (no keep-alive past this).
                    conn.as_mut().graceful_shutdown();
                    conn.as_mut().await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
        });
    }
}

/// Plain HTTP for the backend API (bound to loopback by default).
pub async fn serve_plain(listener: TcpListener, router: Router, shutdown: CancellationToken) {
    let _ = axum::serve(listener, router).with_graceful_shutdown(async move { shutdown.cancelled().await }).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn trickle(
        every: Duration,
        chunks: usize,
    ) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + Unpin {
        Box::pin(futures_util::stream::unfold(0, move |n| async move {
            if n == chunks {
                return None;
            }
            tokio::time::sleep(every).await;
            Some((Ok(bytes::Bytes::from_static(b"x")), n + 1))
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_trickles_is_cut_off_after_the_grace() {
        // One byte every 500 ms: under 1 KiB/s; cut off once the 10 s grace is over.
        let mut body = paced(trickle(Duration::from_millis(500), 1000), Duration::from_secs(30), 1024);
        let mut received = 0;
        let error = loop {
            match body.next().await {
                Some(Ok(_)) => received += 1,
                Some(Err(e)) => break e,
                None => panic!("the trickle ran to its end"),
            }
        };
        assert!(error.to_string().contains("slower than 1024 bytes/s"), "{error}");
        assert!((19..=21).contains(&received), "{received} bytes before the cut");
        assert!(body.next().await.is_none(), "nothing after the error");
    }

    #[tokio::test(start_paused = true)]
    async fn silence_inside_a_body_is_cut_off() {
        let mut body = paced(trickle(Duration::from_secs(60), 2), Duration::from_secs(30), 1);
        let error = body.next().await.unwrap().unwrap_err();
        assert!(error.to_string().contains("no body data for 30s"), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_body_passes() {
        let body = paced(trickle(Duration::from_millis(1), 5000), Duration::from_secs(30), 1024);
        assert_eq!(body.filter_map(|c| async move { c.ok() }).count().await, 5000);
    }

    #[test]
    fn the_gate_counts_per_address_and_in_all() {
        let limits = crate::config::ConnectionLimits { max: 3, per_address: 2, ..Default::default() };
        let gate = Gate::new(&limits);
        let a: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let b: std::net::IpAddr = "10.0.0.2".parse().unwrap();
        let first = gate.admit(a).unwrap();
        let _second = gate.admit(a).unwrap();
        assert_eq!(gate.admit(a).err(), Some("as4.connections.per_address reached"));
        let _third = gate.admit(b).unwrap();
        assert_eq!(gate.admit(b).err(), Some("as4.connections.max reached"));
        drop(first);
        assert!(gate.admit(a).is_ok(), "a closed connection gives its place back");
    }
}
