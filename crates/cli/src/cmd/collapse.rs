//! `mmiotrace collapse`: fold polling loops into `REPEAT` lines.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::common::{TraceFormat, open_trace, refuse_same_file, trace_writer, warn_if_truncated};
use super::polling::{Folder, Options};

/// Fold repeated polling into one summary line per loop.
///
/// A loop is a thread repeating the same few accesses (same register,
/// direction, width, value and pc) at least --min-repeats times in a row, for
/// example reading a status register until a bit changes, or writing an index
/// register and reading a data register. The first repetition stays as it
/// is; the others become one REPEAT line with their count, the times of the
/// first and last, the polled register and value, and (with until=) the value
/// that ended the loop. Everything else is kept, in order: the output is a
/// valid trace (docs/FORMAT.md, "Folded polling loops").
///
/// Other threads' events may come between the repetitions. Any other kind
/// of event (MARK, MAP, UNMAP, ...) ends every loop. Memory stays bounded:
/// at most --window events are held back while a loop is open.
///
/// Examples:
///   mmiotrace collapse run.trace | less
///   mmiotrace collapse --max-period 8 run.mtb -o run.collapsed.mtb
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

    /// Output format (default: binary when OUT ends in `.mtb`, else text).
    #[arg(long, value_enum, value_name = "FORMAT")]
    to: Option<TraceFormat>,

    /// Longest repeated sequence of accesses to look for.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    max_period: u64,

    /// Fold a sequence seen at least N times in a row (the first is kept).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u64).range(2..))]
    min_repeats: u64,

    /// Most events held back while a loop is open.
    #[arg(long, value_name = "N", default_value_t = 16_384)]
    window: usize,

    /// Treat a cut-off last line or record as an error.
    #[arg(long)]
    strict: bool,
}

impl Cmd {
    pub fn run(self) -> anyhow::Result<()> {
        refuse_same_file(&self.input, &self.output)?;
        let (mut reader, _) = open_trace(&self.input, self.strict)?;
        let (mut writer, out_name, out_file) = trace_writer(&self.output, self.to)?;
        let mut folder = Folder::new(Options {
            max_period: self.max_period as usize,
            min_repeats: self.min_repeats,
            window: self.window,
        });
        let mut write = |event: mmiotrace_trace::Event| writer.write_event(&event);
        while let Some(event) = reader.read_ref()? {
            folder
                .push(event, &mut write)
                .with_context(|| format!("cannot write to {out_name}"))?;
        }
        folder
            .finish(&mut write)
            .with_context(|| format!("cannot write to {out_name}"))?;
        warn_if_truncated(&reader);
        writer
            .flush()
            .with_context(|| format!("cannot write to {out_name}"))?;
        drop(writer);
        out_file.commit()
    }
}
