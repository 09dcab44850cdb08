//! `mmiotrace record` tracing real processes: our test programs (C, compiled
//! here) and unmodified third-party binaries.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use mmiotrace_trace::{Access, Direction, Event, Item, ReadOptions, TraceReader};

use crate::common::programs::{Scratch, program};

const MMIOTRACE: &str = env!("CARGO_BIN_EXE_mmiotrace");

fn record(trace: &Path, extra: &[&str], program: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut cmd = Command::new(MMIOTRACE);
    cmd.arg("record").arg("-o").arg(trace).args(extra).arg("--");
    for arg in program {
        cmd.arg(arg);
    }
    cmd.output().expect("run mmiotrace record")
}

fn read_trace(path: &Path) -> Vec<Event> {
    let file = std::fs::File::open(path).expect("open trace");
    let options = ReadOptions::default()
        .with_name(path.display().to_string())
        .with_fatal_truncation(true);
    TraceReader::new(file, options)
        .expect("open trace")
        .map(|item| match item.expect("parse trace") {
            Item::Event(event) => event,
            Item::Truncated(t) => panic!("{t}"),
        })
        .collect()
}

fn accesses(events: &[Event]) -> Vec<&Access> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Access(a) => Some(a),
            _ => None,
        })
        .collect()
}

fn value(t: u64, k: u64) -> u64 {
    let x =
        (t + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (k + 1).wrapping_mul(0xd1b5_4a32_d192_ed03);
    x ^ (x >> 29)
}

#[test]
fn eight_threads_every_access_once_in_order() {
    const THREADS: u64 = 8;
    const ITERATIONS: u64 = 50_000;
    let scratch = Scratch::new("threads");
    let bar = scratch.path("threads.bar");
    let trace = scratch.path("threads.trace");
    let exe = program("threads");
    let out = record(
        &trace,
        &["--trace", &scratch.glob()],
        &[&exe, &bar, &THREADS.to_string(), &ITERATIONS.to_string()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "mismatches 0\n");

    // The same program untraced leaves the same file contents.
    let plain =
        std::env::temp_dir().join(format!("mmiotrace-threads-plain-{}", std::process::id()));
    let status = Command::new(&exe)
        .arg(&plain)
        .args([THREADS.to_string(), ITERATIONS.to_string()])
        .status()
        .expect("run untraced");
    assert!(status.success());
    assert_eq!(
        std::fs::read(&bar).expect("bar"),
        std::fs::read(&plain).expect("plain")
    );
    let _ = std::fs::remove_file(&plain);

    let events = read_trace(&trace);
    let accesses = accesses(&events);
    assert_eq!(accesses.len() as u64, THREADS * ITERATIONS * 2);

    // Sequence numbers over the whole trace: gap-free and in order.
    let seqs: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            Event::Access(a) => a.ext.seq,
            Event::Map(m) => m.ext.seq,
            Event::Unmap(u) => u.ext.seq,
            _ => None,
        })
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "sequence numbers not gap-free"
    );

    let map_phys = events
        .iter()
        .find_map(|e| match e {
            Event::Map(m) => Some(m.phys),
            _ => None,
        })
        .expect("a MAP line");
    let mut per_thread: BTreeMap<u32, Vec<&Access>> = BTreeMap::new();
    for a in &accesses {
        per_thread.entry(a.pid).or_default().push(a);
    }
    assert_eq!(per_thread.len() as u64, THREADS);
    for list in per_thread.values() {
        let t = (list[0].phys - map_phys) / 64;
        for (k, pair) in list.chunks(2).enumerate() {
            let k = k as u64;
            let w = k % 4;
            let width = 1u8 << w;
            let mask = if width == 8 {
                u64::MAX
            } else {
                (1u64 << (8 * width)) - 1
            };
            let expected = value(t, k) & mask;
            let phys = map_phys + t * 64 + w * 8;
            let (write, read) = (pair[0], pair[1]);
            assert_eq!(
                (write.dir, write.width(), write.phys, write.value.low_u64()),
                (Direction::Write, width, phys, expected),
                "thread {t} iteration {k}"
            );
            assert_eq!(
                (read.dir, read.width(), read.phys, read.value.low_u64()),
                (Direction::Read, width, phys, expected),
                "thread {t} iteration {k}"
            );
        }
    }
}

