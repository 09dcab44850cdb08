//! `mmiotrace convert` and `mmiotrace stats`, run as the real binary.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::common::{data, mmiotrace, path_str, scratch, stderr_text, succeeded_stdout};

fn mmiotrace_stdin(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mmiotrace"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mmiotrace");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin)
        .expect("write stdin");
    child.wait_with_output().expect("wait for mmiotrace")
}

#[test]
fn converts_a_real_kernel_log_with_crlf_and_a_cut_off_last_line() {
    let input = data("kernel-crlf-truncated.txt");
    let out = mmiotrace(&["convert", path_str(&input)]);
    let expected = std::fs::read_to_string(data("kernel-crlf-truncated.expected.txt"))
        .expect("expected output fixture");
    assert_eq!(succeeded_stdout(&out), expected);
    let warning = stderr_text(&out);
    assert!(
        warning.contains("kernel-crlf-truncated.txt:31:1: the trace ends in the middle of a record; its last 11 bytes were ignored"),
        "{warning}"
    );
}

#[test]
fn strict_makes_a_cut_off_last_line_an_error() {
    let input = data("kernel-crlf-truncated.txt");
    let out = mmiotrace(&["convert", "--strict", path_str(&input)]);
    assert!(!out.status.success());
    assert!(
        stderr_text(&out).contains("kernel-crlf-truncated.txt:31:1: the trace ends in the middle of a record (11 bytes cut off)"),
        "{}",
        stderr_text(&out)
    );
}

