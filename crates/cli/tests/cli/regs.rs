//! The analysis commands (`stats`, `filter`, `diff`, `export`) with
//! register databases, run as the real binary: the example NIC driver's
//! trace with its TOML map, and a GP108 fragment with envytools' rnndb.

use std::path::{Path, PathBuf};

use crate::common::*;
use mmiotrace_trace::Event;

fn nic_map() -> PathBuf {
    regdb_data("example-nic.toml")
}

fn stderr_of(args: &[&str]) -> String {
    let out = mmiotrace(args);
    assert!(!out.status.success(), "mmiotrace {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The lines of a report's section: from its title to the next empty line.
fn section<'r>(report: &'r str, title: &str) -> Vec<&'r str> {
    report
        .lines()
        .skip_while(|l| *l != title)
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect()
}

#[test]
fn stats_names_the_hot_and_the_polled_registers() {
    let trace = data("example-nic-a.txt");
    let map = nic_map();
    let report = stdout(&[
        "stats",
        path_str(&trace),
        "--regs",
        path_str(&map),
        "--top",
        "4",
    ]);
    assert_eq!(
        section(&report, "top 4 registers by accesses:"),
        [
            "                phys     accesses        reads       writes  register",
            "                0x20            9            6            3  MDIC",
            "                 0x0            8            6            2  CTRL",
            "                0x14            8            5            3  EERD",
            "                 0x8            4            4            0  STATUS",
        ]
    );
    assert!(
        report.contains(" STATUS@0x8   R               0x81 "),
        "the polling loop is not named:\n{report}"
    );
    // The 2-byte reads of EERD's DATA half are inside EERD.
    let reads = section(&report, "top 4 registers by reads:");
    assert!(reads.iter().any(|l| l.ends_with("  EERD")), "{reads:?}");

    // Without a database: addresses only, no register column.
    let plain = stdout(&["stats", path_str(&trace), "--top", "1"]);
    assert_eq!(
        section(&plain, "top 1 registers by accesses:"),
        [
            "                phys     accesses        reads       writes",
            "                0x20            9            6            3",
        ]
    );
    assert!(plain.contains("  0x8   R  "), "{plain}");
}

#[test]
fn stats_with_rnndb_learns_the_chipset_and_names_nvidia_registers() {
    let trace = data("nv-gpc.txt");
    let db = nv_mmio();
    let report = stdout(&["stats", path_str(&trace), "--regs", path_str(&db)]);
    let writes = section(&report, "top 3 registers by writes:");
    assert_eq!(
        writes[1..],
        [
            "          0xfd000140            2            0            2  PMC.INTR_EN_HOST",
            "          0xfd502000            1            0            1  PGRAPH.GPC[0].CTXCTL.INTR_TRIGGER",
            "          0xfd50a000            1            0            1  PGRAPH.GPC[1].CTXCTL.INTR_TRIGGER",
        ],
        "{report}"
    );
    // An address no register covers.
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("          0xfd500000 ") && l.ends_with("  ?")),
        "{report}"
    );
}

/// The physical addresses of the accesses `filter ARGS` keeps.
fn kept_addresses(trace: &Path, args: &[&str]) -> Vec<u64> {
    let mut all = vec!["filter", path_str(trace)];
    all.extend_from_slice(args);
    events(stdout(&all).as_bytes())
        .iter()
        .filter_map(|e| match e {
            Event::Access(a) => Some(a.phys),
            _ => None,
        })
        .collect()
}

#[test]
fn filter_by_register_name_glob_at_its_boundaries() {
    let trace = data("nv-gpc.txt");
    let db = nv_mmio();
    let db = path_str(&db);
    let kept = |glob: &str| kept_addresses(&trace, &["--regs", db, "--reg", glob]);
    // GPC_BROADCAST is a GPC* but not a GPC[...]; PGRAPH.INTR is neither.
    assert_eq!(
        kept("PGRAPH.GPC*"),
        [0xfd41_9000, 0xfd50_2000, 0xfd50_2002, 0xfd50_a000]
    );
    assert_eq!(
        kept(r"PGRAPH.GPC\[*"),
        [0xfd50_2000, 0xfd50_2002, 0xfd50_a000]
    );
    assert_eq!(kept(r"PGRAPH.GPC\[1\]*"), [0xfd50_a000]);
    // The 2-byte read inside INTR_TRIGGER matches its register's name, and
    // its own name with the offset.
    assert_eq!(
        kept("*INTR_TRIGGER"),
        [0xfd50_2000, 0xfd50_2002, 0xfd50_a000]
    );
    assert_eq!(kept("*INTR_TRIGGER+0x2"), [0xfd50_2002]);
    assert_eq!(kept("PMC.*"), [0xfd00_0000, 0xfd00_0140, 0xfd00_0140]);
    assert_eq!(kept("PMC"), [] as [u64; 0]);
    // Globs are ORed, and combine with the other conditions.
    let writes = kept_addresses(
        &trace,
        &[
            "--regs", db, "--reg", "PMC.ID", "--reg", "PGRAPH.*", "--dir", "W",
        ],
    );
    assert_eq!(writes, [0xfd50_2000, 0xfd50_a000]);
    // --drop keeps everything else, the unnamed access included.
    let dropped = kept_addresses(&trace, &["--regs", db, "--reg", "PGRAPH.*", "--drop"]);
    assert_eq!(
        dropped,
        [0xfd00_0000, 0xfd00_0140, 0xfd50_0000, 0xfd00_0140]
    );
}

