//! The analysis parts of `mmiotrace stats`: per thread and process, hot
//! registers by reads and writes, the timeline and the polling loops.

use crate::common::*;

fn stats(args: &[&str]) -> String {
    let input = data("polling.txt");
    let mut all = vec!["stats", path_str(&input)];
    all.extend_from_slice(args);
    stdout(&all)
}

fn assert_lines(report: &str, expected: &[&str]) {
    for line in expected {
        assert!(
            report.lines().any(|l| l == *line),
            "missing line {line:?} in\n{report}"
        );
    }
}

#[test]
fn threads_and_processes() {
    assert_lines(
        &stats(&[]),
        &[
            "threads (2):",
            "         100        100           23           14            9  0.000010 .. 0.001500",
            "         101        100            2            0            2  0.000023 .. 0.000080",
            "processes (1):",
            "         100          2           25           14           11  0.000010 .. 0.001500",
        ],
    );
}

#[test]
fn hot_registers_by_accesses_reads_and_writes() {
    let report = stats(&["--top", "2"]);
    let section = |title: &str| -> Vec<String> {
        report
            .lines()
            .skip_while(|l| *l != title)
            .skip(2)
            .take_while(|l| !l.is_empty())
            .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
            .collect()
    };
    assert_eq!(
        section("top 2 registers by accesses:"),
        ["0xfebf0008 6", "0xfebf0010 5"]
    );
    assert_eq!(
        section("top 2 registers by reads:"),
        ["0xfebf0008 6", "0xfebf0014 5"]
    );
    assert_eq!(
        section("top 2 registers by writes:"),
        ["0xfebf0010 5", "0xfebf0000 2"]
    );
}

#[test]
fn accesses_over_time() {
    let report = stats(&["--interval", "0.001"]);
    assert_lines(
        &report,
        &[
            "accesses over time (0.001000 s intervals):",
            "           0.000000           24          24000  ##############################",
            "           0.001000            1           1000  ##",
        ],
    );
    // Without --interval, at most 40 lines of a 1-2-5 width.
    let auto = stats(&[]);
    assert!(
        auto.contains("accesses over time (0.000050 s intervals):"),
        "{auto}"
    );
}

#[test]
fn the_longest_polling_loops() {
    assert_lines(
        &stats(&[]),
        &[
            "polling loops: 3 (12 accesses would fold into REPEAT lines)",
            "           6    2        100         0xfebf0014   R                0x0                0x7     0.000005  0.000032 .. 0.000037",
            "           4    1        100         0xfebf0008   R                0x0         0x80000000     0.000004  0.000021 .. 0.000025",
            "           2    1        100         0xfebf0018   R                0x1                  -     0.000001  0.000061 .. 0.000062",
        ],
    );
}

#[test]
fn a_collapsed_trace_gives_the_same_counts() {
    let collapsed = stdout(&["stats", path_str(&data("polling.collapsed.txt"))]);
    assert_lines(
        &collapsed,
        &[
            "  REPEAT              3",
            "polling loops: 3 (12 accesses would fold into REPEAT lines; 3 REPEAT lines in the trace)",
            "         100        100           23           14            9  0.000010 .. 0.001500",
        ],
    );
}

#[test]
fn the_timeline_stays_bounded_on_a_long_trace() {
    // 100 seconds of one access every 10 ms: 10000 µs-intervals would be
    // needed at the finest width; the timeline widens instead.
    let mut trace = String::from("VERSION 20070824\n");
    for i in 0..10_000u64 {
        trace.push_str(&format!(
            "R 4 {}.{:06} 1 0x1000 0x0 0x10 1\n",
            i / 100,
            (i % 100) * 10_000
        ));
    }
    let dir = scratch("stats-timeline");
    let input = dir.join("long.txt");
    std::fs::write(&input, trace).expect("write");
    let report = stdout(&["stats", path_str(&input)]);
    assert!(
        report.contains("accesses over time (5.000000 s intervals):"),
        "{report}"
    );
    assert_lines(
        &report,
        &["           5.000000          500            100  ##############################"],
    );
}

#[test]
fn sums_stop_at_the_64_bit_limit_and_never_wrap() {
    let dir = scratch("stats-overflow");
    let trace = dir.join("huge.txt");
    std::fs::write(
        &trace,
        "VERSION 20070824\n\
         MAP 0.000010 1 0xfebf0000 0x7f3a9c000000 0x20000 0x0 0\n\
         R 4 0.000140 1 0xfebf0008 0x1 0x0 7\n\
         REPEAT R 4 0.000150 1 0xfebf0008 0x1 0x0 7 count=18446744073709551615 len=1 end=0.000200\n\
         R 4 0.000240 1 0xfebf0008 0x1 0x0 7\n",
    )
    .expect("trace");
    let report = stdout(&["stats", path_str(&trace)]);
    assert_lines(
        &report,
        &[
            "           7          - 18446744073709551615 18446744073709551615            0  0.000140 .. 0.000240",
            "  (a count of 18446744073709551615 reached the 64-bit limit and stopped there: the trace's REPEAT counts add up to more)",
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_lost_event_count_beyond_64_bits_is_an_error() {
    let dir = scratch("stats-lost");
    let trace = dir.join("lost.txt");
    std::fs::write(
        &trace,
        "VERSION 20070824\nMARK 0.000000 Lost 18446744073709551616 events.\n",
    )
    .expect("trace");
    for command in ["stats", "convert"] {
        let out = mmiotrace(&[command, path_str(&trace)]);
        assert_eq!(out.status.code(), Some(1), "{command}");
        assert!(
            stderr_text(&out)
                .contains("lost.txt:2:20: the lost-event count does not fit in 64 bits"),
            "{command}: {}",
            stderr_text(&out)
        );
    }
    // The largest count is a lost-events line; a text that only looks like
    // one at another time is a mark.
    std::fs::write(
        &trace,
        "VERSION 20070824\nMARK 0.000000 Lost 18446744073709551615 events.\nMARK 0.000001 Lost 18446744073709551616 events.\n",
    )
    .expect("trace");
    let converted = stdout(&["convert", path_str(&trace)]);
    assert_eq!(
        converted,
        "VERSION 20070824\nMARK 0.000000 Lost 18446744073709551615 events.\nMARK 0.000001 Lost 18446744073709551616 events.\n"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
