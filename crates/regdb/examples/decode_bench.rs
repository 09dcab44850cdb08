//! Decode throughput against plain parsing of the same trace.
//!
//! ```text
//! cargo run --release -p mmiotrace-regdb --example decode_bench -- [--accesses 5000000] [--runs 5] [--rnndb DIR] [--keep]
//! ```
//!
//! Writes a kernel-style trace of a GPU (PCIDEV, MAP of BAR0, then
//! `--accesses` reads and writes cycling over PMC, PTIMER, PBUS, PFIFO,
//! PFIFO_CHAN and PGRAPH GPC/TPC registers and a few unknown offsets), in
//! text and in binary, to a temporary directory. Then, best of `--runs`,
//! for each format: parsing alone (`TraceReader::read_ref` over every
//! event), and parsing plus decoding with envytools' `nv_mmio.xml`, the
//! output formatted as text (and as JSON lines) into a sink. Prints
//! accesses per second of CPU time, the decode/parse ratio, and the peak RSS
//! after each step (which must not grow with the trace).

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mmiotrace_regdb::decode::{DecodeOptions, Decoder, DeviceSpec};
use mmiotrace_regdb::format::{JsonWriter, TextWriter as DecodedText};
use mmiotrace_regdb::{Database, DecodeSink};
use mmiotrace_trace::*;

struct Args {
    accesses: u64,
    runs: usize,
    rnndb: PathBuf,
    keep: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        accesses: 5_000_000,
        runs: 5,
        rnndb: Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/rnndb"),
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--accesses" => {
                let v = it.next().ok_or("--accesses needs a number")?;
                args.accesses = v.parse().map_err(|_| format!("bad --accesses {v:?}"))?;
            }
            "--runs" => {
                let v = it.next().ok_or("--runs needs a number")?;
                args.runs = v.parse().map_err(|_| format!("bad --runs {v:?}"))?;
            }
            "--rnndb" => args.rnndb = it.next().ok_or("--rnndb needs a directory")?.into(),
            "--keep" => args.keep = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

/// BAR0 offsets a nouveau-like driver touches, a plausible value for each,
/// and the bits of it that change from one round to the next (so that the
/// decoder sees varying values, as in a real trace, not the same 16 lines).
const REGISTERS: &[(Direction, u64, u64, u64)] = &[
    (Direction::Read, 0x00_0100, 0x0000_1100, 0x0000_1100), // PMC.INTR_HOST
    (Direction::Write, 0x00_0140, 0x0000_0001, 0x0000_0001), // PMC.INTR_EN_HOST
    (Direction::Read, 0x00_9400, 0x1234_5678, 0xffff_ffff), // PTIMER.TIME_LOW
    (Direction::Read, 0x00_9410, 0x0000_0012, 0x0000_00ff), // PTIMER.TIME_HIGH
    (Direction::Write, 0x00_1704, 0x8001_2345, 0x0000_ffff), // PBUS.HOST_MEM.BAR1
    (Direction::Read, 0x00_2100, 0x3000_0101, 0x3000_0101), // PFIFO.INTR
    (Direction::Write, 0x00_2254, 0x1001_2345, 0x000f_ffff), // PFIFO.BAR1_BASE
    (Direction::Write, 0x80_0028, 0x8000_1234, 0x0000_ffff), // PFIFO_CHAN[5].CHAN
    (Direction::Write, 0x80_0030, 0x8000_1240, 0x0000_ffff), // PFIFO_CHAN[6].CHAN
    (Direction::Write, 0x51_400c, 0x0000_003f, 0x0000_003f), // PGRAPH.GPC[2].TPC[0].POLY.PM_UNK00C
    (Direction::Read, 0x51_4060, 0x0000_0009, 0x0000_01ff), // PGRAPH.GPC[2].TPC[0].POLY.VSTATUS
    (Direction::Read, 0x40_0100, 0x0020_0011, 0x0020_0011), // PGRAPH.INTR
    (Direction::Write, 0x40_0100, 0x0020_0011, 0x0020_0011), // PGRAPH.INTR (ack)
    (Direction::Read, 0x00_0200, 0xffff_ffff, 0x0000_0000), // PMC.ENABLE
    (Direction::Read, 0xff_fff0, 0xdead_beef, 0x0000_ffff), // unknown
    (Direction::Write, 0x61_0000, 0x0000_0001, 0x0000_00ff), // display
];

