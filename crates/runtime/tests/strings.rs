//! `movs`/`stos`/`lods` on traced memory are emulated with their values,
//! the whole `rep` in one fault, forwards and backwards.

mod common;

use std::process::Command;

use mmiotrace_shm::kind;

#[test]
fn string_instructions_are_emulated_with_values() {
    let program = common::compile("strings", &[]);
    let dev = common::TempShmFile::new("strings-dev", 4096);
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
    let expected: Vec<&str> = run
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("E "))
        .collect();
    let actual: Vec<String> = run
        .accesses()
        .map(|p| {
            let r = &p.record;
            let dir = match r.kind {
                kind::READ => "R",
                kind::WRITE => "W",
                _ => "U",
            };
            format!("{dir} {} {:x} {:x}", r.width, r.offset, r.value)
        })
        .collect();
    assert_eq!(actual, expected, "stderr:\n{}", run.stderr);
    assert!(
        run.stderr.is_empty(),
        "no displaced instruction: {}",
        run.stderr
    );
}
