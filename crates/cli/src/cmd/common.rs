//! What the analysis commands (`stats`, `filter`, `collapse`, `diff`,
//! `export`, `convert`, `decode`) share: opening traces and outputs, and parsing the numbers,
//! times and ranges their options take.
//!
//! Register names: every command prints registers by physical address
//! (`{:#x}`); given register databases (`--regs`, `--device`, `--chipset`:
//! [`super::regs`]), by name and address, through [`register_label`].

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context as _, bail};
use clap::ValueEnum;
use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use mmiotrace_trace::{BinaryWriter, EventWrite, ReadOptions, TextWriter, Timestamp, TraceReader};

/// A trace reader over a file or standard input.
pub type Reader = TraceReader<Box<dyn Read>>;

/// Opens IN (`-` is standard input) and names it for messages.
pub fn open_input(path: &Path) -> anyhow::Result<(Box<dyn Read>, String)> {
    if path == Path::new("-") {
        return Ok((Box::new(io::stdin().lock()), "<stdin>".to_string()));
    }
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok((Box::new(file), path.display().to_string()))
}

/// Opens IN as [`open_input`] does, with a progress bar over its bytes on a
/// terminal (not with `quiet`, nor for standard input), cleared when the
/// returned bar is finished or dropped.
pub fn open_input_with_progress(
    path: &Path,
    quiet: bool,
) -> anyhow::Result<(Box<dyn Read>, String, indicatif::ProgressBar)> {
    if path == Path::new("-") {
        let (input, name) = open_input(path)?;
        return Ok((input, name, indicatif::ProgressBar::hidden()));
    }
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = file
        .metadata()
        .ok()
        .filter(|meta| meta.is_file())
        .map(|meta| meta.len());
    let name = path.display().to_string();
    let bar = super::progress::reading(&name, len, quiet);
    Ok((Box::new(bar.wrap_read(file)), name, bar))
}

/// Opens a trace as [`open_trace`] does, with [`open_input_with_progress`]'s bar.
pub fn open_trace_with_progress(
    path: &Path,
    strict: bool,
    quiet: bool,
) -> anyhow::Result<(Reader, String, indicatif::ProgressBar)> {
    let (input, name, bar) = open_input_with_progress(path, quiet)?;
    let options = ReadOptions::default()
        .with_name(name.as_str())
        .with_fatal_truncation(strict);
    Ok((TraceReader::new(input, options)?, name, bar))
}

/// Opens a trace (`-` for standard input), text or binary.
pub fn open_trace(path: &Path, strict: bool) -> anyhow::Result<(Reader, String)> {
    let (input, name) = open_input(path)?;
    let options = ReadOptions::default()
        .with_name(name.as_str())
        .with_fatal_truncation(strict);
    Ok((TraceReader::new(input, options)?, name))
}

/// After the last event: warns if the trace was cut off.
pub fn warn_if_truncated(reader: &Reader) {
    if let Some(t) = reader.truncation() {
        eprintln!("mmiotrace: warning: {t}");
    }
}

/// Refuses to write OUT when it is the file IN is read from (the same
/// device and inode: through a symlink or a hard link too). Writing it
/// would destroy the trace being read.
pub fn refuse_same_file(input: &Path, output: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if input == Path::new("-") || output == Path::new("-") {
        return Ok(());
    }
    let (Ok(inp), Ok(out)) = (std::fs::metadata(input), std::fs::metadata(output)) else {
        return Ok(());
    };
    if inp.dev() == out.dev() && inp.ino() == out.ino() && out.is_file() {
        bail!(
            "{} is the trace being read ({}): writing it would destroy it; give another -o OUT",
            output.display(),
            input.display()
        );
    }
    Ok(())
}

/// Refuses to write binary data (`what`) to standard output when it is a
/// terminal, as gzip and zstd do: it would only garble the screen.
pub fn refuse_binary_to_terminal(output: &Path, what: &str) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    if output == Path::new("-") && io::stdout().is_terminal() {
        bail!(
            "not writing {what} to a terminal: give -o FILE, or redirect standard output (`> FILE`, `| …`)"
        );
    }
    Ok(())
}

/// A file an output is written to. A regular file (new or existing) is
/// written to a temporary file in the same directory, which
/// [`commit`](Self::commit) renames into place once everything is
/// written: an error part-way leaves the previous file untouched and no
/// partial file behind (dropping an uncommitted output removes the
/// temporary file). Standard output, devices and FIFOs are written
/// directly.
#[derive(Debug)]
pub struct OutputFile {
    /// The temporary file and where it goes; `None` when writing directly.
    pending: Option<(PathBuf, PathBuf)>,
}

