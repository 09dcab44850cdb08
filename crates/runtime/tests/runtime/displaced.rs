//! Instructions the emulator does not know run displaced with values: the
//! CPU runs a copy on a scratch buffer, the device sees one read and/or one
//! write, both logged. What cannot even be displaced (vector-indexed
//! gathers) runs on the slow path and is logged as UNKNOWN, or, when no
//! register can be rebased, is refused with a message.

use std::os::unix::process::ExitStatusExt;

use mmiotrace_shm::kind;

fn run_displaced(mode: &str) -> crate::common::Run {
    let program = crate::common::compile("displaced", &[]);
    crate::common::record_with_device(
        &program,
        "displaced-dev",
        4096,
        &[mode],
        crate::common::small_config(),
    )
}

fn events(run: &crate::common::Run) -> Vec<(u8, u8, u64, u64)> {
    run.accesses()
        .map(|p| {
            (
                p.record.kind,
                p.record.width,
                p.record.offset,
                p.record.value,
            )
        })
        .collect()
}

#[test]
fn repe_cmps_is_emulated_with_the_values_it_compared() {
    let run = run_displaced("cmps");
    run.assert_success();
    // Stops after the differing 7th byte: 16 - 7 left, rsi one past it.
    assert!(run.stdout.contains("left 9 at 107"), "{}", run.stdout);
    let expected: Vec<(u8, u8, u64, u64)> = (0..7u64)
        .map(|i| (kind::READ, 1, 100 + i, if i == 6 { 0xee } else { i }))
        .collect();
    assert_eq!(events(&run), expected);
    assert!(run.stderr.is_empty(), "{}", run.stderr);
}

#[test]
fn lock_cmpxchg_reads_and_writes_back_also_when_it_fails() {
    let run = run_displaced("cmpxchg");
    run.assert_success();
    assert!(
        run.stdout.contains("ok 1 0 seen 5 then 9"),
        "{}",
        run.stdout
    );
    // The failing cmpxchg writes the old value back (Intel SDM, CMPXCHG).
    assert_eq!(
        events(&run),
        [
            (kind::WRITE, 8, 8, 5),
            (kind::READ, 8, 8, 5),
            (kind::WRITE, 8, 8, 9),
            (kind::READ, 8, 8, 9),
            (kind::WRITE, 8, 8, 9),
        ]
    );
}

#[test]
fn xchg_whose_address_register_is_its_data_runs_displaced() {
    let run = run_displaced("xchg");
    run.assert_success();
    assert!(run.stdout.contains("got 77 left 1"), "{}", run.stdout);
    // mov, xchg (read, write of the address), the program's check.
    let ev = events(&run);
    assert_eq!(ev.len(), 4, "{ev:?}");
    assert_eq!(
        &ev[..2],
        [(kind::WRITE, 8, 16, 77), (kind::READ, 8, 16, 77)]
    );
    assert_eq!((ev[2].0, ev[2].2), (kind::WRITE, 16));
    assert_eq!(ev[3], (kind::READ, 8, 16, ev[2].3));
}

#[test]
fn a_gather_runs_on_the_slow_path_as_unknown() {
    let run = run_displaced("gather");
    run.assert_success();
    if run.stdout.starts_with("SKIP") {
        println!("note: {}", run.stdout.trim());
        return;
    }
    assert!(
        run.stdout.contains("107 106 105 104 103 102 101 100"),
        "{}",
        run.stdout
    );
    let unknown = run
        .accesses()
        .filter(|p| p.record.kind == kind::UNKNOWN)
        .count();
    assert_eq!(unknown, 1);
    assert!(
        run.stderr.contains("runs on the slow path"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_instruction_that_cannot_be_rebased_is_refused_clearly() {
    let run = run_displaced("refused");
    if run.stdout.starts_with("SKIP") {
        println!("note: {}", run.stdout.trim());
        return;
    }
    assert_eq!(run.status.signal(), Some(libc::SIGSEGV), "{}", run.stderr);
    assert!(
        run.stderr.contains("cannot handle the access"),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains("survived"));
}
