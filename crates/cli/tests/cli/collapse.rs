//! `mmiotrace collapse`, run as the real binary on traces of known content.

use std::collections::HashMap;

use crate::common::*;
use mmiotrace_trace::{Access, Direction, Event, Value};

/// What must survive folding: every access of each thread, in order, with
/// everything but its time and sequence number.
type Op = (Direction, u32, u64, Value, u64);

fn op(a: &Access) -> Op {
    (a.dir, a.map_id, a.phys, a.value, a.pc)
}

/// Each thread's accesses, with REPEAT lines expanded as docs/FORMAT.md says.
fn accesses_by_thread(events: &[Event]) -> HashMap<u32, Vec<Op>> {
    let mut threads: HashMap<u32, Vec<Op>> = HashMap::new();
    for event in events {
        match event {
            Event::Access(a) => threads.entry(a.pid).or_default().push(op(a)),
            Event::Repeat(r) => {
                let ops = threads.entry(r.pid).or_default();
                let len = r.len as usize;
                assert!(
                    ops.len() >= len,
                    "a REPEAT refers to accesses before the thread's first"
                );
                let pattern = ops[ops.len() - len..].to_vec();
                for _ in 0..r.count {
                    ops.extend_from_slice(&pattern);
                }
            }
            _ => {}
        }
    }
    threads
}

fn non_accesses(events: &[Event]) -> Vec<&Event> {
    events
        .iter()
        .filter(|e| !matches!(e, Event::Access(_) | Event::Repeat(_)))
        .collect()
}

#[test]
fn folds_the_known_loops_of_the_fixture() {
    let out = stdout(&["collapse", path_str(&data("polling.txt"))]);
    let expected =
        std::fs::read_to_string(data("polling.collapsed.txt")).expect("expected output fixture");
    assert_eq!(out, expected);

    let repeats: Vec<(u64, u32, Option<u64>)> = events(out.as_bytes())
        .iter()
        .filter_map(|e| match e {
            Event::Repeat(r) => Some((r.count, r.len, r.until.map(|u| u.low_u64()))),
            _ => None,
        })
        .collect();
    // The status poll (4 more reads, ended by bit 31), the index/data poll
    // (3 more pairs, ended by 7), and the poll a MARK cut short.
    assert_eq!(
        repeats,
        vec![(4, 1, Some(0x8000_0000)), (3, 2, Some(7)), (2, 1, None)]
    );
}

#[test]
fn nothing_but_the_repetitions_is_lost() {
    let original = fixture_events("polling.txt");
    for args in [
        vec![],
        vec!["--min-repeats", "2"],
        vec!["--max-period", "1"],
        vec!["--window", "1"],
        vec!["--window", "3", "--min-repeats", "2", "--max-period", "8"],
    ] {
        let input = data("polling.txt");
        let mut all = vec!["collapse", path_str(&input)];
        all.extend_from_slice(&args);
        let collapsed = events(stdout(&all).as_bytes());
        assert_eq!(
            accesses_by_thread(&collapsed),
            accesses_by_thread(&original),
            "with {args:?}"
        );
        assert_eq!(
            non_accesses(&collapsed),
            non_accesses(&original),
            "with {args:?}"
        );
    }
}

#[test]
fn min_repeats_and_max_period_decide_what_folds() {
    let count = |args: &[&str]| {
        let input = data("polling.txt");
        let mut all = vec!["collapse", path_str(&input)];
        all.extend_from_slice(args);
        events(stdout(&all).as_bytes())
            .iter()
            .filter(|e| matches!(e, Event::Repeat(_)))
            .count()
    };
    assert_eq!(count(&[]), 3);
    // Period 1 only: the index/data loop stays.
    assert_eq!(count(&["--max-period", "1"]), 2);
    // Five in a row at least: only the status poll (five reads of 0).
    assert_eq!(count(&["--min-repeats", "5"]), 1);
    assert_eq!(count(&["--min-repeats", "6"]), 0);
}

#[test]
fn binary_output_holds_the_same_events() {
    let dir = scratch("collapse-binary");
    let mtb = dir.join("collapsed.mtb");
    stdout(&[
        "collapse",
        path_str(&data("polling.txt")),
        "-o",
        path_str(&mtb),
    ]);
    let bytes = std::fs::read(&mtb).expect("written");
    assert_eq!(&bytes[..8], &mmiotrace_trace::binary::MAGIC);
    let from_binary = stdout(&["convert", path_str(&mtb)]);
    let expected =
        std::fs::read_to_string(data("polling.collapsed.txt")).expect("expected output fixture");
    assert_eq!(from_binary, expected);
    // Collapsing the binary trace again changes nothing: the loops are folded.
    assert_eq!(stdout(&["collapse", path_str(&mtb)]), expected);
}

#[test]
fn a_long_loop_between_other_threads_stays_in_order_with_a_small_window() {
    // Thread 1 polls 1000 times while thread 2 writes after every poll.
    let mut trace = String::from("VERSION 20070824\n");
    let mut seq = 0;
    for i in 0..1000u64 {
        let value = if i == 999 { 1 } else { 0 };
        trace.push_str(&format!(
            "R 4 0.{:06} 1 0x1000 {value:#x} 0x10 1 seq={seq}\n",
            2 * i
        ));
        seq += 1;
        trace.push_str(&format!(
            "W 4 0.{:06} 1 0x2000 {i:#x} 0x20 2 seq={seq}\n",
            2 * i + 1
        ));
        seq += 1;
    }
    let dir = scratch("collapse-window");
    let input = dir.join("in.txt");
    std::fs::write(&input, &trace).expect("write input");
    let original = events(trace.as_bytes());
    for window in ["16", "100000"] {
        let collapsed =
            events(stdout(&["collapse", "--window", window, path_str(&input)]).as_bytes());
        assert_eq!(
            accesses_by_thread(&collapsed),
            accesses_by_thread(&original)
        );
        // Thread 2's writes keep their order relative to each other and to the loop's end.
        let seqs: Vec<u64> = collapsed
            .iter()
            .filter_map(|e| match e {
                Event::Access(a) if a.pid == 2 => a.ext.seq,
                _ => None,
            })
            .collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        let folded: u64 = collapsed
            .iter()
            .filter_map(|e| match e {
                Event::Repeat(r) => Some(r.count),
                _ => None,
            })
            .sum();
        // Everything but the first and the last read folds, in one or more lines.
        assert_eq!(folded, 998, "window {window}");
    }
}
