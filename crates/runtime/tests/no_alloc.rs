//! The signal path neither allocates nor frees: a traced program whose own
//! malloc family counts the calls made while a thread is inside the
//! runtime's handlers, across first accesses of new threads (slot claims),
//! emulated loads and stores, and a displaced `lock add`.

mod common;

use std::process::Command;

use mmiotrace_shm::kind;

#[test]
fn handlers_never_call_the_allocator() {
    let program = common::compile("noalloc", &["-ldl"]);
    let dev = common::TempShmFile::new("noalloc-dev", 4096);
    let mut command = Command::new(&program);
    command.arg(&dev.0);
    let run = common::record(
        command,
        &[dev.0.to_str().expect("utf8")],
        common::small_config(),
    );
    assert!(
        run.status.success(),
        "{:?}\n{}\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("IN_HANDLER"))
        .expect("result line");
    let fields: Vec<&str> = line.split(' ').collect();
    let in_handler: u64 = fields[1].parse().expect("count");
    let all: u64 = fields[3].parse().expect("count");
    assert_eq!(in_handler, 0, "allocator calls inside the handler");
    assert!(
        all > 0,
        "the hook sees allocations outside the handler (thread creation)"
    );
    assert_eq!(
        run.accesses()
            .filter(|p| p.record.kind == kind::UNKNOWN)
            .count(),
        5
    );
    assert_eq!(run.accesses().count(), 5 * 2000 + 5);
}
