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
    let mut all_folders: Vec<&Path> = folders.to_vec();
    let mut synced: Vec<&Path> = Vec::new();
    for &path in files {
        if synced.contains(&path) {
            continue;
        }
        synced.push(path);
        std::fs::File::open(path)?.sync_all()?;
        if let Some(dir) = path.parent() {
            all_folders.push(dir);
        }
    }
    let mut done: Vec<&Path> = Vec::new();
    for dir in all_folders {
        if !done.contains(&dir) {
            done.push(dir);
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