const BAR0: u64 = 0xf000_0000;

fn events(accesses: u64) -> impl Iterator<Item = Event> {
    let header = [
        Event::Version(Version {
            version: "20070824".into(),
        }),
        Event::PciDev(PciDev {
            bus: 1,
            devfn: 0,
            vendor: 0x10de,
            device: 0x1c82,
            irq: 16,
            bar_start: [BAR0, 0xe000_000c, 0, 0xe200_000c, 0, 0xe001, 0xf100_0000],
            bar_size: [0x100_0000, 0x1000_0000, 0, 0x200_0000, 0, 0x80, 0x8_0000],
            driver: "nouveau".into(),
        }),
        Event::Map(Map {
            time: Timestamp::from_nanos(1_000),
            map_id: 1,
            phys: BAR0,
            virt: 0xffff_c900_0080_0000,
            len: 0x100_0000,
            pc: 0xffff_ffff_a012_3456,
            pid: 0,
            ext: Ext::default(),
            path: None,
        }),
    ];
    // PMC.ID first: the decoder learns the chipset (GP107) from it.
    let id_read = std::iter::once((Direction::Read, 0u64, 0x1370_00a1u64));
    let rounds = (0u64..).flat_map(|round| {
        REGISTERS.iter().map(move |(dir, offset, value, varies)| {
            // A multiplicative hash of the round spreads changes over the varying bits.
            let change = round.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
            (*dir, *offset, value ^ (change & varies))
        })
    });
    let body = id_read
        .chain(rounds)
        .take(accesses as usize)
        .enumerate()
        .map(|(i, (dir, offset, value))| {
            Event::Access(Access {
                dir,
                time: Timestamp::from_nanos(2_000 + i as u64 * 1_000),
                map_id: 1,
                phys: BAR0 + offset,
                value: Value::from_u64(4, value).expect("4-byte value"),
                pc: 0xffff_ffff_a012_3456 + (i as u64 % 64) * 4,
                pid: 1234,
                ext: Ext::default(),
            })
        });
    header.into_iter().chain(body)
}

fn write_traces(dir: &Path, accesses: u64) -> (PathBuf, PathBuf) {
    let text_path = dir.join("bench.trace");
    let binary_path = dir.join("bench.mtb");
    let mut text = TextWriter::new(BufWriter::new(
        File::create(&text_path).expect("create text trace"),
    ));
    let mut binary = BinaryWriter::new(BufWriter::new(
        File::create(&binary_path).expect("create binary trace"),
    ))
    .expect("binary header");
    for event in events(accesses) {
        text.write_event(&event).expect("write text trace");
        binary.write_event(&event).expect("write binary trace");
    }
    EventWrite::flush(&mut text).expect("flush text trace");
    EventWrite::flush(&mut binary).expect("flush binary trace");
    (text_path, binary_path)
}

fn open(path: &Path) -> TraceReader<BufReader<File>> {
    let file = File::open(path).expect("open trace");
    TraceReader::new(
        BufReader::with_capacity(256 * 1024, file),
        ReadOptions::default(),
    )
    .expect("trace header")
}

fn parse(path: &Path) -> u64 {
    let mut reader = open(path);
    let mut events = 0u64;
    while let Some(event) = reader.read_ref().expect("trace parses") {
        // Look at the event, so that parsing cannot be optimised away.
        events += u64::from(matches!(event, Event::Access(_)));
    }
    events
}

