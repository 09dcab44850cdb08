//! `mmiotrace vm -- qemu-system-x86_64 ARGS`: trace a guest's drivers,
//! kernel ones included, from QEMU.
//!
//! QEMU writes one line per device access to its log (its own trace
//! events, with the TCG plugin's pc lines between them); the log is a FIFO
//! that this command reads while QEMU runs, turning it into the same trace
//! `record` writes ([`convert`]). QEMU waits when the FIFO is full, so
//! nothing is lost however fast the guest is. docs/VM.md has the details.

pub mod convert;

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Args;
use mmiotrace_trace::Event;
use mmiotrace_trace::qemu_log::QemuLogReader;

use super::record::marks::MarkFifo;
use super::record::runtime_lib::private_cache_file;
use super::record::{Format, Sink, TraceOutput, exit_code, kinds_line, sink_name};
use convert::{Converter, Counts, DeviceFilter, NO_VCPU};

static PLUGIN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libmmiotrace_qemu_plugin.so"));

/// Trace events this command turns on in QEMU.
const TRACE_EVENTS: [&str; 6] = [
    "memory_region_ops_read",
    "memory_region_ops_write",
    "pci_update_mappings_add",
    "pci_update_mappings_del",
    "pci_cfg_read",
    "pci_cfg_write",
];

/// Parse errors shown before the rest are only counted.
const SHOWN_ERRORS: u64 = 5;

/// Run QEMU and record every access its guest makes to PCI devices'
/// registers: kernel drivers, firmware and user-space drivers alike, on
/// every vCPU at once.
///
/// QEMU_COMMAND is the whole QEMU command line (program and arguments).
/// mmiotrace adds QEMU's trace events for device accesses, PCI BAR
/// placement and configuration space, its log (a FIFO mmiotrace reads
/// while QEMU runs; QEMU waits for mmiotrace, so nothing is lost), a TCG
/// plugin that gives each access the guest pc of its instruction, and an
/// isa-debugcon device for markers. QEMU_COMMAND may not set -D; a -d it
/// sets is kept, with `plugin` added.
///
/// In the trace: each BAR the guest places is a MAP named by the guest's
/// sysfs path of that BAR, after a PCIDEV line (vendor:device, BARs); each
/// access is one R/W line with the guest-physical address, the width and
/// value the device model got, the host time, the guest pc (0 where none
/// is known: under KVM, with --no-pc, for DMA) and the vCPU index in the
/// pid field (4294967295: no vCPU). Markers: each line the guest writes to
/// the debug port (`printf 'probe\n' | dd of=/dev/port bs=1 seek=233`) or
/// that is written to --mark-fifo.
///
/// mmiotrace exits with QEMU's exit status (128+N if signal N killed it).
/// SIGTERM and SIGHUP are passed on to QEMU; Ctrl-C reaches QEMU from the
/// terminal, and mmiotrace goes on reading until QEMU has ended.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  mmiotrace vm -o boot.trace -- qemu-system-x86_64 -accel tcg,thread=multi -smp 4 -m 2G -kernel bzImage -append console=ttyS0 -nographic -device e1000\n  mmiotrace vm --device e1000 --port-io -o e1000.trace -- qemu-system-x86_64 ...\n  mmiotrace vm --device 01:00.0 -- qemu-system-x86_64 ... -device vfio-pci,host=0000:01:00.0,x-no-mmap=on"
)]
pub struct Cmd {
    /// Where to write the trace (`-` for standard output).
    #[arg(short, long, value_name = "FILE", default_value = "mmiotrace.trace")]
    output: PathBuf,

    /// Trace format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,

    /// Record only these PCI functions (repeatable): QEMU's device type, a
    /// glob (`e1000`, `nvme`, `virtio-*`, `vfio-pci`), or a guest PCI
    /// address (`00:04.0`, `0000:00:04.0`). Default: every PCI function.
    #[arg(long = "device", value_name = "FILTER", value_parser = DeviceFilter::parse)]
    devices: Vec<DeviceFilter>,

    /// Also record accesses to port I/O BARs (`in`/`out` instructions):
    /// their MAP's address is the first port, and the PCIDEV line marks the
    /// BAR with bit 0, as Linux does.
    #[arg(long)]
    port_io: bool,

    /// Do not load the TCG plugin that finds each access's pc (QEMU then
    /// runs a little faster; every pc is 0). Under KVM there is no pc
    /// either way.
    #[arg(long)]
    no_pc: bool,

