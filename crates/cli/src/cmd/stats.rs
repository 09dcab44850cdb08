//! `mmiotrace stats`: summarise a trace in one pass and bounded memory.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use mmiotrace_trace::{Direction, Event, Format, ReadOptions, Repeat, Timestamp, TraceReader};

use super::common::{fmt_time, open_input_with_progress, parse_time, register_label};
use super::polling::{Folder, Options};
use super::regs::{RegsArgs, namer};

/// Summarise a trace: events per kind, accesses per width, per map, per
/// thread and per process, the time span, the hottest registers (by
/// accesses, reads and writes), accesses per second over time, and the
/// longest polling loops.
///
/// Polling loops are found as `mmiotrace collapse` finds them (a thread
/// repeating the same few accesses at least 3 times in a row); REPEAT lines
/// already in the trace count too, and count as the accesses they stand
/// for in the thread, process and timeline tables (not in the others).
///
/// Reads text or binary traces (detected from the first bytes) in one pass.
/// Memory stays bounded however long the trace is: at most --max-registers
/// distinct register addresses, 10000 mappings and 10000 threads are
/// tallied; when a table is full the output says so and how many accesses
/// it left out. The timeline keeps at most 4000 intervals, widening them
/// (by 10×) as the trace goes on.
///
/// With register databases (--regs, --device, --chipset, bound to the
/// trace's mappings as `mmiotrace decode` binds them), the register tables
/// add each register's name, and the polling loops show it before the
/// address (`STATUS@0x8`).
///
/// Example:
///   mmiotrace stats nic.trace --regs nic.toml
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

    /// Width of the timeline's intervals in seconds (default: chosen to give
    /// at most 40 lines).
    #[arg(long, value_name = "SECS", value_parser = parse_time)]
    interval: Option<Timestamp>,

    /// Treat a cut-off last line or record as an error.
    #[arg(long)]
    strict: bool,

    /// Add the functions that made the accesses, naming each pc with these
    /// code symbols (a System.map, or a copy of /proc/kallsyms taken as
    /// root, as for `mmiotrace vm` traces).
    #[arg(long, value_name = "FILE")]
    symbols: Option<PathBuf>,

    /// No progress bar (one is drawn on standard error while reading, when
    /// that is a terminal).
    #[arg(short, long)]
    quiet: bool,

    /// Count only the accesses that a hook of `record --hook`,
    /// `--hook-lib` changed or marked (`hook=` in the trace); other
    /// accesses are left out of every table.
    #[arg(long)]
    hooked: bool,

    #[command(flatten)]
    regs: RegsArgs,
}

/// An access (or folded loop, or access of unknown value) that no hook
/// marked: what `--hooked` leaves out.
fn is_unhooked_access(event: &Event) -> bool {
    matches!(
        event,
        Event::Access(_) | Event::Repeat(_) | Event::Unknown(_)
    ) && event.ext().is_none_or(|ext| ext.hook.is_none())
}

/// Most distinct map ids to tally.
const MAX_MAPS: usize = 10_000;

/// Most distinct threads (and processes) to tally.
const MAX_THREADS: usize = 10_000;

/// Finest timeline interval: 1 µs.
const FINEST_INTERVAL_NS: u64 = 1_000;

/// Most timeline intervals kept; more make them 10× wider.
const MAX_INTERVALS: usize = 4_000;

/// Timeline lines printed when no --interval is given, at most.
const TIMELINE_LINES: u64 = 40;

/// Accesses per interval of time, the intervals widening as needed.
#[derive(Debug)]
struct Timeline {
    /// Start of the first interval, a multiple of `width`.
    origin: u64,
    width: u64,
    counts: Vec<u64>,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline {
            origin: 0,
            width: FINEST_INTERVAL_NS,
            counts: Vec::new(),
        }
    }
}

impl Timeline {
    fn add(&mut self, t: Timestamp, n: u64) {
        let t = t.nanos;
        if self.counts.is_empty() {
            self.origin = t - t % self.width;
        }
        if t < self.origin {
            // Out of order (another thread's clock); count it in the first interval.
            self.counts[0] = self.counts[0].saturating_add(n);
            return;
        }
        let mut index = (t - self.origin) / self.width;
        while index >= MAX_INTERVALS as u64 {
            self.widen();
            index = (t - self.origin) / self.width;
        }
        let index = index as usize;
        if index >= self.counts.len() {
            self.counts.resize(index + 1, 0);
        }
        self.counts[index] = self.counts[index].saturating_add(n);
    }

