//! The message service handler (runtime): the outbound and inbound pipelines as named steps.

pub mod connection_test;
pub mod documents;
pub mod inbound;
pub mod iop;
pub mod outbound;
pub mod pmode_watch;
pub mod pull;
pub mod retention;
pub mod security;

use crate::config::Config;
use crate::pmode::PmodeSet;
use crate::store::MessageStore;
use crate::transport::As4Client;
use std::sync::{Arc, RwLock};
use tokio::sync::Notify;

/// One running access point: its configuration, store, P-Modes and HTTPS client.
pub struct AccessPoint {
    pub config: Config,
    pub store: Arc<dyn MessageStore>,
    pmodes: RwLock<Arc<PmodeSet>>,
    pub client: As4Client,
    /// Wakes the sender when a message may be due (submitted without a send permit, queued
    /// for a resend).
    pub outbox: Notify,
    /// Wakes the sender when a send ends and frees its permit.
    pub(crate) permit_freed: Notify,
    pub security: Arc<security::SecurityContext>,
    /// The payload handlers (one per document type).
    pub documents: Arc<crate::payload::Registry>,
    /// The owned tasks of the message path (inbound pipelines, submissions, sends): a client
    /// going away never cancels them; a graceful stop waits for them, up to its deadline.
    pub tasks: tokio_util::task::TaskTracker,
    /// Metrics, partner contact and P-Mode file status (see [`crate::ops`]).
    pub ops: crate::ops::Operations,
    /// Makes payload files durable before their rows commit, sharing syncs between messages.
    pub file_sync: Arc<crate::store::durability::FileSync>,
    /// The running sender's permits (`send_concurrency`), while it runs: a submission that
    /// finds one free is claimed in its own commit and sent at once (see
    /// [`outbound::submit`]).
    pub(crate) send_permits: std::sync::Mutex<Option<Arc<tokio::sync::Semaphore>>>,
}

impl AccessPoint {
    pub fn new(
        config: Config,
        store: Arc<dyn MessageStore>,
        pmodes: PmodeSet,
        security: security::SecurityContext,
    ) -> Arc<AccessPoint> {
        Arc::new(AccessPoint {
            store,
            pmodes: RwLock::new(Arc::new(pmodes)),
            client: As4Client::default(),
            outbox: Notify::new(),
            permit_freed: Notify::new(),
            security: Arc::new(security),
            documents: Arc::new(crate::payload::Registry::standard()),
            tasks: tokio_util::task::TaskTracker::new(),
            ops: crate::ops::Operations::default(),
            file_sync: Arc::new(crate::store::durability::FileSync::new(&config.data_dir, config.store.file_sync)),
            send_permits: std::sync::Mutex::new(None),
            config,
        })
    }

    /// The P-Modes in force now (a cheap snapshot; reloads swap the whole set).
    pub fn pmodes(&self) -> Arc<PmodeSet> {
        self.pmodes.read().map(|p| p.clone()).unwrap_or_default()
    }

    pub fn replace_pmodes(&self, set: PmodeSet) {
        if let Ok(mut guard) = self.pmodes.write() {
            *guard = Arc::new(set);
        }
    }

    pub fn me(&self) -> &str {
        &self.config.party_id
    }

    /// The partner's endpoint: the config's override, else the P-Mode's.
    pub fn endpoint_of<'a>(&'a self, party: &'a crate::pmode::Party) -> &'a str {
        self.config.endpoints.get(&party.id).map(String::as_str).unwrap_or(&party.endpoint)
    }

    /// This node's staging folder (nodes sharing a data folder each have their own).
    /// The TLS identity for requests on `link`: our trust store, and our certificate when
    /// the link requires client authentication.
    pub fn tls_identity(&self, link: &crate::pmode::Link) -> crate::transport::TlsIdentity {
        crate::transport::TlsIdentity {
            trust: self.config.as4.trust.clone(),
            client_cert: link
                .tls_client_auth
                .then(|| (self.config.as4.tls_cert.clone(), self.config.as4.tls_key.clone())),
        }
    }

    /// A free send permit of the running sender, if it runs and has one.
    pub(crate) fn free_send_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let permits = self.send_permits.lock().ok()?.clone()?;
        permits.try_acquire_owned().ok()
    }

    pub fn tmp_dir(&self) -> std::path::PathBuf {
        self.config.data_dir.join("tmp").join(&self.config.store.node)
    }
}
