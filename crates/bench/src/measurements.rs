//! The rows of the table. Each measurement is a name, a one-line
//! description and a function that measures it; adding a row means adding
//! an entry to [`MEASUREMENTS`].

#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::fmt::Write as _;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::access::{PAGE_SIZE, PageFile, SharedPage};
use crate::floor::{SkipFaults, StepFaults};
use crate::record::{self, Coverage, Mode, Recording};
use mmiotrace_trace::Direction;

#[derive(Debug, Clone)]
pub struct Settings {
    /// Repetitions of the per-access loops; the table shows their median.
    pub reps: usize,
    /// Accesses (loads plus stores) per repetition in rows that fault.
    pub fault_accesses: u32,
    /// Accesses per repetition in rows that do not fault.
    pub plain_accesses: u32,
    /// Accesses per thread in the capture rows.
    pub capture_accesses: u32,
    /// MiB the compute-heavy program checksums.
    pub compute_mib: u32,
    /// Runs of each side of the whole-program rows (compute, valgrind, recorder).
    pub program_runs: usize,
    /// Runs of each side of the start-up row.
    pub startup_runs: usize,
    /// Events the recorder rows drain.
    pub burst_events: u64,
    /// Events the recorder-drain rows' synthetic producer pushes.
    pub drain_events: u64,
    /// `--size` for the format benchmark.
    pub parse_size: String,
    /// Accesses per pass of the buffer-store32 and buffer-load64 loops.
    pub buffer_accesses: u32,
    /// MiB the buffer-memcpy rows copy.
    pub buffer_mib: u32,
    /// valgrind-mmt's `valgrind`, for the `buffer-*-mmt` rows.
    pub valgrind_mmt: Option<PathBuf>,
}

#[derive(Debug)]
pub struct Measurement {
    pub name: &'static str,
    pub what: &'static str,
    pub run: fn(&Settings) -> anyhow::Result<Outcome>,
}

/// What a row measured.
#[derive(Debug)]
pub enum Outcome {
    /// Nanoseconds per access, one sample per repetition; the table adds
    /// the median's ratio to the floor's.
    PerAccess { samples: Vec<f64>, detail: String },
    /// One loop timed two ways in the same run, whole loop each, in ns:
    /// `ns` traced (or under valgrind) against `baseline_ns` untraced over
    /// `accesses` accesses; the table adds ns per access and, when the
    /// syscall row ran, the access as a multiple of a system call.
    Versus {
        ns: f64,
        baseline_ns: f64,
        /// What `ns` is a multiple of: "untraced", "bare".
        baseline: &'static str,
        accesses: u64,
        detail: String,
    },
    /// A row already formatted.
    Row {
        result: String,
        ratio: String,
        detail: String,
    },
}

/// The row every per-access row is compared with.
pub const FLOOR: &str = "floor";
/// The system call every per-access row is also expressed in.
pub const SYSCALL: &str = "syscall";

