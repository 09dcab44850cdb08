//! Nothing lost, nothing hung (issue 13): when the recorder dies or cannot
//! write, the program goes on untraced; the user's files are never damaged.
//! Each test runs the real `mmiotrace record` on a C program from
//! tests/programs/.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use mmiotrace_trace::{Event, Item, ReadOptions, TraceReader};

use crate::common::programs::{Scratch, program};

const MMIOTRACE: &str = env!("CARGO_BIN_EXE_mmiotrace");

/// How long a test waits before it calls something hung. Not a timing
/// threshold: every run that works takes a small fraction of it.
const HANG: Duration = Duration::from_secs(120);

/// What the `gone` program prints for N iterations, traced or not.
fn gone_sum(n: u64) -> String {
    format!("sum {}\n", n * (n - 1) / 2)
}

/// Reads all of `pipe` on a thread of its own; the text arrives at EOF,
/// that is once every process holding the pipe has ended.
fn read_to_end(mut pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        let _ = sender.send(String::from_utf8_lossy(&bytes).into_owned());
    });
    receiver
}

/// The text of `pipe`, or a failure naming `what` hangs (after killing
/// `pid`, so that the test leaves nothing behind).
fn text_or_hang(pipe: &Receiver<String>, pid: Option<u32>, what: &str) -> String {
    match pipe.recv_timeout(HANG) {
        Ok(text) => text,
        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
            if let Some(pid) = pid {
                // SAFETY: kill has no memory effects.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
            panic!("{what} hangs");
        }
    }
}

