//! Where the process's memory is, for `/metrics`: the resident set, the heap as the allocator
//! sees it, and SQLite's share of it. Read at scrape time.
//!
//! Resident memory alone cannot tell a leak from an allocator that keeps freed memory or a cache
//! that is still filling; these parts can. `heap_in_use` growing without end is a leak (it also
//! counts chunk headers and each thread's cache of freed chunks, so it moves by a MiB or two
//! from one scrape to the next); `heap_free` growing is fragmentation (memory freed but kept by
//! malloc); `sqlite` is bounded by the page caches of the store's connections.

/// One part of the process's memory, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// The `part` label: `resident`, `heap_in_use`, `heap_free`, `heap_mapped`, `sqlite`.
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

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap() -> Vec<Part> {
    // SAFETY: mallinfo2 has no preconditions; it locks each arena while it counts. Its cost
    // grows with the number of free chunks, which is why it runs at scrape time only.
    let info = unsafe { libc::mallinfo2() };
    vec![
        // Allocated by the program: chunks handed out from the arenas and large mmapped blocks.
        Part { name: "heap_in_use", bytes: (info.uordblks + info.hblkhd) as u64 },
        // Freed by the program but kept by malloc, in bins and fastbins.
        Part { name: "heap_free", bytes: info.fordblks as u64 },
        // Of the heap in use, the blocks mmapped one per allocation (large ones).
        Part { name: "heap_mapped", bytes: info.hblkhd as u64 },
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
        assert!(part("heap_mapped").unwrap() >= 64 << 20);
        drop(block);
    }

    #[test]
    fn sqlite_memory_is_counted() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (randomblob(100000));").unwrap();
        assert!(part("sqlite").unwrap() > 100_000);
    }
}
