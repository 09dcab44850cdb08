#!/bin/bash
# Peak memory (maximum resident set size, /usr/bin/time -v) and wall time of
# the analysis commands on a trace and one 10x larger (docs/BENCHMARKS.md,
# "Analysis commands"). Usage: bench/analysis/measure.sh [DIR]
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=${1:-$(mktemp -d)}
cargo build --release -p mmiotrace --manifest-path "$root/Cargo.toml" >&2
m=$root/target/release/mmiotrace
cd "$dir"
[ -f small.txt ] || python3 "$root/bench/analysis/gen_trace.py" 600000 small.txt
[ -f large.txt ] || python3 "$root/bench/analysis/gen_trace.py" 6000000 large.txt
run() {
  local label=$1; shift
  /usr/bin/time -v "$@" > /dev/null 2> time.log || true
  printf "%-34s %10s KiB  %s\n" "$label" \
    "$(awk '/Maximum resident/ {print $6}' time.log)" \
    "$(awk '/Elapsed \(wall/ {print $8}' time.log)"
}
for size in small large; do
  in=$size.txt
  ls -l "$in" >&2
  run "$size stats" "$m" stats "$in"
  run "$size filter --dir W" "$m" filter --dir W "$in" -o out.txt
  run "$size collapse" "$m" collapse "$in" -o out.txt
  run "$size collapse -o .mtb" "$m" collapse "$in" -o out.mtb
  run "$size export --to perfetto" "$m" export --to perfetto "$in" -o out.json
  run "$size export --to jsonl" "$m" export --to jsonl "$in" -o out.jsonl
  run "$size export --to csv" "$m" export --to csv "$in" -o out.csv
  run "$size export --to parquet" "$m" export --to parquet "$in" -o out.parquet
  run "$size diff (same trace)" "$m" diff "$in" "$in"
  run "$size diff --exact (same trace)" "$m" diff --exact "$in" "$in"
done