fn wait_or_hang(child: &mut Child, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + HANG;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} hangs");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for the file the `gone` program writes its pid into.
fn wait_for_pid(ready: &Path, recorder: &mut Child) -> u32 {
    let deadline = Instant::now() + HANG;
    loop {
        if let Ok(text) = std::fs::read_to_string(ready) {
            return text.trim().parse().expect("a pid");
        }
        if let Some(status) = recorder.try_wait().expect("wait") {
            panic!("the recorder ended before the program was ready: {status}");
        }
        assert!(Instant::now() < deadline, "the program never got ready");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The shared-memory files a recorder made (and should have removed).
fn shm_files_of(recorder: u32) -> Vec<PathBuf> {
    let prefix = format!("mmiotrace-{recorder}-");
    std::fs::read_dir("/dev/shm")
        .expect("/dev/shm")
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
        .map(|entry| entry.path())
        .collect()
}

fn stopped_notices(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|line| line.contains("tracing stopped"))
        .collect()
}

/// Every event of a trace that may end in a cut-off line or record.
fn readable_events(path: &Path) -> Vec<Event> {
    let file = std::fs::File::open(path).expect("open trace");
    let options = ReadOptions::default().with_name(path.display().to_string());
    TraceReader::new(file, options)
        .expect("a trace")
        .filter_map(
            |item| match item.expect("every line up to the failure reads") {
                Item::Event(event) => Some(event),
                Item::Truncated(_) => None,
            },
        )
        .collect()
}

/// The recorder writes its runtime library once per build: done here, so
/// that a test's file size limit does not apply to it.
fn warm_up() {
    let status = Command::new(MMIOTRACE)
        .args(["record", "-q", "-o", "/dev/null", "--", "true"])
        .status()
        .expect("run mmiotrace record");
    assert!(status.success());
}

fn gone_command(scratch: &Scratch, extra: &[&str], n: u64, go: &str) -> Command {
    let bar = scratch.bar("dev", 4096);
    let mut command = Command::new(MMIOTRACE);
    command
        .arg("record")
        .args(["-q", "--trace", &scratch.glob(), "--ring-size", "512"])
        .args(extra)
        .arg("--")
        .arg(program("gone"))
        .arg(&bar)
        .arg(n.to_string())
        .arg(scratch.path("ready"))
        .arg(go)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

#[test]
fn the_program_goes_on_untraced_when_its_recorder_is_killed() {
    const N: u64 = 100_000;
    // SIGKILL while the program waits to go on; SIGUSR1 (which the
    // recorder does not handle) to a recorder that was stopped while the
    // program filled its ring and waits for it.
    for (signal, stopped) in [(libc::SIGKILL, false), (libc::SIGUSR1, true)] {
        let scratch = Scratch::new(&format!("killed{signal}"));
        let trace = scratch.path("t.trace");
        let go = scratch.path("go");
        let mut recorder = gone_command(
            &scratch,
            &["-o", trace.to_str().expect("UTF-8")],
            N,
            go.to_str().expect("UTF-8"),
        )
        .spawn()
        .expect("run mmiotrace record");
        let recorder_pid = recorder.id();
        let stdout = read_to_end(recorder.stdout.take().expect("stdout"));
        let stderr = read_to_end(recorder.stderr.take().expect("stderr"));
        let program_pid = wait_for_pid(&scratch.path("ready"), &mut recorder);

        let pid = recorder_pid as libc::pid_t;
        if stopped {
            // SAFETY: kill has no memory effects.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
            // Nobody drains: the program fills its 512-record ring and waits.
            std::fs::write(&go, b"").expect("go");
        }
        // SAFETY: kill has no memory effects.
        unsafe { libc::kill(pid, signal) };
        if stopped {
            // SAFETY: as above; the pending SIGUSR1 ends it once it runs.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
        let status = recorder.wait().expect("wait");
        assert!(!status.success());
        // The program, re-parented, makes N writes into rings of 512 that
        // nobody drains: it must notice and go on untraced.
        std::fs::write(&go, b"").expect("go");
        let out = text_or_hang(
            &stdout,
            Some(program_pid),
            "the program without its recorder",
        );
        let err = text_or_hang(&stderr, Some(program_pid), "the program's standard error");
        assert_eq!(out, gone_sum(N), "signal {signal}");
        let notices = stopped_notices(&err);
        assert_eq!(notices.len(), 1, "signal {signal}: {err}");
        assert!(notices[0].contains("the recorder is gone"), "{err}");
        assert_eq!(
            shm_files_of(recorder_pid),
            Vec::<PathBuf>::new(),
            "signal {signal}: the shared-memory file is left behind"
        );
        // What the recorder wrote before it died is still a trace.
        if let Ok(meta) = std::fs::metadata(&trace) {
            if meta.len() > 0 {
                readable_events(&trace);
            }
        }
    }
}

#[test]
fn a_trace_that_cannot_be_written_keeps_what_was_written_and_fails() {
    const N: u64 = 100_000;
    const LIMIT: u64 = 64 * 1024;
    let scratch = Scratch::new("fsize");
    let trace = scratch.path("t.trace");
    warm_up();
    // One ring, so that the shared-memory file fits under the limit too.
    let mut command = gone_command(
        &scratch,
        &["-o", trace.to_str().expect("UTF-8"), "--rings", "1"],
        N,
        "-",
    );
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            let limit = libc::rlimit {
                rlim_cur: LIMIT,
                rlim_max: LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut recorder = command.spawn().expect("run mmiotrace record");
    let stdout = read_to_end(recorder.stdout.take().expect("stdout"));
    let stderr = read_to_end(recorder.stderr.take().expect("stderr"));
    let status = wait_or_hang(&mut recorder, "the recorder after a write error");
    let out = text_or_hang(&stdout, None, "the program");
    let err = text_or_hang(&stderr, None, "the program's standard error");
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(out, gone_sum(N), "the program ran to its end: {err}");
    assert!(
        err.contains(&format!("cannot write the trace to {}", trace.display()))
            && err.contains("File too large"),
        "{err}"
    );
    let notices = stopped_notices(&err);
    assert_eq!(notices.len(), 1, "{err}");
    assert!(notices[0].contains("cannot write the trace"), "{err}");
    // Everything up to the limit reads back.
    assert_eq!(std::fs::metadata(&trace).expect("trace").len(), LIMIT);
    let events = readable_events(&trace);
    assert!(matches!(events.first(), Some(Event::Version(_))));
    assert!(events.iter().any(|e| matches!(e, Event::Map(_))));
    assert!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Access(_)))
            .count()
            > 100
    );
    assert_eq!(shm_files_of(recorder.id()), Vec::<PathBuf>::new());
}

#[test]
fn a_closed_pipe_fails_the_recording_but_not_the_program() {
    const N: u64 = 200_000;
    let scratch = Scratch::new("pipe");
    let mut recorder = gone_command(&scratch, &["-o", "-"], N, "-")
        .spawn()
        .expect("run mmiotrace record");
    // `mmiotrace record -o - ... | head -c 0`: the reader is gone at once.
    drop(recorder.stdout.take());
    let stderr = read_to_end(recorder.stderr.take().expect("stderr"));
    let status = wait_or_hang(&mut recorder, "the recorder after a broken pipe");
    let err = text_or_hang(&stderr, None, "the program's standard error");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot write the trace to standard output") && err.contains("Broken pipe"),
        "{err}"
    );
    // With -o -, the program's standard output goes to standard error.
    assert!(
        err.contains(&gone_sum(N)),
        "the program ran to its end: {err}"
    );
}

