//! 8 threads × 50,000 accesses on one traced page: every event is there,
//! once, with the right value, in each thread's order, and the global
//! sequence numbers have no gap.

use std::collections::HashMap;

use mmiotrace_shm::{Config, kind};

const THREADS: u64 = 8;
const ACCESSES: u64 = 50_000;

fn value_of(t: u64, p: u64) -> u64 {
    p.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (t << 56) ^ t
}

#[test]
fn eight_threads_lose_nothing_and_keep_their_order() {
    let program = crate::common::compile("threads", &[]);
    let config = Config {
        slot_count: 16,
        ring_entries: 16384,
        drop_when_full: false,
    };
    let run = crate::common::record_with_device(
        &program,
        "threads-dev",
        4096,
        &[&THREADS.to_string(), &ACCESSES.to_string()],
        config,
    );
    run.assert_success();
    assert!(run.stdout.contains("BAD 0"), "{}", run.stdout);
    assert_eq!(run.lost, 0);

    run.assert_each_ring_in_order();

    let thread_of_tid: HashMap<u32, u64> = run
        .stdout
        .lines()
        .filter_map(|line| line.strip_prefix("T "))
        .map(|rest| {
            let mut parts = rest.split(' ');
            let t = parts.next().expect("t").parse().expect("t");
            let tid = parts.next().expect("tid").parse().expect("tid");
            (tid, t)
        })
        .collect();
    assert_eq!(thread_of_tid.len(), THREADS as usize);

    let mut next: HashMap<u32, u64> = HashMap::new();
    let mut total = 0u64;
    for popped in run.accesses() {
        let r = &popped.record;
        let t = thread_of_tid[&r.tid];
        let k = next.entry(r.tid).or_insert(0);
        let p = *k / 2;
        let which = p % 4;
        let width = 1u8 << which;
        let mask = if width == 8 {
            u64::MAX
        } else {
            (1u64 << (8 * width)) - 1
        };
        let expected_kind = if *k % 2 == 0 { kind::WRITE } else { kind::READ };
        assert_eq!(
            (r.kind, r.width, r.offset, r.value),
            (
                expected_kind,
                width,
                t * 64 + which * 8,
                value_of(t, p) & mask
            ),
            "thread {t} access {k}"
        );
        *k += 1;
        total += 1;
    }
    assert_eq!(total, THREADS * ACCESSES);
    assert!(next.values().all(|&n| n == ACCESSES));
}
