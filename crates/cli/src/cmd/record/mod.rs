//! `mmiotrace record -- PROGRAM`: run a program with the runtime preloaded and
//! write the trace of its accesses to traced mappings.

mod devices;
pub(crate) mod drain;
mod follow;
mod hooks;
pub(crate) mod marks;
pub(crate) mod patch_sites;
mod patterns;
mod preflight;
pub(crate) mod runtime_lib;

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use mmiotrace_shm::{
    Config, ENV_SHM_FD, ENV_SHM_PATH, MAX_RING_ENTRIES, MAX_SLOTS, MIN_RING_ENTRIES,
    RecorderLiveness, Shm, StopReason,
};
use mmiotrace_trace::{BinaryWriter, Event, EventWrite, TextWriter, Version};

use super::progress::{LiveCounts, LiveLine};
use drain::{Drainer, Summary};
use marks::MarkFifo;

/// How long the recorder's loop lets records pile up after a pump that
/// found only a few (see the loop in [`Cmd::run`]).
const PILE_UP: Duration = Duration::from_micros(50);

/// The recorder's longest idle sleep, per entry a ring holds (see the
/// loop in [`Cmd::run`]).
const IDLE_PER_ENTRY: Duration = Duration::from_nanos(7);

/// Environment variable with the extra `--trace` globs, one per line.
const ENV_TRACE_GLOBS: &str = "MMIOTRACE_TRACE";

/// Environment variable set by `--no-follow`: the recorder's pid, so that the
/// runtime can tell the recorder's own child (traced) from its descendants.
const ENV_NO_FOLLOW: &str = "MMIOTRACE_NO_FOLLOW";

/// Environment variable with the `--mode` (`alias` or `single-step`).
const ENV_MODE: &str = "MMIOTRACE_MODE";
/// Environment variable of `--patch`/`--no-patch` (`on` or `off`).
const ENV_PATCH: &str = "MMIOTRACE_PATCH";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The kernel's mmiotrace text log, with mmiotrace's extensions (docs/FORMAT.md).
    Text,
    /// mmiotrace's compact binary format; `mmiotrace convert` turns it into text.
    Binary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// mmiotrace's design: the traced mapping is never made accessible; each
    /// access is performed on a private alias. Loses nothing, with any
    /// number of threads.
    Alias,
    /// COMPARISON ONLY, not for real use: the Linux kernel's kmmio design.
    /// A fault makes the page accessible, the instruction is single-stepped
    /// on it, and the page is made inaccessible again. The page state is
    /// shared by all threads, so other threads' accesses while it is
    /// accessible are NOT recorded (see docs/ARCHITECTURE.md).
    SingleStep,
}

impl Mode {
    fn env_value(self) -> &'static str {
        match self {
            Mode::Alias => "alias",
            Mode::SingleStep => "single-step",
        }
    }
}

/// Run PROGRAM with the tracing runtime preloaded and record every access it
/// makes to memory-mapped device registers.
///
/// Mappings of device-like files are traced by default: /dev/mem,
/// /sys/bus/pci/devices/*/resource*, /dev/uio*, VFIO device fds,
/// /dev/nvidia* and /dev/dri/*. Only MAP_SHARED mappings are traced.
/// Statically linked and setuid programs ignore LD_PRELOAD and cannot be
/// traced: record refuses to run them (see --no-preload-check).
///
/// Processes PROGRAM forks, execs or spawns are traced too (each event names
/// its process), and recording goes on until the last of them ends (see
/// --linger, --no-follow).
///
/// mmiotrace exits with PROGRAM's exit status, or 128+N if PROGRAM was killed
/// by signal N. Ctrl-C goes to PROGRAM; the trace is completed either way.
///
/// If mmiotrace itself is killed, or cannot write the trace, PROGRAM never
/// waits for it: it goes on untraced, and one line on its standard error
/// says that tracing stopped and why.
///
/// When PROGRAM logs faster than mmiotrace writes the trace (tens of
/// millions of accesses a second from patched sites), PROGRAM waits on a
/// full ring; with --spool, mmiotrace sets the records aside instead and
/// writes them after.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  mmiotrace record ./my-driver --probe\n  mmiotrace record -- ./my-driver --probe\n  mmiotrace record --trace '/dev/shm/*' -o run.trace -- ./sim-test\n  mmiotrace record --format binary -o run.mtb -- busybox devmem 0xfed00000 32"
)]
pub struct Cmd {
    /// Where to write the trace (`-` for standard output; PROGRAM's own
    /// standard output then goes to standard error, so that it cannot mix
    /// with the trace). An existing FILE is replaced only once PROGRAM has
    /// started. If writing fails (a full disk, a closed pipe), what was
    /// written stays, PROGRAM runs on untraced, and mmiotrace exits with
    /// status 1 once it ends.
    #[arg(short, long, value_name = "FILE", default_value = "mmiotrace.trace")]
    output: PathBuf,