pub const MEASUREMENTS: &[Measurement] = &[
    Measurement {
        name: "plain",
        what: "untraced load + store, MAP_SHARED file page, no fault",
        run: plain,
    },
    Measurement {
        name: FLOOR,
        what: "exception floor: PROT_NONE + a SIGSEGV handler that only skips the mov",
        run: floor,
    },
    Measurement {
        name: "floor-step",
        what: "two-exception floor: the SIGSEGV handler moves rdi to a scratch page and sets TF, the SIGTRAP handler moves it back",
        run: floor_step,
    },
    Measurement {
        name: SYSCALL,
        what: "a system call: `syscall(SYS_getpid)` (glibc cannot cache it), ns per call; issue 16's yardstick for a patched access (<= 0.2x getpid)",
        run: syscall,
    },
    Measurement {
        name: "tsc-read",
        what: "`rdtsc`, back to back, ns per read: the clock a patched access's record is stamped with, the one part of the fast path that cannot go",
        run: tsc_read,
    },
    Measurement {
        name: "emulated",
        what: "mmiotrace: the mov emulated on the alias in the SIGSEGV handler",
        run: emulated,
    },
    Measurement {
        name: "patched",
        what: "mmiotrace record --patch --format binary: the mov loop with 6-byte encodings, each site patched after 4 faults (a trampoline with its fast path in machine code, no exception)",
        run: patched,
    },
    Measurement {
        name: "patched-spool",
        what: "the same under `record --patch --spool`: the recorder sets the records aside while the program logs faster than it writes, and writes them after (the program neither waits nor shares the recorder's work)",
        run: patched_spool,
    },
    Measurement {
        name: "patched-general",
        what: "the same loop patched, trampolines without the fast path (MMIOTRACE_PATCH=general: each access through the general path, a call into the runtime)",
        run: patched_general,
    },
    Measurement {
        name: "push-floor",
        what: "a producer's cost of logging one record, nothing else: 64 bytes into a 1 MiB ring, `seq` by `lock xadd`, the time by `rdtsc`, `write_pos` published, a consumer thread reading every record on the other core (the fast path's record, without its checks and access)",
        run: push_floor::<0>,
    },
    Measurement {
        name: "push-floor-no-lock",
        what: "the same with `seq` from a plain increment (per-ring numbers, the recorder merging rings by time)",
        run: push_floor::<1>,
    },
    Measurement {
        name: "push-floor-no-lock-no-tsc",
        what: "the same without `rdtsc` either",
        run: push_floor::<2>,
    },
    Measurement {
        name: "push-floor-compact",
        what: "the fast path's record today: a 32-byte compact record into the same 1 MiB ring (32,768 of them), no `seq`, the time by `rdtsc` under the ring's stamping flag, `write_pos` published, the flag cleared",
        run: push_floor::<3>,
    },
    Measurement {
        name: "hook-miss",
        what: "mmiotrace --hook: the mov loop with a rule on the same mapping that matches none of its accesses, against `emulated` run alongside",
        run: hook_miss,
    },
    Measurement {
        name: "hook-rewrite",
        what: "mmiotrace --hook: the mov loop with a rule that flips bits of every read, against `emulated` run alongside",
        run: hook_rewrite,
    },
    Measurement {
        name: "displaced",
        what: "mmiotrace: `add dword [rdi], esi` (RMW) by displaced execution, per instruction",
        run: displaced,
    },
    Measurement {
        name: "emulated-cmp",
        what: "mmiotrace: `cmp dword [rdi], esi`, emulated (the CPU computes the flags on copies)",
        run: emulated_cmp,
    },
    Measurement {
        name: "emulated-vector",
        what: "mmiotrace: `movdqu` load + store, emulated on the XSAVE area of the signal frame",
        run: emulated_vector,
    },
    Measurement {
        name: "displaced-locked",
        what: "mmiotrace: `lock add dword [rdi], esi`, displaced under the per-address stripe lock",
        run: displaced_locked,
    },
    Measurement {
        name: "displaced-sse",
        what: "mmiotrace: `addps xmm0, [rdi]`, displaced with the x87/SSE/AVX state loaded (xrstor/xsave)",
        run: displaced_sse,
    },
    Measurement {
        name: "single-step",
        what: "kernel design (--mode single-step): disarm, TF single-step, re-arm",
        run: single_step,
    },
    Measurement {
        name: "capture-alias-1",
        what: "events logged / accesses made, 1 thread, mmiotrace",
        run: capture::<false, 1>,
    },
    Measurement {
        name: "capture-alias-2",
        what: "2 threads on one shared traced page, mmiotrace",
        run: capture::<false, 2>,
    },
    Measurement {
        name: "capture-alias-4",
        what: "4 threads, mmiotrace",
        run: capture::<false, 4>,
    },
    Measurement {
        name: "capture-alias-8",
        what: "8 threads, mmiotrace",
        run: capture::<false, 8>,
    },
    Measurement {
        name: "capture-single-step-1",
        what: "1 thread, kernel design",
        run: capture::<true, 1>,
    },
    Measurement {
        name: "capture-single-step-2",
        what: "2 threads, kernel design",
        run: capture::<true, 2>,
    },
    Measurement {
        name: "capture-single-step-4",
        what: "4 threads, kernel design",
        run: capture::<true, 4>,
    },
    Measurement {
        name: "capture-single-step-8",
        what: "8 threads, kernel design",
        run: capture::<true, 8>,
    },
    Measurement {
        name: "compute",
        what: "whole program: CRC-32 of generated data with sparse MMIO, traced / untraced",
        run: compute,
    },
    Measurement {
        name: "compute-valgrind",
        what: "the same program under `valgrind --tool=none` (reference: binary translation)",
        run: compute_valgrind,
    },
    Measurement {
        name: "buffer-store32",
        what: "GPU-buffer loop: sequential 4-byte stores filling a traced mapping (a command buffer), traced / untraced",
        run: buffer_traced::<STORE32, false>,
    },
    Measurement {
        name: "buffer-load64",
        what: "GPU-buffer loop: sequential 8-byte loads from a traced mapping, traced / untraced",
        run: buffer_traced::<LOAD64, false>,
    },
    Measurement {
        name: "buffer-memcpy",
        what: "GPU-buffer loop: glibc `memcpy` into a traced mapping (an unmodified library routine), traced / untraced",
        run: buffer_traced::<MEMCPY, false>,
    },
    Measurement {
        name: "buffer-copy256",
        what: "GPU-buffer loop: glibc `memcpy`s of 256 bytes (commands copied into a command buffer), block after block into a traced mapping, traced (`--no-patch`: the fault path) / untraced",
        run: buffer_traced::<COPY256, false>,
    },
    Measurement {
        name: "buffer-store32-patched",
        what: "the buffer-store32 loop under `mmiotrace record --patch` (the default), traced / untraced: the compiled loop's stores (4 and 5 bytes, unrolled) patched after their first faults",
        run: buffer_traced::<STORE32, true>,
    },
    Measurement {
        name: "buffer-load64-patched",
        what: "the buffer-load64 loop under `mmiotrace record --patch` (the default), traced / untraced: the compiled loop's `add reg, [mem]` loads (4 and 5 bytes, unrolled) patched after their first faults",
        run: buffer_traced::<LOAD64, true>,
    },
    Measurement {
        name: "buffer-memcpy-patched",
        what: "the buffer-memcpy loop under `mmiotrace record --patch`, traced / untraced: glibc's `rep movsb` stays on the fault path (one exception per `rep`, its bytes logged in runs)",
        run: buffer_traced::<MEMCPY, true>,
    },
    Measurement {
        name: "buffer-copy256-patched",
        what: "the buffer-copy256 loop under `mmiotrace record --patch` (the default), traced / untraced: glibc's vector stores (AVX-512 EVEX ones on a CPU that has it) patched after their first faults",
        run: buffer_traced::<COPY256, true>,
    },
    Measurement {
        name: "shared-site",
        what: "glibc `memcpy`s of 256 bytes into plain memory after the same `memcpy` copied into a traced mapping (its store sites patched: each store checks that its address is untraced, then runs the original instruction), under `mmiotrace record` / bare",
        run: shared_site,
    },
    Measurement {
        name: "buffer-store32-valgrind",
        what: "the buffer-store32 loop under `valgrind --tool=none` / bare (the JIT cost valgrind-mmt puts on all code)",
        run: buffer_valgrind::<STORE32>,
    },
    Measurement {
        name: "buffer-load64-valgrind",
        what: "the buffer-load64 loop under `valgrind --tool=none` / bare",
        run: buffer_valgrind::<LOAD64>,
    },
    Measurement {
        name: "buffer-memcpy-valgrind",
        what: "the buffer-memcpy loop under `valgrind --tool=none` / bare",
        run: buffer_valgrind::<MEMCPY>,
    },
    Measurement {
        name: "buffer-copy256-valgrind",
        what: "the buffer-copy256 loop under `valgrind --tool=none` / bare",
        run: buffer_valgrind::<COPY256>,
    },
    Measurement {
        name: "buffer-store32-mmt",
        what: "the buffer-store32 loop under valgrind-mmt (`--tool=mmt`, tracing the buffer's file: nouveau's tracer) / bare",
        run: buffer_mmt::<STORE32>,
    },
    Measurement {
        name: "buffer-load64-mmt",
        what: "the buffer-load64 loop under valgrind-mmt / bare",
        run: buffer_mmt::<LOAD64>,
    },
    Measurement {
        name: "buffer-memcpy-mmt",
        what: "the buffer-memcpy loop under valgrind-mmt / bare",
        run: buffer_mmt::<MEMCPY>,
    },
    Measurement {
        name: "buffer-copy256-mmt",
        what: "the buffer-copy256 loop under valgrind-mmt / bare",
        run: buffer_mmt::<COPY256>,
    },
    Measurement {
        name: "startup",
        what: "whole program: map one register, read it, exit",
        run: startup,
    },
    Measurement {
        name: "recorder-text",
        what: "recorder drain to a text trace (1024 stores per `rep stosd` fault)",
        run: recorder::<false>,
    },
    Measurement {
        name: "recorder-binary",
        what: "recorder drain to a binary trace",
        run: recorder::<true>,
    },
    Measurement {
        name: "recorder-drain-text",
        what: "the drain alone to a text trace (a producer pushing records straight into a ring)",
        run: recorder_drain::<false>,
    },
    Measurement {
        name: "recorder-drain-binary",
        what: "the drain alone to a binary trace",
        run: recorder_drain::<true>,
    },
    Measurement {
        name: "recorder-drain-tsc-text",
        what: "the drain alone to a text trace, compact records as a patched site's fast path logs them (one 32-byte entry, the raw TSC, which the recorder converts)",
        run: recorder_drain_tsc::<false>,
    },
    Measurement {
        name: "recorder-drain-tsc-binary",
        what: "the drain alone to a binary trace, compact records (a patched site's)",
        run: recorder_drain_tsc::<true>,
    },
    Measurement {
        name: "recorder-drain-tsc-paced",
        what: "the drain alone to a binary trace, compact records (a patched site's), the producer paced at a patched program's rate",
        run: recorder_drain_tsc_paced,
    },
    Measurement {
        name: "parse-text",
        what: "format_bench: read a text trace (every field decoded)",
        run: parse_text,
    },
    Measurement {
        name: "parse-binary",
        what: "format_bench: read the same trace in binary",
        run: parse_binary,
    },
];

/// Iterations before timing starts: faults in the page, warms caches, and
/// under the tracer warms the decoder and the ring.
pub const WARMUP_ITERATIONS: u32 = 1000;

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

fn plain(settings: &Settings) -> anyhow::Result<Outcome> {
    let file = PageFile::create("plain")?;
    let page = SharedPage::map(&file.file)?;
    let samples = time_reps(settings.reps, settings.plain_accesses, |n| {
        page.access_loop(n)
    });
    Ok(per_access(
        samples,
        settings.reps,
        settings.plain_accesses,
        "",
    ))
}

fn floor(settings: &Settings) -> anyhow::Result<Outcome> {
    let file = PageFile::create("floor")?;
    let page = SharedPage::map(&file.file)?;
    let _armed = SkipFaults::arm(&page)?;
    let samples = time_reps(settings.reps, settings.fault_accesses, |n| {
        page.access_loop(n)
    });
    Ok(per_access(
        samples,
        settings.reps,
        settings.fault_accesses,
        "",
    ))
}

fn floor_step(settings: &Settings) -> anyhow::Result<Outcome> {
    let file = PageFile::create("floor-step")?;
    let page = SharedPage::map(&file.file)?;
    let scratch_file = PageFile::create("floor-step-scratch")?;
    let scratch = SharedPage::map(&scratch_file.file)?;
    let _armed = StepFaults::arm(&page, &scratch)?;
    let samples = time_reps(settings.reps, settings.fault_accesses, |n| {
        page.access_loop(n)
    });
    Ok(per_access(
        samples,
        settings.reps,
        settings.fault_accesses,
        "",
    ))
}

