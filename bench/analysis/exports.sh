#!/bin/bash
# Sizes and times of `mmiotrace export` on 2,000,003 events (docs/BENCHMARKS.md,
# "Exports"): Perfetto's native trace against Chrome JSON, Parquet against
# the binary .mtb. Usage: bench/analysis/exports.sh [DIR]
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=${1:-$(mktemp -d)}
cargo build --release -p mmiotrace --manifest-path "$root/Cargo.toml" >&2
m=$root/target/release/mmiotrace
cd "$dir"
[ -f t2m.txt ] || python3 "$root/bench/analysis/gen_trace.py" 2000000 t2m.txt
events=$(grep -c '' t2m.txt)
size() { stat -c %s "$1"; }
run() {
  local out=$1; shift
  /usr/bin/time -f "%e %M" "$m" "$@" 2> time.log
  read -r secs kib < <(tail -1 time.log)
  printf "%-44s %12s bytes  %6.1f B/event  %5s s  %6s KiB\n" "$*" "$(size "$out")" \
    "$(echo "$(size "$out") / $events" | bc -l)" "$secs" "$kib"
}
echo "$events events, $(size t2m.txt) bytes of text"
run t2m.mtb convert t2m.txt -o t2m.mtb
run t2m.pftrace export --to perfetto t2m.txt -o t2m.pftrace
run t2m.json export --to chrome-json t2m.txt -o t2m.json
run t2m.parquet export --to parquet t2m.txt -o t2m.parquet
echo "  t2m.events.parquet: $(size t2m.events.parquet) bytes"
run t2m-b.pftrace export --to perfetto t2m.mtb -o t2m-b.pftrace
run t2m-b.parquet export --to parquet t2m.mtb -o t2m-b.parquet
