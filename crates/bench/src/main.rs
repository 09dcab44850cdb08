//! `mmiotrace-bench`: mmiotrace against the kernel's design, side by side in
//! one run, printed as one table (docs/BENCHMARKS.md holds the latest).

#[cfg(not(target_arch = "x86_64"))]
compile_error!("mmiotrace-bench measures x86-64 faults and runs only on x86-64");

mod access;
mod flood;
mod floor;
mod measurements;
mod mmt;
mod push_floor;
mod record;
mod syscall;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::measurements::{FLOOR, MEASUREMENTS, Outcome, SYSCALL, Settings};
use crate::worker::{Job, Work};

/// Where --valgrind-mmt comes from when it is not given.
const VALGRIND_MMT_ENV: &str = "MMIOTRACE_BENCH_VALGRIND_MMT";

/// Measure mmiotrace against the kernel's design and print one table.
///
/// Rows (select with --only NAME, or a group: `capture` selects the rows
/// named capture-*, `mmt` those named *-mmt):
///   plain, floor, floor-step, emulated, displaced, single-step,
///   emulated-cmp, emulated-vector, displaced-locked, displaced-sse
///       ns per access of a 4-byte load + 4-byte store loop on one page of
///       a MAP_SHARED file (displaced: per `add dword [rdi], esi`):
///       untraced; the exception floor (PROT_NONE and a SIGSEGV handler
///       that only skips the mov); the two-exception floor of anything
///       that single-steps the access (SIGSEGV + TF + SIGTRAP, nothing
///       else); under `mmiotrace record` (the worker times its own loop,
///       and every access must be in the trace); and under `mmiotrace
///       record --mode single-step`, the kernel's design. Each also as a
///       multiple of the floor. The emulated-*/displaced-* rows time one
///       instruction each of the other paths: `cmp [rdi], esi`, `movdqu`
///       load and store, `lock add [rdi], esi`, `addps xmm0, [rdi]`.
///   syscall
///       ns per `syscall(SYS_getpid)` (glibc cannot cache it), median of
///       --reps x --fault-accesses calls: one kernel entry and exit. When
///       it runs, every per-access row (and each buffer row's per-access
///       time) is also shown as a multiple of it: issue 16's target for a
///       patched access is <= 0.2x getpid.
///   tsc-read
///       ns per `rdtsc`, back to back: the time every patched access's
///       record carries costs this much of its fast path.
///   patched, patched-spool, patched-general
///       the mov loop with 6-byte encodings (`mov eax, [rdi+0x100]`,
///       `mov [rdi+0x100], esi`) under `record --patch`: each site is
///       patched after 4 faults, and then jumps to a trampoline that logs
///       the access with no exception, in machine code (the fast path);
///       the same under `record --patch --spool` (the recorder sets the
///       records aside while the program outpaces it, and writes them
///       after); and the same with MMIOTRACE_PATCH=general in the program's
///       environment instead of --patch (which would set it to `on`):
///       trampolines without the fast path, each access a call into the
///       runtime. With `emulated` (the fault path) and `syscall` in the
///       same run: fast path vs general path vs exception vs getpid. The
///       trace must hold every access and the recorder report the sites
///       patched.
///   push-floor, push-floor-no-lock, push-floor-no-lock-no-tsc, push-floor-compact
///       what logging one record costs a producer thread, nothing else:
///       64 bytes into a ring of 16,384 records (1 MiB), `write_pos`
///       published per record, a consumer thread reading each record on
///       the other core (pausing 50 µs after each pass, as the recorder);
///       `seq` from a `lock xadd` on a shared counter and the time from
///       `rdtsc`, as the fast path does; then with a plain increment
///       instead of the `lock`; then without `rdtsc` too; then the fast
///       path's record today, a 32-byte compact record (no `seq`, `rdtsc`
///       under the ring's stamping flag) into a ring of 32,768. Ns per record,
///       and as multiples of the floor and of getpid: how far the fast
///       path's record alone is from issue 16's 0.2x getpid.
///   hook-miss, hook-rewrite
///       the emulated mov loop under `record --hook`: a rule on the same
///       mapping that matches none of the loop's accesses; a rule that
///       flips bits of every read. Each as a ratio to the plain emulated
///       loop run alongside it (plain, hooked, plain, hooked).
///   capture-alias-N, capture-single-step-N  (N = 1, 2, 4, 8)
///       N threads hammering one shared traced page: events logged /
///       accesses made. mmiotrace must log 100%; the row fails otherwise.
///   compute, compute-valgrind
///       a compute-heavy program with sparse MMIO (CRC-32 of generated
///       data, a doorbell write every 64 KiB): traced / untraced wall time
///       of the whole process; and under `valgrind --tool=none` if
///       installed.
///   buffer-store32, buffer-load64, buffer-memcpy, buffer-copy256  (group:
///   buffer, with all the buffer-* rows below)
///       GPU-buffer loops on a traced mapping of a whole file: 1M
///       (--buffer-accesses) sequential 4-byte stores; 1M 8-byte loads;
///       glibc's memcpy of 64 MiB (--buffer-mib) into it; 62,500
///       (--buffer-accesses / 16) glibc memcpys of 256 bytes, block after
///       block (commands copied into a command buffer). The loop's own
///       wall time under `mmiotrace record --no-patch` (one pass) / untraced (median
///       of --reps passes), with ns per access; the trace must hold every
///       access with its offset and value (every byte, for memcpy) and
///       the file what was stored. About 30 s in all, 20 s of it the
///       memcpy, at the defaults.
///   buffer-store32-patched, buffer-load64-patched, buffer-memcpy-patched,
///   buffer-copy256-patched
///       the same compiled loops under `mmiotrace record --patch` (the
///       default; the rows above use --no-patch): their unrolled 4- and
///       5-byte stores, `add reg, [mem]` loads and glibc's 256-byte
///       copies' vector stores are patched after their first faults (the
///       short ones by punning), so traced too they run the median of
///       --reps passes. The 64 MiB memcpy (`rep movsb`, a string
///       instruction) is not patched: one pass on the fault path, which
///       logs each `rep`'s bytes in runs, as buffer-memcpy. The rows
///       show the recorder's patched-sites totals.
///   shared-site
///       glibc's memcpy of 256 bytes into 16 KiB of plain memory, over and
///       over, after the same memcpy copied into a traced mapping, so its
///       store sites are patched: every store through them checks that
///       its address is untraced and runs the original instruction. The
///       worker's passes under `mmiotrace record` / bare: what sharing
///       code with a traced mapping costs.
///   buffer-store32-valgrind, buffer-load64-valgrind, buffer-memcpy-valgrind,
///   buffer-copy256-valgrind
///       the same loops under `valgrind --tool=none` / bare, median of
///       --reps passes each: the cost a JIT such as valgrind-mmt's puts on
///       all code, MMIO or not. Skipped if valgrind is not installed.
///   buffer-store32-mmt, buffer-load64-mmt, buffer-memcpy-mmt,
///   buffer-copy256-mmt  (group: mmt)
///       the same loops under valgrind-mmt (envytools' valgrind, the
///       tracer of nouveau's reverse engineering) tracing the buffer's
///       file (`--tool=mmt --mmt-trace-file=FILE`), median of --reps
///       passes / bare, with ns per access to set against the patched
///       rows; its log (the binary trace) must hold every access with its
///       offset and value (the memcpy row's log takes about 600 MiB in
///       the temporary directory at the defaults, removed after). Skipped
///       without --valgrind-mmt (or MMIOTRACE_BENCH_VALGRIND_MMT).
///   startup
///       a program that maps one register and exits: the whole
///       `mmiotrace record` run / the bare program.
///   recorder-text, recorder-binary
///       events per second drained into a trace, and how often the program
///       waited on a full ring.
///   recorder-drain-text, recorder-drain-binary
///       the drain alone: a synthetic producer pushes write records
///       straight into a ring (no fault), far faster than the fault path;
///       events per second over the whole run, the producer's own rate,
///       and how often it waited on a full ring.
///   recorder-drain-tsc-text, recorder-drain-tsc-binary
///       the same, each record stamped with the raw TSC as a patched
///       site's fast path will (no clock_gettime per event); the recorder
///       converts the times. Skipped where the TSC is not usable.
///   recorder-drain-tsc-paced
///       the binary one with the producer paced at one event per 33 ns
///       (30.3 M events/s, a patched program's rate): its own rate, and
///       whether it ever waited on a full ring.
///   parse-text, parse-binary
///       the trace crate's format_bench (target/release/examples).
///
/// The recorder must sit next to this executable, as in target/release
/// (bench/run builds both). The exit status is 1 if any row failed.
#[derive(Debug, Parser)]
#[command(name = "mmiotrace-bench", version, verbatim_doc_comment)]
struct Cli {
    /// Repetitions of each per-access loop (and passes of the untraced,
    /// patched, valgrind and valgrind-mmt buffer loops).
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u16).range(1..))]
    reps: u16,

    /// Accesses (loads + stores) per repetition in rows that fault.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    fault_accesses: u32,

    /// Accesses per repetition in rows that do not fault.
    #[arg(long, default_value_t = 20_000_000, value_name = "N")]
    plain_accesses: u32,

    /// Accesses per thread in the capture rows.
    #[arg(long, default_value_t = 20_000, value_name = "N")]
    capture_accesses: u32,

    /// MiB the compute-heavy program checksums.
    #[arg(long, default_value_t = 256, value_name = "MIB")]
    compute_mib: u32,

    /// Runs of each side of the compute, valgrind and recorder rows (the
    /// table shows the best).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
    program_runs: u16,

    /// Runs of each side of the start-up row (the table shows the best).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..))]
    startup_runs: u16,

    /// Events the recorder rows drain.
    #[arg(long, default_value_t = 2_000_000, value_name = "N")]
    burst_events: u64,

    /// Accesses per pass of the buffer-store32 and buffer-load64 loops
    /// (and their valgrind rows).
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    buffer_accesses: u32,

    /// MiB the buffer-memcpy loops copy. glibc copies this size with
    /// `rep movsb` here, which the runtime logs byte by byte: 64 MiB take
    /// about 20 s traced, bound by the recorder.
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    buffer_mib: u32,

    /// Events the recorder-drain rows' synthetic producer pushes.
    #[arg(long, default_value_t = 10_000_000, value_name = "N")]
    drain_events: u64,

    /// Size of the trace format_bench generates (e.g. 100M, 1G).
    #[arg(long, default_value = "100M", value_name = "SIZE")]
    parse_size: String,

    /// Run only this row, or if no row has this name, the rows whose names
    /// start with NAME- or end with -NAME (repeatable).
    #[arg(long, value_name = "NAME")]
    only: Vec<String>,

    /// valgrind-mmt's `valgrind` (envytools' fork, built with its `mmt`
    /// tool), for the buffer-*-mmt rows [default: $MMIOTRACE_BENCH_VALGRIND_MMT;
    /// without either, the rows are skipped].
    #[arg(long, value_name = "PATH")]
    valgrind_mmt: Option<PathBuf>,

    /// Internal: be the worker program of a row, on this page file.
    #[arg(long, value_name = "PAGE", hide = true)]
    worker: Option<PathBuf>,

    /// Internal: what the worker does.
    #[arg(long, value_enum, default_value_t = Work::Mov, hide = true)]
    work: Work,

    /// Internal: worker threads.
    #[arg(long, default_value_t = 1, hide = true)]
    threads: u32,

    /// Internal: accesses per worker thread.
    #[arg(long, default_value_t = 20_000, hide = true)]
    accesses: u32,

    /// Internal: MiB the compute worker checksums.
    #[arg(long, default_value_t = 256, hide = true)]
    mib: u32,

    /// Internal: events the burst worker makes.
    #[arg(long, default_value_t = 1_000_000, hide = true)]
    events: u64,

    /// Internal: the flood workers push one event every N ns (0: as fast
    /// as they can).
    #[arg(long, default_value_t = 0, hide = true)]
    pace_ns: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(page) = &cli.worker {
        let job = Job {
            work: cli.work,
            reps: usize::from(cli.reps),
            fault_accesses: cli.fault_accesses,
            threads: cli.threads,
            accesses: cli.accesses,
            mib: cli.mib,
            events: cli.events,
            pace_ns: cli.pace_ns,
        };
        return match worker::run(page, &job) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("mmiotrace-bench worker: error: {err:#}");
                ExitCode::FAILURE
            }
        };
    }
    let settings = Settings {
        reps: usize::from(cli.reps),
        fault_accesses: cli.fault_accesses,
        plain_accesses: cli.plain_accesses,
        capture_accesses: cli.capture_accesses,
        compute_mib: cli.compute_mib,
        program_runs: usize::from(cli.program_runs),
        startup_runs: usize::from(cli.startup_runs),
        burst_events: cli.burst_events,
        drain_events: cli.drain_events,
        parse_size: cli.parse_size.clone(),
        buffer_accesses: cli.buffer_accesses,
        buffer_mib: cli.buffer_mib,
        valgrind_mmt: cli.valgrind_mmt.clone().or_else(|| {
            std::env::var_os(VALGRIND_MMT_ENV)
                .filter(|path| !path.is_empty())
                .map(PathBuf::from)
        }),
    };
    // A row's own name selects that row; anything else selects the rows
    // whose names start with it and a dash (`capture`, `capture-alias`),
    // or end with a dash and it (`mmt`, `valgrind`).
    let picks = |only: &str, name: &str| {
        name == only
            || (!MEASUREMENTS.iter().any(|m| m.name == only)
                && (name.starts_with(&format!("{only}-")) || name.ends_with(&format!("-{only}"))))
    };
    if let Some(unknown) = cli
        .only
        .iter()
        .find(|only| !MEASUREMENTS.iter().any(|m| picks(only, m.name)))
    {
        let names: Vec<&str> = MEASUREMENTS.iter().map(|m| m.name).collect();
        eprintln!(
            "mmiotrace-bench: error: no row named {unknown:?}; rows: {}",
            names.join(", ")
        );
        return ExitCode::from(2);
    }
    let selected =
        |name: &str| cli.only.is_empty() || cli.only.iter().any(|only| picks(only, name));

    println!("{}", machine_line());
    println!(
        "command: bench/run{}",
        std::env::args()
            .skip(1)
            .map(|arg| format!(" {arg}"))
            .collect::<String>()
    );
    println!();
    let mut rows = Vec::new();
    for measurement in MEASUREMENTS.iter().filter(|m| selected(m.name)) {
        eprintln!("mmiotrace-bench: measuring {}", measurement.name);
        rows.push((measurement, (measurement.run)(&settings)));
    }
    let per_access_median = |name: &str| {
        rows.iter().find_map(|(m, outcome)| match outcome {
            Ok(Outcome::PerAccess { samples, .. }) if m.name == name => Some(median(samples)),
            _ => None,
        })
    };
    let floor = per_access_median(FLOOR);
    let getpid = per_access_median(SYSCALL);
    let getpid_text =
        |ns: f64| getpid.map(|getpid| format!("{} x getpid", ratio_text(ns / getpid)));

    let mut table = vec![[
        "row".to_owned(),
        "result".to_owned(),
        "ratio".to_owned(),
        "what; detail".to_owned(),
    ]];
    let mut failed = false;
    for (measurement, outcome) in &rows {
        let (result, ratio, detail) = match outcome {
            Ok(Outcome::PerAccess { samples, detail }) => {
                let median = median(samples);
                let (min, max) = samples
                    .iter()
                    .fold((f64::MAX, f64::MIN), |(lo, hi), &s| (lo.min(s), hi.max(s)));
                let ratios: Vec<String> = floor
                    .map(|floor| format!("{} x floor", ratio_text(median / floor)))
                    .into_iter()
                    .chain(getpid_text(median))
                    .collect();
                (
                    format!("{} ns", ns_text(median)),
                    ratios.join(", "),
                    format!(
                        "median; min {}, max {}; {detail}",
                        ns_text(min),
                        ns_text(max)
                    ),
                )
            }
            Ok(Outcome::Versus {
                ns,
                baseline_ns,
                baseline,
                accesses,
                detail,
            }) => {
                let per_access = if *accesses == 0 {
                    String::new()
                } else {
                    let (ns, baseline_ns) = (ns / *accesses as f64, baseline_ns / *accesses as f64);
                    let multiple =
                        getpid_text(ns).map_or(String::new(), |text| format!(" = {text}"));
                    format!(
                        "per access {} ns{multiple} vs {} ns; ",
                        ns_text(ns),
                        ns_text(baseline_ns)
                    )
                };
                (
                    format!("{} vs {}", duration_text(*ns), duration_text(*baseline_ns)),
                    format!("{} x {baseline}", ratio_text(ns / baseline_ns)),
                    format!("{per_access}{detail}"),
                )
            }
            Ok(Outcome::Row {
                result,
                ratio,
                detail,
            }) => (result.clone(), ratio.clone(), detail.clone()),
            Err(err) => {
                failed = true;
                ("FAILED".to_owned(), String::new(), format!("{err:#}"))
            }
        };
        table.push([
            measurement.name.to_owned(),
            result,
            ratio,
            format!("{}; {detail}", measurement.what),
        ]);
    }
    print_table(&table);
    println!();
    println!("{}", load_line("load average at the end"));
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// A Markdown table with padded columns: readable in a terminal, and
/// pasted as it is into docs/BENCHMARKS.md.
fn print_table(rows: &[[String; 4]]) {
    let mut widths = [0usize; 4];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    // The last column is left ragged: padding it only adds trailing spaces.
    widths[3] = 0;
    let line = |cells: [&str; 4]| {
        let mut text = String::from("|");
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            let padded = if i == 1 || i == 2 {
                format!(" {cell:>width$} |")
            } else {
                format!(" {cell:<width$} |")
            };
            text.push_str(&padded);
        }
        text
    };
    for (i, row) in rows.iter().enumerate() {
        println!("{}", line([&row[0], &row[1], &row[2], &row[3]]));
        if i == 0 {
            let rule = |width: usize, right: bool| {
                let dashes = "-".repeat(width.max(3) - usize::from(right));
                if right { format!("{dashes}:") } else { dashes }
            };
            println!(
                "| {} | {} | {} | {} |",
                rule(widths[0], false),
                rule(widths[1], true),
                rule(widths[2], true),
                rule(3, false)
            );
        }
    }
}

