//! `mmiotrace export`, run as the real binary; every format is read back.

use std::path::{Path, PathBuf};

use crate::common::*;
use serde_json::Value as Json;

fn perfetto(input: &str, args: &[&str]) -> Vec<Json> {
    let input = data(input);
    let mut all = vec!["export", "--to", "chrome-json", path_str(&input)];
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

/// The tracks and events of a native Perfetto export of `input`, as
/// Perfetto's own schema decodes them (tests/python/read_perfetto.py); `None`
/// where that Python package is missing outside CI.
fn perfetto_native(input: &Path, args: &[&str]) -> Option<(Vec<Json>, Vec<Json>)> {
    let python = python_with(&["perfetto.protos.perfetto.trace.perfetto_trace_pb2"])?;
    let dir = scratch(&format!(
        "perfetto-{}",
        input.file_name().expect("a file").to_string_lossy()
    ));
    let out = dir.join("trace.pftrace");
    let mut all = vec![
        "export",
        "--to",
        "perfetto",
        path_str(input),
        "-o",
        path_str(&out),
    ];
    all.extend_from_slice(args);
    stdout(&all);
    let json: Json =
        serde_json::from_str(&run_python(&python, "read_perfetto.py", &[path_str(&out)]))
            .expect("JSON from read_perfetto.py");
    let list = |key: &str| json[key].as_array().expect("a list").clone();
    Some((list("tracks"), list("events")))
}

fn track_named<'a>(tracks: &'a [Json], name: &str) -> &'a Json {
    tracks
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no track {name}: {tracks:?}"))
}

