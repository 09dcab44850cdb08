//! `mmiotrace stats`: summarise a trace in one pass and bounded memory.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

use clap::Args;
use mmiotrace_trace::{Direction, Event, Format, ReadOptions, Timestamp, TraceReader};

use super::convert::open_input;

/// Summarise a trace: events per kind, accesses per width and per mapping,
/// the time span, and the most accessed registers.
///
/// Reads text or binary traces (detected from the first bytes) in one pass.
/// Memory stays bounded however long the trace is: at most --max-registers
/// distinct register addresses and 10000 mappings are tallied; when a
/// table is full the output says so and how many accesses it left out.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct Cmd {
    /// The trace to read, text or binary; `-` for standard input.
    #[arg(value_name = "FILE")]
    input: PathBuf,

    /// How many of the most accessed registers to list.
    #[arg(long, value_name = "N", default_value_t = 10)]
    top: usize,

    /// Most distinct register addresses to tally.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    max_registers: usize,

    /// Treat a cut-off last line or record as an error.
    #[arg(long)]
    strict: bool,
}

/// Most distinct map ids to tally.
const MAX_MAPS: usize = 10_000;

const KINDS: [&str; 10] = [
    "VERSION", "PCIDEV", "MAP", "UNMAP", "R", "W", "UNKNOWN", "MARK", "LOST", "REPEAT",
];

#[derive(Debug, Default)]
struct MapStats {
    /// From the MAP record, if the trace has one for this id.
    phys: Option<u64>,
    len: u64,
    path: Option<String>,
    reads: u64,
    writes: u64,
    unknown: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct RegisterStats {
    reads: u64,
    writes: u64,
}

#[derive(Debug, Default)]
struct Stats {
    events: u64,
    per_kind: [u64; KINDS.len()],
    /// Index: log2 of the width (1..=64 bytes).
    per_width: [u64; 7],
    lost_events: u64,
    first_time: Option<Timestamp>,
    last_time: Option<Timestamp>,
    maps: BTreeMap<u32, MapStats>,
    /// Accesses to map ids beyond `MAX_MAPS`.
    maps_untallied: u64,
    registers: HashMap<u64, RegisterStats>,
    /// Accesses to addresses beyond `max_registers`.
    registers_untallied: u64,
    truncated: Option<String>,
}

impl Stats {
    fn map_entry(&mut self, map_id: u32) -> Option<&mut MapStats> {
        if self.maps.len() >= MAX_MAPS && !self.maps.contains_key(&map_id) {
            return None;
        }
        Some(self.maps.entry(map_id).or_default())
    }

    fn add(&mut self, event: &Event, max_registers: usize) {
        self.events += 1;
        let kind = KINDS
            .iter()
            .position(|k| *k == event.kind_name())
            .unwrap_or(KINDS.len() - 1);
        self.per_kind[kind] += 1;
        if let Some(t) = event.time() {
            self.first_time = Some(self.first_time.map_or(t, |f| f.min(t)));
            self.last_time = Some(self.last_time.map_or(t, |l| l.max(t)));
        }
        match event {
            Event::Map(m) => match self.map_entry(m.map_id) {
                Some(entry) => {
                    entry.phys = Some(m.phys);
                    entry.len = m.len;
                    entry.path.clone_from(&m.path);
                }
                None => self.maps_untallied += 1,
            },
            Event::Access(a) => {
                self.per_width[a.width().trailing_zeros() as usize % 7] += 1;
                let read = a.dir == Direction::Read;
                match self.map_entry(a.map_id) {
                    Some(entry) if read => entry.reads += 1,
                    Some(entry) => entry.writes += 1,
                    None => self.maps_untallied += 1,
                }
                let full = self.registers.len() >= max_registers;
                let register = if full {
                    self.registers.get_mut(&a.phys)
                } else {
                    Some(self.registers.entry(a.phys).or_default())
                };
                match register {
                    Some(r) if read => r.reads += 1,
                    Some(r) => r.writes += 1,
                    None => self.registers_untallied += 1,
                }
            }
            Event::Unknown(u) => match self.map_entry(u.map_id) {
                Some(entry) => entry.unknown += 1,
                None => self.maps_untallied += 1,
            },
            Event::Lost(l) => self.lost_events = self.lost_events.saturating_add(l.count),
            Event::Version(_)
            | Event::PciDev(_)
            | Event::Unmap(_)
            | Event::Mark(_)
            | Event::Repeat(_) => {}
        }
    }
}

fn time(t: Timestamp) -> String {
    format!("{}.{:06}", t.secs(), t.subsec_micros())
}

impl Cmd {
    pub fn run(self) -> anyhow::Result<()> {
        let (input, name) = open_input(&self.input)?;
        let options = ReadOptions::default()
            .with_name(name.as_str())
            .with_fatal_truncation(self.strict);
        let mut reader = TraceReader::new(input, options)?;
        let format = reader.format();
        let mut stats = Stats::default();
        while let Some(event) = reader.read_ref()? {
            stats.add(event, self.max_registers);
        }
        if let Some(t) = reader.truncation() {
            eprintln!("mmiotrace: warning: {t}");
            stats.truncated = Some(t.to_string());
        }
        let report = self.report(&name, format, &stats);
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(report.as_bytes())?;
        stdout.flush()?;
        Ok(())
    }

