//! `mmiotrace diff`: compare two traces as sequences of register operations.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use mmiotrace_trace::{Direction, Event, Timestamp, Value};
use similar::algorithms::{DiffHook, patience};

use super::common::{fmt_time, open_trace, register_label, warn_if_truncated};
use super::polling::{Folder, Options};
use super::regs::{Registers, RegsArgs, namer};

/// Compare two traces as sequences of (register, direction, value)
/// operations, aligned by content, not by time: the same init sequence with
/// different timing lines up.
///
/// Prints a summary (operations changed, removed and inserted, for writes
/// and for reads), then each difference with a few operations of context:
///   `- OP`    only in A (removed)
///   `+ OP`    only in B (inserted)
///   `~ OP`    the same register and direction, another value (changed)
/// Each line names the operation's place in its trace (`a#N`, the Nth
/// operation, its time and sequence number).
///
/// Polling loops are folded first (as `mmiotrace collapse --min-repeats 2`
/// does), so that a loop that spun 37 times in one run and 52 times in the
/// other is the same; --exact compares every access. Threads are not told
/// apart: to compare one thread, `mmiotrace filter --thread` first.
///
/// With register databases (--regs, --device, --chipset, bound to each
/// trace's mappings as `mmiotrace decode` binds them), an access to a
/// register that a database names is compared by that name, not by its
/// address, and shown by it (`W 4 CTRL 0x4000000`): the same init sequence
/// lines up even where the device sits at another address. Two devices
/// decoded with the same database are then not told apart (`mmiotrace
/// filter --map` first). Accesses no database names are compared by
/// address (or with --by-offset, by map and offset).
///
/// The alignment (by the `similar` crate) first lines up the operations
/// that occur exactly once in both traces (patience diff), then aligns the
/// stretches between them by a shortest edit script (Myers' O(ND)
/// algorithm, in linear space). Once --max-time has passed, each stretch not
/// yet aligned is reported as removed and inserted whole, so a pair of
/// traces that differ throughout still gets an answer in bounded time.
///
/// Memory: both traces' operations are held, about 20 bytes per operation
/// (after folding), plus the differences found (and, with --regs, one copy
/// of each register name met).
///
/// Exit status: 0 if the traces are the same, 1 if they differ, 2 on error.
///
/// Examples:
///   mmiotrace diff good.trace bad.trace | less
///   mmiotrace diff --by-offset boot1.mtb boot2.mtb     # BARs moved between boots
///   mmiotrace diff --regs nv_mmio.xml good.trace bad.trace
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct Cmd {
    /// The first trace, text or binary.
    #[arg(value_name = "A")]
    a: PathBuf,

    /// The second trace, text or binary.
    #[arg(value_name = "B")]
    b: PathBuf,

    /// Compare every access; do not fold polling loops first.
    #[arg(long)]
    exact: bool,

    /// Name registers by map id and offset in the map instead of physical
    /// address (for traces whose devices sit at other addresses).
    #[arg(long)]
    by_offset: bool,

    /// Print only the summary.
    #[arg(short, long)]
    summary: bool,

    /// Operations of context around each difference.
    #[arg(short = 'C', long, value_name = "N", default_value_t = 2)]
    context: usize,

    /// Most time spent aligning, in seconds; past it, each stretch not yet
    /// aligned is reported as removed and inserted whole.
    #[arg(long, value_name = "SECONDS", default_value = "30", value_parser = parse_seconds)]
    max_time: Duration,

    /// Treat a cut-off last line or record as an error.
    #[arg(long)]
    strict: bool,

    #[command(flatten)]
    regs: RegsArgs,
}

/// `OpKey::register` of an access that no database names.
const UNNAMED: u32 = u32::MAX;

/// What is compared: the register, the direction and the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct OpKey {
    /// The register's name (an index into `Interner::names`), or
    /// [`UNNAMED`]; when named, `map_id` and `addr` are 0.
    register: u32,
    /// With --by-offset, the map id; 0 otherwise.
    map_id: u32,
    /// The physical address, or with --by-offset the offset in the map.
    addr: u64,
    dir: Direction,
    value: Value,
}

/// One trace, as operation ids in order, with where each came from.
#[derive(Debug, Default)]
struct Ops {
    ids: Vec<u32>,
    times: Vec<Timestamp>,
    /// `u64::MAX` for none.
    seqs: Vec<u64>,
}

