#!/bin/sh
# Runs in the lab guest (lab/run): Linux's own mmiotrace on the kernel's
# e1000 driver (probe, link up, 4 workers of `ethtool -S`), between markers
# in QEMU's log, for the side-by-side comparison in docs/BENCHMARKS.md.
# Usage: kernel-mmiotrace.sh OUT LAB_DRIVER [offline|online|none]
# With "online", CPUs 1-3 are brought back online while tracing (the case
# the seed report describes: the kernel loses events, and may panic). With
# "none", the same workload runs without the kernel's tracer (for
# `mmiotrace vm` alone, and the untraced baseline: bench/vm).
# OUT/workload.seconds: how long the marked part took, from the guest's clock.
set -u
OUT=$1 LD=$2 MODE=${3:-offline}
T=/sys/kernel/tracing
E1000=0000:00:04.0
WORKERS=4 ROUNDS=${ROUNDS:-25}

if [ "$MODE" != none ]; then
    echo 1 >$T/tracing_on
    echo 16384 >$T/buffer_size_kb
    echo mmiotrace >$T/current_tracer || exit 1
    echo "online CPUs while tracing: $(cat /sys/devices/system/cpu/online)" >"$OUT/kernel.cpus"
    cat $T/trace_pipe >"$OUT/kernel.trace" &
    reader=$!
fi
start=$(date +%s.%N)
"$LD" mark "begin kernel"
if [ "$MODE" = online ]; then
    for cpu in 1 2 3; do echo 1 >/sys/devices/system/cpu/cpu$cpu/online; done
    echo "after bringing them back: $(cat /sys/devices/system/cpu/online)" >>"$OUT/kernel.cpus"
fi
modprobe e1000
dev=$(ls "/sys/bus/pci/devices/$E1000/net")
ip link set "$dev" up
sleep 1
workers=""
for w in $(seq $WORKERS); do
    (for r in $(seq $ROUNDS); do ethtool -S "$dev" >/dev/null; done) &
    workers="$workers $!"
done
wait $workers
ip link set "$dev" down
"$LD" mark "end kernel"
end=$(date +%s.%N)
echo "$start $end" | awk '{ printf "%.3f\n", $2 - $1 }' >"$OUT/workload.seconds"
[ "$MODE" = none ] && exit 0
sleep 1
echo nop >$T/current_tracer
sleep 1
kill $reader
echo "kernel mmiotrace: $(grep -c '^[RW] ' "$OUT/kernel.trace") accesses traced"