    /// Makes every interval 10× wider.
    fn widen(&mut self) {
        let width = self.width.saturating_mul(10);
        let origin = self.origin - self.origin % width;
        let mut counts: Vec<u64> = Vec::with_capacity(MAX_INTERVALS);
        for (i, n) in self.counts.iter().enumerate() {
            let start = self.origin + i as u64 * self.width;
            let index = ((start - origin) / width) as usize;
            if index >= counts.len() {
                counts.resize(index + 1, 0);
            }
            counts[index] = counts[index].saturating_add(*n);
        }
        self.origin = origin;
        self.width = width;
        self.counts = counts;
    }

    /// The printed interval: `wanted` rounded up to a multiple of the kept
    /// width, or the smallest of 1, 2 and 5 × 10^k times it that gives at
    /// most [`TIMELINE_LINES`] lines.
    fn print_width(&self, wanted: Option<Timestamp>) -> u64 {
        if let Some(wanted) = wanted {
            return wanted.nanos.div_ceil(self.width).max(1) * self.width;
        }
        let span = self.counts.len() as u64 * self.width;
        let mut base = self.width;
        loop {
            for factor in [1, 2, 5] {
                let width = base.saturating_mul(factor);
                if span.div_ceil(width) < TIMELINE_LINES || width == u64::MAX {
                    return width;
                }
            }
            base = base.saturating_mul(10);
        }
    }