/// Runs the endless counter under `mmiotrace record` in a process group of
/// its own, lets it make 20,000 iterations, has `stop` signal something,
/// and checks that the trace holds every write the program reported.
/// Returns the recorder's exit code.
fn counter_stopped_by(name: &str, stop: impl FnOnce(&std::process::Child)) -> Option<i32> {
    use std::os::unix::process::CommandExt;
    let scratch = Scratch::new(name);
    let bar = scratch.path("counter.bar");
    let progress = scratch.path("progress");
    let trace = scratch.path("counter.trace");
    let mut child = Command::new(MMIOTRACE)
        .arg("record")
        .arg("-o")
        .arg(&trace)
        .args(["--quiet", "--trace", &scratch.glob(), "--"])
        .arg(program("counter"))
        .arg(&bar)
        .arg(&progress)
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn record");
    let deadline = Instant::now() + Duration::from_secs(60);
    let read_progress = || -> Option<u64> {
        let bytes = std::fs::read(&progress).ok()?;
        Some(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?))
    };
    while read_progress().is_none_or(|n| n < 20_000) {
        assert!(Instant::now() < deadline, "the counter never got going");
        std::thread::sleep(Duration::from_millis(20));
    }
    stop(&child);
    let status = child.wait().expect("wait record");

    let last = read_progress().expect("progress");
    let writes: Vec<u64> = accesses(&read_trace(&trace))
        .iter()
        .filter(|a| a.dir == Direction::Write)
        .map(|a| a.value.low_u64())
        .collect();
    // Every write up to the last one the program reported, in order; at most
    // one more (stopped between the access and its progress report).
    assert!(
        writes.len() as u64 > last,
        "{} writes, progress {last}",
        writes.len()
    );
    assert!(writes.len() as u64 <= last + 2);
    assert!(writes.iter().enumerate().all(|(i, &v)| v == i as u64));
    status.code()
}

