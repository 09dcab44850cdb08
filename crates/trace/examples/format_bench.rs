//! Throughput of the trace formats, against `wc -l` as the floor.
//!
//! ```text
//! cargo run --release -p mmiotrace-trace --example format_bench -- [--size 1G] [--runs 2] [--keep]
//! ```
//!
//! Generates a text trace of about `--size` bytes in a temporary directory
//! (what `mmiotrace record` writes: R/W lines with pc, thread id, seq= and
//! proc=, some MAP/UNMAP/MARK), then times, best of `--runs`:
//! `wc -l`, parsing the text, converting it to binary, parsing the binary.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mmiotrace_trace::*;

struct Args {
    size: u64,
    runs: usize,
    keep: bool,
    dir: Option<PathBuf>,
    /// Only parse this existing trace (for profiling).
    parse: Option<PathBuf>,
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, scale) = match s.chars().last()?.to_ascii_uppercase() {
        'K' => (&s[..s.len() - 1], 1u64 << 10),
        'M' => (&s[..s.len() - 1], 1 << 20),
        'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(scale)
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        size: 1 << 30,
        runs: 2,
        keep: false,
        dir: None,
        parse: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--size" => {
                let v = it.next().ok_or("--size needs a value, e.g. 1G")?;
                args.size = parse_size(&v).ok_or(format!("bad --size {v:?}"))?;
            }
            "--runs" => {
                let v = it.next().ok_or("--runs needs a value")?;
                args.runs = v.parse().map_err(|_| format!("bad --runs {v:?}"))?;
            }
            "--dir" => args.dir = Some(it.next().ok_or("--dir needs a value")?.into()),
            "--keep" => args.keep = true,
            "--parse" => args.parse = Some(it.next().ok_or("--parse needs a file")?.into()),
            "-h" | "--help" => {
                println!(
                    "format_bench [--size 1G] [--runs 2] [--dir DIR] [--keep] | --parse FILE\n\
                     Times wc -l, text parse, text->binary conversion and binary parse;\n\
                     with --parse, only parses FILE --runs times (for profiling)."
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

/// A small xorshift generator: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Writes about `size` bytes of a realistic trace: a driver polling status
/// registers, writing control registers, now and then a marker or a new map.
fn generate(path: &Path, size: u64) -> std::io::Result<u64> {
    let file = File::create(path)?;
    let mut w = TextWriter::new(BufWriter::with_capacity(1 << 20, file));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut seq = 0u64;
    let mut nanos = 1_000_000u64;
    let bars = [0xfebf_0000u64, 0xfd00_0000, 0xe000_0000];
    w.write_event(&Event::Version(Version {
        version: KERNEL_VERSION.into(),
    }))?;
    let mut events = 1u64;
    for (id, bar) in bars.iter().enumerate() {
        w.write_event(&Event::Map(Map {
            time: Timestamp::from_nanos(nanos),
            map_id: id as u32 + 1,
            phys: *bar,
            virt: 0x7f3a_9c00_0000 + (id as u64) * 0x100_0000,
            len: 0x2_0000,
            pc: 0x55d0_c0a0_1234,
            pid: 3121,
            ext: Ext {
                seq: Some(seq),
                process: Some(3120),
                hook: None,
            },
            path: Some(format!("/sys/bus/pci/devices/0000:00:0{id}.0/resource0")),
        }))?;
        seq += 1;
        events += 1;
    }
    let mut written = 0u64;
    while written < size {
        // Check the size only now and then; the writer's buffer hides it anyway.
        for _ in 0..4096 {
            nanos += 200 + rng.below(3000);
            let roll = rng.below(1000);
            let event = if roll == 0 {
                Event::Mark(Mark {
                    time: Timestamp::from_nanos(nanos / 1000 * 1000),
                    text: format!("phase {}", seq / 1000),
                    ext: Ext {
                        seq: Some(seq),
                        process: Some(3120),
                        hook: None,
                    },
                })
            } else {
                let map = rng.below(3);
                let width = [4u8, 4, 4, 4, 4, 4, 1, 2, 8][rng.below(9) as usize];
                let reg = rng.below(64) * 4;
                let value = match rng.below(4) {
                    0 => 0,
                    1 => 0xffff_ffff,
                    _ => rng.next(),
                };
                let width_mask = if width == 8 {
                    u64::MAX
                } else {
                    (1u64 << (8 * width)) - 1
                };
                Event::Access(Access {
                    dir: if roll % 3 == 0 {
                        Direction::Write
                    } else {
                        Direction::Read
                    },
                    time: Timestamp::from_nanos(nanos / 1000 * 1000),
                    map_id: map as u32 + 1,
                    phys: bars[map as usize] + reg,
                    value: Value::from_u64(width, value & width_mask).expect("kernel width"),
                    pc: 0x55d0_c0a0_1000 + rng.below(32) * 7,
                    pid: 3121 + rng.below(4) as u32,
                    ext: Ext {
                        seq: Some(seq),
                        process: Some(3120),
                        hook: None,
                    },
                })
            };
            w.write_event(&event)?;
            seq += 1;
            events += 1;
        }
        w.flush()?;
        written = w.get_ref().get_ref().metadata()?.len();
    }
    w.finish()?;
    Ok(events)
}

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best: Option<(Duration, T)> = None;
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        let out = f();
        let took = start.elapsed();
        if best.as_ref().is_none_or(|(b, _)| took < *b) {
            best = Some((took, out));
        }
    }
    best.expect("at least one run")
}

