#!/usr/bin/env bash
# The PostgreSQL store's queue counts (what /metrics, the alerts and the partners page read) at
# N stored messages, on a throw-away server (Debian's package): the full count the store ran
# before, the one-time fill when a store opens with this release, the read now, and the
# triggers' cost per write of a message in interleaved rounds with and without them.
#   make bench-postgres [PG_MESSAGES=1000000]
# Prints `bench: NAME value UNIT` lines like benches/bench.rs. Run as root (the server runs as
# the postgres user) or as an ordinary user.
set -euo pipefail
N=${1:-1000000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort | tail -1)
DIR=$(mktemp -d /tmp/pg-queue-counts.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres:postgres "$DIR"
stop() { as_pg "$BIN/pg_ctl" -D "$DIR/data" stop -m immediate > /dev/null 2>&1 || true; rm -rf "$DIR"; }
trap stop EXIT
as_pg "$BIN/initdb" -A trust -U postgres --no-sync -D "$DIR/data" > /dev/null
as_pg "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -o "-p $PORT -c listen_addresses=127.0.0.1 -k $DIR" start > /dev/null
for _ in $(seq 50); do "$BIN/pg_isready" -h 127.0.0.1 -p "$PORT" > /dev/null && break; sleep 0.2; done
P="psql -h 127.0.0.1 -p $PORT -U postgres -q -X -v ON_ERROR_STOP=1"
# The store's own SQL, taken from its source.
python3 - "$ROOT/src/store/postgres.rs" "$DIR" <<'PY'
import sys
s = open(sys.argv[1]).read()
def const(name):
    a = s.index('const %s: &str = ' % name)
    raw = s[a:a + 40].find('r#"') >= 0
    a = s.index('r#"' if raw else '"', a) + (3 if raw else 1)
    return s[a:s.index('"#;' if raw else '";', a)]
for name, file in [("SCHEMA", "schema"), ("QUEUE_COUNTS", "counts"), ("FOLD_QUEUE_COUNT_CHANGES", "fold"), ("QUEUE_STATS", "stats")]:
    open("%s/%s.sql" % (sys.argv[2], file), "w").write(const(name) + ";\n")
PY
# `bench: NAME value ms`: the sum of psql's `\timing` lines on stdin.
ms() { grep -o 'Time: [0-9.]*' | awk -v name="$1" '{t += $2} END {printf "bench: %s %.1f ms\n", name, t}'; }
$P -f "$DIR/schema.sql" > /dev/null 2>&1
$P > /dev/null <<SQL
INSERT INTO messages (direction, message_id, conversation_id, pmode, leg, partner, service, action, state,
  created_at, updated_at, envelope, purged)
SELECT CASE WHEN i % 2 = 0 THEN 'outbound' ELSE 'inbound' END, 'm' || i || '@x', 'c' || i, 'pm', 'leg1',
  (ARRAY['cl', 'co', 'mx', 'pe'])[1 + i % 4], 's', 'a',
  CASE WHEN i % 1000 = 0 THEN 'failed' WHEN i > $N - 50 THEN 'sending'
       WHEN i % 2 = 0 THEN 'acknowledged' ELSE 'delivered' END,
  1700000000000 + i * 10, 1700000000000 + i * 10 + 5, decode(repeat('ab', 3000), 'hex'), i < $N / 2
FROM generate_series(1, $N) i;
VACUUM ANALYZE messages;
SQL
echo "bench: pg-stored-messages $N msg"
for k in 1 2 3; do
  ( echo '\timing on'; echo "SELECT direction, state, partner, leg, COUNT(*), MIN(created_at), MAX(updated_at)
    FROM messages GROUP BY direction, state, partner, leg;" ) | $P -o /dev/null | ms pg-queue-read-full-count-ms
done
( echo '\timing on'; echo 'BEGIN;'; cat "$DIR/counts.sql"; echo 'COMMIT;' ) | $P -o /dev/null 2>/dev/null | ms pg-queue-counts-fill-ms
for k in 1 2 3; do
  ( echo '\timing on'; cat "$DIR/fold.sql" "$DIR/stats.sql" ) | $P -o /dev/null | ms pg-queue-read-ms
done
# The triggers' cost: single-statement writes (an insert, then a change of state), in rounds.
TRIGGERS=$(python3 -c "import sys; s = open(sys.argv[1]).read(); print(s[s.index('DROP TRIGGER'):])" "$DIR/counts.sql")
for r in 1 2 3 4; do
  for mode in with without; do
    if [ $mode = with ]; then echo "$TRIGGERS" | $P 2>/dev/null; else
      $P -c "DROP TRIGGER queue_counts_insert_delete ON messages; DROP TRIGGER queue_counts_update ON messages;"; fi
    { for i in $(seq 1 5000); do echo "INSERT INTO messages (direction, message_id, conversation_id, pmode, leg, partner, service, action, state, created_at, updated_at, envelope) VALUES ('outbound', 'w$mode$r-$i@x', 'c', 'pm', 'leg1', 'cl', 's', 'a', 'submitted', 1, 1, '\\x00');"; done
      for i in $(seq 1 5000); do echo "UPDATE messages SET state = 'sending', updated_at = 2 WHERE direction = 'outbound' AND message_id = 'w$mode$r-$i@x';"; done; } > "$DIR/writes.sql"
    s=$(date +%s%N); $P -f "$DIR/writes.sql"; e=$(date +%s%N)
    echo "bench: pg-write-us-$mode-triggers $(( (e - s) / 10000 / 1000 )) us"
    $P -o /dev/null -f "$DIR/fold.sql"
  done
done
