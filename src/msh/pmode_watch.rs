//! Hot reload of the P-Mode folder: a file added, changed or removed takes effect without a
//! restart, and so does a replaced certificate file a P-Mode names. A broken file is reported
//! and its previous version kept (or, if new, left out).

use super::AccessPoint;
use crate::pmode::{Link, PmodeSet, parse_link, read_files};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The files last seen and the links in force, by file.
#[derive(Default)]
pub struct Watcher {
    seen: BTreeMap<PathBuf, String>,
    active: BTreeMap<PathBuf, Link>,
    /// The certificate files each P-Mode file's link read, as they were then.
    certs: BTreeMap<PathBuf, Stamps>,
}

/// Modification time and size of each file.
type Stamps = Vec<(PathBuf, Option<(std::time::SystemTime, u64)>)>;

fn stamps(files: &[PathBuf]) -> Stamps {
    files
        .iter()
        .map(|f| (f.clone(), std::fs::metadata(f).ok().and_then(|m| Some((m.modified().ok()?, m.len())))))
        .collect()
}

impl Watcher {
    /// Loads the folder at start-up, remembering exactly the texts it loaded, so that a
    /// change made right after is seen (every error is reported; nothing starts with one).
    pub fn load(dir: &std::path::Path) -> Result<(Watcher, PmodeSet), Vec<crate::pmode::PmodeError>> {
        let files = read_files(dir).map_err(|e| {
            vec![crate::pmode::PmodeError {
                file: dir.to_owned(),
                line: 0,
                key: "(file)".into(),
                message: e.to_string(),
            }]
        })?;
        let mut watcher = Watcher::default();
        let mut errors = Vec::new();
        for (path, text) in files {
            match parse_link(&path, &text) {
                Ok(link) => {
                    watcher.certs.insert(path.clone(), stamps(&link.cert_files));
                    watcher.active.insert(path.clone(), link);
                }
                Err(e) => errors.extend(e),
            }
            watcher.seen.insert(path, text);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let set = PmodeSet::build(watcher.active.values().cloned().collect())?;
        Ok((watcher, set))
    }

    /// The files whose links are in force.
    pub fn loaded_files(&self) -> impl Iterator<Item = &std::path::Path> {
        self.active.keys().map(PathBuf::as_path)
    }

    /// Re-reads the folder; returns a new set when something changed and is valid. What
    /// loaded or failed, file by file, is recorded in `ops` (the console's Partners page, the
    /// reload-failure metric and alert).
    pub fn poll(&mut self, dir: &std::path::Path, ops: &crate::ops::Operations) -> Option<PmodeSet> {
        let at = crate::store::now_ms();
        let files = match read_files(dir) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "cannot read the P-Mode folder; keeping the P-Modes in force");
                return None;
            }
        };
        let now: BTreeMap<PathBuf, String> = files.into_iter().collect();
        // A certificate file replaced under an unchanged P-Mode reloads that P-Mode.
        let replaced: std::collections::BTreeSet<PathBuf> = self
            .certs
            .iter()
            .filter(|(_, old)| {
                let files: Vec<PathBuf> = old.iter().map(|(f, _)| f.clone()).collect();
                stamps(&files) != **old
            })
            .map(|(path, _)| path.clone())
            .collect();
        if now == self.seen && replaced.is_empty() {
            return None;
        }
        let mut next = self.active.clone();
        next.retain(|path, _| now.contains_key(path));
        for (path, text) in &now {
            if self.seen.get(path) == Some(text) && !replaced.contains(path) {
                continue;
            }
            if replaced.contains(path) {
                tracing::info!(file = %path.display(), "a certificate file this P-Mode names changed; reloading it");
            }
            // Whatever the outcome, these are the certificate files as seen now (a broken one
            // is reported once, not at every poll).
            if let Some(old) = self.certs.get(path) {
                let files: Vec<PathBuf> = old.iter().map(|(f, _)| f.clone()).collect();
                self.certs.insert(path.clone(), stamps(&files));
            }
            match parse_link(path, text) {
                Ok(link) => {
                    tracing::info!(file = %path.display(), pmode = %link.id, "P-Mode loaded");
                    ops.pmode_file_loaded(path, at);
                    self.certs.insert(path.clone(), stamps(&link.cert_files));
                    next.insert(path.clone(), link);
                }
                Err(errors) => {
                    for e in &errors {
                        tracing::error!("{e}; the previous version of this file stays in force");
                    }
                    let text = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
                    ops.pmode_file_failed(path, at, text);
                }
            }
        }
        for path in self.seen.keys().filter(|p| !now.contains_key(*p)) {
            tracing::info!(file = %path.display(), "P-Mode file removed");
            ops.pmode_file_removed(path);
        }
        self.certs.retain(|path, _| now.contains_key(path));
        self.seen = now;
        match PmodeSet::build(next.values().cloned().collect()) {
            Ok(set) => {
                self.active = next;
                Some(set)
            }
            Err(errors) => {
                for e in &errors {
                    tracing::error!("{e}; the P-Modes in force are kept");
                    ops.pmode_file_failed(&e.file, at, e.to_string());
                }
                None
            }
        }
    }
}