fn syscall(settings: &Settings) -> anyhow::Result<Outcome> {
    // time_reps counts two per iteration: two calls per iteration.
    let samples = time_reps(settings.reps, settings.fault_accesses, |n| {
        crate::syscall::getpid_loop(2 * n)
    });
    Ok(per_access(
        samples,
        settings.reps,
        settings.fault_accesses,
        " calls",
    ))
}

fn tsc_read(settings: &Settings) -> anyhow::Result<Outcome> {
    // time_reps counts two per iteration: two reads per iteration.
    let samples = time_reps(settings.reps, settings.fault_accesses, |n| {
        std::hint::black_box(crate::syscall::tsc_loop(2 * n));
    });
    Ok(per_access(
        samples,
        settings.reps,
        settings.fault_accesses,
        " reads",
    ))
}

/// Records per repetition of the push-floor rows.
const PUSH_FLOOR_RECORDS: u64 = 2_000_000;

/// The push-floor rows (see `push_floor`): ns per record, one sample per
/// repetition of [`PUSH_FLOOR_RECORDS`].
fn push_floor<const VARIANT: u8>(settings: &Settings) -> anyhow::Result<Outcome> {
    use crate::push_floor::{Ordered, measure};
    let ordered = match VARIANT {
        0 => Ordered::LockedTsc,
        1 => Ordered::Tsc,
        2 => Ordered::Neither,
        _ => Ordered::Compact,
    };
    let mut samples = Vec::with_capacity(settings.reps);
    let mut waits = Vec::with_capacity(settings.reps);
    for _ in 0..settings.reps {
        let pushed = measure(ordered, PUSH_FLOOR_RECORDS);
        ensure!(
            pushed.consumed == PUSH_FLOOR_RECORDS,
            "the consumer read {} of {PUSH_FLOOR_RECORDS} records",
            pushed.consumed
        );
        samples.push(pushed.ns);
        waits.push(pushed.waits.to_string());
    }
    Ok(Outcome::PerAccess {
        samples,
        detail: format!(
            "{} reps x {PUSH_FLOOR_RECORDS} records; the producer found the ring full {} times",
            settings.reps,
            waits.join("/")
        ),
    })
}

fn per_access(samples: Vec<f64>, reps: usize, accesses: u32, extra: &str) -> Outcome {
    Outcome::PerAccess {
        samples,
        detail: format!("{reps} reps x {accesses}{extra}"),
    }
}

/// The worker arguments of a timed loop.
fn loop_args(work: &str, settings: &Settings) -> Vec<String> {
    vec![
        "--work".into(),
        work.into(),
        "--reps".into(),
        settings.reps.to_string(),
        "--fault-accesses".into(),
        settings.fault_accesses.to_string(),
    ]
}

/// Accesses a timed mov loop makes, warm-up included.
fn loop_accesses(settings: &Settings) -> u64 {
    let iterations = u64::from((settings.fault_accesses / 2).max(1));
    2 * (u64::from(WARMUP_ITERATIONS) + iterations * settings.reps as u64)
}

/// The mov loop under the recorder; the worker times its own loop, so the
/// recorder's and the program's start-up are not counted. A loop that was
/// not traced would look impossibly fast: the trace must hold every access.
fn traced_mov_loop(mode: Mode, settings: &Settings) -> anyhow::Result<Outcome> {
    let page = PageFile::create("loop")?;
    let recording = record::record(mode, false, &page.path, &loop_args("mov", settings))?;
    let samples = record::samples(&recording.stdout, settings.reps)?;
    let counts = record::count(&recording.trace.0)?;
    let expected = loop_accesses(settings);
    ensure!(
        counts.reads + counts.writes == expected && counts.unknown == 0,
        "the trace holds {} accesses, expected {expected}",
        counts.accesses()
    );
    let extra = format!(
        "; all {expected} in the trace; program waited {}x on a full ring",
        recording.ring_full_waits()?
    );
    Ok(per_access(
        samples,
        settings.reps,
        settings.fault_accesses,
        &extra,
    ))
}

fn emulated(settings: &Settings) -> anyhow::Result<Outcome> {
    traced_mov_loop(Mode::Alias, settings)
}

/// The mov loop with sites long enough to patch, under `record --patch`:
/// patched sites with the trampolines' fast path.
fn patched(settings: &Settings) -> anyhow::Result<Outcome> {
    patched_mov_loop(Patched::Fast, settings)
}

/// The same, under `record --spool`.
fn patched_spool(settings: &Settings) -> anyhow::Result<Outcome> {
    patched_mov_loop(Patched::Spool, settings)
}

/// The same, with the trampolines' general path only.
fn patched_general(settings: &Settings) -> anyhow::Result<Outcome> {
    patched_mov_loop(Patched::General, settings)
}

/// How the patched mov loop is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Patched {
    /// The trampolines' fast path.
    Fast,
    /// The same, the recorder setting records aside (`--spool`).
    Spool,
    /// The trampolines' general path only.
    General,
}

/// The mov loop with sites long enough to patch (`mov-long`), patched,
/// recorded as `how` says. The trace must hold every access, and the
/// recorder must report patched sites.
fn patched_mov_loop(how: Patched, settings: &Settings) -> anyhow::Result<Outcome> {
    let page = PageFile::create(match how {
        Patched::Fast => "patched",
        Patched::Spool => "patched-spool",
        Patched::General => "patched-general",
    })?;
    // `record --patch` sets MMIOTRACE_PATCH=on in the program's
    // environment, over any value there: the general path is asked for
    // without `--patch`, in the environment that record passes through.
    let (options, env): (Vec<OsString>, &[(&str, &str)]) = match how {
        Patched::General => (Vec::new(), &[("MMIOTRACE_PATCH", "general")]),
        Patched::Fast => (vec!["--patch".into()], &[]),
        Patched::Spool => (vec!["--patch".into(), "--spool".into()], &[]),
    };
    // A binary trace: at about 30 ns an access the program outruns a text
    // trace's recorder (about 12 M events/s, "Recorder throughput"), and
    // would measure the recorder.
    let recording = record::record_with(
        Mode::Alias,
        true,
        &page.path,
        &options,
        env,
        &loop_args("mov-long", settings),
    )?;
    let samples = record::samples(&recording.stdout, settings.reps)?;
    let counts = record::count(&recording.trace.0)?;
    let expected = loop_accesses(settings);
    ensure!(
        counts.reads + counts.writes == expected && counts.unknown == 0,
        "the trace holds {} accesses, expected {expected}",
        counts.accesses()
    );
    let summary = patch_summary(&recording)?;
    let extra = format!(
        "; all {expected} in the trace; {summary}; program waited {}x on a full ring",
        recording.ring_full_waits()?
    );
    Ok(per_access(
        samples,
        settings.reps,
        settings.fault_accesses,
        &extra,
    ))
}

/// The recorder's patched-sites totals ("patch: 2 sites patched"); an
/// error when no site was patched, for a row that times patched sites.
fn patch_summary(recording: &Recording) -> anyhow::Result<String> {
    let summary = recording
        .patch_summary()
        .unwrap_or("patch: no site reached 4 faults");
    ensure!(
        recording.patched_sites()? > 0,
        "the loop's sites were not patched ({summary})"
    );
    Ok(summary.to_owned())
}

fn hook_miss(settings: &Settings) -> anyhow::Result<Outcome> {
    hooked_mov_loop("[[rule]]\noffset = 0x800\npass = true\n", 0, settings)
}

fn hook_rewrite(settings: &Settings) -> anyhow::Result<Outcome> {
    hooked_mov_loop(
        "[[rule]]\noffset = 0\ndir = \"r\"\nflip = 0xff\n",
        loop_accesses(settings) / 2,
        settings,
    )
}

