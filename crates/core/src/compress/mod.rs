//! AS4 payload compression (AS4 §3.1): gzip of each payload before signing and encryption,
//! and bounded decompression on receipt (EBMS:0303 on violation or corrupt data).

use flate2::bufread::GzDecoder;
use flate2::write::GzEncoder;
use std::io::{Read, Write};
use std::path::Path;

pub const GZIP: &str = "application/gzip";

#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    #[error("file: {0}")]
    Io(#[from] std::io::Error),
    #[error("decompressed data exceeds {0} bytes")]
    TooLarge(u64),
    #[error("not valid gzip data: {0}")]
    Corrupt(String),
}

/// Gzips `input` into `output` (streaming); returns the compressed size. The output is not
/// synced: often an intermediate, it is made durable by the caller when a commit names it.
///
/// Level 1: on an 8 KB ePhyto it takes a third of the time of the default level 6 (49 against
/// 144 µs here) for output 37% larger (2.9 against 2.1 KB); on a trade document the gain of a
/// higher level is small and its CPU is paid on every message. The backend is zlib-rs (flate2
/// feature): miniz_oxide, flate2's default, took 137 µs at level 1 and 48 µs to gunzip what
/// zlib-rs gunzips in 33 (file write included).
pub fn gzip_file(input: &Path, output: &Path) -> Result<u64, CompressError> {
    let mut reader = std::fs::File::open(input)?;
    let file = std::fs::File::create(output)?;
    let mut encoder = GzEncoder::new(std::io::BufWriter::new(file), flate2::Compression::fast());
    std::io::copy(&mut reader, &mut encoder)?;
    let writer = encoder.finish()?;
    writer.into_inner().map_err(|e| e.into_error())?;
    Ok(std::fs::metadata(output)?.len())
}

/// [`gzip_file`] in memory, for a small part that is encrypted next (no intermediate file).
///
/// The deflate state (about 270 KiB at level 1: window, hash chains, pending output) comes
/// from a small pool instead of being allocated for each part: four allocations of ~64 KiB per
/// message, freed again, were most of the sender's heap churn and left its malloc arenas
/// holding freed memory (a heap profile of the soak). The gzip framing (RFC 1952) around the
/// raw deflate stream is the one flate2's `GzEncoder` writes at this level, byte for byte.
pub fn gzip_bytes(input: &[u8]) -> Result<Vec<u8>, CompressError> {
    let mut encoder = deflaters::take();
    let mut out = Vec::with_capacity(input.len() / 2 + 64);
    out.extend_from_slice(&GZIP_HEADER);
    // Starts a new stream into `out` (the previous one was finished, or is abandoned).
    encoder.reset(out)?;
    encoder.write_all(input)?;
    encoder.try_finish()?;
    let mut out = std::mem::take(encoder.get_mut());
    deflaters::give_back(encoder);
    let mut crc = flate2::Crc::new();
    crc.update(input);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    // ISIZE: the input's length modulo 2^32 (RFC 1952 §2.3.1).
    out.extend_from_slice(&(input.len() as u32).to_le_bytes());
    Ok(out)
}

/// ID1 ID2, CM = deflate, no flags, no time, XFL = 4 (fastest), OS = unknown: flate2's header
/// for level 1.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 255];

/// Raw deflate encoders at level 1, kept between parts.
mod deflaters {
    use flate2::write::DeflateEncoder;
    use std::sync::Mutex;

    /// Idle encoders kept: as many parts are compressed at once as there are blocking
    /// threads, but rarely more than a few; past this they are dropped.
    const IDLE_KEPT: usize = 4;

    static IDLE: Mutex<Vec<DeflateEncoder<Vec<u8>>>> = Mutex::new(Vec::new());

    pub(super) fn take() -> DeflateEncoder<Vec<u8>> {
        IDLE.lock()
            .ok()
            .and_then(|mut idle| idle.pop())
            .unwrap_or_else(|| DeflateEncoder::new(Vec::new(), flate2::Compression::fast()))
    }

