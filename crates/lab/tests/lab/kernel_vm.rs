//! Kernel drivers traced from the hypervisor: the lab guest boots under
//! `mmiotrace vm`, the kernel's e1000 and NVMe drivers probe and work on 4
//! vCPUs (crates/lab/guest/kernel-vm.sh), and the trace is checked against
//! QEMU's own log of the devices (`--keep-log`), vCPU by vCPU.
//! `MMIOTRACE_LAB_VM_REUSE=DIR` checks an earlier boot's results in DIR.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use mmiotrace_lab::oracle::Trace;
use mmiotrace_trace::Access;
use mmiotrace_trace::qemu_log::{QemuAccess, QemuEvent, QemuLogReader};

use super::common::{self, mmiotrace_bin, repo};

const E1000: &str = "0000:00:04.0";
const NVME: &str = "0000:00:05.0";

struct Boot {
    out: PathBuf,
    mmiotrace: PathBuf,
    trace: Trace,
    /// QEMU's log: accesses inside the e1000's and the NVMe's memory BARs.
    device: Vec<QemuAccess>,
    /// What `mmiotrace vm` printed when QEMU ended.
    summary: String,
}

fn boot() -> &'static Boot {
    static BOOT: OnceLock<Boot> = OnceLock::new();
    BOOT.get_or_init(|| {
        let mmiotrace = mmiotrace_bin();
        let out = match std::env::var_os("MMIOTRACE_LAB_VM_REUSE") {
            Some(dir) => PathBuf::from(dir),
            None => run_guest(&mmiotrace),
        };
        let trace = Trace::read(&out.join("vm.trace")).unwrap_or_else(|e| panic!("{e:#}"));
        let device = device_log(&out.join("qemu.log"));
        let console = fs::read_to_string(out.join("console.log")).expect("console.log");
        let summary = console
            .split("mmiotrace: QEMU ")
            .nth(1)
            .unwrap_or_else(|| panic!("no summary in the console:\n{console}"))
            .to_owned();
        Boot {
            out,
            mmiotrace,
            trace,
            device,
            summary,
        }
    })
}

fn run_guest(mmiotrace: &Path) -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("lab-kernel-vm");
    let wrap: Vec<OsString> = vec![
        mmiotrace.into(),
        "vm".into(),
        "-o".into(),
        out.join("vm.trace").into(),
        "--keep-log".into(),
        out.join("qemu.log").into(),
        "--".into(),
    ];
    common::boot(
        "lab-kernel-vm",
        &wrap,
        "kernel-vm.sh",
        &[env!("CARGO_BIN_EXE_lab-driver").into()],
    )
}

/// The accesses in QEMU's log that fall in the e1000's or the NVMe's
/// memory BAR (their MSI-X tables included), in log order.
fn device_log(path: &Path) -> Vec<QemuAccess> {
    let file = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut bars: BTreeMap<(String, u8), (u64, u64)> = BTreeMap::new();
    let mut accesses = Vec::new();
    for event in QemuLogReader::new(BufReader::new(file), path.display().to_string()) {
        match event.unwrap_or_else(|e| panic!("{e}")) {
            QemuEvent::Bar(bar) if bar.added => {
                bars.insert((bar.pci_address(), bar.bar), (bar.addr, bar.size));
            }
            QemuEvent::Bar(bar) => {
                bars.remove(&(bar.pci_address(), bar.bar));
            }
            QemuEvent::Access(access) => {
                let inside = [(E1000, 0), (NVME, 0)].iter().any(|(dev, n)| {
                    bars.get(&((*dev).to_owned(), *n))
                        .is_some_and(|(start, len)| {
                            access.addr >= *start && access.addr < start + len
                        })
                });
                if inside {
                    accesses.push(access);
                }
            }
            _ => {}
        }
    }
    accesses
}

fn by_vcpu_trace(accesses: &[Access]) -> BTreeMap<u32, Vec<(bool, u64, u8, u64)>> {
    let mut map: BTreeMap<u32, Vec<_>> = BTreeMap::new();
    for a in accesses {
        map.entry(a.pid).or_default().push((
            a.dir == mmiotrace_trace::Direction::Write,
            a.phys,
            a.width(),
            a.value.low_u64(),
        ));
    }
    map
}

fn by_vcpu_log(accesses: &[QemuAccess]) -> BTreeMap<u32, Vec<(bool, u64, u8, u64)>> {
    let mut map: BTreeMap<u32, Vec<_>> = BTreeMap::new();
    for a in accesses {
        map.entry(u32::try_from(a.cpu).unwrap_or(u32::MAX))
            .or_default()
            .push((
                a.dir == mmiotrace_trace::Direction::Write,
                a.addr,
                a.size,
                a.value,
            ));
    }
    map
}

