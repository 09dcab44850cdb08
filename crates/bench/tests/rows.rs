//! Runs the real `mmiotrace-bench` on small counts. Rows that need the
//! recorder run when it was built next to the bench (as in
//! target/release), and must say why not otherwise.

use std::path::Path;
use std::process::{Command, Output};

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmiotrace-bench"))
        .args(args)
        .output()
        .expect("mmiotrace-bench should start")
}

/// The variable that names valgrind-mmt's valgrind when --valgrind-mmt
/// does not.
const VALGRIND_MMT_ENV: &str = "MMIOTRACE_BENCH_VALGRIND_MMT";

/// [`bench`] with no valgrind-mmt named in the environment.
fn bench_without_mmt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmiotrace-bench"))
        .args(args)
        .env_remove(VALGRIND_MMT_ENV)
        .output()
        .expect("mmiotrace-bench should start")
}

fn recorder_built() -> bool {
    Path::new(env!("CARGO_BIN_EXE_mmiotrace-bench"))
        .with_file_name("mmiotrace")
        .is_file()
}

/// The table's rows, as cells, without the header and the rule.
fn table(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .filter(|line| line.starts_with('|'))
        .skip(2)
        .map(|line| {
            line.trim_matches('|')
                .split(" | ")
                .map(|cell| cell.trim().to_owned())
                .collect()
        })
        .collect()
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
    assert!(stdout.starts_with("mmiotrace-bench, "), "{stdout}");
    assert!(
        stdout.contains("\ncommand: bench/run --only plain"),
        "{stdout}"
    );
    let rows = table(&stdout);
    assert_eq!(rows.len(), 2, "{stdout}");
    assert_eq!(rows[0][0], "plain");
    assert_eq!(rows[1][0], "floor");
    assert_eq!(
        rows[1][2], "1.000 x floor",
        "the floor is its own yardstick: {stdout}"
    );
    let ns = |row: &[String]| {
        row[1]
            .strip_suffix(" ns")
            .and_then(|n| n.parse::<f64>().ok())
            .expect("ns/access is a number")
    };
    assert!(
        ns(&rows[0]) < ns(&rows[1]),
        "a fault costs more than a plain access: {stdout}"
    );
}

#[test]
fn an_unknown_row_is_an_error_that_lists_the_rows() {
    let output = bench(&["--only", "nonesuch"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no row named \"nonesuch\"")
            && stderr.contains("capture-single-step-8")
            && stderr.contains("syscall")
            && stderr.contains("buffer-memcpy-valgrind")
            && stderr.contains("patched-general")
            && stderr.contains("buffer-load64-patched")
            && stderr.contains("buffer-store32-mmt"),
        "{stderr}"
    );
}

/// Runs a worker untraced on a fresh page file; returns its stdout and
/// the file's contents afterwards.
fn worker(tag: &str, args: &[&str]) -> (String, Vec<u8>) {
    let page = std::env::temp_dir().join(format!(
        "mmiotrace-bench-test-{}-{tag}.page",
        std::process::id()
    ));
    std::fs::write(&page, [0u8; 4096]).expect("create the page file");
    let mut all = vec!["--worker", page.to_str().expect("UTF-8 path")];
    all.extend_from_slice(args);
    let output = bench(&all);
    let contents = std::fs::read(&page).expect("read the page file");
    let _ = std::fs::remove_file(&page);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        contents,
    )
}

fn word(contents: &[u8], index: usize) -> u32 {
    u32::from_le_bytes(
        contents[4 * index..4 * index + 4]
            .try_into()
            .expect("4 bytes"),
    )
}

#[test]
fn worker_untraced_stores_reach_the_file() {
    let (stdout, contents) = worker("mov", &["--reps", "2", "--fault-accesses", "1000"]);
    assert_eq!(
        stdout
            .lines()
            .filter(|line| line.starts_with("ns_per_access "))
            .count(),
        2,
        "{stdout}"
    );
    assert_eq!(word(&contents, 0), 499, "the last of 500 stores wrote 499");
}

#[test]
fn worker_adds_and_counts_its_instructions() {
    let (stdout, contents) = worker(
        "add",
        &["--work", "add", "--reps", "2", "--fault-accesses", "100"],
    );
    // Warm-up 2000 adds of 0..2000, then two reps of 100 adds of 0..100.
    let sum = (0..2000u32).sum::<u32>() + 2 * (0..100u32).sum::<u32>();
    assert_eq!(word(&contents, 0), sum);
    assert!(stdout.contains("made 2200\n"), "{stdout}");
}

