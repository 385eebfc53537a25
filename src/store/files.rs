//! Payload files: written as they stream in, made durable before the row that names them
//! commits ([`super::durability`]).

use crate::mime::PartSink;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// A part at most this large is gathered in memory and handed, complete, to the blocking job
/// that processes its message, which writes it (or what it becomes) there; a larger one goes to
/// its file as it streams. Through tokio's file type each step (folder, create, every write,
/// the flush) is a hand-off to the blocking pool and back, four or more per part: `tokio::fs`
/// was 5.4% of all CPU in a profile of the 2.0 throughput bench, and the change took 4-8% off
/// the CPU per message; a job of its own for the write cost one more hand-off per message.
pub const SPOOL_IN_MEMORY: usize = 256 << 10;

/// A file being written from a stream: in memory while small (see [`SPOOL_IN_MEMORY`]), then
/// in its file. Its folder is created when the file is; a file still in memory at the end is
/// the caller's to write.
pub struct SpooledFile {
    path: PathBuf,
    state: Spool,
}

enum Spool {
    Memory(Vec<u8>),
    File(tokio::fs::File),
}

impl SpooledFile {
    pub fn new(path: PathBuf) -> Self {
        SpooledFile { path, state: Spool::Memory(Vec::new()) }
    }

    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match &mut self.state {
            Spool::Memory(gathered) if gathered.len() + bytes.len() <= SPOOL_IN_MEMORY => {
                gathered.extend_from_slice(bytes);
            }
            Spool::Memory(gathered) => {
                let mut head = std::mem::take(gathered);
                head.extend_from_slice(bytes);
                let path = self.path.clone();
                let file =
                    crate::blocking::spawn(move || write_new(&path, &head)).await.map_err(std::io::Error::other)??;
                self.state = Spool::File(tokio::fs::File::from_std(file));
            }
            Spool::File(file) => file.write_all(bytes).await?,
        }
        Ok(())
    }

    /// Hands back what is still in memory without writing it (the caller writes it, or what
    /// it becomes, in a blocking job of its own), or flushes the file and hands back nothing.
    pub async fn finish(self) -> std::io::Result<Option<Vec<u8>>> {
        match self.state {
            Spool::Memory(gathered) => Ok(Some(gathered)),
            Spool::File(mut file) => file.flush().await.map(|()| None),
        }
    }
}

/// Creates (or truncates) `path` with `content` in it; its folder too, when missing (tried
/// only then: the folders of the message layout exist, see [`MessageFiles`]).
fn write_new(path: &Path, content: &[u8]) -> std::io::Result<std::fs::File> {
    use std::io::Write;
    let mut file = create_in_place(path)?;
    file.write_all(content)?;
    Ok(file)
}

/// `File::create`, creating the file's folder first if that is what is missing.
pub fn create_in_place(path: &Path) -> std::io::Result<std::fs::File> {
    match std::fs::File::create(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::File::create(path)
        }
        created => created,
    }
}

/// The payload files of one message: `<folder>/<key>_<name>`, side by side with every other
/// message's in `inbound/`, `outbound/` or the staging folder, the key a fresh UUID (simple
/// form). Not a folder per message: on ext4 a new folder is an inode and a zeroed block, and its
/// `mkdir` was 3.5% of the sender's CPU and 5.5% of the receiver's in the throughput bench.
/// Messages stored before keep their folders (`<folder>/<uuid>/<name>`); [`owner_of`] reads both.
#[derive(Debug, Clone)]
pub struct MessageFiles {
    folder: PathBuf,
    key: String,
}

impl MessageFiles {
    /// A new message's files in `folder`.
    pub fn new(folder: PathBuf) -> Self {
        MessageFiles { folder, key: uuid::Uuid::new_v4().simple().to_string() }
    }

    /// The file `name` of this message.
    pub fn path(&self, name: &str) -> PathBuf {
        self.folder.join(format!("{}{KEY_END}{name}", self.key))
    }

    /// Payload `index` (from 0) as submitted or received: `part-<index + 1>`.
    pub fn part(&self, index: usize) -> PathBuf {
        self.path(&format!("part-{}", index + 1))
    }