    pub(super) fn give_back(encoder: DeflateEncoder<Vec<u8>>) {
        if let Ok(mut idle) = IDLE.lock()
            && idle.len() < IDLE_KEPT
        {
            idle.push(encoder);
        }
    }
}

/// Gunzips `input` into `output`, refusing more than `limit` bytes of output (a bound on
/// decompression bombs); the output is removed on any error, and not synced (the caller
/// makes durable what a commit names).
pub fn gunzip_file(input: &Path, output: &Path, limit: u64) -> Result<Gunzipped, CompressError> {
    let result = gunzip_inner(input, output, limit);
    if result.is_err() {
        let _ = std::fs::remove_file(output);
    }
    result
}

/// Gunzips the file at `path` into itself: read whole first (the caller keeps it small, see
/// `wss::content::IN_MEMORY_MAX`), so no second file is created and none unlinked.
/// Bounded like [`gunzip_file`]; on any error the file is removed.
pub fn gunzip_in_place(path: &Path, limit: u64) -> Result<Gunzipped, CompressError> {
    gunzip_bytes(&std::fs::read(path)?, path, limit)
}

/// Gunzips `compressed` (a small part held in memory) into the file `output`, bounded like
/// [`gunzip_file`]; on any error the file is removed.
pub fn gunzip_bytes(compressed: &[u8], output: &Path, limit: u64) -> Result<Gunzipped, CompressError> {
    // The slice is its own buffer (no reader copy) and a small part needs no 64 KiB one: a
    // zeroed 64 KiB allocation per part, freed again, was a quarter of the receiver's gunzip.
    let result = gunzip_into(GzDecoder::new(compressed), output, limit, &mut [0u8; 16 << 10]);
    if result.is_err() {
        let _ = std::fs::remove_file(output);
    }
    result
}

/// Gunzips `compressed` (a small part held in memory) into memory, bounded like
/// [`gunzip_file`]: the receiver writes the bytes to their file once and keeps them for the
/// checks and the row's copy that follow, instead of reading the file back.
pub fn gunzip_to_memory(compressed: &[u8], limit: u64) -> Result<(Vec<u8>, Gunzipped), CompressError> {
    use sha2::Digest as _;
    // A trade document deflates 3-5 times; the bound caps the first allocation too.
    let guess = (compressed.len() as u64).saturating_mul(4).min(limit) as usize;
    let mut out = Vec::with_capacity(guess);
    GzDecoder::new(compressed)
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| CompressError::Corrupt(e.to_string()))?;
    if out.len() as u64 > limit {
        return Err(CompressError::TooLarge(limit));
    }
    let gunzipped = Gunzipped { size: out.len() as u64, sha256: sha2::Sha256::digest(&out).into() };
    Ok((out, gunzipped))
}

/// Gunzips `compressed` (a small part held in memory) into the file `output`, bounded by
/// `limit` like [`gunzip_file`], and returns the bytes as well while they fit in `cap`: a
/// part that inflates past `cap` is written as it inflates, never held whole (a few hundred
/// KiB of gzip may inflate to the leg's whole payload limit). On any error the file is removed.
pub fn gunzip_held(
    compressed: &[u8],
    output: &Path,
    limit: u64,
    cap: u64,
) -> Result<(Gunzipped, Option<Vec<u8>>), CompressError> {
    match gunzip_to_memory(compressed, limit.min(cap)) {
        Ok((plain, gunzipped)) => {
            if let Err(e) = std::fs::write(output, &plain) {
                let _ = std::fs::remove_file(output);
                return Err(e.into());
            }
            Ok((gunzipped, Some(plain)))
        }
        Err(CompressError::TooLarge(_)) if limit > cap => Ok((gunzip_bytes(compressed, output, limit)?, None)),
        Err(e) => Err(e),
    }
}