#[test]
fn unreaped_children_give_back_their_ring_slots() {
    const CHILDREN: u32 = 300;
    let scratch = Scratch::new("zombies");
    let bar = scratch.bar("dev", 4096);
    let trace = scratch.path("t.trace");
    for mode in ["exit", "_exit"] {
        // Four rings: without reclaiming zombies' slots, child 5 would wait forever.
        let mut recorder = Command::new(MMIOTRACE)
            .arg("record")
            .args(["-q", "--rings", "4", "--trace", &scratch.glob(), "-o"])
            .arg(&trace)
            .arg("--")
            .arg(program("zombies"))
            .arg(&bar)
            .arg(CHILDREN.to_string())
            .arg(mode)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run mmiotrace record");
        let stdout = read_to_end(recorder.stdout.take().expect("stdout"));
        let stderr = read_to_end(recorder.stderr.take().expect("stderr"));
        let status = wait_or_hang(&mut recorder, "a program with 300 unreaped children");
        let err = text_or_hang(&stderr, None, "standard error");
        assert!(status.success(), "{mode}: {err}");
        assert_eq!(
            text_or_hang(&stdout, None, "standard output"),
            format!("reaped {CHILDREN}\n")
        );
        let mut written: Vec<u64> = readable_events(&trace)
            .iter()
            .filter_map(|e| match e {
                Event::Access(a) => Some(a.value.low_u64()),
                _ => None,
            })
            .collect();
        written.sort_unstable();
        assert_eq!(
            written,
            (0..u64::from(CHILDREN)).collect::<Vec<_>>(),
            "{mode}"
        );
    }
}

#[test]
fn a_program_that_cannot_start_leaves_the_previous_trace_alone() {
    let scratch = Scratch::new("nostart");
    let keep = scratch.path("keep.trace");
    let previous = "VERSION 20070824\nMARK 0.000001 the previous recording\n";
    std::fs::write(&keep, previous).expect("previous trace");
    let script = scratch.path("script");
    std::fs::write(&script, "#!/nonexistent/interpreter\nexit 0\n").expect("script");
    let not_executable = scratch.path("data");
    std::fs::write(&not_executable, "").expect("data");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let cases: [(&Path, &str); 4] = [
        (Path::new("/nonexistent/prog"), "No such file or directory"),
        (Path::new("no-such-program-in-path"), "in PATH"),
        (&script, "its interpreter /nonexistent/interpreter"),
        (&not_executable, "not an executable file"),
    ];
    for (program, why) in cases {
        for flags in [&[][..], &["--no-preload-check"][..]] {
            let out = Command::new(MMIOTRACE)
                .args(["record", "-o"])
                .arg(&keep)
                .args(flags)
                .arg("--")
                .arg(program)
                .output()
                .expect("run mmiotrace record");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{err}");
            assert!(
                err.contains(&format!("starting {}", program.display())) && err.contains(why),
                "{err}"
            );
            assert_eq!(std::fs::read_to_string(&keep).expect("keep"), previous);
            // A trace file that did not exist is not created.
            let new = scratch.path("new.trace");
            let out = Command::new(MMIOTRACE)
                .args(["record", "-o"])
                .arg(&new)
                .args(flags)
                .arg("--")
                .arg(program)
                .output()
                .expect("run mmiotrace record");
            assert_eq!(out.status.code(), Some(1));
            assert!(!new.exists());
        }
    }
}

#[test]
fn record_to_standard_output_keeps_the_programs_output_out_of_the_trace() {
    const N: u64 = 1_000;
    let scratch = Scratch::new("stdout");
    let mut recorder = gone_command(&scratch, &["-o", "-"], N, "-")
        .spawn()
        .expect("run mmiotrace record");
    let stdout = read_to_end(recorder.stdout.take().expect("stdout"));
    let stderr = read_to_end(recorder.stderr.take().expect("stderr"));
    let status = wait_or_hang(&mut recorder, "the recorder");
    let trace = text_or_hang(&stdout, None, "the trace");
    let err = text_or_hang(&stderr, None, "standard error");
    assert!(status.success(), "{err}");
    assert!(err.contains(&gone_sum(N)), "the program's output: {err}");
    let options = ReadOptions::default()
        .with_name("<stdout>")
        .with_fatal_truncation(true);
    let events: Vec<Event> = TraceReader::new(trace.as_bytes(), options)
        .expect("a trace")
        .map(|item| match item.expect("a valid trace") {
            Item::Event(event) => event,
            Item::Truncated(t) => panic!("{t}"),
        })
        .collect();
    let writes = events
        .iter()
        .filter(|e| matches!(e, Event::Access(a) if a.dir == mmiotrace_trace::Direction::Write))
        .count();
    assert_eq!(writes as u64, N + 1);
}

