//! User-space drivers on real (emulated) PCI devices in the QEMU lab, each
//! run untraced and then under `mmiotrace record`, and each trace compared
//! access for access with QEMU's own log of the device (docs/LAB.md).
//!
//! One guest boot runs every part (crates/lab/guest/user-drivers.sh); the
//! tests share it. `MMIOTRACE_LAB_REUSE=DIR` checks the results of an earlier
//! boot in DIR instead of booting.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

use super::common::{self, mmiotrace_bin, repo};
use std::sync::OnceLock;

use mmiotrace_lab::oracle::{self, DeviceLog, Trace};
use mmiotrace_trace::Direction;
use mmiotrace_trace::qemu_log::QemuAccess;

const E1000: &str = "0000:00:04.0";
const NVME: &str = "0000:00:05.0";
const REGIONS: &[&str] = &["e1000-mmio", "nvme"];

struct Lab {
    out: PathBuf,
    log: DeviceLog,
}

fn lab() -> &'static Lab {
    static LAB: OnceLock<Lab> = OnceLock::new();
    LAB.get_or_init(|| {
        let out = match std::env::var_os("MMIOTRACE_LAB_REUSE") {
            Some(dir) => PathBuf::from(dir),
            None => boot(),
        };
        let log = DeviceLog::read(&out.join("qemu.log"), REGIONS)
            .unwrap_or_else(|e| panic!("QEMU's log: {e:#}"));
        Lab { out, log }
    })
}

fn boot() -> PathBuf {
    let mmiotrace = mmiotrace_bin();
    common::boot(
        "lab-user-drivers",
        &[],
        "user-drivers.sh",
        &[mmiotrace.into(), env!("CARGO_BIN_EXE_lab-driver").into()],
    )
}

