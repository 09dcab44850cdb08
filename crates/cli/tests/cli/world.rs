//! A traced program behaves exactly as untraced (issue 5): signals, forks,
//! exec, threads, system calls and odd mappings, each recorded by the real
//! `mmiotrace record` from a C program in tests/programs/. See
//! docs/ARCHITECTURE.md, "How the runtime survives the world".

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mmiotrace_trace::{Event, Item, ReadOptions, TraceReader};

use crate::common::programs::{Scratch, compile, program};

const MMIOTRACE: &str = env!("CARGO_BIN_EXE_mmiotrace");

fn record_command(trace: &Path, extra: &[&str], argv: &[&dyn AsRef<std::ffi::OsStr>]) -> Command {
    record_command_quiet(true, trace, extra, argv)
}

/// `record`, with its summary on stderr unless `quiet` (`-q`).
fn record_command_quiet(
    quiet: bool,
    trace: &Path,
    extra: &[&str],
    argv: &[&dyn AsRef<std::ffi::OsStr>],
) -> Command {
    let mut cmd = Command::new(MMIOTRACE);
    cmd.arg("record");
    if quiet {
        cmd.arg("-q");
    }
    cmd.arg("-o").arg(trace).args(extra).arg("--");
    for arg in argv {
        cmd.arg(arg);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs `mmiotrace record`, failing the test if it takes longer than `limit`
/// (a hang is a failure, not a stuck CI job).
fn record_within(
    limit: Duration,
    trace: &Path,
    extra: &[&str],
    argv: &[&dyn AsRef<std::ffi::OsStr>],
) -> Output {
    let child = record_command(trace, extra, argv)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mmiotrace record");
    wait_within(child, limit)
}

fn record(trace: &Path, extra: &[&str], argv: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    record_within(Duration::from_secs(120), trace, extra, argv)
}

/// Waits for `child`, reading its output on threads of their own (a
/// process that outlives it may keep the pipes open: what was read by the
/// time it exits is what counts).
fn wait_within(mut child: Child, limit: Duration) -> Output {
    fn reader(mut pipe: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<u8> {
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                for &b in &buf[..n] {
                    let _ = sender.send(b);
                }
            }
        });
        receiver
    }
    let stdout = reader(child.stdout.take().expect("stdout"));
    let stderr = reader(child.stderr.take().expect("stderr"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // What the pipes still hold arrives within moments.
    std::thread::sleep(Duration::from_millis(50));
    let out = Output {
        status: status.unwrap_or_else(|| child.wait().expect("wait")),
        stdout: stdout.try_iter().collect(),
        stderr: stderr.try_iter().collect(),
    };
    assert!(
        status.is_some(),
        "mmiotrace record did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "{:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// One trace event, flattened for comparisons.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ev {
    kind: &'static str,
    map: u32,
    phys: u64,
    width: u8,
    value: u64,
    pc: u64,
    tid: u32,
    process: u32,
    seq: u64,
    /// A MAP's length.
    len: u64,
    /// A MARK's text.
    text: String,
}

fn read_trace(path: &Path) -> Vec<Ev> {
    let file = std::fs::File::open(path).expect("open trace");
    let options = ReadOptions::default()
        .with_name(path.display().to_string())
        .with_fatal_truncation(true);
    let mut events = Vec::new();
    for item in TraceReader::new(file, options).expect("open trace") {
        let event = match item.expect("parse trace") {
            Item::Event(event) => event,
            Item::Truncated(t) => panic!("{t}"),
        };
        let ext = event.ext().copied().unwrap_or_default();
        let base = Ev {
            kind: event.kind_name(),
            map: 0,
            phys: 0,
            width: 0,
            value: 0,
            pc: 0,
            tid: event.pid().unwrap_or(0),
            process: ext.process.unwrap_or(0),
            seq: ext.seq.unwrap_or(u64::MAX),
            len: 0,
            text: String::new(),
        };
        events.push(match &event {
            Event::Access(a) => Ev {
                map: a.map_id,
                phys: a.phys,
                width: a.width(),
                value: a.value.low_u64(),
                pc: a.pc,
                ..base
            },
            Event::Unknown(u) => Ev {
                map: u.map_id,
                phys: u.phys,
                pc: u.pc,
                ..base
            },
            Event::Map(m) => Ev {
                map: m.map_id,
                phys: m.phys,
                len: m.len,
                ..base
            },
            Event::Unmap(u) => Ev {
                map: u.map_id,
                ..base
            },
            Event::Mark(m) => Ev {
                text: m.text.clone(),
                ..base
            },
            _ => base,
        });
    }
    events
}

fn writes(events: &[Ev]) -> impl Iterator<Item = &Ev> {
    events.iter().filter(|e| e.kind == "W")
}

/// Sequence numbers of the events that carry them: gap-free, in order.
fn assert_gap_free(events: &[Ev]) {
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e.seq)
        .filter(|&s| s != u64::MAX)
        .collect();
    assert!(
        seqs.iter().enumerate().all(|(i, &s)| s == i as u64),
        "sequence numbers are not 0, 1, 2, ... ({} events)",
        seqs.len()
    );
}

/// `assert_eq!` for long sequences: reports the lengths and the first
/// difference, not thousands of items.
fn assert_same<T: PartialEq + std::fmt::Debug>(actual: &[T], expected: &[T], what: &str) {
    if actual == expected {
        return;
    }
    let first = actual
        .iter()
        .zip(expected)
        .position(|(a, e)| a != e)
        .unwrap_or(actual.len().min(expected.len()));
    panic!(
        "{what}: {} items, expected {}; first difference at {first}: {:?} vs {:?}",
        actual.len(),
        expected.len(),
        actual.get(first),
        expected.get(first)
    );
}

fn stdout_value(out: &Output, label: &str) -> u32 {
    text(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} line in {}", text(&out.stdout)))
        .trim()
        .parse()
        .expect("number")
}

// ---------------------------------------------------------------- signals

#[test]
fn the_programs_own_handlers_get_the_faults_that_are_not_ours() {
    let scratch = Scratch::new("handlers");
    let bar = scratch.bar("dev", 4096);
    let trace = scratch.path("t.trace");
    let untraced = scratch.path("plain.bin");
    let out = record(
        &trace,
        &["--trace", &scratch.glob()],
        &[&program("signals"), &"handlers", &bar, &untraced],
    );
    assert_success(&out);
    // Each handler checked si_addr, si_code and the saved RIP and RAX.
    assert_eq!(
        text(&out.stdout),
        "segv first context 1\nold handler is first: 1\nsegv second context 1\n\
         signal returned second: 1\nsegv plain\nbus 1\ntrap 1\nvalues 1 2 3 4 5\n"
    );
    let events = read_trace(&trace);
    let traced: Vec<(u64, u64)> = writes(&events).map(|e| (e.phys, e.value)).collect();
    assert_eq!(traced, [(0, 1), (4, 2), (8, 3), (12, 4), (16, 5)]);
    assert_gap_free(&events);
}

#[test]
fn the_programs_view_of_its_signal_mask_is_what_it_set() {
    let scratch = Scratch::new("mask");
    let bar = scratch.bar("dev", 4096);
    let trace = scratch.path("t.trace");
    let out = record(
        &trace,
        &["--trace", &scratch.glob()],
        &[&program("signals"), &"mask", &bar],
    );
    assert_success(&out);
    assert_eq!(
        text(&out.stdout),
        "sigprocmask sees segv 1 trap 1 usr1 1\npthread_sigmask sees segv 1 trap 1 usr1 1\n\
         thread sees segv 1 trap 1 usr1 1\nthread after unblock segv 0\nmain still sees segv 1\n\
         delivered while blocked 0\ndelivered after unblock 1 (old mask had segv 1)\n\
         after unblock segv 0 trap 1\nsa_mask segv 1 usr1 1\n"
    );
    // Traced while the program believed SIGSEGV blocked, in both threads,
    // and in the handler of the SIGSEGV that waited for the unblock.
    let traced: Vec<(u64, u64)> = writes(&read_trace(&trace))
        .map(|e| (e.phys, e.value))
        .collect();
    assert_eq!(traced, [(0, 0x11), (4, 0x22), (12, 0x44), (8, 0x33)]);
}

#[test]
fn a_fault_while_sigsegv_is_blocked_kills_as_the_kernel_does() {
    let scratch = Scratch::new("blockedfault");
    let bar = scratch.bar("dev", 4096);
    let trace = scratch.path("t.trace");
    let out = record(
        &trace,
        &["--trace", &scratch.glob()],
        &[&program("signals"), &"blockedfault", &bar],
    );
    // Untraced, the kernel kills a thread whose fault it cannot deliver,
    // even with a handler installed.
    assert_eq!(
        out.status.code(),
        Some(128 + libc::SIGSEGV),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "blocked\n");
    assert_eq!(writes(&read_trace(&trace)).count(), 1);
}

#[test]
fn handlers_on_an_alternate_stack_touch_traced_memory() {
    for size in ["16384", "65536"] {
        let scratch = Scratch::new(&format!("altstack{size}"));
        let bar = scratch.bar("dev", 4096);
        let trace = scratch.path("t.trace");
        let out = record(
            &trace,
            &["--trace", &scratch.glob()],
            &[&program("signals"), &"altstack", &bar, &size],
        );
        assert_success(&out);
        assert_eq!(
            text(&out.stdout),
            "usr1 10 on altstack 10\nfault caught on altstack 1\n\
             overflow caught on altstack 1\ncounter 2\n",
            "alternate stack of {size} bytes"
        );
        let events = read_trace(&trace);
        // Each SIGUSR1: a 4-byte write, its read back, an 8-byte write.
        let usr1: Vec<(&str, u8, u64)> = events
            .iter()
            .filter(|e| (64..64 + 40).contains(&e.phys) || e.phys == 128)
            .map(|e| (e.kind, e.width, e.value))
            .collect();
        let mut expected = Vec::new();
        for n in 0..10u64 {
            expected.extend([("W", 4, n), ("R", 4, n), ("W", 8, n << 32 | n)]);
        }
        assert_eq!(usr1, expected);
        // The SIGSEGV handler's counter, on the alternate stack twice.
        let counter: Vec<(&str, u64)> = events
            .iter()
            .filter(|e| e.phys == 160 && e.kind != "MAP")
            .map(|e| (e.kind, e.value))
            .collect();
        // (The last read is the program's printf.)
        assert_eq!(counter, [("R", 0), ("W", 1), ("R", 1), ("W", 2), ("R", 2)]);
    }
}

#[test]
fn an_alternate_stack_too_small_for_the_handler_is_never_overflowed() {
    // 8 KiB (glibc's traditional SIGSTKSZ) leaves too little below two
    // kernel signal frames on machines with large FPU state: the runtime
    // stops the program with a message instead of writing below the stack.
    let scratch = Scratch::new("altstack-small");
    let bar = scratch.bar("dev", 4096);
    let trace = scratch.path("t.trace");
    let out = record(
        &trace,
        &["--trace", &scratch.glob()],
        &[&program("signals"), &"altstack", &bar, &"8192"],
    );
    let stderr = text(&out.stderr);
    let completed = out.status.success()
        && text(&out.stdout)
            == "usr1 10 on altstack 10\nfault caught on altstack 1\n\
                overflow caught on altstack 1\ncounter 2\n";
    let stopped = out.status.code() == Some(128 + libc::SIGSEGV)
        && stderr.contains("alternate signal stack too small for the runtime's handler");
    assert!(
        completed || stopped,
        "{:?}\nstdout:\n{}\nstderr:\n{stderr}",
        out.status,
        text(&out.stdout)
    );
}

#[test]
fn an_asynchronous_signal_handler_is_traced_exactly() {
    let scratch = Scratch::new("alarm");
    let bar = scratch.bar("dev", 4096);
    let trace = scratch.path("t.trace");
    let out = record(
        &trace,
        &["--trace", &scratch.glob()],
        &[&program("signals"), &"alarm", &bar, &"2000"],
    );
    assert_success(&out);
    let line = text(&out.stdout);
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let [
        ticks,
        main_writes,
        locked,
        gathers,
        counter,
        handler_adds,
        main_adds,
    ] = numbers[..]
    else {
        panic!("unexpected output {line}");
    };
    assert_eq!((counter, handler_adds, main_adds), (ticks, ticks, locked));
    let events = read_trace(&trace);
    assert_gap_free(&events);
    // The handler's load and store: exactly one each per alarm, counting up.
    let handler_rw: Vec<(&str, u64)> = events
        .iter()
        .filter(|e| e.phys == 4 && e.kind != "MAP")
        .map(|e| (e.kind, e.value))
        .collect();
    let mut expected: Vec<(&str, u64)> =
        (0..ticks).flat_map(|n| [("R", n), ("W", n + 1)]).collect();
    // The program's printf reads the counter once more.
    expected.push(("R", ticks));
    assert_same(&handler_rw, &expected, "the handler's accesses");
    // Its displaced lock add, and the main loop's: once per execution
    // (logged as UNKNOWN when displaced, as R and W when emulated).
    let adds_at = |phys: u64| {
        events
            .iter()
            .filter(|e| e.phys == phys && (e.kind == "UNKNOWN" || e.kind == "W"))
            .count() as u64
    };
    assert_eq!(adds_at(128), ticks);
    assert_eq!(adds_at(136), locked);
    // The gathers (with AVX2), single-stepped on the alias (UNKNOWN) or
    // emulated (a read per element): once per execution. A signal arriving
    // between the fault and the single step must wait for the step.
    let gathers_at = |phys: u64| {
        events
            .iter()
            .filter(|e| e.phys == phys && (e.kind == "UNKNOWN" || e.kind == "R"))
            .count() as u64
    };
    assert_eq!(gathers_at(0x200), ticks * gathers);
    assert_eq!(gathers_at(0x240), locked * gathers);
    let main: Vec<u64> = writes(&events)
        .filter(|e| (256..512).contains(&e.phys))
        .map(|e| e.value)
        .collect();
    assert_same(
        &main,
        &(0..main_writes).collect::<Vec<_>>(),
        "the main loop's writes",
    );
}

// -------------------------------------------------------------- processes

#[test]
fn a_forked_child_is_traced_as_its_own_process() {
    let scratch = Scratch::new("fork");
    let bar = scratch.bar("dev", 4096);
    let trace = scratch.path("t.trace");
    let out = record(
        &trace,
        &["--trace", &scratch.glob()],
        &[&program("procs"), &"fork", &bar],
    );
    assert_success(&out);
    let (parent, child) = (stdout_value(&out, "PARENT"), stdout_value(&out, "CHILD"));
    let events = read_trace(&trace);
    assert_gap_free(&events);
    let by_offset = |phys: u64| -> Vec<(u32, u32, u64)> {
        writes(&events)
            .filter(|e| e.phys == phys)
            .map(|e| (e.process, e.tid, e.value))
            .collect()
    };
    let values: Vec<u64> = (0..1000).collect();
    let child_writes = by_offset(8);
    let parent_writes = by_offset(16);
    assert!(
        child_writes
            .iter()
            .all(|&(p, t, _)| (p, t) == (child, child))
    );
    assert!(
        parent_writes
            .iter()
            .all(|&(p, t, _)| (p, t) == (parent, parent))
    );
    assert_eq!(child_writes.iter().map(|w| w.2).collect::<Vec<_>>(), values);
    assert_eq!(
        parent_writes.iter().map(|w| w.2).collect::<Vec<_>>(),
        values
    );
    // The child's read of offset 0 is its own.
    assert!(
        events
            .iter()
            .any(|e| e.kind == "R" && e.phys == 0 && e.process == child)
    );
}

#[test]
fn exec_keeps_tracing_in_the_new_image() {
    let scratch = Scratch::new("exec");
    let bar = scratch.bar("dev", 4096);
    let trace = scratch.path("t.trace");
    let out = record(
        &trace,
        &["--trace", &scratch.glob()],
        &[&program("procs"), &"exec", &bar],
    );
    assert_success(&out);
    let pid = stdout_value(&out, "PID");
    let events = read_trace(&trace);
    let kinds: Vec<&str> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        ["VERSION", "MAP", "W", "MAP", "W", "W", "W", "W", "W"]
    );
    assert!(events[1..].iter().all(|e| e.process == pid));
    let values: Vec<(u64, u64)> = writes(&events).map(|e| (e.phys, e.value)).collect();
    assert_eq!(
        values,
        [
            (0, 0xe1),
            (0x100, 0),
            (0x100, 1),
            (0x100, 2),
            (0x100, 3),
            (0x100, 4)
        ]
    );
}

#[test]
fn a_chain_of_execs_does_not_use_up_the_rings() {
    // Each image's slot belongs to the same thread id; the next image gives
    // it back, or with two rings the third image would wait forever.
    let scratch = Scratch::new("execchain");
    let bar = scratch.bar("dev", 4096);
    let trace = scratch.path("t.trace");
    let out = record_within(
        Duration::from_secs(60),
        &trace,
        &["--trace", &scratch.glob(), "--rings", "2"],
        &[&program("procs"), &"execchain", &bar, &"5"],
    );
    assert_success(&out);
    let values: Vec<u64> = writes(&read_trace(&trace)).map(|e| e.value).collect();
    assert_eq!(values, [5, 4, 3, 2, 1, 0]);
}

#[test]
fn posix_spawn_vfork_and_fork_exec_are_traced() {
    let scratch = Scratch::new("spawn");
    let bar = scratch.bar("dev", 4096);
    let trace = scratch.path("t.trace");
    let out = record(
        &trace,
        &["--trace", &scratch.glob()],
        &[&program("procs"), &"spawn", &bar],
    );
    assert_success(&out);
    let events = read_trace(&trace);
    for (label, offset) in [("SPAWNED", 0x200), ("VFORKED", 0x300), ("FORKED", 0x400)] {
        let pid = stdout_value(&out, label);
        let got: Vec<(u32, u64)> = writes(&events)
            .filter(|e| e.phys == offset)
            .map(|e| (e.process, e.value))
            .collect();
        let expected: Vec<(u32, u64)> = (0..5).map(|v| (pid, v)).collect();
        assert_eq!(got, expected, "{label}");
    }
}

#[test]
fn recording_goes_on_until_the_last_traced_process_is_gone() {
    let scratch = Scratch::new("orphan");
    let bar = scratch.bar("dev", 4096);
    let trace = scratch.path("t.trace");
    // PROGRAM exits at once; its child logs 300 ms later, forks, and execs.
    let out = record(
        &trace,
        &["--trace", &scratch.glob()],
        &[&program("procs"), &"orphan", &bar],
    );
    assert_success(&out);
    let events = read_trace(&trace);
    assert_gap_free(&events);
    for offset in [0x500, 0x600, 0x700] {
        let values: Vec<u64> = writes(&events)
            .filter(|e| e.phys == offset)
            .map(|e| e.value)
            .collect();
        assert_eq!(values, (0..100).collect::<Vec<_>>(), "offset {offset:#x}");
    }
    let processes: BTreeSet<u32> = writes(&events).map(|e| e.process).collect();
    assert_eq!(
        processes.len(),
        2,
        "the child (and its exec) and the grandchild"
    );
}

#[test]
fn a_daemon_neither_keeps_the_recorder_nor_hangs_after_it() {
    let scratch = Scratch::new("daemon");
    let bar = scratch.bar("dev", 4096);
    let trace = scratch.path("t.trace");
    let (go, done) = (scratch.path("go"), scratch.path("done"));
    let started = Instant::now();
    let out = record_within(
        Duration::from_secs(30),
        &trace,
        &[
            "--trace",
            &scratch.glob(),
            "--linger",
            "0.5",
            "--ring-size",
            "512",
        ],
        &[&program("procs"), &"daemon", &bar, &go, &done],
    );
    assert_success(&out);
    assert!(started.elapsed() < Duration::from_secs(20));
    let daemon = stdout_value(&out, "DAEMON");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("stopped recording") && stderr.contains(&format!("pid {daemon}")),
        "{stderr}"
    );
    assert_eq!(writes(&read_trace(&trace)).count(), 10);
    // The daemon now logs 5000 events into rings of 512 that nobody drains:
    // it must not wait for a recorder that is gone.
    std::fs::write(&go, b"").expect("go");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done.exists() {
        assert!(
            Instant::now() < deadline,
            "the daemon hangs after the recorder ended"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn no_follow_traces_only_the_first_process() {
    let scratch = Scratch::new("nofollow");
    let exe = program("procs");
    for follow in [false, true] {
        let bar = scratch.bar(&format!("dev{follow}"), 4096);
        let trace = scratch.path(&format!("t{follow}.trace"));
        let extra: &[&str] = if follow { &[] } else { &["--no-follow"] };
        let out = record(
            &trace,
            &[&["--trace", &scratch.glob()], extra].concat(),
            &[&exe, &"nofollow", &bar],
        );
        assert_success(&out);
        // The children ran as untraced: their writes landed.
        assert!(
            text(&out.stdout).contains("sees 71 72 4"),
            "{}",
            text(&out.stdout)
        );
        let first = stdout_value(&out, "FIRST");
        let events = read_trace(&trace);
        assert_gap_free(&events);
        let processes: BTreeSet<u32> = events.iter().skip(1).map(|e| e.process).collect();
        let offsets: BTreeSet<u64> = writes(&events).map(|e| e.phys).collect();
        if follow {
            assert_eq!(processes.len(), 3);
            assert_eq!(offsets, BTreeSet::from([0, 8, 0xc, 0xa00, 0xb00]));
        } else {
            // Only the first process, through its own exec at the end.
            assert_eq!(processes, BTreeSet::from([first]));
            assert_eq!(offsets, BTreeSet::from([0, 0xb00]));
        }
    }
}

// ---------------------------------------------------------------- threads

/// Values (thread << 32 | k) written by churn.c, grouped by thread.
fn churn_values(events: &[Ev]) -> BTreeMap<u64, Vec<u64>> {
    let mut by_thread: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for e in writes(events) {
        by_thread
            .entry(e.value >> 32)
            .or_default()
            .push(e.value & 0xffff_ffff);
    }
    by_thread
}

#[test]
fn a_thousand_short_threads_share_eight_rings() {
    let scratch = Scratch::new("churn");
    let bar = scratch.bar("dev", 4096);
    let trace = scratch.path("t.trace");
    let out = record(
        &trace,
        &["--trace", &scratch.glob(), "--rings", "8"],
        &[&program("churn"), &"short", &bar, &"1000", &"20"],
    );
    assert_success(&out);
    let events = read_trace(&trace);
    assert_gap_free(&events);
    let by_thread = churn_values(&events);
    assert_eq!(by_thread.len(), 1000);
    assert!(
        by_thread
            .values()
            .all(|v| *v == (0..20).collect::<Vec<_>>())
    );
    let tids: BTreeSet<u32> = writes(&events).map(|e| e.tid).collect();
    assert!(tids.len() > 8, "more threads than rings: slots were reused");
}

#[test]
fn more_threads_alive_than_rings_wait_and_lose_nothing() {
    let scratch = Scratch::new("wide");
    let bar = scratch.bar("dev", 4096);
    let trace = scratch.path("t.trace");
    let out = record(
        &trace,
        &[
            "--trace",
            &scratch.glob(),
            "--rings",
            "4",
            "--ring-size",
            "512",
        ],
        &[&program("churn"), &"wide", &bar, &"16", &"2000"],
    );
    assert_success(&out);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("every ring slot is taken"), "{stderr}");
    let events = read_trace(&trace);
    assert_gap_free(&events);
    let by_thread = churn_values(&events);
    assert_eq!(by_thread.len(), 16);
    assert!(
        by_thread
            .values()
            .all(|v| *v == (0..2000).collect::<Vec<_>>())
    );
}

// --------------------------------------------------------------- mappings

#[test]
fn mappings_changed_or_mapped_twice_stay_exact() {
    let scratch = Scratch::new("mappings");
    let bar = scratch.bar("dev", 16 * 4096);
    let trace = scratch.path("t.trace");
    let out = record(
        &trace,
        &["--trace", &scratch.glob()],
        &[&program("mappings"), &bar],
    );
    assert_success(&out);
    let stdout = text(&out.stdout);
    assert!(
        !stdout.contains("FAIL") && stdout.contains("DONE"),
        "{stdout}"
    );
    assert!(
        text(&out.stderr).contains("MAP_PRIVATE mapping of")
            && text(&out.stderr).contains("is NOT traced"),
        "{}",
        text(&out.stderr)
    );
    let events = read_trace(&trace);
    // The trace is self-consistent: each access lies inside the latest MAP
    // of its map id (a grown mapping is described again).
    let mut extent: HashMap<u32, (u64, u64)> = HashMap::new();
    for e in &events {
        match e.kind {
            "MAP" => {
                extent.insert(e.map, (e.phys, e.len));
            }
            "R" | "W" => {
                let (phys, len) = extent[&e.map];
                assert!(
                    e.phys.wrapping_sub(phys) < len,
                    "an access at {:#x} lies outside its MAP ({phys:#x} +{len:#x})",
                    e.phys
                );
            }
            _ => {}
        }
    }
    let mut number: HashMap<u32, usize> = HashMap::new();
    let actual: Vec<String> = events
        .iter()
        .skip(1)
        .map(|e| match e.kind {
            "MAP" => {
                let next = number.len() + 1;
                let n = *number.entry(e.map).or_insert(next);
                format!("MAP {n}")
            }
            "UNMAP" => format!("UNMAP {}", number[&e.map]),
            kind => format!(
                "{kind} {} {} {:x} {:x}",
                number[&e.map], e.width, e.phys, e.value
            ),
        })
        .collect();
    let expected: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("E "))
        .collect();
    assert_eq!(actual, expected);
}

// --------------------------------------------------------------- syscalls

#[test]
fn system_calls_given_traced_memory_behave_as_untraced() {
    let scratch = Scratch::new("syscalls");
    let bar = scratch.bar("dev", 8192);
    let trace = scratch.path("t.trace");
    let out = record(
        &trace,
        &["--trace", &scratch.glob()],
        &[&program("syscalls"), &bar],
    );
    assert_success(&out);
    let stdout = text(&out.stdout);
    assert!(
        !stdout.contains("FAIL") && stdout.contains("DONE"),
        "{stdout}"
    );
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr.matches("ioctl(fd").count(),
        1,
        "reported once: {stderr}"
    );
    assert!(stderr.contains("failed with EFAULT"), "{stderr}");
    // The runtime's copies for the kernel: pc 0, aligned widths.
    let copies: Vec<String> = read_trace(&trace)
        .iter()
        .filter(|e| (e.kind == "R" || e.kind == "W") && e.pc == 0)
        .map(|e| format!("{} {} {:x} {:x}", e.kind, e.width, e.phys, e.value))
        .collect();
    let expected: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("E "))
        .collect();
    assert_eq!(copies, expected);
}