/// Interns operation keys (and register names) as small ids shared by both
/// traces.
#[derive(Debug, Default)]
struct Interner {
    ids: HashMap<OpKey, u32>,
    keys: Vec<OpKey>,
    name_ids: HashMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
}

impl Interner {
    fn name_id(&mut self, name: &Arc<str>) -> u32 {
        if let Some(&id) = self.name_ids.get(name) {
            return id;
        }
        self.names.push(Arc::clone(name));
        let id = (self.names.len() - 1) as u32;
        self.name_ids.insert(Arc::clone(name), id);
        id
    }

    fn id(&mut self, key: OpKey) -> u32 {
        *self.ids.entry(key).or_insert_with(|| {
            self.keys.push(key);
            (self.keys.len() - 1) as u32
        })
    }

    fn key(&self, id: u32) -> &OpKey {
        &self.keys[id as usize]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edit {
    Same,
    Removed,
    Inserted,
}

/// The edit script, run-length coded: (edit, count).
#[derive(Debug, Default)]
struct Script {
    runs: Vec<(Edit, u64)>,
}

impl Script {
    fn push(&mut self, edit: Edit, n: u64) {
        if n == 0 {
            return;
        }
        match self.runs.last_mut() {
            Some((last, count)) if *last == edit => *count += n,
            _ => self.runs.push((edit, n)),
        }
    }
}

fn parse_seconds(text: &str) -> anyhow::Result<Duration> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| anyhow::anyhow!("expected a number of seconds"))?;
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| anyhow::anyhow!("expected a number of seconds, from 0 up"))
}