    fn report(&self, name: &str, format: Format, s: &Stats) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_report(&mut out, name, format, s);
        out
    }

    fn write_report(
        &self,
        out: &mut String,
        name: &str,
        format: Format,
        s: &Stats,
    ) -> std::fmt::Result {
        let format = match format {
            Format::Binary => "binary",
            _ => "text",
        };
        writeln!(out, "trace:     {name} ({format})")?;
        writeln!(out, "events:    {}", s.events)?;
        match (s.first_time, s.last_time) {
            (Some(first), Some(last)) => writeln!(
                out,
                "time span: {} .. {} ({} s)",
                time(first),
                time(last),
                time(Timestamp::from_nanos(last.nanos - first.nanos))
            )?,
            _ => writeln!(out, "time span: none (no timed events)")?,
        }
        if s.lost_events > 0 {
            writeln!(
                out,
                "lost:      {} events (reported by the tracer)",
                s.lost_events
            )?;
        }
        if let Some(t) = &s.truncated {
            writeln!(out, "warning:   {t}")?;
        }

        writeln!(out, "\nevents by kind:")?;
        for (kind, count) in KINDS.iter().zip(s.per_kind) {
            writeln!(out, "  {kind:<8} {count:>12}")?;
        }

        writeln!(out, "\naccesses by width:")?;
        for (log2, count) in s.per_width.iter().enumerate() {
            if *count > 0 {
                writeln!(out, "  {:>2} bytes {:>12}", 1u32 << log2, count)?;
            }
        }

        writeln!(out, "\nmaps:")?;
        writeln!(
            out,
            "  {:>6} {:>18} {:>10} {:>12} {:>12} {:>8}  path",
            "id", "phys", "len", "reads", "writes", "unknown"
        )?;
        for (id, m) in &s.maps {
            let phys = m.phys.map_or("?".to_string(), |p| format!("{p:#x}"));
            let len = m.phys.map_or("?".to_string(), |_| format!("{:#x}", m.len));
            writeln!(
                out,
                "  {id:>6} {phys:>18} {len:>10} {:>12} {:>12} {:>8}  {}",
                m.reads,
                m.writes,
                m.unknown,
                m.path.as_deref().unwrap_or("-")
            )?;
        }
        if s.maps_untallied > 0 {
            writeln!(
                out,
                "  (capped at {MAX_MAPS} map ids: {} records of further maps are not listed)",
                s.maps_untallied
            )?;
        }

        let mut top: Vec<(u64, RegisterStats)> =
            s.registers.iter().map(|(a, r)| (*a, *r)).collect();
        top.sort_unstable_by(|a, b| {
            (b.1.reads + b.1.writes)
                .cmp(&(a.1.reads + a.1.writes))
                .then(a.0.cmp(&b.0))
        });
        top.truncate(self.top);
        writeln!(out, "\ntop {} registers by accesses:", top.len())?;
        writeln!(
            out,
            "  {:>18} {:>12} {:>12} {:>12}",
            "phys", "accesses", "reads", "writes"
        )?;
        for (phys, r) in &top {
            writeln!(
                out,
                "  {:>18} {:>12} {:>12} {:>12}",
                format!("{phys:#x}"),
                r.reads + r.writes,
                r.reads,
                r.writes
            )?;
        }
        if s.registers_untallied > 0 {
            writeln!(
                out,
                "  (capped at {} distinct addresses: {} accesses to further addresses are not counted here)",
                self.max_registers, s.registers_untallied
            )?;
        }
        Ok(())
    }
}
