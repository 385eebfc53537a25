//! Hot reload of the P-Mode folder: a file added, changed or removed takes effect without a
//! restart. A broken file is reported and its previous version kept (or, if new, left out).

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
        if now == self.seen {
            return None;
        }
        let mut next = self.active.clone();
        next.retain(|path, _| now.contains_key(path));
        for (path, text) in &now {
            if self.seen.get(path) == Some(text) {
                continue;
            }
            match parse_link(path, text) {
                Ok(link) => {
                    tracing::info!(file = %path.display(), pmode = %link.id, "P-Mode loaded");
                    ops.pmode_file_loaded(path, at);
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
        ap.security.refresh_crls();
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
}