#[test]
fn perfetto_reads_back_with_perfettos_own_schema() {
    let Some((tracks, events)) =
        perfetto_native(&data("polling.txt"), &["--counter", "0xfebf0008"])
    else {
        return;
    };
    let process = track_named(&tracks, "process 100");
    assert_eq!(process["kind"], "process");
    assert_eq!(process["pid"], 100);
    let thread_100 = track_named(&tracks, "thread 100");
    let thread_101 = track_named(&tracks, "thread 101");
    for (thread, tid) in [(thread_100, 100), (thread_101, 101)] {
        assert_eq!(thread["kind"], "thread");
        assert_eq!(thread["pid"], 100);
        assert_eq!(thread["tid"], tid);
        assert_eq!(thread["parent"], process["uuid"]);
    }
    assert_eq!(tracks.len(), 5, "a process, 2 threads, marks, a counter");

    let fixture = fixture_events("polling.txt");
    let accesses: Vec<&Json> = events
        .iter()
        .filter(|e| {
            e["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(['R', 'W']))
        })
        .collect();
    let expected: Vec<&mmiotrace_trace::Access> = fixture
        .iter()
        .filter_map(|e| match e {
            mmiotrace_trace::Event::Access(a) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(accesses.len(), expected.len());
    assert_eq!(accesses.len(), 25);
    for (got, want) in accesses.iter().zip(&expected) {
        let dir = if want.dir == mmiotrace_trace::Direction::Read {
            "R"
        } else {
            "W"
        };
        assert_eq!(got["type"], "TYPE_INSTANT");
        assert_eq!(got["name"], format!("{dir} {:#x}", want.phys));
        assert_eq!(got["time"], want.time.nanos, "{got}");
        assert_eq!(got["args"]["value"], want.value.low_u64());
        assert_eq!(got["args"]["width"], want.width());
        assert_eq!(got["args"]["map"], want.map_id);
        assert_eq!(got["args"]["seq"], want.ext.seq.expect("seq"));
        assert_eq!(got["args"]["pc"], format!("{:#x}", want.pc));
        let thread = if want.pid == 100 {
            thread_100
        } else {
            thread_101
        };
        assert_eq!(got["track"], thread["uuid"]);
    }

    let marks_track = track_named(&tracks, "marks");
    let marks: Vec<(&str, u64)> = events
        .iter()
        .filter(|e| e["track"] == marks_track["uuid"])
        .map(|e| {
            assert_eq!(e["type"], "TYPE_INSTANT");
            (
                e["name"].as_str().expect("name"),
                e["time"].as_u64().expect("time"),
            )
        })
        .collect();
    assert_eq!(
        marks,
        [
            ("init start", 5_000),
            ("init done", 50_000),
            ("timeout", 70_000)
        ]
    );

    let counter_track = track_named(&tracks, "0xfebf0008");
    assert_eq!(counter_track["kind"], "counter");
    let counter: Vec<(u64, u64)> = events
        .iter()
        .filter(|e| e["track"] == counter_track["uuid"])
        .map(|e| {
            assert_eq!(e["type"], "TYPE_COUNTER");
            (
                e["time"].as_u64().expect("time"),
                e["counter"].as_u64().expect("a value"),
            )
        })
        .collect();
    assert_eq!(
        counter,
        [
            (20_000, 0),
            (21_000, 0),
            (22_000, 0),
            (24_000, 0),
            (25_000, 0),
            (26_000, 0x8000_0000)
        ]
    );

    let maps: Vec<&str> = events
        .iter()
        .filter(|e| e["track"] == process["uuid"])
        .map(|e| e["name"].as_str().expect("name"))
        .collect();
    assert_eq!(maps, ["MAP 1 0xfebf0000", "MAP 2 0xfec00000", "UNMAP 1"]);
}

#[test]
fn perfetto_shows_folded_loops_as_native_slices() {
    let Some((tracks, events)) = perfetto_native(&data("polling.collapsed.txt"), &[]) else {
        return;
    };
    let thread = track_named(&tracks, "thread 100");
    let mut open = None;
    let mut slices = Vec::new();
    for e in events.iter().filter(|e| e["track"] == thread["uuid"]) {
        match e["type"].as_str().expect("type") {
            "TYPE_SLICE_BEGIN" => {
                assert!(open.is_none(), "slices do not nest here");
                open = Some(e);
            }
            "TYPE_SLICE_END" => {
                let begin = open.take().expect("an open slice");
                slices.push((
                    begin["name"].as_str().expect("name").to_string(),
                    begin["time"].as_u64().expect("time"),
                    e["time"].as_u64().expect("time"),
                    begin["args"]["count"].as_u64().expect("count"),
                    begin["args"]["until"].as_u64(),
                ));
            }
            _ => {}
        }
    }
    assert!(open.is_none());
    assert_eq!(
        slices,
        [
            (
                "poll R 0xfebf0008 x4".to_string(),
                21_000,
                25_000,
                4,
                Some(0x8000_0000)
            ),
            (
                "poll R 0xfebf0014 x3".to_string(),
                32_000,
                37_000,
                3,
                Some(7)
            ),
            ("poll R 0xfebf0018 x2".to_string(), 61_000, 62_000, 2, None),
        ]
    );
}

/// 64-bit values past 2^53 stay exact; an access earlier than its thread's
/// previous one keeps its time; more distinct registers than the exporter
/// interns at once (it starts its sequences afresh) keep their names.
#[test]
fn perfetto_values_are_exact_and_times_right_past_the_intern_limit() {
    use std::fmt::Write as _;
    let dir = scratch("perfetto-exact");
    let input = dir.join("wide.txt");
    let mut text = String::from(
        "VERSION 20070824\nMAP 0.000001 1 0x100000000 0x7f0000000000 0x1000000 0x4000 7 seq=0 proc=7\n",
    );
    text.push_str("W 8 0.000010 1 0x100000000 0xfedcba9876543211 0x4010 7 seq=1 proc=7\n");
    text.push_str("R 8 0.000005 1 0x100000008 0x20000000000001 0x4014 7 seq=2 proc=7\n");
    let registers = 70_000u64;
    for i in 0..registers {
        let _ = writeln!(
            text,
            "R 4 {}.{:06} 1 {:#x} {:#x} {:#x} 8 seq={} proc=7",
            (20 + i) / 1_000_000,
            (20 + i) % 1_000_000,
            0x1_0000_0010 + 4 * i,
            i,
            0x5000 + i,
            3 + i
        );
    }
    std::fs::write(&input, text).expect("write the trace");
    let Some((_, events)) = perfetto_native(&input, &[]) else {
        return;
    };
    let accesses: Vec<&Json> = events
        .iter()
        .filter(|e| e["args"]["seq"].is_u64())
        .collect();
    assert_eq!(accesses.len() as u64, 2 + registers);
    assert_eq!(
        accesses[0]["args"]["value"].as_u64(),
        Some(0xfedc_ba98_7654_3211)
    );
    assert_eq!(accesses[0]["time"], 10_000);
    assert_eq!(
        accesses[1]["args"]["value"].as_u64(),
        Some(0x20_0000_0000_0001)
    );
    assert_eq!(
        accesses[1]["time"], 5_000,
        "earlier than the thread's previous event"
    );
    for (i, e) in accesses[2..].iter().enumerate() {
        let i = i as u64;
        assert_eq!(e["name"], format!("R {:#x}", 0x1_0000_0010 + 4 * i));
        assert_eq!(e["time"], (20 + i) * 1000);
        assert_eq!(e["args"]["value"], i);
        assert_eq!(e["args"]["pc"], format!("{:#x}", 0x5000 + i));
    }
}

#[test]
fn perfetto_is_small() {
    let dir = scratch("perfetto-size");
    let out = dir.join("polling.pftrace");
    stdout(&[
        "export",
        "--to",
        "perfetto",
        path_str(&data("polling.txt")),
        "-o",
        path_str(&out),
    ]);
    let bytes = std::fs::metadata(&out).expect("written").len();
    let events = fixture_events("polling.txt").len() as u64;
    // Descriptors and interned strings dominate a trace this short; the
    // Chrome JSON of the same trace is over 7 KB.
    assert!(bytes < 100 * events, "{bytes} bytes for {events} events");
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
    let rows_of = |path: &Path| -> Vec<parquet::record::Row> {
        let reader = SerializedFileReader::new(std::fs::File::open(path).expect("written"))
            .expect("a parquet file");
        reader
            .get_row_iter(None)
            .expect("rows")
            .map(|r| r.expect("a row"))
            .collect()
    };
    let events = fixture_events("polling.txt");
    let is_access = |e: &&mmiotrace_trace::Event| matches!(e, mmiotrace_trace::Event::Access(_));
    let accesses = rows_of(&path);
    assert_eq!(accesses.len(), events.iter().filter(is_access).count());
    // Accesses: 0 time_ns, 1 seq, 2 process, 3 pid, 4 map_id, 5 phys, 6 dir,
    // 7 width, 8 value, 9 value_hex, 10 pc, 11 reg.
    let w2 = accesses
        .iter()
        .find(|r| r.get_ulong(1).ok() == Some(22))
        .expect("the 2-byte write");
    assert_eq!(w2.get_string(6).expect("dir"), "W");
    assert_eq!(w2.get_ulong(0).expect("time"), 41_000);
    assert_eq!(w2.get_ulong(5).expect("phys"), 0xfebf_0100);
    assert_eq!(w2.get_uint(3).expect("pid"), 100);
    assert_eq!(w2.get_ubyte(7).expect("width"), 2);
    assert_eq!(w2.get_ulong(8).expect("value"), 0xbeef);
    assert_eq!(w2.get_string(9).expect("hex"), "0xbeef");
    assert_eq!(w2.get_ulong(10).expect("pc"), 0x4044);
    assert!(w2.get_string(11).is_err(), "no register database: a null");

    let others = rows_of(&dir.join("polling.events.parquet"));
    assert_eq!(
        others.len(),
        events.iter().filter(|e| !is_access(e)).count()
    );
    // Events: 0 kind, 1 time_ns, 3 seq, 17 text.
    let kinds: Vec<&str> = others
        .iter()
        .map(|r| r.get_string(0).expect("kind").as_str())
        .collect();
    assert_eq!(
        kinds,
        ["VERSION", "MAP", "MAP", "MARK", "MARK", "MARK", "UNMAP"]
    );
    assert_eq!(others[3].get_string(17).expect("text"), "init start");
    assert!(
        others[0].get_ulong(1).is_err(),
        "VERSION has no time: a null"
    );
}

/// Rows of a DuckDB query, or `None` where DuckDB is missing outside CI.
fn duckdb(sql: &str) -> Option<Vec<Vec<Json>>> {
    let python = python_with(&["duckdb"])?;
    let json = run_python(&python, "query_duckdb.py", &[sql]);
    Some(serde_json::from_str(&json).expect("JSON rows"))
}

/// The "top N registers by accesses" table of `mmiotrace stats`:
/// (phys, accesses, reads, writes) per register.
fn stats_registers(trace: &Path) -> Vec<[u64; 4]> {
    let out = stdout(&["stats", "--top", "100000", path_str(trace)]);
    let mut rows: Vec<[u64; 4]> = out
        .lines()
        .skip_while(|l| !(l.starts_with("top ") && l.ends_with(" registers by accesses:")))
        .skip(2)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| {
            let cells: Vec<u64> = l
                .split_whitespace()
                .map(|c| {
                    let (digits, radix) = match c.strip_prefix("0x") {
                        Some(hex) => (hex, 16),
                        None => (c, 10),
                    };
                    u64::from_str_radix(digits, radix).expect("a number")
                })
                .collect();
            cells.try_into().expect("4 columns")
        })
        .collect();
    rows.sort();
    rows
}

/// A trace of several threads and registers, with 64-bit values past 2^53.
fn mixed_trace(dir: &Path) -> PathBuf {
    use std::fmt::Write as _;
    let mut text = String::from(
        "VERSION 20070824\nMAP 0.000001 1 0xfe000000 0x7f0000000000 0x10000 0x4000 7 seq=0 proc=7\n",
    );
    let mut seq = 1;
    for i in 0..600u64 {
        let dir = if i % 3 == 0 { 'W' } else { 'R' };
        let register = 0xfe00_0000 + 8 * (i * 7 % 37);
        let value = i.wrapping_mul(0x0123_4567_89ab_cdef) | (1 << 63);
        let _ = writeln!(
            text,
            "{dir} 8 0.{:06} 1 {register:#x} {value:#x} {:#x} {} seq={seq} proc=7",
            10 + i,
            0x5000 + 4 * (i % 5),
            7 + i % 3
        );
        seq += 1;
        if i % 100 == 0 {
            let _ = writeln!(text, "MARK 0.{:06} step {i}\tseq={seq} proc=7", 10 + i);
            seq += 1;
        }
    }
    let path = dir.join("mixed.txt");
    std::fs::write(&path, text).expect("write the trace");
    path
}

#[test]
fn parquet_in_duckdb_group_by_register_equals_stats_and_values_are_exact() {
    let dir = scratch("export-duckdb");
    let trace = mixed_trace(&dir);
    let parquet = dir.join("mixed.parquet");
    stdout(&[
        "export",
        "--to",
        "parquet",
        path_str(&trace),
        "-o",
        path_str(&parquet),
    ]);
    let file = path_str(&parquet);
    let Some(rows) = duckdb(&format!(
        "select phys, count(*), count(*) filter (where dir = 'R'), count(*) filter (where dir = 'W') \
         from '{file}' group by phys order by phys"
    )) else {
        return;
    };
    let per_register: Vec<[u64; 4]> = rows
        .iter()
        .map(|r| {
            let cells: Vec<u64> = r.iter().map(|c| c.as_u64().expect("an integer")).collect();
            cells.try_into().expect("4 columns")
        })
        .collect();
    assert_eq!(per_register.len(), 37);
    assert_eq!(per_register, stats_registers(&trace));

    let expected: Vec<(u64, u64)> = events(&std::fs::read(&trace).expect("trace"))
        .iter()
        .filter_map(|e| match e {
            mmiotrace_trace::Event::Access(a) => Some((a.ext.seq.expect("seq"), a.value.low_u64())),
            _ => None,
        })
        .collect();
    let values: Vec<(u64, u64)> = duckdb(&format!("select seq, value from '{file}' order by seq"))
        .expect("duckdb")
        .iter()
        .map(|r| (r[0].as_u64().expect("seq"), r[1].as_u64().expect("exact")))
        .collect();
    assert_eq!(values, expected);
    assert!(values.iter().all(|&(_, v)| v >= 1 << 63));

    // The access columns have no nulls, so pandas and others keep uint64.
    let nullable: Vec<Json> = duckdb(&format!(
        "select name from parquet_schema('{file}') where repetition_type <> 'REQUIRED' and num_children is null"
    ))
    .expect("duckdb")
    .into_iter()
    .map(|mut r| r.remove(0))
    .collect();
    assert_eq!(nullable, ["reg"]);

    let metadata: std::collections::HashMap<String, String> = duckdb(&format!(
        "select key::varchar, value::varchar from parquet_kv_metadata('{file}')"
    ))
    .expect("duckdb")
    .into_iter()
    .map(|r| {
        (
            r[0].as_str().expect("key").to_string(),
            r[1].as_str().expect("value").to_string(),
        )
    })
    .collect();
    assert_eq!(metadata["mmiotrace.table"], "accesses");
    assert_eq!(metadata["mmiotrace.source"], path_str(&trace));
    assert_eq!(metadata["mmiotrace.source_format"], "text");
    assert!(
        metadata["mmiotrace.version"].starts_with(env!("CARGO_PKG_VERSION")),
        "{metadata:?}"
    );
    assert!(metadata["mmiotrace.time_base"].starts_with("nanoseconds"));

    let events_file = dir.join("mixed.events.parquet");
    let kinds = duckdb(&format!(
        "select kind, count(*), min(text) from '{}' group by kind order by kind",
        path_str(&events_file)
    ))
    .expect("duckdb");
    assert_eq!(
        kinds,
        [
            vec![Json::from("MAP"), Json::from(1), Json::Null],
            vec![Json::from("MARK"), Json::from(6), Json::from("step 0")],
            vec![Json::from("VERSION"), Json::from(1), Json::from("20070824")],
        ]
    );
}

#[test]
fn parquet_needs_a_file() {
    let out = mmiotrace(&["export", "--to", "parquet", path_str(&data("polling.txt"))]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("parquet needs a file"));
}