fn count_events(path: &Path) -> Result<u64, Error> {
    let file = File::open(path).map_err(|source| Error::Io {
        name: "bench".into(),
        source,
    })?;
    let mut reader = TraceReader::new(file, ReadOptions::default())?;
    let mut events = 0u64;
    while let Some(event) = reader.read_ref()? {
        events += 1;
        std::hint::black_box(event);
    }
    Ok(events)
}

fn convert_to_binary(text: &Path, binary: &Path) -> Result<u64, Box<dyn std::error::Error>> {
    let mut reader = TraceReader::new(File::open(text)?, ReadOptions::default())?;
    let out = BufWriter::with_capacity(1 << 20, File::create(binary)?);
    let mut writer = BinaryWriter::new(out)?;
    let mut events = 0u64;
    while let Some(event) = reader.read_ref()? {
        writer.write_event(event)?;
        events += 1;
    }
    writer.finish()?;
    Ok(events)
}

fn rate(events: u64, took: Duration) -> String {
    format!("{:.1} M events/s", events as f64 / took.as_secs_f64() / 1e6)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    if let Some(path) = &args.parse {
        let (took, events) = best_of(args.runs, || count_events(path));
        let events = events?;
        println!(
            "parse {:.3} s  {events} events  ({})",
            took.as_secs_f64(),
            rate(events, took)
        );
        return Ok(());
    }
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("mmiotrace-format-bench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir)?;
    let text = dir.join("trace.txt");
    let binary = dir.join("trace.mtb");

    let start = Instant::now();
    let generated = generate(&text, args.size)?;
    let text_len = std::fs::metadata(&text)?.len();
    println!(
        "generated   {} events, {:.1} MiB of text in {:.2} s ({})",
        generated,
        text_len as f64 / (1 << 20) as f64,
        start.elapsed().as_secs_f64(),
        text.display()
    );

    let (wc_time, wc_lines) = best_of(args.runs, || {
        let out = Command::new("wc").arg("-l").arg(&text).output();
        out.ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    });
    println!(
        "wc -l       {:>8.3} s  {wc_lines} lines  ({})",
        wc_time.as_secs_f64(),
        rate(wc_lines, wc_time)
    );

    let (text_time, text_events) = best_of(args.runs, || count_events(&text));
    let text_events = text_events?;
    println!(
        "text parse  {:>8.3} s  {text_events} events  ({}, {:.2}x wc -l)",
        text_time.as_secs_f64(),
        rate(text_events, text_time),
        text_time.as_secs_f64() / wc_time.as_secs_f64()
    );

    let start = Instant::now();
    let converted = convert_to_binary(&text, &binary)?;
    let convert_time = start.elapsed();
    let binary_len = std::fs::metadata(&binary)?.len();
    println!(
        "to binary   {:>8.3} s  {converted} events  ({}), {:.1} MiB ({:.1}% of text, {:.1} bytes/event)",
        convert_time.as_secs_f64(),
        rate(converted, convert_time),
        binary_len as f64 / (1 << 20) as f64,
        100.0 * binary_len as f64 / text_len as f64,
        binary_len as f64 / converted.max(1) as f64
    );

    let (binary_time, binary_events) = best_of(args.runs, || count_events(&binary));
    let binary_events = binary_events?;
    println!(
        "binary parse{:>8.3} s  {binary_events} events  ({}, {:.1}x faster than text)",
        binary_time.as_secs_f64(),
        rate(binary_events, binary_time),
        text_time.as_secs_f64() / binary_time.as_secs_f64()
    );
    if binary_events != text_events {
        return Err(format!("binary has {binary_events} events, text {text_events}").into());
    }

    if args.keep {
        println!("kept {} and {}", text.display(), binary.display());
    } else if args.dir.is_none() {
        std::fs::remove_dir_all(&dir)?;
    } else {
        std::fs::remove_file(&text)?;
        std::fs::remove_file(&binary)?;
    }
    Ok(())
}
