//! Instructions the emulator does not know run displaced on the alias and
//! are logged as UNKNOWN; `rep movs` included.

mod common;

use std::process::Command;

use mmiotrace_shm::kind;

#[test]
fn rep_movs_to_and_from_traced_memory() {
    let program = common::compile("rep", &[]);
    let dev = common::TempShmFile::new("rep-dev", 4096);
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
    assert!(run.stdout.contains("ok 1 d-buf 16 n 0"), "{}", run.stdout);
    let unknown: Vec<u64> = run
        .accesses()
        .map(|p| {
            assert_eq!(p.record.kind, kind::UNKNOWN);
            p.record.offset
        })
        .collect();
    println!("{unknown:?}");
    let per_byte: Vec<u64> = (100..116).chain(100..116).collect();
    assert_eq!(unknown, per_byte, "one UNKNOWN per element");
}