/// The mov loop under `record --hook RULES`, and the plain `emulated`
/// loop run just before and after it, in the same run: the ratio of the
/// medians. The trace must hold every access, `hooked` of them marked.
fn hooked_mov_loop(rules: &str, hooked: u64, settings: &Settings) -> anyhow::Result<Outcome> {
    let page = PageFile::create("hook")?;
    let rule_file = record::TempPath(page.path.with_extension("toml"));
    std::fs::write(&rule_file.0, rules).context("writing the rule file")?;
    let options = ["--hook".into(), rule_file.0.clone().into_os_string()];
    let args = loop_args("mov", settings);
    let mut plain = Vec::new();
    let mut hook = Vec::new();
    let expected = loop_accesses(settings);
    // Plain, hooked, plain, hooked: drift in the machine's speed shows in both.
    for _ in 0..2 {
        let recording = record::record(Mode::Alias, false, &page.path, &args)?;
        plain.extend(record::samples(&recording.stdout, settings.reps)?);
        let recording = record::record_with(Mode::Alias, false, &page.path, &options, &[], &args)?;
        hook.extend(record::samples(&recording.stdout, settings.reps)?);
        let counts = record::count(&recording.trace.0)?;
        ensure!(
            counts.reads + counts.writes == expected && counts.unknown == 0,
            "the trace holds {} accesses, expected {expected}",
            counts.accesses()
        );
        ensure!(
            counts.hooked == hooked,
            "{} accesses marked hooked, expected {hooked}",
            counts.hooked
        );
    }
    let (plain, hook) = (crate::median(&plain), crate::median(&hook));
    Ok(Outcome::Row {
        result: format!("{hook:.0} ns"),
        ratio: format!("{:.3} x emulated", hook / plain),
        detail: format!(
            "median of {} reps x {} each; emulated alongside: {plain:.0} ns; all {expected} in the trace, {hooked} marked hook=1",
            2 * settings.reps,
            settings.fault_accesses
        ),
    })
}

fn single_step(settings: &Settings) -> anyhow::Result<Outcome> {
    traced_mov_loop(Mode::SingleStep, settings)
}

fn displaced(settings: &Settings) -> anyhow::Result<Outcome> {
    let page = PageFile::create("displaced")?;
    let recording = record::record(Mode::Alias, false, &page.path, &loop_args("add", settings))?;
    let samples = record::samples(&recording.stdout, settings.reps)?;
    let adds = recording.made()?;
    let counts = record::count(&recording.trace.0)?;
    // Each add must be in the trace: as an UNKNOWN, or as a read and a
    // write with their values, whichever the runtime logs.
    ensure!(
        counts.unknown + counts.writes == adds,
        "{adds} adds, but the trace holds {} writes and {} UNKNOWN",
        counts.writes,
        counts.unknown
    );
    let per_add = |n: u64, what: &str| match n / adds {
        0 => String::new(),
        k => format!(" {k} {what}"),
    };
    let extra = format!(
        "; the sum in the register is right; each add in the trace as{}{}{}",
        per_add(counts.reads, "R"),
        per_add(counts.writes, "W"),
        per_add(counts.unknown, "UNKNOWN"),
    );
    Ok(per_access(
        samples,
        settings.reps,
        settings.fault_accesses,
        &extra,
    ))
}

/// One instruction kind in a loop under the recorder: every instruction
/// must be in the trace with `reads` reads and `writes` writes (values
/// included), none as UNKNOWN.
fn traced_insn_loop(
    work: &str,
    reads: u64,
    writes: u64,
    settings: &Settings,
) -> anyhow::Result<Outcome> {
    let page = PageFile::create(work)?;
    let recording = record::record(Mode::Alias, false, &page.path, &loop_args(work, settings))?;
    let samples = record::samples(&recording.stdout, settings.reps)?;
    let made = recording.made()?;
    let counts = record::count(&recording.trace.0)?;
    let instructions = made / (reads + writes).max(1);
    ensure!(
        counts.unknown == 0
            && counts.reads == reads * instructions
            && counts.writes == writes * instructions,
        "{made} accesses made, but the trace holds {} reads, {} writes and {} UNKNOWN",
        counts.reads,
        counts.writes,
        counts.unknown
    );
    let extra = format!("; all {made} in the trace with their values");
    Ok(per_access(
        samples,
        settings.reps,
        settings.fault_accesses,
        &extra,
    ))
}

fn emulated_cmp(settings: &Settings) -> anyhow::Result<Outcome> {
    traced_insn_loop("cmp", 1, 0, settings)
}

fn emulated_vector(settings: &Settings) -> anyhow::Result<Outcome> {
    traced_insn_loop("movdqu", 1, 1, settings)
}

fn displaced_locked(settings: &Settings) -> anyhow::Result<Outcome> {
    traced_insn_loop("lock-add", 1, 1, settings)
}

fn displaced_sse(settings: &Settings) -> anyhow::Result<Outcome> {
    traced_insn_loop("addps", 1, 0, settings)
}

/// THREADS threads, each load+store pairs on its own register of one
/// shared traced page: events logged ÷ accesses made. mmiotrace must log
/// every one; the kernel design loses what other threads do while a page
/// is disarmed.
fn capture<const SINGLE_STEP: bool, const THREADS: u32>(
    settings: &Settings,
) -> anyhow::Result<Outcome> {
    let mode = if SINGLE_STEP {
        Mode::SingleStep
    } else {
        Mode::Alias
    };
    let page = PageFile::create("capture")?;
    let args = [
        "--work".to_owned(),
        "threads".to_owned(),
        "--threads".to_owned(),
        THREADS.to_string(),
        "--accesses".to_owned(),
        settings.capture_accesses.to_string(),
    ];
    let recording = record::record(mode, false, &page.path, &args)?;
    let made = recording.made()?;
    let counts = record::count(&recording.trace.0)?;
    let logged = counts.accesses();
    let per_thread: Vec<u64> = (0..u64::from(THREADS))
        .map(|thread| {
            let address = thread * 4 * crate::worker::THREAD_STRIDE_WORDS as u64;
            counts.by_address.get(&address).copied().unwrap_or(0)
        })
        .collect();
    let mut detail = format!("{logged} of {made} accesses logged");
    if THREADS > 1 {
        let _ = write!(
            detail,
            " (per thread {}..{})",
            per_thread.iter().min().unwrap_or(&0),
            per_thread.iter().max().unwrap_or(&0)
        );
    }
    if SINGLE_STEP {
        let hits = counts
            .marks
            .iter()
            .find_map(|mark| recursive_probe_hits(mark))
            .context("no single-step MARK in the trace")?;
        let _ = write!(
            detail,
            ", {} lost, {hits} recursive probe hits",
            made.saturating_sub(logged)
        );
    } else {
        ensure!(
            logged == made,
            "mmiotrace logged {logged} of {made} accesses: it must log every one"
        );
    }
    Ok(Outcome::Row {
        result: format!("{:.3} %", 100.0 * logged as f64 / made as f64),
        ratio: String::new(),
        detail,
    })
}

/// `… N recursive probe hits` from the runtime's exit MARK.
fn recursive_probe_hits(mark: &str) -> Option<u64> {
    let before = mark.strip_suffix(" recursive probe hits")?;
    before.rsplit(' ').next()?.parse().ok()
}

/// The shortest of whole-program wall times, in seconds: other processes
/// on the machine only ever add to a run's time, so the best run is the
/// one that shows the program's own cost.
fn best(samples: &[Duration]) -> f64 {
    samples
        .iter()
        .map(Duration::as_secs_f64)
        .fold(f64::INFINITY, f64::min)
}

fn compute_args(settings: &Settings) -> Vec<String> {
    vec![
        "--work".into(),
        "compute".into(),
        "--mib".into(),
        settings.compute_mib.to_string(),
    ]
}

/// The CRC the compute worker printed.
fn crc_of(stdout: &[u8]) -> anyhow::Result<String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .find_map(|line| line.strip_prefix("crc "))
        .map(str::to_owned)
        .context("the compute worker printed no CRC")
}

