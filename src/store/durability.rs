//! Making payload files durable before the row that names them commits, with fsyncs shared
//! between concurrent messages.
//!
//! `files` (the default on Linux): the files and folder entries of every message written under
//! the data folder become durable with one `syncfs(2)` of its filesystem, and concurrent callers
//! share it (group commit: a caller's writes are done before it takes its ticket, so any
//! `syncfs` that *starts* after that covers them; callers that arrive while one runs are served
//! by the next, one call for all of them). A file on another filesystem (a mount inside the data
//! folder) is synced on its own. `syncfs` flushes everything dirty on that filesystem, other
//! programs' writes included: where the data folder shares a disk with heavy writers, `each`
//! (one `fsync` per file and per folder, the way it was before) may cost less.
//!
//! Errors: a failed `syncfs` fails every caller it was meant to cover (Linux ≥ 5.8 reports
//! writeback errors to `syncfs`); nothing is answered for them and their rows never commit.
//!
//! # Small files: copies in the row, synced later
//! With a store that keeps copies (SQLite) and `files` mode, the files of a message that are
//! all small ([`COPY_MAX_FILE`], [`COPY_MAX_TOTAL`]) are not synced before the commit at all:
//! their bytes go into the message's transaction ([`crate::store::UnsyncedFile`]), whose one
//! grouped WAL fsync makes them durable with the row. A checkpoint every
//! [`CHECKPOINT_EVERY`] syncs the data folder once and forgets the copies written before it;
//! at start-up, before anything reads a payload, [`repair`] writes back any file a power loss
//! took (missing or different from its copy). So a message costs no file sync of its own, and
//! what was answered is still on disk whatever moment the machine stopped.

use serde::Deserialize;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, OnceLock};

/// `[store] file_sync`: how payload files are made durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileSyncMode {
    /// One `syncfs` of the data folder's filesystem, shared by concurrent messages.
    #[default]
    Filesystem,
    /// One `fsync` per file and per folder.
    Each,
}

/// A file above this is synced before the commit, not copied into the row.
pub const COPY_MAX_FILE: u64 = 64 << 10;
/// Nor are a message's files copied when together above this.
pub const COPY_MAX_TOTAL: u64 = 256 << 10;
/// How often kept copies are made redundant by one sync of the data folder. Short on purpose:
/// while `syncfs` writes the folder back, creating files and folders there waits for it (on
/// ext4 the inode table and bitmap blocks are locked while they are written), so the message
/// path stalls for as long as the sync takes, and that grows with what piled up since the
/// last one. Every 2 s it was 35-45 ms on the receiver of the bench (p99 at half rate 32-42
/// ms); every 250 ms the stalls are a few ms (p99 19-20 ms), for four syncs a second under
/// load and none when idle (no copies, no sync).
pub const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Shared by every message path of one access point.
pub struct FileSync {
    mode: FileSyncMode,
    data_dir: PathBuf,
    /// The data folder, opened on first use (it may not exist when the access point is built).
    root: OnceLock<Option<(std::fs::File, u64)>>,
    group: Mutex<Group>,
    done: Condvar,
}

#[derive(Default)]
struct Group {
    /// The last ticket handed out; a caller's writes precede its ticket.
    issued: u64,
    /// Every ticket up to this one is durable (or failed, see `failed`).
    covered: u64,
    running: bool,
    /// Ticket ranges `(after, through]` whose `syncfs` failed, newest last (bounded).
    failed: Vec<(u64, u64, String)>,
}

impl Group {
    /// What happened to a covered ticket.
    fn outcome(&self, ticket: u64) -> std::io::Result<()> {
        match self.failed.iter().find(|(after, through, _)| *after < ticket && ticket <= *through) {
            Some((_, _, error)) => Err(std::io::Error::other(format!("syncfs of the data folder: {error}"))),
            None => Ok(()),
        }
    }
}

