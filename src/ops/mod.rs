//! What an operator needs to run and watch an access point: metrics, health, alerts, the web
//! console and its users. Runtime only; it reads the message path through the store and the
//! small state kept here, and changes messages only through lifecycle transitions.

pub mod alerts;
pub mod console;
pub mod filters;
pub mod health;
pub mod inventory;
pub mod memory;
pub mod metrics;
pub mod partner_check;
pub mod resend;
pub mod settings;
pub mod users;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

/// Whether a partner's endpoint answered, as the sender saw it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Contact {
    /// The last answer from the partner (a receipt, or an error signal: it is up).
    pub last_answer_ms: Option<i64>,
    /// Since when every attempt failed to get an answer (None while it answers).
    pub failing_since_ms: Option<i64>,
    pub last_problem: Option<String>,
}

/// One P-Mode file as the watcher last saw it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PmodeFileStatus {
    pub loaded_ms: Option<i64>,
    /// The last load error (with when), until the file loads again.
    pub error: Option<(i64, String)>,
}

/// The operations state of one access point.
#[derive(Default)]
pub struct Operations {
    pub metrics: metrics::Metrics,
    contacts: Mutex<BTreeMap<String, Contact>>,
    pmode_files: Mutex<BTreeMap<PathBuf, PmodeFileStatus>>,
}

impl Operations {
    /// The partner answered (receipt or error signal).
    pub fn partner_answered(&self, partner: &str, at_ms: i64) {
        if let Ok(mut contacts) = self.contacts.lock() {
            let c = contacts.entry(partner.to_owned()).or_default();
            c.last_answer_ms = Some(at_ms);
            c.failing_since_ms = None;
        }
    }

    /// No answer from the partner (connection refused, timeout, HTTP error without a signal).
    pub fn partner_silent(&self, partner: &str, at_ms: i64, problem: &str) {
        if let Ok(mut contacts) = self.contacts.lock() {
            let c = contacts.entry(partner.to_owned()).or_default();
            c.failing_since_ms.get_or_insert(at_ms);
            c.last_problem = Some(problem.to_owned());
        }
    }

    pub fn contacts(&self) -> BTreeMap<String, Contact> {
        self.contacts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    pub fn pmode_file_loaded(&self, file: &std::path::Path, at_ms: i64) {
        if let Ok(mut files) = self.pmode_files.lock() {
            let f = files.entry(file.to_owned()).or_default();
            f.loaded_ms = Some(at_ms);
            f.error = None;
        }
    }

    pub fn pmode_file_failed(&self, file: &std::path::Path, at_ms: i64, error: String) {
        self.metrics.pmode_reload_failures.inc();
        if let Ok(mut files) = self.pmode_files.lock() {
            files.entry(file.to_owned()).or_default().error = Some((at_ms, error));
        }
    }

    pub fn pmode_file_removed(&self, file: &std::path::Path) {
        if let Ok(mut files) = self.pmode_files.lock() {
            files.remove(file);
        }
    }

    pub fn pmode_files(&self) -> BTreeMap<PathBuf, PmodeFileStatus> {
        self.pmode_files.lock().map(|f| f.clone()).unwrap_or_default()
    }
}

/// Free bytes on the file system holding `path`.
pub fn free_disk(path: &std::path::Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path with a NUL byte"))?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a valid NUL-terminated string and `stat` a writable statvfs.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}
