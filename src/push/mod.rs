//! Push delivery, for national systems that do not poll: received messages go to a webhook or
//! a folder (`[[delivery]]`), and documents dropped into a folder are submitted
//! (`[submit_folder]`). At least once: a delivery is queued in the store (crash-safe, derived
//! from the inbox), leased, attempted, and only then recorded; a message is taken out of the
//! inbox (`backend_acknowledged`) once its delivery succeeded. A folder receives each message
//! once (written atomically under its MessageId; an existing one is not written again).
//!
//! # Cancellation
//! The worker is a task of the node; each attempt runs to its end inside it (a stop waits up
//! to the grace period). A stop or crash between writing a folder (or a 2xx) and recording it
//! leaves the delivery leased: it is tried again when the lease expires, and a folder already
//! written counts as delivered.

pub mod folder;
pub mod settings;
pub mod webhook;

use crate::msh::AccessPoint;
use crate::store::{DeliveryOutcome, Direction, Happening, State, StoreError, now_ms};
use settings::DeliveryRule;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// How long a node owns a delivery it is attempting.
const LEASE_MS: i64 = 5 * 60 * 1000;
/// Deliveries attempted at once per rule.
const BATCH: usize = 16;

pub async fn run(ap: Arc<AccessPoint>, shutdown: CancellationToken) {
    if ap.config.deliveries.is_empty() && ap.config.submit_folder.is_none() {
        return;
    }
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    let mut last_scan = std::time::Instant::now() - std::time::Duration::from_secs(3600);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for rule in &ap.config.deliveries {
            deliver_due(&ap, rule).await;
        }
        if let Some(folder) = &ap.config.submit_folder
            && last_scan.elapsed() >= folder.interval.0
        {
            last_scan = std::time::Instant::now();
            folder::submit_dropped(&ap, folder).await;
        }
    }
}

/// One round of a rule: queue what arrived, attempt what is due.
pub async fn deliver_due(ap: &Arc<AccessPoint>, rule: &DeliveryRule) {
    let now = now_ms();
    if let Err(e) = ap.store.enqueue_deliveries(&rule.name, rule.pmode.as_deref(), rule.leg.as_deref(), now, 1000).await
    {
        tracing::error!(delivery = %rule.name, error = %e, "cannot queue deliveries");
        return;
    }
    let due = match ap.store.claim_deliveries(&rule.name, now, now + LEASE_MS, BATCH).await {
        Ok(due) => due,
        Err(e) => {
            tracing::error!(delivery = %rule.name, error = %e, "cannot lease deliveries");
            return;
        }
    };
    let attempts = due.into_iter().map(|(row, message_id, attempts)| async move {
        let span = tracing::info_span!("delivery", message_id = %message_id, target = %rule.name);
        let _enter = span.enter();
        let outcome = attempt(ap, rule, &message_id).await;
        let recorded = match outcome {
            Ok(()) => {
                // Out of the inbox first: a crash before the delivery is recorded means one
                // more delivery, never a lost one.
                match ap.store.get(Direction::Inbound, &message_id).await {
                    Ok(record) => match ap
                        .store
                        .transition(record.row, State::Delivered, Happening::BackendAcknowledged, None)
                        .await
                    {
                        Ok(_) | Err(StoreError::Conflict { .. }) | Err(StoreError::Illegal(_)) => {}
                        Err(e) => tracing::warn!(error = %e, "delivered, but the inbox still shows it"),
                    },
                    Err(e) => tracing::warn!(error = %e, "delivered, but the message cannot be read"),
                }
                tracing::info!(attempt = attempts + 1, "delivered to the national system");
                ap.store.finish_delivery(row, &rule.name, DeliveryOutcome::Delivered).await
            }
            Err(error) => {
                let outcome = match rule.retry.get(attempts as usize) {
                    Some(wait) => {
                        tracing::warn!(%error, retry_in = ?wait.0, "delivery failed; will retry");
                        DeliveryOutcome::Retry { at_ms: now_ms() + wait.0.as_millis() as i64, error }
                    }
                    None => {
                        tracing::error!(%error, attempts = attempts + 1, "delivery failed for good: dead until an operator retries it");
                        DeliveryOutcome::Dead { error }
                    }
                };
                ap.store.finish_delivery(row, &rule.name, outcome).await
            }
        };
        if let Err(e) = recorded {
            tracing::error!(error = %e, "cannot record the delivery; it is tried again after its lease");
        }
    });
    futures_util::future::join_all(attempts).await;
}

async fn attempt(ap: &Arc<AccessPoint>, rule: &DeliveryRule, message_id: &str) -> Result<(), String> {
    let record = ap.store.get(Direction::Inbound, message_id).await.map_err(|e| e.to_string())?;
    if let Some(webhook) = &rule.webhook {
        return webhook::post(webhook, &record).await;
    }
    if let Some(dir) = &rule.folder {
        let (dir, record) = (dir.clone(), record);
        return crate::blocking::spawn(move || folder::write_received(&dir, &record))
            .await
            .map_err(|e| format!("folder task failed: {e}"))?;
    }
    Err("the rule has no target".into())
}