const FAILURES_KEPT: usize = 256;

impl FileSync {
    pub fn new(data_dir: &Path, mode: FileSyncMode) -> FileSync {
        FileSync {
            mode,
            data_dir: data_dir.to_owned(),
            root: OnceLock::new(),
            group: Mutex::new(Group::default()),
            done: Condvar::new(),
        }
    }

    /// Makes `files` (their content) and `folders` (their entries: files created or renamed in
    /// them) durable. Blocking: call it off the async workers.
    pub fn sync(&self, files: &[&Path], folders: &[&Path]) -> std::io::Result<()> {
        if files.is_empty() && folders.is_empty() {
            return Ok(());
        }
        let root = match self.mode {
            FileSyncMode::Filesystem if cfg!(target_os = "linux") => self.root(),
            _ => None,
        };
        let Some((root, device)) = root else {
            return sync_each(files, folders);
        };
        // Anything on another filesystem is synced on its own; the rest shares one syncfs.
        let elsewhere = |p: &&Path| std::fs::metadata(p).map(|m| m.dev() != *device).unwrap_or(true);
        let other_files: Vec<&Path> = files.iter().copied().filter(elsewhere).collect();
        let other_folders: Vec<&Path> = folders.iter().copied().filter(elsewhere).collect();
        sync_each(&other_files, &other_folders)?;
        if other_files.len() == files.len() && other_folders.len() == folders.len() {
            return Ok(());
        }
        self.shared_syncfs(root)
    }

    /// Makes the files a new row names durable (blocking): when `keeps_copies` (the store's
    /// [`crate::store::MessageStore::keeps_file_copies`]) and they are small and on the data
    /// folder's filesystem, by returning copies for the row (see the module doc); otherwise by
    /// syncing them and `folders` now, returning no copies. `written` holds, by index of
    /// `files`, the bytes the caller just wrote to a file (still in memory): that file's copy
    /// is taken from them instead of reading the file back.
    pub fn secure(
        &self,
        keeps_copies: bool,
        files: &[&Path],
        mut written: Vec<Option<Vec<u8>>>,
        folders: &[&Path],
    ) -> std::io::Result<Vec<crate::store::UnsyncedFile>> {
        if keeps_copies && let Some(sizes) = self.copyable(files) {
            written.resize(files.len(), None);
            let mut copies = Vec::with_capacity(files.len());
            for ((path, size), held) in files.iter().zip(sizes).zip(written) {
                let content = match held {
                    Some(held) => held,
                    None => std::fs::read(path)?,
                };
                if content.len() as u64 != size {
                    return Err(std::io::Error::other(format!("{} changed while it was copied", path.display())));
                }
                copies.push(crate::store::UnsyncedFile { path: path.to_path_buf(), content });
            }
            return Ok(copies);
        }
        self.sync(files, folders)?;
        Ok(Vec::new())
    }

    /// The files' sizes when they may be kept as copies: `files` mode on Linux, every file on
    /// the data folder's filesystem, small enough.
    fn copyable(&self, files: &[&Path]) -> Option<Vec<u64>> {
        if self.mode != FileSyncMode::Filesystem || !cfg!(target_os = "linux") || files.is_empty() {
            return None;
        }
        let (_, device) = self.root()?;
        let mut sizes = Vec::with_capacity(files.len());
        for path in files {
            let meta = std::fs::metadata(path).ok()?;
            if meta.dev() != *device || !meta.is_file() || meta.len() > COPY_MAX_FILE {
                return None;
            }
            sizes.push(meta.len());
        }
        (sizes.iter().sum::<u64>() <= COPY_MAX_TOTAL).then_some(sizes)
    }

    /// One shared sync of the whole data folder's filesystem (blocking): a checkpoint.
    pub fn sync_data_folder(&self) -> std::io::Result<()> {
        match self.root() {
            Some((root, _)) => self.shared_syncfs(root),
            None => Err(std::io::Error::other(format!("cannot open the data folder {}", self.data_dir.display()))),
        }
    }