#[test]
fn worker_threads_each_write_their_own_register() {
    let (stdout, contents) = worker(
        "threads",
        &["--work", "threads", "--threads", "4", "--accesses", "1000"],
    );
    assert!(stdout.contains("made 4000\n"), "{stdout}");
    for thread in 0..4 {
        assert_eq!(word(&contents, thread * 16), 499, "thread {thread}");
    }
}

#[test]
fn worker_compute_rings_the_doorbell_every_64_kib() {
    let (stdout, contents) = worker("compute", &["--work", "compute", "--mib", "1"]);
    let crc = stdout
        .lines()
        .find_map(|line| line.strip_prefix("crc "))
        .expect("a crc line");
    assert_eq!(
        u32::from_str_radix(crc, 16).expect("hex crc"),
        word(&contents, 0),
        "the last doorbell holds the final CRC"
    );
    assert!(
        stdout.contains("made 32\n"),
        "16 doorbells and 16 status reads: {stdout}"
    );
}

#[test]
fn worker_burst_fills_the_page_per_fault() {
    let (stdout, contents) = worker("burst", &["--work", "burst", "--events", "3000"]);
    assert!(stdout.contains("made 3072\n"), "{stdout}");
    assert!((0..1024).all(|i| word(&contents, i) == 2));
}

