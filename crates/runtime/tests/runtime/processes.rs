//! Processes: fork gives the child its own ring slot and pid; a Rust
//! program's stack overflow is still reported by std's handler.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

use mmiotrace_shm::kind;

#[test]
fn a_forked_child_logs_with_its_own_pid_and_slot() {
    let program = crate::common::compile("fork", &[]);
    let run = crate::common::record_with_device(
        &program,
        "fork-dev",
        4096,
        &[],
        crate::common::small_config(),
    );
    run.assert_success();
    let pid_of = |label: &str| -> u32 {
        run.stdout
            .lines()
            .find_map(|l| l.strip_prefix(label))
            .expect("pid line")
            .trim()
            .parse()
            .expect("pid")
    };
    let (parent, child) = (pid_of("PARENT "), pid_of("CHILD "));
    run.assert_each_ring_in_order();
    let mut child_writes = 0;
    let mut parent_writes = 0;
    for p in run.accesses() {
        let r = &p.record;
        match (r.kind, r.offset) {
            (kind::WRITE, 8) => {
                assert_eq!((r.pid, r.tid), (child, child));
                assert_eq!(r.value, child_writes);
                child_writes += 1;
            }
            (kind::WRITE, 16) => {
                assert_eq!((r.pid, r.tid), (parent, parent));
                assert_eq!(r.value, parent_writes);
                parent_writes += 1;
            }
            (kind::READ, 0) => assert_eq!(r.pid, child),
            (kind::WRITE, 0) => assert_eq!(r.pid, parent),
            other => panic!("unexpected access {other:?}"),
        }
    }
    assert_eq!((child_writes, parent_writes), (1000, 1000));
}

#[test]
fn processes_that_come_and_go_do_not_use_up_the_slots() {
    let program = crate::common::compile("fork", &[]);
    let config = mmiotrace_shm::Config {
        slot_count: 3,
        ring_entries: 512,
        drop_when_full: false,
    };
    let run = crate::common::record_with_device(&program, "fork-many-dev", 4096, &["many"], config);
    assert!(run.status.success(), "{:?}\n{}", run.status, run.stderr);
    assert!(!run.stderr.contains("slot"), "{}", run.stderr);
    let values: Vec<u64> = run
        .accesses()
        .filter(|p| p.record.offset == 24)
        .map(|p| p.record.value)
        .collect();
    assert_eq!(values, (0..40).collect::<Vec<u64>>());
}

#[test]
fn a_rust_stack_overflow_is_still_reported_by_std() {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs/overflow.rs");
    let binary = Path::new(env!("CARGO_TARGET_TMPDIR")).join("overflow");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let status = Command::new(rustc)
        .args(["--edition", "2024", "-O", "-o"])
        .arg(&binary)
        .arg(&source)
        .status()
        .expect("run rustc");
    assert!(status.success());
    let run = crate::common::record_with_device(
        &binary,
        "overflow-dev",
        4096,
        &[],
        crate::common::small_config(),
    );
    assert!(
        run.stderr.contains("has overflowed its stack"),
        "{}",
        run.stderr
    );
    assert_eq!(run.status.signal(), Some(libc::SIGABRT));
    assert_eq!(run.accesses().count(), 1);
}
