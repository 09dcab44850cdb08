//! `mmiotrace_mark()` from include/mmiotrace.h puts MARK records around the
//! accesses, and does nothing without the runtime.

use std::path::Path;
use std::process::Command;

use mmiotrace_shm::{kind, payload_text};

fn include_dir() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../include")
        .to_str()
        .expect("utf8")
        .to_owned()
}

#[test]
fn marks_appear_in_order_around_the_access() {
    let program = crate::common::compile("mark", &["-I", &include_dir(), "-ldl"]);
    let run = crate::common::record_with_device(
        &program,
        "mark-dev",
        4096,
        &[],
        crate::common::small_config(),
    );
    assert!(run.status.success(), "{:?}\n{}", run.status, run.stderr);
    let kinds: Vec<(u8, Vec<u8>)> = run
        .records
        .iter()
        .map(|p| (p.record.kind, payload_text(&p.payload).to_vec()))
        .filter(|(k, _)| *k != kind::MAP)
        .collect();
    assert_eq!(
        kinds,
        [
            (kind::MARK, b"before reset".to_vec()),
            (kind::WRITE, Vec::new()),
            (kind::MARK, b"after reset".to_vec()),
        ]
    );
}

#[test]
fn marks_do_nothing_without_the_runtime() {
    let program = crate::common::compile("mark", &["-I", &include_dir(), "-ldl"]);
    let dev = crate::common::TempShmFile::new("mark-plain", 4096);
    let output = Command::new(&program).arg(&dev.0).output().expect("run");
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout), "ok\n");
}