/// The compute-heavy program bare and under the recorder, alternately:
/// whole-process wall time, traced ÷ untraced.
fn compute(settings: &Settings) -> anyhow::Result<Outcome> {
    let page = PageFile::create("compute")?;
    let args = compute_args(settings);
    let (mut bare, mut traced) = (Vec::new(), Vec::new());
    let mut waits = 0;
    let mut accesses = 0;
    for _ in 0..settings.program_runs {
        let (output, wall) = record::run_timed(&mut record::worker(&page.path, &args)?)?;
        let crc = crc_of(&output.stdout)?;
        bare.push(wall);
        let recording = record::record(Mode::Alias, false, &page.path, &args)?;
        ensure!(
            crc_of(recording.stdout.as_bytes())? == crc,
            "traced and untraced runs computed different CRCs"
        );
        let counts = record::count(&recording.trace.0)?;
        ensure!(
            counts.accesses() == recording.made()?,
            "the trace holds {} accesses, the program made {}",
            counts.accesses(),
            recording.made()?
        );
        waits += recording.ring_full_waits()?;
        accesses = counts.accesses();
        traced.push(recording.wall);
    }
    let (bare, traced) = (best(&bare), best(&traced));
    Ok(Outcome::Row {
        result: format!("{traced:.3} s vs {bare:.3} s"),
        ratio: format!("{:.3} x untraced", traced / bare),
        detail: format!(
            "{} MiB, {accesses} MMIO accesses (a doorbell write and a status read per 64 KiB): {:.1} us more per access, start-up included; whole process, best of {} runs each, alternating; program waited {waits}x on a full ring",
            settings.compute_mib,
            (traced - bare) * 1e6 / accesses as f64,
            settings.program_runs
        ),
    })
}

/// Why a valgrind row is skipped: `None` when valgrind runs.
fn valgrind_missing() -> Option<Outcome> {
    let installed = std::process::Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    (!installed).then(|| Outcome::Row {
        result: "skipped".into(),
        ratio: String::new(),
        detail: "valgrind is not installed".into(),
    })
}

/// The compute-heavy program bare and under `valgrind --tool=none`, if
/// valgrind is installed.
fn compute_valgrind(settings: &Settings) -> anyhow::Result<Outcome> {
    if let Some(skipped) = valgrind_missing() {
        return Ok(skipped);
    }
    let page = PageFile::create("valgrind")?;
    let args = compute_args(settings);
    let (mut bare, mut valgrind) = (Vec::new(), Vec::new());
    for _ in 0..settings.program_runs {
        let (output, wall) = record::run_timed(&mut record::worker(&page.path, &args)?)?;
        let crc = crc_of(&output.stdout)?;
        bare.push(wall);
        let mut command = std::process::Command::new("valgrind");
        command
            .args(["--tool=none", "-q"])
            .arg(record::own_executable()?)
            .arg("--worker")
            .arg(&page.path)
            .args(&args);
        let (output, wall) = record::run_timed(&mut command)?;
        ensure!(
            crc_of(&output.stdout)? == crc,
            "valgrind and bare runs computed different CRCs"
        );
        valgrind.push(wall);
    }
    let (bare, valgrind) = (best(&bare), best(&valgrind));
    Ok(Outcome::Row {
        result: format!("{valgrind:.3} s vs {bare:.3} s"),
        ratio: format!("{:.3} x untraced", valgrind / bare),
        detail: format!(
            "whole process, best of {} runs each, alternating",
            settings.program_runs
        ),
    })
}

/// The loops of the buffer rows (const parameters of their functions).
const STORE32: u8 = 0;
const LOAD64: u8 = 1;
const MEMCPY: u8 = 2;
const COPY256: u8 = 3;

/// What one buffer loop needs: its worker, its file, its counts.
#[derive(Debug)]
struct BufferLoop {
    kind: u8,
    work: &'static str,
    /// The file the loop's buffer maps, whole.
    contents: Vec<u8>,
    /// Accesses per pass (bytes for memcpy, whose access count is glibc's choice).
    per_pass: u64,
}

impl BufferLoop {
    /// The loop of `kind`. The patched rows run the same compiled loops:
    /// their 4- and 5-byte accesses are patched (the short ones by
    /// punning). The worker keeps its `-long` works (one 6- or 7-byte
    /// `mov`) for comparison by hand.
    fn new(kind: u8, settings: &Settings) -> Self {
        let accesses = u64::from(settings.buffer_accesses);
        let page_up = |len: u64| len.div_ceil(PAGE_SIZE as u64) as usize * PAGE_SIZE;
        match kind {
            STORE32 => Self {
                kind,
                work: "buffer-store32",
                contents: vec![0; page_up(4 * accesses)],
                per_pass: accesses,
            },
            LOAD64 => {
                let mut contents = vec![0; page_up(8 * accesses)];
                for (i, word) in contents.chunks_exact_mut(8).enumerate() {
                    word.copy_from_slice(&crate::worker::load64_pattern(i as u64).to_le_bytes());
                }
                Self {
                    kind,
                    work: "buffer-load64",
                    contents,
                    per_pass: accesses,
                }
            }
            COPY256 => {
                let bytes =
                    crate::worker::copy256_blocks(accesses as usize) * crate::worker::COPY_BLOCK;
                Self {
                    kind,
                    work: "buffer-copy256",
                    contents: vec![0; page_up(bytes as u64)],
                    per_pass: bytes as u64,
                }
            }
            _ => Self {
                kind,
                work: "buffer-memcpy",
                contents: vec![0; (settings.buffer_mib as usize) << 20],
                per_pass: u64::from(settings.buffer_mib) << 20,
            },
        }
    }

    fn args(&self, passes: usize, settings: &Settings) -> Vec<String> {
        vec![
            "--work".into(),
            self.work.into(),
            "--reps".into(),
            passes.to_string(),
            "--accesses".into(),
            settings.buffer_accesses.to_string(),
            "--mib".into(),
            settings.buffer_mib.to_string(),
        ]
    }

    /// The file, with its first contents again: what each run must change.
    fn reset(&self, page: &PageFile) -> anyhow::Result<()> {
        page.file
            .write_all_at(&self.contents, 0)
            .with_context(|| format!("{}: cannot reset", page.path.display()))
    }

    /// The size in the row's detail: "1000000 stores", "64 MiB".
    fn size_text(&self, settings: &Settings) -> String {
        match self.kind {
            STORE32 => format!("{} 4-byte stores", self.per_pass),
            LOAD64 => format!("{} 8-byte loads", self.per_pass),
            COPY256 => format!(
                "{} memcpys of {} bytes",
                self.per_pass / crate::worker::COPY_BLOCK as u64,
                crate::worker::COPY_BLOCK
            ),
            _ => format!("{} MiB (--buffer-mib)", settings.buffer_mib),
        }
    }

    /// Whether an access is one the loop makes, asked of each access in
    /// the order the loop made them: pass p of store32 stores i + p to
    /// word i, word after word; load64 loads words of the buffer, word i
    /// holding `load64_pattern(i)`; memcpy only stores (its file is
    /// checked by the worker).
    fn expectation(&self) -> impl FnMut(Direction, u64, u64) -> bool + use<> {
        let (kind, per_pass) = (self.kind, self.per_pass.max(1));
        let mut stores = 0u64;
        move |dir, offset, value| match (kind, dir) {
            (STORE32, Direction::Write) => {
                let (pass, i) = (stores / per_pass, stores % per_pass);
                stores += 1;
                offset == 4 * i && value == u64::from(i.wrapping_add(pass) as u32)
            }
            (LOAD64, Direction::Read) => {
                offset % 8 == 0
                    && offset / 8 < per_pass
                    && value == crate::worker::load64_pattern(offset / 8)
            }
            (MEMCPY | COPY256, Direction::Write) => true,
            _ => false,
        }
    }

