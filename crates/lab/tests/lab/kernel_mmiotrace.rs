//! Linux's own mmiotrace on the kernel's e1000 driver in the QEMU lab,
//! compared with QEMU's log of the device (docs/LAB.md): the comparison in
//! docs/BENCHMARKS.md. The kernel's tracer takes every CPU but one offline
//! while it traces; with that, its trace equals the device's log, and its
//! pc and pid columns are zero.
//! `MMIOTRACE_LAB_KERNEL_REUSE=DIR` checks an earlier boot's results.

use std::fs;
use std::path::PathBuf;

use mmiotrace_lab::oracle::{self, DeviceLog, Trace};

use super::common;

#[test]
fn kernel_mmiotrace_with_one_cpu_equals_the_device_log() {
    let out = match std::env::var_os("MMIOTRACE_LAB_KERNEL_REUSE") {
        Some(dir) => PathBuf::from(dir),
        None => common::boot(
            "lab-kernel-mmiotrace",
            &[],
            "kernel-mmiotrace.sh",
            &[env!("CARGO_BIN_EXE_lab-driver").into()],
        ),
    };
    let cpus = fs::read_to_string(out.join("kernel.cpus")).expect("kernel.cpus");
    assert!(
        cpus.contains("while tracing: 0\n"),
        "the kernel's tracer runs on one CPU: {cpus}"
    );
    let log = DeviceLog::read(&out.join("qemu.log"), &["e1000-mmio"]).expect("QEMU's log");
    let seen = log.part("kernel").expect("marked part");
    let trace = Trace::read(&out.join("kernel.trace")).expect("the kernel's trace");
    let bar = log.bar("0000:00:04.0", 0).expect("BAR 0");
    let traced = trace.accesses_in(bar.addr, bar.size);
    assert!(traced.len() > 10_000, "{} accesses", traced.len());
    let matched = oracle::compare(&traced, seen).unwrap_or_else(|report| panic!("{report}"));
    let zero_pc = traced.iter().filter(|a| a.pc == 0 && a.pid == 0).count();
    eprintln!(
        "kernel mmiotrace: {matched} accesses equal QEMU's log; {zero_pc} of them with pc and pid 0"
    );
    assert_eq!(zero_pc, matched, "the kernel's tracer records no pc or pid");
}
