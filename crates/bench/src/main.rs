//! `mmiotrace-bench`: measures, side by side in one run, what one access to
//! a memory-mapped register costs untraced, at the exception floor, and
//! under `mmiotrace record`, and prints each as a ratio to the floor.

#[cfg(not(target_arch = "x86_64"))]
compile_error!("mmiotrace-bench measures x86-64 faults and runs only on x86-64");

mod access;
mod floor;
mod measurements;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::measurements::{FLOOR, MEASUREMENTS, Settings};

/// Measure the per-access cost of traced MMIO against the exception floor.
///
/// Every row times the same loop: a 4-byte load (`mov eax, [rdi]`) and a
/// 4-byte store (`mov [rdi], esi`) to one page of a MAP_SHARED file mapping.
/// Rows:
///   plain   the loop untraced (no fault);
///   floor   the page PROT_NONE and a SIGSEGV handler that only skips the
///           faulting mov: the cheapest any fault-based tracer can be;
///   traced  the loop in a copy of this program run under
///           `mmiotrace record --trace PAGE` (the recorder must sit next to
///           this executable, as in target/release). The worker times its
///           own loop, so recorder start-up is not counted, and every access
///           is checked to be in the trace.
///
/// The table shows the median over the repetitions, min and max, and the
/// median as a multiple of the floor's. The exit status is 1 if any row
/// failed.
#[derive(Debug, Parser)]
#[command(name = "mmiotrace-bench", version, verbatim_doc_comment)]
struct Cli {
    /// Repetitions per row.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u16).range(1..))]
    reps: u16,

    /// Accesses (loads + stores) per repetition in rows that fault.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    fault_accesses: u32,

    /// Accesses per repetition in rows that do not fault.
    #[arg(long, default_value_t = 20_000_000, value_name = "N")]
    plain_accesses: u32,

    /// Run only this row (repeatable): plain, floor, traced.
    #[arg(long, value_name = "ROW", value_parser = clap::builder::PossibleValuesParser::new(MEASUREMENTS.iter().map(|m| m.name)))]
    only: Vec<String>,

    /// Internal: be the traced worker of the `traced` row, on this page file.
    #[arg(long, value_name = "PAGE", hide = true)]
    worker: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = Settings {
        reps: usize::from(cli.reps),
        fault_accesses: cli.fault_accesses,
        plain_accesses: cli.plain_accesses,
    };
    if let Some(page) = cli.worker {
        return match measurements::run_worker(&page, &settings) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("mmiotrace-bench worker: error: {err:#}");
                ExitCode::FAILURE
            }
        };
    }

    println!(
        "per-access cost of a 4-byte load + 4-byte store loop; median of {} reps ({} accesses each when faulting, {} when not)",
        settings.reps, settings.fault_accesses, settings.plain_accesses
    );
    let selected = MEASUREMENTS
        .iter()
        .filter(|m| cli.only.is_empty() || cli.only.iter().any(|name| name == m.name));
    let mut rows = Vec::new();
    for measurement in selected {
        let result = (measurement.run)(&settings).map(|mut samples| {
            samples.sort_by(f64::total_cmp);
            samples
        });
        rows.push((measurement, result));
    }
    let floor = rows.iter().find_map(|(m, result)| match result {
        Ok(samples) if m.name == FLOOR => Some(median(samples)),
        _ => None,
    });

    println!(
        "{:<8} {:>11} {:>11} {:>11} {:>8}  what",
        "row", "ns/access", "min", "max", "x floor"
    );
    let mut failed = false;
    for (measurement, result) in &rows {
        match result {
            Ok(samples) => {
                let median = median(samples);
                let ratio = floor.map_or("-".to_owned(), |floor| ratio_text(median / floor));
                println!(
                    "{:<8} {median:>11.2} {:>11.2} {:>11.2} {ratio:>8}  {}",
                    measurement.name,
                    samples[0],
                    samples[samples.len() - 1],
                    measurement.what
                );
            }
            Err(err) => {
                failed = true;
                println!("{:<8} error: {err:#}", measurement.name);
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Median of sorted, non-empty samples.
fn median(sorted: &[f64]) -> f64 {
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// Three decimals where that shows something, else three significant digits.
fn ratio_text(ratio: f64) -> String {
    if ratio >= 0.1 {
        format!("{ratio:.3}")
    } else {
        format!("{ratio:.2e}")
    }
}
