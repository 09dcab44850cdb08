//! `example-nic`: a small user-space driver for a simulated e1000-style NIC,
//! written to be recorded with `mmiotrace record`.
//!
//! The "hardware" is a thread of this same process (see [`device`]) that
//! works on BAR0 through `pread`/`pwrite`; the driver maps BAR0 and touches
//! it only with loads and stores, which is what the tracer sees.

mod bar;
mod device;
mod driver;
mod marker;
mod regs;

use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::bar::Bar;
use crate::device::Device;
use crate::driver::{Driver, Summary};
use crate::marker::Marker;

const DEFAULT_BAR: &str = "/dev/shm/mmiotrace-example-nic-bar0";

const HELP: &str = "\
example-nic: a small user-space driver for a simulated e1000-style NIC

Usage: example-nic [--bar PATH] [--no-device]

The program creates BAR0 as a 128 KiB file of zeros, starts a thread that
plays the NIC (it reads and writes the file with pread/pwrite only), maps
the file and drives the NIC through the mapping: reset, EEPROM read of the
MAC address, PHY identification over MDIO, RX/TX ring setup, link up, and
three packets sent. It prints a short summary and exits 0, or prints what
timed out and exits 1.

Under `mmiotrace record`, it marks the phases reset, eeprom, rings, link
and tx in the trace. Record it with:

    mmiotrace record --trace '/dev/shm/mmiotrace-example-nic-*' -- example-nic

Options:
  --bar PATH   BAR0 file to create (truncated and sized to 128 KiB).
               Default: /dev/shm/mmiotrace-example-nic-bar0, which is removed
               at exit; a file given with --bar is kept, to be inspected.
  --no-device  Start no device thread: something else plays the NIC, such
               as a device model loaded with `mmiotrace record --model`.
  -h, --help   Print this help.
";

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!(
                "example-nic: {message}\n\nUsage: example-nic [--bar PATH] [--no-device]   (see --help)"
            );
            return ExitCode::from(2);
        }
    };
    let result = run(&args.bar, args.device);
    if args.remove_bar_at_exit {
        let _ = std::fs::remove_file(&args.bar);
    }
    match result {
        Ok(summary) => {
            print_summary(&args.bar, &summary);
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("example-nic: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug)]
struct Args {
    bar: PathBuf,
    remove_bar_at_exit: bool,
    /// Whether to start the device thread (`--no-device` says not).
    device: bool,
}

/// `Ok(None)` asks for the help text.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut bar = None;
    let mut device = true;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--no-device" => device = false,
            "--bar" => bar = Some(args.next().ok_or("--bar needs a PATH")?),
            _ if arg.starts_with("--bar=") => bar = Some(arg["--bar=".len()..].to_owned()),
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    Ok(Some(Args {
        device,
        remove_bar_at_exit: bar.is_none(),
        bar: PathBuf::from(bar.unwrap_or_else(|| DEFAULT_BAR.to_owned())),
    }))
}

fn run(bar_path: &std::path::Path, with_device: bool) -> anyhow::Result<Summary> {
    let marker = Marker::lookup();
    let bar_file = create_bar(bar_path)
        .with_context(|| format!("{}: cannot create BAR0", bar_path.display()))?;
    let device = match with_device {
        true => {
            Some(Device::power_on(bar_file.try_clone()?).context("cannot start the device model")?)
        }
        false => None,
    };
    let bar =
        Bar::map(&bar_file, regs::BAR_SIZE).with_context(|| format!("{}", bar_path.display()));
    let summary = bar.and_then(|bar| Driver::new(&bar, marker).run());
    if let Some(device) = device {
        device.power_off().context("device model failed")?;
    }
    summary
}

fn create_bar(path: &std::path::Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.set_len(regs::BAR_SIZE as u64)?;
    Ok(file)
}

fn print_summary(bar: &std::path::Path, summary: &Summary) {
    let mac = summary.mac.map(|byte| format!("{byte:02x}")).join(":");
    println!("example-nic: BAR0 {} (128 KiB)", bar.display());
    println!("  MAC address  {mac} (EEPROM checksum ok)");
    println!(
        "  PHY          id {:#010x} at MDIO address {}",
        summary.phy_id,
        regs::PHY_ADDR
    );
    let duplex = if summary.full_duplex { "full" } else { "half" };
    println!(
        "  link         up, {} Mb/s, {duplex} duplex",
        summary.link_speed_mbps
    );
    let causes = [(regs::ICR_TXDW, "TXDW"), (regs::ICR_LSC, "LSC")]
        .iter()
        .filter(|(bit, _)| summary.interrupt_causes & bit != 0)
        .map(|(_, name)| *name)
        .collect::<Vec<_>>();
    println!(
        "  sent         {} packets, {} bytes (interrupt causes: {})",
        summary.packets_sent,
        summary.octets_sent,
        if causes.is_empty() {
            "none".to_owned()
        } else {
            causes.join(" ")
        }
    );
    if summary.early_tx_done > 0 {
        println!(
            "  warning      the TX-done interrupt came before the device had sent {} of them; the driver waited for each",
            summary.early_tx_done
        );
    }
}