#[test]
fn killed_program_keeps_every_access_and_exits_137() {
    let code = counter_stopped_by("kill", |record| {
        // The traced program is the recorder's only child.
        let children = std::fs::read_to_string(format!(
            "/proc/{}/task/{}/children",
            record.id(),
            record.id()
        ))
        .expect("children");
        let pid: i32 = children
            .split_whitespace()
            .next()
            .expect("a child")
            .parse()
            .expect("pid");
        // SAFETY: kill has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    });
    assert_eq!(code, Some(137));
}

#[test]
fn ctrl_c_reaches_the_program_and_the_trace_is_completed() {
    let code = counter_stopped_by("ctrl-c", |record| {
        // A terminal's Ctrl-C: SIGINT to the whole foreground process group,
        // recorder and program alike.
        let group = record.id() as i32;
        // SAFETY: kill has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(-group, libc::SIGINT) }, 0);
    });
    // The program died of SIGINT (128 + 2); the recorder did not.
    assert_eq!(code, Some(130));
}

#[test]
fn genuine_segfault_still_kills_with_sigsegv() {
    let scratch = Scratch::new("segv");
    let bar = scratch.path("segv.bar");
    let trace = scratch.path("segv.trace");
    let out = record(
        &trace,
        &["--trace", &scratch.glob()],
        &[&program("segfault"), &bar],
    );
    assert_eq!(
        out.status.code(),
        Some(139),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "read 0xc0ffee\n");
    let accesses: Vec<(Direction, u64)> = accesses(&read_trace(&trace))
        .iter()
        .map(|a| (a.dir, a.value.low_u64()))
        .collect();
    assert_eq!(
        accesses,
        [(Direction::Write, 0xc0ffee), (Direction::Read, 0xc0ffee)]
    );
}

#[test]
fn exit_status_marks_and_unmap() {
    let scratch = Scratch::new("exit");
    let bar = scratch.path("exit.bar");
    let trace = scratch.path("exit.trace");
    let out = record(
        &trace,
        &["--trace", &scratch.glob()],
        &[&program("exitcode"), &bar, &"42"],
    );
    assert_eq!(
        out.status.code(),
        Some(42),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("lost events: 0"), "{stderr}");
    let events = read_trace(&trace);
    let kinds: Vec<&str> = events.iter().map(Event::kind_name).collect();
    assert_eq!(kinds, ["VERSION", "MAP", "MARK", "W", "UNMAP"]);
    match &events[2] {
        Event::Mark(mark) => assert_eq!(mark.text, "about to exit"),
        other => panic!("expected a MARK, got {other:?}"),
    }
    match &events[3] {
        Event::Access(a) => assert_eq!((a.width(), a.value.low_u64()), (2, 42)),
        other => panic!("expected a write, got {other:?}"),
    }
}

/// Like perf, strace and valgrind: PROGRAM needs no `--` before it, and
/// options after it are PROGRAM's.
#[test]
fn program_without_double_dash_keeps_its_own_options() {
    let scratch = Scratch::new("no-dashes");
    let bar = scratch.path("exit.bar");
    let trace = scratch.path("exit.trace");
    let out = Command::new(MMIOTRACE)
        .args(["record", "-q", "-o"])
        .arg(&trace)
        .arg("--trace")
        .arg(scratch.glob())
        .arg(program("exitcode"))
        .arg(&bar)
        .arg("7")
        .output()
        .expect("run mmiotrace record");
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kinds: Vec<&str> = read_trace(&trace).iter().map(Event::kind_name).collect();
    assert_eq!(kinds, ["VERSION", "MAP", "MARK", "W", "UNMAP"]);

    let out = Command::new(MMIOTRACE)
        .args(["record", "-o"])
        .arg(&trace)
        .args(["echo", "-o", "out", "-q", "--help"])
        .output()
        .expect("run mmiotrace record");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "-o out -q --help\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("program exited with status 0"),
        "not -q: {stderr}"
    );
}

#[test]
fn untraced_files_are_left_alone() {
    let scratch = Scratch::new("untraced");
    let bar = scratch.path("plain.bar");
    let trace = scratch.path("plain.trace");
    let out = record(&trace, &[], &[&program("exitcode"), &bar, &"0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kinds: Vec<&str> = read_trace(&trace).iter().map(Event::kind_name).collect();
    assert_eq!(kinds, ["VERSION", "MARK"]);
}

#[test]
fn bad_program_is_a_clear_error() {
    let out = Command::new(MMIOTRACE)
        .args(["record", "-o", "/dev/null", "--", "/nonexistent/program"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("starting /nonexistent/program"), "{stderr}");
}

#[test]
fn lines_written_to_the_mark_fifo_become_marks() {
    let scratch = Scratch::new("fifo");
    let fifo = scratch.path("marks");
    let trace = scratch.path("fifo.trace");
    let gate = scratch.path("gate");
    // The program waits until the test has written its markers.
    let script = format!("while [ ! -e {} ]; do sleep 0.01; done", gate.display());
    let mut child = Command::new(MMIOTRACE)
        .arg("record")
        .arg("-o")
        .arg(&trace)
        .arg("--mark-fifo")
        .arg(&fifo)
        .args(["--quiet", "--", "sh", "-c", &script])
        .spawn()
        .expect("spawn record");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fifo.exists() {
        assert!(Instant::now() < deadline, "the FIFO never appeared");
        std::thread::sleep(Duration::from_millis(10));
    }
    for text in ["phase one", "phase two"] {
        let mut writer = std::fs::OpenOptions::new()
            .write(true)
            .open(&fifo)
            .expect("open FIFO");
        std::io::Write::write_all(&mut writer, format!("{text}\n").as_bytes()).expect("write");
    }
    // Markers written just before the program ends are kept too.
    std::fs::write(&gate, b"").expect("gate");
    assert!(child.wait().expect("wait").success());
    let marks: Vec<String> = read_trace(&trace)
        .into_iter()
        .filter_map(|e| match e {
            Event::Mark(m) => Some(m.text),
            _ => None,
        })
        .collect();
    assert_eq!(marks, ["phase one", "phase two"]);
    assert!(
        !fifo.exists(),
        "the FIFO record created is removed at the end"
    );
}

/// A patched site's fast path stamps its records with the raw TSC
/// (`RECORD_FLAG_TSC`); the recorder converts them: the trace's times are
/// nanoseconds since the start, in order, within the run, and a pause in
/// the program is a pause in the trace. (Unconverted, the first store
/// after the patch would be hours into the run.)
#[test]
fn tsc_stamped_accesses_of_patched_sites_have_the_times_of_the_run() {
    const COUNT: u64 = 2000;
    const PAUSE: Duration = Duration::from_millis(30);
    let scratch = Scratch::new("paced");
    let bar = scratch.path("paced.bar");
    let trace = scratch.path("paced.trace");
    let started = Instant::now();
    let out = record(
        &trace,
        &["--trace", &scratch.glob(), "--patch"],
        &[
            &program("paced"),
            &bar,
            &COUNT.to_string(),
            &PAUSE.as_millis().to_string(),
        ],
    );
    let run = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    if mmiotrace_shm::tsc_is_usable() {
        // The runtime takes the fast path only where the TSC is usable.
        assert!(stderr.contains("  patch: 1 sites patched"), "{stderr}");
    }
    let events = read_trace(&trace);
    let times: Vec<u64> = accesses(&events)
        .iter()
        .enumerate()
        .map(|(i, access)| {
            assert_eq!(
                (access.dir, access.value.low_u64()),
                (Direction::Write, i as u64)
            );
            access.time.nanos
        })
        .collect();
    assert_eq!(times.len() as u64, 2 * COUNT);
    assert!(
        times.windows(2).all(|pair| pair[0] <= pair[1]),
        "times go back: {times:?}"
    );
    let last = times[times.len() - 1];
    assert!(
        last < run.as_nanos() as u64,
        "the last store at {last} ns, in a run of {run:?}"
    );
    let gap = times[COUNT as usize] - times[COUNT as usize - 1];
    assert!(
        gap >= PAUSE.as_nanos() as u64 && gap < run.as_nanos() as u64,
        "the pause is {gap} ns in the trace: {stderr}"
    );
}

/// A program that logs faster than the recorder writes events (patched
/// stores, some 14 ns each), under `record --spool`: the recorder sets
/// the rings' records aside as they are while the program logs, writes them during its pause and
/// after its end, and the trace holds every store once, in order, with
/// the pause where it was (docs/ARCHITECTURE.md, "The spool").
#[test]
fn records_set_aside_while_the_program_outpaces_the_recorder_are_all_written_in_order() {
    const COUNT: u64 = 400_000;
    const PAUSE: Duration = Duration::from_millis(40);
    let scratch = Scratch::new("spool");
    let bar = scratch.path("spool.bar");
    let trace = scratch.path("spool.mtb");
    let out = record(
        &trace,
        &["--trace", &scratch.glob(), "--format", "binary", "--spool"],
        &[
            &program("paced"),
            &bar,
            &COUNT.to_string(),
            &PAUSE.as_millis().to_string(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    if mmiotrace_shm::tsc_is_usable() {
        // The fast path, and so a program faster than the recorder.
        assert!(stderr.contains("set aside while it logged"), "{stderr}");
    }
    let events = read_trace(&trace);
    let accesses = accesses(&events);
    assert_eq!(accesses.len() as u64, 2 * COUNT, "{stderr}");
    let mut seqs = Vec::with_capacity(accesses.len());
    for (i, access) in accesses.iter().enumerate() {
        assert_eq!(
            (access.dir, access.value.low_u64()),
            (Direction::Write, i as u64)
        );
        seqs.push(access.ext.seq.expect("seq"));
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seq goes back");
    let times: Vec<u64> = accesses.iter().map(|a| a.time.nanos).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "times go back");
    let gap = times[COUNT as usize] - times[COUNT as usize - 1];
    assert!(
        gap >= PAUSE.as_nanos() as u64,
        "the pause is {gap} ns: {stderr}"
    );
}
