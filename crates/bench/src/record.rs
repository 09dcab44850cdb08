//! Running a worker under `mmiotrace record` (or bare), and reading back
//! what the recorder wrote.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use mmiotrace_trace::{Direction, Event, ReadOptions, TraceReader};

use crate::worker::{MADE_PREFIX, SAMPLE_PREFIX};

/// How `mmiotrace record` catches accesses (its `--mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Alias,
    SingleStep,
}

impl Mode {
    fn arg(self) -> &'static str {
        match self {
            Mode::Alias => "alias",
            Mode::SingleStep => "single-step",
        }
    }
}

/// `mmiotrace`, next to this executable (both live in target/release).
pub fn recorder_path() -> anyhow::Result<PathBuf> {
    let recorder = own_executable()?.with_file_name("mmiotrace");
    ensure!(
        recorder.is_file(),
        "{} not found: build the whole workspace (bench/run does) so that the recorder sits next to the bench",
        recorder.display()
    );
    Ok(recorder)
}

pub fn own_executable() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("cannot find the bench's own executable")
}

/// `mmiotrace-bench --worker PAGE ARGS…`, untraced.
pub fn worker(page: &Path, args: &[String]) -> anyhow::Result<Command> {
    let mut command = Command::new(own_executable()?);
    command.arg("--worker").arg(page).args(args);
    Ok(command)
}

/// Runs `command` to the end, timing it; fails on a non-zero exit.
pub fn run_timed(command: &mut Command) -> anyhow::Result<(Output, Duration)> {
    let start = Instant::now();
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    let wall = start.elapsed();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!(
            "{:?} failed ({}): {}",
            command.get_program(),
            output.status,
            stderr.trim().lines().last().unwrap_or("no message")
        );
    }
    Ok((output, wall))
}

/// One `mmiotrace record` run of a worker.
#[derive(Debug)]
pub struct Recording {
    pub stdout: String,
    pub stderr: String,
    /// Wall time of the whole `mmiotrace record` process.
    pub wall: Duration,
    pub trace: TempPath,
}

impl Recording {
    /// Times the program waited on a full ring, from the recorder's summary
    /// ("program waited: N times").
    pub fn ring_full_waits(&self) -> anyhow::Result<u64> {
        let (_, rest) = self
            .stderr
            .split_once("program waited: ")
            .context("the recorder's summary has no \"program waited\"")?;
        rest.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .context("malformed \"program waited\" in the recorder's summary")
    }

    pub fn made(&self) -> anyhow::Result<u64> {
        made(&self.stdout)
    }

    /// The totals line of the recorder's patched-sites summary, as it
    /// printed it ("patch: 2 sites patched, 1 not patchable (…)"); `None`
    /// when no site reached the faults that make it a candidate.
    pub fn patch_summary(&self) -> Option<&str> {
        self.stderr
            .lines()
            .map(str::trim)
            .find(|line| line.starts_with("patch: "))
    }

    /// Sites the runtime patched, from [`Recording::patch_summary`].
    pub fn patched_sites(&self) -> anyhow::Result<u64> {
        let Some(summary) = self.patch_summary() else {
            return Ok(0);
        };
        summary
            .strip_prefix("patch: ")
            .and_then(|rest| rest.split_once(" sites patched"))
            .and_then(|(n, _)| n.parse().ok())
            .with_context(|| format!("malformed patch summary {summary:?}"))
    }
}

/// Runs `mmiotrace record --mode MODE --format text|binary --trace PAGE
/// --no-patch -- mmiotrace-bench --worker PAGE ARGS…`.
pub fn record(mode: Mode, binary: bool, page: &Path, args: &[String]) -> anyhow::Result<Recording> {
    // The fault path: these rows measure it (and what patching would do
    // to a loop's sites differs from row to row).
    record_with(mode, binary, page, &["--no-patch".into()], &[], args)
}

/// [`record`] with more options for `mmiotrace record` (`--hook FILE`,
/// `--patch`) and variables added to its environment, which it passes
/// on to the program (`MMIOTRACE_PATCH=general`).
pub fn record_with(
    mode: Mode,
    binary: bool,
    page: &Path,
    options: &[std::ffi::OsString],
    env: &[(&str, &str)],
    args: &[String],
) -> anyhow::Result<Recording> {
    let trace = TempPath(page.with_extension(if binary { "mtb" } else { "trace" }));
    let mut command = Command::new(recorder_path()?);
    command
        .arg("record")
        .args(["--mode", mode.arg()])
        .args(["--format", if binary { "binary" } else { "text" }])
        .arg("-o")
        .arg(&trace.0)
        .arg("--trace")
        .arg(page)
        .args(options)
        .arg("--")
        .arg(own_executable()?)
        .arg("--worker")
        .arg(page)
        .args(args)
        .envs(env.iter().copied());
    let (output, wall) = run_timed(&mut command).context("`mmiotrace record` failed")?;
    Ok(Recording {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        wall,
        trace,
    })
}

/// The per-repetition samples a worker printed.
pub fn samples(stdout: &str, reps: usize) -> anyhow::Result<Vec<f64>> {
    let samples: Vec<f64> = stdout
        .lines()
        .filter_map(|line| line.strip_prefix(SAMPLE_PREFIX))
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("the worker printed a malformed sample")?;
    ensure!(
        samples.len() == reps,
        "the worker printed {} samples, expected {reps}",
        samples.len()
    );
    Ok(samples)
}

