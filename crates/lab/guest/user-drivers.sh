#!/bin/sh
# Runs in the lab guest (lab/run): each user-space driver untraced, then
# under `mmiotrace record`, with a marker in QEMU's log around each run.
# Usage: user-drivers.sh OUT MMIOTRACE LAB_DRIVER [PHASE...]
# Results in OUT: NAME.{untraced,traced}.{out,status}, NAME.untraced.err,
# NAME.trace, NAME.record.err (the program's stderr and record's summary),
# and what sysfs and lspci say of the devices.
set -u
OUT=$1 MT=$2 LD=$3
shift 3
E1000=0000:00:04.0
NVME=0000:00:05.0
PHASES=${*:-sysfs devmem threads nvme uio dpdk vfio vfio-rw}

mark() { "$LD" mark "$1" || echo "cannot write the marker $1"; }
phase() { # NAME CMD...: CMD untraced, then traced
    name=$1
    shift
    mark "begin $name untraced"
    "$@" >"$OUT/$name.untraced.out" 2>"$OUT/$name.untraced.err"
    echo $? >"$OUT/$name.untraced.status"
    mark "end $name untraced"
    mark "begin $name traced"
    "$MT" record -o "$OUT/$name.trace" -- "$@" >"$OUT/$name.traced.out" 2>"$OUT/$name.record.err"
    echo $? >"$OUT/$name.traced.status"
    mark "end $name traced"
    echo "phase $name: untraced $(cat "$OUT/$name.untraced.status"), traced $(cat "$OUT/$name.traced.status")"
}
wants() { case " $PHASES " in *" $1 "*) return 0 ;; esac; return 1; }
bind() { # DEVICE DRIVER
    if [ -e "/sys/bus/pci/devices/$1/driver" ]; then
        echo "$1" >"/sys/bus/pci/devices/$1/driver/unbind"
    fi
    echo "$2" >"/sys/bus/pci/devices/$1/driver_override"
    echo "$1" >"/sys/bus/pci/drivers/$2/bind"
}

cp "/sys/bus/pci/devices/$E1000/resource" "$OUT/e1000.resource"
lspci -nn -s "$E1000" -v >"$OUT/e1000.lspci" 2>&1

wants sysfs && phase sysfs "$LD" e1000 --via sysfs
wants devmem && phase devmem "$LD" e1000 --via devmem
wants threads && phase threads "$LD" e1000 --via sysfs --threads 4
# The firmware left the NVMe controller enabled: one run first, so that the
# untraced and traced runs start from the same state.
wants nvme && "$LD" nvme --device "$NVME" >/dev/null
wants nvme && phase nvme "$LD" nvme --device "$NVME"

if wants uio || wants dpdk; then
    modprobe uio_pci_generic
    bind "$E1000" uio_pci_generic
    wants uio && phase uio "$LD" e1000 --via uio --irq
    if wants dpdk; then
        echo 256 >/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
        phase dpdk sh -c "echo quit | dpdk-testpmd -l 0-1 -n 1 --iova-mode=pa -a $E1000 --file-prefix lab -- -i --total-num-mbufs=2048"
    fi
fi

if wants vfio || wants vfio-rw; then
    modprobe vfio-pci
    bind "$E1000" vfio-pci
    wants vfio && phase vfio "$LD" e1000 --via vfio
    wants vfio-rw && phase vfio-rw "$LD" e1000 --via vfio-rw
    wants vfio-rw && phase vfio-config "$LD" vfio-config
fi
