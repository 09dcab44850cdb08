//! `lab-driver`: small user-space drivers for the QEMU lab's devices
//! (docs/LAB.md). Each prints what it found, so that a traced run can be
//! compared with an untraced one, and makes the same device accesses every
//! time, so that QEMU's log of them is the oracle for mmiotrace's trace.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

mod bar;
mod e1000;
mod nvme;
mod port;

use bar::{Regs, Via};

#[derive(Debug, Parser)]
#[command(name = "lab-driver", about = "Test drivers for mmiotrace's QEMU lab")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a line to the lab's debugcon port (a marker in QEMU's log).
    Mark { text: String },
    /// Probe the e1000: reset, EEPROM, MAC, interrupt cause, statistics.
    E1000 {
        /// PCI address
        #[arg(long, default_value = "0000:00:04.0")]
        device: String,
        #[arg(long, value_enum)]
        via: Via,
        /// With --via uio: also take an interrupt through the uio fd.
        #[arg(long)]
        irq: bool,
        /// Instead of the probe: this many threads, thread i on CPU i,
        /// accessing registers concurrently.
        #[arg(long)]
        threads: Option<usize>,
        /// Rounds per thread (4 accesses each).
        #[arg(long, default_value_t = 1500)]
        rounds: u32,
    },
    /// Probe the NVMe controller through sysfs resource0.
    Nvme {
        #[arg(long, default_value = "0000:00:05.0")]
        device: String,
        #[arg(long, value_enum, default_value = "sysfs")]
        via: Via,
    },
    /// Read the device's vendor and device IDs through VFIO's config region.
    VfioConfig {
        #[arg(long, default_value = "0000:00:04.0")]
        device: String,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Mark { text } => port::mark(&text),
        Command::E1000 {
            device,
            via,
            irq,
            threads,
            rounds,
        } => {
            if via == Via::VfioRw {
                let regs = bar::VfioRegs::open(&device)?;
                println!(
                    "e1000 {device}: BAR0 through pread/pwrite on the VFIO device ({} KiB)",
                    regs.bar0.size / 1024
                );
                return match threads {
                    Some(n) => e1000::threads(&regs, n, rounds),
                    None => e1000::probe(&regs, None),
                };
            }
            let mapped = bar::map_bar0(&device, via)
                .with_context(|| format!("cannot map BAR0 of {device}"))?;
            println!(
                "e1000 {device}: BAR0 through {} ({} KiB)",
                mapped.source,
                mapped.len() / 1024
            );
            let irq = if irq {
                Some(bar::UioIrq::open(&device)?)
            } else {
                None
            };
            match threads {
                Some(n) => e1000::threads(&mapped, n, rounds),
                None => e1000::probe(&mapped as &dyn Regs, irq.as_ref()),
            }
        }
        Command::Nvme { device, via } => {
            let mapped = bar::map_bar0(&device, via)
                .with_context(|| format!("cannot map BAR0 of {device}"))?;
            println!(
                "nvme {device}: BAR0 through {} ({} KiB)",
                mapped.source,
                mapped.len() / 1024
            );
            nvme::probe(&mapped)
        }
        Command::VfioConfig { device } => {
            let vfio = bar::Vfio::open(&device)?;
            let config = vfio.region(bar::VFIO_PCI_CONFIG_REGION_INDEX)?;
            let mut ids = [0u8; 4];
            vfio.pread(&config, 0, &mut ids)?;
            println!(
                "config: vendor {:04x} device {:04x}",
                u16::from_le_bytes([ids[0], ids[1]]),
                u16::from_le_bytes([ids[2], ids[3]])
            );
            Ok(())
        }
    }
}