/// The accesses (or events) a worker says it made.
pub fn made(stdout: &str) -> anyhow::Result<u64> {
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(MADE_PREFIX))
        .context("the worker did not say how many accesses it made")?
        .trim()
        .parse()
        .context("the worker printed a malformed count")
}

/// What a trace holds, by kind.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub reads: u64,
    pub writes: u64,
    pub unknown: u64,
    /// Reads and writes a hook marked (`hook=`).
    pub hooked: u64,
    /// Reads and writes by address (the traced file starts at address 0).
    pub by_address: BTreeMap<u64, u64>,
    pub marks: Vec<String>,
    /// The latest time of a read or write, in ns since the recording began.
    pub latest: u64,
}

impl Counts {
    pub fn accesses(&self) -> u64 {
        self.reads + self.writes + self.unknown
    }
}

/// Counts the events of a text or binary trace.
pub fn count(trace: &Path) -> anyhow::Result<Counts> {
    let file = std::fs::File::open(trace)
        .with_context(|| format!("{}: cannot open the trace", trace.display()))?;
    let options = ReadOptions::default().with_name(trace.display().to_string());
    let mut reader = TraceReader::new(std::io::BufReader::new(file), options)?;
    let mut counts = Counts::default();
    while let Some(event) = reader.read_ref()? {
        match event {
            Event::Access(access) => {
                if access.dir == Direction::Read {
                    counts.reads += 1;
                } else {
                    counts.writes += 1;
                }
                *counts.by_address.entry(access.phys).or_default() += 1;
                counts.hooked += u64::from(access.ext.hook.is_some());
                counts.latest = counts.latest.max(access.time.nanos);
            }
            Event::Unknown(_) => counts.unknown += 1,
            Event::Mark(mark) => counts.marks.push(mark.text.clone()),
            _ => {}
        }
    }
    if let Some(truncation) = reader.truncation() {
        bail!("{}: {truncation}", trace.display());
    }
    Ok(counts)
}

/// What a trace of a buffer loop holds: [`Counts`] without the per-address
/// map (a 64 MiB `memcpy` can log 64 M one-byte writes), how many
/// distinct bytes of the buffer's first `len` the accesses touched, and
/// how many accesses the loop's expectation refused. Filled from a
/// mmiotrace trace by [`coverage`], or from valgrind-mmt's log.
#[derive(Debug, Clone)]
pub struct Coverage {
    pub reads: u64,
    pub writes: u64,
    pub unknown: u64,
    pub read_bytes: u64,
    pub written_bytes: u64,
    /// Distinct bytes of `0..len` that some read or write touched.
    pub touched: u64,
    /// Accesses (or parts of them) outside `0..len`.
    pub outside: u64,
    /// Accesses at an offset or with a value the loop does not make.
    pub unexpected: u64,
    /// The buffer's length.
    len: u64,
    /// The bytes of `0..len` touched, one bit each.
    bitmap: Vec<u64>,
}

impl Coverage {
    pub fn new(len: u64) -> Self {
        Self {
            reads: 0,
            writes: 0,
            unknown: 0,
            read_bytes: 0,
            written_bytes: 0,
            touched: 0,
            outside: 0,
            unexpected: 0,
            len,
            bitmap: vec![0; len.div_ceil(64) as usize],
        }
    }

    /// Counts one access of `width` bytes at `offset` into the buffer;
    /// `expected` says whether the loop makes it.
    pub fn add(&mut self, dir: Direction, offset: u64, width: u64, expected: bool) {
        if dir == Direction::Read {
            self.reads += 1;
            self.read_bytes += width;
        } else {
            self.writes += 1;
            self.written_bytes += width;
        }
        self.unexpected += u64::from(!expected);
        for byte in offset..offset.saturating_add(width) {
            if byte >= self.len {
                self.outside += 1;
                break;
            }
            self.bitmap[(byte / 64) as usize] |= 1 << (byte % 64);
        }
    }

    /// Counts the touched bytes, once all accesses are in.
    pub fn finish(mut self) -> Self {
        self.touched = self
            .bitmap
            .iter()
            .map(|word| u64::from(word.count_ones()))
            .sum();
        self
    }
}

/// Reads a trace of a buffer loop (the traced file starts at address 0
/// and is `len` bytes long): counts, bytes, touched
/// bytes, and what `expected(dir, offset, value)` refused, asked of each
/// access in the trace's order.
pub fn coverage(
    trace: &Path,
    len: u64,
    mut expected: impl FnMut(Direction, u64, u64) -> bool,
) -> anyhow::Result<Coverage> {
    let file = std::fs::File::open(trace)
        .with_context(|| format!("{}: cannot open the trace", trace.display()))?;
    let options = ReadOptions::default().with_name(trace.display().to_string());
    let mut reader = TraceReader::new(std::io::BufReader::new(file), options)?;
    let mut coverage = Coverage::new(len);
    while let Some(event) = reader.read_ref()? {
        match event {
            Event::Access(access) => {
                let ok = expected(access.dir, access.phys, access.value.low_u64());
                coverage.add(access.dir, access.phys, u64::from(access.width()), ok);
            }
            Event::Unknown(_) => coverage.unknown += 1,
            _ => {}
        }
    }
    if let Some(truncation) = reader.truncation() {
        bail!("{}: {truncation}", trace.display());
    }
    Ok(coverage.finish())
}

/// A file removed on drop.
#[derive(Debug)]
pub struct TempPath(pub PathBuf);

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