    /// Checks the accesses of `passes` passes, as `source` (a trace,
    /// valgrind-mmt's log) holds them: every access there, each where and
    /// with the value the loop made it. Returns what the row says it
    /// checked, and the accesses per pass.
    fn check(&self, passes: u64, counts: &Coverage, source: &str) -> anyhow::Result<(String, u64)> {
        ensure!(
            counts.unknown == 0 && counts.outside == 0,
            "{source} holds {} UNKNOWN accesses and {} outside the buffer",
            counts.unknown,
            counts.outside
        );
        let made = passes * self.per_pass;
        match self.kind {
            STORE32 => {
                ensure!(
                    counts.reads == 0
                        && counts.writes == made
                        && counts.written_bytes == 4 * made
                        && counts.touched == 4 * self.per_pass
                        && counts.unexpected == 0,
                    "{made} stores made, but {source} holds {} reads and {} writes ({} bytes, {} distinct, {} not a store the loop made)",
                    counts.reads,
                    counts.writes,
                    counts.written_bytes,
                    counts.touched,
                    counts.unexpected
                );
                Ok((
                    format!(
                        "every store in {source} with its offset and value, each word in the file"
                    ),
                    counts.writes / passes,
                ))
            }
            LOAD64 => {
                ensure!(
                    counts.writes == 0
                        && counts.reads == made
                        && counts.read_bytes == 8 * made
                        && counts.touched == 8 * self.per_pass
                        && counts.unexpected == 0,
                    "{made} loads made, but {source} holds {} reads ({} bytes, {} distinct, {} not a load the loop made) and {} writes",
                    counts.reads,
                    counts.read_bytes,
                    counts.touched,
                    counts.unexpected,
                    counts.writes
                );
                Ok((
                    format!("every load in {source} with its offset and value, their sum right"),
                    counts.reads / passes,
                ))
            }
            _ => {
                ensure!(
                    counts.reads == 0 && counts.touched == self.per_pass,
                    "{} bytes copied, but {source} holds {} reads, and writes to {} distinct bytes",
                    self.per_pass,
                    counts.reads,
                    counts.touched
                );
                Ok((
                    format!("every byte written in {source}, the file equal to the source"),
                    counts.writes / passes,
                ))
            }
        }
    }

    /// For memcpy: how glibc's copy split into accesses.
    fn widths_text(&self, counts: &Coverage, passes: u64) -> String {
        match self.kind {
            MEMCPY | COPY256 => format!(
                " ({} writes of {:.1} bytes on average per pass: glibc's choice)",
                counts.writes / passes,
                counts.written_bytes as f64 / counts.writes.max(1) as f64
            ),
            _ => String::new(),
        }
    }
}

/// The pass times a buffer worker printed, in ns.
fn pass_samples(stdout: &str, passes: usize) -> anyhow::Result<Vec<f64>> {
    let samples: Vec<f64> = stdout
        .lines()
        .filter_map(|line| line.strip_prefix(crate::worker::PASS_PREFIX))
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("the buffer worker printed a malformed pass time")?;
    ensure!(
        samples.len() == passes,
        "the buffer worker printed {} pass times, expected {passes}",
        samples.len()
    );
    Ok(samples)
}

/// The buffer loop untraced (median of `--reps` passes, the buffer
/// populated beforehand), in ns per pass.
fn buffer_untraced(
    buffer: &BufferLoop,
    page: &PageFile,
    settings: &Settings,
) -> anyhow::Result<f64> {
    buffer.reset(page)?;
    let (output, _) = record::run_timed(&mut record::worker(
        &page.path,
        &buffer.args(settings.reps, settings),
    )?)?;
    let samples = pass_samples(&String::from_utf8_lossy(&output.stdout), settings.reps)?;
    Ok(crate::median(&samples))
}

/// A GPU-buffer loop in a worker, untraced and under `mmiotrace record`
/// (with `--patch` if `PATCHED`): the loop's own wall time, traced ÷
/// untraced. Untraced, the median of `--reps` passes. Traced, one pass
/// where each access is a fault (a million of them take seconds), and the
/// median of `--reps` where they are patched (the store and load loops
/// under `--patch`: a pass takes milliseconds). The trace must hold every
/// access, where and with the value the loop made it, and the file what
/// the loop stored.
fn buffer_traced<const KIND: u8, const PATCHED: bool>(
    settings: &Settings,
) -> anyhow::Result<Outcome> {
    let buffer = BufferLoop::new(KIND, settings);
    let page = PageFile::with_contents(buffer.work, &buffer.contents)?;
    let untraced = buffer_untraced(&buffer, &page, settings)?;
    buffer.reset(&page)?;
    let passes = if PATCHED && KIND != MEMCPY {
        settings.reps
    } else {
        1
    };
    let options: Vec<OsString> = if PATCHED {
        vec!["--patch".into()]
    } else {
        vec!["--no-patch".into()]
    };
    let recording = record::record_with(
        Mode::Alias,
        true,
        &page.path,
        &options,
        &[],
        &buffer.args(passes, settings),
    )?;
    let samples = pass_samples(&recording.stdout, passes)?;
    let traced = crate::median(&samples);
    let len = buffer.contents.len() as u64;
    let counts = record::coverage(&recording.trace.0, len, buffer.expectation())?;
    let (checked, per_pass) = buffer.check(passes as u64, &counts, "the trace")?;
    let timed = if passes == 1 {
        "traced: 1 pass".to_owned()
    } else {
        format!(
            "traced: median of {passes} passes (the first, with the faults before patching: {:.1} ms)",
            samples[0] / 1e6
        )
    };
    let patch = if !PATCHED {
        String::new()
    } else if KIND == MEMCPY {
        // glibc's copy of 64 MiB is `rep movsb` here, a string instruction
        // that patching leaves to the fault path: the summary says so.
        format!(
            "; {}",
            recording
                .patch_summary()
                .unwrap_or("patch: no site reached 4 faults")
        )
    } else {
        format!("; {}", patch_summary(&recording)?)
    };
    Ok(Outcome::Versus {
        ns: traced,
        baseline_ns: untraced,
        baseline: "untraced",
        accesses: per_pass,
        detail: format!(
            "{}{}; {timed}, untraced: median of {} passes (buffer populated); {checked}{patch}; program waited {}x on a full ring",
            buffer.size_text(settings),
            buffer.widths_text(&counts, passes as u64),
            settings.reps,
            recording.ring_full_waits()?
        ),
    })
}

/// glibc's `memcpy` into plain memory through store sites that copying
/// into a traced mapping got patched: the worker's own passes, median of
/// `--reps`, under `mmiotrace record` and bare.
fn shared_site(settings: &Settings) -> anyhow::Result<Outcome> {
    let page = PageFile::with_contents("shared-site", &vec![0u8; 64 * crate::worker::COPY_BLOCK])?;
    let copies = crate::worker::copy256_blocks(settings.buffer_accesses as usize) as u64;
    let args = vec![
        "--work".to_owned(),
        "shared-copy256".to_owned(),
        "--reps".to_owned(),
        settings.reps.to_string(),
        "--accesses".to_owned(),
        settings.buffer_accesses.to_string(),
    ];
    let (output, _) = record::run_timed(&mut record::worker(&page.path, &args)?)?;
    let bare = crate::median(&pass_samples(
        &String::from_utf8_lossy(&output.stdout),
        settings.reps,
    )?);
    let recording = record::record_with(Mode::Alias, true, &page.path, &[], &[], &args)?;
    let traced = crate::median(&pass_samples(&recording.stdout, settings.reps)?);
    let summary = patch_summary(&recording)?;
    Ok(Outcome::Versus {
        ns: traced,
        baseline_ns: bare,
        baseline: "bare",
        accesses: copies,
        detail: format!(
            "{copies} memcpys of 256 bytes a pass, median of {} passes each (per access: per memcpy); {summary}",
            settings.reps
        ),
    })
}