#[test]
fn filter_by_register_name_with_a_toml_map_keeps_a_valid_trace() {
    let trace = data("example-nic-a.txt");
    let map = nic_map();
    let args = ["--regs", path_str(&map), "--reg", "EERD"];
    // EERD at 0x14, and its DATA half read alone at 0x16.
    assert_eq!(
        kept_addresses(&trace, &args),
        [0x14, 0x14, 0x14, 0x16, 0x14, 0x14, 0x14, 0x14, 0x16, 0x14]
    );
    let out = stdout(&[
        "filter",
        path_str(&trace),
        "--regs",
        path_str(&map),
        "--reg",
        "EERD",
    ]);
    let kinds: Vec<&str> = events(out.as_bytes())
        .iter()
        .map(|e| e.kind_name())
        .filter(|k| !matches!(*k, "R" | "W"))
        .collect();
    assert_eq!(
        kinds,
        ["VERSION", "MAP", "MARK", "MARK", "MARK", "MARK", "UNMAP"]
    );
    // The same map bound with --device instead of its own [match] rules.
    let by_device = kept_addresses(
        &trace,
        &[
            "--device",
            &format!("/dev/shm/mmiotrace-example-nic-*={}", path_str(&map)),
            "--reg",
            r"RA\[0\].*",
        ],
    );
    assert_eq!(by_device, [0x5400, 0x5404]);
}

/// A glob's `[...]` is a character class: `EE[RC]D` is EERD and EECD
/// (the hand-written matcher it replaced took the brackets literally and
/// matched nothing).
#[test]
fn filter_reg_glob_classes_and_bad_globs() {
    let dir = scratch("reg-classes");
    let trace = dir.join("eeprom.txt");
    std::fs::write(
        &trace,
        "\
VERSION 20070824
MAP 0.000001 1 0xfebc0000 0x7f0000000000 0x20000 0x0 1
R 4 0.000002 1 0xfebc0010 0x100 0x0 1
W 4 0.000003 1 0xfebc0014 0x1 0x0 1
R 4 0.000004 1 0xfebc0014 0x12340011 0x0 1
R 4 0.000005 1 0xfebc0008 0x80 0x0 1
R 4 0.000006 1 0xfebc0018 0x0 0x0 1
",
    )
    .expect("write");
    let lab_map = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lab/data/e1000.toml");
    let device = format!("map:1={}", path_str(&lab_map));
    let kept = |glob: &str| kept_addresses(&trace, &["--device", &device, "--reg", glob]);
    assert_eq!(kept("EE[RC]D"), [0xfebc_0010, 0xfebc_0014, 0xfebc_0014]);
    assert_eq!(kept("EE[!R]D"), [0xfebc_0010]);
    assert_eq!(kept("{STATUS,CTRL_EXT}"), [0xfebc_0008, 0xfebc_0018]);
    assert_eq!(kept(r"EE\[RC\]D"), [] as [u64; 0]);

    // An invalid glob is an error that names it, not a silent non-match.
    for option in ["--reg", "--from-mark"] {
        let err = stderr_of(&[
            "filter",
            path_str(&trace),
            "--device",
            &device,
            option,
            "EE[RC",
        ]);
        assert!(
            err.contains("\"EE[RC\" is not a valid glob: unclosed character class"),
            "{option}: {err}"
        );
    }
    let err = stderr_of(&[
        "export",
        "--to",
        "perfetto",
        path_str(&trace),
        "--counter",
        "EE{R",
    ]);
    assert!(err.contains("\"EE{R\" is not a valid glob"), "{err}");
}

