//! Runs the real `mmiotrace-bench` on small counts. The `traced` row needs
//! the recorder and is exercised by `bench/run`, not here.

use std::process::{Command, Output};

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmiotrace-bench"))
        .args(args)
        .output()
        .expect("mmiotrace-bench should start")
}

#[test]
fn plain_and_floor_rows_print_a_table() {
    let output = bench(&[
        "--only",
        "plain",
        "--only",
        "floor",
        "--reps",
        "3",
        "--fault-accesses",
        "2000",
        "--plain-accesses",
        "20000",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .skip(2)
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    assert_eq!(rows[0][0], "plain");
    assert_eq!(rows[1][0], "floor");
    assert_eq!(
        rows[1][4], "1.000",
        "the floor is its own yardstick: {stdout}"
    );
    let ns = |row: &[&str]| row[1].parse::<f64>().expect("ns/access is a number");
    assert!(
        ns(&rows[0]) < ns(&rows[1]),
        "a fault costs more than a plain access: {stdout}"
    );
}

#[test]
fn worker_untraced_stores_reach_the_file() {
    let page =
        std::env::temp_dir().join(format!("mmiotrace-bench-test-{}.page", std::process::id()));
    std::fs::write(&page, [0u8; 4096]).expect("create the page file");
    let output = bench(&[
        "--worker",
        page.to_str().expect("UTF-8 path"),
        "--reps",
        "2",
        "--fault-accesses",
        "1000",
    ]);
    let contents = std::fs::read(&page).expect("read the page file");
    let _ = std::fs::remove_file(&page);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout
            .lines()
            .filter(|line| line.starts_with("ns_per_access "))
            .count(),
        2,
        "{stdout}"
    );
    assert_eq!(
        contents[..4],
        499u32.to_le_bytes(),
        "the last of 500 stores wrote 499"
    );
}

#[test]
fn traced_row_runs_or_says_why_not() {
    // The recorder is looked up next to the bench; a test build has it only
    // if `mmiotrace` was built in the same profile.
    let bench_exe = std::path::Path::new(env!("CARGO_BIN_EXE_mmiotrace-bench"));
    let recorder_built = bench_exe.with_file_name("mmiotrace").is_file();
    let output = bench(&["--only", "traced", "--reps", "2", "--fault-accesses", "400"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let row: Vec<&str> = stdout
        .lines()
        .nth(2)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(row.first(), Some(&"traced"), "{stdout}");
    if recorder_built {
        assert!(output.status.success(), "{stdout}");
        assert!(
            row[1].parse::<f64>().is_ok_and(|ns| ns > 100.0),
            "a traced access faults: {stdout}"
        );
    } else {
        assert_eq!(output.status.code(), Some(1), "{stdout}");
        assert!(
            stdout.contains("mmiotrace not found: build the whole workspace"),
            "{stdout}"
        );
    }
}