    /// Trace format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,

    /// How accesses are caught. `single-step` reproduces the kernel's
    /// design to measure it against mmiotrace's (`bench/run` does); it
    /// loses accesses in multi-threaded programs and is not for real use.
    #[arg(long, value_enum, default_value_t = Mode::Alias)]
    mode: Mode,

    /// Patch hot access sites (the default): after 4 faults at one
    /// instruction (a `mov`, `movzx`/`movsx`, `cmp`, `test`, an ALU
    /// operation on memory, or a plain vector move of 16, 32 or 64 bytes;
    /// 2 bytes or more), rewrite it in the program's code (made private to
    /// this process) to jump to a trampoline that performs and logs the
    /// access with no exception (docs/ARCHITECTURE.md, "Patched sites").
    /// Never in `--mode single-step`.
    #[arg(long, conflicts_with = "no_patch")]
    patch: bool,

    /// Never patch the program's code (JIT or self-checksumming code, or
    /// to debug the program with breakpoints on its device accesses):
    /// every traced access takes one exception.
    #[arg(long)]
    no_patch: bool,

    /// Also trace mappings of files whose real path matches GLOB (repeatable),
    /// e.g. --trace '/dev/shm/*'. A relative GLOB is taken from the working
    /// directory, and symlinks in its leading directories are resolved;
    /// `*` stays within one path component, `**` crosses them. A GLOB that
    /// matched no mapping is named in a warning at the end.
    #[arg(long = "trace", value_name = "GLOB")]
    trace: Vec<String>,

    /// Create (if needed) and read the FIFO at PATH: each line written to it
    /// becomes a MARK in the trace, like the kernel's trace_marker. Empty
    /// lines are ignored; a last line without a newline is kept; text
    /// beyond 4096 bytes is cut, ending with `…[truncated N bytes]`.
    #[arg(long, value_name = "PATH")]
    mark_fifo: Option<PathBuf>,

    /// When a thread's ring is full, drop events (counted, and written into
    /// the trace as lost-event records) instead of making the thread wait.
    #[arg(long)]
    drop: bool,

    /// When PROGRAM logs faster than mmiotrace writes the trace, set the
    /// records aside as they are, up to 1 GiB, in an unlinked file in
    /// $TMPDIR (or /tmp), and write them once PROGRAM pauses or ends:
    /// PROGRAM neither waits nor is slowed by the recorder's work (a
    /// patched access then costs about 13 ns on the project's VM instead
    /// of about 22), and the trace is complete later. Costs more in all:
    /// without it, mmiotrace writes more events a second over a whole run
    /// of a program that never pauses. Experimental: see
    /// docs/ARCHITECTURE.md, "The spool", for an open problem.
    #[arg(long)]
    spool: bool,