fn gunzip_inner(input: &Path, output: &Path, limit: u64) -> Result<Gunzipped, CompressError> {
    let input = std::io::BufReader::with_capacity(64 << 10, std::fs::File::open(input)?);
    gunzip_into(GzDecoder::new(input), output, limit, &mut vec![0u8; 64 << 10])
}

/// What a gunzip wrote: its size and SHA-256, hashed on the way (the file is not read again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gunzipped {
    pub size: u64,
    pub sha256: [u8; 32],
}

/// Streams `decoder` into `output` through `buf`; each read goes straight to the file (a read
/// fills at most `buf`, so a writer buffer in between would only copy).
fn gunzip_into(decoder: impl Read, output: &Path, limit: u64, buf: &mut [u8]) -> Result<Gunzipped, CompressError> {
    use sha2::Digest as _;
    let mut bounded = decoder.take(limit + 1);
    // Not truncated first: a file decompressed in place is overwritten (it only grows, as a
    // rule) and cut to size at the end; freeing its blocks only to take them again cost the
    // receiver a truncate per part.
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(output)?;
    let mut hasher = sha2::Sha256::new();
    let mut total = 0u64;
    loop {
        let n = bounded.read(buf).map_err(|e| CompressError::Corrupt(e.to_string()))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > limit {
            return Err(CompressError::TooLarge(limit));
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])?;
    }
    file.set_len(total)?;
    Ok(Gunzipped { size: total, sha256: hasher.finalize().into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_gzip_is_byte_for_byte_flate2s_and_reuse_changes_nothing() {
        let flate2_gzip = |input: &[u8]| {
            let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(input).unwrap();
            encoder.finish().unwrap()
        };
        let inputs: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"x".to_vec(),
            "ePhyto ".repeat(10_000).into_bytes(),
            (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect(),
        ];
        // Each input twice and interleaved: an encoder reused after any other gives the same.
        for input in inputs.iter().chain(inputs.iter().rev()) {
            let gz = gzip_bytes(input).unwrap();
            assert_eq!(gz, flate2_gzip(input), "{} bytes", input.len());
            assert_eq!(gunzip_to_memory(&gz, 1 << 20).unwrap().0, *input);
        }
        // From several threads at once, each its own encoder.
        std::thread::scope(|s| {
            for t in 0..6u8 {
                let input = vec![t; 50_000 + usize::from(t)];
                s.spawn(move || {
                    for _ in 0..20 {
                        assert_eq!(gunzip_to_memory(&gzip_bytes(&input).unwrap(), 1 << 20).unwrap().0, input);
                    }
                });
            }
        });
    }

    #[test]
    fn gzip_in_memory_reads_back_like_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let text = "ePhyto ".repeat(10_000);
        let gz = dir.path().join("m.gz");
        std::fs::write(&gz, gzip_bytes(text.as_bytes()).unwrap()).unwrap();
        let back = dir.path().join("back");
        let gunzipped = gunzip_file(&gz, &back, 1 << 20).unwrap();
        assert_eq!(gunzipped.size, text.len() as u64);
        assert_eq!(std::fs::read(&back).unwrap(), text.as_bytes());
        assert_eq!(gunzipped.sha256, crate::util::sha256_file(&back).unwrap(), "hashed on the way");
        // In place, an output shorter than the gzip it replaces is cut to size.
        let empty = dir.path().join("empty.gz");
        std::fs::write(&empty, gzip_bytes(b"").unwrap()).unwrap();
        assert_eq!(gunzip_in_place(&empty, 10).unwrap().size, 0);
        assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);
    }

    #[test]
    fn gunzip_in_memory_agrees_with_the_file_and_keeps_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let text = "ePhyto ".repeat(10_000);
        let gz = gzip_bytes(text.as_bytes()).unwrap();
        let (bytes, gunzipped) = gunzip_to_memory(&gz, 1 << 20).unwrap();
        assert_eq!(bytes, text.as_bytes());
        let file = dir.path().join("f");
        assert_eq!(gunzipped, gunzip_bytes(&gz, &file, 1 << 20).unwrap(), "same size and hash as into a file");
        assert!(matches!(gunzip_to_memory(&gz, 69_999), Err(CompressError::TooLarge(69_999))));
        assert_eq!(gunzip_to_memory(&gz, 70_000).unwrap().1.size, 70_000, "exactly the bound is allowed");
        assert!(matches!(gunzip_to_memory(b"\x1f\x8b\x08\x00garbage", 1000), Err(CompressError::Corrupt(_))));
        assert_eq!(gunzip_to_memory(&gzip_bytes(b"").unwrap(), 10).unwrap().0, b"");
    }

    #[test]
    fn a_part_that_inflates_past_the_cap_is_written_as_it_inflates_not_held() {
        let dir = tempfile::tempdir().unwrap();
        let (small, large) = ("ePhyto ".repeat(100), vec![0u8; 1 << 20]);
        let out = dir.path().join("small");
        let (gunzipped, held) = gunzip_held(&gzip_bytes(small.as_bytes()).unwrap(), &out, 1 << 30, 4096).unwrap();
        assert_eq!(held.as_deref(), Some(small.as_bytes()), "within the cap: held");
        assert_eq!(std::fs::read(&out).unwrap(), small.as_bytes());
        assert_eq!(gunzipped.size, small.len() as u64);
        // A megabyte of zeros gzips to a few kilobytes: it inflates past the cap, streamed to its file.
        let gz = gzip_bytes(&large).unwrap();
        assert!(gz.len() < large.len() / 100);
        let out = dir.path().join("large");
        let (gunzipped, held) = gunzip_held(&gz, &out, 1 << 30, 4096).unwrap();
        assert!(held.is_none(), "past the cap: not held");
        assert_eq!(gunzipped, gunzip_bytes(&gz, &dir.path().join("again"), 1 << 30).unwrap());
        assert_eq!(std::fs::read(&out).unwrap(), large);
        // The leg's limit still refuses it, under or over the cap.
        assert!(matches!(gunzip_held(&gz, &out, 1000, 4096), Err(CompressError::TooLarge(1000))));
        assert!(matches!(gunzip_held(&gz, &out, 100_000, 4096), Err(CompressError::TooLarge(100_000))));
        assert!(!out.exists(), "removed on refusal");
    }

    #[test]
    fn round_trip_bound_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("p");
        std::fs::write(&plain, "ePhyto ".repeat(10_000)).unwrap();
        let gz = dir.path().join("p.gz");
        let size = gzip_file(&plain, &gz).unwrap();
        assert!(size < 1000);
        assert_eq!(gunzip_file(&gz, &dir.path().join("out"), 1 << 20).unwrap().size, 70_000);
        assert_eq!(std::fs::read(dir.path().join("out")).unwrap(), std::fs::read(&plain).unwrap());
        assert!(matches!(gunzip_file(&gz, &dir.path().join("small"), 1000), Err(CompressError::TooLarge(1000))));
        assert!(!dir.path().join("small").exists());
        std::fs::write(dir.path().join("bad.gz"), b"\x1f\x8b\x08\x00garbage").unwrap();
        assert!(matches!(
            gunzip_file(&dir.path().join("bad.gz"), &dir.path().join("x"), 1000),
            Err(CompressError::Corrupt(_))
        ));
        // In place: the same bytes, the same bound.
        let copy = dir.path().join("copy.gz");
        std::fs::copy(&gz, &copy).unwrap();
        assert_eq!(gunzip_in_place(&copy, 1 << 20).unwrap().size, 70_000);
        assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&plain).unwrap());
        std::fs::copy(&gz, &copy).unwrap();
        assert!(matches!(gunzip_in_place(&copy, 1000), Err(CompressError::TooLarge(1000))));
        assert!(!copy.exists());
    }
}
