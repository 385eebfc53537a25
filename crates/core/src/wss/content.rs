//! A MIME part's bytes as the signing and encrypting steps read them: a file, streamed (any
//! size), or memory, for a small part the sender compressed without writing it to a file.

use std::path::Path;

/// A part at most this large is handled in memory: the receiver decrypts and decompresses it
/// back into its own file, the sender compresses it without an intermediate file. Fewer files
/// matter more than the copies: on ext4 without a journal every inode freed in the last
/// minutes makes each new inode's allocation look further (a tenth of a receiver's CPU at
/// 200 msg/s).
pub const IN_MEMORY_MAX: u64 = 256 << 10;

#[derive(Debug, Clone, Copy)]
pub enum Content<'a> {
    File(&'a Path),
    Memory(&'a [u8]),
}

impl<'a> From<&'a Path> for Content<'a> {
    fn from(path: &'a Path) -> Self {
        Content::File(path)
    }
}

impl<'a> From<&'a std::path::PathBuf> for Content<'a> {
    fn from(path: &'a std::path::PathBuf) -> Self {
        Content::File(path)
    }
}

impl Content<'_> {
    /// The whole content in memory (a file is read; the callers bound its size).
    pub fn read(&self) -> std::io::Result<std::borrow::Cow<'_, [u8]>> {
        match self {
            Content::File(path) => std::fs::read(path).map(std::borrow::Cow::Owned),
            Content::Memory(bytes) => Ok(std::borrow::Cow::Borrowed(bytes)),
        }
    }
}
