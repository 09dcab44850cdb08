#!/bin/sh
# Runs in the lab guest under `mmiotrace vm` (crates/lab/tests/lab/kernel_vm.rs):
# kernel drivers at work on every vCPU, in parts between markers.
#   probe1  modprobe e1000: the driver's probe, then link up
#   stats   4 workers, one pinned to each vCPU, each running `ethtool -S`
#   probe2  the e1000 unbound and bound again: a second probe, to diff
#   nvme    the kernel's NVMe driver probes and reads its namespace
# Usage: kernel-vm.sh OUT LAB_DRIVER
# Results in OUT: kallsyms (the guest's symbols, for --symbols), parts.log.
set -u
OUT=$1 LD=$2
E1000=0000:00:04.0
NVME=0000:00:05.0
ROUNDS=${ROUNDS:-10}

mark() { "$LD" mark "$1" || echo "cannot write the marker $1"; }
netdev() { ls "/sys/bus/pci/devices/$E1000/net" 2>/dev/null; }
link_up() { # waits for the carrier, at most 10 s
    ip link set "$(netdev)" up
    for _ in $(seq 100); do
        [ "$(cat "/sys/class/net/$(netdev)/carrier" 2>/dev/null)" = 1 ] && return 0
        sleep 0.1
    done
    echo "no link on $(netdev)"
}

mark "begin probe1"
modprobe e1000
link_up
mark "end probe1"

mark "begin stats"
workers=""
for cpu in 0 1 2 3; do
    (for _ in $(seq "$ROUNDS"); do taskset -c "$cpu" ethtool -S "$(netdev)" >/dev/null; done) &
    workers="$workers $!"
done
wait $workers
mark "end stats"

ip link set "$(netdev)" down
echo "$E1000" >/sys/bus/pci/drivers/e1000/unbind
mark "begin probe2"
echo "$E1000" >/sys/bus/pci/drivers/e1000/bind
link_up
mark "end probe2"
ip link set "$(netdev)" down

mark "begin nvme"
modprobe nvme
for _ in $(seq 100); do [ -b /dev/nvme0n1 ] && break; sleep 0.1; done
dd if=/dev/nvme0n1 of=/dev/null bs=4096 count=64 iflag=direct 2>/dev/null || echo "no /dev/nvme0n1"
mark "end nvme"

cp /proc/kallsyms "$OUT/kallsyms"
echo "parts done: $(netdev) $(ls /sys/bus/pci/devices/$NVME/nvme 2>/dev/null)" >"$OUT/parts.log"