/// Median of non-empty samples.
fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

fn ns_text(ns: f64) -> String {
    if ns >= 100.0 {
        format!("{ns:.0}")
    } else {
        format!("{ns:.2}")
    }
}

/// A loop's wall time, in the unit that keeps three digits or so.
fn duration_text(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.1} ms", ns / 1e6)
    } else {
        format!("{:.1} us", ns / 1e3)
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

/// The machine, the date and the commit, for the docs.
fn machine_line() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or("unknown CPU", |(_, model)| model.trim());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let date = command_text("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let source = env!("CARGO_MANIFEST_DIR");
    let commit = command_text("git", &["-C", source, "rev-parse", "--short", "HEAD"]);
    let dirty = !command_text(
        "git",
        &[
            "-C",
            source,
            "status",
            "--porcelain",
            "--untracked-files=no",
        ],
    )
    .is_empty();
    format!(
        "mmiotrace-bench, {date}: {model}, {cpus} CPUs, Linux {}, commit {}{}; {}",
        kernel.trim(),
        if commit.is_empty() {
            "unknown"
        } else {
            &commit
        },
        if dirty {
            " (with uncommitted changes)"
        } else {
            ""
        },
        load_line("load average at the start")
    )
}

fn load_line(label: &str) -> String {
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let averages: Vec<&str> = loadavg.split_whitespace().take(3).collect();
    format!("{label}: {}", averages.join(" "))
}

fn command_text(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default()
}