    /// Removes the first `count` payloads of this message and what was derived from them
    /// ([`DERIVED`]), by name: `outbound/` is too large to list.
    pub fn remove_parts(&self, count: usize) {
        for index in 0..count {
            let part = self.part(index);
            for extension in DERIVED {
                let _ = std::fs::remove_file(part.with_extension(extension));
            }
            let _ = std::fs::remove_file(part);
        }
    }

    pub fn folder(&self) -> &Path {
        &self.folder
    }

    /// Removes every file of this message in its folder, found by listing the folder: for a
    /// staging folder, which holds only the requests in flight, not for `inbound/`.
    pub fn remove_listed(&self) {
        let Ok(entries) = std::fs::read_dir(&self.folder) else { return };
        let prefix = format!("{}{KEY_END}", self.key);
        for entry in entries.flatten() {
            if entry.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Ends a message's key in its file names.
const KEY_END: char = '_';

/// The extensions of the files a submitted payload `<name>` gives: `<name>.gz` (compressed,
/// before encryption), `<name>.enc` (what goes on the wire), `<name>.signed.xml` (IOP).
pub const DERIVED: [&str; 3] = ["gz", "enc", "signed.xml"];

/// The submitted file a stored payload was made from: outbound rows name the files as sent
/// (`.gz`, then `.enc`), and the original is beside them under its own name.
pub fn plaintext_of(stored: &Path) -> PathBuf {
    let mut path = stored.to_path_buf();
    while matches!(path.extension().and_then(|e| e.to_str()), Some("enc" | "gz")) {
        path = path.with_extension("");
    }
    path
}

/// The message a payload file belongs to, for the orphan sweep and backups: the folder of a
/// message stored before the flat layout (named by a hyphenated UUID), else the key its name
/// starts with ([`MessageFiles`]).
pub fn owner_of(path: &Path) -> Option<std::ffi::OsString> {
    let folder = path.parent().and_then(Path::file_name)?;
    if is_message_folder(folder) {
        return Some(folder.to_owned());
    }
    let name = path.file_name()?.to_str()?;
    let (key, _) = name.split_once(KEY_END)?;
    // Only a key of ours (a simple UUID): another file in the folder is no message's.
    (key.len() == 32 && key.bytes().all(|b| b.is_ascii_hexdigit())).then(|| key.into())
}

/// Whether a folder name is a message's own folder of the layout before [`MessageFiles`].
pub fn is_message_folder(name: &std::ffi::OsStr) -> bool {
    name.to_str().and_then(|n| uuid::Uuid::try_parse(n).ok()).is_some_and(|_| name.len() == 36)
}

/// A stored file as a stream of chunks, to send: a small one (see [`SPOOL_IN_MEMORY`]) is
/// opened and read whole in one blocking job, a larger one streams in 64 KiB chunks. An error
/// opening it is the stream's first item.
pub fn stream_file(path: PathBuf) -> futures_util::stream::BoxStream<'static, std::io::Result<bytes::Bytes>> {
    use futures_util::StreamExt;
    enum Opened {
        Whole(bytes::Bytes),
        Streamed(tokio::fs::File),
    }
    // Opened when the stream is first polled (when the body is sent), not when it is built.
    let opened = async move {
        crate::blocking::spawn(move || -> std::io::Result<Opened> {
            use std::io::Read;
            let mut file = std::fs::File::open(&path)?;
            let len = file.metadata()?.len();
            if len > SPOOL_IN_MEMORY as u64 {
                return Ok(Opened::Streamed(tokio::fs::File::from_std(file)));
            }
            let mut whole = Vec::with_capacity(len as usize);
            file.read_to_end(&mut whole)?;
            Ok(Opened::Whole(whole.into()))
        })
        .await
    };
    futures_util::stream::once(opened)
        .map(|opened| match opened.map_err(std::io::Error::other).and_then(|o| o) {
            Ok(Opened::Whole(whole)) => futures_util::stream::iter([Ok(whole)]).boxed(),
            Ok(Opened::Streamed(file)) => tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024).boxed(),
            Err(e) => futures_util::stream::iter([Err(e)]).boxed(),
        })
        .flatten()
        .boxed()
}

/// Streams received MIME parts into the files of one message, hashing as it goes; a small part
/// is kept in memory instead ([`SunkPart::unwritten`]).
pub struct FileSink {
    files: MessageFiles,
    current: Option<(SpooledFile, Sha256)>,
    max_part_bytes: u64,
    written: u64,
    /// Bytes of this message's parts kept in memory (see [`hold_or_write`]).
    held: usize,
    pub parts: Vec<SunkPart>,
}

#[derive(Clone)]
pub struct SunkPart {
    pub content_id: String,
    pub content_type: String,
    /// Where the part is, or belongs while it is `unwritten`.
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
    /// The bytes of a part small enough to be gathered in memory ([`SPOOL_IN_MEMORY`]), whose
    /// file is not written yet: the receiver decrypts and decompresses it from here and writes
    /// only what it keeps, in the job that examines the message (no file written and read
    /// back, no hand-off to the blocking pool of its own).
    pub unwritten: Option<Vec<u8>>,
}

impl std::fmt::Debug for SunkPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SunkPart")
            .field("content_id", &self.content_id)
            .field("path", &self.path)
            .field("size", &self.size)
            .field("unwritten", &self.unwritten.as_ref().map(Vec::len))
            .finish()
    }
}

