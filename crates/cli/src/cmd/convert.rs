//! `mmiotrace convert`: rewrite a trace in another format.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use mmiotrace_trace::{BinaryWriter, EventWrite, JsonLinesWriter, TextWriter};

use super::common::{
    create_output, open_trace_with_progress, refuse_binary_to_terminal, refuse_same_file,
    warn_if_truncated,
};

/// Convert a trace between the kernel's text format, mmiotrace's binary
/// format and JSON lines.
///
/// The input format (text or binary) is detected from the first bytes.
/// Without --to, the output is binary when OUT ends in `.mtb`, JSON lines
/// when it ends in `.jsonl`, and text otherwise (also on stdout). Binary
/// is not written to a terminal (as gzip and zstd refuse to).
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

    /// Where to write; `-` (the default) for standard output. A file is
    /// written beside OUT and renamed over it only on success (an error
    /// leaves the old OUT as it was); OUT may not be IN.
    #[arg(short, long, value_name = "OUT", default_value = "-")]
    output: PathBuf,

    /// Output format (default: from OUT's extension, else text).
    #[arg(long, value_enum, value_name = "FORMAT")]
    to: Option<OutputFormat>,

    /// Treat a cut-off last line or record as an error.
    #[arg(long)]
    strict: bool,

    /// No progress bar (one is drawn on standard error while reading, when
    /// that is a terminal).
    #[arg(short, long)]
    quiet: bool,
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
        refuse_same_file(&self.input, &self.output)?;
        if format == OutputFormat::Binary {
            refuse_binary_to_terminal(&self.output, "a binary trace")?;
        }
        let (mut reader, _, progress) =
            open_trace_with_progress(&self.input, self.strict, self.quiet)?;
        let (out, out_name, out_file) = create_output(&self.output)?;
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
        progress.finish_and_clear();
        warn_if_truncated(&reader);
        writer
            .flush()
            .with_context(|| format!("cannot write to {out_name}"))?;
        drop(writer);
        out_file.commit()
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
