//! The watched-folder backend, the way Holodeck's file backend and the Domibus FS plugin serve
//! single windows: received messages written to an `in` folder, submissions taken from an `out`
//! folder.
//!
//! Received: `<folder>/<MessageId>/` holds `message.json` (the message as the API shows it) and
//! the payloads under their file names (or `payload-N`). It is written in a hidden sibling
//! folder, every file fsync'ed, then renamed into place and the parent synced: a reader never
//! sees half a message, and a message whose folder exists is not written again.
//!
//! Submitted: `<out>/NAME` with its sidecar `<out>/NAME.json`, written last. The pair is first
//! moved into `<out>/.processing/<id>/` (a rename: it leaves the scan), submitted under the
//! MessageId `<id>@host` (so a crash and a second try submit it once), then moved to
//! `<out>/sent/` with `NAME.result.json`, or to `<out>/failed/` with `NAME.error.txt`.

use super::settings::SubmitFolder;
use crate::msh::AccessPoint;
use crate::msh::outbound::{Submission, SubmitError, new_content_id, submit};
use crate::store::files::sync_dir;
use crate::store::{MessageRecord, StoredPayload};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A MessageId as a folder name (what a file system accepts, unambiguous).
pub fn folder_name(message_id: &str) -> String {
    let safe: String =
        message_id.chars().map(|c| if c.is_ascii_alphanumeric() || "@.-_".contains(c) { c } else { '_' }).collect();
    // Distinct ids that clean to the same text stay distinct.
    if safe == message_id { safe } else { format!("{safe}~{}", crate::util::short_hash(message_id.as_bytes())) }
}

fn copy_synced(from: &Path, to: &Path) -> std::io::Result<u64> {
    let size = std::fs::copy(from, to)?;
    std::fs::File::open(to)?.sync_all()?;
    Ok(size)
}

