//! Helpers shared by the regdb tests: where the envytools database is, and
//! decoding a small trace to text.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use mmiotrace_regdb::decode::{DecodeOptions, Decoder, DeviceSpec};
use mmiotrace_regdb::format::{JsonWriter, TextWriter};
use mmiotrace_regdb::{Database, DecodeSink};
use mmiotrace_trace::{ReadOptions, TraceReader};

/// The envytools register database (MIT data, kept outside the repository):
/// `$MMIOTRACE_RNNDB`, else `shared/rnndb` next to the repository.
pub fn rnndb_dir() -> PathBuf {
    let dir = match std::env::var_os("MMIOTRACE_RNNDB") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/rnndb"),
    };
    assert!(
        dir.join("nv_mmio.xml").is_file(),
        "the envytools rnndb is not at {} (set MMIOTRACE_RNNDB to its directory)",
        dir.display()
    );
    dir
}

/// `nv_mmio.xml`, loaded once for all tests of a binary.
pub fn nv_mmio() -> &'static Database {
    static DB: OnceLock<Database> = OnceLock::new();
    DB.get_or_init(|| {
        mmiotrace_regdb::load(&rnndb_dir().join("nv_mmio.xml")).expect("nv_mmio.xml loads")
    })
}

pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Decodes the text trace `trace` with `dbs` and `--device` specs `specs`,
/// as text (or JSON lines).
pub fn decode_with(
    dbs: Vec<Database>,
    specs: &[&str],
    chipset: Option<&str>,
    trace: &str,
    json: bool,
) -> String {
    let mut dbs = dbs;
    let specs: Vec<DeviceSpec> = specs
        .iter()
        .map(|s| DeviceSpec::parse(s, &mut dbs).expect("spec parses"))
        .collect();
    let options = DecodeOptions {
        variant: chipset.map(str::to_string),
    };
    let mut decoder = Decoder::new(&dbs, &specs, &options).expect("decoder");
    let mut reader = TraceReader::new(trace.as_bytes(), ReadOptions::default()).expect("trace");
    let mut text = TextWriter::new(Vec::new());
    let mut jsonl = JsonWriter::new(Vec::new());
    let sink: &mut dyn DecodeSink = if json { &mut jsonl } else { &mut text };
    while let Some(event) = reader.read_ref().expect("trace parses") {
        decoder.feed(event, sink).expect("write to a Vec");
    }
    let out = if json { jsonl.finish() } else { text.finish() }.expect("write to a Vec");
    String::from_utf8(out).expect("UTF-8 output")
}

/// A kernel trace of a GPU (10de:1c82, BAR0 at 0xf0000000) whose driver
/// makes `accesses`: (R or W, width, BAR0 offset, value).
pub fn nv_trace(accesses: &[(&str, u8, u64, u64)]) -> String {
    let mut t = String::from(
        "VERSION 20070824\n\
         PCIDEV 0100 10de1c82 10 f0000000 e000000c 0 e200000c 0 e001 f1000000 1000000 10000000 0 2000000 0 80 80000 nouveau\n\
         MAP 0.000001 1 0xf0000000 0xffffc90000800000 0x1000000 0x0 0\n",
    );
    for (i, (dir, width, offset, value)) in accesses.iter().enumerate() {
        t.push_str(&format!(
            "{dir} {width} 0.{:06} 1 {:#x} {value:#x} 0x0 0\n",
            i + 10,
            0xf000_0000 + offset
        ));
    }
    t
}

/// The access lines of a decode of `accesses` on chipset `chipset` (or,
/// with `None`, learnt from the trace): everything after the value column.
pub fn nv(chipset: Option<&str>, accesses: &[(&str, u8, u64, u64)]) -> Vec<String> {
    let spec = match chipset {
        Some(c) => format!("10de:1c82=nv_mmio.xml@{c}"),
        None => "10de:1c82=nv_mmio.xml".to_string(),
    };
    let out = decode_with(
        vec![nv_mmio().clone()],
        &[&spec],
        None,
        &nv_trace(accesses),
        false,
    );
    out.lines()
        .filter(|l| matches!(l.split(' ').nth(2), Some("R" | "W" | "?")))
        .map(|l| l.splitn(8, ' ').nth(7).unwrap_or("").to_string())
        .collect()
}

/// One access decoded on `chipset`.
pub fn nv1(chipset: &str, dir: &str, width: u8, offset: u64, value: u64) -> String {
    nv(Some(chipset), &[(dir, width, offset, value)]).remove(0)
}
