//! Where the process's memory is, for `/metrics`: the resident set, the heap as the allocator
//! sees it, and SQLite's share of it. Read at scrape time.
//!
//! Resident memory alone cannot tell a leak from an allocator that keeps freed memory or a cache
//! that is still filling; these parts can. `heap_in_use` growing without end is a leak;
//! `heap_free` growing is fragmentation (memory freed but kept by the allocator, in pages still
//! partly used or not yet given back); `heap_metadata` is the allocator's own bookkeeping;
//! `sqlite` is bounded by the page caches of the store's connections.
//!
//! The heap is jemalloc's (see `main.rs`): every allocation of the process, the C libraries'
//! included, goes through it, so its counters are the whole heap. A build without the
//! `jemalloc` feature reads glibc's `mallinfo2` instead (no `heap_metadata` there).

/// One part of the process's memory, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// The `part` label: `resident`, `heap_in_use`, `heap_free`, `heap_metadata`, `sqlite`.
    pub name: &'static str,
    pub bytes: u64,
}

/// The parts this platform can tell (the heap's only with glibc).
pub fn parts() -> Vec<Part> {
    let mut parts = Vec::with_capacity(5);
    if let Some(bytes) = resident_bytes() {
        parts.push(Part { name: "resident", bytes });
    }
    parts.extend(heap());
    // SAFETY: a read of SQLite's global counter; it takes SQLite's own mutex.
    let sqlite = unsafe { rusqlite::ffi::sqlite3_memory_used() };
    parts.push(Part { name: "sqlite", bytes: sqlite.max(0) as u64 });
    parts
}

/// The resident set, from `/proc/self/statm` (its second field, in pages).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

#[cfg(all(feature = "jemalloc", target_os = "linux", target_env = "gnu"))]
fn heap() -> Vec<Part> {
    use tikv_jemalloc_ctl::{epoch, stats};
    // jemalloc's counters are a snapshot taken when the epoch advances.
    if epoch::advance().is_err() {
        return Vec::new();
    }
    let (Ok(allocated), Ok(resident), Ok(metadata)) =
        (stats::allocated::read(), stats::resident::read(), stats::metadata::read())
    else {
        return Vec::new();
    };
    let (allocated, resident, metadata) = (allocated as u64, resident as u64, metadata as u64);
    vec![
        // Allocated by the program and not freed yet.
        Part { name: "heap_in_use", bytes: allocated },
        // Resident for the heap but not handed out: freed space in pages still partly used, and
        // freed pages jemalloc has not given back yet (it does after a few seconds unused).
        Part { name: "heap_free", bytes: resident.saturating_sub(allocated + metadata) },
        // jemalloc's own bookkeeping.
        Part { name: "heap_metadata", bytes: metadata },
    ]
}

#[cfg(all(not(feature = "jemalloc"), target_os = "linux", target_env = "gnu"))]
fn heap() -> Vec<Part> {
    // SAFETY: mallinfo2 has no preconditions; it locks each arena while it counts. Its cost
    // grows with the number of free chunks, which is why it runs at scrape time only.
    let info = unsafe { libc::mallinfo2() };
    vec![
        // Allocated by the program (glibc counts its per-thread caches of freed chunks here).
        Part { name: "heap_in_use", bytes: (info.uordblks + info.hblkhd) as u64 },
        // Freed by the program but kept by malloc, in bins and fastbins.
        Part { name: "heap_free", bytes: info.fordblks as u64 },
    ]
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap() -> Vec<Part> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(name: &str) -> Option<u64> {
        parts().into_iter().find(|p| p.name == name).map(|p| p.bytes)
    }

    #[test]
    fn the_resident_set_is_read() {
        assert!(part("resident").is_some_and(|b| b > 1 << 20), "{:?}", parts());
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_live_allocation_shows_in_the_heap() {
        let before = part("heap_in_use").unwrap();
        let block = std::hint::black_box(vec![1u8; 64 << 20]);
        let during = part("heap_in_use").unwrap();
        // Other tests allocate at the same time; 64 MiB stands out from them.
        assert!(during >= before + (32 << 20), "before {before}, with 64 MiB held {during}");
        #[cfg(feature = "jemalloc")]
        assert!(part("heap_metadata").is_some_and(|b| b > 0), "{:?}", parts());
        drop(block);
    }

    /// The C libraries allocate through the same allocator: what libc's `malloc` hands out
    /// shows in jemalloc's counters.
    #[cfg(all(feature = "jemalloc", target_os = "linux", target_env = "gnu"))]
    #[test]
    fn the_c_libraries_allocate_from_the_same_heap() {
        let before = part("heap_in_use").unwrap();
        // SAFETY: a plain malloc, freed below.
        let block = unsafe { libc::malloc(64 << 20) };
        assert!(!block.is_null());
        let during = part("heap_in_use").unwrap();
        // SAFETY: `block` came from malloc above and is freed once.
        unsafe { libc::free(block) };
        assert!(during >= before + (32 << 20), "before {before}, with 64 MiB from malloc {during}");
    }

    #[test]
    fn sqlite_memory_is_counted() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (randomblob(100000));").unwrap();
        assert!(part("sqlite").unwrap() > 100_000);
    }
}
