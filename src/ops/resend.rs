//! An operator's resend of a failed outbound message, in one of two ways:
//! - **identical**: the same envelope (same MessageId, signature and ciphertext) goes out again
//!   with a fresh retry schedule: the `resent_by_operator` transition, failed → submitted (or
//!   pullable on a pull leg). Right when the partner was down or refused for a reason now fixed
//!   on its side; the partner's duplicate detection makes it safe.
//! - **new message id**: the original payloads are submitted again as a new message, signed and
//!   encrypted with the keys in force now. Right when the partner's certificate changed (the
//!   old ciphertext can no longer be read) or our own key was replaced. The old message stays
//!   failed, with a note naming the new one.
//!
//! Both run as owned tasks (on `AccessPoint::tasks`): a console request that goes away does not
//! cut a resubmission between its commit and its note.

use crate::msh::AccessPoint;
use crate::msh::outbound::{Submission, SubmitError, submit};
use crate::store::files::MessageFiles;
use crate::store::{Direction, Happening, State, StoreError, StoredPayload, now_ms};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResendMode {
    Identical,
    NewMessageId,
}

#[derive(Debug, thiserror::Error)]
pub enum ResendError {
    #[error("message {0} is {1}; only a failed outbound message can be resent")]
    NotFailed(String, &'static str),
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Resends `message_id`; returns the MessageId that is now on its way.
pub async fn resend(
    ap: &Arc<AccessPoint>,
    actor: &str,
    message_id: &str,
    mode: ResendMode,
) -> Result<String, ResendError> {
    let (ap2, actor, message_id) = (ap.clone(), actor.to_owned(), message_id.to_owned());
    ap.tasks
        .spawn(async move { resend_owned(&ap2, &actor, &message_id, mode).await })
        .await
        .map_err(|e| ResendError::Refused(format!("resend task failed: {e}")))?
}

async fn resend_owned(
    ap: &Arc<AccessPoint>,
    actor: &str,
    message_id: &str,
    mode: ResendMode,
) -> Result<String, ResendError> {
    let record = ap.store.get(Direction::Outbound, message_id).await?;
    if record.state != State::Failed {
        return Err(ResendError::NotFailed(message_id.to_owned(), record.state.as_str()));
    }
    match mode {
        ResendMode::Identical => {
            let pull = ap
                .pmodes()
                .links()
                .iter()
                .find(|l| l.id == record.pmode)
                .and_then(|l| l.leg(&record.leg).map(|leg| leg.pull))
                .ok_or_else(|| {
                    ResendError::Refused(format!("P-Mode {} (leg {}) is no longer loaded", record.pmode, record.leg))
                })?;
            if record.payloads.iter().any(|p| !p.path.exists()) {
                return Err(ResendError::Refused(format!(
                    "the payloads of {message_id} were removed (retention); it cannot be resent"
                )));
            }
            let event = Happening::ResentByOperator { by: actor.to_owned(), pull, at: now_ms() };
            ap.store.transition(record.row, State::Failed, event, None).await?;
            ap.outbox.notify_one();
            crate::ops::users::audit(ap.store.as_ref(), actor, "resend", message_id, "identical message").await;
            tracing::info!(message_id, actor, "resent by an operator (identical message)");
            Ok(message_id.to_owned())
        }
        ResendMode::NewMessageId => {
            let envelope =
                crate::ebms::read::read_envelope(&record.envelope, ap.config.envelope_limits()).map_err(|e| {
                    ResendError::Refused(format!("the stored envelope of {message_id} cannot be read: {e:?}"))
                })?;
            let um = envelope
                .messaging
                .user_message
                .ok_or_else(|| ResendError::Refused(format!("{message_id} has no user message")))?;
            let (files, payloads) = copy_plaintexts(ap, &record.payloads)?;
            let count = payloads.len();
            let submission = Submission {
                to: record.partner.clone(),
                leg: record.leg.clone(),
                conversation_id: Some(record.conversation_id.clone()),
                properties: um.properties.into_iter().map(|p| (p.name, p.value, p.kind)).collect(),
                payloads,
                unwritten: Default::default(),
                message_id: None,
            };
            let new = submit(ap, submission).await.map_err(|e| match e {
                SubmitError::Refused(m) => {
                    // Nothing names the copies: remove them. (A store error may have committed;
                    // then the orphan sweep decides at the next start.)
                    files.remove_parts(count);
                    ResendError::Refused(format!("cannot resubmit {message_id}: {m}"))
                }
                SubmitError::Store(e) => ResendError::Store(e),
            })?;
            let detail = format!("resubmitted by {actor} as {}", new.message_id);
            ap.store.note(record.row, &detail).await?;
            crate::ops::users::audit(
                ap.store.as_ref(),
                actor,
                "resubmit",
                message_id,
                &format!("new message id {}", new.message_id),
            )
            .await;
            tracing::info!(message_id, new_message_id = %new.message_id, actor, "resubmitted by an operator");
            Ok(new.message_id)
        }
    }
}

/// The plaintext of each stored payload (the files beside the compressed and encrypted ones),
/// copied as a new message's files (made durable by the submission that names them).
fn copy_plaintexts(
    ap: &AccessPoint,
    stored: &[StoredPayload],
) -> Result<(MessageFiles, Vec<StoredPayload>), ResendError> {
    let files = MessageFiles::new(ap.config.data_dir.join("outbound"));
    let mut out = Vec::new();
    for (index, p) in stored.iter().enumerate() {
        let plain = crate::store::files::plaintext_of(&p.path);
        let target = files.part(index);
        let size = std::fs::copy(&plain, &target).map_err(|e| {
            files.remove_parts(index + 1);
            ResendError::Refused(format!(
                "the payload {} cannot be copied (removed by retention?): {e}",
                plain.display()
            ))
        })?;
        out.push(StoredPayload {
            content_id: crate::msh::outbound::new_content_id(ap, index),
            mime_type: p.mime_type.clone(),
            path: target,
            size,
            sha256: p.sha256.clone(),
            filename: p.filename.clone(),
            wire_type: None,
        });
    }
    Ok((files, out))
}
