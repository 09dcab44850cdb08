//! `mmiotrace export`: a trace in formats other tools read.

mod chrome_json;
mod counters;
mod parquet;
mod perfetto;
mod table;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use globset::Glob;
use mmiotrace_trace::jsonl::format_json;
use mmiotrace_trace::{Event, Format};

use super::common::{
    OutputFile, create_output, open_trace_with_progress, parse_glob, parse_u64,
    refuse_binary_to_terminal, refuse_same_file, warn_if_truncated,
};
use super::regs::{RegsArgs, namer};

/// Export a trace for a timeline viewer, a spreadsheet or a query engine.
///
///   --to perfetto   Perfetto's native protobuf trace (about 46 bytes an
///                   access): open it in ui.perfetto.dev. A track per
///                   process and per thread, with the thread's accesses as
///                   instants (name: direction and register; value, width,
///                   map, seq and pc as arguments, the value an exact
///                   integer), REPEAT lines as slices, MAP/UNMAP as
///                   instants on the process's track, MARK lines (and lost
///                   events) as instants on a "marks" track, and a counter
///                   track of the value of each --counter register.
///   --to chrome-json
///                   the same as Chrome trace-event JSON, for
///                   chrome://tracing (about 170 bytes an access; values as
///                   hex strings, counters as JSON numbers).
///   --to jsonl      one JSON object per event (docs/FORMAT.md, "JSON lines"),
///                   with a "reg" key where a database names the register.
///   --to csv        one row per event, with a header row; the columns below.
///   --to parquet    Apache Parquet, zstd-compressed, for DuckDB, Spark,
///                   DataFusion or pandas, in two files: OUT holds the
///                   accesses (R and W), one row each, every column but reg
///                   non-null: time_ns, seq, process, pid (thread), map_id,
///                   phys, dir (R or W), width, value, value_hex, pc, reg.
///                   seq is the event's position in the trace (from 0) where
///                   the trace has none (the kernel's), process the pid
///                   where it has none; value holds the low 8 bytes of a
///                   wider value (value_hex has all of it). OUT with
///                   `.parquet` replaced by `.events.parquet` (run.parquet:
///                   run.events.parquet) holds every other event, in the
///                   columns below. Both carry key-value metadata:
///                   mmiotrace.table, .source (IN), .source_format,
///                   .version and .time_base. Row groups of 65536 rows.
///
/// Columns of csv (every event) and of parquet's events file: kind,
/// time_ns, end_ns (REPEAT), seq, process, pid (thread), map_id, phys, reg
/// (register name, with --regs), width, value (empty or null above 8
/// bytes), value_hex, pc, count (LOST, REPEAT), len (REPEAT), size (MAP),
/// until (REPEAT, hex), text (MARK text, MAP path, VERSION, PCIDEV device
/// and driver, UNKNOWN opcode bytes). In csv, phys, pc and size are hex
/// (`0x…`) and value is decimal; parquet stores all four as unsigned
/// integers, and times in nanoseconds.
///
/// Every format is written as the trace is read: memory does not grow with
/// the trace (parquet holds one row group per file). perfetto refuses to
/// write to a terminal.
///
/// Register names come from register databases (--regs, --device,
/// --chipset), bound to the trace's mappings as `mmiotrace decode` binds
/// them (see its --help). perfetto and chrome-json then name accesses
/// `R STATUS@0x8` (chrome-json adds the name as the "reg" argument), and
/// --counter takes register names (globs, as `mmiotrace filter --reg`
/// takes them) as well as addresses.
///
/// Examples:
///   mmiotrace export --to perfetto run.mtb -o run.pftrace
///   mmiotrace export --to perfetto --counter 0xfebf0008 run.trace -o run.pftrace
///   mmiotrace export --to chrome-json run.mtb -o run.json
///   mmiotrace export --to parquet run.mtb -o run.parquet && duckdb -c "select phys, count(*) from 'run.parquet' group by 1"
///   mmiotrace export --to csv --regs nic.toml nic.trace -o nic.csv
///   mmiotrace export --to perfetto --regs nic.toml --counter STATUS nic.trace -o nic.pftrace
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct Cmd {
    /// The trace to read, text or binary; `-` for standard input.
    #[arg(value_name = "IN")]
    input: PathBuf,

    /// Where to write; `-` (the default) for standard output (not for
    /// parquet; for perfetto, not a terminal). A file is written beside OUT and renamed over it only on
    /// success (an error leaves the old OUT as it was); OUT may not be IN.
    #[arg(short, long, value_name = "OUT", default_value = "-")]
    output: PathBuf,

    /// The format to write.
    #[arg(long, value_enum, value_name = "FORMAT")]
    to: ExportFormat,

    /// perfetto, chrome-json: a counter track of this register's value: a physical
    /// address, or with --regs a register name (glob).
    #[arg(long, value_name = "ADDR|NAME", value_parser = parse_counter)]
    counter: Vec<Counter>,

    /// Treat a cut-off last line or record as an error.
    #[arg(long)]
    strict: bool,

    /// No progress bar (one is drawn on standard error while reading, when
    /// that is a terminal).
    #[arg(short, long)]
    quiet: bool,

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
    /// Perfetto's native protobuf trace, for ui.perfetto.dev.
    Perfetto,
    /// Chrome trace-event JSON, for chrome://tracing and ui.perfetto.dev.
    ChromeJson,
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
        let (mut reader, source, progress) =
            open_trace_with_progress(&self.input, self.strict, self.quiet)?;
        let mut out_files = Vec::new();
        let mut exporter: Box<dyn Exporter> = match self.to {
            ExportFormat::Parquet => {
                anyhow::ensure!(
                    self.output != Path::new("-"),
                    "parquet needs a file: give -o OUT"
                );
                let events_path = events_path(&self.output);
                refuse_same_file(&self.input, &events_path)?;
                let (accesses, accesses_file) = OutputFile::create(&self.output)?;
                let (events, events_file) = OutputFile::create(&events_path)?;
                out_files.extend([accesses_file, events_file]);
                let provenance = parquet::Provenance {
                    source,
                    source_format: match reader.format() {
                        Format::Binary => "binary",
                        // Readers detect text or binary only.
                        Format::Text | Format::JsonLines => "text",
                    },
                };
                Box::new(parquet::ParquetExporter::new(
                    (accesses, self.output.display().to_string()),
                    (events, events_path.display().to_string()),
                    &provenance,
                )?)
            }
            format => {
                if format == ExportFormat::Perfetto {
                    refuse_binary_to_terminal(&self.output, "a Perfetto trace")?;
                }
                let (out, name, out_file) = create_output(&self.output)?;
                out_files.push(out_file);
                match format {
                    ExportFormat::Perfetto => {
                        Box::new(perfetto::PerfettoExporter::new(out, name, &self.counter)?)
                    }
                    ExportFormat::ChromeJson => Box::new(chrome_json::ChromeJsonExporter::new(
                        out,
                        name,
                        &self.counter,
                    )?),
                    ExportFormat::Csv => Box::new(table::CsvExporter::new(out, name)?),
                    _ => Box::new(JsonLines {
                        out,
                        name,
                        line: Vec::new(),
                    }),
                }
            }
        };
        while let Some(event) = reader.read_ref()? {
            let reg = namer.as_mut().and_then(|n| n.name(event));
            exporter.event(event, reg.map(|r| &**r))?;
        }
        progress.finish_and_clear();
        warn_if_truncated(&reader);
        exporter.finish()?;
        for out_file in out_files {
            out_file.commit()?;
        }
        Ok(())
    }
}

/// Where parquet puts the events other than accesses: beside OUT, `.parquet`
/// replaced by (or else followed by) `.events.parquet`.
pub fn events_path(accesses: &Path) -> PathBuf {
    let name = accesses
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".parquet").unwrap_or(&name);
    accesses.with_file_name(format!("{stem}.events.parquet"))
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
