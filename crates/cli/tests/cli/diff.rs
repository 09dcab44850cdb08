//! `mmiotrace diff`, run as the real binary on two runs of known difference.

use crate::common::*;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = mmiotrace(args);
    (
        out.status.code().expect("exited"),
        String::from_utf8(out.stdout).expect("UTF-8"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The report without its first two lines (which name the inputs by path).
fn body(report: &str) -> String {
    report.lines().skip(2).map(|l| format!("{l}\n")).collect()
}

#[test]
fn reports_the_inserted_removed_and_changed_operations_exactly() {
    let (a, b) = (data("diff-a.txt"), data("diff-b.txt"));
    let (code, report, _) = run(&["diff", path_str(&a), path_str(&b)]);
    assert_eq!(code, 1);
    assert!(report.starts_with(&format!("--- a: {} (7 operations)\n", a.display())));
    assert_eq!(
        body(&report),
        "\
different: 1 changed, 1 removed, 1 inserted; 5 the same
  writes  1 changed, 1 removed, 0 inserted
  reads   0 changed, 0 removed, 1 inserted
  places that differ: 1
(polling loops folded before comparing; --exact compares every access)

@@ a#2 b#2 @@
  R 4 0xfebf0008 0x0
  R 4 0xfebf0008 0x80000000
- W 4 0xfebf0010 0x1                       (a#4 0.000030 seq=6)
~ W 4 0xfebf0014 0x100 -> 0x200            (a#5 0.000031 seq=7, b#4 0.000131 seq=10)
  R 4 0xfebf0018 0xabcd
+ R 4 0xfebf0020 0x5                       (b#6 0.000133 seq=12)
  W 4 0xfebf001c 0x7
"
    );
}

#[test]
fn the_other_way_round_removed_and_inserted_swap() {
    let (code, report, _) = run(&[
        "diff",
        "--summary",
        path_str(&data("diff-b.txt")),
        path_str(&data("diff-a.txt")),
    ]);
    assert_eq!(code, 1);
    assert!(
        report.contains("different: 1 changed, 1 removed, 1 inserted; 5 the same\n")
            && report.contains("  writes  1 changed, 0 removed, 1 inserted\n")
            && report.contains("  reads   0 changed, 1 removed, 0 inserted\n"),
        "{report}"
    );
    assert!(
        !report.contains("@@"),
        "--summary prints no details: {report}"
    );
}

#[test]
fn exact_counts_every_poll() {
    let (code, report, _) = run(&[
        "diff",
        "--exact",
        path_str(&data("diff-a.txt")),
        path_str(&data("diff-b.txt")),
    ]);
    assert_eq!(code, 1);
    // B polls 7 times, A 3 times: 4 more reads of 0 inserted.
    assert!(
        report.contains("(9 operations)") && report.contains("(13 operations)"),
        "{report}"
    );
    assert!(
        report.contains("  reads   0 changed, 0 removed, 5 inserted\n"),
        "{report}"
    );
    assert_eq!(
        report.matches("+ R 4 0xfebf0008 0x0 ").count(),
        4,
        "{report}"
    );
}

#[test]
fn same_traces_exit_0_and_errors_exit_2() {
    let a = data("diff-a.txt");
    let (code, report, _) = run(&["diff", path_str(&a), path_str(&a)]);
    assert_eq!(code, 0);
    assert!(report.contains("same: all 7 operations\n"), "{report}");

    // The same run in binary form, and with other timing, is the same too.
    let dir = scratch("diff-same");
    let mtb = dir.join("a.mtb");
    stdout(&["convert", path_str(&a), "-o", path_str(&mtb)]);
    assert_eq!(run(&["diff", path_str(&a), path_str(&mtb)]).0, 0);

    let (code, _, err) = run(&["diff", path_str(&a), "/nonexistent/trace"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot open /nonexistent/trace"), "{err}");
    let bad = dir.join("bad.txt");
    std::fs::write(&bad, "R 4 oops\n").expect("write");
    let (code, _, err) = run(&["diff", path_str(&a), path_str(&bad)]);
    assert_eq!(code, 2);
    assert!(err.contains("bad.txt:1:"), "{err}");
}

#[test]
fn by_offset_lines_up_a_device_that_moved() {
    let dir = scratch("diff-moved");
    let moved = dir.join("b-moved.txt");
    let b = std::fs::read_to_string(data("diff-b.txt")).expect("fixture");
    std::fs::write(&moved, b.replace("0xfebf", "0xfd00")).expect("write");
    let a = data("diff-a.txt");
    // By address, nothing but the polls' shape lines up.
    let (_, by_address, _) = run(&["diff", "-s", path_str(&a), path_str(&moved)]);
    assert!(by_address.contains("; 0 the same"), "{by_address}");
    let (code, by_offset, _) = run(&["diff", "--by-offset", path_str(&a), path_str(&moved)]);
    assert_eq!(code, 1);
    assert!(
        by_offset.contains("different: 1 changed, 1 removed, 1 inserted; 5 the same\n")
            && by_offset.contains("~ W 4 map1+0x14 0x100 -> 0x200"),
        "{by_offset}"
    );
}

#[test]
fn long_traces_with_scattered_changes() {
    // 20000 writes of a counter; B changes every 1000th value and drops one write.
    let mut a = String::from("VERSION 20070824\n");
    let mut b = a.clone();
    for i in 0..20_000u64 {
        let line = |v: u64| {
            format!(
                "W 4 0.{:06} 1 0x{:x} {v:#x} 0x10 1\n",
                i,
                0x1000 + (i % 64) * 4
            )
        };
        a.push_str(&line(i));
        if i == 12_345 {
            continue;
        }
        b.push_str(&line(if i % 1000 == 999 { i + 1 } else { i }));
    }
    let dir = scratch("diff-long");
    let (pa, pb) = (dir.join("a.txt"), dir.join("b.txt"));
    std::fs::write(&pa, a).expect("write");
    std::fs::write(&pb, b).expect("write");
    let (code, report, _) = run(&["diff", "-s", path_str(&pa), path_str(&pb)]);
    assert_eq!(code, 1);
    assert!(
        report.contains("different: 20 changed, 1 removed, 0 inserted; 19979 the same\n"),
        "{report}"
    );
}

#[test]
fn both_traces_from_standard_input_are_refused() {
    let out = mmiotrace(&["diff", "-", "-"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_text(&out).contains("both standard input"),
        "{}",
        stderr_text(&out)
    );
}
