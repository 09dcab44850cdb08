//! The user's files (issue 13): a command never destroys the trace it
//! reads, and an error part-way through leaves the previous output
//! untouched and no partial file behind.

use std::path::Path;

use crate::common::{mmiotrace, path_str, scratch, stderr_text};

/// A valid text trace of `accesses` reads, then (if `broken`) a malformed
/// line: long enough that a writer has flushed output before it fails.
fn trace_text(accesses: usize, broken: bool) -> String {
    let mut text =
        String::from("VERSION 20070824\nMAP 0.000010 1 0xfebf0000 0x7f3a9c000000 0x20000 0x0 0\n");
    for i in 0..accesses {
        text.push_str(&format!(
            "R 4 0.{:06} 1 0xfebf0008 0x{i:x} 0x0 0\n",
            i % 1_000_000
        ));
    }
    if broken {
        text.push_str("R 4 0.000140 1 0xfebf0008 0xZZ 0x0 0\n");
    }
    text
}

/// Files in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The commands that read IN and write OUT, as `[command, options...]`.
const WRITERS: [&[&str]; 5] = [
    &["convert"],
    &["convert", "--to", "binary"],
    &["filter", "--dir", "R"],
    &["collapse"],
    &["export", "--to", "csv"],
];

#[test]
fn a_command_refuses_to_write_the_trace_it_reads() {
    let dir = scratch("same-file");
    let trace = dir.join("t.trace");
    let original = trace_text(2_000, false);
    std::fs::write(&trace, &original).expect("trace");
    let symlink = dir.join("link.trace");
    std::os::unix::fs::symlink(&trace, &symlink).expect("symlink");
    let hard_link = dir.join("hard.trace");
    std::fs::hard_link(&trace, &hard_link).expect("hard link");
    for command in WRITERS {
        for output in [&trace, &symlink, &hard_link] {
            let mut args = vec![command[0], path_str(&trace), "-o", path_str(output)];
            args.extend_from_slice(&command[1..]);
            let out = mmiotrace(&args);
            let err = stderr_text(&out);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
            assert!(err.contains("is the trace being read"), "{args:?}: {err}");
            assert_eq!(
                std::fs::read_to_string(&trace).expect("trace"),
                original,
                "{args:?} changed its input"
            );
        }
    }
    // Reading through the link is the same file too.
    let out = mmiotrace(&["convert", path_str(&symlink), "-o", path_str(&hard_link)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_text(&out));
    assert_eq!(listing(&dir), ["hard.trace", "link.trace", "t.trace"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_error_part_way_leaves_the_previous_output_and_no_partial_file() {
    let dir = scratch("atomic");
    let broken = dir.join("broken.trace");
    std::fs::write(&broken, trace_text(20_000, true)).expect("trace");
    let old = dir.join("old.out");
    let mut commands: Vec<&[&str]> = WRITERS.to_vec();
    commands.push(&["export", "--to", "parquet"]);
    commands.push(&["export", "--to", "perfetto"]);
    for command in commands {
        // An existing output stays as it was.
        std::fs::write(&old, b"the previous output\n").expect("old output");
        let mut args = vec![command[0], path_str(&broken), "-o", path_str(&old)];
        args.extend_from_slice(&command[1..]);
        let out = mmiotrace(&args);
        let err = stderr_text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("broken.trace:20003:"), "{args:?}: {err}");
        assert_eq!(
            std::fs::read(&old).expect("old output"),
            b"the previous output\n",
            "{args:?}"
        );
        // A new output is not created at all.
        let new = dir.join("new.out");
        args[3] = path_str(&new);
        let out = mmiotrace(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(!new.exists(), "{args:?} left a partial file");
        assert_eq!(listing(&dir), ["broken.trace", "old.out"], "{args:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_successful_output_replaces_the_file_and_keeps_its_permissions() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let dir = scratch("replace");
    let trace = dir.join("t.trace");
    std::fs::write(&trace, trace_text(100, false)).expect("trace");
    let out_path = dir.join("out.trace");
    std::fs::write(&out_path, b"old").expect("old");
    std::fs::set_permissions(&out_path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    // Through a symlink, the file it points to is replaced.
    let link = dir.join("link");
    std::os::unix::fs::symlink(&out_path, &link).expect("symlink");
    let out = mmiotrace(&["convert", path_str(&trace), "-o", path_str(&link)]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    assert_eq!(
        std::fs::read_to_string(&out_path).expect("out"),
        trace_text(100, false)
    );
    assert!(std::fs::symlink_metadata(&link).expect("link").is_symlink());
    let mode = std::fs::metadata(&out_path)
        .expect("out")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
    // A device is written, not replaced.
    let out = mmiotrace(&["convert", path_str(&trace), "-o", "/dev/null"]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    assert!(
        std::fs::metadata("/dev/null")
            .expect("null")
            .file_type()
            .is_char_device()
    );
    assert_eq!(listing(&dir), ["link", "out.trace", "t.trace"]);
    let _ = std::fs::remove_dir_all(&dir);
}