#[test]
fn relative_and_symlinked_trace_globs_match_and_unmatched_ones_are_named() {
    let scratch = Scratch::new("relglob");
    scratch.bar("adv-1", 4096);
    let link = scratch.path("link");
    std::os::unix::fs::symlink(scratch.path(""), &link).expect("symlink");
    let through_link = format!("{}/adv-*", link.display());
    for glob in [
        "adv-*",
        "./adv-*",
        "sub/../adv-1.bar",
        through_link.as_str(),
    ] {
        std::fs::create_dir_all(scratch.path("sub")).expect("sub");
        let _ = std::fs::remove_file(scratch.path("ready"));
        let out = Command::new(MMIOTRACE)
            .current_dir(scratch.path(""))
            .args(["record", "-q", "-o", "t.trace", "--trace", glob])
            .args(["--trace", "nothing-*"])
            .arg("--")
            .arg(program("gone"))
            .args(["adv-1.bar", "10", "ready", "-"])
            .output()
            .expect("run mmiotrace record");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{glob}: {err}");
        let writes = readable_events(&scratch.path("t.trace"))
            .iter()
            .filter(|e| matches!(e, Event::Access(_)))
            .count();
        assert_eq!(writes, 21, "--trace {glob}: {err}");
        let unmatched: Vec<&str> = err
            .lines()
            .filter(|l| l.contains("matched no mapping"))
            .collect();
        assert_eq!(unmatched.len(), 1, "{glob}: {err}");
        assert!(unmatched[0].contains("--trace nothing-*"), "{err}");
    }
}

/// The MARK texts of a trace read strictly (any unreadable line fails).
fn strict_marks(path: &Path) -> Vec<String> {
    let file = std::fs::File::open(path).expect("open trace");
    let options = ReadOptions::default()
        .with_name(path.display().to_string())
        .with_fatal_truncation(true);
    TraceReader::new(file, options)
        .expect("a trace")
        .filter_map(|item| match item.expect("our reader reads every line") {
            Item::Event(Event::Mark(m)) => Some(m.text),
            _ => None,
        })
        .collect()
}

/// A mark clipped to 4096 bytes: `keep` of the text, then the notice.
fn assert_clipped(text: &str, original_len: usize, first: char) {
    assert_eq!(text.len(), 4096, "{}", &text[text.len() - 40..]);
    let kept = text.find('…').expect("a visible notice");
    assert!(text[..kept].chars().all(|c| c == first));
    assert_eq!(
        &text[kept..],
        format!("…[truncated {} bytes]", original_len - kept)
    );
}

