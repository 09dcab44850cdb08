//! Every emulated MOV form, run on plain memory and on a traced mapping:
//! the registers must agree and the trace must hold exactly the expected
//! events, with their values.

use std::process::Command;

use mmiotrace_shm::{kind, payload_text};

#[test]
fn mov_family_matches_plain_memory_and_is_traced_exactly() {
    let program = crate::common::compile("movs", &[]);
    let dev = crate::common::TempShmFile::new("movs-dev", 8192);
    let pattern: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(0x9e37_79b1) >> 13) as u8)
        .collect();
    std::fs::write(&dev.0, &pattern).expect("fill device file");
    let mut command = Command::new(&program);
    command.arg(&dev.0);
    let glob = dev.0.to_str().expect("utf8 path");
    let run = crate::common::record(command, &[glob], crate::common::small_config());
    assert!(
        run.status.success(),
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
    assert!(!run.stdout.contains("FAIL"), "{}", run.stdout);

    let maps: Vec<_> = run
        .records
        .iter()
        .filter(|p| p.record.kind == kind::MAP)
        .collect();
    assert_eq!(maps.len(), 1, "one traced mapping");
    let map = &maps[0];
    assert_eq!(payload_text(&map.payload), glob.as_bytes());
    assert_eq!(map.record.value, 8192);
    assert_eq!(map.record.offset, 0);
    assert_eq!(map.record.aux, 0x2000_0000_0000);

    let expected: Vec<String> = run
        .stdout
        .lines()
        .filter_map(|line| line.strip_prefix("E "))
        .map(str::to_owned)
        .collect();
    let actual: Vec<String> = run
        .accesses()
        .map(|p| {
            let r = &p.record;
            assert_eq!(r.map_id, map.record.map_id);
            assert_ne!(r.pc, 0);
            assert_eq!(r.pid, run_pid(&run));
            match r.kind {
                kind::READ => format!("R {} {:x} {:x}", r.width, r.offset, r.value),
                kind::WRITE => format!("W {} {:x} {:x}", r.width, r.offset, r.value),
                _ => format!("U {:x}", r.offset),
            }
        })
        .collect();
    assert_eq!(actual, expected, "stderr:\n{}", run.stderr);
    assert!(expected.len() >= 53, "the program printed its expectations");
}

fn run_pid(run: &crate::common::Run) -> u32 {
    run.records[0].record.pid
}