    /// Entries of 32 bytes in each thread's ring: 512 to 2097152, rounded
    /// up to a power of two. An access that a patched site logs takes one,
    /// any other event two or more. The default, 2 MiB of ring, holds 2 ms
    /// of a program logging 30 M accesses/s and still fits a core's L2
    /// cache
    #[arg(long, value_name = "N", default_value_t = 65536,
          value_parser = clap::value_parser!(u32).range(i64::from(MIN_RING_ENTRIES)..=i64::from(MAX_RING_ENTRIES)))]
    ring_size: u32,

    /// Rings in the shared-memory file, 1 to 1024: threads that log at the
    /// same time (more wait for a ring to free).
    #[arg(long, value_name = "N", default_value_t = 128,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_SLOTS)))]
    rings: u32,

    /// Do not print the summary when PROGRAM ends, nor the live line
    /// (events, events/s, maps, threads, processes) that a terminal shows
    /// while recording.
    #[arg(short, long)]
    quiet: bool,

    /// Trace only PROGRAM's own process, through its own execs. Children it
    /// forks stop logging at the fork (the mappings they inherited keep
    /// working), and programs it or they start are not traced.
    #[arg(long)]
    no_follow: bool,

    /// After PROGRAM exits, keep recording while processes it started
    /// (forked, exec'd, spawned) are still running, for at most SECONDS;
    /// then name them and stop. Ctrl-C stops waiting at once.
    /// SECONDS is a finite number, 0 or more.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0, value_parser = parse_linger)]
    linger: f64,

    /// Run PROGRAM even if it is statically linked, set-user-ID or
    /// set-group-ID, which LD_PRELOAD cannot reach (for a launcher whose
    /// children should be traced). Without it, record refuses such a program.
    #[arg(long)]
    no_preload_check: bool,

    /// Change what the program sees: the rules in FILE (TOML, see
    /// docs/HOOKS.md) return fixed values or sequences, set, clear or flip
    /// bits, drop or replace writes, delay accesses, make a device vanish
    /// (reads all ones) or send SIGBUS. Hooked accesses are marked in the
    /// trace (`hook=RULE dev=VALUE`). A bad rule is an error naming
    /// FILE:LINE:COL before PROGRAM starts.
    #[arg(long, value_name = "FILE", help_heading = "Hooks")]
    hook: Option<PathBuf>,

    /// A plugin (a shared library with the C ABI of
    /// include/mmiotrace_hook.h) called for every access not already
    /// taken by a --hook rule; it may change the value or drop the access.
    #[arg(
        long,
        value_name = "LIB.so",
        help_heading = "Hooks",
        conflicts_with = "model"
    )]
    hook_lib: Option<PathBuf>,

    /// Like --hook-lib, but no device is behind traced mappings: the
    /// plugin is the device model. What it passes goes to anonymous memory,
    /// not to the mapped file.
    #[arg(long, value_name = "LIB.so", help_heading = "Hooks")]
    model: Option<PathBuf>,

    /// A register database (.toml, .svd, rules-ng-ng .xml) whose names
    /// rules may use (`register = "STATUS"`). Repeatable.
    #[arg(long = "regs", value_name = "FILE", help_heading = "Hooks")]
    regs: Vec<PathBuf>,

    /// The program to run, and its arguments: everything from the first
    /// argument that is not one of record's options on is PROGRAM's, as
    /// with perf, strace and valgrind. `--` before PROGRAM works too (and
    /// is needed when PROGRAM's name starts with `-`).
    #[arg(required = true, trailing_var_arg = true, value_name = "PROGRAM")]
    program: Vec<OsString>,
}

/// `--linger`: a finite number of seconds, 0 or more.
fn parse_linger(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs)
            if secs.is_finite() && secs >= 0.0 && Duration::try_from_secs_f64(secs).is_ok() =>
        {
            Ok(secs)
        }
        _ => Err(format!(
            "\"{text}\" is not a number of seconds (a finite number, 0 or more)"
        )),
    }
}

/// The shared-memory file, removed when recording ends.
struct ShmFile {
    path: PathBuf,
    shm: Shm,
    /// A descriptor of the file without close-on-exec, which the program
    /// inherits (see `ENV_SHM_FD`), locked shared (see `follow`).
    inherited: Option<follow::Inherited>,
}