/// A GPU-buffer loop bare and under `valgrind --tool=none`: median of
/// `--reps` passes in one process each (valgrind translates the loop in
/// the first pass; the median shows the translated code's speed).
fn buffer_valgrind<const KIND: u8>(settings: &Settings) -> anyhow::Result<Outcome> {
    if let Some(skipped) = valgrind_missing() {
        return Ok(skipped);
    }
    let buffer = BufferLoop::new(KIND, settings);
    let page = PageFile::with_contents(buffer.work, &buffer.contents)?;
    let bare = buffer_untraced(&buffer, &page, settings)?;
    buffer.reset(&page)?;
    let mut command = std::process::Command::new("valgrind");
    command
        .args(["--tool=none", "-q"])
        .arg(record::own_executable()?)
        .arg("--worker")
        .arg(&page.path)
        .args(buffer.args(settings.reps, settings));
    let (output, _) = record::run_timed(&mut command)?;
    let samples = pass_samples(&String::from_utf8_lossy(&output.stdout), settings.reps)?;
    let first = samples[0];
    let valgrind = crate::median(&samples);
    // The worker checked the file (or the loads' sum) itself.
    let accesses = match KIND {
        MEMCPY | COPY256 => 0,
        _ => buffer.per_pass,
    };
    Ok(Outcome::Versus {
        ns: valgrind,
        baseline_ns: bare,
        baseline: "bare",
        accesses,
        detail: format!(
            "{}; median of {} passes each (first pass under valgrind, with translation: {:.1} ms); results checked by the worker",
            buffer.size_text(settings),
            settings.reps,
            first / 1e6
        ),
    })
}

/// A GPU-buffer loop bare and under valgrind-mmt tracing the buffer's
/// file (`--tool=mmt --mmt-trace-file=FILE`, its binary trace in the
/// `--log-file`): median of `--reps` passes in one process each, as the
/// valgrind rows. valgrind-mmt's log must hold every access, where and
/// with the value the loop made it, as mmiotrace's trace must.
fn buffer_mmt<const KIND: u8>(settings: &Settings) -> anyhow::Result<Outcome> {
    let Some(valgrind_mmt) = &settings.valgrind_mmt else {
        return Ok(Outcome::Row {
            result: "skipped".into(),
            ratio: String::new(),
            detail: "no valgrind-mmt: --valgrind-mmt PATH or MMIOTRACE_BENCH_VALGRIND_MMT names its valgrind".into(),
        });
    };
    let buffer = BufferLoop::new(KIND, settings);
    let page = PageFile::with_contents(buffer.work, &buffer.contents)?;
    let bare = buffer_untraced(&buffer, &page, settings)?;
    buffer.reset(&page)?;
    let log = record::TempPath(page.path.with_extension("mmt"));
    // valgrind-mmt traces the mappings of a file opened by this very path.
    let mut trace_file = OsString::from("--mmt-trace-file=");
    trace_file.push(&page.path);
    let mut log_file = OsString::from("--log-file=");
    log_file.push(&log.0);
    let mut command = std::process::Command::new(valgrind_mmt);
    command
        .args(["-q", "--tool=mmt"])
        .arg(trace_file)
        .arg(log_file)
        .arg(record::own_executable()?)
        .arg("--worker")
        .arg(&page.path)
        .args(buffer.args(settings.reps, settings));
    let (output, _) = record::run_timed(&mut command).context("valgrind-mmt failed")?;
    let samples = pass_samples(&String::from_utf8_lossy(&output.stdout), settings.reps)?;
    let first = samples[0];
    let traced = crate::median(&samples);

    let len = buffer.contents.len() as u64;
    let mut counts = Coverage::new(len);
    let mut expected = buffer.expectation();
    let file = std::fs::File::open(&log.0)
        .with_context(|| format!("{}: cannot open valgrind-mmt's log", log.0.display()))?;
    let log_bytes = file.metadata()?.len();
    let mmt_log = crate::mmt::read(
        std::io::BufReader::with_capacity(1 << 20, file),
        &log.0.display().to_string(),
        |access| {
            let ok = expected(access.dir, access.offset, access.low_u64());
            counts.add(access.dir, access.offset, access.value.len() as u64, ok);
        },
    )?;
    ensure!(
        !mmt_log.regions.is_empty(),
        "valgrind-mmt traced no mapping of {} (is {} valgrind-mmt's valgrind?)",
        page.path.display(),
        valgrind_mmt.display()
    );
    let counts = counts.finish();
    let passes = settings.reps as u64;
    let (checked, per_pass) = buffer.check(passes, &counts, "valgrind-mmt's log")?;
    Ok(Outcome::Versus {
        ns: traced,
        baseline_ns: bare,
        baseline: "bare",
        accesses: per_pass,
        detail: format!(
            "{}{}; median of {} passes each (first pass under valgrind-mmt, with translation: {:.1} ms); {checked}; log: {:.1} MiB",
            buffer.size_text(settings),
            buffer.widths_text(&counts, passes),
            settings.reps,
            first / 1e6,
            log_bytes as f64 / f64::from(1 << 20)
        ),
    })
}

/// A program that maps one register, reads it and exits: the whole
/// `mmiotrace record` run against the bare program.
fn startup(settings: &Settings) -> anyhow::Result<Outcome> {
    let page = PageFile::create("startup")?;
    let args = ["--work".to_owned(), "startup".to_owned()];
    let (mut bare, mut traced) = (Vec::new(), Vec::new());
    for _ in 0..settings.startup_runs {
        bare.push(record::run_timed(&mut record::worker(&page.path, &args)?)?.1);
        let recording = record::record(Mode::Alias, false, &page.path, &args)?;
        let counts = record::count(&recording.trace.0)?;
        ensure!(
            counts.reads == 1,
            "the trace holds {} reads, expected 1",
            counts.reads
        );
        traced.push(recording.wall);
    }
    let (bare, traced) = (best(&bare), best(&traced));
    Ok(Outcome::Row {
        result: format!("{:.2} ms vs {:.2} ms", traced * 1e3, bare * 1e3),
        ratio: format!("{:.2} x untraced", traced / bare),
        detail: format!(
            "`mmiotrace record` start to exit vs the bare program, best of {} runs each, alternating",
            settings.startup_runs
        ),
    })
}

/// `--program-runs` whole `mmiotrace record` runs of the worker doing
/// `work` with `--events events`, each trace checked to hold every write
/// the worker made. Returns each run's events per second over the whole
/// run, what `each` made of each run, and the last trace's size.
fn recorded_runs<T>(
    settings: &Settings,
    binary: bool,
    work: &str,
    events: u64,
    more: &[String],
    each: impl Fn(&Recording) -> anyhow::Result<T>,
) -> anyhow::Result<(Vec<f64>, Vec<T>, u64)> {
    let page = PageFile::create(work)?;
    let mut args = vec![
        "--work".to_owned(),
        work.to_owned(),
        "--events".to_owned(),
        events.to_string(),
    ];
    args.extend_from_slice(more);
    let mut rates = Vec::new();
    let mut extra = Vec::new();
    let mut size = 0;
    for _ in 0..settings.program_runs {
        let recording: Recording = record::record(Mode::Alias, binary, &page.path, &args)?;
        let made = recording.made()?;
        let counts = record::count(&recording.trace.0)?;
        ensure!(
            counts.writes == made,
            "the trace holds {} writes, the worker made {made}",
            counts.writes
        );
        // A TSC stamp the recorder did not convert reads as hours.
        ensure!(
            u128::from(counts.latest) < recording.wall.as_nanos(),
            "the trace has a write at {} ns, in a run of {:?}",
            counts.latest,
            recording.wall
        );
        size = std::fs::metadata(&recording.trace.0)?.len();
        rates.push(made as f64 / recording.wall.as_secs_f64());
        extra.push(each(&recording)?);
    }
    Ok((rates, extra, size))
}

