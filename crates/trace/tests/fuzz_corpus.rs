//! Replays the fuzz corpus (fuzz/corpus/<target>/) through the same oracles
//! the fuzz targets use, so CI, which cannot run nightly fuzzing, still
//! catches a regression on any input that once found a bug.

use std::path::Path;

use mmiotrace_trace::fuzzing::{check_binary, check_text};

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a directory entry").path();
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path.display().to_string(), data)
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 20,
        "{}: only {} corpus files",
        dir.display(),
        files.len()
    );
    files
}

#[test]
fn text_reader_corpus() {
    for (name, data) in corpus("text_reader") {
        eprintln!("{name}");
        check_text(&data);
        check_binary(&data);
    }
}

#[test]
fn binary_reader_corpus() {
    for (name, data) in corpus("binary_reader") {
        eprintln!("{name}");
        check_binary(&data);
        check_text(&data);
    }
}