#[test]
fn filter_reg_needs_a_database() {
    let trace = data("example-nic-a.txt");
    let err = stderr_of(&["filter", path_str(&trace), "--reg", "EERD"]);
    assert_eq!(
        err,
        "mmiotrace: error: --reg needs a register database: give one with --regs FILE\n"
    );
    let err = stderr_of(&["stats", path_str(&trace), "--chipset", "GP108"]);
    assert!(err.contains("no register database"), "{err}");
}

#[test]
fn diff_names_registers() {
    let (a, b) = (data("example-nic-a.txt"), data("example-nic-b.txt"));
    let map = nic_map();
    let out = mmiotrace(&["diff", path_str(&a), path_str(&b), "--regs", path_str(&map)]);
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8(out.stdout).expect("UTF-8");
    let body: String = report.lines().skip(2).map(|l| format!("{l}\n")).collect();
    assert_eq!(
        body,
        "\
different: 3 changed, 0 removed, 0 inserted; 35 the same
  writes  3 changed, 0 removed, 0 inserted
  reads   0 changed, 0 removed, 0 inserted
  places that differ: 1
(polling loops folded before comparing; --exact compares every access)

@@ a#19 b#19 @@
  W 4 RA[0].RAL 0x12005452
  W 4 RA[0].RAH 0x80005634
~ W 8 RXD[0].BUFFER_ADDR 0x563cc9afad10 -> 0x561a4572ad10 (a#21 0.829372 seq=759, b#21 0.007905 seq=100)
  W 8 RXD[0].LENGTH 0x0
~ W 8 RXD[1].BUFFER_ADDR 0x563cc9afb510 -> 0x561a4572b510 (a#23 0.829378 seq=761, b#23 0.007911 seq=102)
  W 8 RXD[1].LENGTH 0x0
~ W 8 RXD[2].BUFFER_ADDR 0x563cc9afbd10 -> 0x561a4572bd10 (a#25 0.829421 seq=763, b#25 0.007917 seq=104)
  W 8 RXD[2].LENGTH 0x0
  W 4 MDIC 0x8220000
"
    );
}

/// `trace` with the device mapped `by` bytes higher: MAP and access
/// addresses moved, everything else as it was.
fn moved(trace: &str, by: u64) -> String {
    let shift = |field: &str| {
        let value = u64::from_str_radix(field.trim_start_matches("0x"), 16).expect("hex");
        format!("{:#x}", value + by)
    };
    trace
        .lines()
        .map(|line| {
            let mut fields: Vec<String> = line.split(' ').map(str::to_string).collect();
            match fields[0].as_str() {
                "MAP" => fields[3] = shift(&fields[3]),
                "R" | "W" => fields[4] = shift(&fields[4]),
                _ => {}
            }
            fields.join(" ") + "\n"
        })
        .collect()
}

#[test]
fn diff_aligns_by_register_name_when_the_device_moved() {
    let a = data("example-nic-a.txt");
    let dir = scratch("regs-diff-moved");
    let b = dir.join("moved.txt");
    let text = std::fs::read_to_string(&a).expect("fixture");
    std::fs::write(&b, moved(&text, 0x10_0000)).expect("write");
    let map = nic_map();

    // By address, every operation differs.
    let out = mmiotrace(&["diff", "--summary", path_str(&a), path_str(&b)]);
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(
        report.contains("different: 0 changed, 38 removed, 38 inserted; 0 the same"),
        "{report}"
    );

    // By register name (the TOML map counts offsets from each mapping), the same.
    let out = mmiotrace(&["diff", path_str(&a), path_str(&b), "--regs", path_str(&map)]);
    let report = String::from_utf8(out.stdout).expect("UTF-8");
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(report.contains("same: all 38 operations"), "{report}");
}

#[test]
fn export_carries_register_names_in_every_format() {
    let trace = data("example-nic-a.txt");
    let map = nic_map();
    let map = path_str(&map);
    let trace = path_str(&trace);

    let csv = stdout(&["export", "--to", "csv", trace, "--regs", map]);
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(
        rows[0],
        "kind,time_ns,end_ns,seq,process,pid,map_id,phys,reg,width,value,value_hex,pc,count,len,size,until,text"
    );
    assert!(
        rows.contains(&"R,767495000,,1,10649,10649,1,0x8,STATUS,4,129,0x81,0x563c9928d358,,,,,"),
        "{csv}"
    );
    assert!(
        rows.contains(
            &"R,826602000,,681,10649,10649,1,0x16,EERD+0x2,2,21586,0x5452,0x563c9928d71b,,,,,"
        ),
        "{csv}"
    );
    assert!(
        rows.contains(&"W,829372000,,759,10649,10649,1,0x10800,RXD[0].BUFFER_ADDR,8,94819081760016,0x563cc9afad10,0x563c9928d894,,,,,"),
        "{csv}"
    );
    // MAP and MARK rows have no register.
    assert!(
        rows.contains(&"MARK,767504000,,4,10649,,,,,,,,,,,,,reset"),
        "{csv}"
    );

    let jsonl = stdout(&["export", "--to", "jsonl", trace, "--regs", map]);
    let objects: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let regs: Vec<&str> = objects
        .iter()
        .filter(|o| o["kind"] == "W")
        .take(4)
        .map(|o| o["reg"].as_str().expect("a named write"))
        .collect();
    assert_eq!(regs, ["IMC", "CTRL", "IMC", "EERD"]);
    assert!(
        objects
            .iter()
            .all(|o| o["kind"] == "R" || o["kind"] == "W" || o.get("reg").is_none())
    );

    let perfetto = stdout(&[
        "export",
        "--to",
        "chrome-json",
        trace,
        "--regs",
        map,
        "--counter",
        "MDI?",
    ]);
    let json: serde_json::Value = serde_json::from_str(&perfetto).expect("valid JSON");
    let events = json["traceEvents"].as_array().expect("an array");
    let first = events
        .iter()
        .find(|e| e["cat"] == "mmio")
        .expect("an access");
    assert_eq!(first["name"], "R STATUS@0x8");
    assert_eq!(first["args"]["reg"], "STATUS");
    let counters: Vec<u64> = events
        .iter()
        .filter(|e| e["ph"] == "C")
        .map(|e| {
            assert_eq!(e["name"], "MDIC@0x20");
            e["args"]["value"].as_u64().expect("a value")
        })
        .collect();
    assert_eq!(counters.len(), 9);
    assert_eq!(counters[0], 0x822_0000);

    let err = stderr_of(&["export", "--to", "perfetto", trace, "--counter", "MDIC"]);
    assert!(
        err.contains("--counter MDIC: a register name needs a register database"),
        "{err}"
    );
}

#[test]
fn parquet_has_a_reg_column() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::RowAccessor;

    let dir = scratch("regs-parquet");
    let path = dir.join("nic.parquet");
    let trace = data("example-nic-a.txt");
    let map = nic_map();
    stdout(&[
        "export",
        "--to",
        "parquet",
        path_str(&trace),
        "--regs",
        path_str(&map),
        "-o",
        path_str(&path),
    ]);
    let rows_of = |path: &std::path::Path| -> Vec<parquet::record::Row> {
        let reader = SerializedFileReader::new(std::fs::File::open(path).expect("written"))
            .expect("a parquet file");
        reader
            .get_row_iter(None)
            .expect("rows")
            .map(|r| r.expect("a row"))
            .collect()
    };
    // Column 11 of the accesses is reg.
    let accesses = rows_of(&path);
    let named: Vec<&str> = accesses
        .iter()
        .filter_map(|r| r.get_string(11).ok().map(String::as_str))
        .take(3)
        .collect();
    assert_eq!(named, ["STATUS", "IMC", "ICR"]);
    // Column 8 of the other events is reg.
    let events = rows_of(&dir.join("nic.events.parquet"));
    assert_eq!(events[1].get_string(0).expect("kind"), "MAP");
    assert!(
        events[1].get_string(8).is_err(),
        "MAP has no register: a null"
    );
}

#[test]
fn decode_and_the_analysis_commands_share_the_option_grammar() {
    for command in ["decode", "stats", "filter", "diff", "export"] {
        let help = stdout(&[command, "--help"]);
        for option in ["--regs <FILE>", "--device <SPEC>", "--chipset <NAME>"] {
            assert!(help.contains(option), "{command} --help lacks {option}");
        }
    }
    // A bad --device spec is the same error everywhere.
    let trace = data("example-nic-a.txt");
    for command in ["stats", "filter"] {
        let err = stderr_of(&[command, path_str(&trace), "--device", "0xfe00zz=x.toml"]);
        assert_eq!(
            err,
            "mmiotrace: error: --device \"0xfe00zz=x.toml\": \"0xfe00zz\" is not an address\n"
        );
    }
}
