//! `mmiotrace decode`: name the registers and fields of every access.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use mmiotrace_regdb::DecodeSink;
use mmiotrace_regdb::format::{JsonWriter, TextWriter};
use mmiotrace_trace::rwmmio::{RwmmioReader, looks_like_rwmmio};
use mmiotrace_trace::{Item, ReadOptions, TraceReader};

use super::common::{create_output, open_input, refuse_same_file};
use super::regs::RegsArgs;

/// Decode a trace: for every access, the register's name and the values of
/// its fields, from register databases.
///
/// Reads mmiotrace traces (text or binary) and the kernel's rwmmio ftrace
/// events (CONFIG_TRACE_MMIO_ACCESS: `cat /sys/kernel/tracing/trace`).
/// Databases (--regs, any number) are rules-ng-ng XML (envytools' rnndb,
/// Mesa's freedreno/etnaviv files), CMSIS-SVD, or mmiotrace's TOML register
/// maps (docs/REGISTERS.md). The format is told by extension and content.
///
/// Which database decodes which mapping:
///   1. --device specs, in order;
///   2. each database's own rules: a TOML map's [match] table, an SVD
///      file's peripheral addresses, NVIDIA's BAR0 for rnndb's NV_MMIO;
///   3. with a single --regs and no --device, every mapping nothing else
///      claims.
///
/// Offsets count from the start of the PCI BAR that holds the mapping (the
/// trace's PCIDEV lines), else from the mapping's start; SVD databases use
/// physical addresses.
///
/// --device SELECTOR=DATABASE[#DOMAIN][@VARIANT]
///   SELECTOR  vendor:device[/barN] (PCIDEV IDs, BAR 0 unless given),
///             a map id (`3` or `map:3`), a path glob for the mapped file
///             (`/dev/shm/nic-*`), or an address range `0xSTART[+LEN]`
///             (for rwmmio traces, whose addresses are kernel virtual
///             addresses, and other traces without MAP records);
///   DATABASE  a --regs file by path, file name or name, or another file;
///   DOMAIN    the rules-ng-ng domain (default: the first one defined);
///   VARIANT   the chipset (rules-ng-ng variant), e.g. GP107.
/// Without a variant, the chipset is learnt from the trace where it reads
/// an ID register (NVIDIA's PMC.ID), as envytools' demmio does; until then
/// the first definition of each register wins.
///
/// Output, one line per access: time, thread, R/W, width, device, offset,
/// value, register (`?` if unknown), then `=>` (read) or `<=` (write) and
/// the fields. --format jsonl writes one JSON object per line instead.
///
/// Examples:
///   mmiotrace decode nouveau.trace --regs rnndb/nv_mmio.xml
///   mmiotrace decode gpu.trace --regs rnndb/nv_mmio.xml --chipset GK104
///   mmiotrace decode nic.trace --regs nic.toml --device '/dev/shm/nic-*=nic.toml'
///   mmiotrace decode ftrace.txt --regs soc.svd --device 0xffffc90000010000+0x1000=soc.svd
///   mmiotrace decode vm.trace --regs e1000.toml --symbols kallsyms
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct Cmd {
    /// The trace to read: text, binary or rwmmio ftrace; `-` for standard input.
    #[arg(value_name = "TRACE")]
    input: PathBuf,

    #[command(flatten)]
    regs: RegsArgs,

    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: DecodeFormat,

    /// Where to write; `-` (the default) for standard output. A file is
    /// written beside OUT and renamed over it only on success (an error
    /// leaves the old OUT as it was); OUT may not be IN.
    #[arg(short, long, value_name = "OUT", default_value = "-")]
    output: PathBuf,

    /// Treat a cut-off last line or record as an error.
    #[arg(long)]
    strict: bool,

    /// Name each access's pc with these code symbols: a System.map, or a
    /// copy of /proc/kallsyms (taken as root, so that it has addresses;
    /// module symbols included). Lines end with `@ FUNCTION+0xOFFSET`.
    #[arg(long, value_name = "FILE")]
    symbols: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DecodeFormat {
    /// One line per access, for people.
    Text,
    /// One JSON object per line.
    Jsonl,
}

/// The trace readers decode can take.
enum Input<R: Read> {
    Trace(TraceReader<R>),
    Rwmmio(RwmmioReader<R>),
}

impl Cmd {
    pub fn run(self) -> anyhow::Result<()> {
        let Some(registers) = self.regs.load()? else {
            anyhow::bail!("no register database: give one with --regs FILE");
        };
        let mut decoder = registers.decoder()?;

        refuse_same_file(&self.input, &self.output)?;
        let (reader, name) = open_input(&self.input)?;
        let mut reader = BufReader::with_capacity(256 * 1024, reader);
        let prefix = reader
            .fill_buf()
            .with_context(|| format!("cannot read {name}"))?;
        let read_options = ReadOptions::default()
            .with_name(name.as_str())
            .with_fatal_truncation(self.strict);
        let mut input = if looks_like_rwmmio(prefix) {
            if !registers.binds_a_range() {
                eprintln!(
                    "mmiotrace: warning: {name} holds rwmmio events, whose addresses are the kernel's virtual addresses: bind them with --device 0xSTART+LEN=DATABASE"
                );
            }
            Input::Rwmmio(RwmmioReader::new(reader, read_options))
        } else {
            Input::Trace(TraceReader::new(reader, read_options)?)
        };

        let symbols = self
            .symbols
            .as_deref()
            .map(super::symbols::load)
            .transpose()?;
        let (out, out_name, out_file) = create_output(&self.output)?;
        let mut sink: Box<dyn DecodeSinkFlush> = match (self.format, symbols) {
            (DecodeFormat::Text, None) => Box::new(TextWriter::new(out)),
            (DecodeFormat::Text, Some(s)) => Box::new(TextWriter::new(out).with_symbols(s)),
            (DecodeFormat::Jsonl, None) => Box::new(JsonWriter::new(out)),
            (DecodeFormat::Jsonl, Some(s)) => Box::new(JsonWriter::new(out).with_symbols(s)),
        };
        let write_err = || format!("cannot write to {out_name}");
        match &mut input {
            Input::Trace(reader) => {
                while let Some(event) = reader.read_ref()? {
                    decoder
                        .feed(event, sink.as_sink())
                        .with_context(write_err)?;
                }
                if let Some(t) = reader.truncation() {
                    eprintln!("mmiotrace: warning: {t}");
                }
            }
            Input::Rwmmio(reader) => {
                while let Some(item) = reader.read_item()? {
                    match item {
                        Item::Event(event) => decoder
                            .feed(&event, sink.as_sink())
                            .with_context(write_err)?,
                        Item::Truncated(t) => eprintln!("mmiotrace: warning: {t}"),
                    }
                }
            }
        }
        sink.flush_out().with_context(write_err)?;
        drop(sink);
        out_file.commit()
    }
}

/// A decode sink whose output can be flushed at the end.
trait DecodeSinkFlush {
    fn as_sink(&mut self) -> &mut dyn DecodeSink;
    fn flush_out(&mut self) -> io::Result<()>;
}

impl<W: Write> DecodeSinkFlush for TextWriter<W> {
    fn as_sink(&mut self) -> &mut dyn DecodeSink {
        self
    }
    fn flush_out(&mut self) -> io::Result<()> {
        self.flush()
    }
}

impl<W: Write> DecodeSinkFlush for JsonWriter<W> {
    fn as_sink(&mut self) -> &mut dyn DecodeSink {
        self
    }
    fn flush_out(&mut self) -> io::Result<()> {
        self.flush()
    }
}
