//! Shared helpers: access points on loopback, raw AS4 posts, user messages to tamper with.
#![allow(dead_code, unused_imports)]

pub mod postgres;

use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::time::Duration;
use ventanilla::demo::{Options, Running, launch_with};
use ventanilla::transport::{As4Client, TlsIdentity};

pub use ventanilla_testkit::wire::{
    BOUNDARY, PARTY_TYPE, error_code, is_receipt_for, multipart, multipart_content_type, user_message,
};

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Running>,
    stopped: Vec<(String, String, ventanilla::backend::client::ApiClient)>,
}

impl Cluster {
    /// Starts access points for the given (code, party) pairs on a copy of the shipped
    /// P-Modes switched to the unsigned test profile (for raw, hand-made messages).
    pub async fn start(countries: &[(&str, &str)]) -> Cluster {
        Cluster::start_with(countries, true).await
    }

    /// The same with the shipped security profiles (edelivery-1.15 and 2.0).
    pub async fn start_secure(countries: &[(&str, &str)]) -> Cluster {
        Cluster::start_with(countries, false).await
    }

    /// Access points with the given options (shipped P-Modes, `options.pmode_patches` applied).
    pub async fn start_options(countries: &[(&str, &str)], options: Options) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let nodes = launch_with(dir.path(), &repo().join("pmodes"), countries, &options).await.unwrap();
        Cluster { dir, nodes, stopped: Vec::new() }
    }

    async fn start_with(countries: &[(&str, &str)], insecure: bool) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let options = Options { max_message: "8MiB".into(), insecure, ..Options::default() };
        let nodes = launch_with(dir.path(), &repo().join("pmodes"), countries, &options).await.unwrap();
        Cluster { dir, nodes, stopped: Vec::new() }
    }

    pub fn node(&self, code: &str) -> &Running {
        self.nodes.iter().find(|n| n.code == code).unwrap()
    }

    pub fn pmodes_dir(&self) -> PathBuf {
        self.dir.path().join("pmodes")
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("certs/demo/ca.pem")
    }

    /// POSTs raw bytes to a node's AS4 endpoint over HTTPS.
    pub async fn post_raw(&self, code: &str, content_type: &str, body: Vec<u8>) -> (u16, String) {
        let client = As4Client::default();
        let identity = TlsIdentity { trust: self.ca(), client_cert: None };
        let url = format!("https://127.0.0.1:{}/as4", self.node(code).node.as4_addr.port());
        let stream: ventanilla::transport::BodyStream = Box::pin(futures_util::stream::iter([Ok(Bytes::from(body))]));
        let response = client.post(&identity, &url, content_type, stream, Duration::from_secs(30)).await.unwrap();
        (response.status, String::from_utf8_lossy(&response.body).into_owned())
    }

    /// Stops the node `code` (as a crash or an outage would, from the partner's view) and
    /// returns its config, to start it again later with [`Cluster::restart`].
    pub async fn take_down(
        &mut self,
        code: &str,
    ) -> (ventanilla::config::Config, std::net::SocketAddr, std::net::SocketAddr) {
        let index = self.nodes.iter().position(|n| n.code == code).unwrap();
        let running = self.nodes.remove(index);
        let saved = (running.node.ap.config.clone(), running.node.as4_addr, running.node.backend_addr);
        self.stopped.push((running.code.clone(), running.party.clone(), running.api.clone()));
        running.node.stop().await;
        saved
    }

    /// Starts a node again on its addresses, with its config changed by `change`.
    pub async fn restart(
        &mut self,
        code: &str,
        saved: (ventanilla::config::Config, std::net::SocketAddr, std::net::SocketAddr),
        change: impl FnOnce(&mut ventanilla::config::Config),
    ) {
        let (mut config, as4_addr, backend_addr) = saved;
        change(&mut config);
        let mut as4 = None;
        for _ in 0..50 {
            match tokio::net::TcpListener::bind(as4_addr).await {
                Ok(l) => {
                    as4 = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let backend = tokio::net::TcpListener::bind(backend_addr).await.unwrap();
        let node = ventanilla::node::Node::start_with(config, as4.expect("the AS4 port is free again"), backend)
            .await
            .unwrap();
        let index = self.stopped.iter().position(|(c, _, _)| c == code).unwrap();
        let (code, party, api) = self.stopped.remove(index);
        self.nodes.push(Running { code, party, node, api });
    }

    pub async fn stop(self) {
        for n in self.nodes {
            n.node.stop().await;
        }
    }
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn sample(rel: &str) -> PathBuf {
    repo().join("samples").join(rel)
}

/// Waits until a started `ventanilla serve` answers on its backend API.
pub async fn wait_until_up(api: &ventanilla::backend::client::ApiClient) {
    for _ in 0..300 {
        if api.get_json("/api/v1/openapi.json").await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the access point did not come up");
}

pub async fn inbox_len(node: &Running) -> usize {
    node.api.inbox().await.unwrap().as_array().unwrap().len()
}

pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// A valid ePhyto from `from` to `to` (country codes), as the leg's handler requires.
pub fn ephyto(from: &str, to: &str) -> Vec<u8> {
    ventanilla::payload::ephyto::testing::certificate(
        from,
        to,
        &format!("{from}-2026-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
    )
    .into_bytes()
}

/// A valid, signed stage 4 certificate of origin from `from` to `to`.
pub fn cod(from: &str, to: &str) -> Vec<u8> {
    let keys = |name: &str| {
        let dir = repo().join("samples/origin/test-keys");
        let key =
            openssl::pkey::PKey::private_key_from_pem(&std::fs::read(dir.join(format!("{name}.key.pem"))).unwrap())
                .unwrap();
        let cert =
            openssl::x509::X509::from_pem(&std::fs::read(dir.join(format!("{name}.cert.pem"))).unwrap()).unwrap();
        (key, cert)
    };
    let (ek, ec) = keys("exporter");
    let (ok, oc) = keys("official");
    let template = std::fs::read_to_string(sample("origin/cod_v1.8.3_A35_CL-AR_stage4_complete.xml")).unwrap();
    ventanilla::payload::origin::testing::cod(
        &template,
        from,
        to,
        &format!("{from}012A35260000000100"),
        (&ek, &ec),
        (&ok, &oc),
    )
    .unwrap()
    .into_bytes()
}

/// Writes bytes to a file in `dir` and returns its path.
pub fn file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}
