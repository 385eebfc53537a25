//! Retention: removes message content, then message records, per state and age, in batches
//! that keep up with the incoming rate, so the store does not grow without bound. Records
//! are never removed before the longest duplicate window of the loaded P-Modes: a duplicate
//! must still find its original.

use super::AccessPoint;
use crate::store::now_ms;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What one pass removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Purged {
    pub contents: usize,
    pub messages: usize,
    pub files: usize,
}

/// One retention pass over every configured state, batch after batch until none is left.
pub async fn pass(ap: &AccessPoint) -> Purged {
    let mut purged = Purged::default();
    let retention = &ap.config.retention;
    let batch = retention.batch.max(1);
    let window = ap.pmodes().links().iter().map(|l| l.duplicate_window).max().unwrap_or_default();
    for (&state, rule) in &retention.states {
        if let Some(crate::config::Interval(age)) = rule.content {
            let before = now_ms() - age.as_millis() as i64;
            loop {
                match ap.store.purge_content(state, before, batch).await {
                    Ok((n, files)) => {
                        purged.files += remove(files).await;
                        purged.contents += n;
                        if n < batch {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "retention: cannot purge content");
                        break;
                    }
                }
            }
        }
        if let Some(crate::config::Interval(age)) = rule.metadata {
            // Each link's own duplicate window; messages of links no longer loaded wait for
            // the longest window of all.
            let mut scopes: Vec<(Option<String>, std::time::Duration)> =
                ap.pmodes().links().iter().map(|l| (Some(l.id.clone()), l.duplicate_window)).collect();
            scopes.push((None, window));
            for (pmode, link_window) in scopes {
                let before = now_ms() - age.max(link_window).as_millis() as i64;
                loop {
                    match ap.store.purge_messages(state, pmode.as_deref(), before, batch).await {
                        Ok((n, files)) => {
                            purged.files += remove(files).await;
                            purged.messages += n;
                            if n < batch {
                                break;
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "retention: cannot purge messages");
                            break;
                        }
                    }
                }
            }
        }
    }
    if purged != Purged::default() {
        tracing::info!(contents = purged.contents, messages = purged.messages, files = purged.files, "retention pass");
    }
    purged
}

async fn remove(files: Vec<std::path::PathBuf>) -> usize {
    let mut removed = 0;
    for f in files {
        if tokio::fs::remove_file(&f).await.is_ok() {
            removed += 1;
        }
        // An outbound row names the file as sent; the submitted original beside it goes too.
        let original = crate::store::files::plaintext_of(&f);
        if original != f && tokio::fs::remove_file(&original).await.is_ok() {
            removed += 1;
        }
        // A message's own folder (the layout before flat files) goes once empty; `inbound/`
        // and `outbound/` stay.
        if let Some(dir) = f.parent()
            && dir.file_name().is_some_and(crate::store::files::is_message_folder)
        {
            let _ = tokio::fs::remove_dir(dir).await;
        }
    }
    removed
}

pub async fn run(ap: Arc<AccessPoint>, shutdown: CancellationToken) {
    if ap.config.retention.states.is_empty() {
        return;
    }
    let interval = ap.config.retention.interval.0;
    // The first pass one interval after start, not at start.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => { pass(&ap).await; }
        }
    }
}