/// Writes a received message into `dir` once; Ok when it is there (now or before).
pub fn write_received(dir: &Path, record: &MessageRecord) -> Result<(), String> {
    let target = dir.join(folder_name(&record.message_id));
    if target.exists() {
        return Ok(());
    }
    let fail = |what: &str, e: std::io::Error| format!("{what}: {e}");
    std::fs::create_dir_all(dir).map_err(|e| fail(&format!("cannot create {}", dir.display()), e))?;
    let partial = dir.join(format!(".incoming-{}", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        std::fs::create_dir(&partial).map_err(|e| fail("cannot create a folder", e))?;
        let mut used = std::collections::BTreeSet::new();
        for (i, p) in record.payloads.iter().enumerate() {
            let mut name = p
                .filename
                .as_deref()
                .map(crate::backend::safe_file_name)
                .unwrap_or_else(|| format!("payload-{}", i + 1));
            if name == "message.json" || !used.insert(name.clone()) {
                name = format!("payload-{}-{name}", i + 1);
                used.insert(name.clone());
            }
            copy_synced(&p.path, &partial.join(&name))
                .map_err(|e| fail(&format!("payload {}", p.path.display()), e))?;
        }
        let json = serde_json::to_vec_pretty(record).map_err(|e| e.to_string())?;
        std::fs::write(partial.join("message.json"), json).map_err(|e| fail("message.json", e))?;
        std::fs::File::open(partial.join("message.json"))
            .and_then(|f| f.sync_all())
            .map_err(|e| fail("message.json", e))?;
        sync_dir(&partial).map_err(|e| fail("sync", e))?;
        std::fs::rename(&partial, &target).map_err(|e| fail(&format!("cannot rename into {}", target.display()), e))?;
        sync_dir(dir).map_err(|e| fail("sync", e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    result
}

/// A dropped document waiting in `.processing/<id>/`.
struct Claimed {
    dir: PathBuf,
    id: String,
    name: String,
}

/// Moves each complete pair (document and sidecar) into `.processing/`, then submits every
/// claimed one (including those a crash left there).
pub async fn submit_dropped(ap: &Arc<AccessPoint>, folder: &SubmitFolder) {
    let root = folder.path.clone();
    let claimed = match crate::blocking::spawn(move || claim(&root)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::error!(folder = %folder.path.display(), error = %e, "cannot read the submission folder");
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "submission folder task failed");
            return;
        }
    };
    for c in claimed {
        submit_claimed(ap, &folder.path, c).await;
    }
}

fn claim(root: &Path) -> std::io::Result<Vec<Claimed>> {
    let processing = root.join(".processing");
    std::fs::create_dir_all(&processing)?;
    for entry in std::fs::read_dir(root)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else { continue };
        let Some(document) = name.strip_suffix(".json") else { continue };
        if name.starts_with('.') || !path.is_file() || !root.join(document).is_file() {
            continue;
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = processing.join(&id);
        std::fs::create_dir(&dir)?;
        // The document first: a pair half moved is completed at the next scan.
        std::fs::rename(root.join(document), dir.join(document))?;
        std::fs::rename(&path, dir.join(&name))?;
        sync_dir(&dir)?;
        sync_dir(root)?;
    }
    let mut claimed = Vec::new();
    for entry in std::fs::read_dir(&processing)? {
        let dir = entry?.path();
        let Some(id) = dir.file_name().and_then(|n| n.to_str()).map(str::to_owned) else { continue };
        let sidecar = std::fs::read_dir(&dir)?
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .find(|n| n.ends_with(".json"));
        match sidecar {
            Some(s) => claimed.push(Claimed { dir, id, name: s.trim_end_matches(".json").to_owned() }),
            None => {
                // A pair half moved: its sidecar is still outside; bring it in next time.
                tracing::debug!(dir = %dir.display(), "waiting for the sidecar");
            }
        }
    }
    Ok(claimed)
}

async fn submit_claimed(ap: &Arc<AccessPoint>, root: &Path, c: Claimed) {
    let outcome = prepare_and_submit(ap, &c).await;
    let (destination, note, suffix) = match &outcome {
        Ok(record) => (
            root.join("sent"),
            serde_json::to_vec_pretty(&serde_json::json!({ "message_id": record.message_id, "state": record.state }))
                .unwrap_or_default(),
            "result.json",
        ),
        Err(Failure::Refused(reason)) => (root.join("failed"), reason.clone().into_bytes(), "error.txt"),
        Err(Failure::Retry(reason)) => {
            tracing::warn!(file = %c.name, error = %reason, "submission from the folder failed; will retry");
            return;
        }
    };
    let (dir, name) = (c.dir.clone(), c.name.clone());
    let moved = crate::blocking::spawn(move || -> std::io::Result<()> {
        std::fs::create_dir_all(&destination)?;
        // Names already there (a document dropped twice) get a suffix rather than overwrite.
        let target = |file: &str| {
            let first = destination.join(file);
            if first.exists() { destination.join(format!("{file}.{}", uuid::Uuid::new_v4().simple())) } else { first }
        };
        std::fs::write(target(&format!("{name}.{suffix}")), note)?;
        for file in [name.clone(), format!("{name}.json")] {
            if dir.join(&file).exists() {
                std::fs::rename(dir.join(&file), target(&file))?;
            }
        }
        std::fs::remove_dir_all(&dir)?;
        sync_dir(&destination)
    })
    .await;
    match (outcome, moved) {
        (Ok(record), Ok(Ok(()))) => {
            tracing::info!(file = %c.name, message_id = %record.message_id, "submitted from the folder")
        }
        (Err(Failure::Refused(reason)), Ok(Ok(()))) => {
            tracing::warn!(file = %c.name, %reason, "refused; moved to failed/")
        }
        (_, result) => tracing::error!(file = %c.name, ?result, "cannot move a processed submission"),
    }
}

enum Failure {
    /// The document or its sidecar is wrong: it goes to `failed/`.
    Refused(String),
    /// Our side failed (store, disk): left in `.processing/` and tried again.
    Retry(String),
}

async fn prepare_and_submit(ap: &Arc<AccessPoint>, c: &Claimed) -> Result<MessageRecord, Failure> {
    let sidecar =
        tokio::fs::read(c.dir.join(format!("{}.json", c.name))).await.map_err(|e| Failure::Retry(e.to_string()))?;
    let mut value: serde_json::Value =
        serde_json::from_slice(&sidecar).map_err(|e| Failure::Refused(format!("{}.json: not JSON: {e}", c.name)))?;
    let mime_type = value
        .as_object_mut()
        .and_then(|o| o.remove("mime_type"))
        .and_then(|m| m.as_str().map(str::to_owned))
        .unwrap_or_else(|| {
            if c.name.ends_with(".xml") { "application/xml".into() } else { "application/octet-stream".into() }
        });
    let bytes = serde_json::to_vec(&value).unwrap_or_default();
    let metadata = crate::backend::api::parse_metadata(&bytes)
        .map_err(|(_, m)| Failure::Refused(format!("{}.json: {m}", c.name)))?;
    // The document is copied into the data folder (the drop folder may be another file system).
    let staged = crate::store::files::MessageFiles::new(ap.config.data_dir.join("outbound"));
    let (from, to) = (c.dir.join(&c.name), staged.part(0));
    let copied = crate::blocking::spawn(move || -> std::io::Result<(u64, String)> {
        std::fs::create_dir_all(to.parent().unwrap_or(Path::new(".")))?;
        let size = copy_synced(&from, &to)?;
        let sha256 = crate::store::files::sha256_file(&to)?;
        sync_dir(to.parent().unwrap_or(Path::new(".")))?;
        Ok((size, sha256))
    })
    .await
    .map_err(|e| Failure::Retry(e.to_string()))?;
    let (size, sha256) = copied.map_err(|e| Failure::Retry(format!("cannot stage {}: {e}", c.name)))?;
    let properties = metadata.properties_list();
    let submission = Submission {
        to: metadata.to,
        leg: metadata.leg,
        conversation_id: metadata.conversation_id,
        properties,
        payloads: vec![StoredPayload {
            content_id: new_content_id(ap, 0),
            mime_type,
            path: staged.part(0),
            size,
            sha256,
            filename: Some(c.name.clone()),
            wire_type: None,
        }],
        unwritten: Default::default(),
        message_id: Some(format!("{}@{}", c.id, ap.config.host)),
    };
    // Owned: a stop does not cut a submission between its commit and the move to sent/.
    let ap2 = ap.clone();
    let result = ap
        .tasks
        .spawn(async move { submit(&ap2, submission).await })
        .await
        .map_err(|e| Failure::Retry(e.to_string()))?;
    match result {
        Ok(record) => Ok(record),
        Err(SubmitError::Refused(m)) => {
            staged.remove_parts(1);
            Err(Failure::Refused(m))
        }
        Err(SubmitError::Store(e)) => Err(Failure::Retry(e.to_string())),
    }
}