    fn root(&self) -> Option<&(std::fs::File, u64)> {
        self.root
            .get_or_init(|| {
                let dir = std::fs::File::open(&self.data_dir).ok()?;
                let device = dir.metadata().ok()?.dev();
                Some((dir, device))
            })
            .as_ref()
    }

    fn shared_syncfs(&self, root: &std::fs::File) -> std::io::Result<()> {
        let mut group = self.group.lock().unwrap_or_else(|e| e.into_inner());
        group.issued += 1;
        let ticket = group.issued;
        loop {
            if group.covered >= ticket {
                return group.outcome(ticket);
            }
            if group.running {
                group = self.done.wait(group).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // Lead: this syncfs covers every ticket issued so far.
            group.running = true;
            let (after, through) = (group.covered, group.issued);
            drop(group);
            let result = syncfs(root);
            group = self.group.lock().unwrap_or_else(|e| e.into_inner());
            group.running = false;
            group.covered = through;
            if let Err(e) = result {
                tracing::error!(error = %e, folder = %self.data_dir.display(), "cannot make the data folder durable");
                group.failed.push((after, through, e.to_string()));
                if group.failed.len() > FAILURES_KEPT {
                    group.failed.remove(0);
                }
            }
            self.done.notify_all();
        }
    }
}

/// The id of the newest kept copy, if there is any.
async fn newest_copy(store: &dyn crate::store::MessageStore) -> Result<Option<i64>, String> {
    let through = store.unsynced_watermark().await.map_err(|e| e.to_string())?;
    Ok((through > 0).then_some(through))
}

/// Makes the kept copies redundant: the data folder synced once, then the copies written
/// before that forgotten. Returns how many were forgotten.
pub async fn checkpoint(
    store: &dyn crate::store::MessageStore,
    file_sync: &std::sync::Arc<FileSync>,
) -> Result<usize, String> {
    let Some(through) = newest_copy(store).await? else {
        return Ok(0);
    };
    let sync = file_sync.clone();
    crate::blocking::spawn(move || sync.sync_data_folder())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot sync the data folder: {e}"))?;
    store.forget_unsynced(through).await.map_err(|e| e.to_string())
}

/// Runs [`checkpoint`] every [`CHECKPOINT_EVERY`], and once more when stopping.
pub async fn run_checkpoints(
    ap: std::sync::Arc<crate::msh::AccessPoint>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    if !ap.store.keeps_file_copies() {
        return;
    }
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    // A sync slower than the period (a busy disk) is followed by a full period, not a burst.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = tick.tick() => false,
        };
        if let Err(e) = checkpoint(ap.store.as_ref(), &ap.file_sync).await {
            tracing::error!(error = %e, "file checkpoint failed; payload copies stay in the store until one succeeds");
        }
        if stopping {
            return;
        }
    }
}

