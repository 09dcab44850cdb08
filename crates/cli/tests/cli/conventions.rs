//! What a command-line tool is expected to do: name its commit, complete
//! in shells, have manual pages, keep binary off a terminal, and show
//! progress on a terminal only.

use std::path::Path;
use std::process::Command;

use crate::common::*;

/// Runs `mmiotrace ARGS` with a terminal as its standard input, output and
/// error (util-linux's `script`); returns its exit status and what the
/// terminal showed.
fn on_a_terminal(args: &[&str], dir: &Path) -> (Option<i32>, String) {
    let command = std::iter::once(env!("CARGO_BIN_EXE_mmiotrace"))
        .chain(args.iter().copied())
        .map(|arg| format!("'{}'", arg.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(dir)
        .output()
        .expect("run script(1)");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn version_names_the_commit() {
    let version = stdout(&["--version"]);
    let commit = Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short=12",
            "HEAD",
        ])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map_or("unknown".to_string(), |out| {
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        });
    assert_eq!(
        version,
        format!(
            "mmiotrace {} (commit {commit})\n",
            env!("CARGO_PKG_VERSION")
        )
    );
}

const COMMANDS: [&str; 12] = [
    "record",
    "vm",
    "import",
    "convert",
    "decode",
    "stats",
    "collapse",
    "filter",
    "diff",
    "export",
    "completions",
    "man-pages",
];

#[test]
fn completions_for_every_command() {
    let dir = scratch("completions");
    let bash = stdout(&["completions", "bash"]);
    for command in COMMANDS {
        assert!(bash.contains(command), "bash completion lacks {command}");
    }
    assert!(bash.contains("--counter") && bash.contains("chrome-json"));
    let script = dir.join("mmiotrace.bash");
    std::fs::write(&script, &bash).expect("write");
    let check = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .expect("bash -n");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        assert!(
            stdout(&["completions", shell]).contains("export"),
            "{shell}"
        );
    }
    let out = mmiotrace(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_manual_page_for_every_command() {
    let dir = scratch("man-pages").join("man1");
    stdout(&["man-pages", path_str(&dir)]);
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .expect("written")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    let mut expected: Vec<String> = COMMANDS
        .iter()
        .map(|c| format!("mmiotrace-{c}.1"))
        .chain(["mmiotrace.1".to_string()])
        .collect();
    expected.sort();
    assert_eq!(pages, expected);
    let export = std::fs::read_to_string(dir.join("mmiotrace-export.1")).expect("page");
    assert!(export.contains(".TH mmiotrace-export 1"), "{export}");
    assert!(export.contains(r"mmiotrace\-export \- Export a trace"));
    assert!(export.contains(r"chrome\-json"));
    let main = std::fs::read_to_string(dir.join("mmiotrace.1")).expect("page");
    assert!(main.contains(r"mmiotrace\-record(1)"), "{main}");
}

#[test]
fn binary_is_not_written_to_a_terminal() {
    let dir = scratch("binary-terminal");
    let trace = data("polling.txt");
    let trace = path_str(&trace);
    for args in [
        &["convert", trace, "--to", "binary"][..],
        &["collapse", trace, "--to", "binary"],
        &["export", "--to", "perfetto", trace],
    ] {
        let (status, shown) = on_a_terminal(args, &dir);
        assert_eq!(status, Some(1), "{args:?}: {shown}");
        assert!(
            shown.contains("to a terminal: give -o FILE"),
            "{args:?}: {shown}"
        );
    }
    // Text is fine, and binary into a pipe or a file is too.
    let (status, shown) = on_a_terminal(&["convert", trace], &dir);
    assert_eq!(status, Some(0), "{shown}");
    assert!(shown.contains("VERSION 20070824"));
    let out = mmiotrace(&["convert", trace, "--to", "binary"]);
    assert!(out.status.success());
    assert!(!out.stdout.is_empty());
}

#[test]
fn progress_on_a_terminal_only_and_not_with_quiet() {
    let dir = scratch("progress");
    let trace = data("polling.txt");
    let trace = path_str(&trace);
    let out = dir.join("out.mtb");
    let out = path_str(&out);
    for command in [
        &["convert", trace, "-o", out][..],
        &["export", "--to", "csv", trace, "-o", out],
        &["stats", trace],
    ] {
        let (status, shown) = on_a_terminal(command, &dir);
        assert_eq!(status, Some(0), "{command:?}: {shown}");
        assert!(shown.contains("reading "), "{command:?}: {shown}");
        let mut quiet = command.to_vec();
        quiet.push("-q");
        let (status, shown) = on_a_terminal(&quiet, &dir);
        assert_eq!(status, Some(0), "{quiet:?}: {shown}");
        assert!(!shown.contains("reading "), "{quiet:?}: {shown}");
        let piped = mmiotrace(command);
        assert!(piped.status.success());
        assert_eq!(stderr_text(&piped), "", "{command:?}");
    }
}

#[test]
fn record_shows_a_live_line_on_a_terminal_only() {
    let dir = scratch("live-line");
    let (status, shown) = on_a_terminal(&["record", "-o", "t.trace", "true"], &dir);
    assert_eq!(status, Some(0), "{shown}");
    assert!(shown.contains("mmiotrace: recording: "), "{shown}");
    assert!(shown.contains("program exited with status 0"), "{shown}");
    let (status, shown) = on_a_terminal(&["record", "-q", "-o", "t.trace", "true"], &dir);
    assert_eq!(status, Some(0), "{shown}");
    assert_eq!(shown, "");
    let piped = mmiotrace(&["record", "-o", path_str(&dir.join("t.trace")), "true"]);
    assert!(piped.status.success());
    assert!(!stderr_text(&piped).contains("recording:"));
}