#[test]
fn a_malformed_line_is_an_error_naming_file_line_and_column() {
    let input = data("malformed.txt");
    let out = mmiotrace(&["convert", path_str(&input)]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr_text(&out),
        format!(
            "mmiotrace: error: {}:3:29: expected a hex value after \"0x\"\n",
            input.display()
        )
    );
    let out = mmiotrace(&["stats", path_str(&input)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_text(&out).contains(":3:29: expected a hex value"));
}

#[test]
fn text_to_binary_and_back_is_byte_identical() {
    let dir = scratch("roundtrip");
    for fixture in ["kernel-crlf-truncated.expected.txt", "extended.txt"] {
        let text = data(fixture);
        let mtb = dir.join("trace.mtb");
        // The .mtb extension picks the binary format.
        succeeded_stdout(&mmiotrace(&[
            "convert",
            path_str(&text),
            "-o",
            path_str(&mtb),
        ]));
        let binary = std::fs::read(&mtb).expect("binary trace");
        assert_eq!(&binary[..4], b"\x89MMT");
        let original = std::fs::read(&text).expect("fixture");
        assert!(
            binary.len() < original.len() / 2,
            "{fixture}: binary is compact"
        );
        let back = mmiotrace(&["convert", path_str(&mtb)]);
        assert_eq!(succeeded_stdout(&back).as_bytes(), original, "{fixture}");
    }
}

#[test]
fn stdin_and_stdout_with_dash_and_explicit_formats() {
    let original = std::fs::read(data("extended.txt")).expect("fixture");
    let binary = mmiotrace_stdin(&["convert", "-", "--to", "binary"], &original);
    assert!(binary.status.success(), "{}", stderr_text(&binary));
    assert_eq!(&binary.stdout[..4], b"\x89MMT");
    let text = mmiotrace_stdin(&["convert", "-", "-o", "-"], &binary.stdout);
    assert_eq!(succeeded_stdout(&text).as_bytes(), original);

    let jsonl = mmiotrace_stdin(&["convert", "-", "--to", "jsonl"], &binary.stdout);
    let jsonl = succeeded_stdout(&jsonl);
    assert_eq!(jsonl.lines().count(), 10);
    assert!(jsonl.contains(
        r#"{"kind":"MAP","time_ns":10000,"map_id":1,"phys":"0xfebf0000","virt":"0x7f3a9c000000","len":"0x20000","pc":"0x55d0c0a01234","pid":3121,"seq":0,"process":3120,"path":"/sys/bus/pci/devices/0000:00:03.0/resource0"}"#
    ), "{jsonl}");
    assert!(jsonl.contains(r#""text":"tab\tescaped""#), "{jsonl}");
}

#[test]
fn stats_counts_kinds_maps_widths_and_registers() {
    let input = data("kernel-crlf-truncated.txt");
    let report = succeeded_stdout(&mmiotrace(&["stats", path_str(&input), "--top", "3"]));
    for expected in [
        "events:    27\n",
        "time span: 5.321847 .. 5.700000 (0.378153 s)\n",
        "lost:      12 events (reported by the tracer)\n",
        "  PCIDEV              5\n",
        "  R                   8\n",
        "  W                   6\n",
        "  UNKNOWN             1\n",
        "   1 bytes            3\n",
        "   2 bytes            1\n",
        "   4 bytes            9\n",
        "   8 bytes            1\n",
        "       1         0xfd000000  0x1000000            7            5        0  -\n",
        "       2         0xe0000000   0x200000            1            1        1  -\n",
        "top 3 registers by accesses:\n",
        "          0xfd000200            5            3            2\n",
        "          0xfd6013d4            2            1            1\n",
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in\n{report}"
        );
    }
    assert!(!report.contains("capped"), "{report}");
}

#[test]
fn stats_says_when_the_register_table_is_capped() {
    let input = data("kernel-crlf-truncated.txt");
    let report = succeeded_stdout(&mmiotrace(&[
        "stats",
        path_str(&input),
        "--max-registers",
        "2",
    ]));
    assert!(
        report.contains("(capped at 2 distinct addresses: 12 accesses to further addresses are not counted here)"),
        "{report}"
    );
}

#[test]
fn stats_reads_binary_traces_too() {
    let dir = scratch("stats-binary");
    let mtb = dir.join("ext.mtb");
    succeeded_stdout(&mmiotrace(&[
        "convert",
        path_str(&data("extended.txt")),
        "-o",
        path_str(&mtb),
    ]));
    let report = succeeded_stdout(&mmiotrace(&["stats", path_str(&mtb)]));
    assert!(report.contains("(binary)"), "{report}");
    assert!(report.contains("  16 bytes            1\n"), "{report}");
    assert!(report.contains("  32 bytes            1\n"), "{report}");
    assert!(
        report.contains("/sys/bus/pci/devices/0000:00:03.0/resource0"),
        "{report}"
    );
}

#[test]
fn garbage_and_missing_files_are_errors() {
    let dir = scratch("garbage");
    let bad = dir.join("bad.mtb");
    std::fs::write(
        &bad,
        b"\x89MMT\r\n\x1a\n\x02\x00\x00\x00\x7f\x00\x00\x00\x00",
    )
    .expect("write");
    let out = mmiotrace(&["convert", path_str(&bad)]);
    assert_eq!(
        stderr_text(&out),
        format!(
            "mmiotrace: error: {}:@12: unknown record tag 0x7f\n",
            bad.display()
        )
    );
    let out = mmiotrace(&["stats", path_str(&dir.join("absent.txt"))]);
    assert!(!out.status.success());
    assert!(
        stderr_text(&out).contains("cannot open"),
        "{}",
        stderr_text(&out)
    );
}

#[test]
fn a_flipped_bit_in_a_binary_version_string_is_an_input_error_in_every_command() {
    let dir = scratch("flipped-version");
    let good = dir.join("good.mtb");
    let out = mmiotrace(&[
        "convert",
        path_str(&data("diff-a.txt")),
        "-o",
        path_str(&good),
    ]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    let mut bytes = std::fs::read(&good).expect("binary trace");
    let at = bytes
        .windows(8)
        .position(|w| w == b"20070824")
        .expect("the VERSION string")
        + 1;
    // '0' (0x30) with bit 4 flipped is a space.
    bytes[at] ^= 0x10;
    let bad = dir.join("ver.trace");
    std::fs::write(&bad, &bytes).expect("flipped trace");
    let expected = format!(
        "{}:@{at}: a VERSION string must be non-empty and contain no whitespace",
        bad.display()
    );
    let converted = dir.join("out.txt");
    let commands: [&[&str]; 6] = [
        &["convert", path_str(&bad), "-o", path_str(&converted)],
        &["stats", path_str(&bad)],
        &["filter", path_str(&bad)],
        &["collapse", path_str(&bad)],
        &["export", path_str(&bad), "--to", "csv"],
        &["diff", path_str(&bad), path_str(&good)],
    ];
    for args in commands {
        let out = mmiotrace(args);
        let err = stderr_text(&out);
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        assert!(err.contains(&expected), "{args:?}: {err}");
    }
    assert!(!converted.exists(), "convert left a file behind");
    let _ = std::fs::remove_dir_all(&dir);
}