    /// (start, accesses) per printed interval of `width`.
    fn rows(&self, width: u64) -> Vec<(u64, u64)> {
        let origin = self.origin - self.origin % width;
        let mut rows: Vec<(u64, u64)> = Vec::new();
        for (i, n) in self.counts.iter().enumerate() {
            let start = self.origin + i as u64 * self.width;
            let index = ((start - origin) / width) as usize;
            while rows.len() <= index {
                rows.push((origin + rows.len() as u64 * width, 0));
            }
            rows[index].1 = rows[index].1.saturating_add(*n);
        }
        rows
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct ThreadStats {
    process: Option<u32>,
    reads: u64,
    writes: u64,
    first: Option<Timestamp>,
    last: Option<Timestamp>,
}

impl ThreadStats {
    fn add(&mut self, reads: u64, writes: u64, time: Timestamp) {
        // A REPEAT's count is any u64: sums stop at the limit, never wrap.
        self.reads = self.reads.saturating_add(reads);
        self.writes = self.writes.saturating_add(writes);
        self.first = Some(self.first.map_or(time, |f| f.min(time)));
        self.last = Some(self.last.map_or(time, |l| l.max(time)));
    }
}

/// The directions of a thread's latest 64 accesses, the latest in bit 0
/// (1 for a write): enough to count the reads and writes a REPEAT line
/// stands for.
#[derive(Debug, Default, Clone, Copy)]
struct RecentWrites(u64);

impl RecentWrites {
    fn push(&mut self, dir: Direction) {
        self.0 = self.0 << 1 | u64::from(dir == Direction::Write);
    }

    /// (reads, writes) of `r`, and the history updated as if its accesses
    /// had been seen one by one.
    fn repeat(&mut self, r: &Repeat) -> (u64, u64) {
        let len = r.len;
        if len == 0 || len > 64 {
            return match r.dir {
                Direction::Read => (r.accesses(), 0),
                Direction::Write => (0, r.accesses()),
            };
        }
        let mask = u64::MAX >> (64 - len);
        let pattern = self.0 & mask;
        let writes = u64::from(pattern.count_ones());
        if r.count > 0 {
            let mut tiled = 0u64;
            let mut shift = 0;
            while shift < 64 {
                tiled |= pattern << shift;
                shift += len;
            }
            self.0 = tiled;
        }
        (
            (u64::from(len) - writes).saturating_mul(r.count),
            writes.saturating_mul(r.count),
        )
    }
}

/// The longest loops seen, longest first, at most `keep` of them.
#[derive(Debug, Default)]
struct Loops {
    keep: usize,
    longest: Vec<Repeat>,
    total: u64,
    folded_accesses: u64,
}

impl Loops {
    fn offer(&mut self, r: &Repeat) {
        self.total += 1;
        self.folded_accesses = self.folded_accesses.saturating_add(r.accesses());
        let rank = |r: &Repeat| std::cmp::Reverse(r.accesses());
        let at = self.longest.partition_point(|l| rank(l) <= rank(r));
        if at < self.keep {
            self.longest.insert(at, r.clone());
            self.longest.truncate(self.keep);
        }
    }
}

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

#[derive(Debug, Default, Clone)]
struct RegisterStats {
    reads: u64,
    writes: u64,
    /// From the register database: the name of the first access's register.
    name: Option<Arc<str>>,
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
    threads: HashMap<u32, ThreadStats>,
    recent: HashMap<u32, RecentWrites>,
    processes: HashMap<Option<u32>, ThreadStats>,
    /// Accesses of threads or processes beyond `MAX_THREADS`.
    threads_untallied: u64,
    timeline: Timeline,
    loops: Loops,
    /// REPEAT lines in the input.
    repeats_in_input: u64,
    truncated: Option<String>,
}

impl Stats {
    fn map_entry(&mut self, map_id: u32) -> Option<&mut MapStats> {
        if self.maps.len() >= MAX_MAPS && !self.maps.contains_key(&map_id) {
            return None;
        }
        Some(self.maps.entry(map_id).or_default())
    }

    /// Counts `event`; `name` is its register's name, if a database has one.
    fn add(&mut self, event: &Event, max_registers: usize, name: Option<&Arc<str>>) {
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
                if self.recent.len() < MAX_THREADS || self.recent.contains_key(&a.pid) {
                    self.recent.entry(a.pid).or_default().push(a.dir);
                }
                let (reads, writes) = match a.dir {
                    Direction::Read => (1, 0),
                    Direction::Write => (0, 1),
                };
                self.per_thread(a.pid, a.ext.process, reads, writes, a.time);
                self.timeline.add(a.time, 1);
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
                    Some(r) => {
                        if read {
                            r.reads += 1;
                        } else {
                            r.writes += 1;
                        }
                        if r.name.is_none() {
                            r.name = name.cloned();
                        }
                    }
                    None => self.registers_untallied += 1,
                }
            }
            Event::Unknown(u) => match self.map_entry(u.map_id) {
                Some(entry) => entry.unknown += 1,
                None => self.maps_untallied += 1,
            },
            Event::Lost(l) => self.lost_events = self.lost_events.saturating_add(l.count),
            Event::Version(_) | Event::PciDev(_) | Event::Unmap(_) | Event::Mark(_) => {}
            Event::Repeat(r) => {
                self.repeats_in_input += 1;
                let (reads, writes) = self.recent.entry(r.pid).or_default().repeat(r);
                self.per_thread(r.pid, r.ext.process, reads, writes, r.time);
                self.timeline.add(r.time, r.accesses());
            }
        }
    }

    fn per_thread(
        &mut self,
        pid: u32,
        process: Option<u32>,
        reads: u64,
        writes: u64,
        time: Timestamp,
    ) {
        let full = self.threads.len() >= MAX_THREADS;
        match self.threads.get_mut(&pid) {
            Some(t) => t.add(reads, writes, time),
            None if full => {
                self.threads_untallied = self
                    .threads_untallied
                    .saturating_add(reads.saturating_add(writes));
            }
            None => {
                let mut t = ThreadStats {
                    process,
                    ..ThreadStats::default()
                };
                t.add(reads, writes, time);
                self.threads.insert(pid, t);
            }
        }
        let full = self.processes.len() >= MAX_THREADS;
        match self.processes.get_mut(&process) {
            Some(p) => p.add(reads, writes, time),
            None if full => {}
            None => {
                let mut p = ThreadStats {
                    process,
                    ..ThreadStats::default()
                };
                p.add(reads, writes, time);
                self.processes.insert(process, p);
            }
        }
    }
}

fn time(t: Timestamp) -> String {
    format!("{}.{:06}", t.secs(), t.subsec_micros())
}

