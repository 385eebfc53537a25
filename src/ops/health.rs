//! `/health/live` (the process answers) and `/health/ready` (it can do its job): the store
//! answers, the data folder has room, this party's P-Modes are loaded, its own keys are valid.
//! The JSON body names each component's state, for a load balancer and for a person.

use crate::msh::AccessPoint;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Component {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub components: Vec<Component>,
}

pub async fn readiness(ap: &AccessPoint) -> Readiness {
    let mut components = Vec::new();
    let probe = crate::store::Search { limit: 0, ..Default::default() };
    let store = tokio::time::timeout(std::time::Duration::from_secs(5), ap.store.search(&probe)).await;
    components.push(match store {
        Ok(Ok(_)) => Component { name: "store", ok: true, detail: "answers".into() },
        Ok(Err(e)) => Component { name: "store", ok: false, detail: e.to_string() },
        Err(_) => Component { name: "store", ok: false, detail: "no answer within 5 s".into() },
    });
    let min_free = ap.config.health.min_free_disk.0;
    components.push(match crate::ops::free_disk(&ap.config.data_dir) {
        Ok(free) => Component {
            name: "disk",
            ok: free >= min_free,
            detail: format!(
                "{} MiB free in {} (needs {} MiB)",
                free >> 20,
                ap.config.data_dir.display(),
                min_free >> 20
            ),
        },
        Err(e) => Component { name: "disk", ok: false, detail: format!("{}: {e}", ap.config.data_dir.display()) },
    });
    let links = ap.pmodes().links_of(ap.me()).count();
    let failing: Vec<String> = ap
        .ops
        .pmode_files()
        .into_iter()
        .filter(|(_, s)| s.error.is_some())
        .map(|(f, _)| f.display().to_string())
        .collect();
    components.push(Component {
        name: "pmodes",
        ok: links > 0,
        detail: if failing.is_empty() {
            format!("{links} links loaded")
        } else {
            format!("{links} links loaded; failing to reload (previous version in force): {}", failing.join(", "))
        },
    });
    let own: Vec<_> = crate::ops::inventory::certificates(ap).into_iter().filter(|c| c.role == "own").collect();
    let expired: Vec<String> = own
        .iter()
        .filter(|c| crate::ops::inventory::within(c.days_left, 0.0))
        .map(|c| format!("{} ({})", c.source, c.subject))
        .collect();
    components.push(Component {
        name: "keys",
        ok: expired.is_empty() && (!own.is_empty() || ap.config.allow_insecure_profile),
        detail: if !expired.is_empty() {
            format!("expired: {}", expired.join(", "))
        } else if own.is_empty() {
            "no message keys configured".into()
        } else {
            let soonest = own.iter().map(|c| c.days_left).fold(f64::INFINITY, f64::min);
            format!("{} certificates valid; the first expires in {soonest:.0} days", own.len())
        },
    });
    let ready = components.iter().all(|c| c.ok);
    ap.ops.metrics.ready.set(ready as i64);
    Readiness { ready, components }
}

/// Sets the gauges read at scrape time: messages by state and partner, the oldest waiting
/// outbound message per partner, days to certificate and CRL expiry, the process's memory.
pub async fn refresh_gauges(ap: &AccessPoint) {
    let m = &ap.ops.metrics;
    match ap.store.queue_stats().await {
        Ok(stats) => {
            m.messages.clear();
            m.oldest_waiting_seconds.clear();
            let now = crate::store::now_ms();
            let mut oldest: std::collections::BTreeMap<String, i64> = Default::default();
            for s in &stats {
                m.messages
                    .get_or_create(&crate::ops::metrics::MessageLabels {
                        direction: s.direction.as_str().into(),
                        state: s.state.as_str().into(),
                        partner: s.partner.clone(),
                        leg: s.leg.clone(),
                    })
                    .set(s.count as i64);
                if s.direction == crate::store::Direction::Outbound && !s.state.is_final() {
                    let o = oldest.entry(s.partner.clone()).or_insert(s.oldest_created_ms);
                    *o = (*o).min(s.oldest_created_ms);
                }
            }
            for (partner, created) in oldest {
                m.oldest_waiting_seconds
                    .get_or_create(&crate::ops::metrics::PartnerLabels { partner })
                    .set((now - created).max(0) as f64 / 1000.0);
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot read the queue from the store"),
    }
    m.certificate_days.clear();
    for c in crate::ops::inventory::certificates(ap) {
        m.certificate_days
            .get_or_create(&crate::ops::metrics::CertificateLabels {
                role: c.role.into(),
                source: c.source,
                subject: c.subject,
            })
            .set(c.days_left);
    }
    for part in crate::ops::memory::parts() {
        m.memory
            .get_or_create(&crate::ops::metrics::MemoryLabels { part: part.name.into() })
            .set(i64::try_from(part.bytes).unwrap_or(i64::MAX));
    }
    m.crl_days.clear();
    for crl in crate::ops::inventory::crls(ap) {
        m.crl_days.get_or_create(&crate::ops::metrics::CrlLabels { issuer: crl.issuer }).set(crl.days_left);
    }
}
