#!/usr/bin/env python3
# The retention index of 158cada, measured on the query the SQLite store runs (PURGE_CONTENT in
# src/store/sqlite.rs) over a synthetic table with the columns it reads: python3 benches/sqlite_retention_index.py
# Retention's content query on 1,000,000 acknowledged messages, 900,000 of them emptied by
# earlier passes (purged = 1) and 100,000 still to empty: the old index against the new.
import sqlite3, time
def build(index):
    c = sqlite3.connect(':memory:')
    c.execute("CREATE TABLE messages (row INTEGER PRIMARY KEY, state TEXT, purged INTEGER, updated_at INTEGER, pmode TEXT, pad BLOB)")
    rows = ((i, 'acknowledged', 1 if i < 900_000 else 0, 1_000_000 + i, 'cl-pe', b'x' * 200) for i in range(1_000_000))
    c.executemany("INSERT INTO messages VALUES (?,?,?,?,?,?)", rows)
    c.execute(index)
    c.execute("ANALYZE")
    return c
for name, index in [("old (state, updated_at)", "CREATE INDEX i ON messages (state, updated_at)"),
                    ("new (state, purged, updated_at)", "CREATE INDEX i ON messages (state, purged, updated_at)")]:
    c = build(index)
    q = "SELECT row FROM messages WHERE state = ? AND purged = 0 AND updated_at < ? LIMIT ?"
    plan = c.execute("EXPLAIN QUERY PLAN " + q, ('acknowledged', 3_000_000, 500)).fetchall()
    times = []
    # A pass: batches of 500 until fewer come back, each batch's rows then marked purged.
    t0 = time.perf_counter(); batches = 0
    while True:
        t = time.perf_counter()
        got = [r[0] for r in c.execute(q, ('acknowledged', 3_000_000, 500))]
        times.append(time.perf_counter() - t)
        c.executemany("UPDATE messages SET purged = 1 WHERE row = ?", ((r,) for r in got))
        batches += 1
        if len(got) < 500: break
    total = time.perf_counter() - t0
    times.sort()
    print(f"{name}: plan {plan[0][3]}; {batches} batches, select median {times[len(times)//2]*1000:.2f} ms, max {times[-1]*1000:.1f} ms; pass {total:.2f} s")
    c.close()
