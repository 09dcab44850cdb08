//! Instructions the emulator does not know run displaced on the alias and
//! are logged as UNKNOWN, or are refused with a message when their address
//! register is also their data.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use mmiotrace_shm::kind;

fn run_displaced(mode: &str) -> common::Run {
    let program = common::compile("displaced", &[]);
    let dev = common::TempShmFile::new("displaced-dev", 4096);
    let mut command = Command::new(&program);
    command.arg(&dev.0).arg(mode);
    common::record(
        command,
        &[dev.0.to_str().expect("utf8")],
        common::small_config(),
    )
}

#[test]
fn repe_cmps_runs_displaced_one_element_per_step() {
    let run = run_displaced("cmps");
    assert!(
        run.status.success(),
        "{:?}\n{}\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
    // Stops after the differing 7th byte: 16 - 7 left, rsi one past it.
    assert!(run.stdout.contains("left 9 at 107"), "{}", run.stdout);
    let unknown: Vec<u64> = run
        .accesses()
        .map(|p| {
            assert_eq!(p.record.kind, kind::UNKNOWN);
            assert_eq!(p.record.aux & 0xffff, 0xa6f3, "instruction bytes f3 a6");
            assert_eq!(p.record.width, 2);
            p.record.offset
        })
        .collect();
    assert_eq!(unknown, (100..107).collect::<Vec<u64>>());
    assert!(run.stderr.contains("runs displaced"), "{}", run.stderr);
}

#[test]
fn lock_cmpxchg_runs_displaced_with_correct_results() {
    let run = run_displaced("cmpxchg");
    assert!(
        run.status.success(),
        "{:?}\n{}\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
    assert!(
        run.stdout.contains("ok 1 0 seen 5 then 9"),
        "{}",
        run.stdout
    );
    let kinds: Vec<(u8, u64)> = run
        .accesses()
        .map(|p| (p.record.kind, p.record.offset))
        .collect();
    assert_eq!(
        kinds,
        [(kind::WRITE, 8), (kind::UNKNOWN, 8), (kind::UNKNOWN, 8)]
    );
}

#[test]
fn an_instruction_that_cannot_be_rebased_is_refused_clearly() {
    let run = run_displaced("refused");
    assert_eq!(run.status.signal(), Some(libc::SIGSEGV), "{}", run.stderr);
    assert!(
        run.stderr.contains("cannot handle the access") && run.stderr.contains("as data"),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains("survived"));
}
