//! The single-step comparison mode (`MMIOTRACE_MODE=single-step`, the
//! kernel's kmmio design): with one thread it logs every access with the
//! value from the instruction's register; with several, every access still
//! happens correctly but some go unlogged; a genuine fault still kills.

use std::process::Command;

use mmiotrace_shm::{kind, payload_text};

fn single_step(program: &std::path::Path) -> Command {
    let mut command = Command::new(program);
    command.env("MMIOTRACE_MODE", "single-step");
    command
}

/// The MARK the runtime writes at exit: (accesses single-stepped, recursive probe hits).
fn exit_mark(run: &crate::common::Run) -> (u64, u64) {
    let text = run
        .records
        .iter()
        .filter(|p| p.record.kind == kind::MARK)
        .map(|p| String::from_utf8_lossy(payload_text(&p.payload)).into_owned())
        .find(|text| text.contains("single-step mode"))
        .expect("the exit MARK");
    let numbers: Vec<u64> = text
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|word| word.parse().ok())
        .collect();
    assert_eq!(numbers.len(), 2, "{text}");
    (numbers[0], numbers[1])
}

#[test]
fn one_thread_logs_every_access_with_the_value_of_its_register() {
    let program = crate::common::compile("single_step", &[]);
    let dev = crate::common::TempShmFile::new("single-step-forms", 4096);
    let mut command = single_step(&program);
    command.arg(&dev.0).arg("forms");
    let run = crate::common::record(
        command,
        &[dev.0.to_str().expect("utf8")],
        crate::common::small_config(),
    );
    assert!(run.status.success(), "{:?}\n{}", run.status, run.stderr);
    assert_eq!(
        run.stdout.trim(),
        "loaded64 8877665544332211 byte 33 word0 11223345 stos abcdef01 abcdef01 abcdef01"
    );
    let accesses: Vec<(u8, u8, u64, u64)> = run
        .accesses()
        .map(|p| {
            let r = &p.record;
            let value = if r.kind == kind::UNKNOWN { 0 } else { r.value };
            (r.kind, r.width, r.offset, value)
        })
        .collect();
    let (w, r) = (kind::WRITE, kind::READ);
    assert_eq!(
        accesses[..9],
        [
            (w, 4, 0, 0x1122_3344),
            (w, 4, 4, 0x5566_7788),
            (w, 8, 8, 0x8877_6655_4433_2211),
            (r, 8, 8, 0x8877_6655_4433_2211),
            (r, 1, 1, 0x33),
            // The RMW: the kernel's OTHERS, logged with its opcode bytes.
            (kind::UNKNOWN, 2, 0, 0),
            // rep stosl: the CPU traps after each element.
            (w, 4, 0x40, 0xabcd_ef01),
            (w, 4, 0x44, 0xabcd_ef01),
            (w, 4, 0x48, 0xabcd_ef01),
        ]
    );
    let unknown = run
        .accesses()
        .find(|p| p.record.kind == kind::UNKNOWN)
        .expect("the RMW");
    assert_eq!(unknown.record.aux & 0xff, 0x01, "add r/m32, r32");
    // printf reads the three stored words and word 0 back: 4 more loads.
    assert_eq!(accesses.len(), 13);
    assert_eq!(exit_mark(&run), (13, 0));
    assert!(!run.stderr.contains("recursive"), "{}", run.stderr);
}

#[test]
fn one_thread_of_many_accesses_loses_nothing() {
    let program = crate::common::compile("threads", &[]);
    let dev = crate::common::TempShmFile::new("single-step-one", 4096);
    let mut command = single_step(&program);
    command.arg(&dev.0).arg("1").arg("4000");
    let run = crate::common::record(
        command,
        &[dev.0.to_str().expect("utf8")],
        crate::common::small_config(),
    );
    assert!(run.status.success(), "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("BAD 0"), "{}", run.stdout);
    assert_eq!(run.accesses().count(), 4000);
    assert_eq!(exit_mark(&run), (4000, 0));
}

#[test]
fn several_threads_run_correctly_but_the_log_may_miss_accesses() {
    const THREADS: u64 = 4;
    const ACCESSES: u64 = 4000;
    let program = crate::common::compile("threads", &[]);
    let dev = crate::common::TempShmFile::new("single-step-threads", 4096);
    let mut command = single_step(&program);
    command
        .arg(&dev.0)
        .arg(THREADS.to_string())
        .arg(ACCESSES.to_string());
    let run = crate::common::record(
        command,
        &[dev.0.to_str().expect("utf8")],
        crate::common::small_config(),
    );
    // Every access happened, untraced or not: each read saw its own write.
    assert!(run.status.success(), "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("BAD 0"), "{}", run.stdout);
    let logged = run.accesses().count() as u64;
    assert!(logged <= THREADS * ACCESSES, "{logged}");
    let (stepped, _recursive_hits) = exit_mark(&run);
    assert_eq!(stepped, logged);
    for popped in run.accesses() {
        let r = &popped.record;
        assert!(matches!(r.kind, kind::READ | kind::WRITE), "{r:?}");
        assert!(r.offset < THREADS * 64 && r.offset % 64 < 32, "{r:?}");
    }
}

#[test]
fn a_store_to_a_read_only_traced_mapping_still_kills_with_sigsegv() {
    use std::os::unix::process::ExitStatusExt;
    let program = crate::common::compile("single_step", &[]);
    let dev = crate::common::TempShmFile::new("single-step-readonly", 4096);
    let mut command = single_step(&program);
    command.arg(&dev.0).arg("readonly");
    let run = crate::common::record(
        command,
        &[dev.0.to_str().expect("utf8")],
        crate::common::small_config(),
    );
    assert_eq!(run.status.signal(), Some(libc::SIGSEGV), "{}", run.stderr);
    assert_eq!(run.accesses().count(), 0);
}