fn decode(path: &Path, dbs: &[Database], specs: &[DeviceSpec], json: bool) -> u64 {
    let mut reader = open(path);
    let mut decoder = Decoder::new(dbs, specs, &DecodeOptions::default()).expect("decoder");
    let sink = BufWriter::with_capacity(256 * 1024, std::io::sink());
    let mut text = DecodedText::new(sink);
    let sink = BufWriter::with_capacity(256 * 1024, std::io::sink());
    let mut jsonl = JsonWriter::new(sink);
    let out: &mut dyn DecodeSink = if json { &mut jsonl } else { &mut text };
    let mut events = 0u64;
    while let Some(event) = reader.read_ref().expect("trace parses") {
        events += u64::from(matches!(event, Event::Access(_)));
        decoder.feed(event, out).expect("write to sink");
    }
    text.flush().expect("flush");
    jsonl.flush().expect("flush");
    events
}

/// CPU time this process has used (user and system), from /proc: the
/// machine this runs on is shared, and wall time counts the others' turns.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux architecture that matters here.
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Best of `runs`, in CPU time where /proc has it (10 ms resolution),
/// else wall time.
fn best<F: FnMut() -> u64>(runs: usize, mut f: F) -> (Duration, u64) {
    let mut best = Duration::MAX;
    let mut n = 0;
    for _ in 0..runs.max(1) {
        let (cpu, wall) = (cpu_time(), Instant::now());
        n = f();
        let took = match (cpu, cpu_time()) {
            (Some(before), Some(after)) => after.saturating_sub(before),
            _ => wall.elapsed(),
        };
        best = best.min(took.max(Duration::from_millis(1)));
    }
    (best, n)
}

/// Peak resident set size of this process, in MiB (Linux).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(err) => {
            eprintln!("decode_bench: {err}");
            std::process::exit(2);
        }
    };
    let db = mmiotrace_regdb::load(&args.rnndb.join("nv_mmio.xml")).unwrap_or_else(|err| {
        eprintln!("decode_bench: {err} (give the envytools rnndb with --rnndb DIR)");
        std::process::exit(2);
    });
    let mut dbs = vec![db];
    let specs = vec![DeviceSpec::parse("10de:1c82=nv_mmio.xml", &mut dbs).expect("spec")];

    let dir = std::env::temp_dir().join(format!("mmiotrace-decode-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    let (text, binary) = write_traces(&dir, args.accesses);
    println!(
        "trace: {} accesses; text {:.1} MiB, binary {:.1} MiB; best of {} runs; rss before decoding {:.1} MiB",
        args.accesses,
        std::fs::metadata(&text).map(|m| m.len()).unwrap_or(0) as f64 / (1 << 20) as f64,
        std::fs::metadata(&binary).map(|m| m.len()).unwrap_or(0) as f64 / (1 << 20) as f64,
        args.runs,
        peak_rss_mib().unwrap_or(f64::NAN),
    );
    println!(
        "{:<7} {:<22} {:>14} {:>10} {:>10}",
        "input", "what", "accesses/s", "× parse", "peak MiB"
    );
    for (name, path) in [("text", &text), ("binary", &binary)] {
        let (parse_time, n) = best(args.runs, || parse(path));
        let rate = |t: Duration| n as f64 / t.as_secs_f64();
        println!(
            "{name:<7} {:<22} {:>14.0} {:>10} {:>10.1}",
            "parse",
            rate(parse_time),
            "1.00",
            peak_rss_mib().unwrap_or(f64::NAN)
        );
        for (what, json) in [
            ("parse + decode (text)", false),
            ("parse + decode (jsonl)", true),
        ] {
            let (t, m) = best(args.runs, || decode(path, &dbs, &specs, json));
            assert_eq!(m, n, "decode saw every access");
            println!(
                "{name:<7} {what:<22} {:>14.0} {:>10.2} {:>10.1}",
                rate(t),
                t.as_secs_f64() / parse_time.as_secs_f64(),
                peak_rss_mib().unwrap_or(f64::NAN)
            );
        }
    }
    if args.keep {
        println!("kept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
