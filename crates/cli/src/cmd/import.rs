//! `mmiotrace import qemu-log LOG`: a trace from a QEMU log captured elsewhere.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use mmiotrace_trace::qemu_log::QemuLogReader;

use super::common::{TraceFormat, open_input, refuse_same_file, trace_writer};
use super::vm::convert::{Converter, DeviceFilter};
use super::vm::print_counts;

/// Turn another tool's log of device accesses into a trace.
#[derive(Debug, Args)]
pub struct Cmd {
    #[command(subcommand)]
    source: Source,
}

#[derive(Debug, Subcommand)]
enum Source {
    QemuLog(QemuLog),
}

/// Convert a QEMU log of device accesses into a trace, as `mmiotrace vm`
/// would have written it.
///
/// LOG is what QEMU (7.2 or later) wrote with
///   -trace memory_region_ops_read -trace memory_region_ops_write
///   -trace pci_update_mappings_add -trace pci_update_mappings_del
///   -trace pci_cfg_read -trace pci_cfg_write -msg timestamp=on -D LOG
/// (the config-space events give PCIDEV's vendor and device IDs; without
/// them both are ffff), or what `mmiotrace vm --keep-log` kept, with the
/// plugin's pc lines (from standard input, accesses before the first such
/// line get pc 0). Lines of
/// other events, and QEMU's messages, are skipped; a line of a known event
/// that does not parse is an error naming its line and column.
///
/// Examples:
///   mmiotrace import qemu-log qemu.log -o guest.trace
///   mmiotrace import qemu-log qemu.log --device e1000 -o e1000.mtb
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
struct QemuLog {
    /// QEMU's log; `-` for standard input.
    #[arg(value_name = "LOG")]
    input: PathBuf,

    /// Where to write; `-` (the default) for standard output. A file is
    /// written beside OUT and renamed over it only on success.
    #[arg(short, long, value_name = "OUT", default_value = "-")]
    output: PathBuf,

    /// Output format (default: binary when OUT ends in `.mtb`, else text).
    #[arg(long, value_enum, value_name = "FORMAT")]
    to: Option<TraceFormat>,

    /// Only these PCI functions (repeatable): QEMU's device type (a glob)
    /// or a PCI address, as for `mmiotrace vm`.
    #[arg(long = "device", value_name = "FILTER", value_parser = DeviceFilter::parse)]
    devices: Vec<DeviceFilter>,

    /// Also write accesses to port I/O BARs.
    #[arg(long)]
    port_io: bool,

    /// Do not print the summary.
    #[arg(short, long)]
    quiet: bool,
}

impl Cmd {
    pub fn run(self) -> anyhow::Result<()> {
        let Source::QemuLog(cmd) = self.source;
        refuse_same_file(&cmd.input, &cmd.output)?;
        let (input, name) = open_input(&cmd.input)?;
        let mut reader = QemuLogReader::new(BufReader::with_capacity(1 << 20, input), name);
        let (mut writer, out_name, out_file) = trace_writer(&cmd.output, cmd.to)?;
        let plugin = cmd.input != Path::new("-") && has_plugin_lines(&cmd.input)?;
        let mut converter = Converter::new(cmd.devices, cmd.port_io, plugin);
        let mut write = |event: &mmiotrace_trace::Event| -> anyhow::Result<()> {
            writer
                .write_event(event)
                .with_context(|| format!("cannot write to {out_name}"))
        };
        while let Some(event) = reader.next_event()? {
            converter.push(event, &mut write)?;
        }
        converter.finish(&mut write)?;
        writer
            .flush()
            .with_context(|| format!("cannot write to {out_name}"))?;
        drop(writer);
        out_file.commit()?;
        if !cmd.quiet {
            let mut err = std::io::stderr().lock();
            let has_pc = converter.counts.with_pc > 0;
            print_counts(&mut err, &converter.counts, !has_pc, cmd.port_io);
        }
        Ok(())
    }
}

/// Whether a log file holds the plugin's pc lines (`mmiotrace vm` wrote
/// it with the plugin): then each access waits for its line from the start,
/// instead of only once the first one has been seen (standard input).
fn has_plugin_lines(path: &Path) -> anyhow::Result<bool> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if read == 0 {
            return Ok(false);
        }
        if line.starts_with(b"mmiotrace-mem ") || line.starts_with(b"mmiotrace-pio ") {
            return Ok(true);
        }
    }
}