impl Cmd {
    pub fn run(self) -> anyhow::Result<()> {
        let (input, name, progress) = open_input_with_progress(&self.input, self.quiet)?;
        let options = ReadOptions::default()
            .with_name(name.as_str())
            .with_fatal_truncation(self.strict);
        let mut reader = TraceReader::new(input, options)?;
        let format = reader.format();
        let registers = self.regs.load()?;
        let symbols = self
            .symbols
            .as_deref()
            .map(super::symbols::load)
            .transpose()?;
        let mut code = super::symbols::CodeTally::default();
        let mut namer = namer(registers.as_ref())?;
        let mut stats = Stats::default();
        stats.loops.keep = self.top;
        let mut folder = Folder::new(Options::default());
        let mut loops = Loops {
            keep: self.top,
            ..Loops::default()
        };
        let mut offer = |event: Event| {
            if let Event::Repeat(r) = &event {
                loops.offer(r);
            }
            Ok::<(), std::convert::Infallible>(())
        };
        while let Some(event) = reader.read_ref()? {
            if self.hooked && is_unhooked_access(event) {
                continue;
            }
            let name = namer.as_mut().and_then(|n| n.name(event));
            stats.add(event, self.max_registers, name);
            if symbols.is_some() {
                code.add(event);
            }
            let _ = folder.push(event, &mut offer);
        }
        let _ = folder.finish(&mut offer);
        progress.finish_and_clear();
        stats.loops = loops;
        if let Some(t) = reader.truncation() {
            eprintln!("mmiotrace: warning: {t}");
            stats.truncated = Some(t.to_string());
        }
        let mut report = self.report(&name, format, &stats, namer.is_some());
        if let Some(symbols) = &symbols {
            // Writing to a String cannot fail.
            let _ = code.write(&mut report, symbols, self.top);
        }
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(report.as_bytes())
            .and_then(|()| stdout.flush())
            .context("cannot write to standard output")?;
        Ok(())
    }

