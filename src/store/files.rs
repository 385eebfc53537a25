//! Payload files: written as they stream in, made durable before the row that names them
//! commits ([`super::durability`]).

use crate::mime::PartSink;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// Streams received MIME parts into files under `dir`, hashing as it goes.
pub struct FileSink {
    dir: PathBuf,
    current: Option<(tokio::fs::File, Sha256)>,
    max_part_bytes: u64,
    written: u64,
    pub parts: Vec<SunkPart>,
}

#[derive(Debug, Clone)]
pub struct SunkPart {
    pub content_id: String,
    pub content_type: String,
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
}

impl FileSink {
    pub fn new(dir: PathBuf, max_part_bytes: u64) -> Self {
        FileSink { dir, current: None, max_part_bytes, written: 0, parts: Vec::new() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[async_trait::async_trait]
impl PartSink for FileSink {
    async fn begin(&mut self, content_id: &str, content_type: &str) -> std::io::Result<()> {
        tokio::fs::create_dir_all(&self.dir).await?;
        let path = self.dir.join(format!("part-{}", self.parts.len() + 1));
        let file = tokio::fs::File::create(&path).await?;
        self.current = Some((file, Sha256::new()));
        self.written = 0;
        self.parts.push(SunkPart {
            content_id: content_id.to_owned(),
            content_type: content_type.to_owned(),
            path,
            size: 0,
            sha256: String::new(),
        });
        Ok(())
    }

    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.written += bytes.len() as u64;
        if self.written > self.max_part_bytes {
            return Err(std::io::Error::other(format!("part exceeds the limit of {} bytes", self.max_part_bytes)));
        }
        if let Some((file, hasher)) = self.current.as_mut() {
            hasher.update(bytes);
            file.write_all(bytes).await?;
        }
        Ok(())
    }

    async fn finish(&mut self) -> std::io::Result<()> {
        if let Some((mut file, hasher)) = self.current.take() {
            // Flushed, not synced: a received part is often decrypted or decompressed into
            // another file; what the commit names is synced then
            // ([`super::durability::FileSync`]).
            file.flush().await?;
            if let Some(part) = self.parts.last_mut() {
                part.size = self.written;
                part.sha256 = hex::encode(hasher.finalize());
            }
        }
        Ok(())
    }
}

/// Makes a directory entry durable (after files were created or renamed in it).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    crate::util::sha256_file(path).map(hex::encode)
}

/// Removes the message folders under `data_dir/{inbound,outbound}` that no stored payload
/// names and that are older than `grace` (folders a crash or a failed write left between the
/// rename and the commit). Returns how many were removed. Linear: one pass over the store's
/// paths, one over the folders.
pub async fn sweep_orphans(
    store: &dyn super::MessageStore,
    data_dir: &Path,
    grace: std::time::Duration,
) -> Result<usize, super::StoreError> {
    // By folder name (a fresh UUID each), not by full path: a data folder moved to another
    // place keeps its rows' old paths, and must not look orphaned.
    let referenced: std::collections::HashSet<std::ffi::OsString> = store
        .payload_paths()
        .await?
        .into_iter()
        .filter_map(|p| p.parent().and_then(Path::file_name).map(ToOwned::to_owned))
        .collect();
    let data_dir = data_dir.to_path_buf();
    let removed = crate::blocking::spawn(move || {
        let mut removed = 0;
        for kind in ["inbound", "outbound"] {
            let Ok(entries) = std::fs::read_dir(data_dir.join(kind)) else { continue };
            for entry in entries.flatten() {
                let path = entry.path();
                let old_enough = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age >= grace);
                if path.is_dir() && old_enough && !referenced.contains(&entry.file_name()) {
                    tracing::warn!(folder = %path.display(), "removing a message folder no stored message names");
                    if std::fs::remove_dir_all(&path).is_ok() {
                        removed += 1;
                    }
                }
            }
        }
        removed
    })
    .await
    .map_err(|e| super::StoreError::Task(e.to_string()))?;
    Ok(removed)
}
