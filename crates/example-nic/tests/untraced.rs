//! Runs the real `example-nic` binary, untraced, and checks what it prints,
//! its exit status, and the registers it leaves behind in a kept BAR file.

use std::path::PathBuf;
use std::process::{Command, Output};

fn example_nic(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_example-nic"))
        .args(args)
        .output()
        .expect("example-nic should start")
}

/// A BAR path unique to this test process, removed when dropped.
struct TempBar(PathBuf);

impl TempBar {
    fn new(name: &str) -> Self {
        Self(std::env::temp_dir().join(format!("example-nic-test-{}-{name}", std::process::id())))
    }
    fn arg(&self) -> &str {
        self.0.to_str().expect("temp dir path is UTF-8")
    }
}

impl Drop for TempBar {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn reg32(bar: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bar[offset..offset + 4].try_into().expect("4 bytes"))
}

#[test]
fn brings_the_nic_up_and_sends_three_packets() {
    let bar = TempBar::new("ok");
    let output = example_nic(&["--bar", bar.arg()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "exit {:?}, stderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let expected = format!(
        "example-nic: BAR0 {} (128 KiB)
  MAC address  52:54:00:12:34:56 (EEPROM checksum ok)
  PHY          id 0x01410c20 at MDIO address 1
  link         up, 1000 Mb/s, full duplex
  sent         3 packets, 180 bytes (interrupt causes: TXDW LSC)
",
        bar.arg()
    );
    assert_eq!(stdout, expected);

    // A BAR given with --bar is kept, holding what driver and device left.
    let contents = std::fs::read(&bar.0).expect("the --bar file is kept");
    assert_eq!(contents.len(), 128 * 1024);
    assert_eq!(
        reg32(&contents, 0x5400),
        0x1200_5452,
        "RAL0 holds the MAC's first four bytes"
    );
    assert_eq!(
        reg32(&contents, 0x5404),
        0x8000_5634,
        "RAH0 holds the rest, Address Valid set"
    );
    assert_eq!(reg32(&contents, 0x3818), 3, "TDT after three packets");
    assert_eq!(reg32(&contents, 0x3810), 3, "TDH caught up with TDT");
    assert_eq!(reg32(&contents, 0x4080), 3, "GPTC counted three packets");
    assert_eq!(reg32(&contents, 0x40c8), 180, "TOTL counted 3 x 60 bytes");
}

#[test]
fn help_describes_the_bar_option() {
    let output = example_nic(&["--help"]);
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("Usage: example-nic [--bar PATH]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("/dev/shm/mmiotrace-example-nic-bar0"),
        "{stdout}"
    );
}

#[test]
fn unknown_argument_is_a_usage_error() {
    let output = example_nic(&["--frobnicate"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("unexpected argument \"--frobnicate\"")
    );
}

#[test]
fn unusable_bar_path_is_an_error_naming_the_path() {
    let output = example_nic(&["--bar", "/nonexistent-dir/bar0"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("/nonexistent-dir/bar0: cannot create BAR0"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}