    /// The I/O port of the isa-debugcon device mmiotrace adds for markers
    /// (0 to 0xffff), or `none` to add none. Not added when QEMU_COMMAND
    /// has its own isa-debugcon: writes to that one are markers then.
    #[arg(long, value_name = "PORT", default_value = "0xe9", value_parser = parse_port)]
    mark_port: MarkPort,

    /// Create (if needed) and read the FIFO at PATH: each line written to
    /// it becomes a MARK, placed before the device accesses QEMU logs
    /// after it arrives.
    #[arg(long, value_name = "PATH")]
    mark_fifo: Option<PathBuf>,

    /// Also keep QEMU's whole log, as QEMU wrote it, in FILE (for
    /// `mmiotrace import qemu-log`, or to read QEMU's other trace events).
    #[arg(long, value_name = "FILE")]
    keep_log: Option<PathBuf>,

    /// Do not print the summary when QEMU ends.
    #[arg(short, long)]
    quiet: bool,

    /// QEMU's command line: the program, then its arguments.
    #[arg(required = true, last = true, value_name = "QEMU_COMMAND")]
    qemu: Vec<OsString>,
}

#[derive(Debug, Clone, Copy)]
pub enum MarkPort {
    Port(u16),
    None,
}

fn parse_port(text: &str) -> Result<MarkPort, String> {
    if text == "none" {
        return Ok(MarkPort::None);
    }
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u16::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed
        .map(MarkPort::Port)
        .map_err(|_| format!("{text:?} is not a port (0 to 0xffff) or `none`"))
}

/// QEMU's pid, for the signal handler that passes SIGTERM and SIGHUP on.
static QEMU_PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn pass_on(signal: libc::c_int) {
    let pid = QEMU_PID.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe; pid is QEMU's, our child.
        unsafe { libc::kill(pid, signal) };
    }
}

/// A private directory for the log FIFO, removed at the end.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        let template = std::env::temp_dir().join("mmiotrace-vm.XXXXXX");
        let mut bytes = template.as_os_str().as_bytes().to_vec();
        bytes.push(0);
        // SAFETY: a NUL-terminated, writable template, as mkdtemp requires.
        let made = unsafe { libc::mkdtemp(bytes.as_mut_ptr().cast()) };
        if made.is_null() {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("creating a directory like {}", template.display()));
        }
        bytes.pop();
        Ok(TempDir(PathBuf::from(OsStr::from_bytes(&bytes))))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn make_fifo(path: &Path) -> Result<()> {
    let name = CString::new(path.as_os_str().as_bytes()).context("a path with a NUL byte")?;
    // SAFETY: a valid C string.
    if unsafe { libc::mkfifo(name.as_ptr(), 0o600) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("creating the FIFO {}", path.display()));
    }
    Ok(())
}

/// Copies what is read from `inner` into `copy` (`--keep-log`).
struct Tee<R> {
    inner: R,
    copy: Option<(File, PathBuf)>,
    failed: Option<String>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some((file, path)) = &mut self.copy
            && let Err(err) = file.write_all(&buf[..n])
        {
            self.failed = Some(format!("cannot write {}: {err}", path.display()));
            self.copy = None;
        }
        Ok(n)
    }
}

impl Cmd {
    /// QEMU's arguments with what tracing needs.
    fn qemu_args(&self, log: &Path, plugin: Option<&Path>) -> Result<Vec<OsString>> {
        let mut args: Vec<OsString> = self.qemu[1..].to_vec();
        let mut has_debugcon = false;
        let mut log_mask = None;
        for (i, arg) in args.iter().enumerate() {
            let text = arg.to_string_lossy();
            let option = text.strip_prefix("--").map_or(&*text, |t| t).to_owned();
            if option == "-D" || option.starts_with("-D=") {
                bail!(
                    "QEMU_COMMAND sets QEMU's log file ({text}); mmiotrace vm sets it itself: use --keep-log FILE for a copy"
                );
            }
            if option == "-d" {
                log_mask = Some(i + 1);
            }
            if text.contains("isa-debugcon") {
                has_debugcon = true;
            }
        }
        if plugin.is_some() {
            match log_mask {
                Some(i) if i < args.len() => {
                    let mut mask = args[i].clone();
                    mask.push(",plugin");
                    args[i] = mask;
                }
                Some(_) => bail!("QEMU_COMMAND ends with -d and no mask"),
                None => args.extend(["-d".into(), "plugin".into()]),
            }
        }
        for event in TRACE_EVENTS {
            args.extend(["-trace".into(), event.into()]);
        }
        args.extend(["-msg".into(), "timestamp=on".into(), "-D".into()]);
        args.push(log.as_os_str().to_owned());
        if let Some(plugin) = plugin {
            args.push("-plugin".into());
            args.push(plugin.as_os_str().to_owned());
        }
        if let (MarkPort::Port(port), false) = (self.mark_port, has_debugcon) {
            args.extend([
                "-chardev".into(),
                "null,id=mmiotrace-mark".into(),
                "-device".into(),
                format!("isa-debugcon,iobase={port:#x},chardev=mmiotrace-mark").into(),
            ]);
        }
        Ok(args)
    }

