//! Differential tests of the runtime's emulation and displaced execution
//! (issue 4): every case runs an instruction sequence twice in a traced
//! child process, once on plain memory and once on traced mappings at the
//! same addresses, with the same registers. The child compares all 16
//! general registers, the arithmetic flags and DF, the x87, XMM, YMM, ZMM
//! and opmask registers, the memory of the window and the stack; this test
//! compares the trace with the events the case must produce: kind,
//! mapping, width, offset and value, exactly, in order.
//!
//! - `every_form_and_special_case`: every supported instruction form with
//!   a memory operand at six placements (aligned, unaligned, crossing from
//!   untraced memory into a mapping, across pages, from one mapping into
//!   another, at the end), plus hand-written semantics cases.
//! - `random_cases`: `MMIOTRACE_DIFF_CASES` (default 10,000) random cases,
//!   seed `MMIOTRACE_DIFF_SEED`.
//!
//! Forms the CPU lacks (AVX, AVX-512, ...) are left out, with a note.

use std::collections::BTreeMap;
use std::process::Command;

use mmiotrace_shm::{Config, kind, payload_text};

use crate::diff::xstate::Layout;

/// Runs in the traced child (started by the tests below with the
/// environment set); ignored otherwise.
#[test]
#[ignore = "the traced side of the differential tests, started by them"]
fn traced_child() {
    if std::env::var_os(crate::diff::ENV_CHILD).is_none() {
        return;
    }
    let layout = Layout::detect();
    let forms = crate::diff::random::forms(&layout);
    let set = std::env::var(crate::diff::ENV_SET).expect("set");
    let cases = match set.as_str() {
        "forms" => crate::diff::hand::cases(&layout, &forms),
        "random" => {
            let count = std::env::var(crate::diff::ENV_COUNT)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(10_000);
            let seed = std::env::var(crate::diff::ENV_SEED)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            crate::diff::random::cases(&layout, &forms, count, seed)
        }
        other => panic!("unknown set {other}"),
    };
    crate::diff::child::main(cases, &layout);
}

struct Outcome {
    names: BTreeMap<usize, String>,
    failures: Vec<String>,
    cases: usize,
    /// Sites patched (patched runs only).
    patched: usize,
}

fn run_set(set: &str, extra: &[(&str, String)]) -> Outcome {
    let file_a = crate::common::TempShmFile::new("diff-a", 8192);
    let file_b = crate::common::TempShmFile::new("diff-b", 4096);
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command
        .args([
            "--exact",
            "differential::traced_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(crate::diff::ENV_CHILD, "1")
        .env(crate::diff::ENV_SET, set)
        .env(crate::diff::ENV_FILE_A, &file_a.0)
        .env(crate::diff::ENV_FILE_B, &file_b.0);
    for (key, value) in extra {
        command.env(key, value);
    }
    let config = Config {
        slot_count: 4,
        ring_entries: 1 << 16,
        drop_when_full: false,
    };
    let globs = [
        file_a.0.to_str().expect("utf8"),
        file_b.0.to_str().expect("utf8"),
    ];
    let run = crate::common::record(command, &globs, config);
    let tail: String = run
        .stderr
        .lines()
        .rev()
        .take(30)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        run.status.success(),
        "child failed: {:?}\n{tail}",
        run.status
    );
    assert_eq!(run.lost, 0);
    // Nothing took the slow path, nothing was refused.
    let runtime_messages: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("mmiotrace:"))
        .collect();
    assert!(
        runtime_messages.is_empty(),
        "{}",
        runtime_messages.join("\n")
    );

    let mut names = BTreeMap::new();
    let mut expected: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut done = None;
    let mut patched = 0;
    for line in run.stdout.lines() {
        let mut fields = line.splitn(3, ' ');
        let (Some(tag), Some(index)) = (fields.next(), fields.next()) else {
            continue;
        };
        let rest = fields.next().unwrap_or("").to_owned();
        match tag {
            "C" => {
                names.insert(index.parse().expect("case"), rest);
            }
            "E" => expected
                .entry(index.parse().expect("case"))
                .or_default()
                .push(rest),
            "FAIL" => failures.push((index.parse::<usize>().expect("case"), rest)),
            "DONE" => done = Some(index.parse::<usize>().expect("count")),
            "P" => patched += rest.parse::<usize>().expect("sites"),
            _ => {}
        }
    }
    let cases = done.unwrap_or_else(|| panic!("the child did not finish\n{tail}"));

    // Which map id is which file.
    let mut maps = BTreeMap::new();
    let mut actual: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for popped in &run.records {
        let record = &popped.record;
        match record.kind {
            kind::MAP => {
                let path = payload_text(&popped.payload);
                let name = if path == file_a.0.to_str().expect("utf8").as_bytes() {
                    "A"
                } else {
                    "B"
                };
                maps.insert(record.map_id, name);
            }
            kind::MARK => {
                let text = String::from_utf8_lossy(payload_text(&popped.payload)).into_owned();
                current = text
                    .strip_prefix("case ")
                    .and_then(|i| i.parse::<usize>().ok());
            }
            kind::READ | kind::WRITE | kind::UNKNOWN => {
                let case = current.expect("an access before the first case");
                let map = maps.get(&record.map_id).copied().unwrap_or("?");
                let event = if record.kind == kind::UNKNOWN {
                    format!("UNKNOWN {map} {:x}", record.offset)
                } else {
                    let width = record.width as usize;
                    let bytes = if width <= 8 {
                        record.value.to_le_bytes()[..width].to_vec()
                    } else {
                        popped.payload[..width].to_vec()
                    };
                    crate::diff::expect::event(
                        record.kind == kind::WRITE,
                        if map == "A" {
                            crate::diff::layout::Place::A(record.offset)
                        } else {
                            crate::diff::layout::Place::B(record.offset)
                        },
                        &bytes,
                    )
                };
                actual.entry(case).or_default().push(event);
            }
            _ => {}
        }
    }

    let mut report = Vec::new();
    for (case, what) in failures {
        report.push(format!(
            "case {case} `{}`: {what}",
            names.get(&case).map_or("?", String::as_str)
        ));
    }
    for (&case, name) in &names {
        let want = expected.get(&case).cloned().unwrap_or_default();
        let got = actual.get(&case).cloned().unwrap_or_default();
        if want != got {
            report.push(format!(
                "case {case} `{name}`: trace\n    expected {want:?}\n    actual   {got:?}"
            ));
        }
    }
    Outcome {
        names,
        failures: report,
        cases,
        patched,
    }
}

