//! `mmiotrace vm` and `mmiotrace import qemu-log`, run as the real binary.
//! `vm` runs a stand-in for QEMU here: a script that writes an excerpt of a
//! real QEMU log (`data/qemu-lab.log`, from the lab) to the `-D` file it is
//! given, and exits with a status of its own. The lab boots real QEMU
//! (crates/lab/tests/lab/kernel_vm.rs).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{data, mmiotrace, path_str, scratch, stderr_text, succeeded_stdout};

/// A QEMU stand-in: records its arguments, writes `log` to its -D file
/// (unless `log` is None: it ends before opening it), exits with `status`.
fn fake_qemu(dir: &Path, log: Option<&Path>, status: i32) -> PathBuf {
    let script = dir.join("fake-qemu");
    let write = match log {
        Some(log) => format!("cat '{}' > \"$log\"", log.display()),
        None => String::new(),
    };
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{args}'\nlog=\nwhile [ $# -gt 0 ]; do [ \"$1\" = -D ] && log=$2; shift; done\n{write}\nexit {status}\n",
            args = dir.join("args").display()
        ),
    )
    .expect("write the stand-in");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
    script
}

fn vm(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mmiotrace"))
        .arg("vm")
        .args(args)
        .output()
        .expect("run mmiotrace vm")
}

#[test]
fn vm_streams_qemus_log_into_a_trace_and_exits_with_qemus_status() {
    let dir = scratch("vm-streams");
    let qemu = fake_qemu(&dir, Some(&data("qemu-lab.log")), 3);
    let trace = dir.join("guest.trace");
    let kept = dir.join("kept.log");
    let out = vm(&[
        "-o",
        path_str(&trace),
        "--keep-log",
        path_str(&kept),
        "--",
        path_str(&qemu),
        "-smp",
        "4",
        "-d",
        "guest_errors",
    ]);
    let stderr = stderr_text(&out);
    assert_eq!(out.status.code(), Some(3), "QEMU's status:\n{stderr}");
    assert!(stderr.contains("QEMU exited with status 3"), "{stderr}");
    assert!(
        stderr.contains("accesses with their pc: 4 of 4"),
        "{stderr}"
    );
    assert!(stderr.contains("lost events: 0"), "{stderr}");

    // What QEMU was given: its own arguments first, then tracing's.
    let args = fs::read_to_string(dir.join("args")).expect("args");
    let args: Vec<&str> = args.lines().collect();
    assert_eq!(&args[..4], ["-smp", "4", "-d", "guest_errors,plugin"]);
    for event in [
        "memory_region_ops_read",
        "pci_update_mappings_add",
        "pci_cfg_read",
    ] {
        assert!(args.contains(&event), "-trace {event}: {args:?}");
    }
    assert!(args.contains(&"-plugin"), "{args:?}");
    assert!(
        args.iter()
            .any(|a| a.starts_with("isa-debugcon,iobase=0xe9")),
        "{args:?}"
    );
    assert_eq!(
        fs::read(&kept).expect("kept log"),
        fs::read(data("qemu-lab.log")).expect("fixture"),
        "--keep-log keeps QEMU's log as written"
    );

    let text = fs::read_to_string(&trace).expect("the trace");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("VERSION"), "{text}");
    assert!(
        lines.contains(&"PCIDEV 0020 8086100e 0 febc0000 0 0 0 0 0 0 20000 0 0 0 0 0 0 "),
        "{text}"
    );
    let marks: Vec<&&str> = lines.iter().filter(|l| l.starts_with("MARK")).collect();
    assert_eq!(marks.len(), 1, "{text}");
    assert!(marks[0].contains(" begin probe1\t"), "{text}");
    let accesses: Vec<Vec<&str>> = lines
        .iter()
        .filter(|l| l.starts_with("R ") || l.starts_with("W "))
        .map(|l| l.split_whitespace().collect())
        .collect();
    // Only the e1000's BAR 0: not the chipset (pci-conf-data, ioapic).
    assert_eq!(accesses.len(), 4, "{text}");
    // R width time map phys value pc pid: vCPU 2, the plugin's pc.
    assert_eq!(
        (
            accesses[0][4],
            accesses[0][5],
            accesses[0][6],
            accesses[0][7]
        ),
        ("0xfebc0008", "0x80080783", "0xffffffffc05d4cc0", "2")
    );
    assert_eq!(accesses[2][0], "W");
    assert_eq!(accesses[2][6], "0xffffffffc05d12a3");

    // The same log, imported, gives the same accesses.
    let imported = dir.join("imported.trace");
    let out = mmiotrace(&[
        "import",
        "qemu-log",
        path_str(&kept),
        "-o",
        path_str(&imported),
    ]);
    succeeded_stdout(&out);
    let imported = fs::read_to_string(&imported).expect("imported");
    let pick = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("R ") || l.starts_with("W "))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f[4..8].join(" ")
            })
            .collect()
    };
    assert_eq!(pick(&imported), pick(&text));
}

#[test]
fn a_qemu_that_ends_before_opening_its_log_does_not_hang_vm() {
    let dir = scratch("vm-early-exit");
    let qemu = fake_qemu(&dir, None, 1);
    let trace = dir.join("guest.trace");
    let out = vm(&["-o", path_str(&trace), "--", path_str(&qemu)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_text(&out));
    assert!(stderr_text(&out).contains("QEMU exited with status 1"));
}

#[test]
fn vm_refuses_a_log_option_of_its_own_and_a_missing_qemu() {
    let dir = scratch("vm-refuses");
    let trace = dir.join("guest.trace");
    let qemu = fake_qemu(&dir, None, 0);
    let out = vm(&["-o", path_str(&trace), "--", path_str(&qemu), "-D", "x.log"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_text(&out).contains("--keep-log"),
        "{}",
        stderr_text(&out)
    );
    assert!(!dir.join("args").exists(), "QEMU was not started");

    let out = vm(&[
        "-o",
        path_str(&trace),
        "--",
        "/nonexistent/qemu-system-x86_64",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_text(&out).contains("cannot run /nonexistent/qemu-system-x86_64"),
        "{}",
        stderr_text(&out)
    );
    assert!(!trace.exists(), "no trace file left behind");

    let out = vm(&["--device", "[", "--", path_str(&qemu)]);
    assert_eq!(out.status.code(), Some(2), "a bad filter is a usage error");
}

#[test]
fn import_names_the_line_and_column_of_a_broken_event() {
    let dir = scratch("import-broken");
    let log = dir.join("broken.log");
    fs::write(
        &log,
        "1@1.000000:pci_update_mappings_add e1000 00:04.0 0,0xfebc0000+0x20000\n\
         1@1.000001:memory_region_ops_read cpu 0 mr 0x1 addr febc0008 value 0x0 size 4 name 'e1000-mmio'\n",
    )
    .expect("write");
    let out = mmiotrace(&["import", "qemu-log", path_str(&log)]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = stderr_text(&out);
    assert!(
        stderr.contains("broken.log:2:53: expected a 0x-prefixed hex addr"),
        "{stderr}"
    );
}