/// The free bytes of the file system that holds `dir`, if it can be asked.
fn free_bytes(dir: &Path) -> Option<u64> {
    let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: zeroed is a valid statvfs; statvfs writes into it.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a valid out-pointer.
    let ret = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    (ret == 0).then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// Of the directories (each with its free bytes, `None` for one that is
/// not there), the first with room for `len` bytes; else the first that is
/// there, and false. The file is sparse: a ring's pages are taken as its
/// thread first fills them, and one that finds its file system full would
/// kill the program with SIGBUS, so the whole file must fit.
fn pick_dir(candidates: &[(PathBuf, Option<u64>)], len: u64) -> Option<(PathBuf, bool)> {
    candidates
        .iter()
        .find(|(_, free)| free.is_some_and(|free| free >= len))
        .map(|(dir, _)| (dir.clone(), true))
        .or_else(|| {
            candidates
                .iter()
                .find(|(_, free)| free.is_some())
                .map(|(dir, _)| (dir.clone(), false))
        })
}

impl ShmFile {
    fn create(config: &Config) -> Result<ShmFile> {
        let len = config.total_size();
        let candidates = [PathBuf::from("/dev/shm"), std::env::temp_dir()].map(|dir| {
            let free = dir.is_dir().then(|| free_bytes(&dir)).flatten();
            (dir, free)
        });
        let (dir, fits) =
            pick_dir(&candidates, len as u64).unwrap_or_else(|| (std::env::temp_dir(), false));
        if !fits {
            eprintln!(
                "mmiotrace: warning: {} has {} MiB free, fewer than the {} MiB the rings take once all are used (--rings x --ring-size x 32 bytes): a thread whose ring finds it full would be killed; use fewer or smaller rings",
                dir.display(),
                free_bytes(&dir).unwrap_or(0) >> 20,
                (len as u64).div_ceil(1 << 20)
            );
        }
        let path = dir.join(format!(
            "mmiotrace-{}-{}",
            std::process::id(),
            mmiotrace_shm::now_ns()
        ));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating the shared-memory file {}", path.display()))?;
        // From here on, every failure removes the file.
        let removal = RemoveOnDrop(path.clone());
        file.set_len(len as u64)
            .with_context(|| format!("sizing {} to {len} bytes", path.display()))?;
        // SAFETY: a fresh shared mapping of a file we just created and sized;
        // nothing truncates it while the recorder runs.
        let mut mapping = unsafe { memmap2::MmapOptions::new().len(len).map_mut(&file) }
            .with_context(|| format!("mapping {}", path.display()))?;
        let base = mapping.as_mut_ptr();
        // The rings are read through `base` until the recorder exits: the
        // mapping is never unmapped.
        std::mem::forget(mapping);
        // SAFETY: `base` maps `len` zeroed bytes that stay mapped for the rest
        // of the process (never unmapped), and nothing else uses them yet.
        let shm = unsafe { Shm::init(base, len, config, path.as_os_str().as_bytes()) }
            .map_err(|err| anyhow::anyhow!("{err}"))?;
        let inherited = Some(follow::Inherited::open(&path)?);
        // ShmFile's own Drop removes it from now on.
        std::mem::forget(removal);
        Ok(ShmFile {
            path,
            shm,
            inherited,
        })
    }
}

/// Removes a path when dropped (unless forgotten).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Drop for ShmFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Where the trace goes, opened before PROGRAM starts (so that an output
/// that cannot be written is an error before anything runs) but emptied
/// only once PROGRAM has started (so that a command that cannot start
/// leaves the previous trace alone).
pub(crate) struct TraceOutput {
    path: PathBuf,
    /// `None` for standard output.
    file: Option<File>,
    /// The file did not exist: remove it if PROGRAM cannot start.
    created: bool,
}

impl TraceOutput {
    pub(crate) fn open(path: &Path) -> Result<TraceOutput> {
        if path == Path::new("-") {
            return Ok(TraceOutput {
                path: path.to_owned(),
                file: None,
                created: false,
            });
        }
        let existed = std::fs::symlink_metadata(path).is_ok();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("creating the trace file {}", path.display()))?;
        Ok(TraceOutput {
            path: path.to_owned(),
            file: Some(file),
            created: !existed,
        })
    }

    fn is_stdout(&self) -> bool {
        self.file.is_none()
    }

    /// PROGRAM could not start: the output is as it was.
    pub(crate) fn abandon(self) {
        if self.created {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// PROGRAM started: empties the file and returns the writer.
    pub(crate) fn start(self, format: Format) -> Result<Sink> {
        let name = sink_name(&self.path);
        let out: Box<dyn Write> = match self.file {
            None => Box::new(std::io::stdout()),
            Some(file) => {
                // A FIFO or a device (/dev/null) has nothing to empty.
                if file.metadata().is_ok_and(|meta| meta.is_file()) {
                    file.set_len(0)
                        .with_context(|| format!("emptying the trace file {name}"))?;
                }
                Box::new(file)
            }
        };
        // The writers collect their output in blocks of their own.
        let writer: Box<dyn EventWrite> = match format {
            Format::Text => Box::new(TextWriter::new(out)),
            Format::Binary => Box::new(
                BinaryWriter::new(out)
                    .with_context(|| format!("cannot write the trace to {name}"))?,
            ),
        };
        Ok(Sink { writer, name })
    }
}

/// Where the events go: the trace crate's writer for the chosen format.
pub(crate) struct Sink {
    writer: Box<dyn EventWrite>,
    /// The file's path, or "standard output", for messages.
    name: String,
}

impl Sink {
    pub(crate) fn write(&mut self, event: &Event) -> Result<()> {
        self.writer
            .write_event(event)
            .with_context(|| format!("cannot write the trace to {}", self.name))
    }

    pub(crate) fn finish(&mut self) -> Result<()> {
        self.writer
            .flush()
            .with_context(|| format!("cannot write the trace to {}", self.name))
    }
}

/// Catches the signals the recorder forwards: the returned number is the
/// last one received, 0 for none. The handlers are reset to the default in
/// exec'd children.
fn install_signal_forwarding() -> Result<Arc<AtomicUsize>> {
    let pending = Arc::new(AtomicUsize::new(0));
    for signal in [libc::SIGINT, libc::SIGQUIT, libc::SIGTERM, libc::SIGHUP] {
        signal_hook::flag::register_usize(signal, Arc::clone(&pending), signal as usize)
            .with_context(|| format!("catching signal {signal}"))?;
    }
    Ok(pending)
}

impl Cmd {
    pub fn run(self) -> Result<ExitCode> {
        // A trace (or the runtime library) that outgrows the file size
        // limit (`ulimit -f`) is a write error that names the file, not a
        // core dump.
        // SAFETY: SIG_IGN needs no handler; PROGRAM gets SIG_DFL back in
        // pre_exec.
        unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
        let config = Config {
            slot_count: self.rings,
            ring_entries: self.ring_size,
            drop_when_full: self.drop,
        };
        config.check().map_err(|err| anyhow::anyhow!("{err}"))?;
        // Nothing is touched before we know that PROGRAM can start.
        preflight::startable(&self.program[0])?;
        if !self.no_preload_check {
            preflight::check(&self.program[0])?;
        }
        let regs = self
            .regs
            .iter()
            .map(|path| mmiotrace_regdb::load(path))
            .collect::<Result<Vec<_>, _>>()?;
        let hooks = hooks::load(
            self.hook.as_deref(),
            self.hook_lib.as_deref(),
            self.model.as_deref(),
            &regs,
        )?;
        let hook_file = match &hooks {
            Some(hooks) => Some(hooks::HookFile::create(&hooks.table)?),
            None => None,
        };
        let output = TraceOutput::open(&self.output)?;
        let mut shm_file = ShmFile::create(&config)?;
        // The runtimes learn from the kernel when this process ends, however
        // it ends, and then stop waiting for it (see RecorderLiveness).
        let _liveness = RecorderLiveness::announce(shm_file.shm)
            .map_err(|err| {
                eprintln!(
                    "mmiotrace: warning: cannot announce the recorder's liveness ({err}): if the recorder is killed, the program may wait for it"
                );
            })
            .ok();
        let cwd = std::env::current_dir().context("finding the working directory")?;
        let patterns: Vec<patterns::TracePattern> = self
            .trace
            .iter()
            .map(|given| patterns::TracePattern::new(given, &cwd))
            .collect();
        let followers = follow::Followers::new(&shm_file.path)?;
        let runtime = runtime_lib::runtime_path()?;
        let mut marks = match &self.mark_fifo {
            Some(path) => Some(MarkFifo::open(path)?),
            None => None,
        };

        let mut preload = runtime.as_os_str().to_owned();
        if let Some(existing) = std::env::var_os("LD_PRELOAD").filter(|p| !p.is_empty()) {
            preload.push(":");
            preload.push(existing);
        }
        let mut command = Command::new(&self.program[0]);
        command
            .args(&self.program[1..])
            .env("LD_PRELOAD", preload)
            .env(ENV_SHM_PATH, &shm_file.path)
            .env(
                ENV_SHM_FD,
                shm_file
                    .inherited
                    .as_ref()
                    .map_or(-1, follow::Inherited::raw)
                    .to_string(),
            )
            .env(
                ENV_TRACE_GLOBS,
                patterns
                    .iter()
                    .map(|p| p.resolved.as_str())
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
            .env(ENV_MODE, self.mode.env_value());
        if self.patch || self.no_patch {
            let on = self.patch && self.mode != Mode::SingleStep;
            command.env(ENV_PATCH, if on { "on" } else { "off" });
        }
        if self.no_follow {
            command.env(ENV_NO_FOLLOW, std::process::id().to_string());
        }
        if let Some(hook_file) = &hook_file {
            command.env(mmiotrace_shm::hooks::ENV_HOOKS, &hook_file.path);
        }
        // SAFETY: the closure only calls signal(2), which is
        // async-signal-safe, between fork and exec.
        unsafe {
            command.pre_exec(|| {
                // The recorder ignores SIGXFSZ (see install_signal_forwarding);
                // PROGRAM gets the default back, as untraced.
                libc::signal(libc::SIGXFSZ, libc::SIG_DFL);
                Ok(())
            });
        }
        if output.is_stdout() {
            // The trace owns standard output: PROGRAM's goes to standard error.
            let stderr = std::io::stderr()
                .as_fd()
                .try_clone_to_owned()
                .context("duplicating standard error for the program")?;
            command.stdout(Stdio::from(stderr));
        }
        // Made before PROGRAM starts: it takes the first calibration pair
        // of the clock that converts TSC stamps.
        let mut drainer = Drainer::new(shm_file.shm);
        if self.spool {
            drainer.set_spool_limit(drain::SPOOL_LIMIT);
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(err) => {
                output.abandon();
                return Err(err).with_context(|| {
                    format!("starting {}", Path::new(&self.program[0]).display())
                });
            }
        };
        // From now on only traced processes hold the shared lock.
        shm_file.inherited = None;
        let pending_signal = install_signal_forwarding()?;
        let linger = Duration::try_from_secs_f64(self.linger).unwrap_or(Duration::MAX);
        let mut ended: Option<(ExitStatus, Instant)> = None;

        let mut sink = output.start(self.format)?;
        for text in hooks.iter().flat_map(|hooks| hooks::describe(&hooks.rules)) {
            drainer.add_mark(text);
        }
        // The first error writing the trace: from then on nothing is drained
        // (the runtimes stop logging), and the recorder only waits for PROGRAM.
        let mut failure = sink
            .write(&Event::Version(Version {
                version: "20070824".to_owned(),
            }))
            .err();
        let mut idle = Duration::from_micros(50);
        // The longest idle sleep: a program that starts logging at 70 M
        // events/s (patched sites) while the recorder sleeps must not fill
        // its ring before the recorder looks again (half a millisecond for
        // a default ring, which holds one of that; 2 ms for rings of
        // 262,144 entries and more).
        let idle_max = (IDLE_PER_ENTRY * shm_file.shm.ring_entries() as u32)
            .clamp(Duration::from_micros(50), Duration::from_millis(2));
        // A pump that took fewer records than this is close behind the
        // producers: the loop lets records pile up before the next.
        let few_records = shm_file.shm.ring_entries() / 8;
        let mut live = LiveLine::new(self.quiet);
        let status = loop {
            let mut pumped = drain::Pumped::default();
            if failure.is_none() {
                if let Some(marks) = &marks {
                    while let Some(text) = marks.try_next() {
                        drainer.add_mark(text);
                    }
                }
                match drainer.pump(|event| sink.write(event)) {
                    Ok(done) => pumped = done,
                    Err(err) => failure = Some(err),
                }
            }
            if live.due() {
                let summary = drainer.summary();
                live.update(LiveCounts {
                    events: summary.by_kind.values().sum(),
                    maps: summary.maps.len(),
                    threads: summary.threads.len(),
                    processes: summary.processes.len(),
                });
            }
            if failure.is_some() {
                // Runtimes stop logging and waiting at once (Shm::push).
                shm_file.shm.stop(StopReason::WriteFailed);
            }
            let signal = pending_signal.swap(0, Ordering::Relaxed) as libc::c_int;
            // SIGINT and SIGQUIT from a terminal reach the whole process
            // group, PROGRAM included; forwarding them would deliver twice.
            // Once PROGRAM is reaped its pid may be reused: no forwarding.
            if ended.is_none() && (signal == libc::SIGTERM || signal == libc::SIGHUP) {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(child.id() as libc::pid_t, signal) };
            }
            if ended.is_none() {
                if let Some(status) = child.try_wait().context("waiting for the program")? {
                    ended = Some((status, Instant::now()));
                }
            }
            if let Some((status, since)) = ended {
                // Processes PROGRAM started may still log (see `follow`).
                if self.no_follow || failure.is_some() || !followers.any_alive() {
                    break status;
                }
                if since.elapsed() >= linger || signal != 0 {
                    let holders = followers.holders();
                    eprintln!(
                        "mmiotrace: warning: stopped recording {:.1} s after the program ended, while processes it started were still running{}; what they do from now on is not traced (--linger sets how long to wait)",
                        since.elapsed().as_secs_f64(),
                        if holders.is_empty() {
                            String::new()
                        } else {
                            format!(
                                " (pid {})",
                                holders
                                    .iter()
                                    .map(u32::to_string)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        }
                    );
                    break status;
                }
            }
            let taken = pumped.taken;
            if taken == 0 && !pumped.held {
                std::thread::sleep(idle);
                idle = (idle * 2).min(idle_max);
            } else {
                idle = Duration::from_micros(50);
                if taken < few_records {
                    // Draining right behind a producer costs both sides
                    // dearly when they run on different cores: each record's
                    // cache line (and write_pos's) moves between the cores
                    // while the producer is still writing next to it, and
                    // the producer's stores stall on lines the recorder's
                    // prefetchers took. Letting records pile up for a moment
                    // (about 0.1 ms, timer slack included; a default ring
                    // holds 1 ms of 30 M events/s) makes the recorder read
                    // lines the producer is done with, in long runs: half
                    // the recorder's CPU per event and twice the producer's
                    // rate on the 2-core VM (docs/BENCHMARKS.md, "Recorder
                    // throughput").
                    std::thread::sleep(PILE_UP);
                }
            }
        };
        live.clear();
        if let Some(failure) = failure {
            // What was written stays: a trace that ends at the failure (its
            // last line or record may be cut off, which readers report).
            drop(sink);
            return Err(failure);
        }
        // Processes still running will never be drained: they must not wait
        // on a full ring (shm::Shm::close).
        shm_file.shm.close();
        while drainer.poll() > 0 {
            drainer.emit(false, |event| sink.write(event))?;
        }
        if let Some(marks) = &mut marks {
            for text in marks.finish() {
                drainer.add_mark(text);
            }
        }
        drainer.emit(true, |event| sink.write(event))?;
        drainer.summary().slot_waits = shm_file.shm.slot_waits();
        sink.finish()?;
        if let Some(marks) = &marks {
            marks.remove_if_created();
        }
        for pattern in &patterns {
            if !drainer
                .summary()
                .maps
                .values()
                .any(|map| pattern.matches(&map.path))
            {
                let resolved = if pattern.resolved == pattern.given {
                    String::new()
                } else {
                    format!(" (as {})", pattern.resolved)
                };
                eprintln!(
                    "mmiotrace: warning: --trace {}{resolved} matched no mapping: nothing the program mapped has that real path",
                    pattern.given
                );
            }
        }
        if !self.quiet {
            print_summary(drainer.summary(), &sink_name(&self.output), status);
            if let (Some(hooks), Some(file)) = (&hooks, &hook_file) {
                hooks::print_summary(&hooks.rules, file, drainer.summary().hooked);
            }
            if self.mode == Mode::SingleStep {
                eprintln!(
                    "  mode: single-step, the kernel's design (comparison only): accesses made by other threads while a page was disarmed are NOT in the trace"
                );
            }
        }
        Ok(exit_code(status))
    }
}

/// How messages name the trace: its path, or "standard output" for `-`.
pub(crate) fn sink_name(path: &Path) -> String {
    if path == Path::new("-") {
        "standard output".to_owned()
    } else {
        path.display().to_string()
    }
}

/// PROGRAM's exit status, or 128+N when signal N killed it (as strace does).
pub(crate) fn exit_code(status: ExitStatus) -> ExitCode {
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(code as u8),
        (None, Some(signal)) => ExitCode::from((128 + signal) as u8),
        (None, None) => ExitCode::FAILURE,
    }
}

fn print_summary(summary: &Summary, output: &str, status: ExitStatus) {
    let mut err = std::io::stderr().lock();
    let ended = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "ended".to_owned(),
    };
    let _ = writeln!(err, "mmiotrace: program {ended}; trace written to {output}");
    let _ = writeln!(err, "  maps: {}", summary.maps.len());
    for (id, map) in summary.maps.iter().take(8) {
        let _ = writeln!(
            err,
            "    {id:>3}  {:#014x} +{:#x}  {}{}",
            map.phys,
            map.len,
            map.path,
            if map.unmapped {
                ""
            } else {
                "  (still mapped at exit)"
            }
        );
    }
    if summary.maps.len() > 8 {
        let _ = writeln!(err, "    ... and {} more", summary.maps.len() - 8);
    }
    let _ = writeln!(err, "  events: {}", kinds_line(&summary.by_kind));
    let _ = writeln!(
        err,
        "  threads: {}  processes: {}",
        summary.threads.len(),
        summary.processes.len()
    );
    let _ = writeln!(
        err,
        "  lost events: {}  (rings full, program waited: {} times)",
        summary.lost, summary.ring_full_waits
    );
    if summary.spooled > 0 {
        let _ = writeln!(
            err,
            "  recorder behind the program: {:.1} MiB of records set aside while it logged (at most {:.1} MiB at once), written after",
            summary.spooled as f64 / f64::from(1 << 20),
            summary.spooled_peak as f64 / f64::from(1 << 20)
        );
    }
    if let Some(why) = &summary.spool_error {
        let _ = writeln!(
            err,
            "  the recorder could not set records aside ({why}): the program waited for it instead"
        );
    }
    if summary.stalled > 0 || summary.late > 0 {
        let _ = writeln!(
            err,
            "  rings given up while stamping: {} (a process died while logging), late records: {}",
            summary.stalled, summary.late
        );
    }
    if summary.slot_waits > 0 {
        let _ = writeln!(
            err,
            "  threads that waited for a free ring slot: {} (--rings sets how many threads log at once)",
            summary.slot_waits
        );
    }
    if summary.orphans > 0 {
        let _ = writeln!(err, "  accesses to unknown maps: {}", summary.orphans);
    }
    for line in patch_sites::lines(&summary.patch_sites) {
        let _ = writeln!(err, "{line}");
    }
}

/// A summary's events by kind: `MAP 1, MARK 5, R 144`, or `none`.
pub(crate) fn kinds_line(by_kind: &std::collections::BTreeMap<&'static str, u64>) -> String {
    if by_kind.is_empty() {
        return "none".to_owned();
    }
    let kinds: Vec<String> = by_kind
        .iter()
        .map(|(kind, count)| format!("{kind} {count}"))
        .collect();
    kinds.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_memory_file_goes_where_it_fits() {
        let shm = PathBuf::from("/dev/shm");
        let tmp = PathBuf::from("/tmp");
        let mib = 1u64 << 20;
        // /dev/shm first when it holds the whole file.
        assert_eq!(
            pick_dir(
                &[(shm.clone(), Some(300 * mib)), (tmp.clone(), Some(9 * mib))],
                257 * mib
            ),
            Some((shm.clone(), true))
        );
        // A small /dev/shm (a container's 64 MiB): the temporary directory.
        assert_eq!(
            pick_dir(
                &[
                    (shm.clone(), Some(64 * mib)),
                    (tmp.clone(), Some(900 * mib))
                ],
                257 * mib
            ),
            Some((tmp.clone(), true))
        );
        // No /dev/shm at all.
        assert_eq!(
            pick_dir(
                &[(shm.clone(), None), (tmp.clone(), Some(900 * mib))],
                257 * mib
            ),
            Some((tmp.clone(), true))
        );
        // Room nowhere: the first that is there, said not to fit.
        assert_eq!(
            pick_dir(
                &[(shm.clone(), Some(64 * mib)), (tmp.clone(), Some(9 * mib))],
                257 * mib
            ),
            Some((shm, false))
        );
        assert_eq!(pick_dir(&[(tmp, None)], 1), None);
    }

    #[test]
    fn free_bytes_of_a_directory_that_is_there_and_one_that_is_not() {
        assert!(free_bytes(&std::env::temp_dir()).is_some_and(|free| free > 0));
        assert_eq!(free_bytes(Path::new("/nonexistent/mmiotrace")), None);
    }
}