/// The highest of some rates.
fn fastest(rates: &[f64]) -> f64 {
    rates.iter().copied().fold(0.0, f64::max)
}

/// Events drained per second: a program that logs as fast as the runtime
/// can (1024 events per fault), recorded whole; the program waits when
/// its ring is full, so the recorder sets the pace.
fn recorder<const BINARY: bool>(settings: &Settings) -> anyhow::Result<Outcome> {
    let (rates, waits, size) = recorded_runs(
        settings,
        BINARY,
        "burst",
        settings.burst_events,
        &[],
        |recording| Ok(recording.ring_full_waits()?.to_string()),
    )?;
    Ok(Outcome::Row {
        result: format!("{:.2} M events/s", fastest(&rates) / 1e6),
        ratio: String::new(),
        detail: format!(
            "{} events ({:.1} MiB) over the whole `mmiotrace record` run, best of {} runs; program waited on a full ring: {} times",
            settings.burst_events.div_ceil(1024) * 1024,
            size as f64 / f64::from(1 << 20),
            settings.program_runs,
            waits.join("/")
        ),
    })
}

/// Events drained per second from a synthetic producer that pushes write
/// records straight into a ring with `Shm::push` (no fault, see
/// `flood`), recorded whole: the drain alone sets the pace.
fn recorder_drain<const BINARY: bool>(settings: &Settings) -> anyhow::Result<Outcome> {
    flood_rates(settings, BINARY, "flood")
}

/// [`recorder_drain`] with each record stamped with the raw TSC, as a
/// patched site's fast path will (no `clock_gettime` per event); the
/// recorder converts the times.
fn recorder_drain_tsc<const BINARY: bool>(settings: &Settings) -> anyhow::Result<Outcome> {
    if let Some(skipped) = tsc_unusable() {
        return Ok(skipped);
    }
    flood_rates(settings, BINARY, "flood-tsc")
}

/// Nanoseconds between two events of the paced producer: 30.3 M events/s,
/// the rate of a program whose patched accesses cost about 30 ns.
const PACE_NS: u64 = 33;

/// [`recorder_drain_tsc`] to binary with the producer paced at one event
/// per [`PACE_NS`]: a recorder that keeps up never makes it wait.
fn recorder_drain_tsc_paced(settings: &Settings) -> anyhow::Result<Outcome> {
    if let Some(skipped) = tsc_unusable() {
        return Ok(skipped);
    }
    let pace = ["--pace-ns".to_owned(), PACE_NS.to_string()];
    let runs = flood_runs(settings, true, "flood-tsc", &pace)?;
    Ok(Outcome::Row {
        result: format!("{:.2} M events/s", fastest(&runs.producer_rates) / 1e6),
        ratio: String::new(),
        detail: format!(
            "the producer's own rate, paced at one event per {PACE_NS} ns ({:.1} M events/s); {} events, best of {} runs; producer waited on a full ring: {} times",
            1e3 / PACE_NS as f64,
            settings.drain_events,
            settings.program_runs,
            runs.waits.join("/")
        ),
    })
}

/// The row of a TSC row where the TSC is not usable.
fn tsc_unusable() -> Option<Outcome> {
    (!mmiotrace_shm::tsc_is_usable()).then(|| Outcome::Row {
        result: "skipped".into(),
        ratio: String::new(),
        detail: "the TSC is not usable here (no constant_tsc and nonstop_tsc in /proc/cpuinfo)"
            .into(),
    })
}

/// What the flood rows measured: per run, events per second over the
/// whole run, the producer's own rate and its waits on a full ring; and
/// the size of the last trace.
struct FloodRuns {
    rates: Vec<f64>,
    producer_rates: Vec<f64>,
    waits: Vec<String>,
    size: u64,
}

fn flood_runs(
    settings: &Settings,
    binary: bool,
    work: &str,
    more: &[String],
) -> anyhow::Result<FloodRuns> {
    let (rates, producer, size) = recorded_runs(
        settings,
        binary,
        work,
        settings.drain_events,
        more,
        |recording| {
            let made = recording.made()?;
            let (secs, waits) = recording
                .stdout
                .lines()
                .find_map(|line| line.strip_prefix(crate::worker::FLOOD_PREFIX))
                .and_then(|rest| rest.split_once(' '))
                .and_then(|(secs, waits)| {
                    Some((secs.parse::<f64>().ok()?, waits.parse::<u64>().ok()?))
                })
                .context("the flood worker did not say how long it took")?;
            Ok((made as f64 / secs, waits.to_string()))
        },
    )?;
    let (producer_rates, waits) = producer.into_iter().unzip();
    Ok(FloodRuns {
        rates,
        producer_rates,
        waits,
        size,
    })
}

fn flood_rates(settings: &Settings, binary: bool, work: &str) -> anyhow::Result<Outcome> {
    let runs = flood_runs(settings, binary, work, &[])?;
    Ok(Outcome::Row {
        result: format!("{:.2} M events/s", fastest(&runs.rates) / 1e6),
        ratio: String::new(),
        detail: format!(
            "{} events ({:.1} MiB) over the whole `mmiotrace record` run, best of {} runs; the producer's own rate {:.2} M events/s; producer waited on a full ring: {} times",
            settings.drain_events,
            runs.size as f64 / f64::from(1 << 20),
            settings.program_runs,
            fastest(&runs.producer_rates) / 1e6,
            runs.waits.join("/")
        ),
    })
}

/// What format_bench printed, run once for both parse rows.
static FORMAT_BENCH: OnceLock<Result<String, String>> = OnceLock::new();

fn format_bench(settings: &Settings) -> anyhow::Result<&'static str> {
    let output =
        FORMAT_BENCH.get_or_init(|| run_format_bench(settings).map_err(|e| format!("{e:#}")));
    match output {
        Ok(text) => Ok(text),
        Err(err) => bail!("{err}"),
    }
}

fn run_format_bench(settings: &Settings) -> anyhow::Result<String> {
    let example = record::own_executable()?
        .with_file_name("examples")
        .join("format_bench");
    ensure!(
        example.is_file(),
        "{} not found: `cargo build --release -p mmiotrace-trace --example format_bench` (bench/run does)",
        example.display()
    );
    let mut command = std::process::Command::new(&example);
    command.args(["--size", &settings.parse_size, "--runs", "3"]);
    let (output, _) = record::run_timed(&mut command)?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// format_bench's line starting with `label`, split into its leading time
/// and the parenthesised rates: `text parse  0.115 s  1352097 events  (11.8 M events/s, 8.52x wc -l)`.
fn format_bench_line<'a>(output: &'a str, label: &str) -> anyhow::Result<(&'a str, &'a str)> {
    let line = output
        .lines()
        .find(|line| line.starts_with(label))
        .with_context(|| format!("format_bench printed no {label:?} line"))?;
    let (head, rates) = line
        .split_once('(')
        .with_context(|| format!("unexpected format_bench line {line:?}"))?;
    Ok((head[label.len()..].trim(), rates.trim_end_matches(')')))
}

fn parse_row(settings: &Settings, label: &str) -> anyhow::Result<Outcome> {
    let output = format_bench(settings)?;
    let (head, rates) = format_bench_line(output, label)?;
    let (rate, ratio) = rates.split_once(", ").unwrap_or((rates, ""));
    let generated = output
        .lines()
        .find_map(|line| line.strip_prefix("generated"))
        .map(|rest| rest.split(" in ").next().unwrap_or(rest).trim())
        .unwrap_or("");
    Ok(Outcome::Row {
        result: rate.to_owned(),
        ratio: ratio.to_owned(),
        detail: format!(
            "{head}, best of 3; --size {}: {generated}",
            settings.parse_size
        ),
    })
}

fn parse_text(settings: &Settings) -> anyhow::Result<Outcome> {
    parse_row(settings, "text parse")
}

fn parse_binary(settings: &Settings) -> anyhow::Result<Outcome> {
    parse_row(settings, "binary parse")
}
