#!/bin/sh
# Runs in the lab guest (lab/run): Linux's own mmiotrace on the kernel's
# e1000 driver (probe, link up, 4 workers of `ethtool -S`), between markers
# in QEMU's log, for the side-by-side comparison in docs/BENCHMARKS.md.
# Usage: kernel-mmiotrace.sh OUT LAB_DRIVER [online]
# With "online", CPUs 1-3 are brought back online while tracing (the case
# the seed report describes: the kernel loses events, and may panic).
set -u
OUT=$1 LD=$2 MODE=${3:-offline}
T=/sys/kernel/tracing
E1000=0000:00:04.0
WORKERS=4 ROUNDS=${ROUNDS:-25}

echo 1 >$T/tracing_on
echo 16384 >$T/buffer_size_kb
echo mmiotrace >$T/current_tracer || exit 1
echo "online CPUs while tracing: $(cat /sys/devices/system/cpu/online)" >"$OUT/kernel.cpus"
cat $T/trace_pipe >"$OUT/kernel.trace" &
reader=$!
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
sleep 1
echo nop >$T/current_tracer
sleep 1
kill $reader
echo "kernel mmiotrace: $(grep -c '^[RW] ' "$OUT/kernel.trace") accesses traced"
