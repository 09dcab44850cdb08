//! Displaced locked read-modify-writes stay atomic with respect to each
//! other across threads (the runtime's stripe lock): no increment is lost,
//! and the trace holds every read and write, each read seeing the previous
//! write.

use std::collections::BTreeMap;
use std::process::Command;

use mmiotrace_shm::kind;

#[test]
fn locked_increments_from_four_threads_lose_nothing() {
    let threads = 4u64;
    let n = 5_000u64;
    let program = crate::common::compile("locked", &[]);
    let dev = crate::common::TempShmFile::new("locked-dev", 4096);
    let mut command = Command::new(&program);
    command
        .arg(&dev.0)
        .arg(threads.to_string())
        .arg(n.to_string());
    let config = mmiotrace_shm::Config {
        slot_count: 8,
        ring_entries: 1 << 16,
        drop_when_full: false,
    };
    let run = crate::common::record(command, &[dev.0.to_str().expect("utf8")], config);
    assert!(run.status.success(), "{:?}\n{}", run.status, run.stderr);
    let total = threads * n;
    assert_eq!(
        run.stdout.trim(),
        format!("inc {total} xadd {total}"),
        "{}",
        run.stderr
    );
    // Per register, in sequence order: read k, write k + 1, for k = 0..total.
    let mut by_offset: BTreeMap<u64, Vec<(u8, u64)>> = BTreeMap::new();
    for p in run.accesses() {
        assert_ne!(p.record.kind, kind::UNKNOWN);
        by_offset
            .entry(p.record.offset)
            .or_default()
            .push((p.record.kind, p.record.value));
    }
    for offset in [0u64, 64] {
        let events = &by_offset[&offset];
        // The increments, then the program's final read.
        assert_eq!(events.len() as u64, 2 * total + 1, "offset {offset}");
        assert_eq!(events[2 * total as usize], (kind::READ, total));
        for (k, pair) in events[..2 * total as usize].chunks(2).enumerate() {
            let k = k as u64;
            assert_eq!(
                pair,
                [(kind::READ, k), (kind::WRITE, k + 1)],
                "offset {offset}, increment {k}"
            );
        }
    }
}
