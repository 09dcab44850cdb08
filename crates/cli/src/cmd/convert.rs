//! `mmiotrace convert`: rewrite a trace in another format.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use mmiotrace_trace::{
    BinaryWriter, EventWrite, JsonLinesWriter, ReadOptions, TextWriter, TraceReader,
};

/// Convert a trace between the kernel's text format, mmiotrace's binary
/// format and JSON lines.
///
/// The input format (text or binary) is detected from the first bytes.
/// Without --to, the output is binary when OUT ends in `.mtb`, JSON lines
/// when it ends in `.jsonl`, and text otherwise (also on stdout).
///
/// A text trace whose last line is cut off (copied while still being
/// written) is converted up to that line, with a warning; --strict makes
/// it an error. Any malformed line is an error naming its line and column.
///
/// Examples:
///   mmiotrace convert trace.txt -o trace.mtb
///   mmiotrace convert trace.mtb | less
///   mmiotrace convert trace.mtb --to jsonl | jq .
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct Cmd {
    /// The trace to read, text or binary; `-` for standard input.
    #[arg(value_name = "IN")]
    input: PathBuf,

    /// Where to write; `-` (the default) for standard output.
    #[arg(short, long, value_name = "OUT", default_value = "-")]
    output: PathBuf,

    /// Output format (default: from OUT's extension, else text).
    #[arg(long, value_enum, value_name = "FORMAT")]
    to: Option<OutputFormat>,

    /// Treat a cut-off last line or record as an error.
    #[arg(long)]
    strict: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// The kernel's mmiotrace text log (with mmiotrace's extensions).
    Text,
    /// mmiotrace's compact binary format (`.mtb`).
    Binary,
    /// One JSON object per line.
    Jsonl,
}

impl Cmd {
    pub fn run(self) -> anyhow::Result<()> {
        let format = self.to.unwrap_or_else(|| format_for_path(&self.output));
        let (reader, name) = open_input(&self.input)?;
        let options = ReadOptions::default()
            .with_name(name.as_str())
            .with_fatal_truncation(self.strict);
        let mut reader = TraceReader::new(reader, options)?;

        let out: Box<dyn Write> = if self.output == Path::new("-") {
            Box::new(io::stdout().lock())
        } else {
            Box::new(
                File::create(&self.output)
                    .with_context(|| format!("cannot create {}", self.output.display()))?,
            )
        };
        let out = BufWriter::with_capacity(256 * 1024, out);
        let out_name = if self.output == Path::new("-") {
            "standard output".to_string()
        } else {
            self.output.display().to_string()
        };
        let mut writer: Box<dyn EventWrite> = match format {
            OutputFormat::Text => Box::new(TextWriter::new(out)),
            OutputFormat::Binary => Box::new(
                BinaryWriter::new(out).with_context(|| format!("cannot write to {out_name}"))?,
            ),
            OutputFormat::Jsonl => Box::new(JsonLinesWriter::new(out)),
        };

        while let Some(event) = reader.read_ref()? {
            writer
                .write_event(event)
                .with_context(|| format!("cannot write to {out_name}"))?;
        }
        if let Some(truncation) = reader.truncation() {
            eprintln!("mmiotrace: warning: {truncation}");
        }
        writer
            .flush()
            .with_context(|| format!("cannot write to {out_name}"))?;
        Ok(())
    }
}

/// The output format implied by a file name.
fn format_for_path(path: &Path) -> OutputFormat {
    match path.extension().and_then(|e| e.to_str()) {
        Some("mtb") => OutputFormat::Binary,
        Some("jsonl") => OutputFormat::Jsonl,
        _ => OutputFormat::Text,
    }
}

/// Opens IN (`-` is standard input) and names it for messages.
pub(crate) fn open_input(path: &Path) -> anyhow::Result<(Box<dyn Read>, String)> {
    if path == Path::new("-") {
        return Ok((Box::new(io::stdin().lock()), "<stdin>".to_string()));
    }
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok((Box::new(file), path.display().to_string()))
}