fn check(outcome: Outcome, at_least: usize) {
    let total = outcome.failures.len();
    let shown: Vec<&String> = outcome.failures.iter().take(25).collect();
    assert!(
        total == 0,
        "{total} failures in {} cases:\n{}",
        outcome.cases,
        shown
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        outcome.cases >= at_least,
        "only {} cases ran",
        outcome.cases
    );
    assert_eq!(outcome.names.len(), outcome.cases);
}

fn note_missing_features() {
    let layout = Layout::detect();
    if !layout.avx {
        println!("note: no AVX state on this CPU: VEX forms are not tested");
    }
    if !layout.avx512 {
        println!(
            "note: no AVX-512 state on this CPU: EVEX forms and 64-byte pieces are not tested"
        );
    }
}

#[test]
fn every_form_and_special_case() {
    note_missing_features();
    let forms = crate::diff::random::forms(&Layout::detect());
    let [integer, legacy, vex, evex] = forms.classes.each_ref().map(Vec::len);
    println!(
        "{} instruction forms this CPU supports: {integer} general-purpose, {legacy} legacy SSE/MMX/x87, {vex} VEX, {evex} EVEX",
        integer + legacy + vex + evex
    );
    let outcome = run_set("forms", &[("MMIOTRACE_PATCH", "off".to_owned())]);
    println!("{} cases", outcome.cases);
    check(outcome, 500);
}

/// The environment of a patched run: the runtime patches, and the traced
/// side runs each case 5 times (the 5th through the trampolines).
fn patched_env() -> Vec<(&'static str, String)> {
    vec![
        ("MMIOTRACE_PATCH", "on".to_owned()),
        (crate::diff::ENV_RUNS, "5".to_owned()),
    ]
}

#[test]
fn every_form_and_special_case_patched() {
    let outcome = run_set("forms", &patched_env());
    println!("{} cases, {} sites patched", outcome.cases, outcome.patched);
    // Every patchable site is checked to be patched by the child; this
    // says that the cases hold some.
    assert!(outcome.patched >= 100, "{} sites patched", outcome.patched);
    check(outcome, 100);
}

/// Random cases, patched: those of the first `MMIOTRACE_DIFF_PATCHED_CASES`
/// (default 20,000) with a patchable instruction, seed `MMIOTRACE_DIFF_SEED`.
#[test]
fn random_cases_patched() {
    let count: usize = std::env::var("MMIOTRACE_DIFF_PATCHED_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let seed = std::env::var(crate::diff::ENV_SEED).unwrap_or_else(|_| "1".to_owned());
    let mut env = patched_env();
    env.push((crate::diff::ENV_COUNT, count.to_string()));
    env.push((crate::diff::ENV_SEED, seed));
    let outcome = run_set("random", &env);
    println!(
        "{} random cases, {} sites patched",
        outcome.cases, outcome.patched
    );
    assert!(outcome.patched >= 100, "{} sites patched", outcome.patched);
    check(outcome, 100);
}

#[test]
fn random_cases() {
    note_missing_features();
    let count: usize = std::env::var(crate::diff::ENV_COUNT)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let seed = std::env::var(crate::diff::ENV_SEED).unwrap_or_else(|_| "1".to_owned());
    let outcome = run_set(
        "random",
        &[
            (crate::diff::ENV_COUNT, count.to_string()),
            (crate::diff::ENV_SEED, seed),
            ("MMIOTRACE_PATCH", "off".to_owned()),
        ],
    );
    println!("{} random cases", outcome.cases);
    check(outcome, count);
}