#[test]
fn the_trace_has_every_access_the_devices_saw_vcpu_by_vcpu() {
    let boot = boot();
    let traced: Vec<Access> = boot
        .trace
        .accesses
        .iter()
        .filter(|a| {
            boot.trace.maps.iter().any(|m| {
                m.map_id == a.map_id
                    && m.path.as_deref().is_some_and(|p| {
                        p.contains(&format!("{E1000}/resource0"))
                            || p.contains(&format!("{NVME}/resource0"))
                    })
            })
        })
        .cloned()
        .collect();
    assert!(
        traced.len() > 10_000,
        "{} accesses traced:\n{}",
        traced.len(),
        boot.summary
    );
    let trace = by_vcpu_trace(&traced);
    let log = by_vcpu_log(&boot.device);
    assert_eq!(
        trace.keys().collect::<Vec<_>>(),
        log.keys().collect::<Vec<_>>(),
        "the same vCPUs"
    );
    for (vcpu, seen) in &log {
        let got = &trace[vcpu];
        if let Some(i) = (0..seen.len().max(got.len())).find(|&i| seen.get(i) != got.get(i)) {
            panic!(
                "vCPU {vcpu}: access {i} differs: QEMU's log {:x?}, the trace {:x?} ({} and {} accesses)",
                seen.get(i),
                got.get(i),
                seen.len(),
                got.len()
            );
        }
    }
    assert!(
        boot.trace.anomalies.is_empty(),
        "{:?}",
        boot.trace.anomalies
    );
    assert!(boot.summary.contains("lost events: 0"), "{}", boot.summary);
    eprintln!(
        "mmiotrace vm: {} e1000 and NVMe accesses on vCPUs {:?} equal QEMU's log",
        traced.len(),
        log.keys().collect::<Vec<_>>()
    );
}

#[test]
fn all_four_vcpus_read_the_statistics_and_every_access_has_its_pc() {
    let boot = boot();
    let stats = boot.trace.parts.get("stats").expect("the stats part");
    let vcpus: BTreeSet<u32> = stats.iter().map(|a| a.pid).collect();
    assert_eq!(
        vcpus,
        BTreeSet::from([0, 1, 2, 3]),
        "vCPUs in the stats part"
    );
    let without_pc: Vec<&Access> = ["probe1", "stats", "probe2", "nvme"]
        .iter()
        .flat_map(|part| boot.trace.parts.get(*part).expect("part"))
        .filter(|a| a.pc == 0)
        .collect();
    let total: usize = ["probe1", "stats", "probe2", "nvme"]
        .iter()
        .map(|part| boot.trace.parts[*part].len())
        .sum();
    // An access whose device raises an interrupt may lose its pc (QEMU's
    // TLB is flushed before the plugin can ask): rare, never the rule.
    assert!(
        without_pc.len() * 1000 <= total,
        "{} of {total} accesses without a pc: {:?}",
        without_pc.len(),
        &without_pc[..without_pc.len().min(5)]
    );
    assert!(
        stats.iter().all(|a| a.pc >= 0xffff_ffff_8000_0000),
        "kernel pcs"
    );
}

fn mmiotrace(boot: &Boot, args: &[&str]) -> (String, i32) {
    let output = Command::new(&boot.mmiotrace)
        .args(args)
        .current_dir(&boot.out)
        .output()
        .expect("run mmiotrace");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.code().is_some_and(|c| c <= 1),
        "mmiotrace {args:?}: {}\n{stderr}",
        output.status
    );
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        output.status.code().unwrap_or(-1),
    )
}

#[test]
fn decode_names_the_e1000_registers_and_the_functions_that_touch_them() {
    let boot = boot();
    let regs = repo().join("crates/lab/data/e1000.toml");
    let regs = regs.to_str().expect("UTF-8 path");
    let (decoded, _) = mmiotrace(
        boot,
        &[
            "decode",
            "vm.trace",
            "--regs",
            regs,
            "--symbols",
            "kallsyms",
        ],
    );
    let e1000: Vec<&str> = decoded
        .lines()
        .filter(|l| {
            l.contains(" 8086:100e/bar0 ") && matches!(l.split_whitespace().nth(2), Some("R" | "W"))
        })
        .collect();
    assert!(e1000.len() > 10_000, "{} e1000 lines", e1000.len());
    let unnamed: Vec<&&str> = e1000
        .iter()
        .filter(|l| l.split_whitespace().nth(7) == Some("?"))
        .collect();
    assert!(unnamed.is_empty(), "unnamed e1000 registers: {unnamed:?}");
    let in_e1000 = e1000.iter().filter(|l| l.ends_with(" [e1000]")).count();
    assert_eq!(
        in_e1000,
        e1000.len(),
        "every e1000 access is the e1000 module's"
    );
    assert!(
        decoded.contains(" STATUS => ") && decoded.contains("@ e1000_"),
        "{}",
        &decoded[..decoded.len().min(2000)]
    );
    let (stats, _) = mmiotrace(boot, &["stats", "vm.trace", "--symbols", "kallsyms"]);
    assert!(
        stats.contains("e1000_update_stats [e1000]"),
        "ethtool -S reads the statistics in e1000_update_stats:\n{stats}"
    );
}

#[test]
fn diff_aligns_the_two_probes() {
    let boot = boot();
    for part in ["probe1", "probe2"] {
        mmiotrace(
            boot,
            &[
                "filter",
                "vm.trace",
                "--from-mark",
                &format!("begin {part}"),
                "--to-mark",
                &format!("end {part}"),
                "-o",
                &format!("{part}.trace"),
            ],
        );
    }
    let (diff, status) = mmiotrace(boot, &["diff", "probe1.trace", "probe2.trace"]);
    let summary = diff.lines().take(3).collect::<Vec<_>>().join("\n");
    eprintln!("diff of the two probes:\n{summary}");
    // The probes differ a little (the first loads the module), but most
    // operations align, and the summary counts them: "...; N the same".
    assert!(status <= 1, "{diff}");
    let same: u64 = summary
        .split(';')
        .find_map(|part| part.trim().strip_suffix(" the same")?.parse().ok())
        .unwrap_or_else(|| panic!("no count of equal operations in {summary:?}"));
    let probe1 = boot.trace.parts["probe1"].len() as u64;
    assert!(
        same * 10 > probe1 * 9,
        "only {same} of {probe1} operations align:\n{}",
        &diff[..diff.len().min(3000)]
    );
}
