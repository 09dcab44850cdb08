//! `mmiotrace filter`, run as the real binary: what each condition keeps,
//! at its boundaries.

use crate::common::*;
use mmiotrace_trace::Event;

/// The kinds and sequence numbers of what `filter ARGS polling.txt` keeps.
fn kept(args: &[&str]) -> Vec<(String, u64)> {
    let input = data("polling.txt");
    let mut all = vec!["filter"];
    all.extend_from_slice(args);
    all.push(path_str(&input));
    events(stdout(&all).as_bytes())
        .iter()
        .filter(|e| !matches!(e, Event::Version(_)))
        .map(|e| {
            let seq = e
                .ext()
                .and_then(|x| x.seq)
                .expect("the fixture has seq everywhere");
            (e.kind_name().to_string(), seq)
        })
        .collect()
}

/// The sequence numbers of the accesses kept.
fn access_seqs(args: &[&str]) -> Vec<u64> {
    kept(args)
        .into_iter()
        .filter(|(kind, _)| kind == "R" || kind == "W")
        .map(|(_, seq)| seq)
        .collect()
}

fn marks(args: &[&str]) -> Vec<u64> {
    kept(args)
        .into_iter()
        .filter(|(kind, _)| kind == "MARK")
        .map(|(_, seq)| seq)
        .collect()
}

#[test]
fn without_conditions_everything_is_kept() {
    let all = fixture_events("polling.txt");
    let out = stdout(&["filter", path_str(&data("polling.txt"))]);
    assert_eq!(events(out.as_bytes()), all);
}

#[test]
fn address_ranges_match_any_byte_of_the_access() {
    // W 1 at 0xfebf00fe, W 2 at 0xfebf0100: END is excluded, ..= includes it.
    assert_eq!(access_seqs(&["--addr", "0xfebf00fe..0xfebf0100"]), [21]);
    assert_eq!(
        access_seqs(&["--addr", "0xfebf00fe..=0xfebf0100"]),
        [21, 22]
    );
    assert_eq!(access_seqs(&["--addr", "0xfebf00ff..0xfebf0101"]), [22]);
    // A 2-byte access at 0x100 covers 0x101.
    assert_eq!(access_seqs(&["--addr", "0xfebf0101"]), [22]);
    assert_eq!(access_seqs(&["--addr", "0xfebf0008"]), [4, 5, 6, 8, 9, 10]);
    assert_eq!(
        access_seqs(&["--addr", "0xfebf0008", "--addr", "0xfebf0018"]),
        [4, 5, 6, 8, 9, 10, 24, 25, 26]
    );
}

#[test]
fn direction_width_thread_process_and_map() {
    assert_eq!(
        access_seqs(&["--dir", "W", "--width", "4", "--thread", "101"]),
        [7, 28]
    );
    assert_eq!(access_seqs(&["--width", "1", "--width", "2"]), [21, 22]);
    assert_eq!(access_seqs(&["--process", "100"]).len(), 25);
    assert!(access_seqs(&["--process", "5"]).is_empty());
    // --map keeps that map's MAP line only, and its accesses.
    let map2 = kept(&["--map", "2"]);
    assert_eq!(
        map2.iter()
            .filter(|(k, _)| k == "MAP" || k == "UNMAP")
            .collect::<Vec<_>>(),
        [&("MAP".to_string(), 1)]
    );
    assert_eq!(access_seqs(&["--map", "2"]), [7, 28]);
}

#[test]
fn time_and_sequence_windows_include_start_and_exclude_end() {
    assert_eq!(
        access_seqs(&["--time", "0.000020..0.000025"]),
        [4, 5, 6, 7, 8]
    );
    assert_eq!(
        access_seqs(&["--time", "0.000020..=0.000025"]),
        [4, 5, 6, 7, 8, 9]
    );
    assert_eq!(access_seqs(&["--time", "0.001.."]), [29]);
    assert_eq!(access_seqs(&["--seq", "4..=9"]), [4, 5, 6, 7, 8, 9]);
    assert_eq!(access_seqs(&["--seq", "..4"]), [3]);
    // Marks are kept only inside the windows; MAP and UNMAP always.
    assert_eq!(marks(&["--time", "0.000040..0.000060"]), [23]);
    let structure: Vec<u64> = kept(&["--seq", "100.."])
        .into_iter()
        .map(|(_, seq)| seq)
        .collect();
    assert_eq!(structure, [0, 1, 30]);
}

#[test]
fn mark_windows_include_both_marks() {
    let between = ["--from-mark", "init start", "--to-mark", "init d?ne"];
    assert_eq!(marks(&between), [2, 23]);
    assert_eq!(access_seqs(&between), (3..=22).collect::<Vec<u64>>());
    // Without --to-mark the window runs to the end.
    let after = ["--from-mark", "init d*"];
    assert_eq!(marks(&after), [23, 27]);
    assert_eq!(access_seqs(&after), [24, 25, 26, 28, 29]);
    // No mark matches: nothing but the structure.
    assert!(access_seqs(&["--from-mark", "nothing"]).is_empty());
}

#[test]
fn drop_removes_what_matches_and_keeps_the_rest() {
    let dropped = access_seqs(&["--drop", "--addr", "0xfebf0008"]);
    assert_eq!(dropped.len(), 25 - 6);
    assert!(!dropped.contains(&4) && dropped.contains(&3));
    assert_eq!(marks(&["--drop", "--addr", "0xfebf0008"]), [2, 23, 27]);
    // Dropping a window keeps what is outside it.
    assert_eq!(access_seqs(&["--drop", "--seq", "..=26"]), [28, 29]);
}

#[test]
fn the_output_is_a_valid_trace_in_either_format() {
    let dir = scratch("filter-binary");
    let mtb = dir.join("writes.mtb");
    stdout(&[
        "filter",
        "--dir",
        "W",
        path_str(&data("polling.txt")),
        "-o",
        path_str(&mtb),
    ]);
    let from_binary = events(&std::fs::read(&mtb).expect("written"));
    let from_text =
        events(stdout(&["filter", "--dir", "W", path_str(&data("polling.txt"))]).as_bytes());
    assert_eq!(from_binary, from_text);
    // And binary input reads the same.
    assert_eq!(
        events(stdout(&["filter", "--dir", "W", path_str(&mtb)]).as_bytes()),
        from_text
    );
}

#[test]
fn bad_options_are_errors() {
    for args in [
        vec!["filter", "--dir", "X", "in"],
        vec!["filter", "--time", "1.2.3..", "in"],
        vec!["filter", "--addr", "0x10..0x10", "in"],
        vec!["filter", "--to-mark", "x", "in"],
    ] {
        let out = mmiotrace(&args);
        assert!(!out.status.success(), "{args:?}");
    }
}
