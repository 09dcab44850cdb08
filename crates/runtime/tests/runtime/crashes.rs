//! Faults that are not the runtime's behave exactly as without it.

use std::os::unix::process::ExitStatusExt;

fn run_crash(mode: &str) -> crate::common::Run {
    let program = crate::common::compile("crash", &[]);
    crate::common::record_with_device(
        &program,
        "crash-dev",
        4096,
        &[mode],
        crate::common::small_config(),
    )
}

#[test]
fn a_genuine_segfault_still_kills_with_sigsegv() {
    let run = run_crash("null");
    assert_eq!(run.status.signal(), Some(libc::SIGSEGV), "{}", run.stderr);
    assert!(run.stdout.contains("read 0"));
    assert!(!run.stdout.contains("survived"));
    assert_eq!(
        run.accesses().count(),
        1,
        "the read before the crash is traced"
    );
}

#[test]
fn a_store_to_a_read_only_traced_mapping_kills_with_sigsegv() {
    let run = run_crash("readonly");
    assert_eq!(run.status.signal(), Some(libc::SIGSEGV), "{}", run.stderr);
    assert_eq!(run.accesses().count(), 1, "only the read is performed");
}

#[test]
fn the_programs_own_segv_handler_is_chained_to() {
    let run = run_crash("handler");
    run.assert_success();
    assert!(run.stdout.contains("caught 1 after 51"), "{}", run.stdout);
    assert_eq!(
        run.accesses().count(),
        3,
        "read, write and read back are traced"
    );
}

#[test]
fn a_sigsegv_sent_by_kill_still_kills() {
    let run = run_crash("sigdfl");
    assert_eq!(run.status.signal(), Some(libc::SIGSEGV), "{}", run.stderr);
}

#[test]
fn an_int3_without_handler_still_kills_with_sigtrap() {
    let run = run_crash("trap");
    assert_eq!(run.status.signal(), Some(libc::SIGTRAP), "{}", run.stderr);
}

#[test]
fn a_thread_that_blocks_sigsegv_is_still_traced() {
    let run = run_crash("blocked");
    run.assert_success();
    assert!(run.stdout.contains("blocked got 68"), "{}", run.stdout);
    assert_eq!(run.accesses().count(), 3);
}

#[test]
fn a_handler_installed_with_signal_is_chained_to() {
    let run = run_crash("signal");
    run.assert_success();
    assert!(run.stdout.contains("caught 1 after 85"), "{}", run.stdout);
    assert_eq!(run.accesses().count(), 3);
}
