//! `mmiotrace export`: a trace in formats other tools read.

mod parquet;
mod perfetto;
mod table;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use mmiotrace_trace::{Event, JsonLinesWriter};

use super::common::{create_output, open_trace, parse_u64, warn_if_truncated};

/// Export a trace for a timeline viewer, a spreadsheet or a query engine.
///
///   --to perfetto   Chrome trace-event JSON: open it in ui.perfetto.dev or
///                   chrome://tracing. Each thread is a track with its
///                   accesses as instants (name: direction and register;
///                   value, width, pc, map and seq as arguments), REPEAT lines
///                   as slices, MARK lines as global instants, MAP/UNMAP as
///                   process instants, and a counter track of the value of
///                   each --counter register.
///   --to jsonl      one JSON object per event (docs/FORMAT.md, "JSON lines").
///   --to csv        one row per event, with a header row; the columns below.
///   --to parquet    Apache Parquet, one row per event, for DuckDB, Spark,
///                   DataFusion or pandas: the columns below, unsigned
///                   integers as such, in row groups of 65536 rows.
///
/// Columns of csv and parquet: kind, time_ns, end_ns (REPEAT), seq, process,
/// pid (thread), map_id, phys, width, value (empty or null above 8 bytes),
/// value_hex, pc, count (LOST, REPEAT), len (REPEAT), size (MAP), until
/// (REPEAT, hex), text (MARK text, MAP path, VERSION, PCIDEV device and
/// driver, UNKNOWN opcode bytes). In csv, phys, pc and size are hex (`0x…`)
/// and value is decimal; parquet stores all four as unsigned integers.
///
/// Every format is written as the trace is read: memory does not grow with
/// the trace (parquet holds one row group).
///
/// Examples:
///   mmiotrace export --to perfetto run.mtb -o run.json
///   mmiotrace export --to perfetto --counter 0xfebf0008 run.trace -o run.json
///   mmiotrace export --to parquet run.mtb -o run.parquet && duckdb -c "select phys, count(*) from 'run.parquet' group by 1"
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct Cmd {
    /// The trace to read, text or binary; `-` for standard input.
    #[arg(value_name = "IN")]
    input: PathBuf,

    /// Where to write; `-` (the default) for standard output (not for parquet).
    #[arg(short, long, value_name = "OUT", default_value = "-")]
    output: PathBuf,

    /// The format to write.
    #[arg(long, value_enum, value_name = "FORMAT")]
    to: ExportFormat,

    /// Perfetto: a counter track of this register's value (physical address).
    #[arg(long, value_name = "ADDR", value_parser = parse_u64)]
    counter: Vec<u64>,

    /// Treat a cut-off last line or record as an error.
    #[arg(long)]
    strict: bool,
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
    fn event(&mut self, event: &Event) -> anyhow::Result<()>;
    fn finish(self: Box<Self>) -> anyhow::Result<()>;
}

impl Cmd {
    pub fn run(self) -> anyhow::Result<()> {
        let (mut reader, _) = open_trace(&self.input, self.strict)?;
        let mut exporter: Box<dyn Exporter> = match self.to {
            ExportFormat::Parquet => {
                anyhow::ensure!(
                    self.output != std::path::Path::new("-"),
                    "parquet needs a file: give -o OUT"
                );
                Box::new(parquet::ParquetExporter::create(&self.output)?)
            }
            format => {
                let (out, name) = create_output(&self.output)?;
                match format {
                    ExportFormat::Perfetto => {
                        Box::new(perfetto::PerfettoExporter::new(out, name, &self.counter)?)
                    }
                    ExportFormat::Csv => Box::new(table::CsvExporter::new(out, name)?),
                    _ => Box::new(JsonLines {
                        writer: JsonLinesWriter::new(out),
                        name,
                    }),
                }
            }
        };
        while let Some(event) = reader.read_ref()? {
            exporter.event(event)?;
        }
        warn_if_truncated(&reader);
        exporter.finish()
    }
}

struct JsonLines {
    writer: JsonLinesWriter<Box<dyn std::io::Write>>,
    name: String,
}

impl Exporter for JsonLines {
    fn event(&mut self, event: &Event) -> anyhow::Result<()> {
        self.writer
            .write_event(event)
            .with_context(|| format!("cannot write to {}", self.name))
    }

    fn finish(mut self: Box<Self>) -> anyhow::Result<()> {
        self.writer
            .flush()
            .with_context(|| format!("cannot write to {}", self.name))
    }
}
