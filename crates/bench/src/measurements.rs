//! The rows of the table. Each measurement is a name, a one-line
//! description and a function that returns one ns-per-access sample per
//! repetition; adding a row (single-step mode, displaced execution, N-thread
//! capture rate, whole-program overhead, start-up cost) means adding an entry
//! to [`MEASUREMENTS`].

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail, ensure};

use crate::access::{PageFile, SharedPage};
use crate::floor::SkipFaults;

#[derive(Debug, Clone)]
pub struct Settings {
    /// Repetitions per row; the table shows their median.
    pub reps: usize,
    /// Accesses (loads plus stores) per repetition in rows that fault.
    pub fault_accesses: u32,
    /// Accesses per repetition in rows that do not fault.
    pub plain_accesses: u32,
}

#[derive(Debug)]
pub struct Measurement {
    pub name: &'static str,
    pub what: &'static str,
    pub run: fn(&Settings) -> anyhow::Result<Vec<f64>>,
}

/// The row every other row is compared with.
pub const FLOOR: &str = "floor";

pub const MEASUREMENTS: &[Measurement] = &[
    Measurement {
        name: "plain",
        what: "untraced: shared file mapping, no fault",
        run: plain,
    },
    Measurement {
        name: FLOOR,
        what: "PROT_NONE + empty SIGSEGV handler that skips the mov",
        run: floor,
    },
    Measurement {
        name: "traced",
        what: "under `mmiotrace record` (alias emulation)",
        run: traced,
    },
];

/// Iterations before timing starts: faults in the page, warms caches, and
/// under the tracer warms the decoder and the ring.
const WARMUP_ITERATIONS: u32 = 1000;

/// Times `reps` runs of `accesses` accesses (two per iteration of
/// `access_loop`) after a warm-up, in ns per access.
pub fn time_reps(reps: usize, accesses: u32, mut access_loop: impl FnMut(u32)) -> Vec<f64> {
    let iterations = (accesses / 2).max(1);
    access_loop(WARMUP_ITERATIONS);
    (0..reps)
        .map(|_| {
            let start = Instant::now(); // CLOCK_MONOTONIC
            access_loop(iterations);
            start.elapsed().as_nanos() as f64 / f64::from(2 * iterations)
        })
        .collect()
}

fn plain(settings: &Settings) -> anyhow::Result<Vec<f64>> {
    let file = PageFile::create("plain")?;
    let page = SharedPage::map(&file.file)?;
    Ok(time_reps(settings.reps, settings.plain_accesses, |n| {
        page.access_loop(n)
    }))
}

fn floor(settings: &Settings) -> anyhow::Result<Vec<f64>> {
    let file = PageFile::create("floor")?;
    let page = SharedPage::map(&file.file)?;
    let _armed = SkipFaults::arm(&page)?;
    Ok(time_reps(settings.reps, settings.fault_accesses, |n| {
        page.access_loop(n)
    }))
}

/// What a worker prints for each repetition.
pub const WORKER_SAMPLE_PREFIX: &str = "ns_per_access ";

/// `mmiotrace-bench --worker PATH`: the traced side of the `traced` row. It
/// runs under `mmiotrace record`, maps PATH (which the recorder traces) and
/// prints one sample per repetition, so that recorder start-up and the
/// program's own start-up are not counted.
pub fn run_worker(path: &Path, settings: &Settings) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("{}: cannot open", path.display()))?;
    let page = SharedPage::map(&file)?;
    let samples = time_reps(settings.reps, settings.fault_accesses, |n| {
        page.access_loop(n)
    });
    drop(page);
    let mut last_stored = [0; 4];
    file.read_exact_at(&mut last_stored, 0)?;
    let expected = (settings.fault_accesses / 2).max(1) - 1;
    ensure!(
        u32::from_le_bytes(last_stored) == expected,
        "{}: the last store ({expected}) did not reach the file (it holds {})",
        path.display(),
        u32::from_le_bytes(last_stored)
    );
    let mut stdout = std::io::stdout().lock();
    for sample in samples {
        writeln!(stdout, "{WORKER_SAMPLE_PREFIX}{sample}")?;
    }
    Ok(())
}

fn traced(settings: &Settings) -> anyhow::Result<Vec<f64>> {
    let recorder = recorder_path()?;
    let page = PageFile::create("traced")?;
    let trace = TempPath(page.path.with_extension("trace"));
    let bench = std::env::current_exe().context("cannot find the bench's own executable")?;
    let output = Command::new(&recorder)
        .arg("record")
        .args(["--format", "text", "-o"])
        .arg(&trace.0)
        .arg("--trace")
        .arg(&page.path)
        .arg("--")
        .arg(&bench)
        .arg("--worker")
        .arg(&page.path)
        .args(["--reps", &settings.reps.to_string()])
        .args(["--fault-accesses", &settings.fault_accesses.to_string()])
        .output()
        .with_context(|| format!("cannot run {}", recorder.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!(
            "`mmiotrace record` failed ({}): {}",
            output.status,
            stderr.trim().lines().last().unwrap_or("no message")
        );
    }
    let samples: Vec<f64> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix(WORKER_SAMPLE_PREFIX))
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("the worker printed a malformed sample")?;
    ensure!(
        samples.len() == settings.reps,
        "the worker printed {} samples, expected {}",
        samples.len(),
        settings.reps
    );

    // A loop that was not traced would look impossibly fast; make sure every
    // access is in the trace.
    let iterations = u64::from((settings.fault_accesses / 2).max(1));
    let expected = 2 * (u64::from(WARMUP_ITERATIONS) + iterations * settings.reps as u64);
    let traced = count_four_byte_accesses(&trace.0)?;
    ensure!(
        traced == expected,
        "{}: the trace holds {traced} 4-byte accesses, expected {expected}",
        trace.0.display()
    );
    Ok(samples)
}

/// `mmiotrace`, next to this executable (both live in target/release).
fn recorder_path() -> anyhow::Result<PathBuf> {
    let bench = std::env::current_exe().context("cannot find the bench's own executable")?;
    let recorder = bench.with_file_name("mmiotrace");
    ensure!(
        recorder.is_file(),
        "{} not found: build the whole workspace (bench/run does) so that the recorder sits next to the bench",
        recorder.display()
    );
    Ok(recorder)
}

/// Counts `R 4 ...` and `W 4 ...` lines of a text trace.
fn count_four_byte_accesses(trace: &Path) -> anyhow::Result<u64> {
    use std::io::BufRead;
    let file = std::fs::File::open(trace)
        .with_context(|| format!("{}: cannot open the trace", trace.display()))?;
    let mut count = 0;
    for line in std::io::BufReader::new(file).lines() {
        let line = line.with_context(|| format!("{}: cannot read the trace", trace.display()))?;
        if line.starts_with("R 4 ") || line.starts_with("W 4 ") {
            count += 1;
        }
    }
    Ok(count)
}

/// A file removed on drop.
struct TempPath(PathBuf);

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
