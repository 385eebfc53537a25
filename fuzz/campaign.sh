#!/usr/bin/env bash
# Runs every fuzz target in turn for SECONDS each (default 60: `make fuzz`), one job, on the
# committed seeds in fuzz/seeds/<target> and the working corpus fuzz/corpus/<target> (new
# inputs are added there), crashes in
# fuzz/artifacts/<target>. Prints one summary line per target: executions, coverage, findings.
# Core targets live in fuzz/ (ventanilla-core only); the runtime's own parsers in fuzz/runtime.
set -uo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=${1:-60}
TARGETS=${TARGETS:-"envelope multipart signed_envelope documents pmode iop runtime/config runtime/submission_metadata"}
mkdir -p logs
for entry in $TARGETS; do
  t=${entry#runtime/}
  dir=.
  [ "$t" != "$entry" ] && dir=runtime
  mkdir -p "corpus/$t" "artifacts/$t"
  cargo +nightly fuzz run --fuzz-dir "$dir" "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$SECONDS_EACH" -max_len=65536 \
    -rss_limit_mb=2048 -timeout=10 -artifact_prefix="artifacts/$t/" -print_final_stats=1 > "logs/$t.log" 2>&1
  rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$')
  cov=$(grep -oE '#[0-9]+.*cov: [0-9]+ ft: [0-9]+' "logs/$t.log" | tail -1 | grep -oE 'cov: [0-9]+ ft: [0-9]+')
  found=$(ls "artifacts/$t" | wc -l)
  echo "fuzz $t: ${execs:-?} executions, ${cov:-cov ?}, corpus $(ls "corpus/$t" | wc -l), findings $found (exit $rc)"
done