fn read(lab: &Lab, file: &str) -> String {
    let path = lab.out.join(file);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A part's program ran untraced and traced with status 0 and the same
/// output; returns the traced output.
fn same_behaviour(lab: &Lab, part: &str) -> String {
    let untraced = read(lab, &format!("{part}.untraced.out"));
    let traced = read(lab, &format!("{part}.traced.out"));
    let record_err = read(lab, &format!("{part}.record.err"));
    assert_eq!(
        read(lab, &format!("{part}.untraced.status")).trim(),
        "0",
        "{part} untraced failed:\n{untraced}"
    );
    assert_eq!(
        read(lab, &format!("{part}.traced.status")).trim(),
        "0",
        "{part} traced failed:\n{traced}\n{record_err}"
    );
    assert_eq!(
        traced, untraced,
        "{part}: the traced run printed something else"
    );
    assert!(
        record_err.contains("lost events: 0"),
        "{part}: {record_err}"
    );
    traced
}

/// The trace of `part` equals QEMU's log of it, access for access; returns
/// the trace and the device's accesses.
fn trace_equals_device_log(lab: &Lab, part: &str, device: &str) -> (Trace, Vec<QemuAccess>) {
    let trace = Trace::read(&lab.out.join(format!("{part}.trace"))).expect("read the trace");
    assert!(trace.anomalies.is_empty(), "{part}: {:?}", trace.anomalies);
    let bar = lab.log.bar(device, 0).expect("BAR 0 placed");
    let traced = trace.accesses_in(bar.addr, bar.size);
    assert_eq!(
        traced.len(),
        trace.accesses.len(),
        "{part}: accesses outside BAR0 of {device}"
    );
    let seen = lab
        .log
        .part(&format!("{part} traced"))
        .expect("marked part");
    let matched =
        oracle::compare(&traced, seen).unwrap_or_else(|report| panic!("{part}: {report}"));
    assert!(matched > 0, "{part}: nothing traced");
    eprintln!(
        "{part}: {matched} traced accesses equal QEMU's log ({} device accesses)",
        seen.len()
    );
    (trace, seen.to_vec())
}

/// The device saw the same accesses with and without the tracer.
fn device_saw_the_same(lab: &Lab, part: &str) {
    let untraced = lab
        .log
        .part(&format!("{part} untraced"))
        .expect("marked part");
    let traced = lab
        .log
        .part(&format!("{part} traced"))
        .expect("marked part");
    oracle::same_device_view(untraced, traced)
        .unwrap_or_else(|e| panic!("{part}: the device saw something else when traced: {e}"));
}

fn assert_map_at_bar(lab: &Lab, trace: &Trace, device: &str, path_hint: &str) {
    let bar = lab.log.bar(device, 0).expect("BAR 0 placed");
    assert_eq!(trace.maps.len(), 1, "{:?}", trace.maps);
    let map = &trace.maps[0];
    assert_eq!(map.phys, bar.addr, "MAP phys is BAR0's address");
    assert_eq!(map.len, bar.size, "MAP length is BAR0's size");
    let path = map.path.as_deref().unwrap_or("");
    assert!(path.contains(path_hint), "MAP path {path:?}");
}

/// The PCIDEV line says what sysfs says of the device.
fn assert_pcidev_matches_sysfs(lab: &Lab, trace: &Trace, vendor_device: (u16, u16), driver: &str) {
    assert_eq!(
        trace.pcidevs.len(),
        1,
        "one PCIDEV line: {:?}",
        trace.pcidevs
    );
    let dev = &trace.pcidevs[0];
    assert_eq!((dev.vendor, dev.device), vendor_device);
    assert_eq!((dev.bus, dev.devfn), (0, 4 << 3));
    let resource = read(lab, "e1000.resource");
    for (bar, line) in resource.lines().take(6).enumerate() {
        let fields: Vec<u64> = line
            .split_whitespace()
            .map(|f| u64::from_str_radix(f.trim_start_matches("0x"), 16).expect("hex"))
            .collect();
        let size = if fields[0] == 0 {
            0
        } else {
            fields[1] - fields[0] + 1
        };
        assert_eq!(
            dev.bar_start[bar] & !0xf,
            fields[0] & !0xf,
            "BAR {bar} start"
        );
        assert_eq!(dev.bar_size[bar], size, "BAR {bar} size");
    }
    assert_eq!(dev.driver, driver);
}

#[test]
fn sysfs_resource0_of_the_e1000() {
    let lab = lab();
    let out = same_behaviour(lab, "sysfs");
    assert!(
        out.contains("icr: first read 0x80, second read 0x0"),
        "{out}"
    );
    assert!(out.contains("checksum 0xbaba ok"), "{out}");
    let (trace, _) = trace_equals_device_log(lab, "sysfs", E1000);
    assert_map_at_bar(lab, &trace, E1000, "/0000:00:04.0/resource0");
    assert_pcidev_matches_sysfs(lab, &trace, (0x8086, 0x100e), "");
    device_saw_the_same(lab, "sysfs");
}

#[test]
fn dev_mem_of_the_e1000() {
    let lab = lab();
    let out = same_behaviour(lab, "devmem");
    assert!(
        out.contains("icr: first read 0x80, second read 0x0"),
        "{out}"
    );
    let (trace, _) = trace_equals_device_log(lab, "devmem", E1000);
    assert_map_at_bar(lab, &trace, E1000, "/dev/mem");
    device_saw_the_same(lab, "devmem");
}

#[test]
fn uio_pci_generic_with_an_interrupt() {
    let lab = lab();
    let out = same_behaviour(lab, "uio");
    assert!(out.contains("uio: interrupt received, cause 0x80"), "{out}");
    let (trace, _) = trace_equals_device_log(lab, "uio", E1000);
    assert_map_at_bar(lab, &trace, E1000, "/dev/uio0");
    assert_pcidev_matches_sysfs(lab, &trace, (0x8086, 0x100e), "uio_pci_generic");
    let lspci = read(lab, "e1000.lspci");
    assert!(lspci.contains("[8086:100e]"), "{lspci}");
    let bar0 = lab.log.bar(E1000, 0).expect("BAR 0");
    assert!(
        lspci.contains(&format!("Memory at {:x}", bar0.addr)),
        "lspci names BAR0 at {:#x}:\n{lspci}",
        bar0.addr
    );
    device_saw_the_same(lab, "uio");
}

#[test]
fn vfio_pci_region_mapped() {
    let lab = lab();
    let out = same_behaviour(lab, "vfio");
    assert!(
        out.contains("icr: first read 0x80, second read 0x0"),
        "{out}"
    );
    let (trace, _) = trace_equals_device_log(lab, "vfio", E1000);
    assert_map_at_bar(lab, &trace, E1000, "vfio-device:0000:00:04.0/bar0");
    assert_pcidev_matches_sysfs(lab, &trace, (0x8086, 0x100e), "vfio-pci");
    device_saw_the_same(lab, "vfio");
}

#[test]
fn vfio_pci_region_read_and_written() {
    let lab = lab();
    let out = same_behaviour(lab, "vfio-rw");
    assert!(
        out.contains("icr: first read 0x80, second read 0x0"),
        "{out}"
    );
    let (trace, _) = trace_equals_device_log(lab, "vfio-rw", E1000);
    let bar = lab.log.bar(E1000, 0).expect("BAR 0");
    assert_eq!(trace.maps.len(), 1, "{:?}", trace.maps);
    let map = &trace.maps[0];
    assert_eq!(
        (map.phys, map.virt, map.len, map.path.as_deref()),
        (bar.addr, 0, bar.size, Some("vfio-device:0000:00:04.0/bar0"))
    );
    assert_pcidev_matches_sysfs(lab, &trace, (0x8086, 0x100e), "vfio-pci");
    device_saw_the_same(lab, "vfio-rw");
}

#[test]
fn vfio_pci_config_space_read() {
    let lab = lab();
    let out = same_behaviour(lab, "vfio-config");
    assert!(out.contains("config: vendor 8086 device 100e"), "{out}");
    let trace = Trace::read(&lab.out.join("vfio-config.trace")).expect("read the trace");
    assert_eq!(trace.maps.len(), 1, "{:?}", trace.maps);
    assert_eq!(
        (trace.maps[0].phys, trace.maps[0].path.as_deref()),
        (0, Some("vfio-device:0000:00:04.0/config"))
    );
    let reads: Vec<_> = trace
        .accesses
        .iter()
        .map(|a| (a.dir, a.width(), a.phys, a.value.low_u64()))
        .collect();
    assert_eq!(reads, [(Direction::Read, 4, 0, 0x100e_8086)]);
}

#[test]
fn nvme_controller_registers() {
    let lab = lab();
    let out = same_behaviour(lab, "nvme");
    assert!(out.contains("aqa 0x001f001f"), "{out}");
    let (trace, _) = trace_equals_device_log(lab, "nvme", NVME);
    assert!(
        trace
            .accesses
            .iter()
            .any(|a| a.width() == 8 && a.dir == Direction::Read),
        "the 8-byte CAP read is traced as one access"
    );
    device_saw_the_same(lab, "nvme");
}

#[test]
fn four_threads_on_four_vcpus() {
    let lab = lab();
    let out = same_behaviour(lab, "threads");
    for cpu in 0..4 {
        assert!(
            out.contains(&format!(
                "thread {cpu} on cpu {cpu}: 1500 rounds, 0 read-back mismatches"
            )),
            "{out}"
        );
    }
    let trace = Trace::read(&lab.out.join("threads.trace")).expect("read the trace");
    let bar = lab.log.bar(E1000, 0).expect("BAR 0");
    let threads = oracle::by_thread(&trace.accesses);
    let cpus = oracle::by_cpu(lab.log.part("threads traced").expect("marked part"));
    assert_eq!(threads.len(), 4, "four threads accessed the device");
    assert_eq!(
        cpus.len(),
        4,
        "four vCPUs accessed the device: {:?}",
        cpus.keys()
    );
    // Thread i writes its own VFTA words and runs on vCPU i.
    let mut matched = BTreeMap::new();
    for accesses in threads.values() {
        let first_write = accesses
            .iter()
            .find(|a| a.dir == Direction::Write)
            .expect("each thread writes");
        let index = ((first_write.phys - bar.addr - 0x5600) / 4 / 16) as i32;
        let seen = &cpus[&index];
        let n = oracle::compare(accesses, seen).unwrap_or_else(|r| panic!("thread {index}: {r}"));
        matched.insert(index, n);
    }
    assert_eq!(matched.values().sum::<usize>(), 4 * 1500 * 4, "{matched:?}");
}

#[test]
fn dpdk_testpmd_over_uio_pci_generic() {
    let lab = lab();
    let out = read(lab, "dpdk.traced.out");
    let untraced = read(lab, "dpdk.untraced.out");
    assert_eq!(read(lab, "dpdk.traced.status").trim(), "0", "{out}");
    assert_eq!(read(lab, "dpdk.untraced.status").trim(), "0", "{untraced}");
    assert!(out.contains("Port 0: 52:54:00:12:34:56"), "{out}");
    assert_eq!(out, untraced, "testpmd printed something else when traced");
    let (trace, seen) = trace_equals_device_log(lab, "dpdk", E1000);
    assert_map_at_bar(lab, &trace, E1000, "/0000:00:04.0/resource0");
    assert_pcidev_matches_sysfs(lab, &trace, (0x8086, 0x100e), "uio_pci_generic");
    assert!(seen.len() > 1000, "testpmd made {} accesses", seen.len());
}

#[test]
fn dpdk_trace_decodes_with_the_e1000_register_map() {
    let lab = lab();
    let output = Command::new(mmiotrace_bin())
        .arg("decode")
        .arg(lab.out.join("dpdk.trace"))
        .arg("--regs")
        .arg(repo().join("crates/lab/data/e1000.toml"))
        .output()
        .expect("run mmiotrace decode");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let accesses: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(2)
                .is_some_and(|k| k == "R" || k == "W")
        })
        .collect();
    let names: std::collections::BTreeSet<&str> = accesses
        .iter()
        .filter_map(|l| l.split_whitespace().nth(7))
        .collect();
    for register in [
        "CTRL",
        "STATUS",
        "EECD",
        "MDIC",
        "IMC",
        "RCTL",
        "TCTL",
        "RA[0].RAL",
        "RA[0].RAH",
    ] {
        assert!(
            names.contains(register),
            "decode names {register}: {names:?}"
        );
    }
    let unnamed = accesses.iter().filter(|l| l.ends_with(" ?")).count();
    eprintln!(
        "dpdk: {} accesses decoded, {unnamed} without a register name",
        accesses.len()
    );
    assert!(
        unnamed * 100 < accesses.len(),
        "{unnamed} of {} accesses have no name",
        accesses.len()
    );
}