#[test]
fn long_fifo_lines_are_cut_visibly_and_a_last_line_without_newline_is_kept() {
    const LONG: usize = 2_000_000;
    for format in ["text", "binary"] {
        let scratch = Scratch::new(&format!("longfifo-{format}"));
        let fifo = scratch.path("marks");
        let trace = scratch.path("t.trace");
        let gate = scratch.path("gate");
        let script = format!("while [ ! -e {} ]; do sleep 0.01; done", gate.display());
        let mut recorder = Command::new(MMIOTRACE)
            .args(["record", "-q", "--format", format, "-o"])
            .arg(&trace)
            .arg("--mark-fifo")
            .arg(&fifo)
            .args(["--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .expect("run mmiotrace record");
        let deadline = Instant::now() + HANG;
        while !fifo.exists() {
            assert!(Instant::now() < deadline, "the FIFO never appeared");
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut lines = vec![b'L'; LONG];
        lines.extend_from_slice(b"\n\nshort\r\n\nthe last line, without a newline");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&fifo)
            .and_then(|mut w| std::io::Write::write_all(&mut w, &lines))
            .expect("write the FIFO");
        std::fs::write(&gate, b"").expect("gate");
        let status = wait_or_hang(&mut recorder, "the recorder");
        assert!(status.success(), "{format}");
        let marks = strict_marks(&trace);
        assert_eq!(marks.len(), 3, "{format}: {marks:?}");
        assert_clipped(&marks[0], LONG, 'L');
        assert_eq!(marks[1..], ["short", "the last line, without a newline"]);
    }
}

#[test]
fn a_long_mmiotrace_mark_is_cut_visibly() {
    const LONG: usize = 20_000;
    let scratch = Scratch::new("longmark");
    let trace = scratch.path("t.trace");
    let out = Command::new(MMIOTRACE)
        .args(["record", "-q", "-o"])
        .arg(&trace)
        .arg("--")
        .arg(program("longmark"))
        .arg(LONG.to_string())
        .output()
        .expect("run mmiotrace record");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let marks = strict_marks(&trace);
    assert_eq!(marks.len(), 2, "{marks:?}");
    assert_clipped(&marks[0], LONG, 'm');
    assert_eq!(marks[1], "short");
}

#[test]
fn ring_geometry_is_checked_and_no_file_is_left_on_failure() {
    for (option, value) in [
        ("--ring-size", "4294967295"),
        ("--ring-size", "0"),
        ("--ring-size", "511"),
        ("--ring-size", "2097153"),
        ("--rings", "0"),
        ("--rings", "1025"),
    ] {
        let child = Command::new(MMIOTRACE)
            .args(["record", "-o", "/dev/null", option, value, "--", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run mmiotrace record");
        let pid = child.id();
        let out = child.wait_with_output().expect("wait");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{option} {value}: {err}");
        assert!(err.contains(option), "{err}");
        assert_eq!(shm_files_of(pid), Vec::<PathBuf>::new());
    }
    let help = Command::new(MMIOTRACE)
        .args(["record", "--help"])
        .output()
        .expect("run mmiotrace record --help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("512 to 2097152") && help.contains("1 to 1024"),
        "{help}"
    );

    // A shared-memory file that cannot be made full size is removed.
    warm_up();
    let mut command = Command::new(MMIOTRACE);
    command
        .args(["record", "-q", "-o", "/dev/null", "--", "true"])
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            let limit = libc::rlimit {
                rlim_cur: 1 << 20,
                rlim_max: 1 << 20,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().expect("run mmiotrace record");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("sizing /dev/shm/mmiotrace-"), "{err}");
    assert_eq!(shm_files_of(pid), Vec::<PathBuf>::new(), "{err}");
}

#[test]
fn the_every_slot_is_taken_notice_is_printed_once_and_counted() {
    let scratch = Scratch::new("slotnotice");
    let bar = scratch.bar("dev", 4096);
    let trace = scratch.path("t.trace");
    let out = Command::new(MMIOTRACE)
        .args([
            "record",
            "--rings",
            "4",
            "--ring-size",
            "512",
            "--trace",
            &scratch.glob(),
            "-o",
        ])
        .arg(&trace)
        .arg("--")
        .arg(program("churn"))
        .arg("wide")
        .arg(&bar)
        .args(["32", "2000"])
        .stdin(Stdio::null())
        .output()
        .expect("run mmiotrace record");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let notices = err
        .lines()
        .filter(|l| l.contains("every ring slot is taken"))
        .count();
    assert_eq!(notices, 1, "{err}");
    let waited: u64 = err
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("threads that waited for a free ring slot: ")
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in the summary: {err}"));
    assert!((1..=32).contains(&waited), "{err}");
}

#[test]
fn linger_must_be_a_finite_number_of_seconds() {
    for bad in ["nan", "inf", "-1", "1e300", "soon"] {
        let out = Command::new(MMIOTRACE)
            .args([
                "record",
                "-o",
                "/dev/null",
                &format!("--linger={bad}"),
                "--",
                "true",
            ])
            .output()
            .expect("run mmiotrace record");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--linger {bad}: {err}");
        assert!(err.contains("not a number of seconds"), "{err}");
    }
}

#[test]
fn write_errors_on_standard_output_name_it() {
    let trace = crate::common::data("diff-a.txt");
    let trace = trace.to_str().expect("UTF-8");
    let commands: [&[&str]; 5] = [
        &["stats", trace],
        &["convert", trace],
        &["filter", trace],
        &["diff", trace, trace],
        &["record", "-q", "-o", "-", "--", "true"],
    ];
    for args in commands {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        let out = Command::new(MMIOTRACE)
            .args(args)
            .stdout(full)
            .output()
            .expect("run mmiotrace");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        assert!(
            err.contains("standard output") && err.contains("No space left on device"),
            "{args:?}: {err}"
        );
    }
}