#[test]
fn traced_rows_run_or_say_why_not() {
    let output = bench(&[
        "--only",
        "emulated",
        "--only",
        "capture-alias",
        "--only",
        "capture-single-step-1",
        "--reps",
        "2",
        "--fault-accesses",
        "400",
        "--capture-accesses",
        "400",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let rows = table(&stdout);
    let names: Vec<&str> = rows.iter().map(|row| row[0].as_str()).collect();
    assert_eq!(
        names,
        [
            "emulated",
            "capture-alias-1",
            "capture-alias-2",
            "capture-alias-4",
            "capture-alias-8",
            "capture-single-step-1"
        ],
        "{stdout}"
    );
    if recorder_built() {
        assert!(output.status.success(), "{stdout}");
        assert!(
            rows[0][1]
                .strip_suffix(" ns")
                .and_then(|ns| ns.parse::<f64>().ok())
                .is_some_and(|ns| ns > 100.0),
            "a traced access faults: {stdout}"
        );
        // mmiotrace at every thread count; the kernel design with one
        // thread (it loses only other threads' accesses).
        for row in &rows[1..] {
            assert_eq!(row[1], "100.000 %", "{stdout}");
        }
        assert!(
            rows[5][3].contains("0 recursive probe hits"),
            "the single-step MARK was read: {stdout}"
        );
    } else {
        assert_eq!(output.status.code(), Some(1), "{stdout}");
        assert!(
            stdout.contains("mmiotrace not found: build the whole workspace"),
            "{stdout}"
        );
    }
}

#[test]
fn the_syscall_row_is_the_getpid_yardstick_of_the_per_access_rows() {
    let output = bench(&[
        "--only",
        "floor",
        "--only",
        "syscall",
        "--reps",
        "3",
        "--fault-accesses",
        "2000",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows = table(&stdout);
    let names: Vec<&str> = rows.iter().map(|row| row[0].as_str()).collect();
    assert_eq!(names, ["floor", "syscall"], "{stdout}");
    assert!(
        rows[1][2].ends_with(", 1.000 x getpid"),
        "getpid is its own yardstick: {stdout}"
    );
    let getpids = rows[0][2]
        .strip_prefix("1.000 x floor, ")
        .and_then(|rest| rest.strip_suffix(" x getpid"))
        .and_then(|n| n.parse::<f64>().ok())
        .expect("the floor as a multiple of getpid");
    assert!(
        getpids > 1.0,
        "a fault with a signal costs more than a system call: {stdout}"
    );
    assert!(rows[1][3].contains("3 reps x 2000 calls"), "{stdout}");
}

/// Runs a worker untraced on a fresh file holding `contents`; returns its
/// stdout and the file's contents afterwards.
fn buffer_worker(tag: &str, contents: &[u8], args: &[&str]) -> (Output, Vec<u8>) {
    let path = std::env::temp_dir().join(format!(
        "mmiotrace-bench-test-{}-{tag}.buffer",
        std::process::id()
    ));
    std::fs::write(&path, contents).expect("create the buffer file");
    let mut all = vec!["--worker", path.to_str().expect("UTF-8 path")];
    all.extend_from_slice(args);
    let output = bench(&all);
    let after = std::fs::read(&path).expect("read the buffer file");
    let _ = std::fs::remove_file(&path);
    (output, after)
}

fn pass_times(stdout: &str) -> usize {
    stdout
        .lines()
        .filter(|line| {
            line.strip_prefix("pass_ns ")
                .is_some_and(|ns| ns.parse::<u64>().is_ok())
        })
        .count()
}

#[test]
fn worker_buffer_store32_fills_the_whole_buffer_each_pass() {
    let (output, contents) = buffer_worker(
        "store32",
        &[0xff; 8192],
        &[
            "--work",
            "buffer-store32",
            "--reps",
            "3",
            "--accesses",
            "2048",
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert_eq!(pass_times(&stdout), 3, "{stdout}");
    assert!(stdout.contains("made 6144\n"), "3 passes of 2048: {stdout}");
    for i in 0..2048 {
        assert_eq!(word(&contents, i), i as u32 + 2, "word {i}, last pass 2");
    }
}

/// The load loop `work` over 512 words of the bench's pattern, 2 passes:
/// it loads them all, and a changed word (the byte at `flipped`) makes the
/// sum it checks wrong, which it says.
fn load64_loads_every_word_and_checks_their_sum(work: &str, flipped: usize) {
    // The pattern the bench writes (worker::load64_pattern).
    let pattern = |i: u64| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (i << 7);
    let mut contents: Vec<u8> = (0..512u64).flat_map(|i| pattern(i).to_le_bytes()).collect();
    let args = ["--work", work, "--reps", "2", "--accesses", "512"];
    let (output, _) = buffer_worker(work, &contents, &args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert_eq!(pass_times(&stdout), 2, "{stdout}");
    assert!(stdout.contains("made 1024\n"), "{stdout}");
    contents[flipped] ^= 0x80;
    let (output, _) = buffer_worker(&format!("{work}-bad"), &contents, &args);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("the loads summed to"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn worker_buffer_load64_checks_the_sum_of_what_it_loaded() {
    load64_loads_every_word_and_checks_their_sum("buffer-load64", 8 * 300);
}

#[test]
fn worker_buffer_memcpy_copies_its_source_into_the_file() {
    let args = ["--work", "buffer-memcpy", "--reps", "2", "--mib", "1"];
    let (output, contents) = buffer_worker("memcpy", &vec![0; 1 << 20], &args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert_eq!(pass_times(&stdout), 2, "{stdout}");
    assert!(stdout.contains("made 2097152\n"), "{stdout}");
    assert!(
        contents.iter().filter(|&&byte| byte == 0).count() < 1 << 14,
        "the generated data replaced the zeros"
    );
    // A buffer too small for --mib is an error, not a write past its end.
    let (output, _) = buffer_worker("memcpy-small", &[0; 4096], &args);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("1 MiB do not fit the 4096-byte file"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn worker_buffer_long_loops_store_and_load_like_the_compiled_ones() {
    let (output, contents) = buffer_worker(
        "store32-long",
        &[0xff; 8192],
        &[
            "--work",
            "buffer-store32-long",
            "--reps",
            "3",
            "--accesses",
            "2000",
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert_eq!(pass_times(&stdout), 3, "{stdout}");
    assert!(stdout.contains("made 6000\n"), "3 passes of 2000: {stdout}");
    for i in 0..2000 {
        assert_eq!(word(&contents, i), i as u32 + 2, "word {i}, last pass 2");
    }
    assert_eq!(word(&contents, 2000), u32::MAX, "past the last store");

    // The last word loaded too.
    load64_loads_every_word_and_checks_their_sum("buffer-load64-long", 8 * 511 + 7);
}

#[test]
fn worker_buffer_copy256_copies_block_after_block_and_checks_them() {
    // 3200 accesses: 200 copies of 256 bytes, 51,200 bytes of the 64 KiB.
    let (output, contents) = buffer_worker(
        "copy256",
        &[0xee; 65536],
        &[
            "--work",
            "buffer-copy256",
            "--reps",
            "3",
            "--accesses",
            "3200",
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert_eq!(pass_times(&stdout), 3, "{stdout}");
    assert!(
        stdout.contains("made 153600\n"),
        "3 passes of 51,200 bytes: {stdout}"
    );
    assert!(contents[..51_200].iter().any(|&b| b != 0xee), "copied");
    assert!(
        contents[51_200..].iter().all(|&b| b == 0xee),
        "nothing past the blocks"
    );
    // Too small a file for the blocks: an error naming it.
    let (output, _) = buffer_worker(
        "copy256-small",
        &[0; 4096],
        &["--work", "buffer-copy256", "--accesses", "3200"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("do not fit the 4096-byte file"),
        "{stderr}"
    );
}

#[test]
fn buffer_rows_run_or_say_why_not() {
    let output = bench_without_mmt(&[
        "--only",
        "buffer",
        "--reps",
        "2",
        "--buffer-accesses",
        "3000",
        "--buffer-mib",
        "1",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let rows = table(&stdout);
    let names: Vec<&str> = rows.iter().map(|row| row[0].as_str()).collect();
    assert_eq!(
        names,
        [
            "buffer-store32",
            "buffer-load64",
            "buffer-memcpy",
            "buffer-copy256",
            "buffer-store32-patched",
            "buffer-load64-patched",
            "buffer-memcpy-patched",
            "buffer-copy256-patched",
            "buffer-store32-valgrind",
            "buffer-load64-valgrind",
            "buffer-memcpy-valgrind",
            "buffer-copy256-valgrind",
            "buffer-store32-mmt",
            "buffer-load64-mmt",
            "buffer-memcpy-mmt",
            "buffer-copy256-mmt"
        ],
        "{stdout}"
    );
    for row in &rows[8..12] {
        assert!(
            row[1] == "skipped" && row[3].ends_with("valgrind is not installed")
                || row[2].ends_with(" x bare") && row[3].contains("median of 2 passes each"),
            "{stdout}"
        );
    }
    for row in &rows[12..] {
        assert_eq!(row[1], "skipped", "{stdout}");
        assert!(
            row[3].ends_with("no valgrind-mmt: --valgrind-mmt PATH or MMIOTRACE_BENCH_VALGRIND_MMT names its valgrind"),
            "{stdout}"
        );
    }
    if !recorder_built() {
        assert_eq!(output.status.code(), Some(1), "{stdout}");
        assert!(
            stdout.contains("mmiotrace not found: build the whole workspace"),
            "{stdout}"
        );
        return;
    }
    assert!(output.status.success(), "{stdout}");
    let checks = [
        "3000 4-byte stores",
        "3000 8-byte loads",
        "1 MiB (--buffer-mib)",
        "187 memcpys of 256 bytes",
    ];
    for (row, check) in rows[..8].iter().zip(checks.iter().cycle()) {
        assert!(row[2].ends_with(" x untraced"), "{stdout}");
        assert!(row[1].contains(" vs "), "{stdout}");
        assert!(
            row[3].contains(check) && row[3].contains("in the trace"),
            "{stdout}"
        );
    }
    for row in [&rows[0], &rows[1], &rows[4], &rows[5]] {
        assert!(row[3].contains("with its offset and value"), "{stdout}");
    }
    for row in [&rows[2], &rows[3], &rows[6], &rows[7]] {
        assert!(
            row[3].contains("every byte written in the trace"),
            "{stdout}"
        );
    }
    // Patched, the store and load loops and the 256-byte copies run every
    // pass traced; the 64 MiB memcpy (`rep movsb`) stays on the fault
    // path, one pass.
    for row in [&rows[4], &rows[5], &rows[7]] {
        assert!(
            row[3].contains("traced: median of 2 passes") && row[3].contains(" sites patched"),
            "{stdout}"
        );
    }
    assert!(
        rows[6][3].contains("traced: 1 pass") && rows[6][3].contains("; patch: "),
        "{stdout}"
    );
}

#[test]
fn patched_rows_run_or_say_why_not() {
    let output = bench(&[
        "--only",
        "patched",
        "--only",
        "patched-spool",
        "--only",
        "patched-general",
        "--reps",
        "2",
        "--fault-accesses",
        "2000",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let rows = table(&stdout);
    let names: Vec<&str> = rows.iter().map(|row| row[0].as_str()).collect();
    assert_eq!(
        names,
        ["patched", "patched-spool", "patched-general"],
        "{stdout}"
    );
    if !recorder_built() {
        assert_eq!(output.status.code(), Some(1), "{stdout}");
        return;
    }
    assert!(output.status.success(), "{stdout}");
    for row in &rows {
        assert!(
            row[1].ends_with(" ns")
                && row[3].contains("all 6000 in the trace")
                && row[3].contains(" sites patched"),
            "{stdout}"
        );
    }
    assert!(rows[1][3].contains("--spool"), "{stdout}");
    assert!(rows[2][3].contains("MMIOTRACE_PATCH=general"), "{stdout}");
}

#[test]
fn mmt_is_a_group_and_its_rows_say_why_they_are_skipped() {
    let output = bench_without_mmt(&["--only", "mmt"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let rows = table(&stdout);
    let names: Vec<&str> = rows.iter().map(|row| row[0].as_str()).collect();
    assert_eq!(
        names,
        [
            "buffer-store32-mmt",
            "buffer-load64-mmt",
            "buffer-memcpy-mmt",
            "buffer-copy256-mmt"
        ],
        "{stdout}"
    );
    assert!(rows.iter().all(|row| row[1] == "skipped"), "{stdout}");
}

/// Runs where valgrind-mmt is named (MMIOTRACE_BENCH_VALGRIND_MMT), as on
/// the project's VM; elsewhere there is nothing to run.
#[test]
fn mmt_rows_check_valgrind_mmts_log_when_it_is_there() {
    let Some(valgrind_mmt) = std::env::var_os(VALGRIND_MMT_ENV) else {
        eprintln!("{VALGRIND_MMT_ENV} is not set: the mmt rows are not run");
        return;
    };
    let output = bench_without_mmt(&[
        "--only",
        "mmt",
        "--valgrind-mmt",
        valgrind_mmt.to_str().expect("a UTF-8 path"),
        "--reps",
        "2",
        "--buffer-accesses",
        "3000",
        "--buffer-mib",
        "1",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows = table(&stdout);
    for row in &rows {
        assert!(
            row[2].ends_with(" x bare")
                && row[3].contains("per access ")
                && row[3].contains("in valgrind-mmt's log"),
            "{stdout}"
        );
    }
    assert!(rows[0][3].contains("every store in valgrind-mmt's log with its offset and value"));
    assert!(rows[1][3].contains("every load in valgrind-mmt's log with its offset and value"));
}

#[test]
fn recorder_drain_rows_read_every_event_back_with_either_clock() {
    let output = bench(&[
        "--only",
        "recorder-drain",
        "--drain-events",
        "20000",
        "--program-runs",
        "1",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let rows = table(&stdout);
    let names: Vec<&str> = rows.iter().map(|row| row[0].as_str()).collect();
    assert_eq!(
        names,
        [
            "recorder-drain-text",
            "recorder-drain-binary",
            "recorder-drain-tsc-text",
            "recorder-drain-tsc-binary",
            "recorder-drain-tsc-paced"
        ],
        "{stdout}"
    );
    if !recorder_built() {
        assert_eq!(output.status.code(), Some(1), "{stdout}");
        return;
    }
    assert!(output.status.success(), "{stdout}");
    for row in &rows {
        assert!(
            row[1].ends_with(" M events/s") && row[3].contains("20000 events")
                || row[0].contains("-tsc-") && row[1] == "skipped",
            "{stdout}"
        );
    }
}

#[test]
fn push_floor_rows_time_a_producer_whose_records_are_all_read() {
    let output = bench(&[
        "--only",
        "push-floor",
        "--only",
        "push-floor-no-lock",
        "--only",
        "push-floor-no-lock-no-tsc",
        "--only",
        "push-floor-compact",
        "--reps",
        "1",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let rows = table(&stdout);
    let names: Vec<&str> = rows.iter().map(|row| row[0].as_str()).collect();
    assert_eq!(
        names,
        [
            "push-floor",
            "push-floor-no-lock",
            "push-floor-no-lock-no-tsc",
            "push-floor-compact"
        ],
        "{stdout}"
    );
    for row in &rows {
        assert!(
            row[1].ends_with(" ns") && row[3].contains("1 reps x 2000000 records"),
            "{stdout}"
        );
    }
}

#[test]
fn shared_site_row_times_plain_copies_through_patched_sites() {
    let output = bench(&[
        "--only",
        "shared-site",
        "--reps",
        "2",
        "--buffer-accesses",
        "16000",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let rows = table(&stdout);
    assert_eq!(rows.len(), 1, "{stdout}");
    if !recorder_built() {
        assert_eq!(output.status.code(), Some(1), "{stdout}");
        return;
    }
    assert!(output.status.success(), "{stdout}");
    assert!(
        rows[0][2].ends_with(" x bare")
            && rows[0][3].contains("1000 memcpys of 256 bytes a pass")
            && rows[0][3].contains(" sites patched"),
        "{stdout}"
    );
}
