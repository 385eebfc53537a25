//! Prometheus metrics (`/metrics`), with the `prometheus-client` crate. Counters and histograms
//! are counted where things happen (the message path); the gauges (queue depth, oldest waiting
//! message, days to certificate and CRL expiry) are read from the store and the trust material
//! when scraped, so they are right on every node of a cluster and after a restart.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartnerLabels {
    pub partner: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReceiptLabels {
    /// `sent` (we receipted an inbound message) or `received` (the partner receipted ours).
    pub side: String,
    pub partner: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `EBMS:0101`, …
    pub code: String,
    /// `sent` (we answered with it) or `received` (the partner answered with it).
    pub side: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    pub direction: String,
    pub state: String,
    pub partner: String,
    pub leg: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    /// `own`, `partner`, `ca`, `tls`.
    pub role: String,
    /// What holds it: the key's profile, the P-Mode, the file.
    pub source: String,
    pub subject: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemoryLabels {
    /// See [`crate::ops::memory::Part`].
    pub part: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CrlLabels {
    pub issuer: String,
}

fn seconds_histogram() -> Histogram {
    // 1 ms to ~65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

fn bytes_histogram() -> Histogram {
    // 1 KiB to 16 GiB.
    Histogram::new(exponential_buckets(1024.0, 4.0, 13))
}

type FloatGauge = Gauge<f64, AtomicU64>;

pub struct Metrics {
    registry: Registry,
    pub receipts: Family<ReceiptLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub retries: Family<PartnerLabels, Counter>,
    pub duplicates: Family<PartnerLabels, Counter>,
    /// SPS certificates received over the IOP with a SHA-1 signature or digest (accepted there,
    /// inside the payload only).
    pub iop_legacy_signatures: Family<PartnerLabels, Counter>,
    pub refused: Family<ErrorLabels, Counter>,
    pub send_seconds: Family<PartnerLabels, Histogram, fn() -> Histogram>,
    pub inbound_seconds: Histogram,
    pub payload_bytes: Family<DirectionLabels, Histogram, fn() -> Histogram>,
    pub pmode_reload_failures: Counter,
    pub alerts_delivery_failures: Counter,
    // Read at scrape time.
    pub messages: Family<MessageLabels, Gauge>,
    pub oldest_waiting_seconds: Family<PartnerLabels, FloatGauge>,
    pub certificate_days: Family<CertificateLabels, FloatGauge>,
    pub crl_days: Family<CrlLabels, FloatGauge>,
    pub memory: Family<MemoryLabels, Gauge>,
    pub ready: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("ventanilla");
        let m = Metrics {
            receipts: Family::default(),
            errors: Family::default(),
            retries: Family::default(),
            duplicates: Family::default(),
            iop_legacy_signatures: Family::default(),
            refused: Family::default(),
            send_seconds: Family::new_with_constructor(seconds_histogram),
            inbound_seconds: seconds_histogram(),
            payload_bytes: Family::new_with_constructor(bytes_histogram),
            pmode_reload_failures: Counter::default(),
            alerts_delivery_failures: Counter::default(),
            messages: Family::default(),
            oldest_waiting_seconds: Family::default(),
            certificate_days: Family::default(),
            crl_days: Family::default(),
            memory: Family::default(),
            ready: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "receipts",
            "AS4 receipts, sent for inbound messages and received for ours",
            m.receipts.clone(),
        );
        registry.register(
            "errors",
            "ebMS errors by code, sent (our refusals) and received (the partner's)",
            m.errors.clone(),
        );
        registry.register("retries", "Sends that got no receipt and will be retried", m.retries.clone());
        registry.register("duplicates", "Inbound duplicates answered with the stored answer", m.duplicates.clone());
        registry.register(
            "iop_legacy_signatures",
            "SPS certificates received over the IOP signed with SHA-1 (accepted inside the payload only)",
            m.iop_legacy_signatures.clone(),
        );
        registry.register(
            "refused_inbound",
            "Inbound messages refused before they were stored (see the console's Refused page)",
            m.refused.clone(),
        );
        registry.register_with_unit(
            "send_round_trip",
            "One send: the POST and the check of the answer",
            prometheus_client::registry::Unit::Seconds,
            m.send_seconds.clone(),
        );
        registry.register_with_unit(
            "inbound_processing",
            "One inbound request, from the first byte to the answer",
            prometheus_client::registry::Unit::Seconds,
            m.inbound_seconds.clone(),
        );
        registry.register_with_unit(
            "payload_size",
            "Payload sizes (original, uncompressed)",
            prometheus_client::registry::Unit::Bytes,
            m.payload_bytes.clone(),
        );
        registry.register("pmode_reload_failures", "P-Mode files that failed to load", m.pmode_reload_failures.clone());
        registry.register(
            "alert_delivery_failures",
            "Alert notices (webhook or e-mail) that could not be delivered",
            m.alerts_delivery_failures.clone(),
        );
        registry.register("messages", "Stored messages by direction, state, partner and leg", m.messages.clone());
        registry.register_with_unit(
            "oldest_waiting_message_age",
            "Age of the oldest outbound message not yet acknowledged or failed, by partner",
            prometheus_client::registry::Unit::Seconds,
            m.oldest_waiting_seconds.clone(),
        );
        registry.register(
            "certificate_expiry_days",
            "Days until a certificate expires (negative: expired)",
            m.certificate_days.clone(),
        );
        registry.register(
            "crl_next_update_days",
            "Days until a CRL's next update (negative: stale)",
            m.crl_days.clone(),
        );
        registry.register_with_unit(
            "memory",
            "The process's memory: resident, heap in use, heap freed but kept by malloc, SQLite's",
            prometheus_client::registry::Unit::Bytes,
            m.memory.clone(),
        );
        registry.register("ready", "1 when the access point is ready (see /health/ready)", m.ready.clone());
        Metrics { registry, ..m }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn error_sent(&self, code: &str) {
        self.errors.get_or_create(&ErrorLabels { code: code.to_owned(), side: "sent".into() }).inc();
    }

    pub fn error_received(&self, code: &str) {
        self.errors.get_or_create(&ErrorLabels { code: code.to_owned(), side: "received".into() }).inc();
    }

    pub fn receipt(&self, side: &str, partner: &str) {
        self.receipts.get_or_create(&ReceiptLabels { side: side.to_owned(), partner: partner.to_owned() }).inc();
    }

    pub fn payload(&self, direction: crate::store::Direction, bytes: u64) {
        self.payload_bytes
            .get_or_create(&DirectionLabels { direction: direction.as_str().to_owned() })
            .observe(bytes as f64);
    }
}
