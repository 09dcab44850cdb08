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

/// What `fuzz/corpus/binary_reader/` seeds with a generated counterpart
/// must hold: every text seed that reads without an error, converted, and
/// a few inputs made here for what no conversion produces. A change of
/// the binary layout makes this test fail until the seeds are rewritten:
///
/// ```text
/// MMIOTRACE_WRITE_CORPUS=1 cargo test -p mmiotrace-trace --test trace fuzz_corpus
/// ```
///
/// Seeds that a fuzzer found (no generated counterpart) are left alone.
#[test]
fn binary_seeds_are_generated_from_the_current_format() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/binary_reader");
    let write = std::env::var_os("MMIOTRACE_WRITE_CORPUS").is_some();
    let mut stale = Vec::new();
    for (name, bytes) in generated_binary_seeds() {
        let path = dir.join(&name);
        if write {
            std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        } else if std::fs::read(&path).ok().as_ref() != Some(&bytes) {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "stale or missing binary seeds {stale:?} in {}: rewrite them with \
         MMIOTRACE_WRITE_CORPUS=1 cargo test -p mmiotrace-trace --test trace fuzz_corpus",
        dir.display()
    );
}

fn generated_binary_seeds() -> Vec<(String, Vec<u8>)> {
    use mmiotrace_trace::*;

    let to_binary = |events: &[Event]| {
        let mut w = BinaryWriter::new(Vec::new()).expect("writing to a Vec");
        for event in events {
            w.write_event(event).expect("an event read can be written");
        }
        w.finish().expect("writing to a Vec")
    };
    let mut header = binary::MAGIC.to_vec();
    header.extend_from_slice(&binary::FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&[0, 0]);
    let with_header = |body: &[u8]| [&header[..], body].concat();

    let mut seeds = Vec::new();
    for (name, text) in corpus("text_reader") {
        let name = Path::new(&name)
            .file_name()
            .expect("a file name")
            .to_string_lossy()
            .into_owned();
        let items: Result<Vec<Item>, Error> = TextReader::new(&text[..]).collect();
        let Ok(items) = items else {
            continue;
        };
        let events: Vec<Event> = items
            .into_iter()
            .filter_map(|item| match item {
                Item::Event(event) => Some(event),
                Item::Truncated(_) => None,
            })
            .collect();
        seeds.push((name, to_binary(&events)));
    }
    let converted = |seeds: &[(String, Vec<u8>)], name: &str| -> Vec<u8> {
        let (_, bytes) = seeds
            .iter()
            .find(|(seed, _)| seed == name)
            .unwrap_or_else(|| panic!("no text seed {name}"));
        bytes.clone()
    };
    for name in ["extended", "kernel_log"] {
        let whole = converted(&seeds, name);
        seeds.push((format!("trunc_{name}"), whole[..whole.len() - 3].to_vec()));
    }
    let extended = converted(&seeds, "extended");
    seeds.push((
        "no_header_records".into(),
        extended[binary::HEADER_LEN..].to_vec(),
    ));

    // Short access records: every width, map ids that share a slot, and a
    // seq gap, pid and pc changes in between.
    let mut accesses = Vec::new();
    for i in 0..24u64 {
        let width = [1u8, 2, 4, 8][(i % 4) as usize];
        let map_id = [1u32, 2, 17][(i % 3) as usize];
        accesses.push(Event::Access(Access {
            dir: if i % 2 == 0 {
                Direction::Read
            } else {
                Direction::Write
            },
            time: Timestamp::from_nanos(1_000_000 + i * 1500),
            map_id,
            phys: 0xfebf_0000 + u64::from(map_id) * 0x1_0000 + (i % 8) * 4,
            value: Value::from_u64(width, 0x8765_4321_0fed_cba9 >> (64 - 8 * u32::from(width)))
                .expect("a kernel width"),
            pc: 0x55d0_c0a0_1000 + (i % 5) * 7,
            pid: 3121 + (i % 2) as u32,
            ext: Ext {
                seq: Some(if i < 12 { i } else { i + 5 }),
                process: Some(3120),
                hook: None,
            },
        }));
    }
    let short = to_binary(&accesses);
    seeds.push(("short_cut".into(), short[..short.len() - 4].to_vec()));
    seeds.push(("short_accesses".into(), short));

    seeds.push(("header_only".into(), header.clone()));
    seeds.push(("short_header".into(), binary::MAGIC[..6].to_vec()));
    let mut future = header.clone();
    future[8] = 9;
    seeds.push(("bad_version".into(), future));
    // Version 1: general records only, tags laid out differently.
    let mut old = header.clone();
    old[8] = 1;
    old.extend_from_slice(&[0xe0, 0x08]);
    old.extend_from_slice(b"20070824");
    seeds.push(("old_version".into(), old));
    // META subkind 15.
    seeds.push(("bad_tag".into(), with_header(&[0x7f])));
    // MARK at time +0 whose text claims 4 GiB.
    seeds.push((
        "huge_string".into(),
        with_header(&[0x50, 0x00, 0xff, 0xff, 0xff, 0xff, 0x0f]),
    ));
    // A general R of width 1 whose time delta is an 11-byte varint.
    seeds.push((
        "varint_overflow".into(),
        with_header(&[[0x00, 0x00].as_slice(), &[0xff; 11]].concat()),
    ));
    seeds
}
