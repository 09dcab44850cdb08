//! `mmiotrace export`, run as the real binary; every format is read back.

mod common;

use common::*;
use serde_json::Value as Json;

fn perfetto(input: &str, args: &[&str]) -> Vec<Json> {
    let input = data(input);
    let mut all = vec!["export", "--to", "perfetto", path_str(&input)];
    all.extend_from_slice(args);
    let json: Json = serde_json::from_str(&stdout(&all)).expect("valid JSON");
    assert_eq!(json["displayTimeUnit"], "ns");
    json["traceEvents"].as_array().expect("traceEvents").clone()
}

fn of_phase<'a>(events: &'a [Json], phase: &str) -> Vec<&'a Json> {
    events.iter().filter(|e| e["ph"] == phase).collect()
}

#[test]
fn perfetto_has_threads_accesses_marks_and_counters() {
    let events = perfetto("polling.txt", &["--counter", "0xfebf0008"]);
    let names: Vec<(String, i64, i64)> = of_phase(&events, "M")
        .iter()
        .map(|e| {
            (
                e["args"]["name"].as_str().expect("name").to_string(),
                e["pid"].as_i64().expect("pid"),
                e["tid"].as_i64().expect("tid"),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("process 100".to_string(), 100, 100),
            ("thread 100".to_string(), 100, 100),
            ("thread 101".to_string(), 100, 101),
        ]
    );
    let accesses: Vec<&Json> = events.iter().filter(|e| e["cat"] == "mmio").collect();
    assert_eq!(accesses.len(), 25);
    let first = accesses[0];
    assert_eq!(first["name"], "W 0xfebf0000");
    assert_eq!(first["ts"].as_f64(), Some(10.0));
    assert_eq!(first["s"], "t");
    assert_eq!(first["args"]["value"], "0x4000000");
    assert_eq!(first["args"]["seq"], 3);
    let doorbell: Vec<&&Json> = accesses.iter().filter(|e| e["tid"] == 101).collect();
    assert_eq!(doorbell.len(), 2);

    let marks: Vec<&str> = events
        .iter()
        .filter(|e| e["cat"] == "mark")
        .map(|e| {
            assert_eq!(e["s"], "g");
            e["name"].as_str().expect("name")
        })
        .collect();
    assert_eq!(marks, ["init start", "init done", "timeout"]);

    let counter: Vec<u64> = of_phase(&events, "C")
        .iter()
        .map(|e| {
            assert_eq!(e["name"], "0xfebf0008");
            e["args"]["value"].as_u64().expect("a number")
        })
        .collect();
    assert_eq!(counter, [0, 0, 0, 0, 0, 0x8000_0000]);
    assert_eq!(events.iter().filter(|e| e["cat"] == "map").count(), 3);
}

#[test]
fn perfetto_shows_folded_loops_as_slices() {
    let slices: Vec<(String, f64, f64)> = of_phase(&perfetto("polling.collapsed.txt", &[]), "X")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().expect("name").to_string(),
                e["ts"].as_f64().expect("ts"),
                e["dur"].as_f64().expect("dur"),
            )
        })
        .collect();
    assert_eq!(
        slices,
        [
            ("poll R 0xfebf0008 x4".to_string(), 21.0, 4.0),
            ("poll R 0xfebf0014 x3".to_string(), 32.0, 5.0),
            ("poll R 0xfebf0018 x2".to_string(), 61.0, 1.0),
        ]
    );
}

#[test]
fn json_lines_one_object_per_event() {
    let out = stdout(&[
        "export",
        "--to",
        "jsonl",
        path_str(&data("polling.collapsed.txt")),
    ]);
    let objects: Vec<Json> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
        .collect();
    assert_eq!(objects.len(), fixture_events("polling.collapsed.txt").len());
    let repeat = objects
        .iter()
        .find(|o| o["kind"] == "REPEAT")
        .expect("a REPEAT");
    assert_eq!(repeat["count"], 4);
    assert_eq!(repeat["until"], "0x80000000");
    assert_eq!(repeat["end_ns"], 25_000);
}

#[test]
fn csv_one_row_per_event_with_a_header() {
    let out = stdout(&["export", "--to", "csv", path_str(&data("polling.txt"))]);
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(
        rows[0],
        "kind,time_ns,end_ns,seq,process,pid,map_id,phys,reg,width,value,value_hex,pc,count,len,size,until,text"
    );
    assert_eq!(rows.len(), 1 + fixture_events("polling.txt").len());
    assert!(rows.contains(&"W,41000,,22,100,100,1,0xfebf0100,,2,48879,0xbeef,0x4044,,,,,"));
    assert!(rows.contains(&"MARK,5000,,2,100,,,,,,,,,,,,,init start"));
}

#[test]
fn parquet_reads_back_with_the_parquet_crate() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::RowAccessor;

    let dir = scratch("export-parquet");
    let path = dir.join("polling.parquet");
    stdout(&[
        "export",
        "--to",
        "parquet",
        path_str(&data("polling.txt")),
        "-o",
        path_str(&path),
    ]);
    let reader = SerializedFileReader::new(std::fs::File::open(&path).expect("written"))
        .expect("a parquet file");
    let events = fixture_events("polling.txt");
    assert_eq!(
        reader.metadata().file_metadata().num_rows(),
        events.len() as i64
    );
    let rows: Vec<parquet::record::Row> = reader
        .get_row_iter(None)
        .expect("rows")
        .map(|r| r.expect("a row"))
        .collect();
    assert_eq!(rows.len(), events.len());
    // Columns: 0 kind, 1 time_ns, 3 seq, 5 pid, 7 phys, 8 reg, 9 width, 10 value, 11 value_hex, 17 text.
    let kinds: Vec<&str> = rows
        .iter()
        .map(|r| r.get_string(0).expect("kind").as_str())
        .collect();
    assert_eq!(&kinds[..4], ["VERSION", "MAP", "MAP", "MARK"]);
    let w2 = rows
        .iter()
        .find(|r| r.get_ulong(3).ok() == Some(22))
        .expect("the 2-byte write");
    assert_eq!(w2.get_string(0).expect("kind"), "W");
    assert_eq!(w2.get_ulong(1).expect("time"), 41_000);
    assert_eq!(w2.get_ulong(7).expect("phys"), 0xfebf_0100);
    assert_eq!(w2.get_uint(5).expect("pid"), 100);
    assert_eq!(w2.get_ulong(10).expect("value"), 0xbeef);
    assert_eq!(w2.get_string(11).expect("hex"), "0xbeef");
    assert_eq!(rows[3].get_string(17).expect("text"), "init start");
    assert!(rows[0].get_ulong(1).is_err(), "VERSION has no time: a null");
}

#[test]
fn parquet_needs_a_file() {
    let out = mmiotrace(&["export", "--to", "parquet", path_str(&data("polling.txt"))]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("parquet needs a file"));
}