/// The bytes of submitted payloads still held in memory, one entry per payload in order
/// (`None`: its file is written; no entries: all are). The job that protects the message writes
/// them, reading them from here instead of their files, so a small submission costs no
/// hand-off to the blocking pool of its own and is not read back.
#[derive(Clone, Default)]
pub struct Unwritten(pub Vec<Option<Vec<u8>>>);

impl Unwritten {
    /// The bytes of payload `index`, when held here.
    pub fn get(&self, index: usize) -> Option<&[u8]> {
        self.0.get(index).and_then(Option::as_deref)
    }

    /// Writes each held payload to its path (`paths` in payload order). Blocking.
    pub fn write(&self, paths: &[&Path]) -> std::io::Result<()> {
        for (content, path) in self.0.iter().zip(paths) {
            if let Some(content) = content {
                write_part(path, content)?;
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for Unwritten {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|c| c.as_ref().map(Vec::len))).finish()
    }
}

/// Keeps a finished small file's `bytes` for the caller while the files of the same message
/// held so far (`held`) stay within [`SPOOL_IN_MEMORY`] together; past that, writes it now (one
/// hand-off), so a message of many small parts holds no more memory than one large part.
pub async fn hold_or_write(path: &Path, bytes: Vec<u8>, held: &mut usize) -> std::io::Result<Option<Vec<u8>>> {
    if *held + bytes.len() <= SPOOL_IN_MEMORY {
        *held += bytes.len();
        return Ok(Some(bytes));
    }
    let path = path.to_path_buf();
    crate::blocking::spawn(move || write_part(&path, &bytes)).await.map_err(std::io::Error::other)??;
    Ok(None)
}

/// Writes a part kept in memory to its file (and the file's folder, if new). Blocking.
pub fn write_part(path: &Path, content: &[u8]) -> std::io::Result<()> {
    write_new(path, content).map(drop)
}

impl FileSink {
    pub fn new(files: MessageFiles, max_part_bytes: u64) -> Self {
        FileSink { files, current: None, max_part_bytes, written: 0, held: 0, parts: Vec::new() }
    }
}

#[async_trait::async_trait]
impl PartSink for FileSink {
    async fn begin(&mut self, content_id: &str, content_type: &str) -> std::io::Result<()> {
        let path = self.files.part(self.parts.len());
        self.current = Some((SpooledFile::new(path.clone()), Sha256::new()));
        self.written = 0;
        self.parts.push(SunkPart {
            content_id: content_id.to_owned(),
            content_type: content_type.to_owned(),
            path,
            size: 0,
            sha256: String::new(),
            unwritten: None,
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
            file.write(bytes).await?;
        }
        Ok(())
    }

    async fn finish(&mut self) -> std::io::Result<()> {
        if let Some((file, hasher)) = self.current.take() {
            // A small part stays in memory; a large one is written, not synced: a received
            // part is often decrypted or decompressed into another file; what the commit
            // names is synced then ([`super::durability::FileSync`]).
            let unwritten = match (file.finish().await?, self.parts.last()) {
                (Some(bytes), Some(part)) => hold_or_write(&part.path, bytes, &mut self.held).await?,
                _ => None,
            };
            if let Some(part) = self.parts.last_mut() {
                part.size = self.written;
                part.sha256 = hex::encode(hasher.finalize());
                part.unwritten = unwritten;
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

/// Removes the message files (and the message folders of the layout before, see
/// [`MessageFiles`]) under `data_dir/{inbound,outbound}` that no stored payload names and that
/// are older than `grace` (what a crash or a failed write left between the rename and the
/// commit). Returns how many were removed. Linear: one pass over the store's paths, one over
/// the folders' entries.
pub async fn sweep_orphans(
    store: &dyn super::MessageStore,
    data_dir: &Path,
    grace: std::time::Duration,
) -> Result<usize, super::StoreError> {
    // By the message's key or folder name (a fresh UUID each), not by full path: a data
    // folder moved to another place keeps its rows' old paths, and must not look orphaned.
    let referenced: std::collections::HashSet<std::ffi::OsString> =
        store.payload_paths().await?.iter().filter_map(|p| owner_of(p)).collect();
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
                if !old_enough {
                    continue;
                }
                let name = entry.file_name();
                if path.is_dir() {
                    if is_message_folder(&name) && !referenced.contains(&name) {
                        tracing::warn!(folder = %path.display(), "removing a message folder no stored message names");
                        if std::fs::remove_dir_all(&path).is_ok() {
                            removed += 1;
                        }
                    }
                } else if owner_of(&path).is_some_and(|owner| !referenced.contains(&owner)) {
                    tracing::warn!(file = %path.display(), "removing a payload file no stored message names");
                    if std::fs::remove_file(&path).is_ok() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MessageStore;
    use futures_util::StreamExt;

    fn stored_naming(paths: &[&Path]) -> crate::store::NewMessage {
        let message = crate::store::NewMessage::for_tests("m@x", crate::lifecycle::Creation::Received);
        let payloads = paths
            .iter()
            .enumerate()
            .map(|(i, path)| crate::store::StoredPayload {
                content_id: format!("p{i}@x"),
                path: path.to_path_buf(),
                ..message.payloads[0].clone()
            })
            .collect();
        crate::store::NewMessage { payloads, ..message }
    }

    #[tokio::test]
    async fn the_orphan_sweep_keeps_what_a_row_names_in_either_layout_and_removes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (inbound, outbound) = (dir.path().join("inbound"), dir.path().join("outbound"));
        std::fs::create_dir_all(&inbound).unwrap();
        std::fs::create_dir_all(&outbound).unwrap();
        let write = |path: &Path| std::fs::write(path, b"x").unwrap();
        // Flat: a stored message's part, and its original beside the wire file.
        let kept = MessageFiles::new(inbound.clone());
        write(&kept.part(0));
        let sent = MessageFiles::new(outbound.clone());
        write(&sent.part(0));
        write(&sent.part(0).with_extension("enc"));
        // The layout before: a stored message's own folder.
        let old = inbound.join(uuid::Uuid::new_v4().to_string());
        std::fs::create_dir_all(&old).unwrap();
        write(&old.join("part-1"));
        // Orphans of both layouts, and files that are no message's.
        let orphan = MessageFiles::new(inbound.clone());
        write(&orphan.part(0));
        write(&orphan.part(0).with_extension("dec"));
        let orphan_folder = outbound.join(uuid::Uuid::new_v4().to_string());
        std::fs::create_dir_all(&orphan_folder).unwrap();
        write(&orphan_folder.join("part-1"));
        write(&inbound.join("README_first"));
        std::fs::create_dir_all(inbound.join("archive")).unwrap();

        let store = crate::store::sqlite::SqliteStore::open(&dir.path().join("messages.db")).unwrap();
        let named = [kept.part(0), sent.part(0).with_extension("enc"), old.join("part-1")];
        store.insert(stored_naming(&named.iter().map(PathBuf::as_path).collect::<Vec<_>>())).await.unwrap();
        let removed = sweep_orphans(&store, dir.path(), std::time::Duration::ZERO).await.unwrap();

        assert_eq!(removed, 3, "the orphan's two files and the orphaned folder");
        for path in named.iter().chain([&sent.part(0), &inbound.join("README_first"), &inbound.join("archive")]) {
            assert!(path.exists(), "{} is kept", path.display());
        }
        assert!(!orphan.part(0).exists() && !orphan.part(0).with_extension("dec").exists());
        assert!(!orphan_folder.exists());
    }

    #[test]
    fn a_file_belongs_to_its_key_or_to_its_message_folder() {
        let files = MessageFiles::new(PathBuf::from("/data/inbound"));
        let key = owner_of(&files.part(0)).unwrap();
        assert_eq!(owner_of(&files.part(0).with_extension("enc")), Some(key.clone()));
        assert_eq!(key.len(), 32);
        let old = format!("/data/outbound/{}/my_file.xml", uuid::Uuid::new_v4());
        assert_eq!(owner_of(Path::new(&old)).unwrap().len(), 36, "the folder, whatever the file's name");
        assert_eq!(owner_of(Path::new("/data/inbound/notes_2026.txt")), None);
        assert_eq!(plaintext_of(&files.part(2).with_extension("gz").with_extension("enc")), files.part(2));
    }

    #[tokio::test]
    async fn a_small_file_is_handed_back_unwritten_and_a_large_one_written_as_it_streams() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("new/folder/part-1");
        let mut file = SpooledFile::new(small.clone());
        file.write(b"<SPS").await.unwrap();
        file.write(b"Certificate/>").await.unwrap();
        assert_eq!(file.finish().await.unwrap().as_deref(), Some(&b"<SPSCertificate/>"[..]));
        assert!(!small.exists(), "the caller writes it");
        let held = Unwritten(vec![Some(b"<SPSCertificate/>".to_vec()), None]);
        held.write(&[&small, &dir.path().join("not-held")]).unwrap();
        assert_eq!(std::fs::read(&small).unwrap(), b"<SPSCertificate/>");
        assert!(!dir.path().join("not-held").exists());
        assert_eq!(format!("{held:?}"), "[Some(17), None]", "lengths, not bytes, in logs");

        let large = dir.path().join("other/part-1");
        let chunk: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut file = SpooledFile::new(large.clone());
        let mut expected = Vec::new();
        for _ in 0..5 {
            file.write(&chunk).await.unwrap();
            expected.extend_from_slice(&chunk);
        }
        assert!(large.exists(), "past the in-memory limit the file is written as it streams");
        assert_eq!(file.finish().await.unwrap(), None, "written, nothing handed back");
        assert_eq!(std::fs::read(&large).unwrap(), expected);

        let empty = SpooledFile::new(dir.path().join("empty/part-1")).finish().await.unwrap();
        assert_eq!(empty, Some(Vec::new()));
    }

    #[tokio::test]
    async fn a_message_holds_at_most_one_large_part_worth_of_small_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut held = 0;
        let part = vec![7u8; SPOOL_IN_MEMORY / 3];
        let mut kept = 0;
        for i in 0..5 {
            let path = dir.path().join(format!("m/part-{i}"));
            match hold_or_write(&path, part.clone(), &mut held).await.unwrap() {
                Some(bytes) => {
                    assert_eq!(bytes, part);
                    assert!(!path.exists());
                    kept += 1;
                }
                None => assert_eq!(std::fs::read(&path).unwrap(), part, "written once past the bound"),
            }
        }
        assert_eq!((kept, held), (3, 3 * part.len()), "three fit in {SPOOL_IN_MEMORY} bytes, two are written");
    }

    #[tokio::test]
    async fn a_stored_file_streams_whole_when_small_in_chunks_when_large_and_a_missing_one_fails() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small");
        std::fs::write(&small, b"payload").unwrap();
        let chunks: Vec<_> = stream_file(small).collect().await;
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].as_ref().unwrap().as_ref(), b"payload");

        let large = dir.path().join("large");
        let content: Vec<u8> = (0..(SPOOL_IN_MEMORY as u32 + 70_000)).map(|i| (i % 253) as u8).collect();
        std::fs::write(&large, &content).unwrap();
        let chunks: Vec<_> = stream_file(large).collect().await;
        assert!(chunks.len() > 1);
        let joined: Vec<u8> = chunks.into_iter().flat_map(|c| c.unwrap().to_vec()).collect();
        assert_eq!(joined, content);

        let missing: Vec<_> = stream_file(dir.path().join("missing")).collect().await;
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].as_ref().unwrap_err().kind(), std::io::ErrorKind::NotFound);
    }
}