impl OutputFile {
    /// Creates the file behind `path` (not `-`): returns it and its handle.
    pub fn create(path: &Path) -> anyhow::Result<(File, OutputFile)> {
        // Replace the file a symlink points to, not the symlink.
        let dest = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        let existing = std::fs::metadata(&dest).ok();
        if existing.as_ref().is_some_and(|meta| !meta.is_file()) {
            let file =
                File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
            return Ok((file, OutputFile { pending: None }));
        }
        let dir = match dest.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        let base = dest
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let temp = dir.join(format!(
            ".{base}.{}-{}.tmp",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .with_context(|| {
                format!(
                    "cannot create {} (a temporary file beside {})",
                    temp.display(),
                    path.display()
                )
            })?;
        let output = OutputFile {
            pending: Some((temp, dest)),
        };
        if let (Some(meta), Some((temp, _))) = (existing, &output.pending) {
            // The new file keeps the old one's permissions.
            let _ = std::fs::set_permissions(temp, meta.permissions());
        }
        Ok((file, output))
    }

    /// Everything is written (and flushed): moves the file into place.
    pub fn commit(mut self) -> anyhow::Result<()> {
        if let Some((temp, dest)) = self.pending.take() {
            if let Err(err) = std::fs::rename(&temp, &dest) {
                let _ = std::fs::remove_file(&temp);
                return Err(err).with_context(|| format!("cannot replace {}", dest.display()));
            }
        }
        Ok(())
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if let Some((temp, _)) = self.pending.take() {
            let _ = std::fs::remove_file(temp);
        }
    }
}

/// A buffered output: a file, or standard output for `-`; its name for
/// messages; and the [`OutputFile`] to commit once everything is written
/// and flushed.
pub fn create_output(path: &Path) -> anyhow::Result<(Box<dyn Write>, String, OutputFile)> {
    if path == Path::new("-") {
        let out = BufWriter::with_capacity(256 * 1024, io::stdout().lock());
        return Ok((
            Box::new(out),
            "standard output".to_string(),
            OutputFile { pending: None },
        ));
    }
    let (file, output) = OutputFile::create(path)?;
    Ok((
        Box::new(BufWriter::with_capacity(256 * 1024, file)),
        path.display().to_string(),
        output,
    ))
}

/// The trace formats a command that writes a trace can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TraceFormat {
    /// The kernel's mmiotrace text log (with mmiotrace's extensions).
    Text,
    /// mmiotrace's compact binary format (`.mtb`).
    Binary,
}

/// Opens OUT as a trace writer: `to`, else binary when OUT ends in `.mtb`,
/// else text.
pub fn trace_writer(
    output: &Path,
    to: Option<TraceFormat>,
) -> anyhow::Result<(Box<dyn EventWrite>, String, OutputFile)> {
    let format = to.unwrap_or(match output.extension().and_then(|e| e.to_str()) {
        Some("mtb") => TraceFormat::Binary,
        _ => TraceFormat::Text,
    });
    if format == TraceFormat::Binary {
        refuse_binary_to_terminal(output, "a binary trace")?;
    }
    let (out, name, file) = create_output(output)?;
    let writer: Box<dyn EventWrite> = match format {
        TraceFormat::Text => Box::new(TextWriter::new(out)),
        TraceFormat::Binary => {
            Box::new(BinaryWriter::new(out).with_context(|| format!("cannot write to {name}"))?)
        }
    };
    Ok((writer, name, file))
}

/// `DEC` or `0xHEX` (underscores allowed).
pub fn parse_u64(text: &str) -> anyhow::Result<u64> {
    let clean: String = text.chars().filter(|&c| c != '_').collect();
    let parsed = match clean
        .strip_prefix("0x")
        .or_else(|| clean.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => clean.parse(),
    };
    parsed.with_context(|| format!("\"{text}\" is not a number (decimal, or hex after 0x)"))
}

pub fn parse_u32(text: &str) -> anyhow::Result<u32> {
    let n = parse_u64(text)?;
    u32::try_from(n).with_context(|| format!("{text} does not fit in 32 bits"))
}

/// Seconds as in a trace, `SECS[.FRACTION]` with up to 9 digits of fraction.
pub fn parse_time(text: &str) -> anyhow::Result<Timestamp> {
    let (secs, fraction) = text.split_once('.').unwrap_or((text, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if secs.is_empty() || !all_digits(secs) || !all_digits(fraction) || fraction.len() > 9 {
        bail!("\"{text}\" is not a time in seconds (like 12.000345)");
    }
    let secs: u64 = secs
        .parse()
        .with_context(|| format!("\"{text}\" is too large"))?;
    let mut nanos: u64 = 0;
    for d in fraction.bytes().chain(std::iter::repeat(b'0')).take(9) {
        nanos = nanos * 10 + u64::from(d - b'0');
    }
    secs.checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(nanos))
        .map(Timestamp::from_nanos)
        .with_context(|| format!("\"{text}\" is too large"))
}

/// `START..END` (END excluded), `START..=END`, `START..`, `..END`, or one
/// value, each bound parsed by `parse`. Returns the inclusive bounds.
pub fn parse_range<T: Copy>(
    text: &str,
    parse: impl Fn(&str) -> anyhow::Result<T>,
    min: T,
    max: T,
    before: impl Fn(T) -> Option<T>,
) -> anyhow::Result<(T, T)> {
    let Some((start, end)) = text.split_once("..") else {
        let v = parse(text)?;
        return Ok((v, v));
    };
    let low = if start.is_empty() { min } else { parse(start)? };
    let high = match end.strip_prefix('=') {
        Some(end) => parse(end)?,
        None if end.is_empty() => max,
        None => {
            let end_value = parse(end)?;
            before(end_value).with_context(|| format!("the range \"{text}\" is empty"))?
        }
    };
    Ok((low, high))
}

/// A glob on register names or mark texts, in globset's dialect: `*` any
/// run of characters, `?` any one, `[...]` one of a class (`[RC]`, `[0-3]`,
/// `[!0]`), `{a,b}` either, and `\` takes the next character literally
/// (`PGRAPH.GPC\[1\]*`). The whole text must match. The dialect is the one
/// the register databases' path globs use, with the same options: `*`
/// crosses `/` as well.
pub fn parse_glob(text: &str) -> anyhow::Result<Glob> {
    GlobBuilder::new(text)
        .literal_separator(false)
        .backslash_escape(true)
        .build()
        // One message, not a chain: clap shows only the top of a chain.
        .map_err(|err| anyhow::anyhow!("{text:?} is not a valid glob: {}", err.kind()))
}

/// The globs as one set, which matches a text that any of them matches.
pub fn glob_set(globs: &[Glob]) -> anyhow::Result<GlobSet> {
    let mut set = GlobSetBuilder::new();
    for glob in globs {
        set.add(glob.clone());
    }
    set.build().context("cannot compile the globs")
}

/// `SECS.MICROS`, as the text format writes times.
pub fn fmt_time(t: Timestamp) -> String {
    format!("{}.{:06}", t.secs(), t.subsec_micros())
}

/// How a register is shown: its physical address, after its name when a
/// register database gives one (`STATUS@0xfebf0008`).
pub fn register_label(phys: u64, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("{name}@{phys:#x}"),
        None => format!("{phys:#x}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn globs() {
        let set = |globs: &[&str]| {
            let globs: Vec<Glob> = globs.iter().map(|g| parse_glob(g).unwrap()).collect();
            glob_set(&globs).unwrap()
        };
        assert!(set(&["init*"]).is_match("init done"));
        assert!(set(&["i?it*d?ne"]).is_match("init done"));
        assert!(set(&["*"]).is_match(""));
        assert!(!set(&["init"]).is_match("init done"));
        assert!(set(&["x", "*done"]).is_match("init done"));
        // Classes, and brackets taken literally with a backslash.
        let classes = set(&["EE[RC]D"]);
        assert!(classes.is_match("EERD") && classes.is_match("EECD"));
        assert!(!classes.is_match("EEXD"));
        let literal = set(&["GPC\\[1\\]*"]);
        assert!(literal.is_match("GPC[1].INTR"));
        assert!(!literal.is_match("GPC1.INTR"));
        assert!(set(&["*.RAH"]).is_match("RA/1.RAH"));
        assert!(set(&[]).is_empty());
        let err = parse_glob("EE[RC").unwrap_err();
        assert!(format!("{err:#}").starts_with("\"EE[RC\" is not a valid glob: "));
    }

    #[test]
    fn times_and_ranges() {
        assert_eq!(parse_time("12.000345").unwrap().nanos, 12_000_345_000);
        assert_eq!(parse_time("3").unwrap().nanos, 3_000_000_000);
        assert_eq!(parse_time("0.5").unwrap().nanos, 500_000_000);
        assert!(parse_time("1.2.3").is_err());
        assert!(parse_time("-1").is_err());
        let before = |v: u64| v.checked_sub(1);
        assert_eq!(
            parse_range("5..10", parse_u64, 0, u64::MAX, before).unwrap(),
            (5, 9)
        );
        assert_eq!(
            parse_range("5..=10", parse_u64, 0, u64::MAX, before).unwrap(),
            (5, 10)
        );
        assert_eq!(
            parse_range("..0x10", parse_u64, 0, u64::MAX, before).unwrap(),
            (0, 15)
        );
        assert_eq!(
            parse_range("7..", parse_u64, 0, u64::MAX, before).unwrap(),
            (7, u64::MAX)
        );
        assert_eq!(
            parse_range("7", parse_u64, 0, u64::MAX, before).unwrap(),
            (7, 7)
        );
        assert!(parse_range("..0", parse_u64, 0, u64::MAX, before).is_err());
    }
}