/// Prints the error the way main does, and exits with 2 as diff(1) does.
pub fn exit_code(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("mmiotrace: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

impl Cmd {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        if self.a == Path::new("-") && self.b == Path::new("-") {
            anyhow::bail!(
                "A and B are both standard input (-), which can be read only once: give at least one as a file"
            );
        }
        let registers = self.regs.load()?;
        let mut interner = Interner::default();
        let a = self.read_ops(&self.a, &mut interner, registers.as_ref())?;
        let b = self.read_ops(&self.b, &mut interner, registers.as_ref())?;
        let deadline = Instant::now().checked_add(self.max_time);
        let script = align(&a.ids, &b.ids, deadline);
        let report = self.report(&a, &b, &interner, &script);
        let mut stdout = std::io::stdout().lock();
        let written = stdout
            .write_all(report.as_bytes())
            .and_then(|()| stdout.flush());
        if let Err(err) = written
            && err.kind() != std::io::ErrorKind::BrokenPipe
        {
            return Err(anyhow::Error::new(err).context("cannot write to standard output"));
        }
        let same = script.runs.iter().all(|(edit, _)| *edit == Edit::Same);
        Ok(if same {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    }

    fn read_ops(
        &self,
        path: &Path,
        interner: &mut Interner,
        registers: Option<&Registers>,
    ) -> anyhow::Result<Ops> {
        let (mut reader, _) = open_trace(path, self.strict)?;
        let mut ops = Ops::default();
        let mut map_base: HashMap<u32, u64> = HashMap::new();
        let by_offset = self.by_offset;
        // Fed the folded events: folding keeps the order of MAP records
        // and accesses, so every access is bound as in the trace.
        let mut namer = namer(registers)?;
        let mut take = |event: Event| {
            let name = namer.as_mut().and_then(|n| n.name(&event));
            match &event {
                Event::Map(m) if by_offset => {
                    map_base.insert(m.map_id, m.phys);
                }
                Event::Access(a) => {
                    let register = name.map_or(UNNAMED, |n| interner.name_id(n));
                    let (map_id, addr) = if register != UNNAMED {
                        (0, 0)
                    } else if by_offset {
                        let base = map_base.get(&a.map_id).copied().unwrap_or(0);
                        (a.map_id, a.phys.wrapping_sub(base))
                    } else {
                        (0, a.phys)
                    };
                    ops.ids.push(interner.id(OpKey {
                        register,
                        map_id,
                        addr,
                        dir: a.dir,
                        value: a.value,
                    }));
                    ops.times.push(a.time);
                    ops.seqs.push(a.ext.seq.unwrap_or(u64::MAX));
                }
                _ => {}
            }
            Ok::<(), std::convert::Infallible>(())
        };
        if self.exact {
            while let Some(event) = reader.read_ref()? {
                let _ = take(event.clone());
            }
        } else {
            let mut folder = Folder::new(Options {
                min_repeats: 2,
                ..Options::default()
            });
            while let Some(event) = reader.read_ref()? {
                let _ = folder.push(event, &mut take);
            }
            let _ = folder.finish(&mut take);
        }
        warn_if_truncated(&reader);
        Ok(ops)
    }

    fn op_text(&self, interner: &Interner, id: u32) -> String {
        let key = interner.key(id);
        let register = if key.register != UNNAMED {
            interner.names[key.register as usize].to_string()
        } else if self.by_offset {
            format!("map{}+{:#x}", key.map_id, key.addr)
        } else {
            register_label(key.addr, None)
        };
        format!(
            "{} {} {register} {}",
            dir_name(key.dir),
            key.value.width(),
            value_text(&key.value)
        )
    }

    fn report(&self, a: &Ops, b: &Ops, interner: &Interner, script: &Script) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_report(&mut out, a, b, interner, script);
        out
    }

    fn write_report(
        &self,
        out: &mut String,
        a: &Ops,
        b: &Ops,
        interner: &Interner,
        script: &Script,
    ) -> std::fmt::Result {
        let hunks = hunks(a, b, interner, script, self.context);
        // [writes, reads] × [changed, removed, inserted]
        let mut counts = [[0u64; 3]; 2];
        let mut same = 0u64;
        for (edit, n) in &script.runs {
            if *edit == Edit::Same {
                same += n;
            }
        }
        for hunk in &hunks {
            for line in &hunk.lines {
                let (column, id) = match *line {
                    Line::Changed(i, _) => (0, a.ids[i]),
                    Line::Removed(i) => (1, a.ids[i]),
                    Line::Inserted(j) => (2, b.ids[j]),
                    Line::Context(_) => continue,
                };
                let row = usize::from(interner.key(id).dir == Direction::Read);
                counts[row][column] += 1;
            }
        }
        let total = |c: usize| counts[0][c] + counts[1][c];
        writeln!(
            out,
            "--- a: {} ({} operations)",
            self.a.display(),
            a.ids.len()
        )?;
        writeln!(
            out,
            "+++ b: {} ({} operations)",
            self.b.display(),
            b.ids.len()
        )?;
        if hunks.is_empty() {
            writeln!(out, "same: all {same} operations")?;
        } else {
            writeln!(
                out,
                "different: {} changed, {} removed, {} inserted; {same} the same",
                total(0),
                total(1),
                total(2)
            )?;
            for (row, name) in [(0, "writes"), (1, "reads")] {
                writeln!(
                    out,
                    "  {name:<7} {} changed, {} removed, {} inserted",
                    counts[row][0], counts[row][1], counts[row][2]
                )?;
            }
            writeln!(out, "  places that differ: {}", hunks.len())?;
        }
        if !self.exact {
            writeln!(
                out,
                "(polling loops folded before comparing; --exact compares every access)"
            )?;
        }
        if self.summary {
            return Ok(());
        }
        let place = |ops: &Ops, side: &str, i: usize| {
            let mut s = format!("{side}#{} {}", i + 1, fmt_time(ops.times[i]));
            if ops.seqs[i] != u64::MAX {
                let _ = write!(s, " seq={}", ops.seqs[i]);
            }
            s
        };
        for hunk in &hunks {
            writeln!(out, "\n@@ a#{} b#{} @@", hunk.a_start + 1, hunk.b_start + 1)?;
            for line in &hunk.lines {
                match *line {
                    Line::Context(i) => {
                        writeln!(out, "  {}", self.op_text(interner, a.ids[i]))?;
                    }
                    Line::Removed(i) => writeln!(
                        out,
                        "- {:<40} ({})",
                        self.op_text(interner, a.ids[i]),
                        place(a, "a", i)
                    )?,
                    Line::Inserted(j) => writeln!(
                        out,
                        "+ {:<40} ({})",
                        self.op_text(interner, b.ids[j]),
                        place(b, "b", j)
                    )?,
                    Line::Changed(i, j) => {
                        let new = &interner.key(b.ids[j]).value;
                        let text = format!(
                            "{} -> {}",
                            self.op_text(interner, a.ids[i]),
                            value_text(new)
                        );
                        writeln!(
                            out,
                            "~ {text:<40} ({}, {})",
                            place(a, "a", i),
                            place(b, "b", j)
                        )?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn dir_name(dir: Direction) -> &'static str {
    match dir {
        Direction::Read => "R",
        Direction::Write => "W",
    }
}

fn value_text(value: &Value) -> String {
    if value.is_wide() {
        let digits: String = value
            .as_le_bytes()
            .iter()
            .rev()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("0x{digits}")
    } else {
        format!("{:#x}", value.low_u64())
    }
}

#[derive(Debug, Clone, Copy)]
enum Line {
    /// The same in both: its index in A.
    Context(usize),
    Removed(usize),
    Inserted(usize),
    Changed(usize, usize),
}

#[derive(Debug)]
struct Hunk {
    a_start: usize,
    b_start: usize,
    lines: Vec<Line>,
}

/// Groups the script's differences into hunks with `context` operations
/// around them, pairing a removal and an insertion of the same register and
/// direction in one stretch as a change.
fn hunks(a: &Ops, b: &Ops, interner: &Interner, script: &Script, context: usize) -> Vec<Hunk> {
    let same_register = |x: u32, y: u32| {
        let (x, y) = (interner.key(x), interner.key(y));
        x.register == y.register
            && x.map_id == y.map_id
            && x.addr == y.addr
            && x.dir == y.dir
            && x.value.width() == y.value.width()
    };
    let runs = &script.runs;
    let mut hunks = Vec::new();
    let mut open: Option<Hunk> = None;
    let (mut i, mut j) = (0usize, 0usize);
    let mut previous_same = 0usize;
    let mut r = 0;
    while r < runs.len() {
        let (edit, n) = runs[r];
        if edit == Edit::Same {
            let n = n as usize;
            if let Some(mut hunk) = open.take() {
                let more = r + 1 < runs.len();
                let shown = if more && n <= 2 * context {
                    n
                } else {
                    n.min(context)
                };
                hunk.lines.extend((i..i + shown).map(Line::Context));
                if shown == n {
                    open = Some(hunk);
                } else {
                    hunks.push(hunk);
                }
            }
            previous_same = n;
            i += n;
            j += n;
            r += 1;
            continue;
        }
        let (mut removed, mut inserted) = (0usize, 0usize);
        while let Some(&(edit, n)) = runs.get(r) {
            match edit {
                Edit::Same => break,
                Edit::Removed => removed += n as usize,
                Edit::Inserted => inserted += n as usize,
            }
            r += 1;
        }
        let hunk = open.get_or_insert_with(|| {
            let lead = context.min(previous_same);
            Hunk {
                a_start: i - lead,
                b_start: j - lead,
                lines: (i - lead..i).map(Line::Context).collect(),
            }
        });
        // Pair removals with insertions of the same register, in order.
        let mut next_insert = 0;
        for k in 0..removed {
            let pair = (next_insert..inserted).find(|&m| same_register(a.ids[i + k], b.ids[j + m]));
            match pair {
                Some(m) => {
                    hunk.lines
                        .extend((next_insert..m).map(|m| Line::Inserted(j + m)));
                    hunk.lines.push(Line::Changed(i + k, j + m));
                    next_insert = m + 1;
                }
                None => hunk.lines.push(Line::Removed(i + k)),
            }
        }
        hunk.lines
            .extend((next_insert..inserted).map(|m| Line::Inserted(j + m)));
        i += removed;
        j += inserted;
        previous_same = 0;
    }
    hunks.extend(open);
    hunks
}

/// Appends what the alignment reports to a script.
struct ScriptHook<'s>(&'s mut Script);

impl DiffHook for ScriptHook<'_> {
    type Error = Infallible;

    fn equal(&mut self, _: usize, _: usize, len: usize) -> Result<(), Infallible> {
        self.0.push(Edit::Same, len as u64);
        Ok(())
    }

    fn delete(&mut self, _: usize, old_len: usize, _: usize) -> Result<(), Infallible> {
        self.0.push(Edit::Removed, old_len as u64);
        Ok(())
    }

    fn insert(&mut self, _: usize, _: usize, new_len: usize) -> Result<(), Infallible> {
        self.0.push(Edit::Inserted, new_len as u64);
        Ok(())
    }
}

/// The edit script that turns `a` into `b`: the operations that occur once
/// in each are lined up first (patience diff), and the stretches between
/// them by a shortest edit script (Myers' algorithm). Once `deadline` has
/// passed, each stretch not yet aligned is removed and inserted whole.
fn align(a: &[u32], b: &[u32], deadline: Option<Instant>) -> Script {
    let mut script = Script::default();
    let hook = &mut ScriptHook(&mut script);
    let Ok(()) = patience::diff_deadline(hook, a, 0..a.len(), b, 0..b.len(), deadline);
    script
}

#[cfg(test)]
mod tests {
    use super::*;
    use similar::algorithms::myers;

    /// Checks that `script` turns `a` into `b`, and returns its edits.
    fn edits(a: &[u32], b: &[u32], script: &Script) -> usize {
        let (mut i, mut j, mut edits) = (0, 0, 0);
        for &(edit, count) in &script.runs {
            for _ in 0..count {
                match edit {
                    Edit::Same => {
                        assert_eq!(a[i], b[j], "{a:?} {b:?}");
                        (i, j) = (i + 1, j + 1);
                    }
                    Edit::Removed => (i, edits) = (i + 1, edits + 1),
                    Edit::Inserted => (j, edits) = (j + 1, edits + 1),
                }
            }
        }
        assert_eq!((i, j), (a.len(), b.len()), "{a:?} {b:?}");
        edits
    }

    /// The edits of the script of two strings, checked.
    fn string_edits(a: &str, b: &str) -> usize {
        let ids = |s: &str| s.bytes().map(u32::from).collect::<Vec<u32>>();
        let (a, b) = (ids(a), ids(b));
        edits(&a, &b, &align(&a, &b, None))
    }

    #[test]
    fn shortest_scripts() {
        assert_eq!(string_edits("abcabba", "cbabac"), 5);
        assert_eq!(string_edits("", "abc"), 3);
        assert_eq!(string_edits("abc", ""), 3);
        assert_eq!(string_edits("abc", "abc"), 0);
        assert_eq!(string_edits("aaaa", "aaaaaa"), 2);
        assert_eq!(string_edits("abab", "baba"), 2);
        assert_eq!(string_edits("xaaay", "xaay"), 1);
        assert_eq!(string_edits("abcdefgh", "abXdefYh"), 4);
        assert_eq!(string_edits("aabbaabb", "bbaabbaa"), 4);
    }

    /// Length of the longest common subsequence, by dynamic programming.
    fn lcs(a: &[u32], b: &[u32]) -> usize {
        let mut row = vec![0usize; b.len() + 1];
        for &x in a {
            let mut diagonal = 0;
            for (k, &y) in b.iter().enumerate() {
                let up = row[k + 1];
                row[k + 1] = if x == y { diagonal + 1 } else { up.max(row[k]) };
                diagonal = up;
            }
        }
        row[b.len()]
    }

    /// The Myers part, which aligns the stretches between unique
    /// operations, finds shortest scripts, and `ScriptHook` records them.
    #[test]
    fn myers_alone_finds_shortest_scripts() {
        // A small linear congruential generator: reproducible, no dependency.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = |modulo: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 33) % modulo
        };
        for _ in 0..500 {
            let (n, m, symbols) = (next(30) as usize, next(30) as usize, 1 + next(4));
            let a: Vec<u32> = (0..n).map(|_| next(symbols) as u32).collect();
            let b: Vec<u32> = (0..m).map(|_| next(symbols) as u32).collect();
            let mut script = Script::default();
            let Ok(()) = myers::diff(&mut ScriptHook(&mut script), &a, 0..n, &b, 0..m);
            assert_eq!(
                edits(&a, &b, &script),
                n + m - 2 * lcs(&a, &b),
                "{a:?} {b:?}"
            );
        }
    }

    #[test]
    fn past_the_deadline_a_stretch_is_replaced_whole() {
        let a: Vec<u32> = (0..100).map(|i| i % 2).collect();
        let b: Vec<u32> = (0..100)
            .map(|i| 1 - i % 2 + 2 * u32::from(i % 7 == 0))
            .collect();
        let past = Instant::now();
        let script = align(&a, &b, Some(past));
        assert_eq!(
            script.runs,
            [(Edit::Removed, 100), (Edit::Inserted, 100)],
            "{script:?}"
        );
        // In time, most of it lines up.
        let aligned = align(&a, &b, None);
        assert!(edits(&a, &b, &aligned) < 50, "{aligned:?}");
    }
}