    pub fn run(self) -> Result<ExitCode> {
        let temp = TempDir::new()?;
        let fifo_path = temp.0.join("qemu.log");
        make_fifo(&fifo_path)?;
        let plugin = if self.no_pc {
            None
        } else {
            Some(private_cache_file("libmmiotrace_qemu_plugin", PLUGIN)?)
        };
        let args = self.qemu_args(&fifo_path, plugin.as_deref())?;
        let keep_log = match &self.keep_log {
            Some(path) => Some((
                File::create(path)
                    .with_context(|| format!("creating --keep-log {}", path.display()))?,
                path.clone(),
            )),
            None => None,
        };
        let mut marks = self.mark_fifo.as_deref().map(MarkFifo::open).transpose()?;
        let output = TraceOutput::open(&self.output)?;

        for signal in [libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: pass_on only loads an atomic and calls kill, both
            // async-signal-safe.
            unsafe { libc::signal(signal, pass_on as *const () as libc::sighandler_t) };
        }
        for signal in [libc::SIGINT, libc::SIGQUIT] {
            // SAFETY: ignoring a signal has no preconditions; QEMU, in the
            // same process group, gets the terminal's Ctrl-C itself.
            unsafe { libc::signal(signal, libc::SIG_IGN) };
        }
        let program = &self.qemu[0];
        let mut command = Command::new(program);
        command.args(&args);
        // SAFETY: the closure only calls signal(2), async-signal-safe, to
        // give QEMU the terminal's signals back.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                libc::signal(libc::SIGQUIT, libc::SIG_DFL);
                Ok(())
            })
        };
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(err) => {
                output.abandon();
                if let Some(marks) = &marks {
                    marks.remove_if_created();
                }
                return Err(err)
                    .with_context(|| format!("cannot run {}", Path::new(program).display()));
            }
        };
        QEMU_PID.store(child.id() as i32, Ordering::Relaxed);
        let mut sink = output.start(self.format)?;

        // If QEMU ends before it opens its log, opening the FIFO's write
        // end once lets the reader's open return (and read end-of-file).
        let waiter_fifo = fifo_path.clone();
        let waiter = std::thread::spawn(move || -> std::io::Result<ExitStatus> {
            let status = child.wait();
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&waiter_fifo);
            status
        });

        let fifo = File::open(&fifo_path)
            .with_context(|| format!("opening QEMU's log {}", fifo_path.display()))?;
        let mut tee = Tee {
            inner: fifo,
            copy: keep_log,
            failed: None,
        };
        let mut converter = Converter::new(self.devices.clone(), self.port_io, plugin.is_some());
        let mut state = Writing::default();
        let mut reader = QemuLogReader::new(
            BufReader::with_capacity(1 << 20, &mut tee),
            fifo_path.display().to_string(),
        );
        loop {
            let event = match reader.next_event() {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(err) if matches!(err, mmiotrace_trace::Error::Io { .. }) => {
                    state.note_read_error(err.to_string());
                    break;
                }
                Err(err) => {
                    state.note_bad_line(err.to_string());
                    continue;
                }
            };
            if let Some(marks) = &marks {
                while let Some(text) = marks.try_next() {
                    let time = converter.time_of_wall_clock(now_us());
                    converter.mark(time, text, &mut |e| state.write(&mut sink, e))?;
                }
            }
            converter.push(event, &mut |e| state.write(&mut sink, e))?;
        }
        drop(reader);
        // Drain the FIFO to its end if reading stopped early, so that QEMU
        // never blocks on its log.
        let _ = std::io::copy(&mut tee.inner, &mut std::io::sink());
        converter.finish(&mut |e| state.write(&mut sink, e))?;
        if let Some(marks) = &mut marks {
            for text in marks.finish() {
                let time = converter.time_of_wall_clock(now_us());
                converter.mark(time, text, &mut |e| state.write(&mut sink, e))?;
            }
            marks.remove_if_created();
        }
        if state.write_error.is_none()
            && let Err(err) = sink.finish()
        {
            state.write_error = Some(format!("{err:#}"));
        }
        let status = waiter
            .join()
            .map_err(|_| anyhow::anyhow!("the thread waiting for QEMU panicked"))?
            .context("waiting for QEMU")?;
        QEMU_PID.store(0, Ordering::Relaxed);
        if let Some(failed) = &tee.failed {
            eprintln!("mmiotrace: --keep-log: {failed}");
        }
        if !self.quiet {
            print_summary(&converter.counts, &state, &self, status);
        }
        if let Some(err) = &state.write_error {
            eprintln!("mmiotrace: error: {err}; the trace is incomplete");
            return Ok(ExitCode::FAILURE);
        }
        if let Some(err) = &state.read_error {
            eprintln!("mmiotrace: error: reading QEMU's log: {err}; the trace is incomplete");
            return Ok(ExitCode::FAILURE);
        }
        Ok(exit_code(status))
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Writing the trace: the first write error stops writing (QEMU's log is
/// still read to its end, so that QEMU never waits on it).
#[derive(Debug, Default)]
struct Writing {
    write_error: Option<String>,
    read_error: Option<String>,
    bad_lines: u64,
}

impl Writing {
    fn write(&mut self, sink: &mut Sink, event: &Event) -> Result<()> {
        if self.write_error.is_none()
            && let Err(err) = sink.write(event)
        {
            eprintln!("mmiotrace: error: {err:#}; QEMU runs on, untraced");
            self.write_error = Some(format!("{err:#}"));
        }
        Ok(())
    }

    fn note_bad_line(&mut self, message: String) {
        self.bad_lines += 1;
        if self.bad_lines <= SHOWN_ERRORS {
            eprintln!("mmiotrace: warning: QEMU's log: {message}; line skipped");
        }
    }

    fn note_read_error(&mut self, message: String) {
        self.read_error = Some(message);
    }
}

fn print_summary(counts: &Counts, state: &Writing, cmd: &Cmd, status: ExitStatus) {
    let mut err = std::io::stderr().lock();
    let ended = match (
        status.code(),
        std::os::unix::process::ExitStatusExt::signal(&status),
    ) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "ended".to_owned(),
    };
    let _ = writeln!(
        err,
        "mmiotrace: QEMU {ended}; trace written to {}",
        sink_name(&cmd.output)
    );
    print_counts(&mut err, counts, cmd.no_pc, cmd.port_io);
    if state.bad_lines > 0 {
        let _ = writeln!(err, "  log lines that did not parse: {}", state.bad_lines);
    }
}

