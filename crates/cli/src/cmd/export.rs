//! `mmiotrace export`: a trace in formats other tools read.

mod parquet;
mod perfetto;
mod table;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use globset::Glob;
use mmiotrace_trace::Event;
use mmiotrace_trace::jsonl::format_json;

use super::common::{
    OutputFile, create_output, open_trace, parse_glob, parse_u64, refuse_same_file,
    warn_if_truncated,
};
use super::regs::{RegsArgs, namer};

/// Export a trace for a timeline viewer, a spreadsheet or a query engine.
///
///   --to perfetto   Chrome trace-event JSON: open it in ui.perfetto.dev or
///                   chrome://tracing. Each thread is a track with its
///                   accesses as instants (name: direction and register;
///                   value, width, pc, map and seq as arguments), REPEAT lines
///                   as slices, MARK lines as global instants, MAP/UNMAP as
///                   process instants, and a counter track of the value of
///                   each --counter register.
///   --to jsonl      one JSON object per event (docs/FORMAT.md, "JSON lines"),
///                   with a "reg" key where a database names the register.
///   --to csv        one row per event, with a header row; the columns below.
///   --to parquet    Apache Parquet, one row per event, for DuckDB, Spark,
///                   DataFusion or pandas: the columns below, unsigned
///                   integers as such, in row groups of 65536 rows.
///
/// Columns of csv and parquet: kind, time_ns, end_ns (REPEAT), seq, process,
/// pid (thread), map_id, phys, reg (register name, with --regs), width,
/// value (empty or null above 8 bytes),
/// value_hex, pc, count (LOST, REPEAT), len (REPEAT), size (MAP), until
/// (REPEAT, hex), text (MARK text, MAP path, VERSION, PCIDEV device and
/// driver, UNKNOWN opcode bytes). In csv, phys, pc and size are hex (`0x…`)
/// and value is decimal; parquet stores all four as unsigned integers.
///
/// Every format is written as the trace is read: memory does not grow with
/// the trace (parquet holds one row group).
///
/// Register names come from register databases (--regs, --device,
/// --chipset), bound to the trace's mappings as `mmiotrace decode` binds
/// them (see its --help). Perfetto then names accesses `R STATUS@0x8`, with
/// the name as the "reg" argument, and --counter takes register names
/// (globs, as `mmiotrace filter --reg` takes them) as well as addresses.
///
/// Examples:
///   mmiotrace export --to perfetto run.mtb -o run.json
///   mmiotrace export --to perfetto --counter 0xfebf0008 run.trace -o run.json
///   mmiotrace export --to parquet run.mtb -o run.parquet && duckdb -c "select phys, count(*) from 'run.parquet' group by 1"
///   mmiotrace export --to csv --regs nic.toml nic.trace -o nic.csv
///   mmiotrace export --to perfetto --regs nic.toml --counter STATUS nic.trace -o nic.json
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct Cmd {
    /// The trace to read, text or binary; `-` for standard input.
    #[arg(value_name = "IN")]
    input: PathBuf,

    /// Where to write; `-` (the default) for standard output (not for
    /// parquet). A file is written beside OUT and renamed over it only on
    /// success (an error leaves the old OUT as it was); OUT may not be IN.
    #[arg(short, long, value_name = "OUT", default_value = "-")]
    output: PathBuf,

    /// The format to write.
    #[arg(long, value_enum, value_name = "FORMAT")]
    to: ExportFormat,

    /// Perfetto: a counter track of this register's value: a physical
    /// address, or with --regs a register name (glob).
    #[arg(long, value_name = "ADDR|NAME", value_parser = parse_counter)]
    counter: Vec<Counter>,

    /// Treat a cut-off last line or record as an error.
    #[arg(long)]
    strict: bool,

    #[command(flatten)]
    regs: RegsArgs,
}

/// A `--counter` register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Counter {
    Addr(u64),
    /// A name glob, for the register databases.
    Name(Glob),
}

fn parse_counter(text: &str) -> anyhow::Result<Counter> {
    let starts_like_a_number = text.starts_with(|c: char| c.is_ascii_digit());
    if starts_like_a_number {
        return parse_u64(text).map(Counter::Addr);
    }
    parse_glob(text).map(Counter::Name)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// Chrome trace-event JSON, for ui.perfetto.dev and chrome://tracing.
    Perfetto,
    /// One JSON object per event.
    Jsonl,
    /// Comma-separated values with a header row.
    Csv,
    /// Apache Parquet.
    Parquet,
}

/// Something that takes the events one by one.
trait Exporter {
    /// `reg`: the name of the event's register, if a database has one.
    fn event(&mut self, event: &Event, reg: Option<&str>) -> anyhow::Result<()>;
    fn finish(self: Box<Self>) -> anyhow::Result<()>;
}

impl Cmd {
    pub fn run(self) -> anyhow::Result<()> {
        let registers = self.regs.load()?;
        if registers.is_none()
            && let Some(Counter::Name(name)) =
                self.counter.iter().find(|c| matches!(c, Counter::Name(_)))
        {
            anyhow::bail!(
                "--counter {name}: a register name needs a register database: give one with --regs FILE"
            );
        }
        let mut namer = namer(registers.as_ref())?;
        refuse_same_file(&self.input, &self.output)?;
        let (mut reader, _) = open_trace(&self.input, self.strict)?;
        let (mut exporter, out_file): (Box<dyn Exporter>, OutputFile) = match self.to {
            ExportFormat::Parquet => {
                anyhow::ensure!(
                    self.output != std::path::Path::new("-"),
                    "parquet needs a file: give -o OUT"
                );
                let (file, out_file) = OutputFile::create(&self.output)?;
                let name = self.output.display().to_string();
                (
                    Box::new(parquet::ParquetExporter::new(file, name)?),
                    out_file,
                )
            }
            format => {
                let (out, name, out_file) = create_output(&self.output)?;
                let exporter: Box<dyn Exporter> = match format {
                    ExportFormat::Perfetto => {
                        Box::new(perfetto::PerfettoExporter::new(out, name, &self.counter)?)
                    }
                    ExportFormat::Csv => Box::new(table::CsvExporter::new(out, name)?),
                    _ => Box::new(JsonLines {
                        out,
                        name,
                        line: Vec::new(),
                    }),
                };
                (exporter, out_file)
            }
        };
        while let Some(event) = reader.read_ref()? {
            let reg = namer.as_mut().and_then(|n| n.name(event));
            exporter.event(event, reg.map(|r| &**r))?;
        }
        warn_if_truncated(&reader);
        exporter.finish()?;
        out_file.commit()
    }
}

/// The trace crate's JSON lines, with a "reg" key added where a database
/// names the register.
struct JsonLines {
    out: Box<dyn std::io::Write>,
    name: String,
    line: Vec<u8>,
}

impl Exporter for JsonLines {
    fn event(&mut self, event: &Event, reg: Option<&str>) -> anyhow::Result<()> {
        self.line.clear();
        format_json(event, &mut self.line);
        if let Some(reg) = reg
            && self.line.ends_with(b"}\n")
        {
            self.line.truncate(self.line.len() - 2);
            self.line.extend_from_slice(b",\"reg\":");
            serde_json::to_writer(&mut self.line, reg).expect("a string always serialises");
            self.line.extend_from_slice(b"}\n");
        }
        self.out
            .write_all(&self.line)
            .with_context(|| format!("cannot write to {}", self.name))
    }

    fn finish(mut self: Box<Self>) -> anyhow::Result<()> {
        self.out
            .flush()
            .with_context(|| format!("cannot write to {}", self.name))
    }
}