    /// `named`: whether register databases were given.
    fn report(&self, name: &str, format: Format, s: &Stats, named: bool) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_report(&mut out, name, format, s, named);
        out
    }

    fn write_report(
        &self,
        out: &mut String,
        name: &str,
        format: Format,
        s: &Stats,
        named: bool,
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

        type Ranking = (&'static str, fn(&RegisterStats) -> u64);
        let rankings: [Ranking; 3] = [
            ("accesses", |r| r.reads + r.writes),
            ("reads", |r| r.reads),
            ("writes", |r| r.writes),
        ];
        for (by, count) in rankings {
            let mut top: Vec<(u64, &RegisterStats)> = s
                .registers
                .iter()
                .filter(|(_, r)| count(r) > 0)
                .map(|(a, r)| (*a, r))
                .collect();
            top.sort_unstable_by(|a, b| count(b.1).cmp(&count(a.1)).then(a.0.cmp(&b.0)));
            top.truncate(self.top);
            writeln!(out, "\ntop {} registers by {by}:", top.len())?;
            let header = format!(
                "  {:>18} {:>12} {:>12} {:>12}",
                "phys", "accesses", "reads", "writes"
            );
            if named {
                writeln!(out, "{header}  register")?;
            } else {
                writeln!(out, "{header}")?;
            }
            for (phys, r) in &top {
                let line = format!(
                    "  {:>18} {:>12} {:>12} {:>12}",
                    format!("{phys:#x}"),
                    r.reads + r.writes,
                    r.reads,
                    r.writes
                );
                if named {
                    writeln!(out, "{line}  {}", r.name.as_deref().unwrap_or("?"))?;
                } else {
                    writeln!(out, "{line}")?;
                }
            }
        }
        if s.registers_untallied > 0 {
            writeln!(
                out,
                "  (capped at {} distinct addresses: {} accesses to further addresses are not counted here)",
                self.max_registers, s.registers_untallied
            )?;
        }
        self.write_threads(out, s)?;
        self.write_timeline(out, s)?;
        self.write_loops(out, s)
    }

    fn write_threads(&self, out: &mut String, s: &Stats) -> std::fmt::Result {
        let id = |v: Option<u32>| v.map_or("-".to_string(), |p| p.to_string());
        let row = |out: &mut String, key: String, process: String, t: &ThreadStats| {
            let span = match (t.first, t.last) {
                (Some(f), Some(l)) => format!("{} .. {}", fmt_time(f), fmt_time(l)),
                _ => "-".to_string(),
            };
            writeln!(
                out,
                "  {key:>10} {process:>10} {:>12} {:>12} {:>12}  {span}",
                t.reads.saturating_add(t.writes),
                t.reads,
                t.writes
            )
        };
        let mut threads: Vec<(&u32, &ThreadStats)> = s.threads.iter().collect();
        threads.sort_unstable_by(|a, b| {
            b.1.reads
                .saturating_add(b.1.writes)
                .cmp(&a.1.reads.saturating_add(a.1.writes))
                .then(a.0.cmp(b.0))
        });
        writeln!(out, "\nthreads ({}):", threads.len())?;
        writeln!(
            out,
            "  {:>10} {:>10} {:>12} {:>12} {:>12}  first .. last access",
            "thread", "process", "accesses", "reads", "writes"
        )?;
        for (tid, t) in threads.iter().take(self.top) {
            row(out, tid.to_string(), id(t.process), t)?;
        }
        if threads.len() > self.top {
            writeln!(out, "  ({} more threads)", threads.len() - self.top)?;
        }
        if s.threads_untallied > 0 {
            writeln!(
                out,
                "  (capped at {MAX_THREADS} threads: {} accesses of further threads are not listed)",
                s.threads_untallied
            )?;
        }
        if threads
            .iter()
            .any(|(_, t)| t.reads.saturating_add(t.writes) == u64::MAX)
        {
            writeln!(
                out,
                "  (a count of {} reached the 64-bit limit and stopped there: the trace's REPEAT counts add up to more)",
                u64::MAX
            )?;
        }
        let mut processes: Vec<(&Option<u32>, &ThreadStats)> = s.processes.iter().collect();
        processes.sort_unstable_by(|a, b| {
            b.1.reads
                .saturating_add(b.1.writes)
                .cmp(&a.1.reads.saturating_add(a.1.writes))
                .then(a.0.cmp(b.0))
        });
        writeln!(out, "\nprocesses ({}):", processes.len())?;
        writeln!(
            out,
            "  {:>10} {:>10} {:>12} {:>12} {:>12}  first .. last access",
            "process", "threads", "accesses", "reads", "writes"
        )?;
        for (process, p) in processes.iter().take(self.top) {
            let threads = s
                .threads
                .values()
                .filter(|t| t.process == **process)
                .count();
            row(out, id(**process), threads.to_string(), p)?;
        }
        Ok(())
    }

    fn write_timeline(&self, out: &mut String, s: &Stats) -> std::fmt::Result {
        let timeline = &s.timeline;
        if timeline.counts.is_empty() {
            return Ok(());
        }
        let width = timeline.print_width(self.interval);
        let rows = timeline.rows(width);
        let peak = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1);
        let secs = width as f64 / 1e9;
        writeln!(
            out,
            "\naccesses over time ({} s intervals):",
            fmt_time(Timestamp::from_nanos(width))
        )?;
        writeln!(
            out,
            "  {:>17} {:>12} {:>14}",
            "from", "accesses", "per second"
        )?;
        for (start, n) in rows {
            let bar = "#".repeat((u128::from(n) * 30).div_ceil(u128::from(peak)) as usize);
            let line = format!(
                "  {:>17} {n:>12} {:>14.0}  {bar}",
                fmt_time(Timestamp::from_nanos(start)),
                n as f64 / secs
            );
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }

    fn write_loops(&self, out: &mut String, s: &Stats) -> std::fmt::Result {
        let loops = &s.loops;
        writeln!(
            out,
            "\npolling loops: {} ({} accesses would fold into REPEAT lines{})",
            loops.total,
            loops.folded_accesses,
            if s.repeats_in_input > 0 {
                format!("; {} REPEAT lines in the trace", s.repeats_in_input)
            } else {
                String::new()
            }
        )?;
        if loops.longest.is_empty() {
            return Ok(());
        }
        writeln!(
            out,
            "  {:>10} {:>4} {:>10} {:>18} {:>3} {:>18} {:>18} {:>12}  from .. to",
            "folded", "len", "thread", "polled register", "dir", "value", "until", "seconds"
        )?;
        for r in &loops.longest {
            let value = |v: &mmiotrace_trace::Value| format!("{:#x}", v.low_u64());
            writeln!(
                out,
                "  {:>10} {:>4} {:>10} {:>18} {:>3} {:>18} {:>18} {:>12}  {} .. {}",
                r.accesses(),
                r.len,
                r.pid,
                register_label(
                    r.phys,
                    s.registers.get(&r.phys).and_then(|g| g.name.as_deref())
                ),
                match r.dir {
                    Direction::Read => "R",
                    Direction::Write => "W",
                },
                value(&r.value),
                r.until.as_ref().map_or("-".to_string(), value),
                fmt_time(Timestamp::from_nanos(
                    r.end.nanos.saturating_sub(r.time.nanos)
                )),
                fmt_time(r.time),
                fmt_time(r.end)
            )?;
        }
        Ok(())
    }
}