/// At start-up, before anything reads a payload: every kept copy whose file is missing or
/// differs (the machine stopped before a checkpoint) is written back; then the data folder is
/// synced and the copies forgotten. Returns how many files were written back.
pub async fn repair(
    store: &dyn crate::store::MessageStore,
    file_sync: &std::sync::Arc<FileSync>,
) -> Result<usize, String> {
    let Some(through) = newest_copy(store).await? else {
        return Ok(0);
    };
    let copies = store.unsynced_files().await.map_err(|e| e.to_string())?;
    let sync = file_sync.clone();
    let written = crate::blocking::spawn(move || -> std::io::Result<usize> {
        let mut written = 0;
        for copy in &copies {
            if std::fs::read(&copy.path).ok().as_deref() == Some(copy.content.as_slice()) {
                continue;
            }
            if let Some(folder) = copy.path.parent() {
                std::fs::create_dir_all(folder)?;
            }
            std::fs::write(&copy.path, &copy.content)?;
            tracing::warn!(file = %copy.path.display(), "payload file written back from its copy in the store");
            written += 1;
        }
        // Every copied file (written back or only in the page cache of a process that died),
        // its folder and the folder's own entry (it may be new).
        let files: Vec<&Path> = copies.iter().map(|c| c.path.as_path()).collect();
        let folders: Vec<&Path> = files
            .iter()
            .filter_map(|f| f.parent())
            .flat_map(|folder| [Some(folder), folder.parent()])
            .flatten()
            .collect();
        sync.sync(&files, &folders)?;
        Ok(written)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("cannot write back payload files: {e}"))?;
    store.forget_unsynced(through).await.map_err(|e| e.to_string())?;
    Ok(written)
}

#[cfg(target_os = "linux")]
fn syncfs(root: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open for the lifetime of `root`.
    if unsafe { libc::syncfs(root.as_raw_fd()) } == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

#[cfg(not(target_os = "linux"))]
fn syncfs(root: &std::fs::File) -> std::io::Result<()> {
    root.sync_all()
}

/// One fsync per distinct file, then one per distinct folder (the files' own and `folders`).
fn sync_each(files: &[&Path], folders: &[&Path]) -> std::io::Result<()> {
    let mut synced_files = std::collections::HashSet::new();
    let mut all_folders: Vec<&Path> = folders.to_vec();
    for &path in files {
        if synced_files.insert(path) {
            std::fs::File::open(path)?.sync_all()?;
            all_folders.extend(path.parent());
        }
    }
    let mut synced_folders = std::collections::HashSet::new();
    for dir in all_folders {
        if synced_folders.insert(dir) {
            std::fs::File::open(dir)?.sync_all()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn concurrent_callers_share_syncs_and_all_return() {
        let dir = tempfile::tempdir().unwrap();
        let sync = Arc::new(FileSync::new(dir.path(), FileSyncMode::Filesystem));
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let (sync, root) = (sync.clone(), dir.path().to_owned());
                std::thread::spawn(move || {
                    let file = root.join(format!("f{i}"));
                    std::fs::write(&file, b"payload").unwrap();
                    sync.sync(&[&file], &[&root]).unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let group = sync.group.lock().unwrap();
        assert_eq!(group.issued, 16);
        assert_eq!(group.covered, 16);
        assert!(!group.running && group.failed.is_empty());
    }

    #[test]
    fn each_mode_and_a_missing_file_report_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a");
        std::fs::write(&file, b"x").unwrap();
        let each = FileSync::new(dir.path(), FileSyncMode::Each);
        each.sync(&[&file, &file], &[dir.path()]).unwrap();
        let missing = dir.path().join("missing");
        assert!(each.sync(&[&missing], &[]).is_err());
        // A path that cannot be looked up is synced on its own, and its error surfaces.
        let shared = FileSync::new(dir.path(), FileSyncMode::Filesystem);
        assert!(shared.sync(&[&missing], &[]).is_err());
        shared.sync(&[], &[]).unwrap();
    }

    fn received(id: &str, unsynced: Vec<crate::store::UnsyncedFile>) -> crate::store::NewMessage {
        crate::store::NewMessage {
            response: None,
            payloads: Vec::new(),
            unsynced,
            ..crate::store::NewMessage::for_tests(id, crate::store::Creation::Received)
        }
    }

    /// A power loss before the checkpoint: the files the committed rows name are gone (or
    /// truncated); the next start writes them back from the copies, then forgets the copies.
    #[tokio::test]
    async fn files_lost_before_a_checkpoint_come_back_from_their_copies() {
        use crate::store::{MessageStore, UnsyncedFile};
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sqlite::SqliteStore::open(&dir.path().join("messages.db")).unwrap();
        assert!(store.keeps_file_copies());
        let sync = std::sync::Arc::new(FileSync::new(dir.path(), FileSyncMode::Filesystem));
        let folder = dir.path().join("inbound").join("m1");
        std::fs::create_dir_all(&folder).unwrap();
        let (a, b) = (folder.join("part-1"), folder.join("part-2"));
        std::fs::write(&a, b"first payload").unwrap();
        std::fs::write(&b, b"second payload").unwrap();
        // The first file's bytes are still in memory (its copy is taken from them), the
        // second's are read back; bytes that are not what the file holds are refused.
        let stale = Some(b"first".to_vec());
        assert!(sync.secure(true, &[&a, &b], vec![stale], &[&folder]).is_err(), "a copy unlike its file");
        let copies = sync.secure(true, &[&a, &b], vec![Some(b"first payload".to_vec())], &[&folder]).unwrap();
        assert_eq!(copies.len(), 2);
        assert_eq!(copies[0], UnsyncedFile { path: a.clone(), content: b"first payload".to_vec() });
        assert_eq!(copies[1], UnsyncedFile { path: b.clone(), content: b"second payload".to_vec() });
        let message = received("m1", copies);
        store.insert(message).await.unwrap();
        // The machine stops: one file never reached the disk, the folder of the other did
        // only in part.
        std::fs::remove_dir_all(&folder).unwrap();
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(&b, b"second").unwrap();
        assert_eq!(repair(&store, &sync).await.unwrap(), 2);
        assert_eq!(std::fs::read(&a).unwrap(), b"first payload");
        assert_eq!(std::fs::read(&b).unwrap(), b"second payload");
        assert_eq!(store.unsynced_watermark().await.unwrap(), 0, "copies forgotten once synced");
        assert_eq!(repair(&store, &sync).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_checkpoint_forgets_what_it_synced_and_large_files_are_synced_at_once() {
        use crate::store::MessageStore;
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sqlite::SqliteStore::open(&dir.path().join("messages.db")).unwrap();
        let sync = std::sync::Arc::new(FileSync::new(dir.path(), FileSyncMode::Filesystem));
        assert_eq!(checkpoint(&store, &sync).await.unwrap(), 0, "nothing to do");
        let large = dir.path().join("large");
        std::fs::write(&large, vec![7u8; COPY_MAX_FILE as usize + 1]).unwrap();
        assert!(sync.secure(true, &[&large], Vec::new(), &[]).unwrap().is_empty(), "synced, not copied");
        let small = dir.path().join("small");
        std::fs::write(&small, b"x").unwrap();
        assert!(sync.secure(false, &[&small], Vec::new(), &[]).unwrap().is_empty(), "a store without copies");
        let each = FileSync::new(dir.path(), FileSyncMode::Each);
        assert!(each.secure(true, &[&small], Vec::new(), &[]).unwrap().is_empty(), "each mode syncs");
        let copies = sync.secure(true, &[&small], Vec::new(), &[]).unwrap();
        assert_eq!(copies.len(), 1);
        store.insert(received("m2", copies)).await.unwrap();
        assert!(store.unsynced_watermark().await.unwrap() > 0);
        assert_eq!(checkpoint(&store, &sync).await.unwrap(), 1);
        assert_eq!(store.unsynced_watermark().await.unwrap(), 0);
        assert!(store.unsynced_files().await.unwrap().is_empty());
    }

    #[test]
    fn a_failed_range_fails_only_its_tickets() {
        let sync = FileSync::new(Path::new("/nonexistent"), FileSyncMode::Filesystem);
        {
            let mut g = sync.group.lock().unwrap();
            g.issued = 5;
            g.covered = 5;
            g.failed.push((2, 4, "EIO".into()));
        }
        let g = sync.group.lock().unwrap();
        assert!(g.outcome(2).is_ok() && g.outcome(5).is_ok());
        let error = g.outcome(3).unwrap_err().to_string();
        assert!(error.contains("EIO"), "{error}");
        assert!(g.outcome(4).is_err());
    }
}