/// The summary's body, shared with `import qemu-log`.
pub fn print_counts(err: &mut impl Write, counts: &Counts, no_pc: bool, port_io: bool) {
    let mut seen = std::collections::BTreeSet::new();
    let _ = writeln!(err, "  BARs placed by the guest:");
    for (device, address, bar, start, size, port) in &counts.bars {
        if seen.insert((address.clone(), *bar, *start)) {
            let kind = if *port { "ports" } else { "memory" };
            let _ = writeln!(
                err,
                "    {address} {device:<10} BAR{bar} {start:#014x} +{size:#x} ({kind})"
            );
        }
    }
    let _ = writeln!(err, "  events: {}", kinds_line(&counts.by_kind));
    let vcpus: Vec<String> = counts
        .by_vcpu
        .iter()
        .map(|(vcpu, count)| {
            if *vcpu == NO_VCPU {
                format!("none {count}")
            } else {
                format!("{vcpu}: {count}")
            }
        })
        .collect();
    let _ = writeln!(
        err,
        "  accesses by vCPU: {}",
        if vcpus.is_empty() {
            "none".to_owned()
        } else {
            vcpus.join(", ")
        }
    );
    let total = counts.with_pc + counts.without_pc;
    if no_pc {
        let _ = writeln!(err, "  pc: not asked for (--no-pc)");
    } else {
        let _ = writeln!(
            err,
            "  accesses with their pc: {} of {total}",
            counts.with_pc
        );
    }
    let _ = writeln!(err, "  lost events: 0  (QEMU waits for its log to be read)");
    let _ = writeln!(
        err,
        "  not written: {} accesses to other devices{}",
        counts.skipped,
        if port_io || counts.port_skipped == 0 {
            String::new()
        } else {
            format!(", {} to port BARs (--port-io)", counts.port_skipped)
        }
    );
}