pub async fn run(ap: Arc<AccessPoint>, mut watcher: Watcher, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(ap.config.reload_interval());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let dir = ap.config.pmodes.clone();
        if let Some(set) = watcher.poll(&dir, &ap.ops) {
            ap.replace_pmodes(set);
        }
        ap.security.refresh_trust();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINK: &str = r#"
id = "a-b"
profile = "none"
[[party]]
id = "A"
type = "urn:t"
endpoint = "https://a.example/as4"
[[party]]
id = "B"
type = "urn:t"
endpoint = "https://b.example/as4"
[[leg]]
name = "doc"
service = "urn:s"
action = "Send"
"#;

    #[test]
    fn added_changed_broken_and_removed_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Watcher::default();
        let ops = crate::ops::Operations::default();
        assert!(w.poll(dir.path(), &ops).is_none() || w.active.is_empty());
        std::fs::write(dir.path().join("a-b.toml"), LINK).unwrap();
        let set = w.poll(dir.path(), &ops).expect("new file loads");
        assert_eq!(set.links().len(), 1);
        assert!(w.poll(dir.path(), &ops).is_none(), "nothing changed");
        std::fs::write(dir.path().join("a-b.toml"), LINK.replace("action = \"Send\"", "action = ")).unwrap();
        let set = w.poll(dir.path(), &ops).expect("set rebuilt with the old version kept");
        assert_eq!(set.links()[0].legs[0].action, "Send");
        let status = &ops.pmode_files()[&dir.path().join("a-b.toml")];
        assert!(status.error.as_ref().is_some_and(|(_, e)| e.contains("a-b.toml:")), "{status:?}");
        assert_eq!(ops.metrics.pmode_reload_failures.get(), 1);
        std::fs::write(dir.path().join("a-b.toml"), LINK.replace("\"Send\"", "\"Deliver\"")).unwrap();
        assert_eq!(w.poll(dir.path(), &ops).unwrap().links()[0].legs[0].action, "Deliver");
        assert!(ops.pmode_files()[&dir.path().join("a-b.toml")].error.is_none(), "a good version clears the error");
        std::fs::remove_file(dir.path().join("a-b.toml")).unwrap();
        assert!(w.poll(dir.path(), &ops).unwrap().links().is_empty());
    }

    /// Issue 14: a partner certificate file replaced under an unchanged P-Mode takes effect
    /// (it used to be ignored until a restart); a broken replacement keeps the old one and is
    /// reported once.
    #[test]
    fn a_replaced_certificate_file_reloads_its_pmode() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs/demo");
        ventanilla_testkit::demo_pki::write_demo_pki(&certs, &["cl", "pe", "co"]).unwrap();
        let pmodes = dir.path().join("pmodes");
        std::fs::create_dir_all(&pmodes).unwrap();
        let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/pmodes/cl-pe.toml");
        std::fs::copy(shipped, pmodes.join("cl-pe.toml")).unwrap();
        let ops = crate::ops::Operations::default();
        let (mut w, set) = Watcher::load(&pmodes).unwrap();
        let partner_cert = |set: &PmodeSet| set.links()[0].party("PE-VUCE").unwrap().sign_certs[0].clone();
        let before = partner_cert(&set);
        assert!(w.poll(&pmodes, &ops).is_none(), "nothing changed");
        // The partner's new certificate, in the same file.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::copy(certs.join("co-sign-ed25519.pem"), certs.join("pe-sign-ed25519.pem")).unwrap();
        let set = w.poll(&pmodes, &ops).expect("the P-Mode is reloaded");
        let after = partner_cert(&set);
        assert_ne!(before, after);
        let expected =
            openssl::x509::X509::from_pem(&std::fs::read(certs.join("co-sign-ed25519.pem")).unwrap()).unwrap();
        assert_eq!(after, expected.to_der().unwrap());
        // A broken replacement: the certificate in force stays, the error is reported once.
        std::fs::write(certs.join("pe-sign-ed25519.pem"), "not a certificate").unwrap();
        let set = w.poll(&pmodes, &ops).expect("rebuilt with the previous version");
        assert_eq!(partner_cert(&set), after);
        assert!(ops.pmode_files()[&pmodes.join("cl-pe.toml")].error.is_some());
        assert!(w.poll(&pmodes, &ops).is_none(), "not reloaded again until something changes");
        assert_eq!(ops.metrics.pmode_reload_failures.get(), 1);
    }
}