// ---------------------------------------------- programs LD_PRELOAD misses

#[test]
fn a_static_program_is_refused_before_it_runs() {
    let exe = compile("static", "static_hello", &["-static"]);
    let scratch = Scratch::new("static");
    let ran = scratch.path("ran");
    let trace = scratch.path("t.trace");
    let out = record(&trace, &[], &[&exe, &ran]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("is statically linked"), "{stderr}");
    assert!(stderr.contains("--no-preload-check"), "{stderr}");
    assert!(!ran.exists(), "the program must not run");
    // Asked to, it runs (untraced).
    let out = record(&trace, &["--no-preload-check"], &[&exe, &ran]);
    assert_success(&out);
    assert!(ran.exists());
}

#[test]
fn a_setuid_program_is_refused_before_it_runs() {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("skipped: making a set-user-ID program of another user needs root");
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("setuid-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let exe = dir.join("procs");
    std::fs::copy(program("procs"), &exe).expect("copy");
    let c_path = std::ffi::CString::new(exe.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: a NUL-terminated path; chown and chmod have no memory effects.
    unsafe {
        assert_eq!(libc::chown(c_path.as_ptr(), 65534, 65534), 0);
        assert_eq!(libc::chmod(c_path.as_ptr(), 0o4755), 0);
    }
    let trace = dir.join("t.trace");
    let out = record(&trace, &[], &[&exe, &"leaf", &"/nonexistent", &"1", &"0"]);
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is set-user-ID to another user"),
        "{stderr}"
    );
}

// ------------------------------------------------------------------- load

/// Workers × accesses each: a million with MMIOTRACE_SOAK=1, a tenth of it
/// in the bounded version that CI runs.
fn soak_size() -> (u64, u64) {
    if std::env::var_os("MMIOTRACE_SOAK").is_some_and(|v| v == "1") {
        (16, 62_500)
    } else {
        (16, 12_500)
    }
}

#[test]
fn soak_threads_forks_execs_and_spawns_lose_nothing() {
    // The fault path alone (patching is on by default: the patched soak
    // below covers it).
    soak("soak", &program("soak"), &["--no-patch"]);
}

/// The soak with every store a patchable site and `--patch`: the workers'
/// store is patched while 16 threads run it, forks inherit it, execs and
/// spawns patch their own; the same trace, and the summary says so.
#[test]
fn soak_patched_threads_forks_execs_and_spawns_lose_nothing() {
    let (out, events) = soak(
        "soak-patched",
        &compile("soak-patchable", "soak", &["-DSOAK_PATCHABLE"]),
        &["--patch"],
    );
    let stderr = text(&out.stderr);
    let totals = stderr
        .lines()
        .find_map(|l| l.strip_prefix("  patch: "))
        .unwrap_or_else(|| panic!("no patch summary:\n{stderr}"));
    let patched: u64 = totals
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a count of patched sites");
    // The workers' site and the churn's, in the parent at least.
    assert!(patched >= 2, "{stderr}");
    assert!(!totals.contains("not patchable"), "{stderr}");

    // The sites with the most faults, from the summary (the reports are
    // not in the trace): a patched site faults PATCH_AFTER - 1 times
    // unpatched, then at most once more per thread that ran it (the
    // patch's trigger, or a fault while another thread patched it, which
    // waits for the patch to end, or its first run of the trampoline with
    // no ring slot yet). The soak's forked children (the only ones whose
    // counts start with their parent's) exit with _exit, and report
    // nothing.
    const PATCH_AFTER: usize = 4;
    let mut checked = 0;
    for line in stderr.lines() {
        // "    0x55d0c0a01300  pid 3120  4 faults  patched"
        let Some(rest) = line.trim_start().strip_prefix("0x") else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let [pc, "pid", pid, faults, "faults", what @ ..] = fields.as_slice() else {
            continue;
        };
        let pc = u64::from_str_radix(pc, 16).expect("a hex pc");
        let pid: u32 = pid.parse().expect("a pid");
        let faults: usize = faults.parse().expect("a count of faults");
        assert_eq!(what.join(" "), "patched", "{line}");
        let threads: BTreeSet<u32> = writes(&events)
            .filter(|e| e.process == pid && e.pc == pc)
            .map(|e| e.tid)
            .collect();
        assert!(
            faults <= PATCH_AFTER - 1 + threads.len(),
            "{line}: {} threads ran it\n{stderr}",
            threads.len()
        );
        checked += 1;
    }
    assert!(checked >= 2, "{stderr}");
    // And none of them in the trace.
    assert!(
        !events.iter().any(|e| e.text.contains("patch: site")),
        "{stderr}"
    );
}

/// The patched soak under `record --spool`: records set aside while the
/// threads outpace the recorder (16 rings, forks and execs among them)
/// are written after, every store once and in its thread's order.
///
/// Only with MMIOTRACE_SOAK=1, not in CI: it failed twice in some 400
/// runs, both times with one worker's fast-path stores all missing from
/// the trace (its first store, from the fault path, there), and not again
/// in the 340 runs after; the cause is not found yet (docs/ARCHITECTURE.md,
/// "The spool"). The same soak without `--spool` never failed.
#[test]
fn soak_spooled_threads_forks_execs_and_spawns_lose_nothing() {
    if std::env::var_os("MMIOTRACE_SOAK").is_none_or(|v| v != "1") {
        eprintln!("skipped: MMIOTRACE_SOAK=1 runs it");
        return;
    }
    // MMIOTRACE_SOAK_RING_SIZE=N: rings of N entries, for a recorder that
    // goes behind and back far more often.
    let ring_size = std::env::var("MMIOTRACE_SOAK_RING_SIZE").ok();
    let mut options = vec!["--patch", "--spool"];
    if let Some(entries) = &ring_size {
        options.extend(["--ring-size", entries.as_str()]);
    }
    let (out, _) = soak(
        "soak-spooled",
        &compile("soak-patchable", "soak", &["-DSOAK_PATCHABLE"]),
        &options,
    );
    eprintln!("{}", text(&out.stderr));
}

/// Runs the soak program under `record` with `extra` options and its
/// summary and trace, and checks the trace.
fn soak(name: &str, program: &Path, extra: &[&str]) -> (Output, Vec<Ev>) {
    const UNIT: u64 = 50;
    let (workers, per_worker) = soak_size();
    let scratch = Scratch::new(name);
    let bar = scratch.bar("dev", 4096);
    let trace = scratch.path("t.mtb");
    let glob = scratch.glob();
    let mut args = vec!["--trace", &glob, "--format", "binary"];
    args.extend_from_slice(extra);
    let child = record_command_quiet(
        false,
        &trace,
        &args,
        &[
            &program,
            &bar,
            &workers.to_string(),
            &per_worker.to_string(),
            &UNIT.to_string(),
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("run mmiotrace record");
    let out = wait_within(child, Duration::from_secs(300));
    assert_success(&out);
    let rounds = u64::from(stdout_value(&out, "rounds"));
    assert!(rounds > 0);
    let events = read_trace(&trace);
    assert_gap_free(&events);
    assert!(
        events
            .iter()
            .all(|e| e.kind != "LOST" && e.kind != "UNKNOWN")
    );
    // Every worker's accesses, exactly once, in its order.
    let mut per_worker_values: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    // Churn: (kind, round) -> values k, in order.
    let mut churn: BTreeMap<(u64, u64), Vec<u64>> = BTreeMap::new();
    for e in writes(&events) {
        if e.phys < 0x800 {
            assert_eq!(e.value >> 32, e.phys / 8, "worker value at its offset");
            per_worker_values
                .entry(e.phys / 8)
                .or_default()
                .push(e.value & 0xffff_ffff);
        } else {
            churn
                .entry((e.value >> 60, (e.value >> 20) & 0xff_ffff))
                .or_default()
                .push(e.value & 0xf_ffff);
        }
    }
    if per_worker_values.len() as u64 != workers {
        // Seen once per 100 runs or so of the spooled soak under load:
        // what the trace holds, for next time.
        let by_kind: BTreeMap<&str, usize> = events.iter().fold(BTreeMap::new(), |mut m, e| {
            *m.entry(e.kind).or_default() += 1;
            m
        });
        let low: Vec<(&str, u32, u64, u64, u32)> = events
            .iter()
            .filter(|e| e.phys < 0x800 && e.kind != "MAP")
            .take(8)
            .map(|e| (e.kind, e.map, e.phys, e.value, e.tid))
            .collect();
        let first: Vec<(&str, u32, u64, u64, u32)> = events
            .iter()
            .take(12)
            .map(|e| (e.kind, e.map, e.phys, e.value, e.tid))
            .collect();
        panic!(
            "{} workers in the trace, expected {workers}: {:?}; events {by_kind:?}; the first below 0x800 (kind, map, phys, value, tid): {low:?}; the first: {first:?}\nstdout:\n{}\nstderr:\n{}",
            per_worker_values.len(),
            per_worker_values.keys().collect::<Vec<_>>(),
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    let expected: Vec<u64> = (0..per_worker).collect();
    for (worker, values) in &per_worker_values {
        if *values != expected {
            let missing: Vec<u64> = expected
                .iter()
                .filter(|v| !values.contains(v))
                .copied()
                .take(10)
                .collect();
            let first_bad = values.iter().zip(&expected).position(|(a, b)| a != b);
            let tagged: Vec<(u32, u64, u64, u32)> = events
                .iter()
                .filter(|e| e.kind == "W" && e.value >> 32 == *worker && e.value & 0xffff_ffff == 5)
                .map(|e| (e.map, e.phys, e.value, e.tid))
                .collect();
            let by_kind: BTreeMap<&str, usize> = events.iter().fold(BTreeMap::new(), |mut m, e| {
                *m.entry(e.kind).or_default() += 1;
                m
            });
            panic!(
                "worker {worker}: {} values, expected {}; first difference at {first_bad:?} ({:?}); missing {missing:?}; its value 5 as (map, phys, value, tid): {tagged:?}; events {by_kind:?}",
                values.len(),
                expected.len(),
                first_bad.map(|i| &values[i.saturating_sub(3)..(i + 3).min(values.len())])
            );
        }
    }
    let unit: Vec<u64> = (0..UNIT).collect();
    for kind in 1..=4 {
        for round in 0..rounds {
            assert_eq!(
                churn.remove(&(kind, round)).as_ref(),
                Some(&unit),
                "kind {kind} round {round}"
            );
        }
    }
    assert!(churn.is_empty(), "unexpected accesses {churn:?}");
    let total = writes(&events).count() as u64;
    assert_eq!(total, workers * per_worker + 4 * rounds * UNIT);
    // Every exec'd and spawned leaf maps the file itself.
    assert_eq!(
        events.iter().filter(|e| e.kind == "MAP").count() as u64,
        1 + 2 * rounds
    );
    (out, events)
}
