//! Helpers for the tests of the analysis commands, which run the real binary.
//! Each test file is a crate of its own and uses only some of them.

pub mod programs;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mmiotrace_trace::{Event, Item, ReadOptions, TraceReader};

pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

pub fn mmiotrace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmiotrace"))
        .args(args)
        .output()
        .expect("run mmiotrace")
}

/// Standard output of a run that must succeed.
pub fn stdout(args: &[&str]) -> String {
    let out = mmiotrace(args);
    assert!(
        out.status.success(),
        "mmiotrace {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The register map fixtures of the regdb crate.
pub fn regdb_data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../regdb/tests/data")
        .join(name)
}

/// The envytools database, outside the repository: `$MMIOTRACE_RNNDB`,
/// else `shared/rnndb` next to it.
pub fn nv_mmio() -> PathBuf {
    let dir = match std::env::var_os("MMIOTRACE_RNNDB") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/rnndb"),
    };
    let path = dir.join("nv_mmio.xml");
    assert!(
        path.is_file(),
        "no envytools rnndb at {} (set MMIOTRACE_RNNDB)",
        dir.display()
    );
    path
}

/// Standard output of a finished run that must have succeeded.
pub fn succeeded_stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "mmiotrace failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("UTF-8 output")
}

/// Standard error of a finished run.
pub fn stderr_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A scratch directory of this test's own, emptied first.
pub fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mmiotrace-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Every event of a trace, which must be valid and complete.
pub fn events(bytes: &[u8]) -> Vec<Event> {
    TraceReader::new(bytes, ReadOptions::default())
        .expect("a trace")
        .map(|item| match item.expect("a valid trace") {
            Item::Event(e) => e,
            Item::Truncated(t) => panic!("cut off: {t}"),
        })
        .collect()
}

pub fn fixture_events(name: &str) -> Vec<Event> {
    events(&std::fs::read(data(name)).expect("fixture"))
}

/// The Python that reads our exports with the tools people use (the
/// `perfetto`, `protobuf` and `duckdb` packages): `$MMIOTRACE_PYTHON`, else
/// `python3`. Where `modules` cannot be imported: under CI (`CI` set; .ci/run
/// installs them) the test fails; elsewhere it is skipped, saying so.
pub fn python_with(modules: &[&str]) -> Option<PathBuf> {
    let python =
        PathBuf::from(std::env::var_os("MMIOTRACE_PYTHON").unwrap_or_else(|| "python3".into()));
    let imports = modules
        .iter()
        .map(|m| format!("import {m}"))
        .collect::<Vec<_>>()
        .join("; ");
    let works = Command::new(&python)
        .args(["-c", &imports])
        .output()
        .is_ok_and(|out| out.status.success());
    if works {
        return Some(python);
    }
    let missing = format!(
        "{} cannot import {modules:?}: run .ci/run, or set MMIOTRACE_PYTHON to a Python that has them",
        python.display()
    );
    assert!(std::env::var_os("CI").is_none(), "{missing}");
    eprintln!("skipped: {missing}");
    None
}

/// Runs `tests/python/SCRIPT ARGS` and returns its standard output.
pub fn run_python(python: &Path, script: &str, args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let out = Command::new(python)
        .arg(&script)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}
