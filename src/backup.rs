//! `ventanilla backup --to DIR` and `ventanilla restore --from DIR`, for the SQLite store: a
//! consistent copy of a running access point. The database is copied with SQLite's online
//! backup (a snapshot, taken while the access point keeps working), then every payload file a
//! row of that snapshot names, with the original beside it (or, for a message stored before
//! the flat layout, its folder), is copied (the files are written before their row commits and
//! never changed after, so the snapshot's files are all there). Restore puts both into an
//! empty data folder, rewriting the stored paths when the data folder moved.
//!
//! PostgreSQL stores are backed up with `pg_dump` plus the shared folder (README).

use crate::config::{Config, StoreKind};
use crate::store::files;
use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub created_at: String,
    pub party_id: String,
    /// The data folder the stored paths point into.
    pub data_dir: PathBuf,
    pub schema_version: i64,
    pub messages: i64,
    /// Message folders copied whole (messages stored before the flat layout).
    pub folders: usize,
    /// Payload files copied one by one (newer messages; a backup made before has none).
    #[serde(default)]
    pub files: usize,
}

const FORMAT: &str = "ventanilla-backup/1";

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(to)?;
    let mut n = 0;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            n += copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
            n += 1;
        }
    }
    Ok(n)
}

pub fn backup(config: &Config, to: &Path) -> Result<Manifest, String> {
    if config.store.kind != StoreKind::Sqlite {
        return Err(
            "the store is PostgreSQL: back it up with pg_dump and copy the shared data folder (README, Deployment)"
                .into(),
        );
    }
    if to.exists() && std::fs::read_dir(to).map_err(err)?.next().is_some() {
        return Err(format!("{} is not empty", to.display()));
    }
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    let source = config.data_dir.join("messages.db");
    let src = Connection::open_with_flags(&source, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("{}: {e}", source.display()))?;
    src.busy_timeout(std::time::Duration::from_secs(30)).map_err(err)?;
    let copy = to.join("messages.db");
    {
        let mut dst = Connection::open(&copy).map_err(err)?;
        let backup = rusqlite::backup::Backup::new(&src, &mut dst).map_err(err)?;
        backup.run_to_completion(1000, std::time::Duration::from_millis(5), None).map_err(err)?;
    }
    let dst = Connection::open(&copy).map_err(err)?;
    let messages: i64 = dst.query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0)).map_err(err)?;
    let schema_version: i64 =
        dst.query_row("SELECT COALESCE(MAX(version), 1) FROM schema_version", [], |r| r.get(0)).unwrap_or(1);
    // A message stored before the flat layout has a folder of its own, copied whole; a newer
    // one has its files side by side with every other message's: those the rows name, and the
    // originals they were made from (see `store::files::MessageFiles`).
    let mut folders = BTreeSet::new();
    let mut loose_files = BTreeSet::new();
    {
        let mut stmt = dst.prepare("SELECT path FROM payloads").map_err(err)?;
        let paths = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(err)?;
        for path in paths {
            let path = PathBuf::from(path.map_err(err)?);
            match path.parent() {
                Some(folder) if folder.file_name().is_some_and(files::is_message_folder) => {
                    if let Ok(relative) = folder.strip_prefix(&config.data_dir) {
                        folders.insert(relative.to_path_buf());
                    }
                }
                _ => {
                    for file in [files::plaintext_of(&path), path] {
                        if let Ok(relative) = file.strip_prefix(&config.data_dir) {
                            loose_files.insert(relative.to_path_buf());
                        }
                    }
                }
            }
        }
    }
    for folder in &folders {
        let from = config.data_dir.join(folder);
        if from.exists() {
            copy_tree(&from, &to.join("data").join(folder)).map_err(|e| format!("{}: {e}", from.display()))?;
        }
    }
    for file in &loose_files {
        let (from, target) = (config.data_dir.join(file), to.join("data").join(file));
        if from.exists() {
            let copied = target
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::copy(&from, &target).map(drop));
            copied.map_err(|e| format!("{}: {e}", from.display()))?;
        }
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        created_at: crate::clock::timestamp_now(),
        party_id: config.party_id.clone(),
        data_dir: config.data_dir.clone(),
        schema_version,
        messages,
        folders: folders.len(),
        files: loose_files.len(),
    };
    std::fs::write(to.join("backup.json"), serde_json::to_vec_pretty(&manifest).map_err(err)?).map_err(err)?;
    Ok(manifest)
}

pub fn restore(config: &Config, from: &Path) -> Result<Manifest, String> {
    let manifest: Manifest = serde_json::from_slice(
        &std::fs::read(from.join("backup.json")).map_err(|e| format!("{}: {e}", from.join("backup.json").display()))?,
    )
    .map_err(|e| format!("backup.json: {e}"))?;
    if manifest.format != FORMAT {
        return Err(format!("{}: not a {FORMAT} backup", from.display()));
    }
    if config.store.kind != StoreKind::Sqlite {
        return Err("the config's store is PostgreSQL: restore with pg_restore (README, Deployment)".into());
    }
    let db = config.data_dir.join("messages.db");
    if db.exists() {
        return Err(format!(
            "{} exists: restore into an empty data folder (stop the access point, move it aside)",
            db.display()
        ));
    }
    std::fs::create_dir_all(&config.data_dir).map_err(err)?;
    if from.join("data").exists() {
        copy_tree(&from.join("data"), &config.data_dir).map_err(err)?;
    }
    std::fs::copy(from.join("messages.db"), &db).map_err(err)?;
    if manifest.data_dir != config.data_dir {
        // The stored paths point into the old data folder.
        let conn = Connection::open(&db).map_err(err)?;
        let old = format!("{}/", manifest.data_dir.display());
        let new = format!("{}/", config.data_dir.display());
        conn.execute(
            "UPDATE payloads SET path = ?2 || substr(path, length(?1) + 1) WHERE substr(path, 1, length(?1)) = ?1",
            rusqlite::params![&old, &new],
        )
        .map_err(err)?;
        // Copies of files not yet synced when the backup was taken (schema 4 on): the first
        // start checks them against the restored files, in the new place.
        let has_copies: bool = conn
            .query_row("SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'unsynced_files')", [], |r| r.get(0))
            .map_err(err)?;
        if has_copies {
            conn.execute(
                "UPDATE unsynced_files SET path = ?2 || substr(path, length(?1) + 1) WHERE substr(path, 1, length(?1)) = ?1",
                rusqlite::params![&old, &new],
            )
            .map_err(err)?;
        }
    }
    Ok(manifest)
}
